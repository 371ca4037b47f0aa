"""Import modes on tables that already hold data: insert, upsert, strict (importer.modes.stage).

Every scenario runs on moto (boto3 transport and writers, `mock_aws`) and on the
loopback DynamoDB (the signed-HTTP DynamoDB client).  MBC's data-table
sync is not part of the importer, so `sync_data` plays it: after an import it
writes, for each entity, the latest command version into the data table.

The little driver `run_import_mode` opens the run's pipeline (`importer.run.pipeline`)
on the environment's DynamoDB client and feeds it batches with their file-order
tickets on a thread pool, as the local driver does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from importer.dynamodb.client import Boto3DynamoClient, HttpDynamoClient
from importer.dynamodb.errors import DynamoError, WriterFatalError
from importer.dynamodb.lookup import MAX_GET_KEYS, KeyLookup, LookupFailed
from importer.dynamodb.request_pool import Lanes
from importer.dynamodb.retry import RetryPolicy
from importer.dynamodb.strict_writer import StrictWriter
from importer.dynamodb.writer import BatchWriter
from importer.input.batching import Batch
from importer.modes.stage import ModeStage, default_data_table
from importer.records import Failure, PreparedItem, Reject, RejectKind, WriteOutcome
from importer.run.pipeline import PipelineSettings, open_pipeline
from importer.transform.context import RunContext
from importer.transform.spec import parse_spec
from tests.conftest import KEY_SCHEMA, PRODUCT_SPEC, scan_all
from tests.support.ddb_server import DdbServer

REGION = "us-east-1"
CMD = "test-app-master-command"
DATA = "test-app-master-data"
HEADER = ["sku", "name", "price", "qty", "active"]
SPEC = parse_spec(tomllib.loads(PRODUCT_SPEC))
FAST = RetryPolicy(max_attempts=30, sleep=lambda _s: None)


# --------------------------------------------------------------------------- environments


@dataclass
class Env:
    kind: str
    client: Any  # boto3 client on the same endpoint (seeding, scans)
    dynamo: Any  # the importer.dynamodb.client client the runs use
    server: DdbServer | None = None

    def lookup(self) -> KeyLookup:
        return KeyLookup(self.dynamo, policy=FAST)

    def stage(self, mode: str, data_table: str | None = DATA, table: str = CMD) -> ModeStage:
        return ModeStage.open(
            mode=mode,
            table=table,
            data_table=data_table,
            lookup=self.lookup(),
            code_column=SPEC.code_column,
        )

    def items(self, table: str = CMD) -> dict[tuple[str, str], dict]:
        return scan_all(table, self.client)


class _Serialized(Boto3DynamoClient):
    """moto's TransactWriteItems deep-copies tables and is not thread-safe: one call at a time."""

    def __init__(self, client) -> None:
        super().__init__(region=REGION, client=client)
        self.lock = threading.Lock()

    def post(self, operation, body):
        with self.lock:
            return super().post(operation, body)


def _session() -> boto3.Session:
    return boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


@pytest.fixture(params=["moto", "loopback"])
def env(request) -> Iterator[Env]:
    if request.param == "moto":
        from moto import mock_aws

        with mock_aws():
            client = boto3.client("dynamodb", region_name=REGION)
            for t in (CMD, DATA):
                client.create_table(TableName=t, **KEY_SCHEMA)
            yield Env("moto", client, _Serialized(client))
        return
    with DdbServer(tables=[CMD, DATA]) as srv:
        session = _session()
        http = _http_client(srv, session)
        client = session.client("dynamodb", endpoint_url=srv.endpoint_url)
        try:
            yield Env("loopback", client, http, server=srv)
        finally:
            http.close()


def _http_client(srv: DdbServer, session: boto3.Session) -> HttpDynamoClient:
    return HttpDynamoClient(
        region=REGION, endpoint_url=srv.endpoint_url, session=session, workers=8
    )


# --------------------------------------------------------------------------- a small driver


@dataclass
class Result:
    rows: int = 0
    written: int = 0
    unchanged: int = 0
    rejects: list[Reject] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    @property
    def failed(self) -> int:
        return len(self.failures)


