"""ItemReader InputType PARQUET: each row of a Parquet file is one item.

(AWS Step Functions developer guide, "ItemReader (Map)": every row of the file
becomes an item, columns as keys with typed values; Parquet compresses its
pages itself, so a `.parquet.gz`, `.parquet.zst` or `.parquet.zstd` object is not a Parquet file
and is refused.)  How a child sees a row's values -- numbers and booleans as
JSON numbers and booleans, lists and structs nested, timestamps as epoch
milliseconds -- is what the batch sizes here count.

pyarrow reads the file one record batch at a time
(`pyarrow.parquet.ParquetFile.iter_batches`: a row group is decoded in slices,
only the spec's columns), so memory follows the slice, not the file.  A local
file is read through its path; an S3 object through ranged GETs
(`S3RangeFile`), no download.  pyarrow is optional: without it (the Lambda
runtime), a Parquet source stops with one line saying what to install -- the
Lambda child never needs it, as ItemReader hands it rows already read.

A row's position is its 0-based row number in the file.  A column whose Parquet
type cannot stand for its spec type (a double in a `date` column, a string list
in an `integer` one) rejects each row where it holds a value; nulls are empty
fields.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from importer import _native
from importer.input.batching import Batch, Batcher
from importer.input.items import TEMPLATE, ItemRow, Mismatch, Num, dump_json, value_text
from importer.input.reader import RowReader
from importer.input.source import GZIP_SUFFIXES, ZSTD_SUFFIXES, SourceError
from importer.records import Reject

__all__ = [
    "ParquetReader",
    "S3RangeFile",
    "open_parquet_source",
    "require_pyarrow",
]

#: rows decoded at a time (a slice of a row group).  pyarrow's decode costs less CPU
#: per row in larger slices (benchmarks/bench_formats.py); memory stays a slice or
#: two, not the file
BATCH_ROWS = 65_536
#: rows in the first slice, decoded before any batch can be cut: with whole
#: 65,536-row slices the first batch of a run came ~50 ms of CPU later (the
#: writers idle meanwhile); after it, slices of BATCH_ROWS
FIRST_ROWS = 4_096
#: rows of a record batch cut at a time: its first batches are handed on before the
#: rest are cut (`_DecodeAhead`)
CUT_ROWS = 4_096
_NUMERIC = frozenset({"integer", "decimal"})


def require_arrow() -> Any:
    """pyarrow (without `pyarrow.parquet`), or one readable line on why not."""
    try:
        import pyarrow
    except ImportError:
        require_pyarrow()
        raise
    _small_page_pool(pyarrow)
    return pyarrow


#: the memory pools that do not put Arrow's buffers on transparent huge pages, best first
_SMALL_PAGE_POOLS = ("jemalloc", "system")


def _small_page_pool(pa: Any) -> None:
    """Make pyarrow's default memory pool jemalloc (else the system allocator) when it
    is mimalloc and the user has not chosen one (ARROW_DEFAULT_MEMORY_POOL).

    Why: pyarrow's mimalloc asks for transparent huge pages for its arenas, so the
    first record batch faults in 2 MB pages the kernel must zero -- and, where memory
    is fragmented, first compact.  In whole `importer run`s of the benchmark's
    100,000 rows that zeroing alone took 30 to 190 ms of CPU (`perf`: clear_page_erms
    under mi_page_free_list_extend), most of what the Parquet run cost over the CSV
    one and most of its round-to-round spread; with jemalloc a run took ~0.1 s less
    CPU and peaked some 40 MB lower (benchmarks/bench_formats.py).  Process-wide, not
    the reader's pool alone: the Parquet reader takes its page and decompression
    buffers from the default pool whatever pool its arrays use.
    """
    import os

    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    if pa.default_memory_pool().backend_name != "mimalloc":
        return
    backends = set(pa.supported_memory_backends())
    for name in _SMALL_PAGE_POOLS:
        if name in backends:
            pa.set_memory_pool(getattr(pa, f"{name}_memory_pool")())
            return


class _File:
    """A Parquet file opened by pyarrow's own reader (`pyarrow._parquet`), the part of
    `pyarrow.parquet.ParquetFile` this module uses: `schema_arrow`, `metadata` and
    every column's record batches.

    Why: `import pyarrow.parquet` also imports `pyarrow.fs` and its S3, GCS, Azure
    and HDFS filesystems -- a sizeable part of what a short Parquet run costs over
    CSV (benchmarks/bench_formats.py) -- and the importer
    opens only local paths and its own S3 view (`S3RangeFile`).  `_open_file`
    falls back to `ParquetFile` should a pyarrow not have this reader.
    """

    def __init__(self, source: Any) -> None:
        from pyarrow._parquet import ParquetReader as Low

        self._reader = Low()
        # pre_buffer (pyarrow's default) caches every column chunk it has read for
        # the file's life: peak memory grew with the file
        # (benchmarks/bench_formats_memory.py); without it a row group at a time.
        # Extension types as ParquetFile reads them (pyarrow >= 19 has the option).
        try:
            self._reader.open(source, pre_buffer=False, arrow_extensions_enabled=True)
        except TypeError:
            self._reader.open(source, pre_buffer=False)
        self.schema_arrow = self._reader.schema_arrow
        self.metadata = self._reader.metadata
        self.num_row_groups: int = self.metadata.num_row_groups

    def iter_batches(self, batch_size: int, first: int = 0) -> Iterator[Any]:
        """Every column's record batches, in file order: `first` rows, then
        `batch_size` at a time (pyarrow reads its batch size at each batch).

        Decoded on this thread (`use_threads` off): pyarrow's pool decoding the
        columns side by side took more CPU (in-process, ~4 ms a 100,000-row file,
        medians of 7), and on a 2-core machine the batch threads have the other core.
        """
        groups = list(range(self.metadata.num_row_groups))
        reader = self._reader
        batches = reader.iter_batches(first or batch_size, groups, use_threads=False)
        if first and first != batch_size:
            held = list(itertools.islice(batches, 1))  # no local keeps it while suspended
            if not held:
                return  # (pyarrow's generator, once ended, raises StopIteration again)
            reader.set_batch_size(batch_size)
            yield held.pop()
        yield from batches


class _PublicFile:
    """`pyarrow.parquet.ParquetFile` with `_File`'s `iter_batches`."""

    def __init__(self, source: Any) -> None:
        self._file = require_pyarrow().ParquetFile(source, pre_buffer=False)
        self.schema_arrow = self._file.schema_arrow
        self.metadata = self._file.metadata
        self.num_row_groups: int = self.metadata.num_row_groups

    def iter_batches(self, batch_size: int, first: int = 0) -> Iterator[Any]:
        """`batch_size` rows at a time from the first (`ParquetFile` cannot change it)."""
        return iter(self._file.iter_batches(batch_size=batch_size))


