"""The BatchWriter over the signed-HTTP client, against the loopback DynamoDB, faults on.

Everything is seeded and no test asserts on wall-clock speed; retries sleep
through an injected no-op (or a fake clock), so the file runs in seconds.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
from typing import Any

import boto3
import pytest
import urllib3

from importer.dynamodb.errors import ErrorKind, classify
from importer.dynamodb.request_pool import Lanes
from importer.dynamodb.retry import (
    RetryPolicy,
    WriterFatalError,
    full_jitter_delay,
)
from importer.dynamodb.writer import MAX_ITEMS_PER_REQUEST as MAX_REQUEST_ITEMS
from importer.mbc.model import TABLE_SCHEMA
from importer.records import PreparedItem
from tests.conftest import http_ok, read_http_request
from tests.support.ddb_server import DdbServer
from tests.support.writers import http_writer, write_many

REGION = "us-east-1"
AKID = "testing"
SECRET = "testing-secret-DO-NOT-LOG"


def no_sleep(_seconds: float) -> None:
    pass


FAST = RetryPolicy(max_attempts=30, sleep=no_sleep)


@pytest.fixture
def session() -> boto3.Session:
    return boto3.Session(aws_access_key_id=AKID, aws_secret_access_key=SECRET, region_name=REGION)


@pytest.fixture
def srv():
    with DdbServer(tables=["T"]) as server:
        yield server


def make_writer(srv, session, **kw) -> Any:
    kw.setdefault("policy", FAST)
    return http_writer(
        table=kw.pop("table", "T"),
        region=REGION,
        endpoint_url=kw.pop("endpoint_url", srv.endpoint_url),
        session=session,
        **kw,
    )


def wire_item(i: int, **extra) -> dict:
    item = {
        "pk": {"S": f"PRODUCT#tenant{i % 37}"},
        "sk": {"S": f"PRODUCT#{i:07d}@1"},
        "code": {"S": f"{i:07d}"},
        "name": {"S": f'item "{i}" — ünïcode ✓'},
        "version": {"N": "1"},
        "attributes": {"M": {"price": {"N": str(i * 3 + 7)}, "tags": {"SS": ["a", "b"]}}},
    }
    item.update(extra)
    return item


def prepared(items: list[dict], first_line: int = 2) -> list[PreparedItem]:
    return [
        PreparedItem(
            first_line + n,
            it["pk"]["S"],
            it["sk"]["S"],
            json.dumps(it, ensure_ascii=False, separators=(",", ":")).encode(),
        )
        for n, it in enumerate(items)
    ]


def batches(items, size=1000):
    return [items[i : i + size] for i in range(0, len(items), size)]


# --------------------------------------------------------------------------- happy path


def test_requests_hold_at_most_25_items(srv, session):
    items = prepared([wire_item(i) for i in range(60)])
    with make_writer(srv, session) as w:
        out = w.write_batch(items)
    assert (out.written, out.failures, out.retries) == (60, [], 0)
    assert srv.stats()["calls.BatchWriteItem"] == 3
    assert srv.items("T") == {(it.pk, it.sk): json.loads(it.wire) for it in items}


def test_chunks_respect_16mb_and_never_repeat_a_key(srv, session):
    big = b"x" * (3 * 1024 * 1024)
    items = [PreparedItem(n, "p", f"s{n}", big) for n in range(12)]
    with make_writer(srv, session) as w:
        chunks = list(w.chunks(items))
        assert [len(c) for c in chunks] == [5, 5, 2]
        assert all(sum(len(i.wire) for i in c) < 16 * 1024 * 1024 for c in chunks)
        dup = [PreparedItem(n, "p", "same" if n in (3, 7) else f"s{n}", b"{}") for n in range(30)]
        chunks = list(w.chunks(dup))
        assert [len(c) for c in chunks] == [7, 23]
        assert sum(len(c) for c in chunks) == 30
        assert all(len(c) <= MAX_REQUEST_ITEMS for c in chunks)


# --------------------------------------------------------------------------- faults


@pytest.fixture(params=["in order", "side by side"])
def lanes(request):
    """None (a batch's requests one after another) or lanes (`importer.dynamodb.request_pool`)."""
    if request.param == "in order":
        yield None
        return
    lanes = Lanes(requests=16, batches=4)
    yield lanes
    lanes.close()


def test_10k_items_survive_throttles_unprocessed_500s_and_drops(srv, session, caplog, lanes):
    caplog.set_level(logging.DEBUG)
    expected_items = [wire_item(i) for i in range(12_000)]
    items = prepared(expected_items)
    srv.faults.set(
        seed=1234,
        throttle=0.20,
        unprocessed=0.20,
        server_error=0.05,
        drop_before=0.03,
        drop_after=0.03,
    )
    with make_writer(srv, session, workers=16, lanes=lanes) as w:
        out = write_many(w, batches(items), workers=4 if lanes else 16)
    assert out.failures == []
    assert out.written == len(items)
    assert out.retries > 0
    stored = srv.items("T")
    assert len(stored) == len(items)
    for it, want in zip(items, expected_items, strict=True):
        assert stored[(it.pk, it.sk)] == want
    stats = srv.stats()
    for fault in (
        "faults.throttle",
        "faults.unprocessed_items",
        "faults.server_error",
        "faults.drop_before",
        "faults.drop_after",
    ):
        assert stats.get(fault, 0) > 0, fault
    # drop_after means the service stored items whose response was lost: resent, idempotent
    assert stats["items.BatchWriteItem"] > len(items)
    assert SECRET not in caplog.text and "Signature=" not in caplog.text


def test_validation_errors_are_isolated_by_bisection(srv, session, lanes):
    raw = [wire_item(i) for i in range(500)]
    bad_idx = {3, 77, 78, 250, 499}
    for i in bad_idx:
        raw[i]["poison"] = {"BOOL": True}
    raw[120]["sk"] = {"S": ""}  # empty-string key: refused by the service itself
    raw[121]["blob"] = {"B": base64.b64encode(b"\0" * (401 * 1024)).decode()}  # > 400 KB
    items = prepared(raw)
    srv.faults.set(
        validation_error_for=lambda it: "poisoned attribute" if "poison" in it else None,
        throttle=0.1,
        seed=5,
    )
    with make_writer(srv, session, lanes=lanes) as w:
        out = write_many(w, batches(items, 100))
    failed = {f.line: f for f in out.failures}
    bad_lines = {items[i].line for i in bad_idx | {120, 121}}
    assert set(failed) == bad_lines
    assert out.written + len(out.failures) == len(items)
    for i in bad_idx:
        f = failed[items[i].line]
        assert (f.pk, f.sk) == (items[i].pk, items[i].sk)
        assert f.reason == "ValidationException: poisoned attribute"
    assert "empty string value" in failed[items[120].line].reason
    assert "maximum allowed size" in failed[items[121].line].reason
    stored = srv.items("T")
    assert len(stored) == len(items) - len(bad_lines)
    for n, it in enumerate(items):
        assert ((it.pk, it.sk) in stored) == (n not in bad_idx | {120, 121})


def test_exhausted_retries_become_failures_with_last_error(srv, session):
    items = prepared([wire_item(i) for i in range(40)])
    srv.faults.set(server_error=1.0)
    policy = RetryPolicy(max_attempts=3, sleep=no_sleep)
    with make_writer(srv, session, policy=policy) as w:
        out = w.write_batch(items)
    assert out.written == 0
    assert [f.line for f in out.failures] == [it.line for it in items]
    assert all("InternalServerError" in f.reason for f in out.failures)
    assert all("3 attempt" in f.reason for f in out.failures)
    assert srv.stats()["calls.BatchWriteItem"] == 2 * 3  # two requests x three attempts


def test_retries_are_bounded_by_elapsed_time(srv, session):
    now = [0.0]

    def sleep(s):
        now[0] += s

    policy = RetryPolicy(
        max_attempts=1000, base_delay=1.0, max_delay=1.0, max_elapsed=10.0,
        sleep=sleep, rng=lambda: 1.0, clock=lambda: now[0],
    )  # fmt: skip
    srv.faults.set(throttle=1.0)
    items = prepared([wire_item(i) for i in range(5)])
    with make_writer(srv, session, policy=policy) as w:
        out = w.write_batch(items)
    assert out.written == 0 and len(out.failures) == 5
    assert now[0] <= 10.0
    assert srv.stats()["calls.BatchWriteItem"] == 11  # first send + 10 one-second retries


def test_read_timeout_is_retried(srv, session):
    items = prepared([wire_item(i) for i in range(10)])
    srv.faults.set(latency=0.6)
    policy = RetryPolicy(max_attempts=2, sleep=no_sleep)
    with make_writer(srv, session, policy=policy, timeout=0.1) as w:
        # no answer for the whole retry window: the endpoint is lost -- a fatal,
        # resumable stop, not rows counted failed that were never answered
        with pytest.raises(WriterFatalError, match="lost the DynamoDB endpoint.*ReadTimeout"):
            w.write_batch(items)
    srv.faults.set(latency=0.6)
    policy = RetryPolicy(max_attempts=20, sleep=lambda s: srv.faults.set(latency=0.0))
    with make_writer(srv, session, policy=policy, timeout=0.1) as w:
        out = w.write_batch(items)  # a timeout, then an answer: retried, written
    assert out.written == 10 and not out.failures
    assert len(srv.items("T")) == 10


# --------------------------------------------------------------------------- fatal errors


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_is_fatal_and_quick(session):
    url = f"http://127.0.0.1:{_free_port()}"
    slept: list[float] = []
    # the default policy, its sleeps told rather than slept: quick is what it asks to wait
    policy = RetryPolicy(sleep=slept.append)
    w = http_writer(table="T", region=REGION, endpoint_url=url, session=session, policy=policy)
    with pytest.raises(WriterFatalError) as exc:
        w.write_batch(prepared([wire_item(i) for i in range(30)]))
    assert sum(slept) < 1.0, slept
    msg = str(exc.value)
    assert "\n" not in msg and url in msg and "cannot reach" in msg
    with pytest.raises(WriterFatalError):  # later calls fail at once too
        w.write_batch(prepared([wire_item(99)]))
    w.close()


def test_bad_credentials_are_fatal(srv, session):
    srv.access_key_id = "AKIDEXPECTED"
    with make_writer(srv, session) as w, pytest.raises(WriterFatalError) as exc:
        w.write_batch(prepared([wire_item(1)]))
    msg = str(exc.value)
    assert "UnrecognizedClientException" in msg and "\n" not in msg
    assert SECRET not in msg and "Signature" not in msg
    good = boto3.Session(aws_access_key_id="AKIDEXPECTED", aws_secret_access_key="x")
    with make_writer(srv, good) as w:
        assert w.write_batch(prepared([wire_item(1)])).written == 1


def test_missing_credentials_are_fatal(monkeypatch, tmp_path):
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(WriterFatalError, match="no AWS credentials"):
        http_writer(table="T", region=REGION, endpoint_url="http://127.0.0.1:1")


def test_missing_table_is_fatal(srv, session):
    with make_writer(srv, session, table="Nope") as w, pytest.raises(WriterFatalError) as exc:
        w.write_batch(prepared([wire_item(1)]))
    assert "table 'Nope' does not exist at " in str(exc.value)  # as every command says it


# --------------------------------------------------------------------------- retry + rate


def test_full_jitter_delay_bounds():
    p = RetryPolicy(base_delay=0.05, max_delay=5.0, rng=lambda: 1.0)
    assert [full_jitter_delay(p, a) for a in (1, 2, 3)] == [0.05, 0.1, 0.2]
    assert full_jitter_delay(p, 30) == 5.0
    assert full_jitter_delay(RetryPolicy(rng=lambda: 0.0), 5) == 0.0
    assert classify("ProvisionedThroughputExceededException", 400) is ErrorKind.THROTTLED
    assert classify("ThrottlingException", 400) is ErrorKind.THROTTLED
    assert classify("InternalServerError", 500) is ErrorKind.RETRYABLE
    assert classify("ValidationException", 400) is ErrorKind.CLIENT
    assert classify("UnknownOperationException", 400) is ErrorKind.FATAL
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_writer_paces_to_a_capacity_limited_table():
    """Against a table of fixed capacity the writer takes the table's pace and loses nothing
    (how near the pace it runs is a clock's measure: benchmarks/bench_capacity_run.py)."""
    from importer.dynamodb.pacing import Pacer

    with DdbServer(tables=["T"], write_capacity=1500) as cap:
        session = boto3.Session(
            aws_access_key_id=AKID, aws_secret_access_key=SECRET, region_name=REGION
        )
        pacer = Pacer()
        items = prepared([wire_item(i) for i in range(4500)])
        w = make_writer(cap, session, rate=pacer, workers=16)
        out = write_many(w, batches(items, 250), workers=16)
        w.close()
        assert out.written == 4500 and not out.failures
        assert len(cap.items("T")) == 4500
        assert pacer.rate is not None  # the table pushed back and the pacer took its pace


# --------------------------------------------------------------------------- moto equivalence


def _typed_for_client(value):
    ((t, v),) = value.items()
    if t == "B":
        return {"B": base64.b64decode(v)}
    if t == "BS":
        return {"BS": [base64.b64decode(x) for x in v]}
    if t == "L":
        return {"L": [_typed_for_client(x) for x in v]}
    if t == "M":
        return {"M": {k: _typed_for_client(x) for k, x in v.items()}}
    return value


def _raw_scan(url: str, table: str) -> dict:
    http = urllib3.PoolManager()
    out, start = {}, None
    while True:
        req = {"TableName": table, **({"ExclusiveStartKey": start} if start else {})}
        r = http.request(
            "POST",
            url + "/",
            body=json.dumps(req).encode(),
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": "DynamoDB_20120810.Scan",
                "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/"
                "dynamodb/aws4_request, SignedHeaders=host, Signature=0",
            },
        )
        assert r.status == 200, r.data
        doc = json.loads(r.data)
        for it in doc["Items"]:
            out[(it["pk"]["S"], it["sk"]["S"])] = it
        start = doc.get("LastEvaluatedKey")
        if not start:
            return out


