"""JSON, JSON Lines, Parquet and manifests: the same products, the same records as CSV.

The products of the CSV benchmark file (`importer.cli.bench.generate_csv`, with its
bad rows) converted to each type (`tests/support/formats_data.py`), imported with the same
spec: the command records are byte-identical to the CSV import's but for the
position in `requestId` (`{run}#{position}`: a CSV line counts the header, a JSONL
line does not, a JSON index and a Parquet row count from 0), and the rejects carry
the same reasons.  Then the ItemReader rules one by one, and bad input per type.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path
from unittest import mock

import pytest

from importer.cli.bench import BENCH_SPEC, generate_csv
from importer.input.batching import Batcher, item_json_size
from importer.input.formats import input_type_for
from importer.input.items import ItemMapper, loads_item
from importer.input.json_array import JsonArrayReader
from importer.input.jsonl import JsonlReader
from importer.input.source import SourceError
from importer.records import Reject
from importer.run.driver import RunConfig, run_import
from importer.run.pipeline import PipelineSettings, open_pipeline
from importer.transform.context import RunContext
from importer.transform.spec import SpecError, parse_spec
from tests.support.formats_data import (
    jsonl_lines,
    typed_items,
    write_json,
    write_jsonl,
    write_parquet,
)

SPEC = parse_spec(BENCH_SPEC)
KINDS = {name: rule.type for name, rule in ((r.name, r) for r in SPEC.columns)}
ROWS = 3000
CTX = RunContext(run_id="fmt", timestamp="2024-01-01T00:00:00+00:00", source="import-csv:fmt")


class _Capture:
    """Records every item's wire bytes as the writer receives them."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.wires: list[bytes] = []

    def write_batch(self, items):
        self.wires.extend(bytes(it.wire) for it in items)
        return self.inner.write_batch(items)

    def close(self) -> None:
        self.inner.close()


def _import(source: Path, tmp_path: Path, **config) -> tuple[dict, list[bytes], list[list[str]]]:
    settings = PipelineSettings(spec=SPEC, mode="blind", dry_run=True, workers=2)
    rejects = tmp_path / f"{source.name}.rejects.csv"
    with open_pipeline(settings) as pipeline:
        capture = _Capture(pipeline.writer)
        pipeline.writer = capture
        cfg = RunConfig(
            source=str(source),
            batch_items=config.pop("batch_items", 100),
            run_id="fmt",
            rejects_path=rejects,
            **config,
        )
        # one clock for every import, so records differ only where the input does
        with mock.patch.object(RunContext, "new", return_value=CTX):
            summary = run_import(cfg, pipeline=pipeline).to_json()
    import csv

    rows = list(csv.reader(rejects.open(encoding="utf-8"))) if rejects.exists() else []
    return summary, capture.wires, rows


_REQ = re.compile(rb'"requestId":\{"S":"fmt#(\d+)"\}')


def _by_position(wires: list[bytes], first: int) -> dict[int, bytes]:
    """Records by their 0-based item number, requestId's position written as that number."""
    out = {}
    for wire in wires:
        m = _REQ.search(wire)
        assert m is not None, wire[:200]
        n = int(m.group(1)) - first
        out[n] = _REQ.sub(b'"requestId":{"S":"fmt#%d"}' % n, wire)
    return out


@pytest.fixture(scope="module")
def products(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("formats")
    data = generate_csv(ROWS)
    csv_path = base / "products.csv"
    csv_path.write_bytes(data)
    return {
        "CSV": csv_path,
        "JSONL": write_jsonl(base / "products.jsonl", data, KINDS),
        "JSON": write_json(base / "products.json", data, KINDS),
        "PARQUET": write_parquet(base / "products.parquet", data, KINDS, row_group=700),
        "JSONL.gz": _gz(write_jsonl(base / "gz.jsonl", data, KINDS)),
    }


def _gz(path: Path) -> Path:
    out = path.with_name(path.name + ".gz")
    out.write_bytes(gzip.compress(path.read_bytes()))
    return out


#: the 0-based item number of each format's first position
FIRST = {"CSV": 2, "JSONL": 1, "JSONL.gz": 1, "JSON": 0, "PARQUET": 0}


@pytest.mark.parametrize("kind", ["JSONL", "JSON", "PARQUET", "JSONL.gz"])
def test_each_type_writes_the_csv_import_s_records_byte_for_byte(products, tmp_path, kind):
    base_summary, base_wires, base_rejects = _import(products["CSV"], tmp_path)
    summary, wires, rejects = _import(products[kind], tmp_path)
    assert summary["input_type"] == kind.split(".")[0]
    for key in ("rows", "would_write", "rejected", "batches", "bad_data"):
        assert summary[key] == base_summary[key], key
    assert base_summary["rejected"] > 0  # the fixture's bad rows are in every format
    assert _by_position(wires, FIRST[kind]) == _by_position(base_wires, FIRST["CSV"])
    # the same rejects: column, value and reason at the same item (the row's fields
    # follow as each file holds them: a boolean's `0` is `false` in the typed files)
    shift = FIRST["CSV"] - FIRST[kind]
    assert [[int(r[0]) + shift, *r[1:4]] for r in rejects[1:]] == [
        [int(r[0]), *r[1:4]] for r in base_rejects[1:]
    ]


def test_the_lambda_child_writes_the_same_records_from_typed_items(products, ddb_table):
    import boto3

    from importer.aws.handler import handle_event
    from importer.dynamodb.client import Boto3DynamoClient
    from tests.conftest import scan_all

    data = generate_csv(60)
    header_rows = [line.split(",") for line in data.decode().splitlines()[:1]]
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(data.decode())))
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="cfg")
    s3.put_object(Bucket="cfg", Key="spec.json", Body=json.dumps(BENCH_SPEC).encode())
    client = Boto3DynamoClient(region="us-east-1", workers=2)

    def event(items, name):
        return {
            "Items": items,
            "BatchInput": {
                "Attributes": {"table": ddb_table, "spec": "s3://cfg/spec.json", "mode": "blind"},
                "ExecutionName": name,
                "StartTime": "2026-11-25T10:00:00Z",
            },
        }

    def records():
        return {
            key: {k: v for k, v in i.items() if k != "requestId"}
            for key, i in scan_all(ddb_table).items()
        }

    assert header_rows
    csv_out = handle_event(event(rows, "run"), client=client, s3_client=s3, writer="boto3")
    from_csv = records()
    typed = typed_items(data, KINDS)
    assert any(type(v) is not str for v in typed[0].values())
    out = handle_event(event(typed, "run"), client=client, s3_client=s3, writer="boto3")
    assert {k: out[k] for k in ("rows", "written", "rejected")} == {
        k: csv_out[k] for k in ("rows", "written", "rejected")
    }
    assert out["rejected"] == 1  # the fixture's bad row (qty -3), in both
    assert records() == from_csv


