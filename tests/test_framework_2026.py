"""The framework's semantics that changed after our notes' snapshot (merged PRs, 2026).

* #465 -- ``wait_prev_command`` stores its token, then reads its predecessor
  with a consistent read and resumes itself when that one reached ``finish``.
* #459 / #462 -- a data-sync handler registered twice runs once; a warning
  when none is registered.
* #460 / #462 -- ``publishSync`` hands each handler the versioned ``sk@N``
  (our `run --sync` and `importer sync` do).
* #461 -- ``publishSync`` skips handlers of type ``dynamodb`` (the state
  machine's ``transform_data`` still lists them).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest

from importer.cli.main import main
from importer.mbc.command_states import CommandStates
from importer.mbc.data_sync import load_handlers
from tests.conftest import PRODUCT_SPEC, scan_all
from tests.support.command_cloud import command_cloud, command_item, create_module
from tests.test_command_states import _event

PREFIX = "dev-shop-"


class _Recording:
    """A boto3 DynamoDB client that records (operation, table, sk, ConsistentRead)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[tuple[str, str, str, bool]] = []
        self.exceptions = client.exceptions

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.client, name)

        def call(**kw: Any) -> Any:
            sk = (kw.get("Key") or kw.get("Item") or {}).get("sk", {}).get("S", "")
            self.calls.append((name, kw.get("TableName", ""), sk, bool(kw.get("ConsistentRead"))))
            return real(**kw)

        return call


def test_465_wait_prev_command_reads_its_predecessor_consistently_after_storing_its_token():
    with command_cloud() as cloud:
        t = create_module(cloud.ddb, PREFIX, "product")
        v1 = command_item("W1", 1, "n1", "1")
        v2 = command_item("W1", 2, "n2", "1")
        v1["status"] = {"S": "finish:FINISHED"}  # v1 released no one: v2 was not waiting yet
        for item in (v1, v2):
            cloud.ddb.put_item(TableName=t["command"], Item=item)
        rec = _Recording(cloud.ddb)
        sent: list[tuple[str, str]] = []

        class _Sfn:
            def send_task_success(self, taskToken: str, output: str) -> None:
                sent.append((taskToken, output))

        states = CommandStates(dynamodb=rec, sfn=_Sfn(), handlers=load_handlers([]))
        event = _event(t["command"], v2, "wait_prev_command")
        event["taskToken"] = "tok-2"
        states.handle(event)
    store = rec.calls.index(("update_item", t["command"], "PRODUCT#W1@2", False))
    reads = [c for c in rec.calls[store:] if c[0] == "get_item"]
    assert reads == [("get_item", t["command"], "PRODUCT#W1@1", True)]
    assert [tok for tok, _ in sent] == ["tok-2"]  # it resumed itself
    assert '"prevVersion":1' in sent[0][1]


def test_465_every_decision_read_of_the_states_is_consistent():
    with command_cloud() as cloud:
        t = create_module(cloud.ddb, PREFIX, "product")
        item = command_item("C1", 2, "n", "1")
        cloud.ddb.put_item(TableName=t["command"], Item=command_item("C1", 1, "n", "1"))
        cloud.ddb.put_item(TableName=t["command"], Item=item)
        rec = _Recording(cloud.ddb)
        states = CommandStates(dynamodb=rec, handlers=load_handlers([]))
        for state in ("check_version", "set_ttl_command", "history_copy", "finish"):
            states.handle(_event(t["command"], item, state))
    gets = [c for c in rec.calls if c[0] == "get_item" and c[1] != t["master"]]
    assert gets and all(c[3] for c in gets)


def _handler_module(tmp_path, monkeypatch, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)


def test_459_a_handler_registered_twice_runs_once_and_none_is_warned(tmp_path, monkeypatch, caplog):
    _handler_module(tmp_path, monkeypatch, "twice_mod", "def mirror(command, ctx):\n    pass\n")
    with caplog.at_level(logging.WARNING, logger="importer.mbc.data_sync"):
        handlers = load_handlers("twice_mod:mirror,twice_mod:mirror", use_entry_points=False)
        assert [h.name for h in handlers] == ["DataSyncDdsHandler", "mirror"]
        assert "registered twice" in caplog.text
        assert load_handlers([], disable_default=True, use_entry_points=False) == []
        assert "no data-sync handler is registered" in caplog.text


def _run(tmp_path, table: str, run_id: str, *extra: str) -> int:
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    src = tmp_path / f"{run_id}.csv"
    src.write_text("sku,name,price,qty,active\nA-1,a,1,1,yes\n")
    args = ["run", str(src), "--spec", str(tmp_path / "spec.toml"), "--table", table]
    args += ["--writer", "boto3", "--run-id", run_id, "--quiet", "--workers", "2"]
    args += ["--checkpoint", str(tmp_path / f"{run_id}.ckpt"), *extra]
    return main(args)


MIRRORS = """\
SEEN = []


class Mirror:
    def up(self, command, ctx):
        SEEN.append(("Mirror", command.sk))


class DdbMirror:
    type = "dynamodb"

    def up(self, command, ctx):
        SEEN.append(("DdbMirror", command.sk))
"""


@pytest.mark.parametrize("how", ["run --sync", "importer sync"])
def test_460_461_bulk_sync_hands_sk_at_version_and_skips_dynamodb_handlers(
    tmp_path, monkeypatch, how
):
    _handler_module(tmp_path, monkeypatch, "mirrors_mod", MIRRORS)
    monkeypatch.setenv("IMPORTER_DATA_SYNC_HANDLERS", "mirrors_mod:Mirror,mirrors_mod:DdbMirror")
    with command_cloud() as cloud:
        t = create_module(cloud.ddb, PREFIX, "product")
        if how == "run --sync":
            assert _run(tmp_path, t["command"], "r1", "--sync") == 0
        else:
            assert _run(tmp_path, t["command"], "r1") == 0
            assert main(["sync", "--table", t["command"], "--json"]) == 0
        data = scan_all(t["data"], cloud.ddb)
    import mirrors_mod

    assert mirrors_mod.SEEN == [("Mirror", "PRODUCT#A-1@1")]  # versioned sk; DdbMirror skipped
    assert data[("PRODUCT#acme", "PRODUCT#A-1")]["version"] == {"N": "1"}


def test_461_the_state_machine_still_runs_a_dynamodb_typed_handler(tmp_path, monkeypatch):
    _handler_module(tmp_path, monkeypatch, "mirrors_sm", MIRRORS)
    handlers = load_handlers("mirrors_sm:Mirror,mirrors_sm:DdbMirror", use_entry_points=False)
    with command_cloud(handlers=handlers) as cloud:
        t = create_module(cloud.ddb, PREFIX, "product")
        arn = cloud.publish(t["command"], command_item("M1", 1, "n", "1"))
        assert cloud.wait_done(arn)["status"] == "SUCCEEDED"
    import mirrors_sm

    assert sorted(mirrors_sm.SEEN) == [("DdbMirror", "PRODUCT#M1@1"), ("Mirror", "PRODUCT#M1@1")]
