"""What every reader of rows offers the run, whichever format it reads.

A reader yields rows (line, fields) in file order.  It may also cut its own batches
(`read_batches`): a reader that sizes rows as it parses them -- the native CSV
reader, JSONL, Parquet -- hands the run whole batches, one call per batch, instead of
a row at a time.  A reader that cannot says None (the default) and the run batches
its rows itself; both give the batches ItemBatcher would cut.  A new input format is
a class in `importer.input` that subclasses `RowReader`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from importer.input.batching import Batch, Batcher

__all__ = ["RowReader"]


class RowReader(Protocol):
    """Rows in file order; optionally, the batches `batcher` would cut from them."""

    def __iter__(self) -> Iterator[Any]: ...

    def read_batches(self, batcher: Batcher) -> Iterator[Batch] | None:
        """The batches `batcher` would cut, cut by the reader; None: the run cuts them."""
        return None
