"""The native engine must be the reference, exactly: property tests.

Random specs (types, rules, templates, attribute renames) and random rows
(quotes, backslashes, delimiters, CR/LF, unicode incl. non-BMP and control
characters, numbers and dates at their edges) go through both engines; the
items (parsed wire JSON, pk, sk, line) and the rejects must be equal.  The CSV
reader is held to `importer.input.source.CsvReader` on arbitrary bytes.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from importer import _native
from importer.input.batching import Batcher, item_json_size
from importer.input.options import DELIMITERS, CsvOptions
from importer.input.source import CsvReader, ParsedRow, SourceError
from importer.records import Reject
from importer.transform import native_engine, reference
from importer.transform.context import RunContext
from importer.transform.spec import SpecError, parse_spec

#: IMPORTER_EQUIV_SCALE=20 for a long bug hunt (default runs stay well under 90 s)
SCALE = int(os.environ.get("IMPORTER_EQUIV_SCALE", "1"))
SETTINGS = settings(
    max_examples=250 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NAMES = ["a", "b", "c", "d", "e", "f", "g"]

# ---------------------------------------------------------------------------
# field values
# ---------------------------------------------------------------------------

SPECIAL = [
    '"',
    "\\",
    ",",
    "|",
    ";",
    "\t",
    " ",
    "\r",
    "\n",
    "\r\n",
    "#",
    "@",
    "{",
    "}",
    "\x00",
    "\x01",
    "\x1f",
    "\x7f",
    "\u2028",
    "é",
    "€",
    "😀",
    "\U0010ffff",
    "İ",
    "K",
]
TEXT = st.lists(
    st.one_of(st.sampled_from(SPECIAL), st.characters(blacklist_categories=("Cs",))),
    max_size=12,
).map("".join)
NUMBER_EDGES = [
    "0",
    "-0",
    "+0",
    "007",
    ".5",
    "5.",
    "1e",
    "1e5",
    "1E-130",
    "1e-131",
    "9.99e125",
    "1e126",
    "9" * 38,
    "9" * 39,
    "1" * 39 + "0" * 5,
    "0." + "0" * 129 + "1",
    "0." + "0" * 130 + "1",
    " 12 ",
    "\t-3.50\t",
    "1e+100000",
    "1e100001",
    "0e999999",
    "+.e5",
    "-.5e-3",
    "12a",
    "١٢",
    ".",
    "-",
    "+",
    "1.2.3",
    "1e+",
    "0.000",
    "-0.0e-5",
    "1" * 126,
    "1" * 127,
    "12345678901234567890123456789012345678e88",
    "1_000",
    "0x10",
    "1 2",
    "Infinity",
    "NaN",
    # the edges of what an MBC application (JavaScript numbers) reads exactly
    "9007199254740991",
    "-9007199254740991",
    "9007199254740992",
    "-9007199254740992",
    "9007199254740991.0",
    "9007199254740990.5",
    "900719925474099e1",
    "9.007199254740991e15",
    "9.007199254740992e15",
    "10000000000000000",
    "1e16",
    "1e15",
    "123456789012345",
    "1234567890123456",
    "12345678901234567",
    "0.123456789012345",
    "0.1234567890123456",
    "-1.23456789012345e-100",
    "12345678901234567890.5",
    "1e-130",
]
SIGN = st.sampled_from(["", "", "+", "-"])
DIGITS = st.text(alphabet="0123456789", max_size=42)
NUMBER = st.one_of(
    st.sampled_from(NUMBER_EDGES),
    st.builds(
        lambda s, i, f, e, ws: ws + s + i + f + e + ws,
        SIGN,
        DIGITS,
        st.one_of(st.just(""), DIGITS.map(lambda d: "." + d)),
        st.one_of(
            st.just(""),
            st.builds(
                lambda c, s, n: c + s + str(n), st.sampled_from("eE"), SIGN, st.integers(0, 200)
            ),
        ),
        st.sampled_from(["", "", " ", "\t"]),
    ),
    st.integers(-(10**45), 10**45).map(str),
)
BOOLEAN = st.sampled_from(
    [
        "true",
        "True",
        "TRUE",
        "t",
        "T",
        "yes",
        "Y",
        "y",
        "1",
        "0",
        "no",
        "N",
        "f",
        "false",
        "FALSE",
        "maybe",
        "",
        " yes ",
        "\tno",
        "İ",
        "tru",
        "yess",
        "10",
        "ｔｒｕｅ",
    ]
)
DATE = st.one_of(
    st.sampled_from(
        [
            "2024-02-29",
            "2023-02-29",
            "2024/02/30",
            "2000-02-29",
            "1900-02-29",
            "0000-01-01",
            "0001-01-01",
            "9999-12-31",
            "2024-1-01",
            "2024-01/01",
            " 2024-01-01 ",
            "2024-13-01",
            "2024-00-10",
            "2024-04-31",
            "2024-04-30",
            "２０２４-01-01",
            "2024-01-01T00:00",
        ]
    ),
    st.builds(
        lambda y, m, d, s1, s2: f"{y:04d}{s1}{m:02d}{s2}{d:02d}",
        st.integers(0, 9999),
        st.integers(0, 13),
        st.integers(0, 32),
        st.sampled_from("-/"),
        st.sampled_from("-/"),
    ),
)
TZ = st.sampled_from(
    [
        "",
        "Z",
        "z",
        "+00:00",
        "-05:30",
        "+0530",
        "+05",
        "+24:00",
        "-23:59",
        "+05:60",
        "+5",
        "+05:3",
        "+05:",
        "UTC",
        " Z",
    ]
)
DATETIME = st.one_of(
    st.sampled_from(
        [
            "2024-02-29T23:59:59Z",
            "2023-02-29T00:00",
            "2024-01-01 10:00:00.123456789+01:00",
            "2024-01-01T10:00:00.1234567890",
            "2024-01-01T24:00",
            "2024-01-01T10:60",
            "2024-01-01T10:00:60",
            "2024-01-01t10:00",
            "2024/01/01T10:00",
            "2024-01-01T10:00:",
            "2024-01-01T10:00:5",
            "2024-01-01T10:00.5",
            "2024-01-01T10:00:00.",
            " 2024-01-01T10:00 ",
        ]
    ),
    st.builds(
        lambda y, mo, d, sep, h, mi, sec, frac, tz: (
            f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}{sec}{frac}{tz}"
        ),
        st.integers(0, 9999),
        st.integers(1, 12),
        st.integers(1, 31),
        st.sampled_from("T "),
        st.integers(0, 25),
        st.integers(0, 61),
        st.one_of(st.just(""), st.integers(0, 61).map(lambda s: f":{s:02d}")),
        st.one_of(
            st.just(""), st.text("0123456789", min_size=0, max_size=11).map(lambda f: "." + f)
        ),
        TZ,
    ),
)
JSON_TEXT = st.one_of(
    st.sampled_from(
        [
            "{}",
            "[]",
            '{"a":1}',
            '[1,2.50,"x",null,true,{"b":[]}]',
            "1",
            '"s"',
            "{",
            "[1,]",
            '{"n":1e999}',
            '{"n":NaN}',
            '{"n":' + "1" * 40 + "}",
            ' {"a":"\\n\\u00e9"} ',
            '{"a":"\\ud800"}',
            "[1e-131]",
            '{"a":{"a":{"a":[]}}}',
            '{"id":12345678901234567890}',
            "[9007199254740991,-9007199254740992]",
            '{"p":{"q":[0.1234567890123456]}}',
        ]
    ),
    st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(10**40), 10**40),
            st.decimals(allow_nan=False, allow_infinity=False, places=5),
            TEXT,
        ),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)
        ),
        max_leaves=6,
    ).map(lambda v: json.dumps(v, default=str, ensure_ascii=bool(len(str(v)) % 2))),
)
ANY_VALUE = st.one_of(TEXT, NUMBER, BOOLEAN, DATE, DATETIME, JSON_TEXT, st.just(""))
BY_TYPE = {
    "string": st.one_of(TEXT, TEXT, ANY_VALUE),
    "integer": st.one_of(NUMBER, NUMBER, ANY_VALUE),
    "decimal": st.one_of(NUMBER, NUMBER, ANY_VALUE),
    "boolean": st.one_of(BOOLEAN, BOOLEAN, ANY_VALUE),
    "date": st.one_of(DATE, DATE, ANY_VALUE),
    "datetime": st.one_of(DATETIME, DATETIME, ANY_VALUE),
    "json": st.one_of(JSON_TEXT, JSON_TEXT, ANY_VALUE),
}

# ---------------------------------------------------------------------------
# specs
# ---------------------------------------------------------------------------

DECIMAL_BOUND = st.one_of(
    st.integers(-1000, 1000),
    st.sampled_from(
        ["0", "-0.5", "1e3", "12.25", "-1E-130", "99999999999999999999999999999999999999999"]
    ),
    st.floats(-1e6, 1e6, allow_nan=False),
)


@st.composite
def column_body(draw: Any, ctype: str, pool: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"type": ctype}
    if draw(st.booleans()):
        body["required"] = True
    if ctype == "string":
        if draw(st.integers(0, 3)) == 0:
            body["min_length"] = draw(st.integers(0, 4))
        if draw(st.integers(0, 3)) == 0:
            body["max_length"] = draw(st.integers(body.get("min_length", 0), 12))
        if draw(st.integers(0, 4)) == 0:
            body["enum"] = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4))
        if draw(st.integers(0, 4)) == 0:
            body["pattern"] = draw(st.sampled_from(["^[A-Z]", "[0-9]$", "x", "^$", "é|😀", "\\s"]))
    elif ctype in ("integer", "decimal"):
        lo = draw(st.one_of(st.none(), DECIMAL_BOUND))
        hi = draw(st.one_of(st.none(), DECIMAL_BOUND))
        if lo is not None:
            body["min"] = lo
        if hi is not None:
            body["max"] = hi
        if ctype == "integer" and draw(st.integers(0, 3)) == 0:
            body["enum"] = draw(st.lists(st.integers(-20, 20), min_size=1, max_size=4))
    elif ctype == "date":
        for key in ("min", "max"):
            if draw(st.integers(0, 2)) == 0:
                body[key] = draw(st.sampled_from(["2000-01-01", "2024-02-29", "1999/12/31"]))
    return body


LITERALS = ["", "P", "#", "@", "x{{y}}", "é", "-", "{{", "😀"]


@st.composite
def template(draw: Any, names: list[str], need_column: bool) -> str:
    parts = []
    for _ in range(draw(st.integers(0 if not need_column else 1, 3))):
        parts.append(draw(st.sampled_from(LITERALS)))
        parts.append("{" + draw(st.sampled_from(names)) + "}")
    parts.append(draw(st.sampled_from(LITERALS)))
    return "".join(parts)


@st.composite
def spec_and_rows(draw: Any) -> tuple[Any, list[str], list[tuple[Any, list[str]]], RunContext]:
    ncols = draw(st.integers(1, 5))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=ncols, max_size=ncols, unique=True))
    types = {n: draw(st.sampled_from(list(BY_TYPE))) for n in names}
    pool = ["A", "b", "", "é", "x y", "😀"]
    columns: dict[str, Any] = {}
    renamed: set[str] = set()
    for n in names:
        body = draw(column_body(types[n], pool))
        choice = draw(st.integers(0, 5))
        if choice == 0:
            body["attribute"] = False
        elif choice == 1:
            new = draw(st.sampled_from(["attr", "x", "é", 'q"uote', "a\\b", "new\nline"]))
            if new not in renamed and new not in names:
                body["attribute"] = new
                renamed.add(new)
        columns[n] = body
    extra = [n for n in NAMES if n not in names]
    tpl_names = names + extra[:1]
    record = {
        "type": draw(
            st.one_of(st.sampled_from(["PRODUCT", "P#X", "A@B", "é"]), template(tpl_names, False))
        ),
        "code": draw(template(tpl_names, True)),
    }
    if draw(st.booleans()):
        record["tenant"] = draw(
            st.one_of(st.sampled_from(["acme", "t#x", "x" * 2050]), template(tpl_names, False))
        )
    if draw(st.booleans()):
        record["name"] = draw(template(tpl_names, False))
    doc: dict[str, Any] = {"record": record, "columns": columns}
    numbers = draw(st.sampled_from([None, "mbc", "dynamodb"]))
    if numbers is not None:
        doc["target"] = {"numbers": numbers}
    try:
        spec = parse_spec(doc)
    except SpecError:
        assume(False)
    header = list(dict.fromkeys(spec.needed_columns))
    header += draw(st.lists(st.sampled_from(["z1", "z2"]), max_size=2, unique=True))
    header = draw(st.permutations(header))
    if draw(st.integers(0, 9)) == 0:
        header = header + [draw(st.sampled_from(header))]  # a duplicated name: last one wins

    def field(col: str) -> Any:
        ctype = types.get(col, "string")
        return BY_TYPE[ctype]

    nrows = draw(st.integers(1, 8))
    rows = []
    for _ in range(nrows):
        fields = [draw(field(h)) for h in header]
        if draw(st.integers(0, 5)) == 0 and rows:
            fields = list(rows[-1][1])  # duplicate keys
        shape = draw(st.integers(0, 40))
        if shape == 0:
            fields = fields + ["extra"]
        elif shape == 1:
            fields = tuple(fields)
        elif shape == 2 and len(fields) > 1:
            fields = fields[:-1]
        line = draw(
            st.one_of(st.integers(1, 10**6), st.integers(-5, 5), st.just(2**70), st.just(True))
        )
        rows.append((line, fields))
    ctx = RunContext(
        run_id=draw(st.sampled_from(["r1", 'q"\\x', "é😀"])),
        timestamp="2024-01-01T00:00:00+00:00",
        source=draw(st.sampled_from(["import-csv:r1", "src\n"])),
        user=draw(st.sampled_from(["importer", "ü"])),
        ip=draw(st.sampled_from([None, "10.0.0.1", ""])),
        ttl=draw(st.sampled_from([None, 1767225600, 1798761600 + 90 * 86400])),
    )
    return spec, header, rows, ctx


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        res = fn(*args)
    except Exception as exc:  # noqa: BLE001 - compared by type
        return ("raised", type(exc))
    items = [(i.line, i.pk, i.sk, json.loads(i.wire)) for i in res.items]
    return items, res.rejects, [i.wire for i in res.items]


def assert_same(spec: Any, header: Any, rows: Any, ctx: RunContext) -> None:
    ref = _outcome(reference.transform_batch, spec, header, rows, ctx)
    nat = _outcome(native_engine.transform_batch, spec, header, rows, ctx)
    if ref[0] == "raised" or nat[0] == "raised":
        assert ref == nat
        return
    assert nat[0] == ref[0]
    assert nat[1] == ref[1]
    assert nat[2] == ref[2]  # byte-identical wire as well (stronger than required)


@SETTINGS
@given(spec_and_rows())
def test_transform_matches_reference(case: Any) -> None:
    assert_same(*case)


CTX = RunContext(run_id="r", timestamp="2024-01-01T00:00:00+00:00", source="s")


@settings(max_examples=400 * SCALE, deadline=None)
@given(
    st.sampled_from(["integer", "decimal"]),
    st.lists(NUMBER, min_size=1, max_size=20),
    st.one_of(st.none(), DECIMAL_BOUND),
    st.one_of(st.none(), DECIMAL_BOUND),
    st.sampled_from(["mbc", "dynamodb"]),
)
def test_numbers_match_reference(
    ctype: str, values: list[str], lo: Any, hi: Any, numbers: str
) -> None:
    body: dict[str, Any] = {"type": ctype}
    if lo is not None:
        body["min"] = lo
    if hi is not None:
        body["max"] = hi
    try:
        spec = parse_spec(
            {
                "record": {"type": "T", "code": "{k}"},
                "columns": {"k": {}, "n": body},
                "target": {"numbers": numbers},
            }
        )
    except SpecError:
        assume(False)
    rows = [(i + 2, [f"k{i}", v]) for i, v in enumerate(values)]
    assert_same(spec, ["k", "n"], rows, CTX)


@settings(max_examples=300 * SCALE, deadline=None)
@given(
    st.lists(st.tuples(BOOLEAN, DATE, DATETIME, JSON_TEXT), min_size=1, max_size=20),
    st.sampled_from(["mbc", "dynamodb"]),
)
def test_booleans_dates_datetimes_json_match_reference(
    values: list[tuple[str, ...]], numbers: str
) -> None:
    spec = parse_spec(
        {
            "target": {"numbers": numbers},
            "record": {"type": "T", "code": "{k}"},
            "columns": {
                "k": {},
                "b": {"type": "boolean"},
                "d": {"type": "date"},
                "t": {"type": "datetime"},
                "j": {"type": "json"},
            },
        }
    )
    for i, (b, d, t, j) in enumerate(values):
        # each column alone, so a reject in one does not hide the others
        rows = [
            (1, [f"k{i}", b, "", "", ""]),
            (2, [f"l{i}", "", d, "", ""]),
            (3, [f"m{i}", "", "", t, ""]),
            (4, [f"n{i}", "", "", "", j]),
        ]
        assert_same(spec, ["k", "b", "d", "t", "j"], rows, CTX)


def test_key_and_size_limits() -> None:
    spec = parse_spec(
        {
            "record": {"type": "T", "code": "{k}", "tenant": "{t}"},
            "columns": {"k": {}, "t": {}, "big": {}},
        }
    )
    rows = [
        (2, ["a", "x" * 2046, ""]),
        (3, ["a", "x" * 2047, ""]),
        (4, ["é" * 509, "t", ""]),
        (5, ["é" * 510, "t", ""]),
        (6, ["b", "t", "y" * 409_000]),
        (7, ["c", "t", "y" * 410_000]),
        (8, ["", "t", ""]),
        (9, ["d", "", ""]),
        (10, ["e", "a#b", ""]),
    ]
    assert_same(spec, ["k", "t", "big"], rows, CTX)


def test_lone_surrogates_are_rejected_rows_in_both_engines() -> None:
    spec = parse_spec(
        {
            "record": {"type": "T", "code": "{k}"},
            "columns": {"k": {}, "j": {"type": "json"}, "s": {}},
        }
    )
    header = ["k", "j", "s"]
    # a surrogate in a field the item never holds: same outcome
    assert_same(spec, header, [(2, ["a", "", "x"]), (3, ["b", "", "x"])], CTX)
    # reaching the item: the row is rejected, the rest of the batch goes on
    for fields in (["a", '{"x":"\\ud800"}', ""], ["a", "", "\ud800"]):
        rows = [(2, fields), (3, ["b", "", ""])]
        assert_same(spec, header, rows, CTX)
        res = native_engine.transform_batch(spec, header, rows, CTX)
        assert res.rejects == [
            Reject(2, "", "", "not valid Unicode (lone surrogate)", tuple(fields))
        ]
        assert [i.line for i in res.items] == [3]


# ---------------------------------------------------------------------------
# row_json_size
# ---------------------------------------------------------------------------


@settings(max_examples=300 * SCALE, deadline=None)
@given(st.lists(st.tuples(TEXT, st.one_of(TEXT, ANY_VALUE)), max_size=8))
def test_row_json_size_matches(pairs: list[tuple[str, str]]) -> None:
    header = [h for h, _ in pairs]
    fields = [f for _, f in pairs]
    assert native_engine.row_json_size(header, fields) == item_json_size(header, fields)
    assert native_engine.row_json_size(header, fields[:-1]) == item_json_size(header, fields[:-1])


def test_row_json_size_surrogate_raises_like_python() -> None:
    with pytest.raises(UnicodeEncodeError):
        item_json_size(["a"], ["\ud800"])
    with pytest.raises(UnicodeEncodeError):
        native_engine.row_json_size(["a"], ["\ud800"])


# ---------------------------------------------------------------------------
# the CSV reader
# ---------------------------------------------------------------------------

PIECES = [
    b",",
    b'"',
    b'""',
    b"\\",
    b"\r",
    b"\n",
    b"\r\n",
    b"a",
    b"bc",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xe2\x82",
    b"\xe2\x82\xac",
    b"\xf0\x9f\x98\x80",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b" ",
    b"|",
    b"\t",
    b";",
    b"x,y,z\n",
    b'"q\nq"',
]
CSV_BYTES = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(PIECES), max_size=60).map(b"".join),
)


class _Trickle(io.RawIOBase):
    """Returns at most `step` bytes per read: chunk boundaries everywhere."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data = data
        self.pos = 0
        self.step = step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.step if n < 0 else min(n, self.step)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


