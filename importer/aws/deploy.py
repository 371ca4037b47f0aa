"""The SAM template that deploys the import: state machines, Lambdas, least-privilege roles.

:func:`render_template` returns a JSON-able dict with the import-csv state machine, the
child Lambda and roles for both.  The stack's ``Mode`` (insert, upsert, strict, blind) and
``DataTableName`` reach the function's environment, and its role allows exactly that mode's
DynamoDB calls (:data:`MODE_GRANTS`) on exactly the command and data tables.  The zip it
names is :mod:`importer.aws.package`'s; the commands that print both are
:mod:`importer.cli.deploy_commands`.
"""

from __future__ import annotations

import json
from typing import Any

from importer.aws import statemachine, task_template
from importer.aws.package import DEFAULT_PACKAGE, build_target, lambda_architecture
from importer.input import batching
from importer.modes.stage import DEFAULT_MODE

__all__ = [
    "MODE_GRANTS",
    "command_function_policy",
    "function_policy",
    "render_template",
    "state_machine_policy",
]

HANDLER = "importer.aws.handler.lambda_handler"
FUNCTION_ID = "CsvRowsHandlerFunction"
STATE_MACHINE_ID = "ImportCsvStateMachine"
RESULT_BUCKET_ID = "ImportResultBucket"
# the MBC command pipeline (DeployCommandPipeline=true) and the import-action queue
COMMAND_FUNCTION_ID = "CommandHandlerFunction"
COMMAND_HANDLER = "importer.mbc.command_states.lambda_handler"
COMMAND_STATE_MACHINE_ID = "CommandStateMachine"
COMMAND_STATE_MACHINE_NAME = "${AWS::StackName}-command-handler"
STREAM_FUNCTION_ID = "CommandStreamFunction"
STREAM_HANDLER = "importer.aws.stream_handler.lambda_handler"
QUEUE_ID = "ImportActionQueue"
DEAD_LETTER_QUEUE_ID = "ImportActionDeadLetterQueue"
QUEUE_FUNCTION_ID = "ImportQueueFunction"
QUEUE_HANDLER = "importer.aws.import_queue.lambda_handler"
#: The command table stream's filter: INSERT, and not a synchronously applied command
#: (``syncMode: SYNC``, which `importer run --sync` writes) -- the two patterns are OR'ed.
STREAM_FILTERS = (
    {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"syncMode": {"S": [{"exists": False}]}}}},
    {
        "eventName": ["INSERT"],
        "dynamodb": {"NewImage": {"syncMode": {"S": [{"anything-but": ["SYNC"]}]}}},
    },
)

# An EXPRESS child execution lives at most 5 minutes: the Lambda must finish well
# inside that, or the child times out instead of reporting the Lambda's error.
EXPRESS_CHILD_LIMIT_SECONDS = 300
DEFAULT_FUNCTION_TIMEOUT = 240
# --------------------------------------------------------------------- template
#
# What the child Lambda calls, per import mode (importer.aws.handler -> importer.modes.stage,
# importer.dynamodb.lookup, importer.dynamodb.strict_writer; checked call by call against a Step
# Functions run in tests/test_iam_policy.py):
#
#   blind   BatchWriteItem (command table)
#   insert  DescribeTable (data table: does it exist?), BatchGetItem (data table,
#           then command table for the versions the data table has not caught up
#           with), BatchWriteItem (command table)
#   upsert  as insert
#   strict  as insert, but writes with TransactWriteItems instead of BatchWriteItem,
#           and reads conflicting items back with BatchGetItem (command table)
#
# IAM for TransactWriteItems (AWS DynamoDB Developer Guide, "Using IAM with DynamoDB
# transactions"): there is no IAM action of that name.  Each action inside the
# transaction is authorised as its single-item counterpart on its own table:
# Put -> dynamodb:PutItem, Update -> dynamodb:UpdateItem, Delete ->
# dynamodb:DeleteItem, ConditionCheck -> dynamodb:ConditionCheckItem (Get in
# TransactGetItems -> dynamodb:GetItem).  A ConditionExpression on a Put is part of
# the Put, not a ConditionCheck action, so it needs nothing beyond PutItem; nor do
# ReturnValuesOnConditionCheckFailure=ALL_OLD or ClientRequestToken (the old item
# comes back under PutItem; only a policy restricting the dynamodb:ReturnValues or
# dynamodb:Attributes condition keys would have to allow it, and this one restricts
# neither).  So strict mode needs dynamodb:PutItem on the command table and no
# dynamodb:BatchWriteItem at all.

