/* test_netmed_approval.c — "ask" rules and human approval in netmed:
 * parsing of rule actions, onUnmatched and approvalTimeoutSeconds, precedence
 * (deny > allow > ask) for names and CIDRs, DNS visibility, adding a
 * remembered rule, and the pending-approval lifecycle with real threads
 * (decided, unknown id, timeout, guest gone, answered by a policy change,
 * the pending bound) and what it audits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "approval.h"
#include "audit.h"
#include "policy.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static policy_t *P(const char *json)
{
    policy_t *p = NULL;
    char err[256] = "";
    int r = policy_parse(json, strlen(json), &p, err, sizeof err);
    if (r < 0)
        fprintf(stderr, "parse failed: %s (%s)\n", err, json);
    assert_int_equal(r, 0);
    return p;
}

static void test_parse_actions(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        int ok;
    } t[] = {
        { "{\"allow\":[{\"host\":\"a.example\",\"ports\":[443],\"action\":\"ask\"}]}", 1 },
        { "{\"allow\":[{\"host\":\"a.example\",\"action\":\"deny\"}]}", 1 },
        { "{\"allow\":[{\"cidr\":\"198.51.100.0/24\",\"action\":\"ask\"}]}", 1 },
        { "{\"allow\":[{\"host\":\"a.example\",\"action\":\"allow\"}]}", 1 },
        { "{\"allow\":[{\"host\":\"a.example\",\"action\":\"maybe\"}]}", 0 },
        { "{\"allow\":[{\"host\":\"a.example\",\"action\":true}]}", 0 },
        { "{\"allow\":[{\"host\":\"a.example\",\"action\":\"ASK\"}]}", 0 },
        { "{\"approvalTimeoutSeconds\":5}", 1 },
        { "{\"approvalTimeoutSeconds\":3600}", 1 },
        { "{\"approvalTimeoutSeconds\":0}", 0 },
        { "{\"approvalTimeoutSeconds\":3601}", 0 },
        { "{\"approvalTimeoutSeconds\":\"5\"}", 0 },
        { "{\"approvalTimeoutSeconds\":1.5}", 0 },
        { "{\"approvalTimeout\":5}", 0 },
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        policy_t *p = NULL;
        char err[256] = "";
        int r = policy_parse(t[i].json, strlen(t[i].json), &p, err, sizeof err);
        if ((r == 0) != t[i].ok)
            fail_msg("%s: expected %s, got %d (%s)", t[i].json, t[i].ok ? "ok" : "error", r, err);
        if (r < 0)
            assert_non_null(strstr(err, strstr(t[i].json, "approval") ? "approval" : "action"));
        policy_unref(p);
    }
    policy_t *p = P("{}");
    assert_int_equal(p->approval_timeout_s, POLICY_APPROVAL_TIMEOUT_S);
    policy_unref(p);
    p = P("{\"approvalTimeoutSeconds\":7}");
    assert_int_equal(p->approval_timeout_s, 7);
    policy_unref(p);
}

static void test_precedence_names(void **state)
{
    (void)state;
    /* Order in the list must not matter: deny > allow > ask. */
    policy_t *p = P("{\"allow\":["
                    "{\"host\":\"*.example.com\",\"ports\":[443],\"action\":\"ask\",\"intercept\":true},"
                    "{\"host\":\"api.example.com\",\"ports\":[443]},"
                    "{\"host\":\"evil.example.com\",\"action\":\"deny\"},"
                    "{\"host\":\"evil.example.com\",\"ports\":[443]},"
                    "{\"host\":\"only-deny.example\",\"action\":\"deny\"}]}");
    verdict_t v = policy_check_name(p, "www.example.com", 443);
    assert_false(v.allow);
    assert_true(v.ask);
    assert_false(v.denied);
    assert_int_equal(v.rule, 0);
    assert_true(v.intercept);
    v = policy_check_name(p, "www.example.com", 80);      /* ask rule is for 443 only */
    assert_false(v.allow);
    assert_false(v.ask);
    v = policy_check_name(p, "api.example.com", 443);     /* allow beats ask */
    assert_true(v.allow);
    assert_false(v.ask);
    assert_int_equal(v.rule, 1);
    v = policy_check_name(p, "evil.example.com", 443);    /* deny beats allow and ask */
    assert_false(v.allow);
    assert_false(v.ask);
    assert_true(v.denied);
    assert_int_equal(v.rule, 2);
    /* DNS: ask names resolve, deny-only names do not */
    assert_true(policy_name_allowed(p, "www.example.com"));
    assert_false(policy_name_allowed(p, "only-deny.example"));
    assert_false(policy_name_allowed(p, "other.example"));
    policy_unref(p);

    /* open mode: an ask rule still asks, a deny rule still denies */
    p = P("{\"mode\":\"open\",\"allow\":[{\"host\":\"a.example\",\"action\":\"ask\"},"
          "{\"host\":\"b.example\",\"action\":\"deny\"}]}");
    assert_true(policy_check_name(p, "a.example", 443).ask);
    assert_true(policy_check_name(p, "b.example", 443).denied);
    assert_true(policy_check_name(p, "c.example", 443).allow);
    policy_unref(p);
}

