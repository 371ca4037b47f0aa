"""A deterministic discrete-event simulation of a writer pool against a capacity-limited table.

Used by tests/test_pacing.py (and handy when tuning the pacer): simulated time
only, one seeded RNG, no threads.  The table is a token bucket of `capacity`
units/s holding at most `burst` seconds of capacity; a request gets the items
that fit, in order, the rest back as unprocessed, and a throttle error when
none fit.  Random faults (throttle, partial unprocessed, 5xx, dropped
connection) are drawn per request, independent of the load.

Each simulated worker behaves like the lead's writer: take up to 25 items
(retries first), `pacer.try_acquire` (waiting as `acquire` would), send,
`pacer.settle` on the response, and retry unprocessed items after a
full-jitter backoff.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from importer.dynamodb.pacing import Pacer

__all__ = ["FakeClock", "SimTable", "SimResult", "simulate"]


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class SimTable:
    """Token bucket of write units with random faults; logs (time, units) processed."""

    def __init__(
        self,
        capacity: float,
        *,
        burst: float = 0.5,
        rng: random.Random,
        throttle: float = 0.0,
        unprocessed: float = 0.0,
        server_error: float = 0.0,
        drop: float = 0.0,
    ) -> None:
        self.capacity = capacity
        self.burst = burst
        self.tokens = capacity * burst
        self.last = 0.0
        self.rng = rng
        self.throttle = throttle
        self.unprocessed = unprocessed
        self.server_error = server_error
        self.drop = drop
        self.log: list[tuple[float, int]] = []

    def set_capacity(self, capacity: float, now: float) -> None:
        self._refill(now)
        self.capacity = capacity

    def _refill(self, now: float) -> None:
        self.tokens = min(
            self.capacity * self.burst, self.tokens + (now - self.last) * self.capacity
        )
        self.last = now

    def write(self, now: float, units: list[int]) -> tuple[str, int, int]:
        """(outcome, processed items, processed units); outcome: ok|partial|throttle|error."""
        rng = self.rng
        if rng.random() < self.drop or rng.random() < self.server_error:
            return "error", 0, 0
        if rng.random() < self.throttle:
            return "throttle", 0, 0
        self._refill(now)
        n = done_units = 0
        for u in units:
            if self.tokens < u:
                break
            self.tokens -= u
            n += 1
            done_units += u
        if n == 0:
            return "throttle", 0, 0
        if n == len(units) and rng.random() < self.unprocessed:
            keep = rng.randint(0, n - 1)  # a random tail comes back unprocessed
            self.tokens += sum(units[keep:])
            n, done_units = keep, sum(units[:keep])
        if done_units:
            self.log.append((now, done_units))
        return ("ok" if n == len(units) else "partial"), n, done_units

    def window_max(self, start: float, end: float, width: float = 1.0) -> float:
        """Most units processed in any `width`-second window starting in [start, end)."""
        log = self.log
        best = 0
        j = 0
        total = 0
        for i, (t, units) in enumerate(log):
            if j < i:
                j, total = i, 0
            while j < len(log) and log[j][0] < t + width:
                total += log[j][1]
                j += 1
            if start <= t < end:
                best = max(best, total)
            total -= units
        return best

    def units_between(self, start: float, end: float) -> int:
        return sum(u for t, u in self.log if start <= t < end)


@dataclass
class SimResult:
    requests: int = 0
    throttled: int = 0
    items_written: int = 0
    rates: list[tuple[float, float | None]] = field(default_factory=list)
    answers: list[tuple[float, bool]] = field(default_factory=list)  # (time, throttled)

    @property
    def throttled_share(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0

    def throttled_share_between(self, start: float, end: float) -> float:
        seen = [th for t, th in self.answers if start <= t < end]
        return sum(seen) / len(seen) if seen else 0.0


def simulate(
    pacer: Pacer,
    clock: FakeClock,
    table: SimTable,
    *,
    duration: float,
    workers: int = 50,
    latency: float = 0.01,
    item_units: Callable[[random.Random], int] = lambda rng: 1,
    rng: random.Random,
    events: dict[float, Callable[[float], None]] | None = None,
    batch: int = 25,
) -> SimResult:
    """Run `workers` writers for `duration` simulated seconds; the table logs what it took."""
    result = SimResult()
    heap: list[tuple[float, int, int, str, object]] = []
    seq = 0

    def push(t: float, worker: int, kind: str, payload: object = None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, worker, kind, payload))

    retry: list[list[int]] = [[] for _ in range(workers)]
    attempt = [0] * workers
    for w in range(workers):
        push(0.0, w, "send")
    for at, fn in sorted((events or {}).items()):
        push(at, -1, "event", fn)
    next_sample = 0.0
    while heap:
        t, _, w, kind, payload = heapq.heappop(heap)
        if t >= duration:
            break
        clock.t = t
        if t >= next_sample:
            result.rates.append((t, pacer.rate))
            next_sample += 0.5
        if kind == "event":
            payload(t)  # type: ignore[operator]
            continue
        if kind == "send":
            units = retry[w] or [item_units(rng) for _ in range(batch)]
            wait = pacer.try_acquire(len(units), sum(units))
            if wait > 0:
                push(t + wait, w, "send")
                continue
            retry[w] = units
            outcome = table.write(t + latency / 2, units)
            push(t + latency, w, "answer", (units, outcome, t))
            continue
        units, (outcome, n, done_units), sent_at = payload  # type: ignore[misc]
        throttled = outcome in ("throttle", "partial")
        pacer.settle(
            sent=len(units),
            processed=n,
            processed_units=done_units,
            throttled=throttled,
            sent_units=sum(units),
            sent_at=sent_at,
        )
        result.requests += 1
        result.throttled += throttled
        result.answers.append((t, throttled))
        result.items_written += n
        rest = units[n:]
        retry[w] = rest
        if rest:
            attempt[w] += 1
            delay = rng.uniform(0, min(1.0, 0.025 * 2 ** attempt[w]))
            push(t + delay, w, "send")
        else:
            attempt[w] = 0
            push(t, w, "send")
    return result