#: DynamoDB actions the child needs, per mode and per table ("command" is
#: TableName, "data" is the MBC data table holding the latest versions).  The
#: template's statements and conditions are derived from this table alone.
MODE_GRANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "insert": {
        "command": ("dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"),
        # Scan: one item, to learn whether the data table is empty (then not read)
        "data": ("dynamodb:BatchGetItem", "dynamodb:DescribeTable", "dynamodb:Scan"),
    },
    "upsert": {
        "command": ("dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"),
        "data": ("dynamodb:BatchGetItem", "dynamodb:DescribeTable"),
    },
    "strict": {
        "command": ("dynamodb:BatchGetItem", "dynamodb:PutItem"),
        "data": ("dynamodb:BatchGetItem", "dynamodb:DescribeTable"),
    },
    "blind": {"command": ("dynamodb:BatchWriteItem",), "data": ()},
}
# How a statement's Sid names what an action is for (e.g. "ReadDescribeDataTable").
_ACTION_WORDS = {
    "dynamodb:BatchGetItem": "Read",
    "dynamodb:BatchWriteItem": "BatchWrite",
    "dynamodb:DescribeTable": "Describe",
    "dynamodb:PutItem": "TransactWrite",
    "dynamodb:Scan": "Probe",
}


def _sub(text: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"Fn::Sub": [text, variables] if variables else text}


def _ref(name: str) -> dict[str, str]:
    return {"Ref": name}


_NO_VALUE = {"Ref": "AWS::NoValue"}


def _result_bucket() -> dict[str, Any]:
    return {"Fn::If": ["CreateResultBucket", _ref(RESULT_BUCKET_ID), _ref("ResultBucketName")]}


def _data_table_name() -> dict[str, Any]:
    """DataTableName, or TableName with its trailing ``-command`` replaced by ``-data``.

    The same rule as :func:`importer.modes.stage.default_data_table`, in intrinsics:
    ``#`` cannot occur in a table name, so ``-command#`` occurs in ``TableName#``
    exactly when the name ends in ``-command``, and splitting there leaves the
    prefix.  For a name not ending in ``-command`` the result is ``NAME#-data``,
    which no table can be called: the role then grants nothing on a data table,
    as the handler then uses none (insert checks the command table only; upsert
    and strict stop with "needs the data table").
    """
    marked = {"Fn::Join": ["", [_ref("TableName"), "#"]]}
    prefix = {"Fn::Select": [0, {"Fn::Split": ["-command#", marked]}]}
    derived = {"Fn::Join": ["", [prefix, "-data"]]}
    return {"Fn::If": ["DataTableGiven", _ref("DataTableName"), derived]}


def _module_table_name(suffix: str) -> dict[str, Any]:
    """``{prefix}{module}-{suffix}`` from TableName, as the command Lambda derives it.

    The command Lambda names its tables after the stream's command table
    (``importer.mbc.model.Tables``), never after DataTableName, so these
    grants follow the same rule (see :func:`_data_table_name` for the trick).
    """
    marked = {"Fn::Join": ["", [_ref("TableName"), "#"]]}
    prefix = {"Fn::Select": [0, {"Fn::Split": ["-command#", marked]}]}
    return {"Fn::Join": ["", [prefix, f"-{suffix}"]]}


def _named_table_arn(name: Any) -> dict[str, Any]:
    arn = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${Table}"
    return _sub(arn, {"Table": name})


