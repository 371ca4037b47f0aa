"""`importer run` with several sources: one job, one line per file, one summary.

The single-file options apply to every file; what is per file (checkpoint,
rejects, failures) lives in the job's folder (`--job-dir`, default
`.importer/jobs/<digest of sources, table, spec>`).  The rejects of all files
are also gathered in one CSV (`--rejects`, default `<job dir>/rejects.csv`)
whose first column names the file: `file,line,column,value,reason`.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from importer.counts import Counts
from importer.mbc.import_job import file_outcome

__all__ = ["JobOutcome", "run_job_command"]


def _file_line(f: Any, count: int) -> str:
    s = f.summary or {}
    head = f"[{f.index + 1:>{len(str(count))}}/{count}] {f.name}"
    if f.status == "failed" and not s:
        return f"{head}  FAILED  {f.error}"
    text = (
        f"{head}  rows {s.get('rows', 0):,}  "
        + (
            f"would write {s['would_write']:,}"
            if s.get("would_write")
            else f"written {s.get('written', 0):,}"
        )
        + (f"  unchanged {s['unchanged']:,}" if s.get("unchanged") else "")
        + f"  rejected {s.get('rejected', 0):,}"
        + (f" (exist {s['existing']:,})" if s.get("existing") else "")
        + f"  failed {s.get('failed', 0):,}"
    )
    if f.status == "interrupted":
        text += "  INTERRUPTED"
    else:
        text += f"  {file_outcome(s) if f.status == 'finished' else 'FAILED'}"
    if f.error:
        text += f"  ({f.error})"
    if s.get("rejects_file"):
        text += f"  rejects: {s['rejects_file']}"
    if s.get("failures_file"):
        text += f"  failures: {s['failures_file']}"
    return text


def _job_line(job: Any) -> str:
    t = job.totals()
    outcomes = [
        file_outcome(f.summary) if f.status == "finished" else f.status.upper() for f in job.files
    ]
    done = sum(1 for o in outcomes if o == "COMPLETED")
    return (
        f"job {job.id}: {t['file_count']} files ({done} COMPLETED, "
        f"{sum(1 for o in outcomes if o == 'FAILED')} FAILED"
        + (f", {t['files_pending']} not run" if t["files_pending"] else "")
        + f")  rows {t['rows']:,}  "
        + (f"would write {t['would_write']:,}" if t["would_write"] else f"written {t['written']:,}")
        + (f"  unchanged {t['unchanged']:,}" if t["unchanged"] else "")
        + f"  rejected {t['rejected']:,}"
        + (f" (of which {t['existing']:,} exist already)" if t["existing"] else "")
        + f"  failed {t['failed']:,}"
    )


def _write_rejects(job: Any, path: Path) -> int:
    from importer.run.job import reject_lines

    rows = list(reject_lines(job))
    if not rows:
        if path.exists():
            path.unlink()
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["file", "line", "column", "value", "reason"])
        out.writerows(rows)
    return len(rows)


def run_job_command(
    args: argparse.Namespace, *, config: Any, settings: Any, s3_client: Any, progress: Any
) -> JobOutcome:
    """Run the job the arguments describe and print it; return how it ended.

    `importer.cli.main` turns that into the exit code (the one place they are decided).
    """
    from importer.run.driver import RunInterrupted
    from importer.run.job import default_job_dir, load_job, run_job
    from importer.run.pipeline import open_pipeline

    sources = list(args.sources)
    job_dir = (
        Path(args.job_dir)
        if getattr(args, "job_dir", None)
        else default_job_dir(sources, args.table, args.spec, dry_run=settings.dry_run)
    )
    writing = not settings.dry_run
    observer = None
    if writing:
        from importer.mbc.import_job import open_recorder

        observer, note = open_recorder(
            args.table,
            tenant_template=settings.spec.record.tenant.source,
            table=getattr(args, "job_table", None),
            region=settings.region,
            endpoint_url=args.endpoint_url,
        )
        if not args.quiet:
            print(f"importer: note: {note}", file=sys.stderr)
    total_files: list[int] = [0]

    def on_file(f: Any) -> None:
        if not args.quiet:
            progress.finish()
            print(_file_line(f, total_files[0]), flush=True)

    class _Counting:
        """Learns the file count when the job starts (for the `[n/N]` prefix)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(observer, name) if observer is not None else (lambda *a: None)

        def job_started(self, job: Any) -> None:
            total_files[0] = len(job.files)
            if observer is not None:
                observer.job_started(job)

    interrupted: RunInterrupted | None = None
    try:
        job = run_job(
            sources,
            spec_arg=args.spec,
            table=args.table,
            base_config=config,
            settings=settings,
            open_pipeline=open_pipeline,
            job_dir=job_dir,
            resume=bool(getattr(args, "resume", False)),
            run_id=args.run_id,
            s3_client=s3_client,
            observer=_Counting(),
            progress=progress,
            on_file=on_file,
        )
    except RunInterrupted as exc:
        interrupted = exc
        job = load_job(job_dir)
        for f in job.files:
            if f.status == "interrupted":
                on_file(f)
    finally:
        progress.finish()
    rejects_path = Path(args.rejects) if args.rejects else job_dir / "rejects.csv"
    gathered = _write_rejects(job, rejects_path)
    totals = job.totals()
    if args.summary_json:
        path = Path(args.summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            **totals,
            "job_dir": str(job_dir),
            "rejects_file": str(rejects_path) if gathered else None,
            "files": [
                {
                    "name": f.name,
                    "status": f.status,
                    "outcome": file_outcome(f.summary) if f.status == "finished" else None,
                    "error": f.error,
                    **{k: (f.summary or {}).get(k, 0) for k in _COUNTS},
                    "rejects_file": (f.summary or {}).get("rejects_file"),
                }
                for f in job.files
            ],
        }
        path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if not args.quiet:
        print(_job_line(job))
        if gathered:
            print(f"rejected rows of every file ({gathered:,}): {rejects_path}")
    if interrupted is not None:
        print(
            f"importer: interrupted in {sum(1 for f in job.files if f.status == 'finished')} "
            f"of {len(job.files)} files; finished batches are checkpointed. Resume with the "
            "same command plus --resume",
            file=sys.stderr,
        )
        return JobOutcome(signum=int(interrupted.signum))
    failed = [f for f in job.files if f.status == "failed"]
    for f in failed:
        print(f"importer: error: {f.name}: {f.error}", file=sys.stderr)
    return JobOutcome(fatal=bool(failed), counts=job.counts())


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """How a job ended: a file that could not be imported, a signal, or its counts (which
    the exit rule reads, as it reads one file's)."""

    fatal: bool = False
    signum: int | None = None
    counts: Counts = field(default_factory=Counts)


_COUNTS = ("rows", "written", "unchanged", "rejected", "existing", "failed")
