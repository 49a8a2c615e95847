/* proxy.c — one guest TCP connection, start to end, on its own thread; and
 * the guest DNS responder thread.
 *
 * Connection: original destination from getsockname (TPROXY) → the name
 * netmed's DNS gave for that address (synthetic or recorded) → policy →
 * upstream re-resolution and per-address check (rebinding guard) → dial
 * from the host netns → either a byte splice (placeholder scan towards
 * upstream, SNI/Host check of the first bytes) or interception: TLS
 * terminated with the lane CA, HTTP/1.1 parsed request by request, secrets
 * substituted in headers for their hosts, real values masked in everything
 * sent back to the guest.
 *
 * All sockets are blocking with SO_RCVTIMEO/SO_SNDTIMEO; buffers are
 * bounded (EP_BUF per direction). A plain direction no filter has to see
 * is spliced through a pipe once it carried SPLICE_AFTER bytes. Each
 * connection holds references to the policy and the secrets set it uses;
 * after a live secrets reload it takes the new set at its next request
 * (intercepted) or before its next guest bytes (splice). Nothing here logs
 * a secret value.
 */
#include "netmed.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define EP_BUF (HTTP_HEAD_MAX + 16384)
#define IO_CHUNK 65536
#define SPLICE_PIPE (256 * 1024)
#define SPLICE_AFTER (64 * 1024)  /* bytes copied in a direction before it is spliced */
#define MAX_NAMES 8
#define MAX_RESOLVED 16
#define PEEK_MAX 16384

typedef struct {
    int fd;
    SSL *ssl;
    char *buf;              /* read-ahead: [off, len) not yet consumed */
    size_t off, len;
    bool eof;
} ep_t;

typedef struct {
    netmed_t *m;
    policy_t *p;
    ep_t g, u;              /* guest, upstream */
    netaddr_t src, dst, dialed;
    uint16_t sport, port;
    char name[DNS_NAME_MAX];
    bool has_name;
    verdict_t v;
    uint64_t up, down;
    const char *reason;
    bool blocked;           /* closed by a mid-stream check */
    bool scrub;             /* secrets exist for this name: mask responses */
    secrets_t *ss;          /* the secrets set in use (a reference) */
    bool approved;          /* an ask rule's connection a human allowed */
    struct timespec t0;
} conn_t;

/* ---- endpoint I/O ---------------------------------------------------- */

static ssize_t ep_raw_read(ep_t *e, void *b, size_t n)
{
    if (e->ssl) {
        int r = SSL_read(e->ssl, b, (int)(n > INT32_MAX ? INT32_MAX : n));
        if (r > 0)
            return r;
        int err = SSL_get_error(e->ssl, r);
        ERR_clear_error();
        if (err == SSL_ERROR_ZERO_RETURN)
            return 0;
        if (err == SSL_ERROR_SYSCALL && r == 0)
            return 0;                   /* EOF without close_notify */
        return -EIO;
    }
    for (;;) {
        ssize_t r = read(e->fd, b, n);
        if (r < 0 && errno == EINTR)
            continue;
        return r < 0 ? -errno : r;
    }
}

