"""`run --sync`'s usual cases as bytes: a new entity, and an update of a stored one.

Almost every row a first import writes is an entity's first version with no
data row yet.  For it, the command state machine (and
`importer.mbc.sync.plan_entity`) leaves exactly two things: the data row
`transform_command_to_data(command, None)` and the command record with `status
= finish:FINISHED` and `updatedAt = now` -- no history row, no TTL rewrite of a
predecessor.  Both are spliced here from the command record's members as the
native core splits them (`importer._native.wire_members`), without a
`json.loads` / `json.dumps` round trip per row (that round trip was most of
`--sync`'s CPU).

Almost every row a later import (upsert into a live table) writes is version V
of an entity whose data row is at V-1.  For it the machine leaves four things:
the previous command (@V-1) put back with the command table's TTL
(`set_ttl_command`), the data row copied to the history table at
`base@{V-1}` with the history table's TTL (`history_copy`), the data row merged
with the command (the default handler) and the command finished.  The data row
and the previous command are read (raw, side by side) and the four items
spliced from the three records' members (`existing_entity_items`, in C first:
`importer._native.existing_items`, `_native/_history.pxi`).

Both answer None whenever the record is not that plain case (an S3-offloaded
`attributes`, a version gap, a number or key in another spelling, a member it
cannot split); the caller then takes the general path (`importer.mbc.sync`),
which gives the same result.  Equality with `plan_entity` and
`transform_command_to_data`, and of the C with the Python splice, is checked by
tests/test_fast_sync.py on generated records.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from importer._native import block_new_entities, existing_items, wire_members, wire_pick
from importer.dynamodb.lookup import Keys
from importer.item_batch import as_batch
from importer.mbc.command_states import FINISH_FINISHED
from importer.mbc.data_sync import _COPIED, _COPIED_LATE, _KEPT
from importer.mbc.model import (
    DATE_FIELDS,
    _render_text,
    add_sk_version,
    format_date,
    get_sk_version,
    remove_sk_version,
    tenant_of,
)
from importer.records import Failure, PreparedItem, WriteOutcome

__all__ = [
    "ExistingItems",
    "SyncedBatch",
    "SyncedItem",
    "existing_entity_items",
    "finished_status",
    "new_entity_items",
    "ttl_member",
    "write_and_sync",
]

_VERSION_1 = b'{"N":"1"}'
#: what `importer.run.batch_steps.mark_sync` appends to a record, as a member
SYNC_MODE_MEMBER = b',"syncMode":{"S":"SYNC"}'
_DATA_TAIL = ("createdAt", "updatedAt", "createdBy", "updatedBy", "createdIp", "updatedIp")


def _string(text: str) -> bytes:
    return b'{"S":' + json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"}"


def finished_status(now_text: str) -> tuple[bytes, bytes]:
    """The raw `status` and `updatedAt` members of a finished command at `now_text`."""
    return _string(FINISH_FINISHED), _string(now_text)


@functools.lru_cache(maxsize=1024)
def _date(raw: bytes, tz: tzinfo) -> bytes | None:
    """A date member as `render_dates` leaves it (one run stamps a few dates: cached)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return raw
    text = value.get("S")
    if not text:
        return raw
    if not isinstance(text, str) or len(value) != 1:
        return None
    rendered = _render_text(text, tz)
    return raw if rendered == text else _string(rendered)


_NAMES: dict[str, bytes] = {}


def _name(name: str) -> bytes:
    """`"name":` as bytes (a run meets a few dozen names: kept)."""
    out = _NAMES.get(name)
    if out is None:
        out = json.dumps(name).encode() + b":"
        if len(_NAMES) < 4096:
            _NAMES[name] = out
    return out


def _version_1(raw: bytes | None) -> bool:
    if raw == _VERSION_1:
        return True
    try:
        return raw is not None and json.loads(raw) == {"N": "1"}
    except ValueError:
        return False


def _obj(members: list[tuple[str, bytes]]) -> bytes:
    return b"{" + b",".join([_name(k) + v for k, v in members]) + b"}"


