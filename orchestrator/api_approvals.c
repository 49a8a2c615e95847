/* api_approvals.c — human approval of a lane's "ask" connections, and the
 * network events (approvals, policy denials) on the events stream.
 *
 *   GET  /v1/lanes/{name}/approvals        pending approvals (netmed's list)
 *   POST /v1/lanes/{name}/approvals/{id}   {"decision":"allow"|"deny","remember":bool}
 *
 * netmed holds the connections and is the truth about what is pending
 * (netmed/approval.h); both routes ask it over its control socket through
 * `netmed ctl` (like policy-set in api_net.c). A remembered decision comes
 * back as a rule, which is appended to the lane's stored policy and to its
 * policy.json, so it survives a netmed restart and `lanectl policy get`
 * shows it; netmed has already added it to its live policy.
 *
 * Events: every lane whose netmed runs has a watcher on its directory
 * (inotify through uv_fs_event) that reads new lines of audit.jsonl within
 * milliseconds of netmed writing them and turns
 *   {"ev":"approval","state":"pending"}   into kind "approval.pending",
 *   {"ev":"approval","state":<other>}     into kind "approval.decided",
 *   {"ev":"conn"|"http","decision":"deny"} into kind "policy.denied"
 * (db_event: stored and published on /v1/events). An event's detail begins
 * with the approval id. policy.denied is bounded to DENIED_PER_S events per
 * lane per second; the next one says how many were left out. A watcher
 * starts at the file's end (history is in the audit log, not replayed as
 * events). Watchers are reconciled with the lanes every RECONCILE_MS, which
 * also reads the file in case an inotify event was lost.
 *
 * Threading: the uv loop only. Watchers refer to lanes by id, never by
 * pointer, so a removed lane cannot leave a dangling reference.
 */
#include "lanesd.h"
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RECONCILE_MS 500
#define DENIED_PER_S 20
#define READ_MAX (1024 * 1024)

typedef struct watcher {
    struct api_approvals *owner;
    char lane_id[32];
    char path[700];          /* the lane's audit.jsonl */
    uv_fs_event_t fs;
    int64_t offset;          /* bytes of audit.jsonl already looked at */
    int64_t window_ms;       /* policy.denied rate bound */
    int window_count, suppressed;
    int stopping;            /* unlinked, waiting for uv_close */
    struct watcher *next;
} watcher_t;

struct api_approvals {
    lanesd_t *d;
    uv_timer_t reconcile;
    watcher_t *watchers;
};

static lane_rt_t *lane_by_id(lanesd_t *d, const char *id)
{
    for (lane_rt_t *l = d->lanes; l; l = l->next)
        if (!strcmp(l->id, id) && !l->freeing)
            return l;
    return NULL;
}

static int lane_netmed_up(const lane_rt_t *l)
{
    return l->network && l->netmed.pid > 0 && lane_state_is_active(l->state) && !l->freeing;
}

/* ---- audit lines → events ------------------------------------------------------------------ */

static const char *js(json_object *o, const char *k, const char *dflt)
{
    json_object *v;
    return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : dflt;
}

static int ji(json_object *o, const char *k)
{
    json_object *v;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_int(v) : 0;
}

static void denied_event(watcher_t *w, lanesd_t *d, json_object *rec, const char *ev)
{
    int64_t now = util_now_ms();
    if (now - w->window_ms >= 1000) {
        w->window_ms = now;
        w->window_count = 0;
    }
    if (++w->window_count > DENIED_PER_S) {
        w->suppressed++;
        return;
    }
    char detail[600], more[48] = "";
    if (w->suppressed)
        snprintf(more, sizeof(more), " (+%d more not shown)", w->suppressed);
    w->suppressed = 0;
    const char *host = js(rec, "host", NULL), *addr = js(rec, "addr", "?");
    if (!strcmp(ev, "http"))
        snprintf(detail, sizeof(detail), "http %s %s:%d: %s%s", js(rec, "method", "?"), host ? host : addr,
                 ji(rec, "port"), js(rec, "reason", "denied"), more);
    else
        snprintf(detail, sizeof(detail), "%s%s%s:%d: %s%s", host ? host : "", host ? " " : "", addr,
                 ji(rec, "port"), js(rec, "reason", "denied"), more);
    db_event(d, w->lane_id, "policy.denied", detail);
}

