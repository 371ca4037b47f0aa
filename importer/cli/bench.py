"""Stage benchmarks, in-process: `importer bench [--rows N] [--json]`.

Every stage is measured on the same generated 10-column CSV (strings,
integers, decimals, booleans, dates) in the same run, so ratios are between
numbers taken on the same machine at the same time:

* CSV parse: the native reader (ItemReader rules, line numbers, padding) and
  pyarrow's streaming reader (one thread; the ceiling: it does less).
* transform: native, reference (the baseline) and a polars-expressions
  implementation of the same validation + mapping to wire JSON.
* `row_json_size` (the batcher's per-row size) native vs Python.
* the native pipeline: read + size + transform, end to end in one thread.

Rates are rows per second per core (pyarrow and polars are pinned to one
thread).
"""

from __future__ import annotations

import io
import json
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "BENCH_SPEC",
    "HEADER",
    "generate_csv",
    "native_count",
    "measure_stages",
    "polars_transform",
    "pyarrow_parse",
    "run_bench",
]

os.environ.setdefault("POLARS_MAX_THREADS", "1")

HEADER = [
    "sku",
    "name",
    "category",
    "color",
    "notes",
    "qty",
    "price",
    "weight",
    "active",
    "released",
]
CATEGORIES = ["tools", "garden", "kitchen", "toys", "books"]
BENCH_SPEC: dict[str, Any] = {
    "record": {"type": "PRODUCT", "tenant": "acme", "code": "{sku}", "name": "{name}"},
    "columns": {
        "sku": {"required": True, "max_length": 32},
        "name": {"required": True, "max_length": 200},
        "category": {"enum": CATEGORIES},
        "color": {},
        "notes": {"max_length": 500},
        "qty": {"type": "integer", "min": 0},
        "price": {"type": "decimal", "min": 0},
        "weight": {"type": "decimal"},
        "active": {"type": "boolean"},
        "released": {"type": "date"},
    },
}
BATCH = 1000


def generate_csv(rows: int, *, seed: int = 7, bad_every: int = 50) -> bytes:
    """A deterministic CSV with a header and `rows` rows (every `bad_every`-th row invalid)."""
    rnd = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "Ünïcode", 'quote"d', "comma,ed", "😀"]
    colors = ["red", "green", "blue", "", "black"]
    out = io.StringIO()
    out.write(",".join(HEADER) + "\n")
    for i in range(rows):
        name = f"{rnd.choice(words)} {rnd.choice(words)} {i}"
        notes = " ".join(rnd.choice(words) for _ in range(rnd.randint(0, 6)))
        qty = str(rnd.randint(0, 10_000))
        price = f"{rnd.randint(0, 99_999) / 100:.2f}"
        weight = f"{rnd.random() * 50:.3f}"
        active = rnd.choice(["true", "false", "yes", "no", "1", "0"])
        released = f"20{rnd.randint(10, 24)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"
        if bad_every and i % bad_every == bad_every - 1:
            qty = "-3" if i % 2 else "x"
        fields = [
            f"SKU-{i:08d}",
            name,
            rnd.choice(CATEGORIES),
            rnd.choice(colors),
            notes,
            qty,
            price,
            weight,
            active,
            released,
        ]
        out.write(",".join(_quote(f) for f in fields) + "\n")
    return out.getvalue().encode("utf-8")


def _quote(field: str) -> str:
    if any(c in field for c in ',"\\\n\r'):
        return '"' + field.replace('"', '""').replace("\\", "\\\\") + '"'
    return field


# ---------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------


def native_parse(data: bytes) -> list[tuple[int, list[str]]]:
    from importer.input.options import CsvOptions
    from importer.transform.native_engine import open_reader

    reader = open_reader(io.BytesIO(data), CsvOptions())
    return [(r.line, r.fields) for r in reader]


def native_count(data: bytes) -> int:
    """Stream the file through the native reader (rows are not kept: no GC pressure)."""
    from importer.input.options import CsvOptions
    from importer.transform.native_engine import open_reader

    n = 0
    for _ in open_reader(io.BytesIO(data), CsvOptions()):
        n += 1
    return n


def python_count(data: bytes) -> int:
    from importer.input.options import CsvOptions
    from importer.input.source import CsvReader

    n = 0
    for _ in CsvReader(io.BytesIO(data), CsvOptions()):
        n += 1
    return n


def pyarrow_parse(data: bytes) -> int:
    """pyarrow's streaming CSV reader, one thread, every column as a string."""
    import pyarrow as pa
    from pyarrow import csv

    reader = csv.open_csv(
        io.BytesIO(data),
        read_options=csv.ReadOptions(use_threads=False, block_size=1 << 20),
        convert_options=csv.ConvertOptions(column_types={h: pa.string() for h in HEADER}),
    )
    n = 0
    for batch in reader:
        n += batch.num_rows
    return n


