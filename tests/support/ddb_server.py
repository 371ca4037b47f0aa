"""A loopback DynamoDB (JSON 1.0 protocol) with injectable faults, for tests and benchmarks.

Real HTTP on 127.0.0.1 (HTTP/1.1 keep-alive, one thread per connection), an
in-memory dict of tables, and a thread-safe `Faults` object that can throttle,
fail with 500, return `UnprocessedItems`, add latency, drop the connection
before or after storing, or refuse chosen items with a ValidationException.

    with DdbServer() as srv:                       # in-process, background thread
        srv.create_table("T")                      # pk (HASH, S) + sk (RANGE, S)
        srv.faults.set(throttle=0.2, seed=7)
        ... point a client at srv.endpoint_url ...
        srv.items("T")                             # {(pk, sk): item (wire dict)}
        srv.stats()                                # calls/items per op + faults fired

    python tests/support/ddb_server.py --port 8000 --table T [--throttle 0.1 ...]
                               [--write-capacity 1000 --capacity-burst 0.5]

Capacity model (`Capacity`, off by default): a token bucket of write units per
second (and optionally read units) holding `burst` seconds of capacity.  A
BatchWriteItem gets the items that fit, in order, the rest back as
UnprocessedItems, and ProvisionedThroughputExceededException when none fit; a
BatchGetItem likewise with UnprocessedKeys.  Units are DynamoDB's (1 write unit
per started KB, `importer.dynamodb.pacing`).  Capacity can change during a run:
`srv.capacity.set(write=2000)`, or for the subprocess an admin request
(`SubprocessDdbServer.set_capacity(write=2000)`, X-Amz-Target
`Loopback.SetCapacity`).  `srv.capacity.consumed("write")` lists (time, units)
taken, for checking a budget per one-second window.

`SubprocessDdbServer` runs the same server in a child process (no GIL shared
with the client: what the benchmarks use).  Operations: CreateTable,
DescribeTable, DeleteTable, ListTables, BatchWriteItem, PutItem, GetItem,
BatchGetItem, TransactWriteItems (Put with `attribute_not_exists` conditions),
UpdateItem (`SET #a = :a, ...` only),
Scan (paged by count).  Error bodies and messages follow DynamoDB's.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import zlib
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `importer` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from importer.dynamodb.capacity_units import READ_UNIT_BYTES, WRITE_UNIT_BYTES
from importer.item_size import ItemSizeError, item_size_of

__all__ = ["Capacity", "Faults", "DdbServer", "SubprocessDdbServer", "item_size"]

TARGET_PREFIX = "DynamoDB_20120810."
ADMIN_TARGET = "Loopback.SetCapacity"
MAX_ITEM_BYTES = 400 * 1024
MAX_PK_BYTES = 2048
MAX_SK_BYTES = 1024
DATA_OPS = frozenset(
    {"BatchWriteItem", "PutItem", "GetItem", "BatchGetItem", "TransactWriteItems", "Scan"}
)


class DdbError(Exception):
    def __init__(self, code: str, message: str, status: int = 400, ns: str | None = None, **extra):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.ns = ns or "com.amazonaws.dynamodb.v20120810"
        self.extra = extra

    def body(self) -> dict[str, Any]:
        out = {"__type": f"{self.ns}#{self.code}", "message": self.message}
        out.update(self.extra)
        return out


def validation(message: str) -> DdbError:
    return DdbError("ValidationException", message)


class _Drop(Exception):
    """Close the connection without writing any response."""


# --------------------------------------------------------------------------- faults


class Faults:
    """Runtime-configurable fault injection; every draw comes from one seeded RNG.

    Probabilities are per call (per HTTP request) of an op in `ops`:
      throttle       400 ProvisionedThroughputExceededException or ThrottlingException
      server_error   500 InternalServerError
      unprocessed    a random non-empty subset of the write/get requests comes back
                     unprocessed (the rest is applied)
      drop_before    connection closed without a response, nothing stored
      drop_after     everything stored, then the connection is closed without a response
    `latency` seconds are added to every call (plus uniform `jitter`).
    `validation_error_for(item) -> str | bool | None` refuses a whole BatchWriteItem /
    PutItem / TransactWriteItems call with 400 ValidationException when it returns a
    truthy value for any item (a str becomes the message).
    """

    _FIELDS = (
        "throttle",
        "server_error",
        "unprocessed",
        "drop_before",
        "drop_after",
        "latency",
        "jitter",
        "validation_error_for",
        "ops",
    )

    def __init__(self, seed: int = 0, **settings: Any) -> None:
        self._lock = threading.Lock()
        self.reset(seed)
        self.set(**settings)

    def reset(self, seed: int | None = None) -> None:
        with self._lock:
            self.throttle = 0.0
            self.server_error = 0.0
            self.unprocessed = 0.0
            self.drop_before = 0.0
            self.drop_after = 0.0
            self.latency = 0.0
            self.jitter = 0.0
            self.validation_error_for: Callable[[dict], Any] | None = None
            self.ops: frozenset[str] = DATA_OPS
            self._rng = random.Random(seed if seed is not None else 0)

    def set(self, seed: int | None = None, **settings: Any) -> Faults:
        with self._lock:
            for key, value in settings.items():
                if key not in self._FIELDS:
                    raise TypeError(f"unknown fault {key!r}")
                if key == "ops":
                    value = frozenset(value)
                setattr(self, key, value)
            if seed is not None:
                self._rng = random.Random(seed)
        return self

    def clear(self) -> None:
        """No faults at all (keeps the RNG state)."""
        self.set(
            throttle=0.0,
            server_error=0.0,
            unprocessed=0.0,
            drop_before=0.0,
            drop_after=0.0,
            latency=0.0,
            jitter=0.0,
            validation_error_for=None,
        )

    def hold_after(self, items: int, counts: Callable[[dict], bool] | None = None) -> Hold:
        """Let `items` written items (those `counts` picks) through, then hold every later
        write call until `Hold.release()`.

        For a test that stops a run part way (a kill, a signal): the run cannot finish
        before the test stops it, however fast or slow the machine -- an event, not
        latency.  Uses `validation_error_for` (released, it is None again).
        """
        hold = Hold(self, items, counts)
        self.set(validation_error_for=hold)
        return hold

    def roll(self, probability: float) -> bool:
        if probability <= 0:
            return False
        with self._lock:
            return self._rng.random() < probability

    def choice(self, seq):
        with self._lock:
            return self._rng.choice(seq)

    def subset(self, n: int) -> list[int]:
        """Indices of a random non-empty subset of range(n)."""
        with self._lock:
            k = self._rng.randint(1, n)
            return sorted(self._rng.sample(range(n), k))

    def delay(self) -> float:
        if self.latency <= 0 and self.jitter <= 0:
            return 0.0
        with self._lock:
            return self.latency + (self._rng.random() * self.jitter if self.jitter else 0.0)


class Hold:
    """The gate `Faults.hold_after` sets up: counts items, then holds the calls past it."""

    def __init__(self, faults: Faults, items: int, counts: Callable[[dict], bool] | None) -> None:
        self._faults = faults
        self._left = items
        self._counts = counts
        self._lock = threading.Lock()
        self._gate = threading.Event()
        #: set once a call is being held
        self.holding = threading.Event()

    def __call__(self, item: dict) -> None:
        if self._counts is not None and not self._counts(item):
            return None
        with self._lock:
            self._left -= 1
            held = self._left < 0
        if held:
            self.holding.set()
            self._gate.wait(300)
        return None

    def release(self) -> None:
        """Let the held calls (and every later one) through."""
        self._faults.set(validation_error_for=None)
        self._gate.set()


# --------------------------------------------------------------------------- storage


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (`importer.item_size`'s rules)."""
    try:
        return item_size_of(item)
    except ItemSizeError as exc:
        raise validation(f"Supplied AttributeValue is invalid: {exc}") from None


