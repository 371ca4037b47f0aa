"""The local run: source → batches → transform → writer → report, in one process.

The main thread reads and cuts batches; each batch is transformed and written
by a worker of a bounded pool, so reading blocks (back-pressure) instead of
piling batches up in memory.  Outcomes come back as data and are counted on the
main thread only, which is why `rows == written + rejected + failed` can be
checked at the end of every run.
"""

from __future__ import annotations

import csv
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from importer.batching import AWS_MAX_INPUT_BYTES, DEFAULT_MAX_ITEMS, Batch, Batcher
from importer.context import RunContext
from importer.engines import Engine, get_engine
from importer.records import Failure, PreparedItem, Reject, WriteOutcome
from importer.source import CsvReader, SourceError, open_source
from importer.spec import Spec

__all__ = ["BatchWriter", "RunConfig", "RunAborted", "Summary", "run_import", "process_batch"]


class BatchWriter(Protocol):
    def write_batch(self, items: Sequence[PreparedItem]) -> WriteOutcome: ...


class RunAborted(Exception):
    """The run stopped early on purpose (a limit the user set); counts stay exact."""


@dataclass(slots=True)
class RunConfig:
    source: str
    spec: Spec
    batch_items: int | None = DEFAULT_MAX_ITEMS
    batch_bytes: int | None = AWS_MAX_INPUT_BYTES
    workers: int = 50
    engine: str = "reference"
    rejects_path: Path | None = None
    failures_path: Path | None = None
    max_rejects: int | None = None
    run_id: str | None = None


@dataclass(slots=True)
class Summary:
    """The run's counts; `rows == written + rejected + failed` (or `valid` on validate)."""

    rows: int = 0
    written: int = 0
    rejected: int = 0
    failed: int = 0
    batches: int = 0
    seconds: float = 0.0
    rows_per_second: float = 0.0
    valid: int = 0
    retries: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    padded_rows: int = 0
    truncated_rows: int = 0
    rejects_file: str | None = None
    failures_file: str | None = None
    run_id: str = ""
    aborted: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class BatchOutcome:
    index: int
    rows: int
    valid: int
    written: int
    rejects: list[Reject]
    failures: list[Failure]
    retries: int = 0


def process_batch(
    batch: Batch,
    *,
    engine: Engine,
    spec: Spec,
    header: Sequence[str],
    ctx: RunContext,
    writer: BatchWriter | None,
) -> BatchOutcome:
    """Transform and write one batch: the unit a Distributed Map child handles."""
    result = engine.transform_batch(spec, header, batch.rows, ctx)
    written = WriteOutcome()
    if writer is not None and result.items:
        written = writer.write_batch(result.items)
    return BatchOutcome(
        index=batch.index,
        rows=len(batch.rows),
        valid=len(result.items),
        written=written.written,
        rejects=result.rejects,
        failures=written.failures,
        retries=written.retries,
    )


