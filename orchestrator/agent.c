/* agent.c — lanesd's client for lane-init's control channel (see agent.h,
 * common/proto.h).
 *
 * One agent_t owns: the chardev connection (re-created on every connect
 * attempt), three timers (connect retry / HELLO resend, overall readiness
 * deadline, deferred notifications), a bounded receive buffer holding at most
 * one maximal frame, and the list of streams.
 *
 * Invariants:
 *  - Every stream gets exactly one terminal callback ("user_done"). It stays in
 *    the stream list until it is also finished on the wire ("guest_done") or
 *    the connection is dead, so a frame for a cancelled stream that the guest
 *    sent before it saw LP_CANCEL is recognised and dropped, while a frame for
 *    a stream the guest itself already ended is a violation.
 *  - For each stream and direction: recv_window + unacked + ack_pending is
 *    the window the guest was granted; a data frame larger than recv_window
 *    is a violation.
 *  - Streams are only freed at depth 0 (no callback of ours on the stack), so
 *    code that invoked a user callback can keep using its stream pointer; the
 *    agent itself is freed only from a uv close callback, never while any of
 *    our functions is on the stack.
 *  - Connection failures are reported from the next loop iteration (defer
 *    timer), never from inside the API call that detected them; agent_free()
 *    runs the remaining terminal callbacks synchronously and after it returns
 *    no callback is invoked any more.
 *
 * Threading: everything on the loop given to agent_new(); no locks.
 */
#include "agent.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/un.h>

#include "proto.h"

#define CONNECT_RETRY_MS 50
#define HELLO_RESEND_MS 500
/* Flush acknowledged receive window once this much has accumulated, or
 * whenever the guest's remaining window is below it. */
#define ACK_FLUSH_BYTES (LP_WINDOW_INITIAL / 4)
/* Data (stdin / file put) is only accepted while less than this is queued. */
#define QUEUE_DATA_MAX (4u * 1024u * 1024u)
/* Anything beyond this means the guest stopped reading: fail the channel. */
#define QUEUE_HARD_MAX (16u * 1024u * 1024u)
/* Upper bound on what a (hostile) guest can grant us. */
#define SEND_WINDOW_MAX (64ull * 1024u * 1024u)
#define RBUF_SIZE (LP_HDR_SIZE + LP_MAX_PAYLOAD)

enum agent_state { AS_IDLE, AS_CONNECTING, AS_HELLO, AS_READY, AS_DEAD };

enum stream_kind { SK_EXEC, SK_PUT, SK_GET, SK_SYNC, SK_SHUTDOWN, SK_FREEZE, SK_THAW, SK_CONFIGURE };

typedef struct stream {
    struct stream *next, *prev;
    agent_t *agent;
    uint32_t id;
    enum stream_kind kind;
    bool user_done;   /* terminal callback delivered (or about to be) */
    bool term_queued; /* cancelled: terminal callback pending in the defer pass */
    bool guest_done;  /* guest sent its terminal frame */
    bool cancelled;
    bool started;     /* EXEC_STARTED / FILE_INFO seen */
    bool out_eof[3];  /* [1] stdout or file data, [2] stderr */
    bool in_open;     /* host sends data on this stream (stdin, file put) */
    bool in_eof;      /* host sent its EOF */
    bool want_room;   /* caller saw room 0: call on_*room when it reopens */
    uint64_t recv_window;
    uint64_t unacked;
    uint64_t ack_pending;
    uint64_t send_window;
    void *ud;
    union {
        agent_exec_callbacks_t exec;
        agent_xfer_callbacks_t xfer;
        agent_done_cb done;
    } cb;
} stream_t;

struct agent_exec {
    stream_t s;
};

struct agent_xfer {
    stream_t s;
};

typedef struct ping {
    struct ping *next;
    uint64_t seq;
    agent_done_cb cb;
    void *ud;
} ping_t;

/* One connection attempt: the pipe and its connect request live together. */
typedef struct conn {
    uv_pipe_t pipe;
    uv_connect_t req;
    agent_t *agent;
} conn_t;

typedef struct wreq {
    uv_write_t req;
    agent_t *agent;
    size_t size;
    uint8_t data[];
} wreq_t;

struct agent {
    uv_loop_t *loop;
    char *sock_path;
    agent_callbacks_t cb;
    void *ud;

    enum agent_state state;
    bool freeing;
    bool fail_pending; /* on_disconnect not yet delivered */
    bool need_reap;
    int depth;         /* nesting of our functions that call user callbacks */
    int handles;       /* open uv handles; the agent is freed when 0 after free */
    int fail_err;
    char fail_msg[512];

    uv_timer_t tick;     /* connect retry, then HELLO resend */
    uv_timer_t deadline; /* connect + handshake must finish by then */
    uv_timer_t defer;    /* deferred terminal callbacks and on_disconnect */
    uint64_t timeout_ms;
    conn_t *conn;
    int last_connect_err;

    uint64_t nonce;
    unsigned hellos_sent;
    unsigned acks_seen;

    uint8_t *rbuf;
    size_t rlen;
    uint8_t *tx; /* scratch for building control payloads */

    uint64_t next_id;
    stream_t *head, *tail;
    ping_t *pings, **pings_tail;
    uint64_t ping_seq;
    size_t queued;
};

/* Fields a guest frame may carry; sizes are checked by parse_fields(). */
typedef struct {
    bool has_nonce, has_version, has_boot_ms, has_pid, has_increment, has_exit_code, has_term_signal,
        has_timed_out, has_errno, has_size, has_mode;
    uint64_t nonce, boot_ms, size;
    uint32_t version, pid, increment, term_signal, timed_out, err, mode;
    int32_t exit_code;
    const uint8_t *hostname, *kernel, *message;
    uint32_t hostname_len, kernel_len, message_len;
} fields_t;

