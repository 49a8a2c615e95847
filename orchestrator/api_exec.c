/* api_exec.c — exec over the API.
 *
 * Two shapes:
 *  - POST /v1/lanes/{name}/exec: one shot, buffered JSON result (output
 *    capped at EXEC_CAPTURE_CAP per stream; "stdin" text optional).
 *  - exec sessions: POST /v1/lanes/{name}/execs creates one and starts the
 *    process; GET .../execs/{id}/output streams NDJSON output and the exit;
 *    POST .../stdin streams the request body into the process's stdin;
 *    POST .../resize and .../signal.
 *
 * Backpressure end to end: guest output is acknowledged to the agent (which
 * reopens the guest's window) only once it has been handed to the HTTP
 * socket and the socket's queue is small; stdin request bodies are paused
 * while the guest's stdin window is closed. So a slow client slows the
 * process, never grows lanesd's memory.
 *
 * Lifetime: a session lives from create until its exit has been delivered
 * (to the output stream or the buffered response), the lane goes away, or no
 * client collects a finished session within EXEC_ORPHAN_MS.
 *
 * Readers: besides the NDJSON output stream, another module (api_shell.c's
 * WebSocket) can attach as the session's reader through api_exec_attach()
 * and friends at the end of this file. A reader gets the output (and acks it
 * with api_exec_ack() for the same backpressure), stdin room notices and the
 * exit; at most one reader or output stream at a time.
 */
#include "lanesd.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXEC_CAPTURE_CAP (16u * 1024 * 1024)
#define EXEC_STREAM_HIGH_WATER (1u * 1024 * 1024)
#define EXEC_ORPHAN_MS 120000
#define EXEC_MAX_ARGS 4096

typedef struct out_chunk {
    int fd;
    size_t len;
    struct out_chunk *next;
    uint8_t data[];
} out_chunk_t;

struct exec_session {
    lanesd_t *d;
    lane_rt_t *lane;
    char id[32];
    agent_exec_t *exec;
    int buffered;        /* one-shot POST /exec */
    http_req_t *reply;   /* buffered: the request to answer */
    http_req_t *out_req; /* streaming: attached output reader */
    out_chunk_t *queue, **queue_tail;
    size_t unacked;      /* bytes delivered to out_req but not yet acked */
    int want_stdin;
    http_req_t *stdin_req;
    uint8_t *stdin_pending;
    size_t stdin_pending_len, stdin_pending_off;
    int stdin_ended;     /* body (or buffered stdin text) fully received */
    int stdin_closed;
    int exited;
    agent_exit_t exit;
    uint32_t pid;
    /* buffered capture */
    char *cap[2];
    size_t cap_len[2];
    int cap_trunc[2];
    uv_timer_t orphan;
    int orphan_armed;
    /* "max_output_bytes": output beyond it is dropped and the process killed */
    uint64_t max_output, out_total;
    int output_capped;
    int64_t started_ms;  /* for the exec latency metric */
    /* external reader (api_exec_attach), exclusive with out_req */
    const api_exec_reader_t *reader;
    void *reader_ud;
    exec_session_t *next;
};

static void session_free(exec_session_t *s);

/* ---- helpers ---------------------------------------------------------------------------- */

