"""The ItemReader and ItemBatcher options every reading command takes, declared once.

`run`, `validate` and `plan` read a file the same way, so their `--input-type`,
`--max-items`, `--batch-items` and `--batch-bytes` share one declaration: a default or
a help text cannot drift between the command that imports and the one that prices it.
"""

from __future__ import annotations

import argparse

from importer.input.options import INPUT_TYPES

__all__ = ["add_batch_options", "add_reader_options"]


def add_reader_options(p: argparse.ArgumentParser) -> None:
    """ItemReader's ReaderConfig: the input type and MaxItems."""
    p.add_argument(
        "--input-type",
        choices=INPUT_TYPES,
        default=None,
        help="ItemReader InputType (default: the spec's [input] type, else by the file's name)",
    )
    p.add_argument(
        "--max-items",
        type=int,
        default=None,
        metavar="N",
        help="ReaderConfig MaxItems: read at most N items (default: the spec's, else all)",
    )


def add_batch_options(p: argparse.ArgumentParser) -> None:
    """ItemBatcher's limits."""
    p.add_argument(
        "--batch-items", type=int, default=None, metavar="N", help="MaxItemsPerBatch (default 1000)"
    )
    p.add_argument(
        "--batch-bytes",
        type=int,
        default=None,
        metavar="N",
        help="MaxInputBytesPerBatch (default and maximum 262144)",
    )
