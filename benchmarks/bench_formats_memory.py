"""Peak RSS of `importer run` on Parquet, JSON Lines and JSON as the file grows: N and 10 x N rows.

Issue 28: a Parquet file with many row groups and a large JSONL file are read
without holding the file -- by record batch (a slice of a row group) and by
1 MiB block of lines -- so the peak memory of N and 10 x N rows must be within
15 % (default N = 1,000,000: 1M vs 10M rows).  Each run is a whole
`python -m importer.cli.main run --mode blind` process against the compiled
acknowledging endpoint, its peak RSS read from the kernel (wait4's ru_maxrss);
every run is checked to have delivered all its rows.

The files are the benchmark products (importer.cli.bench's columns and spec)
written straight from typed columns, a chunk of rows at a time, so making a 10M-row
file holds no more than one chunk: Parquet with 131,072-row row groups (the size
an Athena UNLOAD or a Spark export writes), JSONL one compact object a line, JSON the
same objects as one array (an element a line).
The ratios are reported; IMPORTER_BENCH_ENFORCE_MEMORY=1 makes a ratio over
1.15 fail (a single run's peak varies by some 10 % with timing).  With pyarrow's
pre_buffer (its default) the Parquet peak grew 2.4x from 1M to 10M rows: the reader
turns it off (importer.input.parquet).

    IMPORTER_BENCH_MEMORY_ROWS=1000000 pytest benchmarks/bench_formats_memory.py -s
    IMPORTER_BENCH_SMOKE=1 python -m pytest benchmarks/bench_formats_memory.py -q
"""

from __future__ import annotations

import itertools
import json
import os
import random
from array import array
from pathlib import Path
from typing import Any

import pytest

from benchmarks._clients import client_env, importer_cmd, run_measured, save_report
from tests.support.ack_endpoint import AckEndpoint

SMOKE = os.environ.get("IMPORTER_BENCH_SMOKE") == "1"
N = 300 if SMOKE else int(os.environ.get("IMPORTER_BENCH_MEMORY_ROWS", "1000000"))
SIZES = (N, 10 * N)
#: IMPORTER_BENCH_MEMORY_KINDS (comma-separated) runs some of them
KINDS = tuple(os.environ.get("IMPORTER_BENCH_MEMORY_KINDS", "PARQUET,JSONL,JSON").split(","))
GOAL = 1.15
TIMEOUT = 300.0 if SMOKE else 7200.0
CHUNK = 100 if SMOKE else 100_000
ROW_GROUP = 128 if SMOKE else 131_072
WORDS = ["alpha", "beta", "gamma", "delta", "Ünïcode", "😀"]
COLORS = ["red", "green", "blue", "", "black"]

PEAKS: dict[tuple[str, int], dict[str, Any]] = {}


def _columns(start: int, n: int, rnd: random.Random) -> dict[str, list[Any]]:
    """Rows start..start+n of the products, as typed columns (prices in cents, weights in
    grams, dates in days since 1970)."""
    from importer.cli.bench import CATEGORIES

    idx = range(start, start + n)
    return {
        "sku": [f"SKU-{i:09d}" for i in idx],
        "name": [f"{rnd.choice(WORDS)} {rnd.choice(WORDS)} {i}" for i in idx],
        "category": [rnd.choice(CATEGORIES) for _ in idx],
        "color": [rnd.choice(COLORS) for _ in idx],
        "notes": [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(0, 6))) for _ in idx],
        "qty": [rnd.randint(0, 10_000) for _ in idx],
        "price": [rnd.randint(0, 99_999) for _ in idx],
        "weight": [rnd.randint(0, 50_000) for _ in idx],
        "active": [rnd.random() < 0.5 for _ in idx],
        "released": [rnd.randint(14_610, 20_088) for _ in idx],
    }


def _decimal(values: list[int], scale: int) -> Any:
    """Non-negative unscaled integers as a decimal128 array (its 16-byte values written here)."""
    import pyarrow as pa

    words = array("q", itertools.chain.from_iterable((v, 0) for v in values))
    buffer = pa.py_buffer(words.tobytes())
    return pa.Array.from_buffers(pa.decimal128(38, scale), len(values), [None, buffer])