static void session_unlink(exec_session_t *s)
{
    if (!s->lane)
        return;
    for (exec_session_t **pp = &s->lane->sessions; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    s->lane = NULL;
}

static void on_orphan_closed(uv_handle_t *h)
{
    exec_session_t *s = h->data;
    out_chunk_t *c = s->queue;
    while (c) {
        out_chunk_t *n = c->next;
        free(c);
        c = n;
    }
    free(s->stdin_pending);
    free(s->cap[0]);
    free(s->cap[1]);
    free(s);
}

static void session_free(exec_session_t *s)
{
    session_unlink(s);
    if (s->exec) {
        /* still running: cancel; on_exit will come back and free for real */
        agent_exec_cancel(s->exec);
        return;
    }
    if (s->out_req) {
        http_req_stream_end(s->out_req);
        s->out_req = NULL;
    }
    if (s->stdin_req) {
        http_req_respond_raw(s->stdin_req, 204, NULL, NULL, 0);
        s->stdin_req = NULL;
    }
    uv_close((uv_handle_t *)&s->orphan, on_orphan_closed);
}

static exec_session_t *session_find(lane_rt_t *l, const char *id)
{
    for (exec_session_t *s = l->sessions; s; s = s->next)
        if (id && !strcmp(s->id, id))
            return s;
    return NULL;
}

/* Replace invalid UTF-8 with U+FFFD so buffered output is always valid JSON text. */
static json_object *json_text(const char *p, size_t n)
{
    char *out = malloc(n * 3 + 1);
    if (!out)
        return json_object_new_string("");
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)p[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        int ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++)
            if (((unsigned char)p[i + k] >> 6) != 2)
                ok = 0;
        if (ok && len == 2 && c < 0xc2)
            ok = 0; /* overlong */
        if (ok) {
            memcpy(out + o, p + i, len);
            o += len;
            i += len;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    json_object *j = json_object_new_string_len(out, (int)o);
    free(out);
    return j;
}

static json_object *exit_json(const agent_exit_t *e)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "exit_code", e->exited ? json_object_new_int(e->code) : NULL);
    json_object_object_add(o, "signal", e->term_signal ? json_object_new_int(e->term_signal) : NULL);
    json_object_object_add(o, "timed_out", json_object_new_boolean(e->timed_out));
    return o;
}

static const char *exec_error_code(int err)
{
    switch (-err) {
    case ENOENT: return "command_not_found";
    case EACCES: return "command_not_executable";
    case ENOEXEC: return "command_not_executable";
    case ECANCELED: return "canceled";
    default: return "exec_failed";
    }
}

static int exec_error_status(int err)
{
    switch (-err) {
    case ENOENT:
    case EACCES:
    case ENOEXEC:
    case EINVAL:
        return 400;
    case EAGAIN:
        return 503;
    default:
        return 500;
    }
}

static json_object *error_json(int err, const char *msg)
{
    json_object *e = json_object_new_object();
    json_object_object_add(e, "code", json_object_new_string(exec_error_code(err)));
    json_object_object_add(e, "message", json_object_new_string(msg && msg[0] ? msg : strerror(-err)));
    json_object_object_add(e, "errno", json_object_new_int(-err));
    json_object *o = json_object_new_object();
    json_object_object_add(o, "error", e);
    return o;
}

/* ---- output delivery ----------------------------------------------------------------------- */

static void deliver_ack(exec_session_t *s)
{
    if (!s->exec || !s->unacked)
        return;
    if (s->out_req && http_req_stream_pending(s->out_req) > EXEC_STREAM_HIGH_WATER)
        return;
    agent_exec_ack(s->exec, s->unacked);
    s->unacked = 0;
}

static void stream_output_line(exec_session_t *s, int fd, const uint8_t *data, size_t len)
{
    char *b64 = util_base64_encode(data, len);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "stream", json_object_new_string(fd == 2 ? "stderr" : "stdout"));
    json_object_object_add(o, "data", json_object_new_string(b64 ? b64 : ""));
    free(b64);
    http_req_stream_json(s->out_req, o);
    s->unacked += len;
}

static void stream_finish(exec_session_t *s)
{
    json_object *o;
    if (s->exit.error)
        o = error_json(s->exit.error, s->exit.message);
    else {
        o = json_object_new_object();
        json_object *x = exit_json(&s->exit);
        if (s->output_capped)
            json_object_object_add(x, "output_limit_exceeded", json_object_new_boolean(1));
        json_object_object_add(o, "exit", x);
    }
    http_req_stream_json(s->out_req, o);
    http_req_stream_end(s->out_req);
    s->out_req = NULL;
}

static void on_out_drain(http_req_t *req, void *ud)
{
    exec_session_t *s = ud;
    (void)req;
    deliver_ack(s);
}

static void on_out_closed(http_req_t *req, void *ud)
{
    exec_session_t *s = ud;
    (void)req;
    /* The reader went away: the request object is released by ending it. */
    http_req_stream_end(s->out_req);
    s->out_req = NULL;
    /* Keep the session (a client may reattach) but stop blocking the guest. */
    if (s->exec && s->unacked) {
        agent_exec_ack(s->exec, s->unacked);
        s->unacked = 0;
    }
}