def _batches(rows: list[tuple[int, list[str]]]) -> list[list[tuple[int, list[str]]]]:
    return [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]


def engine_transform(engine: Any, spec: Any, batches: list[Any], ctx: Any) -> tuple[int, int]:
    items = rejects = 0
    for batch in batches:
        res = engine.transform_batch(spec, HEADER, batch, ctx)
        items += len(res.items)
        rejects += len(res.rejects)
    return items, rejects


def polars_frame(data: bytes) -> Any:
    import polars as pl

    return pl.read_csv(io.BytesIO(data), infer_schema=False)


def polars_transform(df: Any, ctx: Any) -> tuple[int, int]:
    """The same validation and mapping as expressions; items end as wire JSON strings.

    Numbers are canonicalised the way importer does for this data (plain
    notation, no trailing zeros); booleans, dates, enums and lengths are
    validated; invalid rows are counted as rejects.  Key checks and JSON
    escaping happen inside polars (`struct.json_encode`).
    """
    import polars as pl

    c = pl.col

    def num(col: str, integer: bool) -> pl.Expr:
        pattern = r"^[+-]?[0-9]+$" if integer else r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)$"
        s = c(col).str.strip_chars(" \t")
        ok = s.str.contains(pattern)
        canon = (
            s.str.replace(r"^\+", "")
            .str.replace(r"^(-?)0+([0-9])", "${1}${2}")
            .str.replace(r"(\.[0-9]*?)0+$", "${1}")
            .str.replace(r"\.$", "")
            .str.replace(r"^-0$", "0")
        )
        return pl.when(ok).then(canon).otherwise(None)

    def boolean(col: str) -> pl.Expr:
        s = c(col).str.strip_chars(" \t").str.to_lowercase()
        return (
            pl.when(s.is_in(["true", "t", "yes", "y", "1"]))
            .then(pl.lit(True))
            .when(s.is_in(["false", "f", "no", "n", "0"]))
            .then(pl.lit(False))
            .otherwise(None)
        )

    released = c("released").str.strip_chars(" \t").str.replace_all("/", "-")
    released_ok = released.str.to_date("%Y-%m-%d", strict=False).is_not_null()
    qty = num("qty", True)
    price = num("price", False)
    weight = num("weight", False)
    active = boolean("active")
    valid = (
        c("sku").is_not_null()
        & (c("sku").str.len_chars() <= 32)
        & c("name").is_not_null()
        & (c("name").str.len_chars() <= 200)
        & (c("category").is_null() | c("category").is_in(CATEGORIES))
        & (c("notes").is_null() | (c("notes").str.len_chars() <= 500))
        & (c("qty").is_null() | (qty.is_not_null() & ~qty.str.starts_with("-")))
        & (c("price").is_null() | (price.is_not_null() & ~price.str.starts_with("-")))
        & (c("weight").is_null() | weight.is_not_null())
        & (c("active").is_null() | active.is_not_null())
        & (c("released").is_null() | released_ok)
        & ~c("sku").str.contains("@")
    )

    def s_(e: pl.Expr) -> pl.Expr:
        return pl.struct(e.alias("S"))

    pk = pl.lit("PRODUCT#acme")
    sk = pl.concat_str([pl.lit("PRODUCT#"), c("sku"), pl.lit("@1")])
    attrs = pl.struct(
        s_(c("sku")).alias("sku"),
        s_(c("name")).alias("name"),
        s_(c("category")).alias("category"),
        s_(c("color")).alias("color"),
        s_(c("notes")).alias("notes"),
        pl.struct(qty.alias("N")).alias("qty"),
        pl.struct(price.alias("N")).alias("price"),
        pl.struct(weight.alias("N")).alias("weight"),
        pl.struct(active.alias("BOOL")).alias("active"),
        s_(released).alias("released"),
    )
    item = pl.struct(
        s_(pk).alias("pk"),
        s_(sk).alias("sk"),
        s_(pl.concat_str([pk, pl.lit("#PRODUCT#"), c("sku")])).alias("id"),
        s_(c("sku")).alias("code"),
        s_(c("name")).alias("name"),
        s_(pl.lit("PRODUCT")).alias("type"),
        s_(pl.lit("acme")).alias("tenantCode"),
        pl.struct(pl.lit("1").alias("N")).alias("version"),
        pl.struct(attrs.alias("M")).alias("attributes"),
        s_(pl.lit(ctx.source)).alias("source"),
        s_(pl.concat_str([pl.lit(ctx.run_id + "#"), pl.int_range(pl.len()).cast(pl.String)])).alias(
            "requestId"
        ),
        s_(pl.lit(ctx.timestamp)).alias("createdAt"),
        s_(pl.lit(ctx.timestamp)).alias("updatedAt"),
        s_(pl.lit(ctx.user)).alias("createdBy"),
        s_(pl.lit(ctx.user)).alias("updatedBy"),
    ).struct.json_encode()
    out = df.select(valid.alias("valid"), item.alias("wire"))
    good = out.filter(c("valid"))
    wires = good.get_column("wire")
    return len(wires), out.height - len(wires)


