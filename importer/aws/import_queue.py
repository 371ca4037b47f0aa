"""The import-action queue: an SQS message starts one import-csv execution.

MBC's import module queues a CSV job on ``import-action-queue`` and its
``CsvImportQueueEventHandler`` starts the import state machine
(``SFN_IMPORT_CSV_ARN``) with ``{...job.attributes, sourceId: job.id}``, named
``{tenant}-{table}-{epoch_ms}``.  This is that consumer for the import-csv
machine of ``importer template``.  A message body is either

* the framework's ``{"action": "single-import-process", ...<import_tmp stream
  record>}``: the job is ``dynamodb.NewImage`` (``attributes`` holds
  ``bucket``, ``key``, ``tableName``, ``tenantCode``...), or
* a plain execution input ``{"bucket": "...", "key": "...", ...}`` (what
  ``aws sqs send-message`` users write).

Either way the input must name ``bucket`` and ``key``.  A message that cannot
start an execution is reported in ``batchItemFailures`` (the event source has
``ReportBatchItemFailures``), so SQS retries it and, after ``maxReceiveCount``,
moves it to the dead-letter queue; the others are not retried.  The job's
status in ``import_tmp`` is not updated (that table belongs to the app).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["execution_input", "handle_queue_event", "lambda_handler"]

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^0-9A-Za-z_-]+")
MAX_NAME = 80


def _plain(value: Mapping[str, Any]) -> Any:
    from boto3.dynamodb.types import TypeDeserializer

    return TypeDeserializer().deserialize(dict(value))


def execution_input(body: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The execution input and name for one message body; ValueError says what is missing."""
    image = ((body.get("dynamodb") or {}).get("NewImage")) if "dynamodb" in body else None
    if image is not None:
        job = {k: _plain(v) for k, v in image.items()}
        given = job.get("attributes")
        attrs: dict[str, Any] = given if isinstance(given, dict) else {}
        source = job.get("id") or f"{job.get('pk', '')}#{job.get('sk', '')}"
        data = {**attrs, "sourceId": source}
        tenant = attrs.get("tenantCode") or job.get("tenantCode") or ""
        table = attrs.get("tableName") or ""
        name = _UNSAFE.sub("-", f"{tenant}-{table}-{int(time.time() * 1000)}")[:MAX_NAME]
    else:
        data = {k: v for k, v in body.items() if k != "action"}
        name = None
    for field in ("bucket", "key"):
        if not isinstance(data.get(field), str) or not data[field]:
            raise ValueError(f"the import job names no {field!r}")
    return _json_safe(data), name


def _json_safe(value: Any) -> Any:
    """Decimals from DynamoDB as JSON numbers (ints stay ints)."""
    return json.loads(json.dumps(value, default=_number))


def _number(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set):
        return sorted(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def handle_queue_event(
    event: Mapping[str, Any],
    *,
    sfn: Any,
    state_machine_arn: str,
    start: Callable[..., Any] | None = None,
) -> dict[str, list[dict[str, str]]]:
    """Start one execution per SQS record; return the records that failed (partial batch)."""
    failures: list[dict[str, str]] = []
    for record in event.get("Records") or []:
        message_id = str(record.get("messageId", ""))
        try:
            body = json.loads(record.get("body") or "")
            if not isinstance(body, dict):
                raise ValueError("the message body is not a JSON object")
            data, name = execution_input(body)
            kwargs: dict[str, Any] = {
                "stateMachineArn": state_machine_arn,
                "input": json.dumps(data, ensure_ascii=False, separators=(",", ":")),
            }
            if name:
                kwargs["name"] = name
            (start or sfn.start_execution)(**kwargs)
        except Exception as exc:  # noqa: BLE001 - reported per message, SQS retries it
            log.error("import message %s not started: %s", message_id, exc)
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}


_SFN: Any = None


def lambda_handler(event: Any, context: Any = None) -> dict[str, list[dict[str, str]]]:
    """Lambda entry point for the import-action queue (``IMPORT_STATE_MACHINE_ARN`` required)."""
    global _SFN
    arn = os.environ.get("IMPORT_STATE_MACHINE_ARN")
    if not arn:
        raise RuntimeError("IMPORT_STATE_MACHINE_ARN is not set")
    if _SFN is None:
        import boto3

        _SFN = boto3.client("stepfunctions", endpoint_url=os.environ.get("SFN_ENDPOINT"))
    return handle_queue_event(event, sfn=_SFN, state_machine_arn=arn)
