from libc.stdio cimport snprintf

# Included at the end of _native.pyx (issue 25): a stored record compared with its row by bytes.
#
# Why: upsert and strict against a table that already holds the file ("import the updated
# file into the live table") read every entity's data row and compare it with the row.
# Through `json.loads`, `Decimal` canonicalisation and `json.dumps` per row that cost
# several times the write.  Here the BatchGetItem answer is split into its items' bytes,
# and a stored record is merged with its row and compared member by member, as bytes;
# only what bytes cannot decide exactly (see `stored_merge`) goes the Python way
# (`importer.modes.stage`, `importer.modes.merge`), which stays the reference.


cdef inline int _hexval(unsigned char c) noexcept nogil:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    return -1


cdef Py_ssize_t _plain_string(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """`p[i]` opens a string: the index past its close when its escapes are exactly the
    ones `json.dumps(ensure_ascii=False)` writes (so a parse and a dump give the same
    bytes back), else -1."""
    cdef unsigned char c, e
    cdef int h, v
    i += 1
    while i < n:
        c = p[i]
        if c == 34:
            return i + 1
        if c < 32:
            return -1
        if c == 92:
            if i + 1 >= n:
                return -1
            e = p[i + 1]
            if e == 34 or e == 92 or e == 98 or e == 102 or e == 110 or e == 114 or e == 116:
                i += 2
                continue
            if e != 117 or i + 5 >= n or p[i + 2] != 48 or p[i + 3] != 48:
                return -1
            h = _hexval(p[i + 4])
            v = _hexval(p[i + 5])
            if h < 0 or h > 1 or v < 0:
                return -1
            v += 16 * h
            if v == 8 or v == 9 or v == 10 or v == 12 or v == 13:  # written short: \b \t ...
                return -1
            i += 6
            continue
        i += 1
    return -1


cdef Py_ssize_t _plain_json(const unsigned char* p, Py_ssize_t i, Py_ssize_t n,
                            int depth) noexcept nogil:
    """One JSON value at `p[i]` as `json.dumps(ensure_ascii=False, separators=(",", ":"))`
    writes it -- no whitespace, its escapes, no JSON numbers (DynamoDB JSON has none):
    the index past it, else -1."""
    cdef unsigned char c
    if i >= n or depth > 200:
        return -1
    c = p[i]
    if c == 34:
        return _plain_string(p, i, n)
    if c == 123 or c == 91:
        i += 1
        if i < n and p[i] == c + 2:  # } or ]
            return i + 1
        while True:
            if c == 123:
                if i >= n or p[i] != 34:
                    return -1
                i = _plain_string(p, i, n)
                if i < 0 or i >= n or p[i] != 58:
                    return -1
                i += 1
            i = _plain_json(p, i, n, depth + 1)
            if i < 0 or i >= n:
                return -1
            if p[i] == 44:
                i += 1
                continue
            return i + 1 if p[i] == c + 2 else -1
    if n - i >= 4 and memcmp(p + i, b"true", 4) == 0:
        return i + 4
    if n - i >= 4 and memcmp(p + i, b"null", 4) == 0:
        return i + 4
    if n - i >= 5 and memcmp(p + i, b"false", 5) == 0:
        return i + 5
    return -1


cdef bint _plain(bytes raw):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    return _plain_json(p, 0, n, 0) == n


cdef Py_ssize_t _safe_number(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """`p[i]` opens the string of an N: the index past it when it is a plain decimal
    (`-?(0|[1-9][0-9]*)(\\.[0-9]*[1-9])?`, not -0, at most 28 digits): two of those are
    equal as numbers exactly when their bytes are.  Else -1."""
    cdef Py_ssize_t start, digits = 0
    i += 1
    start = i
    if i < n and p[i] == 45:  # -
        i += 1
    if i >= n or not (48 <= p[i] <= 57):
        return -1
    if p[i] == 48:
        i += 1
        digits = 1
        if i < n and 48 <= p[i] <= 57:
            return -1
    else:
        while i < n and 48 <= p[i] <= 57:
            i += 1
            digits += 1
    if i < n and p[i] == 46:  # .
        i += 1
        if i >= n or not (48 <= p[i] <= 57):
            return -1
        while i < n and 48 <= p[i] <= 57:
            i += 1
            digits += 1
        if p[i - 1] == 48:
            return -1
    elif p[start] == 45 and i - start == 2 and p[start + 1] == 48:
        return -1  # -0
    if i >= n or p[i] != 34 or digits > 28:
        return -1
    return i + 1


cdef Py_ssize_t _safe_value(const unsigned char* p, Py_ssize_t i, Py_ssize_t n,
                            int depth) noexcept nogil:
    """A DynamoDB value at `p[i]` whose bytes stand for its canonical form one to one
    (`compare_digest`): S, B, N (a plain decimal), BOOL, NULL, and L of such -- no map
    (key order) and no set (element order).  The index past it, else -1."""
    cdef Py_ssize_t k
    if depth > 100 or n - i < 7 or p[i] != 123 or p[i + 1] != 34:
        return -1
    if memcmp(p + i, b'{"S":"', 6) == 0 or memcmp(p + i, b'{"B":"', 6) == 0:
        k = _plain_string(p, i + 5, n)
    elif memcmp(p + i, b'{"N":"', 6) == 0:
        k = _safe_number(p, i + 5, n)
    elif n - i >= 13 and memcmp(p + i, b'{"BOOL":true', 12) == 0:
        k = i + 12
    elif n - i >= 14 and memcmp(p + i, b'{"BOOL":false', 13) == 0:
        k = i + 13
    elif n - i >= 13 and memcmp(p + i, b'{"NULL":true', 12) == 0:
        k = i + 12
    elif memcmp(p + i, b'{"L":[', 6) == 0:
        k = i + 6
        if k < n and p[k] == 93:
            k += 1
        else:
            while True:
                k = _safe_value(p, k, n, depth + 1)
                if k < 0 or k >= n:
                    return -1
                if p[k] == 44:
                    k += 1
                    continue
                if p[k] != 93:
                    return -1
                k += 1
                break
    else:
        return -1
    if k < 0 or k >= n or p[k] != 125:
        return -1
    return k + 1


cdef bint _safe(bytes raw):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    return _safe_value(p, 0, n, 0) == n


cdef bytes _members_json(list members):
    """`{"name":value,...}` from (name, raw value) pairs (None values left out)."""
    cdef list parts = []
    for name, value in members:
        if value is not None:
            parts.append(b'"' + (<str>name).encode("utf-8") + b'":' + value)
    return b"{" + b",".join(parts) + b"}"


def stored_head(bytes stored):
    """`(version, requestId)` of a stored record's bytes: what the mode stage asks of it
    before comparing (`_version_of`, `_request_id`); requestId None when the record has
    none.  None when either is not plain: a version that is not `{"N":"<digits>"}`, a
    requestId not a string without escapes, bytes that are not an object of objects."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(stored)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(stored), a, b, k
    cdef Py_ssize_t found[4]
    cdef bint escaped = False
    if _pick_into(p, n, (b"version", b"requestId"), found) < 0 or found[0] < 0:
        return None
    a, b = found[0], found[1]
    if b - a < 9 or memcmp(p + a, b'{"N":"', 6) != 0 or memcmp(p + b - 2, b'"}', 2) != 0:
        return None
    if p[a + 6] == 48 and b - a != 9:
        return None  # a leading zero: int() reads it, the plain way does not guess
    for k in range(a + 6, b - 2):
        if not (48 <= p[k] <= 57):
            return None
    if b - a > 26:
        return None
    version = int(PyBytes_FromStringAndSize(<const char*>p + a + 6, b - a - 8))
    if found[2] < 0:
        return version, None
    a, b = found[2], found[3]
    if b - a < 8 or memcmp(p + a, b'{"S":"', 6) != 0:
        return None
    k = _string_end(p, a + 5, n, &escaped)
    if k != b - 1 or escaped or p[k] != 125:
        return None
    try:
        rid = PyUnicode_DecodeUTF8(<const char*>p + a + 6, b - a - 8, "strict")
    except UnicodeDecodeError:
        return None
    return version, rid


def answer_items(bytes raw, bytes table):
    """The items of a BatchGetItem answer for `table` (its name as JSON string bytes, quotes
    included) by `(pk, sk)`, each as its raw bytes -- when the answer left no key
    unprocessed (`"UnprocessedKeys":{}`) and every item's pk and sk are strings without
    escapes.  None otherwise (the caller reads the answer the general way).

    The answer is walked once: its members (each an object, as `_pick_into` takes
    them), the tables of `Responses` and their items, an item's end found as its pk
    and sk are (`_pick_keys`)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw), i, k, v0
    cdef const unsigned char* t = <const unsigned char*>PyBytes_AS_STRING(table)
    cdef Py_ssize_t tn = PyBytes_GET_SIZE(table)
    cdef bint escaped = False, responses = False, unprocessed = False
    cdef dict out = {}
    i = _skip_ws(p, 0, n)
    if i >= n or p[i] != 123:
        return None
    i = _skip_ws(p, i + 1, n)
    if i < n and p[i] == 125:
        return None  # no Responses
    while True:
        if i >= n or p[i] != 34:
            return None
        escaped = False
        k = _string_end(p, i, n, &escaped)
        if k < 0 or escaped:
            return None
        v0 = _skip_ws(p, k, n)
        if v0 >= n or p[v0] != 58:
            return None
        v0 = _skip_ws(p, v0 + 1, n)
        if v0 >= n or p[v0] != 123:
            return None
        if k - i == 11 and memcmp(p + i, b'"Responses"', 11) == 0:
            if responses:
                return None
            responses = True
            k = _responses(p, v0, n, t, tn, out)
        elif k - i == 17 and memcmp(p + i, b'"UnprocessedKeys"', 17) == 0:
            if unprocessed:
                return None
            unprocessed = True
            k = _skip_ws(p, v0 + 1, n)
            if k >= n or p[k] != 125:  # only `{}`
                return None
            k += 1
        else:
            k = _vend(p, v0, n)
        if k < 0:
            return None
        i = _skip_ws(p, k, n)
        if i < n and p[i] == 44:
            i = _skip_ws(p, i + 1, n)
            continue
        if i < n and p[i] == 125 and _skip_ws(p, i + 1, n) == n:
            return out if responses else None
        return None


cdef Py_ssize_t _responses(const unsigned char* p, Py_ssize_t i, Py_ssize_t n,
                           const unsigned char* t, Py_ssize_t tn, dict out) except -2:
    """`Responses` at `p[i]`: its tables' lists, the items of `t` put in `out`.  The
    index past its close; -1 for an answer to read the general way."""
    cdef Py_ssize_t k, v0, v1
    cdef Py_ssize_t kf[4]
    cdef bint escaped = False, ours
    cdef object pk = None, sk
    cdef Py_ssize_t last_pk = -1, last_len = 0
    i = _skip_ws(p, i + 1, n)
    while i < n and p[i] == 34:  # the members of Responses: tables, then their lists
        k = _string_end(p, i, n, &escaped)
        if k < 0:
            return -1
        v0 = _skip_ws(p, k, n)
        if v0 >= n or p[v0] != 58:
            return -1
        v0 = _skip_ws(p, v0 + 1, n)
        if v0 >= n or p[v0] != 91:
            return -1
        ours = k - i == tn and memcmp(p + i, t, tn) == 0
        # the list: objects, commas
        v1 = _skip_ws(p, v0 + 1, n)
        while v1 < n and p[v1] != 93:
            if p[v1] != 123:
                return -1
            if ours:
                k = _pick_keys(p, v1, n, kf)
                if k < 0 or kf[0] < 0 or kf[2] < 0:
                    return -1
                # the items of one answer mostly share their pk: one str for a run of them
                if (last_pk < 0 or kf[1] - kf[0] != last_len
                        or memcmp(p + kf[0], p + last_pk, last_len) != 0):
                    pk = _plain_key(p, kf[0], kf[1])
                    last_pk, last_len = kf[0], kf[1] - kf[0]
                sk = _plain_key(p, kf[2], kf[3])
                if pk is None or sk is None:
                    return -1
                out[(pk, sk)] = PyBytes_FromStringAndSize(<const char*>p + v1, k - v1)
            else:
                k = _vend(p, v1, n)
                if k < 0:
                    return -1
            v1 = _skip_ws(p, k, n)
            if v1 < n and p[v1] == 44:
                v1 = _skip_ws(p, v1 + 1, n)
        if v1 >= n:
            return -1
        i = _skip_ws(p, v1 + 1, n)
        if i < n and p[i] == 44:
            i = _skip_ws(p, i + 1, n)
    if i >= n or p[i] != 125:
        return -1
    return i + 1


cdef Py_ssize_t _pick_keys(const unsigned char* p, Py_ssize_t i, Py_ssize_t n,
                           Py_ssize_t* found) noexcept nogil:
    """The object at `p[i]` as `_pick_into(..., (b"pk", b"sk"), found)` reads it (offsets
    into `p`; -1 where it says -1), its members skipped by `_vend`: the index past its
    close, or -1."""
    cdef Py_ssize_t k0, k1, v0, v1, j
    cdef bint escaped
    found[0] = found[1] = found[2] = found[3] = -1
    if i >= n or p[i] != 123:
        return -1
    i = _skip_ws(p, i + 1, n)
    if i < n and p[i] == 125:
        return i + 1
    while True:
        if i >= n or p[i] != 34:
            return -1
        escaped = False
        k0 = i
        k1 = _string_end(p, i, n, &escaped)
        if k1 < 0 or escaped:
            return -1
        i = _skip_ws(p, k1, n)
        if i >= n or p[i] != 58:
            return -1
        v0 = _skip_ws(p, i + 1, n)
        if v0 >= n or p[v0] != 123:
            return -1
        v1 = _vend(p, v0, n)
        if v1 < 0:
            return -1
        if k1 - k0 == 4 and p[k0 + 2] == 107 and (p[k0 + 1] == 112 or p[k0 + 1] == 115):
            j = 0 if p[k0 + 1] == 112 else 2  # "pk" / "sk"
            if found[j] >= 0:
                return -1
            found[j] = v0
            found[j + 1] = v1
        i = _skip_ws(p, v1, n)
        if i < n and p[i] == 44:
            i = _skip_ws(p, i + 1, n)
            continue
        if i < n and p[i] == 125:
            return i + 1
        return -1


cdef object _plain_key(const unsigned char* p, Py_ssize_t a, Py_ssize_t b):
    """The text of `{"S":"..."}` at `p[a:b]` without escapes, else None."""
    cdef bint escaped = False
    cdef Py_ssize_t k
    if b - a < 8 or memcmp(p + a, b'{"S":"', 6) != 0:
        return None
    k = _string_end(p, a + 5, b, &escaped)
    if k != b - 1 or escaped or p[k] != 125:
        return None
    try:
        return PyUnicode_DecodeUTF8(<const char*>p + a + 6, b - a - 8, "strict")
    except UnicodeDecodeError:
        return None


_MERGED = ("name", "attributes", "isDeleted", "seq")
_MERGED_B = (b"name", b"attributes", b"isDeleted", b"seq")
_ROW_B = (b"name", b"attributes")


cdef object _same_fast(bytes wire, bytes stored, bint keep_name):
    """The usual unchanged record, in C: the row's attributes are the stored ones byte for
    byte (and so is its name, unless the stored one is kept) -- the partial update is the
    stored record whatever the values are.  The stored `_state` when so, else None."""
    cdef const unsigned char* w = <const unsigned char*>PyBytes_AS_STRING(wire)
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(stored)
    cdef Py_ssize_t wn = PyBytes_GET_SIZE(wire), n = PyBytes_GET_SIZE(stored)
    cdef Py_ssize_t rf[4]
    cdef Py_ssize_t sf[8]
    cdef Py_ssize_t a0, a1, b0, b1
    if _pick_into(w, wn, _ROW_B, rf) < 0 or _pick_into(p, n, _MERGED_B, sf) < 0:
        return None
    if rf[2] < 0 or sf[2] < 0 or sf[0] < 0:
        return None
    a0, a1, b0, b1 = rf[2], rf[3], sf[2], sf[3]
    if a1 - a0 != b1 - b0 or memcmp(w + a0, p + b0, a1 - a0) != 0:
        return None
    if b1 - b0 < 7 or memcmp(p + b0, b'{"M":', 5) != 0:
        return None  # not a map: the Python way says why it cannot merge
    if rf[0] >= 0 and not keep_name:
        a0, a1, b0, b1 = rf[0], rf[1], sf[0], sf[1]
        if a1 - a0 != b1 - b0 or memcmp(w + a0, p + b0, a1 - a0) != 0:
            return None
    base = _picked(p, n, _MERGED_B, sf)
    if base is None or not _plain(base):
        return None
    return base


def stored_merge(bytes wire, bytes stored, bint keep_name, long long version):
    """Upsert's answer for a row whose entity is stored (`stored`: its latest record's
    bytes, `wire`: the row's item at version 1), decided by bytes:

    * `(False, state, None)`: unchanged -- the partial update equals the stored record
      (nothing to write); `state` is the stored record's `_state(MERGED_FIELDS)`;
    * `(True, state, item)`: changed -- `state` the merged fields, `item` the row's
      item at `version` with them (`ModeStage._render`'s bytes);
    * None: bytes cannot say for sure (a map in the row's attributes, which merges
      deeply; numbers, sets or maps that differ only in spelling or order; a missing
      name or attributes; escapes `json.dumps` would write otherwise): the caller asks
      the Python path (`importer.modes.merge`), which stays the reference.
    """
    cdef list S, R
    cdef list merged
    cdef dict index
    cdef bint changed = False, unsure = False
    same = _same_fast(wire, stored, keep_name)
    if same is not None:
        return False, same, None
    fast = _merge_c(wire, stored, keep_name, version)
    if fast is not None:
        return fast
    S = wire_members(stored)
    R = wire_members(wire)
    if S is None or R is None or not _plain(wire):
        return None
    s = {name: value for name, value in S if name in _MERGED}
    s_name, s_attr = s.get("name"), s.get("attributes")
    s_del, s_seq = s.get("isDeleted"), s.get("seq")
    r_name = r_attr = r_sk = r_version = None
    for name, value in R:
        if name == "name":
            r_name = value
        elif name == "attributes":
            r_attr = value
        elif name == "sk":
            r_sk = value
        elif name == "version":
            r_version = value
    if s_attr is None or s_name is None or r_sk is None or r_version is None:
        return None
    for value in (s_name, s_attr, s_del, s_seq):
        if value is not None and not _plain(value):
            return None
    if not (s_attr.startswith(b'{"M":') and s_attr.endswith(b"}")):
        return None  # not a map (offloaded?): the Python way says why it cannot merge
    sa = wire_members(s_attr[5:-1])
    if sa is None:
        return None
    if r_attr is None:
        ra = []
    elif r_attr.startswith(b'{"M":') and r_attr.endswith(b"}"):
        ra = wire_members(r_attr[5:-1])
        if ra is None:
            return None
    else:
        return None
    merged = list(sa)
    index = {name: j for j, (name, _v) in enumerate(merged)}
    for name, value in ra:
        if value.startswith(b'{"M":'):
            return None  # mergeDeep goes into it: the Python way
        j = index.get(name, -1)
        if j < 0:
            merged.append((name, value))
            changed = True  # a key the stored map lacks: different whatever its spelling
            continue
        old = merged[j][1]
        if old != value:
            merged[j] = (name, value)
            if _safe(old) and _safe(value):
                changed = True
            else:
                unsure = True
    m_name = s_name if keep_name or r_name is None else r_name
    if m_name != s_name:
        if _safe(m_name) and _safe(s_name):
            changed = True
        else:
            unsure = True
    base = _members_json([("name", s_name), ("attributes", s_attr),
                          ("isDeleted", s_del), ("seq", s_seq)])
    if not changed:
        return None if unsure else (False, base, None)
    m_attr = b'{"M":' + _members_json(merged) + b"}"
    state = _members_json([("name", m_name), ("attributes", m_attr),
                           ("isDeleted", s_del), ("seq", s_seq)])
    if b'"NS":' in state or b'"NS":' in base:
        return None  # compare_digest reads a set's numbers (and may refuse them)
    at = r_sk.rfind(b"@")
    if at < 0 or not r_sk.startswith(b'{"S":"') or not r_sk.endswith(b'"}'):
        return None
    fields = {"name": m_name, "attributes": m_attr, "isDeleted": s_del, "seq": s_seq}
    out = []
    for name, value in R:
        if name == "sk":
            value = r_sk[:at] + b"@" + str(version).encode() + b'"}'
        elif name == "version":
            value = b'{"N":"' + str(version).encode() + b'"}'
        elif fields.get(name) is not None:
            value = fields.pop(name)
        out.append((name, value))
    for name in _MERGED:
        if fields.get(name) is not None:
            out.append((name, fields[name]))
    return True, state, _members_json(out)


# ----------------------------------------------------------------- the changed record, in C

cdef struct _SBuf:
    char* data
    Py_ssize_t len
    Py_ssize_t cap


cdef int _sput(_SBuf* b, const void* s, Py_ssize_t n) except -1:
    cdef Py_ssize_t cap
    cdef char* grown
    if b.len + n > b.cap:
        cap = b.cap * 2 if b.cap else 1024
        while cap < b.len + n:
            cap *= 2
        grown = <char*>realloc(b.data, cap)
        if grown == NULL:
            raise MemoryError()
        b.data, b.cap = grown, cap
    memcpy(b.data + b.len, s, n)
    b.len += n
    return 0


cdef int _sput_member(_SBuf* b, bint comma, const unsigned char* k, Py_ssize_t kl,
                     const unsigned char* v, Py_ssize_t vl) except -1:
    """`,"k":v` (`k` the name's bytes between its quotes)."""
    if comma:
        _sput(b, b",", 1)
    _sput(b, b'"', 1)
    _sput(b, k, kl)
    _sput(b, b'":', 2)
    _sput(b, v, vl)
    return 0


cdef enum:
    _CAP = 256


cdef extern from "string.h" nogil:
    void* memmem(const void* haystack, size_t hl, const void* needle, size_t nl)


cdef inline bint _contains(const unsigned char* p, Py_ssize_t n, const char* needle,
                           Py_ssize_t nl) noexcept nogil:
    return n >= nl and memmem(p, n, needle, nl) != NULL


cdef inline Py_ssize_t _vend(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """`_value_end` with its strings skipped in the same loop (the members split of every
    stored record and row: a byte costs a compare or two, not a call per string)."""
    cdef Py_ssize_t depth = 0
    cdef unsigned char c
    while i < n:
        c = p[i]
        if c == 34:  # a string: to its closing quote, an escape's next byte taken as it is
            i += 1
            while i < n:
                c = p[i]
                if c == 34:
                    break
                if c == 92:
                    i += 2
                    continue
                if c < 32:
                    return -1
                i += 1
            if i >= n:
                return -1
        elif c == 123 or c == 91:  # { [
            depth += 1
            if depth > 10000:
                return -1
        elif c == 125 or c == 93:  # } ]
            depth -= 1
            if depth < 0:
                return -1
            if depth == 0:
                return i + 1 if c == 125 else -1
        i += 1
    return -1


cdef Py_ssize_t _obj_split(const unsigned char* p, Py_ssize_t i, Py_ssize_t n,
                       Py_ssize_t* out) noexcept nogil:
    """The members of the compact object at `p[i]` whose values are objects and whose names
    have no escapes: `out[4k:4k+4]` = name start, name end (between the quotes), value
    start, value end.  Their count; -1 for anything else (or more than `_CAP`, a name twice)."""
    cdef Py_ssize_t m = 0, k0, k1, v1, j
    cdef bint escaped = False
    if i >= n or p[i] != 123:
        return -1
    i += 1
    if i < n and p[i] == 125:
        return 0
    while True:
        if i >= n or p[i] != 34 or m >= _CAP:
            return -1
        k0 = i + 1
        k1 = _string_end(p, i, n, &escaped)
        if k1 < 0 or escaped or k1 >= n or p[k1] != 58:
            return -1
        k1 -= 1
        if k1 + 2 >= n or p[k1 + 2] != 123:
            return -1
        v1 = _vend(p, k1 + 2, n)
        if v1 < 0:
            return -1
        for j in range(m):
            if (out[4 * j + 1] - out[4 * j] == k1 - k0 and p[out[4 * j]] == p[k0]
                    and memcmp(p + out[4 * j], p + k0, k1 - k0) == 0):
                return -1
        out[4 * m] = k0
        out[4 * m + 1] = k1
        out[4 * m + 2] = k1 + 2
        out[4 * m + 3] = v1
        m += 1
        if v1 < n and p[v1] == 44:
            i = v1 + 1
            continue
        return m if v1 < n and p[v1] == 125 else -1


cdef Py_ssize_t _obj_split_plain(const unsigned char* p, Py_ssize_t i, Py_ssize_t n,
                                 Py_ssize_t* out, Py_ssize_t* end) noexcept nogil:
    """`_obj_split` of an object written as `json.dumps` writes it (`_plain_json`),
    checked as it is split: the count, and the index past its close in `end[0]`; -1 for
    anything else (a name with an escape, a value that is not an object)."""
    cdef Py_ssize_t m = 0, k0, k1, v1, j
    if i >= n or p[i] != 123:
        return -1
    i += 1
    if i < n and p[i] == 125:
        end[0] = i + 1
        return 0
    while True:
        if i >= n or p[i] != 34 or m >= _CAP:
            return -1
        k0 = i + 1
        k1 = _plain_string(p, i, n)  # past the closing quote
        if k1 < 0 or memchr(p + k0, 92, k1 - 1 - k0) != NULL:
            return -1
        if k1 + 1 >= n or p[k1] != 58 or p[k1 + 1] != 123:
            return -1
        v1 = _plain_json(p, k1 + 1, n, 1)
        if v1 < 0:
            return -1
        k1 -= 1
        for j in range(m):
            if (out[4 * j + 1] - out[4 * j] == k1 - k0 and p[out[4 * j]] == p[k0]
                    and memcmp(p + out[4 * j], p + k0, k1 - k0) == 0):
                return -1
        out[4 * m] = k0
        out[4 * m + 1] = k1
        out[4 * m + 2] = k1 + 2
        out[4 * m + 3] = v1
        m += 1
        if v1 < n and p[v1] == 44:
            i = v1 + 1
            continue
        if v1 < n and p[v1] == 125:
            end[0] = v1 + 1
            return m
        return -1


cdef Py_ssize_t _obj_find(const unsigned char* p, Py_ssize_t* members, Py_ssize_t m,
                      const char* name) noexcept nogil:
    cdef Py_ssize_t j, nl = strlen(name)
    for j in range(m):
        if (members[4 * j + 1] - members[4 * j] == nl and p[members[4 * j]] == <unsigned char>name[0]
                and memcmp(p + members[4 * j], name, nl) == 0):
            return j
    return -1


cdef bint _span_plain(const unsigned char* p, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return _plain_json(p, a, b, 0) == b


cdef bint _span_safe(const unsigned char* p, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return _safe_value(p, a, b, 0) == b


# What `_merge_core` works in: member offsets (stored, row, their attribute maps), the
# merged map's names and values, and the three buffers it writes -- made once for a batch
# (`block_stored`) rather than once a record.
cdef struct _Scratch:
    Py_ssize_t* sf
    Py_ssize_t* rf
    Py_ssize_t* sa
    Py_ssize_t* ra
    const unsigned char** mv
    const unsigned char** mk
    Py_ssize_t* ml
    Py_ssize_t* mkl
    _SBuf attr
    _SBuf state
    _SBuf item


cdef int _scratch_init(_Scratch* s) except -1:
    memset(s, 0, sizeof(_Scratch))
    s.sf = <Py_ssize_t*>malloc(16 * _CAP * sizeof(Py_ssize_t))
    s.mv = <const unsigned char**>malloc(2 * _CAP * sizeof(void*))
    s.mk = <const unsigned char**>malloc(2 * _CAP * sizeof(void*))
    s.ml = <Py_ssize_t*>malloc(4 * _CAP * sizeof(Py_ssize_t))
    if s.sf == NULL or s.mv == NULL or s.mk == NULL or s.ml == NULL:
        _scratch_free(s)
        raise MemoryError()
    s.rf, s.sa, s.ra = s.sf + 4 * _CAP, s.sf + 8 * _CAP, s.sf + 12 * _CAP
    s.mkl = s.ml + 2 * _CAP
    return 0


cdef void _scratch_free(_Scratch* s) noexcept:
    free(s.sf)
    free(s.mv)
    free(s.mk)
    free(s.ml)
    free(s.attr.data)
    free(s.state.data)
    free(s.item.data)
    memset(s, 0, sizeof(_Scratch))


cdef object _merge_c(bytes wire, bytes stored, bint keep_name, long long version):
    """`stored_merge`'s changed answer in C (None: the general way below decides)."""
    cdef _Scratch s
    _scratch_init(&s)
    try:
        if not _merge_core(<const unsigned char*>PyBytes_AS_STRING(wire), PyBytes_GET_SIZE(wire),
                           <const unsigned char*>PyBytes_AS_STRING(stored),
                           PyBytes_GET_SIZE(stored), keep_name, version, &s):
            return None
        return (True, PyBytes_FromStringAndSize(s.state.data, s.state.len),
                PyBytes_FromStringAndSize(s.item.data, s.item.len))
    finally:
        _scratch_free(&s)


cdef int _merge_core(const unsigned char* w, Py_ssize_t wn, const unsigned char* p,
                     Py_ssize_t n, bint keep_name, long long version, _Scratch* sc,
                     Py_ssize_t ns = -2, Py_ssize_t nr = -2, int row_plain = -1) except -1:
    """The changed record, merged and spliced: 1 with `sc.state` and `sc.item` written
    (the merged `_state` and the row's item at `version`), 0 when bytes cannot say it is
    changed (unchanged, or unsure: the general way decides).  `ns`, `nr`: the stored
    record's and the row's members, when already split into `sc.sf` and `sc.rf`;
    `row_plain`: whether the row is written as `json.dumps` writes it, when known."""
    cdef Py_ssize_t* sf = sc.sf
    cdef Py_ssize_t* rf = sc.rf
    cdef Py_ssize_t* sa = sc.sa
    cdef Py_ssize_t* ra = sc.ra
    cdef const unsigned char** mv = sc.mv  # merged values: pointer, length
    cdef Py_ssize_t* ml = sc.ml
    cdef const unsigned char** mk = sc.mk  # merged names
    cdef Py_ssize_t* mkl = sc.mkl
    cdef Py_ssize_t nsa, nra = 0, nm, j, k, at
    cdef Py_ssize_t s_name, s_attr, s_del, s_seq, r_name, r_attr, r_sk, r_version
    cdef Py_ssize_t checked[4]
    cdef Py_ssize_t end = -1
    cdef const unsigned char* m_name_p
    cdef Py_ssize_t m_name_l
    cdef bint changed = False, unsure = False, first
    cdef _SBuf* attr = &sc.attr
    cdef _SBuf* state = &sc.state
    cdef _SBuf* item = &sc.item
    cdef char num[32]
    cdef int numl
    attr.len = state.len = item.len = 0
    if row_plain == 0 or (row_plain < 0 and _plain_json(w, 0, wn, 0) != wn):
        return 0
    if ns == -2:
        ns = _obj_split(p, 0, n, sf)
    if nr == -2:
        nr = _obj_split(w, 0, wn, rf)
    if ns < 0 or nr < 0:
        return 0
    if _compared_ns(p, sf, ns) or _compared_ns(w, rf, nr):
        return 0  # compare_digest reads a set's numbers (and may refuse them)
    s_name, s_attr = _obj_find(p, sf, ns, b"name"), _obj_find(p, sf, ns, b"attributes")
    s_del, s_seq = _obj_find(p, sf, ns, b"isDeleted"), _obj_find(p, sf, ns, b"seq")
    r_name, r_attr = _obj_find(w, rf, nr, b"name"), _obj_find(w, rf, nr, b"attributes")
    r_sk, r_version = _obj_find(w, rf, nr, b"sk"), _obj_find(w, rf, nr, b"version")
    if s_name < 0 or s_attr < 0 or r_sk < 0 or r_version < 0:
        return 0
    checked[0], checked[1], checked[2] = s_name, s_del, s_seq
    for k in range(3):
        j = checked[k]
        if j >= 0 and not _span_plain(p, sf[4 * j + 2], sf[4 * j + 3]):
            return 0
    # the stored map's members (checked plain as they are split), then the row's merged in
    # (mergeDeep on non-maps)
    k = sf[4 * s_attr + 2]
    at = sf[4 * s_attr + 3]
    if at - k < 8 or memcmp(p + k, b'{"M":', 5) != 0:
        return 0
    nsa = _obj_split_plain(p, k + 5, at - 1, sa, &end)
    if nsa < 0 or end != at - 1 or p[at - 1] != 125:
        return 0
    if r_attr >= 0:
        k = rf[4 * r_attr + 2]
        if rf[4 * r_attr + 3] - k < 8 or memcmp(w + k, b'{"M":', 5) != 0:
            return 0
        nra = _obj_split(w, k + 5, rf[4 * r_attr + 3] - 1, ra)
        if nra < 0:
            return 0
    nm = nsa
    for j in range(nsa):
        mk[j], mkl[j] = p + sa[4 * j], sa[4 * j + 1] - sa[4 * j]
        mv[j], ml[j] = p + sa[4 * j + 2], sa[4 * j + 3] - sa[4 * j + 2]
    for j in range(nra):
        if memcmp(w + ra[4 * j + 2], b'{"M":', 5) == 0:
            return 0  # mergeDeep goes into it: the general way
        k = _find_span(mk, mkl, nsa, w + ra[4 * j], ra[4 * j + 1] - ra[4 * j])
        if k < 0:
            if nm >= 2 * _CAP:
                return 0
            mk[nm], mkl[nm] = w + ra[4 * j], ra[4 * j + 1] - ra[4 * j]
            mv[nm], ml[nm] = w + ra[4 * j + 2], ra[4 * j + 3] - ra[4 * j + 2]
            nm += 1
            changed = True
            continue
        if ml[k] == ra[4 * j + 3] - ra[4 * j + 2] and memcmp(mv[k], w + ra[4 * j + 2], ml[k]) == 0:
            continue
        if (_safe_value(mv[k], 0, ml[k], 0) == ml[k]
                and _span_safe(w, ra[4 * j + 2], ra[4 * j + 3])):
            changed = True
        else:
            unsure = True
        mv[k], ml[k] = w + ra[4 * j + 2], ra[4 * j + 3] - ra[4 * j + 2]
    m_name_p, m_name_l = p + sf[4 * s_name + 2], sf[4 * s_name + 3] - sf[4 * s_name + 2]
    if not keep_name and r_name >= 0:
        k = rf[4 * r_name + 2]
        if (rf[4 * r_name + 3] - k != m_name_l
                or memcmp(w + k, m_name_p, m_name_l) != 0):
            if (_span_safe(w, k, rf[4 * r_name + 3])
                    and _span_safe(p, sf[4 * s_name + 2], sf[4 * s_name + 3])):
                changed = True
            else:
                unsure = True
        m_name_p, m_name_l = w + k, rf[4 * r_name + 3] - k
    if not changed:
        return 0  # unchanged or unsure: the general way (it has the same answers)
    _sput(attr, b'{"M":{', 6)
    for j in range(nm):
        _sput_member(attr, j > 0, mk[j], mkl[j], mv[j], ml[j])
    _sput(attr, b"}}", 2)
    _sput(state, b"{", 1)
    _sput_member(state, False, <const unsigned char*>b"name", 4, m_name_p, m_name_l)
    _sput_member(state, True, <const unsigned char*>b"attributes", 10,
                <const unsigned char*>attr.data, attr.len)
    if s_del >= 0:
        _sput_member(state, True, <const unsigned char*>b"isDeleted", 9,
                    p + sf[4 * s_del + 2], sf[4 * s_del + 3] - sf[4 * s_del + 2])
    if s_seq >= 0:
        _sput_member(state, True, <const unsigned char*>b"seq", 3,
                    p + sf[4 * s_seq + 2], sf[4 * s_seq + 3] - sf[4 * s_seq + 2])
    _sput(state, b"}", 1)
    # the new version: the row's members in order, sk/version/merged fields replaced
    numl = snprintf(num, 32, "%lld", version)
    k = rf[4 * r_sk + 2]
    at = rf[4 * r_sk + 3] - 1
    while at > k and w[at] != 64:  # @
        at -= 1
    if at <= k + 5 or memcmp(w + k, b'{"S":"', 6) != 0:
        return 0
    _sput(item, b"{", 1)
    for j in range(nr):
        if j:
            _sput(item, b",", 1)
        _sput(item, b'"', 1)
        _sput(item, w + rf[4 * j], rf[4 * j + 1] - rf[4 * j])
        _sput(item, b'":', 2)
        if j == r_sk:
            _sput(item, w + k, at + 1 - k)
            _sput(item, num, numl)
            _sput(item, b'"}', 2)
        elif j == r_version:
            _sput(item, b'{"N":"', 6)
            _sput(item, num, numl)
            _sput(item, b'"}', 2)
        elif j == r_name:
            _sput(item, m_name_p, m_name_l)
        elif j == r_attr:
            _sput(item, attr.data, attr.len)
        elif s_del >= 0 and rf[4 * j + 1] - rf[4 * j] == 9 and memcmp(w + rf[4 * j], b"isDeleted", 9) == 0:
            _sput(item, p + sf[4 * s_del + 2], sf[4 * s_del + 3] - sf[4 * s_del + 2])
        elif s_seq >= 0 and rf[4 * j + 1] - rf[4 * j] == 3 and memcmp(w + rf[4 * j], b"seq", 3) == 0:
            _sput(item, p + sf[4 * s_seq + 2], sf[4 * s_seq + 3] - sf[4 * s_seq + 2])
        else:
            _sput(item, w + rf[4 * j + 2], rf[4 * j + 3] - rf[4 * j + 2])
    if r_name < 0:
        _sput_member(item, True, <const unsigned char*>b"name", 4, m_name_p, m_name_l)
    if r_attr < 0:
        _sput_member(item, True, <const unsigned char*>b"attributes", 10,
                    <const unsigned char*>attr.data, attr.len)
    if s_del >= 0 and _obj_find(w, rf, nr, b"isDeleted") < 0:
        _sput_member(item, True, <const unsigned char*>b"isDeleted", 9,
                    p + sf[4 * s_del + 2], sf[4 * s_del + 3] - sf[4 * s_del + 2])
    if s_seq >= 0 and _obj_find(w, rf, nr, b"seq") < 0:
        _sput_member(item, True, <const unsigned char*>b"seq", 3,
                    p + sf[4 * s_seq + 2], sf[4 * s_seq + 3] - sf[4 * s_seq + 2])
    _sput(item, b"}", 1)
    return 1


cdef Py_ssize_t _find_span(const unsigned char** keys, Py_ssize_t* lens, Py_ssize_t m,
                           const unsigned char* name, Py_ssize_t nl) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(m):
        if lens[j] == nl and (nl == 0 or keys[j][0] == name[0]) and memcmp(keys[j], name, nl) == 0:
            return j
    return -1


# ----------------------------------------------------------------- a whole batch, in C

cdef Py_ssize_t _rfind(const unsigned char* p, Py_ssize_t n, const char* needle,
                       Py_ssize_t nl) noexcept nogil:
    cdef Py_ssize_t i = n - nl
    while i >= 0:
        if p[i] == <unsigned char>needle[0] and memcmp(p + i, needle, nl) == 0:
            return i
        i -= 1
    return -1


cdef Py_ssize_t _run_end(const unsigned char* p, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Where a requestId's run ends (`rid.rpartition("#")[0]`): its last "#", else `a`."""
    cdef Py_ssize_t i = b - 1
    while i >= a:
        if p[i] == 35:
            return i
        i -= 1
    return a


cdef bint _head(const unsigned char* p, Py_ssize_t* sf, Py_ssize_t ns, long long* version,
                Py_ssize_t* r0, Py_ssize_t* r1) noexcept nogil:
    """`stored_head` from a record's split members: the version, and the requestId's text
    at `p[r0:r1]` (r0 -1: none).  False where `stored_head` says None, and for a
    requestId that is not ASCII (the Python way decodes it)."""
    cdef Py_ssize_t j, a, b, k
    cdef long long v = 0
    cdef bint escaped = False
    j = _obj_find(p, sf, ns, b"version")
    if j < 0:
        return False
    a, b = sf[4 * j + 2], sf[4 * j + 3]
    if b - a < 9 or b - a > 26 or memcmp(p + a, b'{"N":"', 6) != 0 or memcmp(p + b - 2, b'"}', 2) != 0:
        return False
    if p[a + 6] == 48 and b - a != 9:
        return False
    for k in range(a + 6, b - 2):
        if not (48 <= p[k] <= 57):
            return False
        v = v * 10 + (p[k] - 48)
    version[0] = v
    j = _obj_find(p, sf, ns, b"requestId")
    if j < 0:
        r0[0] = -1
        return True
    a, b = sf[4 * j + 2], sf[4 * j + 3]
    if b - a < 8 or memcmp(p + a, b'{"S":"', 6) != 0:
        return False
    k = _string_end(p, a + 5, b, &escaped)
    if k != b - 1 or escaped or p[k] != 125:
        return False
    for k in range(a + 6, b - 2):
        if p[k] >= 128:
            return False
    r0[0], r1[0] = a + 6, b - 2
    return True


cdef bint _merge_same(const unsigned char* w, Py_ssize_t* rf, Py_ssize_t nr,
                      const unsigned char* p, Py_ssize_t* sf, Py_ssize_t ns,
                      bint keep_name) noexcept nogil:
    """`_same_fast`'s verdict without its state: the row's attributes (and name, unless
    the stored one is kept) are the stored ones byte for byte, the stored attributes a
    map -- the partial update is then the stored record, whatever the values are."""
    cdef Py_ssize_t ra = _obj_find(w, rf, nr, b"attributes")
    cdef Py_ssize_t sa = _obj_find(p, sf, ns, b"attributes")
    cdef Py_ssize_t sn = _obj_find(p, sf, ns, b"name"), rn
    if ra < 0 or sa < 0 or sn < 0:
        return False
    if not _same_span(w, rf, ra, p, sf, sa):
        return False
    if sf[4 * sa + 3] - sf[4 * sa + 2] < 7 or memcmp(p + sf[4 * sa + 2], b'{"M":', 5) != 0:
        return False
    if not keep_name:
        rn = _obj_find(w, rf, nr, b"name")
        if rn >= 0 and not _same_span(w, rf, rn, p, sf, sn):
            return False
    return True


cdef inline bint _same_span(const unsigned char* w, Py_ssize_t* rf, Py_ssize_t r,
                            const unsigned char* p, Py_ssize_t* sf, Py_ssize_t s) noexcept nogil:
    cdef Py_ssize_t n = rf[4 * r + 3] - rf[4 * r + 2]
    return n == sf[4 * s + 3] - sf[4 * s + 2] and memcmp(w + rf[4 * r + 2], p + sf[4 * s + 2], n) == 0


cdef int _cmp_value(const unsigned char* w, Py_ssize_t a0, Py_ssize_t a1,
                    const unsigned char* p, Py_ssize_t b0, Py_ssize_t b1) noexcept nogil:
    """Two DynamoDB values as `compare_digest` sees them (`_canon`): 0 equal (the same
    bytes), 1 different (bytes that stand for their canonical form, `_safe`), -1 unsure."""
    if a1 - a0 == b1 - b0 and memcmp(w + a0, p + b0, a1 - a0) == 0:
        return 0
    if _span_safe(w, a0, a1) and _span_safe(p, b0, b1):
        return 1
    return -1


cdef int _deleted(const unsigned char* p, Py_ssize_t* f, Py_ssize_t m) noexcept nogil:
    """`compare_digest`'s isDeleted: 0 (absent or false), 1 (true), -1 anything else."""
    cdef Py_ssize_t j = _obj_find(p, f, m, b"isDeleted"), a, b
    if j < 0:
        return 0
    a, b = f[4 * j + 2], f[4 * j + 3]
    if b - a == 13 and memcmp(p + a, b'{"BOOL":true}', 13) == 0:
        return 1
    if b - a == 14 and memcmp(p + a, b'{"BOOL":false}', 14) == 0:
        return 0
    return -1


cdef int _replace_same(const unsigned char* w, Py_ssize_t* rf, Py_ssize_t nr,
                       const unsigned char* p, Py_ssize_t* sf, Py_ssize_t ns,
                       Py_ssize_t* ra, Py_ssize_t* sa) noexcept nogil:
    """`compare_digest(row) == compare_digest(stored)` (`update = "replace"`) by bytes:
    0 equal, 1 different, -1 unsure (the Python way decides).  Different as soon as one
    of name, attributes (a map member by member), isDeleted certainly differs."""
    cdef bint unsure = False
    cdef int x, y, got
    cdef Py_ssize_t r, s, a0, a1, b0, b1, nra, nsa, j, k
    x, y = _deleted(w, rf, nr), _deleted(p, sf, ns)
    if x < 0 or y < 0:
        unsure = True
    elif x != y:
        return 1
    r, s = _obj_find(w, rf, nr, b"name"), _obj_find(p, sf, ns, b"name")
    if r >= 0 and s >= 0:
        got = _cmp_value(w, rf[4 * r + 2], rf[4 * r + 3], p, sf[4 * s + 2], sf[4 * s + 3])
        if got == 1:
            return 1
        unsure = unsure or got < 0
    elif r >= 0 or s >= 0:
        unsure = True  # a missing name is {"S": ""}: the Python way
    r, s = _obj_find(w, rf, nr, b"attributes"), _obj_find(p, sf, ns, b"attributes")
    if r < 0 or s < 0:
        return -1 if (unsure or r >= 0 or s >= 0) else 0
    a0, a1, b0, b1 = rf[4 * r + 2], rf[4 * r + 3], sf[4 * s + 2], sf[4 * s + 3]
    if a1 - a0 == b1 - b0 and memcmp(w + a0, p + b0, a1 - a0) == 0:
        return -1 if unsure else 0
    if (a1 - a0 >= 8 and b1 - b0 >= 8 and memcmp(w + a0, b'{"M":', 5) == 0
            and memcmp(p + b0, b'{"M":', 5) == 0
            and _value_end(w, a0 + 5, a1) == a1 - 1 and _value_end(p, b0 + 5, b1) == b1 - 1):
        nra = _obj_split(w, a0 + 5, a1 - 1, ra)
        nsa = _obj_split(p, b0 + 5, b1 - 1, sa)
        if nra < 0 or nsa < 0:
            return -1
        if nra != nsa:
            return 1  # another set of keys (none twice): another canonical map
        for j in range(nra):
            k = _obj_find_span(p, sa, nsa, w + ra[4 * j], ra[4 * j + 1] - ra[4 * j])
            if k < 0:
                return 1
            got = _cmp_value(w, ra[4 * j + 2], ra[4 * j + 3], p, sa[4 * k + 2], sa[4 * k + 3])
            if got == 1:
                return 1
            unsure = unsure or got < 0
        return -1 if unsure else 0
    got = _cmp_value(w, a0, a1, p, b0, b1)
    if got == 1:
        return 1
    return -1


cdef bint _compared_ns(const unsigned char* p, Py_ssize_t* f, Py_ssize_t m) noexcept nogil:
    """A number set in what `compare_digest` reads (name, attributes, isDeleted)."""
    cdef Py_ssize_t j
    for j in range(m):
        if ((f[4 * j + 1] - f[4 * j] == 4 and memcmp(p + f[4 * j], b"name", 4) == 0)
                or (f[4 * j + 1] - f[4 * j] == 10 and memcmp(p + f[4 * j], b"attributes", 10) == 0)
                or (f[4 * j + 1] - f[4 * j] == 9 and memcmp(p + f[4 * j], b"isDeleted", 9) == 0)):
            if _contains(p + f[4 * j + 2], f[4 * j + 3] - f[4 * j + 2], b'"NS":', 5):
                return True
    return False


cdef bint _same_compared(const unsigned char* w, Py_ssize_t* rf, Py_ssize_t nr,
                         const unsigned char* p, Py_ssize_t* sf, Py_ssize_t ns) noexcept nogil:
    """Name, attributes and isDeleted each absent from both records or the same bytes in
    both: the two `_state`s are the same bytes."""
    cdef Py_ssize_t r, s, k
    cdef const char* names[3]
    names[0], names[1], names[2] = b"name", b"attributes", b"isDeleted"
    for k in range(3):
        r, s = _obj_find(w, rf, nr, names[k]), _obj_find(p, sf, ns, names[k])
        if (r < 0) != (s < 0) or (r >= 0 and not _same_span(w, rf, r, p, sf, s)):
            return False
    return True


cdef Py_ssize_t _obj_find_span(const unsigned char* p, Py_ssize_t* members, Py_ssize_t m,
                               const unsigned char* name, Py_ssize_t nl) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(m):
        if members[4 * j + 1] - members[4 * j] == nl and memcmp(p + members[4 * j], name, nl) == 0:
            return j
    return -1


cdef int _splice_version(const unsigned char* w, Py_ssize_t wn, Py_ssize_t* rf, Py_ssize_t nr,
                         const char* num, int numl, _SBuf* item, bint row_plain) except -1:
    """`ModeStage._render(row, version)` without fields (`update = "replace"`): the row's
    members in order, its sk's version and `version` replaced.  0 when the row is not
    written as `json.dumps` would write it again (the Python way renders it)."""
    cdef Py_ssize_t r_sk = _obj_find(w, rf, nr, b"sk"), r_version = _obj_find(w, rf, nr, b"version")
    cdef Py_ssize_t j, k, at
    item.len = 0
    if r_sk < 0 or r_version < 0 or not row_plain:
        return 0
    k = rf[4 * r_sk + 2]
    at = rf[4 * r_sk + 3] - 1
    while at > k and w[at] != 64:  # @
        at -= 1
    if at <= k + 5 or memcmp(w + k, b'{"S":"', 6) != 0:
        return 0
    _sput(item, b"{", 1)
    for j in range(nr):
        _sput_member(item, j > 0, w + rf[4 * j], rf[4 * j + 1] - rf[4 * j],
                     <const unsigned char*>b"", 0)
        if j == r_sk:
            _sput(item, w + k, at + 1 - k)
            _sput(item, num, numl)
            _sput(item, b'"}', 2)
        elif j == r_version:
            _sput(item, b'{"N":"', 6)
            _sput(item, num, numl)
            _sput(item, b'"}', 2)
        else:
            _sput(item, w + rf[4 * j + 2], rf[4 * j + 3] - rf[4 * j + 2])
    _sput(item, b"}", 1)
    return 1


cdef bytes _row_state(const unsigned char* w, Py_ssize_t* rf, Py_ssize_t nr, bint replace):
    """`wire_pick(wire, names)` from split members: the row's name and attributes (and
    isDeleted, `update = "replace"`), what the run map keeps of a row it wrote."""
    cdef _SBuf b
    cdef Py_ssize_t j
    cdef bint comma = False
    memset(&b, 0, sizeof(_SBuf))
    try:
        _sput(&b, b"{", 1)
        j = _obj_find(w, rf, nr, b"name")
        if j >= 0:
            _sput_member(&b, comma, <const unsigned char*>b"name", 4, w + rf[4 * j + 2],
                         rf[4 * j + 3] - rf[4 * j + 2])
            comma = True
        j = _obj_find(w, rf, nr, b"attributes")
        if j >= 0:
            _sput_member(&b, comma, <const unsigned char*>b"attributes", 10, w + rf[4 * j + 2],
                         rf[4 * j + 3] - rf[4 * j + 2])
            comma = True
        if replace:
            j = _obj_find(w, rf, nr, b"isDeleted")
            if j >= 0:
                _sput_member(&b, comma, <const unsigned char*>b"isDeleted", 9,
                             w + rf[4 * j + 2], rf[4 * j + 3] - rf[4 * j + 2])
        _sput(&b, b"}", 1)
        return PyBytes_FromStringAndSize(b.data, b.len)
    finally:
        free(b.data)


cdef int _keep(_ItemStore st, const char* wire, Py_ssize_t wl, const char* pk, Py_ssize_t pkl,
               const char* sk, Py_ssize_t skl, const char* num, int numl,
               long long line) except -1:
    """An item of the kept block: its wire, pk, and sk (`sk` then, with `num`, "@num")."""
    cdef Buf* b = &st.data
    cdef ItemAt* a
    if buf_reserve(b, wl + pkl + skl + numl + 1) < 0:
        raise MemoryError()
    a = st.push()
    a.line = line
    a.wire_off = b.len
    a.wire_len = wl
    p_raw(b, wire, wl)
    a.pk_off = b.len
    a.pk_len = pkl
    p_raw(b, pk, pkl)
    a.sk_off = b.len
    p_raw(b, sk, skl)
    if numl:
        p_raw(b, "@", 1)
        p_raw(b, num, numl)
    a.sk_len = b.len - a.sk_off
    a.key_hash = key_hash(b.data + a.pk_off, a.pk_len, b.data + a.sk_off, a.sk_len)
    return 0


def block_stored(ItemBlock block, dict data, list keys, bint keep_name, bint replace):
    """`ModeStage._merge_stored` for a whole native block, in C: each row of `block` (at
    version 1) with its entity key `keys[i]` and that entity's data row as bytes
    (`data.get(keys[i])`, from `KeyLookup.get_many(..., raw=True)`), decided as the mode
    stage decides it (a partial update, or with
    `replace` the row as the whole record):

    `(kept, entries, probe, left, unchanged)`: `kept` the items to write, in order, as a
    block (a new entity's row as it is; a changed one at the stored version + 1);
    `entries` what the run map learns of them (key -> (version, state, line)); `probe`
    the command table's keys that must hold nothing (each row's next version: @1, or
    the stored one + 1); `left` the rows bytes cannot decide, as (index, stored
    version), for the Python way; `unchanged` how many rows equal their stored record.

    None when the batch is not the usual one -- a stored record this run wrote, a
    version or requestId that is not plain, a record the members split does not take:
    the caller decides the batch the general way.
    """
    cdef _ItemStore src = block.store
    cdef _ItemStore out = _ItemStore()
    cdef Py_ssize_t count = block.stop - block.start, i, j, ns, nr, r0 = -1, r1 = -1
    cdef Py_ssize_t k, q, e0, e1, wn, n, wend = -1
    cdef Py_ssize_t unchanged = 0
    cdef bint row_plain
    cdef _Scratch sc
    cdef const unsigned char* w
    cdef const unsigned char* p
    cdef const char* d = src.data.data
    cdef long long version, line
    cdef ItemAt* a
    cdef char num[32]
    cdef int numl, verdict
    cdef dict entries = {}
    cdef list probe = [], left = []
    cdef object s, key, obj
    if len(keys) != count:
        raise ValueError("keys must be the block's length")
    item_cls = src.item_cls
    if item_cls is None:  # a block made of Python items (tests): their class
        item_cls = next((type(o) for o in src.made if o is not None), None)
    out.item_cls = item_cls
    _scratch_init(&sc)
    try:
        for j in range(count):
            i = block.start + j
            a = &src.at[i]
            w = <const unsigned char*>d + a.wire_off
            wn = a.wire_len
            obj = src.made[i]
            line = a.line if obj is None else obj.line
            key = keys[j]
            if a.sk_len < 3 or memcmp(d + a.sk_off + a.sk_len - 2, b"@1", 2) != 0:
                return None
            # split and checked plain in one pass (the transform writes json.dumps' form)
            nr = _obj_split_plain(w, 0, wn, sc.rf, &wend)
            row_plain = nr >= 0 and wend == wn
            if not row_plain:
                nr = _obj_split(w, 0, wn, sc.rf)
            if nr < 0:
                return None
            s = data.get(key)
            if s is None:  # a new entity: written as it is, at version 1
                entries[key] = (1, _row_state(w, sc.rf, nr, replace), line)
                _keep(out, <const char*>w, wn, d + a.pk_off, a.pk_len, d + a.sk_off, a.sk_len,
                      NULL, 0, line)
                probe.append((key[0], PyUnicode_DecodeUTF8(d + a.sk_off, a.sk_len, NULL)))
                continue
            p = <const unsigned char*>PyBytes_AS_STRING(s)
            n = PyBytes_GET_SIZE(s)
            ns = _obj_split(p, 0, n, sc.sf)
            if ns < 0 or not _head(p, sc.sf, ns, &version, &r0, &r1):
                return None
            if r0 >= 0:  # who wrote it: this run (any line) is the general way's to tell
                k = _rfind(w, wn, b'"requestId":{"S":"', 18)
                if k >= 0:
                    k += 18
                    q = k
                    while q < wn and w[q] != 34:
                        q += 1
                    if q >= wn or memchr(w + k, 92, q - k) != NULL:
                        return None
                    e0, e1 = _run_end(p, r0, r1), _run_end(w, k, q)
                    if e0 - r0 == e1 - k and memcmp(p + r0, w + k, e0 - r0) == 0:
                        return None
            numl = snprintf(num, 32, "%lld", version + 1)
            sc.item.len = 0
            _sput(&sc.item, d + a.sk_off, a.sk_len - 1)
            _sput(&sc.item, num, numl)
            probe.append((key[0], PyUnicode_DecodeUTF8(sc.item.data, sc.item.len, NULL)))
            if not replace:
                if _merge_same(w, sc.rf, nr, p, sc.sf, ns, keep_name):
                    unchanged += 1
                    continue
                if _merge_core(w, wn, p, n, keep_name, version + 1, &sc, ns, nr, row_plain):
                    entries[key] = (version + 1,
                                    PyBytes_FromStringAndSize(sc.state.data, sc.state.len), line)
                    _keep(out, sc.item.data, sc.item.len, d + a.pk_off, a.pk_len,
                          d + a.sk_off, a.sk_len - 2, num, numl, line)
                    continue
                left.append((j, version))
                continue
            verdict = _replace_same(w, sc.rf, nr, p, sc.sf, ns, sc.ra, sc.sa)
            if verdict == 0 and _same_compared(w, sc.rf, nr, p, sc.sf, ns):
                unchanged += 1  # the same bytes: `_same` never reads a digest
                continue
            if _compared_ns(w, sc.rf, nr) or _compared_ns(p, sc.sf, ns):
                left.append((j, version))  # compare_digest reads a set's numbers
                continue
            if verdict == 0:
                unchanged += 1
                continue
            if verdict == 1 and _splice_version(w, wn, sc.rf, nr, num, numl, &sc.item, row_plain):
                entries[key] = (version + 1, _row_state(w, sc.rf, nr, True), line)
                _keep(out, sc.item.data, sc.item.len, d + a.pk_off, a.pk_len,
                      d + a.sk_off, a.sk_len - 2, num, numl, line)
                continue
            left.append((j, version))
    finally:
        _scratch_free(&sc)
    out.seal({})
    return _block_view(out, 0, out.n), entries, probe, left, unchanged
