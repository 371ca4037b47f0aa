# ---------------------------------------------------------------------------
# existing_items: `run --sync` for an entity the tables already hold (issue 25)
# ---------------------------------------------------------------------------
#
# `importer.mbc.fast_sync.existing_entity_items` in C: a pending command at version V
# whose entity's data row is at V-1 gives the history row, the merged data row, the
# previous command with its TTL and the command finished -- the members of the
# records as read, spliced, without a dict per row.  Whatever it does not take (a
# date it has not met, a key with an escape, a member there twice, a number in
# another form) answers None, and Python (then the general path) decides.  Equality
# with `existing_entity_items` is checked by tests/test_fast_sync.py.


cdef int _h_put(Buf* b, bint* first, const unsigned char* name, Py_ssize_t nn, const char* v,
                Py_ssize_t n) except -1:
    """`_put_member` with the name as bytes of a record (no name object made)."""
    if buf_reserve(b, nn + n + 4) < 0:
        raise MemoryError()
    if not first[0]:
        p_raw(b, ",", 1)
    first[0] = False
    p_raw(b, '"', 1)
    p_raw(b, <const char*>name, nn)
    p_raw(b, '":', 2)
    p_raw(b, v, n)
    return 0


cdef bint _h_version_is(const unsigned char* p, _Member* m, bytes digits) noexcept:
    """The member's value is `{"N":"<digits>"}`, compact."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(digits)
    return (m.v1 - m.v0 == n + 8 and memcmp(p + m.v0, b'{"N":"', 6) == 0
            and memcmp(p + m.v0 + 6, PyBytes_AS_STRING(digits), n) == 0
            and memcmp(p + m.v1 - 2, b'"}', 2) == 0)


cdef int _h_null_kind(const unsigned char* p, _Member* m) noexcept:
    """1: the value is NULL; 0: it is not; -1: not told here (Python reads it)."""
    cdef Py_ssize_t n = m.v1 - m.v0, i
    if n == 13 and memcmp(p + m.v0, b'{"NULL":true}', 13) == 0:
        return 1
    for i in range(m.v0, m.v1 - 5):
        if memcmp(p + i, b'"NULL"', 6) == 0:
            return -1
    return 0


cdef Py_ssize_t _h_plain_string(const unsigned char* p, _Member* m) noexcept:
    """For a `{"S":"..."}` value without an escape: the index of its last `@` (or 0 when
    it has none); -1 when the value is not that form."""
    cdef Py_ssize_t i, at = 0
    if m.v1 - m.v0 < 8 or memcmp(p + m.v0, b'{"S":"', 6) != 0 or memcmp(p + m.v1 - 2, b'"}', 2) != 0:
        return -1
    for i in range(m.v0 + 6, m.v1 - 2):
        if p[i] == 92 or p[i] == 34:  # a backslash, or a quote: not the plain form
            return -1
        if p[i] == 64:
            at = i
    return at


cdef int _h_put_dated(Buf* b, bint* first, const unsigned char* name, Py_ssize_t nn,
                      const unsigned char* p, _Member* m, dict dates) except -2:
    """A date member, rendered through `dates` (raw -> rendered raw); 1 when it is not
    there (the caller gives up), 0 when written."""
    raw = PyBytes_FromStringAndSize(<const char*>p + m.v0, m.v1 - m.v0)
    rendered = dates.get(raw)
    if rendered is None:
        return 1
    _h_put(b, first, name, nn, PyBytes_AS_STRING(<bytes>rendered),
           PyBytes_GET_SIZE(<bytes>rendered))
    return 0


cdef bint _h_is_date(const unsigned char* p, _Member* m) noexcept:
    cdef Py_ssize_t n = m.k1 - m.k0
    return ((n == 9 and memcmp(p + m.k0, b"createdAt", 9) == 0)
            or (n == 9 and memcmp(p + m.k0, b"updatedAt", 9) == 0))


cdef object _h_restamp(Buf* b, const unsigned char* p, _Member* ms, Py_ssize_t count, dict dates,
                     bytes ttl, const char* sk, Py_ssize_t sk_n):
    """`render_dates(with_ttl(item, ttl))` of the split record, `sk` replacing its sk member
    when given: bytes, or None (a date not in `dates`)."""
    cdef Py_ssize_t j, nn
    cdef bint first = True, had_ttl = False
    cdef const unsigned char* name
    b.len = 0
    if w_raw(b, "{", 1) < 0:
        raise MemoryError()
    for j in range(count):
        name = p + ms[j].k0
        nn = ms[j].k1 - ms[j].k0
        if nn == 3 and memcmp(name, b"ttl", 3) == 0:
            _h_put(b, &first, name, nn, PyBytes_AS_STRING(ttl), PyBytes_GET_SIZE(ttl))
            had_ttl = True
        elif sk != NULL and nn == 2 and memcmp(name, b"sk", 2) == 0:
            _h_put(b, &first, name, nn, sk, sk_n)
        elif _h_is_date(p, &ms[j]):
            if _h_put_dated(b, &first, name, nn, p, &ms[j], dates):
                return None
        else:
            _h_put(b, &first, name, nn, <const char*>p + ms[j].v0, ms[j].v1 - ms[j].v0)
    if not had_ttl:
        _put_member(b, &first, b"ttl", PyBytes_AS_STRING(ttl), PyBytes_GET_SIZE(ttl))
    if w_raw(b, "}", 1) < 0:
        raise MemoryError()
    return PyBytes_FromStringAndSize(b.data, b.len)


def existing_items(bytes wire, bytes stored, previous, bytes version, bytes before,
                   tuple data_plan, dict dates, bytes status, bytes updated, bytes ttl_history,
                   bytes ttl_command):
    """`(history, data, previous or None, finished)` for the marked command `wire` at
    `version` (its digits) whose entity's data row `stored` is at `before` (V-1's
    digits), `previous` the command at @V-1 as read or None -- or None for anything not
    taken here (Python's `existing_entity_items` then decides).

    `data_plan`: `(name, source, op)` per member the default handler sets, in order:
    op 0 the command's member copied when present, 1 the command's `sk` with its
    `@version` cut, 2 a date from the command (through `dates`), 3 the data row's when
    present and not NULL else the command's, 4 the same for a date.  The data row's
    members named by no step come first, in place.  `ttl_history` / `ttl_command`: the
    `ttl` members of the history row and of the previous command.
    """
    cdef _Member cm[_MAX_MEMBERS]
    cdef _Member hm[_MAX_MEMBERS]
    cdef _Member pm[_MAX_MEMBERS]
    cdef const unsigned char* c = <const unsigned char*>PyBytes_AS_STRING(wire)
    cdef const unsigned char* h = <const unsigned char*>PyBytes_AS_STRING(stored)
    cdef const unsigned char* pp = NULL
    cdef Py_ssize_t cn, hn, pn = 0, j, k, at, plan_n = len(data_plan), sk_at, hsk_at
    cdef Py_ssize_t ver, attrs, st_i, up_i, c_sk, h_sk, h_ver, src_at, kind
    cdef Buf b
    cdef bint first, named
    cdef bytes name, hist_sk
    cdef tuple step
    cdef int op
    cdef object history, data, prev = None, finished
    cdef const char* put_name[_MAX_MEMBERS]
    cdef Py_ssize_t put_len[_MAX_MEMBERS]
    if plan_n > _MAX_MEMBERS:
        raise ValueError("data_plan too long")
    for k in range(plan_n):  # the names the default handler sets (the plan holds them)
        name = <bytes>(<tuple>data_plan[k])[0]
        put_name[k] = PyBytes_AS_STRING(name)
        put_len[k] = PyBytes_GET_SIZE(name)
    cn = _split_members(c, PyBytes_GET_SIZE(wire), cm)
    hn = _split_members(h, PyBytes_GET_SIZE(stored), hm)
    if cn < 0 or hn < 0 or _names_repeat(c, cm, cn) or _names_repeat(h, hm, hn):
        return None
    if previous is not None:
        pp = <const unsigned char*>PyBytes_AS_STRING(<bytes>previous)
        pn = _split_members(pp, PyBytes_GET_SIZE(<bytes>previous), pm)
        if pn < 0 or _names_repeat(pp, pm, pn):
            return None
    ver = _find(c, cm, cn, b"version")
    attrs = _find(c, cm, cn, b"attributes")
    st_i = _find(c, cm, cn, b"status")
    up_i = _find(c, cm, cn, b"updatedAt")
    c_sk = _find(c, cm, cn, b"sk")
    h_sk = _find(h, hm, hn, b"sk")
    h_ver = _find(h, hm, hn, b"version")
    if (ver < 0 or c_sk < 0 or h_sk < 0 or h_ver < 0 or _find(c, cm, cn, b"pk") < 0
            or not _h_version_is(c, &cm[ver], version) or not _h_version_is(h, &hm[h_ver], before)
            or (attrs >= 0 and cm[attrs].v1 - cm[attrs].v0 >= 4
                and memcmp(c + cm[attrs].v0, b'{"S"', 4) == 0)):
        return None
    sk_at = _h_plain_string(c, &cm[c_sk])
    hsk_at = _h_plain_string(h, &hm[h_sk])
    if sk_at <= 0 or hsk_at < 0:
        return None
    b.data = NULL
    b.len = 0
    b.cap = 0
    try:
        # history_copy: the data row at base@{its version}, the history TTL
        if hsk_at == 0:
            hsk_at = hm[h_sk].v1 - 2
        hist_sk = (PyBytes_FromStringAndSize(<const char*>h + hm[h_sk].v0, hsk_at - hm[h_sk].v0)
                   + b"@" + before + b'"}')
        history = _h_restamp(&b, h, hm, hn, dates, ttl_history, PyBytes_AS_STRING(hist_sk),
                           PyBytes_GET_SIZE(hist_sk))
        if history is None:
            return None
        if pp != NULL:
            prev = _h_restamp(&b, pp, pm, pn, dates, ttl_command, NULL, 0)
            if prev is None:
                return None
        # the default handler: the data row's other members in place, then the command's
        b.len = 0
        if w_raw(&b, "{", 1) < 0:
            raise MemoryError()
        first = True
        for j in range(hn):
            named = False
            for k in range(plan_n):
                if (hm[j].k1 - hm[j].k0 == put_len[k]
                        and memcmp(h + hm[j].k0, put_name[k], put_len[k]) == 0):
                    named = True
                    break
            if not named:
                _h_put(&b, &first, h + hm[j].k0, hm[j].k1 - hm[j].k0, <const char*>h + hm[j].v0,
                       hm[j].v1 - hm[j].v0)
        for k in range(plan_n):
            step = <tuple>data_plan[k]
            name = <bytes>step[0]
            op = step[2]
            if op >= 3:  # kept: the data row's when present and not NULL
                at = _find(h, hm, hn, <bytes>step[1])
                if at >= 0:
                    kind = _h_null_kind(h, &hm[at])
                    if kind < 0:
                        return None
                    if kind == 0:
                        if op == 3:
                            _put_member(&b, &first, name, <const char*>h + hm[at].v0,
                                        hm[at].v1 - hm[at].v0)
                        elif _h_put_dated(&b, &first, <const unsigned char*>PyBytes_AS_STRING(name),
                                          PyBytes_GET_SIZE(name), h, &hm[at], dates):
                            return None
                        continue
            src_at = _find(c, cm, cn, <bytes>step[1])
            if src_at == -2:
                return None
            if src_at < 0:
                continue
            if op == 1:
                _put_member(&b, &first, name, <const char*>c + cm[src_at].v0,
                            sk_at - cm[src_at].v0)
                if w_raw(&b, '"}', 2) < 0:
                    raise MemoryError()
            elif op == 2 or op == 4:
                if _h_put_dated(&b, &first, <const unsigned char*>PyBytes_AS_STRING(name),
                                PyBytes_GET_SIZE(name), c, &cm[src_at], dates):
                    return None
            else:
                _put_member(&b, &first, name, <const char*>c + cm[src_at].v0,
                            cm[src_at].v1 - cm[src_at].v0)
        if w_raw(&b, "}", 1) < 0:
            raise MemoryError()
        data = PyBytes_FromStringAndSize(b.data, b.len)
        # finish: status and updatedAt replaced, or appended
        b.len = 0
        if w_raw(&b, "{", 1) < 0:
            raise MemoryError()
        first = True
        for j in range(cn):
            if j == st_i:
                _h_put(&b, &first, c + cm[j].k0, cm[j].k1 - cm[j].k0, PyBytes_AS_STRING(status),
                       PyBytes_GET_SIZE(status))
            elif j == up_i:
                _h_put(&b, &first, c + cm[j].k0, cm[j].k1 - cm[j].k0, PyBytes_AS_STRING(updated),
                       PyBytes_GET_SIZE(updated))
            else:
                _h_put(&b, &first, c + cm[j].k0, cm[j].k1 - cm[j].k0, <const char*>c + cm[j].v0,
                       cm[j].v1 - cm[j].v0)
        if st_i < 0:
            _put_member(&b, &first, b"status", PyBytes_AS_STRING(status), PyBytes_GET_SIZE(status))
        if up_i < 0:
            _put_member(&b, &first, b"updatedAt", PyBytes_AS_STRING(updated),
                        PyBytes_GET_SIZE(updated))
        if w_raw(&b, "}", 1) < 0:
            raise MemoryError()
        finished = PyBytes_FromStringAndSize(b.data, b.len)
        return (history, data, prev, finished)
    finally:
        free(b.data)