def test_items_identical_to_moto_via_boto3(srv, session, monkeypatch):
    from moto.server import ThreadedMotoServer

    raw = []
    for i in range(120):
        raw.append(
            wire_item(
                i,
                flag={"BOOL": i % 2 == 0},
                nothing={"NULL": True},
                blob={"B": base64.b64encode(bytes([i % 256]) * 5).decode()},
                nums={"NS": ["1", "2.5", str(i)]},
                lst={"L": [{"S": "x"}, {"N": "-3.25"}, {"M": {"k": {"S": 'v\\"q'}}}]},
                empty={"S": ""},
                ttl={"N": str(1_700_000_000 + i)},
            )
        )
    items = prepared(raw)
    moto = ThreadedMotoServer(port=0, verbose=False)
    moto.start()
    try:
        port = moto.get_host_and_port()[1]
        moto_url = f"http://127.0.0.1:{port}"
        client = session.client("dynamodb", endpoint_url=moto_url, region_name=REGION)
        for name in ("ref", "fast"):
            client.create_table(TableName=name, **TABLE_SCHEMA)
        for chunk in batches(raw, 25):
            reqs = [
                {"PutRequest": {"Item": {k: _typed_for_client(v) for k, v in it.items()}}}
                for it in chunk
            ]
            assert client.batch_write_item(RequestItems={"ref": reqs})["UnprocessedItems"] == {}
        with make_writer(srv, session, table="fast", endpoint_url=moto_url) as w:
            assert w.write_batch(items).written == len(items)
        with make_writer(srv, session) as w:
            assert w.write_batch(items).written == len(items)
        ref = _raw_scan(moto_url, "ref")
        assert len(ref) == len(items)
        assert _raw_scan(moto_url, "fast") == ref
        assert _raw_scan(srv.endpoint_url, "T") == ref
        assert srv.items("T") == ref
    finally:
        moto.stop()


