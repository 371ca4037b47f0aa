"""Partial updates and the command TTL, as the MBC framework's own import applies them.

The framework's import publishes a CHANGED row with ``publishPartialUpdateAsync``:
the latest version, deep-merged with the row (``mergeDeep``), becomes version + 1.
So a price file naming three columns must leave every other attribute of the
product in place -- in `importer run`, `run --sync`, `importer sync` and the
Lambda child alike -- and `[target] update = "replace"` / `--update replace`
writes the row as the whole record.  Commands carry the data table's TTL
(``publishAsync``: ``ttl: calculateTtl(DATA)`` or null); data rows take the
command's, history rows the history table's.
"""

from __future__ import annotations

import json
from datetime import datetime
from unittest import mock

import boto3
import pytest

from importer.aws.handler import handle_event
from importer.cli.main import main
from importer.modes.merge import merge_deep, merge_version
from tests.conftest import KEY_SCHEMA, PRODUCT_SPEC, scan_all
from tests.support.command_cloud import CLOCK, command_cloud, create_module, tables_snapshot
from tests.test_run_sync import PINNED_TIME

PRICE_SPEC = """\
[record]
type = "PRODUCT"
tenant = "acme"
code = "{sku}"

[columns.sku]
type = "string"
required = true

[columns.price]
type = "decimal"

[columns.qty]
type = "integer"
"""
FULL = "sku,name,price,qty,active\nS-1,Widget,10.5,3,yes\nS-2,Gadget,7,1,no\nS-3,Thing,1,1,yes\n"
# S-1: a new price; S-2: the price it has (unchanged); S-3: qty empty (keeps its stored 1)
PRICES = "sku,price,qty\nS-1,12.25,3\nS-2,7.0,\nS-3,2,\n"
KEY = ("PRODUCT#acme", "PRODUCT#S-1")


def _files(tmp_path):
    (tmp_path / "full.toml").write_text(PRODUCT_SPEC)
    (tmp_path / "price.toml").write_text(PRICE_SPEC)
    (tmp_path / "full.csv").write_text(FULL)
    (tmp_path / "prices.csv").write_text(PRICES)


def _run(tmp_path, table, csv, spec, run_id, *extra) -> dict:
    out = tmp_path / f"{table}-{run_id}.json"
    args = ["run", str(tmp_path / csv), "--spec", str(tmp_path / spec), "--table", table]
    args += ["--writer", "boto3", "--run-id", run_id, "--quiet", "--workers", "2"]
    args += ["--checkpoint", str(tmp_path / f"{table}-{run_id}.ckpt"), "--summary-json", str(out)]
    assert main([*args, *extra]) == 0
    return json.loads(out.read_text())


def _attrs(item: dict) -> dict:
    return item["attributes"]["M"]


