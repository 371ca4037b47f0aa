"""The CLI contract end to end on moto: exit codes, summary, rejects, the table."""

from __future__ import annotations

import csv
import json
import os

import pytest

from tests.conftest import PRODUCT_SPEC, scan_all

HEADER = "sku,name,price,qty,active\n"


@pytest.fixture
def spec_path(write_file):
    return write_file("spec.toml", PRODUCT_SPEC)


def summary_of(path) -> dict:
    data = json.loads(path.read_text())
    # rows a --max-rejects stop read but did not write are counted as skipped
    settled = data["written"] + data["unchanged"] + data["rejected"] + data["failed"]
    assert data["rows"] == settled + data["skipped"]
    return data


def test_run_writes_valid_rows_and_reports_rejects(
    ddb_table, spec_path, write_file, tmp_path, run_cli
):
    src = write_file(
        "p.csv",
        HEADER + "A-1,Apple,1.50,3,yes\nbad sku,Pear,2,1,no\n"
        'B-2,"Banana, ripe",x,2,true\n' + "C-3,Cherry,,,\n",
    )
    out = tmp_path / "summary.json"
    rej = tmp_path / "rej.csv"
    result = run_cli(
        "run",
        str(src),
        "--spec",
        str(spec_path),
        "--table",
        ddb_table,
        "--writer",
        "boto3",
        "--rejects",
        str(rej),
        "--summary-json",
        str(out),
    )
    code = result.code
    assert code == 3
    data = summary_of(out)
    assert (data["rows"], data["written"], data["rejected"], data["failed"]) == (4, 2, 2, 0)
    assert set(data) >= {
        "rows",
        "written",
        "rejected",
        "failed",
        "batches",
        "seconds",
        "rows_per_second",
    }
    with open(rej, newline="", encoding="utf-8") as fh:
        rejects = list(csv.reader(fh))
    assert rejects[0] == [
        "line",
        "column",
        "value",
        "reason",
        "sku",
        "name",
        "price",
        "qty",
        "active",
    ]
    assert rejects[1][:3] == ["3", "sku", "bad sku"] and "pattern" in rejects[1][3]
    assert rejects[2][:3] == ["4", "price", "x"] and rejects[2][4:] == [
        "B-2",
        "Banana, ripe",
        "x",
        "2",
        "true",
    ]
    items = scan_all(ddb_table)
    apple = items[("PRODUCT#acme", "PRODUCT#A-1@1")]
    assert apple["attributes"]["M"] == {
        "sku": {"S": "A-1"},
        "name": {"S": "Apple"},
        "price": {"N": "1.5"},
        "qty": {"N": "3"},
        "active": {"BOOL": True},
    }
    cherry = items[("PRODUCT#acme", "PRODUCT#C-3@1")]
    assert set(cherry["attributes"]["M"]) == {"sku", "name"}  # empty optional omitted
    assert "rows 4" in result.stdout


def test_all_good_exits_zero_and_validate_writes_nothing(
    ddb_table, spec_path, write_file, tmp_path, run_cli
):
    src = write_file("p.csv", HEADER + "A-1,Apple,1,1,1\n")
    out = tmp_path / "s.json"
    assert (
        run_cli("validate", str(src), "--spec", str(spec_path), "--summary-json", str(out)).code
        == 0
    )
    data = json.loads(out.read_text())
    assert (data["rows"], data["valid"], data["written"]) == (1, 1, 0)
    assert scan_all(ddb_table) == {}
    assert (
        run_cli(
            "run",
            str(src),
            "--spec",
            str(spec_path),
            "--table",
            ddb_table,
            "--writer",
            "boto3",
            "--quiet",
        ).code
        == 0
    )
    assert len(scan_all(ddb_table)) == 1


