"""The `importer` console script.

Exit codes (the README's "Exit codes" table says the same): 0 the table holds
what the file says -- every row written, unchanged, or (insert mode) stored
already, so an idempotent re-run exits 0; 3 the run finished with rows that
need a look (bad data, duplicates, strict-mode conflicts, failed writes);
1 a fatal error (one line on stderr, a traceback only with `--debug`); 2 a
usage error; 130 interrupted (resume with `--resume`); 141 the reader of our
output went away (`| head`).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from importer import __version__
from importer.cli.console import Progress, print_summary
from importer.cli.exit_codes import (
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_PIPE,
    EXIT_USAGE,
    exit_code,
)
from importer.cli.options import add_batch_options, add_reader_options, batch_limits
from importer.dynamodb.request_pool import DEFAULT_WORKERS
from importer.modes.stage import DEFAULT_MODE, MODES, mode_of

__all__ = ["main", "EXIT_OK", "EXIT_FATAL", "EXIT_USAGE", "EXIT_PARTIAL", "exit_code"]


def _report_path(source: str, given: str | None, suffix: str) -> Path:
    if given:
        return Path(given)
    stem = Path(source.rstrip("/").rsplit("/", 1)[-1]).name
    for ext in (".gz", ".zst", ".zstd", ".csv", ".tsv", ".txt"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
    return Path(f"{stem or 'import'}.{suffix}.csv")


def _add_common(p: argparse.ArgumentParser, *, table_required: bool, table_help: str) -> None:
    """The options `run` and `validate` share; what a user must give is listed first."""
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="CSV, JSON, JSONL or Parquet file, or a manifest: a local path or "
        "s3://bucket/key (.gz/.zst ok, not for Parquet); several sources, a glob, a folder, "
        "an s3://bucket/prefix/ or a .zip make one job of many files",
    )
    p.add_argument("--spec", required=True, help="import spec (TOML, or JSON)")
    p.add_argument(
        "--table", required=table_required, default=None, metavar="TABLE", help=table_help
    )
    add_reader_options(p)
    add_batch_options(p)
    p.add_argument(
        "--rejects",
        metavar="PATH",
        help="rejected rows CSV (default: <source name>.rejects.csv, only if any)",
    )
    p.add_argument("--summary-json", metavar="PATH", help="write the run summary as JSON")
    p.add_argument(
        "--engine",
        choices=("native", "reference"),
        default=None,
        help="transform engine (default native)",
    )
    p.add_argument(
        "--max-rejects",
        type=int,
        default=None,
        metavar="N",
        help="stop the run once more than N rows are rejected",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"requests in flight at once (default {DEFAULT_WORKERS}); a few batches at a time "
        "share them",
    )
    p.add_argument("--region", default=None, help="AWS region (default from the environment)")
    p.add_argument(
        "--endpoint-url",
        default=None,
        metavar="URL",
        help="DynamoDB endpoint (default: AWS_ENDPOINT_URL_DYNAMODB / AWS_ENDPOINT_URL, else "
        "AWS); S3 sources follow AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help=f"{DEFAULT_MODE} (default): entities that exist are reported, not overwritten; "
        "upsert: a new version when changed; strict: conditional transactions; blind: "
        "version 1 as is",
    )
    p.add_argument(
        "--update",
        choices=("merge", "replace"),
        default=None,
        help="upsert/strict on an entity that exists: merge (default, or the spec's [target] "
        "update) deep-merges the row into its latest version, as the framework's import does; "
        "replace writes the row as the whole record",
    )
    p.add_argument(
        "--data-table",
        metavar="NAME",
        help="MBC data table holding current versions (default: TABLE with -command -> -data)",
    )
    p.add_argument(
        "--writer",
        choices=("http", "boto3"),
        default="http",
        help="http: signed wire-JSON requests (fast, default); boto3: reference",
    )
    p.add_argument(
        "--max-wcu",
        type=float,
        default=None,
        metavar="N",
        help="never more than N write units per second (a table serving live traffic); "
        "default: as fast as the table accepts",
    )
    p.add_argument(
        "--max-rcu",
        type=float,
        default=None,
        metavar="N",
        help="never more than N read units per second for the lookups of insert/upsert/strict",
    )
    p.add_argument("--run-id", default=None, help="run id stamped into source/requestId")
    p.add_argument("--quiet", action="store_true", help="no progress, no summary on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


#: Commands `build_parser` defines itself; any other needs the modules that register theirs.
_CORE_COMMANDS = ("run", "validate", "demo", "bench")


def build_parser(*, extensions: bool = True) -> argparse.ArgumentParser:
    """The whole command line; `extensions=False` leaves out the commands other modules add.

    `importer run` does not need the deploy, plan, sync, local and spec modules
    loaded to parse its arguments: importing them is a noticeable part of a short
    run's start.
    """
    parser = argparse.ArgumentParser(
        prog="importer",
        description="Import CSV, JSON, JSON Lines and Parquet rows into DynamoDB as MBC CQRS "
        "command records.",
    )
    parser.add_argument("--version", action="version", version=f"importer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="import a file (CSV, JSON, JSONL, Parquet, a manifest) into a DynamoDB table"
    )
    _add_common(run, table_required=True, table_help="the command table (pk/sk keys)")
    run.add_argument(
        "--failures",
        metavar="PATH",
        help="rows the service refused (default: <source name>.failures.csv)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run of the same source, table and spec",
    )
    run.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="checkpoint file (default: .importer/checkpoints/<source+table>.jsonl)",
    )
    run.add_argument(
        "--output-dir",
        metavar="DIR",
        help="write ResultWriter-style manifest.json, SUCCEEDED_0.json, FAILED_0.json",
    )
    run.add_argument(
        "--tolerated-failure-percentage",
        type=float,
        default=None,
        metavar="P",
        help="fail the run when more than P%% of rows are in failed batches",
    )
    run.add_argument(
        "--tolerated-failure-count",
        type=int,
        default=None,
        metavar="N",
        help="fail the run when more than N rows are in failed batches",
    )
    run.add_argument(
        "--sync",
        action="store_true",
        help="apply the commands to the data and history tables in this run, as the command "
        "state machine would (records marked syncMode SYNC: the stream starts no execution)",
    )
    run.add_argument(
        "--job-dir",
        metavar="DIR",
        help="several files: the job's folder (state, checkpoints, reports; default "
        ".importer/jobs/<digest of sources, table, spec>)",
    )
    run.add_argument(
        "--job-table",
        metavar="NAME",
        default=None,
        help="several files: the MBC import-job table to keep the job's record in (default: "
        "{prefix}import_tmp of TABLE, when it exists; '' for none)",
    )
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser(
        "validate",
        help="everything `run` does but the writes: same modes, duplicates, rejects and counts",
    )
    _add_common(
        validate,
        table_required=False,
        table_help="the command table to check existing entities against (reads only); "
        "without it, rows are only checked against each other",
    )
    validate.set_defaults(func=cmd_validate)

    demo = sub.add_parser("demo", help="zero-setup demo on the embedded AWS stand-in (moto)")
    demo.add_argument("--rows", type=int, default=5000, help="rows to generate (default 5000)")
    demo.add_argument("--workdir", default=None, help="where to put the sample files")
    demo.add_argument(
        "--engine",
        choices=("native", "reference"),
        default=None,
        help="transform engine (default native)",
    )
    demo.add_argument("--debug", action="store_true", help="show tracebacks")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="measure each stage's rows/s on this machine")
    bench.add_argument("--rows", type=int, default=200_000, help="rows to generate (default 200k)")
    bench.add_argument("--json", action="store_true", help="machine-readable output")
    bench.add_argument("--debug", action="store_true", help="show tracebacks")
    bench.set_defaults(func=cmd_bench)

    if not extensions:
        _describe_subcommands(parser)
        return parser
    try:
        from importer.cli import deploy_commands
    except ImportError:
        pass
    else:
        deploy_commands.register(sub)
    from importer.cli import job_plan, local_moto, plan, spec_draft, status, sync_command

    plan.register(sub)
    job_plan.register(sub)
    status.register(sub)
    sync_command.register(sub)
    local_moto.register(sub)
    spec_draft.register(sub)
    _describe_subcommands(parser)
    return parser


def _describe_subcommands(parser: argparse.ArgumentParser) -> None:
    """Each subcommand's `--help` page opens with the line `importer --help` lists for it.

    One rule here, not a `description=` at every `add_parser` (in five modules),
    so a command added later cannot go without one.
    """
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for name, sub in action.choices.items():
            text = helps.get(name)
            if not sub.description and text:
                sub.description = text[0].upper() + text[1:] + "."
            _describe_subcommands(sub)


def _engine_name(args: argparse.Namespace) -> str:
    # native is the default and is required: never a silent fall back to the slow path
    from importer.transform.engines import DEFAULT_ENGINE

    return args.engine or DEFAULT_ENGINE


def _config(args: argparse.Namespace) -> Any:
    from importer.run.checkpoint import default_checkpoint_path, spec_digest
    from importer.run.driver import RunConfig

    items, nbytes = batch_limits(args)

    table = getattr(args, "table", None)
    checkpoint = None
    if table is not None and getattr(args, "resume", None) is not None:
        checkpoint = (
            Path(args.checkpoint)
            if args.checkpoint
            else default_checkpoint_path(args.source, table)
        )
    output_dir = getattr(args, "output_dir", None)
    return RunConfig(
        source=args.source,
        checkpoint_path=checkpoint,
        resume=getattr(args, "resume", False),
        spec_digest=spec_digest(args.spec),
        output_dir=Path(output_dir) if output_dir else None,
        tolerated_failure_percentage=getattr(args, "tolerated_failure_percentage", None),
        tolerated_failure_count=getattr(args, "tolerated_failure_count", None),
        batch_items=items,
        batch_bytes=nbytes,
        rejects_path=_report_path(args.source, args.rejects, "rejects"),
        failures_path=_report_path(args.source, getattr(args, "failures", None), "failures"),
        max_rejects=args.max_rejects,
        run_id=args.run_id,
        input_type=getattr(args, "input_type", None),
        max_items=getattr(args, "max_items", None),
    )


class _UsageError(Exception):
    pass


def _s3_client(args: argparse.Namespace) -> Any:
    sources = getattr(args, "sources", None) or [args.source]
    if not any(s.startswith("s3://") for s in sources):
        return None
    import boto3

    from importer.dynamodb.region import default_region

    return boto3.client("s3", region_name=default_region(args.region))


def _finish(args: argparse.Namespace, summary: Any, *, writing: bool) -> int:
    data = summary.to_json()
    if not args.quiet:
        for notice in summary.notices:
            print(f"importer: note: {notice}", file=sys.stderr)
    if args.summary_json:
        path = Path(args.summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if not args.quiet:
        print_summary(data, writing=writing)
        if data.get("synced"):
            print(f"synced {data['synced']:,} data rows (data and history tables applied)")
    if summary.aborted:
        print(f"importer: error: {summary.aborted}", file=sys.stderr)
        return EXIT_FATAL
    return exit_code(summary)


def _pipeline_settings(args: argparse.Namespace, spec: Any, *, dry_run: bool) -> Any:
    """The run's settings, checked where every entry point's are (`PipelineSettings`):
    a value out of range is a usage error, in the settings' own words."""
    from importer.dynamodb.region import default_region
    from importer.run.pipeline import PipelineSettings, SettingsError

    try:
        return PipelineSettings(
            spec=spec,
            table=args.table,
            mode=mode_of(args.mode),
            data_table=args.data_table,
            update=args.update,
            region=default_region(args.region),
            endpoint_url=args.endpoint_url,
            workers=args.workers,
            writer=args.writer,
            engine=_engine_name(args),
            dry_run=dry_run,
            sync=bool(getattr(args, "sync", False)),
            max_wcu=args.max_wcu,
            max_rcu=args.max_rcu,
        )
    except SettingsError as exc:
        raise _UsageError(str(exc)) from None


