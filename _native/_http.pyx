# cython: language_level=3
"""One HTTP/1.1 request and its answer on a connected, blocking socket, the GIL let go once.

Why C: against an endpoint that answers in microseconds, the Python client spent
most of its time under the GIL in the exchange itself -- the send (on loopback
the kernel delivers the bytes to the peer inside the call), the reads, and
splitting the answer's head -- while every other worker waited for the GIL.
Here a request lets go of it once, for the send and the whole answer.

Only the usual answer is read to its end here: ``HTTP/1.1`` and three digits of
status, 200 or more; a Content-Length of plain digits; no Transfer-Encoding; a
Connection header, if any, that says keep-alive or close.  For anything else
the bytes received so far go back to the caller, whose general parser
(`importer.dynamo._read_response`) reads on from them: an unusual answer is read
exactly as before, its errors included.  The socket must be blocking, its
timeouts kept by the kernel (SO_RCVTIMEO / SO_SNDTIMEO): a timeout is EAGAIN.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, strerror

cdef extern from *:
    """
    #include <sys/types.h>
    #include <sys/socket.h>
    #include <poll.h>
    #include <time.h>
    #include <errno.h>
    #ifndef MSG_NOSIGNAL  /* macOS: Python ignores SIGPIPE anyway */
    #define MSG_NOSIGNAL 0
    #endif
    static long long importer_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    """
    ssize_t c_send "send"(int fd, const void* buf, size_t n, int flags) nogil
    ssize_t c_recv "recv"(int fd, void* buf, size_t n, int flags) nogil
    int MSG_NOSIGNAL
    int MSG_DONTWAIT
    int errno
    int EINTR
    int EAGAIN
    int EWOULDBLOCK
    int ETIMEDOUT
    struct pollfd:
        int fd
        short events
        short revents
    int c_poll "poll"(pollfd* fds, unsigned long n, int timeout) nogil
    short POLLIN
    short POLLOUT
    long long now_ms "importer_now_ms"() nogil

ctypedef unsigned char uchar

cdef enum:
    # an exchange's first receive buffer, grown to the answer's length once its head
    # is read: the usual answer is far smaller, and a buffer of the run's mmap
    # threshold (64 KB, `importer.cli._bound_c_heap`) or more is a mapping made and
    # unmade per request -- two syscalls and a page fault each
    RECV_SIZE = 16384
    # the general parser's limits: a head this long without its end, this many lines
    MAX_HEAD = 256 * 1024
    MAX_HEAD_LINES = 201

#: a Content-Length above this is left to the general parser (it reads in pieces)
cdef Py_ssize_t MAX_BODY = 1 << 26

cdef enum Outcome:
    DONE
    GENERAL  # the caller's parser reads on from the bytes received
    SEND_FAILED
    RECV_FAILED
    INTERRUPTED  # a signal: the caller checks for handlers, then the exchange goes on
    NO_MEMORY
    WANT_WRITE  # (without waiting) the socket takes no more now
    WANT_READ  # (without waiting) nothing more has arrived yet

ctypedef struct Exchange:
    int fd
    const uchar* req
    Py_ssize_t req_len
    Py_ssize_t sent
    uchar* buf
    Py_ssize_t len
    Py_ssize_t cap
    Py_ssize_t head_end  # -1 until the head is parsed
    Py_ssize_t body_len
    int status
    bint keep_alive
    Py_ssize_t crc_at  # -1: no x-amz-crc32 header
    Py_ssize_t crc_len
    int err
    long long deadline  # (side by side) when a socket that moves no byte has timed out
    bint ready  # (side by side) its socket can move: the next pass moves it
    Outcome out


cdef inline bint _space(uchar c) noexcept nogil:
    # what bytes.strip() and int() skip: space, \t, \n, \v, \f, \r
    return c == 32 or 9 <= c <= 13


cdef inline uchar _lower(uchar c) noexcept nogil:
    return c + 32 if 65 <= c <= 90 else c


cdef inline void _strip(const uchar* p, Py_ssize_t* a, Py_ssize_t* b) noexcept nogil:
    """Narrow p[a:b] to bytes.strip()'s result."""
    while a[0] < b[0] and _space(p[a[0]]):
        a[0] += 1
    while b[0] > a[0] and _space(p[b[0] - 1]):
        b[0] -= 1


