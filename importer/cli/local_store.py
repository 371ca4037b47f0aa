"""The local stand-in's store: moto's DynamoDB, with its write path made linear.

moto checks the 400 KB item limit as each attribute is added to a new item,
summing the sizes of every attribute already there (`LimitedSizeDict`): an
item of n attributes costs n(n+1)/2 size computations, each walking nested
maps.  For an MBC command record (15 attributes, `attributes` a map) that is most
of `put_item`, and it made the stand-in, not the importer, what a local run
waited on.

`speed_up()` builds a new item's attributes first and checks their total size
once, which is the same rule: sizes are never negative, so the running sum
crosses the limit exactly when the total does.  Later changes (UpdateItem)
keep moto's own per-attribute check.

It also answers the import's one hot call, a BatchWriteItem of plain puts,
without moto's generic request machinery: that parsed each request body a
second time against the botocore model (walking every attribute of every
item) and went through Flask, about half of each call, before the same
`put_item` ran.  Anything else -- another operation, a delete, an unknown
table, an empty or repeated key, an option the fast path does not know --
goes to moto unchanged, so moto still decides every error.

Items are kept as their JSON until something reads them (`_compact_item_init`),
and moto's list of every item it ever made is not kept.

All of it is applied only in the processes that serve the stand-in (`importer
local up`; `importer demo` for its own run, then `restore`d), never to the moto
the tests use as their reference AWS.
"""

from __future__ import annotations

import functools
import io
import json
import re
import uuid
import zlib
from typing import Any

__all__ = ["ITEM_SIZE_LIMIT", "batch_write_fast", "restore", "speed_up"]

#: moto's own bound (between DynamoDB's documented 400 KB and the measured 409-410 KB)
ITEM_SIZE_LIMIT = 405_000

_applied = False


