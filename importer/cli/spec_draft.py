"""`importer spec init FILE`: draft an import spec from a CSV's header and a sample.

Writing a spec by hand for a 30-column file is where a new user stalls.  The
draft reads the header and the first rows with ItemReader's rules (local or
`s3://`, `.gz`/`.zst`), guesses each column's type and whether it is ever
empty, picks a unique-looking id column for the record code, and writes TOML
whose every guess carries a `# review:` comment.  The guesses use the same
parsers the engines use (`importer.transform.values`), and the draft is run through the
reference transform over the sample before it is written: a guess that would
reject a sampled row is weakened (to `string`, or to optional) first, so the
draft validates its own sample with no rejects.  Rows beyond the sample may
still disagree; that is what `importer validate` is for.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from importer.input.options import DELIMITERS, CsvOptions
from importer.transform import values
from importer.transform.spec import Spec, SpecError, loads_spec

__all__ = [
    "ColumnGuess",
    "Draft",
    "DraftError",
    "draft_spec",
    "guess_column",
    "read_sample",
    "register",
    "render_toml",
]

DEFAULT_SAMPLE = 1000
#: At most this many distinct values (in a sample of >= 20 rows) suggests an enum.
ENUM_MAX_VALUES = 10
_WS = " \t"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
_CODE_NAMES = ("code", "sku", "id", "key", "uuid", "number", "no")
_NAME_NAMES = ("name", "title", "label", "display_name")
_TENANT_NAMES = ("tenant", "tenant_code", "tenantcode", "tenant_id")
_WORD_BOOLEANS = (values.TRUE_WORDS | values.FALSE_WORDS) - {"0", "1"}


class DraftError(Exception):
    """The file cannot be sampled, or the draft cannot be written."""


@dataclass(slots=True)
class ColumnGuess:
    """What the sample says about one column, and why (for the review comments)."""

    name: str
    type: str
    required: bool
    why: str
    enum: list[str] | None = None
    non_negative: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Draft:
    """A drafted spec: its TOML text, the compiled spec and the sample it was checked on."""

    text: str
    spec: Spec
    header: list[str]
    sampled: int
    unreadable: int
    rejects: int


# ---------------------------------------------------------------------------
# Reading the sample
# ---------------------------------------------------------------------------


def _sniff_delimiter(first_line: bytes) -> str:
    """The ItemReader delimiter that splits the header line into the most fields."""
    text = first_line.decode("utf-8", errors="replace")
    best, count = ",", 0
    for delim in (",", ";", "\t", "|"):
        n = text.count(delim)
        if n > count:
            best, count = delim, n
    return best


def read_sample(
    source: str, rows: int, *, delimiter: str | None = None, s3_client: Any = None
) -> tuple[CsvOptions, list[str], list[tuple[int, list[str]]], int]:
    """(csv options, header, up to `rows` readable rows, unreadable rows seen)."""
    from importer.input.source import CsvReader, SourceError, open_source

    try:
        if delimiter is None:
            stream = open_source(source, s3_client=s3_client)
            try:
                delimiter = _sniff_delimiter(stream.raw.readline(1 << 20))
            finally:
                stream.close()
        options = CsvOptions(delimiter=delimiter)
        stream = open_source(source, s3_client=s3_client)
        try:
            reader = CsvReader(stream.raw, options)
            sample: list[tuple[int, list[str]]] = []
            unreadable = 0
            for row in reader:
                if row.error:
                    unreadable += 1
                    continue
                sample.append((row.line, list(row.fields)))
                if len(sample) >= rows:
                    break
            return options, list(reader.header), sample, unreadable
        finally:
            stream.close()
    except (SourceError, OSError, EOFError) as exc:
        raise DraftError(str(exc)) from None


def _json_hint(values_: list[Any]) -> tuple[str, str] | None:
    """(type, why) from the JSON types of one key's non-null sampled values; None: strings."""
    from importer.input.items import Num, json_kind

    kinds = {json_kind(v) for v in values_}
    if not kinds or kinds == {"a string"}:
        return None
    if kinds == {"a number"}:
        if all(type(v) is int for v in values_):
            return "integer", "every sampled value is a JSON integer"
        if all(type(v) in (int, Num) for v in values_):
            return "decimal", "every sampled value is a JSON number"
    if kinds == {"a boolean"}:
        return "boolean", "every sampled value is a JSON boolean"
    if kinds <= {"an object", "an array"}:
        return "json", "every sampled value is a JSON object or array"
    shown = ", ".join(sorted(k.split(" ", 1)[1] for k in kinds))
    return "string", f"mixed JSON types ({shown}): a non-string value would be rejected"


