"""atheris harness over the native entry points.

    python tests/fuzz/fuzz_native.py -max_total_time=60
    python tests/fuzz/fuzz_native.py -runs=20000

Each input drives one of: the CSV reader on raw bytes (checked against
`importer.input.source.CsvReader`), `transform_batch` on rows decoded from the input
under a few fixed specs (checked against `importer.transform.reference`), and
`row_json_size` (checked against `batching.item_json_size`), and batches cut
in C by `read_batch` (checked against `batching.Batcher` fed row by row; the
`RowBlock`s of a three-column header are also transformed in place and checked
against the reference on their rows), and a JSON array read with its elements found
in C (`json_array_rows`, checked against the Python reader, which is the definition).
A mismatch or a crash in the extension is a finding.
"""

from __future__ import annotations

import io
import json
import sys

import atheris

with atheris.instrument_imports():
    from importer import _native
    from importer.input.batching import Batcher, item_json_size
    from importer.input.json_array import JsonArrayReader
    from importer.input.options import CsvOptions
    from importer.input.source import CsvReader, SourceError
    from importer.transform import native_engine, reference
    from importer.transform.context import RunContext
    from importer.transform.spec import parse_spec

SPECS = [
    parse_spec(
        {
            "record": {"type": "T", "code": "{a}", "tenant": "{b}", "name": "{c}"},
            "columns": {
                "a": {"required": True, "max_length": 8},
                "b": {"type": "integer", "min": -5, "max": 10**20},
                "c": {"type": "decimal", "attribute": "cc"},
                "d": {"type": "boolean"},
            },
        }
    ),
    parse_spec(
        {
            "record": {"type": "P#{a}", "code": "x{b}@{c}"},
            "columns": {
                "a": {"enum": ["x", "é", ""]},
                "b": {"type": "date", "min": "2000-01-01"},
                "c": {"type": "datetime"},
                "d": {"type": "json", "attribute": False},
            },
        }
    ),
    parse_spec(
        {
            "record": {"type": "T", "code": "{a}{b}"},
            "columns": {"a": {"pattern": "^[a-z]"}, "b": {"min_length": 1}, "c": {}, "d": {}},
        }
    ),
]
HEADER = ["a", "b", "c", "d"]
BLOCK_HEADER = ("h1", "h2", "h3")
BLOCK_SPEC = parse_spec(
    {
        "record": {"type": "T", "code": "{h1}", "tenant": "{h2}", "name": "{h3}"},
        "columns": {
            "h1": {"required": True, "pattern": "^[^x]", "max_length": 6},
            "h2": {"type": "decimal"},
            "h3": {"type": "json"},
        },
    }
)
CTX = RunContext(run_id="f", timestamp="2024-01-01T00:00:00+00:00", source="s", ip="1")
OPTIONS = [
    CsvOptions(),
    CsvOptions(delimiter="|"),
    CsvOptions(delimiter="\t"),
    CsvOptions(header_location="GIVEN", headers=("h1", "h2", "h3")),
]


def _reader_outcome(make):
    try:
        r = make()
        return r.header, list(r), r.padded, r.truncated
    except Exception as exc:  # noqa: BLE001
        return type(exc), str(exc)


def _block_answers(block):
    return (
        block.lines(),
        block.pks(),
        block.sks(),
        block.keys_unique(),
        block.body(b"[", b",", b"]"),
        block.chunk_bounds(2, 64, 8),
        block.entity_keys(),
        block.entity_keys(versioned=False),
        block.keys_json(),
        block.keys_json(versioned=False),
    )


def _transform_outcome(fn, spec, rows, header=None):
    try:
        res = fn(spec, header or HEADER, rows, CTX)
    except UnicodeEncodeError:
        return "surrogate"
    except Exception as exc:  # noqa: BLE001
        return type(exc)
    items = res.items
    if isinstance(items, _native.ItemBlock):
        # the block's C answers, asked before any item is built, must be its list's
        answers = _block_answers(items)
        if answers != _block_answers(_native.ItemBlock(list(items))):
            raise AssertionError(f"ItemBlock answers differ from its items: {answers!r}")
    return [(i.line, i.pk, i.sk, json.loads(i.wire)) for i in items], res.rejects


def _batches_outcome(make, native: bool, max_items: int, max_bytes: int):
    try:
        r = make()
        batcher = Batcher(max_items=max_items, max_bytes=max_bytes, batch_input={"r": "x"})
        if native:
            cut = r.read_batches(batcher)
            if cut is None:
                return "per-row"
            return r.header, list(cut), r.padded, r.truncated
        out = list(batcher.cut(iter(r), r.header, item_json_size))
        return r.header, out, r.padded, r.truncated
    except Exception as exc:  # noqa: BLE001
        return type(exc), str(exc)


