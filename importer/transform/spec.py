"""The import spec: what a row must look like and how it becomes a command record.

A spec is read once (TOML, or JSON when the file ends in `.json`) and compiled
into an immutable `Spec` that both engines execute: `importer.transform.reference` (the
readable oracle) and `importer._native` (the fast path).  Every key is checked
before the first row is read, so a typo fails the run at once with the key's
dotted path and the problem, instead of rejecting every row later.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from importer.input.options import (
    DELIMITERS,
    INPUT_TYPES,
    MANIFEST_TYPES,
    MAX_ITEMS_LIMIT,
    CsvOptions,
    InputOptions,
    header_row_problem,
)
from importer.transform.patterns import Matcher, PatternError, compile_pattern

__all__ = [
    "COLUMN_TYPES",
    "TARGET_OPTIONS",
    "ColumnRule",
    "RecordTemplate",
    "Spec",
    "SpecError",
    "Template",
    "check_header",
    "header_problem",
    "load_spec",
    "loads_spec",
    "parse_spec",
]

COLUMN_TYPES = ("string", "integer", "decimal", "boolean", "date", "datetime", "json")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class SpecError(ValueError):
    """The spec itself is wrong; the message names the key and the problem."""


@dataclass(frozen=True, slots=True)
class Template:
    """A string with `{column}` placeholders (`{{`/`}}` are literal braces).

    Stored as alternating parts so rendering is a join, not a regex: `parts`
    holds literals at even indexes and column names at odd ones.
    """

    source: str
    parts: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return self.parts[1::2]

    @property
    def is_constant(self) -> bool:
        return len(self.parts) == 1

    def first_column(self, default: str) -> str:
        """The column a row's trouble with this template is reported under: the first one
        it reads, else `default` (its spec key).  Of `record.code`: the code column, which
        every reject of a key (duplicate, exists, conflict, too long) names."""
        return self.columns[0] if self.columns else default

    def render(self, values: dict[str, str]) -> str:
        parts = self.parts
        if len(parts) == 1:
            return parts[0]
        out = []
        for i, part in enumerate(parts):
            out.append(values[part] if i % 2 else part)
        return "".join(out)


def parse_template(text: Any, where: str) -> Template:
    if not isinstance(text, str):
        raise SpecError(f"{where}: expected a string template, got {type(text).__name__}")
    parts: list[str] = []
    literal: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        literal.append(text[pos : m.start()])
        token = m.group(0)
        if token == "{{":
            literal.append("{")
        elif token == "}}":
            literal.append("}")
        elif m.group(1) is None:
            raise SpecError(
                f"{where}: unbalanced {token!r} in template {text!r} "
                f"(write {token * 2} for a literal)"
            )
        else:
            name = m.group(1).strip()
            if not name:
                raise SpecError(f"{where}: empty placeholder {{}} in template {text!r}")
            parts.append("".join(literal))
            parts.append(name)
            literal = []
        pos = m.end()
    literal.append(text[pos:])
    parts.append("".join(literal))
    return Template(text, tuple(parts))


@dataclass(frozen=True, slots=True)
class ColumnRule:
    """How one CSV column is validated and where it lands in `attributes`.

    `attribute` is the name inside `attributes`, or None when the column only
    feeds templates (`attribute = false` in the spec).
    """

    name: str
    type: str = "string"
    required: bool = False
    attribute: str | None = None
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    enum: tuple[str, ...] | None = None
    min: Decimal | None = None
    max: Decimal | None = None
    min_date: str | None = None
    max_date: str | None = None
    regex: Matcher | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RecordTemplate:
    """Templates for the MBC command record's identity fields."""

    type: Template
    tenant: Template
    code: Template
    name: Template