class _CsvReport:
    """A CSV report file opened on first use (no empty files for clean runs)."""

    def __init__(self, path: Path | None, columns: list[str], always: bool) -> None:
        self.path = path
        self.columns = columns
        self._fh: IO[str] | None = None
        self._writer: Any = None
        if path is not None and always:
            self._open()

    def _open(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.writer(self._fh)
        self._writer.writerow(self.columns)

    def write(self, row: list[Any]) -> None:
        if self.path is None:
            return
        if self._fh is None:
            self._open()
        self._writer.writerow(row)

    @property
    def used(self) -> bool:
        return self._fh is not None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _unknown_columns(header: Sequence[str], spec: Spec) -> list[str]:
    missing = [c for c in spec.needed_columns if c not in header]
    if missing:
        raise SourceError(
            f"spec column {missing[0]!r} is not in the CSV header "
            f"(header: {', '.join(header) or '(empty)'})"
        )
    needed = set(spec.needed_columns)
    return [h for h in header if h not in needed]


def run_import(
    config: RunConfig,
    *,
    writer: BatchWriter | None,
    progress: Callable[[int, int, int | None], None] | None = None,
    s3_client: Any = None,
) -> Summary:
    """Import (or, with `writer=None`, validate) one source; returns the counts."""
    started = time.perf_counter()
    spec = config.spec
    engine = get_engine(config.engine)
    ctx = RunContext.new(run_id=config.run_id)
    summary = Summary(run_id=ctx.run_id)
    stream = open_source(config.source, s3_client=s3_client)
    try:
        reader = CsvReader(stream.raw, spec.csv)
        header = reader.header
        summary.ignored_columns = _unknown_columns(header, spec)
        batcher = Batcher(
            max_items=config.batch_items,
            max_bytes=config.batch_bytes,
            batch_input=ctx.to_batch_input(),
            header=header,
        )
        rejects = _CsvReport(
            config.rejects_path, ["line", "column", "value", "reason", *header], always=False
        )
        failures = _CsvReport(config.failures_path, ["line", "pk", "sk", "reason"], always=False)
        limit = config.max_rejects if config.max_rejects is not None else spec.max_rejects
        try:
            _pump(
                config, engine, spec, header, ctx, writer, reader, batcher, summary,
                rejects, failures, limit, progress, stream,
            )
        finally:
            rejects.close()
            failures.close()
            summary.rejects_file = str(rejects.path) if rejects.used else None
            summary.failures_file = str(failures.path) if failures.used else None
            summary.padded_rows = reader.padded
            summary.truncated_rows = reader.truncated
    finally:
        stream.close()
    summary.seconds = round(time.perf_counter() - started, 3)
    summary.rows_per_second = round(summary.rows / summary.seconds, 1) if summary.seconds else 0.0
    accounted = summary.rejected + (
        summary.written + summary.failed if writer is not None else summary.valid
    )
    if accounted != summary.rows:
        raise AssertionError(f"row accounting broken: {summary}")
    return summary


def _pump(
    config: RunConfig,
    engine: Engine,
    spec: Spec,
    header: list[str],
    ctx: RunContext,
    writer: BatchWriter | None,
    reader: CsvReader,
    batcher: Batcher,
    summary: Summary,
    rejects: _CsvReport,
    failures: _CsvReport,
    limit: int | None,
    progress: Callable[[int, int, int | None], None] | None,
    stream: Any,
) -> None:
    from importer.batching import item_json_size

    aborted = False

    def reject(r: Reject) -> None:
        summary.rejected += 1
        rejects.write([r.line, r.column, r.value, r.reason, *r.row])

    def check_limit() -> None:
        if not aborted and limit is not None and summary.rejected > limit:
            raise RunAborted(f"stopped after {summary.rejected} rejected rows (limit {limit})")

    def settle(done: BatchOutcome) -> None:
        summary.rows += done.rows
        summary.batches += 1
        summary.valid += done.valid
        summary.written += done.written
        summary.retries += done.retries
        for f in done.failures:
            summary.failed += 1
            failures.write([f.line, f.pk, f.sk, f.reason])
        for r in done.rejects:
            reject(r)
        check_limit()

    in_flight: deque[Future[BatchOutcome]] = deque()
    max_in_flight = max(2, config.workers * 2)
    pool = ThreadPoolExecutor(max_workers=max(1, config.workers), thread_name_prefix="batch")

    def settle_finished(block: bool) -> None:
        if block:
            wait(in_flight, return_when=FIRST_COMPLETED)
        while in_flight and in_flight[0].done():
            settle(in_flight.popleft().result())

    read = 0
    last_report = 0.0
    try:
        for row in reader:
            read += 1
            if row.error is not None:
                summary.rows += 1
                reject(Reject(row.line, "", "", row.error, tuple(row.fields)))
                check_limit()
                continue
            closed = batcher.add(row.line, row.fields, item_json_size(header, row.fields))
            while batcher.oversized:
                summary.rows += 1
                reject(batcher.oversized.pop(0))
                check_limit()
            if closed is not None:
                while len(in_flight) >= max_in_flight:
                    settle_finished(block=True)
                in_flight.append(
                    pool.submit(
                        process_batch, closed, engine=engine, spec=spec, header=header,
                        ctx=ctx, writer=writer,
                    )
                )
                settle_finished(block=False)
            if progress is not None:
                now = time.monotonic()
                if now - last_report > 0.2:
                    last_report = now
                    progress(read, stream.bytes_read, stream.total_bytes)
        last = batcher.flush()
        if last is not None:
            in_flight.append(
                pool.submit(
                    process_batch, last, engine=engine, spec=spec, header=header, ctx=ctx,
                    writer=writer,
                )
            )
        while in_flight:
            settle(in_flight.popleft().result())
    except RunAborted as exc:
        # Rows of batches never started are not counted: they were not processed.
        aborted = True
        summary.aborted = str(exc)
        for fut in in_flight:
            fut.cancel()
        for fut in in_flight:
            if not fut.cancelled():
                settle(fut.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if progress is not None:
            progress(read, stream.bytes_read, stream.total_bytes)
