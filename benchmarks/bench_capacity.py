"""Utilisation of a capacity-limited table: how much of the granted capacity a client uses.

The loopback DynamoDB (tests/support/ddb_server.py) runs in its own process with a
capacity model: a token bucket of C write units per second with a 0.5 s burst;
a BatchWriteItem gets the items that fit, the rest come back unprocessed, and a
call where nothing fits is refused with ProvisionedThroughputExceededException.
Each client writes 1-unit items into its own fresh table for D seconds:

* boto3 `Table.batch_writer()` -- the usual choice (one thread; it resends
  UnprocessedItems at once, botocore's retry handles throttling errors);
* a plain retry loop -- 16 threads, `batch_write_item`, unprocessed items and
  throttles retried after full-jitter exponential backoff (no rate control);
* the same loop paced by `importer.dynamodb.pacing.Pacer` (acquire before each call,
  settle after it) -- the component importer's writer uses;
* `importer run` itself, with its defaults (50 workers), as a whole process.

Utilisation is the items stored (counted in the table afterwards) over
C x (D + burst).

    pytest benchmarks/bench_capacity.py -s                      # C = 2000, D = 15 s
    IMPORTER_BENCH_SMOKE=1 pytest benchmarks/bench_capacity.py -s   # tiny, seconds
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from importer.dynamodb.pacing import Pacer
from importer.mbc.model import TABLE_SCHEMA
from tests.support.ddb_server import SubprocessDdbServer

SMOKE = os.environ.get("IMPORTER_BENCH_SMOKE") == "1"
CAPACITY = 300 if SMOKE else int(os.environ.get("IMPORTER_BENCH_WCU", "2000"))
SECONDS = 2.0 if SMOKE else float(os.environ.get("IMPORTER_BENCH_SECONDS", "15"))
THREADS = 4 if SMOKE else 16
BURST = 0.5
REGION = "us-east-1"
THROTTLES = ("ProvisionedThroughputExceededException", "ThrottlingException")
TRANSIENT = ("InternalServerError", "ServiceUnavailable")
RESULTS: dict[str, dict] = {}


def _client(url: str, retries: int):
    return boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="AKIDBENCH",
        aws_secret_access_key="bench",
        config=Config(
            retries={"total_max_attempts": retries, "mode": "standard"},
            max_pool_connections=THREADS + 4,
        ),
    )


@pytest.fixture(scope="module")
def server():
    with SubprocessDdbServer(tables=(), write_capacity=CAPACITY, capacity_burst=BURST) as srv:
        yield srv


def _fresh_table(url: str, name: str) -> str:
    c = _client(url, 3)
    c.create_table(TableName=name, **TABLE_SCHEMA)
    time.sleep(1.0)  # the capacity bucket refills its burst between clients
    return name


def _count(url: str, table: str) -> int:
    c = _client(url, 10)
    n, kwargs = 0, {}
    while True:
        page = c.scan(TableName=table, Select="COUNT", **kwargs)
        n += page["Count"]
        if "LastEvaluatedKey" not in page:
            return n
        kwargs = {"ExclusiveStartKey": page["LastEvaluatedKey"]}


def _item(thread: int, i: int) -> dict:
    return {"pk": {"S": f"P#{thread}"}, "sk": {"S": f"S#{i:09d}"}, "v": {"S": "x" * 40}}


def run_batch_writer(url: str, table: str) -> dict:
    resource = boto3.resource(
        "dynamodb",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="AKIDBENCH",
        aws_secret_access_key="bench",
    )
    t = resource.Table(table)
    seen = {"requests": 0, "throttled": 0}

    def after_call(parsed, **_):  # every HTTP attempt, botocore's retries included
        seen["requests"] += 1
        seen["throttled"] += bool(parsed.get("UnprocessedItems") or parsed.get("Error"))

    resource.meta.client.meta.events.register("after-call.dynamodb.BatchWriteItem", after_call)
    errors = 0
    i = 0
    stop = time.monotonic() + SECONDS
    while time.monotonic() < stop:
        try:
            with t.batch_writer() as bw:
                while time.monotonic() < stop:
                    bw.put_item(Item={"pk": "P#0", "sk": f"S#{i:09d}", "v": "x" * 40})
                    i += 1
        except ClientError as exc:  # botocore gave up on a throttled call: rows lost
            if exc.response["Error"]["Code"] not in THROTTLES:
                raise
            errors += 1
    return {**seen, "gave_up": errors}


def _loop(url: str, table: str, pacer: Pacer | None) -> dict:
    client = _client(url, 1)  # this loop does its own retries
    stop = time.monotonic() + SECONDS
    lock = threading.Lock()
    counts = {"requests": 0, "throttled": 0}

    def worker(thread: int) -> None:
        rng = random.Random(thread)
        i = 0
        pending: list[dict] = []
        attempt = 0
        requests = throttled = 0
        while time.monotonic() < stop:
            if not pending:
                pending = [{"PutRequest": {"Item": _item(thread, i + k)}} for k in range(25)]
                i += 25
                attempt = 0
            if pacer is not None:
                pacer.acquire(len(pending), len(pending))  # 1-unit items
            requests += 1
            try:
                out = client.batch_write_item(RequestItems={table: pending})
                back = out.get("UnprocessedItems", {}).get(table, [])
                hit = bool(back)
            except ClientError as exc:
                code = exc.response["Error"]["Code"]
                if code not in THROTTLES and code not in TRANSIENT:
                    raise
                back, hit = pending, code in THROTTLES
            except (ConnectionClosedError, EndpointConnectionError, ReadTimeoutError):
                back, hit = pending, False  # lost answer: resend (items are idempotent)
            throttled += hit
            if pacer is not None:
                done = len(pending) - len(back)
                pacer.settle(sent=len(pending), processed=done, processed_units=done, throttled=hit)
            pending = back
            if pending:
                attempt += 1
                time.sleep(rng.uniform(0, min(1.0, 0.05 * 2**attempt)))
        with lock:
            counts["requests"] += requests
            counts["throttled"] += throttled

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return counts


_SPEC = """\
[record]
type = "ITEM"
tenant = "bench"
code = "{sku}"