static void test_precedence_cidr(void **state)
{
    (void)state;
    policy_t *p = P("{\"allow\":["
                    "{\"cidr\":\"198.51.100.0/24\",\"ports\":[8080],\"action\":\"ask\"},"
                    "{\"cidr\":\"198.51.100.7/32\",\"ports\":[8080]},"
                    "{\"cidr\":\"198.51.100.9/32\",\"action\":\"deny\"},"
                    "{\"cidr\":\"0.0.0.0/0\",\"ports\":[22],\"action\":\"ask\"}]}");
    netaddr_t a;
    assert_int_equal(netaddr_parse("198.51.100.2", &a), 0);
    verdict_t v = policy_check_addr(p, &a, 8080, NULL, 0);
    assert_true(v.ask);
    assert_int_equal(v.rule, 0);
    assert_int_equal(netaddr_parse("198.51.100.7", &a), 0);
    v = policy_check_addr(p, &a, 8080, NULL, 0);
    assert_true(v.allow);
    assert_int_equal(v.rule, 1);
    assert_int_equal(netaddr_parse("198.51.100.9", &a), 0);
    v = policy_check_addr(p, &a, 8080, NULL, 0);
    assert_true(v.denied);
    assert_false(v.ask);
    /* a wide ask rule never asks about a private address */
    assert_int_equal(netaddr_parse("10.0.0.1", &a), 0);
    v = policy_check_addr(p, &a, 22, NULL, 0);
    assert_false(v.ask);
    assert_false(v.allow);
    assert_int_equal(netaddr_parse("203.0.113.5", &a), 0);
    assert_true(policy_check_addr(p, &a, 22, NULL, 0).ask);
    policy_unref(p);
}

static void test_unmatched(void **state)
{
    (void)state;
    char err[256];
    policy_t *bad = NULL;
    const char *j1 = "{\"onUnmatched\":\"maybe\"}", *j2 = "{\"mode\":\"open\",\"onUnmatched\":\"ask\"}";
    assert_int_equal(policy_parse(j1, strlen(j1), &bad, err, sizeof err), -EINVAL);
    assert_int_equal(policy_parse(j2, strlen(j2), &bad, err, sizeof err), -EINVAL);
    assert_null(bad);
    policy_t *p = P("{\"onUnmatched\":\"deny\"}");
    assert_false(policy_check_name(p, "x.example", 443).ask);
    policy_unref(p);

    p = P("{\"onUnmatched\":\"ask\",\"allow\":[{\"host\":\"ok.example\",\"ports\":[443]},"
          "{\"host\":\"bad.example\",\"action\":\"deny\"}]}");
    verdict_t v = policy_check_name(p, "x.example", 443);
    assert_true(v.ask);
    assert_int_equal(v.rule, -1);
    assert_true(policy_check_name(p, "ok.example", 443).allow);
    assert_true(policy_check_name(p, "ok.example", 80).ask);        /* the rule covers 443 only */
    assert_true(policy_check_name(p, "bad.example", 443).denied);
    assert_true(policy_name_allowed(p, "anything.example"));       /* synthetic: resolves locally */
    netaddr_t a;
    netaddr_parse("203.0.113.9", &a);
    assert_true(policy_check_addr(p, &a, 22, NULL, 0).ask);
    netaddr_parse("10.1.2.3", &a);                                  /* private: never asked about */
    v = policy_check_addr(p, &a, 22, NULL, 0);
    assert_false(v.ask);
    assert_false(v.allow);
    netaddr_parse("169.254.169.254", &a);
    assert_false(policy_check_addr(p, &a, 80, NULL, 0).ask);
    policy_unref(p);

    /* trusted DNS: unmatched names are never looked up upstream */
    p = P("{\"onUnmatched\":\"ask\",\"dns\":{\"mode\":\"trusted\",\"servers\":[\"192.0.2.53\"]}}");
    assert_false(policy_name_allowed(p, "anything.example"));
    policy_unref(p);
}

