"""Retry policy, backoff, error classification and adaptive rate, shared by writers.

Everything here is transport-agnostic: the boto3 reference writer and the raw
HTTP writer both classify errors by their AWS error *code* (the `__type` /
`Error.Code` string) and back off with the same full-jitter schedule.

- `RetryPolicy` bounds retries by attempts AND elapsed time; `sleep`, `rng` and
  `clock` are injectable so tests never wait.
- `full_jitter_delay` is the "full jitter" schedule of the AWS architecture
  blog: `uniform(0, min(max_delay, base_delay * 2**(attempt-1)))`.
- `Attempts` is the one bounded-retry loop state: sends without progress and
  elapsed time, both bounded; the last error is kept for the failure reason.
  (Which errors are retried is decided in `importer.dynamo.classify`.)
- `AdaptiveRate` is a shared AIMD token bucket: unlimited until the service
  throttles a sustained share of calls (sporadic throttles are only retried),
  throttles, then the rate halves (at most once per cooldown) and recovers
  additively while requests succeed.
- `WriterFatalError` is raised when continuing cannot help (bad credentials,
  unreachable endpoint); its message is one readable line, never a secret.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = [
    "AdaptiveRate",
    "Attempts",
    "RetryPolicy",
    "WriterFatalError",
    "bisect",
    "full_jitter_delay",
]

T = TypeVar("T")


class WriterFatalError(RuntimeError):
    """The writer cannot make progress at all (credentials, endpoint, table).

    The message is a single human-readable line suitable for a CLI error; it
    never contains credentials or signed headers.
    """


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry one request.

    `max_attempts` counts every send (the first one included); `max_elapsed`
    is measured with `clock` from the first send.  A retry happens only if both
    limits allow it (the delay that would overrun `max_elapsed` is not slept).
    """

    max_attempts: int = 10
    base_delay: float = 0.05
    max_delay: float = 5.0
    max_elapsed: float = 300.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    rng: Callable[[], float] = field(default=random.random, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_elapsed < 0:
            raise ValueError("delays must be >= 0")


def full_jitter_delay(policy: RetryPolicy, attempt: int) -> float:
    """Delay before retry number `attempt` (1 = after the first failure).

    `uniform(0, min(max_delay, base_delay * 2**(attempt-1)))`, drawn with `policy.rng`.
    """
    exp = min(max(attempt - 1, 0), 62)
    cap = min(policy.max_delay, policy.base_delay * (2.0**exp))
    return policy.rng() * cap


class Attempts:
    """The state of one bounded retry loop (one request's worth of work).

    Every retry loop in importer is the same: send; on a failure that may be
    retried call `again(error)`, which sleeps the full-jitter delay and says
    whether another send is allowed; on partial progress call `progressed()`,
    which resets the count (a request that keeps getting *some* items through
    is not stuck).  Bounded by `policy.max_attempts` sends without progress and
    by `policy.max_elapsed` seconds from the first send; `reason()` names both
    and the last error, for the rows that are given up on.
    """

    __slots__ = ("policy", "started", "stalls", "attempt", "last", "retries")

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.started = policy.clock()
        self.stalls = 0  # sends without progress, in a row
        self.attempt = 0  # backoff exponent; reset by progress
        self.last: BaseException | str | None = None
        self.retries = 0

    def progressed(self) -> None:
        self.stalls = self.attempt = 0

    def again(self, error: BaseException | str, *, max_attempts: int | None = None) -> bool:
        """Record a send without progress; sleep and return True when another is allowed."""
        policy = self.policy
        self.last = error
        self.stalls += 1
        self.attempt += 1
        limit = (
            policy.max_attempts if max_attempts is None else min(max_attempts, policy.max_attempts)
        )
        delay = full_jitter_delay(policy, self.attempt)
        if self.stalls >= limit or self.elapsed() + delay > policy.max_elapsed:
            return False
        self.retries += 1
        if delay > 0:
            policy.sleep(delay)
        return True

    def elapsed(self) -> float:
        return self.policy.clock() - self.started

    def reason(self) -> str:
        last = getattr(self.last, "describe", None)
        text = last() if callable(last) else str(self.last)
        return (
            f"gave up after {self.stalls} attempt(s) without progress in {self.elapsed():.1f}s; "
            f"last error {text}"
        )


class AdaptiveRate:
    """Shared AIMD rate limiter (token bucket) over "units" (items, for writers).

    * Unlimited until the first throttle; meanwhile it measures the achieved
      rate so the first cut starts from reality, not from a guess.
    * `on_throttle()` multiplies the rate by `decrease` (default 0.5) at most
      once per `cooldown` seconds -- fifty workers hit by the same throttling
      burst cut the rate once, not fifty times -- never below `min_rate`.
    * `on_success()` raises the rate by `increase` units/s for every second that
      passed since the previous raise (additive increase, capped at `max_rate`).
      Default `increase`: 5% of the rate before the last cut, so a halving is
      recovered in about ten seconds of clean traffic.
    * `acquire(n)` blocks (with `sleep`) until `n` units may be sent.  Tokens
      may go negative: a caller reserves its slot and sleeps for the deficit,
      which keeps it fair under contention and the lock is never held asleep.

    `clock` and `sleep` are injectable for deterministic tests.
    """

    def __init__(
        self,
        *,
        min_rate: float = 25.0,
        max_rate: float | None = None,
        decrease: float = 0.5,
        increase: float | None = None,
        cooldown: float = 0.5,
        burst: float = 0.1,
        sustained_share: float = 0.3,
        min_calls: int = 20,
        window: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0 < decrease < 1:
            raise ValueError("decrease must be in (0, 1)")
        self.min_rate = float(min_rate)
        self.max_rate = max_rate
        self.decrease = decrease
        self._increase = increase
        self.cooldown = cooldown
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._rate: float | None = None  # None = unlimited
        self._tokens = 0.0
        self._last_refill = clock()
        self._last_increase = self._last_refill
        self._last_decrease: float | None = None
        self._win_start = self._last_refill
        self._win_units = 0.0
        self._measured = 0.0
        self.throttle_events = 0
        self.decreases = 0
        self._step = max(self.min_rate, 50.0)
        # throttled share of recent calls: sporadic throttles are retried, only a
        # sustained share (>= sustained_share of the calls in the last window) slows down
        self.sustained_share = sustained_share
        self.min_calls = min_calls
        self.window = window
        self._calls_start = self._last_refill
        self._calls = 0
        self._throttled = 0

    @property
    def rate(self) -> float | None:
        """Current allowed units/s, or None while unlimited."""
        return self._rate

    def _observe(self, now: float, n: float) -> None:
        self._win_units += n
        span = now - self._win_start
        if span >= 1.0:
            self._measured = self._win_units / span
            self._win_start = now
            self._win_units = 0.0

    def _measured_rate(self, now: float) -> float:
        span = now - self._win_start
        current = self._win_units / span if span > 0.05 else 0.0
        return max(self._measured, current)

    def acquire(self, n: float = 1.0, units: float = 0.0) -> float:
        """Take `n` units; returns the seconds slept (0.0 when not limited)."""
        with self._lock:
            now = self._clock()
            self._observe(now, n)
            rate = self._rate
            if rate is None:
                return 0.0
            cap = max(rate * self.burst, n)
            self._tokens = min(cap, self._tokens + (now - self._last_refill) * rate)
            self._last_refill = now
            self._tokens -= n
            wait = -self._tokens / rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait

    def _count_call(self, now: float, throttled: bool) -> float:
        """Record one call's outcome; return the throttled share of the current window.

        A window with fewer than `min_calls` calls says nothing yet (0.0), unless
        every call in it was throttled: a handful of random throttles must not
        walk the rate down to its floor.
        """
        if now - self._calls_start >= self.window:
            self._calls_start = now
            self._calls = 0
            self._throttled = 0
        self._calls += 1
        self._throttled += throttled
        if self._calls < self.min_calls and self._throttled < self._calls:
            return 0.0
        return self._throttled / self._calls

    def settle(
        self, *, sent: int, processed: int, processed_units: int = 0, throttled: bool
    ) -> None:
        """What one send achieved (the pacer interface the writers call)."""
        if throttled:
            self.on_throttle()
        else:
            self.on_success()

    def on_throttle(self) -> None:
        with self._lock:
            now = self._clock()
            self.throttle_events += 1
            if self._count_call(now, True) < self.sustained_share:
                return
            if self._last_decrease is not None and now - self._last_decrease < self.cooldown:
                return
            if self._rate is None:
                base = self._measured_rate(now) or self.min_rate * 2
                self._tokens = 0.0
                self._last_refill = now
            else:
                base = self._rate
            self._rate = max(self.min_rate, base * self.decrease)
            self._step = max(self.min_rate, 0.05 * base)
            self._last_decrease = now
            self._last_increase = now
            self.decreases += 1

    def on_success(self) -> None:
        with self._lock:
            self._count_call(self._clock(), False)
        if self._rate is None:
            return
        with self._lock:
            if self._rate is None:
                return
            now = self._clock()
            dt = min(now - self._last_increase, 1.0)
            if dt <= 0:
                return
            step = self._increase if self._increase is not None else self._step
            rate = self._rate + step * dt
            if self.max_rate is not None:
                rate = min(rate, self.max_rate)
            self._rate = rate
            self._last_increase = now


def bisect(
    items: Sequence[T], send: Callable[[list[T]], None], refuse: Callable[[T], None]
) -> None:
    """A request the service refused as a whole (a validation error names no item):
    `refuse` a lone item, else `send` each half again, until the refused items stand alone.

    `send` is the caller's own send-with-retries, so a half that goes through is
    stored and a half that is refused again is split again: about log2(n) extra
    requests per refused item.
    """
    if len(items) == 1:
        refuse(items[0])
        return
    mid = len(items) // 2
    send(list(items[:mid]))
    send(list(items[mid:]))
