/* fuzz_http.c — libFuzzer target: HTTP request/response heads, chunk-size
 * lines, and the ClientHello SNI peek. */
#include "http.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    long end = http_head_end(s, size);
    http_head_t h;
    const char *why;
    if (end > 0) {
        if (http_parse_request(s, (size_t)end, &h, &why) == 0)
            http_head_free(&h);
        if (http_parse_response(s, (size_t)end, "GET", &h, &why) == 0)
            http_head_free(&h);
    }
    uint64_t n;
    (void)http_parse_chunk_size(s, size, &n);
    char sni[256];
    (void)tls_peek_sni(data, size, sni, sizeof sni);
    return 0;
}
