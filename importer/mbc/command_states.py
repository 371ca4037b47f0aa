"""The command state machine's Lambda states, as MBC CQRS Serverless runs them.

``importer asl --machine command-handler`` emits the machine; every Lambda
state of it invokes :func:`lambda_handler` with the framework's payload
``{"source", "context": $$, "input": $, "taskToken"?}`` and reads the answer
at ``$.Payload[0][0]``, so every state returns the ``[[result]]`` envelope.
The state logic follows ``CommandEventHandler`` (``core/src/commands/
command.event.handler.ts`` at mbc-cqrs-serverless 8fa5b4c) state by state:

``check_version``   data row's version + 1 vs the command's: 0 go, 1 wait, -1 fail
``wait_prev_command`` store the task token on the command row (then see below)
``set_ttl_command`` put the previous command version back with the command TTL
``history_copy``    copy the current data row to history as ``base@version``
``transform_data``  one Map item per data-sync handler
``sync_data``       run one handler (the default merges into the data table)
``finish``          release the next version's waiting execution, if any

Around each state the status wrapper sets ``status = "{state}:STARTED"``, then
``:FINISHED`` (or ``:FAILED`` with an alarm, re-raising), each an UpdateItem
(which also sets ``updatedAt``) and a ``command-status`` SNS message.

Choices we made where the framework is silent or racy (see the README):

* **Lost wakeup closed** (mbc PR #465's idea): after storing its token, a
  waiting version reads its predecessor (strongly consistent) and, when that
  one has reached ``finish:STARTED``/``finish:FINISHED``, sends SendTaskSuccess
  on its own token.  The predecessor sets ``finish:STARTED`` before it reads
  the token, so at least one of the two always sees the other's write; a
  second SendTaskSuccess fails and is swallowed, as the framework swallows it.
* **No lost status in ``set_ttl_command``**: the framework PutItems the whole
  previous item back, which can overwrite the predecessor's ``finish:FINISHED``
  written a moment after it released us.  We PutItem the same item, but only
  if ``status``/``updatedAt`` are still what we read, re-reading on conflict.
* Reads the decisions depend on are strongly consistent.
* Without a topic ARN (local runs) no SNS message is published; the framework
  would raise.  An unset alarm topic falls back to the status topic, as there.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from importer.mbc.data_sync import SyncCommand, SyncContext, load_handlers
from importer.mbc.model import (
    Clock,
    Item,
    Tables,
    TtlResolver,
    add_sk_version,
    format_date,
    get_sk_version,
    item_version,
    local_tz,
    notify_tenant,
    remove_sk_version,
    render_dates,
    tenant_of,
    with_ttl,
)

__all__ = [
    "FINISH_FINISHED",
    "STATES",
    "VERSION_MISMATCH",
    "CommandEvent",
    "CommandStates",
    "StateError",
    "history_item",
    "lambda_handler",
    "resolve_s3_attributes",
    "status_message",
    "resume_output",
    "table_from_source",
]

log = logging.getLogger(__name__)

STATES = (
    "check_version",
    "wait_prev_command",
    "set_ttl_command",
    "history_copy",
    "transform_data",
    "sync_data",
    "finish",
)
VERSION_MISMATCH = "version is not match"
FINISH_FINISHED = "finish:FINISHED"
#: A predecessor at one of these has run (or is running) its ``finish`` token check.
_PREDECESSOR_DONE = ("finish:STARTED", FINISH_FINISHED)
_TTL_PUT_ATTEMPTS = 8


class StateError(Exception):
    """A state failed the way the framework's ``throw new Error(...)`` fails it."""


def table_from_source(source: str) -> str:
    """``getResourceNameFromArn``: the command table named by a stream ARN (or a bare name)."""
    if ":dynamodb:" in source and "-command/stream/" in source:
        return source.split("/")[1]
    return source.split(":")[-1]


