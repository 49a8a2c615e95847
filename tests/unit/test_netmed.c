/* test_netmed.c — unit tests for netmed's pure core: address
 * classification (incl. embedded-IPv4 IPv6 forms), policy parsing and
 * evaluation, DNS codec and name table, strict HTTP heads, chunk sizes,
 * ClientHello SNI, secret substitution and the streaming filter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "addr.h"
#include "dns.h"
#include "http.h"
#include "policy.h"
#include "secrets.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static netaddr_t A(const char *s)
{
    netaddr_t a;
    assert_int_equal(netaddr_parse(s, &a), 0);
    return a;
}

static void test_classify(void **state)
{
    static const struct {
        const char *addr;
        addr_class_t cls;
    } t[] = {
        { "8.8.8.8", ADDR_PUBLIC },
        { "203.0.113.10", ADDR_PUBLIC },          /* documentation: public on purpose */
        { "127.0.0.1", ADDR_LOOPBACK },
        { "127.255.1.2", ADDR_LOOPBACK },
        { "10.1.2.3", ADDR_PRIVATE },
        { "172.16.0.1", ADDR_PRIVATE },
        { "172.31.255.255", ADDR_PRIVATE },
        { "172.32.0.1", ADDR_PUBLIC },
        { "192.168.1.1", ADDR_PRIVATE },
        { "169.254.169.254", ADDR_LINKLOCAL },    /* cloud metadata */
        { "100.64.0.1", ADDR_CGNAT },
        { "100.127.255.255", ADDR_CGNAT },
        { "100.128.0.1", ADDR_PUBLIC },
        { "0.0.0.0", ADDR_UNSPECIFIED },
        { "0.1.2.3", ADDR_UNSPECIFIED },
        { "255.255.255.255", ADDR_BROADCAST },
        { "224.0.0.1", ADDR_MULTICAST },
        { "240.0.0.1", ADDR_RESERVED },
        { "198.18.0.5", ADDR_RESERVED },
        { "192.0.0.8", ADDR_RESERVED },
        { "::", ADDR_UNSPECIFIED },
        { "::1", ADDR_LOOPBACK },
        { "::ffff:127.0.0.1", ADDR_LOOPBACK },    /* v4-mapped */
        { "::ffff:169.254.169.254", ADDR_LINKLOCAL },
        { "::ffff:10.0.0.1", ADDR_PRIVATE },
        { "::ffff:8.8.8.8", ADDR_PUBLIC },
        { "::127.0.0.1", ADDR_LOOPBACK },         /* v4-compatible */
        { "::10.0.0.1", ADDR_PRIVATE },
        { "::ffff:0:10.0.0.1", ADDR_PRIVATE },    /* SIIT */
        { "64:ff9b::10.0.0.1", ADDR_PRIVATE },    /* NAT64 of private v4 */
        { "64:ff9b::7f00:1", ADDR_LOOPBACK },
        { "64:ff9b::a9fe:a9fe", ADDR_LINKLOCAL },
        { "64:ff9b::808:808", ADDR_PUBLIC },
        { "64:ff9b:1::1", ADDR_PRIVATE },
        { "2002:7f00:1::1", ADDR_LOOPBACK },      /* 6to4 of 127.0.0.1 */
        { "2002:c0a8:101::", ADDR_PRIVATE },      /* 6to4 of 192.168.1.1 */
        { "2002:0808:0808::1", ADDR_PUBLIC },
        { "2001:0:4136:e378:8000:63bf:f5ff:fffe", ADDR_PRIVATE }, /* Teredo client 10.0.0.1 */
        { "fc00::1", ADDR_ULA },
        { "fd12:3456::1", ADDR_ULA },
        { "fe80::1", ADDR_LINKLOCAL },
        { "fec0::1", ADDR_PRIVATE },
        { "ff02::1", ADDR_MULTICAST },
        { "2606:4700::1111", ADDR_PUBLIC },
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        netaddr_t a = A(t[i].addr);
        addr_class_t c = addr_classify(&a, NULL, 0, NULL);
        if (c != t[i].cls)
            fail_msg("%s: got %s want %s", t[i].addr, addr_class_name(c), addr_class_name(t[i].cls));
    }
    /* the host's own addresses, also through embedded forms */
    netaddr_t host[2] = { A("198.51.100.1"), A("2001:db8::5") };
    netaddr_t a = A("198.51.100.1");
    cidr_t block;
    assert_int_equal(addr_classify(&a, host, 2, &block), ADDR_HOST);
    assert_int_equal(block.len, 32);
    a = A("::ffff:198.51.100.1");
    assert_int_equal(addr_classify(&a, host, 2, NULL), ADDR_HOST);
    a = A("2001:db8::5");
    assert_int_equal(addr_classify(&a, host, 2, NULL), ADDR_HOST);
    a = A("198.51.100.2");
    assert_int_equal(addr_classify(&a, host, 2, NULL), ADDR_PUBLIC);
    /* block of an embedded form: the v6 image of the v4 block */
    a = A("::ffff:10.1.2.3");
    addr_classify(&a, NULL, 0, &block);
    assert_int_equal(block.len, 104);
}