def test_ragged_rows_are_read_as_itemreader_does_and_said(
    ddb_table, spec_path, write_file, tmp_path, run_cli
):
    """A row short of fields is padded, a long one cut (ItemReader's rule); the
    summary says how many, since such a row may be misaligned."""
    src = write_file(
        "r.csv", HEADER + "A-1,Apple,1,1\nA-2,Pear,2,2,1,extra,more\nA-3,Fig,3,3,0\nA-4,Kiwi\n"
    )
    out = tmp_path / "s.json"
    args = ("--spec", str(spec_path), "--table", ddb_table, "--writer", "boto3")
    args += ("--summary-json", str(out))
    result = run_cli("run", str(src), *args)
    assert result.code == 0
    data = summary_of(out)
    assert (data["written"], data["padded_rows"], data["truncated_rows"]) == (4, 2, 1)
    printed = result.stdout
    assert '2 rows had fewer fields than the header (the missing ones read as "")' in printed
    assert "1 row had more fields than the header (the extra ones dropped)" in printed
    item = scan_all(ddb_table)[("PRODUCT#acme", "PRODUCT#A-2@1")]
    assert item["attributes"]["M"]["active"] == {"BOOL": True}


def _generate(path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(HEADER)
        for i in range(n):
            fh.write(f"S-{i},Name {i},{i}.25,{i % 97},{'yes' if i % 2 else 'no'}\n")


def _check_items(items: dict, n: int, run_id: str) -> None:
    assert len(items) == n
    for i in range(n):
        item = items[("PRODUCT#acme", f"PRODUCT#S-{i}@1")]
        assert item["attributes"]["M"] == {
            "sku": {"S": f"S-{i}"},
            "name": {"S": f"Name {i}"},
            "price": {"N": f"{i}.25"},
            "qty": {"N": str(i % 97)},
            "active": {"BOOL": bool(i % 2)},
        }
        assert item["requestId"]["S"] == f"{run_id}#{i + 2}"
        assert item["version"] == {"N": "1"} and item["tenantCode"] == {"S": "acme"}


@pytest.mark.slow
def test_100k_rows_end_to_end_item_by_item(spec_path, tmp_path, run_cli):
    """The default path (native engine, signed HTTP writer) against a real loopback endpoint."""
    from tests.support.ddb_server import DdbServer

    n = 100_000
    src = tmp_path / "big.csv"
    _generate(src, n)
    out = tmp_path / "s.json"
    with DdbServer(tables=["big-command"]) as srv:
        code = run_cli(
            "run",
            str(src),
            "--spec",
            str(spec_path),
            "--table",
            "big-command",
            "--endpoint-url",
            srv.endpoint_url,
            "--summary-json",
            str(out),
            "--quiet",
            "--run-id",
            "big",
        ).code
        items = srv.items("big-command")
    assert code == 0
    data = summary_of(out)
    assert data["written"] == n and data["batches"] == n // 1000
    _check_items(items, n, "big")


def test_5k_rows_end_to_end_on_moto(ddb_table, spec_path, tmp_path, run_cli):
    n = 5_000
    src = tmp_path / "mid.csv"
    _generate(src, n)
    out = tmp_path / "s.json"
    code = run_cli(
        "run",
        str(src),
        "--spec",
        str(spec_path),
        "--table",
        ddb_table,
        "--writer",
        "boto3",
        "--workers",
        "4",
        "--summary-json",
        str(out),
        "--quiet",
        "--run-id",
        "mid",
    ).code
    assert code == 0
    assert summary_of(out)["written"] == n
    _check_items(scan_all(ddb_table), n, "mid")


@pytest.mark.parametrize(
    ("content", "expect_code", "expect_rows", "expect_rejected", "message"),
    [
        (b"", 1, None, None, "empty"),
        (HEADER.encode(), 0, 0, 0, None),
        (bytes(range(256)) * 40, 1, None, None, "error"),
        (HEADER.encode() + b"A-1,\xff\xfe,1,1,1\nB-2,ok,1,1,1\n", 3, 2, 1, None),
        (HEADER.encode() + b'A-1,"unbalanced,1,1,1\nB-2,ok,1,1,1\n', 3, 1, 1, None),
        (HEADER.encode() + b"A-1," + b"x" * 1_000_000 + b",1,1,1\nB-2,ok,1,1,1\n", 3, 2, 1, None),
        (b"sku,name\nA-1,x\n", 1, None, None, "spec column 'price' is not in the CSV header"),
    ],
    ids=[
        "empty",
        "header-only",
        "binary",
        "bad-utf8",
        "unbalanced-quote",
        "1MB-field",
        "missing-column",
    ],
)
def test_bad_inputs_never_crash(
    ddb_table,
    spec_path,
    write_file,
    tmp_path,
    content,
    expect_code,
    expect_rows,
    expect_rejected,
    message,
    run_cli,
):
    src = write_file("in.csv", content)
    out = tmp_path / "s.json"
    result = run_cli(
        "run",
        str(src),
        "--spec",
        str(spec_path),
        "--table",
        ddb_table,
        "--writer",
        "boto3",
        "--summary-json",
        str(out),
        "--quiet",
        "--rejects",
        str(tmp_path / "r.csv"),
    )
    code, err = result.code, result.stderr
    assert code == expect_code, err
    assert "Traceback" not in err
    if expect_code == 1:
        assert len(err.strip().splitlines()) == 1 and err.startswith("importer: error:")
        assert message in err
    else:
        data = summary_of(out)
        assert (data["rows"], data["rejected"]) == (expect_rows, expect_rejected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--spec", "missing.toml"], "spec file not found"),
        (["--table", "nope"], "table 'nope' does not exist"),
        (["--batch-bytes", "10"], "cannot hold a single row"),
    ],
)
def test_fatal_errors_are_one_line(ddb_table, spec_path, write_file, args, message, run_cli):
    src = write_file("p.csv", HEADER + "A-1,Apple,1,1,1\n")
    argv = ["run", str(src), "--spec", str(spec_path), "--table", ddb_table, "--writer", "boto3"]
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    result = run_cli(*argv)
    err = result.stderr
    assert result.code == 1
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_source_and_usage_error(spec_path, run_cli):
    result = run_cli("validate", "/nonexistent.csv", "--spec", str(spec_path))
    assert result.code == 1
    assert "no such file" in result.stderr
    with pytest.raises(SystemExit) as exc:
        run_cli("run", "x.csv")
    assert exc.value.code == 2