def _read_all(make: Any) -> Any:
    try:
        reader = make()
        rows = list(reader)
        return reader.header, rows, reader.padded, reader.truncated
    except Exception as exc:  # noqa: BLE001 - compared by type and message
        return (type(exc), str(exc))


@settings(max_examples=600 * SCALE, deadline=None)
@given(
    CSV_BYTES,
    st.sampled_from(sorted(DELIMITERS.values())),
    st.booleans(),
    st.integers(1, 40),
)
@example(b'\xef\\\x86\\\xef\\~\\~\\\xe7""""":\x00"\t"', "\t", True, 3)  # found by atheris
@example(b'"\xe2\n\x82""\xac"\r\n\xff\\,', ",", False, 1)
def test_reader_matches_csvreader(data: bytes, delim: str, given_header: bool, step: int) -> None:
    options = CsvOptions(
        delimiter=delim,
        header_location="GIVEN" if given_header else "FIRST_ROW",
        headers=("h1", "h2") if given_header else None,
    )
    ref = _read_all(lambda: CsvReader(io.BytesIO(data), options))
    nat = _read_all(lambda: native_engine.open_reader(io.BytesIO(data), options))
    assert nat == ref
    small = _read_all(
        lambda: native_engine.open_reader(_Trickle(data, step), options, chunk_bytes=16)
    )
    assert small == ref


