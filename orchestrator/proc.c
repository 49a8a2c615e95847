/* proc.c — non-blocking helper-program runner for lanesd (see proc.h).
 *
 * Lifetime: a proc_run_t owns a uv_process_t and two pipes; it is freed when
 * the process has exited AND both pipes reached EOF/closed, after on_exit.
 */
#include "proc.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define PROC_OUT_CAP (64 * 1024)
#define PROC_LINE_CAP 4096

struct proc_run {
    uv_process_t proc;
    uv_pipe_t out_pipe, err_pipe;
    proc_run_callbacks_t cb;
    void *ud;
    char out[PROC_OUT_CAP + 1];
    size_t out_len;
    char line[PROC_LINE_CAP + 1];
    size_t line_len;
    int exited, status, term_signal;
    int open_handles; /* handles not yet closed */
    int reported;
};

static void proc_maybe_finish(proc_run_t *p);

static void on_handle_closed(uv_handle_t *h)
{
    proc_run_t *p = h->data;
    if (--p->open_handles == 0)
        free(p);
}

static void proc_close_all(proc_run_t *p)
{
    uv_close((uv_handle_t *)&p->out_pipe, on_handle_closed);
    uv_close((uv_handle_t *)&p->err_pipe, on_handle_closed);
    uv_close((uv_handle_t *)&p->proc, on_handle_closed);
}

static void proc_maybe_finish(proc_run_t *p)
{
    if (p->reported || !p->exited)
        return;
    if (!uv_is_closing((uv_handle_t *)&p->out_pipe) && uv_is_active((uv_handle_t *)&p->out_pipe))
        return;
    if (!uv_is_closing((uv_handle_t *)&p->err_pipe) && uv_is_active((uv_handle_t *)&p->err_pipe))
        return;
    p->reported = 1;
    if (p->line_len && p->cb.on_line) {
        p->line[p->line_len] = '\0';
        p->cb.on_line(p, p->line, p->ud);
    }
    while (p->out_len && (p->out[p->out_len - 1] == '\n' || p->out[p->out_len - 1] == ' ' ||
                          p->out[p->out_len - 1] == '\r' || p->out[p->out_len - 1] == '\t'))
        p->out_len--;
    p->out[p->out_len] = '\0';
    if (p->cb.on_exit)
        p->cb.on_exit(p, p->status, p->term_signal, p->out, p->ud);
    proc_close_all(p);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void on_out_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    proc_run_t *p = s->data;
    if (n > 0) {
        size_t room = PROC_OUT_CAP - p->out_len;
        size_t take = (size_t)n < room ? (size_t)n : room;
        memcpy(p->out + p->out_len, buf->base, take);
        p->out_len += take;
    } else if (n < 0) {
        uv_read_stop(s);
    }
    free(buf->base);
    if (n < 0)
        proc_maybe_finish(p);
}

static void on_err_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    proc_run_t *p = s->data;
    for (ssize_t i = 0; i < n; i++) {
        char c = buf->base[i];
        if (c == '\n' || c == '\r' || p->line_len == PROC_LINE_CAP) {
            if (p->line_len) {
                p->line[p->line_len] = '\0';
                if (p->cb.on_line)
                    p->cb.on_line(p, p->line, p->ud);
            }
            p->line_len = 0;
            if (c == '\n' || c == '\r')
                continue;
        }
        p->line[p->line_len++] = c;
    }
    free(buf->base);
    if (n < 0) {
        uv_read_stop(s);
        proc_maybe_finish(p);
    }
}

static void on_proc_exit(uv_process_t *proc, int64_t status, int term_signal)
{
    proc_run_t *p = proc->data;
    p->exited = 1;
    p->status = term_signal ? -1 : (int)status;
    p->term_signal = term_signal;
    proc_maybe_finish(p);
}

int proc_run_start(uv_loop_t *loop, char *const argv[], char *const env[], const proc_run_callbacks_t *cb,
                   void *ud, proc_run_t **out)
{
    proc_run_t *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->cb = *cb;
    p->ud = ud;
    uv_pipe_init(loop, &p->out_pipe, 0);
    uv_pipe_init(loop, &p->err_pipe, 0);
    p->out_pipe.data = p->err_pipe.data = p->proc.data = p;
    p->open_handles = 3;

    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&p->out_pipe;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&p->err_pipe;

    uv_process_options_t opts;
    memset(&opts, 0, sizeof(opts));
    opts.file = argv[0];
    opts.args = (char **)argv;
    opts.env = (char **)env;
    opts.exit_cb = on_proc_exit;
    opts.stdio = stdio;
    opts.stdio_count = 3;
    int r = uv_spawn(loop, &p->proc, &opts);
    if (r < 0) {
        /* uv_spawn failed: the process handle still needs closing. */
        p->reported = 1;
        proc_close_all(p);
        return r;
    }
    uv_read_start((uv_stream_t *)&p->out_pipe, on_alloc, on_out_read);
    uv_read_start((uv_stream_t *)&p->err_pipe, on_alloc, on_err_read);
    if (out)
        *out = p;
    return 0;
}

void proc_run_kill(proc_run_t *p)
{
    if (p && !p->exited)
        uv_process_kill(&p->proc, SIGTERM);
}
