"""`importer.dynamodb.request_pool`: one batch's requests side by side, in order, never stalled."""

from __future__ import annotations

import threading
import time

import pytest

from importer.dynamodb.pacing import Pacer
from importer.dynamodb.request_pool import (
    MAX_BATCH_THREADS,
    MIN_BATCHES_AT_ONCE,
    Lanes,
    Waits,
    batch_threads,
)
from importer.dynamodb.retry import Attempts, RetryPolicy
from tests.support.pacing_sim import FakeClock


def _feed(lanes: Lanes, n: int, wall: float, cpu: float) -> None:
    for _ in range(n):
        lanes.gauge.observe(wall, cpu)


def test_results_come_back_in_part_order_from_several_threads():
    lanes = Lanes(requests=8, batches=2)  # 4 lanes a batch
    _feed(lanes, 20, wall=0.010, cpu=0.000_1)  # a service with latency: every lane
    seen: dict[int, str] = {}
    caller = threading.current_thread().name
    pool_ran = threading.Event()

    def fn(p: int, _waits: Waits) -> int:
        name = seen[p] = threading.current_thread().name
        if name == caller:
            # the caller's own parts wait for a pool thread to run one (an event, not a
            # sleep: on a loaded machine the caller could otherwise take every group back)
            pool_ran.wait(30)
        else:
            pool_ran.set()
        return p * p

    try:
        assert lanes.run(fn, list(range(40))) == [p * p for p in range(40)]
    finally:
        lanes.close()
    assert len(set(seen.values())) > 1
    assert lanes.width == 4


def test_one_lane_runs_on_the_calling_thread():
    lanes = Lanes(requests=3, batches=3)
    names = []
    assert lanes.run(
        lambda p, _w: names.append(threading.current_thread().name) or p, [1, 2, 3]
    ) == [1, 2, 3]
    assert set(names) == {threading.current_thread().name}
    lanes.close()


def test_every_part_runs_and_the_first_error_in_part_order_is_raised():
    lanes = Lanes(requests=4, batches=1)
    _feed(lanes, 20, wall=0.010, cpu=0.000_1)
    ran: list[int] = []
    lock = threading.Lock()

    def fn(p: int, _waits: Waits) -> int:
        with lock:
            ran.append(p)
        if p in (3, 9):
            raise ValueError(f"part {p}")
        return p

    try:
        with pytest.raises(ValueError, match="part 3"):
            lanes.run(fn, list(range(12)))
    finally:
        lanes.close()
    # 4 lanes of 3 parts: a lane stops at its error, every other lane ran whole
    assert set(ran) == set(range(12)) - {4, 5, 10, 11}


def test_a_saturated_pool_does_not_stall_a_batch():
    """Lanes no pool thread has started are taken back by the caller."""
    lanes = Lanes(requests=2, batches=1)  # one pool thread
    _feed(lanes, 20, wall=0.010, cpu=0.000_1)
    release, held = threading.Event(), threading.Event()

    def hold(p: int, _waits: Waits) -> object:
        if p:
            held.set()
            return release.wait(60)
        return 0

    held_run: list[list[object]] = []
    blocker = threading.Thread(target=lambda: held_run.append(lanes.run(hold, [0, 1])))
    blocker.start()
    try:
        assert held.wait(60)  # a thread -- the pool's only one or the caller -- holds part 1
        assert lanes.run(lambda p, _w: p + 1, [10, 20]) == [11, 21]
    finally:
        release.set()
        blocker.join()
        lanes.close()
    # part 1 was still held when the batch above finished: released by us, not by its timeout
    assert held_run == [[0, True]]


def test_after_close_the_caller_runs_every_part():
    lanes = Lanes(requests=6, batches=1)
    lanes.close()
    assert lanes.run(lambda p, _w: p, [1, 2, 3]) == [1, 2, 3]


def test_batch_threads_stay_few_however_many_workers():
    assert batch_threads(1) == 1
    assert batch_threads(4) == 4
    assert batch_threads(50) == MAX_BATCH_THREADS
    assert batch_threads(500) == MAX_BATCH_THREADS
    with pytest.raises(ValueError):
        Lanes(requests=0)


def test_a_service_that_answers_at_once_gets_few_batches_and_one_lane():
    lanes = Lanes(requests=50, batches=8)
    # not measured yet: every batch, one lane each (no opening burst)
    assert (lanes.batches_now(), lanes.lanes_now()) == (8, 1)
    _feed(lanes, 100, wall=0.000_11, cpu=0.000_10)  # 10 us off-CPU per 100 us of CPU
    assert lanes.gauge.in_flight() == pytest.approx(1.1)
    assert (lanes.batches_now(), lanes.lanes_now()) == (MIN_BATCHES_AT_ONCE, 1)


