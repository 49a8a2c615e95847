/* http_server.c — HTTP/1.1 server on libuv + http-parser (see http_server.h).
 *
 * One conn_t per accepted unix-socket connection. Input is appended to a
 * per-connection buffer and fed to http-parser; the parser is paused
 * (http_parser_pause) whenever the current request cannot progress: after
 * message_complete until its response is fully written (so pipelined
 * requests run strictly in order), after headers_complete on streaming-body
 * routes until the handler calls http_req_body_read_start(), and while the
 * handler paused the body. Unparsed bytes stay in the buffer; reading from
 * the socket stops when the buffer is full or the body is paused.
 *
 * Request lifetime: a request is freed when (a) its handler released it
 * (handler_done: a respond_* or stream_end call, or it was never handed to a
 * handler), (b) the connection is done with it (conn_done: response written
 * and detached, or connection closed) and (c) no uv_write for it is in flight.
 * Nothing is freed synchronously while the connection still exists, so a
 * handler can call any function on its request from any callback.
 *
 * Timeouts: until a request's headers are complete a fixed deadline runs
 * (idle_timeout_ms from accept or from the previous response), which bounds
 * slowloris clients; while a body is being read the deadline is reset on
 * every read; while a handler works no timeout applies.
 *
 * Threading: single uv loop, no locks.
 */
#include "http_server.h"

#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "http_route.h"
#include "http_ws.h"

#define READ_CHUNK (64 * 1024)
#define MAX_HEADERS 100

typedef struct conn conn_t;

struct http_server {
    uv_loop_t *loop;
    http_server_opts_t opts;
    uv_pipe_t listener;
    uv_tcp_t tcp_listener;
    bool listening;
    bool tcp_listening;
    int listeners_open;  /* listener handles not yet closed */
    http_auth_fn auth;
    void *auth_ud;
    uint64_t status_counts[600]; /* responses sent, by status code */
    bool closing;
    bool listener_closed;
    http_route_t *routes;
    http_route_t **routes_tail;
    conn_t *conns;
    int nconns;
    void (*close_cb)(void *);
    void *close_ud;
};

struct conn {
    http_server_t *srv;
    union {
        uv_pipe_t pipe;
        uv_tcp_t tcp;
        uv_stream_t stream;
        uv_handle_t handle;
    } io;
    bool tcp;            /* accepted from the TCP listener */
    uv_timer_t timer;
    http_ws_t *ws;       /* set once the connection switched to WebSocket */
    int open_handles;
    bool closing;
    bool reading;
    bool stop_parsing;   /* fatal error answered; never parse again */
    bool peer_eof;
    bool in_process;
    bool reprocess;
    uint64_t deadline;   /* uv_now() ms; meaningful only in timed phases */
    http_parser parser;
    char *in;
    size_t in_len, in_off, in_cap;
    http_req_t *req;     /* the request being parsed or answered */
    conn_t *prev, *next;
};

struct http_req {
    conn_t *conn;        /* NULL once detached or the connection is gone */
    const char *method;
    char *url;
    size_t url_len;
    size_t header_bytes;
    char *path;
    char **segs;
    size_t nsegs;
    http_kv_t *query;
    size_t nquery;
    http_kv_t headers[MAX_HEADERS];
    size_t nheaders;
    bool last_was_value;
    http_kv_t params[HTTP_ROUTE_MAX_PARAMS];
    size_t nparams;
    char *resp_headers;
    size_t resp_headers_len;
    uint8_t *body;
    size_t body_len, body_cap;
    size_t max_body;
    int json_depth;
    json_object *json;
    const http_route_t *route;
    int early_status;          /* answer this instead of running a handler */
    const char *early_code;
    char early_msg[400];
    unsigned short http_major, http_minor;
    bool tcp;                  /* arrived over the TCP listener */
    bool keep_alive;           /* as the client asked */
    bool resp_keep_alive;      /* as announced in our response */
    bool headers_done, message_done, ready, dispatched;
    bool handler_done, conn_done, head_sent, final_queued, response_complete;
    bool streaming, chunked, closed;
    bool stream_body, body_reading, body_paused;
    http_body_callbacks_t body_cb;
    void *body_ud;
    void (*on_close)(http_req_t *, void *);
    void *on_close_ud;
    void (*on_drain)(http_req_t *, void *);
    void *on_drain_ud;
    size_t pending;
    unsigned writes_inflight;
};

typedef struct {
    uv_write_t w;
    conn_t *conn;
    http_req_t *req;     /* NULL for writes not tied to a request */
    http_ws_t *ws;       /* WebSocket frame writes (pending accounting) */
    size_t len;
    bool final;
    bool close_after;
    char data[];
} wreq_t;

