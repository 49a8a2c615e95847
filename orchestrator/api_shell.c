/* api_shell.c — interactive shells and exec attach over WebSocket.
 *
 *   GET /v1/lanes/{name}/shell?rows=R&cols=C[&term=T][&user=U][&cwd=D][&shell=PATH]
 *       starts a PTY exec (default /bin/sh -l) and upgrades to WebSocket;
 *       the shell gets SIGHUP when the socket goes away.
 *   GET /v1/lanes/{name}/shell?session=NAME[&takeover=1]...
 *       a named, persistent session: created on first use, reattached after.
 *       The PTY process outlives its clients (no SIGHUP on disconnect);
 *       lanesd keeps the last SESSION_RING bytes of its output and replays
 *       them on reattach, then streams live. One client at a time: a second
 *       one gets 409 session_busy unless it asks to take over (the first then
 *       gets {"type":"detached","reason":"taken_over"} and close 1000).
 *   GET /v1/lanes/{name}/sessions, DELETE /v1/lanes/{name}/sessions/{session}
 *       list the lane's sessions; kill one (SIGKILL to its process group).
 *   GET /v1/lanes/{name}/execs/{id}/attach
 *       attaches to an existing exec session (created with "stdin": true to
 *       type into it); leaving detaches, the process keeps running.
 *
 * Frames: binary client->server = stdin bytes; binary server->client =
 * output bytes (stdout, or the PTY). Text frames carry JSON control:
 *   client: {"type":"resize","rows":R,"cols":C} | {"type":"signal","signal":"INT"}
 *           | {"type":"eof"}   (close stdin)
 *   server: {"type":"started","id":"x7"} first (sessions add "session",
 *           "created" and "replayed": N, and the replay follows as one
 *           binary frame of N bytes);
 *           {"type":"stderr","data":"<base64>"} for a non-PTY exec's stderr;
 *           {"type":"exit","exit_code":N|null,"signal":N|null,"timed_out":B}
 *           or {"type":"error","code":"...","message":"..."} last, then
 *           close 1000 (exit) or 1011 (error). A session's client may
 *           instead get {"type":"detached","reason":"taken_over"|"killed"}
 *           and close 1000.
 *
 * Backpressure both ways: output is acked to the guest only while the
 * socket's queue is under SHELL_HIGH_WATER (on_drain acks the rest); stdin
 * messages the guest's window cannot take yet are kept and the WebSocket is
 * paused until the agent reports room.
 *
 * Lifetime: a shell_t lives until both its WebSocket has closed and its exec
 * reader is detached or has seen the exit. A named session (shell_session_t,
 * listed in d->shell_sessions) is its exec's reader for the exec's whole
 * life, attached client or not: it ends when the process exits, when it is
 * killed, or when the lane stops (the agent going away ends every exec).
 * While no client is attached its output is acked at once (only the ring
 * keeps it), so a detached shell never blocks on output. A client shell_t of
 * a session lives exactly as long as its WebSocket.
 * Threading: the uv loop only.
 */
#include "lanesd.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHELL_HIGH_WATER (256u * 1024)
#define SESSION_RING (64u * 1024)   /* output kept for replay, per session */
#define SESSION_MAX_PER_LANE 32

typedef struct shell shell_t;

struct shell_session {
    lanesd_t *d;
    char lane_id[32];
    char name[64];
    exec_session_t *exec;    /* NULL once the process is gone */
    shell_t *client;         /* the attached client, if any */
    int listed;              /* in d->shell_sessions (0 once killed) */
    int64_t created_s, last_activity_ms;
    uint8_t *ring;           /* SESSION_RING bytes; ring_total % size = next write */
    uint64_t ring_total;
    struct shell_session *next;
};

struct shell {
    lanesd_t *d;
    http_ws_t *ws;           /* NULL once the WebSocket closed */
    exec_session_t *exec;    /* NULL once detached or exited (unused for sessions) */
    shell_session_t *sess;   /* client of a named session (NULL once it ended) */
    int owns_exec;           /* /shell: hang up the process when we leave */
    size_t unacked;          /* output sent to the socket, not yet acked */
    uint8_t *stdin_buf;      /* stdin the guest window could not take yet */
    size_t stdin_len, stdin_off;
};