# ---------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------


def _best(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_stages(rows: int, *, repeat: int = 3, reference_rows: int = 20_000) -> dict[str, Any]:
    """Rows/s of every stage on a generated file of `rows` rows; plus the ratios."""
    from importer.input.batching import item_json_size
    from importer.transform import native_engine, reference
    from importer.transform.context import RunContext
    from importer.transform.spec import parse_spec

    spec = parse_spec(BENCH_SPEC)
    ctx = RunContext(run_id="bench", timestamp="2024-01-01T00:00:00+00:00", source="bench")
    data = generate_csv(rows)
    parsed = native_parse(data)
    batches = _batches(parsed)
    ref_rows = parsed[: min(len(parsed), reference_rows)]
    ref_batches = _batches(ref_rows)
    df = polars_frame(data)
    n = len(parsed)
    results: dict[str, float] = {}

    def rate(name: str, fn: Callable[[], Any], count: int, rep: int = repeat) -> None:
        results[name] = count / _best(fn, rep)

    rate("parse.native", lambda: native_count(data), n)
    rate("parse.pyarrow", lambda: pyarrow_parse(data), n)
    rate("parse.python", lambda: python_count(data), n, 1)
    rate("transform.native", lambda: engine_transform(native_engine, spec, batches, ctx), n)
    rate(
        "transform.reference",
        lambda: engine_transform(reference, spec, ref_batches, ctx),
        len(ref_rows),
        1,
    )
    rate("transform.polars", lambda: polars_transform(df, ctx), n)
    rate(
        "row_json_size.native",
        lambda: [native_engine.row_json_size(HEADER, f) for _, f in parsed],
        n,
    )
    rate(
        "row_json_size.python",
        lambda: [item_json_size(HEADER, f) for _, f in ref_rows],
        len(ref_rows),
        1,
    )

    def pipeline() -> None:
        reader = native_engine.open_reader(io.BytesIO(data), spec.csv)
        batch: list[tuple[int, list[str]]] = []
        for row in reader:
            native_engine.row_json_size(reader.header, row.fields)
            batch.append((row.line, row.fields))
            if len(batch) == BATCH:
                native_engine.transform_batch(spec, reader.header, batch, ctx)
                batch = []
        if batch:
            native_engine.transform_batch(spec, reader.header, batch, ctx)

    rate("pipeline.native", pipeline, n)
    ratios = {
        "transform native / reference": results["transform.native"]
        / results["transform.reference"],
        "transform native / polars": results["transform.native"] / results["transform.polars"],
        "pipeline native / pyarrow parse": results["pipeline.native"] / results["parse.pyarrow"],
        "parse native / pyarrow": results["parse.native"] / results["parse.pyarrow"],
        "row_json_size native / python": results["row_json_size.native"]
        / results["row_json_size.python"],
    }
    return {"rows": n, "rows_per_second": results, "ratios": ratios}


def format_table(report: dict[str, Any]) -> str:
    lines = [f"rows: {report['rows']} (rows/s per core, best of runs)", ""]
    lines.append(f"{'stage':<26}{'rows/s':>14}")
    for name, value in report["rows_per_second"].items():
        lines.append(f"{name:<26}{value:>14,.0f}")
    lines.append("")
    for name, value in report["ratios"].items():
        lines.append(f"{name:<34}{value:>8.2f}x")
    return "\n".join(lines)


def run_bench(rows: int, as_json: bool) -> int:
    """Measure every stage and print a table (or JSON); returns the exit status."""
    try:
        import polars  # noqa: F401 - the baselines: checked before any measuring
        import pyarrow  # noqa: F401
    except ImportError as exc:
        print(
            f"importer: error: the benchmark baselines are not installed ({exc.name}): "
            "pip install 'importer[bench]'",
            file=sys.stderr,
        )
        return 1
    report = measure_stages(rows)
    if as_json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_table(report))
    return 0


if __name__ == "__main__":  # pragma: no cover - `python -m importer.cli.bench [rows]`
    raise SystemExit(
        run_bench(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000, "--json" in sys.argv)
    )