def run_import_mode(
    env: Env,
    rows: list[list[str]],
    mode: str,
    *,
    run_id: str = "run1",
    batch: int = 7,
    workers: int = 6,
    wrap_writer: Any = None,
    data_table: str | None = DATA,
) -> Result:
    ctx = RunContext(
        run_id=run_id, timestamp="2024-05-01T00:00:00+00:00", source=f"import-csv:{run_id}"
    )
    settings = PipelineSettings(
        spec=SPEC,
        table=CMD,
        mode=mode,
        data_table=data_table,
        engine="reference",
        check_table=False,
        policy=FAST,
    )
    numbered = [(i + 2, r) for i, r in enumerate(rows)]
    batches = [numbered[i : i + batch] for i in range(0, len(numbered), batch)]
    res = Result()
    with open_pipeline(settings, client=env.dynamo) as pipeline:
        if wrap_writer is not None:
            pipeline.writer = wrap_writer(pipeline.writer)
        with ThreadPoolExecutor(workers) as pool:
            futures = [
                pool.submit(
                    pipeline.process,
                    Batch(index=n, rows=b),
                    header=HEADER,
                    ctx=ctx,
                    ticket=pipeline.ticket(),
                )
                for n, b in enumerate(batches)
            ]
            for f in futures:
                out = f.result()
                res.rows += out.rows
                res.rejects += out.rejects
                res.unchanged += out.unchanged
                res.failures += out.failures
                res.written += out.written
    assert res.rows == res.written + res.unchanged + res.rejected + res.failed, res
    return res


def sync_data(env: Env) -> None:
    """MBC's data sync, played by the test: latest command version -> data table."""
    latest: dict[tuple[str, str], dict] = {}
    for (pk, sk), item in env.items(CMD).items():
        base, _, v = sk.rpartition("@")
        key = (pk, base)
        if key not in latest or int(v) > int(latest[key]["version"]["N"]):
            latest[key] = item
    for (_pk, base), item in latest.items():
        env.client.put_item(TableName=DATA, Item={**item, "sk": {"S": base}})


def versions(env: Env) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for _pk, sk in env.items(CMD):
        base, _, v = sk.rpartition("@")
        out.setdefault(base.split("#", 1)[1], []).append(int(v))
    return {k: sorted(v) for k, v in out.items()}


def price(item: dict) -> str:
    return item["attributes"]["M"]["price"]["N"]


def row(code: str, p: str = "1.5", name: str | None = None) -> list[str]:
    return [code, name or f"name {code}", p, "3", "true"]


# --------------------------------------------------------------------------- scenarios


def test_default_data_table_name():
    assert default_data_table("dev-app-master-command") == "dev-app-master-data"
    assert default_data_table("plain") is None


def test_insert_upsert_strict_on_a_table_with_data(env):
    base = [row(f"P{i:03d}", f"{i}.50") for i in range(60)]
    first = run_import_mode(env, base, "insert", run_id="r0")
    assert (first.written, first.rejected, first.unchanged) == (60, 0, 0)
    v1 = dict(env.items(CMD))
    sync_data(env)

    changed = {f"P{i:03d}" for i in range(0, 60, 10)}  # 10%
    second = [row(r[0], "99" if r[0] in changed else r[2]) for r in base]
    second += [row(f"N{i:03d}", "7") for i in range(12)]  # new entities

    ins = run_import_mode(env, second, "insert", run_id="r1")
    assert (ins.written, ins.unchanged, ins.rejected) == (12, 0, 60)
    assert {r.reason for r in ins.rejects} == {"exists (version 1)"}
    rej = min(ins.rejects, key=lambda r: r.line)
    assert (rej.line, rej.column, rej.value, rej.row) == (2, "sku", "P000", tuple(second[0]))
    assert versions(env)["N000"] == [1] and versions(env)["P000"] == [1]
    sync_data(env)

    up = run_import_mode(env, second, "upsert", run_id="r2")
    assert (up.written, up.unchanged, up.rejected, up.failed) == (len(changed), 66, 0, 0)
    items = env.items(CMD)
    for code in changed:
        assert versions(env)[code] == [1, 2]
        v2 = items[("PRODUCT#acme", f"PRODUCT#{code}@2")]
        assert price(v2) == "99" and v2["version"] == {"N": "2"}
        assert v2["id"] == {"S": f"PRODUCT#acme#PRODUCT#{code}"}
        assert v2["requestId"]["S"].startswith("r2#")
    for key, item in v1.items():  # the history of version 1 is untouched
        assert items[key] == item
    sync_data(env)

    third = [row(r[0], "42" if r[0] in {"P005", "P015", "N003"} else r[2]) for r in second]
    strict = run_import_mode(env, third, "strict", run_id="r3")
    assert (strict.written, strict.unchanged, strict.failed) == (3, len(third) - 3, 0)
    vs = versions(env)
    assert vs["P005"] == [1, 2] and vs["P000"] == [1, 2] and vs["N003"] == [1, 2]
    assert vs["P010"] == [1, 2] and vs["P011"] == [1]
    assert sum(len(v) for v in vs.values()) == 72 + len(changed) + 3