static void shell_maybe_free(shell_t *sh)
{
    if (sh->ws || sh->exec)
        return;
    free(sh->stdin_buf);
    free(sh);
}

/* The process this client types into: its own exec, or its session's. */
static exec_session_t *shell_exec(const shell_t *sh)
{
    if (sh->sess)
        return sh->sess->exec;
    return sh->exec;
}

static void shell_send_json(shell_t *sh, json_object *o)
{
    size_t len;
    const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
    if (sh->ws)
        http_ws_send_text(sh->ws, s, len);
    json_object_put(o);
}

static void shell_ack(shell_t *sh)
{
    exec_session_t *x = shell_exec(sh);
    if (x && sh->unacked && (!sh->ws || http_ws_pending(sh->ws) < SHELL_HIGH_WATER)) {
        api_exec_ack(x, sh->unacked);
        sh->unacked = 0;
    }
}

/* ---- exec side ---------------------------------------------------------------------------- */

static void on_exec_output(exec_session_t *s, int fd, const uint8_t *data, size_t len, void *ud)
{
    shell_t *sh = ud;
    if (!sh->ws) {
        api_exec_ack(s, len);
        return;
    }
    if (fd == 2) {
        char *b64 = util_base64_encode(data, len);
        json_object *o = json_object_new_object();
        json_object_object_add(o, "type", json_object_new_string("stderr"));
        json_object_object_add(o, "data", json_object_new_string(b64 ? b64 : ""));
        free(b64);
        shell_send_json(sh, o);
    } else {
        http_ws_send_binary(sh->ws, data, len);
    }
    sh->unacked += len;
    shell_ack(sh);
}

static void stdin_pump(shell_t *sh)
{
    while (shell_exec(sh) && sh->stdin_off < sh->stdin_len) {
        ssize_t n = api_exec_write_stdin(shell_exec(sh), sh->stdin_buf + sh->stdin_off, sh->stdin_len - sh->stdin_off);
        if (n < 0) { /* stdin closed: drop what is left */
            sh->stdin_off = sh->stdin_len;
            break;
        }
        if (n == 0)
            return; /* wait for on_stdin_room */
        sh->stdin_off += (size_t)n;
    }
    sh->stdin_len = sh->stdin_off = 0;
    if (sh->ws)
        http_ws_resume(sh->ws);
}

static void on_exec_stdin_room(exec_session_t *s, void *ud)
{
    (void)s;
    stdin_pump(ud);
}

static void on_exec_exit(exec_session_t *s, const agent_exit_t *x, void *ud)
{
    shell_t *sh = ud;
    (void)s;
    sh->exec = NULL;
    if (sh->ws) {
        json_object *o = json_object_new_object();
        if (x->error) {
            json_object_object_add(o, "type", json_object_new_string("error"));
            json_object_object_add(o, "code", json_object_new_string(x->error == -ENOENT ? "command_not_found"
                                                                                          : "exec_failed"));
            json_object_object_add(o, "message", json_object_new_string(x->message[0] ? x->message
                                                                                        : strerror(-x->error)));
        } else {
            json_object_object_add(o, "type", json_object_new_string("exit"));
            json_object_object_add(o, "exit_code", x->exited ? json_object_new_int(x->code) : NULL);
            json_object_object_add(o, "signal", x->term_signal ? json_object_new_int(x->term_signal) : NULL);
            json_object_object_add(o, "timed_out", json_object_new_boolean(x->timed_out));
        }
        shell_send_json(sh, o);
        http_ws_close(sh->ws, x->error ? 1011 : 1000, x->error ? "exec failed" : "exited");
    }
    shell_maybe_free(sh);
}

static const api_exec_reader_t shell_reader = {on_exec_output, on_exec_stdin_room, on_exec_exit};

/* ---- WebSocket side ------------------------------------------------------------------------ */

