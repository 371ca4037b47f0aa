"""A run's counts and the rules over them: the one counts type every layer adds up.

A batch, a file, a job and a sync each counted in a type of their own (the
batch unit's outcome, the checkpoint's `BatchCounts`, the driver's summary,
the job's totals and the sync command's `_SyncCounts`), added field by field
with `getattr`/`setattr`, and three of them repeated the exit rule.  A count
one of them forgot was simply missing from the sum: a job's totals had no
`skipped`, so a file halted over --max-rejects left the job's rows unbalanced.
Here each count is declared once, adding is one operation, and the two rules
that read counts -- the balance and "does anything need a look" -- live next to
them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["COUNT_NAMES", "Counts"]


@dataclass(slots=True)
class Counts:
    """What became of a run's rows.

    Every row read is settled exactly once:
    `rows == written + would_write + unchanged + rejected + failed + skipped`
    (`balanced`).  The other counts say more about some of those rows.
    """

    #: rows read (a row is an ItemReader item)
    rows: int = 0
    #: rows whose command record the table now holds
    written: int = 0
    #: rows refused with a reason (bad data, a duplicate, an entity that exists, a conflict)
    rejected: int = 0
    #: rows DynamoDB refused after every retry (or whose `--sync` failed)
    failed: int = 0
    #: rows the transform accepted (before the mode stage and the write)
    valid: int = 0
    #: upsert: rows equal to the entity's latest version (nothing written, nothing wrong)
    unchanged: int = 0
    #: of `rejected`: insert-mode rows whose entity the table holds already
    existing: int = 0
    #: validate: the rows a run would write (a dry run writes none)
    would_write: int = 0
    #: `--sync`: data rows written (not a row count: the rows are counted above)
    synced: int = 0
    #: of `rejected`: bad data, what --max-rejects limits
    bad_data: int = 0
    #: rows read but never written because the run halted before their batch wrote
    skipped: int = 0

    @property
    def settled(self) -> int:
        """The rows that came to an end (each in exactly one of these counts)."""
        return (
            self.written
            + self.would_write
            + self.unchanged
            + self.rejected
            + self.failed
            + self.skipped
        )

    @property
    def balanced(self) -> bool:
        return self.rows == self.settled

    def check(self, what: str = "run") -> None:
        """Raise when a row went uncounted or was counted twice: a bug, said loudly."""
        if not self.balanced:
            raise AssertionError(
                f"{what}'s row accounting broken: rows {self.rows} != settled {self.settled} "
                f"({self.counts_json()})"
            )

    @property
    def needs_look(self) -> bool:
        """The exit rule (`importer.cli.exit_codes`) and the import-job status read this.

        Rows that exist already (insert mode) are what re-running an import is
        expected to meet, as `--max-rejects` already treats them; bad data,
        duplicates, strict-mode conflicts and failed writes do need a look.
        """
        return bool(self.rejected - self.existing or self.failed)

    @property
    def succeeded(self) -> int:
        """Rows the table holds as the file says: written, unchanged, or (insert) stored
        already -- the import-job record's `succeededRows`; every other row failed there."""
        return self.written + self.unchanged + self.existing

    def add(self, other: Counts) -> None:
        """Add `other`'s counts to these, in place (a summary adds its batches)."""
        for name in COUNT_NAMES:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def __add__(self, other: Counts) -> Counts:
        total = self.counts()
        total.add(other)
        return total

    def counts(self) -> Counts:
        """Just the counts (of a summary, say), as a `Counts` of their own."""
        return Counts(**{name: getattr(self, name) for name in COUNT_NAMES})

    @classmethod
    def total(cls, parts: Iterable[Counts]) -> Counts:
        out = cls()
        for part in parts:
            out.add(part)
        return out

    def counts_json(self, names: Sequence[str] = ()) -> dict[str, int]:
        """The counts by name: all of them, or `names` in that order (a file format's own)."""
        return {name: int(getattr(self, name)) for name in names or COUNT_NAMES}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Counts:
        """The counts of a summary as JSON keeps it (other keys ignored, a missing one 0)."""
        data = data or {}
        return cls(**{name: int(data.get(name) or 0) for name in COUNT_NAMES})


#: every count's name, in declaration order
COUNT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Counts))
