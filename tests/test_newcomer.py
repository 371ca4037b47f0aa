"""Issue 29: a newcomer's second hour, each point through the command a user types.

Against a real moto server on a loopback port (what `importer local up` runs), so
every command meets the same endpoint, region and tables a user's shell would.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from importer.cli.main import EXIT_OK, EXIT_PARTIAL, main
from importer.mbc.model import TABLE_SCHEMA
from tests.conftest import PRODUCT_SPEC

ROOT = Path(__file__).resolve().parents[1]
CMD = "shop-app-master-command"
TYPO = "shop-app-master-comand"
HEADER = ["sku", "name", "price", "qty", "active"]


@pytest.fixture(scope="module")
def moto_endpoint():
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        ddb = boto3.client(
            "dynamodb",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for suffix in ("command", "data", "history"):
            ddb.create_table(TableName=f"shop-app-master-{suffix}", **TABLE_SCHEMA)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def local_env(moto_endpoint, monkeypatch):
    """The environment `eval "$(importer local env)"` leaves (no endpoint flag needed)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    return moto_endpoint


def write_csv(path: Path, skus: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(HEADER)
        for n, sku in enumerate(skus):
            out.writerow([sku, f"item {n}", f"{n}.5", str(n), "yes"])
    return path


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(PRODUCT_SPEC)
    return path


# ---------------------------------------------------------------- 1. validate


def test_validate_with_a_mistyped_table_fails_as_run_does(
    local_env, spec, tmp_path, capsys, run_cli
):
    src = write_csv(tmp_path / "in.csv", ["A-1", "B-2"])
    code, out, err = run_cli("validate", str(src), "--spec", str(spec), "--table", TYPO).parts()
    assert code == 1, (out, err)
    assert "would write" not in out
    run_code, _, run_err = run_cli("run", str(src), "--spec", str(spec), "--table", TYPO).parts()
    assert run_code == 1
    expected = f"importer: error: table {TYPO!r} does not exist at {local_env} (region us-east-1)"
    assert err.strip() == run_err.strip() == expected


def test_validate_without_a_table_says_what_it_compared(local_env, spec, tmp_path, capsys, run_cli):
    src = write_csv(tmp_path / "in.csv", ["A-1", "B-2"])
    code, out, err = run_cli("validate", str(src), "--spec", str(spec)).parts()
    assert code == EXIT_OK
    assert "no --table given" in err and "endpoint" not in err


# ---------------------------------------------------------------- 5. one vocabulary


def test_a_missing_table_reads_the_same_in_every_command(
    local_env, spec, tmp_path, capsys, run_cli
):
    src = write_csv(tmp_path / "in.csv", ["A-1"])
    expected = f"table {TYPO!r} does not exist at {local_env} (region us-east-1)"
    lines = {}
    for argv in (
        ["run", str(src), "--spec", str(spec), "--table", TYPO],
        ["validate", str(src), "--spec", str(spec), "--table", TYPO],
        ["plan", str(src), "--spec", str(spec), "--table", TYPO],
        ["sync", "--table", TYPO],
    ):
        code, _, err = run_cli(*argv).parts()
        assert code == 1, (argv, err)
        lines[argv[0]] = err.strip()
    assert set(lines.values()) == {f"importer: error: {expected}"}, lines


def test_a_missing_data_table_in_sync_is_named(local_env, capsys, run_cli):
    code, _, err = run_cli("sync", "--table", "other-app-master-command").parts()
    assert code == 1
    assert err.strip() == (
        "importer: error: table 'other-app-master-command' does not exist at "
        f"{local_env} (region us-east-1)"
    )


def test_a_closed_pipe_ends_quietly(local_env, spec, tmp_path):
    src = write_csv(tmp_path / "in.csv", [f"P-{i}" for i in range(20)])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = (
        f'"{sys.executable}" -m importer.cli.main plan {src} --spec {spec} --json | head -c 1 '
        '>/dev/null; echo "status=${PIPESTATUS[0]}"'
    )
    # a reader that takes one byte and leaves before the writer is done
    res = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert res.stderr == "", res.stderr
    assert re.search(r"status=(0|141)\b", res.stdout), res.stdout


# ---------------------------------------------------------------- 10. idempotent re-run


def test_a_rerun_that_changed_nothing_exits_zero(local_env, spec, tmp_path, capsys, run_cli):
    src = write_csv(tmp_path / "again.csv", ["R-1", "R-2", "R-3"])
    argv = ["run", str(src), "--spec", str(spec), "--table", CMD]
    assert run_cli(*argv).code == EXIT_OK
    code, out, _ = run_cli(*argv).parts()
    assert "(of which 3 exist already)" in out
    assert code == EXIT_OK
    # a re-run with a bad row in it still needs a look
    bad = write_csv(tmp_path / "again2.csv", ["R-1", "bad sku"])
    assert run_cli("run", str(bad), "--spec", str(spec), "--table", CMD).code == EXIT_PARTIAL


# ---------------------------------------------------------------- 4. keys from values


@pytest.mark.parametrize("engine", ["native", "reference"])
def test_a_date_key_is_the_iso_date_whatever_the_file_wrote(engine):
    from importer.transform.context import RunContext
    from importer.transform.engines import get_engine
    from importer.transform.spec import parse_spec

    spec = parse_spec(
        {
            "record": {"type": "QUOTE", "code": "{day}#{close}", "tenant": "{listed}"},
            "columns": {
                "day": {"type": "date", "required": True},
                "close": {"type": "decimal"},
                "listed": {"type": "boolean"},
            },
        }
    )
    ctx = RunContext(run_id="r", timestamp="2024-01-01T00:00:00+00:00", source="s")
    rows = [(2, ["2012/01/01", "10.50", "yes"]), (3, ["2012-01-01", "010.5", "true"])]
    result = get_engine(engine).transform_batch(spec, ["day", "close", "listed"], rows, ctx)
    assert not result.rejects
    keys = {(item.pk, item.sk) for item in result.items}
    # both spellings name one entity, keyed as the attributes store the values
    assert keys == {("QUOTE#true", "QUOTE#2012-01-01#10.5@1")}


# ---------------------------------------------------------------- 2. stand-in from anywhere


def _local(*argv: str, cwd: Path, env: dict[str, str] | None = None):
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "importer.cli.main", "local", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, **(env or {})},
        timeout=180,
    )