def test_upsert_without_data_table_sync_probes_the_command_table(env):
    """The data table lags (never synced): versions come from the command table itself."""
    rows = [row("A", "1"), row("B", "1")]
    run_import_mode(env, rows, "upsert", run_id="a")
    again = run_import_mode(env, [row("A", "2"), row("B", "1")], "upsert", run_id="b")
    assert (again.written, again.unchanged) == (1, 1)
    third = run_import_mode(env, [row("A", "3")], "strict", run_id="c")
    assert third.written == 1
    assert versions(env) == {"A": [1, 2, 3], "B": [1]}


def test_duplicates_in_one_file_keep_file_order_across_concurrent_batches(env):
    if env.server is not None:  # later batches' reads may finish first
        env.server.faults.set(jitter=0.01, seed=3)
    rows = []
    for i in range(40):
        rows.append(row(f"D{i % 5}", str(i)))  # each code 8 times, a new price each time
    rows.append(row("D0", "35"))  # equal to the previous D0 row (line 37 has price 35)
    up = run_import_mode(env, rows, "upsert", batch=3, workers=8, run_id="dup")
    assert (up.written, up.unchanged, up.rejected) == (40, 1, 0)
    items = env.items(CMD)
    for c in range(5):
        assert versions(env)[f"D{c}"] == list(range(1, 9))
        for v in range(1, 9):  # version v holds the v-th occurrence in file order
            assert price(items[("PRODUCT#acme", f"PRODUCT#D{c}@{v}")]) == str(c + 5 * (v - 1))

    ins = run_import_mode(
        env,
        [row("E", "1"), row("F", "1"), row("E", "2")] * 3,
        "insert",
        batch=2,
        workers=4,
        run_id="dupi",
    )
    assert (ins.written, ins.rejected) == (2, 7)
    assert price(env.items(CMD)[("PRODUCT#acme", "PRODUCT#E@1")]) == "1"
    e_rejects = sorted((r.line, r.reason) for r in ins.rejects if r.value == "E")
    assert e_rejects[0] == (4, "exists (version 1): duplicate of line 2")


def test_insert_rejects_a_repeat_within_one_batch_of_entities_new_to_the_tables(env):
    """No table holds them, and no earlier batch: the batch itself must still catch the repeat."""
    ins = run_import_mode(env, [row("N1", "1"), row("N2", "1"), row("N1", "2")], "insert", batch=3)
    assert (ins.written, ins.rejected) == (2, 1)
    assert [(r.line, r.reason) for r in ins.rejects] == [
        (4, "exists (version 1): duplicate of line 2")
    ]
    assert price(env.items(CMD)[("PRODUCT#acme", "PRODUCT#N1@1")]) == "1"


def _count_reads(env: Env) -> dict[str, int]:
    """BatchGetItem calls per table from now on (the client's post and post_many, wrapped)."""
    calls: dict[str, int] = {}
    post = env.dynamo.post
    post_many = env.dynamo.post_many

    def count(operation, body):
        if operation == "BatchGetItem":
            for table in json.loads(body)["RequestItems"]:
                calls[table] = calls.get(table, 0) + 1

    def counted(operation, body):
        count(operation, body)
        return post(operation, body)

    def counted_many(operation, bodies):
        for body in bodies:
            count(operation, body)
        return post_many(operation, bodies)

    env.dynamo.post = counted
    env.dynamo.post_many = counted_many
    return calls


