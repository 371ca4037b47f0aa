"""One batch type: what the mode stage, the writers and the lookups ask of a batch's items.

Why: the native transform hands a batch as an `importer._native.ItemBlock` (every
item's wire JSON, pk and sk in one buffer, answered in C without a Python object
per item), the reference engine as plain `PreparedItem`s.  Both are an `ItemBatch`:
the same methods with the same answers, so the code downstream calls methods and
never asks which engine made the batch.  `ItemList` is the pure-Python one: each
method is the plain definition the C one is held equal to (tests/test_item_batch.py).

Every batch is also a sequence of `PreparedItem`; a slice of one is a batch too.
A caller with a plain sequence (a test, a list the stage kept) passes it through
`as_batch`, which takes a batch as it is and lists anything else.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from typing import SupportsIndex, overload

from importer._native import ItemBlock, wire_pick
from importer.records import PreparedItem

__all__ = ["ItemBatch", "ItemList", "as_batch"]


class ItemBatch(Sequence[PreparedItem]):
    """A batch's items (`ItemBlock` in C, `ItemList` in Python): what is asked of them.

    Declared, not duck-typed: `ItemBlock` is registered as one (and its stub says so).
    """

    __slots__ = ()

    @overload
    def __getitem__(self, index: SupportsIndex) -> PreparedItem: ...

    @overload
    def __getitem__(self, index: slice) -> ItemBatch: ...

    @abstractmethod
    def __getitem__(self, index: SupportsIndex | slice) -> PreparedItem | ItemBatch:
        """An item, or a slice of the batch (a batch too)."""

    @abstractmethod
    def lines(self) -> list[int]:
        """Each item's line."""
        ...

    @abstractmethod
    def pks(self) -> list[str]: ...

    @abstractmethod
    def sks(self) -> list[str]: ...

    @abstractmethod
    def distinct_pks(self) -> set[str]:
        """The set of the items' pks."""
        ...

    @abstractmethod
    def entity_keys(self, versioned: bool = True) -> list[tuple[str, str]]:
        """Each item's (pk, sk), or with `versioned` false (pk, sk without its "@version")."""
        ...

    @abstractmethod
    def keys_json(self, versioned: bool = True) -> bytes | None:
        """The keys as a BatchGetItem call lists them, when the batch writes them
        itself (C); None: the caller writes them from `entity_keys`."""
        ...

    @abstractmethod
    def at_version_1(self) -> bool:
        """Every item's sk ends in "@1" (what the transform writes)."""
        ...

    @abstractmethod
    def keys_unique(self) -> bool:
        """No (pk, sk) appears twice."""
        ...

    @abstractmethod
    def chunk_bounds(self, max_items: int, budget: int, per_item: int) -> list[int]:
        """Where requests are cut: `[0, b1, ..., len]`, request k the items `b[k]:b[k+1]`
        -- greedy, at most `max_items`, within `budget` bytes (wire plus `per_item`
        each), no key twice (an item alone over the budget is a request of its own)."""
        ...

    @abstractmethod
    def body(self, prefix: bytes, sep: bytes, suffix: bytes) -> bytes:
        """`prefix + sep.join(wires) + suffix`: a request body spliced from the wires."""
        ...

    @abstractmethod
    def write_units(self, unit_bytes: int) -> int:
        """One per item when every wire is at most `unit_bytes` (an item's DynamoDB
        size never exceeds its JSON); -1 otherwise, for the caller to size them."""
        ...

    @abstractmethod
    def pick(self, names: tuple[bytes, ...]) -> list[bytes | None]:
        """`importer._native.wire_pick(wire, names)` of each item."""
        ...

    @abstractmethod
    def block(self) -> ItemBlock | None:
        """The batch as the C core lays it out, for the C functions that read a block's
        buffer (`importer._native.block_new_entities`); None for an `ItemList`."""
        ...


class ItemList(list[PreparedItem], ItemBatch):
    """A batch as a list of `PreparedItem` (the reference engine's): each method is the
    plain Python definition of what `ItemBlock` answers in C."""

    __slots__ = ()

    @overload
    def __getitem__(self, index: SupportsIndex) -> PreparedItem: ...

    @overload
    def __getitem__(self, index: slice) -> ItemList: ...

    def __getitem__(self, index: SupportsIndex | slice) -> PreparedItem | ItemList:
        if isinstance(index, slice):  # a slice is a batch too, as a block's is
            return ItemList(list.__getitem__(self, index))
        return list.__getitem__(self, index)

    def lines(self) -> list[int]:
        return [it.line for it in self]

    def pks(self) -> list[str]:
        return [it.pk for it in self]

    def sks(self) -> list[str]:
        return [it.sk for it in self]

    def distinct_pks(self) -> set[str]:
        return {it.pk for it in self}

    def entity_keys(self, versioned: bool = True) -> list[tuple[str, str]]:
        if versioned:
            return [(it.pk, it.sk) for it in self]
        return [(it.pk, it.sk.rsplit("@", 1)[0]) for it in self]

    def keys_json(self, versioned: bool = True) -> bytes | None:
        return None  # written by the lookup from `entity_keys`, as for any listed keys

    def at_version_1(self) -> bool:
        return all(it.sk.endswith("@1") for it in self)

    def keys_unique(self) -> bool:
        return len({(it.pk, it.sk) for it in self}) == len(self)

    def chunk_bounds(self, max_items: int, budget: int, per_item: int) -> list[int]:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        bounds = [0]
        n = len(self)
        i = 0
        while i < n:
            # a full window that fits with no key twice is what the greedy loop takes
            window = list.__getitem__(self, slice(i, i + max_items))
            if (
                len(window) == max_items
                and len({(it.pk, it.sk) for it in window}) == max_items
                and sum([len(it.wire) for it in window]) + max_items * per_item <= budget
            ):
                i += max_items
                bounds.append(i)
                continue
            start, size = i, 0
            keys: set[tuple[str, str]] = set()
            while i < n:
                it = list.__getitem__(self, i)
                key = (it.pk, it.sk)
                add = len(it.wire) + per_item
                if i > start and (i - start >= max_items or size + add > budget or key in keys):
                    break
                keys.add(key)
                size += add
                i += 1
            bounds.append(i)
        return bounds

    def body(self, prefix: bytes, sep: bytes, suffix: bytes) -> bytes:
        return prefix + sep.join([it.wire for it in self]) + suffix

    def write_units(self, unit_bytes: int) -> int:
        if any(len(it.wire) > unit_bytes for it in self):
            return -1
        return len(self)

    def pick(self, names: tuple[bytes, ...]) -> list[bytes | None]:
        return [wire_pick(it.wire, names) for it in self]

    def block(self) -> ItemBlock | None:
        return None


ItemBatch.register(ItemBlock)


def as_batch(items: Iterable[PreparedItem] | ItemBatch) -> ItemBatch:
    """`items` as a batch: a batch as it is, any other sequence of items listed."""
    if isinstance(items, (ItemBlock, ItemList)):
        return items
    return ItemList(items)
