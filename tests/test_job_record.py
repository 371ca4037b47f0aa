"""The import-job record's writes, with an injected clock; the task iterator's refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3

from importer.aws.task_machine import TaskEnv, handle_event
from importer.mbc.import_job import ImportJobRecorder, new_ulid, open_recorder
from importer.run.job import FileState, JobState
from importer.run.job_files import expand_sources
from tests.conftest import KEY_SCHEMA


class Calls:
    """A DynamoDB client that records what it is asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def put_item(self, **kw: Any) -> None:
        self.calls.append(("put", kw))

    def update_item(self, **kw: Any) -> None:
        self.calls.append(("update", kw))

    def updates(self) -> list[dict[str, Any]]:
        return [
            {k.lstrip(":"): v for k, v in kw["ExpressionAttributeValues"].items()}
            for op, kw in self.calls
            if op == "update"
        ]


def a_job(tmp_path: Path, n: int = 2) -> JobState:
    files = [
        FileState(
            i,
            f"f{i}.csv",
            f"f{i}.csv",
            "s.toml",
            "dev-app-master-command",
            f"r-{i + 1}",
            "c",
            "r",
            "f",
        )
        for i in range(n)
    ]
    return JobState(
        "j",
        "r",
        ["in/"],
        "s.toml",
        "dev-app-master-command",
        0.0,
        files,
        path=tmp_path / "job.json",
    )


def test_a_running_file_s_counters_are_written_every_two_seconds_of_the_clock(tmp_path):
    clock = [100.0]
    client = Calls()
    rec = ImportJobRecorder(
        client, "T", tenant="acme", now=lambda: 1.7e9, monotonic=lambda: clock[0]
    )
    job = a_job(tmp_path)
    rec.job_started(job)
    puts = [kw["Item"] for op, kw in client.calls if op == "put"]
    assert [p["type"]["S"] for p in puts] == ["ZIP_MASTER_JOB", "CSV_MASTER_JOB", "CSV_MASTER_JOB"]
    assert [u["status"]["S"] for u in client.updates()] == ["QUEUED"] * 3 + ["PROCESSING"]
    assert json.loads((tmp_path / "job.json").read_text())["record"]["pk"] == "ZIP_IMPORT#acme"
    f = job.files[0]
    rec.file_started(job, f)
    before = len(client.calls)
    rec.file_progress(job, f, 10)  # 0 s later: nothing
    clock[0] += 1.9
    rec.file_progress(job, f, 20)  # 1.9 s: nothing
    assert len(client.calls) == before
    clock[0] += 0.2
    rec.file_progress(job, f, 30)  # 2.1 s: written
    assert client.updates()[-1]["processedRows"] == {"N": "30"}
    f.status, f.summary = (
        "finished",
        {
            "status": "finished",
            "rows": 30,
            "written": 28,
            "rejected": 2,
            "existing": 2,
            "failed": 0,
        },
    )
    rec.file_finished(job, f)
    child, parent = client.updates()[-2:]
    assert child["status"] == {"S": "COMPLETED"}  # rows already stored need no look
    assert child["succeededRows"] == {"N": "30"} and child["failedRows"] == {"N": "0"}
    assert parent["totalRows"] == {"N": "30"}


def test_ulids_sort_by_time_and_are_26_crockford_characters():
    a = new_ulid(1_700_000_000.0, rand=lambda bits: 0)
    b = new_ulid(1_700_000_000.001, rand=lambda bits: (1 << bits) - 1)
    assert len(a) == len(b) == 26 and a < b
    assert set(a + b) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    assert a.startswith("01HF")  # 2023-11-14, as the ulid package spells it


def test_the_record_is_off_without_the_table_and_one_line_when_it_cannot_be_read(aws):
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    rec, note = open_recorder("dev-app-master-command", tenant_template="acme", client=ddb)
    assert rec is None and note == "import-job record: off (no table dev-app-import_tmp)"
    ddb.create_table(TableName="dev-app-import_tmp", **KEY_SCHEMA)
    rec, note = open_recorder("dev-app-master-command", tenant_template="{t}", client=ddb)
    assert rec is not None and rec.tenant == "single" and note.endswith("dev-app-import_tmp")
    assert open_recorder("x-command", tenant_template="a", table="")[0] is None


def test_globs_and_s3_globs_expand_in_name_order(aws, tmp_path):
    for name in ("b-2.csv", "a-10.csv", "a-9.csv", "skip.txt"):
        (tmp_path / name).write_text("x\n")
    got = expand_sources([str(tmp_path / "*.csv")], work_dir=tmp_path / "w")
    assert [Path(s).name for s, _ in got] == ["a-10.csv", "a-9.csv", "b-2.csv"]
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="bkt")
    for key in ("p/2.csv", "p/1.csv", "p/x.txt", "q/1.csv"):
        s3.put_object(Bucket="bkt", Key=key, Body=b"x\n")
    got = expand_sources(["s3://bkt/p/*.csv"], work_dir=tmp_path / "w", s3_client=s3)
    assert [s for s, _ in got] == ["s3://bkt/p/1.csv", "s3://bkt/p/2.csv"]


class FakeSfn:
    def __init__(self) -> None:
        self.resumed: list[tuple[str, Any]] = []

    def start_execution(self, **kw: Any) -> dict[str, Any]:
        raise AssertionError("no import starts for a sub-task without a file")

    def send_task_success(self, taskToken: str, output: str) -> None:
        self.resumed.append((taskToken, json.loads(output)))


def test_a_sub_task_without_a_file_fails_alone_and_resumes_its_iteration(aws):
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    ddb.create_table(TableName="tasks", **KEY_SCHEMA)
    sent: list[dict[str, Any]] = []
    sfn = FakeSfn()

    class Env(TaskEnv):
        def notify(self, message: dict[str, Any]) -> None:
            sent.append(message)

    env = Env(ddb=ddb, sfn=sfn, tasks_table="tasks")
    event = {
        "context": {"StateMachine": {"Name": "dev-app-sfn-task-handler"}},
        "input": {"pk": "SFN_TASK#acme", "sk": "import-files#01X#0", "input": {"key": "k"}},
        "taskToken": "tok",
    }
    assert handle_event(event, env) == [[None]]
    [(token, output)] = sfn.resumed
    assert token == "tok"
    [[result]] = output["Payload"]
    assert result["importJobStatus"] == "FAILED" and "must name the file" in result["error"]
    item = ddb.get_item(
        TableName="tasks", Key={"pk": {"S": "SFN_TASK#acme"}, "sk": {"S": "import-files#01X#0"}}
    )["Item"]
    assert item["status"]["S"] == "FAILED"
    assert [m["action"] for m in sent] == ["sub-task-status"]
