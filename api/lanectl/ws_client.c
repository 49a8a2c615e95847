/* ws_client.c — lanectl's WebSocket client (see ws_client.h). */
#include "ws_client.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"

#define WSC_MAX_MESSAGE (16u * 1024 * 1024)
#define WSC_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

struct ws_client {
    int fd;
    ws_client_parser_t parser;
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;
    size_t out_len, out_off;
    bool close_sent, close_received, eof;
    ws_client_msg_fn fn;
    void *ud;
};

/* ---- decoder --------------------------------------------------------------------------- */

long ws_client_parse(ws_client_parser_t *p, const uint8_t *buf, size_t len,
                     void (*frame_fn)(int op, const uint8_t *data, size_t len, void *ud), void *ud)
{
    size_t off = 0;
    size_t max = p->max_message ? p->max_message : WSC_MAX_MESSAGE;
    for (;;) {
        const uint8_t *h = buf + off;
        size_t avail = len - off;
        if (avail < 2)
            return (long)off;
        if (h[1] & 0x80)
            return -1; /* servers never mask */
        if (h[0] & 0x70)
            return -1;
        int fin = h[0] & 0x80, op = h[0] & 0x0f;
        uint64_t n = h[1] & 0x7f;
        size_t hl = 2;
        if (n == 126) {
            if (avail < 4)
                return (long)off;
            n = ((uint64_t)h[2] << 8) | h[3];
            hl = 4;
        } else if (n == 127) {
            if (avail < 10)
                return (long)off;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = (n << 8) | h[2 + i];
            hl = 10;
        }
        if (n > max)
            return -1;
        if (avail - hl < n)
            return (long)off;
        const uint8_t *payload = h + hl;
        off += hl + (size_t)n;
        if (op >= 8) {
            if (!fin || n > 125 || (op != WSC_CLOSE && op != WSC_PING && op != WSC_PONG))
                return -1;
            frame_fn(op, payload, (size_t)n, ud);
            continue;
        }
        if (op == 0) {
            if (!p->msg_type)
                return -1;
        } else if (op == WSC_TEXT || op == WSC_BINARY) {
            if (p->msg_type)
                return -1;
            if (fin) { /* the common case: no copy */
                frame_fn(op, payload, (size_t)n, ud);
                continue;
            }
            p->msg_type = op;
            p->msg_len = 0;
        } else {
            return -1;
        }
        if (n > max - p->msg_len)
            return -1;
        uint8_t *m = realloc(p->msg, p->msg_len + (size_t)n + 1);
        if (!m)
            return -1;
        p->msg = m;
        memcpy(m + p->msg_len, payload, (size_t)n);
        p->msg_len += (size_t)n;
        if (fin) {
            int t = p->msg_type;
            p->msg_type = 0;
            frame_fn(t, p->msg, p->msg_len, ud);
        }
    }
}