def _s3_arn(path: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    return _sub("arn:${AWS::Partition}:s3:::" + path, variables)


def _table_arn(table: str) -> dict[str, Any]:
    arn = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${Table}"
    name = _ref("TableName") if table == "command" else _data_table_name()
    return _sub(arn, {"Table": name})


def _allow(sid: str, actions: list[str], resources: list[Any]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}


def _only_if(condition: str, statement: dict[str, Any]) -> dict[str, Any]:
    """The statement when ``condition`` holds, else no statement at all."""
    return {"Fn::If": [condition, statement, _NO_VALUE]}


def _mode_condition_name(modes: tuple[str, ...]) -> str:
    return "ModeIs" + "Or".join(m.title() for m in modes)


def _mode_condition(modes: tuple[str, ...]) -> dict[str, Any]:
    equals = [{"Fn::Equals": [_ref("Mode"), m]} for m in modes]
    return equals[0] if len(equals) == 1 else {"Fn::Or": equals}


def _table_grants() -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """``(table, modes, actions)``: each table's actions grouped by the modes that use them.

    Derived from :data:`MODE_GRANTS`, so a statement holds exactly the actions
    that every one of its modes needs, and its condition names exactly those modes.
    """
    modes_of: dict[tuple[str, str], tuple[str, ...]] = {}
    for mode, tables in MODE_GRANTS.items():
        for table, actions in tables.items():
            for action in actions:
                key = (table, action)
                modes_of[key] = (*modes_of.get(key, ()), mode)
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (table, action), modes in modes_of.items():
        groups.setdefault((table, modes), []).append(action)
    return [(t, modes, tuple(sorted(acts))) for (t, modes), acts in sorted(groups.items())]


def _mode_conditions() -> dict[str, Any]:
    return {_mode_condition_name(m): _mode_condition(m) for _, m, _ in _table_grants()}


def _table_statements() -> list[dict[str, Any]]:
    """One statement per (table, set of modes), present only in those modes."""
    out = []
    for table, modes, actions in _table_grants():
        sid = "".join(_ACTION_WORDS[a] for a in actions) + f"{table.title()}Table"
        statement = _allow(sid, list(actions), [_table_arn(table)])
        out.append(_only_if(_mode_condition_name(modes), statement))
    return out


def _spec_read_statement() -> dict[str, Any]:
    """The spec object, and nothing else: the CSV is read by the Map's ItemReader."""
    spec_object = _s3_arn(
        "${SpecPath}",
        {"SpecPath": {"Fn::Select": [1, {"Fn::Split": ["s3://", _ref("SpecS3Uri")]}]}},
    )
    return _allow("ReadSpec", ["s3:GetObject"], [spec_object])


def _rejects_write_statement() -> dict[str, Any]:
    rejects = _s3_arn("${Bucket}/${RejectsPrefix}/*", {"Bucket": _result_bucket()})
    return _allow("WriteRejects", ["s3:PutObject"], [rejects])


def _ttl_read_statement() -> dict[str, Any]:
    """The TTL configuration the commands' ttl comes from (publishAsync's calculateTtl)."""
    return _only_if(
        "TtlConfigGiven",
        _allow(
            "ReadTtlConfigForCommands",
            ["dynamodb:GetItem"],
            [_named_table_arn(_ref("MasterDataTableName"))],
        ),
    )


def function_policy() -> dict[str, Any]:
    """The child Lambda's inline policy: the spec, the rejects, the mode's table calls and
    the TTL configuration (when the stack names its table)."""
    return {
        "Statement": [
            _spec_read_statement(),
            _rejects_write_statement(),
            *_table_statements(),
            _ttl_read_statement(),
        ]
    }


def state_machine_policy(state_machine_name: str) -> dict[str, Any]:
    """Invoke the child, read the CSV, write results, run the Distributed Map's children."""
    states_arn = "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}"
    results = _s3_arn("${Bucket}/${ResultPrefix}/*", {"Bucket": _result_bucket()})
    function_arn = {"Fn::GetAtt": [FUNCTION_ID, "Arn"]}
    return {
        "Statement": [
            _allow(
                "InvokeChildHandler",
                ["lambda:InvokeFunction"],
                [function_arn, {"Fn::Sub": "${" + FUNCTION_ID + ".Arn}:*"}],
            ),
            _allow("ItemReader", ["s3:GetObject"], [_s3_arn("${InputBucketName}/${InputPrefix}*")]),
            _allow(
                "ResultWriter",
                [
                    "s3:PutObject",
                    "s3:GetObject",
                    "s3:ListMultipartUploadParts",
                    "s3:AbortMultipartUpload",
                ],
                [results],
            ),
            _allow(
                "DistributedMapChildren",
                ["states:StartExecution"],
                [_sub(f"{states_arn}:stateMachine:{state_machine_name}")],
            ),
            _allow(
                "DistributedMapChildExecutions",
                ["states:DescribeExecution", "states:StopExecution"],
                [
                    _sub(f"{states_arn}:execution:{state_machine_name}/*"),
                    _sub(f"{states_arn}:express:{state_machine_name}/*"),
                ],
            ),
        ]
    }


def command_function_policy() -> dict[str, Any]:
    """The command state machine's Lambda: its module's three tables, the TTL config,
    the next version's task token, and the status/alarm topics when given."""
    machine = _sub(
        "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:"
        + COMMAND_STATE_MACHINE_NAME
    )
    tables = [_named_table_arn(_ref("TableName"))]
    tables += [_named_table_arn(_module_table_name(kind)) for kind in ("data", "history")]
    return {
        "Statement": [
            _allow(
                "ApplyCommandToModuleTables",
                ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                tables,
            ),
            _only_if(
                "TtlConfigGiven",
                _allow(
                    "ReadTtlConfig",
                    ["dynamodb:GetItem"],
                    [_named_table_arn(_ref("MasterDataTableName"))],
                ),
            ),
            # by name, not Ref: the machine's definition already refers to this function
            _allow("ResumeNextVersion", ["states:SendTaskSuccess"], [machine]),
            _only_if(
                "StatusTopicGiven",
                _allow("PublishCommandStatus", ["sns:Publish"], [_ref("StatusTopicArn")]),
            ),
            _only_if(
                "AlarmTopicGiven",
                _allow("PublishAlarm", ["sns:Publish"], [_ref("AlarmTopicArn")]),
            ),
        ]
    }


_STREAM_ARN = r"^$|^arn:aws[a-z-]*:dynamodb:[a-z0-9-]+:[0-9]{12}:table/.+/stream/.+"


def _parameters() -> dict[str, Any]:
    key_prefix = {"Type": "String", "AllowedPattern": r"^[^/].*[^/]$|^[^/]$"}
    table_name = r"[a-zA-Z0-9_.-]{3,255}"
    return {
        "TableName": {
            "Type": "String",
            "Description": "DynamoDB command table the records are written to",
            "AllowedPattern": f"^{table_name}$",
        },
        "Mode": {
            "Type": "String",
            "Default": DEFAULT_MODE,
            "AllowedValues": list(MODE_GRANTS),
            "Description": (
                "Import mode for rows whose entity exists: insert (refuse them), upsert "
                "(write the next version when changed), strict (as upsert, with conditional "
                "transactions), blind (no reads, every row version 1). The function's role "
                "allows exactly this mode's DynamoDB calls, so a per-execution 'mode' in the "
                "execution input must match it"
            ),
        },
        "MaxWcu": {
            "Type": "Number",
            "Default": 0,
            "MinValue": 0,
            "Description": (
                "Write units per second the whole import may use (a table serving live "
                "traffic); each of the Map's concurrent children paces itself to its share. "
                "0: as fast as the table accepts"
            ),
        },
        "DataTableName": {
            "Type": "String",
            "Default": "",
            "AllowedPattern": f"^$|^{table_name}$",
            "Description": (
                "MBC data table (latest versions) that insert/upsert/strict read first. Empty: "
                "TableName with its trailing -command replaced by -data; give it when TableName "
                "does not end in -command (upsert and strict need it, insert then checks the "
                "command table only). Unused in blind mode"
            ),
        },
        "InputBucketName": {
            "Type": "String",
            "Description": "Bucket holding the CSV files to import",
            "AllowedPattern": r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        },
        "InputPrefix": {
            "Type": "String",
            "Default": "",
            "Description": "Key prefix the CSV files live under (empty: the whole bucket)",
        },
        "SpecS3Uri": {
            "Type": "String",
            "Description": "s3://bucket/key of the import spec (TOML or JSON)",
            "AllowedPattern": r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$",
        },
        "ResultBucketName": {
            "Type": "String",
            "Default": "",
            "Description": "Bucket for Map run results and rejects (empty: create one)",
        },
        "ResultPrefix": {
            **key_prefix,
            "Default": "import-results",
            "Description": "Key prefix of the Distributed Map ResultWriter output",
        },
        "RejectsPrefix": {
            **key_prefix,
            "Default": "import-rejects",
            "Description": "Key prefix the handler writes rejected rows under",
        },
        "DeployCommandPipeline": {
            "Type": "String",
            "Default": "false",
            "AllowedValues": ["false", "true"],
            "Description": (
                "true: also deploy the MBC command pipeline for TableName's module -- the "
                "command state machine, its Lambda and the stream Lambda that starts one "
                "execution per command INSERT (not for syncMode SYNC records, which "
                "`importer run --sync` applies itself). Leave false when the MBC application "
                "deploys its own (the framework's CDK does)"
            ),
        },
        "CommandTableStreamArn": {
            "Type": "String",
            "Default": "",
            "AllowedPattern": _STREAM_ARN,
            "Description": (
                "Stream ARN of TableName (NEW_IMAGE or NEW_AND_OLD_IMAGES); required with "
                "DeployCommandPipeline=true"
            ),
        },
        "MasterDataTableName": {
            "Type": "String",
            "Default": "",
            "AllowedPattern": f"^$|^{table_name}$",
            "Description": (
                "The module's {env}-{app}-master-data table, read for TTL#<table> configs. "
                "Empty: no TTL is read and command/history TTLs are null, as the framework "
                "writes them when no config exists"
            ),
        },
        "StatusTopicArn": {
            "Type": "String",
            "Default": "",
            "Description": "SNS topic for command-status messages (empty: none are sent)",
        },
        "AlarmTopicArn": {
            "Type": "String",
            "Default": "",
            "Description": "SNS topic for sfn-alarm messages (empty: the status topic)",
        },
        "DeployImportQueue": {
            "Type": "String",
            "Default": "false",
            "AllowedValues": ["false", "true"],
            "Description": (
                "true: an import-action SQS queue (with a dead-letter queue) whose messages "
                "start the import-csv state machine: {bucket, key, ...} or the framework's "
                "single-import-process job message"
            ),
        },
    }


def _rules() -> dict[str, Any]:
    pipeline = {"Fn::Equals": [_ref("DeployCommandPipeline"), "true"]}
    return {
        "CommandPipelineNeedsTheStream": {
            "RuleCondition": pipeline,
            "Assertions": [
                {
                    "Assert": {"Fn::Not": [{"Fn::Equals": [_ref("CommandTableStreamArn"), ""]}]},
                    "AssertDescription": "DeployCommandPipeline=true needs CommandTableStreamArn",
                }
            ],
        }
    }


def _conditions() -> dict[str, Any]:
    return {
        "CreateResultBucket": {"Fn::Equals": [_ref("ResultBucketName"), ""]},
        "DataTableGiven": {"Fn::Not": [{"Fn::Equals": [_ref("DataTableName"), ""]}]},
        **_mode_conditions(),
        "CommandPipeline": {"Fn::Equals": [_ref("DeployCommandPipeline"), "true"]},
        "TtlConfigGiven": {"Fn::Not": [{"Fn::Equals": [_ref("MasterDataTableName"), ""]}]},
        "StatusTopicGiven": {"Fn::Not": [{"Fn::Equals": [_ref("StatusTopicArn"), ""]}]},
        "AlarmTopicGiven": {"Fn::Not": [{"Fn::Equals": [_ref("AlarmTopicArn"), ""]}]},
        "ImportQueue": {"Fn::Equals": [_ref("DeployImportQueue"), "true"]},
    }


def _result_bucket_resource() -> dict[str, Any]:
    return {
        "Type": "AWS::S3::Bucket",
        "Condition": "CreateResultBucket",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        },
    }


