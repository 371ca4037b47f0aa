"""Peak RSS of `importer run` as the file grows: N rows and 10 x N rows, in every mode.

Memory must stay flat with the file's size in every mode (issue 12: a 10x larger
file within 15 % of the smaller one's peak).  Each run is a whole
`python -m importer.cli.main run` process against the compiled acknowledging endpoint
(ack_endpoint.py), its peak RSS read from the kernel (wait4's ru_maxrss); every
run is checked to have delivered all its rows.  blind has no run map; insert
(the default mode) reads before writing and keeps a run map of the batches in
flight (importer.modes.ledger.WindowLedger), so it is the mode whose memory could
grow with the file.
upsert, strict (the ack endpoint answers their reads and transactions) and
`--sync` (insert, with the data rows written too: two items a row) are measured
as well (issue 25); IMPORTER_BENCH_MEMORY_MODES=blind,insert picks modes.
The ratios are reported, not asserted (a single run's peak varies by some
10-20 % with timing); IMPORTER_BENCH_ENFORCE_MEMORY=1 makes a ratio over 1.15
fail.

Figures behind two of the defaults this benchmark guards (two cores):

* glibc's malloc arenas (`importer.cli.main._bound_malloc_arenas`): with one per
  contending thread, 1M rows peaked at 74 MB and 10M at 97 MB; two arenas gave 73
  and 75 MB at the same speed;
* the run map's in-memory part (`importer.modes.ledger.EntityLedger`): a dict costs
  ~250 bytes per entity (2.5 GB for 10M rows); kept at 50k entities (~9 MB) -- a
  200k dict (~37 MB) only raised the peak of every file past 200k rows, while the
  SQLite side costs a few milliseconds per batch of 1000.

    pytest benchmarks/bench_memory.py -s                               # N = 100,000
    IMPORTER_BENCH_MEMORY_ROWS=1000000 pytest benchmarks/bench_memory.py -s   # 1M vs 10M
    IMPORTER_BENCH_MEMORY_MODES=upsert,sync pytest benchmarks/bench_memory.py -s
    IMPORTER_BENCH_SMOKE=1 python -m pytest benchmarks --benchmark-disable -q
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks._clients import client_env, importer_cmd, run_measured, save_report, write_products
from tests.support.ack_endpoint import AckEndpoint

SMOKE = os.environ.get("IMPORTER_BENCH_SMOKE") == "1"
N = 300 if SMOKE else int(os.environ.get("IMPORTER_BENCH_MEMORY_ROWS", "100000"))
SIZES = (N, 10 * N)
MODES = tuple(
    m.strip()
    for m in os.environ.get("IMPORTER_BENCH_MEMORY_MODES", "blind,insert,upsert,strict,sync").split(
        ","
    )
    if m.strip()
)
GOAL = 1.15
TIMEOUT = 300.0 if SMOKE else 7200.0

PEAKS: dict[tuple[str, int], dict] = {}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[int, tuple[Path, Path, Path]]:
    base = tmp_path_factory.mktemp("memory")
    out = {}
    for rows in SIZES:
        directory = base / f"rows-{rows}"
        products, spec, _ = write_products(directory, rows)
        out[rows] = (directory, products, spec)
    return out


@pytest.mark.parametrize("rows", SIZES, ids=["N", "10N"])
@pytest.mark.parametrize("mode", MODES)
def test_peak_rss(benchmark, ack_binary, inputs, mode, rows):
    directory, products, spec = inputs[rows]
    with AckEndpoint(binary=ack_binary) as ep:
        # sync: the default mode with --sync (command records and data rows)
        given = None if mode == "sync" else mode
        cmd = importer_cmd(products, spec, ep.endpoint_url, given, directory, mode)
        cmd += ["--sync"] if mode == "sync" else []
        holder: dict = {}

        def run() -> None:
            holder["m"] = run_measured(
                cmd, env=client_env(ep.endpoint_url), cwd=directory, timeout=TIMEOUT
            )

        benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
        stats = ep.stats()
    m = holder["m"]
    assert m.returncode == 0, f"importer ({mode}) exited {m.returncode}: {m.tail()}"
    items = 2 * rows if mode == "sync" else rows
    assert stats["items"] == items, f"the endpoint got {stats['items']} of {items} items"
    summary = json.loads((directory / f"summary-{mode}.json").read_text())
    assert summary["written"] == rows, summary
    PEAKS[(mode, rows)] = {
        "rows": rows,
        "max_rss_mb": m.max_rss_kb / 1024,
        "seconds": m.seconds,
        "rows_per_second": rows / m.seconds,
    }


def test_zz_memory_ratio():
    if not PEAKS:
        pytest.skip("no run")
    small, big = SIZES
    lines = [
        f"\npeak RSS of `importer run`, {small:,} vs {big:,} rows (ack endpoint), goal: "
        f"<= {GOAL:.2f}x",
        f"{'mode':<10}{'RSS MB N':>10}{'RSS MB 10N':>12}{'ratio':>8}{'rows/s 10N':>12}  goal",
    ]
    report: dict = {"rows": list(SIZES), "goal_ratio": GOAL, "smoke": SMOKE, "modes": {}}
    over = []
    for mode in MODES:
        a, b = PEAKS.get((mode, small)), PEAKS.get((mode, big))
        if not a or not b:
            lines.append(f"{mode:<10}incomplete")
            continue
        ratio = b["max_rss_mb"] / a["max_rss_mb"]
        met = ratio <= GOAL
        if not met:
            over.append(f"{mode}: {ratio:.2f}x")
        report["modes"][mode] = {"N": a, "10N": b, "ratio": ratio, "goal_met": met}
        lines.append(
            f"{mode:<10}{a['max_rss_mb']:>10.0f}{b['max_rss_mb']:>12.0f}{ratio:>7.2f}x"
            f"{b['rows_per_second']:>12,.0f}  {'met' if met else 'NOT met'}"
        )
    text = "\n".join(lines)
    report["table"] = text
    path = save_report("memory" + ("-smoke" if SMOKE else ""), report)
    print(text + f"\nsaved: {path}")
    if over and os.environ.get("IMPORTER_BENCH_ENFORCE_MEMORY") == "1":
        pytest.fail("peak RSS grows with the file: " + ", ".join(over))
