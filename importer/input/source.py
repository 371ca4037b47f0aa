"""Where rows come from: byte streams (local or S3, maybe compressed) and the
ItemReader CSV rules that turn those bytes into rows.

Everything streams: a 10 GB object is read in fixed-size chunks, never held
whole.  Line numbers are physical lines of the file (the header is line 1), so
a reject points at the line a user sees in an editor.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from importer.input.options import CsvOptions

__all__ = [
    "CHUNK_BYTES",
    "CsvReader",
    "ParsedRow",
    "SourceError",
    "SourceStream",
    "open_source",
    "read_header",
]

CHUNK_BYTES = 1 << 20
_BOM = "\ufeff"


class SourceError(Exception):
    """The source cannot be read at all (missing, forbidden, corrupt)."""


@dataclass(slots=True)
class SourceStream:
    """A readable byte stream plus what progress reporting needs to know."""

    raw: IO[bytes]
    name: str
    #: compressed size on disk/S3, for an ETA; None when unknown
    total_bytes: int | None
    _counted: IO[bytes] | None = None

    @property
    def bytes_read(self) -> int:
        counter = self._counted
        return counter.count if isinstance(counter, _CountingReader) else 0

    def close(self) -> None:
        try:
            self.raw.close()
        except Exception:  # noqa: BLE001 - closing must never mask the real error
            pass


class _CountingReader(io.RawIOBase):
    """Counts compressed bytes as they are pulled, for progress and ETA."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            super().close()


def _split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise SourceError(f"{uri}: expected s3://bucket/key")
    return bucket, key


def _open_s3(uri: str, s3_client: Any) -> tuple[Any, int | None]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _split_s3(uri)
    if s3_client is None:
        import boto3

        s3_client = boto3.client("s3")
    try:
        response = s3_client.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404"):
            raise SourceError(f"{uri}: no such object") from None
        if code == "NoSuchBucket":
            raise SourceError(f"{uri}: no such bucket {bucket!r}") from None
        if code in ("AccessDenied", "403"):
            raise SourceError(f"{uri}: access denied") from None
        raise SourceError(f"{uri}: {code or 'error'}: {exc}") from None
    except BotoCoreError as exc:
        raise SourceError(f"{uri}: {exc}") from None
    return response["Body"], response.get("ContentLength")


def open_source(uri: str, *, s3_client: Any = None) -> SourceStream:
    """Open a local path or `s3://bucket/key`; `.gz`/`.zst` are decompressed."""
    if uri.startswith("s3://"):
        body, size = _open_s3(uri, s3_client)
    else:
        try:
            body = open(uri, "rb")  # noqa: SIM115 - closed by SourceStream.close
        except FileNotFoundError:
            raise SourceError(f"{uri}: no such file") from None
        except IsADirectoryError:
            raise SourceError(f"{uri}: is a directory, not a CSV file") from None
        except OSError as exc:
            raise SourceError(f"{uri}: {exc.strerror}") from None
        size = os.fstat(body.fileno()).st_size
    counted = _CountingReader(body)
    buffered: IO[bytes] = io.BufferedReader(counted, CHUNK_BYTES)
    lowered = uri.lower()
    if lowered.endswith(".gz"):
        stream: IO[bytes] = gzip.GzipFile(fileobj=buffered, mode="rb")
    elif lowered.endswith(".zst"):
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
    else:
        stream = buffered
    return SourceStream(raw=stream, name=uri, total_bytes=size, _counted=counted)


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """One CSV record: its first physical line, its fields, or why it is unreadable."""

    line: int
    fields: list[str]
    error: str | None = None


