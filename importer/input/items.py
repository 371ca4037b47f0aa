"""Typed items (JSON, JSON Lines, Parquet) to the rows the engines read.

A CSV item is an object of strings; a JSON, JSONL or Parquet item carries numbers,
booleans, nulls, objects and lists.  The same spec applies to both, with the same
rules and reject reasons, so a typed value is mapped onto the one text form each
spec type is checked in -- never through a second parse where the types agree:

* a JSON number keeps the digits it was written with (`Num`, the literal itself), so
  `1.50` is checked and normalised exactly as the CSV field `1.50` is;
* a boolean becomes `true`/`false`, null (or a missing key) an empty field;
* an object or array in a `json` column is written back compactly (numbers as written);
* a string is a field like any CSV field: the text rules apply (so an export that
  quotes every value imports as its CSV would).

A value whose type does not fit its column (a number in a `string` column, a
boolean in an `integer` one, an object anywhere but `json`) is a reject of that
row, with its position (`expected integer, got a boolean`).  Columns the spec
uses only in templates take any scalar.

Batch sizes are measured on the item as ItemReader hands it to the child: the
whole object (every key, not only the spec's), as compact JSON with numbers as
written (docs/aws-facts.md, ItemBatcher).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LOOSE",
    "ItemDecoder",
    "ItemRow",
    "ItemMapper",
    "Mismatch",
    "Num",
    "TEMPLATE",
    "compact_size",
    "dump_json",
    "json_kind",
    "loads_item",
    "NumberCounter",
    "refuse_constant",
    "text_size",
    "value_text",
]

_NUMERIC = frozenset({"integer", "decimal"})
#: what a column only templates read takes: any scalar
TEMPLATE = "template"


class Num(str):
    """A JSON number as written in the source (`1.50` stays `1.50`)."""

    __slots__ = ()


class NumberCounter:
    """`json.loads` hook that also counts the numbers it kept as text (for sizes)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, text: str) -> Num:
        self.n += 1
        return Num(text)


