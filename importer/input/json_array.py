"""ItemReader InputType JSON: a file holding one JSON array, each element one item.

(AWS Step Functions developer guide, "ItemReader (Map)": a JSON file's top-level
array is the list of items.)  The array is read element by element from
fixed-size blocks of the byte stream (`json.JSONDecoder.raw_decode` at the
block's cursor), so the file is never held whole: memory is one block plus the
element being read.  An element's position is its 0-based index in the array.

A file whose top level is not an array (an object, say -- the most common
mistake) or whose JSON breaks off stops the run with one line naming the index
and byte offset; an element that is not an object is a reject of that element.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator, Sequence
from typing import IO, Any

from importer.input.items import ItemMapper, ItemRow, NumberCounter, refuse_constant, text_size
from importer.input.reader import RowReader
from importer.input.source import CHUNK_BYTES, SourceError

__all__ = ["JsonArrayReader"]

#: an element this long without parsing is broken (an item must fit a 256 KiB child input)
MAX_ELEMENT_CHARS = 16 << 20
_WS = " \t\n\r"


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

    def _read(self, decoder: codecs.IncrementalDecoder) -> tuple[str, bool]:
        try:
            data = self._stream.read(self._chunk)
        except (OSError, EOFError) as exc:
            raise SourceError(f"cannot read source: {exc}") from None
        except Exception as exc:  # zstd/gzip raise their own error types
            raise SourceError(f"cannot decompress source: {exc}") from None
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
        decoder = codecs.getincrementaldecoder("utf-8")()
        counter = NumberCounter()
        scan = json.JSONDecoder(parse_float=counter, parse_constant=refuse_constant).raw_decode
        buf, eof = "", False
        pos = 0  # cursor in buf
        consumed = 0  # chars dropped from the front of buf (for offsets)

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

        first = skip_ws()
        if first == "\ufeff":
            pos += 1
            first = skip_ws()
        if first != "[":
            what = {"{": "a JSON object", "": "empty"}.get(first, f"not JSON (starts {first!r})")
            raise SourceError(
                f"{self._name}: is {what}, not a JSON array: ItemReader InputType JSON reads "
                "a file holding one array of items (JSON Lines: one object per line, "
                "use a .jsonl name or --input-type JSONL)"
            )
        pos += 1
        index = 0
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
                    if not eof and len(buf) - pos < MAX_ELEMENT_CHARS and fill():
                        continue
                    msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                    at = consumed + (exc.pos if isinstance(exc, json.JSONDecodeError) else pos)
                    raise SourceError(
                        f"{self._name}: invalid JSON at array index {index} "
                        f"(character {at + 1}): {msg}"
                    ) from None
                # a number at the very end of the block may go on in the next one
                if end == len(buf) and not eof and fill():
                    continue
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