def _arrow_hint(t: Any) -> tuple[str, str] | None:
    """(type, why) from a Parquet column's type; None for text (guessed from the values)."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    what = f"the Parquet column is {t}"
    if pa.types.is_integer(t):
        return "integer", what
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "decimal", what
    if pa.types.is_boolean(t):
        return "boolean", what
    if pa.types.is_date(t):
        return "date", what
    if pa.types.is_timestamp(t):
        return "datetime", what
    if pa.types.is_nested(t):
        return "json", what
    return None


def read_typed_sample(
    source: str, kind: str, rows: int, *, s3_client: Any = None
) -> tuple[list[str], list[tuple[int, list[str]]], int, dict[str, tuple[str, str]]]:
    """(keys, up to `rows` items as fields, unreadable items, type hints) of a JSON, JSONL
    or Parquet sample; the fields are what a run checks each value's text as."""
    from importer.input.items import TEMPLATE, Mismatch, dump_json, value_text
    from importer.input.source import SourceError, open_source

    items: list[tuple[int, dict[str, Any]]] = []
    unreadable = 0
    hints: dict[str, tuple[str, str]] = {}
    try:
        if kind == "PARQUET":
            from importer.input.parquet import open_parquet_source, require_pyarrow

            pq = require_pyarrow()
            try:
                pf = pq.ParquetFile(open_parquet_source(source, s3_client))
            except Exception as exc:  # noqa: BLE001 - any pyarrow failure is "not readable"
                raise SourceError(f"{source}: not a readable Parquet file ({exc})") from None
            for name, t in zip(pf.schema_arrow.names, pf.schema_arrow.types, strict=True):
                hint = _arrow_hint(t)
                if hint is not None:
                    hints[name] = hint
            for batch in pf.iter_batches(batch_size=rows):
                items = list(enumerate(batch.to_pylist()))[:rows]
                break
            keys = list(pf.schema_arrow.names)
        else:
            from importer.input.items import ItemDecoder
            from importer.input.json_array import JsonArrayReader

            stream = open_source(source, s3_client=s3_client)
            try:
                if kind == "JSON":
                    got: Any = JsonArrayReader(stream.raw, [], [], name=source).items()
                else:
                    decode = ItemDecoder()

                    def lines() -> Any:
                        for n, raw in enumerate(stream.raw, start=1):
                            if raw.strip():
                                try:
                                    yield n, decode(raw.decode("utf-8"))[0], 0
                                except (ValueError, UnicodeDecodeError):
                                    yield n, None, 0

                    got = lines()
                for n, item, _size in got:
                    if type(item) is not dict:
                        unreadable += 1
                        continue
                    items.append((n, item))
                    if len(items) >= rows:
                        break
            finally:
                stream.close()
            seen: dict[str, None] = {}
            for _, item in items:
                for k in item:
                    seen.setdefault(k, None)
            keys = list(seen)
            for k in keys:
                hint = _json_hint([item[k] for _, item in items if item.get(k) is not None])
                if hint is not None:
                    hints[k] = hint
    except (SourceError, OSError, EOFError) as exc:
        raise DraftError(str(exc)) from None

    def text(value: Any) -> str:
        if isinstance(value, dict | list):
            return dump_json(value)
        if value is not None and not isinstance(value, str | int | float | bool):
            return value.isoformat() if hasattr(value, "isoformat") else str(value)
        try:
            return value_text(value, TEMPLATE)
        except Mismatch:
            return dump_json(value)

    sample = [(n, [text(item.get(k)) for k in keys]) for n, item in items]
    return keys, sample, unreadable, hints


