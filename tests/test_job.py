"""Several files, one job (issue 27): order, versions, rejects per file, the import-job
record, `importer status`, and a job killed half way then resumed."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import boto3
import pytest

from importer.cli.main import main
from importer.run.job_files import expand_sources, js_sort_key, load_job_manifest
from tests.conftest import KEY_SCHEMA, PRODUCT_SPEC
from tests.support.ddb_server import DdbServer

REPO = Path(__file__).resolve().parents[1]
HEADER = "sku,name,price,qty,active\n"
CMD, DATA, JOBS = "dev-app-master-command", "dev-app-master-data", "dev-app-import_tmp"


def rows_csv(skus: list[str], price: str = "1.5") -> str:
    return HEADER + "".join(f"{s},Name {s},{price},1,yes\n" for s in skus)


def zip_bytes(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members.items():  # written out of order on purpose
            zf.writestr(name, text)
    return buf.getvalue()


def test_sorted_file_keys_is_javascripts_sort():
    # JS sorts by UTF-16 code units: an astral character sorts before U+FFFD, and
    # upper case before lower case
    names = ["b.csv", "B.csv", "\ufffd.csv", "\U0001f600.csv", "a10.csv", "a2.csv"]
    assert sorted(names, key=js_sort_key) == [
        "B.csv",
        "a10.csv",
        "a2.csv",
        "b.csv",
        "\U0001f600.csv",
        "\ufffd.csv",
    ]


def test_zip_members_run_in_sorted_file_keys_order_and_stay_inside(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.zip").write_bytes(
        zip_bytes({"b.csv": rows_csv(["B"]), "sub/": "", "a.csv": rows_csv(["A"])})
    )
    got = expand_sources([str(tmp_path / "in")], work_dir=tmp_path / "w")
    assert [name.split("!")[1] for _, name in got] == ["a.csv", "b.csv"]
    (tmp_path / "evil.zip").write_bytes(zip_bytes({"../escape.csv": "x"}))
    from importer.input.source import SourceError

    with pytest.raises(SourceError, match="would leave its folder"):
        expand_sources([str(tmp_path / "evil.zip")], work_dir=tmp_path / "w2")


def test_job_manifest_gives_each_file_its_spec_and_refuses_an_unmatched_one(tmp_path):
    (tmp_path / "p.toml").write_text(PRODUCT_SPEC)
    man = tmp_path / "job.toml"
    man.write_text('[[files]]\nmatch = "prod*"\nspec = "p.toml"\ntable = "T2"\n')
    m = load_job_manifest(str(man))
    assert m is not None and m.pick("x/products-1.csv").table == "T2"
    from importer.input.source import SourceError

    with pytest.raises(SourceError, match="no \\[\\[files\\]\\] entry"):
        m.pick("orders.csv")
    assert load_job_manifest(str(tmp_path / "p.toml")) is None  # a plain spec


@pytest.fixture
def cloud(aws):
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    for table in (CMD, DATA, JOBS):
        ddb.create_table(TableName=table, **KEY_SCHEMA)
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="inbox")
    return ddb, s3


def test_a_prefix_of_twelve_files_is_one_job(cloud, tmp_path, capsys):
    ddb, s3 = cloud
    # 11 daily CSVs and a ZIP under one prefix: day-03 holds bad rows, day-06 an entity
    # that day-02 imported first, the ZIP two files (its members out of order)
    for d in range(1, 12):
        skus = [f"D{d}-{i}" for i in range(5)]
        if d == 3:
            skus[1], skus[3] = "bad sku", "also bad"
        if d == 6:
            skus[0] = "D2-0"
        price = "9.25" if d == 6 else "1.5"
        s3.put_object(Bucket="inbox", Key=f"exports/day-{d:02d}.csv", Body=rows_csv(skus, price))
    s3.put_object(
        Bucket="inbox",
        Key="exports/day-12.zip",
        Body=zip_bytes({"z-b.csv": rows_csv(["ZB"]), "z-a.csv": rows_csv(["ZA"])}),
    )
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    argv = ["run", "s3://inbox/exports/", "--spec", "spec.toml", "--table", CMD]
    argv += ["--writer", "boto3", "--region", "us-east-1", "--mode", "upsert"]
    argv += ["--job-dir", "job", "--summary-json", "s.json"]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 3  # two rows need a look
    lines = out.splitlines()
    assert lines[0].startswith("[ 1/13] s3://inbox/exports/day-01.csv  rows 5  written 5")
    assert lines[11].startswith("[12/13] s3://inbox/exports/day-12.zip!z-a.csv")
    assert lines[12].startswith("[13/13] s3://inbox/exports/day-12.zip!z-b.csv")
    assert "FAILED" in lines[2] and "rejects: job/rejects/003-day-03.rejects.csv" in lines[2]
    s = json.loads(Path("s.json").read_text())
    assert (s["file_count"], s["rows"], s["written"], s["rejected"], s["failed"]) == (
        13,
        57,
        55,
        2,
        0,
    )
    assert s["rows"] == s["written"] + s["unchanged"] + s["rejected"] + s["failed"]
    # the rejects name the file and the line
    rejects = Path("job/rejects.csv").read_text().splitlines()
    assert rejects[0] == "file,line,column,value,reason"
    assert [r.split(",")[:3] for r in rejects[1:]] == [
        ["s3://inbox/exports/day-03.csv", "3", "sku"],
        ["s3://inbox/exports/day-03.csv", "5", "sku"],
    ]
    # the entity of day-02 and day-06: versions in the job's order
    job = json.loads(Path("job/job.json").read_text())
    rid = job["run_id"]
    v1 = ddb.get_item(
        TableName=CMD, Key={"pk": {"S": "PRODUCT#acme"}, "sk": {"S": "PRODUCT#D2-0@1"}}
    )
    v2 = ddb.get_item(
        TableName=CMD, Key={"pk": {"S": "PRODUCT#acme"}, "sk": {"S": "PRODUCT#D2-0@2"}}
    )
    assert v1["Item"]["requestId"]["S"] == f"{rid}-2#2"
    assert v2["Item"]["requestId"]["S"] == f"{rid}-6#2"
    assert v2["Item"]["attributes"]["M"]["price"] == {"N": "9.25"}
    # the import-job records: a ZIP_MASTER_JOB and a CSV_MASTER_JOB per file
    items = ddb.scan(TableName=JOBS)["Items"]
    parent = [i for i in items if i["type"]["S"] == "ZIP_MASTER_JOB"]
    children = [i for i in items if i["type"]["S"] == "CSV_MASTER_JOB"]
    assert len(parent) == 1 and len(children) == 13
    p = parent[0]
    assert p["pk"]["S"] == "ZIP_IMPORT#acme" and p["sk"]["S"].startswith("ZIP#")
    assert p["status"]["S"] == "FAILED"  # one file has rows that need a look
    assert p["result"]["M"]["csvTaskFailureCount"] == {"N": "1"}
    assert (p["totalRows"]["N"], p["failedRows"]["N"]) == ("57", "2")
    assert [k["S"] for k in p["attributes"]["M"]["sortedFileKeys"]["L"]][-2:] == [
        "s3://inbox/exports/day-12.zip!z-a.csv",
        "s3://inbox/exports/day-12.zip!z-b.csv",
    ]
    parent_id = f"{p['pk']['S']}#{p['sk']['S']}"
    statuses = sorted(c["status"]["S"] for c in children)
    assert statuses == ["COMPLETED"] * 12 + ["FAILED"]
    for c in children:
        assert c["pk"]["S"] == "CSV_IMPORT#acme" and c["sk"]["S"].startswith("master#")
        assert c["source"]["S"] == parent_id
        assert c["id"]["S"] == f"{c['pk']['S']}#{c['sk']['S']}"
        result = c["result"]["M"]
        assert int(result["total"]["N"]) == int(result["succeeded"]["N"]) + int(
            result["failed"]["N"]
        )
    # importer status shows it
    capsys.readouterr()
    assert main(["status", "job", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "finished" and len(doc["files"]) == 13
    assert doc["files"][2]["outcome"] == "FAILED" and doc["files"][2]["rejected"] == 2
    assert doc["files"][2]["rejects_file"] == "job/rejects/003-day-03.rejects.csv"


def test_a_file_that_cannot_be_read_fails_alone(cloud, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text(rows_csv(["A"]))
    (tmp_path / "in" / "b.csv").write_text("other,columns\n1,2\n")
    (tmp_path / "in" / "c.csv").write_text(rows_csv(["C"]))
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    code = main(
        ["run", "in", "--spec", "spec.toml", "--table", CMD, "--writer", "boto3"]
        + ["--region", "us-east-1", "--job-dir", "job", "--job-table", ""]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "[2/3] in/b.csv  FAILED" in captured.out
    assert "[3/3] in/c.csv  rows 1  written 1" in captured.out
    assert captured.err.count("importer: error: in/b.csv:") == 1
    assert "Traceback" not in captured.err


def test_job_options_that_are_per_file_are_refused(tmp_path, capsys):
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    with pytest.raises(SystemExit) as exc:
        main(["run", "a.csv", "b.csv", "--spec", "spec.toml", "--table", "T", "--checkpoint", "x"])
    assert exc.value.code == 2
    assert "--checkpoint is per file" in capsys.readouterr().err


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "importer.cli.main", *args]


def _is_command(item: dict) -> bool:
    """A command record (`PRODUCT#...@v`), not a job's own record."""
    return item["pk"]["S"].startswith("PRODUCT#") and "@" in item["sk"]["S"]


