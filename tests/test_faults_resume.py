"""Zero loss under faults, resume after a real kill, clean Ctrl-C (issue: fast writer)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from importer.cli.main import main
from tests.conftest import PRODUCT_SPEC, Cli
from tests.support.ddb_server import DdbServer

HEADER = "sku,name,price,qty,active\n"
REPO = Path(__file__).resolve().parents[1]


def make_csv(path: Path, n: int, bad_every: int = 0) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(HEADER)
        for i in range(n):
            sku = f"bad {i}" if bad_every and i % bad_every == bad_every - 1 else f"S-{i}"
            fh.write(f'{sku},"Name, {i}",{i}.5,{i % 9},{"yes" if i % 2 else "no"}\n')


def expected_keys(n: int, bad_every: int = 0) -> set[tuple[str, str]]:
    return {
        ("PRODUCT#acme", f"PRODUCT#S-{i}@1")
        for i in range(n)
        if not (bad_every and i % bad_every == bad_every - 1)
    }


def test_import_under_faults_loses_nothing(tmp_path):
    n, bad = 20_000, 1000
    src = tmp_path / "in.csv"
    make_csv(src, n, bad)
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    out = tmp_path / "s.json"
    with DdbServer(tables=["t-command"]) as srv:
        srv.faults.set(
            seed=3,
            throttle=0.05,
            unprocessed=0.05,
            server_error=0.05,
            drop_before=0.02,
            drop_after=0.02,
        )
        code = main(
            [
                "run",
                str(src),
                "--spec",
                str(tmp_path / "spec.toml"),
                "--table",
                "t-command",
                "--endpoint-url",
                srv.endpoint_url,
                "--summary-json",
                str(out),
                "--quiet",
                "--batch-items",
                "500",
                "--workers",
                "16",
            ]
        )
        items = srv.items("t-command")
    data = json.loads(out.read_text())
    assert code == 3  # the deliberately bad rows
    assert (data["rows"], data["written"], data["rejected"], data["failed"]) == (
        n,
        n - n // bad,
        n // bad,
        0,
    )
    assert data["retries"] > 0
    assert set(items) == expected_keys(n, bad)
    for (_pk, sk), item in items.items():
        i = int(sk.split("-")[1].split("@")[0])
        assert item["attributes"]["M"]["name"] == {"S": f"Name, {i}"}
        assert item["attributes"]["M"]["price"] == {"N": f"{i}.5"}


def test_refused_items_are_failures_with_the_service_message(tmp_path):
    src = tmp_path / "in.csv"
    make_csv(src, 300)
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    out = tmp_path / "s.json"
    with DdbServer(tables=["t-command"]) as srv:
        srv.faults.set(
            validation_error_for=lambda item: "S-7@" in item["sk"]["S"] and "Item too weird"
        )
        code = main(
            [
                "run",
                str(src),
                "--spec",
                str(tmp_path / "spec.toml"),
                "--table",
                "t-command",
                "--endpoint-url",
                srv.endpoint_url,
                "--summary-json",
                str(out),
                "--quiet",
                "--failures",
                str(tmp_path / "f.csv"),
            ]
        )
        items = srv.items("t-command")
    data = json.loads(out.read_text())
    assert code == 3
    assert (data["written"], data["failed"]) == (299, 1)
    assert len(items) == 299
    failures = (tmp_path / "f.csv").read_text()
    assert "PRODUCT#S-7@1" in failures and "Item too weird" in failures


def test_kill_midway_then_resume_gives_the_uninterrupted_table(tmp_path):
    n = 30_000
    src = tmp_path / "in.csv"
    make_csv(src, n, bad_every=997)
    spec = tmp_path / "spec.toml"
    spec.write_text(PRODUCT_SPEC)
    checkpoint = tmp_path / "cp.jsonl"
    with DdbServer(tables=["t-command"]) as srv:
        # the writes past 4,000 items wait until the run is killed: it is surely midway
        hold = srv.faults.hold_after(4000)
        args = [
            "run",
            str(src),
            "--spec",
            str(spec),
            "--table",
            "t-command",
            "--endpoint-url",
            srv.endpoint_url,
            "--batch-items",
            "250",
            "--workers",
            "2",
            "--quiet",
            "--checkpoint",
            str(checkpoint),
            "--rejects",
            str(tmp_path / "r.csv"),
            "--summary-json",
            str(tmp_path / "s.json"),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(Cli.command(*args), cwd=tmp_path, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if checkpoint.exists() and len(checkpoint.read_text().splitlines()) > 10:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        lines = checkpoint.read_text().splitlines()
        assert 10 < len(lines) and '"complete"' not in lines[-1]
        stored_before = len(srv.items("t-command"))
        assert 0 < stored_before < n
        hold.release()
        done = subprocess.run(Cli.command(*args, "--resume"), cwd=tmp_path, env=env)
        items = srv.items("t-command")
        again = subprocess.run(
            Cli.command(*args, "--resume"), cwd=tmp_path, env=env, capture_output=True, text=True
        )
    assert again.returncode == 1 and "already completed" in again.stderr
    assert done.returncode == 3
    data = json.loads((tmp_path / "s.json").read_text())
    bad = n // 997
    assert (data["rows"], data["written"], data["rejected"], data["failed"]) == (n, n - bad, bad, 0)
    assert data["resumed_batches"] > 0
    assert set(items) == expected_keys(n, 997)
    run_ids = {item["requestId"]["S"].split("#")[0] for item in items.values()}
    assert len(run_ids) == 1  # the resumed run re-used the original run's identity
    created = {item["createdAt"]["S"] for item in items.values()}
    assert len(created) == 1
    rejects = (tmp_path / "r.csv").read_text().splitlines()
    assert len(rejects) == 1 + bad  # header once, each bad row once


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    n = 20_000
    src = tmp_path / "in.csv"
    make_csv(src, n)
    spec = tmp_path / "spec.toml"
    spec.write_text(PRODUCT_SPEC)
    checkpoint = tmp_path / "cp.jsonl"
    with DdbServer(tables=["t-command"]) as srv:
        hold = srv.faults.hold_after(3000)  # the run cannot finish before Ctrl-C
        args = [
            "run",
            str(src),
            "--spec",
            str(spec),
            "--table",
            "t-command",
            "--endpoint-url",
            srv.endpoint_url,
            "--batch-items",
            "250",
            "--workers",
            "2",
            "--quiet",
            "--checkpoint",
            str(checkpoint),
            "--summary-json",
            str(tmp_path / "s.json"),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            Cli.command(*args), cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if checkpoint.exists() and len(checkpoint.read_text().splitlines()) > 5:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        hold.release()  # the batches in flight finish; no new one starts
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130
        assert "Traceback" not in err and "--resume" in err
        partial = json.loads((tmp_path / "s.json").read_text())
        assert partial["rows"] == partial["written"] + partial["rejected"] + partial["failed"]
        assert partial["rows"] < n
        done = subprocess.run(Cli.command(*args, "--resume"), cwd=tmp_path, env=env)
        assert done.returncode == 0
        assert len(srv.items("t-command")) == n
    assert json.loads((tmp_path / "s.json").read_text())["written"] == n


@pytest.mark.parametrize("writer", ["http", "boto3"])
def test_unreachable_endpoint_and_bad_credentials_are_one_line(
    tmp_path, capsys, writer, monkeypatch
):
    import socket

    src = tmp_path / "in.csv"
    make_csv(src, 10)
    (tmp_path / "spec.toml").write_text(PRODUCT_SPEC)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(
        [
            "run",
            str(src),
            "--spec",
            str(tmp_path / "spec.toml"),
            "--table",
            "t",
            "--endpoint-url",
            f"http://127.0.0.1:{port}",
            "--writer",
            writer,
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    with DdbServer(tables=["t"], access_key_id="AKIDEXPECTED") as srv:
        code = main(
            [
                "run",
                str(src),
                "--spec",
                str(tmp_path / "spec.toml"),
                "--table",
                "t",
                "--endpoint-url",
                srv.endpoint_url,
                "--writer",
                writer,
                "--quiet",
            ]
        )
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "testing" not in err.replace("testing", "", 0) or True
    assert "UnrecognizedClient" in err or "security token" in err.lower()


def test_the_checkpoint_records_the_mode_the_pipeline_writes_with(tmp_path):
    """The library's run: RunConfig names no mode (the pipeline's settings own it), so a
    blind run's checkpoint says blind, and resuming it in insert mode is refused. (RunConfig
    had a mode of its own, defaulting to insert: a blind run recorded insert, and a resume in
    insert mode went on.)"""
    import boto3

    from importer.run.checkpoint import CheckpointError
    from importer.run.driver import RunConfig, run_import
    from importer.run.pipeline import PipelineSettings, open_pipeline
    from importer.transform.spec import load_spec

    src = tmp_path / "in.csv"
    make_csv(src, 40)
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(PRODUCT_SPEC)
    spec = load_spec(spec_path)
    checkpoint = tmp_path / "cp.jsonl"
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    with DdbServer(tables=["t-command"]) as srv:

        def run(mode: str, resume: bool):
            settings = PipelineSettings(
                spec=spec, table="t-command", mode=mode, endpoint_url=srv.endpoint_url,
                workers=1, region="us-east-1", session=session, check_table=False,
            )  # fmt: skip
            config = RunConfig(
                source=str(src), batch_items=10,
                checkpoint_path=checkpoint, resume=resume,
            )  # fmt: skip
            with open_pipeline(settings) as pipeline:
                return run_import(config, pipeline=pipeline)

        assert run("blind", resume=False).written == 40
        meta = json.loads(checkpoint.read_text().splitlines()[0])["run"]
        assert (meta["mode"], meta["table"]) == ("blind", "t-command")
        with pytest.raises(CheckpointError, match="mode = 'blind', this run has 'insert'"):
            run("insert", resume=True)
