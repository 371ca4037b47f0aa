"""The run's memory of every entity it has met: flat in memory however long the file.

The import modes must find an entity that appears twice anywhere in the file
(insert rejects the later row, upsert makes it the next version), so the run
keeps, per entity, the last version it assigned, a digest of the compared
fields and the line.  A dict of that costs hundreds of bytes per entity, so
its size would follow the file's.  `EntityLedger` keeps the first
`memory_entries` entities in a dict (small files need no disk) and then moves
everything into a SQLite file beside the run, read and written a batch at a
time, whose page cache is bounded -- so a long run needs no more memory than a
short one (`benchmarks/bench_memory.py`).

The dict is kept small: every larger file reaches it, and a run's peak is this
dict *plus* the batches in flight, so a larger dict only raises the peak of
every file past it, while the SQLite side costs little per batch next to its
writes.

A run that writes keeps far less: `WindowLedger` holds only what the
batches still in flight assigned; once a batch's write is visible to every
batch that reads after it, the table itself remembers (see its docstring).

A run whose writes never reach the table (validate) keeps every entity in a
`DigestLedger`: the entries every new entity gets -- version 1, no digest, its
line -- as 16 bytes each in the native `importer._digests.KeyDigests` (a table
in memory up to a bound, then sorted runs on disk behind a Bloom filter: no
SQLite, no Python object per entity), and only the others (an entity found
stored, upsert's compared digests) in an `EntityLedger`: validate writes
nothing, so SQLite under the stage's lock would be most of its time
(`benchmarks/bench_validate.py`).

Not thread-safe: the mode stage calls it under its own lock, in file order.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import sqlite3
import tempfile
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat

from importer._digests import MAX_LINE, KeyDigests

__all__ = ["DigestLedger", "EntityKey", "EntityLedger", "Entry", "WindowLedger"]

#: (version, digest of the compared fields, line of this run or 0)
Entry = tuple[int, bytes, int]
#: (pk, sk without its @version): one entity
EntityKey = tuple[str, str]

#: SQLite's default limit on variables in one statement is 32766; stay well under it.
_CHUNK = 900


def _marks(n: int) -> int:
    """`n` rounded up to a power of two (at least 16), at most `_CHUNK`."""
    return min(_CHUNK, max(16, 1 << (n - 1).bit_length()))


def _digest(key: EntityKey) -> bytes:
    """12 bytes standing for the entity: kept instead of its two strings (a tenth the memory)."""
    pk, base = key
    return hashlib.blake2b(
        pk.encode("utf-8", "surrogatepass") + b"\0" + base.encode("utf-8", "surrogatepass"),
        digest_size=12,
    ).digest()


class EntityLedger:
    """Entity key -> `Entry`, in a dict up to `memory_entries`, then in a temporary SQLite file.

    Entities are kept by a 12-byte digest of their key, in memory and on disk.
    """

    def __init__(self, *, memory_entries: int = 50_000, directory: str | None = None) -> None:
        self.memory_entries = memory_entries
        self.directory = directory
        self._mem: dict[bytes, Entry] = {}
        self._db: sqlite3.Connection | None = None
        self._path: str | None = None

    @property
    def spilled(self) -> bool:
        """True once the entries live in the SQLite file."""
        return self._db is not None

    def load(self, keys: Iterable[EntityKey]) -> dict[EntityKey, Entry]:
        """The known entries among `keys`."""
        by_digest = {_digest(k): k for k in keys}
        if self._db is None:
            mem = self._mem
            return {k: mem[d] for d, k in by_digest.items() if d in mem}
        wanted = list(by_digest)
        found: dict[EntityKey, Entry] = {}
        for i in range(0, len(wanted), _CHUNK):
            part: list[bytes | None] = [*wanted[i : i + _CHUNK]]
            # a few statement shapes, not one per length: sqlite3 caches up to 128
            # prepared statements per connection, and batches cut by bytes vary in length
            part += [None] * (_marks(len(part)) - len(part))
            marks = ",".join("?" * len(part))
            rows = self._db.execute(
                f"SELECT key, version, digest, line FROM entity WHERE key IN ({marks})", part
            )
            for key, version, digest, line in rows:
                found[by_digest[key]] = (version, digest, line)
        return found

    def knows_any(self, keys: Iterable[EntityKey]) -> bool:
        """True when any of `keys` is known."""
        return bool(self.load(keys))

    def add_new(self, keys: Sequence[EntityKey], lines: Sequence[int], owner: int | None) -> bool:
        """Each of `keys` (distinct) first met at version 1 on `lines[i]`, unless one is
        known already: then nothing is stored and the answer is False."""
        if self.knows_any(keys):
            return False
        self.store(_new_entries(keys, lines), owner)
        return True

    def store(self, entries: Mapping[EntityKey, Entry], owner: int | None = None) -> None:
        """Remember `entries` (replacing what was known of those keys).

        `owner` is the batch's ticket, as `WindowLedger.store` takes it: this
        ledger forgets nothing, so it does not need it.
        """
        if not entries:
            return
        digested = {_digest(k): e for k, e in entries.items()}
        if self._db is None:
            self._mem.update(digested)
            if len(self._mem) > self.memory_entries:
                self._spill()
            return
        db = self._db
        db.execute("BEGIN")
        db.executemany(
            "INSERT OR REPLACE INTO entity VALUES (?, ?, ?, ?)",
            ((k, v, d, line) for k, (v, d, line) in digested.items()),
        )
        db.execute("COMMIT")

    def __len__(self) -> int:
        if self._db is None:
            return len(self._mem)
        return self._db.execute("SELECT COUNT(*) FROM entity").fetchone()[0]

    def close(self) -> None:
        """Drop the file (the ledger lives for one run)."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._path is not None:
            for suffix in ("", "-journal", "-wal", "-shm"):
                try:
                    os.unlink(self._path + suffix)
                except FileNotFoundError:
                    pass
            self._path = None
        self._mem = {}

    def _spill(self) -> None:
        fd, self._path = tempfile.mkstemp(
            prefix="importer-ledger-", suffix=".db", dir=self.directory
        )
        os.close(fd)
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        # a scratch file for one run: no journal, no fsync, a small bounded page cache
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-16384")  # 16 MiB
        db.execute(
            "CREATE TABLE entity (key BLOB PRIMARY KEY, version INTEGER, digest BLOB, "
            "line INTEGER) WITHOUT ROWID"
        )
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO entity VALUES (?, ?, ?, ?)",
            ((k, v, d, line) for k, (v, d, line) in self._mem.items()),
        )
        db.execute("COMMIT")
        self._db = db
        self._mem = {}