@pytest.mark.parametrize("mode", ["upsert", "strict"])
def test_a_price_file_keeps_every_other_attribute_in_run_sync_and_importer_sync(tmp_path, mode):
    _files(tmp_path)
    with command_cloud() as cloud:
        run = create_module(cloud.ddb, "run-shop-", "product")
        cli = create_module(cloud.ddb, "cli-shop-", "product")
        for names, sync in ((run, ("--sync",)), (cli, ())):
            _run(tmp_path, names["command"], "full.csv", "full.toml", "r1", *sync)
            s = _run(tmp_path, names["command"], "prices.csv", "price.toml", "r2", "--mode", mode,
                     *sync)  # fmt: skip
            assert (s["rows"], s["written"], s["unchanged"], s["failed"]) == (3, 2, 1, 0)
        with mock.patch("importer.mbc.sync.time", PINNED_TIME):
            assert main(["sync", "--table", cli["command"], "--json"]) == 0
        a = tables_snapshot(cloud.ddb, run, drop=("syncMode",))
        b = tables_snapshot(cloud.ddb, cli)
    command = a["command"][("PRODUCT#acme", "PRODUCT#S-1@2")]
    assert command["name"] == {"S": "Widget"}  # the price spec names none: the stored one stays
    assert _attrs(command) == {
        "sku": {"S": "S-1"},
        "name": {"S": "Widget"},
        "price": {"N": "12.25"},
        "qty": {"N": "3"},
        "active": {"BOOL": True},
    }
    data = a["data"][KEY]
    assert data["version"] == {"N": "2"} and _attrs(data) == _attrs(command)
    # an empty optional column keeps the stored value
    assert _attrs(a["data"][("PRODUCT#acme", "PRODUCT#S-3")])["qty"] == {"N": "1"}
    assert _attrs(a["data"][("PRODUCT#acme", "PRODUCT#S-3")])["price"] == {"N": "2"}
    # S-2: 7.0 merged into price 7 is EQUAL: no version 2
    assert ("PRODUCT#acme", "PRODUCT#S-2@2") not in a["command"]
    assert a["history"][("PRODUCT#acme", "PRODUCT#S-1@1")]["attributes"]["M"]["price"] == {
        "N": "10.5"
    }
    for kind in ("data", "history"):
        assert {k: _attrs(v) for k, v in a[kind].items()} == {
            k: _attrs(v) for k, v in b[kind].items()
        }


def test_the_state_machine_gives_the_data_rows_run_sync_gives(tmp_path):
    """The merged command is applied by the command state machine as by `run --sync`."""
    from tests.test_run_sync import _new_commands

    _files(tmp_path)
    with command_cloud() as cloud:
        sm = create_module(cloud.ddb, "sm-shop-", "product")
        run = create_module(cloud.ddb, "run-shop-", "product")
        before: dict = {}
        for csv, spec, run_id, extra in (
            ("full.csv", "full.toml", "r1", ()),
            ("prices.csv", "price.toml", "r2", ("--mode", "upsert")),
        ):
            _run(tmp_path, sm["command"], csv, spec, run_id, *extra)
            for item in _new_commands(cloud.ddb, sm["command"], before):
                arn = cloud.publish(sm["command"], item, put=False)
                assert cloud.wait_done(arn)["status"] == "SUCCEEDED"
            before = scan_all(sm["command"], cloud.ddb)
            _run(tmp_path, run["command"], csv, spec, run_id, "--sync", *extra)
        a = tables_snapshot(cloud.ddb, sm)
        c = tables_snapshot(cloud.ddb, run)
    strip = ("syncMode", "status", "updatedAt", "ttl", "createdAt", "cpk", "csk")
    for kind in ("data", "history"):
        left = {k[1]: {n: v for n, v in it.items() if n not in strip} for k, it in a[kind].items()}
        right = {k[1]: {n: v for n, v in it.items() if n not in strip} for k, it in c[kind].items()}
        assert {k: _attrs(v) for k, v in left.items()} == {k: _attrs(v) for k, v in right.items()}
    assert _attrs(a["data"][KEY])["name"] == {"S": "Widget"}


@pytest.mark.parametrize("how", ["cli", "spec"])
def test_replace_writes_the_row_as_the_whole_record(tmp_path, how):
    _files(tmp_path)
    extra: tuple[str, ...] = ("--mode", "upsert", "--sync")
    if how == "cli":
        extra += ("--update", "replace")
    else:
        (tmp_path / "price.toml").write_text(PRICE_SPEC + '\n[target]\nupdate = "replace"\n')
    with command_cloud() as cloud:
        names = create_module(cloud.ddb, "run-shop-", "product")
        _run(tmp_path, names["command"], "full.csv", "full.toml", "r1", "--sync")
        s = _run(tmp_path, names["command"], "prices.csv", "price.toml", "r2", *extra)
        data = scan_all(names["data"], cloud.ddb)
    assert s["written"] == 3  # S-2's record loses name and active: it changed
    assert _attrs(data[KEY]) == {"sku": {"S": "S-1"}, "price": {"N": "12.25"}, "qty": {"N": "3"}}
    assert data[KEY]["name"] == {"S": "S-1"}  # record.name defaults to the code