# ---------------------------------------------------------------------------
# Guessing
# ---------------------------------------------------------------------------


def _all(parse: Any, texts: Sequence[str]) -> bool:
    try:
        for text in texts:
            if parse(text) is None:
                return False
    except values.FieldError:
        return False
    return True


_MBC_WHY = (
    "numbers an MBC application cannot read exactly (beyond +-(2^53-1) or over 15 "
    "significant digits): kept as text so no digit is lost"
)


def _mbc_decimal(text: str) -> str:
    return values.parse_decimal(text, mbc=True)


def _mbc_json(text: str) -> Any:
    return values.parse_json(text, mbc=True)


def _leading_zero(text: str) -> bool:
    body = text.lstrip("+-")
    return len(body) > 1 and body[0] == "0" and body[1].isdigit()


def _guess_type(texts: Sequence[str]) -> tuple[str, str]:
    """(type, why) for the non-empty, stripped values of one column."""
    if not texts:
        return "string", "every sampled value is empty"
    if any(_leading_zero(t) or t.startswith("+") for t in texts):
        numeric = _all(values.parse_decimal, texts)
        if numeric:
            return "string", "numbers with a leading zero or '+': kept as text so none is lost"
    if _all(values.parse_decimal, texts) and not _all(_mbc_decimal, texts):
        # an MBC target (the default) would reject them: text keeps every digit readable
        return "string", _MBC_WHY
    if _all(values.parse_integer, texts):
        return "integer", "every sampled value is an integer"
    if _all(values.parse_decimal, texts):
        return "decimal", "every sampled value is a number"
    if any(t.lower() in _WORD_BOOLEANS for t in texts) and _all(values.parse_boolean, texts):
        return "boolean", "every sampled value is a yes/no word"
    if _all(values.parse_date, texts):
        return "date", "every sampled value is a date"
    if _all(values.parse_datetime, texts):
        return "datetime", "every sampled value is an ISO 8601 date-time"
    if all(t[:1] in "[{" for t in texts) and _all(values.parse_json, texts):
        if not _all(_mbc_json, texts):
            return "string", "JSON holding " + _MBC_WHY
        return "json", "every sampled value is a JSON object or array"
    return "string", "text (no other type fits every sampled value)"


def guess_column(name: str, raw_values: Sequence[str]) -> ColumnGuess:
    """Type, required-ness and an enum suggestion from one column's sampled values."""
    stripped = [v.strip(_WS) for v in raw_values]
    ctype, why = _guess_type([v for v in stripped if v])
    present = raw_values if ctype == "string" else stripped
    empty = sum(1 for v in present if v == "")
    guess = ColumnGuess(name=name, type=ctype, required=bool(raw_values) and empty == 0, why=why)
    if empty:
        guess.notes.append(f"empty in {empty} of {len(raw_values)} sampled rows")
    distinct = sorted({v for v in present if v})
    if (
        ctype in ("string", "integer")
        and len(raw_values) >= 20
        and 0 < len(distinct) <= ENUM_MAX_VALUES
        and len(distinct) * 4 <= len(raw_values)
    ):
        if ctype == "integer":
            distinct = sorted({values.parse_integer(v) for v in distinct}, key=int)
        guess.enum = distinct
    if ctype in ("integer", "decimal"):
        guess.non_negative = all(not v.startswith("-") for v in stripped if v)
    return guess


def _usable_in_template(name: str) -> bool:
    return bool(name) and name == name.strip() and "{" not in name and "}" not in name