def _unversioned(raw_sk: bytes, sk: str) -> bytes:
    """The data row's `sk` member from the command's: its `@version` cut off."""
    at = raw_sk.rfind(b"@")
    if raw_sk.startswith(b'{"S":"') and raw_sk.endswith(b'"}') and b"\\" not in raw_sk and at > 0:
        return raw_sk[:at] + b'"}'
    return _string(remove_sk_version(sk))


def _command_members(m: dict[str, bytes], sk: str) -> list[tuple[str, bytes]]:
    """The data row's members taken from the command record, in the order
    `transform_command_to_data` writes them: its keys unversioned, the copied fields,
    the command's own keys as cpk/csk, the fields copied after them."""
    data = [("pk", m["pk"]), ("sk", _unversioned(m["sk"], sk))]
    data.extend((name, m[name]) for name in _COPIED if name in m)
    data.append(("cpk", m["pk"]))
    data.append(("csk", m["sk"]))
    data.extend((name, m[name]) for name in _COPIED_LATE if name in m)
    return data


def new_entity_items(
    wire: bytes, sk: str, tz: tzinfo, finished: tuple[bytes, bytes]
) -> tuple[bytes, bytes] | None:
    """(data row, finished command) wire bytes for a command record at version 1 whose
    entity has no data row yet -- or None when the record is not that plain case.

    `finished` is `finished_status(now_text)`.
    """
    members = wire_members(wire)
    if members is None:
        return None
    m = dict(members)
    attrs = m.get("attributes")
    if (
        "pk" not in m
        or "sk" not in m
        or not _version_1(m.get("version"))
        or (attrs is not None and attrs.startswith(b'{"S"'))  # maybe offloaded to S3
    ):
        return None
    data: list[tuple[str, bytes]] = _command_members(m, sk)
    for name in _DATA_TAIL:
        raw = m.get(name)
        if raw is None:
            continue
        if name in DATE_FIELDS:
            raw = _date(raw, tz)
            if raw is None:
                return None
        data.append((name, raw))
    return _obj(data), _finished(members, m, finished)


#: every member `transform_command_to_data` sets (or drops): those of a stored data row
#: that it keeps in place are the others
_PUT = frozenset(("pk", "sk", *_COPIED, "cpk", "csk", *_COPIED_LATE, *_DATA_TAIL))


def _version(raw: bytes | None) -> int | None:
    """A `version` member's integer when it is written plainly (`{"N":"12"}`), else None
    (a form the general path reads with `float`, "1.0" say: left to it)."""
    if raw is None:
        return None
    if raw.startswith(b'{"N":"') and raw.endswith(b'"}'):
        digits = raw[6:-2]
    else:  # spaced, say: read
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(value, dict) or len(value) != 1 or not isinstance(value.get("N"), str):
            return None
        digits = value["N"].encode()
    if not digits.isdigit() or (len(digits) > 1 and digits[:1] == b"0"):
        return None
    return int(digits)


def _is_null(raw: bytes) -> bool:
    """`"NULL" in value` for an attribute value's bytes."""
    if raw.startswith(b'{"S":"') and raw.endswith(b'"}') and raw.count(b'"') == 4:
        return False  # a plain string: the usual case, no parse
    try:
        value = json.loads(raw)
    except ValueError:
        return False
    return isinstance(value, dict) and "NULL" in value


def ttl_member(ttl: float | None) -> bytes:
    """`with_ttl`'s value as bytes: a number, or NULL."""
    if ttl is None:
        return b'{"NULL":true}'
    if isinstance(ttl, float) and ttl.is_integer():
        ttl = int(ttl)
    return b'{"N":"' + str(ttl).encode() + b'"}'


def _restamped(
    members: list[tuple[str, bytes]], tz: tzinfo, ttl: bytes, sk: bytes | None = None
) -> bytes | None:
    """`render_dates(with_ttl(item, ttl), tz)` (and `sk` replaced when given) as bytes:
    the previous command's TTL rewrite and, with the history `sk`, the history row."""
    out = []
    had_ttl = False
    for name, raw in members:
        if name == "ttl":
            raw, had_ttl = ttl, True
        elif name == "sk" and sk is not None:
            raw = sk
        elif name in DATE_FIELDS:
            rendered = _date(raw, tz)
            if rendered is None:
                return None
            raw = rendered
        out.append(_name(name) + raw)
    if not had_ttl:
        out.append(b'"ttl":' + ttl)
    return b"{" + b",".join(out) + b"}"


