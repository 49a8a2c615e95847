/* test_http.c — lanes_http end to end: a server on a temp unix socket runs on
 * a uv loop in its own thread; the tests talk to it with raw sockets so they
 * control every byte (pipelining, slow clients, garbage, disconnects).
 *
 * Handler state shared with the test thread is only touched through
 * atomics; everything else stays on the loop thread.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "http_server.h"

/* cmocka asserts must not run on the loop thread (they longjmp). */
#define LOOP_CHECK(cond)                                                                        \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "%s:%d: loop-thread check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                            \
        }                                                                                       \
    } while (0)

#define MAX_BODY (64 * 1024)
#define IDLE_MS 400
#define MAX_CONNS 8
#define BIG_TOTAL (4 * 1024 * 1024)

typedef struct {
    char dir[64];
    char path[128];
    uv_loop_t loop;
    uv_async_t stop;
    http_server_t *srv;
    pthread_t thread;
    atomic_int closes;       /* on_close callbacks seen */
    atomic_int slow_answered;
    atomic_int upload_pauses;
    atomic_int big_drains;
    atomic_int ws_closes;       /* WebSocket on_close callbacks */
    atomic_int ws_close_code;   /* code of the last one */
    atomic_size_t ws_max_pending;
} fixture_t;

/* ---- handlers (loop thread) --------------------------------------------------- */

static void h_hello(http_req_t *req, void *ctx)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "hello", json_object_new_string("world"));
    http_req_respond_json(req, 200, o);
}

static void h_params(http_req_t *req, void *ctx)
{
    json_object *o = json_object_new_object();
    const char *p = http_req_query(req, "path"), *x = http_req_query(req, "x");
    const char *h = http_req_header(req, "X-TEST");
    json_object_object_add(o, "name", json_object_new_string(http_req_param(req, "name")));
    json_object_object_add(o, "path", p ? json_object_new_string(p) : NULL);
    json_object_object_add(o, "x", x ? json_object_new_string(x) : NULL);
    json_object_object_add(o, "hdr", h ? json_object_new_string(h) : NULL);
    json_object_object_add(o, "method", json_object_new_string(http_req_method(req)));
    json_object_object_add(o, "missing", http_req_query(req, "nope") ? json_object_new_string("?") : NULL);
    http_req_add_header(req, "X-Lane-File-Mode", "0644");
    http_req_respond_json(req, 200, o);
}

static void h_echo(http_req_t *req, void *ctx)
{
    json_object *o = http_req_json(req);
    if (!o)
        return;
    http_req_respond_json(req, 200, json_object_get(o));
}

static void h_delete(http_req_t *req, void *ctx)
{
    http_req_respond_json(req, 204, NULL);
}

static void h_chunks(http_req_t *req, void *ctx)
{
    http_req_stream_begin(req, 200, "application/x-ndjson", "X-Extra: yes\r\n");
    for (int i = 0; i < 5; i++) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "progress", json_object_new_int(i));
        LOOP_CHECK(http_req_stream_json(req, o) == 0);
    }
    http_req_stream_end(req);
}

/* /reject: a streaming-body route that answers without reading the body. */
static void h_reject(http_req_t *req, void *ctx)
{
    LOOP_CHECK(http_req_add_header(req, "X-Bad", "a\r\nInjected: 1") == -EINVAL);
    LOOP_CHECK(http_req_add_header(req, "Bad:Name", "v") == -EINVAL);
    http_req_respond_error(req, 409, "exists", "lane %s already exists", "x");
    LOOP_CHECK(http_req_add_header(req, "X-Late", "v") == -EALREADY);
}

/* /upload: streamed body, paused after every chunk and resumed from a timer. */
typedef struct {
    uv_timer_t timer;
    http_req_t *req;
    fixture_t *fx;
    size_t bytes;
    uint32_t sum;
    bool done;
} upload_t;

static void upload_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void upload_resume(uv_timer_t *t)
{
    upload_t *u = t->data;
    http_req_body_resume(u->req);
}

static void upload_data(http_req_t *req, const uint8_t *data, size_t len, void *ud)
{
    upload_t *u = ud;
    for (size_t i = 0; i < len; i++)
        u->sum = u->sum * 31 + data[i];
    u->bytes += len;
    http_req_body_pause(req);
    atomic_fetch_add(&u->fx->upload_pauses, 1);
    uv_timer_start(&u->timer, upload_resume, 1, 0);
}

static void upload_finish(upload_t *u)
{
    u->done = true;
    uv_timer_stop(&u->timer);
    uv_close((uv_handle_t *)&u->timer, upload_timer_closed);
}

static void upload_end(http_req_t *req, void *ud)
{
    upload_t *u = ud;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "bytes", json_object_new_int64((int64_t)u->bytes));
    json_object_object_add(o, "sum", json_object_new_int64(u->sum));
    http_req_respond_json(req, 200, o);
    upload_finish(u);
}

static void upload_closed(http_req_t *req, void *ud)
{
    upload_t *u = ud;
    atomic_fetch_add(&u->fx->closes, 1);
    http_req_respond_error(req, 500, "gone", "client left");
    upload_finish(u);
}

static void h_upload(http_req_t *req, void *ctx)
{
    fixture_t *fx = ctx;
    upload_t *u = calloc(1, sizeof(*u));
    u->req = req;
    u->fx = fx;
    uv_timer_init(&fx->loop, &u->timer);
    u->timer.data = u;
    http_req_on_close(req, upload_closed, u);
    static const http_body_callbacks_t cb = {upload_data, upload_end};
    http_req_body_read_start(req, &cb, u);
}

/* /forever: one NDJSON line every 5 ms until the client leaves. */
typedef struct {
    uv_timer_t timer;
    http_req_t *req;
    fixture_t *fx;
    int n;
} ticker_t;

static void ticker_tick(uv_timer_t *t)
{
    ticker_t *tk = t->data;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "n", json_object_new_int(tk->n++));
    http_req_stream_json(tk->req, o);
}

static void ticker_closed(http_req_t *req, void *ud)
{
    ticker_t *tk = ud;
    atomic_fetch_add(&tk->fx->closes, 1);
    uv_timer_stop(&tk->timer);
    uv_close((uv_handle_t *)&tk->timer, upload_timer_closed);
    /* Later calls must be harmless no-ops; the last one releases. */
    LOOP_CHECK(http_req_stream_write(req, "x", 1) == -EPIPE);
    http_req_stream_end(req);
}

static void h_forever(http_req_t *req, void *ctx)
{
    fixture_t *fx = ctx;
    ticker_t *tk = calloc(1, sizeof(*tk));
    tk->req = req;
    tk->fx = fx;
    uv_timer_init(&fx->loop, &tk->timer);
    tk->timer.data = tk;
    http_req_on_close(req, ticker_closed, tk);
    http_req_stream_begin(req, 200, "application/x-ndjson", NULL);
    uv_timer_start(&tk->timer, ticker_tick, 5, 5);
}

