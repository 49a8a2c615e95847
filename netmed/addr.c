/* addr.c — address parsing and classification (see addr.h).
 *
 * The special-purpose tables below are the whole definition of "private" for
 * netmed; docs/policy.md lists them. Documentation ranges (192.0.2/24,
 * 198.51.100/24, 203.0.113/24, 2001:db8::/32) are deliberately public: they
 * never route on the internet and the test internet uses them.
 */
#include "addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int netaddr_parse(const char *s, netaddr_t *out)
{
    netaddr_t a;
    memset(&a, 0, sizeof a);
    if (!s)
        return -EINVAL;
    if (inet_pton(AF_INET, s, a.a) == 1) {
        a.family = AF_INET;
    } else if (inet_pton(AF_INET6, s, a.a) == 1) {
        a.family = AF_INET6;
    } else {
        return -EINVAL;
    }
    *out = a;
    return 0;
}

const char *netaddr_format(const netaddr_t *a, char *buf, size_t len)
{
    if (!inet_ntop(a->family, a->a, buf, (socklen_t)len))
        snprintf(buf, len, "?");
    return buf;
}

bool netaddr_equal(const netaddr_t *a, const netaddr_t *b)
{
    if (a->family != b->family)
        return false;
    return memcmp(a->a, b->a, a->family == AF_INET ? 4 : 16) == 0;
}

void netaddr_from_v4(uint32_t v, netaddr_t *out)
{
    memset(out, 0, sizeof *out);
    out->family = AF_INET;
    out->a[0] = (uint8_t)(v >> 24);
    out->a[1] = (uint8_t)(v >> 16);
    out->a[2] = (uint8_t)(v >> 8);
    out->a[3] = (uint8_t)v;
}

uint32_t netaddr_v4(const netaddr_t *a)
{
    return (uint32_t)a->a[0] << 24 | (uint32_t)a->a[1] << 16 | (uint32_t)a->a[2] << 8 | a->a[3];
}

static bool prefix_equal(const uint8_t *x, const uint8_t *y, int len)
{
    int full = len / 8, rem = len % 8;
    if (memcmp(x, y, (size_t)full) != 0)
        return false;
    if (rem) {
        uint8_t m = (uint8_t)(0xff << (8 - rem));
        if ((x[full] & m) != (y[full] & m))
            return false;
    }
    return true;
}

int cidr_parse(const char *s, cidr_t *out)
{
    char buf[64];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen == 0 || alen >= sizeof buf)
        return -EINVAL;
    memcpy(buf, s, alen);
    buf[alen] = '\0';
    cidr_t c;
    memset(&c, 0, sizeof c);
    if (netaddr_parse(buf, &c.net) < 0)
        return -EINVAL;
    int max = c.net.family == AF_INET ? 32 : 128;
    if (slash) {
        const char *p = slash + 1;
        if (*p < '0' || *p > '9' || strlen(p) > 3)
            return -EINVAL;
        char *end;
        long l = strtol(p, &end, 10);
        if (*end || l < 0 || l > max || (p[0] == '0' && p[1]))
            return -EINVAL;
        c.len = (int)l;
    } else {
        c.len = max;
    }
    /* Reject host bits: "10.0.0.1/8" is almost always a mistake. */
    netaddr_t z = c.net;
    int nbytes = max / 8;
    for (int i = 0; i < nbytes; i++) {
        int bit0 = i * 8;
        if (bit0 >= c.len)
            z.a[i] = 0;
        else if (bit0 + 8 > c.len)
            z.a[i] &= (uint8_t)(0xff << (8 - (c.len - bit0)));
    }
    if (!netaddr_equal(&z, &c.net))
        return -EINVAL;
    *out = c;
    return 0;
}

bool cidr_contains(const cidr_t *c, const netaddr_t *a)
{
    if (c->net.family != a->family)
        return false;
    return prefix_equal(c->net.a, a->a, c->len);
}

bool cidr_within(const cidr_t *inner, const cidr_t *outer)
{
    return inner->net.family == outer->net.family && inner->len >= outer->len &&
           prefix_equal(inner->net.a, outer->net.a, outer->len);
}

typedef struct {
    const char *cidr;
    addr_class_t cls;
} special_t;

/* Most specific first where blocks nest. */
static const special_t special_v4[] = {
    { "255.255.255.255/32", ADDR_BROADCAST },
    { "0.0.0.0/8", ADDR_UNSPECIFIED },
    { "10.0.0.0/8", ADDR_PRIVATE },
    { "100.64.0.0/10", ADDR_CGNAT },
    { "127.0.0.0/8", ADDR_LOOPBACK },
    { "169.254.0.0/16", ADDR_LINKLOCAL },
    { "172.16.0.0/12", ADDR_PRIVATE },
    { "192.0.0.0/24", ADDR_RESERVED },
    { "192.168.0.0/16", ADDR_PRIVATE },
    { "198.18.0.0/15", ADDR_RESERVED },
    { "224.0.0.0/4", ADDR_MULTICAST },
    { "240.0.0.0/4", ADDR_RESERVED },
};