static void test_add_rule(void **state)
{
    (void)state;
    policy_t *p = P("{\"dns\":{\"mode\":\"synthetic\"},\"allow\":[{\"host\":\"*.example.com\",\"action\":\"ask\"}]}");
    policy_t *np = NULL;
    char err[256] = "";
    json_object *info = json_tokener_parse("{\"id\":\"abc\",\"host\":\"www.example.com\",\"port\":443,"
                                           "\"addr\":\"198.18.0.1\",\"intercept\":true}");
    char *rule = approval_rule_json(info, true);
    assert_non_null(rule);
    assert_non_null(strstr(rule, "\"host\":\"www.example.com\""));
    assert_non_null(strstr(rule, "\"action\":\"allow\""));
    assert_non_null(strstr(rule, "\"intercept\":true"));
    assert_int_equal(policy_add_rule(p, rule, &np, err, sizeof err), 0);
    assert_int_equal(np->nrules, 2);
    assert_true(policy_check_name(np, "www.example.com", 443).allow);
    assert_true(policy_check_name(np, "www.example.com", 443).intercept);
    assert_true(policy_check_name(np, "www.example.com", 80).ask);   /* only that port */
    assert_true(policy_check_name(p, "www.example.com", 443).ask);   /* p unchanged */
    free(rule);
    /* a remembered deny beats the ask rule; deny rules carry no intercept */
    rule = approval_rule_json(info, false);
    assert_null(strstr(rule, "intercept"));
    policy_t *np2 = NULL;
    assert_int_equal(policy_add_rule(np, rule, &np2, err, sizeof err), 0);
    assert_true(policy_check_name(np2, "www.example.com", 443).denied);
    free(rule);
    json_object_put(info);
    /* a literal address becomes a /32 CIDR rule */
    info = json_tokener_parse("{\"id\":\"x\",\"host\":null,\"addr\":\"198.51.100.2\",\"port\":8080}");
    rule = approval_rule_json(info, true);
    assert_non_null(strstr(rule, "\"cidr\":\"198.51.100.2/32\""));
    free(rule);
    json_object_put(info);
    /* a bad rule leaves no new policy */
    policy_t *bad = NULL;
    assert_int_equal(policy_add_rule(p, "{\"host\":\"x\",\"action\":\"perhaps\"}", &bad, err, sizeof err), -EINVAL);
    assert_null(bad);
    policy_unref(np2);
    policy_unref(np);
    policy_unref(p);
}

/* ---- pending approvals with real threads --------------------------------- */

typedef struct {
    approvals_t *a;
    audit_t *au;
    approval_req_t req;
    char id[APPROVAL_ID_LEN + 1];
    approval_state_t result;
    pthread_t tid;
} waiter_t;

static void *waiter_main(void *arg)
{
    waiter_t *w = arg;
    w->result = approval_wait(w->a, w->au, &w->req, w->id);
    return NULL;
}

static void waiter_start(waiter_t *w, approvals_t *a, audit_t *au, const char *host, int port, int timeout_s, int fd)
{
    memset(w, 0, sizeof *w);
    w->a = a;
    w->au = au;
    w->req.host = host;
    netaddr_parse("198.18.0.5", &w->req.addr);
    netaddr_parse("10.0.2.2", &w->req.src);
    w->req.port = (uint16_t)port;
    w->req.rule = 0;
    w->req.guest_fd = fd;
    w->req.timeout_s = timeout_s;
    w->result = APPROVAL_PENDING;
    assert_int_equal(pthread_create(&w->tid, NULL, waiter_main, w), 0);
}

