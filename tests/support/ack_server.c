/*
 * ack_server: a DynamoDB JSON-1.0 endpoint that acknowledges and stores nothing.
 *
 * Why: client speed (importer, boto3, ddbimport) must be measured against an
 * endpoint that costs the client nothing.  A Python server on the same 2 cores
 * takes CPU from the client it measures; this one spends a few microseconds per
 * request, on one thread, so the client alone sets the pace.
 *
 * What it answers, by the X-Amz-Target header (DynamoDB_20120810.<Op>):
 *   BatchWriteItem     200 {"UnprocessedItems":{}}           (the client's fast path)
 *   BatchGetItem       200 {"Responses":{"<t>":[],...},"UnprocessedKeys":{}}
 *                          (one entry per table named in RequestItems)
 *   DescribeTable      200 a minimal ACTIVE TableDescription, pk HASH / sk RANGE (S)
 *   TransactWriteItems 200 {}
 *   GetItem            200 {}   (no such item: e.g. no TTL configuration in master-data)
 *   Scan               200 {"Count":0,"Items":[],"ScannedCount":0}   (an empty table;
 *                          with --scan-finds, one item: a table that holds data)
 *   anything else      400 UnknownOperationException
 *   GET /stats         200 the counters as JSON (not counted as a request)
 *
 * It counts requests per operation and written items (occurrences of
 * `{"PutRequest"` in BatchWriteItem bodies, `{"Put"` in TransactWriteItems
 * bodies: strict mode's writes) so a benchmark can check that every
 * item arrived (`connections` counts those that sent a DynamoDB request, so the
 * GET /stats polls do not show up); the counters are written as JSON at SIGTERM/SIGINT to the
 * --stats file (atomically: PATH.tmp then rename) or to stdout.
 *
 * With --stored PATH (one compact DynamoDB-JSON item a line, "pk" and "sk" string
 * members), BatchGetItem answers every requested key found in that file with its
 * line, whatever the table: a table that holds an earlier import (the modes'
 * "stored" case).  The items live in one open-addressing hash table, read once at
 * start; a lookup costs a hash and a memcmp.  Keys match by their raw JSON bytes
 * (a key sent with escapes, as boto3 sends non-ASCII, does not match a raw one).
 *
 * HTTP/1.1 only as far as DynamoDB clients need it: keep-alive (HTTP/1.0 and
 * `Connection: close` close after the answer), pipelined requests answered in
 * order, Content-Length bodies (chunked request bodies are refused with 501),
 * `Expect: 100-continue` honoured.  epoll, level-triggered, one thread.
 *
 *   cc -O2 -o ack_server ack_server.c
 *   ack_server [--port N] [--stats PATH] [--sndbuf BYTES] [--scan-finds]
 *              [--stored PATH]                        -> first stdout line: the port
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEADER_BYTES (64 * 1024)
#define MAX_BODY_BYTES (64 * 1024 * 1024)
#define READ_CHUNK (256 * 1024)
#ifndef MAX_PENDING_OUT /* answers held before reading stops (-D in a test) */
#define MAX_PENDING_OUT (4 * 1024 * 1024)
#endif
#define TARGET_PREFIX "DynamoDB_20120810."

struct buf {
    char *data;
    size_t len; /* bytes held, from data[0] */
    size_t off; /* bytes already consumed (in) or sent (out) */
    size_t cap;
};

struct conn {
    int fd;
    int closing;     /* answer no more requests; close once the output is flushed */
    int eof;         /* the client is done sending: answer what is buffered, then close */
    int continued;   /* 100 Continue already sent for the current request */
    int counted;     /* counted in st.connections (at its first non-stats request) */
    struct buf in;
    struct buf out;
};

static struct {
    unsigned long long requests, items, batch_write, batch_get, describe, transact, scan, get,
        unknown;
    unsigned long long bad_http, connections, bytes_in, stats_requests;
} st;

static volatile sig_atomic_t stop_flag = 0;
static int epfd = -1;
static const char *stats_path = NULL;
static int sndbuf = 0; /* --sndbuf: a small kernel send buffer, to test back-pressure */
static int scan_finds = 0; /* --scan-finds: Scan answers one item (a table holding data) */

static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

static void die(const char *what) {
    fprintf(stderr, "ack_server: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void reserve(struct buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    if (b->off > 0 && b->off >= b->len / 2) { /* compact before growing */
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra <= b->cap) return;
    }
    size_t cap = b->cap ? b->cap : 16384;
    while (cap < b->len + extra) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        fprintf(stderr, "ack_server: out of memory (%zu bytes)\n", cap);
        exit(2);
    }
    b->data = p;
    b->cap = cap;
}

