"""The local run: a faithful local Distributed Map, in one process.

source → batches → transform → writer → report.  The main thread reads and
cuts batches exactly as ItemBatcher would; each batch is handled by
`process_batch` — the same function the Lambda child runs — on a bounded pool
of at most `workers` threads (MaxConcurrency), so reading blocks
(back-pressure) instead of piling batches up in memory.  Outcomes come back as
data and are counted on the main thread only, which is how every run can check
`rows == written + unchanged + rejected + failed`.

A checkpoint records settled batches (`--resume` continues a killed or
interrupted run), and an optional ResultWriter-style folder receives
`manifest.json`, `SUCCEEDED_0.json` and `FAILED_0.json`.
"""

from __future__ import annotations

import csv
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from importer.batching import AWS_MAX_INPUT_BYTES, DEFAULT_MAX_ITEMS, Batch, Batcher
from importer.checkpoint import BatchCounts, Checkpoint
from importer.context import RunContext
from importer.engines import Engine, get_engine
from importer.modes import ModeStage
from importer.records import Failure, PreparedItem, Reject, WriteOutcome
from importer.source import CsvReader, SourceError, open_source
from importer.spec import Spec

__all__ = [
    "BatchOutcome",
    "BatchWriter",
    "RunConfig",
    "RunInterrupted",
    "Summary",
    "process_batch",
    "run_import",
]


class BatchWriter(Protocol):
    def write_batch(self, items: Sequence[PreparedItem]) -> WriteOutcome: ...


class RunInterrupted(Exception):
    """Ctrl-C: in-flight batches were settled and checkpointed; the run can resume."""

    def __init__(self, message: str, summary: Summary) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(slots=True)
class RunConfig:
    source: str
    spec: Spec
    table: str | None = None
    batch_items: int | None = DEFAULT_MAX_ITEMS
    batch_bytes: int | None = AWS_MAX_INPUT_BYTES
    workers: int = 50
    engine: str = "native"
    rejects_path: Path | None = None
    failures_path: Path | None = None
    max_rejects: int | None = None
    run_id: str | None = None
    checkpoint_path: Path | None = None
    resume: bool = False
    spec_digest: str = ""
    output_dir: Path | None = None
    tolerated_failure_percentage: float | None = None
    tolerated_failure_count: int | None = None
    #: the import-mode stage (insert/upsert/strict) between transform and writer
    stage: ModeStage | None = None
    mode: str = "blind"


@dataclass(slots=True)
class Summary:
    """The run's counts: `rows == written + unchanged + rejected + failed`
    (on `validate`, `rows == valid + rejected`)."""

    rows: int = 0
    written: int = 0
    rejected: int = 0
    failed: int = 0
    batches: int = 0
    seconds: float = 0.0
    rows_per_second: float = 0.0
    valid: int = 0
    unchanged: int = 0
    retries: int = 0
    failed_batches: int = 0
    failed_items: int = 0
    resumed_batches: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    padded_rows: int = 0
    truncated_rows: int = 0
    rejects_file: str | None = None
    failures_file: str | None = None
    checkpoint: str | None = None
    run_id: str = ""
    aborted: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class BatchOutcome:
    """What became of one batch's rows: data, never an exception per row."""

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
        """A child that wrote nothing of a non-empty batch fails, as the Lambda raises."""
        return self.rows > 0 and self.written == 0 and self.unchanged == 0 and self.valid == 0

    def counts(self) -> BatchCounts:
        return BatchCounts(
            rows=self.rows,
            written=self.written,
            rejected=len(self.rejects),
            failed=len(self.failures),
            valid=self.valid,
            unchanged=self.unchanged,
        )