static void agent_fail(agent_t *a, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void on_defer(uv_timer_t *t);

/* ---- small helpers ------------------------------------------------------- */

static void enter(agent_t *a)
{
    a->depth++;
}

static void stream_unlink(agent_t *a, stream_t *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        a->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        a->tail = s->prev;
    s->next = s->prev = NULL;
}

/* Free streams that are finished for both the caller and the wire. Only at
 * depth 0: a caller further up the stack may still hold one. */
static void reap(agent_t *a)
{
    if (a->depth > 0 || !a->need_reap || a->freeing)
        return;
    a->need_reap = false;
    stream_t *next;
    for (stream_t *s = a->head; s; s = next) {
        next = s->next;
        if (s->user_done && (s->guest_done || a->state == AS_DEAD)) {
            stream_unlink(a, s);
            free(s);
        }
    }
}

static void leave(agent_t *a)
{
    a->depth--;
    reap(a);
}

static stream_t *stream_find(agent_t *a, uint32_t id)
{
    for (stream_t *s = a->head; s; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

static const char *kind_name(enum stream_kind k)
{
    switch (k) {
    case SK_EXEC: return "exec";
    case SK_PUT: return "file put";
    case SK_GET: return "file get";
    case SK_SYNC: return "sync";
    case SK_SHUTDOWN: return "shutdown";
    case SK_FREEZE: return "freeze";
    case SK_THAW: return "thaw";
    case SK_CONFIGURE: return "configure";
    }
    return "?";
}

static void copy_str(char *out, size_t cap, const uint8_t *val, uint32_t len)
{
    size_t n = len < cap - 1 ? len : cap - 1;
    if (val && n)
        memcpy(out, val, n);
    out[n] = '\0';
}

/* Parse and size-check every known tag of a guest control payload. Returns 0
 * or -EBADMSG (overrun, wrong integer size, NUL inside a string). */
static int parse_fields(const uint8_t *p, size_t len, fields_t *f)
{
    lp_tlv_iter_t it;
    uint16_t tag;
    const uint8_t *v;
    uint32_t l;
    int r;

    memset(f, 0, sizeof(*f));
    lp_tlv_init(&it, p, len);
    while ((r = lp_tlv_next(&it, &tag, &v, &l)) == 1) {
        int e = 0;
        switch (tag) {
        case LP_T_NONCE: e = lp_val_u64(v, l, &f->nonce); f->has_nonce = true; break;
        case LP_T_VERSION: e = lp_val_u32(v, l, &f->version); f->has_version = true; break;
        case LP_T_BOOT_MS: e = lp_val_u64(v, l, &f->boot_ms); f->has_boot_ms = true; break;
        case LP_T_PID: e = lp_val_u32(v, l, &f->pid); f->has_pid = true; break;
        case LP_T_INCREMENT: e = lp_val_u32(v, l, &f->increment); f->has_increment = true; break;
        case LP_T_EXIT_CODE: e = lp_val_i32(v, l, &f->exit_code); f->has_exit_code = true; break;
        case LP_T_TERM_SIGNAL: e = lp_val_u32(v, l, &f->term_signal); f->has_term_signal = true; break;
        case LP_T_TIMED_OUT: e = lp_val_u32(v, l, &f->timed_out); f->has_timed_out = true; break;
        case LP_T_ERRNO: e = lp_val_u32(v, l, &f->err); f->has_errno = true; break;
        case LP_T_SIZE: e = lp_val_u64(v, l, &f->size); f->has_size = true; break;
        case LP_T_MODE: e = lp_val_u32(v, l, &f->mode); f->has_mode = true; break;
        case LP_T_HOSTNAME: f->hostname = v; f->hostname_len = l; e = memchr(v, 0, l) ? -EBADMSG : 0; break;
        case LP_T_KERNEL: f->kernel = v; f->kernel_len = l; e = memchr(v, 0, l) ? -EBADMSG : 0; break;
        case LP_T_MESSAGE: f->message = v; f->message_len = l; e = memchr(v, 0, l) ? -EBADMSG : 0; break;
        default: break; /* unknown tags are ignored */
        }
        if (e < 0)
            return -EBADMSG;
    }
    return r < 0 ? -EBADMSG : 0;
}

/* ---- writing ------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    wreq_t *w = (wreq_t *)req;
    agent_t *a = w->agent;
    bool crossed = a->queued >= QUEUE_DATA_MAX && a->queued - w->size < QUEUE_DATA_MAX;
    a->queued -= w->size;
    free(w);
    if (a->freeing)
        return;
    if (status < 0 && status != UV_ECANCELED) {
        agent_fail(a, status, "write to guest control channel: %s", uv_strerror(status));
        return;
    }
    if (!crossed || a->state != AS_READY)
        return;
    /* The queue drained below the data limit: wake writers that saw no room. */
    enter(a);
    for (stream_t *s = a->head; s && a->state == AS_READY && !a->freeing; s = s->next) {
        if (!s->want_room || s->user_done || s->send_window == 0)
            continue;
        s->want_room = false;
        if (s->kind == SK_EXEC && s->cb.exec.on_stdin_room)
            s->cb.exec.on_stdin_room((agent_exec_t *)s, s->ud);
        else if (s->kind == SK_PUT && s->cb.xfer.on_room)
            s->cb.xfer.on_room((agent_xfer_t *)s, s->ud);
    }
    leave(a);
}

/* Queue one frame. On failure the connection is failed (reported later) and
 * a negative errno returned. */
static int send_frame(agent_t *a, uint8_t type, uint32_t stream, const void *payload, size_t len)
{
    if (a->freeing || a->state == AS_DEAD || !a->conn || a->state < AS_HELLO)
        return -ENOTCONN;
    if (len > LP_MAX_PAYLOAD)
        return -EMSGSIZE;
    size_t total = LP_HDR_SIZE + len;
    if (a->queued + total > QUEUE_HARD_MAX) {
        agent_fail(a, -ENOBUFS, "guest is not reading its control channel (%zu bytes queued)", a->queued);
        return -ENOBUFS;
    }
    wreq_t *w = malloc(sizeof(*w) + total);
    if (!w) {
        agent_fail(a, -ENOMEM, "out of memory queueing a %s frame", lp_type_name(type));
        return -ENOMEM;
    }
    w->agent = a;
    w->size = total;
    lp_hdr_encode(w->data, type, stream, (uint32_t)len);
    if (len)
        memcpy(w->data + LP_HDR_SIZE, payload, len);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)total);
    int r = uv_write(&w->req, (uv_stream_t *)&a->conn->pipe, &b, 1, on_write);
    if (r < 0) {
        free(w);
        agent_fail(a, r, "write to guest control channel: %s", uv_strerror(r));
        return r;
    }
    a->queued += total;
    return 0;
}

