"""The run map of the import modes stays exact: on disk (validate), or as a window on the table."""

from __future__ import annotations

import json
import random
import threading
import time

from hypothesis import example, given, settings
from hypothesis import strategies as st

from importer.modes.ledger import EntityLedger, WindowLedger
from importer.modes.stage import ModeStage
from importer.records import PreparedItem, RejectKind


def key(i: int) -> tuple[str, str]:
    return f"T#t{i % 7}", f"P#{i}"


def test_the_ledger_answers_alike_before_and_after_it_spills(tmp_path):
    ledger = EntityLedger(memory_entries=500, directory=str(tmp_path))
    model: dict[tuple[str, str], tuple[int, bytes, int]] = {}
    rng = random.Random(5)
    for batch in range(40):
        keys = [key(rng.randrange(3000)) for _ in range(100)]
        assert ledger.load(keys) == {k: model[k] for k in keys if k in model}
        update = {k: (batch, bytes([batch]) * 4, rng.randrange(1, 10**6)) for k in keys[::2]}
        ledger.store(update)
        model.update(update)
    assert ledger.spilled and len(ledger) == len(model)
    assert ledger.load(list(model)) == model
    files = list(tmp_path.iterdir())
    assert files  # on disk while the run lasts...
    ledger.close()
    assert list(tmp_path.iterdir()) == []  # ...and gone after it


# --------------------------------------------------------------------------- the window


class _Table:
    """The command table as the mode stage reads it: (pk, sk) -> item, consistent reads."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict] = {}

    def get_many(self, table, keys):
        return {k: self.items[k] for k in keys if k in self.items}

    def table_exists(self, table):
        return True

    def close(self):
        pass


def _item(line: int, code: str = "X") -> PreparedItem:
    wire = json.dumps(
        {
            "pk": {"S": "T#t1"},
            "sk": {"S": f"P#{code}@1"},
            "version": {"N": "1"},
            "requestId": {"S": f"run1#{line}"},
        },
        separators=(",", ":"),
    ).encode()
    return PreparedItem(line, "T#t1", f"P#{code}@1", wire)


def test_the_window_keeps_a_write_until_every_batch_that_read_before_it_has_assigned():
    table = _Table()
    stage = ModeStage(mode="insert", table="cmd", data_table=None, lookup=table)
    a, z, b = stage.ticket(), stage.ticket(), stage.ticket()
    done: dict[str, object] = {}
    # batch b reads first: the table is empty, X is new to it
    reader = threading.Thread(
        target=lambda: done.setdefault("b", stage.prepare([_item(50)], ticket=b))
    )
    reader.start()
    while b not in stage._waiters:  # b has read and waits for its turn
        time.sleep(0.001)
    first = stage.prepare([_item(2)], ticket=a)
    assert [it.line for it in first.items] == [2]
    table.items[("T#t1", "P#X@1")] = json.loads(_item(2).wire)  # a's write lands...
    stage.written(a)  # ...and returns while b, which read too early, has not assigned
    stage.release(z)
    reader.join()
    late = done["b"]
    assert not late.items
    [dup] = late.rejects
    assert (dup.kind, dup.reason) == (
        RejectKind.DUPLICATE,
        "exists (version 1): duplicate of line 2",
    )
    # a batch handed out after the write finds X in the table, and says the same
    c = stage.ticket()
    assert len(stage._window) == 0  # a's assignment is forgotten: every early reader assigned
    after = stage.prepare([_item(90)], ticket=c)
    [dup] = after.rejects
    assert (dup.kind, dup.reason) == (
        RejectKind.DUPLICATE,
        "exists (version 1): duplicate of line 2",
    )


def test_window_ledger_forgets_only_what_its_batch_still_owns():
    x, y = ("T#t1", "P#X"), ("T#t1", "P#Y")
    w = WindowLedger()
    w.store({x: (1, b"", 2), y: (1, b"", 3)}, owner=0)
    w.store({x: (2, b"", 9)}, owner=1)  # a later batch assigned x again
    w.written(0, issued=3)
    w.advance(2)
    assert len(w) == 2  # ticket 2 may have read before batch 0's write
    w.advance(3)
    assert w.load([x, y]) == {x: (2, b"", 9)}  # y forgotten; x belongs to batch 1
    w.written(1, issued=4)
    w.advance(4)
    assert len(w) == 0 and w.peak == 2


def test_knows_any_agrees_with_load_in_both_ledgers(tmp_path):
    known = {("p", f"s{i}"): (1, b"", i) for i in range(0, 40, 3)}
    spilled = EntityLedger(memory_entries=5, directory=str(tmp_path))
    spilled.store(known)
    assert spilled.spilled
    for ledger in (EntityLedger(), spilled, WindowLedger()):
        ledger.store(known, 0)
        for keys in ([("p", "s1"), ("p", "s2")], [("p", "s4"), ("p", "s3")], [], [("q", "s0")]):
            assert ledger.knows_any(keys) == bool(ledger.load(keys)), (ledger, keys)
        ledger.close()


class _PerKeyWindow:
    """The window's rule, key by key (the plain form `WindowLedger` must keep)."""

    def __init__(self) -> None:
        self.entries: dict = {}
        self.owned: dict = {}
        self.visible: list = []

    def store(self, entries: dict, owner: int | None) -> None:
        if not entries:  # a batch that assigned nothing holds nothing, and has no turn
            return
        for k, e in entries.items():
            self.entries[k] = (e, owner)
        if owner is not None:
            self.owned.setdefault(owner, []).extend(entries)

    def add_new(self, keys: list, lines: list, owner: int | None) -> bool:
        if any(k in self.entries for k in keys):
            return False
        self.store(dict(zip(keys, ((1, b"", line) for line in lines), strict=True)), owner)
        return True

    def written(self, owner: int, issued: int) -> None:
        if owner in self.owned:
            self.visible.append((issued, owner))

    def advance(self, turn: int) -> None:
        for issued, owner in sorted(self.visible):
            if issued <= turn:
                self.visible.remove((issued, owner))
                for k in self.owned.pop(owner, ()):
                    if k in self.entries and self.entries[k][1] == owner:
                        del self.entries[k]


OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("store"),
            st.dictionaries(st.integers(0, 6), st.integers(1, 5), max_size=4),
            st.one_of(st.none(), st.integers(0, 5)),
        ),
        st.tuples(
            st.just("add_new"),
            st.lists(st.integers(0, 6), max_size=4),
            st.one_of(st.none(), st.integers(0, 5)),
        ),
        st.tuples(st.just("written"), st.integers(0, 5), st.integers(0, 8)),
        st.tuples(st.just("advance"), st.integers(0, 8), st.none()),
    ),
    max_size=30,
)


@settings(max_examples=400, deadline=None)
@given(OPS)
@example([("store", {}, 0), ("written", 0, 0), ("store", {0: 1}, 0), ("advance", 0, None)])
@example([("add_new", [0, 1, 0], 2), ("store", {1: 3}, 4), ("written", 2, 0), ("advance", 1, None)])
def test_the_window_forgets_exactly_as_the_key_by_key_rule(ops: list) -> None:
    """Random stores (keys taken over by later batches, by the run, or stored again by
    their own batch; batches of new keys, `add_new`), writes and turns: the window
    holds what the plain rule holds."""
    window, model = WindowLedger(), _PerKeyWindow()
    keys = [("T#t", f"P#{i}") for i in range(7)]
    for op, a, b in ops:
        if op == "store":
            entries = {keys[k]: (v, b"", v) for k, v in a.items()}
            window.store(entries, b)
            model.store(entries, b)
        elif op == "add_new":
            new, lines = [keys[k] for k in a], [10 + i for i in range(len(a))]
            assert window.add_new(new, lines, b) == model.add_new(new, lines, b)
        elif op == "written":
            window.written(a, issued=b)
            model.written(a, b)
        else:
            window.advance(a)
            model.advance(a)
        assert window.load(keys) == {k: e for k, (e, _) in model.entries.items()}
        assert len(window) == len(model.entries)
