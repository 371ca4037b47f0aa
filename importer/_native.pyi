"""Type stub for the compiled core (`_native/_native.pyx`); see `transform/native_engine.py`."""

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any

from importer.item_batch import ItemBatch

CODES: dict[str, int]

def escape_scan(data: bytes) -> tuple[bool, int]: ...
def row_json_size(
    header: Sequence[str], fields: Sequence[str], fallback: Callable[..., int]
) -> int: ...

class TransformPlan:
    spec: Any
    header: tuple[str, ...]
    #: per template: (column name, header index or -1), for the reject a template's
    #: missing column makes
    tpl_reject: list[tuple[str, int]]
    ctx_key: Any
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
    def set_context(self, key: Any, tail1: bytes, tail2: bytes, base_size: int) -> None: ...

def transform_rows(
    plan: TransformPlan,
    rows: Sequence[tuple[int, Sequence[str]]],
    item_cls: type,
    reject_cls: type,
    json_value: Callable[[str], Any],
    fallback_row: Callable[[int, Sequence[str]], Any],
    key_reject: Callable[..., Any],
) -> tuple[ItemBlock, list[Any]]: ...

class ItemBlock(ItemBatch):
    start: int
    stop: int
    def __init__(self, items: Iterable[Any] = ...) -> None: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: Any) -> Any: ...
    def lines(self) -> list[int]: ...
    def pks(self) -> list[str]: ...
    def sks(self) -> list[str]: ...
    def distinct_pks(self) -> set[str]: ...
    def entity_keys(self, versioned: bool = True) -> list[tuple[str, str]]: ...
    def keys_json(self, versioned: bool = True) -> bytes | None: ...
    def at_version_1(self) -> bool: ...
    def keys_unique(self) -> bool: ...
    def chunk_bounds(self, max_items: int, budget: int, per_item: int) -> list[int]: ...
    def body(self, prefix: bytes, sep: bytes, suffix: bytes) -> bytes: ...
    def write_units(self, unit_bytes: int) -> int: ...
    def pick(self, names: tuple[bytes, ...]) -> list[bytes | None]: ...
    def block(self) -> ItemBlock | None: ...

class RowBlock(Sequence[tuple[int, list[str]]]):
    width: int
    def __init__(self, width: int) -> None: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: Any) -> Any: ...
    def line_at(self, r: int) -> int: ...
    def index_of(self, line: int) -> int: ...

def record_too_long(limit: int) -> str: ...

class RecordReader(Iterator[Any]):
    width: int
    padded: int
    truncated: int
    #: a record longer than this many bytes is skipped as it streams (0: no limit)
    max_record: int
    def __init__(
        self,
        stream: IO[bytes],
        delimiter: str,
        row_cls: type,
        error_cls: type,
        chunk: int = ...,
        reparse: Callable[..., Any] | None = ...,
        max_record: int = ...,
    ) -> None: ...
    def __next__(self) -> Any: ...
    def close(self) -> None: ...
    @property
    def padded_lines(self) -> list[int]: ...
    @property
    def truncated_lines(self) -> list[int]: ...
    def read_batch(
        self,
        max_items: int,
        max_bytes: int,
        base: int,
        header_lens: Sequence[int],
        size_of: Callable[[list[str]], int],
    ) -> tuple[RowBlock, int, list[Any]] | None: ...

def keys_json(keys: list[Any]) -> bytes | None: ...
def wire_members(wire: bytes) -> list[tuple[str, bytes]] | None: ...
def wire_pick(wire: bytes, names: tuple[bytes, ...]) -> bytes | None: ...
def block_pick(block: ItemBlock, names: tuple[bytes, ...]) -> list[bytes | None]: ...
def block_new_entities(
    block: ItemBlock,
    take: Sequence[int] | bytes | bytearray,
    data_plan: tuple[tuple[bytes, bytes, int], ...],
    dates: dict[bytes, bytes],
    status: bytes,
    updated: bytes,
    sync_tail: bytes,
) -> tuple[ItemBlock, ItemBlock, list[int]]: ...
def existing_items(
    wire: bytes,
    stored: bytes,
    previous: bytes | None,
    version: bytes,
    before: bytes,
    data_plan: tuple[tuple[bytes, bytes, int], ...],
    dates: dict[bytes, bytes],
    status: bytes,
    updated: bytes,
    ttl_history: bytes,
    ttl_command: bytes,
) -> tuple[bytes, bytes, bytes | None, bytes] | None: ...

# typed inputs: Arrow columns and JSON Lines into RowBlocks, batches cut in C
ARROW_MODES: dict[str, int]
JSONL_KINDS: dict[str, int]

def arrow_rows(n: int, first_line: int, columns: list[tuple[Any, ...]]) -> RowBlock: ...
def arrow_sizes(n: int, fixed: int, columns: list[tuple[Any, ...]], extra: Any = None) -> bytes: ...
def jsonl_rows(
    chunk: bytes, first_line: int, names: list[bytes], kinds: list[int]
) -> tuple[RowBlock, bytes, list[tuple[int, int, bytes]], int]: ...
def json_array_rows(
    buf: bytes,
    pos: int,
    first_index: int,
    names: list[bytes],
    kinds: list[int],
    max_elements: int = -1,
    all_python: bool = False,
) -> tuple[RowBlock, bytes, list[tuple[int, int, int, int]], int, int, int]: ...

class BatchCutter:
    width: int
    def __init__(self, width: int, max_items: int, max_bytes: int, base: int) -> None: ...
    def take(
        self, src: RowBlock, sizes: Any, start: int, end: int
    ) -> list[tuple[RowBlock, int, list[Any]]]: ...
    def take_row(
        self, line: int, fields: list[str], size: int
    ) -> tuple[RowBlock, int, list[Any]] | None: ...
    def take_arrow(
        self,
        n: int,
        first_line: int,
        columns: list[tuple[Any, ...]],
        sizes: Any,
        start: int,
        end: int,
    ) -> list[tuple[RowBlock, int, list[Any]]]: ...
    def take_arrow_sized(
        self,
        n: int,
        first_line: int,
        columns: list[tuple[Any, ...]],
        sizing: list[tuple[Any, ...]],
        fixed: int,
        extra: Any = None,
        start: int = 0,
        end: int | None = None,
        check: bool = True,
    ) -> list[tuple[RowBlock, int, list[Any]]]: ...
    def problem(self, obj: Any) -> None: ...
    def flush(self) -> tuple[RowBlock, int, list[Any]] | None: ...

def stored_head(stored: bytes) -> tuple[int, str | None] | None: ...
def answer_items(raw: bytes, table: bytes) -> dict[tuple[str, str], bytes] | None: ...
def stored_merge(
    wire: bytes, stored: bytes, keep_name: bool, version: int
) -> tuple[bool, bytes, bytes | None] | None: ...
def block_stored(
    block: ItemBlock,
    data: dict[tuple[str, str], bytes],
    keys: list[tuple[str, str]],
    keep_name: bool,
    replace: bool,
) -> (
    tuple[
        ItemBlock,
        dict[tuple[str, str], tuple[int, bytes, int]],
        list[tuple[str, str]],
        list[tuple[int, int]],
        int,
    ]
    | None
): ...
