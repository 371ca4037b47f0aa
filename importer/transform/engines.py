"""Choosing the transform engine: `native` (default) or `reference`.

The native engine is required when asked for: if the extension is missing or
stale, the run stops with a clear message rather than quietly taking the
pure-Python path at a fraction of the speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Protocol

from importer.input.options import CsvOptions
from importer.input.reader import RowReader
from importer.transform.context import RunContext
from importer.transform.reference import Row, TransformResult
from importer.transform.spec import Spec

__all__ = ["DEFAULT_ENGINE", "ENGINES", "Engine", "EngineError", "get_engine"]

ENGINES = ("native", "reference")
#: The engine every entry point uses unless told otherwise (the fast path is the default).
DEFAULT_ENGINE = "native"


class EngineError(RuntimeError):
    """The requested engine cannot run here."""


class Engine(Protocol):
    """What the run asks of an engine (each is a module: `reference`, `native_engine`).

    Besides transforming, an engine opens the CSV reader its transform is fastest
    with and sizes a row as ItemReader would; the reference engine's are the plain
    ones (`CsvReader`, `item_json_size`).
    """

    def transform_batch(
        self,
        spec: Spec,
        header: Sequence[str],
        rows: Sequence[Row],
        ctx: RunContext,
    ) -> TransformResult: ...

    def open_reader(self, stream: IO[bytes], options: CsvOptions) -> RowReader: ...

    def row_json_size(self, header: Sequence[str], fields: Sequence[str]) -> int: ...


def get_engine(name: str) -> Engine:
    if name == "reference":
        from importer.transform import reference

        return reference
    if name == "native":
        try:
            from importer.transform import native_engine
        except ImportError as exc:
            raise EngineError(
                f"the native engine is not built ({exc}); reinstall with `pip install -e .` "
                "or pass --engine reference"
            ) from None
        return native_engine
    raise EngineError(f"unknown engine {name!r} (one of: {', '.join(ENGINES)})")
