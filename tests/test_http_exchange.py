"""`importer._http`: a request and its answer in C, one at a time or side by side.

The C reader takes only the usual answer to its end and hands anything else
to the general parser (`importer.dynamodb.http_exchange.read_response`) with the bytes it
received, so every answer -- any bytes at all -- must come out of the native
path exactly as the general parser reads it from the same stream: the same
tuple, or the same exception with the same message.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importer import _http
from importer.dynamodb import http_exchange
from importer.dynamodb.api import Reply
from importer.dynamodb.client import HttpDynamoClient
from importer.dynamodb.errors import DynamoError
from tests.support.ddb_server import DdbServer

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="kernel-kept socket timeouts (Linux)"
)

OK = b'{"UnprocessedItems":{}}'


def _blocking_pair(timeout: float = 5.0) -> tuple[socket.socket, socket.socket]:
    """A connected pair; the client end blocking, its timeouts kept by the kernel."""
    a, b = socket.socketpair()
    tv = struct.pack("ll", int(timeout), int((timeout % 1) * 1e6))
    a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    return a, b


def _general(raw: bytes, unread: bytes = b"", piece: int = 1 << 20):
    """What the general parser makes of `raw` arriving in `piece`-sized reads."""
    stream = io.BytesIO(raw)
    try:
        return http_exchange.read_response(lambda n: stream.read(min(n, piece)), unread)
    except Exception as exc:  # noqa: BLE001 - compared as type and message
        return (type(exc), str(exc))


def _native(raw: bytes, unread: bytes = b"", pieces: int = 1):
    """What the native path makes of `raw` sent by a peer (in `pieces` writes) that
    then closes; the request it read first must be the one sent."""
    a, b = _blocking_pair()
    with a, b:
        conn = http_exchange.Conn(a, native=True)
        conn.unread = unread

        def peer() -> None:
            got = b""
            while len(got) < 7:
                got += b.recv(64)
            assert got == b"REQUEST"
            step = max(1, len(raw) // pieces)
            for i in range(0, len(raw), step):
                b.sendall(raw[i : i + step])
            b.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=peer)
        t.start()
        try:
            status, data, crc, keep_alive = http_exchange.native_answer(
                conn, _http.exchange(a.fileno(), b"REQUEST", unread)
            )
            out = (status, data, crc, keep_alive, conn.unread)
        except Exception as exc:  # noqa: BLE001
            out = (type(exc), str(exc))
        t.join()
        return out


def _same(native, general) -> bool:
    """The same answer (or error); bytes after the answer are what had arrived with it,
    which depends on how the stream came in: a prefix of what followed in it."""
    if len(general) == 5 and len(native) == 5:
        return native[:4] == general[:4] and general[4].startswith(native[4])
    return native == general


USUAL = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 23\r\n\r\n" + OK,
    b"HTTP/1.1 200 OK\r\nx-amzn-RequestId: abc\r\nx-amz-crc32: 123\r\n"
    b"Content-Type: application/x-amz-json-1.0\r\nContent-Length: 23\r\n\r\n" + OK,
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\ncontent-length:  2 \r\nCONNECTION:  Keep-Alive\r\n\r\n{}tail",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200\r\nContent-Length: 3\r\nX-Amz-Crc32:  99 \r\n\r\nabc",
]
UNUSUAL = [
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.0 500 X\r\n\r\nbody until eof",
    b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nConnection: upgrade\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\n{}",
    b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nContent-Len",
    b"garbage\r\n\r\n",
    b"",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 250 + b"Content-Length: 0\r\n\r\n",
]


@pytest.mark.parametrize("raw", USUAL + UNUSUAL)
@pytest.mark.parametrize("pieces", [1, 3, 50])
def test_every_answer_reads_as_the_general_parser_reads_it(raw: bytes, pieces: int) -> None:
    assert _same(_native(raw, pieces=pieces), _general(raw))


def test_what_an_earlier_read_left_is_read_first() -> None:
    first, second = USUAL[0], USUAL[2]
    assert _same(_native(second[5:], unread=second[:5]), _general(second[5:], unread=second[:5]))
    got = _native(first + second)
    assert got[:4] == (200, OK, None, True) and got[4] == second


_head_lines = st.lists(
    st.sampled_from(
        [
            b"Content-Length: 2",
            b"content-length:2",
            b"Content-Length: 1_0",
            b"Content-Length: x",
            b"Connection: close",
            b"Connection: keep-alive",
            b"Connection: Upgrade",
            b"Transfer-Encoding: chunked",
            b"x-amz-crc32: 1",
            b"X-Other: :::",
            b"bad",
            b"",
        ]
    ),
    max_size=5,
)


@st.composite
def _answers(draw) -> bytes:
    status = draw(
        st.sampled_from(
            [
                b"HTTP/1.1 200 OK",
                b"HTTP/1.1 100 Go",
                b"HTTP/1.0 200 OK",
                b"HTTP/1.1 503 Slow",
                b"HTTP/1.1 20",
                b"HTTP/2 200",
            ]
        )
    )
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    lines = draw(_head_lines)
    body = draw(st.binary(max_size=40))
    return status + eol + eol.join(lines) + eol + eol + body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(_answers(), st.binary(max_size=300)), pieces=st.integers(1, 6))
def test_any_bytes_read_as_the_general_parser_reads_them(raw: bytes, pieces: int) -> None:
    assert _same(_native(raw, pieces=pieces), _general(raw))


# --------------------------------------------------------------------------- side by side


def test_exchange_many_answers_each_as_exchange_does_in_any_order() -> None:
    """Five sockets answered out of order, one chunked (the general parser's), one
    reset before answering, one silent past the timeout.

    The order is kept by events (each peer answers once the one before it has), not
    by sleeps; the timeout is long enough that a loaded machine still answers the
    others within it.  The silent one is the only one that waits for it: the call may
    not return before the timeout has passed."""
    timeout = 2.0
    pairs = [_blocking_pair() for _ in range(5)]
    answers = [USUAL[1], UNUSUAL[1], None, USUAL[2], "silent"]
    # answered in this order: 1, 2 (the reset), 3, then 0
    after = {1: None, 2: 1, 3: 2, 0: 3}
    answered = [threading.Event() for _ in pairs]

    def peer(i: int, b: socket.socket, answer) -> None:
        b.recv(64)
        if answer == "silent":
            return
        if after[i] is not None:
            assert answered[after[i]].wait(30)
        if answer is None:
            b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            b.close()  # a reset, nothing answered
        else:
            b.sendall(answer)
        answered[i].set()

    threads = [
        threading.Thread(target=peer, args=(i, b, ans))
        for i, ((_, b), ans) in enumerate(zip(pairs, answers, strict=True))
    ]
    for t in threads:
        t.start()
    started = time.monotonic()
    got = _http.exchange_many(
        [(a.fileno(), b"REQUEST%d" % i, b"") for i, (a, _) in enumerate(pairs)], timeout
    )
    waited = time.monotonic() - started
    for t in threads:
        t.join()
    assert waited >= timeout - 0.05  # (the clock counts whole milliseconds)
    assert got[0][:4] == (200, OK, b"123", True)
    assert got[1][0] is None and got[1][2] == 0  # the general parser reads on from here
    conn = http_exchange.Conn(pairs[1][0], native=True)
    assert http_exchange.native_answer(conn, got[1]) == (200, b"hello", None, True)
    assert got[2][0] is None and got[2][2] in (104, 0)  # ECONNRESET (or an EOF)
    assert got[3][:4] == (400, b"{}", None, False)
    assert got[4] == (None, b"", 11)  # EAGAIN: no byte for the whole timeout
    for a, b in pairs:
        a.close()
        b.close()


def test_exchange_many_sends_requests_larger_than_the_socket_buffers() -> None:
    """Two 3 MB requests: each socket takes part at a time; both arrive whole."""
    pairs = [_blocking_pair() for _ in range(2)]
    for a, _ in pairs:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    requests = [bytes([65 + i]) * (3 << 20) for i in range(2)]
    received = [b"", b""]

    def peer(i: int, b: socket.socket) -> None:
        while len(received[i]) < len(requests[i]):
            received[i] += b.recv(1 << 16)
        b.sendall(USUAL[0])

    threads = [threading.Thread(target=peer, args=(i, b)) for i, (_, b) in enumerate(pairs)]
    for t in threads:
        t.start()
    got = _http.exchange_many(
        [(a.fileno(), r, b"") for (a, _), r in zip(pairs, requests, strict=True)], 10
    )
    for t in threads:
        t.join()
    assert received == requests
    assert [g[:2] for g in got] == [(200, OK), (200, OK)]
    for a, b in pairs:
        a.close()
        b.close()


def test_a_send_to_a_closed_peer_fails_as_python_would() -> None:
    a, b = _blocking_pair()
    b.close()
    with a:
        answer = _http.exchange(a.fileno(), b"x" * 100_000, b"")
        conn = http_exchange.Conn(a, native=True)
        with pytest.raises((BrokenPipeError, http_exchange.NothingReceived)):
            http_exchange.native_answer(conn, answer)


# --------------------------------------------------------------------------- the client


def _body(table: str, i: int) -> bytes:
    item = {"pk": {"S": "T#P"}, "sk": {"S": f"P#{i}@1"}, "n": {"N": str(i)}}
    return json.dumps({"RequestItems": {table: [{"PutRequest": {"Item": item}}]}}).encode()


def test_post_many_answers_each_body_as_post_would(monkeypatch) -> None:
    """Six calls, two connections: the group goes in turns; a refused call is its
    DynamoError, in its place; every accepted item is stored."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with DdbServer(tables=["T"]) as srv:
        client = HttpDynamoClient(region="us-east-1", endpoint_url=srv.endpoint_url, workers=2)
        assert client.sends_side_by_side
        bodies = [_body("T", i) for i in range(5)] + [_body("Missing", 9)]
        bodies.insert(2, b"{not json")
        out = client.post_many("BatchWriteItem", bodies)
        single = []
        for body in bodies:
            try:
                single.append(client.post("BatchWriteItem", body))
            except DynamoError as exc:
                single.append(exc)
        client.close()
        stored = srv.items("T")
    assert len(out) == len(bodies) == 7
    kinds = [type(x) for x in out]
    assert kinds == [type(x) for x in single]
    assert [x.raw for x in out if isinstance(x, Reply)] == [
        x.raw for x in single if isinstance(x, Reply)
    ]
    assert [x.code for x in out if isinstance(x, DynamoError)] == [
        x.code for x in single if isinstance(x, DynamoError)
    ]
    assert kinds[2] is DynamoError and kinds[6] is DynamoError
    assert sorted(stored) == [("T#P", f"P#{i}@1") for i in range(5)]


def test_post_many_resends_once_on_a_kept_alive_connection_the_server_closed(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with DdbServer(tables=["T"]) as srv:
        client = HttpDynamoClient(region="us-east-1", endpoint_url=srv.endpoint_url, workers=3)
        assert all(
            isinstance(r, Reply)
            for r in client.post_many("BatchWriteItem", [_body("T", i) for i in range(3)])
        )
        assert len(client._free) == 3
        for conn in client._free:
            conn.sock.shutdown(socket.SHUT_RDWR)  # as if the server hung up while idle
        out = client.post_many("BatchWriteItem", [_body("T", i) for i in range(3, 6)])
        client.close()
        assert len(srv.items("T")) == 6
    assert all(isinstance(r, Reply) for r in out)