static void finish_buffered(exec_session_t *s)
{
    if (s->exit.error) {
        json_object *e = error_json(s->exit.error, s->exit.message);
        http_req_respond_json(s->reply, exec_error_status(s->exit.error), e);
    } else {
        json_object *o = exit_json(&s->exit);
        json_object_object_add(o, "stdout", json_text(s->cap[0] ? s->cap[0] : "", s->cap_len[0]));
        json_object_object_add(o, "stderr", json_text(s->cap[1] ? s->cap[1] : "", s->cap_len[1]));
        json_object_object_add(o, "stdout_truncated", json_object_new_boolean(s->cap_trunc[0]));
        json_object_object_add(o, "stderr_truncated", json_object_new_boolean(s->cap_trunc[1]));
        if (s->output_capped)
            json_object_object_add(o, "output_limit_exceeded", json_object_new_boolean(1));
        http_req_respond_json(s->reply, 200, o);
    }
    s->reply = NULL;
}

/* ---- agent callbacks ---------------------------------------------------------------------- */

static void on_exec_started(agent_exec_t *e, uint32_t pid, void *ud)
{
    exec_session_t *s = ud;
    (void)e;
    s->pid = pid;
}

static void on_exec_output(agent_exec_t *e, int fd, const uint8_t *data, size_t len, void *ud)
{
    exec_session_t *s = ud;
    if (s->max_output) { /* stdout + stderr together */
        if (s->output_capped) {
            agent_exec_ack(e, len);
            return;
        }
        if (len > s->max_output - s->out_total) {
            size_t keep = (size_t)(s->max_output - s->out_total);
            agent_exec_ack(e, len - keep); /* the dropped part; the rest is acked below */
            len = keep;
            s->output_capped = 1;
            agent_exec_signal(e, SIGKILL);
        }
        s->out_total += len;
        if (!len)
            return;
    }
    if (s->buffered) {
        int i = fd == 2 ? 1 : 0;
        size_t room = EXEC_CAPTURE_CAP - s->cap_len[i];
        size_t take = len < room ? len : room;
        if (take) {
            char *n = realloc(s->cap[i], s->cap_len[i] + take);
            if (n) {
                s->cap[i] = n;
                memcpy(n + s->cap_len[i], data, take);
                s->cap_len[i] += take;
            }
        }
        if (take < len)
            s->cap_trunc[i] = 1;
        agent_exec_ack(e, len);
        return;
    }
    if (s->out_req) {
        stream_output_line(s, fd, data, len);
        deliver_ack(s);
        return;
    }
    if (s->reader) { /* the reader acks with api_exec_ack() */
        s->reader->on_output(s, fd, data, len, s->reader_ud);
        return;
    }
    /* Nobody reading yet: queue without acking (the guest window bounds it). */
    out_chunk_t *c = malloc(sizeof(*c) + len);
    if (!c) {
        agent_exec_ack(e, len);
        return;
    }
    c->fd = fd;
    c->len = len;
    c->next = NULL;
    memcpy(c->data, data, len);
    *s->queue_tail = c;
    s->queue_tail = &c->next;
}

static void stdin_pump(exec_session_t *s);

static void on_exec_stdin_room(agent_exec_t *e, void *ud)
{
    exec_session_t *s = ud;
    (void)e;
    stdin_pump(s);
    if (s->reader && s->reader->on_stdin_room)
        s->reader->on_stdin_room(s, s->reader_ud);
}

static void on_orphan_timeout(uv_timer_t *t)
{
    exec_session_t *s = t->data;
    session_free(s);
}

static void on_exec_exit(agent_exec_t *e, const agent_exit_t *x, void *ud)
{
    exec_session_t *s = ud;
    (void)e;
    api_metrics_exec_done(s->d, util_now_ms() - s->started_ms, x->error != 0);
    s->exec = NULL;
    s->exited = 1;
    s->exit = *x;
    s->unacked = 0;
    if (s->stdin_req) {
        /* process is gone: swallow the rest of the upload */
        http_req_respond_raw(s->stdin_req, 204, NULL, NULL, 0);
        s->stdin_req = NULL;
    }
    if (s->buffered) {
        if (s->reply)
            finish_buffered(s);
        session_free(s);
        return;
    }
    if (s->out_req) {
        stream_finish(s);
        session_free(s);
        return;
    }
    if (s->reader) { /* terminal for the reader too */
        const api_exec_reader_t *r = s->reader;
        s->reader = NULL;
        r->on_exit(s, &s->exit, s->reader_ud);
        session_free(s);
        return;
    }
    if (!s->lane) {
        /* session_free() was waiting for the cancel to land */
        session_free(s);
        return;
    }
    /* Wait for a reader to collect the output and exit status. */
    s->orphan_armed = 1;
    uv_timer_start(&s->orphan, on_orphan_timeout, EXEC_ORPHAN_MS, 0);
}

