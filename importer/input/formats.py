"""Which ItemReader InputType a source is, and the reader that reads it.

The type comes from `--input-type`, else the spec's `[input] type`, else the
file's name: `.csv` (and anything unknown: CSV stays the default), `.json`,
`.jsonl`/`.ndjson`, `.parquet`/`.pq`, and a manifest by its name
(`manifest.json` of an S3 Inventory, `…-manifest.csv` / `.manifest` of Athena),
each optionally `.gz`/`.zst`/`.zstd` (not Parquet, which compresses itself).

Every reader offers the driver what the CSV reader does: `header`, rows with
`line`, `fields` and `error` in file order, `padded`/`truncated`; typed readers
add each row's `size` (the item's JSON, which ItemBatcher counts) and the
`column`/`value` of a misfit.

MANIFEST (AWS Step Functions developer guide, "ItemReader (Map)"):

* `ATHENA_DATA`: the manifest Athena's UNLOAD writes, one `s3://` URI per line;
  each object holds data of `[input] data_type` (CSV -- header GIVEN in
  `[csv] headers`, as UNLOAD writes none --, JSONL or PARQUET).
* `S3_INVENTORY`: an inventory's `manifest.json`; its `files` are gzip CSV
  objects without a header, in `destinationBucket`, with the columns of
  `fileSchema`: each row (one listed S3 object) is an item.

The objects are read one after another, in the manifest's order, streaming as
a single file would; a listed object that is missing stops the run with one
line naming it.  Positions continue across objects (an object's first
position follows the previous object's last), so every row of the run has its
own position (and request id); rejects read by the reader name the object.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from importer.input.batching import Batch, Batcher, item_json_size
from importer.input.items import ItemRow
from importer.input.json_array import JsonArrayReader
from importer.input.jsonl import JsonlReader
from importer.input.options import INPUT_TYPES, CsvOptions, InputOptions, header_row_problem
from importer.input.reader import RowReader
from importer.input.source import (
    GZIP_SUFFIXES,
    ZSTD_SUFFIXES,
    CsvReader,
    SourceError,
    SourceStream,
    open_source,
)
from importer.records import Reject

__all__ = [
    "ManifestReader",
    "input_type_for",
    "manifest_objects",
    "open_typed_reader",
]

_BY_SUFFIX = {
    ".json": "JSON",
    ".jsonl": "JSONL",
    ".ndjson": "JSONL",
    ".parquet": "PARQUET",
    ".pq": "PARQUET",
    ".csv": "CSV",
    ".tsv": "CSV",
    ".txt": "CSV",
}


def input_type_for(uri: str, given: str | None = None) -> str:
    """The InputType of `uri`: `given` when set, else by its name (CSV when unknown)."""
    if given is not None:
        if given not in INPUT_TYPES:
            raise SourceError(
                f"input type {given!r} is not an ItemReader InputType "
                f"(one of: {', '.join(INPUT_TYPES)})"
            )
        return given
    name = uri.rsplit("/", 1)[-1].lower()
    for ext in (*GZIP_SUFFIXES, *ZSTD_SUFFIXES):
        if name.endswith(ext):
            name = name[: -len(ext)]
    if name == "manifest.json" or name.endswith(("-manifest.csv", ".manifest")):
        return "MANIFEST"
    dot = name.rfind(".")
    return _BY_SUFFIX.get(name[dot:], "CSV") if dot >= 0 else "CSV"


#: "256MB is the maximum row-group size, and 5MB is the maximum footer size. If you provide
#: input files that exceed either limit, your state machine will return a runtime error"
#: (AWS Step Functions developer guide, "ItemReader (Map)", Parquet files; MB taken as MiB,
#: a row group's size as its column chunks' bytes in the file)
MAX_PARQUET_ROW_GROUP_BYTES = 256 * 1024**2
MAX_PARQUET_FOOTER_BYTES = 5 * 1024**2


def parquet_limits_problem(uri: str, metadata: Any) -> str | None:
    """The one line refusing a Parquet file ItemReader would fail on, or None.

    `metadata`: the file's footer (pyarrow's `FileMetaData`); only it is read, so a
    file over a limit stops before any row is written, as the Map run would.
    """
    footer = int(getattr(metadata, "serialized_size", 0) or 0)
    if footer > MAX_PARQUET_FOOTER_BYTES:
        return (
            f"{uri}: the Parquet footer is {footer:,} bytes, over the 5 MB Step Functions' "
            "ItemReader reads"
        )
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        size = sum(group.column(j).total_compressed_size for j in range(group.num_columns))
        if size > MAX_PARQUET_ROW_GROUP_BYTES:
            return (
                f"{uri}: Parquet row group {i} is {size:,} bytes, over the 256 MB "
                "Step Functions' ItemReader reads (write smaller row groups)"
            )
    return None


def _check_parquet(uri: str, reader: Any) -> None:
    metadata = getattr(getattr(reader, "_file", None), "metadata", None)
    if metadata is not None and (problem := parquet_limits_problem(uri, metadata)) is not None:
        reader.close()
        raise SourceError(problem)


def open_typed_reader(
    kind: str,
    uri: str,
    header: Sequence[str],
    kinds: Sequence[str],
    *,
    s3_client: Any = None,
    stream: SourceStream | None = None,
) -> Any:
    """A JSON, JSONL or Parquet reader for the spec's `header` (typed by `kinds`)."""
    if kind == "PARQUET":
        from importer.input.parquet import ParquetReader

        reader = ParquetReader(uri, header, kinds, s3_client=s3_client)
        _check_parquet(uri, reader)
        return reader
    if stream is None:
        stream = open_source(uri, s3_client=s3_client)
    if kind == "JSONL":
        return JsonlReader(stream.raw, header, kinds)
    if kind == "JSON":
        return JsonArrayReader(stream.raw, header, kinds, name=uri)
    raise SourceError(f"{uri}: no typed reader for input type {kind}")


