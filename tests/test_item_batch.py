"""One batch type: the reference engine's `ItemList` answers every `ItemBatch` method as
the native `ItemBlock` does, so the mode stage and the writers never ask which they got.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importer import _native
from importer.dynamodb.writer import MAX_ITEMS_PER_REQUEST
from importer.item_batch import ItemBatch, ItemList, as_batch
from importer.records import PreparedItem
from importer.transform import native_engine, reference
from tests.test_item_block import ITEMS
from tests.test_native_equivalence import SCALE, spec_and_rows

NAMES = (b"name", b"attributes")


def _answers(batch: ItemBatch, budget: int, per_item: int) -> tuple[Any, ...]:
    """Every answer of the batch interface but `keys_json` and `block` (see below)."""
    return (
        len(batch),
        list(batch),
        batch.lines(),
        batch.pks(),
        batch.sks(),
        batch.distinct_pks(),
        batch.entity_keys(),
        batch.entity_keys(versioned=False),
        batch.at_version_1(),
        batch.keys_unique(),
        batch.chunk_bounds(MAX_ITEMS_PER_REQUEST, budget, per_item),
        batch.chunk_bounds(3, budget, per_item),
        batch.body(b"<", b",", b">"),
        batch.write_units(1024),
        batch.pick(NAMES),
    )


def test_both_batch_types_declare_every_method_of_the_interface() -> None:
    block = _native.ItemBlock([PreparedItem(2, "p", "s@1", b"{}")])
    listed = ItemList([PreparedItem(2, "p", "s@1", b"{}")])
    assert isinstance(block, ItemBatch) and isinstance(listed, ItemBatch)
    for name in ItemBatch.__abstractmethods__:
        assert callable(getattr(block, name)), name
        assert getattr(ItemList, name) is not getattr(ItemBatch, name), name
    assert block.block() is block and listed.block() is None


@settings(max_examples=300 * SCALE, deadline=None)
@given(ITEMS, st.integers(0, 3000), st.integers(0, 64), st.integers(-90, 90), st.integers(-90, 90))
def test_a_list_answers_as_a_block_of_the_same_items(
    items: list[PreparedItem], budget: int, per_item: int, start: int, stop: int
) -> None:
    block, listed = _native.ItemBlock(items), ItemList(items)
    assert _answers(listed, budget, per_item) == _answers(block, budget, per_item)
    # a slice of either is a batch of the same kind, answering alike
    part_block, part_list = block[start:stop], listed[start:stop]
    assert type(part_list) is ItemList and isinstance(part_block, _native.ItemBlock)
    assert _answers(part_list, budget, per_item) == _answers(part_block, budget, per_item)
    # the keys' JSON: C writes it (None for a key it leaves alone); the list leaves it to
    # the lookup, which writes it from the same keys
    assert listed.keys_json() is None
    written = block.keys_json()
    assert written is None or written == _native.keys_json(listed.entity_keys())


def test_as_batch_takes_a_batch_as_it_is_and_lists_anything_else() -> None:
    items = [PreparedItem(2, "p", "s@1", b"{}"), PreparedItem(3, "p", "t@1", b"{}")]
    block, listed = _native.ItemBlock(items), ItemList(items)
    assert as_batch(block) is block and as_batch(listed) is listed
    for other in (items, tuple(items), iter(items)):
        got = as_batch(other)
        assert type(got) is ItemList and got == items


def test_chunk_bounds_refuses_an_empty_request_size_alike() -> None:
    items = [PreparedItem(2, "p", "s@1", b"{}")]
    for batch in (_native.ItemBlock(items), ItemList(items)):
        with pytest.raises(ValueError):
            batch.chunk_bounds(0, 100, 1)


@settings(max_examples=100 * SCALE, deadline=None)
@given(spec_and_rows())
def test_the_engines_batches_answer_alike(case: Any) -> None:
    """The reference engine's items, as the run takes them (`as_batch`), answer every
    method as the native transform's block of the same rows."""
    spec, header, rows, ctx = case
    try:
        ref = reference.transform_batch(spec, header, rows, ctx)
        got = native_engine.transform_batch(spec, header, rows, ctx)
    except Exception:  # noqa: BLE001 - raising alike is test_native_equivalence's business
        return
    assert _answers(as_batch(ref.items), 4096, 10) == _answers(as_batch(got.items), 4096, 10)