static void conn_process(conn_t *c);
static void conn_close(conn_t *c);
static void conn_update_io(conn_t *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void req_respond_error_internal(http_req_t *req, int status, const char *code, const char *msg);

/* ---- small helpers -------------------------------------------------------------- */

const char *http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

/* Append to a growable string; false on ENOMEM. */
static bool str_append(char **s, size_t *len, const char *add, size_t n)
{
    char *p = realloc(*s, *len + n + 1);
    if (!p)
        return false;
    memcpy(p + *len, add, n);
    *len += n;
    p[*len] = '\0';
    *s = p;
    return true;
}

/* ---- request objects ------------------------------------------------------------ */

static http_req_t *req_new(conn_t *c)
{
    http_req_t *req = calloc(1, sizeof(*req));
    if (!req)
        return NULL;
    req->conn = c;
    req->tcp = c->tcp;
    req->max_body = c->srv->opts.max_body;
    req->json_depth = c->srv->opts.max_json_depth;
    req->method = "";
    return req;
}

static void req_free(http_req_t *req)
{
    free(req->url);
    free(req->path);
    http_segs_free(req->segs, req->nsegs);
    http_kv_free(req->query, req->nquery);
    free(req->query);
    http_kv_free(req->headers, req->nheaders);
    http_kv_free(req->params, req->nparams);
    free(req->resp_headers);
    free(req->body);
    if (req->json)
        json_object_put(req->json);
    free(req);
}

static void req_maybe_free(http_req_t *req)
{
    if (req->handler_done && req->conn_done && req->writes_inflight == 0)
        req_free(req);
}

/* ---- writing -------------------------------------------------------------------- */

static void response_done(http_req_t *req);
static void ws_wrote(http_ws_t *ws, size_t len, bool closing);

static void on_write(uv_write_t *w, int status)
{
    wreq_t *wr = (wreq_t *)w;
    conn_t *c = wr->conn;
    http_req_t *req = wr->req;
    http_ws_t *ws = wr->ws;
    bool final = wr->final, close_after = wr->close_after;
    size_t len = wr->len;
    free(wr);

    if (ws) {
        ws_wrote(ws, len, status < 0 || close_after);
        if (status < 0 || close_after)
            conn_close(c);
        return;
    }

    if (req) {
        req->writes_inflight--;
        req->pending -= len;
    }
    if (status < 0) {
        conn_close(c);
    } else if (close_after) {
        conn_close(c);
    } else if (req && req->conn && !c->closing) {
        if (final && req->writes_inflight == 0)
            response_done(req);
        else if (req->pending == 0 && !req->final_queued && req->on_drain)
            req->on_drain(req, req->on_drain_ud);
    }
    if (req)
        req_maybe_free(req);
}

/* Queue head[0..hlen) + data[0..len) + tail[0..tlen) as one write. */
static int conn_write(conn_t *c, http_req_t *req, const void *head, size_t hlen, const void *data,
                      size_t len, const void *tail, size_t tlen, bool final)
{
    if (c->closing)
        return -EPIPE;
    size_t total = hlen + len + tlen;
    wreq_t *wr = malloc(sizeof(*wr) + total);
    if (!wr)
        return -ENOMEM;
    wr->conn = c;
    wr->req = req;
    wr->len = total;
    wr->final = final;
    wr->close_after = false;
    wr->ws = NULL;
    if (hlen)
        memcpy(wr->data, head, hlen);
    if (len)
        memcpy(wr->data + hlen, data, len);
    if (tlen)
        memcpy(wr->data + hlen + len, tail, tlen);
    uv_buf_t buf = uv_buf_init(wr->data, (unsigned)total);
    int r = uv_write(&wr->w, &c->io.stream, &buf, 1, on_write);
    if (r < 0) {
        free(wr);
        conn_close(c);
        return -EPIPE;
    }
    if (req) {
        req->writes_inflight++;
        req->pending += total;
    }
    return 0;
}

/* Format the status line and headers. content_length < 0: none. */
static char *req_format_head(http_req_t *req, int status, const char *ctype, long long content_length,
                             bool chunked, const char *extra, size_t *out_len)
{
    if (status >= 100 && status < 600)
        req->conn->srv->status_counts[status]++;
    req->resp_keep_alive = req->keep_alive && req->message_done && !req->conn->stop_parsing &&
                           !req->conn->srv->closing && !req->conn->peer_eof;
    if (req->streaming && !chunked)
        req->resp_keep_alive = false; /* HTTP/1.0: body ends at close */
    char *s = NULL;
    size_t len = 0;
    char line[256];
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status, http_status_text(status));
    bool ok = str_append(&s, &len, line, (size_t)n);
    if (ctype) {
        n = snprintf(line, sizeof(line), "Content-Type: %s\r\n", ctype);
        ok = ok && n < (int)sizeof(line) && str_append(&s, &len, line, (size_t)n);
    }
    if (chunked)
        ok = ok && str_append(&s, &len, "Transfer-Encoding: chunked\r\n", 28);
    if (content_length >= 0) {
        n = snprintf(line, sizeof(line), "Content-Length: %lld\r\n", content_length);
        ok = ok && str_append(&s, &len, line, (size_t)n);
    }
    const char *connhdr = req->resp_keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
    ok = ok && str_append(&s, &len, connhdr, strlen(connhdr));
    if (req->resp_headers)
        ok = ok && str_append(&s, &len, req->resp_headers, req->resp_headers_len);
    if (extra)
        ok = ok && str_append(&s, &len, extra, strlen(extra));
    ok = ok && str_append(&s, &len, "\r\n", 2);
    if (!ok) {
        free(s);
        return NULL;
    }
    *out_len = len;
    return s;
}

/* The handler released the request; returns true if a response may be sent. */
static bool req_release(http_req_t *req)
{
    if (req->handler_done)
        return false; /* double response: a handler bug; ignore */
    req->handler_done = true;
    if (!req->conn || req->closed || req->conn->closing || req->head_sent) {
        req_maybe_free(req);
        return false;
    }
    return true;
}

static void req_send_full(http_req_t *req, int status, const char *ctype, const void *data, size_t len)
{
    conn_t *c = req->conn;
    bool no_body = status == 204 || status == 304 || status < 200;
    size_t hlen;
    char *head = req_format_head(req, status, ctype, no_body ? -1 : (long long)len, false, NULL, &hlen);
    req->head_sent = true;
    req->final_queued = true;
    if (!head || conn_write(c, req, head, hlen, data, no_body ? 0 : len, NULL, 0, true) < 0)
        conn_close(c);
    free(head);
}

void http_req_respond_raw(http_req_t *req, int status, const char *content_type, const void *data,
                          size_t len)
{
    if (!req_release(req))
        return;
    req_send_full(req, status, content_type, data, len);
}

void http_req_respond_json(http_req_t *req, int status, json_object *body)
{
    if (!req_release(req)) {
        if (body)
            json_object_put(body);
        return;
    }
    if (!body) {
        req_send_full(req, status, NULL, NULL, 0);
        return;
    }
    size_t len;
    const char *s = json_object_to_json_string_length(body, JSON_C_TO_STRING_PLAIN, &len);
    req_send_full(req, status, "application/json", s, len);
    json_object_put(body);
}

static json_object *error_body(const char *code, const char *msg)
{
    json_object *err = json_object_new_object();
    json_object_object_add(err, "code", json_object_new_string(code));
    json_object_object_add(err, "message", json_object_new_string(msg));
    json_object *root = json_object_new_object();
    json_object_object_add(root, "error", err);
    return root;
}

static void req_respond_error_internal(http_req_t *req, int status, const char *code, const char *msg)
{
    http_req_respond_json(req, status, error_body(code, msg));
}

void http_req_respond_error(http_req_t *req, int status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    req_respond_error_internal(req, status, code, msg);
}

int http_req_add_header(http_req_t *req, const char *name, const char *value)
{
    if (req->head_sent || req->handler_done)
        return -EALREADY;
    if (!name[0] || strpbrk(name, "\r\n:") || strpbrk(value, "\r\n"))
        return -EINVAL;
    bool ok = str_append(&req->resp_headers, &req->resp_headers_len, name, strlen(name)) &&
              str_append(&req->resp_headers, &req->resp_headers_len, ": ", 2) &&
              str_append(&req->resp_headers, &req->resp_headers_len, value, strlen(value)) &&
              str_append(&req->resp_headers, &req->resp_headers_len, "\r\n", 2);
    return ok ? 0 : -ENOMEM;
}

void http_req_stream_begin(http_req_t *req, int status, const char *content_type,
                           const char *extra_headers)
{
    if (req->head_sent || req->handler_done || !req->conn || req->closed || req->conn->closing)
        return;
    req->streaming = true;
    req->chunked = req->http_major > 1 || (req->http_major == 1 && req->http_minor >= 1);
    size_t hlen;
    char *head = req_format_head(req, status, content_type, -1, req->chunked, extra_headers, &hlen);
    req->head_sent = true;
    if (!head || conn_write(req->conn, req, head, hlen, NULL, 0, NULL, 0, false) < 0)
        conn_close(req->conn);
    free(head);
}

int http_req_stream_write(http_req_t *req, const void *data, size_t len)
{
    if (req->closed || !req->conn || req->conn->closing)
        return -EPIPE;
    if (!req->streaming || req->final_queued || req->handler_done)
        return -EINVAL;
    if (len == 0)
        return 0;
    if (!req->chunked)
        return conn_write(req->conn, req, NULL, 0, data, len, NULL, 0, false);
    char head[32];
    int n = snprintf(head, sizeof(head), "%zx\r\n", len);
    return conn_write(req->conn, req, head, (size_t)n, data, len, "\r\n", 2, false);
}