[columns.sku]
required = true

[columns.v]
"""


def run_importer(url: str, table: str) -> dict:
    """`importer run` with its defaults (50 workers, the pacer), as a whole process."""
    rows = max(500, int(CAPACITY * SECONDS))
    with tempfile.TemporaryDirectory() as tmp:
        src, spec, out = Path(tmp, "in.csv"), Path(tmp, "spec.toml"), Path(tmp, "s.json")
        spec.write_text(_SPEC)
        with open(src, "w", encoding="utf-8") as fh:
            fh.write("sku,v\n")
            fh.writelines(f"S{i:09d},{'x' * 40}\n" for i in range(rows))
        env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDBENCH", AWS_SECRET_ACCESS_KEY="bench")
        cmd = [sys.executable, "-m", "importer.cli.main", "run", str(src), "--spec", str(spec)]
        cmd += ["--table", table, "--endpoint-url", url, "--mode", "blind", "--quiet"]
        cmd += ["--summary-json", str(out), "--checkpoint", str(Path(tmp, "cp.jsonl"))]
        subprocess.run(cmd, check=True, env=env, cwd=tmp)
        summary = json.loads(out.read_text())
    assert summary["written"] == rows
    retries = summary["retries"]
    return {"requests": -(-rows // 25) + retries, "throttled": retries}


CLIENTS: dict[str, Callable[[str, str], dict]] = {
    "importer run (defaults)": run_importer,
    "boto3 batch_writer": run_batch_writer,
    "retry loop (16 threads)" if not SMOKE else "retry loop": lambda u, t: _loop(u, t, None),
    "retry loop + Pacer": lambda u, t: _loop(u, t, Pacer()),
}


@pytest.mark.parametrize("name", list(CLIENTS))
def test_utilisation(server, name):
    table = _fresh_table(server.endpoint_url, f"cap{len(RESULTS)}")
    started = time.monotonic()
    counts = CLIENTS[name](server.endpoint_url, table)
    elapsed = time.monotonic() - started
    written = _count(server.endpoint_url, table)
    assert written > 0
    RESULTS[name] = {
        **counts,
        "written": written,
        "seconds": elapsed,
        # what the table could grant: its rate for the run, plus the burst it starts with
        "utilisation": written / (CAPACITY * (elapsed + BURST)),
    }


def test_zz_summary():
    if not RESULTS:
        pytest.skip("no client ran")
    lines = [
        f"capacity {CAPACITY} WCU/s ({BURST} s burst), {SECONDS:.0f} s per client",
        f"{'client':28} {'items':>8} {'utilisation':>12} {'throttled calls':>16}",
    ]
    for name, r in RESULTS.items():
        share = (
            f"{r['throttled'] / r['requests']:.0%} of {r['requests']}"
            if r.get("requests")
            else f"gave up {r.get('gave_up', 0)}x"
        )
        lines.append(f"{name:28} {r['written']:>8} {r['utilisation']:>12.0%} {share:>16}")
    print("\n" + "\n".join(lines))
