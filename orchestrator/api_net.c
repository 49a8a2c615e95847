/* api_net.c — HTTP handlers for a lane's network: policy, secrets, audit.
 *
 *   GET  /v1/lanes/{name}/policy            the lane's policy (default: deny all)
 *   PUT  /v1/lanes/{name}/policy            validate (netmed check-policy), store,
 *                                           and apply live to a running lane
 *   GET  /v1/lanes/{name}/secrets           names, hosts, placeholders — never values
 *   PUT  /v1/lanes/{name}/secrets/{secret}  {"value": "...", "hosts": [...]}
 *   DELETE /v1/lanes/{name}/secrets/{secret}
 *   GET  /v1/lanes/{name}/audit?after=ID&limit=N[&kind=K][&decision=D][&host=GLOB]
 *        [&since=MS][&until=MS][&format=json|jsonl]
 *
 * Secret values are write-only: stored in SQLite and in netmed's 0600 file,
 * never echoed. A running lane picks up secret changes at once: lanesd
 * writes the new file and has netmed reload it (`netmed ctl SOCK
 * secrets-reload`; open connections are kept), answering the request after
 * the reload; a netmed that cannot reload is restarted instead (offline for
 * that moment, never open). The guest gets the new placeholders through
 * LP_CONFIGURE.
 */
#include "lanesd.h"
#include "proc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SECRET_VALUE_MAX 16384

/* ---- policy validation through netmed's own parser ----------------------------------- */

typedef void (*policy_checked_cb)(lanesd_t *d, int ok, const char *msg, void *ud);

typedef struct {
    lanesd_t *d;
    char path[600];
    char last[512];
    policy_checked_cb cb;
    void *ud;
} policy_check_t;

static void on_check_line(proc_run_t *p, const char *line, void *ud)
{
    policy_check_t *c = ud;
    (void)p;
    snprintf(c->last, sizeof(c->last), "%s", line);
}

static void on_check_exit(proc_run_t *p, int status, int sig, const char *out, void *ud)
{
    policy_check_t *c = ud;
    (void)p;
    (void)sig;
    (void)out;
    unlink(c->path);
    c->cb(c->d, status == 0, c->last[0] ? c->last : "invalid policy", c->ud);
    free(c);
}

static int policy_check(lanesd_t *d, const char *json, policy_checked_cb cb, void *ud)
{
    policy_check_t *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->d = d;
    c->cb = cb;
    c->ud = ud;
    char rnd[17];
    util_random_hex(rnd, 8);
    snprintf(c->path, sizeof(c->path), "%s/policy-check-%s.json", d->state_dir, rnd);
    FILE *f = fopen(c->path, "we");
    if (!f || fputs(json, f) < 0 || fclose(f) != 0) {
        free(c);
        return -EIO;
    }
    char bin[600];
    snprintf(bin, sizeof(bin), "%s/netmed", d->bin_dir);
    char *argv[] = {bin, "check-policy", c->path, NULL};
    static const proc_run_callbacks_t cbs = {on_check_line, on_check_exit};
    int r = proc_run_start(d->loop, argv, NULL, &cbs, c, NULL);
    if (r < 0) {
        unlink(c->path);
        free(c);
    }
    return r;
}

/* Parse the request body as a policy object; responds 400 itself. */
static const char *policy_body(http_req_t *req)
{
    json_object *body = http_req_json(req);
    if (!body)
        return NULL;
    if (!json_object_is_type(body, json_type_object)) {
        http_req_respond_error(req, 400, "invalid_policy", "a policy is a JSON object (see docs/policy.md)");
        return NULL;
    }
    return json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
}

/* ---- policy -------------------------------------------------------------------------------- */

static void h_policy_get(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    char *policy = NULL;
    db_lane_policy_get(d, l->id, &policy);
    json_object *o = json_tokener_parse(policy ? policy : net_default_policy);
    free(policy);
    http_req_respond_json(req, 200, o ? o : json_object_new_object());
}

typedef struct {
    http_req_t *req;
    char lane_id[32];
    char *policy;
    int client_gone;
} policy_put_t;

static void on_policy_client_gone(http_req_t *req, void *ud)
{
    policy_put_t *p = ud;
    (void)req;
    p->client_gone = 1;
}

static lane_rt_t *lane_by_id(lanesd_t *d, const char *id)
{
    for (lane_rt_t *l = d->lanes; l; l = l->next)
        if (!strcmp(l->id, id) && !l->freeing)
            return l;
    return NULL;
}

