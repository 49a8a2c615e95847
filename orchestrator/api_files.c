/* api_files.c — copy files into and out of a running lane.
 *
 *   PUT /v1/lanes/{name}/files?path=/abs&mode=0644   body → guest file
 *   GET /v1/lanes/{name}/files?path=/abs             guest file → body
 *
 * Both stream with backpressure: an upload is paused while the guest's
 * window is closed; a download's data is acknowledged to the guest only once
 * the HTTP socket's queue is below the high-water mark. The guest writes
 * uploads to a temporary file and renames it into place after fsync, so a
 * failed upload never leaves a half-written target.
 */
#include "lanesd.h"

#include "api_stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FILE_STREAM_HIGH_WATER (1u * 1024 * 1024)

typedef struct {
    lanesd_t *d;
    lane_rt_t *lane;
    http_req_t *req;
    agent_xfer_t *x;
    /* upload */
    body_pump_t pump;
    int body_done;
    int finished;
    /* download */
    int begun;
    size_t unacked;
    int client_gone;
} file_xfer_t;

static int errno_http_status(int err)
{
    switch (-err) {
    case ENOENT: return 404;
    case EACCES:
    case EPERM: return 403;
    case EISDIR:
    case ENOTDIR:
    case EINVAL:
    case ENAMETOOLONG: return 400;
    case ENOSPC:
    case EDQUOT: return 507;
    default: return 500;
    }
}

static const char *errno_code(int err)
{
    switch (-err) {
    case ENOENT: return "file_not_found";
    case EACCES:
    case EPERM: return "permission_denied";
    case EISDIR: return "is_a_directory";
    case ENOSPC: return "no_space";
    default: return "file_error";
    }
}

/* ---- upload ------------------------------------------------------------------------------- */

static ssize_t xfer_sink_write(void *sink, const uint8_t *data, size_t len)
{
    return agent_xfer_write(sink, data, len);
}

static void put_pump(file_xfer_t *f)
{
    if (!f->x || !body_pump_drain(&f->pump, xfer_sink_write, f->x))
        return;
    if (f->body_done) {
        if (!f->finished) {
            f->finished = 1;
            agent_xfer_finish(f->x);
        }
    } else if (f->req) {
        http_req_body_resume(f->req);
    }
}

static void on_put_data(http_req_t *req, const uint8_t *data, size_t len, void *ud)
{
    file_xfer_t *f = ud;
    if (f->x && len && body_pump_offer(&f->pump, req, data, len, xfer_sink_write, f->x) < 0)
        agent_xfer_cancel(f->x);
}

static void on_put_end(http_req_t *req, void *ud)
{
    file_xfer_t *f = ud;
    (void)req;
    f->body_done = 1;
    put_pump(f);
}

static void on_put_room(agent_xfer_t *x, void *ud)
{
    (void)x;
    put_pump(ud);
}

/* The client went away mid-transfer: cancel it (an upload's guest side
 * discards its temporary file). */
static void on_client_gone(http_req_t *req, void *ud)
{
    file_xfer_t *f = ud;
    (void)req;
    f->client_gone = 1;
    if (f->x)
        agent_xfer_cancel(f->x);
}

static void on_put_done(agent_xfer_t *x, int err, const char *msg, void *ud)
{
    file_xfer_t *f = ud;
    (void)x;
    f->x = NULL;
    f->lane->transfers--;
    vm_lane_touch(f->lane);
    if (f->client_gone)
        http_req_respond_raw(f->req, 499, NULL, NULL, 0);
    else if (err)
        http_req_respond_error(f->req, errno_http_status(err), errno_code(err), "%s",
                               msg && msg[0] ? msg : strerror(-err));
    else
        http_req_respond_raw(f->req, 204, NULL, NULL, 0);
    body_pump_free(&f->pump);
    free(f);
}