@dataclass(frozen=True, slots=True)
class ExistingItems:
    """What the state machine writes for a command at version V whose entity's data row
    is at V-1: the history row, the new data row, the previous command with its TTL
    (None when the command table has no @V-1) and the command finished."""

    history: bytes
    data: bytes
    previous: bytes | None
    finished: bytes


def existing_entity_items(
    wire: bytes,
    sk: str,
    stored: bytes,
    previous: bytes | None,
    tz: tzinfo,
    finished: tuple[bytes, bytes],
    ttls: tuple[bytes, bytes],
) -> ExistingItems | None:
    """`importer.mbc.sync.plan_entity`'s records for one pending version whose entity's
    data row (`stored`, its bytes as read) is at the version before -- or None when it is
    not that plain case (the general path then gives the same result).

    `wire` is the marked command record at `sk` (`...@V`); `previous` the command
    record at `@V-1` as read, or None when absent; `finished` is
    `finished_status(now_text)`; `ttls` the (history, command) tables' TTL members
    (`ttl_member`): `set_ttl_command` puts the previous command back with the command
    table's TTL, `history_copy` the data row at `base@{data.version}` with the history
    table's, and the default handler merges the command into the data row.
    """
    members = wire_members(wire)
    held = wire_members(stored)
    if members is None or held is None:
        return None
    m = dict(members)
    h = dict(held)
    attrs = m.get("attributes")
    version = _version(m.get("version"))
    if (
        "pk" not in m
        or "sk" not in m
        or "sk" not in h
        or version is None
        or version < 2
        or sk.rfind("@") < 0
        or sk[sk.rfind("@") + 1 :] != str(version)
        or _version(h.get("version")) != version - 1
        or (attrs is not None and attrs.startswith(b'{"S"'))  # maybe offloaded to S3
    ):
        return None
    # history_copy: the data row as it stands, at base@{its version}, history TTL
    try:
        held_sk = json.loads(h["sk"])["S"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(held_sk, str):
        return None
    ttl_history, ttl_command = ttls
    history = _restamped(held, tz, ttl_history, _string(add_sk_version(held_sk, version - 1)))
    if history is None:
        return None
    # the default handler: the data row's other members in place, then the command's
    data = [(k, v) for k, v in held if k not in _PUT]
    data += _command_members(m, sk)
    for name in _DATA_TAIL:
        raw = m.get(name)
        if name in _KEPT:
            current = h.get(name)
            if current is not None and not _is_null(current):
                raw = current
        if raw is None:
            continue
        if name in DATE_FIELDS:
            raw = _date(raw, tz)
            if raw is None:
                return None
        data.append((name, raw))
    before = None
    if previous is not None:
        prev = wire_members(previous)
        if prev is None:
            return None
        before = _restamped(prev, tz, ttl_command)
        if before is None:
            return None
    return ExistingItems(history, _obj(data), before, _finished(members, m, finished))


def _finished(
    members: list[tuple[str, bytes]], m: dict[str, bytes], finished: tuple[bytes, bytes]
) -> bytes:
    """The command record with `status = finish:FINISHED` and `updatedAt = now`."""
    status, updated = finished
    command = [
        (k, status if k == "status" else updated if k == "updatedAt" else v) for k, v in members
    ]
    if "status" not in m:
        command.append(("status", status))
    if "updatedAt" not in m:
        command.append(("updatedAt", updated))
    return _obj(command)


@dataclass
class SyncedBatch:
    """A `--sync` batch's writes: the command table's outcome, data rows written, and the
    rows whose sync failed (each counted once: a row is written or failed, never both)."""

    commands: WriteOutcome
    synced: int = 0
    #: every row whose sync failed: those whose data row was refused (their commands were
    #: not written) and, among them, `general_failures` (written, then not applied)
    failures: list[Failure] = field(default_factory=list)
    general_failures: list[Failure] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SyncedItem(PreparedItem):
    """A command record already finished (`wire`), with what applying it writes besides,
    made by `existing_entity_items`: handed to the sync like any written record, which
    then writes these bytes instead of planning the entity again."""

    history_sk: str = ""
    history: bytes = b""
    data: bytes = b""
    previous_sk: str = ""
    previous: bytes | None = None


def write_and_sync(
    syncer: Any,
    items: Sequence[PreparedItem],
    write_commands: Callable[[Sequence[PreparedItem]], WriteOutcome],
    general: Callable[[Sequence[PreparedItem], WriteOutcome], tuple[int, list[Failure]]],
    mark: Callable[[Sequence[PreparedItem]], list[PreparedItem]],
) -> SyncedBatch:
    """Write a batch's command records and apply them, the usual entities as bytes.

    `items` are the batch's records as the mode stage left them; `mark` is
    `importer.run.batch_steps.mark_sync` (`syncMode: SYNC` appended).  The
    batch's entities are read in the data table first (consistent, in groups,
    as `importer.mbc.sync` reads them).  Two cases are spliced as bytes, for a
    record whose entity appears once in the batch:

    * version 1, no data row: its data row is written first (the syncer's data
      writer: grouped, paced and retried as command writes are), then the
      command, marked and already finished -- two items a row instead of three;
      from an `ItemBlock` both are made in C (`importer._native.block_new_entities`)
      and written as blocks.  A row whose data row was refused is a failure and
      its command is not written (nothing half-applied is left; a re-run writes it);
    * version V >= 2 whose data row is at V-1 (upsert against a live table): the
      command record at @V-1 is read too, and `existing_entity_items` makes the
      command finished, the history row, the new data row and the previous command
      with its TTL -- four items a row instead of five.  The command is written
      with the batch's, then handed to `general` as a `SyncedItem`, whose sync
      writes the other three (`BatchSync.sync_items`): a kill in between leaves a
      command the data row does not hold yet, which a resumed run (or `importer
      sync`) applies, as after the general path's command write.

    Every other record is marked, written as it is and handed to `general`
    (`importer.run.batch_steps`'s call of `BatchSync.sync_items`) with the command
    outcome.  Without the default handler alone (custom handlers run in bulk
    there) everything goes the general way.
    """
    split = _plain(syncer, items, mark)
    out = SyncedBatch(WriteOutcome())
    finished = split.finished
    if len(split.data):
        done = syncer.writer_for(syncer.data_table_name).write_batch(split.data)
        out.synced += done.written
        refused = {f.line: f for f in done.failures} | {r.line: r for r in done.rejects}
        if refused:
            kept = []
            for it in finished:
                why = refused.get(it.line)
                if why is None:
                    kept.append(it)
                    continue
                reason = f"sync: {remove_sk_version(it.sk)}: {why.reason}"  # as the general path
                out.failures.append(Failure(it.line, it.pk, it.sk, reason))
            finished = kept
    rest: list[PreparedItem] = [*split.existing, *split.rest]
    to_write = finished if not rest else [*finished, *rest]
    written = write_commands(to_write) if len(to_write) else WriteOutcome()
    out.commands = written
    if rest:
        synced, failures = general(rest, written)
        out.synced += synced
        out.failures.extend(failures)
        out.general_failures = failures
    return out


def _data_plan() -> tuple[tuple[bytes, bytes, int], ...]:
    """`transform_command_to_data(command, None)` as steps for `block_new_entities`."""
    steps = [(b"pk", b"pk", 0), (b"sk", b"sk", 1)]
    steps += [(n.encode(), n.encode(), 0) for n in _COPIED]
    steps += [(b"cpk", b"pk", 0), (b"csk", b"sk", 0)]
    steps += [(n.encode(), n.encode(), 0) for n in _COPIED_LATE]
    steps += [(n.encode(), n.encode(), 2 if n in DATE_FIELDS else 0) for n in _DATA_TAIL]
    return tuple(steps)


_PLAN = _data_plan()


def _existing_plan() -> tuple[tuple[bytes, bytes, int], ...]:
    """`transform_command_to_data(command, stored)` as steps for `existing_items`: those of
    `_data_plan`, the `_KEPT` members taken from the data row first (3, or 4 a date)."""
    steps = []
    for name, source, op in _PLAN:
        if name.decode() in _KEPT:
            op = 4 if op == 2 else 3
        steps.append((name, source, op))
    return tuple(steps)


_EXISTING_PLAN = _existing_plan()
#: the date members met so far, as `render_dates` leaves them (per zone; a run stamps a few)
_DATES: dict[tzinfo, dict[bytes, bytes]] = {}


def _dates_for(tz: tzinfo, *wires: bytes | None) -> dict[bytes, bytes]:
    """The zone's known dates, with those of `wires` (a batch's first record; the records
    an existing entity's items are made of) added."""
    dates = _DATES.setdefault(tz, {})
    if len(dates) > 4096:
        dates.clear()
    for wire in wires:
        for name, raw in (wire_members(wire) or ()) if wire is not None else ():
            if name in DATE_FIELDS and raw not in dates:
                rendered = _date(raw, tz)
                if rendered is not None:
                    dates[raw] = rendered
    return dates


@dataclass
class _Split:
    """A batch cut for `write_and_sync`: the items it writes per table, and the rest."""

    data: Sequence[PreparedItem] = ()
    finished: Sequence[PreparedItem] = ()
    existing: list[SyncedItem] = field(default_factory=list)
    rest: list[PreparedItem] = field(default_factory=list)


def _plain(
    syncer: Any, items: Sequence[PreparedItem], mark: Callable[..., list[PreparedItem]]
) -> _Split:
    """The batch's items per table, and the rest marked -- see `write_and_sync`."""
    if not syncer.plain_only():
        return _Split(rest=mark(items))
    native = as_batch(items).block()  # C below reads a native block's buffer
    block = native is not None and native.at_version_1() and native.keys_unique()
    candidates: Sequence[PreparedItem] = items
    keys: Any
    if block:  # every record at @1, each entity once: all are candidates
        keys = Keys.of(as_batch(items), versioned=False)
    else:
        bases: dict[tuple[str, str], int] = {}
        for it in items:
            key = (it.pk, remove_sk_version(it.sk))
            bases[key] = bases.get(key, 0) + 1
        candidates = [it for it in items if bases[(it.pk, remove_sk_version(it.sk))] == 1]
        if not candidates:
            return _Split(rest=mark(items))
        keys = Keys([(it.pk, remove_sk_version(it.sk)) for it in candidates], distinct=True)
    # the commands before the candidates above version 1, read with the data rows, side by
    # side: they are needed when the data row is one version behind (the usual upsert);
    # a block at version 1 has none (and is not walked row by row in Python for it)
    earlier = (
        []
        if block
        else [
            (it.pk, add_sk_version(it.sk, get_sk_version(it.sk) - 1))
            for it in candidates
            if get_sk_version(it.sk) >= 2
        ]
    )
    lookup = syncer.lookup
    before: dict[tuple[str, str], bytes] = {}
    try:
        if earlier:
            stored, before = syncer.side_by_side(
                lambda: lookup.get_many(syncer.data_table_name, keys, raw=True),
                lambda: lookup.get_many(syncer.table, Keys(earlier, distinct=True), raw=True),
            )
        else:
            stored = lookup.get_many(syncer.data_table_name, keys, raw=True)
    except Exception:  # noqa: BLE001 - the general path reads again and reports
        return _Split(rest=mark(items))
    tz = syncer.tz
    finished_at = finished_status(format_date(datetime.fromtimestamp(syncer.now(), UTC), tz))
    out = _Split()
    data: list[PreparedItem] = []
    finished: list[PreparedItem] = []
    general: list[PreparedItem] = []  # not marked yet
    if block:
        assert native is not None
        items = native
        take = bytearray(b"\x01") * len(items)
        if stored:
            for i, key in enumerate(items.entity_keys(versioned=False)):
                if key in stored:
                    take[i] = 0
        status, updated = finished_at
        dates = _dates_for(tz, items[0].wire)
        data_block, done_block, left = block_new_entities(
            items, take, _PLAN, dates, status, updated, SYNC_MODE_MEMBER
        )
        general = [items[i] for i in range(len(items)) if not take[i]]
        if not left:
            out.data, out.finished = data_block, done_block
            out.rest = mark(general) if general else []
            return out
        # what C left (a date it had not met, a record it does not split): in Python
        data, finished = list(data_block), list(done_block)
        candidates = [items[i] for i in left]
        stored = {}
    else:
        chosen = {it.line for it in candidates}
        general = [it for it in items if it.line not in chosen]
    existing: list[tuple[PreparedItem, PreparedItem, bytes]] = []
    for it, marked in zip(candidates, mark(candidates), strict=True):
        base = remove_sk_version(it.sk)
        held = stored.get((it.pk, base))
        if held is not None:
            existing.append((it, marked, held))
            continue
        pair = None
        if it.sk.endswith("@1"):
            pair = new_entity_items(marked.wire, it.sk, tz, finished_at)
        if pair is None:
            general.append(it)
            continue
        data.append(PreparedItem(it.line, it.pk, base, pair[0]))
        finished.append(PreparedItem(it.line, it.pk, it.sk, pair[1]))
    if existing:
        general.extend(_existing(syncer, existing, before, tz, finished_at, out.existing))
    general.sort(key=lambda it: it.line)
    out.data, out.finished = data, finished
    out.rest = mark(general) if general else []
    return out


def _made_in_c(
    wire: bytes,
    sk: str,
    stored: bytes,
    previous: bytes | None,
    dates: dict[bytes, bytes],
    status: bytes,
    updated: bytes,
    ttls: tuple[bytes, bytes],
) -> ExistingItems | None:
    """`existing_entity_items` by `importer._native.existing_items` (None: not taken there)."""
    at = sk.rfind("@")
    digits = sk[at + 1 :]
    if at < 0 or not digits.isdigit() or digits != str(int(digits)) or int(digits) < 2:
        return None
    got = existing_items(
        wire, stored, previous, digits.encode(), str(int(digits) - 1).encode(),
        _EXISTING_PLAN, dates, status, updated, ttls[0], ttls[1],
    )  # fmt: skip
    return None if got is None else ExistingItems(*got)


def _existing(
    syncer: Any,
    rows: list[tuple[PreparedItem, PreparedItem, bytes]],
    before: dict[tuple[str, str], bytes],
    tz: tzinfo,
    finished_at: tuple[bytes, bytes],
    out: list[SyncedItem],
) -> list[PreparedItem]:
    """The rows whose data row was found (`rows`: item, marked item, stored data row) made
    into `SyncedItem`s in `out`, `before` holding the commands at @V-1 that were found;
    the items left to the general path (not marked) returned."""
    left: list[PreparedItem] = []
    wanted = []
    for it, _marked, held in rows:
        version = get_sk_version(it.sk)
        picked = wire_pick(held, (b"version",))
        if version < 2 or picked is None or _version(picked[11:-1]) != version - 1:
            left.append(it)  # a version gap, a duplicate: the general path
            continue
        wanted.append((it.pk, add_sk_version(it.sk, version - 1)))
    if left:
        gone = {it.line for it in left}
        rows = [r for r in rows if r[0].line not in gone]
    if not rows:
        return left
    ttls = syncer.sync_ttls({tenant_of(it.pk) for it, _, _ in rows})
    status, updated = finished_at
    dates = _DATES.setdefault(tz, {})
    for (it, marked, held), key in zip(rows, wanted, strict=True):
        previous = before.get(key)
        pair = ttls[tenant_of(it.pk)]
        made = _made_in_c(marked.wire, it.sk, held, previous, dates, status, updated, pair)
        if made is None:  # what C did not take: Python's rules (and the dates met, learnt)
            made = existing_entity_items(marked.wire, it.sk, held, previous, tz, finished_at, pair)
            dates = _dates_for(tz, marked.wire, held, previous)
        if made is None:
            left.append(it)
            continue
        out.append(
            SyncedItem(
                it.line,
                it.pk,
                it.sk,
                made.finished,
                history_sk=key[1],
                history=made.history,
                data=made.data,
                previous_sk=key[1],
                previous=made.previous,
            )
        )
    return left