static void append(struct buf *b, const char *s, size_t n) {
    reserve(b, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void appendf(struct buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) append(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static int stats_json(char *out, size_t cap) {
    return snprintf(out, cap,
                    "{\"requests\":%llu,\"items\":%llu,\"BatchWriteItem\":%llu,"
                    "\"BatchGetItem\":%llu,\"DescribeTable\":%llu,\"TransactWriteItems\":%llu,"
                    "\"Scan\":%llu,\"GetItem\":%llu,\"unknown\":%llu,\"bad_http\":%llu,"
                    "\"connections\":%llu,"
                    "\"bytes_in\":%llu}",
                    st.requests, st.items, st.batch_write, st.batch_get, st.describe, st.transact,
                    st.scan, st.get, st.unknown, st.bad_http, st.connections, st.bytes_in);
}

static void write_stats(void) {
    char js[1024];
    int n = stats_json(js, sizeof js);
    if (!stats_path) {
        printf("%s\n", js);
        fflush(stdout);
        return;
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", stats_path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%s\n", js) != n + 1 || fclose(f) != 0 || rename(tmp, stats_path) != 0) {
        fprintf(stderr, "ack_server: cannot write stats to %s: %s\n", stats_path, strerror(errno));
        printf("%s\n", js); /* the counts are never lost */
        fflush(stdout);
    }
}

/* ------------------------------------------------------------------ responses */

static unsigned long long request_id = 0;

static void respond(struct conn *c, int status, const char *ctype, const char *body, size_t n) {
    const char *reason = status == 200   ? "OK"
                         : status == 400 ? "Bad Request"
                         : status == 413 ? "Payload Too Large"
                         : status == 431 ? "Request Header Fields Too Large"
                         : status == 501 ? "Not Implemented"
                                         : "Error";
    appendf(&c->out,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
            "x-amzn-RequestId: ack%016llx\r\n%s\r\n",
            status, reason, ctype, n, ++request_id, c->closing ? "Connection: close\r\n" : "");
    append(&c->out, body, n);
}

static void respond_json(struct conn *c, int status, const char *body, size_t n) {
    respond(c, status, "application/x-amz-json-1.0", body, n);
}

static void respond_error(struct conn *c, int status, const char *type, const char *msg) {
    char body[512];
    int n = snprintf(body, sizeof body, "{\"__type\":\"%s\",\"message\":\"%s\"}", type, msg);
    respond_json(c, status, body, (size_t)n);
}

/* ------------------------------------------------------------- tiny JSON scan */

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
    return p;
}

/* p at '"': returns the position after the closing quote, or NULL. */
static const char *skip_string(const char *p, const char *end) {
    for (p++; p < end; p++) {
        if (*p == '\\') {
            p++;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

/* Skips one JSON value (object, array, string or scalar); NULL if malformed/cut. */
static const char *skip_value(const char *p, const char *end) {
    p = skip_ws(p, end);
    if (p >= end) return NULL;
    if (*p == '"') return skip_string(p, end);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = skip_string(p, end);
                if (!p) return NULL;
                continue;
            }
            if (*p == '{' || *p == '[') depth++;
            else if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n') p++;
    return p;
}

/* The top-level member `key` of the object in [p, end): its value's start, or NULL. */
static const char *member(const char *p, const char *end, const char *key) {
    size_t klen = strlen(key);
    p = skip_ws(p, end);
    if (p >= end || *p != '{') return NULL;
    p++;
    for (;;) {
        p = skip_ws(p, end);
        if (p >= end || *p != '"') return NULL;
        const char *k = p + 1;
        const char *q = skip_string(p, end);
        if (!q) return NULL;
        int match = (size_t)(q - 1 - k) == klen && memcmp(k, key, klen) == 0;
        p = skip_ws(q, end);
        if (p >= end || *p != ':') return NULL;
        p = skip_ws(p + 1, end);
        if (match) return p;
        p = skip_value(p, end);
        if (!p) return NULL;
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        return NULL;
    }
}

static unsigned long long count_needle(const char *p, size_t n, const char *needle, size_t nl) {
    unsigned long long count = 0;
    const char *end = p + n;
    while (p < end) {
        const char *hit = memmem(p, (size_t)(end - p), needle, nl);
        if (!hit) break;
        count++;
        p = hit + nl;
    }
    return count;
}

/* ------------------------------------------------------------- --stored items */

struct stored {
    const char *key; /* pk raw bytes, '\0', sk raw bytes (as written between the quotes) */
    size_t klen;
    const char *item;
    size_t ilen;
};
static struct stored *stored_tab = NULL;
static size_t stored_cap = 0; /* a power of two; 0: no --stored */

static uint64_t fnv(const char *a, size_t an, const char *b, size_t bn) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < an; i++) h = (h ^ (unsigned char)a[i]) * 1099511628211ULL;
    h = (h ^ 0) * 1099511628211ULL;
    for (size_t i = 0; i < bn; i++) h = (h ^ (unsigned char)b[i]) * 1099511628211ULL;
    return h;
}

static const char *member(const char *p, const char *end, const char *key);
static const char *skip_string(const char *p, const char *end);

/* The raw bytes of `{"S":"..."}` at p (between the quotes), or 0. */
static int s_value(const char *p, const char *end, const char **s, size_t *n) {
    const char *v = p ? member(p, end, "S") : NULL;
    const char *q = v && *v == '"' ? skip_string(v, end) : NULL;
    if (!q) return 0;
    *s = v + 1;
    *n = (size_t)(q - v - 2);
    return 1;
}

static const struct stored *stored_find(const char *pk, size_t pn, const char *sk, size_t sn) {
    if (!stored_cap) return NULL;
    size_t i = (size_t)fnv(pk, pn, sk, sn) & (stored_cap - 1);
    for (;; i = (i + 1) & (stored_cap - 1)) {
        const struct stored *e = &stored_tab[i];
        if (!e->key) return NULL;
        if (e->klen == pn + 1 + sn && memcmp(e->key, pk, pn) == 0 &&
            memcmp(e->key + pn + 1, sk, sn) == 0)
            return e;
    }
}

static void load_stored(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)size + 1);
    if (!data || fread(data, 1, (size_t)size, f) != (size_t)size) die("read --stored");
    fclose(f);
    size_t lines = 0;
    for (long i = 0; i < size; i++) lines += data[i] == '\n';
    stored_cap = 1024;
    while (stored_cap < 2 * (lines + 1)) stored_cap *= 2;
    stored_tab = calloc(stored_cap, sizeof *stored_tab);
    if (!stored_tab) die("calloc");
    char *p = data, *end = data + size;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        const char *pk, *sk;
        size_t pn, sn;
        if (le > p && s_value(member(p, le, "pk"), le, &pk, &pn) &&
            s_value(member(p, le, "sk"), le, &sk, &sn)) {
            char *key = malloc(pn + 1 + sn);
            if (!key) die("malloc");
            memcpy(key, pk, pn);
            key[pn] = 0;
            memcpy(key + pn + 1, sk, sn);
            size_t i = (size_t)fnv(pk, pn, sk, sn) & (stored_cap - 1);
            while (stored_tab[i].key) i = (i + 1) & (stored_cap - 1);
            stored_tab[i] = (struct stored){key, pn + 1 + sn, p, (size_t)(le - p)};
        }
        p = le + 1;
    }
}

