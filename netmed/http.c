/* http.c — strict HTTP/1.1 head parsing and the ClientHello SNI peek (see
 * http.h for the framing rules enforced). */
#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

long http_head_end(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\n') {
            if (i == 0 || buf[i - 1] != '\r')
                return -EINVAL;
            if (i >= 3 && buf[i - 2] == '\n' && buf[i - 3] == '\r')
                return (long)(i + 1);
        }
    }
    return 0;
}

static bool is_tchar(unsigned char c)
{
    return isalnum(c) || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

bool http_token_list_has(const char *list, const char *token)
{
    size_t tl = strlen(token);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *s = p;
        while (*p && *p != ',')
            p++;
        const char *e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - s) == tl && strncasecmp(s, token, tl) == 0)
            return true;
    }
    return false;
}

const char *http_header_get(const http_head_t *h, const char *name)
{
    for (size_t i = 0; i < h->nh; i++)
        if (strcasecmp(h->h[i].name, name) == 0)
            return h->h[i].value;
    return NULL;
}

void http_head_free(http_head_t *h)
{
    if (h) {
        free(h->buf);
        h->buf = NULL;
    }
}

static int parse_version(const char *v, int *minor)
{
    if (strncmp(v, "HTTP/1.", 7) != 0 || (v[7] != '0' && v[7] != '1') || v[8])
        return -EINVAL;
    *minor = v[7] - '0';
    return 0;
}

/* Split the copied head into lines and parse the header fields. The first
 * line is returned in *first. */
static int parse_fields(http_head_t *h, size_t len, char **first, const char **why)
{
    char *p = h->buf, *end = h->buf + len;
    char *nl = strstr(p, "\r\n");
    if (!nl) {
        *why = "no CRLF";
        return -EINVAL;
    }
    *nl = '\0';
    *first = p;
    p = nl + 2;
    while (p < end) {
        nl = strstr(p, "\r\n");
        if (!nl) {
            *why = "unterminated header line";
            return -EINVAL;
        }
        *nl = '\0';
        if (nl == p)
            break;                      /* empty line: end of head */
        if (*p == ' ' || *p == '\t') {
            *why = "obs-fold";
            return -EINVAL;
        }
        char *colon = p;
        while (colon < nl && is_tchar((unsigned char)*colon))
            colon++;
        if (colon == p || *colon != ':') {
            *why = "bad header name";
            return -EINVAL;
        }
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        for (char *c = v; c < nl; c++) {
            unsigned char u = (unsigned char)*c;
            if ((u < 0x20 && u != '\t') || u == 0x7f) {
                *why = "control character in header value";
                return -EINVAL;
            }
        }
        char *ve = nl;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            *--ve = '\0';
        if (h->nh == HTTP_MAX_HEADERS) {
            *why = "too many headers";
            return -EINVAL;
        }
        h->h[h->nh].name = p;
        h->h[h->nh].value = v;
        h->nh++;
        p = nl + 2;
    }
    return 0;
}

/* Content-Length / Transfer-Encoding / Connection semantics. */
static int parse_framing(http_head_t *h, const char **why)
{
    bool have_cl = false, have_te = false;
    uint64_t cl = 0;
    int hosts = 0;
    bool conn_close = false, conn_keep = false, conn_upgrade = false;
    for (size_t i = 0; i < h->nh; i++) {
        const char *n = h->h[i].name, *v = h->h[i].value;
        if (strcasecmp(n, "Content-Length") == 0) {
            if (!*v || strlen(v) > 18) {
                *why = "bad Content-Length";
                return -EINVAL;
            }
            uint64_t x = 0;
            for (const char *c = v; *c; c++) {
                if (!isdigit((unsigned char)*c)) {
                    *why = "bad Content-Length";
                    return -EINVAL;
                }
                x = x * 10 + (uint64_t)(*c - '0');
            }
            if (have_cl && x != cl) {
                *why = "conflicting Content-Length";
                return -EINVAL;
            }
            have_cl = true;
            cl = x;
        } else if (strcasecmp(n, "Transfer-Encoding") == 0) {
            if (have_te || strcasecmp(v, "chunked") != 0) {
                *why = "unsupported Transfer-Encoding";
                return -EINVAL;
            }
            have_te = true;
        } else if (strcasecmp(n, "Host") == 0) {
            hosts++;
            h->host = v;
        } else if (strcasecmp(n, "Connection") == 0) {
            conn_close |= http_token_list_has(v, "close");
            conn_keep |= http_token_list_has(v, "keep-alive");
            conn_upgrade |= http_token_list_has(v, "upgrade");
        } else if (strcasecmp(n, "Expect") == 0) {
            h->expect_continue = strcasecmp(v, "100-continue") == 0;
        }
    }
    if (have_cl && have_te) {
        *why = "both Content-Length and Transfer-Encoding";
        return -EINVAL;
    }
    if (have_te && h->minor == 0) {
        *why = "Transfer-Encoding in HTTP/1.0";
        return -EINVAL;
    }
    if (h->is_request && (hosts > 1 || (hosts == 0 && h->minor == 1))) {
        *why = "missing or repeated Host";
        return -EINVAL;
    }
    h->close = conn_close || (h->minor == 0 && !conn_keep);
    h->upgrade = conn_upgrade && http_header_get(h, "Upgrade") != NULL;
    if (have_te)
        h->body = BODY_CHUNKED;
    else if (have_cl) {
        h->body = cl ? BODY_LENGTH : BODY_NONE;
        h->length = cl;
    } else {
        h->body = h->is_request ? BODY_NONE : BODY_CLOSE;
    }
    return 0;
}

