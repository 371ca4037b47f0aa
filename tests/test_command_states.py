"""The command state machine, run as generated on moto's Step Functions engine.

See :mod:`tests.command_cloud` for the set-up.  Every wait is bounded: a test
that would hang fails after ``WAIT`` seconds instead.
"""

from __future__ import annotations

import random

import pytest

from importer.aws.stream_handler import execution_name, handle_stream_event, is_command_insert
from importer.mbc.command_states import (
    CommandEvent,
    CommandStates,
    StateError,
    resume_output,
    table_from_source,
)
from importer.mbc.data_sync import DataSyncError, load_handlers, transform_command_to_data
from importer.mbc.model import Tables, render_dates
from tests.support.command_cloud import (
    CLOCK,
    TTL_DAYS,
    Gate,
    command_cloud,
    command_item,
    create_module,
    stream_record,
)

PK = "PRODUCT#acme"
PREFIX = "dev-shop-"


def key(code: str, v: int | None = None) -> tuple[str, str]:
    return (PK, f"PRODUCT#{code}" + (f"@{v}" if v else ""))


def test_out_of_order_versions_end_at_the_last_with_history_ttl_and_finish_statuses():
    with command_cloud() as cloud:
        t = create_module(cloud.ddb, PREFIX, "product")
        items = {v: command_item("A1", v, f"Name v{v}", f"{v}.5") for v in (1, 2, 3)}
        for item in items.values():
            cloud.ddb.put_item(TableName=t["command"], Item=item)
        hold_v1 = Gate("set_ttl_command", "PRODUCT#A1@1")
        cloud.hooks.append(hold_v1)
        e1 = cloud.publish(t["command"], items[1], put=False)
        assert hold_v1.reached.wait(30)
        # 3 arrives before 2: it waits for 2, then 2 waits for 1
        e3 = cloud.publish(t["command"], items[3], put=False)
        cloud.wait_status(t["command"], key("A1", 3), "wait_prev_command:FINISHED")
        e2 = cloud.publish(t["command"], items[2], put=False)
        cloud.wait_status(t["command"], key("A1", 2), "wait_prev_command:FINISHED")
        for arn in (e2, e3):
            assert cloud.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
        hold_v1.open()
        for arn in (e1, e2, e3):
            assert cloud.wait_done(arn)["status"] == "SUCCEEDED", arn

        data = cloud.ddb.get_item(TableName=t["data"], Key=_k(key("A1")))["Item"]
        assert data["version"] == {"N": "3"}
        assert data["csk"] == {"S": "PRODUCT#A1@3"} and data["cpk"] == {"S": PK}
        assert data["attributes"]["M"]["name"] == {"S": "Name v3"}
        # createdAt kept from version 1, re-rendered in the Lambda's zone (UTC)
        assert data["createdAt"] == {"S": "2026-11-21T00:00:00+00:00"}
        assert data["updatedAt"] == {"S": "2026-11-23T00:00:00+00:00"}
        assert "status" not in data and "source" not in data and "ttl" not in data

        history = _scan(cloud, t["history"])
        assert sorted(history) == [key("A1", 1), key("A1", 2)]
        assert history[key("A1", 1)]["version"] == {"N": "1"}
        assert history[key("A1", 2)]["attributes"]["M"]["name"] == {"S": "Name v2"}
        for item in history.values():
            assert item["ttl"] == {"N": str(int(CLOCK) + TTL_DAYS["history"] * 86400)}

        commands = _scan(cloud, t["command"])
        command_ttl = {"N": str(int(CLOCK) + TTL_DAYS["command"] * 86400)}
        assert commands[key("A1", 1)]["ttl"] == command_ttl
        assert commands[key("A1", 2)]["ttl"] == command_ttl
        assert "ttl" not in commands[key("A1", 3)]
        assert {k: c["status"]["S"] for k, c in commands.items()} == {
            key("A1", v): "finish:FINISHED" for v in (1, 2, 3)
        }
        # the waiting versions kept the token they were resumed with
        assert "taskToken" in commands[key("A1", 2)] and "taskToken" in commands[key("A1", 3)]

        finished = [
            m
            for m in cloud.messages(cloud.status_queue)
            if m["content"]["status"] == "finish:FINISHED"
        ]
        assert sorted(m["sk"] for m in finished) == [f"PRODUCT#A1@{v}" for v in (1, 2, 3)]
        m = finished[0]
        assert m["action"] == "command-status" and m["tenantCode"] == "acme"
        assert m["table"] == t["command"] and m["id"].startswith("run")
        assert m["content"]["source"].startswith("import-csv:")


