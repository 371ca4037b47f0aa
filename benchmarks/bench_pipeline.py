"""End to end: `importer run` vs the usual boto3 script, same CSV, same run; memory.

Both import the same generated CSV into the loopback DynamoDB (tests/support/ddb_server.py,
in its own process): importer with its defaults (native engine, signed-HTTP
writer, 50 workers; `--mode blind` and `--mode insert`, and `--mode insert --sync`,
which also writes the data table in the same run), and the script most
people write first (csv.DictReader + `Table.batch_writer().put_item`).  Peak RSS of
`importer validate` on a file and on one 5x larger shows memory stays flat.

    pytest benchmarks/bench_pipeline.py -s                     # N = 200,000
    IMPORTER_BENCH_ROWS=1000000 pytest benchmarks/bench_pipeline.py -s
    IMPORTER_BENCH_SMOKE=1 pytest benchmarks --benchmark-disable   # CI
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import boto3
import pytest

from tests.support.ddb_server import SubprocessDdbServer

SMOKE = os.environ.get("IMPORTER_BENCH_SMOKE") == "1"
N = 2000 if SMOKE else int(os.environ.get("IMPORTER_BENCH_ROWS", "200000"))
RESULTS: dict[str, float] = {}

SPEC = """\
[record]
type = "PRODUCT"
tenant = "{tenant}"
code = "{sku}"
name = "{name}"

[columns.tenant]
required = true
attribute = false

[columns.sku]
required = true
pattern = "^[A-Z0-9-]+$"

[columns.name]
required = true

[columns.price]
type = "decimal"
min = 0

[columns.qty]
type = "integer"

[columns.active]
type = "boolean"

[columns.released]
type = "date"
"""


def _write_csv(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("tenant,sku,name,price,qty,active,released\n")
        for i in range(n):
            fh.write(
                f"t{i % 97},SKU-{i:08d},Product {i},{i % 9973}.{i % 100:02d},{i % 500},"
                f"{'true' if i % 3 else 'false'},2024-{1 + i % 12:02d}-{1 + i % 28:02d}\n"
            )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("pipeline")
    _write_csv(base / "in.csv", N)
    (base / "spec.toml").write_text(SPEC)
    return base


def _env() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def _timed_run(workdir: Path, endpoint: str, name: str, *flags: str) -> tuple[int, dict, float]:
    """`importer run` on the module's file in-process: (exit code, summary, seconds)."""
    from importer.cli.main import main

    out = workdir / f"summary-{name}.json"
    argv = ["run", str(workdir / "in.csv"), "--spec", str(workdir / "spec.toml")]
    argv += ["--table", "bench-command", "--endpoint-url", endpoint, "--quiet", *flags]
    argv += ["--summary-json", str(out), "--checkpoint", str(workdir / f"cp-{name}.jsonl")]
    started = time.perf_counter()
    code = main(argv)
    elapsed = time.perf_counter() - started
    return code, json.loads(out.read_text()) if out.exists() else {}, elapsed


@pytest.mark.parametrize(
    ("mode", "server_args"),
    [("blind", []), ("insert", []), ("blind", ["--sink"])],
    ids=["blind", "insert", "blind-sink"],
)
def test_importer_run(workdir, mode, server_args, monkeypatch):
    """`--sink`: the server acknowledges without storing, showing the client's own pace."""
    _env()
    monkeypatch.chdir(workdir)
    with SubprocessDdbServer(tables=["bench-command"], fault_args=server_args) as srv:
        code, summary, elapsed = _timed_run(workdir, srv.endpoint_url, mode, "--mode", mode)
    assert code == 0
    assert summary["written"] == N
    RESULTS[f"importer --mode {mode}" + (" (sink)" if server_args else "")] = N / elapsed


def test_importer_run_sync(workdir, monkeypatch):
    """`run --sync`: the command records, then each batch's data rows (a read and a write more)."""
    _env()
    monkeypatch.chdir(workdir)
    tables = ["bench-command", "bench-data", "bench-history"]
    with SubprocessDdbServer(tables=tables) as srv:
        code, summary, elapsed = _timed_run(
            workdir, srv.endpoint_url, "sync", "--mode", "insert", "--sync"
        )
        ddb = boto3.client("dynamodb", endpoint_url=srv.endpoint_url)
        pages = ddb.get_paginator("scan").paginate(TableName="bench-data")
        data_rows = sum(len(page["Items"]) for page in pages)
    assert code == 0
    assert summary["written"] == summary["synced"] == data_rows == N
    RESULTS["importer --mode insert --sync"] = N / elapsed


def test_boto3_batch_writer_script(workdir):
    _env()
    with SubprocessDdbServer(tables=["bench-command"]) as srv:
        table = boto3.resource("dynamodb", endpoint_url=srv.endpoint_url).Table("bench-command")
        started = time.perf_counter()
        with (
            open(workdir / "in.csv", newline="", encoding="utf-8") as fh,
            table.batch_writer() as bw,
        ):
            for row in csv.DictReader(fh):
                pk = f"PRODUCT#{row['tenant']}"
                bw.put_item(
                    Item={
                        "pk": pk,
                        "sk": f"PRODUCT#{row['sku']}@1",
                        "id": f"{pk}#PRODUCT#{row['sku']}",
                        "code": row["sku"],
                        "name": row["name"],
                        "type": "PRODUCT",
                        "tenantCode": row["tenant"],
                        "version": 1,
                        "attributes": {
                            "sku": row["sku"],
                            "name": row["name"],
                            "price": Decimal(row["price"]),
                            "qty": int(row["qty"]),
                            "active": row["active"] == "true",
                            "released": row["released"],
                        },
                    }
                )
        elapsed = time.perf_counter() - started
    RESULTS["boto3 batch_writer script"] = N / elapsed


def _peak_rss_kb(csv_path: Path, spec: Path) -> int:
    code = (
        "import resource, sys\n"
        "from importer.cli.main import main\n"
        f"rc = main(['validate', {str(csv_path)!r}, '--spec', {str(spec)!r}, '--quiet'])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=csv_path.parent,
        check=True,
    )
    return int(done.stdout.strip().splitlines()[-1])


def test_memory_is_flat_as_the_file_grows(workdir):
    big = workdir / "big.csv"
    _write_csv(big, N * 5)
    small_kb = _peak_rss_kb(workdir / "in.csv", workdir / "spec.toml")
    big_kb = _peak_rss_kb(big, workdir / "spec.toml")
    RESULTS["peak RSS MB, N rows"] = small_kb / 1024
    RESULTS["peak RSS MB, 5N rows"] = big_kb / 1024
    assert big_kb <= small_kb * 1.10 + 8 * 1024, (small_kb, big_kb)


def test_zz_summary():
    print(f"\nend to end, N = {N:,} rows (loopback DynamoDB in its own process)")
    for name, value in RESULTS.items():
        print(f"  {name:<30} {value:>12,.0f}")
    base = RESULTS.get("boto3 batch_writer script")
    for name in ("importer --mode blind", "importer --mode insert", "importer --mode blind (sink)"):
        ours = RESULTS.get(name)
        if base and ours:
            print(f"  {name} / boto3 batch_writer: {ours / base:.1f}x")
    plain, synced = (
        RESULTS.get("importer --mode insert"),
        RESULTS.get("importer --mode insert --sync"),
    )
    if plain and synced:
        print(f"  --sync / plain insert: {synced / plain:.2f}x (data rows written in the same run)")
