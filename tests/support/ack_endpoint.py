"""The compiled acknowledging DynamoDB endpoint (ack_server.c), built and run for benchmarks.

Client speed has to be measured against an endpoint that costs the client
nothing: tests/support/ddb_server.py is Python and takes its CPU from the same two
cores as the client it measures.  `ack_server.c` answers every request in a
few microseconds on one thread and stores nothing, so the client sets the pace.

    with AckEndpoint() as ep:            # builds once (cc -O2), cached by source hash
        run_client(ep.endpoint_url)
        assert ep.stats()["items"] == rows   # every PutRequest arrived
    ep.final_stats                        # the counts the server wrote at SIGTERM

The binary is cached in `$IMPORTER_BENCH_CACHE` (default
`~/.cache/importer-bench`) under a name that carries the hash of the source
and the compiler command, so an edited server is rebuilt and an unchanged one
is not.  Without a C compiler, `AckServerUnavailable` says so in one line.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "SOURCE",
    "AckEndpoint",
    "AckServerUnavailable",
    "build_ack_server",
    "cache_dir",
]

SOURCE = Path(__file__).resolve().with_name("ack_server.c")
CFLAGS = ["-O2", "-std=gnu11", "-Wall"]


class AckServerUnavailable(RuntimeError):
    """The server cannot be built or started here (no C compiler, build error, bad start)."""


def cache_dir() -> Path:
    """Where built helpers live (`$IMPORTER_BENCH_CACHE`, else ~/.cache/importer-bench)."""
    env = os.environ.get("IMPORTER_BENCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "importer-bench"


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return cc
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    return None


def build_ack_server(directory: Path | None = None) -> Path:
    """Compile ack_server.c with `cc -O2` unless a build of this exact source exists.

    Returns the binary's path; raises AckServerUnavailable with a one-line reason.
    """
    cc = _compiler()
    if cc is None:
        raise AckServerUnavailable(
            "no C compiler (cc, gcc or clang) to build tests/support/ack_server.c: "
            "install one (e.g. apt-get install gcc) or set CC"
        )
    if not SOURCE.is_file():
        raise AckServerUnavailable(f"missing source {SOURCE}")
    cmd = [*shlex.split(cc), *CFLAGS]
    digest = hashlib.sha256(SOURCE.read_bytes() + repr(cmd).encode()).hexdigest()[:16]
    out_dir = directory or cache_dir()
    out = out_dir / f"ack_server-{digest}"
    if out.is_file() and os.access(out, os.X_OK):
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ack_server-", dir=out_dir)
    os.close(fd)
    try:
        done = subprocess.run(
            [*cmd, "-o", tmp, str(SOURCE)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise AckServerUnavailable(
                f"{cc} failed to build {SOURCE.name}: {detail[0] if detail else done.returncode}"
            )
        os.replace(tmp, out)  # atomic: a concurrent build never runs a half-written file
    except FileNotFoundError as exc:
        raise AckServerUnavailable(f"cannot run the C compiler {cc!r}: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


class AckEndpoint:
    """ack_server in a child process on a free loopback port (a context manager)."""

    def __init__(
        self, *, port: int = 0, binary: Path | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.requested_port = port
        self.binary = binary
        self.extra_args = tuple(extra_args)  # e.g. ("--sndbuf", "4096") in tests
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.final_stats: dict[str, int] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    # ------------------------------------------------------------------ life

    def start(self) -> AckEndpoint:
        binary = self.binary or build_ack_server()
        self._dir = tempfile.TemporaryDirectory(prefix="ack-endpoint-")
        self.final_stats = None
        self.proc = subprocess.Popen(
            [
                str(binary),
                "--port",
                str(self.requested_port),
                "--stats",
                self._stats_path,
                *self.extra_args,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            raise AckServerUnavailable(f"ack_server did not start (first line {line!r})")
        self.port = int(line)
        return self

    def stop(self) -> dict[str, int]:
        """SIGTERM the server; returns (and keeps in `final_stats`) the counts it wrote."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None
            try:
                with open(self._stats_path, encoding="utf-8") as fh:
                    self.final_stats = json.load(fh)
            except (OSError, ValueError):
                self.final_stats = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        return self.final_stats or {}

    def __enter__(self) -> AckEndpoint:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ facts

    @property
    def _stats_path(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir.name, "stats.json")

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stats(self) -> dict[str, int]:
        """The live counters (GET /stats), or the final ones once stopped.

        Keys: requests, items (PutRequests), BatchWriteItem, BatchGetItem,
        DescribeTable, TransactWriteItems, Scan, GetItem, unknown, bad_http, connections,
        bytes_in.
        """
        if self.proc is None:
            return dict(self.final_stats or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/stats")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def cpu_seconds(self) -> float:
        """user+system CPU the server has used so far (Linux /proc): proof it cost little."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