static int head_copy(const char *buf, size_t len, http_head_t *h, const char **why)
{
    memset(h, 0, sizeof *h);
    if (len < 4 || len > HTTP_HEAD_MAX || memcmp(buf + len - 4, "\r\n\r\n", 4) != 0) {
        *why = "incomplete head";
        return -EINVAL;
    }
    if (memchr(buf, '\0', len)) {
        *why = "NUL in head";
        return -EINVAL;
    }
    if (http_head_end(buf, len) != (long)len) {
        *why = "bare LF";
        return -EINVAL;
    }
    for (size_t i = 0; i + 1 < len; i++)
        if (buf[i] == '\r' && buf[i + 1] != '\n') {
            *why = "bare CR";
            return -EINVAL;
        }
    h->buf = malloc(len + 1);
    if (!h->buf)
        return -ENOMEM;
    memcpy(h->buf, buf, len);
    h->buf[len] = '\0';
    return 0;
}

int http_parse_request(const char *buf, size_t len, http_head_t *out, const char **why)
{
    http_head_t h;
    char *first;
    int r = head_copy(buf, len, &h, why);
    if (r < 0)
        return r;
    h.is_request = true;
    if ((r = parse_fields(&h, len, &first, why)) < 0)
        goto fail;
    r = -EINVAL;
    char *sp1 = strchr(first, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strchr(sp2 + 1, ' ')) {
        *why = "bad request line";
        goto fail;
    }
    *sp1 = *sp2 = '\0';
    h.method = first;
    h.target = sp1 + 1;
    if (!*h.method || strlen(h.method) > 32 || !*h.target) {
        *why = "bad request line";
        goto fail;
    }
    for (char *c = h.method; *c; c++)
        if (!is_tchar((unsigned char)*c)) {
            *why = "bad method";
            goto fail;
        }
    for (char *c = h.target; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f) {
            *why = "bad request target";
            goto fail;
        }
    if (parse_version(sp2 + 1, &h.minor) < 0) {
        *why = "unsupported HTTP version";
        goto fail;
    }
    if (strcmp(h.method, "CONNECT") == 0) {
        *why = "CONNECT not supported";
        goto fail;
    }
    if ((r = parse_framing(&h, why)) < 0)
        goto fail;
    *out = h;
    return 0;
fail:
    http_head_free(&h);
    return r;
}

int http_parse_response(const char *buf, size_t len, const char *req_method, http_head_t *out,
                        const char **why)
{
    http_head_t h;
    char *first;
    int r = head_copy(buf, len, &h, why);
    if (r < 0)
        return r;
    if ((r = parse_fields(&h, len, &first, why)) < 0)
        goto fail;
    r = -EINVAL;
    /* "HTTP/1.1 200 OK" — reason may be empty or contain spaces */
    if (strlen(first) < 12 || first[8] != ' ' || !isdigit((unsigned char)first[9]) ||
        !isdigit((unsigned char)first[10]) || !isdigit((unsigned char)first[11]) ||
        (first[12] != ' ' && first[12] != '\0')) {
        *why = "bad status line";
        goto fail;
    }
    first[8] = '\0';
    if (parse_version(first, &h.minor) < 0) {
        *why = "unsupported HTTP version";
        goto fail;
    }
    h.status = (first[9] - '0') * 100 + (first[10] - '0') * 10 + (first[11] - '0');
    h.reason = first[12] ? first + 13 : first + 12;
    if (h.status < 100) {
        *why = "bad status";
        goto fail;
    }
    if ((r = parse_framing(&h, why)) < 0)
        goto fail;
    if ((req_method && strcmp(req_method, "HEAD") == 0) || h.status < 200 || h.status == 204 ||
        h.status == 304)
        h.body = BODY_NONE;
    *out = h;
    return 0;
fail:
    http_head_free(&h);
    return r;
}