static void audit_line(watcher_t *w, lanesd_t *d, const char *line)
{
    json_object *rec = json_tokener_parse(line);
    if (!rec || !json_object_is_type(rec, json_type_object)) {
        json_object_put(rec);
        return;
    }
    const char *ev = js(rec, "ev", "");
    char detail[700];
    if (!strcmp(ev, "approval")) {
        const char *state = js(rec, "state", "?"), *host = js(rec, "host", NULL);
        char dest[400];
        if (host)
            snprintf(dest, sizeof(dest), "%s:%d (%s)", host, ji(rec, "port"), js(rec, "addr", "?"));
        else
            snprintf(dest, sizeof(dest), "%s:%d", js(rec, "addr", "?"), ji(rec, "port"));
        if (!strcmp(state, "pending")) {
            snprintf(detail, sizeof(detail), "%s %s waits for approval (rule %d, up to %d s)", js(rec, "approval_id", "?"), dest,
                     ji(rec, "rule"), ji(rec, "timeout_s"));
            db_event(d, w->lane_id, "approval.pending", detail);
        } else {
            json_object *rem;
            int remember = json_object_object_get_ex(rec, "remember", &rem) && json_object_get_boolean(rem);
            snprintf(detail, sizeof(detail), "%s %s %s by %s%s", js(rec, "approval_id", "-"), dest, state, js(rec, "by", "?"),
                     remember ? " (remembered)" : "");
            db_event(d, w->lane_id, "approval.decided", detail);
        }
    } else if ((!strcmp(ev, "conn") || !strcmp(ev, "http")) && !strcmp(js(rec, "decision", ""), "deny")) {
        denied_event(w, d, rec, ev);
    }
    json_object_put(rec);
}

/* Read the complete new lines of the lane's audit file. */
static void watcher_read(watcher_t *w)
{
    lanesd_t *d = w->owner->d;
    int fd = open(w->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return;
    }
    if (st.st_size < w->offset)
        w->offset = 0; /* a new file */
    while (st.st_size > w->offset) {
        size_t want = (size_t)(st.st_size - w->offset);
        if (want > READ_MAX)
            want = READ_MAX;
        char *buf = malloc(want + 1);
        ssize_t n;
        do
            n = buf ? pread(fd, buf, want, w->offset) : -1;
        while (n < 0 && errno == EINTR);
        if (n <= 0) {
            free(buf);
            break;
        }
        buf[n] = '\0';
        size_t used = 0;
        for (char *line = buf, *nl; (nl = memchr(line, '\n', (size_t)(buf + n - line))); line = nl + 1) {
            *nl = '\0';
            used = (size_t)(nl + 1 - buf);
            if (*line)
                audit_line(w, d, line);
        }
        free(buf);
        if (used == 0) {
            if ((size_t)n == READ_MAX)
                w->offset += n; /* one absurd line: skip it */
            break;                /* a partial line: wait for the rest */
        }
        w->offset += (int64_t)used;
    }
    close(fd);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    watcher_t *w = h->data;
    (void)events;
    if (status < 0 || w->stopping || (filename && strcmp(filename, "audit.jsonl") != 0))
        return;
    watcher_read(w);
}

static void on_watcher_closed(uv_handle_t *h)
{
    free(h->data);
}

