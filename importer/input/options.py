"""ItemReader's ReaderConfig for CSV, owned by the input layer that reads by it.

The spec's `[csv]` section is parsed into these options (`importer.transform.spec`), but
what they mean -- which delimiters ItemReader names, where the header comes from -- is
the reader's rule, so the reader defines them and the spec imports them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DELIMITERS", "CsvOptions"]

#: ItemReader's CSVDelimiter names and the byte each stands for.
DELIMITERS = {"COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "SPACE": " ", "TAB": "\t"}


@dataclass(frozen=True, slots=True)
class CsvOptions:
    """ItemReader's ReaderConfig for CSV: delimiter and where the header is."""

    delimiter: str = ","
    header_location: str = "FIRST_ROW"
    headers: tuple[str, ...] | None = None
