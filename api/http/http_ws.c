/* http_ws.c — WebSocket helpers (see http_ws.h). Pure functions; SHA-1 and
 * base64 come from OpenSSL's libcrypto. */
#include "http_ws.h"

#include <errno.h>
#include <openssl/evp.h>
#include <string.h>

/* The GUID every RFC 6455 server appends to the client's key. */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

int ws_accept_key(const char *client_key, char out[29])
{
    size_t klen = strlen(client_key);
    if (klen != 24)
        return -EINVAL;
    unsigned char raw[24];
    /* EVP_DecodeBlock counts '=' padding as zero bytes: 24 chars -> 18. */
    if (EVP_DecodeBlock(raw, (const unsigned char *)client_key, (int)klen) != 18 ||
        strcmp(client_key + 22, "==") != 0)
        return -EINVAL;
    char buf[24 + sizeof(WS_GUID)];
    memcpy(buf, client_key, 24);
    memcpy(buf + 24, WS_GUID, sizeof(WS_GUID));
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(buf, 24 + sizeof(WS_GUID) - 1, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20)
        return -EINVAL;
    if (EVP_EncodeBlock((unsigned char *)out, md, 20) != 28)
        return -EINVAL;
    out[28] = '\0';
    return 0;
}

int ws_frame_header_parse(const uint8_t *p, size_t n, ws_frame_hdr_t *h)
{
    if (n < 2)
        return 0;
    ws_frame_hdr_t f;
    memset(&f, 0, sizeof(f));
    f.fin = (p[0] & 0x80) != 0;
    f.rsv = (p[0] >> 4) & 0x7;
    f.opcode = p[0] & 0x0f;
    f.masked = (p[1] & 0x80) != 0;
    uint64_t len = p[1] & 0x7f;
    size_t need = 2;
    if (len == 126) {
        need = 4;
        if (n < need)
            return 0;
        len = ((uint64_t)p[2] << 8) | p[3];
    } else if (len == 127) {
        need = 10;
        if (n < need)
            return 0;
        if (p[2] & 0x80)
            return -EPROTO;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | p[2 + i];
    }
    size_t off = need;
    if (f.masked) {
        need += 4;
        if (n < need)
            return 0;
        memcpy(f.mask, p + off, 4);
    }
    f.len = len;
    f.header_len = need;
    *h = f;
    return (int)need;
}

size_t ws_frame_header_encode(uint8_t out[WS_MAX_HEADER], bool fin, uint8_t opcode, uint64_t len)
{
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

void ws_unmask(uint8_t *data, size_t n, const uint8_t mask[4], uint64_t off)
{
    for (size_t i = 0; i < n; i++)
        data[i] ^= mask[(off + i) & 3];
}

bool ws_utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false; /* continuation byte, 0xc0/0xc1 overlong lead, or > 0xf4 */
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

bool ws_close_code_valid(unsigned code)
{
    if (code >= 3000 && code <= 4999)
        return true;
    switch (code) {
    case 1000: case 1001: case 1002: case 1003: case 1007: case 1008:
    case 1009: case 1010: case 1011: case 1012: case 1013: case 1014:
        return true;
    default:
        return false;
    }
}