/* ---- stdin ------------------------------------------------------------------------------------ */

static void stdin_pump(exec_session_t *s)
{
    if (!s->exec)
        return;
    while (s->stdin_pending_off < s->stdin_pending_len) {
        ssize_t n = agent_exec_write_stdin(s->exec, s->stdin_pending + s->stdin_pending_off,
                                           s->stdin_pending_len - s->stdin_pending_off);
        if (n <= 0)
            break;
        s->stdin_pending_off += (size_t)n;
    }
    if (s->stdin_pending_off < s->stdin_pending_len)
        return; /* wait for room */
    free(s->stdin_pending);
    s->stdin_pending = NULL;
    s->stdin_pending_len = s->stdin_pending_off = 0;
    if (s->stdin_ended) {
        if (!s->stdin_closed) {
            s->stdin_closed = 1;
            agent_exec_close_stdin(s->exec);
        }
        if (s->stdin_req) {
            http_req_respond_raw(s->stdin_req, 204, NULL, NULL, 0);
            s->stdin_req = NULL;
        }
    } else if (s->stdin_req) {
        http_req_body_resume(s->stdin_req);
    }
}

static void on_stdin_data(http_req_t *req, const uint8_t *data, size_t len, void *ud)
{
    exec_session_t *s = ud;
    if (!s->exec || !len)
        return;
    size_t off = 0;
    if (s->stdin_pending_len == 0) {
        ssize_t n = agent_exec_write_stdin(s->exec, data, len);
        if (n > 0)
            off = (size_t)n;
    }
    if (off == len)
        return;
    size_t rest = len - off;
    size_t keep = s->stdin_pending_len - s->stdin_pending_off;
    uint8_t *buf = malloc(keep + rest);
    if (!buf)
        return;
    if (keep)
        memcpy(buf, s->stdin_pending + s->stdin_pending_off, keep);
    memcpy(buf + keep, data + off, rest);
    free(s->stdin_pending);
    s->stdin_pending = buf;
    s->stdin_pending_len = keep + rest;
    s->stdin_pending_off = 0;
    http_req_body_pause(req);
}

static void on_stdin_end(http_req_t *req, void *ud)
{
    exec_session_t *s = ud;
    (void)req;
    s->stdin_ended = 1;
    stdin_pump(s);
}

static void on_stdin_closed(http_req_t *req, void *ud)
{
    exec_session_t *s = ud;
    if (s->stdin_req == req) {
        http_req_respond_raw(req, 204, NULL, NULL, 0);
        s->stdin_req = NULL;
    }
}

/* ---- starting an exec ------------------------------------------------------------------------ */

typedef struct {
    const char **argv;
    const char **env;
    size_t nargv, nenv;
    char **env_owned;
} argvec_t;

static void argvec_free(argvec_t *a)
{
    for (size_t i = 0; i < a->nenv; i++)
        free(a->env_owned[i]);
    free(a->env_owned);
    free(a->argv);
    free(a->env);
}

