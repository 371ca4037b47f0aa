# Included at the end of _native.pyx (issue 25): a record's top-level members as raw bytes.
#
# Why: `run --sync` builds each new entity's data row and finished command record
# from the command record it just rendered.  Through `json.loads` and `json.dumps`
# that cost more than the transform itself; the members' raw bytes are spliced
# instead (`importer.mbc.fast_sync`), never parsed.


cdef Py_ssize_t _skip_ws(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    while i < n and (p[i] == 32 or p[i] == 9 or p[i] == 10 or p[i] == 13):
        i += 1
    return i


cdef Py_ssize_t _string_end(const unsigned char* p, Py_ssize_t i, Py_ssize_t n,
                            bint* escaped) noexcept nogil:
    """`p[i]` is the opening quote: the index just past the closing one, or -1."""
    i += 1
    while i < n:
        if p[i] == 34:  # "
            return i + 1
        if p[i] == 92:  # backslash: the next byte is taken as it is
            escaped[0] = True
            i += 2
            continue
        if p[i] < 32:  # a raw control character: not JSON
            return -1
        i += 1
    return -1


cdef Py_ssize_t _value_end(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """`p[i]` opens an object: the index just past its matching close, or -1.

    Nesting is followed through objects and arrays (at most 10,000 deep), strings
    are skipped whole; scalars are not checked (the caller's records are JSON).
    """
    cdef Py_ssize_t depth = 0
    cdef bint escaped = False
    cdef unsigned char c
    while i < n:
        c = p[i]
        if c == 34:
            i = _string_end(p, i, n, &escaped)
            if i < 0:
                return -1
            continue
        if c == 123 or c == 91:  # { [
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


def wire_members(bytes wire):
    """The top-level members of a JSON object whose values are all objects (DynamoDB JSON
    attribute values): `[(name, raw value bytes), ...]` in order, or None.

    None -- never an exception -- for anything else: not an object, a value that
    is not an object, a name with an escape, a name twice, bytes cut short.  A
    value's inner scalars are not validated: the caller splices only records its
    own transform rendered (`importer.mbc.fast_sync`).
    """
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(wire)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(wire)
    cdef Py_ssize_t i = _skip_ws(p, 0, n), k0, k1, v0, v1
    cdef bint escaped
    cdef list out = []
    cdef set names = set()
    if i >= n or p[i] != 123:
        return None
    i = _skip_ws(p, i + 1, n)
    if i < n and p[i] == 125:
        return out if _skip_ws(p, i + 1, n) == n else None
    while True:
        if i >= n or p[i] != 34:
            return None
        escaped = False
        k0 = i
        k1 = _string_end(p, i, n, &escaped)
        if k1 < 0 or escaped:
            return None
        i = _skip_ws(p, k1, n)
        if i >= n or p[i] != 58:  # :
            return None
        v0 = _skip_ws(p, i + 1, n)
        if v0 >= n or p[v0] != 123:
            return None
        v1 = _value_end(p, v0, n)
        if v1 < 0:
            return None
        try:
            name = PyUnicode_DecodeUTF8(<const char*>p + k0 + 1, k1 - k0 - 2, "strict")
        except UnicodeDecodeError:
            return None
        if name in names:
            return None
        names.add(name)
        out.append((name, PyBytes_FromStringAndSize(<const char*>p + v0, v1 - v0)))
        i = _skip_ws(p, v1, n)
        if i < n and p[i] == 44:  # ,
            i = _skip_ws(p, i + 1, n)
            continue
        if i < n and p[i] == 125:
            return out if _skip_ws(p, i + 1, n) == n else None
        return None


cdef Py_ssize_t _pick_into(const unsigned char* p, Py_ssize_t n, tuple names,
                           Py_ssize_t* found) except -2:
    """Offsets (value start, value end) of each of `names` (bytes, no escapes) among the
    top-level members of the object in `p[:n]`, in `found[2*j]`, `found[2*j+1]` (-1 when
    absent).  Returns the number of names found, or -1 when the bytes are not an object
    of objects or a picked name is there twice."""
    cdef Py_ssize_t i = _skip_ws(p, 0, n), k0, k1, v0, v1, j, hits = 0
    cdef Py_ssize_t m = len(names)
    cdef bint escaped
    cdef bytes name
    for j in range(2 * m):
        found[j] = -1
    if i >= n or p[i] != 123:
        return -1
    i = _skip_ws(p, i + 1, n)
    if i < n and p[i] == 125:
        return 0 if _skip_ws(p, i + 1, n) == n else -1
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
        v1 = _value_end(p, v0, n)
        if v1 < 0:
            return -1
        for j in range(m):
            name = <bytes>names[j]
            if (PyBytes_GET_SIZE(name) == k1 - k0 - 2
                    and memcmp(PyBytes_AS_STRING(name), p + k0 + 1, k1 - k0 - 2) == 0):
                if found[2 * j] >= 0:
                    return -1
                found[2 * j] = v0
                found[2 * j + 1] = v1
                hits += 1
                break
        i = _skip_ws(p, v1, n)
        if i < n and p[i] == 44:
            i = _skip_ws(p, i + 1, n)
            continue
        if i < n and p[i] == 125:
            return hits if _skip_ws(p, i + 1, n) == n else -1
        return -1


cdef object _picked(const unsigned char* p, Py_ssize_t n, tuple names, Py_ssize_t* found):
    cdef Py_ssize_t j, m = len(names), size = 2, pos
    cdef bytes name, out
    cdef char* o
    if _pick_into(p, n, names, found) < 0:
        return None
    for j in range(m):
        if found[2 * j] >= 0:
            size += PyBytes_GET_SIZE(<bytes>names[j]) + 4 + found[2 * j + 1] - found[2 * j]
    out = PyBytes_FromStringAndSize(NULL, size)
    o = PyBytes_AS_STRING(out)
    o[0] = b"{"
    pos = 1
    for j in range(m):
        if found[2 * j] < 0:
            continue
        if pos > 1:
            o[pos] = b","
            pos += 1
        name = <bytes>names[j]
        o[pos] = b'"'
        memcpy(o + pos + 1, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))
        pos += 1 + PyBytes_GET_SIZE(name)
        o[pos] = b'"'
        o[pos + 1] = b":"
        pos += 2
        memcpy(o + pos, p + found[2 * j], found[2 * j + 1] - found[2 * j])
        pos += found[2 * j + 1] - found[2 * j]
    o[pos] = b"}"
    return out[:pos + 1] if pos + 1 != size else out


def wire_pick(bytes wire, tuple names):
    """`{"n1":<raw>,"n2":<raw>}`: the members named in `names` (bytes), in that order,
    those absent left out -- as `json.dumps({k: doc[k] for k in names if k in doc})`
    reads -- or None when `wire_members` would not split the record (or a picked
    name is there twice).  At most 16 names."""
    cdef Py_ssize_t found[32]
    if len(names) > 16:
        raise ValueError("at most 16 names")
    return _picked(<const unsigned char*>PyBytes_AS_STRING(wire), PyBytes_GET_SIZE(wire),
                   names, found)


def block_pick(ItemBlock block, tuple names):
    """`wire_pick` of every item of `block`, without a PreparedItem per item."""
    cdef Py_ssize_t found[32]
    cdef _ItemStore store = block.store
    cdef Py_ssize_t i
    cdef ItemAt* a
    cdef list out = []
    if len(names) > 16:
        raise ValueError("at most 16 names")
    for i in range(block.start, block.stop):
        a = &store.at[i]
        out.append(_picked(<const unsigned char*>store.data.data + a.wire_off, a.wire_len,
                           names, found))
    return out


# ---------------------------------------------------------------------------
# block_new_entities: `run --sync`'s plain case for a whole ItemBlock (issue 25)
# ---------------------------------------------------------------------------

DEF _MAX_MEMBERS = 64

cdef struct _Member:
    Py_ssize_t k0    # name, without quotes: [k0, k1)
    Py_ssize_t k1
    Py_ssize_t v0    # raw value: [v0, v1)
    Py_ssize_t v1


cdef Py_ssize_t _split_members(const unsigned char* p, Py_ssize_t n, _Member* out) noexcept nogil:
    """`wire_members` into `out` (at most _MAX_MEMBERS): the count, or -1.  Names are not
    checked for repeats here (the caller looks up the ones it uses, once each)."""
    cdef Py_ssize_t i = _skip_ws(p, 0, n), k0, k1, v0, v1, count = 0
    cdef bint escaped
    if i >= n or p[i] != 123:
        return -1
    i = _skip_ws(p, i + 1, n)
    if i < n and p[i] == 125:
        return 0 if _skip_ws(p, i + 1, n) == n else -1
    while True:
        if i >= n or p[i] != 34 or count >= _MAX_MEMBERS:
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
        v1 = _value_end(p, v0, n)
        if v1 < 0:
            return -1
        out[count].k0 = k0 + 1
        out[count].k1 = k1 - 1
        out[count].v0 = v0
        out[count].v1 = v1
        count += 1
        i = _skip_ws(p, v1, n)
        if i < n and p[i] == 44:
            i = _skip_ws(p, i + 1, n)
            continue
        if i < n and p[i] == 125:
            return count if _skip_ws(p, i + 1, n) == n else -1
        return -1


cdef bint _names_repeat(const unsigned char* p, _Member* ms, Py_ssize_t count) noexcept nogil:
    """A name there twice (`json.loads` would keep the last: the records are not spliced)."""
    cdef Py_ssize_t i, j, n
    for i in range(1, count):
        n = ms[i].k1 - ms[i].k0
        for j in range(i):
            if ms[j].k1 - ms[j].k0 == n and memcmp(p + ms[j].k0, p + ms[i].k0, n) == 0:
                return True
    return False


cdef Py_ssize_t _find(const unsigned char* p, _Member* ms, Py_ssize_t count, bytes name):
    """Index of the member called `name`; -1 when absent, -2 when there twice."""
    cdef Py_ssize_t j, hit = -1, ln = PyBytes_GET_SIZE(name)
    cdef const char* s = PyBytes_AS_STRING(name)
    for j in range(count):
        if ms[j].k1 - ms[j].k0 == ln and memcmp(p + ms[j].k0, s, ln) == 0:
            if hit >= 0:
                return -2
            hit = j
    return hit


cdef int _put_member(Buf* b, bint* first, bytes name, const char* v, Py_ssize_t n) except -1:
    if buf_reserve(b, PyBytes_GET_SIZE(name) + n + 4) < 0:
        raise MemoryError()
    if not first[0]:
        p_raw(b, ",", 1)
    first[0] = False
    p_raw(b, '"', 1)
    p_raw(b, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))
    p_raw(b, '":', 2)
    p_raw(b, v, n)
    return 0


