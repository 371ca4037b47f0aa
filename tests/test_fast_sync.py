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


# ------------------------------------------------------------------ existing entities
def _at(doc: dict, version: int) -> dict:
    """`doc` as the command record at `version`."""
    base = doc["sk"]["S"].rsplit("@", 1)[0]
    return {**doc, "sk": {"S": f"{base}@{version}"}, "version": {"N": str(version)}}


@st.composite
def existing_entities(draw):
    """(pending command at V, the entity's data row at V-1, the command at @V-1 or None)
    as the tables hold them after earlier versions were applied -- extra members the
    data row carries, dates in any form, TTLs present or not."""
    record = draw(commands())
    version = draw(st.integers(2, 12))
    record = _at(record, version)
    earlier = _at(draw(commands()), version - 1)
    earlier["pk"], earlier["sk"] = (
        record["pk"],
        {"S": record["sk"]["S"].rsplit("@", 1)[0] + f"@{version - 1}"},
    )
    data = transform_command_to_data(earlier, None, UTC)
    names = st.sampled_from(["extra", "ttl", "createdBy", "createdIp", "status", "seq"])
    extra = draw(st.dictionaries(names, st.one_of(value, st.just({"NULL": True})), max_size=3))
    data.update(extra)
    if draw(st.booleans()):
        data["createdAt"] = {"S": draw(DATES)}
    previous = earlier if draw(st.booleans()) else None
    return record, data, previous


TTLS = st.sampled_from([None, 1790000000, 1790000000.0, 1790000000.5])


def _plan(record, data, previous, tz, ttl_history, ttl_command):
    from importer.mbc.model import Tables
    from importer.mbc.sync import plan_entity

    tables = Tables.from_command_table("dev-app-product-command")
    versions = {int(record["version"]["N"]): record}
    if previous is not None:
        versions[int(record["version"]["N"]) - 1] = previous

    def ttl(table, tenant):
        return {tables.history: ttl_history, tables.command: ttl_command}[table]

    return plan_entity(versions, data, now_text=NOW, ttl=ttl, tables=tables, tz=tz)


def _same(raw: bytes, want: dict) -> None:
    """The bytes read as `want`, member order included (what a PutItem of `want` sends)."""
    got = json.loads(raw)
    assert got == want
    assert list(got) == list(want)


@settings(max_examples=200, deadline=None)
@given(existing_entities(), st.sampled_from([UTC, timezone(timedelta(hours=9))]),
       st.booleans(), TTLS, TTLS)  # fmt: skip
def test_existing_entity_items_equal_plan_entity(entity, tz, spaced, ttl_history, ttl_command):
    """For a pending version whose data row is at the version before, the bytes equal
    `importer.mbc.sync.plan_entity`'s records (the general path's, which the state machine
    tests hold to the command state machine): history row, data row, previous command
    with its TTL (when the command table has it), the command finished."""
    from importer.mbc.fast_sync import existing_entity_items, ttl_member

    record, data, previous = entity
    plan = _plan(record, data, previous, tz, ttl_history, ttl_command)
    made = existing_entity_items(
        _wire(record, spaced=spaced),
        record["sk"]["S"],
        _wire(data, spaced=spaced),
        None if previous is None else _wire(previous, spaced=spaced),
        tz,
        finished_status(NOW),
        (ttl_member(ttl_history), ttl_member(ttl_command)),
    )
    version = int(record["version"]["N"])
    assert made is not None
    assert plan.applied == [version] and len(plan.history) == 1
    _same(made.history, plan.history[0])
    assert plan.data is not None
    _same(made.data, plan.data)
    _same(made.finished, plan.commands[version])
    if previous is None:
        assert made.previous is None and set(plan.commands) == {version}
    else:
        assert made.previous is not None
        _same(made.previous, plan.commands[version - 1])


@settings(max_examples=100, deadline=None)
@given(existing_entities(), st.integers(-3, 3).filter(lambda d: d != 0))
def test_existing_entity_items_leave_version_gaps_to_the_general_path(entity, shift):
    """A data row not exactly one version behind (a gap the general path replays through,
    a version already applied) is not spliced."""
    from importer.mbc.fast_sync import existing_entity_items, ttl_member

    record, data, previous = entity
    held = int(data["version"]["N"]) + shift
    if held < 0:
        return
    data = {**data, "version": {"N": str(held)}}
    made = existing_entity_items(
        _wire(record), record["sk"]["S"], _wire(data), None, UTC, finished_status(NOW),
        (ttl_member(None), ttl_member(None)),
    )  # fmt: skip
    assert made is None


