"""The Lambdas of the task state machine: a multi-file import as an MBC step-function task.

One function (`lambda_handler`) serves three event sources, as the framework's
single Lambda does:

* **the iterator** (a Step Functions callback task of the task machine):
  the sub-task goes PROCESSING (`updateSubTaskStatus`), and the import-csv
  machine is started for its file with the task token in its input; the
  Lambda returns at once.  Refused unless the machine's name contains
  ``sfn-task``, the framework's routing rule.
* **the end of an import** (EventBridge "Step Functions Execution Status
  Change" of the import-csv machine): the file's counts are read from the
  Map's ResultWriter files (a failed batch counts all its rows failed, as
  ``finalize_parent_job`` does), the sub-task goes COMPLETED or FAILED with
  ``{result}``, and the iteration is resumed with SendTaskSuccess -- also for a
  failed import, with ``importJobStatus: FAILED`` (the framework's ZIP
  orchestrator's "option B"), so one file's failure never stops the others.
* **the sub-task-status queue**: the parent's counters and status, exactly
  `SubTaskQueueEventHandler` (`importer.mbc.tasks.TaskStore.aggregate`).

`task_action_handler` is the task-action queue's consumer
(`handleStepFunctionTask`): for an `SFN_TASK` record (the framework's
`task-execute` message, or `{"action": "import-files", "tenantCode", "input":
[{bucket, key, ...}, ...]}` which creates the record first) it creates the
sub-tasks, sets the parent's counters and starts the task machine.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from importer.counts import Counts
from importer.mbc.import_job import file_outcome, from_item
from importer.mbc.tasks import (
    FAILED,
    PROCESSING,
    QUEUED,
    TaskStore,
    execution_name,
)

__all__ = [
    "TaskEnv",
    "handle_event",
    "import_result",
    "lambda_handler",
    "task_action_handler",
    "handle_task_action",
]

STATUS_CHANGE = "Step Functions Execution Status Change"
_COUNTS = ("rows", "written", "unchanged", "rejected", "existing", "failed")


class TaskEnv:
    """The clients and names the handlers use (from the environment in Lambda; given in tests)."""

    def __init__(
        self,
        *,
        ddb: Any,
        sfn: Any,
        s3: Any = None,
        sqs: Any = None,
        sns: Any = None,
        tasks_table: str,
        import_machine_arn: str = "",
        task_machine_arn: str = "",
        sub_task_queue_url: str = "",
        topic_arn: str = "",
        now: Callable[[], float] = time.time,
    ) -> None:
        self.ddb, self.sfn, self.s3, self.sqs, self.sns = ddb, sfn, s3, sqs, sns
        self.tasks_table = tasks_table
        self.import_machine_arn = import_machine_arn
        self.task_machine_arn = task_machine_arn
        self.sub_task_queue_url = sub_task_queue_url
        self.topic_arn = topic_arn
        self.now = now

    @classmethod
    def from_environment(cls) -> TaskEnv:
        import boto3

        return cls(
            ddb=boto3.client("dynamodb"),
            sfn=boto3.client("stepfunctions"),
            s3=boto3.client("s3"),
            sqs=boto3.client("sqs"),
            sns=boto3.client("sns") if os.environ.get("SNS_TOPIC_ARN") else None,
            tasks_table=os.environ["TASKS_TABLE"],
            import_machine_arn=os.environ.get("IMPORT_STATE_MACHINE_ARN", ""),
            task_machine_arn=os.environ.get("SFN_TASK_ARN", ""),
            sub_task_queue_url=os.environ.get("SUB_TASK_STATUS_QUEUE_URL", ""),
            topic_arn=os.environ.get("SNS_TOPIC_ARN", ""),
        )

    def notify(self, message: dict[str, Any]) -> None:
        """SNS (the application's notifications) when a topic is given; a `sub-task-status`
        also goes to this stack's sub-task-status queue, which aggregates it."""
        body = json.dumps(message, default=str)
        if self.sns is not None and self.topic_arn:
            self.sns.publish(
                TopicArn=self.topic_arn,
                Message=body,
                MessageAttributes={
                    "action": {"DataType": "String", "StringValue": message["action"]}
                },
            )
        if message["action"] == "sub-task-status" and self.sub_task_queue_url:
            self.sqs.send_message(QueueUrl=self.sub_task_queue_url, MessageBody=body)

    def store(self) -> TaskStore:
        return TaskStore(self.ddb, self.tasks_table, notify=self.notify, now=self.now)


def _resume(env: TaskEnv, token: str, result: dict[str, Any]) -> None:
    """SendTaskSuccess in the shape `OutputPath $.Payload[0][0]` unwraps."""
    try:
        env.sfn.send_task_success(
            taskToken=token, output=json.dumps({"Payload": [[result]]}, default=str)
        )
    except Exception as exc:  # noqa: BLE001 - the execution timed out or was stopped
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        if code not in ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist"):
            raise
        print(f"importer: the task execution no longer waits for this file ({code})")


# ------------------------------------------------------------------------ iterator
def _iterate(event: dict[str, Any], env: TaskEnv) -> Any:
    name = ((event.get("context") or {}).get("StateMachine") or {}).get("Name", "")
    if "sfn-task" not in name:
        raise ValueError(
            f"state machine {name!r}: the framework routes task iterations only from a machine "
            "whose name contains 'sfn-task'"
        )
    sub = event.get("input") or {}
    token = event.get("taskToken")
    if not token or not isinstance(sub, dict) or not sub.get("pk") or not sub.get("sk"):
        raise ValueError("iterator event needs input {pk, sk, input} and taskToken")
    key = {"pk": sub["pk"], "sk": sub["sk"]}
    store = env.store()
    given = sub.get("input")
    file_input: dict[str, Any] = given if isinstance(given, dict) else {}
    try:
        if not file_input.get("bucket") or not file_input.get("key"):
            raise ValueError("a sub-task's input must name the file: {bucket, key, ...}")
        store.update_sub_task(key, PROCESSING)
        started = env.sfn.start_execution(
            stateMachineArn=env.import_machine_arn,
            name=f"task-{sub.get('code') or sub['sk'].rsplit('#', 1)[-1]}"[:80],
            input=json.dumps(
                {**file_input, "taskToken": token, "subTask": key, "tasksTable": env.tasks_table}
            ),
        )
        store.update_sub_task(key, PROCESSING, {"executionArn": started["executionArn"]})
    except Exception as exc:  # noqa: BLE001 - as TaskSfnEventHandler: never fail the Map
        result = {
            "status": FAILED,
            "importJobStatus": FAILED,
            "file": f"s3://{file_input.get('bucket')}/{file_input.get('key')}",
            "error": f"{type(exc).__name__}: {exc}",
            **dict.fromkeys(_COUNTS, 0),
        }
        store.update_sub_task(key, FAILED, {"error": result["error"], "result": result})
        _resume(env, token, result)
    return [[None]]


# ------------------------------------------------------------------ import's end
def _results_rows(env: TaskEnv, details: dict[str, Any]) -> dict[str, Any]:
    """The counts of an import from its Map's ResultWriter files (manifest, SUCCEEDED_n,
    FAILED_n): a succeeded batch's own counts; a failed one's rows all failed."""
    counts = Counts()
    failed_batches = 0
    rejects: list[str] = []
    bucket = details["Bucket"]
    manifest = json.loads(env.s3.get_object(Bucket=bucket, Key=details["Key"])["Body"].read())
    files = manifest.get("ResultFiles") or {}
    for status in ("SUCCEEDED", "FAILED"):
        for entry in files.get(status) or []:
            body = env.s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
            for child in json.loads(body):
                if status == "SUCCEEDED":
                    out = json.loads(child.get("Output") or "{}")
                    counts.add(Counts.from_json(out))
                    if out.get("rejects"):
                        rejects.append(out["rejects"])
                else:
                    items = json.loads(child.get("Input") or "{}").get("Items") or []
                    counts.add(Counts(rows=len(items), failed=len(items)))
                    failed_batches += 1
    return {**counts.counts_json(_COUNTS), "failed_batches": failed_batches, "rejects": rejects}


def import_result(env: TaskEnv, detail: dict[str, Any]) -> dict[str, Any]:
    """What one import-csv execution did, from its status-change event's detail."""
    given = json.loads(detail.get("input") or "{}")
    result: dict[str, Any] = {
        "file": f"s3://{given.get('bucket')}/{given.get('key')}",
        "executionArn": detail.get("executionArn"),
        "executionStatus": detail.get("status"),
        **dict.fromkeys(_COUNTS, 0),
    }
    if detail.get("status") == "SUCCEEDED":
        output = json.loads(detail.get("output") or "{}")
        details = output.get("ResultWriterDetails") if isinstance(output, dict) else None
        if details:
            result.update(_results_rows(env, details))
        summary = {**result, "status": "finished"}
        status = file_outcome(summary)
    else:
        result["error"] = (
            f"{detail.get('error') or detail.get('status')}: {detail.get('cause') or ''}"
        )
        status = FAILED
    result["status"] = status
    result["importJobStatus"] = status
    return result


def _import_ended(event: dict[str, Any], env: TaskEnv) -> dict[str, Any] | None:
    detail = event.get("detail") or {}
    given = json.loads(detail.get("input") or "{}")
    token, key = given.get("taskToken"), given.get("subTask")
    if not token or not isinstance(key, dict):
        return None  # an import not started by the task machine
    if detail.get("status") not in ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"):
        return None
    result = import_result(env, detail)
    attributes: dict[str, Any] = {"result": result}
    if result["status"] == FAILED and result.get("error"):
        attributes["error"] = result["error"]
    env.store().update_sub_task(key, result["status"], attributes)
    _resume(env, token, result)
    return result


# ------------------------------------------------------------ sub-task-status
def _sub_task_status(record: dict[str, Any], env: TaskEnv) -> dict[str, Any] | None:
    body = json.loads(record.get("body") or "{}")
    if isinstance(body, dict) and "Message" in body and "TopicArn" in body:
        body = json.loads(body["Message"])  # through SNS without raw delivery
    if body.get("action") != "sub-task-status":
        return None
    return env.store().aggregate({"pk": body["pk"], "sk": body["sk"]})


def handle_event(event: Any, env: TaskEnv) -> Any:
    """Dispatch one event (see the module docstring)."""
    if isinstance(event, dict) and event.get("detail-type") == STATUS_CHANGE:
        return _import_ended(event, env)
    if isinstance(event, dict) and "Records" in event:
        return [_sub_task_status(r, env) for r in event["Records"]]
    if isinstance(event, dict) and "context" in event:
        return _iterate(event, env)
    raise ValueError("not an iterator, import status-change or sub-task-status event")


def lambda_handler(event: Any, context: Any = None) -> Any:
    """AWS Lambda entry point (`importer.aws.task_machine.lambda_handler`)."""
    return handle_event(event, TaskEnv.from_environment())


# --------------------------------------------------------------- task-action
def _new_image(body: dict[str, Any]) -> dict[str, Any] | None:
    image = (body.get("dynamodb") or {}).get("NewImage")
    return from_item(image) if isinstance(image, dict) else None


def handle_task_action(body: dict[str, Any], env: TaskEnv) -> dict[str, Any] | None:
    """`handleStepFunctionTask` for one task-action message; returns the started execution."""
    store = env.store()
    if body.get("action") == "import-files":
        files = body.get("input")
        if not isinstance(files, list) or not files:
            raise ValueError("import-files needs input: a list of {bucket, key, ...}")
        task = store.create_sfn_task(
            str(body.get("tenantCode") or "single"),
            str(body.get("taskType") or "import-files"),
            files,
            name=body.get("name"),
        )
        store.update_task({"pk": task["pk"], "sk": task["sk"]}, QUEUED)  # TaskEventHandler
    else:
        image = _new_image(body)
        if image is None:
            raise ValueError("a task-action message carries the tasks table's stream record")
        task = image
    if len(str(task["sk"]).split("#")) > 2 or not str(task["pk"]).startswith("SFN_TASK#"):
        return None  # a sub-task, or a plain TASK: not ours (the framework skips them too)
    key = {"pk": task["pk"], "sk": task["sk"]}
    try:
        store.update_task(key, PROCESSING, {})
        subs = store.create_sub_tasks(task)
        store.update_task(
            key,
            PROCESSING,
            {
                "subTaskCount": len(subs),
                "subTaskSucceedCount": 0,
                "subTaskFailedCount": 0,
                "subTaskRunningCount": 0,
                "subTasks": [{"pk": s["pk"], "sk": s["sk"], "status": s["status"]} for s in subs],
            },
        )
        started = env.sfn.start_execution(
            stateMachineArn=env.task_machine_arn,
            name=execution_name(key["pk"], key["sk"], int(env.now() * 1000)),
            input=json.dumps(subs, default=str),
        )
    except Exception as exc:
        store.update_task(key, FAILED, {"error": f"{type(exc).__name__}: {exc}"})
        raise
    return {"executionArn": started["executionArn"], "task": key, "subTasks": len(subs)}


def task_action_handler(event: Any, context: Any = None) -> dict[str, Any]:
    """AWS Lambda entry point of the task-action queue (`ReportBatchItemFailures`)."""
    env = TaskEnv.from_environment()
    failures = []
    for record in event.get("Records", []):
        try:
            body = json.loads(record["body"])
            if isinstance(body, dict) and "Message" in body and "TopicArn" in body:
                body = json.loads(body["Message"])
            handle_task_action(body, env)
        except Exception as exc:  # noqa: BLE001 - this message is retried, the others not
            print(f"importer: task-action message {record.get('messageId')}: {exc}")
            failures.append({"itemIdentifier": record.get("messageId")})
    return {"batchItemFailures": failures}
