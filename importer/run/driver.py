"""The local run: a faithful local Distributed Map, in one process.

source → batches → transform → writer → report.  The main thread reads and
cuts batches exactly as ItemBatcher would; each batch is handled by the
pipeline's per-batch unit (`importer.run.batch_steps`) — the same one the Lambda
child runs — on a pool fed through a bounded window (`importer.run.window`), so
reading blocks (back-pressure) instead of piling batches up in memory.
`workers` (MaxConcurrency) bounds the requests in flight: a few batches at a
time each send theirs over several lanes (`importer.dynamodb.request_pool`), which
keeps the same concurrency with a fraction of the batches in memory.  Outcomes
come back as data and are counted on the main thread only, which is how every
run can check `rows == written + unchanged + rejected + failed + skipped`.

Whether the run goes on is the pipeline's `RunCoordinator`'s to say: `submit_batches`
halts it over --max-rejects (the batches not yet written then count as skipped),
a worker's fatal error fails it, and its status decides the checkpoint.

A checkpoint records settled batches (`--resume` continues a killed, interrupted,
halted or failed run; only a finished run completes it), and an optional
ResultWriter-style folder receives `manifest.json`, `SUCCEEDED_0.json` and
`FAILED_0.json` (`importer.run.reports`).
"""

from __future__ import annotations

import io
import itertools
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from importer.coordinator import RunStatus
from importer.counts import Counts
from importer.dynamodb.errors import WriterFatalError
from importer.dynamodb.request_pool import batch_threads
from importer.input.batching import (
    AWS_MAX_INPUT_BYTES,
    DEFAULT_MAX_ITEMS,
    Batch,
    Batcher,
    check_limits,
)
from importer.input.formats import ManifestReader, input_type_for, open_typed_reader
from importer.input.reader import RowReader
from importer.input.source import (
    SourceError,
    SourceStream,
    TruncatedSourceError,
    open_source,
)
from importer.records import Reject
from importer.run.batch_steps import BatchOutcome
from importer.run.checkpoint import Checkpoint, RunLock
from importer.run.pipeline import Pipeline, PipelineSettings
from importer.run.reports import (
    CsvReport,
    ResultWriter,
    failure_columns,
    failure_fields,
    probe_folder,
    probe_writable,
    reject_fields,
    rejects_columns,
)
from importer.run.window import BoundedWindow
from importer.transform.context import RunContext
from importer.transform.engines import Engine
from importer.transform.spec import Spec, check_header, header_problem

__all__ = [
    "RunConfig",
    "open_rows",
    "RunInterrupted",
    "RunStatus",
    "Summary",
    "run_import",
]


