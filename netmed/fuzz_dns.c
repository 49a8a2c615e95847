/* fuzz_dns.c — libFuzzer target: the guest-facing DNS query parser, the
 * response builder fed by it, and the upstream response parser. */
#include "dns.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dns_query_t q;
    uint8_t out[512];
    netaddr_t a[4];
    memset(a, 0, sizeof a);
    a[0].family = 2;
    if (dns_parse_query(data, size, &q) == 0)
        (void)dns_build_response(out, sizeof out, data, &q, 0, a, 1, 30);
    (void)dns_parse_response(data, size, size >= 2 ? (uint16_t)(data[0] << 8 | data[1]) : 0, "a.test", DNS_TYPE_A,
                             a, 4);
    return 0;
}