int http_req_stream_json(http_req_t *req, json_object *line)
{
    if (!line)
        return -EINVAL;
    size_t len;
    const char *s = json_object_to_json_string_length(line, JSON_C_TO_STRING_PLAIN, &len);
    char *buf = malloc(len + 1);
    int r = -ENOMEM;
    if (buf) {
        memcpy(buf, s, len);
        buf[len] = '\n';
        r = http_req_stream_write(req, buf, len + 1);
        free(buf);
    }
    json_object_put(line);
    return r;
}

size_t http_req_stream_pending(const http_req_t *req)
{
    return req->pending;
}

void http_req_on_drain(http_req_t *req, void (*cb)(http_req_t *req, void *ud), void *ud)
{
    req->on_drain = cb;
    req->on_drain_ud = ud;
}

void http_req_on_close(http_req_t *req, void (*cb)(http_req_t *req, void *ud), void *ud)
{
    req->on_close = cb;
    req->on_close_ud = ud;
}

void http_req_stream_end(http_req_t *req)
{
    if (!req->streaming) {
        /* Ending a request that never began a stream: release it. */
        if (!req->head_sent && !req->handler_done)
            req_respond_error_internal(req, 500, "internal", "handler ended without a response");
        return;
    }
    if (req->handler_done)
        return;
    req->handler_done = true;
    if (!req->conn || req->closed || req->conn->closing) {
        req_maybe_free(req);
        return;
    }
    req->final_queued = true;
    if (req->chunked)
        conn_write(req->conn, req, "0\r\n\r\n", 5, NULL, 0, NULL, 0, true);
    else
        conn_write(req->conn, req, NULL, 0, NULL, 0, NULL, 0, true);
}

/* The response to the connection's current request is fully written. */
static void response_done(http_req_t *req)
{
    conn_t *c = req->conn;
    req->response_complete = true;
    if (!req->resp_keep_alive || !req->message_done) {
        conn_close(c);
        return;
    }
    c->req = NULL;
    req->conn = NULL;
    req->conn_done = true;
    c->deadline = uv_now(c->srv->loop) + c->srv->opts.idle_timeout_ms;
    if (c->peer_eof && c->in_off == c->in_len) {
        conn_close(c);
        return;
    }
    conn_process(c);
}

/* ---- accessors ------------------------------------------------------------------ */

const char *http_req_method(const http_req_t *req)
{
    return req->method;
}

const char *http_req_path(const http_req_t *req)
{
    return req->path ? req->path : "";
}

static const char *kv_find(const http_kv_t *kv, size_t n, const char *name, bool icase)
{
    for (size_t i = 0; i < n; i++)
        if (kv[i].name && (icase ? strcasecmp(kv[i].name, name) : strcmp(kv[i].name, name)) == 0)
            return kv[i].value;
    return NULL;
}

const char *http_req_param(const http_req_t *req, const char *name)
{
    return kv_find(req->params, req->nparams, name, false);
}

const char *http_req_query(const http_req_t *req, const char *name)
{
    return kv_find(req->query, req->nquery, name, false);
}

const char *http_req_header(const http_req_t *req, const char *name)
{
    return kv_find(req->headers, req->nheaders, name, true);
}

int http_req_is_tcp(const http_req_t *req)
{
    return req->tcp;
}

const uint8_t *http_req_body(const http_req_t *req, size_t *len)
{
    if (len)
        *len = req->body_len;
    return req->body;
}

json_object *http_req_json(http_req_t *req)
{
    if (req->json)
        return req->json;
    if (req->body_len == 0) {
        req->json = json_object_new_object();
        return req->json;
    }
    json_tokener *tok = json_tokener_new_ex(req->json_depth > 0 ? req->json_depth : 32);
    if (!tok) {
        req_respond_error_internal(req, 500, "internal", "out of memory");
        return NULL;
    }
    json_object *obj = json_tokener_parse_ex(tok, (const char *)req->body, (int)req->body_len);
    enum json_tokener_error err = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    const char *msg = NULL;
    if (err == json_tokener_error_depth)
        msg = "JSON nested too deeply";
    else if (err == json_tokener_continue)
        msg = "truncated JSON body";
    else if (err != json_tokener_success || !obj)
        msg = json_tokener_error_desc(err);
    else {
        for (size_t i = end; i < req->body_len; i++) {
            if (!strchr(" \t\r\n", req->body[i])) {
                msg = "trailing data after JSON value";
                break;
            }
        }
        if (!msg && !json_object_is_type(obj, json_type_object))
            msg = "request body must be a JSON object";
    }
    if (msg) {
        if (obj)
            json_object_put(obj);
        http_req_respond_error(req, 400, "bad_json", "invalid JSON body: %s", msg);
        return NULL;
    }
    req->json = obj;
    return obj;
}

/* ---- streaming request bodies ------------------------------------------------------ */

void http_req_body_read_start(http_req_t *req, const http_body_callbacks_t *cb, void *ud)
{
    if (!req->stream_body || req->body_reading)
        return;
    req->body_cb = *cb;
    req->body_ud = ud;
    req->body_reading = true;
    conn_t *c = req->conn;
    if (!c || c->closing)
        return;
    const char *expect = http_req_header(req, "Expect");
    if (expect && strcasecmp(expect, "100-continue") == 0 && !req->message_done)
        conn_write(c, NULL, "HTTP/1.1 100 Continue\r\n\r\n", 25, NULL, 0, NULL, 0, false);
    c->deadline = uv_now(c->srv->loop) + c->srv->opts.idle_timeout_ms;
    conn_process(c);
}

void http_req_body_pause(http_req_t *req)
{
    if (req->body_paused)
        return;
    req->body_paused = true;
    if (req->conn && !req->conn->closing) {
        if (HTTP_PARSER_ERRNO(&req->conn->parser) == HPE_OK)
            http_parser_pause(&req->conn->parser, 1);
        conn_update_io(req->conn);
    }
}

void http_req_body_resume(http_req_t *req)
{
    if (!req->body_paused)
        return;
    req->body_paused = false;
    conn_t *c = req->conn;
    if (c && !c->closing) {
        c->deadline = uv_now(c->srv->loop) + c->srv->opts.idle_timeout_ms;
        conn_process(c);
    }
}

/* ---- parser callbacks --------------------------------------------------------------- */

static void set_early(http_req_t *req, int status, const char *code, const char *msg)
{
    req->early_status = status;
    req->early_code = code;
    snprintf(req->early_msg, sizeof(req->early_msg), "%s", msg);
}

static int on_message_begin(http_parser *p)
{
    conn_t *c = p->data;
    if (!c->req) {
        c->req = req_new(c);
        if (!c->req)
            return -1;
    }
    return 0;
}

