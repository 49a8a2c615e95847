/* http_ws.h — internal to lanes_http: the pure parts of WebSocket (RFC 6455).
 *
 * Handshake key derivation, frame header decoding and encoding, payload
 * unmasking and a strict UTF-8 validator. No uv, no sockets, no globals: the
 * connection plumbing lives in http_server.c, and these functions are what a
 * fuzzer or a unit test can call directly.
 */
#ifndef LANES_HTTP_WS_H
#define LANES_HTTP_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* Largest encoded frame header: 2 + 8 (length) + 4 (mask). */
#define WS_MAX_HEADER 14

typedef struct {
    bool fin;
    uint8_t rsv;      /* the three RSV bits (must be 0: no extensions) */
    uint8_t opcode;
    bool masked;
    uint8_t mask[4];
    uint64_t len;     /* payload length */
    size_t header_len;
} ws_frame_hdr_t;

/* Sec-WebSocket-Accept for a client's Sec-WebSocket-Key. The key must be
 * base64 of exactly 16 bytes. Writes 28 characters + NUL into out. Returns 0
 * or -EINVAL. */
int ws_accept_key(const char *client_key, char out[29]);

/* Decode a frame header from p[0..n). Returns the header length (> 0), 0 if
 * more bytes are needed, or -EPROTO for a length that is not minimally
 * encodable (64-bit length with the top bit set). */
int ws_frame_header_parse(const uint8_t *p, size_t n, ws_frame_hdr_t *h);

/* Encode an unmasked server frame header; returns its length (2, 4 or 10). */
size_t ws_frame_header_encode(uint8_t out[WS_MAX_HEADER], bool fin, uint8_t opcode, uint64_t len);

/* XOR data[0..n) with mask, starting at payload offset off. */
void ws_unmask(uint8_t *data, size_t n, const uint8_t mask[4], uint64_t off);

/* Is p[0..n) well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF)? */
bool ws_utf8_valid(const uint8_t *p, size_t n);

/* May a peer send this close code (RFC 6455 7.4)? */
bool ws_close_code_valid(unsigned code);

#endif
