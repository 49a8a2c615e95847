/* agent.c — lane-init's protocol server: one poll() loop over the control
 * port, the signalfd and every session's fds.
 *
 * Invariants:
 *  - Nothing here blocks on the host. Frames for the host are appended whole
 *    to an out queue that is written when the port is writable. Child output
 *    is only read while the queue is below LI_OUTQ_HIGH and the stream's
 *    window is open; frames from the host are only read while the queue is
 *    below LI_OUTQ_HARD. Memory is therefore bounded whatever the host does.
 *  - The input decoder holds at most LI_INBUF_SIZE bytes (two maximal
 *    frames). A bad frame (magic, version, type, length) makes it skip to
 *    the next possible frame start (lp_resync_scan) — never a crash.
 *  - Streams live in one list (at most LI_MAX_STREAMS); a stream is freed
 *    right after its terminal frame is queued, so frames for unknown
 *    streams are late frames of finished streams and are ignored.
 *  - As PID 1 the port is a virtio-serial port: a host disconnect (read 0 /
 *    POLLHUP) drops the decoder and queue and the port is polled again every
 *    100 ms. With --agent-fd, EOF ends the loop.
 *
 * Threading: single-threaded.
 */
#include "lane_init.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WINDOW_CAP (1ull << 40)
#define PORT_RETRY_MS 100

/* ---- out queue --------------------------------------------------------- */

size_t agent_outq_len(const li_ctx_t *ctx)
{
    return ctx->out_tail - ctx->out_head;
}

/* Make room for n more bytes at the tail. Aborts only on malloc failure,
 * which for PID 1 with bounded queues means the guest is out of memory. */
static void outq_reserve(li_ctx_t *ctx, size_t n)
{
    if (ctx->out_cap - ctx->out_tail >= n)
        return;
    if (ctx->out_head > 0) {
        memmove(ctx->outq, ctx->outq + ctx->out_head, ctx->out_tail - ctx->out_head);
        ctx->out_tail -= ctx->out_head;
        ctx->out_head = 0;
        if (ctx->out_cap - ctx->out_tail >= n)
            return;
    }
    size_t cap = ctx->out_cap ? ctx->out_cap : 64 * 1024;
    while (cap - ctx->out_tail < n)
        cap *= 2;
    uint8_t *q = realloc(ctx->outq, cap);
    if (!q) {
        li_log(ctx, "out of memory growing the out queue to %zu bytes", cap);
        abort();
    }
    ctx->outq = q;
    ctx->out_cap = cap;
}

void agent_send_frame(li_ctx_t *ctx, uint8_t type, uint32_t stream, const void *payload, size_t len)
{
    if (len > LP_MAX_PAYLOAD) {
        li_log(ctx, "bug: %s frame of %zu bytes dropped", lp_type_name(type), len);
        return;
    }
    outq_reserve(ctx, LP_HDR_SIZE + len);
    uint8_t *p = ctx->outq + ctx->out_tail;
    lp_hdr_encode(p, type, stream, (uint32_t)len);
    if (len)
        memcpy(p + LP_HDR_SIZE, payload, len);
    ctx->out_tail += LP_HDR_SIZE + len;
}

uint8_t *agent_reserve_data(li_ctx_t *ctx, size_t max)
{
    outq_reserve(ctx, LP_HDR_SIZE + max);
    return ctx->outq + ctx->out_tail + LP_HDR_SIZE;
}

void agent_commit_data(li_ctx_t *ctx, uint8_t type, uint32_t stream, size_t len)
{
    lp_hdr_encode(ctx->outq + ctx->out_tail, type, stream, (uint32_t)len);
    ctx->out_tail += LP_HDR_SIZE + len;
}