def test_rows_of_one_entity_in_one_file_merge_in_file_order(tmp_path):
    _files(tmp_path)
    (tmp_path / "twice.csv").write_text("sku,price,qty\nS-1,11,\nS-1,,9\nS-1,11,9\n")
    with command_cloud() as cloud:
        names = create_module(cloud.ddb, "run-shop-", "product")
        _run(tmp_path, names["command"], "full.csv", "full.toml", "r1", "--sync")
        s = _run(tmp_path, names["command"], "twice.csv", "price.toml", "r2", "--mode", "upsert",
                 "--sync", "--batch-items", "1")  # fmt: skip
        commands = scan_all(names["command"], cloud.ddb)
        data = scan_all(names["data"], cloud.ddb)
    assert (s["written"], s["unchanged"]) == (2, 1)
    assert _attrs(commands[("PRODUCT#acme", "PRODUCT#S-1@2")])["qty"] == {"N": "3"}
    v3 = _attrs(commands[("PRODUCT#acme", "PRODUCT#S-1@3")])
    assert (v3["price"], v3["qty"], v3["active"]) == ({"N": "11"}, {"N": "9"}, {"BOOL": True})
    assert data[KEY]["version"] == {"N": "3"} and _attrs(data[KEY]) == v3


def test_a_rerun_of_a_merged_file_writes_the_same_versions(tmp_path):
    """Idempotency: the rows already stored by this run are re-sent as stored, never re-merged."""
    _files(tmp_path)
    with command_cloud() as cloud:
        names = create_module(cloud.ddb, "run-shop-", "product")
        _run(tmp_path, names["command"], "full.csv", "full.toml", "r1")
        _run(tmp_path, names["command"], "prices.csv", "price.toml", "r2", "--mode", "upsert")
        first = scan_all(names["command"], cloud.ddb)
        _run(tmp_path, names["command"], "prices.csv", "price.toml", "r2", "--mode", "upsert",
             "--checkpoint", str(tmp_path / "again.ckpt"))  # fmt: skip
        again = scan_all(names["command"], cloud.ddb)
    # the same versions with the same content (a new run of the same id has a new clock)
    stamp = ("createdAt", "updatedAt")
    assert {k: {n: v for n, v in it.items() if n not in stamp} for k, it in again.items()} == {
        k: {n: v for n, v in it.items() if n not in stamp} for k, it in first.items()
    }


def test_the_lambda_child_merges_too():
    from moto import mock_aws

    from importer.dynamodb.client import Boto3DynamoClient

    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        for t in ("dev-app-product-command", "dev-app-product-data"):
            ddb.create_table(TableName=t, **KEY_SCHEMA)
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="cfg")
        s3.put_object(Bucket="cfg", Key="full.toml", Body=PRODUCT_SPEC.encode())
        s3.put_object(Bucket="cfg", Key="price.toml", Body=PRICE_SPEC.encode())
        client = Boto3DynamoClient(region="us-east-1", workers=2)

        def child(spec, rows, mode, name, **attrs):
            return handle_event(
                {
                    "Items": rows,
                    "BatchInput": {
                        "Attributes": {
                            "table": "dev-app-product-command",
                            "spec": f"s3://cfg/{spec}",
                            "mode": mode,
                            "sync": "true" if mode == "insert" else "",
                            **attrs,
                        },
                        "ExecutionName": name,
                        "StartTime": "2026-11-25T10:00:00Z",
                    },
                },
                client=client,
                s3_client=s3,
            )

        full = {"sku": "S-1", "name": "Widget", "price": "10.5", "qty": "3", "active": "yes"}
        assert child("full.toml", [full], "insert", "e1")["written"] == 1
        out = child("price.toml", [{"sku": "S-1", "price": "12.25", "qty": ""}], "upsert", "e2")
        assert out["written"] == 1
        row = {"sku": "S-1", "price": "13", "qty": ""}
        out = child("price.toml", [row], "upsert", "e3", update="replace")
        assert out["written"] == 1
        commands = scan_all("dev-app-product-command", ddb)
        v2 = commands[("PRODUCT#acme", "PRODUCT#S-1@2")]
        v3 = commands[("PRODUCT#acme", "PRODUCT#S-1@3")]
    # the execution input's update = "replace": the row as the whole record
    assert _attrs(v3) == {"sku": {"S": "S-1"}, "price": {"N": "13"}}
    assert v2["name"] == {"S": "Widget"}
    assert _attrs(v2) == {
        "sku": {"S": "S-1"},
        "name": {"S": "Widget"},
        "price": {"N": "12.25"},
        "qty": {"N": "3"},
        "active": {"BOOL": True},
    }


