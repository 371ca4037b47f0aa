"""Whole-process clients for the side-by-side and memory benchmarks.

Every tool is run as its own process and timed from spawn to exit (interpreter
start and imports included: that is what a user waits for), with its CPU time
and peak RSS taken from the kernel (`wait4`), against the acknowledging
endpoint (ack_endpoint.py).  The input is importer.cli.bench's generated 10-column
products file, all rows valid, so every tool has exactly N items to deliver.

ddbimport (the Go peer, a-h/ddbimport) is used when it is installed or can be
built here from the copy under shared/peers; its code is never copied into
this repository.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.ack_endpoint import cache_dir

__all__ = [
    "BOTO3_SCRIPT",
    "REGION",
    "ROOT",
    "before_tree",
    "TABLE",
    "Measured",
    "client_env",
    "ddbimport_cmd",
    "find_ddbimport",
    "importer_cmd",
    "run_measured",
    "save_report",
    "write_products",
]

ROOT = Path(__file__).resolve().parent.parent
TABLE = "bench-command"
REGION = "us-east-1"

#: The script most people write first: csv.DictReader + Table.batch_writer(), building the
#: same MBC command record importer writes (typed attributes, empty cells left out).
BOTO3_SCRIPT = """\
import csv
import sys
from datetime import datetime, timezone
from decimal import Decimal

import boto3

TRUE = {"true", "yes", "1"}


def main(path, endpoint_url, table_name):
    table = boto3.resource("dynamodb", endpoint_url=endpoint_url).Table(table_name)
    now = datetime.now(timezone.utc).isoformat()
    with open(path, newline="", encoding="utf-8") as fh, table.batch_writer() as bw:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            attrs = {k: row[k] for k in ("sku", "name", "category", "color", "notes",
                                         "released") if row[k] != ""}
            for k in ("price", "weight"):
                if row[k] != "":
                    attrs[k] = Decimal(row[k])
            if row["qty"] != "":
                attrs["qty"] = int(row["qty"])
            if row["active"] != "":
                attrs["active"] = row["active"].lower() in TRUE
            pk, sku = "PRODUCT#acme", row["sku"]
            bw.put_item(Item={
                "pk": pk, "sk": f"PRODUCT#{sku}@1", "id": f"{pk}#PRODUCT#{sku}",
                "code": sku, "name": row["name"], "type": "PRODUCT", "tenantCode": "acme",
                "version": 1, "attributes": attrs, "source": path,
                "requestId": f"script#{line}", "createdAt": now, "updatedAt": now,
                "createdBy": "script", "updatedBy": "script",
            })


if __name__ == "__main__":
    main(*sys.argv[1:4])
