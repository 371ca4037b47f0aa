"""The one DynamoDB client: sign, pool, `post(operation, body)`, map errors.

Everything importer sends to DynamoDB -- BatchWriteItem, BatchGetItem,
TransactWriteItems, DescribeTable -- goes through `DynamoClient.post`, which
takes a JSON-1.0 body as bytes and returns a `Reply`, or raises `DynamoError`
whose `kind` says what the caller may do about it (`ErrorKind`).  Deciding
"retry, slow down, give up on this item, or stop the run" therefore happens in
`classify` and nowhere else.

Two implementations share that surface:

* `HttpDynamoClient` (the default): bodies are signed by `importer.dynamodb.sigv4`
  (byte-identical to botocore's SigV4Auth, ~10x cheaper) and POSTed over a lean
  HTTP/1.1 keep-alive pool of at most `workers` connections (urllib3 +
  http.client cost ~300 us CPU per request, this ~40 us on loopback, kernel
  included).  On plain TCP a request is one call into C (`importer._http`):
  the send and the whole usual answer happen with the GIL let go once, on a
  blocking socket whose timeouts the kernel keeps; an unusual answer (chunked,
  1xx, no Content-Length, ...) is read on by the general parser here, as TLS
  answers are.  A 200 answer is handed back as raw bytes: the batch writer's
  usual all-processed answer is never JSON-parsed.
* `Boto3DynamoClient`: the same calls through a boto3 client.  It is the
  reference path (`--writer boto3`) and what moto's in-process `mock_aws`
  intercepts.

The endpoint is `endpoint_url` when given, else what botocore resolves for the
session and region, so `AWS_ENDPOINT_URL_DYNAMODB` and `AWS_ENDPOINT_URL` are
honoured exactly as every AWS SDK honours them.
"""

from __future__ import annotations

import enum
import json
import os
import queue
import select
import socket
import ssl
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

from importer import _http
from importer.dynamodb.retry import Attempts, RetryPolicy, WriterFatalError
from importer.dynamodb.sigv4 import SigV4Signer, c_signing

try:
    from importer import _sign
except ImportError:  # not built: `c_signing()` says so, and requests are signed in Python
    _sign = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import boto3

__all__ = [
    "ALL_PROCESSED",
    "Boto3DynamoClient",
    "DynamoClient",
    "DynamoError",
    "ErrorKind",
    "HttpDynamoClient",
    "Reply",
    "call",
    "check_command_table",
    "classify",
    "describe_table",
    "one_line",
    "should_retry",
]

TARGET_PREFIX = "DynamoDB_20120810."
#: BatchWriteItem's usual answer: every item processed (compared as bytes, never parsed).
ALL_PROCESSED = b'{"UnprocessedItems":{}}'
_CONTENT_TYPE = "application/x-amz-json-1.0"
_USER_AGENT = "importer/1.0"