class RunInterrupted(Exception):
    """Ctrl-C or SIGTERM: in-flight batches were settled and checkpointed; the run can resume."""

    def __init__(self, message: str, summary: Summary, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.summary = summary
        self.signum = signum


class _Signals:
    """SIGINT and SIGTERM ask the run to stop between batches, never inside one.

    A KeyboardInterrupt raised wherever the main thread happened to be could
    land while a batch was settled (counted, reported, checkpointed) and broke
    the accounting; SIGTERM (a container stop) killed the run with no summary.
    Now the first signal sets `received` and the run stops at the next batch
    boundary as Ctrl-C did; a second one raises KeyboardInterrupt at once (the
    checkpoint and report files stay consistent: see `importer.run.checkpoint`).
    Only the main thread can install handlers; elsewhere nothing changes.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._old[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for signum, old in self._old.items():
            signal.signal(signum, old)
        self._old.clear()


#: Batches read ahead of the worker threads (waiting in the pool's queue, rows in memory).
_QUEUED_AHEAD = 4


@dataclass(slots=True)
class RunConfig:
    """What the local Distributed Map needs beyond the pipeline: source, batches, reports.

    The spec, the table, the mode and the workers are the pipeline's (`PipelineSettings`):
    stated there once, so a run's checkpoint cannot record another mode than the one it
    writes with, its rows be read for another spec than they are transformed with, nor its
    window be sized for other workers than its requests.  The batch limits are checked
    here, once (`check_limits`: what Step Functions would refuse).
    """

    source: str
    batch_items: int | None = DEFAULT_MAX_ITEMS
    batch_bytes: int | None = AWS_MAX_INPUT_BYTES
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
    #: ItemReader InputType (`--input-type`); None: the spec's `[input] type`, else the name
    input_type: str | None = None
    #: ReaderConfig.MaxItems (`--max-items`); None: the spec's `[input] max_items`
    max_items: int | None = None

    def __post_init__(self) -> None:
        check_limits(self.batch_items, self.batch_bytes)


@dataclass(slots=True)
class Summary(Counts):
    """A run's counts (`importer.counts.Counts`: every row settled once) and what else
    the run has to say: batches, time, report files, status, notices."""

    batches: int = 0
    seconds: float = 0.0
    rows_per_second: float = 0.0
    retries: int = 0
    failed_batches: int = 0
    failed_items: int = 0
    resumed_batches: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    padded_rows: int = 0
    truncated_rows: int = 0
    #: the first lines of each (so the notice can name them)
    padded_lines: list[int] = field(default_factory=list)
    truncated_lines: list[int] = field(default_factory=list)
    rejects_file: str | None = None
    failures_file: str | None = None
    checkpoint: str | None = None
    run_id: str = ""
    status: str = RunStatus.RUNNING.value
    aborted: str | None = None
    notices: list[str] = field(default_factory=list)
    #: the ItemReader InputType the source was read as
    input_type: str = "CSV"
    #: a manifest's objects: how many it lists, and how many were read to their end
    objects: int | None = None
    objects_read: int | None = None
    #: batches read but left unwritten when the run stopped over --max-rejects
    #: (their rows are `skipped`: read, not written, not judged; rows never read count nowhere)
    halted_batches: int = 0
    #: which `ttl` the commands carry (the data table's TTL configuration, or null)
    ttl: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The summary JSON (`--summary-json`, ResultWriter's manifest), keys in their
        documented order."""
        data = asdict(self)
        ordered = {key: data.pop(key) for key in _SUMMARY_KEYS if key in data}
        ordered.update(data)
        return ordered


#: the summary JSON's key order (what readers of `--summary-json` and the manifest have seen): the
#: counts stay among the other keys, not first; a key added later comes after these
_SUMMARY_KEYS = (
    "rows",
    "written",
    "rejected",
    "failed",
    "batches",
    "seconds",
    "rows_per_second",
    "valid",
    "unchanged",
    "existing",
    "would_write",
    "synced",
    "retries",
    "failed_batches",
    "failed_items",
    "resumed_batches",
    "ignored_columns",
    "padded_rows",
    "truncated_rows",
    "padded_lines",
    "truncated_lines",
    "rejects_file",
    "failures_file",
    "checkpoint",
    "run_id",
    "status",
    "aborted",
    "notices",
    "bad_data",
    "input_type",
    "halted_batches",
    "skipped",
    "ttl",
)


def open_rows(
    source: str,
    spec: Spec,
    engine: Engine,
    *,
    input_type: str | None = None,
    s3_client: Any = None,
    wrap: Callable[[Any], Any] | None = None,
) -> tuple[str, SourceStream, RowReader]:
    """(InputType, byte stream for progress, reader) for the run's source.

    CSV goes through the engine's reader (parsed in C); JSON, JSONL, Parquet and
    manifests through the typed readers of `importer.input`, which give the same
    rows (the spec's columns, in spec order) with each item's JSON size.
    """
    kind = input_type_for(source, input_type or spec.input.type)
    if kind == "CSV":
        stream = open_source(source, s3_client=s3_client)
        raw = wrap(stream.raw) if wrap is not None else stream.raw
        try:
            reader = engine.open_reader(raw, spec.csv)
        except BaseException:
            stream.close()
            raise
        return kind, stream, reader
    header, kinds = spec.needed_columns, spec.kinds
    if kind == "MANIFEST":
        stream = SourceStream(raw=io.BytesIO(), name=source, total_bytes=None)
        reader = ManifestReader(
            source,
            spec.input,
            spec.csv,
            header,
            kinds,
            s3_client=s3_client,
            open_csv=engine.open_reader,
            size_of=engine.row_json_size,
        )
        return kind, stream, reader
    if kind == "PARQUET":
        stream = SourceStream(raw=io.BytesIO(), name=source, total_bytes=None)
        reader = open_typed_reader(kind, source, header, kinds, s3_client=s3_client)
        problem = header_problem(spec, reader.columns, where="the Parquet schema")
        if problem:
            raise SourceError(problem)
        return kind, stream, reader
    stream = open_source(source, s3_client=s3_client)
    raw = wrap(stream.raw) if wrap is not None else stream.raw
    typed = SourceStream(raw=raw, name=source, total_bytes=stream.total_bytes)
    try:
        reader = open_typed_reader(kind, source, header, kinds, stream=typed)
    except BaseException:
        stream.close()
        raise
    return kind, stream, reader


def _run_meta(config: RunConfig, settings: PipelineSettings, ctx: RunContext) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the same source, table, spec, batches, mode."""
    return {
        "run_id": ctx.run_id,
        "timestamp": ctx.timestamp,
        "source": config.source,
        "table": settings.table,
        "spec": config.spec_digest,
        "batch_items": config.batch_items,
        "batch_bytes": config.batch_bytes,
        "mode": settings.mode,
    }


def run_import(
    config: RunConfig,
    *,
    pipeline: Pipeline,
    progress: Callable[[int, int, int | None], None] | None = None,
    s3_client: Any = None,
) -> Summary:
    """Import one source through `pipeline` (a dry-run pipeline validates); returns the counts.

    A fatal error (credentials, a deleted table) stops the run as FAILED: the
    finished batches stay checkpointed, and the error says how to resume.
    """
    with _Signals() as signals, _Locks(config, not pipeline.settings.dry_run):
        return _run_import(config, pipeline, progress, s3_client, signals)


class _Locks:
    """Every output checked before the first write; checkpoint and output folder locked."""

    def __init__(self, config: RunConfig, writing: bool) -> None:
        self.config = config
        self.writing = writing
        self.lock = RunLock()

    def __enter__(self) -> _Locks:
        config = self.config
        try:
            if self.writing and config.checkpoint_path is not None:
                cp = config.checkpoint_path
                if config.resume:
                    if cp.exists() and not cp.is_file():
                        raise OSError(21, f"checkpoint {cp} is a directory, not a file")
                else:
                    probe_writable(cp, "checkpoint")
                self.lock.take(cp.with_name(cp.name + ".lock"), f"checkpoint {cp}")
            if config.output_dir is not None:
                probe_folder(config.output_dir, "output folder")
                self.lock.take(
                    config.output_dir / ".importer.lock", f"output folder {config.output_dir}"
                )
            if config.rejects_path is not None:
                probe_writable(config.rejects_path, "rejects file")
            if config.failures_path is not None and self.writing:
                probe_writable(config.failures_path, "failures file")
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()


def _run_import(
    config: RunConfig,
    pipeline: Pipeline,
    progress: Callable[[int, int, int | None], None] | None,
    s3_client: Any,
    signals: _Signals,
) -> Summary:
    started = time.perf_counter()
    spec = pipeline.settings.spec
    writing = not pipeline.settings.dry_run
    checkpoint: Checkpoint | None = None
    if config.resume and writing:
        assert config.checkpoint_path is not None
        checkpoint = Checkpoint.load(config.checkpoint_path)
        ctx = RunContext.new(run_id=checkpoint.meta["run_id"])
        ctx = RunContext(ctx.run_id, checkpoint.meta["timestamp"], ctx.source, ctx.user, ctx.ip)
        checkpoint.check_matches(_run_meta(config, pipeline.settings, ctx))
    else:
        ctx = RunContext.new(run_id=config.run_id)
    ctx = pipeline.stamp(ctx)
    summary = Summary(run_id=ctx.run_id, notices=pipeline.notices)
    kind, stream, reader = open_rows(
        config.source,
        spec,
        pipeline.engine,
        input_type=config.input_type,
        s3_client=s3_client,
    )
    summary.input_type = kind
    run: _Run | None = None
    made_whole = False
    if checkpoint is not None:
        try:
            made_whole = checkpoint.check_input(stream)
        except BaseException:
            stream.close()
            raise
    try:
        header = list(reader.header)
        summary.ignored_columns = check_header(spec, header)
        batcher = Batcher(
            max_items=config.batch_items,
            max_bytes=config.batch_bytes,
            batch_input=ctx.to_batch_input(),
            header=header,
        )
        if writing and config.checkpoint_path is not None:
            if checkpoint is None:
                meta = _run_meta(config, pipeline.settings, ctx)
                meta["input"] = stream.identity
                checkpoint = Checkpoint.start(config.checkpoint_path, meta)
            else:
                checkpoint.reopen(stream.identity if made_whole else None)
            summary.checkpoint = str(config.checkpoint_path)
        resuming = checkpoint is not None and config.resume
        if isinstance(reader, ManifestReader) and checkpoint is not None:
            if resuming:
                reader.resume_from(checkpoint.objects, checkpoint.finished)
            reader.on_object = checkpoint.record_object
        rejects_at, failures_at = _reports_kept(config, checkpoint) if resuming else (None, None)
        rejects = CsvReport(config.rejects_path, rejects_columns(header), keep=rejects_at)
        failures = CsvReport(config.failures_path, failure_columns(header), keep=failures_at)
        results = (
            ResultWriter(config.output_dir, ctx.run_id) if config.output_dir is not None else None
        )
        run = _Run(
            config=config,
            pipeline=pipeline,
            header=header,
            ctx=ctx,
            summary=summary,
            rejects=rejects,
            failures=failures,
            checkpoint=checkpoint,
            results=results,
            progress=progress,
            stream=stream,
            signals=signals,
        )
        coordinator = pipeline.coordinator
        try:
            run.submit_batches(reader, batcher)
            coordinator.finish(RunStatus.INTERRUPTED if run.interrupted else RunStatus.FINISHED)
        except BaseException as exc:
            coordinator.finish(RunStatus.FAILED)
            if isinstance(exc, TruncatedSourceError) and checkpoint is not None:
                checkpoint.mark_truncated()
            raise
        finally:
            rejects.close()
            failures.close()
            summary.status = coordinator.status.value
            summary.rejects_file = str(rejects.path) if rejects.used else None
            summary.failures_file = str(failures.path) if failures.used else None
            summary.padded_rows = reader.padded
            summary.truncated_rows = reader.truncated
            summary.padded_lines = list(reader.padded_lines)
            summary.truncated_lines = list(reader.truncated_lines)
            if isinstance(reader, ManifestReader):
                summary.objects, summary.objects_read = len(reader.objects), reader.objects_done
            first_keys = reader.first_keys
            if first_keys is not None:
                needed = set(spec.needed_columns)
                summary.ignored_columns = [k for k in first_keys if k not in needed]
            summary.ttl = pipeline.ttl_notes()
            summary.seconds = round(time.perf_counter() - started, 3)
            summary.rows_per_second = (
                round(summary.rows / summary.seconds, 1) if summary.seconds else 0.0
            )
            if results is not None:
                results.close(summary.to_json())
            if checkpoint is not None:
                if coordinator.status is RunStatus.FINISHED:
                    checkpoint.mark_complete()
                checkpoint.close()
    except (WriterFatalError, SourceError, OSError) as exc:
        if checkpoint is not None and run is not None:
            truncated = isinstance(exc, TruncatedSourceError)
            fix = "once the file is whole" if truncated else "once fixed"
            hint = (
                f" -- {checkpoint.batches_done} finished batch(es) are checkpointed; "
                f"{fix}, run the same command with --resume to continue"
            )
            if isinstance(exc, OSError):
                raise OSError(exc.errno, f"{exc.strerror or exc}{hint}") from exc
            raise type(exc)(f"{exc}{hint}") from exc
        raise
    finally:
        stream.close()
    if not writing:
        summary.would_write, summary.written = summary.written, 0
    summary.check()
    if run.interrupted:
        raise RunInterrupted("interrupted", summary, signals.received or signal.SIGINT)
    _check_tolerance(config, summary)
    return summary


def _reports_kept(config: RunConfig, checkpoint: Any) -> tuple[int | None, int | None]:
    """How much of the rejects / failures files a resume keeps (`CsvReport`'s `keep`)."""
    if checkpoint.reports_at is not None:
        return checkpoint.reports_at
    if not checkpoint.finished:
        return None, None  # nothing was checkpointed: the files start over
    # a checkpoint from before the sizes were recorded: keep the files whole, as then

    def size(path: Path | None) -> int | None:
        return path.stat().st_size if path is not None and path.is_file() else None

    return size(config.rejects_path), size(config.failures_path)


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


def _line_of(reject: Reject) -> int:
    return reject.line


@dataclass(slots=True)
class _Run:
    """The main-thread bookkeeping of one run (counts, reports, checkpoint)."""

    config: RunConfig
    pipeline: Pipeline
    header: list[str]
    ctx: RunContext
    summary: Summary
    rejects: CsvReport
    failures: CsvReport
    checkpoint: Checkpoint | None
    results: ResultWriter | None
    progress: Callable[[int, int, int | None], None] | None
    stream: Any
    signals: _Signals = field(default_factory=_Signals)
    interrupted: bool = False
    skip: set[int] = field(default_factory=set)
    #: how far into the source the settled batches reach (bytes): the progress
    #: line's fraction and ETA come from what is written, not from what was read
    settled_bytes: int = 0
    last_report: float = 0.0

    def __post_init__(self) -> None:
        if self.checkpoint is not None and self.config.resume:
            self._restore(self.checkpoint)

    @property
    def limit(self) -> int | None:
        cfg = self.config
        spec_limit = self.pipeline.settings.spec.max_rejects
        return cfg.max_rejects if cfg.max_rejects is not None else spec_limit

    def _restore(self, checkpoint: Checkpoint) -> None:
        s = self.summary
        for index, c in checkpoint.finished.items():
            self.skip.add(index)
            s.add(c)
            s.batches += 1
            s.resumed_batches += 1
            if c.failed:
                s.failed_batches += 1
                s.failed_items += c.rows

    def settle(self, done: BatchOutcome) -> None:
        """Count, report and checkpoint one batch (batches settle in file order).

        Bookkeeping only: whether the run goes on is the caller's decision
        (`over_limit`, then the coordinator's `halt`).
        """
        s = self.summary
        done = done.final()  # every earlier batch has run: validate's duplicates are settled
        counts = done.counts()
        s.add(counts)
        if done.halted:  # read, but the run stopped before it wrote: not checkpointed
            s.halted_batches += 1
            return
        s.batches += 1
        s.retries += done.retries
        for f in done.failures:
            self.failures.write(failure_fields(f))
        # in line order: a batch's rejects are gathered by stage (reader, transform,
        # duplicates, mode), and batches settle in file order
        for r in sorted(done.rejects, key=_line_of):
            self.rejects.write(reject_fields(r))
        if done.failed_batch:
            s.failed_batches += 1
            s.failed_items += done.rows
        if self.results is not None:
            self.results.add(done)
        if self.checkpoint is not None:
            # reports first: a checkpointed batch must never lose its report lines to a
            # kill; the checkpoint records how long they were, so a resume cuts off the
            # lines of batches it does not hold (none repeated)
            self.rejects.flush()
            self.failures.flush()
            self.rejects.settle()
            self.failures.settle()
            self.checkpoint.record(done.index, counts, (self.rejects.size(), self.failures.size()))

    def report(self, *, force: bool = False) -> None:
        """Show the rows settled so far (at most 5 times a second, unless `force`).

        Reading runs ahead of writing by up to a window of batches: counting what
        was read would show more than was written, and an interrupt would then
        report fewer rows than the bar had.
        """
        if self.progress is None:
            return
        now = time.monotonic()
        if force or now - self.last_report > 0.2:
            self.last_report = now
            self.progress(self.summary.rows, self.settled_bytes, self.stream.total_bytes)

    def over_limit(self) -> bool:
        """Only bad data counts: rows that exist or conflict are outcomes of a re-run."""
        return self.limit is not None and self.summary.bad_data > self.limit

    def submit_batches(self, reader: Any, batcher: Batcher) -> None:
        config, pipeline = self.config, self.pipeline
        coordinator = pipeline.coordinator
        size_of = pipeline.engine.row_json_size
        header = self.header
        # `workers` is the run's request concurrency: a few batches at a time send their
        # requests side by side (`importer.dynamodb.request_pool`), so only those few hold
        # their items.
        # A batch waiting in the pool's queue holds all its rows; one done but not yet
        # settled (an earlier batch is still running) holds only its outcome.  So the
        # window stays 2 x workers wide for the slow-batch case, but only a few batches
        # may wait for a thread: otherwise a run's peak memory depends on how often the
        # reader got ahead (more often, the longer the file).
        # the pipeline's lanes were sized for this many batches at once (`open_pipeline`)
        lanes = pipeline.lanes
        workers = pipeline.settings.workers
        batch_workers = lanes.batches if lanes is not None else batch_threads(workers)

        def max_unfinished() -> int:
            # fewer batches at once when the service answers at once (`Lanes.batches_now`):
            # then none waits in the queue either, so no more than those run
            active = lanes.batches_now() if lanes is not None else batch_workers
            return active if active < batch_workers else batch_workers + _QUEUED_AHEAD

        def settled(future: Future[BatchOutcome], tag: tuple[int, int]) -> None:
            # tag: (ticket, how far the source had been read when the batch was cut)
            self.settle(future.result())
            self.settled_bytes = max(self.settled_bytes, tag[1])
            self.report()
            if self.over_limit():
                # batches still running write nothing more: the limit stops the writes
                # now, not after every batch in the air has finished
                coordinator.halt(self.limit_reason())

        pool = ThreadPoolExecutor(max_workers=batch_workers, thread_name_prefix="batch")
        window: BoundedWindow[BatchOutcome] = BoundedWindow(
            pool,
            settle=settled,
            max_pending=max(2, workers * 2),
            max_unfinished=max_unfinished,
        )

        def give_back(tags: list[tuple[int, int]]) -> None:
            # a batch cancelled before it ran gives its place in file order back, or
            # the batches after it would wait for it forever
            for ticket, _read_at in tags:
                pipeline.release(ticket)

        def submit(batch: Batch) -> None:
            if batch.index in self.skip:
                if not len(window):  # settled in an earlier run, and nothing before it waits
                    self.settled_bytes = self.stream.bytes_read
                return
            ticket = pipeline.ticket()
            try:
                window.submit(
                    pipeline.process,
                    batch,
                    header=header,
                    ctx=self.ctx,
                    ticket=ticket,
                    tag=(ticket, self.stream.bytes_read),
                )
            except BaseException:
                pipeline.release(ticket)
                raise

        max_items = config.max_items or pipeline.settings.spec.input.max_items
        batches = reader.read_batches(batcher) if not max_items else None
        if batches is None:
            # ReaderConfig.MaxItems: ItemReader reads no more than this many items
            rows = itertools.islice(reader, max_items) if max_items else reader
            batches = batcher.cut(rows, header, size_of)
        signals = self.signals
        cut: TruncatedSourceError | None = None
        try:
            try:
                for batch in batches:
                    if signals.received is not None:
                        break
                    submit(batch)
                    window.drain()
                    if coordinator.stopped or signals.received is not None:
                        break
                    self.report()
            except TruncatedSourceError as exc:
                # the input ends early: the batches cut before the end are whole -- they
                # are written and checkpointed below, then the run stops saying so
                cut = exc
            if signals.received is not None:
                # batches already running finish normally (and are checkpointed); the
                # ones still queued are cancelled and sent again by --resume
                self.interrupted = True
                give_back(window.cancel_queued())
            window.finish()
            if cut is not None:
                raise cut
        except BaseException as exc:
            # a fatal error: every waiting batch is woken (the coordinator stops the
            # run's file order) and queued batches give their places back
            coordinator.fail(exc)
            give_back(window.cancel_queued())
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if not self.interrupted and not len(window):
                self.settled_bytes = self.stream.bytes_read  # every batch settled
            self.report(force=True)  # the last line shows what the summary counts
        self._say_why_stopped()

    def limit_reason(self) -> str:
        s = self.summary
        return (
            f"stopped after {s.bad_data} rows of bad data (limit {self.limit}); "
            "rows that already exist do not count"
        )

    def _say_why_stopped(self) -> None:
        s = self.summary
        if self.over_limit():
            s.aborted = self.limit_reason()
            if s.halted_batches:
                n = s.halted_batches
                s.aborted += (
                    f"; {n} batch{'' if n == 1 else 'es'} read by then "
                    f"({s.skipped:,} row{'' if s.skipped == 1 else 's'}) "
                    f"{'was' if n == 1 else 'were'} not written"
                )