@dataclass(frozen=True, slots=True)
class Spec:
    """A compiled, immutable import plan shared by both engines."""

    record: RecordTemplate
    columns: tuple[ColumnRule, ...]
    csv: CsvOptions = CsvOptions()
    #: `[input]`: ItemReader's InputType (None: by extension), MaxItems, manifest kind
    input: InputOptions = InputOptions()
    max_rejects: int | None = None
    source_path: str = "<spec>"
    #: `[target] numbers`: "mbc" (default) keeps every number an MBC application (JavaScript
    #: numbers) reads exactly; "dynamodb" allows DynamoDB's full 38 digits.
    numbers: str = "mbc"
    #: `[target] update`: "merge" (default) deep-merges an upsert/strict row into the latest
    #: version, as the framework's publishPartialUpdate does; "replace" writes the row as is.
    update: str = "merge"
    #: False when `record.name` was left to default to the code: a merge keeps the stored name.
    name_given: bool = True

    def column(self, name: str) -> ColumnRule | None:
        for rule in self.columns:
            if rule.name == name:
                return rule
        return None

    @property
    def code_column(self) -> str:
        """The column the `record.code` template reads first ("" if none): the column a
        reject's code and a duplicate's report name, in every mode and command."""
        return self.record.code.first_column("")

    @property
    def template_columns(self) -> tuple[str, ...]:
        r = self.record
        seen: dict[str, None] = {}
        for t in (r.type, r.tenant, r.code, r.name):
            for c in t.columns:
                seen.setdefault(c, None)
        return tuple(seen)

    @property
    def needed_columns(self) -> tuple[str, ...]:
        """Every CSV column the spec reads, in spec order."""
        seen: dict[str, None] = {rule.name: None for rule in self.columns}
        for c in self.template_columns:
            seen.setdefault(c, None)
        return tuple(seen)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The type of each of `needed_columns` ("template" for one only templates read).

        What a typed reader (JSON, JSONL, Parquet) checks a value's type against.
        """
        return tuple(
            rule.type if (rule := self.column(name)) is not None else "template"
            for name in self.needed_columns
        )


_RECORD_KEYS = {"type", "tenant", "code", "name"}
_COLUMN_KEYS = {
    "type",
    "required",
    "attribute",
    "pattern",
    "min_length",
    "max_length",
    "enum",
    "min",
    "max",
}
_TOP_KEYS = {"record", "columns", "csv", "input", "limits", "target"}
#: `[target]` options and the values each takes (the first is the default).
TARGET_OPTIONS = {"numbers": ("mbc", "dynamodb"), "update": ("merge", "replace")}
_RULES_BY_TYPE = {
    "string": {"pattern", "min_length", "max_length", "enum"},
    "integer": {"min", "max", "enum"},
    "decimal": {"min", "max"},
    "boolean": set(),
    "date": {"min", "max"},
    "datetime": set(),
    "json": set(),
}


def _unknown(keys: set[str], allowed: set[str], where: str) -> None:
    extra = sorted(keys - allowed)
    if extra:
        raise SpecError(
            f"{where}: unknown key {extra[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )


def _table(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(f"{where}{key}: expected a table, got {type(value).__name__}")
    return value


def _int_opt(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"{where}: expected a non-negative integer, got {value!r}")
    return value


def _number_opt(value: Any, where: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SpecError(f"{where}: expected a number, got {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise SpecError(f"{where}: expected a number, got {value!r}") from None
    if not number.is_finite():
        raise SpecError(f"{where}: expected a finite number, got {value!r}")
    return number


def _date_opt(value: Any, where: str) -> str | None:
    if value is None:
        return None
    from importer.transform.values import parse_date  # local: values imports nothing from spec

    text = value.isoformat() if hasattr(value, "isoformat") else value
    if not isinstance(text, str) or parse_date(text) is None:
        raise SpecError(f"{where}: expected a date YYYY-MM-DD, got {value!r}")
    return parse_date(text)


def _column(name: str, body: Any) -> ColumnRule:
    where = f"columns.{name}"
    if not isinstance(body, dict):
        raise SpecError(f"{where}: expected a table, got {type(body).__name__}")
    _unknown(set(body), _COLUMN_KEYS, where)
    ctype = body.get("type", "string")
    if ctype not in COLUMN_TYPES:
        raise SpecError(f"{where}.type: unknown type {ctype!r} (one of: {', '.join(COLUMN_TYPES)})")
    for key in sorted(set(body) & (_COLUMN_KEYS - {"type", "required", "attribute"})):
        if key not in _RULES_BY_TYPE[ctype]:
            raise SpecError(f"{where}.{key}: not a rule for type {ctype!r}")
    required = body.get("required", False)
    if not isinstance(required, bool):
        raise SpecError(f"{where}.required: expected true or false, got {required!r}")
    attribute: str | None = name
    if "attribute" in body:
        raw = body["attribute"]
        if raw is False:
            attribute = None
        elif isinstance(raw, str) and raw:
            attribute = raw
        else:
            raise SpecError(f"{where}.attribute: expected a non-empty name or false, got {raw!r}")
    pattern = body.get("pattern")
    regex = None
    if pattern is not None:
        if not isinstance(pattern, str):
            raise SpecError(f"{where}.pattern: expected a regular expression string")
        try:
            regex = compile_pattern(pattern)
        except PatternError as exc:
            raise SpecError(f"{where}.pattern: {exc}") from None
    enum = body.get("enum")
    if enum is not None:
        if not isinstance(enum, list) or not enum:
            raise SpecError(f"{where}.enum: expected a non-empty list")
        if ctype == "integer":
            if any(isinstance(v, bool) or not isinstance(v, int) for v in enum):
                raise SpecError(f"{where}.enum: expected integers for an integer column")
            enum = tuple(str(v) for v in enum)
        else:
            if any(not isinstance(v, str) for v in enum):
                raise SpecError(f"{where}.enum: expected strings for a string column")
            enum = tuple(enum)
    min_length = _int_opt(body.get("min_length"), f"{where}.min_length")
    max_length = _int_opt(body.get("max_length"), f"{where}.max_length")
    if min_length is not None and max_length is not None and min_length > max_length:
        raise SpecError(f"{where}: min_length {min_length} is greater than max_length {max_length}")
    lo = hi = None
    lo_date = hi_date = None
    if ctype == "date":
        lo_date = _date_opt(body.get("min"), f"{where}.min")
        hi_date = _date_opt(body.get("max"), f"{where}.max")
        if lo_date and hi_date and lo_date > hi_date:
            raise SpecError(f"{where}: min {lo_date} is after max {hi_date}")
    else:
        lo = _number_opt(body.get("min"), f"{where}.min")
        hi = _number_opt(body.get("max"), f"{where}.max")
        if lo is not None and hi is not None and lo > hi:
            raise SpecError(f"{where}: min {lo} is greater than max {hi}")
    return ColumnRule(
        name=name,
        type=ctype,
        required=required,
        attribute=attribute,
        pattern=pattern,
        min_length=min_length,
        max_length=max_length,
        enum=enum,
        min=lo,
        max=hi,
        min_date=lo_date,
        max_date=hi_date,
        regex=regex,
    )


def _csv_options(doc: dict[str, Any]) -> CsvOptions:
    body = _table(doc, "csv", "")
    _unknown(set(body), {"delimiter", "header", "headers"}, "csv")
    delimiter = body.get("delimiter", "COMMA")
    if delimiter in DELIMITERS:
        delimiter = DELIMITERS[delimiter]
    elif delimiter not in DELIMITERS.values():
        raise SpecError(
            f"csv.delimiter: {delimiter!r} is not an ItemReader delimiter "
            f"(one of: {', '.join(DELIMITERS)})"
        )
    location = body.get("header", "FIRST_ROW")
    if location not in ("FIRST_ROW", "GIVEN"):
        raise SpecError(f"csv.header: expected FIRST_ROW or GIVEN, got {location!r}")
    headers = body.get("headers")
    if location == "GIVEN":
        if (
            not isinstance(headers, list)
            or not headers
            or not all(isinstance(h, str) and h for h in headers)
        ):
            raise SpecError("csv.headers: header GIVEN needs a non-empty list of column names")
        if len(set(headers)) != len(headers):
            raise SpecError("csv.headers: duplicate column names")
        headers = tuple(headers)
        if (too_long := header_row_problem(headers, delimiter)) is not None:
            raise SpecError(f"csv.headers: {too_long}")
    elif headers is not None:
        raise SpecError('csv.headers: only allowed with header = "GIVEN"')
    return CsvOptions(delimiter=delimiter, header_location=location, headers=headers)


def _input_options(doc: dict[str, Any]) -> InputOptions:
    body = _table(doc, "input", "")
    _unknown(set(body), {"type", "max_items", "manifest_type", "data_type"}, "input")
    kind = body.get("type")
    if kind is not None and kind not in INPUT_TYPES:
        raise SpecError(
            f"input.type: {kind!r} is not an ItemReader InputType "
            f"(one of: {', '.join(INPUT_TYPES)})"
        )
    max_items = _int_opt(body.get("max_items"), "input.max_items")
    if max_items is not None and not 1 <= max_items <= MAX_ITEMS_LIMIT:
        raise SpecError(f"input.max_items: expected 1 to {MAX_ITEMS_LIMIT:,}, got {max_items}")
    manifest_type = body.get("manifest_type", "ATHENA_DATA")
    if manifest_type not in MANIFEST_TYPES:
        raise SpecError(
            f"input.manifest_type: expected one of {', '.join(MANIFEST_TYPES)}, "
            f"got {manifest_type!r}"
        )
    data_type = body.get("data_type")
    if data_type is not None and data_type not in ("CSV", "JSONL", "PARQUET"):
        raise SpecError(
            f"input.data_type: an Athena manifest lists CSV, JSONL or PARQUET objects, "
            f"not {data_type!r}"
        )
    return InputOptions(
        type=kind, max_items=max_items, manifest_type=manifest_type, data_type=data_type
    )


def _target_options(doc: dict[str, Any]) -> dict[str, str]:
    """`[target]`: what the table's readers can take (numbers) and how updates apply."""
    body = _table(doc, "target", "")
    _unknown(set(body), set(TARGET_OPTIONS), "target")
    out = {}
    for key, allowed in TARGET_OPTIONS.items():
        value = body.get(key, allowed[0])
        if value not in allowed:
            raise SpecError(
                f"target.{key}: expected one of {', '.join(repr(a) for a in allowed)}, "
                f"got {value!r}"
            )
        out[key] = value
    return out


