"""The loopback DynamoDB's capacity model (tests/support/ddb_server.py `Capacity`)."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.support.ddb_server import Capacity, DdbServer, SubprocessDdbServer


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def client(endpoint: str):
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def puts(start: int, n: int, pad: int = 0) -> list[dict]:
    return [
        {"PutRequest": {"Item": {"pk": {"S": f"P#{i}"}, "sk": {"S": "S"}, "d": {"S": "x" * pad}}}}
        for i in range(start, start + n)
    ]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def srv(clock: Clock):
    with DdbServer(tables=["T"], capacity=Capacity(write=100, burst=0.5, clock=clock)) as s:
        yield s


def test_bucket_takes_leading_costs_that_fit_and_refills(clock: Clock):
    cap = Capacity(write=10, burst=1.0, clock=clock)
    assert cap.take("write", [4, 4, 4]) == 2  # 10 tokens: 4 + 4, then 2 left
    assert cap.take("write", [4]) == 0
    clock.t += 0.25  # +2.5 tokens: 4.5
    assert cap.take("write", [4, 1]) == 1
    clock.t += 100  # refill is capped at burst seconds
    assert cap.take("write", [1] * 20) == 10
    assert cap.window_max("write") == 8 + 4  # t=100 and t=100.25 share a second
    assert cap.take("read", [1] * 1000) == 1000  # read unlimited


def test_batch_write_gets_what_fits_in_order_and_the_rest_back(srv, clock: Clock):
    c = client(srv.endpoint_url)
    # burst: 0.5 s of 100 units = 50 units
    out = c.batch_write_item(RequestItems={"T": puts(0, 25)})
    assert out["UnprocessedItems"] == {}
    out = c.batch_write_item(RequestItems={"T": puts(25, 25)})
    assert out["UnprocessedItems"] == {}
    clock.t += 0.125  # 12.5 units
    out = c.batch_write_item(RequestItems={"T": puts(50, 25)})
    back = out["UnprocessedItems"]["T"]
    assert [r["PutRequest"]["Item"]["pk"]["S"] for r in back] == [f"P#{i}" for i in range(62, 75)]
    assert len(srv.items("T")) == 62
    with pytest.raises(ClientError) as err:
        c.batch_write_item(RequestItems={"T": puts(75, 5)})
    assert err.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert srv.stats()["capacity.throttled.write"] == 1
    assert srv.stats()["capacity.unprocessed.write"] == 13


def test_items_cost_one_unit_per_started_kb(srv, clock: Clock):
    c = client(srv.endpoint_url)
    # three items of ~2.5 KB cost 3 units each: 50 tokens take 16 of them
    out = c.batch_write_item(RequestItems={"T": puts(0, 20, pad=2500)})
    assert len(out["UnprocessedItems"]["T"]) == 4
    assert srv.capacity.consumed("write")[-1][1] == 48


def test_capacity_changes_during_a_run_and_describe_table_shows_it(srv, clock: Clock):
    c = client(srv.endpoint_url)
    desc = c.describe_table(TableName="T")["Table"]
    assert desc["BillingModeSummary"]["BillingMode"] == "PROVISIONED"
    assert desc["ProvisionedThroughput"]["WriteCapacityUnits"] == 100
    c.batch_write_item(RequestItems={"T": puts(0, 25)})
    c.batch_write_item(RequestItems={"T": puts(25, 25)})
    srv.capacity.set(write=1000)
    clock.t += 0.125  # 125 units at the new rate
    out = c.batch_write_item(RequestItems={"T": puts(50, 25)})
    assert out["UnprocessedItems"] == {}
    assert (
        c.describe_table(TableName="T")["Table"]["ProvisionedThroughput"]["WriteCapacityUnits"]
        == 1000
    )
    srv.capacity.set(write=None)
    assert "ProvisionedThroughput" not in c.describe_table(TableName="T")["Table"]


def test_batch_get_pays_read_units(clock: Clock):
    cap = Capacity(read=10, burst=1.0, clock=clock)
    with DdbServer(tables=["T"], capacity=cap) as srv:
        c = client(srv.endpoint_url)
        c.batch_write_item(RequestItems={"T": puts(0, 20)})
        keys = [{"pk": {"S": f"P#{i}"}, "sk": {"S": "S"}} for i in range(20)]
        out = c.batch_get_item(RequestItems={"T": {"Keys": keys, "ConsistentRead": True}})
        assert len(out["Responses"]["T"]) == 10
        assert len(out["UnprocessedKeys"]["T"]["Keys"]) == 10
        clock.t += 0.5  # 5 units: eventually consistent reads cost half
        out = c.batch_get_item(RequestItems={"T": {"Keys": keys[10:]}})
        assert len(out["Responses"]["T"]) == 10


def test_subprocess_server_takes_capacity_flags_and_admin_changes():
    with SubprocessDdbServer(tables=["T"], write_capacity=50, capacity_burst=0.5) as srv:
        c = client(srv.endpoint_url)
        desc = c.describe_table(TableName="T")["Table"]
        assert desc["ProvisionedThroughput"]["WriteCapacityUnits"] == 50
        out = c.batch_write_item(RequestItems={"T": puts(0, 25)})
        assert out["UnprocessedItems"] == {}  # the 25-unit burst
        try:  # refilled only for milliseconds: (nearly) nothing fits
            out = c.batch_write_item(RequestItems={"T": puts(25, 25)})
            assert len(out["UnprocessedItems"]["T"]) >= 10
        except ClientError as err:
            assert err.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
        srv.set_capacity(write=100000)
        desc = c.describe_table(TableName="T")["Table"]
        assert desc["ProvisionedThroughput"]["WriteCapacityUnits"] == 100000
