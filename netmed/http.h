/* http.h — strict HTTP/1.1 message-head parsing for netmed's interception
 * (RFC 9112), chunk-size lines, and the TLS ClientHello SNI peek.
 *
 * Pure functions over caller buffers; nothing here allocates except
 * http_head_t's own copy of the head (http_head_free).
 *
 * Framing rules (requests and responses): every line ends in CRLF (a bare
 * LF or CR is an error); no obs-fold; header names are tokens with no space
 * before the colon; Content-Length must be digits and all copies equal;
 * Transfer-Encoding must be exactly "chunked" and never appears together
 * with Content-Length. Anything else is rejected, never guessed.
 */
#ifndef LANES_NETMED_HTTP_H
#define LANES_NETMED_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_HEAD_MAX (64 * 1024)
#define HTTP_MAX_HEADERS 128

typedef enum {
    BODY_NONE = 0,
    BODY_LENGTH,
    BODY_CHUNKED,
    BODY_CLOSE,          /* response read until the server closes */
} body_kind_t;

typedef struct {
    char *name, *value;  /* into buf; value trimmed */
} http_header_t;

typedef struct {
    char *buf;           /* private NUL-separated copy of the head */
    bool is_request;
    char *method, *target; /* requests */
    int status;          /* responses */
    char *reason;
    int minor;           /* HTTP/1.minor */
    http_header_t h[HTTP_MAX_HEADERS];
    size_t nh;
    body_kind_t body;
    uint64_t length;     /* BODY_LENGTH */
    const char *host;    /* requests: the Host header value (required for 1.1) */
    bool close;          /* Connection: close, or HTTP/1.0 without keep-alive */
    bool upgrade;        /* Connection: upgrade + Upgrade header present */
    bool expect_continue;
} http_head_t;

/* Offset just past the CRLFCRLF ending the head in buf, 0 if not complete
 * yet, -EINVAL if a bare LF shows the sender does not use CRLF. */
long http_head_end(const char *buf, size_t len);

/* Parse a request head (buf[0..len) includes the final CRLFCRLF).
 * 0 or -EINVAL with a short reason in *why. */
int http_parse_request(const char *buf, size_t len, http_head_t *h, const char **why);

/* Parse a response head. req_method: the request it answers (HEAD and
 * 1xx/204/304 have no body). */
int http_parse_response(const char *buf, size_t len, const char *req_method, http_head_t *h,
                        const char **why);
void http_head_free(http_head_t *h);
const char *http_header_get(const http_head_t *h, const char *name);
bool http_token_list_has(const char *list, const char *token);

/* Parse "1a;ext=1" (no CRLF). 0 and *size, or -EINVAL. */
int http_parse_chunk_size(const char *line, size_t len, uint64_t *size);

/* TLS ClientHello SNI: 1 and the host_name (lowercase) in out, 0 if the
 * hello has no SNI, -EAGAIN if more bytes are needed, -EINVAL if buf does not
 * start with a ClientHello. */
int tls_peek_sni(const uint8_t *buf, size_t len, char *out, size_t cap);

/* Compare a Host header / SNI value with the connection's name: hostname
 * equal case-insensitively, an optional ":port" must equal port. */
bool http_host_matches(const char *host_hdr, const char *name, uint16_t port);

#endif
