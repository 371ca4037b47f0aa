"""ItemReader limits the developer guide states ("ItemReader (Map)", a stored copy of the
full page; docs/aws-facts.md), each refused in one line as the Map run would fail:
a `.zstd` object is zstd like `.zst`; an object over 10 GB; a Parquet row group over
256 MB or footer over 5 MB; an S3 Inventory ReaderConfig never names both
`ManifestType: S3_INVENTORY` and an `InputType`."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from importer.input import formats
from importer.input.formats import input_type_for, parquet_limits_problem
from importer.input.source import MAX_OBJECT_BYTES, SourceError, object_too_big, open_source

ROWS = [{"sku": f"S{i}", "name": f"n{i}"} for i in range(50)]
SPEC = {
    "record": {"type": "PRODUCT", "code": "{sku}", "name": "{name}"},
    "columns": {"sku": {"required": True}, "name": {}},
}


def _validate(tmp_path: Path, source: Path, capsys) -> tuple[int, list[str]]:
    from importer.cli.main import main

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    code = main(["validate", str(source), "--spec", str(spec), "--quiet"])
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_zstd_named_object_is_read_as_zstd_and_typed_by_its_inner_name(tmp_path, capsys):
    zstandard = pytest.importorskip("zstandard")
    text = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    path = tmp_path / "items.jsonl.zstd"
    path.write_bytes(zstandard.ZstdCompressor().compress(text))
    assert input_type_for(str(path)) == "JSONL"
    assert input_type_for("s3://b/myObject.csv.zstd") == "CSV"
    stream = open_source(str(path))
    try:
        assert stream.raw.read() == text
    finally:
        stream.close()
    code, err = _validate(tmp_path, path, capsys)
    assert code == 0, err


def test_an_object_over_10_gb_stops_in_one_line(tmp_path, capsys):
    assert object_too_big("x", MAX_OBJECT_BYTES) is None
    assert object_too_big("x", None) is None
    big = tmp_path / "big.csv"
    with open(big, "wb") as fh:  # sparse: no disk is used
        fh.truncate(MAX_OBJECT_BYTES + 1)
    if os.stat(big).st_size != MAX_OBJECT_BYTES + 1:
        pytest.skip("no sparse files here")
    with pytest.raises(SourceError, match="over the 10 GB"):
        open_source(str(big))
    code, err = _validate(tmp_path, big, capsys)
    assert code == 1
    assert err == [
        f"importer: error: {big}: is {MAX_OBJECT_BYTES + 1:,} bytes, over the 10 GB "
        "Step Functions' ItemReader reads from one object (split it, or list the parts "
        "in a manifest)"
    ]


def test_an_s3_object_over_10_gb_is_refused_before_reading_it():
    class _Client:
        def get_object(self, **_):
            return {"Body": io.BytesIO(b"sku\n"), "ContentLength": MAX_OBJECT_BYTES + 7}

    with pytest.raises(SourceError, match=r"s3://b/k.jsonl: is 10,737,418,247 bytes"):
        open_source("s3://b/k.jsonl", s3_client=_Client())


def _parquet(path: Path, groups: int = 2) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"sku": [r["sku"] for r in ROWS], "name": [r["name"] for r in ROWS]})
    pq.write_table(table, path, row_group_size=len(ROWS) // groups)
    return path


def test_parquet_row_groups_and_footers_over_the_limits_stop_in_one_line(
    tmp_path, capsys, monkeypatch
):
    pq = pytest.importorskip("pyarrow.parquet")
    path = _parquet(tmp_path / "p.parquet")
    meta = pq.ParquetFile(path).metadata
    assert parquet_limits_problem("p", meta) is None  # the real limits: 256 MB, 5 MB
    code, err = _validate(tmp_path, path, capsys)
    assert code == 0, err
    group = meta.row_group(1)
    size = sum(group.column(j).total_compressed_size for j in range(group.num_columns))
    monkeypatch.setattr(formats, "MAX_PARQUET_ROW_GROUP_BYTES", size - 1)
    code, err = _validate(tmp_path, path, capsys)
    assert code == 1 and len(err) == 1
    assert "Parquet row group" in err[0] and "over the 256 MB Step Functions' ItemReader" in err[0]
    monkeypatch.setattr(formats, "MAX_PARQUET_ROW_GROUP_BYTES", 256 << 20)
    monkeypatch.setattr(formats, "MAX_PARQUET_FOOTER_BYTES", meta.serialized_size - 1)
    code, err = _validate(tmp_path, path, capsys)
    assert code == 1 and len(err) == 1
    assert f"the Parquet footer is {meta.serialized_size:,} bytes, over the 5 MB" in err[0]


def test_an_s3_inventory_reader_config_never_names_an_input_type_beside_its_manifest_type():
    from importer.aws.statemachine import reader_config

    config = reader_config("MANIFEST", manifest_type="S3_INVENTORY", max_items=5)
    assert config == {"InputType": "MANIFEST", "MaxItems": 5}
    athena = reader_config("MANIFEST", data_type="CSV", csv_headers=["a", "b"])
    assert athena["CSVHeaderLocation"] == "GIVEN" and athena["CSVHeaders"] == ["a", "b"]


def test_a_zstd_named_source_s_reports_are_named_by_its_stem():
    from pathlib import Path

    from importer.cli.main import _report_path

    assert _report_path("s3://b/x.csv.zstd", None, "rejects") == Path("x.rejects.csv")
    assert _report_path("x.csv.zst", None, "rejects") == Path("x.rejects.csv")
