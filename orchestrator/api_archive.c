/* api_archive.c — directories in and out of a lane, stat and list.
 *
 *   PUT /v1/lanes/{name}/archive?path=/dir     tar body → extracted under /dir
 *   GET /v1/lanes/{name}/archive?path=/dir     /dir's contents as a tar stream
 *   GET /v1/lanes/{name}/files/stat?path=/p    {"name","path","type","mode",...}
 *   GET /v1/lanes/{name}/files/list?path=/dir  {"path","entries":[...]}
 *
 * All four run the guest's own tools through the agent's exec channel (no
 * protocol addition): `tar` (busybox or GNU; the request body is the exec's
 * stdin, its stdout the response body), and `stat -c` with a fixed format
 * ("%f %s %Y %u %g %n") under `find -mindepth 1 -maxdepth 1` for listings.
 * The guest path is always passed as a positional argument of a fixed
 * `sh -c` script, never spliced into a command line. Dependency: the image
 * must have sh, tar, stat and find (busybox and Debian both do).
 *
 * Invariants: memory is bounded — uploads pause the request body while the
 * guest's stdin window is closed; downloads ack stdout to the guest only
 * once the socket's queue is below ARCHIVE_HIGH_WATER; stderr is kept up to
 * 4 KiB for the error message; stat/list output is capped at LIST_MAX bytes.
 * A failing upload answers with tar's own message; a download that fails
 * after the first byte can only end the stream early (the client's tar sees
 * a truncated archive).
 *
 * Threading: the uv loop only.
 */
#include "lanesd.h"

#include "api_stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARCHIVE_HIGH_WATER (1u * 1024 * 1024)
#define LIST_MAX (8u * 1024 * 1024)
#define ERRBUF 4096

/* Exit codes of the wrapper scripts below. */
#define X_NOT_FOUND 71
#define X_NOT_DIR 72

static const char *const script_untar =
    "mkdir -p -- \"$1\" || exit 1; exec tar -x -f - -C \"$1\"";
static const char *const script_tar =
    "[ -d \"$1\" ] || { [ -e \"$1\" ] && exit 72; exit 71; }; exec tar -c -f - -C \"$1\" .";
static const char *const script_stat =
    "[ -e \"$1\" ] || [ -L \"$1\" ] || exit 71; exec stat -c '%f %s %Y %u %g %n' -- \"$1\"";
static const char *const script_list =
    "[ -d \"$1\" ] || { [ -e \"$1\" ] && exit 72; exit 71; }; "
    "exec find \"$1\" -mindepth 1 -maxdepth 1 -exec stat -c '%f %s %Y %u %g %n' -- {} +";

typedef enum { OP_PUT, OP_GET, OP_STAT, OP_LIST } archive_op_t;

typedef struct {
    lanesd_t *d;
    lane_rt_t *lane;
    http_req_t *req;
    agent_exec_t *x;
    archive_op_t op;
    char path[4096];
    /* upload */
    body_pump_t pump;
    int body_done, stdin_closed;
    /* download */
    int begun;
    size_t unacked;
    int client_gone;
    /* stat/list stdout, stderr */
    char *out;
    size_t out_len;
    int too_big;
    char err[ERRBUF];
    size_t err_len;
} archive_t;

static void archive_free(archive_t *a)
{
    body_pump_free(&a->pump);
    free(a->out);
    free(a);
}

/* The error text: the tool's stderr, trimmed. */
static const char *archive_errmsg(archive_t *a, const agent_exit_t *e)
{
    while (a->err_len && (a->err[a->err_len - 1] == '\n' || a->err[a->err_len - 1] == ' '))
        a->err_len--;
    a->err[a->err_len] = 0;
    if (a->err_len)
        return a->err;
    if (e->error)
        return e->message[0] ? e->message : strerror(-e->error);
    return "command failed";
}

/* ---- parse stat -c '%f %s %Y %u %g %n' ---------------------------------------------------- */

static const char *mode_type(unsigned long m)
{
    switch (m & 0170000) {
    case 0100000: return "file";
    case 0040000: return "dir";
    case 0120000: return "symlink";
    case 0020000: return "char";
    case 0060000: return "block";
    case 0010000: return "fifo";
    case 0140000: return "socket";
    default: return "unknown";
    }
}

