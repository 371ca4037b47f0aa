"""ItemBatcher: the one place batch limits live (docs/aws-facts.md, ItemBatcher).

A batch closes when it holds MaxItemsPerBatch rows or when one more row would
push the child input `{"Items":[...],"BatchInput":{...}}` over
MaxInputBytesPerBatch, whichever comes first.  Bytes are counted as the
compact UTF-8 JSON of that child input, which is what Step Functions measures.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from importer._native import RowBlock
from importer.records import Reject

__all__ = [
    "AWS_MAX_INPUT_BYTES",
    "DEFAULT_MAX_ITEMS",
    "Batch",
    "BatchLimitError",
    "Batcher",
    "Row",
    "RowsByLine",
    "check_limits",
    "child_input_json",
    "item_json_size",
]

#: The child execution's whole input must stay within 256 KiB.
AWS_MAX_INPUT_BYTES = 262_144
#: Rows per batch when the user sets nothing (see README, "Batches").
DEFAULT_MAX_ITEMS = 1000
_ENVELOPE = len('{"Items":[],"BatchInput":}')


class Row(Protocol):
    """One row as a reader yields it (`importer.input.reader.RowReader`), whatever the format.

    `line` is where a user finds it, `error` why it is unreadable (None: it was read).
    A typed reader (JSON, JSONL, Parquet) has parsed the item, so it knows the item's
    compact JSON `size` and, for a value that does not fit its column, the `column` and
    `value` a reject names; a CSV row has neither (`size` 0: measure it from the fields).
    """

    @property
    def line(self) -> int: ...
    @property
    def fields(self) -> list[str]: ...
    @property
    def error(self) -> str | None: ...
    @property
    def size(self) -> int: ...
    @property
    def column(self) -> str: ...
    @property
    def value(self) -> str: ...


class BatchLimitError(ValueError):
    """Batch limits that can never produce a valid batch."""


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def item_json_size(header: Sequence[str], fields: Sequence[str]) -> int:
    """UTF-8 length of the row as ItemReader hands it on: `{"col":"value",...}`."""
    return len(_compact(dict(zip(header, fields, strict=False))).encode("utf-8"))


def child_input_json(items: list[dict[str, str]], batch_input: dict[str, Any]) -> str:
    """The exact child input a batch becomes (what the byte limit is measured on)."""
    return _compact({"Items": items, "BatchInput": batch_input})


def check_limits(
    max_items: int | None,
    max_bytes: int | None,
    *,
    header: Sequence[str] | None = None,
    batch_input: dict[str, Any] | None = None,
) -> None:
    """Refuse limits that Step Functions refuses, or that cannot hold one row.

    The seed's ASL sets `MaxInputBytesPerBatch: 10` while its text says "10
    rows per batch": ten bytes cannot hold even an empty child input, so that
    setting is refused with the fix spelled out rather than failing every row.
    """
    if max_items is None and max_bytes is None:
        raise BatchLimitError("set MaxItemsPerBatch, MaxInputBytesPerBatch, or both")
    if max_items is not None and (isinstance(max_items, bool) or max_items < 1):
        raise BatchLimitError(f"MaxItemsPerBatch must be at least 1, got {max_items}")
    if max_bytes is None:
        return
    if isinstance(max_bytes, bool) or max_bytes > AWS_MAX_INPUT_BYTES:
        raise BatchLimitError(
            f"MaxInputBytesPerBatch {max_bytes} is over Step Functions' limit of "
            f"{AWS_MAX_INPUT_BYTES} bytes (256 KiB) for a child execution's input"
        )
    empty_row = dict.fromkeys(header, "") if header else {}
    smallest = len(child_input_json([empty_row], batch_input or {}).encode("utf-8"))
    if max_bytes < smallest:
        raise BatchLimitError(
            f"MaxInputBytesPerBatch {max_bytes} cannot hold a single row: the child input "
            f'{{"Items":[...],"BatchInput":{{...}}}} with one empty row is already '
            f"{smallest} bytes. (The seed's 'MaxInputBytesPerBatch: 10' means 10 rows per "
            f"batch: use MaxItemsPerBatch / --batch-items 10.)"
        )


@dataclass(slots=True)
class Batch:
    """One child execution's worth of rows, numbered from 0 in file order."""

    index: int
    #: (line, fields) in file order: a list, or the native reader's `RowBlock`
    #: (the same sequence, its fields kept as bytes until asked for)
    rows: Sequence[tuple[int, list[str]]] = field(default_factory=list)
    #: UTF-8 size of this batch's child input JSON
    input_bytes: int = 0
    #: rows refused while this batch was open (unreadable, or too big to batch)
    rejects: list[Reject] = field(default_factory=list)


