/* lanes-bench-agent — talk to lane-init over a lane's control socket
 * (QEMU's virtio-serial chardev) with lanesd's own agent client, to measure
 * the exec round trip without lanesd, HTTP or lanectl in the path.
 *
 *   lanes-bench-agent SOCKET hello          handshake, print the HELLO as JSON
 *   lanes-bench-agent SOCKET rtt N [CMD...] N pings, then N sequential execs of
 *                                           CMD (default `true`); print samples
 *                                           and medians (JSON)
 *   lanes-bench-agent SOCKET exec CMD...    run CMD, copy its output, exit with
 *                                           its exit code (128+signal if killed)
 *
 * The socket is QEMU's (server=on): only one client at a time, so this is for
 * VMs the bench booted itself, never a lane lanesd is attached to.
 *
 * One exec round trip = from agent_exec_start() until on_exit() ran: request
 * frame out, fork+exec of /bin/true in the guest, EXEC_STARTED, both EOFs and
 * LP_EXIT back. Each sample is taken with the previous exec fully finished.
 *
 * Threading: one uv loop, everything in callbacks; no globals (state in
 * bench_t). A watchdog timer fails the run after --timeout seconds.
 */
#include "agent.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define DEFAULT_TIMEOUT_S 120
#define MAX_SAMPLES 100000

typedef enum { MODE_HELLO, MODE_RTT, MODE_EXEC } bench_mode_t;

typedef struct {
    uv_loop_t loop;
    uv_timer_t watchdog;
    agent_t *agent;
    bench_mode_t mode;
    const char *const *exec_argv; /* exec: the command; rtt: the timed command */
    int runs;
    int done_pings, done_execs;
    uint64_t t0;            /* uv_hrtime() when the current sample started */
    uint64_t *ping_ns, *exec_ns;
    uint64_t *started_ns;   /* rtt: request → EXEC_STARTED (guest fork+exec done) */
    agent_hello_t hello;
    int exit_code;          /* process exit code when the loop ends */
    int finished;
} bench_t;

static void bench_finish(bench_t *b, int code)
{
    if (b->finished)
        return;
    b->finished = 1;
    b->exit_code = code;
    uv_timer_stop(&b->watchdog);
    uv_close((uv_handle_t *)&b->watchdog, NULL);
    agent_free(b->agent);
    b->agent = NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Median of n samples in microseconds (sorts v). */
static double median_us(uint64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_u64);
    if (n % 2)
        return (double)v[n / 2] / 1000.0;
    return ((double)v[n / 2 - 1] + (double)v[n / 2]) / 2000.0;
}

static void print_samples(const char *name, const uint64_t *v, int n)
{
    printf("\"%s\":[", name);
    for (int i = 0; i < n; i++)
        printf("%s%.1f", i ? "," : "", (double)v[i] / 1000.0);
    printf("]");
}

static void rtt_report(bench_t *b)
{
    printf("{\"runs\":%d,", b->runs);
    print_samples("ping_us", b->ping_ns, b->runs);
    printf(",");
    print_samples("exec_us", b->exec_ns, b->runs);
    printf(",");
    print_samples("started_us", b->started_ns, b->runs);
    double pm = median_us(b->ping_ns, b->runs), sm = median_us(b->started_ns, b->runs);
    double em = median_us(b->exec_ns, b->runs);
    printf(",\"ping_median_us\":%.1f,\"started_median_us\":%.1f,\"exec_median_us\":%.1f,"
           "\"exec_min_us\":%.1f,\"exec_max_us\":%.1f}\n",
           pm, sm, em, (double)b->exec_ns[0] / 1000.0, (double)b->exec_ns[b->runs - 1] / 1000.0);
}

/* ---- exec of `true` (rtt) and of a user command (exec) ------------------------------- */

static void rtt_next(bench_t *b);