/* Appends the stored items among the Keys array at p ("[{"pk":..,"sk":..},...]"). */
static void append_found(struct buf *out, const char *p, const char *end) {
    p = skip_ws(p, end);
    if (p >= end || *p != '[') return;
    p++;
    int first = 1;
    for (;;) {
        p = skip_ws(p, end);
        if (p >= end || *p != '{') return;
        const char *q = skip_value(p, end);
        if (!q) return;
        const char *pk, *sk;
        size_t pn, sn;
        if (s_value(member(p, q, "pk"), q, &pk, &pn) && s_value(member(p, q, "sk"), q, &sk, &sn)) {
            const struct stored *e = stored_find(pk, pn, sk, sn);
            if (e) {
                if (!first) append(out, ",", 1);
                first = 0;
                append(out, e->item, e->ilen);
            }
        }
        p = skip_ws(q, end);
        if (p < end && *p == ',') p++;
    }
}

/* ------------------------------------------------------------- operations */

static const char BWI_OK[] = "{\"UnprocessedItems\":{}}";

static void op_batch_get(struct conn *c, const char *body, size_t n) {
    const char *end = body + n;
    const char *p = member(body, end, "RequestItems");
    struct buf out = {0};
    append(&out, "{\"Responses\":{", 14);
    int ok = p && *p == '{';
    if (ok) {
        p++;
        int first = 1;
        for (;;) {
            p = skip_ws(p, end);
            if (p < end && *p == '}') break;
            if (p >= end || *p != '"') {
                ok = 0;
                break;
            }
            const char *q = skip_string(p, end);
            if (!q) {
                ok = 0;
                break;
            }
            if (!first) append(&out, ",", 1);
            first = 0;
            append(&out, p, (size_t)(q - p)); /* the table name, quotes included */
            append(&out, ":[", 2);
            p = skip_ws(q, end);
            const char *v = p < end && *p == ':' ? p + 1 : NULL;
            if (!v || !(p = skip_value(v, end))) {
                ok = 0;
                break;
            }
            if (stored_cap) append_found(&out, member(v, p, "Keys"), p);
            append(&out, "]", 1);
            p = skip_ws(p, end);
            if (p < end && *p == ',') p++;
        }
    }
    if (!ok) {
        respond_error(c, 400, "com.amazon.coral.validate#ValidationException",
                      "ack_server: RequestItems not found or malformed");
    } else {
        append(&out, "},\"UnprocessedKeys\":{}}", 23);
        respond_json(c, 200, out.data, out.len);
    }
    free(out.data);
}

