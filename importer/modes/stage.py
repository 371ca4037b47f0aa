"""Import modes for tables that already hold data: insert, upsert, strict (and blind).

An MBC command table keeps every version of an entity (`sk = TYPE#code@v`); the
data table keeps the latest (`sk = TYPE#code`, `version` = latest).  The
transform renders every row as version 1; this stage, between transform and
writer, reads first and decides each row's fate:

==========  ==================================================================
mode        an entity that already exists
==========  ==================================================================
``insert``  (default) not written: `Reject(reason="exists (version v)")`
``upsert``  merged into the current record (a partial update, as the
            framework's import does with ``publishPartialUpdateAsync``) and the
            result compared with it (name, attributes, isDeleted): EQUAL ->
            skipped, counted `unchanged`; CHANGED -> written as version
            current+1; NOT_EXIST -> version 1.  `update="replace"` writes the
            row as the whole record instead.
``strict``  as upsert, and the writer must be `StrictWriter` (conditional
            TransactWriteItems: a concurrent writer is never overwritten)
``blind``   today's behaviour: every row version 1, no reads (benchmarks)
==========  ==================================================================

How the current version is found (`_probe`, run in parallel across batches):

1. the data table's item at (pk, `TYPE#code`) -- ConsistentRead BatchGetItem;
   with no data table (insert mode only) every entity starts "unknown";
2. then the command table at `@current+1` (or `@1`), and upwards while a
   version is there: the data table is filled asynchronously by MBC and may lag
   the command table, so the first free `@v` is the truth.  (Insert mode stops
   at the first stored version it sees.)

Idempotency: every item carries `requestId = {run_id}#{line}`.  If any record
met on the way (data or command table) has the row's own requestId, the row was
already written at that version by an earlier attempt of this run (a retried
child, a resumed run): it is re-sent at *that* version (the same bytes for the
same BatchInput; the StrictWriter recognises its own requestId and counts it as
written), never bumped again.  A data table already synced to the row gives the
same answer.

Duplicate codes and concurrency: a run-level map (entity -> last version
assigned, its compared fields as compact JSON, line) is updated in file order.  Each
batch takes a *ticket* on the submitting thread from the run's one
`importer.ordering.FileOrder` (`stage.order`); the network reads run concurrently,
but the in-memory assignment step of ticket t waits until every ticket < t has
finished its own assignment (or was released).  So two batches holding the same
code always version it in file order: upsert gives each later row the next
version (or `unchanged` when it equals the previous row), insert rejects the
later rows.  A batch must always
release its ticket: `prepare` does so itself; call `release(ticket)` in a
`finally` for batches that fail before `prepare`.  When the run stops (its
coordinator halted or failed) the order wakes every waiting batch, whose rows
then become failures (`_not_assigned`), so none waits for a batch that never comes.

The map holds only what the tables may not show yet (`importer.modes.ledger.WindowLedger`):
a batch's assignments are dropped once its write is visible to every batch still
to assign (the batch reports its write to the order: `FileOrder.written`) -- from
then on the probe finds them in the table, and a record this run wrote for an
earlier line is reported exactly as the map would have (`exists (version v):
duplicate of line n`).  So memory stays flat however long the file.  A run whose
writes never reach the table (validate, or no endpoint) keeps every entity
instead (`importer.modes.ledger.DigestLedger`: 16 bytes an entity in memory up
to a bound, then sorted runs on disk).  A row found equal to its stored record
(unchanged) puts nothing in the map at all: the table already says what its entry
would (that version, those fields).

With nothing to read in insert mode (validate without a table) a row's fate
depends only on whether it is its entity's first in the file, so there the
batches take no turn: each registers its entities when it has them (an entity
keeps the smallest line it was met at) and answers at once.  Only a batch that
got ahead of an earlier one holding the same entity can be wrong, and it is
settled when the turn passes it (`PendingRejects`, `BatchOutcome.final`).

`rows == written + unchanged + rejected + failed` holds per batch:
`len(items) == len(out.items) + out.unchanged + len(out.rejects) + len(out.failures)`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from importer._native import block_stored, stored_head, stored_merge, wire_pick
from importer.dynamodb.errors import WriterFatalError
from importer.dynamodb.lookup import KeyLookup, Keys, LookupFailed
from importer.item_batch import ItemBatch, ItemList, as_batch
from importer.modes.ledger import DigestLedger, WindowLedger
from importer.modes.merge import MERGED_FIELDS, merge_version
from importer.ordering import FileOrder, Stopped
from importer.records import Failure, PreparedItem, Reject, RejectKind, code_of
from importer.transform.reference import wire_json

__all__ = [
    "DEFAULT_MODE",
    "MODES",
    "UPDATES",
    "Mode",
    "ModeStage",
    "PreparedBatch",
    "compare_digest",
    "default_data_table",
    "mode_of",
    "update_of",
]

log = logging.getLogger(__name__)

Mode = Literal["blind", "insert", "upsert", "strict"]
MODES: tuple[Mode, ...] = ("insert", "upsert", "strict", "blind")
#: What every entry point does without a mode given (the CLI, the Lambda child, the
#: template's parameter, the library's settings): the safe mode that never overwrites.
DEFAULT_MODE: Mode = "insert"
#: How upsert/strict apply a row to an entity that exists: deep-merged into its latest
#: version (the framework's publishPartialUpdate; the default), or as the whole record.
UPDATES: tuple[str, ...] = ("merge", "replace")
#: Command versions newer than the data table probed per row before giving up.
MAX_PROBE_ROUNDS = 64


def mode_of(value: str | None) -> Mode:
    """`value` as an import mode; None or "" is `DEFAULT_MODE`.  The one reading of a mode
    given as text (an option, BatchInput, the environment); ValueError in one line."""
    if not value:
        return DEFAULT_MODE
    for mode in MODES:
        if mode == value:
            return mode
    raise ValueError(f"unknown mode {value!r} (one of: {', '.join(MODES)})")


def update_of(value: str) -> str:
    """`value` checked as an update rule (`UPDATES`); ValueError in one line."""
    if value not in UPDATES:
        raise ValueError(f"unknown update {value!r} (one of: {', '.join(UPDATES)})")
    return value


def default_data_table(table: str) -> str | None:
    """`{env}-{app}-{module}-command` -> `...-data`; None for other names."""
    return table[: -len("-command")] + "-data" if table.endswith("-command") else None


# --------------------------------------------------------------------------- compare


def _canon(value: Any) -> Any:
    if not isinstance(value, dict) or len(value) != 1:
        return value
    ((kind, inner),) = value.items()
    if kind == "N":
        try:
            d = Decimal(inner)
        except InvalidOperation:
            return {"N": inner}
        return {"N": "0" if d == 0 else str(d.normalize())}
    if kind == "M":
        return {"M": {k: _canon(v) for k, v in inner.items()}}
    if kind == "L":
        return {"L": [_canon(v) for v in inner]}
    if kind == "NS":
        return {"NS": sorted(str(Decimal(x).normalize()) for x in inner)}
    if kind in ("SS", "BS"):
        return {kind: sorted(inner)}
    return {kind: inner}


def compare_digest(item: Mapping[str, Any]) -> bytes:
    """16-byte digest of what MBC's compare looks at: name, attributes, isDeleted.

    Numbers compare by value (`1.50` == `1.5`), sets without order; a missing
    `isDeleted` equals false and missing `attributes` an empty map.
    """
    deleted = item.get("isDeleted") or {"BOOL": False}
    doc = {
        "name": _canon(item.get("name") or {"S": ""}),
        "attributes": _canon(item.get("attributes") or {"M": {}}),
        "isDeleted": bool(deleted.get("BOOL", False)),
    }
    raw = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _state(item: Mapping[str, Any], names: Sequence[str]) -> bytes:
    """The `names` fields of an item (DynamoDB JSON, wire form kept) as compact JSON.

    What the stage keeps per entity: merging, the next row of the entity merges into
    it; replacing, it is compared by `_same` (the run map holds it until the table
    shows it).
    """
    doc = {k: item[k] for k in names if k in item}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogatepass"
    )


#: What the run map keeps of a row: merging, the fields the next row merges into
#: (`_state`); replacing, the fields `compare_digest` reads (compared by `_same`).
_MERGE_FIELDS = ("name", "attributes")
_REPLACE_FIELDS = ("name", "attributes", "isDeleted")
_MERGE_NAMES = (b"name", b"attributes")
_REPLACE_NAMES = (b"name", b"attributes", b"isDeleted")


def _merge_state(wire: bytes, picked: bytes | None = None, *, replace: bool = False) -> bytes:
    """`_state(json.loads(wire), ("name", "attributes"))` (with `replace`, and
    "isDeleted"), spliced from the members' bytes (`importer._native.wire_pick`: equal
    as JSON); the general way for a record the native split does not take.  `picked`:
    `wire_pick`'s answer, when already made."""
    if picked is None:
        picked = wire_pick(wire, _REPLACE_NAMES if replace else _MERGE_NAMES)
    if picked is None:
        return _state(json.loads(wire), _REPLACE_FIELDS if replace else _MERGE_FIELDS)
    return picked


