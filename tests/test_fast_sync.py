"""`importer.mbc.fast_sync` and `importer._native.wire_members` equal the general path.

* `wire_members` splits any JSON object of objects exactly as `json.loads` reads
  it, and never raises on any bytes (None for what it does not split);
* `new_entity_items` gives the data row `transform_command_to_data(command, None)`
  and the command `{**command, status: finish:FINISHED, updatedAt: now}` -- what
  `importer.mbc.sync.plan_entity` leaves for a new entity at version 1 -- or None.
"""

from __future__ import annotations

import json
from datetime import UTC, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from importer._native import wire_members
from importer.mbc.command_states import FINISH_FINISHED
from importer.mbc.data_sync import transform_command_to_data
from importer.mbc.fast_sync import finished_status, new_entity_items

NOW = "2026-11-25T12:00:00+00:00"
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
scalar = st.one_of(
    text.map(lambda s: {"S": s}),
    st.integers(-(10**6), 10**6).map(lambda n: {"N": str(n)}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
)
value = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.dictionaries(text, inner, max_size=4).map(lambda m: {"M": m}),
        st.lists(inner, max_size=4).map(lambda v: {"L": v}),
    ),
    max_leaves=12,
)
DATES = st.sampled_from(
    ["2024-05-01T00:00:00+00:00", "2024-05-01T09:00:00Z", "2024-05-01", "not a date", ""]
)


@st.composite
def commands(draw):
    code = draw(text.filter(lambda s: "@" not in s and s))
    pk = "PRODUCT#" + draw(st.sampled_from(["acme", "t\u00e9", 'q"x']))
    item = {"pk": {"S": pk}, "sk": {"S": f"PRODUCT#{code}@1"}, "id": {"S": f"{pk}#{code}"}}
    optional = {
        "code": {"S": code},
        "name": draw(value),
        "type": {"S": "PRODUCT"},
        "tenantCode": {"S": "acme"},
        "seq": {"N": "3"},
        "attributes": {"M": draw(st.dictionaries(text, value, max_size=5))},
        "isDeleted": {"BOOL": draw(st.booleans())},
        "ttl": draw(st.sampled_from([{"NULL": True}, {"N": "1790000000"}])),
        "source": {"S": "bench"},
        "requestId": {"S": "r1#2"},
        "status": {"S": "pending"},
        "createdAt": {"S": draw(DATES)},
        "updatedAt": {"S": draw(DATES)},
        "createdBy": {"S": "importer"},
        "updatedIp": {"S": "10.0.0.1"},
        "syncMode": {"S": "SYNC"},
    }
    for name in draw(st.permutations(list(optional))):
        if draw(st.booleans()):
            item[name] = optional[name]
    item["version"] = {"N": "1"}
    return item


def _wire(doc, *, spaced: bool = False) -> bytes:
    seps = (", ", ": ") if spaced else (",", ":")
    return json.dumps(doc, ensure_ascii=spaced, separators=seps).encode()


@settings(max_examples=100, deadline=None)
@given(commands(), st.booleans())
def test_wire_members_split_as_json_reads(doc, spaced):
    members = wire_members(_wire(doc, spaced=spaced))
    assert members is not None
    assert [k for k, _ in members] == list(doc)
    assert {k: json.loads(v) for k, v in members} == doc


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_wire_members_never_raise_on_any_bytes(data):
    members = wire_members(data)
    if members is not None:  # what it splits is an object: every member's value one too
        assert all(v.startswith(b"{") and v.endswith(b"}") for _, v in members)


@settings(max_examples=100, deadline=None)
@given(commands(), st.binary(max_size=40), st.integers(0, 200))
def test_wire_members_never_raise_on_cut_or_spliced_records(doc, junk, at):
    wire = _wire(doc)
    for data in (wire[:at], wire[:at] + junk + wire[at:], wire.replace(b"}", b"]", 1)):
        members = wire_members(data)
        try:
            doc = json.loads(data)
        except ValueError:
            continue  # inner scalars are not validated (the caller's records are JSON)
        if members is not None:  # on JSON it never disagrees with json
            assert {k: json.loads(v) for k, v in members} == doc


def test_wire_members_refuse_what_is_not_an_object_of_objects():
    for data in (b"", b"[]", b'{"a":1}', b'{"a":{"S":"x"},"a":{"S":"y"}}', b'{"a\\u0041":{}}',
                 b'{"a":{"S":"x"}} x', b'{"a":{"S":"x\n"}}', b'{"a":{"S":"x"}'):  # fmt: skip
        assert wire_members(data) is None, data
    assert wire_members(b" { } ") == []


@settings(max_examples=150, deadline=None)
@given(commands(), st.sampled_from([UTC, timezone(timedelta(hours=9))]), st.booleans())
def test_new_entity_items_equal_the_state_machines_records(doc, tz, spaced):
    pair = new_entity_items(_wire(doc, spaced=spaced), doc["sk"]["S"], tz, finished_status(NOW))
    assert pair is not None
    data, command = pair
    assert json.loads(data) == transform_command_to_data(doc, None, tz)
    assert json.loads(command) == {**doc, "status": {"S": FINISH_FINISHED}, "updatedAt": {"S": NOW}}


def test_new_entity_items_leave_other_records_to_the_general_path():
    base = {"pk": {"S": "P#a"}, "sk": {"S": "P#x@2"}, "version": {"N": "2"}}
    assert new_entity_items(_wire(base), "P#x@2", UTC, finished_status(NOW)) is None
    s3 = {**base, "sk": {"S": "P#x@1"}, "version": {"N": "1"}, "attributes": {"S": "s3://b/k"}}
    assert new_entity_items(_wire(s3), "P#x@1", UTC, finished_status(NOW)) is None
    assert new_entity_items(b'{"pk":1}', "P#x@1", UTC, finished_status(NOW)) is None


