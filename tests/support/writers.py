"""Writers for tests that exercise one writer on its own (runs use `importer.run.pipeline`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from importer.dynamodb.client import Boto3DynamoClient, HttpDynamoClient
from importer.dynamodb.retry import RetryPolicy
from importer.dynamodb.writer import BatchWriter
from importer.records import PreparedItem, WriteOutcome
from importer.run.window import BoundedWindow

__all__ = ["boto3_writer", "http_writer", "write_many"]


def http_writer(
    *,
    table: str,
    region: str = "us-east-1",
    endpoint_url: str | None = None,
    session: Any = None,
    workers: int = 50,
    policy: RetryPolicy | None = None,
    rate: Any = None,
    timeout: float = 30.0,
    lanes: Any = None,
) -> BatchWriter:
    """A BatchWriter over its own signed-HTTP client (closed with the writer)."""
    client = HttpDynamoClient(
        region=region, endpoint_url=endpoint_url, session=session, workers=workers, timeout=timeout
    )
    return BatchWriter(
        client=client, table=table, policy=policy, pacer=rate, owns_client=True, lanes=lanes
    )


def boto3_writer(
    *,
    table: str,
    region: str = "us-east-1",
    endpoint_url: str | None = None,
    session: Any = None,
    workers: int = 50,
    policy: RetryPolicy | None = None,
) -> BatchWriter:
    """A BatchWriter over its own boto3 client (what moto's mock_aws intercepts)."""
    client = Boto3DynamoClient(
        region=region, endpoint_url=endpoint_url, session=session, workers=workers
    )
    return BatchWriter(client=client, table=table, policy=policy, owns_client=True)


def write_many(
    writer: Any, batches: Iterable[Sequence[PreparedItem]], workers: int = 16
) -> WriteOutcome:
    """`writer.write_batch` over `batches` on `workers` threads, merged (a fatal error re-raised).

    At most 2 x workers batches are in flight, so a generator is consumed lazily.
    """
    total = WriteOutcome()

    def merge(future: Future[WriteOutcome], _tag: Any) -> None:
        total.merge(future.result())

    with ThreadPoolExecutor(workers, thread_name_prefix="test-writer") as pool:
        window: BoundedWindow[WriteOutcome] = BoundedWindow(
            pool, settle=merge, max_pending=2 * workers
        )
        try:
            for batch in batches:
                window.submit(writer.write_batch, batch)
            window.finish()
        except BaseException:
            window.cancel_queued()
            raise
    return total