def _function_resource(
    *,
    code_uri: str,
    runtime: str,
    architecture: str,
    timeout: int,
    memory_size: int,
    max_concurrency: int,
) -> dict[str, Any]:
    return {
        "Type": "AWS::Serverless::Function",
        "Properties": {
            "Description": "import-csv Distributed Map child: one batch of CSV rows",
            "Runtime": runtime,
            "Handler": HANDLER,
            "CodeUri": code_uri,
            "Architectures": [architecture],
            "Timeout": timeout,
            "MemorySize": memory_size,
            "Environment": {
                "Variables": {
                    "IMPORTER_TABLE": _ref("TableName"),
                    "IMPORTER_SPEC": _ref("SpecS3Uri"),
                    "IMPORTER_REJECTS": _sub(
                        "s3://${Bucket}/${RejectsPrefix}", {"Bucket": _result_bucket()}
                    ),
                    "IMPORTER_MODE": _ref("Mode"),
                    # the run's write budget, shared by the Map's concurrent children
                    "IMPORTER_MAX_WCU": _ref("MaxWcu"),
                    "IMPORTER_MAX_CONCURRENCY": str(max_concurrency),
                    # not given: the handler derives it by the same -command -> -data rule
                    "IMPORTER_DATA_TABLE": {
                        "Fn::If": ["DataTableGiven", _ref("DataTableName"), _NO_VALUE]
                    },
                    # the commands' ttl: the data table's TTL config there ("": none, null)
                    "IMPORTER_MASTER_DATA_TABLE": _ref("MasterDataTableName"),
                }
            },
            "Policies": [function_policy()],
        },
    }