static void test_cidr(void **state)
{
    cidr_t c;
    assert_int_equal(cidr_parse("10.0.0.0/8", &c), 0);
    assert_int_equal(c.len, 8);
    assert_int_equal(cidr_parse("10.0.0.1/8", &c), -EINVAL); /* host bits */
    assert_int_equal(cidr_parse("10.0.0.0/33", &c), -EINVAL);
    assert_int_equal(cidr_parse("10.0.0.0/", &c), -EINVAL);
    assert_int_equal(cidr_parse("10.0.0.0/08", &c), -EINVAL);
    assert_int_equal(cidr_parse("fc00::/7", &c), 0);
    assert_int_equal(cidr_parse("1.2.3.4", &c), 0);
    assert_int_equal(c.len, 32);
    assert_int_equal(cidr_parse("nope/8", &c), -EINVAL);
    cidr_t in, out;
    cidr_parse("10.1.0.0/16", &in);
    cidr_parse("10.0.0.0/8", &out);
    assert_true(cidr_within(&in, &out));
    assert_false(cidr_within(&out, &in));
}

static policy_t *P(const char *json)
{
    policy_t *p = NULL;
    char err[256] = "";
    int r = policy_parse(json, strlen(json), &p, err, sizeof err);
    if (r < 0)
        fail_msg("policy rejected: %s: %s", json, err);
    return p;
}

static void test_policy_parse(void **state)
{
    /* the minimal form */
    policy_t *p = P("{\"dns\": {\"mode\": \"synthetic\"}, \"allow\": [{\"cidr\": \"198.51.100.2/32\", \"ports\": [8080]},"
                    " {\"host\": \"api.github.com\", \"ports\": [443], \"intercept\": true}]}");
    assert_int_equal(p->nrules, 2);
    assert_true(p->block_private);
    assert_int_equal(p->dns_mode, DNS_SYNTHETIC);
    assert_true(p->rules[1].intercept);
    policy_unref(p);
    p = P("{\"mode\":\"open\",\"dns\":{\"mode\":\"trusted\",\"servers\":[\"1.1.1.1\",\"2001:db8::1#5353\"]},"
          "\"allow\":[{\"host\":\"*.PyPI.org.\",\"ports\":[\"8000-8100\",443],\"transport\":\"tcp\"}]}");
    assert_true(p->open);
    assert_int_equal(p->nservers, 2);
    assert_int_equal(p->servers[1].port, 5353);
    assert_string_equal(p->rules[0].host, "*.pypi.org");
    assert_int_equal(p->rules[0].ports[0].lo, 8000);
    policy_unref(p);

    static const char *bad[] = {
        "",
        "[]",
        "{\"allow\": {}}",
        "{\"allow\": [{\"host\": \"a.com\", \"cidr\": \"1.2.3.4/32\"}]}",
        "{\"allow\": [{}]}",
        "{\"allow\": [{\"host\": \"a.com\", \"ports\": [0]}]}",
        "{\"allow\": [{\"host\": \"a.com\", \"ports\": [65536]}]}",
        "{\"allow\": [{\"host\": \"a.com\", \"ports\": [\"9-1\"]}]}",
        "{\"allow\": [{\"host\": \"a.com\", \"ports\": []}]}",
        "{\"allow\": [{\"host\": \"a.com\", \"transport\": \"udp\"}]}",
        "{\"allow\": [{\"host\": \"*\"}]}",
        "{\"allow\": [{\"host\": \"a..com\"}]}",
        "{\"allow\": [{\"host\": \"a com\"}]}",
        "{\"allow\": [{\"cidr\": \"10.0.0.1/8\"}]}",
        "{\"allow\": [{\"cidr\": \"10.0.0.0/8\", \"intercept\": true}]}",
        "{\"allow\": [{\"host\": \"a.com\", \"porst\": [1]}]}",
        "{\"dns\": {\"mode\": \"trusted\"}}",
        "{\"dns\": {\"mode\": \"magic\"}}",
        "{\"blockPrivateRanges\": \"yes\"}",
        "{\"unknown\": 1}",
        "{\"allow\": []} trailing",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[256] = "";
        policy_t *q = NULL;
        if (policy_parse(bad[i], strlen(bad[i]), &q, err, sizeof err) != -EINVAL)
            fail_msg("accepted bad policy: %s", bad[i]);
        assert_null(q);
        assert_true(err[0] != '\0');
    }
}

