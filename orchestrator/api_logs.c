/* api_logs.c — a lane's log files over HTTP.
 *
 *   GET /v1/lanes/{name}/logs?source=console|qemu|nbdkit|netmed&follow=true
 *
 * Streams STATE/lanes/<id>/<source>.log as text/plain. Without follow the
 * stream ends at the file's end; with follow it keeps sending bytes as the
 * file grows (polled every LOG_POLL_MS) until the lane has left the active
 * states (booting/running/stopping) and everything written so far was sent,
 * the lane is removed, or the client goes away.
 *
 * Invariants: memory per reader is bounded — a chunk is read from the file
 * only while the socket's send queue is below LOG_HIGH_WATER, so a slow
 * client slows its own reading down. The reader never keeps a lane_rt_t
 * pointer across loop iterations (the lane may be removed); it looks the
 * lane up by id on every poll. A log that shrank (truncated on a new boot)
 * is read again from its start.
 *
 * Threading: the uv loop only. Reads are small synchronous reads of a local
 * file (at most LOG_CHUNK per call).
 */
#include "lanesd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOG_CHUNK (64u * 1024)
#define LOG_HIGH_WATER (512u * 1024)
#define LOG_POLL_MS 200

static const char *const log_sources[] = {"console", "qemu", "nbdkit", "netmed"};

typedef struct {
    lanesd_t *d;
    http_req_t *req;      /* NULL once the client is gone or the stream ended */
    char lane_id[32];
    char path[600];
    int fd;               /* -1 until the file exists */
    off_t off;
    int follow;
    uv_timer_t timer;
    int timer_open;
} log_reader_t;

static void log_reader_closed(uv_handle_t *h)
{
    log_reader_t *r = h->data;
    free(r);
}

/* End the stream (if still open) and release everything. */
static void log_reader_finish(log_reader_t *r)
{
    if (r->fd >= 0) {
        close(r->fd);
        r->fd = -1;
    }
    if (r->req) {
        http_req_t *req = r->req;
        r->req = NULL;
        http_req_on_close(req, NULL, NULL);
        http_req_on_drain(req, NULL, NULL);
        http_req_stream_end(req);
    }
    if (r->timer_open) {
        r->timer_open = 0;
        uv_timer_stop(&r->timer);
        uv_close((uv_handle_t *)&r->timer, log_reader_closed);
    } else {
        free(r);
    }
}

static lane_rt_t *log_lane(log_reader_t *r)
{
    for (lane_rt_t *l = r->d->lanes; l; l = l->next)
        if (strcmp(l->id, r->lane_id) == 0 && !l->freeing)
            return l;
    return NULL;
}

static int lane_active(const lane_rt_t *l)
{
    return l->state == LANE_BOOTING || l->state == LANE_RUNNING || l->state == LANE_STOPPING;
}

/* Send what the file has beyond r->off, while the socket keeps up.
 * Returns 1 at end of file, 0 when paused by backpressure, -1 on error. */
static int log_pump(log_reader_t *r)
{
    if (r->fd < 0) {
        r->fd = open(r->path, O_RDONLY | O_CLOEXEC);
        if (r->fd < 0)
            return errno == ENOENT ? 1 : -1;
    }
    struct stat st;
    if (fstat(r->fd, &st) == 0 && st.st_size < r->off)
        r->off = 0; /* truncated: a new boot started the log again */
    uint8_t buf[LOG_CHUNK];
    while (r->req) {
        if (http_req_stream_pending(r->req) > LOG_HIGH_WATER)
            return 0;
        ssize_t n = pread(r->fd, buf, sizeof(buf), r->off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return 1;
        r->off += n;
        if (http_req_stream_write(r->req, buf, (size_t)n) < 0)
            return -1;
    }
    return -1;
}

static void log_step(log_reader_t *r)
{
    int eof = log_pump(r);
    if (eof < 0) {
        log_reader_finish(r);
        return;
    }
    if (!eof)
        return; /* resumed by on_drain */
    if (!r->follow) {
        log_reader_finish(r);
        return;
    }
    lane_rt_t *l = log_lane(r);
    if (!l || !lane_active(l)) {
        /* One last read happened above after the lane stopped: done. */
        log_reader_finish(r);
        return;
    }
    if (r->fd >= 0) {
        /* The lane may have been rebooted: a new file replaces the old one. */
        struct stat a, b;
        if (stat(r->path, &a) == 0 && fstat(r->fd, &b) == 0 && (a.st_ino != b.st_ino || a.st_dev != b.st_dev)) {
            close(r->fd);
            r->fd = -1;
            r->off = 0;
        }
    }
}

static void on_log_timer(uv_timer_t *t)
{
    log_step(t->data);
}

static void on_log_drain(http_req_t *req, void *ud)
{
    (void)req;
    log_reader_t *r = ud;
    if (!r->follow)
        log_step(r);
    /* following: the poll timer picks up again */
}

static void on_log_client_gone(http_req_t *req, void *ud)
{
    (void)req;
    log_reader_t *r = ud;
    r->req = NULL;
    log_reader_finish(r);
}

static int parse_bool(const char *s, int *out)
{
    if (!s || !strcmp(s, "false") || !strcmp(s, "0")) {
        *out = 0;
        return 0;
    }
    if (!strcmp(s, "true") || !strcmp(s, "1") || !*s) {
        *out = 1;
        return 0;
    }
    return -EINVAL;
}

static void h_logs_get(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    const char *source = http_req_query(req, "source");
    if (!source)
        source = "console";
    int known = 0;
    for (size_t i = 0; i < sizeof(log_sources) / sizeof(log_sources[0]); i++)
        if (strcmp(source, log_sources[i]) == 0)
            known = 1;
    if (!known) {
        http_req_respond_error(req, 404, "unknown_source",
                               "no log source '%s' (console, qemu, nbdkit, netmed)", source);
        return;
    }
    int follow;
    if (parse_bool(http_req_query(req, "follow"), &follow) < 0) {
        http_req_respond_error(req, 400, "invalid", "'follow' must be true or false");
        return;
    }
    log_reader_t *r = calloc(1, sizeof(*r));
    if (!r) {
        http_req_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    r->d = d;
    r->req = req;
    r->fd = -1;
    r->follow = follow;
    snprintf(r->lane_id, sizeof(r->lane_id), "%s", l->id);
    snprintf(r->path, sizeof(r->path), "%s/%s.log", l->dir, source);
    if (follow) {
        uv_timer_init(d->loop, &r->timer);
        r->timer.data = r;
        r->timer_open = 1;
        uv_timer_start(&r->timer, on_log_timer, LOG_POLL_MS, LOG_POLL_MS);
    }
    http_req_stream_begin(req, 200, "text/plain; charset=utf-8", "Cache-Control: no-store\r\n");
    http_req_on_close(req, on_log_client_gone, r);
    http_req_on_drain(req, on_log_drain, r);
    log_step(r);
}

void api_logs_register(lanesd_t *d)
{
    http_server_route(d->http, "GET", "/v1/lanes/{name}/logs", 0, h_logs_get, d);
}
