/* progress.h — a one-line transfer progress meter for lanectl (cp, cp -r).
 *
 * Drawn on stderr with '\r' and erase-to-end-of-line, at most ~8 times a
 * second, only when enabled (the caller passes isatty(stderr) && !--quiet),
 * so pipes and logs never see it. Bytes, rate, and a percentage with a bar
 * when the total is known. Fed by libcurl's transfer-info callback
 * (progress_attach) or by hand (progress_update). Not thread-safe: one
 * meter per transfer on the calling thread.
 */
#ifndef LANES_LANECTL_PROGRESS_H
#define LANES_LANECTL_PROGRESS_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    bool enabled;
    bool upload;        /* count bytes sent, not received */
    bool drawn;         /* something is on the line */
    char label[48];
    uint64_t total;     /* 0 = unknown */
    uint64_t done;
    int64_t start_ms, last_draw_ms;
} progress_t;

void progress_init(progress_t *p, const char *label, uint64_t total, bool upload, bool enabled);
/* Record done bytes; redraws when due. */
void progress_update(progress_t *p, uint64_t done);
/* Draw the final state and end the line (only if anything was drawn). */
void progress_finish(progress_t *p, bool ok);
/* Drive p from a curl easy handle's transfer info (uses the handle's
 * known upload/download size as the total when p has none). */
void progress_attach(progress_t *p, CURL *h);

/* Pure formatter (exposed for unit tests): "label  1.5 MiB / 4.0 MiB  37%
 * [=====     ]  512 KiB/s" or, with total 0, "label  1.5 MiB  512 KiB/s".
 * Returns the length written (truncated to len-1). */
size_t progress_format(char *buf, size_t len, const char *label, uint64_t done, uint64_t total, double seconds);

#endif