void agent_send_error(li_ctx_t *ctx, uint32_t stream, int err, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    uint8_t buf[1100];
    lp_msg_t m;
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_u32(&m, LP_T_ERRNO, (uint32_t)(err < 0 ? -err : err));
    lp_msg_put_str(&m, LP_T_MESSAGE, msg);
    li_debug(ctx, "stream %u: error: %s", stream, msg);
    agent_send_frame(ctx, LP_ERROR, stream, buf, m.len);
}

void agent_send_window(li_ctx_t *ctx, uint32_t stream, uint32_t increment)
{
    uint8_t buf[16];
    lp_msg_t m;
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_u32(&m, LP_T_INCREMENT, increment);
    agent_send_frame(ctx, LP_WINDOW, stream, buf, m.len);
}

/* Write as much of the queue as the port takes. */
static void outq_flush(li_ctx_t *ctx)
{
    while (ctx->out_head < ctx->out_tail && ctx->port_fd >= 0 && !ctx->port_down) {
        ssize_t n = write(ctx->port_fd, ctx->outq + ctx->out_head, ctx->out_tail - ctx->out_head);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
            li_debug(ctx, "write to control port: %m");
            if (!ctx->pid1) {
                ctx->running = 0;
                ctx->out_head = ctx->out_tail = 0;
                return;
            }
            /* Host gone: it resyncs with HELLO when it comes back. */
            ctx->out_head = ctx->out_tail = 0;
            ctx->in_len = 0;
            ctx->port_down = 1;
            ctx->port_retry_ms = li_now_ms() + PORT_RETRY_MS;
            return;
        }
        ctx->out_head += (size_t)n;
    }
    if (ctx->out_head == ctx->out_tail)
        ctx->out_head = ctx->out_tail = 0;
}

/* ---- streams ------------------------------------------------------------ */