/* One line → entry object, or NULL if malformed. */
static json_object *stat_line_json(const char *line)
{
    unsigned long mode;
    unsigned long long size;
    long long mtime;
    unsigned uid, gid;
    int n = 0;
    if (sscanf(line, "%lx %llu %lld %u %u %n", &mode, &size, &mtime, &uid, &gid, &n) != 5 || !n)
        return NULL;
    const char *path = line + n;
    const char *base = strrchr(path, '/');
    base = base && base[1] ? base + 1 : path;
    char mstr[8];
    snprintf(mstr, sizeof(mstr), "%04lo", mode & 07777);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(base));
    json_object_object_add(o, "path", json_object_new_string(path));
    json_object_object_add(o, "type", json_object_new_string(mode_type(mode)));
    json_object_object_add(o, "mode", json_object_new_string(mstr));
    json_object_object_add(o, "size", json_object_new_int64((int64_t)size));
    json_object_object_add(o, "mtime", json_object_new_int64(mtime));
    json_object_object_add(o, "uid", json_object_new_int64(uid));
    json_object_object_add(o, "gid", json_object_new_int64(gid));
    return o;
}

static int entry_cmp(const void *pa, const void *pb)
{
    json_object *a = *(json_object *const *)pa, *b = *(json_object *const *)pb;
    return strcmp(json_object_get_string(json_object_object_get(a, "name")),
                  json_object_get_string(json_object_object_get(b, "name")));
}

static void respond_stat_list(archive_t *a)
{
    json_object *entries = json_object_new_array();
    char *s = a->out ? a->out : "";
    for (char *line = s; *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        json_object *e = *line ? stat_line_json(line) : NULL;
        if (e)
            json_object_array_add(entries, e);
        if (!nl)
            break;
        line = nl + 1;
    }
    if (a->op == OP_STAT) {
        json_object *e = json_object_array_length(entries) == 1
                             ? json_object_get(json_object_array_get_idx(entries, 0))
                             : NULL;
        json_object_put(entries);
        if (!e) {
            http_req_respond_error(a->req, 500, "bad_guest_output", "unexpected output from the guest's stat");
            return;
        }
        http_req_respond_json(a->req, 200, e);
        return;
    }
    json_object_array_sort(entries, entry_cmp);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "path", json_object_new_string(a->path));
    json_object_object_add(o, "entries", entries);
    http_req_respond_json(a->req, 200, o);
}

/* ---- exec callbacks --------------------------------------------------------------------- */

static ssize_t stdin_sink_write(void *sink, const uint8_t *data, size_t len)
{
    return agent_exec_write_stdin(sink, data, len);
}

static void archive_pump_stdin(archive_t *a)
{
    if (!a->x || !body_pump_drain(&a->pump, stdin_sink_write, a->x))
        return;
    if (a->body_done) {
        if (!a->stdin_closed) {
            a->stdin_closed = 1;
            agent_exec_close_stdin(a->x);
        }
    } else if (a->req && !a->client_gone) {
        http_req_body_resume(a->req);
    }
}

static void get_ack(archive_t *a)
{
    if (!a->x || !a->unacked)
        return;
    if (!a->client_gone && http_req_stream_pending(a->req) > ARCHIVE_HIGH_WATER)
        return;
    agent_exec_ack(a->x, a->unacked);
    a->unacked = 0;
}

static void on_x_output(agent_exec_t *x, int fd, const uint8_t *data, size_t len, void *ud)
{
    archive_t *a = ud;
    if (fd == 2) {
        size_t room = sizeof(a->err) - 1 - a->err_len;
        size_t n = len < room ? len : room;
        memcpy(a->err + a->err_len, data, n);
        a->err_len += n;
        agent_exec_ack(x, len);
        return;
    }
    if (a->op == OP_GET) {
        if (!a->begun && !a->client_gone) {
            http_req_stream_begin(a->req, 200, "application/x-tar", NULL);
            a->begun = 1;
        }
        if (!a->client_gone)
            http_req_stream_write(a->req, data, len);
        a->unacked += len;
        get_ack(a);
        return;
    }
    if (a->op == OP_STAT || a->op == OP_LIST) {
        if (a->out_len + len > LIST_MAX) {
            if (!a->too_big) {
                a->too_big = 1;
                agent_exec_cancel(x);
            }
        } else {
            char *p = realloc(a->out, a->out_len + len + 1);
            if (p) {
                memcpy(p + a->out_len, data, len);
                a->out = p;
                a->out_len += len;
                a->out[a->out_len] = 0;
            }
        }
    }
    agent_exec_ack(x, len);
}

static void on_x_stdin_room(agent_exec_t *x, void *ud)
{
    (void)x;
    archive_pump_stdin(ud);
}