def test_reader_splits_words_at_every_offset_like_csvreader() -> None:
    """The reader takes eight bytes at a time: each byte that changes its state
    (delimiter, quote, backslash, doubled quote) is placed at every offset of a
    word, after every prefix and in every field state, and the rows must be
    CsvReader's."""
    specials = [b",", b'"', b"\\", b'""', b'\\"', b"\\,", b"\\\\", b"\\x", b'",', b',"']
    lines = []
    for special in specials:
        for before in range(0, 18):
            for lead in (b"", b'"', b"a"):
                prefix = lead + b"abcdefghijklmnopq"[:before]
                lines.append(prefix + special + b"tail,end")
                lines.append(prefix + special)
    data = b"h1,h2\n" + b"\n".join(lines) + b"\n"
    options = CsvOptions()
    ref = _read_all(lambda: CsvReader(io.BytesIO(data), options))
    assert len(ref[1]) > 500
    for chunk in (16, 64, 1 << 16):
        nat = _read_all(
            lambda chunk=chunk: native_engine.open_reader(
                io.BytesIO(data), options, chunk_bytes=chunk
            )
        )
        assert nat == ref


def test_reader_odd_delimiter_uses_python_reader() -> None:
    options = CsvOptions(delimiter="é")
    reader = native_engine.open_reader(io.BytesIO("aéb\n1é2\n".encode()), options)
    assert isinstance(reader, CsvReader)
    assert reader.header == ["a", "b"]


