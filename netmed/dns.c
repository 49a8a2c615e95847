/* dns.c — DNS wire codec and the lane name table (see dns.h). */
#include "dns.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define HDR 12

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

static bool label_char_ok(uint8_t c)
{
    return isalnum(c) || c == '-' || c == '_';
}

/* Read an uncompressed name at pkt[*off]; lowercase text into out. */
static int read_name_plain(const uint8_t *pkt, size_t n, size_t *off, char *out)
{
    size_t o = *off, w = 0;
    for (;;) {
        if (o >= n)
            return -EINVAL;
        uint8_t l = pkt[o++];
        if (l == 0)
            break;
        if (l > 63 || o + l > n)
            return -EINVAL; /* includes compression pointers (0xc0) */
        if (w + l + 1 >= DNS_NAME_MAX)
            return -EINVAL;
        if (w)
            out[w++] = '.';
        for (uint8_t i = 0; i < l; i++) {
            uint8_t c = pkt[o + i];
            if (!label_char_ok(c))
                return -EINVAL;
            out[w++] = (char)tolower(c);
        }
        o += l;
    }
    if (w == 0)
        return -EINVAL; /* the root name is never a valid query here */
    out[w] = '\0';
    *off = o;
    return 0;
}

/* Skip a possibly compressed name. */
static int skip_name(const uint8_t *pkt, size_t n, size_t *off)
{
    size_t o = *off;
    for (int hops = 0; hops < 128; hops++) {
        if (o >= n)
            return -EINVAL;
        uint8_t l = pkt[o];
        if (l == 0) {
            *off = o + 1;
            return 0;
        }
        if ((l & 0xc0) == 0xc0) {
            if (o + 2 > n)
                return -EINVAL;
            *off = o + 2;
            return 0;
        }
        if (l > 63)
            return -EINVAL;
        o += 1 + (size_t)l;
    }
    return -EINVAL;
}

int dns_parse_query(const uint8_t *pkt, size_t n, dns_query_t *q)
{
    dns_query_t t;
    memset(&t, 0, sizeof t);
    if (n < HDR)
        return -EINVAL;
    t.id = rd16(pkt);
    t.flags = rd16(pkt + 2);
    q->id = t.id;
    if (t.flags & 0x8000)
        return -EINVAL;                 /* a response, not a query */
    if (((t.flags >> 11) & 0xf) != 0)
        return -ENOTSUP;                /* opcode other than QUERY */
    if (rd16(pkt + 4) != 1 || rd16(pkt + 6) != 0 || rd16(pkt + 8) != 0)
        return -EINVAL;
    size_t off = HDR;
    if (read_name_plain(pkt, n, &off, t.name) < 0)
        return -EINVAL;
    if (off + 4 > n)
        return -EINVAL;
    t.qtype = rd16(pkt + off);
    t.qclass = rd16(pkt + off + 2);
    t.question_len = off + 4 - HDR;
    *q = t;
    return 0;
}

