"""The native engine: `importer.transform.reference`'s transform, run by the Cython core.

`transform_batch` is a drop-in for `importer.transform.reference.transform_batch`: the
same items (same wire JSON once parsed, same pk/sk/line), the same rejects in
the same order (duplicates are the batch unit's to settle).  The Spec
is compiled once (per header and RunContext) into a `_native.TransformPlan`;
each batch is then gathered under the GIL, validated and serialised in C with
the GIL released, and turned back into records here.

Rows the C core does not take are handed to the reference, one row at a time,
so the result is still the reference's: rows that are not `(int, list[str])`
of the header's width, and strings with lone surrogates.  The one deliberate
difference: where the reference *raises* `UnicodeEncodeError` (a lone
surrogate reaching an item, e.g. `{"a":"\\ud800"}` in a json column), this
engine returns the reject the reference clearly intends,
`"not valid Unicode (lone surrogate)"`.

Also here, for the driver: `row_json_size` (== `batching.item_json_size`) and
`open_reader` (a `source.CsvReader` whose bytes are parsed in C).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import IO, Any

from importer import _native
from importer.input.batching import Batch, Batcher
from importer.input.batching import item_json_size as _py_item_json_size
from importer.input.options import CsvOptions
from importer.input.reader import RowReader
from importer.input.source import (
    CHUNK_BYTES,
    MAX_HEADER_BYTES,
    MAX_RECORD_BYTES,
    CsvReader,
    ParsedRow,
    SourceError,
    _decode,
    _RecordParser,
    read_header,
)
from importer.item_size import attribute_size
from importer.records import PreparedItem, Reject
from importer.transform import reference as _ref
from importer.transform.context import RunContext
from importer.transform.reference import Row, TransformResult
from importer.transform.spec import ColumnRule, Spec
from importer.transform.values import MBC_NUMBER_REASON, FieldError, enum_reason, parse_json

__all__ = [
    "NativeCsvReader",
    "compile_plan",
    "open_reader",
    "row_json_size",
    "transform_batch",
]

_C = _native.CODES
_KINDS = {
    "string": _C["K_STRING"],
    "integer": _C["K_INTEGER"],
    "decimal": _C["K_DECIMAL"],
    "boolean": _C["K_BOOLEAN"],
    "date": _C["K_DATE"],
    "datetime": _C["K_DATETIME"],
    "json": _C["K_JSON"],
}
_WHAT = ("type", "tenantCode", "code", "name")
_FALLBACK_COLUMN = ("record.type", "record.tenant", "record.code", "record.name")

_RANGE = "number is out of DynamoDB's range (1E-130 to 9.9E+125)"
_FIXED_REASONS = {
    _C["R_REQUIRED"]: "required value is empty",
    _C["R_ENUM"]: "not one of the allowed values",
    _C["R_NOT_INT"]: "not an integer",
    _C["R_NOT_DEC"]: "not a decimal number",
    _C["R_RANGE"]: _RANGE,
    _C["R_BOOL"]: "not a boolean (true/false, yes/no, y/n, t/f, 1/0)",
    _C["R_DATE"]: _ref.DATE_REASON,
    _C["R_DT"]: "not an ISO 8601 date-time (YYYY-MM-DDTHH:MM[:SS[.fff]][±HH:MM|Z])",
    _C["R_DT_CAL"]: "not a real calendar date",
    _C["R_DT_TIME"]: "time of day out of range",
    _C["R_DT_OFF"]: "UTC offset out of range",
    _C["R_MBC_NUM"]: MBC_NUMBER_REASON,
}


# ---------------------------------------------------------------------------
# Compiling a Spec into a plan
# ---------------------------------------------------------------------------


class _Unsupported(Exception):
    """The plan cannot be built natively: the reference runs the whole batch."""


def _utf8(text: Any) -> bytes:
    if not isinstance(text, str):
        raise _Unsupported(f"not a string: {text!r}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Unsupported("lone surrogate in the spec or context") from None


def _json_str(text: str) -> bytes:
    """`json.dumps(text, ensure_ascii=False)` in UTF-8 (with the quotes)."""
    _utf8(text)
    return json.dumps(text, ensure_ascii=False).encode("utf-8")


class _Blob:
    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, piece: bytes) -> tuple[int, int]:
        off = len(self.data)
        self.data += piece
        return off, len(piece)


def _bound(value: Decimal | None, blob: _Blob) -> tuple[int, int, int, int, int] | None:
    if value is None:
        return None
    sign, digit_tuple, exp = value.as_tuple()
    if not isinstance(exp, int):
        raise _Unsupported("non-finite bound")
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    if not digits:
        return (1, 0, 0, 0, 0)
    point = len(digits) + exp
    digits = digits.rstrip("0")
    off, n = blob.add(digits.encode("ascii"))
    return (0, int(sign), point, off, n)


def _date_bound(value: str | None) -> bytes | None:
    if value is None:
        return None
    raw = _utf8(value)
    if len(raw) != 10 or len(value) != 10:
        raise _Unsupported("date bound not in YYYY-MM-DD form")
    return raw


def _column_spec(
    rule: ColumnRule, index: dict[Any, int], blob: _Blob, enums: list[bytes], mbc: bool = False
) -> dict[str, Any]:
    kind = rule.type
    if kind not in _KINDS:
        raise _Unsupported(f"unknown column type {kind!r}")
    attr_off, attr_len, attr_size = -1, 0, 0
    if rule.attribute is not None:
        attr_size = len(_utf8(rule.attribute))
        attr_off, attr_len = blob.add(_json_str(rule.attribute) + b":")
    enum_start, enum_count = 0, -1
    numeric = kind in ("integer", "decimal")
    if rule.enum is not None and (kind == "string" or numeric):
        enum_start, enum_count = len(enums), len(rule.enum)
        enums.extend(_utf8(v) for v in rule.enum)
    reasons = dict(_FIXED_REASONS)
    reasons[_C["R_SHORT"]] = f"shorter than min_length {rule.min_length}"
    reasons[_C["R_LONG"]] = f"longer than max_length {rule.max_length}"
    reasons[_C["R_PATTERN"]] = f"does not match pattern {rule.pattern}"
    reasons[_C["R_LESS"]] = f"less than min {rule.min}"
    reasons[_C["R_GREATER"]] = f"greater than max {rule.max}"
    reasons[_C["R_BEFORE"]] = f"before min {rule.min_date}"
    reasons[_C["R_AFTER"]] = f"after max {rule.max_date}"
    if rule.enum is not None:
        reasons[_C["R_ENUM"]] = enum_reason(rule.enum)
    is_string = kind == "string"
    return {
        "name": rule.name,
        "index": index[rule.name],
        "kind": _KINDS[kind],
        "required": bool(rule.required),
        "mbc": bool(mbc),
        "attr_off": attr_off,
        "attr_len": attr_len,
        "attr_size": attr_size,
        "min_len": rule.min_length if is_string and rule.min_length is not None else -1,
        "max_len": rule.max_length if is_string and rule.max_length is not None else -1,
        "enum_start": enum_start,
        "enum_count": enum_count,
        "regex": rule.regex if is_string else None,
        "lo": _bound(rule.min, blob) if numeric else None,
        "hi": _bound(rule.max, blob) if numeric else None,
        "min_date": _date_bound(rule.min_date) if kind == "date" else None,
        "max_date": _date_bound(rule.max_date) if kind == "date" else None,
        "reasons": reasons,
    }


def _context_parts(ctx: RunContext) -> tuple[bytes, bytes, int]:
    """The constant tail of every item and the item_size of all constant parts."""
    source, run_id, ts, user = ctx.source, ctx.run_id, ctx.timestamp, ctx.user
    ip = ctx.ip
    ttl = b'{"NULL":true}' if ctx.ttl is None else b'{"N":"' + str(int(ctx.ttl)).encode() + b'"}'
    tail1 = (
        b'}},"ttl":'
        + ttl
        + b',"source":{"S":'
        + _json_str(source)
        + b'},"requestId":{"S":'
        + _json_str(run_id)[:-1]
        + b"#"
    )
    tail2 = (
        b'"},"createdAt":{"S":'
        + _json_str(ts)
        + b'},"updatedAt":{"S":'
        + _json_str(ts)
        + b'},"createdBy":{"S":'
        + _json_str(user)
        + b'},"updatedBy":{"S":'
        + _json_str(user)
        + b"}"
    )
    keys = [
        "pk",
        "sk",
        "id",
        "code",
        "name",
        "type",
        "tenantCode",
        "version",
        "attributes",
        "ttl",
        "source",
        "requestId",
        "createdAt",
        "updatedAt",
        "createdBy",
        "updatedBy",
    ]
    size = 2  # version {"N": "1"}
    size += attribute_size(_ref.ttl_value(ctx.ttl))
    size += len(_utf8(source)) + len(_utf8(run_id)) + 1
    size += 2 * len(_utf8(ts)) + 2 * len(_utf8(user))
    if ip is not None:
        tail2 += b',"createdIp":{"S":' + _json_str(ip) + b'},"updatedIp":{"S":'
        tail2 += _json_str(ip) + b"}"
        keys += ["createdIp", "updatedIp"]
        size += 2 * len(_utf8(ip))
    tail2 += b"}"
    size += sum(len(k) for k in keys)
    return tail1, tail2, size


def compile_plan(spec: Spec, header: Sequence[str], ctx: RunContext) -> Any:
    """The native plan for (spec, header, ctx), or None when the reference must run."""
    try:
        index: dict[Any, int] = {}
        for i, name in enumerate(header):
            index[name] = i  # dict(zip(header, fields)): the last column of a name wins
        if any(c not in index for c in spec.needed_columns):
            return None  # the reference raises KeyError on the first row
        blob = _Blob()
        enums: list[bytes] = []
        mbc = spec.numbers == "mbc"
        cols = [_column_spec(rule, index, blob, enums, mbc) for rule in spec.columns]
        rec = spec.record
        templates = []
        typed = {
            rule.name: n
            for n, rule in enumerate(spec.columns)
            if rule.type in _ref.NORMALISED_KEY_TYPES
        }
        for template in (rec.type, rec.tenant, rec.code, rec.name):
            parts = []
            for i, part in enumerate(template.parts):
                if i % 2 and part in typed:
                    parts.append(("val", typed[part], 0))
                elif i % 2:
                    parts.append(("col", index[part], 0))
                elif part:
                    off, n = blob.add(_utf8(part))
                    parts.append(("lit", off, n))
            templates.append(parts)
        tail1, tail2, base = _context_parts(ctx)
    except _Unsupported:
        return None
    plan = _native.TransformPlan(
        spec, tuple(header), index, cols, templates, bytes(blob.data), enums
    )
    plan.set_context(ctx, tail1, tail2, base)
    plan.tpl_reject = [
        (col, index.get(col, -1))
        for col in (
            t.first_column(fb)
            for t, fb in zip(
                (rec.type, rec.tenant, rec.code, rec.name), _FALLBACK_COLUMN, strict=True
            )
        )
    ]
    return plan


_PLANS: dict[tuple[int, tuple[Any, ...], RunContext], tuple[Spec, Any]] = {}
_PLANS_LOCK = threading.Lock()
_MAX_PLANS = 64


def _plan_for(spec: Spec, header: Sequence[str], ctx: RunContext) -> Any:
    key = (id(spec), tuple(header), ctx)
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is spec:
        return hit[1]
    plan = compile_plan(spec, header, ctx)
    with _PLANS_LOCK:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = (spec, plan)  # the spec stays alive, so its id is not reused
    return plan


# ---------------------------------------------------------------------------
# transform_batch
# ---------------------------------------------------------------------------


def _reference_row(
    spec: Spec, header: Sequence[str], line: Any, fields: Sequence[str], ctx: RunContext
) -> PreparedItem | Reject:
    try:
        return _ref._transform_row(spec, header, line, fields, ctx)
    except UnicodeEncodeError:
        return Reject(line, "", "", "not valid Unicode (lone surrogate)", tuple(fields))


def _json_value(text: str, mbc: bool = False) -> tuple[bytes, int] | str:
    try:
        value = parse_json(text, mbc)
    except FieldError as exc:
        return str(exc)
    wire = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return wire, attribute_size(value)


def _json_value_mbc(text: str) -> tuple[bytes, int] | str:
    return _json_value(text, True)


def transform_batch(
    spec: Spec,
    header: Sequence[str],
    rows: Sequence[Row],
    ctx: RunContext,
) -> TransformResult:
    """Validate and map one batch; every row ends as exactly one item or reject."""
    plan = _plan_for(spec, header, ctx)
    result = TransformResult()
    if plan is None:
        items: list[PreparedItem] = []
        result.items = items
        for line, fields in rows:
            outcome = _reference_row(spec, header, line, fields, ctx)
            if isinstance(outcome, Reject):
                result.rejects.append(outcome)
            else:
                items.append(outcome)
    else:

        def fallback_row(line: Any, fields: Sequence[str]) -> PreparedItem | Reject:
            return _reference_row(spec, header, line, fields, ctx)

        def key_reject(code: int, t: int, param: int, line: int, fields: Sequence[str]) -> Reject:
            return _key_reject(spec, plan, header, code, t, param, line, fields)

        json_value = _json_value_mbc if spec.numbers == "mbc" else _json_value
        result.items, result.rejects = _native.transform_rows(
            plan, rows, PreparedItem, Reject, json_value, fallback_row, key_reject
        )
    return result


def _key_reject(
    spec: Spec,
    plan: Any,
    header: Sequence[str],
    code: int,
    t: int,
    param: int,
    line: int,
    fields: Sequence[str],
) -> Reject:
    row = tuple(fields)
    if code == _C["R_ITEM_SIZE"]:
        reason = f"item is {param} bytes, over DynamoDB's 400 KB item limit"
        return Reject(line, "", "", reason, row)
    column, idx = plan.tpl_reject[t]
    what = _WHAT[t]
    if code == _C["R_KEY_EMPTY"]:
        return Reject(line, column, fields[idx] if idx >= 0 else "", f"{what} is empty", row)
    if code == _C["R_KEY_SEP"]:
        reason = f"{what} must not contain {chr(param)!r} (MBC key separator)"
        return Reject(line, column, fields[idx] if idx >= 0 else "", reason, row)
    values = _ref.key_values(spec, dict(zip(header, fields, strict=False)))
    rec = spec.record
    if code == _C["R_PK_LONG"]:
        return Reject(
            line,
            column,
            rec.tenant.render(values),
            f"partition key is over DynamoDB's {_ref.MAX_PK_BYTES}-byte limit",
            row,
        )
    if code == _C["R_SK_LONG"]:
        return Reject(
            line,
            column,
            rec.code.render(values),
            f"sort key is over DynamoDB's {_ref.MAX_SK_BYTES}-byte limit",
            row,
        )
    raise AssertionError(f"unknown native status {code}")


# ---------------------------------------------------------------------------
# row_json_size and the CSV reader
# ---------------------------------------------------------------------------


def row_json_size(header: Sequence[str], fields: Sequence[str]) -> int:
    """`importer.input.batching.item_json_size`, computed in C (same result, same errors)."""
    return _native.row_json_size(header, fields, _py_item_json_size)


def _reparse_record(raw: bytes, first_line: int, delimiter: str) -> tuple[list[str], str | None]:
    """`source.iter_records` on one record's raw lines (used when they hold invalid UTF-8)."""
    parser: _RecordParser | None = None
    error: str | None = None
    line_no = first_line - 1
    for physical in raw.splitlines(keepends=True):
        line_no += 1
        if physical.endswith(b"\r\n"):
            content, term = physical[:-2], "\r\n"
        elif physical.endswith((b"\r", b"\n")):
            content, term = physical[:-1], physical[-1:].decode("ascii")
        else:
            content, term = physical, ""
        text, bad = _decode(content, line_no)
        if line_no == 1 and text.startswith("\ufeff"):
            text = text[1:]
        if parser is None:
            if '"' not in text and "\\" not in text:
                return text.split(delimiter), bad
            parser = _RecordParser(delimiter)
        error = error or bad
        if parser.feed(text, term):
            return parser.fields, error
    assert parser is not None
    return (
        parser.fields + ["".join(parser.buf)],
        f"unterminated quoted field (quote opened on line {first_line}, never closed)",
    )


