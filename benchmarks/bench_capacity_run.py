"""`importer run` against a table of limited capacity: it runs at the table's pace.

A benchmark, not a test: what it checks is how much of a second's capacity is used,
which only a clock on real sockets can show, and a loaded two-core machine moves.
The row counts are checked always; the pace only when timed (not in smoke mode).
Deterministic pacing decisions are tested in tests/test_pacing.py (the simulator).

The loopback DynamoDB's capacity model (tests/support/ddb_server.py) is a token bucket
of write units per second with a small burst: a BatchWriteItem gets the items
that fit, the rest back as UnprocessedItems, ProvisionedThroughputExceeded when
none fit.  Every test runs the real command (`run_cli`) with its defaults.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import PRODUCT_SPEC
from tests.support.ddb_server import DdbServer
from tests.test_capacity_run import CMD, write_csv


@pytest.fixture
def spec(write_file):
    return write_file("spec.toml", PRODUCT_SPEC)


def units_between(srv: DdbServer, start: float, end: float) -> float:
    return sum(u for t, u in srv.capacity.consumed("write") if start <= t < end)


def test_a_fixed_capacity_is_used_and_barely_overrun(run_cli, spec, tmp_path, smoke):
    capacity = 1500
    src = write_csv(tmp_path / "in.csv", 9000)
    with DdbServer(tables=[CMD], write_capacity=capacity, capacity_burst=0.5) as srv:
        started = time.monotonic()
        res = run_cli("run", src, spec=spec, table=CMD, endpoint_url=srv.endpoint_url, mode="blind")
        ended = time.monotonic()
        assert res.code == 0, res.stderr
        assert res.summary["written"] == 9000 and len(srv.items(CMD)) == 9000
        # after the first push-back (2 s), the table's capacity is used...
        late = units_between(srv, started + 2.0, ended - 0.5)
        if not smoke:
            assert late >= 0.9 * capacity * (ended - 0.5 - started - 2.0), late
        # ...and requests go through: from the same point on, at most 10 % are
        # throttled (the bound).  Before it lies the opening storm -- fifty
        # workers start unpaced and up to fifty requests are in flight when the first
        # push-back is judged; on a busy machine its tail reaches into the second
        # second (one CI run: 15 % from 1 s on) -- so the whole run is bounded more
        # loosely (measured here: 0-5 % after the first second, 14-16 % resent in all).
        calls = srv.stats()["calls.BatchWriteItem"]
        print(
            f"\nfixed capacity: late-window use {late:.0f} units, retries {res.summary['retries']}"
        )
        if not smoke:
            assert srv.capacity.throttled_share("write", since=started + 2.0) <= 0.10
            assert res.summary["retries"] <= 0.25 * calls, (res.summary["retries"], calls)


def test_when_capacity_doubles_the_import_finds_the_new_level(run_cli, spec, tmp_path, smoke):
    src = write_csv(tmp_path / "in.csv", 24000)
    with DdbServer(tables=[CMD], write_capacity=1000, capacity_burst=0.5) as srv:
        raised_at: list[float] = []

        def raise_capacity() -> None:
            time.sleep(4.0)
            srv.capacity.set(write=2000)
            raised_at.append(time.monotonic())

        threading.Thread(target=raise_capacity, daemon=True).start()
        res = run_cli("run", src, spec=spec, table=CMD, endpoint_url=srv.endpoint_url, mode="blind")
        assert res.code == 0, res.stderr
        assert len(srv.items(CMD)) == 24000
        [t0] = raised_at
        # within 10 s of the increase, some one-second window reaches 80 % of the new level
        windows = [units_between(srv, t0 + s, t0 + s + 1.0) for s in range(0, 10)]
        print(f"\ncapacity doubled: best window {max(windows):.0f} of 2000 units")
        if not smoke:
            assert max(windows) >= 0.8 * 2000, windows


def test_a_budget_is_kept_and_never_throttled(run_cli, spec, tmp_path, smoke):
    src = write_csv(tmp_path / "in.csv", 4000)
    with DdbServer(tables=[CMD], write_capacity=2000, capacity_burst=0.5) as srv:
        res = run_cli(
            "run",
            src,
            spec=spec,
            table=CMD,
            endpoint_url=srv.endpoint_url,
            mode="blind",
            max_wcu=1000,
        )
        assert res.code == 0, res.stderr
        assert len(srv.items(CMD)) == 4000
        assert srv.capacity.window_max("write") <= 1.05 * 1000
        stats = srv.stats()
        assert "capacity.unprocessed.write" not in stats
        assert "capacity.throttled.write" not in stats
        consumed = srv.capacity.consumed("write")
        span = consumed[-1][0] - consumed[0][0]
        print(f"\nbudget 1000: {4000 / span:.0f} units/s used")
        if not smoke:
            assert 4000 / span >= 0.8 * 1000  # and the budget is used, not wasted


def test_random_faults_do_not_slow_the_import_down(run_cli, spec, tmp_path, smoke):
    """Throttles, partial answers, 500s and dropped connections at random, not capacity:
    every row is stored exactly once, within 5x the fault-free time."""
    src = write_csv(tmp_path / "in.csv", 30000)
    with DdbServer(tables=[CMD]) as srv:
        t = time.monotonic()
        clean = run_cli("run", src, spec=spec, table=CMD, endpoint_url=srv.endpoint_url)
        fault_free = time.monotonic() - t
        assert clean.code == 0
    with DdbServer(tables=[CMD]) as srv:
        srv.faults.set(
            seed=42,
            throttle=0.2,
            unprocessed=0.2,
            server_error=0.05,
            drop_before=0.01,
            drop_after=0.01,
            ops={"BatchWriteItem"},
        )
        t = time.monotonic()
        res = run_cli("run", src, spec=spec, table=CMD, endpoint_url=srv.endpoint_url)
        faulty = time.monotonic() - t
        assert res.code == 0, res.stderr
        assert res.summary["written"] == 30000 and len(srv.items(CMD)) == 30000
        print(f"\nrandom faults: {faulty / fault_free:.2f}x the fault-free time")
        if not smoke:
            assert faulty <= 5 * fault_free, (faulty, fault_free)


def test_a_service_with_latency_gets_a_batch_requests_side_by_side(run_cli, spec, tmp_path, smoke):
    """--workers is requests in flight: with 20 ms per answer, 8 batch threads are not
    enough, and once the first requests are timed each batch's requests overlap (lanes)
    up to --workers, never beyond."""
    src = write_csv(tmp_path / "in.csv", 16000)
    with DdbServer(tables=[CMD]) as srv:
        srv.faults.set(latency=0.02, ops={"BatchWriteItem"})
        res = run_cli(
            "run",
            src,
            spec=spec,
            table=CMD,
            endpoint_url=srv.endpoint_url,
            mode="blind",
            workers=32,
            batch_items=1000,
        )
        assert res.code == 0, res.stderr
        assert res.summary["written"] == 16000 and len(srv.items(CMD)) == 16000
        peak = srv.stats()["in_flight.max"]
    print(f"\nlatency 20 ms: {peak} requests in flight at the peak")
    assert peak <= 32 + 1, peak  # never beyond --workers (+1: the DescribeTable)
    if not smoke:
        assert 8 < peak, peak