def test_merge_deep_is_the_frameworks_merge():
    n = lambda v: {"N": v}  # noqa: E731
    s = lambda v: {"S": v}  # noqa: E731
    stored = {
        "dims": {"M": {"w": n("1"), "h": n("2")}},
        "tags": {"L": [s("a"), s("b")]},
        "note": s("x"),
        "empty": s(""),
        "zero": n("0"),
        "gone": {"NULL": True},
        "keep": s("k"),
    }
    row = {
        "dims": {"M": {"h": n("3"), "d": {"M": {"x": n("1")}}}},
        "tags": {"L": [s("c")]},  # a list replaces
        "note": {"M": {"a": n("1")}},  # a map over truthy text: mergeDeep leaves the text
        "empty": {"M": {"a": n("1")}},  # ... over falsy values: the map
        "zero": {"M": {"b": n("2")}},
        "gone": s("back"),
        "new": {"M": {}},
    }
    assert merge_deep(stored, row) == {
        "dims": {"M": {"w": n("1"), "h": n("3"), "d": {"M": {"x": n("1")}}}},
        "tags": {"L": [s("c")]},
        "note": s("x"),
        "empty": {"M": {"a": n("1")}},
        "zero": {"M": {"b": n("2")}},
        "gone": s("back"),
        "keep": s("k"),
        "new": {"M": {}},
    }
    assert stored["dims"] == {"M": {"w": n("1"), "h": n("2")}}  # inputs are not mutated
    version = merge_version(
        {"name": s("Old"), "attributes": {"M": {}}, "isDeleted": {"BOOL": False}, "seq": n("4")},
        {"name": s("New"), "attributes": {"M": {"a": n("1")}}},
        keep_name=False,
    )
    assert version == {
        "name": s("New"),
        "attributes": {"M": {"a": n("1")}},
        "isDeleted": {"BOOL": False},
        "seq": n("4"),
    }
    with pytest.raises(ValueError, match='update = "replace"'):
        merge_version({"attributes": s("s3://b/k.json")}, {"attributes": {"M": {}}}, keep_name=True)


def test_a_json_column_merges_key_by_key_and_its_lists_replace(tmp_path):
    spec = """\
[record]
type = "DOC"
tenant = "acme"
code = "{id}"

[columns.id]
required = true

[columns.body]
type = "json"
"""
    (tmp_path / "doc.toml").write_text(spec)
    (tmp_path / "a.csv").write_text('id,body\nD1,"{""dims"":{""w"":1,""h"":2},""tags"":[""a""]}"\n')
    (tmp_path / "b.csv").write_text('id,body\nD1,"{""dims"":{""h"":3},""tags"":[""c""]}"\n')
    with command_cloud() as cloud:
        names = create_module(cloud.ddb, "run-doc-", "doc")
        _run(tmp_path, names["command"], "a.csv", "doc.toml", "r1", "--sync")
        _run(tmp_path, names["command"], "b.csv", "doc.toml", "r2", "--mode", "upsert", "--sync")
        data = scan_all(names["data"], cloud.ddb)[("DOC#acme", "DOC#D1")]
    assert _attrs(data)["body"] == {
        "M": {"dims": {"M": {"w": {"N": "1"}, "h": {"N": "3"}}}, "tags": {"L": [{"S": "c"}]}}
    }