static void on_exec_started(agent_exec_t *e, uint32_t pid, void *ud)
{
    bench_t *b = ud;
    (void)e;
    (void)pid;
    if (b->mode == MODE_RTT && b->done_execs < b->runs)
        b->started_ns[b->done_execs] = uv_hrtime() - b->t0;
}

static void on_exec_output(agent_exec_t *e, int fd, const uint8_t *data, size_t len, void *ud)
{
    bench_t *b = ud;
    if (b->mode == MODE_EXEC)
        (void)!fwrite(data, 1, len, fd == 2 ? stderr : stdout);
    agent_exec_ack(e, len);
}

static void on_exec_exit(agent_exec_t *e, const agent_exit_t *x, void *ud)
{
    bench_t *b = ud;
    (void)e;
    if (b->finished)
        return;
    if (b->mode == MODE_EXEC) {
        fflush(stdout);
        if (x->error) {
            fprintf(stderr, "lanes-bench-agent: exec: %s\n", x->message);
            bench_finish(b, 127);
        } else {
            bench_finish(b, x->exited ? x->code : 128 + x->term_signal);
        }
        return;
    }
    uint64_t dt = uv_hrtime() - b->t0;
    if (x->error || !x->exited || x->code != 0) {
        fprintf(stderr, "lanes-bench-agent: %s did not exit 0: %s (exited %d code %d signal %d)\n",
                b->exec_argv[0], x->error ? x->message : "-", x->exited, x->code, x->term_signal);
        bench_finish(b, 1);
        return;
    }
    b->exec_ns[b->done_execs++] = dt;
    rtt_next(b);
}

static const agent_exec_callbacks_t exec_cbs = {on_exec_started, on_exec_output, NULL, on_exec_exit};

static int exec_start(bench_t *b, const char *const *argv)
{
    agent_exec_opts_t o;
    memset(&o, 0, sizeof(o));
    o.argv = argv;
    agent_exec_t *e;
    return agent_exec_start(b->agent, &o, &exec_cbs, b, &e);
}

static void on_ping(agent_t *a, int err, const char *msg, void *ud)
{
    bench_t *b = ud;
    (void)a;
    if (b->finished)
        return;
    if (err) {
        fprintf(stderr, "lanes-bench-agent: ping: %s\n", msg ? msg : strerror(-err));
        bench_finish(b, 1);
        return;
    }
    b->ping_ns[b->done_pings++] = uv_hrtime() - b->t0;
    rtt_next(b);
}

/* Start the next sample: pings first, then execs, then report. */
static void rtt_next(bench_t *b)
{
    int r;
    b->t0 = uv_hrtime();
    if (b->done_pings < b->runs) {
        r = agent_ping(b->agent, on_ping, b);
    } else if (b->done_execs < b->runs) {
        r = exec_start(b, b->exec_argv);
    } else {
        rtt_report(b);
        bench_finish(b, 0);
        return;
    }
    if (r < 0) {
        fprintf(stderr, "lanes-bench-agent: request: %s\n", strerror(-r));
        bench_finish(b, 1);
    }
}

/* ---- connection -------------------------------------------------------------------- */

static void on_ready(agent_t *a, const agent_hello_t *hello, void *ud)
{
    bench_t *b = ud;
    (void)a;
    b->hello = *hello;
    switch (b->mode) {
    case MODE_HELLO:
        printf("{\"hostname\":\"%s\",\"kernel\":\"%s\",\"boot_ms\":%" PRIu64 "}\n", hello->hostname, hello->kernel,
               hello->boot_ms);
        bench_finish(b, 0);
        break;
    case MODE_RTT:
        rtt_next(b);
        break;
    case MODE_EXEC: {
        int r = exec_start(b, b->exec_argv);
        if (r < 0) {
            fprintf(stderr, "lanes-bench-agent: exec: %s\n", strerror(-r));
            bench_finish(b, 1);
        }
        break;
    }
    }
}

