"""Outcome records shared by every stage.

Each row's fate is data, never an exception: a transform yields `PreparedItem`s
for valid rows and `Reject`s for invalid ones; a writer turns items into a
`WriteOutcome` whose `failures` name every row it could not store.  Counting
these records is how the run proves `rows == written + rejected + failed`.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field

__all__ = ["code_of", "PreparedItem", "Reject", "RejectKind", "Failure", "WriteOutcome"]


class RejectKind(enum.Enum):
    """Why a row was not written although nothing failed.

    Only bad data (INVALID, DUPLICATE) counts toward `--max-rejects`: a row
    that already exists is the expected outcome of re-running an insert, and a
    strict-mode conflict is another writer's doing.
    """

    INVALID = "invalid"  # the row itself is bad (reader, transform, batch size)
    DUPLICATE = "duplicate"  # the same entity appears again in this run
    EXISTS = "exists"  # insert mode: the entity is already stored
    CONFLICT = "conflict"  # strict mode: another writer stored this version first

    @property
    def bad_data(self) -> bool:
        return self in (RejectKind.INVALID, RejectKind.DUPLICATE)


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


def code_of(item: PreparedItem) -> str:
    """The record's `code` (read from its wire JSON; only rejects need it, so rarely)."""
    try:
        return json.loads(item.wire)["code"]["S"]
    except (ValueError, KeyError, TypeError):
        return item.sk.split("#", 1)[-1].rsplit("@", 1)[0]


@dataclass(frozen=True, slots=True)
class Reject:
    """A row refused before any write: where it was, which field, and why."""

    line: int
    column: str
    value: str
    reason: str
    row: tuple[str, ...] = ()
    kind: RejectKind = RejectKind.INVALID


@dataclass(frozen=True, slots=True)
class Failure:
    """A valid row the service did not store after every allowed attempt."""

    line: int
    pk: str
    sk: str
    reason: str
    #: the row's CSV fields, so a failed row can be imported again from the failures file
    row: tuple[str, ...] = ()


@dataclass(slots=True)
class WriteOutcome:
    """What a writer did with one batch of items.

    `written + len(failures) + len(rejects)` equals the items it was given;
    `rejects` are items refused as an outcome (strict mode's conflicts), not
    failures.
    """

    written: int = 0
    failures: list[Failure] = field(default_factory=list)
    retries: int = 0
    rejects: list[Reject] = field(default_factory=list)

    def merge(self, other: WriteOutcome) -> None:
        self.written += other.written
        self.failures.extend(other.failures)
        self.retries += other.retries
        self.rejects.extend(other.rejects)