cdef int _push_item(_ItemStore store, Buf* b, Py_ssize_t start, const ItemAt* src,
                    const char* sdata, Py_ssize_t sk_len, long long line) except -1:
    """The item written at b[start:] gets its entry: `line`, pk and sk (`sk_len` bytes of
    the source's sk) copied after its wire bytes."""
    cdef ItemAt* a = store.push()
    a.line = line
    a.wire_off = start
    a.wire_len = b.len - start
    if buf_reserve(b, src.pk_len + sk_len) < 0:
        raise MemoryError()
    a.pk_off = b.len
    a.pk_len = src.pk_len
    p_raw(b, sdata + src.pk_off, src.pk_len)
    a.sk_off = b.len
    a.sk_len = sk_len
    p_raw(b, sdata + src.sk_off, sk_len)
    a.key_hash = key_hash(b.data + a.pk_off, a.pk_len, b.data + a.sk_off, a.sk_len)
    return 0


def block_new_entities(ItemBlock block, take, tuple data_plan, dict dates, bytes status,
                       bytes updated, bytes sync_tail):
    """`importer.mbc.fast_sync.new_entity_items` for every item of `block` whose `take[i]`
    is true, in C: `(data rows, finished commands, left)` -- two ItemBlocks (lines kept;
    the data rows keyed at the sk without `@1`) and the indices of the items taken
    nowhere (not at version 1, `attributes` a string, a member not split, a date not in
    `dates`): the general path's.

    `data_plan`: `(name, source, op)` per data member in order, `op` 0 the source
    member copied when present, 1 the `sk` with its `@1` cut, 2 a date: the source's raw
    value looked up in `dates` (raw -> rendered raw).  The finished command: the
    record's members with `status` and `updatedAt` replaced by `status` and `updated`,
    `sync_tail` (`,"syncMode":...}`-less: the members to append, comma first, e.g.
    `,"syncMode":{"S":"SYNC"}`), then `status` and `updatedAt` when the record had none.
    """
    cdef _ItemStore src = block.store
    cdef _ItemStore dstore = _ItemStore(), cstore = _ItemStore()
    cdef Buf* db = &dstore.data
    cdef Buf* cb = &cstore.data
    cdef _Member ms[_MAX_MEMBERS]
    cdef Py_ssize_t i, j, count, at, d0, c0, sk_len, ver, attrs, st_i, up_i, plan_n
    cdef const ItemAt* a
    cdef const unsigned char* p
    cdef bint first
    cdef list left = []
    cdef bytes raw, name, rendered
    cdef tuple step
    cdef int op
    cdef long long line
    cdef object obj
    cdef dict objects = {}
    item_cls = src.item_cls
    if item_cls is None:  # a block made of Python items (tests): their class
        item_cls = next((type(o) for o in src.made if o is not None), None)
    dstore.item_cls = item_cls
    cstore.item_cls = item_cls
    plan_n = len(data_plan)
    for i in range(block.start, block.stop):
        if not take[i - block.start]:
            continue
        a = &src.at[i]
        p = <const unsigned char*>src.data.data + a.wire_off
        count = _split_members(p, a.wire_len, ms)
        sk_len = a.sk_len - 2
        if (count < 0 or a.sk_len < 3
                or memcmp(src.data.data + a.sk_off + sk_len, b"@1", 2) != 0
                or _names_repeat(p, ms, count)
                or _find(p, ms, count, b"syncMode") != -1):  # marked twice: not spliced
            left.append(i - block.start)
            continue
        ver = _find(p, ms, count, b"version")
        attrs = _find(p, ms, count, b"attributes")
        st_i = _find(p, ms, count, b"status")
        up_i = _find(p, ms, count, b"updatedAt")
        if (ver < 0 or ms[ver].v1 - ms[ver].v0 != 9
                or memcmp(p + ms[ver].v0, b'{"N":"1"}', 9) != 0
                or attrs == -2 or st_i == -2 or up_i == -2
                or (attrs >= 0 and ms[attrs].v1 - ms[attrs].v0 >= 4
                    and memcmp(p + ms[attrs].v0, b'{"S"', 4) == 0)):
            left.append(i - block.start)
            continue
        # the data row
        d0 = db.len
        if w_raw(db, "{", 1) < 0:
            raise MemoryError()
        first = True
        for j in range(plan_n):
            step = <tuple>data_plan[j]
            name = <bytes>step[0]
            op = step[2]
            at = _find(p, ms, count, <bytes>step[1])
            if at == -2:
                break
            if at < 0:
                if op == 1:
                    break  # no sk member
                continue
            if op == 0:
                _put_member(db, &first, name, <const char*>p + ms[at].v0, ms[at].v1 - ms[at].v0)
            elif op == 1:
                # {"S":"...@1"} -> {"S":"..."}: the last 4 bytes are @1"}
                if (ms[at].v1 - ms[at].v0 < 10
                        or memcmp(p + ms[at].v1 - 4, b'@1"}', 4) != 0):
                    break
                _put_member(db, &first, name, <const char*>p + ms[at].v0,
                            ms[at].v1 - ms[at].v0 - 4)
                if w_raw(db, '"}', 2) < 0:
                    raise MemoryError()
            else:
                raw = PyBytes_FromStringAndSize(<const char*>p + ms[at].v0,
                                                ms[at].v1 - ms[at].v0)
                rendered = dates.get(raw)
                if rendered is None:
                    break
                _put_member(db, &first, name, PyBytes_AS_STRING(rendered),
                            PyBytes_GET_SIZE(rendered))
        else:
            j = plan_n
        if j < plan_n:  # a step the C side does not take: the general path's
            db.len = d0
            left.append(i - block.start)
            continue
        if w_raw(db, "}", 1) < 0:
            raise MemoryError()
        # a Python-made item's line is its object's (the entry's is not kept)
        obj = src.made[i]
        line = a.line if obj is None else obj.line
        _push_item(dstore, db, d0, a, src.data.data, sk_len, line)
        # the finished command
        c0 = cb.len
        if w_raw(cb, "{", 1) < 0:
            raise MemoryError()
        first = True
        for j in range(count):
            name = PyBytes_FromStringAndSize(<const char*>p + ms[j].k0, ms[j].k1 - ms[j].k0)
            if j == st_i:
                _put_member(cb, &first, name, PyBytes_AS_STRING(status),
                            PyBytes_GET_SIZE(status))
            elif j == up_i:
                _put_member(cb, &first, name, PyBytes_AS_STRING(updated),
                            PyBytes_GET_SIZE(updated))
            else:
                _put_member(cb, &first, name, <const char*>p + ms[j].v0, ms[j].v1 - ms[j].v0)
        if w_raw(cb, PyBytes_AS_STRING(sync_tail), PyBytes_GET_SIZE(sync_tail)) < 0:
            raise MemoryError()
        if st_i < 0:
            _put_member(cb, &first, b"status", PyBytes_AS_STRING(status),
                        PyBytes_GET_SIZE(status))
        if up_i < 0:
            _put_member(cb, &first, b"updatedAt", PyBytes_AS_STRING(updated),
                        PyBytes_GET_SIZE(updated))
        if w_raw(cb, "}", 1) < 0:
            raise MemoryError()
        _push_item(cstore, cb, c0, a, src.data.data, a.sk_len, line)
    dstore.seal(objects)
    cstore.seal(objects)
    return _block_view(dstore, 0, dstore.n), _block_view(cstore, 0, cstore.n), left
