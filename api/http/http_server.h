/* http_server.h — a small HTTP/1.1 server on libuv for lanesd's API.
 *
 * Parsing uses http-parser (Debian's libhttp-parser). Routes are patterns
 * like "/v1/lanes/{name}/exec"; a {param} matches one non-empty path segment
 * (percent-decoded). Requests whose body exceeds the server's cap get 413
 * before the body is read. JSON bodies are parsed with json-c with a depth
 * limit. Error responses always have the body
 *   {"error": {"code": "...", "message": "..."}}
 *
 * Threading: everything on the loop given to http_server_new(); no locks.
 *
 * Ownership: an http_req_t lives until its response is complete (or the
 * client went away) AND the handler has released it — the handler must end
 * every request exactly once with http_req_respond_*() or
 * http_req_stream_end(). If the client disconnects first, the on_close
 * callback runs (if set) and the later respond/stream calls become no-ops
 * that still release the request.
 *
 * Connections: keep-alive and pipelining are supported; requests on one
 * connection are handled strictly one after another. A client EOF while a
 * request is unfinished counts as a disconnect. http_server_new() sets
 * SIGPIPE to SIG_IGN if it is still SIG_DFL (a client leaving must never
 * kill the daemon).
 */
#ifndef LANES_HTTP_SERVER_H
#define LANES_HTTP_SERVER_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

typedef struct http_server http_server_t;
typedef struct http_req http_req_t;

typedef void (*http_handler_fn)(http_req_t *req, void *ctx);

typedef struct {
    size_t max_body;         /* bytes; default 1 MiB for buffered bodies */
    size_t max_header;       /* bytes for request line + headers; default 16 KiB */
    int max_json_depth;      /* default 32 */
    uint64_t idle_timeout_ms;/* header/body read timeout; default 30000 */
    int max_connections;     /* default 256 */
    size_t max_ws_message;   /* bytes of one (reassembled) WebSocket message; default 1 MiB */
} http_server_opts_t;

enum http_route_flags {
    /* Do not buffer the body: the handler runs after headers and pulls the
     * body with http_req_body_read_start(). No max_body cap applies. */
    HTTP_ROUTE_STREAM_BODY = 1,
};

http_server_t *http_server_new(uv_loop_t *loop, const http_server_opts_t *opts);
/* Listen on a unix socket created with the given mode (e.g. 0600); an old
 * socket file at path is replaced. Returns 0 or negative errno. */
int http_server_listen_unix(http_server_t *srv, const char *path, unsigned mode);
/* Also listen on TCP host:port (numeric IPv4/IPv6 address). Requests that
 * arrive over TCP report http_req_is_tcp() == 1; pair this with an auth
 * hook. Returns 0 or negative errno. */
int http_server_listen_tcp(http_server_t *srv, const char *host, int port);
/* Serve one already-connected stream socket (takes ownership of fd, also on
 * failure). Used by tests and the fuzzer. Returns 0 or negative errno. */
int http_server_serve_fd(http_server_t *srv, int fd);
/* Called for every routed request right before its handler. Return 0 to
 * let the handler run; otherwise the hook has answered the request itself
 * (e.g. 401/403) and the handler is skipped. */
typedef int (*http_auth_fn)(http_req_t *req, void *ud);
void http_server_set_auth(http_server_t *srv, http_auth_fn fn, void *ud);
/* Responses sent so far, by status: fills up to max (code, count) pairs for
 * the codes seen (in ascending order) and returns how many. */
size_t http_server_status_counts(const http_server_t *srv, int *codes, uint64_t *counts, size_t max);
int http_server_route(http_server_t *srv, const char *method, const char *pattern, unsigned flags,
                      http_handler_fn fn, void *ctx);
/* Stop accepting, close all connections, free. cb may be NULL. */
void http_server_close(http_server_t *srv, void (*cb)(void *), void *ud);

/* ---- request accessors ----------------------------------------------------- */
const char *http_req_method(const http_req_t *req);
const char *http_req_path(const http_req_t *req);          /* decoded path, no query */
const char *http_req_param(const http_req_t *req, const char *name);  /* route {param} */
const char *http_req_query(const http_req_t *req, const char *name);  /* decoded, NULL if absent */
const char *http_req_header(const http_req_t *req, const char *name); /* case-insensitive */
/* 1 if the request came in over the TCP listener, 0 for the unix socket. */
int http_req_is_tcp(const http_req_t *req);
/* Buffered body (non-streaming routes). */
const uint8_t *http_req_body(const http_req_t *req, size_t *len);
/* Parse the buffered body as a JSON object. On failure responds 400 itself
 * (code "bad_json") and returns NULL — the handler just returns. An empty
 * body yields an empty object. The object is owned by the request. */
json_object *http_req_json(http_req_t *req);