def parse_spec(doc: dict[str, Any], source_path: str = "<spec>") -> Spec:
    """Validate a decoded spec document and compile it."""
    if not isinstance(doc, dict):
        raise SpecError("spec: expected a table at the top level")
    _unknown(set(doc), _TOP_KEYS, "spec")
    record = _table(doc, "record", "")
    _unknown(set(record), _RECORD_KEYS, "record")
    if "type" not in record:
        raise SpecError('record.type: missing (the MBC record type, e.g. "PRODUCT")')
    if "code" not in record:
        raise SpecError('record.code: missing (a template such as "{sku}")')
    rtype = parse_template(record["type"], "record.type")
    tenant = parse_template(record.get("tenant", "single"), "record.tenant")
    code = parse_template(record["code"], "record.code")
    name = parse_template(record.get("name", record["code"]), "record.name")
    if rtype.is_constant and not rtype.source:
        raise SpecError("record.type: must not be empty")
    if tenant.is_constant and not tenant.source:
        raise SpecError("record.tenant: must not be empty")
    if code.is_constant:
        raise SpecError("record.code: must use at least one {column}, or every row gets one key")

    columns_doc = _table(doc, "columns", "")
    if not columns_doc:
        raise SpecError("columns: at least one column is needed")
    columns = tuple(_column(n, b) for n, b in columns_doc.items())
    names: dict[str, str] = {}
    for rule in columns:
        if rule.attribute is not None:
            if rule.attribute in names:
                raise SpecError(
                    f"columns.{rule.name}.attribute: {rule.attribute!r} is also "
                    f"the attribute of column {names[rule.attribute]!r}"
                )
            names[rule.attribute] = rule.name

    limits = _table(doc, "limits", "")
    _unknown(set(limits), {"max_rejects"}, "limits")
    max_rejects = _int_opt(limits.get("max_rejects"), "limits.max_rejects")
    csv_options = _csv_options(doc)
    target = _target_options(doc)
    spec = Spec(
        record=RecordTemplate(type=rtype, tenant=tenant, code=code, name=name),
        columns=columns,
        csv=csv_options,
        input=_input_options(doc),
        max_rejects=max_rejects,
        source_path=source_path,
        numbers=target["numbers"],
        update=target["update"],
        name_given="name" in record,
    )
    if csv_options.headers is not None:
        problem = header_problem(spec, csv_options.headers, where="csv.headers")
        if problem:
            raise SpecError(problem)
    return spec