def test_a_duplicate_execution_of_an_old_version_fails_with_the_framework_error():
    with command_cloud() as cloud:
        t = create_module(cloud.ddb, PREFIX, "product")
        for v in (1, 2):
            arn = cloud.publish(t["command"], command_item("D1", v, f"n{v}", "1"))
            assert cloud.wait_done(arn)["status"] == "SUCCEEDED"
        cloud.messages(cloud.alarm_queue)
        dup = cloud.publish(t["command"], command_item("D1", 1, "n1", "1"), put=False)
        desc = cloud.wait_done(dup)
        assert desc["status"] == "FAILED"
        history = cloud.sfn.get_execution_history(executionArn=dup)["events"]
        failed = [e for e in history if e["type"] == "ExecutionFailed"][0]
        details = failed["executionFailedEventDetails"]
        assert details["error"] == "version is not match"
        assert details["cause"] == "next version must be 3 but got 1"
        # check_version returned (not raised): its status is FINISHED, and an alarm went out
        item = cloud.ddb.get_item(TableName=t["command"], Key=_k(key("D1", 1)))["Item"]
        assert item["status"] == {"S": "check_version:FINISHED"}
        alarms = cloud.messages(cloud.alarm_queue)
        assert [a["action"] for a in alarms] == ["sfn-alarm"]
        assert alarms[0]["content"]["errorMessage"]["error"] == "version is not match"
        assert alarms[0]["table"] == "product"
        data = cloud.ddb.get_item(TableName=t["data"], Key=_k(key("D1")))["Item"]
        assert data["version"] == {"N": "2"}


@pytest.mark.parametrize("self_resume", [True, False])
def test_lost_wakeup_predecessor_finishes_before_the_token_is_stored(self_resume):
    """v2 decides to wait, then v1 runs `finish` (no token yet), then v2 stores its token."""
    with command_cloud(self_resume=self_resume) as cloud:
        t = create_module(cloud.ddb, PREFIX, "product")
        items = {v: command_item("L1", v, f"n{v}", "1") for v in (1, 2)}
        for item in items.values():
            cloud.ddb.put_item(TableName=t["command"], Item=item)
        hold_v1 = Gate("set_ttl_command", "PRODUCT#L1@1")
        hold_v2 = Gate("wait_prev_command", "PRODUCT#L1@2")
        cloud.hooks += [hold_v1, hold_v2]
        e1 = cloud.publish(t["command"], items[1], put=False)
        assert hold_v1.reached.wait(30)
        e2 = cloud.publish(t["command"], items[2], put=False)
        assert hold_v2.reached.wait(30)  # v2's check_version said "wait" (1)
        hold_v1.open()
        assert cloud.wait_done(e1)["status"] == "SUCCEEDED"  # finish found no token
        hold_v2.open()
        desc = cloud.wait_done(e2, timeout=30 if self_resume else 3)
        if self_resume:
            assert desc["status"] == "SUCCEEDED"
            data = cloud.ddb.get_item(TableName=t["data"], Key=_k(key("L1")))["Item"]
            assert data["version"] == {"N": "2"}
            status = cloud.ddb.get_item(TableName=t["command"], Key=_k(key("L1", 2)))["Item"]
            assert status["status"] == {"S": "finish:FINISHED"}
        else:
            # the framework's behaviour: v2 waits for a wake-up that already happened
            assert desc["status"] == "RUNNING"
            cloud.sfn.stop_execution(executionArn=e2)