class DigestLedger:
    """Entity key -> `Entry` for a run that remembers every entity (validate): flat and fast.

    An entry `(1, b"", line)` -- what every entity new to the run gets in
    insert mode -- is kept as a 16-byte digest and its line in `KeyDigests`
    (`max_slots` x 16 bytes of memory at most, then runs on disk); any other
    entry in an `EntityLedger`, which answers first: a key stored there once
    stays there, so the two never disagree.  The same answers as an
    `EntityLedger` alone (tests/test_ledger.py holds them side by side).
    """

    def __init__(
        self,
        *,
        max_slots: int = 1 << 20,
        directory: str | None = None,
        memory_entries: int = 50_000,
    ) -> None:
        self._keys = KeyDigests(max_slots, directory)
        self._other = EntityLedger(memory_entries=memory_entries, directory=directory)
        self._others = False  # anything in `_other` yet (most validate runs: never)
        self._both = 0  # keys in both stores (counted once by `len`)

    @property
    def spilled(self) -> bool:
        """True once entries live on disk."""
        return self._keys.runs_on_disk > 0 or self._other.spilled

    @property
    def runs_on_disk(self) -> int:
        """Sorted runs the digest table was spilled into (all of the run's, even closed)."""
        return self._keys.spills

    # -- validate without a table (insert mode): first lines in any batch order.
    # Only the mode stage's unordered path calls these, and then nothing else.

    def digest(self, keys: Sequence[EntityKey]) -> bytes:
        """The keys' digests (16 bytes each), for `first_lines`: work done outside the lock."""
        return self._keys.digest(keys)

    def first_lines(self, digests: bytes, lines: Sequence[int]) -> list[int]:
        """Register each key as met on `lines[i]`; the first line each is known at."""
        return self._keys.first_lines(digests, lines)

    @property
    def moves(self) -> int:
        """How often `first_lines` has moved a key's first line earlier."""
        return self._keys.moves

    def load(self, keys: Iterable[EntityKey]) -> dict[EntityKey, Entry]:
        """The known entries among `keys`."""
        keys = keys if type(keys) is list else list(keys)
        if not keys:
            return {}
        found = {}
        if self._keys.count:  # upsert's entries all carry digests: none here then
            lines = self._keys.lines(self._keys.digest(keys))
            found = {k: (1, b"", line) for k, line in zip(keys, lines, strict=True) if line >= 0}
        if self._others:
            found.update(self._other.load(keys))
        return found

    def knows_any(self, keys: Iterable[EntityKey]) -> bool:
        """True when any of `keys` is known."""
        keys = keys if type(keys) is list else list(keys)
        if self._keys.any_known(self._keys.digest(keys)):
            return True
        return self._others and self._other.knows_any(keys)

    def add_new(self, keys: Sequence[EntityKey], lines: Sequence[int], owner: int | None) -> bool:
        """Each of `keys` (distinct) first met at version 1 on `lines[i]`, unless one is
        known already: then nothing is stored and the answer is False."""
        keys = keys if type(keys) is list else list(keys)
        digests = self._keys.digest(keys)
        if self._keys.any_known(digests) or (self._others and self._other.knows_any(keys)):
            return False
        try:
            self._keys.add(digests, lines, new=True)  # checks every line before adding any
        except ValueError:  # a line a slot cannot hold (past 2**32 - 2): the general way
            self.store(_new_entries(keys, lines), owner)
        return True

    def store(self, entries: Mapping[EntityKey, Entry], owner: int | None = None) -> None:
        """Remember `entries` (replacing what was known of those keys); `owner` is unused
        (this ledger forgets nothing), as in `EntityLedger.store`."""
        if not entries:
            return
        compact: list[EntityKey] = []
        lines: list[int] = []
        other: dict[EntityKey, Entry] = {}
        for k, e in entries.items():
            if e[0] == 1 and not e[1] and 0 <= e[2] <= MAX_LINE:
                compact.append(k)
                lines.append(e[2])
            else:
                other[k] = e
        if compact and self._others:  # a key the other store holds stays there
            held = self._other.load(compact)
            if held:
                for k, line in zip(compact, lines, strict=True):
                    if k in held:
                        other[k] = (1, b"", line)
                kept = [(k, line) for k, line in zip(compact, lines, strict=True) if k not in held]
                compact = [k for k, _ in kept]
                lines = [line for _, line in kept]
        if compact:
            self._keys.add(self._keys.digest(compact), lines)
        if other:
            if self._keys.count:  # a key in both stores is counted once by `len`
                held_before = self._other.load(list(other)) if self._others else {}
                fresh = [k for k in other if k not in held_before]
                if fresh:
                    lines_known = self._keys.lines(self._keys.digest(fresh))
                    self._both += sum(1 for line in lines_known if line >= 0)
            self._other.store(other)
            self._others = True

    def __len__(self) -> int:
        return self._keys.count + len(self._other) - self._both

    def close(self) -> None:
        """Drop both stores (their files go with them)."""
        self._keys.close()
        self._other.close()
        self._others = False
        self._both = 0