/* /slow: answers 200 ms later, whether or not the client is still there. */
typedef struct {
    uv_timer_t timer;
    http_req_t *req;
    fixture_t *fx;
} slow_t;

static void slow_fire(uv_timer_t *t)
{
    slow_t *s = t->data;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "slow", json_object_new_boolean(1));
    http_req_respond_json(s->req, 200, o);
    atomic_fetch_add(&s->fx->slow_answered, 1);
    uv_close((uv_handle_t *)&s->timer, upload_timer_closed);
}

static void slow_closed(http_req_t *req, void *ud)
{
    slow_t *s = ud;
    atomic_fetch_add(&s->fx->closes, 1);
}

static void h_slow(http_req_t *req, void *ctx)
{
    fixture_t *fx = ctx;
    slow_t *s = calloc(1, sizeof(*s));
    s->req = req;
    s->fx = fx;
    uv_timer_init(&fx->loop, &s->timer);
    s->timer.data = s;
    http_req_on_close(req, slow_closed, s);
    uv_timer_start(&s->timer, slow_fire, 200, 0);
}

/* /big: BIG_TOTAL bytes, written only while fewer than 256 KiB are pending. */
typedef struct {
    size_t sent;
    fixture_t *fx;
    bool ended;
} big_t;

static void big_pump(http_req_t *req, void *ud)
{
    big_t *b = ud;
    static char block[64 * 1024];
    if (b->ended)
        return;
    atomic_fetch_add(&b->fx->big_drains, 1);
    while (b->sent < BIG_TOTAL && http_req_stream_pending(req) < 256 * 1024) {
        memset(block, 'a' + (int)((b->sent / sizeof(block)) % 26), sizeof(block));
        if (http_req_stream_write(req, block, sizeof(block)) < 0)
            break;
        b->sent += sizeof(block);
    }
    if (b->sent >= BIG_TOTAL) {
        b->ended = true;
        http_req_stream_end(req);
        free(b);
    }
}

static void big_closed(http_req_t *req, void *ud)
{
    big_t *b = ud;
    atomic_fetch_add(&b->fx->closes, 1);
    b->ended = true;
    http_req_stream_end(req);
    free(b);
}

static void h_big(http_req_t *req, void *ctx)
{
    big_t *b = calloc(1, sizeof(*b));
    b->fx = ctx;
    http_req_on_close(req, big_closed, b);
    http_req_on_drain(req, big_pump, b);
    http_req_stream_begin(req, 200, "application/octet-stream", NULL);
    big_pump(req, b);
}

/* /ws: WebSocket echo. "close" makes the server start the close handshake;
 * "flood" sends WS_FLOOD bytes in 64 KiB binary messages, queuing more only
 * while fewer than 256 KiB are pending (on_drain resumes). */
#define WS_MAX_MSG (64 * 1024)
#define WS_FLOOD (4 * 1024 * 1024)

typedef struct {
    fixture_t *fx;
    size_t flood_sent;
    bool flooding;
} ws_state_t;

static void ws_flood_pump(http_ws_t *ws, void *ud)
{
    ws_state_t *st = ud;
    static uint8_t block[64 * 1024];
    while (st->flooding && st->flood_sent < WS_FLOOD && http_ws_pending(ws) < 256 * 1024) {
        memset(block, 'A' + (int)((st->flood_sent / sizeof(block)) % 26), sizeof(block));
        LOOP_CHECK(http_ws_send_binary(ws, block, sizeof(block)) == 0);
        st->flood_sent += sizeof(block);
        size_t p = http_ws_pending(ws);
        if (p > atomic_load(&st->fx->ws_max_pending))
            atomic_store(&st->fx->ws_max_pending, p);
    }
    if (st->flood_sent >= WS_FLOOD)
        st->flooding = false;
}

static void ws_on_message(http_ws_t *ws, int type, const uint8_t *data, size_t len, void *ud)
{
    ws_state_t *st = ud;
    if (type == HTTP_WS_TEXT && len == 5 && !memcmp(data, "close", 5)) {
        http_ws_close(ws, 4000, "bye");
        LOOP_CHECK(http_ws_send_text(ws, "late", 4) == -EPIPE);
        return;
    }
    if (type == HTTP_WS_TEXT && len == 5 && !memcmp(data, "flood", 5)) {
        st->flooding = true;
        ws_flood_pump(ws, st);
        return;
    }
    if (type == HTTP_WS_TEXT)
        LOOP_CHECK(http_ws_send_text(ws, (const char *)data, len) == 0);
    else
        LOOP_CHECK(http_ws_send_binary(ws, data, len) == 0);
}

static void ws_on_close(http_ws_t *ws, int code, const char *reason, void *ud)
{
    ws_state_t *st = ud;
    LOOP_CHECK(http_ws_send_text(ws, "x", 1) == -EPIPE);
    atomic_store(&st->fx->ws_close_code, code);
    atomic_fetch_add(&st->fx->ws_closes, 1);
    free(st);
}

static void h_ws(http_req_t *req, void *ctx)
{
    static const http_ws_callbacks_t cbs = {ws_on_message, ws_on_close, ws_flood_pump};
    ws_state_t *st = calloc(1, sizeof(*st));
    st->fx = ctx;
    if (!http_req_websocket_accept(req, &cbs, st))
        free(st);
}

/* ---- fixture -------------------------------------------------------------------- */

