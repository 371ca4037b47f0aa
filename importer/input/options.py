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
    "MAX_HEADER_BYTES",
    "MAX_ITEMS_LIMIT",
    "CsvOptions",
    "InputOptions",
    "header_row_problem",
]

#: ItemReader reads a CSV header of at most 10 KiB (AWS Step Functions developer guide,
#: "ItemReader (Map)", CSVHeaderLocation: "Currently, Step Functions supports CSV headers
#: of up to 10 KiB"; docs/aws-facts.md): a longer header row is refused, before it is held
MAX_HEADER_BYTES = 10 * 1024
#: the words every too-long header is refused with (a file's row, CSVHeaders, a fileSchema)
HEADER_TOO_LONG = (
    f"header row longer than {MAX_HEADER_BYTES:,} bytes: Step Functions' "
    "ItemReader reads CSV headers of up to 10 KiB"
)


def header_row_problem(names: tuple[str, ...] | list[str], delimiter: str = ",") -> str | None:
    """`HEADER_TOO_LONG` when the header row `names` stand for is over the limit, else None.

    Why: a header given in the spec (CSVHeaders) or by an S3 Inventory's fileSchema
    stands for the header row ItemReader would otherwise read from the file, so it is
    held to the same 10 KiB: the row the names make (joined by the delimiter, a name
    quoted where CSV must quote it), in UTF-8.
    """
    size = len(names) - 1 if names else 0
    for name in names:
        quoted = any(c in name for c in (delimiter, '"', "\n", "\r"))
        size += len(name.encode("utf-8", "surrogatepass")) + (2 + name.count('"') if quoted else 0)
    return HEADER_TOO_LONG if size > MAX_HEADER_BYTES else None


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
