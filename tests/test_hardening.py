"""Issue 30: interrupts, state files, hostile inputs and dead endpoints.

Each test names the point of the issue it proves; each failed on the code before it.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from importer.cli import main
from tests.conftest import PRODUCT_SPEC
from tests.ddb_server import DdbServer
from tests.test_faults_resume import expected_keys, make_csv


def _run_args(src: Path, spec: Path, endpoint: str, *extra: str) -> list[str]:
    return [
        "run",
        str(src),
        "--spec",
        str(spec),
        "--table",
        "t-command",
        "--endpoint-url",
        endpoint,
        "--quiet",
        *extra,
    ]


# --------------------------------------------------------------------------- 2: dead endpoint


def test_a_lost_endpoint_is_a_fatal_resumable_stop(tmp_path, capsys):
    """#2: the endpoint stops answering mid-run: exit 1, one line, nothing counted failed,
    and --resume (once it answers again) stores every row once."""
    n = 3000
    src, spec, cp = tmp_path / "in.csv", tmp_path / "spec.toml", tmp_path / "cp.jsonl"
    make_csv(src, n)
    spec.write_text(PRODUCT_SPEC)
    summary = tmp_path / "s.json"
    with DdbServer(tables=["t-command"]) as srv:
        faults = srv.faults

        def die_after_some(item):  # called per item of each write: the endpoint dies
            if srv.stats().get("calls.BatchWriteItem", 0) >= 8:
                faults.drop_before = 1.0  # every later request: connection closed, no answer
            return None

        faults.set(validation_error_for=die_after_some)
        args = _run_args(
            src, spec, srv.endpoint_url, "--batch-items", "100", "--workers", "2",
            "--checkpoint", str(cp), "--summary-json", str(summary),
        )  # fmt: skip
        code = main(args)
        err = capsys.readouterr().err.strip()
        assert code == 1
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert "lost the DynamoDB endpoint" in err and "--resume" in err
        assert not summary.exists()  # no "finished" summary with thousands of failed rows
        stored = len(srv.items("t-command"))
        assert 0 < stored < n
        faults.clear()
        faults.drop_before = 0.0
        assert main([*args, "--resume"]) == 0
        assert set(srv.items("t-command")) == expected_keys(n)
    data = json.loads(summary.read_text())
    assert (data["rows"], data["written"], data["failed"]) == (n, n, 0)


def test_credentials_in_the_endpoint_url_are_never_printed(tmp_path, capsys):
    """#10: `http://user:password@host` in an error message."""
    import socket

    src, spec = tmp_path / "in.csv", tmp_path / "spec.toml"
    make_csv(src, 5)
    spec.write_text(PRODUCT_SPEC)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(_run_args(src, spec, f"http://alice:s3cr3t-pw@127.0.0.1:{port}"))
    err = capsys.readouterr().err
    assert code == 1 and "s3cr3t-pw" not in err and "alice" not in err
    assert "***@127.0.0.1" in err


# --------------------------------------------------------------------------- 8: patterns

HANGING_SPEC = PRODUCT_SPEC.replace('pattern = "^[A-Z0-9-]+$"', 'pattern = "^([A-Z0-9]+-?)+$"')


def test_a_backtracking_pattern_cannot_hang_the_run(tmp_path, capsys):
    """#8: Python's re took minutes on this value; the run must end (value rejected)."""
    src, spec = tmp_path / "in.csv", tmp_path / "spec.toml"
    src.write_text("sku,name,price,qty,active\n" + "A" * 37 + "!,n,1,1,yes\nAB-12,n,1,1,yes\n")
    spec.write_text(HANGING_SPEC)
    out = tmp_path / "s.json"
    result: list[int] = []
    worker = threading.Thread(
        target=lambda: result.append(
            main(["validate", str(src), "--spec", str(spec), "--quiet", "--summary-json", str(out)])
        ),
        daemon=True,
    )
    worker.start()
    worker.join(120)  # a bound for a hang, not a speed measurement (it takes milliseconds)
    assert result == [3], "the run hung on a backtracking pattern"
    data = json.loads(out.read_text())
    assert (data["rows"], data["rejected"]) == (2, 1)


@pytest.mark.parametrize("pattern", ["(a)\\\\1", "^(?=x)", "(?<!a)b"])
def test_patterns_that_need_backtracking_are_refused_when_the_spec_loads(tmp_path, pattern):
    from importer.spec import SpecError, load_spec

    spec = tmp_path / "spec.toml"
    spec.write_text(PRODUCT_SPEC.replace('"^[A-Z0-9-]+$"', f'"{pattern}"'))
    with pytest.raises(SpecError, match="columns.sku.pattern: uses"):
        load_spec(spec)


def test_without_re2_nested_repeats_are_refused(monkeypatch):
    from importer import patterns

    monkeypatch.setattr(patterns, "_re2", None)
    for bad in ("^([A-Z0-9]+-?)+$", "(a|aa)*", "(x*)*y"):
        with pytest.raises(patterns.PatternError, match="repeated group"):
            patterns.compile_pattern(bad)
    assert patterns.compile_pattern("^[A-Z]+(-[0-9]+)?$").search("AB-1")