/* Parse the exec request fields; on error responds 400 and returns -1. */
static int parse_exec_opts(http_req_t *req, json_object *body, agent_exec_opts_t *o, argvec_t *a, int allow_tty)
{
    memset(o, 0, sizeof(*o));
    memset(a, 0, sizeof(*a));
    json_object *v;
    if (!json_object_is_type(body, json_type_object)) {
        http_req_respond_error(req, 400, "invalid", "request body must be a JSON object");
        return -1;
    }
    if (!json_object_object_get_ex(body, "argv", &v) || !json_object_is_type(v, json_type_array) ||
        json_object_array_length(v) == 0) {
        http_req_respond_error(req, 400, "invalid", "'argv' must be a non-empty array of strings");
        return -1;
    }
    size_t n = json_object_array_length(v);
    if (n > EXEC_MAX_ARGS) {
        http_req_respond_error(req, 400, "invalid", "too many arguments (%zu > %d)", n, EXEC_MAX_ARGS);
        return -1;
    }
    a->argv = calloc(n + 1, sizeof(char *));
    if (!a->argv)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        json_object *s = json_object_array_get_idx(v, i);
        if (!json_object_is_type(s, json_type_string)) {
            http_req_respond_error(req, 400, "invalid", "argv[%zu] is not a string", i);
            argvec_free(a);
            return -1;
        }
        a->argv[i] = json_object_get_string(s);
    }
    if (!a->argv[0][0]) {
        http_req_respond_error(req, 400, "invalid", "argv[0] is empty");
        argvec_free(a);
        return -1;
    }
    a->nargv = n;
    if (json_object_object_get_ex(body, "env", &v) && !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_object)) {
            http_req_respond_error(req, 400, "invalid", "'env' must be an object of strings");
            argvec_free(a);
            return -1;
        }
        size_t ne = (size_t)json_object_object_length(v);
        a->env = calloc(ne + 1, sizeof(char *));
        a->env_owned = calloc(ne + 1, sizeof(char *));
        if (!a->env || !a->env_owned)
            goto oom;
        json_object_object_foreach(v, key, val)
        {
            if (!json_object_is_type(val, json_type_string) || !key[0] || strchr(key, '=')) {
                http_req_respond_error(req, 400, "invalid", "env entry '%s' must be a string with a name without '='",
                                       key);
                argvec_free(a);
                return -1;
            }
            char *kv = NULL;
            if (asprintf(&kv, "%s=%s", key, json_object_get_string(val)) < 0)
                goto oom;
            a->env_owned[a->nenv] = kv;
            a->env[a->nenv++] = kv;
        }
    }
    static const char *const strs[] = {"cwd", "user"};
    for (int i = 0; i < 2; i++) {
        if (json_object_object_get_ex(body, strs[i], &v) && !json_object_is_type(v, json_type_null)) {
            if (!json_object_is_type(v, json_type_string)) {
                http_req_respond_error(req, 400, "invalid", "'%s' must be a string", strs[i]);
                argvec_free(a);
                return -1;
            }
            if (i == 0)
                o->cwd = json_object_get_string(v);
            else
                o->user = json_object_get_string(v);
        }
    }
    if (json_object_object_get_ex(body, "timeout_ms", &v) && !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0) {
            http_req_respond_error(req, 400, "invalid", "'timeout_ms' must be a non-negative integer");
            argvec_free(a);
            return -1;
        }
        o->timeout_ms = (uint64_t)json_object_get_int64(v);
    }
    if (allow_tty) {
        if (json_object_object_get_ex(body, "tty", &v))
            o->tty = json_object_get_boolean(v);
        o->rows = 24;
        o->cols = 80;
        if (json_object_object_get_ex(body, "rows", &v) && json_object_is_type(v, json_type_int))
            o->rows = (uint16_t)json_object_get_int(v);
        if (json_object_object_get_ex(body, "cols", &v) && json_object_is_type(v, json_type_int))
            o->cols = (uint16_t)json_object_get_int(v);
        if (json_object_object_get_ex(body, "stdin", &v))
            o->stdin_open = json_object_get_boolean(v);
    }
    o->argv = a->argv;
    o->env = a->env;
    return 0;
oom:
    http_req_respond_error(req, 500, "internal", "out of memory");
    argvec_free(a);
    return -1;
}

/* Optional "max_output_bytes" (>= 1); on error responds 400, returns -1. */
static int parse_max_output(http_req_t *req, json_object *body, uint64_t *max)
{
    json_object *v;
    *max = 0;
    if (!json_object_object_get_ex(body, "max_output_bytes", &v) || json_object_is_type(v, json_type_null))
        return 0;
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 1) {
        http_req_respond_error(req, 400, "invalid", "'max_output_bytes' must be a positive integer");
        return -1;
    }
    *max = (uint64_t)json_object_get_int64(v);
    return 0;
}