int dns_build_response(uint8_t *buf, size_t cap, const uint8_t *qpkt, const dns_query_t *q,
                       int rcode, const netaddr_t *addrs, size_t naddrs, uint32_t ttl)
{
    size_t need = HDR + q->question_len;
    if (cap < need)
        return -ENOSPC;
    memset(buf, 0, HDR);
    wr16(buf, q->id);
    /* QR=1, opcode 0, AA=1, RD copied, RA=1. */
    uint16_t flags = 0x8000 | 0x0400 | (q->flags & 0x0100) | 0x0080 | (uint16_t)(rcode & 0xf);
    wr16(buf + 2, flags);
    wr16(buf + 4, q->question_len ? 1 : 0);
    memcpy(buf + HDR, qpkt + HDR, q->question_len);
    size_t off = need;
    uint16_t an = 0;
    for (size_t i = 0; i < naddrs && rcode == DNS_RCODE_NOERROR; i++) {
        size_t alen;
        uint16_t type;
        if (addrs[i].family == AF_INET && q->qtype == DNS_TYPE_A) {
            alen = 4;
            type = DNS_TYPE_A;
        } else if (addrs[i].family == AF_INET6 && q->qtype == DNS_TYPE_AAAA) {
            alen = 16;
            type = DNS_TYPE_AAAA;
        } else {
            continue;
        }
        if (off + 12 + alen > cap)
            return -ENOSPC;
        wr16(buf + off, 0xc000 | HDR);  /* pointer to the question name */
        wr16(buf + off + 2, type);
        wr16(buf + off + 4, DNS_CLASS_IN);
        buf[off + 6] = (uint8_t)(ttl >> 24);
        buf[off + 7] = (uint8_t)(ttl >> 16);
        buf[off + 8] = (uint8_t)(ttl >> 8);
        buf[off + 9] = (uint8_t)ttl;
        wr16(buf + off + 10, (uint16_t)alen);
        memcpy(buf + off + 12, addrs[i].a, alen);
        off += 12 + alen;
        an++;
    }
    wr16(buf + 6, an);
    return (int)off;
}

int dns_build_query(uint8_t *buf, size_t cap, uint16_t id, const char *name, uint16_t qtype)
{
    size_t nl = strlen(name);
    if (nl == 0 || nl >= DNS_NAME_MAX)
        return -EINVAL;
    if (cap < HDR + nl + 2 + 4)
        return -ENOSPC;
    memset(buf, 0, HDR);
    wr16(buf, id);
    wr16(buf + 2, 0x0100); /* RD */
    wr16(buf + 4, 1);
    size_t off = HDR;
    const char *p = name;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t l = dot ? (size_t)(dot - p) : strlen(p);
        if (l == 0 || l > 63)
            return -EINVAL;
        buf[off++] = (uint8_t)l;
        memcpy(buf + off, p, l);
        off += l;
        p += l;
        if (*p == '.')
            p++;
    }
    buf[off++] = 0;
    wr16(buf + off, qtype);
    wr16(buf + off + 2, DNS_CLASS_IN);
    return (int)(off + 4);
}

int dns_parse_response(const uint8_t *pkt, size_t n, uint16_t id, const char *name,
                       uint16_t qtype, netaddr_t *out, size_t max)
{
    if (n < HDR || rd16(pkt) != id)
        return -EINVAL;
    uint16_t flags = rd16(pkt + 2);
    if (!(flags & 0x8000) || rd16(pkt + 4) != 1)
        return -EINVAL;
    if (flags & 0x0200)
        return -EIO;                    /* truncated: we do not retry over TCP */
    size_t off = HDR;
    char qname[DNS_NAME_MAX];
    if (read_name_plain(pkt, n, &off, qname) < 0 || strcasecmp(qname, name) != 0)
        return -EINVAL;
    if (off + 4 > n || rd16(pkt + off) != qtype || rd16(pkt + off + 2) != DNS_CLASS_IN)
        return -EINVAL;
    off += 4;
    int rcode = flags & 0xf;
    if (rcode == DNS_RCODE_NXDOMAIN)
        return -ENOENT;
    if (rcode != DNS_RCODE_NOERROR)
        return -EIO;
    uint16_t an = rd16(pkt + 6);
    size_t got = 0;
    for (uint16_t i = 0; i < an; i++) {
        if (skip_name(pkt, n, &off) < 0 || off + 10 > n)
            return -EINVAL;
        uint16_t type = rd16(pkt + off), cls = rd16(pkt + off + 2);
        uint16_t rdlen = rd16(pkt + off + 8);
        off += 10;
        if (off + rdlen > n)
            return -EINVAL;
        /* CNAME chains: recursive servers put the target's records in the
         * answer section; we take the address records (trusted servers). */
        if (cls == DNS_CLASS_IN && type == qtype && got < max) {
            if (type == DNS_TYPE_A && rdlen == 4) {
                memset(&out[got], 0, sizeof out[got]);
                out[got].family = AF_INET;
                memcpy(out[got].a, pkt + off, 4);
                got++;
            } else if (type == DNS_TYPE_AAAA && rdlen == 16) {
                memset(&out[got], 0, sizeof out[got]);
                out[got].family = AF_INET6;
                memcpy(out[got].a, pkt + off, 16);
                got++;
            }
        }
        off += rdlen;
    }
    return got ? (int)got : -ENOENT;
}

