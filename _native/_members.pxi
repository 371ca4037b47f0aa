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
