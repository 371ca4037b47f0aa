"""`importer run --sync`: the import and the command state machine's result, in one run.

The same files are imported three ways into three module table sets on one
moto cloud:

* ``sm``   -- `importer run`, then the generated command-handler ASL on moto's
  Step Functions engine, one execution per new command record (as the
  command table's stream would start them);
* ``cli``  -- `importer run`, then `importer sync`;
* ``run``  -- `importer run --sync` (the last file: killed after a batch was
  written but before its sync, then `--resume`).

Command, data and history tables must come out byte-identical.  Every path
reads the same pinned wall clock (the state machine's through CommandStates,
the two bulk paths through ``importer.mbc.sync.time``), so TTLs and the final
status' ``updatedAt`` compare too.  The one attribute set aside is
``syncMode``: `run --sync` writes ``{"S": "SYNC"}`` on its command records so
that the stream starts no execution for them, as the framework's synchronous
publish does.
"""

from __future__ import annotations

import contextlib
import json
import time
import types
from datetime import UTC, datetime
from unittest import mock

import pytest

from importer.aws.stream_handler import is_command_insert
from importer.cli.main import EXIT_PARTIAL, main
from importer.dynamodb.errors import WriterFatalError
from importer.records import PreparedItem
from importer.run import batch_steps
from importer.run.batch_steps import SYNC_MODE_TAIL, mark_sync
from tests.conftest import PRODUCT_SPEC, scan_all
from tests.support.command_cloud import (
    CLOCK,
    command_cloud,
    create_module,
    stream_record,
    tables_snapshot,
)

HEADER = "sku,name,price,qty,active\n"
FIXED_NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
PINNED_TIME = types.SimpleNamespace(time=lambda: CLOCK, monotonic=time.monotonic)


