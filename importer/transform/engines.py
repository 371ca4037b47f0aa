"""Choosing the transform engine: `native` (default) or `reference`.

The native engine is required when asked for: if the extension is missing or
stale, the run stops with a clear message rather than quietly taking the
pure-Python path at a fraction of the speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from importer.transform.context import RunContext
from importer.transform.reference import Row, TransformResult
from importer.transform.spec import Spec

__all__ = ["ENGINES", "Engine", "EngineError", "get_engine"]

ENGINES = ("native", "reference")


class EngineError(RuntimeError):
    """The requested engine cannot run here."""


class Engine(Protocol):
    def transform_batch(
        self,
        spec: Spec,
        header: Sequence[str],
        rows: Sequence[Row],
        ctx: RunContext,
    ) -> TransformResult: ...


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
