"""importer.dynamodb.pacing: item capacity units, and the pacer against a simulated table.

The pacer tests run a deterministic discrete-event simulation (tests/support/pacing_sim.py):
50 writers, a token-bucket table of fixed capacity with a small burst, random
faults, simulated time only.
"""

from __future__ import annotations

import base64
import json
import random
import threading

import pytest

from importer.dynamodb.capacity_units import item_read_units, item_write_units
from importer.dynamodb.pacing import Pacer, PacerTuning
from importer.item_size import ItemSizeError, attribute_size, item_size, item_size_of
from tests.support.pacing_sim import FakeClock, SimTable, simulate

FAULT_MIX = dict(throttle=0.2, unprocessed=0.2, server_error=0.05, drop=0.02)

# --------------------------------------------------------------------------- item sizes


def wire(item: dict) -> bytes:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()


def test_attribute_sizes_follow_the_published_rules():
    assert attribute_size({"S": "abc"}) == 3
    assert attribute_size({"S": "é"}) == 2  # UTF-8 bytes, not characters
    assert attribute_size({"N": "12345"}) == 4  # 5 significant digits -> 3 + 1
    assert attribute_size({"N": "-0.00120"}) == 2  # zeros trimmed: "12"
    assert attribute_size({"N": "1200"}) == 2
    assert attribute_size({"N": "0"}) == 1
    assert attribute_size({"B": base64.b64encode(b"\x00" * 10).decode()}) == 10
    assert attribute_size({"BOOL": True}) == 1
    assert attribute_size({"NULL": True}) == 1
    assert attribute_size({"L": []}) == 3
    assert attribute_size({"M": {}}) == 3
    # list: 3 + per element (1 + size)
    assert attribute_size({"L": [{"S": "ab"}, {"N": "1"}]}) == 3 + (1 + 2) + (1 + 2)
    # map: 3 + per element (1 + name + size)
    assert attribute_size({"M": {"k": {"S": "ab"}, "kk": {"BOOL": False}}}) == 3 + 4 + 4
    assert attribute_size({"SS": ["a", "bc"]}) == 3
    assert attribute_size({"NS": ["1", "12345"]}) == 2 + 4
    assert attribute_size({"BS": [base64.b64encode(b"xyz").decode()]}) == 3


def test_item_size_counts_names_and_values():
    item = {"pk": {"S": "A#b"}, "sk": {"S": "A#c@1"}, "version": {"N": "1"}}
    assert item_size_of(item) == (2 + 3) + (2 + 5) + (7 + 2)
    assert item_size(wire(item)) == item_size_of(item)


def test_write_units_per_started_kilobyte():
    def item_of_size(n: int) -> dict:
        return {"pk": {"S": "p"}, "d": {"S": "x" * (n - 4)}}  # names 3 bytes + "p"

    for size, units in [(100, 1), (1024, 1), (1025, 2), (2048, 2), (2049, 3), (400 * 1024, 400)]:
        item = item_of_size(size)
        assert item_size_of(item) == size
        assert item_write_units(wire(item)) == units, size
    # JSON over 1 KB while the item is not: still 1 unit (exact path)
    many_bools = {f"b{i}": {"BOOL": True} for i in range(100)}
    assert len(wire(many_bools)) > 1024 and item_size_of(many_bools) < 1024
    assert item_write_units(wire(many_bools)) == 1


def test_read_units_per_started_4kb_and_eventual_consistency():
    item = {"pk": {"S": "p"}, "d": {"S": "x" * 5000}}
    assert item_read_units(wire(item)) == 2
    assert item_read_units(wire(item), consistent=False) == 1
    assert item_read_units(wire({"pk": {"S": "p"}})) == 1


