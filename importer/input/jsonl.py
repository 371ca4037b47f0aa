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

from importer import _native
from importer.input.batching import Batch, Batcher
from importer.input.items import LOOSE, ItemDecoder, ItemMapper, ItemRow, Num, refuse_constant
from importer.input.reader import RowReader
from importer.input.source import SourceError
from importer.records import Reject

#: lines parsed in one call
BLOCK_LINES = 512
#: bytes read at a time by the native path (whole lines go to C)
CHUNK_BYTES = 1 << 20
BOM = b"\xef\xbb\xbf"

__all__ = ["JsonlReader"]


class JsonlReader(RowReader):
    """Rows of a JSONL stream for the spec's columns (`header`, typed by `kinds`)."""

    input_type = "JSONL"
    #: what a row's position is called in messages
    position = "line"

    def __init__(
        self,
        stream: IO[bytes],
        header: Sequence[str],
        kinds: Sequence[str],
        *,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self._stream = stream
        self._chunk_bytes = chunk_bytes
        self._mapper = ItemMapper(header, kinds)
        self._decode = ItemDecoder()
        self.header = self._mapper.header
        #: keys of the first object the spec does not read (the summary lists them)
        self.first_keys: list[str] | None = None

    def _per_line(self, block: list[tuple[int, bytes]]) -> Iterator[tuple[int, Any, int] | ItemRow]:
        """(line, item, size) of each line, parsed alone, or the line's reject."""
        decode = self._decode
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

    def _items(self) -> Iterator[tuple[int, Any, int] | ItemRow]:
        """(line, item, size) of every non-blank line, or the line's reject.

        Lines are parsed a block at a time: `BLOCK_LINES` lines joined into one
        JSON array make one call into the C parser, and when the block holds no
        whitespace between tokens each item's size is its line's length (without
        the whitespace around it, as a line parsed alone counts it).  A block
        with a line that is not one JSON value is parsed again line by line,
        which finds that line.
        """
        parse_block = json.JSONDecoder(parse_float=Num, parse_constant=refuse_constant).decode
        per_line = self._per_line
        pending: list[tuple[int, bytes]] = []
        line = 0

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
                    yield n, item, len(raw.strip())
                return
            for (n, raw), item in zip(block, items, strict=True):
                if LOOSE.search(raw.decode("utf-8")) is None:
                    yield n, item, len(raw.strip())
                else:
                    yield from per_line([(n, raw)])

        for raw in _lines(self._stream):
            line += 1
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if line == 1 and raw.startswith(BOM):
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
            if isinstance(got, ItemRow):
                yield got
                continue
            line, item, size = got
            if self.first_keys is None and type(item) is dict:
                self.first_keys = list(item)
            yield row_of(line, item, size)

    def read_batches(self, batcher: Batcher) -> Iterator[Batch]:
        """The batches `batcher` cuts from the lines: parsed, mapped and cut in C.

        The native path (`_native.jsonl_rows`, `_native.BatchCutter`) takes the
        lines that are compact objects of strings, numbers, booleans and nulls;
        every other line is parsed here, line by line, by the same code as
        `read_batches_python`, which stays the definition (tests hold the two equal).
        """
        plan = _native_plan(self.header, self._mapper.kinds)
        if plan is None:
            yield from self.read_batches_python(batcher)
            return
        names, codes = plan
        cutter = _native.BatchCutter(len(names), *batcher.limits)

        line = 0
        for chunk in _chunks(self._stream, self._chunk_bytes):
            if self.first_keys is None:  # the summary lists the first object's keys
                chunk, line, closed = self._until_first_object(chunk, line, cutter)
                for got in closed:
                    yield batcher.adopt_cut(got)
                if not chunk:
                    continue
            block, size_bytes, others, lines = _native.jsonl_rows(chunk, line, names, codes)
            sizes = memoryview(size_bytes).cast("q")
            start = 0
            for index, n, raw in others:
                for got in cutter.take(block, sizes, start, index):
                    yield batcher.adopt_cut(got)
                start = index
                if (got := self._python_line(cutter, n, raw)) is not None:
                    yield batcher.adopt_cut(got)
            for got in cutter.take(block, sizes, start, len(block)):
                yield batcher.adopt_cut(got)
            line += lines
        if (last := cutter.flush()) is not None:
            yield batcher.adopt_cut(last)
        if self.first_keys is None:
            self.first_keys = []

    def _python_line(self, cutter: Any, n: int, raw: bytes) -> Any:
        """One line the C path left to Python, into `cutter`: the batch it closed, or None."""
        for got in self._per_line([(n, raw)]):
            if not isinstance(got, ItemRow):
                line, item, size = got
                if self.first_keys is None and type(item) is dict:
                    self.first_keys = list(item)
                fields = self._mapper.fields(item)
                if fields is not None:
                    return cutter.take_row(line, fields, size)
                got = self._mapper.row(line, item, size)
            r = got
            cutter.problem(Reject(r.line, r.column, r.value, r.error or "", tuple(r.fields)))
        return None

    def _until_first_object(
        self, chunk: bytes, line: int, cutter: Any
    ) -> tuple[bytes, int, list[Any]]:
        """Lines of `chunk` read in Python until one is an object: (the rest, its line, closed)."""
        closed: list[Any] = []
        while chunk and self.first_keys is None:
            cut = chunk.find(b"\n")
            raw, chunk = (chunk, b"") if cut < 0 else (chunk[:cut], chunk[cut + 1 :])
            line += 1
            if line == 1 and raw.startswith(BOM):
                raw = raw[3:]
            if raw.strip() and (got := self._python_line(cutter, line, raw)) is not None:
                closed.append(got)
        return chunk, line, closed

    def read_batches_python(self, batcher: Batcher) -> Iterator[Batch]:
        """The batches `batcher` cuts from the lines, parsed and cut in Python (the definition)."""
        fields_of, row_of = self._mapper.fields, self._mapper.row
        add, reject = batcher.add, batcher.reject
        for got in self._items():
            if not isinstance(got, ItemRow):
                line, item, size = got
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


def _native_plan(
    header: Sequence[str], kinds: Sequence[str]
) -> tuple[list[bytes], list[int]] | None:
    """The spec's columns as `_native.jsonl_rows` takes them, or None (Python reads the file).

    None when the native core lacks the entry point (an old build), the spec
    reads no column, or a name repeats or is not encodable.
    """
    known = getattr(_native, "JSONL_KINDS", None)
    if known is None or not header or len(set(header)) != len(header):
        return None
    try:
        names = [h.encode("utf-8") for h in header]
    except UnicodeEncodeError:
        return None
    if any(k not in known for k in kinds):
        return None
    return names, [known[k] for k in kinds]


def _chunks(stream: IO[bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The stream in pieces of whole lines (the last may lack its newline); BOM kept."""
    tail = b""
    while True:
        try:
            data = stream.read(size)
        except (OSError, EOFError) as exc:
            raise SourceError(f"cannot read source: {exc}") from None
        except Exception as exc:  # zstd/gzip raise their own error types
            raise SourceError(f"cannot decompress source: {exc}") from None
        if not data:
            if tail:
                yield tail
            return
        cut = data.rfind(b"\n")
        if cut < 0:
            tail += data
            continue
        yield tail + data[: cut + 1]
        tail = data[cut + 1 :]


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
