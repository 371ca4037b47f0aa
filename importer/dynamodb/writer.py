"""BatchWriteItem: the one batch writer, over either DynamoDB client.

The request body is spliced from the `PreparedItem.wire` bytes the transform
produced -- never built as Python dicts.  The writer sees one batch type
(`importer.item_batch.ItemBatch`): from the native transform's `ItemBlock` the
requests are cut, checked and spliced in C, without an object per item; the
reference engine's `ItemList` answers the same methods in Python.  Requests go
out through the one send loop (`importer.dynamodb.send_loop`: in groups when the
client sends side by side, else one by one over the lanes) and are posted
through `importer.dynamodb.client`'s client: signed HTTP (the default) or boto3
(the reference path, `--writer boto3`, and what moto intercepts).  Both leave
the same table.

Semantics (docs/aws-facts.md, BatchWriteItem), per `write_batch(items)` call:

* requests hold <= 25 items and <= 16 MB, never two items with the same key
  (`chunk_requests`);
* `UnprocessedItems` are mapped back to their items by (pk, sk) and exactly
  those are resent; throttling, 5xx, timeouts and dropped connections are
  retried; all under one `Attempts` budget per request (`importer.dynamodb.retry`);
* a validation error is not retried: the request is bisected until each
  refused item is alone, and reported as a `Failure` with the service's message;
* rows that exhaust their retries become `Failure`s with the last error, so
  `written + len(failures) == len(items)` always holds;
* a fatal error (credentials, missing table, unreachable endpoint) raises
  `WriterFatalError` and is recorded in the run's coordinator
  (`importer.coordinator`): every later send of any worker of the run -- this
  writer's, a lookup's, the sync's -- raises the run's first fatal error at once;
* every send is paced (`pacer.acquire`, in write units counted per item from
  what is sent) and its answer reported (`pacer.settle`: how much the table
  processed), so all workers share one view of what the table accepts
  (`importer.dynamodb.pacing`), and a `--max-wcu` budget is a hard cap.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from importer.coordinator import RunCoordinator
from importer.dynamodb.api import DynamoClient, Reply
from importer.dynamodb.capacity_units import WRITE_UNIT_BYTES, item_write_units
from importer.dynamodb.client import ALL_PROCESSED
from importer.dynamodb.errors import DynamoError, ErrorKind, one_line
from importer.dynamodb.pacing import Pacer
from importer.dynamodb.request_pool import Lanes, Waits
from importer.dynamodb.retry import Attempts, RetryPolicy, bisect, should_retry
from importer.dynamodb.send_loop import First, SendLoop, Taken
from importer.item_batch import ItemBatch, ItemList, as_batch
from importer.records import Failure, PreparedItem, WriteOutcome

__all__ = [
    "MAX_ITEMS_PER_REQUEST",
    "MAX_REQUEST_BYTES",
    "BatchWriter",
    "chunk_requests",
    "refuse_into",
    "write_units",
]

log = logging.getLogger(__name__)

#: BatchWriteItem accepts at most 25 put requests and 16 MB per call.
MAX_ITEMS_PER_REQUEST = 25
MAX_REQUEST_BYTES = 16 * 1024 * 1024
_PUT_OPEN = b'{"PutRequest":{"Item":'
_PUT_CLOSE = b"}}"
_PUT_SEP = _PUT_CLOSE + b"," + _PUT_OPEN
_PER_ITEM_OVERHEAD = len(_PUT_OPEN) + len(_PUT_CLOSE) + 1


def refuse_into(outcome: WriteOutcome, reason: str) -> Callable[[PreparedItem], None]:
    """`bisect`'s refuse step: the lone item becomes a failure with the service's message."""

    def refuse(item: PreparedItem) -> None:
        outcome.failures.append(Failure(item.line, item.pk, item.sk, reason))

    return refuse


def chunk_requests(
    items: Sequence[PreparedItem] | ItemBatch,
    *,
    budget: int = MAX_REQUEST_BYTES,
    per_item: int = 32,
    max_items: int = MAX_ITEMS_PER_REQUEST,
) -> list[ItemBatch]:
    """Greedy split into requests of <= `max_items` (BatchWriteItem: 25), <= `budget` bytes
    (each item counted as its wire JSON plus `per_item` bytes of envelope), and a
    key at most once per request (DynamoDB refuses a call naming a key twice);
    each request a slice of the batch (`ItemBatch.chunk_bounds`)."""
    batch = as_batch(items)
    bounds = batch.chunk_bounds(max_items, budget, per_item)
    return [batch[bounds[k] : bounds[k + 1]] for k in range(len(bounds) - 1)]


def write_units(items: ItemBatch) -> int:
    """Write units a put of each of `items` costs, summed (`item_write_units`).

    A batch of items up to 1 KB of JSON answers without sizing an item.
    """
    units = items.write_units(WRITE_UNIT_BYTES)
    if units >= 0:
        return units
    return sum([item_write_units(it.wire) for it in items])


class BatchWriter:
    """Thread-safe BatchWriteItem writer for one table (see the module docstring).

    `client` is shared with the run's lookups; the writer closes it only when
    `owns_client` is set.  `key_names` are the table's key attributes.
    """

    def __init__(
        self,
        *,
        client: DynamoClient,
        table: str,
        policy: RetryPolicy | None = None,
        pacer: Pacer | None = None,
        key_names: tuple[str, str] = ("pk", "sk"),
        owns_client: bool = False,
        lanes: Lanes | None = None,
        coordinator: RunCoordinator | None = None,
    ) -> None:
        self.client = client
        self.lanes = lanes
        #: the run's control (its first fatal error); a writer on its own gets its own
        self.coordinator = coordinator if coordinator is not None else RunCoordinator()
        self.table = table
        self.policy = policy or RetryPolicy()
        self.pacer = pacer or Pacer()
        self.key_names = key_names
        self.owns_client = owns_client
        self.prefix = b'{"RequestItems":{' + json.dumps(table).encode() + b":[" + _PUT_OPEN
        self.suffix = _PUT_CLOSE + b"]}}"
        #: how the requests go out: in groups through one client call, or one by one
        self.loop = SendLoop(client, self.pacer, self.coordinator, lanes)

    # ------------------------------------------------------------------ public

    #: what the send loop sends (`importer.dynamodb.send_loop.Requests`)
    operation = "BatchWriteItem"

    def write_batch(self, items: Sequence[PreparedItem]) -> WriteOutcome:
        """Write `items` (any sequence of them: taken as an `ItemBatch`); every item ends
        up written or in `failures`.

        With `lanes`, a batch's requests go out side by side -- unless a key
        appears in two of them: then they are sent in order, so the later
        row is the one the table keeps.
        """
        batch = as_batch(items)
        chunks = self.chunks(batch)
        side_by_side = len(chunks) > 1 and batch.keys_unique()
        sent = self.loop.send(self, chunks, side_by_side=side_by_side)
        outcome = WriteOutcome(written=sent.clean_items)
        for part in sent.results:
            outcome.merge(part)
        return outcome

    def chunks(self, items: Sequence[PreparedItem] | ItemBatch) -> list[ItemBatch]:
        """Requests of <= 25 items within 16 MB of body, no key twice."""
        budget = MAX_REQUEST_BYTES - len(self.prefix) - len(self.suffix)
        return chunk_requests(items, budget=budget, per_item=_PER_ITEM_OVERHEAD)

    def body(self, items: ItemBatch) -> bytes:
        return items.body(self.prefix, _PUT_SEP, self.suffix)

    def close(self) -> None:
        if self.owns_client:
            self.client.close()

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ the send loop's

    def cost(self, items: ItemBatch) -> tuple[int, int]:
        return len(items), write_units(items)

    def answered(self, items: ItemBatch, answer: Reply | DynamoError) -> Taken:
        if isinstance(answer, Reply) and answer.raw == ALL_PROCESSED:
            return Taken.CLEAN
        return Taken.LANES

    def follow(self, items: ItemBatch, first: First | None, waits: Waits | None) -> WriteOutcome:
        outcome = WriteOutcome()
        self._send(items, outcome, first, waits)
        return outcome

    # ------------------------------------------------------------------ internals

    def _send(
        self,
        items: ItemBatch,
        outcome: WriteOutcome,
        first: First | None = None,
        waits: Waits | None = None,
    ) -> None:
        """Send one request's worth of items until each is written or failed.

        `first`: the answer to its first send, already made by a group of the send
        loop (with the units sent and when their slot was taken).  `waits`: where
        the backoff and pacing sleeps are told (the lanes' gauge).
        """
        attempts = Attempts(self.policy, waits)
        pending = items
        pacer = self.pacer
        while pending:
            self.coordinator.raise_if_failed()
            sent_at = None
            if first is not None:
                answer, sent_units, sent_at = first
                first = None
            else:
                sent_units = write_units(pending)
                pacer.acquire(len(pending), sent_units, waits)
                try:
                    answer = self.client.post("BatchWriteItem", self.body(pending))
                except DynamoError as exc:
                    answer = exc
            if isinstance(answer, DynamoError):
                error = answer
                throttled = error.kind is ErrorKind.THROTTLED
                pacer.settle(
                    sent=len(pending),
                    processed=0,
                    processed_units=0,
                    throttled=throttled,
                    sent_units=sent_units,
                    sent_at=sent_at,
                )
                if error.kind is ErrorKind.CLIENT:
                    bisect(
                        list(pending),
                        lambda part: self._send(as_batch(part), outcome, None, waits),
                        refuse_into(outcome, error.describe()),
                    )
                    return
                if self._retry(attempts, error):
                    outcome.retries += 1
                    log.debug("retrying %d item(s) after %s", len(pending), error.code)
                    continue
                break
            reply = answer
            if reply.raw == ALL_PROCESSED:  # the usual answer: nothing to parse
                left_keys = None
            else:
                try:
                    left_keys = self._unprocessed(reply, pending)
                except DynamoError as exc:  # a 200 the client cannot read: not a success
                    pacer.settle(
                        sent=len(pending),
                        processed=0,
                        processed_units=0,
                        throttled=False,
                        sent_units=sent_units,
                        sent_at=sent_at,
                    )
                    if self._retry(attempts, exc):
                        outcome.retries += 1
                        continue
                    break
            if not left_keys:
                outcome.written += len(pending)
                pacer.settle(
                    sent=len(pending),
                    processed=len(pending),
                    processed_units=sent_units,
                    throttled=False,
                    sent_units=sent_units,
                    sent_at=sent_at,
                )
                return
            left = ItemList([it for it in pending if (it.pk, it.sk) in left_keys])
            left_units = write_units(left)
            done = len(pending) - len(left)
            outcome.written += done
            pacer.settle(
                sent=len(pending),
                processed=done,
                processed_units=sent_units - left_units,
                throttled=True,
                sent_units=sent_units,
                sent_at=sent_at,
            )
            if done:
                attempts.progressed()
            pending = left
            if not attempts.again(f"UnprocessedItems: {len(left)} item(s) returned unprocessed"):
                break
            outcome.retries += 1
        if pending:
            reason = attempts.reason()
            outcome.failures.extend(Failure(i.line, i.pk, i.sk, reason) for i in pending)

    def _retry(self, attempts: Attempts, exc: DynamoError) -> bool:
        return should_retry(self.client, attempts, exc, self.table, coordinator=self.coordinator)

    def _unprocessed(self, reply: Reply, pending: ItemBatch) -> set[tuple[str, str]] | None:
        """The keys of a 200 answer's `UnprocessedItems` (None: all processed).

        Only an answer read whole is believed: `UnprocessedItems` missing or not a
        map, a table not written to, an entry without its key or naming an item
        not sent -- the client cannot tell what was stored, so the request is
        treated as failed and sent again (puts are idempotent), never as written.
        """
        doc = reply.doc  # raises MalformedResponse for a body that is not a JSON object
        unprocessed = doc.get("UnprocessedItems")
        if not isinstance(unprocessed, dict):
            raise _malformed(f"UnprocessedItems is {_kind_of(unprocessed)}, not a map")
        others = [t for t in unprocessed if t != self.table]
        if others:
            raise _malformed(f"UnprocessedItems names table {others[0]!r}, not written to")
        entries = unprocessed.get(self.table)
        if entries is None or entries == []:
            return None
        if not isinstance(entries, list):
            raise _malformed(f"UnprocessedItems[{self.table!r}] is {_kind_of(entries)}, not a list")
        hk, rk = self.key_names
        sent = {(it.pk, it.sk) for it in pending}
        keys = set()
        for entry in entries:
            try:
                item = entry["PutRequest"]["Item"]
                key = (item[hk]["S"], item[rk]["S"])
            except (KeyError, TypeError, IndexError):
                raise _malformed(
                    f"an UnprocessedItems entry has no key: {one_line(json.dumps(entry), 120)}"
                ) from None
            if key not in sent:
                raise _malformed(f"UnprocessedItems names an item not sent: {key!r}")
            keys.add(key)
        return keys


def _kind_of(value: Any) -> str:
    return "missing" if value is None else f"a JSON {type(value).__name__}"


def _malformed(message: str) -> DynamoError:
    return DynamoError("MalformedResponse", f"200 answer: {message}", status=500)