def test_fast_path_agrees_with_the_exact_size():
    rng = random.Random(5)

    def value(depth: int) -> dict:
        kind = rng.choice(["S", "N", "BOOL", "NULL", "M", "L"] if depth < 3 else ["S", "N"])
        if kind == "S":
            return {"S": "".join(rng.choice('ab"\\é€') for _ in range(rng.randint(0, 300)))}
        if kind == "N":
            return {"N": str(rng.randint(-(10**20), 10**20))}
        if kind in ("BOOL", "NULL"):
            return {kind: True}
        if kind == "M":
            return {"M": {f"m{i}": value(depth + 1) for i in range(rng.randint(0, 5))}}
        return {"L": [value(depth + 1) for _ in range(rng.randint(0, 5))]}

    for _ in range(300):
        item = {"pk": {"S": "p"}, **{f"a{i}": value(0) for i in range(rng.randint(0, 8))}}
        w = wire(item)
        size = item_size_of(item)
        assert size <= len(w)  # why the fast path is safe
        assert item_write_units(w) == max(1, -(-size // 1024))
        ascii_w = json.dumps(item, separators=(",", ":")).encode()  # \u escapes
        assert item_write_units(ascii_w) == item_write_units(w)


def test_bad_items_raise_one_readable_error():
    big = b'{"pk":{"S":"' + b"x" * 2000 + b'"}'  # truncated JSON
    with pytest.raises(ItemSizeError, match="not JSON"):
        item_write_units(big)
    with pytest.raises(ItemSizeError, match="unknown DynamoDB data type 'X'"):
        item_size(b'{"a":{"X":"' + b"y" * 2000 + b'"}}')
    with pytest.raises(ItemSizeError, match="typed attribute value"):
        item_size(b'{"a":"plain"}')


# --------------------------------------------------------------------------- pacer


def run_sim(
    capacity: float,
    *,
    seed: int,
    duration: float = 60.0,
    faults: dict | None = None,
    budget: float | None = None,
    events: dict[float, float] | None = None,
    burst: float = 0.2,
    pacer: object | None = None,
):
    clock = FakeClock()
    rng = random.Random(seed)
    table = SimTable(capacity, burst=burst, rng=rng, **(faults or {}))
    if pacer is None:
        pacer = Pacer(max_units_per_second=budget, clock=clock, sleep=clock.sleep)
    changes = {
        at: (lambda now, c=c: table.set_capacity(c, now)) for at, c in (events or {}).items()
    }
    result = simulate(pacer, clock, table, duration=duration, rng=rng, events=changes)
    per_second = [table.units_between(s, s + 1) for s in range(int(duration))]
    return result, table, pacer, per_second


class NoPacer:
    """What a writer without pacing does: send at once, always."""

    rate = None

    def try_acquire(self, items: int, units: int) -> float:
        return 0.0

    def settle(self, **_: object) -> None:
        pass


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_converges_to_a_fixed_capacity_and_stays(seed):
    result, table, pacer, per_second = run_sim(2000, seed=seed)
    steady = per_second[5:]
    assert sum(steady) / len(steady) >= 0.9 * 2000
    assert result.throttled_share <= 0.10, result.throttled_share
    assert result.throttled_share_between(5, 60) <= 0.10
    assert pacer.rate is not None and 0.8 * 2000 <= pacer.rate <= 1.2 * 2000


@pytest.mark.parametrize("seed", [2, 4])
def test_converges_at_a_low_capacity_after_warm_up(seed):
    result, table, pacer, per_second = run_sim(1000, seed=seed)
    assert sum(per_second[5:]) / 55 >= 0.9 * 1000
    assert result.throttled_share_between(5, 60) <= 0.10


@pytest.mark.parametrize("seed", [1, 2])
def test_finds_a_doubled_capacity_within_ten_seconds(seed):
    result, table, pacer, per_second = run_sim(1000, seed=seed, events={30.0: 2000})
    reached = next(s for s in range(30, 60) if per_second[s] >= 0.8 * 2000)
    assert reached - 30 <= 10, per_second[28:45]
    assert sum(per_second[45:]) / 15 >= 0.9 * 2000  # and stays there


@pytest.mark.parametrize("seed", [1, 2])
def test_random_faults_do_not_slow_it_down(seed):
    # a table with spare capacity; 20 % of requests throttled at random, 20 % partly
    # unprocessed, 5 % 500s, 2 % dropped connections
    paced, *_ = run_sim(1e7, seed=seed, duration=20, faults=FAULT_MIX)
    unpaced, *_ = run_sim(1e7, seed=seed, duration=20, faults=FAULT_MIX, pacer=NoPacer())
    assert paced.items_written >= 0.8 * unpaced.items_written, (
        paced.items_written,
        unpaced.items_written,
    )
    low = [r for t, r in paced.rates if t > 2 and r is not None]
    assert not low or min(low) > 5000  # never walked down to a floor


def test_random_faults_alone_seldom_pace_an_unlimited_import():
    """40 % of answers throttled at random fill a 20-answer window past the push-back
    line now and then; a table out of capacity keeps it there, chance seldom does.
    Each cut paced the import at ~60 % of its speed until it probed back (seconds):
    six 20-second runs cut 18 times when one such window was enough."""
    pushbacks = [
        run_sim(1e7, seed=seed, duration=20, faults=FAULT_MIX)[2].stats.pushbacks
        for seed in range(1, 7)
    ]
    assert sum(pushbacks) <= 2, pushbacks


def test_a_table_out_of_capacity_is_still_cut_within_a_fraction_of_a_second():
    result, _table, pacer, per_second = run_sim(2000, seed=7, duration=10)
    first = next(t for t, r in result.rates if r is not None)
    assert first <= 1.0, first
    assert pacer.rate is not None and pacer.rate <= 1.2 * 2000


def test_random_faults_on_a_capacity_limited_table_keep_it_busy():
    result, table, pacer, per_second = run_sim(1000, seed=3, faults=FAULT_MIX)
    assert sum(per_second[5:]) / 55 >= 0.85 * 1000


@pytest.mark.parametrize("seed", [1, 2])
def test_budget_is_a_hard_cap_per_one_second_window(seed):
    result, table, pacer, per_second = run_sim(1000, seed=seed, budget=500)
    assert table.window_max(0, 60) <= 1.05 * 500
    assert result.throttled == 0
    assert sum(per_second[1:]) / 59 >= 0.95 * 500


def test_budget_holds_under_random_faults_too():
    result, table, pacer, per_second = run_sim(1e7, seed=7, budget=800, faults=FAULT_MIX)
    assert table.window_max(0, 60) <= 1.05 * 800
    # refused units go back to the budget; 5xx / lost answers (7 %) do not (they may
    # have been written), so the budget is used a little less than fully
    assert sum(per_second[2:]) / 58 >= 0.7 * 800


def test_acquire_sleeps_through_the_injected_sleep():
    clock = FakeClock()
    pacer = Pacer(max_units_per_second=100, clock=clock, sleep=clock.sleep)
    assert pacer.acquire(25, 25) == 0.0
    slept = pacer.acquire(25, 25)
    assert slept == pytest.approx(0.25)
    assert clock.t == pytest.approx(0.25)
    # units 0 counts items
    pacer.acquire(10, 0)
    assert pacer.acquire(1, 0) == pytest.approx(0.10)


def test_unlimited_until_the_table_pushes_back():
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    assert pacer.rate is None
    for _ in range(100):
        assert pacer.acquire(25, 25) == 0.0
        pacer.settle(sent=25, processed=25, processed_units=25, throttled=False)
    assert pacer.rate is None


class _SharedClock:
    """One fake clock for several threads: a sleep moves it on for every thread."""

    def __init__(self) -> None:
        self.t = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.t += seconds


def test_read_pacer_budget_holds_across_threads():
    """Thread safety: 8 threads against a 2000 units/s read budget take their slots from
    one schedule -- no second of the (fake, shared) clock admits more than the budget
    allows (x 1.01, plus the last request's own units), and every request is counted.
    The same with a real clock is benchmarks/bench_pacing_loopback.py's."""
    clock = _SharedClock()
    pacer = Pacer(max_units_per_second=2000, kind="read", clock=clock, sleep=clock.sleep)
    stamps: list[tuple[float, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(100):
            pacer.acquire(10, 10)
            with lock:
                stamps.append((clock(), 10))
            pacer.settle(sent=10, processed=10, processed_units=10, throttled=False)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stamps) == pacer.stats.requests == 800
    times = sorted(t for t, _ in stamps)
    for i, first in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < first + 1.0) * 10
        assert in_window <= 2000 * 1.01 + 10, (first, in_window)
    # 8,000 units at 2,000 a second: the schedule spans the seconds the budget says
    assert times[-1] - times[0] >= (8000 - 2000 * 1.01 - 10) / 2000


def test_settle_without_units_uses_this_threads_last_acquire():
    clock = FakeClock()
    pacer = Pacer(max_units_per_second=100, clock=clock, sleep=clock.sleep)
    pacer.acquire(5, 40)
    # the service refused all 40 units: the budget gets them back
    pacer.settle(sent=5, processed=0, processed_units=0, throttled=True)
    assert pacer.acquire(5, 40) == 0.0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="positive"):
        Pacer(max_units_per_second=0)
    with pytest.raises(ValueError, match="backoff"):
        PacerTuning(backoff=1.5)


def test_groups_wait_for_a_calm_opening_and_stop_at_any_push_back():
    """`unpaced` (requests may go out in groups): only after two windows of answers, none
    throttled among the recent ones, and never with a budget or once paced."""
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    window = pacer.tuning.window

    def answer(throttled: bool = False) -> None:
        pacer.acquire(25, 25)
        clock.sleep(0.01)
        pacer.settle(
            sent=25,
            processed=0 if throttled else 25,
            processed_units=0 if throttled else 25,
            throttled=throttled,
        )

    for _ in range(2 * window - 1):
        answer()
        assert not pacer.unpaced()  # the opening: one by one
    answer()
    assert pacer.unpaced()
    answer(throttled=True)
    assert not pacer.unpaced()  # a throttled answer among the recent ones
    for _ in range(window):
        answer()
    assert pacer.unpaced() and pacer.rate is None  # chance, not capacity: calm again
    budget = Pacer(max_units_per_second=1000, clock=clock, sleep=clock.sleep)
    for _ in range(2 * window):
        budget.acquire(25, 25)
        budget.settle(sent=25, processed=25, processed_units=25, throttled=False)
    assert not budget.unpaced()


def _pacer_state(p: Pacer) -> tuple:
    """Everything `settle` and `acquire` change, for comparing two pacers."""
    return (
        p.stats,
        list(p._recent),
        p._recent_throttled,
        p._run,
        p._above,
        p._learnt,
        p._baseline,
        p._units_per_item,
        p._meter.since(-1e18),
        p.rate,
        p._epoch_start,
    )


@pytest.mark.parametrize("seed", range(40))
def test_a_group_is_acquired_and_settled_as_its_requests_one_by_one(seed: int) -> None:
    """`acquire_group` and `settle_clean` leave a pacer as the per-request calls do,
    after any history: throttled runs, cuts (a pace), a budget, faults by chance."""
    rng = random.Random(seed)
    budget = rng.choice([None, None, 5000.0])
    clocks = [FakeClock(), FakeClock()]
    pacers = [Pacer(max_units_per_second=budget, clock=c, sleep=c.sleep) for c in clocks]
    share = rng.choice([0.0, 0.05, 0.3, 0.9])
    for _ in range(rng.randint(0, 400)):  # the same history for both
        sent = rng.randint(1, 25)
        units = rng.randint(sent, 3 * sent)
        throttled = rng.random() < share
        done = rng.randint(0, sent - 1) if throttled else sent
        for p, c in zip(pacers, clocks, strict=True):
            p.acquire(sent, units)
            c.sleep(0.003)
            p.settle(
                sent=sent,
                processed=done,
                processed_units=units if done == sent else done,
                throttled=throttled,
            )
    group = [
        (n, rng.randint(n, 2 * n)) for n in (rng.randint(1, 25) for _ in range(rng.randint(1, 9)))
    ]
    one, other = pacers
    taken = [one.acquire_group(group)]
    other_taken = []
    for items, units in group:
        other.acquire(items, units)
        other_taken.append(other.taken_at())
    for c in clocks:
        c.sleep(0.002)
    one.settle_clean(group)
    for (items, units), at in zip(group, other_taken, strict=True):
        other.settle(
            sent=items,
            processed=items,
            processed_units=units,
            throttled=False,
            sent_units=units,
            sent_at=at,
        )
    assert taken[0] == other_taken
    a, b = _pacer_state(one), _pacer_state(other)
    assert a[:6] == b[:6] and a[8:] == b[8:]
    assert a[6] == pytest.approx(b[6]) and a[7] == pytest.approx(b[7])