def _merge_states(
    items: Sequence[PreparedItem] | ItemBatch, *, replace: bool = False
) -> list[bytes]:
    """`_merge_state` of each item (of a native `ItemBlock` without a PreparedItem per row)."""
    items = as_batch(items)
    picked = items.pick(_REPLACE_NAMES if replace else _MERGE_NAMES)
    return [
        p if p is not None else _merge_state(items[i].wire, replace=replace)
        for i, p in enumerate(picked)
    ]


def _same(a: bytes, b: bytes) -> bool:
    """Two states equal as MBC's compare sees them (`compare_digest`, which reads only
    name, attributes and isDeleted: a state holding those compares as its record)."""
    return a == b or compare_digest(_load(a)) == compare_digest(_load(b))


def _load(state: bytes) -> dict[str, Any]:
    return json.loads(state.decode("utf-8", "surrogatepass"))


def _as_read(data: Mapping[tuple[str, str], bytes]) -> tuple[dict, dict]:
    """Stored records as bytes, as `_probe` takes what was read (parsed)."""
    return {k: json.loads(v) for k, v in data.items()}, {}


def _version_of(item: Mapping[str, Any], default: int) -> int:
    try:
        return int(item["version"]["N"])
    except (KeyError, TypeError, ValueError):
        return default


def _request_id(item: Mapping[str, Any] | None) -> str | None:
    if not item:
        return None
    value = item.get("requestId")
    return value.get("S") if isinstance(value, dict) else None


# --------------------------------------------------------------------------- records


@dataclass(slots=True)
class PreparedBatch:
    """What the mode stage decided for one batch's items.

    `items` go to the writer (at their versions); `rejects` are rows refused
    (entity exists in insert mode, ...); `failures` rows that could not be
    decided (reads failed after every retry, run aborted); `unchanged` rows
    equal to the current record (upsert/strict), not written.
    """

    items: ItemBatch = field(default_factory=ItemList)
    rejects: list[Reject] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    unchanged: int = 0
    #: validate's duplicates, decided before every earlier batch had its say: the
    #: last word on `rejects` (see `PendingRejects`), None once nothing can change
    pending: PendingRejects | None = None


