# -- JSON arrays (ItemReader InputType JSON) ----------------------------------------------
#
# Why: a `.json` file (one array of items) was parsed and mapped in Python, at a third of
# CSV's rate, while a JSON Lines file goes through `_jl_line` in C.  An array's elements
# are found here (strings, escapes and bracket depth followed byte by byte, no recursion,
# so any bytes are safe) and each complete element, with the `,` or `]` after it in the
# block, is handed to `_jl_line` exactly as a JSONL line would be: the same compact
# objects are taken in C, every other element goes back to Python (`others`), which is
# the definition.  Whatever is not a well-formed array continuation (a bad separator, an
# element cut by the end of the data) stops the scan where the element starts; the
# Python reader says what is wrong there, with the reference's words and offsets.

cdef enum:
    JA_MORE = 0      # stopped at an element that is not whole in `buf` (read more)
    JA_CLOSED = 1    # the array's `]` was read: `pos` is after it
    JA_PYTHON = 2    # stopped at an element Python must read from (something is off)
    JA_LIMIT = 3     # `max_elements` elements taken: `pos` is at the next one


cdef inline Py_ssize_t _ja_ws(const uchar* s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    while i < n and _jl_ws(s[i]):
        i += 1
    return i


cdef Py_ssize_t _ja_end(const uchar* s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """The end of the element at s[i] (not whitespace) as far as brackets and strings
    go; -1: it does not end within `n`.  Not a check that it is JSON: `_jl_line`, or
    Python, judges the element.  A scalar ends at whitespace or a structural byte."""
    cdef Py_ssize_t j = i, depth = 0
    cdef uchar c = s[i]
    if c == 34:  # a string element
        j += 1
        while j < n:
            c = s[j]
            if c == 92:
                j += 2
                continue
            if c == 34:
                return j + 1
            j += 1
        return -1
    if c != 123 and c != 91:
        while j < n:
            c = s[j]
            if _jl_ws(c) or c == 44 or c == 93 or c == 125 or c == 123 or c == 91 or c == 34:
                return j
            j += 1
        return -1
    while j < n:
        c = s[j]
        if c == 34:
            j += 1
            while j < n:
                c = s[j]
                if c == 92:
                    j += 2
                    continue
                if c == 34:
                    break
                j += 1
            if j >= n:
                return -1
        elif c == 123 or c == 91:
            depth += 1
        elif c == 125 or c == 93:
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return -1


def json_array_rows(bytes buf, Py_ssize_t pos, long long first_index, list names, list kinds,
                    Py_ssize_t max_elements=-1, bint all_python=False):
    """The array elements of `buf` from `pos` (where an element starts, whitespace
    allowed before it) as rows, up to the first one that is not whole in `buf`.

    Returns `(rows, sizes, others, count, pos, status)`: `rows` a `RowBlock` of the
    elements taken in C (positioned by their 0-based index, from `first_index`),
    `sizes` their JSON sizes (int64), `others` the elements left to Python as
    `(row, index, start, end)` -- `row` the row of `rows` they come before, the
    element `buf[start:end]` --, `count` the elements read, `pos` where reading
    stopped and `status` why (`JA_*`: 0 more data needed, 1 the array closed,
    2 Python reads on from `pos`, 3 `max_elements` read).  With `all_python` every
    element goes to `others`.  An element is read only with the `,` or `]` after it.
    """
    cdef Py_ssize_t w = len(names), k, n = len(buf), i = pos, a = pos, e, size = 0, cap, nr = 0
    cdef Py_ssize_t no = 0, ocap = 0, count = 0
    cdef const uchar* s = <const uchar*> PyBytes_AS_STRING(buf)
    cdef long long index = first_index
    cdef long long* sizes = NULL
    cdef Py_ssize_t* others = NULL   # quadruples: row, start, end, index
    cdef void* p
    cdef JlPlan pl
    cdef RowBlock blk
    cdef int rc = JL_ROW, status = JA_MORE
    cdef list out_others
    if w < 1 or len(kinds) != w:
        raise ValueError("json_array_rows needs one kind per name, at least one")
    if pos < 0 or pos > n:
        raise ValueError("pos is outside buf")
    memset(&pl, 0, sizeof(JlPlan))
    pl.width = w
    pl.names = <const char**> malloc(w * sizeof(char*))
    pl.name_lens = <Py_ssize_t*> malloc(w * sizeof(Py_ssize_t))
    pl.kinds = <int*> malloc(w * sizeof(int))
    pl.cell_at = <Py_ssize_t*> malloc(w * sizeof(Py_ssize_t))
    pl.cell_len = <Py_ssize_t*> malloc(w * sizeof(Py_ssize_t))
    pl.fends = <Py_ssize_t*> malloc(w * sizeof(Py_ssize_t))
    try:
        if (pl.names == NULL or pl.name_lens == NULL or pl.kinds == NULL or pl.cell_at == NULL
                or pl.cell_len == NULL or pl.fends == NULL):
            raise MemoryError()
        for k in range(w):
            if not isinstance(names[k], bytes):
                raise TypeError("names are UTF-8 bytes")
            pl.names[k] = PyBytes_AS_STRING(names[k])
            pl.name_lens[k] = PyBytes_GET_SIZE(names[k])
            pl.kinds[k] = kinds[k]
        blk = RowBlock(w)
        cap = 256 + (n - pos) // 128
        if blk.reserve(cap, n - pos + 64) < 0:
            raise MemoryError()
        sizes = <long long*> malloc(cap * sizeof(long long))
        if sizes == NULL:
            raise MemoryError()
        with nogil:
            while True:
                if max_elements >= 0 and count >= max_elements:
                    status = JA_LIMIT
                    break
                a = _ja_ws(s, i, n)
                if a >= n:
                    status = JA_MORE
                    break
                if s[a] == 44 or s[a] == 93 or s[a] == 125 or s[a] == 58:
                    status = JA_PYTHON  # no element where one must be
                    break
                e = _ja_end(s, a, n)
                if e < 0:
                    status = JA_MORE
                    break
                k = _ja_ws(s, e, n)
                if k >= n:
                    status = JA_MORE
                    break
                if s[k] != 44 and s[k] != 93:
                    status = JA_PYTHON  # Python names what came instead of , or ]
                    break
                rc = JL_PYTHON if all_python or s[a] != 123 else _jl_line(
                    &pl, blk, s + a, e - a, index, &size)
                if rc == JL_NOMEM:
                    break
                if rc == JL_ROW:
                    if nr >= cap:
                        cap *= 2
                        p = realloc(sizes, cap * sizeof(long long))
                        if p == NULL:
                            rc = JL_NOMEM
                            break
                        sizes = <long long*> p
                    sizes[nr] = size
                    nr += 1
                else:
                    if no >= ocap:
                        ocap = ocap * 2 if ocap else 16
                        p = realloc(others, ocap * 4 * sizeof(Py_ssize_t))
                        if p == NULL:
                            rc = JL_NOMEM
                            break
                        others = <Py_ssize_t*> p
                    others[4 * no] = blk.n
                    others[4 * no + 1] = a
                    others[4 * no + 2] = e
                    others[4 * no + 3] = <Py_ssize_t> (index - first_index)
                    no += 1
                index += 1
                count += 1
                i = k + 1
                if s[k] == 93:
                    status = JA_CLOSED
                    break
        if rc == JL_NOMEM:
            raise MemoryError()
        if status == JA_MORE or status == JA_PYTHON:
            i = a  # the element not read starts here
        out_others = [
            (others[4 * k], first_index + others[4 * k + 3], others[4 * k + 1], others[4 * k + 2])
            for k in range(no)
        ]
        return (blk, PyBytes_FromStringAndSize(<const char*> sizes, nr * sizeof(long long)),
                out_others, count, i, status)
    finally:
        free(pl.names); free(pl.name_lens); free(pl.kinds); free(pl.cell_at)
        free(pl.cell_len); free(pl.fends)
        free(pl.key.data); free(pl.cells.data); free(pl.fb.data)
        free(sizes); free(others)
