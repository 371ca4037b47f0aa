"""Fast BatchWriteItem transport: spliced wire JSON, SigV4, lean keep-alive HTTP/1.1.

botocore's Python-level serializer caps a client near 10k items/s per core
(DESIGN.md §5).  This writer never builds request dicts: the body is spliced
from the `PreparedItem.wire` bytes the native core produced, signed by
`importer.sigv4` (byte-identical to botocore's `SigV4Auth`, ~10x cheaper;
credentials from the usual boto3 chain, refreshed by botocore when they
expire), and POSTed over the writer's own minimal HTTP/1.1 client: at most one
keep-alive connection per worker, TCP_NODELAY, TLS via `ssl` with botocore's CA
bundle (urllib3 + http.client cost ~300 us CPU per request, this ~40 us).  A
urllib3 pool (`_pool`) is still built for `lookup.HttpTransport`'s reads.

Semantics (DESIGN.md §4.3), per `write_batch(items)` call:

* requests hold <= 25 items and <= 16 MB, never two items with the same key;
* `UnprocessedItems` are mapped back to their `PreparedItem` by (pk, sk) and
  exactly those are resent, with full-jitter exponential backoff;
* throttling, 5xx, timeouts and dropped connections are retried the same way,
  bounded by `RetryPolicy.max_attempts` consecutive sends without progress and
  by `RetryPolicy.max_elapsed` seconds;
* any other 4xx (ValidationException, ...) is not retried: the request is
  bisected until each refused item is alone, and reported as a `Failure` with
  the service's message; the rest is stored;
* rows that exhaust their retries become `Failure`s with the last error, so
  `written + len(failures) == len(items)` always holds;
* bad or missing credentials, a missing table, or an endpoint that refuses
  every connection raise `WriterFatalError` (one line, no secrets);
* all workers share one `AdaptiveRate`: throttling (errors or unprocessed
  items) halves the send rate, success recovers it additively.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import ssl
import threading
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import urllib3
from botocore.auth import _host_from_url

from importer.records import Failure, PreparedItem, WriteOutcome
from importer.retry import (
    AdaptiveRate,
    RetryPolicy,
    WriterFatalError,
    full_jitter_delay,
    is_fatal,
    is_retryable,
    is_throttling,
)
from importer.sigv4 import SigV4Signer
from importer.writer import chunk_requests

if TYPE_CHECKING:
    import boto3

__all__ = ["HttpBatchWriter", "MAX_REQUEST_ITEMS", "MAX_REQUEST_BYTES"]

log = logging.getLogger(__name__)

MAX_REQUEST_ITEMS = 25
MAX_REQUEST_BYTES = 16 * 1024 * 1024
_TARGET = "DynamoDB_20120810.BatchWriteItem"
_CONTENT_TYPE = "application/x-amz-json-1.0"
_USER_AGENT = "importer-http-writer/1.0"
_ALL_PROCESSED = b'{"UnprocessedItems":{}}'
_PUT_OPEN = b'{"PutRequest":{"Item":'
_PUT_CLOSE = b"}}"
_PUT_SEP = _PUT_CLOSE + b"," + _PUT_OPEN
_PER_ITEM_OVERHEAD = len(_PUT_OPEN) + len(_PUT_CLOSE) + 1
#: Before the first response ever arrives, a refused connection is retried this often.
_CONNECT_ATTEMPTS_BEFORE_FIRST_RESPONSE = 3

# outcome kinds of one POST
_OK, _RETRY, _THROTTLE, _CLIENT, _FATAL, _CONNECT = range(6)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Result:
    __slots__ = ("kind", "code", "message", "unprocessed")

    def __init__(self, kind: int, code: str = "", message: str = "", unprocessed=None) -> None:
        self.kind = kind
        self.code = code
        self.message = message
        self.unprocessed = unprocessed

    def describe(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code


class _BadResponse(Exception):
    """The server's answer is not a usable HTTP/1.1 response (or it hung up)."""


class _Conn:
    """One keep-alive HTTP/1.1 connection: a socket plus its buffered reader."""

    __slots__ = ("sock", "rfile")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.rfile = sock.makefile("rb")

    def is_dropped(self) -> bool:
        """The peer closed (or sent something unasked) while the connection was idle."""
        try:
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        try:
            self.rfile.close()
        finally:
            self.sock.close()