def resume_output(prev_version: int) -> str:
    """SendTaskSuccess output that ``OutputPath $.Payload[0][0]`` unwraps (resumeExecution)."""
    body = {"result": "resumed_by_prev_version", "prevVersion": prev_version}
    return json.dumps({"Payload": [[body]]}, separators=(",", ":"))


@dataclass(frozen=True)
class CommandEvent:
    """One Lambda invocation of the command machine, validated."""

    state: str
    record: Item
    tables: Tables
    input: Any
    task_token: str | None
    execution_id: str

    @property
    def pk(self) -> str:
        return self.record["pk"]["S"]

    @property
    def sk(self) -> str:
        return self.record["sk"]["S"]

    @property
    def key(self) -> dict[str, Any]:
        return {"pk": {"S": self.pk}, "sk": {"S": self.sk}}

    @property
    def version(self) -> int:
        return item_version(self.record)

    @property
    def request_id(self) -> str | None:
        value = self.record.get("requestId")
        return value.get("S") if isinstance(value, dict) else None

    @classmethod
    def parse(cls, event: Any, *, prefix: str | None = None) -> CommandEvent:
        """Check the payload's shape first, with a message that says what was expected."""
        if not isinstance(event, Mapping) or not isinstance(event.get("context"), Mapping):
            raise ValueError("command state event: expected {source, context, input[, taskToken]}")
        ctx = event["context"]
        state = (ctx.get("State") or {}).get("Name")
        execution = ctx.get("Execution") or {}
        exec_input = execution.get("Input")
        if isinstance(exec_input, str):
            exec_input = json.loads(exec_input)
        image = ((exec_input or {}).get("dynamodb") or {}).get("NewImage")
        if not isinstance(image, Mapping) or "pk" not in image or "sk" not in image:
            raise ValueError(
                "command state event: context.Execution.Input.dynamodb.NewImage with pk/sk missing"
            )
        source = (exec_input or {}).get("source") or (exec_input or {}).get("eventSourceARN")
        if not source:
            raise ValueError("command state event: context.Execution.Input.source missing")
        tables = Tables.from_command_table(table_from_source(source), prefix=prefix)
        return cls(
            state=str(state),
            record=dict(image),
            tables=tables,
            input=event.get("input"),
            task_token=event.get("taskToken"),
            execution_id=str(execution.get("Id", "")),
        )


