"""The readable transform: one batch of CSV rows → MBC command records + rejects.

This is the definition of what importer writes.  It is deliberately plain
Python: the oracle the native core is tested against, and the baseline the
benchmarks measure it by.  It is never the hot path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Any

from importer.input.batching import item_json_size
from importer.input.options import CsvOptions
from importer.input.source import CsvReader
from importer.item_size import MAX_ITEM_BYTES, item_size_of
from importer.records import PreparedItem, Reject
from importer.transform.context import RunContext
from importer.transform.spec import ColumnRule, Spec, Template
from importer.transform.values import (
    FieldError,
    enum_reason,
    parse_boolean,
    parse_date,
    parse_datetime,
    parse_decimal,
    parse_integer,
    parse_json,
)

__all__ = [
    "MAX_PK_BYTES",
    "MAX_SK_BYTES",
    "NORMALISED_KEY_TYPES",
    "Row",
    "TransformResult",
    "key_text",
    "key_values",
    "open_reader",
    "row_json_size",
    "ttl_value",
    "transform_batch",
    "wire_json",
]

#: DynamoDB's limits on one item and on its key attributes (docs/aws-facts.md, BatchWriteItem).
MAX_PK_BYTES = 2048
MAX_SK_BYTES = 1024
#: Every spelling `parse_date` accepts, so the reject tells how to fix the value.
DATE_REASON = "not a date (YYYY-MM-DD or YYYY/MM/DD, a real day)"

#: One CSV row: its line number in the file and its fields, aligned to the header.
Row = tuple[int, Sequence[str]]


@dataclass(slots=True)
class TransformResult:
    """One batch's items and rejects, in row order.

    The reference engine lists its items; the native one hands an
    `importer._native.ItemBlock` (a sequence of the same items, kept as wire
    bytes in one buffer, which the writer sends without an object per item).
    """

    items: Sequence[PreparedItem] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def wire_json(item: dict[str, Any]) -> bytes:
    """Compact UTF-8 DynamoDB JSON, the form both engines must agree on when parsed."""
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def ttl_value(ttl: int | None) -> dict[str, Any]:
    """The command's `ttl` as the framework writes it: a number, or null without a TTL."""
    return {"NULL": True} if ttl is None else {"N": str(int(ttl))}


def _check_column(rule: ColumnRule, raw: str, mbc: bool = False) -> dict[str, Any] | None:
    """The typed attribute value for one field, None when empty and optional.

    `mbc`: numbers (JSON ones too) must be ones an MBC application reads exactly.
    """
    kind = rule.type
    text = raw if kind == "string" else raw.strip(" \t")
    if text == "":
        if rule.required:
            raise FieldError("required value is empty")
        return None
    if kind == "string":
        n = len(raw)
        if rule.min_length is not None and n < rule.min_length:
            raise FieldError(f"shorter than min_length {rule.min_length}")
        if rule.max_length is not None and n > rule.max_length:
            raise FieldError(f"longer than max_length {rule.max_length}")
        if rule.enum is not None and raw not in rule.enum:
            raise FieldError(enum_reason(rule.enum))
        if rule.regex is not None and rule.regex.search(raw) is None:
            raise FieldError(f"does not match pattern {rule.pattern}")
        return {"S": raw}
    if kind in ("integer", "decimal"):
        number = parse_integer(text, mbc) if kind == "integer" else parse_decimal(text, mbc)
        if rule.enum is not None and number not in rule.enum:
            raise FieldError(enum_reason(rule.enum))
        if rule.min is not None and Decimal(number) < rule.min:
            raise FieldError(f"less than min {rule.min}")
        if rule.max is not None and Decimal(number) > rule.max:
            raise FieldError(f"greater than max {rule.max}")
        return {"N": number}
    if kind == "boolean":
        return {"BOOL": parse_boolean(text)}
    if kind == "date":
        day = parse_date(text)
        if day is None:
            raise FieldError(DATE_REASON)
        if rule.min_date is not None and day < rule.min_date:
            raise FieldError(f"before min {rule.min_date}")
        if rule.max_date is not None and day > rule.max_date:
            raise FieldError(f"after max {rule.max_date}")
        return {"S": day}
    if kind == "datetime":
        return {"S": parse_datetime(text)}
    return parse_json(text, mbc)


#: Column types whose value a key template renders normalised, as the attribute stores
#: it: `2012/01/01` keys as `2012-01-01`, `007` as `7`, `yes` as `true`.  Otherwise a
#: later file with ISO dates would name other entities than the attributes say.
#: Strings (kept exactly) and JSON render their text.
NORMALISED_KEY_TYPES = frozenset({"integer", "decimal", "boolean", "date", "datetime"})


def key_text(typed: dict[str, Any] | None) -> str:
    """The text a key renders for a typed column's value (empty: "")."""
    if typed is None:
        return ""
    if "BOOL" in typed:
        return "true" if typed["BOOL"] else "false"
    return typed.get("S", typed.get("N", ""))


def key_values(spec: Spec, values: dict[str, str]) -> dict[str, str]:
    """`values` with each typed column's text replaced by its normalised value.

    Only for rows whose columns all passed (a reject never reaches the keys).
    """
    out = dict(values)
    for rule in spec.columns:
        if rule.type in NORMALISED_KEY_TYPES and rule.name in out:
            out[rule.name] = key_text(_check_column(rule, out[rule.name]))
    return out


