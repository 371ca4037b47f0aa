"""The Distributed Map child Lambda: both payload shapes, idempotency, bad events."""

from __future__ import annotations

import copy
import csv
import io

import boto3
import pytest

from importer.handler import BatchFailed, EventError, handle_event
from importer.writer import Boto3BatchWriter
from tests.conftest import PRODUCT_SPEC, scan_all


@pytest.fixture
def env(ddb_table):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="cfg")
    s3.put_object(Bucket="cfg", Key="spec.toml", Body=PRODUCT_SPEC.encode())
    writer = Boto3BatchWriter(table=ddb_table, region="us-east-1", workers=2)
    return {"s3": s3, "writer": writer, "table": ddb_table}


def batch(items, table):
    return {
        "Items": items,
        "BatchInput": {
            "Attributes": {
                "bucket": "in",
                "key": "p.csv",
                "table": table,
                "spec": "s3://cfg/spec.toml",
                "rejects": "s3://cfg/rejects",
            },
            "ExecutionId": "arn:aws:states:us-east-1:123456789012:execution:import-csv:exec1",
            "ExecutionName": "exec1",
            "StartTime": "2026-11-25T10:00:00.123Z",
        },
    }


def row(sku, name="N", price="1", qty="1", active="yes"):
    return {"sku": sku, "name": name, "price": price, "qty": qty, "active": active}


def envelope(payload):
    return {
        "source": "step-function",
        "context": {
            "Execution": {"Name": "exec1"},
            "State": {"Name": "csv_rows_handler", "RetryCount": 0},
        },
        "input": payload,
    }


def test_plain_batch_and_envelope_write_the_same_items(env):
    event = batch([row("A-1"), row("B-2", price="2.50")], env["table"])
    first = handle_event(event, writer=env["writer"], s3_client=env["s3"], engine="reference")
    assert first["written"] == 2 and first["rejected"] == 0
    table1 = scan_all(env["table"])
    second = handle_event(
        envelope(copy.deepcopy(event)),
        writer=env["writer"],
        s3_client=env["s3"],
        engine="reference",
    )
    assert second == first
    assert scan_all(env["table"]) == table1  # re-execution changes nothing
    item = table1[("PRODUCT#acme", "PRODUCT#B-2@1")]
    assert item["createdAt"] == {"S": "2026-11-25T10:00:00+00:00"}
    assert item["source"] == {"S": "import-csv:exec1"}
    assert item["attributes"]["M"]["price"] == {"N": "2.5"}


def test_rejects_are_stored_per_execution_and_batch(env):
    event = batch([row("A-1"), row("bad sku"), row("C-3", price="x")], env["table"])
    summary = handle_event(event, writer=env["writer"], s3_client=env["s3"], engine="reference")
    assert (summary["written"], summary["rejected"]) == (1, 2)
    assert summary["rejects"] == f"s3://cfg/rejects/exec1/{summary['batch']}.csv"
    body = env["s3"].get_object(Bucket="cfg", Key=f"rejects/exec1/{summary['batch']}.csv")
    rows = list(csv.reader(io.StringIO(body["Body"].read().decode())))
    assert rows[1][:3] == ["2", "sku", "bad sku"] and rows[2][:3] == ["3", "price", "x"]


def test_a_batch_with_no_row_written_raises_for_the_map(env):
    event = batch([row("bad 1"), row("bad 2")], env["table"])
    with pytest.raises(BatchFailed) as exc:
        handle_event(event, writer=env["writer"], s3_client=env["s3"], engine="reference")
    assert exc.value.summary["rejected"] == 2
    assert scan_all(env["table"]) == {}


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([], "expected"),
        ({"BatchInput": {}}, 'no "Items" list'),
        ({"Items": [1], "BatchInput": {}}, "Items\\[0\\] is not a CSV row"),
        ({"Items": [{"a": 1}], "BatchInput": {}}, "Items\\[0\\]"),
        (
            {"source": "step-function", "context": {"State": {"Name": "finish"}}, "input": {}},
            "serves state 'csv_rows_handler'",
        ),
        ({"Items": [{"sku": "A"}], "BatchInput": {"Attributes": {"table": "t"}}}, "no spec"),
    ],
)
def test_malformed_events_are_clear_errors_and_write_nothing(env, event, message):
    with pytest.raises(EventError, match=message):
        handle_event(event, writer=env["writer"], s3_client=env["s3"], engine="reference")
    assert scan_all(env["table"]) == {}


def test_missing_context_values_and_columns(env):
    event = batch([row("A-1")], env["table"])
    del event["BatchInput"]["StartTime"]
    with pytest.raises(EventError, match="timestamp"):
        handle_event(event, writer=env["writer"], s3_client=env["s3"], engine="reference")
    event = batch([{"sku": "A-1"}], env["table"])
    with pytest.raises(EventError, match="spec column 'name'"):
        handle_event(event, writer=env["writer"], s3_client=env["s3"], engine="reference")


def test_oversized_batch_is_refused_before_any_write(env):
    items = [row(f"S-{i}", name="x" * 3000) for i in range(100)]
    with pytest.raises(EventError, match="over the 262144 bytes"):
        handle_event(
            batch(items, env["table"]),
            writer=env["writer"],
            s3_client=env["s3"],
            engine="reference",
        )
    assert scan_all(env["table"]) == {}


def test_modes_are_honoured_through_batch_input(env):
    event = batch([row("A-1"), row("B-2")], env["table"])
    handle_event(event, writer=env["writer"], s3_client=env["s3"], engine="reference")
    rerun = batch([row("A-1"), row("B-2", price="9")], env["table"])
    rerun["BatchInput"]["ExecutionName"] = "exec2"  # a new import, not a retry
    with pytest.raises(BatchFailed) as exc:  # insert (default): both exist, nothing written
        handle_event(rerun, writer=env["writer"], s3_client=env["s3"], engine="reference")
    assert exc.value.summary["rejected"] == 2 and exc.value.summary["mode"] == "insert"
    body = env["s3"].get_object(Bucket="cfg", Key=f"rejects/exec2/{exc.value.summary['batch']}.csv")
    assert "exists (version 1)" in body["Body"].read().decode()
    blind = batch([row("C-3")], env["table"])
    blind["BatchInput"]["Attributes"]["mode"] = "bogus"
    with pytest.raises(EventError, match="unknown mode 'bogus'"):
        handle_event(blind, writer=env["writer"], s3_client=env["s3"], engine="reference")
