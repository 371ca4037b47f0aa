"""`importer template`'s optional parts: the MBC command pipeline and the import-action queue.

The stack stays import-only by default (DeployCommandPipeline=false,
DeployImportQueue=false); with them on it holds the command state machine (the
generated ASL), its Lambda, the stream Lambda with the INSERT/syncMode filter,
and the queue whose messages start the import-csv machine.
"""

from __future__ import annotations

import json
import re

import boto3
import pytest
from moto import mock_aws

from importer.aws import deploy, statemachine
from importer.aws.deploy import render_template
from importer.aws.import_queue import execution_input, handle_queue_event
from importer.aws.stream_handler import is_command_insert
from tests.test_iam_policy import ACCOUNT, REGION, STACK, Stack, physical_ids

COMMAND_SM_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{STACK}-command-handler"
COMMAND_FN_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{STACK}-CommandHandler"
STREAM = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/dev-app-sample-command/stream/2026-01-01"
TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/dev-app-"


def _stack(**parameters: str) -> Stack:
    base = {"TableName": "dev-app-sample-command", "InputBucketName": "inbox"}
    base |= {"SpecS3Uri": "s3://cfg/spec.toml", **parameters}
    physical = physical_ids() | {
        deploy.COMMAND_STATE_MACHINE_ID: COMMAND_SM_ARN,
        f"{deploy.COMMAND_FUNCTION_ID}.Arn": COMMAND_FN_ARN,
        deploy.QUEUE_ID: "https://sqs/queue",
        f"{deploy.QUEUE_ID}.Arn": "arn:aws:sqs:us-east-1:123456789012:q",
        f"{deploy.DEAD_LETTER_QUEUE_ID}.Arn": "arn:aws:sqs:us-east-1:123456789012:dlq",
    }
    return Stack(render_template(), base, physical=physical)


def _created(stack: Stack) -> set[str]:
    return {
        name
        for name, r in stack.template["Resources"].items()
        if "Condition" not in r or stack.condition(r["Condition"])
    }


def test_the_default_stack_is_import_only():
    created = _created(_stack())
    assert created == {"ImportResultBucket", "CsvRowsHandlerFunction", "ImportCsvStateMachine"}
    full = _created(_stack(DeployCommandPipeline="true", CommandTableStreamArn=STREAM))
    assert full - created == {
        "CommandHandlerFunction",
        "CommandStateMachine",
        "CommandStreamFunction",
    }
    queue = _created(_stack(DeployImportQueue="true"))
    assert queue - created == {
        "ImportActionQueue",
        "ImportActionDeadLetterQueue",
        "ImportQueueFunction",
    }
    rule = render_template()["Rules"]["CommandPipelineNeedsTheStream"]
    assert rule["Assertions"][0]["Assert"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "CommandTableStreamArn"}, ""]}]
    }


def test_the_command_machine_is_the_generated_definition():
    t = render_template()
    props = t["Resources"]["CommandStateMachine"]["Properties"]
    assert props["Definition"] == statemachine.command_handler_definition(
        lambda_arn="${CommandHandlerFunctionArn}"
    )
    placeholders = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", json.dumps(props["Definition"])))
    assert placeholders == set(props["DefinitionSubstitutions"]) == {"CommandHandlerFunctionArn"}
    fns = {
        name: r["Properties"]["Handler"]
        for name, r in t["Resources"].items()
        if r["Type"] == "AWS::Serverless::Function"
    }
    assert fns["CommandHandlerFunction"] == "importer.mbc.command_states.lambda_handler"
    assert fns["CommandStreamFunction"] == "importer.aws.stream_handler.lambda_handler"
    assert fns["ImportQueueFunction"] == "importer.aws.import_queue.lambda_handler"


def test_the_command_pipeline_grants_exactly_what_its_lambdas_call():
    stack = _stack(DeployCommandPipeline="true", CommandTableStreamArn=STREAM)
    [policy] = stack.resource("CommandHandlerFunction")["Properties"]["Policies"]
    granted = {a: set(st["Resource"]) for st in policy["Statement"] for a in st["Action"]}
    tables = {TABLE + f"sample-{kind}" for kind in ("command", "data", "history")}
    assert granted == {
        "dynamodb:GetItem": tables,
        "dynamodb:PutItem": tables,
        "dynamodb:UpdateItem": tables,
        "states:SendTaskSuccess": {COMMAND_SM_ARN},
    }
    topics = {"StatusTopicArn": "arn:aws:sns:us-east-1:1:s", "AlarmTopicArn": "arn:aws:sns:a"}
    stack = _stack(
        DeployCommandPipeline="true",
        CommandTableStreamArn=STREAM,
        MasterDataTableName="dev-app-master-data",
        **topics,
    )
    fn = stack.resource("CommandHandlerFunction")["Properties"]
    [policy] = fn["Policies"]
    by_sid = {st["Sid"]: st for st in policy["Statement"]}
    assert by_sid["ReadTtlConfig"]["Resource"] == [TABLE + "master-data"]
    assert by_sid["PublishCommandStatus"]["Resource"] == [topics["StatusTopicArn"]]
    assert by_sid["PublishAlarm"]["Resource"] == [topics["AlarmTopicArn"]]
    assert fn["Environment"]["Variables"] == {
        "SNS_TOPIC_ARN": topics["StatusTopicArn"],
        "SNS_ALARM_TOPIC_ARN": topics["AlarmTopicArn"],
    }
    machine = stack.resource("CommandStateMachine")["Properties"]
    assert machine["Name"] == f"{STACK}-command-handler"  # what SendTaskSuccess names
    [invoke] = machine["Policies"][0]["Statement"]
    assert invoke["Resource"] == [COMMAND_FN_ARN, COMMAND_FN_ARN + ":*"]
    stream = stack.resource("CommandStreamFunction")["Properties"]
    assert stream["Policies"][0]["Statement"][0]["Action"] == ["states:StartExecution"]
    assert stream["Policies"][0]["Statement"][0]["Resource"] == [COMMAND_SM_ARN]
    assert stream["Environment"]["Variables"] == {"SFN_COMMAND_ARN": COMMAND_SM_ARN}
    assert stream["Events"]["CommandInserts"]["Properties"]["Stream"] == STREAM
    for name in ("CommandHandlerFunction", "CommandStateMachine", "CommandStreamFunction"):
        assert "*" not in json.dumps(stack.resource(name)["Properties"]["Policies"]).replace(
            ":*", ""
        )