static const special_t special_v6[] = {
    { "::/128", ADDR_UNSPECIFIED },
    { "::1/128", ADDR_LOOPBACK },
    { "64:ff9b:1::/48", ADDR_PRIVATE },
    { "100::/64", ADDR_RESERVED },
    { "fc00::/7", ADDR_ULA },
    { "fe80::/10", ADDR_LINKLOCAL },
    { "fec0::/10", ADDR_PRIVATE },
    { "ff00::/8", ADDR_MULTICAST },
};

static addr_class_t classify_table(const special_t *t, size_t n, const netaddr_t *a, cidr_t *block)
{
    for (size_t i = 0; i < n; i++) {
        cidr_t c;
        if (cidr_parse(t[i].cidr, &c) < 0)
            abort(); /* table is constant: a bad entry is a programming error */
        if (cidr_contains(&c, a)) {
            if (block)
                *block = c;
            return t[i].cls;
        }
    }
    return ADDR_PUBLIC;
}

static addr_class_t classify_host(const netaddr_t *a, const netaddr_t *host, size_t nhost, cidr_t *block)
{
    for (size_t i = 0; i < nhost; i++) {
        if (netaddr_equal(&host[i], a)) {
            if (block) {
                block->net = *a;
                block->len = a->family == AF_INET ? 32 : 128;
            }
            return ADDR_HOST;
        }
    }
    return ADDR_PUBLIC;
}

/* IPv6 prefixes that carry an IPv4 address: prefix, length, byte offset of
 * the embedded address, XOR mask (Teredo obfuscates the client address). */
typedef struct {
    const char *cidr;
    int off;
    uint8_t xor;
} embed_t;

static const embed_t embed_v6[] = {
    { "::ffff:0:0/96", 12, 0 },     /* IPv4-mapped */
    { "::ffff:0:0:0/96", 12, 0 },   /* SIIT IPv4-translated */
    { "64:ff9b::/96", 12, 0 },      /* NAT64 well-known prefix */
    { "::/96", 12, 0 },             /* IPv4-compatible (deprecated) */
    { "2002::/16", 2, 0 },          /* 6to4 */
    { "2001::/32", 12, 0xff },      /* Teredo client (obfuscated) */
};

addr_class_t addr_classify(const netaddr_t *a, const netaddr_t *host, size_t nhost, cidr_t *block)
{
    addr_class_t c;
    if (a->family == AF_INET) {
        c = classify_table(special_v4, sizeof special_v4 / sizeof *special_v4, a, block);
        if (c == ADDR_PUBLIC)
            c = classify_host(a, host, nhost, block);
        return c;
    }
    if (a->family != AF_INET6)
        return ADDR_RESERVED;
    c = classify_table(special_v6, sizeof special_v6 / sizeof *special_v6, a, block);
    if (c != ADDR_PUBLIC)
        return c;
    for (size_t i = 0; i < sizeof embed_v6 / sizeof *embed_v6; i++) {
        cidr_t e;
        if (cidr_parse(embed_v6[i].cidr, &e) < 0)
            abort();
        if (!cidr_contains(&e, a))
            continue;
        netaddr_t v4;
        memset(&v4, 0, sizeof v4);
        v4.family = AF_INET;
        for (int k = 0; k < 4; k++)
            v4.a[k] = a->a[embed_v6[i].off + k] ^ embed_v6[i].xor;
        cidr_t inner;
        addr_class_t ic = addr_classify(&v4, host, nhost, &inner);
        if (ic == ADDR_PUBLIC) {
            /* Teredo's server part (bytes 4..7) may point inward too. */
            if (embed_v6[i].xor) {
                for (int k = 0; k < 4; k++)
                    v4.a[k] = a->a[4 + k];
                ic = addr_classify(&v4, host, nhost, &inner);
            }
            if (ic == ADDR_PUBLIC)
                return ADDR_PUBLIC;
        }
        if (block) {
            /* The v6 image of the v4 block is only exact for unobfuscated
             * forms; otherwise block just this address. */
            memset(block, 0, sizeof *block);
            block->net = *a;
            block->len = 128;
            if (!embed_v6[i].xor) {
                block->len = e.len + inner.len;
                for (int bit = block->len; bit < 128; bit++)
                    block->net.a[bit / 8] &= (uint8_t)~(0x80 >> (bit % 8));
            }
        }
        return ic;
    }
    return classify_host(a, host, nhost, block);
}

const char *addr_class_name(addr_class_t c)
{
    switch (c) {
    case ADDR_PUBLIC: return "public";
    case ADDR_UNSPECIFIED: return "unspecified";
    case ADDR_LOOPBACK: return "loopback";
    case ADDR_PRIVATE: return "private";
    case ADDR_LINKLOCAL: return "link-local";
    case ADDR_CGNAT: return "cgnat";
    case ADDR_ULA: return "unique-local";
    case ADDR_MULTICAST: return "multicast";
    case ADDR_BROADCAST: return "broadcast";
    case ADDR_RESERVED: return "reserved";
    case ADDR_HOST: return "host-own";
    }
    return "?";
}