static int signal_by_name(json_object *v)
{
    static const struct {
        const char *name;
        int sig;
    } names[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
                 {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"STOP", SIGSTOP},
                 {"CONT", SIGCONT}, {"WINCH", SIGWINCH}, {"TSTP", SIGTSTP}};
    if (json_object_is_type(v, json_type_int)) {
        int n = json_object_get_int(v);
        return n > 0 && n < 65 ? n : -1;
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

static void shell_control(shell_t *sh, const uint8_t *data, size_t len)
{
    json_tokener *tok = json_tokener_new_ex(8);
    json_object *o = tok ? json_tokener_parse_ex(tok, (const char *)data, (int)len) : NULL;
    if (tok)
        json_tokener_free(tok);
    json_object *t, *a, *b;
    exec_session_t *x = shell_exec(sh);
    const char *type = o && json_object_object_get_ex(o, "type", &t) ? json_object_get_string(t) : NULL;
    if (!type) {
        json_object_put(o);
        http_ws_close(sh->ws, 1003, "control messages are JSON objects with a \"type\"");
        return;
    }
    if (!strcmp(type, "resize") && json_object_object_get_ex(o, "rows", &a) &&
        json_object_object_get_ex(o, "cols", &b) && json_object_get_int(a) > 0 && json_object_get_int(a) < 65536 &&
        json_object_get_int(b) > 0 && json_object_get_int(b) < 65536) {
        if (x)
            api_exec_resize(x, (uint16_t)json_object_get_int(a), (uint16_t)json_object_get_int(b));
    } else if (!strcmp(type, "signal") && json_object_object_get_ex(o, "signal", &a) && signal_by_name(a) > 0) {
        if (x)
            api_exec_signal(x, signal_by_name(a));
    } else if (!strcmp(type, "eof")) {
        if (x)
            api_exec_close_stdin(x);
    } else {
        http_ws_close(sh->ws, 1003, "unknown or malformed control message");
    }
    json_object_put(o);
}

static void on_ws_message(http_ws_t *ws, int type, const uint8_t *data, size_t len, void *ud)
{
    shell_t *sh = ud;
    if (type == HTTP_WS_TEXT) {
        shell_control(sh, data, len);
        return;
    }
    exec_session_t *x = shell_exec(sh);
    if (!x || !len)
        return;
    if (sh->sess)
        sh->sess->last_activity_ms = util_now_ms();
    size_t off = 0;
    if (sh->stdin_len == 0) {
        ssize_t n = api_exec_write_stdin(x, data, len);
        if (n < 0)
            return; /* stdin not open or closed: input is dropped */
        off = (size_t)n;
    }
    if (off == len)
        return;
    /* Keep the rest and stop reading until the guest's window opens. */
    uint8_t *buf = realloc(sh->stdin_buf, sh->stdin_len + len - off);
    if (!buf) {
        http_ws_close(ws, 1011, "out of memory");
        return;
    }
    memcpy(buf + sh->stdin_len, data + off, len - off);
    sh->stdin_buf = buf;
    sh->stdin_len += len - off;
    http_ws_pause(ws);
}

static void on_ws_drain(http_ws_t *ws, void *ud)
{
    (void)ws;
    shell_ack(ud);
}

static void on_ws_close(http_ws_t *ws, int code, const char *reason, void *ud)
{
    shell_t *sh = ud;
    (void)ws;
    (void)code;
    (void)reason;
    sh->ws = NULL;
    if (sh->sess) {
        /* detach from the session: it keeps running, nobody hangs it up */
        shell_session_t *ss = sh->sess;
        sh->sess = NULL;
        ss->client = NULL;
        if (ss->exec && sh->unacked)
            api_exec_ack(ss->exec, sh->unacked);
        sh->unacked = 0;
    }
    if (sh->exec) {
        exec_session_t *s = sh->exec;
        if (sh->unacked)
            api_exec_ack(s, sh->unacked);
        sh->unacked = 0;
        sh->exec = NULL;
        api_exec_detach(s);
        if (sh->owns_exec) {
            /* like a terminal going away: hang up the shell */
            api_exec_close_stdin(s);
            api_exec_signal(s, SIGHUP);
        }
    }
    shell_maybe_free(sh);
}

static const http_ws_callbacks_t shell_ws_cbs = {on_ws_message, on_ws_close, on_ws_drain};

/* Upgrade req and attach to s; on failure responds and returns -1. */
static int shell_connect(lanesd_t *d, http_req_t *req, exec_session_t *s, int owns)
{
    shell_t *sh = calloc(1, sizeof(*sh));
    if (!sh) {
        http_req_respond_error(req, 500, "internal", "out of memory");
        return -1;
    }
    sh->d = d;
    sh->owns_exec = owns;
    const char *id = api_exec_id(s);
    char idbuf[32];
    snprintf(idbuf, sizeof(idbuf), "%s", id);
    sh->ws = http_req_websocket_accept(req, &shell_ws_cbs, sh);
    if (!sh->ws) {
        free(sh);
        return -1;
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "type", json_object_new_string("started"));
    json_object_object_add(o, "id", json_object_new_string(idbuf));
    shell_send_json(sh, o);
    sh->exec = s;
    /* May deliver queued output and even the exit (which clears sh->exec). */
    if (api_exec_attach(s, &shell_reader, sh) < 0) {
        sh->exec = NULL;
        json_object *e = json_object_new_object();
        json_object_object_add(e, "type", json_object_new_string("error"));
        json_object_object_add(e, "code", json_object_new_string("busy"));
        json_object_object_add(e, "message", json_object_new_string("exec already has an output reader"));
        shell_send_json(sh, e);
        http_ws_close(sh->ws, 1008, "busy");
    }
    return 0;
}

/* ---- named sessions --------------------------------------------------------------------- */

static void ring_append(shell_session_t *ss, const uint8_t *data, size_t len)
{
    if (len > SESSION_RING) { /* only the tail can survive */
        ss->ring_total += len - SESSION_RING;
        data += len - SESSION_RING;
        len = SESSION_RING;
    }
    size_t at = (size_t)(ss->ring_total % SESSION_RING);
    size_t first = len < SESSION_RING - at ? len : SESSION_RING - at;
    memcpy(ss->ring + at, data, first);
    memcpy(ss->ring, data + first, len - first);
    ss->ring_total += len;
}

/* Send the ring's content, oldest byte first, as one binary frame. */
static void ring_replay(shell_session_t *ss, http_ws_t *ws)
{
    size_t have = ss->ring_total < SESSION_RING ? (size_t)ss->ring_total : SESSION_RING;
    if (!have)
        return;
    uint8_t *buf = malloc(have);
    if (!buf)
        return;
    size_t start = (size_t)((ss->ring_total - have) % SESSION_RING);
    size_t first = have < SESSION_RING - start ? have : SESSION_RING - start;
    memcpy(buf, ss->ring + start, first);
    memcpy(buf + first, ss->ring, have - first);
    http_ws_send_binary(ws, buf, have);
    free(buf);
}

static void session_unlist(shell_session_t *ss)
{
    if (!ss->listed)
        return;
    for (shell_session_t **pp = &ss->d->shell_sessions; *pp; pp = &(*pp)->next) {
        if (*pp == ss) {
            *pp = ss->next;
            break;
        }
    }
    ss->listed = 0;
}

static shell_session_t *session_lookup(lanesd_t *d, const char *lane_id, const char *name)
{
    for (shell_session_t *ss = d->shell_sessions; ss; ss = ss->next)
        if (!strcmp(ss->lane_id, lane_id) && !strcmp(ss->name, name))
            return ss;
    return NULL;
}

/* Session names: [A-Za-z0-9._-]{1,63}, not starting with '.' or '-'. */
static int session_name_ok(const char *n)
{
    size_t len = strlen(n);
    if (!len || len > 63 || n[0] == '.' || n[0] == '-')
        return 0;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
              *p == '_' || *p == '-'))
            return 0;
    return 1;
}

