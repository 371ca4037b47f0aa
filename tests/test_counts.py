"""One counts type (`importer.counts.Counts`): a batch, a file, a job and a sync add up
the same way, the exit rule reads it, and the files that keep counts keep their formats."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from importer.cli.exit_codes import EXIT_OK, EXIT_PARTIAL, exit_code
from importer.counts import COUNT_NAMES, Counts
from importer.mbc.import_job import file_outcome
from importer.mbc.sync import SyncResult
from importer.records import Failure
from importer.run.checkpoint import BATCH_COUNTS, Checkpoint, CheckpointError
from importer.run.driver import Summary
from importer.run.job import FileState, JobState


def test_counts_add_and_balance():
    a = Counts(rows=5, written=3, rejected=1, existing=1, failed=1, valid=4)
    b = Counts(rows=4, written=1, skipped=3)
    total = a + b
    assert (total.rows, total.written, total.skipped, total.failed) == (9, 4, 3, 1)
    assert total.balanced and Counts.total([a, b]) == total
    a.add(b)
    assert a == total
    with pytest.raises(AssertionError, match="rows 2 != settled 1"):
        Counts(rows=2, written=1).check()


def test_a_summary_is_counts_and_keeps_its_json_keys_in_order():
    summary = Summary(rows=3, written=2, rejected=1, run_id="r")
    assert isinstance(summary, Counts) and summary.counts() == Counts(rows=3, written=2, rejected=1)
    keys = list(summary.to_json())
    # the summary JSON's historical order: the counts did not move to the front
    assert (
        ",".join(keys[:8]) == "rows,written,rejected,failed,batches,seconds,rows_per_second,valid"
    )
    assert set(keys) == {f.name for f in fields(Summary)} and keys[-4:] == [
        "skipped",
        "ttl",
        "objects",
        "objects_read",
    ]


@pytest.mark.parametrize(
    "counts, code",
    [
        (Counts(rows=2, written=2), EXIT_OK),
        (Counts(rows=2, written=1, rejected=1, existing=1), EXIT_OK),  # a re-run meets it
        (Counts(rows=2, written=1, rejected=1, bad_data=1), EXIT_PARTIAL),
        (Counts(rows=2, written=1, failed=1), EXIT_PARTIAL),
    ],
)
def test_the_exit_rule_and_the_import_job_status_read_the_same_counts(counts, code):
    assert exit_code(counts) == code
    summary = {**counts.counts_json(), "status": "finished"}
    assert file_outcome(summary) == ("COMPLETED" if code == EXIT_OK else "FAILED")


def test_a_sync_with_unapplied_commands_needs_a_look():
    result = SyncResult(commands_seen=3, applied=2)
    assert exit_code(result.counts()) == EXIT_OK
    result.handler_failures.append(Failure(1, "T#1", "P@1", "handler: boom"))
    assert exit_code(result.counts()) == EXIT_PARTIAL


def _file(index: int, summary: dict, status: str = "finished") -> FileState:
    return FileState(
        index, f"f{index}.csv", f"f{index}.csv", "s.toml", "T", f"r-{index}", "c", "r", "f",
        status=status, summary=summary,
    )  # fmt: skip


def test_a_jobs_counts_add_up_across_its_files_with_a_halted_one():
    """A file halted over --max-rejects has rows that were read and skipped: the job's
    totals used to leave `skipped` out, and its rows did not add up."""
    clean = Summary(rows=4, written=4, valid=4, status="finished")
    halted = Summary(rows=10, written=2, rejected=2, bad_data=2, skipped=6, status="finished")
    halted.aborted = "stopped after 2 rows of bad data (limit 1)"
    job = JobState(
        id="j",
        run_id="r",
        sources=["in"],
        spec="s.toml",
        table="T",
        created=0.0,
        files=[_file(0, clean.to_json()), _file(1, halted.to_json(), "failed")],
    )
    totals = job.totals()
    assert totals["rows"] == 14 and totals["skipped"] == 6
    settled = sum(totals[k] for k in ("written", "would_write", "unchanged", "rejected"))
    assert totals["rows"] == settled + totals["failed"] + totals["skipped"]
    assert job.counts().balanced and job.counts().needs_look
    # the import-job record: what the table holds as the files say, and every other row
    from importer.mbc.import_job import _job_counts

    assert _job_counts(job) == {
        "totalRows": 14,
        "processedRows": 14,
        "succeededRows": 6,
        "failedRows": 8,
    }


def test_the_checkpoint_line_keeps_its_format_and_an_old_one_resumes(tmp_path: Path):
    path = tmp_path / "cp.jsonl"
    cp = Checkpoint.start(path, {"run_id": "r"})
    cp.record(0, Counts(rows=3, written=2, rejected=1, valid=3, existing=1), (10, 0))
    cp.close()
    line = json.loads(path.read_text().splitlines()[1])
    assert list(line["counts"]) == list(BATCH_COUNTS)  # no skipped, no would_write
    assert set(BATCH_COUNTS) <= set(COUNT_NAMES)
    # a checkpoint from before unchanged/existing/bad_data/synced were recorded
    old = tmp_path / "old.jsonl"
    batch = {
        "batch": 0,
        "counts": {"rows": 2, "written": 2, "rejected": 0, "failed": 0, "valid": 2},
    }
    old.write_text(json.dumps({"run": {"run_id": "r"}}) + "\n" + json.dumps(batch) + "\n")
    assert Checkpoint.load(old).finished[0] == Counts(rows=2, written=2, valid=2)
    # a key no checkpoint ever had is damage, said in one line
    batch["counts"]["skipped"] = 1
    old.write_text(json.dumps({"run": {"run_id": "r"}}) + "\n" + json.dumps(batch) + "\n")
    with pytest.raises(CheckpointError, match="damaged at line 2"):
        Checkpoint.load(old)