class NativeCsvReader(RowReader):
    """`importer.input.source.CsvReader` with the bytes parsed in C, chunk by chunk."""

    def __init__(
        self, stream: IO[bytes], options: CsvOptions, *, chunk_bytes: int = CHUNK_BYTES
    ) -> None:
        self.options = options
        given = options.header_location == "GIVEN"
        self._records = _native.RecordReader(
            stream,
            options.delimiter,
            ParsedRow,
            SourceError,
            chunk_bytes,
            _reparse_record,
            MAX_RECORD_BYTES if given else MAX_HEADER_BYTES,
        )
        self.header: list[str] = read_header(self._records, options)
        self._records.max_record = MAX_RECORD_BYTES  # the header may be longer than a row

    @property
    def padded(self) -> int:
        return self._records.padded

    @property
    def truncated(self) -> int:
        return self._records.truncated

    @property
    def padded_lines(self) -> list[int]:
        return list(self._records.padded_lines)

    @property
    def truncated_lines(self) -> list[int]:
        return list(self._records.truncated_lines)

    def __iter__(self) -> Any:
        self._records.width = len(self.header)
        return self._records

    def read_batches(self, batcher: Batcher) -> Iterator[Batch] | None:
        """The batches `batcher` would cut from the rows, cut in C (one call per batch).

        None when the header needs the per-row path: repeated names (a JSON
        object keeps the last) or names that are not encodable.
        """
        header = self.header
        if len(set(header)) != len(header):
            return None
        try:
            lens = [len(json.dumps(h, ensure_ascii=False).encode("utf-8")) for h in header]
        except UnicodeEncodeError:
            return None
        self._records.width = len(header)
        max_items, max_bytes, base = batcher.limits

        def size_of(fields: list[str]) -> int:
            return row_json_size(header, fields)

        def cut() -> Iterator[Batch]:
            read_batch = self._records.read_batch
            while (got := read_batch(max_items, max_bytes, base, lens, size_of)) is not None:
                yield batcher.adopt(*got)

        return cut()

    def close(self) -> None:
        self._records.close()


def open_reader(
    stream: IO[bytes], options: CsvOptions, *, chunk_bytes: int = CHUNK_BYTES
) -> NativeCsvReader | CsvReader:
    """A CsvReader-compatible reader over `stream` (native unless the delimiter is odd)."""
    d = options.delimiter
    if not (isinstance(d, str) and len(d) == 1 and ord(d) < 128):
        return CsvReader(stream, options)
    return NativeCsvReader(stream, options, chunk_bytes=chunk_bytes)
