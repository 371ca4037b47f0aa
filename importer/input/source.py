"""Where rows come from: byte streams (local or S3, maybe compressed) and the
ItemReader CSV rules that turn those bytes into rows.

Everything streams: a 10 GB object is read in fixed-size chunks, never held
whole.  Line numbers are physical lines of the file (the header is line 1), so
a reject points at the line a user sees in an editor.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, ClassVar, cast

from importer.input.options import HEADER_TOO_LONG, MAX_HEADER_BYTES, CsvOptions
from importer.input.reader import RowReader
from importer.item_size import MAX_ITEM_BYTES

__all__ = [
    "CHUNK_BYTES",
    "GZIP_SUFFIXES",
    "MAX_HEADER_BYTES",
    "MAX_OBJECT_BYTES",
    "MAX_RECORD_BYTES",
    "ZSTD_SUFFIXES",
    "CsvReader",
    "ParsedRow",
    "SourceError",
    "SourceStream",
    "TruncatedSourceError",
    "ZstdFrames",
    "object_too_big",
    "open_source",
    "read_header",
    "record_too_long",
]

CHUNK_BYTES = 1 << 20
_BOM = "\ufeff"
#: a data record longer than the largest item DynamoDB can store cannot be imported:
#: it is refused as it streams, never held (a line of any length costs one chunk)
MAX_RECORD_BYTES = MAX_ITEM_BYTES


def record_too_long(limit: int) -> str:
    """The reason a record over `limit` bytes is refused (the native reader's words)."""
    if limit == MAX_RECORD_BYTES:
        return (
            f"record longer than {limit:,} bytes (the largest item DynamoDB can "
            "store): skipped without reading it"
        )
    return f"record longer than {limit:,} bytes: skipped without reading it"


class SourceError(Exception):
    """The source cannot be read at all (missing, forbidden, corrupt)."""


class TruncatedSourceError(SourceError):
    """Compressed input that ends before its compressed data does (a cut download).

    Raised where the reader reaches the early end, so the rows before it are
    imported and checkpointed; the message names the file and how far it got.
    """


@dataclass(slots=True)
class SourceStream:
    """A readable byte stream plus what progress reporting needs to know."""

    raw: IO[bytes]
    name: str
    #: compressed size on disk/S3, for an ETA; None when unknown
    total_bytes: int | None
    _counted: _CountingReader | None = None
    #: what the checkpoint keeps to know the file again (`input_identity`)
    identity: dict[str, Any] | None = None
    _path: str | None = None

    def digest(self, start: int, length: int) -> str | None:
        """sha256 of `length` bytes of the (local) file from `start`; None for S3."""
        if self._path is None:
            return None
        with open(self._path, "rb") as fh:
            fh.seek(start)
            return _sha(fh.read(length))

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

    def __init__(self, inner: Any, watch: Callable[[bytes], None] | None = None) -> None:
        self.inner = inner
        self.count = 0
        self.watch = watch

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        if self.watch is not None and n:
            self.watch(data)
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


def _open_s3(uri: str, s3_client: Any) -> tuple[Any, int | None, str | None]:
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
    return response["Body"], response.get("ContentLength"), response.get("ETag")


#: bytes at each end of the input that identify it (with its size)
IDENTITY_BYTES = 64 * 1024


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def input_identity(fd: int, size: int) -> dict[str, Any]:
    """Size and digests of the first and last 64 KiB: another file (or this one
    changed) is told apart without reading it whole."""
    head_len = min(size, IDENTITY_BYTES)
    tail_at = max(0, size - IDENTITY_BYTES)
    return {
        "size": size,
        "head_len": head_len,
        "head": _sha(os.pread(fd, head_len, 0)),
        "tail_at": tail_at,
        "tail": _sha(os.pread(fd, size - tail_at, tail_at)),
    }


#: ItemReader's external compressions by name (AWS Step Functions developer guide,
#: "ItemReader (Map)": "Input files support the following external compression types:
#: GZIP, ZSTD. Example file names: myObject.jsonl.gz and myObject.csv.zstd")
GZIP_SUFFIXES = (".gz",)
ZSTD_SUFFIXES = (".zst", ".zstd")
#: "Step Functions supports 10 GB as the maximum size of an individual file in Amazon S3"
#: (the same guide, for CSV, JSON and JSON Lines objects; GB taken as GiB, the larger)
MAX_OBJECT_BYTES = 10 * 1024**3


def object_too_big(uri: str, size: int | None) -> str | None:
    """The one line refusing an object over ItemReader's 10 GB, or None."""
    if size is None or size <= MAX_OBJECT_BYTES:
        return None
    return (
        f"{uri}: is {size:,} bytes, over the 10 GB Step Functions' ItemReader reads "
        "from one object (split it, or list the parts in a manifest)"
    )


def open_source(uri: str, *, s3_client: Any = None) -> SourceStream:
    """Open a local path or `s3://bucket/key`; `.gz`/`.zst`/`.zstd` are decompressed."""
    identity: dict[str, Any] | None = None
    path: str | None = None
    if uri.startswith("s3://"):
        body, size, etag = _open_s3(uri, s3_client)
        if etag:
            identity = {"etag": etag, "size": size}
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
        try:
            identity = input_identity(body.fileno(), size)
        except OSError:
            identity = None  # a pipe or a device: nothing to identify it by
        path = uri
    if (too_big := object_too_big(uri, size)) is not None:
        body.close()
        raise SourceError(too_big)
    lowered = uri.lower()
    frames = ZstdFrames() if lowered.endswith(ZSTD_SUFFIXES) else None
    counted = _CountingReader(body, frames.feed if frames is not None else None)
    buffered: IO[bytes] = io.BufferedReader(counted, CHUNK_BYTES)
    if lowered.endswith(GZIP_SUFFIXES):
        gz = gzip.GzipFile(fileobj=buffered, mode="rb")
        stream: IO[bytes] = cast(IO[bytes], _Whole(gz, uri, counted, None))
    elif frames is not None:
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
        stream = cast(IO[bytes], _Whole(reader, uri, counted, frames))
    else:
        stream = buffered
    return SourceStream(
        raw=stream,
        name=uri,
        total_bytes=size,
        _counted=counted,
        identity=identity,
        _path=path,
    )


_ZSTD_MAGIC = 0xFD2FB528
#: gzip is read in pieces this big (what an early end can cost of the rows before it)
_GZIP_PIECE = 64 * 1024
_FCS_SIZES = (0, 2, 4, 8)
_DID_SIZES = (0, 1, 2, 4)


class ZstdFrames:
    """Follows the frames of a zstd stream (RFC 8878) as its compressed bytes go by.

    zstandard's stream reader takes a file that stops inside a frame for a
    complete one: a cut download imported 11,895 of 20,000 rows and said nothing.
    Walking the frame and block headers (a few bytes per 128 KB block, nothing
    decompressed) tells whether the data ended where a frame ends.
    """

    __slots__ = ("_buf", "_need", "_skip", "_state", "_checksum", "frames", "bad")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 4
        self._skip = 0
        self._state = "magic"
        self._checksum = False
        self.frames = 0
        self.bad = False

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n and not self.bad:
            if self._skip:
                take = min(self._skip, n - i)
                self._skip -= take
                i += take
                continue
            take = min(self._need - len(self._buf), n - i)
            self._buf += data[i : i + take]
            i += take
            if len(self._buf) == self._need:
                piece = bytes(self._buf)
                self._buf.clear()
                self._step(piece)

    def _next(self, state: str, need: int) -> None:
        self._state, self._need = state, need

    def _step(self, piece: bytes) -> None:
        state = self._state
        if state == "magic":
            magic = int.from_bytes(piece, "little")
            if magic == _ZSTD_MAGIC:
                self._next("descriptor", 1)
            elif magic & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame
                self._next("skippable", 4)
            else:
                self.bad = True  # not zstd: the decompressor says so itself
        elif state == "skippable":
            self._skip = int.from_bytes(piece, "little")
            self.frames += 1
            self._next("magic", 4)
        elif state == "descriptor":
            d = piece[0]
            single = (d >> 5) & 1
            self._checksum = bool((d >> 2) & 1)
            fcs = _FCS_SIZES[d >> 6] or (1 if single else 0)
            rest = (0 if single else 1) + _DID_SIZES[d & 3] + fcs
            if rest:
                self._next("header", rest)
            else:
                self._next("block", 3)
        elif state == "header":
            self._next("block", 3)
        elif state == "block":
            head = int.from_bytes(piece, "little")
            kind, size = (head >> 1) & 3, head >> 3
            self._skip = 1 if kind == 1 else size
            if not head & 1:
                self._next("block", 3)
            elif self._checksum:
                self._next("checksum", 4)
            else:
                self.frames += 1
                self._next("magic", 4)
        else:  # checksum
            self.frames += 1
            self._next("magic", 4)

    @property
    def complete(self) -> bool:
        """The data so far ends where a frame ends (or is not zstd at all)."""
        return self.bad or (self._state == "magic" and not self._buf and not self._skip)


class _Whole(io.RawIOBase):
    """Decompressed bytes that end only where the compressed data says they end.

    An early end -- gzip's EOFError, or zstd data stopping inside a frame --
    raises `TruncatedSourceError` naming the file and how far it got.
    """

    def __init__(
        self, inner: Any, name: str, counted: _CountingReader, frames: ZstdFrames | None
    ) -> None:
        self.inner = inner
        self.name = name
        self.counted = counted
        self.frames = frames
        self.lines = 0
        self.out = 0
        self.ended_early = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.ended_early:
            raise self._truncated()
        if self.frames is None:
            data = self._gzip_read(size)
        else:
            data = self.inner.read(size)
            if not data and size != 0 and not self.frames.complete:
                raise self._truncated()
        self.out += len(data)
        self.lines += data.count(b"\n")
        return data

    def _gzip_read(self, size: int) -> bytes:
        """gzip raises at an early end and drops what that read decoded: read in
        pieces, so the rows up to the last piece before the cut are kept."""
        if size is None or size < 0:
            size = CHUNK_BYTES
        pieces: list[bytes] = []
        got = 0
        while got < size:
            try:
                piece = self.inner.read(min(_GZIP_PIECE, size - got))
            except EOFError:
                self.ended_early = True
                if not pieces:
                    raise self._truncated() from None
                break
            if not piece:
                break
            pieces.append(piece)
            got += len(piece)
        return b"".join(pieces)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _truncated(self) -> TruncatedSourceError:
        return TruncatedSourceError(
            f"{self.name}: the file is truncated (its compressed data stops early, as a cut "
            f"download does): read {self.counted.count:,} compressed bytes, "
            f"{self.out:,} bytes / {self.lines:,} complete lines of CSV"
        )

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            super().close()


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """One CSV record: its first physical line, its fields, or why it is unreadable.

    A `Row` of its own: its JSON size is measured from the fields (`size` 0) and an
    unreadable record names no column or value.
    """

    line: int
    fields: list[str]
    error: str | None = None
    size: ClassVar[int] = 0
    column: ClassVar[str] = ""
    value: ClassVar[str] = ""


def _physical_lines(stream: IO[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """Yield (content, terminator) for each line; `\\n`, `\\r\\n` and `\\r` end lines."""
    rest = b""
    while True:
        try:
            chunk = stream.read(CHUNK_BYTES)
        except SourceError:
            raise
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


def _decode(raw: bytes, line: int) -> tuple[str, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return raw.decode(
            "utf-8", "replace"
        ), f"invalid UTF-8 at byte {exc.start + 1} of line {line}"


def iter_records(
    stream: IO[bytes], delimiter: str, max_record: int = 0, first_max: int | None = None
) -> Iterator[ParsedRow]:
    """Every CSV record of the stream, blank lines skipped, with its first line number.

    A record longer than `max_record` bytes (`first_max` for the first record: the
    header) -- counted from its first byte to its last line's end, a BOM not
    included -- comes with no fields and `record_too_long` as its error, as the
    native reader's does.  (The native reader, the default, skips such a record
    as it streams; this reference reads it whole.)
    """
    line_no = 0
    parser: _RecordParser | None = None
    start = 0
    error: str | None = None
    limit = max_record if first_max is None else first_max
    length = 0
    for raw, term in _physical_lines(stream):
        line_no += 1
        text, bad = _decode(raw, line_no)
        bom = 3 if line_no == 1 and raw.startswith(b"\xef\xbb\xbf") else 0
        if line_no == 1 and text.startswith(_BOM):
            text = text[1:]
        if parser is None:
            if not raw:
                continue  # a blank line between records is not a record
            if '"' not in text and "\\" not in text:
                if limit and len(raw) - bom > limit:
                    yield ParsedRow(line_no, [], record_too_long(limit))
                else:
                    yield ParsedRow(line_no, text.split(delimiter), bad)
                limit = max_record
                continue
            parser = _RecordParser(delimiter)
            start = line_no
            error = None
            length = len(raw) - bom
        else:
            length += len(raw)
        error = error or bad
        if parser.feed(text, term.decode("ascii")):
            if limit and length > limit:
                yield ParsedRow(start, [], record_too_long(limit))
            else:
                yield ParsedRow(start, parser.fields, error)
            parser = None
            limit = max_record
        else:
            length += len(term)
    if parser is not None:
        # the open quote swallowed every byte to the end, its last line end included
        # (the field holds it), so all of them count -- as the native reader counts
        if limit and length > limit:
            yield ParsedRow(start, [], record_too_long(limit))
            return
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
        if not first.fields:  # longer than the limit: not read
            raise SourceError(HEADER_TOO_LONG)
        raise SourceError(f"header row: {first.error}")
    names = list(first.fields)
    if len(set(names)) != len(names):  # linear in the names (bench_hostile.py's long header)
        counts = Counter(names)
        dupes = sorted(n for n, k in counts.items() if k > 1)
        raise SourceError(f"header row: duplicate column name {dupes[0]!r}")
    return names


#: How many lines of a kind (padded, truncated) a reader keeps for its notice.
SHOWN_LINES = 8


class CsvReader(RowReader):
    """Header plus rows of a CSV stream, per ItemReader's rules.

    Rows are padded with `""` or cut to the header's width, as ItemReader does.
    """

    padded = 0
    truncated = 0
    #: the first SHOWN_LINES lines of each kind (the notice names them)
    padded_lines: tuple[int, ...] = ()
    truncated_lines: tuple[int, ...] = ()

    def __init__(self, stream: IO[bytes], options: CsvOptions) -> None:
        self.options = options
        first = MAX_HEADER_BYTES if options.header_location != "GIVEN" else None
        self._records = iter_records(stream, options.delimiter, MAX_RECORD_BYTES, first)
        self.header: list[str] = read_header(self._records, options)

    def __iter__(self) -> Iterator[ParsedRow]:
        width = len(self.header)
        for row in self._records:
            fields = row.fields
            n = len(fields)
            if not n and row.error:  # a record too long: no fields were read
                fields.extend([""] * width)
            elif n != width:
                if n < width:
                    fields.extend([""] * (width - n))
                    if self.padded < SHOWN_LINES:
                        self.padded_lines += (row.line,)
                    self.padded += 1
                else:
                    del fields[width:]
                    if self.truncated < SHOWN_LINES:
                        self.truncated_lines += (row.line,)
                    self.truncated += 1
            yield row