def test_reader_large_quoted_field_across_chunks() -> None:
    data = b'h\n"' + b"x\n" * 50_000 + b'"\nlast\n'
    options = CsvOptions()
    ref = _read_all(lambda: CsvReader(io.BytesIO(data), options))
    nat = _read_all(lambda: native_engine.open_reader(io.BytesIO(data), options, chunk_bytes=64))
    assert nat == ref


def test_enum_reasons_list_the_values_in_both_engines() -> None:
    many = [f"v{i}" for i in range(60)] + ["a b", 'q"uote', "x,y", "é😀"]
    spec = parse_spec(
        {
            "record": {"type": "T", "code": "{k}"},
            "columns": {
                "k": {},
                "s": {"enum": ["acme", "globex"]},
                "l": {"enum": many},
                "o": {"enum": ["a b", 'q"uote', "x,y", "", "é😀"]},
                "n": {"type": "integer", "enum": [1, 2, 30]},
            },
        }
    )
    header = ["k", "s", "l", "o", "n"]
    rows = [
        (2, ["a", "initech", "v1", "a b", "1"]),
        (3, ["b", "acme", "zz", "a b", "1"]),
        (4, ["c", "acme", "v2", "nope", "1"]),
        (5, ["d", "acme", "v3", "x,y", "4"]),
        (6, ["e", "acme", "é😀", "é😀", "30"]),
    ]
    assert_same(spec, header, rows, CTX)
    rejects = native_engine.transform_batch(spec, header, rows, CTX).rejects
    reasons = {r.column: r.reason for r in rejects}
    assert reasons["s"] == "not one of the allowed values: acme, globex"
    assert reasons["l"].startswith("not one of the allowed values: v0, v1, v2, ")
    assert reasons["l"].endswith(" more)")
    assert reasons["o"] == 'not one of the allowed values: "a b", "q\\"uote", "x,y", "", é😀'
    assert reasons["n"] == "not one of the allowed values: 1, 2, 30"
    assert len(rejects) == 4


