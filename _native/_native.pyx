# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Native core of importer.

Entry points are thin typed wrappers around C loops; see importer/reference.py
for the readable definition of every behaviour implemented here.

Layout (after pandas' parsers.pyx): the hot loops below work on raw UTF-8
buffers, create no Python objects and return integer status codes; the
wrappers hold the GIL, gather pointers, run the loops inside `with nogil:` and
turn the codes into `Reject` records with the reference's exact reasons.

* `TransformPlan` / `transform_rows` -- the batch transformer.
* `row_json_size` -- `importer.input.batching.item_json_size` in C.
* `RecordReader` -- ItemReader CSV records from a byte stream, chunked;
  `read_batch` cuts ItemBatcher batches in C, each a `RowBlock` (the batch's
  field bytes in one buffer, which `transform_rows` reads in place).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.ref cimport PyObject, Py_INCREF
cimport cython
from libc.stdlib cimport free, malloc, realloc, calloc
from libc.string cimport memchr, memcmp, memcpy, memmove, memset, strlen
from libc.stdint cimport uint64_t

from cpython.unicode cimport PyUnicode_AsUTF8AndSize

cdef extern from "Python.h":
    const char* _utf8_nocheck "PyUnicode_AsUTF8AndSize"(object, Py_ssize_t*)
    object PyUnicode_DecodeUTF8(const char*, Py_ssize_t, const char*)
    bint PyUnicode_CheckExact(object)
    bint PyLong_CheckExact(object)
    bint PyList_CheckExact(object)
    bint PyTuple_CheckExact(object)
    Py_ssize_t PyList_GET_SIZE(object)
    Py_ssize_t PyTuple_GET_SIZE(object)
    PyObject* PyList_GET_ITEM(object, Py_ssize_t)
    PyObject* PyTuple_GET_ITEM(object, Py_ssize_t)
    object PyList_New(Py_ssize_t)
    void PyList_SET_ITEM(object, Py_ssize_t, object)
    int PyObject_GenericSetAttr(object, object, object) except -1
    void PyErr_Clear()
    unsigned int PyUnicode_KIND(object)
    void* PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    bint PyUnicode_IS_ASCII(object)
    int PyUnicode_1BYTE_KIND
    int PyUnicode_2BYTE_KIND

ctypedef unsigned char uchar
ctypedef unsigned short ushort
ctypedef unsigned int uint

cdef const char* _HEX = b"0123456789abcdef"


# ---------------------------------------------------------------------------
# JSON string escaping (json.dumps(ensure_ascii=False) rules)
# ---------------------------------------------------------------------------

# 1 for the bytes JSON escapes: control characters, '"' and '\\'
cdef uchar _ESC[256]
for _c in range(256):
    _ESC[_c] = 1 if (_c < 32 or _c == 34 or _c == 92) else 0


# what escaping adds to a byte's length: 1 for a quote, backslash, LF, CR, tab, BS or FF; 5 for a \u00XX escape
cdef uchar _ESC_EXTRA[256]
for _c in range(256):
    _ESC_EXTRA[_c] = (1 if _c in (34, 92, 10, 13, 9, 8, 12) else 5 if _c < 32 else 0)


cdef inline bint _esc_in_word(uint64_t v) noexcept nogil:
    """True when one of the eight bytes of `v` is one JSON escapes (< 0x20, '"', '\\').

    Exact (no false positives): "has a byte below n" for n <= 128, and "has a zero
    byte" of v XOR the byte searched for."""
    cdef uint64_t high = 0x8080808080808080ULL
    cdef uint64_t q = v ^ 0x2222222222222222ULL
    cdef uint64_t b = v ^ 0x5c5c5c5c5c5c5c5cULL
    return ((((v - 0x2020202020202020ULL) & ~v)
             | ((q - 0x0101010101010101ULL) & ~q)
             | ((b - 0x0101010101010101ULL) & ~b)) & high) != 0


cdef inline bint _needs_escape(const char* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i = 0
    cdef uint64_t w
    while i + 8 <= n:
        memcpy(&w, p + i, 8)
        if _esc_in_word(w):
            return True
        i += 8
    while i < n:
        if _ESC[<unsigned char> p[i]]:
            return True
        i += 1
    return False


cdef inline Py_ssize_t _escape_extra(const uchar* p, Py_ssize_t n) noexcept nogil:
    """What JSON escaping adds to these bytes' length (`_ESC_EXTRA` summed), eight
    bytes at a time where none needs escaping (nearly always)."""
    cdef Py_ssize_t i = 0, j, extra = 0
    cdef uint64_t w
    while i + 8 <= n:
        memcpy(&w, p + i, 8)
        if _esc_in_word(w):
            for j in range(i, i + 8):
                extra += _ESC_EXTRA[p[j]]
        i += 8
    while i < n:
        extra += _ESC_EXTRA[p[i]]
        i += 1
    return extra


cdef Py_ssize_t _escape_into(const unsigned char* src, Py_ssize_t n, char* out) noexcept nogil:
    """Write the JSON-escaped form of UTF-8 `src` into `out` (room for 6*n bytes).

    Bytes that need no escape (nearly all of them) are copied eight at a time."""
    cdef Py_ssize_t i = 0, o = 0
    cdef unsigned char c
    cdef uint64_t w
    while i < n:
        while i + 8 <= n:
            memcpy(&w, src + i, 8)
            if _esc_in_word(w):
                break
            memcpy(out + o, &w, 8)
            i += 8
            o += 8
        while i < n and not _ESC[src[i]]:
            out[o] = src[i]
            i += 1
            o += 1
        if i >= n:
            break
        c = src[i]
        i += 1
        if c == 34 or c == 92:          # " and \
            out[o] = 92
            out[o + 1] = c
            o += 2
        elif c == 10:
            out[o] = 92; out[o + 1] = 110; o += 2
        elif c == 13:
            out[o] = 92; out[o + 1] = 114; o += 2
        elif c == 9:
            out[o] = 92; out[o + 1] = 116; o += 2
        elif c == 8:
            out[o] = 92; out[o + 1] = 98; o += 2
        elif c == 12:
            out[o] = 92; out[o + 1] = 102; o += 2
        else:
            out[o] = 92; out[o + 1] = 117; out[o + 2] = 48; out[o + 3] = 48
            out[o + 4] = _HEX[c >> 4]; out[o + 5] = _HEX[c & 15]
            o += 6
    return o


# ---------------------------------------------------------------------------
# Growable byte buffer (usable without the GIL)
# ---------------------------------------------------------------------------

cdef struct Buf:
    char* data
    Py_ssize_t len
    Py_ssize_t cap


cdef int buf_grow(Buf* b, Py_ssize_t need) noexcept nogil:
    cdef Py_ssize_t cap
    cdef char* p
    cap = b.cap * 2
    if cap < need + 256:
        cap = need + 256
    p = <char*> realloc(b.data, cap)
    if p == NULL:
        return -1
    b.data = p
    b.cap = cap
    return 0


cdef inline int buf_reserve(Buf* b, Py_ssize_t extra) noexcept nogil:
    if b.len + extra <= b.cap:
        return 0
    return buf_grow(b, b.len + extra)


cdef inline void copy_bytes(char* dst, const char* src, Py_ssize_t n) noexcept nogil:
    """memcpy, but a call to the library costs more than copying a short field in place."""
    cdef Py_ssize_t i
    if n > 16:
        memcpy(dst, src, n)
        return
    for i in range(n):
        dst[i] = src[i]


# The p_* writers put bytes where the caller has already reserved room (buf_reserve):
# no check per write, in the loops that write an item's every field.  The w_* writers
# reserve the room first (-1: out of memory).

cdef inline void p_raw(Buf* b, const char* p, Py_ssize_t n) noexcept nogil:
    copy_bytes(b.data + b.len, p, n)
    b.len += n


cdef inline void p_lit(Buf* b, const char* s) noexcept nogil:
    # inlined, strlen of a literal is folded by the compiler
    p_raw(b, s, strlen(s))


cdef inline void p_esc(Buf* b, const char* p, Py_ssize_t n) noexcept nogil:
    b.len += _escape_into(<const unsigned char*> p, n, b.data + b.len)


cdef inline void p_key(Buf* b, const char* p, Py_ssize_t n, bint clean) noexcept nogil:
    # a key piece: copied when `clean` (nothing in it to escape), else escaped
    if clean:
        p_raw(b, p, n)
    else:
        p_esc(b, p, n)


cdef inline int w_raw(Buf* b, const char* p, Py_ssize_t n) noexcept nogil:
    if buf_reserve(b, n) < 0:
        return -1
    p_raw(b, p, n)
    return 0


cdef inline int w_esc(Buf* b, const char* p, Py_ssize_t n) noexcept nogil:
    if buf_reserve(b, 6 * n) < 0:
        return -1
    p_esc(b, p, n)
    return 0


cdef inline int w_lit(Buf* b, const char* s) noexcept nogil:
    return w_raw(b, s, strlen(s))


def escape_scan(bytes data):
    """(whether JSON escapes any of these bytes, how many bytes escaping adds): the
    word-at-a-time scans the transform and the reader use, for tests to hold against
    the per-byte definition."""
    cdef const char* p = data
    return (bool(_needs_escape(p, len(data))),
            _escape_extra(<const uchar*> p, len(data)))


cdef extern from *:
    """
    #if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    #define _IMPORTER_FIRST_BYTE(m) (__builtin_ctzll(m) >> 3)
    #else
    #define _IMPORTER_FIRST_BYTE(m) (__builtin_clzll(m) >> 3)
    #endif
    """
    # the index, in memory order, of the first byte of a word loaded with memcpy
    # whose high bit is set in `m` (m != 0: the high bits of `_zero_bytes`)
    int _first_byte "_IMPORTER_FIRST_BYTE"(unsigned long long m) nogil


def keys_json(list keys):
    """BatchGetItem's `Keys` list, without its brackets, as UTF-8 bytes:
    `{"pk":{"S":pk},"sk":{"S":sk}}` per (pk, sk), comma-joined -- the bytes
    json.dumps(ensure_ascii=False) writes.  None when a key is not a pair of
    str or holds a lone surrogate (the caller's Python path decides those).

    Why in C: checking 100 keys for characters JSON escapes cost more in
    Python (a regex over the joined keys) than the rest of the request.
    """
    cdef Buf b
    cdef Py_ssize_t i, n, k
    cdef const char* p
    cdef object key, part
    memset(&b, 0, sizeof(Buf))
    try:
        for i in range(len(keys)):
            key = keys[i]
            if not PyTuple_CheckExact(key) or PyTuple_GET_SIZE(key) != 2:
                return None
            if w_lit(&b, b'{"pk":{"S":"' if i == 0 else b',{"pk":{"S":"') < 0:
                raise MemoryError()
            for k in range(2):
                part = <object> PyTuple_GET_ITEM(key, k)
                if not PyUnicode_CheckExact(part):
                    return None
                p = _utf8_nocheck(part, &n)
                if p == NULL:
                    PyErr_Clear()
                    return None
                if w_esc(&b, p, n) < 0:
                    raise MemoryError()
                if w_lit(&b, b'"},"sk":{"S":"' if k == 0 else b'"}}') < 0:
                    raise MemoryError()
        return PyBytes_FromStringAndSize(b.data, b.len)
    finally:
        free(b.data)


# ---------------------------------------------------------------------------
# Field parsers: values.py's rules on UTF-8 bytes
# ---------------------------------------------------------------------------

# status codes shared by the core and the wrapper




cdef enum:
    OK = 0
    R_REQUIRED = 1
    R_SHORT = 2
    R_LONG = 3
    R_ENUM = 4
    R_PATTERN = 5
    R_NOT_INT = 6
    R_NOT_DEC = 7
    R_DIGITS = 8
    R_RANGE = 9
    R_LESS = 10
    R_GREATER = 11
    R_BOOL = 12
    R_DATE = 13
    R_BEFORE = 14
    R_AFTER = 15
    R_DT = 16
    R_DT_CAL = 17
    R_DT_TIME = 18
    R_DT_OFF = 19
    R_JSON = 20
    R_RAISE = 21
    R_MBC_NUM = 22
    R_KEY_EMPTY = 30
    R_KEY_SEP = 31
    R_PK_LONG = 32
    R_SK_LONG = 33
    R_ITEM_SIZE = 34
    R_FALLBACK = 40
    R_NOMEM = 50
    ITEM = 100
    K_STRING = 0
    K_INTEGER = 1
    K_DECIMAL = 2
    K_BOOLEAN = 3
    K_DATE = 4
    K_DATETIME = 5
    K_JSON = 6
    NUMBUF = 256
    MAX_ITEM_BYTES = 409600
    MAX_PK_BYTES = 2048
    MAX_SK_BYTES = 1024
    P_RECORD = 0
    P_NEED_MORE = 1
    P_END = 2
    P_NOMEM = 3
    P_PYTHON = 4     # read_batch: the record just parsed needs Python (refused, re-read)
    P_HALT = 5       # read_batch: the record just parsed does not go in this batch
    IN_BATCH = 0     # _placement: the row joins the open batch
    TOO_BIG = 1      # _placement: no batch can hold the row
    NEXT_BATCH = 2   # _placement: the row opens the next batch
    ST_START = 0
    ST_UNQUOTED = 1
    ST_QUOTED = 2
    ST_AFTER = 3


CODES = {
    'OK': OK,
    'R_REQUIRED': R_REQUIRED,
    'R_SHORT': R_SHORT,
    'R_LONG': R_LONG,
    'R_ENUM': R_ENUM,
    'R_PATTERN': R_PATTERN,
    'R_NOT_INT': R_NOT_INT,
    'R_NOT_DEC': R_NOT_DEC,
    'R_DIGITS': R_DIGITS,
    'R_RANGE': R_RANGE,
    'R_LESS': R_LESS,
    'R_GREATER': R_GREATER,
    'R_BOOL': R_BOOL,
    'R_DATE': R_DATE,
    'R_BEFORE': R_BEFORE,
    'R_AFTER': R_AFTER,
    'R_DT': R_DT,
    'R_DT_CAL': R_DT_CAL,
    'R_DT_TIME': R_DT_TIME,
    'R_DT_OFF': R_DT_OFF,
    'R_JSON': R_JSON,
    'R_RAISE': R_RAISE,
    'R_MBC_NUM': R_MBC_NUM,
    'R_KEY_EMPTY': R_KEY_EMPTY,
    'R_KEY_SEP': R_KEY_SEP,
    'R_PK_LONG': R_PK_LONG,
    'R_SK_LONG': R_SK_LONG,
    'R_ITEM_SIZE': R_ITEM_SIZE,
    'R_FALLBACK': R_FALLBACK,
    'R_NOMEM': R_NOMEM,
    'ITEM': ITEM,
    'K_STRING': K_STRING,
    'K_INTEGER': K_INTEGER,
    'K_DECIMAL': K_DECIMAL,
    'K_BOOLEAN': K_BOOLEAN,
    'K_DATE': K_DATE,
    'K_DATETIME': K_DATETIME,
    'K_JSON': K_JSON,
}


cdef inline bint is_digit(uchar c) noexcept nogil:
    return c >= 48 and c <= 57


cdef inline void strip_ws(const char** p, Py_ssize_t* n) noexcept nogil:
    cdef const char* s = p[0]
    cdef Py_ssize_t a = 0, b = n[0]
    while a < b and (s[a] == 32 or s[a] == 9):
        a += 1
    while b > a and (s[b - 1] == 32 or s[b - 1] == 9):
        b -= 1
    p[0] = s + a
    n[0] = b - a


cdef struct Num:
    # parsed number: value = (-1 if neg) * 0.D * 10**point, D = digits (no leading/trailing 0)
    int zero
    int neg
    long long point
    const char* digits
    Py_ssize_t ndigits


cdef int parse_number(const char* s, Py_ssize_t n, int decimal, Num* num,
                      char* out, Py_ssize_t* outlen, long long* param) noexcept nogil:
    """values.parse_integer / parse_decimal + normalise_number; `s` already stripped."""
    cdef Py_ssize_t i = 0, int_start, int_len, frac_start = 0, frac_len = 0
    cdef Py_ssize_t total, lead, k, j, o
    cdef int neg = 0, eneg = 0
    cdef long long exponent = 0, point, adjusted, sig
    cdef const char* first
    cdef bint frac_group = False
    if i < n and (s[i] == 43 or s[i] == 45):
        neg = s[i] == 45
        i += 1
    int_start = i
    while i < n and is_digit(s[i]):
        i += 1
    int_len = i - int_start
    if not decimal:
        if int_len == 0 or i != n:
            return R_NOT_INT
    else:
        if i < n and s[i] == 46:
            frac_group = True
            i += 1
            frac_start = i
            while i < n and is_digit(s[i]):
                i += 1
            frac_len = i - frac_start
        if i < n and (s[i] == 101 or s[i] == 69):
            i += 1
            if i < n and (s[i] == 43 or s[i] == 45):
                eneg = s[i] == 45
                i += 1
            j = i
            while i < n and is_digit(s[i]):
                if exponent < 1000000:
                    exponent = exponent * 10 + (s[i] - 48)
                i += 1
            if i == j:
                return R_NOT_DEC
            if eneg:
                exponent = -exponent
        if i != n or (int_len == 0 and frac_len == 0):
            return R_NOT_DEC
        if exponent > 100000 or exponent < -100000:
            return R_RANGE
    # digits = (int + frac).lstrip("0")
    total = int_len + frac_len
    lead = 0
    while lead < total:
        if lead < int_len:
            if s[int_start + lead] != 48:
                break
        elif s[frac_start + lead - int_len] != 48:
            break
        lead += 1
    point = int_len - lead + exponent
    # trailing zeros
    k = total
    while k > lead:
        if k - 1 < int_len:
            if s[int_start + k - 1] != 48:
                break
        elif s[frac_start + k - 1 - int_len] != 48:
            break
        k -= 1
    sig = k - lead
    num.neg = neg
    num.point = point
    if sig == 0:
        num.zero = 1
        num.neg = 0
        num.ndigits = 0
        out[0] = 48
        outlen[0] = 1
        return OK
    num.zero = 0
    if sig > 38:
        param[0] = sig
        return R_DIGITS
    adjusted = point - 1
    if adjusted > 125 or adjusted < -130:
        return R_RANGE
    # gather the significant digits into out+NUMBUF-40 scratch? write digits first
    o = 0
    if neg:
        out[o] = 45
        o += 1
    # digit j (0-based within significant digits)
    if point <= 0:
        out[o] = 48; out[o + 1] = 46
        o += 2
        for j in range(-point):
            out[o] = 48
            o += 1
        for j in range(sig):
            out[o] = _digit_at(s, int_start, int_len, frac_start, lead + j)
            o += 1
    elif point >= sig:
        for j in range(sig):
            out[o] = _digit_at(s, int_start, int_len, frac_start, lead + j)
            o += 1
        for j in range(point - sig):
            out[o] = 48
            o += 1
    else:
        for j in range(sig):
            if j == point:
                out[o] = 46
                o += 1
            out[o] = _digit_at(s, int_start, int_len, frac_start, lead + j)
            o += 1
    outlen[0] = o
    num.digits = out + (1 if neg else 0)
    num.ndigits = sig
    return OK


cdef const char* _MAX_SAFE = b"9007199254740991"


cdef inline bint _mbc_number_ok(const Num* num, const char* out, Py_ssize_t outlen) noexcept nogil:
    """values.mbc_number_ok on a parsed number: integral values up to 2^53-1, others at
    most 15 significant digits.  `out` is the rendered number (an integral one is its
    plain digits, after a '-' when negative)."""
    if num.zero:
        return True
    if num.point >= num.ndigits:
        if num.point != 16:
            return num.point < 16
        return memcmp(out + (outlen - 16), _MAX_SAFE, 16) <= 0
    return num.ndigits <= 15


cdef inline char _digit_at(const char* s, Py_ssize_t int_start, Py_ssize_t int_len,
                           Py_ssize_t frac_start, Py_ssize_t idx) noexcept nogil:
    if idx < int_len:
        return s[int_start + idx]
    return s[frac_start + idx - int_len]


cdef struct Bound:
    int zero
    int neg
    long long point
    const char* digits
    Py_ssize_t ndigits


cdef inline int _sign(int zero, int neg) noexcept nogil:
    return 0 if zero else (-1 if neg else 1)


cdef int num_cmp(Num* a, const char* adig, Bound* b) noexcept nogil:
    """Sign of (a - b); `adig` are a's significant digits (skipping '.' in rendered text)."""
    cdef int sa, sb, mag
    cdef Py_ssize_t i, ia = 0
    cdef char ca
    sa = 0 if a.zero else (-1 if a.neg else 1)
    sb = 0 if b.zero else (-1 if b.neg else 1)
    if sa != sb:
        return 1 if sa > sb else -1
    if sa == 0:
        return 0
    if a.point != b.point:
        mag = 1 if a.point > b.point else -1
        return mag * sa
    # compare digit strings; a's digits come from rendered text, may contain '.', '0.' prefix
    i = 0
    mag = 0
    while True:
        # next significant digit of a
        if i >= a.ndigits and i >= b.ndigits:
            break
        if i >= a.ndigits:
            mag = -1
            break
        if i >= b.ndigits:
            mag = 1
            break
        ca = adig[i]
        if ca != b.digits[i]:
            mag = 1 if ca > b.digits[i] else -1
            break
        i += 1
    return mag * sa


cdef inline int days_in_month(int y, int m) noexcept nogil:
    if m == 2:
        if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0:
            return 29
        return 28
    if m == 4 or m == 6 or m == 9 or m == 11:
        return 30
    return 31


cdef inline int d2(const char* s) noexcept nogil:
    return (s[0] - 48) * 10 + (s[1] - 48)


cdef inline bint all_digits(const char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if not is_digit(s[i]):
            return False
    return True


cdef inline bint real_date(const char* y4, const char* m2, const char* d2p) noexcept nogil:
    cdef int y = d2(y4) * 100 + d2(y4 + 2)
    cdef int m = d2(m2), d = d2(d2p)
    if y < 1 or m < 1 or m > 12 or d < 1:
        return False
    return d <= days_in_month(y, m)


cdef int parse_date(const char* s, Py_ssize_t n, char* out) noexcept nogil:
    """values.parse_date on stripped text: 1 and `out` = YYYY-MM-DD, or 0."""
    if n != 10:
        return 0
    if not (all_digits(s, 4) and all_digits(s + 5, 2) and all_digits(s + 8, 2)):
        return 0
    if not ((s[4] == 45 or s[4] == 47) and (s[7] == 45 or s[7] == 47)):
        return 0
    if not real_date(s, s + 5, s + 8):
        return 0
    memcpy(out, s, 10)
    out[4] = 45
    out[7] = 45
    return 1


cdef int parse_datetime(const char* s, Py_ssize_t n, char* out, Py_ssize_t* outlen) noexcept nogil:
    """values.parse_datetime on stripped text."""
    cdef Py_ssize_t i, fs = 0, fl = 0, o
    cdef bint has_ss = False, has_tz = False, utc = True
    cdef const char* ss = b"00"
    cdef char tzsign = 43
    cdef const char* oh = NULL
    cdef const char* om = b"00"
    if n < 16:
        return R_DT
    if not (all_digits(s, 4) and s[4] == 45 and all_digits(s + 5, 2) and s[7] == 45
            and all_digits(s + 8, 2) and (s[10] == 84 or s[10] == 32)
            and all_digits(s + 11, 2) and s[13] == 58 and all_digits(s + 14, 2)):
        return R_DT
    i = 16
    if i < n and s[i] == 58:
        if i + 3 > n or not all_digits(s + i + 1, 2):
            return R_DT
        has_ss = True
        ss = s + i + 1
        i += 3
        if i < n and s[i] == 46:
            fs = i + 1
            while fs + fl < n and is_digit(s[fs + fl]) and fl < 9:
                fl += 1
            if fl == 0:
                return R_DT
            i = fs + fl
    if i < n:
        if s[i] == 90 or s[i] == 122:
            i += 1
        elif s[i] == 43 or s[i] == 45:
            if i + 3 > n or not all_digits(s + i + 1, 2):
                return R_DT
            tzsign = s[i]
            oh = s + i + 1
            utc = False
            i += 3
            if i < n:
                if s[i] == 58:
                    i += 1
                if i + 2 > n or not all_digits(s + i, 2):
                    return R_DT
                om = s + i
                i += 2
        else:
            return R_DT
    if i != n:
        return R_DT
    if not real_date(s, s + 5, s + 8):
        return R_DT_CAL
    if d2(s + 11) > 23 or d2(s + 14) > 59 or d2(ss) > 59:
        return R_DT_TIME
    if not utc and (d2(oh) > 23 or d2(om) > 59):
        return R_DT_OFF
    memcpy(out, s, 10)
    out[10] = 84
    memcpy(out + 11, s + 11, 5)
    out[16] = 58
    out[17] = ss[0]
    out[18] = ss[1]
    o = 19
    if fl:
        out[o] = 46
        memcpy(out + o + 1, s + fs, fl)
        o += 1 + fl
    if utc:
        memcpy(out + o, b"+00:00", 6)
    else:
        out[o] = tzsign
        out[o + 1] = oh[0]
        out[o + 2] = oh[1]
        out[o + 3] = 58
        out[o + 4] = om[0]
        out[o + 5] = om[1]
    outlen[0] = o + 6
    return OK


cdef inline int lower_ascii(uchar c) noexcept nogil:
    if c >= 65 and c <= 90:
        return c + 32
    return c


cdef int parse_boolean(const char* s, Py_ssize_t n) noexcept nogil:
    """1 true, 0 false, -1 not a boolean (stripped text)."""
    cdef char w[6]
    cdef Py_ssize_t i
    if n == 0 or n > 5:
        return -1
    for i in range(n):
        w[i] = <char> lower_ascii(<uchar> s[i])
    w[n] = 0
    if n == 1:
        if w[0] == 116 or w[0] == 121 or w[0] == 49:   # t y 1
            return 1
        if w[0] == 102 or w[0] == 110 or w[0] == 48:   # f n 0
            return 0
        return -1
    if n == 2:
        return 0 if memcmp(w, b"no", 2) == 0 else -1
    if n == 3:
        return 1 if memcmp(w, b"yes", 3) == 0 else -1
    if n == 4:
        return 1 if memcmp(w, b"true", 4) == 0 else -1
    return 0 if memcmp(w, b"false", 5) == 0 else -1


cdef inline Py_ssize_t code_points(const char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, c = 0
    for i in range(n):
        if (<uchar> s[i] & 0xC0) != 0x80:
            c += 1
    return c


# ---------------------------------------------------------------------------
# The compiled plan
# ---------------------------------------------------------------------------

cdef struct Col:
    int slot
    int kind
    int required
    int mbc                  # numbers must be ones a JavaScript number holds exactly
    int has_attr
    Py_ssize_t attr_off      # '"name":' (JSON, with quotes and colon) in the blob
    Py_ssize_t attr_len
    Py_ssize_t attr_size     # UTF-8 length of the attribute name
    long long min_len
    long long max_len
    int enum_start
    int enum_count
    int regex_slot
    int json_slot
    int has_min
    int has_max
    Bound lo
    Bound hi
    int has_min_date
    int has_max_date
    char min_date[10]
    char max_date[10]


cdef struct Part:
    int slot                 # -1: literal
    int col                  # >= 0: the normalised value of typed column `col` (a key
                             # renders what is stored: a date as the ISO date)
    Py_ssize_t off
    Py_ssize_t len


cdef struct ColVal:
    int present
    int vkind                # 0 S raw, 1 S scratch, 2 N scratch, 3 BOOL, 4 JSON
    const char* p
    Py_ssize_t n
    Py_ssize_t size
    char scratch[NUMBUF]
    const char* kp           # the text a key template renders (typed columns): kn bytes
    Py_ssize_t kn


cdef struct ItemAt:
    long long line
    Py_ssize_t wire_off
    Py_ssize_t wire_len
    Py_ssize_t pk_off
    Py_ssize_t pk_len
    Py_ssize_t sk_off
    Py_ssize_t sk_len
    uint64_t key_hash


cdef inline uint64_t _hash_bytes(uint64_t h, const char* p, Py_ssize_t n) noexcept nogil:
    # eight bytes a step (a byte a step was a chain of multiplies as long as the key)
    cdef uint64_t w
    while n >= 8:
        memcpy(&w, p, 8)
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL
        h ^= h >> 29
        p += 8
        n -= 8
    w = 0
    if n > 0:
        memcpy(&w, p, n)
    h = (h ^ w ^ (<uint64_t> n << 56)) * 0x9e3779b97f4a7c15ULL
    return h ^ (h >> 29)


cdef inline uint64_t key_hash(const char* pk, Py_ssize_t pk_len, const char* sk,
                              Py_ssize_t sk_len) noexcept nogil:
    """A hash of pk then sk, each with its length: equal keys, equal hashes."""
    cdef uint64_t h = _hash_bytes(0xcbf29ce484222325ULL ^ <uint64_t> pk_len, pk, pk_len)
    return _hash_bytes(h ^ <uint64_t> sk_len, sk, sk_len)


cdef inline bint same_key(const ItemAt* a, const ItemAt* b, const char* d) noexcept nogil:
    return (a.key_hash == b.key_hash and a.pk_len == b.pk_len and a.sk_len == b.sk_len
            and memcmp(d + a.pk_off, d + b.pk_off, a.pk_len) == 0
            and memcmp(d + a.sk_off, d + b.sk_off, a.sk_len) == 0)


cdef struct RowOut:
    int code
    int col
    long long param
    ItemAt item              # code ITEM: where it lies in the wire buffer (line: unset)


cdef struct Core:
    int ncols
    int nslots
    int nregex
    int njson
    Col* cols
    Part* parts
    int tpl_start[4]
    int tpl_count[4]
    const char* blob
    const char** enum_ptr
    Py_ssize_t* enum_len
    # run context pieces
    const char* head         # '{"pk":{"S":"'
    const char* tail1        # '}},"source":{"S":"…"},"requestId":{"S":"<run_id>#'
    Py_ssize_t tail1_len
    const char* tail2        # '"},"createdAt":…}'
    Py_ssize_t tail2_len
    Py_ssize_t base_size     # item_size of everything constant


@cython.final
cdef class TransformPlan:
    """A Spec compiled against one header: C arrays the nogil core executes."""

    cdef Core core
    cdef object _keep
    cdef public object spec
    cdef public tuple header
    cdef public list slot_index      # slot -> header index
    cdef public list regex_cols      # (slot, header index, regex) per regex slot
    cdef public list json_cols       # header index per json slot
    cdef public list reasons         # per column: dict code -> reason text
    cdef public list col_names
    cdef public list col_index       # header index per column
    cdef public list tpl_reject      # per template: (column name, header index or -1)
    cdef public object ctx_key
    cdef bytes _ctx_tail1
    cdef bytes _ctx_tail2

    def __cinit__(self):
        memset(&self.core, 0, sizeof(Core))

    def __dealloc__(self):
        free(self.core.cols)
        free(self.core.parts)
        free(self.core.enum_ptr)
        free(self.core.enum_len)

    def __init__(self, spec, tuple header, dict index, list col_specs, list templates,
                 bytes blob, list enums):
        """Built by importer.native_engine.compile_plan (plain Python data in)."""
        cdef int i, j, nparts = 0
        cdef Py_ssize_t boff
        cdef Col* c
        self.spec = spec
        self.header = header
        self._keep = [blob, enums]
        self.core.blob = PyBytes_AS_STRING(blob)
        self.core.ncols = len(col_specs)
        self.core.cols = <Col*> calloc(max(1, len(col_specs)), sizeof(Col))
        self.core.enum_ptr = <const char**> calloc(max(1, len(enums)), sizeof(char*))
        self.core.enum_len = <Py_ssize_t*> calloc(max(1, len(enums)), sizeof(Py_ssize_t))
        for t in templates:
            nparts += len(t)
        self.core.parts = <Part*> calloc(max(1, nparts), sizeof(Part))
        if (self.core.cols == NULL or self.core.enum_ptr == NULL or self.core.enum_len == NULL
                or self.core.parts == NULL):
            raise MemoryError()
        for i, e in enumerate(enums):
            self.core.enum_ptr[i] = PyBytes_AS_STRING(e)
            self.core.enum_len[i] = PyBytes_GET_SIZE(e)
        self.slot_index = []
        self.regex_cols = []
        self.json_cols = []
        self.reasons = []
        self.col_names = []
        self.col_index = []
        slots = {}

        def slot_of(hidx):
            if hidx not in slots:
                slots[hidx] = len(self.slot_index)
                self.slot_index.append(hidx)
            return slots[hidx]

        for i, d in enumerate(col_specs):
            c = &self.core.cols[i]
            c.slot = slot_of(d["index"])
            c.kind = d["kind"]
            c.required = d["required"]
            c.mbc = d["mbc"]
            c.has_attr = d["attr_off"] >= 0
            c.attr_off = d["attr_off"]
            c.attr_len = d["attr_len"]
            c.attr_size = d["attr_size"]
            c.min_len = d["min_len"]
            c.max_len = d["max_len"]
            c.enum_start = d["enum_start"]
            c.enum_count = d["enum_count"]
            c.regex_slot = -1
            c.json_slot = -1
            if d["regex"] is not None:
                c.regex_slot = len(self.regex_cols)
                self.regex_cols.append((d["index"], d["regex"]))
            if c.kind == K_JSON:
                c.json_slot = len(self.json_cols)
                self.json_cols.append(d["index"])
            for which, key in ((0, "lo"), (1, "hi")):
                b = d[key]
                if b is None:
                    continue
                zero, neg, point, doff, dlen = b
                boff = doff
                if which == 0:
                    c.has_min = 1
                    c.lo.zero = zero; c.lo.neg = neg; c.lo.point = point
                    c.lo.digits = self.core.blob + boff; c.lo.ndigits = dlen
                else:
                    c.has_max = 1
                    c.hi.zero = zero; c.hi.neg = neg; c.hi.point = point
                    c.hi.digits = self.core.blob + boff; c.hi.ndigits = dlen
            if d["min_date"] is not None:
                c.has_min_date = 1
                memcpy(c.min_date, <const char*> d["min_date"], 10)
            if d["max_date"] is not None:
                c.has_max_date = 1
                memcpy(c.max_date, <const char*> d["max_date"], 10)
            self.reasons.append(d["reasons"])
            self.col_names.append(d["name"])
            self.col_index.append(d["index"])
        j = 0
        for i, t in enumerate(templates):
            self.core.tpl_start[i] = j
            self.core.tpl_count[i] = len(t)
            for kind, a, b in t:
                self.core.parts[j].col = -1
                if kind == "col":
                    self.core.parts[j].slot = slot_of(a)
                elif kind == "val":
                    self.core.parts[j].slot = -1
                    self.core.parts[j].col = a
                else:
                    self.core.parts[j].slot = -1
                    self.core.parts[j].off = a
                    self.core.parts[j].len = b
                j += 1
        self.core.nslots = len(self.slot_index)
        self.core.nregex = len(self.regex_cols)
        self.core.njson = len(self.json_cols)
        self.ctx_key = None

    def set_context(self, key, bytes tail1, bytes tail2, Py_ssize_t base_size):
        """Install the run-wide constant parts of every item (cached per RunContext)."""
        self._ctx_tail1 = tail1
        self._ctx_tail2 = tail2
        self.core.tail1 = PyBytes_AS_STRING(tail1)
        self.core.tail1_len = PyBytes_GET_SIZE(tail1)
        self.core.tail2 = PyBytes_AS_STRING(tail2)
        self.core.tail2_len = PyBytes_GET_SIZE(tail2)
        self.core.base_size = base_size
        self.ctx_key = key


# ---------------------------------------------------------------------------
# The per-row core (nogil)
# ---------------------------------------------------------------------------

cdef struct Batch:
    Py_ssize_t nrows
    const char** ptrs        # nrows * nslots
    Py_ssize_t* lens
    long long* lines
    char* fallback           # per row: 1 = do it in Python
    char* regex_ok           # nrows * nregex
    char* json_status        # nrows * njson: 1 ok, 2 reason, 3 raise
    const char** json_ptr
    Py_ssize_t* json_len
    Py_ssize_t* json_size
    RowOut* out
    ColVal* vals             # ncols scratch
    Buf wire
    Buf tpl


cdef inline int fmt_ll(long long v, char* out) noexcept nogil:
    cdef char tmp[24]
    cdef int n = 0, o = 0
    cdef unsigned long long u
    if v < 0:
        out[o] = 45
        o += 1
        u = <unsigned long long> (-(v + 1)) + 1
    else:
        u = <unsigned long long> v
    if u == 0:
        tmp[n] = 48
        n += 1
    while u > 0:
        tmp[n] = <char> (48 + u % 10)
        u //= 10
        n += 1
    while n > 0:
        n -= 1
        out[o] = tmp[n]
        o += 1
    return o


cdef inline bint has_byte(const char* p, Py_ssize_t n, char ch) noexcept nogil:
    """`ch in p[:n]`, eight bytes at a time."""
    cdef Py_ssize_t i = 0
    cdef uint64_t w, ch8 = 0x0101010101010101ULL * <uchar> ch
    while i + 8 <= n:
        memcpy(&w, p + i, 8)
        if _zero_byte(w ^ ch8):
            return True
        i += 8
    while i < n:
        if p[i] == ch:
            return True
        i += 1
    return False


cdef int check_column(Core* core, Col* c, Batch* bt, Py_ssize_t r, ColVal* v,
                      long long* param) noexcept nogil:
    cdef const char* raw = bt.ptrs[r * core.nslots + c.slot]
    cdef Py_ssize_t n = bt.lens[r * core.nslots + c.slot]
    cdef const char* t = raw
    cdef Py_ssize_t tn = n, cp, outlen = 0
    cdef int i, rc, b
    cdef bint found
    cdef Num num
    cdef char st
    cdef bint gathered
    v.present = 0
    v.kp = raw
    v.kn = 0
    if c.kind != K_STRING:
        strip_ws(&t, &tn)
    if tn == 0:
        if c.required:
            return R_REQUIRED
        return OK
    if c.kind == K_STRING:
        # n bytes of UTF-8 hold n/4 to n code points: counted only when that range
        # reaches past a limit (a string shorter in bytes than max_length passes)
        if ((c.max_len >= 0 and n > c.max_len)
                or (c.min_len >= 0 and n < 4 * c.min_len)):
            cp = code_points(raw, n)
            if c.min_len >= 0 and cp < c.min_len:
                return R_SHORT
            if c.max_len >= 0 and cp > c.max_len:
                return R_LONG
        if c.enum_count >= 0:
            found = False
            for i in range(c.enum_start, c.enum_start + c.enum_count):
                if core.enum_len[i] == n and memcmp(core.enum_ptr[i], raw, n) == 0:
                    found = True
                    break
            if not found:
                return R_ENUM
        if c.regex_slot >= 0 and not bt.regex_ok[r * core.nregex + c.regex_slot]:
            return R_PATTERN
        v.vkind = 0
        v.p = raw
        v.n = n
        v.size = n
    elif c.kind == K_INTEGER or c.kind == K_DECIMAL:
        rc = parse_number(t, tn, c.kind == K_DECIMAL, &num, v.scratch, &outlen, param)
        if rc != OK:
            return rc
        if c.mbc and not _mbc_number_ok(&num, v.scratch, outlen):
            return R_MBC_NUM
        if c.enum_count >= 0:
            found = False
            for i in range(c.enum_start, c.enum_start + c.enum_count):
                if core.enum_len[i] == outlen and memcmp(core.enum_ptr[i], v.scratch, outlen) == 0:
                    found = True
                    break
            if not found:
                return R_ENUM
        if c.has_min or c.has_max:
            # significant digits of the rendered number, without '-', '0.', zeros, '.';
            # gathered only when the signs alone do not decide (a bound of 0 and most
            # values do not need them)
            gathered = False
            if c.has_min and _sign(num.zero, num.neg) <= _sign(c.lo.zero, c.lo.neg):
                _sig_digits(v.scratch, outlen, &num)
                gathered = True
                if num_cmp(&num, num.digits, &c.lo) < 0:
                    return R_LESS
            if c.has_max and _sign(num.zero, num.neg) >= _sign(c.hi.zero, c.hi.neg):
                if not gathered:
                    _sig_digits(v.scratch, outlen, &num)
                if num_cmp(&num, num.digits, &c.hi) > 0:
                    return R_GREATER
        v.vkind = 2
        v.p = v.scratch
        v.n = outlen
        v.size = (num.ndigits + 1) // 2 + 1
    elif c.kind == K_BOOLEAN:
        b = parse_boolean(t, tn)
        if b < 0:
            return R_BOOL
        v.vkind = 3
        v.n = b
        v.size = 1
    elif c.kind == K_DATE:
        if not parse_date(t, tn, v.scratch):
            return R_DATE
        if c.has_min_date and memcmp(v.scratch, c.min_date, 10) < 0:
            return R_BEFORE
        if c.has_max_date and memcmp(v.scratch, c.max_date, 10) > 0:
            return R_AFTER
        v.vkind = 1
        v.p = v.scratch
        v.n = 10
        v.size = 10
    elif c.kind == K_DATETIME:
        rc = parse_datetime(t, tn, v.scratch, &outlen)
        if rc != OK:
            return rc
        v.vkind = 1
        v.p = v.scratch
        v.n = outlen
        v.size = outlen
    else:
        st = bt.json_status[r * core.njson + c.json_slot]
        if st == 2:
            return R_JSON
        if st == 3:
            return R_RAISE
        v.vkind = 4
        v.p = bt.json_ptr[r * core.njson + c.json_slot]
        v.n = bt.json_len[r * core.njson + c.json_slot]
        v.size = bt.json_size[r * core.njson + c.json_slot]
    if c.kind == K_BOOLEAN:
        if v.n:
            v.kp = "true"
            v.kn = 4
        else:
            v.kp = "false"
            v.kn = 5
    elif c.kind != K_STRING and c.kind != K_JSON:
        v.kp = v.p
        v.kn = v.n
    v.present = c.has_attr
    return OK


cdef void _sig_digits(char* text, Py_ssize_t n, Num* num) noexcept nogil:
    """Point num.digits at a contiguous copy of the significant digits of `text`."""
    cdef Py_ssize_t i, k = 0
    cdef char* dst
    if num.zero:
        num.ndigits = 0
        return
    # write the digits after the rendered text, inside the scratch buffer
    dst = text + n
    for i in range(n):
        if text[i] >= 48 and text[i] <= 57:
            if k == 0 and text[i] == 48:
                continue
            dst[k] = text[i]
            k += 1
    # trailing zeros of an integer rendering ("1200") are not significant
    while k > 0 and dst[k - 1] == 48:
        k -= 1
    num.digits = dst
    num.ndigits = k


cdef int render(Core* core, Batch* bt, Py_ssize_t r, int t, const char** at,
                Py_ssize_t* off, Py_ssize_t* ln) noexcept nogil:
    """Template `t` for row r: a template of one part (a column or a constant: the
    usual case) is pointed at where that part lies (`at`, and `off` -1); one of
    several parts is joined in `bt.tpl` at `off` (`at` is set once every template
    is rendered, since `bt.tpl` may move while they are)."""
    cdef int j
    cdef Part* p
    cdef Py_ssize_t start = bt.tpl.len
    if core.tpl_count[t] == 1:
        p = &core.parts[core.tpl_start[t]]
        off[0] = -1
        if p.col >= 0:
            at[0] = bt.vals[p.col].kp
            ln[0] = bt.vals[p.col].kn
        elif p.slot < 0:
            at[0] = core.blob + p.off
            ln[0] = p.len
        else:
            at[0] = bt.ptrs[r * core.nslots + p.slot]
            ln[0] = bt.lens[r * core.nslots + p.slot]
        return 0
    for j in range(core.tpl_start[t], core.tpl_start[t] + core.tpl_count[t]):
        p = &core.parts[j]
        if p.col >= 0:
            if w_raw(&bt.tpl, bt.vals[p.col].kp, bt.vals[p.col].kn) < 0:
                return -1
        elif p.slot < 0:
            if w_raw(&bt.tpl, core.blob + p.off, p.len) < 0:
                return -1
        else:
            if w_raw(&bt.tpl, bt.ptrs[r * core.nslots + p.slot],
                     bt.lens[r * core.nslots + p.slot]) < 0:
                return -1
    off[0] = start
    ln[0] = bt.tpl.len - start
    return 0


cdef int transform_row(Core* core, Batch* bt, Py_ssize_t r) noexcept nogil:
    cdef RowOut* out = &bt.out[r]
    cdef int i, rc, t
    cdef long long param = 0
    cdef Py_ssize_t toff[4]
    cdef Py_ssize_t tlen[4]
    cdef const char* tps[4]   # type, tenant, code, name: the rendered templates
    cdef Py_ssize_t size, attrs, pk_len, sk_len, start, n
    cdef Py_ssize_t pk_at, pk_end, sk_at, sk_end
    cdef ItemAt* it
    cdef bint clean
    cdef char linebuf[24]
    cdef int linelen
    cdef Col* c
    cdef ColVal* v
    cdef Buf* w = &bt.wire
    out.code = OK
    out.col = 0
    out.param = 0
    for i in range(core.ncols):
        rc = check_column(core, &core.cols[i], bt, r, &bt.vals[i], &param)
        if rc != OK:
            out.code = rc
            out.col = i
            out.param = param
            return 0
    bt.tpl.len = 0
    for t in range(4):
        if render(core, bt, r, t, &tps[t], &toff[t], &tlen[t]) < 0:
            out.code = R_NOMEM
            return -1
    for t in range(4):
        if toff[t] >= 0:
            tps[t] = bt.tpl.data + toff[t]
    # type: not empty, no '#', no '@'; tenantCode: no '#'; code: no '@'
    for t in range(3):
        if tlen[t] == 0:
            out.code = R_KEY_EMPTY
            out.col = t
            return 0
        if t <= 1 and has_byte(tps[t], tlen[t], 35):
            out.code = R_KEY_SEP
            out.col = t
            out.param = 35
            return 0
        if t != 1 and has_byte(tps[t], tlen[t], 64):
            out.code = R_KEY_SEP
            out.col = t
            out.param = 64
            return 0
    pk_len = tlen[0] + 1 + tlen[1]
    sk_len = tlen[0] + 1 + tlen[2] + 2
    if pk_len > MAX_PK_BYTES:
        out.code = R_PK_LONG
        out.col = 1
        return 0
    if sk_len > MAX_SK_BYTES:
        out.code = R_SK_LONG
        out.col = 2
        return 0
    linelen = fmt_ll(bt.lines[r], linebuf)
    attrs = 3
    for i in range(core.ncols):
        v = &bt.vals[i]
        if v.present:
            attrs += 1 + core.cols[i].attr_size + v.size
    size = (core.base_size + pk_len + sk_len + (pk_len + 1 + tlen[0] + 1 + tlen[2])
            + tlen[2] + tlen[3] + tlen[0] + tlen[1] + linelen + attrs)
    if size > MAX_ITEM_BYTES:
        out.code = R_ITEM_SIZE
        out.param = size
        return 0
    # ---- wire JSON
    start = w.len
    # room for the whole item at once, so that nothing below checks for room (and the
    # id can copy pk and sk from this buffer, which must not move under it): the head
    # writes type 5 times, tenant and code 3, name once, each escaped at worst 6x; an
    # attribute is its name, a separator, at most 8 bytes of type tags and its value
    # escaped; then the tail and the line number; and the unescaped pk and sk after it
    n = 6 * (5 * tlen[0] + 3 * tlen[1] + 3 * tlen[2] + tlen[3]) + 256
    for i in range(core.ncols):
        v = &bt.vals[i]
        if v.present:
            n += core.cols[i].attr_len + 16 + 6 * v.n
    n += core.tail1_len + core.tail2_len + 24 + pk_len + sk_len
    if buf_reserve(w, n) < 0:
        out.code = R_NOMEM
        return -1
    # keys with nothing to escape (nearly all) are copied rather than escaped; the id
    # repeats pk and sk as already written (escaped or not), and when they are clean the
    # item's pk and sk are read from the wire
    clean = not (_needs_escape(tps[0], tlen[0]) or _needs_escape(tps[1], tlen[1])
                 or _needs_escape(tps[2], tlen[2]))
    p_lit(w, b'{"pk":{"S":"')
    pk_at = w.len
    p_key(w, tps[0], tlen[0], clean); p_raw(w, b"#", 1)
    p_key(w, tps[1], tlen[1], clean)
    pk_end = w.len
    p_lit(w, b'"},"sk":{"S":"')
    sk_at = w.len
    p_key(w, tps[0], tlen[0], clean); p_raw(w, b"#", 1)
    p_key(w, tps[2], tlen[2], clean)
    sk_end = w.len
    p_lit(w, b'@1"},"id":{"S":"')
    p_raw(w, w.data + pk_at, pk_end - pk_at); p_raw(w, b"#", 1)
    p_raw(w, w.data + sk_at, sk_end - sk_at)
    p_lit(w, b'"},"code":{"S":"')
    p_key(w, tps[2], tlen[2], clean)
    p_lit(w, b'"},"name":{"S":"')
    p_esc(w, tps[3], tlen[3])
    p_lit(w, b'"},"type":{"S":"')
    p_key(w, tps[0], tlen[0], clean)
    p_lit(w, b'"},"tenantCode":{"S":"')
    p_key(w, tps[1], tlen[1], clean)
    p_lit(w, b'"},"version":{"N":"1"},"attributes":{"M":{')
    rc = 0
    for i in range(core.ncols):
        v = &bt.vals[i]
        if not v.present:
            continue
        c = &core.cols[i]
        if rc:
            p_raw(w, b",", 1)
        rc = 1
        p_raw(w, core.blob + c.attr_off, c.attr_len)
        if v.vkind == 0 or v.vkind == 1:
            p_lit(w, b'{"S":"')
            p_esc(w, v.p, v.n)
            p_lit(w, b'"}')
        elif v.vkind == 2:
            p_lit(w, b'{"N":"')
            p_raw(w, v.p, v.n)
            p_lit(w, b'"}')
        elif v.vkind == 3:
            if v.n:
                p_lit(w, b'{"BOOL":true}')
            else:
                p_lit(w, b'{"BOOL":false}')
        else:
            p_raw(w, v.p, v.n)
    p_raw(w, core.tail1, core.tail1_len)
    p_raw(w, linebuf, linelen)
    p_raw(w, core.tail2, core.tail2_len)
    it = &out.item
    it.wire_off = start
    it.wire_len = w.len - start
    it.pk_len = pk_len
    it.sk_len = sk_len
    if clean:  # unescaped pk and sk for the PreparedItem: in the wire as they are
        it.pk_off = pk_at
        it.sk_off = sk_at
    else:  # unescaped copies after the item (room reserved above)
        it.pk_off = w.len
        p_raw(w, tps[0], tlen[0]); p_raw(w, b"#", 1); p_raw(w, tps[1], tlen[1])
        it.sk_off = w.len
        p_raw(w, tps[0], tlen[0]); p_raw(w, b"#", 1); p_raw(w, tps[2], tlen[2])
        p_raw(w, b"@1", 2)
    it.key_hash = key_hash(w.data + it.pk_off, pk_len, w.data + it.sk_off, sk_len)
    out.code = ITEM
    return 0


cdef int transform_all(Core* core, Batch* bt) noexcept nogil:
    cdef Py_ssize_t r
    for r in range(bt.nrows):
        if bt.fallback[r]:
            bt.out[r].code = R_FALLBACK
            continue
        if transform_row(core, bt, r) < 0:
            return -1
    return 0


# ---------------------------------------------------------------------------
# The wrapper: gather under the GIL, run the core nogil, build records
# ---------------------------------------------------------------------------

cdef object _new_slotted(type cls, tuple names, tuple values):
    cdef object obj = cls.__new__(cls)
    cdef Py_ssize_t i
    for i in range(len(names)):
        PyObject_GenericSetAttr(obj, names[i], values[i])
    return obj


cdef tuple _ITEM_FIELDS = ("line", "pk", "sk", "wire")
from importer.records import RejectKind

cdef tuple _REJECT_FIELDS = ("line", "column", "value", "reason", "row", "kind")
cdef object _INVALID = RejectKind.INVALID
cdef tuple _ROW_FIELDS = ("line", "fields", "error")


cdef inline object _field(object fields, Py_ssize_t i):
    if PyList_CheckExact(fields):
        return <object> PyList_GET_ITEM(fields, i)
    return <object> PyTuple_GET_ITEM(fields, i)


cdef void _free_batch(Batch* bt) noexcept:
    free(bt.ptrs); free(bt.lens); free(bt.lines); free(bt.fallback)
    free(bt.regex_ok); free(bt.json_status); free(bt.json_ptr); free(bt.json_len)
    free(bt.json_size); free(bt.out); free(bt.vals); free(bt.wire.data); free(bt.tpl.data)


# ---------------------------------------------------------------------------
# RowBlock: one batch's rows, field bytes in one buffer
# ---------------------------------------------------------------------------

@cython.final
cdef class RowBlock:
    """One batch's rows as the reader parsed them: every field's UTF-8 bytes in one buffer.

    Why: the native transform reads the bytes in place, so a batch on its way
    from the reader to the transform holds no Python object per row or field
    (ten `str`s, a list and two tuples per row were most of the reader's cost).
    It is still a sequence of `(line, fields)`, built on access, for every
    other consumer -- rejects, the reference engine, the plan -- so they see
    exactly the rows the reader would have listed.  Immutable once the reader
    hands it out, so worker threads read it without a lock.
    """

    cdef Buf data
    # row r, field k: data[offs[r * (width + 1) + k] : offs[r * (width + 1) + k + 1]]
    cdef Py_ssize_t* offs
    cdef long long* lines
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef readonly Py_ssize_t width
    # rows whose fields came from Python (a record the reader re-read): index -> fields
    cdef dict py_rows

    def __cinit__(self, Py_ssize_t width):
        memset(&self.data, 0, sizeof(Buf))
        self.offs = NULL
        self.lines = NULL
        self.n = 0
        self.cap = 0
        if width < 1:
            raise ValueError("a RowBlock needs at least one column")
        self.width = width
        self.py_rows = None

    def __dealloc__(self):
        free(self.data.data)
        free(self.offs)
        free(self.lines)

    cdef int reserve(self, Py_ssize_t rows, Py_ssize_t nbytes) noexcept nogil:
        """Room for `rows` rows and `nbytes` field bytes, allocated once.

        Why: a block that grows by doubling leaves a trail of freed buffers of
        every size behind each batch, and the C heap of a long run grows with
        them; the reader sizes each block from the one before instead.
        """
        cdef Py_ssize_t* o
        cdef long long* ln
        if rows > self.cap:
            o = <Py_ssize_t*> realloc(self.offs, rows * (self.width + 1) * sizeof(Py_ssize_t))
            if o == NULL:
                return -1
            self.offs = o
            ln = <long long*> realloc(self.lines, rows * sizeof(long long))
            if ln == NULL:
                return -1
            self.lines = ln
            self.cap = rows
        return buf_reserve(&self.data, nbytes)

    cdef int _grow(self) noexcept nogil:
        return self.reserve(self.cap * 2 if self.cap else 64, 0)

    cdef int append_parsed(self, long long line, const char* fb, const Py_ssize_t* fends,
                           Py_ssize_t nf) noexcept nogil:
        """Append a parsed record (fields ending at `fends` in `fb`), cut or padded to width."""
        cdef Py_ssize_t w = self.width, k, take = nf if nf < w else w
        cdef Py_ssize_t used = fends[take - 1] if take > 0 else 0, base = self.data.len
        cdef Py_ssize_t* o
        if self.n >= self.cap and self._grow() < 0:
            return -1
        if w_raw(&self.data, fb, used) < 0:
            return -1
        o = self.offs + self.n * (w + 1)
        o[0] = base
        for k in range(take):
            o[k + 1] = base + fends[k]
        for k in range(take, w):
            o[k + 1] = base + used
        self.lines[self.n] = line
        self.n += 1
        return 0

    cdef int append_fields(self, long long line, list fields) except -1:
        """Append a row the reader built in Python: kept as those very objects."""
        cdef Py_ssize_t w = self.width, k
        cdef Py_ssize_t* o
        if self.n >= self.cap and self._grow() < 0:
            raise MemoryError()
        o = self.offs + self.n * (w + 1)
        for k in range(w + 1):
            o[k] = self.data.len
        if self.py_rows is None:
            self.py_rows = {}
        self.py_rows[self.n] = fields
        self.lines[self.n] = line
        self.n += 1
        return 0

    def append(self, long long line, fields) -> None:
        """Add a row built in Python (tests, and any caller with rows in hand).

        Lines must rise, as the reader's do (`index_of` searches them).  A row
        of `width` strings that UTF-8 can encode is stored as bytes, like the
        reader's; any other row (a lone surrogate, another width) is kept as
        the given objects, for the transform's general path to judge.
        """
        cdef Py_ssize_t k, n, w = self.width
        cdef const char* p
        cdef Py_ssize_t* o
        if self.n and line <= self.lines[self.n - 1]:
            raise ValueError(f"line {line} does not follow line {self.lines[self.n - 1]}")
        if not (PyList_CheckExact(fields) or PyTuple_CheckExact(fields)) or len(fields) != w:
            self.append_fields(line, list(fields))
            return
        for k in range(w):
            if not PyUnicode_CheckExact(fields[k]):
                self.append_fields(line, list(fields))
                return
            if _utf8_nocheck(fields[k], &n) == NULL:
                PyErr_Clear()
                self.append_fields(line, list(fields))
                return
        if self.n >= self.cap and self._grow() < 0:
            raise MemoryError()
        o = self.offs + self.n * (w + 1)
        o[0] = self.data.len
        for k in range(w):
            p = _utf8_nocheck(fields[k], &n)
            if w_raw(&self.data, p, n) < 0:
                raise MemoryError()
            o[k + 1] = self.data.len
        self.lines[self.n] = line
        self.n += 1

    cdef inline bint in_buffer(self, Py_ssize_t r) except -1:
        """True when row r's fields are bytes in the buffer (not a Python-built row)."""
        return self.py_rows is None or r not in self.py_rows

    cdef inline const char* field_ptr(self, Py_ssize_t r, Py_ssize_t k,
                                      Py_ssize_t* length) noexcept nogil:
        cdef Py_ssize_t* o = self.offs + r * (self.width + 1) + k
        length[0] = o[1] - o[0]
        return self.data.data + o[0]

    cdef object field_str(self, Py_ssize_t r, Py_ssize_t k):
        cdef Py_ssize_t n
        cdef const char* p
        if not self.in_buffer(r):
            return self.py_rows[r][k]
        p = self.field_ptr(r, k, &n)
        return PyUnicode_DecodeUTF8(p, n, NULL)

    cdef list fields_list(self, Py_ssize_t r):
        cdef Py_ssize_t k, n, w = self.width
        cdef const char* p
        cdef list out
        if not self.in_buffer(r):
            return list(self.py_rows[r])  # the caller's own list, as the reader's rows are
        out = PyList_New(w)
        for k in range(w):
            p = self.field_ptr(r, k, &n)
            s = PyUnicode_DecodeUTF8(p, n, NULL)
            Py_INCREF(s)
            PyList_SET_ITEM(out, k, s)
        return out

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        cdef Py_ssize_t r
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.n))]
        r = index
        if r < 0:
            r += self.n
        if r < 0 or r >= self.n:
            raise IndexError("RowBlock index out of range")
        return (self.lines[r], self.fields_list(r))

    def __iter__(self):
        cdef Py_ssize_t r
        for r in range(self.n):
            yield (self.lines[r], self.fields_list(r))

    def line_at(self, Py_ssize_t r) -> int:
        if r < 0 or r >= self.n:
            raise IndexError("RowBlock index out of range")
        return self.lines[r]

    def index_of(self, long long line) -> int:
        """The row that starts at `line`, or -1 (lines rise strictly: a binary search)."""
        cdef Py_ssize_t lo = 0, hi = self.n, mid
        while lo < hi:
            mid = (lo + hi) // 2
            if self.lines[mid] < line:
                lo = mid + 1
            else:
                hi = mid
        if lo < self.n and self.lines[lo] == line:
            return lo
        return -1

    def __eq__(self, other):
        if isinstance(other, (RowBlock, list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None

    def __repr__(self):
        return f"RowBlock({list(self)!r})"

    def __reduce__(self):
        return (_rows_as_list, (list(self),))


def _rows_as_list(rows):
    """Unpickles a RowBlock as the plain list of rows it stands for."""
    return rows


cdef int _json_column(str text, Py_ssize_t r, Py_ssize_t j, Core* core, Batch* bt,
                      object json_value, list keep, dict json_reason) except -2:
    """Parse row r's JSON column j in Python (the core takes the wire bytes); -1: a
    lone surrogate (the row falls back to the reference)."""
    cdef object value
    f = text.strip(" \t")
    if not f:
        return 0
    try:
        value = json_value(f)
    except UnicodeEncodeError:
        return -1
    except Exception as exc:  # noqa: BLE001 - raised later, in row order
        bt.json_status[r * core.njson + j] = 3
        json_reason[(r, j)] = exc
        return 0
    if isinstance(value, str):
        bt.json_status[r * core.njson + j] = 2
        json_reason[(r, j)] = value
        return 0
    wire, size = value
    keep.append(wire)
    bt.json_status[r * core.njson + j] = 1
    bt.json_ptr[r * core.njson + j] = PyBytes_AS_STRING(wire)
    bt.json_len[r * core.njson + j] = PyBytes_GET_SIZE(wire)
    bt.json_size[r * core.njson + j] = size
    return 0


def transform_rows(TransformPlan plan, rows, item_cls, reject_cls, json_value, fallback_row,
                   key_reject):
    """Run one batch through the plan; returns (items, rejects) in row order.

    `json_value(text)` -> (wire bytes, size), or the reject reason (str); `fallback_row(line, fields)` -> PreparedItem | Reject for rows the
    core cannot take (odd shapes, lone surrogates); `key_reject(code, t, line,
    fields)` -> Reject for rejects whose value is a rendered template.
    """
    cdef Core* core = &plan.core
    cdef Batch bt
    cdef Py_ssize_t nrows, r, s, j, nh = len(plan.header), n
    cdef Py_ssize_t nslots = core.nslots
    cdef object row, line, fields, f
    cdef const char* p
    cdef int overflow, rc
    cdef long long ln
    cdef RowOut* o
    cdef _ItemStore store = _ItemStore()
    cdef ItemAt* a
    cdef dict objects = {}
    cdef list rejects = []
    cdef list keep = []
    cdef dict json_reason = {}
    cdef list slot_index = plan.slot_index
    cdef Py_ssize_t* sidx = NULL
    cdef RowBlock blk = None
    if type(rows) is RowBlock:
        blk = <RowBlock> rows
        if blk.width != nh:  # not this header's rows: the general path decides
            rows = list(blk)
            blk = None
    elif not (PyList_CheckExact(rows) or PyTuple_CheckExact(rows)):
        rows = list(rows)
    nrows = len(rows)
    memset(&bt, 0, sizeof(Batch))
    bt.nrows = nrows
    try:
        bt.ptrs = <const char**> malloc(max(1, nrows * nslots) * sizeof(char*))
        bt.lens = <Py_ssize_t*> malloc(max(1, nrows * nslots) * sizeof(Py_ssize_t))
        bt.lines = <long long*> malloc(max(1, nrows) * sizeof(long long))
        bt.fallback = <char*> calloc(max(1, nrows), 1)
        bt.regex_ok = <char*> calloc(max(1, nrows * core.nregex), 1)
        bt.json_status = <char*> calloc(max(1, nrows * core.njson), 1)
        bt.json_ptr = <const char**> calloc(max(1, nrows * core.njson), sizeof(char*))
        bt.json_len = <Py_ssize_t*> calloc(max(1, nrows * core.njson), sizeof(Py_ssize_t))
        bt.json_size = <Py_ssize_t*> calloc(max(1, nrows * core.njson), sizeof(Py_ssize_t))
        bt.out = <RowOut*> calloc(max(1, nrows), sizeof(RowOut))
        bt.vals = <ColVal*> calloc(max(1, core.ncols), sizeof(ColVal))
        sidx = <Py_ssize_t*> malloc(max(1, nslots) * sizeof(Py_ssize_t))
        if (bt.ptrs == NULL or bt.lens == NULL or bt.lines == NULL or bt.fallback == NULL
                or bt.regex_ok == NULL or bt.json_status == NULL or bt.json_ptr == NULL
                or bt.json_len == NULL or bt.json_size == NULL or bt.out == NULL
                or bt.vals == NULL or sidx == NULL):
            raise MemoryError()
        if buf_reserve(&bt.wire, nrows * 512 + 1024) < 0 or buf_reserve(&bt.tpl, 4096) < 0:
            raise MemoryError()
        for s in range(nslots):
            sidx[s] = slot_index[s]
        # ---- phase 1 (GIL): UTF-8 pointers, regex and JSON columns
        for r in range(nrows):
            if blk is not None and blk.in_buffer(r):
                # the reader's bytes, read in place: no Python object unless a
                # regex or JSON column needs the text
                bt.lines[r] = blk.lines[r]
                for s in range(nslots):
                    bt.ptrs[r * nslots + s] = blk.field_ptr(r, sidx[s], &bt.lens[r * nslots + s])
                if core.nregex == 0 and core.njson == 0:
                    continue  # (a loop over an empty list still costs an iterator a row)
                for j, (hidx, regex) in enumerate(plan.regex_cols):
                    f = blk.field_str(r, hidx)
                    if len(f) and regex.search(f) is not None:
                        bt.regex_ok[r * core.nregex + j] = 1
                for j, hidx in enumerate(plan.json_cols):
                    if _json_column(blk.field_str(r, hidx), r, j, core, &bt, json_value, keep,
                                    json_reason) < 0:
                        bt.fallback[r] = 1
                        break
                continue
            row = rows[r]
            line, fields = row
            if not PyLong_CheckExact(line):
                bt.fallback[r] = 1
                continue
            ln = PyLong_AsLongLongAndOverflow(line, &overflow)
            if overflow:
                bt.fallback[r] = 1
                continue
            bt.lines[r] = ln
            if not (PyList_CheckExact(fields) or PyTuple_CheckExact(fields)) or len(fields) != nh:
                bt.fallback[r] = 1
                continue
            for s in range(nslots):
                f = _field(fields, sidx[s])
                if not PyUnicode_CheckExact(f):
                    bt.fallback[r] = 1
                    break
                p = _utf8_nocheck(f, &n)
                if p == NULL:
                    PyErr_Clear()
                    bt.fallback[r] = 1
                    break
                bt.ptrs[r * nslots + s] = p
                bt.lens[r * nslots + s] = n
            if bt.fallback[r] or (core.nregex == 0 and core.njson == 0):
                continue
            for j, (hidx, regex) in enumerate(plan.regex_cols):
                f = _field(fields, hidx)
                if len(f) and regex.search(f) is not None:
                    bt.regex_ok[r * core.nregex + j] = 1
            for j, hidx in enumerate(plan.json_cols):
                if _json_column(_field(fields, hidx), r, j, core, &bt, json_value, keep,
                                json_reason) < 0:
                    bt.fallback[r] = 1
                    break
        # ---- phase 2 (no GIL): validate, render, serialise
        with nogil:
            rc = transform_all(core, &bt)
        if rc < 0:
            raise MemoryError()
        # ---- phase 3 (GIL): the items stay in the wire buffer (an ItemBlock); rejects
        store.item_cls = item_cls
        store.data = bt.wire  # the block takes the buffer over
        memset(&bt.wire, 0, sizeof(Buf))
        for r in range(nrows):
            o = &bt.out[r]
            if o.code == ITEM:
                a = store.push()
                a[0] = o.item
                a.line = bt.lines[r]
                continue
            line, fields = rows[r]
            if o.code == R_FALLBACK:
                out = fallback_row(line, fields)
                if isinstance(out, reject_cls):
                    rejects.append(out)
                else:
                    store.add_object(out, objects)
                continue
            if o.code < R_KEY_EMPTY:
                j = o.col
                if o.code == R_RAISE:
                    raise json_reason[(r, core.cols[j].json_slot)]
                if o.code == R_JSON:
                    reason = json_reason[(r, core.cols[j].json_slot)]
                elif o.code == R_DIGITS:
                    reason = (f"number has {o.param} significant digits; "
                              "DynamoDB keeps at most 38")
                else:
                    reason = plan.reasons[j][o.code]
                rejects.append(_new_slotted(reject_cls, _REJECT_FIELDS, (
                    line, plan.col_names[j], _field(fields, plan.col_index[j]), reason,
                    tuple(fields), _INVALID,
                )))
            else:
                rejects.append(key_reject(o.code, o.col, o.param, line, fields))
        store.seal(objects)
        return _block_view(store, 0, store.n), rejects
    finally:
        free(sidx)
        _free_batch(&bt)


# ---------------------------------------------------------------------------
# ItemBlock: one batch's items, wire bytes in one buffer
# ---------------------------------------------------------------------------

@cython.final
cdef class _ItemStore:
    """What an ItemBlock and its slices share: the bytes, each item's offsets, and
    the PreparedItems built so far (so that an item is one object, however often
    it is asked for).  Filled by `transform_rows`, then never changed but for
    that cache."""

    cdef Buf data
    cdef ItemAt* at
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef list made
    cdef object item_cls

    def __cinit__(self):
        memset(&self.data, 0, sizeof(Buf))
        self.at = NULL
        self.n = 0
        self.cap = 0
        self.made = None

    def __dealloc__(self):
        free(self.data.data)
        free(self.at)

    cdef ItemAt* push(self) except NULL:
        cdef ItemAt* a
        cdef Py_ssize_t cap
        if self.n >= self.cap:
            cap = self.cap * 2 if self.cap else 64
            a = <ItemAt*> realloc(self.at, cap * sizeof(ItemAt))
            if a == NULL:
                raise MemoryError()
            self.at = a
            self.cap = cap
        a = &self.at[self.n]
        self.n += 1
        return a

    cdef int add_object(self, object item, dict objects) except -1:
        """An item the Python path made: its bytes copied in, the object itself kept.

        pk and sk are stored as `surrogatepass` UTF-8, which maps distinct
        strings to distinct bytes, so keys compare in C as they do in Python.
        """
        cdef bytes wire = item.wire if type(item.wire) is bytes else bytes(item.wire)
        cdef bytes pk = item.pk.encode("utf-8", "surrogatepass")
        cdef bytes sk = item.sk.encode("utf-8", "surrogatepass")
        cdef ItemAt* a
        cdef Buf* d = &self.data
        objects[self.n] = item
        a = self.push()
        a.line = 0  # never read: the object answers for itself
        a.pk_off = d.len
        a.pk_len = len(pk)
        if w_raw(d, pk, len(pk)) < 0:
            raise MemoryError()
        a.sk_off = d.len
        a.sk_len = len(sk)
        if w_raw(d, sk, len(sk)) < 0:
            raise MemoryError()
        a.wire_off = d.len
        a.wire_len = len(wire)
        if w_raw(d, wire, len(wire)) < 0:
            raise MemoryError()
        a.key_hash = key_hash(d.data + a.pk_off, a.pk_len, d.data + a.sk_off, a.sk_len)
        return 0

    cdef int seal(self, dict objects) except -1:
        """Done filling: the cache gets its slots (and the Python-made items), and the
        buffer gives back what the transform reserved and did not use."""
        cdef char* p
        self.made = [None] * self.n
        for k, v in objects.items():
            self.made[k] = v
        if self.data.cap > self.data.len + (self.data.len >> 2) + 4096:
            p = <char*> realloc(self.data.data, self.data.len + 1)
            if p != NULL:
                self.data.data = p
                self.data.cap = self.data.len + 1
        return 0

    cdef object item(self, Py_ssize_t i):
        cdef ItemAt* a
        cdef object obj = self.made[i]
        if obj is not None:
            return obj
        a = &self.at[i]
        obj = _new_slotted(self.item_cls, _ITEM_FIELDS, (
            a.line,
            PyUnicode_DecodeUTF8(self.data.data + a.pk_off, a.pk_len, NULL),
            PyUnicode_DecodeUTF8(self.data.data + a.sk_off, a.sk_len, NULL),
            PyBytes_FromStringAndSize(self.data.data + a.wire_off, a.wire_len),
        ))
        if self.made[i] is None:  # another thread may have built it meanwhile
            self.made[i] = obj
        return self.made[i]


@cython.final
cdef class ItemBlock:
    """One batch's transformed items as the native transform wrote them: every
    item's wire JSON, pk and sk in one buffer.

    Why: the blind path hands a batch from the transform to the writer without a
    Python object per item -- the writer cuts its requests, checks keys and
    splices request bodies here, in C (`chunk_bounds`, `keys_unique`, `body`).
    It is still a sequence of `PreparedItem`, each built on first access and then
    kept, for every other consumer (the mode stage, sync, rejects, tests), which
    see exactly the items a list would have held; a slice is a view, not a copy.
    Immutable, so worker threads read it without a lock.
    """

    cdef _ItemStore store
    cdef readonly Py_ssize_t start
    cdef readonly Py_ssize_t stop

    def __init__(self, items=()):
        """An ItemBlock of the given PreparedItems (tests; the transform builds its own)."""
        cdef _ItemStore store = _ItemStore()
        cdef dict objects = {}
        cdef object it
        for it in items:
            store.add_object(it, objects)
        store.seal(objects)
        self.store = store
        self.start = 0
        self.stop = store.n

    def __len__(self):
        return self.stop - self.start

    def __getitem__(self, index):
        cdef Py_ssize_t i, n = self.stop - self.start
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step == 1:
                return _block_view(self.store, self.start + start,
                                   self.start + (stop if stop > start else start))
            return [self.store.item(self.start + k) for k in range(start, stop, step)]
        i = index
        if i < 0:
            i += n
        if i < 0 or i >= n:
            raise IndexError("ItemBlock index out of range")
        return self.store.item(self.start + i)

    def __iter__(self):
        cdef Py_ssize_t i
        for i in range(self.start, self.stop):
            yield self.store.item(i)

    def __eq__(self, other):
        if isinstance(other, (ItemBlock, list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    def __ne__(self, other):
        if isinstance(other, (ItemBlock, list, tuple)):
            return list(self) != list(other)
        return NotImplemented

    __hash__ = None

    def __reduce__(self):
        return (list, (list(self),))  # a copy elsewhere is an ordinary list

    def __repr__(self):
        return f"ItemBlock({list(self)!r})"

    def lines(self):
        """Each item's line, as `[it.line for it in block]`."""
        cdef _ItemStore s = self.store
        cdef Py_ssize_t i
        cdef list out = []
        for i in range(self.start, self.stop):
            obj = s.made[i]
            out.append(s.at[i].line if obj is None else obj.line)
        return out

    def pks(self):
        """Each item's pk, as `[it.pk for it in block]` (no PreparedItem built)."""
        return self._keys(0)

    def sks(self):
        """Each item's sk, as `[it.sk for it in block]` (no PreparedItem built)."""
        return self._keys(1)

    cdef list _keys(self, int which):
        cdef _ItemStore s = self.store
        cdef Py_ssize_t i
        cdef ItemAt* a
        cdef list out = []
        for i in range(self.start, self.stop):
            obj = s.made[i]
            if obj is not None:
                out.append(obj.sk if which else obj.pk)
                continue
            a = &s.at[i]
            if which:
                out.append(PyUnicode_DecodeUTF8(s.data.data + a.sk_off, a.sk_len, NULL))
            else:
                out.append(PyUnicode_DecodeUTF8(s.data.data + a.pk_off, a.pk_len, NULL))
        return out

    def distinct_pks(self):
        """The set of the items' pks, each decoded once: a row's pk is compared (memcmp)
        with the few distinct ones met so far (a batch holds a handful of tenants), so a
        per-tenant lookup costs no str per row."""
        cdef _ItemStore s = self.store
        cdef Py_ssize_t i, k, nseen = 0
        cdef ItemAt* a
        cdef const char* pk
        cdef const char* seen_ptr[32]
        cdef Py_ssize_t seen_len[32]
        cdef bint found
        cdef set out = set()
        for i in range(self.start, self.stop):
            obj = s.made[i]
            if obj is not None:
                out.add(obj.pk)
                continue
            a = &s.at[i]
            pk = s.data.data + a.pk_off
            found = False
            for k in range(nseen):
                if seen_len[k] == a.pk_len and memcmp(seen_ptr[k], pk, a.pk_len) == 0:
                    found = True
                    break
            if found:
                continue
            out.add(PyUnicode_DecodeUTF8(pk, a.pk_len, NULL))
            if nseen < 32:
                seen_ptr[nseen] = pk
                seen_len[nseen] = a.pk_len
                nseen += 1
        return out

    def entity_keys(self, bint versioned=True):
        """Each item's key as a tuple: (pk, sk), or with `versioned` false (pk, the
        sk without its "@version") -- the keys the modes read and remember, built
        here rather than from `pks()` and `sks()` (no slice per row in Python)."""
        cdef _ItemStore s = self.store
        cdef Py_ssize_t i, n
        cdef ItemAt* a
        cdef const char* sk
        cdef const char* pk
        cdef const char* last = NULL
        cdef Py_ssize_t last_len = -1
        cdef object pk_str = None
        cdef list out = []
        for i in range(self.start, self.stop):
            obj = s.made[i]
            if obj is not None:
                out.append((obj.pk, obj.sk if versioned else obj.sk.rsplit("@", 1)[0]))
                continue
            a = &s.at[i]
            sk = s.data.data + a.sk_off
            n = a.sk_len
            if not versioned:
                while n > 0 and sk[n - 1] != 64:  # '@'
                    n -= 1
                n = n - 1 if n > 0 else a.sk_len
            # a batch's rows mostly share their pk (tenant and type): one str for the
            # run of them, whose hash is then worked out once for every dict it meets
            pk = s.data.data + a.pk_off
            if a.pk_len != last_len or memcmp(pk, last, a.pk_len) != 0:
                pk_str = PyUnicode_DecodeUTF8(pk, a.pk_len, NULL)
                last, last_len = pk, a.pk_len
            out.append((pk_str, PyUnicode_DecodeUTF8(sk, n, NULL)))
        return out

    def keys_json(self, bint versioned=True):
        """`keys_json(self.entity_keys(versioned))` without the tuples: the keys as a
        BatchGetItem call lists them, written from the buffer.  None when an item
        built since holds a key C leaves alone (a lone surrogate).

        Why: a batch of new entities reads the tables and finds nothing; its keys
        are then never needed as Python objects at all.
        """
        cdef _ItemStore s = self.store
        cdef Py_ssize_t i, n, k, pk_len
        cdef ItemAt* a
        cdef const char* sk
        cdef const char* pk
        cdef Buf b
        memset(&b, 0, sizeof(Buf))
        try:
            for i in range(self.start, self.stop):
                obj = s.made[i]
                if obj is not None:
                    pk = _utf8_nocheck(obj.pk, &pk_len)
                    sk = NULL if pk == NULL else _utf8_nocheck(obj.sk, &n)
                    if sk == NULL:
                        PyErr_Clear()
                        return None
                else:
                    a = &s.at[i]
                    pk, pk_len = s.data.data + a.pk_off, a.pk_len
                    sk, n = s.data.data + a.sk_off, a.sk_len
                if not versioned:  # the sk up to its last "@" (rsplit("@", 1)[0])
                    k = n
                    while k > 0 and sk[k - 1] != 64:  # '@'
                        k -= 1
                    if k > 0:
                        n = k - 1
                if (w_lit(&b, b'{"pk":{"S":"' if i == self.start else b',{"pk":{"S":"') < 0
                        or w_esc(&b, pk, pk_len) < 0
                        or w_lit(&b, b'"},"sk":{"S":"') < 0
                        or w_esc(&b, sk, n) < 0
                        or w_lit(&b, b'"}}') < 0):
                    raise MemoryError()
            return PyBytes_FromStringAndSize(b.data, b.len)
        finally:
            free(b.data)

    def at_version_1(self):
        """True when every item's sk ends in "@1" (what the transform writes)."""
        cdef _ItemStore s = self.store
        cdef Py_ssize_t i
        cdef ItemAt* a
        for i in range(self.start, self.stop):
            obj = s.made[i]
            if obj is not None:
                if not obj.sk.endswith("@1"):
                    return False
                continue
            a = &s.at[i]
            if a.sk_len < 2 or memcmp(s.data.data + a.sk_off + a.sk_len - 2, b"@1", 2) != 0:
                return False
        return True

    def keys_unique(self):
        """True when no (pk, sk) appears twice -- `len({(it.pk, it.sk) ...}) == len(block)`."""
        cdef _ItemStore s = self.store
        cdef Py_ssize_t n = self.stop - self.start, size = 16, i, slot, mask
        cdef Py_ssize_t* table
        cdef bint unique = True
        if n < 2:
            return True
        while size < 2 * n:
            size *= 2
        mask = size - 1
        table = <Py_ssize_t*> malloc(size * sizeof(Py_ssize_t))
        if table == NULL:
            raise MemoryError()
        with nogil:
            for i in range(size):
                table[i] = -1
            for i in range(self.start, self.stop):
                slot = <Py_ssize_t> (s.at[i].key_hash & <uint64_t> mask)
                while table[slot] >= 0:
                    if same_key(&s.at[table[slot]], &s.at[i], s.data.data):
                        unique = False
                        break
                    slot = (slot + 1) & mask
                if not unique:
                    break
                table[slot] = i
        free(table)
        return unique

    def chunk_bounds(self, Py_ssize_t max_items, Py_ssize_t budget, Py_ssize_t per_item):
        """Where `importer.writer.chunk_requests` cuts this block, as offsets into it:
        `[0, b1, ..., len]`; request k holds items `b[k]:b[k+1]` -- at most
        `max_items`, within `budget` bytes (wire plus `per_item` each), no key twice
        (an item that alone exceeds the budget still makes a request of its own)."""
        cdef _ItemStore s = self.store
        cdef Py_ssize_t i = self.start, c0, j, size, add
        cdef bint repeat
        cdef list bounds = [0]
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        while i < self.stop:
            c0 = i
            size = 0
            while i < self.stop:
                add = s.at[i].wire_len + per_item
                if i > c0:
                    if i - c0 >= max_items or size + add > budget:
                        break
                    repeat = False
                    for j in range(c0, i):
                        if same_key(&s.at[j], &s.at[i], s.data.data):
                            repeat = True
                            break
                    if repeat:
                        break
                size += add
                i += 1
            bounds.append(i - self.start)
        return bounds

    def body(self, bytes prefix, bytes sep, bytes suffix):
        """`prefix + sep.join(it.wire for it in block) + suffix`, copied once."""
        cdef _ItemStore s = self.store
        cdef Py_ssize_t i, total = len(prefix) + len(suffix), k
        cdef Py_ssize_t nsep = len(sep)
        cdef char* p
        cdef ItemAt* a
        for i in range(self.start, self.stop):
            total += s.at[i].wire_len
        if self.stop > self.start:
            total += nsep * (self.stop - self.start - 1)
        out = PyBytes_FromStringAndSize(NULL, total)
        p = PyBytes_AS_STRING(out)
        memcpy(p, <const char*> prefix, len(prefix))
        k = len(prefix)
        for i in range(self.start, self.stop):
            if i > self.start:
                memcpy(p + k, <const char*> sep, nsep)
                k += nsep
            a = &s.at[i]
            memcpy(p + k, s.data.data + a.wire_off, a.wire_len)
            k += a.wire_len
        memcpy(p + k, <const char*> suffix, len(suffix))
        return out

    def write_units(self, Py_ssize_t unit_bytes):
        """One per item when every item's wire JSON is at most `unit_bytes` (an item's
        DynamoDB size never exceeds its JSON); -1 otherwise, for the caller to size
        the items."""
        cdef _ItemStore s = self.store
        cdef Py_ssize_t i
        for i in range(self.start, self.stop):
            if s.at[i].wire_len > unit_bytes:
                return -1
        return self.stop - self.start

    def pick(self, tuple names):
        """`wire_pick(it.wire, names)` of each item (`block_pick`): the members the
        mode stage compares, without a PreparedItem per item."""
        return block_pick(self, names)

    def block(self):
        """Itself: the batch in the C layout, for the C functions that read a block's
        buffer (the pure-Python `importer.item_batch.ItemList` answers None)."""
        return self


cdef ItemBlock _block_view(_ItemStore store, Py_ssize_t start, Py_ssize_t stop):
    cdef ItemBlock view = ItemBlock.__new__(ItemBlock)
    view.store = store
    view.start = start
    view.stop = stop
    return view


# ---------------------------------------------------------------------------
# row_json_size: importer.batching.item_json_size
# ---------------------------------------------------------------------------

cdef Py_ssize_t _json_str_len(object s) except -2:
    """Bytes of json.dumps(s, ensure_ascii=False) in UTF-8; -1 on a lone surrogate."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(s), i, total = 2
    cdef unsigned int kind = PyUnicode_KIND(s)
    cdef void* data = PyUnicode_DATA(s)
    cdef const uchar* d1
    cdef const ushort* d2_
    cdef const uint* d4
    cdef uint c
    if kind == 1:
        d1 = <const uchar*> data
        for i in range(n):
            c = d1[i]
            if c >= 0x80:
                total += 2
            elif c >= 32:
                total += 2 if (c == 34 or c == 92) else 1
            else:
                total += 2 if (c == 10 or c == 13 or c == 9 or c == 8 or c == 12) else 6
        return total
    if kind == 2:
        d2_ = <const ushort*> data
        for i in range(n):
            c = d2_[i]
            if c < 0x80:
                if c >= 32:
                    total += 2 if (c == 34 or c == 92) else 1
                else:
                    total += 2 if (c == 10 or c == 13 or c == 9 or c == 8 or c == 12) else 6
            elif c < 0x800:
                total += 2
            elif c >= 0xD800 and c <= 0xDFFF:
                return -1
            else:
                total += 3
        return total
    d4 = <const uint*> data
    for i in range(n):
        c = d4[i]
        if c < 0x80:
            if c >= 32:
                total += 2 if (c == 34 or c == 92) else 1
            else:
                total += 2 if (c == 10 or c == 13 or c == 9 or c == 8 or c == 12) else 6
        elif c < 0x800:
            total += 2
        elif c >= 0xD800 and c <= 0xDFFF:
            return -1
        elif c < 0x10000:
            total += 3
        else:
            total += 4
    return total


cdef object _last_header = None
cdef tuple _last_snapshot = ()
cdef bint _last_dupes = False


cdef bint _header_has_duplicates(object header) except -1:
    """Whether header names repeat (cached for the last header seen, checked by identity)."""
    global _last_header, _last_snapshot, _last_dupes
    cdef Py_ssize_t i, n = len(header)
    cdef tuple snap = _last_snapshot
    if header is _last_header and PyTuple_GET_SIZE(snap) == n:
        for i in range(n):
            if <object> PyTuple_GET_ITEM(snap, i) is not _field(header, i):
                break
        else:
            return _last_dupes
    snap = tuple(header)
    try:
        dupes = len(set(snap)) != n
    except TypeError:
        dupes = True
    _last_header = header
    _last_snapshot = snap
    _last_dupes = dupes
    return dupes


def row_json_size(header, fields, fallback):
    """UTF-8 length of compact `json.dumps(dict(zip(header, fields)), ensure_ascii=False)`.

    Calls `fallback(header, fields)` (the Python definition) for anything the
    C loop does not cover: non-str values, duplicate header names, lone
    surrogates (where the Python definition raises UnicodeEncodeError).
    """
    cdef Py_ssize_t nh, nf, n, i, total, k
    cdef object h, f
    if not ((PyList_CheckExact(header) or PyTuple_CheckExact(header))
            and (PyList_CheckExact(fields) or PyTuple_CheckExact(fields))):
        return fallback(header, fields)
    nh = len(header)
    nf = len(fields)
    n = nh if nh < nf else nf
    if n == 0:
        return 2
    if _header_has_duplicates(header):
        return fallback(header, fields)
    total = 1 + n   # '{' + '}' + (n-1) commas
    for i in range(n):
        h = _field(header, i)
        f = _field(fields, i)
        if not (PyUnicode_CheckExact(h) and PyUnicode_CheckExact(f)):
            return fallback(header, fields)
        k = _json_str_len(h)
        if k < 0:
            return fallback(header, fields)
        total += k + 1
        k = _json_str_len(f)
        if k < 0:
            return fallback(header, fields)
        total += k
    return total


# ---------------------------------------------------------------------------
# CSV: ItemReader records from a byte stream (importer.source.iter_records)
# ---------------------------------------------------------------------------



cdef inline bint _zero_byte(uint64_t v) noexcept nogil:
    """True when one of the eight bytes of `v` is zero."""
    return ((v - 0x0101010101010101ULL) & ~v & 0x8080808080808080ULL) != 0


cdef inline uint64_t _zero_bytes(uint64_t v) noexcept nogil:
    """The high bit of each zero byte of `v`, and no other bit (exact, unlike
    `_zero_byte`'s test, whose borrow can mark a byte above a zero one)."""
    cdef uint64_t t = (v & 0x7f7f7f7f7f7f7f7fULL) + 0x7f7f7f7f7f7f7f7fULL
    return ~(t | v | 0x7f7f7f7f7f7f7f7fULL)


cdef inline bint _ctl_in_word(uint64_t v) noexcept nogil:
    """True when one of the eight bytes of `v` is below 0x20 (a control character)."""
    return ((v - 0x2020202020202020ULL) & ~v & 0x8080808080808080ULL) != 0


cdef Py_ssize_t utf8_first_error(const uchar* s, Py_ssize_t n) noexcept nogil:
    """Index of the first invalid UTF-8 sequence (Python's exc.start), or -1."""
    cdef Py_ssize_t i = 0, need
    cdef uchar c, lo, hi
    cdef uint64_t w
    while i < n:
        if i + 8 <= n:
            memcpy(&w, s + i, 8)
            if (w & 0x8080808080808080ULL) == 0:  # eight ASCII bytes
                i += 8
                continue
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        lo = 0x80
        hi = 0xBF
        if c >= 0xC2 and c <= 0xDF:
            need = 1
        elif c == 0xE0:
            need = 2; lo = 0xA0
        elif c == 0xED:
            need = 2; hi = 0x9F
        elif c >= 0xE1 and c <= 0xEF:
            need = 2
        elif c == 0xF0:
            need = 3; lo = 0x90
        elif c >= 0xF1 and c <= 0xF3:
            need = 3
        elif c == 0xF4:
            need = 3; hi = 0x8F
        else:
            return i
        if i + 1 >= n or s[i + 1] < lo or s[i + 1] > hi:
            return i
        if need >= 2 and (i + 2 >= n or s[i + 2] < 0x80 or s[i + 2] > 0xBF):
            return i
        if need >= 3 and (i + 3 >= n or s[i + 3] < 0x80 or s[i + 3] > 0xBF):
            return i
        i += need + 1
    return -1


cdef struct Rec:
    long long line           # first physical line of the record
    long long err_line       # line of the first invalid UTF-8 (0: none)
    Py_ssize_t err_byte      # its 1-based byte in that line
    Py_ssize_t esc           # what JSON escaping adds to the fields' bytes (`_json_size`)
    int high                 # a byte >= 0x80 on the line being parsed (UTF-8 to check)
    int unterminated
    int oversized            # longer than `max_record`: skipped, never held (no fields)
    Py_ssize_t nfields




cdef inline int _placement(Py_ssize_t size, Py_ssize_t base, Py_ssize_t max_items,
                           Py_ssize_t max_bytes, Py_ssize_t count,
                           Py_ssize_t input_bytes) noexcept nogil:
    """Where ItemBatcher puts a row of `size` JSON bytes, the open batch holding
    `count` rows in `input_bytes` (`base`: its envelope alone; `max_items` <= 0:
    no item limit)."""
    if base + size > max_bytes:
        return TOO_BIG
    if count and ((max_items > 0 and count >= max_items) or input_bytes + 1 + size > max_bytes):
        return NEXT_BATCH
    return IN_BATCH


@cython.final
def record_too_long(Py_ssize_t limit):
    """The reason a record over the limit is refused (`source.record_too_long`)."""
    if limit == MAX_ITEM_BYTES:
        return (f"record longer than {limit:,} bytes (the largest item DynamoDB can "
                "store): skipped without reading it")
    return f"record longer than {limit:,} bytes: skipped without reading it"


cdef class RecordReader:
    """Records of a CSV byte stream per ItemReader's rules (see source._RecordParser).

    Iterating yields `row_cls(line, fields, error)`; once `width` is set (>= 0)
    rows are padded with "" or cut to it, counting `padded` / `truncated`.
    """

    cdef object stream
    cdef object row_cls
    cdef object error_cls
    cdef char* buf
    cdef Py_ssize_t cap, start, end
    cdef bint eof
    cdef bint bom_checked
    cdef bint bom
    cdef long long line
    cdef uchar delim
    cdef Py_ssize_t chunk
    cdef Buf fb
    cdef Py_ssize_t* fends
    cdef Py_ssize_t fends_cap
    cdef Rec rec
    cdef Py_ssize_t rec_start
    cdef Py_ssize_t rec_bom      # 3 when the record starts with the file's BOM
    cdef object reparse
    cdef str delimiter
    cdef public Py_ssize_t width
    cdef public long long padded
    cdef public long long truncated
    # the first SHOWN_LINES lines of each kind, for a notice a user can act on
    cdef long long pad_lines[8]
    cdef long long trunc_lines[8]
    cdef bint closed
    cdef RowBlock pending        # the row that closed the last batch, opening the next
    cdef Py_ssize_t pending_size  # its JSON size
    cdef Py_ssize_t last_rows     # rows and field bytes of the last block handed out
    cdef Py_ssize_t last_bytes
    cdef Py_ssize_t last_size    # JSON size of the last record read (-1: not known in C)
    # a record longer than `max_record` bytes (0: no limit) is skipped to its end as it
    # streams, by the byte automaton of `_skip`, and handed out with no fields: a
    # 200 MB line or a decompression bomb's endless record is never held
    cdef public Py_ssize_t max_record
    cdef bint skipping
    cdef int sk_st, sk_bs, sk_q, sk_cr, sk_endcr, sk_open
    cdef long long sk_first, sk_line

    def __cinit__(self):
        self.buf = NULL
        self.fends = NULL
        memset(&self.fb, 0, sizeof(Buf))

    def __init__(self, stream, str delimiter, row_cls, error_cls, Py_ssize_t chunk=1 << 20,
                 reparse=None, Py_ssize_t max_record=0):
        cdef bytes d = delimiter.encode("utf-8")
        self.reparse = reparse
        self.delimiter = delimiter
        if len(d) != 1 or len(delimiter) != 1:
            raise ValueError("RecordReader needs a one-byte delimiter")
        self.stream = stream
        self.row_cls = row_cls
        self.error_cls = error_cls
        self.delim = <uchar> d[0]
        self.chunk = max(16, chunk)
        self.cap = self.chunk + 64
        self.buf = <char*> malloc(self.cap)
        self.fends_cap = 64
        self.fends = <Py_ssize_t*> malloc(self.fends_cap * sizeof(Py_ssize_t))
        if self.buf == NULL or self.fends == NULL or buf_reserve(&self.fb, 4096) < 0:
            raise MemoryError()
        self.start = self.end = 0
        self.eof = False
        self.bom_checked = False
        self.bom = False
        self.line = 0
        self.width = -1
        self.padded = 0
        self.truncated = 0
        self.closed = False
        self.pending = None
        self.last_rows = 0
        self.last_bytes = 0
        self.last_size = -1
        self.max_record = max_record
        self.skipping = False

    cdef void _close(self) noexcept:
        free(self.buf)
        self.buf = NULL
        free(self.fends)
        self.fends = NULL
        free(self.fb.data)
        self.fb.data = NULL
        self.fb.cap = self.fb.len = 0
        self.closed = True

    def close(self):
        self._close()

    def __dealloc__(self):
        self._close()

    def __iter__(self):
        return self

    cdef int _fill(self) except -1:
        cdef Py_ssize_t have = self.end - self.start, want, n
        cdef char* p
        if self.start > 0:
            if have:
                memmove(self.buf, self.buf + self.start, have)
            self.start = 0
            self.end = have
        want = self.chunk if self.chunk > have else have
        if self.end + want > self.cap:
            p = <char*> realloc(self.buf, self.end + want + 64)
            if p == NULL:
                raise MemoryError()
            self.buf = p
            self.cap = self.end + want + 64
        try:
            data = self.stream.read(want)
        except self.error_cls:
            raise  # already one line naming the file (a truncated input)
        except (OSError, EOFError) as exc:
            raise self.error_cls(f"cannot read source: {exc}") from None
        except Exception as exc:  # zstd/gzip raise their own error types
            raise self.error_cls(f"cannot decompress source: {exc}") from None
        if not isinstance(data, bytes):
            data = bytes(data)
        n = PyBytes_GET_SIZE(data)
        if n == 0:
            self.eof = True
            return 0
        if self.end + n > self.cap:
            p = <char*> realloc(self.buf, self.end + n + 64)
            if p == NULL:
                raise MemoryError()
            self.buf = p
            self.cap = self.end + n + 64
        memcpy(self.buf + self.end, PyBytes_AS_STRING(data), n)
        self.end += n
        return 0

    cdef int _push_field(self) noexcept nogil:
        cdef Py_ssize_t* p
        if self.rec.nfields >= self.fends_cap:
            p = <Py_ssize_t*> realloc(self.fends, 2 * self.fends_cap * sizeof(Py_ssize_t))
            if p == NULL:
                return -1
            self.fends = p
            self.fends_cap *= 2
        self.fends[self.rec.nfields] = self.fb.len
        self.rec.nfields += 1
        return 0

    cdef int _fields(self, const uchar* b, Py_ssize_t i, Py_ssize_t end, uchar d,
                     int state, Py_ssize_t* eol) noexcept nogil:
        """The fields of the physical line from b[i] into `fb`, from parser state
        `state`: the state where the line ends, or -1 (no memory).  `eol` gets
        the line's end: its line break, or `end` (the line may go on past it).

        Also adds up what JSON escaping adds to the bytes it keeps (`rec.esc`),
        and notes a byte >= 0x80 (`rec.high`: only then is UTF-8 checked).

        Exactly `_parse`'s byte loop, eight bytes at a time and in the same pass
        as the search for the line break: only a delimiter, a quote or a
        backslash can change the state, so the bytes up to the next of them are
        stored as a whole word (and a field that starts with an ordinary byte is
        unquoted); each of those three goes through the byte loop's rules.
        `fb` has room for b[i:end] plus 16 bytes (a word store runs past what it
        keeps).
        """
        cdef uint64_t w, m, high = 0
        cdef uint64_t d8 = 0x0101010101010101ULL * d
        cdef Py_ssize_t j = self.fb.len, valid, k, t, esc = 0
        cdef char* out = self.fb.data
        cdef uchar c, nb
        while i < end:
            valid = end - i
            if valid >= 8:
                valid = 8
                memcpy(&w, b + i, 8)
            else:
                w = 0
                memcpy(&w, b + i, valid)
            m = (_zero_bytes(w ^ d8) | _zero_bytes(w ^ 0x2222222222222222ULL)
                 | _zero_bytes(w ^ 0x5c5c5c5c5c5c5c5cULL)
                 | _zero_bytes(w ^ 0x0a0a0a0a0a0a0a0aULL)
                 | _zero_bytes(w ^ 0x0d0d0d0d0d0d0d0dULL))
            k = _first_byte(m) if m else 8
            if k > valid:
                k = valid
            high |= w
            if k:  # ordinary bytes: kept as they are
                if _ctl_in_word(w):  # (a word's padding counts too: then look closer)
                    for t in range(i, i + k):
                        esc += _ESC_EXTRA[b[t]]
                memcpy(out + j, &w, 8)
                j += k
                i += k
                if state == ST_START or state == ST_AFTER:
                    state = ST_UNQUOTED
                if k == valid:
                    continue
            # b[i] is a line break, a delimiter, a quote or a backslash
            c = b[i]
            if c == 10 or c == 13:
                break
            i += 1
            if c == 92:
                if i < end:
                    nb = b[i]
                    if nb == 92 or nb == 34 or nb == d:
                        out[j] = <char> nb
                        j += 1
                        i += 1
                        esc += _ESC_EXTRA[nb]
                        if state == ST_START or state == ST_AFTER:
                            state = ST_UNQUOTED
                continue
            if state == ST_QUOTED:
                if c == 34:
                    if i < end and b[i] == 34:
                        out[j] = 34
                        j += 1
                        i += 1
                        esc += 1
                    else:
                        state = ST_AFTER
                else:
                    out[j] = <char> c
                    j += 1
                    esc += _ESC_EXTRA[c]
            elif c == d:
                self.fb.len = j
                if self._push_field() < 0:
                    return -1
                state = ST_START
            elif c == 34 and state == ST_START:
                state = ST_QUOTED
            else:
                out[j] = <char> c
                j += 1
                esc += _ESC_EXTRA[c]
                state = ST_UNQUOTED
        self.fb.len = j
        self.rec.esc += esc
        if high & 0x8080808080808080ULL:
            self.rec.high = 1
        eol[0] = i
        return state

    cdef int _parse(self) noexcept nogil:
        """One record from buf[start:end]; commits `start`/`line` only on P_RECORD."""
        cdef const uchar* b = <const uchar*> self.buf
        cdef Py_ssize_t i = self.start, end = self.end, raw_start, e, tl, j
        cdef long long line = self.line
        cdef uchar c, d = self.delim
        cdef int state
        cdef bint more = not self.eof
        cdef Buf* fb = &self.fb
        if self.skipping:
            return self._skip()
        # blank lines (only outside a record) are skipped
        while True:
            if i >= end:
                if more:
                    self.start = i
                    self.line = line
                    return P_NEED_MORE
                self.start = i
                self.line = line
                return P_END
            c = b[i]
            if line == 0 and self.bom:
                break
            if c == 10:
                i += 1
                line += 1
            elif c == 13:
                if i + 1 >= end and more:
                    self.start = i
                    self.line = line
                    return P_NEED_MORE
                i += 2 if (i + 1 < end and b[i + 1] == 10) else 1
                line += 1
            else:
                break
        # commit skipped blank lines
        self.start = i
        self.line = line
        self.rec_start = i
        fb.len = 0
        self.rec.nfields = 0
        self.rec.err_line = 0
        self.rec.unterminated = 0
        self.rec.oversized = 0
        self.rec.esc = 0
        self.rec.line = line + 1
        state = ST_START
        raw_start = i
        self.rec_bom = 0
        if line == 0 and self.bom:
            i += 3
            self.rec_bom = 3  # the BOM is not part of the record's length
        while True:
            # one physical line: content b[raw_start:e]
            # the line break found and the fields split in one pass (`_fields`); a
            # line not whole in the buffer is parsed again once it is
            if buf_reserve(fb, end - i + 16) < 0:
                return P_NOMEM
            self.rec.high = 0
            state = self._fields(b, i, end, d, state, &e)
            if state < 0:
                return P_NOMEM
            if e >= end:
                if more:
                    if self.max_record and e - self.rec_start - self.rec_bom > self.max_record:
                        return self._begin_skip()
                    return P_NEED_MORE
            elif b[e] == 13 and e + 1 >= end and more:
                if self.max_record and e - self.rec_start - self.rec_bom > self.max_record:
                    return self._begin_skip()
                return P_NEED_MORE
            line += 1
            if self.rec.err_line == 0 and self.rec.high:
                tl = utf8_first_error(b + raw_start, e - raw_start)
                if tl >= 0:
                    self.rec.err_line = line
                    self.rec.err_byte = tl + 1
            i = e
            # the terminator
            if e >= end:
                # last line of the file, no terminator
                if state == ST_QUOTED:
                    self.rec.unterminated = 1
                if self._push_field() < 0:
                    return P_NOMEM
                self.start = e
                self.line = line
                self._check_length(e)
                return P_RECORD
            if b[e] == 13 and e + 1 < end and b[e + 1] == 10:
                tl = 2
            else:
                tl = 1
            if state == ST_QUOTED:
                memcpy(fb.data + fb.len, b + e, tl)
                fb.len += tl
                self.rec.esc += tl  # \r and \n escape as two bytes each
                i = e + tl
                raw_start = i
                if i >= end and not more:
                    self.rec.unterminated = 1
                    if self._push_field() < 0:
                        return P_NOMEM
                    self.start = i
                    self.line = line
                    # the open quote holds its last line break: it counts, as in source.py
                    self._check_length(i)
                    return P_RECORD
                continue
            if self._push_field() < 0:
                return P_NOMEM
            self.start = e + tl
            self.line = line
            self._check_length(e)
            return P_RECORD

    cdef inline void _check_length(self, Py_ssize_t e) noexcept nogil:
        """A record parsed whole but longer than the limit is refused all the same
        (the same rule whatever the chunk size: its bytes up to its last line's end)."""
        if self.max_record and e - self.rec_start - self.rec_bom > self.max_record:
            self.rec.oversized = 1
            self.rec.nfields = 0
            self.fb.len = 0

    cdef int _begin_skip(self) noexcept nogil:
        """The record open at `rec_start` is over the limit: read on to its end without
        keeping it (from its first byte again: the automaton needs no look-ahead)."""
        self.skipping = True
        self.sk_first = self.rec.line
        self.sk_line = self.rec.line - 1
        self.sk_st = ST_START
        self.sk_bs = self.sk_q = self.sk_cr = self.sk_endcr = self.sk_open = 0
        self.start = self.rec_start + self.rec_bom
        self.fb.len = 0
        self.rec.nfields = 0
        return self._skip()

    cdef int _skip_done(self, Py_ssize_t i) noexcept nogil:
        self.skipping = False
        self.start = i
        self.line = self.sk_line
        self.rec.line = self.sk_first
        self.rec.nfields = 0
        self.fb.len = 0
        self.rec.err_line = 0
        self.rec.unterminated = 0
        self.rec.oversized = 1
        return P_RECORD

    cdef int _skip(self) noexcept nogil:
        """Consume the skipped record's bytes in buf[start:end] by `_fields`/`_parse`'s
        rules, one byte at a time with its pending states (a backslash, a quote inside
        quotes, a CR) kept across buffers: P_RECORD at its end, else P_NEED_MORE."""
        cdef const uchar* b = <const uchar*> self.buf
        cdef Py_ssize_t i = self.start, end = self.end
        cdef uchar c, d = self.delim
        cdef bint more = not self.eof
        cdef int st = self.sk_st
        cdef uint64_t w, m, d8 = 0x0101010101010101ULL * d
        cdef Py_ssize_t j
        while i < end:
            if not (self.sk_endcr or self.sk_cr or self.sk_bs or self.sk_q):
                # ordinary bytes, eight at a time, up to the next byte that can matter
                # (a line break, a quote, a backslash, the delimiter): they only make a
                # field unquoted (outside quotes) -- a bomb's endless record is skipped
                # at memory speed, not byte by byte
                j = i
                while j + 8 <= end:
                    memcpy(&w, b + j, 8)
                    m = (_zero_bytes(w ^ d8) | _zero_bytes(w ^ 0x2222222222222222ULL)
                         | _zero_bytes(w ^ 0x5c5c5c5c5c5c5c5cULL)
                         | _zero_bytes(w ^ 0x0a0a0a0a0a0a0a0aULL)
                         | _zero_bytes(w ^ 0x0d0d0d0d0d0d0d0dULL))
                    if m:
                        j += _first_byte(m)
                        break
                    j += 8
                if j > i:
                    self.sk_open = 1
                    if st != ST_QUOTED:
                        st = ST_UNQUOTED
                    i = j
                    continue
            c = b[i]
            if self.sk_endcr:  # the record ended at a CR: an LF right after is its
                self.sk_endcr = 0
                if c == 10:
                    i += 1
                return self._skip_done(i)
            if self.sk_cr:  # a CR inside quotes: the LF after it is the same break
                self.sk_cr = 0
                if c == 10:
                    i += 1
                    continue
            i += 1
            if self.sk_bs:
                self.sk_bs = 0
                if c == 92 or c == 34 or c == d:
                    self.sk_open = 1
                    if st == ST_START or st == ST_AFTER:
                        st = ST_UNQUOTED
                    continue
            if self.sk_q:
                self.sk_q = 0
                if c == 34:
                    self.sk_open = 1
                    continue
                st = ST_AFTER
            if c == 10 or c == 13:
                self.sk_line += 1
                self.sk_open = 0
                if st == ST_QUOTED:
                    if c == 13:
                        self.sk_cr = 1
                    continue
                if c == 13:
                    if i < end:
                        if b[i] == 10:
                            i += 1
                        return self._skip_done(i)
                    if more:
                        self.sk_endcr = 1
                        continue
                return self._skip_done(i)
            self.sk_open = 1
            if c == 92:
                self.sk_bs = 1
            elif st == ST_QUOTED:
                if c == 34:
                    self.sk_q = 1
            elif c == d:
                st = ST_START
            elif c == 34 and st == ST_START:
                st = ST_QUOTED
            else:
                st = ST_UNQUOTED
        self.sk_st = st
        self.start = end
        if more:
            return P_NEED_MORE
        if self.sk_open:  # the file's last line, without a line break
            self.sk_line += 1
        self.sk_endcr = 0
        return self._skip_done(end)

    def __next__(self):
        cdef tuple rec = self._record(NULL, 0)
        if rec is None:
            raise StopIteration
        return _new_slotted(self.row_cls, _ROW_FIELDS, rec)

    cdef tuple _record(self, const Py_ssize_t* hlens, Py_ssize_t nh):
        """The next record as (line, fields, error), or None at the end.

        With `hlens` (the JSON lengths of the `nh` header names, nh == width),
        `last_size` is set to the row's `item_json_size` computed from the
        parsed bytes, or -1 where C does not know it (a record Python re-read).
        """
        if not self._advance():
            return None
        return self._materialize(hlens, nh)

    cdef bint _advance(self) except -1:
        """Parse the next record into `fb`/`fends`/`rec`; False at the end."""
        cdef int rc
        self.last_size = -1
        self._ready()
        while True:
            with nogil:
                rc = self._parse()
            if rc == P_RECORD:
                return True
            if rc == P_NEED_MORE:
                self._fill()
                continue
            if rc == P_NOMEM:
                raise MemoryError()
            return False

    cdef Py_ssize_t _json_size(self, const Py_ssize_t* hlens, Py_ssize_t n) noexcept nogil:
        """item_json_size of the parsed record cut or padded to `n` columns named by `hlens`:
        '{' '}', commas, and per column "name":"value" escaped."""
        cdef Py_ssize_t total = 1 + n if n else 2, k, nf = self.rec.nfields
        cdef Py_ssize_t kept = n if n < nf else nf, used
        for k in range(n):
            total += hlens[k] + 3  # ':' and the value's quotes
        if kept > 0:  # the kept fields' bytes lie end to end from the buffer's start
            used = self.fends[kept - 1]
            if kept == nf:  # every field kept: `_fields` has counted their escapes
                total += used + self.rec.esc
            else:
                total += used + _escape_extra(<const uchar*> self.fb.data, used)
        return total

    cdef tuple _materialize(self, const Py_ssize_t* hlens, Py_ssize_t nh):
        """The parsed record as (line, fields, error) Python objects (see `_record`)."""
        cdef Py_ssize_t k, prev, nf, width, n
        cdef list fields
        cdef object error
        cdef const char* errors
        nf = self.rec.nfields
        width = self.width
        error = None
        if self.rec.oversized:
            # no fields were kept: the row is as wide as the header, every field empty
            return (self.rec.line, [""] * width if width > 0 else [],
                    record_too_long(self.max_record))
        if self.rec.err_line and self.reparse is not None:
            # Invalid UTF-8: Python decodes each line *before* parsing, so escapes and
            # quotes between bad bytes change the replacement characters; the record's
            # raw lines go through the Python definition instead (rare, exact).
            fields, error = self.reparse(
                PyBytes_FromStringAndSize(self.buf + self.rec_start, self.start - self.rec_start),
                self.rec.line, self.delimiter)
            fields = list(fields)
            nf = len(fields)
            if width >= 0 and nf != width:
                if nf < width:
                    fields.extend([""] * (width - nf))
                    self._padded_at(self.rec.line)
                else:
                    del fields[width:]
                    self._truncated_at(self.rec.line)
            return (self.rec.line, fields, error)
        errors = NULL
        if self.rec.unterminated:
            error = (f"unterminated quoted field (quote opened on line {self.rec.line}, "
                     "never closed)")
        elif self.rec.err_line:
            error = f"invalid UTF-8 at byte {self.rec.err_byte} of line {self.rec.err_line}"
        if self.rec.err_line:
            errors = "replace"
        n = nf
        if width >= 0:
            if nf < width:
                n = width
                self._padded_at(self.rec.line)
            elif nf > width:
                n = width
                self._truncated_at(self.rec.line)
        if hlens != NULL and n == nh and error is None:
            self.last_size = self._json_size(hlens, n)
        fields = PyList_New(n)
        prev = 0
        for k in range(n):
            if k < nf:
                s = PyUnicode_DecodeUTF8(self.fb.data + prev, self.fends[k] - prev, errors)
                prev = self.fends[k]
            else:
                s = ""
            Py_INCREF(s)
            PyList_SET_ITEM(fields, k, s)
        return (self.rec.line, fields, error)

    cdef RowBlock _new_block(self, Py_ssize_t width):
        """An empty block the size of the last one handed out (see `RowBlock.reserve`)."""
        cdef RowBlock blk = RowBlock(width)
        if self.last_rows and blk.reserve(self.last_rows, self.last_bytes + self.last_bytes // 8) < 0:
            raise MemoryError()
        return blk

    cdef int _take(self, RowBlock rows, tuple rec) except -1:
        """Add the record just parsed to `rows`: its bytes, or `rec` when Python built it."""
        if rec is not None:
            return rows.append_fields(rec[0], rec[1])
        if self._take_parsed(rows) < 0:
            raise MemoryError()
        return 0

    cdef int _take_parsed(self, RowBlock rows) noexcept nogil:
        """Add the record just parsed, cut or padded to the width (counted): -1 if
        out of memory."""
        cdef Py_ssize_t nf = self.rec.nfields, w = self.width
        if nf < w:
            self._padded_at(self.rec.line)
        elif nf > w:
            self._truncated_at(self.rec.line)
        return rows.append_parsed(self.rec.line, self.fb.data, self.fends, nf)

    cdef inline void _padded_at(self, long long line) noexcept nogil:
        if self.padded < 8:
            self.pad_lines[self.padded] = line
        self.padded += 1

    cdef inline void _truncated_at(self, long long line) noexcept nogil:
        if self.truncated < 8:
            self.trunc_lines[self.truncated] = line
        self.truncated += 1

    @property
    def padded_lines(self):
        """The first (up to 8) lines read with fewer fields than the header."""
        return [self.pad_lines[i] for i in range(min(self.padded, 8))]

    @property
    def truncated_lines(self):
        """The first (up to 8) lines read with more fields than the header."""
        return [self.trunc_lines[i] for i in range(min(self.truncated, 8))]

    cdef int _ready(self) except -1:
        """Before parsing: the reader is open, and the BOM has been looked for."""
        if self.closed:
            raise ValueError("I/O operation on a closed RecordReader")
        while not self.bom_checked:
            if self.end - self.start < 3 and not self.eof:
                self._fill()
                continue
            self.bom = (self.end - self.start >= 3
                        and memcmp(self.buf + self.start, b"\xef\xbb\xbf", 3) == 0)
            self.bom_checked = True
        return 0

    cdef int _cut(self, RowBlock rows, const Py_ssize_t* hl, Py_ssize_t nh,
                  Py_ssize_t max_items, Py_ssize_t max_bytes, Py_ssize_t base,
                  Py_ssize_t* count, Py_ssize_t* input_bytes, Py_ssize_t* size) noexcept nogil:
        """`read_batch`'s loop for the usual row: parse, size and take records until
        one needs Python (P_PYTHON), does not fit this batch (P_HALT, its size in
        `size`), the buffer runs dry (P_NEED_MORE) or the file ends (P_END)."""
        cdef int rc
        cdef Py_ssize_t n
        while True:
            rc = self._parse()
            if rc != P_RECORD:
                return rc
            if self.rec.err_line or self.rec.unterminated or self.rec.oversized:
                return P_PYTHON
            n = self._json_size(hl, nh)
            if _placement(n, base, max_items, max_bytes, count[0], input_bytes[0]) != IN_BATCH:
                size[0] = n
                return P_HALT
            if self._take_parsed(rows) < 0:
                return P_NOMEM
            input_bytes[0] += n + (1 if count[0] else 0)
            count[0] += 1

    def read_batch(self, Py_ssize_t max_items, Py_ssize_t max_bytes, Py_ssize_t base,
                   header_lens, size_of):
        """The next ItemBatcher batch, cut in C: (rows, input_bytes, problems), or None.

        The same batches as `importer.batching.Batcher` fed row by row: `rows` is
        a `RowBlock` (a sequence of (line, fields) whose fields stay bytes until
        asked for); `input_bytes` the child input's UTF-8 size (`base` is the
        envelope with its BatchInput); `problems` lists, in file order, records
        refused while this batch was open, as (line, fields, error, size):
        `error` set for a record the reader refused, else a row of `size` JSON
        bytes too big for any batch.  `max_items` <= 0: no item limit.
        `header_lens` are the JSON lengths of the header names (the header has
        no repeated names; `width` is its length); `size_of(fields)` gives a
        row's size where C does not know it.  One Python call per batch, not
        per row: the row loop, sizes and limits stay in C.
        """
        cdef Py_ssize_t nh = len(header_lens), k, size = 0, count = 0
        cdef int rc, place
        cdef Py_ssize_t* hl
        cdef Py_ssize_t input_bytes = base
        cdef list problems = []
        cdef tuple rec
        cdef RowBlock rows
        if self.width != nh or nh < 1:
            raise ValueError("read_batch needs width set to the header's length")
        hl = <Py_ssize_t*> malloc(nh * sizeof(Py_ssize_t))
        if hl == NULL:
            raise MemoryError()
        try:
            for k in range(nh):
                hl[k] = header_lens[k]
            if self.pending is not None:
                rows = self.pending
                self.pending = None
                input_bytes += self.pending_size
                count = 1
            else:
                rows = self._new_block(nh)
            while True:
                # the rows nothing unusual happens to are parsed, sized and taken in
                # C without the GIL, a batch at a time; the loop stops for the rest
                self._ready()
                self.last_size = -1
                with nogil:
                    rc = self._cut(rows, hl, nh, max_items, max_bytes, base, &count,
                                   &input_bytes, &size)
                if rc == P_NEED_MORE:
                    self._fill()
                    continue
                if rc == P_NOMEM:
                    raise MemoryError()
                if rc == P_END:
                    break
                if rc == P_PYTHON:
                    # refused, or re-read by Python: as objects (rare)
                    rec = self._materialize(hl, nh)
                    if rec[2] is not None:
                        problems.append((rec[0], rec[1], rec[2], -1))
                        continue
                    size = self.last_size
                    if size < 0:
                        size = size_of(rec[1])
                else:
                    rec = None  # P_HALT: `size` is the row's
                place = _placement(size, base, max_items, max_bytes, count, input_bytes)
                if place == TOO_BIG:
                    if rec is None:
                        rec = self._materialize(hl, nh)
                    problems.append((rec[0], rec[1], None, size))
                    continue
                if place == NEXT_BATCH:
                    self.last_rows = rows.n + 1
                    self.last_bytes = rows.data.len
                    self.pending = self._new_block(nh)
                    self._take(self.pending, rec)
                    self.pending_size = size
                    return (rows, input_bytes, problems)
                input_bytes += size + (1 if count else 0)
                self._take(rows, rec)
                count += 1
        finally:
            free(hl)
        if count or problems:
            return (rows, input_bytes, problems)
        return None


include "_members.pxi"
include "_stored.pxi"
include "_history.pxi"
# ---------------------------------------------------------------------------
# Typed inputs (issue 28): Arrow columns and JSON Lines straight into RowBlocks,
# and the ItemBatcher cut over rows whose sizes are known
#
# Why: a Parquet or JSONL row used to become ten Python strings, a tuple and a
# Batcher.add call before the transform encoded the strings back to UTF-8; here
# the cells are written once, as the bytes the transform reads in place.  A value
# whose type the fast path does not map (a misfit, a nested object, an unusual
# JSON text) is left to the Python reader, which stays the definition.
# ---------------------------------------------------------------------------

cdef enum:
    AC_UTF8 = 0      # Arrow utf8 (int32 offsets)
    AC_LUTF8 = 1     # Arrow large_utf8 (int64 offsets)
    AC_INT = 2       # signed integer of `itemsize` bytes
    AC_UINT = 3      # unsigned integer of `itemsize` bytes
    AC_BOOL = 4      # bit-packed booleans: "true" / "false"
    AC_DATE32 = 5    # days since 1970-01-01: YYYY-MM-DD (years 1000-9999)
    AC_EMPTY = 6     # every cell empty (an all-null column)
    AC_DEC128 = 7    # decimal128, its scale in `itemsize`: plain notation as Arrow writes it


cdef extern from *:
    """
    /* decimal128 (little-endian two's complement) as Arrow's ToString writes it in plain
       notation: -1 when Arrow would use an exponent (scale < 0, or adjusted exponent < -6) */
    static int importer_fmt_dec128(const unsigned char* p, int scale, char* out) {
        unsigned long long lo, hi;
        memcpy(&lo, p, 8); memcpy(&hi, p + 8, 8);
        unsigned __int128 u = ((unsigned __int128) hi << 64) | lo;
        int neg = (hi >> 63) != 0;
        if (neg) u = ~u + 1;
        char dig[48]; int nd = 0, o = 0, i;
        if ((u >> 64) == 0) {  /* nearly always: 64-bit division, not libgcc's 128-bit */
            unsigned long long v = (unsigned long long) u;
            do { dig[nd++] = (char) ('0' + (int) (v % 10)); v /= 10; } while (v);
        } else {
            do { dig[nd++] = (char) ('0' + (int) (u % 10)); u /= 10; } while (u);
        }
        if (scale < 0 || (nd - 1) - scale < -6) return -1;
        if (neg) out[o++] = '-';
        if (nd <= scale) {
            out[o++] = '0'; out[o++] = '.';
            for (i = 0; i < scale - nd; i++) out[o++] = '0';
            for (i = nd - 1; i >= 0; i--) out[o++] = dig[i];
        } else {
            for (i = nd - 1; i >= scale; i--) out[o++] = dig[i];
            if (scale > 0) {
                out[o++] = '.';
                for (i = scale - 1; i >= 0; i--) out[o++] = dig[i];
            }
        }
        return o;
    }
    """
    int importer_fmt_dec128(const uchar* p, int scale, char* out) nogil


cdef struct ACol:
    int mode
    int itemsize
    const uchar* valid   # validity bitmap, NULL: no nulls
    const uchar* offs
    const uchar* data
    Py_ssize_t offset    # the array's offset, in elements


cdef inline const uchar* _buf_ptr(object buf, list keep) except? NULL:
    """A pointer into an Arrow buffer (any buffer-protocol object); NULL for None/empty."""
    cdef const uchar[::1] mv
    if buf is None:
        return NULL
    mv = memoryview(buf).cast("B")
    if mv.shape[0] == 0:
        return NULL
    keep.append(mv)
    return &mv[0]


cdef inline bint _bit(const uchar* bits, Py_ssize_t i) noexcept nogil:
    return (bits[i >> 3] >> (i & 7)) & 1


cdef inline int fmt_ull(unsigned long long u, char* out) noexcept nogil:
    cdef char tmp[24]
    cdef int n = 0, o = 0
    if u == 0:
        out[0] = 48
        return 1
    while u > 0:
        tmp[n] = <char> (48 + u % 10)
        u //= 10
        n += 1
    while n > 0:
        n -= 1
        out[o] = tmp[n]
        o += 1
    return o


cdef inline int fmt_date32(long long days, char* out) noexcept nogil:
    """Days since the epoch as YYYY-MM-DD (H. Hinnant's civil_from_days); -1 outside 1000-9999."""
    cdef long long z = days + 719468, era, doe, yoe, y, doy, mp, d, m
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    if y < 1000 or y > 9999:
        return -1
    out[0] = <char> (48 + y // 1000); out[1] = <char> (48 + y // 100 % 10)
    out[2] = <char> (48 + y // 10 % 10); out[3] = <char> (48 + y % 10)
    out[4] = 45
    out[5] = <char> (48 + m // 10); out[6] = <char> (48 + m % 10)
    out[7] = 45
    out[8] = <char> (48 + d // 10); out[9] = <char> (48 + d % 10)
    return 10


cdef inline long long _int_at(const ACol* c, Py_ssize_t j) noexcept nogil:
    cdef const uchar* p = c.data + j * c.itemsize
    if c.itemsize == 8:
        return (<const long long*> p)[0]
    if c.itemsize == 4:
        return (<const int*> p)[0]
    if c.itemsize == 2:
        return (<const short*> p)[0]
    return (<const signed char*> p)[0]


cdef inline unsigned long long _uint_at(const ACol* c, Py_ssize_t j) noexcept nogil:
    cdef const uchar* p = c.data + j * c.itemsize
    if c.itemsize == 8:
        return (<const unsigned long long*> p)[0]
    if c.itemsize == 4:
        return (<const uint*> p)[0]
    if c.itemsize == 2:
        return (<const ushort*> p)[0]
    return p[0]


def arrow_rows(Py_ssize_t n, long long first_line, list columns):
    """A `RowBlock` of `n` rows, lines `first_line`..., from Arrow column buffers.

    `columns` (one per spec column, in the header's order) are tuples
    `(mode, itemsize, validity, offsets, data, offset)` naming the buffers of a
    pyarrow array (`Array.buffers()`, `Array.offset`), `mode` one of
    `ARROW_MODES` (for `DEC128` `itemsize` is the scale).  A typed value is
    written as the cell the reference reader makes of it (integers in decimal,
    decimals as Arrow's cast to text writes them, booleans `true`/`false`, dates
    `YYYY-MM-DD`), in C, without a Python object per value.  ValueError for a
    date outside years 1000-9999 or a decimal Arrow would write with an exponent
    (the caller then casts that column itself).
    """
    cdef Py_ssize_t w = len(columns), k, total = 0
    cdef list keep = []
    cdef ACol* cols
    cdef RowBlock blk
    cdef int rc
    cdef tuple t
    if w < 1:
        raise ValueError("arrow_rows needs at least one column")
    cols = <ACol*> calloc(w, sizeof(ACol))
    if cols == NULL:
        raise MemoryError()
    try:
        for k in range(w):
            t = columns[k]
            cols[k].mode = t[0]
            cols[k].itemsize = t[1]
            cols[k].valid = _buf_ptr(t[2], keep)
            cols[k].offs = _buf_ptr(t[3], keep)
            cols[k].data = _buf_ptr(t[4], keep)
            cols[k].offset = t[5]
            if cols[k].mode in (AC_UTF8, AC_LUTF8):
                if cols[k].offs == NULL:
                    cols[k].mode = AC_EMPTY
                elif cols[k].mode == AC_UTF8:
                    total += ((<const int*> cols[k].offs)[cols[k].offset + n]
                              - (<const int*> cols[k].offs)[cols[k].offset])
                else:
                    total += ((<const long long*> cols[k].offs)[cols[k].offset + n]
                              - (<const long long*> cols[k].offs)[cols[k].offset])
            elif cols[k].mode != AC_EMPTY:
                if cols[k].data == NULL and n:
                    raise ValueError("a typed column without data")
                total += (96 if cols[k].mode == AC_DEC128 else 20) * n
        blk = RowBlock(w)
        if n and blk.reserve(n, total + 64) < 0:
            raise MemoryError()
        with nogil:
            rc = _arrow_fill_rows(blk, cols, w, 0, n, first_line)
        if rc == -1:
            raise MemoryError()
        if rc == -2:
            raise ValueError("a date outside years 1000-9999")
        if rc == -3:
            raise ValueError("a decimal Arrow writes with an exponent")
        return blk
    finally:
        free(cols)


cdef inline int _arrow_cell(Buf* d, const ACol* c, Py_ssize_t j) noexcept nogil:
    """Element j of column `c` appended to `d` as its cell (nothing for a null): 0, -1
    out of memory, -2 a date out of range, -3 an exponent decimal."""
    cdef Py_ssize_t a, b
    cdef char* out
    cdef int m
    if c.mode == AC_EMPTY or (c.valid != NULL and not _bit(c.valid, j)):
        return 0
    if c.mode == AC_UTF8 or c.mode == AC_LUTF8:
        if c.mode == AC_UTF8:
            a = (<const int*> c.offs)[j]
            b = (<const int*> c.offs)[j + 1]
        else:
            a = (<const long long*> c.offs)[j]
            b = (<const long long*> c.offs)[j + 1]
        if b > a and w_raw(d, <const char*> c.data + a, b - a) < 0:
            return -1
        return 0
    if buf_reserve(d, 96) < 0:
        return -1
    out = d.data + d.len
    if c.mode == AC_DEC128:
        m = importer_fmt_dec128(c.data + j * 16, c.itemsize, out)
        if m < 0:
            return -3
    elif c.mode == AC_INT:
        m = fmt_ll(_int_at(c, j), out)
    elif c.mode == AC_UINT:
        m = fmt_ull(_uint_at(c, j), out)
    elif c.mode == AC_BOOL:
        if _bit(c.data, j):
            memcpy(out, b"true", 4); m = 4
        else:
            memcpy(out, b"false", 5); m = 5
    else:
        m = fmt_date32((<const int*> c.data)[j], out)
        if m < 0:
            return -2
    d.len += m
    return 0


cdef int _arrow_fill_rows(RowBlock blk, ACol* cols, Py_ssize_t w, Py_ssize_t r0,
                          Py_ssize_t r1, long long first_line) noexcept nogil:
    """Rows r0..r1-1 of the columns appended to `blk` (row r is line first_line + r):
    a whole record batch into a fresh block (`arrow_rows`), or a range into the open
    batch's (`take_arrow`).  0, -1 out of memory, -2 a date out of range, -3 an
    exponent decimal.
    """
    cdef Py_ssize_t r, k
    cdef Py_ssize_t* o
    cdef int rc
    cdef Buf* d = &blk.data
    if blk.n + (r1 - r0) > blk.cap and blk.reserve(blk.n + (r1 - r0), 0) < 0:
        return -1
    for r in range(r0, r1):
        o = blk.offs + blk.n * (w + 1)
        o[0] = d.len
        for k in range(w):
            rc = _arrow_cell(d, &cols[k], cols[k].offset + r)
            if rc < 0:
                return rc
            o[k + 1] = d.len
        blk.lines[blk.n] = first_line + r
        blk.n += 1
    return 0


cdef int _arrow_columns(list columns, ACol* cols, Py_ssize_t n, list keep) except -1:
    """`columns` (as `arrow_rows` takes them) into `cols`; `keep` holds their buffers."""
    cdef Py_ssize_t k
    cdef tuple t
    for k in range(len(columns)):
        t = columns[k]
        cols[k].mode = t[0]
        cols[k].itemsize = t[1]
        cols[k].valid = _buf_ptr(t[2], keep)
        cols[k].offs = _buf_ptr(t[3], keep)
        cols[k].data = _buf_ptr(t[4], keep)
        cols[k].offset = t[5]
        if cols[k].mode in (AC_UTF8, AC_LUTF8):
            if cols[k].offs == NULL:
                cols[k].mode = AC_EMPTY
        elif cols[k].mode != AC_EMPTY and cols[k].data == NULL and n:
            raise ValueError("a typed column without data")
    return 0


cdef int _arrow_check(const ACol* c, Py_ssize_t r0, Py_ssize_t n) noexcept nogil:
    """-2 when a value of rows r0..n-1 of column `c` is a date `fmt_date32` refuses, -3
    a decimal `importer_fmt_dec128` refuses (scale > 6 only: below, never), else 0."""
    cdef Py_ssize_t r, j
    cdef int days
    cdef char tmp[96]
    if c.mode == AC_DATE32:
        for r in range(r0, n):
            j = c.offset + r
            if c.valid != NULL and not _bit(c.valid, j):
                continue
            days = (<const int*> c.data)[j]
            if days < _DATE32_MIN or days > _DATE32_MAX:
                return -2
    elif c.mode == AC_DEC128 and c.itemsize > 6:
        for r in range(r0, n):
            j = c.offset + r
            if c.valid != NULL and not _bit(c.valid, j):
                continue
            if importer_fmt_dec128(c.data + j * 16, c.itemsize, tmp) < 0:
                return -3
    return 0


#: the days since 1970-01-01 of 1000-01-01 and 9999-12-31: the dates `fmt_date32` writes
cdef int _DATE32_MIN = -354285
cdef int _DATE32_MAX = 2932896


def _arrow_rc(int rc):
    if rc == -1:
        raise MemoryError()
    if rc == -2:
        raise ValueError("a date outside years 1000-9999")
    if rc == -3:
        raise ValueError("a decimal Arrow writes with an exponent")


@cython.final
cdef class BatchCutter:
    """ItemBatcher's cut (`batching.Batcher.add`) over rows whose JSON sizes are known.

    `take` moves rows of a source `RowBlock` into the open batch's block, in C;
    a batch closes when the next row would not fit, as in `Batcher.add`, and
    comes out as `(rows, input_bytes, problems)` (what `RecordReader.read_batch`
    returns).  `problems` are what `problem` was given while the batch was open
    (any object: the reader's own rejects) and `(line, fields, None, size)` for
    a row too big for any batch.
    """

    cdef readonly Py_ssize_t width
    cdef Py_ssize_t max_items, max_bytes, base
    cdef RowBlock rows
    cdef Py_ssize_t count, input_bytes
    cdef list problems
    cdef Py_ssize_t last_rows, last_bytes

    def __init__(self, Py_ssize_t width, Py_ssize_t max_items, Py_ssize_t max_bytes,
                 Py_ssize_t base):
        if width < 1:
            raise ValueError("a BatchCutter needs at least one column")
        self.width = width
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.base = base
        self.last_rows = 0
        self.last_bytes = 0
        self._open()

    cdef int _open(self) except -1:
        self.rows = RowBlock(self.width)
        if self.last_rows and self.rows.reserve(
                self.last_rows, self.last_bytes + self.last_bytes // 8) < 0:
            raise MemoryError()
        self.count = 0
        self.input_bytes = self.base
        self.problems = []
        return 0

    cdef tuple _close(self):
        cdef tuple out = (self.rows, self.input_bytes, self.problems)
        self.last_rows = self.rows.n
        self.last_bytes = self.rows.data.len
        self._open()
        return out

    cdef int _copy(self, RowBlock src, Py_ssize_t r) except -1:
        cdef Py_ssize_t w = self.width, k, base
        cdef Py_ssize_t* so
        cdef Py_ssize_t* do
        cdef RowBlock dst = self.rows
        if not src.in_buffer(r):
            return dst.append_fields(src.lines[r], list(src.py_rows[r]))
        if dst.n >= dst.cap and dst._grow() < 0:
            raise MemoryError()
        so = src.offs + r * (w + 1)
        base = dst.data.len
        if w_raw(&dst.data, src.data.data + so[0], so[w] - so[0]) < 0:
            raise MemoryError()
        do = dst.offs + dst.n * (w + 1)
        for k in range(w + 1):
            do[k] = base + (so[k] - so[0])
        dst.lines[dst.n] = src.lines[r]
        dst.n += 1
        return 0

    def take(self, RowBlock src, const long long[::1] sizes, Py_ssize_t start,
             Py_ssize_t end):
        """Rows `start`..`end` of `src` (`sizes[r]`: row r's JSON size); the batches
        that closed meanwhile."""
        cdef list closed = []
        cdef Py_ssize_t r, size
        cdef int place
        if src.width != self.width:
            raise ValueError("the block's width is not the cutter's")
        if start < 0 or end > src.n or end > sizes.shape[0]:
            raise IndexError("rows out of range")
        for r in range(start, end):
            size = sizes[r]
            place = _placement(size, self.base, self.max_items, self.max_bytes, self.count,
                               self.input_bytes)
            if place == TOO_BIG:
                self.problems.append((src.lines[r], src.fields_list(r), None, size))
                continue
            if place == NEXT_BATCH:
                closed.append(self._close())
            self._copy(src, r)
            self.input_bytes += size + (1 if self.count else 0)
            self.count += 1
        return closed

    def take_row(self, long long line, list fields, Py_ssize_t size):
        """One row built in Python (`width` strings); the batch it closed, or None."""
        cdef tuple out = None
        cdef int place = _placement(size, self.base, self.max_items, self.max_bytes,
                                    self.count, self.input_bytes)
        if place == TOO_BIG:
            self.problems.append((line, fields, None, size))
            return None
        if place == NEXT_BATCH:
            out = self._close()
        self.rows.append_fields(line, fields)
        self.input_bytes += size + (1 if self.count else 0)
        self.count += 1
        return out

    def take_arrow(self, Py_ssize_t n, long long first_line, list columns,
                   const long long[::1] sizes, Py_ssize_t start, Py_ssize_t end):
        """`take` of rows `start`..`end` of Arrow columns, written straight into the
        open batch: `arrow_rows` and `take` in one pass, no block in between.

        `columns` as `arrow_rows` takes them (`n` rows each, one per spec column),
        row r being line `first_line + r`.  Why: the block of a whole record batch
        was written once by `arrow_rows` and copied again, row by row, into each
        batch; here each cell is written once, and without the GIL (the rows of a
        run that joins one batch at a time).  ValueError as `arrow_rows` gives it
        (a date or decimal it cannot write): the caller checks those first
        (`arrow_sizes` refuses the same values), as the rows before it are taken.
        """
        cdef Py_ssize_t w = len(columns), r, run, size = 0
        cdef Py_ssize_t count = self.count, input_bytes = self.input_bytes
        cdef Py_ssize_t base = self.base, max_items = self.max_items, max_bytes = self.max_bytes
        cdef list keep = []
        cdef list closed = []
        cdef ACol* cols
        cdef RowBlock dst, one
        cdef int place = IN_BATCH, rc = 0
        if w != self.width:
            raise ValueError("the columns are not the cutter's width")
        if start < 0 or start > end or end > n or end > sizes.shape[0]:
            raise IndexError("rows out of range")
        cols = <ACol*> calloc(w if w else 1, sizeof(ACol))
        if cols == NULL:
            raise MemoryError()
        try:
            _arrow_columns(columns, cols, n, keep)
            r = start
            while r < end:
                run = r
                dst = self.rows
                with nogil:
                    while r < end:
                        size = sizes[r]
                        place = _placement(size, base, max_items, max_bytes, count, input_bytes)
                        if place != IN_BATCH:
                            break
                        input_bytes += size + (1 if count else 0)
                        count += 1
                        r += 1
                    rc = _arrow_fill_rows(dst, cols, w, run, r, first_line)
                self.count = count
                self.input_bytes = input_bytes
                _arrow_rc(rc)
                if r == end:
                    break
                if place == TOO_BIG:
                    one = RowBlock(w)
                    _arrow_rc(_arrow_fill_rows(one, cols, w, r, r + 1, first_line))
                    self.problems.append((first_line + r, one.fields_list(0), None, size))
                    r += 1
                    continue
                closed.append(self._close())  # NEXT_BATCH: row r opens the next one
                count = self.count
                input_bytes = self.input_bytes
            return closed
        finally:
            free(cols)

    def take_arrow_sized(self, Py_ssize_t n, long long first_line, list columns,
                         list sizing, Py_ssize_t fixed, extra=None, Py_ssize_t start=0,
                         end=None, bint check=True):
        """`take_arrow` of all `n` rows, each row's JSON size measured as its cells are
        written (`arrow_sizes` and `take_arrow` in one pass).

        `sizing` holds one entry per column of the item (every column of the file):
        `arrow_sizes`' tuple and one more entry, `link`: the index of the spec column
        in `columns` made from the same buffers, whose written cell gives the size
        (`null` for a null; a quoted text's escapes counted on the cell), or -1 to
        measure the column from its own buffers.  `fixed` and `extra` as
        `arrow_sizes` takes them; rows `start`..`end` (default all `n`), so a record
        batch can be taken a few thousand rows at a time and its first batches go
        out before the rest are cut.  Why: the separate sizing pass read every value a
        second time and wrote every number twice (per 100,000 benchmark rows ~12 ms,
        near half of what cutting them cost).  `check`: ValueError as `arrow_sizes`
        gives it before any row is taken, for any of rows `start`..`n` (every date
        and scale > 6 decimal is checked first) -- the first call for a record batch
        checks it whole, the later ones need not.
        """
        cdef Py_ssize_t w = len(columns), ws = len(sizing), r = start, k, j, s0, length
        cdef Py_ssize_t stop = n if end is None else end
        cdef Py_ssize_t count = self.count, input_bytes = self.input_bytes
        cdef Py_ssize_t base = self.base, max_items = self.max_items, max_bytes = self.max_bytes
        cdef list keep = []
        cdef list closed = []
        cdef ACol* cols = NULL
        cdef ACol* scols = NULL
        cdef int* quoted = NULL
        cdef int* link = NULL
        cdef Py_ssize_t* keys = NULL
        cdef const long long[::1] ex
        cdef const long long* exp = NULL
        cdef long long size = 0, v
        cdef Py_ssize_t* o
        cdef RowBlock dst, one, scratch
        cdef Buf* d
        cdef bint direct
        cdef int place = IN_BATCH, rc = 0
        cdef tuple t
        if w != self.width:
            raise ValueError("the columns are not the cutter's width")
        if start < 0 or start > stop or stop > n:
            raise IndexError("rows out of range")
        if extra is not None:
            ex = memoryview(extra).cast("B").cast("q")
            if ex.shape[0] < n:
                raise ValueError("extra holds fewer rows than n")
            if n:
                exp = &ex[0]
        cols = <ACol*> calloc(w + 1, sizeof(ACol))
        scols = <ACol*> calloc(ws + 1, sizeof(ACol))
        quoted = <int*> calloc(ws + 1, sizeof(int))
        link = <int*> calloc(ws + 1, sizeof(int))
        keys = <Py_ssize_t*> calloc(ws + 1, sizeof(Py_ssize_t))
        try:
            if cols == NULL or scols == NULL or quoted == NULL or link == NULL or keys == NULL:
                raise MemoryError()
            _arrow_columns(columns, cols, n, keep)
            _arrow_columns([tuple(e[:6]) for e in sizing], scols, n, keep)
            for k in range(ws):
                t = sizing[k]
                quoted[k] = 1 if t[6] else 0
                keys[k] = t[7]
                link[k] = t[8]
                if not -1 <= link[k] < w:
                    raise ValueError("a sizing link names no column")
            if check:
                with nogil:  # what could fail midway fails here, before any row is taken
                    for k in range(w):
                        rc = _arrow_check(&cols[k], start, n)
                        if rc < 0:
                            break
                    if rc == 0:
                        for k in range(ws):
                            if link[k] < 0:
                                rc = _arrow_check(&scols[k], start, n)
                                if rc < 0:
                                    break
                _arrow_rc(rc)
            scratch = RowBlock(w)
            if scratch.reserve(1, 0) < 0:
                raise MemoryError()
            while r < stop:
                dst = self.rows
                with nogil:
                    while r < stop:
                        # a row the batch has no room for is written aside: most such
                        # rows open the next batch, and growing the block for them
                        # doubled its buffers once a batch
                        direct = dst.n < dst.cap
                        if direct:
                            d = &dst.data
                            o = dst.offs + dst.n * (w + 1)
                        else:
                            d = &scratch.data
                            d.len = 0
                            o = scratch.offs
                        o[0] = d.len
                        for k in range(w):
                            rc = _arrow_cell(d, &cols[k], cols[k].offset + r)
                            if rc < 0:
                                break
                            o[k + 1] = d.len
                        if rc < 0:
                            break
                        size = fixed + (exp[r] if exp != NULL else 0)
                        for k in range(ws):
                            j = link[k]
                            if j < 0:
                                v = _arrow_value_size(&scols[k], quoted[k], scols[k].offset + r)
                            elif cols[j].mode == AC_EMPTY or (
                                    cols[j].valid != NULL
                                    and not _bit(cols[j].valid, cols[j].offset + r)):
                                v = 4  # null
                            else:
                                s0 = o[j]
                                length = o[j + 1] - s0
                                v = length
                                if quoted[k]:
                                    v += 2 + _escape_extra(<const uchar*> d.data + s0, length)
                                elif cols[j].mode == AC_DATE32:
                                    v += 2
                            size += keys[k] + v
                        place = _placement(size, base, max_items, max_bytes, count, input_bytes)
                        if place != IN_BATCH:
                            if direct:
                                d.len = o[0]  # not this batch's: its cells go
                            break
                        if not direct:
                            if dst._grow() < 0:
                                rc = -1
                                break
                            s0 = dst.data.len
                            if w_raw(&dst.data, d.data, d.len) < 0:
                                rc = -1
                                break
                            for k in range(w + 1):
                                dst.offs[dst.n * (w + 1) + k] = s0 + o[k]
                        dst.lines[dst.n] = first_line + r
                        dst.n += 1
                        input_bytes += size + (1 if count else 0)
                        count += 1
                        r += 1
                self.count = count
                self.input_bytes = input_bytes
                _arrow_rc(rc)
                if r == stop:
                    break
                if place == TOO_BIG:
                    one = RowBlock(w)
                    _arrow_rc(_arrow_fill_rows(one, cols, w, r, r + 1, first_line))
                    self.problems.append((first_line + r, one.fields_list(0), None, size))
                    r += 1
                    continue
                closed.append(self._close())  # NEXT_BATCH: row r opens the next one
                count = self.count
                input_bytes = self.input_bytes
            return closed
        finally:
            free(cols); free(scols); free(quoted); free(link); free(keys)

    def problem(self, obj) -> None:
        """A row refused before batching: it belongs to the batch open now."""
        self.problems.append(obj)

    def flush(self):
        """The last batch, or None when nothing is open."""
        if self.count or self.problems:
            return self._close()
        return None


#: `arrow_rows`' column modes
ARROW_MODES = {
    "UTF8": AC_UTF8, "LARGE_UTF8": AC_LUTF8, "INT": AC_INT, "UINT": AC_UINT,
    "BOOL": AC_BOOL, "DATE32": AC_DATE32, "EMPTY": AC_EMPTY, "DEC128": AC_DEC128,
}


# -- JSON Lines -------------------------------------------------------------------------
#
# A line is taken in C when it is one compact JSON object (no whitespace between
# tokens, none of `items.LOOSE`'s pairs anywhere: its size is then its length) whose
# spec columns hold strings, nulls, and numbers/booleans where the column takes them.
# Every other line -- invalid JSON or UTF-8, not an object, a misfit, a nested value
# in a spec column, a repeated spec key, `-0`, a lone surrogate, deep nesting -- goes
# to the Python reader, which is the definition of what it becomes.

cdef enum:
    JK_TEXT = 0      # string, date, datetime: strings only
    JK_NUMBER = 1    # integer, decimal: strings and numbers
    JK_BOOL = 2      # boolean: strings and booleans
    JK_JSON = 3      # json: strings (an object or array goes to Python)
    JK_ANY = 4       # a column only templates read: any scalar

cdef enum:
    JL_ROW = 0
    JL_BLANK = 1
    JL_PYTHON = 2
    JL_NOMEM = 3

JSONL_KINDS = {
    "string": JK_TEXT, "date": JK_TEXT, "datetime": JK_TEXT, "integer": JK_NUMBER,
    "decimal": JK_NUMBER, "boolean": JK_BOOL, "json": JK_JSON, "template": JK_ANY,
}

#: the longest integer literal taken in C (Python's int() refuses over 4300 digits)
cdef Py_ssize_t _JL_MAX_INT_DIGITS = 4000
#: nesting taken in C in values the spec does not read (Python's parser recurses)
cdef int _JL_MAX_DEPTH = 64


cdef inline bint _jl_ws(uchar c) noexcept nogil:
    return c == 32 or c == 9 or c == 10 or c == 13


cdef inline bint _jl_blank(uchar c) noexcept nogil:
    return c == 32 or c == 9 or c == 10 or c == 13 or c == 11 or c == 12


cdef inline int _hex4(const uchar* p) noexcept nogil:
    cdef int v = 0, i, c
    for i in range(4):
        c = p[i]
        if 48 <= c <= 57:
            v = v * 16 + c - 48
        elif 97 <= c <= 102:
            v = v * 16 + c - 87
        elif 65 <= c <= 70:
            v = v * 16 + c - 55
        else:
            return -1
    return v


cdef inline bint _loose_pair(uchar a, uchar b) noexcept nogil:
    """`items.LOOSE`: a structural character next to whitespace, in either order."""
    if (a == 91 or a == 123 or a == 44 or a == 58) and _jl_ws(b):
        return True
    return _jl_ws(a) and (b == 93 or b == 125 or b == 44 or b == 58)


cdef Py_ssize_t _jl_string(const uchar* s, Py_ssize_t i, Py_ssize_t n, Buf* out) noexcept nogil:
    """The string at s[i] == '"': its end (after the quote), its UTF-8 decoded into
    `out` (NULL: only checked); -1: Python's (bad JSON, bad UTF-8, a lone surrogate,
    a LOOSE pair), -2: out of memory."""
    cdef Py_ssize_t j = i + 1, run
    cdef uchar c, e
    cdef int u, lo
    cdef char tmp[4]
    cdef int m
    while j < n:
        run = j
        while j < n:
            c = s[j]
            if c == 34 or c == 92 or c < 32 or c >= 128:
                break
            if j > run and _loose_pair(s[j - 1], c):
                return -1
            j += 1
        if j > run and _loose_pair(s[j - 1], s[j] if j < n else 0):
            return -1
        if out != NULL and j > run and w_raw(out, <const char*> s + run, j - run) < 0:
            return -2
        if j >= n:
            return -1
        c = s[j]
        if c == 34:
            return j + 1
        if c < 32:
            return -1
        if c >= 128:
            run = j
            while j < n and s[j] >= 128:
                j += 1
            if utf8_first_error(s + run, j - run) >= 0:
                return -1
            if out != NULL and w_raw(out, <const char*> s + run, j - run) < 0:
                return -2
            continue
        # an escape
        if j + 1 >= n:
            return -1
        e = s[j + 1]
        if e == 117:  # \uXXXX
            if j + 6 > n:
                return -1
            u = _hex4(s + j + 2)
            if u < 0:
                return -1
            j += 6
            if 0xD800 <= u <= 0xDBFF:
                if j + 6 > n or s[j] != 92 or s[j + 1] != 117:
                    return -1
                lo = _hex4(s + j + 2)
                if lo < 0xDC00 or lo > 0xDFFF:
                    return -1
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00)
                j += 6
            elif 0xDC00 <= u <= 0xDFFF:
                return -1
            if out != NULL:
                if u < 0x80:
                    tmp[0] = <char> u; m = 1
                elif u < 0x800:
                    tmp[0] = <char> (0xC0 | (u >> 6)); tmp[1] = <char> (0x80 | (u & 0x3F)); m = 2
                elif u < 0x10000:
                    tmp[0] = <char> (0xE0 | (u >> 12)); tmp[1] = <char> (0x80 | ((u >> 6) & 0x3F))
                    tmp[2] = <char> (0x80 | (u & 0x3F)); m = 3
                else:
                    tmp[0] = <char> (0xF0 | (u >> 18)); tmp[1] = <char> (0x80 | ((u >> 12) & 0x3F))
                    tmp[2] = <char> (0x80 | ((u >> 6) & 0x3F)); tmp[3] = <char> (0x80 | (u & 0x3F))
                    m = 4
                if w_raw(out, tmp, m) < 0:
                    return -2
            continue
        if e == 34 or e == 92 or e == 47:
            tmp[0] = <char> e
        elif e == 98:
            tmp[0] = 8
        elif e == 102:
            tmp[0] = 12
        elif e == 110:
            tmp[0] = 10
        elif e == 114:
            tmp[0] = 13
        elif e == 116:
            tmp[0] = 9
        else:
            return -1
        if out != NULL and w_raw(out, tmp, 1) < 0:
            return -2
        j += 2
    return -1


cdef Py_ssize_t _jl_number(const uchar* s, Py_ssize_t i, Py_ssize_t n, bint* is_int) noexcept nogil:
    """The end of the JSON number at s[i] (Python's NUMBER_RE), or -1."""
    cdef Py_ssize_t j = i, d
    if j < n and s[j] == 45:
        j += 1
    if j >= n or not is_digit(s[j]):
        return -1
    if s[j] == 48:
        j += 1
    else:
        while j < n and is_digit(s[j]):
            j += 1
    is_int[0] = True
    if j + 1 < n and s[j] == 46 and is_digit(s[j + 1]):
        is_int[0] = False
        j += 1
        while j < n and is_digit(s[j]):
            j += 1
    if j < n and (s[j] == 101 or s[j] == 69):
        d = j + 1
        if d < n and (s[d] == 43 or s[d] == 45):
            d += 1
        if d < n and is_digit(s[d]):
            is_int[0] = False
            j = d
            while j < n and is_digit(s[j]):
                j += 1
    return j


cdef Py_ssize_t _jl_skip(const uchar* s, Py_ssize_t i, Py_ssize_t n, int depth) noexcept nogil:
    """The end of the (compact) JSON value at s[i], checked as Python's parser would; -1."""
    cdef Py_ssize_t j
    cdef bint is_int
    cdef uchar c
    if i >= n or depth > _JL_MAX_DEPTH:
        return -1
    c = s[i]
    if c == 34:
        return _jl_string(s, i, n, NULL)
    if c == 45 or is_digit(c):
        j = _jl_number(s, i, n, &is_int)
        if j > 0 and is_int and j - i > _JL_MAX_INT_DIGITS:
            return -1
        return j
    if c == 116:
        return i + 4 if i + 4 <= n and memcmp(s + i, b"true", 4) == 0 else -1
    if c == 102:
        return i + 5 if i + 5 <= n and memcmp(s + i, b"false", 5) == 0 else -1
    if c == 110:
        return i + 4 if i + 4 <= n and memcmp(s + i, b"null", 4) == 0 else -1
    if c == 91:
        j = i + 1
        if j < n and s[j] == 93:
            return j + 1
        while True:
            j = _jl_skip(s, j, n, depth + 1)
            if j < 0 or j >= n:
                return -1
            if s[j] == 93:
                return j + 1
            if s[j] != 44:
                return -1
            j += 1
    if c == 123:
        j = i + 1
        if j < n and s[j] == 125:
            return j + 1
        while True:
            if j >= n or s[j] != 34:
                return -1
            j = _jl_string(s, j, n, NULL)
            if j < 0 or j >= n or s[j] != 58:
                return -1
            j = _jl_skip(s, j + 1, n, depth + 1)
            if j < 0 or j >= n:
                return -1
            if s[j] == 125:
                return j + 1
            if s[j] != 44:
                return -1
            j += 1
    return -1


cdef struct JlPlan:
    Py_ssize_t width
    const char** names
    Py_ssize_t* name_lens
    int* kinds
    Py_ssize_t* cell_at      # per column: start in `cells`, -1: not seen
    Py_ssize_t* cell_len
    Buf key
    Buf cells
    Buf fb
    Py_ssize_t* fends


cdef int _jl_line(JlPlan* pl, RowBlock blk, const uchar* s, Py_ssize_t n, long long line,
                  Py_ssize_t* size) noexcept nogil:
    """One line (without its newline) into `blk`: JL_ROW (size set), JL_BLANK, JL_PYTHON."""
    cdef Py_ssize_t a = 0, b = n, j, k, end, w = pl.width
    cdef bint is_int
    cdef uchar c
    while a < b and _jl_blank(s[a]):
        a += 1
    if a == b:
        return JL_BLANK
    while b > a and _jl_blank(s[b - 1]):
        b -= 1
    if s[a] != 123:
        return JL_PYTHON  # not an object
    for j in range(a):
        if not _jl_ws(s[j]):
            return JL_PYTHON  # \v or \f around it: not JSON whitespace
    for j in range(b, n):
        if not _jl_ws(s[j]):
            return JL_PYTHON
    for k in range(w):
        pl.cell_at[k] = -1
    pl.cells.len = 0
    j = a + 1
    if j < b and s[j] == 125:
        j += 1
    else:
        while True:
            if j >= b or s[j] != 34:
                return JL_PYTHON
            pl.key.len = 0
            end = _jl_string(s, j, b, &pl.key)
            if end == -2:
                return JL_NOMEM
            if end < 0 or end >= b or s[end] != 58:
                return JL_PYTHON
            j = end + 1
            for k in range(w):
                if (pl.name_lens[k] == pl.key.len
                        and memcmp(pl.names[k], pl.key.data, pl.key.len) == 0):
                    break
            else:
                k = -1
            if k < 0:
                j = _jl_skip(s, j, b, 1)
                if j < 0:
                    return JL_PYTHON
            else:
                if pl.cell_at[k] >= 0 or j >= b:
                    return JL_PYTHON  # a repeated spec key: Python keeps the last
                c = s[j]
                pl.cell_at[k] = pl.cells.len
                if c == 34:
                    end = _jl_string(s, j, b, &pl.cells)
                    if end == -2:
                        return JL_NOMEM
                elif c == 110:
                    end = j + 4 if j + 4 <= b and memcmp(s + j, b"null", 4) == 0 else -1
                elif c == 116 or c == 102:
                    if pl.kinds[k] != JK_BOOL and pl.kinds[k] != JK_ANY:
                        return JL_PYTHON
                    end = _jl_skip(s, j, b, 1)
                    if end > 0 and w_raw(&pl.cells, <const char*> s + j, end - j) < 0:
                        return JL_NOMEM
                elif c == 45 or is_digit(c):
                    if pl.kinds[k] != JK_NUMBER and pl.kinds[k] != JK_ANY:
                        return JL_PYTHON
                    end = _jl_number(s, j, b, &is_int)
                    if end > 0 and is_int and (end - j > _JL_MAX_INT_DIGITS
                                               or (s[j] == 45 and s[j + 1] == 48)):
                        return JL_PYTHON  # Python's int(): -0 is 0
                    if end > 0 and w_raw(&pl.cells, <const char*> s + j, end - j) < 0:
                        return JL_NOMEM
                else:
                    return JL_PYTHON  # an object or array in a spec column
                if end < 0:
                    return JL_PYTHON
                pl.cell_len[k] = pl.cells.len - pl.cell_at[k]
                j = end
            if j >= b:
                return JL_PYTHON
            if s[j] == 125:
                j += 1
                break
            if s[j] != 44:
                return JL_PYTHON
            j += 1
    if j != b:
        return JL_PYTHON
    # the row, in the header's order
    pl.fb.len = 0
    for k in range(w):
        if pl.cell_at[k] >= 0 and pl.cell_len[k]:
            if w_raw(&pl.fb, pl.cells.data + pl.cell_at[k], pl.cell_len[k]) < 0:
                return JL_NOMEM
        pl.fends[k] = pl.fb.len
    if blk.append_parsed(line, pl.fb.data, pl.fends, w) < 0:
        return JL_NOMEM
    size[0] = b - a
    return JL_ROW


def jsonl_rows(bytes chunk, long long first_line, list names, list kinds):
    """The lines of `chunk` (whole lines; the last may lack its newline) as rows.

    Returns `(rows, sizes, others, lines)`: `rows` a `RowBlock` of the lines
    taken in C (the spec's columns `names`, typed by `kinds` -- `JSONL_KINDS`'
    values), `sizes` their JSON sizes (int64 bytes), `others` the lines left to
    Python as `(index, line, raw)` -- `index` the row of `rows` they come before,
    `raw` without its newline --, and `lines` how many lines the chunk held.
    Blank lines are skipped.
    """
    cdef Py_ssize_t w = len(names), k, n = len(chunk), i = 0, e, size, cap = 0, nr = 0
    cdef Py_ssize_t no = 0, ocap = 0
    cdef const uchar* s = <const uchar*> PyBytes_AS_STRING(chunk)
    cdef long long line = first_line
    cdef long long* sizes = NULL
    cdef Py_ssize_t* others = NULL   # triples: index, start, end
    cdef long long* other_lines = NULL
    cdef void* p
    cdef JlPlan pl
    cdef RowBlock blk
    cdef int rc = JL_ROW
    cdef list keep = list(names)
    cdef list out_others
    if w < 1 or len(kinds) != w:
        raise ValueError("jsonl_rows needs one kind per name, at least one")
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
        cap = 256
        for i in range(min(n, 1 << 16)):
            if s[i] == 10:
                cap += 1
        if blk.reserve(cap, n + 64) < 0:
            raise MemoryError()
        sizes = <long long*> malloc(cap * sizeof(long long))
        if sizes == NULL:
            raise MemoryError()
        i = 0
        with nogil:
            while i < n:
                p = memchr(s + i, 10, n - i)
                e = (<const uchar*> p) - s if p != NULL else n
                line += 1
                rc = _jl_line(&pl, blk, s + i, e - i, line, &size)
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
                elif rc == JL_PYTHON:
                    if no >= ocap:
                        ocap = ocap * 2 if ocap else 16
                        p = realloc(others, ocap * 3 * sizeof(Py_ssize_t))
                        if p == NULL:
                            rc = JL_NOMEM
                            break
                        others = <Py_ssize_t*> p
                        p = realloc(other_lines, ocap * sizeof(long long))
                        if p == NULL:
                            rc = JL_NOMEM
                            break
                        other_lines = <long long*> p
                    others[3 * no] = blk.n
                    others[3 * no + 1] = i
                    others[3 * no + 2] = e
                    other_lines[no] = line
                    no += 1
                i = e + 1
        if rc == JL_NOMEM:
            raise MemoryError()
        out_others = [
            (others[3 * k], other_lines[k],
             PyBytes_FromStringAndSize(<const char*> s + others[3 * k + 1],
                                       others[3 * k + 2] - others[3 * k + 1]))
            for k in range(no)
        ]
        return (blk, PyBytes_FromStringAndSize(<const char*> sizes, nr * sizeof(long long)),
                out_others, line - first_line)
    finally:
        free(pl.names); free(pl.name_lens); free(pl.kinds); free(pl.cell_at)
        free(pl.cell_len); free(pl.fends)
        free(pl.key.data); free(pl.cells.data); free(pl.fb.data)
        free(sizes); free(others); free(other_lines)


cdef inline long long _arrow_value_size(const ACol* c, bint quoted, Py_ssize_t j) noexcept nogil:
    """The JSON size of element j of column `c` (`null` for a null): -2 a date out of
    range, -3 an exponent decimal."""
    cdef Py_ssize_t a, b
    cdef char tmp[96]
    cdef int m
    if c.mode == AC_EMPTY or (c.valid != NULL and not _bit(c.valid, j)):
        return 4  # null
    if c.mode == AC_UTF8 or c.mode == AC_LUTF8:
        if c.mode == AC_UTF8:
            a = (<const int*> c.offs)[j]
            b = (<const int*> c.offs)[j + 1]
        else:
            a = (<const long long*> c.offs)[j]
            b = (<const long long*> c.offs)[j + 1]
        if quoted:
            return b - a + 2 + (_escape_extra(c.data + a, b - a) if b > a else 0)
        return b - a
    if c.mode == AC_INT:
        return fmt_ll(_int_at(c, j), tmp)
    if c.mode == AC_UINT:
        return fmt_ull(_uint_at(c, j), tmp)
    if c.mode == AC_BOOL:
        return 4 if _bit(c.data, j) else 5
    if c.mode == AC_DEC128:
        m = importer_fmt_dec128(c.data + j * 16, c.itemsize, tmp)
        return -3 if m < 0 else m
    if fmt_date32((<const int*> c.data)[j], tmp) < 0:
        return -2
    return 12  # "YYYY-MM-DD"


cdef int _arrow_size_fill(ACol* cols, const int* quoted, const Py_ssize_t* keys, Py_ssize_t w,
                          Py_ssize_t n, Py_ssize_t fixed, const long long* extra,
                          long long* out) noexcept nogil:
    """Each row's compact JSON size: 0, -2 a date out of range, -3 an exponent decimal."""
    cdef Py_ssize_t r, k
    cdef long long size, v
    for r in range(n):
        size = fixed + (extra[r] if extra != NULL else 0)
        for k in range(w):
            v = _arrow_value_size(&cols[k], quoted[k], cols[k].offset + r)
            if v < 0:
                return <int> v
            size += keys[k] + v
        out[r] = size
    return 0


def arrow_sizes(Py_ssize_t n, Py_ssize_t fixed, list columns, extra=None):
    """Each row's compact JSON size (int64 bytes) from Arrow column buffers.

    `columns` as for `arrow_rows`, each with two more entries: `quoted` (a text
    column written as a JSON string, escaped and quoted; else as its text, a
    number) and the bytes its key adds (`"name":`).  A null is `null`; a date
    `"YYYY-MM-DD"`.  `fixed` is the braces and commas; `extra` (int64 buffer or
    None) sizes the caller measured itself, added per row.
    """
    cdef Py_ssize_t w = len(columns), k
    cdef list keep = []
    cdef ACol* cols = NULL
    cdef int* quoted = NULL
    cdef Py_ssize_t* keys = NULL
    cdef const long long[::1] ex
    cdef const long long* exp = NULL
    cdef bytearray out = bytearray(n * sizeof(long long))
    cdef long long* op = <long long*> (<char*> out) if n else NULL
    cdef int rc = 0
    cdef tuple t
    if extra is not None:
        ex = memoryview(extra).cast("B").cast("q")
        if ex.shape[0] < n:
            raise ValueError("extra holds fewer rows than n")
        if n:
            exp = &ex[0]
    cols = <ACol*> calloc(w + 1, sizeof(ACol))
    quoted = <int*> calloc(w + 1, sizeof(int))
    keys = <Py_ssize_t*> calloc(w + 1, sizeof(Py_ssize_t))
    try:
        if cols == NULL or quoted == NULL or keys == NULL:
            raise MemoryError()
        for k in range(w):
            t = columns[k]
            cols[k].mode = t[0]
            cols[k].itemsize = t[1]
            cols[k].valid = _buf_ptr(t[2], keep)
            cols[k].offs = _buf_ptr(t[3], keep)
            cols[k].data = _buf_ptr(t[4], keep)
            cols[k].offset = t[5]
            quoted[k] = 1 if t[6] else 0
            keys[k] = t[7]
            if cols[k].mode in (AC_UTF8, AC_LUTF8) and cols[k].offs == NULL:
                cols[k].mode = AC_EMPTY
            elif cols[k].mode not in (AC_UTF8, AC_LUTF8, AC_EMPTY) and cols[k].data == NULL and n:
                raise ValueError("a typed column without data")
        if n:
            with nogil:
                rc = _arrow_size_fill(cols, quoted, keys, w, n, fixed, exp, op)
        if rc == -2:
            raise ValueError("a date outside years 1000-9999")
        if rc == -3:
            raise ValueError("a decimal Arrow writes with an exponent")
        return bytes(out)
    finally:
        free(cols); free(quoted); free(keys)


include "_json_array.pxi"