static int send_window(agent_t *a, uint32_t stream, uint32_t inc)
{
    lp_msg_t m;
    uint8_t buf[16];
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_u32(&m, LP_T_INCREMENT, inc);
    return send_frame(a, LP_WINDOW, stream, buf, m.len);
}

/* ---- connection ---------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    agent_t *a = h->data;
    if (h->type == UV_NAMED_PIPE)
        free(h); /* conn_t starts with its pipe */
    if (--a->handles > 0 || !a->freeing)
        return;
    stream_t *next;
    for (stream_t *s = a->head; s; s = next) {
        next = s->next;
        free(s);
    }
    ping_t *pn;
    for (ping_t *p = a->pings; p; p = pn) {
        pn = p->next;
        free(p);
    }
    free(a->rbuf);
    free(a->tx);
    free(a->sock_path);
    free(a);
}

static void conn_close(agent_t *a)
{
    conn_t *c = a->conn;
    if (!c)
        return;
    a->conn = NULL;
    uv_read_stop((uv_stream_t *)&c->pipe);
    uv_close((uv_handle_t *)&c->pipe, on_handle_closed);
}

/* Mark the connection dead and schedule the notifications (terminal callbacks
 * for open streams and pings, then on_disconnect) for the defer pass. */
static void agent_fail(agent_t *a, int err, const char *fmt, ...)
{
    if (a->freeing || a->state == AS_DEAD)
        return;
    a->state = AS_DEAD;
    a->fail_err = err < 0 ? err : -EIO;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->fail_msg, sizeof(a->fail_msg), fmt, ap);
    va_end(ap);
    a->fail_pending = true;
    a->need_reap = true;
    uv_timer_stop(&a->tick);
    uv_timer_stop(&a->deadline);
    conn_close(a);
    uv_timer_start(&a->defer, on_defer, 0, 0);
}

static void send_hello(agent_t *a)
{
    lp_msg_t m;
    uint8_t buf[32];
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_u64(&m, LP_T_NONCE, a->nonce);
    lp_msg_put_u32(&m, LP_T_VERSION, LP_VERSION);
    if (send_frame(a, LP_HELLO, 0, buf, m.len) == 0)
        a->hellos_sent++;
}

static void try_connect(agent_t *a);

static void on_tick(uv_timer_t *t)
{
    agent_t *a = t->data;
    if (a->state == AS_CONNECTING)
        try_connect(a);
    else if (a->state == AS_HELLO)
        send_hello(a);
}

static void on_deadline(uv_timer_t *t)
{
    agent_t *a = t->data;
    if (a->state == AS_CONNECTING)
        agent_fail(a, -ETIMEDOUT, "connect to %s: timed out after %llu ms (%s)", a->sock_path,
                   (unsigned long long)a->timeout_ms,
                   a->last_connect_err ? uv_strerror(a->last_connect_err) : "no answer");
    else if (a->state == AS_HELLO)
        agent_fail(a, -ETIMEDOUT, "guest did not answer HELLO within %llu ms",
                   (unsigned long long)a->timeout_ms);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    agent_t *a = ((conn_t *)h)->agent;
    /* The decoder always leaves less than one whole frame behind, so there
     * is room here. */
    *buf = uv_buf_init((char *)a->rbuf + a->rlen, (unsigned)(RBUF_SIZE - a->rlen));
}

static void process_input(agent_t *a);

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = (conn_t *)st;
    agent_t *a = c->agent;
    if (c != a->conn || a->freeing)
        return;
    if (nread == UV_EOF) {
        agent_fail(a, -ECONNRESET, "guest control channel closed");
        return;
    }
    if (nread < 0) {
        agent_fail(a, (int)nread, "read from guest control channel: %s", uv_strerror((int)nread));
        return;
    }
    a->rlen += (size_t)nread;
    enter(a);
    process_input(a);
    leave(a);
}

static void on_connect(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    agent_t *a = c->agent;
    if (c != a->conn || a->freeing || a->state != AS_CONNECTING)
        return;
    if (status < 0) {
        a->last_connect_err = status;
        conn_close(a);
        uv_timer_start(&a->tick, on_tick, CONNECT_RETRY_MS, 0);
        return;
    }
    a->state = AS_HELLO;
    a->rlen = 0;
    a->hellos_sent = a->acks_seen = 0;
    if (getrandom(&a->nonce, sizeof(a->nonce), 0) != (ssize_t)sizeof(a->nonce))
        a->nonce = uv_hrtime() ^ ((uint64_t)(uintptr_t)a << 16);
    int r = uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
    if (r < 0) {
        agent_fail(a, r, "read from guest control channel: %s", uv_strerror(r));
        return;
    }
    send_hello(a);
    uv_timer_start(&a->tick, on_tick, HELLO_RESEND_MS, HELLO_RESEND_MS);
}

static void try_connect(agent_t *a)
{
    conn_t *c = calloc(1, sizeof(*c));
    if (!c) {
        agent_fail(a, -ENOMEM, "out of memory connecting to %s", a->sock_path);
        return;
    }
    int r = uv_pipe_init(a->loop, &c->pipe, 0);
    if (r < 0) {
        free(c);
        agent_fail(a, r, "connect to %s: %s", a->sock_path, uv_strerror(r));
        return;
    }
    c->agent = a;
    c->pipe.data = a; /* for on_handle_closed */
    c->req.data = c;
    a->handles++;
    a->conn = c;
    uv_pipe_connect(&c->req, &c->pipe, a->sock_path, on_connect);
}

