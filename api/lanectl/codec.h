/* codec.h — wire-format helpers for lanectl: base64 (exec output frames),
 * an NDJSON line splitter (streamed responses arrive in arbitrary pieces),
 * and URL query escaping. Pure code, no I/O. */
#ifndef LANES_LANECTL_CODEC_H
#define LANES_LANECTL_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* Decode standard base64 (padding optional). out must hold len/4*3+3 bytes.
 * Returns decoded length, or -EINVAL on a malformed input. */
long b64_decode(const char *in, size_t len, uint8_t *out);

typedef struct {
    char *buf;
    size_t len, cap;
    size_t max_line;   /* 0 = 16 MiB */
} ndjson_t;

/* Called per complete non-empty line (without '\n'); non-zero stops. */
typedef int (*ndjson_line_fn)(const char *line, size_t len, void *ud);

/* Feed bytes; calls fn for each complete line. Returns 0, fn's non-zero
 * value, -E2BIG for an over-long line or -ENOMEM. */
int ndjson_feed(ndjson_t *nd, const char *data, size_t len, ndjson_line_fn fn, void *ud);
/* End of stream: a last line without '\n' is delivered too. */
int ndjson_finish(ndjson_t *nd, ndjson_line_fn fn, void *ud);
void ndjson_free(ndjson_t *nd);

/* Percent-encode everything but unreserved characters and '/'. Caller frees. */
char *url_escape(const char *s);

#endif
