/* lanesd.c — the lanes daemon: startup, recovery and the main loop.
 *
 * lanesd --state-dir DIR [--socket PATH] [--boot-timeout S] [--kernel K --initrd I]
 *
 * State directory layout:
 *   DIR/lanesd.db        SQLite (WAL): lanes, images, events
 *   DIR/lanesd.lock      flock: one lanesd per state dir
 *   DIR/lanesd.sock      the API (mode 0600)
 *   DIR/store/           the block store (chunks, map pages, refs)
 *   DIR/lanes/<id>/      per-lane runtime: sockets, console.log, qemu.log, nbdkit.log
 *
 * On SIGTERM/SIGINT lanesd stops serving and exits, leaving running lanes
 * running: they are durable processes and the next lanesd re-adopts them.
 */
#include "lanesd.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: lanesd --state-dir DIR [options]\n"
            "\n"
            "Runs the lanes daemon: boots lanes (QEMU microVMs) and serves the HTTP API\n"
            "on a unix socket.\n"
            "\n"
            "options:\n"
            "  --state-dir DIR      state directory (database, block store, lane runtime)\n"
            "                       default: $LANES_STATE_DIR or ~/.local/state/lanes\n"
            "  --socket PATH        API socket (default DIR/lanesd.sock, mode 0600)\n"
            "  --boot-timeout SEC   fail a boot that takes longer (default 120)\n"
            "  --kernel PATH        guest kernel (default: built by rootfs/lanes-rootfs)\n"
            "  --initrd PATH        guest initramfs (default: built by rootfs/lanes-rootfs)\n"
            "  --accel auto|kvm|tcg accelerator (default auto: KVM only with real hardware support)\n"
            "  --upstream-ca-bundle PEM  trust roots netmed verifies intercepted upstream TLS\n"
            "                       against (default: the host's trust store)\n"
            "  --listen-tcp HOST:PORT  also serve the API on TCP (requires --tokens)\n"
            "  --tokens FILE        bearer tokens for TCP, lines \"admin TOKEN\" or \"read-only TOKEN\"\n"
            "  --rootless           lane networks in user namespaces even as root (the default\n"
            "                       when lanesd is not root; see docs/lanesd.md)\n"
            "  --version, --help\n");
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
    lanesd_t *d = h->data;
    if (d->shutting_down)
        return;
    d->shutting_down = 1;
    util_log("signal %d: shutting down (lanes keep running; a restarted lanesd re-adopts them)", signum);
    uv_stop(d->loop);
}

static void on_housekeeping(uv_timer_t *t)
{
    vm_housekeeping(t->data);
}

static int self_dir(char *out, size_t len)
{
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n < 0)
        return -errno;
    exe[n] = '\0';
    snprintf(out, len, "%s", dirname(exe));
    return 0;
}