def process_batch(
    batch: Batch,
    *,
    engine: Engine,
    spec: Spec,
    header: Sequence[str],
    ctx: RunContext,
    writer: BatchWriter | None,
    stage: ModeStage | None = None,
    ticket: int | None = None,
) -> BatchOutcome:
    """Transform, settle the import mode, and write one batch: the unit a
    Distributed Map child handles.

    `batch.rejects` holds rows refused while reading (bad UTF-8, oversized);
    they belong to this batch so that its counts, and its checkpoint line,
    cover every row read while it was open.  With a mode stage, `ticket` is
    this batch's place in file order (versions are assigned in that order);
    it is always released, even when the batch has no valid row.
    """
    moded = stage is not None and stage.mode != "blind" and writer is not None
    failures: list[Failure] = []
    unchanged = 0
    try:
        result = engine.transform_batch(spec, header, batch.rows, ctx, dedupe=not moded)
        rejects = [*batch.rejects, *result.rejects]
        items = result.items
        if moded:
            assert stage is not None
            prepared = stage.prepare(items, dict(batch.rows), ticket=ticket)
            items, unchanged = prepared.items, prepared.unchanged
            rejects.extend(prepared.rejects)
            failures = prepared.failures
    finally:
        if stage is not None:
            stage.release(ticket)
    written = WriteOutcome()
    if writer is not None and items:
        written = writer.write_batch(items)
    return BatchOutcome(
        index=batch.index,
        rows=len(batch.rows) + len(batch.rejects),
        valid=len(result.items),
        written=written.written,
        rejects=rejects,
        failures=failures + written.failures,
        retries=written.retries,
        unchanged=unchanged,
    )


class _CsvReport:
    """A CSV report opened on first use (no empty files for clean runs)."""

    def __init__(self, path: Path | None, columns: list[str], append: bool) -> None:
        self.path = path
        self.columns = columns
        self.append = append and path is not None and path.exists()
        self._fh: IO[str] | None = None
        self._writer: Any = None

    def write(self, row: list[Any]) -> None:
        if self.path is None:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a" if self.append else "w", newline="", encoding="utf-8")  # noqa: SIM115
            self._writer = csv.writer(self._fh)
            if not self.append:
                self._writer.writerow(self.columns)
        self._writer.writerow(row)

    @property
    def used(self) -> bool:
        return self._fh is not None or self.append

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


