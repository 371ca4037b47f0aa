"""MBC CQRS record rules shared by the command state machine and the bulk sync.

Both paths (:mod:`importer.mbc.command_states`, one Lambda state at a time, and
:mod:`importer.mbc.sync`, whole tables at once) must leave byte-identical tables,
so every rule that decides what a written item looks like lives here, once:
the version helpers of ``core/src/helpers/key.ts``, the table names of
``DynamoDbService.getTableName``, the TTL of ``TtlService.calculateTtl`` and
the way the framework's ``objToDdbItem`` re-renders ``createdAt`` /
``updatedAt`` on every PutItem.

Items are DynamoDB JSON dicts (``{"pk": {"S": ...}, ...}``) throughout, never
deserialized: numbers, sets and binary values keep their wire form.

Why dates are re-rendered: the framework reads an item into JavaScript with
``createdAt``/``updatedAt`` turned into ``Date`` objects and writes it back with
``toISOStringWithTimezone`` -- in the Lambda's local time zone (``TZ``, UTC on
AWS Lambda) and without milliseconds.  A command stamped ``...+09:00`` comes
back ``...+00:00`` on the data row.  :func:`render_dates` does the same.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "TABLE_SCHEMA",
    "COMMAND_SUFFIX",
    "DATE_FIELDS",
    "Clock",
    "CommandTtl",
    "Item",
    "Tables",
    "TtlResolver",
    "add_sk_version",
    "command_ttl",
    "format_date",
    "get_sk_version",
    "item_version",
    "local_tz",
    "notify_tenant",
    "remove_sk_version",
    "render_dates",
    "tenant_of",
    "with_ttl",
]

Item = dict[str, Any]
#: Epoch seconds now (``time.time``); injected in tests so both paths agree.
Clock = Callable[[], float]

VER_SEPARATOR = "@"
KEY_SEPARATOR = "#"
COMMAND_SUFFIX = "-command"
DATE_FIELDS = ("createdAt", "updatedAt")
DEFAULT_TENANT = "single"
#: CreateTable arguments of every MBC table (command, data, history): string pk/sk keys.
TABLE_SCHEMA: dict[str, Any] = {
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ],
    "BillingMode": "PAY_PER_REQUEST",
}


# ----------------------------------------------------------------------- keys
def remove_sk_version(sk: str) -> str:
    """``TYPE#code@3`` -> ``TYPE#code`` (cut at the last ``@``)."""
    i = sk.rfind(VER_SEPARATOR)
    return sk if i == -1 else sk[:i]


def add_sk_version(sk: str, version: int | str) -> str:
    """Strip any version and append ``@version``."""
    return f"{remove_sk_version(sk)}{VER_SEPARATOR}{version}"


def get_sk_version(sk: str) -> int:
    """The integer after the last ``@``; -1 without one (``VERSION_LATEST``)."""
    i = sk.rfind(VER_SEPARATOR)
    if i == -1:
        return -1
    try:
        return int(sk[i + 1 :])
    except ValueError:
        return -1


def tenant_of(pk: str) -> str | None:
    """``getTenantCode``: the text after the last ``#`` (None without one)."""
    i = pk.rfind(KEY_SEPARATOR)
    return None if i == -1 else pk[i + 1 :]


def notify_tenant(pk: str) -> str:
    """The notifications' tenantCode: text after the *first* ``#`` (all of pk without one)."""
    return pk[pk.find(KEY_SEPARATOR) + 1 :]


def item_version(item: Mapping[str, Any] | None) -> int:
    """``item.version`` as an int (0 when absent or not a number)."""
    if not item:
        return 0
    value = item.get("version")
    if not isinstance(value, dict) or "N" not in value:
        return 0
    try:
        number = float(value["N"])
    except ValueError:
        return 0
    return int(number) if number.is_integer() else 0