# ---------------------------------------------------------------------------
# the ItemReader rules, one per test
# ---------------------------------------------------------------------------


def test_input_type_comes_from_the_name_unless_given():
    assert input_type_for("s3://b/k/data.jsonl.gz") == "JSONL"
    assert input_type_for("x.ndjson") == "JSONL"
    assert input_type_for("x.json") == "JSON"
    assert input_type_for("x.parquet") == "PARQUET"
    assert input_type_for("inv/manifest.json") == "MANIFEST"
    assert input_type_for("q-manifest.csv") == "MANIFEST"
    assert input_type_for("x.csv.zst") == "CSV"
    assert input_type_for("x.dat") == "CSV"  # unknown: CSV, as before
    assert input_type_for("x.csv", "JSONL") == "JSONL"
    with pytest.raises(SourceError, match="not an ItemReader InputType"):
        input_type_for("x.csv", "XML")


def test_the_spec_input_section_is_checked():
    doc = dict(BENCH_SPEC, input={"type": "PARQUET", "max_items": 5})
    spec = parse_spec(doc)
    assert spec.input.type == "PARQUET" and spec.input.max_items == 5
    with pytest.raises(SpecError, match="input.type: 'XML'"):
        parse_spec(dict(BENCH_SPEC, input={"type": "XML"}))
    with pytest.raises(SpecError, match="input.max_items"):
        parse_spec(dict(BENCH_SPEC, input={"max_items": 0}))
    with pytest.raises(SpecError, match="unknown key 'format'"):
        parse_spec(dict(BENCH_SPEC, input={"format": "x"}))


def _rows(reader):
    return list(reader)


def _jsonl(text: str) -> JsonlReader:
    import io

    return JsonlReader(io.BytesIO(text.encode()), SPEC.needed_columns, SPEC.kinds)


def test_jsonl_each_line_is_an_item_positioned_by_its_line_blank_lines_skipped():
    rows = _rows(_jsonl('{"sku":"A","name":"a"}\n\n{"sku":"B","name":"b"}\n'))
    assert [(r.line, r.fields[0]) for r in rows] == [(1, "A"), (3, "B")]


def test_typed_values_map_onto_the_spec_types_numbers_as_written():
    mapper = ItemMapper(SPEC.needed_columns, SPEC.kinds)
    item, size = loads_item(
        '{"sku":"A","name":"n","qty":7,"price":1.50,"weight":2e1,"active":true,"released":null}'
    )
    row = mapper.row(1, item, size)
    fields = dict(zip(mapper.header, row.fields, strict=True))
    assert row.error is None
    assert fields["qty"] == "7" and fields["price"] == "1.50" and fields["weight"] == "2e1"
    assert fields["active"] == "true" and fields["released"] == ""
    assert size == len(
        '{"sku":"A","name":"n","qty":7,"price":1.50,"weight":2e1,"active":true,"released":null}'
    )


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("qty", "true", "expected integer, got a boolean"),
        ("sku", "5", "expected string, got a number"),
        ("active", "1", "expected boolean, got a number"),
        ("released", "20240101", "expected date, got a number"),
        ("name", '{"a":1}', "expected string, got an object"),
        ("price", "[1]", "expected decimal, got an array"),
    ],
)
def test_a_value_whose_type_does_not_fit_is_a_reject_with_its_position(column, value, reason):
    line = '{"sku":"A","name":"n","' + column + '":' + value + "}"
    doc = json.loads(line)
    doc.setdefault("name", "n")
    (row,) = _rows(_jsonl("\n\n" + json.dumps(doc) + "\n"))
    assert (row.line, row.column, row.error) == (3, column, reason)


def test_strings_follow_the_csv_text_rules_in_any_column():
    (row,) = _rows(_jsonl('{"sku":"A","name":"n","qty":" 12 ","active":"yes"}\n'))
    fields = dict(zip(SPEC.needed_columns, row.fields, strict=True))
    assert row.error is None and fields["qty"] == " 12 " and fields["active"] == "yes"


def test_jsonl_a_line_that_is_not_an_object_or_not_json_is_a_reject_of_that_line():
    rows = _rows(_jsonl('[1,2]\n{"sku":"A","name":"n"}\n{oops\n"text"\n'))
    assert [(r.line, r.error) for r in rows if r.error] == [
        (1, "not a JSON object: an array"),
        (3, "not valid JSON: Expecting property name enclosed in double quotes"),
        (4, "not a JSON object: a string"),
    ]


def _array(text: str, chunk: int = 7) -> JsonArrayReader:
    import io

    return JsonArrayReader(
        io.BytesIO(text.encode()), SPEC.needed_columns, SPEC.kinds, name="a.json", chunk_bytes=chunk
    )


def test_json_array_elements_are_items_indexed_from_zero_read_in_small_blocks():
    text = json.dumps([{"sku": f"S{i}", "name": "ü" * i, "price": 1.25} for i in range(40)])
    rows = _rows(_array(text, chunk=5))
    assert [r.line for r in rows] == list(range(40))
    assert [r.fields[0] for r in rows] == [f"S{i}" for i in range(40)]
    assert all(r.fields[6] == "1.25" for r in rows)
    item = json.loads(text)[3]
    assert rows[3].size == len(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode())


def test_a_json_array_that_is_really_an_object_stops_with_one_line():
    with pytest.raises(SourceError, match=r"a.json: is a JSON object, not a JSON array"):
        _rows(_array('{"items": []}'))


def test_a_truncated_json_array_names_the_index_where_it_broke():
    with pytest.raises(SourceError, match=r"invalid JSON at array index 1"):
        _rows(_array('[{"sku":"A","name":"a"}, {"sku":"B", "na'))


def test_json_array_elements_that_are_not_objects_are_rejects():
    rows = _rows(_array('[{"sku":"A","name":"a"}, 3, [1]]'))
    assert [(r.line, r.error) for r in rows] == [
        (0, None),
        (1, "not a JSON object: a number"),
        (2, "not a JSON object: an array"),
    ]


