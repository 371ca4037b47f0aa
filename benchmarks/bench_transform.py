"""Native transform and CSV reader against their baselines, measured in the same run.

    pytest benchmarks/bench_transform.py              # 200k rows (IMPORTER_BENCH_ROWS)
    IMPORTER_BENCH_SMOKE=1 pytest benchmarks/          # ~2000 rows, just runs

Goals (issue "Native batch transformer in Cython"): native transform >= 20x the
reference; the native pipeline >= 50% of pyarrow's CSV parse alone.  Rates are
printed per core (pyarrow/polars pinned to one thread) with the ratios.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchmarks._transform_data import (
    HEADER,
    ROWS,
    SMOKE,
    dataset,
    engine_transform,
    native_count,
    polars_transform,
    pyarrow_parse,
)
from importer.transform import native_engine, reference

RATES: dict[str, float] = {}


def _rate(fn: Callable[[], Any], rows: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(1 if SMOKE else repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return rows / best


def _report(name: str, value: float, base: str | None = None) -> None:
    RATES[name] = value
    line = f"\n{name}: {value:,.0f} rows/s per core"
    if base is not None and base in RATES:
        line += f"  ({value / RATES[base]:.2f}x {base})"
    print(line)


def _run(benchmark: Any, fn: Callable[[], Any]) -> Any:
    return benchmark.pedantic(fn, rounds=1 if SMOKE else 3, iterations=1)


def test_pyarrow_parse_ceiling(benchmark: Any) -> None:
    d = dataset()
    assert _run(benchmark, lambda: pyarrow_parse(d["csv"])) == ROWS
    _report("pyarrow CSV parse", _rate(lambda: pyarrow_parse(d["csv"]), ROWS))


def test_native_csv_reader(benchmark: Any) -> None:
    d = dataset()
    assert _run(benchmark, lambda: native_count(d["csv"])) == ROWS
    _report("native CSV reader", _rate(lambda: native_count(d["csv"]), ROWS), "pyarrow CSV parse")


def test_reference_transform(benchmark: Any) -> None:
    d = dataset()
    sub = d["batches"][: max(1, min(len(d["batches"]), 20))]
    n = sum(len(b) for b in sub)

    def run() -> Any:
        return engine_transform(reference, d["spec"], sub, d["ctx"])

    _run(benchmark, run)
    _report("reference transform", _rate(run, n, 1))


def test_native_transform(benchmark: Any) -> None:
    d = dataset()

    def run() -> Any:
        return engine_transform(native_engine, d["spec"], d["batches"], d["ctx"])

    items, rejects = _run(benchmark, run)
    assert items + rejects == ROWS
    _report("native transform", _rate(run, ROWS), "reference transform")


def test_polars_transform(benchmark: Any) -> None:
    d = dataset()
    items, rejects = _run(benchmark, lambda: polars_transform(d["frame"], d["ctx"]))
    assert items + rejects == ROWS
    rate = _rate(lambda: polars_transform(d["frame"], d["ctx"]), ROWS)
    _report("polars transform", rate)
    if "native transform" in RATES:
        print(f"native transform / polars: {RATES['native transform'] / rate:.2f}x")


def test_native_pipeline_vs_pyarrow(benchmark: Any) -> None:
    d = dataset()
    spec, ctx, data = d["spec"], d["ctx"], d["csv"]

    def run() -> int:
        # what the driver does: batches cut in C by the reader, each transformed
        import io

        from importer.input.batching import Batcher

        reader = native_engine.open_reader(io.BytesIO(data), spec.csv)
        batcher = Batcher(
            max_items=1000, max_bytes=None, batch_input=ctx.to_batch_input(), header=reader.header
        )
        n = 0
        for batch in reader.read_batches(batcher):
            n += len(native_engine.transform_batch(spec, reader.header, batch.rows, ctx).items)
        return n

    import gc

    from importer.cli.main import _relax_cyclic_gc

    saved = gc.get_threshold()
    _relax_cyclic_gc()  # as `importer run` does: the rows of a batch make no cycles
    try:
        assert _run(benchmark, run) > 0
        _report("native read+cut+transform", _rate(run, ROWS), "pyarrow CSV parse")
    finally:
        gc.set_threshold(*saved)


def test_row_json_size(benchmark: Any) -> None:
    from importer.input.batching import item_json_size

    d = dataset()
    header = HEADER
    fields = [f for _, f in d["rows"]]
    _run(benchmark, lambda: [native_engine.row_json_size(header, f) for f in fields])
    py = _rate(lambda: [item_json_size(header, f) for f in fields[:20000]], min(ROWS, 20000), 1)
    _report("python item_json_size", py)
    _report(
        "native row_json_size",
        _rate(lambda: [native_engine.row_json_size(header, f) for f in fields], ROWS),
        "python item_json_size",
    )
