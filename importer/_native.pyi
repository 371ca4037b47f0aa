"""Type stub for the compiled core (`_native/_native.pyx`); see importer/native_engine.py."""

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any

CODES: dict[str, int]

def escape_json_string(value: str) -> bytes: ...
def escape_scan(data: bytes) -> tuple[bool, int]: ...
def row_json_size(
    header: Sequence[str], fields: Sequence[str], fallback: Callable[..., int]
) -> int: ...

class TransformPlan:
    spec: Any
    header: tuple[str, ...]
    def __init__(
        self,
        spec: Any,
        header: tuple[str, ...],
        index: dict[str, int],
        col_specs: list[Any],
        templates: list[Any],
        blob: bytes,
        enums: list[Any],
    ) -> None: ...

def transform_rows(
    plan: TransformPlan,
    rows: Sequence[tuple[int, Sequence[str]]],
    item_cls: type,
    reject_cls: type,
    json_value: Callable[[str], Any],
    fallback_row: Callable[[int, Sequence[str]], Any],
    key_reject: Callable[..., Any],
) -> tuple[ItemBlock, list[Any]]: ...

class ItemBlock(Sequence[Any]):
    start: int
    stop: int
    def __init__(self, items: Iterable[Any] = ...) -> None: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: Any) -> Any: ...
    def lines(self) -> list[int]: ...
    def pks(self) -> list[str]: ...
    def sks(self) -> list[str]: ...
    def keys_unique(self) -> bool: ...
    def chunk_bounds(self, max_items: int, budget: int, per_item: int) -> list[int]: ...
    def body(self, prefix: bytes, sep: bytes, suffix: bytes) -> bytes: ...
    def write_units(self, unit_bytes: int) -> int: ...

class RowBlock(Sequence[tuple[int, list[str]]]):
    width: int
    def __init__(self, width: int) -> None: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: Any) -> Any: ...
    def line_at(self, r: int) -> int: ...
    def index_of(self, line: int) -> int: ...

class RecordReader(Iterator[Any]):
    width: int
    padded: int
    truncated: int
    def __init__(
        self,
        stream: IO[bytes],
        delimiter: str,
        row_cls: type,
        error_cls: type,
        chunk: int = ...,
        reparse: Callable[..., Any] | None = ...,
    ) -> None: ...
    def __next__(self) -> Any: ...
    def close(self) -> None: ...
    def read_batch(
        self,
        max_items: int,
        max_bytes: int,
        base: int,
        header_lens: Sequence[int],
        size_of: Callable[[list[str]], int],
    ) -> tuple[RowBlock, int, list[Any]] | None: ...
