"""One batch, start to finish: the unit a Distributed Map child handles.

read rows -> transform -> import-mode stage -> write -> `BatchOutcome`.

The local driver runs this on its worker pool and the Lambda handler runs it
once per invocation, so both count a batch the same way.  The one rule for a
failed batch lives here, in `BatchOutcome.failed_batch`:

    a batch fails when at least one of its rows failed -- DynamoDB refused it
    after every retry.

Rejected rows (bad data, an entity that exists, a duplicate, a strict-mode
conflict) are outcomes: reported in the rejects file, never a failed batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from importer.batching import Batch
from importer.checkpoint import BatchCounts
from importer.context import RunContext
from importer.records import Failure, PreparedItem, Reject, RejectKind, WriteOutcome

if TYPE_CHECKING:
    from importer.pipeline import Pipeline

__all__ = ["BatchOutcome", "process_batch", "resolve_duplicates"]


@dataclass(slots=True)
class BatchOutcome:
    """What became of one batch's rows: data, never an exception per row.

    `rows == written + unchanged + len(rejects) + len(failures)`.
    """

    index: int
    rows: int
    valid: int
    written: int
    rejects: list[Reject]
    failures: list[Failure]
    retries: int = 0
    unchanged: int = 0

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

    def counts(self) -> BatchCounts:
        return BatchCounts(
            rows=self.rows,
            written=self.written,
            rejected=len(self.rejects),
            failed=len(self.failures),
            valid=self.valid,
            unchanged=self.unchanged,
            existing=self.existing,
            bad_data=self.bad_data,
        )


def _code_of(item: PreparedItem) -> str:
    try:
        return json.loads(item.wire)["code"]["S"]
    except (ValueError, KeyError, TypeError):
        return item.sk.split("#", 1)[-1].rsplit("@", 1)[0]


def resolve_duplicates(
    items: list[PreparedItem], *, code_column: str, fields: Mapping[int, Sequence[str]]
) -> tuple[list[PreparedItem], list[Reject]]:
    """Keep the last row for each key; report the rows it replaced (blind mode).

    BatchWriteItem refuses a whole call that names one key twice, and a batch
    is written as one unit, so duplicates are settled here, in file order.
    """
    last: dict[tuple[str, str], PreparedItem] = {}
    for item in items:
        last[(item.pk, item.sk)] = item
    if len(last) == len(items):
        return items, []
    kept: list[PreparedItem] = []
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
                _code_of(item),
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


def process_batch(
    batch: Batch,
    *,
    pipeline: Pipeline,
    header: Sequence[str],
    ctx: RunContext,
    ticket: int | None = None,
) -> BatchOutcome:
    """Transform, settle the import mode, and write one batch.

    `batch.rejects` holds rows refused while reading (bad UTF-8, oversized);
    they belong to this batch so that its counts, and its checkpoint line,
    cover every row read while it was open.  With a mode stage, `ticket` is
    this batch's place in file order (versions are assigned in that order);
    it is always released, even when the batch has no valid row.
    """
    stage = pipeline.stage
    fields = dict(batch.rows)
    failures: list[Failure] = []
    unchanged = 0
    try:
        result = pipeline.engine.transform_batch(pipeline.settings.spec, header, batch.rows, ctx)
        rejects = [*batch.rejects, *result.rejects]
        items = result.items
        if stage is None:
            items, dupes = resolve_duplicates(
                items, code_column=pipeline.code_column, fields=fields
            )
            rejects.extend(dupes)
        else:
            prepared = stage.prepare(items, fields, ticket=ticket)
            items, unchanged = prepared.items, prepared.unchanged
            rejects.extend(prepared.rejects)
            failures = prepared.failures
    finally:
        if stage is not None:
            stage.release(ticket)
    written = pipeline.writer.write_batch(items) if items else WriteOutcome()
    rejects.extend(written.rejects)
    return BatchOutcome(
        index=batch.index,
        rows=len(batch.rows) + len(batch.rejects),
        valid=len(result.items),
        written=written.written,
        rejects=_complete(rejects, pipeline.code_column, fields),
        failures=failures + written.failures,
        retries=written.retries,
        unchanged=unchanged,
    )
