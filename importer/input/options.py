"""ItemReader's ReaderConfig for CSV, owned by the input layer that reads by it.

The spec's `[csv]` section is parsed into these options (`importer.transform.spec`), but
what they mean -- which delimiters ItemReader names, where the header comes from -- is
the reader's rule, so the reader defines them and the spec imports them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DELIMITERS",
    "INPUT_TYPES",
    "MANIFEST_TYPES",
    "MAX_ITEMS_LIMIT",
    "CsvOptions",
    "InputOptions",
]

#: ItemReader's CSVDelimiter names and the byte each stands for.
DELIMITERS = {"COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "SPACE": " ", "TAB": "\t"}


@dataclass(frozen=True, slots=True)
class CsvOptions:
    """ItemReader's ReaderConfig for CSV: delimiter and where the header is."""

    delimiter: str = ","
    header_location: str = "FIRST_ROW"
    headers: tuple[str, ...] | None = None


#: ItemReader's ReaderConfig.InputType values (AWS Step Functions developer guide,
#: "ItemReader (Map)"); MANIFEST takes ManifestType ATHENA_DATA or S3_INVENTORY.
INPUT_TYPES = ("CSV", "JSON", "JSONL", "PARQUET", "MANIFEST")
MANIFEST_TYPES = ("ATHENA_DATA", "S3_INVENTORY")
#: ReaderConfig.MaxItems may be at most this (the same guide)
MAX_ITEMS_LIMIT = 100_000_000


@dataclass(frozen=True, slots=True)
class InputOptions:
    """The rest of ReaderConfig: the input type, MaxItems, and a manifest's kind.

    `type` None means: from the file's extension (`formats.input_type_for`).
    `data_type` is what an Athena manifest's objects hold (CSV, JSONL or PARQUET).
    """

    type: str | None = None
    max_items: int | None = None
    manifest_type: str = "ATHENA_DATA"
    data_type: str | None = None
