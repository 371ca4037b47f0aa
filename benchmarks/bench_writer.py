"""Writer throughput: boto3 `Table.batch_writer()` vs importer's BatchWriter, same items.

Both write the same N generated items to the loopback DynamoDB
(tests/support/ddb_server.py) running in a *separate process* with no faults, so
client and server never share a GIL.  Every run writes into a fresh table and
checks afterwards that the table holds exactly N items.

    pytest benchmarks/bench_writer.py -s                      # N = 200,000
    IMPORTER_BENCH_ROWS=50000 pytest benchmarks/bench_writer.py -s
    IMPORTER_BENCH_SMOKE=1 pytest benchmarks/ --benchmark-disable   # CI: N = 2,000

Reported (printed by `test_zz_summary`): rows/s of each writer and their ratio,
HttpBatchWriter scaling over 1/4/16/50 workers, and whether the loopback server
is the bottleneck: the server process's CPU use during each run (~100% of a core
means the server, not the client, sets the pace) and two ceilings -- prebuilt
unsigned bodies blasted by 50 threads at the storing server, and HttpBatchWriter
against a `--sink` server that acknowledges without parsing.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
import urllib3

from importer.records import PreparedItem
from tests.support.ddb_server import SubprocessDdbServer
from tests.support.writers import http_writer, write_many

SMOKE = os.environ.get("IMPORTER_BENCH_SMOKE") == "1"
N = 2000 if SMOKE else int(os.environ.get("IMPORTER_BENCH_ROWS", "200000"))
BATCH = 1000
REGION = "us-east-1"
SCALING = (1, 4, 16, 50)

RESULTS: dict[str, dict] = {}
_table_ids = itertools.count()


def _session() -> boto3.Session:
    return boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


def _plain(i: int) -> dict:
    return {
        "pk": f"PRODUCT#tenant{i % 101}",
        "sk": f"PRODUCT#{i:09d}@1",
        "code": f"{i:09d}",
        "name": f"Product number {i}",
        "price": i % 9973,
        "qty": i % 17,
    }


def _wire(d: dict) -> bytes:
    typed = {k: ({"N": str(v)} if isinstance(v, int) else {"S": v}) for k, v in d.items()}
    return json.dumps(typed, separators=(",", ":")).encode()


@pytest.fixture(scope="module")
def dataset():
    plain = [_plain(i) for i in range(N)]
    prepared = [PreparedItem(i + 2, d["pk"], d["sk"], _wire(d)) for i, d in enumerate(plain)]
    return plain, prepared


@pytest.fixture(scope="module")
def server():
    with SubprocessDdbServer(tables=()) as srv:
        yield srv


@pytest.fixture(scope="module")
def sink_server():
    with SubprocessDdbServer(tables=(), fault_args=["--sink"]) as srv:
        yield srv


def _client(url: str):
    return _session().client("dynamodb", endpoint_url=url, region_name=REGION)


class _Table:
    """A fresh table for one run; deleted afterwards so server memory stays flat."""

    def __init__(self, url: str) -> None:
        self.client = _client(url)
        self.name = f"bench{next(_table_ids)}"

    def __enter__(self) -> _Table:
        self.client.create_table(
            TableName=self.name,
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        return self

    def count(self) -> int:
        return self.client.describe_table(TableName=self.name)["Table"]["ItemCount"]

    def __exit__(self, *exc) -> None:
        self.client.delete_table(TableName=self.name)


def _measure(key: str, server: SubprocessDdbServer, run, rows: int) -> dict:
    cpu0, t0 = server.cpu_seconds(), time.perf_counter()
    run()
    wall = time.perf_counter() - t0
    cpu = server.cpu_seconds() - cpu0
    res = {"rows": rows, "seconds": wall, "rows_s": rows / wall, "server_cpu": cpu / wall}
    RESULTS[key] = res
    return res


def _once(benchmark, fn) -> None:
    """Run `fn` exactly once under pytest-benchmark (works with --benchmark-disable)."""
    benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)


def _http_run(url: str, table: str, items: list[PreparedItem], workers: int) -> None:
    writer = http_writer(
        table=table, region=REGION, endpoint_url=url, session=_session(), workers=workers
    )
    try:
        batches = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
        out = write_many(writer, batches, workers)
    finally:
        writer.close()
    assert out.written == len(items) and not out.failures


def test_boto3_batch_writer(benchmark, server, dataset):
    plain, _ = dataset
    resource = _session().resource("dynamodb", endpoint_url=server.endpoint_url)

    with _Table(server.endpoint_url) as t:
        table = resource.Table(t.name)

        def run():
            with table.batch_writer() as bw:
                for d in plain:
                    bw.put_item(Item=d)

        _once(benchmark, lambda: _measure("boto3 batch_writer", server, run, len(plain)))
        assert t.count() == len(plain)


@pytest.mark.parametrize("workers", SCALING)
def test_http_writer(benchmark, server, dataset, workers):
    _, items = dataset
    with _Table(server.endpoint_url) as t:

        def run():
            _http_run(server.endpoint_url, t.name, items, workers)

        _once(benchmark, lambda: _measure(f"http {workers}w", server, run, len(items)))
        assert t.count() == len(items)


def test_http_writer_sink_server(benchmark, sink_server, dataset):
    """Client ceiling: the server acknowledges every BatchWriteItem without parsing it."""
    _, items = dataset

    def run():
        _http_run(sink_server.endpoint_url, "sink", items, 50)

    _once(benchmark, lambda: _measure("http 50w -> sink", sink_server, run, len(items)))


def test_server_ceiling_prebuilt_bodies(benchmark, server, dataset):
    """Server ceiling: 50 threads POST prebuilt unsigned 25-item bodies (no client work)."""
    _, items = dataset
    with _Table(server.endpoint_url) as t:
        prefix = b'{"RequestItems":{"' + t.name.encode() + b'":['
        bodies = [
            prefix
            + b",".join(b'{"PutRequest":{"Item":' + it.wire + b"}}" for it in items[i : i + 25])
            + b"]}}"
            for i in range(0, len(items), 25)
        ]
        host, port = server.endpoint_url.rsplit("/", 1)[1].split(":")
        pool = urllib3.HTTPConnectionPool(host, int(port), maxsize=50, block=True)
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810.BatchWriteItem",
        }
        it = iter(bodies)
        lock = threading.Lock()

        def blast():
            while True:
                with lock:
                    body = next(it, None)
                if body is None:
                    return
                r = pool.urlopen("POST", "/", body=body, headers=headers, retries=False)
                assert r.status == 200 and r.data == b'{"UnprocessedItems":{}}', r.data

        def run():
            with ThreadPoolExecutor(50) as ex:
                for f in [ex.submit(blast) for _ in range(50)]:
                    f.result()

        _once(benchmark, lambda: _measure("raw 50 threads", server, run, len(items)))
        pool.close()
        assert t.count() == len(items)


SIGNING: dict[str, float] = {}


def test_signing_cost(dataset):
    """Per-request SigV4 cost: botocore SigV4Auth vs importer.dynamodb.sigv4, one 25-item body."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    from importer.dynamodb.sigv4 import SigV4Signer

    _, items = dataset
    body = (
        b'{"RequestItems":{"t":['
        + b",".join(b'{"PutRequest":{"Item":' + it.wire + b"}}" for it in items[:25])
        + b"]}}"
    )
    creds = _session().get_credentials()
    url, host, target = (
        "http://127.0.0.1:8000/",
        "127.0.0.1:8000",
        "DynamoDB_20120810.BatchWriteItem",
    )

    def botocore_sign():
        req = AWSRequest(
            method="POST",
            url=url,
            data=body,
            headers={
                "Host": host,
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": target,
            },
        )
        SigV4Auth(creds.get_frozen_credentials(), "dynamodb", REGION).add_auth(req)
        return dict(req.headers.items())

    signer = SigV4Signer(creds, REGION, host)

    def fast_sign():
        return signer.headers(target, body)

    for name, fn, n in (
        ("botocore SigV4Auth", botocore_sign, 2000),
        ("importer.dynamodb.sigv4", fast_sign, 20000),
    ):
        n = max(n // 20, 50) if SMOKE else n
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best = min(best, (time.perf_counter() - t0) / n)
        SIGNING[name] = best * 1e6


def test_zz_summary(dataset):
    """Print the comparison (runs last: file order)."""
    lines = [f"\nwriter benchmark, N = {N:,} rows, loopback ddb_server in a subprocess"]
    lines.append(f"{'run':<22}{'rows/s':>12}{'seconds':>10}{'server CPU':>12}")
    for key, r in RESULTS.items():
        lines.append(f"{key:<22}{r['rows_s']:>12,.0f}{r['seconds']:>10.2f}{r['server_cpu']:>11.0%}")
    base, fast = RESULTS.get("boto3 batch_writer"), RESULTS.get("http 50w")
    if base and fast:
        lines.append(
            f"HttpBatchWriter(50 workers) / boto3 batch_writer = "
            f"{fast['rows_s'] / base['rows_s']:.1f}x"
        )
    if fast:
        verdict = (
            "the loopback server is the bottleneck (its process is CPU-saturated)"
            if fast["server_cpu"] >= 0.85
            else "the loopback server is not saturated; the client sets the pace"
        )
        lines.append(f"at 50 workers: {verdict}")
    for name, us in SIGNING.items():
        lines.append(f"signing, {name:<20}{us:>8.1f} us/request (single thread)")
    print("\n".join(lines))
