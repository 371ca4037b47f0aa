"""Run the generated import-csv ASL, unmodified, on moto's own Step Functions engine.

moto 5.2 ships LocalStack's ASL interpreter (``moto.stepfunctions.parser``),
enabled per mock with ``mock_aws(config={"stepfunctions": {"execute_state_machine":
True}})``.  It really executes a Distributed Map: ItemReader ``s3:getObject``
from moto S3, ``MaxConcurrency`` worker threads, one child program per item,
the child's Task with its Parameters/``$$``/OutputPath/Retry, the Map's
``ResultWriter`` resource, execution status and history.  What it lacks, and
what :func:`sfn_shim` adds, is exactly this (each item one ``mock.patch``,
undone on exit; moto's own code paths run everywhere else):

1. **Parser** (``AmazonStateLanguageParser.parse``).  moto's grammar rejects
   ``ItemBatcher``, ``"ExecutionType": "EXPRESS"`` and an *integer*
   ``ToleratedFailurePercentage`` (its grammar wants ``5.0``, not ``5``).  The
   shim hands moto's parser a copy of the JSON with ``ItemBatcher`` lifted out,
   ``EXPRESS`` read as ``STANDARD`` (moto runs both child kinds the same way,
   in-process) and the percentage written as a float; the definition stored in
   the state machine stays byte-for-byte what the caller sent.  ``BatchInput``
   is compiled by moto's own preprocessor (as a Pass state's ``Parameters``),
   so ``$``/``$$`` in it are evaluated by moto's payload-template code.
2. **ItemReader CSV rules.**  moto's CSV reader is ``csv.reader`` and sorts the
   keys of every item; the shim reads the ``getObject`` body with
   :class:`importer.input.source.CsvReader` (docs/aws-facts.md, ItemReader: header order kept,
   backslash escapes, padding/truncation to the header width).  A record the
   reader cannot parse fails the Map run with ``States.ItemReaderFailed``.
3. **ItemBatcher.**  Between the ItemReader and the child runs, items are cut
   into ``{"Items": [...], "BatchInput": {...}}`` with
   :class:`importer.input.batching.Batcher` (docs/aws-facts.md, ItemBatcher: MaxItemsPerBatch /
   MaxInputBytesPerBatch, bytes of the compact UTF-8 child input).  An item
   that cannot fit alone fails the Map run (``States.Runtime``) naming it.
   The ``...Path`` forms are not supported (the generated ASL uses none).
4. **ToleratedFailurePercentage / Count.**  moto parses them but ignores them
   (a failed child just yields ``null``).  The shim counts the *items* of
   failed children; above the threshold the Map run fails with
   ``States.ExceedToleratedFailureThreshold``.
5. **ResultWriter files.**  moto writes ``manifest.json`` with empty
   ``ResultFiles``; the shim records every child (input, output or
   error/cause, status) and writes ``SUCCEEDED_0.json`` / ``FAILED_0.json``
   next to a manifest that lists them.  (When the threshold fails the run,
   no results are written: moto never reaches the ResultWriter then.)
6. **Lambda.**  moto's Lambda would need Docker; ``lambda:invoke`` is routed
   to a Python callable per function ARN with the real wire contract: the
   Payload arrives as JSON bytes, the return value goes back as JSON, and an
   exception becomes ``FunctionError: Unhandled`` with an
   ``{"errorType", "errorMessage"}`` payload (so ``errorType`` is the error
   name the Map sees, as on AWS).  Every invocation event is recorded.
8. **ItemReader JSONL, PARQUET and MANIFEST.**  moto's engine reads CSV and JSON
   only (its grammar refuses the other ``InputType`` values and ``ManifestType``).
   The parser is handed a stand-in ReaderConfig (CSV with the real one carried in
   ``CSVHeaders``), ``getObject`` keeps the body's bytes (a Parquet object is not
   text), and the items are made as ItemReader makes them (docs/aws-facts.md,
   ItemReader): a JSONL line's value, a Parquet row's typed columns (timestamps as
   epoch milliseconds), an Athena data manifest's objects one after another, each
   read as its ``InputType``, and an S3 Inventory ``manifest.json``'s gzip CSV files
   (in its ``destinationBucket``, no header: ``fileSchema`` names the columns), one
   item per listed object, its columns as strings.  A line that is not JSON, an
   unreadable Parquet object or a listed object that is missing fails the Map run
   (``States.ItemReaderFailed``).
7. **A moto bug.**  ``start_execution`` deep-copies the state machine, which
   holds its backend, which holds every earlier execution with its thread
   locks: after one execution in a region, the next ``start_execution`` fails
   with "cannot pickle '_thread.RLock' object".  The copy now shares the
   backend and the executions list instead of copying them.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import io
import itertools
import json
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from moto.stepfunctions.models import StateMachine
from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
    StatesErrorName,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
    StatesErrorNameType,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval import (
    resource_eval_s3 as reader_s3,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval.resource_output_transformer import (  # noqa: E501
    transformer_csv,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
    distributed_iteration_component as dist,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor import (  # noqa: E501
    distributed_item_processor_worker as dist_worker,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.resource_eval import (  # noqa: E501
    resource_eval_s3 as result_s3,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.state_map import StateMap
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
from moto.stepfunctions.parser.asl.eval.program_state import ProgramEnded, ProgramError
from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for
from moto.stepfunctions.parser.asl.utils.encoding import to_json_str
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

from importer.input.batching import Batcher
from importer.input.options import CsvOptions
from importer.input.source import CsvReader, ParsedRow

MOTO_SFN_CONFIG = {"stepfunctions": {"execute_state_machine": True}}
_DELIMITERS = {"COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "SPACE": " ", "TAB": "\t"}
_BATCHER = "_shim_item_batcher"
_RESULTS = "_shim_child_results"


@dataclass
class ShimLog:
    """What the shim saw: every Lambda event, in invocation order."""

    invocations: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _fail(env: Any, typ: Any, cause: str) -> FailureEventException:
    name = StatesErrorName(typ=typ)
    details = MapRunFailedEventDetails(error=name.error_name, cause=cause)
    return FailureEventException(
        FailureEvent(
            env, name, HistoryEventType.TaskFailed, EventDetails(mapRunFailedEventDetails=details)
        )
    )


# 1. parser ------------------------------------------------------------------------
_moto_parse = AmazonStateLanguageParser.parse


def _lift(states: dict[str, Any], lifted: dict[str, dict[str, Any]]) -> None:
    for name, state in states.items():
        if state.get("Type") != "Map":
            continue
        processor = state.get("ItemProcessor") or state.get("Iterator") or {}
        config = processor.get("ProcessorConfig") or {}
        if config.get("ExecutionType") == "EXPRESS":
            config["ExecutionType"] = "STANDARD"
        pct = state.get("ToleratedFailurePercentage")
        if isinstance(pct, int):
            state["ToleratedFailurePercentage"] = float(pct)
        _lift_reader(state)
        if "ItemBatcher" in state:
            batcher = state.pop("ItemBatcher")
            if any(k.endswith("Path") for k in batcher):
                raise NotImplementedError(f"sfn_shim: ItemBatcher ...Path in {name!r}")
            bi = batcher.get("BatchInput", {})
            pass_state = {"Type": "Pass", "Parameters": bi, "End": True}
            program, _ = _moto_parse(json.dumps({"StartAt": "b", "States": {"b": pass_state}}))
            lifted[name] = {
                "max_items": batcher.get("MaxItemsPerBatch"),
                "max_bytes": batcher.get("MaxInputBytesPerBatch"),
                "batch_input": program.states.states["b"].parameters if bi else None,
                "count": state.get("ToleratedFailureCount"),
            }
        _lift(processor.get("States") or {}, lifted)


def _lift_reader(state: dict[str, Any]) -> None:
    """A ReaderConfig moto cannot parse becomes a CSV one carrying it (see 8.)."""
    reader = state.get("ItemReader") or {}
    config = reader.get("ReaderConfig") or {}
    if config.get("InputType") in _TYPED_TYPES or "ManifestType" in config:
        stand_in: dict[str, Any] = {
            "InputType": "CSV",
            "CSVHeaderLocation": "GIVEN",
            "CSVHeaders": [_TYPED, base64.b64encode(json.dumps(config).encode()).decode()],
        }
        if "MaxItems" in config:
            stand_in["MaxItems"] = config["MaxItems"]
        reader["ReaderConfig"] = stand_in


def _attach(states: Any, lifted: dict[str, dict[str, Any]]) -> None:
    for name, state in states.states.items():
        if isinstance(state, StateMap):
            if name in lifted:
                setattr(state.iteration_component, _BATCHER, lifted[name])
            _attach(state.iteration_component._states, lifted)


def _parse(definition: str) -> Any:
    doc = json.loads(definition)
    lifted: dict[str, dict[str, Any]] = {}
    _lift(doc.get("States") or {}, lifted)
    program, tree = _moto_parse(json.dumps(doc))
    _attach(program.states, lifted)
    return program, tree


# 2. ItemReader CSV -------------------------------------------------------------------
def _csv_items(self: Any, env: Any) -> None:
    config = env.stack.pop()
    body: str = env.stack.pop()
    headers = config.get("CSVHeaders") or []
    if headers and headers[0] == _TYPED:
        real = json.loads(base64.b64decode(headers[1]))
        raw = body.raw if isinstance(body, _Body) else body.encode("utf-8")
        try:
            items = list(itertools.islice(_typed_items(real, raw), config["MaxItemsValue"]))
        except _ReaderFailed as exc:
            raise _fail(env, StatesErrorNameType.StatesItemReaderFailed, str(exc)) from None
        env.stack.append(items)
        return
    options = CsvOptions(
        delimiter=_DELIMITERS[config.get("CSVDelimiter", "COMMA")],
        header_location=config["CSVHeaderLocation"],
        headers=tuple(config["CSVHeaders"]) if config.get("CSVHeaders") else None,
    )
    reader = CsvReader(io.BytesIO(body.encode("utf-8")), options)
    items = []
    for row in itertools.islice(reader, config["MaxItemsValue"]):
        if row.error:
            raise _fail(
                env, StatesErrorNameType.StatesItemReaderFailed, f"line {row.line}: {row.error}"
            )
        items.append(dict(zip(reader.header, row.fields, strict=True)))
    env.stack.append(items)


# 8. ItemReader JSONL, PARQUET, MANIFEST ---------------------------------------------
_TYPED = "__importer_sfn_shim_reader_config__"
_TYPED_TYPES = ("JSONL", "PARQUET", "MANIFEST")


class _Body(str):
    """An object's body as moto's readers take it (text), keeping its bytes."""

    raw: bytes


class _ReaderFailed(Exception):
    """The ItemReader cannot read its source: the Map run fails."""


def _get_object(env: Any, runtime: Any, credentials: Any) -> None:
    s3 = boto_client_for(region=runtime.region, service="s3", state_credentials=credentials)
    parameters = env.stack.pop()
    raw = s3.get_object(**parameters)["Body"].read()
    try:
        body = _Body(raw.decode("utf-8"))
    except UnicodeDecodeError:
        body = _Body("")
    body.raw = raw
    env.stack.append(body)


def _json_value(value: Any) -> Any:
    """A Parquet value as the item's JSON carries it (timestamps: epoch milliseconds)."""
    import datetime
    from decimal import Decimal

    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _items_of(kind: str, raw: bytes, config: dict[str, Any], name: str) -> Iterator[Any]:
    if kind == "JSONL":
        for n, line in enumerate(raw.decode("utf-8").split("\n"), 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise _ReaderFailed(f"{name} line {n}: {exc}") from None
    elif kind == "PARQUET":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(io.BytesIO(raw))
        except (pa.ArrowException, OSError) as exc:
            raise _ReaderFailed(f"{name}: {exc}") from None
        for row in table.to_pylist():
            yield _json_value(row)
    elif kind == "CSV":
        options = CsvOptions(header_location="GIVEN", headers=tuple(config["CSVHeaders"]))
        reader = CsvReader(io.BytesIO(raw), options)
        for row in reader:
            if row.error:
                raise _ReaderFailed(f"{name} line {row.line}: {row.error}")
            yield dict(zip(reader.header, row.fields, strict=True))
    else:
        raise _ReaderFailed(f"sfn_shim: no reader for {kind}")


def _inventory_items(raw: bytes) -> Iterator[Any]:
    """An S3 Inventory manifest.json's listed objects: its gzip CSV files, in order."""
    import gzip

    import boto3
    from botocore.exceptions import ClientError

    try:
        doc = json.loads(raw)
        bucket = str(doc["destinationBucket"]).rsplit(":", 1)[-1]
        headers = [h.strip() for h in doc["fileSchema"].split(",")]
        keys = [f["key"] for f in doc["files"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _ReaderFailed(f"not an S3 Inventory manifest.json: {exc}") from None
    s3 = boto3.client("s3", region_name="us-east-1")
    for key in keys:
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            raise _ReaderFailed(f"s3://{bucket}/{key}: {exc.response['Error']['Code']}") from None
        try:
            data = gzip.decompress(body) if key.endswith(".gz") else body
        except (OSError, EOFError) as exc:
            raise _ReaderFailed(f"s3://{bucket}/{key}: {exc}") from None
        name = f"s3://{bucket}/{key}"
        yield from _items_of("CSV", data, {"CSVHeaders": headers}, name)


def _typed_items(config: dict[str, Any], raw: bytes) -> Iterator[Any]:
    """The items ItemReader makes of `raw` under `config` (the real ReaderConfig)."""
    if config.get("ManifestType") == "S3_INVENTORY" or config.get("InputType") == "MANIFEST":
        if "ManifestType" in config and "InputType" in config:
            raise _ReaderFailed("ManifestType S3_INVENTORY takes no InputType")
        yield from _inventory_items(raw)
        return
    if config.get("ManifestType") != "ATHENA_DATA":
        yield from _items_of(config["InputType"], raw, config, "object")
        return
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client("s3", region_name="us-east-1")
    for uri in raw.decode("utf-8").split():
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            raise _ReaderFailed(f"{uri}: {exc.response['Error']['Code']}") from None
        yield from _items_of(config["InputType"], body, config, uri)


# 3 + 4. ItemBatcher and tolerated failures around moto's own map run -----------------
_moto_map_run = dist.DistributedIterationComponent._map_run


def _map_run(self: Any, env: Any, eval_input: Any) -> None:
    cfg = getattr(self, _BATCHER, None)
    if cfg is not None:
        items = env.stack.pop()
        batch_input: dict[str, Any] = {}
        if cfg["batch_input"] is not None:
            env.stack.append(env.states.get_input())
            cfg["batch_input"].eval(env=env)
            # moto keeps $$.Execution.StartTime a datetime; on the wire it is ISO 8601
            batch_input = json.loads(to_json_str(env.stack.pop()))
            env.stack.pop()
        header = list(items[0]) if items else []
        rows = [ParsedRow(n, list(item.values())) for n, item in enumerate(items)]
        batcher = Batcher(
            max_items=cfg["max_items"],
            max_bytes=cfg["max_bytes"],
            batch_input=batch_input,
            header=header,
        )
        batches = [b for b in batcher.cut(rows, header) if b.rows]
        batched = {n for b in batches for n, _ in b.rows}
        if len(batched) != len(items):  # an item too big to fit a child input alone
            n = min(set(range(len(items))) - batched)
            raise _fail(
                env,
                StatesErrorNameType.StatesRuntime,
                f"item {n} cannot fit MaxInputBytesPerBatch {cfg['max_bytes']}",
            )
        env.stack.append(
            [
                {"Items": [items[n] for n, _ in b.rows], "BatchInput": copy.deepcopy(batch_input)}
                for b in batches
            ]
        )
    record = eval_input.map_run_record
    setattr(record, _RESULTS, [])
    _moto_map_run(self, env, eval_input)
    results = getattr(record, _RESULTS)
    size = (lambda r: len(r["_items"])) if cfg is not None else (lambda r: 1)
    total = sum(size(r) for r in results)
    failed = sum(size(r) for r in results if r["Status"] == "FAILED")
    pct = float(record.tolerated_failure_percentage or 0)
    count = cfg.get("count") if cfg is not None else None
    if failed and (failed * 100 > pct * total or (count is not None and failed > count)):
        raise _fail(
            env,
            StatesErrorNameType.StatesExceedToleratedFailureThreshold,
            f"{failed} of {total} items failed; tolerated {pct}%",
        )


_moto_eval_job = dist_worker.DistributedItemProcessorWorker._eval_job


def _eval_job(self: Any, env: Any, job: Any) -> None:
    _moto_eval_job(self, env, job)
    state = env.program_state()
    entry: dict[str, Any] = {
        "Input": json.dumps(job.job_input, separators=(",", ":")),
        "Name": f"{job.job_index}",
        "_items": (job.job_input or {}).get("Items", [None])
        if isinstance(job.job_input, dict)
        else [job.job_input],
    }
    if isinstance(state, ProgramEnded):
        entry.update(Status="SUCCEEDED", Output=json.dumps(job.job_output, separators=(",", ":")))
    else:
        err = state.error if isinstance(state, ProgramError) else None
        entry.update(
            Status="FAILED",
            Error=(err or {}).get("error", "States.Runtime"),
            Cause=(err or {}).get("cause", ""),
        )
    results = getattr(self._map_run_record, _RESULTS, None)
    if results is not None:
        with _LOCK:
            results.append(entry)


_LOCK = threading.Lock()


# 5. ResultWriter ---------------------------------------------------------------------
def _put_results(env: Any, runtime: Any, credentials: Any) -> None:
    parameters = env.stack.pop()
    env.stack.pop()
    record = env.map_run_record_pool_manager.get_all().pop()
    s3 = boto_client_for(region=runtime.region, service="s3", state_credentials=credentials)
    bucket, prefix = parameters["Bucket"], parameters.get("Prefix", "")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    base = f"{prefix}{record.map_run_arn.split(':')[-1]}/"
    results = sorted(getattr(record, _RESULTS, []), key=lambda r: int(r["Name"]))
    files: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
    for status in ("SUCCEEDED", "FAILED"):
        rows = [
            {
                "ExecutionArn": f"{record.map_run_arn}:{r['Name']}",
                "StateMachineArn": record.map_run_arn,
                **{k: v for k, v in r.items() if not k.startswith("_")},
            }
            for r in results
            if r["Status"] == status
        ]
        if rows:
            body = json.dumps(rows).encode("utf-8")
            key = f"{base}{status}_0.json"
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            files[status].append({"Key": key, "Size": len(body)})
    manifest = {"DestinationBucket": bucket, "MapRunArn": record.map_run_arn, "ResultFiles": files}
    key = f"{base}manifest.json"
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest, indent=2).encode())
    env.stack.append(
        {"MapRunArn": record.map_run_arn, "ResultWriterDetails": {"Bucket": bucket, "Key": key}}
    )


# 6. Lambda --------------------------------------------------------------------------
def _lambda_router(functions: dict[str, Callable[[Any], Any]], log: ShimLog) -> Callable:
    def invoke(parameters: dict, region: str, state_credentials: Any) -> dict[str, Any]:
        name = parameters["FunctionName"]
        if name not in functions:
            from botocore.exceptions import ClientError

            raise ClientError(
                {
                    "Error": {
                        "Code": "ResourceNotFoundException",
                        "Message": f"Function not found: {name}",
                    }
                },
                "Invoke",
            )
        event = json.loads(parameters["Payload"])
        with log.lock:
            log.invocations.append((name, copy.deepcopy(event)))
        try:
            out = json.loads(json.dumps(functions[name](event)))
        except Exception as exc:  # noqa: BLE001 - what Lambda's runtime does
            return {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "Payload": {
                    "errorType": type(exc).__name__,
                    "errorMessage": str(exc),
                    "stackTrace": traceback.format_tb(exc.__traceback__),
                },
            }
        return {"StatusCode": 200, "ExecutedVersion": "$LATEST", "Payload": out}

    return invoke


# 7. moto: the execution's snapshot of the machine must not copy live executions ---
def _copy_state_machine(self: Any, memo: dict[int, Any]) -> Any:
    memo[id(self.backend)] = self.backend
    memo[id(self.executions)] = self.executions
    clone = object.__new__(type(self))
    memo[id(self)] = clone
    for name, value in vars(self).items():
        setattr(clone, name, copy.deepcopy(value, memo))
    return clone


# 8. moto: a RUNNING execution may not have its worker yet ---------------------------
def _send_task_success(self: Any, task_token: Any, outcome: str) -> None:
    """moto's `send_task_success`, skipping executions without a worker (read once each)."""
    from moto.stepfunctions.parser.api import InvalidToken, TaskDoesNotExist, TaskTimedOut
    from moto.stepfunctions.parser.asl.eval.callback.callback import (
        CallbackConsumerTimeout,
        CallbackNotifyConsumerError,
        CallbackOutcomeSuccess,
    )

    success = CallbackOutcomeSuccess(callback_id=task_token, output=outcome)
    for execution in self._get_executions():
        env = getattr(execution.exec_worker, "env", None)
        if env is None:  # starting (no worker, or a worker without its environment yet)
            continue
        try:
            if env.callback_pool_manager.notify(callback_id=task_token, outcome=success):
                return
        except CallbackNotifyConsumerError as exc:
            if isinstance(exc, CallbackConsumerTimeout):
                raise TaskTimedOut() from None
            raise TaskDoesNotExist() from None
    raise InvalidToken()


@contextlib.contextmanager
def sfn_shim(functions: dict[str, Callable[[Any], Any]]) -> Iterator[ShimLog]:
    """Patch moto's ASL engine as the module docstring lists; yield the invocation log.

    Use inside ``mock_aws(config=MOTO_SFN_CONFIG)``.  ``functions`` maps a Lambda
    function ARN (as the definition names it) to a callable taking the event.
    """
    log = ShimLog()
    patches = [
        mock.patch.object(AmazonStateLanguageParser, "parse", staticmethod(_parse)),
        mock.patch.object(transformer_csv.ResourceOutputTransformerCSV, "_eval_body", _csv_items),
        mock.patch.object(
            reader_s3.ResourceEvalS3, "_handle_get_object", staticmethod(_get_object)
        ),
        mock.patch.object(dist.DistributedIterationComponent, "_map_run", _map_run),
        mock.patch.object(dist_worker.DistributedItemProcessorWorker, "_eval_job", _eval_job),
        mock.patch.object(
            result_s3.ResourceEvalS3, "_handle_put_object", staticmethod(_put_results)
        ),
        mock.patch.object(
            lambda_eval_utils, "_invoke_lambda_function", _lambda_router(functions, log)
        ),
        mock.patch.object(StateMachine, "__deepcopy__", _copy_state_machine, create=True),
        mock.patch.object(StepFunctionsParserBackend, "send_task_success", _send_task_success),
    ]
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        yield log
