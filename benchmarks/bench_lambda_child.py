"""The Distributed Map child Lambda (`importer.aws.handler`), measured: fixed cost and rows/s.

One fresh interpreter per measurement plays a Lambda container: it imports the
handler (timed: the cold start's import), then calls `handle_event` as the
runtime would, against the compiled acknowledging endpoint (every read answers
"nothing stored", so every row is written):

* the template's ItemBatcher batch (MaxItemsPerBatch 10) -- nearly all fixed
  cost: spec read, client set-up, signing key, the pipeline opened and closed;
* a full batch: as many products rows as fit in 256 KB of BatchInput.

The first call is the cold invocation; the next ones are warm (the same
container).  Per invocation: milliseconds; for the full batch also rows/s.
The fixed cost of a warm invocation is the 10-row batch's time.

    pytest benchmarks/bench_lambda_child.py -s
    IMPORTER_BENCH_SMOKE=1 python -m pytest benchmarks --benchmark-disable -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks._clients import ROOT, client_env, save_report, write_products
from tests.support.ack_endpoint import AckEndpoint

SMOKE = os.environ.get("IMPORTER_BENCH_SMOKE") == "1"
WARM = 2 if SMOKE else int(os.environ.get("IMPORTER_BENCH_WARM", "10"))
TABLE = "bench-command"

#: a Lambda container: import the handler, then invocations (cold, then warm), timed
_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from importer.aws.handler import handle_event
imported = time.perf_counter() - t0
events = json.load(open(sys.argv[1]))
warm = int(sys.argv[2])
out = {"import_s": imported, "calls": {}}
for name, event in events.items():
    times = []
    for n in range(1 + warm):
        event["BatchInput"]["ExecutionName"] = f"{name}{n}"
        t = time.perf_counter()
        summary = handle_event(event)
        times.append(time.perf_counter() - t)
        assert summary["written"] == len(event["Items"]), summary
    out["calls"][name] = {"rows": len(event["Items"]), "seconds": times}
    print(json.dumps(out), flush=True) if name == list(events)[-1] else None
"""


def _event(items: list[dict], spec: Path) -> dict:
    return {
        "Items": items,
        "BatchInput": {
            "Attributes": {"bucket": "in", "key": "p.csv", "table": TABLE, "spec": str(spec)},
            "ExecutionId": "arn:aws:states:us-east-1:123456789012:execution:import-csv:bench",
            "ExecutionName": "bench",
            "StartTime": "2026-11-25T10:00:00.123Z",
        },
    }


def _full_batch(rows: list[dict], spec: Path, limit: int = 262144) -> list[dict]:
    """As many rows as fit in `limit` bytes of BatchInput (as ItemBatcher cuts them)."""
    lo, hi = 1, len(rows)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        size = len(json.dumps(_event(rows[:mid], spec), separators=(",", ":")).encode())
        lo, hi = (mid, hi) if size <= limit else (lo, mid - 1)
    return rows[:lo]


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> Path:
    import csv

    base = tmp_path_factory.mktemp("lambda_child")
    products, spec, _keyed = write_products(base, 3000)
    with open(products, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    full = _full_batch(rows, spec)
    path = base / "events.json"
    path.write_text(
        json.dumps({"itembatcher_10": _event(rows[:10], spec), "full_256kb": _event(full, spec)})
    )
    return path


def _container(events: Path, url: str) -> dict:
    env = client_env(url)
    env.update(IMPORTER_TABLE=TABLE, AWS_LAMBDA_FUNCTION_NAME="bench")
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(events), str(WARM)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(values: list[float]) -> float:
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def test_lambda_child(ack_binary, events):
    with AckEndpoint(binary=ack_binary) as ep:
        got = _container(events, ep.endpoint_url)
        stats = ep.stats()
    assert stats["unknown"] == 0 and stats["bad_http"] == 0, stats
    calls = got["calls"]
    small, full = calls["itembatcher_10"], calls["full_256kb"]
    fixed_warm = _median(small["seconds"][1:])
    full_warm = _median(full["seconds"][1:])
    report = {
        "import_s": got["import_s"],
        "cold_first_invocation_s": small["seconds"][0],
        "warm_fixed_s": fixed_warm,
        "full_rows": full["rows"],
        "full_warm_s": full_warm,
        "full_rows_per_s": full["rows"] / full_warm,
        "full_rows_per_s_after_fixed": full["rows"] / max(full_warm - fixed_warm, 1e-9),
        "calls": calls,
        "smoke": SMOKE,
    }
    lines = [
        f"\nLambda child, one container (fresh interpreter), ack endpoint, {WARM} warm calls each",
        f"import importer.aws.handler (cold): {got['import_s'] * 1000:.0f} ms",
        f"first invocation (cold, 10 rows):    {small['seconds'][0] * 1000:.1f} ms",
        f"warm invocation, 10 rows (fixed):    {fixed_warm * 1000:.1f} ms (median)",
        f"warm invocation, {full['rows']} rows (256 KB): {full_warm * 1000:.1f} ms: "
        f"{report['full_rows_per_s']:,.0f} rows/s "
        f"({report['full_rows_per_s_after_fixed']:,.0f} rows/s after the fixed cost)",
    ]
    path = save_report("lambda_child" + ("-smoke" if SMOKE else ""), report)
    print("\n".join(lines) + f"\nsaved: {path}")
