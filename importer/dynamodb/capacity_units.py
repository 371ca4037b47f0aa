"""What one item costs in DynamoDB capacity units, by DynamoDB's published size rules.

DynamoDB bills and throttles in capacity units, not in items or requests: a write
costs one unit per started KB of the item, a strongly consistent read one unit
per started 4 KB.  `item_write_units` / `item_read_units` compute that from the
exact DynamoDB JSON the writer sends, sized by `importer.item_size` (cheaply: an
item whose wire JSON fits in 1 KB costs 1 write unit without being parsed, because
the item size is never larger than its JSON).  The pacer, the writers, `importer plan` and the test
servers all count units here, so they cannot disagree on what a request costs.
"""

from __future__ import annotations

from importer.item_size import item_size

__all__ = [
    "WRITE_UNIT_BYTES",
    "READ_UNIT_BYTES",
    "item_write_units",
    "item_read_units",
]

#: One write unit covers an item of up to 1 KB (each started KB costs another).
WRITE_UNIT_BYTES = 1024
#: One strongly consistent read unit covers an item of up to 4 KB.
READ_UNIT_BYTES = 4096


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