static void policy_put_done(policy_put_t *p, int status, const char *code, const char *msg)
{
    if (p->client_gone)
        http_req_respond_raw(p->req, 499, NULL, NULL, 0);
    else if (code)
        http_req_respond_error(p->req, status, code, "%s", msg);
    else
        http_req_respond_json(p->req, 200, json_tokener_parse(p->policy));
    free(p->policy);
    free(p);
}

static void on_policy_applied(proc_run_t *pr, int status, int sig, const char *out, void *ud)
{
    policy_put_t *p = ud;
    (void)pr;
    (void)sig;
    (void)out;
    if (status != 0)
        policy_put_done(p, 500, "policy_apply_failed",
                        "the policy is stored but netmed did not accept it live; it applies at the next boot");
    else
        policy_put_done(p, 200, NULL, NULL);
}

static void on_policy_checked(lanesd_t *d, int ok, const char *msg, void *ud)
{
    policy_put_t *p = ud;
    if (!ok) {
        policy_put_done(p, 400, "invalid_policy", msg);
        return;
    }
    lane_rt_t *l = lane_by_id(d, p->lane_id);
    if (!l) {
        policy_put_done(p, 404, "lane_not_found", "the lane was removed");
        return;
    }
    if (db_lane_policy_set(d, l->id, p->policy) < 0) {
        policy_put_done(p, 500, "internal", "cannot store the policy");
        return;
    }
    db_event(d, l->id, "policy", "policy changed");
    if (!l->network || l->netmed.pid <= 0 || !lane_state_is_active(l->state)) {
        policy_put_done(p, 200, NULL, NULL);
        return;
    }
    /* Live: write the file netmed restarts from, then tell the running one. */
    net_write_policy_file(l, p->policy);
    char bin[600], sock[700], file[700];
    snprintf(bin, sizeof(bin), "%s/netmed", d->bin_dir);
    snprintf(sock, sizeof(sock), "%s/netmed.sock", l->dir);
    snprintf(file, sizeof(file), "%s/policy.json", l->dir);
    char *argv[] = {bin, "ctl", sock, "policy-set", file, NULL};
    static const proc_run_callbacks_t cbs = {NULL, on_policy_applied};
    if (proc_run_start(d->loop, argv, NULL, &cbs, p, NULL) < 0)
        policy_put_done(p, 500, "policy_apply_failed", "cannot run netmed ctl");
}

