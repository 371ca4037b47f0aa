"""The native typed-input entry points must be the Python readers, exactly: property tests.

`_native.jsonl_rows`, `_native.arrow_rows`, `_native.arrow_sizes` and
`_native.BatchCutter` are what `JsonlReader.read_batches` and
`ParquetReader.read_batches` run; `read_batches_python` of each reader is the
definition.  Random lines (compact and loose JSON, escapes, surrogates, numbers
at their edges, nested values, repeated keys, non-objects, arbitrary bytes) and
random typed Arrow columns (every integer width, decimals of every scale,
booleans, dates out of range, strings that need escaping, nulls, sliced
arrays) go through both; the batches (rows, input bytes, rejects) must be
equal.  Kept apart from tests/test_native_equivalence.py (the CSV core's) so
two people can add to the core at once.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from importer import _native
from importer.input.batching import Batcher
from importer.input.jsonl import JsonlReader

SCALE = int(os.environ.get("IMPORTER_EQUIV_SCALE", "1"))
SETTINGS = settings(
    max_examples=300 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

HEADER = ["s", "n", "b", "j", "t", "d"]
KINDS = ["string", "integer", "boolean", "json", "template", "decimal"]
KEYS = [*HEADER, "x", "é", "s\\u0000", "\\u0073"]  # "\u0073" is "s" escaped


def _batches(batches: Any) -> list[tuple[int, list[Any], int, list[Any]]]:
    """Batches as plain values (a row's fields a list, from a RowBlock or tuples alike)."""
    return [
        (b.index, [(line, list(f)) for line, f in b.rows], b.input_bytes, list(b.rejects))
        for b in batches
    ]


def _batcher(max_items: int, max_bytes: int) -> Batcher:
    return Batcher(max_items=max_items or None, max_bytes=max_bytes, batch_input={"run": "r"})


# -- JSON Lines ----------------------------------------------------------------------------

_STRING_BODY = st.lists(
    st.one_of(
        st.text(
            alphabet=st.characters(blacklist_categories=["Cs"], max_codepoint=0x1F600),
            max_size=4,
        ).map(lambda t: json.dumps(t, ensure_ascii=False)[1:-1]),
        st.sampled_from(
            [
                "\\u00e9",
                "\\ud83d\\ude00",
                "\\ud800",
                "\\udc00x",
                "\\/",
                "\\n",
                "\\\\",
                '\\"',
                ", ",
                " :",
                "{ ",
                "\t",
                "\\x",
                "\\u12",
            ]
        ),
    ),
    max_size=4,
).map("".join)
_STRING = _STRING_BODY.map(lambda b: f'"{b}"')
_NUMBER = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(["-0", "0", "-0.0", "1.50", "1e5", "1E-3", "-2.5e+10", "01", "1.", "-", "2e"]),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
)
_SCALAR = st.one_of(_STRING, _NUMBER, st.sampled_from(["true", "false", "null", "nul", "NaN"]))
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda vs: "[" + ",".join(vs) + "]"),
        st.lists(st.tuples(st.sampled_from(KEYS), inner), max_size=3).map(
            lambda kv: "{" + ",".join(f'"{k}":{v}' for k, v in kv) + "}"
        ),
    ),
    max_leaves=6,
)
_SPACE = st.sampled_from(["", "", "", " ", "\t", "\r", "\x0b"])


@st.composite
def _line(draw: Any) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=30)).replace(b"\n", b"")
    if kind == 1:
        return draw(_VALUE).encode("utf-8", "surrogatepass")
    if kind == 2:
        return draw(st.sampled_from([b"", b"  ", b"\r", b"\x0c"]))
    pairs = draw(st.lists(st.tuples(st.sampled_from(KEYS), _VALUE), max_size=7))
    sep = draw(st.sampled_from([",", ",", ",", ", "]))
    colon = draw(st.sampled_from([":", ":", ":", ": "]))
    text = "{" + sep.join(f'"{k}"{colon}{v}' for k, v in pairs) + "}"
    return (draw(_SPACE) + text + draw(_SPACE)).encode("utf-8", "surrogatepass")


