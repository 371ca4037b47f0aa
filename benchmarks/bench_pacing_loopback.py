"""The pacer with real threads and real HTTP against the loopback's capacity model.

A benchmark, not a test: how much of a second's capacity is used is a clock's
measure, and a loaded machine moves it. The pacer's decisions themselves are tested
deterministically in tests/test_pacing.py (the simulator, an injected clock). The
bounds below are asserted when timed; in smoke mode the run is short and only the
budget's never-throttled rule is held.
"""

from __future__ import annotations

import threading
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

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
