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
from typing import IO

from importer.input.items import ItemDecoder, ItemMapper, ItemRow
from importer.input.source import SourceError

__all__ = ["JsonlReader"]


class JsonlReader:
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

    def __iter__(self) -> Iterator[ItemRow]:
        row_of = self._mapper.row
        decode = ItemDecoder()
        line = 0
        for raw in _lines(self._stream):
            line += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield ItemRow(line, [], f"invalid UTF-8 at byte {exc.start + 1} of line {line}")
                continue
            nbytes = len(raw)
            if line == 1 and text.startswith("\ufeff"):
                text = text[1:]
                nbytes = -1
            if not text.strip():
                continue
            try:
                item, size = decode(text, nbytes)
            except (ValueError, RecursionError) as exc:
                msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                shown = text.rstrip("\r\n")
                shown = shown if len(shown) <= 200 else shown[:197] + "..."
                yield ItemRow(line, [], f"not valid JSON: {msg}", 0, "", shown)
                continue
            if self.first_keys is None and type(item) is dict:
                self.first_keys = list(item)
            yield row_of(line, item, size)


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
