"""A moto cloud running the generated command-handler ASL on moto's Step Functions engine.

The machine is ``importer.aws.statemachine.command_handler_definition`` with the
Lambda ARN substituted, unmodified; its Lambda tasks go through
:func:`tests.sfn_shim.sfn_shim` (JSON in, JSON out, exceptions as
``FunctionError``) to :meth:`importer.mbc.command_states.CommandStates.handle`.
Executions are started by :func:`importer.aws.stream_handler.handle_stream_event`
from stream records shaped as DynamoDB Streams delivers them (moto's own
DynamoDB Streams API is not usable here: DescribeStream is "not yet
implemented").  Hooks let a test hold a state until it says so, which is how
the out-of-order and lost-wakeup interleavings are forced.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import boto3

from importer.aws.statemachine import LAMBDA_ARN_PLACEHOLDER, command_handler_definition
from importer.aws.stream_handler import handle_stream_event
from importer.mbc.command_states import CommandStates
from importer.mbc.data_sync import load_handlers
from tests.conftest import KEY_SCHEMA, scan_all
from tests.support.sfn_shim import MOTO_SFN_CONFIG, sfn_shim

REGION = "us-east-1"
ACCOUNT = "123456789012"
LAMBDA_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:command-handler"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/command-handler"
#: The pinned wall clock (epoch seconds) every path reads.
CLOCK = 1_764_100_000.0
TTL_DAYS = {"command": 30, "history": 90}
WAIT = 120.0  # seconds: the bound on every wait in these tests (only a hang reaches it)


def module_tables(prefix: str, module: str) -> dict[str, str]:
    return {kind: f"{prefix}{module}-{kind}" for kind in ("command", "data", "history")} | {
        "master": f"{prefix}master-data"
    }


def create_module(ddb: Any, prefix: str, module: str, *, tenant: str = "acme") -> dict[str, str]:
    """Command/data/history tables plus master-data holding TTL days for command and history."""
    names = module_tables(prefix, module)
    for name in names.values():
        ddb.create_table(TableName=name, **KEY_SCHEMA)
    for kind, days in TTL_DAYS.items():
        ddb.put_item(
            TableName=names["master"],
            Item={
                "pk": {"S": f"MASTER#{tenant}"},
                "sk": {"S": f"TTL#{names[kind]}"},
                "attributes": {"M": {"days": {"N": str(days)}}},
            },
        )
    return names


def command_item(code: str, version: int, name: str, price: str, *, tenant: str = "acme") -> dict:
    """A command record as the importer writes it (docs/aws-facts.md, Record shapes)."""
    pk, base = f"PRODUCT#{tenant}", f"PRODUCT#{code}"
    return {
        "pk": {"S": pk},
        "sk": {"S": f"{base}@{version}"},
        "id": {"S": f"{pk}#{base}"},
        "code": {"S": code},
        "name": {"S": name},
        "type": {"S": "PRODUCT"},
        "tenantCode": {"S": tenant},
        "version": {"N": str(version)},
        "attributes": {"M": {"name": {"S": name}, "price": {"N": price}}},
        "source": {"S": f"import-csv:run{version}"},
        "requestId": {"S": f"run{version}#{code}"},
        "createdAt": {"S": f"2026-11-2{version}T09:00:00+09:00"},
        "updatedAt": {"S": f"2026-11-2{version}T09:00:00+09:00"},
        "createdBy": {"S": "importer"},
        "updatedBy": {"S": "importer"},
    }


_SEQ = itertools.count(1)


def stream_record(table: str, item: dict, *, event: str = "INSERT") -> dict:
    """One DynamoDB Streams record (NEW_IMAGE) for ``item`` written to ``table``."""
    seq = next(_SEQ)
    return {
        "eventID": f"{seq:032x}",
        "eventName": event,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": {
            "ApproximateCreationDateTime": 1764100000,
            "Keys": {"pk": item["pk"], "sk": item["sk"]},
            "NewImage": item,
            "SequenceNumber": str(1000 + seq),
            "SizeBytes": 100,
            "StreamViewType": "NEW_IMAGE",
        },
        "eventSourceARN": (
            f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}/stream/2026-11-25T00:00:00.000"
        ),
    }


@dataclass
class Cloud:
    """moto clients, the command machine, the states and the hooks of one test."""

    ddb: Any
    sfn: Any
    sns: Any
    sqs: Any
    machine_arn: str
    status_queue: str
    alarm_queue: str
    states: CommandStates
    hooks: list[Callable[[dict], None]] = field(default_factory=list)
    _ms: Iterator[int] = field(default_factory=lambda: itertools.count(1_764_100_000_000))

    def invoke(self, event: dict) -> Any:
        for hook in list(self.hooks):
            hook(event)
        return self.states.handle(event)

    def publish(self, table: str, item: dict, *, put: bool = True) -> str:
        """Write ``item`` (unless ``put`` is False) and start its execution as the stream would."""
        if put:
            self.ddb.put_item(TableName=table, Item=item)
        started = handle_stream_event(
            {"Records": [stream_record(table, item)]},
            sfn=self.sfn,
            state_machine_arn=self.machine_arn,
            clock_ms=lambda: next(self._ms),
            rng=random.Random(7),
        )
        assert len(started) == 1, started
        return started[0]["executionArn"]

    def wait_done(self, arn: str, timeout: float = WAIT) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            desc = self.sfn.describe_execution(executionArn=arn)
            if desc["status"] != "RUNNING" or time.monotonic() > deadline:
                return desc
            time.sleep(0.05)

    def wait_status(self, table: str, key: tuple[str, str], status: str, timeout: float = WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.ddb.get_item(
                    TableName=table, Key={"pk": {"S": key[0]}, "sk": {"S": key[1]}}
                ).get("Item", {})
            except RuntimeError:
                # moto is not thread-safe: this poll read the item while an
                # execution's thread updated it ("dictionary changed size during
                # iteration").  The next poll reads it again.
                time.sleep(0.05)
                continue
            if item.get("status", {}).get("S") == status:
                return item
            time.sleep(0.05)
        raise AssertionError(f"{key} never reached {status}")

    def messages(self, queue: str) -> list[dict]:
        out = []
        while True:
            resp = self.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
            batch = resp.get("Messages", [])
            if not batch:
                return out
            for m in batch:
                out.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])


class Gate:
    """Hold one state of one command version until :meth:`open` (bounded)."""

    def __init__(self, state: str, sk: str) -> None:
        self.state, self.sk = state, sk
        self.reached = threading.Event()
        self._open = threading.Event()

    def __call__(self, event: dict) -> None:
        image = event["context"]["Execution"]["Input"]["dynamodb"]["NewImage"]
        if event["context"]["State"]["Name"] == self.state and image["sk"]["S"] == self.sk:
            self.reached.set()
            if not self._open.wait(WAIT):
                raise TimeoutError(f"gate {self.state} {self.sk} never opened")

    def open(self) -> None:
        self._open.set()


@contextlib.contextmanager
def command_cloud(**state_options: Any) -> Iterator[Cloud]:
    """moto (with its Step Functions engine), the command machine, SNS topics drained to SQS."""
    from moto import mock_aws

    with mock_aws(config=MOTO_SFN_CONFIG):
        ddb = boto3.client("dynamodb", region_name=REGION)
        sfn = boto3.client("stepfunctions", region_name=REGION)
        sns = boto3.client("sns", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        queues = {}
        topics = {}
        for kind in ("status", "alarm"):
            topics[kind] = sns.create_topic(Name=f"{kind}-topic")["TopicArn"]
            url = sqs.create_queue(QueueName=f"{kind}-queue")["QueueUrl"]
            qarn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            sns.subscribe(
                TopicArn=topics[kind],
                Protocol="sqs",
                Endpoint=qarn["Attributes"]["QueueArn"],
                Attributes={"RawMessageDelivery": "true"},
            )
            queues[kind] = url
        options: dict[str, Any] = {
            "dynamodb": ddb,
            "sfn": sfn,
            "sns": sns,
            "handlers": load_handlers([], use_entry_points=False),
            "clock": lambda: CLOCK,
            "tz": UTC,
            "status_topic_arn": topics["status"],
            "alarm_topic_arn": topics["alarm"],
        }
        options.update(state_options)
        states = CommandStates(**options)
        definition = json.dumps(command_handler_definition(lambda_arn=LAMBDA_ARN))
        assert LAMBDA_ARN_PLACEHOLDER not in definition
        machine = sfn.create_state_machine(
            name="command-handler", definition=definition, roleArn=ROLE_ARN
        )["stateMachineArn"]
        cloud = Cloud(ddb, sfn, sns, sqs, machine, queues["status"], queues["alarm"], states)
        with sfn_shim({LAMBDA_ARN: cloud.invoke}):
            yield cloud


def tables_snapshot(ddb: Any, names: dict[str, str], *, drop: tuple[str, ...] = ()) -> dict:
    """Every item of the module's three tables, ``drop`` attributes removed."""
    out = {}
    for kind in ("command", "data", "history"):
        items = scan_all(names[kind], ddb)
        out[kind] = {k: {a: v for a, v in it.items() if a not in drop} for k, it in items.items()}
    return out