static void *loop_thread(void *arg)
{
    fixture_t *fx = arg;
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void on_stop(uv_async_t *a)
{
    fixture_t *fx = a->data;
    http_server_close(fx->srv, NULL, NULL);
    uv_close((uv_handle_t *)a, NULL);
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof(*fx));
    strcpy(fx->dir, "/tmp/lanes-http-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof(fx->path), "%s/api.sock", fx->dir);

    /* A stale socket from a dead server must be replaced. */
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, fx->path);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(s);

    assert_int_equal(uv_loop_init(&fx->loop), 0);
    http_server_opts_t opts = {.max_body = MAX_BODY, .max_json_depth = 8,
                               .idle_timeout_ms = IDLE_MS, .max_connections = MAX_CONNS,
                               .max_ws_message = WS_MAX_MSG};
    fx->srv = http_server_new(&fx->loop, &opts);
    assert_non_null(fx->srv);
    http_server_t *srv = fx->srv;
    assert_int_equal(http_server_route(srv, "GET", "/hello", 0, h_hello, fx), 0);
    assert_int_equal(http_server_route(srv, "GET", "/v1/lanes/{name}/files", 0, h_params, fx), 0);
    assert_int_equal(http_server_route(srv, "PUT", "/v1/lanes/{name}/files", 0, h_params, fx), 0);
    assert_int_equal(http_server_route(srv, "POST", "/echo", 0, h_echo, fx), 0);
    assert_int_equal(http_server_route(srv, "DELETE", "/v1/lanes/{name}", 0, h_delete, fx), 0);
    assert_int_equal(http_server_route(srv, "GET", "/chunks", 0, h_chunks, fx), 0);
    assert_int_equal(http_server_route(srv, "POST", "/upload", HTTP_ROUTE_STREAM_BODY, h_upload, fx), 0);
    assert_int_equal(http_server_route(srv, "GET", "/forever", 0, h_forever, fx), 0);
    assert_int_equal(http_server_route(srv, "POST", "/reject", HTTP_ROUTE_STREAM_BODY, h_reject, fx), 0);
    assert_int_equal(http_server_route(srv, "GET", "/slow", 0, h_slow, fx), 0);
    assert_int_equal(http_server_route(srv, "GET", "/big", 0, h_big, fx), 0);
    assert_int_equal(http_server_route(srv, "GET", "/ws", 0, h_ws, fx), 0);
    assert_int_not_equal(http_server_route(srv, "GET", "/bad/{x", 0, h_hello, fx), 0);
    assert_int_equal(http_server_listen_unix(srv, fx->path, 0600), 0);

    struct stat st;
    assert_int_equal(stat(fx->path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);

    uv_async_init(&fx->loop, &fx->stop, on_stop);
    fx->stop.data = fx;
    assert_int_equal(pthread_create(&fx->thread, NULL, loop_thread, fx), 0);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    uv_async_send(&fx->stop);
    pthread_join(fx->thread, NULL);
    /* Every handle (server, connections, handler timers) must be gone. */
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    unlink(fx->path);
    rmdir(fx->dir);
    free(fx);
    return 0;
}

/* ---- a tiny HTTP client --------------------------------------------------------- */

typedef struct {
    int fd;
    char buf[1 << 16];
    size_t len, off;
} client_t;

typedef struct {
    int status;
    char headers[4096]; /* "\nname: value" lines, names lowercased */
    char *body;
    size_t body_len;
} resp_t;

static client_t *client_open(fixture_t *fx)
{
    client_t *c = calloc(1, sizeof(*c));
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c->fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, fx->path);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return c;
}

static void client_close(client_t *c)
{
    close(c->fd);
    free(c);
}

static void client_send(client_t *c, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = write(c->fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

static void client_sends(client_t *c, const char *s)
{
    client_send(c, s, strlen(s));
}

/* Read more bytes; returns bytes read, 0 on EOF. */
static ssize_t client_fill(client_t *c)
{
    if (c->off > 0) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->len == sizeof(c->buf))
        return -1;
    ssize_t n;
    do
        n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        c->len += (size_t)n;
    return n;
}

/* One CRLF-terminated line into out; false on EOF. */
static bool client_line(client_t *c, char *out, size_t cap)
{
    for (;;) {
        char *nl = memchr(c->buf + c->off, '\n', c->len - c->off);
        if (nl) {
            size_t l = (size_t)(nl - (c->buf + c->off));
            if (l && nl[-1] == '\r')
                l--;
            assert_true(l < cap);
            memcpy(out, c->buf + c->off, l);
            out[l] = '\0';
            c->off = (size_t)(nl - c->buf) + 1;
            return true;
        }
        if (client_fill(c) <= 0)
            return false;
    }
}

static bool client_exact(client_t *c, char *out, size_t n)
{
    while (c->len - c->off < n) {
        size_t have = c->len - c->off;
        memcpy(out, c->buf + c->off, have);
        out += have;
        n -= have;
        c->off = c->len;
        if (client_fill(c) <= 0)
            return false;
    }
    memcpy(out, c->buf + c->off, n);
    c->off += n;
    return true;
}

static const char *resp_header(const resp_t *r, const char *name)
{
    static __thread char val[512];
    char key[128];
    snprintf(key, sizeof(key), "\n%s: ", name);
    const char *p = strstr(r->headers, key);
    if (!p)
        return NULL;
    p += strlen(key);
    size_t l = strcspn(p, "\n");
    snprintf(val, sizeof(val), "%.*s", (int)l, p);
    return val;
}

static void body_append(resp_t *r, const char *data, size_t n)
{
    r->body = realloc(r->body, r->body_len + n + 1);
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
}

/* Read one response; false if the connection ended before a status line. */
static bool client_response(client_t *c, resp_t *r)
{
    memset(r, 0, sizeof(*r));
    r->body = calloc(1, 1);
    char line[8192];
    do {
        if (!client_line(c, line, sizeof(line)))
            return false;
        assert_int_equal(sscanf(line, "HTTP/1.1 %d", &r->status), 1);
        size_t hl = 0;
        r->headers[0] = '\0';
        while (client_line(c, line, sizeof(line)) && line[0]) {
            for (char *p = line; *p && *p != ':'; p++)
                *p = (char)tolower((unsigned char)*p);
            hl += (size_t)snprintf(r->headers + hl, sizeof(r->headers) - hl, "\n%s", line);
        }
    } while (r->status == 100);
    const char *te = resp_header(r, "transfer-encoding");
    const char *cl = resp_header(r, "content-length");
    if (te && strcmp(te, "chunked") == 0) {
        for (;;) {
            assert_true(client_line(c, line, sizeof(line)));
            size_t n = strtoul(line, NULL, 16);
            if (n == 0) {
                assert_true(client_line(c, line, sizeof(line)));
                assert_string_equal(line, "");
                break;
            }
            char *chunk = malloc(n);
            assert_true(client_exact(c, chunk, n));
            body_append(r, chunk, n);
            free(chunk);
            assert_true(client_line(c, line, sizeof(line)));
            assert_string_equal(line, "");
        }
    } else if (cl) {
        size_t n = strtoul(cl, NULL, 10);
        char *data = malloc(n + 1);
        assert_true(client_exact(c, data, n));
        body_append(r, data, n);
        free(data);
    }
    return true;
}

static void resp_free(resp_t *r)
{
    free(r->body);
    r->body = NULL;
}

static json_object *resp_json(const resp_t *r)
{
    json_object *o = json_tokener_parse(r->body);
    assert_non_null(o);
    return o;
}

static const char *jstr(json_object *o, const char *a, const char *b)
{
    json_object *v;
    if (!json_object_object_get_ex(o, a, &v))
        return NULL;
    if (b && !json_object_object_get_ex(v, b, &v))
        return NULL;
    return json_object_get_string(v);
}

static void expect_error(const resp_t *r, int status, const char *code)
{
    assert_int_equal(r->status, status);
    json_object *o = resp_json(r);
    assert_string_equal(jstr(o, "error", "code"), code);
    assert_non_null(jstr(o, "error", "message"));
    json_object_put(o);
}

/* Expect the server to close: EOF with no further bytes. */
static void expect_eof(client_t *c)
{
    assert_int_equal(c->len - c->off, 0);
    assert_int_equal(client_fill(c), 0);
}

#define wait_for(v, n) wait_for_at(v, n, __LINE__)
static void wait_for_at(atomic_int *v, int at_least, int line)
{
    for (int i = 0; i < 300 && atomic_load(v) < at_least; i++)
        usleep(10000);
    if (atomic_load(v) < at_least)
        fail_msg("line %d: waited in vain for %d (have %d)", line, at_least, atomic_load(v));
}

static void request_simple(fixture_t *fx, const char *raw, resp_t *r)
{
    client_t *c = client_open(fx);
    client_sends(c, raw);
    assert_true(client_response(c, r));
    client_close(c);
}

/* ---- tests -------------------------------------------------------------------- */

static void test_routing_params(void **state)
{
    fixture_t *fx = *state;
    resp_t r;
    request_simple(fx,
                   "GET /v1/lanes/my%2Dlane%2Fx/files?path=%2Fetc%2Fhosts&x=a+b%21 HTTP/1.1\r\n"
                   "Host: l\r\nx-TeSt: v1\r\n\r\n",
                   &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "content-type"), "application/json");
    assert_string_equal(resp_header(&r, "x-lane-file-mode"), "0644");
    json_object *o = resp_json(&r);
    assert_string_equal(jstr(o, "name", NULL), "my-lane/x");
    assert_string_equal(jstr(o, "path", NULL), "/etc/hosts");
    assert_string_equal(jstr(o, "x", NULL), "a b!");
    assert_string_equal(jstr(o, "hdr", NULL), "v1");
    assert_string_equal(jstr(o, "method", NULL), "GET");
    assert_null(jstr(o, "missing", NULL));
    json_object_put(o);
    resp_free(&r);

    request_simple(fx, "DELETE /v1/lanes/a HTTP/1.1\r\nHost: l\r\n\r\n", &r);
    assert_int_equal(r.status, 204);
    assert_null(resp_header(&r, "content-length"));
    resp_free(&r);
}