# --------------------------------------------------------------------------- batches


def _batches_by_row(make: Any, max_items: int | None, max_bytes: int | None) -> Any:
    """The batches the driver cuts from the reader's rows, row by row (the Python path)."""
    try:
        reader = make()
        batcher = Batcher(max_items=max_items, max_bytes=max_bytes, batch_input=BATCH_INPUT)
        out = list(batcher.cut(iter(reader), reader.header, item_json_size))
        return reader.header, out, reader.padded, reader.truncated
    except Exception as exc:  # noqa: BLE001 - compared by type and message
        return (type(exc), str(exc))


def _batches_native(make: Any, max_items: int | None, max_bytes: int | None) -> Any:
    try:
        reader = make()
        batcher = Batcher(max_items=max_items, max_bytes=max_bytes, batch_input=BATCH_INPUT)
        cut = reader.read_batches(batcher)
        if cut is None:  # a header the native cut steps aside for (repeated names)
            return "per-row"
        out = list(cut)
        return reader.header, out, reader.padded, reader.truncated
    except Exception as exc:  # noqa: BLE001 - compared by type and message
        return (type(exc), str(exc))


BATCH_INPUT = {"runId": "r", "source": "s"}


@settings(max_examples=400 * SCALE, deadline=None)
@given(
    CSV_BYTES,
    st.sampled_from(sorted(DELIMITERS.values())),
    st.integers(1, 40),
    st.one_of(st.none(), st.integers(1, 6)),
    st.one_of(st.none(), st.integers(60, 400)),
    st.booleans(),
)
@example(b"a,b\n1,2\n3,4\n5,6\n", ",", 3, 2, None, True)
@example(b'a,b\n"x\ny",2\n3,\xff\n' + b"z" * 300 + b",1\n5,6", ",", 5, None, 120, True)
@example(b'h\x01,"q""",\xc3\xa9\n1,2,3\n4\n', ",", 2, 1, None, False)
def test_native_batches_match_the_batcher(
    data: bytes,
    delim: str,
    step: int,
    max_items: int | None,
    max_bytes: int | None,
    given_header: bool,
) -> None:
    """`read_batch` (rows, sizes and limits in C) cuts exactly the Batcher's batches."""
    if max_items is None and max_bytes is None:
        max_items = 3
    options = CsvOptions(
        delimiter=delim,
        header_location="GIVEN" if given_header else "FIRST_ROW",
        headers=("h1", 'h"2', "é") if given_header else None,
    )
    ref = _batches_by_row(
        lambda: native_engine.open_reader(io.BytesIO(data), options), max_items, max_bytes
    )
    nat = _batches_native(
        lambda: native_engine.open_reader(io.BytesIO(data), options), max_items, max_bytes
    )
    if nat == "per-row":
        return
    assert nat == ref
    small = _batches_native(
        lambda: native_engine.open_reader(_Trickle(data, step), options, chunk_bytes=16),
        max_items,
        max_bytes,
    )
    assert small == ref


