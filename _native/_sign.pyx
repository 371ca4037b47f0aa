# cython: language_level=3
"""SigV4 signatures for a group of request bodies, the GIL let go once.

Why: a signature is three SHA-256 runs -- the body, the canonical request, and
the HMAC of the string to sign -- each a call through hashlib under the GIL,
plus the Python that joins the request's head: about a fifth of a request's
GIL time against a fast endpoint.  Here one call signs a whole group, hashing
while other threads hold the GIL.

SHA-256 is OpenSSL's: the `SHA256` one-shot of the libcrypto hashlib has already
loaded, whose address the caller finds (`importer.sigv4`, through ctypes) and
hands to `_load`.  So building needs no OpenSSL header or library, nor even
dlopen (whose glibc 2.34 symbol older Lambda runtimes lack), and the hashing is
the code hashlib runs.  Where it cannot be found (no /proc, a hashlib without
OpenSSL), or does not hash "abc" as FIPS 180-2 says, `ready()` is False and the
caller signs in Python.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    typedef unsigned char *(*importer_sha256_fn)(const unsigned char *, size_t, unsigned char *);
    static importer_sha256_fn importer_sha256_ptr = NULL;
    static void importer_set_sha256(uintptr_t address) {
        importer_sha256_ptr = (importer_sha256_fn) address;
    }
    static void importer_sha256(const unsigned char *data, size_t n, unsigned char *out) {
        importer_sha256_ptr(data, n, out);
    }
    """
    void set_sha256 "importer_set_sha256"(size_t address)
    void sha256 "importer_sha256"(const unsigned char* data, size_t n, unsigned char* out) nogil

ctypedef unsigned char uchar

cdef const char* HEX = b"0123456789abcdef"
cdef bint _ready = False


cdef inline void _hex(const uchar* digest, char* out) noexcept nogil:
    cdef int i
    for i in range(32):
        out[2 * i] = HEX[digest[i] >> 4]
        out[2 * i + 1] = HEX[digest[i] & 15]


def _load(size_t address) -> bool:
    """Take OpenSSL's SHA256 at `address` (from ctypes); True when it hashes right."""
    global _ready
    cdef uchar out[32]
    cdef char text[64]
    _ready = False
    if address == 0:
        return False
    set_sha256(address)
    sha256(<const uchar*> b"abc", 3, out)
    _hex(out, text)
    _ready = text[:64] == b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    return _ready


def ready() -> bool:
    """True when `sign_heads` can run (OpenSSL's SHA256 was found and checked)."""
    return _ready


def digest(bytes data not None) -> bytes:
    """SHA-256 of `data` (tests compare it with hashlib's)."""
    cdef uchar out[32]
    if not _ready:
        raise RuntimeError("SHA256 was not found")
    sha256(<const uchar*> PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), out)
    return PyBytes_FromStringAndSize(<char*> out, 32)


def sign_heads(
    bytes canonical_head not None,
    bytes sts_head not None,
    bytes key not None,
    bytes head not None,
    bytes tail not None,
    list bodies not None,
):
    """Each body's request head: `head`, the signature, `tail`, the body's length, CRLF CRLF.

    The signature is SigV4's: HMAC-SHA256 under `key` (the 32-byte signing
    key) of `sts_head` + hex(sha256(`canonical_head` + hex(sha256(body)))).
    """
    if not _ready:
        raise RuntimeError("SHA256 was not found")
    if len(key) != 32:
        raise ValueError("the signing key is 32 bytes")
    cdef tuple held = tuple(bodies)  # the bodies stay alive (and unchanged) while hashing
    cdef Py_ssize_t n = len(held), i, ch = len(canonical_head), sh = len(sts_head)
    cdef Py_ssize_t hl = len(head), tl = len(tail), k, digits
    cdef const uchar** data = <const uchar**> malloc(max(n, 1) * sizeof(uchar*))
    cdef Py_ssize_t* sizes = <Py_ssize_t*> malloc(max(n, 1) * sizeof(Py_ssize_t))
    cdef char* signatures = <char*> malloc(max(n, 1) * 64)
    cdef uchar* canonical = <uchar*> malloc(ch + 64)
    cdef uchar* inner = <uchar*> malloc(64 + sh + 64)
    cdef uchar outer[96]
    cdef uchar pad[64]
    cdef uchar digest_[32]
    cdef list out = []
    cdef char number[24]
    cdef object body, made
    cdef char* p
    try:
        if data == NULL or sizes == NULL or signatures == NULL or canonical == NULL or inner == NULL:
            raise MemoryError()
        for i in range(n):
            body = held[i]
            if type(body) is not bytes:
                raise TypeError("a request body is bytes")
            data[i] = <const uchar*> PyBytes_AS_STRING(body)
            sizes[i] = PyBytes_GET_SIZE(body)
        memcpy(canonical, PyBytes_AS_STRING(canonical_head), ch)
        for k in range(64):  # HMAC's inner and outer pads (RFC 2104), the key 32 bytes
            pad[k] = (key[k] if k < 32 else 0) ^ 0x36
            outer[k] = (key[k] if k < 32 else 0) ^ 0x5C
        memcpy(inner, pad, 64)
        memcpy(inner + 64, PyBytes_AS_STRING(sts_head), sh)
        with nogil:
            for i in range(n):
                sha256(data[i], sizes[i], digest_)
                _hex(digest_, <char*> canonical + ch)
                sha256(canonical, ch + 64, digest_)
                _hex(digest_, <char*> inner + 64 + sh)
                sha256(inner, 64 + sh + 64, outer + 64)
                sha256(outer, 96, digest_)
                _hex(digest_, signatures + 64 * i)
        for i in range(n):
            digits = 0
            k = sizes[i]
            while True:
                number[digits] = <char> (48 + k % 10)
                digits += 1
                k //= 10
                if k == 0:
                    break
            made = PyBytes_FromStringAndSize(NULL, hl + 64 + tl + digits + 4)
            p = PyBytes_AS_STRING(made)
            memcpy(p, PyBytes_AS_STRING(head), hl)
            memcpy(p + hl, signatures + 64 * i, 64)
            memcpy(p + hl + 64, PyBytes_AS_STRING(tail), tl)
            p += hl + 64 + tl
            for k in range(digits):
                p[k] = number[digits - 1 - k]
            memcpy(p + digits, b"\r\n\r\n", 4)
            out.append(made)
        return out
    finally:
        free(data)
        free(sizes)
        free(signatures)
        free(canonical)
        free(inner)