def _pick_code(header: Sequence[str], columns: dict[str, list[str]]) -> tuple[str, str]:
    """A column whose sampled values are all present, unique and key-safe."""

    def candidate(name: str) -> bool:
        vals = columns[name]
        return (
            _usable_in_template(name)
            and bool(vals)
            and all(v != "" and "@" not in v for v in vals)
            and len(set(vals)) == len(vals)
        )

    def rank(name: str) -> int:
        low = name.lower()
        for i, word in enumerate(_CODE_NAMES):
            if low == word:
                return i
        for i, word in enumerate(_CODE_NAMES):
            if low.endswith(("_" + word, "-" + word, word)):
                return len(_CODE_NAMES) + i
        return 100

    unique = [n for n in header if candidate(n)]
    if unique:
        best = min(unique, key=lambda n: (rank(n), header.index(n)))
        return best, f"{best!r} is unique and never empty in the sample"
    usable = [n for n in header if _usable_in_template(n)]
    if not usable:
        raise DraftError("no column name can be used in a template (names with braces only)")
    return usable[0], (
        f"no column is unique in the sample; {usable[0]!r} repeats, and a repeated code "
        'is a duplicate key: pick the real id column, or combine columns ("{a}-{b}")'
    )


def _pick_named(
    header: Sequence[str], columns: dict[str, list[str]], words: Sequence[str], forbidden: str
) -> str | None:
    for word in words:
        for name in header:
            vals = columns[name]
            if (
                name.lower() == word
                and _usable_in_template(name)
                and vals
                and all(v != "" and not any(c in v for c in forbidden) for v in vals)
            ):
                return name
    return None


