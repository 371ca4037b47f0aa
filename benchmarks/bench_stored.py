"""The modes against a table that already holds the file: every key found (issue 25).

bench_side_by_side.py measures upsert, strict and `--sync` against an endpoint where
every read answers "nothing stored".  The case an MBC application lives on is the
other one: "import the updated file into the live table", where every entity is
stored (the previous import) and the mode stage compares each stored record with
its row.  Here the compiled acknowledging endpoint is started with `--stored FILE`
(tests/support/ack_server.c): BatchGetItem answers every key the previous import
wrote -- the data row at `TYPE#code` (version 1, another run's requestId) and the
command record at `@1` -- so each row reads its data row (found) and `@2` (absent).

Variants, all in one run, whole processes (`importer run` as a user types it):

* insert (the default) against the plain endpoint: the baseline, as in the issue;
* upsert / strict / `--mode upsert --sync`, stored **unchanged** (the file imported
  again): every row compared, none written;
* the same, stored **changed** (the previous import's `qty` differs on every row):
  every row written as version 2 (with `--sync`: its data row and history item too);
* upsert with `--update replace` (the row is the whole record), unchanged and changed.

`IMPORTER_BENCH_VARIANTS=upsert,replace` runs only the variants whose label contains one
of those words, `-sync` leaves out those that contain it (insert, the baseline, always
runs).

With `--sync`, stored changed, each row is four items (the command finished, the
previous command with its TTL, the history row, the merged data row), made in C
(`importer._native.existing_items`); session 35 measured it 0.04x -> 0.20x of insert
(240 -> 101 MB peak RSS), ~0.5x of plain upsert on the same table.

`IMPORTER_BENCH_BEFORE=/path/to/an/older/checkout` runs every variant with that
checkout's importer as well (its native extensions built in place), alternating
with this one, so a change is measured before and after in the same run.

    IMPORTER_BENCH_ROWS=100000 IMPORTER_BENCH_BEFORE=/tmp/before-modes \\
        pytest benchmarks/bench_stored.py -s
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks._clients import client_env, importer_cmd, run_measured, save_report, write_products
from tests.support.ack_endpoint import AckEndpoint

SMOKE = os.environ.get("IMPORTER_BENCH_SMOKE") == "1"
N = 300 if SMOKE else int(os.environ.get("IMPORTER_BENCH_ROWS", "100000"))
ROUNDS = 1 if SMOKE else int(os.environ.get("IMPORTER_BENCH_ROUNDS", "1"))
BEFORE = os.environ.get("IMPORTER_BENCH_BEFORE", "")
TIMEOUT = 300.0 if SMOKE else 3600.0

#: (label, mode, --sync, stored variant or None: the plain endpoint)
ALL_VARIANTS = (
    ("insert (default), nothing stored", None, False, None),
    ("upsert, stored unchanged", "upsert", False, "unchanged"),
    ("strict, stored unchanged", "strict", False, "unchanged"),
    ("upsert --sync, stored unchanged", "upsert", True, "unchanged"),
    ("upsert, stored changed", "upsert", False, "changed"),
    ("strict, stored changed", "strict", False, "changed"),
    ("upsert --sync, stored changed", "upsert", True, "changed"),
    ("upsert --update replace, stored unchanged", "upsert", False, "unchanged"),
    ("upsert --update replace, stored changed", "upsert", False, "changed"),
)
_WORDS = [w for w in os.environ.get("IMPORTER_BENCH_VARIANTS", "").split(",") if w]
_PICKED = [w for w in _WORDS if not w.startswith("-")]
_DROPPED = [w[1:] for w in _WORDS if w.startswith("-")]
VARIANTS = tuple(
    v
    for i, v in enumerate(ALL_VARIANTS)
    if i == 0
    or ((not _PICKED or any(w in v[0] for w in _PICKED)) and not any(w in v[0] for w in _DROPPED))
)
#: rows/s by (checkout, label), each round appended
RATES: dict[tuple[str, str], list[float]] = {}
#: peak RSS (MB) by (checkout, label), the largest of the rounds
RSS: dict[tuple[str, str], float] = {}


def _stored_lines(csv_path: Path, spec_path: Path, *, changed: bool) -> bytes:
    """What the previous import left: the data row and the @1 command record of each
    row (the lookup's projection), written by another run."""
    import csv

    from importer.transform import reference
    from importer.transform.context import RunContext
    from importer.transform.spec import parse_spec

    spec = parse_spec(json.loads(spec_path.read_text(encoding="utf-8")))
    ctx = RunContext(run_id="previous", timestamp="2024-01-01T00:00:00+00:00", source="bench")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [(i + 2, r) for i, r in enumerate(reader)]
    out = []
    for it in reference.transform_batch(spec, header, rows, ctx).items:
        doc = json.loads(it.wire)
        attributes = doc["attributes"]
        if changed:
            qty = attributes["M"]["qty"]["N"]
            attributes["M"]["qty"] = {"N": str(int(qty) + 1)}
        kept = {
            "pk": doc["pk"],
            "sk": doc["sk"],
            "version": {"N": "1"},
            "name": doc["name"],
            "attributes": attributes,
            "requestId": doc["requestId"],
            "isDeleted": {"BOOL": False},
        }
        command = json.dumps(kept, ensure_ascii=False, separators=(",", ":"))
        kept["sk"] = {"S": doc["sk"]["S"].rsplit("@", 1)[0]}
        data = json.dumps(kept, ensure_ascii=False, separators=(",", ":"))
        out += [data, command]
    return ("\n".join(out) + "\n").encode("utf-8")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("stored")
    products, spec, _keyed = write_products(base, N)
    out = {"dir": base, "csv": products, "spec": spec}
    for variant in ("unchanged", "changed"):
        path = base / f"stored-{variant}.jsonl"
        path.write_bytes(_stored_lines(products, spec, changed=variant == "changed"))
        out[variant] = path
    return out


def _checkouts() -> list[tuple[str, str]]:
    """(name, PYTHONPATH head): this checkout, and the one before when given."""
    return [("after", ""), *([("before", BEFORE)] if BEFORE else [])]


def _run(label, mode, sync, stored, checkout, files, ack_binary) -> tuple[float, float]:
    extra = ("--stored", str(files[stored])) if stored else ()
    with AckEndpoint(binary=ack_binary, extra_args=extra) as ep:
        tag = f"{checkout[0]}-{label.split(',')[0].replace(' ', '')}-{stored}"
        cmd = importer_cmd(files["csv"], files["spec"], ep.endpoint_url, mode, files["dir"], tag)
        if sync:
            cmd.append("--sync")
        if "--update replace" in label:
            cmd += ["--update", "replace"]
        env = client_env(ep.endpoint_url)
        if checkout[1]:
            env["PYTHONPATH"] = os.pathsep.join([checkout[1], env["PYTHONPATH"]])
        m = run_measured(cmd, env=env, cwd=files["dir"], timeout=TIMEOUT)
        stats = ep.stats()
    assert m.returncode == 0, f"{label} ({checkout[0]}) exited {m.returncode}: {m.tail()}"
    summary = json.loads((files["dir"] / f"summary-{tag}.json").read_text(encoding="utf-8"))
    counts = summary.get("counts", summary)
    if stored == "unchanged":  # nothing to write: every row equal to its stored record
        assert stats["items"] == 0, (label, checkout[0], stats, counts)
    else:  # every row written (with --sync: its data row and, when stored, history too)
        assert stats["items"] >= N, (label, checkout[0], stats, counts)
    return N / m.seconds, m.max_rss_kb / 1024


def test_rounds(ack_binary, files):
    for _ in range(ROUNDS):
        for label, mode, sync, stored in VARIANTS:
            for checkout in _checkouts():
                rate, rss = _run(label, mode, sync, stored, checkout, files, ack_binary)
                RATES.setdefault((checkout[0], label), []).append(rate)
                RSS[(checkout[0], label)] = max(rss, RSS.get((checkout[0], label), 0.0))


def _median(values: list[float]) -> float:
    values = sorted(values)
    half = len(values) // 2
    return values[half] if len(values) % 2 else (values[half - 1] + values[half]) / 2


def test_zz_summary():
    if not RATES:
        pytest.skip("no rounds ran")
    names = [c[0] for c in _checkouts()]
    head = (
        "| `importer run` | "
        + " | ".join(f"{n} rows/s | {n} vs insert | {n} peak RSS" for n in names)
        + " |"
    )
    lines = [
        f"{N:,} rows, products file, compiled ack endpoint, median of {ROUNDS} round(s)",
        head,
        "|" + "---|" * (1 + 3 * len(names)),
    ]
    report: dict = {"rows": N, "rounds": ROUNDS, "rates": {}, "rss_mb": {}}
    for label, *_ in VARIANTS:
        cells = []
        for name in names:
            rate = _median(RATES[(name, label)])
            base = _median(RATES[(name, VARIANTS[0][0])])
            rss = RSS[(name, label)]
            cells.append(f"{rate / 1000:.1f}k | {rate / base:.2f} | {rss:.0f} MB")
            report["rates"][f"{name}: {label}"] = rate
            report["rss_mb"][f"{name}: {label}"] = rss
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print("\n" + text)
    save_report("stored", {"table": text, **report})
