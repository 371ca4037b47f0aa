"""Strict mode's transactions go out as a group, like the batch writer's requests.

A batch of 250 items is three TransactWriteItems; with a client that sends side
by side (`post_many`) they go out in one call, and an answer that is not a plain
success (a conflict) goes on exactly as a transaction sent alone would: the
conflicting item taken out, the rest resent.  Counts add up either way, and the
same items, `ItemBlock` or list, make the same bodies.
"""

from __future__ import annotations

import json

from importer._native import ItemBlock
from importer.dynamodb.client import DynamoError, Reply
from importer.dynamodb.pacing import Pacer
from importer.dynamodb.strict_writer import StrictWriter
from importer.records import PreparedItem, RejectKind


def _items(n: int) -> list[PreparedItem]:
    out = []
    for i in range(n):
        sk = f"P#{i}@1"
        wire = json.dumps({"pk": {"S": "T"}, "sk": {"S": sk}, "requestId": {"S": f"r#{i}"}})
        out.append(PreparedItem(i + 2, "T", sk, wire.encode()))
    return out


class Calm(Pacer):
    """A pacer that has heard enough calm answers to let groups out (`Pacer.unpaced`)."""

    def unpaced(self) -> bool:
        return True


def _writer(client) -> StrictWriter:
    return StrictWriter(client=client, table="t-command", pacer=Calm())


class GroupingClient:
    """Answers every transaction; the one holding `conflict` is cancelled once."""

    sends_side_by_side = True
    region = "us-east-1"
    endpoint_url = "http://test"

    def __init__(self, conflict: str | None = None) -> None:
        self.conflict = conflict
        self.calls: list[tuple[str, int]] = []  # (post or post_many, transactions)
        self.bodies: list[bytes] = []

    def _answer(self, body: bytes) -> Reply | DynamoError:
        self.bodies.append(body)
        puts = json.loads(body)["TransactItems"]
        sks = [p["Put"]["Item"]["sk"]["S"] for p in puts]
        if self.conflict in sks:
            reasons = [
                {"Code": "ConditionalCheckFailed", "Item": {"requestId": {"S": "someone"}}}
                if sk == self.conflict
                else {"Code": "None"}
                for sk in sks
            ]
            return DynamoError(
                "TransactionCanceledException",
                "cancelled",
                status=400,
                doc={"CancellationReasons": reasons},
            )
        return Reply(raw=b"{}")

    def post_many(self, operation: str, bodies: list[bytes]) -> list[Reply | DynamoError]:
        self.calls.append(("post_many", len(bodies)))
        return [self._answer(b) for b in bodies]

    def post(self, operation: str, body: bytes) -> Reply:
        self.calls.append(("post", 1))
        answer = self._answer(body)
        if isinstance(answer, DynamoError):
            raise answer
        return answer


def test_a_batchs_transactions_go_out_in_one_group():
    client = GroupingClient()
    out = _writer(client).write_batch(_items(250))
    assert (out.written, out.failures, out.rejects) == (250, [], [])
    assert client.calls == [("post_many", 3)]


def test_a_cancelled_transaction_of_the_group_goes_on_alone():
    client = GroupingClient(conflict="P#120@1")
    out = _writer(client).write_batch(ItemBlock(_items(250)))
    assert out.written == 249 and out.failures == []
    assert [(r.line, r.kind) for r in out.rejects] == [(122, RejectKind.CONFLICT)]
    assert client.calls == [("post_many", 3), ("post", 1)]  # the rest of that one, resent
    assert len(json.loads(client.bodies[-1])["TransactItems"]) == 99


def test_blocks_and_lists_make_the_same_transactions():
    a, b = GroupingClient(), GroupingClient()
    _writer(a).write_batch(_items(250))
    _writer(b).write_batch(ItemBlock(_items(250)))
    assert a.bodies == b.bodies
    assert all(b'"ClientRequestToken":"' in body for body in a.bodies)
