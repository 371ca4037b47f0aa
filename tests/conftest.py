"""Shared fixtures: fake AWS credentials, moto tables, spec and CSV writers."""

from __future__ import annotations

import json
import os
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


@pytest.fixture
def run_cli(tmp_path: Path, capsys):
    """Run `importer COMMAND SOURCE --spec SPEC --flag value ...` in-process.

    Keyword flags become options (`batch_items=10` -> `--batch-items 10`, `True` -> a
    bare flag, `None`/`False` -> left out); a summary JSON is always requested and
    returned parsed (empty when the command stopped before writing it).
    """

    def run(command: str, source: str | Path, *args: str, **flags: Any) -> CliRun:
        from importer.cli.main import main

        summary = tmp_path / f"summary-{uuid.uuid4().hex[:8]}.json"
        argv = [command, str(source), *args]
        flags.setdefault("summary_json", summary)
        for name, value in flags.items():
            if value is None or value is False:
                continue
            argv.append("--" + name.replace("_", "-"))
            if value is not True:
                argv.append(str(value))
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        data = json.loads(summary.read_text()) if summary.exists() else {}
        return CliRun(code, data, err, out)

    return run
