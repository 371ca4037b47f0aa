"""`importer.lanes`: one batch's requests side by side, in order, never stalled."""

from __future__ import annotations

import threading
import time

import pytest

from importer.lanes import MAX_BATCH_THREADS, Lanes, batch_threads


def test_results_come_back_in_part_order_from_several_threads():
    lanes = Lanes(requests=8, batches=2)  # 4 lanes a batch
    seen: dict[int, str] = {}

    def fn(p: int) -> int:
        seen[p] = threading.current_thread().name
        time.sleep(0.002)
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
    assert lanes.run(lambda p: names.append(threading.current_thread().name) or p, [1, 2, 3]) == [
        1,
        2,
        3,
    ]
    assert set(names) == {threading.current_thread().name}
    lanes.close()


def test_every_part_runs_and_the_first_error_in_part_order_is_raised():
    lanes = Lanes(requests=4, batches=1)
    ran: list[int] = []
    lock = threading.Lock()

    def fn(p: int) -> int:
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
    release = threading.Event()
    blocker = threading.Thread(
        target=lambda: lanes.run(lambda p: release.wait(5) if p else 0, [0, 1])
    )
    blocker.start()
    time.sleep(0.05)  # the pool's only thread is now held by part 1 of the blocker
    started = time.perf_counter()
    try:
        assert lanes.run(lambda p: p + 1, [10, 20]) == [11, 21]
        assert time.perf_counter() - started < 1.0
    finally:
        release.set()
        blocker.join()
        lanes.close()


def test_after_close_the_caller_runs_every_part():
    lanes = Lanes(requests=6, batches=1)
    lanes.close()
    assert lanes.run(lambda p: p, [1, 2, 3]) == [1, 2, 3]


def test_batch_threads_stay_few_however_many_workers():
    assert batch_threads(1) == 1
    assert batch_threads(4) == 4
    assert batch_threads(50) == MAX_BATCH_THREADS
    assert batch_threads(500) == MAX_BATCH_THREADS
    with pytest.raises(ValueError):
        Lanes(requests=0)