def one_line(text: Any, limit: int = 300) -> str:
    """A message squeezed onto one line of at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- errors


class ErrorKind(enum.Enum):
    """What a failed call means for the caller."""

    #: retrying cannot help and every later call would fail alike: stop the run
    FATAL = "fatal"
    #: the service asks us to slow down: retry, and tell the pacer
    THROTTLED = "throttled"
    #: a transient server or transport failure: retry
    RETRYABLE = "retryable"
    #: no connection could be opened: retry, but an endpoint never reached is fatal
    CONNECT = "connect"
    #: the request itself was refused (validation): not retried, split to find the culprit
    CLIENT = "client"


#: The service asks us to slow down.
THROTTLING_CODES: frozenset[str] = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "LimitExceededException",
    }
)
#: Server-side or transient failures.
TRANSIENT_CODES: frozenset[str] = frozenset(
    {
        "InternalServerError",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "TransactionInProgressException",
        "PriorRequestNotComplete",
        # transport failures (no answer, or an unusable one)
        "ConnectionError",
        "ReadTimeoutError",
        "ProtocolError",
        "CRC32Mismatch",
    }
)
#: Credentials, a missing table, an operation the endpoint does not implement.
FATAL_CODES: frozenset[str] = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "AccessDeniedException",
        "AccessDenied",
        "ExpiredTokenException",
        "ExpiredToken",
        "ResourceNotFoundException",
        "UnknownOperationException",
    }
)


def classify(code: str, status: int) -> ErrorKind:
    """The one place an error code (and HTTP status) becomes a decision."""
    if code in FATAL_CODES or status in (401, 403):
        return ErrorKind.FATAL
    if code in THROTTLING_CODES or status == 429:
        return ErrorKind.THROTTLED
    if code in TRANSIENT_CODES or status >= 500:
        return ErrorKind.RETRYABLE
    return ErrorKind.CLIENT


class DynamoError(Exception):
    """A DynamoDB error answer, or a transport failure (code "ConnectionError").

    `doc` is the parsed error body (for TransactionCanceledException it holds
    `CancellationReasons`); `kind` is `classify(code, status)` unless the
    transport knows better (a refused connection is `ErrorKind.CONNECT`).
    """

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        status: int = 400,
        doc: dict[str, Any] | None = None,
        kind: ErrorKind | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status
        self.doc = doc or {}
        self.kind = kind or classify(code, status)

    def describe(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code


class Reply:
    """A 200 answer: `raw` bytes when the transport has them, `doc` parsed on demand."""

    __slots__ = ("raw", "_doc")

    def __init__(self, raw: bytes | None = None, doc: dict[str, Any] | None = None) -> None:
        self.raw = raw
        self._doc = doc

    @property
    def doc(self) -> dict[str, Any]:
        if self._doc is None:
            try:
                self._doc = json.loads(self.raw) if self.raw else {}
            except ValueError:
                raise DynamoError(
                    "MalformedResponse", "200 response body is not JSON", status=500
                ) from None
        return self._doc


class DynamoClient(Protocol):
    """What writers and lookups need of DynamoDB (thread-safe).

    A client whose `sends_side_by_side` is true also has `post_many(operation,
    bodies)` (see `HttpDynamoClient`); writers and lookups use it when present.
    """

    endpoint_url: str
    region: str

    def post(self, operation: str, body: bytes) -> Reply: ...

    def answered(self) -> bool:
        """True once any call got an HTTP answer (the endpoint is reachable)."""
        ...

    def fatal(self, error: DynamoError, table: str = "") -> WriterFatalError: ...

    def close(self) -> None: ...


def missing_table_message(table: str, endpoint: str | None, region: str | None) -> str:
    """The one wording of "no such table", in every command (run, validate, plan, sync).

    A user who mistyped a name sees the same line whichever command met it first,
    naming the three things that decide which table is meant.
    """
    what = f"table {table!r}" if table else "the table"
    return f"{what} does not exist at {endpoint or 'AWS'} (region {region or 'us-east-1'})"


def unreachable_message(endpoint: str | None, region: str | None, detail: str) -> str:
    """The one wording of "nothing answers there", in every command (as for a missing table)."""
    return (
        f"cannot reach DynamoDB endpoint {endpoint or 'AWS'} (region {region or 'us-east-1'}): "
        f"{detail}"
    )


def _fatal_message(error: DynamoError, endpoint: str, region: str, table: str) -> str:
    where = f"at {endpoint} (region {region})"
    if error.code == "ResourceNotFoundException":
        return missing_table_message(table, endpoint, region)
    if error.code == "UnknownOperationException":
        op = error.doc.get("operation") or "this operation"
        return f"the DynamoDB endpoint {endpoint} does not implement {op}" + (
            " (strict mode needs TransactWriteItems: use --mode upsert)" if "Transact" in op else ""
        )
    return (
        f"DynamoDB refused the request credentials {where} "
        f"({error.code}: {error.message or 'no message'}); check AWS_PROFILE / "
        "AWS_ACCESS_KEY_ID and the region"
    )


def _credentials(session: Any) -> Any:
    try:
        creds = session.get_credentials()
    except Exception as exc:  # botocore raises many kinds while resolving
        raise WriterFatalError(f"cannot load AWS credentials: {one_line(exc)}") from None
    if creds is None:
        raise WriterFatalError(
            "no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, or run where an IAM role is available)"
        )
    return creds


class _EnvCredentials:
    """Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN)."""

    __slots__ = ("access_key", "secret_key", "token")

    def __init__(self, access_key: str, secret_key: str, token: str | None) -> None:
        self.access_key, self.secret_key, self.token = access_key, secret_key, token

    def get_frozen_credentials(self) -> _EnvCredentials:
        return self


def _plain_local_setup(endpoint_url: str | None) -> tuple[_EnvCredentials, str] | None:
    """(credentials, endpoint) read from the environment alone, for a plain-HTTP endpoint.

    A run against a local stand-in (moto, DynamoDB Local, the benchmarks'
    endpoint) with keys in the environment resolves exactly what boto3 would:
    the environment's keys come first in botocore's chain, and an endpoint in
    the environment overrides the config file.  Importing boto3 and building a
    session for it cost a quarter of a second of a short run's start.  Any
    other set-up (a profile, an expiring or partial key, https, no endpoint
    given) returns None and goes through boto3.
    """
    env = os.environ
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret or env.get("AWS_CREDENTIAL_EXPIRATION"):
        return None
    if not endpoint_url:
        if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true":
            return None
        endpoint_url = env.get("AWS_ENDPOINT_URL_DYNAMODB") or env.get("AWS_ENDPOINT_URL")
    if not endpoint_url or urlsplit(endpoint_url).scheme != "http":
        return None
    token = env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN") or None
    return _EnvCredentials(key, secret, token), endpoint_url


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


def resolve_endpoint(session: Any, region: str, endpoint_url: str | None) -> str:
    """`endpoint_url`, else botocore's choice (which reads AWS_ENDPOINT_URL[_DYNAMODB])."""
    if endpoint_url:
        return endpoint_url
    return session.client("dynamodb", region_name=region).meta.endpoint_url