def test_item_batcher_counts_a_typed_item_as_the_json_the_child_receives():
    """Batches close on the item's own JSON (numbers as written), not its CSV strings."""
    lines = [json.dumps({"sku": f"S{i}", "name": "n", "qty": 10**i}) for i in range(6)]
    rows = _rows(_jsonl("\n".join(lines)))
    assert [r.size for r in rows] == [len(line.replace(" ", "")) for line in lines]
    base = len(json.dumps({"Items": [], "BatchInput": {}}, separators=(",", ":")))
    limit = base + rows[0].size + 1 + rows[1].size  # exactly two items fit
    batcher = Batcher(max_items=None, max_bytes=limit, batch_input={})
    closed = [b for r in rows if (b := batcher.add(r.line, r.fields, r.size)) is not None]
    assert [len(b.rows) for b in closed] == [2, 1, 1, 1]
    # as text the qty would be quoted: two bytes more per item than the typed item
    as_text = item_json_size(SPEC.needed_columns[:1] + ("name", "qty"), ["S0", "n", "1"])
    assert as_text == rows[0].size + 2


def test_parquet_rows_are_items_positioned_by_row_across_row_groups(products, tmp_path):
    from importer.input.parquet import ParquetReader

    reader = ParquetReader(
        str(products["PARQUET"]), SPEC.needed_columns, SPEC.kinds, batch_rows=256
    )
    assert reader._file.num_row_groups > 1
    rows = list(reader)
    assert [r.line for r in rows] == list(range(ROWS))
    # a row's size is its JSON as the child receives it (typed values, decimals at scale)
    first = jsonl_lines(products["CSV"].read_bytes(), KINDS)[0]
    assert rows[0].size == len(first.encode())


def test_parquet_is_read_alike_through_pyarrow_parquet_when_its_own_reader_is_absent(
    products, monkeypatch
):
    """The reader opens files with pyarrow's own Parquet reader (`pyarrow._parquet`: no
    filesystems imported); a pyarrow without it falls back to `ParquetFile`, same rows."""
    import sys

    from importer.input import parquet

    def rows() -> list[tuple[int, list[str], int]]:
        reader = parquet.ParquetReader(
            str(products["PARQUET"]), SPEC.needed_columns, SPEC.kinds, batch_rows=700
        )
        batcher = Batcher(max_items=250, max_bytes=262_144, batch_input={})
        batches = reader.read_batches(batcher)
        return [(line, list(f), b.index) for b in batches for line, f in b.rows]

    direct = rows()
    monkeypatch.setitem(sys.modules, "pyarrow._parquet", None)  # import fails as if absent
    assert isinstance(parquet._open_file(str(products["PARQUET"])), parquet._PublicFile)
    assert rows() == direct and len(direct) == ROWS


def test_parquet_type_misfit_rejects_each_row_holding_a_value(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from importer.input.parquet import ParquetReader

    path = tmp_path / "bad.parquet"
    table = pa.table(
        {"sku": ["A", "B"], "name": ["a", "b"], "qty": pa.array([1.5, None]), "active": [1, 0]}
    )
    pq.write_table(table, path)
    rows = list(ParquetReader(str(path), SPEC.needed_columns, SPEC.kinds))
    assert rows[0].error == "expected boolean, got a number (Parquet int64)"
    assert (rows[0].line, rows[0].column, rows[0].value) == (0, "active", "1")
    assert rows[1].column == "active"
    # qty as a double: a number fits an integer column; the integer rule judges its text
    assert rows[0].fields[2] == "1.5"


def test_a_truncated_parquet_file_stops_with_one_line(products, tmp_path):
    cut = tmp_path / "cut.parquet"
    data = products["PARQUET"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"cut.parquet: not a readable Parquet file"):
        _import(cut, tmp_path)


@pytest.mark.parametrize("suffix", [".gz", ".zst", ".zstd", ".ZSTD"])
def test_a_compressed_parquet_file_is_refused_as_itemreader_refuses_it(products, tmp_path, suffix):
    import zstandard

    raw = products["PARQUET"].read_bytes()
    wrapped = tmp_path / f"p.parquet{suffix}"
    packed = gzip.compress(raw) if suffix == ".gz" else zstandard.ZstdCompressor().compress(raw)
    wrapped.write_bytes(packed)
    with pytest.raises(SourceError, match="compresses its own pages"):
        _import(wrapped, tmp_path)


def test_a_parquet_schema_without_a_spec_column_stops_before_any_write(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "few.parquet"
    pq.write_table(pa.table({"sku": ["A"]}), path)
    with pytest.raises(SourceError, match="Parquet schema"):
        _import(path, tmp_path)


def test_max_items_reads_no_more_items(products, tmp_path):
    summary, wires, _ = _import(products["JSONL"], tmp_path, max_items=250)
    assert summary["rows"] == 250
    assert max(_by_position(wires, 1)) < 250


# ---------------------------------------------------------------------------
# manifests
# ---------------------------------------------------------------------------


def test_an_athena_manifest_imports_its_objects_in_order(products, tmp_path, monkeypatch):
    data = products["CSV"].read_bytes()
    lines = jsonl_lines(data, KINDS)
    parts = []
    for n, chunk in enumerate((lines[:1000], lines[1000:2500], lines[2500:])):
        p = tmp_path / f"part{n}.jsonl"
        p.write_text("\n".join(chunk) + "\n")
        parts.append(p)
    manifest = tmp_path / "q-manifest.csv"
    manifest.write_text("".join(f"{p}\n" for p in parts))
    spec = parse_spec(dict(BENCH_SPEC, input={"data_type": "JSONL"}))
    monkeypatch.setattr(f"{__name__}.SPEC", spec)
    summary, wires, _ = _import(manifest, tmp_path)
    base_summary, base_wires, _ = _import(products["JSONL"], tmp_path)
    assert summary["input_type"] == "MANIFEST"
    assert summary["rows"] == base_summary["rows"] == ROWS
    assert summary["would_write"] == base_summary["would_write"]
    positions = sorted(int(_REQ.search(w).group(1)) for w in wires)
    assert len(set(positions)) == len(positions)  # every row its own request id


def test_a_manifest_naming_a_missing_object_stops_with_one_line(tmp_path, monkeypatch):
    manifest = tmp_path / "q-manifest.csv"
    manifest.write_text(f"{tmp_path / 'gone.jsonl'}\n")
    spec = parse_spec(dict(BENCH_SPEC, input={"data_type": "JSONL"}))
    monkeypatch.setattr(f"{__name__}.SPEC", spec)
    with pytest.raises(SourceError, match=r"manifest lists an object that cannot be read: .*gone"):
        _import(manifest, tmp_path)


def test_an_athena_manifest_needs_its_data_type(tmp_path):
    manifest = tmp_path / "q-manifest.csv"
    manifest.write_text("/x.jsonl\n")
    with pytest.raises(SourceError, match="data_type"):
        _import(manifest, tmp_path)


def test_an_s3_inventory_manifest_reads_its_gzip_csv_files(tmp_path):
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="inv")
        rows = "".join(f'"src","SKU-{i}","{i * 10}"\n' for i in range(5))
        s3.put_object(Bucket="inv", Key="data/a.csv.gz", Body=gzip.compress(rows.encode()))
        doc = {
            "sourceBucket": "src",
            "destinationBucket": "arn:aws:s3:::inv",
            "fileFormat": "CSV",
            "fileSchema": "Bucket, Key, Size",
            "files": [{"key": "data/a.csv.gz", "size": 1, "MD5checksum": "x"}],
        }
        s3.put_object(Bucket="inv", Key="m/manifest.json", Body=json.dumps(doc).encode())
        spec = parse_spec(
            {
                "record": {"type": "OBJ", "code": "{Key}"},
                "columns": {"Key": {"required": True}, "Size": {"type": "integer"}},
                "input": {"manifest_type": "S3_INVENTORY"},
            }
        )
        settings = PipelineSettings(spec=spec, mode="blind", dry_run=True, workers=2)
        with open_pipeline(settings) as pipeline:
            capture = _Capture(pipeline.writer)
            pipeline.writer = capture
            cfg = RunConfig(source="s3://inv/m/manifest.json")
            summary = run_import(cfg, pipeline=pipeline, s3_client=s3)
    assert summary.rows == 5 and summary.would_write == 5
    assert b'"Size":{"N":"40"}' in b"".join(capture.wires)


def test_parquet_on_s3_is_read_by_ranges(products, tmp_path):
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="lake")
        s3.put_object(Bucket="lake", Key="p.parquet", Body=products["PARQUET"].read_bytes())
        settings = PipelineSettings(spec=SPEC, mode="blind", dry_run=True, workers=2)
        with open_pipeline(settings) as pipeline:
            capture = _Capture(pipeline.writer)
            pipeline.writer = capture
            cfg = RunConfig(source="s3://lake/p.parquet", run_id="fmt")
            with mock.patch.object(RunContext, "new", return_value=CTX):
                summary = run_import(cfg, pipeline=pipeline, s3_client=s3)
    _, base_wires, _ = _import(products["PARQUET"], tmp_path)
    assert summary.rows == ROWS
    assert sorted(capture.wires) == sorted(base_wires)


