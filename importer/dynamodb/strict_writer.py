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
from collections.abc import Iterable, Sequence
from typing import Any

from importer.coordinator import RunCoordinator
from importer.dynamodb.api import DynamoClient
from importer.dynamodb.capacity_units import item_write_units
from importer.dynamodb.errors import DynamoError, ErrorKind
from importer.dynamodb.lookup import KeyLookup, LookupFailed
from importer.dynamodb.pacing import Pacer
from importer.dynamodb.retry import Attempts, RetryPolicy, bisect, should_retry
from importer.dynamodb.writer import refuse_into
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

    # ------------------------------------------------------------------ public

    def write_batch(self, items: Sequence[PreparedItem]) -> WriteOutcome:
        outcome = WriteOutcome()
        for chunk in self._chunks(items):
            self._send(chunk, outcome)
        return outcome

    def close(self) -> None:
        """Nothing to release: the client belongs to the run."""

    # ------------------------------------------------------------------ internals

    def _chunks(self, items: Sequence[PreparedItem]) -> Iterable[list[PreparedItem]]:
        overhead = len(self._put_open) + len(self._put_close) + 1
        chunk: list[PreparedItem] = []
        keys: set[tuple[str, str]] = set()
        size = 0
        for it in items:
            add = len(it.wire) + overhead
            key = (it.pk, it.sk)
            if chunk and (
                len(chunk) >= MAX_TRANSACTION_ITEMS
                or size + add > MAX_TRANSACTION_BYTES - 1024
                or key in keys
            ):
                yield chunk
                chunk, keys, size = [], set(), 0
            chunk.append(it)
            keys.add(key)
            size += add
        if chunk:
            yield chunk

    def _body(self, items: Sequence[PreparedItem]) -> bytes:
        digest = hashlib.sha256()
        for it in items:
            digest.update(it.wire)
            digest.update(b"\0")
        token = digest.hexdigest()[:36]
        parts = [self._put_open + it.wire + self._put_close for it in items]
        return (
            b'{"TransactItems":['
            + b",".join(parts)
            + b'],"ClientRequestToken":"'
            + token.encode()
            + b'"}'
        )

    def _send(self, items: list[PreparedItem], outcome: WriteOutcome) -> None:
        attempts = Attempts(self.policy)
        pending = items
        while pending:
            units = 2 * sum(item_write_units(it.wire) for it in pending)
            self.coordinator.raise_if_failed()
            self.pacer.acquire(len(pending), units)
            try:
                self.client.post("TransactWriteItems", self._body(pending))
            except DynamoError as exc:
                self.pacer.settle(
                    sent=len(pending),
                    processed=0,
                    processed_units=0,
                    throttled=exc.kind is ErrorKind.THROTTLED,
                    sent_units=units,
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
                        pending,
                        lambda part: self._send(part, outcome),
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
            else:
                self.pacer.settle(
                    sent=len(pending),
                    processed=len(pending),
                    processed_units=units,
                    throttled=False,
                    sent_units=units,
                )
                outcome.written += len(pending)
                return

    def _cancelled(
        self, pending: list[PreparedItem], exc: DynamoError, outcome: WriteOutcome
    ) -> tuple[list[PreparedItem], bool]:
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
        return left, transient

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