# --------------------------------------------------------------------------- TTL


def _epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def test_commands_carry_the_data_tables_ttl_and_data_and_history_rows_follow(tmp_path, capsys):
    _files(tmp_path)
    with command_cloud() as cloud:
        names = create_module(cloud.ddb, "run-shop-", "product")
        cloud.ddb.put_item(
            TableName=names["master"],
            Item={
                "pk": {"S": "MASTER#acme"},
                "sk": {"S": f"TTL#{names['data']}"},
                "attributes": {"M": {"days": {"N": "365"}}},
            },
        )
        with mock.patch("importer.mbc.sync.time", PINNED_TIME):
            first = _run(tmp_path, names["command"], "full.csv", "full.toml", "r1", "--sync")
            _run(tmp_path, names["command"], "prices.csv", "price.toml", "r2", "--mode", "upsert",
                 "--sync")  # fmt: skip
        snap = tables_snapshot(cloud.ddb, names)
    v1 = snap["command"][("PRODUCT#acme", "PRODUCT#S-2@1")]
    v2 = snap["command"][("PRODUCT#acme", "PRODUCT#S-1@2")]
    assert v1["ttl"] == {"N": str(_epoch(v1["createdAt"]["S"]) + 365 * 86400)}
    assert v2["ttl"] == {"N": str(_epoch(v2["createdAt"]["S"]) + 365 * 86400)}
    # set_ttl_command: the previous version gets the command table's TTL (30 days, the clock)
    prev = snap["command"][("PRODUCT#acme", "PRODUCT#S-1@1")]
    assert prev["ttl"] == {"N": str(int(CLOCK) + 30 * 86400)}
    # the data row takes the command's ttl; history the history table's (90 days)
    assert snap["data"][KEY]["ttl"] == v2["ttl"]
    assert snap["data"][("PRODUCT#acme", "PRODUCT#S-2")]["ttl"] == v1["ttl"]
    hist = snap["history"][("PRODUCT#acme", "PRODUCT#S-1@1")]
    assert hist["ttl"] == {"N": str(int(CLOCK) + 90 * 86400)}
    assert first["ttl"] and "365 days" in first["ttl"][0] and "MASTER#acme" in first["ttl"][0]


def test_without_a_ttl_configuration_commands_and_data_rows_carry_null(tmp_path):
    _files(tmp_path)
    with command_cloud() as cloud:
        names = create_module(cloud.ddb, "run-shop-", "product")  # command/history TTL only
        s = _run(tmp_path, names["command"], "full.csv", "full.toml", "r1", "--sync")
        snap = tables_snapshot(cloud.ddb, names)
    assert all(it["ttl"] == {"NULL": True} for it in snap["command"].values())
    assert all(it["ttl"] == {"NULL": True} for it in snap["data"].values())
    assert s["ttl"] and s["ttl"][0].startswith("ttl: null")


