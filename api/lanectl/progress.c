/* progress.c — lanectl's transfer progress line (see progress.h).
 *
 * The rate is the average since the start (steady, and what a user compares
 * between runs); redraws are limited to one per PROGRESS_INTERVAL_MS so a
 * fast transfer does not spend its time on the terminal.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "progress.h"
#include "table.h"

#define PROGRESS_INTERVAL_MS 125
#define PROGRESS_BAR 20

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

size_t progress_format(char *buf, size_t len, const char *label, uint64_t done, uint64_t total, double seconds)
{
    char d[32], t[32], r[32];
    format_size(done, d, sizeof(d));
    format_size(seconds > 0.05 ? (uint64_t)((double)done / seconds) : 0, r, sizeof(r));
    int n;
    if (total) {
        uint64_t pct = done >= total ? 100 : done * 100 / total;
        char bar[PROGRESS_BAR + 1];
        size_t fill = (size_t)(pct * PROGRESS_BAR / 100);
        memset(bar, '=', fill);
        memset(bar + fill, ' ', PROGRESS_BAR - fill);
        bar[PROGRESS_BAR] = '\0';
        format_size(total, t, sizeof(t));
        n = snprintf(buf, len, "%s  %s / %s  %3llu%% [%s]  %s/s", label, d, t, (unsigned long long)pct, bar, r);
    } else {
        n = snprintf(buf, len, "%s  %s  %s/s", label, d, r);
    }
    if (n < 0)
        return 0;
    return (size_t)n < len ? (size_t)n : len - 1;
}

static void progress_draw(progress_t *p, int64_t now)
{
    char line[256];
    size_t n = progress_format(line, sizeof(line), p->label, p->done, p->total,
                               (double)(now - p->start_ms) / 1000.0);
    /* one write: '\r', the line, erase what a longer previous line left */
    char out[300];
    int m = snprintf(out, sizeof(out), "\r%.*s\033[K", (int)n, line);
    if (m > 0) {
        ssize_t w;
        do
            w = write(STDERR_FILENO, out, (size_t)m < sizeof(out) ? (size_t)m : sizeof(out) - 1);
        while (w < 0 && errno == EINTR);
    }
    p->drawn = true;
    p->last_draw_ms = now;
}

void progress_init(progress_t *p, const char *label, uint64_t total, bool upload, bool enabled)
{
    memset(p, 0, sizeof(*p));
    p->enabled = enabled;
    p->upload = upload;
    p->total = total;
    snprintf(p->label, sizeof(p->label), "%s", label);
    p->start_ms = p->last_draw_ms = now_ms();
}

void progress_update(progress_t *p, uint64_t done)
{
    p->done = done;
    if (!p->enabled)
        return;
    int64_t now = now_ms();
    if (now - p->last_draw_ms >= PROGRESS_INTERVAL_MS)
        progress_draw(p, now);
}

void progress_finish(progress_t *p, bool ok)
{
    /* A transfer that finished before the first redraw leaves no trace. */
    if (!p->enabled || !p->drawn)
        return;
    if (ok && p->total && p->done < p->total)
        p->done = p->total;
    progress_draw(p, now_ms());
    ssize_t w;
    do
        w = write(STDERR_FILENO, "\n", 1);
    while (w < 0 && errno == EINTR);
}

static int on_xferinfo(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    progress_t *p = ud;
    curl_off_t total = p->upload ? ultotal : dltotal, now = p->upload ? ulnow : dlnow;
    if (!p->total && total > 0)
        p->total = (uint64_t)total;
    progress_update(p, now > 0 ? (uint64_t)now : 0);
    return 0;
}

void progress_attach(progress_t *p, CURL *h)
{
    if (!p->enabled)
        return;
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, p);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
}