cdef bint _named(const uchar* p, Py_ssize_t n, const char* name) noexcept nogil:
    """p[:n] == name, ASCII case-insensitively (`name` is lower case)."""
    cdef Py_ssize_t i
    for i in range(n):
        if name[i] == 0 or _lower(p[i]) != <uchar>name[i]:
            return False
    return name[n] == 0


cdef Py_ssize_t _find(const uchar* p, Py_ssize_t n, const char* pat, Py_ssize_t m) noexcept nogil:
    """The first index of pat[:m] in p[:n], or -1 (bytes.find)."""
    cdef Py_ssize_t i = 0
    cdef const uchar* hit
    while i + m <= n:
        hit = <const uchar*>memchr(p + i, pat[0], n - m + 1 - i)
        if hit == NULL:
            return -1
        i = hit - p
        if memcmp(hit, pat, m) == 0:
            return i
        i += 1
    return -1


cdef bint _parse_head(Exchange* x, Py_ssize_t end) noexcept nogil:
    """Read the head buf[:end] into `x` if it is the usual one (see the module doc)."""
    cdef const uchar* p = x.buf
    cdef Py_ssize_t s, e, colon, a, b, i, name_at, name_len, lines = 1
    cdef long long length = -1
    cdef const uchar* nl
    if end < 12 or memcmp(p, b"HTTP/1.1 ", 9) != 0:
        return False
    for i in range(9, 12):
        if not 48 <= p[i] <= 57:
            return False
    if end > 12 and not _space(p[12]):
        return False
    x.status = (p[9] - 48) * 100 + (p[10] - 48) * 10 + (p[11] - 48)
    if x.status < 200:
        return False  # informational (100 Continue): the general parser skips it
    x.keep_alive = True
    nl = <const uchar*>memchr(p, 10, end)
    s = end if nl == NULL else nl - p + 1
    while s < end:
        nl = <const uchar*>memchr(p + s, 10, end - s)
        e = end if nl == NULL else nl - p
        lines += 1
        if lines > MAX_HEAD_LINES:
            return False
        nl = <const uchar*>memchr(p + s, 58, e - s)  # ':'
        if nl == NULL:
            return False
        colon = nl - p
        a, b = s, colon  # the name, stripped
        _strip(p, &a, &b)
        if _named(p + a, b - a, "transfer-encoding"):
            return False
        name_at, name_len = a, b - a
        a, b = colon + 1, e  # the value, stripped
        _strip(p, &a, &b)
        if _named(p + name_at, name_len, "content-length"):
            if b == a or b - a > 15:
                return False
            length = 0
            for i in range(a, b):
                if not 48 <= p[i] <= 57:
                    return False
                length = length * 10 + (p[i] - 48)
        elif _named(p + name_at, name_len, "x-amz-crc32"):
            x.crc_at, x.crc_len = a, b - a
        elif _named(p + name_at, name_len, "connection"):
            if _named(p + a, b - a, "keep-alive"):
                x.keep_alive = True
            elif _named(p + a, b - a, "close"):
                x.keep_alive = False
            else:
                return False
        s = e + 1
    if length < 0 or length > MAX_BODY:
        return False
    x.body_len = length
    return True


cdef bint _grow(Exchange* x, Py_ssize_t cap) noexcept nogil:
    cdef uchar* grown = <uchar*>realloc(x.buf, cap)
    if grown == NULL:
        return False
    x.buf, x.cap = grown, cap
    return True