int http_parse_chunk_size(const char *line, size_t len, uint64_t *size)
{
    uint64_t v = 0;
    size_t i = 0;
    for (; i < len && isxdigit((unsigned char)line[i]); i++) {
        if (i >= 15)
            return -EINVAL;             /* > 2^60: never a real chunk */
        int d = isdigit((unsigned char)line[i]) ? line[i] - '0' : (tolower((unsigned char)line[i]) - 'a' + 10);
        v = v * 16 + (uint64_t)d;
    }
    if (i == 0)
        return -EINVAL;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    if (i < len) {
        if (line[i] != ';')
            return -EINVAL;
        for (; i < len; i++) {
            unsigned char c = (unsigned char)line[i];
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return -EINVAL;
        }
    }
    *size = v;
    return 0;
}

static uint32_t rd(const uint8_t *p, int n)
{
    uint32_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

int tls_peek_sni(const uint8_t *buf, size_t len, char *out, size_t cap)
{
    if (len < 5)
        return len && buf[0] != 0x16 ? -EINVAL : -EAGAIN;
    if (buf[0] != 0x16 || buf[1] != 0x03)
        return -EINVAL;
    size_t rlen = rd(buf + 3, 2);
    if (rlen < 4 || rlen > 16384 + 2048)
        return -EINVAL;
    if (len < 5 + rlen)
        return -EAGAIN;
    const uint8_t *p = buf + 5, *end = p + rlen;
    if (p[0] != 0x01)
        return -EINVAL;
    size_t hlen = rd(p + 1, 3);
    p += 4;
    if (hlen > (size_t)(end - p))
        return -EINVAL;                 /* hello split over records: not handled */
    end = p + hlen;
#define NEED(n) do { if ((size_t)(end - p) < (size_t)(n)) return -EINVAL; } while (0)
    NEED(2 + 32 + 1);
    p += 2 + 32;
    size_t sid = p[0];
    p += 1;
    NEED(sid + 2);
    p += sid;
    size_t cs = rd(p, 2);
    p += 2;
    NEED(cs + 1);
    p += cs;
    size_t comp = p[0];
    p += 1;
    NEED(comp);
    p += comp;
    if (p == end)
        return 0;
    NEED(2);
    size_t elen = rd(p, 2);
    p += 2;
    NEED(elen);
    end = p + elen;
    while (p < end) {
        NEED(4);
        uint32_t type = rd(p, 2);
        size_t l = rd(p + 2, 2);
        p += 4;
        NEED(l);
        if (type == 0) {
            const uint8_t *q = p, *qe = p + l;
            if (l < 2 || rd(q, 2) != l - 2)
                return -EINVAL;
            q += 2;
            while (qe - q >= 3) {
                uint8_t nt = q[0];
                size_t nl = rd(q + 1, 2);
                q += 3;
                if ((size_t)(qe - q) < nl)
                    return -EINVAL;
                if (nt == 0) {
                    if (nl == 0 || nl >= cap)
                        return -EINVAL;
                    for (size_t i = 0; i < nl; i++) {
                        unsigned char c = q[i];
                        if (!(isalnum(c) || c == '-' || c == '.' || c == '_'))
                            return -EINVAL;
                        out[i] = (char)tolower(c);
                    }
                    out[nl] = '\0';
                    if (nl > 0 && out[nl - 1] == '.')
                        out[nl - 1] = '\0';
                    return 1;
                }
                q += nl;
            }
            return -EINVAL;
        }
        p += l;
    }
#undef NEED
    return 0;
}

bool http_host_matches(const char *host_hdr, const char *name, uint16_t port)
{
    const char *colon = strrchr(host_hdr, ':');
    size_t hl = colon ? (size_t)(colon - host_hdr) : strlen(host_hdr);
    if (hl > 0 && host_hdr[hl - 1] == '.')
        hl--;                           /* "example.com." is the same name */
    if (hl != strlen(name) || strncasecmp(host_hdr, name, hl) != 0)
        return false;
    if (colon) {
        const char *ps = colon + 1;
        if (!*ps || strlen(ps) > 5)
            return false;
        unsigned long v = 0;
        for (const char *c = ps; *c; c++) {
            if (!isdigit((unsigned char)*c))
                return false;
            v = v * 10 + (unsigned long)(*c - '0');
        }
        if (v != port)
            return false;
    }
    return true;
}
