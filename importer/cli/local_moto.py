"""`importer local up|down|env|upload`: the embedded AWS stand-in for your own data.

`importer demo` shows the pipeline on generated rows; this is the road from there
to a file of your own.  `up` starts moto's server (a real HTTP endpoint, so the
signed-HTTP writer runs exactly as against AWS) on a loopback port, creates the
MBC command, data and history tables (pk HASH / sk RANGE, strings) and the
bucket the import state machine reads from, and prints the environment that
points boto3, botocore and the writer at it.  After `eval "$(importer local
env)"`, `importer run mydata.csv --spec my.toml --table local-app-master-command`
needs no other flag, for a local file or an `s3://` one.

The stand-in runs in the foreground (Ctrl-C stops it) or, with `--background`,
as a detached child whose pid and state live in `.importer/local/` of the
directory it was started in.  `env`, `upload`, `down` and a second `up` find it
from that directory or any folder below it, as git finds its repository (from
elsewhere: `--from DIR`); `down` stops it and returns once it has exited.  moto
keeps everything in memory: stopping the server forgets the tables and objects.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from importer.dynamodb.region import DEFAULT_REGION
from importer.mbc.model import TABLE_SCHEMA

__all__ = [
    "DEFAULT_BUCKET",
    "DEFAULT_PORT",
    "DEFAULT_PREFIX",
    "DEFAULT_STATE_DIR",
    "LocalStackError",
    "StackState",
    "environment",
    "export_lines",
    "find_state_dir",
    "read_state",
    "register",
    "stand_in",
    "stop_background",
]

#: LocalStack's customary edge port, so existing habits and tools line up.
DEFAULT_PORT = 4566
#: `{env}-{app}-{module}`, as the MBC framework names its tables.
DEFAULT_PREFIX = "local-app-master"
DEFAULT_BUCKET = "importer-local"
DEFAULT_STATE_DIR = Path(".importer") / "local"
#: Credentials moto accepts; never real ones, so nothing secret is ever printed.
DUMMY_KEY_ID = "testing"
DUMMY_SECRET = "testing"
#: The MBC tables of one module and what each holds.
TABLE_SUFFIXES = ("command", "data", "history")

MOTO_MISSING = "the local AWS stand-in needs moto: pip install 'importer[demo]'"
_START_TIMEOUT = 60.0
#: SIGTERM's grace: moto holding millions of items takes a while to let go of them;
#: after it, SIGKILL (everything it holds is in memory and goes either way)
_STOP_GRACE = 30.0
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}\Z")


class LocalStackError(Exception):
    """The stand-in cannot be started, found or stopped; the message says why."""


@dataclass(frozen=True, slots=True)
class StackState:
    """What a running stand-in is: written by the server, read by `env`/`down`."""

    pid: int
    endpoint: str
    region: str
    prefix: str
    bucket: str
    tables: tuple[str, ...]
    background: bool
    log: str | None = None

    @property
    def command_table(self) -> str:
        return self.tables[0]


# ---------------------------------------------------------------------------
# The environment a shell needs
# ---------------------------------------------------------------------------


def environment(endpoint: str, region: str) -> dict[str, str]:
    """The variables that point boto3/botocore (and so importer) at `endpoint`.

    botocore reads `AWS_ENDPOINT_URL` and the per-service `AWS_ENDPOINT_URL_<SERVICE>`
    itself; both are set so a tool that knows only one of them still lands here.
    """
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": DUMMY_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
    }


def export_lines(state: StackState) -> list[str]:
    """Shell lines for `eval`: a profile or session token of a real account would
    override or confuse the dummy keys, so they are unset first."""
    lines = ["unset AWS_PROFILE AWS_SESSION_TOKEN"]
    for name, value in environment(state.endpoint, state.region).items():
        lines.append(f"export {name}={shlex.quote(value)}")
    return lines


def _describe(state: StackState) -> list[str]:
    """Comment lines (so `eval` of the whole output is harmless)."""
    how = f"in the background (pid {state.pid})" if state.background else "in the foreground"
    out = [
        f"# embedded AWS stand-in (moto) on {state.endpoint}, {how}",
        f"# tables: {', '.join(state.tables)} (pk HASH / sk RANGE)",
        f"# bucket: s3://{state.bucket}",
    ]
    if state.log:
        out.append(f"# log: {state.log}")
    out.append('# the environment (again any time with: eval "$(importer local env)"):')
    return out


# ---------------------------------------------------------------------------
# State files
# ---------------------------------------------------------------------------


def _paths(state_dir: Path) -> tuple[Path, Path, Path]:
    return state_dir / "state.json", state_dir / "server.pid", state_dir / "server.log"


def _write_state(state_dir: Path, state: StackState) -> None:
    state_file, pid_file, _ = _paths(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    pid_file.write_text(f"{state.pid}\n", encoding="utf-8")
    os.replace(tmp, state_file)  # last: its presence means "ready"


def _remove_state(state_dir: Path, pid: int) -> None:
    """Remove the files only if they still describe process `pid`."""
    state_file, pid_file, _ = _paths(state_dir)
    current = _load_state_file(state_file)
    if current is not None and current.pid != pid:
        return
    for path in (state_file, pid_file):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _load_state_file(path: Path) -> StackState | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["tables"] = tuple(data["tables"])
        return StackState(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise LocalStackError(f"{path}: not a state file importer wrote ({exc})") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # a recycled pid is someone else's process: not ours to signal
        try:
            text = cmdline.read_bytes()
        except OSError:
            return True
        # empty while the process exits: its memory is gone before its sockets are
        # closed and before it is a zombie, so it still holds the port
        return not text or b"importer" in text
    return True


def read_state(state_dir: Path = DEFAULT_STATE_DIR) -> StackState | None:
    """The running stand-in recorded in `state_dir`, or None (stale files are removed)."""
    state_file, _, _ = _paths(state_dir)
    state = _load_state_file(state_file)
    if state is None:
        return None
    if not _alive(state.pid):
        _remove_state(state_dir, state.pid)
        return None
    return state


def find_state_dir(start: Path | None = None) -> Path | None:
    """The state dir of a running stand-in in `start` or the nearest parent folder.

    So that `env`, `down` and `upload` work from any folder of the project the
    stand-in was started in, not only from that folder itself.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        state_dir = folder / DEFAULT_STATE_DIR
        if (state_dir / "state.json").exists() and read_state(state_dir) is not None:
            return state_dir
    return None