int dns_table_init(dns_table_t *t, const cidr_t *synth, size_t max_entries)
{
    memset(t, 0, sizeof *t);
    if (synth->net.family != AF_INET || synth->len > 30)
        return -EINVAL;
    t->synth = *synth;
    t->next = 1;
    t->max = max_entries;
    pthread_mutex_init(&t->lock, NULL);
    return 0;
}

void dns_table_destroy(dns_table_t *t)
{
    if (!t)
        return;
    free(t->e);
    t->e = NULL;
    pthread_mutex_destroy(&t->lock);
}

static int table_add(dns_table_t *t, const char *name, const netaddr_t *a)
{
    if (t->n == t->cap) {
        if (t->n >= t->max)
            return -ENOSPC;
        size_t nc = t->cap ? t->cap * 2 : 64;
        if (nc > t->max)
            nc = t->max;
        dns_entry_t *ne = realloc(t->e, nc * sizeof *ne);
        if (!ne)
            return -ENOMEM;
        t->e = ne;
        t->cap = nc;
    }
    t->e[t->n].addr = *a;
    snprintf(t->e[t->n].name, sizeof t->e[t->n].name, "%s", name);
    t->n++;
    return 0;
}

bool dns_table_is_synthetic(const dns_table_t *t, const netaddr_t *a)
{
    return cidr_contains(&t->synth, a);
}

int dns_table_synth(dns_table_t *t, const char *name, netaddr_t *out)
{
    int r = -ENOSPC;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < t->n; i++) {
        if (dns_table_is_synthetic(t, &t->e[i].addr) && strcmp(t->e[i].name, name) == 0) {
            *out = t->e[i].addr;
            r = 0;
            goto out;
        }
    }
    uint32_t size = 1u << (32 - t->synth.len);
    if (t->next >= size - 1)
        goto out;
    netaddr_t a;
    netaddr_from_v4(netaddr_v4(&t->synth.net) + t->next, &a);
    if ((r = table_add(t, name, &a)) == 0) {
        t->next++;
        *out = a;
    }
out:
    pthread_mutex_unlock(&t->lock);
    return r;
}

int dns_table_record(dns_table_t *t, const char *name, const netaddr_t *a)
{
    int r = 0;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < t->n; i++) {
        if (netaddr_equal(&t->e[i].addr, a) && strcmp(t->e[i].name, name) == 0) {
            /* move to the end: most recent */
            dns_entry_t e = t->e[i];
            memmove(&t->e[i], &t->e[i + 1], (t->n - i - 1) * sizeof e);
            t->e[t->n - 1] = e;
            goto out;
        }
    }
    if (t->n >= t->max && t->n > 0) {
        /* forget the oldest real-address record */
        memmove(&t->e[0], &t->e[1], (t->n - 1) * sizeof *t->e);
        t->n--;
    }
    r = table_add(t, name, a);
out:
    pthread_mutex_unlock(&t->lock);
    return r;
}

size_t dns_table_lookup(dns_table_t *t, const netaddr_t *a, char (*names)[DNS_NAME_MAX], size_t max)
{
    size_t got = 0;
    pthread_mutex_lock(&t->lock);
    for (size_t i = t->n; i-- > 0 && got < max;)
        if (netaddr_equal(&t->e[i].addr, a))
            memcpy(names[got++], t->e[i].name, DNS_NAME_MAX);
    pthread_mutex_unlock(&t->lock);
    return got;
}