/* Tell the attached client (if any) it is no longer attached and let it go. */
static void session_drop_client(shell_session_t *ss, const char *reason)
{
    shell_t *sh = ss->client;
    if (!sh)
        return;
    ss->client = NULL;
    sh->sess = NULL;
    if (ss->exec && sh->unacked)
        api_exec_ack(ss->exec, sh->unacked);
    sh->unacked = 0;
    if (sh->ws) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "type", json_object_new_string("detached"));
        json_object_object_add(o, "reason", json_object_new_string(reason));
        shell_send_json(sh, o);
        http_ws_close(sh->ws, 1000, reason);
    }
}

static void on_session_output(exec_session_t *s, int fd, const uint8_t *data, size_t len, void *ud)
{
    shell_session_t *ss = ud;
    (void)fd; /* a PTY: everything is the terminal's output */
    ring_append(ss, data, len);
    ss->last_activity_ms = util_now_ms();
    shell_t *sh = ss->client;
    if (!sh || !sh->ws) {
        api_exec_ack(s, len); /* detached: the ring is all we keep */
        return;
    }
    http_ws_send_binary(sh->ws, data, len);
    sh->unacked += len;
    shell_ack(sh);
}

static void on_session_stdin_room(exec_session_t *s, void *ud)
{
    shell_session_t *ss = ud;
    (void)s;
    if (ss->client)
        stdin_pump(ss->client);
}

