"""Pace requests to what the table accepts: an adaptive pacer over capacity units.

What one item costs in units is `importer.dynamodb.capacity_units`' rule.

`Pacer` sits in front of every request.  Its measure of the table is the
processed rate -- units DynamoDB actually took per second (UnprocessedItems says
exactly how many) -- not a count of throttles:

* unlimited until the table pushes back: more of the last 20 answers throttled
  than chance explains (for 20 answers in a row, unless the table took clearly
  less than was offered), or a run of throttled answers chance would explain
  less than once in a million (a clear overload is cut within a few answers).  A
  cut needs the table to have taken less than the pace, so throttles while a
  drained burst refills do not cut again.  Chance is learnt: the share of
  answers throttled while the pace sat clearly under the table's ceiling
  (random faults throttle a steady, uncorrelated share; a capacity shortfall
  throttles nearly every request once the table's burst is spent);
* on push-back the rate goes just under the processed rate measured since the
  last change (90 % of it when clearly over, 92 % when slightly), and that
  level is remembered as the table's ceiling;
* once per 0.25 s epoch in which the pacer was the limit and nothing pushed
  back, the rate climbs back to the ceiling, passes it gently (0.25 % steps),
  then probes in doubling steps (up to 25 % per epoch): a table that grew, or
  a cut that went too deep, is made up within seconds;
* units of items not processed (throttled, 5xx, dropped connection) are given
  back, so resending them does not eat the pace and random faults leave the
  processed rate at the pace: a random throttle on a table that accepts
  everything else does not cut the rate.  Not while the table pushes back (the
  recent answers are throttled more than chance explains), nor for requests
  sent before the last cut: then resends compete for the same capacity, and
  letting them ride free would keep fifty workers throttled after a cut;
* an optional budget (`max_units_per_second`, from `--max-wcu`/`--max-rcu`) is a
  hard cap kept by its own scheduler with no burst tolerance: any one-second
  window admits at most the budget x 1.01 plus the last request's own units.

Both schedulers are GCRA (virtual scheduling), see `_Gcra`.  A request bigger
than the tolerance is never refused; it delays the ones after it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat

from importer.dynamodb.request_pool import Waits

__all__ = [
    "Pacer",
    "PacerStats",
    "PacerTuning",
]

#: Seconds of schedule the budget may bank (from refunds or idling): the most any
#: one-second window can exceed the budget by, besides the last request's own units.
BUDGET_SLACK = 0.01
#: The fewest consecutive throttled answers whose span measures what the table grants.
_MIN_RUN = 4


# --------------------------------------------------------------------------- pacer


class _Gcra:
    """Virtual scheduling at `rate` units/s.

    A request may start when the theoretical arrival time `tat` is at most
    `tolerance` seconds ahead of now; it moves `tat` on by units / rate.  An
    idle scheduler banks at most `slack` seconds of schedule, and units given
    back (not processed) return schedule down to that same floor: so any
    window of W seconds admits at most rate x (W + tolerance + slack) units
    plus the last request's own.
    """

    __slots__ = ("rate", "tolerance", "slack", "tat")

    def __init__(self, rate: float, tolerance: float, slack: float, now: float) -> None:
        self.rate = rate
        self.tolerance = tolerance
        self.slack = slack
        self.tat = now

    def wait(self, now: float) -> float:
        return max(0.0, self.tat - self.tolerance - now)

    def take(self, units: float, now: float) -> None:
        self.tat = max(self.tat, now - self.slack) + units / self.rate

    def give_back(self, units: float, now: float) -> None:
        self.tat = max(min(self.tat, now - self.slack), self.tat - units / self.rate)

    def set_rate(self, rate: float, now: float) -> None:
        # the backlog already scheduled is re-timed at the new rate
        if self.tat > now:
            self.tat = now + (self.tat - now) * self.rate / rate
        self.rate = rate


@dataclass(frozen=True, slots=True)
class PacerTuning:
    """How the pacer judges push-back and probes; the defaults suit a 50-worker import.

    Push-back (the table, not chance, refusing) is judged over the last
    `window` answers: at least `sure_share` of them throttled, or more than
    chance explains -- the learnt chance share plus `margin`, or plus `spread`
    binomial standard deviations if larger -- while the table took less than
    the pace.  Until `learn_after` answers were seen clearly under the
    ceiling (rate <= `learn_below` x ceiling, `settle_time` after the last cut),
    the chance share is assumed to be at least `prior`.
    """

    window: int = 20
    sure_share: float = 0.9
    margin: float = 0.25
    spread: float = 3.5
    prior: float = 0.3
    learn_after: int = 50
    learn_below: float = 0.97
    settle_time: float = 0.5
    #: processed < shortfall x pace counts as clearly over capacity (cut by `backoff`)
    shortfall: float = 0.9
    #: the same while unlimited, for push-back judged on the window (not a sure run)
    unpaced_shortfall: float = 0.5
    #: the rate after a clear push-back, as a share of the processed rate
    backoff: float = 0.9
    #: the rate after a slight push-back, as a share of the processed rate
    nudge: float = 0.92
    #: seconds after a cut before the next (a fresh measurement) and the shortest window
    hold: float = 0.1
    #: seconds of history the processed rate is measured over
    measure: float = 1.0
    #: seconds between decisions to probe upward
    epoch: float = 0.25
    #: below the ceiling, per epoch: this share of the ceiling (or `recover_gap` of the gap)
    recover: float = 0.008
    recover_gap: float = 0.2
    #: above the ceiling: `gentle_epochs` steps of `probe`, then doubling steps <= `max_step`
    probe: float = 0.0025
    gentle_epochs: int = 8
    max_step: float = 0.25
    #: seconds of burst the adaptive scheduler allows (the budget allows none)
    tolerance: float = 0.05
    #: the adaptive rate never goes below this (units/s)
    min_rate: float = 1.0
    #: a run of consecutive throttled answers this unlikely by chance is push-back
    #: without waiting for a full window (so an overload is cut within a few answers)
    run_odds: float = 1e-6
    #: unpaced, a window short of a clear shortfall is push-back only when it has
    #: shown it for this many answers in a row (a window's worth: the answers judged
    #: are then all new): a table out of capacity throttles on, its burst spent, while
    #: random faults that throttle 40 % of the answers fill one window now and then
    #: and seldom the next (each such window would cut an unlimited import to ~60 % of
    #: its pace for seconds; `tests/test_pacing.py` counts the cuts in simulated runs)
    persist: int = 20

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError("PacerTuning.window must be at least 2")
        for name in (
            "sure_share",
            "margin",
            "backoff",
            "nudge",
            "shortfall",
            "unpaced_shortfall",
            "learn_below",
        ):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"PacerTuning.{name} must be in (0, 1], got {value}")
        if not 0 < self.run_odds < 1:
            raise ValueError(f"PacerTuning.run_odds must be in (0, 1), got {self.run_odds}")
        for name in ("hold", "measure", "epoch", "min_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PacerTuning.{name} must be positive")


@dataclass(slots=True)
class PacerStats:
    """Counters a run can print: how the pacer saw the table."""

    requests: int = 0
    throttled: int = 0
    processed_units: int = 0
    pushbacks: int = 0
    waited_seconds: float = 0.0
    rate: float | None = None
    ceiling: float | None = None


class _Meter:
    """Processed and offered units as timed events over the last `horizon` seconds."""

    __slots__ = ("events", "horizon")

    def __init__(self, horizon: float) -> None:
        self.events: deque[tuple[float, float, float]] = deque()  # (time, processed, offered)
        self.horizon = horizon

    def add(self, now: float, processed: float = 0.0, offered: float = 0.0) -> None:
        events = self.events
        events.append((now, processed, offered))
        limit = now - self.horizon
        while events[0][0] < limit:
            events.popleft()

    def since(self, start: float) -> tuple[float, float]:
        processed = offered = 0.0
        for t, p, o in reversed(self.events):
            if t < start:
                break
            processed += p
            offered += o
        return processed, offered

    def clear(self) -> None:
        self.events.clear()


class Pacer:
    """Paces requests to the processed rate of the table, under an optional hard budget.

    Call `acquire(items, units)` before each request (blocks; returns the
    seconds slept) and `settle(sent=, processed=, processed_units=, throttled=)`
    after its answer, on the same thread.  `units` are the capacity units of
    what is sent (`item_write_units` summed over the items; read units for
    lookups); 0 means "count items".  Thread-safe; `clock` and `sleep` are
    injectable, so tests run on a fake clock.  `try_acquire` is the
    non-blocking form (what `acquire` loops on, and what a simulation drives).

    The adaptive limit is None (unlimited) until the table first pushes back;
    see `PacerTuning` for how push-back is told from chance.
    """

    def __init__(
        self,
        *,
        max_units_per_second: float | None = None,
        kind: str = "write",
        tuning: PacerTuning | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_units_per_second is not None and not max_units_per_second > 0:
            raise ValueError(f"max units per second must be positive, got {max_units_per_second}")
        self.kind = kind
        self.max_units_per_second = max_units_per_second
        self.tuning = tuning = tuning or PacerTuning()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._local = threading.local()
        now = clock()
        self._adaptive: _Gcra | None = None  # None: unlimited until push-back
        self._budget = (
            _Gcra(float(max_units_per_second), 0.0, BUDGET_SLACK, now)
            if max_units_per_second is not None
            else None
        )
        self._ceiling: float | None = None
        self._streak = 0
        self._recent: deque[bool] = deque(maxlen=tuning.window)
        self._recent_throttled = 0
        self._run = 0  # consecutive fresh throttled answers
        self._above = 0  # consecutive answers after which the window showed push-back
        self._run_start = now  # when the first of them arrived
        self._run_first = 0  # and the units it got in
        self._baseline = 0.0  # share of answers throttled by chance
        self._learnt = 0
        self._meter = _Meter(tuning.measure)
        self._since = now  # measurement start: the start, or the last cut
        self._last_cut = -math.inf
        self._epoch_start = now
        self._epoch_waited = False
        self._units_per_item = 1.0
        self.stats = PacerStats()

    # ---- public surface

    @property
    def rate(self) -> float | None:
        """The adaptive rate in units/s (None while unlimited); the budget applies on top."""
        with self._lock:
            return self._adaptive.rate if self._adaptive is not None else None

    def try_acquire(self, items: int, units: int) -> float:
        """Take the slot now and return 0.0, or return the seconds to wait (nothing taken)."""
        cost = float(units if units > 0 else items)
        with self._lock:
            now = self._clock()
            self._maybe_probe(now)
            adaptive, budget = self._adaptive, self._budget
            wait = adaptive.wait(now) if adaptive is not None else 0.0
            if budget is not None:
                wait = max(wait, budget.wait(now))
            if wait > 0.0:
                self._epoch_waited = True
                return wait
            if adaptive is not None:
                adaptive.take(cost, now)
            if budget is not None:
                budget.take(cost, now)
            if items > 0:
                self._units_per_item += 0.05 * (cost / items - self._units_per_item)
            self._meter.add(now, offered=cost)
        self._local.last = (items, cost, now)
        return 0.0

    def unpaced(self) -> bool:
        """No pace, no budget, at least two windows of answers heard and no throttled
        one among the recent: sends may go out in groups (`post_many`).

        Groups put more requests in flight at once; a table whose burst runs out
        while they are out throttles them together, and the pace it is then cut
        to comes out lower.  So they wait until the table has taken the opening
        without push-back, and any sign of push-back or faults sends requests one
        by one again, each settled before the next is paced.
        """
        return (
            self._adaptive is None
            and self._budget is None
            and not self._recent_throttled
            and self.stats.requests >= 2 * self.tuning.window
        )

    def taken_at(self) -> float | None:
        """The clock when this thread's last `acquire` took its slot (for `settle`'s
        `sent_at` when a thread takes several slots before their answers)."""
        last = getattr(self._local, "last", None)
        return None if last is None else last[2]

    def acquire_group(
        self, costs: Sequence[tuple[int, int]], waits: Waits | None = None
    ) -> list[float | None]:
        """`acquire` and then `taken_at` for each (items, units) of a group sent at once.

        Unpaced (no pace, no budget) nothing waits, so the slots are taken under
        one lock, as one offered event; paced, one after another as `acquire`
        takes them.
        """
        with self._lock:
            if self._adaptive is None and self._budget is None:
                now = self._clock()
                self._maybe_probe(now)
                offered, per_item = 0.0, self._units_per_item
                for items, units in costs:
                    cost = float(units if units > 0 else items)
                    offered += cost
                    if items > 0:
                        per_item += 0.05 * (cost / items - per_item)
                self._units_per_item = per_item
                self._meter.add(now, offered=offered)
                self._local.last = None
                return [now] * len(costs)
        taken: list[float | None] = []
        for items, units in costs:
            self.acquire(items, units, waits)
            taken.append(self.taken_at())
        return taken

    def acquire(self, items: int, units: int, waits: Waits | None = None) -> float:
        """Block until `units` (or `items` when units is 0) may be sent; seconds slept
        (also added to `waits`, the request's tally for the lanes' gauge)."""
        slept = 0.0
        while True:
            wait = self.try_acquire(items, units)
            if wait <= 0.0:
                if slept:
                    with self._lock:
                        self.stats.waited_seconds += slept
                return slept
            if waits is not None:
                waits.add(wait)
            self._sleep(wait)
            slept += wait

    def settle(
        self,
        *,
        sent: int,
        processed: int,
        processed_units: int,
        throttled: bool,
        sent_units: int | None = None,
        sent_at: float | None = None,
    ) -> None:
        """Report an answer: `processed` of `sent` items (`processed_units` units) got in.

        `throttled`: the service throttled (ProvisionedThroughputExceeded /
        Throttling error, or UnprocessedItems returned).  A 5xx or a dropped
        connection is `processed=0, throttled=False`.  `sent_units` and
        `sent_at` (the clock when the slot was taken) default to this
        thread's last acquire (for `sent` items).

        Unprocessed units are given back unless the table is pushing back or
        the request was sent before the last cut (see the module docstring).
        """
        last = getattr(self._local, "last", None)
        if last is not None and last[0] == sent:
            if sent_units is None:
                sent_units = int(last[1])
            if sent_at is None:
                sent_at = last[2]
        self._local.last = None
        tuning = self.tuning
        with self._lock:
            now = self._clock()
            if sent_units is None:
                sent_units = round(sent * self._units_per_item)
            fresh = sent_at is None or sent_at >= self._last_cut  # sent at this pace
            unprocessed_units = max(0, sent_units - processed_units) if processed < sent else 0
            if unprocessed_units:
                # units the table did not take go back: resending them must not eat
                # the pace, so random faults leave the processed rate at the pace
                if self._adaptive is not None and fresh and not self._pushing_back():
                    self._adaptive.give_back(unprocessed_units, now)
                if self._budget is not None and throttled:
                    # the budget gets back only what the service said it refused;
                    # after a 5xx or a lost answer the write may have happened
                    self._budget.give_back(unprocessed_units, now)
            st = self.stats
            st.requests += 1
            st.throttled += bool(throttled)
            st.processed_units += processed_units
            if processed_units:
                self._meter.add(now, processed=processed_units)
            recent = self._recent
            if len(recent) == recent.maxlen and recent[0]:
                self._recent_throttled -= 1
            recent.append(bool(throttled))
            self._recent_throttled += bool(throttled)
            if self._adaptive is None:  # only an unpaced window needs to persist
                full = len(recent) == recent.maxlen
                self._above = self._above + 1 if full and self._pushing_back() else 0
            if throttled and not self._run:
                self._run_start, self._run_first = now, processed_units
            self._run = self._run + 1 if throttled else 0
            if (
                self._adaptive is not None
                and self._ceiling is not None
                and self._adaptive.rate <= tuning.learn_below * self._ceiling
                and now - self._last_cut >= tuning.settle_time
            ):
                # clearly under the ceiling: whatever is throttled now is chance
                self._learnt += 1
                self._baseline += max(0.02, 1.0 / self._learnt) * (bool(throttled) - self._baseline)
            if throttled and now - self._last_cut >= tuning.hold:
                run = self._run
                if run >= self._sure_run() and (
                    now - self._run_start >= tuning.hold or run >= tuning.window
                ):
                    self._judge(now, sure=True)
                elif len(recent) == recent.maxlen:
                    self._judge(now, sure=False)
            self._maybe_probe(now)

    def settle_clean(self, answers: Sequence[tuple[int, int]]) -> None:
        """`settle` for answers that took all they were sent -- (items, units) each --
        under one lock and as one processed event: what settling them one by one
        leaves behind (tests/test_pacing.py holds the two equal)."""
        if not answers:
            return
        self._local.last = None
        tuning = self.tuning
        units = sum(u for _, u in answers)
        with self._lock:
            now = self._clock()
            st = self.stats
            st.requests += len(answers)
            st.processed_units += units
            if units:
                self._meter.add(now, processed=units)
            recent, adaptive = self._recent, self._adaptive
            self._run = 0
            if adaptive is None and not self._recent_throttled:
                # nothing throttled among the recent: no push-back, before or after
                recent.extend(repeat(False, len(answers)))
                self._above = 0
            else:
                for _ in answers:
                    if len(recent) == recent.maxlen and recent[0]:
                        self._recent_throttled -= 1
                    recent.append(False)
                    if adaptive is None:
                        full = len(recent) == recent.maxlen
                        self._above = self._above + 1 if full and self._pushing_back() else 0
                    elif (
                        self._ceiling is not None
                        and adaptive.rate <= tuning.learn_below * self._ceiling
                        and now - self._last_cut >= tuning.settle_time
                    ):
                        self._learnt += 1
                        self._baseline -= max(0.02, 1.0 / self._learnt) * self._baseline
            self._maybe_probe(now)

    # ---- control

    def _threshold(self) -> float:
        """The share of throttled answers above which chance cannot explain them."""
        t = self.tuning
        b = self._chance()
        sd = math.sqrt(b * (1.0 - b) / len(self._recent)) if self._recent else 0.0
        return min(t.sure_share, b + max(t.margin, t.spread * sd))

    def _pushing_back(self) -> bool:
        """The recent answers are throttled more than chance explains (capacity, not faults)."""
        recent = self._recent
        return len(recent) >= _MIN_RUN and self._recent_throttled >= self._threshold() * len(recent)

    def _chance(self) -> float:
        """The share of answers throttled by chance, as far as it is known."""
        t = self.tuning
        return self._baseline if self._learnt >= t.learn_after else max(self._baseline, t.prior)

    def _sure_run(self) -> int:
        """Consecutive throttled answers that chance explains less often than `run_odds`."""
        t = self.tuning
        chance = min(0.95, max(0.05, self._chance()))
        return max(_MIN_RUN, min(t.window, math.ceil(math.log(t.run_odds) / math.log(chance))))

    def _judge(self, now: float, *, sure: bool) -> None:
        t = self.tuning
        share = self._recent_throttled / len(self._recent)
        if not sure and share < self._threshold():
            return
        start = max(self._since, now - t.measure)
        processed, offered = self._meter.since(start)
        # a window shorter than `hold` (the first push-back) would credit the table
        # with the burst it just spent: never measure over less than `hold`
        span = max(now - start, t.hold)
        measured = processed / span
        pace = self._adaptive.rate if self._adaptive is not None else offered / span
        if self._run >= self._sure_run() and now > self._run_start:
            # every answer since the run began was throttled: the table had no burst
            # left, so what it took in that span is what it grants (the first
            # answer's units were taken before the span).  The window above may
            # still count a burst it spent.
            in_run = self._meter.since(self._run_start)[0] - self._run_first
            measured = min(measured, in_run / (now - self._run_start))
        # Unpaced, a table with random faults takes ~60 % of what is offered: only a
        # shortfall below `unpaced_shortfall` (or a sure run) is capacity there
        shortfall = t.shortfall if (sure or self._adaptive is not None) else t.unpaced_shortfall
        if measured < shortfall * pace or (share >= t.sure_share and measured < pace):
            self._cut(now, measured, t.backoff)  # clearly over what the table takes
        elif measured < pace and (sure or self._adaptive is not None or self._above >= t.persist):
            self._cut(now, measured, t.nudge)  # a little over it
        # else: more throttles than chance explains, yet the table took the pace -- or,
        # unpaced, a window that chance may yet explain (see `PacerTuning.persist`)

    def _cut(self, now: float, measured: float, factor: float) -> None:
        """The table pushed back: pace under what it took, and remember that level."""
        t = self.tuning
        self.stats.pushbacks += 1
        current = self._adaptive.rate if self._adaptive is not None else measured
        rate = max(t.min_rate, factor * min(measured, current))
        self._ceiling = max(measured, t.min_rate)
        if self._adaptive is None:
            self._adaptive = _Gcra(rate, t.tolerance, 0.0, now)
        else:
            self._adaptive.set_rate(rate, now)
        self._streak = 0
        self._recent.clear()
        self._recent_throttled = 0
        self._run = 0
        self._above = 0
        self._meter.clear()
        self._since = self._last_cut = self._epoch_start = now
        self._epoch_waited = False
        self.stats.rate, self.stats.ceiling = rate, self._ceiling

    def _maybe_probe(self, now: float) -> None:
        """Once per epoch, raise the rate if it was the limit and nothing pushed back."""
        t = self.tuning
        if now - self._epoch_start < t.epoch:
            return
        limited = self._epoch_waited
        self._epoch_start = now
        self._epoch_waited = False
        gcra = self._adaptive
        if gcra is None or not limited:
            return
        if self._recent and self._recent_throttled >= self._threshold() * len(self._recent):
            return
        ceiling = self._ceiling or gcra.rate
        if gcra.rate < ceiling:
            gap = ceiling - gcra.rate
            rate = min(ceiling, gcra.rate + max(t.recover * ceiling, t.recover_gap * gap))
        else:
            # gently past the last ceiling first (it is likely still there), then in
            # doubling steps: a table that grew is found within seconds
            steps = max(0, self._streak - t.gentle_epochs)
            rate = gcra.rate * (1.0 + min(t.max_step, t.probe * (2**steps)))
            self._streak += 1
        gcra.set_rate(rate, now)
        self.stats.rate = rate