static void h_policy_put(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    const char *json = policy_body(req);
    if (!json)
        return;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    if (!l->network) {
        http_req_respond_error(req, 409, "no_network",
                               "lane %s was created with --network none; it has no network to apply a policy to",
                               l->name);
        return;
    }
    policy_put_t *p = calloc(1, sizeof(*p));
    if (!p || !(p->policy = strdup(json))) {
        free(p);
        http_req_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    p->req = req;
    snprintf(p->lane_id, sizeof(p->lane_id), "%s", l->id);
    http_req_on_close(req, on_policy_client_gone, p);
    if (policy_check(d, p->policy, on_policy_checked, p) < 0)
        policy_put_done(p, 500, "internal", "cannot validate the policy (is netmed built?)");
}

/* Used by lane creation: validate, then continue. */
int api_net_policy_validate(lanesd_t *d, const char *json, void (*cb)(lanesd_t *, int, const char *, void *),
                            void *ud)
{
    return policy_check(d, json, cb, ud);
}

/* ---- secrets --------------------------------------------------------------------------------- */

static int secret_name_valid(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > 64 || (n[0] >= '0' && n[0] <= '9'))
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = n[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* A secret change waiting for the running netmed to reload before the
 * client gets its answer (body NULL: 204). */
typedef struct {
    lanesd_t *d;
    http_req_t *req;
    json_object *body;
    char lane_id[32];
    int client_gone;
} secret_apply_t;

static void secret_apply_done(secret_apply_t *a)
{
    if (a->client_gone)
        http_req_respond_raw(a->req, 499, NULL, NULL, 0);
    else if (a->body)
        http_req_respond_json(a->req, 200, json_object_get(a->body));
    else
        http_req_respond_raw(a->req, 204, NULL, NULL, 0);
    json_object_put(a->body);
    free(a);
}

static void on_secret_client_gone(http_req_t *req, void *ud)
{
    secret_apply_t *a = ud;
    (void)req;
    a->client_gone = 1;
}

static void on_secrets_reloaded(proc_run_t *pr, int status, int sig, const char *out, void *ud)
{
    secret_apply_t *a = ud;
    (void)pr;
    (void)sig;
    (void)out;
    lane_rt_t *l = lane_by_id(a->d, a->lane_id);
    if (status != 0 && l && l->netmed.pid > 0) {
        /* A netmed without live reload (or one that refused the file):
         * restart it; the supervisor starts it again from the new file. */
        kill(l->netmed.pid, SIGTERM);
    }
    secret_apply_done(a);
}

/* Apply the lane's secrets to a running lane: netmed re-reads its secrets
 * file over its control socket (open connections are kept), the guest's
 * environment gets the new placeholders; then answer the request. */
static void secrets_apply_live(lane_rt_t *l, http_req_t *req, json_object *body)
{
    secret_apply_t *a = calloc(1, sizeof(*a));
    if (!a) {
        json_object_put(body);
        http_req_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    a->d = l->d;
    a->req = req;
    a->body = body;
    snprintf(a->lane_id, sizeof(a->lane_id), "%s", l->id);
    if (!l->network || l->state != LANE_RUNNING || l->netmed.pid <= 0) {
        secret_apply_done(a);
        return;
    }
    net_write_secrets_file(l);
    vm_lane_configure(l);
    char bin[600], sock[700];
    snprintf(bin, sizeof(bin), "%s/netmed", l->d->bin_dir);
    snprintf(sock, sizeof(sock), "%s/netmed.sock", l->dir);
    char *argv[] = {bin, "ctl", sock, "secrets-reload", NULL};
    static const proc_run_callbacks_t cbs = {NULL, on_secrets_reloaded};
    http_req_on_close(req, on_secret_client_gone, a);
    if (proc_run_start(l->d->loop, argv, NULL, &cbs, a, NULL) < 0) {
        kill(l->netmed.pid, SIGTERM);
        secret_apply_done(a);
    }
}

static void h_secret_put(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    json_object *body = http_req_json(req);
    if (!body)
        return;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    const char *name = http_req_param(req, "secret");
    if (!secret_name_valid(name)) {
        http_req_respond_error(req, 400, "invalid", "secret names are environment variable names: [A-Za-z_][A-Za-z0-9_]{0,63}");
        return;
    }
    json_object *v, *hosts;
    if (!json_object_object_get_ex(body, "value", &v) || !json_object_is_type(v, json_type_string) ||
        json_object_get_string_len(v) == 0 || json_object_get_string_len(v) > SECRET_VALUE_MAX) {
        http_req_respond_error(req, 400, "invalid", "'value' must be a non-empty string of at most %d bytes",
                               SECRET_VALUE_MAX);
        return;
    }
    if (!json_object_object_get_ex(body, "hosts", &hosts) || !json_object_is_type(hosts, json_type_array) ||
        json_object_array_length(hosts) == 0) {
        http_req_respond_error(req, 400, "invalid", "'hosts' must be a non-empty array of host names or patterns");
        return;
    }
    for (size_t i = 0; i < json_object_array_length(hosts); i++) {
        json_object *h = json_object_array_get_idx(hosts, i);
        if (!json_object_is_type(h, json_type_string) || json_object_get_string_len(h) == 0 ||
            json_object_get_string_len(h) > 253) {
            http_req_respond_error(req, 400, "invalid", "hosts[%zu] is not a host name or pattern", i);
            return;
        }
    }
    /* Keep the placeholder stable across updates of the same secret. */
    char placeholder[128] = "";
    json_object *existing = db_secrets_json(d, l->id, 0);
    for (size_t i = 0; i < json_object_array_length(existing); i++) {
        json_object *s = json_object_array_get_idx(existing, i), *n, *ph;
        if (json_object_object_get_ex(s, "name", &n) && !strcmp(json_object_get_string(n), name) &&
            json_object_object_get_ex(s, "placeholder", &ph))
            snprintf(placeholder, sizeof(placeholder), "%s", json_object_get_string(ph));
    }
    json_object_put(existing);
    if (!placeholder[0]) {
        char rnd[17];
        util_random_hex(rnd, 8);
        snprintf(placeholder, sizeof(placeholder), "lanes-secret-%s-%s", name, rnd);
    }
    const char *hosts_json = json_object_to_json_string_ext(hosts, JSON_C_TO_STRING_PLAIN);
    if (db_secret_put(d, l->id, name, json_object_get_string(v), hosts_json, placeholder) < 0) {
        http_req_respond_error(req, 500, "internal", "cannot store the secret");
        return;
    }
    char detail[200];
    snprintf(detail, sizeof(detail), "secret %s set", name); /* never the value */
    db_event(d, l->id, "secret", detail);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(name));
    json_object_object_add(o, "hosts", json_object_get(hosts));
    json_object_object_add(o, "placeholder", json_object_new_string(placeholder));
    secrets_apply_live(l, req, o);
}

static void h_secrets_list(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "secrets", db_secrets_json(d, l->id, 0));
    http_req_respond_json(req, 200, o);
}

static void h_secret_delete(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    const char *name = http_req_param(req, "secret");
    int r = db_secret_delete(d, l->id, name);
    if (r <= 0) {
        http_req_respond_error(req, r < 0 ? 500 : 404, r < 0 ? "internal" : "secret_not_found",
                               "no secret named '%s' in lane %s", name, l->name);
        return;
    }
    secrets_apply_live(l, req, NULL);
}

/* ---- audit ------------------------------------------------------------------------------------- */

/* A query integer in [lo, hi]; absent -> *out untouched. 0 or answers 400. */
static int audit_int(http_req_t *req, const char *key, int64_t lo, int64_t hi, int64_t *out)
{
    const char *v = http_req_query(req, key);
    if (!v)
        return 1;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || errno || n < lo || n > hi) {
        http_req_respond_error(req, 400, "invalid", "query parameter '%s' must be an integer in [%lld, %lld]", key,
                               (long long)lo, (long long)hi);
        return 0;
    }
    *out = n;
    return 1;
}