JSON_HEADER = ["s", "n", "b"]
JSON_KINDS = ["string", "integer", "boolean"]


def _json_array_outcome(raw: bytes, chunk: int, native: bool) -> object:
    reader = JsonArrayReader(io.BytesIO(raw), JSON_HEADER, JSON_KINDS, chunk_bytes=chunk)
    batcher = Batcher(max_items=3, max_bytes=400, batch_input={})
    try:
        got = reader.read_batches(batcher) if native else reader.read_batches_python(batcher)
        return [(b.index, [(n, list(f)) for n, f in b.rows], b.input_bytes, b.rejects) for b in got]
    except SourceError as exc:
        return "error", str(exc)


def _check_json_array(raw: bytes, chunk: int) -> None:
    nat = _json_array_outcome(raw, chunk, True)
    ref = _json_array_outcome(raw, chunk, False)
    if nat != ref:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:  # both stop in one line; which line is a block's choice
            if isinstance(nat, tuple) and isinstance(ref, tuple):
                return
        raise AssertionError(f"JSON array mismatch on {raw!r}: {ref!r} != {nat!r}")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 4)
    if mode == 4:
        chunk = fdp.ConsumeIntInRange(1, 64)
        _check_json_array(fdp.ConsumeBytes(fdp.remaining_bytes()), chunk)
        return
    if mode == 3:
        # batches cut in C (`read_batch`) against the Batcher fed row by row
        options = OPTIONS[fdp.ConsumeIntInRange(0, len(OPTIONS) - 1)]
        chunk = fdp.ConsumeIntInRange(16, 64)
        max_items = fdp.ConsumeIntInRange(1, 5)
        max_bytes = fdp.ConsumeIntInRange(40, 300)
        raw = fdp.ConsumeBytes(fdp.remaining_bytes())

        def make():
            return native_engine.open_reader(io.BytesIO(raw), options, chunk_bytes=chunk)

        nat = _batches_outcome(make, True, max_items, max_bytes)
        if nat == "per-row":
            return
        ref = _batches_outcome(make, False, max_items, max_bytes)
        if nat != ref:
            raise AssertionError(f"batch mismatch on {raw!r}: {ref!r} != {nat!r}")
        if len(nat) == 4 and nat[0] == list(BLOCK_HEADER):
            # the native transform reads a batch's RowBlock in place: as its rows
            for batch in nat[1]:
                got = _transform_outcome(
                    native_engine.transform_batch, BLOCK_SPEC, batch.rows, BLOCK_HEADER
                )
                want = _transform_outcome(
                    reference.transform_batch, BLOCK_SPEC, list(batch.rows), BLOCK_HEADER
                )
                if got != want:
                    raise AssertionError(f"block transform on {raw!r}: {want!r} != {got!r}")
        return
    if mode == 0:
        options = OPTIONS[fdp.ConsumeIntInRange(0, len(OPTIONS) - 1)]
        chunk = fdp.ConsumeIntInRange(16, 64)
        raw = fdp.ConsumeBytes(fdp.remaining_bytes())
        ref = _reader_outcome(lambda: CsvReader(io.BytesIO(raw), options))
        nat = _reader_outcome(
            lambda: native_engine.open_reader(io.BytesIO(raw), options, chunk_bytes=chunk)
        )
        if nat != ref:
            raise AssertionError(f"reader mismatch on {raw!r}: {ref!r} != {nat!r}")
        return
    if mode == 1:
        spec = SPECS[fdp.ConsumeIntInRange(0, len(SPECS) - 1)]
        rows = []
        for line in range(fdp.ConsumeIntInRange(1, 6)):
            rows.append((line, [fdp.ConsumeUnicodeNoSurrogates(12) for _ in HEADER]))
        ref = _transform_outcome(reference.transform_batch, spec, rows)
        nat = _transform_outcome(native_engine.transform_batch, spec, rows)
        if ref == "surrogate":
            return
        if nat != ref:
            raise AssertionError(f"transform mismatch on {rows!r}: {ref!r} != {nat!r}")
        return
    fields = [fdp.ConsumeUnicode(10) for _ in HEADER]
    try:
        want = item_json_size(HEADER, fields)
    except UnicodeEncodeError:
        want = "surrogate"
    try:
        got = native_engine.row_json_size(HEADER, fields)
    except UnicodeEncodeError:
        got = "surrogate"
    if got != want:
        raise AssertionError(f"row_json_size mismatch on {fields!r}: {want} != {got}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
