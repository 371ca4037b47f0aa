"""Reading before writing: DynamoDB JSON calls (signed HTTP or boto3) and BatchGetItem lookups.

BatchWriteItem cannot carry a condition, so the import modes (`importer.modes`)
read first.  This module gives them, and the strict writer, one small surface:

* a *transport* -- `call(op, body) -> dict` sends one DynamoDB JSON-1.0 request
  body (bytes, exactly as on the wire) and returns the parsed response, or raises
  `DynamoError(code, message, doc)`:

  - `HttpTransport` reuses an `HttpBatchWriter`'s credentials, SigV4 host,
    urllib3 keep-alive pool and endpoint (one pool for reads and writes);
  - `Boto3Transport` goes through a boto3 client (what moto intercepts).

* `call_with_retry(transport, op, body, policy)` -- the shared retry rules of
  `importer.retry`: throttling, 5xx and dropped connections are retried with
  full-jitter backoff, bounded in attempts and time; fatal codes (credentials,
  missing table) raise `WriterFatalError`; any other error is raised as
  `DynamoError` to the caller.

* `KeyLookup.get_many(table, keys)` -- BatchGetItem with ConsistentRead, <= 100
  distinct keys per call, `UnprocessedKeys` resent with the same backoff; returns
  `{(pk, sk): item}` (DynamoDB JSON dicts) for the keys that exist.  When keys
  stay unprocessed after every allowed attempt it raises `LookupError_` so the
  caller can fail exactly those rows rather than guess.

Reads are signed by the writer's signer (`HttpBatchWriter._headers(body, target)`)
and sent over its urllib3 pool; a public post-any-target API on the writer would
let `HttpTransport.call` shrink further.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from importer.retry import (
    RetryPolicy,
    WriterFatalError,
    full_jitter_delay,
    is_fatal,
    is_retryable,
)

__all__ = [
    "MAX_GET_KEYS",
    "Boto3Transport",
    "DynamoError",
    "HttpTransport",
    "KeyLookup",
    "LookupFailed",
    "Transport",
    "call_with_retry",
    "make_transport",
]

log = logging.getLogger(__name__)

#: BatchGetItem reads at most 100 items (and 16 MB) per call.
MAX_GET_KEYS = 100
_CONTENT_TYPE = "application/x-amz-json-1.0"
_TARGET_PREFIX = "DynamoDB_20120810."
#: Attributes the modes need from a stored record (smaller responses, fewer RCUs).
PROJECTION = ("pk", "sk", "version", "attributes", "name", "requestId", "isDeleted")


def _one_line(text: Any, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DynamoError(Exception):
    """A DynamoDB error response (or a transport failure, `code` "ConnectionError").

    `doc` is the parsed error body; for TransactionCanceledException it holds
    `CancellationReasons`.  `connect` is True when no connection could be opened.
    """

    def __init__(
        self,
        code: str,
        message: str = "",
        doc: dict | None = None,
        *,
        status: int = 400,
        connect: bool = False,
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.doc = doc or {}
        self.status = status
        self.connect = connect

    @property
    def retryable(self) -> bool:
        return (
            self.code == "ConnectionError"
            or is_retryable(self.code)
            or self.status == 429
            or self.status >= 500
        )


class LookupFailed(Exception):
    """Keys stayed unread after every allowed attempt; `keys` names them."""

    def __init__(self, message: str, keys: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.keys = list(keys)


class Transport(Protocol):
    def call(self, op: str, body: bytes) -> dict[str, Any]: ...

    def close(self) -> None: ...


class HttpTransport:
    """Signed JSON-1.0 POSTs through an `HttpBatchWriter`'s pool and credentials.

    Build it from the writer the run already has (`HttpTransport(writer)`), so
    reads and writes share one keep-alive pool of `workers` connections.
    """

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.endpoint_url = writer.endpoint_url
        self.region = writer.region

    def _headers(self, op: str, body: bytes) -> dict[str, str]:
        """Signed headers from the writer's signer (one SigV4 code path for reads and writes)."""
        headers = self.writer._headers(body, _TARGET_PREFIX + op)
        headers["User-Agent"] = "importer-lookup/1.0"
        return headers

    def call(self, op: str, body: bytes) -> dict[str, Any]:
        import zlib

        import urllib3
        from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

        w = self.writer
        headers = self._headers(op, body)
        try:
            resp = w._pool.urlopen(
                "POST",
                w._path,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                preload_content=True,
            )
        except (NewConnectionError, ConnectTimeoutError) as exc:
            raise DynamoError("ConnectionError", _one_line(exc), connect=True) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise DynamoError("ConnectionError", _one_line(exc)) from None
        data = resp.data
        crc = resp.headers.get("x-amz-crc32")
        if crc is not None and crc.isdigit() and zlib.crc32(data) != int(crc):
            raise DynamoError("ConnectionError", "response body failed its x-amz-crc32 check")
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            if resp.status == 200:
                raise DynamoError("ConnectionError", "200 response body is not JSON") from None
            doc = {}
        if resp.status == 200:
            return doc
        code = str(doc.get("__type") or f"HTTP{resp.status}").rsplit("#", 1)[-1]
        message = str(doc.get("message") or doc.get("Message") or "")
        raise DynamoError(code, _one_line(message), doc, status=resp.status)

    def close(self) -> None:  # the pool belongs to the writer
        pass