static void test_policy_eval(void **state)
{
    policy_t *p = P("{\"allow\": ["
                    "{\"host\": \"*.pypi.org\", \"ports\": [443]},"
                    "{\"host\": \"api.github.com\", \"ports\": [443], \"intercept\": true},"
                    "{\"host\": \"api.github.com\", \"ports\": [443]},"
                    "{\"cidr\": \"0.0.0.0/0\", \"ports\": [22]},"
                    "{\"cidr\": \"10.1.0.0/16\", \"ports\": [5432]},"
                    "{\"cidr\": \"0.0.0.0/0\", \"ports\": [6379], \"allowPrivate\": true},"
                    "{\"host\": \"db.internal\", \"allowPrivate\": true}]}");
    static const struct {
        const char *name;
        int port;
        bool allow;
        int rule;
        bool intercept;
    } names[] = {
        { "files.pypi.org", 443, true, 0, false },
        { "a.b.pypi.org", 443, true, 0, false },
        { "pypi.org", 443, false, -1, false },        /* apex not covered by *. */
        { "evilpypi.org", 443, false, -1, false },
        { "files.pypi.org", 80, false, -1, false },
        { "api.github.com", 443, true, 1, true },     /* intercepting rule preferred */
        { "github.com", 443, false, -1, false },
        { "db.internal", 1, true, 6, false },         /* no ports = any port */
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        verdict_t v = policy_check_name(p, names[i].name, (uint16_t)names[i].port);
        if (v.allow != names[i].allow || v.rule != names[i].rule || v.intercept != names[i].intercept)
            fail_msg("%s:%d: allow=%d rule=%d intercept=%d", names[i].name, names[i].port, v.allow, v.rule,
                     v.intercept);
    }
    netaddr_t host[1] = { A("192.0.2.7") };
    static const struct {
        const char *addr;
        int port;
        bool allow;
    } addrs[] = {
        { "8.8.8.8", 22, true },
        { "10.0.0.5", 22, false },          /* 0.0.0.0/0 never opens private */
        { "127.0.0.1", 22, false },
        { "169.254.169.254", 22, false },
        { "192.0.2.7", 22, false },         /* host's own address */
        { "10.1.2.3", 5432, true },         /* explicit private CIDR rule */
        { "10.2.0.1", 5432, false },
        { "10.9.9.9", 6379, true },         /* allowPrivate */
        { "8.8.8.8", 80, false },
    };
    for (size_t i = 0; i < sizeof addrs / sizeof *addrs; i++) {
        netaddr_t a = A(addrs[i].addr);
        verdict_t v = policy_check_addr(p, &a, (uint16_t)addrs[i].port, host, 1);
        if (v.allow != addrs[i].allow)
            fail_msg("%s:%d: allow=%d (%s)", addrs[i].addr, addrs[i].port, v.allow, v.reason);
    }
    /* dial-time check of resolved addresses */
    verdict_t v = policy_check_name(p, "files.pypi.org", 443);
    netaddr_t pub = A("151.101.0.223"), priv = A("10.0.0.1"), mapped = A("::ffff:127.0.0.1"), own = A("192.0.2.7");
    assert_true(policy_check_dial(p, &v, &pub, host, 1, NULL));
    assert_false(policy_check_dial(p, &v, &priv, host, 1, NULL));
    assert_false(policy_check_dial(p, &v, &mapped, host, 1, NULL));
    assert_false(policy_check_dial(p, &v, &own, host, 1, NULL));
    v = policy_check_name(p, "db.internal", 5432);
    assert_true(policy_check_dial(p, &v, &priv, host, 1, NULL));
    netaddr_t bcast = A("255.255.255.255");
    assert_false(policy_check_dial(p, &v, &bcast, host, 1, NULL));
    assert_true(policy_name_allowed(p, "x.pypi.org"));
    assert_false(policy_name_allowed(p, "example.com"));
    policy_unref(p);

    /* open mode: public allowed, private still blocked */
    p = P("{\"mode\": \"open\"}");
    netaddr_t a = A("8.8.8.8"), b = A("192.168.0.1");
    assert_true(policy_check_addr(p, &a, 80, NULL, 0).allow);
    assert_false(policy_check_addr(p, &b, 80, NULL, 0).allow);
    assert_true(policy_name_allowed(p, "anything.example"));
    v = policy_check_name(p, "anything.example", 80);
    assert_true(v.allow);
    assert_false(policy_check_dial(p, &v, &b, NULL, 0, NULL));
    policy_unref(p);
    /* blockPrivateRanges off */
    p = P("{\"blockPrivateRanges\": false, \"allow\": [{\"cidr\": \"0.0.0.0/0\"}]}");
    assert_true(policy_check_addr(p, &b, 80, NULL, 0).allow);
    policy_unref(p);
}

