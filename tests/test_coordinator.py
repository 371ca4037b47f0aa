"""One coordinator per run: a fatal error met by any worker stops every other one.

A lookup that met bad credentials used to leave the writers sending (each writer kept
its own fatal error); the run's one `RunCoordinator` now carries the first fatal error
to every writer and lookup of the run, before their next send.  Fake clients record
what was sent: nothing here depends on timing.
"""

from __future__ import annotations

import pytest

from importer.coordinator import RunCoordinator, RunStatus
from importer.dynamodb.client import ALL_PROCESSED, DynamoError, Reply
from importer.dynamodb.lookup import KeyLookup
from importer.dynamodb.retry import RetryPolicy, WriterFatalError
from importer.dynamodb.strict_writer import StrictWriter
from importer.dynamodb.writer import BatchWriter
from importer.records import PreparedItem


class _Client:
    """Answers every call with `answer` (an error to raise, or a Reply); counts calls."""

    endpoint_url = "http://127.0.0.1:1"
    region = "us-east-1"
    sends_side_by_side = False

    def __init__(self, answer) -> None:
        self.answer = answer
        self.calls: list[str] = []

    def post(self, operation: str, body: bytes) -> Reply:
        self.calls.append(operation)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def answered(self) -> bool:
        return True

    def fatal(self, error: DynamoError, table: str = "") -> WriterFatalError:
        return WriterFatalError(f"credentials refused: {error.code}")

    def close(self) -> None:
        pass


def _items(n: int = 3) -> list[PreparedItem]:
    return [
        PreparedItem(i + 2, f"P#{i}", "S@1", b'{"pk":{"S":"P#%d"},"sk":{"S":"S@1"}}' % i)
        for i in range(n)
    ]


def test_a_lookup_s_fatal_error_stops_the_writers_before_they_send():
    coordinator = RunCoordinator()
    refused = _Client(DynamoError("UnrecognizedClientException", "bad key", status=400))
    lookup = KeyLookup(refused, policy=RetryPolicy(sleep=lambda s: None), coordinator=coordinator)
    with pytest.raises(WriterFatalError, match="credentials refused") as met:
        lookup.get_many("t-data", [("P#1", "S")])
    assert coordinator.fatal is met.value and coordinator.status is RunStatus.FAILED
    healthy = _Client(Reply(200, ALL_PROCESSED))
    writer = BatchWriter(client=healthy, table="t-command", coordinator=coordinator)
    strict = StrictWriter(client=healthy, table="t-command", coordinator=coordinator)
    for w in (writer, strict):
        with pytest.raises(WriterFatalError) as again:
            w.write_batch(_items())
        assert again.value is met.value  # the run's first error, said once
    assert healthy.calls == []  # nothing was sent after the run failed


def test_every_writer_that_meets_a_fatal_error_raises_the_first_one():
    coordinator = RunCoordinator()
    first = WriterFatalError("the table was deleted")
    coordinator.fail(first)
    refused = _Client(DynamoError("UnrecognizedClientException", "bad key", status=400))
    writer = BatchWriter(client=refused, table="t-command", coordinator=RunCoordinator())
    with pytest.raises(WriterFatalError, match="credentials refused"):
        writer.write_batch(_items())  # a writer of another run: its own error
    shared = BatchWriter(client=refused, table="t-command", coordinator=coordinator)
    with pytest.raises(WriterFatalError) as met:
        shared.write_batch(_items())
    assert met.value is first