static exec_session_t *session_new(lane_rt_t *l)
{
    exec_session_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->d = l->d;
    s->lane = l;
    s->queue_tail = &s->queue;
    s->started_ms = util_now_ms();
    snprintf(s->id, sizeof(s->id), "x%llu", (unsigned long long)++l->d->exec_seq);
    uv_timer_init(l->d->loop, &s->orphan);
    s->orphan.data = s;
    s->next = l->sessions;
    l->sessions = s;
    return s;
}

static const agent_exec_callbacks_t exec_cbs = {on_exec_started, on_exec_output, on_exec_stdin_room, on_exec_exit};

static int session_start(exec_session_t *s, http_req_t *req, const agent_exec_opts_t *o)
{
    int r = agent_exec_start(s->lane->agent, o, &exec_cbs, s, &s->exec);
    if (r < 0) {
        s->exec = NULL;
        if (r == -EMSGSIZE)
            http_req_respond_error(req, 400, "invalid", "command, environment and options exceed the 64 KiB frame limit");
        else
            http_req_respond_error(req, 503, "agent_unavailable", "cannot start exec: %s", strerror(-r));
        return -1;
    }
    return 0;
}

static void h_exec_buffered(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    json_object *body = http_req_json(req);
    if (!body)
        return;
    lane_rt_t *l = api_running_lane_or_409(d, req);
    if (!l)
        return;
    agent_exec_opts_t o;
    argvec_t a;
    uint64_t max_output;
    if (parse_max_output(req, body, &max_output) < 0)
        return;
    if (parse_exec_opts(req, body, &o, &a, 0) < 0)
        return;
    json_object *in;
    const char *stdin_text = NULL;
    if (json_object_object_get_ex(body, "stdin", &in) && json_object_is_type(in, json_type_string)) {
        stdin_text = json_object_get_string(in);
        o.stdin_open = 1;
    }
    exec_session_t *s = session_new(l);
    if (!s) {
        argvec_free(&a);
        http_req_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    s->buffered = 1;
    s->max_output = max_output;
    s->reply = req;
    if (session_start(s, req, &o) < 0) {
        argvec_free(&a);
        s->reply = NULL;
        session_free(s);
        return;
    }
    argvec_free(&a);
    if (stdin_text) {
        size_t n = strlen(stdin_text);
        s->stdin_pending = malloc(n ? n : 1);
        if (s->stdin_pending)
            memcpy(s->stdin_pending, stdin_text, n);
        s->stdin_pending_len = n;
        s->stdin_ended = 1;
        stdin_pump(s);
    }
}

static void h_exec_create(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    json_object *body = http_req_json(req);
    if (!body)
        return;
    lane_rt_t *l = api_running_lane_or_409(d, req);
    if (!l)
        return;
    agent_exec_opts_t o;
    argvec_t a;
    uint64_t max_output;
    if (parse_max_output(req, body, &max_output) < 0)
        return;
    if (parse_exec_opts(req, body, &o, &a, 1) < 0)
        return;
    exec_session_t *s = session_new(l);
    if (!s) {
        argvec_free(&a);
        http_req_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    s->want_stdin = o.stdin_open;
    s->max_output = max_output;
    int r = session_start(s, req, &o);
    argvec_free(&a);
    if (r < 0) {
        session_free(s);
        return;
    }
    json_object *res = json_object_new_object();
    json_object_object_add(res, "id", json_object_new_string(s->id));
    http_req_respond_json(req, 201, res);
}

static exec_session_t *session_or_404(lanesd_t *d, http_req_t *req)
{
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return NULL;
    exec_session_t *s = session_find(l, http_req_param(req, "id"));
    if (!s)
        http_req_respond_error(req, 404, "exec_not_found", "no exec session '%s' in lane %s",
                               http_req_param(req, "id"), l->name);
    return s;
}

static void h_exec_output(http_req_t *req, void *ctx)
{
    exec_session_t *s = session_or_404(ctx, req);
    if (!s)
        return;
    if (s->out_req || s->reader) {
        http_req_respond_error(req, 409, "busy", "exec %s already has an output reader", s->id);
        return;
    }
    s->out_req = req;
    http_req_on_close(req, on_out_closed, s);
    http_req_on_drain(req, on_out_drain, s);
    http_req_stream_begin(req, 200, "application/x-ndjson", NULL);
    if (s->orphan_armed) {
        uv_timer_stop(&s->orphan);
        s->orphan_armed = 0;
    }
    out_chunk_t *c = s->queue;
    s->queue = NULL;
    s->queue_tail = &s->queue;
    while (c) {
        out_chunk_t *n = c->next;
        stream_output_line(s, c->fd, c->data, c->len);
        free(c);
        c = n;
    }
    if (s->exited) {
        stream_finish(s);
        session_free(s);
        return;
    }
    deliver_ack(s);
}

static void h_exec_stdin(http_req_t *req, void *ctx)
{
    exec_session_t *s = session_or_404(ctx, req);
    if (!s)
        return;
    if (!s->want_stdin) {
        http_req_respond_error(req, 409, "stdin_closed", "exec %s was created without \"stdin\": true", s->id);
        return;
    }
    if (s->stdin_req || s->stdin_ended) {
        http_req_respond_error(req, 409, "busy", "stdin of exec %s is already attached or closed", s->id);
        return;
    }
    if (!s->exec) {
        http_req_respond_raw(req, 204, NULL, NULL, 0);
        return;
    }
    s->stdin_req = req;
    http_req_on_close(req, on_stdin_closed, s);
    static const http_body_callbacks_t cbs = {on_stdin_data, on_stdin_end};
    http_req_body_read_start(req, &cbs, s);
}

static int parse_signal(json_object *v)
{
    static const struct {
        const char *name;
        int sig;
    } names[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
                 {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"STOP", SIGSTOP},
                 {"CONT", SIGCONT}, {"WINCH", SIGWINCH}};
    if (json_object_is_type(v, json_type_int)) {
        int s = json_object_get_int(v);
        return s > 0 && s < 65 ? s : -1;
    }
    if (!json_object_is_type(v, json_type_string))
        return -1;
    const char *n = json_object_get_string(v);
    if (!strncmp(n, "SIG", 3))
        n += 3;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!strcmp(n, names[i].name))
            return names[i].sig;
    return -1;
}

static void h_exec_signal(http_req_t *req, void *ctx)
{
    json_object *body = http_req_json(req);
    if (!body)
        return;
    exec_session_t *s = session_or_404(ctx, req);
    if (!s)
        return;
    json_object *v;
    int sig = json_object_object_get_ex(body, "signal", &v) ? parse_signal(v) : -1;
    if (sig < 0) {
        http_req_respond_error(req, 400, "invalid", "'signal' must be a signal number or a name like \"TERM\"");
        return;
    }
    if (s->exec)
        agent_exec_signal(s->exec, sig);
    http_req_respond_raw(req, 204, NULL, NULL, 0);
}

static void h_exec_resize(http_req_t *req, void *ctx)
{
    json_object *body = http_req_json(req);
    if (!body)
        return;
    exec_session_t *s = session_or_404(ctx, req);
    if (!s)
        return;
    json_object *r, *c;
    if (!json_object_object_get_ex(body, "rows", &r) || !json_object_object_get_ex(body, "cols", &c) ||
        !json_object_is_type(r, json_type_int) || !json_object_is_type(c, json_type_int) ||
        json_object_get_int(r) < 1 || json_object_get_int(r) > 65535 || json_object_get_int(c) < 1 ||
        json_object_get_int(c) > 65535) {
        http_req_respond_error(req, 400, "invalid", "'rows' and 'cols' must be integers in 1..65535");
        return;
    }
    if (s->exec)
        agent_exec_resize(s->exec, (uint16_t)json_object_get_int(r), (uint16_t)json_object_get_int(c));
    http_req_respond_raw(req, 204, NULL, NULL, 0);
}

static void h_exec_get(http_req_t *req, void *ctx)
{
    exec_session_t *s = session_or_404(ctx, req);
    if (!s)
        return;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_string(s->id));
    json_object_object_add(o, "pid", s->pid ? json_object_new_int((int)s->pid) : NULL);
    json_object_object_add(o, "running", json_object_new_boolean(!s->exited));
    json_object_object_add(o, "exit", s->exited && !s->exit.error ? exit_json(&s->exit) : NULL);
    http_req_respond_json(req, 200, o);
}