class CommandStates:
    """The states of one Lambda container, with every outside service injected.

    ``dynamodb``/``sfn``/``sns``/``s3`` are boto3 clients (moto in tests).
    ``clock`` (epoch seconds) and ``tz`` (the Lambda's local zone) decide
    every date and TTL the states write, so tests can pin them.
    """

    def __init__(
        self,
        *,
        dynamodb: Any,
        sfn: Any = None,
        sns: Any = None,
        s3: Any = None,
        handlers: Sequence[Any] | None = None,
        clock: Clock = time.time,
        tz: tzinfo | None = None,
        status_topic_arn: str | None = None,
        alarm_topic_arn: str | None = None,
        prefix: str | None = None,
        self_resume: bool = True,
        after_token_stored: Callable[[CommandEvent], None] | None = None,
    ) -> None:
        self.dynamodb = dynamodb
        self.sfn = sfn
        self.sns = sns
        self.s3 = s3
        self.handlers = list(handlers) if handlers is not None else load_handlers()
        self.clock = clock
        self.tz = tz or UTC
        self.status_topic_arn = status_topic_arn
        self.alarm_topic_arn = alarm_topic_arn or status_topic_arn
        self.prefix = prefix
        self.self_resume = self_resume
        # a test hook: runs between storing the token and the self-resume check
        self.after_token_stored = after_token_stored
        self._dispatch: dict[str, Callable[[CommandEvent], Any]] = {
            "check_version": self.check_version,
            "wait_prev_command": self.wait_prev_command,
            "set_ttl_command": self.set_ttl_command,
            "history_copy": self.history_copy,
            "transform_data": self.transform_data,
            "sync_data": self.sync_data,
            "finish": self.finish,
        }

    @classmethod
    def from_env(cls, **overrides: Any) -> CommandStates:
        """Clients and settings from the Lambda environment (``SNS_TOPIC_ARN``, ``TZ``, ...)."""
        import boto3

        from importer.dynamodb.region import default_region

        region = default_region()
        options: dict[str, Any] = {
            "dynamodb": boto3.client(
                "dynamodb", region_name=region, endpoint_url=os.environ.get("DYNAMODB_ENDPOINT")
            ),
            "sfn": boto3.client(
                "stepfunctions", region_name=region, endpoint_url=os.environ.get("SFN_ENDPOINT")
            ),
            "sns": boto3.client("sns", region_name=region),
            "s3": boto3.client("s3", region_name=region),
            "tz": local_tz(),
            "status_topic_arn": os.environ.get("SNS_TOPIC_ARN") or None,
            "alarm_topic_arn": os.environ.get("SNS_ALARM_TOPIC_ARN") or None,
        }
        options.update(overrides)
        return cls(**options)

    # ------------------------------------------------------------------ entry
    def handle(self, event: Any) -> list[list[Any]]:
        """Run the state ``context.State.Name`` names; return ``[[result]]``."""
        ev = CommandEvent.parse(event, prefix=self.prefix)
        self.update_status(ev, f"{ev.state}:STARTED")
        try:
            logic = self._dispatch.get(ev.state)
            if logic is None:
                raise StateError("step function state not found!")
            result = logic(ev)
        except Exception as exc:
            self.update_status(ev, f"{ev.state}:FAILED")
            self.publish_alarm(ev, "".join(traceback.format_exception(exc)).rstrip())
            raise
        self.update_status(ev, f"{ev.state}:FINISHED")
        return [[result]]

    # ----------------------------------------------------------------- states
    def check_version(self, ev: CommandEvent) -> dict[str, Any]:
        base = remove_sk_version(ev.sk)
        data = self._get(ev.tables.data, ev.pk, base)
        command_version = ev.version
        next_version = item_version(data) + 1
        previous = self._get(ev.tables.command, ev.pk, add_sk_version(base, command_version - 1))
        if next_version == command_version:
            return {"result": 0}
        if next_version < command_version:
            return {"result": 0 if previous is None else 1}
        details = {
            "result": -1,
            "error": VERSION_MISMATCH,
            "cause": f"next version must be {next_version} but got {command_version}",
        }
        self.publish_alarm(ev, details)
        return details

    def wait_prev_command(self, ev: CommandEvent) -> dict[str, Any]:
        if not ev.task_token:
            raise StateError("wait_prev_command: the payload carries no taskToken")
        self._update(ev.tables.command, ev.key, {"taskToken": {"S": ev.task_token}})
        if self.after_token_stored is not None:
            self.after_token_stored(ev)
        if self.self_resume and ev.version > 1:
            self._resume_if_predecessor_done(ev)
        return {"result": {"token": ev.task_token}}

    def _resume_if_predecessor_done(self, ev: CommandEvent) -> None:
        prev_sk = add_sk_version(ev.sk, ev.version - 1)
        prev = self._get(ev.tables.command, ev.pk, prev_sk)
        status = ((prev or {}).get("status") or {}).get("S")
        if status in _PREDECESSOR_DONE:
            log.info("%s %s: predecessor already at %s, resuming itself", ev.pk, ev.sk, status)
            self._send_success(ev.task_token or "", resume_output(ev.version - 1))

    def set_ttl_command(self, ev: CommandEvent) -> dict[str, Any]:
        version = get_sk_version(ev.sk)
        if version > 1:
            prev_sk = add_sk_version(ev.sk, version - 1)
            ttl: Any = ...
            for _ in range(_TTL_PUT_ATTEMPTS):
                prev = self._get(ev.tables.command, ev.pk, prev_sk)
                if prev is None:
                    break
                if ttl is ...:
                    ttl = self.ttl_resolver(ev.tables).ttl(ev.tables.command, tenant_of(ev.pk))
                item = render_dates(with_ttl(prev, ttl), self.tz)
                if self._put_if_unchanged(ev.tables.command, item, prev):
                    break
            else:
                raise StateError(f"set_ttl_command: {ev.pk} {prev_sk} kept changing")
        return {"result": "ok"}

    def history_copy(self, ev: CommandEvent) -> dict[str, Any]:
        data = self._get(ev.tables.data, ev.pk, remove_sk_version(ev.sk))
        if data is not None:
            ttl = self.ttl_resolver(ev.tables).ttl(ev.tables.history, tenant_of(ev.pk))
            item = history_item(data, ttl, self.tz)
            self.dynamodb.put_item(TableName=ev.tables.history, Item=item)
        return {"result": "ok"}

    def transform_data(self, ev: CommandEvent) -> list[dict[str, Any]]:
        return [{"prevStateName": ev.state, "result": h.name} for h in self.handlers]

    def sync_data(self, ev: CommandEvent) -> Any:
        name = (ev.input or {}).get("result") if isinstance(ev.input, Mapping) else None
        if not name:
            raise StateError("SyncDataHandler not found!")
        handler = next((h for h in self.handlers if h.name == name), None)
        if handler is None:
            raise StateError("SyncDataHandler empty!")
        command = SyncCommand(self._full_record(ev.record))
        ctx = SyncContext(dynamodb=self.dynamodb, tables=ev.tables, tz=self.tz)
        return json.loads(json.dumps(handler.up(command, ctx), default=str))

    def finish(self, ev: CommandEvent) -> None:
        next_sk = add_sk_version(ev.sk, get_sk_version(ev.sk) + 1)
        nxt = self._get(ev.tables.command, ev.pk, next_sk)
        if nxt is None:
            return None
        token = (nxt.get("taskToken") or {}).get("S")
        if token:
            self._send_success(token, resume_output(ev.version))
        else:
            status = (nxt.get("status") or {}).get("S")
            log.warning("next command %s found but no token (status %s)", next_sk, status)
        return None

    # ------------------------------------------------------- status and alarm
    def update_status(self, ev: CommandEvent, status: str) -> None:
        """``CommandService.updateStatus``: UpdateItem status (+updatedAt), then SNS."""
        new = self._update(ev.tables.command, ev.key, {"status": {"S": status}})
        self._publish(self.status_topic_arn, status_message(ev.tables.command, new, status))

    def publish_alarm(self, ev: CommandEvent, error: Any) -> None:
        message = {
            "action": "sfn-alarm",
            "id": f"{ev.pk}#{ev.sk}",
            "table": ev.tables.module,
            "pk": ev.pk,
            "sk": ev.sk,
            "tenantCode": notify_tenant(ev.pk),
            "content": {"errorMessage": error, "sfnId": ev.execution_id},
        }
        log.error("alarm: %s", json.dumps(message, default=str))
        self._publish(self.alarm_topic_arn, message)

    def _publish(self, topic: str | None, message: dict[str, Any]) -> None:
        if not topic or self.sns is None:
            return
        self.sns.publish(
            TopicArn=topic,
            MessageAttributes={"action": {"DataType": "String", "StringValue": message["action"]}},
            Message=json.dumps(message, separators=(",", ":"), default=str),
        )

    # ---------------------------------------------------------------- helpers
    def ttl_resolver(self, tables: Tables) -> TtlResolver:
        return TtlResolver(self.dynamodb, tables.master_data, clock=self.clock)

    def now_text(self) -> str:
        return format_date(datetime.fromtimestamp(self.clock(), UTC), self.tz)

    def _get(self, table: str, pk: str, sk: str) -> Item | None:
        resp = self.dynamodb.get_item(
            TableName=table, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
        )
        return resp.get("Item")

    def _update(self, table: str, key: dict[str, Any], values: dict[str, Any]) -> Item:
        """``DynamoDbService.updateItem``: SET the values and ``updatedAt = now``, ALL_NEW."""
        values = {**values, "updatedAt": {"S": self.now_text()}}
        names = {f"#{k}": k for k in values}
        resp = self.dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET " + ", ".join(f"#{k}=:{k}" for k in values),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={f":{k}": v for k, v in values.items()},
            ReturnValues="ALL_NEW",
        )
        return resp.get("Attributes") or {}

    def _put_if_unchanged(self, table: str, item: Item, seen: Item) -> bool:
        conditions, names, values = [], {}, {}
        for i, field in enumerate(("status", "updatedAt")):
            names[f"#c{i}"] = field
            if field in seen:
                conditions.append(f"#c{i} = :c{i}")
                values[f":c{i}"] = seen[field]
            else:
                conditions.append(f"attribute_not_exists(#c{i})")
        kwargs: dict[str, Any] = {
            "TableName": table,
            "Item": item,
            "ConditionExpression": " AND ".join(conditions),
            "ExpressionAttributeNames": names,
        }
        if values:
            kwargs["ExpressionAttributeValues"] = values
        try:
            self.dynamodb.put_item(**kwargs)
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _send_success(self, token: str, output: str) -> None:
        if self.sfn is None:
            log.warning("no Step Functions client: cannot send the task token")
            return
        try:
            self.sfn.send_task_success(taskToken=token, output=output)
        except Exception as exc:  # noqa: BLE001 - the framework logs and goes on
            log.warning("could not resume a waiting command: %s", exc)

    def _full_record(self, record: Item) -> Item:
        return resolve_s3_attributes(record, self.s3)


