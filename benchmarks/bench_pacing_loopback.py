"""The pacer with real threads (and real HTTP against the loopback's capacity model).

A benchmark, not a test: how much of a second's capacity is used is a clock's
measure, and a loaded machine moves it. The pacer's decisions themselves are tested
deterministically in tests/test_pacing.py (the simulator, an injected clock). The
bounds below are asserted when timed; in smoke mode the run is short and only the
budget's never-throttled rule is held.
"""

from __future__ import annotations

import json
import threading
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from importer.dynamodb.capacity_units import item_write_units
from importer.dynamodb.pacing import Pacer
from tests.support.ddb_server import DdbServer


def write_for(url: str, pacer: Pacer, seconds: float, threads: int = 8) -> dict[str, int]:
    client = boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
        config=Config(retries={"total_max_attempts": 1}, max_pool_connections=threads),
    )
    stop = time.monotonic() + seconds
    totals = {"requests": 0, "throttled": 0}
    lock = threading.Lock()

    def worker(n: int) -> None:
        i, pending, requests, throttled = 0, [], 0, 0
        while time.monotonic() < stop:
            if not pending:
                pending = [
                    {"PutRequest": {"Item": {"pk": {"S": f"P#{n}"}, "sk": {"S": f"{i + k}"}}}}
                    for k in range(25)
                ]
                i += 25
            pacer.acquire(len(pending), len(pending))
            requests += 1
            try:
                back = client.batch_write_item(RequestItems={"T": pending})["UnprocessedItems"]
                back = back.get("T", [])
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
                back = pending
            done = len(pending) - len(back)
            throttled += bool(back)
            pacer.settle(
                sent=len(pending), processed=done, processed_units=done, throttled=bool(back)
            )
            pending = back
            if pending:
                time.sleep(0.05)
        with lock:
            totals["requests"] += requests
            totals["throttled"] += throttled

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return totals


def test_budget_at_half_capacity_is_kept_and_never_throttled(smoke):
    with DdbServer(tables=["T"], write_capacity=2000, capacity_burst=0.5) as srv:
        pacer = Pacer(max_units_per_second=1000)
        totals = write_for(srv.endpoint_url, pacer, seconds=1.0 if smoke else 3.0)
        consumed = srv.capacity.consumed("write")
        assert totals["throttled"] == 0
        assert "capacity.unprocessed.write" not in srv.stats()
        assert srv.capacity.window_max("write") <= 1.05 * 1000
        span = consumed[-1][0] - consumed[0][0]
        used = sum(u for _, u in consumed) / span
        print(f"\nbudget 1000 units/s: {used:.0f} used")
        if not smoke:
            assert used >= 0.9 * 1000  # and the budget is used


def test_converges_to_the_loopback_capacity(smoke):
    with DdbServer(tables=["T"], write_capacity=1000, capacity_burst=0.5) as srv:
        pacer = Pacer()
        started = time.monotonic()
        totals = write_for(srv.endpoint_url, pacer, seconds=2.0 if smoke else 6.0)
        late = sum(u for t, u in srv.capacity.consumed("write") if t >= started + 3.0)
        seen = (late, pacer.rate, totals, pacer.stats)
        print(f"\nconverged: {seen}")
        if smoke:
            return
        assert late >= 0.8 * 1000 * 3.0, seen
        assert pacer.rate is not None and pacer.rate <= 1.3 * 1000, seen
        # the pacer climbs back to its ceiling quickly (utilisation first); the price is
        # a throttled share of up to about a third here -- the same bound and reason as
        # benchmarks/bench_capacity_run.py
        assert totals["throttled"] <= 0.35 * totals["requests"], seen


def test_read_pacer_budget_with_real_threads(smoke):
    """8 threads against a 2000 units/s read budget on the real clock: the first half
    second holds half the budget, give or take (the same rule on a fake clock, without
    the machine's load in it, is tests/test_pacing.py's)."""
    pacer = Pacer(max_units_per_second=2000, kind="read")
    stamps: list[tuple[float, int]] = []
    lock = threading.Lock()
    stop = time.monotonic() + 0.6

    def worker() -> None:
        while time.monotonic() < stop:
            pacer.acquire(10, 10)
            with lock:
                stamps.append((time.monotonic(), 10))
            pacer.settle(sent=10, processed=10, processed_units=10, throttled=False)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = min(s for s, _ in stamps)
    in_first_half_second = sum(u for s, u in stamps if s < first + 0.5)
    print(f"\nread budget 2000 units/s: {in_first_half_second} units in the first 0.5 s")
    assert pacer.stats.requests == len(stamps)
    if not smoke:
        assert in_first_half_second <= 2000 * 0.5 * 1.05 + 10
        assert in_first_half_second >= 2000 * 0.5 * 0.8


def test_write_units_fast_path_is_cheap(smoke):
    """The pacer sizes every request by its items' write units: the usual item's count
    must cost a few microseconds, not a JSON parse."""
    small = json.dumps(
        {"pk": {"S": "PRODUCT#acme"}, "sk": {"S": "PRODUCT#X@1"}, "n": {"S": "a" * 500}},
        separators=(",", ":"),
    ).encode()
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        item_write_units(small)
    per_call = (time.perf_counter() - t0) / n
    print(f"\nitem_write_units: {per_call * 1e6:.2f} us per call")
    if not smoke:
        assert per_call < 5e-6, f"{per_call * 1e6:.2f} us per call"
