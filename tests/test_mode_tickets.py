"""ModeStage tickets: batches assign versions in file order, whatever order they finish.

Each waiting batch has its own wake-up: a release wakes the batch whose turn it
is, and `abort` wakes every waiting batch (their rows become failures).
"""

from __future__ import annotations

import random
import threading
import time

from importer.modes.stage import ModeStage, _Aborted


def stage() -> ModeStage:
    return ModeStage(mode="insert", table="t-command", data_table=None, lookup=None)


def test_turns_follow_ticket_order_under_random_finishing_order():
    s = stage()
    tickets = [s.ticket() for _ in range(200)]
    order: list[int] = []
    lock = threading.Lock()
    rng = random.Random(7)
    delays = {t: rng.uniform(0, 0.01) for t in tickets}

    def batch(ticket: int) -> None:
        time.sleep(delays[ticket])  # the network part: any order
        s._wait_turn(ticket)
        with lock:
            order.append(ticket)
        s.release(ticket)

    threads = [threading.Thread(target=batch, args=(t,)) for t in reversed(tickets)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=10)
    assert order == tickets


def test_a_ticket_given_back_unused_lets_the_next_one_go():
    s = stage()
    first, second, third = s.ticket(), s.ticket(), s.ticket()
    done = threading.Event()

    def last() -> None:
        s._wait_turn(third)
        done.set()

    th = threading.Thread(target=last)
    th.start()
    s.release(second)  # cancelled before it ran: out of order, remembered
    assert not done.wait(0.05)
    s.release(first)
    assert done.wait(5)
    th.join()


def test_abort_wakes_every_waiting_batch():
    s = stage()
    s.ticket()  # never released: the run stopped
    waiting = [s.ticket() for _ in range(5)]
    outcomes: list[str] = []
    lock = threading.Lock()

    def batch(ticket: int) -> None:
        try:
            s._wait_turn(ticket)
            result = "ran"
        except _Aborted:
            result = "aborted"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=batch, args=(t,)) for t in waiting]
    for th in threads:
        th.start()
    time.sleep(0.05)
    s.abort()
    for th in threads:
        th.join(timeout=5)
    assert outcomes == ["aborted"] * 5
    # and a batch that comes to wait after the abort does not wait at all
    try:
        s._wait_turn(s.ticket())
    except _Aborted:
        pass
    else:
        raise AssertionError("waited past an abort")
