# cython: language_level=3
"""Native core of importer.

Entry points are thin typed wrappers around C loops; see importer/reference.py
for the readable definition of every behaviour implemented here.
"""

from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdlib cimport malloc, free

cdef const char* _HEX = b"0123456789abcdef"


cdef Py_ssize_t _escape_into(const unsigned char* src, Py_ssize_t n, char* out) noexcept nogil:
    """Write the JSON-escaped form of UTF-8 `src` into `out` (room for 6*n bytes)."""
    cdef Py_ssize_t i, o = 0
    cdef unsigned char c
    for i in range(n):
        c = src[i]
        if c == 34 or c == 92:          # " and \
            out[o] = 92
            out[o + 1] = c
            o += 2
        elif c < 32:
            if c == 10:
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
        else:
            out[o] = c
            o += 1
    return o


def escape_json_string(str value) -> bytes:
    """Return `value` as the UTF-8 body of a JSON string literal (no quotes).

    Non-ASCII characters (including non-BMP ones) stay as raw UTF-8, which is
    valid JSON and what DynamoDB stores; only quotes, backslashes and control
    characters are escaped.
    """
    cdef Py_ssize_t n
    cdef const char* src = PyUnicode_AsUTF8AndSize(value, &n)
    cdef char* out = <char*> malloc(6 * n + 1)
    cdef Py_ssize_t written
    if out == NULL:
        raise MemoryError()
    try:
        with nogil:
            written = _escape_into(<const unsigned char*> src, n, out)
        return out[:written]
    finally:
        free(out)