def test_a_service_with_latency_gets_every_batch_and_lane_it_needs():
    lanes = Lanes(requests=50, batches=8)
    _feed(lanes, 100, wall=0.002_1, cpu=0.000_1)  # 2 ms away per 0.1 ms of CPU: 21 in flight
    assert (lanes.batches_now(), lanes.lanes_now()) == (8, 3)
    _feed(lanes, 100, wall=0.010_1, cpu=0.000_1)  # slower still: capped at 50 requests
    assert (lanes.batches_now(), lanes.lanes_now()) == (8, 3)  # the minimum remembers 2 ms...
    _feed(lanes, 600, wall=0.010_1, cpu=0.000_1)
    assert (lanes.batches_now(), lanes.lanes_now()) == (8, 6)  # ...for two windows at most


def test_backoff_sleeps_do_not_look_like_latency():
    """The minimum over a window ignores the requests that waited for a retry."""
    lanes = Lanes(requests=50, batches=8)
    for i in range(300):
        lanes.gauge.observe(0.5 if i % 3 == 0 else 0.000_12, 0.000_1)
    assert lanes.batches_now() == MIN_BATCHES_AT_ONCE and lanes.lanes_now() == 1


def test_run_times_each_part():
    lanes = Lanes(requests=4, batches=1)
    assert lanes.lanes_now() == 1
    try:
        lanes.run(lambda p, _w: time.sleep(0.001), list(range(20)))
    finally:
        lanes.close()
    wanted = lanes.gauge.in_flight()
    assert wanted is not None and wanted > 2  # a millisecond asleep per part, little CPU


def test_retry_backoff_counts_as_a_wait_that_lanes_can_hide():
    """Throttled requests sleep before they are sent again: more in flight hides the sleeps."""
    lanes = Lanes(requests=50, batches=8)

    def throttled_then_sent(p: int, waits: Waits) -> int:
        if p % 2:
            waits.add(0.02)  # as `Attempts.again` does before its sleep
        return p

    lanes.run(throttled_then_sent, list(range(64)))
    lanes.close()
    assert (lanes.batches_now(), lanes.lanes_now()) == (8, 6)


def test_parts_sent_in_order_are_still_timed():
    """A batch that must send in order (a key twice) still tells the gauge about its waits:
    otherwise one throttled stretch on one lane would never raise the lanes again."""
    lanes = Lanes(requests=8, batches=1)
    names = set()

    def part(p: int, waits: Waits) -> int:
        names.add(threading.current_thread().name)
        waits.add(0.01)
        return p

    assert lanes.run(part, list(range(20)), in_order=True) == list(range(20))
    lanes.close()
    assert names == {threading.current_thread().name}
    assert lanes.lanes_now() == 8


def test_backoff_and_pacing_sleeps_are_told_to_the_request_s_waits():
    """What the gauge counts as a chosen wait reaches it as an argument, not through a
    thread-local: the retry loop and the pacer add what they sleep (injected clocks)."""
    clock = FakeClock()
    waits = Waits()
    policy = RetryPolicy(base_delay=0.1, max_delay=0.1, rng=lambda: 1.0, sleep=clock.sleep)
    attempts = Attempts(policy, waits)
    assert attempts.again("throttled") and attempts.again("throttled")
    assert waits.seconds == pytest.approx(0.2) and clock.t == pytest.approx(0.2)
    pacer = Pacer(max_units_per_second=100, clock=clock, sleep=clock.sleep)
    pacer.acquire(25, 25, waits)
    slept = pacer.acquire(25, 25, waits)
    assert slept == pytest.approx(0.25) and waits.seconds == pytest.approx(0.45)
    other = Waits()  # another request's tally, on the same thread, is its own
    assert other.seconds == 0.0


def test_each_part_gets_its_own_waits_and_the_gauge_hears_them():
    lanes = Lanes(requests=1, batches=1)
    tallies: list[Waits] = []

    def part(p: int, waits: Waits) -> int:
        tallies.append(waits)
        waits.add(0.5)  # a long deliberate wait per part, no network wait
        return p

    lanes.run(part, list(range(lanes.gauge.warmup)))
    lanes.close()
    assert len({id(w) for w in tallies}) == lanes.gauge.warmup
    assert all(w.seconds == 0.5 for w in tallies)
    # the waits dominate the little CPU a part takes: more in flight would hide them
    wanted = lanes.gauge.in_flight()
    assert wanted is not None and wanted > 100
