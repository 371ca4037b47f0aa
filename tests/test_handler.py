"""The Distributed Map child Lambda: both payload shapes, idempotency, bad events."""

from __future__ import annotations

import copy
import csv
import io
import threading

import boto3
import pytest

from importer.aws.handler import BatchFailed, EventError, handle_event
from importer.dynamodb.client import Boto3DynamoClient
from importer.dynamodb.errors import DynamoError
from tests.conftest import KEY_SCHEMA, PRODUCT_SPEC, scan_all


class RefusingClient(Boto3DynamoClient):
    """DynamoDB refuses (ValidationException) any write naming `marker`: a service-side refusal."""

    def __init__(self, marker: bytes) -> None:
        super().__init__(region="us-east-1")
        self.marker = marker

    def post(self, operation, body):
        if operation == "BatchWriteItem" and self.marker in body:
            raise DynamoError("ValidationException", "Item size has exceeded the maximum")
        return super().post(operation, body)


@pytest.fixture
def env(ddb_table):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="cfg")
    s3.put_object(Bucket="cfg", Key="spec.toml", Body=PRODUCT_SPEC.encode())
    client = Boto3DynamoClient(region="us-east-1", workers=2)
    return {"s3": s3, "client": client, "table": ddb_table}


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
    first = handle_event(event, client=env["client"], s3_client=env["s3"], engine="reference")
    assert first["written"] == 2 and first["rejected"] == 0
    table1 = scan_all(env["table"])
    second = handle_event(
        envelope(copy.deepcopy(event)),
        client=env["client"],
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
    summary = handle_event(event, client=env["client"], s3_client=env["s3"], engine="reference")
    assert (summary["written"], summary["rejected"]) == (1, 2)
    key = f"rejects/exec1/{summary['batch']}.rejects.csv"
    assert summary["rejects"] == f"s3://cfg/{key}" and summary["failures"] is None
    body = env["s3"].get_object(Bucket="cfg", Key=key)
    rows = list(csv.reader(io.StringIO(body["Body"].read().decode())))
    # the local run's format: line, column, value, reason, then the row's own fields
    assert rows[0] == ["line", "column", "value", "reason", "sku", "name", "price", "qty", "active"]
    assert rows[1][:3] == ["2", "sku", "bad sku"] and rows[2][:3] == ["3", "price", "x"]
    assert rows[2][4:] == ["C-3", "N", "x", "1", "yes"]


def test_a_batch_of_rejected_rows_does_not_fail_the_map(env):
    """Bad data is an outcome (reported), never a failed batch: the Map run goes on."""
    event = batch([row("bad 1"), row("bad 2")], env["table"])
    summary = handle_event(event, client=env["client"], s3_client=env["s3"], engine="reference")
    assert (summary["rejected"], summary["failed"], summary["written"]) == (2, 0, 0)
    assert scan_all(env["table"]) == {}


def test_a_batch_with_a_row_dynamodb_refused_fails_the_map(env):
    """One rule with the local run: a batch fails when at least one of its rows failed."""
    event = batch([row("A-1"), row("REFUSED-2"), row("bad sku")], env["table"])
    with pytest.raises(BatchFailed) as exc:
        handle_event(
            event, client=RefusingClient(b"REFUSED-2"), s3_client=env["s3"], engine="reference"
        )
    summary = exc.value.summary
    assert (summary["written"], summary["failed"], summary["rejected"]) == (1, 1, 1)
    key = f"rejects/exec1/{summary['batch']}.failures.csv"
    assert summary["failures"] == f"s3://cfg/{key}"
    body = env["s3"].get_object(Bucket="cfg", Key=key)["Body"].read().decode()
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0][:4] == ["line", "pk", "sk", "reason"]
    assert rows[1][:3] == ["2", "PRODUCT#acme", "PRODUCT#REFUSED-2@1"]
    # the row itself, under the file's own column names: re-importable (issue 30 #10)
    assert dict(zip(rows[0][4:], rows[1][4:], strict=True))["sku"] == "REFUSED-2"
    assert "ValidationException" in rows[1][3]
    assert set(scan_all(env["table"])) == {("PRODUCT#acme", "PRODUCT#A-1@1")}


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([], "expected"),
        ({"BatchInput": {}}, 'no "Items" list'),
        ({"Items": [1], "BatchInput": {}}, "Items\\[0\\] is not an object"),
        ({"Items": ["a,b"], "BatchInput": {}}, "Items\\[0\\]"),
        (
            {"source": "step-function", "context": {"State": {"Name": "finish"}}, "input": {}},
            "serves state 'csv_rows_handler'",
        ),
        ({"Items": [{"sku": "A"}], "BatchInput": {"Attributes": {"table": "t"}}}, "no spec"),
    ],
)
def test_malformed_events_are_clear_errors_and_write_nothing(env, event, message):
    with pytest.raises(EventError, match=message):
        handle_event(event, client=env["client"], s3_client=env["s3"], engine="reference")
    assert scan_all(env["table"]) == {}


