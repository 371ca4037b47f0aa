"""A batch's keys are read as their list would be: the same calls, the same answers.

`Keys.of(batch)` lets `KeyLookup.get_many` write each call's keys from a native
`ItemBlock` in C and make the (pk, sk) tuples only for an answer that needs them
(the pure-Python `ItemList` hands over its tuples).  Whatever
the table holds, leaves unprocessed or refuses, the lookup must find exactly
what it finds from the keys as a list, sending the same bodies.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from importer import _native
from importer.dynamodb.api import DynamoClient, Reply
from importer.dynamodb.errors import DynamoError
from importer.dynamodb.lookup import KeyLookup, Keys
from importer.dynamodb.pacing import Pacer
from importer.dynamodb.request_pool import Lanes
from importer.dynamodb.retry import RetryPolicy
from importer.item_batch import ItemList
from importer.records import PreparedItem


class _Table(DynamoClient):
    """BatchGetItem as DynamoDB answers it, over a dict; a body seen for the first
    time may get some of its keys left unprocessed, or a throttling error."""

    sends_side_by_side = True

    def __init__(self, stored: dict[tuple[str, str], dict], faults: bool) -> None:
        self.stored, self.faults = stored, faults
        self.bodies: list[bytes] = []
        self.seen: set[bytes] = set()
        self.groups: list[int] = []

    def post(self, operation: str, body: bytes) -> Reply:
        assert operation == "BatchGetItem"
        self.bodies.append(body)
        first = body not in self.seen
        self.seen.add(body)
        [(table, spec)] = json.loads(body)["RequestItems"].items()
        keys = [(k["pk"]["S"], k["sk"]["S"]) for k in spec["Keys"]]
        mark = zlib.crc32(body) % 7 if self.faults and first else -1
        if mark == 0:
            raise DynamoError("ProvisionedThroughputExceededException", "slow down")
        left = keys[-2:] if mark == 1 else []
        found = [self.stored[k] for k in keys if k in self.stored and k not in left]
        doc: dict[str, Any] = {"Responses": {table: found}, "UnprocessedKeys": {}}
        if left:
            doc["UnprocessedKeys"] = {
                table: {"Keys": [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in left]}
            }
        return Reply(raw=json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())

    def post_many(self, operation: str, bodies: Sequence[bytes]) -> list[Reply | DynamoError]:
        self.groups.append(len(bodies))
        return super().post_many(operation, bodies)  # the protocol's: one post each


def _calm_lookup(client: _Table) -> KeyLookup:
    """A lookup that sends in groups at once: its lanes timed, its pacer past the opening."""
    lanes = Lanes(12, 2)
    for _ in range(64):
        lanes.gauge.observe(0.000_3, 0.000_1)
    pacer = Pacer(kind="read")
    while not pacer.unpaced():
        pacer.acquire(1, 1)
        pacer.settle(sent=1, processed=1, processed_units=1, throttled=False)
    policy = RetryPolicy(base_delay=0.0, max_delay=0.0)
    return KeyLookup(client, pacer=pacer, lanes=lanes, policy=policy)  # type: ignore[arg-type]


KEY_TEXT = st.text(alphabet=["a", "#", "@", "1", "2", "é", "\U0001f600", '"'], max_size=5)


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.tuples(KEY_TEXT, KEY_TEXT), max_size=450, unique=True),
    share=st.integers(0, 3),
    faults=st.booleans(),
    versioned=st.booleans(),
)
def test_a_blocks_keys_are_read_as_their_list(
    keys: list[tuple[str, str]], share: int, faults: bool, versioned: bool
) -> None:
    items = [PreparedItem(i + 2, pk, f"{sk}@1", b"{}") for i, (pk, sk) in enumerate(keys)]
    block = _native.ItemBlock(items)
    wanted = block.entity_keys(versioned)
    if len(set(wanted)) != len(wanted):
        return  # Keys.of is for a batch whose keys are distinct (the caller checks)
    stored = {k: {"pk": {"S": k[0]}, "sk": {"S": k[1]}} for k in wanted[:: share + 2]}
    answers = []
    for given_keys in (
        Keys(wanted, distinct=True),
        Keys.of(block, versioned=versioned),
        Keys.of(ItemList(items), versioned=versioned),
        wanted,  # listed keys, taken once each
    ):
        client = _Table(stored, faults)
        found = _calm_lookup(client).get_many("T", given_keys)
        answers.append((found, sorted(client.bodies)))
    assert answers[0] == answers[1] == answers[2] == answers[3]
    assert answers[0][0] == stored


def test_a_block_of_new_keys_is_read_in_groups_and_finds_nothing() -> None:
    items = [PreparedItem(i, "t#P", f"P#{i}@1", b"{}") for i in range(1, 451)]
    client = _Table({}, faults=False)
    lookup = _calm_lookup(client)
    assert lookup.get_many("T", Keys.of(_native.ItemBlock(items), versioned=True)) == {}
    assert client.groups == [5] and lookup.calls == 5
    sent = [k["sk"]["S"] for b in client.bodies for k in json.loads(b)["RequestItems"]["T"]["Keys"]]
    assert sent == [f"P#{i}@1" for i in range(1, 451)]
