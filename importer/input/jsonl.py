"""ItemReader InputType JSONL: one JSON object per line, each line one item.

(AWS Step Functions developer guide, "ItemReader (Map)": a JSON Lines file's
every line is an item; gzip/zstd objects are read as for CSV, by extension.)
The file is read line by line from the byte stream, never held whole, so a
10 GB file takes the memory of its longest line.  A line's position is its
physical line number (1-based); blank lines are skipped, as ItemReader skips
them in CSV.  A line that is not valid JSON, or not an object, is a reject of
that line, not the end of the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import IO, Any

from importer.input.batching import Batch, Batcher
from importer.input.items import LOOSE, ItemDecoder, ItemMapper, ItemRow, Num, refuse_constant
from importer.input.reader import RowReader
from importer.input.source import SourceError
from importer.records import Reject

#: lines parsed in one call
BLOCK_LINES = 512

__all__ = ["JsonlReader"]


class JsonlReader(RowReader):
    """Rows of a JSONL stream for the spec's columns (`header`, typed by `kinds`)."""

    input_type = "JSONL"
    #: what a row's position is called in messages
    position = "line"

    def __init__(self, stream: IO[bytes], header: Sequence[str], kinds: Sequence[str]) -> None:
        self._stream = stream
        self._mapper = ItemMapper(header, kinds)
        self.header = self._mapper.header
        self.padded = 0
        self.truncated = 0
        #: keys of the first object the spec does not read (the summary lists them)
        self.first_keys: list[str] | None = None

    def _items(self) -> Iterator[tuple[int, Any, int] | ItemRow]:
        """(line, item, size) of every non-blank line, or the line's reject.

        Lines are parsed a block at a time: `BLOCK_LINES` lines joined into one
        JSON array make one call into the C parser, and when the block holds no
        whitespace between tokens each item's size is its line's length.  A block
        with a line that is not one JSON value is parsed again line by line,
        which finds that line.
        """
        decode = ItemDecoder()
        parse_block = json.JSONDecoder(parse_float=Num, parse_constant=refuse_constant).decode
        pending: list[tuple[int, bytes]] = []
        line = 0

        def per_line(block: list[tuple[int, bytes]]) -> Iterator[tuple[int, Any, int] | ItemRow]:
            for n, raw in block:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield ItemRow(n, [], f"invalid UTF-8 at byte {exc.start + 1} of line {n}")
                    continue
                try:
                    item, size = decode(text, len(raw))
                except (ValueError, RecursionError) as exc:
                    msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                    shown = text if len(text) <= 200 else text[:197] + "..."
                    yield ItemRow(n, [], f"not valid JSON: {msg}", 0, "", shown)
                    continue
                yield n, item, size

        def flush(block: list[tuple[int, bytes]]) -> Iterator[tuple[int, Any, int] | ItemRow]:
            joined = b"[" + b",".join([raw for _, raw in block]) + b"]"
            try:
                text = joined.decode("utf-8")
                items = parse_block(text)
            except (ValueError, RecursionError):
                items = None
            if items is None or len(items) != len(block):
                yield from per_line(block)
                return
            if LOOSE.search(text) is None:  # every line compact: its length is its size
                for (n, raw), item in zip(block, items, strict=True):
                    yield n, item, len(raw)
                return
            for (n, raw), item in zip(block, items, strict=True):
                if LOOSE.search(raw.decode("utf-8")) is None:
                    yield n, item, len(raw)
                else:
                    yield from per_line([(n, raw)])

        for raw in _lines(self._stream):
            line += 1
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if line == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            pending.append((line, raw))
            if len(pending) >= BLOCK_LINES:
                yield from flush(pending)
                pending = []
        if pending:
            yield from flush(pending)

    def __iter__(self) -> Iterator[ItemRow]:
        row_of = self._mapper.row
        for got in self._items():
            if type(got) is ItemRow:
                yield got
                continue
            line, item, size = got  # type: ignore[misc]
            if self.first_keys is None and type(item) is dict:
                self.first_keys = list(item)
            yield row_of(line, item, size)

    def read_batches(self, batcher: Batcher) -> Iterator[Batch]:
        """The batches `batcher` cuts from the lines, without a row object per line."""
        fields_of, row_of = self._mapper.fields, self._mapper.row
        add, reject = batcher.add, batcher.reject
        for got in self._items():
            if type(got) is not ItemRow:
                line, item, size = got  # type: ignore[misc]
                if self.first_keys is None and type(item) is dict:
                    self.first_keys = list(item)
                fields = fields_of(item)
                if fields is not None:
                    if (closed := add(line, fields, size)) is not None:
                        yield closed
                    continue
                got = row_of(line, item, size)
            r = got  # a refused line
            reject(Reject(r.line, r.column, r.value, r.error or "", tuple(r.fields)))
        last = batcher.flush()
        if last is not None:
            yield last
        if self.first_keys is None:
            self.first_keys = []


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The stream's lines; a read or decompression error is the source's, in one line."""
    it = iter(stream)
    while True:
        try:
            raw = next(it)
        except StopIteration:
            return
        except (OSError, EOFError) as exc:
            raise SourceError(f"cannot read source: {exc}") from None
        except Exception as exc:  # zstd/gzip raise their own error types
            raise SourceError(f"cannot decompress source: {exc}") from None
        yield raw
