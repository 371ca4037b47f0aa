"""Assembling a run, once: settings in, a ready pipeline out.

Every entry point -- the CLI's `run` and `validate`, the Lambda child, the
demo, the benchmarks and the tests -- describes what it wants in one frozen
`PipelineSettings` and calls `open_pipeline`, which opens everything a batch
needs (engine, the one DynamoDB client, the writer, the lookups, the import
mode stage) and closes it again.  None of them builds a writer or a mode stage
itself, so they cannot drift apart.

    with open_pipeline(settings) as pipeline:
        outcome = pipeline.process(batch, header=header, ctx=ctx, ticket=pipeline.ticket())

One `RunCoordinator` (status, the first fatal error, halt) and one `FileOrder`
(the batches' tickets) are made here per run and handed to every part that
works for the run: writers, lookups, the mode stage, the sync.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from importer.coordinator import RunCoordinator
from importer.dynamodb.api import DynamoClient
from importer.dynamodb.client import Boto3DynamoClient, HttpDynamoClient, check_command_table
from importer.dynamodb.lookup import KeyLookup
from importer.dynamodb.pacing import Pacer
from importer.dynamodb.region import default_region
from importer.dynamodb.request_pool import DEFAULT_WORKERS, Lanes, batch_threads
from importer.dynamodb.retry import RetryPolicy
from importer.dynamodb.writer import BatchWriter
from importer.input.batching import Batch
from importer.item_batch import ItemList, as_batch
from importer.mbc.model import CommandTtl, command_ttl
from importer.modes.stage import DEFAULT_MODE, Mode, ModeStage, mode_of, update_of
from importer.ordering import EntityOrder, FileOrder
from importer.records import PreparedItem, WriteOutcome
from importer.run.batch_steps import BatchOutcome, BatchParts, process_batch
from importer.transform.context import RunContext
from importer.transform.engines import DEFAULT_ENGINE, ENGINES, Engine, get_engine
from importer.transform.spec import Spec

if TYPE_CHECKING:
    from importer.mbc.sync import BatchSync

__all__ = [
    "DryRunWriter",
    "Pipeline",
    "PipelineSettings",
    "SettingsError",
    "open_pipeline",
]

WriterKind = Literal["http", "boto3"]
WRITERS: tuple[WriterKind, ...] = ("http", "boto3")


class SettingsError(ValueError):
    """A setting out of range, in one line: which one, the value given, what it may be.

    `importer run` says it as a usage error, the Lambda child as an `EventError`, a
    library caller gets it from `PipelineSettings(...)`: the same words everywhere.
    """


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """Everything that decides how a batch is transformed, checked and written.

    `dry_run` is `importer validate`: the same stages, reads included when an
    endpoint answers, but nothing is written (items are counted as they would
    be).  `check_table` describes the command table once before the first
    write (local runs; the Lambda child trusts its deployment).  `sync` is
    `importer run --sync`: command records are marked `syncMode: SYNC` (the
    stream starts no execution for them) and each written batch is applied to
    the data and history tables in the same run (`importer.mbc.sync.BatchSync`);
    `clock` is that sync's wall clock (TTLs, the final status' `updatedAt`).

    `workers` is how many requests may be in flight at once; `batches` how many
    batches call `process` at once (the Lambda child: one; a local run: as
    many as `importer.dynamodb.request_pool.batch_threads` gives).  Each batch spreads its
    requests over `workers // batches` lanes (`importer.dynamodb.request_pool`).
    """

    spec: Spec
    table: str | None = None
    mode: Mode = DEFAULT_MODE
    data_table: str | None = None
    #: how upsert/strict apply a row to an existing entity: "merge" (a partial update, the
    #: framework's import) or "replace" (the whole record); None: the spec's `[target] update`
    update: str | None = None
    #: where the TTL configuration lives: None, the module's `{prefix}master-data`
    #: (as the framework names it); "": none (the commands' ttl is null, nothing is read)
    master_table: str | None = None
    region: str = field(default_factory=default_region)
    endpoint_url: str | None = None
    workers: int = DEFAULT_WORKERS
    batches: int | None = None
    writer: WriterKind = "http"
    engine: str = DEFAULT_ENGINE
    dry_run: bool = False
    check_table: bool = True
    sync: bool = False
    #: budgets in capacity units per second (`--max-wcu`, `--max-rcu`); None: the table's pace
    max_wcu: float | None = None
    max_rcu: float | None = None
    policy: RetryPolicy | None = field(default=None, compare=False)
    session: Any = field(default=None, compare=False)
    pacer: Any = field(default=None, compare=False)
    clock: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        """Every setting checked here, once, whoever built them (CLI, Lambda, library)."""
        try:
            mode_of(self.mode)
            if self.update is not None:
                update_of(self.update)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        if self.engine not in ENGINES:
            raise SettingsError(f"unknown engine {self.engine!r} (one of: {', '.join(ENGINES)})")
        if self.writer not in WRITERS:
            raise SettingsError(f"unknown writer {self.writer!r} (one of: {', '.join(WRITERS)})")
        if isinstance(self.workers, bool) or self.workers < 1:
            raise SettingsError(f"--workers must be at least 1, got {self.workers}")
        if self.batches is not None and self.batches < 1:
            raise SettingsError(f"batches must be at least 1, got {self.batches}")
        if not self.table and not self.dry_run:
            raise SettingsError("a run that writes needs a table")
        if not self.region:
            raise SettingsError("no region: give --region or set AWS_REGION")
        if self.sync and self.dry_run:
            raise SettingsError("--sync applies written commands; a dry run writes none")
        for name in ("max_wcu", "max_rcu"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise SettingsError(f"--{name.replace('_', '-')} must be positive, got {value}")


#: The ttl an item carries before `Pipeline.ttl_items` gives it its tenant's.
_NULL_TTL = b'"ttl":{"NULL":true}'


def _tenant(pk: str) -> str | None:
    """``getTenantCode``: the text after the last ``#`` of the pk."""
    i = pk.rfind("#")
    return None if i == -1 else pk[i + 1 :]


