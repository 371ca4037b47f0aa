"""What a run reports, in one format wherever it runs: rejects, failures, results.

* rejects: `line,column,value,reason` then the original row's fields -- every
  kind of reject (bad data, duplicate, exists, conflict) in that one shape;
* failures: `line,pk,sk,reason` then the original row's fields -- rows DynamoDB
  refused after every retry (re-importable from the file, as rejects are);
* ResultWriter-style `manifest.json` + `SUCCEEDED_0.json` / `FAILED_0.json`.

The local driver streams them into files as batches settle; the Lambda child
renders one batch's worth with the same functions (`rejects_csv`,
`failures_csv`) and stores it beside the other children's.  `line` is the
physical line of the file locally; in the Lambda, where ItemReader hands over
rows without positions, it is the row's 1-based position in its batch.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from importer.records import Failure, Reject

if TYPE_CHECKING:
    from importer.run.batch_steps import BatchOutcome

__all__ = [
    "FAILURE_COLUMNS",
    "CsvReport",
    "ResultWriter",
    "failure_columns",
    "failure_fields",
    "failures_csv",
    "probe_folder",
    "probe_writable",
    "reject_fields",
    "rejects_columns",
    "rejects_csv",
]

FAILURE_COLUMNS = ["line", "pk", "sk", "reason"]


def rejects_columns(header: Sequence[str]) -> list[str]:
    return ["line", "column", "value", "reason", *header]


def reject_fields(r: Reject) -> list[Any]:
    return [r.line, r.column, r.value, r.reason, *r.row]


def failure_columns(header: Sequence[str]) -> list[str]:
    """`line,pk,sk,reason` then the row's columns: a failed row can be imported again."""
    return [*FAILURE_COLUMNS, *header]


def failure_fields(f: Failure) -> list[Any]:
    return [f.line, f.pk, f.sk, f.reason, *f.row]


def _csv(columns: list[str], rows: Iterable[list[Any]]) -> bytes:
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(columns)
    out.writerows(rows)
    return buf.getvalue().encode("utf-8", "surrogatepass")


def rejects_csv(rejects: Sequence[Reject], header: Sequence[str]) -> bytes:
    """One batch's rejects file (the Lambda child's)."""
    return _csv(rejects_columns(header), (reject_fields(r) for r in rejects))


def failures_csv(failures: Sequence[Failure], header: Sequence[str] = ()) -> bytes:
    return _csv(failure_columns(header), (failure_fields(f) for f in failures))


def probe_writable(path: Path, what: str) -> None:
    """Fail now, naming `path`, if `what` could not be written there later.

    Opens it for appending (creating its folders and, for the probe only, the
    file), so a bad path stops the run before the first row instead of after
    the import ("[Errno 2]" once the whole file was written).
    """
    existed = path.exists()
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "is a directory", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write the {what} {path}: {exc.strerror}") from None
    if not existed:
        path.unlink(missing_ok=True)  # no empty files for clean runs


def probe_folder(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".importer-probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write the {what} {folder}: {exc.strerror}") from None


class CsvReport:
    """A CSV report opened on first use (no empty files for clean runs).

    `keep`: a resumed run's file is cut back to the bytes its checkpoint counted
    (`Checkpoint.reports_at`) and appended to -- lines of batches that were
    written but not checkpointed before an interrupt are dropped, and written
    again when those batches are; None starts a new file.
    """

    def __init__(self, path: Path | None, columns: list[str], keep: int | None = None) -> None:
        self.path = path
        self.columns = columns
        self.append = bool(keep) and path is not None and path.exists()
        self._keep = keep or 0
        self._fh: IO[str] | None = None
        self._writer: Any = None

    def write(self, row: list[Any]) -> None:
        if self.path is None:
            return
        try:
            if self._fh is None:
                self._open()
            self._writer.writerow(row)
        except OSError as exc:
            raise self._error(exc) from None

    def _open(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.append:
            with open(self.path, "r+b") as fh:
                fh.truncate(self._keep)
        mode = "a" if self.append else "w"
        self._fh = open(self.path, mode, newline="", encoding="utf-8", errors="surrogatepass")  # noqa: SIM115
        self._writer = csv.writer(self._fh)
        if not self.append:
            self._writer.writerow(self.columns)

    def _error(self, exc: OSError) -> OSError:
        """The error naming the file (`[Errno 27] File too large` named none)."""
        return OSError(exc.errno, f"cannot write {self.path}: {exc.strerror or exc}")

    def settle(self) -> None:
        """Before a batch is checkpointed: its lines are in the file (opened, if the
        resumed file is to be cut back)."""
        if self.path is not None and self._fh is None and self.append:
            try:
                self._open()
            except OSError as exc:
                raise self._error(exc) from None

    @property
    def used(self) -> bool:
        return self._fh is not None or self.append

    def flush(self) -> None:
        if self._fh is not None:
            try:
                self._fh.flush()
            except OSError as exc:
                raise self._error(exc) from None

    def size(self) -> int:
        """Bytes in the file so far (after `flush`): what a checkpoint records."""
        if self._fh is not None:
            return os.fstat(self._fh.fileno()).st_size
        return self._keep if self.append else 0

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass  # the write that failed has raised already


class ResultWriter:
    """ResultWriter-style output: manifest.json plus SUCCEEDED_0.json / FAILED_0.json.

    Entries are streamed into JSON arrays as batches settle, so memory does not
    grow with the number of batches.  A batch is FAILED by
    `BatchOutcome.failed_batch`, the rule the Lambda child raises on.
    """

    def __init__(self, folder: Path, run_id: str) -> None:
        self.folder = folder
        self.run_id = run_id
        folder.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[str]] = {}
        self._counts: dict[str, int] = {"SUCCEEDED": 0, "FAILED": 0}

    def add(self, outcome: BatchOutcome) -> None:
        status = "FAILED" if outcome.failed_batch else "SUCCEEDED"
        fh = self._files.get(status)
        if fh is None:
            fh = open(self.folder / f"{status}_0.json", "w", encoding="utf-8")  # noqa: SIM115
            fh.write("[")
            self._files[status] = fh
        entry: dict[str, Any] = {
            "Name": f"{self.run_id}-batch-{outcome.index}",
            "Status": status,
            "InputDetails": {"Included": False},
        }
        counts = asdict(outcome.counts())
        if status == "FAILED":
            entry["Error"] = "BatchFailed"
            entry["Cause"] = json.dumps(counts)
        else:
            entry["Output"] = json.dumps(counts)
        fh.write(("," if self._counts[status] else "") + json.dumps(entry))
        self._counts[status] += 1

    def close(self, summary: dict[str, Any]) -> None:
        files: dict[str, list[dict[str, Any]]] = {"SUCCEEDED": [], "FAILED": [], "PENDING": []}
        for status, fh in self._files.items():
            fh.write("]")
            fh.close()
            path = self.folder / f"{status}_0.json"
            files[status].append({"Key": path.name, "Size": path.stat().st_size})
        manifest = {
            "DestinationBucket": None,
            "MapRunArn": f"local:import-csv:{self.run_id}",
            "ResultFiles": files,
            "Summary": summary,
        }
        (self.folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
