"""The task state machine, end to end on moto's Step Functions engine (issue 27).

A three-file job: the task-action consumer creates the SFN_TASK record and its
sub-tasks and starts the generated task machine; moto's engine runs its Map
(MaxConcurrency 2) and calls the iterator Lambda (in-process, through
:mod:`tests.support.sfn_shim`), which starts the generated import-csv machine
for its file; moto runs that Distributed Map with the real child Lambda.  The
test plays the two AWS services the handlers are wired to and moto does not
run: EventBridge (an import execution's status change goes to the handler,
as the template's rule sends it) and the sub-task-status queue's Lambda
trigger (each message of moto's SQS queue is handed to the handler).
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest

from importer.aws.handler import handle_event as child_handler
from importer.aws.statemachine import (
    LAMBDA_ARN_PLACEHOLDER,
    RESULT_BUCKET_PLACEHOLDER,
    import_csv_definition,
    task_definition,
)
from importer.aws.task_machine import STATUS_CHANGE, TaskEnv, handle_event, handle_task_action
from importer.dynamodb.client import Boto3DynamoClient
from importer.mbc.import_job import from_item
from importer.mbc.tasks import execution_name
from tests.conftest import KEY_SCHEMA, PRODUCT_SPEC
from tests.support.sfn_shim import MOTO_SFN_CONFIG, sfn_shim

REGION = "us-east-1"
CHILD_ARN = "arn:aws:lambda:us-east-1:123456789012:function:csv-rows-handler"
TASK_FN_ARN = "arn:aws:lambda:us-east-1:123456789012:function:task-handler"
ROLE = "arn:aws:iam::123456789012:role/sfn"
TASKS = "dev-app-tasks"
HEADER = "sku,name,price,qty,active\n"


def csv_body(skus: list[str]) -> bytes:
    return (HEADER + "".join(f"{s},Name {s},1.5,1,yes\n" for s in skus)).encode()


def test_execution_name_is_the_frameworks():
    name = execution_name("SFN_TASK#acme", "import-files#01AB@2 x", 1726045913658, lambda: "zz")
    assert name == "SFN_TASK-acme-import-files-01AB-v2__zz__x-1726045913658"


@pytest.fixture
def cloud():
    from moto import mock_aws

    with mock_aws(config=MOTO_SFN_CONFIG):
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in ("inbox", "import-config", "results"):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket="import-config", Key="spec.toml", Body=PRODUCT_SPEC.encode())
        ddb = boto3.client("dynamodb", region_name=REGION)
        for table in ("sfn-command", TASKS):
            ddb.create_table(TableName=table, **KEY_SCHEMA)
        sqs = boto3.client("sqs", region_name=REGION)
        queue = sqs.create_queue(QueueName="sub-task-status-queue")["QueueUrl"]
        yield {
            "s3": s3,
            "ddb": ddb,
            "sqs": sqs,
            "queue": queue,
            "sfn": boto3.client("stepfunctions", region_name=REGION),
        }


def test_three_files_two_at_a_time_a_failing_one_does_not_stop_the_others(cloud, capsys):
    s3, ddb, sqs, sfn = cloud["s3"], cloud["ddb"], cloud["sqs"], cloud["sfn"]
    s3.put_object(Bucket="inbox", Key="jobs/a.csv", Body=csv_body([f"A-{i}" for i in range(25)]))
    s3.put_object(Bucket="inbox", Key="jobs/b.csv", Body=csv_body([f"B-{i}" for i in range(12)]))
    # c.csv is never uploaded: its import fails (ItemReader), the others go on
    child_def = json.dumps(import_csv_definition(max_items_per_batch=10))
    child_def = child_def.replace(LAMBDA_ARN_PLACEHOLDER, CHILD_ARN)
    child_def = child_def.replace(RESULT_BUCKET_PLACEHOLDER, "results")
    writer = Boto3DynamoClient(region=REGION, workers=4)

    def child(event: dict[str, Any]) -> Any:
        return child_handler(event, client=writer, s3_client=s3, engine="native")

    in_flight: list[int] = []
    resumed: list[str] = []
    iterations: list[dict[str, Any]] = []
    env: TaskEnv | None = None

    def iterator(event: dict[str, Any]) -> Any:
        # the Map holds an iteration's slot until its token is resumed
        in_flight.append(len(iterations) - len(resumed))
        iterations.append(event)
        assert env is not None
        return handle_event(event, env)

    with sfn_shim({CHILD_ARN: child, TASK_FN_ARN: iterator}):
        import_arn = sfn.create_state_machine(
            name="dev-app-import-csv", definition=child_def, roleArn=ROLE
        )["stateMachineArn"]
        task_arn = sfn.create_state_machine(
            name="dev-app-sfn-task-handler",
            definition=json.dumps(task_definition(lambda_arn=TASK_FN_ARN)),
            roleArn=ROLE,
        )["stateMachineArn"]
        env = TaskEnv(
            ddb=ddb,
            sfn=sfn,
            s3=s3,
            sqs=sqs,
            tasks_table=TASKS,
            import_machine_arn=import_arn,
            task_machine_arn=task_arn,
            sub_task_queue_url=cloud["queue"],
        )
        if True:
            files = [
                {
                    "bucket": "inbox",
                    "key": f"jobs/{n}.csv",
                    "table": "sfn-command",
                    "spec": "s3://import-config/spec.toml",
                    "rejects": "s3://results/rejects",
                }
                for n in ("a", "b", "c")
            ]
            started = handle_task_action(
                {"action": "import-files", "tenantCode": "acme", "input": files}, env
            )
            execution = started["executionArn"]
            reported: set[str] = set()
            deadline = time.monotonic() + 240
            while sfn.describe_execution(executionArn=execution)["status"] == "RUNNING":
                assert time.monotonic() < deadline, "task execution did not finish"
                # EventBridge: each import execution's end, once
                for ex in sfn.list_executions(stateMachineArn=import_arn)["executions"]:
                    if ex["status"] == "RUNNING" or ex["executionArn"] in reported:
                        continue
                    d = sfn.describe_execution(executionArn=ex["executionArn"])
                    reported.add(ex["executionArn"])
                    result = handle_event(
                        {
                            "detail-type": STATUS_CHANGE,
                            "source": "aws.states",
                            "detail": {
                                k: d.get(k)
                                for k in (
                                    "executionArn",
                                    "stateMachineArn",
                                    "status",
                                    "input",
                                    "output",
                                    "error",
                                    "cause",
                                )
                            },
                        },
                        env,
                    )
                    resumed.append(result["file"])
                # the sub-task-status queue's trigger
                got = sqs.receive_message(QueueUrl=cloud["queue"], MaxNumberOfMessages=10)
                for m in got.get("Messages", []):
                    handle_event({"Records": [{"body": m["Body"]}]}, env)
                    sqs.delete_message(QueueUrl=cloud["queue"], ReceiptHandle=m["ReceiptHandle"])
                time.sleep(0.02)
            while got := sqs.receive_message(QueueUrl=cloud["queue"], MaxNumberOfMessages=10).get(
                "Messages"
            ):
                for m in got:
                    handle_event({"Records": [{"body": m["Body"]}]}, env)
                    sqs.delete_message(QueueUrl=cloud["queue"], ReceiptHandle=m["ReceiptHandle"])
            desc = sfn.describe_execution(executionArn=execution)

    assert desc["status"] == "SUCCEEDED", desc
    assert len(in_flight) == 3 and max(in_flight) <= 1  # never more than 2 imports at once
    assert sorted(resumed) == [
        "s3://inbox/jobs/a.csv",
        "s3://inbox/jobs/b.csv",
        "s3://inbox/jobs/c.csv",
    ]
    results = json.loads(desc["output"])
    assert [r["file"] for r in results] == [f"s3://inbox/jobs/{n}.csv" for n in "abc"]
    assert [(r["status"], r["rows"], r["written"]) for r in results] == [
        ("COMPLETED", 25, 25),
        ("COMPLETED", 12, 12),
        ("FAILED", 0, 0),
    ]
    assert results[2]["importJobStatus"] == "FAILED" and results[2]["error"]
    # the rows are in the table
    stored = ddb.scan(TableName="sfn-command", Select="COUNT")["Count"]
    assert stored == 37
    # the records: parent and sub-tasks as the framework leaves them
    task = started["task"]
    items = [from_item(i) for i in ddb.scan(TableName=TASKS)["Items"]]
    parent = next(i for i in items if i["sk"] == task["sk"])
    subs = sorted((i for i in items if i["sk"] != task["sk"]), key=lambda i: i["sk"])
    assert parent["pk"] == "SFN_TASK#acme" and parent["sk"].startswith("import-files#")
    assert parent["status"] == "COMPLETED"  # the framework: every sub-task ended
    a = parent["attributes"]
    assert (
        a["subTaskCount"],
        a["subTaskSucceedCount"],
        a["subTaskFailedCount"],
        a["subTaskRunningCount"],
    ) == (3, 2, 1, 0)
    assert [s["sk"] for s in subs] == [f"{task['sk']}#{i}" for i in range(3)]
    assert [s["status"] for s in subs] == ["COMPLETED", "COMPLETED", "FAILED"]
    assert a["subTasks"] == [{"pk": s["pk"], "sk": s["sk"], "status": s["status"]} for s in subs]
    assert subs[0]["attributes"]["result"]["written"] == 25
    assert subs[2]["attributes"]["error"]
    assert all(s["input"] == f for s, f in zip(subs, files, strict=True))
    # the iterator events came from a machine whose name the framework routes
    assert all("sfn-task" in e["context"]["StateMachine"]["Name"] for e in iterations)
    assert all(e["taskToken"] for e in iterations)
    # importer status on the execution ARN, from the tasks table
    from importer.cli.status import execution_status

    doc = execution_status(execution, sfn=sfn, ddb=ddb, tasks_table=TASKS)
    assert doc["status"] == "SUCCEEDED"
    assert [(f["name"], f["status"], f["rows"]) for f in doc["files"]] == [
        ("s3://inbox/jobs/a.csv", "COMPLETED", 25),
        ("s3://inbox/jobs/b.csv", "COMPLETED", 12),
        ("s3://inbox/jobs/c.csv", "FAILED", 0),
    ]


def test_the_iterator_refuses_a_machine_the_framework_would_not_route(cloud):
    env = TaskEnv(ddb=cloud["ddb"], sfn=cloud["sfn"], tasks_table=TASKS)
    event = {"context": {"StateMachine": {"Name": "task-handler"}}, "input": {}, "taskToken": "t"}
    with pytest.raises(ValueError, match="sfn-task"):
        handle_event(event, env)