# --------------------------------------------------------------------------- signing


def test_headers_match_botocore_sigv4(srv, monkeypatch):
    import datetime

    import botocore.auth
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    now = datetime.datetime(2026, 1, 2, 3, 4, 5)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: now)
    sess = boto3.Session(
        aws_access_key_id=AKID, aws_secret_access_key=SECRET, aws_session_token="tok/en=="
    )
    body = b'{"RequestItems":{"T":[]}}'
    with make_writer(srv, sess) as w:
        signer = w.client._signer
        signer._clock = lambda: now.replace(tzinfo=datetime.UTC).timestamp() + 0.5
        got = signer.headers("DynamoDB_20120810.BatchWriteItem", body)
        req = AWSRequest(
            method="POST",
            url=srv.endpoint_url + "/",
            data=body,
            headers={
                "Host": signer.host,
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": "DynamoDB_20120810.BatchWriteItem",
            },
        )
        SigV4Auth(sess.get_credentials().get_frozen_credentials(), "dynamodb", REGION).add_auth(req)
        want = dict(req.headers.items())
        assert got == want
        # and the server accepts it end to end with the session token present
        assert w.write_batch(prepared([wire_item(1)])).written == 1


def test_credential_refresh_failure_is_fatal(srv, session):
    with make_writer(srv, session) as w:

        class Broken:
            def get_frozen_credentials(self):
                raise RuntimeError("sso token expired")

        w.client._signer.credentials = Broken()
        w.client._signer.invalidate()
        with pytest.raises(WriterFatalError, match="cannot refresh AWS credentials"):
            w.write_batch(prepared([wire_item(1)]))


