"""Outcome records shared by every stage.

Each row's fate is data, never an exception: a transform yields `PreparedItem`s
for valid rows and `Reject`s for invalid ones; a writer turns items into a
`WriteOutcome` whose `failures` name every row it could not store.  Counting
these records is how the run proves `rows == written + rejected + failed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PreparedItem", "Reject", "Failure", "WriteOutcome"]


@dataclass(frozen=True, slots=True)
class PreparedItem:
    """One command record, ready to send.

    `wire` is the item in DynamoDB JSON (`{"pk":{"S":"..."},...}`) as UTF-8
    bytes, so the fast writer can splice it into a request body without ever
    building Python dicts; the boto3 writer `json.loads` it.
    """

    line: int
    pk: str
    sk: str
    wire: bytes


@dataclass(frozen=True, slots=True)
class Reject:
    """A row refused before any write: where it was, which field, and why."""

    line: int
    column: str
    value: str
    reason: str
    row: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Failure:
    """A valid row the service did not store after every allowed attempt."""

    line: int
    pk: str
    sk: str
    reason: str


@dataclass(slots=True)
class WriteOutcome:
    """What a writer did with one batch of items."""

    written: int = 0
    failures: list[Failure] = field(default_factory=list)
    retries: int = 0

    def merge(self, other: WriteOutcome) -> None:
        self.written += other.written
        self.failures.extend(other.failures)
        self.retries += other.retries