def _state_machine_resource(definition: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        "Type": "AWS::Serverless::StateMachine",
        "Properties": {
            "Name": _sub(name),
            "Type": "STANDARD",
            "Definition": definition,
            "DefinitionSubstitutions": {
                "CsvRowsHandlerFunctionArn": {"Fn::GetAtt": [FUNCTION_ID, "Arn"]},
                "ResultBucket": _result_bucket(),
                "ResultPrefix": _ref("ResultPrefix"),
            },
            "Policies": [state_machine_policy(name)],
        },
    }


def _lambda(
    handler: str, description: str, *, code: dict[str, Any], timeout: int, memory_size: int
) -> dict[str, Any]:
    return {
        "Type": "AWS::Serverless::Function",
        "Properties": {
            "Description": description,
            "Handler": handler,
            **code,
            "Timeout": timeout,
            "MemorySize": memory_size,
        },
    }


def command_pipeline_resources(code: dict[str, Any]) -> dict[str, Any]:
    """The command state machine, its Lambda and the stream Lambda (Condition CommandPipeline).

    ``code`` holds the package's CodeUri, Runtime and Architectures: the same
    zip serves every function.
    """
    fn = _lambda(
        COMMAND_HANDLER,
        "MBC command state machine: the Lambda states (check_version ... finish)",
        code=code,
        timeout=60,
        memory_size=512,
    )
    fn["Condition"] = "CommandPipeline"
    fn["Properties"]["Environment"] = {
        "Variables": {
            "SNS_TOPIC_ARN": {"Fn::If": ["StatusTopicGiven", _ref("StatusTopicArn"), _NO_VALUE]},
            "SNS_ALARM_TOPIC_ARN": {
                "Fn::If": ["AlarmTopicGiven", _ref("AlarmTopicArn"), _NO_VALUE]
            },
        }
    }
    fn["Properties"]["Policies"] = [command_function_policy()]
    definition = statemachine.command_handler_definition(lambda_arn="${CommandHandlerFunctionArn}")
    machine = {
        "Type": "AWS::Serverless::StateMachine",
        "Condition": "CommandPipeline",
        "Properties": {
            "Name": _sub(COMMAND_STATE_MACHINE_NAME),
            "Type": "STANDARD",
            "Definition": definition,
            "DefinitionSubstitutions": {
                "CommandHandlerFunctionArn": {"Fn::GetAtt": [COMMAND_FUNCTION_ID, "Arn"]}
            },
            "Policies": [
                {
                    "Statement": [
                        _allow(
                            "InvokeCommandStates",
                            ["lambda:InvokeFunction"],
                            [
                                {"Fn::GetAtt": [COMMAND_FUNCTION_ID, "Arn"]},
                                {"Fn::Sub": "${" + COMMAND_FUNCTION_ID + ".Arn}:*"},
                            ],
                        )
                    ]
                }
            ],
        },
    }
    stream = _lambda(
        STREAM_HANDLER,
        "MBC command table stream: one command state machine execution per INSERT",
        code=code,
        timeout=30,
        memory_size=256,
    )
    stream["Condition"] = "CommandPipeline"
    stream["Properties"]["Environment"] = {
        "Variables": {"SFN_COMMAND_ARN": _ref(COMMAND_STATE_MACHINE_ID)}
    }
    stream["Properties"]["Policies"] = [
        {
            "Statement": [
                _allow(
                    "StartCommandExecution",
                    ["states:StartExecution"],
                    [_ref(COMMAND_STATE_MACHINE_ID)],
                )
            ]
        }
    ]
    stream["Properties"]["Events"] = {
        "CommandInserts": {
            "Type": "DynamoDB",
            "Properties": {
                "Stream": _ref("CommandTableStreamArn"),
                "StartingPosition": "TRIM_HORIZON",
                "BatchSize": 1,
                "FilterCriteria": {
                    "Filters": [
                        {"Pattern": json.dumps(f, separators=(",", ":"))} for f in STREAM_FILTERS
                    ]
                },
            },
        }
    }
    return {COMMAND_FUNCTION_ID: fn, COMMAND_STATE_MACHINE_ID: machine, STREAM_FUNCTION_ID: stream}


