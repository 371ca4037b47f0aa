"""One batch, start to finish: the unit a Distributed Map child handles.

read rows -> transform -> import-mode stage -> write -> `BatchOutcome`.

The local driver runs this on its worker pool and the Lambda handler runs it
once per invocation, so both count a batch the same way.  The one rule for a
failed batch lives here, in `BatchOutcome.failed_batch`:

    a batch fails when at least one of its rows failed -- DynamoDB refused it
    after every retry.

Rejected rows (bad data, an entity that exists, a duplicate, a strict-mode
conflict) are outcomes: reported in the rejects file, never a failed batch.

With `--sync` (`pipeline.syncer`), each item's wire gets `syncMode: SYNC`
spliced in (bytes, no JSON round trip), and after the write the batch's
written commands are applied to the data and history tables
(`importer.mbc.sync.BatchSync`), after any earlier batch holding one of the same
entities (`importer.ordering.EntityOrder`, over the run's one ticket counter).  A
row whose sync failed is a failed row (`sync: reason`), no longer a written one.

The unit is given its parts (`BatchParts`) and calls nothing above it: it tells the
run's file order that its write returned (`FileOrder.written`: the mode stage's run
map may forget the batch) and hands its outcome back as a value.  When the run's
coordinator has stopped (over --max-rejects, a fatal error) before the batch
wrote, the batch writes nothing and counts every row as `skipped`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from importer.coordinator import RunCoordinator, Stopped
from importer.counts import Counts
from importer.dynamodb.errors import WriterFatalError, one_line
from importer.input.batching import Batch, RowsByLine
from importer.item_batch import ItemBatch, ItemList, as_batch
from importer.mbc.fast_sync import write_and_sync
from importer.ordering import EntityOrder, FileOrder
from importer.records import Failure, PreparedItem, Reject, RejectKind, WriteOutcome, code_of
from importer.transform.context import RunContext

__all__ = [
    "SYNC_MODE_TAIL",
    "BatchOutcome",
    "BatchParts",
    "mark_sync",
    "process_batch",
    "resolve_duplicates",
]

#: What `mark_sync` puts in place of an item's closing brace.
SYNC_MODE_TAIL = b',"syncMode":{"S":"SYNC"}}'


@dataclass(frozen=True, slots=True)
class BatchParts:
    """What one batch is processed with, handed to the unit explicitly.

    The pipeline assembles them (`importer.run.pipeline.Pipeline.parts`); the unit
    never names the pipeline, so it imports nothing above it and calls nothing back.
    `ttl_items` gives items whose tenant comes from a column their tenant's TTL
    (identity when the TTL is one value); `sync_order` is the entity step of the
    run's `order` (only with `--sync`).
    """

    spec: Any
    engine: Any
    writer: Any
    code_column: str
    coordinator: RunCoordinator
    order: FileOrder
    ttl_items: Callable[[Sequence[PreparedItem]], Sequence[PreparedItem]]
    stage: Any = None
    syncer: Any = None
    sync_order: EntityOrder | None = None


@dataclass(slots=True)
class BatchOutcome:
    """What became of one batch's rows: data, never an exception per row.

    `rows == written + unchanged + len(rejects) + len(failures) + skipped`.
    """

    index: int
    rows: int
    valid: int
    written: int
    rejects: list[Reject]
    failures: list[Failure]
    retries: int = 0
    unchanged: int = 0
    #: data rows this batch's `--sync` wrote (not a row count: rows are counted above)
    synced: int = 0
    #: rows left unwritten because the run stopped (`RunCoordinator.halt`) before this
    #: batch wrote anything: every row of the batch, reported as skipped (the batch is
    #: not checkpointed: a resume sends it whole)
    skipped: int = 0
    #: validate's duplicate rejects, decided before every earlier batch registered
    #: (`importer.modes.stage.PendingRejects`): `final()` gives the outcome to count
    pending: Any = None
    #: where the mode stage's rejects start in `rejects`
    pending_at: int = 0

    def final(self) -> BatchOutcome:
        """This outcome with the mode stage's last word; take it once every earlier batch
        has run (the driver counts in file order).  Rows move between written and
        rejected only: `rows == written + unchanged + rejected + failed` holds."""
        pending = self.pending
        if pending is None:
            return self
        before, after = pending.provisional, pending.final()
        if after is before:
            return replace(self, pending=None)
        at = self.pending_at
        rejects = [*self.rejects[:at], *after, *self.rejects[at + len(before) :]]
        written = self.written + len(before) - len(after)
        return replace(self, rejects=rejects, written=written, pending=None)

    @property
    def halted(self) -> bool:
        """The run stopped before this batch wrote: its rows are `skipped`."""
        return self.skipped > 0

    @property
    def failed_batch(self) -> bool:
        """The one rule: a batch fails when DynamoDB refused at least one of its rows."""
        return bool(self.failures)

    @property
    def existing(self) -> int:
        return sum(1 for r in self.rejects if r.kind is RejectKind.EXISTS)

    @property
    def bad_data(self) -> int:
        return sum(1 for r in self.rejects if r.kind.bad_data)

    def counts(self) -> Counts:
        """The batch's counts: what the run adds up and the checkpoint records."""
        return Counts(
            rows=self.rows,
            written=self.written,
            rejected=len(self.rejects),
            failed=len(self.failures),
            valid=self.valid,
            unchanged=self.unchanged,
            existing=self.existing,
            bad_data=self.bad_data,
            synced=self.synced,
            skipped=self.skipped,
        )