/* ---- terminal delivery ----------------------------------------------------- */

/* Deliver the terminal callback of s once. ex may be NULL for errors. */
static void stream_finish(stream_t *s, int err, const char *msg, const agent_exit_t *ex)
{
    agent_t *a = s->agent;
    if (s->user_done)
        return;
    if (s->cancelled) {
        /* Whatever the guest said, the caller asked to stop. */
        err = -ECANCELED;
        msg = "cancelled";
        ex = NULL;
    }
    s->user_done = true;
    s->want_room = false;
    a->need_reap = true;
    switch (s->kind) {
    case SK_EXEC: {
        agent_exit_t e;
        if (ex) {
            e = *ex;
        } else {
            memset(&e, 0, sizeof(e));
            e.error = err;
            snprintf(e.message, sizeof(e.message), "%s", msg ? msg : "");
        }
        if (s->cb.exec.on_exit)
            s->cb.exec.on_exit((agent_exec_t *)s, &e, s->ud);
        break;
    }
    case SK_PUT:
    case SK_GET:
        if (s->cb.xfer.on_done)
            s->cb.xfer.on_done((agent_xfer_t *)s, err, err ? msg : NULL, s->ud);
        break;
    case SK_SYNC:
    case SK_SHUTDOWN:
    case SK_FREEZE:
    case SK_THAW:
    case SK_CONFIGURE:
        if (s->cb.done)
            s->cb.done(a, err, err ? msg : NULL, s->ud);
        break;
    }
}

/* Terminal callbacks for everything still open, with err/msg. */
static void finish_all(agent_t *a, int err, const char *msg)
{
    for (stream_t *s = a->head; s; s = s->next)
        stream_finish(s, err, msg, NULL);
    while (a->pings) {
        ping_t *p = a->pings;
        a->pings = p->next;
        if (!a->pings)
            a->pings_tail = &a->pings;
        if (p->cb)
            p->cb(a, err, msg, p->ud);
        free(p);
    }
}

static void on_defer(uv_timer_t *t)
{
    agent_t *a = t->data;
    enter(a);
    for (stream_t *s = a->head; s && !a->freeing; s = s->next) {
        if (s->term_queued && !s->user_done)
            stream_finish(s, -ECANCELED, "cancelled", NULL);
    }
    if (a->state == AS_DEAD && a->fail_pending && !a->freeing) {
        a->fail_pending = false;
        finish_all(a, a->fail_err, a->fail_msg);
        if (!a->freeing && a->cb.on_disconnect)
            a->cb.on_disconnect(a, a->fail_err, a->fail_msg, a->ud);
    }
    leave(a);
}

/* ---- decoding ------------------------------------------------------------ */

#define violation(a, ...) agent_fail((a), -EPROTO, "protocol violation: " __VA_ARGS__)

static void flush_acks(stream_t *s)
{
    agent_t *a = s->agent;
    if (s->ack_pending == 0 || a->state != AS_READY || s->guest_done)
        return;
    if (s->ack_pending < ACK_FLUSH_BYTES && s->recv_window >= ACK_FLUSH_BYTES)
        return;
    uint64_t inc = s->ack_pending;
    if (send_window(a, s->id, (uint32_t)inc) < 0)
        return;
    s->ack_pending = 0;
    s->recv_window += inc;
}

static void stream_ack(stream_t *s, size_t len)
{
    if (!s || s->user_done || s->agent->state != AS_READY)
        return;
    uint64_t n = len < s->unacked ? len : s->unacked;
    s->unacked -= n;
    s->ack_pending += n;
    flush_acks(s);
}

/* Account received data against the window; false (and the channel failed)
 * on overrun. */
static bool take_window(agent_t *a, stream_t *s, const lp_frame_t *f)
{
    if (f->len > s->recv_window) {
        violation(a, "%s stream %u overran its window (%u bytes, %llu allowed)", kind_name(s->kind), s->id,
                  f->len, (unsigned long long)s->recv_window);
        return false;
    }
    s->recv_window -= f->len;
    if (s->user_done || s->cancelled) {
        /* Nobody reads a cancelled stream: acknowledge on its behalf. */
        s->ack_pending += f->len;
        flush_acks(s);
    } else {
        s->unacked += f->len;
    }
    return true;
}

static void handle_hello_ack(agent_t *a, const fields_t *fl)
{
    if (fl->has_version && fl->version != LP_VERSION) {
        agent_fail(a, -EPROTONOSUPPORT, "guest speaks protocol version %u, we speak %u", fl->version, LP_VERSION);
        return;
    }
    agent_hello_t h;
    memset(&h, 0, sizeof(h));
    copy_str(h.hostname, sizeof(h.hostname), fl->hostname, fl->hostname_len);
    copy_str(h.kernel, sizeof(h.kernel), fl->kernel, fl->kernel_len);
    h.boot_ms = fl->boot_ms;
    a->acks_seen = 1;
    a->state = AS_READY;
    uv_timer_stop(&a->tick);
    uv_timer_stop(&a->deadline);
    if (a->cb.on_ready)
        a->cb.on_ready(a, &h, a->ud);
}

/* Before the handshake: look at every possible frame start for a well-formed
 * HELLO_ACK with our nonce. Returns the offset just past it, or 0 and drops
 * what can never become one (keeping a possibly incomplete frame). */
static size_t scan_for_ack(agent_t *a)
{
    size_t keep = a->rlen;
    for (size_t off = 0; off < a->rlen; off += lp_resync_scan(a->rbuf + off, a->rlen - off)) {
        lp_frame_t f;
        size_t used;
        int r = lp_frame_parse(a->rbuf + off, a->rlen - off, &f, &used);
        if (r == 0) {
            if (keep == a->rlen)
                keep = off;
            continue;
        }
        if (r < 0 || f.type != LP_HELLO_ACK || f.stream != 0)
            continue;
        fields_t fl;
        if (parse_fields(f.payload, f.len, &fl) < 0 || !fl.has_nonce || fl.nonce != a->nonce)
            continue;
        handle_hello_ack(a, &fl);
        return off + used;
    }
    memmove(a->rbuf, a->rbuf + keep, a->rlen - keep);
    a->rlen -= keep;
    return 0;
}

