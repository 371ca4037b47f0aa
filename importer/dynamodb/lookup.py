"""Reading before writing: BatchGetItem lookups by key.

BatchWriteItem cannot carry a condition, so the import modes (`importer.modes.stage`)
and the strict writer read first.  `KeyLookup.get_many(table, keys)` is
BatchGetItem with ConsistentRead, <= 100 distinct keys per call,
`UnprocessedKeys` resent under the shared retry budget (`importer.dynamodb.retry`), over
the run's one DynamoDB client (`importer.dynamodb.client`).  When keys stay unread after
every allowed attempt it raises `LookupFailed`, so the caller fails exactly
those rows rather than guess.  The keys are one type (`Keys`: a batch's own, or
listed ones); the calls go out through the one send loop
(`importer.dynamodb.send_loop`) that the writers use.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from json.encoder import encode_basestring as _encode_string
from typing import Any

from importer import _native
from importer.coordinator import RunCoordinator
from importer.dynamodb.api import DynamoClient, Reply
from importer.dynamodb.client import describe_table
from importer.dynamodb.errors import DynamoError, ErrorKind
from importer.dynamodb.pacing import Pacer
from importer.dynamodb.request_pool import Lanes, Waits
from importer.dynamodb.retry import Attempts, RetryPolicy, should_retry
from importer.dynamodb.send_loop import First, SendLoop, Taken
from importer.item_batch import ItemBatch

__all__ = ["MAX_GET_KEYS", "PROJECTION", "KeyLookup", "Keys", "LookupFailed"]

#: BatchGetItem reads at most 100 items (and 16 MB) per call.
MAX_GET_KEYS = 100
#: In an answer, most likely the usual "every key read" (followed up at once, not over the lanes).
_NONE_LEFT = b'"UnprocessedKeys":{}'
#: Attributes the modes need from a stored record (smaller responses, fewer RCUs).
PROJECTION = ("pk", "sk", "version", "attributes", "name", "requestId", "isDeleted")


class Keys:
    """The distinct keys one `get_many` reads: a batch's own (`of`), or listed ones.

    A batch's keys are all distinct when its maker says so (`ItemBatch.keys_unique`);
    each call's `Keys` JSON is then written by the batch (in C for a native
    `ItemBlock`), and the (pk, sk) tuples are made only for a call whose answer
    needs them (something found, keys left unprocessed, a failure) -- so a batch
    of new entities reads without them.  Listed keys are taken once each.
    """

    __slots__ = ("_batch", "_keys", "_versioned")

    def __init__(
        self,
        keys: Iterable[tuple[str, str]] = (),
        *,
        batch: ItemBatch | None = None,
        versioned: bool = True,
        distinct: bool = False,
    ) -> None:
        self._batch = batch
        self._versioned = versioned
        if batch is not None:
            self._keys: list[tuple[str, str]] = []
        elif distinct and isinstance(keys, list):
            self._keys = keys
        else:
            self._keys = list(dict.fromkeys(keys))

    @classmethod
    def of(cls, batch: ItemBatch, *, versioned: bool) -> Keys:
        """The keys of `batch`, whose keys are all distinct: at their version (pk, sk)
        or without it (pk, the sk up to its "@")."""
        return cls(batch=batch, versioned=versioned)

    def __len__(self) -> int:
        return len(self._batch) if self._batch is not None else len(self._keys)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """The keys as (pk, sk) tuples: what a reader that is not `KeyLookup` (a test's
        table, a custom lookup) takes, so any lookup can be handed a `Keys`."""
        if self._batch is not None:
            return iter(self._batch.entity_keys(self._versioned))
        return iter(self._keys)

    def parts(self, size: int) -> list[_Part]:
        """One call's keys each, <= `size` of them."""
        batch, keys = self._batch, self._keys
        if batch is None:
            return [_Part(keys[i : i + size]) for i in range(0, len(keys), size)]
        return [
            _Part(view=batch[i : i + size], versioned=self._versioned)
            for i in range(0, len(batch), size)
        ]


