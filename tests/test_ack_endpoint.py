"""tests/support/ack_server.c through tests/support/ack_endpoint.py: real HTTP on loopback.

The acknowledging endpoint is what client benchmarks measure against, so its
answers must be what DynamoDB clients accept (boto3, http.client, importer's
own writer) and its counts must be exact: a benchmark trusts them to prove
that every item arrived.  Without a C compiler these tests skip (fail under
IMPORTER_REQUIRE_TOOLS).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from importer.records import PreparedItem
from tests.support.ack_endpoint import AckEndpoint, AckServerUnavailable, build_ack_server
from tests.support.writers import http_writer

REGION = "us-east-1"
TARGET = "DynamoDB_20120810."
BWI_OK = b'{"UnprocessedItems":{}}'


@pytest.fixture(scope="module")
def binary() -> Path:
    try:
        return build_ack_server()
    except AckServerUnavailable as exc:
        if os.environ.get("IMPORTER_REQUIRE_TOOLS"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture
def ep(binary: Path):
    with AckEndpoint(binary=binary) as endpoint:
        yield endpoint


def _client(ep: AckEndpoint):
    return boto3.client(
        "dynamodb",
        endpoint_url=ep.endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _put(i: int) -> dict:
    return {"PutRequest": {"Item": {"pk": {"S": f"P#{i}"}, "sk": {"S": "S"}, "n": {"N": str(i)}}}}


def _bwi_body(n: int, table: str = "T", start: int = 0) -> bytes:
    return json.dumps({"RequestItems": {table: [_put(start + i) for i in range(n)]}}).encode()


def _post(conn: http.client.HTTPConnection, op: str, body: bytes) -> tuple[int, bytes]:
    conn.request(
        "POST",
        "/",
        body=body,
        headers={"X-Amz-Target": TARGET + op, "Content-Type": "application/x-amz-json-1.0"},
    )
    resp = conn.getresponse()
    return resp.status, resp.read()


# ---------------------------------------------------------------------- build


def test_build_is_cached_by_source_hash(binary: Path):
    assert os.access(binary, os.X_OK)
    mtime = binary.stat().st_mtime_ns
    assert build_ack_server() == binary  # no rebuild of an unchanged source
    assert binary.stat().st_mtime_ns == mtime


def test_no_compiler_is_one_readable_line(tmp_path, monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing to run there
    with pytest.raises(AckServerUnavailable, match="no C compiler") as info:
        build_ack_server(tmp_path)
    assert "\n" not in str(info.value)
    monkeypatch.setenv("CC", str(tmp_path / "missing-cc"))
    with pytest.raises(AckServerUnavailable, match="cannot run the C compiler"):
        build_ack_server(tmp_path)


def test_rebuilds_when_the_source_changes(tmp_path, monkeypatch):
    from tests.support import ack_endpoint

    src = tmp_path / "ack_server.c"
    src.write_bytes(ack_endpoint.SOURCE.read_bytes())
    monkeypatch.setattr(ack_endpoint, "SOURCE", src)
    first = build_ack_server(tmp_path / "cache")
    src.write_bytes(src.read_bytes() + b"\n/* edited */\n")
    second = build_ack_server(tmp_path / "cache")
    assert first != second and second.is_file()


# ---------------------------------------------------------------------- boto3


def test_each_operation_with_boto3(ep: AckEndpoint):
    client = _client(ep)
    out = client.batch_write_item(RequestItems={"bench-command": [_put(i) for i in range(25)]})
    assert out["UnprocessedItems"] == {}

    got = client.batch_get_item(
        RequestItems={
            "bench-command": {"Keys": [{"pk": {"S": "a}{"}, "sk": {"S": "b"}}]},
            "bench-data": {"Keys": [{"pk": {"S": "c"}, "sk": {"S": "d"}}], "ConsistentRead": True},
        }
    )
    assert got["Responses"] == {"bench-command": [], "bench-data": []}
    assert got["UnprocessedKeys"] == {}

    table = client.describe_table(TableName="my-table.v1")["Table"]
    assert table["TableName"] == "my-table.v1"
    assert table["TableStatus"] == "ACTIVE"
    assert {k["KeyType"]: k["AttributeName"] for k in table["KeySchema"]} == {
        "HASH": "pk",
        "RANGE": "sk",
    }
    assert {a["AttributeType"] for a in table["AttributeDefinitions"]} == {"S"}

    client.transact_write_items(
        TransactItems=[
            {
                "Put": {
                    "TableName": "T",
                    "Item": {"pk": {"S": "x"}, "sk": {"S": "y"}},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        ]
    )

    # the TTL configuration's read: an item not found
    assert "Item" not in client.get_item(TableName="M", Key={"pk": {"S": "a"}, "sk": {"S": "b"}})

    with pytest.raises(ClientError) as info:
        client.list_tables()
    assert info.value.response["Error"]["Code"] == "UnknownOperationException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    stats = ep.stats()
    assert stats["items"] == 25 + 1  # the BatchWriteItem puts and the transaction's one Put
    assert (stats["BatchWriteItem"], stats["BatchGetItem"]) == (1, 1)
    assert (stats["DescribeTable"], stats["TransactWriteItems"], stats["unknown"]) == (1, 1, 1)
    assert stats["GetItem"] == 1
    assert stats["requests"] == 6


def test_boto3_batch_writer_counts_every_item(ep: AckEndpoint):
    resource = boto3.resource(
        "dynamodb",
        endpoint_url=ep.endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with resource.Table("T").batch_writer() as bw:
        for i in range(1003):
            bw.put_item(Item={"pk": f"P#{i}", "sk": "S", "name": '{"PutRequest" in a string'})
    stats = ep.stats()
    assert stats["items"] == 1003  # the quoted text inside a value is escaped, never counted
    assert stats["BatchWriteItem"] == 41  # ceil(1003 / 25)


def test_importer_http_writer_against_it(ep: AckEndpoint):
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    writer = http_writer(
        table="bench-command",
        region=REGION,
        endpoint_url=ep.endpoint_url,
        session=session,
        workers=4,
    )
    items = [
        PreparedItem(
            i + 2,
            "PRODUCT#acme",
            f"PRODUCT#{i}@1",
            json.dumps({"pk": {"S": "PRODUCT#acme"}, "sk": {"S": f"PRODUCT#{i}@1"}}).encode(),
        )
        for i in range(260)
    ]
    try:
        out = writer.write_batch(items)
    finally:
        writer.close()
    assert out.written == 260 and not out.failures
    assert ep.stats()["items"] == 260


# ---------------------------------------------------------------------- raw HTTP


def test_keep_alive_one_connection_many_requests(ep: AckEndpoint):
    conn = http.client.HTTPConnection("127.0.0.1", ep.port, timeout=10)
    try:
        status, body = _post(conn, "BatchWriteItem", _bwi_body(25))
        sock = conn.sock
        assert (status, body) == (200, BWI_OK)  # exactly these bytes: the client's fast path
        for _ in range(9):
            assert _post(conn, "BatchWriteItem", _bwi_body(25)) == (200, BWI_OK)
        assert conn.sock is sock  # never reconnected
        status, body = _post(conn, "Nope", b"{}")
        assert status == 400
        assert json.loads(body) == {
            "__type": "com.amazonaws.dynamodb.v20120810#UnknownOperationException",
            "message": "",
        }
        status, body = _post(conn, "BatchGetItem", b"{}")
        assert status == 400 and b"ValidationException" in body
        assert _post(conn, "TransactWriteItems", b"{}") == (200, b"{}")
        assert conn.sock is sock  # errors keep the connection too
    finally:
        conn.close()
    stats = ep.stats()
    assert stats["connections"] == 1
    assert stats["items"] == 250 and stats["requests"] == 13


def _request(op: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: {TARGET}{op}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def _read_responses(sock: socket.socket, n: int) -> list[tuple[int, bytes]]:
    """Reads n Content-Length responses off a raw socket, in order."""
    data = b""
    out: list[tuple[int, bytes]] = []
    while len(out) < n:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1").split("\r\n")
            length = next(
                int(h.split(":", 1)[1]) for h in head if h.lower().startswith("content-length:")
            )
            if len(data) >= head_end + 4 + length:
                out.append((int(head[0].split()[1]), data[head_end + 4 : head_end + 4 + length]))
                data = data[head_end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(out)} responses")
        data += chunk
    return out


def test_pipelined_requests_answered_in_order(ep: AckEndpoint):
    reqs = [
        _request("BatchWriteItem", _bwi_body(3)),
        _request("DescribeTable", b'{"TableName":"first"}'),
        _request("BatchGetItem", b'{"RequestItems":{"second":{"Keys":[]}}}'),
        _request("BatchWriteItem", _bwi_body(2)),
    ]
    with socket.create_connection(("127.0.0.1", ep.port), timeout=10) as sock:
        sock.sendall(b"".join(reqs))  # all at once, before reading anything
        got = _read_responses(sock, 4)
    assert got[0] == (200, BWI_OK)
    assert json.loads(got[1][1])["Table"]["TableName"] == "first"
    assert json.loads(got[2][1])["Responses"] == {"second": []}
    assert got[3] == (200, BWI_OK)
    assert ep.stats()["items"] == 5


def test_body_arriving_in_pieces_and_big_bodies(ep: AckEndpoint):
    body = _bwi_body(25 * 40)  # ~80 kB: more than one read
    raw = _request("BatchWriteItem", body)
    with socket.create_connection(("127.0.0.1", ep.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(raw), 7001):
            sock.sendall(raw[i : i + 7001])
        assert _read_responses(sock, 1) == [(200, BWI_OK)]
    assert ep.stats()["items"] == 1000


def test_expect_100_continue(ep: AckEndpoint):
    body = _bwi_body(2)
    head = _request("BatchWriteItem", b"", "Expect: 100-continue\r\n")
    head = head.replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode())
    with socket.create_connection(("127.0.0.1", ep.port), timeout=10) as sock:
        sock.sendall(head)
        interim = sock.recv(100)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        rest = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
        data = rest + sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(BWI_OK)


def test_connection_close_and_bad_requests(ep: AckEndpoint):
    with socket.create_connection(("127.0.0.1", ep.port), timeout=10) as sock:
        sock.sendall(_request("BatchWriteItem", _bwi_body(1), "Connection: close\r\n"))
        data = b""
        while chunk := sock.recv(65536):  # the server hangs up after the answer
            data += chunk
        assert data.endswith(BWI_OK) and b"Connection: close" in data
    with socket.create_connection(("127.0.0.1", ep.port), timeout=10) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"X-Amz-Target: DynamoDB_20120810.BatchWriteItem\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 501")
    with socket.create_connection(("127.0.0.1", ep.port), timeout=10) as sock:
        sock.sendall(b"garbage\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")
    stats = ep.stats()
    assert stats["bad_http"] == 2 and stats["items"] == 1


def test_many_concurrent_connections_counts_right(ep: AckEndpoint):
    threads_n, per_thread = 64, 15
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_n)

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", ep.port, timeout=30)
        try:
            barrier.wait()
            for j in range(per_thread):
                op = "BatchGetItem" if j % 5 == 4 else "BatchWriteItem"
                if op == "BatchWriteItem":
                    status, body = _post(conn, op, _bwi_body(25, start=k * 1000 + j * 25))
                    assert (status, body) == (200, BWI_OK)
                else:
                    status, body = _post(conn, op, b'{"RequestItems":{"T":{"Keys":[]}}}')
                    assert status == 200 and json.loads(body)["Responses"] == {"T": []}
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    writes = threads_n * (per_thread - per_thread // 5)
    stats = ep.stats()
    assert stats["BatchWriteItem"] == writes
    assert stats["BatchGetItem"] == threads_n * (per_thread // 5)
    assert stats["items"] == writes * 25
    assert stats["connections"] == threads_n


def test_final_stats_written_at_sigterm(binary: Path):
    ep = AckEndpoint(binary=binary).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", ep.port, timeout=10)
        assert _post(conn, "BatchWriteItem", _bwi_body(7)) == (200, BWI_OK)
        conn.close()
        assert ep.cpu_seconds() >= 0
    finally:
        final = ep.stop()
    assert final["items"] == 7 and final["requests"] == 1
    assert ep.stats() == final  # after stop: the counts it wrote on its way out


@pytest.fixture(params=["default", "small-output-limit"])
def tight(request, binary: Path, tmp_path, monkeypatch):
    """An endpoint whose kernel send buffers are tiny: answers pile up in its own buffer.

    With a 16 kB output limit (a build with -DMAX_PENDING_OUT) it stops reading and
    resumes many times within one test.
    """
    if request.param == "small-output-limit":
        cc = os.environ.get("CC") or "cc"
        monkeypatch.setenv("CC", f"{cc} -DMAX_PENDING_OUT=16384")
        binary = build_ack_server(tmp_path)
    with AckEndpoint(binary=binary, extra_args=("--sndbuf", "4096")) as endpoint:
        yield endpoint


def _tight_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", port))
    return sock


def _describes(first: int, n: int) -> bytes:
    return b"".join(
        _request("DescribeTable", b'{"TableName":"%d"}' % i) for i in range(first, first + n)
    )


def _names(got: list[tuple[int, bytes]]) -> list[str]:
    return [json.loads(body)["Table"]["TableName"] for _, body in got]


def test_answers_owed_are_sent_after_the_client_half_closes(tight: AckEndpoint):
    n = 3000  # ~1.6 MB of answers: far more than the kernel buffers hold at the FIN
    with _tight_socket(tight.port) as sock:
        sock.sendall(_describes(0, n))
        sock.shutdown(socket.SHUT_WR)
        got = _read_responses(sock, n)
        assert sock.recv(10) == b""  # then the server closes
    assert _names(got) == [str(i) for i in range(n)]
    assert tight.stats()["DescribeTable"] == n


def test_back_pressure_a_client_that_reads_slowly(tight: AckEndpoint):
    # ~5 MB of answers to 1 MB of pipelined requests: the server stops reading while its
    # output is over its limit, then resumes; nothing is lost or reordered.
    n, step = 10000, 500
    with _tight_socket(tight.port) as sock:
        errors: list[BaseException] = []

        def send() -> None:
            try:
                for first in range(0, n, step):
                    sock.sendall(_describes(first, step))
                sock.shutdown(socket.SHUT_WR)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        got = _read_responses(sock, n)
        sender.join()
    assert not errors, errors
    assert _names(got) == [str(i) for i in range(n)]


def test_stored_items_answer_batch_get(binary: Path, tmp_path: Path):
    """--stored: every requested key held in the file is answered with its item (any
    table), every other key is not found -- a table holding an earlier import."""
    held = [
        {"pk": {"S": "T#1"}, "sk": {"S": "P#a"}, "version": {"N": "1"}, "n": {"N": "1"}},
        {"pk": {"S": "T#1"}, "sk": {"S": "P#a@1"}, "version": {"N": "1"}},
        {"pk": {"S": "T#2"}, "sk": {"S": "P#b"}, "name": {"S": "x"}},
    ]
    path = tmp_path / "stored.jsonl"
    path.write_text(
        "".join(json.dumps(it, ensure_ascii=False, separators=(",", ":")) + "\n" for it in held),
        encoding="utf-8",
    )
    with AckEndpoint(binary=binary, extra_args=("--stored", str(path))) as ep:
        client = _client(ep)
        keys = [
            {"pk": {"S": "T#1"}, "sk": {"S": "P#a"}},
            {"pk": {"S": "T#1"}, "sk": {"S": "P#a@2"}},
            {"pk": {"S": "T#2"}, "sk": {"S": "P#b"}},
        ]
        got = client.batch_get_item(
            RequestItems={
                "d": {"Keys": keys},
                "c": {"Keys": [{"pk": {"S": "T#1"}, "sk": {"S": "P#a@1"}}]},
            }
        )
    assert got["Responses"]["d"] == [held[0], held[2]]
    assert got["Responses"]["c"] == [held[1]]
    assert got["UnprocessedKeys"] == {}