def test_insert_reads_each_table_once_per_100_keys_and_never_twice(env):
    """New rows: the data table, then @1 in the command table -- only @1 while the data
    table is empty.  Stored rows: what was read already is not read again to find out
    more."""
    rows = [row(f"R{i:03d}", "1") for i in range(250)]
    calls = _count_reads(env)
    first = run_import_mode(env, rows, "insert", batch=250, run_id="once")
    assert (first.written, first.rejected) == (250, 0)
    assert calls == {CMD: 3}  # an empty data table has nothing to say

    calls.clear()  # the data table lags: only @1 shows them
    again = run_import_mode(env, rows, "insert", batch=250, run_id="twice")
    assert (again.written, again.rejected) == (0, 250)
    assert {r.reason for r in again.rejects} == {"exists (version 1)"}
    assert calls == {CMD: 3}

    sync_data(env)
    calls.clear()  # the data table holds them: nothing more to learn
    third = run_import_mode(env, rows, "insert", batch=250, run_id="thrice")
    assert (third.written, third.rejected) == (0, 250)
    assert calls == {DATA: 3}

    calls.clear()  # new rows beside a data table that holds others: both tables
    fresh = [row(f"S{i:03d}", "1") for i in range(250)]
    fourth = run_import_mode(env, fresh, "insert", batch=250, run_id="fourth")
    assert (fourth.written, fourth.rejected) == (250, 0)
    assert calls == {DATA: 3, CMD: 3}


def test_insert_reads_the_data_table_when_it_cannot_tell_it_is_empty(env):
    """A Scan refused (a role without dynamodb:Scan): the empty data table is read as
    if it held something.  A data table that holds an entity with no @1 in the
    command table is read, and the entity found there."""
    post = env.dynamo.post

    def refuse_scans(operation, body):
        if operation == "Scan":
            raise DynamoError("AccessDeniedException", "not allowed to Scan", status=400)
        return post(operation, body)

    env.dynamo.post = refuse_scans
    calls = _count_reads(env)
    refused = run_import_mode(env, [row("OTHER", "1")], "insert", run_id="refused")
    assert refused.written == 1 and calls == {DATA: 1, CMD: 1}

    env.dynamo.post = post
    only = {"pk": {"S": "PRODUCT#acme"}, "sk": {"S": "PRODUCT#ONLY"}, "version": {"N": "4"}}
    env.client.put_item(TableName=DATA, Item=only)
    calls = _count_reads(env)
    result = run_import_mode(env, [row("ONLY", "1"), row("NEW", "1")], "insert", run_id="held")
    assert (result.written, result.rejected) == (1, 1) and calls == {DATA: 1, CMD: 1}
    assert [r.reason for r in result.rejects] == ["exists (version 4)"]


