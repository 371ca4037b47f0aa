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
  written.  Any other conflict becomes a `Failure` whose reason starts with
  "conflict:" (the stored item's requestId is named);
* reasons that are transient (TransactionConflict, throttling) resend the
  transaction with backoff; a ValidationError reason fails just that item;
* throttling / 5xx / dropped connections: the same transaction is resent under
  `importer.retry`'s policy with the same `ClientRequestToken`, so a commit
  whose response was lost is not applied twice (and on endpoints that ignore
  the token, the requestId check above settles it);
* any other 4xx is bisected down to the refused items, like HttpBatchWriter.

Conflicts are reported as `Failure`s (reason "conflict: ...") rather than
`Reject`s so that `written + len(failures) == len(items)` holds for every
writer and no driver change is needed to keep the counts exact; a driver that
prefers to count them as rejects can use `split_conflicts(outcome)`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from importer.lookup import DynamoError, KeyLookup, LookupFailed, Transport, call_with_retry
from importer.records import Failure, PreparedItem, Reject, WriteOutcome
from importer.retry import RetryPolicy, full_jitter_delay

__all__ = [
    "CONFLICT_PREFIX",
    "MAX_TRANSACTION_BYTES",
    "MAX_TRANSACTION_ITEMS",
    "StrictWriter",
    "split_conflicts",
]

log = logging.getLogger(__name__)

MAX_TRANSACTION_ITEMS = 100
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024
CONFLICT_PREFIX = "conflict:"
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


def split_conflicts(outcome: WriteOutcome) -> tuple[list[Failure], list[Reject]]:
    """(true failures, conflicts as Rejects) -- for a driver that counts conflicts as rejects."""
    failures: list[Failure] = []
    conflicts: list[Reject] = []
    for f in outcome.failures:
        if f.reason.startswith(CONFLICT_PREFIX):
            conflicts.append(Reject(f.line, "", f.sk, f.reason))
        else:
            failures.append(f)
    return failures, conflicts


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
        transport: Transport,
        table: str,
        policy: RetryPolicy | None = None,
        lookup: KeyLookup | None = None,
    ) -> None:
        self.transport = transport
        self.table = table
        self.policy = policy or RetryPolicy()
        self.lookup = lookup or KeyLookup(transport, policy=self.policy, projection=None)
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
        self.transport.close()

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
        policy = self.policy
        pending = items
        started = policy.clock()
        stalls = attempt = 0
        while pending:
            try:
                _doc, retried = call_with_retry(
                    self.transport,
                    "TransactWriteItems",
                    self._body(pending),
                    policy,
                    what=self.table,
                )
            except DynamoError as exc:
                if exc.code == "TransactionCanceledException":
                    left, transient = self._cancelled(pending, exc, outcome)
                    if len(left) < len(pending):
                        stalls = attempt = 0
                    pending = left
                    if not pending or not transient:
                        continue
                    last = f"{exc.code}: {exc.message}"
                elif exc.retryable:
                    reason = f"gave up: {exc.code}: {exc.message}"
                    outcome.failures.extend(Failure(i.line, i.pk, i.sk, reason) for i in pending)
                    return
                else:
                    self._bisect(pending, exc, outcome)
                    return
            else:
                outcome.retries += retried
                outcome.written += len(pending)
                return
            stalls += 1
            attempt += 1
            delay = full_jitter_delay(policy, attempt)
            if (
                stalls >= policy.max_attempts
                or policy.clock() - started + delay > policy.max_elapsed
            ):
                reason = f"gave up after {stalls} cancelled transaction(s): {last}"
                outcome.failures.extend(Failure(i.line, i.pk, i.sk, reason) for i in pending)
                return
            outcome.retries += 1
            if delay > 0:
                policy.sleep(delay)

    def _bisect(self, items: list[PreparedItem], exc: DynamoError, outcome: WriteOutcome) -> None:
        if len(items) == 1:
            it = items[0]
            outcome.failures.append(Failure(it.line, it.pk, it.sk, f"{exc.code}: {exc.message}"))
            return
        mid = len(items) // 2
        self._send(items[:mid], outcome)
        self._send(items[mid:], outcome)

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
            outcome.failures.append(
                Failure(
                    it.line,
                    it.pk,
                    it.sk,
                    f"{CONFLICT_PREFIX} {it.sk} already exists (written by {who})",
                )
            )