def _template_sites(spec: Spec) -> list[tuple[str, str]]:
    """(spec key, placeholder) for every `{column}` in the record templates."""
    r = spec.record
    return [
        (key, column)
        for key, template in (
            ("record.type", r.type),
            ("record.tenant", r.tenant),
            ("record.code", r.code),
            ("record.name", r.name),
        )
        for column in template.columns
    ]


def _did_you_mean(name: str, candidates: Sequence[str], wrap: str = "{}") -> str:
    close = difflib.get_close_matches(name, list(dict.fromkeys(candidates)), n=1, cutoff=0.6)
    return f"did you mean {wrap.format(close[0])}? " if close else ""


def header_problem(
    spec: Spec, header: Sequence[str], *, where: str = "the CSV header"
) -> str | None:
    """Why `header` cannot feed `spec` (None when it can), naming the spec key at fault.

    A spec column missing from the header and a template placeholder that names
    no column at all are different mistakes: the second is almost always a typo
    in the template (`{idd}`), so it is reported at its template key with the
    columns it could have meant.  One place for this rule: the local driver, the
    Lambda child and `csv.headers` checking all call it.
    """
    present = set(header)
    shown = ", ".join(header) or "(empty)"
    declared = [rule.name for rule in spec.columns]
    for name in declared:
        if name not in present:
            hint = _did_you_mean(name, header, "{!r}")
            return f"columns.{name}: spec column {name!r} is not in {where} ({hint}header: {shown})"
    for key, column in _template_sites(spec):
        if column not in present:
            hint = _did_you_mean(column, [*declared, *header], "{{{}}}")
            return (
                f"{key}: placeholder {{{column}}} names no CSV column and no spec column "
                f"({hint}header: {shown})"
            )
    return None


def check_header(spec: Spec, header: Sequence[str]) -> list[str]:
    """The header's columns the spec never reads (reported, then ignored); `SpecError` with
    `header_problem`'s message when the header cannot feed `spec` -- the one header rule of
    `run`, `validate`, `plan` and `spec init`."""
    problem = header_problem(spec, header)
    if problem:
        raise SpecError(problem)
    needed = set(spec.needed_columns)
    return [h for h in header if h not in needed]


def load_spec(path: str | Path) -> Spec:
    """Read and compile a spec file; every failure is a `SpecError`."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {p}") from None
    except OSError as exc:
        raise SpecError(f"cannot read spec {p}: {exc.strerror}") from None
    return loads_spec(raw, str(p))


def loads_spec(raw: bytes, name: str) -> Spec:
    """Decode and compile spec bytes (JSON when `name` ends in .json, else TOML)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"spec {name}: not UTF-8 text") from None
    try:
        if name.lower().endswith(".json"):
            doc = json.loads(text)
        else:
            doc = tomllib.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"spec {name}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"spec {name}: invalid TOML: {exc}") from None
    return parse_spec(doc, name)