class _FixedDatetime(datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED_NOW if tz is None else FIXED_NOW.astimezone(tz)


FIRST = [(f"S-{i}", f"Name {i}", f"{i}.5") for i in range(8)]
SECOND = [(s, n + (" v2" if i % 3 == 0 else ""), p) for i, (s, n, p) in enumerate(FIRST)]
SECOND += [("NEW-1", "New", "1")]
# two rows a batch: S-1 changes in batches 0, 1 and 2 (versions 2, 3, 4), X-1 in 0 and 2,
# S-2 is unchanged, NEW-2 is new and then changed in the next batch
THIRD = [
    ("S-1", "Name 1 b", "1.5"),
    ("X-1", "x", "1"),
    ("S-1", "Name 1 c", "1.5"),
    ("NEW-2", "n", "2"),
    ("S-1", "Name 1 d", "9"),
    ("X-1", "x 2", "1"),
    ("NEW-2", "n 2", "2"),
    ("S-2", "Name 2", "2.5"),
]
RUNS = (("r1", FIRST, "insert", ()), ("r2", SECOND, "upsert", ()))
RUNS += (("r3", THIRD, "upsert", ("--batch-items", "2")),)


def _run(tmp_path, table: str, rows, *, mode: str, run_id: str, extra=()) -> int:
    """`importer run` (boto3 writer: what moto intercepts in-process), pinned run id and time."""
    src = tmp_path / f"{run_id}.csv"
    src.write_text(HEADER + "".join(f"{s},{n},{p},1,yes\n" for s, n, p in rows))
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    args = ["run", str(src), "--spec", str(tmp_path / "spec.toml"), "--table", table]
    args += ["--writer", "boto3", "--mode", mode, "--run-id", run_id, "--quiet"]
    args += ["--workers", "2", "--checkpoint", str(tmp_path / f"{table}-{run_id}.ckpt")]
    args += ["--summary-json", str(tmp_path / f"{table}-{run_id}.json"), *extra]
    with (
        mock.patch("importer.transform.context.datetime", _FixedDatetime),
        mock.patch("importer.mbc.sync.time", PINNED_TIME),
    ):
        return main(args)


def _summary(tmp_path, table: str, run_id: str) -> dict:
    return json.loads((tmp_path / f"{table}-{run_id}.json").read_text())


def _new_commands(ddb, table: str, before: dict) -> list[dict]:
    """Items written since ``before``, in the order a stream would deliver them per entity."""
    new = [v for k, v in scan_all(table, ddb).items() if k not in before]
    return sorted(new, key=lambda it: (it["pk"]["S"], it["sk"]["S"].rsplit("@", 1)[0],
                                       int(it["version"]["N"])))  # fmt: skip


def _diff(a: dict, b: dict) -> list[str]:
    """Where two table snapshots differ: table, key, attribute and both values."""
    out = []
    for kind in sorted(set(a) | set(b)):
        for key in sorted(set(a[kind]) | set(b[kind])):
            x, y = a[kind].get(key), b[kind].get(key)
            if x is None or y is None:
                out.append(f"{kind} {key}: {'missing' if x is None else 'present'} vs other")
                continue
            for attr in sorted(set(x) | set(y)):
                if x.get(attr) != y.get(attr):
                    out.append(f"{kind} {key} {attr}: {x.get(attr)} != {y.get(attr)}")
    return out


def _crash_before_sync_of(line: int):
    """`_sync_written` as a kill would leave it: the batch holding `line` is written, not synced."""
    real = batch_steps._sync_written

    def fake(syncer, items, outcome):
        if any(it.line == line for it in items):
            raise WriterFatalError("simulated kill between the write and the sync")
        return real(syncer, items, outcome)

    return mock.patch("importer.run.batch_steps._sync_written", fake)


def test_state_machine_importer_sync_and_run_sync_leave_identical_tables(tmp_path):
    with command_cloud() as cloud:
        sm = create_module(cloud.ddb, "sm-shop-", "product")
        cli = create_module(cloud.ddb, "cli-shop-", "product")
        run = create_module(cloud.ddb, "run-shop-", "product")
        before: dict = {}
        for run_id, rows, mode, extra in RUNS:
            assert _run(tmp_path, sm["command"], rows, mode=mode, run_id=run_id, extra=extra) == 0
            for item in _new_commands(cloud.ddb, sm["command"], before):
                assert is_command_insert(stream_record(sm["command"], item))
                arn = cloud.publish(sm["command"], item, put=False)
                assert cloud.wait_done(arn)["status"] == "SUCCEEDED"
            before = scan_all(sm["command"], cloud.ddb)

            assert _run(tmp_path, cli["command"], rows, mode=mode, run_id=run_id, extra=extra) == 0
            with mock.patch("importer.mbc.sync.time", PINNED_TIME):
                assert main(["sync", "--table", cli["command"], "--json"]) == 0

            extra = ("--sync", *extra)
            if run_id != "r3":
                assert (
                    _run(tmp_path, run["command"], rows, mode=mode, run_id=run_id, extra=extra) == 0
                )
                continue
            # the last file: killed after line 6's batch (S-1 v4, X-1) was written, then resumed
            with _crash_before_sync_of(6):
                code = _run(tmp_path, run["command"], rows, mode=mode, run_id=run_id, extra=extra)
            assert code != 0
            stuck = scan_all(run["data"], cloud.ddb)[("PRODUCT#acme", "PRODUCT#S-1")]
            assert stuck["version"]["N"] != "4"  # written, not applied: the resume must apply it
            resumed = (*extra, "--resume")
            code = _run(tmp_path, run["command"], rows, mode=mode, run_id=run_id, extra=resumed)
            assert code == 0
            summary = _summary(tmp_path, run["command"], run_id)
            assert summary["resumed_batches"] >= 1
        a = tables_snapshot(cloud.ddb, sm)
        b = tables_snapshot(cloud.ddb, cli)
        c = tables_snapshot(cloud.ddb, run, drop=("syncMode",))
        marked = tables_snapshot(cloud.ddb, run)["command"]
    # S-1: 1 + (r2: unchanged) + 3 versions in three batches of r3
    assert a["command"][("PRODUCT#acme", "PRODUCT#S-1@4")]["name"] == {"S": "Name 1 d"}
    assert a["data"][("PRODUCT#acme", "PRODUCT#S-1")]["version"] == {"N": "4"}
    assert a["history"][("PRODUCT#acme", "PRODUCT#S-1@3")]["name"] == {"S": "Name 1 c"}
    assert all(it["status"] == {"S": "finish:FINISHED"} for it in a["command"].values())
    assert _diff(a, b) == []
    assert _diff(a, c) == []
    assert all(it["syncMode"] == {"S": "SYNC"} for it in marked.values())
    assert not any(is_command_insert(stream_record(run["command"], it)) for it in marked.values())


def test_run_sync_counts_synced_rows_and_keeps_the_row_identity(tmp_path):
    with command_cloud() as cloud:
        run = create_module(cloud.ddb, "run-shop-", "product")
        for run_id, rows, mode, extra in RUNS:
            code = _run(tmp_path, run["command"], rows, mode=mode, run_id=run_id,
                        extra=("--sync", *extra))  # fmt: skip
            assert code == 0
        s = [_summary(tmp_path, run["command"], r[0]) for r in RUNS]
        data = scan_all(run["data"], cloud.ddb)
    for summary in s:
        assert summary["rows"] == summary["written"] + summary["unchanged"] + summary["rejected"]
        assert summary["failed"] == 0
    # every written version reached the data table once: synced == data rows written
    assert [x["synced"] for x in s] == [8, 4, 7]
    assert [x["unchanged"] for x in s] == [0, 5, 1]
    assert len(data) == 11


def test_a_failed_sync_fails_the_rows_of_that_entity_in_that_batch(tmp_path):
    """A data-table write refused after every retry: those rows are failed rows, not written.

    X-1 is new in batch 0 (the plain case, `importer.mbc.fast_sync`: its command is then
    not written at all) and changed in batch 2 (the general path: its command is written,
    then not applied); both rows fail with the data table's reason, counts add up.
    """
    from importer.dynamodb.writer import BatchWriter
    from importer.records import Failure, WriteOutcome

    real = BatchWriter.write_batch

    def refuse_x1(self, items):
        if not self.table.endswith("-data"):
            return real(self, items)
        kept = [it for it in items if not it.sk.startswith("PRODUCT#X-1")]
        out = real(self, kept) if kept else WriteOutcome()
        out.failures += [
            Failure(it.line, it.pk, it.sk, "refused")
            for it in items
            if it.sk.startswith("PRODUCT#X-1")
        ]
        return out

    with command_cloud() as cloud:
        run = create_module(cloud.ddb, "run-shop-", "product")
        with mock.patch.object(BatchWriter, "write_batch", refuse_x1):
            code = _run(tmp_path, run["command"], THIRD, mode="upsert", run_id="r1",
                        extra=("--sync", "--batch-items", "2"))  # fmt: skip
        s = _summary(tmp_path, run["command"], "r1")
        commands = scan_all(run["command"], cloud.ddb)
    assert code == EXIT_PARTIAL
    assert s["failed"] == 2 and s["failed_batches"] == 2
    assert s["rows"] == s["written"] + s["unchanged"] + s["rejected"] + s["failed"]
    failures = (tmp_path / "r1.failures.csv").read_text()
    assert failures.count("sync: PRODUCT#X-1: refused") == 2
    # the plain case's command was not left behind finished without its data row.  Batch 2's
    # X-1 is @2 when it was numbered while batch 0's X-1 was still in flight, or @1 -- new
    # again, the plain case, not written either -- when batch 0's failure was settled first
    # (batches run side by side, so either may come first): never an @1 command.
    assert sorted(sk for _pk, sk in commands if "X-1" in sk) in (["PRODUCT#X-1@2"], [])


def test_custom_handlers_run_in_bulk_and_their_errors_fail_the_rows(tmp_path, monkeypatch):
    (tmp_path / "shop_mirror.py").write_text(
        "SEEN = []\n"
        "def mirror(command, ctx):\n"
        "    SEEN.append(command.sk)\n"
        "    if command.sk.startswith('PRODUCT#X-1@'):\n"
        "        raise RuntimeError('search index refused')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("IMPORTER_DATA_SYNC_HANDLERS", "shop_mirror:mirror")
    with command_cloud() as cloud:
        run = create_module(cloud.ddb, "run-shop-", "product")
        code = _run(tmp_path, run["command"], THIRD, mode="upsert", run_id="r1",
                    extra=("--sync", "--batch-items", "2"))  # fmt: skip
        s = _summary(tmp_path, run["command"], "r1")
        data = scan_all(run["data"], cloud.ddb)
        cmds = scan_all(run["command"], cloud.ddb)
    import shop_mirror

    assert code == EXIT_PARTIAL
    # X-1 (lines 3 and 7) fails in both its batches; every other row is applied
    assert (s["failed"], s["failed_batches"]) == (2, 2)
    assert s["rows"] == s["written"] + s["unchanged"] + s["rejected"] + s["failed"]
    failures = (tmp_path / "r1.failures.csv").read_text()
    assert "mirror: search index refused" in failures
    assert ("PRODUCT#acme", "PRODUCT#X-1") not in data
    assert cmds[("PRODUCT#acme", "PRODUCT#X-1@1")]["status"] == {"S": "sync_data:FAILED"}
    assert data[("PRODUCT#acme", "PRODUCT#S-1")]["version"] == {"N": "3"}
    assert set(shop_mirror.SEEN) >= {"PRODUCT#S-1@1", "PRODUCT#S-1@2", "PRODUCT#S-1@3"}


def test_sync_needs_the_default_handler_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IMPORTER_DISABLE_DEFAULT_HANDLER", "1")
    with command_cloud() as cloud:
        run = create_module(cloud.ddb, "run-shop-", "product")
        code = _run(tmp_path, run["command"], FIRST, mode="insert", run_id="r1", extra=("--sync",))
        assert scan_all(run["command"], cloud.ddb) == {}
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "--sync needs the default data-sync handler" in err[0]


def test_mark_sync_splices_the_marker_into_the_wire_bytes():
    item = PreparedItem(3, "P", "S@1", b'{"pk":{"S":"P"},"sk":{"S":"S@1"}}')
    (out,) = mark_sync([item])
    assert out.wire.endswith(SYNC_MODE_TAIL)
    assert json.loads(out.wire) == {**json.loads(item.wire), "syncMode": {"S": "SYNC"}}
    assert (out.line, out.pk, out.sk) == (3, "P", "S@1")
    with pytest.raises(ValueError):
        mark_sync([PreparedItem(4, "P", "S", b"[]")])


def _spy_sync_items():
    """`BatchSync.sync_items` counting the records it gets made as bytes (`SyncedItem`)
    and those it plans the general way."""
    from importer.mbc.fast_sync import SyncedItem
    from importer.mbc.sync import BatchSync

    seen = {"bytes": 0, "general": 0}
    real = BatchSync.sync_items

    def spy(self, items):
        made = sum(isinstance(it, SyncedItem) for it in items)
        seen["bytes"] += made
        seen["general"] += len(items) - made
        return real(self, items)

    return seen, mock.patch.object(BatchSync, "sync_items", spy)


def test_existing_entities_made_as_bytes_equal_the_general_path(tmp_path):
    """`run --sync` over entities the tables already hold: a pending version whose data row
    is at the version before is made as bytes (`fast_sync.existing_entity_items`); with
    that path refused (every record falls back) the general path leaves the same tables."""
    with command_cloud() as cloud:
        fast = create_module(cloud.ddb, "fast-shop-", "product")
        slow = create_module(cloud.ddb, "slow-shop-", "product")
        counts = {}
        for name, module, refuse in (("fast", fast, False), ("slow", slow, True)):
            seen, spy = _spy_sync_items()
            patches = [spy]
            if refuse:  # neither C nor Python makes them
                patches.append(mock.patch("importer.mbc.fast_sync._made_in_c", lambda *a: None))
                patches.append(
                    mock.patch("importer.mbc.fast_sync.existing_entity_items", lambda *a: None)
                )
            with contextlib.ExitStack() as stack:
                for p in patches:
                    stack.enter_context(p)
                for run_id, rows, mode, extra in RUNS:
                    code = _run(tmp_path, module["command"], rows, mode=mode, run_id=run_id,
                                extra=("--sync", *extra))  # fmt: skip
                    assert code == 0
            counts[name] = seen
        a = tables_snapshot(cloud.ddb, fast)
        b = tables_snapshot(cloud.ddb, slow)
    # r2: S-0, S-3, S-6 change (their data rows at @1); r3: S-1 @2..@4 in three batches,
    # X-1 @1 then @2, NEW-2 @1 then @2 -- each a data row one version behind
    assert counts["fast"]["bytes"] == 3 + 3 + 1 + 1
    assert counts["slow"]["bytes"] == 0 and counts["slow"]["general"] >= 8
    assert a["history"] and _diff(a, b) == []
    assert a["data"][("PRODUCT#acme", "PRODUCT#S-1")]["version"] == {"N": "4"}
    assert a["history"][("PRODUCT#acme", "PRODUCT#S-1@3")]["name"] == {"S": "Name 1 c"}


def test_a_refused_history_row_fails_the_row_and_leaves_the_data_row(tmp_path):
    """An existing entity made as bytes whose history row is refused after every retry:
    the row fails (counts add up), its data row is not moved, so a re-run applies it."""
    from importer.dynamodb.writer import BatchWriter
    from importer.records import Failure, WriteOutcome

    real = BatchWriter.write_batch

    def refuse_s0(self, items):
        if not self.table.endswith("-history"):
            return real(self, items)
        kept = [it for it in items if not it.sk.startswith("PRODUCT#S-0@")]
        out = real(self, kept) if kept else WriteOutcome()
        out.failures += [
            Failure(it.line, it.pk, it.sk, "refused")
            for it in items
            if it.sk.startswith("PRODUCT#S-0@")
        ]
        return out

    with command_cloud() as cloud:
        run = create_module(cloud.ddb, "run-shop-", "product")
        assert _run(tmp_path, run["command"], FIRST, mode="insert", run_id="r1",
                    extra=("--sync",)) == 0  # fmt: skip
        seen, spy = _spy_sync_items()
        with spy, mock.patch.object(BatchWriter, "write_batch", refuse_s0):
            code = _run(tmp_path, run["command"], SECOND, mode="upsert", run_id="r2",
                        extra=("--sync",))  # fmt: skip
        s = _summary(tmp_path, run["command"], "r2")
        data = scan_all(run["data"], cloud.ddb)
        history = scan_all(run["history"], cloud.ddb)
    assert code == EXIT_PARTIAL and seen["bytes"] == 3
    assert s["failed"] == 1
    assert s["rows"] == s["written"] + s["unchanged"] + s["rejected"] + s["failed"]
    assert "sync: PRODUCT#S-0@1: refused" in (tmp_path / "r2.failures.csv").read_text()
    assert data[("PRODUCT#acme", "PRODUCT#S-0")]["version"] == {"N": "1"}
    assert data[("PRODUCT#acme", "PRODUCT#S-3")]["version"] == {"N": "2"}
    assert ("PRODUCT#acme", "PRODUCT#S-3@1") in history


def test_a_refused_previous_command_fails_the_row_after_its_command_was_written(tmp_path):
    """The previous command's TTL rewrite (@V-1) refused after every retry: the row's command
    was written (finished), so the row is failed, not written -- counts add up -- and its
    data row stays at V-1: `importer sync` then applies the version, whole."""
    from importer.dynamodb.writer import BatchWriter
    from importer.records import Failure, WriteOutcome

    real = BatchWriter.write_batch

    def refuse_s0_at_1(self, items):
        if not self.table.endswith("-command"):
            return real(self, items)
        kept = [it for it in items if it.sk != "PRODUCT#S-0@1"]
        out = real(self, kept) if kept else WriteOutcome()
        out.failures += [
            Failure(it.line, it.pk, it.sk, "refused") for it in items if it.sk == "PRODUCT#S-0@1"
        ]
        return out

    with command_cloud() as cloud:
        run = create_module(cloud.ddb, "run-shop-", "product")
        assert _run(tmp_path, run["command"], FIRST, mode="insert", run_id="r1",
                    extra=("--sync",)) == 0  # fmt: skip
        seen, spy = _spy_sync_items()
        with spy, mock.patch.object(BatchWriter, "write_batch", refuse_s0_at_1):
            code = _run(tmp_path, run["command"], SECOND, mode="upsert", run_id="r2",
                        extra=("--sync",))  # fmt: skip
        s = _summary(tmp_path, run["command"], "r2")
        data = scan_all(run["data"], cloud.ddb)
        commands = scan_all(run["command"], cloud.ddb)
        assert data[("PRODUCT#acme", "PRODUCT#S-0")]["version"] == {"N": "1"}
        with mock.patch("importer.mbc.sync.time", PINNED_TIME):
            assert main(["sync", "--table", run["command"], "--json"]) == 0
        after = scan_all(run["data"], cloud.ddb)
    assert code == EXIT_PARTIAL and seen["bytes"] == 3
    assert s["failed"] == 1
    assert s["rows"] == s["written"] + s["unchanged"] + s["rejected"] + s["failed"]
    assert "sync: PRODUCT#S-0@1: refused" in (tmp_path / "r2.failures.csv").read_text()
    assert commands[("PRODUCT#acme", "PRODUCT#S-0@2")]["status"] == {"S": "finish:FINISHED"}
    assert after[("PRODUCT#acme", "PRODUCT#S-0")]["version"] == {"N": "2"}