static void on_disconnect(agent_t *a, int err, const char *msg, void *ud)
{
    bench_t *b = ud;
    (void)a;
    if (b->finished)
        return;
    fprintf(stderr, "lanes-bench-agent: agent channel closed: %s (%s)\n", msg ? msg : "", strerror(-err));
    bench_finish(b, 1); /* agent_free() is safe inside agent callbacks (agent.h) */
}

static void on_watchdog(uv_timer_t *t)
{
    bench_t *b = t->data;
    fprintf(stderr, "lanes-bench-agent: timed out\n");
    bench_finish(b, 1);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: lanes-bench-agent [--timeout SEC] SOCKET hello\n"
               "       lanes-bench-agent [--timeout SEC] SOCKET rtt N [CMD [ARGS...]]\n"
               "       lanes-bench-agent [--timeout SEC] SOCKET exec CMD [ARGS...]\n");
}

int main(int argc, char **argv)
{
    int timeout_s = DEFAULT_TIMEOUT_S;
    int i = 1;
    if (i < argc && (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (i + 1 < argc && !strcmp(argv[i], "--timeout")) {
        timeout_s = atoi(argv[i + 1]);
        i += 2;
    }
    if (argc - i < 2 || timeout_s <= 0) {
        usage(stderr);
        return 2;
    }
    bench_t b;
    memset(&b, 0, sizeof(b));
    const char *sock = argv[i];
    const char *cmd = argv[i + 1];
    if (!strcmp(cmd, "hello") && argc - i == 2) {
        b.mode = MODE_HELLO;
    } else if (!strcmp(cmd, "rtt") && argc - i >= 3) {
        b.mode = MODE_RTT;
        char *end;
        long n = strtol(argv[i + 2], &end, 10);
        if (*end || n < 1 || n > MAX_SAMPLES) {
            fprintf(stderr, "lanes-bench-agent: N must be 1..%d\n", MAX_SAMPLES);
            return 2;
        }
        b.runs = (int)n;
        b.ping_ns = calloc((size_t)n, sizeof(uint64_t));
        b.exec_ns = calloc((size_t)n, sizeof(uint64_t));
        b.started_ns = calloc((size_t)n, sizeof(uint64_t));
        static const char *const true_argv[] = {"true", NULL};
        b.exec_argv = argc - i > 3 ? (const char *const *)&argv[i + 3] : true_argv;
        if (!b.ping_ns || !b.exec_ns || !b.started_ns) {
            fprintf(stderr, "lanes-bench-agent: out of memory\n");
            return 1;
        }
    } else if (!strcmp(cmd, "exec") && argc - i >= 3) {
        b.mode = MODE_EXEC;
        b.exec_argv = (const char *const *)&argv[i + 2];
    } else {
        usage(stderr);
        return 2;
    }

    static const agent_callbacks_t cbs = {on_ready, on_disconnect};
    if (uv_loop_init(&b.loop) < 0) {
        fprintf(stderr, "lanes-bench-agent: uv_loop_init failed\n");
        return 1;
    }
    b.agent = agent_new(&b.loop, sock, &cbs, &b);
    if (!b.agent) {
        fprintf(stderr, "lanes-bench-agent: cannot create an agent for %s\n", sock);
        return 1;
    }
    uv_timer_init(&b.loop, &b.watchdog);
    b.watchdog.data = &b;
    uv_timer_start(&b.watchdog, on_watchdog, (uint64_t)timeout_s * 1000, 0);
    int r = agent_start(b.agent, (uint64_t)timeout_s * 1000);
    if (r < 0) {
        fprintf(stderr, "lanes-bench-agent: connect %s: %s\n", sock, strerror(-r));
        return 1;
    }
    uv_run(&b.loop, UV_RUN_DEFAULT);
    for (int k = 0; k < 100 && uv_run(&b.loop, UV_RUN_NOWAIT); k++)
        ;
    uv_loop_close(&b.loop);
    free(b.ping_ns);
    free(b.exec_ns);
    free(b.started_ns);
    fflush(stdout);
    return b.exit_code;
}