def resolve_duplicates(
    items: Sequence[PreparedItem], *, code_column: str, fields: Mapping[int, Sequence[str]]
) -> tuple[ItemBatch, list[Reject]]:
    """Keep the last row for each key; report the rows it replaced (blind mode).

    BatchWriteItem refuses a whole call that names one key twice, and a batch
    is written as one unit, so duplicates are settled here, in file order.
    """
    batch = as_batch(items)
    if batch.keys_unique():  # the usual case (in C for a native ItemBlock)
        return batch, []
    items = list(items)
    last: dict[tuple[str, str], PreparedItem] = {}
    for item in items:
        last[(item.pk, item.sk)] = item
    kept = ItemList()
    rejects: list[Reject] = []
    for item in items:
        winner = last[(item.pk, item.sk)]
        if winner is item:
            kept.append(item)
            continue
        rejects.append(
            Reject(
                item.line,
                code_column,
                code_of(item),
                f"duplicate of line {winner.line} (same key {item.pk} / {item.sk}): "
                "the later row is written",
                tuple(fields.get(item.line, ())),
                RejectKind.DUPLICATE,
            )
        )
    return kept, rejects


def _complete(
    rejects: list[Reject], code_column: str, fields: Mapping[int, Sequence[str]]
) -> list[Reject]:
    """Every reject line carries the column and the original row (writer conflicts lack them)."""
    out = []
    for r in rejects:
        if not r.row and r.line in fields:
            r = replace(r, row=tuple(fields[r.line]))
        if not r.column and r.kind is not RejectKind.INVALID:
            r = replace(r, column=code_column)
        out.append(r)
    return out


def _with_rows(failures: list[Failure], fields: Mapping[int, Sequence[str]]) -> list[Failure]:
    """Every failure line carries the original row (built only for failed rows)."""
    return [
        replace(f, row=tuple(fields[f.line])) if not f.row and f.line in fields else f
        for f in failures
    ]


def mark_sync(items: Sequence[PreparedItem]) -> list[PreparedItem]:
    """Each item with `syncMode: {"S": "SYNC"}` appended to its wire bytes.

    The stream filter (`importer.aws.stream_handler.is_command_insert`, and the
    template's event source filter) skips such records, as it skips the
    framework's synchronously published commands: the run applies them itself.
    """
    out = []
    for it in items:
        wire = it.wire
        if not wire.endswith(b"}") or len(wire) < 3:
            raise ValueError(f"line {it.line}: the item is not a JSON object")
        out.append(PreparedItem(it.line, it.pk, it.sk, wire[:-1] + SYNC_MODE_TAIL))
    return out


def _entities(items: Sequence[PreparedItem]) -> list[tuple[str, str]]:
    """The entities of `items` (of a native `ItemBlock`: made in C, no PreparedItem per row)."""
    return as_batch(items).entity_keys(versioned=False)


def _entity(pk: str, sk: str) -> tuple[str, str]:
    return pk, sk.rsplit("@", 1)[0]


