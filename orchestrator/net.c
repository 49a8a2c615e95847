/* net.c — a lane's mediated network: its network namespace and TAP, its
 * netmed process, policy, secrets and audit (see docs/netmed.md).
 *
 * Per lane with network "mediated":
 *   netns "lanes-<id>" with tap0 and the nft rules (`netmed setup-netns`);
 *   netmed, detached like nbdkit, with files in the lane dir:
 *     policy.json (0600), secrets.json (0600, real values: host only),
 *     ca/ (lane CA; the key never leaves the host), audit.jsonl, netmed.sock;
 *   QEMU gets the TAP as an fd opened inside the netns (setns there and back).
 * The guest learns its address, resolver, CA and secret placeholders through
 * LP_CONFIGURE (vm.c sends it after every agent handshake).
 *
 * Rootless mode (d->rootless: lanesd is not root, or --rootless): no named
 * netns and no setns. Per lane, `netmed netns-holder` unshares a user
 * namespace (one-id map) with a network namespace, builds the same tap0 and
 * nft rules in it and stays as its anchor, serving lane dir/netns.sock:
 * lanesd asks it for the TAP fd (for QEMU) and, at every netmed (re)start,
 * for a fresh TPROXY listener + DNS socket made inside the lane netns, which
 * netmed inherits (--lane-fds) while itself running in lanesd's netns — so
 * upstream dials stay in the host netns exactly as in root mode. Teardown
 * asks the holder to quit. These requests are short synchronous exchanges
 * on the loop (bounded by a 5 s socket timeout).
 *
 * Failure is closed: if netmed dies the nft rules still steer guest traffic
 * to a listener that is gone, so the lane is offline until lanesd restarts
 * netmed (it does, with backoff). Policy changes go to a running netmed over
 * its control socket; secret changes restart it.
 *
 * Async steps run helper programs through proc.c; every callback re-checks
 * the lane (it may be stopping) and holds a handles_open reference so the
 * lane cannot be freed under it.
 */
#include "lanesd.h"
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define NET_GUEST_CIDR "10.0.2.0/30"
#define NET_GATEWAY "10.0.2.1"
#define NET_GUEST_ADDR "10.0.2.2/30"
#define NETMED_SOCKET_WAIT_MS 10000
#define NET_HOLDER_SOCKET "netns.sock"
#define NET_HOLDER_TIMEOUT_S 5

const char *net_default_policy = "{\"dns\":{\"mode\":\"synthetic\"},\"allow\":[]}";

static void lane_ref(lane_rt_t *l)
{
    l->handles_open++;
}

static void lane_unref(lane_rt_t *l)
{
    if (--l->handles_open == 0)
        free(l);
}

/* A lane whose runtime object is already unlinked (rm) or tearing down. */
static int lane_gone(lane_rt_t *l)
{
    return l->freeing || l->teardown || !lane_state_is_active(l->state);
}

void net_netns_name(const lane_rt_t *l, char *out, size_t len)
{
    snprintf(out, len, "lanes-%s", l->id);
}

static void lane_path(const lane_rt_t *l, const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", l->dir, name);
}

static int write_private(const char *path, const char *data)
{
    char tmp[800];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    size_t len = strlen(data), off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return -e;
        }
        off += (size_t)w;
    }
    if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return -e;
    }
    return 0;
}

/* ---- files netmed reads -------------------------------------------------------------- */

int net_write_policy_file(lane_rt_t *l, const char *policy_json)
{
    char path[700];
    lane_path(l, "policy.json", path, sizeof(path));
    return write_private(path, policy_json && *policy_json ? policy_json : net_default_policy);
}

int net_write_secrets_file(lane_rt_t *l)
{
    json_object *arr = db_secrets_json(l->d, l->id, 1);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "secrets", arr);
    char path[700];
    lane_path(l, "secrets.json", path, sizeof(path));
    int r = write_private(path, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return r;
}

/* ---- rootless: the namespace holder ----------------------------------------------------- */

static long read_sysctl_long(const char *path)
{
    char buf[32];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    return strtol(buf, NULL, 10);
}