class Boto3Transport:
    """The same calls through a boto3 DynamoDB client (moto-friendly, slower)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def call(self, op: str, body: bytes) -> dict[str, Any]:
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        method = getattr(self.client, _snake(op))
        try:
            return method(**json.loads(body))
        except NoCredentialsError:
            raise WriterFatalError("no AWS credentials found") from None
        except ClientError as exc:
            resp = exc.response or {}
            err = resp.get("Error", {})
            status = int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400)
            raise DynamoError(
                err.get("Code", "ClientError"),
                _one_line(err.get("Message", "")),
                resp,
                status=status,
            ) from None
        except EndpointConnectionError as exc:
            raise DynamoError("ConnectionError", _one_line(exc), connect=True) from None
        except (ConnectionClosedError, ReadTimeoutError) as exc:
            raise DynamoError("ConnectionError", _one_line(exc)) from None

    def close(self) -> None:
        pass

    @classmethod
    def from_args(
        cls, *, region: str, endpoint_url: str | None = None, workers: int = 50, session=None
    ) -> Boto3Transport:
        import boto3
        from botocore.config import Config

        config = Config(
            max_pool_connections=max(10, workers),
            retries={"total_max_attempts": 1},
            connect_timeout=5,
            read_timeout=30,
        )
        session = session or boto3.Session()
        return cls(
            session.client("dynamodb", region_name=region, endpoint_url=endpoint_url, config=config)
        )


def _snake(op: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in op).lstrip("_")


def call_with_retry(
    transport: Transport, op: str, body: bytes, policy: RetryPolicy, *, what: str = ""
) -> tuple[dict[str, Any], int]:
    """One call under the shared retry rules; returns (response, retries).

    Raises `WriterFatalError` for fatal codes or an endpoint that never answers,
    `DynamoError` for a non-retryable error or when retries run out.
    """
    started = policy.clock()
    attempt = 0
    answered = False
    while True:
        attempt += 1
        try:
            return transport.call(op, body), attempt - 1
        except DynamoError as exc:
            if not exc.connect:
                answered = True
            if is_fatal(exc.code) or exc.status in (401, 403):
                if exc.code == "ResourceNotFoundException":
                    raise WriterFatalError(
                        f"DynamoDB table not found{' (' + what + ')' if what else ''}: "
                        f"{exc.message}"
                    ) from None
                raise WriterFatalError(
                    f"DynamoDB refused the request credentials ({exc.code}: {exc.message})"
                ) from None
            if not exc.retryable:
                raise
            delay = full_jitter_delay(policy, attempt)
            limit = policy.max_attempts if answered else min(policy.max_attempts, 3)
            if attempt >= limit or policy.clock() - started + delay > policy.max_elapsed:
                if not answered:
                    raise WriterFatalError(
                        f"cannot reach DynamoDB after {attempt} attempt(s): {exc.message}"
                    ) from None
                raise
            log.debug("%s: retrying after %s in %.3fs", op, exc.code, delay)
            if delay > 0:
                policy.sleep(delay)


class KeyLookup:
    """BatchGetItem by (pk, sk), ConsistentRead, <= 100 keys a call, unprocessed resent.

    Thread-safe (no per-call state).  `retries` counts resends over the
    lookup's lifetime (approximate under threads; for reporting only).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        policy: RetryPolicy | None = None,
        projection: Sequence[str] | None = PROJECTION,
    ) -> None:
        self.transport = transport
        self.policy = policy or RetryPolicy()
        self.projection = tuple(projection) if projection else None
        self.retries = 0
        self.calls = 0

    # ---------------------------------------------------------------- tables

    def table_exists(self, table: str) -> bool:
        """DescribeTable: True if it exists (fatal errors other than not-found raise)."""
        body = json.dumps({"TableName": table}).encode()
        try:
            self.transport.call("DescribeTable", body)
        except DynamoError as exc:
            if exc.code == "ResourceNotFoundException":
                return False
            if is_fatal(exc.code) or exc.status in (401, 403):
                raise WriterFatalError(
                    f"cannot describe table {table!r}: {exc.code}: {exc.message}"
                ) from None
            raise
        return True

    # ---------------------------------------------------------------- reads

    def _body(self, table: str, keys: Iterable[tuple[str, str]]) -> bytes:
        spec: dict[str, Any] = {
            "Keys": [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in keys],
            "ConsistentRead": True,
        }
        if self.projection:
            names = {f"#a{i}": n for i, n in enumerate(self.projection)}
            spec["ProjectionExpression"] = ",".join(names)
            spec["ExpressionAttributeNames"] = names
        return json.dumps(
            {"RequestItems": {table: spec}}, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")

    def get_many(
        self, table: str, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """The stored items among `keys` (duplicates allowed in `keys`), by (pk, sk)."""
        unique = list(dict.fromkeys(keys))
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for i in range(0, len(unique), MAX_GET_KEYS):
            self._get_chunk(table, unique[i : i + MAX_GET_KEYS], found)
        return found

    def _get_chunk(
        self,
        table: str,
        keys: list[tuple[str, str]],
        found: dict[tuple[str, str], dict[str, Any]],
    ) -> None:
        policy = self.policy
        pending = keys
        started = policy.clock()
        stalls = 0
        attempt = 0
        while pending:
            self.calls += 1
            try:
                doc, retried = call_with_retry(
                    self.transport, "BatchGetItem", self._body(table, pending), policy, what=table
                )
            except DynamoError as exc:
                raise LookupFailed(f"BatchGetItem on {table}: {exc}", pending) from None
            self.retries += retried
            for item in (doc.get("Responses") or {}).get(table) or []:
                try:
                    found[(item["pk"]["S"], item["sk"]["S"])] = item
                except (KeyError, TypeError):
                    continue
            left = []
            for k in ((doc.get("UnprocessedKeys") or {}).get(table) or {}).get("Keys") or []:
                try:
                    left.append((k["pk"]["S"], k["sk"]["S"]))
                except (KeyError, TypeError):
                    continue
            if not left:
                return
            if len(left) < len(pending):
                stalls = attempt = 0
            stalls += 1
            attempt += 1
            delay = full_jitter_delay(policy, attempt)
            if (
                stalls >= policy.max_attempts
                or policy.clock() - started + delay > policy.max_elapsed
            ):
                raise LookupFailed(
                    f"BatchGetItem on {table}: {len(left)} key(s) still unprocessed after "
                    f"{stalls} attempt(s)",
                    left,
                )
            self.retries += 1
            if delay > 0:
                policy.sleep(delay)
            pending = left

    def close(self) -> None:
        self.transport.close()


def make_transport(
    *,
    region: str,
    endpoint_url: str | None = None,
    workers: int = 50,
    writer: Any = None,
    use_http: bool = True,
    session: Any = None,
) -> Transport:
    """The transport a run should read (and strict-write) with.

    With an `HttpBatchWriter` given, it shares that writer's pool; with
    `use_http` and no writer, a private HttpBatchWriter is built for its pool
    (closed by `close()`); otherwise boto3 (`--writer boto3`, moto).
    """
    if writer is not None and hasattr(writer, "_pool"):
        return HttpTransport(writer)
    if use_http:
        from importer.http_writer import HttpBatchWriter

        own = HttpBatchWriter(
            table="-", region=region, endpoint_url=endpoint_url, session=session, workers=workers
        )
        transport = HttpTransport(own)
        transport.close = own.close  # type: ignore[method-assign]
        return transport
    return Boto3Transport.from_args(
        region=region, endpoint_url=endpoint_url, workers=workers, session=session
    )