@SETTINGS
@given(
    lines=st.lists(_line(), max_size=25),
    bom=st.booleans(),
    final_newline=st.booleans(),
    chunk=st.integers(1, 80),
    max_items=st.integers(0, 4),
    max_bytes=st.integers(40, 400),
)
@example(
    lines=[b'{"s":"a"}', b'{"n":-0}', b"[1]", b'{"s":"x"}'],
    bom=True,
    final_newline=False,
    chunk=3,
    max_items=0,
    max_bytes=200,
)
def test_jsonl_native_batches_are_the_python_reader_s(
    lines: list[bytes], bom: bool, final_newline: bool, chunk: int, max_items: int, max_bytes: int
) -> None:
    data = (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines)
    data += b"\n" if final_newline and lines else b""
    native = JsonlReader(io.BytesIO(data), HEADER, KINDS, chunk_bytes=chunk)
    python = JsonlReader(io.BytesIO(data), HEADER, KINDS)
    got = _batches(native.read_batches(_batcher(max_items, max_bytes)))
    want = _batches(python.read_batches_python(_batcher(max_items, max_bytes)))
    assert got == want
    assert native.first_keys == python.first_keys


@SETTINGS
@given(data=st.binary(max_size=200), first=st.integers(0, 10**6))
def test_jsonl_rows_takes_any_bytes_and_accounts_for_every_line(data: bytes, first: int) -> None:
    kinds = [_native.JSONL_KINDS[k] for k in KINDS]
    rows, sizes, others, lines = _native.jsonl_rows(
        data, first, [h.encode() for h in HEADER], kinds
    )
    assert lines == data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    assert len(memoryview(sizes).cast("q")) == len(rows)
    taken = {line for line, _ in rows} | {line for _, line, _ in others}
    blank = {first + i + 1 for i, raw in enumerate(data.split(b"\n")[:lines]) if not raw.strip()}
    assert taken | blank == set(range(first + 1, first + lines + 1))
    assert all(0 <= index <= len(rows) for index, _, _ in others)


def test_jsonl_lines_c_does_not_take_go_to_python() -> None:
    """Each shape the C path leaves to Python, one line each, read as Python reads it."""
    kinds = [_native.JSONL_KINDS[k] for k in KINDS]
    names = [h.encode() for h in HEADER]
    for line in (
        b'{"s": "a"}',  # loose: its size is its compact form's
        b'{"s":"a","s":"b"}',  # a repeated spec key: the last one counts
        b'{"n":-0}',  # Python's int() makes it 0
        b'{"s":1}',  # a misfit
        b'{"j":{"k":1}}',  # a nested value in a json column
        b'{"s":"\\ud800"}',  # a lone surrogate
        b'{"s":"a, b"}',  # a LOOSE pair inside a string
        b'{"x":' + b"[" * 100 + b"]" * 100 + b"}",  # deep
        b"[1]",
        b"\x0b{}",
    ):
        rows, _, others, _ = _native.jsonl_rows(line, 0, names, kinds)
        assert len(rows) == 0 and [o[2] for o in others] == [line], line


# -- Parquet -----------------------------------------------------------------------------

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

_INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint64()]
_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], max_codepoint=0x1F600), max_size=6
)


