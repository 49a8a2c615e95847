/* cmd_doctor.c — lanectl doctor [--state-dir DIR]: can this host run lanes?
 *
 * One line per check, "OK", "WARN" or "FAIL", with a fix hint under every
 * WARN/FAIL: accelerator (KVM usable: /dev/kvm opens read-write and the CPU
 * shows vmx/svm — common/accel.c, the probe lanesd uses), QEMU, nbdkit
 * and the laneslocal plugin next to lanectl (nbdkit --dump-plugin),
 * nftables, network namespaces (`ip netns`, root or user namespaces), free
 * space in the state directory and in LANES_CACHE, lanesd reachable.
 * Exit status 1 if any check FAILed, else 0.
 *
 * Threading: single-threaded; runs each probe as a child process with a
 * pipe for its first line of output.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "accel.h"
#include "client.h"
#include "lanectl.h"

extern char **environ;

static const char usage[] = "usage: lanectl doctor [--state-dir DIR]\n"
                            "  checks KVM, QEMU, nbdkit + plugin, nftables, network namespaces,\n"
                            "  disk space and lanesd; exit status 1 if any check fails\n";

typedef struct {
    int fails, warns;
} doctor_t;

static void report(doctor_t *d, const char *level, const char *what, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void report(doctor_t *d, const char *level, const char *what, const char *hint, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%-4s  %-12s ", level, what);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (hint && strcmp(level, "OK") != 0)
        printf("      %-12s fix: %s\n", "", hint);
    if (!strcmp(level, "FAIL"))
        d->fails++;
    else if (!strcmp(level, "WARN"))
        d->warns++;
}

/* Run argv; first line of stdout+stderr into out. Exit status, or -1 if it
 * could not run (out gets the reason). */
