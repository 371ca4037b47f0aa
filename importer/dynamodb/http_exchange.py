"""One HTTP/1.1 answer read off a keep-alive connection: the general parser.

The usual answer (200, Content-Length, keep-alive) is read in C by ``importer._http``;
everything else -- chunked bodies, 1xx, no Content-Length, TLS -- is read here, and
:func:`native_answer` hands over to this parser with the bytes C already received.
A peer that hung up before the first byte (:class:`NothingReceived`) is told apart
from a broken answer (:class:`BadResponse`): only the first may be resent safely.
"""

from __future__ import annotations

import os
import select
import socket
import sys
from collections.abc import Callable
from urllib.parse import urlsplit

__all__ = [
    "IDLE_CHECK_SECONDS",
    "KERNEL_TIMEOUTS",
    "BadResponse",
    "Conn",
    "NothingReceived",
    "Received",
    "host_header",
    "native_answer",
    "read_response",
]


def host_header(url: str) -> str:
    """The Host header SigV4 signs for `url`: lowercase, no userinfo, default port left out."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{port}"
    return host


#: Linux keeps send/receive timeouts on a blocking socket (SO_RCVTIMEO/SO_SNDTIMEO).
KERNEL_TIMEOUTS = sys.platform.startswith("linux")


class BadResponse(Exception):
    """The server's answer is not a usable HTTP/1.1 response (or it hung up)."""


class NothingReceived(BadResponse):
    """The peer hung up before the first byte of an answer (an idle keep-alive it closed)."""


#: A keep-alive connection idle longer than this is checked before reuse (one select).
IDLE_CHECK_SECONDS = 1.0
_RECV_SIZE = 65536
_MAX_READ = 1 << 20
_MAX_HEAD = 256 * 1024


class Conn:
    """One keep-alive HTTP/1.1 connection: a socket plus what was received and not yet read."""

    __slots__ = ("sock", "unread", "idle_since", "native", "fd")

    def __init__(self, sock: socket.socket, native: bool = False) -> None:
        self.sock = sock
        self.unread = b""
        self.idle_since = 0.0
        # a plain blocking TCP socket whose timeouts the kernel keeps: its exchanges
        # go through `importer._http` on the descriptor (`_send`)
        self.native = native and type(sock) is socket.socket
        self.fd = sock.fileno()

    def is_dropped(self) -> bool:
        """The peer closed (or sent something unasked) while the connection was idle."""
        try:
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        self.sock.close()


class Received:
    """The bytes of one answer as they arrive: whole reads, parsed with `find`, not per line.

    A response usually arrives in one `recv`; reading it line by line through a
    buffered file cost a Python call (and a GIL hand-off) per header.
    """

    __slots__ = ("recv", "data", "pos", "got_any")

    def __init__(self, recv: Callable[[int], bytes], data: bytes = b"") -> None:
        self.recv = recv
        self.data = data
        self.pos = 0
        self.got_any = bool(data)

    def _chunk(self, size: int = _RECV_SIZE) -> bytes:
        """The next bytes from the peer (b"" at the end of the stream)."""
        try:
            chunk = self.recv(size)
        except ConnectionResetError as exc:
            if self.got_any:
                raise BadResponse(f"ConnectionResetError: {exc}") from None
            raise NothingReceived(f"ConnectionResetError: {exc}") from None
        if chunk:
            self.got_any = True
        return chunk

    def _fill(self) -> bool:
        """Append one read to what is buffered (for the small parts: head, chunk sizes)."""
        chunk = self._chunk()
        if not chunk:
            return False
        self.data = self.data[self.pos :] + chunk
        self.pos = 0
        return True

    def head(self) -> bytes:
        """The status line and headers, up to the blank line (consumed)."""
        while True:
            data, pos = self.data, self.pos
            crlf = data.find(b"\r\n\r\n", pos)
            lf = data.find(b"\n\n", pos)
            if crlf >= 0 and (lf < 0 or crlf < lf):
                self.pos = crlf + 4
                return data[pos:crlf]
            if lf >= 0:
                self.pos = lf + 2
                return data[pos:lf]
            if len(data) - pos > _MAX_HEAD:
                raise BadResponse("too many response headers")
            if not self._fill():
                if not self.got_any:
                    raise NothingReceived(
                        "RemoteDisconnected: remote end closed connection without response"
                    )
                raise BadResponse("connection closed inside the response headers")

    def line(self) -> bytes:
        while (end := self.data.find(b"\n", self.pos)) < 0:
            if not self._fill():
                raise BadResponse("connection closed inside a chunked body")
        out = self.data[self.pos : end + 1]
        self.pos = end + 1
        return out

    def exactly(self, n: int) -> bytes:
        need = n - (len(self.data) - self.pos)
        if need > 0:
            # a large body arrives in many reads: gathered, then joined once (appending
            # each read to the buffer copied it again and again)
            pieces = [self.data[self.pos :]]
            while need > 0:
                chunk = self._chunk(min(max(need, _RECV_SIZE), _MAX_READ))
                if not chunk:
                    have = n - need
                    raise BadResponse(f"IncompleteRead({have} bytes read, {n} expected)")
                pieces.append(chunk)
                need -= len(chunk)
            self.data, self.pos = b"".join(pieces), 0
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def to_eof(self) -> bytes:
        pieces = [self.data[self.pos :]]
        while chunk := self._chunk():
            pieces.append(chunk)
        self.data, self.pos = b"", 0
        return b"".join(pieces)

    def rest(self) -> bytes:
        return self.data[self.pos :]


