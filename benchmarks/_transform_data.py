"""Data and stage helpers for bench_transform.py (the logic lives in importer.cli.bench)."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from importer.cli.bench import (
    BATCH,
    BENCH_SPEC,
    HEADER,
    engine_transform,
    generate_csv,
    native_count,
    native_parse,
    polars_frame,
    polars_transform,
    pyarrow_parse,
)

__all__ = [
    "BATCH",
    "HEADER",
    "ROWS",
    "SMOKE",
    "dataset",
    "polars_transform",
    "pyarrow_parse",
    "engine_transform",
    "native_count",
    "native_parse",
]

SMOKE = os.environ.get("IMPORTER_BENCH_SMOKE") == "1"
ROWS = 2000 if SMOKE else int(os.environ.get("IMPORTER_BENCH_ROWS", "200000"))


@cache
def dataset() -> dict[str, Any]:
    from importer.transform.context import RunContext
    from importer.transform.spec import parse_spec

    data = generate_csv(ROWS)
    rows = native_parse(data)
    return {
        "spec": parse_spec(BENCH_SPEC),
        "ctx": RunContext(run_id="bench", timestamp="2024-01-01T00:00:00+00:00", source="bench"),
        "csv": data,
        "rows": rows,
        "batches": [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)],
        "frame": polars_frame(data),
    }