def _state_dir_of(args: argparse.Namespace, *, search: bool = True) -> Path:
    """`--state-dir`, else `--from DIR`'s, else the running one found upward, else ours."""
    if getattr(args, "state_dir", None):
        return Path(args.state_dir)
    if getattr(args, "from_dir", None):
        folder = Path(args.from_dir)
        if not folder.is_dir():
            raise LocalStackError(f"--from {folder}: no such folder")
        return folder / DEFAULT_STATE_DIR
    if search:
        found = find_state_dir()
        if found is not None:
            return found
    return DEFAULT_STATE_DIR


# ---------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------


def _require_moto() -> Any:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise LocalStackError(MOTO_MISSING) from None
    return ThreadedMotoServer


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _pick_port(host: str, port: int | None) -> tuple[int, str | None]:
    """The port to bind (0 = any free one) and a note when the default was taken."""
    if port is None:
        if _port_free(host, DEFAULT_PORT):
            return DEFAULT_PORT, None
        return 0, f"port {DEFAULT_PORT} is in use; using a free port instead"
    if port and not _port_free(host, port):
        raise LocalStackError(f"port {port} on {host} is in use (pick another with --port)")
    return port, None


def _start_server(host: str, port: int) -> Any:
    """A started ThreadedMotoServer.  Its `start()` waits forever when the bind
    fails inside its thread, so it is awaited here with a time limit."""
    import logging

    server_cls = _require_moto()
    if os.environ.get("IMPORTER_LOCAL_PLAIN_MOTO") != "1":  # the baseline, for the benchmark
        from importer.cli.local_store import speed_up

        speed_up()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = server_cls(ip_address=host, port=port, verbose=False)
    starter = threading.Thread(target=server.start, daemon=True)
    starter.start()
    starter.join(timeout=20)
    if starter.is_alive():
        raise LocalStackError(f"the stand-in could not listen on {host}:{port}")
    return server


