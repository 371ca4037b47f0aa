"""Bounded submission (`importer.run.window.BoundedWindow`), with a hand-driven executor.

Nothing here runs on a clock: each task finishes when the test says so, and the
submitting thread's blocking is observed through what it settled and submitted.
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor, Future

import pytest

from importer.run.window import BoundedWindow


class _Manual(Executor):
    """An executor whose tasks finish when `finish(i)` is called (in any order)."""

    def __init__(self) -> None:
        self.futures: list[Future] = []
        self.calls: list[tuple] = []
        self.submitted = threading.Condition()

    def submit(self, fn, *args, **kwargs):
        future: Future = Future()
        with self.submitted:
            self.futures.append(future)
            self.calls.append((fn, args, kwargs))
            self.submitted.notify_all()
        return future

    def finish(self, i: int) -> None:
        fn, args, kwargs = self.calls[i]
        future = self.futures[i]
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn(*args, **kwargs))
            except Exception as exc:  # noqa: BLE001 - the task's error goes to its future
                future.set_exception(exc)

    def wait_submitted(self, n: int) -> None:
        with self.submitted:
            assert self.submitted.wait_for(lambda: len(self.futures) >= n, timeout=30)


def _window(executor, settled, **kw) -> BoundedWindow:
    return BoundedWindow(executor, settle=lambda f, tag: settled.append((tag, f.result())), **kw)


def test_results_settle_in_submission_order_whatever_order_they_finish_in():
    ex, settled = _Manual(), []
    window = _window(ex, settled, max_pending=10)
    for i in range(4):
        window.submit(lambda i=i: i * 10, tag=i)
    for i in (3, 1, 2):
        ex.finish(i)
    window.drain()
    assert settled == [] and len(window) == 4  # the oldest is not done: nothing settles
    ex.finish(0)
    window.drain()
    assert settled == [(0, 0), (1, 10), (2, 20), (3, 30)] and len(window) == 0


def test_a_full_window_waits_for_its_oldest_task_not_for_any(monkeypatch):
    """Waiting for any task returned at once while a later one was done, and the
    submitting thread spun, holding the GIL the workers need (the driver's reader once
    used a whole core that way): each wait of a full window is on the oldest alone."""
    import importer.run.window as window_mod

    waited_on: list[list[Future]] = []
    real_wait = window_mod.wait

    def recording_wait(fs, **kw):
        waited_on.append(list(fs))
        return real_wait(fs, **kw)

    monkeypatch.setattr(window_mod, "wait", recording_wait)
    ex, settled = _Manual(), []
    window = _window(ex, settled, max_pending=2)
    window.submit(lambda: "a", tag="a")
    window.submit(lambda: "b", tag="b")
    ex.finish(1)  # a later task is done; the oldest still runs
    submitter = threading.Thread(target=lambda: window.submit(lambda: "c", tag="c"))
    submitter.start()
    # the submitter cannot submit "c" before "a" settles, and "a" settles only when done
    assert len(ex.futures) == 2 and settled == []
    ex.finish(0)
    submitter.join(30)
    assert not submitter.is_alive()
    assert settled == [("a", "a"), ("b", "b")] and len(ex.futures) == 3
    assert waited_on == [[ex.futures[0]]]  # one wait, on the oldest: no spinning


def test_unfinished_tasks_are_bounded_by_a_limit_asked_at_each_submit():
    ex, settled = _Manual(), []
    limit = [2]
    window = _window(ex, settled, max_pending=10, max_unfinished=lambda: limit[0])
    window.submit(lambda: 0, tag=0)
    window.submit(lambda: 1, tag=1)
    submitter = threading.Thread(target=lambda: window.submit(lambda: 2, tag=2))
    submitter.start()
    assert len(ex.futures) == 2  # two unfinished: the third waits
    ex.finish(1)  # any finished task makes room (this bound is not about order)
    ex.wait_submitted(3)
    submitter.join(30)
    assert settled == []  # nothing could settle: the oldest still runs
    limit[0] = 10
    window.submit(lambda: 3, tag=3)  # a wider limit: no wait
    for i in (0, 2, 3):
        ex.finish(i)
    window.finish()
    assert [tag for tag, _ in settled] == [0, 1, 2, 3]


def test_cancel_queued_hands_back_the_tags_of_tasks_never_started():
    ex, settled = _Manual(), []
    window = _window(ex, settled, max_pending=10)
    for i in range(3):
        window.submit(lambda i=i: i, tag=f"t{i}")
    assert ex.futures[0].set_running_or_notify_cancel()  # the first has started
    assert window.cancel_queued() == ["t1", "t2"]
    ex.futures[0].set_result(0)
    window.finish()
    assert settled == [("t0", 0)]


def test_an_error_settling_a_task_reaches_the_submitter():
    ex = _Manual()

    def settle(future, tag):
        future.result()

    window = BoundedWindow(ex, settle=settle, max_pending=1)
    window.submit(lambda: 1 / 0)
    ex.finish(0)
    with pytest.raises(ZeroDivisionError):
        window.submit(lambda: 2)
    with pytest.raises(ValueError):
        BoundedWindow(ex, settle=settle, max_pending=0)
