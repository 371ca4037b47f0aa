"""Input types side by side: the same products as CSV, JSONL, JSON and Parquet.

The side-by-side benchmark's products file (importer.cli.bench, all N rows valid)
converted to each type with the spec's types (tests/support/formats_data.py: numbers as
numbers, booleans as booleans, dates as Parquet dates), each imported by a whole
`importer run --mode blind` process against its own fresh compiled acknowledging
endpoint (ack_endpoint.py), which counts the PutRequests: every run is checked
to have delivered exactly N items.  The types run in alternating rounds
(IMPORTER_BENCH_ROUNDS, 3) and each type's rows/s is reported as the median of
its rounds' ratios to the CSV run of the same round (issue 28's goals:
Parquet >= 1x, JSONL >= 0.7x; printed, not asserted -- the machine is shared).

Before and after a change, in one run: with IMPORTER_BENCH_BEFORE=<another checkout
of this repository, its compiled cores built in place> every round also runs CSV and
Parquet from that tree (which tree goes first alternates by round), and the before
tree's Parquet/CSV ratio is printed under this tree's -- the two ratios are the
comparison (absolute rows/s drift with the machine's load).  In smoke mode without it
the before rows run this tree, so CI runs that machinery too.

Figures behind the Parquet reader's choices (importer.input.parquet), on this
benchmark's 100,000-row file: decoding 65,536-row slices took ~27 ms of CPU against
~34 ms in 16,384-row ones (BATCH_ROWS; in-process, jemalloc, medians of 21); the first
slice is 4,096 rows (FIRST_ROWS): with a whole 65,536-row first slice the first batch
left ~90 ms of CPU after the source was opened, with it ~40 ms, nearly all pyarrow's
import; opening files with pyarrow's own reader rather than `import pyarrow.parquet`
(which imports every filesystem) saved about 22 ms of CPU a process.  pyarrow's
default mimalloc pool put the decoded buffers on transparent huge pages the kernel
zeroed (perf: clear_page_erms, 30-190 ms of CPU a run, the largest part of what a
Parquet run cost over a CSV one and of its spread): the reader makes jemalloc the pool.
Session 35, against the tree before it: 100k rows, 9 rounds, Parquet 0.85x -> 0.89x
its CSV's rows/s (rounds 0.69-0.89 -> 0.88-0.93), CPU per run CSV/Parquet 0.87 ->
0.91, peak RSS 165 -> 109 MB; at 1M rows (5 rounds) 0.85x -> 0.93x, where the next
slice decoded on a helper thread while this one is cut 4,096 rows at a time keeps the
batch threads from running dry (importer.input.parquet._DecodeAhead).

    pytest benchmarks/bench_formats.py -s                     # N = 100,000
    IMPORTER_BENCH_BEFORE=/tmp/before IMPORTER_BENCH_ROUNDS=9 pytest benchmarks/bench_formats.py -s
    IMPORTER_BENCH_SMOKE=1 python -m pytest benchmarks/bench_formats.py --benchmark-disable -q
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks._clients import (
    before_tree,
    client_env,
    importer_cmd,
    run_measured,
    save_report,
    write_products,
)
from tests.support.ack_endpoint import AckEndpoint

SMOKE = os.environ.get("IMPORTER_BENCH_SMOKE") == "1"
N = 500 if SMOKE else int(os.environ.get("IMPORTER_BENCH_ROWS", "100000"))
ROUNDS = 1 if SMOKE else int(os.environ.get("IMPORTER_BENCH_ROUNDS", "3"))
TIMEOUT = 300.0 if SMOKE else 3600.0
TYPES = ("CSV", "PARQUET", "JSONL", "JSON")
GOALS = {"PARQUET": 1.0, "JSONL": 0.7}
#: the types also run from IMPORTER_BENCH_BEFORE's tree, in the same rounds
BEFORE_TYPES = ("CSV", "PARQUET")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("pyarrow")
    from importer.cli.bench import BENCH_SPEC
    from importer.transform.spec import parse_spec
    from tests.support.formats_data import write_json, write_jsonl, write_parquet

    base = tmp_path_factory.mktemp("formats")
    products, spec, _keyed = write_products(base, N)
    kinds = {rule.name: rule.type for rule in parse_spec(BENCH_SPEC).columns}
    data = products.read_bytes()
    return {
        "dir": base,
        "spec": spec,
        "CSV": products,
        "JSONL": write_jsonl(base / "products.jsonl", data, kinds),
        "JSON": write_json(base / "products.json", data, kinds),
        "PARQUET": write_parquet(base / "products.parquet", data, kinds),
    }


def _rate(kind: str, files: dict[str, Path], ack_binary: Path, tree: Path | None = None) -> dict:
    """One whole `importer run --mode blind` of `kind` (from `tree`, else this checkout),
    checked to have written every row."""
    with AckEndpoint(binary=ack_binary) as ep:
        tag = f"fmt-{kind.lower()}"
        cmd = importer_cmd(files[kind], files["spec"], ep.endpoint_url, "blind", files["dir"], tag)
        m = run_measured(
            cmd, env=client_env(ep.endpoint_url, tree), cwd=files["dir"], timeout=TIMEOUT
        )
        stats = ep.stats()
    assert m.returncode == 0, f"{kind} exited {m.returncode}: {m.tail()}"
    assert stats["items"] == N, f"{kind}: the endpoint got {stats['items']} of {N} items"
    summary = json.loads((files["dir"] / f"summary-{tag}.json").read_text())
    assert summary["written"] == N and summary["input_type"] == kind, summary
    return {
        "rows_per_second": N / m.seconds,
        "cpu_seconds": m.cpu_seconds,
        "max_rss_mb": m.max_rss_kb / 1024,
    }


def _round(k: int, files: dict[str, Path], ack_binary: Path, tree: Path | None) -> dict:
    """One round: every type from this tree, and BEFORE_TYPES from `tree` (keys
    "before CSV", ...), which tree goes first alternating by round."""

    def ours() -> dict:
        return {kind: _rate(kind, files, ack_binary) for kind in TYPES}

    def theirs() -> dict:
        return {f"before {kind}": _rate(kind, files, ack_binary, tree) for kind in BEFORE_TYPES}

    if tree is None:
        return ours()
    return {**ours(), **theirs()} if k % 2 else {**theirs(), **ours()}


def _median(values: list[float]) -> float:
    values = sorted(values)
    half = len(values) // 2
    return values[half] if len(values) % 2 else (values[half - 1] + values[half]) / 2


def test_input_types_against_csv_in_alternating_rounds(ack_binary, files):
    tree, _reason = before_tree()
    if tree is None and SMOKE:
        tree = Path(__file__).resolve().parents[1]  # the before/after machinery runs in CI too
    rounds = [_round(k, files, ack_binary, tree) for k in range(ROUNDS)]
    lines = [f"\ninput types, N = {N:,} rows, blind, compiled ack endpoint, {ROUNDS} round(s)"]
    report: dict = {"rows": N, "smoke": SMOKE, "rounds": rounds, "ratios": {}}
    for kind in TYPES:
        ratios = [r[kind]["rows_per_second"] / r["CSV"]["rows_per_second"] for r in rounds]
        rates = sorted(r[kind]["rows_per_second"] for r in rounds)
        rss = max(r[kind]["max_rss_mb"] for r in rounds)
        cpu = _median([r["CSV"]["cpu_seconds"] / r[kind]["cpu_seconds"] for r in rounds])
        median = _median(ratios)
        report["ratios"][kind] = median
        goal = GOALS.get(kind)
        mark = (
            "" if goal is None else f"  (goal >= {goal}x: {'met' if median >= goal else 'NOT met'})"
        )
        lines.append(
            f"{kind:<8} {rates[0]:>10,.0f}-{rates[-1]:,.0f} rows/s  x{median:.2f} of CSV "
            f"(rounds {min(ratios):.2f}-{max(ratios):.2f})  CPU CSV/{kind} {cpu:.2f}  "
            f"peak RSS {rss:.0f} MB{mark}"
        )
    if tree is not None:
        # the same ratio from the tree before the change, measured in the same rounds
        report["before_tree"] = str(tree)
        ratios = [
            r["before PARQUET"]["rows_per_second"] / r["before CSV"]["rows_per_second"]
            for r in rounds
        ]
        cpu = _median(
            [r["before CSV"]["cpu_seconds"] / r["before PARQUET"]["cpu_seconds"] for r in rounds]
        )
        rss = max(r["before PARQUET"]["max_rss_mb"] for r in rounds)
        report["ratios"]["before PARQUET"] = _median(ratios)
        lines.append(
            f"before ({tree}): PARQUET x{_median(ratios):.2f} of its CSV "
            f"(rounds {min(ratios):.2f}-{max(ratios):.2f})  CPU CSV/PARQUET {cpu:.2f}  "
            f"peak RSS {rss:.0f} MB"
        )
    print("\n".join(lines))
    save_report("formats", report)