def test_native_batches_step_aside_for_a_header_with_repeated_names() -> None:
    options = CsvOptions(header_location="GIVEN", headers=("a", "a"))
    reader = native_engine.open_reader(io.BytesIO(b"1,2\n"), options)
    batcher = Batcher(max_items=10, max_bytes=None, batch_input=BATCH_INPUT)
    assert reader.read_batches(batcher) is None


# --------------------------------------------------------------------------- escape scans


def _escape_extra_by_byte(data: bytes) -> int:
    return sum(1 if b in b'"\\\n\r\t\b\f' else 5 if b < 0x20 else 0 for b in data)


def test_the_word_at_a_time_escape_scan_sees_every_byte_at_every_place() -> None:
    """Every byte value, at each of the 16 places of two words and in the tail after
    them: the scans (eight bytes at a time) answer as the per-byte definition."""
    for value in range(256):
        for place in range(19):
            data = bytearray(b"a" * 19)
            data[place] = value
            for cut in (place + 1, 19):
                chunk = bytes(data[:cut])
                extra = _escape_extra_by_byte(chunk)
                needs = value < 0x20 or value in (0x22, 0x5C)
                assert _native.escape_scan(chunk) == (needs, extra), (value, place, cut)


@settings(max_examples=300 * SCALE, deadline=None)
@given(st.binary(max_size=64))
def test_the_escape_scan_answers_as_the_per_byte_definition(data: bytes) -> None:
    extra = _escape_extra_by_byte(data)
    assert _native.escape_scan(data) == (extra > 0, extra)