static bool header_budget(conn_t *c, size_t len)
{
    c->req->header_bytes += len;
    return c->req->header_bytes <= c->srv->opts.max_header;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (!header_budget(c, len) || !str_append(&c->req->url, &c->req->url_len, at, len))
        return -1;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    http_req_t *req = c->req;
    if (!header_budget(c, len))
        return -1;
    if (req->nheaders == 0 || req->last_was_value) {
        if (req->nheaders == MAX_HEADERS) {
            req->header_bytes = SIZE_MAX;
            return -1;
        }
        req->nheaders++;
        req->last_was_value = false;
    }
    http_kv_t *h = &req->headers[req->nheaders - 1];
    size_t cur = h->name ? strlen(h->name) : 0;
    return str_append(&h->name, &cur, at, len) ? 0 : -1;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    http_req_t *req = c->req;
    if (!header_budget(c, len))
        return -1;
    req->last_was_value = true;
    http_kv_t *h = &req->headers[req->nheaders - 1];
    size_t cur = h->value ? strlen(h->value) : 0;
    return str_append(&h->value, &cur, at, len) ? 0 : -1;
}

/* Look the request up in the route table; sets req->route or an early error. */
static void req_route(http_req_t *req, http_server_t *srv)
{
    bool path_known = false;
    for (http_route_t *r = srv->routes; r; r = r->next) {
        http_kv_t params[HTTP_ROUTE_MAX_PARAMS];
        int np = http_route_match(r, req->segs, req->nsegs, params);
        if (np == -ENOMEM) {
            set_early(req, 500, "internal", "out of memory");
            return;
        }
        if (np < 0)
            continue;
        if (strcmp(r->method, req->method) != 0) {
            path_known = true;
            http_kv_free(params, (size_t)np);
            continue;
        }
        memcpy(req->params, params, sizeof(params[0]) * (size_t)np);
        req->nparams = (size_t)np;
        req->route = r;
        return;
    }
    if (path_known) {
        char allow[256] = "";
        for (http_route_t *r = srv->routes; r; r = r->next) {
            http_kv_t params[HTTP_ROUTE_MAX_PARAMS];
            int np = http_route_match(r, req->segs, req->nsegs, params);
            if (np < 0)
                continue;
            http_kv_free(params, (size_t)np);
            if (!strstr(allow, r->method) && strlen(allow) + strlen(r->method) + 3 < sizeof(allow)) {
                if (allow[0])
                    strcat(allow, ", ");
                strcat(allow, r->method);
            }
        }
        http_req_add_header(req, "Allow", allow);
        char msg[400];
        snprintf(msg, sizeof(msg), "method %s not allowed here (allowed: %s)", req->method, allow);
        set_early(req, 405, "method_not_allowed", msg);
    } else {
        set_early(req, 404, "not_found", "no such route");
    }
}

/* Answer a request that cannot continue and stop parsing this connection. */
static void conn_fatal(conn_t *c, int status, const char *code, const char *msg)
{
    c->stop_parsing = true;
    if (HTTP_PARSER_ERRNO(&c->parser) == HPE_OK)
        http_parser_pause(&c->parser, 1);
    http_req_t *req = c->req;
    if (!req) {
        req = c->req = req_new(c);
        if (!req) {
            conn_close(c);
            return;
        }
    }
    if (req->dispatched || req->head_sent) {
        /* A handler owns it: the only safe signal is closing the connection. */
        conn_close(c);
        return;
    }
    req->dispatched = true;
    req_respond_error_internal(req, status, code, msg);
}