def _item_init(self: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict
    from moto.dynamodb.models.utilities import bytesize

    self.hash_key = hash_key
    self.range_key = range_key
    values = {key: DynamoType(value) for key, value in attrs.items()}
    total = 0
    for key, value in values.items():
        total += bytesize(key) + value.size()
    if total > ITEM_SIZE_LIMIT:
        raise ItemSizeTooLarge
    self.attrs = LimitedSizeDict()
    # dict.update: the attributes are checked above, once, as a whole
    dict.update(self.attrs, values)


def _bytesize(text: Any) -> int:
    return len(text if isinstance(text, bytes) else text.encode("utf-8"))


@functools.cache
def _number_size() -> Any:
    from moto.dynamodb.models.utilities import number_size

    return number_size


def _raw_size(value: dict[str, Any]) -> int:
    """moto's `DynamoType(value).size()`, read off the wire JSON without building objects."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return _bytesize(inner)
    if kind == "N":
        return _number_size()(str(inner))
    if kind in ("SS", "NS", "BS"):
        return sum(_raw_size({kind[0]: v}) for v in inner)
    if kind == "L":
        return sum(_raw_size(v) for v in inner)
    if kind == "M":
        return sum(_bytesize(k) + _raw_size(v) for k, v in inner.items())
    if isinstance(inner, bool):
        return 1
    return _bytesize(inner)


def _compact_item_init(self: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
    """`_item_init`, keeping the attributes as their JSON until something reads them.

    moto holds each attribute as a `DynamoType` object (nested maps too): about
    5 KB per MBC command record, 5 GB for a million rows.  An item the stand-in
    only stores -- what an import does -- is kept as its UTF-8 JSON instead
    (about a fifth of that); the first read (`attrs`) builds moto's objects
    and keeps them, so every read, update, scan and copy behaves as before.
    """
    try:
        raw = json.dumps(attrs, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        total = sum(_bytesize(k) + _raw_size(v) for k, v in attrs.items())
    except (TypeError, ValueError, AttributeError):  # not wire JSON (an internal caller)
        _item_init(self, hash_key, range_key, attrs)
        return
    if total > ITEM_SIZE_LIMIT:
        from moto.dynamodb.exceptions import ItemSizeTooLarge

        raise ItemSizeTooLarge
    self.hash_key = hash_key
    self.range_key = range_key
    self.__dict__["_raw"] = raw


def _attrs_get(self: Any) -> Any:
    from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict

    state = self.__dict__
    attrs = state.get("_attrs")
    if attrs is None:
        attrs = LimitedSizeDict()
        raw = state.pop("_raw", b"{}")
        dict.update(attrs, {k: DynamoType(v) for k, v in json.loads(raw).items()})
        state["_attrs"] = attrs
    return attrs


def _attrs_set(self: Any, value: Any) -> None:
    self.__dict__["_attrs"] = value
    self.__dict__.pop("_raw", None)


class _Untracked(list):  # type: ignore[type-arg]
    """moto's record of every model instance ever made, for `Item`: none kept.

    moto appends each `Item` it creates to a class-wide list that is never
    emptied, so an item overwritten (a re-run, an upsert) or copied (each
    TransactWriteItems copies the tables) stayed in memory for the stand-in's
    life.  Items live as long as their table holds them, no longer.
    """

    def append(self, _item: Any) -> None:
        pass


_BATCH_WRITE = "DynamoDB_20120810.BatchWriteItem"
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/")


def _plain_puts(body: Any) -> dict[str, list[dict[str, Any]]] | None:
    """{table: [item, ...]} when `body` is only puts (the importer's writes), else None."""
    if not isinstance(body, dict) or set(body) != {"RequestItems"}:
        return None
    tables = body["RequestItems"]
    if not isinstance(tables, dict) or not tables:
        return None
    out: dict[str, list[dict[str, Any]]] = {}
    for name, requests in tables.items():
        if not isinstance(requests, list) or not requests:
            return None
        items = []
        for request in requests:
            put = request.get("PutRequest") if isinstance(request, dict) else None
            if len(request) != 1 or not isinstance(put, dict) or set(put) != {"Item"}:
                return None
            items.append(put["Item"])
        out[name] = items
    return out


def _key_of(table: Any, item: Any) -> tuple[Any, ...] | None:
    """The item's key as moto's table declares it; None when missing, empty or mistyped."""
    if not isinstance(item, dict):
        return None
    key = []
    for attr, kind in ((table.hash_key_attr, table.hash_key_type),
                       (table.range_key_attr, table.range_key_type)):  # fmt: skip
        if attr is None:
            continue
        value = item.get(attr)
        if not isinstance(value, dict) or list(value) != [kind] or value[kind] in ("", None):
            return None
        key.append(value[kind])
    return tuple(key)


def batch_write_fast(environ: dict[str, Any], raw: bytes) -> bytes | None:
    """The answer to a BatchWriteItem of plain puts, or None: let moto answer it."""
    from moto.dynamodb.models import dynamodb_backends
    from moto.iam.models import get_account_id_from

    found = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    if found is None:
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    puts = _plain_puts(body)
    if puts is None:
        return None
    backend = dynamodb_backends[get_account_id_from(found.group(1))][found.group(2)]
    for name, items in puts.items():
        table = backend.tables.get(name)
        if table is None:
            return None
        keys = {_key_of(table, item) for item in items}
        if None in keys or len(keys) != len(items):
            return None  # moto's message for an empty or repeated key
    for name, items in puts.items():
        for item in items:
            backend.put_item(name, item)
    consumed = [
        {"TableName": name, "CapacityUnits": 1.0, "Table": {"CapacityUnits": 1.0}} for name in puts
    ]
    answer = {"UnprocessedItems": {}, "ItemCollectionMetrics": {}, "ConsumedCapacity": consumed}
    return json.dumps(answer).encode()


def _dispatch_fast(original: Any) -> Any:
    def __call__(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_X_AMZ_TARGET") != _BATCH_WRITE:
            return original(self, environ, start_response)
        stream = environ["wsgi.input"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = stream.read(length) if length else stream.read()
        try:
            answer = batch_write_fast(environ, raw)
        except Exception as exc:  # noqa: BLE001 - moto's errors answer themselves
            if not callable(getattr(exc, "get_response", None)):
                raise
            app: Any = exc  # werkzeug's HTTPException (moto's errors) is a WSGI app
            return app(environ, start_response)
        if answer is None:
            environ["wsgi.input"] = io.BytesIO(raw)
            return original(self, environ, start_response)
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/x-amz-json-1.0"),
                ("Content-Length", str(len(answer))),
                ("x-amz-crc32", str(zlib.crc32(answer))),
                ("x-amzn-RequestId", uuid.uuid4().hex),
            ],
        )
        return [answer]

    return __call__


_saved: dict[str, Any] = {}


def speed_up() -> bool:
    """Patch moto in this process (once); False when moto is not installed.

    Only before the first item is stored: items made before keep moto's form.
    """
    global _applied
    if _applied:
        return True
    try:
        from moto.dynamodb.models import dynamo_type
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    except ImportError:
        return False
    item = dynamo_type.Item
    _saved.update(
        init=item.__init__,
        tracked=item.__dict__.get("instances_tracked"),
        call=DomainDispatcherApplication.__call__,
    )
    item.__init__ = _compact_item_init  # type: ignore[method-assign]
    item.attrs = property(_attrs_get, _attrs_set)  # type: ignore[assignment]
    item.instances_tracked = _Untracked()  # type: ignore[attr-defined]
    DomainDispatcherApplication.__call__ = _dispatch_fast(  # type: ignore[method-assign]
        DomainDispatcherApplication.__call__
    )
    _applied = True
    return True


def restore() -> None:
    """Undo `speed_up` (the demo runs in the caller's process, which may use moto after)."""
    global _applied
    if not _applied:
        return
    from moto.dynamodb.models import dynamo_type
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    item = dynamo_type.Item
    item.__init__ = _saved["init"]  # type: ignore[method-assign]
    delattr(item, "attrs")
    if _saved["tracked"] is not None:
        item.instances_tracked = _saved["tracked"]  # type: ignore[attr-defined]
    DomainDispatcherApplication.__call__ = _saved["call"]  # type: ignore[method-assign]
    _applied = False