# ---------------------------------------------------------------------- dates
def local_tz(name: str | None = None) -> tzinfo:
    """The Lambda's local zone: ``name``, else ``$TZ`` (``:UTC`` on Lambda), else UTC."""
    name = (name if name is not None else os.environ.get("TZ", "")).lstrip(":")
    if not name or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (TZ)") from None


def format_date(moment: datetime, tz: tzinfo) -> str:
    """``toISOStringWithTimezone``: ``YYYY-MM-DDTHH:MM:SS+HH:MM`` in ``tz``, no fraction."""
    local = moment.astimezone(tz)
    offset = local.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _parse_js_date(text: str, tz: tzinfo) -> datetime | None:
    """What ``new Date(text)`` reads from an ISO string (None when JS would say Invalid)."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        # JS: a date-only form is UTC, a date-time without offset is local time
        moment = moment.replace(tzinfo=UTC if len(value) <= 10 else tz)
    return moment


def render_dates(item: Item, tz: tzinfo) -> Item:
    """A copy of ``item`` with non-empty string dates re-rendered as the framework writes them.

    A value ``new Date()`` cannot parse is left as it is (the framework would
    write ``NaN-NaN-...``; we keep the original rather than copy that).
    """
    out = dict(item)
    for name in DATE_FIELDS:
        value = out.get(name)
        if isinstance(value, dict) and value.get("S"):
            out[name] = {"S": _render_text(value["S"], tz)}
    return out


@functools.lru_cache(maxsize=4096)
def _render_text(text: str, tz: tzinfo) -> str:
    # one run stamps every record with the same few timestamps: parse each once
    moment = _parse_js_date(text, tz)
    return text if moment is None else format_date(moment, tz)


def with_ttl(item: Item, ttl: int | float | None) -> Item:
    """``item.ttl = ttl``: a number, or DynamoDB NULL for null (the framework writes null)."""
    out = dict(item)
    out["ttl"] = {"NULL": True} if ttl is None else {"N": _js_number(ttl)}
    return out


def _js_number(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


# --------------------------------------------------------------------- tables
@dataclass(frozen=True, slots=True)
class Tables:
    """The names one module's pipeline touches (``DynamoDbService.getTableName``).

    ``prefix`` is ``"{NODE_ENV}-{APP_NAME}-"``; ``module`` is the table name
    without prefix and ``-command``.  ``master_data`` holds the TTL config.
    """

    command: str
    data: str
    history: str
    module: str
    prefix: str

    @property
    def master_data(self) -> str:
        return f"{self.prefix}master-data"

    @classmethod
    def from_command_table(
        cls,
        command: str,
        *,
        prefix: str | None = None,
        data: str | None = None,
        history: str | None = None,
    ) -> Tables:
        """Derive the module's tables from the command table's name.

        The prefix is ``prefix``, else ``$NODE_ENV-$APP_NAME-`` when both are set
        (as the framework reads it), else everything before the module segment
        (``dev-app-sample-command`` -> prefix ``dev-app-``, module ``sample``).
        """
        if not command:
            raise ValueError("command table name is empty")
        if prefix is None:
            env, app = os.environ.get("NODE_ENV"), os.environ.get("APP_NAME")
            if env and app and command.startswith(f"{env}-{app}-"):
                prefix = f"{env}-{app}-"
        stem = command[: command.rfind("-")] if "-" in command else command
        if prefix is None:
            i = stem.rfind("-")
            prefix = stem[: i + 1] if i != -1 else ""
        elif not command.startswith(prefix):
            raise ValueError(f"table {command!r} does not start with the prefix {prefix!r}")
        module = stem[len(prefix) :]
        return cls(
            command=command,
            data=data or f"{prefix}{module}-data",
            history=history or f"{prefix}{module}-history",
            module=module,
            prefix=prefix,
        )


# ------------------------------------------------------------------------ TTL
class TtlResolver:
    """``TtlService.calculateTtl``: ``floor(now) + days*86400`` from the master-data table.

    The config lives at ``pk = MASTER#{tenant or 'single'}``, ``sk = TTL#{table}``,
    ``attributes.days``.  No config, ``days`` 0 or unreadable, or a failed read
    -> None (the framework logs and returns null); a negative ``days`` raises,
    as ``calculateUnixTime`` does.  ``cache=True`` remembers each config for the
    resolver's lifetime (the bulk sync reads it once per table and tenant).
    """

    def __init__(
        self, dynamodb: Any, master_table: str, *, clock: Clock = time.time, cache: bool = False
    ) -> None:
        self.dynamodb = dynamodb
        self.master_table = master_table
        self.clock = clock
        self._cache: dict[tuple[str, str], float | None] | None = {} if cache else None

    def days(self, table: str, tenant: str | None) -> float | None:
        key = (table, tenant or DEFAULT_TENANT)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        days = self._read_days(table, key[1])
        if self._cache is not None:
            self._cache[key] = days
        return days

    def _read_days(self, table: str, tenant: str) -> float | None:
        try:
            resp = self.dynamodb.get_item(
                TableName=self.master_table,
                Key={"pk": {"S": f"MASTER#{tenant}"}, "sk": {"S": f"TTL#{table}"}},
            )
        except Exception:  # noqa: BLE001 - the framework swallows every read error
            return None
        attrs = (resp.get("Item") or {}).get("attributes", {}).get("M", {})
        raw = attrs.get("days")
        if not isinstance(raw, dict):
            return None
        text = raw.get("N", raw.get("S"))
        if not text:
            return None
        try:
            days = float(text)
        except ValueError:
            return None
        return days if days and not math.isnan(days) else None

    def ttl(self, table: str, tenant: str | None) -> int | float | None:
        days = self.days(table, tenant)
        if days is None:
            return None
        if days <= 0:
            raise ValueError("Number of days must be greater than 0.")
        value = math.floor(self.clock()) + days * 86400
        return int(value) if float(value).is_integer() else value


# ------------------------------------------------------------------ command TTL
@dataclass(frozen=True, slots=True)
class CommandTtl:
    """The ``ttl`` a run's commands carry, and where it came from (said in plan and summary).

    ``publishAsync`` sets ``ttl: calculateTtl(DATA, tenant)``: the *data* table's
    TTL configuration (``MASTER#{tenant}`` / ``TTL#{data table}``, ``days``) from
    now, or null.  A run reads it once and counts from its own start, so a
    retried batch writes the same bytes.
    """

    ttl: int | None
    days: float | None
    master_table: str
    key: str

    def describe(self) -> str:
        if self.ttl is None:
            return (
                f"ttl: null (no TTL configuration at {self.key} in {self.master_table}; "
                "as the framework writes it)"
            )
        days = int(self.days) if self.days is not None and self.days.is_integer() else self.days
        where = f"{self.key} in {self.master_table}"
        return f"ttl: {self.ttl} ({days} days from the run's start: {where})"


def command_ttl(
    dynamodb: Any,
    command_table: str,
    data_table: str | None,
    tenant: str | None,
    start: float,
    *,
    master_table: str | None = None,
) -> CommandTtl:
    """The data table's TTL for a tenant's commands, counted from ``start`` (epoch seconds).

    ``dynamodb`` speaks boto3's low-level ``get_item``; a failed read means null,
    as ``TtlService`` logs and returns null.  ``master_table`` None: the module's
    ``{prefix}master-data``; "": none configured (nothing is read, the TTL is null).
    """
    tables = Tables.from_command_table(command_table, data=data_table)
    master = tables.master_data if master_table is None else master_table
    key = f"MASTER#{tenant or DEFAULT_TENANT} / TTL#{tables.data}"
    if not master:
        return CommandTtl(None, None, "no master-data table (none configured)", key)
    resolver = TtlResolver(dynamodb, master, clock=lambda: start, cache=True)
    ttl = resolver.ttl(tables.data, tenant)
    days = resolver.days(tables.data, tenant)
    return CommandTtl(None if ttl is None else int(ttl), days, master, key)