def test_unknown_state_and_missing_handler_fail_like_the_framework():
    with command_cloud() as cloud:
        t = create_module(cloud.ddb, PREFIX, "product")
        item = command_item("U1", 1, "n", "1")
        cloud.ddb.put_item(TableName=t["command"], Item=item)
        event = _event(t["command"], item, "no_such_state")
        with pytest.raises(StateError, match="step function state not found!"):
            cloud.states.handle(event)
        got = cloud.ddb.get_item(TableName=t["command"], Key=_k(key("U1", 1)))["Item"]
        assert got["status"] == {"S": "no_such_state:FAILED"}
        with pytest.raises(StateError, match="SyncDataHandler not found!"):
            cloud.states.handle(_event(t["command"], item, "sync_data", input={}))
        with pytest.raises(StateError, match="SyncDataHandler empty!"):
            cloud.states.handle(_event(t["command"], item, "sync_data", input={"result": "X"}))
        out = cloud.states.handle(_event(t["command"], item, "transform_data"))
        assert out == [[[{"prevStateName": "transform_data", "result": "DataSyncDdsHandler"}]]]
        assert cloud.states.handle(_event(t["command"], item, "finish")) == [[None]]
        with pytest.raises(ValueError, match="NewImage"):
            cloud.states.handle({"context": {"State": {"Name": "finish"}, "Execution": {}}})


