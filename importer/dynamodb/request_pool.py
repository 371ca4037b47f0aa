"""Side-by-side requests for one batch: a run's concurrency without a batch per thread.

A batch of 1,000 rows becomes 40 BatchWriteItem requests (and, in the import
modes, 10-20 BatchGetItem calls).  Sent one after another, 50 concurrent
requests need 50 batches in the air, each holding its transformed items
(~1 MB): a run's memory then grows with however many of them the thread pool
happened to start, and that grows with the file's length.  Instead a run
works on a few batches at a time (`batch_threads`) and each batch sends its
independent requests over several lanes of one shared, bounded pool: the
same number of requests in flight, a fraction of the batches in memory.

`Lanes.run(fn, parts)` is a map in order (`fn(part, waits)`): the calling thread takes the first
group of parts itself, the pool the others, and a group no pool thread has
started yet is taken back and run by the caller rather than waited for -- so
a saturated pool slows a batch down but can never stall it.  Every group runs
to its end (a failed request does not abandon the requests beside it); the
first error, in part order, is raised once all have finished.

How many lanes a batch uses adapts to where a request's time goes.  Each
part is timed: its wall time, and the CPU its thread spent on it.  The
difference is time off this process's CPU.  Of that, the deliberate waits
(retry backoff, pacing) are known -- each part is handed a `Waits` tally that
its sends pass to `Attempts` and `Pacer.acquire`, which add what they sleep --
and counted at their average; the rest is the network and the service, counted at its recent
minimum (the mean would also hold the time a ready thread waited for the
GIL, which more threads only lengthen).  Their sum is `W`, the wait that
more requests in flight can hide, and the CPU per request is `C`.  A client
that holds the GIL for `C` per request keeps itself busy with about
`1 + W / C` requests in flight: against DynamoDB (W of milliseconds), or
under throttling, that is every lane there is, while against an endpoint
that answers in microseconds extra lanes only add threads contending for
the GIL (a third of the CPU of a blind run on two cores).  The same
estimate tells the driver how many batches to work on at once
(`batches_now`).  Until enough parts were timed, a run uses every batch
thread with one lane each: opening every lane at once sent some fifty
requests before the pacer had heard from the table, a burst that a
capacity-limited table answers with push-back that takes seconds to settle.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

__all__ = ["DEFAULT_WORKERS", "Lanes", "RequestGauge", "Waits", "batch_threads"]

T = TypeVar("T")
R = TypeVar("R")

#: A run's requests in flight (`--workers`) unless told otherwise: the default of the one
#: settings type (`importer.run.pipeline.PipelineSettings`) and of `importer run`'s option.
DEFAULT_WORKERS = 50
#: Batches a run works on at once: enough to keep two cores busy while one
#: batch waits on its requests, few enough that their items stay small in memory.
MAX_BATCH_THREADS = 8
#: ...and at least, however fast the service answers (`Lanes.batches_now`).
MIN_BATCHES_AT_ONCE = 4


def batch_threads(workers: int) -> int:
    """How many batches a run of `workers` concurrent requests works on at once."""
    return max(1, min(workers, MAX_BATCH_THREADS))


class Waits:
    """The deliberate waits (retry backoff, pacing) of one part's sends, in seconds.

    Handed to the part by `Lanes.run` and passed down explicitly to what sleeps
    (`importer.dynamodb.retry.Attempts`, `importer.dynamodb.pacing.Pacer.acquire`),
    so the gauge can tell a chosen wait from the network's.  Used by one thread.
    """

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = 0.0

    def add(self, seconds: float) -> None:
        self.seconds += seconds


class RequestGauge:
    """Where a request's time goes: off-CPU waits and CPU (see the module doc).

    The minimum of the network wait is kept over two rotating windows of
    `window` requests, so it follows a service that slows down within two
    windows; the CPU and the deliberate waits are exponentially weighted
    averages.  Thread-safe.
    """

    def __init__(self, window: int = 256, warmup: int = 16) -> None:
        self.window = window
        self.warmup = warmup
        self._lock = threading.Lock()
        self._count = 0
        self._min_now = math.inf
        self._min_before = math.inf
        self._cpu = 0.0
        self._slept = 0.0

    def observe(self, wall: float, cpu: float, slept: float = 0.0) -> None:
        off = max(0.0, wall - cpu - slept)
        with self._lock:
            self._count += 1
            if self._count == 1:
                self._cpu, self._slept = cpu, slept
            else:
                self._cpu += (cpu - self._cpu) / 32
                self._slept += (slept - self._slept) / 32
            if off < self._min_now:
                self._min_now = off
            if self._count % self.window == 0:
                self._min_before, self._min_now = self._min_now, math.inf

    def in_flight(self) -> float | None:
        """Requests in flight that keep this client busy (None: not measured yet)."""
        with self._lock:
            if self._count < self.warmup:
                return None
            wait_s = min(self._min_now, self._min_before) + self._slept
            cpu = self._cpu
        return 1.0 + wait_s / max(cpu, 1e-6)


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
        self.batches = batches
        self.gauge = RequestGauge()
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

    def batches_now(self) -> int:
        """Batches to work on at once: all of them unless the service answers at once.

        Against an endpoint that keeps no request waiting, a few batches keep
        the CPU busy and more only contend for the GIL.  Four, not the gauge's
        one or two: a batch's requests are signed and exchanged in C without
        the GIL (thread CPU the gauge counts as the request's own), while other
        batches run their Python; more than four only contend again
        (`benchmarks/bench_side_by_side.py` against the compiled ack endpoint shows it).
        """
        wanted = self.gauge.in_flight()
        if wanted is None:
            return self.batches
        return min(self.batches, max(MIN_BATCHES_AT_ONCE, math.ceil(wanted)))

    def lanes_now(self) -> int:
        """Lanes for the next batch: as many as keep this client busy (see the module doc)."""
        wanted = self.gauge.in_flight()
        if wanted is None:
            return 1
        return max(1, min(self.width, math.ceil(wanted / self.batches)))

    def group_size(self) -> int:
        """Requests a batch sends side by side in one call (`post_many`): one until the
        gauge has timed enough of them (the start-up caution above), then its lanes."""
        return 1 if self.gauge.in_flight() is None else self.width

    def observe_group(self, started: float, cpu: float, waits: Waits) -> None:
        """Time a `post_many` group (from `perf_counter` and `thread_time` taken before
        it, and the `waits` its sends passed to the pacer) as one request: the gauge's
        wait and CPU per call to it."""
        self.gauge.observe(time.perf_counter() - started, time.thread_time() - cpu, waits.seconds)

    def run(
        self, fn: Callable[[T, Waits], R], parts: Sequence[T], *, in_order: bool = False
    ) -> list[R]:
        """`[fn(p, waits) for p in parts]`, the parts spread over this batch's lanes.

        Each part gets its own `Waits`: what it slept on purpose (backoff, pacing)
        is told apart from the time it spent on the network.

        `in_order`: one after another on the calling thread (parts that must
        not overlap), still timed, so that the gauge keeps seeing every request.
        """
        n = len(parts)
        observe = self.gauge.observe
        clock, cpu_clock = time.perf_counter, time.thread_time

        def timed(p: T) -> R:
            waits = Waits()
            started, cpu = clock(), cpu_clock()
            out = fn(p, waits)
            observe(clock() - started, cpu_clock() - cpu, waits.seconds)
            return out

        lanes = 1 if in_order else min(self.lanes_now(), n)
        pool = self._executor() if lanes > 1 else None
        if pool is None:
            return [timed(p) for p in parts]
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
                    out.append(timed(p))
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
