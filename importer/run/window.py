"""Bounded submission: tasks go to an executor through a window, and settle in order.

A run reads batches faster than it writes them; without a bound the reader piles
batches (rows in memory) into the pool's queue.  `BoundedWindow.submit` blocks the
submitting thread until there is room, on two limits:

* `max_pending`: tasks submitted and not yet settled.  Results are settled in
  submission order (the run counts and checkpoints batches in file order), so a
  finished task waits for the ones before it; this bounds what such waiting holds.
* `max_unfinished()`: tasks not yet finished (running, or queued for a thread),
  asked again at each submit, so a caller can narrow it as it learns (the driver
  works on fewer batches at once against an endpoint that answers at once).

While it waits, the window settles what it can: `settle(future, tag)` is called on
the submitting thread for each task whose predecessors have all settled.  Waiting
for the oldest task when the window is full -- not for any task -- matters: any
finished later task returned at once while the oldest still ran, and the
submitter spun holding the GIL the workers need.

Modelled on s3transfer's BoundedExecutor (a submission that blocks on a
semaphore); the ordering and the settling on the submitter's thread are this
project's needs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from typing import Any, Generic, TypeVar

__all__ = ["BoundedWindow"]

R = TypeVar("R")
Tag = Any


class BoundedWindow(Generic[R]):
    """Submit to `executor` within bounds; settle results in submission order."""

    def __init__(
        self,
        executor: Executor,
        *,
        settle: Callable[[Future[R], Tag], None],
        max_pending: int,
        max_unfinished: Callable[[], int] | None = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._executor = executor
        self._settle = settle
        self._max_pending = max_pending
        self._max_unfinished = max_unfinished
        self._pending: deque[tuple[Future[R], Tag]] = deque()

    def __len__(self) -> int:
        """Tasks submitted and not yet settled."""
        return len(self._pending)

    def submit(self, fn: Callable[..., R], *args: Any, tag: Tag = None, **kwargs: Any) -> Future[R]:
        """Wait for room (settling what finished meanwhile), then submit `fn(*args, **kwargs)`.

        `tag` is handed back to `settle` (and by `cancel_queued`) with the task's future.
        """
        pending = self._pending
        while len(pending) >= self._max_pending:
            wait((pending[0][0],))  # only the oldest can be settled (submission order)
            self.drain()
        limit = self._max_unfinished
        while limit is not None:
            unfinished = [f for f, _ in pending if not f.done()]
            if len(unfinished) < limit():
                break
            wait(unfinished, return_when=FIRST_COMPLETED)
            self.drain()
        future = self._executor.submit(fn, *args, **kwargs)
        pending.append((future, tag))
        return future

    def drain(self) -> None:
        """Settle every finished task whose predecessors have all settled."""
        pending = self._pending
        while pending and pending[0][0].done():
            self._settle(*pending.popleft())

    def finish(self) -> None:
        """Settle every task, in submission order (waiting for each)."""
        pending = self._pending
        while pending:
            future, tag = pending.popleft()
            self._settle(future, tag)

    def cancel_queued(self) -> list[Tag]:
        """Cancel the tasks no thread has started; their tags (they will never settle)."""
        kept: deque[tuple[Future[R], Tag]] = deque()
        cancelled = []
        for future, tag in self._pending:
            if future.cancel():
                cancelled.append(tag)
            else:
                kept.append((future, tag))
        self._pending = kept
        return cancelled