static int on_headers_complete(http_parser *p)
{
    conn_t *c = p->data;
    http_req_t *req = c->req;
    http_server_t *srv = c->srv;
    req->headers_done = true;
    req->method = http_method_str((enum http_method)p->method);
    req->http_major = p->http_major;
    req->http_minor = p->http_minor;
    req->keep_alive = http_should_keep_alive(p) != 0;

    if (p->http_major != 1) {
        set_early(req, 400, "bad_request", "unsupported HTTP version");
        c->stop_parsing = true;
        req->ready = true;
        http_parser_pause(p, 1);
        return 0;
    }
    const char *url = req->url ? req->url : "";
    size_t plen = strcspn(url, "?#");
    if (http_path_split(url, plen, &req->segs, &req->nsegs) < 0 ||
        http_url_decode(url, plen, false, &req->path) < 0) {
        set_early(req, 400, "bad_request", "malformed request path");
    } else if (url[plen] == '?') {
        size_t qlen = strcspn(url + plen + 1, "#");
        if (http_query_parse(url + plen + 1, qlen, &req->query, &req->nquery) < 0)
            set_early(req, 400, "bad_request", "malformed query string");
    }
    if (!req->early_status)
        req_route(req, srv);
    if (req->early_status)
        return 0; /* answered at message_complete; the body is discarded */

    if (req->route->flags & HTTP_ROUTE_STREAM_BODY) {
        req->stream_body = true;
        req->ready = true;
        http_parser_pause(p, 1); /* dispatch outside the parser */
        return 0;
    }
    bool has_len = !(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX;
    if (has_len && p->content_length > req->max_body) {
        char msg[128];
        snprintf(msg, sizeof(msg), "request body of %llu bytes exceeds the limit of %zu bytes",
                 (unsigned long long)p->content_length, req->max_body);
        conn_fatal(c, 413, "too_large", msg);
        return 0;
    }
    const char *expect = http_req_header(req, "Expect");
    if (expect && strcasecmp(expect, "100-continue") == 0)
        conn_write(c, NULL, "HTTP/1.1 100 Continue\r\n\r\n", 25, NULL, 0, NULL, 0, false);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    http_req_t *req = c->req;
    if (req->early_status || req->handler_done || c->stop_parsing)
        return 0;
    if (req->stream_body) {
        if (req->body_cb.on_data)
            req->body_cb.on_data(req, (const uint8_t *)at, len, req->body_ud);
        return 0;
    }
    if (len > req->max_body - req->body_len) {
        char msg[128];
        snprintf(msg, sizeof(msg), "request body exceeds the limit of %zu bytes", req->max_body);
        conn_fatal(c, 413, "too_large", msg);
        return 0;
    }
    if (req->body_len + len > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : 4096;
        while (cap < req->body_len + len)
            cap *= 2;
        if (cap > req->max_body)
            cap = req->max_body;
        uint8_t *nb = realloc(req->body, cap);
        if (!nb)
            return -1;
        req->body = nb;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, at, len);
    req->body_len += len;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn_t *c = p->data;
    http_req_t *req = c->req;
    req->message_done = true;
    http_parser_pause(p, 1);
    if (p->upgrade) {
        req->keep_alive = false;
        c->stop_parsing = true;
    }
    if (req->stream_body) {
        if (req->body_cb.on_end && !req->handler_done && !c->stop_parsing)
            req->body_cb.on_end(req, req->body_ud);
    } else if (!c->stop_parsing || p->upgrade) {
        req->ready = true;
    }
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- WebSocket ----------------------------------------------------------------------
 *
 * After http_req_websocket_accept() the connection's input buffer carries
 * frames. ws_process() consumes it incrementally: a header once it is
 * complete, then payload bytes as they arrive (unmasked straight into the
 * control-frame buffer or the message being reassembled), so a partial frame
 * never needs more than WS_MAX_HEADER bytes of the input buffer. Limits are
 * checked from the header, before any payload is read.
 */

#define WS_CLOSE_TIMEOUT_MS 5000

struct http_ws {
    conn_t *conn;
    http_ws_callbacks_t cb;
    void *ud;
    size_t max_message;
    bool have_hdr;           /* hdr parsed, payload_off bytes of it read */
    ws_frame_hdr_t hdr;
    uint64_t payload_off;
    uint8_t ctrl[125];
    bool in_message;         /* a fragmented message is being reassembled */
    int msg_type;
    uint8_t *msg;
    size_t msg_len, msg_cap;
    size_t pending;          /* bytes queued to the socket */
    bool paused, failed, close_sent, close_received, closed_cb;
    int close_code;
    char close_reason[124];
};

/* Queue one frame; close_after closes the connection once it is written. */
static int ws_send_frame(http_ws_t *ws, uint8_t opcode, const void *data, size_t len, bool close_after)
{
    conn_t *c = ws->conn;
    if (!c || c->closing)
        return -EPIPE;
    uint8_t head[WS_MAX_HEADER];
    size_t hlen = ws_frame_header_encode(head, true, opcode, len);
    wreq_t *wr = malloc(sizeof(*wr) + hlen + len);
    if (!wr)
        return -ENOMEM;
    memset(wr, 0, sizeof(*wr));
    wr->conn = c;
    wr->ws = ws;
    wr->len = hlen + len;
    wr->close_after = close_after;
    memcpy(wr->data, head, hlen);
    if (len)
        memcpy(wr->data + hlen, data, len);
    uv_buf_t buf = uv_buf_init(wr->data, (unsigned)(hlen + len));
    if (uv_write(&wr->w, &c->io.stream, &buf, 1, on_write) < 0) {
        free(wr);
        conn_close(c);
        return -EPIPE;
    }
    ws->pending += hlen + len;
    return 0;
}

static void ws_wrote(http_ws_t *ws, size_t len, bool closing)
{
    ws->pending -= len;
    if (!closing && ws->pending == 0 && ws->cb.on_drain && !ws->closed_cb && ws->conn &&
        !ws->conn->closing && !ws->close_sent)
        ws->cb.on_drain(ws, ws->ud);
}

/* Send a close frame with code (omitted for 1005) and reason. */
static void ws_send_close(http_ws_t *ws, int code, const char *reason, bool close_after)
{
    uint8_t payload[125];
    size_t n = 0;
    if (code != 1005) {
        payload[0] = (uint8_t)(code >> 8);
        payload[1] = (uint8_t)code;
        n = 2;
        size_t rl = reason ? strlen(reason) : 0;
        if (rl > sizeof(payload) - 2)
            rl = sizeof(payload) - 2;
        if (rl)
            memcpy(payload + 2, reason, rl);
        n += rl;
    }
    ws->close_sent = true;
    ws_send_frame(ws, WS_OP_CLOSE, payload, n, close_after);
}

/* Protocol violation or limit: close with code, then drop the connection. */
static void ws_fail(http_ws_t *ws, int code, const char *reason)
{
    if (ws->failed)
        return;
    ws->failed = true;
    ws->close_code = code;
    snprintf(ws->close_reason, sizeof(ws->close_reason), "%s", reason);
    if (!ws->close_sent)
        ws_send_close(ws, code, reason, true);
    else if (ws->conn)
        conn_close(ws->conn);
}

/* Validate a just-parsed header; false if the connection was failed. */
static bool ws_check_header(http_ws_t *ws)
{
    const ws_frame_hdr_t *h = &ws->hdr;
    if (h->rsv) {
        ws_fail(ws, 1002, "reserved bits set");
        return false;
    }
    if (!h->masked) {
        ws_fail(ws, 1002, "client frames must be masked");
        return false;
    }
    if (h->opcode >= 8) {
        if (h->opcode != WS_OP_CLOSE && h->opcode != WS_OP_PING && h->opcode != WS_OP_PONG) {
            ws_fail(ws, 1002, "unknown control opcode");
            return false;
        }
        if (!h->fin || h->len > 125) {
            ws_fail(ws, 1002, "fragmented or oversized control frame");
            return false;
        }
        return true;
    }
    if (h->opcode == WS_OP_CONT) {
        if (!ws->in_message) {
            ws_fail(ws, 1002, "continuation without a message");
            return false;
        }
    } else if (h->opcode == WS_OP_TEXT || h->opcode == WS_OP_BINARY) {
        if (ws->in_message) {
            ws_fail(ws, 1002, "new message inside a fragmented one");
            return false;
        }
        ws->in_message = true;
        ws->msg_type = h->opcode;
        ws->msg_len = 0;
    } else {
        ws_fail(ws, 1002, "unknown data opcode");
        return false;
    }
    if (h->len > ws->max_message - ws->msg_len) {
        ws_fail(ws, 1009, "message too big");
        return false;
    }
    size_t need = ws->msg_len + (size_t)h->len;
    if (need > ws->msg_cap) {
        size_t cap = ws->msg_cap ? ws->msg_cap : 4096;
        while (cap < need)
            cap *= 2;
        if (cap > ws->max_message)
            cap = ws->max_message;
        uint8_t *m = realloc(ws->msg, cap);
        if (!m) {
            ws_fail(ws, 1011, "out of memory");
            return false;
        }
        ws->msg = m;
        ws->msg_cap = cap;
    }
    return true;
}

/* A whole frame (header + payload) has been read. */
static void ws_frame_done(http_ws_t *ws)
{
    const ws_frame_hdr_t *h = &ws->hdr;
    size_t n = (size_t)h->len;
    switch (h->opcode) {
    case WS_OP_PING:
        if (!ws->close_sent)
            ws_send_frame(ws, WS_OP_PONG, ws->ctrl, n, false);
        return;
    case WS_OP_PONG:
        return;
    case WS_OP_CLOSE: {
        int code = 1005;
        if (n == 1) {
            ws_fail(ws, 1002, "close frame with a 1-byte payload");
            return;
        }
        if (n >= 2) {
            code = (ws->ctrl[0] << 8) | ws->ctrl[1];
            if (!ws_close_code_valid((unsigned)code)) {
                ws_fail(ws, 1002, "invalid close code");
                return;
            }
            if (!ws_utf8_valid(ws->ctrl + 2, n - 2)) {
                ws_fail(ws, 1007, "close reason is not UTF-8");
                return;
            }
        }
        ws->close_received = true;
        ws->close_code = code;
        snprintf(ws->close_reason, sizeof(ws->close_reason), "%.*s", n >= 2 ? (int)(n - 2) : 0,
                 (const char *)ws->ctrl + 2);
        if (!ws->close_sent)
            ws_send_close(ws, code, NULL, true); /* echo, then the server closes TCP */
        else
            conn_close(ws->conn);
        return;
    }
    default:
        break;
    }
    if (!h->fin)
        return;
    ws->in_message = false;
    if (ws->msg_type == WS_OP_TEXT && !ws_utf8_valid(ws->msg, ws->msg_len)) {
        ws_fail(ws, 1007, "text message is not UTF-8");
        return;
    }
    size_t len = ws->msg_len;
    ws->msg_len = 0;
    if (ws->cb.on_message && !ws->close_sent)
        ws->cb.on_message(ws, ws->msg_type == WS_OP_TEXT ? HTTP_WS_TEXT : HTTP_WS_BINARY,
                          ws->msg ? ws->msg : (const uint8_t *)"", len, ws->ud);
    /* Do not keep a large reassembly buffer around between messages. */
    if (ws->msg_cap > 64 * 1024 && !ws->in_message) {
        free(ws->msg);
        ws->msg = NULL;
        ws->msg_cap = 0;
    }
}

static void ws_process(conn_t *c)
{
    http_ws_t *ws = c->ws;
    for (;;) {
        if (c->closing || ws->paused || ws->failed || ws->close_received)
            return;
        size_t avail = c->in_len - c->in_off;
        uint8_t *p = (uint8_t *)c->in + c->in_off;
        if (!ws->have_hdr) {
            int r = ws_frame_header_parse(p, avail, &ws->hdr);
            if (r == 0)
                return;
            if (r < 0) {
                ws_fail(ws, 1002, "bad frame length");
                return;
            }
            c->in_off += (size_t)r;
            ws->have_hdr = true;
            ws->payload_off = 0;
            if (!ws_check_header(ws))
                return;
            continue;
        }
        uint64_t left = ws->hdr.len - ws->payload_off;
        size_t take = avail < left ? avail : (size_t)left;
        if (take) {
            uint8_t *dst = ws->hdr.opcode >= 8 ? ws->ctrl + ws->payload_off : ws->msg + ws->msg_len;
            memcpy(dst, p, take);
            ws_unmask(dst, take, ws->hdr.mask, ws->payload_off);
            ws->payload_off += take;
            if (ws->hdr.opcode < 8)
                ws->msg_len += take;
            c->in_off += take;
        }
        if (ws->payload_off < ws->hdr.len)
            return; /* need more bytes */
        ws->have_hdr = false;
        ws_frame_done(ws);
    }
}

static void ws_kick(uv_timer_t *t)
{
    conn_process(t->data);
}

int http_req_is_websocket(const http_req_t *req)
{
    const char *up = http_req_header(req, "Upgrade");
    return up && strcasecmp(up, "websocket") == 0;
}

/* Does a comma-separated header value contain token (case-insensitive)? */
static bool header_has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    const char *p = value;
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m && (p[m - 1] == ' ' || p[m - 1] == '\t'))
            m--;
        if (m == tl && strncasecmp(p, token, tl) == 0)
            return true;
        p += n;
    }
    return false;
}