def write_units(item: dict[str, Any]) -> int:
    return max(1, -(-item_size(item) // WRITE_UNIT_BYTES))


def read_units(item: dict[str, Any] | None, consistent: bool) -> float:
    units = 1 if item is None else max(1, -(-item_size(item) // READ_UNIT_BYTES))
    return units if consistent else units / 2


# --------------------------------------------------------------------------- capacity


class _Bucket:
    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = rate * burst
        self.last = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.rate * self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now


class Capacity:
    """Provisioned-style capacity: token buckets of write and read units per second.

    `write` / `read` None means unlimited.  Each bucket holds at most `burst`
    seconds of its rate (small, unlike DynamoDB's 300 s, so tests see throttling
    at once).  Thread-safe; `clock` injectable.  `take(kind, costs)` returns how
    many of the leading costs fit (and takes their units).
    """

    def __init__(
        self,
        write: float | None = None,
        read: float | None = None,
        *,
        burst: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        keep: int = 1_000_000,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.burst = burst
        self._buckets: dict[str, _Bucket | None] = {"write": None, "read": None}
        self._log: dict[str, deque[tuple[float, float]]] = {
            "write": deque(maxlen=keep),
            "read": deque(maxlen=keep),
        }
        self._answers: dict[str, deque[tuple[float, bool]]] = {
            "write": deque(maxlen=keep),
            "read": deque(maxlen=keep),
        }
        self.set(write=write, read=read)

    def set(self, *, write: float | None = ..., read: float | None = ...) -> None:  # type: ignore[assignment]
        """Change capacity now (a bucket keeps its tokens, capped at the new burst)."""
        with self._lock:
            now = self._clock()
            for kind, rate in (("write", write), ("read", read)):
                if rate is ...:
                    continue
                if rate is not None and not rate > 0:
                    raise ValueError(f"{kind} capacity must be positive, got {rate}")
                old = self._buckets[kind]
                if rate is None:
                    self._buckets[kind] = None
                elif old is None:
                    self._buckets[kind] = _Bucket(float(rate), self.burst, now)
                else:
                    old.refill(now)
                    old.rate = float(rate)
                    old.tokens = min(old.tokens, old.rate * old.burst)

    def rate(self, kind: str) -> float | None:
        with self._lock:
            bucket = self._buckets[kind]
            return bucket.rate if bucket is not None else None

    def take(self, kind: str, costs: list[float]) -> int:
        with self._lock:
            now = self._clock()
            bucket = self._buckets[kind]
            n = 0
            taken = 0.0
            if bucket is None:
                n, taken = len(costs), sum(costs)
            else:
                bucket.refill(now)
                for cost in costs:
                    if bucket.tokens < cost:
                        break
                    bucket.tokens -= cost
                    taken += cost
                    n += 1
            if taken:
                self._log[kind].append((now, taken))
            self._answers[kind].append((now, n < len(costs)))
            return n

    def consumed(self, kind: str = "write") -> list[tuple[float, float]]:
        """(time, units) taken, oldest first."""
        with self._lock:
            return list(self._log[kind])

    def throttled_share(self, kind: str = "write", since: float = 0.0) -> float:
        """Share of requests (at or after `since`) that got back less than they sent."""
        with self._lock:
            seen = [throttled for t, throttled in self._answers[kind] if t >= since]
        return sum(seen) / len(seen) if seen else 0.0

    def window_max(self, kind: str = "write", width: float = 1.0) -> float:
        """Most units taken in any `width`-second window."""
        log = self.consumed(kind)
        best = total = 0.0
        j = 0
        for i, (t, units) in enumerate(log):
            if j < i:
                j, total = i, 0.0
            while j < len(log) and log[j][0] < t + width:
                total += log[j][1]
                j += 1
            best = max(best, total)
            total -= units
        return best


def _throughput_exceeded() -> DdbError:
    return DdbError(
        "ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded."
        " Consider increasing your provisioning level with the UpdateTable API.",
    )


class Table:
    def __init__(self, name: str, hash_key: str = "pk", range_key: str | None = "sk"):
        self.name = name
        self.hash_key = hash_key
        self.range_key = range_key
        self.items: dict[tuple[str, ...], dict[str, Any]] = {}
        self.created = time.time()

    def key_of(self, item: dict[str, Any], *, full_item: bool = True) -> tuple[str, ...]:
        names = (self.hash_key,) if self.range_key is None else (self.hash_key, self.range_key)
        key = []
        for name, limit in zip(names, (MAX_PK_BYTES, MAX_SK_BYTES), strict=False):
            attr = item.get(name)
            if attr is None:
                raise validation("One of the required keys was not given a value")
            value = attr.get("S")
            if value is None or len(attr) != 1:
                raise validation(
                    "One or more parameter values were invalid: Type mismatch for key "
                    f"{name} expected: S actual: {next(iter(attr), '?')}"
                )
            if value == "":
                raise validation(
                    "One or more parameter values are not valid. The AttributeValue for a key "
                    f"attribute cannot contain an empty string value. Key: {name}"
                )
            if len(value.encode()) > limit:
                kind = "Hash primary key" if name == self.hash_key else "Range key"
                raise validation(
                    f"One or more parameter values were invalid: Size of {kind} is too large"
                )
            key.append(value)
        if not full_item and len(item) != len(names):
            raise validation("The provided key element does not match the schema")
        return tuple(key)

    def describe(self, capacity: Capacity | None = None) -> dict[str, Any]:
        schema = [{"AttributeName": self.hash_key, "KeyType": "HASH"}]
        defs = [{"AttributeName": self.hash_key, "AttributeType": "S"}]
        if self.range_key:
            schema.append({"AttributeName": self.range_key, "KeyType": "RANGE"})
            defs.append({"AttributeName": self.range_key, "AttributeType": "S"})
        return {
            "TableName": self.name,
            "TableStatus": "ACTIVE",
            "KeySchema": schema,
            "AttributeDefinitions": defs,
            "ItemCount": len(self.items),
            "CreationDateTime": self.created,
            "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
            "TableArn": f"arn:aws:dynamodb:us-east-1:123456789012:table/{self.name}",
        } | _throughput(capacity)


def _throughput(capacity: Capacity | None) -> dict[str, Any]:
    write = capacity.rate("write") if capacity is not None else None
    if write is None:
        return {}
    read = capacity.rate("read")
    return {
        "BillingModeSummary": {"BillingMode": "PROVISIONED"},
        "ProvisionedThroughput": {
            "WriteCapacityUnits": int(write),
            "ReadCapacityUnits": int(read) if read is not None else 0,
            "NumberOfDecreasesToday": 0,
        },
    }


_NOT_EXISTS = re.compile(r"^\s*attribute_not_exists\s*\(\s*([#\w.]+)\s*\)\s*$")


def _check_condition(expr: str, names: dict[str, str], existing: dict | None) -> bool:
    """Evaluate `attribute_not_exists(a) [AND attribute_not_exists(b) ...]`."""
    for part in re.split(r"\s+AND\s+", expr.strip(), flags=re.IGNORECASE):
        m = _NOT_EXISTS.match(part)
        if not m:
            raise validation(f"Unsupported ConditionExpression in loopback server: {expr}")
        attr = m.group(1)
        if attr.startswith("#"):
            if attr not in names:
                raise validation(
                    "Value provided in ExpressionAttributeNames unused in expressions: "
                    f"An expression attribute name used in the document path is not defined; "
                    f"attribute name: {attr}"
                )
            attr = names[attr]
        if existing is not None and attr in existing:
            return False
    return True


# --------------------------------------------------------------------------- server core


class DdbBackend:
    """Tables, counters and op implementations; transport-independent."""

    def __init__(
        self,
        faults: Faults | None = None,
        access_key_id: str | None = None,
        sink: bool = False,
        capacity: Capacity | None = None,
    ):
        self.faults = faults or Faults()
        self.capacity = capacity or Capacity()
        self.sink = sink  # BatchWriteItem acknowledged without parsing/storing (benchmarks)
        self.access_key_id = access_key_id
        self.tables: dict[str, Table] = {}
        self.lock = threading.RLock()
        self._stats_lock = threading.Lock()
        self._stats: dict[str, int] = {}
        self._in_flight = 0
        self._tl = threading.local()  # per-request body length (item-size fast path)

    # ---- counters
    def count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[name] = self._stats.get(name, 0) + n

    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        with self._stats_lock:
            self._stats.clear()

    # ---- helpers
    def table(self, name: str | None) -> Table:
        t = self.tables.get(name or "")
        if t is None:
            raise DdbError("ResourceNotFoundException", "Requested resource not found")
        return t

    def create_table(self, name: str, hash_key: str = "pk", range_key: str | None = "sk") -> None:
        with self.lock:
            if name in self.tables:
                raise DdbError("ResourceInUseException", f"Table already exists: {name}")
            self.tables[name] = Table(name, hash_key, range_key)

    def check_auth(self, headers) -> None:
        if self.access_key_id is None:
            return
        auth = headers.get("Authorization", "")
        m = re.search(r"Credential=([^/,\s]+)/", auth)
        if not m:
            raise DdbError(
                "MissingAuthenticationTokenException",
                "Request is missing Authentication Token",
                ns="com.amazon.coral.service",
            )
        if m.group(1) != self.access_key_id:
            raise DdbError(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
                ns="com.amazon.coral.service",
            )

    # ---- dispatch
    def handle(self, op: str, body: bytes, headers) -> tuple[int, bytes, bool]:
        """Returns (status, response body, drop_after); `in_flight.max` counts overlap."""
        with self._stats_lock:
            now = self._in_flight = self._in_flight + 1
            if now > self._stats.get("in_flight.max", 0):
                self._stats["in_flight.max"] = now
        try:
            return self._handle(op, body, headers)
        finally:
            with self._stats_lock:
                self._in_flight -= 1

    def _handle(self, op: str, body: bytes, headers) -> tuple[int, bytes, bool]:
        self.count(f"calls.{op}")
        if op == "SetCapacity":  # the loopback's own admin request
            req = json.loads(body or b"{}")
            self.capacity.set(**{k: req[k] for k in ("write", "read") if k in req})
            return 200, b"{}", False
        faults = self.faults
        faulty = op in faults.ops
        if faulty:
            delay = faults.delay()
            if delay:
                time.sleep(delay)
        if self.sink and op == "BatchWriteItem":
            return 200, b'{"UnprocessedItems":{}}', False
        self._tl.body_len = len(body)
        self.check_auth(headers)
        if faulty:
            if faults.roll(faults.drop_before):
                self.count("faults.drop_before")
                raise _Drop()
            if faults.roll(faults.throttle):
                self.count("faults.throttle")
                code = faults.choice(
                    ("ProvisionedThroughputExceededException", "ThrottlingException")
                )
                if code == "ThrottlingException":
                    raise DdbError(code, "Rate of requests exceeds the allowed throughput.")
                raise DdbError(
                    code,
                    "The level of configured provisioned throughput for the table was exceeded."
                    " Consider increasing your provisioning level with the UpdateTable API.",
                )
            if faults.roll(faults.server_error):
                self.count("faults.server_error")
                raise DdbError("InternalServerError", "Internal server error", status=500)
        try:
            req = json.loads(body) if body else {}
        except ValueError as exc:
            raise DdbError(
                "SerializationException", "Start of structure or map found where not expected."
            ) from exc
        fn = getattr(self, f"op_{op}", None)
        if fn is None:
            raise DdbError(
                "UnknownOperationException",
                f"Unknown operation {op}",
                ns="com.amazon.coral.service",
            )
        out = fn(req, faulty)
        drop_after = faulty and faults.roll(faults.drop_after)
        if drop_after:
            self.count("faults.drop_after")
        return 200, json.dumps(out, separators=(",", ":")).encode(), drop_after

    def _validate_items(self, items: list[dict]) -> None:
        hook = self.faults.validation_error_for
        if (
            getattr(self._tl, "body_len", MAX_ITEM_BYTES + 1) > MAX_ITEM_BYTES
        ):  # wire JSON is never smaller than the item
            for item in items:
                if item_size(item) > MAX_ITEM_BYTES:
                    raise validation("Item size has exceeded the maximum allowed size")
        if hook is not None:
            for item in items:
                verdict = hook(item)
                if verdict:
                    self.count("faults.validation")
                    raise validation(
                        verdict
                        if isinstance(verdict, str)
                        else "One or more parameter values were invalid"
                    )

    # ---- ops
    def op_CreateTable(self, req: dict, faulty: bool) -> dict:
        name = req.get("TableName")
        if not name:
            raise validation("TableName is required")
        hash_key, range_key = "pk", "sk"
        schema = req.get("KeySchema")
        if schema:
            hash_key = next(k["AttributeName"] for k in schema if k["KeyType"] == "HASH")
            range_key = next((k["AttributeName"] for k in schema if k["KeyType"] == "RANGE"), None)
        self.create_table(name, hash_key, range_key)
        return {"TableDescription": self.tables[name].describe(self.capacity)}

    def op_DescribeTable(self, req: dict, faulty: bool) -> dict:
        with self.lock:
            return {"Table": self.table(req.get("TableName")).describe(self.capacity)}

    def op_DeleteTable(self, req: dict, faulty: bool) -> dict:
        with self.lock:
            t = self.table(req.get("TableName"))
            del self.tables[t.name]
            return {"TableDescription": t.describe()}

    def op_ListTables(self, req: dict, faulty: bool) -> dict:
        with self.lock:
            return {"TableNames": sorted(self.tables)}

    def op_BatchWriteItem(self, req: dict, faulty: bool) -> dict:
        request_items = req.get("RequestItems") or {}
        if not request_items:
            raise validation("The requestItems parameter is required for BatchWriteItem")
        total = sum(len(v) for v in request_items.values())
        if total > 25:
            raise validation(
                "1 validation error detected: Value at 'requestItems' failed to satisfy "
                "constraint: Map value must satisfy constraint: [Member must have length less "
                "than or equal to 25, Member must have length greater than or equal to 1]"
            )
        plan = []  # (table, key, item or None, original request)
        for name, reqs in request_items.items():
            table = self.table(name)
            seen = set()
            puts = []
            for r in reqs:
                if "PutRequest" in r:
                    item = r["PutRequest"]["Item"]
                    key = table.key_of(item)
                    puts.append(item)
                elif "DeleteRequest" in r:
                    item = None
                    key = table.key_of(r["DeleteRequest"]["Key"], full_item=False)
                else:
                    raise validation("Supplied request must contain PutRequest or DeleteRequest")
                if key in seen:
                    raise validation("Provided list of item keys contains duplicates")
                seen.add(key)
                plan.append((table, key, item, r))
            self._validate_items(puts)
        unprocessed_idx: set[int] = set()
        if faulty and plan and self.faults.roll(self.faults.unprocessed):
            unprocessed_idx = set(self.faults.subset(len(plan)))
            self.count("faults.unprocessed_items", len(unprocessed_idx))
        unprocessed_idx |= self._over_capacity(plan, unprocessed_idx, "write")
        unprocessed: dict[str, list] = {}
        with self.lock:
            for i, (table, key, item, r) in enumerate(plan):
                if i in unprocessed_idx:
                    unprocessed.setdefault(table.name, []).append(r)
                elif item is None:
                    table.items.pop(key, None)
                else:
                    table.items[key] = item
        self.count("items.BatchWriteItem", len(plan) - len(unprocessed_idx))
        return {"UnprocessedItems": unprocessed}

    def _over_capacity(self, plan: list, skip: set[int], kind: str) -> set[int]:
        """Indices (outside `skip`) the capacity does not cover, in order; raises if none fit."""
        if self.capacity.rate(kind) is None:
            return set()
        todo = [i for i in range(len(plan)) if i not in skip]
        if kind == "write":
            costs = [write_units(p[2]) if p[2] is not None else 1 for p in plan]
        else:
            costs = [p[3] for p in plan]
        fit = self.capacity.take(kind, [costs[i] for i in todo])
        if todo and fit == 0:
            self.count(f"capacity.throttled.{kind}")
            raise _throughput_exceeded()
        refused = set(todo[fit:])
        if refused:
            self.count(f"capacity.unprocessed.{kind}", len(refused))
        return refused

    def op_PutItem(self, req: dict, faulty: bool) -> dict:
        table = self.table(req.get("TableName"))
        item = req.get("Item") or {}
        key = table.key_of(item)
        self._validate_items([item])
        with self.lock:
            cond = req.get("ConditionExpression")
            if cond and not _check_condition(
                cond, req.get("ExpressionAttributeNames") or {}, table.items.get(key)
            ):
                raise DdbError("ConditionalCheckFailedException", "The conditional request failed")
            table.items[key] = item
        self.count("items.PutItem")
        return {}

    def op_UpdateItem(self, req: dict, faulty: bool) -> dict:
        """`SET #a = :a, ...` only (what the import-job record writes); other forms refused."""
        table = self.table(req.get("TableName"))
        key_attrs = req.get("Key") or {}
        key = table.key_of(key_attrs, full_item=False)
        expr = (req.get("UpdateExpression") or "").strip()
        names = req.get("ExpressionAttributeNames") or {}
        values = req.get("ExpressionAttributeValues") or {}
        if not expr.upper().startswith("SET "):
            raise DdbError("ValidationException", "the loopback's UpdateItem takes SET only")
        with self.lock:
            item = dict(table.items.get(key) or key_attrs)
            for part in expr[4:].split(","):
                left, _, right = part.partition("=")
                name, ref = left.strip(), right.strip()
                if ref not in values:
                    raise DdbError("ValidationException", f"no value for {ref}")
                item[names.get(name, name)] = values[ref]
            table.items[key] = item
        self.count("items.UpdateItem")
        return {}

    def op_GetItem(self, req: dict, faulty: bool) -> dict:
        table = self.table(req.get("TableName"))
        key = table.key_of(req.get("Key") or {}, full_item=False)
        with self.lock:
            item = table.items.get(key)
        self.count("items.GetItem", item is not None)
        return {"Item": item} if item is not None else {}

    def op_BatchGetItem(self, req: dict, faulty: bool) -> dict:
        request_items = req.get("RequestItems") or {}
        total = sum(len(v.get("Keys", [])) for v in request_items.values())
        if total > 100:
            raise validation("Too many items requested for the BatchGetItem call")
        if total == 0:
            raise validation("The requestItems parameter is required for BatchGetItem")
        plan = []
        for name, spec in request_items.items():
            table = self.table(name)
            seen = set()
            consistent = bool(spec.get("ConsistentRead"))
            for k in spec.get("Keys", []):
                key = table.key_of(k, full_item=False)
                if key in seen:
                    raise validation("Provided list of item keys contains duplicates")
                seen.add(key)
                plan.append((table, key, k, consistent))
        unprocessed_idx: set[int] = set()
        if faulty and self.faults.roll(self.faults.unprocessed):
            unprocessed_idx = set(self.faults.subset(len(plan)))
            self.count("faults.unprocessed_keys", len(unprocessed_idx))
        if self.capacity.rate("read") is not None:
            with self.lock:
                costed = [(t, key, k, read_units(t.items.get(key), c)) for t, key, k, c in plan]
            unprocessed_idx |= self._over_capacity(costed, unprocessed_idx, "read")
        responses: dict[str, list] = {name: [] for name in request_items}
        unprocessed: dict[str, dict] = {}
        with self.lock:
            for i, (table, key, k, _consistent) in enumerate(plan):
                if i in unprocessed_idx:
                    entry = unprocessed.setdefault(table.name, {"Keys": []})
                    entry["Keys"].append(k)
                    continue
                item = table.items.get(key)
                if item is not None:
                    responses[table.name].append(item)
        self.count("items.BatchGetItem", sum(len(v) for v in responses.values()))
        return {"Responses": responses, "UnprocessedKeys": unprocessed}

    def op_TransactWriteItems(self, req: dict, faulty: bool) -> dict:
        actions = req.get("TransactItems") or []
        if not actions or len(actions) > 100:
            raise validation(
                "1 validation error detected: Value at 'transactItems' failed to satisfy "
                "constraint: Member must have length less than or equal to 100"
            )
        plan = []
        seen = set()
        for a in actions:
            put = a.get("Put")
            if put is None:
                raise validation("Loopback server supports only Put in TransactWriteItems")
            table = self.table(put.get("TableName"))
            item = put.get("Item") or {}
            key = (table.name, table.key_of(item))
            if key in seen:
                raise validation(
                    "Transaction request cannot include multiple operations on one item"
                )
            seen.add(key)
            plan.append((table, key[1], item, put))
        self._validate_items([p[2] for p in plan])
        with self.lock:
            reasons = []
            failed = False
            for table, key, _item, put in plan:
                cond = put.get("ConditionExpression")
                ok = not cond or _check_condition(
                    cond, put.get("ExpressionAttributeNames") or {}, table.items.get(key)
                )
                if ok:
                    reasons.append({"Code": "None"})
                else:
                    failed = True
                    reasons.append(
                        {
                            "Code": "ConditionalCheckFailed",
                            "Message": "The conditional request failed",
                        }
                    )
            if failed:
                codes = ", ".join(r["Code"] for r in reasons)
                raise DdbError(
                    "TransactionCanceledException",
                    f"Transaction cancelled, please refer cancellation reasons for specific "
                    f"reasons [{codes}]",
                    CancellationReasons=reasons,
                )
            for table, key, item, _put in plan:
                table.items[key] = item
        self.count("items.TransactWriteItems", len(plan))
        return {}

    def op_Scan(self, req: dict, faulty: bool) -> dict:
        table = self.table(req.get("TableName"))
        limit = int(req.get("Limit") or 1000)
        start = req.get("ExclusiveStartKey")
        with self.lock:
            keys = sorted(table.items)
            if start:
                after = table.key_of(start, full_item=False)
                keys = keys[bisect.bisect_right(keys, after) :]
            page = keys[:limit]
            items = [table.items[k] for k in page]
        out: dict[str, Any] = {"Items": items, "Count": len(items), "ScannedCount": len(items)}
        if len(keys) > limit and page:
            last = items[-1]
            names = [table.hash_key] + ([table.range_key] if table.range_key else [])
            out["LastEvaluatedKey"] = {n: last[n] for n in names}
        return out


# --------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "ddb-loopback/1.0"
    sys_version = ""
    backend: DdbBackend  # set on the subclass built per server

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def _send(self, status: int, body: bytes, close: bool = False) -> None:
        reason = {200: "OK", 400: "Bad Request", 500: "Internal Server Error"}.get(status, "Error")
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            "Content-Type: application/x-amz-json-1.0\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"x-amzn-RequestId: {uuid.uuid4().hex}\r\n"
            f"x-amz-crc32: {zlib.crc32(body)}\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        ).encode("latin-1")
        self.wfile.write(head + body)
        if close:
            self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        target = self.headers.get("X-Amz-Target", "")
        if target == ADMIN_TARGET:
            target = TARGET_PREFIX + "SetCapacity"
        if not target.startswith(TARGET_PREFIX):
            err = DdbError(
                "UnknownOperationException", "Unknown operation", ns="com.amazon.coral.service"
            )
            self._send(400, json.dumps(err.body()).encode())
            return
        op = target[len(TARGET_PREFIX) :]
        try:
            status, out, drop_after = self.backend.handle(op, body, self.headers)
        except _Drop:
            self._drop()
            return
        except DdbError as err:
            self.backend.count(f"errors.{err.code}")
            self._send(err.status, json.dumps(err.body()).encode())
            return
        except Exception as exc:  # pragma: no cover - a server bug must be visible
            err = DdbError("InternalServerError", f"loopback server bug: {exc!r}", status=500)
            self.backend.count("errors.server_bug")
            self._send(500, json.dumps(err.body()).encode())
            return
        if drop_after:
            self._drop()
            return
        self._send(status, out)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True


class DdbServer:
    """In-process loopback DynamoDB on 127.0.0.1 (serves from a background thread).

    Use as a context manager, or `start()` / `stop()`; in pytest:

        @pytest.fixture
        def ddb():
            with DdbServer(tables=["T"]) as srv:
                yield srv
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: Faults | None = None,
        access_key_id: str | None = None,
        tables: list[str] | tuple[str, ...] = (),
        sink: bool = False,
        write_capacity: float | None = None,
        read_capacity: float | None = None,
        capacity_burst: float = 0.5,
        capacity: Capacity | None = None,
    ) -> None:
        if capacity is None:
            capacity = Capacity(write_capacity, read_capacity, burst=capacity_burst)
        self.backend = DdbBackend(faults, access_key_id, sink, capacity)
        for name in tables:
            self.backend.create_table(name)
        handler = type("Handler", (_Handler,), {"backend": self.backend})
        self._httpd = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    # ---- lifecycle
    def start(self) -> DdbServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> DdbServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- accessors
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def faults(self) -> Faults:
        return self.backend.faults

    @property
    def capacity(self) -> Capacity:
        return self.backend.capacity

    @property
    def access_key_id(self) -> str | None:
        return self.backend.access_key_id

    @access_key_id.setter
    def access_key_id(self, value: str | None) -> None:
        self.backend.access_key_id = value

    def create_table(self, name: str, hash_key: str = "pk", range_key: str | None = "sk") -> None:
        self.backend.create_table(name, hash_key, range_key)

    def items(self, table: str) -> dict[tuple[str, ...], dict[str, Any]]:
        """A snapshot copy of the stored items, keyed by (pk, sk)."""
        with self.backend.lock:
            return dict(self.backend.table(table).items)

    def stats(self) -> dict[str, int]:
        return self.backend.stats()

    def reset_stats(self) -> None:
        self.backend.reset_stats()


class SubprocessDdbServer:
    """The same server in a child process (`python tests/support/ddb_server.py`).

    The client then owns its whole GIL -- what benchmarks need.  Faults are set
    from the command line (`fault_args`, e.g. ["--throttle", "0.1"]).
    """

    def __init__(
        self,
        tables: list[str] | tuple[str, ...] = ("T",),
        fault_args=(),
        *,
        write_capacity: float | None = None,
        read_capacity: float | None = None,
        capacity_burst: float = 0.5,
    ):
        self.tables = list(tables)
        self.fault_args = list(fault_args)
        if write_capacity is not None:
            self.fault_args += ["--write-capacity", str(write_capacity)]
        if read_capacity is not None:
            self.fault_args += ["--read-capacity", str(read_capacity)]
        self.fault_args += ["--capacity-burst", str(capacity_burst)]
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> SubprocessDdbServer:
        cmd = [sys.executable, __file__, "--port", "0"]
        for t in self.tables:
            cmd += ["--table", t]
        self.proc = subprocess.Popen(cmd + self.fault_args, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"loopback server failed to start: {line!r}")
        self.port = int(m.group(1))
        return self

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_capacity(self, **rates: float | None) -> None:
        """Change the child's capacity now (`write=`, `read=`; None = unlimited)."""
        req = urllib.request.Request(
            self.endpoint_url,
            data=json.dumps(rates).encode(),
            headers={"X-Amz-Target": ADMIN_TARGET, "Content-Type": "application/x-amz-json-1.0"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """user+system CPU time consumed so far by the server process (Linux)."""
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> SubprocessDdbServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Loopback DynamoDB (JSON 1.0) with injectable faults")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--table", action="append", default=[], help="create table (pk/sk)")
    ap.add_argument("--access-key-id", default=None, help="reject other access key ids")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--sink", action="store_true", help="ack BatchWriteItem without parsing or storing"
    )
    for name in ("throttle", "server-error", "unprocessed", "drop-before", "drop-after", "latency"):
        ap.add_argument(f"--{name}", type=float, default=0.0)
    ap.add_argument("--write-capacity", type=float, default=None, help="write units/s")
    ap.add_argument("--read-capacity", type=float, default=None, help="read units/s")
    ap.add_argument("--capacity-burst", type=float, default=0.5, help="seconds of capacity")
    args = ap.parse_args(argv)
    faults = Faults(
        seed=args.seed,
        throttle=args.throttle,
        server_error=args.server_error,
        unprocessed=args.unprocessed,
        drop_before=args.drop_before,
        drop_after=args.drop_after,
        latency=args.latency,
    )
    srv = DdbServer(
        args.host,
        args.port,
        faults=faults,
        access_key_id=args.access_key_id,
        tables=args.table,
        sink=args.sink,
        write_capacity=args.write_capacity,
        read_capacity=args.read_capacity,
        capacity_burst=args.capacity_burst,
    )
    print(
        f"ddb loopback listening on {srv.endpoint_url.replace('127.0.0.1', args.host)}", flush=True
    )
    try:
        srv._httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv._httpd.server_close()


if __name__ == "__main__":
    main()
