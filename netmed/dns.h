/* dns.h — DNS wire format for netmed's guest-facing resolver and its small
 * upstream client, plus the lane's name table.
 *
 * Hand-written on purpose: the guest side must parse queries and build
 * answers, which Debian's c-ares (1.18) cannot do, and the upstream side only
 * needs A records. One small bounded parser (every read checked against the
 * packet length, compression pointers only followed forward-safe with a hop
 * limit) is easier to audit and fuzz than two libraries.
 *
 * The codec is pure. dns_table_t is internally locked (any thread).
 */
#ifndef LANES_NETMED_DNS_H
#define LANES_NETMED_DNS_H

#include "addr.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_NAME_MAX 254        /* text form incl. NUL, no trailing dot */
#define DNS_TYPE_A 1
#define DNS_TYPE_AAAA 28
#define DNS_CLASS_IN 1
#define DNS_RCODE_NOERROR 0
#define DNS_RCODE_FORMERR 1
#define DNS_RCODE_SERVFAIL 2
#define DNS_RCODE_NXDOMAIN 3
#define DNS_RCODE_NOTIMP 4
#define DNS_RCODE_REFUSED 5

typedef struct {
    uint16_t id;
    uint16_t flags;             /* as received */
    char name[DNS_NAME_MAX];    /* lowercase, no trailing dot */
    uint16_t qtype, qclass;
    size_t question_len;        /* bytes of the question section */
} dns_query_t;

/* Parse a guest query (exactly one question, no compression in it).
 * 0, -EINVAL (malformed: answer FORMERR if the header was readable, which
 * *q->id then holds), -ENOTSUP (not a standard query). */
int dns_parse_query(const uint8_t *pkt, size_t n, dns_query_t *q);

/* Build a response to q into buf: rcode plus A/AAAA answers (family must
 * match qtype; others are skipped). Returns the length or -ENOSPC. */
int dns_build_response(uint8_t *buf, size_t cap, const uint8_t *qpkt, const dns_query_t *q,
                       int rcode, const netaddr_t *addrs, size_t naddrs, uint32_t ttl);

/* Build a recursive query for name/qtype. Returns length or -EINVAL/-ENOSPC. */
int dns_build_query(uint8_t *buf, size_t cap, uint16_t id, const char *name, uint16_t qtype);

/* Parse an upstream response to (id, name, qtype): collects up to max A or
 * AAAA records of the answer section. Returns the number of addresses,
 * -ENOENT for NXDOMAIN/NODATA, -EIO for another rcode, -EINVAL if
 * malformed or not the answer to this question. */
int dns_parse_response(const uint8_t *pkt, size_t n, uint16_t id, const char *name,
                       uint16_t qtype, netaddr_t *out, size_t max);

/* Name table: in synthetic mode, name ↔ synthetic address handed to the
 * guest (stable for the table's life); in trusted/open mode, the real
 * addresses netmed told the guest for each name. */
typedef struct {
    netaddr_t addr;
    char name[DNS_NAME_MAX];
} dns_entry_t;

typedef struct {
    pthread_mutex_t lock;
    cidr_t synth;               /* synthetic range */
    uint32_t next;              /* next synthetic host index */
    dns_entry_t *e;
    size_t n, cap, max;
} dns_table_t;

int dns_table_init(dns_table_t *t, const cidr_t *synth, size_t max_entries);
void dns_table_destroy(dns_table_t *t);
/* The synthetic address for name (allocated on first use). 0 or -ENOSPC. */
int dns_table_synth(dns_table_t *t, const char *name, netaddr_t *out);
/* Remember that name was answered with a. */
int dns_table_record(dns_table_t *t, const char *name, const netaddr_t *a);
/* Names recorded for a, most recent first. Returns the count (≤ max). */
size_t dns_table_lookup(dns_table_t *t, const netaddr_t *a, char (*names)[DNS_NAME_MAX], size_t max);
bool dns_table_is_synthetic(const dns_table_t *t, const netaddr_t *a);

#endif