def test_chunks_equal_the_plain_greedy_split(session):
    """The 25-item fast path of `_chunks` splits exactly like the item-by-item greedy loop."""
    import random

    from importer.dynamodb.writer import _PER_ITEM_OVERHEAD, MAX_REQUEST_BYTES

    url = "http://127.0.0.1:1"
    w = http_writer(table="T", region=REGION, endpoint_url=url, session=session)
    budget = MAX_REQUEST_BYTES - len(w.prefix) - len(w.suffix)

    def greedy(items):
        chunk, keys, size = [], set(), 0
        for it in items:
            key, add = (it.pk, it.sk), len(it.wire) + _PER_ITEM_OVERHEAD
            if chunk and (len(chunk) >= MAX_REQUEST_ITEMS or size + add > budget or key in keys):
                yield chunk
                chunk, keys, size = [], set(), 0
            chunk.append(it)
            keys.add(key)
            size += add
        if chunk:
            yield chunk

    rng = random.Random(7)
    for _ in range(500):
        big = rng.random() < 0.1
        nkeys = rng.choice([3, 20, 1000])
        items = [
            PreparedItem(
                n,
                "p",
                f"s{rng.randrange(nkeys)}",
                b"x" * (rng.choice([10, 1 << 20, 3 << 20]) if big else rng.randrange(1, 50)),
            )
            for n in range(rng.randrange(0, 120))
        ]
        want = [[it.line for it in c] for c in greedy(items)]
        assert [[it.line for it in c] for c in w.chunks(items)] == want
        assert [[it.line for it in c] for c in w.chunks(tuple(items))] == want
    w.close()


