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
