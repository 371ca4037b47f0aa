"""The template's task state machine part (`DeployTaskMachine=true`).

What it deploys, beside the import-csv machine of the same stack:

* the task machine (`importer.aws.statemachine.task_definition`), named
  `${AWS::StackName}-sfn-task-handler` (the framework's CDK name with the
  stack as prefix: it contains `sfn-task`, which the framework's routing
  needs), its execution timeout the `TaskTimeoutSeconds` parameter (default
  900, the seed's 15 minutes).  `AWS::StepFunctions::StateMachine` with a
  `DefinitionString`, because a substitution can only give a number there (SAM's
  `DefinitionSubstitutions` would write `"900"`, a string, which ASL refuses);
* its Lambda (`importer.aws.task_machine.lambda_handler`): the iterator,
  the import's end (an EventBridge rule on the import-csv machine's
  executions) and the sub-task-status queue;
* the task-action queue's consumer (`task_action_handler`), which starts it;
* the two queues the framework names (`task-action-queue`,
  `sub-task-status-queue`), each with a dead-letter queue after 5 receives.
"""

from __future__ import annotations

import json
from typing import Any

from importer.aws.statemachine import task_definition

__all__ = [
    "TASK_MACHINE_NAME",
    "task_conditions",
    "task_outputs",
    "task_parameters",
    "task_resources",
    "task_rules",
]

TASK_MACHINE_ID = "TaskStateMachine"
TASK_MACHINE_NAME = "${AWS::StackName}-sfn-task-handler"
TASK_ROLE_ID = "TaskStateMachineRole"
TASK_FUNCTION_ID = "TaskFunction"
TASK_ACTION_FUNCTION_ID = "TaskActionFunction"
TASK_ACTION_QUEUE_ID = "TaskActionQueue"
SUB_TASK_QUEUE_ID = "SubTaskStatusQueue"
_TIMEOUT_SENTINEL = 31_415_926
_NO_VALUE = {"Ref": "AWS::NoValue"}
_IMPORT_ENDS = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


def _ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def _allow(sid: str, actions: list[str], resources: list[Any]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}


def _tasks_table_arn() -> dict[str, Any]:
    return {
        "Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}"
        ":table/${TasksTableName}"
    }


def _publish_if_given() -> dict[str, Any]:
    return {
        "Fn::If": [
            "StatusTopicGiven",
            _allow("PublishTaskStatus", ["sns:Publish"], [_ref("StatusTopicArn")]),
            _NO_VALUE,
        ]
    }


def task_parameters() -> dict[str, Any]:
    return {
        "DeployTaskMachine": {
            "Type": "String",
            "Default": "false",
            "AllowedValues": ["false", "true"],
            "Description": (
                "true: the task state machine (multi-file imports as MBC step-function tasks, "
                "one import-csv execution per file, two at a time), its Lambdas and its "
                "task-action and sub-task-status queues"
            ),
        },
        "TasksTableName": {
            "Type": "String",
            "Default": "",
            "AllowedPattern": r"^([a-zA-Z0-9_.-]{3,255})?$",
            "Description": "the MBC tasks table ({prefix}tasks) the task records live in",
        },
        "TaskTimeoutSeconds": {
            "Type": "Number",
            "Default": 900,
            "MinValue": 60,
            "MaxValue": 31536000,
            "Description": (
                "the task state machine's execution timeout: the bound on a whole job "
                "(the seed's 15 minutes); `importer plan` warns when a job's estimate exceeds it"
            ),
        },
    }


def task_conditions() -> dict[str, Any]:
    return {"TaskMachine": {"Fn::Equals": [_ref("DeployTaskMachine"), "true"]}}


def task_rules() -> dict[str, Any]:
    return {
        "TaskMachineNeedsTheTasksTable": {
            "RuleCondition": {"Fn::Equals": [_ref("DeployTaskMachine"), "true"]},
            "Assertions": [
                {
                    "Assert": {"Fn::Not": [{"Fn::Equals": [_ref("TasksTableName"), ""]}]},
                    "AssertDescription": "DeployTaskMachine=true needs TasksTableName",
                }
            ],
        }
    }