def _read_all(uri: str, s3_client: Any, limit: int = 64 << 20) -> bytes:
    stream = open_source(uri, s3_client=s3_client)
    try:
        data = stream.raw.read(limit + 1)
    except Exception as exc:  # noqa: BLE001 - a manifest that cannot be read is one line
        raise SourceError(f"{uri}: cannot read manifest ({exc})") from None
    finally:
        stream.close()
    if len(data) > limit:
        raise SourceError(f"{uri}: manifest is over {limit >> 20} MB")
    return data


def _bucket_of(arn_or_name: str) -> str:
    return arn_or_name.rsplit(":", 1)[-1] if arn_or_name.startswith("arn:") else arn_or_name


def manifest_objects(
    uri: str, options: InputOptions, *, s3_client: Any = None
) -> tuple[list[str], str, tuple[str, ...] | None]:
    """(object URIs, their InputType, the CSV header they carry or None) of a manifest."""
    data = _read_all(uri, s3_client)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"{uri}: manifest is not UTF-8 text") from None
    if options.manifest_type == "S3_INVENTORY":
        try:
            doc = json.loads(text)
            bucket = _bucket_of(doc["destinationBucket"])
            schema = tuple(s.strip() for s in doc["fileSchema"].split(","))
            files = [f["key"] for f in doc["files"]]
            fmt = doc.get("fileFormat", "CSV")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SourceError(
                f"{uri}: not an S3 Inventory manifest.json (destinationBucket, fileSchema, "
                f"files[].key): {exc}"
            ) from None
        if (too_long := header_row_problem(schema)) is not None:
            raise SourceError(f"{uri}: inventory fileSchema: {too_long}")
        if str(fmt).upper() != "CSV":
            raise SourceError(
                f"{uri}: inventory fileFormat {fmt} is not read here (CSV inventories only)"
            )
        return [f"s3://{bucket}/{k}" for k in files], "CSV", schema
    uris = [ln.strip() for ln in text.splitlines() if ln.strip()]
    bad = next((u for u in uris if not u.startswith("s3://")), None)
    if bad is not None and uri.startswith("s3://"):
        raise SourceError(f"{uri}: an Athena manifest lists s3:// URIs, one a line; got {bad!r}")
    if options.data_type is None:
        raise SourceError(
            f"{uri}: an Athena data manifest needs the type of the objects it lists: "
            "[input] data_type = CSV | JSONL | PARQUET"
        )
    return uris, options.data_type, None