static void test_not_found_and_method(void **state)
{
    fixture_t *fx = *state;
    resp_t r;
    request_simple(fx, "GET /nope HTTP/1.1\r\nHost: l\r\n\r\n", &r);
    expect_error(&r, 404, "not_found");
    resp_free(&r);
    /* A {param} never matches an empty segment. */
    request_simple(fx, "GET /v1/lanes//files HTTP/1.1\r\nHost: l\r\n\r\n", &r);
    expect_error(&r, 404, "not_found");
    resp_free(&r);
    request_simple(fx, "POST /hello HTTP/1.1\r\nHost: l\r\nContent-Length: 2\r\n\r\n{}", &r);
    expect_error(&r, 405, "method_not_allowed");
    assert_string_equal(resp_header(&r, "allow"), "GET");
    resp_free(&r);
    request_simple(fx, "POST /v1/lanes/x/files HTTP/1.1\r\nHost: l\r\n\r\n", &r);
    expect_error(&r, 405, "method_not_allowed");
    assert_string_equal(resp_header(&r, "allow"), "GET, PUT");
    resp_free(&r);
    /* Bad percent-escapes are a client error, not a crash or a 404. */
    request_simple(fx, "GET /v1/lanes/a%zz/files HTTP/1.1\r\nHost: l\r\n\r\n", &r);
    expect_error(&r, 400, "bad_request");
    resp_free(&r);
    request_simple(fx, "GET /v1/lanes/a%00/files HTTP/1.1\r\nHost: l\r\n\r\n", &r);
    expect_error(&r, 400, "bad_request");
    resp_free(&r);
}

static void test_json_echo_and_errors(void **state)
{
    fixture_t *fx = *state;
    resp_t r;
    const char *doc = "{\"a\":[1,2],\"b\":{\"c\":\"d\"}} \n";
    char buf[256];
    snprintf(buf, sizeof(buf),
             "POST /echo HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s", strlen(doc), doc);
    request_simple(fx, buf, &r);
    assert_int_equal(r.status, 200);
    json_object *o = resp_json(&r);
    assert_string_equal(jstr(o, "b", "c"), "d");
    json_object_put(o);
    resp_free(&r);

    /* Empty body = empty object. */
    request_simple(fx, "POST /echo HTTP/1.1\r\nHost: l\r\nContent-Length: 0\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{}");
    resp_free(&r);

    const char *bad[] = {"{\"a\":", "[1,2]", "{\"a\":1} x", "nul", "{\"a\":1}}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char req[256];
        snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nHost: l\r\nContent-Length: %zu\r\n\r\n%s",
                 strlen(bad[i]), bad[i]);
        request_simple(fx, req, &r);
        expect_error(&r, 400, "bad_json");
        resp_free(&r);
    }

    /* Nested deeper than max_json_depth (8). */
    char deep[128] = "{\"a\":";
    for (int i = 0; i < 20; i++)
        strcat(deep, "[");
    for (int i = 0; i < 20; i++)
        strcat(deep, "]");
    strcat(deep, "}");
    char req[512];
    snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nHost: l\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(deep), deep);
    request_simple(fx, req, &r);
    expect_error(&r, 400, "bad_json");
    json_object *eo = resp_json(&r);
    assert_non_null(strstr(jstr(eo, "error", "message"), "deep"));
    json_object_put(eo);
    resp_free(&r);
}

static void test_too_large(void **state)
{
    fixture_t *fx = *state;
    /* Content-Length over the cap: 413 at once, without sending a body byte. */
    client_t *c = client_open(fx);
    client_sends(c, "POST /echo HTTP/1.1\r\nHost: l\r\nContent-Length: 100000000\r\n\r\n");
    resp_t r;
    assert_true(client_response(c, &r));
    expect_error(&r, 413, "too_large");
    assert_string_equal(resp_header(&r, "connection"), "close");
    expect_eof(c);
    resp_free(&r);
    client_close(c);

    /* Chunked body that grows past the cap. */
    c = client_open(fx);
    client_sends(c, "POST /echo HTTP/1.1\r\nHost: l\r\nTransfer-Encoding: chunked\r\n\r\n");
    char chunk[6 + 8192 + 2];
    memcpy(chunk, "2000\r\n", 6);
    memset(chunk + 6, ' ', 8192);
    memcpy(chunk + 6 + 8192, "\r\n", 2);
    for (int i = 0; i < 20; i++)
        if (write(c->fd, chunk, sizeof(chunk)) < 0)
            break; /* server closed after 413 */
    assert_true(client_response(c, &r));
    expect_error(&r, 413, "too_large");
    resp_free(&r);
    client_close(c);

    /* A body exactly at the cap is fine. */
    char *big = malloc(MAX_BODY + 200);
    int h = snprintf(big, 200, "POST /echo HTTP/1.1\r\nHost: l\r\nContent-Length: %d\r\n\r\n", MAX_BODY);
    big[h] = '{';
    memset(big + h + 1, ' ', MAX_BODY - 2);
    big[h + MAX_BODY - 1] = '}';
    c = client_open(fx);
    client_send(c, big, (size_t)h + MAX_BODY);
    assert_true(client_response(c, &r));
    assert_int_equal(r.status, 200);
    resp_free(&r);
    client_close(c);
    free(big);
}

