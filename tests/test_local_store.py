"""The stand-in's faster write path (`importer.cli.local_store`): same items, same errors as moto.

The patch is applied only in the stand-in's own process, so these tests start a
real one (`importer local up --background`) and talk to it as the importer does;
the item-building rule is also checked in-process against moto's own `Item`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from importer.cli import local_moto, local_store

pytest.importorskip("moto.server")

ROOT = Path(__file__).resolve().parents[1]
TABLE = "local-app-master-command"


def _item(i: int, **extra) -> dict:
    return {
        "pk": {"S": "PRODUCT#acme"},
        "sk": {"S": f"PRODUCT#S-{i}@1"},
        "version": {"N": "1"},
        "attributes": {"M": {"price": {"N": "1.5"}, "tags": {"L": [{"S": "a"}]}}},
        "active": {"BOOL": True},
        **extra,
    }


def test_items_are_built_as_moto_builds_them():
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    attrs = _item(1)
    ours = Item.__new__(Item)
    local_store._item_init(ours, DynamoType(attrs["pk"]), DynamoType(attrs["sk"]), attrs)
    assert ours == Item(DynamoType(attrs["pk"]), DynamoType(attrs["sk"]), attrs)
    assert ours.to_json() == Item(DynamoType(attrs["pk"]), DynamoType(attrs["sk"]), attrs).to_json()
    big = _item(2, blob={"S": "x" * 405_000})
    for build in (Item, lambda h, r, a: local_store._item_init(Item.__new__(Item), h, r, a)):
        with pytest.raises(ItemSizeTooLarge):
            build(DynamoType(big["pk"]), DynamoType(big["sk"]), big)


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stand-in")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = str(ROOT)
    env.pop("IMPORTER_LOCAL_PLAIN_MOTO", None)
    up = subprocess.run(
        [sys.executable, "-m", "importer.cli.main", "local", "up", "--background", "--port", "0"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    state_dir = folder / ".importer" / "local"
    state = local_moto.read_state(state_dir)
    try:
        yield boto3.client(
            "dynamodb",
            endpoint_url=state.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
    finally:
        local_moto.stop_background(state_dir)


def test_plain_puts_are_stored_and_read_back_exactly(stand_in):
    items = [_item(i) for i in range(25)]
    answer = stand_in.batch_write_item(
        RequestItems={TABLE: [{"PutRequest": {"Item": it}} for it in items]}
    )
    assert answer["UnprocessedItems"] == {}
    for it in items[:3]:
        got = stand_in.get_item(TableName=TABLE, Key={"pk": it["pk"], "sk": it["sk"]})["Item"]
        assert got == it
    count = stand_in.scan(TableName=TABLE, Select="COUNT")["Count"]
    assert count >= 25


@pytest.mark.parametrize(
    "requests, code",
    [
        ({"nope-command": [{"PutRequest": {"Item": _item(1)}}]}, "ResourceNotFoundException"),
        ({TABLE: [{"PutRequest": {"Item": _item(1)}}] * 2}, "ValidationException"),
        ({TABLE: [{"PutRequest": {"Item": {**_item(1), "sk": {"S": ""}}}}]}, "ValidationException"),
        ({TABLE: [{"PutRequest": {"Item": _item(3, blob={"S": "x" * 405_000})}}]},
         "ValidationException"),
    ],
    ids=["unknown-table", "repeated-key", "empty-key", "too-large"],
)  # fmt: skip
def test_what_moto_refuses_is_still_refused(stand_in, requests, code):
    with pytest.raises(ClientError) as info:
        stand_in.batch_write_item(RequestItems=requests)
    assert info.value.response["Error"]["Code"] == code


def test_deletes_go_to_moto(stand_in):
    stand_in.put_item(TableName=TABLE, Item=_item(900))
    key = {"pk": {"S": "PRODUCT#acme"}, "sk": {"S": "PRODUCT#S-900@1"}}
    stand_in.batch_write_item(RequestItems={TABLE: [{"DeleteRequest": {"Key": key}}]})
    assert "Item" not in stand_in.get_item(TableName=TABLE, Key=key)


def test_the_fast_path_answers_only_plain_puts():
    assert local_store._plain_puts({"RequestItems": {"t": [{"PutRequest": {"Item": {}}}]}})
    for body in (
        {"RequestItems": {"t": [{"DeleteRequest": {"Key": {}}}]}},
        {"RequestItems": {"t": [{"PutRequest": {"Item": {}}}]}, "ReturnConsumedCapacity": "TOTAL"},
        {"RequestItems": {}},
        json.loads("[]"),
    ):
        assert local_store._plain_puts(body) is None


def test_a_stored_item_can_be_updated_queried_and_overwritten(stand_in):
    """Items are kept as JSON until read: every read path builds them as moto would."""
    item = _item(700)
    stand_in.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": item}}]})
    key = {"pk": item["pk"], "sk": item["sk"]}
    stand_in.update_item(
        TableName=TABLE,
        Key=key,
        UpdateExpression="SET version = :v, attributes.price = :p",
        ExpressionAttributeValues={":v": {"N": "2"}, ":p": {"N": "9"}},
    )
    got = stand_in.get_item(TableName=TABLE, Key=key)["Item"]
    assert got["version"] == {"N": "2"}
    assert got["attributes"]["M"]["price"] == {"N": "9"}
    assert got["attributes"]["M"]["tags"] == {"L": [{"S": "a"}]}
    found = stand_in.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk AND sk = :sk",
        FilterExpression="active = :t",
        ExpressionAttributeValues={":pk": item["pk"], ":sk": item["sk"], ":t": {"BOOL": True}},
    )["Items"]
    assert found == [got]
    again = {**item, "name": {"S": "second"}}
    stand_in.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": again}}]})
    assert stand_in.get_item(TableName=TABLE, Key=key)["Item"] == again


VALUES = [
    {"S": "é x"}, {"N": "-12.500"}, {"N": "0"}, {"BOOL": False}, {"NULL": True},
    {"B": "AAEC"}, {"SS": ["a", "bé"]}, {"NS": ["1", "2.50"]}, {"BS": ["AA=="]},
    {"L": [{"S": "a"}, {"M": {"k": {"N": "1e3"}}}]},
    {"M": {"x": {"L": []}, "ü": {"SS": ["q"]}, "n": {"NULL": True}}},
]  # fmt: skip


@pytest.mark.parametrize("value", VALUES, ids=[next(iter(v)) for v in VALUES])
def test_sizes_read_off_the_json_are_moto_sizes(value):
    from moto.dynamodb.models.dynamo_type import DynamoType

    assert local_store._raw_size(value) == DynamoType(value).size()