def _read_response(rfile) -> tuple[int, bytes, bytes | None, bool]:
    """(status, body, x-amz-crc32 value, keep_alive) of one HTTP/1.x response."""
    while True:
        line = rfile.readline(65537)
        if not line:
            raise _BadResponse("RemoteDisconnected: remote end closed connection without response")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise _BadResponse(f"bad status line {line[:80]!r}")
        status = int(parts[1])
        keep_alive = parts[0] != b"HTTP/1.0"
        length: int | None = None
        chunked = False
        crc = None
        for _ in range(200):
            h = rfile.readline(65537)
            if h in (b"\r\n", b"\n"):
                break
            if not h:
                raise _BadResponse("connection closed inside the response headers")
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
        else:
            raise _BadResponse("too many response headers")
        if 100 <= status < 200:
            continue  # informational (100 Continue): the real answer follows
        break
    if chunked:
        pieces = []
        while True:
            size_line = rfile.readline(65537)
            if not size_line:
                raise _BadResponse("connection closed inside a chunked body")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            piece = rfile.read(size + 2)
            if len(piece) != size + 2:
                raise _BadResponse("IncompleteRead inside a chunked body")
            pieces.append(piece[:size])
        data = b"".join(pieces)
    elif length is not None:
        data = rfile.read(length) if length else b""
        if len(data) != length:
            raise _BadResponse(f"IncompleteRead({len(data)} bytes read, {length} expected)")
    elif status in (204, 304):
        data = b""
    else:
        data = rfile.read()
        keep_alive = False
    return status, data, crc, keep_alive