# --------------------------------------------------------------------------- lean HTTP/1.1


def test_read_response_variants():
    import io

    from importer.dynamodb.http_exchange import BadResponse, read_response

    def rd(raw: bytes, piece: int = 1 << 20):
        stream = io.BytesIO(raw)
        return read_response(lambda n: stream.read(min(n, piece)))[:4]

    # the same answers however the bytes arrive
    for piece in (1, 3, 7):
        raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
        assert rd(raw, piece) == (200, b"{}", None, True)

    ok = b'{"UnprocessedItems":{}}'
    assert rd(
        b"HTTP/1.1 200 OK\r\nContent-Length: 23\r\nx-amz-crc32: 7\r\n\r\n" + ok + b"junk"
    ) == (200, ok, b"7", True)
    assert rd(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nTrailer: 1\r\n\r\n"
    ) == (400, b"hello world", None, True)
    assert rd(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}") == (
        200,
        b"{}",
        None,
        False,
    )
    assert rd(b"HTTP/1.0 500 X\r\n\r\nbody until eof") == (500, b"body until eof", None, False)
    for bad in (
        b"",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nContent-Len",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
    ):
        with pytest.raises((BadResponse, ValueError)):
            rd(bad)


def test_idle_connections_closed_by_the_server_are_replaced(srv, session):
    items = prepared([wire_item(i) for i in range(50)])
    with make_writer(srv, session, workers=2) as w:
        assert w.write_batch(items[:25]).written == 25
        assert len(w.client._free) == 1
        w.client._free[0].sock.shutdown(socket.SHUT_RDWR)  # as if the server hung up while idle
        out = w.write_batch(items[25:])
        assert (out.written, out.retries, out.failures) == (25, 0, [])
    assert len(srv.items("T")) == 50