# --------------------------------------------------------------------------- HTTP


#: Linux keeps send/receive timeouts on a blocking socket (SO_RCVTIMEO/SO_SNDTIMEO).
_KERNEL_TIMEOUTS = sys.platform.startswith("linux")


class _BadResponse(Exception):
    """The server's answer is not a usable HTTP/1.1 response (or it hung up)."""


class _NothingReceived(_BadResponse):
    """The peer hung up before the first byte of an answer (an idle keep-alive it closed)."""


#: A keep-alive connection idle longer than this is checked before reuse (one select).
_IDLE_CHECK_SECONDS = 1.0
_RECV_SIZE = 65536
_MAX_READ = 1 << 20
_MAX_HEAD = 256 * 1024


class _Conn:
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


class _Received:
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
                raise _BadResponse(f"ConnectionResetError: {exc}") from None
            raise _NothingReceived(f"ConnectionResetError: {exc}") from None
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
                raise _BadResponse("too many response headers")
            if not self._fill():
                if not self.got_any:
                    raise _NothingReceived(
                        "RemoteDisconnected: remote end closed connection without response"
                    )
                raise _BadResponse("connection closed inside the response headers")

    def line(self) -> bytes:
        while (end := self.data.find(b"\n", self.pos)) < 0:
            if not self._fill():
                raise _BadResponse("connection closed inside a chunked body")
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
                    raise _BadResponse(f"IncompleteRead({have} bytes read, {n} expected)")
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