class HttpBatchWriter:
    """Thread-safe BatchWriteItem writer for one table (see module docstring).

    Extra keyword-only knobs beyond the shared interface: `rate` (a shared
    `AdaptiveRate`; one is created by default), `timeout` (read timeout per
    request, seconds), `connect_timeout`, and `key_names` (the table's key
    attribute names, default ("pk", "sk")).
    """

    def __init__(
        self,
        *,
        table: str,
        region: str,
        endpoint_url: str | None = None,
        session: boto3.Session | None = None,
        workers: int = 50,
        policy: RetryPolicy | None = None,
        rate: AdaptiveRate | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        key_names: tuple[str, str] = ("pk", "sk"),
    ) -> None:
        import boto3  # local: keeps module import cheap for tools that only type-check

        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.table = table
        self.region = region
        self.workers = workers
        self.policy = policy or RetryPolicy()
        self.rate = rate or AdaptiveRate()
        self.key_names = key_names
        session = session or boto3.Session()
        try:
            creds = session.get_credentials()
        except Exception as exc:  # botocore raises many kinds while resolving
            raise WriterFatalError(f"cannot load AWS credentials: {_one_line(exc)}") from None
        if creds is None:
            raise WriterFatalError(
                "no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, or run where an IAM role is available)"
            )
        self._creds = creds
        if endpoint_url is None:
            endpoint_url = session.client("dynamodb", region_name=region).meta.endpoint_url
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"bad endpoint_url {endpoint_url!r}")
        self.endpoint_url = endpoint_url
        self._url = f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"
        self._path = parts.path or "/"
        # Host header computed once, exactly as SigV4Auth would derive it from the URL
        # (saves it re-parsing the URL twice per request); urllib3 sends this same value.
        self._host = _host_from_url(self._url)
        self._signer = SigV4Signer(creds, region, self._host, self._path)
        pool_kw: dict[str, Any] = {
            "maxsize": workers,
            "block": True,
            "retries": False,
            "timeout": urllib3.Timeout(connect=connect_timeout, read=timeout),
        }
        if parts.scheme == "https":
            from botocore.httpsession import get_cert_path

            bundle = session._session.get_config_variable("ca_bundle")  # AWS_CA_BUNDLE
            pool_kw["ca_certs"] = bundle or get_cert_path(True)
            self._pool = urllib3.HTTPSConnectionPool(parts.hostname, parts.port or 443, **pool_kw)
        else:
            self._pool = urllib3.HTTPConnectionPool(parts.hostname, parts.port or 80, **pool_kw)
        # BatchWriteItem's own lean HTTP/1.1 keep-alive connections (urllib3 + http.client
        # cost ~300 us of CPU per request; this ~40 us).  `_pool` (urllib3) stays for
        # lookup.HttpTransport, which sends its reads through it.
        self._addr = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl.create_default_context(cafile=pool_kw["ca_certs"])
        self._connect_timeout = connect_timeout
        self._read_timeout = timeout
        self._free: list[_Conn] = []  # idle connections, LIFO (list.pop/append are atomic)
        self._slots = threading.BoundedSemaphore(workers)  # <= workers connections busy
        self._request_line = b"POST " + quote(self._path, safe="/:@!$&'()*+,;=-._~%").encode()
        self._request_line += b" HTTP/1.1\r\n"
        self._prefix = b'{"RequestItems":{' + json.dumps(table).encode() + b":[" + _PUT_OPEN
        self._suffix = _PUT_CLOSE + b"]}}"
        self._ever_connected = False
        self._fatal: WriterFatalError | None = None
        self._closed = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public

    def write_batch(self, items: Sequence[PreparedItem]) -> WriteOutcome:
        """Write `items` (unique keys); every item ends up written or in `failures`."""
        outcome = WriteOutcome()
        for chunk in self._chunks(items):
            self._send_unit(chunk, outcome)
        return outcome

    def write_many(self, batches: Iterable[Sequence[PreparedItem]]) -> WriteOutcome:
        """Convenience: run `write_batch` over `batches` on `workers` threads, merged.

        At most 2 x workers batches are in flight, so a generator of batches is
        consumed lazily.  A `WriterFatalError` from any batch is re-raised.
        """
        total = WriteOutcome()
        limit = 2 * self.workers
        with ThreadPoolExecutor(self.workers, thread_name_prefix="ddb-writer") as pool:
            running: set[Future] = set()
            try:
                for batch in batches:
                    if len(running) >= limit:
                        done, running = wait(running, return_when=FIRST_COMPLETED)
                        for f in done:
                            total.merge(f.result())
                    running.add(pool.submit(self.write_batch, batch))
                for f in running:
                    total.merge(f.result())
            except BaseException:
                for f in running:
                    f.cancel()
                raise
        return total

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._pool.close()
                while self._free:
                    self._free.pop().close()

    def __enter__(self) -> HttpBatchWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _chunks(self, items: Sequence[PreparedItem]) -> Iterable[list[PreparedItem]]:
        """Requests of <= 25 items within 16 MB of body, no key twice (shared chunker)."""
        budget = MAX_REQUEST_BYTES - len(self._prefix) - len(self._suffix)
        return chunk_requests(items, budget=budget, per_item=_PER_ITEM_OVERHEAD)

    def _body(self, items: Sequence[PreparedItem]) -> bytes:
        return self._prefix + _PUT_SEP.join([it.wire for it in items]) + self._suffix

    def _headers(self, body: bytes, target: str = _TARGET) -> dict[str, str]:
        """Signed headers for one POST (importer.sigv4: same bytes as botocore's SigV4Auth)."""
        try:
            headers = self._signer.headers(target, body)
        except Exception as exc:  # the credential provider failed to refresh
            raise WriterFatalError(f"cannot refresh AWS credentials: {_one_line(exc)}") from None
        headers["User-Agent"] = _USER_AGENT
        return headers

    def _connect(self) -> _Conn:
        sock = socket.create_connection(self._addr, timeout=self._connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self._addr[0])
            sock.settimeout(self._read_timeout)
        except BaseException:
            sock.close()
            raise
        return _Conn(sock)

    def _exchange(self, head: bytes, body: bytes) -> tuple[int, bytes, bytes | None] | _Result:
        """One request/response on a pooled connection; transport failures as a `_Result`."""
        if self._closed:
            return _Result(_RETRY, "ClosedPoolError", "the writer is closed")
        with self._slots:
            conn = None
            free = self._free
            while free:
                try:
                    conn = free.pop()
                except IndexError:
                    break
                if not conn.is_dropped():
                    break
                conn.close()
                conn = None
            if conn is None:
                try:
                    conn = self._connect()
                except TimeoutError as exc:
                    return _Result(_CONNECT, "ConnectTimeoutError", f"connect timed out: {exc}")
                except OSError as exc:
                    return _Result(
                        _CONNECT,
                        "NewConnectionError",
                        _one_line(f"Failed to establish a new connection: {exc}"),
                    )
            try:
                if len(body) < 65536:
                    conn.sock.sendall(head + body)
                else:
                    conn.sock.sendall(head)
                    conn.sock.sendall(body)
                status, data, crc, keep_alive = _read_response(conn.rfile)
            except TimeoutError as exc:
                conn.close()
                return _Result(_RETRY, "ReadTimeoutError", _one_line(f"read timed out: {exc}"))
            except (OSError, ValueError, _BadResponse) as exc:
                conn.close()
                return _Result(_RETRY, "ProtocolError", _one_line(f"{type(exc).__name__}: {exc}"))
            if keep_alive and not self._closed:
                free.append(conn)
            else:
                conn.close()
        return status, data, crc

    def _post(self, body: bytes) -> _Result:
        headers = self._headers(body)
        head = (
            self._request_line
            + "".join([f"{k}: {v}\r\n" for k, v in headers.items()]).encode("latin-1")
            + b"Accept-Encoding: identity\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        got = self._exchange(head, body)
        if isinstance(got, _Result):
            return got
        status, data, crc = got
        self._ever_connected = True
        if crc is not None and crc.isdigit() and zlib.crc32(data) != int(crc):
            return _Result(_RETRY, "CRC32Mismatch", "response body failed its x-amz-crc32 check")
        if status == 200:
            if data == _ALL_PROCESSED:  # the usual answer: nothing to parse
                return _Result(_OK)
            try:
                doc = json.loads(data) if data else {}
            except ValueError:
                return _Result(_RETRY, "MalformedResponse", "200 response body is not JSON")
            unprocessed = (doc.get("UnprocessedItems") or {}).get(self.table) or []
            return _Result(_OK, unprocessed=unprocessed)
        code, message = f"HTTP{status}", ""
        try:
            doc = json.loads(data)
            code = str(doc.get("__type") or code).rsplit("#", 1)[-1] or code
            message = str(doc.get("message") or doc.get("Message") or "")
        except (ValueError, AttributeError):
            message = _one_line(data[:200].decode("utf-8", "replace"))
        if is_fatal(code) or status in (401, 403):
            return _Result(_FATAL, code, _one_line(message))
        if is_throttling(code) or status == 429:
            return _Result(_THROTTLE, code, _one_line(message))
        if is_retryable(code) or status >= 500:
            return _Result(_RETRY, code, _one_line(message))
        return _Result(_CLIENT, code, message)

    def _raise_fatal(self, err: WriterFatalError) -> None:
        self._fatal = err
        raise err

    def _fatal_for(self, res: _Result) -> WriterFatalError:
        if res.code == "ResourceNotFoundException":
            return WriterFatalError(
                f"DynamoDB table {self.table!r} not found at {self.endpoint_url} "
                f"(region {self.region}): {res.message}"
            )
        return WriterFatalError(
            f"DynamoDB refused the request credentials at {self.endpoint_url} "
            f"({res.code}: {res.message or 'no message'}); check AWS_PROFILE / "
            "AWS_ACCESS_KEY_ID and the region"
        )

    def _send_unit(self, items: list[PreparedItem], outcome: WriteOutcome) -> None:
        """Send one request's worth of items until each is written or failed."""
        policy = self.policy
        pending = items
        start = policy.clock()
        stalls = 0  # consecutive sends without progress
        attempt = 0  # backoff exponent; reset when a send makes progress
        connect_only = True
        last: _Result | None = None
        while pending:
            if self._fatal is not None:
                raise self._fatal
            self.rate.acquire(len(pending))
            res = self._post(self._body(pending))
            if res.kind == _OK:
                if not res.unprocessed:
                    outcome.written += len(pending)
                    self.rate.on_success()
                    return
                left = self._match_unprocessed(pending, res.unprocessed)
                done = len(pending) - len(left)
                outcome.written += done
                self.rate.on_throttle()
                if done:
                    stalls = attempt = 0
                pending = left
                res = _Result(
                    _THROTTLE, "UnprocessedItems", f"{len(left)} item(s) returned unprocessed"
                )
                connect_only = False
            elif res.kind == _FATAL:
                self._raise_fatal(self._fatal_for(res))
            elif res.kind == _CLIENT:
                if len(pending) == 1:
                    it = pending[0]
                    outcome.failures.append(Failure(it.line, it.pk, it.sk, res.describe()))
                    return
                mid = len(pending) // 2
                self._send_unit(pending[:mid], outcome)
                self._send_unit(pending[mid:], outcome)
                return
            else:
                if res.kind == _THROTTLE:
                    self.rate.on_throttle()
                if res.kind != _CONNECT:
                    connect_only = False
            last = res
            stalls += 1
            attempt += 1
            max_attempts = policy.max_attempts
            if connect_only and not self._ever_connected:
                max_attempts = min(max_attempts, _CONNECT_ATTEMPTS_BEFORE_FIRST_RESPONSE)
            delay = full_jitter_delay(policy, attempt)
            elapsed = policy.clock() - start
            if stalls >= max_attempts or elapsed + delay > policy.max_elapsed:
                if connect_only:
                    self._raise_fatal(
                        WriterFatalError(
                            f"cannot reach DynamoDB endpoint {self.endpoint_url} after {stalls} "
                            f"attempt(s): {res.message or res.code}"
                        )
                    )
                reason = (
                    f"gave up after {stalls} attempt(s) without progress in {elapsed:.1f}s; "
                    f"last error {last.describe()}"
                )
                outcome.failures.extend(Failure(i.line, i.pk, i.sk, reason) for i in pending)
                return
            outcome.retries += 1
            log.debug("retrying %d item(s) after %s in %.3fs", len(pending), res.code, delay)
            if delay > 0:
                policy.sleep(delay)

    def _match_unprocessed(
        self, pending: list[PreparedItem], unprocessed: list[dict]
    ) -> list[PreparedItem]:
        hk, rk = self.key_names
        keys = set()
        for entry in unprocessed:
            item = (entry.get("PutRequest") or {}).get("Item") or {}
            try:
                keys.add((item[hk]["S"], item[rk]["S"]))
            except (KeyError, TypeError):
                continue
        left = [it for it in pending if (it.pk, it.sk) in keys]
        if len(left) != len(unprocessed):
            log.warning(
                "UnprocessedItems named %d item(s), %d matched this request",
                len(unprocessed),
                len(left),
            )
        return left