static void handle_conn_frame(agent_t *a, const lp_frame_t *f)
{
    switch (f->type) {
    case LP_PING:
        send_frame(a, LP_PONG, 0, f->payload, f->len);
        return;
    case LP_PONG: {
        ping_t **pp = &a->pings;
        uint64_t seq;
        if (lp_val_u64(f->payload, f->len, &seq) == 0) {
            for (; *pp; pp = &(*pp)->next) {
                if ((*pp)->seq != seq)
                    continue;
                ping_t *p = *pp;
                *pp = p->next;
                if (!p->next)
                    a->pings_tail = pp;
                if (p->cb)
                    p->cb(a, 0, NULL, p->ud);
                free(p);
                return;
            }
        }
        violation(a, "PONG that answers no PING");
        return;
    }
    case LP_HELLO_ACK: {
        /* Answers to HELLOs resent before the first ACK arrived. */
        fields_t fl;
        if (a->acks_seen < a->hellos_sent && parse_fields(f->payload, f->len, &fl) == 0 && fl.has_nonce &&
            fl.nonce == a->nonce) {
            a->acks_seen++;
            return;
        }
        violation(a, "unexpected HELLO_ACK");
        return;
    }
    default:
        violation(a, "unexpected %s on stream 0", lp_type_name(f->type));
        return;
    }
}

static void handle_output(agent_t *a, stream_t *s, const lp_frame_t *f)
{
    int fd = f->type == LP_STDERR ? 2 : 1;
    if (s->out_eof[fd]) {
        violation(a, "%s after its EOF on stream %u", lp_type_name(f->type), s->id);
        return;
    }
    if (f->len == 0) {
        s->out_eof[fd] = true;
        return;
    }
    if (!take_window(a, s, f) || s->user_done || s->cancelled)
        return;
    if (s->kind == SK_EXEC) {
        if (s->cb.exec.on_output)
            s->cb.exec.on_output((agent_exec_t *)s, fd, f->payload, f->len, s->ud);
        else
            stream_ack(s, f->len);
    } else {
        if (s->cb.xfer.on_data)
            s->cb.xfer.on_data((agent_xfer_t *)s, f->payload, f->len, s->ud);
        else
            stream_ack(s, f->len);
    }
}

static void handle_stream_frame(agent_t *a, const lp_frame_t *f)
{
    stream_t *s = stream_find(a, f->stream);
    if (!s) {
        violation(a, "%s for unknown stream %u", lp_type_name(f->type), f->stream);
        return;
    }
    if (s->guest_done) {
        violation(a, "%s after the end of stream %u", lp_type_name(f->type), f->stream);
        return;
    }
    bool is_data = f->type == LP_STDOUT || f->type == LP_STDERR || f->type == LP_DATA;
    bool from_guest = is_data || f->type == LP_EXEC_STARTED || f->type == LP_WINDOW || f->type == LP_EXIT ||
                      f->type == LP_ERROR || f->type == LP_FILE_INFO || f->type == LP_OK;
    if (!from_guest) {
        violation(a, "unexpected %s on %s stream %u", lp_type_name(f->type), kind_name(s->kind), s->id);
        return;
    }
    fields_t fl;
    if (!is_data && parse_fields(f->payload, f->len, &fl) < 0) {
        violation(a, "malformed %s on stream %u", lp_type_name(f->type), f->stream);
        return;
    }
    enum stream_kind k = s->kind;

    switch (f->type) {
    case LP_WINDOW:
        if (!fl.has_increment) {
            violation(a, "WINDOW without INCREMENT on stream %u", s->id);
            return;
        }
        s->send_window += fl.increment;
        if (s->send_window > SEND_WINDOW_MAX)
            s->send_window = SEND_WINDOW_MAX;
        if (s->want_room && !s->user_done && !s->cancelled && s->send_window > 0 && a->queued < QUEUE_DATA_MAX) {
            s->want_room = false;
            if (k == SK_EXEC && s->cb.exec.on_stdin_room)
                s->cb.exec.on_stdin_room((agent_exec_t *)s, s->ud);
            else if (k == SK_PUT && s->cb.xfer.on_room)
                s->cb.xfer.on_room((agent_xfer_t *)s, s->ud);
        }
        return;
    case LP_EXEC_STARTED:
        if (k != SK_EXEC || s->started)
            break;
        s->started = true;
        if (!s->user_done && !s->cancelled && s->cb.exec.on_started)
            s->cb.exec.on_started((agent_exec_t *)s, fl.pid, s->ud);
        return;
    case LP_STDOUT:
    case LP_STDERR:
        if (k != SK_EXEC)
            break;
        handle_output(a, s, f);
        return;
    case LP_FILE_INFO:
        if (k != SK_GET || s->started)
            break;
        s->started = true;
        if (!s->user_done && !s->cancelled && s->cb.xfer.on_info)
            s->cb.xfer.on_info((agent_xfer_t *)s, fl.size, fl.mode, s->ud);
        return;
    case LP_DATA:
        if (k != SK_GET || !s->started)
            break;
        handle_output(a, s, f);
        return;
    case LP_EXIT: {
        if (k != SK_EXEC)
            break;
        s->guest_done = true;
        a->need_reap = true;
        agent_exit_t e;
        memset(&e, 0, sizeof(e));
        e.term_signal = fl.has_term_signal && fl.term_signal < 128 ? (int)fl.term_signal : 0;
        e.exited = fl.has_exit_code && e.term_signal == 0;
        e.code = e.exited ? fl.exit_code : 0;
        e.timed_out = fl.timed_out != 0;
        if (!e.exited && e.term_signal == 0) {
            e.error = -EPROTO;
            snprintf(e.message, sizeof(e.message), "guest reported no exit status");
        }
        stream_finish(s, 0, NULL, &e);
        return;
    }
    case LP_OK:
        if (k == SK_EXEC && !s->cancelled)
            break;
        if (k == SK_GET && !s->cancelled && !s->out_eof[1]) {
            violation(a, "file get stream %u ended before its data EOF", s->id);
            return;
        }
        s->guest_done = true;
        a->need_reap = true;
        stream_finish(s, 0, NULL, NULL);
        return;
    case LP_ERROR: {
        s->guest_done = true;
        a->need_reap = true;
        int err = fl.has_errno && fl.err > 0 && fl.err < 4096 ? -(int)fl.err : -EIO;
        char msg[512];
        copy_str(msg, sizeof(msg), fl.message, fl.message_len);
        if (!msg[0])
            snprintf(msg, sizeof(msg), "%s", strerror(-err));
        stream_finish(s, err, msg, NULL);
        return;
    }
    default:
        break;
    }
    violation(a, "unexpected %s on %s stream %u", lp_type_name(f->type), kind_name(k), s->id);
}