def test_custom_handler_from_a_dotted_path_runs_in_the_map(tmp_path, monkeypatch):
    (tmp_path / "my_sync.py").write_text(
        "SEEN = []\n"
        "class Mirror:\n"
        "    def up(self, command, ctx):\n"
        "        SEEN.append((command.sk, command.plain['attributes']['price']))\n"
        "        return {'mirrored': command.sk}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    handlers = load_handlers("my_sync:Mirror", use_entry_points=False)
    assert [h.name for h in handlers] == ["DataSyncDdsHandler", "Mirror"]
    with command_cloud(handlers=handlers) as cloud:
        t = create_module(cloud.ddb, PREFIX, "product")
        arn = cloud.publish(t["command"], command_item("C1", 1, "n", "2.5"))
        assert cloud.wait_done(arn)["status"] == "SUCCEEDED"
    import my_sync

    assert my_sync.SEEN == [("PRODUCT#C1@1", 2.5)]


def test_handler_settings_errors_are_one_line():
    for spec, message in [
        ("nope", "expected 'module:attribute'"),
        ("no_such_module_xyz:f", "cannot import"),
        ("importer.mbc.model:missing", "no attribute 'missing'"),
        ("importer.mbc.model:KEY_SEPARATOR", "not a class, handler object or function"),
    ]:
        with pytest.raises(DataSyncError, match=message) as info:
            load_handlers(spec, use_entry_points=False)
        assert "\n" not in str(info.value)


# ----------------------------------------------------------- pure rules, no cloud
def test_stream_filter_and_execution_name_follow_the_framework():
    arn = "arn:aws:dynamodb:us-east-1:1:table/dev-shop-product-command/stream/2026"
    item = command_item("N1", 3, "n", "1")
    rec = stream_record("dev-shop-product-command", item)
    assert is_command_insert(rec)
    assert not is_command_insert({**rec, "eventName": "MODIFY"})
    sync = {**item, "syncMode": {"S": "SYNC"}}
    assert not is_command_insert(stream_record("dev-shop-product-command", sync))
    assert not is_command_insert(stream_record("dev-shop-product-data", item))
    name = execution_name("product", rec["dynamodb"]["Keys"], 1726045913658, token="ab")
    assert name == "product-PRODUCT-acme-PRODUCT-N1-v3-1726045913658"
    odd = {"pk": {"S": "T#tén ant"}, "sk": {"S": "X#a b@c@2"}}
    assert execution_name("m", odd, 5, token="zz") == "m-T-t__zz__n__zz__ant-X-a__zz__b-vc__zz__2-5"
    long = {"pk": {"S": "P" * 80}, "sk": {"S": "S"}}
    assert execution_name("m", long, 5, token="zz") is None
    assert table_from_source(arn) == "dev-shop-product-command"
    assert table_from_source("arn:aws:dynamodb:r:a:local-demo-master-command") == (
        "local-demo-master-command"
    )

    class FakeSfn:
        calls: list = []

        def start_execution(self, **kw):
            self.calls.append(kw)
            return {"executionArn": f"arn:{len(self.calls)}"}

    sfn = FakeSfn()
    out = handle_stream_event(
        {"Records": [rec, {**rec, "eventName": "REMOVE"}]},
        sfn=sfn,
        state_machine_arn="arn:sm",
        clock_ms=lambda: 42,
        rng=random.Random(1),
    )
    assert len(out) == 1 and len(sfn.calls) == 1
    import json

    sent = json.loads(sfn.calls[0]["input"])
    assert sent["source"] == rec["eventSourceARN"] and sent["dynamodb"]["NewImage"] == item
    assert sfn.calls[0]["name"] == "product-PRODUCT-acme-PRODUCT-N1-v3-42"


def test_tables_and_resume_output():
    t = Tables.from_command_table("dev-app-sample-command")
    assert (t.prefix, t.module, t.data, t.history, t.master_data) == (
        "dev-app-",
        "sample",
        "dev-app-sample-data",
        "dev-app-sample-history",
        "dev-app-master-data",
    )
    t = Tables.from_command_table("dev-my-app-sample-command", prefix="dev-my-app-")
    assert t.module == "sample"
    assert resume_output(2) == (
        '{"Payload":[[{"result":"resumed_by_prev_version","prevVersion":2}]]}'
    )


def test_merge_drops_fields_the_command_lacks_and_keeps_created_fields():
    from datetime import UTC

    existing = {
        "pk": {"S": PK},
        "sk": {"S": "PRODUCT#M1"},
        "seq": {"N": "7"},
        "extra": {"S": "kept"},
        "createdAt": {"S": "2020-01-01T00:00:00Z"},
        "createdBy": {"S": "first"},
        "createdIp": {"NULL": True},
        "ttl": {"N": "5"},
    }
    cmd = command_item("M1", 2, "n", "1")
    cmd["createdIp"] = {"S": "10.0.0.1"}
    out = transform_command_to_data(cmd, existing, UTC)
    assert "seq" not in out and "ttl" not in out and out["extra"] == {"S": "kept"}
    assert out["createdAt"] == {"S": "2020-01-01T00:00:00+00:00"}
    assert out["createdBy"] == {"S": "first"} and out["createdIp"] == {"S": "10.0.0.1"}
    assert "status" not in out and "source" not in out
    assert render_dates({"createdAt": {"S": "bad"}}, UTC) == {"createdAt": {"S": "bad"}}


def _k(key: tuple[str, str]) -> dict:
    return {"pk": {"S": key[0]}, "sk": {"S": key[1]}}


def _scan(cloud, table: str) -> dict:
    from tests.conftest import scan_all

    return scan_all(table, cloud.ddb)


def _event(table: str, item: dict, state: str, **extra) -> dict:
    rec = stream_record(table, item)
    return {
        "source": "step-function",
        "context": {
            "Execution": {"Id": "arn:exec", "Input": {**rec, "source": rec["eventSourceARN"]}},
            "State": {"Name": state},
            "StateMachine": {"Id": "arn:sm", "Name": "command-handler"},
        },
        "input": extra.get("input", {}),
    }


def test_command_event_rejects_bad_payloads():
    with pytest.raises(ValueError, match="expected"):
        CommandEvent.parse([])
    assert isinstance(CommandStates, type)