class _ResultWriter:
    """ResultWriter-style output: manifest.json plus SUCCEEDED_0.json / FAILED_0.json.

    Entries are streamed into JSON arrays as batches settle, so memory does not
    grow with the number of batches.
    """

    def __init__(self, folder: Path, run_id: str) -> None:
        self.folder = folder
        self.run_id = run_id
        folder.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[str]] = {}
        self._counts: dict[str, int] = {"SUCCEEDED": 0, "FAILED": 0}

    def add(self, outcome: BatchOutcome) -> None:
        status = "FAILED" if outcome.failed_batch else "SUCCEEDED"
        fh = self._files.get(status)
        if fh is None:
            fh = open(self.folder / f"{status}_0.json", "w", encoding="utf-8")  # noqa: SIM115
            fh.write("[")
            self._files[status] = fh
        entry: dict[str, Any] = {
            "Name": f"{self.run_id}-batch-{outcome.index}",
            "Status": status,
            "InputDetails": {"Included": False},
        }
        counts = asdict(outcome.counts())
        if status == "FAILED":
            entry["Error"] = "BatchFailed"
            entry["Cause"] = json.dumps(counts)
        else:
            entry["Output"] = json.dumps(counts)
        fh.write(("," if self._counts[status] else "") + json.dumps(entry))
        self._counts[status] += 1

    def close(self, summary: Summary) -> None:
        files = {"SUCCEEDED": [], "FAILED": [], "PENDING": []}
        for status, fh in self._files.items():
            fh.write("]")
            fh.close()
            path = self.folder / f"{status}_0.json"
            files[status].append({"Key": path.name, "Size": path.stat().st_size})
        manifest = {
            "DestinationBucket": None,
            "MapRunArn": f"local:import-csv:{self.run_id}",
            "ResultFiles": files,
            "Summary": summary.to_json(),
        }
        (self.folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _unknown_columns(header: Sequence[str], spec: Spec) -> list[str]:
    missing = [c for c in spec.needed_columns if c not in header]
    if missing:
        raise SourceError(
            f"spec column {missing[0]!r} is not in the CSV header "
            f"(header: {', '.join(header) or '(empty)'})"
        )
    needed = set(spec.needed_columns)
    return [h for h in header if h not in needed]


def _run_meta(config: RunConfig, ctx: RunContext) -> dict[str, Any]:
    return {
        "run_id": ctx.run_id,
        "timestamp": ctx.timestamp,
        "source": config.source,
        "table": config.table,
        "spec": config.spec_digest,
        "batch_items": config.batch_items,
        "batch_bytes": config.batch_bytes,
        "mode": config.mode,
    }


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
    checkpoint: Checkpoint | None = None
    if config.resume and writer is not None:
        assert config.checkpoint_path is not None
        checkpoint = Checkpoint.load(config.checkpoint_path)
        ctx = RunContext.new(run_id=checkpoint.meta["run_id"])
        ctx = RunContext(ctx.run_id, checkpoint.meta["timestamp"], ctx.source, ctx.user, ctx.ip)
        checkpoint.check_matches(_run_meta(config, ctx))
    else:
        ctx = RunContext.new(run_id=config.run_id)
    summary = Summary(run_id=ctx.run_id)
    stream = open_source(config.source, s3_client=s3_client)
    try:
        open_reader = getattr(engine, "open_reader", None)
        reader: Any = (
            open_reader(stream.raw, spec.csv) if open_reader else CsvReader(stream.raw, spec.csv)
        )
        header = list(reader.header)
        summary.ignored_columns = _unknown_columns(header, spec)
        batcher = Batcher(
            max_items=config.batch_items,
            max_bytes=config.batch_bytes,
            batch_input=ctx.to_batch_input(),
            header=header,
        )
        if writer is not None and config.checkpoint_path is not None:
            if checkpoint is None:
                checkpoint = Checkpoint.start(config.checkpoint_path, _run_meta(config, ctx))
            else:
                checkpoint.reopen()
            summary.checkpoint = str(config.checkpoint_path)
        resuming = checkpoint is not None and config.resume
        rejects = _CsvReport(
            config.rejects_path, ["line", "column", "value", "reason", *header], append=resuming
        )
        failures = _CsvReport(config.failures_path, ["line", "pk", "sk", "reason"], append=resuming)
        results = (
            _ResultWriter(config.output_dir, ctx.run_id) if config.output_dir is not None else None
        )
        run = _Run(
            config=config,
            engine=engine,
            header=header,
            ctx=ctx,
            writer=writer,
            summary=summary,
            rejects=rejects,
            failures=failures,
            checkpoint=checkpoint,
            results=results,
            progress=progress,
            stream=stream,
        )
        try:
            run.pump(reader, batcher)
        finally:
            rejects.close()
            failures.close()
            summary.rejects_file = str(rejects.path) if rejects.used else None
            summary.failures_file = str(failures.path) if failures.used else None
            summary.padded_rows = reader.padded
            summary.truncated_rows = reader.truncated
            summary.seconds = round(time.perf_counter() - started, 3)
            summary.rows_per_second = (
                round(summary.rows / summary.seconds, 1) if summary.seconds else 0.0
            )
            if results is not None:
                results.close(summary)
            if checkpoint is not None:
                if summary.aborted is None and not run.interrupted:
                    checkpoint.mark_complete()
                checkpoint.close()
    finally:
        stream.close()
    settled = summary.rejected + (
        summary.written + summary.unchanged + summary.failed
        if writer is not None
        else summary.valid
    )
    if settled != summary.rows:
        raise AssertionError(f"row accounting broken: {summary}")
    if run.interrupted:
        raise RunInterrupted("interrupted", summary)
    _check_tolerance(config, summary)
    return summary


def _check_tolerance(config: RunConfig, summary: Summary) -> None:
    """ToleratedFailureCount/Percentage as the Map run applies them (items of failed batches)."""
    if summary.failed_batches == 0:
        return
    count, pct = config.tolerated_failure_count, config.tolerated_failure_percentage
    if count is None and pct is None:
        return
    failed_items = summary.failed_items
    too_many = (count is not None and failed_items > count) or (
        pct is not None and summary.rows and 100.0 * failed_items / summary.rows > pct
    )
    if too_many:
        summary.aborted = (
            f"map run failed: {summary.failed_batches} batches ({failed_items} items) failed, "
            f"over the tolerated " + (f"{count} items" if count is not None else f"{pct}%")
        )


@dataclass(slots=True)
class _Run:
    """The main-thread bookkeeping of one run (counts, reports, checkpoint)."""

    config: RunConfig
    engine: Engine
    header: list[str]
    ctx: RunContext
    writer: BatchWriter | None
    summary: Summary
    rejects: _CsvReport
    failures: _CsvReport
    checkpoint: Checkpoint | None
    results: _ResultWriter | None
    progress: Callable[[int, int, int | None], None] | None
    stream: Any
    interrupted: bool = False
    skip: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.checkpoint is not None and self.config.resume:
            self._restore(self.checkpoint)

    @property
    def limit(self) -> int | None:
        cfg = self.config
        return cfg.max_rejects if cfg.max_rejects is not None else cfg.spec.max_rejects

    def _restore(self, checkpoint: Checkpoint) -> None:
        s = self.summary
        for index, c in checkpoint.finished.items():
            self.skip.add(index)
            s.rows += c.rows
            s.written += c.written
            s.rejected += c.rejected
            s.failed += c.failed
            s.valid += c.valid
            s.unchanged += c.unchanged
            s.batches += 1
            s.resumed_batches += 1

    def settle(self, done: BatchOutcome) -> None:
        s = self.summary
        s.rows += done.rows
        s.batches += 1
        s.valid += done.valid
        s.written += done.written
        s.unchanged += done.unchanged
        s.retries += done.retries
        for f in done.failures:
            s.failed += 1
            self.failures.write([f.line, f.pk, f.sk, f.reason])
        for r in done.rejects:
            s.rejected += 1
            self.rejects.write([r.line, r.column, r.value, r.reason, *r.row])
        if self.writer is not None and done.failed_batch:
            s.failed_batches += 1
            s.failed_items += done.rows
        if self.results is not None:
            self.results.add(done)
        if self.checkpoint is not None:
            # reports first: a checkpointed batch must never lose its report lines to a kill
            self.rejects.flush()
            self.failures.flush()
            self.checkpoint.record(done.index, done.counts())

    def over_limit(self) -> bool:
        return self.limit is not None and self.summary.rejected > self.limit

    def pump(self, reader: Any, batcher: Batcher) -> None:
        config, s = self.config, self.summary
        size_of = getattr(self.engine, "row_json_size", None)
        if size_of is None:
            from importer.batching import item_json_size as size_of
        header = self.header
        in_flight: deque[Future[BatchOutcome]] = deque()
        max_in_flight = max(2, config.workers * 2)
        pool = ThreadPoolExecutor(max_workers=max(1, config.workers), thread_name_prefix="batch")

        stage = config.stage

        def submit(batch: Batch) -> None:
            if batch.index in self.skip:
                return
            while len(in_flight) >= max_in_flight:
                wait(in_flight, return_when=FIRST_COMPLETED)
                drain()
            ticket = stage.ticket() if stage is not None else None
            future = pool.submit(
                process_batch,
                batch,
                engine=self.engine,
                spec=config.spec,
                header=header,
                ctx=self.ctx,
                writer=self.writer,
                stage=stage,
                ticket=ticket,
            )
            tickets[future] = ticket
            in_flight.append(future)

        # each batch's place in file order; a batch cancelled before it ran must give
        # its place back, or the batches after it would wait for it forever
        tickets: dict[Future[BatchOutcome], int | None] = {}

        def settle_next() -> None:
            future = in_flight.popleft()
            tickets.pop(future, None)
            self.settle(future.result())

        def drain() -> None:
            while in_flight and in_flight[0].done():
                settle_next()

        read = 0
        last_report = 0.0
        try:
            for row in reader:
                read += 1
                if row.error is not None:
                    batcher.reject(Reject(row.line, "", "", row.error, tuple(row.fields)))
                else:
                    closed = batcher.add(row.line, row.fields, size_of(header, row.fields))
                    if closed is not None:
                        submit(closed)
                        drain()
                        if self.over_limit():
                            break
                if self.progress is not None:
                    now = time.monotonic()
                    if now - last_report > 0.2:
                        last_report = now
                        self.progress(read, self.stream.bytes_read, self.stream.total_bytes)
            else:
                last = batcher.flush()
                if last is not None:
                    submit(last)
            while in_flight:
                settle_next()
        except KeyboardInterrupt:
            # batches already running finish normally (and are checkpointed); the
            # ones still queued are cancelled and sent again by --resume
            self.interrupted = True
            for fut in in_flight:
                if fut.cancel() and stage is not None:
                    stage.release(tickets[fut])
            for fut in in_flight:
                if not fut.cancelled():
                    self.settle(fut.result())
            in_flight.clear()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if self.progress is not None:
                self.progress(read, self.stream.bytes_read, self.stream.total_bytes)
        if self.over_limit():
            s.aborted = f"stopped after {s.rejected} rejected rows (limit {self.limit})"