def _gone(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def test_the_stand_in_is_found_from_any_folder_of_the_project(tmp_path):
    from importer.cli import local_moto

    project = tmp_path / "project"
    deep = project / "data" / "2024"
    deep.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    state_dir = project / ".importer" / "local"
    up = _local("up", "--background", "--port", "0", cwd=project)
    assert up.returncode == 0, up.stderr
    try:
        state = local_moto.read_state(state_dir)
        assert state is not None
        env = _local("env", cwd=deep)
        assert env.returncode == 0, env.stderr
        assert f"export AWS_ENDPOINT_URL={state.endpoint}" in env.stdout
        # a second `up` below it refuses, naming the running one's address
        again = _local("up", "--background", "--port", "0", cwd=deep)
        assert again.returncode == 1
        assert f"already running on {state.endpoint} (pid {state.pid})" in again.stderr
        assert not (deep / ".importer").exists()
        # from outside the project: not found, unless asked for explicitly
        assert _local("env", cwd=elsewhere).returncode == 1
        there = _local("env", "--from", str(project), cwd=elsewhere)
        assert there.returncode == 0 and state.endpoint in there.stdout
        # `down` from the subfolder stops it, and has waited until it exited
        down = _local("down", cwd=deep)
        assert down.returncode == 0, down.stderr
        assert f"pid {state.pid}" in down.stdout
        assert _gone(state.pid)
        assert not (state_dir / "state.json").exists()
    finally:
        if local_moto.read_state(state_dir) is not None:
            local_moto.stop_background(state_dir)


def test_down_waits_for_a_stand_in_that_ignores_sigterm(tmp_path):
    """A stand-in slow to stop (millions of items) is killed after the grace, never left."""
    from importer.cli import local_moto

    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, signal, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "pathlib.Path(sys.argv[1]).write_text('x')\n"
            "while True: time.sleep(1)\n",
            str(ready),
            "importer-local-server",  # in its command line, as the real child's
        ]
    )
    try:
        while not ready.exists():
            if child.poll() is not None:
                pytest.fail("the stand-in stand-in did not start")
        state = local_moto.StackState(
            pid=child.pid,
            endpoint="http://127.0.0.1:1",
            region="us-east-1",
            prefix="p",
            bucket="b",
            tables=("p-command",),
            background=True,
        )
        state_dir = tmp_path / ".importer" / "local"
        local_moto._write_state(state_dir, state)
        stopped = local_moto.stop_background(state_dir, grace=0.0)
        assert stopped is not None and stopped.pid == child.pid
        assert child.poll() is not None  # exited (and reaped here) before down returned
        assert local_moto.read_state(state_dir) is None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# ---------------------------------------------------------------- 6. progress