def _physical_lines(stream: IO[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """Yield (content, terminator) for each line; `\\n`, `\\r\\n` and `\\r` end lines."""
    rest = b""
    while True:
        try:
            chunk = stream.read(CHUNK_BYTES)
        except (OSError, EOFError) as exc:
            raise SourceError(f"cannot read source: {exc}") from None
        except Exception as exc:  # zstd/gzip raise their own error types
            raise SourceError(f"cannot decompress source: {exc}") from None
        if not chunk:
            break
        data = rest + chunk
        lines = data.splitlines(keepends=True)
        rest = lines.pop() if lines else b""
        if rest.endswith(b"\r"):
            # "\r" may be the first half of "\r\n" split across chunks
            pass
        elif rest.endswith(b"\n"):
            lines.append(rest)
            rest = b""
        for ln in lines:
            if ln.endswith(b"\r\n"):
                yield ln[:-2], b"\r\n"
            else:
                yield ln[:-1], ln[-1:]
    if rest:
        if rest.endswith(b"\r"):
            yield rest[:-1], b"\r"
        else:
            yield rest, b""


class _RecordParser:
    """ItemReader's CSV grammar for one record that may span physical lines.

    Quotes escape as `""`; a backslash escapes a backslash, a quote or the
    delimiter; before any other character the backslash is dropped and the
    character is read as usual (so a backslash before a line end does not
    join lines).  A quote inside an unquoted field is an ordinary character.
    """

    __slots__ = ("delim", "fields", "buf", "state")

    # states
    START, UNQUOTED, QUOTED, AFTER_QUOTE = range(4)

    def __init__(self, delim: str) -> None:
        self.delim = delim
        self.fields: list[str] = []
        self.buf: list[str] = []
        self.state = self.START

    def feed(self, text: str, terminator: str) -> bool:
        """Consume one physical line; True when the record is complete."""
        d = self.delim
        buf = self.buf
        state = self.state
        i = 0
        n = len(text)
        while i < n:
            c = text[i]
            i += 1
            if c == "\\":
                if i < n and text[i] in ("\\", '"', d):
                    buf.append(text[i])
                    i += 1
                    if state == self.START or state == self.AFTER_QUOTE:
                        state = self.UNQUOTED
                continue
            if state == self.QUOTED:
                if c == '"':
                    if i < n and text[i] == '"':
                        buf.append('"')
                        i += 1
                    else:
                        state = self.AFTER_QUOTE
                else:
                    buf.append(c)
            elif c == d:
                self.fields.append("".join(buf))
                buf.clear()
                state = self.START
            elif c == '"' and state == self.START:
                state = self.QUOTED
            else:
                buf.append(c)
                state = self.UNQUOTED
        if state == self.QUOTED:
            buf.append(terminator)
            self.state = state
            return False
        self.fields.append("".join(buf))
        buf.clear()
        self.state = self.START
        return True

    @property
    def open_quote(self) -> bool:
        return self.state == self.QUOTED


def _decode(raw: bytes, line: int) -> tuple[str, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return raw.decode(
            "utf-8", "replace"
        ), f"invalid UTF-8 at byte {exc.start + 1} of line {line}"


def iter_records(stream: IO[bytes], delimiter: str) -> Iterator[ParsedRow]:
    """Every CSV record of the stream, blank lines skipped, with its first line number."""
    line_no = 0
    parser: _RecordParser | None = None
    start = 0
    error: str | None = None
    for raw, term in _physical_lines(stream):
        line_no += 1
        text, bad = _decode(raw, line_no)
        if line_no == 1 and text.startswith(_BOM):
            text = text[1:]
        if parser is None:
            if not raw:
                continue  # a blank line between records is not a record
            if '"' not in text and "\\" not in text:
                yield ParsedRow(line_no, text.split(delimiter), bad)
                continue
            parser = _RecordParser(delimiter)
            start = line_no
            error = None
        error = error or bad
        if parser.feed(text, term.decode("ascii")):
            yield ParsedRow(start, parser.fields, error)
            parser = None
    if parser is not None:
        yield ParsedRow(
            start,
            parser.fields + ["".join(parser.buf)],
            f"unterminated quoted field (quote opened on line {start}, never closed)",
        )


def read_header(records: Iterator[ParsedRow], options: CsvOptions) -> list[str]:
    """The column names: given in the spec, or taken from the first record."""
    if options.header_location == "GIVEN":
        assert options.headers is not None
        return list(options.headers)
    first = next(records, None)
    if first is None:
        raise SourceError("the file is empty: no header row")
    if first.error:
        raise SourceError(f"header row: {first.error}")
    names = list(first.fields)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SourceError(f"header row: duplicate column name {dupes[0]!r}")
    return names


#: How many lines of a kind (padded, truncated) a reader keeps for its notice.
SHOWN_LINES = 8


class CsvReader:
    """Header plus rows of a CSV stream, per ItemReader's rules.

    Rows are padded with `""` or cut to the header's width, as ItemReader does.
    """

    def __init__(self, stream: IO[bytes], options: CsvOptions) -> None:
        self.options = options
        self._records = iter_records(stream, options.delimiter)
        self.header: list[str]
        self.padded = 0
        self.truncated = 0
        #: the first SHOWN_LINES lines of each kind (the notice names them)
        self.padded_lines: list[int] = []
        self.truncated_lines: list[int] = []
        self.header = read_header(self._records, options)

    def __iter__(self) -> Iterator[ParsedRow]:
        width = len(self.header)
        for row in self._records:
            fields = row.fields
            n = len(fields)
            if n != width:
                if n < width:
                    fields.extend([""] * (width - n))
                    if self.padded < SHOWN_LINES:
                        self.padded_lines.append(row.line)
                    self.padded += 1
                else:
                    del fields[width:]
                    if self.truncated < SHOWN_LINES:
                        self.truncated_lines.append(row.line)
                    self.truncated += 1
            yield row
