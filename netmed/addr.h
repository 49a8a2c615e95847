/* addr.h — IP addresses, CIDR blocks and the classification netmed uses to
 * keep lanes away from private, local and special-purpose destinations.
 *
 * Pure functions, no I/O, no globals: safe from any thread.
 * An IPv4 address is stored in a[0..3] with family AF_INET; IPv6 in a[0..15].
 */
#ifndef LANES_NETMED_ADDR_H
#define LANES_NETMED_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int family;          /* AF_INET or AF_INET6 */
    uint8_t a[16];
} netaddr_t;

typedef struct {
    netaddr_t net;       /* host bits are zero */
    int len;             /* prefix length */
} cidr_t;

/* Why an address is not public. ADDR_PUBLIC is the only dialable class when
 * blockPrivateRanges is on and no rule opens the block. */
typedef enum {
    ADDR_PUBLIC = 0,
    ADDR_UNSPECIFIED,
    ADDR_LOOPBACK,
    ADDR_PRIVATE,        /* RFC 1918, fec0::/10, local-use NAT64 */
    ADDR_LINKLOCAL,      /* 169.254/16 (cloud metadata), fe80::/10 */
    ADDR_CGNAT,          /* 100.64/10 */
    ADDR_ULA,            /* fc00::/7 */
    ADDR_MULTICAST,
    ADDR_BROADCAST,
    ADDR_RESERVED,       /* 240/4, 198.18/15, 192.0.0/24, 100::/64 ... */
    ADDR_HOST,           /* one of the host's own addresses */
} addr_class_t;

#define NETADDR_STRLEN 46

int netaddr_parse(const char *s, netaddr_t *out);           /* 0 or -EINVAL */
const char *netaddr_format(const netaddr_t *a, char *buf, size_t len);
bool netaddr_equal(const netaddr_t *a, const netaddr_t *b);
void netaddr_from_v4(uint32_t host_order, netaddr_t *out);
uint32_t netaddr_v4(const netaddr_t *a);                     /* host order */

/* "10.0.0.0/8", "fc00::/7", or a bare address (= /32 or /128). Host bits set
 * in the network part are rejected (-EINVAL) so a typo never widens a rule. */
int cidr_parse(const char *s, cidr_t *out);
bool cidr_contains(const cidr_t *c, const netaddr_t *a);
bool cidr_within(const cidr_t *inner, const cidr_t *outer);  /* inner ⊆ outer */

/* Classify a. host/nhost: the host's own addresses (may be NULL/0). If the
 * class is not public and block is non-NULL, *block is the smallest
 * special-purpose block containing a (the /32 or /128 itself for ADDR_HOST);
 * an explicit CIDR rule opens a blocked address only if it lies within it.
 * IPv6 forms that embed an IPv4 address (v4-mapped, v4-compatible, SIIT,
 * NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo) take the class of the
 * embedded address. */
addr_class_t addr_classify(const netaddr_t *a, const netaddr_t *host, size_t nhost, cidr_t *block);
const char *addr_class_name(addr_class_t c);

#endif