http_ws_t *http_req_websocket_accept(http_req_t *req, const http_ws_callbacks_t *cb, void *ud)
{
    if (req->handler_done || req->head_sent)
        return NULL;
    conn_t *c = req->conn;
    const char *connhdr = http_req_header(req, "Connection");
    const char *key = http_req_header(req, "Sec-WebSocket-Key");
    const char *ver = http_req_header(req, "Sec-WebSocket-Version");
    char accept[29];
    if (strcmp(req->method, "GET") != 0 || !http_req_is_websocket(req) || !connhdr ||
        !header_has_token(connhdr, "upgrade") || !key) {
        req_respond_error_internal(req, 400, "bad_request", "this route needs a WebSocket upgrade request");
        return NULL;
    }
    if (!ver || strcmp(ver, "13") != 0) {
        http_req_add_header(req, "Sec-WebSocket-Version", "13");
        req_respond_error_internal(req, 426, "upgrade_required", "only WebSocket version 13 is supported");
        return NULL;
    }
    if (ws_accept_key(key, accept) < 0) {
        req_respond_error_internal(req, 400, "bad_request", "malformed Sec-WebSocket-Key");
        return NULL;
    }
    if (!c || req->closed || c->closing) {
        req_release(req);
        return NULL;
    }
    http_ws_t *ws = calloc(1, sizeof(*ws));
    char head[256];
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\n",
                      accept);
    if (!ws) {
        req_respond_error_internal(req, 500, "internal", "out of memory");
        return NULL;
    }
    ws->conn = c;
    ws->cb = *cb;
    ws->ud = ud;
    ws->max_message = c->srv->opts.max_ws_message;
    /* The request is consumed: it stays attached to the connection (so its
     * params remain readable) and is freed with it. */
    req->handler_done = true;
    req->head_sent = true;
    req->response_complete = true;
    c->srv->status_counts[101]++;
    c->ws = ws;
    if (conn_write(c, NULL, head, (size_t)hn, req->resp_headers, req->resp_headers_len, "\r\n", 2, false) < 0)
        return ws; /* the connection is closing: on_close follows */
    /* Bytes that followed the request are frames: process them once the
     * handler has returned and stored ws. */
    uv_timer_start(&c->timer, ws_kick, 0, 0);
    conn_update_io(c);
    return ws;
}

static int ws_send_data(http_ws_t *ws, uint8_t opcode, const void *data, size_t len)
{
    if (ws->close_sent || ws->failed || ws->closed_cb)
        return -EPIPE;
    return ws_send_frame(ws, opcode, data, len, false);
}

int http_ws_send_text(http_ws_t *ws, const char *text, size_t len)
{
    if (!ws_utf8_valid((const uint8_t *)text, len))
        return -EILSEQ;
    return ws_send_data(ws, WS_OP_TEXT, text, len);
}

int http_ws_send_binary(http_ws_t *ws, const void *data, size_t len)
{
    return ws_send_data(ws, WS_OP_BINARY, data, len);
}

size_t http_ws_pending(const http_ws_t *ws)
{
    return ws->pending;
}

void http_ws_pause(http_ws_t *ws)
{
    if (ws->paused)
        return;
    ws->paused = true;
    if (ws->conn && !ws->conn->closing)
        conn_update_io(ws->conn);
}

void http_ws_resume(http_ws_t *ws)
{
    if (!ws->paused)
        return;
    ws->paused = false;
    if (ws->conn && !ws->conn->closing)
        conn_process(ws->conn);
}

void http_ws_close(http_ws_t *ws, int code, const char *reason)
{
    conn_t *c = ws->conn;
    if (!c || c->closing || ws->close_sent || ws->failed)
        return;
    if (code < 1000 || code > 4999)
        code = 1000;
    ws->close_code = code;
    snprintf(ws->close_reason, sizeof(ws->close_reason), "%s", reason ? reason : "");
    ws_send_close(ws, code, reason, ws->close_received);
    c->deadline = uv_now(c->srv->loop) + WS_CLOSE_TIMEOUT_MS;
    conn_update_io(c);
}

/* ---- connection driving -------------------------------------------------------------- */

static void req_dispatch(http_req_t *req)
{
    req->dispatched = true;
    http_server_t *srv = req->conn->srv;
    if (req->early_status)
        req_respond_error_internal(req, req->early_status, req->early_code, req->early_msg);
    else if (!srv->auth || srv->auth(req, srv->auth_ud) == 0)
        req->route->fn(req, req->route->ctx);
}

/* Can the parser not advance right now? */
static bool conn_parse_blocked(const conn_t *c)
{
    const http_req_t *req = c->req;
    if (c->closing || c->stop_parsing)
        return true;
    if (!req)
        return false;
    if (req->message_done || req->body_paused)
        return true;
    if (req->stream_body && !req->body_reading)
        return true;
    return false;
}