"""


def write_products(directory: Path, rows: int) -> tuple[Path, Path, Path]:
    """products.csv (N valid rows), its spec (JSON) and products-keys.csv for ddbimport.

    ddbimport writes each CSV row as it is, so its file carries the table's keys
    as its first two columns (pk, sk as importer derives them); building that
    file is not timed.
    """
    from importer.cli.bench import BENCH_SPEC, generate_csv

    directory.mkdir(parents=True, exist_ok=True)
    data = generate_csv(rows, bad_every=0)
    products = directory / "products.csv"
    products.write_bytes(data)
    spec = directory / "products.spec.json"
    spec.write_text(json.dumps(BENCH_SPEC), encoding="utf-8")
    keyed = directory / "products-keys.csv"
    with (
        open(products, newline="", encoding="utf-8") as fi,
        open(keyed, "w", newline="", encoding="utf-8") as fo,
    ):
        reader = csv.reader(fi)
        writer = csv.writer(fo, lineterminator="\n")
        header = next(reader)
        sku = header.index("sku")
        writer.writerow(["pk", "sk", *header])
        for row in reader:
            writer.writerow(["PRODUCT#acme", f"PRODUCT#{row[sku]}@1", *row])
    return products, spec, keyed


def before_tree() -> tuple[Path | None, str]:
    """(the "before" checkout, "") from IMPORTER_BENCH_BEFORE, or (None, why not).

    Why: a change on the hot path is judged against the code before it, measured in the
    same run (absolute rows/s drift with the machine's load).  The tree must be another
    checkout of this repository with its compiled cores built in place
    (`python setup.py build_ext --inplace`): its `importer` is then what
    `python -m importer.cli.main` imports when the tree leads PYTHONPATH.
    """
    env = os.environ.get("IMPORTER_BENCH_BEFORE")
    if not env:
        return None, "IMPORTER_BENCH_BEFORE is not set"
    tree = Path(env).resolve()
    if not (tree / "importer" / "__init__.py").is_file():
        return None, f"IMPORTER_BENCH_BEFORE={env} holds no importer/ package"
    if not list((tree / "importer").glob("_native*.so")):
        return None, (
            f"IMPORTER_BENCH_BEFORE={env} has no compiled core in place "
            "(run `python setup.py build_ext --inplace` there)"
        )
    return tree, ""


def client_env(endpoint_url: str, tree: Path | None = None) -> dict[str, str]:
    """The environment every client runs in: dummy credentials, the endpoint, this checkout
    (or `tree`, another checkout of it: the importer rows' "before" runs)."""
    env = os.environ.copy()
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        env.pop(var, None)
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        AWS_ENDPOINT_URL=endpoint_url,
        DDBIMPORT_ENDPOINT_URL=endpoint_url,
        AWS_EC2_METADATA_DISABLED="true",
    )
    first = str(tree if tree is not None else ROOT)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (first, env.get("PYTHONPATH")) if p)
    # as an installed tool runs: with its bytecode cached.  This machine sets
    # PYTHONDONTWRITEBYTECODE=1, which makes every Python client (importer and the
    # boto3 script alike) compile its sources again on each start (~0.1 s each).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def importer_cmd(
    csv_path: Path, spec: Path, endpoint_url: str, mode: str | None, workdir: Path, tag: str
) -> list[str]:
    """`importer run` as a user types it (mode None: the default mode)."""
    checkpoint = workdir / f"checkpoint-{tag}.jsonl"
    checkpoint.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "importer.cli.main",
        "run",
        str(csv_path),
        "--spec",
        str(spec),
        "--table",
        TABLE,
        "--endpoint-url",
        endpoint_url,
        "--region",
        REGION,
        "--quiet",
        "--summary-json",
        str(workdir / f"summary-{tag}.json"),
        "--checkpoint",
        str(checkpoint),
    ]
    return cmd + (["--mode", mode] if mode else [])


def ddbimport_cmd(binary: Path, keyed_csv: Path, concurrency: int) -> list[str]:
    return [
        str(binary),
        "-inputFile",
        str(keyed_csv),
        "-delimiter",
        "comma",
        "-tableRegion",
        REGION,
        "-tableName",
        TABLE,
        "-concurrency",
        str(concurrency),
        "-numericFields",
        "qty,price,weight",
        "-booleanFields",
        "active",
    ]


@dataclass
class Measured:
    """One whole process: wall seconds, user+system CPU seconds, peak RSS, exit code."""

    seconds: float
    cpu_seconds: float
    max_rss_kb: int
    returncode: int
    stdout: str
    stderr: str

    def tail(self) -> str:
        """The last lines of stderr/stdout, for a failure message."""
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return " | ".join(text[-5:])


#: Runs argv[3:] and writes its wall time, CPU and peak RSS as JSON to argv[1]; kills it after
#: argv[2] seconds.  Why a launcher: Linux carries a process's RSS high-water mark across fork
#: and exec, so a tool spawned straight from this (large) pytest process would report at
#: least pytest's own RSS.  Spawned from this small, freshly started interpreter, the floor is
#: the launcher's ~10 MB, well under any measured tool.
_LAUNCHER = """\
import json, math, os, signal, sys, time
out, limit, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
t0 = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
signal.alarm(max(1, math.ceil(limit)))
_, status, ru = os.wait4(pid, 0)
seconds = time.perf_counter() - t0
with open(out, "w") as fh:
    json.dump({"seconds": seconds, "cpu": ru.ru_utime + ru.ru_stime, "rss_kb": ru.ru_maxrss,
               "rc": os.waitstatus_to_exitcode(status)}, fh)
"""