def test_at_most_workers_connections(srv, session):
    items = prepared([wire_item(i) for i in range(3000)])
    with make_writer(srv, session, workers=3) as w:
        out = write_many(w, batches(items, 100))
        assert out.written == 3000
        assert len(w.client._free) <= 3


def test_read_response_keeps_what_follows_the_answer():
    import io

    from importer.dynamodb.http_exchange import read_response

    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 204 No\r\n\r\n"
    first = read_response(io.BytesIO(raw).read)
    assert first == (200, b"{}", None, True, b"HTTP/1.1 204 No\r\n\r\n")
    assert read_response(io.BytesIO(b"").read, first[4]) == (204, b"", None, True, b"")


def test_a_kept_alive_connection_the_server_closed_after_answering_is_resent_at_once():
    """A server that answers one request per connection without saying `Connection: close`.

    The client reuses a connection it has just been answered on without
    checking it first (a select per request); when the peer turns out to have
    hung up before answering, the request goes once more on a new connection --
    not an error, not a retry.
    """
    import socket as _socket
    import threading

    from importer.dynamodb.client import HttpDynamoClient

    listener = _socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    answered = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                body = read_http_request(conn)
                if body is None:
                    continue
                answered.append(body)  # before the answer: the client may finish first
                conn.sendall(http_ok(b'{"UnprocessedItems":{}}'))

    threading.Thread(target=serve, daemon=True).start()
    client = HttpDynamoClient(
        region="us-east-1", endpoint_url=f"http://127.0.0.1:{port}", workers=1, session=None
    )
    try:
        for i in range(5):
            reply = client.post("BatchWriteItem", b'{"n":%d}' % i)
            assert reply.raw == b'{"UnprocessedItems":{}}'
    finally:
        client.close()
        listener.close()
    assert answered == [b'{"n":%d}' % i for i in range(5)]


def test_a_large_answer_in_small_reads_is_read_whole():
    """16 MB (the BatchGetItem limit) in 4 KB reads: gathered, joined once, not re-copied."""
    import io
    import time

    from importer.dynamodb.http_exchange import read_response

    body = bytes(range(256)) * (1 << 16)  # 16 MB
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body + b"next"
    stream = io.BytesIO(raw)
    started = time.process_time()
    status, data, _crc, _alive, rest = read_response(lambda n: stream.read(min(n, 4096)))
    spent = time.process_time() - started
    assert (status, data == body, rest) == (200, True, b"next")
    # re-copying the buffer on every read took 2 s of CPU here; joined once, 0.07 s
    assert spent < 0.8, spent


def test_a_batch_naming_a_key_twice_is_sent_in_order_even_with_lanes(srv, session):
    """Requests side by side could store the earlier row last: such a batch goes in order."""
    raw = [wire_item(i) for i in range(200)]
    again = [dict(wire_item(i), name={"S": f"second {i}"}) for i in range(0, 200, 7)]
    items = prepared(raw + again)
    srv.faults.set(seed=9, throttle=0.2, unprocessed=0.2)
    lanes = Lanes(requests=8, batches=1)
    try:
        with make_writer(srv, session, lanes=lanes) as w:
            out = w.write_batch(items)
    finally:
        lanes.close()
    assert out.failures == [] and out.written == len(items)
    stored = srv.items("T")
    assert len(stored) == 200
    for i in range(200):
        want = f"second {i}" if i % 7 == 0 else f'item "{i}" — ünïcode ✓'
        assert stored[(f"PRODUCT#tenant{i % 37}", f"PRODUCT#{i:07d}@1")]["name"]["S"] == want