static void process_input(agent_t *a)
{
    size_t off = 0;
    if (a->state == AS_HELLO) {
        off = scan_for_ack(a);
        if (off == 0)
            return;
    }
    while (a->state == AS_READY && !a->freeing) {
        lp_frame_t f;
        size_t used;
        int r = lp_frame_parse(a->rbuf + off, a->rlen - off, &f, &used);
        if (r == 0)
            break;
        if (r == -EMSGSIZE) {
            violation(a, "frame length %u over the %u byte limit", lp_get_le32(a->rbuf + off + 8), LP_MAX_PAYLOAD);
            return;
        }
        if (r < 0) {
            const uint8_t *h = a->rbuf + off;
            violation(a, "bad frame header (%02x %02x %02x %02x)", h[0], h[1], h[2], h[3]);
            return;
        }
        off += used;
        if (f.stream == 0)
            handle_conn_frame(a, &f);
        else
            handle_stream_frame(a, &f);
    }
    if (a->state != AS_READY || a->freeing)
        return;
    memmove(a->rbuf, a->rbuf + off, a->rlen - off);
    a->rlen -= off;
}

/* ---- lifecycle ------------------------------------------------------------- */

agent_t *agent_new(uv_loop_t *loop, const char *sock_path, const agent_callbacks_t *cb, void *ud)
{
    struct sockaddr_un sun;
    if (!loop || !sock_path || !cb || strlen(sock_path) >= sizeof(sun.sun_path)) {
        errno = EINVAL;
        return NULL;
    }
    agent_t *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->rbuf = malloc(RBUF_SIZE);
    a->tx = malloc(LP_MAX_PAYLOAD);
    a->sock_path = strdup(sock_path);
    if (!a->rbuf || !a->tx || !a->sock_path) {
        free(a->rbuf);
        free(a->tx);
        free(a->sock_path);
        free(a);
        errno = ENOMEM;
        return NULL;
    }
    a->loop = loop;
    a->cb = *cb;
    a->ud = ud;
    a->next_id = 1;
    a->pings_tail = &a->pings;
    uv_timer_init(loop, &a->tick);
    uv_timer_init(loop, &a->deadline);
    uv_timer_init(loop, &a->defer);
    a->tick.data = a->deadline.data = a->defer.data = a;
    a->handles = 3;
    return a;
}

int agent_start(agent_t *a, uint64_t connect_timeout_ms)
{
    if (!a || a->freeing)
        return -EINVAL;
    if (a->state != AS_IDLE)
        return -EALREADY;
    a->state = AS_CONNECTING;
    a->timeout_ms = connect_timeout_ms;
    if (connect_timeout_ms)
        uv_timer_start(&a->deadline, on_deadline, connect_timeout_ms, 0);
    try_connect(a);
    return 0;
}

int agent_is_ready(const agent_t *a)
{
    return a && a->state == AS_READY && !a->freeing;
}

void agent_free(agent_t *a)
{
    if (!a || a->freeing)
        return;
    /* From here on only the terminal callbacks below run; requests made from
     * inside them fail with -ENOTCONN. */
    a->freeing = true;
    a->state = AS_DEAD;
    a->fail_pending = false;
    a->depth++;
    finish_all(a, -ECANCELED, "agent closed");
    a->depth--;
    conn_close(a);
    uv_close((uv_handle_t *)&a->tick, on_handle_closed);
    uv_close((uv_handle_t *)&a->deadline, on_handle_closed);
    uv_close((uv_handle_t *)&a->defer, on_handle_closed);
}

/* ---- requests ---------------------------------------------------------------- */

static int stream_open(agent_t *a, enum stream_kind kind, size_t size, uint8_t type, const void *payload,
                       size_t len, stream_t **out)
{
    if (!agent_is_ready(a))
        return -ENOTCONN;
    if (a->next_id > UINT32_MAX)
        return -EOVERFLOW;
    stream_t *s = calloc(1, size);
    if (!s)
        return -ENOMEM;
    s->agent = a;
    s->kind = kind;
    s->id = (uint32_t)a->next_id;
    s->recv_window = LP_WINDOW_INITIAL;
    s->send_window = LP_WINDOW_INITIAL;
    int r = send_frame(a, type, s->id, payload, len);
    if (r < 0) {
        free(s);
        return r;
    }
    a->next_id += 2;
    s->prev = a->tail;
    if (a->tail)
        a->tail->next = s;
    else
        a->head = s;
    a->tail = s;
    *out = s;
    return 0;
}

