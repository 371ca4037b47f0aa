"""The native functions that read what an endpoint answered never crash on any bytes.

`answer_items`, `stored_head`, `stored_merge`, `block_stored` and `existing_items`
walk records that came over the network (a BatchGetItem answer, the stored data row,
the command at @V-1): a broken, hostile or truncated answer must give None or an
answer, never a crash or a read past the buffer.  Each is fed valid records cut,
spliced with junk and damaged at random places, and plain random bytes; the process
surviving (and the call returning) is what is checked.  Equality with the Python
rules on valid records is held elsewhere (tests/test_stored_compare.py,
tests/test_fast_sync.py).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from importer._native import ItemBlock, answer_items, block_stored, stored_head, stored_merge
from importer.records import PreparedItem
from importer.transform.reference import wire_json
from tests.test_fast_sync import NOW, TTLS, _wire, existing_entities
from tests.test_stored_compare import _dump, pairs

JUNK = st.binary(max_size=24) | st.sampled_from(
    [b'"', b"\\", b"{", b"}", b"[", b"]", b":", b",", b"\\u", b'{"S":', b'{"N":"', b"\xff", b"\x00"]
)


@st.composite
def damaged(draw, valid: bytes) -> bytes:
    """`valid` cut, spliced with junk, a byte flipped, or replaced by random bytes."""
    how = draw(st.sampled_from(["cut", "splice", "flip", "random", "as is"]))
    at = draw(st.integers(0, len(valid)))
    if how == "cut":
        return valid[:at]
    if how == "splice":
        return valid[:at] + draw(JUNK) + valid[at:]
    if how == "flip" and valid:
        at = min(at, len(valid) - 1)
        return valid[:at] + bytes([draw(st.integers(0, 255))]) + valid[at + 1 :]
    if how == "random":
        return draw(st.binary(max_size=200))
    return valid


@settings(max_examples=400, deadline=None)
@given(st.data(), pairs(), st.sampled_from([0, 1, 2]), st.booleans(), st.booleans())
def test_stored_record_readers_never_crash_on_damaged_records(data, pair, style, keep, replace):
    row, stored = pair
    stored["version"] = {"N": "3"}
    raw = data.draw(damaged(_dump(stored, style)))
    wire = wire_json(row)
    stored_head(raw)
    stored_merge(wire, raw, keep, 3)
    stored_merge(data.draw(damaged(wire)), raw, keep, 3)
    item = PreparedItem(2, row["pk"]["S"], row["sk"]["S"], wire)
    key = (row["pk"]["S"], row["sk"]["S"].rsplit("@", 1)[0])
    block_stored(ItemBlock([item]), {key: raw}, [key], keep, replace)


@settings(max_examples=300, deadline=None)
@given(st.data(), pairs(), st.sampled_from([0, 1, 2]))
def test_answer_items_never_crashes_on_damaged_answers(data, pair, style):
    _row, stored = pair
    stored["sk"] = {"S": "P#1"}
    doc = {"Responses": {"t-data": [stored, stored]}, "UnprocessedKeys": {}}
    raw = data.draw(damaged(_dump(doc, style)))
    answer_items(raw, b'"t-data"')
    answer_items(raw, data.draw(st.binary(max_size=12)))


@settings(max_examples=300, deadline=None)
@given(st.data(), existing_entities(), TTLS, TTLS)
def test_existing_items_never_crash_on_damaged_records(data, entity, ttl_history, ttl_command):
    from importer.mbc.fast_sync import _made_in_c, finished_status, ttl_member

    record, stored, previous = entity
    sk = record["sk"]["S"]
    wire = data.draw(damaged(_wire(record)))
    held = data.draw(damaged(_wire(stored)))
    before = None if previous is None else data.draw(damaged(_wire(previous)))
    status, updated = finished_status(NOW)
    dates = data.draw(st.dictionaries(st.binary(max_size=40), st.binary(max_size=40), max_size=3))
    ttls = (ttl_member(ttl_history), ttl_member(ttl_command))
    _made_in_c(wire, sk, held, before, dates, status, updated, ttls)