class Batcher:
    """Cuts a stream of sized rows into batches; oversized rows become rejects."""

    def __init__(
        self,
        *,
        max_items: int | None,
        max_bytes: int | None,
        batch_input: dict[str, Any],
        header: Sequence[str] = (),
    ) -> None:
        check_limits(max_items, max_bytes, header=header, batch_input=batch_input)
        self.max_items = max_items
        self.max_bytes = max_bytes if max_bytes is not None else AWS_MAX_INPUT_BYTES
        self._base = _ENVELOPE + len(_compact(batch_input).encode("utf-8"))
        self._next_index = 0
        self._open()

    def _open(self) -> None:
        """A new current batch, its row list kept as a list (a Batch's rows may be a block)."""
        self._rows: list[tuple[int, list[str]]] = []
        self._current = Batch(index=self._next_index, rows=self._rows, input_bytes=self._base)

    def _close(self) -> Batch:
        done = self._current
        self._next_index += 1
        self._open()
        return done

    @property
    def limits(self) -> tuple[int, int, int]:
        """(max items or 0 for none, max bytes, bytes of an empty child input)."""
        return self.max_items or 0, self.max_bytes, self._base

    def oversize(self, line: int, fields: Sequence[str], size: int) -> Reject:
        """The reject of a row of `size` bytes that no batch can hold."""
        return Reject(
            line,
            "",
            "",
            f"row is {size} bytes as JSON; with BatchInput the child input would be "
            f"{self._base + size} bytes, over MaxInputBytesPerBatch {self.max_bytes}",
            tuple(fields),
        )

    def add(self, line: int, fields: list[str], size: int) -> Batch | None:
        """Add one row of `size` JSON bytes; return a batch when one closes."""
        cur = self._current
        if self._base + size > self.max_bytes:
            cur.rejects.append(self.oversize(line, fields, size))
            return None
        closed = None
        if cur.rows and (
            (self.max_items is not None and len(cur.rows) >= self.max_items)
            or cur.input_bytes + 1 + size > self.max_bytes
        ):
            closed = self._close()
            cur = self._current
        cur.input_bytes += size + (1 if cur.rows else 0)
        self._rows.append((line, fields))
        return closed

    def adopt(
        self,
        rows: Sequence[tuple[int, list[str]]],
        input_bytes: int,
        problems: Sequence[tuple[int, list[str], str | None, int]],
    ) -> Batch:
        """A batch cut by the native reader (`read_batch`), numbered and worded as `add` would.

        `problems` are (line, fields, error, size): a record the reader refused
        (`error` set), else a row of `size` bytes too big for any batch.
        """
        rejects = [
            Reject(line, "", "", error, tuple(fields))
            if error is not None
            else self.oversize(line, fields, size)
            for line, fields, error, size in problems
        ]
        batch = Batch(index=self._next_index, rows=rows, input_bytes=input_bytes, rejects=rejects)
        self._next_index += 1
        self._open()
        return batch

    def adopt_cut(self, got: tuple[Any, int, list[Any]]) -> Batch:
        """A batch cut by the native `BatchCutter` over typed rows (JSONL, Parquet).

        Its problems are rejects made already, or (line, fields, error, size) of a
        row too big for any batch, worded here as `add` words it.
        """
        rows, nbytes, problems = got
        batch = self.adopt(rows, nbytes, ())
        batch.rejects.extend(
            p if type(p) is Reject else self.oversize(p[0], p[1], p[3]) for p in problems
        )
        return batch

    def state(self) -> dict[str, int]:
        """Where the cut stands: the open batch's number, rows, bytes and rejects.

        What a manifest's resume records at the end of each object, so that a
        resumed run can skip an object whose batches are all finished and go on
        cutting the next object exactly where the first run did (`restore`).
        """
        cur = self._current
        return {
            "batch": self._next_index,
            "rows": len(cur.rows),
            "bytes": cur.input_bytes,
            "rejects": len(cur.rejects),
        }

    def restore(self, state: dict[str, int]) -> None:
        """Stand where `state` (from `state`) says, without the rows that were read there.

        The open batch holds placeholders for the rows and rejects it had: it is a
        finished batch (the caller checks), so it is cut where it was and skipped.
        """
        self._next_index = int(state["batch"])
        self._open()
        self._rows.extend((-1, []) for _ in range(int(state["rows"])))
        self._current.input_bytes = int(state["bytes"])
        self._current.rejects.extend(
            Reject(-1, "", "", "read before the resume", ()) for _ in range(int(state["rejects"]))
        )

    def reject(self, reject: Reject) -> None:
        """Attach a row refused before batching to the batch now open."""
        self._current.rejects.append(reject)

    def flush(self) -> Batch | None:
        """The last, partly filled batch (None when nothing is pending)."""
        if self._current.rows or self._current.rejects:
            return self._close()
        return None

    def cut(
        self,
        rows: Iterable[Row],
        header: Sequence[str],
        size_of: Callable[[Sequence[str], Sequence[str]], int] = item_json_size,
    ) -> Iterator[Batch]:
        """All the batches of `rows`, the last one flushed: the one row-by-row loop.

        An unreadable row (`error` set) is a reject of the batch then open, naming the
        column and value of a typed reader's misfit.  A typed reader's row knows its JSON
        size (`size`); otherwise `size_of(header, fields)` gives it.  Readers that cut their own
        batches (`RowReader.read_batches`) do not come here.
        """
        for row in rows:
            if row.error is not None:
                self.reject(Reject(row.line, row.column, row.value, row.error, tuple(row.fields)))
                continue
            size = row.size or size_of(header, row.fields)
            closed = self.add(row.line, row.fields, size)
            if closed is not None:
                yield closed
        last = self.flush()
        if last is not None:
            yield last


class RowsByLine(Mapping[int, Sequence[str]]):
    """A batch's CSV fields by line, for the rows that need them (reject lines).

    Why not `dict(batch.rows)`: that makes every row's fields Python objects,
    and the native reader's `RowBlock` keeps them as bytes precisely so that a
    batch whose rows are all written never builds them.  A block finds a line
    by binary search (its lines rise); a plain list is indexed on first use.
    """

    __slots__ = ("_block", "_index", "_rows")

    def __init__(self, rows: Sequence[tuple[int, Sequence[str]]]) -> None:
        self._rows = rows
        self._block = rows if isinstance(rows, RowBlock) else None
        self._index: dict[int, Sequence[str]] | None = None

    def __getitem__(self, line: int) -> Sequence[str]:
        block = self._block
        if block is not None:
            i = block.index_of(line) if type(line) is int else -1
            if i < 0:
                raise KeyError(line)
            return block[i][1]
        if self._index is None:
            self._index = dict(self._rows)
        return self._index[line]

    def __iter__(self) -> Iterator[int]:
        return (line for line, _fields in self._rows)

    def __len__(self) -> int:
        return len(self._rows)