static void watcher_start(struct api_approvals *a, lane_rt_t *l)
{
    watcher_t *w = calloc(1, sizeof(*w));
    if (!w)
        return;
    w->owner = a;
    snprintf(w->lane_id, sizeof(w->lane_id), "%s", l->id);
    snprintf(w->path, sizeof(w->path), "%s/audit.jsonl", l->dir);
    struct stat st;
    w->offset = stat(w->path, &st) == 0 ? st.st_size : 0;
    uv_fs_event_init(a->d->loop, &w->fs);
    w->fs.data = w;
    int r = uv_fs_event_start(&w->fs, on_fs_event, l->dir, 0);
    if (r < 0)
        util_log("approvals: cannot watch %s: %s (events come every %d ms)", l->dir, uv_strerror(r), RECONCILE_MS);
    w->next = a->watchers;
    a->watchers = w;
}

static void on_reconcile(uv_timer_t *t)
{
    struct api_approvals *a = t->data;
    lanesd_t *d = a->d;
    for (watcher_t **pp = &a->watchers; *pp;) {
        watcher_t *w = *pp;
        lane_rt_t *l = lane_by_id(d, w->lane_id);
        if (l && lane_netmed_up(l)) {
            watcher_read(w); /* cheap when nothing changed; covers lost notifications */
            pp = &w->next;
            continue;
        }
        if (l)
            watcher_read(w); /* the last words of a stopping netmed */
        *pp = w->next;
        w->stopping = 1;
        uv_fs_event_stop(&w->fs);
        uv_close((uv_handle_t *)&w->fs, on_watcher_closed);
    }
    for (lane_rt_t *l = d->lanes; l; l = l->next) {
        if (!lane_netmed_up(l))
            continue;
        watcher_t *w = a->watchers;
        while (w && strcmp(w->lane_id, l->id) != 0)
            w = w->next;
        if (!w)
            watcher_start(a, l);
    }
}

/* ---- netmed ctl ---------------------------------------------------------------------------- */

typedef struct {
    lanesd_t *d;
    http_req_t *req;
    char lane_id[32];
    char id[40];
    int allow, remember;
    int client_gone;
} ctl_call_t;

static void on_client_gone(http_req_t *req, void *ud)
{
    ctl_call_t *c = ud;
    (void)req;
    c->client_gone = 1;
}

/* Run `netmed ctl SOCK ARGS...` for lane l; cbs must outlive the run. */
static int ctl_start(ctl_call_t *c, lane_rt_t *l, char **args, const proc_run_callbacks_t *cbs)
{
    char bin[600], sock[700];
    snprintf(bin, sizeof(bin), "%s/netmed", c->d->bin_dir);
    snprintf(sock, sizeof(sock), "%s/netmed.sock", l->dir);
    char *argv[10] = {bin, "ctl", sock};
    int n = 3;
    for (; n < 9 && args[n - 3]; n++)
        argv[n] = args[n - 3];
    argv[n] = NULL;
    return proc_run_start(c->d->loop, argv, NULL, cbs, c, NULL);
}

/* The JSON reply netmed ctl printed, or NULL. */
static json_object *ctl_reply(const char *out)
{
    json_object *o = out ? json_tokener_parse(out) : NULL;
    if (o && !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        o = NULL;
    }
    return o;
}

static int ctl_gone(ctl_call_t *c)
{
    if (!c->client_gone)
        return 0;
    http_req_respond_raw(c->req, 499, NULL, NULL, 0);
    free(c);
    return 1;
}

/* ---- GET /v1/lanes/{name}/approvals ------------------------------------------------------ */

static void on_list_exit(proc_run_t *p, int status, int sig, const char *out, void *ud)
{
    ctl_call_t *c = ud;
    (void)p;
    (void)sig;
    if (ctl_gone(c))
        return;
    json_object *o = ctl_reply(out), *list = NULL;
    if (status != 0 || !o || !json_object_object_get_ex(o, "approvals", &list)) {
        json_object_put(o);
        http_req_respond_error(c->req, 502, "netmed_unavailable", "cannot list approvals: netmed did not answer");
        free(c);
        return;
    }
    json_object *r = json_object_new_object();
    json_object_object_add(r, "approvals", json_object_get(list));
    json_object_put(o);
    http_req_respond_json(c->req, 200, r);
    free(c);
}