class ManifestReader(RowReader):
    """The rows of every object a manifest lists, one object after another."""

    input_type = "MANIFEST"
    position = "position"
    #: summed over the objects read so far
    padded = 0
    truncated = 0

    def __init__(
        self,
        uri: str,
        options: InputOptions,
        csv_options: CsvOptions,
        header: Sequence[str],
        kinds: Sequence[str],
        *,
        s3_client: Any = None,
        open_csv: Any = None,
        size_of: Callable[[Sequence[str], Sequence[str]], int] = item_json_size,
    ) -> None:
        self.objects, self.data_type, schema = manifest_objects(uri, options, s3_client=s3_client)
        if self.data_type == "CSV":
            if schema is not None:
                csv_options = replace(csv_options, header_location="GIVEN", headers=schema)
            elif csv_options.header_location != "GIVEN":
                raise SourceError(
                    f"{uri}: Athena writes CSV without a header row: set [csv] header = "
                    '"GIVEN" and headers = [...] (ItemReader CSVHeaders)'
                )
            self.header = list(csv_options.headers or ())
        else:
            self.header = list(header)
        self._csv = csv_options
        self._spec_header = list(header)
        self._kinds = list(kinds)
        self._s3 = s3_client
        self._open_csv = open_csv or CsvReader
        #: objects read to their end (the run's summary says how many of how many)
        self.objects_done = 0
        #: objects a resume did not read again (their batches were all finished)
        self.objects_skipped = 0
        self._size_of = size_of
        #: called with each object's record once it is read to its end (`read_batches`)
        self.on_object: Callable[[dict[str, Any]], None] | None = None
        self._resume: dict[int, dict[str, Any]] = {}
        self._finished: frozenset[int] = frozenset()

    def resume_from(self, objects: dict[int, dict[str, Any]], finished: Iterable[int]) -> None:
        """Skip the objects whose records (`on_object`'s, from the run being resumed) show
        every batch holding their rows among `finished`: not opened, not read (no GET)."""
        self._resume = dict(objects)
        self._finished = frozenset(finished)

    def _skippable(self, k: int, obj: str, state: dict[str, int]) -> dict[str, Any] | None:
        """The record of object `k` when it need not be read again, else None."""
        rec = self._resume.get(k)
        if rec is None or rec.get("uri") != obj:
            return None  # not read to its end then, or the manifest changed: read it
        if rec["start"] != state or rec["from"] != self._next:
            return None  # the cut stands elsewhere than it did then: read it
        end = rec["end"]
        last = end["batch"] if end["rows"] or end["rejects"] else end["batch"] - 1
        if all(i in self._finished for i in range(state["batch"], last + 1)):
            return rec
        return None

    def _reader(self, obj: str) -> tuple[RowReader, SourceStream | None]:
        if self.data_type == "PARQUET":
            return open_typed_reader(
                "PARQUET", obj, self._spec_header, self._kinds, s3_client=self._s3
            ), None
        try:
            stream = open_source(obj, s3_client=self._s3)
        except SourceError as exc:
            raise SourceError(f"manifest lists an object that cannot be read: {exc}") from None
        if self.data_type == "CSV":
            return self._open_csv(stream.raw, self._csv), stream
        return JsonlReader(stream.raw, self._spec_header, self._kinds), stream

    def _open(self, obj: str) -> tuple[RowReader, SourceStream | None]:
        try:
            return self._reader(obj)
        except SourceError as exc:
            msg = str(exc)
            if not msg.startswith("manifest"):
                msg = f"manifest lists an object that cannot be read: {msg}"
            raise SourceError(msg) from None

    def _rows(self, obj: str, offset: int) -> Iterator[Any]:
        """The rows of one object at their run-wide positions (from `offset`); after the
        last one, `self._next` is the next object's first position."""
        reader, stream = self._open(obj)
        if self.first_keys is None:
            self.first_keys = list(reader.first_keys or reader.header)
        last = offset
        try:
            for row in reader:
                last = offset + row.line
                row = _moved(row, last, obj)
                yield row
        finally:
            reader.close()
            if stream is not None:
                stream.close()
        self.padded += reader.padded
        self.truncated += reader.truncated
        self.objects_done += 1
        self._next = last + 1

    def __iter__(self) -> Iterator[Any]:
        self._next = 0
        for obj in self.objects:
            yield from self._rows(obj, self._next)

    def read_batches(self, batcher: Batcher) -> Iterator[Batch]:
        """The batches `batcher` cuts from every object's rows, as `Batcher.cut` cuts them.

        Why here and not in the run's loop: at each object's end the cut's state
        (`Batcher.state`) is recorded (`on_object`, into the checkpoint), and a
        resume skips an object whose batches were all finished without reading it,
        standing where its end left the cut (`resume_from`).
        """
        size_of, header = self._size_of, self.header
        add, reject = batcher.add, batcher.reject
        self._next = 0
        for k, obj in enumerate(self.objects):
            start = batcher.state()
            rec = self._skippable(k, obj, start) if self._resume else None
            if rec is not None:
                batcher.restore(rec["end"])
                self._next = rec["next"]
                self.padded += rec.get("padded", 0)
                self.truncated += rec.get("truncated", 0)
                if self.first_keys is None and rec.get("first_keys") is not None:
                    self.first_keys = list(rec["first_keys"])
                self.objects_done += 1
                self.objects_skipped += 1
                continue
            first = self._next
            padded, truncated = self.padded, self.truncated
            keys_before = self.first_keys
            for row in self._rows(obj, self._next):
                if row.error is not None:
                    reject(Reject(row.line, row.column, row.value, row.error, tuple(row.fields)))
                    continue
                closed = add(row.line, row.fields, row.size or size_of(header, row.fields))
                if closed is not None:
                    yield closed
            if self.on_object is not None:
                self.on_object(
                    {
                        "object": k,
                        "uri": obj,
                        "from": first,
                        "start": start,
                        "end": batcher.state(),
                        "next": self._next,
                        "padded": self.padded - padded,
                        "truncated": self.truncated - truncated,
                        "first_keys": self.first_keys if keys_before is None else None,
                    }
                )
        last = batcher.flush()
        if last is not None:
            yield last


def _moved(row: Any, line: int, obj: str) -> Any:
    """The row at its run-wide position; a reader's own reject names its object."""
    error = row.error
    if error is not None:
        error = f"{obj}: {error}"
    if isinstance(row, ItemRow):
        row.line, row.error = line, error
        return row
    return type(row)(line, row.fields, error)