static void on_x_exit(agent_exec_t *x, const agent_exit_t *e, void *ud)
{
    archive_t *a = ud;
    (void)x;
    a->x = NULL;
    a->lane->transfers--;
    vm_lane_touch(a->lane);
    int ok = !e->error && e->exited && e->code == 0 && !a->too_big;
    if (a->client_gone) {
        if (a->begun)
            http_req_stream_end(a->req);
        else
            http_req_respond_raw(a->req, 499, NULL, NULL, 0);
    } else if (a->begun) {
        if (!ok)
            util_log("archive download of %s failed mid-stream: %s", a->path, archive_errmsg(a, e));
        http_req_stream_end(a->req);
    } else if (ok) {
        if (a->op == OP_PUT)
            http_req_respond_raw(a->req, 204, NULL, NULL, 0);
        else if (a->op == OP_GET)
            http_req_respond_raw(a->req, 200, "application/x-tar", NULL, 0);
        else
            respond_stat_list(a);
    } else if (a->too_big) {
        http_req_respond_error(a->req, 413, "too_large", "listing larger than %u bytes", LIST_MAX);
    } else if (e->error) {
        http_req_respond_error(a->req, 502, "exec_failed", "%s", archive_errmsg(a, e));
    } else if (e->exited && e->code == X_NOT_FOUND) {
        http_req_respond_error(a->req, 404, "file_not_found", "%s: no such file or directory", a->path);
    } else if (e->exited && e->code == X_NOT_DIR) {
        http_req_respond_error(a->req, 400, "not_a_directory", "%s is not a directory", a->path);
    } else if (e->exited && e->code == 127) {
        http_req_respond_error(a->req, 501, "tool_missing", "the image lacks a tool this call needs: %s",
                               archive_errmsg(a, e));
    } else {
        http_req_respond_error(a->req, a->op == OP_PUT ? 400 : 500, "archive_failed", "%s", archive_errmsg(a, e));
    }
    archive_free(a);
}

/* ---- request side ----------------------------------------------------------------------- */

static void on_put_data(http_req_t *req, const uint8_t *data, size_t len, void *ud)
{
    archive_t *a = ud;
    if (a->x && len && body_pump_offer(&a->pump, req, data, len, stdin_sink_write, a->x) < 0)
        agent_exec_cancel(a->x);
}

static void on_put_end(http_req_t *req, void *ud)
{
    archive_t *a = ud;
    (void)req;
    a->body_done = 1;
    archive_pump_stdin(a);
}

static void on_client_gone(http_req_t *req, void *ud)
{
    archive_t *a = ud;
    (void)req;
    a->client_gone = 1;
    if (a->x)
        agent_exec_cancel(a->x);
}

static void on_get_drain(http_req_t *req, void *ud)
{
    (void)req;
    get_ack(ud);
}

static void archive_start(http_req_t *req, lanesd_t *d, archive_op_t op)
{
    lane_rt_t *l = api_running_lane_or_409(d, req);
    if (!l)
        return;
    const char *path = http_req_query(req, "path");
    if (!api_guest_path_ok(req, path))
        return;
    archive_t *a = calloc(1, sizeof(*a));
    if (!a) {
        http_req_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    a->d = d;
    a->lane = l;
    a->req = req;
    a->op = op;
    snprintf(a->path, sizeof(a->path), "%s", path);
    const char *script = op == OP_PUT ? script_untar : op == OP_GET ? script_tar : op == OP_STAT ? script_stat
                                                                                                : script_list;
    const char *argv[] = {"sh", "-c", script, "sh", a->path, NULL};
    agent_exec_opts_t o = {.argv = argv, .stdin_open = op == OP_PUT};
    static const agent_exec_callbacks_t cbs = {NULL, on_x_output, on_x_stdin_room, on_x_exit};
    int r = agent_exec_start(l->agent, &o, &cbs, a, &a->x);
    if (r < 0) {
        archive_free(a);
        http_req_respond_error(req, 503, "agent_unavailable", "cannot start: %s", strerror(-r));
        return;
    }
    l->transfers++;
    http_req_on_close(req, on_client_gone, a);
    if (op == OP_PUT) {
        static const http_body_callbacks_t bcbs = {on_put_data, on_put_end};
        http_req_body_read_start(req, &bcbs, a);
    } else if (op == OP_GET) {
        http_req_on_drain(req, on_get_drain, a);
    }
}

static void h_archive_put(http_req_t *req, void *ctx) { archive_start(req, ctx, OP_PUT); }
static void h_archive_get(http_req_t *req, void *ctx) { archive_start(req, ctx, OP_GET); }
static void h_stat(http_req_t *req, void *ctx) { archive_start(req, ctx, OP_STAT); }
static void h_list(http_req_t *req, void *ctx) { archive_start(req, ctx, OP_LIST); }

void api_archive_register(lanesd_t *d)
{
    http_server_route(d->http, "PUT", "/v1/lanes/{name}/archive", HTTP_ROUTE_STREAM_BODY, h_archive_put, d);
    http_server_route(d->http, "GET", "/v1/lanes/{name}/archive", 0, h_archive_get, d);
    http_server_route(d->http, "GET", "/v1/lanes/{name}/files/stat", 0, h_stat, d);
    http_server_route(d->http, "GET", "/v1/lanes/{name}/files/list", 0, h_list, d);
}
