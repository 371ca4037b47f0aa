"""Amazon States Language for the seed's three state machines.

Every function here returns plain data: a fresh ``dict`` that ``json.dumps``
round-trips, the same for the same arguments.  The Lambda ARN and the result
bucket default to ``${...}`` placeholders that a SAM/CloudFormation
``DefinitionSubstitutions`` fills in (see :mod:`importer.aws.deploy`).

The command-handler and task-handler machines are what the seed's CDK code
synthesizes, state for state.  The import-csv machine is the seed's
Distributed Map with its one bug fixed: the seed's code says
``MaxInputBytesPerBatch: 10`` while its text says "10 rows per batch"; ten
bytes cannot hold a single row, so we emit ``MaxItemsPerBatch`` (and a real
byte cap), and :func:`importer.input.batching.check_limits` refuses the 10-byte form
with an explanation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from importer.input import batching
from importer.input.options import INPUT_TYPES, MAX_ITEMS_LIMIT, header_row_problem

LAMBDA_ARN_PLACEHOLDER = "${CsvRowsHandlerFunctionArn}"
RESULT_BUCKET_PLACEHOLDER = "${ResultBucket}"

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
LAMBDA_INVOKE_WAIT_FOR_TOKEN = "arn:aws:states:::lambda:invoke.waitForTaskToken"
S3_GET_OBJECT = "arn:aws:states:::s3:getObject"
S3_PUT_OBJECT = "arn:aws:states:::s3:putObject"

# What aws-cdk-lib's LambdaInvoke adds with `retryOnServiceExceptions: true`
# (its default): the Lambda service's transient 5xx-class errors.
CDK_LAMBDA_SERVICE_ERRORS: tuple[str, ...] = (
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
)
# The import-csv children also retry Lambda throttling: 50 concurrent children
# can hit the account's concurrency limit, and a throttled invoke never ran.
IMPORT_LAMBDA_RETRY_ERRORS: tuple[str, ...] = (
    *CDK_LAMBDA_SERVICE_ERRORS,
    "Lambda.TooManyRequestsException",
)

# The MBC CQRS Step Functions envelope (the handler unwraps `input`).
MBC_PAYLOAD: dict[str, str] = {
    "source": "step-function",
    "context.$": "$$",
    "input.$": "$",
}

# What each Distributed Map child receives beside its Items.
IMPORT_BATCH_INPUT: dict[str, str] = {
    "Attributes.$": "$",
    "ExecutionId.$": "$$.Execution.Id",
    "ExecutionName.$": "$$.Execution.Name",
    "StartTime.$": "$$.Execution.StartTime",
}

MACHINES: tuple[str, ...] = ("import-csv", "command-handler", "task-handler", "task")

#: The task machine's Lambda (the iterator) in a SAM/CloudFormation substitution.
TASK_LAMBDA_ARN_PLACEHOLDER = "${TaskFunctionArn}"
#: The seed's 15 minutes: the bound on a whole task execution (all its sub-tasks).
TASK_TIMEOUT_SECONDS = 900


def _retry(errors: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {
            "ErrorEquals": list(errors),
            "IntervalSeconds": 2,
            "MaxAttempts": 6,
            "BackoffRate": 2,
        }
    ]


def _lambda_task(
    lambda_arn: str,
    *,
    output_path: str,
    wait_for_task_token: bool = False,
    retry_errors: tuple[str, ...] = CDK_LAMBDA_SERVICE_ERRORS,
    next_state: str | None = None,
) -> dict[str, Any]:
    """A `tasks.LambdaInvoke` as CDK renders it (REQUEST_RESPONSE or callback)."""
    payload = dict(MBC_PAYLOAD)
    if wait_for_task_token:
        payload["taskToken.$"] = "$$.Task.Token"
    state: dict[str, Any] = {"Type": "Task"}
    if next_state is None:
        state["End"] = True
    else:
        state["Next"] = next_state
    state["OutputPath"] = output_path
    state["Retry"] = _retry(retry_errors)
    state["Resource"] = LAMBDA_INVOKE_WAIT_FOR_TOKEN if wait_for_task_token else LAMBDA_INVOKE
    state["Parameters"] = {"FunctionName": lambda_arn, "Payload": payload}
    return state


def reader_config(
    input_type: str = "CSV",
    *,
    max_items: int | None = None,
    manifest_type: str = "ATHENA_DATA",
    data_type: str | None = None,
    csv_headers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """ItemReader's ReaderConfig for one input type (AWS Step Functions developer guide,
    "ItemReader (Map)").

    CSV: header in the first row (or `CSVHeaders` given).  JSON, JSONL, PARQUET:
    the type alone.  An S3 Inventory manifest: `InputType: MANIFEST` alone (the
    guide: with `ManifestType: S3_INVENTORY` no `InputType` may be given).  An Athena
    data manifest: `ManifestType: ATHENA_DATA` with the type of the objects it
    lists as `InputType` (CSV needs a `GIVEN` header, `CSVHeaders`: UNLOAD writes none).
    `MaxItems` (1..100,000,000) when given.
    """
    if input_type not in INPUT_TYPES:
        raise ValueError(f"InputType must be one of {', '.join(INPUT_TYPES)}, got {input_type!r}")
    if csv_headers and (too_long := header_row_problem(list(csv_headers))) is not None:
        raise ValueError(f"CSVHeaders: {too_long}")
    config: dict[str, Any]
    if input_type == "MANIFEST" and manifest_type == "ATHENA_DATA":
        if data_type not in ("CSV", "JSONL", "PARQUET"):
            raise ValueError(
                "an Athena data manifest needs the type of its objects: CSV, JSONL or PARQUET"
            )
        config = {"InputType": data_type, "ManifestType": "ATHENA_DATA"}
        if data_type == "CSV":
            if not csv_headers:
                raise ValueError("an Athena CSV manifest needs CSVHeaders (UNLOAD writes none)")
            config.update(CSVHeaderLocation="GIVEN", CSVHeaders=list(csv_headers))
    elif input_type == "MANIFEST":
        if manifest_type != "S3_INVENTORY":
            raise ValueError(f"ManifestType must be ATHENA_DATA or S3_INVENTORY: {manifest_type!r}")
        # the guide's inventory example; with ManifestType S3_INVENTORY "you must not also
        # specify InputType", so the two are never given together
        config = {"InputType": "MANIFEST"}
    elif input_type == "CSV":
        config = {"InputType": "CSV"}
        if csv_headers:
            config.update(CSVHeaderLocation="GIVEN", CSVHeaders=list(csv_headers))
        else:
            config["CSVHeaderLocation"] = "FIRST_ROW"
    else:
        config = {"InputType": input_type}
    if max_items is not None:
        if isinstance(max_items, bool) or not 1 <= max_items <= MAX_ITEMS_LIMIT:
            raise ValueError(f"MaxItems must be 1..{MAX_ITEMS_LIMIT:,}, got {max_items!r}")
        config["MaxItems"] = max_items
    return config


def import_csv_definition(
    *,
    lambda_arn: str = LAMBDA_ARN_PLACEHOLDER,
    max_items_per_batch: int | None = 10,
    max_input_bytes_per_batch: int | None = batching.AWS_MAX_INPUT_BYTES,
    max_concurrency: int = 50,
    tolerated_failure_percentage: float = 5,
    result_bucket: str = RESULT_BUCKET_PLACEHOLDER,
    result_prefix: str = "import-results",
    input_type: str = "CSV",
    max_items: int | None = None,
    manifest_type: str = "ATHENA_DATA",
    data_type: str | None = None,
    csv_headers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The import-csv state machine: one Distributed Map over a CSV in S3.

    `input_type` (and for a manifest `manifest_type`/`data_type`, `csv_headers`) and
    `max_items` make the ItemReader's ReaderConfig (`reader_config`): the same
    machine reads JSON, JSONL, Parquet or a manifest, and the child takes each.

    Execution input: ``{"bucket": "...", "key": "..."}`` (plus anything else,
    which reaches every child as ``BatchInput.Attributes``).  The ItemReader
    reads the object as CSV with the header in the first row; the ItemBatcher
    groups rows into child inputs ``{"Items": [...], "BatchInput": {...}}``
    which a single EXPRESS child task hands to the Lambda in the MBC envelope.
    ``BatchInput`` carries the execution id, name and start time, so a child's
    records are deterministic (request ids and timestamps come from there,
    not from the clock) and an at-least-once re-run writes the same items.

    Raises :class:`importer.input.batching.BatchLimitError` for limits that Step
    Functions refuses or that cannot hold one row (the seed's
    ``MaxInputBytesPerBatch: 10``).
    """
    batching.check_limits(
        max_items_per_batch, max_input_bytes_per_batch, batch_input=IMPORT_BATCH_INPUT
    )
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
        raise ValueError(f"MaxConcurrency must be an integer, got {max_concurrency!r}")
    if not 0 <= max_concurrency <= 10_000:
        raise ValueError(
            f"MaxConcurrency must be 0..10000 for a Distributed Map, got {max_concurrency}"
        )
    if isinstance(tolerated_failure_percentage, bool) or not (
        0 <= tolerated_failure_percentage <= 100
    ):
        raise ValueError(
            f"ToleratedFailurePercentage must be 0..100, got {tolerated_failure_percentage!r}"
        )
    if not result_prefix or result_prefix.startswith("/"):
        raise ValueError(f"result prefix must be a non-empty relative key: {result_prefix!r}")

    batcher: dict[str, Any] = {}
    if max_items_per_batch is not None:
        batcher["MaxItemsPerBatch"] = max_items_per_batch
    if max_input_bytes_per_batch is not None:
        batcher["MaxInputBytesPerBatch"] = max_input_bytes_per_batch
    batcher["BatchInput"] = dict(IMPORT_BATCH_INPUT)
    read_as = data_type if input_type == "MANIFEST" and data_type else input_type
    if read_as != "CSV":
        # the child maps typed items by their source: a Parquet row's timestamps arrive
        # as epoch milliseconds (docs/aws-facts.md, ItemReader)
        batcher["BatchInput"]["InputType"] = read_as

    tolerated: int | float = tolerated_failure_percentage
    if isinstance(tolerated, float) and tolerated.is_integer():
        tolerated = int(tolerated)

    child = _lambda_task(
        lambda_arn, output_path="$.Payload", retry_errors=IMPORT_LAMBDA_RETRY_ERRORS
    )
    return {
        "Comment": (
            "Processes large CSV files with distributed batch processing: reads "
            "s3://{bucket}/{key} as CSV (header in the first row), cuts it into batches "
            "and runs one EXPRESS child per batch that writes MBC CQRS command records"
        ),
        "StartAt": "import-csv",
        "States": {
            "import-csv": {
                "Type": "Map",
                "End": True,
                "Label": "import-csv",
                "ItemReader": {
                    "Resource": S3_GET_OBJECT,
                    "ReaderConfig": reader_config(
                        input_type,
                        max_items=max_items,
                        manifest_type=manifest_type,
                        data_type=data_type,
                        csv_headers=csv_headers,
                    ),
                    "Parameters": {"Bucket.$": "$.bucket", "Key.$": "$.key"},
                },
                "ItemBatcher": batcher,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
                    "StartAt": "csv_rows_handler",
                    "States": {"csv_rows_handler": child},
                },
                "MaxConcurrency": max_concurrency,
                "ToleratedFailurePercentage": tolerated,
                "ResultWriter": {
                    "Resource": S3_PUT_OBJECT,
                    "Parameters": {"Bucket": result_bucket, "Prefix": result_prefix},
                },
            }
        },
    }