def _read_response(
    recv: Callable[[int], bytes], unread: bytes = b""
) -> tuple[int, bytes, bytes | None, bool, bytes]:
    """(status, body, x-amz-crc32 value, keep_alive, bytes after the answer) of one response.

    `recv(n)` is the socket's (b"" at end of stream); `unread` is what an
    earlier read received beyond its own answer.
    """
    buf = _Received(recv, unread)
    while True:
        lines = buf.head().split(b"\n")
        status_line = lines[0].rstrip(b"\r")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise _BadResponse(f"bad status line {status_line[:80]!r}")
        if len(lines) > 201:
            raise _BadResponse("too many response headers")
        status = int(parts[1])
        keep_alive = parts[0] != b"HTTP/1.0"
        length: int | None = None
        chunked = False
        crc = None
        for h in lines[1:]:
            name, sep, value = h.partition(b":")
            if not sep:
                raise _BadResponse("malformed response header")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
                if length < 0:
                    raise _BadResponse("negative Content-Length")
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


class HttpDynamoClient:
    """Signed JSON-1.0 POSTs over at most `workers` keep-alive connections.

    `timeout` is the read timeout per request, `connect_timeout` the TCP
    connect timeout (seconds).  Credentials come from boto3's usual chain and
    are re-read by the signer once a second (botocore refreshes them).
    """

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        session: boto3.Session | None = None,
        workers: int = 50,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.region = region
        self.workers = workers
        local = None if session is not None else _plain_local_setup(endpoint_url)
        if local is not None:
            creds, endpoint_url = local
        else:
            import boto3

            session = session or boto3.Session()
            creds = _credentials(session)
            endpoint_url = resolve_endpoint(session, region, endpoint_url)
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WriterFatalError(f"bad DynamoDB endpoint URL {endpoint_url!r}")
        self.endpoint_url = endpoint_url
        path = parts.path or "/"
        url = f"{parts.scheme}://{parts.netloc}{path}"
        # the Host header exactly as SigV4Auth would derive it from the URL
        self._signer = SigV4Signer(creds, region, host_header(url), path)
        self._addr = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            from botocore.httpsession import get_cert_path

            assert session is not None  # the plain local set-up is http only
            bundle = session._session.get_config_variable("ca_bundle")  # AWS_CA_BUNDLE
            self._ssl = ssl.create_default_context(cafile=bundle or get_cert_path(True))
        self._connect_timeout = connect_timeout
        self._read_timeout = timeout
        self._free: list[_Conn] = []  # idle connections, LIFO (list.pop/append are atomic)
        # <= workers connections busy: a queue of tokens is a semaphore in C (the
        # threading one is Python code around a Condition, twice per request)
        self._slots: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(workers):
            self._slots.put(None)
        self._request_line = (
            b"POST " + quote(path, safe="/:@!$&'()*+,;=-._~%").encode() + b" HTTP/1.1\r\n"
        )
        self._answered = False
        self._closed = False
        self._lock = threading.Lock()
        #: signing in C (`_heads`), and the end of every head it signs
        self._c_signing = c_signing()
        self._head_tail = (
            b"\r\nUser-Agent: "
            + _USER_AGENT.encode()
            + b"\r\nAccept-Encoding: identity\r\nContent-Length: "
        )
        #: `post_many` sends a group in one call into C (plain TCP, kernel-kept timeouts)
        self.sends_side_by_side = self._ssl is None and _KERNEL_TIMEOUTS

    # ------------------------------------------------------------------ public

    def post(self, operation: str, body: bytes) -> Reply:
        """Send one call; a 200 answer as raw bytes, anything else as `DynamoError`."""
        head = self._heads(operation, [body])[0]
        return self._reply(operation, *self._exchange(head, body, operation))

    def post_many(self, operation: str, bodies: Sequence[bytes]) -> list[Reply | DynamoError]:
        """Several calls sent side by side, each on its own connection; per body, the
        `Reply` that `post` would return or the `DynamoError` it would raise.

        On plain TCP the whole group is sent and answered in C with the GIL let go
        once (`importer._http.exchange_many`), rather than once per call by a
        thread per call.  At most `workers` connections are busy: a group larger
        than the free ones goes in turns.  A failed credential refresh still raises.
        """
        heads = self._heads(operation, bodies)  # every call signed first
        out: list[Reply | DynamoError] = []
        if not self.sends_side_by_side or len(bodies) < 2:
            for head, body in zip(heads, bodies, strict=True):
                try:
                    out.append(self._reply(operation, *self._exchange(head, body, operation)))
                except DynamoError as exc:
                    out.append(exc)
            return out
        if self._closed:
            raise DynamoError("ConnectionError", "the client is closed", status=500)
        start, n = 0, len(bodies)
        while start < n:
            self._slots.get()  # the first slot waited for, more taken while they are free
            taken = 1
            while taken < n - start:
                try:
                    self._slots.get_nowait()
                except queue.Empty:
                    break
                taken += 1
            try:
                group = range(start, start + taken)
                out.extend(
                    self._side_by_side(
                        operation, [heads[i] for i in group], [bodies[i] for i in group]
                    )
                )
            finally:
                for _ in range(taken):
                    self._slots.put(None)
            start += taken
        return out

    def _side_by_side(
        self, operation: str, heads: list[bytes], bodies: list[bytes]
    ) -> list[Reply | DynamoError]:
        """One group of `post_many`, a slot each already taken."""
        out: list[Reply | DynamoError | None] = [None] * len(bodies)
        conns: list[tuple[int, _Conn, bool]] = []  # (index, connection, new)
        for i in range(len(bodies)):
            conn = self._pooled()
            try:
                conns.append((i, conn or self._open(), conn is None))
            except DynamoError as exc:
                out[i] = exc
        answers = _http.exchange_many(
            [(conn.fd, heads[i] + bodies[i], conn.unread) for i, conn, _ in conns],
            self._read_timeout,
        )
        for (i, conn, fresh), answer in zip(conns, answers, strict=True):
            try:
                got = self._answer_on(conn, fresh, operation, heads[i], bodies[i], answer)
                out[i] = self._reply(operation, *got)
            except DynamoError as exc:
                out[i] = exc
        return out  # type: ignore[return-value]

    def _reply(self, operation: str, status: int, data: bytes, crc: bytes | None) -> Reply:
        """`post`'s answer from an exchange's status, body and x-amz-crc32 value."""
        if crc is not None and crc.isdigit() and zlib.crc32(data) != int(crc):
            raise DynamoError(
                "CRC32Mismatch", "response body failed its x-amz-crc32 check", status=500
            )
        if status == 200:
            return Reply(raw=data)
        code, message, doc = f"HTTP{status}", "", {}
        try:
            doc = json.loads(data)
            code = str(doc.get("__type") or code).rsplit("#", 1)[-1] or code
            message = str(doc.get("message") or doc.get("Message") or "")
        except (ValueError, AttributeError):
            message = data[:200].decode("utf-8", "replace")
            doc = {}
        if code == "UnknownOperationException":
            doc = {**doc, "operation": operation}
        raise DynamoError(code, one_line(message), status=status, doc=doc)

    def answered(self) -> bool:
        return self._answered

    def fatal(self, error: DynamoError, table: str = "") -> WriterFatalError:
        return WriterFatalError(_fatal_message(error, self.endpoint_url, self.region, table))

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                while self._free:
                    self._free.pop().close()

    # ------------------------------------------------------------------ internals

    def _heads(self, operation: str, bodies: Sequence[bytes]) -> list[bytes]:
        """Each body's signed request head: in C for the whole group (`importer._sign`,
        the GIL let go while hashing) where it runs, else `_head` body by body."""
        if not self._c_signing:
            return [self._head(operation, body) for body in bodies]
        try:
            plan = self._signer.plan(TARGET_PREFIX + operation)
        except Exception as exc:  # the credential provider failed to refresh
            raise WriterFatalError(f"cannot refresh AWS credentials: {one_line(exc)}") from None
        return _sign.sign_heads(
            plan.canonical_head,
            plan.sts_head,
            plan.key,
            self._request_line + plan.headers.encode("latin-1"),
            self._head_tail,
            bodies if isinstance(bodies, list) else list(bodies),
        )

    def _head(self, operation: str, body: bytes) -> bytes:
        try:
            headers = self._signer.headers(TARGET_PREFIX + operation, body)
        except Exception as exc:  # the credential provider failed to refresh
            raise WriterFatalError(f"cannot refresh AWS credentials: {one_line(exc)}") from None
        return (
            self._request_line
            + "".join([f"{k}: {v}\r\n" for k, v in headers.items()]).encode("latin-1")
            + b"User-Agent: "
            + _USER_AGENT.encode()
            + b"\r\nAccept-Encoding: identity\r\nContent-Length: %d\r\n\r\n" % len(body)
        )

    def _connect(self) -> _Conn:
        sock = socket.create_connection(self._addr, timeout=self._connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self._addr[0])
                sock.settimeout(self._read_timeout)
            elif _KERNEL_TIMEOUTS:
                # a blocking socket whose timeouts the kernel keeps: Python's own timeout
                # polls before every send and receive (a syscall and a GIL hand-off each)
                sock.settimeout(None)
                whole, frac = divmod(self._read_timeout, 1.0)
                tv = struct.pack("ll", int(whole), int(frac * 1e6) or (0 if whole else 1))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
                return _Conn(sock, native=True)
            else:
                sock.settimeout(self._read_timeout)
        except BaseException:
            sock.close()
            raise
        return _Conn(sock)

    def _exchange(
        self, head: bytes, body: bytes, operation: str
    ) -> tuple[int, bytes, bytes | None]:
        """One request/response on a pooled connection; transport failures raise DynamoError."""
        if self._closed:
            raise DynamoError("ConnectionError", "the client is closed", status=500)
        self._slots.get()
        try:
            conn = self._pooled()
            return self._answer_on(conn or self._open(), conn is None, operation, head, body)
        finally:
            self._slots.put(None)

    def _answer_on(
        self,
        conn: _Conn,
        fresh: bool,
        operation: str,
        head: bytes,
        body: bytes,
        answer: tuple | None = None,
    ) -> tuple[int, bytes, bytes | None]:
        """`_attempt`, and once more on a new connection when a kept-alive one the server
        closed since its last answer answered nothing (so the request was not taken)."""
        got = self._attempt(conn, fresh, operation, head, body, answer)
        if got is None:
            got = self._attempt(self._open(), True, operation, head, body)
            assert got is not None  # a new connection's failure raises
        return got

    def _attempt(
        self,
        conn: _Conn,
        fresh: bool,
        operation: str,
        head: bytes,
        body: bytes,
        answer: tuple | None = None,
    ) -> tuple[int, bytes, bytes | None] | None:
        """(status, body, crc) of one exchange on `conn` -- or of its `answer` from
        `exchange_many` -- then `conn` back to the pool or closed.  None when a
        kept-alive (not `fresh`) connection turned out closed before any answer."""
        try:
            if answer is None:
                status, data, crc, keep_alive = self._send(conn, head, body)
            else:
                status, data, crc, keep_alive = _native_answer(conn, answer)
        except (_NothingReceived, BrokenPipeError, ConnectionResetError) as exc:
            conn.close()
            if fresh:  # a new connection that fails at once is the server's answer
                raise DynamoError(
                    "ProtocolError", one_line(f"{type(exc).__name__}: {exc}"), status=500
                ) from None
            return None
        except (TimeoutError, BlockingIOError) as exc:
            conn.close()
            raise DynamoError(
                "ReadTimeoutError",
                one_line(f"{operation}: read timed out: {exc}"),
                status=500,
            ) from None
        except (OSError, ValueError, _BadResponse) as exc:
            conn.close()
            raise DynamoError(
                "ProtocolError", one_line(f"{type(exc).__name__}: {exc}"), status=500
            ) from None
        self._answered = True
        if keep_alive and not self._closed:
            conn.idle_since = time.monotonic()
            self._free.append(conn)
        else:
            conn.close()
        return status, data, crc

    def _pooled(self) -> _Conn | None:
        """An idle connection the server has not closed, if there is one."""
        free = self._free
        now = time.monotonic()
        while free:
            try:
                conn = free.pop()
            except IndexError:
                return None
            # a connection used a moment ago is not checked (a select per request);
            # if the server did close it, `_exchange` sends again on a new one
            if now - conn.idle_since < _IDLE_CHECK_SECONDS or not conn.is_dropped():
                return conn
            conn.close()
        return None

    def _open(self) -> _Conn:
        try:
            return self._connect()
        except OSError as exc:
            raise DynamoError(
                "ConnectionError",
                one_line(f"cannot connect to {self.endpoint_url}: {exc}"),
                status=0,
                kind=ErrorKind.CONNECT,
            ) from None

    @staticmethod
    def _send(conn: _Conn, head: bytes, body: bytes) -> tuple[int, bytes, bytes | None, bool]:
        sock = conn.sock
        if conn.native:
            return _native_answer(conn, _http.exchange(conn.fd, head + body, conn.unread))
        if len(body) < 65536:
            sock.sendall(head + body)
        else:
            sock.sendall(head)
            sock.sendall(body)
        status, data, crc, keep_alive, conn.unread = _read_response(sock.recv, conn.unread)
        return status, data, crc, keep_alive