def resolve_s3_attributes(record: Item, s3: Any = None) -> Item:
    """``getFullCommandRecord``: an ``attributes`` of ``s3://bucket/key`` is loaded from S3.

    The framework offloads large ``attributes`` to S3 and stores the pointer;
    ``sync_data`` hands handlers the loaded map.  Other records pass unchanged.
    """
    attrs = record.get("attributes")
    text = attrs.get("S") if isinstance(attrs, dict) else None
    if not text or not text.startswith("s3://"):
        return record
    from decimal import Decimal

    from boto3.dynamodb.types import TypeSerializer

    bucket, _, key = text[5:].partition("/")
    if s3 is None:
        import boto3

        s3 = boto3.client("s3")
    raw = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    body = json.loads(raw, parse_float=Decimal)
    return {**record, "attributes": TypeSerializer().serialize(body)}


def status_message(command_table: str, item: Item, status: str) -> dict[str, Any]:
    """The ``command-status`` notification for a command row (after its status update)."""
    pk, sk = item["pk"]["S"], item["sk"]["S"]
    request_id = (item.get("requestId") or {}).get("S")
    message: dict[str, Any] = {
        "action": "command-status",
        "pk": pk,
        "sk": sk,
        "table": command_table,
        "id": request_id or f"{command_table}#{pk}#{sk}",
        "tenantCode": notify_tenant(pk),
        "content": {"status": status},
    }
    source = (item.get("source") or {}).get("S")
    if source is not None:
        message["content"]["source"] = source
    return message


def history_item(data: Item, ttl: int | float | None, tz: tzinfo) -> Item:
    """``HistoryService.publish``: the data row at ``sk = base@version`` with the history TTL."""
    out = dict(data)
    out["sk"] = {"S": add_sk_version(data["sk"]["S"], _version_text(data))}
    return render_dates(with_ttl(out, ttl), tz)


def _version_text(item: Item) -> str:
    raw = (item.get("version") or {}).get("N", "0")
    number = float(raw)
    return str(int(number)) if number.is_integer() else raw


_STATES: CommandStates | None = None


def lambda_handler(event: Any, context: Any = None) -> list[list[Any]]:
    """The Lambda entry point: one container-wide :class:`CommandStates` from the environment."""
    global _STATES
    if _STATES is None:
        _STATES = CommandStates.from_env()
    return _STATES.handle(event)