@pytest.mark.parametrize("max_items", [None, 7])
def test_parquet_batches_are_cut_as_batcher_add_cuts_them(tmp_path, max_items):
    """The record-batch-at-a-time cut equals ItemBatcher's row-by-row rule (`Batcher.add`),
    oversized rows and misfits included, across record batches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from importer.input.parquet import ParquetReader

    n = 600
    names = [("x" * (i % 97)) if i % 53 else "y" * 900 for i in range(n)]
    qty = pa.array([i if i % 41 else None for i in range(n)], pa.int64())
    active = pa.array([True if i % 89 else None for i in range(n)])
    table = pa.table(
        {
            "sku": [f"S{i}" for i in range(n)],
            "name": names,
            "qty": qty,
            "active": active,
            "released": pa.array([i if i % 131 == 5 else None for i in range(n)], pa.int32()),
        }
    )
    path = tmp_path / "cut.parquet"
    pq.write_table(table, path, row_group_size=128)
    header, kinds = SPEC.needed_columns, SPEC.kinds

    def batches(reader_batches):
        return [
            (b.index, [(ln, list(f)) for ln, f in b.rows], b.input_bytes, b.rejects)
            for b in reader_batches
        ]

    rows = list(ParquetReader(str(path), header, kinds, batch_rows=100))
    # many byte limits, so that some batch ends exactly at its limit
    for max_bytes in [*range(500, 2600, 11), 262_144]:

        def batcher(limit: int = max_bytes) -> Batcher:
            return Batcher(max_items=max_items, max_bytes=limit, batch_input={"run": "x"})

        reader = ParquetReader(str(path), header, kinds, batch_rows=100)
        fast = batches(reader.read_batches(batcher()))
        slow_batcher, slow = batcher(), []
        for row in rows:
            if row.error is not None:
                slow_batcher.reject(
                    Reject(row.line, row.column, row.value, row.error, tuple(row.fields))
                )
            elif (done := slow_batcher.add(row.line, row.fields, row.size)) is not None:
                slow.append(done)
        if (last := slow_batcher.flush()) is not None:
            slow.append(last)
        assert fast == batches(slow), max_bytes
        assert sum(len(b[1]) + len(b[3]) for b in fast) == n
        assert any(b[3] for b in fast)  # misfits (and, with small limits, oversized rows)


class _Generated(io.RawIOBase):
    """A stream of `n` JSONL lines (or one JSON array of them), made as it is read."""

    def __init__(self, n: int, array: bool) -> None:
        self._lines = (
            json.dumps({"sku": f"S-{i}", "name": "n" * (i % 50), "qty": i, "price": 1.5}) + "\n"
            for i in range(n)
        )
        self._array, self._n, self._i = array, n, 0
        self._rest = b"[" if array else b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while len(self._rest) < len(buffer):
            line = next(self._lines, None)
            if line is None:
                if self._array and self._i >= 0:
                    self._rest += b"]"
                    self._i = -1
                break
            sep = b"," if self._array and self._i > 0 else b""
            self._i += 1
            self._rest += sep + line.encode()
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


@pytest.mark.parametrize("array", [False, True], ids=["JSONL", "JSON"])
def test_reading_holds_a_block_not_the_file(array):
    """Peak Python memory while reading 2k and 20k items is the same: nothing is kept."""
    import tracemalloc

    def peak(n: int) -> int:
        stream = io.BufferedReader(_Generated(n, array), 1 << 16)
        reader = (
            JsonArrayReader(stream, SPEC.needed_columns, SPEC.kinds, chunk_bytes=1 << 16)
            if array
            else JsonlReader(stream, SPEC.needed_columns, SPEC.kinds, chunk_bytes=1 << 16)
        )
        batcher = Batcher(max_items=1000, max_bytes=262_144, batch_input={})
        tracemalloc.start()
        try:
            count = sum(len(b.rows) for b in _batches(reader, batcher))
            return tracemalloc.get_traced_memory()[1], count
        finally:
            tracemalloc.stop()

    small, n_small = peak(2_000)
    large, n_large = peak(20_000)
    assert (n_small, n_large) == (2_000, 20_000)
    assert large < small * 1.3, (small, large)


def _batches(reader, batcher):
    batches = reader.read_batches(batcher)
    if batches is not None:
        yield from batches
        return
    for row in reader:
        if (done := batcher.add(row.line, row.fields, row.size)) is not None:
            yield done
    if (last := batcher.flush()) is not None:
        yield last


# ---------------------------------------------------------------------------
# what a user types and sees
# ---------------------------------------------------------------------------


def _bad_inputs(tmp_path: Path, products: dict[str, Path]) -> dict[str, tuple[Path, str]]:
    obj = tmp_path / "obj.json"
    obj.write_text('{"items": [{"sku": "A"}]}')
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(products["PARQUET"].read_bytes()[:3000])
    manifest = tmp_path / "q-manifest.csv"
    manifest.write_text(f"{tmp_path / 'gone.jsonl'}\n")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"sku": "A", "name": "a"}, {"sku": "B", "name": ')
    return {
        "json-object": (obj, "is a JSON object, not a JSON array"),
        "truncated-parquet": (cut, "not a readable Parquet file"),
        "missing-object": (manifest, "manifest lists an object that cannot be read"),
        "broken-array": (broken, "invalid JSON at array index 1"),
    }


@pytest.mark.parametrize(
    "case", ["json-object", "truncated-parquet", "missing-object", "broken-array"]
)
def test_bad_input_ends_with_one_line_and_exit_1(products, tmp_path, capsys, case):
    from importer.cli.main import main

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(dict(BENCH_SPEC, input={"data_type": "JSONL"})))
    source, expected = _bad_inputs(tmp_path, products)[case]
    code = main(["validate", str(source), "--spec", str(spec), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and expected in err[0] and err[0].startswith("importer: error: ")


def test_plan_counts_each_type_as_the_csv(products, tmp_path):
    from importer.cli.plan import plan_source

    base = plan_source(str(products["CSV"]), SPEC, engine="native")
    for kind in ("JSONL", "JSON", "PARQUET"):
        plan = plan_source(str(products[kind]), SPEC, engine="native")
        assert (plan.rows, plan.items, plan.rejected, plan.write_units) == (
            base.rows,
            base.items,
            base.rejected,
            base.write_units,
        ), kind
        # child batches are cut on the typed items: never more children than from CSV
        assert plan.map_children <= base.map_children
    limited = plan_source(str(products["JSONL"]), SPEC, engine="native", max_items=100)
    assert limited.rows == 100


class _FailAfter:
    """Writes through `inner` until `n` batches are written, then fails fatally (as an
    expired credential would): the run stops with those batches checkpointed."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.n = inner, n

    def write_batch(self, items):
        from importer.dynamodb.errors import WriterFatalError

        if self.n <= 0:
            raise WriterFatalError("credentials expired")
        self.n -= 1
        return self.inner.write_batch(items)

    def close(self) -> None:
        self.inner.close()


