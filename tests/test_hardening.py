"""Issue 30: interrupts, state files, hostile inputs and dead endpoints.

Each test names the point of the issue it proves; each failed on the code before it.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from importer.cli.main import main
from tests.conftest import PRODUCT_SPEC
from tests.support.ddb_server import DdbServer
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
    from importer.transform.spec import SpecError, load_spec

    spec = tmp_path / "spec.toml"
    spec.write_text(PRODUCT_SPEC.replace('"^[A-Z0-9-]+$"', f'"{pattern}"'))
    with pytest.raises(SpecError, match="columns.sku.pattern: uses"):
        load_spec(spec)


def test_without_re2_nested_repeats_are_refused(monkeypatch):
    from importer.transform import patterns

    monkeypatch.setattr(patterns, "_re2", None)
    for bad in ("^([A-Z0-9]+-?)+$", "(a|aa)*", "(x*)*y"):
        with pytest.raises(patterns.PatternError, match="repeated group"):
            patterns.compile_pattern(bad)
    assert patterns.compile_pattern("^[A-Z]+(-[0-9]+)?$").search("AB-1")


# --------------------------------------------------------------------------- 1: truncated input


def _csv_bytes(n: int, bad_every: int = 0) -> bytes:
    lines = ["sku,name,price,qty,active\n"]
    for i in range(n):
        sku = f"bad {i}" if bad_every and i % bad_every == bad_every - 1 else f"S-{i}"
        lines.append(f'{sku},"Name, {i}",{i}.5,{i % 9},{"yes" if i % 2 else "no"}\n')
    return "".join(lines).encode()


def _zst(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def _gz(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


@pytest.mark.parametrize(("suffix", "compress"), [(".zst", _zst), (".gz", _gz)])
def test_a_truncated_compressed_file_says_so_and_resumes_once_whole(
    tmp_path, capsys, suffix, compress
):
    """#1: a cut .zst was taken for a complete file (11,895 of 20,000 rows, no word)."""
    n = 20_000
    whole = compress(_csv_bytes(n))
    src, spec, cp = tmp_path / f"in.csv{suffix}", tmp_path / "spec.toml", tmp_path / "cp.jsonl"
    src.write_bytes(whole[: len(whole) * 6 // 10])
    spec.write_text(PRODUCT_SPEC)
    summary = tmp_path / "s.json"
    with DdbServer(tables=["t-command"]) as srv:
        args = _run_args(
            src, spec, srv.endpoint_url, "--batch-items", "500", "--checkpoint", str(cp),
            "--summary-json", str(summary),
        )  # fmt: skip
        assert main(args) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert str(src) in err and "truncated" in err and "complete lines" in err
        assert "once the file is whole" in err and "--resume" in err
        assert 0 < len(srv.items("t-command")) < n
        assert '"batch"' in cp.read_text()  # the rows before the cut are checkpointed
        assert main([*args, "--resume"]) == 1  # still cut: says so again, goes no further
        assert "truncated" in capsys.readouterr().err
        src.write_bytes(whole)  # the download finished
        assert main([*args, "--resume"]) == 0
        assert set(srv.items("t-command")) == expected_keys(n)
    data = json.loads(summary.read_text())
    assert (data["rows"], data["written"], data["failed"]) == (n, n, 0)


def test_validate_reports_a_truncated_zst(tmp_path, capsys):
    whole = _zst(_csv_bytes(5000))
    src, spec = tmp_path / "in.csv.zst", tmp_path / "spec.toml"
    src.write_bytes(whole[:-7])
    spec.write_text(PRODUCT_SPEC)
    assert main(["validate", str(src), "--spec", str(spec), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "truncated" in err and str(src) in err


# --------------------------------------------------------------------------- 3, 5: state files


def _finished_then_unfinished(tmp_path: Path, srv: DdbServer, n: int = 2000, bad: int = 0):
    """A run's files as a kill would leave them: the checkpoint without its 'complete' line."""
    src, spec, cp = tmp_path / "in.csv", tmp_path / "spec.toml", tmp_path / "cp.jsonl"
    src.write_bytes(_csv_bytes(n, bad))
    spec.write_text(PRODUCT_SPEC)
    rejects = tmp_path / "rejects.csv"
    args = _run_args(
        src, spec, srv.endpoint_url, "--batch-items", "100", "--checkpoint", str(cp),
        "--rejects", str(rejects), "--summary-json", str(tmp_path / "s.json"),
    )  # fmt: skip
    assert main(args) == (3 if bad else 0)
    lines = cp.read_text().splitlines(keepends=True)
    assert '"complete"' in lines[-1]
    return args, src, cp, rejects, lines[:-1]


def test_resume_with_another_file_is_refused(tmp_path, capsys):
    """#3: the checkpoint identifies its input; a changed file is not resumed into."""
    with DdbServer(tables=["t-command"]) as srv:
        args, src, cp, _rejects, lines = _finished_then_unfinished(tmp_path, srv)
        cp.write_text("".join(lines[: len(lines) // 2]))
        data = bytearray(src.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 3] = b"XYZ"  # same size, other content
        src.write_bytes(bytes(data))
        capsys.readouterr()
        assert main([*args, "--resume"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert "not the file the checkpoint was made from" in err and str(src) in err
        src.write_bytes(_csv_bytes(2000) + b"S-extra,n,1,1,yes\n")  # grown: refused too
        assert main([*args, "--resume"]) == 1
        src.write_bytes(_csv_bytes(2000))  # the same file again: resumed
        assert main([*args, "--resume"]) == 0


@pytest.mark.parametrize(
    "garbage", [bytes(range(256)) * 8, b"\x00" * 100, b'{"run": 1}\n', b"not json\n"]
)
def test_a_garbage_checkpoint_is_refused_in_one_line_naming_it(tmp_path, capsys, garbage):
    """#5"""
    src, spec, cp = tmp_path / "in.csv", tmp_path / "spec.toml", tmp_path / "cp.jsonl"
    make_csv(src, 10)
    spec.write_text(PRODUCT_SPEC)
    cp.write_bytes(garbage)
    with DdbServer(tables=["t-command"]) as srv:
        code = main(_run_args(src, spec, srv.endpoint_url, "--checkpoint", str(cp), "--resume"))
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(cp) in err and "not an importer checkpoint" in err


@pytest.mark.parametrize("what", ["checkpoint", "output-dir"])
def test_a_second_live_run_on_the_same_state_is_refused(tmp_path, capsys, what):
    """#5: two live runs shared one checkpoint / --output-dir; the later overwrote both."""
    from importer.run.checkpoint import RunLock

    src, spec, cp, out = (
        tmp_path / "in.csv", tmp_path / "spec.toml", tmp_path / "cp.jsonl", tmp_path / "out"
    )  # fmt: skip
    make_csv(src, 10)
    spec.write_text(PRODUCT_SPEC)
    held = RunLock()  # what the first, live, run holds
    if what == "checkpoint":
        held.take(tmp_path / "cp.jsonl.lock", f"checkpoint {cp}")
    else:
        out.mkdir()
        held.take(out / ".importer.lock", f"output folder {out}")
    try:
        with DdbServer(tables=["t-command"]) as srv:
            code = main(
                _run_args(
                    src, spec, srv.endpoint_url, "--checkpoint", str(cp), "--output-dir",
                    str(out),
                )
            )  # fmt: skip
            assert srv.items("t-command") == {}
    finally:
        held.release()
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "in use by another run" in err
    assert (str(cp) if what == "checkpoint" else str(out)) in err


# --------------------------------------------------------------------------- 4: reports exact


def _report_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:]


def test_rejects_are_exact_after_a_kill_between_report_and_checkpoint(tmp_path):
    """#4: a kill after a batch's rejects were flushed but before (or while) its checkpoint
    line was written: the resumed batch's rejects appeared twice."""
    with DdbServer(tables=["t-command"]) as srv:
        args, _src, cp, rejects, lines = _finished_then_unfinished(tmp_path, srv, bad=3)
        expected = _report_lines(rejects)
        assert len(expected) == len(set(expected)) > 100
        # the kill: the checkpoint holds half the batches and a cut line; the rejects
        # file holds every batch's lines (flushed before their checkpoint lines)
        keep = lines[: len(lines) // 2]
        cp.write_text("".join(keep) + lines[len(keep)][:25])
        assert main([*args, "--resume"]) == 3
    got = _report_lines(rejects)
    assert sorted(got) == sorted(expected)  # none lost, none twice
    assert json.loads((tmp_path / "s.json").read_text())["rejected"] == len(expected)
    assert all(line.endswith("\n") for line in cp.read_text().splitlines(keepends=True))


def test_ctrl_c_while_a_batch_is_settled_keeps_the_accounting(tmp_path, capsys, monkeypatch):
    """#10/#4: Ctrl-C landing in the middle of settling a batch broke the row accounting
    (AssertionError, exit 1); now the run stops at the next batch boundary, exit 130."""
    import os
    import signal

    from importer.run import reports

    sent = []
    real_write = reports.CsvReport.write

    def write(self, row):
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # lands while this batch is settled
        real_write(self, row)

    monkeypatch.setattr(reports.CsvReport, "write", write)
    n = 3000
    src, spec = tmp_path / "in.csv", tmp_path / "spec.toml"
    src.write_bytes(_csv_bytes(n, 3))
    spec.write_text(PRODUCT_SPEC)
    out = tmp_path / "s.json"
    with DdbServer(tables=["t-command"]) as srv:
        args = _run_args(
            src, spec, srv.endpoint_url, "--batch-items", "100", "--workers", "1",
            "--checkpoint", str(tmp_path / "cp.jsonl"), "--summary-json", str(out),
            "--rejects", str(tmp_path / "r.csv"),
        )  # fmt: skip
        assert main(args) == 130
        err = capsys.readouterr().err
        assert "Traceback" not in err and "--resume" in err and "accounting" not in err
        data = json.loads(out.read_text())
        assert data["rows"] == data["written"] + data["rejected"] + data["failed"] < n
        monkeypatch.setattr(reports.CsvReport, "write", real_write)
        assert main([*args, "--resume"]) == 3
    data = json.loads(out.read_text())
    assert (data["rows"], data["rejected"]) == (n, n // 3)
    got = _report_lines(tmp_path / "r.csv")
    assert len(got) == len(set(got)) == n // 3


# --------------------------------------------------------------------------- 6: outputs first


@pytest.mark.parametrize("flag", ["--summary-json", "--rejects", "--failures", "--checkpoint"])
def test_an_unusable_output_path_stops_the_run_before_the_first_write(tmp_path, capsys, flag):
    """#6: an unusable --summary-json was found after the whole file was imported."""
    src, spec = tmp_path / "in.csv", tmp_path / "spec.toml"
    make_csv(src, 500, bad_every=7)
    spec.write_text(PRODUCT_SPEC)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    bad = blocker / "sub" / "out.json"  # its parent is a file: nothing can be written there
    with DdbServer(tables=["t-command"]) as srv:
        code = main(_run_args(src, spec, srv.endpoint_url, flag, str(bad)))
        assert srv.items("t-command") == {}  # nothing written before the refusal
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and str(bad) in err


# --------------------------------------------------------------------------- 10: smaller


def test_the_failures_file_carries_the_row(tmp_path):
    """#10: the failures file held line, pk and sk but not the row."""
    src, spec, failures = tmp_path / "in.csv", tmp_path / "spec.toml", tmp_path / "f.csv"
    make_csv(src, 50)
    spec.write_text(PRODUCT_SPEC)
    with DdbServer(tables=["t-command"]) as srv:
        srv.faults.set(validation_error_for=lambda item: "S-7@" in item["sk"]["S"] and "no")
        code = main(_run_args(src, spec, srv.endpoint_url, "--failures", str(failures)))
    assert code == 3
    import csv

    rows = list(csv.reader(failures.open()))
    assert rows[0] == ["line", "pk", "sk", "reason", "sku", "name", "price", "qty", "active"]
    assert rows[1][4:] == ["S-7", "Name, 7", "7.5", "7", "yes"]


# --------------------------------------------------------------------------- subprocess signals


def _subprocess_args(tmp_path: Path, srv: DdbServer, bad_every: int, n: int) -> list[str]:
    src, spec = tmp_path / "in.csv", tmp_path / "spec.toml"
    src.write_bytes(_csv_bytes(n, bad_every))
    spec.write_text(PRODUCT_SPEC)
    return _run_args(
        src, spec, srv.endpoint_url, "--batch-items", "200", "--workers", "2",
        "--checkpoint", str(tmp_path / "cp.jsonl"), "--summary-json", str(tmp_path / "s.json"),
        "--rejects", str(tmp_path / "r.csv"),
    )  # fmt: skip


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_ends_with_a_summary_and_resumes_exactly(tmp_path, signum):
    """#10 and #4: SIGTERM (a container stop) killed the run silently with 143; SIGINT on a
    run with many rejects ended exit 1, and the rejects file lost or repeated lines."""
    import os
    import signal
    import subprocess
    import sys
    import time

    n, bad = 20_000, 3
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    with DdbServer(tables=["t-command"]) as srv:
        hold = srv.faults.hold_after(3000)  # the run cannot finish before the signal
        args = _subprocess_args(tmp_path, srv, bad, n)
        cp = tmp_path / "cp.jsonl"
        proc = subprocess.Popen(
            [sys.executable, "-m", "importer.cli.main", *args],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if cp.exists() and len(cp.read_text().splitlines()) > 5:
                break
            time.sleep(0.05)
        proc.send_signal(getattr(signal, signum))
        hold.release()  # the batches in flight finish; no new one starts
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + getattr(signal, signum)
        assert "Traceback" not in err and "--resume" in err
        partial = json.loads((tmp_path / "s.json").read_text())
        assert partial["status"] == "interrupted"
        assert partial["rows"] == partial["written"] + partial["rejected"] + partial["failed"] < n
        done = subprocess.run(
            [sys.executable, "-m", "importer.cli.main", *args, "--resume"], cwd=tmp_path, env=env
        )
        assert done.returncode == 3
        assert set(srv.items("t-command")) == expected_keys(n, bad)
    got = _report_lines(tmp_path / "r.csv")
    assert len(got) == len(set(got)) == n // bad
    assert json.loads((tmp_path / "s.json").read_text())["rejected"] == n // bad


def test_a_rejects_file_over_the_size_limit_names_the_file_and_resumes_exactly(tmp_path):
    """#4/#10: `[Errno 27] File too large` named no file, and the rejects were wrong after
    resume."""
    import os
    import resource
    import subprocess
    import sys

    n, bad = 6000, 2
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    limit = 60_000  # bytes any file of the process may grow to (the rejects file gets there)

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with DdbServer(tables=["t-command"]) as srv:
        args = _subprocess_args(tmp_path, srv, bad, n)
        proc = subprocess.run(
            [sys.executable, "-m", "importer.cli.main", *args],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=small_files,
        )
        assert proc.returncode == 1
        err = proc.stderr.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert str(tmp_path / "r.csv") in err and "File too large" in err and "--resume" in err
        done = subprocess.run(
            [sys.executable, "-m", "importer.cli.main", *args, "--resume"], cwd=tmp_path, env=env
        )
        assert done.returncode == 3
        assert set(srv.items("t-command")) == expected_keys(n, bad)
    got = _report_lines(tmp_path / "r.csv")
    assert len(got) == len(set(got)) == n // bad


# --------------------------------------------------------------------------- 7: memory bounded

_PEAK = """\
import sys
from importer.cli.main import main
code = main(sys.argv[1:])
peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print("PEAK_KB", peak)
sys.exit(code)
"""


def test_a_huge_row_is_refused_as_it_streams_without_holding_it(tmp_path):
    """#7: a 200 MB line peaked at 1.8 GB (9x its size); here 48 MB, refused with the
    limit as its reason, in a process whose peak stays far below the line's size."""
    import os
    import subprocess
    import sys

    src, spec, rejects = tmp_path / "in.csv", tmp_path / "spec.toml", tmp_path / "r.csv"
    spec.write_text(PRODUCT_SPEC)
    with open(src, "wb") as fh:
        fh.write(b"sku,name,price,qty,active\nA-1,")
        block = b"x" * (1 << 20)
        for _ in range(48):
            fh.write(block)
        fh.write(b",1,1,yes\nB-2,ok,1,1,yes\n")
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, "validate", str(src), "--spec", str(spec), "--quiet",
         "--rejects", str(rejects), "--summary-json", str(tmp_path / "s.json")],
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    peak_mb = int(done.stdout.split("PEAK_KB")[1]) / 1024
    assert peak_mb < 48, f"peak RSS {peak_mb:.0f} MB for a 48 MB row"
    data = json.loads((tmp_path / "s.json").read_text())
    assert (data["rows"], data["rejected"]) == (2, 1)
    assert "record longer than 409,600 bytes" in rejects.read_text()


def test_a_duplicate_header_name_is_found_in_a_very_wide_header():
    """#7: the duplicate check was quadratic (names.count per name)."""
    import io

    from importer.input.options import CsvOptions
    from importer.input.source import CsvReader, ParsedRow, SourceError, read_header

    names = [f"c{i}" for i in range(100_000)] + ["c7"]  # 0.6 MB: the check alone (a row
    # this long stops the reader first: ItemReader reads headers of up to 10 KiB)
    data = (",".join(names) + "\n").encode()
    with pytest.raises(SourceError, match="duplicate column name 'c7'"):
        read_header(iter([ParsedRow(1, names, None)]), CsvOptions(",", "FIRST_ROW", None))
    with pytest.raises(SourceError, match="header row longer than 10,240 bytes"):
        CsvReader(io.BytesIO(data), CsvOptions(",", "FIRST_ROW", None))


# --------------------------------------------------------------------------- 3: identity rules


class _Stream:
    def __init__(self, identity, data: bytes = b""):
        self.identity = identity
        self.data = data

    def digest(self, start: int, length: int) -> str:
        import hashlib

        return hashlib.sha256(self.data[start : start + length]).hexdigest()


def _checkpoint_for(identity, truncated: bool = False):
    from importer.run.checkpoint import Checkpoint

    cp = Checkpoint(path=Path("cp.jsonl"), meta={"run_id": "r", "source": "x", "input": identity})
    cp.truncated = truncated
    return cp


def test_an_s3_object_is_known_again_by_its_etag():
    """#3: for S3 the checkpoint keeps the ETag (and size)."""
    from importer.run.checkpoint import CheckpointError

    old = {"etag": '"abc"', "size": 100}
    assert _checkpoint_for(old).check_input(_Stream(dict(old))) is False
    with pytest.raises(CheckpointError, match="not the file the checkpoint was made from"):
        _checkpoint_for(old).check_input(_Stream({"etag": '"def"', "size": 100}))
    # after a truncated object, the whole one (larger) is accepted and recorded
    assert _checkpoint_for(old, truncated=True).check_input(_Stream({"etag": '"def"', "size": 200}))


def test_a_truncated_file_is_resumed_only_into_the_same_file_made_whole(tmp_path):
    """#1/#3: after a cut download the checkpoint accepts the file that starts with the
    bytes the run read -- not any other file."""
    import os

    from importer.input.source import input_identity
    from importer.run.checkpoint import CheckpointError

    whole = os.urandom(300_000)
    cut = tmp_path / "cut"
    cut.write_bytes(whole[:200_000])
    with open(cut, "rb") as fh:
        old = input_identity(fh.fileno(), 200_000)
    new = {"size": len(whole), "head": "?", "head_len": 1, "tail": "?", "tail_at": 0}
    assert _checkpoint_for(old, truncated=True).check_input(_Stream(new, whole))
    other = whole[:150_000] + os.urandom(150_000)
    with pytest.raises(CheckpointError):
        _checkpoint_for(old, truncated=True).check_input(_Stream(new, other))
    with pytest.raises(CheckpointError):  # not truncated: only the very same file
        _checkpoint_for(old).check_input(_Stream(new, whole))
