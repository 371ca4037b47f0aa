"""The run map of the import modes stays exact: on disk (validate), or as a window on the table."""

from __future__ import annotations

import json
import os
import random
import threading
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from importer._digests import MAX_LINE, KeyDigests
from importer.modes.ledger import DigestLedger, EntityLedger, WindowLedger
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


# --------------------------------------------------------------------------- validate's ledger


@pytest.mark.parametrize("max_slots", [4, 64, 1 << 20])
def test_the_digest_ledger_answers_as_a_dict_in_memory_and_across_spilled_runs(tmp_path, max_slots):
    """Random batches of loads and stores -- new entities (the compact entries), entries of
    any other shape (versions, digests, line 0, lines past 32 bits), keys stored again in
    either shape -- answer exactly as a dict, however many runs the table spilled into."""
    ledger = DigestLedger(max_slots=max_slots, directory=str(tmp_path), memory_entries=20)
    model: dict[tuple[str, str], tuple[int, bytes, int]] = {}
    rng = random.Random(max_slots)
    for batch in range(150):
        keys = [key(rng.randrange(2500)) for _ in range(40)]
        assert ledger.load(keys) == {k: model[k] for k in keys if k in model}
        assert ledger.knows_any(keys) == any(k in model for k in keys)
        update = {}
        for k in keys[::2]:
            shape = rng.random()
            if shape < 0.8:
                update[k] = (1, b"", rng.randrange(1, 10**6))
            elif shape < 0.9:
                update[k] = (rng.randrange(2, 9), bytes([batch % 256]) * 16, rng.randrange(10**6))
            else:
                update[k] = (1, b"", rng.choice([0, MAX_LINE, MAX_LINE + 1, 2**40]))
        ledger.store(update)
        model.update(update)
        fresh = [key(10_000 + batch * 10 + i) for i in range(5)]
        assert ledger.add_new(fresh, [batch * 10 + i + 2 for i in range(5)], batch)
        assert not ledger.add_new([key(20_000 + batch), fresh[0]], [1, 2], batch)
        model.update({k: (1, b"", batch * 10 + i + 2) for i, k in enumerate(fresh)})
        assert len(ledger) == len(model)
    assert ledger.load(list(model)) == model
    assert (ledger.runs_on_disk > 10) == (max_slots < 1 << 20)
    ledger.close()
    assert list(tmp_path.iterdir()) == []


def test_spilled_runs_leave_no_file_and_close_their_descriptors(tmp_path):
    """A run is unlinked as soon as it is written: a killed validate leaves nothing behind."""
    fds = len(os.listdir("/proc/self/fd"))
    table = KeyDigests(8, str(tmp_path))
    for i in range(0, 400, 4):
        table.add(table.digest([key(i + j) for j in range(4)]), [i + 2 + j for j in range(4)])
        assert list(tmp_path.iterdir()) == []
    assert table.runs_on_disk >= 50 and table.count == 400
    assert len(os.listdir("/proc/self/fd")) >= fds + 50  # the runs, read through their fds
    digests = table.digest([key(i) for i in range(400)])
    assert table.lines(digests) == [i + 2 for i in range(400)]
    table.close()
    assert len(os.listdir("/proc/self/fd")) == fds
    assert table.lines(digests) == [-1] * 400 and table.count == 0


def test_key_digests_keep_keys_apart_that_concatenate_alike():
    table = KeyDigests(1024, key=bytes(16))
    keys = [("a", "bc"), ("ab", "c"), ("abc", ""), ("", "abc"), ("a\udcff", "b"), ("a", "\udcffb")]
    digests = table.digest(keys)
    assert len({digests[i : i + 12] for i in range(0, len(digests), 16)}) == len(keys)
    table.add(digests, range(2, 2 + len(keys)))
    assert table.lines(table.digest(keys)) == list(range(2, 2 + len(keys)))
    assert table.digest(keys) == KeyDigests(1024, key=bytes(16)).digest(keys)  # keyed, stable
    assert table.digest(keys) != KeyDigests(1024).digest(keys)  # a run's own random key


def _stage_item(line: int, code: str) -> PreparedItem:
    wire = json.dumps(
        {"pk": {"S": "T#t1"}, "sk": {"S": f"P#{code}@1"}, "code": {"S": code},
         "version": {"N": "1"}, "requestId": {"S": f"run1#{line}"}},
        separators=(",", ":"),
    ).encode()  # fmt: skip
    return PreparedItem(line, "T#t1", f"P#{code}@1", wire)