def read_response(
    recv: Callable[[int], bytes], unread: bytes = b""
) -> tuple[int, bytes, bytes | None, bool, bytes]:
    """(status, body, x-amz-crc32 value, keep_alive, bytes after the answer) of one response.

    `recv(n)` is the socket's (b"" at end of stream); `unread` is what an
    earlier read received beyond its own answer.
    """
    buf = Received(recv, unread)
    while True:
        lines = buf.head().split(b"\n")
        status_line = lines[0].rstrip(b"\r")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise BadResponse(f"bad status line {status_line[:80]!r}")
        if len(lines) > 201:
            raise BadResponse("too many response headers")
        status = int(parts[1])
        keep_alive = parts[0] != b"HTTP/1.0"
        length: int | None = None
        chunked = False
        crc = None
        for h in lines[1:]:
            name, sep, value = h.partition(b":")
            if not sep:
                raise BadResponse("malformed response header")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
                if length < 0:
                    raise BadResponse("negative Content-Length")
            elif name == b"x-amz-crc32":
                crc = value.strip()
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                v = value.strip().lower()
                keep_alive = v == b"keep-alive" or (keep_alive and v != b"close")
        if 100 <= status < 200:
            continue  # informational (100 Continue): the real answer follows
        break
    if chunked:
        pieces = []
        while True:
            size = int(buf.line().split(b";", 1)[0], 16)
            if size == 0:
                while buf.line() not in (b"\r\n", b"\n"):
                    pass  # trailers
                break
            pieces.append(buf.exactly(size + 2)[:size])
        data = b"".join(pieces)
    elif length is not None:
        data = buf.exactly(length)
    elif status in (204, 304):
        data = b""
    else:
        data = buf.to_eof()
        keep_alive = False
    return status, data, crc, keep_alive, buf.rest()


def native_answer(conn: Conn, answer: tuple) -> tuple[int, bytes, bytes | None, bool]:
    """(status, body, crc, keep_alive) from what `importer._http` returned for `conn`:
    the usual answer as it read it, else read on here by the general parser.  Errors
    are raised as the socket and `Received` raise them, so `_attempt` maps both
    paths alike."""
    if answer[0] is not None:
        status, data, crc, keep_alive, conn.unread = answer
        return status, data, crc, keep_alive
    _, received, err = answer
    if err:
        exc = OSError(err, os.strerror(err))  # the subclass the socket's call would raise
        if isinstance(exc, ConnectionResetError):
            failed = BadResponse if received else NothingReceived
            raise failed(f"ConnectionResetError: {exc}") from None
        raise exc
    status, data, crc, keep_alive, conn.unread = read_response(conn.sock.recv, received)
    return status, data, crc, keep_alive