def _queue(dlq_id: str, visibility: int) -> dict[str, Any]:
    return {
        "Type": "AWS::SQS::Queue",
        "Condition": "TaskMachine",
        "Properties": {
            "SqsManagedSseEnabled": True,
            "VisibilityTimeout": visibility,
            "RedrivePolicy": {
                "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
                "maxReceiveCount": 5,
            },
        },
    }


def _dead_letters() -> dict[str, Any]:
    return {
        "Type": "AWS::SQS::Queue",
        "Condition": "TaskMachine",
        "Properties": {"SqsManagedSseEnabled": True, "MessageRetentionPeriod": 1209600},
    }


def definition_string() -> dict[str, Any]:
    """The definition as CloudFormation substitutes it: the Lambda's ARN, and the timeout
    as a number (`TimeoutSeconds: ${TaskTimeoutSeconds}`, unquoted)."""
    text = json.dumps(task_definition(timeout_seconds=_TIMEOUT_SENTINEL), indent=2)
    text = text.replace(str(_TIMEOUT_SENTINEL), "${TaskTimeoutSeconds}")
    return {"Fn::Sub": [text, {"TaskFunctionArn": {"Fn::GetAtt": [TASK_FUNCTION_ID, "Arn"]}}]}


def task_resources(
    code: dict[str, Any], *, import_machine_id: str, result_bucket: Any
) -> dict[str, Any]:
    """Every resource of the task machine part (Condition TaskMachine)."""
    task_machine_arn = {
        "Fn::Sub": "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}"
        ":stateMachine:" + TASK_MACHINE_NAME
    }
    topic = {"Fn::If": ["StatusTopicGiven", _ref("StatusTopicArn"), _NO_VALUE]}
    function = {
        "Type": "AWS::Serverless::Function",
        "Condition": "TaskMachine",
        "Properties": {
            "Description": "task state machine: the iterator, an import's end, sub-task status",
            "Handler": "importer.aws.task_machine.lambda_handler",
            **code,
            # an import's end reads its Map's ResultWriter files whole: one entry a batch
            # (about 1 KB), so 100,000 batches are some 100 MB
            "Timeout": 300,
            "MemorySize": 1024,
            "Environment": {
                "Variables": {
                    "TASKS_TABLE": _ref("TasksTableName"),
                    "IMPORT_STATE_MACHINE_ARN": _ref(import_machine_id),
                    "SUB_TASK_STATUS_QUEUE_URL": _ref(SUB_TASK_QUEUE_ID),
                    "SNS_TOPIC_ARN": topic,
                }
            },
            "Policies": [
                {
                    "Statement": [
                        _allow(
                            "TaskRecords",
                            [
                                "dynamodb:GetItem",
                                "dynamodb:PutItem",
                                "dynamodb:UpdateItem",
                                "dynamodb:Query",
                            ],
                            [_tasks_table_arn()],
                        ),
                        _allow("StartImport", ["states:StartExecution"], [_ref(import_machine_id)]),
                        # by name: a Ref to the machine would make a cycle (it invokes us)
                        _allow("ResumeIteration", ["states:SendTaskSuccess"], [task_machine_arn]),
                        _allow(
                            "ReadImportResults",
                            ["s3:GetObject"],
                            [
                                {
                                    "Fn::Sub": [
                                        "arn:${AWS::Partition}:s3:::${B}/*",
                                        {"B": result_bucket},
                                    ]
                                }
                            ],
                        ),
                        _allow(
                            "SubTaskStatus",
                            ["sqs:SendMessage"],
                            [{"Fn::GetAtt": [SUB_TASK_QUEUE_ID, "Arn"]}],
                        ),
                        _publish_if_given(),
                    ]
                }
            ],
            "Events": {
                "ImportEnded": {
                    "Type": "EventBridgeRule",
                    "Properties": {
                        "Pattern": {
                            "source": ["aws.states"],
                            "detail-type": ["Step Functions Execution Status Change"],
                            "detail": {
                                "stateMachineArn": [_ref(import_machine_id)],
                                "status": list(_IMPORT_ENDS),
                            },
                        }
                    },
                },
                "SubTaskStatus": {
                    "Type": "SQS",
                    "Properties": {
                        "Queue": {"Fn::GetAtt": [SUB_TASK_QUEUE_ID, "Arn"]},
                        "BatchSize": 1,
                    },
                },
            },
        },
    }
    action = {
        "Type": "AWS::Serverless::Function",
        "Condition": "TaskMachine",
        "Properties": {
            "Description": "task-action queue: an SFN_TASK's sub-tasks, then the task machine",
            "Handler": "importer.aws.task_machine.task_action_handler",
            **code,
            "Timeout": 60,
            "MemorySize": 256,
            "Environment": {
                "Variables": {
                    "TASKS_TABLE": _ref("TasksTableName"),
                    "SFN_TASK_ARN": _ref(TASK_MACHINE_ID),
                    "SNS_TOPIC_ARN": topic,
                }
            },
            "Policies": [
                {
                    "Statement": [
                        _allow(
                            "TaskRecords",
                            ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                            [_tasks_table_arn()],
                        ),
                        _allow("StartTask", ["states:StartExecution"], [_ref(TASK_MACHINE_ID)]),
                        _publish_if_given(),
                    ]
                }
            ],
            "Events": {
                "TaskActions": {
                    "Type": "SQS",
                    "Properties": {
                        "Queue": {"Fn::GetAtt": [TASK_ACTION_QUEUE_ID, "Arn"]},
                        "BatchSize": 1,
                        "FunctionResponseTypes": ["ReportBatchItemFailures"],
                    },
                }
            },
        },
    }
    role = {
        "Type": "AWS::IAM::Role",
        "Condition": "TaskMachine",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "states.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            },
            "Policies": [
                {
                    "PolicyName": "invoke-iterator",
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            _allow(
                                "InvokeIterator",
                                ["lambda:InvokeFunction"],
                                [
                                    {"Fn::GetAtt": [TASK_FUNCTION_ID, "Arn"]},
                                    {"Fn::Sub": "${" + TASK_FUNCTION_ID + ".Arn}:*"},
                                ],
                            )
                        ],
                    },
                }
            ],
        },
    }
    machine = {
        "Type": "AWS::StepFunctions::StateMachine",
        "Condition": "TaskMachine",
        "Properties": {
            "StateMachineName": {"Fn::Sub": TASK_MACHINE_NAME},
            "StateMachineType": "STANDARD",
            "RoleArn": {"Fn::GetAtt": [TASK_ROLE_ID, "Arn"]},
            "DefinitionString": definition_string(),
        },
    }
    return {
        TASK_FUNCTION_ID: function,
        TASK_ACTION_FUNCTION_ID: action,
        TASK_ROLE_ID: role,
        TASK_MACHINE_ID: machine,
        "TaskActionDeadLetterQueue": _dead_letters(),
        TASK_ACTION_QUEUE_ID: _queue("TaskActionDeadLetterQueue", 360),
        "SubTaskStatusDeadLetterQueue": _dead_letters(),
        SUB_TASK_QUEUE_ID: _queue("SubTaskStatusDeadLetterQueue", 360),
    }


def task_outputs() -> dict[str, Any]:
    return {
        "TaskStateMachineArn": {
            "Condition": "TaskMachine",
            "Description": "The task state machine (SFN_TASK_ARN for the framework)",
            "Value": _ref(TASK_MACHINE_ID),
        },
        "TaskActionQueueUrl": {
            "Condition": "TaskMachine",
            "Description": (
                'Send {"action": "import-files", "tenantCode": T, "input": [{bucket, key, '
                "...}, ...]} (or the framework's task-execute message) to run a job"
            ),
            "Value": _ref(TASK_ACTION_QUEUE_ID),
        },
    }