@pytest.mark.parametrize("mode", ["insert", "upsert"])
def test_validate_names_the_first_line_of_a_duplicate_across_spilled_runs(monkeypatch, mode):
    """Entities repeated far apart -- their first line long spilled to disk, runs later --
    are reported with that exact line, as with everything in memory."""
    import importer.modes.stage as modes_mod

    rng = random.Random(31)
    codes = [f"C{rng.randrange(600)}" for _ in range(3000)]
    lines = [2 + i for i in range(len(codes))]

    def outcome(stage: ModeStage) -> list:
        out = []
        for start in range(0, len(codes), 50):
            items = [
                _stage_item(line, c)
                for line, c in zip(
                    lines[start : start + 50], codes[start : start + 50], strict=True
                )
            ]
            done = stage.prepare(items, ticket=stage.ticket())
            out.append(([it.sk for it in done.items], done.unchanged,
                        [(r.line, r.reason, r.kind) for r in done.rejects]))  # fmt: skip
        return out

    in_memory = ModeStage(mode=mode, table="t-command", data_table=None, lookup=None)
    expected = outcome(in_memory)
    made: list[DigestLedger] = []

    def tiny(**kw):
        made.append(DigestLedger(max_slots=16, memory_entries=8, **kw))
        return made[-1]

    monkeypatch.setattr(modes_mod, "DigestLedger", tiny)
    spilled = ModeStage(mode=mode, table="t-command", data_table=None, lookup=None)
    assert outcome(spilled) == expected
    assert made[0].spilled
    if mode == "insert":
        assert made[0].runs_on_disk >= 30
        first: dict[str, int] = {}
        for line, c in zip(lines, codes, strict=True):
            first.setdefault(c, line)
        reasons = [r for _, _, rejects in expected for r in rejects]
        assert len(reasons) == len(codes) - len(first)
        for line, reason, kind in reasons:
            code = codes[line - 2]
            assert reason == f"exists (version 1): duplicate of line {first[code]}"
            assert kind is RejectKind.DUPLICATE and first[code] < line
    in_memory.close()
    spilled.close()


def _batches(codes: list[str], size: int) -> list[list[PreparedItem]]:
    items = [_stage_item(2 + i, c) for i, c in enumerate(codes)]
    return [items[i : i + size] for i in range(0, len(items), size)]


def _final(done) -> tuple[list[int], list[tuple[int, str]]]:
    """(kept lines, (line, reason) of each reject) once the batch is settled."""
    kept = {it.line for it in done.items}
    rejects = done.rejects
    if done.pending is not None:
        rejects = done.pending.final()
        kept = (kept | {r.line for r in done.pending.provisional}) - {r.line for r in rejects}
    return sorted(kept), [(r.line, r.reason) for r in rejects]


@pytest.mark.parametrize("seed", range(6))
def test_validate_batches_register_in_any_order_and_settle_to_the_file_order_answer(
    monkeypatch, seed
):
    """Validate without a table: batches prepared in a shuffled order (each registers
    at once, none waits) end with the very rejects, reasons and kept rows of the
    file order -- across spilled runs too."""
    import importer.modes.stage as modes_mod

    rng = random.Random(seed)
    codes = [f"C{rng.randrange(300)}" for _ in range(1500)]
    batches = _batches(codes, 25)
    in_order = ModeStage(mode="insert", table="t-command", data_table=None, lookup=None)
    expected = [_final(in_order.prepare(b, ticket=in_order.ticket())) for b in batches]
    in_order.close()

    monkeypatch.setattr(modes_mod, "DigestLedger", lambda **kw: DigestLedger(max_slots=16, **kw))
    stage = ModeStage(mode="insert", table="t-command", data_table=None, lookup=None)
    tickets = [stage.ticket() for _ in batches]
    order = list(range(len(batches)))
    rng.shuffle(order)
    done = {}

    def prepare_all() -> None:  # one thread: a batch that waited for an earlier one blocks it
        for i in order:
            done[i] = stage.prepare(batches[i], ticket=tickets[i])

    worker = threading.Thread(target=prepare_all, daemon=True)
    worker.start()
    worker.join(60)  # a bound for the failure only: the batches never wait on each other
    if worker.is_alive():
        stage.order.stop()
        raise AssertionError(f"a batch waited for an earlier one ({len(done)} of {len(order)} ran)")
    assert stage._ledger.runs_on_disk > 20 and stage._ledger.moves > 0
    assert [_final(done[i]) for i in range(len(batches))] == expected
    firsts: dict[str, int] = {}
    for line, c in enumerate(codes, start=2):
        firsts.setdefault(c, line)
    reasons = [r for _, rejects in expected for r in rejects]
    assert reasons == [
        (line, f"exists (version 1): duplicate of line {firsts[c]}")
        for line, c in enumerate(codes, start=2)
        if firsts[c] != line
    ]
    stage.close()