def test_a_manifest_import_resumes_where_it_stopped(products, tmp_path):
    """A run over a manifest of three objects stops after 4 batches; --resume sends only the
    batches not done (numbered across the objects), and the table ends as one run leaves it."""
    import boto3

    from importer.dynamodb.errors import WriterFatalError
    from tests.support.ddb_server import DdbServer

    lines = jsonl_lines(products["CSV"].read_bytes(), KINDS)[:900]
    parts = []
    for n, chunk in enumerate((lines[:250], lines[250:700], lines[700:])):
        p = tmp_path / f"part{n}.jsonl"
        p.write_text("\n".join(chunk) + "\n")
        parts.append(p)
    manifest = tmp_path / "q-manifest.csv"
    manifest.write_text("".join(f"{p}\n" for p in parts))
    spec = parse_spec(dict(BENCH_SPEC, input={"data_type": "JSONL"}))
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    with DdbServer(tables=["t-command"]) as srv:

        def run(resume: bool, fail_after: int | None) -> dict:
            settings = PipelineSettings(
                spec=spec,
                table="t-command",
                mode="blind",
                endpoint_url=srv.endpoint_url,
                workers=1,
                region="us-east-1",
                session=session,
                check_table=False,
            )
            with open_pipeline(settings) as pipeline:
                if fail_after is not None:
                    pipeline.writer = _FailAfter(pipeline.writer, fail_after)
                cfg = RunConfig(
                    source=str(manifest),
                    batch_items=100,
                    checkpoint_path=tmp_path / "cp.jsonl",
                    resume=resume,
                    rejects_path=tmp_path / "r.csv",
                )
                return run_import(cfg, pipeline=pipeline).to_json()

        with pytest.raises(WriterFatalError, match="finished batch"):
            run(False, 4)
        stored = len(srv.items("t-command"))
        assert 0 < stored < 900
        summary = run(True, None)
        items = srv.items("t-command")
    assert summary["resumed_batches"] >= 4
    assert summary["rows"] == 900 and summary["written"] + summary["rejected"] == 900
    assert len(items) == summary["written"]


_INVENTORY_SPEC = {
    "record": {"type": "OBJ", "code": "{Key}"},
    "columns": {"Key": {"required": True}, "Size": {"type": "integer"}},
    "input": {"manifest_type": "S3_INVENTORY"},
}


def _s3_inventory(s3, parts: list[int]) -> str:
    """An S3 Inventory report in moto S3 (bucket "inv"): a gzip CSV file per entry of
    `parts` listing that many objects, and its manifest.json; the manifest's URI."""
    s3.create_bucket(Bucket="inv")
    keys, first = [], 0
    for n, count in enumerate(parts):
        rows = "".join(f'"src","obj-{i:05d}","{i}"\n' for i in range(first, first + count))
        first += count
        keys.append(f"data/{n}.csv.gz")
        s3.put_object(Bucket="inv", Key=keys[-1], Body=gzip.compress(rows.encode()))
    doc = {
        "sourceBucket": "src",
        "destinationBucket": "arn:aws:s3:::inv",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size",
        "files": [{"key": k, "size": 1, "MD5checksum": "x"} for k in keys],
    }
    s3.put_object(Bucket="inv", Key="m/manifest.json", Body=json.dumps(doc).encode())
    return "s3://inv/m/manifest.json"


