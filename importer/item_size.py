"""DynamoDB's item-size rules: how many bytes an item counts for, by the published rules.

One rule for every layer that sizes an item: the transform refuses an item over
DynamoDB's 400 KB limit with it, `importer.dynamodb.capacity_units` turns it into
write and read units, `importer plan` prices with it and the test servers throttle
by it.  It sits below the packages because the transform (which may not import the
DynamoDB transport) needs it as much as the transport does.

A number counts by the value DynamoDB stores, not by how it was written: 1 byte per
two significant digits, plus 1, with leading and trailing zeros trimmed
(docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html).
DynamoDB stores a normalised decimal, so an exponent (``1.5E+3``) is not digits:
``1.5E+3``, ``1500`` and ``15e2`` all count 2 bytes.
"""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = [
    "MAX_ITEM_BYTES",
    "ItemSizeError",
    "attribute_size",
    "item_size",
    "item_size_of",
]

#: The largest item DynamoDB stores (400 KB).
MAX_ITEM_BYTES = 400 * 1024


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