static void op_describe(struct conn *c, const char *body, size_t n) {
    const char *end = body + n;
    const char *p = member(body, end, "TableName");
    const char *q = p && *p == '"' ? skip_string(p, end) : NULL;
    if (!q || q - p - 2 > 1024) {
        respond_error(c, 400, "com.amazon.coral.validate#ValidationException",
                      "ack_server: TableName not found");
        return;
    }
    int tl = (int)(q - p - 2);
    const char *t = p + 1;
    struct buf out = {0};
    appendf(&out, "{\"Table\":{\"TableName\":\"%.*s\",\"TableStatus\":\"ACTIVE\",", tl, t);
    appendf(&out, "%s",
            "\"KeySchema\":[{\"AttributeName\":\"pk\",\"KeyType\":\"HASH\"},"
            "{\"AttributeName\":\"sk\",\"KeyType\":\"RANGE\"}],"
            "\"AttributeDefinitions\":[{\"AttributeName\":\"pk\",\"AttributeType\":\"S\"},"
            "{\"AttributeName\":\"sk\",\"AttributeType\":\"S\"}],");
    appendf(&out,
            "\"ItemCount\":0,\"TableSizeBytes\":0,\"CreationDateTime\":1700000000,"
            "\"BillingModeSummary\":{\"BillingMode\":\"PAY_PER_REQUEST\"},"
            "\"TableArn\":\"arn:aws:dynamodb:us-east-1:000000000000:table/%.*s\"}}",
            tl, t);
    respond_json(c, 200, out.data, out.len);
    free(out.data);
}

static void dispatch(struct conn *c, const char *target, size_t tlen, const char *body, size_t n) {
    static const char unknown[] =
        "{\"__type\":\"com.amazonaws.dynamodb.v20120810#UnknownOperationException\","
        "\"message\":\"\"}";
    const size_t pl = sizeof TARGET_PREFIX - 1;
    const char *op = "";
    size_t ol = 0;
    if (tlen > pl && memcmp(target, TARGET_PREFIX, pl) == 0) {
        op = target + pl;
        ol = tlen - pl;
    }
#define IS(name) (ol == sizeof name - 1 && memcmp(op, name, ol) == 0)
    st.requests++;
    if (IS("BatchWriteItem")) {
        st.batch_write++;
        st.items += count_needle(body, n, "{\"PutRequest\"", 13);
        respond_json(c, 200, BWI_OK, sizeof BWI_OK - 1);
    } else if (IS("BatchGetItem")) {
        st.batch_get++;
        op_batch_get(c, body, n);
    } else if (IS("DescribeTable")) {
        st.describe++;
        op_describe(c, body, n);
    } else if (IS("TransactWriteItems")) {
        st.transact++;
        st.items += count_needle(body, n, "{\"Put\":", 7);
        respond_json(c, 200, "{}", 2);
    } else if (IS("GetItem")) {
        st.get++;
        respond_json(c, 200, "{}", 2);
    } else if (IS("Scan")) {
        static const char empty[] = "{\"Count\":0,\"Items\":[],\"ScannedCount\":0}";
        static const char one[] =
            "{\"Count\":1,\"Items\":[{\"pk\":{\"S\":\"X\"}}],\"ScannedCount\":1,"
            "\"LastEvaluatedKey\":{\"pk\":{\"S\":\"X\"},\"sk\":{\"S\":\"X\"}}}";
        st.scan++;
        if (scan_finds)
            respond_json(c, 200, one, sizeof one - 1);
        else
            respond_json(c, 200, empty, sizeof empty - 1);
    } else {
        st.unknown++;
        respond_json(c, 400, unknown, sizeof unknown - 1);
    }
#undef IS
}

