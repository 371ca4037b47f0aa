"""`importer sync` / `sync_tables`: the command state machine's result, in bulk.

The proof is a comparison: the same CSV imports into two module table sets;
one is applied by the generated command-handler ASL on moto's Step Functions
engine (one execution per command record, as the table's stream would start
them), the other by :func:`importer.mbc.sync.sync_tables`.  Command, data and
history tables must come out byte-identical (both paths read the same pinned
clock; the only attribute left out is ``taskToken``, which only a version that
had to wait stores).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from unittest import mock

import pytest

from importer.cli.exit_codes import EXIT_PARTIAL
from importer.cli.main import main
from importer.mbc.data_sync import load_handlers
from importer.mbc.sync import sync_tables
from tests.conftest import PRODUCT_SPEC, scan_all
from tests.support.command_cloud import (
    CLOCK,
    command_cloud,
    command_item,
    create_module,
    tables_snapshot,
)

HEADER = "sku,name,price,qty,active\n"
FIXED_NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


class _FixedDatetime(datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED_NOW if tz is None else FIXED_NOW.astimezone(tz)


def _import(tmp_path, table: str, rows, *, mode: str, run_id: str) -> None:
    """`importer run` (boto3 writer: what moto intercepts in-process), pinned run id and time."""
    src = tmp_path / f"{run_id}.csv"
    src.write_text(HEADER + "".join(f"{s},{n},{p},1,yes\n" for s, n, p in rows))
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    args = ["run", str(src), "--spec", str(tmp_path / "spec.toml"), "--table", table]
    args += ["--writer", "boto3", "--mode", mode, "--run-id", run_id, "--quiet"]
    args += ["--workers", "2", "--checkpoint", str(tmp_path / f"{table}-{run_id}.ckpt")]
    with mock.patch("importer.transform.context.datetime", _FixedDatetime):
        assert main(args) == 0


def _new_commands(ddb, table: str, before: dict) -> list[dict]:
    """Items written since ``before``, in the order a stream would deliver them per entity."""
    items = scan_all(table, ddb)
    new = [v for k, v in items.items() if k not in before]
    return sorted(new, key=lambda it: (it["pk"]["S"], it["sk"]["S"].rsplit("@", 1)[0],
                                       int(it["version"]["N"])))  # fmt: skip


FIRST = [(f"S-{i}", f"Name {i}", f"{i}.5") for i in range(8)]
SECOND = [(s, n + (" v2" if i % 3 == 0 else ""), p) for i, (s, n, p) in enumerate(FIRST)]
SECOND += [("NEW-1", "New", "1")]


def test_state_machine_per_record_and_sync_leave_identical_tables(tmp_path):
    with command_cloud() as cloud:
        sm = create_module(cloud.ddb, "sm-shop-", "product")
        bulk = create_module(cloud.ddb, "bulk-shop-", "product")
        notes: dict[str, list] = {"sm": [], "bulk": []}
        for names in (sm, bulk):
            before: dict = {}
            for run_id, rows, mode in (("r1", FIRST, "insert"), ("r2", SECOND, "upsert")):
                _import(tmp_path, names["command"], rows, mode=mode, run_id=run_id)
                if names is sm:
                    for item in _new_commands(cloud.ddb, names["command"], before):
                        arn = cloud.publish(names["command"], item, put=False)
                        assert cloud.wait_done(arn)["status"] == "SUCCEEDED"
                    sm_done = [
                        m
                        for m in cloud.messages(cloud.status_queue)
                        if m["content"]["status"] == "finish:FINISHED"
                    ]
                    notes["sm"] += sm_done
                else:
                    result = sync_tables(
                        table=names["command"],
                        dynamodb=cloud.ddb,
                        clock=lambda: CLOCK,
                        sns=cloud.sns,
                        status_topic_arn=cloud.states.status_topic_arn,
                    )
                    assert not result.failures and not result.handler_failures
                    notes["bulk"] += cloud.messages(cloud.status_queue)
                before = scan_all(names["command"], cloud.ddb)
        a = tables_snapshot(cloud.ddb, sm)
        b = tables_snapshot(cloud.ddb, bulk)
    # the same finish:FINISHED notifications (the table name aside)
    for m in notes["sm"] + notes["bulk"]:
        m["table"] = m["table"].split("-", 2)[-1]
    key = lambda m: (m["pk"], m["sk"])  # noqa: E731
    assert len(notes["sm"]) == 12
    assert sorted(notes["sm"], key=key) == sorted(notes["bulk"], key=key)
    assert len(a["data"]) == 9 and len(a["history"]) == 3  # S-0, S-3, S-6 changed
    assert len(a["command"]) == 12
    assert all(c["status"] == {"S": "finish:FINISHED"} for c in a["command"].values())
    assert a == b


def test_three_pending_versions_in_one_sync_match_the_out_of_order_state_machine():
    with command_cloud() as cloud:
        sm = create_module(cloud.ddb, "sm-shop-", "product")
        bulk = create_module(cloud.ddb, "bulk-shop-", "product")
        items = {v: command_item("A1", v, f"Name v{v}", f"{v}.5") for v in (1, 2, 3)}
        items.update({(2, "B"): command_item("B1", 1, "b", "1")})
        for names in (sm, bulk):
            for item in items.values():
                cloud.ddb.put_item(TableName=names["command"], Item=item)
        # state machine: 3 first (waits), then 2 (waits), then 1
        arns = [cloud.publish(sm["command"], items[k], put=False) for k in (3, 2, 1, (2, "B"))]
        for arn in arns:
            assert cloud.wait_done(arn)["status"] == "SUCCEEDED"
        result = sync_tables(table=bulk["command"], dynamodb=cloud.ddb, clock=lambda: CLOCK)
        assert (result.applied, result.data_written, result.history_written) == (4, 2, 2)
        assert result.commands_written == 4  # one put per command: its status and, for 1-2, TTL
        a = tables_snapshot(cloud.ddb, sm, drop=("taskToken",))
        b = tables_snapshot(cloud.ddb, bulk, drop=("taskToken",))
        # nothing left to apply: a second sync writes nothing
        again = sync_tables(table=bulk["command"], dynamodb=cloud.ddb, clock=lambda: CLOCK)
        assert (again.applied, again.commands_written) == (0, 0)
    assert a == b


def test_sync_of_given_records_fetches_predecessors_and_tolerates_gaps():
    """`commands=` (a run's own records): v1 is only in the table; v5 follows a gap."""
    with command_cloud() as cloud:
        sm = create_module(cloud.ddb, "sm-shop-", "product")
        bulk = create_module(cloud.ddb, "bulk-shop-", "product")
        v1, v2 = command_item("G1", 1, "a", "1"), command_item("G1", 2, "b", "2")
        gap = command_item("H1", 5, "h", "5")
        for names in (sm, bulk):
            for item in (v1, v2, gap):
                cloud.ddb.put_item(TableName=names["command"], Item=item)
        for item in (v1, v2, gap):
            assert cloud.wait_done(cloud.publish(sm["command"], item, put=False))["status"] == (
                "SUCCEEDED"
            )
        first = sync_tables(
            table=bulk["command"], dynamodb=cloud.ddb, clock=lambda: CLOCK, commands=[v1]
        )
        assert first.applied == 1
        rest = sync_tables(
            table=bulk["command"], dynamodb=cloud.ddb, clock=lambda: CLOCK, commands=[v2, gap]
        )
        assert rest.applied == 2
        a, b = tables_snapshot(cloud.ddb, sm), tables_snapshot(cloud.ddb, bulk)
    assert a == b
    assert a["data"][("PRODUCT#acme", "PRODUCT#H1")]["version"] == {"N": "5"}


def test_a_failing_custom_handler_leaves_that_version_pending(tmp_path, monkeypatch):
    (tmp_path / "flaky_sync.py").write_text(
        "CALLS = []\n"
        "def mirror(command, ctx):\n"
        "    CALLS.append(command.sk)\n"
        "    if command.sk == 'PRODUCT#F1@2':\n"
        "        raise RuntimeError('downstream refused')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    handlers = load_handlers("flaky_sync:mirror", use_entry_points=False)
    with command_cloud() as cloud:
        t = create_module(cloud.ddb, "bulk-shop-", "product")
        for v in (1, 2, 3):
            cloud.ddb.put_item(TableName=t["command"], Item=command_item("F1", v, f"n{v}", "1"))
        result = sync_tables(
            table=t["command"], dynamodb=cloud.ddb, clock=lambda: CLOCK, handlers=handlers
        )
        assert [(f.sk, f.reason) for f in result.handler_failures] == [
            ("PRODUCT#F1@2", "mirror: downstream refused")
        ]
        data = scan_all(t["data"], cloud.ddb)[("PRODUCT#acme", "PRODUCT#F1")]
        cmds = scan_all(t["command"], cloud.ddb)
    assert data["version"] == {"N": "1"}
    status = {k[1]: v.get("status", {}).get("S") for k, v in cmds.items()}
    assert status == {
        "PRODUCT#F1@1": "finish:FINISHED",
        "PRODUCT#F1@2": "sync_data:FAILED",
        "PRODUCT#F1@3": None,
    }
    import flaky_sync

    assert flaky_sync.CALLS == ["PRODUCT#F1@1", "PRODUCT#F1@2"]


def test_sync_cli_counts_and_errors(tmp_path, capsys):
    from moto import mock_aws

    with mock_aws():
        import boto3

        ddb = boto3.client("dynamodb", region_name="us-east-1")
        t = create_module(ddb, "dev-shop-", "product")
        ddb.put_item(TableName=t["command"], Item=command_item("K1", 1, "k", "1"))
        assert main(["sync", "--table", t["command"], "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert (out["applied"], out["data_written"], out["commands_written"]) == (1, 1, 1)
        assert main(["sync", "--table", t["command"], "--handlers", "nope"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "module:attribute" in err
        assert main(["sync", "--table", "dev-shop-missing-command"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "'dev-shop-missing-command' does not exist" in err


def test_sync_cli_exit_follows_the_one_rule_a_command_left_unapplied_is_3(
    tmp_path, monkeypatch, capsys
):
    """A handler that refuses a command leaves a row that needs a look: exit 3, as `run` says
    for a failed row (sync had its own rule and said 1, which reads as "nothing happened")."""
    from moto import mock_aws

    (tmp_path / "refusing_sync.py").write_text(
        "def mirror(command, ctx):\n"
        "    if command.sk == 'PRODUCT#R1@1':\n"
        "        raise RuntimeError('downstream refused')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with mock_aws():
        import boto3

        ddb = boto3.client("dynamodb", region_name="us-east-1")
        t = create_module(ddb, "dev-shop-", "product")
        ddb.put_item(TableName=t["command"], Item=command_item("R1", 1, "r", "1"))
        ddb.put_item(TableName=t["command"], Item=command_item("K1", 1, "k", "1"))
        code = main(["sync", "--table", t["command"], "--handlers", "refusing_sync:mirror"])
        captured = capsys.readouterr()
    assert code == EXIT_PARTIAL
    assert "failed 1" in captured.out
    assert (
        captured.err == "importer: failed: PRODUCT#acme PRODUCT#R1@1: mirror: downstream refused\n"
    )


@pytest.mark.parametrize("tz_name", ["Asia/Tokyo"])
def test_dates_follow_the_lambda_time_zone(tz_name):
    from importer.mbc.model import local_tz

    with command_cloud(tz=local_tz(tz_name)) as cloud:
        sm = create_module(cloud.ddb, "sm-shop-", "product")
        bulk = create_module(cloud.ddb, "bulk-shop-", "product")
        item = command_item("Z1", 1, "z", "1")
        cloud.ddb.put_item(TableName=bulk["command"], Item=item)
        assert cloud.wait_done(cloud.publish(sm["command"], item))["status"] == "SUCCEEDED"
        sync_tables(
            table=bulk["command"], dynamodb=cloud.ddb, clock=lambda: CLOCK, tz=local_tz(tz_name)
        )
        a, b = tables_snapshot(cloud.ddb, sm), tables_snapshot(cloud.ddb, bulk)
    assert a == b
    data = a["data"][("PRODUCT#acme", "PRODUCT#Z1")]
    assert data["createdAt"] == {"S": "2026-11-21T09:00:00+09:00"}
    status_time = a["command"][("PRODUCT#acme", "PRODUCT#Z1@1")]["updatedAt"]["S"]
    assert status_time.endswith("+09:00")


def test_a_chain_stuck_behind_a_failed_version_times_out_and_sync_applies_it():
    """§5.3 of the notes: a failed version never releases the next one.

    With ``wait_timeout_seconds`` the waiting execution fails (``States.Timeout``)
    instead of waiting for a year, and ``importer sync`` applies what it left.
    """
    from importer.aws.statemachine import command_handler_definition
    from importer.mbc.data_sync import DynamoDataSyncHandler, FunctionHandler
    from tests.support.command_cloud import LAMBDA_ARN, ROLE_ARN, Gate

    def refuse_v1(command, ctx):
        if command.version == 1:
            raise RuntimeError("downstream refused v1")

    handlers = [DynamoDataSyncHandler(), FunctionHandler(refuse_v1)]
    with command_cloud(handlers=handlers) as cloud:
        t = create_module(cloud.ddb, "dev-shop-", "product")
        definition = command_handler_definition(lambda_arn=LAMBDA_ARN, wait_timeout_seconds=2)
        assert definition["States"]["wait_prev_command"]["TimeoutSeconds"] == 2
        cloud.machine_arn = cloud.sfn.create_state_machine(
            name="command-handler-bounded", definition=json.dumps(definition), roleArn=ROLE_ARN
        )["stateMachineArn"]
        items = {v: command_item("W1", v, f"n{v}", "1") for v in (1, 2)}
        for item in items.values():
            cloud.ddb.put_item(TableName=t["command"], Item=item)
        hold_v1 = Gate("set_ttl_command", "PRODUCT#W1@1")
        cloud.hooks.append(hold_v1)
        e1 = cloud.publish(t["command"], items[1], put=False)
        assert hold_v1.reached.wait(30)
        e2 = cloud.publish(t["command"], items[2], put=False)
        cloud.wait_status(
            t["command"], ("PRODUCT#acme", "PRODUCT#W1@2"), "wait_prev_command:FINISHED"
        )
        hold_v1.open()
        assert cloud.wait_done(e1)["status"] == "FAILED"
        desc = cloud.wait_done(e2)
        assert desc["status"] in ("FAILED", "TIMED_OUT"), desc["status"]
        events = cloud.sfn.get_execution_history(executionArn=e2)["events"]
        assert any(e["type"] == "TaskTimedOut" for e in events), [e["type"] for e in events]
        result = sync_tables(
            table=t["command"],
            dynamodb=cloud.ddb,
            clock=lambda: CLOCK,
            handlers=[DynamoDataSyncHandler()],
        )
        data = scan_all(t["data"], cloud.ddb)[("PRODUCT#acme", "PRODUCT#W1")]
        cmds = scan_all(t["command"], cloud.ddb)
    assert data["version"] == {"N": "2"} and result.applied >= 1
    assert cmds[("PRODUCT#acme", "PRODUCT#W1@2")]["status"] == {"S": "finish:FINISHED"}


def test_s3_offloaded_attributes_are_loaded_for_the_data_row_on_both_paths():
    import boto3

    with command_cloud() as cloud:
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="attrs")
        s3.put_object(Bucket="attrs", Key="ddb/big.json", Body=b'{"price": 1.25, "tags": ["a"]}')
        sm = create_module(cloud.ddb, "sm-shop-", "product")
        bulk = create_module(cloud.ddb, "bulk-shop-", "product")
        item = command_item("S3", 1, "s", "1")
        item["attributes"] = {"S": "s3://attrs/ddb/big.json"}
        cloud.ddb.put_item(TableName=bulk["command"], Item=item)
        assert cloud.wait_done(cloud.publish(sm["command"], item))["status"] == "SUCCEEDED"
        sync_tables(table=bulk["command"], dynamodb=cloud.ddb, clock=lambda: CLOCK, s3=s3)
        a, b = tables_snapshot(cloud.ddb, sm), tables_snapshot(cloud.ddb, bulk)
    assert a == b
    data = a["data"][("PRODUCT#acme", "PRODUCT#S3")]
    assert data["attributes"] == {"M": {"price": {"N": "1.25"}, "tags": {"L": [{"S": "a"}]}}}
    assert a["command"][("PRODUCT#acme", "PRODUCT#S3@1")]["attributes"] == item["attributes"]