def import_queue_resources(code: dict[str, Any]) -> dict[str, Any]:
    """The import-action queue, its dead-letter queue and consumer (Condition ImportQueue)."""
    encrypted = {"SqsManagedSseEnabled": True}
    dlq = {
        "Type": "AWS::SQS::Queue",
        "Condition": "ImportQueue",
        "Properties": {**encrypted, "MessageRetentionPeriod": 1209600},
    }
    queue = {
        "Type": "AWS::SQS::Queue",
        "Condition": "ImportQueue",
        "Properties": {
            **encrypted,
            "VisibilityTimeout": 60,
            "RedrivePolicy": {
                "deadLetterTargetArn": {"Fn::GetAtt": [DEAD_LETTER_QUEUE_ID, "Arn"]},
                "maxReceiveCount": 5,
            },
        },
    }
    fn = _lambda(
        QUEUE_HANDLER,
        "import-action queue: each message starts one import-csv execution",
        code=code,
        timeout=30,
        memory_size=256,
    )
    fn["Condition"] = "ImportQueue"
    fn["Properties"]["Environment"] = {
        "Variables": {"IMPORT_STATE_MACHINE_ARN": _ref(STATE_MACHINE_ID)}
    }
    fn["Properties"]["Policies"] = [
        {"Statement": [_allow("StartImport", ["states:StartExecution"], [_ref(STATE_MACHINE_ID)])]}
    ]
    fn["Properties"]["Events"] = {
        "ImportActions": {
            "Type": "SQS",
            "Properties": {
                "Queue": {"Fn::GetAtt": [QUEUE_ID, "Arn"]},
                "BatchSize": 1,
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
            },
        }
    }
    return {DEAD_LETTER_QUEUE_ID: dlq, QUEUE_ID: queue, QUEUE_FUNCTION_ID: fn}


