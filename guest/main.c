/* main.c — lane-init entry point.
 *
 * As PID 1 (the initramfs's /init): boot the guest (boot.c), serve the
 * control protocol on the virtio-serial port (agent.c), and power off when
 * told to. With `--agent-fd N` (not PID 1): skip boot duties and serve the
 * protocol on fd N — how the agent is tested on a host without a VM.
 *
 * The one context struct lives on the heap and is passed everywhere.
 * Signals: SIGCHLD/SIGTERM/SIGINT/SIGPWR are blocked and read from a
 * signalfd in the loop; SIGPIPE is ignored (children get defaults back).
 */
#include "lane_init.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

static void usage(void)
{
    fprintf(stderr, "usage: lane-init                 (as PID 1 in the lane's initramfs)\n"
                    "       lane-init --agent-fd N [--debug]\n");
}

/* Keep 0..2 occupied so every fd we create is >= 3. */
static void std_fds_fill(void)
{
    for (;;) {
        int fd = open("/dev/null", O_RDWR);
        if (fd < 0)
            return;
        if (fd > 2) {
            close(fd);
            return;
        }
    }
}

int main(int argc, char **argv)
{
    li_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return 1;
    ctx->log_fd = 2;
    ctx->port_fd = -1;
    ctx->sig_fd = -1;
    ctx->shutdown_mode = -1;

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGPWR);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (getpid() == 1) {
        ctx->pid1 = 1;
        boot_pid1(ctx);
    } else {
        for (int i = 1; i < argc; i++) {
            if (strcmp(argv[i], "--agent-fd") == 0 && i + 1 < argc) {
                char *end;
                long fd = strtol(argv[++i], &end, 10);
                if (*end || fd < 0 || fd > 65535) {
                    usage();
                    return 2;
                }
                ctx->port_fd = (int)fd;
            } else if (strcmp(argv[i], "--debug") == 0) {
                ctx->debug = 1;
            } else {
                usage();
                return 2;
            }
        }
        if (ctx->port_fd < 0) {
            usage();
            return 2;
        }
        int fl = fcntl(ctx->port_fd, F_GETFL);
        if (fl < 0 || fcntl(ctx->port_fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
            fcntl(ctx->port_fd, F_SETFD, FD_CLOEXEC) < 0) {
            fprintf(stderr, "lane-init: --agent-fd %d: %s\n", ctx->port_fd, strerror(errno));
            return 1;
        }
    }
    std_fds_fill();

    ctx->sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (ctx->sig_fd < 0) {
        li_log(ctx, "signalfd: %m");
        if (ctx->pid1)
            boot_shutdown(ctx, 0);
        return 1;
    }
    int r = agent_run(ctx);
    if (r < 0)
        li_log(ctx, "agent: %s", strerror(-r));
    if (ctx->pid1)
        boot_shutdown(ctx, ctx->shutdown_mode == 1 ? 1 : 0);
    close(ctx->sig_fd);
    free(ctx->outq);
    free(ctx);
    return 0;
}
