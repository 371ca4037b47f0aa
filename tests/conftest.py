"""Shared fixtures: fake AWS credentials, moto tables, spec and CSV writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)

from importer.mbc.model import TABLE_SCHEMA as KEY_SCHEMA

#: The repository's root (a child process imports `importer` from here).
ROOT = Path(__file__).resolve().parents[1]


def read_http_request(conn: Any) -> bytes | None:
    """The body of the next HTTP request on socket `conn` (None: the client hung up first).

    For the small hand-written servers of the HTTP client's tests.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += conn.recv(65536)
    return body


def http_ok(answer: bytes) -> bytes:
    """A 200 response carrying `answer` (kept alive: no Connection header)."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Default report and checkpoint paths are relative: keep them out of the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def aws() -> Iterator[None]:
    """moto's in-process AWS for the duration of one test."""
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture
def ddb_table(aws: None) -> str:
    import boto3

    boto3.client("dynamodb", region_name="us-east-1").create_table(
        TableName="test-app-master-command", **KEY_SCHEMA
    )
    return "test-app-master-command"


def scan_all(table: str, client=None) -> dict[tuple[str, str], dict]:
    """Every item of a table, keyed by (pk, sk), in DynamoDB JSON."""
    import boto3

    client = client or boto3.client("dynamodb", region_name="us-east-1")
    out: dict[tuple[str, str], dict] = {}
    for page in client.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            out[(item["pk"]["S"], item["sk"]["S"])] = item
    return out


@pytest.fixture
def write_file(tmp_path: Path):
    """Write text or bytes to a file under tmp_path and return its path."""

    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        return path

    return _write


PRODUCT_SPEC = """\
[record]
type = "PRODUCT"
tenant = "acme"
code = "{sku}"
name = "{name}"

[columns.sku]
type = "string"
required = true
pattern = "^[A-Z0-9-]+$"

[columns.name]
type = "string"
required = true

[columns.price]
type = "decimal"
min = 0

[columns.qty]
type = "integer"

[columns.active]
type = "boolean"
"""


@dataclass
class CliRun:
    """What one `importer` command did: exit code, summary JSON, and its stderr lines."""

    code: int
    summary: dict
    stderr: str
    stdout: str

    def parts(self) -> tuple[int, str, str]:
        """(exit code, stdout, stderr): what a shell user sees."""
        return self.code, self.stdout, self.stderr


#: The commands that take --summary-json (the runner asks for it, and parses it).
_SUMMARY_COMMANDS = ("run", "validate")


class Cli:
    """`importer ...` as a user runs it: in-process (`cli(...)`), or as its own process
    (`cli.child(...)`, for a server that must outlive the command that started it).

    In-process, keyword flags become options (`batch_items=10` -> `--batch-items 10`,
    `True` -> a bare flag, `None`/`False` -> left out); `run` and `validate` are asked
    for a summary JSON, returned parsed (empty when the command stopped before writing
    it).  The one way the tests run the command line.
    """

    def __init__(self, tmp_path: Path, capsys: Any) -> None:
        self.tmp_path, self.capsys = tmp_path, capsys

    def __call__(self, *argv: str | Path, **flags: Any) -> CliRun:
        from importer.cli.main import main

        args = [str(a) for a in argv]
        summary = None
        if args and args[0] in _SUMMARY_COMMANDS and "--summary-json" not in args:
            summary = flags.setdefault(
                "summary_json", self.tmp_path / f"summary-{uuid.uuid4().hex[:8]}.json"
            )
        for name, value in flags.items():
            if value is None or value is False:
                continue
            args.append("--" + name.replace("_", "-"))
            if value is not True:
                args.append(str(value))
        self.capsys.readouterr()
        code = main(args)
        out, err = self.capsys.readouterr()
        path = Path(summary) if summary is not None else None
        data = json.loads(path.read_text()) if path is not None and path.exists() else {}
        return CliRun(code, data, err, out)

    @staticmethod
    def command(*argv: str) -> list[str]:
        """The command line of `importer ARGV...` as its own process (for Popen)."""
        return [sys.executable, "-m", "importer.cli.main", *argv]

    @staticmethod
    def child(
        *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The console script as a child process, without the caller's AWS_ variables."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        base["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
        )
        return subprocess.run(
            Cli.command(*argv),
            capture_output=True,
            text=True,
            env={**base, **(env or {})},
            cwd=cwd,
            timeout=120,
        )


@pytest.fixture
def run_cli(tmp_path: Path, capsys) -> Cli:
    """Run `importer ...` (see `Cli`)."""
    return Cli(tmp_path, capsys)
