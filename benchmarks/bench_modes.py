"""Import modes: rows/s of insert, upsert and strict next to the blind write, same run.

Against the loopback DynamoDB (tests/support/ddb_server.py) in a separate process.  For
every mode a fresh command + data table pair is seeded (not timed) with half of
the entities at version 1, the data table synced; then the same file of N rows
(all entities, 10% of the existing ones changed) goes through the run's pipeline
(`importer.run.pipeline`: transform, mode stage, the mode's writer) on 50 workers,
in batches of 1000, exactly as `importer run` handles each batch.

    pytest benchmarks/bench_modes.py -s                      # N = 100,000
    IMPORTER_BENCH_ROWS=20000 pytest benchmarks/bench_modes.py -s
    IMPORTER_BENCH_SMOKE=1 pytest benchmarks/bench_modes.py --benchmark-disable

Each run checks its counts (`rows == written + unchanged + rejected + failed`)
and the table contents afterwards.
"""

from __future__ import annotations

import itertools
import os
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from importer.input.batching import Batch
from importer.mbc.model import TABLE_SCHEMA
from importer.run.pipeline import PipelineSettings, open_pipeline
from importer.transform.context import RunContext
from importer.transform.engines import get_engine
from importer.transform.spec import parse_spec
from tests.support.ddb_server import SubprocessDdbServer
from tests.support.writers import http_writer, write_many

SMOKE = os.environ.get("IMPORTER_BENCH_SMOKE") == "1"
N = 2000 if SMOKE else int(os.environ.get("IMPORTER_BENCH_ROWS", "100000"))
BATCH = 1000
WORKERS = 50
REGION = "us-east-1"
MODES = ("blind", "insert", "upsert", "strict")

SPEC = parse_spec(
    tomllib.loads(
        """
[record]
type = "PRODUCT"
tenant = "t{tenant}"
code = "{sku}"
name = "{name}"

[columns.sku]
type = "string"
[columns.tenant]
type = "string"
attribute = false
[columns.name]
type = "string"
[columns.price]
type = "decimal"
[columns.qty]
type = "integer"
"""
    )
)
HEADER = ["sku", "tenant", "name", "price", "qty"]

RESULTS: dict[str, dict] = {}
_ids = itertools.count()


def _session() -> boto3.Session:
    return boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


def _engine():
    try:
        return get_engine("native")
    except Exception:  # noqa: BLE001 - the reference engine gives the same items
        return get_engine("reference")


def _rows(changed: bool) -> list[tuple[int, list[str]]]:
    out = []
    for i in range(N):
        price = i % 9973
        if changed and i % 2 == 0 and i % 20 == 0:  # 10% of the existing (even) entities
            price += 1
        out.append((i + 2, [f"S{i:08d}", str(i % 101), f"Product {i}", str(price), str(i % 17)]))
    return out


@pytest.fixture(scope="module")
def dataset():
    engine = _engine()
    seed_ctx = RunContext(run_id="seed", timestamp="2024-04-01T00:00:00+00:00", source="seed")
    rows = _rows(changed=True)
    batches = [rows[i : i + BATCH] for i in range(0, N, BATCH)]
    seed_rows = [r for r in _rows(changed=False) if (r[0] - 2) % 2 == 0]
    seed = engine.transform_batch(SPEC, HEADER, seed_rows, seed_ctx).items
    return batches, seed


@pytest.fixture(scope="module")
def server():
    with SubprocessDdbServer(tables=()) as srv:
        yield srv


def _writer(url: str, table: str):
    return http_writer(
        table=table, region=REGION, endpoint_url=url, session=_session(), workers=WORKERS
    )


