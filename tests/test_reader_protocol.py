"""Every reader offers the run the same members (`importer.input.reader.RowReader`).

The run reads a reader's counts, its first item's keys and its rows' sizes plainly, so
each reader must have them: a reader that did not would fail here, not deep in a run's
summary.  A manifest sums its objects' counts and lets go of each object's reader.
"""

from __future__ import annotations

import io

import pytest

from importer.input.formats import ManifestReader
from importer.input.json_array import JsonArrayReader
from importer.input.jsonl import JsonlReader
from importer.input.options import CsvOptions, InputOptions
from importer.input.reader import RowReader
from importer.input.source import CsvReader
from importer.transform.native_engine import NativeCsvReader

# one short row (line 3, padded) and one long row (line 4, cut)
CSV = b"sku,name\nA,one\nB\nC,three,extra\nD,four\n"
HEADER = ["sku", "name"]
KINDS = ["string", "string"]


def _read(reader: RowReader) -> list:
    rows = list(reader)
    reader.close()
    return rows


@pytest.mark.parametrize("make", [CsvReader, NativeCsvReader], ids=["python", "native"])
def test_a_csv_reader_counts_padded_and_cut_rows_and_sizes_none(make):
    reader = make(io.BytesIO(CSV), CsvOptions())
    rows = _read(reader)
    assert reader.header == HEADER
    assert [r.fields for r in rows] == [["A", "one"], ["B", ""], ["C", "three"], ["D", "four"]]
    assert (reader.padded, reader.truncated) == (1, 1)
    assert (list(reader.padded_lines), list(reader.truncated_lines)) == ([3], [4])
    assert reader.first_keys is None  # the header is the keys
    # a CSV row is measured from its fields by the batcher; it names no column
    assert {(r.size, r.column, r.value) for r in rows} == {(0, "", "")}


@pytest.mark.parametrize(
    "make, data",
    [
        (JsonlReader, b'{"sku": "A", "name": "one", "x": 1}\n{"sku": "B", "name": 2}\n'),
        (JsonArrayReader, b'[{"sku": "A", "name": "one", "x": 1}, {"sku": "B", "name": 2}]'),
    ],
    ids=["jsonl", "json"],
)
def test_a_typed_reader_sizes_its_rows_and_names_a_misfit(make, data):
    reader = make(io.BytesIO(data), HEADER, KINDS)
    good, misfit = _read(reader)
    assert reader.first_keys == ["sku", "name", "x"]
    assert (reader.padded, reader.truncated) == (0, 0)
    assert (list(reader.padded_lines), list(reader.truncated_lines)) == ([], [])
    assert good.error is None and good.size == len(b'{"sku":"A","name":"one","x":1}')
    assert misfit.error is not None and (misfit.column, misfit.value) == ("name", "2")


def test_a_manifest_sums_its_objects_counts_and_closes_each_reader(tmp_path):
    parts = []
    for n in range(2):
        part = tmp_path / f"part{n}.csv"
        part.write_bytes(CSV.split(b"\n", 1)[1])  # Athena writes no header row
        parts.append(part)
    manifest = tmp_path / "q-manifest.csv"
    manifest.write_text("".join(f"{p}\n" for p in parts))
    opened: list[NativeCsvReader] = []
    closed: list[NativeCsvReader] = []

    class Recording(NativeCsvReader):
        def __init__(self, stream, options):
            super().__init__(stream, options)
            opened.append(self)

        def close(self) -> None:
            closed.append(self)
            super().close()

    given = CsvOptions(header_location="GIVEN", headers=tuple(HEADER))
    reader = ManifestReader(
        str(manifest), InputOptions(data_type="CSV"), given, HEADER, KINDS, open_csv=Recording
    )
    rows = list(reader)
    assert len(rows) == 8
    assert (reader.padded, reader.truncated) == (2, 2)
    assert reader.first_keys == HEADER
    assert len(opened) == 2 and closed == opened


def test_a_manifest_run_says_how_many_of_its_objects_were_read(tmp_path, run_cli):
    from tests.conftest import PRODUCT_SPEC

    spec = tmp_path / "spec.toml"
    spec.write_text(PRODUCT_SPEC + '\n[input]\ndata_type = "JSONL"\n')
    parts = []
    for n in range(3):
        part = tmp_path / f"part{n}.jsonl"
        part.write_text(f'{{"sku": "A{n}", "name": "one"}}\n{{"sku": "B{n}", "name": "two"}}\n')
        parts.append(part)
    manifest = tmp_path / "q-manifest.csv"
    manifest.write_text("".join(f"{p}\n" for p in parts))
    got = run_cli("validate", manifest, spec=spec)
    assert got.code == 0, got.stderr
    assert got.summary["rows"] == 6
    assert (got.summary["objects"], got.summary["objects_read"]) == (3, 3)
    assert "manifest objects read: 3 of 3" in got.stdout + got.stderr

    # a plain file is no manifest: the summary says nothing of objects
    plain = run_cli("validate", parts[0], spec=spec)
    assert plain.summary["objects"] is None
    assert "manifest objects" not in plain.stdout + plain.stderr