static void on_session_exit(exec_session_t *s, const agent_exit_t *x, void *ud)
{
    shell_session_t *ss = ud;
    ss->exec = NULL;
    session_unlist(ss);
    shell_t *sh = ss->client;
    if (sh) {
        ss->client = NULL;
        sh->sess = NULL;
        sh->unacked = 0;
        if (sh->ws) {
            json_object *o = json_object_new_object();
            if (x->error) {
                /* a shell that ran and then failed: its lane stopped or its agent went away */
                int ran = api_exec_pid(s) != 0;
                char why[320];
                snprintf(why, sizeof(why), "%s%s", x->message[0] ? x->message : strerror(-x->error),
                         ran ? " (the session ended with its lane's agent)" : "");
                json_object_object_add(o, "type", json_object_new_string("error"));
                json_object_object_add(o, "code", json_object_new_string(ran                      ? "session_ended"
                                                                         : x->error == -ENOENT ? "command_not_found"
                                                                                               : "exec_failed"));
                json_object_object_add(o, "message", json_object_new_string(why));
            } else {
                json_object_object_add(o, "type", json_object_new_string("exit"));
                json_object_object_add(o, "exit_code", x->exited ? json_object_new_int(x->code) : NULL);
                json_object_object_add(o, "signal", x->term_signal ? json_object_new_int(x->term_signal) : NULL);
                json_object_object_add(o, "timed_out", json_object_new_boolean(x->timed_out));
            }
            shell_send_json(sh, o);
            http_ws_close(sh->ws, x->error ? 1011 : 1000, x->error ? "session ended" : "exited");
        }
    }
    free(ss->ring);
    free(ss);
}

static const api_exec_reader_t session_reader = {on_session_output, on_session_stdin_room, on_session_exit};

/* Start a new named session's shell. NULL with an HTTP error answered. */
static shell_session_t *session_create(lanesd_t *d, lane_rt_t *l, http_req_t *req, const char *name,
                                       const agent_exec_opts_t *o)
{
    int n = 0;
    for (shell_session_t *ss = d->shell_sessions; ss; ss = ss->next)
        n += !strcmp(ss->lane_id, l->id);
    if (n >= SESSION_MAX_PER_LANE) {
        http_req_respond_error(req, 409, "too_many_sessions", "lane %s already has %d sessions", l->name, n);
        return NULL;
    }
    shell_session_t *ss = calloc(1, sizeof(*ss));
    uint8_t *ring = malloc(SESSION_RING);
    if (!ss || !ring) {
        free(ss);
        free(ring);
        http_req_respond_error(req, 500, "internal", "out of memory");
        return NULL;
    }
    char msg[256];
    exec_session_t *s = api_exec_start(l, o, msg, sizeof(msg));
    if (!s) {
        free(ss);
        free(ring);
        http_req_respond_error(req, 503, "agent_unavailable", "%s", msg);
        return NULL;
    }
    ss->d = d;
    ss->ring = ring;
    snprintf(ss->lane_id, sizeof(ss->lane_id), "%s", l->id);
    snprintf(ss->name, sizeof(ss->name), "%s", name);
    ss->created_s = util_now_s();
    ss->last_activity_ms = util_now_ms();
    ss->exec = s;
    ss->listed = 1;
    ss->next = d->shell_sessions;
    d->shell_sessions = ss;
    /* A fresh exec has no reader: this cannot be busy, and it has not exited. */
    api_exec_attach(s, &session_reader, ss);
    return ss;
}