def test_an_s3_inventory_manifest_naming_a_missing_file_stops_with_one_line(tmp_path):
    import boto3
    from moto import mock_aws

    spec = parse_spec(_INVENTORY_SPEC)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        uri = _s3_inventory(s3, [3, 4])
        s3.delete_object(Bucket="inv", Key="data/1.csv.gz")
        settings = PipelineSettings(spec=spec, mode="blind", dry_run=True, workers=2)
        with open_pipeline(settings) as pipeline:
            cfg = RunConfig(source=uri)
            with pytest.raises(SourceError) as caught:
                run_import(cfg, pipeline=pipeline, s3_client=s3)
    message = str(caught.value)
    assert "\n" not in message
    assert "manifest lists an object that cannot be read" in message
    assert "s3://inv/data/1.csv.gz" in message


def test_an_s3_inventory_import_resumes_where_it_stopped(tmp_path):
    """A run over an S3 Inventory of three gzip CSV files stops after 4 batches; --resume
    sends only the batches not done (numbered across the files), nothing twice, nothing
    lost: the table ends holding every listed object once."""
    import boto3
    from moto import mock_aws

    from importer.dynamodb.errors import WriterFatalError
    from tests.support.ddb_server import DdbServer

    spec = parse_spec(_INVENTORY_SPEC)
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    with mock_aws(), DdbServer(tables=["t-command"]) as srv:
        s3 = boto3.client("s3", region_name="us-east-1")
        uri = _s3_inventory(s3, [250, 450, 200])

        def run(resume: bool, fail_after: int | None) -> dict:
            settings = PipelineSettings(
                spec=spec,
                table="t-command",
                mode="blind",
                endpoint_url=srv.endpoint_url,
                workers=1,
                region="us-east-1",
                session=session,
                check_table=False,
            )
            with open_pipeline(settings) as pipeline:
                if fail_after is not None:
                    pipeline.writer = _FailAfter(pipeline.writer, fail_after)
                cfg = RunConfig(
                    source=uri,
                    batch_items=100,
                    checkpoint_path=tmp_path / "cp.jsonl",
                    resume=resume,
                    rejects_path=tmp_path / "r.csv",
                )
                return run_import(cfg, pipeline=pipeline, s3_client=s3).to_json()

        with pytest.raises(WriterFatalError, match="finished batch"):
            run(False, 4)
        stored = len(srv.items("t-command"))
        assert 0 < stored < 900
        srv.reset_stats()
        summary = run(True, None)
        sent = srv.stats().get("items.BatchWriteItem", 0)
        items = srv.items("t-command")
    assert summary["resumed_batches"] * 100 == stored  # the batches done before, skipped
    assert sent == 900 - stored  # the resumed run sent only the rest, none twice
    assert summary["rows"] == 900 and summary["written"] + summary["rejected"] == 900
    assert len(items) == 900


@pytest.mark.parametrize("kind", ["JSONL", "JSON", "PARQUET"])
def test_spec_init_drafts_from_typed_samples(products, tmp_path, kind):
    """The draft takes the JSON or Parquet types as they are, and validates its sample."""
    from importer.cli.spec_draft import draft_spec

    data = generate_csv(300, bad_every=0)
    source = {
        "JSONL": lambda: write_jsonl(tmp_path / "s.jsonl", data, KINDS),
        "JSON": lambda: write_json(tmp_path / "s.json", data, KINDS),
        "PARQUET": lambda: write_parquet(tmp_path / "s.parquet", data, KINDS),
    }[kind]()
    draft = draft_spec(str(source), sample=200)
    types = {rule.name: rule.type for rule in draft.spec.columns}
    assert types["qty"] == "integer" and types["price"] == "decimal"
    assert types["active"] == "boolean"
    assert types["released"] == "date"
    assert draft.rejects == 0 and draft.sampled == 200
    spec_path = tmp_path / "draft.toml"
    spec_path.write_text(draft.text)
    from importer.transform.spec import load_spec

    settings = PipelineSettings(spec=load_spec(spec_path), mode="blind", dry_run=True, workers=2)
    with open_pipeline(settings) as pipeline:
        summary = run_import(RunConfig(source=str(source)), pipeline=pipeline)
    assert summary.rejected == 0 and summary.would_write == 300


def test_spec_init_says_when_a_key_holds_mixed_types(tmp_path):
    from importer.cli.spec_draft import draft_spec

    src = tmp_path / "m.jsonl"
    src.write_text('{"id":"A","v":1}\n{"id":"B","v":"x"}\n{"id":"C","v":true}\n')
    draft = draft_spec(str(src))
    assert "mixed JSON types (boolean, number, string)" in draft.text


def test_a_parquet_timestamp_is_the_same_instant_locally_and_in_the_child(tmp_path, ddb_table):
    """Locally pyarrow reads the timestamp; the child gets it as epoch milliseconds (the
    generated ASL tells it the InputType): both store the same date-time."""
    from datetime import UTC, datetime

    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq

    from importer.aws.handler import handle_event
    from importer.aws.statemachine import import_csv_definition
    from importer.dynamodb.client import Boto3DynamoClient
    from tests.conftest import scan_all

    doc = {
        "record": {"type": "EVT", "code": "{id}"},
        "columns": {"id": {"required": True}, "at": {"type": "datetime"}},
    }
    spec = parse_spec(doc)
    stamps = [datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC), None]
    path = tmp_path / "e.parquet"
    pq.write_table(
        pa.table({"id": ["a", "b"], "at": pa.array(stamps, pa.timestamp("ms", tz="UTC"))}), path
    )
    settings = PipelineSettings(spec=spec, mode="blind", dry_run=True, workers=2)
    with open_pipeline(settings) as pipeline:
        capture = _Capture(pipeline.writer)
        pipeline.writer = capture
        run_import(RunConfig(source=str(path)), pipeline=pipeline)
    local = [json.loads(w)["attributes"]["M"] for w in capture.wires]

    batch_input = import_csv_definition(input_type="PARQUET")["States"]["import-csv"][
        "ItemBatcher"
    ]["BatchInput"]
    assert batch_input["InputType"] == "PARQUET"
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="cfg")
    s3.put_object(Bucket="cfg", Key="e.json", Body=json.dumps(doc).encode())
    items = [{"id": "a", "at": 1699999999999 + 124}, {"id": "b", "at": None}]
    event = {
        "Items": items,
        "BatchInput": {
            "Attributes": {"table": ddb_table, "spec": "s3://cfg/e.json", "mode": "blind"},
            "ExecutionName": "x",
            "StartTime": "2026-11-25T10:00:00Z",
            "InputType": "PARQUET",
        },
    }
    client = Boto3DynamoClient(region="us-east-1", workers=2)
    handle_event(event, client=client, s3_client=s3, writer="boto3")
    stored = {k[1]: v["attributes"]["M"] for k, v in scan_all(ddb_table).items()}
    assert local[0]["at"] == {"S": "2023-11-14T22:13:20.123+00:00"} == stored["EVT#a@1"]["at"]
    assert "at" not in local[1] and "at" not in stored["EVT#b@1"]