@st.composite
def _column(draw: Any, n: int) -> Any:
    """One typed Arrow column of `n` values (some null)."""
    kind = draw(st.integers(0, 6))
    nulls = draw(st.lists(st.booleans(), min_size=n, max_size=n))

    def values(strategy: Any) -> list[Any]:
        return [None if null else draw(strategy) for null in nulls]

    if kind == 0:
        t = draw(st.sampled_from(_INT_TYPES))
        bits = t.bit_width
        lo, hi = (
            (0, 2**bits - 1)
            if str(t).startswith("u")
            else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        )
        return pa.array(values(st.integers(lo, hi)), t)
    if kind == 1:
        return pa.array(values(st.booleans()), pa.bool_())
    if kind == 2:
        day = st.integers(-719_162, 2_932_896)  # years 1-9999: some before the C path's
        return pa.array(values(day), pa.int32()).cast(pa.date32())
    if kind == 3:
        scale = draw(st.integers(0, 9))
        unit = Decimal(1).scaleb(-scale)
        number = st.integers(-(10**15), 10**15).map(lambda i: Decimal(i) * unit)
        return pa.array(values(number), pa.decimal128(30, scale))
    if kind == 4:
        return pa.array(values(_TEXT), draw(st.sampled_from([pa.string(), pa.large_string()])))
    if kind == 5:
        return pa.array(values(st.floats(allow_nan=False, width=32)), pa.float64())
    return pa.array([None] * n, pa.null())


@SETTINGS
@given(data=st.data(), n=st.integers(0, 12), skip=st.integers(0, 3))
def test_parquet_native_batches_are_the_python_reader_s(data: Any, n: int, skip: int) -> None:
    from importer.input.parquet import ParquetReader

    width = data.draw(st.integers(1, 5))
    names = [f"c{i}" for i in range(width)]
    columns = [data.draw(_column(n + skip)).slice(skip) for _ in names]
    kinds = [
        data.draw(st.sampled_from(["string", "integer", "decimal", "boolean", "date", "template"]))
        for _ in names
    ]
    max_items = data.draw(st.integers(0, 4))
    max_bytes = data.draw(st.integers(40, 300))
    batch_rows = data.draw(st.integers(1, 8))
    first_rows = data.draw(st.integers(1, 8))  # a short (or long) first slice
    cut_rows = data.draw(st.integers(1, 9))  # a record batch taken that many rows at a time
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "t.parquet")
        pq.write_table(pa.table(columns, names=names), path, row_group_size=5)

        def reader() -> Any:
            return ParquetReader(
                path, names, kinds, batch_rows=batch_rows, first_rows=first_rows, cut_rows=cut_rows
            )

        got = _batches(reader().read_batches(_batcher(max_items, max_bytes)))
        want = _batches(reader().read_batches_python(_batcher(max_items, max_bytes)))
    assert got == want


@SETTINGS
@given(data=st.data(), n=st.integers(0, 20), skip=st.integers(0, 9))
def test_arrow_sizes_are_the_json_a_child_receives(data: Any, n: int, skip: int) -> None:
    """Sliced columns (an offset into their buffers) measured in C, against json.dumps."""
    from importer.input.parquet import ParquetReader

    names = ["c0", "c1", "c2"]
    columns = [data.draw(_column(n + skip)).slice(skip) for _ in names]
    batch = pa.record_batch(columns, names=names)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "t.parquet")
        pq.write_table(pa.table(columns, names=names), path)
        reader = ParquetReader(path, names, ["template"] * 3)
        try:
            got = list(reader._native_sizes(batch, {}))
        except ValueError:
            got = list(reader._native_sizes(batch, {}, typed=False))
        assert got == reader._sizes(batch)


@pytest.mark.parametrize("scale", [0, 2, 6, 8, 12])
def test_decimals_are_written_as_arrow_casts_them(scale: int) -> None:
    import pyarrow.compute as pc

    unit = Decimal(1).scaleb(-scale)
    values = [Decimal(i) * unit for i in (0, 1, -1, 5, 100, -123456789, 10**20)] + [None]
    array = pa.array(values, pa.decimal128(38, scale)).slice(1)
    bufs = array.buffers()
    column = (_native.ARROW_MODES["DEC128"], scale, bufs[0], None, bufs[1], array.offset)
    want = [t or "" for t in pc.cast(array, pa.string()).to_pylist()]
    if any("E" in t for t in want):  # Arrow's exponent form: the C path refuses it
        with pytest.raises(ValueError):
            _native.arrow_rows(len(array), 0, [column])
        return
    assert [f[0] for _, f in _native.arrow_rows(len(array), 0, [column])] == want