/* Kill a session's process group; it leaves the list now and is freed
 * when the exit arrives. */
static void session_kill(shell_session_t *ss, const char *reason)
{
    session_unlist(ss);
    session_drop_client(ss, reason);
    if (ss->exec) {
        api_exec_close_stdin(ss->exec);
        api_exec_signal(ss->exec, SIGKILL);
    }
}

/* GET /shell?session=NAME: create or reattach, then upgrade. */
static void shell_session_open(lanesd_t *d, lane_rt_t *l, http_req_t *req, const char *name,
                               const agent_exec_opts_t *o, int resize)
{
    if (!session_name_ok(name)) {
        http_req_respond_error(req, 400, "invalid", "session names are 1-63 of [A-Za-z0-9._-], not starting "
                                                    "with '.' or '-'");
        return;
    }
    const char *tk = http_req_query(req, "takeover");
    int takeover = tk && (!strcmp(tk, "1") || !strcmp(tk, "true"));
    shell_session_t *ss = session_lookup(d, l->id, name);
    int created = 0;
    if (ss && ss->client && !takeover) {
        http_req_respond_error(req, 409, "session_busy",
                               "session '%s' already has a client attached (takeover=1 detaches it)", name);
        return;
    }
    if (!ss) {
        ss = session_create(d, l, req, name, o);
        if (!ss)
            return;
        created = 1;
    }
    shell_t *sh = calloc(1, sizeof(*sh));
    if (!sh) {
        http_req_respond_error(req, 500, "internal", "out of memory");
        if (created)
            session_kill(ss, "out of memory");
        return;
    }
    sh->d = d;
    sh->ws = http_req_websocket_accept(req, &shell_ws_cbs, sh);
    if (!sh->ws) {
        free(sh);
        if (created) /* nobody ever saw it: do not leave it running */
            session_kill(ss, "upgrade failed");
        return;
    }
    if (ss->client)
        session_drop_client(ss, "taken_over");
    json_object *m = json_object_new_object();
    json_object_object_add(m, "type", json_object_new_string("started"));
    json_object_object_add(m, "id", json_object_new_string(api_exec_id(ss->exec)));
    json_object_object_add(m, "session", json_object_new_string(ss->name));
    json_object_object_add(m, "created", json_object_new_boolean(created));
    json_object_object_add(m, "replayed", json_object_new_int64(
                                              (int64_t)(ss->ring_total < SESSION_RING ? ss->ring_total : SESSION_RING)));
    shell_send_json(sh, m);
    if (!created)
        ring_replay(ss, sh->ws);
    ss->client = sh;
    sh->sess = ss;
    ss->last_activity_ms = util_now_ms();
    if (!created && resize)
        api_exec_resize(ss->exec, o->rows, o->cols);
}

static json_object *session_json(const shell_session_t *ss)
{
    json_object *o = json_object_new_object();
    uint32_t pid = ss->exec ? api_exec_pid(ss->exec) : 0;
    json_object_object_add(o, "name", json_object_new_string(ss->name));
    json_object_object_add(o, "exec_id", json_object_new_string(ss->exec ? api_exec_id(ss->exec) : ""));
    json_object_object_add(o, "pid", pid ? json_object_new_int64(pid) : NULL);
    json_object_object_add(o, "created_at", util_json_time(ss->created_s));
    json_object_object_add(o, "attached", json_object_new_boolean(ss->client != NULL));
    json_object_object_add(o, "last_activity_at", util_json_time(ss->last_activity_ms / 1000));
    json_object_object_add(o, "buffered_bytes", json_object_new_int64(
                                                    (int64_t)(ss->ring_total < SESSION_RING ? ss->ring_total
                                                                                           : SESSION_RING)));
    return o;
}