cdef Outcome _run(Exchange* x, int wait) noexcept nogil:
    """Send what is left of the request, then receive until the answer is whole.

    `wait` 0: never block -- WANT_WRITE / WANT_READ say what the socket waits for.
    """
    cdef ssize_t n
    cdef Py_ssize_t crlf, lf
    cdef int flags = 0 if wait else MSG_DONTWAIT
    while x.sent < x.req_len:
        n = c_send(x.fd, x.req + x.sent, x.req_len - x.sent, MSG_NOSIGNAL | flags)
        if n < 0:
            x.err = errno
            if not wait and (x.err == EAGAIN or x.err == EWOULDBLOCK):
                return WANT_WRITE
            return INTERRUPTED if x.err == EINTR else SEND_FAILED
        x.sent += n
    while True:
        if x.head_end < 0:
            # the blank line as the general parser finds it: CRLF CRLF, unless a bare
            # LF LF comes first (that, and any other unusual head, it reads itself)
            crlf = _find(x.buf, x.len, "\r\n\r\n", 4)
            lf = _find(x.buf, x.len, "\n\n", 2)
            if crlf >= 0 and (lf < 0 or crlf < lf):
                if not _parse_head(x, crlf):
                    return GENERAL
                x.head_end = crlf + 4
                if x.head_end + x.body_len > x.cap and not _grow(x, x.head_end + x.body_len):
                    return NO_MEMORY
            elif lf >= 0 or x.len > MAX_HEAD:
                return GENERAL
        if x.head_end >= 0 and x.len >= x.head_end + x.body_len:
            return DONE
        if x.len == x.cap and not _grow(x, 2 * x.cap):
            return NO_MEMORY
        n = c_recv(x.fd, x.buf + x.len, x.cap - x.len, flags)
        if n < 0:
            x.err = errno
            if not wait and (x.err == EAGAIN or x.err == EWOULDBLOCK):
                return WANT_READ
            return INTERRUPTED if x.err == EINTR else RECV_FAILED
        if n == 0:
            return GENERAL  # the peer closed: the general parser says where (it reads b"" too)
        x.len += n


cdef int _start(Exchange* x, int fd, object request, bytes unread) except -1:
    """Set up `x` to send `request` (bytes or a contiguous buffer) on `fd`, `unread` first in."""
    cdef const uchar[::1] view = request
    cdef Py_ssize_t have = len(unread)
    x.fd = fd
    x.req = &view[0] if view.shape[0] else NULL  # the caller keeps `request` alive
    x.req_len = view.shape[0]
    x.sent = 0
    x.len = have
    x.cap = have + RECV_SIZE
    x.head_end = -1
    x.body_len = 0
    x.status = 0
    x.keep_alive = True
    x.crc_at = -1
    x.crc_len = 0
    x.err = 0
    x.deadline = 0
    x.ready = True
    x.out = WANT_WRITE
    x.buf = <uchar*>malloc(x.cap)
    if x.buf == NULL:
        raise MemoryError()
    if have:
        memcpy(x.buf, <const char*>unread, have)
    return 0


cdef tuple _result(Exchange* x):
    """What `exchange` returns for a finished `x` (see there)."""
    cdef Py_ssize_t end
    if x.out == DONE:
        end = x.head_end + x.body_len
        return (
            x.status,
            PyBytes_FromStringAndSize(<char*>x.buf + x.head_end, x.body_len),
            None if x.crc_at < 0 else PyBytes_FromStringAndSize(<char*>x.buf + x.crc_at, x.crc_len),
            bool(x.keep_alive),
            PyBytes_FromStringAndSize(<char*>x.buf + end, x.len - end),
        )
    if x.out == NO_MEMORY:
        raise MemoryError()
    if x.out == SEND_FAILED:
        return (None, b"", x.err)
    return (None, PyBytes_FromStringAndSize(<char*>x.buf, x.len), x.err if x.out == RECV_FAILED else 0)


def exchange(int fd, request, bytes unread not None):
    """Send `request` on the blocking socket `fd` and read its answer, without the GIL.

    `unread` is what an earlier read received beyond its own answer.  Returns
    ``(status, body, x-amz-crc32 value or None, keep_alive, bytes after the answer)``
    for the usual answer; otherwise ``(None, received, errno)``: errno 0 means the
    caller's general parser reads on from `received` (all bytes so far, `unread`
    included); an errno is a send (`received` empty) or receive that failed --
    EAGAIN when the socket's timeout passed.
    """
    cdef Exchange x
    x.buf = NULL
    try:
        _start(&x, fd, request, unread)
        while True:
            with nogil:
                x.out = _run(&x, 1)
            if x.out != INTERRUPTED:
                break
            PyErr_CheckSignals()  # a handler that raises (KeyboardInterrupt) ends it here
        return _result(&x)
    finally:
        free(x.buf)