def test_existing_entity_items_leave_other_records_to_the_general_path():
    from importer.mbc.fast_sync import existing_entity_items, ttl_member

    record = {"pk": {"S": "P#a"}, "sk": {"S": "P#x@2"}, "version": {"N": "2"}}
    data = {"pk": {"S": "P#a"}, "sk": {"S": "P#x"}, "version": {"N": "1"}}
    ttls = (ttl_member(None), ttl_member(5))
    fin = finished_status(NOW)
    assert existing_entity_items(_wire(record), "P#x@2", _wire(data), None, UTC, fin, ttls)
    s3 = {**record, "attributes": {"S": "s3://b/k"}}  # offloaded: S3 is read for the merge
    assert existing_entity_items(_wire(s3), "P#x@2", _wire(data), None, UTC, fin, ttls) is None
    odd = {**data, "version": {"N": "1.0"}}  # a number form read with float: not spliced
    assert existing_entity_items(_wire(record), "P#x@2", _wire(odd), None, UTC, fin, ttls) is None
    v1 = {**record, "sk": {"S": "P#x@1"}, "version": {"N": "1"}}
    assert existing_entity_items(_wire(v1), "P#x@1", _wire(data), None, UTC, fin, ttls) is None
    other = {**record, "version": {"N": "3"}}  # the version member and the sk disagree
    assert existing_entity_items(_wire(other), "P#x@2", _wire(data), None, UTC, fin, ttls) is None
    for bad in (b"not json", b'{"pk":1}'):
        assert existing_entity_items(bad, "P#x@2", _wire(data), None, UTC, fin, ttls) is None
        assert existing_entity_items(_wire(record), "P#x@2", bad, None, UTC, fin, ttls) is None
        assert existing_entity_items(_wire(record), "P#x@2", _wire(data), bad, UTC, fin,
                                     ttls) is None  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    existing_entities(),
    st.sampled_from([UTC, timezone(timedelta(hours=9))]),
    st.sampled_from([False, False, False, True]),  # DynamoDB answers compact
    TTLS,
    TTLS,
    st.sampled_from([True, True, True, False]),  # dates learnt: the usual case
)
def test_existing_items_in_c_equal_existing_entity_items(
    entity, tz, spaced, ttl_history, ttl_command, learnt
):
    """`importer._native.existing_items` (what `run --sync` calls first) gives the bytes of
    the Python rules, or None -- never other bytes."""
    from importer.mbc.fast_sync import (
        _DATES,
        _dates_for,
        _made_in_c,
        existing_entity_items,
        ttl_member,
    )
    from importer.records import PreparedItem
    from importer.run.batch_steps import mark_sync

    record, data, previous = entity
    record = {k: v for k, v in record.items() if k != "syncMode"}  # marked below
    sk = record["sk"]["S"]
    wire = mark_sync([PreparedItem(2, record["pk"]["S"], sk, _wire(record, spaced=spaced))])[0].wire
    stored = _wire(data, spaced=spaced)
    before = None if previous is None else _wire(previous, spaced=spaced)
    ttls = (ttl_member(ttl_history), ttl_member(ttl_command))
    status, updated = finished_status(NOW)
    _DATES.pop(tz, None)
    dates = _dates_for(tz, wire, stored, before) if learnt else {}
    got = _made_in_c(wire, sk, stored, before, dates, status, updated, ttls)
    want = existing_entity_items(wire, sk, stored, before, tz, (status, updated), ttls)
    assert want is not None
    if got is None:  # not taken in C (an escape, a spaced record, a date not learnt)
        return
    assert got == want


def test_existing_items_in_c_take_the_usual_records():
    """Compact records as the importer writes them and DynamoDB answers them, dates learnt:
    made in C (a NULL createdBy on the data row: the command's), equal to Python's."""
    from importer.mbc.fast_sync import _dates_for, _made_in_c, existing_entity_items, ttl_member

    record = {"pk": {"S": "PRODUCT#acme"}, "sk": {"S": "PRODUCT#A-1@3"}, "id": {"S": "x"},
              "version": {"N": "3"}, "name": {"S": "A é"}, "attributes": {"M": {}},
              "createdAt": {"S": "2026-01-02T03:04:05+09:00"}, "createdBy": {"S": "me"},
              "syncMode": {"S": "SYNC"}}  # fmt: skip
    data = {"pk": {"S": "PRODUCT#acme"}, "sk": {"S": "PRODUCT#A-1"}, "version": {"N": "2"},
            "extra": {"L": []}, "ttl": {"N": "5"}, "createdBy": {"NULL": True},
            "createdAt": {"S": "2025-01-01T00:00:00+00:00"}}  # fmt: skip
    previous = {**record, "sk": {"S": "PRODUCT#A-1@2"}, "version": {"N": "2"}}
    wires = [_wire(record), _wire(data), _wire(previous)]
    ttls = (ttl_member(7), ttl_member(None))
    status, updated = finished_status(NOW)
    for tz in (UTC, timezone(timedelta(hours=9))):
        dates = _dates_for(tz, *wires)
        got = _made_in_c(wires[0], "PRODUCT#A-1@3", wires[1], wires[2], dates, status, updated,
                         ttls)  # fmt: skip
        want = existing_entity_items(wires[0], "PRODUCT#A-1@3", wires[1], wires[2], tz,
                                     (status, updated), ttls)  # fmt: skip
        assert got is not None and got == want
        assert json.loads(got.data)["createdBy"] == {"S": "me"}
        assert json.loads(got.history)["sk"] == {"S": "PRODUCT#A-1@2"}
        # a date it has not met: left to Python
        assert _made_in_c(wires[0], "PRODUCT#A-1@3", wires[1], wires[2], {}, status, updated,
                          ttls) is None  # fmt: skip