def _fresh_tables(url: str, seed) -> tuple[str, str]:
    from importer.records import PreparedItem
    from importer.transform.reference import wire_json

    client = _session().client("dynamodb", endpoint_url=url)
    n = next(_ids)
    cmd, data = f"bench{n}-command", f"bench{n}-data"
    for t in (cmd, data):
        client.create_table(TableName=t, **TABLE_SCHEMA)
    import json

    data_items = []
    for it in seed:
        doc = json.loads(it.wire)
        base = it.sk.rsplit("@", 1)[0]
        doc["sk"] = {"S": base}
        data_items.append(PreparedItem(it.line, it.pk, base, wire_json(doc)))
    for table, items in ((cmd, seed), (data, data_items)):
        w = _writer(url, table)
        try:
            out = write_many(
                w, [items[i : i + BATCH] for i in range(0, len(items), BATCH)], WORKERS
            )
            assert out.written == len(items)
        finally:
            w.close()
    return cmd, data


def _run_mode(url: str, mode: str, cmd: str, data: str, batches) -> dict:
    settings = PipelineSettings(
        spec=SPEC,
        table=cmd,
        mode=mode,
        data_table=data,
        region=REGION,
        endpoint_url=url,
        workers=WORKERS,
        engine="native" if _engine() is get_engine("native") else "reference",
        session=_session(),
    )
    ctx = RunContext(run_id="bench", timestamp="2024-05-01T00:00:00+00:00", source="bench")
    counts = {"written": 0, "unchanged": 0, "rejected": 0, "failed": 0}
    t0 = time.perf_counter()
    with open_pipeline(settings) as pipeline, ThreadPoolExecutor(WORKERS) as pool:
        futures = [
            pool.submit(
                pipeline.process,
                Batch(index=n, rows=rows),
                header=HEADER,
                ctx=ctx,
                ticket=pipeline.ticket(),
            )
            for n, rows in enumerate(batches)
        ]
        for f in futures:
            out = f.result()
            counts["written"] += out.written
            counts["unchanged"] += out.unchanged
            counts["rejected"] += len(out.rejects)
            counts["failed"] += len(out.failures)
    wall = time.perf_counter() - t0
    assert sum(counts.values()) == N, counts
    assert counts["failed"] == 0, counts
    return {"rows_s": N / wall, "seconds": wall, **counts}


def _once(benchmark, fn) -> None:
    benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)


@pytest.mark.parametrize("mode", MODES)
def test_mode(benchmark, server, dataset, mode):
    batches, seed = dataset
    cmd, data = _fresh_tables(server.endpoint_url, seed)

    def run():
        RESULTS[mode] = _run_mode(server.endpoint_url, mode, cmd, data, batches)

    _once(benchmark, run)
    r = RESULTS[mode]
    half, changed = len(seed), sum(1 for i in range(0, N, 20))
    expected = {
        "blind": (N, 0, 0),
        "insert": (N - half, 0, half),
        "upsert": (N - half + changed, half - changed, 0),
        "strict": (N - half + changed, half - changed, 0),
    }[mode]
    assert (r["written"], r["unchanged"], r["rejected"]) == expected, r
    client = _session().client("dynamodb", endpoint_url=server.endpoint_url)
    count = client.describe_table(TableName=cmd)["Table"]["ItemCount"]
    assert count == (N if mode == "blind" else half + r["written"])  # history kept
    for t in (cmd, data):
        client.delete_table(TableName=t)


def test_zz_summary():
    lines = [f"\nimport modes, N = {N:,} rows (half already stored), {WORKERS} workers, loopback"]
    lines.append(
        f"{'mode':<8}{'rows/s':>10}{'vs blind':>10}{'seconds':>9}"
        f"{'written':>9}{'unchanged':>10}{'rejected':>9}"
    )
    base = RESULTS.get("blind")
    for mode, r in RESULTS.items():
        ratio = f"{r['rows_s'] / base['rows_s']:.2f}x" if base else "-"
        lines.append(
            f"{mode:<8}{r['rows_s']:>10,.0f}{ratio:>10}{r['seconds']:>9.2f}"
            f"{r['written']:>9,}{r['unchanged']:>10,}{r['rejected']:>9,}"
        )
    print("\n".join(lines))
