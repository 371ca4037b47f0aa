"""`_native.ItemBlock`: a batch's items in one buffer, answering the writer in C.

Every C answer (keys, request cuts, bodies, write units) is checked against
the Python the writer and the blind stage used before the block existed, on
random items (hypothesis) and on the native transform's own output.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importer import _native
from importer.dynamodb.api import DynamoClient
from importer.dynamodb.capacity_units import item_write_units
from importer.dynamodb.writer import (
    _PER_ITEM_OVERHEAD,
    _PUT_SEP,
    MAX_ITEMS_PER_REQUEST,
    BatchWriter,
    chunk_requests,
    write_units,
)
from importer.item_batch import ItemList
from importer.records import PreparedItem
from importer.run.batch_steps import resolve_duplicates
from importer.transform import native_engine, reference
from tests.test_native_equivalence import SCALE, spec_and_rows

# small alphabets, so that keys repeat; a lone surrogate (a key the transform's
# Python path can make) and characters of every UTF-8 width
KEY_TEXT = st.text(
    alphabet=["a", "b", "#", "@", "1", "é", "中", "\U0001f600", "\udc80"], max_size=4
)
WIRE = st.one_of(
    st.binary(max_size=40),
    # JSON either side of a write unit (sizing a large item parses it)
    st.integers(990, 1100).map(lambda n: b'{"s":{"S":"' + b"x" * n + b'"}}'),
)
ITEMS = st.lists(
    st.builds(PreparedItem, st.integers(-(2**70), 2**70), KEY_TEXT, KEY_TEXT, WIRE),
    max_size=80,
)


def _python_bounds(items: list[PreparedItem], budget: int, per_item: int) -> list[int]:
    bounds = [0]
    for chunk in chunk_requests(items, budget=budget, per_item=per_item):
        bounds.append(bounds[-1] + len(chunk))
    return bounds


def _key_json(pk: str, sk: str) -> str:
    return json.dumps({"pk": {"S": pk}, "sk": {"S": sk}}, ensure_ascii=False, separators=(",", ":"))


def _python_keys_json(keys: list[tuple[str, str]]) -> bytes | None:
    """A BatchGetItem call's `Keys` as json.dumps writes them; None for a lone surrogate."""
    try:
        return ",".join([_key_json(pk, sk) for pk, sk in keys]).encode("utf-8")
    except UnicodeEncodeError:
        return None


def _python_units(items: list[PreparedItem]) -> int:
    if any(len(it.wire) > 1024 for it in items):
        return -1
    return len(items)


def assert_block_answers_as_its_list(block: Any, *, budget: int = 16 * 1024 * 1024) -> None:
    """The block's C answers, asked before any item is built, equal Python's on its list."""
    answers = (
        block.lines(),
        block.pks(),
        block.sks(),
        block.keys_unique(),
        block.entity_keys(),
        block.entity_keys(versioned=False),
        block.keys_json(),
        block.keys_json(versioned=False),
        block.at_version_1(),
        block.chunk_bounds(MAX_ITEMS_PER_REQUEST, budget, _PER_ITEM_OVERHEAD),
        block.body(b"<", _PUT_SEP, b">"),
        block.write_units(1024),
    )
    items = list(block)
    assert answers == (
        [it.line for it in items],
        [it.pk for it in items],
        [it.sk for it in items],
        len({(it.pk, it.sk) for it in items}) == len(items),
        [(it.pk, it.sk) for it in items],
        [(it.pk, it.sk.rsplit("@", 1)[0]) for it in items],
        _python_keys_json([(it.pk, it.sk) for it in items]),
        # C declines a block holding a lone surrogate anywhere in a key
        _python_keys_json([(it.pk, it.sk) for it in items])
        and _python_keys_json([(it.pk, it.sk.rsplit("@", 1)[0]) for it in items]),
        all(it.sk.endswith("@1") for it in items),
        _python_bounds(items, budget, _PER_ITEM_OVERHEAD),
        b"<" + _PUT_SEP.join(it.wire for it in items) + b">",
        _python_units(items),
    )


