"""Field parsers: one CSV string in, one normalised DynamoDB value (or a reason) out.

These functions define what each spec type accepts; `importer._native` must
agree with them on every input (the equivalence tests hold it to that).  Each
returns the normalised value, or raises `FieldError` whose message is the
reject reason a user reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import date
from typing import Any

__all__ = [
    "ENUM_REASON_CHARS",
    "FieldError",
    "MAX_NUMBER_DIGITS",
    "enum_reason",
    "normalise_number",
    "parse_integer",
    "parse_decimal",
    "parse_boolean",
    "parse_date",
    "parse_datetime",
    "parse_json",
    "MBC_NUMBER_REASON",
    "MAX_SAFE_INTEGER",
    "mbc_number_ok",
    "TRUE_WORDS",
    "FALSE_WORDS",
]

#: DynamoDB keeps at most 38 significant digits per number.
MAX_NUMBER_DIGITS = 38
#: Decimal exponent range DynamoDB accepts (1E-130 .. 9.99…E+125).
MIN_EXPONENT = -130
MAX_EXPONENT = 125

#: JavaScript's Number.MAX_SAFE_INTEGER: the largest integer an MBC application reads exactly.
MAX_SAFE_INTEGER = 2**53 - 1
_MAX_SAFE_TEXT = str(MAX_SAFE_INTEGER)
#: A float64 round-trips every decimal of at most this many significant digits (DBL_DIG).
MBC_MAX_DIGITS = 15
#: Why an MBC target refuses a number: the framework reads numbers with the AWS SDK's
#: unmarshall into JavaScript numbers -- an integer beyond 2^53-1 becomes a BigInt no later
#: write can serialise, a longer decimal is rounded or makes the read throw.
MBC_NUMBER_REASON = (
    "number an MBC application cannot read exactly (JavaScript numbers: integers up to "
    "+-9007199254740991, at most 15 significant digits); "
    '[target] numbers = "dynamodb" in the spec stores DynamoDB\'s full range'
)

TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0"})

_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_DECIMAL = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?\Z")
_DATE = re.compile(r"([0-9]{4})[-/]([0-9]{2})[-/]([0-9]{2})\Z")
_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:\.([0-9]{1,9}))?)?"
    r"(Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)?\Z"
)
_WS = " \t"


class FieldError(ValueError):
    """A field does not satisfy its type or rule; the message is the reason."""


#: How much of an enum's list a reject reason shows before it says "(N more)".
ENUM_REASON_CHARS = 80
_PLAIN_VALUE = re.compile(r"[^\s,\"]+\Z")


def _shown(value: str) -> str:
    """A value as the user wrote it, quoted only when a plain list would hide it."""
    return value if _PLAIN_VALUE.match(value) else json.dumps(value, ensure_ascii=False)


def enum_reason(allowed: Sequence[str]) -> str:
    """The reject reason for a value outside `allowed`, naming the allowed values.

    "not one of the allowed values" alone sends the user to the spec; the list
    answers the question in the rejects file.  A long list is cut after about
    `ENUM_REASON_CHARS` characters and says how many values it left out.  Both
    engines take their reason from here, so they stay byte-identical.
    """
    shown: list[str] = []
    used = 0
    for value in allowed:
        text = _shown(value)
        if shown and used + 2 + len(text) > ENUM_REASON_CHARS:
            break
        if not shown and len(text) > ENUM_REASON_CHARS:
            text = text[: ENUM_REASON_CHARS - 3] + "..."
        shown.append(text)
        used += len(text) + (2 if len(shown) > 1 else 0)
    listed = ", ".join(shown)
    rest = len(allowed) - len(shown)
    if rest:
        listed += f", ... ({rest} more)"
    return f"not one of the allowed values: {listed}"


def normalise_number(sign: str, int_digits: str, frac_digits: str, exponent: int) -> str:
    """Plain-notation canonical form of sign·int.frac·10^exponent.

    Canonical means: no exponent, no leading or trailing zeros, no `+`, and
    zero is `0`, so equal numbers always produce byte-identical items.
    """
    digits = (int_digits + frac_digits).lstrip("0")
    point = len(int_digits) - (len(int_digits + frac_digits) - len(digits)) + exponent
    # `point` = position of the decimal point relative to the first significant digit
    digits_stripped = digits.rstrip("0")
    if not digits_stripped:
        return "0"
    if len(digits_stripped) > MAX_NUMBER_DIGITS:
        raise FieldError(
            f"number has {len(digits_stripped)} significant digits; DynamoDB keeps at most 38"
        )
    adjusted = point - 1  # exponent of the first significant digit
    if adjusted > MAX_EXPONENT or adjusted < MIN_EXPONENT:
        raise FieldError("number is out of DynamoDB's range (1E-130 to 9.9E+125)")
    digits = digits_stripped
    if point <= 0:
        body = "0." + "0" * (-point) + digits
    elif point >= len(digits):
        body = digits + "0" * (point - len(digits))
    else:
        body = digits[:point] + "." + digits[point:]
    return "-" + body if sign == "-" else body


def mbc_number_ok(number: str) -> bool:
    """Does a JavaScript number hold this normalised number (`normalise_number`'s form) exactly?

    Integral values: up to 2^53-1 in magnitude, whatever their digits (every such
    integer is a float64).  Others: at most 15 significant digits, so the float64
    the framework reads prints back as the same decimal (DynamoDB's own floor,
    1E-130, keeps every number far above float64's subnormals).
    """
    body = number[1:] if number.startswith("-") else number
    whole, _, frac = body.partition(".")
    if not frac:
        return len(whole) < 16 or (len(whole) == 16 and whole <= _MAX_SAFE_TEXT)
    digits = frac.lstrip("0") if whole == "0" else whole + frac
    return len(digits) <= MBC_MAX_DIGITS


def _mbc_checked(number: str, mbc: bool) -> str:
    if mbc and not mbc_number_ok(number):
        raise FieldError(MBC_NUMBER_REASON)
    return number


def parse_integer(text: str, mbc: bool = False) -> str:
    """An integer, normalised; `mbc`: only one an MBC application reads exactly."""
    value = text.strip(_WS)
    if not _INTEGER.match(value):
        raise FieldError("not an integer")
    sign = value[0] if value[0] in "+-" else ""
    return _mbc_checked(normalise_number(sign, value[len(sign) :], "", 0), mbc)


def parse_decimal(text: str, mbc: bool = False) -> str:
    """A decimal, normalised; `mbc`: only one an MBC application reads exactly."""
    return _mbc_checked(_parse_decimal(text), mbc)


def _parse_decimal(text: str) -> str:
    value = text.strip(_WS)
    m = _DECIMAL.match(value)
    if not m or not (m.group(2) or m.group(3)):
        raise FieldError("not a decimal number")
    sign, int_digits, frac_digits, exp = m.group(1), m.group(2), m.group(3) or "", m.group(4)
    if exp and len(exp.lstrip("+-").lstrip("0")) > 6:
        raise FieldError("number is out of DynamoDB's range (1E-130 to 9.9E+125)")
    exponent = int(exp) if exp else 0
    if abs(exponent) > 100000:
        raise FieldError("number is out of DynamoDB's range (1E-130 to 9.9E+125)")
    return normalise_number(sign, int_digits, frac_digits, exponent)


def parse_boolean(text: str) -> bool:
    value = text.strip(_WS).lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise FieldError("not a boolean (true/false, yes/no, y/n, t/f, 1/0)")


def parse_date(text: str) -> str | None:
    """`YYYY-MM-DD` or `YYYY/MM/DD` → `YYYY-MM-DD`; None when not a real date."""
    m = _DATE.match(text.strip(_WS))
    if not m:
        return None
    year, month, day = (int(g) for g in m.groups())
    try:
        date(year, month, day)
    except ValueError:
        return None
    if year == 0:
        return None
    return f"{m.group(1)}-{m.group(2)}-{m.group(3)}"


def parse_datetime(text: str) -> str:
    """ISO 8601 date-time → `YYYY-MM-DDTHH:MM:SS[.fff]±HH:MM`.

    A value without an offset is taken as UTC, so every stored timestamp
    carries its offset and sorts correctly within one offset.
    """
    m = _DATETIME.match(text.strip(_WS))
    if not m:
        raise FieldError("not an ISO 8601 date-time (YYYY-MM-DDTHH:MM[:SS[.fff]][±HH:MM|Z])")
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    if parse_date(f"{y}-{mo}-{d}") is None:
        raise FieldError("not a real calendar date")
    ss = ss or "00"
    if int(hh) > 23 or int(mi) > 59 or int(ss) > 59:
        raise FieldError("time of day out of range")
    if tz is None or tz in ("Z", "z"):
        offset = "+00:00"
    else:
        oh, om = tz[1:3], tz[3:].lstrip(":") or "00"
        if int(oh) > 23 or int(om) > 59:
            raise FieldError("UTC offset out of range")
        offset = f"{tz[0]}{oh}:{om}"
    fraction = f".{frac}" if frac else ""
    return f"{y}-{mo}-{d}T{hh}:{mi}:{ss}{fraction}{offset}"


def _reject_constant(name: str) -> Any:
    raise FieldError(f"JSON {name} is not a number DynamoDB can store")


def _to_dynamodb(value: Any) -> dict[str, Any]:
    if isinstance(value, _Number):
        return {"N": str(value)}
    if value is None:
        return {"NULL": True}
    if value is True or value is False:
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, list):
        return {"L": [_to_dynamodb(v) for v in value]}
    return {"M": {k: _to_dynamodb(v) for k, v in value.items()}}


class _Number(str):
    """A JSON number already normalised for DynamoDB (keeps exact digits)."""


def _number_hook(text: str) -> _Number:
    return _Number(parse_decimal(text))


class _MbcNumberError(FieldError):
    """A JSON number outside what an MBC application reads (the message is the number)."""


def _mbc_number_hook(text: str) -> _Number:
    number = _parse_decimal(text)
    if not mbc_number_ok(number):
        raise _MbcNumberError(text if len(text) <= 40 else text[:37] + "...")
    return _Number(number)


def parse_json(text: str, mbc: bool = False) -> dict[str, Any]:
    """A JSON object or array → DynamoDB `M` or `L` (numbers kept exact).

    `mbc`: every number in it must be one an MBC application reads exactly.
    """
    try:
        value = json.loads(
            text,
            parse_int=_mbc_number_hook if mbc else _number_hook,
            parse_float=_mbc_number_hook if mbc else _number_hook,
            parse_constant=_reject_constant,
        )
    except _MbcNumberError as exc:
        raise FieldError(f"JSON number {exc}: {MBC_NUMBER_REASON}") from None
    except FieldError as exc:
        raise FieldError(f"invalid JSON: {exc}") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise FieldError(f"invalid JSON: {msg}") from None
    if not isinstance(value, dict | list):
        raise FieldError("expected a JSON object or array")
    return _to_dynamodb(value)