class _NoTable:
    """No endpoint (a dry run without one): every TTL read fails, so the TTL is null."""

    def get_item(self, **_kw: Any) -> dict[str, Any]:
        raise LookupError("no endpoint")


class DryRunWriter:
    """`importer validate`'s writer: every item counts as written, nothing is sent."""

    def write_batch(self, items: Sequence[PreparedItem]) -> WriteOutcome:
        return WriteOutcome(written=len(items))

    def close(self) -> None:
        pass


class Pipeline:
    """An open pipeline: call `process` per batch (thread-safe), then `close`."""

    def __init__(
        self,
        settings: PipelineSettings,
        *,
        engine: Engine,
        client: DynamoClient | None,
        writer: Any,
        stage: ModeStage | None,
        owns_client: bool = True,
        syncer: BatchSync | None = None,
        notices: Sequence[str] = (),
        lanes: Lanes | None = None,
        owns_lanes: bool = True,
        coordinator: RunCoordinator | None = None,
        order: FileOrder | None = None,
        sync_order: EntityOrder | None = None,
    ) -> None:
        self.settings = settings
        self.owns_client = owns_client
        self.engine = engine
        self.client = client
        self.writer = writer
        self.stage = stage
        self.syncer = syncer
        self.lanes = lanes
        self.owns_lanes = owns_lanes
        self._notices = list(notices)
        #: the run's status, first fatal error and halt (`importer.coordinator`)
        self.coordinator = coordinator if coordinator is not None else RunCoordinator()
        #: the batches' place in file order: one counter for the stage and the sync
        self.order = order if order is not None else FileOrder(self.coordinator)
        self.sync_order = sync_order
        self.code_column = settings.spec.code_column
        #: tenant -> the commands' TTL (`command_ttl`), read once per run
        self._ttls: dict[str | None, CommandTtl] = {}
        self._ttl_lock = threading.Lock()
        self._ttl_start: float = 0.0

    # ------------------------------------------------------------------ TTL
    def command_ttl(self, tenant: str | None, start: float) -> CommandTtl:
        """The data table's TTL for `tenant`'s commands (read once per run and tenant)."""
        with self._ttl_lock:
            hit = self._ttls.get(tenant)
            if hit is not None:
                return hit
        from importer.dynamodb.lowlevel import LowLevelCalls

        settings = self.settings
        calls = LowLevelCalls(self.client) if self.client is not None else _NoTable()
        found = command_ttl(
            calls,
            settings.table or "",
            settings.data_table,
            tenant,
            start,
            master_table=settings.master_table,
        )
        with self._ttl_lock:
            return self._ttls.setdefault(tenant, found)

    def share_ttls(self, cache: dict[str | None, CommandTtl]) -> None:
        """Keep the TTLs read in `cache` (the Lambda child: one run's invocations share it)."""
        with self._ttl_lock:
            self._ttls = cache

    def stamp(self, ctx: RunContext) -> RunContext:
        """`ctx` with the commands' `ttl`, as the framework's publish sets it.

        With a constant tenant the TTL is one value, part of every item's
        constant tail (no work per row).  A tenant taken from a column is
        resolved per tenant (`ttl_items`).
        """
        self._ttl_start = float(ctx.epoch())
        tenant = self.settings.spec.record.tenant
        if not self.settings.table or not tenant.is_constant:
            return ctx
        found = self.command_ttl(tenant.source, self._ttl_start)
        return dataclasses.replace(ctx, ttl=found.ttl)

    def ttl_notes(self) -> list[str]:
        """Which TTL the run's commands carry, per tenant read (the summary says it)."""
        with self._ttl_lock:
            found = sorted(self._ttls.items(), key=lambda kv: kv[0] or "")
        if len(found) == 1:
            return [found[0][1].describe()]
        return [f"tenant {tenant}: {t.describe()}" for tenant, t in found]

    def ttl_items(self, items: Sequence[PreparedItem]) -> Sequence[PreparedItem]:
        """Items whose tenant comes from a column get their tenant's TTL (null stays null)."""
        if self.settings.spec.record.tenant.is_constant or not self.settings.table:
            return items
        # the batch's tenants, without a Python object per row (the insert path's speed)
        pks = as_batch(items).distinct_pks()
        ttls = {pk: self.command_ttl(_tenant(pk), self._ttl_start).ttl for pk in pks}
        if all(ttl is None for ttl in ttls.values()):
            return items  # every item already says null
        out = ItemList()
        for it in items:
            ttl = ttls[it.pk]
            if ttl is not None:
                wire = it.wire.replace(_NULL_TTL, b'"ttl":{"N":"%d"}' % ttl, 1)
                it = PreparedItem(it.line, it.pk, it.sk, wire)
            out.append(it)
        return out

    @property
    def notices(self) -> list[str]:
        """What the run could not do as asked (said once, before the summary)."""
        return self._notices + (self.stage.notices if self.stage is not None else [])

    def ticket(self) -> int:
        """This batch's place in file order (take it on the submitting thread)."""
        return self.order.ticket()

    def release(self, ticket: int | None) -> None:
        """Give back the place of a batch that will never run (cancelled)."""
        self.order.release(ticket)

    def parts(self) -> BatchParts:
        """What a batch is processed with (read at each call: tests swap an engine in)."""
        return BatchParts(
            spec=self.settings.spec,
            engine=self.engine,
            writer=self.writer,
            code_column=self.code_column,
            coordinator=self.coordinator,
            order=self.order,
            ttl_items=self.ttl_items,
            stage=self.stage,
            syncer=self.syncer,
            sync_order=self.sync_order,
        )

    def process(
        self,
        batch: Batch,
        *,
        header: Sequence[str],
        ctx: RunContext,
        ticket: int | None = None,
    ) -> BatchOutcome:
        return process_batch(batch, parts=self.parts(), header=header, ctx=ctx, ticket=ticket)

    def close(self) -> None:
        try:
            self.writer.close()
            if self.syncer is not None:
                self.syncer.close()
            if self.stage is not None:
                self.stage.close()
        finally:
            if self.lanes is not None and self.owns_lanes:
                self.lanes.close()
            if self.client is not None and self.owns_client:
                self.client.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_client(settings: PipelineSettings) -> DynamoClient:
    """The run's one DynamoDB client, as `settings.writer` says."""
    kind = Boto3DynamoClient if settings.writer == "boto3" else HttpDynamoClient
    return kind(
        region=settings.region,
        endpoint_url=settings.endpoint_url,
        session=settings.session,
        workers=settings.workers,
    )