def _native_answer(conn: _Conn, answer: tuple) -> tuple[int, bytes, bytes | None, bool]:
    """(status, body, crc, keep_alive) from what `importer._http` returned for `conn`:
    the usual answer as it read it, else read on here by the general parser.  Errors
    are raised as the socket and `_Received` raise them, so `_attempt` maps both
    paths alike."""
    if answer[0] is not None:
        status, data, crc, keep_alive, conn.unread = answer
        return status, data, crc, keep_alive
    _, received, err = answer
    if err:
        exc = OSError(err, os.strerror(err))  # the subclass the socket's call would raise
        if isinstance(exc, ConnectionResetError):
            failed = _BadResponse if received else _NothingReceived
            raise failed(f"ConnectionResetError: {exc}") from None
        raise exc
    status, data, crc, keep_alive, conn.unread = _read_response(conn.sock.recv, received)
    return status, data, crc, keep_alive


# --------------------------------------------------------------------------- boto3


def _snake(op: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in op).lstrip("_")


class Boto3DynamoClient:
    """The same calls through a boto3 client: the reference path, and what moto intercepts.

    botocore's own retries are off so that importer's policy alone decides,
    and the pool is sized to the workers (botocore's default of 10 would
    serialise 50 workers).
    """

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        session: boto3.Session | None = None,
        workers: int = 50,
        client: Any = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        session = session or boto3.Session()
        self.region = region
        if client is None:
            _credentials(session)
            config = Config(
                max_pool_connections=max(10, workers),
                retries={"total_max_attempts": 1},
                connect_timeout=5,
                read_timeout=30,
            )
            client = session.client(
                "dynamodb", region_name=region, endpoint_url=endpoint_url, config=config
            )
        self.client = client
        self.endpoint_url = client.meta.endpoint_url
        self._answered = False

    def post(self, operation: str, body: bytes) -> Reply:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        method = getattr(self.client, _snake(operation))
        try:
            doc = method(**json.loads(body))
        except NoCredentialsError:
            raise WriterFatalError("no AWS credentials found") from None
        except ClientError as exc:
            self._answered = True
            resp = exc.response or {}
            err = resp.get("Error", {})
            status = int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400)
            code = err.get("Code", "ClientError")
            doc = dict(resp)
            if code == "UnknownOperationException":
                doc["operation"] = operation
            raise DynamoError(
                code, one_line(err.get("Message", "")), status=status, doc=doc
            ) from None
        except EndpointConnectionError as exc:
            raise DynamoError(
                "ConnectionError", one_line(exc), status=0, kind=ErrorKind.CONNECT
            ) from None
        except (ConnectionClosedError, ReadTimeoutError) as exc:
            raise DynamoError("ConnectionError", one_line(exc), status=500) from None
        except BotoCoreError as exc:
            raise DynamoError("ConnectionError", one_line(exc), status=500) from None
        self._answered = True
        return Reply(doc=doc)

    def answered(self) -> bool:
        return self._answered

    def fatal(self, error: DynamoError, table: str = "") -> WriterFatalError:
        return WriterFatalError(_fatal_message(error, self.endpoint_url, self.region, table))

    def close(self) -> None:
        self.client.close()