def _import(args: argparse.Namespace, *, dry_run: bool) -> int:
    """`run` and `validate`: one pipeline, one driver; validate only leaves out the writes."""
    from importer.run.driver import RunInterrupted, run_import
    from importer.run.job_files import is_multi_source, load_job_manifest
    from importer.run.pipeline import open_pipeline
    from importer.transform.spec import load_spec

    multi = is_multi_source(args.sources)
    args.source = args.sources[0]
    if multi:
        for flag in ("checkpoint", "output_dir", "failures"):
            if getattr(args, flag, None):
                raise _UsageError(
                    f"--{flag.replace('_', '-')} is per file in a job of several files: "
                    "see --job-dir"
                )
        manifest = load_job_manifest(args.spec)
        spec = load_spec(manifest.entries[0].spec if manifest else args.spec)
    else:
        spec = load_spec(args.spec)
    settings = _pipeline_settings(args, spec, dry_run=dry_run)
    config = _config(args)
    if args.summary_json:  # checked before the first write, not found after the import
        from importer.run.reports import probe_writable

        probe_writable(Path(args.summary_json), "summary file")
    progress = Progress(enabled=None if not args.quiet else False)
    if multi:
        from importer.cli.job_run import run_job_command

        outcome = run_job_command(
            args,
            config=config,
            settings=settings,
            s3_client=_s3_client(args),
            progress=progress,
        )
        if outcome.signum is not None:
            return EXIT_INTERRUPTED + outcome.signum - signal.SIGINT
        if outcome.fatal:
            return EXIT_FATAL
        return exit_code(outcome.counts)
    with open_pipeline(settings) as pipeline:
        try:
            summary = run_import(
                config, pipeline=pipeline, progress=progress, s3_client=_s3_client(args)
            )
        except RunInterrupted as exc:
            progress.finish()
            _finish(args, exc.summary, writing=not dry_run)
            how = "terminated (SIGTERM)" if exc.signum == signal.SIGTERM else "interrupted"
            print(
                f"importer: {how} after {exc.summary.rows:,} rows; finished batches are "
                f"checkpointed. Resume with the same command plus --resume",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED + int(exc.signum) - signal.SIGINT  # 130, or 143
        finally:
            progress.finish()
    return _finish(args, summary, writing=not dry_run)


def cmd_run(args: argparse.Namespace) -> int:
    return _import(args, dry_run=False)


def cmd_validate(args: argparse.Namespace) -> int:
    return _import(args, dry_run=True)


def cmd_bench(args: argparse.Namespace) -> int:
    from importer.cli.bench import run_bench

    if args.rows < 1:
        raise _UsageError("--rows must be at least 1")
    return run_bench(args.rows, args.json)


def cmd_demo(args: argparse.Namespace) -> int:
    from importer.cli.demo import run_demo

    return run_demo(cli=main, rows=args.rows, workdir=args.workdir, engine=args.engine)


def _fatal_types() -> tuple[type[BaseException], ...]:
    from importer.dynamodb.errors import WriterFatalError
    from importer.input.batching import BatchLimitError
    from importer.input.source import SourceError
    from importer.run.checkpoint import CheckpointError
    from importer.run.job import JobError
    from importer.transform.context import ContextError
    from importer.transform.engines import EngineError
    from importer.transform.spec import SpecError

    return (
        SpecError,
        SourceError,
        WriterFatalError,
        EngineError,
        BatchLimitError,
        ContextError,
        CheckpointError,
        JobError,
        OSError,
    )


#: glibc's mallopt parameters
_M_ARENA_MAX = -8
#: allocations from this size up are mmapped (and returned on free)
_M_MMAP_THRESHOLD = -3


def _mallopt(param: int, value: int) -> None:
    """glibc's `mallopt`; another libc (musl, macOS) has none: nothing to do."""
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(param, value)
    except (OSError, AttributeError):
        pass


def _bound_malloc_arenas(arenas: int = 2) -> None:
    """Keep memory flat on long runs: cap glibc's malloc arenas before any thread starts.

    glibc gives each thread that contends for the heap an arena of its own, and
    with 50 workers their fragmentation grows with the run, so the peak grows with
    the file; two arenas keep it flat at the same speed (`benchmarks/bench_memory.py`).
    `MALLOC_ARENA_MAX` in the environment, or a libc that is not glibc, is left
    alone.
    """
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    _mallopt(_M_ARENA_MAX, arenas)


def _bound_c_heap(threshold: int = 64 * 1024) -> None:
    """Give the C heap's large buffers back to the system as soon as they are freed.

    Each batch's field bytes (the native reader's `RowBlock`) and its
    transform's buffers are 100-500 KB, made by one thread and freed by
    another.  glibc's default raises its mmap threshold after such frees and
    then carves the buffers out of heaps that fragment, and a long run's peak
    memory creeps up.  A fixed threshold keeps them as mappings, returned as soon
    as they are freed.
    """
    _mallopt(_M_MMAP_THRESHOLD, threshold)


def _relax_cyclic_gc(threshold: int = 10_000) -> None:
    """Look for reference cycles every 10,000 allocations instead of CPython's 700.

    A run keeps up to a hundred batches of rows alive at once (a list and a
    tuple per row), and at the default threshold the collections that walk
    them take a large share of reading and transforming (the benchmarks
    measure it).  Rows hold no reference cycles, so collecting less often costs no memory.
    A threshold the user set higher, or collection turned off, is left alone.
    """
    gen0, gen1, gen2 = gc.get_threshold()
    if 0 < gen0 < threshold:
        gc.set_threshold(threshold, gen1, gen2)


def _printable(exc: BaseException) -> str:
    """An error fit to print: credentials in any URL masked; an OSError names its file."""
    from importer.dynamodb.errors import redact

    text = str(exc)
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {exc.strerror or text}"
    return redact(text)


def _quiet_pipe() -> int:
    """`importer plan --json | head`: the reader left; end as a tool killed by SIGPIPE
    would, without a message (and without Python's own one when stdout is flushed at exit)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_PIPE


def main(argv: list[str] | None = None) -> int:
    _bound_malloc_arenas()
    _relax_cyclic_gc()
    _bound_c_heap()
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(extensions=not words or words[0] not in _CORE_COMMANDS)
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, so a closed pipe is met inside the handlers below
        return code
    except _UsageError as exc:
        parser.error(str(exc))
    except BrokenPipeError:
        return _quiet_pipe()
    except KeyboardInterrupt:
        print("importer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _fatal_types() as exc:
        if debug:
            raise
        print(f"importer: error: {_printable(exc)}", file=sys.stderr)
        return EXIT_FATAL
    except Exception as exc:  # noqa: BLE001 - the promise: one readable line, no traceback
        if debug:
            raise
        print(
            f"importer: error: {type(exc).__name__}: {_printable(exc)} "
            "(run with --debug for details)",
            file=sys.stderr,
        )
        return EXIT_FATAL
    return EXIT_FATAL


if __name__ == "__main__":
    sys.exit(main())