void api_exec_lane_gone(lane_rt_t *l)
{
    while (l->sessions) {
        exec_session_t *s = l->sessions;
        session_unlink(s);
        if (s->exec) {
            /* the agent is being freed: its terminal callback follows */
            agent_exec_cancel(s->exec);
            continue;
        }
        session_free(s);
    }
}

/* ---- external readers (api_shell.c) ------------------------------------------------------- */

exec_session_t *api_exec_start(lane_rt_t *l, const agent_exec_opts_t *o, char *msg, size_t msglen)
{
    exec_session_t *s = session_new(l);
    if (!s) {
        snprintf(msg, msglen, "out of memory");
        return NULL;
    }
    s->want_stdin = o->stdin_open;
    int r = agent_exec_start(l->agent, o, &exec_cbs, s, &s->exec);
    if (r < 0) {
        s->exec = NULL;
        snprintf(msg, msglen, "cannot start exec: %s", strerror(-r));
        session_free(s);
        return NULL;
    }
    return s;
}

exec_session_t *api_exec_find(lane_rt_t *l, const char *id)
{
    return session_find(l, id);
}

const char *api_exec_id(const exec_session_t *s)
{
    return s->id;
}

uint32_t api_exec_pid(const exec_session_t *s)
{
    return s->pid;
}