static void h_list(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    if (!lane_netmed_up(l)) {
        /* nothing can wait without a running netmed */
        json_object *r = json_object_new_object();
        json_object_object_add(r, "approvals", json_object_new_array());
        http_req_respond_json(req, 200, r);
        return;
    }
    ctl_call_t *c = calloc(1, sizeof(*c));
    if (!c) {
        http_req_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    c->d = d;
    c->req = req;
    snprintf(c->lane_id, sizeof(c->lane_id), "%s", l->id);
    http_req_on_close(req, on_client_gone, c);
    char *args[] = {"approvals", NULL};
    static const proc_run_callbacks_t cbs = {NULL, on_list_exit};
    if (ctl_start(c, l, args, &cbs) < 0) {
        http_req_respond_error(req, 500, "internal", "cannot run netmed ctl");
        free(c);
    }
}

/* ---- POST /v1/lanes/{name}/approvals/{id} -------------------------------------------------- */

/* Append a remembered rule to the lane's stored policy (and netmed's file). */
static int policy_remember(lanesd_t *d, lane_rt_t *l, json_object *rule, const char *id)
{
    char *cur = NULL;
    db_lane_policy_get(d, l->id, &cur);
    json_object *pol = json_tokener_parse(cur ? cur : net_default_policy), *allow;
    free(cur);
    if (!pol || !json_object_is_type(pol, json_type_object)) {
        json_object_put(pol);
        return -EINVAL;
    }
    if (!json_object_object_get_ex(pol, "allow", &allow)) {
        allow = json_object_new_array();
        json_object_object_add(pol, "allow", allow);
    }
    if (!json_object_is_type(allow, json_type_array)) {
        json_object_put(pol);
        return -EINVAL;
    }
    json_object_array_add(allow, json_object_get(rule));
    const char *s = json_object_to_json_string_ext(pol, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    int r = db_lane_policy_set(d, l->id, s);
    if (r == 0) {
        net_write_policy_file(l, s);
        char detail[120];
        snprintf(detail, sizeof(detail), "policy changed (rule remembered from approval %s)", id);
        db_event(d, l->id, "policy", detail);
    }
    json_object_put(pol);
    return r;
}

static void on_decide_exit(proc_run_t *p, int status, int sig, const char *out, void *ud)
{
    ctl_call_t *c = ud;
    (void)p;
    (void)sig;
    if (ctl_gone(c))
        return;
    json_object *o = ctl_reply(out), *ok = NULL, *rule = NULL, *approval = NULL;
    int good = o && json_object_object_get_ex(o, "ok", &ok) && json_object_get_boolean(ok);
    if (!good) {
        const char *err = o ? js(o, "error", NULL) : NULL;
        if (err && strstr(err, "no pending approval"))
            http_req_respond_error(c->req, 404, "approval_not_found",
                                   "no pending approval %s (already decided, timed out, or never asked)", c->id);
        else
            http_req_respond_error(c->req, 502, "netmed_unavailable", "netmed did not take the decision: %s",
                                   err ? err : status != 0 ? "netmed ctl failed" : "no reply");
        json_object_put(o);
        free(c);
        return;
    }
    json_object_object_get_ex(o, "approval", &approval);
    json_object_object_get_ex(o, "rule", &rule);
    json_object *r = json_object_new_object();
    json_object_object_add(r, "id", json_object_new_string(c->id));
    json_object_object_add(r, "decision", json_object_new_string(c->allow ? "allow" : "deny"));
    json_object_object_add(r, "remember", json_object_new_boolean(c->remember));
    json_object_object_add(r, "approval", approval ? json_object_get(approval) : NULL);
    if (rule && json_object_is_type(rule, json_type_object)) {
        lane_rt_t *l = lane_by_id(c->d, c->lane_id);
        if (!l || policy_remember(c->d, l, rule, c->id) < 0) {
            json_object_put(r);
            json_object_put(o);
            http_req_respond_error(c->req, 500, "policy_not_stored",
                                   "the decision was taken and netmed applies the rule, but it could not be stored "
                                   "in the lane's policy");
            free(c);
            return;
        }
        json_object_object_add(r, "rule", json_object_get(rule));
    } else {
        json_object_object_add(r, "rule", NULL);
    }
    json_object_put(o);
    http_req_respond_json(c->req, 200, r);
    free(c);
}

static int approval_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 32)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return 0;
    return 1;
}

