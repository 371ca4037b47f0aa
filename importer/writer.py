"""The boto3 BatchWriteItem writer: the correctness baseline (`--writer boto3`).

It goes through botocore's serializer, so it is slow (DESIGN.md §5), but it is
the usual way to write DynamoDB and the fast HTTP writer must leave the same
table behind.  Retry rules are shared with it through `importer.retry`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from importer.records import Failure, PreparedItem, WriteOutcome
from importer.retry import (
    RetryPolicy,
    WriterFatalError,
    full_jitter_delay,
    is_fatal,
    is_retryable,
)

if TYPE_CHECKING:
    import boto3

__all__ = [
    "MAX_ITEMS_PER_REQUEST",
    "MAX_REQUEST_BYTES",
    "Boto3BatchWriter",
    "chunk_requests",
    "preflight_table",
]

#: BatchWriteItem accepts at most 25 put requests and 16 MB per call.
MAX_ITEMS_PER_REQUEST = 25
MAX_REQUEST_BYTES = 16 * 1024 * 1024


def chunk_requests(
    items: Sequence[PreparedItem],
    *,
    budget: int = MAX_REQUEST_BYTES,
    per_item: int = 32,
) -> Iterator[list[PreparedItem]]:
    """Greedy split into BatchWriteItem requests: <= 25 items, <= `budget` bytes
    (each item counted as its wire JSON plus `per_item` bytes of envelope), and a
    key at most once per request (DynamoDB refuses a call naming a key twice).

    Fast path: a full window of 25 that fits and has unique keys is exactly what
    the greedy loop would take, so it is sliced off whole.
    """
    seq = items if isinstance(items, list) else list(items)
    n = len(seq)
    i = 0
    while i < n:
        window = seq[i : i + MAX_ITEMS_PER_REQUEST]
        if (
            len(window) == MAX_ITEMS_PER_REQUEST
            and len({(it.pk, it.sk) for it in window}) == MAX_ITEMS_PER_REQUEST
            and sum([len(it.wire) for it in window]) + MAX_ITEMS_PER_REQUEST * per_item <= budget
        ):
            yield window
            i += MAX_ITEMS_PER_REQUEST
            continue
        chunk: list[PreparedItem] = []
        keys: set[tuple[str, str]] = set()
        size = 0
        while i < n:
            it = seq[i]
            key = (it.pk, it.sk)
            add = len(it.wire) + per_item
            if chunk and (
                len(chunk) >= MAX_ITEMS_PER_REQUEST or size + add > budget or key in keys
            ):
                break
            chunk.append(it)
            keys.add(key)
            size += add
            i += 1
        yield chunk


def _error_code(exc: Exception) -> tuple[str, str]:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    return error.get("Code", type(exc).__name__), error.get("Message", str(exc))


def preflight_table(client: Any, table: str) -> None:
    """Fail early, in one line, when the table cannot be written at all."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
    )

    try:
        desc = client.describe_table(TableName=table)["Table"]
    except NoCredentialsError:
        raise WriterFatalError(
            "no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        ) from None
    except EndpointConnectionError as exc:
        raise WriterFatalError(f"cannot reach DynamoDB endpoint: {exc}") from None
    except ClientError as exc:
        code, message = _error_code(exc)
        if code == "ResourceNotFoundException":
            raise WriterFatalError(f"table {table!r} does not exist") from None
        raise WriterFatalError(f"cannot use table {table!r}: {code}: {message}") from None
    except BotoCoreError as exc:
        raise WriterFatalError(f"cannot reach DynamoDB: {exc}") from None
    keys = {k["KeyType"]: k["AttributeName"] for k in desc.get("KeySchema", [])}
    if keys != {"HASH": "pk", "RANGE": "sk"}:
        raise WriterFatalError(
            f"table {table!r} has key schema {keys}; an MBC command table needs "
            "pk (HASH) and sk (RANGE)"
        )


class Boto3BatchWriter:
    """BatchWriteItem through boto3's client, with importer's retry rules.

    botocore's own retries are switched off so that one policy (ours) decides,
    and the connection pool is sized to the worker count (botocore's default of
    10 would serialize 50 workers).
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
    ) -> None:
        import boto3
        from botocore.config import Config

        self.table = table
        self.policy = policy or RetryPolicy()
        config = Config(
            max_pool_connections=max(10, workers),
            retries={"total_max_attempts": 1},
            connect_timeout=5,
            read_timeout=30,
        )
        session = session or boto3.Session()
        self.client = session.client(
            "dynamodb", region_name=region, endpoint_url=endpoint_url, config=config
        )
        self._lock = threading.Lock()

    def preflight(self) -> None:
        preflight_table(self.client, self.table)

    def close(self) -> None:
        self.client.close()

    def write_batch(self, items: Sequence[PreparedItem]) -> WriteOutcome:
        outcome = WriteOutcome()
        for chunk in chunk_requests(items):
            outcome.merge(self._send(chunk))
        return outcome

    def _send(self, chunk: list[PreparedItem]) -> WriteOutcome:
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        policy = self.policy
        outcome = WriteOutcome()
        pending = {(i.pk, i.sk): i for i in chunk}
        started = policy.clock()
        attempt = 0
        last_error = ""
        reached = False
        while pending:
            attempt += 1
            request = [{"PutRequest": {"Item": json.loads(i.wire)}} for i in pending.values()]
            try:
                response = self.client.batch_write_item(RequestItems={self.table: request})
            except NoCredentialsError:
                raise WriterFatalError("no AWS credentials found") from None
            except ClientError as exc:
                reached = True
                code, message = _error_code(exc)
                if is_fatal(code):
                    raise WriterFatalError(
                        f"DynamoDB refused the request: {code}: {message}"
                    ) from None
                if not is_retryable(code):
                    return self._isolate(list(pending.values()), outcome, f"{code}: {message}")
                last_error = f"{code}: {message}"
            except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError) as exc:
                last_error = f"connection error: {exc}"
                if isinstance(exc, EndpointConnectionError) and not reached:
                    if attempt >= min(policy.max_attempts, 3):
                        raise WriterFatalError(f"cannot reach DynamoDB endpoint: {exc}") from None
            else:
                reached = True
                unprocessed = response.get("UnprocessedItems", {}).get(self.table, [])
                left = {}
                for request_item in unprocessed:
                    item = request_item["PutRequest"]["Item"]
                    key = (item["pk"]["S"], item["sk"]["S"])
                    left[key] = pending[key]
                outcome.written += len(pending) - len(left)
                pending = left
                if not pending:
                    break
                last_error = "UnprocessedItems: not accepted after the last retry"
            elapsed = policy.clock() - started
            delay = full_jitter_delay(policy, attempt)
            if attempt >= policy.max_attempts or elapsed + delay > policy.max_elapsed:
                for item in pending.values():
                    outcome.failures.append(
                        Failure(
                            item.line,
                            item.pk,
                            item.sk,
                            f"gave up after {attempt} attempts: {last_error}",
                        )
                    )
                return outcome
            outcome.retries += 1
            policy.sleep(delay)
        return outcome

    def _isolate(
        self, items: list[PreparedItem], outcome: WriteOutcome, reason: str
    ) -> WriteOutcome:
        """Find exactly which items a validation error is about, by halving."""
        if len(items) == 1:
            item = items[0]
            outcome.failures.append(Failure(item.line, item.pk, item.sk, reason))
            return outcome
        mid = len(items) // 2
        for half in (items[:mid], items[mid:]):
            outcome.merge(self._send(half))
        return outcome
