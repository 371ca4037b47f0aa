"""File order (`importer.ordering`): one ticket counter, turns by ticket, order by entity.

Deterministic: waiting threads are only ever released by the calls under test; the
timeouts given to `join`/`wait` bound a failure, they never decide an outcome.
"""

from __future__ import annotations

import random
import threading

import pytest

from importer.coordinator import RunCoordinator, RunStatus, Stopped
from importer.modes.stage import ModeStage
from importer.ordering import FileOrder
from importer.records import PreparedItem


def test_turns_follow_ticket_order_whatever_order_the_batches_arrive_in():
    order = FileOrder()
    turns = order.turns()
    tickets = [order.ticket() for _ in range(200)]
    seen: list[int] = []
    lock = threading.Lock()
    arrive = list(tickets)
    random.Random(7).shuffle(arrive)

    def batch(ticket: int) -> None:
        turns.wait(ticket)
        with lock:
            seen.append(ticket)
        turns.release(ticket)

    threads = [threading.Thread(target=batch, args=(t,)) for t in arrive]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert seen == tickets


def test_a_ticket_given_back_out_of_order_is_remembered_until_the_turn_reaches_it():
    order = FileOrder()
    turns = order.turns()
    first, second, third = order.ticket(), order.ticket(), order.ticket()
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (turns.wait(third), done.set()))
    waiter.start()
    turns.release(second)  # cancelled before it ran
    assert turns.turn == 0 and not done.is_set()  # the first still holds the turn
    turns.release(first)
    assert turns.turn == 2
    assert done.wait(60)
    waiter.join()
    turns.release(second)  # idempotent
    assert turns.turn == 2


def test_one_counter_serves_every_step_and_release_passes_a_ticket_in_each():
    order = FileOrder()
    assign, entities = order.turns(), order.entities()
    t0, t1 = order.ticket(), order.ticket()
    assert (t0, t1) == (0, 1) and order.issued == 2
    order.release(t0)  # a batch cancelled before it ran: its place passes everywhere
    assign.wait(t1)  # returns at once
    assert entities.claim(t1, ["x"]) == []


def test_the_turn_moving_is_reported_under_the_lock():
    moves: list[tuple[int, int]] = []
    order = FileOrder()
    turns = order.turns(on_advance=lambda old, new: moves.append((old, new)))
    a, b, c = (order.ticket() for _ in range(3))
    turns.release(b)
    turns.release(a)
    turns.release(c)
    assert moves == [(0, 2), (2, 3)]


def test_entity_order_waits_only_for_earlier_batches_sharing_an_entity():
    order = FileOrder()
    entities = order.entities()
    t0, t1, t2, t3 = (order.ticket() for _ in range(4))
    assert entities.claim(t0, [("p", "a"), ("p", "b")]) == []
    assert entities.claim(t1, [("p", "c")]) == []  # shares nothing with batch 0
    order.release(t2)  # batch 2 never ran (cancelled): batch 3 may still claim
    waits3 = entities.claim(t3, [("p", "b"), ("p", "c")])
    assert len(waits3) == 2 and not any(e.is_set() for e in waits3)
    entities.release(t0)
    entities.release(t1)
    assert all(e.is_set() for e in waits3)
    entities.release(t1)  # idempotent
    entities.release(t3)
    assert entities._last == {}


@pytest.mark.parametrize("stop", ["halt", "fail"])
def test_a_stopped_run_wakes_every_waiter_and_no_later_one_waits(stop):
    coordinator = RunCoordinator()
    order = FileOrder(coordinator)
    turns, entities = order.turns(), order.entities()
    order.ticket()  # never released: the batch that stopped the run
    waiting = [order.ticket() for _ in range(6)]
    outcomes: list[str] = []
    lock = threading.Lock()

    def batch(i: int, ticket: int) -> None:
        try:
            if i % 2:
                entities.claim(ticket, ["k"])
            else:
                turns.wait(ticket)
            result = "ran"
        except Stopped:
            result = "stopped"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=batch, args=(i, t)) for i, t in enumerate(waiting)]
    for th in threads:
        th.start()
    if stop == "halt":
        coordinator.halt("over the limit")
    else:
        coordinator.fail(RuntimeError("bad credentials"))
    for th in threads:
        th.join(timeout=60)
    assert outcomes == ["stopped"] * 6  # whether they waited before the stop or after
    with pytest.raises(Stopped):
        turns.wait(order.ticket())


def test_the_coordinator_keeps_the_first_fatal_error_and_says_the_status():
    c = RunCoordinator()
    called: list[str] = []
    c.on_stop(lambda: called.append("stop"))
    assert c.status is RunStatus.RUNNING and not c.stopped
    first, second = RuntimeError("first"), RuntimeError("second")
    assert c.fail(first) is first
    assert c.fail(second) is first  # every thread reports the same error
    assert c.status is RunStatus.FAILED and c.stopped and called == ["stop"]
    with pytest.raises(RuntimeError, match="first"):
        c.raise_if_failed()
    assert c.finish(RunStatus.FINISHED) is RunStatus.FAILED  # a failed run stays failed
    c.on_stop(lambda: called.append("late"))  # registered after the stop: called at once
    assert called == ["stop", "late"]


def test_a_halt_keeps_its_first_reason_and_does_not_fail_the_run():
    c = RunCoordinator()
    c.halt("over the limit")
    c.halt("again")
    assert c.halt_reason == "over the limit" and c.stopped and c.fatal is None
    c.raise_if_failed()  # nothing to raise
    # it read to the end of nothing: a halted run is not FINISHED (its checkpoint stays open)
    assert c.finish(RunStatus.FINISHED) is RunStatus.HALTED


def _item(line: int, code: str) -> PreparedItem:
    wire = b'{"pk":{"S":"T#t"},"sk":{"S":"P#%s@1"}}' % code.encode()
    return PreparedItem(line, "T#t", f"P#{code}@1", wire)


def test_the_mode_stage_and_the_sync_share_the_order_s_one_counter():
    order = FileOrder()
    stage = ModeStage(mode="insert", table="t-command", data_table=None, lookup=None, order=order)
    sync = order.entities()
    tickets = [order.ticket() for _ in range(3)]
    assert stage.ticket() == 3  # no second counter to drift apart from
    for t in tickets:
        stage.prepare([_item(2 + t, f"C{t}")], ticket=t)
        assert sync.claim(t, [f"C{t}"]) == []
        sync.release(t)
    stage.release(3)
    stage.close()


def test_a_stopped_run_fails_the_rows_of_a_batch_waiting_for_its_turn():
    coordinator = RunCoordinator()
    order = FileOrder(coordinator)
    table = _EmptyTable()
    stage = ModeStage(mode="insert", table="cmd", data_table=None, lookup=table, order=order)
    order.ticket()  # an earlier batch that never assigns (the run stopped on it)
    late = order.ticket()
    coordinator.halt("stop")
    out = stage.prepare([_item(50, "X")], ticket=late)
    assert not out.items and [f.line for f in out.failures] == [50]
    assert "the run stopped" in out.failures[0].reason
    stage.close()


class _EmptyTable:
    raw_reads = False  # get_many answers dicts (the stage reads the Python way)

    def get_many(self, table, keys):
        return {}

    def table_exists(self, table):
        return True

    def close(self):
        pass