def test_max_rejects_stops_the_run_with_counts_that_add_up(
    ddb_table, spec_path, write_file, tmp_path, run_cli
):
    body = "".join(f"bad {i},n,1,1,1\n" for i in range(50))
    src = write_file("p.csv", HEADER + body)
    out = tmp_path / "s.json"
    code = run_cli(
        "run",
        str(src),
        "--spec",
        str(spec_path),
        "--table",
        ddb_table,
        "--writer",
        "boto3",
        "--max-rejects",
        "5",
        "--batch-items",
        "10",
        "--summary-json",
        str(out),
        "--quiet",
        "--rejects",
        str(tmp_path / "r.csv"),
    ).code
    assert code == 1
    data = summary_of(out)
    assert data["aborted"] and data["rejected"] > 5


def test_s3_source(ddb_table, spec_path, tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    import boto3

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="imports")
    s3.put_object(Bucket="imports", Key="p.csv", Body=(HEADER + "A-1,Apple,1,1,1\n").encode())
    assert (
        run_cli(
            "run",
            "s3://imports/p.csv",
            "--spec",
            str(spec_path),
            "--table",
            ddb_table,
            "--writer",
            "boto3",
            "--quiet",
        ).code
        == 0
    )
    assert len(scan_all(ddb_table)) == 1
    assert not os.path.exists("p.rejects.csv")  # no empty report for a clean run
