"""`run --sync`'s usual case as bytes: a new entity's data row and finished command record.

Almost every row a run writes is an entity's first version with no data row
yet.  For it, the command state machine (and `importer.mbc.sync.plan_entity`)
leaves exactly two things: the data row `transform_command_to_data(command,
None)` and the command record with `status = finish:FINISHED` and `updatedAt =
now` -- no history row, no TTL rewrite of a predecessor.  Both are spliced
here from the command record's members as the native core splits them
(`importer._native.wire_members`), without a `json.loads` / `json.dumps` round
trip per row (that round trip was most of `--sync`'s CPU).

`new_entity_items` answers None whenever the record is not that plain case
(an S3-offloaded `attributes`, a version other than 1, a member it cannot
split); the caller then takes the general path (`importer.mbc.sync`), which
gives the same result.  Equality with `transform_command_to_data` is checked by
tests/test_fast_sync.py on generated records.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from importer._native import wire_members
from importer.mbc.command_states import FINISH_FINISHED
from importer.mbc.data_sync import _COPIED, _COPIED_LATE
from importer.mbc.model import DATE_FIELDS, _render_text, format_date, remove_sk_version
from importer.records import Failure, PreparedItem, WriteOutcome

__all__ = ["SyncedBatch", "finished_status", "new_entity_items", "write_and_sync"]

_VERSION_1 = b'{"N":"1"}'
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
    data: list[tuple[str, bytes]] = [("pk", m["pk"]), ("sk", _unversioned(m["sk"], sk))]
    data.extend((name, m[name]) for name in _COPIED if name in m)
    data.append(("cpk", m["pk"]))
    data.append(("csk", m["sk"]))
    data.extend((name, m[name]) for name in _COPIED_LATE if name in m)
    for name in _DATA_TAIL:
        raw = m.get(name)
        if raw is None:
            continue
        if name in DATE_FIELDS:
            raw = _date(raw, tz)
            if raw is None:
                return None
        data.append((name, raw))
    status, updated = finished
    command = [
        (k, status if k == "status" else updated if k == "updatedAt" else v) for k, v in members
    ]
    if "status" not in m:
        command.append(("status", status))
    if "updatedAt" not in m:
        command.append(("updatedAt", updated))
    return _obj(data), _obj(command)


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


def write_and_sync(
    syncer: Any,
    items: Sequence[PreparedItem],
    write_commands: Callable[[Sequence[PreparedItem]], WriteOutcome],
    general: Callable[[Sequence[PreparedItem], WriteOutcome], tuple[int, list[Failure]]],
) -> SyncedBatch:
    """Write a batch's command records (`mark_sync`ed) and apply them, new entities as bytes.

    The batch's entities are read in the data table first (consistent, in
    groups, as `importer.mbc.sync` reads them).  A record at version 1 whose
    entity has no data row and appears once in the batch is the plain case:
    its data row is written first (the syncer's data writer: grouped, paced and
    retried as command writes are), then the command, already finished -- two
    items a row instead of three.  A row whose data row was refused is a
    failure and its command is not written (nothing half-applied is left; a
    re-run writes it).  Every other record is written as it is and handed to
    `general` (`importer.run.batch_unit`'s call of `BatchSync.sync`) with the
    command outcome.  Without the default handler alone (custom handlers run in
    bulk there) everything goes the general way.
    """
    plain: dict[int, tuple[bytes, bytes]] = {}
    if syncer.plain_only():
        plain = _plain(syncer, items)
    rest = [it for it in items if it.line not in plain]
    out = SyncedBatch(WriteOutcome())
    finished: list[PreparedItem] = []
    if plain:
        by_line = {it.line: it for it in items if it.line in plain}
        data = [
            PreparedItem(line, by_line[line].pk, remove_sk_version(by_line[line].sk), d)
            for line, (d, _c) in plain.items()
        ]
        done = syncer.writer_for(syncer.data_table_name).write_batch(data)
        refused = {f.line: f for f in done.failures} | {r.line: r for r in done.rejects}
        out.synced += done.written
        for line, (_d, command) in plain.items():
            it = by_line[line]
            why = refused.get(line)
            if why is not None:
                reason = f"sync: {remove_sk_version(it.sk)}: {why.reason}"  # as the general path
                out.failures.append(Failure(line, it.pk, it.sk, reason))
            else:
                finished.append(PreparedItem(line, it.pk, it.sk, command))
    to_write = [*finished, *rest] if finished else rest
    written = write_commands(to_write) if to_write else WriteOutcome()
    out.commands = written
    if rest:
        synced, failures = general(rest, written)
        out.synced += synced
        out.failures.extend(failures)
        out.general_failures = failures
    return out


def _plain(syncer: Any, items: Sequence[PreparedItem]) -> dict[int, tuple[bytes, bytes]]:
    """line -> (data row, finished command) for the batch's plain rows (see `write_and_sync`)."""
    bases: dict[tuple[str, str], int] = {}
    for it in items:
        key = (it.pk, remove_sk_version(it.sk))
        bases[key] = bases.get(key, 0) + 1
    candidates = [it for it in items if it.sk.endswith("@1") and bases[(it.pk, it.sk[:-2])] == 1]
    if not candidates:
        return {}
    try:
        stored = syncer.lookup.get_many(
            syncer.data_table_name, [(it.pk, it.sk[:-2]) for it in candidates]
        )
    except Exception:  # noqa: BLE001 - the general path reads again and reports
        return {}
    tz = syncer.tz
    now_text = format_date(datetime.fromtimestamp(syncer.now(), UTC), tz)
    finished = finished_status(now_text)
    out: dict[int, tuple[bytes, bytes]] = {}
    for it in candidates:
        if (it.pk, it.sk[:-2]) in stored:
            continue
        pair = new_entity_items(it.wire, it.sk, tz, finished)
        if pair is not None:
            out[it.line] = pair
    return out