static void on_parse_error(conn_t *c)
{
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (c->req && c->req->header_bytes > c->srv->opts.max_header)
        conn_fatal(c, 431, "headers_too_large", "request line and headers too large");
    else if (e == HPE_HEADER_OVERFLOW)
        conn_fatal(c, 431, "headers_too_large", "request line and headers too large");
    else {
        char msg[128];
        snprintf(msg, sizeof(msg), "malformed HTTP request: %s", http_errno_description(e));
        conn_fatal(c, 400, "bad_request", msg);
    }
}

static void conn_process(conn_t *c)
{
    if (c->in_process) {
        c->reprocess = true;
        return;
    }
    c->in_process = true;
    if (c->ws) {
        do {
            c->reprocess = false;
            ws_process(c);
        } while (c->reprocess && !c->closing);
        c->in_process = false;
        if (c->in_off == c->in_len)
            c->in_off = c->in_len = 0;
        conn_update_io(c);
        return;
    }
    do {
        c->reprocess = false;
        while (c->in_off < c->in_len && !conn_parse_blocked(c)) {
            if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
                http_parser_pause(&c->parser, 0);
            size_t avail = c->in_len - c->in_off;
            size_t n = http_parser_execute(&c->parser, &parser_settings, c->in + c->in_off, avail);
            c->in_off += n;
            enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
            if (e == HPE_PAUSED)
                continue;
            if (e != HPE_OK) {
                if (!c->stop_parsing && !c->closing)
                    on_parse_error(c);
                break;
            }
            if (n < avail) { /* upgrade: we do not speak other protocols */
                c->stop_parsing = true;
                break;
            }
        }
        http_req_t *req = c->req;
        if (req && req->ready && !req->dispatched && !c->closing)
            req_dispatch(req);
    } while (c->reprocess && !c->closing);
    c->in_process = false;
    if (c->in_off == c->in_len)
        c->in_off = c->in_len = 0;
    if (c->peer_eof && !c->closing && !c->req && c->in_off == c->in_len)
        conn_close(c);
    conn_update_io(c);
}

static void on_timeout(uv_timer_t *t)
{
    conn_t *c = t->data;
    http_req_t *req = c->req;
    if (req && !req->dispatched && !req->head_sent) {
        conn_fatal(c, 408, "timeout", "request not received in time");
        uv_read_stop(&c->io.stream);
        c->reading = false;
        return;
    }
    conn_close(c);
}

