/* api_stream.c — request-body pump and guest path check (see api_stream.h). */
#include "api_stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int body_pump_offer(body_pump_t *p, http_req_t *req, const uint8_t *data, size_t len, body_sink_write_fn w,
                    void *sink)
{
    size_t off = 0;
    if (p->len == p->off) {
        /* Nothing queued ahead of this chunk: the sink may take it now. */
        ssize_t n = w(sink, data, len);
        if (n > 0)
            off = (size_t)n;
    }
    if (off == len)
        return 0;
    size_t keep = p->len - p->off, rest = len - off;
    uint8_t *buf = malloc(keep + rest);
    if (!buf)
        return -ENOMEM;
    if (keep)
        memcpy(buf, p->pending + p->off, keep);
    memcpy(buf + keep, data + off, rest);
    free(p->pending);
    p->pending = buf;
    p->len = keep + rest;
    p->off = 0;
    http_req_body_pause(req);
    return 0;
}

int body_pump_drain(body_pump_t *p, body_sink_write_fn w, void *sink)
{
    while (p->off < p->len) {
        ssize_t n = w(sink, p->pending + p->off, p->len - p->off);
        if (n <= 0)
            return 0;
        p->off += (size_t)n;
    }
    body_pump_free(p);
    return 1;
}

void body_pump_free(body_pump_t *p)
{
    free(p->pending);
    p->pending = NULL;
    p->len = p->off = 0;
}

int api_guest_path_ok(http_req_t *req, const char *path)
{
    if (!path || path[0] != '/') {
        http_req_respond_error(req, 400, "invalid", "query parameter 'path' must be an absolute guest path");
        return 0;
    }
    if (strlen(path) >= 4096) {
        http_req_respond_error(req, 400, "invalid", "path too long");
        return 0;
    }
    return 1;
}
