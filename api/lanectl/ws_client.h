/* ws_client.h — a small WebSocket client (RFC 6455) for lanectl over the
 * unix socket: libcurl 7.88 as built by Debian has no WebSocket support.
 *
 * Blocking handshake, then a non-blocking socket driven by the caller's
 * poll() loop: ws_client_fd() for POLLIN, ws_client_want_write() for
 * POLLOUT. Outgoing frames are masked and queued (ws_client_queued() lets
 * the caller stop producing); incoming frames are reassembled into whole
 * messages (capped) and handed to a callback. The frame decoder is pure
 * (ws_client_parse) so unit tests can feed it bytes.
 */
#ifndef LANES_LANECTL_WS_CLIENT_H
#define LANES_LANECTL_WS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lanectl.h"

typedef struct ws_client ws_client_t;

enum { WSC_TEXT = 1, WSC_BINARY = 2, WSC_CLOSE = 8, WSC_PING = 9, WSC_PONG = 10 };

/* A whole message (text/binary) or a close (data = reason, code in *code). */
typedef void (*ws_client_msg_fn)(int type, const uint8_t *data, size_t len, int code, void *ud);

/* Connect and upgrade GET path. On an HTTP error answer prints the API's
 * message; returns 0, -1 (printed). http_status gets the answer's status
 * (0 if none). */
int ws_client_connect(lanectl_t *ctx, const char *path, ws_client_t **out, long *http_status);
int ws_client_fd(const ws_client_t *c);
/* Queue one masked frame. 0 or -1 (closing). */
int ws_client_send(ws_client_t *c, int opcode, const void *data, size_t len);
size_t ws_client_queued(const ws_client_t *c);
bool ws_client_want_write(const ws_client_t *c);
/* Write what the socket takes. 0, or -1 on a socket error. */
int ws_client_flush(ws_client_t *c);
/* Read what is available and deliver messages. Returns 0, 1 once the
 * connection is finished (close frame exchanged or EOF), -1 on error
 * (protocol error printed). Pings are answered here. */
int ws_client_read(ws_client_t *c, ws_client_msg_fn fn, void *ud);
void ws_client_free(ws_client_t *c);

/* Pure decoder for tests: parse buf[0..len) into messages via fn; returns
 * bytes consumed (a partial frame stays), or -1 for a protocol error
 * (masked server frame, bad opcode, over max_message). */
typedef struct {
    uint8_t *msg;
    size_t msg_len;
    int msg_type;       /* 0 when no fragmented message is open */
    size_t max_message;
} ws_client_parser_t;
long ws_client_parse(ws_client_parser_t *p, const uint8_t *buf, size_t len,
                     void (*frame_fn)(int op, const uint8_t *data, size_t len, void *ud), void *ud);

#endif
