"""A JSON array read in C must be the Python reader, exactly: property tests and a fuzz.

`JsonArrayReader.read_batches` finds the elements with `_native.json_array_rows`
and takes compact objects as a JSONL line is taken; `read_batches_python` (the
reference `items` reader, element by element) is the definition.  Random arrays
(the JSONL tests' values and objects, loose and compact, non-objects, whitespace
and a BOM around them, cut short or with bytes spliced in) read in blocks of 1 to
80 bytes, so elements span blocks: the batches (rows, input bytes, rejects) and the
first object's keys must be equal, or both readers stop with the same one line.
The boundary finder takes any bytes at any offset without crashing and accounts
for every element it reads.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from importer import _native
from importer.input.json_array import JsonArrayReader
from importer.input.source import SourceError
from tests.test_native_equivalence_typed import (
    _VALUE,
    HEADER,
    KEYS,
    KINDS,
    SETTINGS,
    _batcher,
    _batches,
)

_WS = st.sampled_from(["", "", "", " ", "\n", "\r\n  ", "\t"])


@st.composite
def _element(draw: Any) -> str:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(_VALUE)  # a non-object (or an object of any keys)
    pairs = draw(st.lists(st.tuples(st.sampled_from(KEYS), _VALUE), max_size=7))
    sep = draw(st.sampled_from([",", ",", ",", ", ", ",\n  "]))
    colon = draw(st.sampled_from([":", ":", ":", ": "]))
    return "{" + sep.join(f'"{k}"{colon}{v}' for k, v in pairs) + "}"


@st.composite
def _array(draw: Any) -> bytes:
    elements = draw(st.lists(_element(), max_size=20))
    ws = [draw(_WS) for _ in range(2 * len(elements) + 2)]
    text = ws[0] + "["
    for i, e in enumerate(elements):
        text += ws[2 * i + 1] + e + ws[2 * i + 2] + ("," if i + 1 < len(elements) else "")
    text += ws[-1] + "]" + draw(st.sampled_from(["", "\n", " ", "x", ",", "]"]))
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    damage = draw(st.integers(0, 5))
    if damage == 1 and data:  # cut short
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == 2:  # bytes spliced in
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return data


def _outcome(read: Any) -> tuple[str, Any]:
    try:
        return "ok", _batches(read())
    except SourceError as exc:
        return "error", str(exc)


def _both(data: bytes, chunk: int, max_items: int, max_bytes: int) -> None:
    native = JsonArrayReader(io.BytesIO(data), HEADER, KINDS, name="a.json", chunk_bytes=chunk)
    python = JsonArrayReader(io.BytesIO(data), HEADER, KINDS, name="a.json")
    got = _outcome(lambda: native.read_batches(_batcher(max_items, max_bytes)))
    want = _outcome(lambda: python.read_batches_python(_batcher(max_items, max_bytes)))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        # invalid UTF-8 stops both with one line, but which line -- that, or an error
        # before it -- depends on how far ahead a reader decoded (the reference's own
        # message changes with its block size)
        if got[0] == "error" and want[0] == "error":
            return
    assert got == want
    if want[0] == "ok":
        assert native.first_keys == python.first_keys


@SETTINGS
@given(
    data=_array(),
    chunk=st.integers(1, 80),
    max_items=st.integers(0, 4),
    max_bytes=st.integers(40, 400),
)
@example(data=b'[{"s":"a"},{"n":-0}, [1] ,{"s":"x"}]', chunk=3, max_items=0, max_bytes=200)
@example(data=b'\xef\xbb\xbf [ {"s":"a"} , 3 ]\n', chunk=1, max_items=2, max_bytes=200)
@example(data=b'[{"s":"a"},{"s":"b"', chunk=4, max_items=0, max_bytes=200)
@example(data=b'[{"s":"a"},]', chunk=80, max_items=0, max_bytes=200)
@example(data=b'[{"s":"a"} {"s":"b"}]', chunk=80, max_items=0, max_bytes=200)
@example(data=b'[{"s":"\xff"}]', chunk=80, max_items=0, max_bytes=200)
@example(data=b'[{"s":"a"}] x', chunk=80, max_items=0, max_bytes=200)
def test_json_array_native_batches_are_the_python_reader_s(
    data: bytes, chunk: int, max_items: int, max_bytes: int
) -> None:
    _both(data, chunk, max_items, max_bytes)


@SETTINGS
@given(data=st.binary(max_size=120), chunk=st.integers(1, 40))
def test_any_bytes_end_alike_in_both_readers(data: bytes, chunk: int) -> None:
    _both(data, chunk, 0, 400)
    _both(b"[" + data, chunk, 0, 400)
    _both(b'[{"s":"a"},' + data, chunk, 0, 400)


@SETTINGS
@given(
    data=st.binary(max_size=200),
    pos=st.integers(0, 200),
    first=st.integers(0, 10**6),
    limit=st.integers(-1, 5),
    alone=st.booleans(),
)
def test_the_boundary_finder_takes_any_bytes_and_accounts_for_every_element(
    data: bytes, pos: int, first: int, limit: int, alone: bool
) -> None:
    pos = min(pos, len(data))
    kinds = [_native.JSONL_KINDS[k] for k in KINDS]
    names = [h.encode() for h in HEADER]
    rows, sizes, others, count, at, status = _native.json_array_rows(
        data, pos, first, names, kinds, limit, alone
    )
    assert status in (0, 1, 2, 3)
    assert pos <= at <= len(data)
    assert len(memoryview(sizes).cast("q")) == len(rows)
    assert len(rows) + len(others) == count
    assert limit < 0 or count <= limit
    taken = sorted([line for line, _ in rows] + [index for _, index, _, _ in others])
    assert taken == list(range(first, first + count))
    for row, _index, a, e in others:
        assert 0 <= row <= len(rows) and pos <= a < e <= at
    if alone:
        assert len(rows) == 0


def test_pos_outside_the_buffer_is_refused():
    names, kinds = [b"s"], [0]
    with pytest.raises(ValueError):
        _native.json_array_rows(b"[]", 3, 0, names, kinds)


def test_an_element_spanning_many_blocks_is_read_whole():
    big = "x" * 5000
    data = json.dumps([{"s": "a"}, {"s": big, "t": "y"}, {"s": "c"}], separators=(",", ":"))
    reader = JsonArrayReader(io.BytesIO(data.encode()), HEADER, KINDS, chunk_bytes=64)
    batches = _batches(reader.read_batches(_batcher(0, 100_000)))
    rows = [r for b in batches for r in b[1]]
    assert [(line, f[0]) for line, f in rows] == [(0, "a"), (1, big), (2, "c")]


def test_compact_objects_are_taken_in_c(monkeypatch):
    """The benchmark's shape (one compact object a line) never reaches the Python parser
    after the first element (whose keys the summary lists)."""
    data = ("[\n" + ",\n".join(f'{{"s":"v{i}","n":{i}}}' for i in range(500)) + "\n]\n").encode()
    reader = JsonArrayReader(io.BytesIO(data), HEADER, KINDS, chunk_bytes=1000)
    calls = []
    real = reader._python_element
    monkeypatch.setattr(reader, "_python_element", lambda *a: calls.append(a[1]) or real(*a))
    rows = [r for b in _batches(reader.read_batches(_batcher(0, 100_000))) for r in b[1]]
    assert len(rows) == 500 and calls == [0]
    assert reader.first_keys == ["s", "n"]


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_a_broken_array_names_the_character_where_it_broke_whatever_the_block(chunk):
    """The reference counted characters twice when a block ended inside the element."""
    for data, where in (
        (b'[{"s":"a"},]', "index 1 (character 12)"),
        (b'[{"s":"a"},0', "after array index 1 (character 13)"),
    ):
        for read in ("read_batches", "read_batches_python"):
            reader = JsonArrayReader(io.BytesIO(data), HEADER, KINDS, chunk_bytes=chunk)
            with pytest.raises(SourceError, match=re.escape(where)):
                _batches(getattr(reader, read)(_batcher(0, 400)))


def test_the_lead_s_trailing_comma_case_names_its_true_character():
    """A BOM, a non-object element and `,]` at the very end, read in blocks so the error
    comes after a refill: the character named is where `]` stands in the file."""
    text = (
        '\ufeff[{"code":"B1","name":"one"}, 7, {"code":"B2","name":"two"},'
        ' {"code":"B3","name":"three"},]'
    )
    data = text.encode()
    where = len(text)  # the `]`, 1-based, counting the BOM as one character
    for chunk in (1, 5, 16, 64, 1 << 20):
        for read in ("read_batches", "read_batches_python"):
            reader = JsonArrayReader(io.BytesIO(data), HEADER, KINDS, chunk_bytes=chunk)
            with pytest.raises(SourceError, match=rf"index 4 \(character {where}\)"):
                _batches(getattr(reader, read)(_batcher(0, 4000)))


def test_an_error_in_the_middle_of_a_later_block_names_its_true_character():
    good = ",".join(f'{{"s":"v{i:05d}","n":{i}}}' for i in range(3000))
    text = "[" + good + ', {"s": tru}, {"s":"after"}]'
    for chunk in (4096, 1 << 16):
        for read in ("read_batches", "read_batches_python"):
            reader = JsonArrayReader(io.BytesIO(text.encode()), HEADER, KINDS, chunk_bytes=chunk)
            with pytest.raises(SourceError, match=r"index 3000 \(character (\d+)\)") as caught:
                _batches(getattr(reader, read)(_batcher(0, 200_000)))
            got = int(re.search(r"character (\d+)", str(caught.value)).group(1))
            assert got == text.index("tru}") + 1, (read, chunk, got)  # where `tru` starts


@SETTINGS
@given(data=_array(), chunk=st.integers(1, 40))
@example(data=b"[44444,444400013.201342422]\x0e!\x00\x00;", chunk=16)
@example(data=b"[1,-2.5e+10,3]", chunk=9)
def test_the_python_reader_ends_alike_whatever_its_block_size(data: bytes, chunk: int) -> None:
    """The definition does not depend on where blocks end: a number cut at a block's end
    (`13.` of `13.5`) is read whole (the fuzzer found the reference reading `13` then `.`)."""
    small = JsonArrayReader(io.BytesIO(data), HEADER, KINDS, name="a.json", chunk_bytes=chunk)
    whole = JsonArrayReader(io.BytesIO(data), HEADER, KINDS, name="a.json")
    got = _outcome(lambda: small.read_batches_python(_batcher(0, 400)))
    want = _outcome(lambda: whole.read_batches_python(_batcher(0, 400)))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        if got[0] == want[0] == "error":
            return
    assert got == want