def _matches(pattern, event) -> bool:
    """Lambda event filtering for the rules the template uses (values, exists, anything-but)."""
    for key, rule in pattern.items():
        present = isinstance(event, dict) and key in event
        if isinstance(rule, dict):
            if not present or not _matches(rule, event[key]):
                if not (present is False and _only_absent(rule)):
                    return False
            continue
        ok = False
        for r in rule:
            if isinstance(r, dict) and "exists" in r:
                ok |= r["exists"] == present
            elif isinstance(r, dict) and "anything-but" in r:
                ok |= present and event[key] not in r["anything-but"]
            else:
                ok |= present and event[key] == r
        if not ok:
            return False
    return True


def _only_absent(rule) -> bool:
    """A nested rule that an absent object satisfies (every leaf says exists: false)."""
    for r in rule.values():
        if isinstance(r, dict):
            if not _only_absent(r):
                return False
        elif r != [{"exists": False}]:
            return False
    return True


@pytest.mark.parametrize(
    ("event_name", "sync_mode"),
    [("INSERT", None), ("INSERT", "SYNC"), ("INSERT", "ASYNC"), ("MODIFY", None), ("REMOVE", None)],
)
def test_the_stream_filter_is_the_stream_handlers(event_name, sync_mode):
    t = render_template()
    events = t["Resources"]["CommandStreamFunction"]["Properties"]["Events"]
    props = events["CommandInserts"]["Properties"]
    assert (props["BatchSize"], props["StartingPosition"]) == (1, "TRIM_HORIZON")
    patterns = [json.loads(f["Pattern"]) for f in props["FilterCriteria"]["Filters"]]
    image = {"pk": {"S": "P"}, "sk": {"S": "S@1"}}
    if sync_mode is not None:
        image["syncMode"] = {"S": sync_mode}
    record = {"eventName": event_name, "eventSourceARN": STREAM, "dynamodb": {"NewImage": image}}
    assert any(_matches(p, record) for p in patterns) == is_command_insert(record)


def test_the_sam_transform_wires_the_event_sources(monkeypatch):
    pytest.importorskip("samtranslator", reason="aws-sam-translator comes with cfn-lint")
    from samtranslator.translator.transform import transform

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")

    class Policies:
        def load(self):
            return {}

    t = render_template()
    for resource in t["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://b/k.zip"
    out = transform(t, {}, Policies())["Resources"]
    mappings = {n: r for n, r in out.items() if r["Type"] == "AWS::Lambda::EventSourceMapping"}
    stream = next(r for r in mappings.values() if "FilterCriteria" in r["Properties"])
    assert stream["Condition"] == "CommandPipeline"
    assert len(stream["Properties"]["FilterCriteria"]["Filters"]) == 2
    sqs = next(r for r in mappings.values() if "FilterCriteria" not in r["Properties"])
    assert sqs["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert out["CommandStateMachine"]["Type"] == "AWS::StepFunctions::StateMachine"


def test_the_import_queue_starts_one_execution_per_message():
    framework_job = {
        "action": "single-import-process",
        "eventName": "INSERT",
        "dynamodb": {
            "NewImage": {
                "pk": {"S": "CSV_IMPORT#acme"},
                "sk": {"S": "product#01J"},
                "id": {"S": "CSV_IMPORT#acme#product#01J"},
                "attributes": {
                    "M": {
                        "bucket": {"S": "inbox"},
                        "key": {"S": "in/products.csv"},
                        "tableName": {"S": "product"},
                        "tenantCode": {"S": "acme"},
                        "rows": {"N": "3"},
                    }
                },
            }
        },
    }
    data, name = execution_input(framework_job)
    assert data == {
        "bucket": "inbox",
        "key": "in/products.csv",
        "tableName": "product",
        "tenantCode": "acme",
        "rows": 3,
        "sourceId": "CSV_IMPORT#acme#product#01J",
    }
    assert name is not None and name.startswith("acme-product-")
    with mock_aws():
        sfn = boto3.client("stepfunctions", region_name=REGION)
        arn = sfn.create_state_machine(
            name="import-csv",
            definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/r",
        )["stateMachineArn"]
        event = {
            "Records": [
                {"messageId": "1", "body": json.dumps(framework_job)},
                {"messageId": "2", "body": json.dumps({"bucket": "inbox", "key": "b.csv"})},
                {"messageId": "3", "body": json.dumps({"bucket": "inbox"})},
                {"messageId": "4", "body": "not json"},
            ]
        }
        out = handle_queue_event(event, sfn=sfn, state_machine_arn=arn)
        started = sfn.list_executions(stateMachineArn=arn)["executions"]
        inputs = [
            json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"])
            for e in started
        ]
    assert out == {"batchItemFailures": [{"itemIdentifier": "3"}, {"itemIdentifier": "4"}]}
    assert sorted(i["key"] for i in inputs) == ["b.csv", "in/products.csv"]