def test_progress_counts_rows_settled_not_rows_read(tmp_path):
    """The reader runs ahead of the writes; the bar shows only what is settled."""
    import threading

    from importer.run.driver import RunConfig, run_import
    from importer.run.pipeline import PipelineSettings, open_pipeline
    from importer.transform.spec import parse_spec

    spec = parse_spec({"record": {"type": "T", "code": "{sku}"}, "columns": {"sku": {}}})
    src = tmp_path / "many.csv"
    src.write_text("sku\n" + "".join(f"S-{i}\n" for i in range(200)))
    total = src.stat().st_size
    gate = threading.Event()
    calls: list[tuple[int, int, int | None]] = []

    def progress(rows: int, done_bytes: int, size: int | None) -> None:
        calls.append((rows, done_bytes, size))
        gate.set()  # the first report is made while no batch has been written

    settings = PipelineSettings(spec=spec, mode="blind", dry_run=True, workers=4)
    config = RunConfig(source=str(src), batch_items=10)
    with open_pipeline(settings) as pipeline:
        process = pipeline.process

        def held(*args, **kwargs):
            gate.wait()
            return process(*args, **kwargs)

        pipeline.process = held
        summary = run_import(config, pipeline=pipeline, progress=progress)
    assert calls[0][:2] == (0, 0), calls[:3]  # read 10+ rows, settled none
    assert calls[-1] == (summary.rows, total, total) == (200, total, total)
    assert all(rows % 10 == 0 for rows, _, _ in calls)  # whole batches, as counted
    assert [c[1] for c in calls] == sorted(c[1] for c in calls)


# ---------------------------------------------------------------- 7. rejects and notices


@pytest.mark.parametrize("engine", ["native", "reference"])
def test_extra_fields_notice_names_the_lines(local_env, spec, tmp_path, capsys, engine, run_cli):
    src = tmp_path / "extra.csv"
    src.write_text(
        "sku,name,price,qty,active\n"
        "A-1,Apple,1,1,yes\n"
        "B-2,Pear,2,2,yes,surplus\n"
        "C-3,Plum,3\n"
        "D-4,Fig,4,4,yes,x,y\n"
    )
    code, out, _ = run_cli("validate", str(src), "--spec", str(spec), "--engine", engine).parts()
    assert code == EXIT_OK
    assert "2 rows had more fields than the header" in out
    assert "as ItemReader reads them: lines 3, 5" in out
    assert '1 row had fewer fields than the header (the missing ones read as ""), as ' in out
    assert "ItemReader reads them: line 4" in out