/* Start/stop reading and the timer to match the connection's state. */
static void conn_update_io(conn_t *c)
{
    if (c->closing)
        return;
    if (c->ws) {
        http_ws_t *ws = c->ws;
        bool want = !ws->paused && !ws->failed && !ws->close_received && !c->peer_eof;
        if (want && !c->reading) {
            if (uv_read_start(&c->io.stream, on_alloc, on_read) == 0)
                c->reading = true;
        } else if (!want && c->reading) {
            uv_read_stop(&c->io.stream);
            c->reading = false;
        }
        if (ws->close_sent) {
            uint64_t now = uv_now(c->srv->loop);
            uv_timer_start(&c->timer, on_timeout, c->deadline > now ? c->deadline - now : 0, 0);
        }
        return;
    }
    http_req_t *req = c->req;
    size_t buffered = c->in_len - c->in_off;
    bool want = !c->stop_parsing && !c->peer_eof && !(req && req->body_paused) &&
                buffered < c->srv->opts.max_header + READ_CHUNK;
    if (want && !c->reading) {
        if (uv_read_start(&c->io.stream, on_alloc, on_read) == 0)
            c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop(&c->io.stream);
        c->reading = false;
    }

    bool timed;
    if (c->stop_parsing)
        timed = false;
    else if (!req || !req->headers_done)
        timed = true; /* fixed deadline for the request head */
    else if (!req->message_done && !req->body_paused && (!req->stream_body || req->body_reading))
        timed = true; /* reading a body: reset on every read */
    else
        timed = false;
    if (timed) {
        uint64_t now = uv_now(c->srv->loop);
        uv_timer_start(&c->timer, on_timeout, c->deadline > now ? c->deadline - now : 0, 0);
    } else {
        uv_timer_stop(&c->timer);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    if (c->in_off > 0 && c->in_off == c->in_len)
        c->in_off = c->in_len = 0;
    if (c->in_off > 0 && c->in_cap - c->in_len < READ_CHUNK) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    if (c->in_cap - c->in_len < READ_CHUNK) {
        char *n = realloc(c->in, c->in_len + READ_CHUNK);
        if (!n) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        c->in = n;
        c->in_cap = c->in_len + READ_CHUNK;
    }
    *buf = uv_buf_init(c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

/* Has the peer closed its socket entirely (not just shut down writing)? */
static bool peer_hung_up(conn_t *c)
{
    uv_os_fd_t fd;
    if (uv_fileno(&c->io.handle, &fd) < 0)
        return true;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int r;
    do
        r = poll(&pfd, 1, 0);
    while (r < 0 && errno == EINTR);
    return r < 0 || (pfd.revents & (POLLHUP | POLLERR));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        http_req_t *req = c->req;
        /* A client that only shut down its sending side (POLLHUP not set)
         * still gets the answers to what it sent; one that closed its socket
         * is gone, and the current handler hears of it through on_close. */
        bool half_close = nread == UV_EOF && !peer_hung_up(c);
        if (half_close && req && req->message_done && !req->streaming && !c->stop_parsing) {
            c->peer_eof = true;
            uv_read_stop(s);
            c->reading = false;
            return;
        }
        if (half_close && !req && c->in_off < c->in_len) {
            c->peer_eof = true; /* pipelined requests still to answer */
            uv_read_stop(s);
            c->reading = false;
            conn_process(c);
            return;
        }
        conn_close(c);
        return;
    }
    c->in_len += (size_t)nread;
    conn_process(c);
    http_req_t *req = c->req;
    if (!c->closing && req && req->headers_done && !req->message_done) {
        c->deadline = uv_now(c->srv->loop) + c->srv->opts.idle_timeout_ms;
        conn_update_io(c);
    }
}

static void server_maybe_finish(http_server_t *srv)
{
    if (!srv->closing || !srv->listener_closed || srv->conns)
        return;
    void (*cb)(void *) = srv->close_cb;
    void *ud = srv->close_ud;
    http_route_t *r = srv->routes;
    while (r) {
        http_route_t *next = r->next;
        http_route_free(r);
        r = next;
    }
    free(srv);
    if (cb)
        cb(ud);
}

static void conn_handle_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    http_req_t *req = c->req;
    if (req) {
        c->req = NULL;
        req->conn = NULL;
        req->conn_done = true;
        if (!req->dispatched)
            req->handler_done = true;
        req_maybe_free(req);
    }
    http_server_t *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    if (c->ws) {
        free(c->ws->msg);
        free(c->ws);
    }
    free(c->in);
    free(c);
    server_maybe_finish(srv);
}

static void conn_close(conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    http_ws_t *ws = c->ws;
    if (ws && !ws->closed_cb) {
        ws->closed_cb = true;
        int code = ws->close_code ? ws->close_code : 1006;
        if (ws->cb.on_close)
            ws->cb.on_close(ws, code, ws->close_reason, ws->ud);
    }
    http_req_t *req = c->req;
    if (req && !req->response_complete && !req->closed) {
        req->closed = true;
        if (req->dispatched && !req->handler_done && req->on_close)
            req->on_close(req, req->on_close_ud);
    }
    uv_close(&c->io.handle, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

/* A new connection object with its handles initialised (not yet reading). */
static conn_t *conn_new(http_server_t *srv, bool tcp)
{
    conn_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->srv = srv;
    c->tcp = tcp;
    if (tcp)
        uv_tcp_init(srv->loop, &c->io.tcp);
    else
        uv_pipe_init(srv->loop, &c->io.pipe, 0);
    uv_timer_init(srv->loop, &c->timer);
    c->io.handle.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->parser.data = c;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    return c;
}

/* The socket is attached: answer 503 over the cap, else start reading. */
static void conn_start(conn_t *c)
{
    http_server_t *srv = c->srv;
    if (srv->nconns > srv->opts.max_connections) {
#define BUSY_BODY "{\"error\":{\"code\":\"busy\",\"message\":\"too many connections\"}}"
        static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
                                   "Content-Type: application/json\r\nConnection: close\r\n"
                                   "Content-Length: 58\r\n\r\n" BUSY_BODY;
        _Static_assert(sizeof(BUSY_BODY) - 1 == 58, "busy body length");
        c->stop_parsing = true;
        srv->status_counts[503]++;
        wreq_t *wr = calloc(1, sizeof(*wr));
        if (!wr) {
            conn_close(c);
            return;
        }
        wr->conn = c;
        wr->close_after = true;
        uv_buf_t b = uv_buf_init((char *)busy, sizeof(busy) - 1);
        if (uv_write(&wr->w, &c->io.stream, &b, 1, on_write) < 0) {
            free(wr);
            conn_close(c);
        }
        return;
    }
    c->deadline = uv_now(srv->loop) + srv->opts.idle_timeout_ms;
    conn_update_io(c);
}

static void on_connection(uv_stream_t *listener, int status)
{
    http_server_t *srv = listener->data;
    if (status < 0 || srv->closing)
        return;
    conn_t *c = conn_new(srv, listener->type == UV_TCP);
    if (!c)
        return;
    if (uv_accept(listener, &c->io.stream) < 0) {
        conn_close(c);
        return;
    }
    conn_start(c);
}

int http_server_serve_fd(http_server_t *srv, int fd)
{
    if (srv->closing) {
        close(fd);
        return -ESHUTDOWN;
    }
    conn_t *c = conn_new(srv, false);
    if (!c) {
        close(fd);
        return -ENOMEM;
    }
    int r = uv_pipe_open(&c->io.pipe, fd);
    if (r < 0) {
        close(fd);
        conn_close(c);
        return r;
    }
    conn_start(c);
    return 0;
}

/* ---- server ----------------------------------------------------------------------- */

http_server_t *http_server_new(uv_loop_t *loop, const http_server_opts_t *opts)
{
    http_server_t *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return NULL;
    srv->loop = loop;
    if (opts)
        srv->opts = *opts;
    if (!srv->opts.max_body)
        srv->opts.max_body = 1024 * 1024;
    if (!srv->opts.max_header)
        srv->opts.max_header = 16 * 1024;
    if (srv->opts.max_json_depth <= 0)
        srv->opts.max_json_depth = 32;
    if (!srv->opts.idle_timeout_ms)
        srv->opts.idle_timeout_ms = 30000;
    if (srv->opts.max_connections <= 0)
        srv->opts.max_connections = 256;
    srv->routes_tail = &srv->routes;
    if (!srv->opts.max_ws_message)
        srv->opts.max_ws_message = 1024 * 1024;
    if (uv_pipe_init(loop, &srv->listener, 0) < 0) {
        free(srv);
        return NULL;
    }
    srv->listener.data = srv;
    srv->listeners_open = 1;
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
    return srv;
}

int http_server_route(http_server_t *srv, const char *method, const char *pattern, unsigned flags,
                      http_handler_fn fn, void *ctx)
{
    http_route_t *r = http_route_new(method, pattern, flags, fn, ctx);
    if (!r)
        return -errno;
    *srv->routes_tail = r;
    srv->routes_tail = &r->next;
    return 0;
}

/* Is something accepting connections on the unix socket at path? */
static bool socket_is_live(const struct sockaddr_un *sa)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int r;
    do
        r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
    while (r < 0 && errno == EINTR);
    close(fd);
    return r == 0;
}

int http_server_listen_unix(http_server_t *srv, const char *path, unsigned mode)
{
    if (srv->listening)
        return -EALREADY;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);

    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return -EEXIST;
        if (socket_is_live(&sa))
            return -EADDRINUSE;
        if (unlink(path) < 0 && errno != ENOENT)
            return -errno;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    /* The umask makes the socket inode appear with at most `mode`: no window
     * in which a wider-permission socket exists. chmod then sets it exactly. */
    mode_t old = umask(~(mode_t)mode & 0777);
    int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    umask(old);
    if (r < 0) {
        close(fd);
        return -e;
    }
    if (chmod(path, mode) < 0 || listen(fd, 128) < 0) {
        e = errno;
        unlink(path);
        close(fd);
        return -e;
    }
    r = uv_pipe_open(&srv->listener, fd);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&srv->listener, 128, on_connection);
    if (r < 0) {
        unlink(path);
        close(fd);
        return r;
    }
    srv->listening = true;
    return 0;
}

int http_server_listen_tcp(http_server_t *srv, const char *host, int port)
{
    if (srv->tcp_listening)
        return -EALREADY;
    if (port < 1 || port > 65535)
        return -EINVAL;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
        return -EINVAL;
    int r = uv_tcp_init(srv->loop, &srv->tcp_listener);
    if (r < 0)
        return r;
    srv->tcp_listener.data = srv;
    srv->tcp_listening = true; /* the handle exists: closed with the server */
    srv->listeners_open++;
    r = uv_tcp_bind(&srv->tcp_listener, (const struct sockaddr *)&ss, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&srv->tcp_listener, 128, on_connection);
    return r;
}

void http_server_set_auth(http_server_t *srv, http_auth_fn fn, void *ud)
{
    srv->auth = fn;
    srv->auth_ud = ud;
}

size_t http_server_status_counts(const http_server_t *srv, int *codes, uint64_t *counts, size_t max)
{
    size_t n = 0;
    for (int i = 100; i < 600 && n < max; i++) {
        if (!srv->status_counts[i])
            continue;
        codes[n] = i;
        counts[n++] = srv->status_counts[i];
    }
    return n;
}

static void on_listener_closed(uv_handle_t *h)
{
    http_server_t *srv = h->data;
    if (--srv->listeners_open > 0)
        return;
    srv->listener_closed = true;
    server_maybe_finish(srv);
}

void http_server_close(http_server_t *srv, void (*cb)(void *), void *ud)
{
    if (!srv || srv->closing)
        return;
    srv->closing = true;
    srv->close_cb = cb;
    srv->close_ud = ud;
    for (conn_t *c = srv->conns; c; c = c->next)
        conn_close(c);
    uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    if (srv->tcp_listening)
        uv_close((uv_handle_t *)&srv->tcp_listener, on_listener_closed);
}