def _open_file(source: Any) -> _File | _PublicFile:
    try:
        from pyarrow._parquet import ParquetReader  # noqa: F401 - present?
    except ImportError:
        return _PublicFile(source)
    return _File(source)


def require_pyarrow() -> Any:
    """pyarrow.parquet, or one readable line on why not."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceError(
            "reading Parquet needs pyarrow, which is not installed here: "
            "pip install 'pyarrow>=14' (or importer[bench]); the Lambda child does not need it"
        ) from None
    return pq


class S3RangeFile(io.RawIOBase):
    """A seekable view of one S3 object, read by ranged GETs (what Parquet's footer needs)."""

    def __init__(self, s3_client: Any, bucket: str, key: str, size: int) -> None:
        self._s3 = s3_client
        self._bucket = bucket
        self._key = key
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self._size:
            return 0
        end = min(self._size, self._pos + len(buffer)) - 1
        body = self._s3.get_object(
            Bucket=self._bucket, Key=self._key, Range=f"bytes={self._pos}-{end}"
        )["Body"].read()
        n = len(body)
        buffer[:n] = body
        self._pos += n
        return n


def open_parquet_source(uri: str, s3_client: Any = None) -> Any:
    """A path, or a seekable view of an S3 object, for `pyarrow.parquet.ParquetFile`."""
    lowered = uri.lower()
    if lowered.endswith((*GZIP_SUFFIXES, *ZSTD_SUFFIXES)):  # every suffix a source unwraps
        raise SourceError(
            f"{uri}: a Parquet file compresses its own pages; ItemReader reads Parquet "
            "objects as they are, not gzip/zstd-wrapped -- store the .parquet file itself"
        )
    if not uri.startswith("s3://"):
        return uri
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri[len("s3://") :].partition("/")
    if s3_client is None:
        import boto3

        s3_client = boto3.client("s3")
    try:
        size = s3_client.head_object(Bucket=bucket, Key=key)["ContentLength"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise SourceError(f"{uri}: no such object") from None
        raise SourceError(f"{uri}: {code or 'error'}: {exc}") from None
    except BotoCoreError as exc:
        raise SourceError(f"{uri}: {exc}") from None
    return io.BufferedReader(S3RangeFile(s3_client, bucket, key, size), 1 << 20)


def _iso(value: Any) -> str:
    """A timestamp as the datetime rule reads it (no offset: UTC); fraction without trailing 0s."""
    if value is None:
        return ""
    text = value.isoformat()
    if value.microsecond:
        head, _, rest = text.partition(".")
        frac, sep, tz = rest[:6], rest[6:7], rest[6:]
        text = f"{head}.{frac.rstrip('0')}{tz if sep else ''}"
    return text


class _DecodeAhead:
    """An iterator's items fetched one ahead on a helper thread (`next`, then `close`).

    Why: while the reader decoded a 65,536-row slice (~17 ms of CPU) and then cut
    it, no batch was handed on, and the batch threads ran out of work (at most
    2 x workers batches wait: ~10 ms of them); at 1,000,000 rows the Parquet run
    took ~0.1 of its time more than at equal CPU.  pyarrow decodes with the GIL
    released, so the next slice is decoded here while the caller cuts this one,
    a few thousand rows at a time (`CUT_ROWS`).  The helper thread runs no Python
    of its own between fetches (a helper that also cut the batches was tried: it
    fought the batch threads for the GIL and cost more CPU than it saved).  It
    fetches item i+1 only once the caller has taken item i: at most two are
    alive, the caller's and the next.
    """

    _END = object()

    def __init__(self, items: Iterator[Any]) -> None:
        import queue
        import threading

        self._items = items
        self._queue: queue.SimpleQueue[tuple[Any, BaseException | None]] = queue.SimpleQueue()
        self._room = threading.Semaphore(1)  # released when the caller takes an item
        self._stop = False
        self._done = False
        self._thread = threading.Thread(target=self._run, name="parquet-decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        items, put, room = self._items, self._queue.put, self._room
        try:
            while True:
                room.acquire()
                if self._stop:
                    return
                item = next(items, self._END)
                put((item, None))
                if item is self._END:
                    return
                del item
        except BaseException as exc:  # handed to the caller, raised there
            put((None, exc))

    def next(self) -> Any:
        """The next item, None at the end; what the iterator raised is raised here."""
        if self._done:
            return None
        item, exc = self._queue.get()
        if exc is not None or item is self._END:
            self._done = True
            if exc is not None:
                raise exc
            return None
        self._room.release()  # the helper fetches the next one meanwhile
        return item

    def close(self) -> None:
        """Stop the helper (it finishes a fetch it is in) and wait for it."""
        self._stop = True
        self._room.release()
        self._thread.join()


class ParquetReader(RowReader):
    """Rows of a Parquet file for the spec's columns (`header`, typed by `kinds`)."""

    input_type = "PARQUET"
    position = "row"

    def __init__(
        self,
        uri: str,
        header: Sequence[str],
        kinds: Sequence[str],
        *,
        s3_client: Any = None,
        batch_rows: int = BATCH_ROWS,
        first_rows: int = FIRST_ROWS,
        cut_rows: int = CUT_ROWS,
    ) -> None:
        pa = require_arrow()
        self._pa = pa
        self._batch_rows = batch_rows
        self._first_rows = min(first_rows, batch_rows)
        self._cut_rows = max(1, cut_rows)
        source = open_parquet_source(uri, s3_client)
        try:
            self._file = _open_file(source)
        except FileNotFoundError:
            raise SourceError(f"{uri}: no such file") from None
        except (pa.ArrowException, OSError) as exc:
            raise SourceError(f"{uri}: not a readable Parquet file ({_one_line(exc)})") from None
        self.schema = self._file.schema_arrow
        #: every column of the file: the keys of each item a child would see
        self.columns: list[str] = list(self.schema.names)
        self.first_keys = list(self.columns)
        self._uri = uri
        self.header = [h for h in header if h in self.schema.names]
        self._all_header = list(header)
        self._kinds = dict(zip(header, kinds, strict=True))
        #: columns of the last record batch holding a value that does not fit
        self._misfits: dict[str, bool] = {}
        self.rows_total = self._file.metadata.num_rows

    # -- one batch of columns ---------------------------------------------------

    def _column_texts(self, name: str, col: Any) -> list[Any]:
        """The column's fields: a str per row, or a `Mismatch` for a value that does not fit."""
        pa = self._pa
        import pyarrow.compute as pc

        kind = self._kinds[name]
        self._misfits[name] = False
        t = col.type
        if pa.types.is_dictionary(t):
            col = col.dictionary_decode()
            t = col.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return [v if v is not None else "" for v in col.to_pylist()]
        if pa.types.is_null(t):
            return [""] * len(col)
        fits = False
        if pa.types.is_integer(t) or pa.types.is_decimal(t) or pa.types.is_floating(t):
            fits = kind in _NUMERIC or kind == TEMPLATE
        elif pa.types.is_boolean(t):
            fits = kind == "boolean" or kind == TEMPLATE
        elif pa.types.is_date(t):
            fits = kind == "date" or kind == TEMPLATE
        if fits:
            texts = pc.cast(col, pa.string()).to_pylist()
            return [v if v is not None else "" for v in texts]
        if pa.types.is_timestamp(t) and kind in ("datetime", TEMPLATE):
            return [_iso(v) for v in col.to_pylist()]
        out: list[Any] = []
        for v in col.to_pylist():
            if v is None:
                out.append("")
                continue
            try:
                out.append(value_text(_plain(v), kind))
            except Mismatch as exc:
                out.append(Mismatch(f"{exc} (Parquet {t})"))
                self._misfits[name] = True
        return out

    def _sizes(self, batch: Any) -> list[int]:
        """Each row's compact JSON size as a child receives it (every column of the file)."""
        return self._size_array(batch).to_pylist()

    def _size_array(self, batch: Any) -> Any:
        """`_sizes` as an int64 pyarrow array (no nulls)."""
        pa = self._pa
        import pyarrow.compute as pc

        n = batch.num_rows
        fixed = 2 + max(0, batch.num_columns - 1)  # braces and commas
        total = pa.array([fixed] * n, pa.int64())
        for name, col in zip(batch.schema.names, batch.columns, strict=True):
            total = pc.add(total, self._column_length(name, col))
        return total

    def _column_length(self, name: str, col: Any) -> Any:
        """What column `name` adds to each row's JSON size (`"name":value`), int64."""
        pa = self._pa
        import pyarrow.compute as pc

        fixed_key = len(_json_str(name)) + 1
        t = col.type
        if pa.types.is_dictionary(t):
            col = col.dictionary_decode()
            t = col.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            length = pc.binary_length(col)
            length = pc.add(length, 2)
            length = pc.add(length, pc.count_substring(col, '"'))
            length = pc.add(length, pc.count_substring(col, "\\"))
            control = pc.count_substring_regex(col, "[\x00-\x1f]")
            if pc.sum(control).as_py():  # rare: \n \t ... take 2 bytes, the rest 6
                short = pc.count_substring_regex(col, "[\b\f\n\r\t]")
                length = pc.add(length, pc.add(short, pc.multiply(pc.subtract(control, short), 5)))
        elif pa.types.is_boolean(t):
            length = pc.if_else(col, 4, 5)
        elif pa.types.is_timestamp(t):
            millis = pc.cast(pc.cast(col, pa.timestamp("ms", tz=t.tz)), pa.int64())
            length = pc.utf8_length(pc.cast(millis, pa.string()))
        elif (
            pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_decimal(t)
            or pa.types.is_null(t)
        ):
            length = pc.utf8_length(pc.cast(col, pa.string()))
        elif pa.types.is_date(t):
            length = pc.add(pc.utf8_length(pc.cast(col, pa.string())), 2)
        else:
            length = pa.array(
                [len(_json_str_any(v).encode("utf-8")) for v in col.to_pylist()], pa.int64()
            )
        length = pc.fill_null(pc.cast(length, pa.int64()), 4)  # null
        return pc.add(length, fixed_key)

    def _record_batches(self) -> Iterator[tuple[int, Any]]:
        """(first row, record batch) in file order, the next one decoded meanwhile
        (`_DecodeAhead`); a file that cannot be read past a row stops with one line
        naming that row (pyarrow's own text has newlines)."""
        pa = self._pa
        offset = 0
        # every column (`self.columns`); a short first slice (FIRST_ROWS)
        ahead = _DecodeAhead(self._file.iter_batches(self._batch_rows, self._first_rows))
        try:
            held: list[Any] = []  # this frame keeps no batch while suspended: the
            while True:  # consumer's `del` frees it before the next one is decoded
                try:
                    got = ahead.next()
                except (pa.ArrowException, OSError) as exc:
                    raise SourceError(
                        f"{self._uri}: cannot read Parquet past row {offset} ({_one_line(exc)})"
                    ) from None
                if got is None:
                    return
                held.append(got)
                del got
                n = held[0].num_rows
                yield offset, held.pop()
                offset += n
        finally:
            ahead.close()

    def _blocks(self) -> Iterator[tuple[int, list[tuple[str, ...]], list[int], dict[int, ItemRow]]]:
        """Per record batch: (first row, the rows' fields, their sizes, misfit rows by index).

        Rows are made a column at a time (`zip` of whole columns), and the rare
        misfit row is found from its column, never by looking at every row.
        """
        header = self.header
        for offset, batch in self._record_batches():
            sizes = self._sizes(batch)
            columns = [
                self._column_texts(name, batch.column(batch.schema.get_field_index(name)))
                for name in header
            ]
            bad: dict[int, ItemRow] = {}
            for j, col in enumerate(columns):
                if self._misfits[header[j]]:
                    for i, f in enumerate(col):
                        if type(f) is Mismatch and i not in bad:
                            bad[i] = self._misfit(batch, columns, offset, i, j, sizes[i])
            # tuples, as the native engine takes them: no list per row
            rows = list(zip(*columns, strict=True)) if columns else []
            yield offset, rows, sizes, bad

    def _misfit(
        self, batch: Any, columns: list[list[Any]], offset: int, i: int, j: int, size: int
    ) -> ItemRow:
        name = self.header[j]
        raw = batch.column(batch.schema.get_field_index(name))[i].as_py()
        texts = [c[i] if type(c[i]) is str else "" for c in columns]
        return ItemRow(offset + i, texts, str(columns[j][i]), size, name, _json_str_any(raw))

    def __iter__(self) -> Iterator[ItemRow]:
        for offset, rows, sizes, bad in self._blocks():
            for i, fields in enumerate(rows):
                misfit = bad.get(i) if bad else None
                yield (
                    misfit
                    if misfit is not None
                    else ItemRow(offset + i, list(fields), None, sizes[i])
                )

    # -- the native path --------------------------------------------------------

    def _cell_column(
        self, name: str, col: Any, cast: dict[str, Any], typed: bool = True
    ) -> tuple[tuple[Any, ...], list[int]]:
        """Column `name` as `_native.arrow_rows` reads it, and the rows holding a misfit.

        Where the Arrow type is the spec's (strings; integers, decimals, booleans
        and dates for numeric, boolean and date columns) the native core reads the
        column's own buffers and writes each cell itself, as Arrow's cast to text
        would; floats are cast to text by Arrow (C++, once: `cast` holds what
        `_size_column` cast); timestamps and the rest take `_column_texts`' way.
        `typed` False: dates and decimals are cast by Arrow too (the native core
        refused one: a year outside 1000-9999, a decimal Arrow writes with an
        exponent).
        """
        pa = self._pa
        modes = _native.ARROW_MODES
        kind = self._kinds[name]
        t = col.type
        if pa.types.is_dictionary(t):
            col = col.dictionary_decode()
            t = col.type
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        mode = None
        if pa.types.is_string(t):
            mode = modes["UTF8"]
        elif pa.types.is_large_string(t):
            mode = modes["LARGE_UTF8"]
        elif pa.types.is_null(t) or col.null_count == len(col):
            return (modes["EMPTY"], 0, None, None, None, 0), []
        elif pa.types.is_integer(t) and (kind in _NUMERIC or kind == TEMPLATE):
            mode = modes["INT"] if pa.types.is_signed_integer(t) else modes["UINT"]
        elif pa.types.is_boolean(t) and (kind == "boolean" or kind == TEMPLATE):
            mode = modes["BOOL"]
        elif pa.types.is_date32(t) and (kind == "date" or kind == TEMPLATE) and typed:
            mode = modes["DATE32"]
        elif (
            pa.types.is_decimal128(t)
            and t.scale >= 0
            and (kind in _NUMERIC or kind == TEMPLATE)
            and typed
        ):
            bufs = col.buffers()
            return (modes["DEC128"], t.scale, bufs[0], None, bufs[1], col.offset), []
        if mode is not None:
            bufs = col.buffers()
            if mode in (modes["UTF8"], modes["LARGE_UTF8"]):
                return (mode, 0, bufs[0], bufs[1], bufs[2], col.offset), []
            return (mode, t.bit_width // 8, bufs[0], None, bufs[1], col.offset), []
        numeric = pa.types.is_floating(t) or pa.types.is_decimal(t)
        if (numeric and (kind in _NUMERIC or kind == TEMPLATE)) or (
            pa.types.is_date(t) and (kind == "date" or kind == TEMPLATE)
        ):
            text = cast.get(name)
            if text is None:
                import pyarrow.compute as pc

                text = pc.cast(col, pa.string())
        else:
            texts = self._column_texts(name, col)
            bad = [i for i, v in enumerate(texts) if type(v) is Mismatch]
            text = pa.array([v if type(v) is str else "" for v in texts], pa.string())
            bufs = text.buffers()
            return (modes["UTF8"], 0, bufs[0], bufs[1], bufs[2], text.offset), bad
        bufs = text.buffers()
        return (modes["UTF8"], 0, bufs[0], bufs[1], bufs[2], text.offset), []

    def _size_column(
        self, name: str, col: Any, cast: dict[str, Any], typed: bool = True
    ) -> tuple[Any, ...] | None:
        """Column `name` as `_native.arrow_sizes` sizes it, or None (`_column_length` does)."""
        pa = self._pa
        modes = _native.ARROW_MODES
        key = len(_json_str(name)) + 1
        t = col.type
        if pa.types.is_dictionary(t):
            col = col.dictionary_decode()
            t = col.type
        if pa.types.is_null(t):
            return (modes["EMPTY"], 0, None, None, None, 0, False, key)
        b = col.buffers()
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            mode = modes["UTF8"] if pa.types.is_string(t) else modes["LARGE_UTF8"]
            return (mode, 0, b[0], b[1], b[2], col.offset, True, key)
        if pa.types.is_integer(t):
            mode = modes["INT"] if pa.types.is_signed_integer(t) else modes["UINT"]
            return (mode, t.bit_width // 8, b[0], None, b[1], col.offset, False, key)
        if pa.types.is_boolean(t):
            return (modes["BOOL"], 0, b[0], None, b[1], col.offset, False, key)
        if pa.types.is_date32(t) and typed:
            return (modes["DATE32"], 4, b[0], None, b[1], col.offset, False, key)
        if pa.types.is_decimal128(t) and t.scale >= 0 and typed:
            return (modes["DEC128"], t.scale, b[0], None, b[1], col.offset, False, key)
        if pa.types.is_floating(t) or pa.types.is_decimal(t):
            import pyarrow.compute as pc

            text = cast[name] = pc.cast(col, pa.string())
            b = text.buffers()
            return (modes["UTF8"], 0, b[0], b[1], b[2], text.offset, False, key)
        return None

    def _native_sizing(
        self, batch: Any, cast: dict[str, Any], typed: bool = True
    ) -> tuple[int, list[str], list[tuple[Any, ...]], Any]:
        """How C sizes each row: (braces and commas, the names of the columns it
        sizes, those columns as `_native.arrow_sizes` takes them, the int64 sizes of
        the rest -- measured here by Arrow -- or None)."""
        n = batch.num_rows
        fixed = 2 + max(0, batch.num_columns - 1)  # braces and commas
        names, columns, extra = [], [], None
        for name, col in zip(batch.schema.names, batch.columns, strict=True):
            sized = self._size_column(name, col, cast, typed)
            if sized is not None:
                names.append(name)
                columns.append(sized)
                continue
            import pyarrow.compute as pc  # only for the types C does not size

            length = self._column_length(name, col)
            extra = length if extra is None else pc.add(extra, length)
        if extra is not None:
            extra = extra.buffers()[1][extra.offset * 8 : (extra.offset + n) * 8]
        return fixed, names, columns, extra

    def _native_sizes(self, batch: Any, cast: dict[str, Any], typed: bool = True) -> Any:
        """Each row's compact JSON size (as `_sizes`), measured in C: an int64 memoryview."""
        fixed, _names, columns, extra = self._native_sizing(batch, cast, typed)
        return memoryview(_native.arrow_sizes(batch.num_rows, fixed, columns, extra)).cast("q")

    def _cell_columns(
        self, batch: Any, cast: dict[str, Any], typed: bool
    ) -> tuple[list[tuple[Any, ...]], dict[int, int]]:
        """(the spec's columns as `arrow_rows` reads them, the first misfit column
        of each misfit row)."""
        columns: list[tuple[Any, ...]] = []
        bad_at: dict[int, int] = {}
        for j, name in enumerate(self.header):
            col = batch.column(batch.schema.get_field_index(name))
            column, bad = self._cell_column(name, col, cast, typed)
            columns.append(column)
            for i in bad:
                bad_at.setdefault(i, j)
        return columns, bad_at

    def _plan(
        self, batch: Any, typed: bool
    ) -> tuple[list[tuple[Any, ...]], dict[int, int], Any, tuple[Any, ...] | None]:
        """(the cell columns, the misfits, the sizes, None) for a record batch with
        misfits (`arrow_sizes`); (the cell columns, {}, None, `take_arrow_sized`'s
        sizing arguments) for one without.  ValueError as `arrow_sizes` gives it."""
        cast: dict[str, Any] = {}
        fixed, names, sized, extra = self._native_sizing(batch, cast, typed)
        columns, bad_at = self._cell_columns(batch, cast, typed)
        if bad_at:
            sizes = _native.arrow_sizes(batch.num_rows, fixed, sized, extra)
            return columns, bad_at, memoryview(sizes).cast("q"), None
        at = {name: j for j, name in enumerate(self.header)}
        sizing = []
        for name, entry in zip(names, sized, strict=True):
            j = at.get(name, -1)
            # the cell gives the size only where it was written from these same buffers
            if j >= 0 and not _same_buffers(columns[j], entry):
                j = -1
            sizing.append((*entry, j))
        return columns, bad_at, None, (sizing, fixed, extra)

    @staticmethod
    def _first_take(
        cutter: Any, batch: Any, offset: int, columns: list[Any], sized: Any, end: int
    ) -> list[Any]:
        """Rows 0..end of a record batch without misfits (nothing for one with)."""
        if sized is None:
            return []
        got: list[Any] = cutter.take_arrow_sized(batch.num_rows, offset, columns, *sized, 0, end)
        return got

    def _native_cuts(self, cutter: Any) -> Iterator[list[tuple[Any, int, list[Any]]]]:
        """The batches `cutter` closes over each record batch (a list per CUT_ROWS
        rows of it, handed on at once), then its last one.

        A record batch without misfits goes straight from its Arrow buffers into
        the batches (`BatchCutter.take_arrow_sized`: each cell written once, the
        row's size measured as it is written); one with a misfit is written as a
        block first, and taken around the misfit rows, which become rejects of the
        batch open at their place.
        """
        header = self.header
        for offset, batch in self._record_batches():
            n = batch.num_rows
            end = min(n, self._cut_rows)
            try:  # the first take checks the whole record batch before taking a row
                columns, bad_at, sizes, sized = self._plan(batch, True)
                closed = self._first_take(cutter, batch, offset, columns, sized, end)
            except ValueError:  # a date or decimal the core leaves to Arrow's cast
                columns, bad_at, sizes, sized = self._plan(batch, False)
                closed = self._first_take(cutter, batch, offset, columns, sized, end)
            if sized is not None:
                while True:
                    if closed:
                        yield closed
                    if end == n:
                        break
                    start, end = end, min(n, end + self._cut_rows)
                    closed = cutter.take_arrow_sized(
                        n, offset, columns, *sized, start, end, check=False
                    )
                del batch, columns, sized  # the record batch's Arrow memory goes now
                continue
            block = _native.arrow_rows(n, offset, columns)
            closed, start = [], 0
            for i, j in sorted(bad_at.items()):
                closed += cutter.take(block, sizes, start, i)
                name = header[j]
                col = batch.column(batch.schema.get_field_index(name))
                reason = self._column_texts(name, col.slice(i, 1))[0]
                raw = _json_str_any(col[i].as_py())
                cutter.problem(Reject(offset + i, name, raw, str(reason), tuple(block[i][1])))
                start = i + 1
            yield closed + cutter.take(block, sizes, start, n)
        if (last := cutter.flush()) is not None:
            yield [last]

    def read_batches(self, batcher: Batcher) -> Iterator[Batch]:
        """The batches `batcher` cuts from the rows: cells written and batches cut in C.

        `read_batches_python` is the definition (tests hold the two equal); this is
        it with each record batch's cells written by `_native` straight into the
        batches `_native.BatchCutter` cuts.  (Cutting a record batch ahead on a helper
        thread was tried: whole runs took more CPU, not less -- one more thread
        contending for the GIL with the batch threads.)
        """
        if not self.header or getattr(_native, "arrow_rows", None) is None:
            yield from self.read_batches_python(batcher)
            return
        cutter = _native.BatchCutter(len(self.header), *batcher.limits)
        for closed in self._native_cuts(cutter):
            for got in closed:
                yield batcher.adopt_cut(got)

    def read_batches_python(self, batcher: Batcher) -> Iterator[Batch]:
        """The batches `batcher.add` would cut from the rows, cut a record batch at a time.

        The same rule as `Batcher.add` (a batch closes at MaxItemsPerBatch, or when
        one more item would push it over MaxInputBytesPerBatch; an item too big
        for any batch, or a misfit, is a reject of the batch then open), run over
        the sizes alone; the rows join their batch as slices, not one by one.
        `tests/test_input_formats.py` holds it equal to `Batcher.add`.
        """
        max_items, max_bytes, base = batcher.limits
        cur: list[tuple[int, Any]] = []
        cur_bytes = base
        refused: list[Reject] = []

        def emit() -> Batch:
            nonlocal cur, cur_bytes, refused
            batch = batcher.adopt(cur, cur_bytes, [])
            batch.rejects.extend(refused)
            cur, cur_bytes, refused = [], base, []
            return batch

        for offset, rows, sizes, bad in self._blocks():
            pairs = list(zip(range(offset, offset + len(rows)), rows, strict=True))
            start = 0  # the first pair not yet in `cur`
            for i, size in enumerate(sizes):
                if (bad and i in bad) or base + size > max_bytes:
                    cur.extend(pairs[start:i])
                    start = i + 1
                    if bad and i in bad:
                        r = bad[i]
                        refused.append(
                            Reject(r.line, r.column, r.value, r.error or "", tuple(r.fields))
                        )
                    else:
                        refused.append(batcher.oversize(offset + i, rows[i], size))
                    continue
                held = len(cur) + i - start
                if held and ((max_items and held >= max_items) or cur_bytes + 1 + size > max_bytes):
                    cur.extend(pairs[start:i])
                    start = i
                    yield emit()
                    held = 0
                cur_bytes += size + (1 if held else 0)
            cur.extend(pairs[start:])
        if cur or refused:
            yield emit()


def _same_buffers(column: tuple[Any, ...], sized: tuple[Any, ...]) -> bool:
    """Whether a cell column and a sized column (`arrow_rows`' and `arrow_sizes`'
    tuples) read the same values the same way: mode, width, offset and buffers."""
    if column[0] != sized[0] or column[1] != sized[1] or column[5] != sized[5]:
        return False
    return all(
        (a is None and b is None) or (a is not None and b is not None and a.address == b.address)
        for a, b in zip(column[2:5], sized[2:5], strict=True)
    )


def _one_line(exc: BaseException) -> str:
    """pyarrow's message on one line (its thrift errors end lines with newlines)."""
    return " ".join(str(exc).split())


def _plain(value: Any) -> Any:
    """A pyarrow Python value in the JSON shapes `value_text` knows."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if value and all(isinstance(p, tuple) and len(p) == 2 for p in value):
            return {str(k): _plain(v) for k, v in value}  # a Parquet map
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if type(value) is float or type(value) is int or type(value) is bool or value is None:
        return value
    from decimal import Decimal

    if isinstance(value, Decimal):
        return Num(str(value))
    return str(value)


def _json_str(text: str) -> bytes:
    import json

    return json.dumps(text, ensure_ascii=False).encode("utf-8")


def _json_str_any(value: Any) -> str:
    import json

    plain = _plain(value)
    if isinstance(plain, dict | list):
        return dump_json(plain)
    return json.dumps(plain, ensure_ascii=False)
