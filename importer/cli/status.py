"""`importer status JOB`: a job's files, their state and counts, and where the rejects are.

JOB is a local job (its folder, its `job.json`, or its id under
`.importer/jobs/`) or a task state machine execution ARN.  For an execution,
the sub-tasks are its input (the framework starts the task machine with the
sub-task array); each sub-task's record in the tasks table (`--tasks-table`)
gives its status and result, as the framework's console shows them; without
the table, the execution's output (the iterators' results) does once it ended.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["register", "local_status", "execution_status"]

_COUNTS = ("rows", "written", "unchanged", "rejected", "existing", "failed")


def local_status(ref: str) -> dict[str, Any]:
    from importer.mbc.import_job import file_outcome
    from importer.run.job import JobError, checkpoint_rows, load_job

    path = Path(ref)
    if not path.exists() and "/" not in ref:
        path = Path(".importer") / "jobs" / ref
    if not path.exists():
        raise JobError(f"no job {ref} (a job folder, its job.json, or an id under .importer/jobs)")
    job = load_job(path)
    files = []
    for f in job.files:
        s = f.summary or {}
        counts = {k: int(s.get(k, 0)) for k in _COUNTS}
        if f.status == "running":
            counts["rows"] = checkpoint_rows(f)
        files.append(
            {
                "name": f.name,
                "status": f.status,
                "outcome": file_outcome(s) if f.status == "finished" else None,
                **counts,
                "rejects_file": s.get("rejects_file"),
                "failures_file": s.get("failures_file"),
                "error": f.error,
                "record": f.record or None,
            }
        )
    totals = job.totals()
    return {
        "job": job.id,
        "status": job.status,
        "record": job.record or None,
        **{k: totals[k] for k in _COUNTS},
        "files": files,
    }


def execution_status(
    arn: str, *, sfn: Any, ddb: Any = None, tasks_table: str | None = None
) -> dict[str, Any]:
    from importer.mbc.import_job import from_item

    desc = sfn.describe_execution(executionArn=arn)
    subtasks = json.loads(desc.get("input") or "[]")
    if not isinstance(subtasks, list):
        raise ValueError(f"{arn}: not a task state machine execution (its input is no array)")
    outputs: list[Any] = []
    if desc.get("status") == "SUCCEEDED" and desc.get("output"):
        out = json.loads(desc["output"])
        outputs = out if isinstance(out, list) else []
    files = []
    for i, sub in enumerate(subtasks):
        sub = sub if isinstance(sub, dict) else {}
        raw = sub.get("input")
        given: dict[str, Any] = raw if isinstance(raw, dict) else {}
        name = f"s3://{given.get('bucket', '?')}/{given.get('key', '?')}"
        status = sub.get("status", "CREATED")
        result: dict[str, Any] = {}
        if tasks_table and ddb is not None and sub.get("pk"):
            got = ddb.get_item(
                TableName=tasks_table,
                Key={"pk": {"S": sub["pk"]}, "sk": {"S": sub["sk"]}},
                ConsistentRead=True,
            ).get("Item")
            if got:
                record = from_item(got)
                status = record.get("status", status)
                attrs = record.get("attributes") or {}
                result = attrs.get("result") or {}
        elif i < len(outputs) and isinstance(outputs[i], dict):
            result = outputs[i]
            status = result.get("status", status)
        files.append(
            {
                "name": name,
                "status": status,
                **{k: int(result.get(k, 0) or 0) for k in _COUNTS},
                "rejects_file": result.get("rejects"),
                "execution": result.get("executionArn"),
                "error": result.get("error"),
            }
        )
    return {
        "job": arn,
        "status": desc.get("status"),
        **{k: sum(f[k] for f in files) for k in _COUNTS},
        "files": files,
    }


def _print(doc: dict[str, Any]) -> None:
    print(
        f"job {doc['job']}: {doc['status']}  rows {doc['rows']:,}  written {doc['written']:,}  "
        f"rejected {doc['rejected']:,}  failed {doc['failed']:,}"
    )
    for i, f in enumerate(doc["files"], start=1):
        state = f["status"] + (f" {f['outcome']}" if f.get("outcome") else "")
        line = (
            f"  [{i}] {f['name']}  {state}  rows {f['rows']:,}  written {f['written']:,}  "
            f"rejected {f['rejected']:,}  failed {f['failed']:,}"
        )
        if f.get("rejects_file"):
            line += f"  rejects: {f['rejects_file']}"
        if f.get("error"):
            line += f"  ({f['error']})"
        print(line)


def _cmd_status(args: argparse.Namespace) -> int:
    if args.job.startswith("arn:"):
        import boto3

        from importer.dynamodb.region import default_region

        region = args.region or (args.job.split(":")[3] if args.job.count(":") > 3 else None)
        region = default_region(region)
        sfn = boto3.client("stepfunctions", region_name=region)
        ddb = (
            boto3.client("dynamodb", region_name=region, endpoint_url=args.endpoint_url)
            if args.tasks_table
            else None
        )
        doc = execution_status(args.job, sfn=sfn, ddb=ddb, tasks_table=args.tasks_table)
    else:
        doc = local_status(args.job)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print(doc)
    return 0


def register(subparsers: Any) -> None:
    """Add ``importer status`` to the CLI."""
    p = subparsers.add_parser(
        "status", help="a job's files: state, rows, written, rejected, failed, rejects"
    )
    p.add_argument(
        "job", metavar="JOB", help="a local job (folder, job.json or id), or an execution ARN"
    )
    p.add_argument(
        "--tasks-table",
        metavar="NAME",
        help="for an execution ARN: the MBC tasks table holding its sub-tasks",
    )
    p.add_argument("--region", default=None, help="AWS region (default: the ARN's)")
    p.add_argument("--endpoint-url", default=None, metavar="URL", help="DynamoDB endpoint")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=_cmd_status)