def test_a_validate_batch_ahead_of_its_turn_is_provisional_until_the_turn_passes():
    """The later batch holds entity X first; the earlier batch, registering after it,
    moves X's first line: the later batch's answer changes once the turn passes it."""
    stage = ModeStage(mode="insert", table="t-command", data_table=None, lookup=None)
    early, late = stage.ticket(), stage.ticket()
    done: list = []
    worker = threading.Thread(
        target=lambda: done.append(
            stage.prepare([_stage_item(50, "X"), _stage_item(51, "Y")], ticket=late)
        ),
        daemon=True,
    )
    worker.start()
    worker.join(60)  # a bound for the failure only: the later batch does not wait
    if worker.is_alive():
        stage.order.stop()
        raise AssertionError("the later batch waited for the earlier one")
    [ahead] = done
    assert [it.line for it in ahead.items] == [50, 51] and not ahead.rejects
    assert ahead.pending is not None and ahead.pending.rejects is None  # not settled yet
    behind = stage.prepare([_stage_item(3, "X")], ticket=early)
    assert [it.line for it in behind.items] == [3] and behind.pending is None
    [dup] = ahead.pending.final()
    assert (dup.line, dup.reason, dup.kind, dup.value) == (
        50, "exists (version 1): duplicate of line 3", RejectKind.DUPLICATE, "X"
    )  # fmt: skip
    stage.close()


# --------------------------------------------------------------------------- the window


class _Table:
    """The command table as the mode stage reads it: (pk, sk) -> item, consistent reads."""

    raw_reads = False  # get_many answers dicts (the stage reads the Python way)

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
    while b not in stage._turns._waiters:  # b has read and waits for its turn
        assert reader.is_alive(), "batch b ended (raised) instead of waiting for its turn"
        time.sleep(0.001)
    first = stage.prepare([_item(2)], ticket=a)
    assert [it.line for it in first.items] == [2]
    table.items[("T#t1", "P#X@1")] = json.loads(_item(2).wire)  # a's write lands...
    stage.order.written(a)  # ...and returns while b, which read too early, has not assigned
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
@example([("add_new", [], 2), ("written", 2, 0), ("store", {0: 1}, 2), ("advance", 0, None)])
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


@pytest.mark.parametrize("mode", ["upsert", "strict"])
def test_a_batch_of_new_entities_decided_batch_wide_as_row_by_row(monkeypatch, mode):
    """Upsert's batch-wide way for new entities (`ModeStage._merge_fresh`, no JSON parse)
    leaves the run map as `_assign` would: later rows of those entities -- changed,
    unchanged, partial -- get the same versions and merged records either way."""
    from importer._native import ItemBlock

    rng = random.Random(7)

    def item(line: int, code: str, n: int) -> PreparedItem:
        attrs = {"price": {"N": str(n % 3)}}
        if n % 4:
            attrs["color"] = {"S": ["red", "blue"][n % 2]}
        wire = json.dumps(
            {"pk": {"S": "T#t1"}, "sk": {"S": f"P#{code}@1"}, "code": {"S": code},
             "name": {"S": f"n{n % 2}"}, "version": {"N": "1"}, "attributes": {"M": attrs},
             "requestId": {"S": f"run1#{line}"}},
            separators=(",", ":"),
        ).encode()  # fmt: skip
        return PreparedItem(line, "T#t1", f"P#{code}@1", wire)

    batches, line = [], 2
    for b in range(12):  # the first batches all new, then repeats mixed in
        codes = [f"C{b * 20 + i}" if b < 3 else f"C{rng.randrange(80)}" for i in range(20)]
        batch = [item(line + i, c, rng.randrange(6)) for i, c in enumerate(codes)]
        line += len(batch)
        batches.append(ItemBlock(batch) if b % 2 else batch)

    def outcome(stage: ModeStage) -> list:
        out = []
        for batch in batches:
            done = stage.prepare(batch, ticket=stage.ticket())
            out.append(([(it.sk, json.loads(it.wire)) for it in done.items], done.unchanged,
                        [(r.line, r.reason) for r in done.rejects]))  # fmt: skip
        return out

    real, decided = ModeStage._merge_fresh, []

    def spy(self, *args):
        got = real(self, *args)
        decided.append(type(got).__name__)
        return got

    monkeypatch.setattr(ModeStage, "_merge_fresh", spy)
    fast = ModeStage(mode=mode, table="t-command", data_table=None, lookup=None)
    expected = outcome(fast)
    assert decided[:3] == ["PreparedBatch"] * 3  # the new batches took the short way
    monkeypatch.setattr(ModeStage, "_merge_fresh", lambda self, *a: None)
    slow = ModeStage(mode=mode, table="t-command", data_table=None, lookup=None)
    assert outcome(slow) == expected
    assert any(unchanged for _, unchanged, _ in expected)
    assert any(sk.endswith("@3") for items, _, _ in expected for sk, _ in items)