def open_pipeline(
    settings: PipelineSettings,
    *,
    client: DynamoClient | None = None,
    lanes: Lanes | None = None,
    coordinator: RunCoordinator | None = None,
) -> Pipeline:
    """Open everything a run needs; a `client` given is used (and left open) instead of a new one.

    So are `lanes` (the Lambda child keeps one set across warm invocations, so
    that what its requests' timing taught outlives one batch).

    A dry run without a table runs without reads: its stage compares the
    file's rows with each other only, and says so in `notices`.  A dry run
    with a table that cannot be read fails, as the run would.

    The run's coordinator (made here unless given) and its file order go to
    every writer, lookup, the mode stage and the sync.
    """
    engine = get_engine(settings.engine)
    coordinator = coordinator if coordinator is not None else RunCoordinator()
    order = FileOrder(coordinator)
    owns_client = client is None
    policy = settings.policy or RetryPolicy()
    notices: list[str] = []
    owns_lanes = lanes is None
    if lanes is None:
        lanes = Lanes(settings.workers, settings.batches or batch_threads(settings.workers))
    try:
        if settings.table is not None:
            client = _reachable_client(settings, client, owns_client)
        lookup = None
        if client is not None:
            read_pacer = Pacer(max_units_per_second=settings.max_rcu, kind="read")
            lookup = KeyLookup(
                client, policy=policy, pacer=read_pacer, lanes=lanes, coordinator=coordinator
            )
        stage = None
        if settings.mode != "blind":
            stage = ModeStage.open(
                mode=settings.mode,
                table=settings.table or "",
                data_table=settings.data_table,
                lookup=lookup,
                code_column=settings.spec.code_column,
                remember_all=settings.dry_run,
                update=settings.update or settings.spec.update,
                keep_name=not settings.spec.name_given,
                order=order,
            )
        # one pacer for every worker of the run: it learns what the table accepts
        pacer = settings.pacer or Pacer(max_units_per_second=settings.max_wcu)
        writer: Any
        if settings.dry_run:
            writer = DryRunWriter()
        elif settings.mode == "strict":
            from importer.dynamodb.strict_writer import StrictWriter

            assert client is not None and settings.table is not None
            writer = StrictWriter(
                client=client,
                table=settings.table,
                policy=policy,
                pacer=pacer,
                coordinator=coordinator,
            )
        else:
            assert client is not None and settings.table is not None
            writer = BatchWriter(
                client=client,
                table=settings.table,
                policy=policy,
                pacer=pacer,
                lanes=lanes,
                coordinator=coordinator,
            )
        syncer = None
        sync_order = None
        if settings.sync:
            from importer.mbc.sync import BatchSync

            assert client is not None and settings.table is not None
            syncer = BatchSync(
                client=client,
                table=settings.table,
                data_table=settings.data_table,
                policy=policy,
                clock=settings.clock,
                command_pacer=pacer,
                read_pacer=lookup.pacer if lookup is not None else None,
                max_wcu=settings.max_wcu,
                lanes=lanes,
                coordinator=coordinator,
            )
            sync_order = order.entities()
    except BaseException:
        if owns_lanes:
            lanes.close()
        if client is not None and owns_client:
            client.close()
        raise
    return Pipeline(
        settings,
        engine=engine,
        client=client,
        writer=writer,
        stage=stage,
        owns_client=owns_client,
        syncer=syncer,
        notices=notices,
        lanes=lanes,
        owns_lanes=owns_lanes,
        coordinator=coordinator,
        order=order,
        sync_order=sync_order,
    )


def _reachable_client(
    settings: PipelineSettings, client: DynamoClient | None, owns: bool
) -> DynamoClient:
    """The client, with the command table checked.

    A dry run given a table fails as the run would: `validate --table X` promises
    to check the file against what X holds, and a preview that could not read X
    (a mistyped name, no endpoint) must not pass as if it had.
    """
    try:
        if client is None:
            client = open_client(settings)
        if settings.check_table:
            assert settings.table is not None
            check_command_table(client, settings.table)
        return client
    except BaseException:
        if client is not None and owns:
            client.close()
        raise
