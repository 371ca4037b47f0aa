"""The ItemReader and ItemBatcher options every reading command takes, declared once.

`run`, `validate` and `plan` read a file the same way, so their `--input-type`,
`--max-items`, `--batch-items` and `--batch-bytes` share one declaration: a default or
a help text cannot drift between the command that imports and the one that prices it.
"""

from __future__ import annotations

import argparse

from importer.input.batching import AWS_MAX_INPUT_BYTES, DEFAULT_MAX_ITEMS
from importer.input.options import INPUT_TYPES, MAX_ITEMS_LIMIT

__all__ = ["add_batch_options", "add_reader_options", "batch_limits", "max_items_arg"]


def max_items_arg(text: str) -> int:
    """`--max-items`: ReaderConfig MaxItems, 1 to 100,000,000 for every input type.

    Why here: AWS refuses any other value (docs/aws-facts.md, ItemReader), and 0 would
    otherwise read as "no limit" -- the opposite of what it says.
    """
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= n <= MAX_ITEMS_LIMIT:
        raise argparse.ArgumentTypeError(
            f"ReaderConfig MaxItems is 1 to {MAX_ITEMS_LIMIT:,} for every input type, got {n:,}"
        )
    return n


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
        type=max_items_arg,
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


def batch_limits(args: argparse.Namespace) -> tuple[int | None, int]:
    """The ItemBatcher limits `run` cuts with and `plan` prices: the template's item count
    when neither limit is given, and always AWS's 256 KB BatchInput bound on bytes."""
    batch_items, batch_bytes = args.batch_items, args.batch_bytes
    if batch_items is None and batch_bytes is None:
        batch_items = DEFAULT_MAX_ITEMS
    if batch_bytes is None:
        batch_bytes = AWS_MAX_INPUT_BYTES
    return batch_items, batch_bytes