class WindowLedger:
    """Entity -> `Entry` for what the table may not show yet: flat, and no disk.

    Batches read the tables concurrently and assign versions one at a time in
    file order.  A later batch may have read before an earlier batch's write
    landed, so the earlier batch's assignments are kept here -- but only
    until every batch that could have read too early has assigned:

    * `store(entries, owner)` records batch `owner`'s assignments (its ticket);
    * `written(owner, issued)` says its write returned when `issued` tickets
      had been handed out.  A ticket handed out later belongs to a batch that
      starts reading only after that (consistent reads), so it finds the
      write in the table;
    * `advance(turn)`: every ticket below `turn` has assigned; the entries of
      each written batch with `issued <= turn` are dropped, unless a later
      batch has replaced them since (it owns them now).

    So at most the batches in flight are held, however long the file.  A batch
    that never reports `written` (its write failed, or nothing calls it) keeps
    its entries for the run: never wrong, only less flat.

    A batch of new entities (`add_new`, insert's usual batch) is held without
    an `Entry` per key: the key maps to its owner's ticket alone, and the
    lines stay in the batch's own list until a later batch asks for one --
    a thousand tuples fewer to build, and to free, per batch.
    """

    def __init__(self) -> None:
        #: key -> (entry, owner), or key -> owner for a key `add_new` stored
        self._entries: dict[EntityKey, tuple[Entry, int | None] | int] = {}
        #: owner -> [keys, lines, key -> index (built when first needed)] of `add_new`
        self._new: dict[int, list] = {}
        self._owned: dict[int, list[EntityKey]] = {}
        # owners one of whose keys was stored again since (by a later batch, the run,
        # or themselves): dropping them checks key by key who holds each now
        self._shared: set[int | None] = set()
        self._visible: list[tuple[int, int]] = []  # heap of (issued, owner)
        self.peak = 0  # most entries held at once (for tests and benchmarks)

    def load(self, keys: Iterable[EntityKey]) -> dict[EntityKey, Entry]:
        """The known entries among `keys`."""
        entries = self._entries
        found = {}
        for k in keys:
            hit = entries.get(k)
            if hit is not None:
                found[k] = self._new_entry(k, hit) if isinstance(hit, int) else hit[0]
        return found

    def _new_entry(self, key: EntityKey, owner: int) -> Entry:
        held = self._new[owner]
        if held[2] is None:
            held[2] = dict(zip(held[0], range(len(held[0])), strict=True))
        return (1, b"", held[1][held[2][key]])

    def knows_any(self, keys: Iterable[EntityKey]) -> bool:
        """True when any of `keys` is known."""
        return not self._entries.keys().isdisjoint(keys)

    def store(self, entries: Mapping[EntityKey, Entry], owner: int | None = None) -> None:
        """Remember batch `owner`'s assignments (None: for the whole run)."""
        if not entries:
            return
        mine = self._entries
        again = mine.keys() & entries.keys()  # nearly always empty
        if again:
            self._shared.update(_owner(mine[k]) for k in again)
        mine.update(zip(entries, zip(entries.values(), repeat(owner)), strict=False))
        if owner is not None:
            self._owned.setdefault(owner, []).extend(entries)
        self.peak = max(self.peak, len(mine))

    def add_new(self, keys: Sequence[EntityKey], lines: Sequence[int], owner: int | None) -> bool:
        """`store({keys[i]: (1, b"", lines[i])}, owner)` when none of `keys` is known
        (True); otherwise nothing is stored (False).  `keys` are distinct."""
        mine = self._entries
        if not mine.keys().isdisjoint(keys):
            return False
        if not keys:  # nothing to hold: the batch owns nothing, as `store({})` leaves it
            return True
        if owner is None or owner in self._new or len(keys) != len(lines):
            # the run's own entries, or a second call for one batch: the general way
            self.store(_new_entries(keys, lines), owner)
            return True
        keys = list(keys)
        before = len(mine)
        mine.update(zip(keys, repeat(owner)))
        self._new[owner] = [keys, lines, None]  # a repeated key: its last line, as `store`
        if len(mine) - before != len(keys):  # owned once each
            keys = list(dict.fromkeys(keys))
        self._owned.setdefault(owner, []).extend(keys)
        self.peak = max(self.peak, len(mine))
        return True

    def written(self, owner: int, issued: int) -> None:
        """Batch `owner`'s write returned after `issued` tickets were handed out."""
        if owner in self._owned:
            heapq.heappush(self._visible, (issued, owner))

    def advance(self, turn: int) -> None:
        """Every ticket below `turn` has assigned: drop what the table now shows to all."""
        visible = self._visible
        entries = self._entries
        while visible and visible[0][0] <= turn:
            _issued, owner = heapq.heappop(visible)
            owned = self._owned.pop(owner, ())
            self._new.pop(owner, None)
            if owner not in self._shared:  # each of its keys is still its own: all go
                deque(map(entries.__delitem__, owned), maxlen=0)
                continue
            self._shared.discard(owner)
            for k in owned:
                hit = entries.get(k)
                if hit is not None and _owner(hit) == owner:
                    del entries[k]

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        self._entries = {}
        self._new = {}
        self._owned = {}
        self._shared = set()
        self._visible = []


def _owner(held: tuple[Entry, int | None] | int) -> int | None:
    """Whose a `WindowLedger` value is: (entry, owner), or an `add_new` owner alone."""
    return held if isinstance(held, int) else held[1]


def _new_entries(keys: Sequence[EntityKey], lines: Sequence[int]) -> dict[EntityKey, Entry]:
    """Each of `keys` at version 1, no digest, first met on `lines[i]` (`add_new`'s entries)."""
    return dict(zip(keys, zip(repeat(1), repeat(b""), lines), strict=True))