static int default_state_dir(char *out, size_t len)
{
    const char *env = getenv("LANES_STATE_DIR");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return 0;
    }
    const char *xdg = getenv("XDG_STATE_HOME");
    if (xdg && *xdg) {
        snprintf(out, len, "%s/lanes", xdg);
        return 0;
    }
    const char *home = getenv("HOME");
    if (!home)
        return -ENOENT;
    snprintf(out, len, "%s/.local/state/lanes", home);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"state-dir", required_argument, NULL, 's'}, {"socket", required_argument, NULL, 'S'},
        {"boot-timeout", required_argument, NULL, 'b'}, {"kernel", required_argument, NULL, 'k'},
        {"initrd", required_argument, NULL, 'i'}, {"accel", required_argument, NULL, 'a'},
        {"upstream-ca-bundle", required_argument, NULL, 'U'},
        {"version", no_argument, NULL, 'V'}, {"help", no_argument, NULL, 'h'},
        {"listen-tcp", required_argument, NULL, 'L'}, {"tokens", required_argument, NULL, 'K'},
        {"rootless", no_argument, NULL, 'R'}, {NULL, 0, NULL, 0},
    };
    const char *listen_tcp = NULL, *tokens_file = NULL; /* auth.c */
    lanesd_t d;
    memset(&d, 0, sizeof(d));
    d.boot_timeout_ms = 120000;
    const char *accel_opt = "auto";
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': snprintf(d.state_dir, sizeof(d.state_dir), "%s", optarg); break;
        case 'S': snprintf(d.socket_path, sizeof(d.socket_path), "%s", optarg); break;
        case 'b': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 3600) {
                fprintf(stderr, "lanesd: --boot-timeout must be 1..3600 seconds\n");
                return 2;
            }
            d.boot_timeout_ms = (uint64_t)v * 1000;
            break;
        }
        case 'k': snprintf(d.kernel, sizeof(d.kernel), "%s", optarg); break;
        case 'i': snprintf(d.initrd, sizeof(d.initrd), "%s", optarg); break;
        case 'a': accel_opt = optarg; break;
        case 'U':
            if (access(optarg, R_OK) < 0) {
                fprintf(stderr, "lanesd: --upstream-ca-bundle %s: %s\n", optarg, strerror(errno));
                return 2;
            }
            snprintf(d.upstream_ca, sizeof(d.upstream_ca), "%s", optarg);
            break;
        case 'L': listen_tcp = optarg; break;
        case 'K': tokens_file = optarg; break;
        case 'R': d.rootless = 1; break;
        case 'V': printf("lanesd %s\n", LANES_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (geteuid() != 0)
        d.rootless = 1; /* no named netns, no setns: lane networks need user namespaces */
    if (optind < argc) {
        fprintf(stderr, "lanesd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!d.state_dir[0] && default_state_dir(d.state_dir, sizeof(d.state_dir)) < 0) {
        fprintf(stderr, "lanesd: no --state-dir and no HOME to default it\n");
        return 2;
    }
    if ((d.kernel[0] != 0) != (d.initrd[0] != 0)) {
        fprintf(stderr, "lanesd: --kernel and --initrd go together\n");
        return 2;
    }
    if (!d.socket_path[0])
        snprintf(d.socket_path, sizeof(d.socket_path), "%s/lanesd.sock", d.state_dir);

    if (self_dir(d.bin_dir, sizeof(d.bin_dir)) < 0) {
        fprintf(stderr, "lanesd: cannot find my own directory: %s\n", strerror(errno));
        return 1;
    }
    const char *root = getenv("LANES_ROOT");
    snprintf(d.root_dir, sizeof(d.root_dir), "%s", root && *root ? root : LANES_SOURCE_DIR);

    char why[256];
    if (!strcmp(accel_opt, "auto")) {
        snprintf(d.accel, sizeof(d.accel), "%s", vm_probe_accel(why, sizeof(why)));
    } else if (!strcmp(accel_opt, "kvm") || !strcmp(accel_opt, "tcg")) {
        snprintf(d.accel, sizeof(d.accel), "%s", accel_opt);
        snprintf(why, sizeof(why), "--accel %s", accel_opt);
    } else {
        fprintf(stderr, "lanesd: --accel must be auto, kvm or tcg\n");
        return 2;
    }

    umask(077);
    int r = util_mkdir_p(d.state_dir, 0700);
    if (r < 0) {
        fprintf(stderr, "lanesd: create state dir %s: %s\n", d.state_dir, strerror(-r));
        return 1;
    }
    char path[700];
    snprintf(path, sizeof(path), "%s/lanesd.lock", d.state_dir);
    int lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB) < 0) {
        fprintf(stderr, "lanesd: %s: %s\n", path,
                errno == EWOULDBLOCK ? "another lanesd is already using this state directory" : strerror(errno));
        return 1;
    }
    snprintf(path, sizeof(path), "%s/lanes", d.state_dir);
    util_mkdir_p(path, 0700);

    signal(SIGPIPE, SIG_IGN);
    d.loop = uv_default_loop();

    char err[512];
    if (db_open(&d, err, sizeof(err)) < 0) {
        fprintf(stderr, "lanesd: %s\n", err);
        return 1;
    }
    snprintf(path, sizeof(path), "%s/store", d.state_dir);
    char *serr = NULL;
    r = store_open(path, 1, &d.store, &serr);
    if (r < 0) {
        fprintf(stderr, "lanesd: open block store %s: %s\n", path, serr ? serr : strerror(-r));
        free(serr);
        return 1;
    }

    http_server_opts_t hopts;
    memset(&hopts, 0, sizeof(hopts));
    d.http = http_server_new(d.loop, &hopts);
    if (!d.http) {
        fprintf(stderr, "lanesd: cannot create the HTTP server\n");
        return 1;
    }
    api_lanes_register(&d);
    api_exec_register(&d);
    api_files_register(&d);
    api_images_register(&d);
    api_net_register(&d);
    api_snapshots_register(&d);
    api_shell_register(&d);
    api_logs_register(&d);
    api_archive_register(&d);
    api_events_register(&d);
    api_approvals_register(&d);
    api_metrics_register(&d);
    api_stores_register(&d);
    auth_t *auth = NULL;
    if (listen_tcp) {
        if (!tokens_file) {
            fprintf(stderr, "lanesd: --listen-tcp requires --tokens FILE\n");
            return 2;
        }
        if (auth_load_tokens(tokens_file, &auth, err, sizeof(err)) < 0) {
            fprintf(stderr, "lanesd: %s\n", err);
            return 1;
        }
        http_server_set_auth(d.http, auth_check_request, auth);
    }

    if (db_lanes_load(&d) < 0) {
        fprintf(stderr, "lanesd: cannot load lanes from the state database\n");
        return 1;
    }
    for (lane_rt_t *l = d.lanes, *next; l; l = next) {
        next = l->next;
        vm_lane_recover(l);
    }

    if (auth_check_socket_dir(d.socket_path, err, sizeof(err)) < 0) {
        fprintf(stderr, "lanesd: refusing to serve: %s\n", err);
        return 1;
    }
    r = http_server_listen_unix(d.http, d.socket_path, 0600);
    if (r < 0) {
        fprintf(stderr, "lanesd: listen on %s: %s\n", d.socket_path, strerror(-r));
        return 1;
    }
    if (auth_check_socket(d.socket_path, err, sizeof(err)) < 0) {
        fprintf(stderr, "lanesd: refusing to serve: %s\n", err);
        unlink(d.socket_path);
        return 1;
    }
    if (listen_tcp) {
        char host[256];
        const char *colon = strrchr(listen_tcp, ':');
        int port = colon ? atoi(colon + 1) : 0;
        snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - listen_tcp) : 0, listen_tcp);
        if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* [::1]:PORT */
            memmove(host, host + 1, strlen(host));
            host[strlen(host) - 1] = '\0';
        }
        r = http_server_listen_tcp(d.http, host, port);
        if (r < 0) {
            fprintf(stderr, "lanesd: listen on TCP %s: %s\n", listen_tcp, strerror(-r));
            return 1;
        }
        util_log("also serving on TCP %s (bearer tokens from %s)", listen_tcp, tokens_file);
    }
    uv_signal_init(d.loop, &d.sigterm);
    uv_signal_init(d.loop, &d.sigint);
    d.sigterm.data = d.sigint.data = &d;
    uv_signal_start(&d.sigterm, on_stop_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_stop_signal, SIGINT);
    uv_timer_init(d.loop, &d.housekeeping);
    d.housekeeping.data = &d;
    uv_timer_start(&d.housekeeping, on_housekeeping, 1000, 1000);

    util_log("lanes %s serving on %s (state %s, accelerator %s: %s)", LANES_VERSION, d.socket_path, d.state_dir,
             d.accel, why);
    if (d.rootless) {
        char nwhy[512];
        if (net_rootless_probe(nwhy, sizeof(nwhy)) < 0)
            util_log("rootless mode: lanes with a network will fail: %s (--network none lanes work)", nwhy);
        else
            util_log("rootless mode: lane networks in user namespaces (%s)", nwhy);
    }
    uv_run(d.loop, UV_RUN_DEFAULT);

    unlink(d.socket_path);
    api_stores_close(&d);
    db_close(&d);
    store_close(d.store);
    util_log("bye");
    return 0;
}