def test_missing_context_values_and_columns(env):
    event = batch([row("A-1")], env["table"])
    del event["BatchInput"]["StartTime"]
    with pytest.raises(EventError, match="timestamp"):
        handle_event(event, client=env["client"], s3_client=env["s3"], engine="reference")
    event = batch([{"sku": "A-1"}], env["table"])
    with pytest.raises(EventError, match="spec column 'name'"):
        handle_event(event, client=env["client"], s3_client=env["s3"], engine="reference")


def test_oversized_batch_is_refused_before_any_write(env):
    items = [row(f"S-{i}", name="x" * 3000) for i in range(100)]
    with pytest.raises(EventError, match="over the 262144 bytes"):
        handle_event(
            batch(items, env["table"]),
            client=env["client"],
            s3_client=env["s3"],
            engine="reference",
        )
    assert scan_all(env["table"]) == {}


def test_modes_are_honoured_through_batch_input(env):
    event = batch([row("A-1"), row("B-2")], env["table"])
    handle_event(event, client=env["client"], s3_client=env["s3"], engine="reference")
    rerun = batch([row("A-1"), row("B-2", price="9")], env["table"])
    rerun["BatchInput"]["ExecutionName"] = "exec2"  # a new import, not a retry
    # insert (default): both exist, nothing written -- and the Map run does not fail
    summary = handle_event(rerun, client=env["client"], s3_client=env["s3"], engine="reference")
    assert summary["rejected"] == summary["existing"] == 2 and summary["mode"] == "insert"
    key = f"rejects/exec2/{summary['batch']}.rejects.csv"
    body = env["s3"].get_object(Bucket="cfg", Key=key)["Body"].read().decode()
    assert "exists (version 1)" in body
    blind = batch([row("C-3")], env["table"])
    blind["BatchInput"]["Attributes"]["mode"] = "bogus"
    with pytest.raises(EventError, match="unknown mode 'bogus'"):
        handle_event(blind, client=env["client"], s3_client=env["s3"], engine="reference")


def test_a_write_budget_is_shared_by_the_maps_children(env, monkeypatch):
    import importer.aws.handler as handler_mod

    seen = []
    real = handler_mod.open_pipeline
    monkeypatch.setattr(
        handler_mod, "open_pipeline", lambda s, **kw: seen.append(s.max_wcu) or real(s, **kw)
    )
    event = batch([row("A-1")], env["table"])
    event["BatchInput"]["Attributes"]["maxWcu"] = "1000"
    monkeypatch.setenv("IMPORTER_MAX_CONCURRENCY", "50")
    handle_event(event, client=env["client"], s3_client=env["s3"], engine="reference")
    assert seen == [20.0]  # 1000 WCU for the run, 50 children at once
    event["BatchInput"]["Attributes"]["maxWcu"] = "lots"
    with pytest.raises(EventError, match="maxWcu 'lots'"):
        handle_event(event, client=env["client"], s3_client=env["s3"], engine="reference")


def test_sync_in_the_lambda_child_writes_data_and_history(env):
    import boto3

    ddb = boto3.client("dynamodb", region_name="us-east-1")
    for name in ("test-app-master-data", "test-app-master-history"):
        ddb.create_table(TableName=name, **KEY_SCHEMA)
    event = batch([row("A-1"), row("B-2")], env["table"])
    event["BatchInput"]["Attributes"]["sync"] = "true"
    summary = handle_event(event, client=env["client"], s3_client=env["s3"], engine="reference")
    assert summary["written"] == 2
    data = scan_all("test-app-master-data")
    assert set(data) == {("PRODUCT#acme", "PRODUCT#A-1"), ("PRODUCT#acme", "PRODUCT#B-2")}
    command = scan_all(env["table"])[("PRODUCT#acme", "PRODUCT#A-1@1")]
    assert command["syncMode"] == {"S": "SYNC"}  # the stream filter skips it
    event["BatchInput"]["Attributes"]["mode"] = "upsert"
    with pytest.raises(EventError, match="needs mode insert or blind"):
        handle_event(event, client=env["client"], s3_client=env["s3"], engine="reference")