cdef Outcome _run_many(Exchange* xs, Py_ssize_t n, pollfd* polled, Py_ssize_t* which,
                       long long timeout_ms) noexcept nogil:
    """Move every exchange of `xs` as far as its socket lets it, waiting in one poll
    for whichever can move next, until all are finished; INTERRUPTED by a signal
    (call again: each exchange keeps its state)."""
    cdef Py_ssize_t i, k, np
    cdef Exchange* x
    cdef Py_ssize_t moved
    cdef long long now, soonest
    cdef int got
    while True:
        now = now_ms()
        np = 0
        soonest = now + timeout_ms
        for i in range(n):
            x = &xs[i]
            if x.out != WANT_WRITE and x.out != WANT_READ:
                continue  # finished
            if x.ready:  # a new exchange, or one whose socket said it can move
                x.ready = False
                moved = x.sent + x.len
                x.out = _run(x, 0)
                if x.out == INTERRUPTED:  # (no call here waits, so hardly ever) poll it
                    x.out = WANT_WRITE if x.sent < x.req_len else WANT_READ
                if x.out != WANT_WRITE and x.out != WANT_READ:
                    continue
                if x.deadline == 0 or x.sent + x.len != moved:
                    x.deadline = now + timeout_ms
            if x.deadline <= now:  # no byte moved for the whole timeout
                x.err = EAGAIN
                x.out = SEND_FAILED if x.sent < x.req_len else RECV_FAILED
                continue
            polled[np].fd = x.fd
            polled[np].events = POLLOUT if x.out == WANT_WRITE else POLLIN
            polled[np].revents = 0
            which[np] = i
            np += 1
            if x.deadline < soonest:
                soonest = x.deadline
        if np == 0:
            return DONE
        soonest = soonest - now if soonest > now else 0
        got = c_poll(polled, np, <int>(soonest if soonest < 2147483647 else 2147483647))
        if got < 0:
            if errno == EINTR:
                return INTERRUPTED
            got = errno
            for k in range(np):
                x = &xs[which[k]]
                x.err = got
                x.out = SEND_FAILED if x.sent < x.req_len else RECV_FAILED
            return DONE
        for k in range(np):
            if polled[k].revents:
                xs[which[k]].ready = True


def exchange_many(list requests not None, double timeout):
    """`exchange` for several requests at once, each on its own connection: sent and
    answered side by side, the GIL let go once for all of them.

    `requests` are ``(fd, request, unread)``; the sockets may be blocking (each call
    here asks not to wait).  `timeout` (seconds) is how long a socket may move no
    byte before its exchange fails with EAGAIN.  Returns what `exchange` would,
    one per request, in order.
    """
    cdef Py_ssize_t n = len(requests), i
    cdef Exchange* xs = <Exchange*>calloc(n, sizeof(Exchange)) if n else NULL
    cdef pollfd* polled = <pollfd*>malloc(n * sizeof(pollfd)) if n else NULL
    cdef Py_ssize_t* which = <Py_ssize_t*>malloc(n * sizeof(Py_ssize_t)) if n else NULL
    cdef long long timeout_ms = <long long>(timeout * 1000.0)
    cdef Outcome out
    if n and (xs == NULL or polled == NULL or which == NULL):
        free(xs)
        free(polled)
        free(which)
        raise MemoryError()
    try:
        for i in range(n):
            fd, request, unread = requests[i]
            _start(&xs[i], fd, request, unread)
        while True:
            with nogil:
                out = _run_many(xs, n, polled, which, timeout_ms if timeout_ms > 0 else 1)
            if out != INTERRUPTED:
                break
            PyErr_CheckSignals()
        return [_result(&xs[i]) for i in range(n)]
    finally:
        for i in range(n):
            free(xs[i].buf)
        free(xs)
        free(polled)
        free(which)
