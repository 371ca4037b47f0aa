"""The CSV test fixtures converted to JSON, JSONL and Parquet, typed by the spec.

Each CSV field becomes the typed value it stands for where the spec's type
says so (an integer column's `42` a JSON number, a boolean column's `yes` a
JSON `true`, a decimal's `726.30` the number `726.30` as written); a field that
is not such a value (the fixtures' bad rows) stays a string, and an empty field
is a null -- so every format holds the same products, good and bad.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from importer.transform.values import FALSE_WORDS, TRUE_WORDS

_INT = re.compile(r"-?(0|[1-9][0-9]*)\Z")
_NUM = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\Z")


def _value_json(text: str, kind: str) -> str:
    """The JSON text of one typed value (numbers written as the CSV wrote them)."""
    if text == "":
        return "null"
    if kind == "integer" and _INT.match(text):
        return text
    if kind == "decimal" and _NUM.match(text):
        return text
    if kind == "boolean" and text.lower() in TRUE_WORDS | FALSE_WORDS:
        return "true" if text.lower() in TRUE_WORDS else "false"
    return json.dumps(text, ensure_ascii=False)


def csv_rows(data: bytes) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    return rows[0], rows[1:]


def jsonl_lines(data: bytes, kinds: dict[str, str]) -> list[str]:
    header, rows = csv_rows(data)
    return [
        "{"
        + ",".join(
            json.dumps(h, ensure_ascii=False) + ":" + _value_json(v, kinds.get(h, "string"))
            for h, v in zip(header, row, strict=True)
        )
        + "}"
        for row in rows
    ]


def write_jsonl(path: Path, data: bytes, kinds: dict[str, str]) -> Path:
    path.write_text("\n".join(jsonl_lines(data, kinds)) + "\n", encoding="utf-8")
    return path


def write_json(path: Path, data: bytes, kinds: dict[str, str]) -> Path:
    path.write_text("[\n" + ",\n".join(jsonl_lines(data, kinds)) + "\n]\n", encoding="utf-8")
    return path


def typed_items(data: bytes, kinds: dict[str, str]) -> list[dict[str, Any]]:
    """The items a child receives from JSON/JSONL (numbers as Python numbers)."""
    return [json.loads(line) for line in jsonl_lines(data, kinds)]


def write_parquet(path: Path, data: bytes, kinds: dict[str, str], *, row_group: int = 0) -> Path:
    """A Parquet file of the same products: typed columns where every field fits the type."""
    from datetime import date
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    header, rows = csv_rows(data)
    arrays = []
    for j, name in enumerate(header):
        texts = [r[j] for r in rows]
        kind = kinds.get(name, "string")
        filled = [t for t in texts if t != ""]
        array = None
        if kind == "integer" and all(_INT.match(t) for t in filled):
            array = pa.array([int(t) if t else None for t in texts], pa.int64())
        elif kind == "decimal" and all(re.fullmatch(r"-?[0-9]+\.[0-9]+", t) for t in filled):
            scale = max((len(t.split(".")[1]) for t in filled), default=0)
            same = all(len(t.split(".")[1]) == scale for t in filled)
            if same:
                array = pa.array(
                    [Decimal(t) if t else None for t in texts], pa.decimal128(38, scale)
                )
        elif kind == "boolean" and all(t.lower() in TRUE_WORDS | FALSE_WORDS for t in filled):
            array = pa.array([t.lower() in TRUE_WORDS if t else None for t in texts], pa.bool_())
        elif kind == "date" and all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", t) for t in filled):
            array = pa.array([date.fromisoformat(t) if t else None for t in texts], pa.date32())
        if array is None:
            array = pa.array([t if t != "" else None for t in texts], pa.string())
        arrays.append(array)
    table = pa.Table.from_arrays(arrays, names=header)
    pq.write_table(table, path, row_group_size=row_group or None)
    return path
