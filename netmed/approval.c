/* approval.c — pending approvals of "ask" connections (see approval.h). */
#include "approval.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

struct approval {
    char id[APPROVAL_ID_LEN + 1];
    char host[256];              /* "" for a literal address */
    netaddr_t addr, src;
    uint16_t port;
    int rule;
    bool intercept, allow_private;
    int timeout_s;
    int64_t created_ms;          /* wall clock, for listings */
    int efd;                     /* the waiter sleeps on it */
    approval_state_t state;
    bool remember;
    bool audited;                /* its final record is written (approvals_stop) */
    char by[32];
    struct approval *next;
};

static const char *const state_names[] = { "pending", "allowed", "denied", "timeout", "abandoned", "denied" };

const char *approval_state_name(approval_state_t s)
{
    return (unsigned)s < sizeof state_names / sizeof *state_names ? state_names[s] : "unknown";
}

void approvals_init(approvals_t *a)
{
    memset(a, 0, sizeof *a);
    pthread_mutex_init(&a->lock, NULL);
}

static int64_t now_ms(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void make_id(char *out)
{
    uint8_t b[APPROVAL_ID_LEN / 2];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t r = getrandom(b + got, sizeof b - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            /* never expected; an id only has to be unique among pending ones */
            uint64_t t = (uint64_t)now_ms(CLOCK_MONOTONIC) ^ ((uint64_t)getpid() << 32);
            memcpy(b, &t, sizeof b < sizeof t ? sizeof b : sizeof t);
            break;
        }
        got += (size_t)r;
    }
    for (size_t i = 0; i < sizeof b; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* JSON of one approval; caller holds the lock (or owns e). */
static json_object *approval_to_json(const approval_t *e)
{
    char s[NETADDR_STRLEN];
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_string(e->id));
    json_object_object_add(o, "host", e->host[0] ? json_object_new_string(e->host) : NULL);
    json_object_object_add(o, "addr", json_object_new_string(netaddr_format(&e->addr, s, sizeof s)));
    json_object_object_add(o, "port", json_object_new_int(e->port));
    json_object_object_add(o, "src", json_object_new_string(netaddr_format(&e->src, s, sizeof s)));
    json_object_object_add(o, "rule", json_object_new_int(e->rule));
    if (e->intercept)
        json_object_object_add(o, "intercept", json_object_new_boolean(1));
    if (e->allow_private)
        json_object_object_add(o, "allowPrivate", json_object_new_boolean(1));
    json_object_object_add(o, "created_ms", json_object_new_int64(e->created_ms));
    json_object_object_add(o, "timeout_s", json_object_new_int(e->timeout_s));
    return o;
}

static void audit_approval(audit_t *au, const approval_t *e, approval_state_t st, int64_t waited_ms)
{
    json_object *o = approval_to_json(e);
    /* "id" names the audit row once lanesd stores the record */
    json_object_object_add(o, "approval_id", json_object_new_string(e->id));
    json_object_object_del(o, "id");
    json_object_object_add(o, "ev", json_object_new_string("approval"));
    json_object_object_add(o, "state", json_object_new_string(approval_state_name(st)));
    if (st != APPROVAL_PENDING) {
        const char *by = e->by[0] ? e->by : st == APPROVAL_TIMEOUT ? "timeout"
                                          : st == APPROVAL_ABANDONED ? "guest"
                                          : "netmed";
        json_object_object_add(o, "by", json_object_new_string(by));
        json_object_object_add(o, "remember", json_object_new_boolean(e->remember));
        json_object_object_add(o, "waited_ms", json_object_new_int64(waited_ms));
        if (st == APPROVAL_FULL)
            json_object_object_add(o, "reason", json_object_new_string("too many pending approvals"));
    }
    audit_emit(au, o);
}

/* Caller holds the lock; e is pending. */
static void settle(approval_t *e, approval_state_t st, bool remember, const char *by)
{
    e->state = st;
    e->remember = remember;
    snprintf(e->by, sizeof e->by, "%s", by);
    uint64_t one = 1;
    while (write(e->efd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

approval_state_t approval_wait(approvals_t *a, audit_t *au, const approval_req_t *r, char *id)
{
    approval_t *e = calloc(1, sizeof *e);
    if (e) {
        e->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (e->efd < 0) {
            free(e);
            e = NULL;
        }
    }
    if (!e) {
        id[0] = '\0';
        return APPROVAL_FULL;
    }
    snprintf(e->host, sizeof e->host, "%s", r->host ? r->host : "");
    e->addr = r->addr;
    e->src = r->src;
    e->port = r->port;
    e->rule = r->rule;
    e->intercept = r->intercept;
    e->allow_private = r->allow_private;
    e->timeout_s = r->timeout_s > 0 ? r->timeout_s : POLICY_APPROVAL_TIMEOUT_S;
    e->created_ms = now_ms(CLOCK_REALTIME);
    int64_t t0 = now_ms(CLOCK_MONOTONIC), deadline = t0 + (int64_t)e->timeout_s * 1000;

    pthread_mutex_lock(&a->lock);
    bool full = a->n >= APPROVALS_MAX;
    if (!full) {
        /* unique among the pending ones */
        for (bool dup = true; dup;) {
            make_id(e->id);
            dup = false;
            for (approval_t *o = a->pending; o && !dup; o = o->next)
                dup = strcmp(o->id, e->id) == 0;
        }
        e->next = a->pending;
        a->pending = e;
        a->n++;
    }
    pthread_mutex_unlock(&a->lock);
    if (full) {
        snprintf(e->by, sizeof e->by, "netmed");
        audit_approval(au, e, APPROVAL_FULL, 0);
        close(e->efd);
        free(e);
        id[0] = '\0';
        return APPROVAL_FULL;
    }
    snprintf(id, APPROVAL_ID_LEN + 1, "%s", e->id);
    audit_approval(au, e, APPROVAL_PENDING, 0);

    approval_state_t st = APPROVAL_PENDING;
    for (;;) {
        int64_t left = deadline - now_ms(CLOCK_MONOTONIC);
        struct pollfd pf[2] = { { .fd = e->efd, .events = POLLIN }, { .fd = r->guest_fd, .events = POLLRDHUP } };
        int n = left <= 0 ? 0 : poll(pf, r->guest_fd >= 0 ? 2 : 1, left > 1000 ? 1000 : (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        pthread_mutex_lock(&a->lock);
        st = e->state;
        if (st == APPROVAL_PENDING) {
            bool gone = n > 0 && r->guest_fd >= 0 && (pf[1].revents & (POLLRDHUP | POLLHUP | POLLERR));
            if (gone)
                st = APPROVAL_ABANDONED;
            else if (n < 0 || now_ms(CLOCK_MONOTONIC) >= deadline)
                st = APPROVAL_TIMEOUT;
            if (st != APPROVAL_PENDING)
                e->state = st;
        }
        if (st != APPROVAL_PENDING) {
            for (approval_t **pp = &a->pending; *pp; pp = &(*pp)->next)
                if (*pp == e) {
                    *pp = e->next;
                    a->n--;
                    break;
                }
        }
        pthread_mutex_unlock(&a->lock);
        if (st != APPROVAL_PENDING)
            break;
    }
    if (!e->audited)
        audit_approval(au, e, st, now_ms(CLOCK_MONOTONIC) - t0);
    close(e->efd);
    free(e);
    return st;
}

int approval_decide(approvals_t *a, const char *id, bool allow, bool remember, const char *by, json_object **info)
{
    int r = -ENOENT;
    pthread_mutex_lock(&a->lock);
    for (approval_t *e = a->pending; e; e = e->next) {
        if (strcmp(e->id, id) != 0 || e->state != APPROVAL_PENDING)
            continue;
        if (info)
            *info = approval_to_json(e);
        settle(e, allow ? APPROVAL_ALLOWED : APPROVAL_DENIED, remember, by);
        r = 0;
        break;
    }
    pthread_mutex_unlock(&a->lock);
    return r;
}

void approvals_stop(approvals_t *a, audit_t *au)
{
    pthread_mutex_lock(&a->lock);
    for (approval_t *e = a->pending; e; e = e->next) {
        if (e->state != APPROVAL_PENDING)
            continue;
        settle(e, APPROVAL_DENIED, false, "netmed stop");
        audit_approval(au, e, APPROVAL_DENIED, now_ms(CLOCK_REALTIME) - e->created_ms);
        e->audited = true;
    }
    pthread_mutex_unlock(&a->lock);
}

json_object *approvals_json(approvals_t *a)
{
    json_object *arr = json_object_new_array();
    pthread_mutex_lock(&a->lock);
    for (approval_t *e = a->pending; e; e = e->next)
        if (e->state == APPROVAL_PENDING)
            json_object_array_add(arr, approval_to_json(e));
    pthread_mutex_unlock(&a->lock);
    return arr;
}

int approvals_recheck(approvals_t *a, const policy_t *p, const netaddr_t *host, size_t nhost)
{
    int n = 0;
    pthread_mutex_lock(&a->lock);
    for (approval_t *e = a->pending; e; e = e->next) {
        if (e->state != APPROVAL_PENDING)
            continue;
        verdict_t v = e->host[0] ? policy_check_name(p, e->host, e->port)
                                 : policy_check_addr(p, &e->addr, e->port, host, nhost);
        if (v.ask)
            continue;
        settle(e, v.allow ? APPROVAL_ALLOWED : APPROVAL_DENIED, false, "policy");
        n++;
    }
    pthread_mutex_unlock(&a->lock);
    return n;
}

char *approval_rule_json(json_object *info, bool allow)
{
    json_object *v, *rule = json_object_new_object();
    int port = json_object_object_get_ex(info, "port", &v) ? json_object_get_int(v) : 0;
    if (port < 1 || port > 65535) {
        json_object_put(rule);
        return NULL;
    }
    if (json_object_object_get_ex(info, "host", &v) && json_object_is_type(v, json_type_string)) {
        json_object_object_add(rule, "host", json_object_new_string(json_object_get_string(v)));
    } else if (json_object_object_get_ex(info, "addr", &v) && json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        char cidr[NETADDR_STRLEN + 8];
        snprintf(cidr, sizeof cidr, "%s/%d", s, strchr(s, ':') ? 128 : 32);
        json_object_object_add(rule, "cidr", json_object_new_string(cidr));
    } else {
        json_object_put(rule);
        return NULL;
    }
    json_object *ports = json_object_new_array();
    json_object_array_add(ports, json_object_new_int(port));
    json_object_object_add(rule, "ports", ports);
    json_object_object_add(rule, "action", json_object_new_string(allow ? "allow" : "deny"));
    /* An allowed connection keeps what the ask rule said about it. */
    if (allow && json_object_object_get_ex(info, "intercept", &v) && json_object_get_boolean(v))
        json_object_object_add(rule, "intercept", json_object_new_boolean(1));
    if (allow && json_object_object_get_ex(info, "allowPrivate", &v) && json_object_get_boolean(v))
        json_object_object_add(rule, "allowPrivate", json_object_new_boolean(1));
    json_object *id;
    char comment[96];
    snprintf(comment, sizeof comment, "remembered from approval %s",
             json_object_object_get_ex(info, "id", &id) ? json_object_get_string(id) : "?");
    json_object_object_add(rule, "comment", json_object_new_string(comment));
    char *out = strdup(json_object_to_json_string_ext(rule, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(rule);
    return out;
}
