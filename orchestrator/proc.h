/* proc.h — run a helper program (lanes-rootfs, lanes-store) as a child of
 * lanesd without blocking the loop: its stderr is delivered line by line
 * (progress), its stdout collected (the result, capped at 64 KiB), and one
 * exit callback reports the outcome. */
#ifndef LANES_PROC_H
#define LANES_PROC_H

#include <uv.h>

typedef struct proc_run proc_run_t;

typedef struct {
    /* One stderr line without its newline (lines over 4 KiB are split). */
    void (*on_line)(proc_run_t *p, const char *line, void *ud);
    /* status: exit code (or -1 if killed by term_signal). out: stdout text,
     * trailing whitespace trimmed. The proc_run_t is freed after return. */
    void (*on_exit)(proc_run_t *p, int status, int term_signal, const char *out, void *ud);
} proc_run_callbacks_t;

/* argv[0] is a path. env may be NULL (inherit). Returns 0 or negative errno. */
int proc_run_start(uv_loop_t *loop, char *const argv[], char *const env[], const proc_run_callbacks_t *cb,
                   void *ud, proc_run_t **out);
/* Send SIGTERM (the exit callback still runs). */
void proc_run_kill(proc_run_t *p);

#endif