def test_a_warm_child_sends_its_batch_requests_side_by_side(monkeypatch):
    """The child's lanes outlive one invocation: the first batch's requests are timed (one at
    a time), the next batch's overlap up to the child's workers against a slow service."""
    from importer.aws import handler
    from importer.dynamodb.client import HttpDynamoClient
    from tests.support.ddb_server import DdbServer

    monkeypatch.setattr(handler, "_LANES", None)
    monkeypatch.setattr(handler, "_SPECS", {})
    with DdbServer(tables=["T"]) as srv:
        srv.faults.set(latency=0.01, ops={"BatchWriteItem"})
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        client = HttpDynamoClient(
            region="us-east-1", endpoint_url=srv.endpoint_url, session=session, workers=8
        )
        specs = {"spec.toml": PRODUCT_SPEC.encode()}

        class S3:
            def get_object(self, Bucket, Key, **conditional):  # noqa: N803 - boto3's names
                return {"Body": io.BytesIO(specs[Key]), "ETag": '"v1"'}

        # in the second invocation a write call waits until two are in the server at once
        # (an event, not the latency: a loaded machine cannot make them miss each other);
        # a child that never overlapped them would leave the peak at 1
        inside: set[int] = set()
        lock, overlapped = threading.Lock(), threading.Event()

        def until_two_at_once(item):
            # the first call's thread is held here until another connection's call comes
            with lock:
                inside.add(threading.get_ident())
                if len(inside) >= 2:
                    overlapped.set()
            overlapped.wait(30)
            return None

        peaks = []
        for n in range(2):
            event = batch([row(f"W{n}-{i:04d}") for i in range(500)], "T")
            event["BatchInput"]["Attributes"].update(mode="blind", rejects="")
            srv.reset_stats()
            if n:
                srv.faults.set(validation_error_for=until_two_at_once)
            summary = handle_event(event, client=client, s3_client=S3())
            assert summary["written"] == 500
            peaks.append(srv.stats()["in_flight.max"])
        client.close()
    assert peaks[0] == 1 and 1 < peaks[1] <= handler.CHILD_WORKERS, peaks


def test_a_warm_child_reads_a_spec_replaced_at_the_same_key(env, monkeypatch):
    """The spec cache is keyed by the object's ETag: an unchanged spec is not compiled
    again, a replaced one is used by the very next invocation."""
    from importer.aws import handler

    monkeypatch.setattr(handler, "_SPECS", {})
    compiled = []
    real_loads = handler.loads_spec
    monkeypatch.setattr(
        handler, "loads_spec", lambda raw, uri: compiled.append(uri) or real_loads(raw, uri)
    )

    def invoke(sku):
        event = batch([row(sku)], env["table"])
        return handle_event(event, client=env["client"], s3_client=env["s3"], engine="reference")

    assert invoke("A-1")["written"] == 1
    assert invoke("A-2")["written"] == 1
    assert len(compiled) == 1  # warm and unchanged: compiled once
    env["s3"].put_object(
        Bucket="cfg", Key="spec.toml", Body=PRODUCT_SPEC.replace('"PRODUCT"', '"GOODS"').encode()
    )
    assert invoke("A-3")["written"] == 1
    assert len(compiled) == 2
    keys = set(scan_all(env["table"]))
    assert ("GOODS#acme", "GOODS#A-3@1") in keys
    assert ("PRODUCT#acme", "PRODUCT#A-2@1") in keys


def test_a_local_spec_file_is_read_again_when_it_changes(tmp_path, monkeypatch):
    from importer.aws import handler

    monkeypatch.setattr(handler, "_SPECS", {})
    path = tmp_path / "spec.toml"
    path.write_text(PRODUCT_SPEC)
    assert handler._load_spec(str(path), None).record.type.source == "PRODUCT"
    path.write_text(PRODUCT_SPEC.replace('"PRODUCT"', '"GOODS-AND-MORE"'))
    assert handler._load_spec(str(path), None).record.type.source == "GOODS-AND-MORE"


def test_warm_invocations_reuse_the_dynamodb_and_s3_clients(env, monkeypatch):
    """A warm container keeps its clients (open connections, derived signing key): the
    fixed cost of an invocation fell from ~7 ms to ~2 ms (bench_lambda_child.py)."""
    from importer.aws import handler

    opened = []

    def open_client(settings):
        opened.append(settings.region)
        return Boto3DynamoClient(region="us-east-1", workers=2)

    monkeypatch.setattr(handler, "open_client", open_client)
    monkeypatch.setattr(handler, "_DYNAMO", {})
    monkeypatch.setattr(handler, "_S3", {"us-east-1": env["s3"]})
    for n in range(3):
        event = batch([row(f"W-{n}")], env["table"])
        assert handler.handle_event(event, engine="reference")["written"] == 1
    assert opened == ["us-east-1"]
    assert len(scan_all(env["table"])) == 3