int api_exec_attach(exec_session_t *s, const api_exec_reader_t *r, void *ud)
{
    if (s->out_req || s->reader)
        return -EBUSY;
    s->reader = r;
    s->reader_ud = ud;
    if (s->orphan_armed) {
        uv_timer_stop(&s->orphan);
        s->orphan_armed = 0;
    }
    /* Output that arrived before anyone read it was never acked: hand it
     * over now; the reader acks it like live output. */
    out_chunk_t *c = s->queue;
    s->queue = NULL;
    s->queue_tail = &s->queue;
    while (c) {
        out_chunk_t *n = c->next;
        if (s->reader)
            r->on_output(s, c->fd, c->data, c->len, ud);
        free(c);
        c = n;
    }
    if (s->exited && s->reader) {
        s->reader = NULL;
        r->on_exit(s, &s->exit, ud);
        session_free(s);
    }
    return 0;
}

void api_exec_detach(exec_session_t *s)
{
    s->reader = NULL;
    s->reader_ud = NULL;
    if (s->exec && s->unacked) {
        agent_exec_ack(s->exec, s->unacked);
        s->unacked = 0;
    }
}

void api_exec_ack(exec_session_t *s, size_t len)
{
    if (s->exec)
        agent_exec_ack(s->exec, len);
}

ssize_t api_exec_write_stdin(exec_session_t *s, const void *data, size_t len)
{
    if (!s->exec || !s->want_stdin || s->stdin_closed)
        return -EPIPE;
    return agent_exec_write_stdin(s->exec, data, len);
}

void api_exec_close_stdin(exec_session_t *s)
{
    if (s->exec && s->want_stdin && !s->stdin_closed) {
        s->stdin_closed = 1;
        agent_exec_close_stdin(s->exec);
    }
}

int api_exec_resize(exec_session_t *s, uint16_t rows, uint16_t cols)
{
    return s->exec ? agent_exec_resize(s->exec, rows, cols) : -ESRCH;
}

int api_exec_signal(exec_session_t *s, int sig)
{
    return s->exec ? agent_exec_signal(s->exec, sig) : -ESRCH;
}

void api_exec_register(lanesd_t *d)
{
    http_server_route(d->http, "POST", "/v1/lanes/{name}/exec", 0, h_exec_buffered, d);
    http_server_route(d->http, "POST", "/v1/lanes/{name}/execs", 0, h_exec_create, d);
    http_server_route(d->http, "GET", "/v1/lanes/{name}/execs/{id}", 0, h_exec_get, d);
    http_server_route(d->http, "GET", "/v1/lanes/{name}/execs/{id}/output", 0, h_exec_output, d);
    http_server_route(d->http, "POST", "/v1/lanes/{name}/execs/{id}/stdin", HTTP_ROUTE_STREAM_BODY, h_exec_stdin, d);
    http_server_route(d->http, "POST", "/v1/lanes/{name}/execs/{id}/signal", 0, h_exec_signal, d);
    http_server_route(d->http, "POST", "/v1/lanes/{name}/execs/{id}/resize", 0, h_exec_resize, d);
}
