# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Every entity key of a file, as a 12-byte digest and a line: in memory up to a
bound, then in sorted runs on disk -- exact, flat, and at the reader's speed.

Why: `importer validate` writes nothing for the table to remember, so its mode
stage must itself recall every entity of the file, however long, to find the
row that repeats one (and the line it repeats).  A dict of Python objects grows
~250 bytes an entity; the SQLite file that replaced it past 50,000 entities
cost 80 % of validate's time.  Here an entity costs 16 bytes:

* a 96-bit keyed SipHash of (pk, sk without its @version) -- as wide as the
  blake2b digest it replaces; keyed with a random key per run, so no file can
  be built to make two entities collide -- and the line (4 bytes);
* in an open-addressing table in memory, up to `max_slots` slots (3/4 full);
* once full, the table is sorted and written to an anonymous temporary file (a
  *run*, unlinked at once: nothing is left behind, even by a killed run), and
  starts again empty.  Each run keeps in memory one key per 4 KiB block (its
  fences) and every spilled key sets 6 bits of a blocked Bloom filter (12 bits
  a key, grown as runs are added), so a key that no run holds -- nearly every
  key of a file -- is answered without reading the disk, and one that may be
  costs one 4 KiB read per run.

A key is answered by the table, then by the runs, newest first (a later store
of the same key shadows an older run's).  Not thread-safe: the mode stage calls
it under its lock.
"""

import os
import tempfile

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memcpy, memset
from posix.unistd cimport close, pread, write

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size)
    void PyErr_Clear()


cdef struct Slot:
    uint64_t a
    uint32_t b
    uint32_t line  # the line + 1; 0: an empty slot


cdef enum:
    BLOCK = 256          # slots per block of a run (4 KiB): one read per run at most
    FILTER_BITS = 12     # Bloom filter bits per spilled key (~0.5 % of misses read the disk)
    MIN_SLOTS = 1024

#: The largest line a slot holds (as line + 1); a caller keeps larger ones elsewhere.
MAX_LINE = 0xFFFFFFFE


cdef inline uint64_t _rotl(uint64_t x, int b) noexcept nogil:
    return (x << b) | (x >> (64 - b))


cdef inline void _round(uint64_t* v) noexcept nogil:
    v[0] += v[1]
    v[1] = _rotl(v[1], 13)
    v[1] ^= v[0]
    v[0] = _rotl(v[0], 32)
    v[2] += v[3]
    v[3] = _rotl(v[3], 16)
    v[3] ^= v[2]
    v[0] += v[3]
    v[3] = _rotl(v[3], 21)
    v[3] ^= v[0]
    v[2] += v[1]
    v[1] = _rotl(v[1], 17)
    v[1] ^= v[2]
    v[2] = _rotl(v[2], 32)


cdef void _siphash128(uint64_t k0, uint64_t k1, const unsigned char* m, Py_ssize_t n,
                      uint64_t* out) noexcept nogil:
    """SipHash-2-4 with its 128-bit output (the reference's little-endian words)."""
    cdef uint64_t v[4]
    cdef uint64_t b = (<uint64_t> n) << 56
    cdef uint64_t mi
    cdef Py_ssize_t i = 0, end = n - (n % 8)
    v[0] = k0 ^ 0x736f6d6570736575ULL
    v[1] = k1 ^ 0x646f72616e646f6dULL ^ 0xee
    v[2] = k0 ^ 0x6c7967656e657261ULL
    v[3] = k1 ^ 0x7465646279746573ULL
    while i < end:
        memcpy(&mi, m + i, 8)
        v[3] ^= mi
        _round(v)
        _round(v)
        v[0] ^= mi
        i += 8
    mi = 0
    memcpy(&mi, m + end, n - end)
    b |= mi
    v[3] ^= b
    _round(v)
    _round(v)
    v[0] ^= b
    v[2] ^= 0xee
    _round(v)
    _round(v)
    _round(v)
    _round(v)
    out[0] = v[0] ^ v[1] ^ v[2] ^ v[3]
    v[1] ^= 0xdd
    _round(v)
    _round(v)
    _round(v)
    _round(v)
    out[1] = v[0] ^ v[1] ^ v[2] ^ v[3]


cdef inline int _cmp_key(const Slot* p, uint64_t a, uint32_t b) noexcept nogil:
    if p.a != a:
        return -1 if p.a < a else 1
    if p.b != b:
        return -1 if p.b < b else 1
    return 0


cdef int _cmp_slots(const void* x, const void* y) noexcept nogil:
    cdef const Slot* q = <const Slot*> y
    return _cmp_key(<const Slot*> x, q.a, q.b)


cdef class _Run:
    """One sorted run on disk: its file (already unlinked) and one key per block."""

    cdef int fd
    cdef Py_ssize_t n
    cdef Slot* fences
    cdef Py_ssize_t nfences

    def __cinit__(self):
        self.fd = -1
        self.fences = NULL

    def __dealloc__(self):
        free(self.fences)
        if self.fd >= 0:
            close(self.fd)

    cdef void drop(self):
        free(self.fences)
        self.fences = NULL
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1

    cdef long long find(self, uint64_t a, uint32_t b, Slot* block) except -1:
        """The stored line of key (a, b) in this run (line + 1), or 0; `block` holds
        BLOCK slots."""
        cdef Py_ssize_t lo = 0, hi = self.nfences, mid, count, got, want
        cdef int c
        # the last fence <= key
        while lo < hi:
            mid = (lo + hi) >> 1
            if _cmp_key(&self.fences[mid], a, b) <= 0:
                lo = mid + 1
            else:
                hi = mid
        if lo == 0:
            return 0
        mid = lo - 1
        count = self.n - mid * BLOCK
        if count > BLOCK:
            count = BLOCK
        want = count * sizeof(Slot)
        got = pread(self.fd, block, want, mid * BLOCK * sizeof(Slot))
        if got != want:
            raise OSError(f"could not read the run map's spill file ({got} of {want} bytes)")
        lo, hi = 0, count
        while lo < hi:
            mid = (lo + hi) >> 1
            c = _cmp_key(&block[mid], a, b)
            if c == 0:
                return block[mid].line
            if c < 0:
                lo = mid + 1
            else:
                hi = mid
        return 0


cdef class KeyDigests:
    """Entity key -> line, 16 bytes a key in memory up to `max_slots`, then on disk.

    Keys go in as `digest(keys)` (one bytes object a batch, 16 bytes a key);
    lines are 0 .. MAX_LINE.
    """

    cdef Slot* slots
    cdef Py_ssize_t size      # slots in the table (a power of two)
    cdef Py_ssize_t used      # occupied slots
    cdef readonly Py_ssize_t max_slots
    cdef readonly Py_ssize_t count   # distinct keys held (table and runs)
    cdef readonly Py_ssize_t spills  # runs written in all (kept by `close`: for tests)
    #: keys `first_lines` gave an earlier line than the one they held (a batch that
    #: registered after a later batch holding the same entity)
    cdef readonly Py_ssize_t moves
    cdef uint64_t k0
    cdef uint64_t k1
    cdef list runs
    cdef uint64_t* filt
    cdef uint64_t filt_blocks  # blocks of 8 words (512 bits); a power of two
    cdef Py_ssize_t spilled    # keys in the runs
    cdef Slot* block
    cdef object directory

    def __cinit__(self):
        self.slots = NULL
        self.filt = NULL
        self.block = NULL

    def __init__(self, Py_ssize_t max_slots=1 << 20, directory=None, bytes key=None):
        """`max_slots`: the table's bound (16 bytes a slot, a power of two); `key`: 16 bytes
        of SipHash key (random when None -- a run's digests mean nothing to another)."""
        cdef Py_ssize_t size = MIN_SLOTS
        if max_slots < 4 or max_slots & (max_slots - 1):
            raise ValueError("max_slots must be a power of two, at least 4")
        if key is None:
            key = os.urandom(16)
        if len(key) != 16:
            raise ValueError("key must be 16 bytes")
        memcpy(&self.k0, PyBytes_AS_STRING(key), 8)
        memcpy(&self.k1, PyBytes_AS_STRING(key) + 8, 8)
        self.max_slots = max_slots
        while size > max_slots:
            size >>= 1
        self.slots = <Slot*> calloc(size, sizeof(Slot))
        self.block = <Slot*> malloc(BLOCK * sizeof(Slot))
        if self.slots == NULL or self.block == NULL:
            raise MemoryError()
        self.size = size
        self.used = 0
        self.count = 0
        self.spills = 0
        self.moves = 0
        self.runs = []
        self.filt_blocks = 0
        self.spilled = 0
        self.directory = directory

    def __dealloc__(self):
        free(self.slots)
        free(self.filt)
        free(self.block)

    @property
    def runs_on_disk(self):
        """How many sorted runs the table was spilled into (0: all in memory)."""
        return len(self.runs)

    @property
    def memory_bytes(self):
        """Bytes held in memory: the table, the filter and the fences."""
        cdef Py_ssize_t total = self.size * sizeof(Slot) + self.filt_blocks * 64
        cdef _Run r
        for r in self.runs:
            total += r.nfences * sizeof(Slot)
        return total

    def close(self):
        """Drop the runs (their files go with their descriptors) and the table."""
        cdef _Run r
        for r in self.runs:
            r.drop()
        self.runs = []
        free(self.filt)
        self.filt = NULL
        self.filt_blocks = 0
        self.spilled = 0
        memset(self.slots, 0, self.size * sizeof(Slot))
        self.used = 0
        self.count = 0

    # ------------------------------------------------------------------ digests

    def digest(self, keys):
        """16 bytes per (pk, sk) key: its 96-bit digest, then four zero bytes.

        Touches nothing of the table: the mode stage calls it outside its lock.
        """
        cdef list ks = keys if type(keys) is list else list(keys)
        cdef Py_ssize_t n = len(ks), i, pk_len, sk_len
        cdef bytes out = PyBytes_FromStringAndSize(NULL, n * sizeof(Slot))
        cdef Slot* s = <Slot*> PyBytes_AS_STRING(out)
        cdef const char* pk
        cdef const char* sk
        cdef unsigned char* p
        cdef unsigned char* buf = NULL  # this call's own: threads may digest side by side
        cdef Py_ssize_t cap = 0
        cdef uint64_t h[2]
        cdef object pk_obj, sk_obj
        try:
            for i in range(n):
                pk_obj, sk_obj = ks[i]
                pk = PyUnicode_AsUTF8AndSize(pk_obj, &pk_len) if type(pk_obj) is str else NULL
                if pk == NULL:  # a lone surrogate (or not a str): as Python encodes it
                    PyErr_Clear()
                    pk_obj = str(pk_obj).encode("utf-8", "surrogatepass")
                    pk, pk_len = PyBytes_AS_STRING(pk_obj), PyBytes_GET_SIZE(pk_obj)
                sk = PyUnicode_AsUTF8AndSize(sk_obj, &sk_len) if type(sk_obj) is str else NULL
                if sk == NULL:
                    PyErr_Clear()
                    sk_obj = str(sk_obj).encode("utf-8", "surrogatepass")
                    sk, sk_len = PyBytes_AS_STRING(sk_obj), PyBytes_GET_SIZE(sk_obj)
                # pk's length first: no two (pk, sk) pairs make the same bytes
                if 8 + pk_len + sk_len > cap:
                    cap = 2 * (8 + pk_len + sk_len)
                    p = <unsigned char*> realloc(buf, cap)
                    if p == NULL:
                        raise MemoryError()
                    buf = p
                p = buf
                memcpy(p, &pk_len, 8)
                memcpy(p + 8, pk, pk_len)
                memcpy(p + 8 + pk_len, sk, sk_len)
                _siphash128(self.k0, self.k1, p, 8 + pk_len + sk_len, h)
                s[i].a = h[0]
                s[i].b = <uint32_t> h[1]
                s[i].line = 0
        finally:
            free(buf)
        return out

    # ------------------------------------------------------------------ lookups

    cdef inline Py_ssize_t _slot(self, uint64_t a, uint32_t b) noexcept nogil:
        """The table slot of (a, b): where it is, or the empty slot where it would go."""
        cdef Py_ssize_t mask = self.size - 1
        cdef Py_ssize_t i = <Py_ssize_t> ((a ^ (a >> 32)) & <uint64_t> mask)
        cdef Slot* s = self.slots
        while s[i].line != 0 and (s[i].a != a or s[i].b != b):
            i = (i + 1) & mask
        return i

    cdef inline bint _maybe_spilled(self, uint64_t a, uint32_t b) noexcept nogil:
        cdef uint64_t* w
        cdef int k
        cdef uint64_t bit
        if self.spilled == 0:
            return False
        w = self.filt + 8 * ((<uint64_t> b) & (self.filt_blocks - 1))
        for k in range(6):
            bit = (a >> (9 * k)) & 511
            if not (w[bit >> 6] >> (bit & 63)) & 1:
                return False
        return True

    cdef inline void _filter_add(self, uint64_t a, uint32_t b) noexcept nogil:
        cdef uint64_t* w = self.filt + 8 * ((<uint64_t> b) & (self.filt_blocks - 1))
        cdef int k
        cdef uint64_t bit
        for k in range(6):
            bit = (a >> (9 * k)) & 511
            w[bit >> 6] |= (<uint64_t> 1) << (bit & 63)

    cdef long long _line(self, uint64_t a, uint32_t b) except -1:
        """The stored line of (a, b) (line + 1), 0 when unknown: the table, then the runs
        newest first."""
        cdef Py_ssize_t i = self._slot(a, b)
        cdef long long line
        cdef _Run r
        cdef Py_ssize_t k
        if self.slots[i].line != 0:
            return self.slots[i].line
        if not self._maybe_spilled(a, b):
            return 0
        for k in range(len(self.runs) - 1, -1, -1):
            r = self.runs[k]
            line = r.find(a, b, self.block)
            if line:
                return line
        return 0

    def lines(self, bytes digests):
        """Each digest's line, -1 for a key never added."""
        cdef const Slot* d = <const Slot*> PyBytes_AS_STRING(digests)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(digests) // sizeof(Slot), i
        cdef list out = [-1] * n
        cdef long long line
        for i in range(n):
            line = self._line(d[i].a, d[i].b)
            if line:
                out[i] = line - 1
        return out

    def any_known(self, bytes digests):
        """True when any of the digests was added."""
        cdef const Slot* d = <const Slot*> PyBytes_AS_STRING(digests)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(digests) // sizeof(Slot), i
        for i in range(n):
            if self._line(d[i].a, d[i].b):
                return True
        return False

    # ------------------------------------------------------------------ adding

    def add(self, bytes digests, lines, bint new=False):
        """Key i is now at `lines[i]` (0 .. MAX_LINE); `new`: the caller has just seen
        that none of them is known (no run is read for them)."""
        cdef const Slot* d = <const Slot*> PyBytes_AS_STRING(digests)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(digests) // sizeof(Slot), i, j
        cdef list ls = lines if type(lines) is list else list(lines)
        cdef bint known
        if len(ls) != n:
            raise ValueError(f"{n} keys but {len(ls)} lines")
        for line in ls:
            if not 0 <= line <= MAX_LINE:
                raise ValueError(f"line {line} out of range (0 .. {MAX_LINE})")
        for i in range(n):
            j = self._slot(d[i].a, d[i].b)
            if self.slots[j].line != 0:  # in the table: replaced
                self.slots[j].line = <uint32_t> (<long long> ls[i] + 1)
                continue
            # a key a run holds stays counted once: the table's copy shadows it
            known = not new and self._maybe_spilled(d[i].a, d[i].b) and self._in_runs(d[i].a, d[i].b)
            if (self.used + 1) * 4 > self.size * 3:
                self._make_room()
                j = self._slot(d[i].a, d[i].b)
            self.slots[j].a = d[i].a
            self.slots[j].b = d[i].b
            self.slots[j].line = <uint32_t> (<long long> ls[i] + 1)
            self.used += 1
            if not known:
                self.count += 1

    def first_lines(self, bytes digests, lines):
        """Register key i as met on `lines[i]` and answer the first line it is known at.

        A key keeps the smallest line it was registered at, whatever order the calls
        come in: `out[i] == lines[i]` when line i is the key's first so far, else
        `out[i]` is that earlier line.  A call that lowers a key's line counts a move
        (`moves`): answers given before it about that key may since have changed.
        """
        cdef const Slot* d = <const Slot*> PyBytes_AS_STRING(digests)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(digests) // sizeof(Slot), i, j
        cdef list ls = lines if type(lines) is list else list(lines)
        cdef list out
        cdef long long cur, line
        if len(ls) != n:
            raise ValueError(f"{n} keys but {len(ls)} lines")
        for line in ls:
            if not 0 <= line <= MAX_LINE:
                raise ValueError(f"line {line} out of range (0 .. {MAX_LINE})")
        out = list(ls)
        for i in range(n):
            line = <long long> ls[i] + 1  # as stored
            j = self._slot(d[i].a, d[i].b)
            if self.slots[j].line != 0:
                cur = self.slots[j].line
                if cur <= line:
                    out[i] = cur - 1
                else:
                    self.slots[j].line = <uint32_t> line
                    self.moves += 1
                continue
            cur = self._line(d[i].a, d[i].b) if self.spilled else 0
            if cur and cur <= line:
                out[i] = cur - 1
                continue
            if cur:  # a run holds it at a later line: the table's copy shadows it
                self.moves += 1
            else:
                self.count += 1
            if (self.used + 1) * 4 > self.size * 3:
                self._make_room()
            j = self._slot(d[i].a, d[i].b)
            self.slots[j].a = d[i].a
            self.slots[j].b = d[i].b
            self.slots[j].line = <uint32_t> line
            self.used += 1
        return out

    cdef bint _in_runs(self, uint64_t a, uint32_t b) except -1:
        cdef _Run r
        for r in self.runs:
            if r.find(a, b, self.block):
                return True
        return False

    cdef int _make_room(self) except -1:
        """Grow the table while under `max_slots`; else spill it to a run."""
        cdef Slot* old = self.slots
        cdef Slot* grown
        cdef Py_ssize_t old_size = self.size, i, j
        if self.size < self.max_slots:
            grown = <Slot*> calloc(self.size * 2, sizeof(Slot))
            if grown == NULL:
                raise MemoryError()
            self.slots = grown
            self.size *= 2
            for i in range(old_size):
                if old[i].line != 0:
                    j = self._slot(old[i].a, old[i].b)
                    self.slots[j] = old[i]
            free(old)
            return 0
        self._spill()
        return 0

    cdef int _spill(self) except -1:
        """Sort the table into a new run on disk; the table starts again empty."""
        cdef Py_ssize_t n = 0, i, k, done, chunk
        cdef Slot* s = self.slots
        cdef _Run run = _Run()
        cdef ssize_t wrote
        cdef uint64_t blocks
        for i in range(self.size):  # occupied slots to the front, then sorted
            if s[i].line != 0:
                if i != n:
                    s[n] = s[i]
                n += 1
        qsort(s, n, sizeof(Slot), _cmp_slots)
        fd, path = tempfile.mkstemp(prefix="importer-keys-", suffix=".run", dir=self.directory)
        os.unlink(path)  # anonymous from now on: closing it is deleting it
        run.fd = fd
        run.n = n
        done = 0
        while done < n * <Py_ssize_t> sizeof(Slot):
            chunk = n * sizeof(Slot) - done
            if chunk > (1 << 24):
                chunk = 1 << 24
            wrote = write(fd, (<char*> s) + done, chunk)
            if wrote <= 0:
                run.drop()
                raise OSError(f"could not write the run map's spill file in {self.directory or tempfile.gettempdir()}")
            done += wrote
        run.nfences = (n + BLOCK - 1) // BLOCK
        run.fences = <Slot*> malloc(max(run.nfences, 1) * sizeof(Slot))
        if run.fences == NULL:
            run.drop()
            raise MemoryError()
        for k in range(run.nfences):
            run.fences[k] = s[k * BLOCK]
        self.runs.append(run)
        self.spills += 1
        self.spilled += n
        blocks = self.filt_blocks
        if blocks == 0:
            blocks = 1
        while blocks * 512 < <uint64_t> (self.spilled * FILTER_BITS):
            blocks *= 2
        if blocks != self.filt_blocks:
            self._rebuild_filter(blocks)  # every run's keys, this one's included
        else:
            for i in range(n):
                self._filter_add(s[i].a, s[i].b)
        memset(s, 0, self.size * sizeof(Slot))
        self.used = 0
        return 0

    cdef int _rebuild_filter(self, uint64_t blocks) except -1:
        """A filter of `blocks` blocks, from every run read back in order."""
        cdef uint64_t* f = <uint64_t*> calloc(blocks * 8, sizeof(uint64_t))
        cdef _Run r
        cdef Py_ssize_t at, count, i, want, got
        if f == NULL:
            raise MemoryError()
        free(self.filt)
        self.filt = f
        self.filt_blocks = blocks
        for r in self.runs:
            at = 0
            while at < r.n:
                count = r.n - at
                if count > BLOCK:
                    count = BLOCK
                want = count * sizeof(Slot)
                got = pread(r.fd, self.block, want, at * sizeof(Slot))
                if got != want:
                    raise OSError("could not read the run map's spill file")
                for i in range(count):
                    self._filter_add(self.block[i].a, self.block[i].b)
                at += count
        return 0