static void h_file_put(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    lane_rt_t *l = api_running_lane_or_409(d, req);
    if (!l)
        return;
    const char *path = http_req_query(req, "path");
    if (!api_guest_path_ok(req, path))
        return;
    uint32_t mode = 0644;
    const char *m = http_req_query(req, "mode");
    if (m) {
        char *end;
        unsigned long v = strtoul(m, &end, 8);
        if (!*m || *end || v > 07777) {
            http_req_respond_error(req, 400, "invalid", "'mode' must be octal permissions like 0644");
            return;
        }
        mode = (uint32_t)v;
    }
    file_xfer_t *f = calloc(1, sizeof(*f));
    if (!f) {
        http_req_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    f->d = d;
    f->lane = l;
    f->req = req;
    static const agent_xfer_callbacks_t cbs = {NULL, NULL, on_put_room, on_put_done};
    int r = agent_file_put(l->agent, path, mode, &cbs, f, &f->x);
    if (r < 0) {
        free(f);
        http_req_respond_error(req, 503, "agent_unavailable", "cannot start upload: %s", strerror(-r));
        return;
    }
    l->transfers++;
    http_req_on_close(req, on_client_gone, f);
    static const http_body_callbacks_t bcbs = {on_put_data, on_put_end};
    http_req_body_read_start(req, &bcbs, f);
}

/* ---- download ----------------------------------------------------------------------------- */

static void get_ack(file_xfer_t *f)
{
    if (!f->x || !f->unacked)
        return;
    if (!f->client_gone && http_req_stream_pending(f->req) > FILE_STREAM_HIGH_WATER)
        return;
    agent_xfer_ack(f->x, f->unacked);
    f->unacked = 0;
}

static void on_get_info(agent_xfer_t *x, uint64_t size, uint32_t mode, void *ud)
{
    file_xfer_t *f = ud;
    (void)x;
    char hdr[128];
    snprintf(hdr, sizeof(hdr), "X-Lane-File-Mode: %04o\r\nX-Lane-File-Size: %llu\r\n", mode & 07777,
             (unsigned long long)size);
    http_req_stream_begin(f->req, 200, "application/octet-stream", hdr);
    f->begun = 1;
}

static void on_get_data(agent_xfer_t *x, const uint8_t *data, size_t len, void *ud)
{
    file_xfer_t *f = ud;
    (void)x;
    if (!f->client_gone)
        http_req_stream_write(f->req, data, len);
    f->unacked += len;
    get_ack(f);
}

static void on_get_drain(http_req_t *req, void *ud)
{
    (void)req;
    get_ack(ud);
}

static void on_get_done(agent_xfer_t *x, int err, const char *msg, void *ud)
{
    file_xfer_t *f = ud;
    (void)x;
    f->x = NULL;
    f->lane->transfers--;
    vm_lane_touch(f->lane);
    if (f->begun) {
        /* Headers are out: an error now can only cut the stream short,
         * which the client sees as a truncated chunked body. */
        if (err)
            util_log("file download failed mid-stream: %s", msg && msg[0] ? msg : strerror(-err));
        http_req_stream_end(f->req);
    } else if (f->client_gone) {
        http_req_respond_raw(f->req, 499, NULL, NULL, 0);
    } else {
        http_req_respond_error(f->req, errno_http_status(err ? err : -EIO), errno_code(err ? err : -EIO), "%s",
                               msg && msg[0] ? msg : strerror(err ? -err : EIO));
    }
    free(f);
}

static void h_file_get(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    lane_rt_t *l = api_running_lane_or_409(d, req);
    if (!l)
        return;
    const char *path = http_req_query(req, "path");
    if (!api_guest_path_ok(req, path))
        return;
    file_xfer_t *f = calloc(1, sizeof(*f));
    if (!f) {
        http_req_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    f->d = d;
    f->lane = l;
    f->req = req;
    static const agent_xfer_callbacks_t cbs = {on_get_info, on_get_data, NULL, on_get_done};
    int r = agent_file_get(l->agent, path, &cbs, f, &f->x);
    if (r < 0) {
        free(f);
        http_req_respond_error(req, 503, "agent_unavailable", "cannot start download: %s", strerror(-r));
        return;
    }
    l->transfers++;
    http_req_on_close(req, on_client_gone, f);
    http_req_on_drain(req, on_get_drain, f);
}

void api_files_register(lanesd_t *d)
{
    http_server_route(d->http, "PUT", "/v1/lanes/{name}/files", HTTP_ROUTE_STREAM_BODY, h_file_put, d);
    http_server_route(d->http, "GET", "/v1/lanes/{name}/files", 0, h_file_get, d);
}