def _sync_written(
    syncer: Any, items: Sequence[PreparedItem], outcome: WriteOutcome
) -> tuple[int, list[Failure]]:
    """Apply the written items; (data rows written, one failure per row whose sync failed)."""
    refused = {f.line for f in outcome.failures} | {r.line for r in outcome.rejects}
    done = [it for it in items if it.line not in refused]
    if not done:
        return 0, []
    try:
        result = syncer.sync_items(done)
    except WriterFatalError:
        raise
    except Exception as exc:  # noqa: BLE001 - the batch's rows fail, with the reason
        reason = f"sync: {one_line(exc)}"
        return 0, [Failure(it.line, it.pk, it.sk, reason) for it in done]
    bad: dict[tuple[str, str], str] = {}
    for f in [*result.handler_failures, *result.failures]:
        bad.setdefault(_entity(f.pk, f.sk), f"sync: {f.sk}: {f.reason}")
    failures = [
        Failure(it.line, it.pk, it.sk, bad[_entity(it.pk, it.sk)])
        for it in done
        if _entity(it.pk, it.sk) in bad
    ]
    return result.data_written, failures


def _skipped(batch: Batch) -> BatchOutcome:
    """The outcome of a batch the run stopped before it wrote: every row skipped."""
    rows = len(batch.rows) + len(batch.rejects)
    return BatchOutcome(batch.index, rows, 0, 0, [], [], skipped=rows)


def process_batch(
    batch: Batch,
    *,
    parts: BatchParts,
    header: Sequence[str],
    ctx: RunContext,
    ticket: int | None = None,
) -> BatchOutcome:
    """Transform, settle the import mode, and write one batch.

    `batch.rejects` holds rows refused while reading (bad UTF-8, oversized);
    they belong to this batch so that its counts, and its checkpoint line,
    cover every row read while it was open.  `ticket` is this batch's place in
    file order (`parts.order`): the mode stage assigns versions in that order
    and `--sync` applies entities in it; every step of it is released when the
    batch ends, whatever happened.
    """
    stage = parts.stage
    syncer = parts.syncer
    fields = RowsByLine(batch.rows)
    failures: list[Failure] = []
    unchanged = 0
    pending, pending_at = None, 0
    try:
        try:
            result = parts.engine.transform_batch(parts.spec, header, batch.rows, ctx)
            rejects = [*batch.rejects, *result.rejects]
            # the run's one batch type from here on, whichever engine made the items
            items = as_batch(parts.ttl_items(result.items))
            if stage is None:
                items, dupes = resolve_duplicates(
                    items, code_column=parts.code_column, fields=fields
                )
                rejects.extend(dupes)
            else:
                prepared = stage.prepare(items, fields, ticket=ticket)
                items, unchanged = prepared.items, prepared.unchanged
                pending, pending_at = prepared.pending, len(rejects)
                rejects.extend(prepared.rejects)
                failures = prepared.failures
        finally:
            if stage is not None:
                stage.release(ticket)  # the next batch may assign now, before this one writes
        if parts.coordinator.stopped:
            # the run is stopping (over --max-rejects, a fatal error): nothing more is
            # written after that, however far this batch got
            return _skipped(batch)
        waits: list[Any] = []
        if syncer is not None and ticket is not None and parts.sync_order is not None:
            try:
                waits = parts.sync_order.claim(ticket, _entities(items))
            except Stopped:
                return _skipped(batch)
        synced, sync_failures = 0, list[Failure]()
        if syncer is not None and items:
            for event in waits:  # an earlier batch still syncing one of these entities
                event.wait()
            done = write_and_sync(
                syncer,
                items,
                parts.writer.write_batch,
                lambda rest, outcome: _sync_written(syncer, rest, outcome),
                mark_sync,
            )
            written, synced, sync_failures = done.commands, done.synced, done.failures
            # rows whose data row was refused were never written to the command table
            unwritten = len(done.failures) - len(done.general_failures)
        else:
            written = parts.writer.write_batch(items) if items else WriteOutcome()
            unwritten = 0
        parts.order.written(ticket)  # the tables now hold this batch: the run map may forget it
    finally:
        parts.order.release(ticket)
    rejects.extend(written.rejects)
    return BatchOutcome(
        index=batch.index,
        rows=len(batch.rows) + len(batch.rejects),
        valid=len(result.items),
        written=written.written - (len(sync_failures) - unwritten),
        rejects=_complete(rejects, parts.code_column, fields),
        failures=_with_rows(failures + written.failures + sync_failures, fields),
        retries=written.retries,
        unchanged=unchanged,
        synced=synced,
        pending=pending,
        pending_at=pending_at,
    )
