"""Checkpoints: which batches of a run are finished, so `--resume` sends only the rest.

A checkpoint is a JSON-lines file: one header line with the run's identity
(run id, timestamp, source, table, spec digest, batch limits) and one line per
settled batch with its counts.  Batches are cut deterministically and records
take their timestamp and ids from the run, so a resumed run re-creates exactly
the same batches and items and the final table equals an uninterrupted run.
Lines are flushed as they are written: a killed process loses at most the
batches that were in flight, which are sent again (BatchWriteItem puts are
idempotent for identical items).

Guarded state:

* each line is one `write` of a whole line; a line cut by a kill is dropped on
  load and cut off the file before anything is appended (never replayed);
* a batch's line also records how long the rejects and failures files were
  once its lines were in them, so a resume cuts them back to exactly the
  batches the checkpoint holds: no report line lost or repeated;
* the header holds the input's identity (size and digests of its first and
  last 64 KiB, or the S3 ETag), checked on resume; after a truncated input the
  whole file is accepted if it starts with the bytes the run read;
* a manifest run records each object read to its end (its ordinal and URI, where
  the batch cut stood when it began and ended, its positions): a resume does not
  read again an object whose batches are all finished (no GET), and stands where
  it left the cut; a checkpoint without these lines re-reads every object;
* `lock` holds an exclusive `flock` on `<checkpoint>.lock` (or a folder's
  `.importer.lock`) for the run: a second live run on it is refused, and the
  kernel drops the lock with the process, so a killed run leaves none behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from importer.counts import BATCH_COUNTS, Counts

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "RunLock",
    "default_checkpoint_path",
    "spec_digest",
]


class CheckpointError(ValueError):
    """The checkpoint cannot be used to resume this run."""


#: The first five of a batch line's counts (`BATCH_COUNTS`) are in every checkpoint; an
#: older one may lack the rest (they are 0).
_REQUIRED = frozenset(BATCH_COUNTS[:5])


def _batch_counts(raw: dict[str, Any]) -> Counts:
    """A batch line's counts; a key this format never had, or a missing one, is damage."""
    if not isinstance(raw, dict) or not _REQUIRED <= raw.keys() <= set(BATCH_COUNTS):
        raise ValueError("not a batch's counts")
    if not all(type(v) is int for v in raw.values()):
        raise ValueError("not a batch's counts")
    return Counts(**raw)


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
    finished: dict[int, Counts] = field(default_factory=dict)
    #: batches recorded by this process (counted, not kept: memory stays flat)
    recorded: int = 0
    complete: bool = False
    _fh: IO[str] | None = None

    #: bytes of the file that hold whole lines (what `reopen` keeps)
    valid_bytes: int = 0
    #: rejects / failures file sizes after the last batch the checkpoint holds (None:
    #: no batch recorded them -- none finished, or a checkpoint from before they were)
    reports_at: tuple[int, int] | None = None
    #: the input ended early (truncated): a resume accepts the whole file
    truncated: bool = False
    #: a manifest's objects read to their end, by ordinal: where each began and ended
    #: in the cut (`ManifestReader.read_batches`), so a resume skips the finished ones
    objects: dict[int, dict[str, Any]] = field(default_factory=dict)

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
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"no checkpoint to resume at {path}") from None
        except IsADirectoryError:
            raise CheckpointError(f"checkpoint {path} is a directory, not a file") from None
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
        if not data.strip():
            raise CheckpointError(f"checkpoint {path} is empty")
        not_ours = CheckpointError(
            f"checkpoint {path} is not an importer checkpoint (unreadable or damaged); "
            "move it away to start over, or give another --checkpoint"
        )
        lines = data.split(b"\n")
        try:
            meta = json.loads(lines[0].decode("utf-8"))["run"]
            if not isinstance(meta, dict) or not isinstance(meta.get("run_id"), str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise not_ours from None
        cp = cls(path=path, meta=meta)
        offset = len(lines[0]) + 1
        cp.valid_bytes = offset
        last = len(lines) - 1  # the text after the last newline: "" or a cut line
        for number, raw in enumerate(lines[1:], start=2):
            if number - 1 == last:
                break  # no newline: a line cut short by a kill (dropped, cut off on reopen)
            try:
                cp._apply(json.loads(raw.decode("utf-8")))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise CheckpointError(
                    f"checkpoint {path} is damaged at line {number}; "
                    "move it away to start over, or give another --checkpoint"
                ) from None
            offset += len(raw) + 1
            cp.valid_bytes = offset
        return cp

    def _apply(self, rec: dict[str, Any]) -> None:
        if rec.get("complete"):
            self.complete = True
        elif "batch" in rec:
            self.finished[int(rec["batch"])] = _batch_counts(rec["counts"])
            if "reports_at" in rec:
                rejects_at, failures_at = rec["reports_at"]
                self.reports_at = (int(rejects_at), int(failures_at))
        elif "object" in rec:
            self.objects[int(rec["object"])] = _object_record(rec)
        elif "truncated" in rec:
            self.truncated = True
        elif "input" in rec:
            self.meta["input"] = rec["input"]
            self.truncated = False
        else:
            raise ValueError("unknown record")

    def check_matches(self, meta: dict[str, Any]) -> None:
        for key in _IDENTITY:
            if self.meta.get(key) != meta.get(key):
                raise CheckpointError(
                    f"cannot resume: the checkpoint was made with {key} = "
                    f"{self.meta.get(key)!r}, this run has {meta.get(key)!r}"
                )
        if self.complete:
            raise CheckpointError(f"cannot resume: run {self.meta.get('run_id')} already completed")

    def check_input(self, stream: Any) -> bool:
        """Refuse to resume with another file than the one checkpointed.

        True when the checkpointed input was truncated and `stream` is that
        file made whole (it starts with the bytes the run read): the caller
        records the new identity.
        """
        old = self.meta.get("input")
        new = stream.identity
        if not old or not new:
            return False  # a checkpoint from before inputs were identified
        if old == new:
            return False  # the same file (still truncated, if it was: it will say so again)
        source = self.meta.get("source")
        refused = CheckpointError(
            f"cannot resume: {source} is not the file the checkpoint was made from "
            f"({_describe(old)}; now {_describe(new)}); rows would be lost or doubled. "
            "Run without --resume to import it from the start"
        )
        if "etag" in old or "etag" in new:
            if old.get("etag") == new.get("etag") and old.get("size") == new.get("size"):
                return False
            if self.truncated and new.get("size", 0) > old.get("size", 0):
                return True
            raise refused
        if not self.truncated:
            if old == new:
                return False
            raise refused
        if new["size"] <= old["size"]:
            raise refused
        same = (
            stream.digest(0, old["head_len"]) == old["head"]
            and stream.digest(old["tail_at"], old["size"] - old["tail_at"]) == old["tail"]
        )
        if not same:
            raise refused
        return True

    def reopen(self, input_identity: dict[str, Any] | None = None) -> None:
        """Append from the last whole line (a line cut by a kill is cut off first)."""
        with open(self.path, "r+b") as fh:
            fh.truncate(self.valid_bytes)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        if input_identity is not None:
            self._line({"input": input_identity})
            self.meta["input"] = input_identity
            self.truncated = False

    def _line(self, rec: dict[str, Any]) -> None:
        assert self._fh is not None
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()

    def record(self, index: int, counts: Counts, reports_at: tuple[int, int] | None = None) -> None:
        self.recorded += 1
        rec: dict[str, Any] = {"batch": index, "counts": counts.counts_json(BATCH_COUNTS)}
        if reports_at is not None:
            rec["reports_at"] = list(reports_at)
        self._line(rec)

    def record_object(self, rec: dict[str, Any]) -> None:
        """A manifest object read to its end (its batches may still be in flight)."""
        self._line(rec)

    def mark_truncated(self) -> None:
        """The input ended early: a resume will accept the file made whole."""
        self._line({"truncated": True})

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


def _object_record(rec: dict[str, Any]) -> dict[str, Any]:
    """A manifest object's line, checked: anything else is damage."""
    cut = ("batch", "rows", "bytes", "rejects")
    for key in ("start", "end"):
        if not isinstance(rec[key], dict) or any(type(rec[key][c]) is not int for c in cut):
            raise ValueError("not an object's record")
    if not isinstance(rec["uri"], str) or type(rec["from"]) is not int:
        raise ValueError("not an object's record")
    if type(rec["next"]) is not int:
        raise ValueError("not an object's record")
    return rec


def _describe(identity: dict[str, Any]) -> str:
    if "etag" in identity:
        return f"ETag {identity.get('etag')}, {identity.get('size')} bytes"
    return f"{identity.get('size'):,} bytes, starting {identity.get('head', '')[:12]}"


class RunLock:
    """An exclusive lock on a checkpoint or output folder while a run uses it."""

    def __init__(self) -> None:
        self._held: list[tuple[Path, int]] = []

    def take(self, lock_path: Path, what: str) -> None:
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot lock the {what}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            by = f" (pid {holder})" if holder.isdigit() else ""
            raise CheckpointError(
                f"{what} is in use by another run{by}: wait for it to finish, "
                "or give this run another one"
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._held.append((lock_path, fd))

    def release(self) -> None:
        for _path, fd in self._held:
            try:
                os.close(fd)  # closing drops the flock
            except OSError:
                pass
        self._held.clear()
