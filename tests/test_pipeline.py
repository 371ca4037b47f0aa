"""One pipeline: the defects that came from assembling the import in several places.

Each test pins one of them through the command a user types (`run_cli`), against
the loopback DynamoDB (tests/support/ddb_server.py) or moto:

1. a batch fails by one rule, locally as in the Lambda: a row DynamoDB refused;
   bad data and rows that already exist are outcomes, never failed batches;
2. (the Lambda's rejects format: tests/test_handler.py);
3. a fatal error mid-run leaves a checkpoint that `--resume` continues;
4. (the template's IAM policy per mode: tests/test_iam_policy.py);
5. strict mode against an endpoint without TransactWriteItems stops in one line.

Plus: the standard endpoint variables reach every path.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from tests.conftest import PRODUCT_SPEC
from tests.support.ddb_server import DdbBackend, DdbServer

CMD = "shop-app-master-command"
DATA = "shop-app-master-data"
HEADER = ["sku", "name", "price", "qty", "active"]


def write_csv(path: Path, skus: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(HEADER)
        for n, sku in enumerate(skus):
            out.writerow([sku, f"item {n}", f"{n}.5", str(n), "yes"])
    return path


@pytest.fixture
def spec(write_file) -> Path:
    return write_file("spec.toml", PRODUCT_SPEC)


@pytest.fixture
def srv():
    with DdbServer(tables=[CMD, DATA]) as server:
        yield server


def test_refused_rows_fail_their_batch_locally_as_the_lambda_does(run_cli, spec, srv, tmp_path):
    skus = [f"P-{i:03d}" for i in range(40)]
    skus[13] = "REFUSED-1"  # DynamoDB refuses it (a service-side ValidationException)
    skus[25] = "bad sku"  # bad data: rejected, its batch does not fail
    src = write_csv(tmp_path / "in.csv", skus)
    srv.faults.set(validation_error_for=lambda item: item["code"]["S"].startswith("REFUSED"))
    flags = dict(spec=spec, table=CMD, endpoint_url=srv.endpoint_url, batch_items=10, quiet=True)

    res = run_cli("run", src, output_dir=tmp_path / "out", **flags)
    assert res.code == 3
    s = res.summary
    assert (s["written"], s["rejected"], s["failed"], s["failed_batches"]) == (38, 1, 1, 1)
    failed = json.loads((tmp_path / "out" / "FAILED_0.json").read_text())
    assert [e["Name"].rsplit("-", 1)[1] for e in failed] == ["1"]  # the batch of line 15
    succeeded = json.loads((tmp_path / "out" / "SUCCEEDED_0.json").read_text())
    assert len(succeeded) == 3  # the batch holding the bad row succeeded

    # the Map run's tolerance applies to it: 10 items of failed batches > 0 tolerated
    again = run_cli("run", src, tolerated_failure_count=0, mode="blind", **flags)
    assert again.code == 1 and "map run failed" in again.stderr


def test_rerunning_an_insert_is_not_a_failure_nor_bad_data(run_cli, spec, srv, tmp_path):
    src = write_csv(tmp_path / "in.csv", [f"P-{i:03d}" for i in range(60)])
    flags = dict(spec=spec, table=CMD, endpoint_url=srv.endpoint_url, quiet=True)
    assert run_cli("run", src, **flags).code == 0
    res = run_cli("run", src, max_rejects=5, output_dir=tmp_path / "out", **flags)
    assert res.code == 0, res.stderr  # rows that exist already: neither fatal nor partial
    s = res.summary
    assert (s["written"], s["rejected"], s["existing"], s["failed_batches"]) == (0, 60, 60, 0)
    assert not (tmp_path / "out" / "FAILED_0.json").exists()
    with open(tmp_path / "in.rejects.csv", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    assert lines[0] == ["line", "column", "value", "reason", *HEADER]
    assert lines[1] == [
        "2",
        "sku",
        "P-000",
        "exists (version 1)",
        "P-000",
        "item 0",
        "0.5",
        "0",
        "yes",
    ]


def test_a_fatal_error_mid_run_leaves_a_resumable_checkpoint(run_cli, spec, srv, tmp_path):
    src = write_csv(tmp_path / "in.csv", [f"P-{i:04d}" for i in range(1000)])
    seen = []

    def revoke_after_300(item):
        seen.append(item)
        if len(seen) == 300:  # the credentials expire mid-run
            srv.access_key_id = "ROTATED"
        return None

    srv.faults.set(validation_error_for=revoke_after_300)
    flags = dict(
        spec=spec,
        table=CMD,
        endpoint_url=srv.endpoint_url,
        batch_items=100,
        # one batch at a time: with two, the 300th item seen can be the first batch's
        # (its requests go side by side), and then no batch is checkpointed (flaky under load)
        workers=1,
        mode="blind",
        checkpoint=tmp_path / "cp.jsonl",
        quiet=True,
    )
    res = run_cli("run", src, **flags)
    assert res.code == 1
    [line] = res.stderr.strip().splitlines()
    assert "UnrecognizedClientException" in line and "--resume" in line
    checkpoint = (tmp_path / "cp.jsonl").read_text()
    assert '"complete"' not in checkpoint and '"batch"' in checkpoint

    srv.access_key_id = None  # fixed
    srv.faults.clear()
    resumed = run_cli("run", src, resume=True, **flags)
    assert resumed.code == 0, resumed.stderr
    assert resumed.summary["rows"] == resumed.summary["written"] == 1000
    assert resumed.summary["resumed_batches"] >= 1
    assert len(srv.items(CMD)) == 1000


def test_a_max_rejects_stop_counts_what_it_skipped_and_resumes_exactly(
    run_cli, spec, srv, tmp_path
):
    """Over --max-rejects the run halts: the batches read but not written count as
    skipped (the counts add up), the checkpoint stays open, and --resume with a higher
    limit writes exactly what was skipped and the rest -- no row twice, none lost."""
    skus = [f"P-{i:03d}" for i in range(80)]
    skus[:10] = [f"bad sku {i}" for i in range(10)]  # the first batch is all bad data
    src = write_csv(tmp_path / "in.csv", skus)
    flags = dict(
        spec=spec,
        table=CMD,
        endpoint_url=srv.endpoint_url,
        batch_items=10,
        checkpoint=tmp_path / "cp.jsonl",
        quiet=True,
    )
    res = run_cli("run", src, max_rejects=3, **flags)
    s = res.summary
    assert res.code == 1 and s["status"] == "halted" and s["aborted"]
    assert s["rows"] == s["written"] + s["rejected"] + s["failed"] + s["skipped"]
    assert s["rejected"] == s["bad_data"] == 10 and s["skipped"] == 10 * s["halted_batches"]
    assert '"complete"' not in (tmp_path / "cp.jsonl").read_text()
    assert len(srv.items(CMD)) == s["written"]

    resumed = run_cli("run", src, resume=True, max_rejects=100, **flags)
    r = resumed.summary
    assert resumed.code == 3, resumed.stderr  # finished, with bad data to look at
    assert r["status"] == "finished" and r["skipped"] == 0
    assert (r["rows"], r["written"], r["rejected"]) == (80, 70, 10)
    assert len(srv.items(CMD)) == 70
    with open(tmp_path / "in.rejects.csv", encoding="utf-8") as fh:
        lines = [row[0] for row in csv.reader(fh)][1:]
    assert lines == [str(n) for n in range(2, 12)]  # each bad row once, in file order


def test_strict_mode_without_transactions_is_fatal_and_writes_nothing(
    run_cli, spec, srv, tmp_path, monkeypatch
):
    monkeypatch.delattr(DdbBackend, "op_TransactWriteItems")  # as dynalite
    src = write_csv(tmp_path / "in.csv", [f"P-{i:03d}" for i in range(30)])
    res = run_cli(
        "run", src, spec=spec, table=CMD, endpoint_url=srv.endpoint_url, mode="strict", quiet=True
    )
    assert res.code == 1
    [line] = res.stderr.strip().splitlines()
    assert "does not implement TransactWriteItems" in line and srv.endpoint_url in line
    assert srv.items(CMD) == {}


def test_standard_endpoint_variables_reach_every_path(run_cli, spec, srv, tmp_path, monkeypatch):
    """AWS_ENDPOINT_URL_DYNAMODB for the writer and lookups, AWS_ENDPOINT_URL_S3 for the source."""
    import boto3
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        s3_url = f"http://127.0.0.1:{moto.get_host_and_port()[1]}"
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")
        s3.create_bucket(Bucket="inbox")
        s3.upload_file(str(write_csv(tmp_path / "in.csv", ["A-1", "B-2"])), "inbox", "in.csv")
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", srv.endpoint_url)
        res = run_cli("run", "s3://inbox/in.csv", spec=spec, table=CMD, quiet=True)
        assert res.code == 0, res.stderr
        assert len(srv.items(CMD)) == 2
        assert srv.stats()["calls.BatchGetItem"] >= 1  # the insert mode's reads went there too
        monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB")
        monkeypatch.setenv("AWS_ENDPOINT_URL", srv.endpoint_url)  # the general one, for both
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
        res = run_cli("validate", tmp_path / "in.csv", spec=spec, table=CMD, quiet=True)
        assert res.code == 0 and res.summary["existing"] == 2  # read through AWS_ENDPOINT_URL
    finally:
        moto.stop()


@pytest.mark.parametrize("mode", ["insert", "upsert", "blind"])
def test_validate_previews_run_exactly(run_cli, spec, srv, tmp_path, mode):
    """`validate` is `run` without the writes: same rejects file, same counts."""
    skus = [f"P-{i:03d}" for i in range(50)]
    skus[20] = "P-003"  # a duplicate in another batch (batches of 10)
    skus[7] = "P-006"  # ... and one in the same batch
    skus[30] = "bad sku"
    src = write_csv(tmp_path / "in.csv", skus)
    flags = dict(spec=spec, table=CMD, endpoint_url=srv.endpoint_url, batch_items=10, quiet=True)
    seed = write_csv(tmp_path / "seed.csv", ["P-010", "P-011"])
    assert run_cli("run", seed, **{**flags, "mode": "insert"}).code == 0  # stored already

    preview = run_cli("validate", src, mode=mode, rejects=tmp_path / "v.csv", **flags)
    real = run_cli("run", src, mode=mode, rejects=tmp_path / "r.csv", **flags)
    assert preview.code == real.code == 3
    assert (tmp_path / "v.csv").read_text() == (tmp_path / "r.csv").read_text()
    keys = ("rows", "rejected", "existing", "unchanged", "failed")
    assert {k: preview.summary[k] for k in keys} == {k: real.summary[k] for k in keys}
    assert preview.summary["would_write"] == real.summary["written"]
    assert preview.summary["written"] == 0
    with open(tmp_path / "r.csv", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    assert all(len(rec) == 4 + len(HEADER) for rec in lines)  # every reject kind, full row
    dupes = [rec for rec in lines[1:] if "duplicate" in rec[3]]
    if mode != "upsert":  # upsert makes later duplicates the next versions instead
        assert dupes and all(rec[1] == "sku" and rec[2] == rec[4] for rec in dupes)


def test_missing_table_names_region_and_endpoint(run_cli, spec, srv, tmp_path):
    src = write_csv(tmp_path / "in.csv", ["A-1"])
    res = run_cli(
        "run", src, spec=spec, table="nope", endpoint_url=srv.endpoint_url, region="eu-west-3"
    )
    assert res.code == 1
    [line] = res.stderr.strip().splitlines()
    assert "'nope' does not exist" in line and "eu-west-3" in line and srv.endpoint_url in line


@pytest.mark.parametrize("mode", ["insert", "upsert"])
def test_a_run_map_that_forgets_written_batches_gives_the_same_result(
    run_cli, spec, tmp_path, monkeypatch, mode
):
    """Duplicates across batches are found alike in the run map and, once forgotten, in the table.

    The first run keeps every assignment (the window never moves on); the
    second forgets each batch once its write is visible, as every run does.
    Same counts, same items, the same reject lines.
    """
    import importer.modes.ledger as ledger_mod

    skus = [f"P-{i % 500:03d}" for i in range(1200)]  # entities two or three times, far apart
    src = write_csv(tmp_path / "in.csv", skus)
    peaks: list[int] = []
    real_init = ledger_mod.WindowLedger.__init__

    def tracked_init(self):
        real_init(self)
        peaks.append(self)

    monkeypatch.setattr(ledger_mod.WindowLedger, "__init__", tracked_init)
    results = []
    for forget in (False, True):
        if not forget:
            monkeypatch.setattr(ledger_mod.WindowLedger, "advance", lambda self, turn: None)
        else:
            monkeypatch.undo()
            monkeypatch.setattr(ledger_mod.WindowLedger, "__init__", tracked_init)
        with DdbServer(tables=[CMD, DATA]) as server:
            res = run_cli(
                "run", src, spec=spec, table=CMD, endpoint_url=server.endpoint_url,
                mode=mode, batch_items=20, workers=2, quiet=True,
                rejects=tmp_path / f"r{forget}.csv",
            )  # fmt: skip
            results.append(
                (res.summary["written"], res.summary["rejected"], sorted(server.items(CMD)))
            )
    kept, forgot = (w.peak for w in peaks)
    assert kept == 500 and forgot < 250  # the second run did forget written batches
    assert results[0] == results[1]
    reports = [tmp_path / "rFalse.csv", tmp_path / "rTrue.csv"]
    assert [p.read_text() if p.exists() else None for p in reports].count(None) in (0, 2)
    if mode == "insert":
        assert reports[0].read_text() == reports[1].read_text()
    assert results[0][0] == (500 if mode == "insert" else 1200)


def test_validate_finds_duplicates_alike_when_its_run_map_moves_to_disk(
    run_cli, spec, tmp_path, monkeypatch
):
    """A dry run writes nothing for the table to remember: it keeps every entity, on disk
    past its bound -- with the same rejects, lines and counts as `run`."""
    import importer.modes.stage as modes_mod
    from importer.modes.ledger import DigestLedger

    skus = [f"P-{i % 70:03d}" for i in range(200)]
    src = write_csv(tmp_path / "in.csv", skus)
    reports = []
    ledgers: list[DigestLedger] = []

    def tiny(**kw):  # 4 slots: a run on disk every 3 entities
        ledger = DigestLedger(max_slots=4, **kw)
        ledgers.append(ledger)
        return ledger

    for spill in (False, True):
        if spill:
            monkeypatch.setattr(modes_mod, "DigestLedger", tiny)
        with DdbServer(tables=[CMD, DATA]) as server:
            res = run_cli(
                "validate", src, spec=spec, table=CMD, endpoint_url=server.endpoint_url,
                batch_items=20, quiet=True, rejects=tmp_path / f"v{spill}.csv",
            )  # fmt: skip
        assert res.summary["rejected"] == 130
        reports.append((tmp_path / f"v{spill}.csv").read_text())
    [ledger] = ledgers
    assert ledger.runs_on_disk >= 20
    with DdbServer(tables=[CMD, DATA]) as server:
        res = run_cli(
            "run", src, spec=spec, table=CMD, endpoint_url=server.endpoint_url,
            batch_items=20, quiet=True, rejects=tmp_path / "r.csv",
        )  # fmt: skip
    assert res.summary["rejected"] == 130
    assert reports[0] == reports[1] == (tmp_path / "r.csv").read_text()


def test_validate_without_a_table_previews_a_run_into_an_empty_table_exactly(
    run_cli, spec, tmp_path, monkeypatch
):
    """No table to read: validate's batches register their entities in whatever order
    they finish (none waits for another), its run map spills to disk every few
    entities -- and the rejects file, its lines and the counts are still `run`'s."""
    import importer.modes.stage as modes_mod
    from importer.modes.ledger import DigestLedger

    rng = random.Random(31)
    skus = [f"P-{rng.randrange(400):03d}" for _ in range(1500)]
    skus[700] = "bad sku"
    src = write_csv(tmp_path / "in.csv", skus)
    made: list[DigestLedger] = []

    def tiny(**kw):
        made.append(DigestLedger(max_slots=8, **kw))
        return made[-1]

    monkeypatch.setattr(modes_mod, "DigestLedger", tiny)
    flags = dict(spec=spec, batch_items=15, workers=8, quiet=True)
    preview = run_cli("validate", src, rejects=tmp_path / "v.csv", **flags)
    [ledger] = made
    assert ledger.runs_on_disk > 50
    with DdbServer(tables=[CMD, DATA]) as server:
        real = run_cli(
            "run", src, table=CMD, endpoint_url=server.endpoint_url,
            rejects=tmp_path / "r.csv", **flags,
        )  # fmt: skip
    assert preview.code == real.code == 3
    assert (tmp_path / "v.csv").read_text() == (tmp_path / "r.csv").read_text()
    keys = ("rows", "rejected", "existing", "unchanged", "failed", "bad_data")
    assert {k: preview.summary[k] for k in keys} == {k: real.summary[k] for k in keys}
    assert preview.summary["would_write"] == real.summary["written"] == len(set(skus)) - 1