def _create_resources(endpoint: str, region: str, tables: Sequence[str], bucket: str) -> None:
    import boto3

    session = boto3.Session(
        aws_access_key_id=DUMMY_KEY_ID, aws_secret_access_key=DUMMY_SECRET, region_name=region
    )
    ddb = session.client("dynamodb", endpoint_url=endpoint)
    for name in tables:
        ddb.create_table(TableName=name, **TABLE_SCHEMA)
    s3 = session.client("s3", endpoint_url=endpoint)
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})


def _check_names(prefix: str, bucket: str) -> tuple[str, ...]:
    tables = tuple(f"{prefix}-{suffix}" for suffix in TABLE_SUFFIXES)
    if not _TABLE_NAME.match(tables[0]):
        raise LocalStackError(
            f"--prefix {prefix!r}: table names allow only letters, digits, '_', '-' and '.'"
        )
    if not _BUCKET_NAME.match(bucket) or ".." in bucket:
        raise LocalStackError(
            f"--bucket {bucket!r}: S3 bucket names are 3-63 characters of a-z, 0-9, '.' and '-'"
        )
    return tables


@contextlib.contextmanager
def stand_in(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    region: str = DEFAULT_REGION,
    prefix: str = DEFAULT_PREFIX,
    bucket: str = DEFAULT_BUCKET,
    in_process: bool = False,
) -> Iterator[StackState]:
    """moto on a loopback port holding one module's MBC tables and a bucket; stopped on exit.

    The one set-up `importer local up` and `importer demo` share.  moto keeps its stores
    per process, not per server: with `in_process` (the demo, whose process goes on
    after it, as in the tests) they are emptied before and after, and the store's
    patches undone; `local up`'s process exits instead, which is quicker than freeing a
    million items one by one.
    """
    from importer.cli import local_store

    tables = _check_names(prefix, bucket)
    server = _start_server(host, port)
    try:
        real_host, real_port = server.get_host_and_port()
        endpoint = f"http://{real_host}:{real_port}"
        if in_process:
            _empty_stores()
        _create_resources(endpoint, region, tables, bucket)
        yield StackState(
            pid=os.getpid(),
            endpoint=endpoint,
            region=region,
            prefix=prefix,
            bucket=bucket,
            tables=tables,
            background=False,
        )
    finally:
        try:
            server.stop()
        finally:
            if in_process:
                _empty_stores()
                local_store.restore()


def _empty_stores() -> None:
    """Forget every table and object moto holds in this process (all its servers share them)."""
    from moto.backends import get_backend

    for service in ("dynamodb", "s3"):
        get_backend(service).reset()


def serve(
    *,
    host: str,
    port: int | None,
    region: str,
    prefix: str,
    bucket: str,
    state_dir: Path,
    background: bool,
    ready: Any = None,
) -> int:
    """Run the stand-in until SIGTERM or Ctrl-C; `ready(state)` is called once it is up."""
    _check_names(prefix, bucket)
    _require_moto()
    bind_port, _ = _pick_port(host, port)  # `up` has said so when 4566 was taken
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # A shell starts background jobs with SIGINT ignored; Ctrl-C must still stop us.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    state = None
    try:
        with stand_in(host=host, port=bind_port, region=region, prefix=prefix, bucket=bucket) as up:
            log = str(_paths(state_dir)[2].resolve()) if background else None
            state = replace(up, background=background, log=log)
            _write_state(state_dir, state)
            if ready is not None:
                ready(state)
            while not stop.wait(0.5):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        # the state goes last (the stand-in stopped as the `with` ended): while it
        # stops, a second `down` still finds it
        if state is not None:
            _remove_state(state_dir, state.pid)
    return 0


# ---------------------------------------------------------------------------
# Background child
# ---------------------------------------------------------------------------