static li_stream_t *stream_find(li_ctx_t *ctx, uint32_t id)
{
    for (li_stream_t *s = ctx->streams; s; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

li_stream_t *agent_stream_new(li_ctx_t *ctx, uint32_t id, li_kind_t kind)
{
    li_stream_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->id = id;
    s->kind = kind;
    s->win_out = LP_WINDOW_INITIAL;
    s->win_in = LP_WINDOW_INITIAL;
    s->next = ctx->streams;
    ctx->streams = s;
    ctx->nstreams++;
    return s;
}

void agent_stream_free(li_ctx_t *ctx, li_stream_t *s)
{
    for (li_stream_t **pp = &ctx->streams; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            ctx->nstreams--;
            free(s);
            return;
        }
    }
}

/* Drop a stream without any frame (reset, exit). */
static void stream_destroy(li_ctx_t *ctx, li_stream_t *s)
{
    if (s->kind == LI_S_EXEC)
        exec_destroy(ctx, s);
    else
        files_destroy(ctx, s);
}

static void streams_destroy_all(li_ctx_t *ctx)
{
    while (ctx->streams)
        stream_destroy(ctx, ctx->streams);
}

/* ---- frame handlers ----------------------------------------------------- */

static uint64_t boot_ms_now(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_BOOTTIME, &ts) < 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void handle_hello(li_ctx_t *ctx, const lp_frame_t *f)
{
    uint64_t nonce = 0;
    lp_tlv_iter_t it;
    uint16_t tag;
    const uint8_t *val;
    uint32_t vlen;
    int r;
    lp_tlv_init(&it, f->payload, f->len);
    while ((r = lp_tlv_next(&it, &tag, &val, &vlen)) > 0)
        if (tag == LP_T_NONCE && lp_val_u64(val, vlen, &nonce) < 0)
            r = -EBADMSG;
    if (r < 0) {
        li_log(ctx, "malformed HELLO ignored");
        return;
    }
    if (ctx->nstreams)
        li_log(ctx, "HELLO: resetting %zu open streams", ctx->nstreams);
    streams_destroy_all(ctx);

    struct utsname u;
    char host[65] = "";
    if (uname(&u) < 0)
        memset(&u, 0, sizeof(u));
    if (gethostname(host, sizeof(host) - 1) < 0)
        host[0] = '\0';
    uint8_t buf[1024];
    lp_msg_t m;
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_u64(&m, LP_T_NONCE, nonce);
    lp_msg_put_u32(&m, LP_T_VERSION, LP_VERSION);
    lp_msg_put_str(&m, LP_T_HOSTNAME, host);
    lp_msg_put_str(&m, LP_T_KERNEL, u.release);
    lp_msg_put_u64(&m, LP_T_BOOT_MS, boot_ms_now());
    agent_send_frame(ctx, LP_HELLO_ACK, f->stream, buf, m.len);
    li_debug(ctx, "HELLO nonce %llu answered", (unsigned long long)nonce);
}

static void handle_window(li_ctx_t *ctx, li_stream_t *s, const lp_frame_t *f)
{
    uint32_t inc = 0;
    lp_tlv_iter_t it;
    uint16_t tag;
    const uint8_t *val;
    uint32_t vlen;
    int r;
    lp_tlv_init(&it, f->payload, f->len);
    while ((r = lp_tlv_next(&it, &tag, &val, &vlen)) > 0)
        if (tag == LP_T_INCREMENT && lp_val_u32(val, vlen, &inc) < 0)
            r = -EBADMSG;
    if (r < 0) {
        li_log(ctx, "stream %u: malformed WINDOW ignored", f->stream);
        return;
    }
    s->win_out += inc;
    if (s->win_out > WINDOW_CAP)
        s->win_out = WINDOW_CAP;
}

static void handle_shutdown(li_ctx_t *ctx, const lp_frame_t *f)
{
    uint32_t mode = 0;
    lp_tlv_iter_t it;
    uint16_t tag;
    const uint8_t *val;
    uint32_t vlen;
    int r;
    lp_tlv_init(&it, f->payload, f->len);
    while ((r = lp_tlv_next(&it, &tag, &val, &vlen)) > 0)
        if (tag == LP_T_SHUTDOWN_MODE && lp_val_u32(val, vlen, &mode) < 0)
            r = -EBADMSG;
    if (r < 0 || mode > 1) {
        agent_send_error(ctx, f->stream, EINVAL, "malformed SHUTDOWN");
        return;
    }
    agent_send_frame(ctx, LP_OK, f->stream, NULL, 0);
    li_log(ctx, "%s requested by host", mode ? "reboot" : "poweroff");
    ctx->shutdown_mode = (int)mode;
    ctx->running = 0;
}

/* Common checks for a frame that opens a stream. Returns 1 if it may. */
static int stream_open_ok(li_ctx_t *ctx, const lp_frame_t *f)
{
    if (f->stream == 0) {
        li_log(ctx, "%s on stream 0 ignored", lp_type_name(f->type));
        return 0;
    }
    if (stream_find(ctx, f->stream)) {
        li_log(ctx, "%s on busy stream %u ignored", lp_type_name(f->type), f->stream);
        return 0;
    }
    if (ctx->nstreams >= LI_MAX_STREAMS) {
        agent_send_error(ctx, f->stream, EAGAIN, "too many concurrent streams (limit %d)", LI_MAX_STREAMS);
        return 0;
    }
    return 1;
}

static void dispatch(li_ctx_t *ctx, const lp_frame_t *f)
{
    li_stream_t *s = NULL;
    switch (f->type) {
    case LP_HELLO:
        handle_hello(ctx, f);
        return;
    case LP_PING:
        agent_send_frame(ctx, LP_PONG, f->stream, f->payload, f->len);
        return;
    case LP_PONG:
        return;
    case LP_EXEC:
        if (stream_open_ok(ctx, f))
            exec_start(ctx, f->stream, f->payload, f->len);
        return;
    case LP_FILE_PUT:
        if (stream_open_ok(ctx, f))
            files_put_start(ctx, f->stream, f->payload, f->len);
        return;
    case LP_FILE_GET:
        if (stream_open_ok(ctx, f))
            files_get_start(ctx, f->stream, f->payload, f->len);
        return;
    case LP_SYNC:
        if (!stream_open_ok(ctx, f))
            return;
        sync();
        agent_send_frame(ctx, LP_OK, f->stream, NULL, 0);
        return;
    case LP_SHUTDOWN:
        if (stream_open_ok(ctx, f))
            handle_shutdown(ctx, f);
        return;
    case LP_CONFIGURE:
        if (stream_open_ok(ctx, f))
            config_apply(ctx, f->stream, f->payload, f->len);
        return;
    case LP_FREEZE:
    case LP_THAW: {
        /* Root filesystem only: that is the lane's disk. FIFREEZE syncs the
         * filesystem and flushes the disk's cache; a thaw of a filesystem
         * that is not frozen (EINVAL) is not an error, so a host that lost
         * track (crash, reconnect) can always thaw. */
        if (!stream_open_ok(ctx, f))
            return;
        int r = f->type == LP_FREEZE ? files_freeze("/") : files_thaw("/");
        if (r == -EINVAL && f->type == LP_THAW)
            r = 0;
        if (r < 0)
            agent_send_error(ctx, f->stream, -r, "%s /: %s", f->type == LP_FREEZE ? "FIFREEZE" : "FITHAW",
                             strerror(-r));
        else
            agent_send_frame(ctx, LP_OK, f->stream, NULL, 0);
        return;
    }
    default:
        break;
    }

    s = f->stream ? stream_find(ctx, f->stream) : NULL;
    if (!s) {
        li_debug(ctx, "%s for unknown stream %u ignored", lp_type_name(f->type), f->stream);
        return;
    }
    switch (f->type) {
    case LP_WINDOW:
        handle_window(ctx, s, f);
        break;
    case LP_STDIN:
        if (s->kind == LI_S_EXEC)
            exec_on_stdin(ctx, s, f->payload, f->len);
        break;
    case LP_DATA:
        if (s->kind == LI_S_PUT)
            files_put_data(ctx, s, f->payload, f->len);
        break;
    case LP_RESIZE:
        if (s->kind == LI_S_EXEC)
            exec_on_resize(ctx, s, f->payload, f->len);
        break;
    case LP_SIGNAL:
        if (s->kind == LI_S_EXEC)
            exec_on_signal(ctx, s, f->payload, f->len);
        break;
    case LP_CANCEL:
        if (s->kind == LI_S_EXEC)
            exec_cancel(ctx, s);
        else
            files_cancel(ctx, s);
        break;
    default:
        li_debug(ctx, "unexpected %s on stream %u ignored", lp_type_name(f->type), f->stream);
        break;
    }
}

/* Parse and dispatch every whole frame in the decoder buffer. */
static void process_input(li_ctx_t *ctx)
{
    size_t off = 0;
    while (off < ctx->in_len && ctx->running) {
        lp_frame_t f;
        size_t used = 0;
        int r = lp_frame_parse(ctx->inbuf + off, ctx->in_len - off, &f, &used);
        if (r == 0)
            break;
        if (r < 0) {
            size_t skip = lp_resync_scan(ctx->inbuf + off, ctx->in_len - off);
            if (!ctx->resyncing)
                li_log(ctx, "bad frame from host (%s); resyncing", strerror(-r));
            ctx->resyncing = 1;
            off += skip;
            continue;
        }
        ctx->resyncing = 0;
        dispatch(ctx, &f);
        off += used;
    }
    if (off > 0) {
        memmove(ctx->inbuf, ctx->inbuf + off, ctx->in_len - off);
        ctx->in_len -= off;
    }
}

static void port_disconnected(li_ctx_t *ctx)
{
    if (!ctx->pid1) {
        li_debug(ctx, "host closed the control channel");
        ctx->running = 0;
        return;
    }
    if (!ctx->port_down)
        li_debug(ctx, "host disconnected; waiting for it");
    ctx->port_down = 1;
    ctx->port_retry_ms = li_now_ms() + PORT_RETRY_MS;
    ctx->in_len = 0;
    ctx->resyncing = 0;
    ctx->out_head = ctx->out_tail = 0;
}

static void port_read(li_ctx_t *ctx)
{
    for (int rounds = 0; rounds < 4 && ctx->running; rounds++) {
        if (ctx->in_len == sizeof(ctx->inbuf))
            return; /* cannot happen: a full buffer always holds a frame */
        ssize_t n = read(ctx->port_fd, ctx->inbuf + ctx->in_len, sizeof(ctx->inbuf) - ctx->in_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
            li_log(ctx, "read control port: %m");
            port_disconnected(ctx);
            return;
        }
        if (n == 0) {
            port_disconnected(ctx);
            return;
        }
        ctx->in_len += (size_t)n;
        process_input(ctx);
        if (agent_outq_len(ctx) >= LI_OUTQ_HARD)
            return;
    }
}

/* Read queued signals: reap children, note shutdown requests. */
static void handle_signals(li_ctx_t *ctx)
{
    struct signalfd_siginfo si;
    int reap = 0;
    for (;;) {
        ssize_t n = read(ctx->sig_fd, &si, sizeof(si));
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof(si))
            break;
        if (si.ssi_signo == SIGCHLD) {
            reap = 1;
        } else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT || si.ssi_signo == SIGPWR) {
            li_log(ctx, "signal %u: shutting down", si.ssi_signo);
            if (ctx->shutdown_mode < 0)
                ctx->shutdown_mode = 0;
            ctx->running = 0;
        }
    }
    if (reap)
        exec_reap_all(ctx);
}

