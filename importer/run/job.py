"""A job: several files imported as one, in a stated order, resumable as a whole.

Each file goes through the single-file driver (`importer.run.driver.run_import`)
with its own run id (`{job run id}-{n}`, so every row keeps a request id of its
own), checkpoint and reports in the job's folder.  Files run one after the
other, never side by side: an entity that appears in two files gets its
versions in the job's order, because the second file's lookups see what the
first one wrote.

The job's state is one JSON file (`job.json`, replaced atomically after every
change): the files in order with their status and counts.  `--resume` reloads
it: finished files are kept as counted, the interrupted one resumes from its
checkpoint (the driver re-sends only unfinished batches, with the original run
id and timestamp), the rest start.  So a job killed anywhere ends, once
resumed, with every row imported exactly once.

An observer (`JobObserver`) hears every step; the MBC import-job record
(`importer.mbc.import_job`) is one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from importer.counts import Counts
from importer.input.batching import BatchLimitError
from importer.input.source import SourceError
from importer.mbc.import_job import file_outcome
from importer.run.checkpoint import Checkpoint, CheckpointError, RunLock, spec_digest
from importer.run.driver import RunConfig, RunInterrupted, run_import
from importer.run.job_files import JobFile, JobManifest, expand_sources, load_job_manifest
from importer.run.pipeline import Pipeline, PipelineSettings
from importer.transform.spec import Spec, SpecError, load_spec

__all__ = [
    "FileState",
    "JobError",
    "JobObserver",
    "JobState",
    "default_job_dir",
    "file_outcome",
    "load_job",
    "run_job",
]

JOB_FILE = "job.json"
#: the counts the job's totals show (`skipped`: the rows of a file halted over --max-rejects)
_TOTALS = (
    "rows",
    "written",
    "would_write",
    "unchanged",
    "rejected",
    "existing",
    "failed",
    "bad_data",
    "skipped",
)
#: the counts a file's summary keeps when it is counted from its checkpoint
_COMPLETED = (
    "rows",
    "written",
    "rejected",
    "failed",
    "unchanged",
    "existing",
    "bad_data",
    "synced",
)
#: Errors that end one file (it is FAILED) while the job goes on with the next.
_FILE_ERRORS = (SourceError, SpecError, CheckpointError, BatchLimitError)


class JobError(ValueError):
    """The job cannot start or resume as asked (one readable line)."""


def default_job_dir(
    sources: list[str], table: str | None, spec: str, *, dry_run: bool = False
) -> Path:
    """`.importer/jobs/<digest>`; a validate's job apart (`.importer/validate/<digest>`), so
    it never replaces the state a `run --resume` needs."""
    key = hashlib.sha256("\n".join([*sources, table or "", spec]).encode()).hexdigest()[:16]
    return Path(".importer") / ("validate" if dry_run else "jobs") / key


@dataclass(slots=True)
class FileState:
    """One file of the job as `job.json` keeps it."""

    index: int
    source: str
    name: str
    spec: str
    table: str
    run_id: str
    checkpoint: str
    rejects: str
    failures: str
    #: pending, running, finished, interrupted, failed
    status: str = "pending"
    summary: dict[str, Any] | None = None
    error: str | None = None
    #: the observer's own keys for this file (the import-job record's pk/sk)
    record: dict[str, Any] = field(default_factory=dict)

    def file(self) -> JobFile:
        return JobFile(self.index, self.source, self.name, self.spec, self.table)


@dataclass(slots=True)
class JobState:
    id: str
    run_id: str
    sources: list[str]
    spec: str
    table: str
    created: float
    files: list[FileState]
    #: running, finished, interrupted, failed
    status: str = "running"
    record: dict[str, Any] = field(default_factory=dict)
    path: Path = Path(JOB_FILE)

    def save(self) -> None:
        data = dataclasses.asdict(self)
        data.pop("path")
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    def counts(self) -> Counts:
        """The job's counts: the sum of its files' (`importer.counts`), balanced as each is."""
        return Counts.total(Counts.from_json(f.summary) for f in self.files)

    def totals(self) -> dict[str, Any]:
        """The job's counts and its files' statuses, as the job's summary shows them."""
        total: dict[str, Any] = self.counts().counts_json(_TOTALS)
        total["file_count"] = len(self.files)
        for status in ("finished", "failed", "interrupted", "running", "pending"):
            total[f"files_{status}"] = sum(1 for f in self.files if f.status == status)
        total["status"] = self.status
        total["job"] = self.id
        return total