/* ------------------------------------------------------------------ HTTP */

/* Header value of `name` in [h, end) (lines after the request line), or NULL. */
static const char *header(const char *h, const char *end, const char *name, size_t *vlen) {
    size_t nl = strlen(name);
    while (h < end) {
        const char *eol = memmem(h, (size_t)(end - h), "\r\n", 2);
        if (!eol) eol = end;
        if ((size_t)(eol - h) > nl && h[nl] == ':' && strncasecmp(h, name, nl) == 0) {
            const char *v = h + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        h = eol + 2;
    }
    return NULL;
}

static int has_token(const char *v, size_t n, const char *token) {
    size_t tl = strlen(token);
    for (size_t i = 0; i + tl <= n; i++) {
        if (strncasecmp(v + i, token, tl) == 0) return 1;
    }
    return 0;
}

/* Answers the complete requests in c->in while the output is under its limit; returns how
 * many it answered. */
static int process(struct conn *c) {
    int answered = 0;
    while (!c->closing && c->out.len - c->out.off < MAX_PENDING_OUT) {
        char *start = c->in.data + c->in.off;
        size_t avail = c->in.len - c->in.off;
        if (avail == 0) break;
        char *hend = memmem(start, avail, "\r\n\r\n", 4);
        if (!hend) {
            if (avail > MAX_HEADER_BYTES) {
                st.bad_http++;
                c->closing = 1;
                respond_error(c, 431, "ack_server#BadRequest", "headers too large");
                answered++;
            }
            break;
        }
        size_t hlen = (size_t)(hend - start) + 4;
        char *line_end = memmem(start, hlen, "\r\n", 2);
        char *sp1 = memchr(start, ' ', (size_t)(line_end - start));
        char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1)) : NULL;
        if (!sp1 || !sp2 || line_end - sp2 < 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0) {
            st.bad_http++;
            c->closing = 1;
            respond_error(c, 400, "ack_server#BadRequest", "malformed request line");
            answered++;
            break;
        }
        int http10 = sp2[8] == '0';
        const char *hs = line_end + 2, *he = hend + 2;
        size_t vl = 0;
        const char *v = header(hs, he, "Transfer-Encoding", &vl);
        if (v && !(vl == 8 && strncasecmp(v, "identity", 8) == 0)) {
            st.bad_http++;
            c->closing = 1;
            respond_error(c, 501, "ack_server#NotImplemented", "chunked bodies not supported");
            answered++;
            break;
        }
        size_t clen = 0;
        v = header(hs, he, "Content-Length", &vl);
        if (v) {
            char *endp = NULL;
            char num[32];
            if (vl == 0 || vl >= sizeof num) {
                endp = num; /* malformed */
                num[0] = 'x';
            } else {
                memcpy(num, v, vl);
                num[vl] = 0;
                clen = strtoull(num, &endp, 10);
            }
            if (*endp != 0) {
                st.bad_http++;
                c->closing = 1;
                respond_error(c, 400, "ack_server#BadRequest", "bad Content-Length");
                answered++;
                break;
            }
        }
        if (clen > MAX_BODY_BYTES) {
            st.bad_http++;
            c->closing = 1;
            respond_error(c, 413, "ack_server#BadRequest", "body too large");
            answered++;
            break;
        }
        if (avail < hlen + clen) { /* body still arriving */
            v = header(hs, he, "Expect", &vl);
            if (v && !c->continued && has_token(v, vl, "100-continue")) {
                append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
                c->continued = 1;
            }
            reserve(&c->in, hlen + clen - avail);
            break;
        }
        c->continued = 0;
        v = header(hs, he, "Connection", &vl);
        if (http10 ? !(v && has_token(v, vl, "keep-alive")) : (v && has_token(v, vl, "close")))
            c->closing = 1;
        const char *body = start + hlen;
        size_t mlen = (size_t)(sp1 - start);
        if (mlen == 3 && memcmp(start, "GET", 3) == 0) {
            size_t plen = (size_t)(sp2 - sp1 - 1);
            if (plen == 6 && memcmp(sp1 + 1, "/stats", 6) == 0) {
                char js[1024];
                int n = stats_json(js, sizeof js);
                st.stats_requests++;
                respond(c, 200, "application/json", js, (size_t)n);
            } else {
                respond_error(c, 400, "ack_server#BadRequest", "only GET /stats");
            }
        } else {
            if (!c->counted) {
                c->counted = 1;
                st.connections++;
            }
            st.bytes_in += hlen + clen;
            const char *target = header(hs, he, "X-Amz-Target", &vl);
            dispatch(c, target ? target : "", target ? vl : 0, body, clen);
        }
        c->in.off += hlen + clen;
        if (c->in.off == c->in.len) c->in.off = c->in.len = 0;
        answered++;
    }
    return answered;
}