def test_dates_are_written_as_arrow_casts_them_within_years_1000_to_9999() -> None:
    import pyarrow.compute as pc

    days = [
        (datetime.date(y, m, d) - datetime.date(1970, 1, 1)).days
        for y, m, d in ((1000, 1, 1), (1969, 12, 31), (1970, 1, 1), (2000, 2, 29), (9999, 12, 31))
    ]
    array = pa.array(days, pa.int32()).cast(pa.date32())
    bufs = array.buffers()
    column = (_native.ARROW_MODES["DATE32"], 4, bufs[0], None, bufs[1], 0)
    got = [f[0] for _, f in _native.arrow_rows(len(array), 7, [column])]
    assert got == pc.cast(array, pa.string()).to_pylist()
    early = pa.array([days[0] - 1], pa.int32()).cast(pa.date32())
    b = early.buffers()
    with pytest.raises(ValueError, match="1000-9999"):
        _native.arrow_rows(1, 0, [(_native.ARROW_MODES["DATE32"], 4, b[0], None, b[1], 0)])


@SETTINGS
@given(data=st.data(), n=st.integers(0, 12), skip=st.integers(0, 3))
def test_take_arrow_is_arrow_rows_then_take(data: Any, n: int, skip: int) -> None:
    """`BatchCutter.take_arrow` (cells written straight into the batches) cuts the very
    batches `arrow_rows` + `take` cut, from any range of typed columns and sizes."""
    width = data.draw(st.integers(1, 4))
    arrays = [data.draw(_column(n + skip)).slice(skip) for _ in range(width)]
    columns = []
    for array in arrays:
        t, b = array.type, array.buffers()
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            mode = "UTF8" if pa.types.is_string(t) else "LARGE_UTF8"
            columns.append((_native.ARROW_MODES[mode], 0, b[0], b[1], b[2], array.offset))
        elif pa.types.is_integer(t):
            mode = "INT" if pa.types.is_signed_integer(t) else "UINT"
            width_bytes = t.bit_width // 8
            columns.append((_native.ARROW_MODES[mode], width_bytes, b[0], None, b[1], array.offset))
        elif pa.types.is_boolean(t):
            columns.append((_native.ARROW_MODES["BOOL"], 0, b[0], None, b[1], array.offset))
        elif pa.types.is_date32(t):
            columns.append((_native.ARROW_MODES["DATE32"], 4, b[0], None, b[1], array.offset))
        elif pa.types.is_decimal128(t):
            columns.append((_native.ARROW_MODES["DEC128"], t.scale, b[0], None, b[1], array.offset))
        else:  # floats (cast to text by Arrow first) and nulls: an empty column
            columns.append((_native.ARROW_MODES["EMPTY"], 0, None, None, None, 0))
    sizes = data.draw(st.lists(st.integers(1, 150), min_size=n, max_size=n))
    view = memoryview(bytearray(8 * n)).cast("q")
    for i, size in enumerate(sizes):
        view[i] = size
    start = data.draw(st.integers(0, n))
    end = data.draw(st.integers(start, n))
    first = data.draw(st.integers(0, 10**6))
    max_items = data.draw(st.integers(0, 4))
    max_bytes = data.draw(st.integers(40, 300))
    limits = _batcher(max_items, max_bytes).limits

    got_cutter = _native.BatchCutter(width, *limits)
    want_cutter = _native.BatchCutter(width, *limits)
    try:
        block = _native.arrow_rows(n, first, columns)
    except ValueError:  # a date or decimal the core leaves to Arrow: refused alike
        with pytest.raises(ValueError):
            got_cutter.take_arrow(n, first, columns, view, 0, n)
        return
    got = got_cutter.take_arrow(n, first, columns, view, start, end)
    got += [last] if (last := got_cutter.flush()) is not None else []
    want = want_cutter.take(block, view, start, end)
    want += [last] if (last := want_cutter.flush()) is not None else []

    def plain(batches: list[Any]) -> list[Any]:
        return [(list(rows), nbytes, problems) for rows, nbytes, problems in batches]

    assert plain(got) == plain(want)