def run_measured(
    cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 1800.0
) -> Measured:
    """Run `cmd` to its end: wall time from spawn to exit, its own CPU time and peak RSS.

    Measured by a small launcher process (see _LAUNCHER) so the peak RSS is the
    tool's, not inherited from pytest.
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory(prefix="measured-") as tmp,
    ):
        report = os.path.join(tmp, "measured.json")
        launcher = [sys.executable, "-S", "-E", "-c", _LAUNCHER, report, str(timeout), *cmd]
        done = subprocess.run(launcher, env=env, cwd=cwd, stdout=out, stderr=err, check=False)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
        try:
            with open(report, encoding="utf-8") as fh:
                facts = json.load(fh)
        except (OSError, ValueError):
            raise RuntimeError(
                f"could not run {cmd[0]} (launcher exit {done.returncode}): {stderr.strip()[-300:]}"
            ) from None
    return Measured(
        seconds=facts["seconds"],
        cpu_seconds=facts["cpu"],
        max_rss_kb=facts["rss_kb"],
        returncode=facts["rc"],
        stdout=stdout,
        stderr=stderr,
    )


# --------------------------------------------------------------------------- ddbimport


def _peers_dir() -> Path:
    env = os.environ.get("IMPORTER_PEERS_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "peers"


def _tree_hash(directory: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def find_ddbimport(*, allow_build: bool = True) -> tuple[Path | None, str]:
    """(binary, "") when ddbimport can run here, else (None, the reason in one line).

    Looks at $IMPORTER_BENCH_DDBIMPORT, then `ddbimport` on PATH, then a cached
    build of shared/peers/ddbimport; builds that copy (Go in GOPATH mode with
    Debian's Go libraries, as shared/peers/build-ddbimport.sh does) when the
    toolchain is installed.  Set IMPORTER_BENCH_BUILD_PEERS=0 to never build.
    """
    env = os.environ.get("IMPORTER_BENCH_DDBIMPORT")
    if env:
        path = Path(env)
        if path.is_file() and os.access(path, os.X_OK):
            return path, ""
        return None, f"IMPORTER_BENCH_DDBIMPORT={env} is not an executable file"
    found = shutil.which("ddbimport")
    if found:
        return Path(found), ""
    src = _peers_dir() / "ddbimport"
    if not (src / "cmd" / "main.go").is_file():
        return None, (
            f"ddbimport is not installed and its source is not at {src} "
            "(set IMPORTER_BENCH_DDBIMPORT to a built binary)"
        )
    out = cache_dir() / f"ddbimport-{_tree_hash(src)}"
    if out.is_file() and os.access(out, os.X_OK):
        return out, ""
    if not allow_build or os.environ.get("IMPORTER_BENCH_BUILD_PEERS") == "0":
        return None, "ddbimport is not built and building is off (IMPORTER_BENCH_BUILD_PEERS=0)"
    sdk = Path("/usr/share/gocode/src/github.com/aws/aws-sdk-go")
    if not shutil.which("go") or not sdk.is_dir():
        return None, (
            "ddbimport is not installed and cannot be built here: no Go toolchain with Debian's "
            "Go libraries (apt-get install golang-go golang-github-aws-aws-sdk-go-dev "
            "golang-go.uber-zap-dev golang-github-google-uuid-dev "
            "golang-github-rakyll-statik-dev, then rerun: the benchmark builds it)"
        )
    try:
        _build_ddbimport(src, out)
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        return None, f"ddbimport failed to build: {exc}"
    return out, ""


def _build_ddbimport(src: Path, out: Path) -> None:
    """GOPATH-mode build of the vendored peer into `out` (the repository keeps none of it)."""
    with tempfile.TemporaryDirectory(prefix="ddbimport-gopath-") as gp:
        pkg = Path(gp) / "src" / "github.com" / "a-h" / "ddbimport"
        shutil.copytree(src, pkg)
        for path in [pkg, *pkg.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)  # the shared copy is read-only
        statik = pkg / "sls" / "statik" / "statik.go"
        patch = pkg / "LOCAL-PATCH.diff"
        if not statik.is_file() and patch.is_file():
            # The peer's own build stub (in its LOCAL-PATCH.diff) for a package `-install` needs.
            subprocess.run(
                ["git", "apply", "--include=sls/statik/*", str(patch)],
                cwd=pkg,
                check=True,
                capture_output=True,
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        env = dict(
            os.environ,
            GO111MODULE="off",
            GOPATH=f"{gp}:/usr/share/gocode",
            GOCACHE=str(cache_dir() / "gocache"),
        )
        done = subprocess.run(
            ["go", "build", "-o", str(tmp), "github.com/a-h/ddbimport/cmd"],
            cwd=pkg,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(lines[0] if lines else f"go build exit {done.returncode}")
        os.replace(tmp, out)


# --------------------------------------------------------------------------- reports


def save_report(name: str, report: dict) -> Path:
    """Write `report` as JSON under .benchmarks/ (gitignored); returns the path."""
    directory = ROOT / ".benchmarks"
    directory.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = directory / f"{name}-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path