def _spawn_background(args: argparse.Namespace, state_dir: Path) -> StackState:
    # fail here, in the user's terminal, not in a log file
    _require_moto()
    _check_names(args.prefix, args.bucket)
    if args.port:
        _pick_port(args.host, args.port)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_file, _, log_path = _paths(state_dir)
    argv = [
        sys.executable,
        "-m",
        "importer.cli.local_moto",
        "--host",
        args.host,
        "--region",
        args.region,
        "--prefix",
        args.prefix,
        "--bucket",
        args.bucket,
        "--state-dir",
        str(state_dir.resolve()),
    ]
    if args.port is not None:
        argv += ["--port", str(args.port)]
    with open(log_path, "ab") as log:
        child = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # survives the terminal; Ctrl-C there does not reach it
            cwd=os.getcwd(),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        state = _load_state_file(state_file)
        if state is not None and state.pid == child.pid:
            return state
        if child.poll() is not None:
            raise LocalStackError(
                f"the stand-in stopped while starting (exit {child.returncode}): "
                f"{_last_line(log_path).removeprefix('importer local: error: ')}"
            )
        time.sleep(0.1)
    child.terminate()
    raise LocalStackError(f"the stand-in did not come up in {_START_TIMEOUT:.0f}s; see {log_path}")


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def _exited(pid: int) -> bool:
    """Gone, or a zombie nobody reaped yet (it holds no memory and no port)."""
    if not _alive(pid):
        return True
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _wait_exit(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not _exited(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_background(
    state_dir: Path = DEFAULT_STATE_DIR, *, grace: float = _STOP_GRACE
) -> StackState | None:
    """Stop the stand-in recorded in `state_dir` and return once it has exited.

    SIGTERM first; a stand-in still busy after `grace` seconds is killed (what
    it holds lives in memory and is lost either way), so `down` never returns
    while the process lives on.  None when none was running.
    """
    state = read_state(state_dir)
    if state is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGTERM)
    if not _wait_exit(state.pid, grace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGKILL)
        if not _wait_exit(state.pid, 30.0):
            raise LocalStackError(f"the stand-in (pid {state.pid}) did not stop, even killed")
    _remove_state(state_dir, state.pid)
    return state


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def _fail(exc: Exception) -> int:
    print(f"importer local: error: {exc}", file=sys.stderr)
    return 1


def _not_running(state_dir: Path) -> str:
    where = (
        "in this folder or a parent"
        if state_dir == DEFAULT_STATE_DIR
        else f"in {state_dir.parent.parent}"
    )
    text = f"no local stand-in is running {where}"
    if not _port_free("127.0.0.1", DEFAULT_PORT):
        text += (
            f"; something listens on port {DEFAULT_PORT} (a stand-in started in another "
            "folder? use it with --from DIR)"
        )
    return text + "; start one with: importer local up --background"


def _cmd_up(args: argparse.Namespace) -> int:
    try:
        running_dir = _state_dir_of(args)
        running = read_state(running_dir)
        if running is not None:
            folder = running_dir.resolve().parent.parent
            print(
                f"importer local: already running on {running.endpoint} (pid {running.pid}), "
                f'started in {folder}; its environment: eval "$(importer local env)"; '
                "stop it: importer local down",
                file=sys.stderr,
            )
            return 1
        state_dir = _state_dir_of(args, search=False)
        if args.port is None and not _port_free(args.host, DEFAULT_PORT):
            print(
                f"importer local: note: port {DEFAULT_PORT} is in use (a stand-in started in "
                "another folder? `importer local env --from DIR` uses that one); this one "
                "listens on a free port instead",
                file=sys.stderr,
            )
        if args.background:
            state = _spawn_background(args, state_dir)
            print("\n".join(_describe(state) + export_lines(state)), flush=True)
            print("# stop it with: importer local down", flush=True)
            return 0

        def ready(state: StackState) -> None:
            print("\n".join(_describe(state) + export_lines(state)), flush=True)
            print("# Ctrl-C (or `importer local down`) stops it", flush=True)

        return serve(
            host=args.host,
            port=args.port,
            region=args.region,
            prefix=args.prefix,
            bucket=args.bucket,
            state_dir=state_dir,
            background=False,
            ready=ready,
        )
    except LocalStackError as exc:
        return _fail(exc)


def _cmd_down(args: argparse.Namespace) -> int:
    try:
        state_dir = _state_dir_of(args)
        state = stop_background(state_dir)
    except LocalStackError as exc:
        return _fail(exc)
    if state is None:
        print(f"importer local: nothing to stop ({_not_running(state_dir)})", file=sys.stderr)
        return 0
    print(f"stopped the stand-in on {state.endpoint} (pid {state.pid}); its data is gone")
    return 0


def _running_state(state_dir: Path) -> StackState:
    """The stand-in started from this directory, or a LocalStackError saying it is not running."""
    state = read_state(state_dir)
    if state is None:
        raise LocalStackError(_not_running(state_dir))
    return state


def _cmd_env(args: argparse.Namespace) -> int:
    try:
        state = _running_state(_state_dir_of(args))
    except LocalStackError as exc:
        return _fail(exc)
    print("\n".join(export_lines(state)))
    return 0


def _cmd_upload(args: argparse.Namespace) -> int:
    """Put a local file into the stand-in's bucket, so `run s3://...` can be tried."""
    try:
        state = _running_state(_state_dir_of(args))
        path = Path(args.file)
        if not path.is_file():
            raise LocalStackError(f"{path}: no such file")
        key = args.key or path.name
        import boto3

        session = boto3.Session(
            aws_access_key_id=DUMMY_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET,
            region_name=state.region,
        )
        session.client("s3", endpoint_url=state.endpoint).upload_file(str(path), state.bucket, key)
    except LocalStackError as exc:
        return _fail(exc)
    print(f"s3://{state.bucket}/{key}")
    return 0


def _add_up_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        metavar="N",
        help=f"port to listen on (default {DEFAULT_PORT}, or a free one if taken; 0: a free one)",
    )
    parser.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help=f"tables PREFIX-command, -data, -history (default {DEFAULT_PREFIX})",
    )
    parser.add_argument(
        "--bucket", default=DEFAULT_BUCKET, help=f"bucket to create (default {DEFAULT_BUCKET})"
    )
    parser.add_argument(
        "--region", default=DEFAULT_REGION, help=f"region to create them in ({DEFAULT_REGION})"
    )