@SETTINGS
@given(data=st.data(), n=st.integers(0, 12), skip=st.integers(0, 3))
def test_take_arrow_sized_is_arrow_sizes_then_take_arrow(data: Any, n: int, skip: int) -> None:
    """`BatchCutter.take_arrow_sized` (each row sized as its cells are written, a spec
    column's size read off its cell) cuts the very batches `arrow_sizes` + `take_arrow`
    cut: random typed columns (nulls, escapes, sliced, dates and decimals the core
    refuses), spec columns a subset of the item's in any order, with and without links;
    a refused value raises before any row is taken."""
    from importer.input.parquet import ParquetReader, _same_buffers

    width = data.draw(st.integers(1, 4))
    names = [f"c{i}" for i in range(width)]
    arrays = [data.draw(_column(n + skip)).slice(skip) for _ in names]
    header = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=width, unique=True))
    kinds = {
        name: data.draw(st.sampled_from(["string", "integer", "decimal", "boolean", "date"]))
        for name in names
    }
    batch = pa.record_batch(arrays, names=names)
    max_items = data.draw(st.integers(0, 4))
    max_bytes = data.draw(st.integers(40, 300))
    limits = _batcher(max_items, max_bytes).limits
    first = data.draw(st.integers(0, 10**6))
    unlinked = data.draw(st.booleans())
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "t.parquet")
        pq.write_table(pa.table(arrays, names=names), path)
        reader = ParquetReader(path, header, [kinds[h] for h in header])
    for typed in (True, False):
        cast: dict[str, Any] = {}
        fixed, sized_names, sized, extra = reader._native_sizing(batch, cast, typed)
        columns, bad_at = reader._cell_columns(batch, cast, typed)
        if bad_at:
            return  # misfits take the block path
        links = {name: j for j, name in enumerate(reader.header)}
        sizing = [
            (*entry, -1 if unlinked else links.get(name, -1))
            for name, entry in zip(sized_names, sized, strict=True)
        ]
        sizing = [
            e if e[8] < 0 or _same_buffers(columns[e[8]], e) else (*e[:8], -1) for e in sizing
        ]
        got_cutter = _native.BatchCutter(len(header), *limits)
        try:
            sizes = memoryview(_native.arrow_sizes(n, fixed, sized, extra)).cast("q")
        except ValueError:
            with pytest.raises(ValueError):
                got_cutter.take_arrow_sized(n, first, columns, sizing, fixed, extra)
            assert got_cutter.flush() is None  # nothing was taken
            continue
        want_cutter = _native.BatchCutter(len(header), *limits)
        try:
            want = want_cutter.take_arrow(n, first, columns, sizes, 0, n)
        except ValueError:  # a cell the core refuses in a column not sized in C
            with pytest.raises(ValueError):
                got_cutter.take_arrow_sized(n, first, columns, sizing, fixed, extra)
            assert got_cutter.flush() is None
            continue
        want += [last] if (last := want_cutter.flush()) is not None else []
        # in steps of `step` rows (the whole batch checked by the first), as the reader takes them
        step = data.draw(st.integers(1, max(1, n)))
        got = got_cutter.take_arrow_sized(n, first, columns, sizing, fixed, extra, 0, min(n, step))
        for start in range(step, n, step):
            got += got_cutter.take_arrow_sized(
                n, first, columns, sizing, fixed, extra, start, min(n, start + step), check=False
            )
        got += [last] if (last := got_cutter.flush()) is not None else []

        def plain(batches: list[Any]) -> list[Any]:
            return [(list(rows), nbytes, problems) for rows, nbytes, problems in batches]

        assert plain(got) == plain(want)