# --------------------------------------------------------------------------- checks


_PREFLIGHT = RetryPolicy(max_attempts=3, max_elapsed=20.0)


def describe_table(client: DynamoClient, table: str) -> dict[str, Any] | None:
    """DescribeTable's `Table`, or None when it does not exist; other errors raise fatal."""
    body = json.dumps({"TableName": table}).encode()
    attempts = Attempts(_PREFLIGHT)
    while True:
        try:
            return client.post("DescribeTable", body).doc.get("Table") or {}
        except DynamoError as exc:
            if exc.code == "ResourceNotFoundException":
                return None
            if should_retry(client, attempts, exc, table):
                continue
            raise WriterFatalError(
                f"cannot describe table {table!r} at {client.endpoint_url}: {exc.describe()}"
            ) from None


def check_command_table(client: DynamoClient, table: str) -> None:
    """Fail early, in one line, when the table cannot take command records at all."""
    desc = describe_table(client, table)
    if desc is None:
        raise WriterFatalError(missing_table_message(table, client.endpoint_url, client.region))
    keys = {k.get("KeyType"): k.get("AttributeName") for k in desc.get("KeySchema", [])}
    if keys and keys != {"HASH": "pk", "RANGE": "sk"}:
        raise WriterFatalError(
            f"table {table!r} has key schema {keys}; an MBC command table needs "
            "pk (HASH) and sk (RANGE)"
        )