/* Wait until n approvals are pending; returns the array (new reference). */
static json_object *pending_wait(approvals_t *a, size_t n)
{
    for (int i = 0; i < 500; i++) {
        json_object *arr = approvals_json(a);
        if (json_object_array_length(arr) == n)
            return arr;
        json_object_put(arr);
        usleep(10000);
    }
    fail_msg("never saw %zu pending approvals", n);
    return NULL;
}

static const char *jstr(json_object *o, const char *k)
{
    json_object *v;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

static void test_lifecycle(void **state)
{
    (void)state;
    char path[] = "/tmp/test_approval_audit_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    audit_t *au;
    assert_int_equal(audit_open(path, -1, &au), 0);
    approvals_t a;
    approvals_init(&a);

    /* allowed by a decision */
    waiter_t w;
    waiter_start(&w, &a, au, "www.example.com", 443, 30, -1);
    json_object *arr = pending_wait(&a, 1);
    json_object *e = json_object_array_get_idx(arr, 0);
    char id[APPROVAL_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", jstr(e, "id"));
    assert_int_equal(strlen(id), APPROVAL_ID_LEN);
    assert_string_equal(jstr(e, "host"), "www.example.com");
    assert_string_equal(jstr(e, "addr"), "198.18.0.5");
    json_object_put(arr);
    assert_int_equal(approval_decide(&a, "000000000000", true, false, "api", NULL), -ENOENT);
    json_object *info = NULL;
    assert_int_equal(approval_decide(&a, id, true, true, "api", &info), 0);
    assert_string_equal(jstr(info, "host"), "www.example.com");
    json_object_put(info);
    pthread_join(w.tid, NULL);
    assert_int_equal(w.result, APPROVAL_ALLOWED);
    assert_string_equal(w.id, id);
    assert_int_equal(approval_decide(&a, id, false, false, "api", NULL), -ENOENT); /* once only */

    /* denied */
    waiter_start(&w, &a, au, "www.example.com", 443, 30, -1);
    arr = pending_wait(&a, 1);
    snprintf(id, sizeof id, "%s", jstr(json_object_array_get_idx(arr, 0), "id"));
    json_object_put(arr);
    assert_int_equal(approval_decide(&a, id, false, false, "api", NULL), 0);
    pthread_join(w.tid, NULL);
    assert_int_equal(w.result, APPROVAL_DENIED);

    /* timeout */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    waiter_start(&w, &a, au, "slow.example.com", 443, 1, -1);
    pthread_join(w.tid, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(w.result, APPROVAL_TIMEOUT);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(s >= 0.95 && s < 5);

    /* the guest gives up */
    int sp[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    waiter_start(&w, &a, au, "gone.example.com", 443, 30, sp[0]);
    json_object_put(pending_wait(&a, 1));
    close(sp[1]);
    pthread_join(w.tid, NULL);
    assert_int_equal(w.result, APPROVAL_ABANDONED);
    close(sp[0]);

    /* answered by a policy change: allow rule, then ask rule removed */
    waiter_t w2;
    waiter_start(&w, &a, au, "www.example.com", 443, 30, -1);
    waiter_start(&w2, &a, au, "other.example.com", 443, 30, -1);
    json_object_put(pending_wait(&a, 2));
    policy_t *p = P("{\"allow\":[{\"host\":\"*.example.com\",\"action\":\"ask\"},"
                    "{\"host\":\"www.example.com\",\"ports\":[443]}]}");
    assert_int_equal(approvals_recheck(&a, p, NULL, 0), 1);
    policy_unref(p);
    pthread_join(w.tid, NULL);
    assert_int_equal(w.result, APPROVAL_ALLOWED);
    json_object_put(pending_wait(&a, 1));               /* other.example.com still asks */
    p = P("{\"allow\":[]}");
    assert_int_equal(approvals_recheck(&a, p, NULL, 0), 1);
    policy_unref(p);
    pthread_join(w2.tid, NULL);
    assert_int_equal(w2.result, APPROVAL_DENIED);

    /* bounded: the one past APPROVALS_MAX is denied without asking */
    waiter_t *many = calloc(APPROVALS_MAX, sizeof *many);
    for (int i = 0; i < APPROVALS_MAX; i++)
        waiter_start(&many[i], &a, au, "many.example.com", 443, 30, -1);
    json_object_put(pending_wait(&a, APPROVALS_MAX));
    waiter_start(&w, &a, au, "many.example.com", 443, 30, -1);
    pthread_join(w.tid, NULL);
    assert_int_equal(w.result, APPROVAL_FULL);
    p = P("{}");
    assert_int_equal(approvals_recheck(&a, p, NULL, 0), APPROVALS_MAX);
    policy_unref(p);
    for (int i = 0; i < APPROVALS_MAX; i++) {
        pthread_join(many[i].tid, NULL);
        assert_int_equal(many[i].result, APPROVAL_DENIED);
    }
    free(many);
    json_object_put(pending_wait(&a, 0));

    /* the audit: a pending and a final record per approval, with who */
    audit_close(au);
    FILE *f = fdopen(fd, "r");
    char line[4096];
    int pending = 0, allowed_api = 0, timeout = 0, abandoned = 0, by_policy = 0, remember = 0;
    while (fgets(line, sizeof line, f)) {
        json_object *o = json_tokener_parse(line);
        assert_non_null(o);
        assert_string_equal(jstr(o, "ev"), "approval");
        if (!jstr(o, "reason"))                 /* the one refused as over the bound has none */
            assert_int_equal(strlen(jstr(o, "approval_id")), APPROVAL_ID_LEN);
        assert_null(jstr(o, "id"));            /* lanesd numbers audit rows "id" */
        const char *st = jstr(o, "state"), *by = jstr(o, "by");
        pending += !strcmp(st, "pending");
        allowed_api += !strcmp(st, "allowed") && !strcmp(by, "api");
        timeout += !strcmp(st, "timeout") && !strcmp(by, "timeout");
        abandoned += !strcmp(st, "abandoned");
        by_policy += by && !strcmp(by, "policy");
        json_object *r;
        remember += json_object_object_get_ex(o, "remember", &r) && json_object_get_boolean(r);
        json_object_put(o);
    }
    fclose(f);
    unlink(path);
    assert_int_equal(pending, 6 + APPROVALS_MAX);
    assert_int_equal(allowed_api, 1);
    assert_int_equal(remember, 1);
    assert_int_equal(timeout, 1);
    assert_int_equal(abandoned, 1);
    assert_int_equal(by_policy, 2 + APPROVALS_MAX);
}

/* netmed exiting: pending approvals are denied and audited once each. */
static void test_stop(void **state)
{
    (void)state;
    char path[] = "/tmp/test_approval_stop_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    audit_t *au;
    assert_int_equal(audit_open(path, -1, &au), 0);
    approvals_t a;
    approvals_init(&a);
    waiter_t w1, w2;
    waiter_start(&w1, &a, au, "one.example", 443, 30, -1);
    waiter_start(&w2, &a, au, "two.example", 443, 30, -1);
    json_object_put(pending_wait(&a, 2));
    approvals_stop(&a, au);
    pthread_join(w1.tid, NULL);
    pthread_join(w2.tid, NULL);
    assert_int_equal(w1.result, APPROVAL_DENIED);
    assert_int_equal(w2.result, APPROVAL_DENIED);
    audit_close(au);
    FILE *f = fdopen(fd, "r");
    char line[4096];
    int finals = 0;
    while (fgets(line, sizeof line, f)) {
        json_object *o = json_tokener_parse(line);
        if (strcmp(jstr(o, "state"), "pending") != 0) {
            assert_string_equal(jstr(o, "state"), "denied");
            assert_string_equal(jstr(o, "by"), "netmed stop");
            finals++;
        }
        json_object_put(o);
    }
    fclose(f);
    unlink(path);
    assert_int_equal(finals, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_actions),
        cmocka_unit_test(test_precedence_names),
        cmocka_unit_test(test_precedence_cidr),
        cmocka_unit_test(test_unmatched),
        cmocka_unit_test(test_add_rule),
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