def test_take_arrow_sized_refuses_a_date_out_of_range_before_taking_a_row() -> None:
    """1000-01-01 and 9999-12-31 are written; a day before or after is refused, and
    the rows before it stay untaken (the reader then casts that record batch itself);
    a null or a value sliced off does not count."""
    low, high = (
        (d - datetime.date(1970, 1, 1)).days
        for d in (datetime.date(1000, 1, 1), datetime.date(9999, 12, 31))
    )
    cases = [
        (pa.array([low, high], pa.int32()), True),
        (pa.array([low, low - 1], pa.int32()), False),
        (pa.array([high, high + 1], pa.int32()), False),
        (pa.array([None, high + 1], pa.int32()), False),
        (pa.array([high + 1, None], pa.int32()).slice(1), True),
        (pa.array([high + 1, None], pa.int32(), mask=[True, False]), True),
    ]
    for ints, ok in cases:
        array = ints.cast(pa.date32())
        b = array.buffers()
        column = (_native.ARROW_MODES["DATE32"], 4, b[0], None, b[1], array.offset)
        cutter = _native.BatchCutter(1, 0, 10_000, 0)
        sizing = [(*column, False, 5, 0)]
        if ok:
            got = cutter.take_arrow_sized(len(array), 0, [column], sizing, 2)
            got += [cutter.flush()]
            assert sum(len(rows) for rows, _, _ in got) == len(array)
        else:
            with pytest.raises(ValueError, match="1000-9999"):
                cutter.take_arrow_sized(len(array), 0, [column], sizing, 2)
            assert cutter.flush() is None


# -- BatchCutter -----------------------------------------------------------------------------


@SETTINGS
@given(
    events=st.lists(
        st.one_of(st.integers(1, 120), st.just(-1)), max_size=40
    ),  # a row of that size, or a reject
    max_items=st.integers(0, 5),
    max_bytes=st.integers(40, 300),
)
def test_batch_cutter_cuts_as_batcher_add(
    events: list[int], max_items: int, max_bytes: int
) -> None:
    from importer.records import Reject

    block = _native.RowBlock(1)
    sizes = []
    for line, size in enumerate(events):
        if size > 0:
            block.append(line, [f"v{line}"])
            sizes.append(size)
    buf = bytearray(8 * len(sizes))
    view = memoryview(buf).cast("q")
    for i, s in enumerate(sizes):
        view[i] = s
    size_view = view

    batcher = _batcher(max_items, max_bytes)
    cutter = _native.BatchCutter(1, *batcher.limits)
    got: list[Any] = []
    r = 0
    for line, size in enumerate(events):
        if size > 0:
            got += cutter.take(block, size_view, r, r + 1)
            r += 1
        else:
            cutter.problem(Reject(line, "", "", "refused", ()))
    if (last := cutter.flush()) is not None:
        got.append(last)

    want_batcher = _batcher(max_items, max_bytes)
    want = []
    for line, size in enumerate(events):
        if size > 0:
            if (closed := want_batcher.add(line, [f"v{line}"], size)) is not None:
                want.append(closed)
        else:
            want_batcher.reject(Reject(line, "", "", "refused", ()))
    if (last := want_batcher.flush()) is not None:
        want.append(last)

    def shape(rows: Any, nbytes: int, problems: list[Any]) -> tuple[Any, ...]:
        return (
            list(rows),
            nbytes,
            [
                p if isinstance(p, Reject) else want_batcher.oversize(p[0], p[1], p[3])
                for p in problems
            ],
        )

    assert [shape(*g) for g in got] == [(list(b.rows), b.input_bytes, b.rejects) for b in want]
