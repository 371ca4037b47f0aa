"""`importer local`: a real moto server on loopback, started and stopped as a user would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from importer.cli import local_moto
from importer.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def parse_exports(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            out[name] = value
    return out


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie its (re)parent has not reaped yet."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


@pytest.fixture
def stack_dir(tmp_path):
    """A state dir whose stand-in is always stopped, whatever the test did."""
    state_dir = tmp_path / ".importer" / "local"
    yield state_dir
    state = local_moto.read_state(state_dir)
    if state is not None:
        local_moto.stop_background(state_dir)


def test_background_lifecycle_tables_bucket_env_and_run(tmp_path, stack_dir, run_cli):
    up = run_cli.child("local", "up", "--background", "--port", "0", cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    state = json.loads((stack_dir / "state.json").read_text())
    assert (stack_dir / "server.pid").read_text().strip() == str(state["pid"])
    endpoint = state["endpoint"]
    assert endpoint.startswith("http://127.0.0.1:")
    # every line of `up` is a comment or shell, so eval "$(importer local up ...)" is safe too
    assert all(ln.startswith(("#", "export ", "unset ")) for ln in up.stdout.splitlines())

    env = run_cli.child("local", "env", cwd=tmp_path)
    assert env.returncode == 0 and env.stderr == ""
    exports = parse_exports(env.stdout)
    assert exports == {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    assert env.stdout.splitlines()[0] == "unset AWS_PROFILE AWS_SESSION_TOKEN"

    ddb = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for suffix in ("command", "data", "history"):
        table = ddb.describe_table(TableName=f"local-app-master-{suffix}")["Table"]
        assert table["KeySchema"] == [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ]
        assert {a["AttributeType"] for a in table["AttributeDefinitions"]} == {"S"}
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["importer-local"]

    again = run_cli.child("local", "up", "--background", cwd=tmp_path)
    assert again.returncode == 1
    assert f"already running on {endpoint} (pid {state['pid']})" in again.stderr

    # with only the printed environment: a local file, then the same file from s3://
    (tmp_path / "p.csv").write_text("sku,name\nA-1,Apple\nB-2,Pear\n", encoding="utf-8")
    (tmp_path / "p.toml").write_text(
        '[record]\ntype = "PRODUCT"\ncode = "{sku}"\nname = "{name}"\n'
        "[columns.sku]\nrequired = true\n[columns.name]\n",
        encoding="utf-8",
    )
    table = "local-app-master-command"
    run = run_cli.child(
        "run", "p.csv", "--spec", "p.toml", "--table", table, env=exports, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert ddb.scan(TableName=table, Select="COUNT")["Count"] == 2
    put = run_cli.child("local", "upload", "p.csv", "--key", "in/p.csv", cwd=tmp_path)
    assert put.returncode == 0 and put.stdout.strip() == "s3://importer-local/in/p.csv"
    (tmp_path / "p.csv").write_text("sku,name\nC-3,Plum\n", encoding="utf-8")  # not what S3 has
    run = run_cli.child(
        "run", "s3://importer-local/in/p.csv", "--spec", "p.toml", "--table", table,
        "--mode", "upsert", "--summary-json", "s.json", env=exports, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["rows"], summary["unchanged"]) == (2, 2)

    down = run_cli.child("local", "down", cwd=tmp_path)
    assert down.returncode == 0 and f"pid {state['pid']}" in down.stdout
    assert not (stack_dir / "state.json").exists() and not (stack_dir / "server.pid").exists()
    assert gone(state["pid"])
    after = run_cli.child("local", "env", cwd=tmp_path)
    assert after.returncode == 1
    assert after.stderr.count("\n") == 1 and "importer local up --background" in after.stderr
    assert (
        run_cli.child("local", "down", cwd=tmp_path).returncode == 0
    )  # nothing to stop is not an error


def _wait_for_state(state_dir: Path, proc: subprocess.Popen, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = state_dir / "state.json"
        if path.exists():
            return json.loads(path.read_text())
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("the foreground stand-in did not come up")


@pytest.mark.parametrize("stop", ["ctrl-c", "down"])
def test_foreground_stops_cleanly(tmp_path, stack_dir, stop, run_cli):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "importer.cli.main", "local", "up", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        state = _wait_for_state(stack_dir, proc)
        assert state["pid"] == proc.pid and state["background"] is False
        if stop == "ctrl-c":
            proc.send_signal(signal.SIGINT)
        else:
            assert run_cli.child("local", "down", cwd=tmp_path).returncode == 0
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "# Ctrl-C (or `importer local down`) stops it" in out
    assert not (stack_dir / "state.json").exists()
    host, port = state["endpoint"].removeprefix("http://").split(":")
    with socket.socket() as sock, pytest.raises(OSError):
        sock.settimeout(2)
        sock.connect((host, int(port)))


def test_busy_port_is_one_line_and_default_port_falls_back(tmp_path, stack_dir, run_cli):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        res = run_cli.child("local", "up", "--background", "--port", str(busy), cwd=tmp_path)
        assert res.returncode == 1
        assert res.stderr == (
            f"importer local: error: port {busy} on 127.0.0.1 is in use "
            "(pick another with --port)\n"
        )
    # the default port taken (by us, or by anyone else on this machine): a free one instead
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", local_moto.DEFAULT_PORT))
            holder.listen()
        except OSError:
            pass  # already held elsewhere: the fallback is exercised all the same
        res = run_cli.child("local", "up", "--background", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert f"port {local_moto.DEFAULT_PORT} is in use" in res.stderr  # said, not silent
        endpoint = json.loads((stack_dir / "state.json").read_text())["endpoint"]
        assert not endpoint.endswith(f":{local_moto.DEFAULT_PORT}")
        assert run_cli.child("local", "down", cwd=tmp_path).returncode == 0


def test_bad_names_and_stale_state_are_one_line(tmp_path, stack_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["local", "up", "--background", "--bucket", "Bad_Bucket"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("importer local: error: --bucket 'Bad_Bucket'") and err.count("\n") == 1
    # a state file left by a process that is gone is cleaned up, not trusted
    stack_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (stack_dir / "state.json").write_text(
        json.dumps(
            {
                "pid": dead.pid,
                "endpoint": "http://127.0.0.1:1",
                "region": "us-east-1",
                "prefix": "p",
                "bucket": "b",
                "tables": ["p-command", "p-data", "p-history"],
                "background": True,
            }
        )
    )
    assert main(["local", "env"]) == 1
    assert "no local stand-in is running" in capsys.readouterr().err
    assert not (stack_dir / "state.json").exists()


def test_without_moto_says_which_extra_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "moto", None)
    monkeypatch.setitem(sys.modules, "moto.server", None)
    for argv in (["local", "up", "--background"], ["local", "up", "--port", "0"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err == (
            "importer local: error: the local AWS stand-in needs moto: "
            "pip install 'importer[demo]'\n"
        )
    assert not (tmp_path / ".importer" / "local" / "state.json").exists()


def test_a_stand_in_midway_through_exiting_has_not_exited(monkeypatch):
    """After SIGKILL the kernel frees a process's memory (its /proc cmdline reads empty)
    before it closes its sockets and becomes a zombie: `down` must wait on, or a new
    `up` finds the port still held. (The empty cmdline read as "someone else's pid".)"""

    class _Proc:
        def __init__(self, path: str) -> None:
            self.path = path

        def exists(self) -> bool:
            return True

        def read_bytes(self) -> bytes:
            return b""  # cmdline, once the memory is released

        def read_text(self) -> str:
            return "Name:\tpython\nState:\tR (running)\n"

    monkeypatch.setattr(local_moto, "Path", _Proc)
    monkeypatch.setattr(local_moto.os, "kill", lambda pid, sig: None)  # the pid exists
    assert local_moto._alive(4242)
    assert not local_moto._exited(4242)
