"""The native reader's batches (`RowBlock`): the rows of a list, without a list.

A batch cut by `read_batch` keeps its fields as the bytes the reader parsed,
and the native transform reads them in place.  Everything else sees a sequence
of `(line, fields)`: these tests hold it to the plain list it stands for, and
the transform of a block to the transform of that list (and to the reference).
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from importer import _native
from importer.input.batching import Batcher, RowsByLine
from importer.input.options import CsvOptions
from importer.transform import native_engine, reference
from importer.transform.context import RunContext
from importer.transform.spec import parse_spec
from tests.test_native_equivalence import CSV_BYTES, SCALE, _outcome, assert_same, spec_and_rows

ROWS = [(2, ["a", "é"]), (3, ["", 'q"x']), (7, ["😀", "z\nz"])]


def _block(rows: list[tuple[int, list[str]]], width: int = 2) -> Any:
    block = _native.RowBlock(width)
    for line, fields in rows:
        block.append(line, fields)
    return block


def test_a_block_is_the_sequence_of_its_rows() -> None:
    block = _block(ROWS)
    assert len(block) == 3
    assert list(block) == ROWS
    assert block == ROWS and ROWS == block and block == _block(ROWS)
    assert block != ROWS[:2]
    assert block[0] == ROWS[0] and block[-1] == ROWS[-1]
    assert block[1:] == ROWS[1:]
    with pytest.raises(IndexError):
        block[3]
    assert [line for line, _ in block] == [2, 3, 7]
    assert block[0][1] is not block[0][1]  # each caller gets its own list, as from the reader
    assert pickle.loads(pickle.dumps(block)) == ROWS


def test_a_line_is_found_by_binary_search() -> None:
    block = _block(ROWS)
    assert [block.index_of(n) for n in (1, 2, 3, 4, 7, 8)] == [-1, 0, 1, -1, 2, -1]
    assert _native.RowBlock(1).index_of(5) == -1
    with pytest.raises(ValueError, match="does not follow"):
        block.append(7, ["x", "y"])


def test_rows_the_buffer_cannot_hold_are_kept_as_given() -> None:
    odd = [(1, ["a"]), (2, ["\ud800", "x"]), (3, ["b", "c", "d"]), (4, ["e", "f"])]
    block = _block(odd)
    assert list(block) == odd
    assert block.index_of(3) == 2


@pytest.mark.parametrize("rows", [ROWS, _block(ROWS)], ids=["list", "block"])
def test_rows_by_line_looks_up_the_fields_of_a_line(rows: Any) -> None:
    by_line = RowsByLine(rows)
    assert by_line[3] == ["", 'q"x']
    assert by_line.get(4, ()) == () and 4 not in by_line and 7 in by_line
    assert list(by_line) == [2, 3, 7] and len(by_line) == 3
    assert by_line.get("2") is None


CTX = RunContext(run_id="r", timestamp="2024-01-01T00:00:00+00:00", source="s")


@settings(max_examples=300 * SCALE, deadline=None)
@given(spec_and_rows())
def test_the_transform_of_a_block_is_the_transform_of_its_rows(case: Any) -> None:
    """Rows appended to a block (bytes, or kept as given) transform as the list does."""
    spec, header, rows, ctx = case
    kept = []
    for line, fields in rows:
        if type(line) is int and 0 < line < 2**62 and (not kept or line > kept[-1][0]):
            kept.append((line, fields))
    assume(kept and header)
    block = _native.RowBlock(len(header))
    for line, fields in kept:
        block.append(line, fields)
    assert_same(spec, header, block, ctx)
    assert _outcome(native_engine.transform_batch, spec, header, block, ctx) == _outcome(
        native_engine.transform_batch, spec, header, list(block), ctx
    )


SPEC = parse_spec(
    {
        "record": {"type": "T", "code": "{h1}", "tenant": "{h2}", "name": "{h3}"},
        "columns": {
            "h1": {"required": True, "pattern": "^[^x]"},
            "h2": {"type": "integer"},
            "h3": {"type": "json"},
        },
    }
)


@settings(max_examples=300 * SCALE, deadline=None)
@given(CSV_BYTES, st.integers(1, 4))
def test_the_readers_blocks_transform_as_the_reference(data: bytes, per_batch: int) -> None:
    """Whatever bytes the reader is given, its blocks transform as their rows do."""
    options = CsvOptions(header_location="GIVEN", headers=("h1", "h2", "h3"))
    reader = native_engine.open_reader(io.BytesIO(data), options)
    batcher = Batcher(max_items=per_batch, max_bytes=None, batch_input={"r": "x"})
    cut = reader.read_batches(batcher)
    assert cut is not None
    for batch in cut:
        assert isinstance(batch.rows, _native.RowBlock)
        assert_same(SPEC, list(reader.header), batch.rows, CTX)
        rows = list(batch.rows)
        ref = reference.transform_batch(SPEC, list(reader.header), rows, CTX)
        got = native_engine.transform_batch(SPEC, list(reader.header), batch.rows, CTX)
        assert [i.wire for i in got.items] == [i.wire for i in ref.items]
        assert got.rejects == ref.rejects