static void h_sessions_list(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    json_object *arr = json_object_new_array();
    for (shell_session_t *ss = d->shell_sessions; ss; ss = ss->next)
        if (!strcmp(ss->lane_id, l->id))
            json_object_array_add(arr, session_json(ss));
    json_object *o = json_object_new_object();
    json_object_object_add(o, "sessions", arr);
    http_req_respond_json(req, 200, o);
}

static void h_session_delete(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    const char *name = http_req_param(req, "session");
    shell_session_t *ss = session_lookup(d, l->id, name);
    if (!ss) {
        http_req_respond_error(req, 404, "session_not_found", "no session '%s' in lane %s", name, l->name);
        return;
    }
    session_kill(ss, "killed");
    http_req_respond_raw(req, 204, NULL, NULL, 0);
}

static int query_u16(http_req_t *req, const char *name, uint16_t def)
{
    const char *v = http_req_query(req, name);
    if (!v)
        return def;
    char *end;
    long n = strtol(v, &end, 10);
    return (*end || n < 1 || n > 65535) ? -1 : (int)n;
}

static void h_shell(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    if (!http_req_is_websocket(req)) {
        http_req_respond_error(req, 400, "bad_request", "this route needs a WebSocket upgrade request");
        return;
    }
    lane_rt_t *l = api_running_lane_or_409(d, req);
    if (!l)
        return;
    int rows = query_u16(req, "rows", 24), cols = query_u16(req, "cols", 80);
    if (rows < 0 || cols < 0) {
        http_req_respond_error(req, 400, "invalid", "'rows' and 'cols' must be integers in 1..65535");
        return;
    }
    const char *shell = http_req_query(req, "shell");
    const char *term = http_req_query(req, "term");
    char termenv[128];
    snprintf(termenv, sizeof(termenv), "TERM=%s", term && *term && !strchr(term, '\n') ? term : "xterm-256color");
    const char *argv[] = {shell && *shell ? shell : "/bin/sh", "-l", NULL};
    const char *env[] = {termenv, NULL};
    agent_exec_opts_t o;
    memset(&o, 0, sizeof(o));
    o.argv = argv;
    o.env = env;
    o.cwd = http_req_query(req, "cwd");
    o.user = http_req_query(req, "user");
    o.tty = 1;
    o.rows = (uint16_t)rows;
    o.cols = (uint16_t)cols;
    o.stdin_open = 1;
    const char *session = http_req_query(req, "session");
    if (session) {
        shell_session_open(d, l, req, session, &o,
                           http_req_query(req, "rows") != NULL || http_req_query(req, "cols") != NULL);
        return;
    }
    char msg[256];
    exec_session_t *s = api_exec_start(l, &o, msg, sizeof(msg));
    if (!s) {
        http_req_respond_error(req, 503, "agent_unavailable", "%s", msg);
        return;
    }
    if (shell_connect(d, req, s, 1) < 0) {
        /* no socket after all: do not leave a shell running for nobody */
        api_exec_close_stdin(s);
        api_exec_signal(s, SIGHUP);
    }
}

static void h_attach(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    exec_session_t *s = api_exec_find(l, http_req_param(req, "id"));
    if (!s) {
        http_req_respond_error(req, 404, "exec_not_found", "no exec session '%s' in lane %s",
                               http_req_param(req, "id"), l->name);
        return;
    }
    shell_connect(d, req, s, 0);
}

void api_shell_register(lanesd_t *d)
{
    http_server_route(d->http, "GET", "/v1/lanes/{name}/shell", 0, h_shell, d);
    http_server_route(d->http, "GET", "/v1/lanes/{name}/execs/{id}/attach", 0, h_attach, d);
    http_server_route(d->http, "GET", "/v1/lanes/{name}/sessions", 0, h_sessions_list, d);
    http_server_route(d->http, "DELETE", "/v1/lanes/{name}/sessions/{session}", 0, h_session_delete, d);
}
