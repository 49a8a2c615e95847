/* api_stream.h — shared plumbing for handlers that stream an HTTP request
 * body into the guest (file upload, tar upload) and that take a guest path.
 *
 * A body pump sits between http_req's body callbacks and a guest sink with
 * a flow-control window (agent_xfer_write, agent_exec_write_stdin): bytes
 * the sink cannot take yet are kept and the request body is paused until
 * the sink reports room. Memory is bounded by what one body callback
 * delivers plus what was kept. Threading: the uv loop only.
 */
#ifndef LANES_API_STREAM_H
#define LANES_API_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "http_server.h"

/* Writes up to len bytes into the guest sink; returns how many it took
 * (0 when its window is closed) or a negative errno. */
typedef ssize_t (*body_sink_write_fn)(void *sink, const uint8_t *data, size_t len);

typedef struct {
    uint8_t *pending; /* bytes the sink has not taken yet */
    size_t len, off;
} body_pump_t;

/* Hand a chunk of request body to the sink; whatever it does not take is
 * kept and the body paused. Returns 0, or -ENOMEM (the caller cancels). */
int body_pump_offer(body_pump_t *p, http_req_t *req, const uint8_t *data, size_t len, body_sink_write_fn w,
                    void *sink);

/* Retry the kept bytes. Returns 1 once nothing is kept (the caller then
 * resumes the body or, at its end, finishes the sink), 0 while some is. */
int body_pump_drain(body_pump_t *p, body_sink_write_fn w, void *sink);

void body_pump_free(body_pump_t *p);

/* 1 if `path` (a query parameter) is an absolute guest path of sane
 * length; otherwise answers 400 and returns 0. */
int api_guest_path_ok(http_req_t *req, const char *path);

#endif
