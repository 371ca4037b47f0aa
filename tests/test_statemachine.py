"""The generated Amazon States Language: structure, seed fidelity, asl-validator."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from importer.aws import statemachine
from importer.aws.statemachine import (
    all_definitions,
    command_handler_definition,
    import_csv_definition,
    task_handler_definition,
)
from importer.input import batching

ROOT = Path(__file__).resolve().parent.parent
ASL_VALIDATOR = ROOT / "tools" / "node_modules" / ".bin" / "asl-validator"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:importer-csv-rows"

MBC_PAYLOAD = {"source": "step-function", "context.$": "$$", "input.$": "$"}
CDK_RETRY = {
    "ErrorEquals": [
        "Lambda.ClientExecutionTimeoutException",
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
    ],
    "IntervalSeconds": 2,
    "MaxAttempts": 6,
    "BackoffRate": 2,
}


def require_tool(path: Path, what: str) -> None:
    """Skip when a tool is missing locally; fail when CI says tools are required."""
    if path.exists():
        return
    message = f"{what} not installed at {path} (run: npm ci --prefix tools)"
    if os.environ.get("IMPORTER_REQUIRE_TOOLS"):
        pytest.fail(message)
    pytest.skip(message)


def asl_validate(*definitions: dict) -> subprocess.CompletedProcess[str]:
    require_tool(ASL_VALIDATOR, "asl-validator")
    args = [str(ASL_VALIDATOR)]
    for d in definitions:
        args += ["--json-definition", json.dumps(d)]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def the_map(definition: dict) -> dict:
    return definition["States"]["import-csv"]


# ------------------------------------------------------------------ import-csv


def test_import_csv_is_a_distributed_express_map_over_a_csv_in_s3():
    d = import_csv_definition()
    assert d["StartAt"] == "import-csv"
    assert d["Comment"]
    m = the_map(d)
    assert m["Type"] == "Map" and m["End"] is True
    assert m["Label"] == "import-csv"
    assert m["ItemProcessor"]["ProcessorConfig"] == {
        "Mode": "DISTRIBUTED",
        "ExecutionType": "EXPRESS",
    }
    assert m["ItemReader"] == {
        "Resource": "arn:aws:states:::s3:getObject",
        "ReaderConfig": {"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"},
        "Parameters": {"Bucket.$": "$.bucket", "Key.$": "$.key"},
    }
    assert "ItemsPath" not in m  # the ItemReader supplies the items
    assert m["MaxConcurrency"] == 50
    assert m["ToleratedFailurePercentage"] == 5
    assert m["ResultWriter"] == {
        "Resource": "arn:aws:states:::s3:putObject",
        "Parameters": {"Bucket": "${ResultBucket}", "Prefix": "import-results"},
    }


def test_import_csv_batches_by_rows_not_the_seeds_ten_bytes():
    batcher = the_map(import_csv_definition())["ItemBatcher"]
    assert batcher["MaxItemsPerBatch"] == 10
    assert batcher["MaxInputBytesPerBatch"] == 262_144
    assert batcher["BatchInput"] == {
        "Attributes.$": "$",
        "ExecutionId.$": "$$.Execution.Id",
        "ExecutionName.$": "$$.Execution.Name",
        "StartTime.$": "$$.Execution.StartTime",
    }


def test_import_csv_child_invokes_the_lambda_in_the_mbc_envelope():
    processor = the_map(import_csv_definition(lambda_arn=ARN))["ItemProcessor"]
    assert processor["StartAt"] == "csv_rows_handler"
    assert list(processor["States"]) == ["csv_rows_handler"]
    task = processor["States"]["csv_rows_handler"]
    assert task["Type"] == "Task" and task["End"] is True
    assert task["Resource"] == "arn:aws:states:::lambda:invoke"
    assert task["Parameters"] == {"FunctionName": ARN, "Payload": MBC_PAYLOAD}
    assert task["OutputPath"] == "$.Payload"
    [retry] = task["Retry"]
    assert set(retry["ErrorEquals"]) >= {
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
    }
    assert (retry["IntervalSeconds"], retry["MaxAttempts"], retry["BackoffRate"]) == (2, 6, 2)


def test_import_csv_options_reach_the_definition():
    d = import_csv_definition(
        lambda_arn=ARN,
        max_items_per_batch=500,
        max_input_bytes_per_batch=None,
        max_concurrency=7,
        tolerated_failure_percentage=12.5,
        result_bucket="results",
        result_prefix="runs/x",
    )
    m = the_map(d)
    assert m["ItemBatcher"]["MaxItemsPerBatch"] == 500
    assert "MaxInputBytesPerBatch" not in m["ItemBatcher"]
    assert m["MaxConcurrency"] == 7
    assert m["ToleratedFailurePercentage"] == 12.5
    assert m["ResultWriter"]["Parameters"] == {"Bucket": "results", "Prefix": "runs/x"}
    bytes_only = the_map(import_csv_definition(max_items_per_batch=None))["ItemBatcher"]
    assert "MaxItemsPerBatch" not in bytes_only
    assert bytes_only["MaxInputBytesPerBatch"] == 262_144


def test_the_seeds_ten_byte_batch_is_refused_with_an_explanation():
    with pytest.raises(batching.BatchLimitError, match="MaxItemsPerBatch|batch-items"):
        import_csv_definition(max_items_per_batch=None, max_input_bytes_per_batch=10)
    with pytest.raises(batching.BatchLimitError):
        import_csv_definition(max_input_bytes_per_batch=262_145)
    with pytest.raises(batching.BatchLimitError):
        import_csv_definition(max_items_per_batch=0)
    with pytest.raises(batching.BatchLimitError):
        import_csv_definition(max_items_per_batch=None, max_input_bytes_per_batch=None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_concurrency": -1},
        {"max_concurrency": 10_001},
        {"max_concurrency": 2.5},
        {"tolerated_failure_percentage": 101},
        {"tolerated_failure_percentage": -1},
        {"result_prefix": ""},
    ],
)
def test_import_csv_rejects_impossible_map_settings(kwargs):
    with pytest.raises(ValueError):
        import_csv_definition(**kwargs)


# ------------------------------------------------------------- command-handler


def test_command_handler_states_and_transitions_follow_the_seed():
    d = command_handler_definition(lambda_arn=ARN)
    s = d["States"]
    assert d["StartAt"] == "check_version"
    assert set(s) == {
        "check_version",
        "check_version_result",
        "wait_prev_command",
        "set_ttl_command",
        "history_copy",
        "transform_data",
        "sync_data_all",
        "finish",
        "success",
        "fail",
    }
    assert s["check_version"]["Next"] == "check_version_result"
    assert s["wait_prev_command"]["Next"] == "set_ttl_command"
    assert s["set_ttl_command"]["Next"] == "history_copy"
    assert s["history_copy"]["Next"] == "transform_data"
    assert s["transform_data"]["Next"] == "sync_data_all"
    assert s["sync_data_all"]["Next"] == "finish"
    assert s["finish"]["Next"] == "success"
    assert s["success"] == {"Type": "Succeed"}
    assert s["fail"] == {"Type": "Fail", "CausePath": "$.cause", "ErrorPath": "$.error"}


def test_command_handler_choice_maps_version_results():
    choice = command_handler_definition()["States"]["check_version_result"]
    assert choice["Type"] == "Choice"
    routes = {(c["Variable"], c["NumericEquals"]): c["Next"] for c in choice["Choices"]}
    assert routes == {
        ("$.result", 0): "set_ttl_command",
        ("$.result", 1): "wait_prev_command",
        ("$.result", -1): "fail",
    }
    assert choice["Default"] == "wait_prev_command"


def _lambda_tasks(states: dict) -> dict[str, dict]:
    found = {}
    for name, state in states.items():
        if state["Type"] == "Task":
            found[name] = state
        if state["Type"] == "Map":
            found.update(_lambda_tasks(state["ItemProcessor"]["States"]))
    return found


def test_command_handler_lambda_tasks_are_cdk_lambda_invokes():
    tasks = _lambda_tasks(command_handler_definition(lambda_arn=ARN)["States"])
    assert set(tasks) == {
        "check_version",
        "wait_prev_command",
        "set_ttl_command",
        "history_copy",
        "transform_data",
        "sync_data",
        "finish",
    }
    for name, task in tasks.items():
        assert task["OutputPath"] == "$.Payload[0][0]", name
        assert task["Retry"] == [CDK_RETRY], name
        assert task["Parameters"]["FunctionName"] == ARN, name
        if name == "wait_prev_command":
            assert task["Resource"] == "arn:aws:states:::lambda:invoke.waitForTaskToken"
            assert task["Parameters"]["Payload"] == {**MBC_PAYLOAD, "taskToken.$": "$$.Task.Token"}
        else:
            assert task["Resource"] == "arn:aws:states:::lambda:invoke", name
            assert task["Parameters"]["Payload"] == MBC_PAYLOAD, name


def test_command_handler_syncs_every_target_in_an_unbounded_map():
    m = command_handler_definition()["States"]["sync_data_all"]
    assert m["Type"] == "Map"
    assert m["MaxConcurrency"] == 0
    assert m["ItemsPath"] == "$"
    assert m["ItemProcessor"]["ProcessorConfig"] == {"Mode": "INLINE"}
    assert m["ItemProcessor"]["StartAt"] == "sync_data"
    assert m["ItemProcessor"]["States"]["sync_data"]["End"] is True


# ---------------------------------------------------------------- task-handler


def test_task_handler_is_a_two_wide_map_with_a_15_minute_timeout():
    d = task_handler_definition(lambda_arn=ARN)
    assert d["StartAt"] == "map_state"
    assert d["TimeoutSeconds"] == 900
    m = d["States"]["map_state"]
    assert m["Type"] == "Map" and m["End"] is True
    assert m["MaxConcurrency"] == 2
    assert m["ItemsPath"] == "$" and m["InputPath"] == "$"
    assert m["ItemProcessor"]["StartAt"] == "iterator"
    it = m["ItemProcessor"]["States"]["iterator"]
    assert it["End"] is True
    assert it["OutputPath"] == "$.Payload[0][0]"
    assert it["Parameters"] == {"FunctionName": ARN, "Payload": MBC_PAYLOAD}
    assert it["Retry"] == [CDK_RETRY]


# ------------------------------------------------------------------------ task


def test_task_machine_is_the_seeds_map_with_a_callback_iterator():
    d = statemachine.task_definition(lambda_arn=ARN)
    assert d["StartAt"] == "map_state" and d["TimeoutSeconds"] == 900
    m = d["States"]["map_state"]
    assert (m["Type"], m["MaxConcurrency"], m["ItemsPath"], m["InputPath"]) == ("Map", 2, "$", "$")
    assert m["ItemProcessor"]["ProcessorConfig"] == {"Mode": "INLINE"}
    it = m["ItemProcessor"]["States"]["iterator"]
    assert it["Resource"] == "arn:aws:states:::lambda:invoke.waitForTaskToken"
    assert it["Parameters"] == {
        "FunctionName": ARN,
        "Payload": {**MBC_PAYLOAD, "taskToken.$": "$$.Task.Token"},
    }
    assert it["OutputPath"] == "$.Payload[0][0]" and it["End"] is True
    assert it["Retry"] == [CDK_RETRY]
    assert statemachine.task_definition(timeout_seconds=3600)["TimeoutSeconds"] == 3600
    assert (
        statemachine.definition("task")["States"]["map_state"]["ItemProcessor"]["States"][
            "iterator"
        ]["Parameters"]["FunctionName"]
        == "${TaskFunctionArn}"
    )
    with pytest.raises(ValueError, match="task timeout"):
        statemachine.task_definition(timeout_seconds=0)


# --------------------------------------------------------------------- general


def test_all_definitions_are_keyed_by_machine_name():
    defs = all_definitions(lambda_arn=ARN, max_concurrency=9)
    assert list(defs) == ["import-csv", "command-handler", "task-handler", "task"]
    assert the_map(defs["import-csv"])["MaxConcurrency"] == 9
    assert defs["task-handler"] == task_handler_definition(lambda_arn=ARN)
    assert list(defs) == list(statemachine.MACHINES)


def test_definitions_are_deterministic_json_data():
    first = all_definitions()
    second = all_definitions()
    assert first == second
    for name, d in first.items():
        text = json.dumps(d, sort_keys=True)
        assert json.loads(text) == d, name
        assert text == json.dumps(second[name], sort_keys=True)


def test_definitions_do_not_share_mutable_state():
    d = import_csv_definition()
    the_map(d)["ItemBatcher"]["BatchInput"]["Attributes.$"] = "$.changed"
    the_map(d)["ItemProcessor"]["States"]["csv_rows_handler"]["Retry"][0]["MaxAttempts"] = 1
    fresh = the_map(import_csv_definition())
    assert fresh["ItemBatcher"]["BatchInput"]["Attributes.$"] == "$"
    assert fresh["ItemProcessor"]["States"]["csv_rows_handler"]["Retry"][0]["MaxAttempts"] == 6


def test_definition_by_name():
    assert statemachine.definition("task-handler") == task_handler_definition()
    with pytest.raises(ValueError, match="unknown state machine"):
        statemachine.definition("nope")


# --------------------------------------------------------------- asl-validator


@pytest.mark.parametrize("name", statemachine.MACHINES)
@pytest.mark.parametrize("lambda_arn", [statemachine.LAMBDA_ARN_PLACEHOLDER, ARN])
def test_asl_validator_accepts_every_generated_definition(name, lambda_arn):
    d = all_definitions(lambda_arn=lambda_arn)[name]
    result = asl_validate(d)
    assert result.returncode == 0, result.stdout + result.stderr


def test_asl_validator_accepts_non_default_import_options():
    d = import_csv_definition(
        lambda_arn=ARN,
        max_items_per_batch=None,
        max_input_bytes_per_batch=65_536,
        max_concurrency=1000,
        # asl-validator 4.0.0's schema takes only whole percentages, although the
        # service's API types it as a float: test a whole one here.
        tolerated_failure_percentage=1.0,
        result_bucket="my-results",
    )
    result = asl_validate(d)
    assert result.returncode == 0, result.stdout + result.stderr


def test_asl_validator_is_really_checking():
    d = import_csv_definition()
    the_map(d)["ItemBatcher"]["MaxItemsPerBatch"] = "ten"
    broken = command_handler_definition()
    broken["States"]["finish"]["Next"] = "nowhere"
    for bad in (d, broken):
        result = asl_validate(bad)
        assert result.returncode != 0, json.dumps(bad)[:200]


# ------------------------------------------------------- ItemReader input types

READERS = [
    ({"input_type": "CSV"}, {"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"}),
    ({"input_type": "JSON"}, {"InputType": "JSON"}),
    ({"input_type": "JSONL", "max_items": 500}, {"InputType": "JSONL", "MaxItems": 500}),
    ({"input_type": "PARQUET"}, {"InputType": "PARQUET"}),
    (
        {"input_type": "MANIFEST", "manifest_type": "S3_INVENTORY"},
        {"InputType": "MANIFEST"},
    ),
    (
        {"input_type": "MANIFEST", "data_type": "PARQUET"},
        {"InputType": "PARQUET", "ManifestType": "ATHENA_DATA"},
    ),
    (
        {"input_type": "MANIFEST", "data_type": "CSV", "csv_headers": ["sku", "name"]},
        {
            "InputType": "CSV",
            "ManifestType": "ATHENA_DATA",
            "CSVHeaderLocation": "GIVEN",
            "CSVHeaders": ["sku", "name"],
        },
    ),
]


@pytest.mark.parametrize(("options", "config"), READERS)
def test_each_input_type_emits_its_reader_config_and_validates(options, config):
    d = import_csv_definition(lambda_arn=ARN, **options)
    assert the_map(d)["ItemReader"]["ReaderConfig"] == config
    result = asl_validate(d)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input_type": "XML"}, "InputType must be one of"),
        ({"input_type": "MANIFEST"}, "Athena data manifest needs"),
        ({"input_type": "MANIFEST", "data_type": "CSV"}, "CSVHeaders"),
        ({"input_type": "JSONL", "max_items": 0}, "MaxItems must be"),
    ],
)
def test_impossible_reader_configs_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        import_csv_definition(**options)