void exec_reap_all(li_ctx_t *ctx)
{
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid <= 0)
            return;
        exec_on_reaped(ctx, pid, st);
    }
}

/* Block until the queue is written or timeout_ms passed (shutdown path). */
static void outq_drain_blocking(li_ctx_t *ctx, int timeout_ms)
{
    uint64_t end = li_now_ms() + (uint64_t)timeout_ms;
    while (agent_outq_len(ctx) > 0 && !ctx->port_down && ctx->port_fd >= 0) {
        uint64_t now = li_now_ms();
        if (now >= end)
            return;
        struct pollfd p = {.fd = ctx->port_fd, .events = POLLOUT};
        int r = poll(&p, 1, (int)(end - now));
        if (r < 0 && errno != EINTR)
            return;
        if (r > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL)) && !(p.revents & POLLOUT))
            return;
        outq_flush(ctx);
    }
}

enum { ROLE_PORT, ROLE_SIG, ROLE_OUT, ROLE_ERR, ROLE_IN };

int agent_run(li_ctx_t *ctx)
{
    enum { MAXFD = 2 + 3 * LI_MAX_STREAMS };
    struct pollfd *pfd = calloc(MAXFD, sizeof(*pfd));
    li_stream_t **owner = calloc(MAXFD, sizeof(*owner));
    int *role = calloc(MAXFD, sizeof(*role));
    if (!pfd || !owner || !role) {
        free(pfd);
        free(owner);
        free(role);
        return -ENOMEM;
    }
    ctx->running = 1;
    li_log(ctx, "ready");
    while (ctx->running) {
        uint64_t now = li_now_ms();
        int64_t timeout = -1;
        nfds_t n = 0;

        if (ctx->port_down && now >= ctx->port_retry_ms)
            ctx->port_down = 0;
        if (ctx->port_down) {
            timeout = (int64_t)(ctx->port_retry_ms - now);
        } else {
            short ev = 0;
            if (agent_outq_len(ctx) < LI_OUTQ_HARD)
                ev |= POLLIN;
            if (agent_outq_len(ctx) > 0)
                ev |= POLLOUT;
            pfd[n] = (struct pollfd){.fd = ctx->port_fd, .events = ev};
            owner[n] = NULL;
            role[n++] = ROLE_PORT;
        }
        pfd[n] = (struct pollfd){.fd = ctx->sig_fd, .events = POLLIN};
        owner[n] = NULL;
        role[n++] = ROLE_SIG;

        for (li_stream_t *s = ctx->streams; s; s = s->next) {
            if (s->kind == LI_S_GET) {
                if (s->win_out > 0 && agent_outq_len(ctx) < LI_OUTQ_HIGH)
                    timeout = 0;
                continue;
            }
            if (s->kind != LI_S_EXEC)
                continue;
            li_exec_t *e = &s->u.exec;
            e->out_rev = e->err_rev = e->in_rev = 0;
            short ev;
            if ((ev = exec_out_events(ctx, s, 1)) != 0) {
                pfd[n] = (struct pollfd){.fd = e->out_fd, .events = ev};
                owner[n] = s;
                role[n++] = ROLE_OUT;
            }
            if ((ev = exec_out_events(ctx, s, 2)) != 0) {
                pfd[n] = (struct pollfd){.fd = e->err_fd, .events = ev};
                owner[n] = s;
                role[n++] = ROLE_ERR;
            }
            if ((ev = exec_in_events(s)) != 0) {
                pfd[n] = (struct pollfd){.fd = e->in_fd, .events = ev};
                owner[n] = s;
                role[n++] = ROLE_IN;
            }
            uint64_t d = exec_next_deadline(s);
            if (d) {
                int64_t t = d > now ? (int64_t)(d - now) : 0;
                if (timeout < 0 || t < timeout)
                    timeout = t;
            }
            /* A reaped session with its window open drains without waiting. */
            if (e->reaped && s->win_out > 0 && agent_outq_len(ctx) < LI_OUTQ_HIGH &&
                ((e->out_fd >= 0 && !e->tty) || e->err_fd >= 0))
                timeout = 0;
            if (e->reaped && e->out_fd < 0 && e->err_fd < 0)
                timeout = 0;
        }

        int r = poll(pfd, n, timeout > 60000 ? 60000 : (int)timeout);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            li_log(ctx, "poll: %m");
            break;
        }
        int port_ev = 0, sig_ev = 0;
        for (nfds_t i = 0; i < n; i++) {
            if (!pfd[i].revents)
                continue;
            switch (role[i]) {
            case ROLE_PORT: port_ev = pfd[i].revents; break;
            case ROLE_SIG: sig_ev = 1; break;
            case ROLE_OUT: owner[i]->u.exec.out_rev = pfd[i].revents; break;
            case ROLE_ERR: owner[i]->u.exec.err_rev = pfd[i].revents; break;
            case ROLE_IN: owner[i]->u.exec.in_rev = pfd[i].revents; break;
            }
        }
        if (sig_ev)
            handle_signals(ctx);
        if (port_ev & POLLOUT)
            outq_flush(ctx);
        if (port_ev & (POLLIN | POLLHUP | POLLERR))
            port_read(ctx);
        if (port_ev & POLLNVAL) {
            li_log(ctx, "control port fd is invalid");
            break;
        }
        now = li_now_ms();
        li_stream_t *next;
        for (li_stream_t *s = ctx->streams; s; s = next) {
            next = s->next;
            if (s->kind == LI_S_EXEC)
                exec_service(ctx, s, now);
            else if (s->kind == LI_S_GET)
                files_get_service(ctx, s);
        }
        outq_flush(ctx);
    }
    /* Leaving: answer what is queued (SHUTDOWN's OK), then drop sessions. */
    outq_drain_blocking(ctx, 1000);
    streams_destroy_all(ctx);
    exec_reap_all(ctx);
    free(pfd);
    free(owner);
    free(role);
    return 0;
}