def test_without_pyarrow_a_parquet_source_stops_with_one_line(products, tmp_path, monkeypatch):
    """pyarrow is optional (the Lambda runtime lacks it): CSV and JSON never import it, and a
    Parquet source says what to install."""
    import subprocess
    import sys

    for name in ("pyarrow", "pyarrow.parquet", "pyarrow._parquet"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if absent
    with pytest.raises(SourceError, match=r"reading Parquet needs pyarrow.*pip install"):
        _import(products["PARQUET"], tmp_path)
    code = (
        "import sys, importer.run.driver, importer.aws.handler, importer.input.formats; "
        "sys.exit(1 if any(m.startswith('pyarrow') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("command", ["asl", "template"])
def test_asl_and_template_emit_the_reader_config_asked_for(tmp_path, command):
    from importer.cli.main import main

    out = tmp_path / "out.json"
    args = [command, "--input-type", "PARQUET", "--max-items", "9", "--out", str(out)]
    assert main(args) == 0
    text = out.read_text()
    found = re.findall(r'"ReaderConfig":\s*(\{[^}]*\})', text)
    assert [json.loads(f) for f in found] == [{"InputType": "PARQUET", "MaxItems": 9}]
    assert '"InputType": "PARQUET"' in text.split('"BatchInput"')[1][:400]


@pytest.mark.parametrize("kind", ["CSV", "JSON", "JSONL", "PARQUET", "MANIFEST"])
def test_max_items_is_1_to_100_million_for_every_input_type(kind, tmp_path, run_cli):
    """ReaderConfig MaxItems: 1..100,000,000 whatever the InputType (docs/aws-facts.md,
    ItemReader) -- in the generated ASL, the spec's [input] and `--max-items`, where 0
    once read as "no limit"."""
    from importer.aws.statemachine import reader_config

    extra = {"data_type": "JSONL"} if kind == "MANIFEST" else {}
    assert reader_config(kind, max_items=100_000_000, **extra)["MaxItems"] == 100_000_000
    for bad in (0, 100_000_001):
        with pytest.raises(ValueError, match="MaxItems must be 1..100,000,000"):
            reader_config(kind, max_items=bad, **extra)
    with pytest.raises(SpecError, match="input.max_items: expected 1 to 100,000,000"):
        parse_spec({**BENCH_SPEC, "input": {"type": kind, "max_items": 100_000_001}})
    source = tmp_path / "p.jsonl"
    source.write_text('{"sku":"a"}\n', encoding="utf-8")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(BENCH_SPEC), encoding="utf-8")
    for bad in ("0", "100000001"):
        with pytest.raises(SystemExit) as exit_info:
            run_cli("validate", source, spec=spec, max_items=bad)
        assert exit_info.value.code == 2


def test_max_items_on_the_command_line_is_refused_in_one_line(tmp_path, capsys):
    from importer.cli.main import main

    with pytest.raises(SystemExit):
        main(["validate", str(tmp_path / "p.jsonl"), "--max-items", "0"])
    err = capsys.readouterr().err
    assert "ReaderConfig MaxItems is 1 to 100,000,000 for every input type, got 0" in err
    assert "Traceback" not in err


def test_a_jsonl_line_s_size_leaves_out_the_whitespace_around_it():
    """An item's size is its compact JSON: spaces or a CR around a line do not count,
    whether the line is parsed with its neighbours (C, or Python's block) or alone."""
    lines = [b'{"sku":"a","qty":1}', b'{"sku":"b","qty":2}']
    plain = b"\n".join(lines) + b"\n"
    spaced = b"\n".join(b"  " + line + b" \r" for line in lines) + b"\n"
    broken = spaced + b"{not json\n"  # a bad line: its block is parsed line by line

    def sizes(data: bytes, native: bool) -> list[int]:
        reader = JsonlReader(io.BytesIO(data), SPEC.needed_columns, SPEC.kinds)
        batcher = Batcher(max_items=1, max_bytes=262_144, batch_input={})
        read = reader.read_batches if native else reader.read_batches_python
        return [b.input_bytes for b in read(batcher) if b.rows]

    want = sizes(plain, True)
    assert want == sizes(plain, False)
    for data in (spaced, broken):
        assert sizes(data, True) == want
        assert sizes(data, False) == want


def test_a_run_rejects_jsonl_lines_that_are_not_objects_by_line_and_loses_none(tmp_path):
    """Through `importer run`'s reader (the native one, which leaves such lines to Python):
    each bad line is a reject naming its line; the rest are written; counts add up."""
    good = [json.dumps({"sku": f"S{i}", "name": "n", "qty": i}) for i in range(6)]
    lines = [good[0], "[1,2]", good[1], '"text"', "", good[2], "{oops", good[3], "7"]
    lines += [good[4], '{"sku":"S9","name":"n","qty":true}', good[5]]
    source = tmp_path / "bad.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary, wires, rejects = _import(source, tmp_path)
    assert summary["rows"] == 11 and summary["rejected"] == 5
    assert summary["rows"] == len(wires) + summary["rejected"]
    by_line = {int(r[0]): r for r in rejects[1:]}
    assert sorted(by_line) == [2, 4, 7, 9, 11]
    assert "not a JSON object: an array" in by_line[2]
    assert "not a JSON object: a string" in by_line[4]
    assert any("not valid JSON" in f for f in by_line[7])
    assert "not a JSON object: a number" in by_line[9]
    assert "expected integer, got a boolean" in by_line[11]


def test_a_parquet_file_corrupt_after_its_first_row_groups_stops_with_one_line(
    products, tmp_path, capsys
):
    """The footer reads, a later row group does not: the run stops with one line naming
    the file and the row it reached (pyarrow reads ahead, so that row may be earlier)."""
    import pyarrow.parquet as pq

    data = bytearray(products["PARQUET"].read_bytes())
    meta = pq.ParquetFile(products["PARQUET"]).metadata
    group = meta.row_group(2).column(0)
    start = group.dictionary_page_offset or group.data_page_offset
    data[start : start + 64] = b"\xff" * 64  # the third row group's first page
    bad = tmp_path / "corrupt.parquet"
    bad.write_bytes(bytes(data))
    with pytest.raises(
        SourceError, match=r"corrupt.parquet: cannot read Parquet past row \d+ "
    ) as e:
        _import(bad, tmp_path, batch_items=700)
    assert "\n" not in str(e.value)
    from importer.cli.main import main

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(BENCH_SPEC), encoding="utf-8")
    assert main(["validate", str(bad), "--spec", str(spec), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read Parquet past row" in err[0], err


def test_a_parquet_file_s_row_groups_are_not_kept_once_read(tmp_path):
    """Reading holds two slices at a time (the one being cut and the next, decoded
    meanwhile): the Arrow memory in use stays far below the file's size (pyarrow's
    pre_buffer kept every column chunk read, so a 10M-row file took 2.4x the memory
    of a 1M-row one)."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from importer.input.parquet import ParquetReader

    n = 200_000
    table = pa.table(
        {
            "sku": pa.array([f"S{i:07d}-{os.urandom(12).hex()}" for i in range(n)]),
            "name": pa.array([os.urandom(16).hex() for _ in range(n)]),
        }
    )
    path = tmp_path / "groups.parquet"
    pq.write_table(table, path, row_group_size=10_000, compression="none")
    del table  # its own buffers count in the pool too
    size = path.stat().st_size
    # slices smaller than the file (the default slice, 65,536 rows, is a third of it)
    reader = ParquetReader(str(path), SPEC.needed_columns, SPEC.kinds, batch_rows=16_384)
    batcher = Batcher(max_items=1000, max_bytes=262_144, batch_input={})
    in_use = []
    rows = 0
    for batch in reader.read_batches(batcher):
        rows += len(batch.rows)
        in_use.append(pa.total_allocated_bytes())
    assert rows == n
    assert max(in_use) < size / 3, (max(in_use), size)


def test_parquet_reads_a_short_first_slice_then_slices_of_batch_rows(tmp_path):
    """The first batches wait only for `first_rows` rows to be decoded; the rest are read
    `batch_rows` at a time (across row groups) and cut `cut_rows` at a time, every row
    once, in file order, and cut as the Python reader cuts them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from importer.input.parquet import ParquetReader

    n = 600
    table = pa.table(
        {
            "sku": [f"S{i}" for i in range(n)],
            "name": [("x" * (i % 97)) for i in range(n)],
            "qty": pa.array(range(n), pa.int64()),
        }
    )
    path = tmp_path / "first.parquet"
    pq.write_table(table, path, row_group_size=128)
    header, kinds = SPEC.needed_columns, SPEC.kinds

    def reader() -> ParquetReader:
        return ParquetReader(str(path), header, kinds, batch_rows=100, first_rows=7, cut_rows=13)

    slices = [(offset, b.num_rows) for offset, b in reader()._record_batches()]
    assert slices == [(0, 7), *((7 + 100 * k, 100) for k in range(5)), (507, 93)]
    assert [r.line for r in reader()] == list(range(n))

    def batches(read) -> list:
        return [(b.index, [(ln, list(f)) for ln, f in b.rows], b.input_bytes) for b in read]

    for max_bytes in (300, 1_000, 262_144):
        fast = batches(
            reader().read_batches(Batcher(max_items=9, max_bytes=max_bytes, batch_input={}))
        )
        slow = batches(
            reader().read_batches_python(Batcher(max_items=9, max_bytes=max_bytes, batch_input={}))
        )
        assert fast == slow and sum(len(b[1]) for b in fast) == n


def test_parquet_buffers_are_not_on_mimalloc_s_huge_pages(products, monkeypatch):
    """Opening a Parquet source moves pyarrow's default pool off mimalloc (whose arenas
    are on transparent huge pages: the kernel zeroed 2 MB pages for the first record
    batch, 30-190 ms of CPU a run) -- unless the user chose a pool."""
    import pyarrow as pa

    from importer.input import parquet

    if "mimalloc" not in pa.supported_memory_backends():
        pytest.skip("this pyarrow has no mimalloc")
    before = pa.default_memory_pool()
    try:
        monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
        pa.set_memory_pool(pa.mimalloc_memory_pool())
        reader = parquet.ParquetReader(str(products["PARQUET"]), SPEC.needed_columns, SPEC.kinds)
        assert pa.default_memory_pool().backend_name in parquet._SMALL_PAGE_POOLS
        mimalloc = pa.mimalloc_memory_pool().bytes_allocated()
        held = [b for _, b in reader._record_batches()]
        assert sum(b.num_rows for b in held) == ROWS
        assert pa.mimalloc_memory_pool().bytes_allocated() == mimalloc  # nothing decoded there

        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")  # the user's choice
        pa.set_memory_pool(pa.mimalloc_memory_pool())
        parquet.ParquetReader(str(products["PARQUET"]), SPEC.needed_columns, SPEC.kinds)
        assert pa.default_memory_pool().backend_name == "mimalloc"
    finally:
        pa.set_memory_pool(before)


def test_a_parquet_reader_left_midway_stops_its_decoding_thread(products):
    """The next record batch is decoded on a helper thread; a consumer that stops early
    (a run that fails or is interrupted) leaves no thread behind, and the file is read
    to its end when nobody stops."""
    import threading

    from importer.input.parquet import ParquetReader

    def helpers() -> int:
        return sum(t.name == "parquet-decode" and t.is_alive() for t in threading.enumerate())

    reader = ParquetReader(
        str(products["PARQUET"]), SPEC.needed_columns, SPEC.kinds, batch_rows=256, first_rows=64
    )
    batches = reader._record_batches()
    assert next(batches)[0] == 0 and helpers() == 1
    batches.close()
    assert helpers() == 0
    rows = sum(b.num_rows for _, b in reader._record_batches())
    assert rows == ROWS and helpers() == 0
