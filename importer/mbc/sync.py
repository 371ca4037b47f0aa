"""Apply pending command records in bulk, exactly as the command state machine would.

One execution per command costs ~10 state transitions and 8 Lambda
invocations; for an import of a million rows that is hours of queueing and
hundreds of dollars, where the writes themselves cost about one.  This module
reaches the same tables with BatchGetItem/BatchWriteItem:

1. read the command records (a consistent Scan of the command table, or the
   records a run just wrote), grouped by entity ``(pk, sk without @version)``;
2. BatchGetItem the entities' data rows (and any predecessor command not in
   hand); the *pending* versions of an entity are those above its data row's;
3. replay, version by version and in memory, what the states do
   (:mod:`importer.mbc.command_states`): ``set_ttl_command`` puts the previous
   command back with the command TTL, ``history_copy`` copies the data row to
   history as ``base@version``, the default handler merges the command into
   the data row, ``finish`` leaves ``status = finish:FINISHED`` with
   ``updatedAt = now`` on the command;
4. run custom data-sync handlers (``up_many`` or ``up`` per command, in
   version order); a handler error at version V leaves V (status
   ``sync_data:FAILED``) and the entity's later versions pending, as a failed
   execution would (the framework would block them forever; a re-run retries);
5. BatchWriteItem history rows, then data rows, then command rows, so that a
   crash leaves commands not yet ``finish:FINISHED`` rather than the reverse.

The record rules come from :mod:`importer.mbc.model` and
:func:`importer.mbc.data_sync.transform_command_to_data`, the same code the states
run, so both paths leave byte-identical tables given the same clock (TTL and
``updatedAt`` of the status are the wall-clock parts).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Protocol, TypeVar

from importer.coordinator import RunCoordinator
from importer.counts import Counts
from importer.dynamodb.lowlevel import LowLevelCalls
from importer.mbc.command_states import (
    FINISH_FINISHED,
    history_item,
    resolve_s3_attributes,
)
from importer.mbc.data_sync import (
    SyncCommand,
    SyncContext,
    load_handlers,
    transform_command_to_data,
)
from importer.mbc.model import (
    Clock,
    Item,
    Tables,
    TtlResolver,
    add_sk_version,
    format_date,
    get_sk_version,
    item_version,
    local_tz,
    remove_sk_version,
    render_dates,
    tenant_of,
    with_ttl,
)
from importer.mbc.status_topic import StatusNotifier
from importer.records import Failure, PreparedItem, WriteOutcome

T = TypeVar("T")
U = TypeVar("U")

__all__ = [
    "BatchSync",
    "EntityPlan",
    "SyncResult",
    "plan_entity",
    "scan_commands",
    "sync_tables",
]

#: Entities planned and written together (data lookups go 100 keys a call).
CHUNK_ENTITIES = 1000


class Writer(Protocol):
    def write_batch(self, items: Sequence[PreparedItem]) -> WriteOutcome: ...


class Lookup(Protocol):
    def get_many(
        self, table: str, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, Any]]: ...


@dataclass
class EntityPlan:
    """What the state machine would leave for one entity after its pending versions."""

    pk: str
    base: str
    applied: list[int] = field(default_factory=list)
    data: Item | None = None
    history: list[Item] = field(default_factory=list)
    commands: dict[int, Item] = field(default_factory=dict)


@dataclass
class SyncResult:
    """Counts of one sync (commands applied, rows written per table) and every failure."""

    commands_seen: int = 0
    entities: int = 0
    applied: int = 0
    data_written: int = 0
    history_written: int = 0
    commands_written: int = 0
    handler_failures: list[Failure] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> Counts:
        """The sync's outcome as every command's exit rule counts it: a command left
        unapplied (its handler or its write failed) is a failed row."""
        return Counts(failed=len(self.failures) + len(self.handler_failures))

    def to_json(self) -> dict[str, Any]:
        return {
            "commands_seen": self.commands_seen,
            "entities": self.entities,
            "applied": self.applied,
            "data_written": self.data_written,
            "history_written": self.history_written,
            "commands_written": self.commands_written,
            "handler_failures": len(self.handler_failures),
            "write_failures": len(self.failures),
            "seconds": round(self.seconds, 3),
        }


def plan_entity(
    versions: dict[int, Item],
    data: Item | None,
    *,
    now_text: str,
    ttl: Callable[[str, str | None], int | float | None],
    tables: Tables,
    tz: tzinfo,
    stop_before: int | None = None,
    failed_status: str | None = None,
    resolve: Callable[[Item], Item] | None = None,
) -> EntityPlan:
    """Replay one entity's pending versions in memory (no I/O besides ``ttl``).

    ``versions`` maps version -> command item (pending ones and, when they
    exist, their predecessors); ``data`` is the entity's data row or None.
    ``ttl(table, tenant)`` is :meth:`TtlResolver.ttl`.  ``stop_before`` stops
    at that version (a custom handler failed there) and marks it
    ``failed_status``.  ``resolve`` loads S3-offloaded ``attributes`` for the merge.
    """
    any_item = next(iter(versions.values()))
    pk = any_item["pk"]["S"]
    base = remove_sk_version(any_item["sk"]["S"])
    plan = EntityPlan(pk=pk, base=base, data=data)
    current = item_version(data)
    tenant = tenant_of(pk)
    finals: dict[int, Item] = {}
    for v in sorted(versions):
        if v <= current:
            continue
        if stop_before is not None and v >= stop_before:
            if v == stop_before and failed_status:
                failed = {**versions[v], "status": {"S": failed_status}}
                failed["updatedAt"] = {"S": now_text}
                plan.commands[v] = failed
            break
        record = versions[v]
        # check_version: next == v goes; next < v waits for v-1, which this loop has
        # just applied if it exists (or, when absent, the gap is tolerated)
        sk_version = get_sk_version(record["sk"]["S"])
        # set_ttl_command: the previous version, as it stands now, with the command TTL
        if sk_version > 1 and (sk_version - 1) in versions:
            prev = finals.get(sk_version - 1, versions[sk_version - 1])
            finals[sk_version - 1] = render_dates(with_ttl(prev, ttl(tables.command, tenant)), tz)
            plan.commands[sk_version - 1] = finals[sk_version - 1]
        # history_copy
        if plan.data is not None:
            plan.history.append(history_item(plan.data, ttl(tables.history, tenant), tz))
        # sync_data (default handler)
        full = resolve(record) if resolve is not None else record
        plan.data = transform_command_to_data(full, plan.data, tz)
        # finish: the status wrapper leaves finish:FINISHED and updatedAt = now
        finals[v] = {**record, "status": {"S": FINISH_FINISHED}, "updatedAt": {"S": now_text}}
        plan.commands[v] = finals[v]
        plan.applied.append(v)
    if not plan.applied:
        plan.data = None  # nothing to write
    return plan


def scan_commands(dynamodb: Any, table: str) -> Iterable[Item]:
    """Every command record of ``table`` (consistent Scan); rows without ``@version`` skipped."""
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page.get("Items", []):
            if get_sk_version(item.get("sk", {}).get("S", "")) >= 1:
                yield item


def _prepared(items: Iterable[Item]) -> list[PreparedItem]:
    return [
        PreparedItem(
            n,
            it["pk"]["S"],
            it["sk"]["S"],
            json.dumps(it, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        )
        for n, it in enumerate(items)
    ]


def sync_tables(
    *,
    table: str,
    dynamodb: Any,
    data_table: str | None = None,
    history_table: str | None = None,
    prefix: str | None = None,
    commands: Iterable[Item] | None = None,
    lookup: Lookup | None = None,
    writer_for: Callable[[str], Writer] | None = None,
    handlers: Sequence[Any] | None = None,
    clock: Clock | None = None,
    tz: tzinfo = UTC,
    chunk_entities: int = CHUNK_ENTITIES,
    sns: Any = None,
    status_topic_arn: str | None = None,
    s3: Any = None,
    refinish: bool = False,
    resolver: TtlResolver | None = None,
) -> SyncResult:
    """Apply every command record that has not reached the data table yet.

    ``table`` is the command table; the data and history tables default to the
    module's (``…-data``, ``…-history``).  ``commands`` limits the work to those
    records (a run's own); by default the whole command table is scanned.
    ``lookup`` (a :class:`importer.dynamodb.lookup.KeyLookup` without projection) and
    ``writer_for(table)`` (anything with ``write_batch``) default to boto3 on
    ``dynamodb``.  ``clock``/``tz`` decide the TTLs and status ``updatedAt``.
    With ``sns`` and ``status_topic_arn``, each applied command's
    ``finish:FINISHED`` ``command-status`` message is published (PublishBatch,
    10 a call) -- the one the framework's synchronous publish sends too; the
    per-state STARTED/FINISHED messages of an execution are not.
    ``refinish`` (``run --sync``): given commands the data row already holds
    were just re-put by a resumed run, and are finished again.  ``resolver``
    (``run --sync``: one per run) reads the TTL configs; by default one per call.
    """
    started = time.monotonic()
    clock = clock or time.time  # looked up per call: the wall clock unless given
    tables = Tables.from_command_table(table, prefix=prefix, data=data_table, history=history_table)
    if lookup is None:
        from importer.dynamodb.client import Boto3DynamoClient
        from importer.dynamodb.lookup import KeyLookup

        client = Boto3DynamoClient(region=dynamodb.meta.region_name, client=dynamodb)
        lookup = KeyLookup(client, projection=None)
    if writer_for is None:
        writer_for = _boto3_writers(dynamodb)
    if handlers is None:
        handlers = load_handlers()
    custom = [h for h in handlers if getattr(h, "type", "") != "dynamodb"]
    if not any(getattr(h, "type", "") == "dynamodb" for h in handlers):
        # pending versions are those above the data row's: without the default
        # handler the data row never moves and every sync would replay everything
        raise ValueError("sync needs the default data-sync handler (it is disabled)")
    writers = {name: writer_for(name) for name in (tables.history, tables.data, tables.command)}
    if resolver is None:
        resolver = TtlResolver(dynamodb, tables.master_data, clock=clock, cache=True)
    ctx = SyncContext(dynamodb=dynamodb, tables=tables, tz=tz)
    ctx.extra["resolve"] = lambda item: resolve_s3_attributes(item, s3)
    result = SyncResult()
    notify = (
        StatusNotifier(sns, status_topic_arn, tables.command) if sns and status_topic_arn else None
    )

    entities: dict[tuple[str, str], dict[int, Item]] = {}
    for item in commands if commands is not None else scan_commands(dynamodb, table):
        sk = item["sk"]["S"]
        version = item_version(item) or get_sk_version(sk)
        entities.setdefault((item["pk"]["S"], remove_sk_version(sk)), {})[version] = item
        result.commands_seen += 1
    keys = list(entities)
    result.entities = len(keys)
    for start in range(0, len(keys), chunk_entities):
        chunk = keys[start : start + chunk_entities]
        _sync_chunk(
            chunk, entities, tables, lookup, writers, resolver, custom, ctx,
            clock, tz, result, notify, refinish,
        )  # fmt: skip
    result.seconds = time.monotonic() - started
    return result


def _sync_chunk(
    chunk: list[tuple[str, str]],
    entities: dict[tuple[str, str], dict[int, Item]],
    tables: Tables,
    lookup: Lookup,
    writers: dict[str, Writer],
    resolver: TtlResolver,
    custom: Sequence[Any],
    ctx: SyncContext,
    clock: Clock,
    tz: tzinfo,
    result: SyncResult,
    notify: StatusNotifier | None = None,
    refinish: bool = False,
) -> None:
    data_rows = lookup.get_many(tables.data, chunk)
    given = {key: list(entities[key]) for key in chunk} if refinish else {}
    # predecessors of the lowest pending version that are not in hand (a run's own records)
    wanted: list[tuple[str, str]] = []
    for key in chunk:
        versions = entities[key]
        current = item_version(data_rows.get(key))
        pending = [v for v in versions if v > current]
        if pending and min(pending) - 1 >= 1 and (min(pending) - 1) not in versions:
            wanted.append((key[0], add_sk_version(key[1], min(pending) - 1)))
    if wanted:
        for (pk, sk), item in lookup.get_many(tables.command, wanted).items():
            entities[(pk, remove_sk_version(sk))][get_sk_version(sk)] = item
    now_text = format_date(datetime.fromtimestamp(clock(), UTC), tz)
    plans: dict[tuple[str, str], EntityPlan] = {}
    for key in chunk:
        plan = plan_entity(
            entities[key], data_rows.get(key), now_text=now_text, ttl=resolver.ttl,
            tables=tables, tz=tz, resolve=ctx.extra["resolve"],
        )  # fmt: skip
        if plan.applied:
            plans[key] = plan
    for handler in custom:
        _run_custom(
            handler, plans, entities, data_rows, now_text, resolver, tables, tz, ctx, result
        )
    history = [h for p in plans.values() for h in p.history]
    data = [p.data for p in plans.values() if p.data is not None and p.applied]
    cmds = [c for p in plans.values() for c in p.commands.values()]
    for key, given_versions in given.items():
        cmds.extend(_refinished(key, given_versions, entities, data_rows, plans, now_text, resolver,
                                tables, tz))  # fmt: skip
    result.applied += sum(len(p.applied) for p in plans.values())
    for name, items, attr in (
        (tables.history, history, "history_written"),
        (tables.data, data, "data_written"),
        (tables.command, cmds, "commands_written"),
    ):
        if not items:
            continue
        outcome = writers[name].write_batch(_prepared(items))
        setattr(result, attr, getattr(result, attr) + outcome.written)
        result.failures.extend(outcome.failures)
    if notify is not None:
        failed = {(f.pk, f.sk) for f in result.failures}
        applied = (p.commands[v] for p in plans.values() for v in p.applied)
        notify.send(c for c in applied if (c["pk"]["S"], c["sk"]["S"]) not in failed)


def _refinished(
    key: tuple[str, str],
    versions: list[int],
    entities: dict[tuple[str, str], dict[int, Item]],
    data_rows: dict[tuple[str, str], Item],
    plans: dict[tuple[str, str], EntityPlan],
    now_text: str,
    resolver: TtlResolver,
    tables: Tables,
    tz: tzinfo,
) -> list[Item]:
    """Given commands the data row already holds: put back as the machine had left them.

    A resumed ``run --sync`` re-sends a batch that was written and synced but
    not checkpointed (the same versions, recognised by their requestId); the
    re-put resets those command records, so they are finished again:
    ``finish:FINISHED``, and the command TTL when a later version was applied.
    """
    current = item_version(data_rows.get(key))
    plan = plans.get(key)
    out = []
    for v in versions:
        if v > current or (plan is not None and v in plan.commands):
            continue
        item = {**entities[key][v], "status": {"S": FINISH_FINISHED}, "updatedAt": {"S": now_text}}
        if v < current:
            item = render_dates(with_ttl(item, resolver.ttl(tables.command, tenant_of(key[0]))), tz)
        out.append(item)
    return out


def _run_custom(
    handler: Any,
    plans: dict[tuple[str, str], EntityPlan],
    entities: dict[tuple[str, str], dict[int, Item]],
    data_rows: dict[tuple[str, str], Item],
    now_text: str,
    resolver: TtlResolver,
    tables: Tables,
    tz: tzinfo,
    ctx: SyncContext,
    result: SyncResult,
) -> None:
    """Run one custom handler over the planned commands; cut entities where it fails."""
    failed_at: dict[tuple[str, str], tuple[int, str]] = {}
    resolve = ctx.extra["resolve"]
    ordered = [(key, v) for key, p in plans.items() for v in p.applied]
    up_many = getattr(handler, "up_many", None)
    if callable(up_many):
        try:
            up_many([SyncCommand(resolve(entities[k][v])) for k, v in ordered], ctx)
        except Exception as exc:  # noqa: BLE001 - recorded per entity, never raised
            for key, p in plans.items():
                failed_at[key] = (p.applied[0], f"{handler.name}: {exc}")
    else:
        for key, v in ordered:
            if key in failed_at:
                continue
            try:
                handler.up(SyncCommand(resolve(entities[key][v])), ctx)
            except Exception as exc:  # noqa: BLE001 - recorded per entity, never raised
                failed_at[key] = (v, f"{handler.name}: {exc}")
    for key, (version, reason) in failed_at.items():
        sk = add_sk_version(key[1], version)
        result.handler_failures.append(Failure(0, key[0], sk, reason))
        replanned = plan_entity(
            entities[key], data_rows.get(key), now_text=now_text, ttl=resolver.ttl,
            tables=tables, tz=tz, stop_before=version, failed_status="sync_data:FAILED",
            resolve=ctx.extra["resolve"],
        )  # fmt: skip
        plans[key] = replanned


def _write_made(
    writer_for: Callable[[str], Writer],
    tables: Tables,
    made: Sequence[Any],
    result: SyncResult,
    side_by_side: Callable[..., tuple[Any, Any]],
) -> None:
    """Write what `fast_sync.SyncedItem`s carry: their history rows and previous commands
    (with their TTL) side by side, then their data rows -- those of entities whose other
    two writes went through: an entity with a write refused keeps its data row where it
    was, so a re-run (or `importer sync`) applies its command again, whole."""

    def write(table: str, items: list[PreparedItem]) -> WriteOutcome:
        return writer_for(table).write_batch(items) if items else WriteOutcome()

    history = [PreparedItem(it.line, it.pk, it.history_sk, it.history) for it in made]
    previous = [
        PreparedItem(it.line, it.pk, it.previous_sk, it.previous)
        for it in made
        if it.previous is not None
    ]
    hist, prev = side_by_side(
        lambda: write(tables.history, history), lambda: write(tables.command, previous)
    )
    refused = {f.line for f in (*hist.failures, *prev.failures)}
    data = [
        PreparedItem(it.line, it.pk, remove_sk_version(it.sk), it.data)
        for it in made
        if it.line not in refused
    ]
    rows = write(tables.data, data)
    result.history_written += hist.written
    result.commands_written += prev.written
    result.data_written += rows.written
    for outcome in (hist, prev, rows):
        result.failures.extend(outcome.failures)
        refused.update(f.line for f in outcome.failures)
    result.commands_seen += len(made)
    result.entities += len(made)
    result.applied += sum(1 for it in made if it.line not in refused)


def _boto3_writers(dynamodb: Any) -> Callable[[str], Writer]:
    """BatchWriters for each table over the caller's boto3 client (the one DynamoDB client)."""
    from importer.dynamodb.client import Boto3DynamoClient
    from importer.dynamodb.writer import BatchWriter

    client = Boto3DynamoClient(region=dynamodb.meta.region_name, client=dynamodb)

    def make(table: str) -> Writer:
        return BatchWriter(client=client, table=table)

    return make


class BatchSync:
    """``importer run --sync``: each written batch's commands applied by :func:`sync_tables`.

    Everything goes over the pipeline's one DynamoDB client: lookups without
    projection, a :class:`importer.dynamodb.writer.BatchWriter` per table, the TTL read
    through :class:`importer.dynamodb.lowlevel.LowLevelCalls`.  The handlers are
    loaded once; without the default handler the run is refused before anything is written.  Pacing:
    lookups share the run's read pacer, command rewrites its write pacer, and
    the data and history tables get one pacer each (``max_wcu`` their budget).
    """

    def __init__(
        self,
        *,
        client: Any,
        table: str,
        data_table: str | None = None,
        policy: Any = None,
        handlers: Sequence[Any] | None = None,
        clock: Clock | None = None,
        tz: tzinfo | None = None,
        command_pacer: Any = None,
        read_pacer: Any = None,
        max_wcu: float | None = None,
        lanes: Any = None,
        coordinator: RunCoordinator | None = None,
    ) -> None:
        from importer.dynamodb.lookup import KeyLookup
        from importer.dynamodb.pacing import Pacer
        from importer.dynamodb.writer import BatchWriter

        self.table = table
        self.data_table = data_table
        self.handlers = list(load_handlers() if handlers is None else handlers)
        if not any(getattr(h, "type", "") == "dynamodb" for h in self.handlers):
            raise ValueError(
                "--sync needs the default data-sync handler (IMPORTER_DISABLE_DEFAULT_HANDLER "
                "is set): leave it on, or import without --sync and apply the commands otherwise"
            )
        self.clock = clock
        self.tz = tz or local_tz()
        self.calls = LowLevelCalls(client)
        # `lanes`: the run's, so the data and history writes and the reads go out in
        # groups as the command writes do (without them, one request at a time); the
        # run's coordinator: a fatal error in the sync stops the import, and back
        self.lookup = KeyLookup(
            client,
            policy=policy,
            projection=None,
            pacer=read_pacer,
            lanes=lanes,
            coordinator=coordinator,
        )
        # TTL configs read once per run, not per batch (a batch may hold many tenants);
        # its clock is looked up per call, so a pinned `importer.mbc.sync.time` applies
        tables = Tables.from_command_table(table, data=data_table)
        self.tables = tables
        self.data_table_name = tables.data
        self.history_table_name = tables.history
        self.resolver = TtlResolver(
            self.calls, tables.master_data, clock=lambda: (self.clock or time.time)(), cache=True
        )
        self._writers: dict[str, BatchWriter] = {}
        self._lock = threading.Lock()
        #: where one batch's independent reads or writes (two tables) go side by side:
        #: a `--sync` batch is otherwise a chain of round trips, each waiting on the last
        self._side: ThreadPoolExecutor | None = None

        def writer_for(name: str) -> Writer:
            # the command table's writes share the import's pacer (one table, one pace);
            # the data and history tables each learn their own, within the same budget
            with self._lock:
                if name not in self._writers:
                    pacer = command_pacer if name == table and command_pacer else None
                    self._writers[name] = BatchWriter(
                        client=client,
                        table=name,
                        policy=policy,
                        pacer=pacer or Pacer(max_units_per_second=max_wcu),
                        lanes=lanes,
                        coordinator=coordinator,
                    )
                return self._writers[name]

        self.writer_for = writer_for

    def now(self) -> float:
        """The sync's clock (looked up per call: a pinned `importer.mbc.sync.time` applies)."""
        return (self.clock or time.time)()

    def plain_only(self) -> bool:
        """Only the default handler: new entities may take `importer.mbc.fast_sync`'s way."""
        return all(getattr(h, "type", "") == "dynamodb" for h in self.handlers)

    def sync_ttls(self, tenants: Iterable[str | None]) -> dict[str | None, tuple[bytes, bytes]]:
        """Per tenant, the TTL members `importer.mbc.fast_sync` writes now: (history row's,
        previous command's), as `plan_entity` asks `resolver.ttl` for them."""
        from importer.mbc.fast_sync import ttl_member

        return {
            tenant: (
                ttl_member(self.resolver.ttl(self.tables.history, tenant)),
                ttl_member(self.resolver.ttl(self.tables.command, tenant)),
            )
            for tenant in tenants
        }

    def sync(self, commands: list[Item]) -> SyncResult:
        """Apply these just-written command records (and any earlier pending versions)."""
        return sync_tables(
            table=self.table,
            dynamodb=self.calls,
            data_table=self.data_table,
            commands=commands,
            lookup=self.lookup,
            writer_for=self.writer_for,
            handlers=self.handlers,
            clock=self.clock,
            tz=self.tz,
            refinish=True,
            resolver=self.resolver,
        )

    def side_by_side(self, first: Callable[[], T], second: Callable[[], U]) -> tuple[T, U]:
        """`(first(), second())`, `second` run on a helper thread meanwhile (two tables'
        round trips at once).  An exception of either is raised once both are done."""
        with self._lock:
            if self._side is None:
                self._side = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sync-side")
            side = self._side
        later = side.submit(second)
        try:
            got = first()
        finally:
            error = later.exception()  # waits for it, whatever `first` did
        if error is not None:
            raise error
        return got, later.result()

    def sync_items(self, items: Sequence[PreparedItem]) -> SyncResult:
        """Apply these just-written records: a `fast_sync.SyncedItem` by writing what it
        carries (made as bytes when it was split), every other one by `sync`."""
        from importer.mbc.fast_sync import SyncedItem

        made = [it for it in items if isinstance(it, SyncedItem)]
        plain = [json.loads(it.wire) for it in items if not isinstance(it, SyncedItem)]
        result = self.sync(plain) if plain else SyncResult()
        if made:
            started = time.monotonic()
            _write_made(self.writer_for, self.tables, made, result, self.side_by_side)
            result.seconds += time.monotonic() - started
        return result

    def close(self) -> None:
        if self._side is not None:
            self._side.shutdown(wait=True)
        for writer in self._writers.values():
            writer.close()