def render_template(
    *,
    code_uri: str = DEFAULT_PACKAGE,
    runtime: str | None = None,
    architecture: str | None = None,
    function_timeout: int = DEFAULT_FUNCTION_TIMEOUT,
    memory_size: int = 1024,
    max_items_per_batch: int | None = 10,
    max_input_bytes_per_batch: int | None = batching.AWS_MAX_INPUT_BYTES,
    max_concurrency: int = 50,
    tolerated_failure_percentage: float = 5,
    reader: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A SAM template deploying the import-csv pipeline.

    `reader`: `statemachine.reader_config`'s keywords (input type, MaxItems, a
    manifest's kind) for the ItemReader; CSV with its header row when None.

    Runtime and architecture default to this interpreter and machine, which is
    what :func:`build_package` checks the compiled extension against: build the
    zip and render the template on the same machine.  Table, import mode, data
    table, buckets, prefixes and the spec location are stack parameters; the
    result bucket is created when ``ResultBucketName`` is left empty.  The
    function's role allows exactly the calls of the chosen ``Mode``
    (:data:`MODE_GRANTS`) on exactly the command and data tables.
    """
    target = build_target()
    runtime = runtime or target.runtime
    architecture = lambda_architecture(architecture or target.architecture)
    if architecture is None:
        raise ValueError("architecture must be x86_64 or arm64")
    if not 1 <= function_timeout <= EXPRESS_CHILD_LIMIT_SECONDS:
        raise ValueError(
            f"function timeout must be 1..{EXPRESS_CHILD_LIMIT_SECONDS} s: an EXPRESS child "
            f"execution runs at most 5 minutes, got {function_timeout}"
        )

    definition = statemachine.import_csv_definition(
        lambda_arn=statemachine.LAMBDA_ARN_PLACEHOLDER,
        max_items_per_batch=max_items_per_batch,
        max_input_bytes_per_batch=max_input_bytes_per_batch,
        max_concurrency=max_concurrency,
        tolerated_failure_percentage=tolerated_failure_percentage,
        result_bucket=statemachine.RESULT_BUCKET_PLACEHOLDER,
        result_prefix="${ResultPrefix}",
        **(reader or {}),
    )
    state_machine_name = "${AWS::StackName}-import-csv"
    code = {"CodeUri": code_uri, "Runtime": runtime, "Architectures": [architecture]}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Description": (
            "importer: CSV in S3 -> Step Functions Distributed Map (import-csv) -> "
            "Lambda -> DynamoDB as MBC CQRS command records"
        ),
        "Parameters": {**_parameters(), **task_template.task_parameters()},
        "Rules": {**_rules(), **task_template.task_rules()},
        "Conditions": {**_conditions(), **task_template.task_conditions()},
        "Resources": {
            RESULT_BUCKET_ID: _result_bucket_resource(),
            FUNCTION_ID: _function_resource(
                code_uri=code_uri,
                runtime=runtime,
                architecture=architecture,
                timeout=function_timeout,
                memory_size=memory_size,
                max_concurrency=max_concurrency,
            ),
            STATE_MACHINE_ID: _state_machine_resource(definition, state_machine_name),
            **command_pipeline_resources(code),
            **import_queue_resources(code),
            **task_template.task_resources(
                code, import_machine_id=STATE_MACHINE_ID, result_bucket=_result_bucket()
            ),
        },
        "Outputs": {
            "ImportCsvStateMachineArn": {
                "Description": "Start an import: StartExecution with {bucket, key}",
                "Value": _ref(STATE_MACHINE_ID),
            },
            "CsvRowsHandlerFunctionName": {"Value": _ref(FUNCTION_ID)},
            "ResultBucketName": {"Value": _result_bucket()},
            "ImportMode": {"Value": _ref("Mode")},
            "CommandStateMachineArn": {
                "Condition": "CommandPipeline",
                "Description": "The command state machine (one execution per command INSERT)",
                "Value": _ref(COMMAND_STATE_MACHINE_ID),
            },
            "ImportActionQueueUrl": {
                "Condition": "ImportQueue",
                "Description": "Send {bucket, key} (or an MBC import job message) to import",
                "Value": _ref(QUEUE_ID),
            },
            **task_template.task_outputs(),
        },
    }