static void set_events(struct conn *c) {
    int want_out = c->out.len > c->out.off;
    int want_in = !c->closing && !c->eof && c->out.len - c->out.off < MAX_PENDING_OUT;
    struct epoll_event ev = {.events = (want_in ? EPOLLIN : 0) | (want_out ? EPOLLOUT : 0),
                             .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void drop(struct conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in.data);
    free(c->out.data);
    free(c);
}

/* Sends what it can; returns -1 on a dead socket. */
static int flush_out(struct conn *c) {
    while (c->out.off < c->out.len) {
        ssize_t w = send(c->fd, c->out.data + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            return -1;
        }
        c->out.off += (size_t)w;
    }
    c->out.off = c->out.len = 0;
    return 0;
}

/* Answers and sends as far as possible, then waits for the right event (or closes). */
static void pump(struct conn *c) {
    for (;;) {
        /* over the limit, nothing can be answered now: answered == 0 then does not mean
         * that nothing is left (a client that drained it all at once, after its FIN, had
         * its last requests dropped unanswered) */
        int held = c->out.len - c->out.off >= MAX_PENDING_OUT;
        int answered = process(c);
        if (flush_out(c) < 0) {
            drop(c);
            return;
        }
        if (c->out.len > c->out.off) break; /* wait until writable */
        if (held) continue; /* drained: answer what was held back */
        if (c->closing || (c->eof && answered == 0)) {
            drop(c); /* all answered; a partial request after EOF is dropped */
            return;
        }
        if (answered == 0) break; /* wait for more input */
        /* output drained and requests may be held back behind the limit: go on */
    }
    set_events(c);
}

static void on_readable(struct conn *c) {
    reserve(&c->in, READ_CHUNK);
    ssize_t r = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
    if (r < 0) {
        if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) drop(c);
        return;
    }
    if (r == 0) {
        c->eof = 1; /* requests already received are still answered */
    } else {
        c->in.len += (size_t)r;
    }
    pump(c);
}

int main(int argc, char **argv) {
    int port = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--stats") == 0 && i + 1 < argc) {
            stats_path = argv[++i];
        } else if (strcmp(argv[i], "--sndbuf") == 0 && i + 1 < argc) {
            sndbuf = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--scan-finds") == 0) {
            scan_finds = 1;
        } else if (strcmp(argv[i], "--stored") == 0 && i + 1 < argc) {
            load_stored(argv[++i]);
        } else {
            fprintf(stderr,
                    "usage: ack_server [--port N] [--stats PATH] [--sndbuf BYTES] [--scan-finds] "
                    "[--stored PATH]\n");
            return 2;
        }
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal; /* no SA_RESTART: epoll_wait returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ls < 0) die("socket");
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind 127.0.0.1");
    if (listen(ls, 4096) < 0) die("listen");
    socklen_t alen = sizeof addr;
    getsockname(ls, (struct sockaddr *)&addr, &alen);
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL: the listener */
    epoll_ctl(epfd, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event events[256];
    while (!stop_flag) {
        int n = epoll_wait(epfd, events, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c) {
                for (;;) {
                    int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break; /* EAGAIN, or out of fds: retried on the next event */
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    if (sndbuf > 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
                    struct conn *nc = calloc(1, sizeof *nc);
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            /* one event per connection per round: a dropped conn is never touched again */
            if (events[i].events & (EPOLLERR | EPOLLHUP) && !(events[i].events & EPOLLIN)) {
                drop(c);
            } else if (events[i].events & EPOLLOUT) {
                pump(c);
            } else if (events[i].events & EPOLLIN) {
                on_readable(c);
            }
        }
    }
    write_stats();
    return 0;
}
