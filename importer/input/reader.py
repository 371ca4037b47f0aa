"""What every reader of rows offers the run, whichever format it reads.

A reader yields rows (`Row`: line, fields, or why it is unreadable) in file order.
It may also cut its own batches (`read_batches`): a reader that sizes rows as it
parses them -- the native CSV reader, JSONL, Parquet -- hands the run whole batches,
one call per batch, instead of a row at a time.  A reader that cannot says None (the
default) and the run batches its rows itself; both give the batches ItemBatcher
would cut.  A new input format is a class in `importer.input` that subclasses
`RowReader`; what it does not override has the default below, so the run reads every
member plainly and no caller has to ask whether a reader has it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from importer.input.batching import Batch, Batcher, Row

__all__ = ["Row", "RowReader"]


class RowReader(Protocol):
    """Rows in file order; optionally, the batches `batcher` would cut from them."""

    #: the names the fields are in order of: a CSV's header, a typed input's spec columns
    header: list[str]
    #: a typed input's first item's keys, for the summary's ignored columns (None: the
    #: header is the keys, as in a CSV)
    first_keys: list[str] | None = None

    def __iter__(self) -> Iterator[Row]: ...

    def read_batches(self, batcher: Batcher) -> Iterator[Batch] | None:
        """The batches `batcher` would cut, cut by the reader; None: the run cuts them."""
        return None

    # ItemReader pads a CSV row shorter than the header with "" and cuts a longer one;
    # the run's summary says how many, and names the first few lines of each.  A
    # format without a header to fit never does either.
    @property
    def padded(self) -> int:
        """Rows read so far that were shorter than the header (padded)."""
        return 0

    @property
    def truncated(self) -> int:
        """Rows read so far that were longer than the header (cut)."""
        return 0

    @property
    def padded_lines(self) -> Sequence[int]:
        """The first few padded rows' lines."""
        return ()

    @property
    def truncated_lines(self) -> Sequence[int]:
        """The first few cut rows' lines."""
        return ()

    def close(self) -> None:
        """Let go of what reading holds (a native buffer); the byte stream is the caller's."""
        return None
