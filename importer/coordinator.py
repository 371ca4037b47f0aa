"""Run control: the one object a run's workers consult to know whether to go on.

One object, because separate stop signals (a halt event, an abort flag, a
remembered fatal error, a status), each learnt of its own way, can disagree: a
lookup that met bad credentials would not stop the writers, a stopped stage would
not stop the sync.  One `RunCoordinator` is made per run
(`importer.run.pipeline.open_pipeline`) and handed down to every part that works on
the run's behalf:

* `fail(error)` keeps the run's FIRST fatal error (credentials, a deleted table);
  every worker's next send raises that same error (`raise_if_failed`), so the run
  ends with one readable line, not one per thread;
* `halt(reason)` stops the writes: a batch that has not written yet does not
  (`importer.run.batch_steps`), and what it skipped is counted in its outcome;
* waiters for a turn (`importer.ordering`) are woken by either, through `on_stop`;
* `status` is said, not inferred: only a FINISHED run completes its checkpoint.

It lives at the package root, under every layer, because the writers (dynamodb),
the mode stage (modes), the sync (mbc) and the driver (run) all take it as a
parameter.  Modelled on s3transfer's TransferCoordinator (one place that holds a
transfer's state and exception), cut down to what a run needs.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable

__all__ = ["RunCoordinator", "RunStatus", "Stopped"]


class RunStatus(enum.Enum):
    """Said, not inferred: only a FINISHED run completes its checkpoint.

    HALTED: the run stopped its writes (over --max-rejects) before the end of the
    source; the batches it skipped are not checkpointed, so `--resume` (with a
    higher limit) writes exactly them and the rest.
    """

    RUNNING = "running"
    FINISHED = "finished"
    HALTED = "halted"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


class Stopped(Exception):
    """The run stopped (halted or failed) while this worker waited for its turn."""


class RunCoordinator:
    """Status, first fatal error and halt of one run; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._status = RunStatus.RUNNING
        self._fatal: BaseException | None = None
        self._reason: str | None = None
        self._on_stop: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ state
    @property
    def status(self) -> RunStatus:
        return self._status

    @property
    def fatal(self) -> BaseException | None:
        """The first fatal error, if any."""
        return self._fatal

    @property
    def halt_reason(self) -> str | None:
        """Why the writes were stopped (the first reason given), if they were."""
        return self._reason

    @property
    def stopped(self) -> bool:
        """Halted or failed: nothing more is written."""
        return self._stopped.is_set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until the run stops (tests and helpers synchronise on it, never on sleeps)."""
        return self._stopped.wait(timeout)

    # ------------------------------------------------------------------ changes
    def halt(self, reason: str) -> None:
        """Stop the writes (the first reason is kept); a no-op once stopped."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._reason = reason
        self._stop()

    def fail(self, error: BaseException) -> BaseException:
        """Record a fatal error; returns the run's FIRST one (raise that, so every thread
        that meets the failure reports the same line)."""
        with self._lock:
            if self._fatal is None:
                self._fatal = error
                self._status = RunStatus.FAILED
                if self._reason is None:
                    self._reason = str(error)
            first = self._fatal
        self._stop()
        return first

    def finish(self, status: RunStatus) -> RunStatus:
        """The run ended as `status` (FINISHED, INTERRUPTED, or FAILED for an error met
        outside the workers); a run that failed stays FAILED, and one that was halted
        does not count as FINISHED (it is HALTED).  Returns the final status."""
        with self._lock:
            if status is RunStatus.FINISHED and self._reason is not None:
                status = RunStatus.HALTED
            if self._status is RunStatus.RUNNING or status is RunStatus.FAILED:
                self._status = status
            return self._status

    def raise_if_failed(self) -> None:
        """Raise the run's first fatal error, if there is one (called before each send)."""
        fatal = self._fatal
        if fatal is not None:
            raise fatal

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call `callback` once when the run stops (at once if it already has)."""
        with self._lock:
            if not self._stopped.is_set():
                self._on_stop.append(callback)
                return
        callback()

    def _stop(self) -> None:
        with self._lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
            callbacks, self._on_stop = self._on_stop, []
        for callback in callbacks:
            callback()