def _records_with_limit(make: Any) -> Any:
    try:
        return [(r.line, list(r.fields), r.error) for r in make()]
    except Exception as exc:  # noqa: BLE001 - compared by type and message
        return (type(exc), str(exc))


@settings(max_examples=600 * SCALE, deadline=None)
@given(
    CSV_BYTES,
    st.sampled_from(sorted(DELIMITERS.values())),
    st.integers(1, 40),
    st.integers(1, 40),
    st.one_of(st.none(), st.integers(1, 60)),
)
@example(b'"ab\r\ncd"\r\nxy\r', ",", 3, 1, None)
@example(b"\xef\xbb\xbfabc\\,d\r", ",", 2, 1, 1)
@example(b'"\x00\x00\x00\x00\n', ",", 5, 1, None)  # an open quote to the end, its newline counted
@example(b'"""""""\r', "\t", 7, 1, None)  # the same with a lone \r read at the very end
def test_a_record_over_the_limit_is_refused_alike(
    data: bytes, delim: str, limit: int, step: int, first: int | None
) -> None:
    """Issue 30 #7: the native reader skips a record over `max_record` bytes as it
    streams (its own byte automaton across buffer ends); the reference reads it whole.
    Same records, lines, errors -- at every buffer boundary."""
    from importer.input.source import iter_records

    if len(delim) != 1 or ord(delim) >= 128:
        return  # those delimiters take the reference reader in both engines
    ref = _records_with_limit(lambda: iter_records(io.BytesIO(data), delim, limit, first))

    def native() -> Any:
        reader = _native.RecordReader(
            _Trickle(data, step),
            delim,
            ParsedRow,
            SourceError,
            16,
            native_engine._reparse_record,
            limit if first is None else first,
        )
        first_row = next(reader, None)
        reader.max_record = limit
        return ([first_row] if first_row is not None else []) + list(reader)

    assert _records_with_limit(native) == ref


@settings(max_examples=300 * SCALE, deadline=None)
@given(st.lists(st.tuples(BOOLEAN, DATE, DATETIME, NUMBER), min_size=1, max_size=20))
def test_keys_over_typed_columns_render_the_normalised_value_in_both_engines(
    values: list[tuple[str, ...]],
) -> None:
    """A key renders what the attribute stores (issue 29): both engines, byte for byte."""
    spec = parse_spec(
        {
            "record": {"type": "T", "code": "{d}/{n}", "tenant": "{b}", "name": "{t}!"},
            "columns": {
                "b": {"type": "boolean"},
                "d": {"type": "date", "required": True},
                "t": {"type": "datetime"},
                "n": {"type": "decimal", "attribute": False},
            },
        }
    )
    rows = [(i + 2, list(v)) for i, v in enumerate(values)]
    assert_same(spec, ["b", "d", "t", "n"], rows, CTX)