static void test_dns_codec(void **state)
{
    uint8_t q[512], r[512];
    int n = dns_build_query(q, sizeof q, 0x1234, "Api.Lanes.Test", DNS_TYPE_A);
    assert_true(n > 12);
    dns_query_t dq;
    assert_int_equal(dns_parse_query(q, (size_t)n, &dq), 0);
    assert_string_equal(dq.name, "api.lanes.test");
    assert_int_equal(dq.qtype, DNS_TYPE_A);
    netaddr_t ans[2] = { A("198.18.0.1"), A("198.18.0.2") };
    int rl = dns_build_response(r, sizeof r, q, &dq, DNS_RCODE_NOERROR, ans, 2, 60);
    assert_true(rl > n);
    netaddr_t got[4];
    assert_int_equal(dns_parse_response(r, (size_t)rl, 0x1234, "api.lanes.test", DNS_TYPE_A, got, 4), 2);
    assert_true(netaddr_equal(&got[1], &ans[1]));
    /* wrong id / name: not our answer */
    assert_int_equal(dns_parse_response(r, (size_t)rl, 0x1235, "api.lanes.test", DNS_TYPE_A, got, 4), -EINVAL);
    assert_int_equal(dns_parse_response(r, (size_t)rl, 0x1234, "x.lanes.test", DNS_TYPE_A, got, 4), -EINVAL);
    rl = dns_build_response(r, sizeof r, q, &dq, DNS_RCODE_NXDOMAIN, NULL, 0, 0);
    assert_int_equal(dns_parse_response(r, (size_t)rl, 0x1234, "api.lanes.test", DNS_TYPE_A, got, 4), -ENOENT);
    /* every truncation of a query is rejected, never read past */
    for (int k = 0; k < n; k++) {
        uint8_t *cp = malloc((size_t)k + 1);
        memcpy(cp, q, (size_t)k);
        assert_int_not_equal(dns_parse_query(cp, (size_t)k, &dq), 0);
        free(cp);
    }
    /* compression pointer in a query, a response bit, odd label bytes */
    uint8_t bad[64];
    memcpy(bad, q, (size_t)n);
    bad[12] = 0xc0;
    assert_int_equal(dns_parse_query(bad, (size_t)n, &dq), -EINVAL);
    memcpy(bad, q, (size_t)n);
    bad[2] |= 0x80;
    assert_int_equal(dns_parse_query(bad, (size_t)n, &dq), -EINVAL);
    memcpy(bad, q, (size_t)n);
    bad[14] = '.';
    assert_int_equal(dns_parse_query(bad, (size_t)n, &dq), -EINVAL);
    memcpy(bad, q, (size_t)n);
    bad[2] = 0x28; /* opcode UPDATE */
    assert_int_equal(dns_parse_query(bad, (size_t)n, &dq), -ENOTSUP);
    /* a response whose answer rdlength runs past the end */
    rl = dns_build_response(r, sizeof r, q, &dq, DNS_RCODE_NOERROR, ans, 1, 60);
    dns_parse_query(q, (size_t)n, &dq);
    rl = dns_build_response(r, sizeof r, q, &dq, DNS_RCODE_NOERROR, ans, 1, 60);
    for (int k = 12; k < rl; k++)
        assert_true(dns_parse_response(r, (size_t)k, 0x1234, "api.lanes.test", DNS_TYPE_A, got, 4) < 0);
}

static void test_dns_table(void **state)
{
    dns_table_t t;
    cidr_t synth;
    cidr_parse("198.18.0.0/30", &synth);
    assert_int_equal(dns_table_init(&t, &synth, 16), 0);
    netaddr_t a, b, c;
    assert_int_equal(dns_table_synth(&t, "a.test", &a), 0);
    assert_int_equal(dns_table_synth(&t, "b.test", &b), 0);
    assert_int_equal(dns_table_synth(&t, "a.test", &c), 0);
    assert_true(netaddr_equal(&a, &c));                 /* stable */
    assert_false(netaddr_equal(&a, &b));
    assert_int_equal(dns_table_synth(&t, "c.test", &c), -ENOSPC); /* /30: .1 .2 only */
    char names[4][DNS_NAME_MAX];
    assert_int_equal(dns_table_lookup(&t, &b, names, 4), 1);
    assert_string_equal(names[0], "b.test");
    assert_true(dns_table_is_synthetic(&t, &a));
    netaddr_t real = A("203.0.113.10");
    dns_table_record(&t, "x.test", &real);
    dns_table_record(&t, "y.test", &real);
    assert_int_equal(dns_table_lookup(&t, &real, names, 4), 2);
    assert_string_equal(names[0], "y.test");            /* most recent first */
    dns_table_destroy(&t);
}