@pytest.mark.parametrize("groups", [True, False], ids=["post_many", "threads"])
def test_lanes_send_a_batch_requests_side_by_side(srv, session, groups):
    """One batch of 1,000 items is 40 requests; with 8 lanes they overlap in time --
    sent in groups by one call (`post_many`), or by a thread per lane."""
    items = prepared([wire_item(i) for i in range(1000)])
    lanes = Lanes(requests=8, batches=1)
    srv.faults.set(latency=0.01)
    now = peak = 0
    lock = threading.Lock()
    # once armed, a request waits until two are in flight at once (an event, not the
    # endpoint's latency: a loaded machine cannot make them miss each other); a writer
    # that never overlapped them would leave the peak at 1
    armed, overlapped = threading.Event(), threading.Event()
    try:
        with make_writer(srv, session, workers=8, lanes=lanes) as w:
            assert w.client.sends_side_by_side  # the HTTP client on plain TCP (Linux)
            w.client.sends_side_by_side = groups  # the transport's: the writer does not ask
            post, post_many = w.client.post, w.client.post_many

            def in_flight(n, send, *args):
                nonlocal now, peak
                with lock:
                    now += n
                    peak = max(peak, now)
                    if now >= 2:
                        overlapped.set()
                try:
                    if armed.is_set():
                        overlapped.wait(30)
                    return send(*args)
                finally:
                    with lock:
                        now -= n

            w.client.post = lambda op, body: in_flight(1, post, op, body)
            w.client.post_many = lambda op, bodies: in_flight(len(bodies), post_many, op, bodies)
            assert w.write_batch(items[:500]).written == 500  # the first requests: one lane
            assert peak == 1
            armed.set()
            out = w.write_batch(items)
    finally:
        lanes.close()
    assert out.written == 1000 and out.failures == []
    assert 1 < peak <= 8  # measured: 10 ms away per request, every lane
    assert len(srv.items("T")) == 1000


# --------------------------------------------------------------------------- unreadable answers


@pytest.mark.parametrize(
    "body",
    [
        {"UnprocessedItems": []},  # a list, not a map
        {"UnprocessedItems": {"T": [{"PutRequest": {"Item": {}}}]}},  # an entry without keys
        {"UnprocessedItems": {"T": [{}]}},
        {"UnprocessedItems": {"T": {"not": "a list"}}},
        {"UnprocessedItems": {"Other": []}},  # a table not written to
        {},  # no UnprocessedItems at all
        [],
        None,
        "ok",
    ],
)
def test_an_unreadable_200_answer_is_not_a_write(srv, session, body):
    """Issue 30 #9: such answers counted every row as written (or crashed with
    AttributeError) though nothing was stored."""
    srv.backend.op_BatchWriteItem = lambda req, faulty: body  # answers 200, stores nothing
    items = prepared([wire_item(i) for i in range(30)])
    with make_writer(srv, session, policy=RetryPolicy(max_attempts=3, sleep=no_sleep)) as w:
        out = w.write_batch(items)
    assert out.written == 0 and len(out.failures) == 30
    assert "MalformedResponse" in out.failures[0].reason
    assert srv.items("T") == {}


def test_an_unreadable_answer_is_sent_again_until_read(srv, session):
    """The request whose answer could not be read is sent again (puts are idempotent)."""
    real = srv.backend.op_BatchWriteItem
    answers = iter([{"UnprocessedItems": []}, None])

    def flaky(req, faulty):
        out = real(req, faulty)  # stored -- but the answer says nothing readable
        return next(answers, out)

    srv.backend.op_BatchWriteItem = flaky
    items = prepared([wire_item(i) for i in range(20)])
    with make_writer(srv, session) as w:
        out = w.write_batch(items)
    assert (out.written, out.failures) == (20, [])
    assert len(srv.items("T")) == 20
