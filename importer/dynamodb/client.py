"""The DynamoDB clients: sign, pool, `post(operation, body)`.

Everything importer sends to DynamoDB -- BatchWriteItem, BatchGetItem,
TransactWriteItems, DescribeTable -- goes through `DynamoClient.post`
(`importer.dynamodb.api`), which takes a JSON-1.0 body as bytes and returns a
`Reply`, or raises `DynamoError` whose `kind` says what the caller may do about it
(`importer.dynamodb.errors`); whether to send again is `importer.dynamodb.retry`'s.

Two implementations share that surface:

* `HttpDynamoClient` (the default): bodies are signed by `importer.dynamodb.sigv4`
  (byte-identical to botocore's SigV4Auth, with what is constant per endpoint
  computed once) and POSTed over a lean HTTP/1.1 keep-alive pool of at most
  `workers` connections, because urllib3 + http.client's per-request CPU, not the
  network, bounded fifty workers.  On plain TCP a request is one call into C
  (`importer._http`): the send and the whole usual answer happen with the GIL let
  go once, on a blocking socket whose timeouts the kernel keeps; an unusual answer
  (chunked, 1xx, no Content-Length, ...) is read on by the general parser
  (`importer.dynamodb.http_exchange`), as TLS answers are.  A 200 answer is handed
  back as raw bytes: the batch writer's usual all-processed answer is never
  JSON-parsed.
* `Boto3DynamoClient`: the same calls through a boto3 client.  It is the
  reference path (`--writer boto3`) and what moto's in-process `mock_aws`
  intercepts.

The endpoint is `endpoint_url` when given, else what botocore resolves for the
session and region, so `AWS_ENDPOINT_URL_DYNAMODB` and `AWS_ENDPOINT_URL` are
honoured exactly as every AWS SDK honours them.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from importer import _http
from importer.dynamodb.api import DynamoClient, Reply
from importer.dynamodb.credentials import load_credentials, plain_local_setup
from importer.dynamodb.errors import (
    DynamoError,
    ErrorKind,
    WriterFatalError,
    fatal_message,
    missing_table_message,
    one_line,
    safe_url,
)
from importer.dynamodb.http_exchange import (
    IDLE_CHECK_SECONDS,
    KERNEL_TIMEOUTS,
    BadResponse,
    Conn,
    NothingReceived,
    host_header,
    native_answer,
    read_response,
)
from importer.dynamodb.request_pool import DEFAULT_WORKERS
from importer.dynamodb.retry import Attempts, RetryPolicy, should_retry
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
    "HttpDynamoClient",
    "check_command_table",
    "describe_table",
    "resolve_endpoint",
]

TARGET_PREFIX = "DynamoDB_20120810."
#: BatchWriteItem's usual answer: every item processed (compared as bytes, never parsed).
ALL_PROCESSED = b'{"UnprocessedItems":{}}'
_CONTENT_TYPE = "application/x-amz-json-1.0"
_USER_AGENT = "importer/1.0"


def resolve_endpoint(session: Any, region: str, endpoint_url: str | None) -> str:
    """`endpoint_url`, else botocore's choice (which reads AWS_ENDPOINT_URL[_DYNAMODB])."""
    if endpoint_url:
        return endpoint_url
    return session.client("dynamodb", region_name=region).meta.endpoint_url


class HttpDynamoClient(DynamoClient):
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
        workers: int = DEFAULT_WORKERS,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.region = region
        self.workers = workers
        local = None if session is not None else plain_local_setup(endpoint_url)
        if local is not None:
            creds, endpoint_url = local
        else:
            import boto3

            session = session or boto3.Session()
            creds = load_credentials(session)
            endpoint_url = resolve_endpoint(session, region, endpoint_url)
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WriterFatalError(f"bad DynamoDB endpoint URL {safe_url(endpoint_url)!r}")
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
        self._free: list[Conn] = []  # idle connections, LIFO (list.pop/append are atomic)
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
        self.sends_side_by_side = self._ssl is None and KERNEL_TIMEOUTS

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
        conns: list[tuple[int, Conn, bool]] = []  # (index, connection, new)
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
        return WriterFatalError(fatal_message(error, self.endpoint_url, self.region, table))

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

    def _connect(self) -> Conn:
        sock = socket.create_connection(self._addr, timeout=self._connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self._addr[0])
                sock.settimeout(self._read_timeout)
            elif KERNEL_TIMEOUTS:
                # a blocking socket whose timeouts the kernel keeps: Python's own timeout
                # polls before every send and receive (a syscall and a GIL hand-off each)
                sock.settimeout(None)
                whole, frac = divmod(self._read_timeout, 1.0)
                tv = struct.pack("ll", int(whole), int(frac * 1e6) or (0 if whole else 1))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
                return Conn(sock, native=True)
            else:
                sock.settimeout(self._read_timeout)
        except BaseException:
            sock.close()
            raise
        return Conn(sock)

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
        conn: Conn,
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
        conn: Conn,
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
                status, data, crc, keep_alive = native_answer(conn, answer)
        except (NothingReceived, BrokenPipeError, ConnectionResetError) as exc:
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
        except (OSError, ValueError, BadResponse) as exc:
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

    def _pooled(self) -> Conn | None:
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
            if now - conn.idle_since < IDLE_CHECK_SECONDS or not conn.is_dropped():
                return conn
            conn.close()
        return None

    def _open(self) -> Conn:
        try:
            return self._connect()
        except OSError as exc:
            raise DynamoError(
                "ConnectionError",
                one_line(f"cannot connect to {safe_url(self.endpoint_url)}: {exc}"),
                status=0,
                kind=ErrorKind.CONNECT,
            ) from None

    @staticmethod
    def _send(conn: Conn, head: bytes, body: bytes) -> tuple[int, bytes, bytes | None, bool]:
        sock = conn.sock
        if conn.native:
            return native_answer(conn, _http.exchange(conn.fd, head + body, conn.unread))
        if len(body) < 65536:
            sock.sendall(head + body)
        else:
            sock.sendall(head)
            sock.sendall(body)
        status, data, crc, keep_alive, conn.unread = read_response(sock.recv, conn.unread)
        return status, data, crc, keep_alive


# --------------------------------------------------------------------------- boto3


def _snake(op: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in op).lstrip("_")


class Boto3DynamoClient(DynamoClient):
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
        workers: int = DEFAULT_WORKERS,
        client: Any = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        session = session or boto3.Session()
        self.region = region
        if client is None:
            load_credentials(session)
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
        return WriterFatalError(fatal_message(error, self.endpoint_url, self.region, table))

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
            table_doc = client.post("DescribeTable", body).doc.get("Table") or {}
            if not isinstance(table_doc, dict):
                raise DynamoError("MalformedResponse", "200 answer: Table is not a map", status=500)
            return table_doc
        except DynamoError as exc:
            if exc.code == "ResourceNotFoundException":
                return None
            if should_retry(client, attempts, exc, table):
                continue
            raise WriterFatalError(
                f"cannot describe table {table!r} at {safe_url(client.endpoint_url)}: "
                f"{exc.describe()}"
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