def _render_key(template: Template, values: dict[str, str], what: str, forbidden: str) -> str:
    text = template.render(values)
    if text == "":
        raise FieldError(f"{what} is empty")
    for ch in forbidden:
        if ch in text:
            raise FieldError(f"{what} must not contain {ch!r} (MBC key separator)")
    return text


def _transform_row(
    spec: Spec, header: Sequence[str], line: int, fields: Sequence[str], ctx: RunContext
) -> PreparedItem | Reject:
    """One row → one item or one reject (lone surrogates, possible in Lambda events'
    JSON escapes, cannot be stored as UTF-8: the row is rejected, not the batch)."""
    try:
        return _map_row(spec, header, line, fields, ctx)
    except UnicodeEncodeError:
        return Reject(line, "", "", "not valid Unicode (lone surrogate)", tuple(fields))


def _map_row(
    spec: Spec, header: Sequence[str], line: int, fields: Sequence[str], ctx: RunContext
) -> PreparedItem | Reject:
    values = dict(zip(header, fields, strict=False))
    attributes: dict[str, Any] = {}
    keyed = dict(values)  # what the key templates render: typed columns normalised
    mbc = spec.numbers == "mbc"
    for rule in spec.columns:
        raw = values[rule.name]
        try:
            typed = _check_column(rule, raw, mbc)
        except FieldError as exc:
            return Reject(line, rule.name, raw, str(exc), tuple(fields))
        if typed is not None and rule.attribute is not None:
            attributes[rule.attribute] = typed
        if rule.type in NORMALISED_KEY_TYPES:
            keyed[rule.name] = key_text(typed)

    rec = spec.record
    keys = {}
    for what, template, forbidden, fallback in (
        ("type", rec.type, "#@", "record.type"),
        ("tenantCode", rec.tenant, "#", "record.tenant"),
        ("code", rec.code, "@", "record.code"),
        ("name", rec.name, "", "record.name"),
    ):
        try:
            keys[what] = (
                template.render(keyed)
                if what == "name"
                else _render_key(template, keyed, what, forbidden)
            )
        except FieldError as exc:
            column = template.first_column(fallback)
            return Reject(line, column, values.get(column, ""), str(exc), tuple(fields))

    rtype, tenant, code = keys["type"], keys["tenantCode"], keys["code"]
    pk = f"{rtype}#{tenant}"
    sk_base = f"{rtype}#{code}"
    sk = f"{sk_base}@1"
    code_column = rec.code.first_column("record.code")
    if len(pk.encode("utf-8")) > MAX_PK_BYTES:
        return Reject(
            line,
            rec.tenant.first_column("record.tenant"),
            tenant,
            f"partition key is over DynamoDB's {MAX_PK_BYTES}-byte limit",
            tuple(fields),
        )
    if len(sk.encode("utf-8")) > MAX_SK_BYTES:
        return Reject(
            line,
            code_column,
            code,
            f"sort key is over DynamoDB's {MAX_SK_BYTES}-byte limit",
            tuple(fields),
        )
    item: dict[str, Any] = {
        "pk": {"S": pk},
        "sk": {"S": sk},
        "id": {"S": f"{pk}#{sk_base}"},
        "code": {"S": code},
        "name": {"S": keys["name"]},
        "type": {"S": rtype},
        "tenantCode": {"S": tenant},
        "version": {"N": "1"},
        "attributes": {"M": attributes},
        "ttl": ttl_value(ctx.ttl),
        "source": {"S": ctx.source},
        "requestId": {"S": f"{ctx.run_id}#{line}"},
        "createdAt": {"S": ctx.timestamp},
        "updatedAt": {"S": ctx.timestamp},
        "createdBy": {"S": ctx.user},
        "updatedBy": {"S": ctx.user},
    }
    if ctx.ip is not None:
        item["createdIp"] = {"S": ctx.ip}
        item["updatedIp"] = {"S": ctx.ip}
    size = item_size_of(item)
    if size > MAX_ITEM_BYTES:
        return Reject(
            line,
            "",
            "",
            f"item is {size} bytes, over DynamoDB's 400 KB item limit",
            tuple(fields),
        )
    return PreparedItem(line, pk, sk, wire_json(item))


def transform_batch(
    spec: Spec,
    header: Sequence[str],
    rows: Sequence[Row],
    ctx: RunContext,
) -> TransformResult:
    """Validate and map one batch; every row ends as exactly one item or reject.

    Rows with the same key are all kept: the batch unit settles them by import mode
    (`importer.run.batch_steps`).
    """
    items: list[PreparedItem] = []
    result = TransformResult(items=items)
    for line, fields in rows:
        outcome = _transform_row(spec, header, line, fields, ctx)
        if isinstance(outcome, Reject):
            result.rejects.append(outcome)
        else:
            items.append(outcome)
    return result


#: A row's ItemReader JSON size, as the run batches it (`native_engine`'s is in C).
row_json_size = item_json_size


def open_reader(stream: IO[bytes], options: CsvOptions) -> CsvReader:
    """The CSV reader this engine's rows come from: ItemReader's rules, parsed in Python."""
    return CsvReader(stream, options)