class PendingRejects:
    """A batch's duplicate rejects as first decided, and their final form.

    Validate without a table (insert mode) lets each batch register its entities
    the moment it has them (`KeyDigests.first_lines`: an entity keeps the
    smallest line it was met at), without waiting for the batches before it.
    A batch can only be wrong about an entity an earlier batch also holds and
    registered later -- then that earlier batch *moved* the entity's first line.
    Once every earlier batch has registered (the stage's turn passes this one),
    the answers are final: unchanged when nothing moved since, else decided again
    from the first lines as they now stand.  The driver counts a batch only after
    every earlier one, and takes `final()` then.
    """

    __slots__ = (
        "_digests", "_fields", "_items", "_lines", "_moves", "_stage", "_ticket",
        "provisional", "rejects",
    )  # fmt: skip

    def __init__(
        self,
        stage: ModeStage,
        ticket: int,
        items: Sequence[PreparedItem],
        lines: list[int],
        digests: bytes,
        fields: Mapping[int, Sequence[str]],
        moves: int,
        rejects: list[Reject],
    ) -> None:
        self._stage, self._ticket, self._lines, self._moves = stage, ticket, lines, moves
        # held until the batch is settled, then let go
        self._items: Sequence[PreparedItem] | None = items
        self._fields: Mapping[int, Sequence[str]] | None = fields
        self._digests: bytes | None = digests
        #: the rejects the batch reported; `rejects`: the final ones (None: not yet known)
        self.provisional = rejects
        self.rejects: list[Reject] | None = None

    def _settle(self, moves: int, firsts: list[int] | None) -> None:
        """The turn has passed this batch (under the stage's lock): decide for good."""
        if moves == self._moves or firsts is None or self._items is None or self._fields is None:
            self.rejects = self.provisional
        else:
            self.rejects = self._stage._duplicates(self._items, self._lines, firsts, self._fields)
        self._items = self._fields = self._digests = None  # nothing more to hold

    def final(self) -> list[Reject]:
        """The batch's final duplicate rejects (waits for earlier batches when called
        before they all registered: the driver never does)."""
        if self.rejects is None:
            self._stage._settle_pending(self)
        assert self.rejects is not None
        return self.rejects


_REQUEST_ID = b'"requestId":{"S":"'


def _wire_request_id(wire: bytes) -> str | None:
    """The item's requestId read straight from its wire JSON (no parse of the whole item).

    The transform writes `requestId` after `attributes` and nothing nested after it, so
    the last occurrence is the top-level one even when a column is called requestId.
    """
    start = wire.rfind(_REQUEST_ID)
    if start < 0:
        return None
    start += len(_REQUEST_ID)
    end = wire.find(b'"', start)
    value = wire[start:end]
    if end < 0 or b"\\" in value:  # an escaped character: let json decide
        return _request_id(json.loads(wire))
    return value.decode("utf-8", "surrogatepass")


@dataclass(slots=True)
class _Row:
    item: PreparedItem
    base: str  # TYPE#code
    code: str
    #: None: read from the wire when first needed (insert mode rarely needs it)
    request_id: str | None
    #: what the row compares by (`_same`), as compact JSON (`_state`): its own name and
    #: attributes ("merge"), and isDeleted ("replace")
    digest: bytes
    # probe results
    cur_version: int = 0  # latest stored version met (0 = none)
    cur_digest: bytes = b""  # the stored version's `_state` (see `digest`)
    mine: int = 0  # version at which this very row is already stored (0 = none)
    mine_state: bytes = b""  # ("merge") the fields stored at `mine`
    cur_line: int = 0  # line of this run that wrote cur_version (0 = another writer)
    failed: str = ""
    lazy_id: bool = False  # request_id not read yet (see `_who_wrote`)


def _not_assigned(items: Sequence[PreparedItem]) -> PreparedBatch:
    """A batch the run stopped before its turn: every row fails, none is written."""
    reason = "not written: the run stopped before this batch's versions were assigned"
    return PreparedBatch(failures=[Failure(it.line, it.pk, it.sk, reason) for it in items])