class _Part:
    """One call's keys: a list of them, or a batch's slice turned into one when needed."""

    __slots__ = ("_keys", "_versioned", "_view", "n")

    def __init__(
        self,
        keys: list[tuple[str, str]] | None = None,
        *,
        view: ItemBatch | None = None,
        versioned: bool = True,
    ) -> None:
        self._keys, self._view, self._versioned = keys, view, versioned
        self.n = len(keys) if keys is not None else len(view or ())

    def keys(self) -> list[tuple[str, str]]:
        if self._keys is None:
            assert self._view is not None
            self._keys = self._view.entity_keys(self._versioned)
        return self._keys

    def listed(self) -> bytes | None:
        """The `Keys` JSON, when the batch writes it (else `_body` makes it)."""
        return None if self._view is None else self._view.keys_json(self._versioned)


class LookupFailed(Exception):
    """Keys stayed unread after every allowed attempt; `keys` names them."""

    def __init__(self, message: str, keys: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.keys = list(keys)


class KeyLookup:
    """BatchGetItem by (pk, sk), ConsistentRead, <= 100 keys a call, unprocessed resent.

    Thread-safe (no per-call state).  `retries` and `calls` count over the
    lookup's lifetime (approximate under threads; for reporting only).
    """

    #: `get_many(..., raw=True)` answers items as their bytes
    raw_reads = True

    def __init__(
        self,
        client: DynamoClient,
        *,
        policy: RetryPolicy | None = None,
        projection: Sequence[str] | None = PROJECTION,
        pacer: Pacer | None = None,
        lanes: Lanes | None = None,
        coordinator: RunCoordinator | None = None,
    ) -> None:
        self.client = client
        #: the run's control: its first fatal error stops this worker's next send
        self.coordinator = coordinator if coordinator is not None else RunCoordinator()
        self.lanes = lanes
        self.policy = policy or RetryPolicy()
        #: read units: one per key (a strongly consistent read of an item up to 4 KB)
        self.pacer = pacer or Pacer(kind="read")
        self.projection = tuple(projection) if projection else None
        self.retries = 0
        self.calls = 0
        self._tail: bytes | None = None
        self._empty: dict[str, bytes] = {}
        #: how the calls go out: in groups through one client call, or one by one
        self.loop = SendLoop(client, self.pacer, self.coordinator, lanes)

    def table_exists(self, table: str) -> bool:
        """DescribeTable: True if it exists (fatal errors other than not-found raise)."""
        return describe_table(self.client, table) is not None

    def holds_nothing(self, table: str) -> bool:
        """True when a consistent Scan for one item finds none and has no more to
        read: the table held no item just now.  False when it finds one, or cannot
        tell (an error; a role without dynamodb:Scan, say): the caller then reads
        the table as if it held some."""
        body = json.dumps(
            {
                "TableName": table,
                "Limit": 1,
                "ConsistentRead": True,
                "ProjectionExpression": "#k",
                "ExpressionAttributeNames": {"#k": "pk"},
            },
            ensure_ascii=False,
        ).encode("utf-8", "surrogatepass")
        try:
            doc = self.client.post("Scan", body).doc
        except DynamoError:
            return False
        return (
            isinstance(doc, dict)
            and doc.get("Count") == 0
            and not doc.get("Items")
            and not doc.get("LastEvaluatedKey")
        )

    def _body(
        self, table: str, keys: Iterable[tuple[str, str]], listed: bytes | None = None
    ) -> bytes:
        # the same bytes as json.dumps(ensure_ascii=False), without building dicts: the
        # keys escaped and joined in C (or `listed`, already so); a key C leaves alone
        # (not a pair of str, a lone surrogate) sends the call through the C string
        # encoder, key by key
        if listed is None:
            keys = keys if isinstance(keys, list) else list(keys)
            listed = _native.keys_json(keys)
        if listed is None:
            enc = _encode_string
            listed = ",".join(
                [f'{{"pk":{{"S":{enc(pk)}}},"sk":{{"S":{enc(sk)}}}}}' for pk, sk in keys]
            ).encode("utf-8", "surrogatepass")
        tail = self._tail
        if tail is None:  # the same for every call: built once
            rest: dict[str, Any] = {"ConsistentRead": True}
            if self.projection:
                names = {f"#a{i}": n for i, n in enumerate(self.projection)}
                rest["ProjectionExpression"] = ",".join(names)
                rest["ExpressionAttributeNames"] = names
            text = json.dumps(rest, ensure_ascii=False, separators=(",", ":"))[1:]
            tail = self._tail = b"]," + text.encode("utf-8", "surrogatepass") + b"}}"
        head = f'{{"RequestItems":{{{_encode_string(table)}:{{"Keys":['
        return head.encode("utf-8", "surrogatepass") + listed + tail

    def _nothing_found(self, table: str) -> bytes:
        """The answer when none of the keys is stored and all were read, as DynamoDB
        writes it (compared as bytes: a batch of new rows skips the JSON parse)."""
        answer = self._empty.get(table)
        if answer is None:
            name = json.dumps(table, separators=(",", ":")).encode()
            answer = self._empty[table] = b'{"Responses":{' + name + b':[]},"UnprocessedKeys":{}}'
        return answer

    def get_many(
        self, table: str, keys: Iterable[tuple[str, str]] | Keys, *, raw: bool = False
    ) -> dict[tuple[str, str], Any]:
        """The stored items among `keys` (listed keys may repeat), by (pk, sk).

        With `lanes`, the calls of one lookup go out side by side.  `raw`: each item as
        its compact JSON bytes, cut from the answer without parsing it when C can
        (`importer._native.answer_items`; the mode stage compares them as bytes).
        """
        wanted = keys if isinstance(keys, Keys) else Keys(keys)
        reads = _Reads(self, table, raw)
        sent = self.loop.send(reads, wanted.parts(MAX_GET_KEYS))
        self.calls += sent.clean
        found: dict[tuple[str, str], Any] = {}
        for got in sent.results:
            found.update(got)
        return found

    def _get_alone(
        self,
        table: str,
        keys: list[tuple[str, str]],
        waits: Waits | None,
        first: First | None = None,
        *,
        raw: bool = False,
    ) -> dict[tuple[str, str], Any]:
        found: dict[tuple[str, str], Any] = {}
        self._get_chunk(table, keys, found, first, waits, raw=raw)
        return found

    def _get_chunk(
        self,
        table: str,
        keys: list[tuple[str, str]],
        found: dict[tuple[str, str], Any],
        first: First | None = None,
        waits: Waits | None = None,
        *,
        raw: bool = False,
    ) -> None:
        """Read `keys` (<= 100) into `found` until none is left unprocessed.

        `first`: the answer to the first call, already made by a group of the send
        loop (with the units sent and when its slot was taken).  `waits`: where
        backoff and pacing sleeps are told.
        """
        attempts = Attempts(self.policy, waits)
        pending = keys
        pacer = self.pacer
        while pending:
            self.calls += 1
            n = len(pending)
            sent_at = None
            if first is not None:
                answer, _, sent_at = first
                first = None
            else:
                self.coordinator.raise_if_failed()
                pacer.acquire(n, n, waits)
                try:
                    answer = self.client.post("BatchGetItem", self._body(table, pending))
                except DynamoError as exc:
                    answer = exc
            if not isinstance(answer, DynamoError):
                got: dict[tuple[str, str], Any]
                left: list[Any]
                cut: dict[tuple[str, str], Any] | None = None
                if answer.raw == self._nothing_found(table):  # new keys: nothing to parse
                    cut = {}
                elif raw and answer.raw is not None:
                    cut = _native.answer_items(answer.raw, _table_json(table))
                if cut is not None:
                    got, left = cut, []
                else:
                    try:
                        got, left = _read_get(answer.doc, table)
                    except DynamoError as exc:  # a 200 the client cannot read: not an answer
                        answer = exc
                    else:
                        if raw:  # an answer C did not cut (keys left, escapes): as bytes
                            got = {k: _compact(v) for k, v in got.items()}
            if isinstance(answer, DynamoError):
                error = answer
                throttled = error.kind is ErrorKind.THROTTLED
                pacer.settle(
                    sent=n,
                    processed=0,
                    processed_units=0,
                    throttled=throttled,
                    sent_units=n,
                    sent_at=sent_at,
                )
                if should_retry(self.client, attempts, error, table, coordinator=self.coordinator):
                    self.retries += 1
                    continue
                raise LookupFailed(
                    f"BatchGetItem on {table}: {error.describe()}", pending
                ) from None
            found.update(got)
            done = n - len(left)
            pacer.settle(
                sent=n,
                processed=done,
                processed_units=done,
                throttled=bool(left),
                sent_units=n,
                sent_at=sent_at,
            )
            if not left:
                return
            if len(left) < len(pending):
                attempts.progressed()
            pending = left
            if not attempts.again(f"UnprocessedKeys: {len(left)} key(s)"):
                raise LookupFailed(
                    f"BatchGetItem on {table}: {len(left)} key(s) still unprocessed after "
                    f"{attempts.stalls} attempt(s)",
                    left,
                )
            self.retries += 1

    def close(self) -> None:
        """Nothing to release: the client belongs to the run."""


class _Reads:
    """One `get_many`'s calls, as the send loop sends them (`send_loop.Requests`)."""

    __slots__ = ("lookup", "raw", "table")
    operation = "BatchGetItem"

    def __init__(self, lookup: KeyLookup, table: str, raw: bool = False) -> None:
        self.lookup, self.table, self.raw = lookup, table, raw

    def cost(self, part: _Part) -> tuple[int, int]:
        return part.n, part.n  # a read unit a key

    def body(self, part: _Part) -> bytes:
        listed = part.listed()
        return self.lookup._body(self.table, part.keys() if listed is None else (), listed)

    def answered(self, part: _Part, answer: Reply | DynamoError) -> Taken:
        """Nothing found and nothing left is settled with the group: its keys are not
        needed (a batch's are then never made); everything read is taken at once."""
        if isinstance(answer, Reply) and answer.raw is not None:
            if answer.raw == self.lookup._nothing_found(self.table):
                return Taken.CLEAN
            # (DynamoDB writes it after Responses: looked for from the end, not through
            # every item of the answer)
            if answer.raw.rfind(_NONE_LEFT) >= 0:
                return Taken.HERE
        return Taken.LANES

    def follow(
        self, part: _Part, first: First | None, waits: Waits | None
    ) -> dict[tuple[str, str], Any]:
        return self.lookup._get_alone(self.table, part.keys(), waits, first, raw=self.raw)


def _table_json(table: str) -> bytes:
    return json.dumps(table, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _compact(item: dict[str, Any]) -> bytes:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogatepass"
    )


def _read_get(doc: dict[str, Any], table: str) -> tuple[dict[tuple[str, str], Any], list]:
    """A BatchGetItem answer's items by key and its unprocessed keys -- read whole or not
    at all: a key missing from an answer that could not be read is not "not found"
    (that would make an existing entity look new)."""

    def bad(what: str) -> DynamoError:
        return DynamoError("MalformedResponse", f"200 answer: {what}", status=500)

    responses = doc.get("Responses")
    if not isinstance(responses, dict):
        raise bad("Responses is not a map")
    items = responses.get(table, [])
    if not isinstance(items, list):
        raise bad(f"Responses[{table!r}] is not a list")
    found = {}
    for item in items:
        try:
            found[(item["pk"]["S"], item["sk"]["S"])] = item
        except (KeyError, TypeError):
            raise bad("an item in Responses has no key") from None
    unprocessed = doc.get("UnprocessedKeys", {})
    if not isinstance(unprocessed, dict):
        raise bad("UnprocessedKeys is not a map")
    entry = unprocessed.get(table) or {}
    keys = entry.get("Keys", []) if isinstance(entry, dict) else None
    if not isinstance(keys, list):
        raise bad("UnprocessedKeys holds no list of keys")
    left = []
    for k in keys:
        try:
            left.append((k["pk"]["S"], k["sk"]["S"]))
        except (KeyError, TypeError):
            raise bad("an UnprocessedKeys entry has no key") from None
    return found, left
