"""File order for concurrent batches: one ticket counter, turns by ticket, order by entity.

Batches run side by side, but some of their steps must happen in file order: the
mode stage assigns versions batch after batch (`importer.modes.stage`), and the
sync applies one entity's versions in the order they were written
(`importer.mbc.sync`).  Two counters with their own turn/released bookkeeping
would have to be kept in step; so a run has one `FileOrder` (made with the run's
coordinator), every batch takes ONE ticket from it on the submitting thread, and
each ordered step is a `Turns` over those tickets:

* `Turns.wait(t)` returns once every ticket before `t` has passed this step
  (raises `Stopped` when the run stops first: a waiter never outlives its run);
  `Turns.release(t)` passes it -- idempotent, and a ticket released out of order
  (a batch cancelled before it ran) is remembered until the turn reaches it;
* `EntityOrder` is an ordered step whose ticket claims entities: `claim(t, keys)`
  waits for the turn, records `t` as the latest holder of each key and returns
  the events of the earlier holders still busy with one of them; `release(t)`
  ends the claim.  Batches sharing no entity never wait for each other;
* `FileOrder.release(t)` gives a ticket's place back in every step at once (a batch
  that will never run).

Every step shares the order's one lock, so a stage can keep its own state under
the same lock and change it as the turn moves (`Turns(on_advance=...)`), and
`written` hooks see the ticket count as it stood when a write returned.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable

from importer.coordinator import RunCoordinator, Stopped

__all__ = ["EntityOrder", "FileOrder", "Stopped", "Turns"]


class FileOrder:
    """The run's tickets (one counter) and the ordered steps taken with them."""

    def __init__(self, coordinator: RunCoordinator | None = None) -> None:
        #: the one lock of the order and of every step over it (see the module doc)
        self.lock = threading.Lock()
        self._issued = 0
        self._steps: list[Turns | EntityOrder] = []
        self._on_written: list[Callable[[int, int], None]] = []
        self._stopped = False
        if coordinator is not None:
            coordinator.on_stop(self.stop)

    @property
    def issued(self) -> int:
        """Tickets handed out so far."""
        return self._issued

    @property
    def stopped(self) -> bool:
        return self._stopped

    def ticket(self) -> int:
        """Take the next place in file order; call on the submitting thread."""
        with self.lock:
            t = self._issued
            self._issued += 1
            return t

    def turns(self, on_advance: Callable[[int, int], None] | None = None) -> Turns:
        """A new ordered step over this order's tickets.  `on_advance(old, new)` is
        called under `lock` whenever the turn moves from `old` to `new`."""
        step = Turns(self, on_advance)
        with self.lock:
            self._steps.append(step)
        return step

    def entities(self) -> EntityOrder:
        """A new ordered step in which each ticket claims entities."""
        step = EntityOrder(self)
        with self.lock:
            self._steps.append(step)
        return step

    def on_written(self, hook: Callable[[int, int], None]) -> None:
        """Call `hook(ticket, issued)` under `lock` each time a batch reports its write."""
        with self.lock:
            self._on_written.append(hook)

    def written(self, ticket: int | None) -> None:
        """Batch `ticket`'s write returned: what it wrote is in the table from now on."""
        if ticket is None:
            return
        with self.lock:
            for hook in self._on_written:
                hook(ticket, self._issued)

    def release(self, ticket: int | None) -> None:
        """`ticket` will take no (more) step: its place passes in each (idempotent)."""
        if ticket is None:
            return
        for step in list(self._steps):
            step.release(ticket)

    def stop(self) -> None:
        """The run stopped: every waiter, now or later, raises `Stopped`."""
        with self.lock:
            self._stopped = True
            waiters = [w for step in self._steps for w in step.take_waiters()]
        for waiter in waiters:
            waiter.set()


class Turns:
    """One ordered step: ticket `t` goes once every earlier ticket has passed it."""

    def __init__(
        self, order: FileOrder, on_advance: Callable[[int, int], None] | None = None
    ) -> None:
        self._order = order
        self._lock = order.lock
        self._on_advance = on_advance
        self._turn = 0
        self._released: set[int] = set()
        # one event per waiting ticket: a release wakes only the batch whose turn it is
        self._waiters: dict[int, threading.Event] = {}

    @property
    def turn(self) -> int:
        """The first ticket that has not passed yet."""
        return self._turn

    def wait(self, ticket: int | None) -> None:
        """Return once every ticket before `ticket` has passed; `Stopped` if the run stops."""
        if ticket is None:
            return
        with self._lock:
            if self._turn >= ticket:
                return
            if self._order.stopped:
                raise Stopped()
            waiter = self._waiters.setdefault(ticket, threading.Event())
        waiter.wait()
        with self._lock:
            if self._turn < ticket:
                raise Stopped()

    def release(self, ticket: int | None) -> None:
        """`ticket` has passed this step (idempotent; out of order: remembered)."""
        if ticket is None:
            return
        with self._lock:
            waiter = self.release_locked(ticket)
        if waiter is not None:
            waiter.set()

    def release_locked(self, ticket: int) -> threading.Event | None:
        """`release` with the order's lock held; returns the waiter to wake (outside it)."""
        if ticket < self._turn or ticket in self._released:
            return None
        self._released.add(ticket)
        old = self._turn
        while self._turn in self._released:
            self._released.discard(self._turn)
            self._turn += 1
        if self._turn != old and self._on_advance is not None:
            self._on_advance(old, self._turn)
        return self._waiters.pop(self._turn, None)

    def take_waiters(self) -> list[threading.Event]:
        """Every waiting ticket's event, forgotten (the order's lock held: `FileOrder.stop`)."""
        waiters = list(self._waiters.values())
        self._waiters.clear()
        return waiters


class EntityOrder:
    """An ordered step in which ticket `t` claims entities; see the module doc."""

    def __init__(self, order: FileOrder) -> None:
        self._order = order
        self._lock = order.lock
        self._turns = Turns(order)
        self._last: dict[Hashable, threading.Event] = {}
        self._claims: dict[int, tuple[threading.Event, list[Hashable]]] = {}

    def claim(self, ticket: int, keys: Iterable[Hashable]) -> list[threading.Event]:
        """Wait for the earlier tickets to claim (or release), claim `keys`; the events of
        the earlier holders to wait on.  `Stopped` if the run stops first."""
        self._turns.wait(ticket)
        claimed = list(dict.fromkeys(keys))
        mine = threading.Event()
        waits: list[threading.Event] = []
        with self._lock:
            for key in claimed:
                prev = self._last.get(key)
                if prev is not None and not prev.is_set() and prev not in waits:
                    waits.append(prev)
                self._last[key] = mine
            self._claims[ticket] = (mine, claimed)
            waiter = self._turns.release_locked(ticket)
        if waiter is not None:
            waiter.set()
        return waits

    def take_waiters(self) -> list[threading.Event]:
        """The events of the tickets waiting to claim (the order's lock held)."""
        return self._turns.take_waiters()

    def release(self, ticket: int | None) -> None:
        """`ticket`'s claim is over, or it never claimed (cancelled, failed early)."""
        if ticket is None:
            return
        with self._lock:
            claim = self._claims.pop(ticket, None)
            if claim is not None:
                mine, keys = claim
                mine.set()
                for key in keys:
                    if self._last.get(key) is mine:
                        del self._last[key]
            waiter = self._turns.release_locked(ticket)
        if waiter is not None:
            waiter.set()
