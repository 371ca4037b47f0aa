"""The local stand-in's write path: rows/s and memory per stored item, plain moto vs ours.

`importer local up` serves moto.  Two stand-ins are started the way a user
starts one (`importer local up --background`, a process of their own), one with
moto as it ships (`IMPORTER_LOCAL_PLAIN_MOTO=1`) and one as `importer` runs it
(`importer.cli.local_store.speed_up`), and the same blind import of N products
rows (`importer run`, defaults) goes into each.  Measured: the run's rows/s
(its own summary), and the stand-in's resident memory after the import minus
before, per stored item (from /proc; every run is checked to have written all
its rows).  Blind mode, so what is timed is the stand-in's writes, not the
lookups of insert mode.  The ratio is reported; IMPORTER_BENCH_LOCAL_ENFORCE=1
makes a ratio under 2 fail and a memory per item over 5 KB fail.

    pytest benchmarks/bench_local_moto.py -s                                  # N = 100,000
    IMPORTER_BENCH_LOCAL_ROWS=20000 pytest benchmarks/bench_local_moto.py -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks._clients import ROOT, client_env, save_report, write_products
from importer.cli import local_moto

SMOKE = os.environ.get("IMPORTER_BENCH_SMOKE") == "1"
N = 300 if SMOKE else int(os.environ.get("IMPORTER_BENCH_LOCAL_ROWS", "100000"))
ENFORCE = os.environ.get("IMPORTER_BENCH_LOCAL_ENFORCE") == "1"
TABLE = "local-app-master-command"
RESULTS: dict[str, dict[str, float]] = {}


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    products, spec, _ = write_products(tmp_path_factory.mktemp("local-stack"), N)
    return products, spec


@pytest.mark.parametrize("variant", ["plain-moto", "importer"])
def test_stand_in_write_path(tmp_path, products, variant):
    csv_path, spec = products
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("IMPORTER_LOCAL_PLAIN_MOTO", None)
    if variant == "plain-moto":
        env["IMPORTER_LOCAL_PLAIN_MOTO"] = "1"
    local = [sys.executable, "-m", "importer.cli.main", "local"]
    up = subprocess.run(
        [*local, "up", "--background", "--port", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    state_dir = tmp_path / ".importer" / "local"
    state = local_moto.read_state(state_dir)
    assert state is not None
    try:
        before = _rss_kb(state.pid)
        summary = tmp_path / "summary.json"
        run = subprocess.run(
            [sys.executable, "-m", "importer.cli.main", "run", str(csv_path), "--spec", str(spec),
             "--table", TABLE, "--mode", "blind", "--quiet", "--summary-json", str(summary)],
            cwd=tmp_path, env=client_env(state.endpoint), capture_output=True, text=True,
            timeout=3600,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        after = _rss_kb(state.pid)
    finally:
        local_moto.stop_background(state_dir)
    data = json.loads(summary.read_text())
    assert data["written"] == N
    RESULTS[variant] = {
        "rows_per_second": data["rows_per_second"],
        "bytes_per_item": round((after - before) * 1024 / N),
        "seconds": data["seconds"],
    }
    print(f"\n{variant}: {RESULTS[variant]}")


def test_zz_summary():
    if len(RESULTS) < 2:
        pytest.skip("both variants must have run")
    ratio = RESULTS["importer"]["rows_per_second"] / RESULTS["plain-moto"]["rows_per_second"]
    report = {"rows": N, "variants": RESULTS, "speedup": round(ratio, 2)}
    path = save_report("local-stack", report)
    print(f"\nstand-in write path, {N:,} rows: {json.dumps(report)}\n(saved to {path})")
    if ENFORCE and not SMOKE:
        assert ratio >= 2, report
        assert RESULTS["importer"]["bytes_per_item"] <= 5 * 1024, report
