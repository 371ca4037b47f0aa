"""Strict mode's writer: TransactWriteItems, every Put conditioned on the key being free.

Same interface as the BatchWriteItem writers (`write_batch(items) -> WriteOutcome`,
`close()`), so the driver does not care which one it holds.  Each transaction
carries <= 100 Puts (and <= 4 MB), each with

    ConditionExpression  attribute_not_exists(#pk) AND attribute_not_exists(#sk)
    ReturnValuesOnConditionCheckFailure  ALL_OLD

so a command version somebody else wrote (a concurrent import, the MBC API)
can never be overwritten.  What happens to one transaction:

* success: every item counts as written;
* TransactionCanceledException: `CancellationReasons` (one per Put, in order)
  say which items failed their condition.  Those are taken out and the rest of
  the transaction is resent without them -- never resent blindly.  A conflicting
  item whose stored twin carries the *same requestId* is our own earlier write
  (a retried child, a resumed run, a response lost after commit): it counts as
  written.  Any other conflict becomes a `Reject` of kind CONFLICT (the
  stored item's requestId is named): an outcome, reported, never a failure;
* reasons that are transient (TransactionConflict, throttling) resend the
  transaction with backoff; a ValidationError reason fails just that item;
* throttling / 5xx / dropped connections: the same transaction is resent under
  the shared retry budget (`importer.dynamodb.retry.Attempts`) with the same
  `ClientRequestToken`, so a commit whose response was lost is not applied
  twice (and on endpoints that ignore the token, the requestId check above
  settles it);
* any other 4xx is bisected down to the refused items, like the batch writer;
* an endpoint without TransactWriteItems (UnknownOperationException) stops the
  run in one line: nothing is written.

`written + len(failures) + len(rejects) == len(items)` holds per call.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from importer.coordinator import RunCoordinator
from importer.dynamodb.api import DynamoClient, Reply
from importer.dynamodb.errors import DynamoError, ErrorKind
from importer.dynamodb.lookup import KeyLookup, LookupFailed
from importer.dynamodb.pacing import Pacer
from importer.dynamodb.request_pool import Waits
from importer.dynamodb.retry import Attempts, RetryPolicy, bisect, should_retry
from importer.dynamodb.send_loop import First, SendLoop, Taken
from importer.dynamodb.writer import chunk_requests, refuse_into, write_units
from importer.item_batch import ItemBatch, ItemList, as_batch
from importer.records import Failure, PreparedItem, Reject, RejectKind, WriteOutcome

__all__ = [
    "MAX_TRANSACTION_BYTES",
    "MAX_TRANSACTION_ITEMS",
    "StrictWriter",
]

log = logging.getLogger(__name__)

MAX_TRANSACTION_ITEMS = 100
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024
_RETRY_REASONS = frozenset(
    {
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "InternalServerError",
    }
)


def _request_id(item: dict[str, Any] | None) -> str | None:
    if not item:
        return None
    value = item.get("requestId")
    return value.get("S") if isinstance(value, dict) else None


class StrictWriter:
    """Conditional TransactWriteItems writer for one command table (see module doc)."""

    def __init__(
        self,
        *,
        client: DynamoClient,
        table: str,
        policy: RetryPolicy | None = None,
        lookup: KeyLookup | None = None,
        pacer: Pacer | None = None,
        coordinator: RunCoordinator | None = None,
    ) -> None:
        self.client = client
        #: the run's control: its first fatal error stops this worker's next send
        self.coordinator = coordinator if coordinator is not None else RunCoordinator()
        self.table = table
        self.policy = policy or RetryPolicy()
        #: a transactional write costs two write units per KB
        self.pacer = pacer or Pacer()
        self.lookup = lookup or KeyLookup(
            client, policy=self.policy, projection=None, coordinator=self.coordinator
        )
        head = {
            "TableName": table,
            "ConditionExpression": "attribute_not_exists(#pk) AND attribute_not_exists(#sk)",
            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk"},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        self._put_open = b'{"Put":' + json.dumps(head, separators=(",", ":")).encode()[:-1]
        self._put_open += b',"Item":'
        self._put_close = b"}}"
        #: how the transactions go out: all in one group through one client call, or one
        #: by one
        self.loop = SendLoop(client, self.pacer, self.coordinator)

    # ------------------------------------------------------------------ public

    #: what the send loop sends (`importer.dynamodb.send_loop.Requests`)
    operation = "TransactWriteItems"

    def write_batch(self, items: Sequence[PreparedItem]) -> WriteOutcome:
        """Write `items`, a transaction of <= 100 at a time; every item ends up written,
        rejected (a conflict) or failed.

        While the pacer is calm and the client sends side by side, a batch's
        transactions go out at once (one group of the send loop, as the batch
        writer's requests do); each answer then goes on as `_send` takes it.
        """
        sent = self.loop.send(self, self._chunks(items), one_group=True)
        outcome = WriteOutcome(written=sent.clean_items)
        for part in sent.results:
            outcome.merge(part)
        return outcome

    def close(self) -> None:
        """Nothing to release: the client belongs to the run."""

    # ------------------------------------------------------------------ the send loop's

    def cost(self, items: ItemBatch) -> tuple[int, int]:
        return len(items), 2 * write_units(items)  # two write units per KB, transactional

    def body(self, items: ItemBatch) -> bytes:
        # the token: a digest of the Puts' items (each wire then a NUL), so a resend of
        # the same transaction is recognised by the service
        token = hashlib.sha256(items.body(b"", b"\0", b"\0")).hexdigest()[:36]
        sep = self._put_close + b"," + self._put_open
        return items.body(
            b'{"TransactItems":[' + self._put_open,
            sep,
            self._put_close + b'],"ClientRequestToken":"' + token.encode() + b'"}',
        )

    def answered(self, items: ItemBatch, answer: Reply | DynamoError) -> Taken:
        # a refused transaction goes on one after another, each settled before the next
        return Taken.CLEAN if isinstance(answer, Reply) else Taken.HERE

    def follow(self, items: ItemBatch, first: First | None, waits: Waits | None) -> WriteOutcome:
        outcome = WriteOutcome()
        self._send(items, outcome, first)
        return outcome

    # ------------------------------------------------------------------ internals

    def _chunks(self, items: Sequence[PreparedItem]) -> list[ItemBatch]:
        """Transactions of <= 100 Puts within 4 MB (less 1 KB of envelope), a key once."""
        overhead = len(self._put_open) + len(self._put_close) + 1
        return chunk_requests(
            items,
            budget=MAX_TRANSACTION_BYTES - 1024,
            per_item=overhead,
            max_items=MAX_TRANSACTION_ITEMS,
        )

    def _send(
        self,
        items: ItemBatch,
        outcome: WriteOutcome,
        first: First | None = None,
    ) -> None:
        """One transaction's items until each is written, rejected or failed.

        `first`: the answer to its first send, already made by the send loop's
        group (with the units sent and when their slot was taken).
        """
        attempts = Attempts(self.policy)
        pending: ItemBatch = items
        while pending:
            sent_at = None
            if first is not None:
                answer, units, sent_at = first
                first = None
            else:
                units = 2 * write_units(pending)
                self.coordinator.raise_if_failed()
                self.pacer.acquire(len(pending), units)
                try:
                    answer = self.client.post("TransactWriteItems", self.body(pending))
                except DynamoError as refused:
                    answer = refused
            if isinstance(answer, DynamoError):
                exc = answer
                self.pacer.settle(
                    sent=len(pending),
                    processed=0,
                    processed_units=0,
                    throttled=exc.kind is ErrorKind.THROTTLED,
                    sent_units=units,
                    sent_at=sent_at,
                )
                if exc.code == "TransactionCanceledException":
                    left, transient = self._cancelled(pending, exc, outcome)
                    if len(left) < len(pending):
                        attempts.progressed()
                    pending = left
                    if not pending or not transient:
                        continue
                    if attempts.again(exc):
                        outcome.retries += 1
                        continue
                elif exc.kind is ErrorKind.CLIENT:
                    reason = exc.describe()
                    bisect(
                        list(pending),
                        lambda part: self._send(as_batch(part), outcome),
                        refuse_into(outcome, reason),
                    )
                    return
                elif should_retry(
                    self.client, attempts, exc, self.table, coordinator=self.coordinator
                ):
                    outcome.retries += 1
                    continue
                reason = attempts.reason()
                outcome.failures.extend(Failure(i.line, i.pk, i.sk, reason) for i in pending)
                return
            self.pacer.settle(
                sent=len(pending),
                processed=len(pending),
                processed_units=units,
                throttled=False,
                sent_units=units,
                sent_at=sent_at,
            )
            outcome.written += len(pending)
            return

    def _cancelled(
        self, pending: ItemBatch, exc: DynamoError, outcome: WriteOutcome
    ) -> tuple[ItemBatch, bool]:
        """Take conflicting / invalid items out; returns (the rest, resend needs backoff)."""
        reasons = exc.doc.get("CancellationReasons") or []
        if len(reasons) != len(pending):
            log.warning(
                "TransactionCanceledException with %d reasons for %d items",
                len(reasons),
                len(pending),
            )
            return pending, True
        left: list[PreparedItem] = []
        conflicts: list[tuple[PreparedItem, dict | None]] = []
        transient = False
        for it, reason in zip(pending, reasons, strict=True):
            code = (reason or {}).get("Code") or "None"
            if code in ("None", ""):
                left.append(it)
            elif code == "ConditionalCheckFailed":
                conflicts.append((it, reason.get("Item")))
            elif code in _RETRY_REASONS:
                transient = True
                left.append(it)
            else:
                message = reason.get("Message") or ""
                outcome.failures.append(
                    Failure(it.line, it.pk, it.sk, f"{code}: {message}".rstrip(": "))
                )
        if conflicts:
            self._settle_conflicts(conflicts, outcome)
        return ItemList(left), transient

    def _settle_conflicts(
        self, conflicts: list[tuple[PreparedItem, dict | None]], outcome: WriteOutcome
    ) -> None:
        missing = [it for it, stored in conflicts if stored is None]
        fetched: dict[tuple[str, str], dict] = {}
        if missing:
            try:
                fetched = self.lookup.get_many(self.table, [(it.pk, it.sk) for it in missing])
            except LookupFailed as exc:
                log.warning("cannot read conflicting items back: %s", exc)
        for it, stored in conflicts:
            stored = stored if stored is not None else fetched.get((it.pk, it.sk))
            ours = _request_id(json.loads(it.wire))
            theirs = _request_id(stored)
            if stored is not None and theirs == ours:
                outcome.written += 1  # our own earlier write: idempotent re-run
                continue
            who = f"requestId {theirs}" if theirs else "another writer"
            code = it.sk.split("#", 1)[-1].rsplit("@", 1)[0]
            outcome.rejects.append(
                Reject(
                    it.line,
                    "",
                    code,
                    f"conflict: {it.sk} already exists (written by {who})",
                    kind=RejectKind.CONFLICT,
                )
            )