def _add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="from_dir",
        default=None,
        metavar="DIR",
        help="the folder `local up` ran in (default: this folder or the nearest parent "
        "where one runs)",
    )
    parser.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help=f"where the pid and state files live (default DIR/{DEFAULT_STATE_DIR})",
    )


def register(subparsers: Any) -> None:
    """Add ``importer local up|down|env|upload`` to the ``importer`` CLI."""
    local = subparsers.add_parser(
        "local", help="a local AWS stand-in (moto) with the MBC tables, for your own data"
    )
    actions = local.add_subparsers(dest="local_command", required=True, metavar="ACTION")
    up = actions.add_parser(
        "up", help="start it, create the tables and bucket, print the environment"
    )
    _add_up_options(up)
    up.add_argument(
        "--background", action="store_true", help="detach; stop it later with `importer local down`"
    )
    _add_state_dir(up)
    up.set_defaults(func=_cmd_up)

    down = actions.add_parser("down", help="stop the background stand-in")
    _add_state_dir(down)
    down.set_defaults(func=_cmd_down)

    env = actions.add_parser(
        "env", help='print the running stand-in\'s environment: eval "$(importer local env)"'
    )
    _add_state_dir(env)
    env.set_defaults(func=_cmd_env)

    upload = actions.add_parser(
        "upload", help="put a file into the stand-in's bucket; prints the s3:// URI"
    )
    upload.add_argument("file", help="local file")
    upload.add_argument("--key", default=None, help="object key (default: the file's name)")
    _add_state_dir(upload)
    upload.set_defaults(func=_cmd_upload)


def _child_main(argv: Sequence[str] | None = None) -> int:
    """The detached server `up --background` starts (python -m importer.cli.local_moto)."""
    parser = argparse.ArgumentParser(prog="importer-local-server")
    _add_up_options(parser)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args(argv)
    try:
        return serve(
            host=args.host,
            port=args.port,
            region=args.region,
            prefix=args.prefix,
            bucket=args.bucket,
            state_dir=Path(args.state_dir),
            background=True,
        )
    except LocalStackError as exc:
        print(f"importer local: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    code = _child_main()
    sys.stdout.flush()
    sys.stderr.flush()
    # no interpreter teardown: freeing a million stored items one by one took minutes
    # after the server had stopped; the state file is gone already, so exit now
    os._exit(code)