static int REQ(const char *s, http_head_t *h, const char **why)
{
    return http_parse_request(s, strlen(s), h, why);
}

static void test_http_request(void **state)
{
    static const struct {
        const char *req;
        int ok;
        body_kind_t body;
    } t[] = {
        { "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1, BODY_NONE },
        { "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", 1, BODY_LENGTH },
        { "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 1, BODY_LENGTH },
        { "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n", 1, BODY_CHUNKED },
        { "GET / HTTP/1.0\r\n\r\n", 1, BODY_NONE },
        { "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 0 },
        { "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 0, 0 },
        { "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 0, 0 },
        { "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 0, 0 },
        { "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 0, 0 },
        { "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 0, 0 },
        { "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0, 0 },
        { "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 0 },
        { "POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 0 },
        { "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 0, 0 },      /* obs-fold */
        { "GET / HTTP/1.1\nHost: a\n\n", 0, 0 },                           /* bare LF */
        { "GET / HTTP/1.1\r\nHost: a\n\r\n", 0, 0 },
        { "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 0, 0 },              /* bare CR */
        { "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 0, 0 },                    /* space before colon */
        { "GET / HTTP/1.1\r\n\r\n", 0, 0 },                                /* no Host */
        { "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 0, 0 },
        { "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 0 },
        { "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 0, 0 },
        { "GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", 0, 0 },
        { "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 0 },
        { "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 0, 0 },
        { "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 0, 0 },
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        http_head_t h;
        const char *why = NULL;
        int r = REQ(t[i].req, &h, &why);
        if ((r == 0) != t[i].ok)
            fail_msg("case %zu: got %d (%s)", i, r, why ? why : "");
        if (r == 0) {
            assert_int_equal(h.body, t[i].body);
            http_head_free(&h);
        }
    }
    http_head_t h;
    const char *why;
    assert_int_equal(REQ("GET /p?q=1 HTTP/1.1\r\nHost: api.x\r\nConnection: keep-alive, Upgrade\r\n"
                         "Upgrade: websocket\r\nExpect: 100-continue\r\nX-Pad:  v  \r\n\r\n", &h, &why), 0);
    assert_string_equal(h.method, "GET");
    assert_string_equal(h.target, "/p?q=1");
    assert_string_equal(h.host, "api.x");
    assert_true(h.upgrade);
    assert_true(h.expect_continue);
    assert_false(h.close);
    assert_string_equal(http_header_get(&h, "x-pad"), "v");
    http_head_free(&h);
    assert_int_equal(REQ("GET / HTTP/1.0\r\n\r\n", &h, &why), 0);
    assert_true(h.close);
    http_head_free(&h);
    assert_int_equal(http_head_end("GET / HTTP/1.1\r\nHost: a\r\n\r\nrest", 30), 27);
    assert_int_equal(http_head_end("GET / HTTP/1.1\r\nHost: a\r\n", 25), 0);
    assert_int_equal(http_head_end("GET / HTTP/1.1\nHost", 19), -EINVAL);
}

static void test_http_response(void **state)
{
    http_head_t h;
    const char *why;
    const char *r1 = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
    assert_int_equal(http_parse_response(r1, strlen(r1), "GET", &h, &why), 0);
    assert_int_equal(h.status, 200);
    assert_int_equal(h.body, BODY_LENGTH);
    http_head_free(&h);
    assert_int_equal(http_parse_response(r1, strlen(r1), "HEAD", &h, &why), 0);
    assert_int_equal(h.body, BODY_NONE);
    http_head_free(&h);
    const char *r2 = "HTTP/1.1 204 No Content\r\n\r\n";
    assert_int_equal(http_parse_response(r2, strlen(r2), "GET", &h, &why), 0);
    assert_int_equal(h.body, BODY_NONE);
    http_head_free(&h);
    const char *r3 = "HTTP/1.0 200\r\n\r\n";
    assert_int_equal(http_parse_response(r3, strlen(r3), "GET", &h, &why), 0);
    assert_int_equal(h.body, BODY_CLOSE);
    assert_true(h.close);
    http_head_free(&h);
    const char *r4 = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(http_parse_response(r4, strlen(r4), "GET", &h, &why), -EINVAL);
    const char *r5 = "HTTP/1.1 20 OK\r\n\r\n";
    assert_int_equal(http_parse_response(r5, strlen(r5), "GET", &h, &why), -EINVAL);
    const char *r6 = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    assert_int_equal(http_parse_response(r6, strlen(r6), "GET", &h, &why), 0);
    assert_int_equal(h.body, BODY_NONE);
    http_head_free(&h);
}

static void test_chunk_size(void **state)
{
    static const struct {
        const char *s;
        int ok;
        uint64_t v;
    } t[] = {
        { "0", 1, 0 }, { "1a", 1, 26 }, { "FF", 1, 255 }, { "5;ext=1", 1, 5 }, { "5 ;x", 1, 5 },
        { "", 0, 0 }, { "x", 0, 0 }, { "-1", 0, 0 }, { "0x5", 0, 0 }, { "5 x", 0, 0 },
        { "1000000000000000", 0, 0 }, { " 5", 0, 0 }, { "5;\x01", 0, 0 },
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        uint64_t v = 99;
        int r = http_parse_chunk_size(t[i].s, strlen(t[i].s), &v);
        if ((r == 0) != t[i].ok || (r == 0 && v != t[i].v))
            fail_msg("chunk size \"%s\": r=%d v=%llu", t[i].s, r, (unsigned long long)v);
    }
}

/* A minimal ClientHello with an SNI extension for name. */
static size_t make_hello(uint8_t *b, const char *name)
{
    size_t nl = strlen(name), i = 0;
    uint8_t body[512];
    size_t k = 0;
    body[k++] = 3; body[k++] = 3;                    /* client_version */
    memset(body + k, 7, 32); k += 32;                /* random */
    body[k++] = 0;                                   /* session id */
    body[k++] = 0; body[k++] = 2; body[k++] = 0x13; body[k++] = 1; /* one suite */
    body[k++] = 1; body[k++] = 0;                    /* compression: null */
    size_t ext_len = 4 + 2 + 3 + nl;
    body[k++] = (uint8_t)(ext_len >> 8); body[k++] = (uint8_t)ext_len;
    body[k++] = 0; body[k++] = 0;                    /* server_name */
    body[k++] = (uint8_t)((5 + nl) >> 8); body[k++] = (uint8_t)(5 + nl);
    body[k++] = (uint8_t)((3 + nl) >> 8); body[k++] = (uint8_t)(3 + nl);
    body[k++] = 0;
    body[k++] = (uint8_t)(nl >> 8); body[k++] = (uint8_t)nl;
    memcpy(body + k, name, nl); k += nl;
    b[i++] = 0x16; b[i++] = 3; b[i++] = 1;
    b[i++] = (uint8_t)((k + 4) >> 8); b[i++] = (uint8_t)(k + 4);
    b[i++] = 1; b[i++] = 0; b[i++] = (uint8_t)(k >> 8); b[i++] = (uint8_t)k;
    memcpy(b + i, body, k);
    return i + k;
}

static void test_sni(void **state)
{
    uint8_t b[600];
    char out[256];
    size_t n = make_hello(b, "Api.Lanes.Test");
    assert_int_equal(tls_peek_sni(b, n, out, sizeof out), 1);
    assert_string_equal(out, "api.lanes.test");
    for (size_t k = 0; k < n; k++)
        assert_int_equal(tls_peek_sni(b, k, out, sizeof out), -EAGAIN);
    uint8_t c[600];
    memcpy(c, b, n);
    c[0] = 0x17;
    assert_int_equal(tls_peek_sni(c, n, out, sizeof out), -EINVAL);
    /* corrupt every length byte: never crashes, never reads out of bounds */
    for (size_t k = 5; k < n; k++) {
        memcpy(c, b, n);
        c[k] ^= 0xff;
        (void)tls_peek_sni(c, n, out, sizeof out);
    }
    assert_true(http_host_matches("api.lanes.test", "api.lanes.test", 443));
    assert_true(http_host_matches("API.lanes.test:443", "api.lanes.test", 443));
    assert_true(http_host_matches("api.lanes.test.", "api.lanes.test", 443));
    assert_false(http_host_matches("api.lanes.test:444", "api.lanes.test", 443));
    assert_false(http_host_matches("api.lanes.tes", "api.lanes.test", 443));
    assert_false(http_host_matches("api.lanes.test:", "api.lanes.test", 443));
    assert_false(http_host_matches("api.lanes.test:44x", "api.lanes.test", 443));
}

static secrets_t *S(void)
{
    const char *j = "{\"secrets\":[{\"name\":\"GH\",\"value\":\"REALVALUE-123\",\"placeholder\":"
                    "\"lanes-secret-GH-0123456789\",\"hosts\":[\"api.github.com\",\"*.gh.io\"]},"
                    "{\"name\":\"NPM\",\"value\":\"npm_real\",\"placeholder\":\"lanes-secret-NPM-abcdefabcd\","
                    "\"hosts\":[\"registry.npmjs.org\"]}]}";
    secrets_t *ss = NULL;
    char err[128];
    assert_int_equal(secrets_parse(j, strlen(j), &ss, err, sizeof err), 0);
    return ss;
}

static void test_secrets(void **state)
{
    secrets_t *ss = S();
    bool used[2] = { false, false };
    char *out;
    const secret_t *bad;
    assert_int_equal(secrets_substitute(ss, "Bearer lanes-secret-GH-0123456789", "api.github.com", &out, &bad, used), 1);
    assert_string_equal(out, "Bearer REALVALUE-123");
    assert_true(used[0]);
    assert_false(used[1]);
    free(out);
    assert_int_equal(secrets_substitute(ss, "x lanes-secret-GH-0123456789", "x.gh.io", &out, &bad, used), 1);
    free(out);
    /* a placeholder for a host it may not go to: refused, nothing built */
    assert_int_equal(secrets_substitute(ss, "lanes-secret-GH-0123456789", "evil.com", &out, &bad, used), 0);
    assert_null(out);
    assert_non_null(bad);
    assert_string_equal(bad->name, "GH");
    assert_int_equal(secrets_substitute(ss, "lanes-secret-GH-0123456789 lanes-secret-NPM-abcdefabcd",
                                        "api.github.com", &out, &bad, used), 0);
    assert_string_equal(bad->name, "NPM");
    assert_int_equal(secrets_substitute(ss, "no placeholder", "api.github.com", &out, &bad, used), 0);
    assert_null(out);
    assert_null(bad);
    char buf[] = "a REALVALUE-123 b npm_real c";
    assert_int_equal(secrets_mask(ss, buf, strlen(buf)), 2);
    assert_string_equal(buf, "a ************* b ******** c");
    secrets_free(ss);

    static const char *bad_files[] = {
        "{}",
        "{\"secrets\":[{\"name\":\"a\",\"value\":\"v\",\"placeholder\":\"short\",\"hosts\":[]}]}",
        "{\"secrets\":[{\"name\":\"a\",\"value\":\"\",\"placeholder\":\"lanes-secret-a-0123456789\",\"hosts\":[]}]}",
        "{\"secrets\":[{\"name\":\"a\",\"value\":\"v\\n\",\"placeholder\":\"lanes-secret-a-0123456789\",\"hosts\":[]}]}",
        "{\"secrets\":[{\"name\":\"a\",\"value\":\"v\",\"placeholder\":\"lanes secret a 0123456789\",\"hosts\":[]}]}",
        "{\"secrets\":[{\"name\":\"a\",\"value\":\"v\",\"placeholder\":\"lanes-secret-a-0123456789\"}]}",
    };
    for (size_t i = 0; i < sizeof bad_files / sizeof *bad_files; i++) {
        secrets_t *x = NULL;
        char err[128];
        if (secrets_parse(bad_files[i], strlen(bad_files[i]), &x, err, sizeof err) == 0)
            fail_msg("accepted bad secrets file %zu", i);
    }
}

/* The streaming filter must find/mask a pattern split at any offset and
 * pass every other byte through unchanged and in order. */
static void test_secret_filter(void **state)
{
    secrets_t *ss = S();
    const char *text = "head REALVALUE-123 middle npm_real tail REALVALUE-123";
    const char *want = "head ************* middle ******** tail *************";
    size_t n = strlen(text);
    for (size_t split = 0; split <= n; split++) {
        for (size_t split2 = split; split2 <= n; split2 += 3) {
            secret_filter_t f;
            secret_filter_init(&f, ss, FILTER_MASK);
            char got[256];
            size_t gl = 0;
            const char *o;
            size_t on;
            size_t cuts[4] = { 0, split, split2, n };
            for (int k = 0; k < 3; k++) {
                assert_int_equal(secret_filter_push(&f, text + cuts[k], cuts[k + 1] - cuts[k], k == 2, &o, &on), 0);
                memcpy(got + gl, o, on);
                gl += on;
            }
            assert_int_equal(gl, n);
            assert_memory_equal(got, want, n);
            secret_filter_free(&f);
        }
    }
    const char *ph = "xx lanes-secret-NPM-abcdefabcd yy";
    for (size_t split = 0; split <= strlen(ph); split++) {
        secret_filter_t f;
        secret_filter_init(&f, ss, FILTER_SCAN);
        const char *o;
        size_t on, emitted = 0;
        int r1 = secret_filter_push(&f, ph, split, false, &o, &on);
        emitted += r1 == 0 ? on : 0;
        int r2 = r1 ? r1 : secret_filter_push(&f, ph + split, strlen(ph) - split, true, &o, &on);
        assert_int_equal(r2, 1);
        assert_string_equal(f.found->name, "NPM");
        /* never emitted the whole placeholder */
        assert_true(emitted < 3 + strlen("lanes-secret-NPM-abcdefabcd"));
        secret_filter_free(&f);
    }
    secrets_free(ss);
}

/* Without flush, the filter may hold back only a tail that could still grow
 * into a pattern: a response whose end is not a prefix of any secret must
 * come out whole at once (a keep-alive peer sends nothing more), and a tail
 * that is such a prefix must be held until the next push decides it. */
static void test_secret_filter_no_stall(void **state)
{
    secrets_t *ss = S();
    secret_filter_t f;
    const char *o;
    size_t on;
    secret_filter_init(&f, ss, FILTER_MASK);
    const char *body = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    assert_int_equal(secret_filter_push(&f, body, strlen(body), false, &o, &on), 0);
    assert_int_equal(on, strlen(body));
    assert_memory_equal(o, body, on);
    /* "REALV" begins REALVALUE-123: held, then masked with the rest */
    assert_int_equal(secret_filter_push(&f, "abc REALV", 9, false, &o, &on), 0);
    assert_int_equal(on, 4);
    assert_memory_equal(o, "abc ", 4);
    assert_int_equal(secret_filter_push(&f, "ALUE-123 z", 10, false, &o, &on), 0);
    assert_int_equal(on, 15);
    assert_memory_equal(o, "************* z", 15);
    /* a held prefix that turns out not to be a secret is released */
    assert_int_equal(secret_filter_push(&f, "x REALVAL", 9, false, &o, &on), 0);
    assert_int_equal(on, 2);
    assert_int_equal(secret_filter_push(&f, "X!", 2, false, &o, &on), 0);
    assert_int_equal(on, 9);
    assert_memory_equal(o, "REALVALX!", 9);
    secret_filter_free(&f);
    secrets_free(ss);
}

/* A live secrets reload: a filter switched to another set keeps the bytes it
 * holds (checked against the new set with the next push, released when the
 * new set has nothing to find), and finds the new set's placeholders. Sets
 * are reference-counted: the last unref frees (ASan checks both). */
static void test_secret_filter_rebind(void **state)
{
    secrets_t *ss = S();
    assert_ptr_equal(secrets_ref(ss), ss);
    secrets_unref(ss);                  /* back to one reference */
    secret_filter_t f;
    const char *o;
    size_t on;
    secret_filter_init(&f, ss, FILTER_SCAN);
    assert_int_equal(secret_filter_push(&f, "ab lanes-secret-GH", 18, false, &o, &on), 0);
    assert_int_equal(on, 3);            /* the placeholder prefix is held */
    secret_filter_rebind(&f, NULL);     /* reloaded to no secrets */
    assert_int_equal(secret_filter_push(&f, "-x", 2, false, &o, &on), 0);
    assert_int_equal(on, 17);
    assert_memory_equal(o, "lanes-secret-GH-x", 17);
    secret_filter_rebind(&f, ss);       /* and to a set again: scanned */
    assert_int_equal(secret_filter_push(&f, "q lanes-secret-NPM-abcd", 23, false, &o, &on), 0);
    assert_int_equal(secret_filter_push(&f, "efabcd", 6, false, &o, &on), 1);
    assert_non_null(f.found);
    assert_string_equal(f.found->name, "NPM");
    secret_filter_free(&f);
    secrets_unref(ss);                  /* frees */
    secrets_unref(NULL);
    assert_null(secrets_ref(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_policy_parse),
        cmocka_unit_test(test_policy_eval),
        cmocka_unit_test(test_dns_codec),
        cmocka_unit_test(test_dns_table),
        cmocka_unit_test(test_http_request),
        cmocka_unit_test(test_http_response),
        cmocka_unit_test(test_chunk_size),
        cmocka_unit_test(test_sni),
        cmocka_unit_test(test_secrets),
        cmocka_unit_test(test_secret_filter),
        cmocka_unit_test(test_secret_filter_no_stall),
        cmocka_unit_test(test_secret_filter_rebind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