def command_handler_definition(
    *,
    lambda_arn: str = LAMBDA_ARN_PLACEHOLDER,
    wait_timeout_seconds: int | None = None,
) -> dict[str, Any]:
    """The seed's command-handler machine, as its CDK construct synthesizes.

    ``check_version`` returns ``result``: 0 means the previous version is in
    place (the mermaid diagram's "version ok? Yes") and goes straight to
    ``set_ttl_command``; 1 ("No") parks on ``wait_prev_command`` until the
    previous command's execution calls back with the task token; -1 fails the
    execution with the ``error``/``cause`` the handler returned; anything else
    waits too (the CDK ``otherwise``).  Every Lambda task gets the MBC
    envelope, ``OutputPath: $.Payload[0][0]`` and CDK's service-exception
    retry.  Logging and tracing are state-machine properties, not ASL.

    ``wait_timeout_seconds`` (default None: the seed has none) bounds
    ``wait_prev_command``: a version whose predecessor failed (and so never
    releases it) then fails with ``States.Timeout`` instead of waiting for a
    year; ``importer sync`` can apply it later.
    """
    if wait_timeout_seconds is not None and (
        isinstance(wait_timeout_seconds, bool)
        or not isinstance(wait_timeout_seconds, int)
        or not 1 <= wait_timeout_seconds <= 31_536_000
    ):
        raise ValueError(f"wait timeout must be 1..31536000 seconds, got {wait_timeout_seconds!r}")
    wait_state = _lambda_task(
        lambda_arn,
        output_path="$.Payload[0][0]",
        next_state="set_ttl_command",
        wait_for_task_token=True,
    )
    if wait_timeout_seconds is not None:
        wait_state["TimeoutSeconds"] = wait_timeout_seconds

    def task(next_state: str | None, **kw: Any) -> dict[str, Any]:
        return _lambda_task(lambda_arn, output_path="$.Payload[0][0]", next_state=next_state, **kw)

    return {
        "Comment": "Handles command stream processing with version control",
        "StartAt": "check_version",
        "States": {
            "check_version": task("check_version_result"),
            "check_version_result": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.result", "NumericEquals": 0, "Next": "set_ttl_command"},
                    {"Variable": "$.result", "NumericEquals": 1, "Next": "wait_prev_command"},
                    {"Variable": "$.result", "NumericEquals": -1, "Next": "fail"},
                ],
                "Default": "wait_prev_command",
            },
            "set_ttl_command": task("history_copy"),
            "history_copy": task("transform_data"),
            "transform_data": task("sync_data_all"),
            "sync_data_all": {
                "Type": "Map",
                "Next": "finish",
                "ItemsPath": "$",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "sync_data",
                    "States": {"sync_data": task(None)},
                },
                "MaxConcurrency": 0,
            },
            "finish": task("success"),
            "success": {"Type": "Succeed"},
            "wait_prev_command": wait_state,
            "fail": {"Type": "Fail", "ErrorPath": "$.error", "CausePath": "$.cause"},
        },
    }