int agent_exec_start(agent_t *a, const agent_exec_opts_t *opts, const agent_exec_callbacks_t *cb, void *ud,
                     agent_exec_t **out)
{
    if (!a || !opts || !opts->argv || !opts->argv[0] || !cb || !out)
        return -EINVAL;
    if (!agent_is_ready(a))
        return -ENOTCONN;
    lp_msg_t m;
    lp_msg_init(&m, a->tx, LP_MAX_PAYLOAD);
    for (const char *const *p = opts->argv; *p; p++)
        lp_msg_put_str(&m, LP_T_ARG, *p);
    for (const char *const *p = opts->env; p && *p; p++)
        lp_msg_put_str(&m, LP_T_ENV, *p);
    if (opts->cwd)
        lp_msg_put_str(&m, LP_T_CWD, opts->cwd);
    if (opts->user)
        lp_msg_put_str(&m, LP_T_USER, opts->user);
    if (opts->tty) {
        lp_msg_put_u32(&m, LP_T_TTY_ROWS, opts->rows ? opts->rows : 24);
        lp_msg_put_u32(&m, LP_T_TTY_COLS, opts->cols ? opts->cols : 80);
    }
    if (opts->timeout_ms)
        lp_msg_put_u64(&m, LP_T_TIMEOUT_MS, opts->timeout_ms);
    lp_msg_put_u32(&m, LP_T_STDIN, opts->stdin_open ? 1 : 0);
    if (m.err)
        return -E2BIG;
    stream_t *s;
    int r = stream_open(a, SK_EXEC, sizeof(struct agent_exec), LP_EXEC, m.buf, m.len, &s);
    if (r < 0)
        return r;
    s->cb.exec = *cb;
    s->ud = ud;
    s->in_open = opts->stdin_open != 0;
    *out = (agent_exec_t *)s;
    return 0;
}

static size_t stream_room(const stream_t *s)
{
    const agent_t *a = s->agent;
    if (s->user_done || !s->in_open || s->in_eof || a->state != AS_READY || a->freeing)
        return 0;
    size_t q = a->queued < QUEUE_DATA_MAX ? QUEUE_DATA_MAX - a->queued : 0;
    return s->send_window < q ? (size_t)s->send_window : q;
}

static ssize_t stream_write(stream_t *s, uint8_t type, const void *data, size_t len)
{
    if (!s || (!data && len))
        return -EINVAL;
    if (s->user_done)
        return -ECANCELED;
    if (s->agent->state != AS_READY || s->agent->freeing)
        return -ENOTCONN;
    if (!s->in_open || s->in_eof)
        return -EPIPE;
    size_t room = stream_room(s);
    size_t n = len < room ? len : room;
    size_t done = 0;
    while (done < n) {
        size_t chunk = n - done < LP_MAX_PAYLOAD ? n - done : LP_MAX_PAYLOAD;
        int r = send_frame(s->agent, type, s->id, (const uint8_t *)data + done, chunk);
        if (r < 0) {
            if (done == 0)
                return r;
            break;
        }
        done += chunk;
        s->send_window -= chunk;
    }
    if (done < len || stream_room(s) == 0)
        s->want_room = true;
    return (ssize_t)done;
}

static int stream_eof(stream_t *s, uint8_t type)
{
    if (!s)
        return -EINVAL;
    if (s->user_done)
        return -ECANCELED;
    if (!s->in_open)
        return -EPIPE;
    if (s->in_eof)
        return 0;
    int r = send_frame(s->agent, type, s->id, NULL, 0);
    if (r < 0)
        return r;
    s->in_eof = true;
    s->want_room = false;
    return 0;
}

static void stream_cancel(stream_t *s)
{
    if (!s || s->user_done || s->term_queued)
        return;
    agent_t *a = s->agent;
    s->cancelled = true;
    s->term_queued = true;
    s->want_room = false;
    if (!s->guest_done && a->state == AS_READY)
        send_frame(a, LP_CANCEL, s->id, NULL, 0);
    /* Everything delivered but not acknowledged is acknowledged now. */
    s->ack_pending += s->unacked;
    s->unacked = 0;
    flush_acks(s);
    if (!a->freeing)
        uv_timer_start(&a->defer, on_defer, 0, 0);
}

size_t agent_exec_stdin_room(const agent_exec_t *exec)
{
    if (!exec)
        return 0;
    size_t room = stream_room(&exec->s);
    if (room == 0)
        ((agent_exec_t *)exec)->s.want_room = !exec->s.user_done && exec->s.in_open && !exec->s.in_eof;
    return room;
}

ssize_t agent_exec_write_stdin(agent_exec_t *exec, const void *data, size_t len)
{
    return stream_write(exec ? &exec->s : NULL, LP_STDIN, data, len);
}

int agent_exec_close_stdin(agent_exec_t *exec)
{
    return stream_eof(exec ? &exec->s : NULL, LP_STDIN);
}

void agent_exec_ack(agent_exec_t *exec, size_t len)
{
    stream_ack(exec ? &exec->s : NULL, len);
}

int agent_exec_resize(agent_exec_t *exec, uint16_t rows, uint16_t cols)
{
    if (!exec)
        return -EINVAL;
    if (exec->s.user_done)
        return -ECANCELED;
    lp_msg_t m;
    uint8_t buf[32];
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_u32(&m, LP_T_TTY_ROWS, rows);
    lp_msg_put_u32(&m, LP_T_TTY_COLS, cols);
    return send_frame(exec->s.agent, LP_RESIZE, exec->s.id, buf, m.len);
}

int agent_exec_signal(agent_exec_t *exec, int signo)
{
    if (!exec || signo <= 0 || signo >= 65)
        return -EINVAL;
    if (exec->s.user_done)
        return -ECANCELED;
    lp_msg_t m;
    uint8_t buf[16];
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_u32(&m, LP_T_SIGNO, (uint32_t)signo);
    return send_frame(exec->s.agent, LP_SIGNAL, exec->s.id, buf, m.len);
}

void agent_exec_cancel(agent_exec_t *exec)
{
    stream_cancel(exec ? &exec->s : NULL);
}