def _record_type(source: str) -> str:
    stem = source.rstrip("/").rsplit("/", 1)[-1]
    for ext in (".gz", ".zst", ".zstd", ".csv", ".tsv", ".txt"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
    word = re.sub(r"[^A-Za-z0-9]+", "_", stem).strip("_").upper()
    return word if word and not word[0].isdigit() else "RECORD"


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def _toml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.match(name) else _toml_str(name)


def _placeholder(name: str) -> str:
    return "{" + name + "}"


def _line(assignment: str, comment: str | None = None) -> str:
    if not comment:
        return assignment
    return f"{assignment:<26}# {comment}"


@dataclass(slots=True)
class _Record:
    type: str
    code: str
    code_why: str
    name: str | None
    tenant: str | None


def render_toml(
    source: str,
    options: CsvOptions,
    record: _Record,
    guesses: Sequence[ColumnGuess],
    sampled: int,
    spec_file: str | None = None,
) -> str:
    """The draft spec as TOML, every guess with its `# review:` comment.

    `spec_file`: where the draft is written, so its header's command runs as
    printed (None: stdout, the user names the file).
    """
    import shlex

    target = shlex.quote(spec_file) if spec_file else "SPEC_FILE"
    out = [
        f"# Draft import spec for {source}, written by `importer spec init` from the header",
        f"# and the first {sampled:,} rows. Every guess is marked `review`: check it, then",
        f"#   importer validate {shlex.quote(source)} --spec {target}",
        "# The guesses hold for the sampled rows only.",
        "",
        "[record]",
        _line(f"type = {_toml_str(record.type)}", "review: the MBC record type"),
        _line(f"code = {_toml_str(_placeholder(record.code))}", f"review: {record.code_why}"),
    ]
    if record.name:
        out.append(_line(f"name = {_toml_str(_placeholder(record.name))}", "review"))
    else:
        out.append(_line('# name = "{column}"', "review: default is the code"))
    if record.tenant:
        out.append(_line(f"tenant = {_toml_str(_placeholder(record.tenant))}", "review: per row"))
    else:
        out.append(_line('# tenant = "single"', 'review: a constant or "{column}"'))
    delim = next(k for k, v in DELIMITERS.items() if v == options.delimiter)
    if delim != "COMMA":
        out += ["", "[csv]", _line(f'delimiter = "{delim}"', "review: sniffed from the header")]
    for g in guesses:
        out += ["", f"[columns.{_toml_key(g.name)}]"]
        out.append(_line(f'type = "{g.type}"', f"review: {g.why}"))
        if g.required:
            out.append(_line("required = true", "review: never empty in the sample"))
        else:
            out.append(_line("required = false", "review: " + "; ".join(g.notes or ["optional"])))
        if g.enum is not None:
            listed = ", ".join(_toml_str(v) if g.type == "string" else v for v in g.enum)
            out.append(f"# enum = [{listed}]  # review: the only values in the sample")
        if g.non_negative:
            out.append(_line("# min = 0", "review: no negative value in the sample"))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# Drafting, checked against the sample
# ---------------------------------------------------------------------------


def _rejects_by_column(spec: Spec, header: list[str], rows: list[tuple[int, list[str]]]) -> Any:
    from importer.run.batch_steps import resolve_duplicates
    from importer.transform.context import RunContext
    from importer.transform.reference import transform_batch

    ctx = RunContext.new(run_id="spec-init")
    result = transform_batch(spec, header, rows, ctx)
    # a code twice in the sample is a reject of a run too (whichever row the mode keeps)
    code_column = spec.code_column
    _kept, dupes = resolve_duplicates(result.items, code_column=code_column, fields=dict(rows))
    return [*result.rejects, *dupes]


def draft_spec(
    source: str,
    *,
    sample: int = DEFAULT_SAMPLE,
    record_type: str | None = None,
    delimiter: str | None = None,
    s3_client: Any = None,
    spec_file: str | None = None,
    input_type: str | None = None,
) -> Draft:
    """Draft a spec for `source` from its header and first `sample` rows (to be saved
    as `spec_file`, which its header names); JSON, JSONL and Parquet: the keys of the
    first `sample` items, typed by their JSON or Parquet types."""
    if sample < 1:
        raise DraftError("--sample must be at least 1")
    from importer.input.formats import input_type_for
    from importer.input.source import SourceError

    try:
        kind = input_type_for(source, input_type)
    except SourceError as exc:
        raise DraftError(str(exc)) from None
    hints: dict[str, tuple[str, str]] = {}
    if kind in ("JSON", "JSONL", "PARQUET"):
        options = CsvOptions()
        header, rows, unreadable, hints = read_typed_sample(
            source, kind, sample, s3_client=s3_client
        )
    elif kind == "MANIFEST":
        raise DraftError(f"{source}: draft a spec from one of the manifest's objects instead")
    else:
        options, header, rows, unreadable = read_sample(
            source, sample, delimiter=delimiter, s3_client=s3_client
        )
    names = [n for n in header if n != ""]
    if not names:
        raise DraftError(f"{source}: the header names no column")
    by_name = {n: [fields[i] for _, fields in rows] for i, n in enumerate(header) if n in names}
    code, code_why = _pick_code(names, by_name)
    rtype = record_type or _record_type(source)
    if "#" in rtype or "@" in rtype or not rtype:
        raise DraftError(f"--type {rtype!r}: a record type must not contain '#' or '@'")
    record = _Record(
        type=rtype,
        code=code,
        code_why=code_why,
        name=_pick_named(names, by_name, _NAME_NAMES, ""),
        tenant=_pick_named(names, by_name, _TENANT_NAMES, "#"),
    )
    guesses = {n: guess_column(n, by_name[n]) for n in names}
    for n, (htype, why) in hints.items():  # a typed source says its types itself
        g = guesses.get(n)
        if g is not None:
            g.type, g.why = htype, why
            if htype not in ("string", "integer"):
                g.enum = None
    for _ in range(len(names) + 1):
        text = render_toml(
            source, options, record, list(guesses.values()), len(rows), spec_file=spec_file
        )
        try:
            spec = loads_spec(text.encode("utf-8"), "draft.toml")
        except SpecError as exc:  # a bug here, not the user's: say so plainly
            raise DraftError(f"the drafted spec does not compile ({exc})") from None
        rejects = _rejects_by_column(spec, header, rows)
        weakened = False
        for rej in rejects:
            g = guesses.get(rej.column)
            if g is None:
                continue
            if g.type != "string" and g.name not in hints:
                g.type, g.why, g.enum = "string", f"text (a sampled value was {rej.reason})", None
                g.non_negative = False
                weakened = True
            elif g.required and rej.reason == "required value is empty":
                g.required = False
                weakened = True
        if not weakened:
            break
    return Draft(
        text=text,
        spec=spec,
        header=header,
        sampled=len(rows),
        unreadable=unreadable,
        rejects=len(rejects),
    )


# ---------------------------------------------------------------------------
# Command
# ---------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> int:
    delimiter = None
    if args.delimiter:
        delimiter = DELIMITERS.get(args.delimiter.upper())
        if delimiter is None:
            print(
                f"importer spec init: error: --delimiter {args.delimiter!r}: "
                f"one of {', '.join(DELIMITERS)}",
                file=sys.stderr,
            )
            return 2
    try:
        out = Path(args.out) if args.out and args.out != "-" else None
        if out is not None and out.exists() and not args.force:
            raise DraftError(f"{out} exists (add --force to overwrite it)")
        draft = draft_spec(
            args.file,
            sample=args.sample,
            record_type=args.type,
            delimiter=delimiter,
            spec_file=str(out) if out is not None else None,
            input_type=args.input_type,
        )
        if out is None:
            sys.stdout.write(draft.text)
        else:
            out.write_text(draft.text, encoding="utf-8")
    except (DraftError, OSError) as exc:
        print(f"importer spec init: error: {exc}", file=sys.stderr)
        return 1
    where = str(out) if out is not None else "stdout"
    print(
        f"drafted {where}: {len(draft.spec.columns)} columns from {draft.sampled:,} sampled rows; "
        f"review every `# review:` line, then: importer validate {args.file} --spec "
        f"{out if out is not None else 'SPEC'}",
        file=sys.stderr,
    )
    if draft.unreadable:
        print(f"note: {draft.unreadable} sampled rows could not be read as CSV", file=sys.stderr)
    if draft.rejects:
        print(
            f"note: {draft.rejects} sampled rows would still be rejected (see the review notes)",
            file=sys.stderr,
        )
    return 0


def register(subparsers: Any) -> None:
    """Add ``importer spec init`` to the ``importer`` CLI."""
    spec = subparsers.add_parser("spec", help="work with import specs")
    actions = spec.add_subparsers(dest="spec_command", required=True, metavar="ACTION")
    init = actions.add_parser(
        "init", help="draft a spec from a CSV's header and a sample of its rows"
    )
    init.add_argument(
        "file", help="CSV, JSON, JSONL or Parquet file: a local path or s3://bucket/key"
    )
    init.add_argument(
        "--input-type",
        choices=("CSV", "JSON", "JSONL", "PARQUET"),
        default=None,
        help="the file's type (default: by its name)",
    )
    init.add_argument("--out", metavar="PATH", help="write the draft here (default: stdout)")
    init.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    init.add_argument("--type", default=None, help="MBC record type (default: from the file name)")
    init.add_argument(
        "--sample",
        type=int,
        default=DEFAULT_SAMPLE,
        metavar="N",
        help=f"rows to sample (default {DEFAULT_SAMPLE})",
    )
    init.add_argument(
        "--delimiter",
        default=None,
        metavar="NAME",
        help="COMMA | PIPE | SEMICOLON | SPACE | TAB (default: sniffed from the header)",
    )
    init.set_defaults(func=_cmd_init)
