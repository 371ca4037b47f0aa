"""DynamoDB stream INSERT of a command record -> one command state machine execution.

``DataSyncNewCommandEventHandler`` in the framework: a record from a
``*-command`` table's stream whose ``eventName`` is ``INSERT`` and whose
``NewImage.syncMode.S`` is not ``"SYNC"`` (the marker of a synchronously
published command, already applied) starts ``SFN_COMMAND_ARN`` with

* ``input`` -- the stream record as JSON (NewImage still DynamoDB JSON) plus
  ``"source": eventSourceARN``;
* ``name`` -- ``{module}-{pk}-{sk}-{epoch_ms}`` with every ``#`` -> ``-``, the
  first ``@`` -> ``-v``, and each run of characters outside ``[0-9A-Za-z_-]``
  -> ``__xy__`` (one random 2-character base-36 token per name, as JS's
  ``replace`` evaluates its replacement once); omitted above 80 characters.

Other records are skipped silently.  A StartExecution error raises, so the
stream retries the batch (the framework does the same).
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from importer.mbc.command_states import table_from_source
from importer.mbc.model import COMMAND_SUFFIX, Tables

__all__ = [
    "SYNC_MODE",
    "execution_name",
    "handle_stream_event",
    "is_command_insert",
    "lambda_handler",
]

SYNC_MODE = "SYNC"
MAX_NAME = 80
_UNSAFE = re.compile(r"[^0-9A-Za-z_-]+")
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def is_command_insert(record: Mapping[str, Any]) -> bool:
    """The framework's filter: a command table's stream, INSERT, not ``syncMode: SYNC``."""
    arn = str(record.get("eventSourceARN") or "")
    if not (arn.endswith(COMMAND_SUFFIX) or f"{COMMAND_SUFFIX}/stream/" in arn):
        return False
    if record.get("eventName") != "INSERT":
        return False
    image = (record.get("dynamodb") or {}).get("NewImage") or {}
    return (image.get("syncMode") or {}).get("S") != SYNC_MODE


def _random_token(rng: random.Random | None = None) -> str:
    r = rng or random
    return r.choice(_B36) + r.choice(_B36)


def execution_name(
    module: str,
    keys: Mapping[str, Any],
    epoch_ms: int,
    *,
    token: str | None = None,
) -> str | None:
    """The framework's execution name, or None when it is over 80 characters."""
    pk = (keys.get("pk") or {}).get("S") or "pk"
    sk = (keys.get("sk") or {}).get("S") or "sk"
    record_id = f"{pk}-{sk}".replace("#", "-").replace("@", "-v", 1)
    tok = token if token is not None else _random_token()
    record_id = _UNSAFE.sub(f"__{tok}__", record_id)
    name = f"{module}-{record_id}-{epoch_ms}"
    return name if len(name) <= MAX_NAME else None


def handle_stream_event(
    event: Mapping[str, Any],
    *,
    sfn: Any,
    state_machine_arn: str,
    prefix: str | None = None,
    clock_ms: Callable[[], int] | None = None,
    rng: random.Random | None = None,
) -> list[dict[str, Any]]:
    """Start one execution per command INSERT in ``event["Records"]``; return their ARNs."""
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list):
        raise ValueError("stream event: expected {'Records': [...]}")
    started: list[dict[str, Any]] = []
    for record in records:
        if not isinstance(record, Mapping) or not is_command_insert(record):
            continue
        arn = record["eventSourceARN"]
        module = Tables.from_command_table(table_from_source(arn), prefix=prefix).module
        payload = {**record, "source": arn}
        ms = clock_ms() if clock_ms else int(time.time() * 1000)
        name = execution_name(
            module,
            (record.get("dynamodb") or {}).get("Keys") or {},
            ms,
            token=_random_token(rng),
        )
        kwargs: dict[str, Any] = {
            "stateMachineArn": state_machine_arn,
            "input": json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
        }
        if name is not None:
            kwargs["name"] = name
        resp = sfn.start_execution(**kwargs)
        started.append({"executionArn": resp["executionArn"], "name": name})
    return started


_SFN: Any = None


def lambda_handler(event: Any, context: Any = None) -> list[dict[str, Any]]:
    """Lambda entry point for the command table's stream (``SFN_COMMAND_ARN`` required)."""
    global _SFN
    arn = os.environ.get("SFN_COMMAND_ARN")
    if not arn:
        raise RuntimeError("SFN_COMMAND_ARN is not set")
    if _SFN is None:
        import boto3

        _SFN = boto3.client("stepfunctions", endpoint_url=os.environ.get("SFN_ENDPOINT"))
    return handle_stream_event(event, sfn=_SFN, state_machine_arn=arn)