static void h_decide(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    json_object *body = http_req_json(req);
    if (!body)
        return;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    const char *id = http_req_param(req, "id");
    if (!approval_id_valid(id)) {
        http_req_respond_error(req, 400, "invalid", "an approval id is lowercase hex (see GET .../approvals)");
        return;
    }
    json_object *dec, *rem = NULL;
    const char *ds = json_object_is_type(body, json_type_object) && json_object_object_get_ex(body, "decision", &dec) &&
                             json_object_is_type(dec, json_type_string)
                         ? json_object_get_string(dec)
                         : "";
    if (strcmp(ds, "allow") != 0 && strcmp(ds, "deny") != 0) {
        http_req_respond_error(req, 400, "invalid", "'decision' must be \"allow\" or \"deny\"");
        return;
    }
    if (json_object_object_get_ex(body, "remember", &rem) && !json_object_is_type(rem, json_type_boolean)) {
        http_req_respond_error(req, 400, "invalid", "'remember' must be a boolean");
        return;
    }
    json_object_object_foreach(body, key, val) {
        (void)val;
        if (strcmp(key, "decision") != 0 && strcmp(key, "remember") != 0) {
            http_req_respond_error(req, 400, "invalid", "unknown field '%s' (decision, remember)", key);
            return;
        }
    }
    if (!lane_netmed_up(l)) {
        http_req_respond_error(req, 404, "approval_not_found",
                               "no pending approval %s: lane %s has no running network mediator", id, l->name);
        return;
    }
    ctl_call_t *c = calloc(1, sizeof(*c));
    if (!c) {
        http_req_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    c->d = d;
    c->req = req;
    c->allow = !strcmp(ds, "allow");
    c->remember = rem && json_object_get_boolean(rem);
    snprintf(c->lane_id, sizeof(c->lane_id), "%s", l->id);
    snprintf(c->id, sizeof(c->id), "%s", id);
    http_req_on_close(req, on_client_gone, c);
    vm_lane_touch(l);
    char *args[] = {"approval-decide", c->id, c->allow ? "allow" : "deny", "by=api", c->remember ? "remember" : NULL,
                    NULL};
    static const proc_run_callbacks_t cbs = {NULL, on_decide_exit};
    if (ctl_start(c, l, args, &cbs) < 0) {
        http_req_respond_error(req, 500, "internal", "cannot run netmed ctl");
        free(c);
    }
}

void api_approvals_register(lanesd_t *d)
{
    struct api_approvals *a = calloc(1, sizeof(*a));
    if (a) {
        a->d = d;
        uv_timer_init(d->loop, &a->reconcile);
        a->reconcile.data = a;
        uv_timer_start(&a->reconcile, on_reconcile, RECONCILE_MS, RECONCILE_MS);
        uv_unref((uv_handle_t *)&a->reconcile); /* never keeps the loop alive on shutdown */
        d->approvals = a;
    }
    http_server_route(d->http, "GET", "/v1/lanes/{name}/approvals", 0, h_list, d);
    http_server_route(d->http, "POST", "/v1/lanes/{name}/approvals/{id}", 0, h_decide, d);
}