int net_rootless_probe(char *why, size_t whylen)
{
    long max = read_sysctl_long("/proc/sys/user/max_user_namespaces");
    long clone = read_sysctl_long("/proc/sys/kernel/unprivileged_userns_clone");
    if (max == 0) {
        snprintf(why, whylen, "user namespaces are disabled (user.max_user_namespaces=0)");
        return -EPERM;
    }
    if (clone == 0 && geteuid() != 0) {
        snprintf(why, whylen, "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone=0)");
        return -EPERM;
    }
    if (access("/dev/net/tun", R_OK | W_OK) < 0) {
        snprintf(why, whylen, "no read/write access to /dev/net/tun (%s; Debian's default mode is 0666)",
                 strerror(errno));
        return -EACCES;
    }
    snprintf(why, whylen, "user.max_user_namespaces=%ld", max);
    return 0;
}

/* One request to the lane's holder ('T' tap, 'S' lane sockets, 'Q' quit).
 * Receives exactly nfds fds into fds (close-on-exec unless inheritable).
 * Returns 0 or -errno with msg. */
static int holder_request(lane_rt_t *l, char cmd, int *fds, size_t nfds, int inheritable, char *msg, size_t msglen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", l->dir, NET_HOLDER_SOCKET) >= (int)sizeof(sa.sun_path)) {
        snprintf(msg, msglen, "lane directory path too long for a unix socket: %s", l->dir);
        return -ENAMETOOLONG;
    }
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        snprintf(msg, msglen, "socket: %s", strerror(e));
        return -e;
    }
    struct timeval tv = {.tv_sec = NET_HOLDER_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int r;
    do {
        r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    } while (r < 0 && errno == EINTR);
    ssize_t n = -1;
    if (r == 0) {
        do {
            n = send(fd, &cmd, 1, MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
    }
    if (r < 0 || n != 1) {
        int e = errno;
        snprintf(msg, msglen, "lane network holder %s: %s", sa.sun_path, strerror(e));
        close(fd);
        return -e;
    }
    char text[256];
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(4 * sizeof(int))];
    } u;
    struct iovec iov = {.iov_base = text, .iov_len = sizeof(text) - 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    do {
        n = recvmsg(fd, &mh, inheritable ? 0 : MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    int e = n < 0 ? errno : 0;
    close(fd);
    if (n <= 0) {
        snprintf(msg, msglen, "lane network holder did not answer: %s", n < 0 ? strerror(e) : "connection closed");
        return n < 0 ? -e : -EPIPE;
    }
    text[n] = '\0';
    int got[4], ngot = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k && ngot < 4; i++)
            memcpy(&got[ngot++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    if (strcmp(text, "ok") != 0 || (size_t)ngot != nfds || (mh.msg_flags & MSG_CTRUNC)) {
        for (int i = 0; i < ngot; i++)
            close(got[i]);
        snprintf(msg, msglen, "lane network holder: %s", strcmp(text, "ok") ? text : "wrong number of fds");
        return -EIO;
    }
    memcpy(fds, got, nfds * sizeof(int));
    return 0;
}

/* Ask a holder left by an earlier run (crash) to go. */
static void holder_quit(lane_rt_t *l)
{
    char path[700], msg[256];
    lane_path(l, NET_HOLDER_SOCKET, path, sizeof(path));
    if (access(path, F_OK) < 0)
        return;
    if (holder_request(l, 'Q', NULL, 0, 0, msg, sizeof(msg)) < 0)
        util_log("lane %s: %s", l->name, msg);
    unlink(path);
}

/* ---- the TAP --------------------------------------------------------------------------- */

static int net_open_tap(lane_rt_t *l, char *msg, size_t msglen)
{
    if (l->d->rootless) {
        int fd;
        int r = holder_request(l, 'T', &fd, 1, 0, msg, msglen);
        if (r == 0)
            l->tap_fd = fd;
        return r;
    }
    char ns[64], nspath[128];
    net_netns_name(l, ns, sizeof(ns));
    snprintf(nspath, sizeof(nspath), "/run/netns/%s", ns);
    int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    int target = open(nspath, O_RDONLY | O_CLOEXEC);
    if (self < 0 || target < 0) {
        snprintf(msg, msglen, "open netns %s: %s", target < 0 ? nspath : "/proc/self/ns/net", strerror(errno));
        if (self >= 0)
            close(self);
        if (target >= 0)
            close(target);
        return -errno;
    }
    int fd = -1, err = 0;
    if (setns(target, CLONE_NEWNET) < 0) {
        err = errno;
        snprintf(msg, msglen, "setns %s: %s", ns, strerror(err));
    } else {
        fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            err = errno;
            snprintf(msg, msglen, "open /dev/net/tun: %s", strerror(err));
        } else {
            struct ifreq ifr;
            memset(&ifr, 0, sizeof(ifr));
            snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "tap0");
            ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
            if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
                err = errno;
                snprintf(msg, msglen, "attach tap0 in %s: %s", ns, strerror(err));
                close(fd);
                fd = -1;
            }
        }
        /* Always go back: lanesd must never stay in a lane's namespace. */
        if (setns(self, CLONE_NEWNET) < 0) {
            util_log("FATAL: cannot return to lanesd's network namespace: %s", strerror(errno));
            abort();
        }
    }
    close(self);
    close(target);
    if (fd < 0)
        return -err;
    l->tap_fd = fd;
    return 0;
}

/* ---- netmed ------------------------------------------------------------------------------ */

typedef struct {
    lane_rt_t *lane;
    int step;
    char last[512];
    net_done_cb done;
} net_job_t;

static void net_job_step(net_job_t *j);

static void net_job_finish(net_job_t *j, int err, const char *msg)
{
    lane_rt_t *l = j->lane;
    net_done_cb done = j->done;
    free(j);
    if (!l->freeing && done)
        done(l, err, msg);
    lane_unref(l);
}

static void on_net_line(proc_run_t *p, const char *line, void *ud)
{
    net_job_t *j = ud;
    (void)p;
    snprintf(j->last, sizeof(j->last), "%s", line);
    util_log("lane %s: netmed: %s", j->lane->name, line);
}

static void on_net_exit(proc_run_t *p, int status, int sig, const char *out, void *ud)
{
    net_job_t *j = ud;
    (void)p;
    (void)out;
    if (j->step == 1 && status != 0) {
        char msg[700];
        snprintf(msg, sizeof(msg), "network namespace setup failed: %s",
                 j->last[0] ? j->last : sig ? "killed" : "no output");
        net_job_finish(j, -EIO, msg);
        return;
    }
    j->step++;
    net_job_step(j);
}

static void on_netmed_socket_poll(uv_timer_t *t);

int net_spawn_netmed(lane_rt_t *l, char *msg, size_t msglen)
{
    lanesd_t *d = l->d;
    char bin[600], ns[64], policy[700], ca[700], secrets[700], audit[700], sock[700], log[700];
    snprintf(bin, sizeof(bin), "%s/netmed", d->bin_dir);
    net_netns_name(l, ns, sizeof(ns));
    lane_path(l, "policy.json", policy, sizeof(policy));
    lane_path(l, "ca", ca, sizeof(ca));
    lane_path(l, "secrets.json", secrets, sizeof(secrets));
    lane_path(l, "audit.jsonl", audit, sizeof(audit));
    lane_path(l, "netmed.sock", sock, sizeof(sock));
    lane_path(l, "netmed.log", log, sizeof(log));
    unlink(sock);
    char *argv[] = {bin, "--netns", ns, "--policy", policy, "--ca-dir", ca, "--secrets", secrets,
                    "--audit", audit, "--control", sock, "--guest-net", NET_GUEST_CIDR, NULL, NULL, NULL};
    if (d->upstream_ca[0]) {
        argv[15] = "--trust-bundle";
        argv[16] = d->upstream_ca;
    }
    int lane_fds[2] = {-1, -1};
    char fds_arg[32];
    if (d->rootless) {
        /* Inheritable (no O_CLOEXEC) only until the spawn below: the loop is
         * single-threaded and nothing else forks in between. */
        int r = holder_request(l, 'S', lane_fds, 2, 1, msg, msglen);
        if (r < 0)
            return r;
        snprintf(fds_arg, sizeof(fds_arg), "%d,%d", lane_fds[0], lane_fds[1]);
        argv[1] = "--lane-fds";
        argv[2] = fds_arg;
    }
    pid_t pid = vm_spawn_detached(argv, log, l->dir, 1);
    if (lane_fds[0] >= 0) {
        close(lane_fds[0]); /* netmed has its own copies (or failed to start) */
        close(lane_fds[1]);
    }
    if (pid < 0) {
        snprintf(msg, msglen, "cannot start netmed: %s", strerror((int)-pid));
        return (int)pid;
    }
    return vm_proc_watch_new(&l->netmed, pid);
}

static void net_job_step(net_job_t *j)
{
    lane_rt_t *l = j->lane;
    lanesd_t *d = l->d;
    if (lane_gone(l)) {
        net_job_finish(j, -ECANCELED, "lane is stopping");
        return;
    }
    char bin[600], ns[64];
    snprintf(bin, sizeof(bin), "%s/netmed", d->bin_dir);
    net_netns_name(l, ns, sizeof(ns));
    static const proc_run_callbacks_t cbs = {on_net_line, on_net_exit};
    if (j->step == 0 && d->rootless) {
        char why[512], msg[700];
        if (net_rootless_probe(why, sizeof(why)) < 0) {
            snprintf(msg, sizeof(msg), "lane network unavailable (lanesd runs rootless): %s; "
                     "create the lane with --network none or see docs/lanesd.md", why);
            net_job_finish(j, -EPERM, msg);
            return;
        }
        holder_quit(l); /* one left by a crash */
        j->step = 1;
    }
    if (j->step == 0) {
        /* a namespace left by a crash would make setup fail: remove it.
         * Boot time: `ip netns` keeps names in /run/netns; when there is none
         * to remove, skip the helper process (it is on the boot path). */
        char nsfile[128];
        snprintf(nsfile, sizeof(nsfile), "/run/netns/%s", ns);
        if (access(nsfile, F_OK) < 0 && errno == ENOENT) {
            j->step = 1;
            net_job_step(j);
            return;
        }
        char *argv[] = {bin, "teardown-netns", ns, NULL};
        if (proc_run_start(d->loop, argv, NULL, &cbs, j, NULL) < 0) {
            j->step = 1;
            net_job_step(j);
        }
        return;
    }
    if (j->step == 1) {
        char hsock[700];
        lane_path(l, NET_HOLDER_SOCKET, hsock, sizeof(hsock));
        char *argv_root[] = {bin, "setup-netns", "--guest-net", NET_GUEST_CIDR, ns, NULL};
        char *argv_rootless[] = {bin, "netns-holder", "--guest-net", NET_GUEST_CIDR, "--socket", hsock, NULL};
        char **argv = d->rootless ? argv_rootless : argv_root;
        int r = proc_run_start(d->loop, argv, NULL, &cbs, j, NULL);
        if (r < 0) {
            char msg[700];
            snprintf(msg, sizeof(msg), "cannot run %s: %s", bin, uv_strerror(r));
            net_job_finish(j, r, msg);
        }
        return;
    }
    /* step 2: files, netmed, then wait for its control socket */
    char msg[512] = "";
    char *policy = NULL;
    db_lane_policy_get(d, l->id, &policy);
    int r = net_write_policy_file(l, policy);
    free(policy);
    if (r == 0)
        r = net_write_secrets_file(l);
    if (r < 0) {
        snprintf(msg, sizeof(msg), "write network policy/secrets: %s", strerror(-r));
        net_job_finish(j, r, msg);
        return;
    }
    /* Boot time: open the TAP now, so QEMU can start while netmed comes up
     * (vm.c spawns QEMU once l->tap_fd is open and holds the guest's
     * CONFIGURE until this job is done). */
    r = net_open_tap(l, msg, sizeof(msg));
    if (r < 0) {
        net_job_finish(j, r, msg);
        return;
    }
    r = net_spawn_netmed(l, msg, sizeof(msg));
    if (r < 0) {
        net_job_finish(j, r, msg);
        return;
    }
    db_lane_update(d, l);
    l->net_job = j;
    l->net_wait_ms = 0;
    uv_timer_start(&l->net_timer, on_netmed_socket_poll, 10, 0);
}

static void on_netmed_socket_poll(uv_timer_t *t)
{
    lane_rt_t *l = t->data;
    net_job_t *j = l->net_job;
    if (!j)
        return;
    if (lane_gone(l)) {
        l->net_job = NULL;
        net_job_finish(j, -ECANCELED, "lane is stopping");
        return;
    }
    char sock[700];
    lane_path(l, "netmed.sock", sock, sizeof(sock));
    struct stat st;
    if (stat(sock, &st) == 0 && S_ISSOCK(st.st_mode)) {
        l->net_job = NULL;
        net_job_finish(j, 0, NULL); /* the TAP was opened before netmed */
        return;
    }
    if (l->netmed.pid <= 0) {
        l->net_job = NULL;
        char msg[800];
        snprintf(msg, sizeof(msg), "netmed exited during start (see %s/netmed.log)", l->dir);
        net_job_finish(j, -EIO, msg);
        return;
    }
    l->net_wait_ms += 10;
    if (l->net_wait_ms > NETMED_SOCKET_WAIT_MS) {
        l->net_job = NULL;
        char msg[800];
        snprintf(msg, sizeof(msg), "netmed did not start listening within %d s (see %s/netmed.log)",
                 NETMED_SOCKET_WAIT_MS / 1000, l->dir);
        net_job_finish(j, -ETIMEDOUT, msg);
        return;
    }
    uv_timer_start(&l->net_timer, on_netmed_socket_poll, 10, 0);
}

int net_lane_start(lane_rt_t *l, net_done_cb done)
{
    net_job_t *j = calloc(1, sizeof(*j));
    if (!j)
        return -ENOMEM;
    j->lane = l;
    j->done = done;
    lane_ref(l);
    net_job_step(j);
    return 0;
}

/* netmed died while the lane runs: restart it (closed meanwhile). */
static void on_netmed_restart(uv_timer_t *t)
{
    lane_rt_t *l = t->data;
    if (lane_gone(l) || l->netmed.pid > 0 || l->state != LANE_RUNNING)
        return;
    char msg[512] = "cannot write secrets.json";
    if (net_write_secrets_file(l) < 0 || net_spawn_netmed(l, msg, sizeof(msg)) < 0) {
        util_log("lane %s: netmed restart failed (%s); retrying", l->name, msg);
        uv_timer_start(&l->net_timer, on_netmed_restart, 2000, 0);
        return;
    }
    db_lane_update(l->d, l);
    db_event(l->d, l->id, "network", "netmed restarted");
}

void net_netmed_exited(lane_rt_t *l)
{
    if (lane_gone(l) || l->net_job)
        return; /* teardown or start-up handle it */
    l->net_restarts++;
    uint64_t delay = l->net_restarts > 5 ? 2000 : 100;
    util_log("lane %s: netmed exited; the lane is offline until it restarts", l->name);
    db_event(l->d, l->id, "network", "netmed exited; lane offline until restarted");
    uv_timer_start(&l->net_timer, on_netmed_restart, delay, 0);
}

typedef struct {
    lane_rt_t *lane;
    net_done_cb done;
} net_cleanup_t;

static void on_teardown_exit(proc_run_t *p, int status, int sig, const char *out, void *ud)
{
    net_cleanup_t *c = ud;
    (void)p;
    (void)sig;
    (void)out;
    lane_rt_t *l = c->lane;
    if (status != 0)
        util_log("lane %s: removing its network namespace failed (status %d)", l->name, status);
    if (c->done)
        c->done(l, status == 0 ? 0 : -EIO, NULL);
    free(c);
    lane_unref(l);
}

int net_lane_cleanup(lane_rt_t *l, net_done_cb done)
{
    if (l->tap_fd >= 0) {
        close(l->tap_fd);
        l->tap_fd = -1;
    }
    if (!l->network)
        return 0;
    if (l->d->rootless) {
        holder_quit(l); /* the netns goes with the holder (netmed and QEMU are gone) */
        return 0;
    }
    char bin[600], ns[64];
    snprintf(bin, sizeof(bin), "%s/netmed", l->d->bin_dir);
    net_netns_name(l, ns, sizeof(ns));
    char *argv[] = {bin, "teardown-netns", ns, NULL};
    static const proc_run_callbacks_t cbs = {NULL, on_teardown_exit};
    net_cleanup_t *c = calloc(1, sizeof(*c));
    if (!c)
        return 0;
    c->lane = l;
    c->done = done;
    lane_ref(l);
    if (proc_run_start(l->d->loop, argv, NULL, &cbs, c, NULL) < 0) {
        free(c);
        lane_unref(l);
        return 0;
    }
    return 1;
}

/* ---- guest configuration ------------------------------------------------------------------- */

int net_guest_config(lane_rt_t *l, agent_config_t *cfg, char **ca_out, char ***env_out)
{
    memset(cfg, 0, sizeof(*cfg));
    *ca_out = NULL;
    *env_out = NULL;
    if (!l->network)
        return 0;
    cfg->net_addr = NET_GUEST_ADDR;
    cfg->net_gw = NET_GATEWAY;
    cfg->dns = NET_GATEWAY;
    char path[700];
    lane_path(l, "ca/ca.crt", path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char *buf = malloc(16384);
        ssize_t n = buf ? read(fd, buf, 16383) : -1;
        close(fd);
        if (n > 0) {
            buf[n] = '\0';
            cfg->ca_pem = buf;
            cfg->ca_pem_len = (size_t)n;
            *ca_out = buf;
        } else {
            free(buf);
        }
    }
    json_object *secrets = db_secrets_json(l->d, l->id, 0);
    size_t n = json_object_array_length(secrets);
    char **env = calloc(n + 1, sizeof(char *));
    for (size_t i = 0; env && i < n; i++) {
        json_object *s = json_object_array_get_idx(secrets, i), *name, *ph;
        if (json_object_object_get_ex(s, "name", &name) && json_object_object_get_ex(s, "placeholder", &ph) &&
            asprintf(&env[i], "%s=%s", json_object_get_string(name), json_object_get_string(ph)) < 0)
            env[i] = NULL;
    }
    json_object_put(secrets);
    cfg->env = (const char *const *)env;
    *env_out = env;
    return 0;
}

void net_guest_config_free(char *ca, char **env)
{
    free(ca);
    for (size_t i = 0; env && env[i]; i++)
        free(env[i]);
    free(env);
}

/* ---- audit ingestion --------------------------------------------------------------------------- */

/* Copy new complete lines of the lane's audit.jsonl into SQLite. */
void net_audit_ingest(lane_rt_t *l)
{
    if (!l->network)
        return;
    char path[700];
    lane_path(l, "audit.jsonl", path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size <= l->audit_offset) {
        if (st.st_size < l->audit_offset)
            l->audit_offset = 0; /* file replaced */
        close(fd);
        return;
    }
    size_t want = (size_t)(st.st_size - l->audit_offset);
    if (want > 4 * 1024 * 1024)
        want = 4 * 1024 * 1024;
    char *buf = malloc(want + 1);
    ssize_t n = buf ? pread(fd, buf, want, l->audit_offset) : -1;
    close(fd);
    if (n <= 0) {
        free(buf);
        return;
    }
    buf[n] = '\0';
    size_t used = 0;
    sqlite3_exec(l->d->db, "BEGIN", NULL, NULL, NULL);
    for (char *line = buf, *nl; (nl = memchr(line, '\n', (size_t)(buf + n - line))); line = nl + 1) {
        *nl = '\0';
        used = (size_t)(nl + 1 - buf);
        if (*line)
            db_audit_insert(l->d, l->id, line);
    }
    sqlite3_exec(l->d->db, "COMMIT", NULL, NULL, NULL);
    free(buf);
    if (used) {
        l->audit_offset += (int64_t)used;
        db_lane_update(l->d, l);
    }
}