def load_job(path: Path) -> JobState:
    """`job.json` (or the folder holding it) as a JobState; one line when it is not one."""
    if path.is_dir():
        path = path / JOB_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = [FileState(**f) for f in data.pop("files")]
        return JobState(**data, files=files, path=path)
    except FileNotFoundError:
        raise JobError(f"no job at {path}") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise JobError(f"{path} is not an importer job file ({exc})") from None


class JobObserver(Protocol):
    """Hears a job's steps, on the main thread, in order."""

    def job_started(self, job: JobState) -> None: ...
    def file_started(self, job: JobState, f: FileState) -> None: ...
    def file_progress(self, job: JobState, f: FileState, rows: int) -> None: ...
    def file_finished(self, job: JobState, f: FileState) -> None: ...
    def job_finished(self, job: JobState) -> None: ...


class _NoObserver:
    def job_started(self, job: JobState) -> None:
        pass

    def file_started(self, job: JobState, f: FileState) -> None:
        pass

    def file_progress(self, job: JobState, f: FileState, rows: int) -> None:
        pass

    def file_finished(self, job: JobState, f: FileState) -> None:
        pass

    def job_finished(self, job: JobState) -> None:
        pass


def _stem(name: str) -> str:
    base = PurePosixPath(name.split("!")[-1]).name
    for ext in (".gz", ".zst", ".zstd"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
    return base.rsplit(".", 1)[0] if "." in base else base


def _plan_files(
    sources: list[str],
    spec_arg: str,
    table: str,
    job_dir: Path,
    run_id: str,
    s3_client: Any,
) -> list[FileState]:
    manifest: JobManifest | None = load_job_manifest(spec_arg)
    listed = expand_sources(sources, work_dir=job_dir, s3_client=s3_client)
    files = []
    for i, (source, name) in enumerate(listed):
        if manifest is not None:
            entry = manifest.pick(name)
            spec, file_table = entry.spec, entry.table or table
        else:
            spec, file_table = spec_arg, table
        tag = f"{i + 1:03d}-{_stem(name)}"
        files.append(
            FileState(
                index=i,
                source=source,
                name=name,
                spec=spec,
                table=file_table,
                run_id=f"{run_id}-{i + 1}",
                checkpoint=str(job_dir / "checkpoints" / f"{i + 1:03d}.jsonl"),
                rejects=str(job_dir / "rejects" / f"{tag}.rejects.csv"),
                failures=str(job_dir / "failures" / f"{tag}.failures.csv"),
            )
        )
    return files


def _open_job(
    sources: list[str],
    spec_arg: str,
    table: str,
    job_dir: Path,
    *,
    resume: bool,
    run_id: str | None,
    s3_client: Any,
) -> JobState:
    path = job_dir / JOB_FILE
    if resume:
        job = load_job(path)
        if (job.sources, job.spec, job.table) != (sources, spec_arg, table):
            raise JobError(
                f"{path} is the job of other sources, spec or table; resume it with the "
                "command that started it"
            )
        again = expand_sources(sources, work_dir=job_dir, s3_client=s3_client)
        if [n for _, n in again] != [f.name for f in job.files]:
            raise JobError(
                f"the files of job {job.id} changed since it started ({len(job.files)} then, "
                f"{len(again)} now); start it again without --resume"
            )
        job.status = "running"
        return job
    job_dir.mkdir(parents=True, exist_ok=True)
    rid = run_id or uuid.uuid4().hex[:16]
    job = JobState(
        id=job_dir.name,
        run_id=rid,
        sources=list(sources),
        spec=spec_arg,
        table=table,
        created=time.time(),
        files=_plan_files(sources, spec_arg, table, job_dir, rid, s3_client),
        path=path,
    )
    job.save()
    return job


#: Opens the pipeline a file is written through (its spec and table in `settings`).
OpenPipeline = Callable[[PipelineSettings], AbstractContextManager[Pipeline]]


def run_job(
    sources: list[str],
    *,
    spec_arg: str,
    table: str,
    base_config: RunConfig,
    settings: PipelineSettings,
    open_pipeline: OpenPipeline,
    job_dir: Path | None = None,
    resume: bool = False,
    run_id: str | None = None,
    s3_client: Any = None,
    observer: JobObserver | None = None,
    progress: Callable[[int, int, int | None], None] | None = None,
    on_file: Callable[[FileState], None] | None = None,
) -> JobState:
    """Import every file of the job in order; returns the job with each file's counts.

    `base_config` and `settings` are the single-file run's, applied to every
    file with its own source, spec, table, run id, checkpoint and reports.
    A file that cannot be read (a missing object, a bad spec, a header without
    a spec column) ends FAILED and the job goes on; a fatal error of the
    endpoint stops the job (resumable), as Ctrl-C does (`RunInterrupted`).
    """
    job_dir = job_dir or default_job_dir(sources, table, spec_arg, dry_run=settings.dry_run)
    obs: JobObserver = observer or _NoObserver()
    lock = RunLock()
    job_dir.mkdir(parents=True, exist_ok=True)
    lock.take(job_dir / ".lock", f"job {job_dir}")
    try:
        job = _open_job(
            sources,
            spec_arg,
            table,
            job_dir,
            resume=resume,
            run_id=run_id,
            s3_client=s3_client,
        )
        obs.job_started(job)
        job.save()
        specs: dict[str, Spec] = {}
        for f in job.files:
            if f.status == "finished" or (
                f.status == "failed" and (f.summary or {}).get("aborted")
            ):
                continue  # counted; a file stopped by its limits ran to its end already
            try:
                _run_file(
                    job, f, specs, base_config, settings, open_pipeline, obs, progress, s3_client
                )
            except RunInterrupted:
                job.status = "interrupted"
                job.save()
                raise
            if on_file is not None:
                on_file(f)
        job.status = "failed" if any(f.status == "failed" for f in job.files) else "finished"
        job.save()
        obs.job_finished(job)
        return job
    finally:
        lock.release()


def _run_file(
    job: JobState,
    f: FileState,
    specs: dict[str, Spec],
    base_config: RunConfig,
    settings: PipelineSettings,
    open_pipeline: OpenPipeline,
    obs: JobObserver,
    progress: Callable[[int, int, int | None], None] | None,
    s3_client: Any,
) -> None:
    resume = f.status != "pending" and Path(f.checkpoint).is_file()
    if resume and f.status in ("running", "interrupted") and _completed(f):
        job.save()  # killed after the file's last batch, before the job noted it
        obs.file_finished(job, f)
        return
    f.status, f.error = "running", None
    obs.file_started(job, f)
    job.save()

    def tick(rows: int, bytes_read: int, total: int | None) -> None:
        if progress is not None:
            progress(rows, bytes_read, total)
        obs.file_progress(job, f, rows)

    try:
        spec = specs.get(f.spec) or specs.setdefault(f.spec, load_spec(f.spec))
        config = dataclasses.replace(
            base_config,
            source=f.source,
            run_id=f.run_id,
            checkpoint_path=Path(f.checkpoint),
            resume=resume,
            spec_digest=spec_digest(f.spec),
            rejects_path=Path(f.rejects),
            failures_path=Path(f.failures),
            output_dir=None,
        )
        file_settings = dataclasses.replace(settings, spec=spec, table=f.table)
        with open_pipeline(file_settings) as pipeline:
            summary = run_import(config, pipeline=pipeline, progress=tick, s3_client=s3_client)
        f.summary = summary.to_json()
        f.status = "failed" if summary.aborted else "finished"
        f.error = summary.aborted
    except RunInterrupted as exc:
        f.summary = exc.summary.to_json()
        f.status = "interrupted"
        job.save()
        obs.file_finished(job, f)
        raise
    except _FILE_ERRORS as exc:
        f.status, f.error = "failed", str(exc)
    except BaseException as exc:
        f.status, f.error = "failed", str(exc) or type(exc).__name__
        job.status = "failed"
        job.save()
        obs.file_finished(job, f)
        raise
    job.save()
    obs.file_finished(job, f)


def _completed(f: FileState) -> bool:
    """A file whose checkpoint says it finished: counted from the checkpoint, not run again."""
    try:
        cp = Checkpoint.load(Path(f.checkpoint))
    except CheckpointError:
        return False
    if not cp.complete:
        return False
    counts = Counts.total(cp.finished.values())
    summary: dict[str, Any] = counts.counts_json(_COMPLETED)
    summary["batches"] = len(cp.finished)
    summary["status"] = "finished"
    summary["run_id"] = f.run_id
    for key, path in (("rejects_file", f.rejects), ("failures_file", f.failures)):
        summary[key] = path if Path(path).is_file() and Path(path).stat().st_size else None
    f.summary, f.status, f.error = summary, "finished", None
    return True


def checkpoint_rows(f: FileState) -> int:
    """Rows of the file's batches its checkpoint holds (what a running file has settled)."""
    try:
        cp = Checkpoint.load(Path(f.checkpoint))
    except CheckpointError:
        return 0
    return sum(c.rows for c in cp.finished.values())


def reject_lines(job: JobState) -> Iterator[list[str]]:
    """Every rejected row of the job as `file,line,column,value,reason`, in the job's order."""
    import csv

    for f in job.files:
        path = Path(f.rejects)
        if not path.is_file():
            continue
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            next(reader, None)
            for row in reader:
                yield [f.name, *row[:4]]