def test_a_job_killed_half_way_resumes_every_row_exactly_once(tmp_path):
    n_files, n_rows = 12, 1500
    folder = tmp_path / "exports"
    folder.mkdir()
    for d in range(1, n_files):
        skus = [f"D{d}-{i}" for i in range(n_rows)]
        if d == 3:
            skus[10] = "bad sku"
        if d == 8:
            skus[0] = "D2-0"  # an entity of day 2 again: version 2
        price = "7.5" if d == 8 else "1.5"
        (folder / f"day-{d:02d}.csv").write_text(rows_csv(skus, price))
    (folder / "day-12.zip").write_bytes(
        zip_bytes({"z-b.csv": rows_csv(["ZB"]), "z-a.csv": rows_csv(["ZA"])})
    )
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    args = ["run", "exports", "--spec", "spec.toml", "--table", CMD, "--mode", "upsert"]
    args += ["--batch-items", "100", "--workers", "2", "--quiet", "--job-dir", "job"]
    args += ["--summary-json", "s.json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with DdbServer(tables=[CMD, DATA, JOBS]) as srv:
        args += ["--endpoint-url", srv.endpoint_url]
        env["AWS_ENDPOINT_URL_DYNAMODB"] = srv.endpoint_url
        # files 1-4 (5,999 commands) and part of file 5 are written; then the writes wait
        # until the job is killed: it is surely in file 5
        hold = srv.faults.hold_after(4 * n_rows + 1000, counts=_is_command)
        proc = subprocess.Popen(_cli(*args), cwd=tmp_path, env=env)
        state = tmp_path / "job" / "job.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until file 5 has batches checkpointed
            cp = tmp_path / "job" / "checkpoints" / "005.jsonl"
            if cp.exists() and len(cp.read_text().splitlines()) > 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        job = json.loads(state.read_text())
        assert [f["status"] for f in job["files"][:4]] == ["finished"] * 4
        assert job["files"][4]["status"] == "running"
        hold.release()
        done = subprocess.run(_cli(*args, "--resume"), cwd=tmp_path, env=env)
        items = srv.items(CMD)
        records = srv.items(JOBS)
    assert done.returncode == 3  # the bad row
    s = json.loads((tmp_path / "s.json").read_text())
    total = (n_files - 1) * n_rows + 2
    assert (s["file_count"], s["rows"], s["written"], s["rejected"]) == (13, total, total - 1, 1)
    # every row exactly once: one command per (entity, version), and no request id twice
    request_ids = [it["requestId"]["S"] for it in items.values()]
    assert len(request_ids) == len(set(request_ids)) == total - 1
    assert ("PRODUCT#acme", "PRODUCT#D2-0@2") in items
    assert items[("PRODUCT#acme", "PRODUCT#D2-0@2")]["attributes"]["M"]["price"] == {"N": "7.5"}
    assert items[("PRODUCT#acme", "PRODUCT#D2-0@1")]["attributes"]["M"]["price"] == {"N": "1.5"}
    # one job record, finished with the framework's statuses and totals
    parents = [r for r in records.values() if r["type"]["S"] == "ZIP_MASTER_JOB"]
    children = [r for r in records.values() if r["type"]["S"] == "CSV_MASTER_JOB"]
    assert len(parents) == 1 and len(children) == 13
    assert parents[0]["status"]["S"] == "FAILED"
    assert parents[0]["totalRows"]["N"] == str(total)
    assert sorted(c["status"]["S"] for c in children) == ["COMPLETED"] * 12 + ["FAILED"]
    status = subprocess.run(
        _cli("status", "job"), cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert status.returncode == 0
    assert status.stdout.startswith(f"job job: finished  rows {total:,}")
    assert "[3] exports/day-03.csv  finished FAILED" in status.stdout


def test_plan_prices_the_job_and_warns_past_the_task_timeout(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text(rows_csv(["A1", "A2", "bad sku"]))
    (tmp_path / "in" / "b.zip").write_bytes(zip_bytes({"b.csv": rows_csv(["B1"])}))
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    base = ["plan", "in", "--spec", "spec.toml", "--json"]
    assert main(base) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert [f["name"] for f in doc["files"]] == ["in/a.csv", "in/b.zip!b.csv"]
    assert (doc["rows"], doc["items"], doc["rejected"]) == (4, 3, 1)
    assert doc["write_units"] == sum(f["write_units"] for f in doc["files"])
    assert doc["exceeds_task_timeout"] is False and "warning" not in captured.err
    # 3 write units at 0.002 WCU/s: 1,500 s, past the default 900 s
    assert main([*base, "--max-wcu", "0.002"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["exceeds_task_timeout"] is True
    assert "exceeds the task state machine's timeout (15.0 min)" in captured.err
    assert main([*base, "--max-wcu", "0.002", "--task-timeout", "3600"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_validate_of_a_job_keeps_its_state_apart_and_a_resume_needs_the_same_job(
    cloud, tmp_path, capsys
):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text(rows_csv(["A"]))
    (tmp_path / "in" / "b.csv").write_text(rows_csv(["B", "bad sku"]))
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    common = ["--spec", "spec.toml", "--table", CMD, "--region", "us-east-1"]
    assert main(["validate", "in", *common, "--writer", "boto3"]) == 3
    out = capsys.readouterr().out
    assert "[2/2] in/b.csv  rows 2  would write 1  rejected 1" in out
    assert list(Path(".importer").iterdir()) == [Path(".importer/validate")]
    # nothing to resume: validate's state is not the run's
    assert main(["run", "in", *common, "--writer", "boto3", "--resume"]) == 1
    assert "no job at .importer/jobs/" in capsys.readouterr().err
    assert main(["run", "in", *common, "--writer", "boto3", "--job-dir", "j"]) == 3
    capsys.readouterr()
    code = main(
        ["run", "in/a.csv", "in/b.csv", *common, "--writer", "boto3"]
        + ["--job-dir", "j", "--resume"]
    )
    assert code == 1
    assert "is the job of other sources" in capsys.readouterr().err


def test_sigterm_stops_the_job_between_batches_and_resume_finishes_it(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for d in range(1, 5):
        (folder / f"f{d}.csv").write_text(rows_csv([f"F{d}-{i}" for i in range(1000)]))
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with DdbServer(tables=[CMD]) as srv:
        args = ["run", "in", "--spec", "spec.toml", "--table", CMD, "--mode", "blind"]
        args += ["--batch-items", "50", "--workers", "2", "--job-dir", "job"]
        args += ["--endpoint-url", srv.endpoint_url, "--summary-json", "s.json"]
        hold = srv.faults.hold_after(1500)  # file 2 cannot finish before the signal
        proc = subprocess.Popen(
            _cli(*args),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        cp = tmp_path / "job" / "checkpoints" / "002.jsonl"
        deadline = time.monotonic() + 120
        while not (cp.exists() and len(cp.read_text().splitlines()) > 2):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        hold.release()  # the batches in flight finish; no new one starts
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 143, err
        assert "Resume with the same command plus --resume" in err
        assert "[2/4] in/f2.csv" in out and "INTERRUPTED" in out
        job = json.loads((tmp_path / "job" / "job.json").read_text())
        assert job["status"] == "interrupted"
        assert [f["status"] for f in job["files"]][:2] == ["finished", "interrupted"]
        done = subprocess.run(_cli(*args, "--resume"), cwd=tmp_path, env=env, capture_output=True)
        assert done.returncode == 0, done.stderr
        assert len(srv.items(CMD)) == 4000
    s = json.loads((tmp_path / "s.json").read_text())
    assert (s["rows"], s["written"], s["status"]) == (4000, 4000, "finished")


def test_a_file_stopped_by_max_rejects_stays_failed_on_resume(cloud, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text(rows_csv(["A", "bad sku"]))
    (tmp_path / "in" / "b.csv").write_text(rows_csv(["B"]))
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    argv = ["run", "in", "--spec", "spec.toml", "--table", CMD, "--writer", "boto3"]
    argv += ["--region", "us-east-1", "--job-dir", "j", "--max-rejects", "0"]
    assert main(argv) == 1
    first = capsys.readouterr()
    assert "importer: error: in/a.csv: stopped after 1 rows of bad data" in first.err
    assert "[2/2] in/b.csv  rows 1  written 1" in first.out
    assert main([*argv, "--resume"]) == 1
    again = capsys.readouterr()
    assert "importer: error: in/a.csv: stopped after 1 rows of bad data" in again.err
    assert "already completed" not in again.err


def test_a_manifest_gives_each_table_its_spec_in_one_job(cloud, tmp_path, capsys):
    ddb, _s3 = cloud
    ddb.create_table(TableName="dev-app-order-command", **KEY_SCHEMA)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "20240101000000-products.csv").write_text(rows_csv(["P1", "P2"]))
    (tmp_path / "in" / "20240102000000-orders.csv").write_text("order,total\nO-1,12.5\n")
    (tmp_path / "products.toml").write_text(PRODUCT_SPEC)
    (tmp_path / "orders.toml").write_text(
        '[record]\ntype = "ORDER"\ntenant = "acme"\ncode = "{order}"\n\n'
        '[columns.order]\ntype = "string"\nrequired = true\n\n'
        '[columns.total]\ntype = "decimal"\n'
    )
    (tmp_path / "job.toml").write_text(
        '[[files]]\nmatch = "*-products.csv"\nspec = "products.toml"\n\n'
        '[[files]]\nmatch = "*-orders.csv"\nspec = "orders.toml"\n'
        'table = "dev-app-order-command"\n'
    )
    code = main(
        ["run", "in", "--spec", "job.toml", "--table", CMD, "--writer", "boto3"]
        + ["--region", "us-east-1", "--job-dir", "j"]
    )
    assert code == 0, capsys.readouterr().err
    products = ddb.scan(TableName=CMD)["Items"]
    orders = ddb.scan(TableName="dev-app-order-command")["Items"]
    assert sorted(i["sk"]["S"] for i in products) == ["PRODUCT#P1@1", "PRODUCT#P2@1"]
    assert [i["sk"]["S"] for i in orders] == ["ORDER#O-1@1"]
    children = [i for i in ddb.scan(TableName=JOBS)["Items"] if i["type"]["S"] == "CSV_MASTER_JOB"]
    assert sorted(c["sk"]["S"].split("#")[0] for c in children) == ["master", "order"]