static int ep_write(ep_t *e, const void *b, size_t n)
{
    const char *p = b;
    while (n > 0) {
        ssize_t w;
        if (e->ssl) {
            int r = SSL_write(e->ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
            if (r <= 0) {
                ERR_clear_error();
                return -EIO;
            }
            w = r;
        } else {
            w = send(e->fd, p, n, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read more into the read-ahead buffer. 1 got bytes, 0 EOF, <0 error. */
static int ep_fill(ep_t *e)
{
    if (e->off > 0) {
        memmove(e->buf, e->buf + e->off, e->len - e->off);
        e->len -= e->off;
        e->off = 0;
    }
    if (e->len == EP_BUF)
        return -ENOBUFS;
    ssize_t r = ep_raw_read(e, e->buf + e->len, EP_BUF - e->len);
    if (r == 0)
        e->eof = true;
    if (r <= 0)
        return (int)r;
    e->len += (size_t)r;
    return 1;
}

/* Up to n bytes: buffered ones first. */
static ssize_t ep_read(ep_t *e, void *b, size_t n)
{
    if (e->off < e->len) {
        size_t k = e->len - e->off < n ? e->len - e->off : n;
        memcpy(b, e->buf + e->off, k);
        e->off += k;
        return (ssize_t)k;
    }
    if (e->eof)
        return 0;
    ssize_t r = ep_raw_read(e, b, n);
    if (r == 0)
        e->eof = true;
    return r;
}

static bool ep_pending(ep_t *e)
{
    /* SSL_has_pending: also bytes read ahead but not yet decrypted */
    return e->off < e->len || (e->ssl && SSL_has_pending(e->ssl));
}

/* Read a head (through CRLFCRLF) into the buffer: returns its length at
 * buf+off, 0 on clean EOF before any byte, <0 on error/garbage. */
static long ep_read_head(ep_t *e)
{
    for (;;) {
        long end = http_head_end(e->buf + e->off, e->len - e->off);
        if (end < 0)
            return end;
        if (end > 0)
            return end;
        if (e->len - e->off >= HTTP_HEAD_MAX)
            return -E2BIG;
        int r = ep_fill(e);
        if (r == 0)
            return e->len == e->off ? 0 : -EPIPE;
        if (r < 0)
            return r;
    }
}

/* A CRLF-terminated line (chunk size / trailer), without the CRLF. */
static int ep_read_line(ep_t *e, char *out, size_t cap)
{
    for (;;) {
        char *s = e->buf + e->off;
        size_t avail = e->len - e->off;
        char *nl = memchr(s, '\n', avail);
        if (nl) {
            size_t l = (size_t)(nl - s);
            if (l == 0 || s[l - 1] != '\r' || l - 1 >= cap)
                return -EINVAL;
            memcpy(out, s, l - 1);
            out[l - 1] = '\0';
            e->off += l + 1;
            return (int)(l - 1);
        }
        if (avail >= cap + 2)
            return -EINVAL;
        int r = ep_fill(e);
        if (r <= 0)
            return r == 0 ? -EPIPE : r;
    }
}

static void ep_close(ep_t *e)
{
    if (e->ssl) {
        SSL_shutdown(e->ssl);
        SSL_free(e->ssl);
        e->ssl = NULL;
    }
    if (e->fd >= 0)
        close(e->fd);
    e->fd = -1;
    free(e->buf);
    e->buf = NULL;
}

/* ---- audit ----------------------------------------------------------- */

static double ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

static void audit_conn(conn_t *c, bool allow)
{
    char a[NETADDR_STRLEN];
    json_object *o = json_object_new_object();
    json_object_object_add(o, "ev", json_object_new_string("conn"));
    json_object_object_add(o, "decision", json_object_new_string(allow ? "allow" : "deny"));
    json_object_object_add(o, "src", json_object_new_string(netaddr_format(&c->src, a, sizeof a)));
    json_object_object_add(o, "host", c->has_name ? json_object_new_string(c->name) : NULL);
    json_object_object_add(o, "addr", json_object_new_string(netaddr_format(&c->dst, a, sizeof a)));
    json_object_object_add(o, "port", json_object_new_int(c->port));
    if (c->dialed.family)
        json_object_object_add(o, "upstream", json_object_new_string(netaddr_format(&c->dialed, a, sizeof a)));
    json_object_object_add(o, "rule", c->v.rule >= 0 ? json_object_new_int(c->v.rule) : NULL);
    json_object_object_add(o, "intercept", json_object_new_boolean(c->v.intercept));
    if (c->reason)
        json_object_object_add(o, "reason", json_object_new_string(c->reason));
    if (allow) {
        json_object_object_add(o, "up", json_object_new_int64((int64_t)c->up));
        json_object_object_add(o, "down", json_object_new_int64((int64_t)c->down));
        json_object_object_add(o, "us", json_object_new_int64((int64_t)(ms_since(&c->t0) * 1000)));
    }
    audit_emit(c->m->audit, o);
}

typedef struct {
    const char *method;
    char path[1024];
    int status;
    uint64_t up, down;
    bool used[64];
    const char *decision, *reason;
} req_log_t;

static void audit_http(conn_t *c, req_log_t *r)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "ev", json_object_new_string("http"));
    json_object_object_add(o, "decision", json_object_new_string(r->decision));
    json_object_object_add(o, "host", json_object_new_string(c->name));
    json_object_object_add(o, "port", json_object_new_int(c->port));
    json_object_object_add(o, "method", r->method ? json_object_new_string(r->method) : NULL);
    json_object_object_add(o, "path", json_object_new_string(r->path));
    json_object_object_add(o, "status", r->status ? json_object_new_int(r->status) : NULL);
    json_object_object_add(o, "up", json_object_new_int64((int64_t)r->up));
    json_object_object_add(o, "down", json_object_new_int64((int64_t)r->down));
    json_object *names = json_object_new_array();
    for (size_t i = 0; c->ss && i < c->ss->n && i < 64; i++)
        if (r->used[i])
            json_object_array_add(names, json_object_new_string(c->ss->s[i].name));
    json_object_object_add(o, "secrets", names);
    if (r->reason)
        json_object_object_add(o, "reason", json_object_new_string(r->reason));
    audit_emit(c->m->audit, o);
}

/* ---- decision -------------------------------------------------------- */

static int sockaddr_to(const struct sockaddr_storage *ss, netaddr_t *a, uint16_t *port)
{
    memset(a, 0, sizeof *a);
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
        a->family = AF_INET;
        memcpy(a->a, &s->sin_addr, 4);
        *port = ntohs(s->sin_port);
        return 0;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
        a->family = AF_INET6;
        memcpy(a->a, &s->sin6_addr, 16);
        *port = ntohs(s->sin6_port);
        return 0;
    }
    return -EAFNOSUPPORT;
}

/* c->v asks: hold the connection until it is decided (approval.h). host:
 * the name asked about, NULL for a CIDR rule (the address is). True if
 * allowed (c->v then grants like the ask rule would have). */
static bool conn_approve(conn_t *c, const char *host)
{
    approval_req_t r = { .host = host, .addr = c->dst, .src = c->src, .port = c->port,
                         .rule = c->v.rule, .intercept = c->v.intercept, .allow_private = c->v.allow_private,
                         .guest_fd = c->g.fd, .timeout_s = c->p->approval_timeout_s };
    char id[APPROVAL_ID_LEN + 1];
    approval_state_t st = approval_wait(&c->m->approvals, c->m->audit, &r, id);
    static const char *const reasons[] = { "", "approved", "denied by approval", "approval timed out",
                                           "guest gave up waiting for approval", "too many pending approvals" };
    c->reason = reasons[st];
    if (st != APPROVAL_ALLOWED) {
        c->v.ask = false;
        return false;
    }
    c->v.allow = true;
    c->v.reason = c->reason;
    c->approved = true;
    return true;
}

/* Decide; on allow, fill c->v, c->name and the address to dial. */
static bool conn_decide(conn_t *c, netaddr_t *dial)
{
    netmed_t *m = c->m;
    netaddr_t host[NETMED_MAX_HOST_ADDRS];
    size_t nhost = netmed_host_addrs(m, host, NETMED_MAX_HOST_ADDRS);
    char names[MAX_NAMES][DNS_NAME_MAX];
    size_t nn = dns_table_lookup(&m->names, &c->dst, names, MAX_NAMES);
    bool synthetic = dns_table_is_synthetic(&m->names, &c->dst);
    c->v = (verdict_t){ .allow = false, .rule = -1, .reason = "no rule" };
    verdict_t denied = { .rule = -1 };

    for (size_t i = 0; i < nn; i++) {
        verdict_t v = policy_check_name(c->p, names[i], c->port);
        if (v.denied && denied.rule < 0)
            denied = v;
        if ((v.allow && (!c->v.allow || (v.intercept && !c->v.intercept))) ||
            (v.ask && !c->v.allow && !c->v.ask)) {
            c->v = v;
            snprintf(c->name, sizeof c->name, "%s", names[i]);
            c->has_name = true;
        }
    }
    if (!c->v.allow && !c->v.ask && nn > 0) {
        snprintf(c->name, sizeof c->name, "%s", names[0]);
        c->has_name = true;
    }
    if (c->v.ask && !conn_approve(c, c->name))
        return false;
    if (c->v.allow) {
        netaddr_t res[MAX_RESOLVED];
        int n = resolve_upstream(c->p, c->name, res, MAX_RESOLVED);
        if (n <= 0) {
            c->reason = n == -ENOENT ? "name does not resolve upstream" : "upstream resolution failed";
            return false;
        }
        const char *why = NULL;
        for (int i = 0; i < n; i++) {
            if (policy_check_dial(c->p, &c->v, &res[i], host, nhost, &why)) {
                *dial = res[i];
                c->reason = c->v.reason;
                return true;
            }
        }
        /* Every address is inward: a rebinding attempt or a misconfigured
         * rule; either way never dialled. */
        c->reason = "name resolves only to blocked addresses (rebinding guard)";
        (void)why;
        c->v.allow = false;
        return false;
    }
    if (synthetic) {
        c->reason = nn ? "no rule for host and port" : "synthetic address not handed out by netmed";
        if (denied.rule >= 0)
            c->v = denied, c->reason = denied.reason;
        return false;
    }
    /* Literal address: CIDR rules (and open mode). */
    verdict_t v = policy_check_addr(c->p, &c->dst, c->port, host, nhost);
    if (v.ask) {
        c->v = v;
        if (!conn_approve(c, NULL))
            return false;
        v = c->v;
    }
    if (v.allow) {
        c->v = v;
        *dial = c->dst;
        c->reason = v.reason;
        return true;
    }
    c->reason = nn ? "no rule for host and port" : v.reason;
    if (v.denied || denied.rule >= 0)
        c->v = v.denied ? v : denied, c->reason = c->v.reason;
    return false;
}

static int dial(const netaddr_t *a, uint16_t port, int timeout_ms)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    if (a->family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&ss;
        s->sin_family = AF_INET;
        s->sin_port = htons(port);
        memcpy(&s->sin_addr, a->a, 4);
        sl = sizeof *s;
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
        s->sin6_family = AF_INET6;
        s->sin6_port = htons(port);
        memcpy(&s->sin6_addr, a->a, 16);
        sl = sizeof *s;
    }
    int fd = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    int r;
    do
        r = poll(&p, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    int err = 0;
    socklen_t el = sizeof err;
    if (r == 0)
        err = ETIMEDOUT;
    else if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (err) {
        close(fd);
        return -err;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

static void set_timeouts(int fd, int secs)
{
    struct timeval tv = { .tv_sec = secs };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* After an HTTP error reply: let the reply reach the guest before the
 * close (closing with unread input would reset the connection and could
 * destroy the reply). Drains at most 1 MiB or 1 s. */
static void graceful_close(ep_t *e)
{
    if (e->ssl) {
        SSL_shutdown(e->ssl);
        SSL_free(e->ssl);
        e->ssl = NULL;
    }
    if (e->fd < 0)
        return;
    shutdown(e->fd, SHUT_WR);
    struct timeval tv = { .tv_sec = 1 };
    setsockopt(e->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    for (size_t total = 0; total < (1u << 20);) {
        ssize_t n = read(e->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        total += (size_t)n;
    }
}

static void reset_close(int fd)
{
    struct linger l = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(fd);
}

/* ---- secrets in use ---------------------------------------------------- */

static bool secrets_for_host(const secrets_t *ss, const char *name)
{
    for (size_t i = 0; ss && i < ss->n; i++)
        if (secret_host_allowed(&ss->s[i], name))
            return true;
    return false;
}

/* Take netmed's current secrets set if it changed since this connection
 * took its own (a live reload). true if it changed. */
static bool conn_secrets_refresh(conn_t *c)
{
    secrets_t *cur = netmed_secrets_get(c->m);
    if (cur == c->ss) {
        secrets_unref(cur);
        return false;
    }
    secrets_unref(c->ss);
    c->ss = cur;
    c->scrub = c->has_name && secrets_for_host(cur, c->name);
    return true;
}

/* ---- splice / tunnel ------------------------------------------------- */

/* Check the guest's first bytes of a named, non-intercepted connection:
 * a TLS SNI or an HTTP Host that names another host is refused.
 * 1 decided OK, 0 need more, -1 refuse. */
static int inspect_first(conn_t *c, const char *b, size_t n)
{
    if (!c->has_name || n == 0)
        return 1;
    char sni[256];
    if ((unsigned char)b[0] == 0x16) {
        int r = tls_peek_sni((const uint8_t *)b, n, sni, sizeof sni);
        if (r == -EAGAIN)
            return n >= PEEK_MAX ? -1 : 0;
        if (r < 0) {
            c->reason = "malformed TLS ClientHello";
            return -1;
        }
        if (r == 1 && strcmp(sni, c->name) != 0) {
            c->reason = "SNI does not match the connection's name";
            return -1;
        }
        return 1;
    }
    static const char *methods[] = { "GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "PATCH ", "OPTIONS " };
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
        size_t ml = strlen(methods[i]);
        if (strncmp(b, methods[i], n < ml ? n : ml) != 0)
            continue;
        long end = http_head_end(b, n);
        if (end == 0)
            return n >= PEEK_MAX ? -1 : 0;
        http_head_t h;
        const char *why = "bad HTTP head";
        if (end < 0 || http_parse_request(b, (size_t)end, &h, &why) < 0) {
            c->reason = why;
            return -1;
        }
        bool ok = !h.host || http_host_matches(h.host, c->name, c->port);
        http_head_free(&h);
        if (!ok) {
            c->reason = "Host header does not match the connection's name";
            return -1;
        }
        return 1;
    }
    return 1;                           /* another protocol: nothing to check */
}

/* A filter that still has to see the bytes (secrets to look for, or bytes
 * it holds back): that direction cannot be spliced. */
static bool filter_active(const secret_filter_t *f)
{
    return f && ((f->ss && f->ss->n > 0) || f->len > 0);
}

/* Pipe for zero-copy relaying (lazily made; -1 fds: copy instead). */
static bool splice_pipe(int p[2])
{
    if (p[0] >= 0)
        return true;
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) {
        p[0] = p[1] = -1;
        return false;
    }
    fcntl(p[1], F_SETPIPE_SZ, SPLICE_PIPE);   /* best effort: default is 64 KiB */
    return true;
}

/* Move what src has now into dst through the pipe, without copying it
 * through user space. Bytes moved (>0), 0 on EOF, -EAGAIN if src had
 * nothing after all, other <0 errors. */
static ssize_t splice_once(int src, int dst, const int p[2])
{
    ssize_t n;
    do
        n = splice(src, NULL, p[1], NULL, SPLICE_PIPE, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return n < 0 ? -errno : 0;
    for (size_t left = (size_t)n; left > 0;) {
        ssize_t w = splice(p[0], NULL, dst, NULL, left, SPLICE_F_MOVE);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EPIPE;
        left -= (size_t)w;
    }
    return n;
}

/* Relay both directions until both are closed. up_f scans guest→upstream
 * for placeholders, down_f masks upstream→guest (either may be NULL). */
static int tunnel(conn_t *c, secret_filter_t *up_f, secret_filter_t *down_f, bool inspect)
{
    char *buf = malloc(IO_CHUNK);
    char *peek = inspect ? malloc(PEEK_MAX) : NULL;
    size_t npeek = 0;
    bool g_open = true, u_open = true;
    int rc = 0;
    /* Plain TCP both ways: directions no filter needs to see are spliced
     * (zero copy) once they carry bulk data (SPLICE_AFTER bytes): short
     * exchanges never pay for the pipes. TLS, read-ahead bytes or an
     * active filter use buf. */
    int pup[2] = { -1, -1 }, pdown[2] = { -1, -1 };
    bool plain = !c->g.ssl && !c->u.ssl;
    if (!buf || (inspect && !peek)) {
        rc = -ENOMEM;
        goto out;
    }
    while (g_open || u_open) {
        bool g_ready = g_open && ep_pending(&c->g), u_ready = u_open && ep_pending(&c->u);
        if (!g_ready && !u_ready) {
            struct pollfd pf[2] = { { .fd = g_open ? c->g.fd : -1, .events = POLLIN },
                                    { .fd = u_open ? c->u.fd : -1, .events = POLLIN } };
            int r = poll(pf, 2, c->m->idle_timeout_s * 1000);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                c->reason = "idle timeout";
                break;
            }
            g_ready = pf[0].revents != 0;
            u_ready = pf[1].revents != 0;
        }
        if (up_f && conn_secrets_refresh(c)) {
            /* live reload: scan (and mask) with the new set from here on */
            secret_filter_rebind(up_f, c->ss);
            if (down_f)
                secret_filter_rebind(down_f, c->scrub ? c->ss : NULL);
        }
        if (g_ready && plain && !inspect && c->up >= SPLICE_AFTER && c->g.off >= c->g.len &&
            !filter_active(up_f) && splice_pipe(pup)) {
            ssize_t n = splice_once(c->g.fd, c->u.fd, pup);
            if (n < 0 && n != -EAGAIN) {
                rc = (int)n;
                break;
            }
            if (n > 0)
                c->up += (uint64_t)n;
            if (n == 0) {
                g_open = false;
                shutdown(c->u.fd, SHUT_WR);
            }
            g_ready = false;
        }
        if (u_ready && plain && c->down >= SPLICE_AFTER && c->u.off >= c->u.len && !filter_active(down_f) &&
            splice_pipe(pdown)) {
            ssize_t n = splice_once(c->u.fd, c->g.fd, pdown);
            if (n < 0 && n != -EAGAIN) {
                rc = (int)n;
                break;
            }
            if (n > 0)
                c->down += (uint64_t)n;
            if (n == 0) {
                u_open = false;
                shutdown(c->g.fd, SHUT_WR);
            }
            u_ready = false;
        }
        if (g_ready) {
            ssize_t n = ep_read(&c->g, buf, IO_CHUNK);
            if (n < 0) {
                rc = (int)n;
                break;
            }
            const char *out;
            size_t outn;
            if (inspect && n > 0) {
                size_t k = (size_t)n < PEEK_MAX - npeek ? (size_t)n : PEEK_MAX - npeek;
                memcpy(peek + npeek, buf, k);
                npeek += k;
                int d = inspect_first(c, peek, npeek);
                if (d < 0) {
                    c->blocked = true;
                    rc = -EPERM;
                    break;
                }
                if (d == 0)
                    continue;           /* hold everything until decided */
                inspect = false;
                memcpy(buf, peek, npeek < IO_CHUNK ? npeek : IO_CHUNK);
                if (npeek > IO_CHUNK) {  /* cannot happen: PEEK_MAX <= IO_CHUNK */
                    rc = -EINVAL;
                    break;
                }
                n = (ssize_t)npeek;
            }
            int fr = up_f ? secret_filter_push(up_f, buf, (size_t)n, n == 0, &out, &outn) : 0;
            if (!up_f) {
                out = buf;
                outn = (size_t)n;
            }
            if (fr == 1) {
                c->reason = "placeholder sent on a connection where it may not be used";
                c->blocked = true;
                rc = -EPERM;
                break;
            }
            if (fr < 0 || (outn && ep_write(&c->u, out, outn) < 0)) {
                rc = -EIO;
                break;
            }
            c->up += outn;
            if (n == 0) {
                g_open = false;
                if (c->u.ssl)
                    SSL_shutdown(c->u.ssl);
                else
                    shutdown(c->u.fd, SHUT_WR);
            }
        }
        if (u_ready) {
            ssize_t n = ep_read(&c->u, buf, IO_CHUNK);
            if (n < 0) {
                rc = (int)n;
                break;
            }
            const char *out = buf;
            size_t outn = (size_t)n;
            if (down_f && secret_filter_push(down_f, buf, (size_t)n, n == 0, &out, &outn) < 0) {
                rc = -ENOMEM;
                break;
            }
            if (outn && ep_write(&c->g, out, outn) < 0) {
                rc = -EIO;
                break;
            }
            c->down += outn;
            if (n == 0) {
                u_open = false;
                if (c->g.ssl)
                    SSL_shutdown(c->g.ssl);
                else
                    shutdown(c->g.fd, SHUT_WR);
            }
        }
    }
out:
    for (int i = 0; i < 2; i++) {
        if (pup[i] >= 0)
            close(pup[i]);
        if (pdown[i] >= 0)
            close(pdown[i]);
    }
    free(buf);
    free(peek);
    return rc;
}

/* ---- HTTP interception ----------------------------------------------- */

static void send_error(conn_t *c, int status, const char *reason)
{
    char msg[512];
    const char *text = status == 400 ? "Bad Request" : status == 403 ? "Forbidden"
                     : status == 502 ? "Bad Gateway" : "Error";
    int bl = snprintf(msg, sizeof msg, "netmed: %s\n", reason);
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                      "Connection: close\r\n\r\n", status, text, bl);
    ep_write(&c->g, head, (size_t)hl);
    ep_write(&c->g, msg, (size_t)bl);
}

/* Relay one message body from src to dst with framing kind; the filter (may
 * be NULL) sees the decoded bytes. Chunked bodies are re-chunked (trailers
 * dropped). 0 ok, 1 filter found a placeholder, <0 error. */
static int relay_body(ep_t *src, ep_t *dst, body_kind_t kind, uint64_t length, secret_filter_t *f,
                      uint64_t *count)
{
    char *buf = malloc(IO_CHUNK);
    if (!buf)
        return -ENOMEM;
    int rc = 0;
    const char *out;
    size_t outn;
#define EMIT(data, n, last)                                                               \
    do {                                                                                  \
        if (f) {                                                                          \
            int fr_ = secret_filter_push(f, (data), (n), (last), &out, &outn);            \
            if (fr_) { rc = fr_ < 0 ? fr_ : 1; goto out; }                                \
        } else { out = (data); outn = (n); }                                              \
        if (outn) {                                                                       \
            if (kind == BODY_CHUNKED) {                                                   \
                char ch[24]; int cl_ = snprintf(ch, sizeof ch, "%zx\r\n", outn);          \
                if (ep_write(dst, ch, (size_t)cl_) < 0 || ep_write(dst, out, outn) < 0 || \
                    ep_write(dst, "\r\n", 2) < 0) { rc = -EIO; goto out; }                \
            } else if (ep_write(dst, out, outn) < 0) { rc = -EIO; goto out; }             \
            *count += outn;                                                               \
        }                                                                                 \
    } while (0)

    if (kind == BODY_LENGTH) {
        uint64_t left = length;
        while (left > 0) {
            ssize_t n = ep_read(src, buf, left < IO_CHUNK ? (size_t)left : IO_CHUNK);
            if (n <= 0) {
                rc = n == 0 ? -EPIPE : (int)n;
                goto out;
            }
            left -= (uint64_t)n;
            EMIT(buf, (size_t)n, left == 0);
        }
    } else if (kind == BODY_CLOSE) {
        for (;;) {
            ssize_t n = ep_read(src, buf, IO_CHUNK);
            if (n < 0) {
                rc = (int)n;
                goto out;
            }
            EMIT(buf, (size_t)n, n == 0);
            if (n == 0)
                break;
        }
    } else if (kind == BODY_CHUNKED) {
        char line[4096];
        for (;;) {
            int ll = ep_read_line(src, line, sizeof line);
            uint64_t size;
            if (ll < 0 || http_parse_chunk_size(line, (size_t)ll, &size) < 0) {
                rc = -EINVAL;
                goto out;
            }
            if (size == 0) {
                /* trailers: read and drop up to the empty line */
                int tl, ntr = 0;
                while ((tl = ep_read_line(src, line, sizeof line)) > 0)
                    if (++ntr > 64) {
                        rc = -EINVAL;
                        goto out;
                    }
                if (tl < 0 && tl != -EINVAL) {
                    rc = tl;
                    goto out;
                }
                if (tl < 0) {
                    rc = -EINVAL;
                    goto out;
                }
                EMIT(buf, 0, true);
                if (ep_write(dst, "0\r\n\r\n", 5) < 0)
                    rc = -EIO;
                goto out;
            }
            while (size > 0) {
                ssize_t n = ep_read(src, buf, size < IO_CHUNK ? (size_t)size : IO_CHUNK);
                if (n <= 0) {
                    rc = n == 0 ? -EPIPE : (int)n;
                    goto out;
                }
                size -= (uint64_t)n;
                EMIT(buf, (size_t)n, false);
            }
            char crlf[2];
            size_t got = 0;
            while (got < 2) {
                ssize_t n = ep_read(src, crlf + got, 2 - got);
                if (n <= 0) {
                    rc = -EPIPE;
                    goto out;
                }
                got += (size_t)n;
            }
            if (crlf[0] != '\r' || crlf[1] != '\n') {
                rc = -EINVAL;
                goto out;
            }
        }
    }
#undef EMIT
out:
    free(buf);
    return rc;
}

/* Append to a growable string; -ENOMEM on failure. */
typedef struct {
    char *s;
    size_t len, cap;
} sbuf_t;

static int sb_add(sbuf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t nc = (b->len + n + 1) * 2;
        char *ns = realloc(b->s, nc);
        if (!ns)
            return -ENOMEM;
        b->s = ns;
        b->cap = nc;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
    return 0;
}

static int sb_str(sbuf_t *b, const char *s) { return sb_add(b, s, strlen(s)); }

static void sb_free(sbuf_t *b)
{
    if (b->s) {
        explicit_bzero(b->s, b->cap);   /* may hold a substituted secret */
        free(b->s);
    }
    b->s = NULL;
}

/* One request/response exchange. 1 keep going, 0 close cleanly, <0 abort. */
static int http_exchange(conn_t *c, bool tls)
{
    netmed_t *m = c->m;
    const secrets_t *ss;
    req_log_t log;
    memset(&log, 0, sizeof log);
    log.decision = "allow";
    long hl = ep_read_head(&c->g);
    if (hl == 0)
        return 0;
    conn_secrets_refresh(c);            /* every request sees the current secrets */
    ss = c->ss;
    http_head_t req, resp;
    memset(&resp, 0, sizeof resp);
    const char *why = "malformed request head";
    if (hl < 0 || http_parse_request(c->g.buf + c->g.off, (size_t)hl, &req, &why) < 0) {
        log.decision = "deny";
        log.reason = why;
        snprintf(log.path, sizeof log.path, "-");
        audit_http(c, &log);
        STAT_ADD(m, http_blocked, 1);
        send_error(c, 400, why);
        return -EINVAL;
    }
    c->g.off += (size_t)hl;
    STAT_ADD(m, http_requests, 1);
    log.method = req.method;
    snprintf(log.path, sizeof log.path, "%s", req.target);
    int rc = -EPERM;
    sbuf_t out = { 0 };

    /* Every request is checked: its Host, the current policy, and
     * placeholders anywhere but in headers to the secret's hosts over TLS. */
    if (req.host && !http_host_matches(req.host, c->name, c->port)) {
        log.reason = "Host header does not match the connection's name";
        goto deny;
    }
    policy_t *p = netmed_policy_get(m);
    verdict_t v = policy_check_name(p, c->name, c->port);
    policy_unref(p);
    if (!v.allow && !(v.ask && c->approved)) {
        log.reason = "policy no longer allows this host";
        goto deny;
    }
    if (secrets_find_placeholder(ss, req.target, strlen(req.target))) {
        log.reason = "placeholder in the request target";
        goto deny;
    }
    const char *line_fmt = req.minor ? "HTTP/1.1" : "HTTP/1.0";
    if (sb_str(&out, req.method) || sb_str(&out, " ") || sb_str(&out, req.target) || sb_str(&out, " ") ||
        sb_str(&out, line_fmt) || sb_str(&out, "\r\n"))
        goto nomem;
    for (size_t i = 0; i < req.nh; i++) {
        const char *n = req.h[i].name, *val = req.h[i].value;
        if (req.expect_continue && strcasecmp(n, "Expect") == 0)
            continue;                   /* answered by netmed below */
        if (c->scrub && strcasecmp(n, "Accept-Encoding") == 0)
            continue;                   /* replaced: responses must be scannable */
        char *sub = NULL;
        const secret_t *bad = NULL;
        if (!tls && secrets_find_placeholder(ss, val, strlen(val))) {
            log.reason = "placeholder over plain HTTP";
            goto deny;
        }
        if (secrets_substitute(ss, val, c->name, &sub, &bad, log.used) < 0)
            goto nomem;
        if (bad) {
            log.reason = "placeholder for a secret not allowed to this host";
            goto deny;
        }
        int e = sb_str(&out, n) || sb_str(&out, ": ") || sb_str(&out, sub ? sub : val) || sb_str(&out, "\r\n");
        if (sub) {
            explicit_bzero(sub, strlen(sub));
            free(sub);
        }
        if (e)
            goto nomem;
    }
    if (c->scrub && sb_str(&out, "Accept-Encoding: identity\r\n"))
        goto nomem;
    if (sb_str(&out, "\r\n"))
        goto nomem;
    for (size_t i = 0; ss && i < ss->n && i < 64; i++)
        if (log.used[i])
            STAT_ADD(m, secrets_injected, 1);

    if (req.expect_continue && req.body != BODY_NONE &&
        ep_write(&c->g, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0)
        goto io;
    if (ep_write(&c->u, out.s, out.len) < 0)
        goto io;
    c->up += out.len;
    sb_free(&out);

    secret_filter_t scan;
    secret_filter_init(&scan, ss, FILTER_SCAN);
    int br = relay_body(&c->g, &c->u, req.body, req.length, &scan, &log.up);
    secret_filter_free(&scan);
    if (br == 1) {
        log.reason = "placeholder in the request body";
        goto deny;
    }
    if (br < 0) {
        log.reason = "request body framing error";
        send_error(c, 400, log.reason);
        goto fail;
    }
    c->up += log.up;

    /* Response(s): 1xx interim ones are relayed, then the final one. */
    for (;;) {
        hl = ep_read_head(&c->u);
        if (hl <= 0) {
            log.reason = "upstream closed or sent a bad head";
            send_error(c, 502, log.reason);
            goto fail;
        }
        char *raw = c->u.buf + c->u.off;
        if (c->scrub)
            STAT_ADD(m, secrets_masked, secrets_mask(ss, raw, (size_t)hl));
        why = "malformed response head";
        if (http_parse_response(raw, (size_t)hl, req.method, &resp, &why) < 0) {
            log.reason = why;
            send_error(c, 502, why);
            goto fail;
        }
        if (resp.status >= 200 || resp.status == 101)
            break;
        if (ep_write(&c->g, raw, (size_t)hl) < 0)
            goto io;
        c->u.off += (size_t)hl;
        http_head_free(&resp);
    }
    log.status = resp.status;
    const char *ce = http_header_get(&resp, "Content-Encoding");
    if (c->scrub && ce && strcasecmp(ce, "identity") != 0 && resp.body != BODY_NONE) {
        log.reason = "encoded response from a host holding secrets cannot be scrubbed";
        send_error(c, 502, log.reason);
        goto fail;
    }
    if (ep_write(&c->g, c->u.buf + c->u.off, (size_t)hl) < 0)
        goto io;
    c->u.off += (size_t)hl;
    c->down += (uint64_t)hl;
    if (resp.status == 101) {
        if (!req.upgrade) {
            log.reason = "101 without an upgrade request";
            goto fail;
        }
        audit_http(c, &log);
        http_head_free(&req);
        http_head_free(&resp);
        secret_filter_t up_f, down_f;
        secret_filter_init(&up_f, ss, FILTER_SCAN);
        secret_filter_init(&down_f, c->scrub ? ss : NULL, FILTER_MASK);
        tunnel(c, &up_f, &down_f, false);
        STAT_ADD(m, secrets_masked, down_f.masked);
        secret_filter_free(&up_f);
        secret_filter_free(&down_f);
        return 0;
    }
    secret_filter_t mask;
    secret_filter_init(&mask, c->scrub ? ss : NULL, FILTER_MASK);
    br = relay_body(&c->u, &c->g, resp.body, resp.length, &mask, &log.down);
    STAT_ADD(m, secrets_masked, mask.masked);
    secret_filter_free(&mask);
    c->down += log.down;
    if (br < 0) {
        log.reason = "response body framing error";
        goto fail;
    }
    audit_http(c, &log);
    rc = (req.close || resp.close || resp.body == BODY_CLOSE) ? 0 : 1;
    http_head_free(&req);
    http_head_free(&resp);
    return rc;

deny:
    log.decision = "deny";
    STAT_ADD(m, http_blocked, 1);
    send_error(c, 403, log.reason);
    c->blocked = true;
    rc = -EPERM;
    goto done;
nomem:
    log.reason = "out of memory";
    rc = -ENOMEM;
    goto done;
io:
    log.reason = "I/O error";
fail:
    rc = -EIO;
done:
    audit_http(c, &log);
    sb_free(&out);
    http_head_free(&req);
    http_head_free(&resp);
    return rc;
}

/* Both TLS handshakes at once: the guest's (netmed serving the lane CA's
 * leaf) and the upstream one (verified), so the upstream round trips hide
 * behind the guest's slower side instead of following it. The guest's
 * handshake always runs to its end, so that an upstream failure can still
 * be answered with a 502. 0 both done; -1 the guest's failed; -2 the
 * guest's done and the upstream one failed (or c->u.ssl is NULL). */
static int handshake_both(conn_t *c)
{
    int gfl = fcntl(c->g.fd, F_GETFL), ufl = fcntl(c->u.fd, F_GETFL);
    fcntl(c->g.fd, F_SETFL, gfl | O_NONBLOCK);
    fcntl(c->u.fd, F_SETFL, ufl | O_NONBLOCK);
    bool g_done = false, u_done = false, u_failed = !c->u.ssl;
    short g_ev = POLLIN, u_ev = POLLIN;
    int rc = 0;
    for (;;) {
        /* SSL_get_error reads the thread's error queue: empty it before
         * each call so one side's failure is not taken for the other's. */
        if (!g_done) {
            ERR_clear_error();
            int r = SSL_accept(c->g.ssl);
            int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->g.ssl, r);
            if (e == SSL_ERROR_NONE)
                g_done = true;
            else if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                g_ev = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
            else {
                rc = -1;
                break;
            }
        }
        if (!u_done && !u_failed) {
            ERR_clear_error();
            int r = SSL_connect(c->u.ssl);
            int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->u.ssl, r);
            if (e == SSL_ERROR_NONE)
                u_done = true;
            else if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                u_ev = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
            else
                u_failed = true;
        }
        if (g_done && (u_done || u_failed))
            break;
        struct pollfd pf[2] = { { .fd = g_done ? -1 : c->g.fd, .events = g_ev },
                                { .fd = u_done || u_failed ? -1 : c->u.fd, .events = u_ev } };
        int r = poll(pf, 2, c->m->idle_timeout_s * 1000);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {                   /* timeout: whoever is not done failed */
            if (!g_done)
                rc = -1;
            u_failed = !u_done;
            break;
        }
    }
    fcntl(c->g.fd, F_SETFL, gfl);
    fcntl(c->u.fd, F_SETFL, ufl);
    if (rc == 0 && u_failed)
        rc = -2;
    return rc;
}

static void intercept(conn_t *c)
{
    /* TLS or plain HTTP: peek at the first byte (left in the socket for
     * OpenSSL to read). */
    unsigned char first;
    ssize_t pk;
    do
        pk = recv(c->g.fd, &first, 1, MSG_PEEK);
    while (pk < 0 && errno == EINTR);
    if (pk <= 0)
        return;
    bool tls = first == 0x16;
    if (tls) {
        int sni_bad = 0;
        c->g.ssl = tls_server_new(c->m->tls, c->g.fd, c->name, &sni_bad);
        c->u.ssl = c->g.ssl ? tls_client_new(c->m->tls, c->u.fd, c->name) : NULL;
        int hs = c->g.ssl ? handshake_both(c) : -1;
        if (hs == -1) {
            ERR_clear_error();
            c->reason = sni_bad ? "SNI does not match the connection's name" : "guest TLS handshake failed";
            c->blocked = true;
            return;
        }
        if (hs == -2) {
            long vr = c->u.ssl ? SSL_get_verify_result(c->u.ssl) : 0;
            ERR_clear_error();
            c->reason = vr != X509_V_OK ? "upstream certificate did not verify" : "upstream TLS handshake failed";
            c->blocked = true;
            send_error(c, 502, c->reason);
            return;
        }
    }
    int r;
    while ((r = http_exchange(c, tls)) == 1)
        ;
}

void *proxy_conn_thread(void *arg)
{
    conn_arg_t *ca = arg;
    netmed_t *m = ca->m;
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        reset_close(ca->fd);
        free(ca);
        __atomic_sub_fetch(&m->stats.active, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    c->m = m;
    c->g.fd = ca->fd;
    c->u.fd = -1;
    free(ca);
    clock_gettime(CLOCK_MONOTONIC, &c->t0);
    c->p = netmed_policy_get(m);
    c->ss = netmed_secrets_get(m);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    netaddr_t dialaddr;
    bool ok = false;
    if (getsockname(c->g.fd, (struct sockaddr *)&ss, &sl) < 0 || sockaddr_to(&ss, &c->dst, &c->port) < 0)
        goto out;
    sl = sizeof ss;
    if (getpeername(c->g.fd, (struct sockaddr *)&ss, &sl) < 0 || sockaddr_to(&ss, &c->src, &c->sport) < 0)
        goto out;
    set_timeouts(c->g.fd, m->idle_timeout_s);
    if (!conn_decide(c, &dialaddr)) {
        STAT_ADD(m, conns_denied, 1);
        audit_conn(c, false);
        goto out;
    }
    int fd = dial(&dialaddr, c->port, m->connect_timeout_ms);
    c->dialed = dialaddr;
    if (fd < 0) {
        c->reason = fd == -ETIMEDOUT ? "upstream connect timed out" : "upstream connect failed";
        STAT_ADD(m, conns_denied, 1);
        audit_conn(c, false);
        goto out;
    }
    c->u.fd = fd;
    set_timeouts(fd, m->idle_timeout_s);
    c->g.buf = malloc(EP_BUF);
    c->u.buf = malloc(EP_BUF);
    if (!c->g.buf || !c->u.buf)
        goto out;
    ok = true;
    STAT_ADD(m, conns_allowed, 1);
    c->scrub = c->has_name && secrets_for_host(c->ss, c->name);
    if (c->v.intercept) {
        intercept(c);
    } else {
        secret_filter_t scan;
        secret_filter_init(&scan, c->ss, FILTER_SCAN);
        tunnel(c, &scan, NULL, c->has_name);
        secret_filter_free(&scan);
    }
    STAT_ADD(m, bytes_up, c->up);
    STAT_ADD(m, bytes_down, c->down);
    audit_conn(c, !c->blocked);
out:
    if (!ok || (c->blocked && !c->v.intercept)) {
        /* refused before any reply, or a cut splice: reset */
        if (c->g.ssl) {
            SSL_free(c->g.ssl);
            c->g.ssl = NULL;
        }
        reset_close(c->g.fd);
        c->g.fd = -1;
    } else if (c->blocked) {
        graceful_close(&c->g);
    }
    ep_close(&c->g);
    ep_close(&c->u);
    policy_unref(c->p);
    secrets_unref(c->ss);
    free(c);
    __atomic_sub_fetch(&m->stats.active, 1, __ATOMIC_RELAXED);
    return NULL;
}

/* ---- DNS --------------------------------------------------------------- */

static void audit_dns(netmed_t *m, const char *name, int qtype, const char *decision, const char *reason,
                      const netaddr_t *ans, size_t nans)
{
    char a[NETADDR_STRLEN];
    json_object *o = json_object_new_object();
    json_object_object_add(o, "ev", json_object_new_string("dns"));
    json_object_object_add(o, "decision", json_object_new_string(decision));
    json_object_object_add(o, "name", json_object_new_string(name));
    json_object_object_add(o, "qtype", json_object_new_int(qtype));
    json_object *arr = json_object_new_array();
    for (size_t i = 0; i < nans; i++)
        json_object_array_add(arr, json_object_new_string(netaddr_format(&ans[i], a, sizeof a)));
    json_object_object_add(o, "answers", arr);
    if (reason)
        json_object_object_add(o, "reason", json_object_new_string(reason));
    audit_emit(m->audit, o);
}

static bool name_allows_private(const policy_t *p, const char *name)
{
    for (size_t i = 0; i < p->nrules; i++)
        if (p->rules[i].host && p->rules[i].allow_private && policy_host_match(p->rules[i].host, name))
            return true;
    return false;
}

/* Answer one guest query; returns the response length or <0 (drop). */
static int dns_answer(netmed_t *m, const uint8_t *q, size_t n, uint8_t *resp, size_t cap)
{
    dns_query_t dq;
    memset(&dq, 0, sizeof dq);
    int r = dns_parse_query(q, n, &dq);
    STAT_ADD(m, dns_queries, 1);
    if (r < 0) {
        if (n < 12)
            return -EINVAL;
        /* Echo no question: header only, with the error code. */
        dq.question_len = 0;
        dq.flags = (uint16_t)(q[2] << 8 | q[3]);
        return dns_build_response(resp, cap, q, &dq, r == -ENOTSUP ? DNS_RCODE_NOTIMP : DNS_RCODE_FORMERR,
                                  NULL, 0, 0);
    }
    if (dq.qclass != DNS_CLASS_IN) {
        STAT_ADD(m, dns_refused, 1);
        return dns_build_response(resp, cap, q, &dq, DNS_RCODE_REFUSED, NULL, 0, 0);
    }
    policy_t *p = netmed_policy_get(m);
    netaddr_t ans[MAX_RESOLVED];
    size_t nans = 0;
    int rcode = DNS_RCODE_NOERROR;
    const char *reason = NULL;
    uint32_t ttl = 30;
    if (!policy_name_allowed(p, dq.name)) {
        rcode = DNS_RCODE_NXDOMAIN;
        reason = "name not allowed by policy";
    } else if (dq.qtype != DNS_TYPE_A) {
        /* NODATA: the lane network is IPv4 only */
    } else if (p->dns_mode == DNS_SYNTHETIC) {
        if (dns_table_synth(&m->names, dq.name, &ans[0]) == 0) {
            nans = 1;
            ttl = 300;
        } else {
            rcode = DNS_RCODE_SERVFAIL;
            reason = "synthetic address range exhausted";
        }
    } else {
        int k = resolve_upstream(p, dq.name, ans, MAX_RESOLVED);
        if (k == -ENOENT) {
            rcode = DNS_RCODE_NXDOMAIN;
            reason = "no such name upstream";
        } else if (k < 0) {
            rcode = DNS_RCODE_SERVFAIL;
            reason = "upstream resolution failed";
        } else {
            netaddr_t host[NETMED_MAX_HOST_ADDRS];
            size_t nhost = netmed_host_addrs(m, host, NETMED_MAX_HOST_ADDRS);
            verdict_t v = { .allow = true, .rule = -1, .allow_private = name_allows_private(p, dq.name) };
            for (int i = 0; i < k; i++)
                if (policy_check_dial(p, &v, &ans[i], host, nhost, NULL))
                    ans[nans++] = ans[i];
            for (size_t i = 0; i < nans; i++)
                dns_table_record(&m->names, dq.name, &ans[i]);
            if (nans == 0) {
                rcode = DNS_RCODE_NXDOMAIN;
                reason = "name resolves only to blocked addresses";
            }
        }
    }
    policy_unref(p);
    if (rcode != DNS_RCODE_NOERROR)
        STAT_ADD(m, dns_refused, 1);
    audit_dns(m, dq.name, dq.qtype, rcode == DNS_RCODE_NOERROR ? "allow" : "deny", reason, ans, nans);
    return dns_build_response(resp, cap, q, &dq, rcode, ans, nans, ttl);
}

void *dns_thread(void *arg)
{
    netmed_t *m = arg;
    uint8_t q[1500], resp[1500];
    for (;;) {
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(m->dns_fd, q, sizeof q, 0, (struct sockaddr *)&from, &fl);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            if (errno == EBADF)
                return NULL;
            continue;
        }
        int rl = dns_answer(m, q, (size_t)n, resp, 512);
        if (rl > 0)
            sendto(m->dns_fd, resp, (size_t)rl, 0, (struct sockaddr *)&from, fl);
    }
    return NULL;
}
