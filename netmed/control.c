/* control.c — netmed's control socket (unix, 0600) and its client.
 *
 * Protocol: one JSON request line, one JSON reply line, then close.
 *   {"cmd":"policy-set","policy":{...}}  → {"ok":true} | {"ok":false,"error":"..."}
 *   {"cmd":"policy-get"}                 → {"ok":true,"policy":{"dns":..,"rules":N}}
 *   {"cmd":"stats"}                      → {"ok":true,"stats":{...}}
 *   {"cmd":"secrets-reload"}             → {"ok":true,"secrets":N}: re-read the
 *     --secrets file; open connections are kept and use the new set from
 *     their next request (intercepted) or next read (splice)
 *   {"cmd":"approvals"}                  → {"ok":true,"approvals":[{"id",...}]}
 *   {"cmd":"approval-decide","id":ID,"decision":"allow"|"deny",
 *    "remember":bool,"by":WHO}          → {"ok":true,"approval":{...},"rule":{...}|null}
 *     remember: the rule answering this host (or address) and port is
 *     appended to the live policy (and returned, for lanesd to persist);
 *     other pending approvals it answers are released with it.
 * Served on the main thread; each client gets 2 s to send its line.
 */
#include "netmed.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CTL_MAX (1 << 20)

int control_listen(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    unlink(path);
    mode_t old = umask(077);
    int r = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (r < 0 || listen(fd, 16) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static void reply(int fd, json_object *o)
{
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    size_t n = strlen(s);
    char *line = malloc(n + 1);
    if (line) {
        memcpy(line, s, n);
        line[n] = '\n';
        size_t off = 0;
        while (off < n + 1) {
            ssize_t w = send(fd, line + off, n + 1 - off, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            off += (size_t)w;
        }
    }
    free(line);
    json_object_put(o);
}

static json_object *err_obj(const char *msg)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(0));
    json_object_object_add(o, "error", json_object_new_string(msg));
    return o;
}

/* Pending approvals the current policy now answers are released. */
static void approvals_recheck_live(netmed_t *m)
{
    netaddr_t host[NETMED_MAX_HOST_ADDRS];
    size_t nhost = netmed_host_addrs(m, host, NETMED_MAX_HOST_ADDRS);
    policy_t *p = netmed_policy_get(m);
    approvals_recheck(&m->approvals, p, host, nhost);
    policy_unref(p);
}

static json_object *approval_decide_cmd(netmed_t *m, json_object *req)
{
    json_object *v;
    const char *id = json_object_object_get_ex(req, "id", &v) ? json_object_get_string(v) : NULL;
    const char *dec = json_object_object_get_ex(req, "decision", &v) ? json_object_get_string(v) : "";
    bool remember = json_object_object_get_ex(req, "remember", &v) && json_object_get_boolean(v);
    const char *by = json_object_object_get_ex(req, "by", &v) ? json_object_get_string(v) : "control";
    if (!id || (strcmp(dec, "allow") != 0 && strcmp(dec, "deny") != 0))
        return err_obj("approval-decide needs \"id\" and \"decision\": \"allow\" or \"deny\"");
    bool allow = strcmp(dec, "allow") == 0;
    char who[32];
    snprintf(who, sizeof who, "%s", by);
    json_object *info = NULL;
    if (approval_decide(&m->approvals, id, allow, remember, who, &info) < 0)
        return err_obj("no pending approval with that id (decided, timed out or never asked)");
    json_object *rule = NULL;
    if (remember) {
        /* The held connection is already released; the rule covers the
         * next ones and answers other pending approvals for the same
         * destination. */
        char *rj = approval_rule_json(info, allow), err[256] = "";
        policy_t *cur = netmed_policy_get(m), *np = NULL;
        int r = rj ? policy_add_rule(cur, rj, &np, err, sizeof err) : -EINVAL;
        policy_unref(cur);
        if (r < 0) {
            free(rj);
            json_object_put(info);
            return err_obj(err[0] ? err : "cannot build the rule to remember");
        }
        netmed_policy_set(m, np);
        json_object *a = json_object_new_object();
        json_object_object_add(a, "ev", json_object_new_string("policy"));
        json_object_object_add(a, "rules", json_object_new_int((int)np->nrules));
        json_object_object_add(a, "reason", json_object_new_string("remembered approval"));
        audit_emit(m->audit, a);
        approvals_recheck_live(m);
        rule = json_tokener_parse(rj);
        free(rj);
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(1));
    json_object_object_add(o, "approval", info);
    json_object_object_add(o, "rule", rule);
    return o;
}

#define ST(name) json_object_object_add(st, #name, json_object_new_int64((int64_t)__atomic_load_n(&m->stats.name, __ATOMIC_RELAXED)))

void control_serve_one(netmed_t *m, int cfd)
{
    char *buf = malloc(CTL_MAX);
    size_t n = 0;
    if (!buf) {
        close(cfd);
        return;
    }
    while (n < CTL_MAX && !memchr(buf, '\n', n)) {
        struct pollfd p = { .fd = cfd, .events = POLLIN };
        if (poll(&p, 1, 2000) <= 0)
            break;
        ssize_t k = recv(cfd, buf + n, CTL_MAX - n, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    json_object *req = json_tokener_parse(n ? (buf[n < CTL_MAX ? n : n - 1] = '\0', buf) : "");
    json_object *cmd = NULL;
    if (!req || !json_object_object_get_ex(req, "cmd", &cmd)) {
        reply(cfd, err_obj("expected {\"cmd\": ...}"));
        goto out;
    }
    const char *c = json_object_get_string(cmd);
    if (strcmp(c, "policy-set") == 0) {
        json_object *pj;
        if (!json_object_object_get_ex(req, "policy", &pj)) {
            reply(cfd, err_obj("policy-set needs \"policy\""));
            goto out;
        }
        const char *ps = json_object_to_json_string_ext(pj, JSON_C_TO_STRING_PLAIN);
        policy_t *p;
        char err[256];
        if (policy_parse(ps, strlen(ps), &p, err, sizeof err) < 0) {
            reply(cfd, err_obj(err));
            goto out;
        }
        netmed_policy_set(m, p);
        netmed_refresh_host_addrs(m);
        json_object *a = json_object_new_object();
        json_object_object_add(a, "ev", json_object_new_string("policy"));
        json_object_object_add(a, "rules", json_object_new_int((int)p->nrules));
        audit_emit(m->audit, a);
        approvals_recheck_live(m);
        json_object *o = json_object_new_object();
        json_object_object_add(o, "ok", json_object_new_boolean(1));
        reply(cfd, o);
    } else if (strcmp(c, "policy-get") == 0) {
        policy_t *p = netmed_policy_get(m);
        static const char *modes[] = { "synthetic", "trusted", "open" };
        json_object *o = json_object_new_object(), *po = json_object_new_object();
        json_object_object_add(po, "mode", json_object_new_string(p->open ? "open" : "allowlist"));
        json_object_object_add(po, "dns", json_object_new_string(modes[p->dns_mode]));
        json_object_object_add(po, "rules", json_object_new_int((int)p->nrules));
        json_object_object_add(po, "blockPrivateRanges", json_object_new_boolean(p->block_private));
        policy_unref(p);
        json_object_object_add(o, "ok", json_object_new_boolean(1));
        json_object_object_add(o, "policy", po);
        reply(cfd, o);
    } else if (strcmp(c, "secrets-reload") == 0) {
        char err[512];
        int count = netmed_secrets_reload(m, err, sizeof err);
        if (count < 0) {
            reply(cfd, err_obj(err));
            goto out;
        }
        json_object *a = json_object_new_object();
        json_object_object_add(a, "ev", json_object_new_string("secrets"));
        json_object_object_add(a, "count", json_object_new_int(count));
        audit_emit(m->audit, a);
        json_object *o = json_object_new_object();
        json_object_object_add(o, "ok", json_object_new_boolean(1));
        json_object_object_add(o, "secrets", json_object_new_int(count));
        reply(cfd, o);
    } else if (strcmp(c, "stats") == 0) {
        json_object *o = json_object_new_object(), *st = json_object_new_object();
        ST(conns_allowed);
        ST(conns_denied);
        ST(active);
        ST(dns_queries);
        ST(dns_refused);
        ST(http_requests);
        ST(http_blocked);
        ST(bytes_up);
        ST(bytes_down);
        ST(secrets_injected);
        ST(secrets_masked);
        json_object_object_add(o, "ok", json_object_new_boolean(1));
        json_object_object_add(o, "stats", st);
        reply(cfd, o);
    } else if (strcmp(c, "approvals") == 0) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "ok", json_object_new_boolean(1));
        json_object_object_add(o, "approvals", approvals_json(&m->approvals));
        reply(cfd, o);
    } else if (strcmp(c, "approval-decide") == 0) {
        reply(cfd, approval_decide_cmd(m, req));
    } else {
        reply(cfd, err_obj("unknown cmd (policy-set, policy-get, stats, approvals, approval-decide)"));
    }
out:
    json_object_put(req);
    free(buf);
    close(cfd);
}

/* netmed ctl SOCK stats | policy-get | policy-set FILE | approvals
 *                | approval-decide ID allow|deny [remember] [by=WHO] */
int control_client(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: netmed ctl SOCK stats|policy-get|policy-set FILE|approvals\n"
                        "       netmed ctl SOCK approval-decide ID allow|deny [remember] [by=WHO]\n");
        return 2;
    }
    json_object *req = json_object_new_object();
    json_object_object_add(req, "cmd", json_object_new_string(argv[2]));
    if (strcmp(argv[2], "approval-decide") == 0) {
        bool remember = false, ok = argc >= 5;
        const char *by = "ctl";
        for (int i = 5; ok && i < argc; i++) {
            if (strcmp(argv[i], "remember") == 0)
                remember = true;
            else if (strncmp(argv[i], "by=", 3) == 0 && argv[i][3])
                by = argv[i] + 3;
            else
                ok = false;
        }
        if (!ok) {
            fprintf(stderr, "usage: netmed ctl SOCK approval-decide ID allow|deny [remember] [by=WHO]\n");
            json_object_put(req);
            return 2;
        }
        json_object_object_add(req, "id", json_object_new_string(argv[3]));
        json_object_object_add(req, "decision", json_object_new_string(argv[4]));
        json_object_object_add(req, "remember", json_object_new_boolean(remember));
        json_object_object_add(req, "by", json_object_new_string(by));
    }
    if (strcmp(argv[2], "policy-set") == 0) {
        json_object *p = argc > 3 ? json_object_from_file(argv[3]) : NULL;
        if (!p) {
            fprintf(stderr, "netmed ctl: policy-set: cannot read JSON from %s\n", argc > 3 ? argv[3] : "(none)");
            json_object_put(req);
            return 2;
        }
        json_object_object_add(req, "policy", p);
    }
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", argv[1]);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "netmed ctl: connect %s: %m\n", argv[1]);
        json_object_put(req);
        return 1;
    }
    reply(fd, req);
    char buf[65536];
    size_t n = 0;
    ssize_t k;
    while (n < sizeof buf - 1 && ((k = recv(fd, buf + n, sizeof buf - 1 - n, 0)) > 0 || (k < 0 && errno == EINTR)))
        if (k > 0)
            n += (size_t)k;
    close(fd);
    buf[n] = '\0';
    fputs(buf, stdout);
    json_object *o = json_tokener_parse(buf);
    json_object *ok;
    int rc = o && json_object_object_get_ex(o, "ok", &ok) && json_object_get_boolean(ok) ? 0 : 1;
    json_object_put(o);
    return rc;
}