def refuse_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (Python's parser would take them)."""
    raise ValueError(f"{name} is not JSON")


#: whitespace next to a structural character: where a JSON text is not compact
LOOSE = re.compile(r"[\[{,:][ \t\r\n]|[ \t\r\n][\]},:]")


class ItemDecoder:
    """Parses items with numbers kept as written, and sizes them as compact JSON.

    One per reader (the parser and its number counter are built once, not per
    item).  A text with no whitespace next to `{}[],:` (so none between tokens:
    JSON has no other place for it) is its own compact form, and its length is
    the item's size; any other is measured on its re-serialised compact form.
    """

    __slots__ = ("_counter", "_decode")

    def __init__(self) -> None:
        self._counter = NumberCounter()
        self._decode = json.JSONDecoder(
            parse_float=self._counter, parse_constant=refuse_constant
        ).decode

    def __call__(self, text: str, nbytes: int = -1) -> tuple[Any, int]:
        """(value, compact UTF-8 size) of `text`; `nbytes`: its UTF-8 length, if known."""
        counter = self._counter
        counter.n = 0
        value = self._decode(text)
        stripped = text.strip()
        if LOOSE.search(stripped) is None:
            if nbytes >= 0:  # what strip() took off is ASCII whitespace: a byte a char
                return value, nbytes - (len(text) - len(stripped))
            if stripped.isascii():
                return value, len(stripped)
            return value, len(stripped.encode("utf-8", "surrogatepass"))
        return value, compact_size(value, counter.n)


def text_size(text: str, value: Any, kept_numbers: int) -> int:
    """The compact size of `value`, parsed from `text` (no surrounding whitespace)."""
    if LOOSE.search(text) is None:
        return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return compact_size(value, kept_numbers)


def loads_item(text: str) -> tuple[Any, int]:
    """One JSON value and its compact UTF-8 size, numbers kept as written."""
    return ItemDecoder()(text)


def compact_size(value: Any, kept_numbers: int = 0) -> int:
    """UTF-8 length of `value` as compact JSON; `kept_numbers` `Num`s are unquoted."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    n = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return n - 2 * kept_numbers


def json_kind(value: Any) -> str:
    """How a reject reason names a JSON value's type."""
    t = type(value)
    if t is bool:
        return "a boolean"
    if t is Num or t is int or t is float:
        return "a number"
    if t is dict:
        return "an object"
    if t is list:
        return "an array"
    if t is str:
        return "a string"
    return f"a {t.__name__}"


def dump_json(value: Any) -> str:
    """Compact JSON of a nested value, `Num`s written as the numbers they are."""
    t = type(value)
    if t is Num:
        return str(value)
    if t is dict:
        return (
            "{"
            + ",".join(
                json.dumps(k, ensure_ascii=False) + ":" + dump_json(v) for k, v in value.items()
            )
            + "}"
        )
    if t is list:
        return "[" + ",".join(dump_json(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class Mismatch(Exception):
    """A value's type does not fit its column; the message is the reason."""


def value_text(value: Any, kind: str) -> str:
    """The field a typed value stands for in a `kind` column, or `Mismatch`."""
    t = type(value)
    if t is str:
        return value
    if value is None:
        return ""
    if t is Num or t is int:
        if kind in _NUMERIC or kind == TEMPLATE:
            return str(value)
    elif t is bool:
        if kind == "boolean" or kind == TEMPLATE:
            return "true" if value else "false"
    elif t is float:  # only from a reader that made floats itself
        if kind in _NUMERIC or kind == TEMPLATE:
            return repr(value)
    elif t is dict or t is list:
        if kind == "json":
            return dump_json(value)
    raise Mismatch(f"expected {kind if kind != TEMPLATE else 'a scalar'}, got {json_kind(value)}")


@dataclass(slots=True)
class ItemRow:
    """One item as a row: its position, the spec's fields, or why it is refused.

    `line` is where a user finds the item: the line of a JSONL file, the index
    of a JSON array, the row of a Parquet file.  `size` is the item's compact
    JSON size, which ItemBatcher counts.
    """

    line: int
    fields: list[str]
    error: str | None = None
    size: int = 0
    column: str = ""
    value: str = ""


class ItemMapper:
    """Maps items (dicts) onto the spec's columns, one converter per column type."""

    def __init__(self, header: Sequence[str], kinds: Sequence[str]) -> None:
        # the spec's columns and their types (`Spec.kinds`; "template" for a column
        # only templates read): given, not looked up, as the spec sits a layer above
        self.header: list[str] = list(header)
        self.kinds = list(kinds)
        self._pairs = list(zip(self.header, self.kinds, strict=True))

    def row(self, line: int, item: Any, size: int) -> ItemRow:
        """The row of one item; a non-object or a misfit value is a refused row."""
        if type(item) is not dict:
            return ItemRow(
                line, [], f"not a JSON object: {json_kind(item)}", size, "", _shown(item)
            )
        get = item.get
        try:
            fields = [
                v if type(v := get(name)) is str else value_text(v, kind)
                for name, kind in self._pairs
            ]
        except Mismatch:
            return self._misfit(line, item, size)
        return ItemRow(line, fields, None, size)

    def fields(self, item: Any) -> list[str] | None:
        """The item's fields; None for a non-object or a misfit (`row` says why)."""
        if type(item) is not dict:
            return None
        get = item.get
        try:
            return [
                v if type(v := get(name)) is str else value_text(v, kind)
                for name, kind in self._pairs
            ]
        except Mismatch:
            return None

    def _misfit(self, line: int, item: dict[str, Any], size: int) -> ItemRow:
        """The row of an item with a value that does not fit: the first such column."""
        for name, kind in self._pairs:
            value = item.get(name)
            try:
                value_text(value, kind)
            except Mismatch as exc:
                texts = [_field_text(item.get(n)) for n in self.header]
                return ItemRow(line, texts, str(exc), size, name, _shown(value))
        raise AssertionError("no misfit found")  # pragma: no cover


def _field_text(value: Any) -> str:
    """Any value as the rejects file shows it."""
    try:
        return value_text(value, TEMPLATE)
    except Mismatch:
        return dump_json(value)


def _shown(value: Any, limit: int = 200) -> str:
    text = value if type(value) is str else dump_json(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