def _write(directory: Path, rows: int) -> dict[str, Path]:
    """products.parquet and products.jsonl of `rows` rows, a chunk at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    parquet, jsonl = directory / "products.parquet", directory / "products.jsonl"
    array_path = directory / "products.json"
    rnd = random.Random(28)
    writer = None
    with jsonl.open("w", encoding="utf-8") as out, array_path.open("w", encoding="utf-8") as arr:
        arr.write("[\n")
        for start in range(0, rows, CHUNK):
            c = _columns(start, min(CHUNK, rows - start), rnd)
            table = pa.table(
                {
                    **{k: pa.array(c[k], pa.string()) for k in ("sku", "name", "category")},
                    **{k: pa.array(c[k], pa.string()) for k in ("color", "notes")},
                    "qty": pa.array(c["qty"], pa.int64()),
                    "price": _decimal(c["price"], 2),
                    "weight": _decimal(c["weight"], 3),
                    "active": pa.array(c["active"], pa.bool_()),
                    "released": pa.array(c["released"], pa.int32()).view(pa.date32()),
                }
            )
            if writer is None:
                writer = pq.ParquetWriter(parquet, table.schema)
            writer.write_table(table, row_group_size=ROW_GROUP)
            dates = pa.array(c["released"], pa.int32()).view(pa.date32()).to_pylist()
            for i in range(len(c["sku"])):
                line = (
                    f'{{"sku":"{c["sku"][i]}","name":"{c["name"][i]}",'
                    f'"category":"{c["category"][i]}","color":"{c["color"][i]}",'
                    f'"notes":"{c["notes"][i]}","qty":{c["qty"][i]},'
                    f'"price":{c["price"][i] // 100}.{c["price"][i] % 100:02d},'
                    f'"weight":{c["weight"][i] // 1000}.{c["weight"][i] % 1000:03d},'
                    f'"active":{"true" if c["active"][i] else "false"},'
                    f'"released":"{dates[i]}"}}'
                )
                out.write(line + "\n")
                arr.write(("" if start == 0 and i == 0 else ",\n") + line)
        arr.write("\n]\n")
    assert writer is not None
    writer.close()
    return {"PARQUET": parquet, "JSONL": jsonl, "JSON": array_path}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[int, dict[str, Path]]:
    pytest.importorskip("pyarrow")
    from importer.cli.bench import BENCH_SPEC

    base = tmp_path_factory.mktemp("formats-memory")
    spec = base / "products.spec.json"
    spec.write_text(json.dumps(BENCH_SPEC), encoding="utf-8")
    out = {}
    for rows in SIZES:
        out[rows] = {**_write(base / f"rows-{rows}", rows), "spec": spec}
    return out


@pytest.mark.parametrize("rows", SIZES, ids=["N", "10N"])
@pytest.mark.parametrize("kind", KINDS)
def test_peak_rss(ack_binary, inputs, kind, rows):
    files = inputs[rows]
    directory = files[kind].parent
    tag = f"mem-{kind.lower()}"
    with AckEndpoint(binary=ack_binary) as ep:
        cmd = importer_cmd(files[kind], files["spec"], ep.endpoint_url, "blind", directory, tag)
        m = run_measured(cmd, env=client_env(ep.endpoint_url), cwd=directory, timeout=TIMEOUT)
        stats = ep.stats()
    assert m.returncode == 0, f"{kind} exited {m.returncode}: {m.tail()}"
    assert stats["items"] == rows, f"{kind}: the endpoint got {stats['items']} of {rows} items"
    summary = json.loads((directory / f"summary-{tag}.json").read_text())
    assert summary["written"] == rows and summary["input_type"] == kind, summary
    PEAKS[(kind, rows)] = {
        "rows": rows,
        "max_rss_mb": m.max_rss_kb / 1024,
        "rows_per_second": rows / m.seconds,
    }


def test_report_peaks():
    """The 10N/N peak ratio per type (run after the peaks above)."""
    if len(PEAKS) < len(KINDS) * len(SIZES):
        pytest.skip("the peak runs did not all run")
    lines = [f"\npeak RSS, {', '.join(KINDS)}, {N:,} vs {10 * N:,} rows (blind)"]
    report: dict[str, Any] = {"rows": list(SIZES), "smoke": SMOKE, "kinds": {}}
    over = []
    for kind in KINDS:
        small, large = PEAKS[(kind, N)], PEAKS[(kind, 10 * N)]
        ratio = large["max_rss_mb"] / small["max_rss_mb"]
        report["kinds"][kind] = {"N": small, "10N": large, "ratio": ratio}
        mark = "met" if ratio <= GOAL else "NOT met"
        lines.append(
            f"{kind:<8} {small['max_rss_mb']:7.1f} MB -> {large['max_rss_mb']:7.1f} MB"
            f"  x{ratio:.3f} (goal <= {GOAL}: {mark})"
            f"  {small['rows_per_second']:,.0f} / {large['rows_per_second']:,.0f} rows/s"
        )
        if ratio > GOAL:
            over.append(kind)
    print("\n".join(lines))
    save_report("formats_memory", report)
    if os.environ.get("IMPORTER_BENCH_ENFORCE_MEMORY") == "1" and not SMOKE:
        assert not over, f"peak memory grew over {GOAL}x with the file: {over}"
