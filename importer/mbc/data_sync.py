"""Data-sync handlers: what ``sync_data`` runs for each command (the Map's branches).

The framework's ``transform_data`` lists one branch per registered handler
(``CommandService.onModuleInit``): the default ``DataSyncDdsHandler`` (which
writes the data table) unless the module disables it, then the module's own
handlers.  Here a handler is any object with

* ``name`` -- what ``transform_data`` emits as the branch's ``result`` (the
  framework uses the class name; ours are looked up by it too),
* ``type`` -- ``"dynamodb"`` for the default; anything else is "custom" (the
  framework's ``publishSync`` runs every non-``dynamodb`` handler too),
* ``up(command, ctx)`` -- apply one command (a :class:`SyncCommand`); the return
  value is the Map iteration's output, so it must be JSON-serializable,
* optionally ``up_many(commands, ctx)`` -- apply many, in order; the bulk sync
  calls it when present, else ``up`` once per command.

Custom handlers are configured as a comma-separated list of ``module:attr``
dotted paths (setting ``data_sync_handlers``, env
``IMPORTER_DATA_SYNC_HANDLERS``) or found in the ``importer.mbc.data_sync`` entry
point group; ``attr`` may be a class (instantiated without arguments), an
instance, or a plain function ``fn(command, ctx)`` (its ``__name__`` is the
handler's name).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from importer.mbc.model import (
    Item,
    get_sk_version,
    item_version,
    remove_sk_version,
    render_dates,
)

if TYPE_CHECKING:
    from datetime import tzinfo

    from importer.mbc.model import Tables

__all__ = [
    "DEFAULT_HANDLER_NAME",
    "ENTRY_POINT_GROUP",
    "DataSyncError",
    "DataSyncHandler",
    "DynamoDataSyncHandler",
    "FunctionHandler",
    "SyncCommand",
    "SyncContext",
    "load_handlers",
    "to_plain",
    "transform_command_to_data",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "importer.data_sync"
ENV_HANDLERS = "IMPORTER_DATA_SYNC_HANDLERS"
ENV_DISABLE_DEFAULT = "IMPORTER_DISABLE_DEFAULT_HANDLER"
DEFAULT_HANDLER_NAME = "DataSyncDdsHandler"

#: transformCommandToData: the command fields that overwrite the data row (in order).
_COPIED = ("id", "code", "name", "version", "tenantCode", "type", "seq", "attributes")
_COPIED_LATE = ("isDeleted", "ttl", "requestId")
_KEPT = ("createdAt", "createdBy", "createdIp")  # existing ?? command


class DataSyncError(ValueError):
    """A handler setting that cannot be loaded (one readable line)."""


def to_plain(value: Any) -> Any:
    """DynamoDB JSON -> JSON-able Python (numbers as int/float, sets as sorted lists)."""
    if isinstance(value, dict) and len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == "S":
            return inner
        if tag == "N":
            number = Decimal(inner)
            return int(number) if number == number.to_integral_value() else float(number)
        if tag == "BOOL":
            return bool(inner)
        if tag == "NULL":
            return None
        if tag == "M":
            return {k: to_plain(v) for k, v in inner.items()}
        if tag == "L":
            return [to_plain(v) for v in inner]
        if tag in ("SS", "B"):
            return inner if tag == "B" else sorted(inner)
        if tag == "NS":
            return sorted(to_plain({"N": n}) for n in inner)
        if tag == "BS":
            return list(inner)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class SyncCommand:
    """One command record as ``sync_data`` hands it to a handler (``item`` in DynamoDB JSON)."""

    item: Item

    @property
    def pk(self) -> str:
        return self.item["pk"]["S"]

    @property
    def sk(self) -> str:
        return self.item["sk"]["S"]

    @property
    def base_sk(self) -> str:
        return remove_sk_version(self.sk)

    @property
    def version(self) -> int:
        return item_version(self.item) or get_sk_version(self.sk)

    @cached_property
    def plain(self) -> dict[str, Any]:
        """The record as plain Python values (what the framework's ``CommandModel`` holds)."""
        return to_plain({"M": self.item})


@dataclass
class SyncContext:
    """What a handler may use: the DynamoDB client, the module's tables, the date zone."""

    dynamodb: Any
    tables: Tables
    tz: tzinfo
    extra: dict[str, Any] = field(default_factory=dict)


class DataSyncHandler(Protocol):
    name: str
    type: str

    def up(self, command: SyncCommand, ctx: SyncContext) -> Any: ...


def transform_command_to_data(command: Item, existing: Item | None, tz: tzinfo) -> Item:
    """``transformCommandToData`` as ``DataService.publish`` writes it.

    All existing fields, overwritten by the command's ``pk``, ``sk`` (version
    removed), ``id``, ``code``, ``name``, ``version``, ``tenantCode``, ``type``,
    ``seq``, ``attributes``, ``cpk``/``csk`` (the command's keys), ``isDeleted``,
    ``ttl``, ``requestId``, ``updatedAt/By/Ip``; ``createdAt/By/Ip`` keep an
    existing non-null value.  A field the command lacks is *removed* (the JS
    object holds ``undefined``, which the marshaller drops).  ``status``,
    ``source``, ``taskToken`` and ``syncMode`` are not copied.  Dates are
    re-rendered as every framework PutItem does.
    """
    out: Item = dict(existing or {})
    sk = command["sk"]["S"]

    def put(name: str, value: Any) -> None:
        out.pop(name, None)  # JS spreads keep the key's position; DynamoDB has no order
        if value is not None:
            out[name] = value

    put("pk", command["pk"])
    put("sk", {"S": remove_sk_version(sk)})
    for name in _COPIED:
        put(name, command.get(name))
    put("cpk", command["pk"])
    put("csk", command["sk"])
    for name in _COPIED_LATE:
        put(name, command.get(name))
    for name in ("createdAt", "updatedAt", "createdBy", "updatedBy", "createdIp", "updatedIp"):
        if name in _KEPT:
            current = (existing or {}).get(name)
            keep = current is not None and "NULL" not in current
            put(name, current if keep else command.get(name))
        else:
            put(name, command.get(name))
    return render_dates(out, tz)


class DynamoDataSyncHandler:
    """The framework's default handler: merge the command into the data table's row."""

    name = DEFAULT_HANDLER_NAME
    type = "dynamodb"

    def up(self, command: SyncCommand, ctx: SyncContext) -> Any:
        resp = ctx.dynamodb.get_item(
            TableName=ctx.tables.data,
            Key={"pk": {"S": command.pk}, "sk": {"S": command.base_sk}},
            ConsistentRead=True,
        )
        item = transform_command_to_data(command.item, resp.get("Item"), ctx.tz)
        ctx.dynamodb.put_item(TableName=ctx.tables.data, Item=item)
        return to_plain({"M": item})


class FunctionHandler:
    """A plain function ``fn(command, ctx)`` as a handler named after it."""

    def __init__(self, fn: Callable[[SyncCommand, SyncContext], Any]) -> None:
        self.fn = fn
        self.name = getattr(fn, "handler_name", None) or fn.__name__
        self.type = getattr(fn, "type", "custom")

    def up(self, command: SyncCommand, ctx: SyncContext) -> Any:
        return self.fn(command, ctx)


def _as_handler(obj: Any, where: str) -> Any:
    if isinstance(obj, type):
        try:
            obj = obj()
        except TypeError as exc:
            raise DataSyncError(f"data-sync handler {where}: cannot instantiate: {exc}") from None
    if hasattr(obj, "up") and callable(obj.up):
        if not getattr(obj, "name", None):
            obj.name = type(obj).__name__
        if not getattr(obj, "type", None):
            obj.type = "custom"
        return obj
    if callable(obj):
        return FunctionHandler(obj)
    raise DataSyncError(f"data-sync handler {where}: not a class, handler object or function")


def _load_dotted(path: str) -> Any:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise DataSyncError(f"data-sync handler {path!r}: expected 'module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DataSyncError(f"data-sync handler {path!r}: cannot import: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise DataSyncError(f"data-sync handler {path!r}: no attribute {part!r}") from None
    return _as_handler(obj, repr(path))


def _split(spec: str | Sequence[str] | None) -> list[str]:
    if spec is None:
        spec = os.environ.get(ENV_HANDLERS, "")
    parts: Iterable[str] = spec.split(",") if isinstance(spec, str) else spec
    return [p.strip() for p in parts if p and p.strip()]


def load_handlers(
    spec: str | Sequence[str] | None = None,
    *,
    disable_default: bool | None = None,
    use_entry_points: bool = True,
) -> list[Any]:
    """The handlers in ``transform_data`` order: default, configured paths, entry points.

    ``spec`` is a comma-separated string or a list of ``module:attr`` paths
    (None reads ``$IMPORTER_DATA_SYNC_HANDLERS``); ``disable_default`` None reads
    ``$IMPORTER_DISABLE_DEFAULT_HANDLER``.  Entry points of the group
    ``importer.mbc.data_sync`` follow in name order.  Two handlers with one name
    are refused: the Map item names the handler, so names must be unique.
    """
    if disable_default is None:
        disable_default = os.environ.get(ENV_DISABLE_DEFAULT, "").lower() in ("1", "true", "yes")
    handlers: list[Any] = [] if disable_default else [DynamoDataSyncHandler()]
    handlers += [_load_dotted(p) for p in _split(spec)]
    if use_entry_points:
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure, one line
                raise DataSyncError(f"data-sync entry point {ep.name!r}: {exc}") from None
            handlers.append(_as_handler(obj, f"entry point {ep.name!r}"))
    # mbc #459/#462: a handler registered twice (the same class or function, from the
    # setting and an entry point) runs once; two different handlers under one name are
    # refused, since the Map item names the handler
    unique: list[Any] = []
    seen: dict[str, Any] = {}
    for h in handlers:
        origin = _origin(h)
        if h.name in seen:
            if seen[h.name] == origin:
                log.warning("data-sync handler %s is registered twice: it runs once", h.name)
                continue
            raise DataSyncError(f"two data-sync handlers are named {h.name!r}")
        seen[h.name] = origin
        unique.append(h)
    if not unique:
        log.warning("no data-sync handler is registered: sync_data has nothing to run")
    return unique


def _origin(handler: Any) -> Any:
    """What makes two registrations the same handler: its function, or its class."""
    if isinstance(handler, FunctionHandler):
        return handler.fn
    return type(handler)