/* Called once if the client disconnects before the response completes. */
void http_req_on_close(http_req_t *req, void (*cb)(http_req_t *req, void *ud), void *ud);

/* ---- streaming request bodies (HTTP_ROUTE_STREAM_BODY) ------------------------ */
typedef struct {
    void (*on_data)(http_req_t *req, const uint8_t *data, size_t len, void *ud);
    void (*on_end)(http_req_t *req, void *ud); /* whole body received */
} http_body_callbacks_t;
void http_req_body_read_start(http_req_t *req, const http_body_callbacks_t *cb, void *ud);
/* Backpressure: stop/resume reading the client socket. */
void http_req_body_pause(http_req_t *req);
void http_req_body_resume(http_req_t *req);

/* ---- responses ------------------------------------------------------------------ */
/* Takes ownership of body (json_object_put after sending). */
void http_req_respond_json(http_req_t *req, int status, json_object *body);
void http_req_respond_error(http_req_t *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void http_req_respond_raw(http_req_t *req, int status, const char *content_type, const void *data,
                          size_t len);

/* Add a header ("Location", "/v1/lanes/x") to the response not yet sent; for
 * any respond/stream_begin call that follows. 0 or negative errno (-EINVAL
 * for CR/LF in name or value, -EALREADY once the response head is out). */
int http_req_add_header(http_req_t *req, const char *name, const char *value);

/* Chunked streaming response. extra_headers: NULL or "Name: value\r\n..." */
void http_req_stream_begin(http_req_t *req, int status, const char *content_type,
                           const char *extra_headers);
/* Queue bytes; returns 0 or negative errno (-EPIPE if the client left). */
int http_req_stream_write(http_req_t *req, const void *data, size_t len);
/* Convenience: one NDJSON line (object serialised + "\n"); takes ownership. */
int http_req_stream_json(http_req_t *req, json_object *line);
/* Bytes queued but not yet written to the socket (for backpressure). */
size_t http_req_stream_pending(const http_req_t *req);
/* Called whenever pending drops to 0 after having been > 0. */
void http_req_on_drain(http_req_t *req, void (*cb)(http_req_t *req, void *ud), void *ud);
void http_req_stream_end(http_req_t *req);

/* ---- WebSocket (RFC 6455, server side) -------------------------------------------
 *
 * A handler upgrades its request with http_req_websocket_accept(). After
 * that the request is consumed (no respond_* call), and the connection
 * carries WebSocket frames until on_close. Incoming messages are delivered
 * whole (fragments reassembled, at most max_ws_message bytes, else the
 * connection is closed with 1009); client frames must be masked (else 1002);
 * text messages and close reasons must be valid UTF-8 (else 1007). Pings are
 * answered with pongs by the library.
 *
 * Lifetime: the http_ws_t is valid until on_close has returned; on_close is
 * called exactly once (peer's close, http_ws_close() completed, protocol
 * error, disconnect, or server shutdown). Sending from on_close fails with
 * -EPIPE. */
typedef struct http_ws http_ws_t;
enum { HTTP_WS_TEXT = 1, HTTP_WS_BINARY = 2 };
typedef struct {
    void (*on_message)(http_ws_t *ws, int type, const uint8_t *data, size_t len, void *ud);
    /* code: the peer's close code, ours, 1005 if none was given, 1006 if the
     * connection dropped without a close frame. */
    void (*on_close)(http_ws_t *ws, int code, const char *reason, void *ud);
    /* Outgoing queue drained to 0 after having been > 0 (may be NULL). */
    void (*on_drain)(http_ws_t *ws, void *ud);
} http_ws_callbacks_t;
/* Does the request ask for a WebSocket upgrade? */
int http_req_is_websocket(const http_req_t *req);
/* Answer 101 and switch the connection to WebSocket. On a request that is
 * not a valid upgrade, responds 400 (or 426 for a wrong version) itself and
 * returns NULL. */
http_ws_t *http_req_websocket_accept(http_req_t *req, const http_ws_callbacks_t *cb, void *ud);
/* Queue one message. 0 or negative errno (-EPIPE once closing/closed,
 * -EILSEQ for invalid UTF-8 in a text message). */
int http_ws_send_text(http_ws_t *ws, const char *text, size_t len);
int http_ws_send_binary(http_ws_t *ws, const void *data, size_t len);
/* Bytes queued but not yet written to the socket (for backpressure). */
size_t http_ws_pending(const http_ws_t *ws);
/* Stop/resume reading (and delivering) incoming frames. */
void http_ws_pause(http_ws_t *ws);
void http_ws_resume(http_ws_t *ws);
/* Start the close handshake (code 1000..4999, reason may be NULL); the
 * connection closes when the peer answers or after a short timeout. */
void http_ws_close(http_ws_t *ws, int code, const char *reason);

/* Status text for a code ("Not Found"). */
const char *http_status_text(int status);

#endif