def task_handler_definition(*, lambda_arn: str = LAMBDA_ARN_PLACEHOLDER) -> dict[str, Any]:
    """The seed's task-handler machine: an inline Map, two items at a time.

    The execution input is the array of sub-tasks; each goes to the ``iterator``
    Lambda task in the MBC envelope.  The whole execution times out after
    15 minutes (CDK ``timeout: Duration.minutes(15)``).
    """
    return _task_map(
        "Handles parallel task execution with concurrency control",
        _lambda_task(lambda_arn, output_path="$.Payload[0][0]"),
        900,
    )


def _task_map(comment: str, iterator: dict[str, Any], timeout_seconds: int) -> dict[str, Any]:
    """The seed's task machine: an inline Map over the sub-tasks, two at a time, its
    `iterator` state run per sub-task, the whole execution bounded in time."""
    return {
        "Comment": comment,
        "StartAt": "map_state",
        "States": {
            "map_state": {
                "Type": "Map",
                "End": True,
                "InputPath": "$",
                "ItemsPath": "$",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "iterator",
                    "States": {"iterator": iterator},
                },
                "MaxConcurrency": 2,
            }
        },
        "TimeoutSeconds": timeout_seconds,
    }


def task_definition(
    *,
    lambda_arn: str = TASK_LAMBDA_ARN_PLACEHOLDER,
    timeout_seconds: int = TASK_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """The task state machine that runs a multi-file import: one sub-task per file.

    The seed's shape (``map_state``: an inline Map, ``MaxConcurrency 2``,
    ``ItemsPath $`` over the sub-task array the framework's
    ``handleStepFunctionTask`` starts it with; ``iterator`` in the MBC envelope,
    ``OutputPath $.Payload[0][0]``; the whole execution bounded by
    ``timeout_seconds``, the seed's 15 minutes by default), with one change:
    the iterator is a callback task (``lambda:invoke.waitForTaskToken``, its
    token in the payload as the command machine's ``wait_prev_command`` has it).
    The iterator Lambda starts the import-csv machine for its file and returns;
    the iteration resumes when that import's end is reported
    (``importer.aws.task_machine``: SendTaskSuccess with
    ``{"Payload": [[result]]}``), as the framework's ZIP orchestrator waits
    for each CSV job.  So no Lambda waits on a file, and an import that fails
    resumes its iteration with a FAILED result instead of failing the Map: the
    other files go on.  Deploy it under a name containing ``sfn-task``: the
    framework routes a Step Functions event to its task handler only then
    (``EventFactoryAddedTask.transformStepFunction``).
    """
    if (
        isinstance(timeout_seconds, bool)
        or not isinstance(timeout_seconds, int)
        or not 1 <= timeout_seconds <= 31_536_000
    ):
        raise ValueError(f"task timeout must be 1..31536000 seconds, got {timeout_seconds!r}")
    iterator = _lambda_task(lambda_arn, output_path="$.Payload[0][0]", wait_for_task_token=True)
    return _task_map(
        "importer: a multi-file import as an MBC step-function task; each sub-task (one "
        "file) runs the import-csv machine, two at a time",
        iterator,
        timeout_seconds,
    )


def all_definitions(
    *,
    lambda_arn: str = LAMBDA_ARN_PLACEHOLDER,
    **import_csv_options: Any,
) -> dict[str, dict[str, Any]]:
    """All three machines keyed by name; extra keywords go to import-csv."""
    return {
        "import-csv": import_csv_definition(lambda_arn=lambda_arn, **import_csv_options),
        "command-handler": command_handler_definition(lambda_arn=lambda_arn),
        "task-handler": task_handler_definition(lambda_arn=lambda_arn),
        "task": task_definition(
            lambda_arn=TASK_LAMBDA_ARN_PLACEHOLDER
            if lambda_arn == LAMBDA_ARN_PLACEHOLDER
            else lambda_arn
        ),
    }


def definition(name: str, **options: Any) -> dict[str, Any]:
    """One machine by name (see :data:`MACHINES`)."""
    if name == "import-csv":
        return import_csv_definition(**options)
    lambda_arn = options.pop("lambda_arn", LAMBDA_ARN_PLACEHOLDER)
    if name == "command-handler":
        wait = options.pop("wait_timeout_seconds", None)
        if options:
            raise TypeError(
                f"{name} takes lambda_arn and wait_timeout_seconds, got {sorted(options)}"
            )
        return command_handler_definition(lambda_arn=lambda_arn, wait_timeout_seconds=wait)
    if name == "task":
        timeout = options.pop("timeout_seconds", TASK_TIMEOUT_SECONDS)
        if options:
            raise TypeError(f"{name} takes lambda_arn and timeout_seconds, got {sorted(options)}")
        if lambda_arn == LAMBDA_ARN_PLACEHOLDER:
            lambda_arn = TASK_LAMBDA_ARN_PLACEHOLDER
        return task_definition(lambda_arn=lambda_arn, timeout_seconds=timeout)
    if options:
        raise TypeError(f"{name} takes only lambda_arn, got {sorted(options)}")
    if name == "task-handler":
        return task_handler_definition(lambda_arn=lambda_arn)
    raise ValueError(f"unknown state machine {name!r}; expected one of {', '.join(MACHINES)}")