int agent_file_put(agent_t *a, const char *path, uint32_t mode, const agent_xfer_callbacks_t *cb, void *ud,
                   agent_xfer_t **out)
{
    if (!a || !path || !path[0] || !cb || !out)
        return -EINVAL;
    lp_msg_t m;
    lp_msg_init(&m, a->tx, LP_MAX_PAYLOAD);
    lp_msg_put_str(&m, LP_T_PATH, path);
    lp_msg_put_u32(&m, LP_T_MODE, mode);
    if (m.err)
        return -ENAMETOOLONG;
    stream_t *s;
    int r = stream_open(a, SK_PUT, sizeof(struct agent_xfer), LP_FILE_PUT, m.buf, m.len, &s);
    if (r < 0)
        return r;
    s->cb.xfer = *cb;
    s->ud = ud;
    s->in_open = true;
    *out = (agent_xfer_t *)s;
    return 0;
}

int agent_file_get(agent_t *a, const char *path, const agent_xfer_callbacks_t *cb, void *ud, agent_xfer_t **out)
{
    if (!a || !path || !path[0] || !cb || !out)
        return -EINVAL;
    lp_msg_t m;
    lp_msg_init(&m, a->tx, LP_MAX_PAYLOAD);
    lp_msg_put_str(&m, LP_T_PATH, path);
    if (m.err)
        return -ENAMETOOLONG;
    stream_t *s;
    int r = stream_open(a, SK_GET, sizeof(struct agent_xfer), LP_FILE_GET, m.buf, m.len, &s);
    if (r < 0)
        return r;
    s->cb.xfer = *cb;
    s->ud = ud;
    *out = (agent_xfer_t *)s;
    return 0;
}

size_t agent_xfer_room(const agent_xfer_t *x)
{
    if (!x)
        return 0;
    size_t room = stream_room(&x->s);
    if (room == 0)
        ((agent_xfer_t *)x)->s.want_room = !x->s.user_done && x->s.in_open && !x->s.in_eof;
    return room;
}

ssize_t agent_xfer_write(agent_xfer_t *x, const void *data, size_t len)
{
    return stream_write(x ? &x->s : NULL, LP_DATA, data, len);
}

int agent_xfer_finish(agent_xfer_t *x)
{
    return stream_eof(x ? &x->s : NULL, LP_DATA);
}

void agent_xfer_ack(agent_xfer_t *x, size_t len)
{
    stream_ack(x ? &x->s : NULL, len);
}

void agent_xfer_cancel(agent_xfer_t *x)
{
    stream_cancel(x ? &x->s : NULL);
}

static int simple_request(agent_t *a, enum stream_kind kind, uint8_t type, const void *payload, size_t len,
                          agent_done_cb cb, void *ud)
{
    stream_t *s;
    int r = stream_open(a, kind, sizeof(stream_t), type, payload, len, &s);
    if (r < 0)
        return r;
    s->cb.done = cb;
    s->ud = ud;
    return 0;
}

int agent_sync(agent_t *a, agent_done_cb cb, void *ud)
{
    if (!a)
        return -EINVAL;
    return simple_request(a, SK_SYNC, LP_SYNC, NULL, 0, cb, ud);
}

int agent_freeze(agent_t *a, agent_done_cb cb, void *ud)
{
    if (!a)
        return -EINVAL;
    return simple_request(a, SK_FREEZE, LP_FREEZE, NULL, 0, cb, ud);
}

int agent_configure(agent_t *a, const agent_config_t *cfg, agent_done_cb cb, void *ud)
{
    if (!a || !cfg)
        return -EINVAL;
    uint8_t *buf = malloc(LP_MAX_PAYLOAD);
    if (!buf)
        return -ENOMEM;
    lp_msg_t m;
    lp_msg_init(&m, buf, LP_MAX_PAYLOAD);
    if (cfg->net_addr)
        lp_msg_put_str(&m, LP_T_NET_ADDR, cfg->net_addr);
    if (cfg->net_gw)
        lp_msg_put_str(&m, LP_T_NET_GW, cfg->net_gw);
    if (cfg->dns)
        lp_msg_put_str(&m, LP_T_DNS, cfg->dns);
    if (cfg->ca_pem && cfg->ca_pem_len)
        lp_msg_put(&m, LP_T_CA_PEM, cfg->ca_pem, (uint32_t)cfg->ca_pem_len);
    for (size_t i = 0; cfg->env && cfg->env[i]; i++)
        lp_msg_put_str(&m, LP_T_DEFAULT_ENV, cfg->env[i]);
    int r = m.err ? m.err : simple_request(a, SK_CONFIGURE, LP_CONFIGURE, buf, m.len, cb, ud);
    free(buf);
    return r;
}

int agent_thaw(agent_t *a, agent_done_cb cb, void *ud)
{
    if (!a)
        return -EINVAL;
    return simple_request(a, SK_THAW, LP_THAW, NULL, 0, cb, ud);
}

int agent_shutdown(agent_t *a, int mode, agent_done_cb cb, void *ud)
{
    if (!a || (mode != 0 && mode != 1))
        return -EINVAL;
    lp_msg_t m;
    uint8_t buf[16];
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_u32(&m, LP_T_SHUTDOWN_MODE, (uint32_t)mode);
    return simple_request(a, SK_SHUTDOWN, LP_SHUTDOWN, buf, m.len, cb, ud);
}

int agent_ping(agent_t *a, agent_done_cb cb, void *ud)
{
    if (!a)
        return -EINVAL;
    if (!agent_is_ready(a))
        return -ENOTCONN;
    ping_t *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->seq = ++a->ping_seq;
    p->cb = cb;
    p->ud = ud;
    uint8_t payload[8];
    lp_put_le32(payload, (uint32_t)p->seq);
    lp_put_le32(payload + 4, (uint32_t)(p->seq >> 32));
    int r = send_frame(a, LP_PING, 0, payload, sizeof(payload));
    if (r < 0) {
        free(p);
        return r;
    }
    *a->pings_tail = p;
    a->pings_tail = &p->next;
    return 0;
}
