/* fuzz_http.c — libFuzzer targets for lanes_http's request path, without a
 * listening socket: each input is written into one end of a socketpair whose
 * other end the server adopts (http_server_serve_fd), then the loop runs
 * until the server has answered and dropped the connection.
 *
 * FUZZ_HTTP_JSON=0: the input is raw bytes on the connection (request line,
 *   headers, chunked bodies, pipelining, WebSocket frames after an upgrade).
 * FUZZ_HTTP_JSON=1: the input is the body of a POST whose handler calls
 *   http_req_json() (depth limit 8), i.e. the JSON layer.
 *
 * The routes cover buffered JSON, a streaming body, a chunked streaming
 * response and a WebSocket echo. Memory errors and leaks are what ASan and
 * libFuzzer report; the server must also never hang (libFuzzer's -timeout).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    uv_loop_t loop;
    http_server_t *srv;
} fuzz_ctx_t;

static void h_json(http_req_t *req, void *ctx)
{
    json_object *o = http_req_json(req);
    if (!o)
        return;
    http_req_respond_json(req, 200, json_object_get(o));
}

static void h_hello(http_req_t *req, void *ctx)
{
    const char *q = http_req_query(req, "q");
    const char *h = http_req_header(req, "X-Test");
    json_object *o = json_object_new_object();
    json_object_object_add(o, "q", q ? json_object_new_string(q) : NULL);
    json_object_object_add(o, "h", h ? json_object_new_string(h) : NULL);
    json_object_object_add(o, "p", json_object_new_string(http_req_param(req, "name")));
    http_req_respond_json(req, 200, o);
}

static void h_stream(http_req_t *req, void *ctx)
{
    http_req_stream_begin(req, 200, "application/x-ndjson", NULL);
    for (int i = 0; i < 3; i++) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "i", json_object_new_int(i));
        http_req_stream_json(req, o);
    }
    http_req_stream_end(req);
}

static void up_data(http_req_t *req, const uint8_t *d, size_t n, void *ud)
{
    size_t *total = ud;
    *total += n;
}

static void up_end(http_req_t *req, void *ud)
{
    free(ud);
    http_req_respond_raw(req, 204, NULL, NULL, 0);
}

static void up_closed(http_req_t *req, void *ud)
{
    free(ud);
    http_req_stream_end(req);
}

static void h_upload(http_req_t *req, void *ctx)
{
    size_t *total = calloc(1, sizeof(*total));
    static const http_body_callbacks_t cb = {up_data, up_end};
    http_req_on_close(req, up_closed, total);
    http_req_body_read_start(req, &cb, total);
}

static void ws_msg(http_ws_t *ws, int type, const uint8_t *d, size_t n, void *ud)
{
    if (type == HTTP_WS_TEXT)
        http_ws_send_text(ws, (const char *)d, n);
    else
        http_ws_send_binary(ws, d, n);
    if (n == 1 && d[0] == 'c')
        http_ws_close(ws, 1000, "bye");
}

static void ws_close(http_ws_t *ws, int code, const char *reason, void *ud)
{
}

static void h_ws(http_req_t *req, void *ctx)
{
    static const http_ws_callbacks_t cb = {ws_msg, ws_close, NULL};
    http_req_websocket_accept(req, &cb, NULL);
}

static fuzz_ctx_t *fuzz_ctx(void)
{
    static fuzz_ctx_t *fx;
    if (fx)
        return fx;
    fx = calloc(1, sizeof(*fx));
    uv_loop_init(&fx->loop);
    http_server_opts_t o = {.max_body = 64 * 1024, .max_header = 8192, .max_json_depth = 8,
                            .idle_timeout_ms = 200, .max_connections = 4, .max_ws_message = 64 * 1024};
    fx->srv = http_server_new(&fx->loop, &o);
    http_server_route(fx->srv, "GET", "/v1/lanes/{name}", 0, h_hello, NULL);
    http_server_route(fx->srv, "POST", "/json", 0, h_json, NULL);
    http_server_route(fx->srv, "GET", "/stream", 0, h_stream, NULL);
    http_server_route(fx->srv, "PUT", "/upload", HTTP_ROUTE_STREAM_BODY, h_upload, NULL);
    http_server_route(fx->srv, "GET", "/ws", 0, h_ws, NULL);
    return fx;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 60000)
        return 0; /* must fit the socket buffer: we write before running the loop */
    fuzz_ctx_t *fx = fuzz_ctx();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    int big = 256 * 1024;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    if (http_server_serve_fd(fx->srv, sv[0]) < 0)
        abort();
#if FUZZ_HTTP_JSON
    char head[128];
    int hn = snprintf(head, sizeof(head), "POST /json HTTP/1.1\r\nHost: f\r\nContent-Length: %zu\r\n\r\n", size);
    if (write(sv[1], head, (size_t)hn) != hn)
        abort();
#endif
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(sv[1], data + off, size - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    shutdown(sv[1], SHUT_WR);
    /* Let the server parse and answer, reading its answers as a client would. */
    char sink[65536];
    for (int i = 0; i < 20; i++) {
        uv_run(&fx->loop, UV_RUN_NOWAIT);
        while (recv(sv[1], sink, sizeof(sink), MSG_DONTWAIT) > 0)
            ;
    }
    close(sv[1]);
    /* The peer is gone: the connection must close and every handle stop. */
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    return 0;
}
