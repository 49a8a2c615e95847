/* main.c — lanectl: command-line client for lanesd. Resolves the socket,
 * then hands argv to the subcommand (cmd_*.c). */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "lanectl.h"

int cmd_snapshot(lanectl_t *ctx, int argc, char **argv); /* cmd_snapshot.c */
int cmd_fork(lanectl_t *ctx, int argc, char **argv);     /* cmd_fork.c */
int cmd_store(lanectl_t *ctx, int argc, char **argv);    /* cmd_store.c */
int cmd_approvals(lanectl_t *ctx, int argc, char **argv); /* cmd_approve.c */
int cmd_approve(lanectl_t *ctx, int argc, char **argv);
int cmd_deny(lanectl_t *ctx, int argc, char **argv);

static const struct {
    const char *name;
    int (*fn)(lanectl_t *, int, char **);
    const char *summary;
} commands[] = {
    {"create", cmd_create, "create a lane"},
    {"boot", cmd_boot, "boot a lane and wait until it runs"},
    {"stop", cmd_stop, "stop a running lane"},
    {"rm", cmd_rm, "delete a lane and its disk"},
    {"ls", cmd_ls, "list lanes"},
    {"inspect", cmd_inspect, "show a lane as JSON"},
    {"exec", cmd_exec, "run a command in a lane"},
    {"shell", cmd_shell, "interactive shell in a lane (WebSocket, PTY)"},
    {"events", cmd_events, "follow lane events (state changes, boots)"},
    {"logs", cmd_logs, "print or follow a lane's console, qemu, nbdkit or netmed log"},
    {"cp", cmd_cp, "copy files into or out of a lane"},
    {"files", cmd_files, "list a directory or stat a path in a lane"},
    {"image", cmd_image, "build, import, list and remove base images"},
    {"snapshot", cmd_snapshot, "create, list, remove and restore lane snapshots"},
    {"fork", cmd_fork, "new lane sharing a lane's snapshot or current state"},
    {"store", cmd_store, "block store gc, verify and stats"},
    {"policy", cmd_policy, "show or change a lane's network policy (live)"},
    {"secret", cmd_secret, "set, list and remove a lane's secrets (values are write-only)"},
    {"audit", cmd_audit, "a lane's network decisions and intercepted requests"},
    {"approvals", cmd_approvals, "connections of a lane waiting for a human (\"ask\" rules)"},
    {"approve", cmd_approve, "allow a waiting connection (--remember: keep it in the policy)"},
    {"deny", cmd_deny, "refuse a waiting connection (--remember: keep it in the policy)"},
    {"doctor", cmd_doctor, "check this host can run lanes (KVM, QEMU, nbdkit, disk, lanesd)"},
    {"completion", cmd_completion, "print a bash or zsh completion script"},
    {"version", cmd_version, "show client and daemon versions"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: lanectl [--socket PATH] COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nRun 'lanectl COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    lanectl_t ctx = {.prog = "lanectl"};
    const char *sock_opt = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
            sock_opt = argv[++i];
        else if (strncmp(argv[i], "--socket=", 9) == 0)
            sock_opt = argv[i] + 9;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return EXIT_OK;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("lanectl %s\n", LANES_VERSION);
            return EXIT_OK;
        } else {
            lanectl_err("unknown option '%s'", argv[i]);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (lanectl_socket_path(sock_opt, getenv("LANES_SOCKET"), getenv("XDG_RUNTIME_DIR"), ctx.socket_path,
                            sizeof(ctx.socket_path)) < 0) {
        lanectl_err("socket path too long");
        return EXIT_USAGE;
    }
    for (size_t c = 0; c < sizeof(commands) / sizeof(commands[0]); c++) {
        if (strcmp(argv[i], commands[c].name) != 0)
            continue;
        curl_global_init(CURL_GLOBAL_DEFAULT);
        int r = commands[c].fn(&ctx, argc - i, argv + i);
        curl_global_cleanup();
        return r;
    }
    lanectl_err("unknown command '%s'", argv[i]);
    usage(stderr);
    return EXIT_USAGE;
}