@settings(max_examples=100, deadline=None)
@given(commands(), st.booleans())
def test_merge_state_spliced_equals_state_parsed(doc, spaced):
    """Upsert's batch-wide path (`ModeStage._merge_fresh`) keeps in the run map what
    `_parse` would have kept for the row: its name and attributes."""
    from importer._native import ItemBlock
    from importer.modes.stage import _merge_state, _merge_states, _state
    from importer.records import PreparedItem

    wire = _wire(doc, spaced=spaced)
    got = _merge_state(wire)
    want = _state(doc, ("name", "attributes"))
    assert json.loads(got) == json.loads(want)
    assert list(json.loads(got)) == list(json.loads(want))
    items = [PreparedItem(2, "p", "s@1", wire), PreparedItem(3, "p", "t@1", b'{"a":1}')]
    fallback = _state({"a": 1}, ("name", "attributes"))  # not split: parsed instead
    assert _merge_states(ItemBlock(items)) == _merge_states(items) == [got, fallback]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=120), st.lists(st.sampled_from([b"name", b"a", b"S", b""]), max_size=3))
def test_wire_pick_never_raises_and_agrees_with_wire_members(data, names):
    from importer._native import wire_pick

    picked = wire_pick(data, tuple(names))
    members = wire_members(data)
    try:
        json.loads(data)
    except ValueError:
        return  # inner scalars are not validated (the caller's records are JSON)
    if members is not None and len(set(names)) == len(names):
        want = {k: v for k, v in members}
        expect = {n.decode(): want[n.decode()] for n in names if n.decode() in want}
        assert picked is not None
        assert json.loads(picked) == {k: json.loads(v) for k, v in expect.items()}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(commands(), min_size=1, max_size=6),
    st.sampled_from([UTC, timezone(timedelta(hours=9))]),
    st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_block_new_entities_equal_new_entity_items(docs, tz, take):
    """The C builder (`run --sync` over an `ItemBlock`) gives, for every record it takes,
    the bytes-as-JSON of the Python one's; what it leaves, Python (or the general way) does."""
    from importer._native import ItemBlock, block_new_entities
    from importer.mbc.fast_sync import _PLAN, SYNC_MODE_MEMBER, _dates_for
    from importer.records import PreparedItem
    from importer.run.batch_steps import mark_sync

    for n, d in enumerate(docs):  # the caller's blocks: every key once
        d["sk"] = {"S": f"{d['sk']['S'][:-2]}-{n}@1"}
    items = [PreparedItem(n + 2, d["pk"]["S"], d["sk"]["S"], _wire(d)) for n, d in enumerate(docs)]
    block = ItemBlock(items)
    status, updated = finished_status(NOW)
    dates = _dates_for(tz, items[0].wire)
    mask = bytes(take[: len(items)])
    data, done, left = block_new_entities(
        block, mask, _PLAN, dates, status, updated, SYNC_MODE_MEMBER
    )
    made = [i for i in range(len(items)) if mask[i] and i not in left]
    assert set(left) <= {i for i in range(len(items)) if mask[i]}
    assert len(data) == len(done) == len(made)
    for k, i in enumerate(made):
        it = items[i]
        want = new_entity_items(mark_sync([it])[0].wire, it.sk, tz, (status, updated))
        assert want is not None
        assert (data[k].line, data[k].pk, data[k].sk) == (it.line, it.pk, it.sk[:-2])
        assert (done[k].line, done[k].pk, done[k].sk) == (it.line, it.pk, it.sk)
        assert json.loads(data[k].wire) == json.loads(want[0])
        assert json.loads(done[k].wire) == json.loads(want[1])
    assert data.keys_unique() and done.keys_unique()


def test_block_new_entities_leave_what_they_do_not_take():
    from importer._native import ItemBlock, block_new_entities
    from importer.mbc.fast_sync import _PLAN, SYNC_MODE_MEMBER
    from importer.records import PreparedItem

    rows = [
        PreparedItem(2, "P#a", "P#x@2", b'{"pk":{"S":"P#a"},"sk":{"S":"P#x@2"},'
                     b'"version":{"N":"2"}}'),
        PreparedItem(3, "P#a", "P#y@1", b'{"pk":{"S":"P#a"},"sk":{"S":"P#y@1"},"version":{"N":"1"},'
                     b'"attributes":{"S":"s3://b/k"}}'),
        PreparedItem(4, "P#a", "P#z@1", b'{"pk":{"S":"P#a"},"sk":{"S":"P#z@1"},"version":{"N":"1"},'
                     b'"createdAt":{"S":"2024-01-01"}}'),  # a date it has not met
        PreparedItem(5, "P#a", "P#w@1", b'not json'),
        PreparedItem(6, "P#a", "P#v@1", b'{"pk":{"S":"P#a"},"sk":{"S":"P#v@1"},'
                     b'"version":{"N":"1"}}'),
    ]  # fmt: skip
    status, updated = finished_status(NOW)
    data, done, left = block_new_entities(
        ItemBlock(rows), b"\x01" * 5, _PLAN, {}, status, updated, SYNC_MODE_MEMBER
    )
    assert left == [0, 1, 2, 3]
    assert [it.sk for it in data] == ["P#v"] and [it.sk for it in done] == ["P#v@1"]
    assert json.loads(done[0].wire)["syncMode"] == {"S": "SYNC"}