def test_a_tenant_from_a_column_gets_its_own_ttl(tmp_path):
    spec = PRODUCT_SPEC.replace('tenant = "acme"', 'tenant = "{tenant}"')
    spec += "\n[columns.tenant]\nrequired = true\nattribute = false\n"
    (tmp_path / "t.toml").write_text(spec)
    (tmp_path / "t.csv").write_text(
        "sku,name,price,qty,active,tenant\nS-1,A,1,1,yes,acme\nS-2,B,1,1,yes,other\n"
    )
    with command_cloud() as cloud:
        names = create_module(cloud.ddb, "run-shop-", "product")
        cloud.ddb.put_item(
            TableName=names["master"],
            Item={
                "pk": {"S": "MASTER#other"},
                "sk": {"S": f"TTL#{names['data']}"},
                "attributes": {"M": {"days": {"N": "7"}}},
            },
        )
        s = _run(tmp_path, names["command"], "t.csv", "t.toml", "r1")
        commands = scan_all(names["command"], cloud.ddb)
    acme = commands[("PRODUCT#acme", "PRODUCT#S-1@1")]
    other = commands[("PRODUCT#other", "PRODUCT#S-2@1")]
    assert acme["ttl"] == {"NULL": True}
    assert other["ttl"] == {"N": str(_epoch(other["createdAt"]["S"]) + 7 * 86400)}
    assert len(s["ttl"]) == 2


def test_plan_says_which_ttl_the_commands_carry(tmp_path, capsys):
    _files(tmp_path)
    with command_cloud() as cloud:
        names = create_module(cloud.ddb, "dev-shop-", "product")
        argv = ["plan", str(tmp_path / "full.csv"), "--spec", str(tmp_path / "full.toml")]
        argv += ["--table", names["command"], "--region", "us-east-1"]
        assert main([*argv, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["ttl"].startswith("null (no TTL configuration at MASTER#acme / TTL#")
        cloud.ddb.put_item(
            TableName=names["master"],
            Item={
                "pk": {"S": "MASTER#acme"},
                "sk": {"S": f"TTL#{names['data']}"},
                "attributes": {"M": {"days": {"N": "30"}}},
            },
        )
        assert main(argv) == 0
        out = capsys.readouterr().out
    assert "command ttl" in out and "30 days from the run's start" in out
    assert f"TTL#{names['data']} in {names['master']}" in out


def test_a_run_rejects_numbers_an_mbc_application_cannot_read_unless_told(tmp_path):
    from importer.cli.main import EXIT_PARTIAL

    _files(tmp_path)
    (tmp_path / "big.csv").write_text(
        "sku,name,price,qty,active\n"
        "B-1,ok,19.99,9007199254740991,yes\n"
        "B-2,big,1,12345678901234567890,yes\n"
        "B-3,long,12345678901234567890.5,1,yes\n"
    )
    (tmp_path / "full-range.toml").write_text(PRODUCT_SPEC + '\n[target]\nnumbers = "dynamodb"\n')
    with command_cloud() as cloud:
        names = create_module(cloud.ddb, "run-shop-", "product")
        args = ["run", str(tmp_path / "big.csv"), "--table", names["command"], "--quiet"]
        args += ["--writer", "boto3", "--workers", "2", "--sync"]
        rejects = tmp_path / "big.rejects.csv"
        first = ["--spec", str(tmp_path / "full.toml"), "--run-id", "m1", "--rejects", str(rejects)]
        code = main([*args, *first, "--checkpoint", str(tmp_path / "m1.ckpt")])
        assert code == EXIT_PARTIAL
        text = rejects.read_text()
        assert text.count("MBC application cannot read exactly") == 2
        assert '[target] numbers = ""dynamodb""' in text  # CSV-quoted
        assert set(scan_all(names["data"], cloud.ddb)) == {("PRODUCT#acme", "PRODUCT#B-1")}
        full = ["--spec", str(tmp_path / "full-range.toml"), "--run-id", "m2", "--mode", "upsert"]
        code = main([*args, *full, "--checkpoint", str(tmp_path / "m2.ckpt")])
        assert code == 0
        data = scan_all(names["data"], cloud.ddb)
    assert _attrs(data[("PRODUCT#acme", "PRODUCT#B-2")])["qty"] == {"N": "12345678901234567890"}
    assert _attrs(data[("PRODUCT#acme", "PRODUCT#B-3")])["price"] == {"N": "12345678901234567890.5"}