@settings(max_examples=300 * SCALE, deadline=None)
@given(ITEMS, st.integers(0, 3000), st.integers(0, 64))
def test_a_block_answers_as_the_list_of_its_items(
    items: list[PreparedItem], budget: int, per_item: int
) -> None:
    assert_block_answers_as_its_list(_native.ItemBlock(items), budget=budget)
    block = _native.ItemBlock(items)
    assert block.chunk_bounds(MAX_ITEMS_PER_REQUEST, budget, per_item) == _python_bounds(
        items, budget, per_item
    )
    assert list(block) == items and block == items and items == block
    assert len(block) == len(items)
    assert write_units(block) == sum(item_write_units(it.wire) for it in items)
    assert block.keys_unique() == ItemList(items).keys_unique()
    assert block.distinct_pks() == {it.pk for it in items}
    if items:
        block[len(items) // 2]  # one item built as an object: the rest still from the buffer
        assert block.distinct_pks() == {it.pk for it in items}


@settings(max_examples=200 * SCALE, deadline=None)
@given(ITEMS, st.integers(-100, 100), st.integers(-100, 100), st.integers(-3, 3))
def test_a_slice_is_a_view_of_the_same_items(
    items: list[PreparedItem], start: int, stop: int, step: int
) -> None:
    block = _native.ItemBlock(items)
    step = step or 1
    assert list(block[start:stop:step]) == items[start:stop:step]
    view = block[start:stop]
    assert isinstance(view, _native.ItemBlock)
    assert_block_answers_as_its_list(view)
    for i in (start, stop):
        if -len(items) <= i < len(items):
            assert block[i] is block[i] and block[i] == items[i]
        else:
            with pytest.raises(IndexError):
                block[i]


def test_an_item_is_one_object_however_it_is_reached() -> None:
    items = [PreparedItem(i, "t#P", f"P#{i}@1", b"{}") for i in range(30)]
    block = _native.ItemBlock(items)
    whole = list(block)
    assert all(a is b for a, b in zip(whole, items, strict=True))  # given objects are kept
    assert block[10:20][3] is whole[13]


def test_a_block_pickles_as_a_list() -> None:
    items = [PreparedItem(1, "a", "b@1", b'{"x":1}'), PreparedItem(2, "a", "\udc80", b"{}")]
    copy = pickle.loads(pickle.dumps(_native.ItemBlock(items)))
    assert type(copy) is list and copy == items


def test_blind_mode_keeps_the_last_of_a_repeated_key_from_a_block() -> None:
    items = [
        PreparedItem(2, "t#P", "P#a@1", b'{"code":{"S":"a"}}'),
        PreparedItem(3, "t#P", "P#b@1", b'{"code":{"S":"b"}}'),
        PreparedItem(5, "t#P", "P#a@1", b'{"code":{"S":"a"}}'),
    ]
    kept, dupes = resolve_duplicates(_native.ItemBlock(items), code_column="code", fields={})
    assert [it.line for it in kept] == [3, 5]
    assert [(r.line, r.value) for r in dupes] == [(2, "a")]
    assert "duplicate of line 5" in dupes[0].reason


@settings(max_examples=200 * SCALE, deadline=None)
@given(spec_and_rows())
def test_the_transforms_block_answers_as_the_reference_items(case: Any) -> None:
    """The block the native transform returns: its C answers equal those of the
    reference engine's list of items (same rows), before any item is built."""
    spec, header, rows, ctx = case
    try:
        ref = reference.transform_batch(spec, header, rows, ctx)
        got = native_engine.transform_batch(spec, header, rows, ctx)
    except Exception:  # noqa: BLE001 - raising alike is test_native_equivalence's business
        return
    if not isinstance(got.items, _native.ItemBlock):
        return  # a spec the core does not take: the reference path lists its items
    block = got.items
    expected = _native.ItemBlock(ref.items)
    assert block.lines() == expected.lines()
    assert block.pks() == expected.pks()
    assert block.sks() == expected.sks()
    assert block.keys_unique() == expected.keys_unique()
    assert block.body(b"[", b",", b"]") == expected.body(b"[", b",", b"]")
    assert block.write_units(1024) == expected.write_units(1024)
    assert block.chunk_bounds(25, 4096, 10) == expected.chunk_bounds(25, 4096, 10)
    assert_block_answers_as_its_list(block)


def test_the_writer_sends_a_blocks_requests_as_it_sends_a_list() -> None:
    items = [PreparedItem(i, "t#P", f"P#{i % 10}@1", b'{"n":{"N":"%d"}}' % i) for i in range(70)]

    class Recorder(DynamoClient):
        def __init__(self) -> None:
            self.bodies: list[bytes] = []

        def post(self, operation: str, body: bytes) -> Any:
            from importer.dynamodb.api import Reply
            from importer.dynamodb.client import ALL_PROCESSED

            self.bodies.append(body)
            return Reply(raw=ALL_PROCESSED)

    sent = []
    for given_items in (items, _native.ItemBlock(items)):
        client = Recorder()
        outcome = BatchWriter(client=client, table="t").write_batch(given_items)
        assert outcome.written == 70 and not outcome.failures
        sent.append(client.bodies)
    assert sent[0] == sent[1] and len(sent[0]) == 7  # a key repeats every 10 rows: cut there


def test_a_request_is_filled_up_to_its_budget_exactly() -> None:
    items = [PreparedItem(i, "p", f"s{i}", b"0123456789") for i in range(5)]
    block = _native.ItemBlock(items)
    # 10 bytes of wire + 5 of envelope each: two fill a budget of 30 exactly
    assert block.chunk_bounds(25, 30, 5) == _python_bounds(items, 30, 5) == [0, 2, 4, 5]
    assert block.chunk_bounds(25, 29, 5) == _python_bounds(items, 29, 5) == [0, 1, 2, 3, 4, 5]
    # an item over the budget on its own still goes, alone
    assert block.chunk_bounds(25, 3, 5) == [0, 1, 2, 3, 4, 5]
    assert block.chunk_bounds(2, 1000, 5) == [0, 2, 4, 5]
