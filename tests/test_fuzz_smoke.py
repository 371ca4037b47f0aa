"""The native core under a fuzzer for a bounded time, and its memory over many batches.

atheris must be installed in CI (`pip install atheris`); without it the fuzz
smoke test is skipped, unless IMPORTER_REQUIRE_TOOLS is set, then it fails.
"""

from __future__ import annotations

import gc
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from importer.input.options import CsvOptions
from importer.transform import native_engine
from importer.transform.context import RunContext
from importer.transform.spec import parse_spec

HARNESS = Path(__file__).parent / "fuzz" / "fuzz_native.py"
FUZZ_SECONDS = int(os.environ.get("IMPORTER_FUZZ_SECONDS", "20"))


def test_fuzz_harness_runs_clean(tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        if os.environ.get("IMPORTER_REQUIRE_TOOLS"):
            pytest.fail("atheris is not installed (pip install atheris)")
        pytest.skip("atheris is not installed")
    proc = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            f"-max_total_time={FUZZ_SECONDS}",
            f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1",
        ],
        capture_output=True,
        text=True,
        timeout=FUZZ_SECONDS + 120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Done" in proc.stderr


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_rss_is_flat_over_many_batches() -> None:
    spec = parse_spec(
        {
            "record": {"type": "T", "code": "{a}", "name": "{b}"},
            "columns": {
                "a": {"required": True},
                "b": {"max_length": 50},
                "n": {"type": "decimal", "min": 0},
                "d": {"type": "date"},
                "j": {"type": "json"},
                "f": {"type": "boolean"},
            },
        }
    )
    header = ["a", "b", "n", "d", "j", "f"]
    ctx = RunContext(run_id="m", timestamp="2024-01-01T00:00:00+00:00", source="s")
    rows = [
        (
            i,
            [
                f"k{i}",
                'näme "q"' * (i % 3),
                str(i * 1.5),
                "2024-02-29" if i % 7 else "bad",
                '{"x":[1,2]}' if i % 5 else "",
                "yes",
            ],
        )
        for i in range(200)
    ]
    csv_bytes = ("a,b,n,d,j,f\n" + "\n".join(",".join(f) for _, f in rows[:50])).encode()

    def work() -> None:
        res = native_engine.transform_batch(spec, header, rows, ctx)
        assert res.items and res.rejects
        for _, f in rows[:20]:
            native_engine.row_json_size(header, f)
        reader = native_engine.open_reader(io.BytesIO(csv_bytes), CsvOptions())
        sum(1 for _ in reader)

    for _ in range(200):  # warm-up: caches, allocator pools
        work()
    gc.collect()
    before = _rss_bytes()
    for _ in range(1000):
        work()
    gc.collect()
    grown = _rss_bytes() - before
    # a leak of one small object per row would be 200k objects here (> 10 MB)
    assert grown < 4 * 1024 * 1024, f"RSS grew by {grown} bytes over 1000 batches"
