"""One send loop: grouping requests is the transport's business.

The batch writer, the strict writer and the lookup hand a batch's requests to one loop
(`importer.dynamodb.send_loop`).  Whether the client sends a group side by side in one
call (`sends_side_by_side`) or one call at a time, the same requests get the same
answers -- retries, UnprocessedItems, a refused item bisected out -- and the outcome is
the same; only how the first sends went out differs.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any

import pytest

from importer import _native
from importer.dynamodb.api import DynamoClient, Reply
from importer.dynamodb.client import ALL_PROCESSED
from importer.dynamodb.errors import DynamoError
from importer.dynamodb.lookup import KeyLookup, Keys
from importer.dynamodb.pacing import Pacer
from importer.dynamodb.request_pool import Lanes
from importer.dynamodb.retry import RetryPolicy
from importer.dynamodb.strict_writer import StrictWriter
from importer.dynamodb.writer import BatchWriter
from importer.item_batch import ItemList
from importer.records import PreparedItem

NO_WAIT = RetryPolicy(base_delay=0.0, max_delay=0.0)


class _Table(DynamoClient):
    """BatchWriteItem, TransactWriteItems and BatchGetItem as DynamoDB answers them, over a
    dict.  A body seen for the first time may be throttled or get its last two items
    (keys) back unprocessed -- decided by the body's bytes, so the same requests meet the
    same faults whichever way they are sent; an item named "bad" is refused (a
    ValidationException for the whole request)."""

    endpoint_url = "http://table.test"
    region = "us-east-1"

    def __init__(self, side_by_side: bool, stored: dict | None = None) -> None:
        self.sends_side_by_side = side_by_side
        self.stored: dict[tuple[str, str], dict] = dict(stored or {})
        self.seen: set[bytes] = set()
        self.bodies: list[bytes] = []
        self.groups: list[int] = []

    def post_many(self, operation: str, bodies: Sequence[bytes]) -> list[Reply | DynamoError]:
        self.groups.append(len(bodies))
        return super().post_many(operation, bodies)  # the protocol's: one post each

    def post(self, operation: str, body: bytes) -> Reply:
        self.bodies.append(body)
        first = body not in self.seen
        self.seen.add(body)
        mark = zlib.crc32(body) % 5 if first else -1
        if mark == 0:
            raise DynamoError("ProvisionedThroughputExceededException", "slow down")
        doc = json.loads(body)
        if operation == "BatchGetItem":
            [(table, spec)] = doc["RequestItems"].items()
            keys = [(k["pk"]["S"], k["sk"]["S"]) for k in spec["Keys"]]
            left = keys[-2:] if mark == 1 else []
            found = [self.stored[k] for k in keys if k in self.stored and k not in left]
            out: dict[str, Any] = {"Responses": {table: found}, "UnprocessedKeys": {}}
            if left:
                listed = [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in left]
                out["UnprocessedKeys"] = {table: {"Keys": listed}}
            return Reply(raw=json.dumps(out, separators=(",", ":")).encode())
        if operation == "TransactWriteItems":
            items = [t["Put"]["Item"] for t in doc["TransactItems"]]
        else:
            [(table, puts)] = doc["RequestItems"].items()
            items = [p["PutRequest"]["Item"] for p in puts]
        if any(it["pk"]["S"] == "bad" for it in items):
            raise DynamoError("ValidationException", "an item is refused")
        left_items = items[-2:] if mark == 1 and operation == "BatchWriteItem" else []
        for it in items:
            if it not in left_items:
                self.stored[(it["pk"]["S"], it["sk"]["S"])] = it
        if not left_items:
            return Reply(raw=ALL_PROCESSED if operation == "BatchWriteItem" else b"{}")
        unprocessed = {table: [{"PutRequest": {"Item": it}} for it in left_items]}
        return Reply(raw=json.dumps({"UnprocessedItems": unprocessed}).encode())

    def answered(self) -> bool:
        return True

    def fatal(self, error: DynamoError, table: str = "") -> Any:
        raise AssertionError(f"no fatal error expected: {error}")

    def close(self) -> None:
        pass


def _calm() -> tuple[Lanes, Pacer]:
    """Lanes already timed and a pacer past the opening: requests may go out in groups."""
    lanes = Lanes(12, 2)
    for _ in range(64):
        lanes.gauge.observe(0.000_3, 0.000_1)
    pacer = Pacer()
    while not pacer.unpaced():
        pacer.acquire(1, 1)
        pacer.settle(sent=1, processed=1, processed_units=1, throttled=False)
    return lanes, pacer


def _items(n: int, bad: Sequence[int] = ()) -> list[PreparedItem]:
    out = []
    for i in range(n):
        pk = "bad" if i in bad else f"T#{i % 3}"
        wire = json.dumps({"pk": {"S": pk}, "sk": {"S": f"P#{i}@1"}, "n": {"N": str(i)}})
        out.append(PreparedItem(i + 2, pk, f"P#{i}@1", wire.encode()))
    return out


def _outcome(out: Any) -> tuple[int, list, int, list]:
    return (
        out.written,
        sorted((f.line, f.reason) for f in out.failures),
        out.retries,
        sorted(r.line for r in out.rejects),
    )


@pytest.mark.parametrize("make", [ItemList, _native.ItemBlock], ids=["ItemList", "ItemBlock"])
def test_the_writer_sends_a_group_alike_through_either_client(make: Any) -> None:
    """240 items, 10 requests: some throttled, some with items left unprocessed, one
    refused item bisected out -- one outcome whether the requests went out in groups."""
    items = make(_items(240, bad=(77,)))
    results = []
    for side_by_side in (True, False):
        client = _Table(side_by_side)
        lanes, pacer = _calm()
        try:
            writer = BatchWriter(client=client, table="T", policy=NO_WAIT, pacer=pacer, lanes=lanes)
            out = writer.write_batch(items)
        finally:
            lanes.close()
        results.append((_outcome(out), client.stored, sorted(client.seen)))
        if side_by_side:
            assert client.groups and max(client.groups) > 1  # handed over in groups
        else:
            assert client.groups == []  # one call each, over the lanes
    assert results[0] == results[1]
    (written, failures, retries, _), stored, _ = results[0]
    assert written == 239 and [line for line, _ in failures] == [79] and retries > 0
    assert "ValidationException" in failures[0][1] and len(stored) == 239


def test_the_writer_sends_repeated_keys_in_order_through_either_client() -> None:
    """A key in two requests: never in a group, one request after the other, so the
    later row is the one the table keeps."""
    items = _items(60)
    later = PreparedItem(99, items[0].pk, items[0].sk, items[0].wire.replace(b'"0"', b'"later"'))
    for side_by_side in (True, False):
        client = _Table(side_by_side)
        lanes, pacer = _calm()
        try:
            writer = BatchWriter(client=client, table="T", policy=NO_WAIT, pacer=pacer, lanes=lanes)
            out = writer.write_batch([*items, later])
        finally:
            lanes.close()
        assert out.written == 61 and not out.failures
        assert client.groups == []
        assert client.stored[(later.pk, later.sk)]["n"] == {"N": "later"}


def test_the_strict_writer_sends_its_transactions_alike_through_either_client() -> None:
    items = _items(450, bad=(300,))
    results = []
    for side_by_side in (True, False):
        client = _Table(side_by_side)
        _, pacer = _calm()
        writer = StrictWriter(client=client, table="T", policy=NO_WAIT, pacer=pacer)
        out = writer.write_batch(items)
        results.append((_outcome(out), client.stored))
        assert client.groups == ([5] if side_by_side else [])  # one group: all at once
    assert results[0] == results[1]
    assert results[0][0][0] == 449 and [line for line, _ in results[0][0][1]] == [302]


def test_the_lookup_reads_alike_through_either_client() -> None:
    items = _items(450)
    stored = {(it.pk, it.sk): json.loads(it.wire) for it in items[::4]}
    for keys in (
        lambda: Keys.of(_native.ItemBlock(items), versioned=True),
        lambda: Keys.of(ItemList(items), versioned=True),
        lambda: [(it.pk, it.sk) for it in items] * 2,  # listed keys, repeats read once
    ):
        results = []
        for side_by_side in (True, False):
            client = _Table(side_by_side, stored)
            lanes, _ = _calm()
            _, pacer = _calm()
            try:
                lookup = KeyLookup(client, policy=NO_WAIT, pacer=pacer, lanes=lanes)
                found = lookup.get_many("T", keys())
            finally:
                lanes.close()
            results.append((found, sorted(client.seen)))
            assert bool(client.groups) == side_by_side
        assert results[0] == results[1]
        assert results[0][0] == stored