static void test_stream_upload(void **state)
{
    fixture_t *fx = *state;
    const size_t total = 1024 * 1024 + 123; /* far over max_body: streaming has no cap */
    uint8_t *data = malloc(total);
    uint32_t sum = 0;
    for (size_t i = 0; i < total; i++) {
        data[i] = (uint8_t)(i * 7 + i / 251);
        sum = sum * 31 + data[i];
    }
    int pauses_before = atomic_load(&fx->upload_pauses);

    /* Content-Length upload. */
    client_t *c = client_open(fx);
    char head[256];
    snprintf(head, sizeof(head), "POST /upload HTTP/1.1\r\nHost: l\r\nContent-Length: %zu\r\n\r\n", total);
    client_sends(c, head);
    client_send(c, data, total);
    resp_t r;
    assert_true(client_response(c, &r));
    assert_int_equal(r.status, 200);
    json_object *o = resp_json(&r);
    assert_string_equal(jstr(o, "bytes", NULL), "1048699");
    assert_int_equal((uint32_t)strtoull(jstr(o, "sum", NULL), NULL, 10), sum);
    json_object_put(o);
    resp_free(&r);
    assert_true(atomic_load(&fx->upload_pauses) > pauses_before + 4);

    /* Chunked upload on the same (kept-alive) connection, odd chunk sizes. */
    client_sends(c, "POST /upload HTTP/1.1\r\nHost: l\r\nTransfer-Encoding: chunked\r\n\r\n");
    size_t off = 0, step = 1;
    while (off < total) {
        size_t n = step < total - off ? step : total - off;
        char ch[32];
        snprintf(ch, sizeof(ch), "%zx\r\n", n);
        client_sends(c, ch);
        client_send(c, data + off, n);
        client_sends(c, "\r\n");
        off += n;
        step = step * 3 + 1;
    }
    client_sends(c, "0\r\n\r\n");
    assert_true(client_response(c, &r));
    assert_int_equal(r.status, 200);
    o = resp_json(&r);
    assert_string_equal(jstr(o, "bytes", NULL), "1048699");
    assert_int_equal((uint32_t)strtoull(jstr(o, "sum", NULL), NULL, 10), sum);
    json_object_put(o);
    resp_free(&r);
    client_close(c);
    free(data);
}

static void test_chunked_response(void **state)
{
    fixture_t *fx = *state;
    resp_t r;
    request_simple(fx, "GET /chunks HTTP/1.1\r\nHost: l\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "content-type"), "application/x-ndjson");
    assert_string_equal(resp_header(&r, "x-extra"), "yes");
    assert_string_equal(r.body, "{\"progress\":0}\n{\"progress\":1}\n{\"progress\":2}\n{\"progress\":3}\n"
                                "{\"progress\":4}\n");
    resp_free(&r);

    /* Large body with pending/on_drain backpressure. */
    client_t *c = client_open(fx);
    client_sends(c, "GET /big HTTP/1.1\r\nHost: l\r\n\r\n");
    usleep(100000); /* let the server fill the socket and wait for drain */
    assert_true(client_response(c, &r));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, BIG_TOTAL);
    for (size_t i = 0; i < BIG_TOTAL; i += 64 * 1024)
        assert_int_equal(r.body[i], 'a' + (int)((i / (64 * 1024)) % 26));
    assert_true(atomic_load(&fx->big_drains) > 1);
    resp_free(&r);
    client_close(c);
}

