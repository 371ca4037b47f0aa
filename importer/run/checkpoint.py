"""Checkpoints: which batches of a run are finished, so `--resume` sends only the rest.

A checkpoint is a JSON-lines file: one header line with the run's identity
(run id, timestamp, source, table, spec digest, batch limits) and one line per
settled batch with its counts.  Batches are cut deterministically and records
take their timestamp and ids from the run, so a resumed run re-creates exactly
the same batches and items and the final table equals an uninterrupted run.
Lines are flushed as they are written: a killed process loses at most the
batches that were in flight, which are sent again (BatchWriteItem puts are
idempotent for identical items).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = ["Checkpoint", "CheckpointError", "BatchCounts", "default_checkpoint_path", "spec_digest"]


class CheckpointError(ValueError):
    """The checkpoint cannot be used to resume this run."""


@dataclass(frozen=True, slots=True)
class BatchCounts:
    rows: int
    written: int
    rejected: int
    failed: int
    valid: int
    unchanged: int = 0
    existing: int = 0
    bad_data: int = 0
    synced: int = 0


def spec_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def default_checkpoint_path(source: str, table: str) -> Path:
    key = hashlib.sha256(f"{source}\n{table}".encode()).hexdigest()[:16]
    return Path(".importer") / "checkpoints" / f"{key}.jsonl"


#: Header fields that must match for a resume to be exact.
_IDENTITY = ("source", "table", "spec", "batch_items", "batch_bytes", "mode")


@dataclass(slots=True)
class Checkpoint:
    path: Path
    meta: dict[str, Any]
    #: batches finished by the run this checkpoint was loaded from (what --resume skips)
    finished: dict[int, BatchCounts] = field(default_factory=dict)
    #: batches recorded by this process (counted, not kept: memory stays flat)
    recorded: int = 0
    complete: bool = False
    _fh: IO[str] | None = None

    @classmethod
    def start(cls, path: Path, meta: dict[str, Any]) -> Checkpoint:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        fh.write(json.dumps({"run": meta}) + "\n")
        fh.flush()
        return cls(path=path, meta=meta, _fh=fh)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise CheckpointError(f"no checkpoint to resume at {path}") from None
        if not lines:
            raise CheckpointError(f"checkpoint {path} is empty")
        try:
            meta = json.loads(lines[0])["run"]
        except (ValueError, KeyError, TypeError):
            raise CheckpointError(f"checkpoint {path} is not an importer checkpoint") from None
        cp = cls(path=path, meta=meta)
        for line in lines[1:]:
            try:
                rec = json.loads(line)
            except ValueError:
                break  # a line cut short by a kill: everything after it is unknown
            if rec.get("complete"):
                cp.complete = True
            elif "batch" in rec:
                cp.finished[int(rec["batch"])] = BatchCounts(**rec["counts"])
        return cp

    def check_matches(self, meta: dict[str, Any]) -> None:
        for key in _IDENTITY:
            if self.meta.get(key) != meta.get(key):
                raise CheckpointError(
                    f"cannot resume: the checkpoint was made with {key} = "
                    f"{self.meta.get(key)!r}, this run has {meta.get(key)!r}"
                )
        if self.complete:
            raise CheckpointError(f"cannot resume: run {self.meta.get('run_id')} already completed")

    def reopen(self) -> None:
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def record(self, index: int, counts: BatchCounts) -> None:
        assert self._fh is not None
        self.recorded += 1
        self._fh.write(json.dumps({"batch": index, "counts": _as_dict(counts)}) + "\n")
        self._fh.flush()

    def mark_complete(self) -> None:
        assert self._fh is not None
        self._fh.write(json.dumps({"complete": True}) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.complete = True

    @property
    def batches_done(self) -> int:
        """Every batch the checkpoint holds: resumed ones and those recorded since."""
        return len(self.finished) + self.recorded

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _as_dict(counts: BatchCounts) -> dict[str, int]:
    return {name: getattr(counts, name) for name in BatchCounts.__slots__}
