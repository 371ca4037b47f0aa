"""ItemReader InputType JSON: a file holding one JSON array, each element one item.

(AWS Step Functions developer guide, "ItemReader (Map)": a JSON file's top-level
array is the list of items.)  The array is read element by element from
fixed-size blocks of the byte stream, so the file is never held whole: memory is
one block plus the element being read (an element may span blocks).  An
element's position is its 0-based index in the array.

A file whose top level is not an array (an object, say -- the most common
mistake) or whose JSON breaks off stops the run with one line naming the index
and byte offset; an element that is not an object is a reject of that element.

Two paths give the same batches: `read_batches` finds the elements in C
(`_native.json_array_rows`) and takes the compact objects a JSONL line would be
taken for there, handing every other element, and everything after a place where
the array is not well formed, to the Python reader (`items`), which is the
definition (`read_batches_python`; tests hold the two equal).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator, Sequence
from typing import IO, Any

from importer import _native
from importer.input.batching import Batch, Batcher
from importer.input.items import (
    ItemMapper,
    ItemRow,
    Num,
    NumberCounter,
    refuse_constant,
    text_size,
)
from importer.input.jsonl import _native_plan
from importer.input.reader import RowReader
from importer.input.source import CHUNK_BYTES, SourceError
from importer.records import Reject

__all__ = ["JsonArrayReader"]

#: an element this long without parsing is broken (an item must fit a 256 KiB child input)
MAX_ELEMENT_CHARS = 16 << 20
_WS = " \t\n\r"
#: what may follow a number's first characters and still be the same number
_NUMBER_TAIL = frozenset("0123456789.eE+-")
_WS_BYTES = b" \t\n\r"
_BOM = b"\xef\xbb\xbf"
#: where the Python reader takes over: at the file's start, at an element, after `]`
_START, _ELEMENT, _END = "start", "element", "end"
#: `_native.json_array_rows`' statuses
_MORE, _CLOSED, _PYTHON, _LIMIT = 0, 1, 2, 3


class JsonArrayReader(RowReader):
    """Rows of a JSON-array stream for the spec's columns (`header`, typed by `kinds`)."""

    input_type = "JSON"
    position = "index"

    def __init__(
        self,
        stream: IO[bytes],
        header: Sequence[str],
        kinds: Sequence[str],
        *,
        name: str = "source",
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self._stream = stream
        self._name = name
        self._chunk = chunk_bytes
        self._mapper = ItemMapper(header, kinds)
        self.header = self._mapper.header
        self.first_keys: list[str] | None = None
        #: bytes already read from the stream that the Python reader reads first
        self._head = b""
        self._counter = NumberCounter()
        self._scan = json.JSONDecoder(
            parse_float=self._counter, parse_constant=refuse_constant
        ).raw_decode

    def _read_bytes(self) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        try:
            return self._stream.read(self._chunk)
        except (OSError, EOFError) as exc:
            raise SourceError(f"cannot read source: {exc}") from None
        except Exception as exc:  # zstd/gzip raise their own error types
            raise SourceError(f"cannot decompress source: {exc}") from None

    def _read(self, decoder: codecs.IncrementalDecoder) -> tuple[str, bool]:
        data = self._read_bytes()
        try:
            return decoder.decode(data, final=not data), not data
        except UnicodeDecodeError as exc:
            raise SourceError(f"{self._name}: invalid UTF-8 ({exc.reason})") from None

    def __iter__(self) -> Iterator[ItemRow]:
        row_of = self._mapper.row
        for index, item, size in self.items():
            if self.first_keys is None and type(item) is dict:
                self.first_keys = list(item)
            yield row_of(index, item, size)

    def items(self) -> Iterator[tuple[int, Any, int]]:
        """(index, element, compact size) of every element of the array, in order."""
        return self._items_from(_START, 0, 0)

    def _items_from(self, state: str, index: int, consumed: int) -> Iterator[tuple[int, Any, int]]:
        """The elements from `state` on: the file's start, the element `index` (whitespace
        before it allowed), or after the array's `]`.  `consumed`: characters before the
        bytes still to read (`_head`, then the stream), for the offsets in messages."""
        decoder = codecs.getincrementaldecoder("utf-8")()
        counter = self._counter
        scan = self._scan
        buf, eof = "", False
        pos = 0  # cursor in buf

        def fill() -> bool:
            nonlocal buf, pos, consumed, eof
            if eof:
                return False
            if pos > len(buf) // 2:
                consumed += pos
                buf, pos = buf[pos:], 0
            text, eof = self._read(decoder)
            buf += text
            return bool(text) or not eof

        def skip_ws() -> str:
            nonlocal pos
            while True:
                n = len(buf)
                while pos < n and buf[pos] in _WS:
                    pos += 1
                if pos < n:
                    return buf[pos]
                if not fill():
                    return ""

        expect_item = state == _ELEMENT
        if state == _START:
            first = skip_ws()
            if first == "\ufeff":
                pos += 1
                first = skip_ws()
            if first != "[":
                what = {"{": "a JSON object", "": "empty"}.get(
                    first, f"not JSON (starts {first!r})"
                )
                raise SourceError(
                    f"{self._name}: is {what}, not a JSON array: ItemReader InputType JSON reads "
                    "a file holding one array of items (JSON Lines: one object per line, "
                    "use a .jsonl name or --input-type JSONL)"
                )
            pos += 1
            expect_item = True
            if skip_ws() == "]":
                pos += 1
                expect_item = False
        while expect_item:
            skip_ws()
            while True:
                counter.n = 0
                try:
                    item, end = scan(buf, pos)
                except (ValueError, RecursionError) as exc:
                    # where it broke, from the element's start: `fill` may move the buffer
                    off = (exc.pos if isinstance(exc, json.JSONDecodeError) else pos) - pos
                    if not eof and len(buf) - pos < MAX_ELEMENT_CHARS and fill():
                        continue
                    msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                    at = consumed + pos + off
                    raise SourceError(
                        f"{self._name}: invalid JSON at array index {index} "
                        f"(character {at + 1}): {msg}"
                    ) from None
                # a number at the very end of the block may go on in the next one (`13.`
                # cut from `13.5` parses as 13 followed by `.`): read on, parse again
                if not eof and (type(item) is int or type(item) is Num):
                    tail, n = end, len(buf)
                    while tail < n and buf[tail] in _NUMBER_TAIL:
                        tail += 1
                    if tail == n:
                        length = end - pos
                        if fill():
                            continue
                        end = pos + length  # `fill` may have moved the buffer
                break
            start, pos = pos, end
            yield index, item, text_size(buf[start:end], item, counter.n)
            index += 1
            c = skip_ws()
            if c == ",":
                pos += 1
                continue
            if c == "]":
                pos += 1
                break
            got = "the end of the file" if c == "" else repr(c)
            raise SourceError(
                f"{self._name}: invalid JSON after array index {index - 1} "
                f"(character {consumed + pos + 1}): expected ',' or ']', got {got}"
            )
        if skip_ws() != "":
            raise SourceError(
                f"{self._name}: data after the end of the JSON array "
                f"(character {consumed + pos + 1})"
            )

    def read_batches_python(self, batcher: Batcher) -> Iterator[Batch]:
        """The batches `batcher` cuts from the elements, read in Python (the definition)."""
        fields_of, row_of = self._mapper.fields, self._mapper.row
        add, reject = batcher.add, batcher.reject
        for index, item, size in self.items():
            if self.first_keys is None and type(item) is dict:
                self.first_keys = list(item)
            fields = fields_of(item)
            if fields is not None:
                if (closed := add(index, fields, size)) is not None:
                    yield closed
                continue
            r = row_of(index, item, size)
            reject(Reject(r.line, r.column, r.value, r.error or "", tuple(r.fields)))
        last = batcher.flush()
        if last is not None:
            yield last
        if self.first_keys is None:
            self.first_keys = []

    def read_batches(self, batcher: Batcher) -> Iterator[Batch]:
        """The batches `batcher` cuts from the elements: found, parsed, mapped and cut in C.

        Blocks of `chunk_bytes` are read; the bytes from the element not yet read
        on are kept (an element may span blocks).  An element C does not take is
        read here as `items` reads it; where the array is not well formed (or an
        element is cut off, or longer than `MAX_ELEMENT_CHARS`), the rest of the
        file is `items`' from that element on, which says what is wrong.
        """
        plan = _native_plan(self.header, self._mapper.kinds)
        if plan is None or not hasattr(_native, "json_array_rows"):
            yield from self.read_batches_python(batcher)
            return
        names, codes = plan
        rows_of = _native.json_array_rows
        cutter = _native.BatchCutter(len(names), *batcher.limits)
        buf, pos, eof, consumed = b"", 0, False, 0  # consumed: characters before buf

        def more() -> bool:
            """Append a block to buf (bytes before pos dropped); False at the end."""
            nonlocal buf, pos, eof, consumed
            if eof:
                return False
            data = self._read_bytes()
            if not data:
                eof = True
                return False
            if pos:
                consumed += len(buf[:pos].decode("utf-8"))  # read already: valid UTF-8
                buf, pos = buf[pos:], 0
            buf += data
            return True

        # the opening: whitespace, a BOM, `[`, and `]` if the array is empty
        state, index = _START, 0
        while True:
            stripped = buf.lstrip(_WS_BYTES)
            if stripped.startswith(_BOM):
                stripped = stripped[3:].lstrip(_WS_BYTES)
            if stripped[:1] == b"[":
                after = stripped[1:].lstrip(_WS_BYTES)
                if after or eof:
                    if after[:1] != b"]" and after:
                        state, pos = _ELEMENT, len(buf) - len(after)
                    break
            elif stripped or eof:
                break  # not an array: Python says what it is
            if not more():
                continue

        if state == _ELEMENT:
            while True:
                limit, alone = (1, True) if self.first_keys is None else (-1, False)
                block, size_bytes, others, count, at, status = rows_of(
                    buf, pos, index, names, codes, limit, alone
                )
                sizes = memoryview(size_bytes).cast("q")
                start = 0
                for row, n, a, e in others:
                    for got in cutter.take(block, sizes, start, row):
                        yield batcher.adopt_cut(got)
                    start = row
                    closed = self._python_element(cutter, n, buf[a:e])
                    if closed is False:  # Python reads on from this element
                        status, at, count = _PYTHON, a, n - index
                        break
                    if closed is not None:
                        yield batcher.adopt_cut(closed)
                else:
                    for got in cutter.take(block, sizes, start, len(block)):
                        yield batcher.adopt_cut(got)
                index += count
                pos = at
                if status == _CLOSED:
                    state = _END
                    break
                if status == _PYTHON:
                    break
                if status == _MORE and (len(buf) - pos > MAX_ELEMENT_CHARS or not more()):
                    break  # Python says what is wrong with the element cut off there

        # the rest of the file through the Python reader: from the start (not an array),
        # an element it must judge, or the array's end (only whitespace may follow)
        self._head = buf[pos:] if state != _START else buf
        chars = consumed + (len(buf[:pos].decode("utf-8")) if state != _START else 0)
        for n, item, size in self._items_from(state, index, chars):
            if (closed := self._take_item(cutter, n, item, size)) is not None:
                yield batcher.adopt_cut(closed)
        if (last := cutter.flush()) is not None:
            yield batcher.adopt_cut(last)
        if self.first_keys is None:
            self.first_keys = []

    def _python_element(self, cutter: Any, index: int, raw: bytes) -> Any:
        """One element C left to Python, into `cutter`: the batch it closed, None, or False
        when it is not one JSON value by itself (the Python reader then reads from it)."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return False
        self._counter.n = 0
        try:
            item, end = self._scan(text, 0)
        except (ValueError, RecursionError):
            return False
        if end != len(text):
            return False
        return self._take_item(cutter, index, item, text_size(text, item, self._counter.n))

    def _take_item(self, cutter: Any, index: int, item: Any, size: int) -> Any:
        """One parsed element into `cutter`, as `read_batches_python` adds it."""
        if self.first_keys is None and type(item) is dict:
            self.first_keys = list(item)
        fields = self._mapper.fields(item)
        if fields is not None:
            return cutter.take_row(index, fields, size)
        r = self._mapper.row(index, item, size)
        cutter.problem(Reject(r.line, r.column, r.value, r.error or "", tuple(r.fields)))
        return None