static int run_first_line(const char *const *argv, char *out, size_t len)
{
    int p[2];
    out[0] = 0;
    if (pipe2(p, O_CLOEXEC) < 0) {
        snprintf(out, len, "pipe: %s", strerror(errno));
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_adddup2(&fa, p[1], 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    pid_t pid;
    int r = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    if (r != 0) {
        close(p[0]);
        snprintf(out, len, "%s: %s", argv[0], strerror(r));
        return -1;
    }
    size_t n = 0;
    char buf[4096];
    for (;;) {
        ssize_t k = read(p[0], buf, sizeof(buf));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        for (ssize_t i = 0; i < k && n + 1 < len; i++) {
            out[n++] = buf[i];
        }
    }
    out[n < len ? n : len - 1] = 0;
    char *nl = strchr(out, '\n');
    if (nl)
        *nl = 0;
    close(p[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void check_accel(doctor_t *d)
{
    const char *hint = "enable VT-x/AMD-V in firmware or nested virtualization on the VM host, load kvm_intel "
                       "or kvm_amd, and give this user rw on /dev/kvm (group kvm); lanes still run under TCG, "
                       "much slower";
    char why[256];
    if (accel_probe_kvm(why, sizeof(why)))
        report(d, "OK", "accelerator", NULL, "kvm (%s)", why);
    else
        report(d, "WARN", "accelerator", hint, "no KVM: %s; lanes boot under TCG emulation", why);
}

static void check_tools(doctor_t *d)
{
    char out[512];
    const char *qemu[] = {"qemu-system-x86_64", "--version", NULL};
    if (run_first_line(qemu, out, sizeof(out)) == 0)
        report(d, "OK", "qemu", NULL, "%s", out);
    else
        report(d, "FAIL", "qemu", "apt-get install qemu-system-x86", "qemu-system-x86_64 does not run: %s", out);

    const char *nbd[] = {"nbdkit", "--version", NULL};
    if (run_first_line(nbd, out, sizeof(out)) != 0) {
        report(d, "FAIL", "nbdkit", "apt-get install nbdkit", "nbdkit does not run: %s", out);
    } else {
        char ver[256];
        snprintf(ver, sizeof(ver), "%s", out);
        char exe[PATH_MAX], plugin[PATH_MAX + 64];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        exe[n > 0 ? n : 0] = 0;
        snprintf(plugin, sizeof(plugin), "%s/nbdkit-laneslocal-plugin.so", n > 0 ? dirname(exe) : ".");
        const char *dump[] = {"nbdkit", "--dump-plugin", plugin, NULL};
        if (access(plugin, R_OK) != 0)
            report(d, "FAIL", "nbdkit", "build lanes (cmake --build) or install the plugin next to lanectl",
                   "%s; plugin %s missing", ver, plugin);
        else if (run_first_line(dump, out, sizeof(out)) == 0)
            report(d, "OK", "nbdkit", NULL, "%s, plugin loads (%s)", ver, plugin);
        else
            report(d, "FAIL", "nbdkit", "rebuild lanes against this host's nbdkit (nbdkit-plugin-dev)",
                   "%s; plugin does not load: %s", ver, out);
    }

    const char *nft[] = {"nft", "--version", NULL};
    if (run_first_line(nft, out, sizeof(out)) == 0)
        report(d, "OK", "nftables", NULL, "%s", out);
    else
        report(d, "WARN", "nftables", "apt-get install nftables (needed for mediated lane networks)",
               "nft does not run: %s", out);

    const char *ipn[] = {"ip", "netns", "list", NULL};
    int ip_ok = run_first_line(ipn, out, sizeof(out)) == 0;
    if (!ip_ok) {
        report(d, "WARN", "netns", "apt-get install iproute2 (needed for lane networks)", "ip netns: %s", out);
    } else if (geteuid() == 0) {
        report(d, "OK", "netns", NULL, "ip netns works, running as root");
    } else {
        FILE *f = fopen("/proc/sys/user/max_user_namespaces", "re");
        long max = 0;
        if (f) {
            if (fscanf(f, "%ld", &max) != 1)
                max = 0;
            fclose(f);
        }
        if (max > 0 && access("/dev/net/tun", R_OK | W_OK) < 0)
            report(d, "WARN", "netns", "give this user read/write on /dev/net/tun (Debian's default mode is 0666)",
                   "user namespaces allowed (max %ld), but /dev/net/tun: %s: lanes get no network", max,
                   strerror(errno));
        else if (max > 0)
            report(d, "OK", "netns", NULL, "ip netns works, user namespaces allowed (max %ld)", max);
        else
            report(d, "WARN", "netns", "sysctl user.max_user_namespaces=15000, or run lanesd as root",
                   "not root and user namespaces are disabled: lanes get no network");
    }
}

static void check_space(doctor_t *d, const char *what, const char *dir)
{
    char probe[PATH_MAX];
    snprintf(probe, sizeof(probe), "%s", dir);
    struct statvfs vfs;
    /* The directory may not exist yet: check the nearest existing parent. */
    while (statvfs(probe, &vfs) < 0) {
        char *slash = strrchr(probe, '/');
        if (!slash || slash == probe) {
            snprintf(probe, sizeof(probe), "/");
            if (statvfs(probe, &vfs) < 0) {
                report(d, "WARN", what, NULL, "%s: %s", dir, strerror(errno));
                return;
            }
            break;
        }
        *slash = 0;
    }
    double gib = (double)vfs.f_bavail * (double)vfs.f_frsize / (1024.0 * 1024 * 1024);
    const char *hint = "free space there, or point it elsewhere (lanesd --state-dir, LANES_CACHE)";
    if (gib < 1.0)
        report(d, "FAIL", what, hint, "%s: %.1f GiB free (need at least 1)", dir, gib);
    else if (gib < 5.0)
        report(d, "WARN", what, hint, "%s: %.1f GiB free (images and lane disks want 5+)", dir, gib);
    else
        report(d, "OK", what, NULL, "%s: %.1f GiB free", dir, gib);
}

static size_t discard(char *p, size_t s, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return s * n;
}

static void check_lanesd(doctor_t *d, lanectl_t *ctx)
{
    CURL *h = client_easy(ctx, "GET", "/v1/health");
    if (!h) {
        report(d, "FAIL", "lanesd", NULL, "out of memory");
        return;
    }
    char err[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    if (rc == CURLE_OK && status == 200)
        report(d, "OK", "lanesd", NULL, "answers on %s", ctx->socket_path);
    else
        report(d, "FAIL", "lanesd", "start lanesd (lanesd --state-dir DIR), or pass --socket / set LANES_SOCKET",
               "not reachable on %s: %s", ctx->socket_path, rc != CURLE_OK ? (err[0] ? err : curl_easy_strerror(rc))
                                                                            : "unexpected HTTP status");
}

int cmd_doctor(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"state-dir", required_argument, NULL, 's'}, LANECTL_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    const char *state = NULL;
    int opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (opt == 'h') {
            fputs(usage, stdout);
            return EXIT_OK;
        }
        if (opt == 's')
            state = optarg;
        else if (!lanectl_common_opt(ctx, opt, optarg))
            return lanectl_usage_error(usage, "doctor: unknown option '%s'", argv[optind - 1]);
    }
    if (optind != argc)
        return lanectl_usage_error(usage, "doctor: unexpected argument '%s'", argv[optind]);
    char sdir[PATH_MAX], cdir[PATH_MAX];
    const char *home = getenv("HOME") ? getenv("HOME") : "/root";
    if (state)
        snprintf(sdir, sizeof(sdir), "%s", state);
    else if (getenv("LANES_STATE_DIR") && *getenv("LANES_STATE_DIR"))
        snprintf(sdir, sizeof(sdir), "%s", getenv("LANES_STATE_DIR"));
    else if (getenv("XDG_STATE_HOME") && *getenv("XDG_STATE_HOME"))
        snprintf(sdir, sizeof(sdir), "%s/lanes", getenv("XDG_STATE_HOME"));
    else
        snprintf(sdir, sizeof(sdir), "%s/.local/state/lanes", home);
    if (getenv("LANES_CACHE") && *getenv("LANES_CACHE"))
        snprintf(cdir, sizeof(cdir), "%s", getenv("LANES_CACHE"));
    else
        snprintf(cdir, sizeof(cdir), "%s/.cache/lanes", home);

    doctor_t d = {0};
    check_accel(&d);
    check_tools(&d);
    check_space(&d, "state dir", sdir);
    check_space(&d, "cache", cdir);
    check_lanesd(&d, ctx);
    printf("%d failed, %d warnings\n", d.fails, d.warns);
    return d.fails ? EXIT_ERROR : EXIT_OK;
}
