"""`importer validate` against what it previews (issue 31): checking a file must cost less
than importing it.

Whole processes, as a user types them (benchmarks/_clients.py's launcher: wall time from
spawn to exit, peak RSS from the kernel), on one generated products file of N rows (all
valid, every sku distinct), in one pytest run:

* `importer validate` -- no table: the rows checked against each other, the
  cross-file duplicate rule included (the mode stage's `DigestLedger`);
* `importer run` (the default insert mode) of the same file against the compiled
  acknowledging endpoint (tests/support/ack_endpoint.py), checked to have delivered all N items;
  goal: validate >= 2x its rows/s;
* `importer validate --engine reference` (the pure-Python engine), on the first
  REF_ROWS rows (it runs at a few thousand rows/s: a million would take minutes);
  goal: validate >= 10x its rows/s;
* for information, `importer validate --table` against the endpoint: the same
  check plus the reads of what is stored;
* validate's peak RSS on 10N rows (the N-row file ten times, each copy's skus moved
  to a range of their own) against N rows; goal: within 1.15x, or under 300 MB.

Validate and run alternate over IMPORTER_BENCH_PAIRS rounds (default 3); the ratios are
the medians of the rounds' ratios.  (Why validate's run map is the native
`DigestLedger` and not SQLite: with SQLite it spent 80 % of its time there, under the
mode stage's lock.)

    pytest benchmarks/bench_validate.py -s                      # N = 1,000,000
    IMPORTER_BENCH_VALIDATE_ROWS=200000 pytest benchmarks/bench_validate.py -s
    IMPORTER_BENCH_VALIDATE_BIG=0 ...                           # skip the 10N memory run
    IMPORTER_BENCH_SMOKE=1 python -m pytest benchmarks --benchmark-disable -q
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import pytest

from benchmarks._clients import (
    REGION,
    TABLE,
    client_env,
    importer_cmd,
    run_measured,
    save_report,
    write_products,
)
from tests.support.ack_endpoint import AckEndpoint

SMOKE = os.environ.get("IMPORTER_BENCH_SMOKE") == "1"
N = 2000 if SMOKE else int(os.environ.get("IMPORTER_BENCH_VALIDATE_ROWS", "1000000"))
REF_ROWS = min(N, 500 if SMOKE else int(os.environ.get("IMPORTER_BENCH_REFERENCE_ROWS", "100000")))
PAIRS = 1 if SMOKE else int(os.environ.get("IMPORTER_BENCH_PAIRS", "3"))
BIG = os.environ.get("IMPORTER_BENCH_VALIDATE_BIG", "1") != "0"
TIMEOUT = 300.0 if SMOKE else 3600.0
GOAL_RUN, GOAL_REFERENCE, GOAL_MEMORY, GOAL_MEMORY_MB = 2.0, 10.0, 1.15, 300.0

RESULTS: dict[str, list[dict]] = {}


def _validate_cmd(csv_path: Path, spec: Path, workdir: Path, tag: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "importer.cli.main", "validate", str(csv_path), "--spec", str(spec),
        "--region", REGION, "--quiet", "--summary-json", str(workdir / f"summary-{tag}.json"),
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("validate")
    products, spec, keyed = write_products(base, N)
    keyed.unlink()  # ddbimport's copy: not needed here
    data = products.read_bytes()
    head = data.split(b"\n", 1)[0] + b"\n"
    reference = base / "reference.csv"
    rows = data.split(b"\n", REF_ROWS + 1)[1 : REF_ROWS + 1]  # one line a row: no newline in
    reference.write_bytes(head + b"\n".join(rows) + b"\n")  # a field of this file
    out = {"dir": base, "csv": products, "spec": spec, "reference": reference}
    if BIG:
        assert N <= 1_000_000, "the 10N file moves each copy's skus by their 7th digit"
        big = base / "products-10n.csv"
        body = data[len(head) :]
        assert body.startswith(b"SKU-00")
        with open(big, "wb") as fh:
            fh.write(head)
            for k in range(10):  # SKU-00xxxxxx -> SKU-0kxxxxxx: ten disjoint ranges
                fh.write(body if k == 0 else b"SKU-0%d" % k + body[6:].replace(
                    b"\nSKU-00", b"\nSKU-0%d" % k))  # fmt: skip
        out["big"] = big
    return out


def _summary(files: dict[str, Path], tag: str) -> dict:
    return json.loads((files["dir"] / f"summary-{tag}.json").read_text())


def _measure(cmd: list[str], files: dict[str, Path], url: str, tag: str, rows: int) -> dict:
    m = run_measured(cmd, env=client_env(url), cwd=files["dir"], timeout=TIMEOUT)
    assert m.returncode == 0, f"{tag} exited {m.returncode}: {m.tail()}"
    summary = _summary(files, tag)
    assert summary["rows"] == rows and summary["rejected"] == 0, summary
    result = {
        "rows": rows,
        "seconds": m.seconds,
        "rows_per_second": rows / m.seconds,
        "cpu_seconds": m.cpu_seconds,
        "max_rss_mb": m.max_rss_kb / 1024,
    }
    RESULTS.setdefault(tag, []).append(result)
    return result


def _validate(files: dict[str, Path], *extra: str, tag: str = "validate", source: str = "csv"):
    rows = {"csv": N, "reference": REF_ROWS, "big": 10 * N}[source]
    cmd = _validate_cmd(files[source], files["spec"], files["dir"], tag, *extra)
    result = _measure(cmd, files, "http://127.0.0.1:9", tag, rows)  # no endpoint is read
    assert _summary(files, tag)["would_write"] == rows
    return result


def test_validate_and_run_in_alternating_rounds(ack_binary, files):
    for _ in range(PAIRS):
        _validate(files)
        with AckEndpoint(binary=ack_binary) as ep:
            cmd = importer_cmd(
                files["csv"], files["spec"], ep.endpoint_url, None, files["dir"], "run"
            )
            _measure(cmd, files, ep.endpoint_url, "run", N)
            stats = ep.stats()
        assert stats["items"] == N, f"run: the endpoint got {stats['items']} of {N} items"


def test_validate_reading_the_table(ack_binary, files):
    with AckEndpoint(binary=ack_binary) as ep:
        extra = ("--table", TABLE, "--endpoint-url", ep.endpoint_url)
        cmd = _validate_cmd(files["csv"], files["spec"], files["dir"], "validate-table", *extra)
        _measure(cmd, files, ep.endpoint_url, "validate-table", N)
        stats = ep.stats()
    assert stats["items"] == 0 and stats["BatchGetItem"] >= N // 100, stats  # read, never wrote


def test_reference_engine_validate(files):
    _validate(files, "--engine", "reference", tag="reference", source="reference")


def test_validate_memory_on_ten_times_the_rows(files):
    if not BIG:
        pytest.skip("IMPORTER_BENCH_VALIDATE_BIG=0")
    _validate(files, tag="validate-10n", source="big")


def _median_ratio(fast: str, slow: str) -> tuple[float, float, float]:
    """Median, min and max of the per-round ratios of rows/s (fast over slow)."""
    ratios = [
        a["rows_per_second"] / b["rows_per_second"]
        for a, b in zip(RESULTS[fast], RESULTS[slow], strict=False)
    ]
    return statistics.median(ratios), min(ratios), max(ratios)


def test_zz_summary():
    if "validate" not in RESULTS:
        pytest.skip("no run")
    report: dict = {"rows": N, "reference_rows": REF_ROWS, "smoke": SMOKE, "runs": RESULTS}
    rate = statistics.median(r["rows_per_second"] for r in RESULTS["validate"])
    lines = [f"\n`importer validate`, {N:,} rows: {rate:,.0f} rows/s (median of {PAIRS})"]
    goals = []
    if "run" in RESULTS:
        med, lo, hi = _median_ratio("validate", "run")
        run_rate = statistics.median(r["rows_per_second"] for r in RESULTS["run"])
        goals.append(("vs `importer run` (insert, ack endpoint)", med, GOAL_RUN))
        lines.append(
            f"  run (insert):            {run_rate:>10,.0f} rows/s   validate/run "
            f"{med:.2f}x (rounds {lo:.2f}-{hi:.2f}), goal >= {GOAL_RUN:.0f}x"
        )
    if "reference" in RESULTS:
        ref_rate = RESULTS["reference"][0]["rows_per_second"]
        ratio = rate / ref_rate
        goals.append(("vs the reference engine's validate", ratio, GOAL_REFERENCE))
        lines.append(
            f"  validate, reference:     {ref_rate:>10,.0f} rows/s   ({REF_ROWS:,} rows) "
            f"ratio {ratio:.1f}x, goal >= {GOAL_REFERENCE:.0f}x"
        )
    if "validate-table" in RESULTS:
        t = RESULTS["validate-table"][0]["rows_per_second"]
        lines.append(f"  validate --table (reads):{t:>10,.0f} rows/s   (information)")
    small = RESULTS["validate"][0]["max_rss_mb"]
    lines.append(f"  peak RSS, {N:,} rows:     {small:>8.0f} MB")
    if "validate-10n" in RESULTS:
        big = RESULTS["validate-10n"][0]
        ratio = big["max_rss_mb"] / small
        met = ratio <= GOAL_MEMORY or big["max_rss_mb"] < GOAL_MEMORY_MB
        report["memory"] = {"ratio": ratio, "goal_met": met}
        lines.append(
            f"  peak RSS, {10 * N:,} rows:    {big['max_rss_mb']:>8.0f} MB   ratio {ratio:.2f}x "
            f"({big['rows_per_second']:,.0f} rows/s), goal <= {GOAL_MEMORY}x or < "
            f"{GOAL_MEMORY_MB:.0f} MB: {'met' if met else 'NOT met'}"
        )
    report["goals"] = {name: {"ratio": r, "goal": g, "met": r >= g} for name, r, g in goals}
    text = "\n".join(lines)
    report["table"] = text
    path = save_report("validate" + ("-smoke" if SMOKE else ""), report)
    print(text + f"\nsaved: {path}")