class _HalfWriter:
    """Writes only the first `n` batches it is given; the rest fail (a partial run)."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.n, self.lock, self.seen = inner, n, threading.Lock(), 0

    def write_batch(self, items):
        with self.lock:
            self.seen += 1
            ok = self.seen <= self.n
        if ok:
            return self.inner.write_batch(items)
        return WriteOutcome(failures=[Failure(i.line, i.pk, i.sk, "boom") for i in items])

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("synced", [False, True])
@pytest.mark.parametrize("mode", ["upsert", "strict"])
def test_rerun_after_partial_failure_is_idempotent(env, mode, synced):
    run_import_mode(env, [row(f"K{i}", "1") for i in range(20)], "insert", run_id="seed")
    sync_data(env)
    rows = [row(f"K{i}", "2") for i in range(20)] + [row(f"K{i}", "3") for i in range(0, 20, 2)]
    rows += [row("NEW", "1"), row("NEW", "2")]
    first = run_import_mode(
        env,
        rows,
        mode,
        run_id="job",
        batch=4,
        workers=1,
        wrap_writer=lambda inner: _HalfWriter(inner, 4),
    )
    assert first.written == 16 and first.failed == len(rows) - 16
    if synced:
        sync_data(env)
    again = run_import_mode(env, rows, mode, run_id="job", batch=4, workers=3)
    assert (again.written, again.unchanged, again.failed, again.rejected) == (len(rows), 0, 0, 0)
    vs = versions(env)
    for i in range(20):
        assert vs[f"K{i}"] == ([1, 2, 3] if i % 2 == 0 else [1, 2]), (i, vs[f"K{i}"])
    assert vs["NEW"] == [1, 2]
    items = env.items(CMD)
    assert price(items[("PRODUCT#acme", "PRODUCT#K0@3")]) == "3"
    assert all(item["requestId"]["S"].startswith(("job#", "seed#")) for item in items.values())
    # a new run with each entity's final values changes nothing
    sync_data(env)
    final = [row(f"K{i}", "3" if i % 2 == 0 else "2") for i in range(20)] + [row("NEW", "2")]
    third = run_import_mode(env, final, "upsert", run_id="later")
    assert third.written == 0 and third.unchanged == len(final)


def test_missing_data_table(env):
    env.client.delete_table(TableName=DATA)
    with pytest.raises(WriterFatalError, match="data table"):
        env.stage("upsert")
    with pytest.raises(WriterFatalError, match="data table"):
        env.stage("strict", data_table=None)
    run_import_mode(env, [row("A"), row("B")], "insert", data_table=None, run_id="x")
    stage = env.stage("insert", data_table=None)
    assert stage.data_table is None and len(stage.notices) == 1
    assert "checked against the command table" in stage.notices[0]
    res = run_import_mode(env, [row("A"), row("C")], "insert", data_table=None, run_id="y")
    assert (res.written, res.rejected) == (1, 1)
    assert res.rejects[0].reason == "exists (version 1)"


def test_insert_is_the_default_and_blind_overwrites(env):
    run_import_mode(env, [row("A", "1")], "insert")
    blind = run_import_mode(env, [row("A", "2")], "blind", run_id="b")
    assert blind.written == 1 and versions(env) == {"A": [1]}
    assert price(env.items(CMD)[("PRODUCT#acme", "PRODUCT#A@1")]) == "2"


# --------------------------------------------------------------------------- lookup, strict writer


@pytest.mark.parametrize("width", [None, 4])
def test_batch_get_chunks_and_retries_unprocessed_keys(width):
    lanes = Lanes(requests=width) if width else None
    with DdbServer(tables=["T"]) as srv:
        session = _session()
        client = _http_client(srv, session)
        w = BatchWriter(client=client, table="T", policy=FAST)
        items = [
            PreparedItem(
                i,
                "p",
                f"s{i:04d}",
                json.dumps(
                    {"pk": {"S": "p"}, "sk": {"S": f"s{i:04d}"}, "version": {"N": "1"}}
                ).encode(),
            )
            for i in range(250)
        ]
        assert w.write_batch(items).written == 250
        srv.reset_stats()
        # enough calls that both faults occur, whichever order the lanes send them in
        srv.faults.set(unprocessed=0.5, throttle=0.3, seed=11)
        lookup = KeyLookup(client, policy=FAST, lanes=lanes)
        keys = [("p", f"s{i:04d}") for i in range(0, 2000, 1)] + [("p", "s0001")]
        found = lookup.get_many("T", keys)
        assert set(found) == {("p", f"s{i:04d}") for i in range(250)}
        stats = srv.stats()
        assert stats.get("faults.unprocessed_keys") and stats.get("faults.throttle")
        assert lookup.retries > 0
        assert stats["calls.BatchGetItem"] >= 20  # 2000 distinct keys / 100
        srv.faults.set(unprocessed=1.0, throttle=0.0)
        with pytest.raises(LookupFailed):
            KeyLookup(
                client, policy=RetryPolicy(max_attempts=3, sleep=lambda s: None), lanes=lanes
            ).get_many("T", keys[: 3 * MAX_GET_KEYS])
        client.close()
    if lanes is not None:
        lanes.close()


def test_strict_writer_transactions_hold_100_items_and_survive_faults():
    with DdbServer(tables=["T"]) as srv:
        session = _session()
        client = _http_client(srv, session)
        sw = StrictWriter(client=client, table="T", policy=FAST)
        items = [
            PreparedItem(
                i,
                "p",
                f"s{i}",
                json.dumps(
                    {"pk": {"S": "p"}, "sk": {"S": f"s{i}"}, "requestId": {"S": f"r#{i}"}}
                ).encode(),
            )
            for i in range(250)
        ]
        srv.faults.set(throttle=0.2, server_error=0.1, drop_after=0.2, seed=5)
        out = sw.write_batch(items)
        assert (out.written, out.failures) == (250, [])  # lost responses settled by requestId
        assert len(srv.items("T")) == 250
        assert srv.stats()["items.TransactWriteItems"] == 250
        srv.faults.clear()
        theirs = [
            PreparedItem(
                i,
                "p",
                f"s{i}",
                json.dumps(
                    {"pk": {"S": "p"}, "sk": {"S": f"s{i}"}, "requestId": {"S": f"other#{i}"}}
                ).encode(),
            )
            for i in (3, 7)
        ]
        out = sw.write_batch(
            theirs
            + [
                PreparedItem(
                    9, "p", "new", b'{"pk":{"S":"p"},"sk":{"S":"new"},"requestId":{"S":"x#9"}}'
                )
            ]
        )
        assert out.written == 1 and out.failures == [] and len(out.rejects) == 2
        assert all(r.kind is RejectKind.CONFLICT for r in out.rejects)
        assert "requestId r#3" in out.rejects[0].reason
        assert [c.line for c in out.rejects] == [3, 7]
        assert srv.items("T")[("p", "s3")]["requestId"] == {"S": "r#3"}
        client.close()


# --------------------------------------------------------------------------- concurrent writer

_OTHER_WRITER = textwrap.dedent(
    """
    import json, sys, boto3
    url, table = sys.argv[1], sys.argv[2]
    client = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                           region_name="us-east-1").client("dynamodb", endpoint_url=url)
    print("ready", flush=True)
    for line in sys.stdin:
        keys = json.loads(line)
        for pk, sk in keys:
            try:  # MBC publishes commands with the same condition
                client.put_item(TableName=table, Item={
                    "pk": {"S": pk}, "sk": {"S": sk}, "requestId": {"S": "other-writer"},
                    "version": {"N": sk.rsplit("@", 1)[1]},
                    "attributes": {"M": {"price": {"N": "-1"}}}},
                    ConditionExpression="attribute_not_exists(pk) AND attribute_not_exists(sk)")
            except client.exceptions.ConditionalCheckFailedException:
                pass  # the import got there first
        print("done", flush=True)
    """
)


def test_strict_mode_against_a_concurrent_writer_loses_nothing(tmp_path):
    """A second process writes command versions the import is about to write.

    The first transaction that carries a changed entity's new version triggers
    (through the loopback server's validation hook) the other process, which
    writes @2 of *every* changed entity through its own HTTP connection before the
    transaction is applied.  Nothing the other writer stored may be overwritten;
    each changed row ends either written at a free version or reported "conflict:".
    """
    script = tmp_path / "other_writer.py"
    script.write_text(_OTHER_WRITER)
    with DdbServer(tables=[CMD, DATA]) as srv:
        session = _session()
        http = _http_client(srv, session)
        client = session.client("dynamodb", endpoint_url=srv.endpoint_url)
        env = Env("loopback", client, http, server=srv)
        base = [row(f"C{i:03d}", "1") for i in range(100)]
        run_import_mode(env, base, "insert", run_id="seed")
        sync_data(env)
        changed = [f"C{i:03d}" for i in range(0, 100, 7)]
        other = subprocess.Popen(
            [sys.executable, str(script), srv.endpoint_url, CMD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert other.stdout.readline().strip() == "ready"
            fired = threading.Event()
            keys = [["PRODUCT#acme", f"PRODUCT#{c}@2"] for c in changed]

            def hook(item):
                if item["sk"]["S"].endswith("@2") and not fired.is_set():
                    fired.set()
                    other.stdin.write(json.dumps(keys) + "\n")
                    other.stdin.flush()
                    assert other.stdout.readline().strip() == "done"
                return None

            srv.faults.set(validation_error_for=hook, ops={"TransactWriteItems"})
            rows = [row(r[0], "5" if r[0] in changed else "1") for r in base]
            res = run_import_mode(env, rows, "strict", run_id="strict", batch=10, workers=4)
        finally:
            other.stdin.close()
            other.wait(10)
            http.close()
        assert fired.is_set()
        items = srv.items(CMD)
        conflicts = {r.line for r in res.rejects if r.kind is RejectKind.CONFLICT}
        assert conflicts, "the concurrent writer must have caused at least one conflict"
        assert all(r.column == "sku" and r.row for r in res.rejects)  # the full reject line
        assert res.failed == 0 and res.rejected == len(conflicts)
        assert res.unchanged == 100 - len(changed)
        assert res.written + len(conflicts) == len(changed)
        assert srv.stats().get("errors.ConditionalCheckFailedException", 0) + sum(
            1 for it in items.values() if it["requestId"]["S"] == "other-writer"
        ) == len(changed)
        for c in changed:
            at2 = items[("PRODUCT#acme", f"PRODUCT#{c}@2")]["requestId"]["S"]
            line = int(c[1:]) + 2
            ours = [
                it["sk"]["S"] for it in items.values() if it["requestId"]["S"] == f"strict#{line}"
            ]
            if line in conflicts:  # reported, nothing of ours stored, theirs intact
                assert ours == [] and at2 == "other-writer"
            elif at2 == "other-writer":  # its probe saw @2 already: it went to @3
                assert ours == [f"PRODUCT#{c}@3"]
            else:  # the import won the race; the other writer's conditional put failed
                assert ours == [f"PRODUCT#{c}@2"]
