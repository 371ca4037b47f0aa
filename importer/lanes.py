"""Side-by-side requests for one batch: a run's concurrency without a batch per thread.

A batch of 1,000 rows becomes 40 BatchWriteItem requests (and, in the import
modes, 10-20 BatchGetItem calls).  Sent one after another, 50 concurrent
requests need 50 batches in the air, each holding its transformed items
(~1 MB): a run's memory then grows with however many of them the thread pool
happened to start, and that grows with the file's length.  Instead a run
works on a few batches at a time (`batch_threads`) and each batch sends its
independent requests over several lanes of one shared, bounded pool: the
same number of requests in flight, a fraction of the batches in memory.

`Lanes.run(fn, parts)` is a map in order: the calling thread takes the first
group of parts itself, the pool the others, and a group no pool thread has
started yet is taken back and run by the caller rather than waited for -- so
a saturated pool slows a batch down but can never stall it.  Every group runs
to its end (a failed request does not abandon the requests beside it); the
first error, in part order, is raised once all have finished.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

__all__ = ["Lanes", "batch_threads"]

T = TypeVar("T")
R = TypeVar("R")

#: Batches a run works on at once: enough to keep two cores busy while one
#: batch waits on its requests, few enough that their items stay small in memory.
MAX_BATCH_THREADS = 8


def batch_threads(workers: int) -> int:
    """How many batches a run of `workers` concurrent requests works on at once."""
    return max(1, min(workers, MAX_BATCH_THREADS))


class Lanes:
    """A bounded pool that spreads one batch's requests over `width` lanes.

    `requests` is the run's request concurrency (`--workers`), `batches` how
    many batches call `run` at once: each batch gets `requests // batches`
    lanes (its own thread among them), and the pool holds the rest of the
    `requests` threads, started only when a batch first needs them.
    """

    def __init__(self, requests: int, batches: int = 1) -> None:
        if requests < 1 or batches < 1:
            raise ValueError("requests and batches must be at least 1")
        self.width = max(1, requests // batches)
        self._threads = max(0, requests - batches)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _executor(self) -> ThreadPoolExecutor | None:
        if self._threads == 0 or self._closed:
            return None
        with self._lock:
            if self._pool is None and not self._closed:
                self._pool = ThreadPoolExecutor(
                    max_workers=self._threads, thread_name_prefix="lane"
                )
            return self._pool

    def run(self, fn: Callable[[T], R], parts: Sequence[T]) -> list[R]:
        """`[fn(p) for p in parts]`, the parts spread over this batch's lanes."""
        n = len(parts)
        lanes = min(self.width, n)
        pool = self._executor() if lanes > 1 else None
        if pool is None:
            return [fn(p) for p in parts]
        # contiguous groups, sizes differing by at most one
        step, extra = divmod(n, lanes)
        bounds = [i * step + min(i, extra) for i in range(lanes + 1)]
        groups = [parts[bounds[i] : bounds[i + 1]] for i in range(lanes)]
        results: list[list[R] | None] = [None] * lanes
        errors: list[BaseException | None] = [None] * lanes

        def run_group(i: int) -> None:
            out: list[R] = []
            try:
                for p in groups[i]:
                    out.append(fn(p))
            except BaseException as exc:  # noqa: BLE001 - re-raised by the caller, in order
                errors[i] = exc
            results[i] = out

        futures: list[tuple[int, Future[None]]] = []
        try:
            for i in range(1, lanes):
                futures.append((i, pool.submit(run_group, i)))
        except RuntimeError:  # the pool was shut down under us: the caller runs the rest
            pass
        submitted = {i for i, _ in futures}
        run_group(0)
        for i in range(1, lanes):
            if i not in submitted:
                run_group(i)
        running = []
        for i, fut in futures:
            if fut.cancel():  # not started yet: run it here rather than wait for a thread
                run_group(i)
            else:
                running.append(fut)
        # (a future cancelled here only counts as done for `wait` once a pool thread
        # has dequeued it: it is left out)
        wait(running)
        for exc in errors:
            if exc is not None:
                raise exc
        return [r for group in results for r in (group or [])]

    def close(self) -> None:
        """Stop the pool's threads (after the requests they are sending)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
