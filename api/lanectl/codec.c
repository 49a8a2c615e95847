/* codec.c — base64, NDJSON splitting and URL escaping for lanectl. */
#include "codec.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long b64_decode(const char *in, size_t len, uint8_t *out)
{
    while (len > 0 && in[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -EINVAL;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_val((unsigned char)in[i]);
        if (v < 0)
            return -EINVAL;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    /* Leftover bits must be zero in canonical encodings. */
    if (bits && (acc & ((1u << bits) - 1)))
        return -EINVAL;
    return (long)o;
}

static int deliver(const char *line, size_t len, ndjson_line_fn fn, void *ud)
{
    if (len && line[len - 1] == '\r')
        len--;
    if (len == 0)
        return 0;
    return fn(line, len, ud);
}

int ndjson_feed(ndjson_t *nd, const char *data, size_t len, ndjson_line_fn fn, void *ud)
{
    size_t max = nd->max_line ? nd->max_line : 16u << 20;
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) : len;
        if (nd->len + take > max)
            return -E2BIG;
        if (nl && nd->len == 0) {
            int r = deliver(data, take, fn, ud); /* fast path: no copy */
            if (r)
                return r;
        } else {
            if (nd->len + take + 1 > nd->cap) {
                size_t cap = nd->cap ? nd->cap : 4096;
                while (cap < nd->len + take + 1)
                    cap *= 2;
                char *b = realloc(nd->buf, cap);
                if (!b)
                    return -ENOMEM;
                nd->buf = b;
                nd->cap = cap;
            }
            memcpy(nd->buf + nd->len, data, take);
            nd->len += take;
            if (nl) {
                size_t l = nd->len;
                nd->len = 0;
                int r = deliver(nd->buf, l, fn, ud);
                if (r)
                    return r;
            }
        }
        if (!nl)
            break;
        data += take + 1;
        len -= take + 1;
    }
    return 0;
}

int ndjson_finish(ndjson_t *nd, ndjson_line_fn fn, void *ud)
{
    size_t l = nd->len;
    nd->len = 0;
    return l ? deliver(nd->buf, l, fn, ud) : 0;
}

void ndjson_free(ndjson_t *nd)
{
    free(nd->buf);
    nd->buf = NULL;
    nd->len = nd->cap = 0;
}

char *url_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = malloc(n * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '_' || c == '.' || c == '~' || c == '/';
        if (plain) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return out;
}