class ModeStage:
    """The mode stage of one run (thread-safe; one instance per run or per Lambda batch).

    Build it with `ModeStage.open(...)`, which checks the data table; the
    constructor trusts its arguments.  `lookup` reads both tables.
    """

    def __init__(
        self,
        *,
        mode: Mode,
        table: str,
        data_table: str | None,
        lookup: KeyLookup | None,
        code_column: str = "",
        remember_all: bool = False,
        update: str = "merge",
        keep_name: bool = False,
        order: FileOrder | None = None,
    ) -> None:
        mode_of(mode)
        update_of(update)
        #: upsert/strict deep-merge rows into the latest version (the framework's import)
        self.merge = update == "merge" and mode in ("upsert", "strict")
        #: the spec names no record.name: a merge keeps the stored name
        self.keep_name = keep_name
        if mode in ("upsert", "strict") and not data_table and lookup is not None:
            raise WriterFatalError(f"{mode} mode needs the data table (pass --data-table)")
        self.mode = mode
        self.table = table
        self.data_table = data_table
        self.lookup = lookup
        self.code_column = code_column
        self.notices: list[str] = []
        #: the run's file order (one ticket counter for the stage and the sync); the run
        #: map is kept under its lock, so a turn passing and the map's advance are one step
        self.order = order if order is not None else FileOrder()
        self._lock = self.order.lock
        self._turns = self.order.turns(on_advance=self._advanced)
        #: validate's batches registered ahead of their turn (see `PendingRejects`)
        self._pending: dict[int, PendingRejects] = {}
        # the run map: entity -> (version, digest, line); flat in memory (importer.modes.ledger).
        # Only a run that writes can forget what the tables show.
        self._window: WindowLedger | None = None
        self._ledger: DigestLedger | WindowLedger
        #: validate without a table, insert mode: duplicates need no turn (`_insert_unordered`)
        self._digests: DigestLedger | None = None
        if remember_all or lookup is None:
            self._ledger = DigestLedger()
            if lookup is None and mode == "insert":
                self._digests = self._ledger
        else:
            self._ledger = self._window = WindowLedger()
            self.order.on_written(self._written)

    @classmethod
    def open(
        cls,
        *,
        mode: Mode,
        table: str,
        data_table: str | None = None,
        lookup: KeyLookup | None,
        code_column: str = "",
        remember_all: bool = False,
        update: str = "merge",
        keep_name: bool = False,
        order: FileOrder | None = None,
    ) -> ModeStage:
        """Resolve and check the data table, then build the stage.

        `data_table=None` means the default (`-command` -> `-data`).  A missing
        data table is fatal in upsert/strict mode; in insert mode existence is
        then checked against the command table's `@1` keys (said once, in
        `notices` and the log).  `remember_all`: the run's writes never reach
        the table (a dry run), so the run map keeps every entity.
        """
        if mode == "blind":
            return cls(
                mode=mode,
                table=table,
                data_table=None,
                lookup=lookup,
                code_column=code_column,
                order=order,
            )
        name = data_table or default_data_table(table)
        if lookup is None:  # a dry run without a table: only this run's rows are compared
            stage = cls(
                mode=mode,
                table=table,
                data_table=name,
                lookup=None,
                code_column=code_column,
                update=update,
                keep_name=keep_name,
                order=order,
            )
            stage.notices.append(
                "no --table given: rows were checked against each other, not against "
                "entities already stored"
            )
            return stage
        exists = lookup.table_exists(name) if name else False
        notice = None
        if not exists:
            why = (
                f"data table {name!r} does not exist"
                if name
                else f"no data table given and {table!r} does not end in '-command'"
            )
            if mode in ("upsert", "strict"):
                raise WriterFatalError(
                    f"{mode} mode needs the data table to know current versions: {why} "
                    "(pass --data-table NAME)"
                )
            notice = f"{why}: rows are checked against the command table {table!r} only"
            name = None
        elif mode == "insert" and name and lookup.holds_nothing(name):
            # Every data row is synced from a command record, so while this run lasts
            # an entity that reaches the data table has its @1 in the command table,
            # which insert reads anyway: the data table has nothing more to say (an
            # MBC system's first import reads each row's key once, not twice).
            notice = (
                f"data table {name!r} is empty (a first import): rows are checked against "
                f"the command table {table!r} only"
            )
            name = None
        stage = cls(
            mode=mode,
            table=table,
            data_table=name,
            lookup=lookup,
            code_column=code_column,
            remember_all=remember_all,
            update=update,
            keep_name=keep_name,
            order=order,
        )
        if notice:
            stage.notices.append(notice)
            log.info("%s", notice)
        return stage

    # ------------------------------------------------------------------ ordering

    def ticket(self) -> int:
        """Take the next place in file order (the run's one counter, `self.order`)."""
        return self.order.ticket()

    def release(self, ticket: int | None) -> None:
        """This ticket's assignment is over (idempotent)."""
        self._turns.release(ticket)

    def _advanced(self, old: int, new: int) -> None:
        """The turn moved past tickets `old`..`new - 1` (the order's lock is held)."""
        for passed in range(old, new):
            pending = self._pending.pop(passed, None)
            if pending is not None:
                self._settle_locked(pending)
        if self._window is not None:
            self._window.advance(new)

    def _written(self, ticket: int, issued: int) -> None:
        """Batch `ticket`'s write returned (`FileOrder.written`, the order's lock held):
        batches handed out from now on see it.

        Its entries leave the run map once every earlier-issued batch has
        assigned (`importer.modes.ledger.WindowLedger`).  The order is told after
        the writer returned, never before: the table must already hold what it forgets.
        """
        assert self._window is not None
        self._window.written(ticket, issued)
        self._window.advance(self._turns.turn)

    def _wait_turn(self, ticket: int | None) -> None:
        """Wait for the earlier tickets' assignments; `Stopped` once the run stops."""
        self._turns.wait(ticket)

    # ------------------------------------------------------------------ the stage

    def prepare(
        self,
        items: Sequence[PreparedItem],
        rows: Mapping[int, Sequence[str]] | None = None,
        *,
        ticket: int | None = None,
    ) -> PreparedBatch:
        """Decide every item's fate; `rows` (line -> CSV fields) fills `Reject.row`.

        `items` are all valid rows of the batch, duplicates included, as the
        transform rendered them (version 1).  Always releases `ticket`.
        """
        try:
            if self.mode == "blind":
                return PreparedBatch(items=ItemList(items))
            items = as_batch(items)
            lines = items.lines()
            if lines != sorted(lines):  # the transform keeps file order; a caller may not
                items = ItemList(sorted(items, key=lambda it: it.line))
                lines.sort()
            read: tuple[dict, dict] | None = None
            if self.mode == "insert" and self.lookup is None and self._digests is not None:
                done = self._insert_unordered(items, lines, rows or {}, ticket)
                if done is not None:
                    return done
            if self.mode == "insert":
                fresh = self._insert_fresh(items, lines, ticket)
                if isinstance(fresh, PreparedBatch):
                    return fresh
                read = fresh
                # insert never compares contents: no JSON parse, no digest per row
                parsed = [
                    _Row(it, it.sk.rsplit("@", 1)[0], "", None, b"", lazy_id=True) for it in items
                ]
            else:
                fresh = self._merge_fresh(items, lines, ticket)
                if isinstance(fresh, PreparedBatch):
                    return fresh
                read = fresh
                parsed = [self._parse(it) for it in items]
            lookup_error = ""
            try:
                self._probe(parsed, read)
            except LookupFailed as exc:
                lookup_error = f"lookup failed: {exc}"
            try:
                self._wait_turn(ticket)
            except Stopped:
                return _not_assigned(items)
            with self._lock:  # the run map is shared by every batch of the run
                return self._assign(parsed, rows or {}, lookup_error, ticket)
        finally:
            self.release(ticket)

    def _insert_unordered(
        self,
        items: ItemBatch,
        lines: list[int],
        fields: Mapping[int, Sequence[str]],
        ticket: int | None,
    ) -> PreparedBatch | None:
        """Insert with nothing to read (validate without a table): each entity's first
        row in the file is written, every later one is `exists (version 1): duplicate
        of line <first>` -- what `_assign` decides there, whatever the batch order.

        So the batch does not wait for its turn: it registers its entities now
        (`DigestLedger.first_lines`) and answers from what is known.  If an
        earlier batch has not registered yet, the answer is provisional
        (`PreparedBatch.pending`), settled when the turn passes this batch.
        None when a line is out of the digests' range (the ordered way then).
        """
        ledger = self._digests
        assert ledger is not None
        keys = items.entity_keys(versioned=False)
        digests = ledger.digest(keys)  # outside the lock: most of the work
        with self._lock:
            moves = ledger.moves
            try:
                firsts = ledger.first_lines(digests, lines)
            except ValueError:
                return None
            settled = ticket is None or self._turns.turn >= ticket
        if firsts == lines:  # every row its entity's first so far: the usual batch
            out = PreparedBatch(items=items)
        else:
            rejects = self._duplicates(items, lines, firsts, fields)
            pairs = zip(items, lines, firsts, strict=True)
            kept = [it for it, line, first in pairs if line == first]
            out = PreparedBatch(items=ItemList(kept), rejects=rejects)
        if not settled:
            assert ticket is not None
            out.pending = PendingRejects(
                self, ticket, items, lines, digests, fields, moves, out.rejects
            )
            with self._lock:  # the turn cannot pass this batch before its own release
                self._pending[ticket] = out.pending
        return out

    def _duplicates(
        self,
        items: Sequence[PreparedItem],
        lines: list[int],
        firsts: list[int],
        fields: Mapping[int, Sequence[str]],
    ) -> list[Reject]:
        """The rows that are not their entity's first (`firsts`), as insert rejects them."""
        return [
            self._reject(
                _Row(it, "", "", None, b""),
                f"exists (version 1): duplicate of line {first}",
                fields,
                RejectKind.DUPLICATE,
            )
            for it, line, first in zip(items, lines, firsts, strict=True)
            if first != line
        ]

    def _settle_locked(self, pending: PendingRejects) -> None:
        """Every batch before `pending`'s has registered (the stage's lock is held)."""
        ledger = self._digests
        assert ledger is not None
        if pending.rejects is not None:
            return
        moves = ledger.moves
        firsts = None
        if moves != pending._moves and pending._digests is not None:
            firsts = ledger.first_lines(pending._digests, pending._lines)
        pending._settle(moves, firsts)

    def _settle_pending(self, pending: PendingRejects) -> None:
        """`PendingRejects.final` before the turn passed: wait for it (or the abort)."""
        try:
            self._wait_turn(pending._ticket + 1)
        except Stopped:
            pass  # the run stopped: settle with what is registered
        with self._lock:
            self._pending.pop(pending._ticket, None)
            self._settle_locked(pending)

    def _insert_fresh(
        self, items: ItemBatch, lines: list[int], ticket: int | None
    ) -> PreparedBatch | tuple[dict, dict] | None:
        """Insert's hot path, batch-wide: when neither table holds any of the batch's
        entities (a new file), they are all written -- unless the run map knows one
        or a key repeats -- without a `_Row` per row: the outcome `_assign`'s loop
        would reach, which decides every other batch.  `lines` are the items' lines
        (`prepare` has them already).

        Returns the batch's outcome; or what the two reads found (data table,
        command table at @1) for `_probe` to go on from without reading again;
        or None when the short way does not apply (an item not at @1, a read
        that failed: `_probe` reads, and reports, again).
        """
        lookup = self.lookup
        if not items.at_version_1():  # (a native block answers without an object per row)
            return None
        keys = items.entity_keys(versioned=False)
        unique = items.keys_unique()  # every sk at @1: (pk, sk) repeat as the entities do
        if lookup is not None:
            try:
                # the reads need not look for repeats again when there are none
                wanted = Keys(keys, distinct=True) if unique else keys
                data = lookup.get_many(self.data_table, wanted) if self.data_table else {}
                if not data:
                    # the batch's keys at @1, written by the batch (no tuple per key in C)
                    at_1 = Keys.of(items, versioned=True) if unique else items.entity_keys()
                    stored = lookup.get_many(self.table, at_1)
                else:
                    stored = {}
            except LookupFailed:
                return None
            if data or stored:
                return data, stored
        try:
            self._wait_turn(ticket)
        except Stopped:
            return _not_assigned(items)
        with self._lock:
            if not unique or not self._ledger.add_new(keys, lines, ticket):
                # `_assign` decides row by row (this batch's turn is already taken);
                # both tables were read and hold none of the rows
                return {}, {}
        return PreparedBatch(items=items)

    def _merge_fresh(
        self, items: ItemBatch, lines: list[int], ticket: int | None
    ) -> PreparedBatch | tuple[dict, dict] | None:
        """Upsert's and strict's hot path (merging or replacing), batch-wide, as
        `_insert_fresh` is insert's: when neither table holds any of the batch's
        entities, the run map knows none and no key repeats, every row is written as it
        is, at version 1 -- `_assign`'s answer for each -- without parsing a row.  The
        run map gets each entity's name and attributes (and isDeleted, replacing) as
        `_state` would give them, spliced from the item's members
        (`importer._native.wire_pick`) rather than parsed.  When the data table holds
        some, `_merge_stored` decides.  Without a table (validate) there is nothing to
        read: only the run map is asked.

        Returns the outcome; or what the reads found, for `_probe` to go on from;
        or None when the short way does not apply (`_probe` reads again).
        """
        lookup = self.lookup
        if not items.at_version_1():
            return None
        keys = items.entity_keys(versioned=False)
        if not items.keys_unique():
            return None
        if lookup is not None:  # (validate without a table: nothing stored to read)
            assert self.data_table
            try:
                if lookup.raw_reads:  # (declared: get_many(..., raw=True) answers bytes)
                    data = lookup.get_many(self.data_table, Keys(keys, distinct=True), raw=True)
                    if data:
                        return self._merge_stored(items, keys, lines, data, ticket)
                else:
                    data = lookup.get_many(self.data_table, Keys(keys, distinct=True))
                    if data:
                        return data, {}
                stored = lookup.get_many(self.table, Keys.of(items, versioned=True))
            except LookupFailed:
                return None
            if stored:
                return {}, stored
        states = _merge_states(items, replace=not self.merge)
        try:
            self._wait_turn(ticket)
        except Stopped:
            return _not_assigned(items)
        with self._lock:
            if self._ledger.knows_any(keys):
                return {}, {}  # `_assign` decides row by row; both tables were read
            self._ledger.store(
                {k: (1, st, line) for k, st, line in zip(keys, states, lines, strict=True)},
                ticket,
            )
        return PreparedBatch(items=items)

    def _merge_stored(
        self,
        items: ItemBatch,
        keys: list[tuple[str, str]],
        lines: list[int],
        data: dict[tuple[str, str], bytes],
        ticket: int | None,
    ) -> PreparedBatch | tuple[dict, dict] | None:
        """`_merge_fresh` when the data table holds some of the batch's entities (a file
        imported into the live table again): each stored record is compared with its row
        by bytes -- for a native block the whole batch in one C call
        (`importer._native.block_stored`: the usual answers, unchanged or the next
        version, without a Python object per row), else row by row
        (`importer._native.stored_merge`) -- and the Python way (`_stored_verdict`)
        answers only a row the bytes cannot.  `_probe`'s reads are the same: the data
        row, then the command table at the next version (or @1), which must hold nothing.

        Returns the outcome; or what was read (`_probe` goes on from it) when the batch is
        not the usual one: a record this run wrote, a command table ahead of the data
        table, an entity the run map knows.

        A row found unchanged leaves nothing in the run map: the table shows what the
        entry would say (that version, those fields), so a later row of the entity reads
        the same from the table as `_assign` would take from the map.
        """
        lookup = self.lookup
        assert lookup is not None and self.data_table
        block = items.block()
        if block is None:
            return self._stored_rows(items, keys, data, ticket)
        got = block_stored(block, data, keys, self.keep_name, not self.merge)
        if got is None:  # not the usual batch: row by row, which says why
            return self._stored_rows(items, keys, data, ticket)
        kept_block, entries, probe, left, unchanged = got
        try:
            if lookup.get_many(self.table, Keys(probe, distinct=True)):
                return _as_read(data)  # the command table is ahead of the data table
        except LookupFailed:
            return None
        out = PreparedBatch(items=kept_block, unchanged=unchanged)
        if left:  # what bytes could not say, the Python way
            extra = ItemList()
            for j, version in left:
                it = items[j]
                verdict = self._verdict(it, data[keys[j]], version)
                if isinstance(verdict, str):
                    out.failures.append(Failure(it.line, it.pk, it.sk, verdict))
                elif not verdict[0]:
                    out.unchanged += 1
                else:
                    assert verdict[2] is not None
                    sk = f"{keys[j][1]}@{version + 1}"
                    extra.append(PreparedItem(it.line, it.pk, sk, verdict[2]))
                    entries[keys[j]] = (version + 1, verdict[1], it.line)
            if extra:
                out.items = ItemList(sorted([*kept_block, *extra], key=lambda it: it.line))
        try:
            self._wait_turn(ticket)
        except Stopped:
            return _not_assigned(items)
        with self._lock:
            if self._ledger.knows_any(keys):
                return _as_read(data)  # `_assign` decides row by row (the turn is taken)
            self._ledger.store(entries, ticket)
        return out

    def _stored_rows(
        self,
        items: ItemBatch,
        keys: list[tuple[str, str]],
        data: dict[tuple[str, str], bytes],
        ticket: int | None,
    ) -> PreparedBatch | tuple[dict, dict] | None:
        """`_merge_stored` row by row: for a batch of Python items, and for a batch
        `block_stored` does not take (it says None where this returns what was read)."""
        lookup = self.lookup
        assert lookup is not None

        def as_read() -> tuple[dict, dict]:
            return _as_read(data)

        rows = list(items)
        versions: list[int] = []  # 0: not stored
        probe: list[tuple[str, str]] = []
        for it, key in zip(rows, keys, strict=True):
            stored = data.get(key)
            if stored is None:
                versions.append(0)
                probe.append((it.pk, it.sk))
                continue
            head = stored_head(stored)
            if head is None:
                return as_read()
            version, rid = head
            own_id = _wire_request_id(it.wire) if rid is not None else None
            if own_id is not None and rid is not None:
                if rid.rpartition("#")[0] == own_id.rpartition("#")[0]:
                    return as_read()  # this run wrote it: `_who_wrote` tells mine / later / earlier
            versions.append(version)
            probe.append((it.pk, f"{key[1]}@{version + 1}"))
        try:
            if lookup.get_many(self.table, Keys(probe, distinct=True)):
                return as_read()  # the command table is ahead of the data table
        except LookupFailed:
            return None
        verdicts: list[tuple[bool, bytes, bytes | None] | str | None] = []
        for it, key, version in zip(rows, keys, versions, strict=True):
            verdicts.append(self._verdict(it, data[key], version) if version else None)
        try:
            self._wait_turn(ticket)
        except Stopped:
            return _not_assigned(items)
        kept = ItemList()  # appended to below
        out = PreparedBatch(items=kept)
        with self._lock:
            if self._ledger.knows_any(keys):
                return as_read()  # `_assign` decides row by row (the turn is taken)
            entries: dict[tuple[str, str], tuple[int, bytes, int]] = {}
            for it, key, version, verdict in zip(rows, keys, versions, verdicts, strict=True):
                if verdict is None:
                    kept.append(it)
                    entries[key] = (1, _merge_state(it.wire, replace=not self.merge), it.line)
                elif isinstance(verdict, str):
                    out.failures.append(Failure(it.line, it.pk, it.sk, verdict))
                elif not verdict[0]:
                    out.unchanged += 1  # nothing for the run map: the table shows it
                else:
                    assert verdict[2] is not None
                    sk = f"{key[1]}@{version + 1}"
                    kept.append(PreparedItem(it.line, it.pk, sk, verdict[2]))
                    entries[key] = (version + 1, verdict[1], it.line)
            self._ledger.store(entries, ticket)
        return out

    def _verdict(
        self, it: PreparedItem, stored: bytes, version: int
    ) -> tuple[bool, bytes, bytes | None] | str:
        """A row against its entity's record stored at `version`: by bytes when they
        can say (merging: `stored_merge`), else the Python way (`_stored_verdict`)."""
        if self.merge:
            got = stored_merge(it.wire, stored, self.keep_name, version + 1)
            if got is not None:
                return got
        return self._stored_verdict(it, stored, version)

    def _replace_verdict(
        self, it: PreparedItem, stored: bytes, version: int
    ) -> tuple[bool, bytes, bytes | None]:
        """`update = "replace"`: the row is the whole record -- unchanged when it equals
        the stored one as `compare_digest` sees them, else written as it is at version
        + 1 (`_assign`'s answer, the reference for `block_stored`)."""
        base = _state(json.loads(stored), _REPLACE_FIELDS)
        doc = json.loads(it.wire)
        own = _state(doc, _REPLACE_FIELDS)
        if _same(own, base):
            return (False, base, None)
        row = _Row(it, it.sk.rsplit("@", 1)[0], "", None, own)
        return (True, own, self._render(row, version + 1).wire)

    def _stored_verdict(
        self, it: PreparedItem, stored: bytes, version: int
    ) -> tuple[bool, bytes, bytes | None] | str:
        """`stored_merge`'s answer the Python way (what `_assign` decides for a row whose
        entity is stored at `version`): the reference for every case bytes cannot say;
        a string is the row's failure."""
        if not self.merge:
            return self._replace_verdict(it, stored, version)
        base = _state(json.loads(stored), MERGED_FIELDS)
        own = _merge_state(it.wire)
        try:
            merged = self._merged(base, own)
        except ValueError as exc:
            return str(exc)
        if _same(merged, base):
            return (False, base, None)
        row = _Row(it, it.sk.rsplit("@", 1)[0], "", None, own)
        return (True, merged, self._render(row, version + 1, merged).wire)

    def _parse(self, item: PreparedItem) -> _Row:
        base = item.sk.rsplit("@", 1)[0]
        doc = json.loads(item.wire)
        code = (doc.get("code") or {}).get("S") or base.split("#", 1)[-1]
        # the parsed item is not kept: as Python objects it is ~10x its wire bytes, and a
        # batch keeps its rows until its turn comes (all workers' batches, at worst).
        # Only rows written at another version than 1 are parsed again (`_render`).
        own = _state(doc, _MERGE_FIELDS if self.merge else _REPLACE_FIELDS)
        return _Row(item, base, code, _request_id(doc), own)

    def _stored(self, stored: Mapping[str, Any]) -> bytes:
        """What a stored version is compared (and, merging, merged) by."""
        return _state(stored, MERGED_FIELDS if self.merge else _REPLACE_FIELDS)

    def _probe(self, rows: list[_Row], read: tuple[dict, dict] | None = None) -> None:
        """Fill cur_version/cur_digest/mine of each row from the tables (network).

        Records this run wrote for a *later* line of the file (a re-run after a
        partial failure) are the future from this row's point of view: upward
        probing stops at them, and a data table already synced to one of them
        makes the probe walk down from there instead.

        `read` is what `_insert_fresh` already read: the data table, and (when
        that held none of the rows) the command table at @1.
        """
        lookup = self.lookup
        if lookup is None:
            return
        insert = self.mode == "insert"
        probing: list[tuple[_Row, int, int]] = []  # (row, version to read, step +1/-1)
        first_round: dict | None = None  # the @1 reads, when already made
        if read is not None:
            found, first_round = read
            first_round = None if found else first_round
        elif self.data_table:
            found = lookup.get_many(self.data_table, [(r.item.pk, r.base) for r in rows])
        else:
            found = {}
        if not found:  # every row reads its @1 next (the loop below, without lookups)
            probing = [(r, 1, 1) for r in rows]
            rows = []
        for r in rows:
            data = found.get((r.item.pk, r.base))
            if data is not None:
                v = _version_of(data, 1)
                seen, line = self._who_wrote(r, data)
                if seen == "mine":
                    r.mine = v
                    if self.merge:
                        r.mine_state = self._stored(data)
                    continue
                if seen == "later":
                    if v > 1:
                        probing.append((r, v - 1, -1))
                    continue
                r.cur_version, r.cur_line = v, line
                if insert:
                    continue  # exists: nothing more to learn
                r.cur_digest = self._stored(data)
            probing.append((r, r.cur_version + 1, 1))
        rounds = 0
        while probing:
            rounds += 1
            if rounds > MAX_PROBE_ROUNDS:
                for r, v, _step in probing:
                    r.failed = (
                        f"{self.table} holds more than {MAX_PROBE_ROUNDS} versions newer than "
                        f"the data table (stopped at @{v})"
                    )
                return
            keys = [(r.item.pk, f"{r.base}@{v}") for r, v, _step in probing]
            if first_round is not None:
                found, first_round = first_round, None
            else:
                found = lookup.get_many(self.table, keys)
            if not found:  # absent everywhere: nothing to learn, whichever way it walked
                break
            nxt: list[tuple[_Row, int, int]] = []
            for (r, v, step), key in zip(probing, keys, strict=True):
                stored = found.get(key)
                seen, line = ("absent", 0) if stored is None else self._who_wrote(r, stored)
                if seen == "mine":
                    r.mine = v
                    if self.merge and stored is not None:
                        r.mine_state = self._stored(stored)
                elif step > 0:
                    if seen == "other":
                        assert stored is not None  # "other" is said of a stored item
                        r.cur_version, r.cur_line = v, line
                        if not insert:
                            r.cur_digest = self._stored(stored)
                            nxt.append((r, v + 1, 1))
                elif seen == "later" and v > 1:
                    nxt.append((r, v - 1, -1))
                elif seen == "other":
                    assert stored is not None
                    r.cur_version, r.cur_line = v, line
                    r.cur_digest = b"" if insert else self._stored(stored)
                # walking down and absent (or @1 is later): nothing stored before this row
            probing = nxt

    @staticmethod
    def _who_wrote(r: _Row, stored: Mapping[str, Any]) -> tuple[str, int]:
        """Who wrote `stored`, and the line when it was this run.

        ('mine', 0) -- this very row; ('later', line) -- this run, a later
        line; ('other', line) -- this run at an earlier line (a duplicate whose
        write is already visible); ('other', 0) -- another writer.
        """
        rid = _request_id(stored)
        if r.lazy_id:
            # insert mode reads the row's own requestId only when a record was found
            r.request_id, r.lazy_id = _wire_request_id(r.item.wire), False
        if rid is None or r.request_id is None:
            return "other", 0
        if rid == r.request_id:
            return "mine", 0
        run, _, line = rid.rpartition("#")
        our_run, _, our_line = r.request_id.rpartition("#")
        if run != our_run or not line.isdigit() or not our_line.isdigit():
            return "other", 0
        if int(line) > int(our_line):
            return "later", int(line)
        return "other", int(line)

    def _assign(
        self,
        rows: list[_Row],
        fields: Mapping[int, Sequence[str]],
        lookup_error: str,
        ticket: int | None = None,
    ) -> PreparedBatch:
        kept = ItemList()  # appended to below
        out = PreparedBatch(items=kept)
        keys = [(r.item.pk, r.base) for r in rows]
        loaded = self._ledger.load(keys)  # this batch's part of the run map
        state = dict(loaded)
        insert = self.mode == "insert"
        for r, key in zip(rows, keys, strict=True):
            it = r.item
            if lookup_error or r.failed:
                out.failures.append(Failure(it.line, it.pk, it.sk, lookup_error or r.failed))
                continue
            known = state.get(key)  # (version, digest, line of this run or 0)
            if insert:
                if known is not None:
                    out.rejects.append(self._exists(r, known[0], known[2], fields))
                elif r.mine:
                    kept.append(self._render(r, r.mine))
                    state[key] = (r.mine, r.digest, it.line)
                elif r.cur_version:
                    # stored by this run for an earlier line: the same words as the run map's
                    out.rejects.append(self._exists(r, r.cur_version, r.cur_line, fields))
                    state[key] = (r.cur_version, r.cur_digest, r.cur_line)
                else:
                    kept.append(it)
                    state[key] = (1, r.digest, it.line)
                continue
            # upsert / strict: the newer of the run map and the tables (ties: run map)
            if known is not None and known[0] >= r.cur_version:
                base_v, base_d = known[0], known[1]
            else:
                base_v, base_d = r.cur_version, r.cur_digest
            if r.mine and r.mine > (known[0] if known is not None else 0):
                # already stored: the same version again (merging: as it was stored)
                fields_at = r.mine_state if self.merge else b""
                kept.append(self._render(r, r.mine, fields_at))
                state[key] = (r.mine, fields_at or r.digest, it.line)
            elif base_v == 0:
                kept.append(it)
                state[key] = (1, r.digest, it.line)
            elif self.merge:
                try:
                    merged = self._merged(base_d, r.digest)
                except ValueError as exc:
                    out.failures.append(Failure(it.line, it.pk, it.sk, str(exc)))
                    continue
                if _same(merged, base_d):
                    out.unchanged += 1
                    if known is None:
                        state[key] = (base_v, base_d, 0)
                else:
                    v = base_v + 1
                    kept.append(self._render(r, v, merged))
                    state[key] = (v, merged, it.line)
            elif _same(base_d, r.digest):
                out.unchanged += 1
                if known is None:
                    state[key] = (base_v, base_d, 0)
            else:
                v = base_v + 1
                kept.append(self._render(r, v))
                state[key] = (v, r.digest, it.line)
        self._ledger.store({k: e for k, e in state.items() if loaded.get(k) != e}, ticket)
        return out

    def _exists(
        self, r: _Row, version: int, line: int, fields: Mapping[int, Sequence[str]]
    ) -> Reject:
        """Insert's reject of an entity stored at `version` (by this run's `line`, if not 0)."""
        if line:
            why = f"exists (version {version}): duplicate of line {line}"
            return self._reject(r, why, fields, RejectKind.DUPLICATE)
        return self._reject(r, f"exists (version {version})", fields, RejectKind.EXISTS)

    def _reject(
        self, r: _Row, reason: str, fields: Mapping[int, Sequence[str]], kind: RejectKind
    ) -> Reject:
        code = r.code or code_of(r.item)
        return Reject(
            r.item.line, self.code_column, code, reason, tuple(fields.get(r.item.line, ())), kind
        )

    def _merged(self, stored: bytes, own: bytes) -> bytes:
        """The fields of the version a partial update writes (`merge_version`), as state."""
        fields = merge_version(_load(stored), _load(own), keep_name=self.keep_name)
        return _state(fields, MERGED_FIELDS)

    @staticmethod
    def _render(r: _Row, version: int, fields: bytes = b"") -> PreparedItem:
        """The row's item at `version` (sk and version rewritten; id, requestId kept).

        `fields` (a merge's `_state`) replace the row's name and attributes and
        add the stored isDeleted/seq.
        """
        it = r.item
        sk = f"{r.base}@{version}"
        if sk == it.sk and not fields:
            return it
        doc = json.loads(it.wire)
        doc["sk"] = {"S": sk}
        doc["version"] = {"N": str(version)}
        if fields:
            doc.update(_load(fields))
        return PreparedItem(it.line, it.pk, sk, wire_json(doc))

    # ------------------------------------------------------------------ misc

    def close(self) -> None:
        if self.lookup is not None:
            self.lookup.close()
        self._ledger.close()