/* A short token of [A-Za-z0-9._-] (plus '*' and ':' for hosts); else 400. */
static int audit_word(http_req_t *req, const char *key, int is_host, const char **out)
{
    const char *v = http_req_query(req, key);
    if (!v)
        return 1;
    size_t n = strlen(v);
    int ok = n > 0 && n <= 253;
    for (size_t i = 0; ok && i < n; i++) {
        char c = v[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
             c == '_' || (is_host && (c == '*' || c == ':'));
    }
    if (!ok) {
        http_req_respond_error(req, 400, "invalid", "query parameter '%s' has characters outside %s", key,
                               is_host ? "a host name or address (with '*' wildcards)" : "[A-Za-z0-9._-]");
        return 0;
    }
    *out = v;
    return 1;
}

static void h_audit(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    db_audit_query_t q = {.limit = 1000};
    int64_t limit = q.limit;
    if (!audit_int(req, "after", 0, INT64_MAX, &q.after_id) || !audit_int(req, "limit", 1, 100000, &limit) ||
        !audit_int(req, "since", 0, INT64_MAX, &q.since_ms) || !audit_int(req, "until", 0, INT64_MAX, &q.until_ms) ||
        !audit_word(req, "kind", 0, &q.ev) || !audit_word(req, "decision", 0, &q.decision) ||
        !audit_word(req, "host", 1, &q.host_glob))
        return;
    q.limit = (int)limit;
    const char *format = http_req_query(req, "format");
    if (format && strcmp(format, "json") != 0 && strcmp(format, "jsonl") != 0) {
        http_req_respond_error(req, 400, "invalid", "query parameter 'format' must be json or jsonl");
        return;
    }
    net_audit_ingest(l); /* include what netmed wrote in the last second */
    json_object *entries = db_audit_json(d, l->id, &q);
    if (format && !strcmp(format, "jsonl")) {
        http_req_stream_begin(req, 200, "application/x-ndjson", NULL);
        for (size_t i = 0; i < json_object_array_length(entries); i++)
            http_req_stream_json(req, json_object_get(json_object_array_get_idx(entries, i)));
        json_object_put(entries);
        http_req_stream_end(req);
        return;
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "entries", entries);
    http_req_respond_json(req, 200, o);
}

void api_net_register(lanesd_t *d)
{
    http_server_route(d->http, "GET", "/v1/lanes/{name}/policy", 0, h_policy_get, d);
    http_server_route(d->http, "PUT", "/v1/lanes/{name}/policy", 0, h_policy_put, d);
    http_server_route(d->http, "GET", "/v1/lanes/{name}/secrets", 0, h_secrets_list, d);
    http_server_route(d->http, "PUT", "/v1/lanes/{name}/secrets/{secret}", 0, h_secret_put, d);
    http_server_route(d->http, "DELETE", "/v1/lanes/{name}/secrets/{secret}", 0, h_secret_delete, d);
    http_server_route(d->http, "GET", "/v1/lanes/{name}/audit", 0, h_audit, d);
}
