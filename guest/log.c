/* log.c — lane-init's console log and small I/O helpers.
 *
 * Lines go to ctx->log_fd (/dev/console as PID 1, stderr otherwise),
 * prefixed "lane-init: ". Errors are always logged; li_debug() only with
 * lanes.debug. Each line is one write() so lines from the kernel and ours do
 * not interleave mid-line. Single-threaded.
 */
#include "lane_init.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void log_line(li_ctx_t *ctx, const char *fmt, va_list ap)
{
    char line[1024];
    int n = snprintf(line, sizeof(line), "lane-init: ");
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    if (ctx->log_fd >= 0)
        (void)li_write_all(ctx->log_fd, line, len);
}

void li_log(li_ctx_t *ctx, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    errno = saved; /* keep %m meaningful */
    log_line(ctx, fmt, ap);
    va_end(ap);
    errno = saved;
}

void li_debug(li_ctx_t *ctx, const char *fmt, ...)
{
    if (!ctx->debug)
        return;
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    errno = saved;
    log_line(ctx, fmt, ap);
    va_end(ap);
    errno = saved;
}

uint64_t li_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Write everything, retrying EINTR and short writes (blocking fds only).
 * Returns 0 or negative errno. */
int li_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