static void test_pipelining_and_keepalive(void **state)
{
    fixture_t *fx = *state;
    client_t *c = client_open(fx);
    /* Three requests in one write; the slow one first: order must hold. */
    client_sends(c, "GET /slow HTTP/1.1\r\nHost: l\r\n\r\n"
                    "POST /echo HTTP/1.1\r\nHost: l\r\nContent-Length: 9\r\n\r\n{\"n\":\"2\"}"
                    "GET /hello HTTP/1.1\r\nHost: l\r\n\r\n");
    resp_t r;
    assert_true(client_response(c, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"slow\":true}");
    resp_free(&r);
    assert_true(client_response(c, &r));
    assert_string_equal(r.body, "{\"n\":\"2\"}");
    resp_free(&r);
    assert_true(client_response(c, &r));
    assert_string_equal(r.body, "{\"hello\":\"world\"}");
    assert_string_equal(resp_header(&r, "connection"), "keep-alive");
    resp_free(&r);

    /* Keep-alive: more requests on the same connection, one at a time. */
    for (int i = 0; i < 3; i++) {
        client_sends(c, "GET /hello HTTP/1.1\r\nHost: l\r\n\r\n");
        assert_true(client_response(c, &r));
        assert_int_equal(r.status, 200);
        resp_free(&r);
    }
    /* Connection: close is honoured. */
    client_sends(c, "GET /hello HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n");
    assert_true(client_response(c, &r));
    assert_string_equal(resp_header(&r, "connection"), "close");
    resp_free(&r);
    expect_eof(c);
    client_close(c);

    /* A request split into single bytes still parses. */
    c = client_open(fx);
    const char *req = "GET /hello HTTP/1.1\r\nHost: l\r\n\r\n";
    for (const char *p = req; *p; p++)
        client_send(c, p, 1);
    assert_true(client_response(c, &r));
    assert_int_equal(r.status, 200);
    resp_free(&r);
    client_close(c);
}

static void test_disconnect_mid_stream(void **state)
{
    fixture_t *fx = *state;
    int closes = atomic_load(&fx->closes);
    client_t *c = client_open(fx);
    client_sends(c, "GET /forever HTTP/1.1\r\nHost: l\r\n\r\n");
    char line[256];
    assert_true(client_line(c, line, sizeof(line)));
    assert_string_equal(line, "HTTP/1.1 200 OK");
    while (client_line(c, line, sizeof(line)) && line[0])
        ;
    for (int i = 0; i < 6; i++)
        assert_true(client_line(c, line, sizeof(line))); /* a few chunks */
    client_close(c);
    wait_for(&fx->closes, closes + 1);

    /* Client leaves while a buffered handler is still working. */
    closes = atomic_load(&fx->closes);
    int answered = atomic_load(&fx->slow_answered);
    c = client_open(fx);
    client_sends(c, "GET /slow HTTP/1.1\r\nHost: l\r\n\r\n");
    usleep(20000);
    client_close(c);
    wait_for(&fx->closes, closes + 1);
    wait_for(&fx->slow_answered, answered + 1); /* its late respond is a no-op */

    /* Client leaves in the middle of a streamed upload. */
    closes = atomic_load(&fx->closes);
    c = client_open(fx);
    client_sends(c, "POST /upload HTTP/1.1\r\nHost: l\r\nContent-Length: 1000000\r\n\r\nabcdef");
    usleep(20000);
    client_close(c);
    wait_for(&fx->closes, closes + 1);

    /* And in the middle of a large response being written. */
    closes = atomic_load(&fx->closes);
    c = client_open(fx);
    client_sends(c, "GET /big HTTP/1.1\r\nHost: l\r\n\r\n");
    assert_true(client_fill(c) > 0);
    client_close(c);
    wait_for(&fx->closes, closes + 1);

    /* The server is still fine. */
    resp_t r;
    request_simple(fx, "GET /hello HTTP/1.1\r\nHost: l\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

static void test_slow_client_times_out(void **state)
{
    fixture_t *fx = *state;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    client_t *c = client_open(fx);
    /* Slowloris: a header byte every 50 ms never completes the request. */
    const char *req = "GET /hello HTTP/1.1\r\nHost: l\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for (const char *p = req; *p; p++) {
        if (write(c->fd, p, 1) != 1)
            break;
        usleep(50000);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t1.tv_sec - t0.tv_sec > 2)
            break;
    }
    resp_t r;
    assert_true(client_response(c, &r));
    expect_error(&r, 408, "timeout");
    resp_free(&r);
    expect_eof(c);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(el < 2.0);
    client_close(c);

    /* An idle keep-alive connection is closed without a response. */
    c = client_open(fx);
    client_sends(c, "GET /hello HTTP/1.1\r\nHost: l\r\n\r\n");
    assert_true(client_response(c, &r));
    resp_free(&r);
    expect_eof(c); /* blocks until the idle timeout closes it */
    client_close(c);

    /* A body that stalls half-way gets the timeout too. */
    c = client_open(fx);
    client_sends(c, "POST /echo HTTP/1.1\r\nHost: l\r\nContent-Length: 10\r\n\r\n{\"a\"");
    assert_true(client_response(c, &r));
    expect_error(&r, 408, "timeout");
    resp_free(&r);
    client_close(c);
}

static void test_garbage(void **state)
{
    fixture_t *fx = *state;
    const char *bad[] = {
        "\x01\x02\x03 garbage\r\n\r\n",
        "GET /hello HTTP/9.9\r\n\r\n",
        "GET /hello HTTP/1.1\r\nBad Header\r\n\r\n",
        "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "GET hello HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        client_t *c = client_open(fx);
        client_sends(c, bad[i]);
        resp_t r;
        assert_true(client_response(c, &r));
        expect_error(&r, 400, "bad_request");
        resp_free(&r);
        expect_eof(c);
        client_close(c);
    }
    /* Oversized headers. */
    client_t *c = client_open(fx);
    client_sends(c, "GET /hello HTTP/1.1\r\n");
    char hdr[1024];
    memset(hdr, 'a', sizeof(hdr));
    memcpy(hdr, "X-Big: ", 7);
    memcpy(hdr + sizeof(hdr) - 2, "\r\n", 2);
    for (int i = 0; i < 20; i++)
        if (write(c->fd, hdr, sizeof(hdr)) < 0)
            break;
    resp_t r;
    assert_true(client_response(c, &r));
    expect_error(&r, 431, "headers_too_large");
    resp_free(&r);
    client_close(c);
}

static void test_connection_cap(void **state)
{
    fixture_t *fx = *state;
    client_t *cs[MAX_CONNS];
    resp_t r;
    for (int i = 0; i < MAX_CONNS; i++) {
        cs[i] = client_open(fx);
        client_sends(cs[i], "GET /hello HTTP/1.1\r\nHost: l\r\n\r\n");
        assert_true(client_response(cs[i], &r)); /* accepted and alive */
        resp_free(&r);
    }
    client_t *extra = client_open(fx);
    assert_true(client_response(extra, &r));
    expect_error(&r, 503, "busy");
    resp_free(&r);
    client_close(extra);
    for (int i = 0; i < MAX_CONNS; i++)
        client_close(cs[i]);
    /* Slots come back once clients leave. */
    bool ok = false;
    for (int tries = 0; tries < 50 && !ok; tries++) {
        client_t *c = client_open(fx);
        client_sends(c, "GET /hello HTTP/1.1\r\nHost: l\r\n\r\n");
        if (client_response(c, &r)) {
            ok = r.status == 200;
            resp_free(&r);
        }
        client_close(c);
        if (!ok)
            usleep(10000);
    }
    assert_true(ok);
}

static void test_early_response_and_http10(void **state)
{
    fixture_t *fx = *state;
    /* An answer before the body was read cannot keep the connection. */
    client_t *c = client_open(fx);
    client_sends(c, "POST /reject HTTP/1.1\r\nHost: l\r\nContent-Length: 100000\r\n\r\npartial");
    resp_t r;
    assert_true(client_response(c, &r));
    expect_error(&r, 409, "exists");
    json_object *eo = resp_json(&r);
    assert_string_equal(jstr(eo, "error", "message"), "lane x already exists");
    json_object_put(eo);
    assert_string_equal(resp_header(&r, "connection"), "close");
    assert_null(resp_header(&r, "x-bad"));
    resp_free(&r);
    expect_eof(c);
    client_close(c);

    /* HTTP/1.0: no chunked encoding; the stream ends at close. */
    c = client_open(fx);
    client_sends(c, "GET /chunks HTTP/1.0\r\n\r\n");
    char line[256];
    assert_true(client_line(c, line, sizeof(line)));
    assert_string_equal(line, "HTTP/1.1 200 OK");
    bool chunked = false;
    while (client_line(c, line, sizeof(line)) && line[0])
        if (strcasecmp(line, "Transfer-Encoding: chunked") == 0)
            chunked = true;
    assert_false(chunked);
    for (int i = 0; i < 5; i++) {
        char want[64];
        snprintf(want, sizeof(want), "{\"progress\":%d}", i);
        assert_true(client_line(c, line, sizeof(line)));
        assert_string_equal(line, want);
    }
    expect_eof(c);
    client_close(c);

    /* HTTP/1.0 buffered answer, then close. */
    c = client_open(fx);
    client_sends(c, "GET /hello HTTP/1.0\r\n\r\n");
    assert_true(client_response(c, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "connection"), "close");
    resp_free(&r);
    expect_eof(c);
    client_close(c);
}

static void test_listen_errors(void **state)
{
    fixture_t *fx = *state;
    /* Another server on a live socket path must not steal it. */
    uv_loop_t loop;
    uv_loop_init(&loop);
    http_server_t *srv = http_server_new(&loop, NULL);
    assert_int_equal(http_server_listen_unix(srv, fx->path, 0600), -EADDRINUSE);
    char file[160];
    snprintf(file, sizeof(file), "%s/regular", fx->dir);
    int fd = open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    close(fd);
    assert_int_equal(http_server_listen_unix(srv, file, 0600), -EEXIST);
    unlink(file);
    http_server_close(srv, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- WebSocket ------------------------------------------------------------------- */

#define WS_REQ(key, ver)                                                                   \
    "GET /ws HTTP/1.1\r\nHost: l\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n" \
    "Sec-WebSocket-Key: " key "\r\nSec-WebSocket-Version: " ver "\r\n\r\n"

/* Send one client frame (masked unless mask is false) in a single write. */
static void ws_frame(client_t *c, bool fin, int op, const void *data, size_t len, bool mask)
{
    uint8_t *f = malloc(len + 14);
    size_t n = 0;
    f[n++] = (uint8_t)((fin ? 0x80 : 0) | op);
    uint8_t mbit = mask ? 0x80 : 0;
    if (len < 126) {
        f[n++] = (uint8_t)(mbit | len);
    } else if (len <= 0xffff) {
        f[n++] = mbit | 126;
        f[n++] = (uint8_t)(len >> 8);
        f[n++] = (uint8_t)len;
    } else {
        f[n++] = mbit | 127;
        for (int i = 7; i >= 0; i--)
            f[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    if (mask) {
        memcpy(f + n, key, 4);
        n += 4;
    }
    for (size_t i = 0; i < len; i++)
        f[n + i] = ((const uint8_t *)data)[i] ^ (mask ? key[i & 3] : 0);
    client_send(c, f, n + len);
    free(f);
}

/* Read one server frame (payload malloc'd, NUL-terminated); false on EOF. */
static bool ws_read(client_t *c, int *op, bool *fin, uint8_t **data, size_t *len)
{
    uint8_t h[2];
    if (!client_exact(c, (char *)h, 2))
        return false;
    assert_int_equal(h[1] & 0x80, 0); /* server frames are never masked */
    uint64_t l = h[1] & 0x7f;
    if (l == 126) {
        uint8_t e[2];
        assert_true(client_exact(c, (char *)e, 2));
        l = ((uint64_t)e[0] << 8) | e[1];
    } else if (l == 127) {
        uint8_t e[8];
        assert_true(client_exact(c, (char *)e, 8));
        l = 0;
        for (int i = 0; i < 8; i++)
            l = (l << 8) | e[i];
    }
    *op = h[0] & 0x0f;
    if (fin)
        *fin = (h[0] & 0x80) != 0;
    *data = malloc(l + 1);
    assert_true(client_exact(c, (char *)*data, l));
    (*data)[l] = 0;
    *len = l;
    return true;
}

/* Expect a close frame with code, then EOF. */
static void ws_expect_close(client_t *c, int code)
{
    int op;
    uint8_t *d;
    size_t n;
    assert_true(ws_read(c, &op, NULL, &d, &n));
    assert_int_equal(op, 8);
    assert_true(n >= 2);
    assert_int_equal((d[0] << 8) | d[1], code);
    free(d);
    char b;
    assert_false(client_exact(c, &b, 1)); /* the server closed TCP */
}

static client_t *ws_open(fixture_t *fx)
{
    client_t *c = client_open(fx);
    client_sends(c, WS_REQ("dGhlIHNhbXBsZSBub25jZQ==", "13"));
    char line[512];
    assert_true(client_line(c, line, sizeof(line)));
    assert_string_equal(line, "HTTP/1.1 101 Switching Protocols");
    bool accept = false, upgrade = false;
    while (client_line(c, line, sizeof(line)) && line[0]) {
        /* RFC 6455 section 1.3's worked example. */
        if (!strcmp(line, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
            accept = true;
        if (!strcasecmp(line, "Upgrade: websocket"))
            upgrade = true;
    }
    assert_true(accept && upgrade);
    return c;
}

static void wait_ws_closes(fixture_t *fx, int n)
{
    for (int i = 0; i < 300 && atomic_load(&fx->ws_closes) < n; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&fx->ws_closes), n);
}

static void test_ws_handshake(void **state)
{
    fixture_t *fx = *state;
    resp_t r;
    client_t *c = client_open(fx);
    client_sends(c, WS_REQ("dGhlIHNhbXBsZSBub25jZQ==", "8"));
    assert_true(client_response(c, &r));
    expect_error(&r, 426, "upgrade_required");
    assert_string_equal(resp_header(&r, "sec-websocket-version"), "13");
    resp_free(&r);
    client_close(c);

    c = client_open(fx);
    client_sends(c, WS_REQ("c2hvcnQ=", "13")); /* not 16 bytes */
    assert_true(client_response(c, &r));
    expect_error(&r, 400, "bad_request");
    resp_free(&r);
    client_close(c);

    c = client_open(fx);
    client_sends(c, "GET /ws HTTP/1.1\r\nHost: l\r\n\r\n");
    assert_true(client_response(c, &r));
    expect_error(&r, 400, "bad_request");
    resp_free(&r);
    client_close(c);

    /* Frames pipelined right behind the upgrade request are not lost. */
    c = client_open(fx);
    client_sends(c, WS_REQ("dGhlIHNhbXBsZSBub25jZQ==", "13"));
    ws_frame(c, true, 1, "early", 5, true);
    char line[512];
    while (client_line(c, line, sizeof(line)) && line[0])
        ;
    int op;
    uint8_t *d;
    size_t n;
    assert_true(ws_read(c, &op, NULL, &d, &n));
    assert_int_equal(op, 1);
    assert_memory_equal(d, "early", 5);
    free(d);
    client_close(c);
    wait_ws_closes(fx, 1);
    assert_int_equal(atomic_load(&fx->ws_close_code), 1006); /* dropped, no close frame */
}

static void test_ws_messages(void **state)
{
    fixture_t *fx = *state;
    client_t *c = ws_open(fx);
    int op;
    bool fin;
    uint8_t *d;
    size_t n;
    /* text, and binary with 7-, 16- and 64-bit lengths, echoed */
    ws_frame(c, true, 1, "hello \xc3\xa9", 8, true);
    assert_true(ws_read(c, &op, &fin, &d, &n));
    assert_true(op == 1 && fin && n == 8 && !memcmp(d, "hello \xc3\xa9", 8));
    free(d);
    size_t sizes[] = {0, 125, 126, 300, 65535, WS_MAX_MSG};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t *buf = malloc(sizes[i] + 1);
        for (size_t k = 0; k < sizes[i]; k++)
            buf[k] = (uint8_t)(k * 7 + i);
        ws_frame(c, true, 2, buf, sizes[i], true);
        assert_true(ws_read(c, &op, &fin, &d, &n));
        assert_int_equal(op, 2);
        assert_int_equal(n, sizes[i]);
        assert_memory_equal(d, buf, sizes[i]);
        free(d);
        free(buf);
    }
    /* ping -> pong with the same payload */
    ws_frame(c, true, 9, "p1", 2, true);
    assert_true(ws_read(c, &op, &fin, &d, &n));
    assert_true(op == 10 && n == 2 && !memcmp(d, "p1", 2));
    free(d);
    /* fragmented text with a ping between the fragments */
    ws_frame(c, false, 1, "frag", 4, true);
    ws_frame(c, true, 9, "mid", 3, true);
    ws_frame(c, false, 0, "men", 3, true);
    ws_frame(c, true, 0, "ted", 3, true);
    assert_true(ws_read(c, &op, &fin, &d, &n));
    assert_true(op == 10 && n == 3 && !memcmp(d, "mid", 3));
    free(d);
    assert_true(ws_read(c, &op, &fin, &d, &n));
    assert_true(op == 1 && n == 10 && !memcmp(d, "fragmented", 10));
    free(d);
    /* a UTF-8 sequence split across fragments is fine */
    ws_frame(c, false, 1, "\xe2\x82", 2, true);
    ws_frame(c, true, 0, "\xac", 1, true);
    assert_true(ws_read(c, &op, &fin, &d, &n));
    assert_true(op == 1 && n == 3 && !memcmp(d, "\xe2\x82\xac", 3));
    free(d);
    /* client-initiated close: echoed, then the server closes TCP */
    ws_frame(c, true, 8, "\x03\xe8" "done", 6, true);
    ws_expect_close(c, 1000);
    client_close(c);
    wait_ws_closes(fx, 1);
    assert_int_equal(atomic_load(&fx->ws_close_code), 1000);

    /* server-initiated close */
    c = ws_open(fx);
    ws_frame(c, true, 1, "close", 5, true);
    assert_true(ws_read(c, &op, &fin, &d, &n));
    assert_true(op == 8 && n == 5 && d[0] == 0x0f && d[1] == 0xa0 && !memcmp(d + 2, "bye", 3));
    free(d);
    ws_frame(c, true, 8, "\x0f\xa0", 2, true);
    char b;
    assert_false(client_exact(c, &b, 1));
    client_close(c);
    wait_ws_closes(fx, 2);
    assert_int_equal(atomic_load(&fx->ws_close_code), 4000);
}

static void test_ws_violations(void **state)
{
    fixture_t *fx = *state;
    static const struct {
        const char *what;
        int op;
        bool fin, mask;
        const char *data;
        size_t len;
        int code;
    } cases[] = {
        {"unmasked client frame", 1, true, false, "hi", 2, 1002},
        {"invalid UTF-8 text", 1, true, true, "\xc3\x28", 2, 1007},
        {"overlong UTF-8", 1, true, true, "\xc0\xaf", 2, 1007},
        {"UTF-16 surrogate", 1, true, true, "\xed\xa0\x80", 3, 1007},
        {"continuation without a message", 0, true, true, "x", 1, 1002},
        {"unknown opcode", 3, true, true, "x", 1, 1002},
        {"fragmented ping", 9, false, true, "x", 1, 1002},
        {"close with 1-byte payload", 8, true, true, "\x03", 1, 1002},
        {"close with a reserved code", 8, true, true, "\x03\xed", 2, 1002},
    };
    int closes = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        print_message("ws violation: %s\n", cases[i].what);
        client_t *c = ws_open(fx);
        ws_frame(c, cases[i].fin, cases[i].op, cases[i].data, cases[i].len, cases[i].mask);
        ws_expect_close(c, cases[i].code);
        client_close(c);
        wait_ws_closes(fx, ++closes);
        assert_int_equal(atomic_load(&fx->ws_close_code), cases[i].code);
    }
    /* Oversized: refused from the header alone, before the payload. */
    client_t *c = ws_open(fx);
    uint8_t hdr[] = {0x82, 0xff, 0, 0, 0, 0, 1, 0, 0, 0, 1, 2, 3, 4}; /* 16 MiB, masked */
    client_send(c, hdr, sizeof(hdr));
    ws_expect_close(c, 1009);
    client_close(c);
    wait_ws_closes(fx, ++closes);
    /* Oversized across fragments. */
    c = ws_open(fx);
    uint8_t *big = calloc(1, WS_MAX_MSG / 2 + 1);
    ws_frame(c, false, 2, big, WS_MAX_MSG / 2 + 1, true);
    ws_frame(c, true, 0, big, WS_MAX_MSG / 2 + 1, true);
    free(big);
    ws_expect_close(c, 1009);
    client_close(c);
    wait_ws_closes(fx, ++closes);
    assert_int_equal(atomic_load(&fx->ws_close_code), 1009);
}

static void test_ws_backpressure(void **state)
{
    fixture_t *fx = *state;
    client_t *c = ws_open(fx);
    ws_frame(c, true, 1, "flood", 5, true);
    size_t total = 0;
    int msgs = 0;
    while (total < WS_FLOOD) {
        int op;
        uint8_t *d;
        size_t n;
        assert_true(ws_read(c, &op, NULL, &d, &n));
        assert_int_equal(op, 2);
        assert_int_equal(d[0], 'A' + (int)((total / (64 * 1024)) % 26));
        total += n;
        free(d);
        if (++msgs % 8 == 0)
            usleep(2000); /* a slow reader */
    }
    assert_int_equal(total, WS_FLOOD);
    /* The server only queued while under its 256 KiB mark. */
    assert_true(atomic_load(&fx->ws_max_pending) <= 256 * 1024 + 64 * 1024 + 14);
    client_close(c);
    wait_ws_closes(fx, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_routing_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found_and_method, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_echo_and_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_upload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_response, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelining_and_keepalive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disconnect_mid_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_client_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_early_response_and_http10, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listen_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ws_handshake, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ws_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ws_violations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ws_backpressure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