#: Before any answer ever arrived, a refused connection is retried this often.
UNREACHED_ATTEMPTS = 3


def should_retry(
    client: DynamoClient, attempts: Attempts, error: DynamoError, table: str = ""
) -> bool:
    """After a failed send: raise for a fatal error, else sleep and say whether to retry.

    An endpoint that never answered gets `UNREACHED_ATTEMPTS` tries and then
    stops the run in one line; one that answered before is having a bad
    moment, and the policy's full budget applies.  CLIENT errors are the
    caller's to split, not retried here.
    """
    if error.kind is ErrorKind.FATAL:
        raise client.fatal(error, table)
    if error.kind is ErrorKind.CLIENT:
        return False
    unreached = error.kind is ErrorKind.CONNECT and not client.answered()
    if attempts.again(error, max_attempts=UNREACHED_ATTEMPTS if unreached else None):
        return True
    if unreached:
        raise WriterFatalError(
            unreachable_message(
                client.endpoint_url,
                client.region,
                f"{error.message} (after {attempts.stalls} attempt(s))",
            )
        )
    return False


def call(
    client: DynamoClient, operation: str, body: bytes, policy: RetryPolicy, *, table: str = ""
) -> tuple[Reply, int]:
    """One call under the shared retry rules: (reply, retries), or the last `DynamoError`."""
    attempts = Attempts(policy)
    while True:
        try:
            return client.post(operation, body), attempts.retries
        except DynamoError as exc:
            if not should_retry(client, attempts, exc, table):
                raise