def test_rejects_file_is_in_line_order(local_env, spec, tmp_path, capsys, run_cli):
    skus = ["A-1", "bad 1", "A-1", "bad 2", "B-2", "B-2", "bad 3"]
    src = write_csv(tmp_path / "order.csv", skus)
    rejects = tmp_path / "order.rejects.csv"
    code, _, _ = run_cli(
        "validate", str(src), "--spec", str(spec), "--rejects", str(rejects)
    ).parts()
    assert code == EXIT_PARTIAL
    with open(rejects, encoding="utf-8") as fh:
        lines = [int(rec[0]) for rec in list(csv.reader(fh))[1:]]
    assert len(lines) == 5
    assert lines == sorted(lines)


@pytest.mark.parametrize("engine", ["native", "reference"])
def test_a_date_reject_lists_the_accepted_spellings(engine):
    from importer.transform.context import RunContext
    from importer.transform.engines import get_engine
    from importer.transform.spec import parse_spec

    spec = parse_spec(
        {"record": {"type": "T", "code": "{k}"}, "columns": {"k": {}, "d": {"type": "date"}}}
    )
    ctx = RunContext(run_id="r", timestamp="2024-01-01T00:00:00+00:00", source="s")
    result = get_engine(engine).transform_batch(spec, ["k", "d"], [(2, ["a", "01.02.2024"])], ctx)
    assert [r.reason for r in result.rejects] == [
        "not a date (YYYY-MM-DD or YYYY/MM/DD, a real day)"
    ]


def test_the_first_import_note_is_plain_words(local_env, spec, tmp_path, capsys, run_cli):
    src = write_csv(tmp_path / "first.csv", ["F-1"])
    code, _, err = run_cli("validate", str(src), "--spec", str(spec), "--table", CMD).parts()
    assert code == EXIT_OK
    assert "@1" not in err and "insert mode checks" not in err
    assert (
        "importer: note: data table 'shop-app-master-data' is empty (a first import): rows "
        f"are checked against the command table {CMD!r} only"
    ) in err


# ---------------------------------------------------------------- 9. help


def _all_parsers():
    import argparse

    from importer.cli.main import build_parser

    todo = [("importer", build_parser(), None)]
    while todo:
        name, parser, help_text = todo.pop()
        yield name, parser, help_text
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for sub_name, sub in action.choices.items():
                    todo.append((f"{name} {sub_name}", sub, helps.get(sub_name)))


def test_every_help_page_has_a_description_and_every_option_a_help_text():
    import argparse

    missing = []
    for name, parser, _ in _all_parsers():
        if not parser.description:
            missing.append(f"{name}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
                continue
            if not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_required_options_come_first_in_every_help_page():
    wrong = []
    for name, parser, _ in _all_parsers():
        options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
        seen_optional = None
        for action in options:
            if action.required and seen_optional is not None:
                wrong.append(f"{name}: {action.option_strings[0]} after {seen_optional}")
            elif not action.required:
                seen_optional = seen_optional or action.option_strings[0]
    assert wrong == []
    from importer.cli.main import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert text.index("--table") < text.index("--batch-items")


def test_the_draft_spec_names_its_own_file(tmp_path, capsys):
    src = tmp_path / "stocks.csv"
    src.write_text("symbol,close\nAAA,1.5\nBBB,2.5\n")
    out = tmp_path / "stocks.toml"
    assert main(["spec", "init", str(src), "--out", str(out)]) == 0
    assert f"#   importer validate {src} --spec {out}\n" in out.read_text()


def test_an_endpoint_that_does_not_answer_reads_the_same_in_every_command(
    spec, tmp_path, capsys, monkeypatch, run_cli
):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    src = write_csv(tmp_path / "in.csv", ["A-1"])
    start = f"importer: error: cannot reach DynamoDB endpoint {endpoint} (region us-east-1): "
    for argv in (
        ["run", str(src), "--spec", str(spec), "--table", CMD],
        ["validate", str(src), "--spec", str(spec), "--table", CMD],
        ["plan", str(src), "--spec", str(spec), "--table", CMD],
        ["sync", "--table", CMD],
    ):
        code, _, err = run_cli(*argv).parts()
        assert code == 1, (argv, err)
        assert err.startswith(start) and err.count("\n") == 1, (argv, err)
