"""Retry policy, backoff and the one rule for "send again, or stop the run", shared by writers.

Everything here is transport-agnostic: the boto3 reference writer and the raw
HTTP writer both classify errors by their AWS error *code* (the `__type` /
`Error.Code` string) and back off with the same full-jitter schedule.

- `RetryPolicy` bounds retries by attempts AND elapsed time; `sleep`, `rng` and
  `clock` are injectable so tests never wait.
- `full_jitter_delay` is the "full jitter" schedule of the AWS architecture
  blog: `uniform(0, min(max_delay, base_delay * 2**(attempt-1)))`.
- `Attempts` is the one bounded-retry loop state: sends without progress and
  elapsed time, both bounded; the last error is kept for the failure reason.
  (What an error means is decided in `importer.dynamodb.errors.classify`.)
- How fast to send is not decided here but by `importer.dynamodb.pacing.Pacer`, from
  what the table actually processes.
- `should_retry` turns a failed send into "again", "give up on these items" or a
  `WriterFatalError` (bad credentials, an endpoint never or no longer reached), and
  `call` is one request under it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from importer.coordinator import RunCoordinator
from importer.dynamodb.api import DynamoClient, Reply
from importer.dynamodb.errors import (
    LOST_CODES,
    DynamoError,
    ErrorKind,
    WriterFatalError,
    redact,
    safe_url,
    unreachable_message,
)
from importer.dynamodb.request_pool import Waits

__all__ = [
    "Attempts",
    "RetryPolicy",
    "bisect",
    "call",
    "full_jitter_delay",
    "should_retry",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry one request.

    `max_attempts` counts every send (the first one included); `max_elapsed`
    is measured with `clock` from the first send.  A retry happens only if both
    limits allow it (the delay that would overrun `max_elapsed` is not slept).

    The delay is capped at 0.5 s: the run's pacer (`importer.dynamodb.pacing`) already
    slows every worker to what the table takes, so a longer backoff only leaves an
    unlucky request idle while the rest of the run has finished (random faults
    then make the run's tail, not its throughput, the cost).  Twenty attempts give
    a request several seconds of retries in all.
    """

    max_attempts: int = 20
    base_delay: float = 0.05
    max_delay: float = 0.5
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

    __slots__ = ("policy", "started", "stalls", "attempt", "last", "retries", "waits")

    def __init__(self, policy: RetryPolicy, waits: Waits | None = None) -> None:
        self.policy = policy
        #: where the backoff sleeps are told (the request's `Waits`, for the lanes' gauge)
        self.waits = waits
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
            if self.waits is not None:
                self.waits.add(delay)
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


UNREACHED_ATTEMPTS = 3


def should_retry(
    client: DynamoClient,
    attempts: Attempts,
    error: DynamoError,
    table: str = "",
    *,
    coordinator: RunCoordinator | None = None,
) -> bool:
    """After a failed send: raise for a fatal error, else sleep and say whether to retry.

    An endpoint that never answered gets `UNREACHED_ATTEMPTS` tries and then
    stops the run in one line; one that answered before is having a bad
    moment, and the policy's full budget applies.  CLIENT errors are the
    caller's to split, not retried here.  With the run's `coordinator`, a fatal
    error is recorded there (every other worker of the run stops at its next
    send) and the run's FIRST fatal error is the one raised.
    """
    if coordinator is None:
        return _should_retry(client, attempts, error, table)
    try:
        return _should_retry(client, attempts, error, table)
    except WriterFatalError as fatal:
        first = coordinator.fail(fatal)
        if first is fatal:
            raise
        raise first from None


def _should_retry(client: DynamoClient, attempts: Attempts, error: DynamoError, table: str) -> bool:
    if error.kind is ErrorKind.FATAL:
        raise client.fatal(error, table)
    if error.kind is ErrorKind.CLIENT:
        return False
    unreached = error.kind is ErrorKind.CONNECT and not client.answered()
    if attempts.again(error, max_attempts=UNREACHED_ATTEMPTS if unreached else None):
        return True
    if unreached:
        raise WriterFatalError(
            unreachable_message(
                client.endpoint_url,
                client.region,
                f"{error.message} (after {attempts.stalls} attempt(s))",
            )
        )
    if error.code in LOST_CODES:
        # no answer for the whole retry window: the endpoint is gone, not refusing
        # these rows -- stop (resumable) rather than count every later row failed
        raise WriterFatalError(
            f"lost the DynamoDB endpoint {safe_url(client.endpoint_url)}: no answer in "
            f"{attempts.stalls} attempt(s) over {attempts.elapsed():.1f}s "
            f"(last: {redact(error.describe())})"
        )
    return False


def call(
    client: DynamoClient, operation: str, body: bytes, policy: RetryPolicy, *, table: str = ""
) -> tuple[Reply, int]:
    """One call under the shared retry rules: (reply, retries), or the last `DynamoError`."""
    attempts = Attempts(policy)
    while True:
        try:
            return client.post(operation, body), attempts.retries
        except DynamoError as exc:
            if not should_retry(client, attempts, exc, table):
                raise
