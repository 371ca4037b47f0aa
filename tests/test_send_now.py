"""`_native.send_now`: a request handed to a plain socket without letting go of the GIL.

The client writes through it on plain TCP (`importer.dynamo._Conn.plain`) and
falls back to `sendall` for what the socket's buffer cannot take at once; a
request many times that buffer must still arrive whole.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ddb_server import DdbServer  # noqa: E402
from writers import http_writer  # noqa: E402

from importer import _native, dynamo  # noqa: E402
from importer.records import PreparedItem  # noqa: E402


def test_what_the_socket_takes_at_once_is_sent_and_counted() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert _native.send_now(a.fileno(), b"hello") == 5
        assert b.recv(16) == b"hello"
        assert _native.send_now(a.fileno(), b"") == 0


def test_a_full_buffer_takes_part_and_then_nothing_without_blocking() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        data = b"x" * (4 << 20)
        first = _native.send_now(a.fileno(), data)
        assert 0 < first < len(data)
        assert _native.send_now(a.fileno(), data[first:]) == 0  # full: no wait, no error


def test_a_closed_peer_raises_what_python_would() -> None:
    a, b = socket.socketpair()
    b.close()
    with a, pytest.raises(BrokenPipeError):
        for _ in range(3):  # the first send may still be taken
            _native.send_now(a.fileno(), b"x" * 1024)


def test_a_request_larger_than_the_socket_buffer_arrives_whole(monkeypatch) -> None:
    """25 items of ~300 KB: a 7 MB BatchWriteItem body, most of it after a partial
    send; the table holds every item, byte for byte."""
    calls: list[tuple[int, int]] = []
    original = _native.send_now

    def send_now(fd: int, data: bytes) -> int:
        sent = original(fd, data)
        calls.append((sent, len(data)))
        return sent

    monkeypatch.setattr(dynamo._native, "send_now", send_now)
    items = []
    for i in range(25):
        doc = {"pk": {"S": "T#P"}, "sk": {"S": f"P#{i}@1"}, "blob": {"S": chr(65 + i) * 300_000}}
        items.append(PreparedItem(i + 2, "T#P", f"P#{i}@1", json.dumps(doc).encode()))
    with (
        DdbServer(tables=["T"]) as srv,
        http_writer(table="T", endpoint_url=srv.endpoint_url) as writer,
    ):
        outcome = writer.write_batch(items)
        stored = srv.items("T")
    assert any(sent < size for sent, size in calls)  # the sendall fallback was taken
    assert outcome.written == 25 and not outcome.failures
    assert all(stored[("T#P", f"P#{i}@1")]["blob"]["S"] == chr(65 + i) * 300_000 for i in range(25))
