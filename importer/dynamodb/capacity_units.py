"""What one item costs in DynamoDB capacity units, by DynamoDB's published size rules.

DynamoDB bills and throttles in capacity units, not in items or requests: a write
costs one unit per started KB of the item, a strongly consistent read one unit
per started 4 KB.  `item_write_units` / `item_read_units` compute that from the
exact DynamoDB JSON the writer sends (cheaply: an item whose wire JSON fits in
1 KB costs 1 write unit without being parsed, because the item size is never
larger than its JSON).  The pacer, the writers, `importer plan` and the test
servers all count units here, so they cannot disagree on what a request costs.
"""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = [
    "WRITE_UNIT_BYTES",
    "READ_UNIT_BYTES",
    "ItemSizeError",
    "attribute_size",
    "item_size",
    "item_size_of",
    "item_write_units",
    "item_read_units",
]

#: One write unit covers an item of up to 1 KB (each started KB costs another).
WRITE_UNIT_BYTES = 1024
#: One strongly consistent read unit covers an item of up to 4 KB.
READ_UNIT_BYTES = 4096


class ItemSizeError(ValueError):
    """The wire JSON is not a DynamoDB item (not an object of typed attribute values)."""


def _number_size(text: str) -> int:
    """1 byte per two significant digits, plus 1 (leading/trailing zeros trimmed)."""
    mantissa = text.split("e", 1)[0].split("E", 1)[0]
    digits = mantissa.lstrip("+-").replace(".", "").strip("0")
    return (len(digits) + 1) // 2 + 1


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def attribute_size(value: dict[str, Any]) -> int:
    """Size of one typed attribute value (`{"S": "x"}`), by DynamoDB's published rules.

    Strings: UTF-8 bytes; numbers: (significant digits / 2) + 1; binary: raw bytes;
    BOOL/NULL: 1; sets: the sum of their members; L/M: 3 bytes of overhead, plus
    1 byte per element and each element's size (a map element also its name).
    """
    if type(value) is not dict or len(value) != 1:
        raise ItemSizeError(f"not a typed attribute value: {value!r:.60}")
    for kind, inner in value.items():
        if kind == "S":
            return _utf8_len(inner)
        if kind == "M":
            total = 3
            for name, v in inner.items():
                total += 1 + _utf8_len(name) + attribute_size(v)
            return total
        if kind == "N":
            return _number_size(inner)
        if kind == "BOOL" or kind == "NULL":
            return 1
        if kind == "L":
            total = 3
            for v in inner:
                total += 1 + attribute_size(v)
            return total
        if kind == "B":
            return len(base64.b64decode(inner))
        if kind == "SS":
            return sum(_utf8_len(x) for x in inner)
        if kind == "NS":
            return sum(_number_size(x) for x in inner)
        if kind == "BS":
            return sum(len(base64.b64decode(x)) for x in inner)
        raise ItemSizeError(f"unknown DynamoDB data type {kind!r}")
    raise AssertionError("unreachable")  # pragma: no cover


def item_size_of(item: dict[str, Any]) -> int:
    """Size of an item given as a dict of typed attribute values: names plus values."""
    if not isinstance(item, dict):
        raise ItemSizeError("an item must be a JSON object")
    return sum(_utf8_len(name) + attribute_size(v) for name, v in item.items())


def item_size(wire: bytes | str) -> int:
    """Exact DynamoDB size of an item given as its DynamoDB JSON (parsed once)."""
    try:
        item = json.loads(wire)
    except ValueError as exc:
        raise ItemSizeError(f"item is not JSON: {exc}") from None
    return item_size_of(item)


def item_write_units(wire: bytes | str) -> int:
    """Write units one put of this item costs: 1 per started KB of its size.

    Fast path: the DynamoDB size of an item never exceeds the length of its
    JSON (every name and value is written out, with quotes and type tags; a
    number's JSON has at least as many bytes as its size), so wire JSON of at
    most 1 KB means exactly 1 unit, without parsing.
    """
    n = len(wire)
    if n <= WRITE_UNIT_BYTES:
        return 1
    return max(1, -(-item_size(wire) // WRITE_UNIT_BYTES))


def item_read_units(wire: bytes | str, *, consistent: bool = True) -> float:
    """Read units to get this item: 1 per started 4 KB (half for eventually consistent)."""
    n = len(wire)
    units = 1 if n <= READ_UNIT_BYTES else max(1, -(-item_size(wire) // READ_UNIT_BYTES))
    return units if consistent else units / 2