/* ---- connection ------------------------------------------------------------------------- */

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int ws_client_connect(lanectl_t *ctx, const char *path, ws_client_t **out, long *http_status)
{
    *http_status = 0;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        lanectl_err("socket: %s", strerror(errno));
        return -1;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", ctx->socket_path);
    int r;
    do
        r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        lanectl_err("cannot reach lanesd at %s: %s (is lanesd running? set --socket or LANES_SOCKET)",
                    ctx->socket_path, strerror(errno));
        close(fd);
        return -1;
    }
    unsigned char nonce[16];
    char key[32], want[32];
    if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
        lanectl_err("no randomness for the WebSocket key");
        close(fd);
        return -1;
    }
    EVP_EncodeBlock((unsigned char *)key, nonce, sizeof(nonce));
    char kg[64];
    snprintf(kg, sizeof(kg), "%s%s", key, WSC_GUID);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_Digest(kg, strlen(kg), md, &mdlen, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)want, md, (int)mdlen);

    char *req = NULL;
    int n = asprintf(&req,
                     "GET %s HTTP/1.1\r\nHost: lanes\r\nUser-Agent: lanectl/" LANES_VERSION "\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     path, key);
    if (n < 0 || write_all(fd, req, (size_t)n) < 0) {
        free(req);
        lanectl_err("send to lanesd at %s: %s", ctx->socket_path, strerror(errno));
        close(fd);
        return -1;
    }
    free(req);

    /* Read the response head (and, for errors, the body). */
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);
    char *end = NULL;
    while (buf && !(end = strstr(buf, "\r\n\r\n"))) {
        if (len == cap)
            break;
        ssize_t k = read(fd, buf + len, cap - len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        len += (size_t)k;
        buf[len] = '\0';
    }
    if (!buf || !end) {
        lanectl_err("lanesd at %s closed the connection during the WebSocket handshake", ctx->socket_path);
        free(buf);
        close(fd);
        return -1;
    }
    int status = 0;
    sscanf(buf, "HTTP/1.1 %d", &status);
    *http_status = status;
    size_t head_len = (size_t)(end - buf) + 4;
    if (status != 101) {
        /* An ordinary JSON error answer: read its body (Content-Length). */
        long clen = 0;
        for (char *l = strstr(buf, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n"))
            if (!strncasecmp(l + 2, "Content-Length:", 15))
                clen = strtol(l + 17, NULL, 10);
        while (clen > 0 && len < head_len + (size_t)clen && len < cap) {
            ssize_t k = read(fd, buf + len, cap - len);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                break;
            len += (size_t)k;
        }
        buf[len] = '\0';
        client_report_api_error(status, buf + head_len, len - head_len);
        free(buf);
        close(fd);
        return -1;
    }
    char accept_hdr[80];
    snprintf(accept_hdr, sizeof(accept_hdr), "\r\nSec-WebSocket-Accept: %s\r\n", want);
    if (!strcasestr(buf, accept_hdr)) {
        lanectl_err("lanesd's WebSocket handshake answer is invalid");
        free(buf);
        close(fd);
        return -1;
    }
    ws_client_t *c = calloc(1, sizeof(*c));
    if (!c) {
        free(buf);
        close(fd);
        return -1;
    }
    c->fd = fd;
    /* Frames that came with the handshake answer. */
    c->in_len = len - head_len;
    c->in_cap = c->in_len + 65536;
    c->in = malloc(c->in_cap);
    if (!c->in) {
        free(buf);
        ws_client_free(c);
        return -1;
    }
    memcpy(c->in, buf + head_len, c->in_len);
    free(buf);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    *out = c;
    return 0;
}

int ws_client_fd(const ws_client_t *c)
{
    return c->fd;
}

size_t ws_client_queued(const ws_client_t *c)
{
    return c->out_len - c->out_off;
}

bool ws_client_want_write(const ws_client_t *c)
{
    return c->out_off < c->out_len;
}

int ws_client_flush(ws_client_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n <= 0)
            return -1;
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

static int queue_frame(ws_client_t *c, int opcode, const void *data, size_t len)
{
    if (c->out_off > 0 && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    uint8_t *o = realloc(c->out, c->out_len + len + 14);
    if (!o)
        return -1;
    c->out = o;
    uint8_t *f = o + c->out_len;
    size_t n = 0;
    f[n++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        f[n++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        f[n++] = 0x80 | 126;
        f[n++] = (uint8_t)(len >> 8);
        f[n++] = (uint8_t)len;
    } else {
        f[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            f[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint8_t mask[4];
    if (RAND_bytes(mask, 4) != 1)
        return -1;
    memcpy(f + n, mask, 4);
    n += 4;
    for (size_t i = 0; i < len; i++)
        f[n + i] = ((const uint8_t *)data)[i] ^ mask[i & 3];
    c->out_len += n + len;
    return ws_client_flush(c);
}

int ws_client_send(ws_client_t *c, int opcode, const void *data, size_t len)
{
    if (c->close_sent)
        return -1;
    if (opcode == WSC_CLOSE)
        c->close_sent = true;
    return queue_frame(c, opcode, data, len);
}

static void on_frame(int op, const uint8_t *data, size_t len, void *ud)
{
    ws_client_t *c = ud;
    if (op == WSC_PING) {
        if (!c->close_sent)
            queue_frame(c, WSC_PONG, data, len);
        return;
    }
    if (op == WSC_PONG)
        return;
    if (op == WSC_CLOSE) {
        int code = len >= 2 ? (data[0] << 8) | data[1] : 1005;
        if (!c->close_sent) {
            c->close_sent = true;
            queue_frame(c, WSC_CLOSE, data, len >= 2 ? 2 : 0);
        }
        c->close_received = true;
        c->fn(WSC_CLOSE, len >= 2 ? data + 2 : data, len >= 2 ? len - 2 : 0, code, c->ud);
        return;
    }
    if (!c->close_received)
        c->fn(op, data, len, 0, c->ud);
}

int ws_client_read(ws_client_t *c, ws_client_msg_fn fn, void *ud)
{
    c->fn = fn;
    c->ud = ud;
    for (;;) {
        if (c->in_len) {
            long used = ws_client_parse(&c->parser, c->in, c->in_len, on_frame, c);
            if (used < 0) {
                lanectl_err("protocol error on the WebSocket from lanesd");
                return -1;
            }
            memmove(c->in, c->in + used, c->in_len - (size_t)used);
            c->in_len -= (size_t)used;
        }
        if (c->close_received) {
            ws_client_flush(c);
            return 1;
        }
        if (c->eof)
            return 1;
        if (c->in_cap - c->in_len < 65536) {
            size_t cap = c->in_len + 65536 * 2;
            uint8_t *n = realloc(c->in, cap);
            if (!n)
                return -1;
            c->in = n;
            c->in_cap = cap;
        }
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n <= 0) {
            c->eof = true;
            if (c->in_len == 0)
                return 1;
            continue;
        }
        c->in_len += (size_t)n;
    }
}

void ws_client_free(ws_client_t *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c->parser.msg);
    free(c->in);
    free(c->out);
    free(c);
}
