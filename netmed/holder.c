/* holder.c — `netmed netns-holder`: a rootless lane's network namespace.
 *
 *   netmed netns-holder [--guest-net CIDR] [--port N] --socket PATH
 *
 * When lanesd is not root it cannot create named netns (/run/netns) nor
 * setns() into one. Instead, per lane, this process unshares a user
 * namespace with a one-id map (0 -> the caller's uid/gid, setgroups deny:
 * what an unprivileged process may write for itself) and a network
 * namespace owned by it. Being ns-root there it has CAP_NET_ADMIN over that
 * netns only, and builds exactly what `netmed setup-netns` builds: tap0, the
 * addresses, policy routing and the nft TPROXY ruleset (setup.c, same code).
 *
 * It then stays alive as the namespace's anchor and serves requests on a
 * unix socket PATH (0600; also checked with SO_PEERCRED), one byte each:
 *   'T'  an fd attached to tap0 (IFF_VNET_HDR), for QEMU's -netdev tap,fd=
 *   'S'  a fresh TPROXY listener (127.0.0.1:PORT, IP_TRANSPARENT) and DNS
 *        socket (gateway:53), for a netmed about to start
 *   'Q'  unlink PATH and exit (the netns goes with its last reference)
 * Replies: "ok" or "error: ..." with the fds as SCM_RIGHTS.
 *
 * netmed itself keeps running in lanesd's (the host's) netns: sockets keep
 * the netns they were made in, so accept() on the passed listener yields
 * the guest's connections while netmed's upstream dials and DNS lookups
 * happen in the host netns as in root mode — no setns anywhere, no extra
 * dialer process, and netmed's policy path is unchanged. The holder keeps
 * no copy of the lane sockets: when netmed dies they close, TPROXY finds no
 * listener and guest traffic is dropped until lanesd starts a new netmed
 * (fail closed, as in root mode).
 *
 * Startup: the first process does all the setup, binds PATH.tmp, listens,
 * renames it to PATH, forks the long-lived holder (new session, stdio to
 * /dev/null) and exits 0 — or exits 1 with the reason on stderr. So lanesd
 * waits for an ordinary helper exit and PATH existing means ready.
 *
 * Once set up it keeps only CAP_NET_ADMIN (TUNSETIFF, IP_TRANSPARENT) and
 * CAP_NET_BIND_SERVICE (port 53) of its user namespace — bounding set
 * included — and sets no_new_privs.
 *
 * Single-threaded (unshare(CLONE_NEWUSER) requires it); serves one request
 * at a time, each bounded by a receive timeout.
 */
#include "netmed.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/capability.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

int lane_sockets_open(uint16_t port, const netaddr_t *gw, int *listen_fd, int *dns_fd, const char **what)
{
    int one = 1, lfd, dfd;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(lfd, SOL_IP, IP_TRANSPARENT, &one, sizeof one) < 0 ||
        bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 512) < 0) {
        int e = errno;
        if (lfd >= 0)
            close(lfd);
        *what = "TPROXY listener";
        return -e;
    }
    struct sockaddr_in da = { .sin_family = AF_INET, .sin_port = htons(53) };
    memcpy(&da.sin_addr, gw->a, 4);
    dfd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (dfd < 0 || bind(dfd, (struct sockaddr *)&da, sizeof da) < 0) {
        int e = errno;
        if (dfd >= 0)
            close(dfd);
        close(lfd);
        *what = "DNS socket";
        return -e;
    }
    *listen_fd = lfd;
    *dns_fd = dfd;
    return 0;
}

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t n = strlen(text);
    ssize_t w;
    do {
        w = write(fd, text, n);
    } while (w < 0 && errno == EINTR);
    int e = w < 0 ? -errno : (size_t)w != n ? -EIO : 0;
    if (close(fd) < 0 && e == 0)
        e = -errno;
    return e;
}

static void read_sysctl(const char *path, char *out, size_t len)
{
    snprintf(out, len, "n/a");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, out, len - 1);
    close(fd);
    if (n <= 0) {
        snprintf(out, len, "n/a");
        return;
    }
    out[n] = '\0';
    out[strcspn(out, "\n")] = '\0';
}

/* A user namespace (one-id map) owning a new network namespace. */
static int enter_own_namespaces(void)
{
    uid_t uid = getuid();
    gid_t gid = getgid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0) {
        int e = errno;
        char maxns[32], clone[32];
        read_sysctl("/proc/sys/user/max_user_namespaces", maxns, sizeof maxns);
        read_sysctl("/proc/sys/kernel/unprivileged_userns_clone", clone, sizeof clone);
        fprintf(stderr,
                "netmed holder: user namespaces are not available (unshare: %s; user.max_user_namespaces=%s, "
                "kernel.unprivileged_userns_clone=%s): a lane with a network needs them when lanesd does not run "
                "as root; enable them (sysctl) or create the lane with --network none\n",
                strerror(e), maxns, clone);
        return -e;
    }
    char map[64];
    int r = write_file("/proc/self/setgroups", "deny");
    if (r == 0) {
        snprintf(map, sizeof map, "0 %u 1\n", (unsigned)uid);
        r = write_file("/proc/self/uid_map", map);
    }
    if (r == 0) {
        snprintf(map, sizeof map, "0 %u 1\n", (unsigned)gid);
        r = write_file("/proc/self/gid_map", map);
    }
    if (r < 0)
        fprintf(stderr, "netmed holder: write the user namespace's id maps: %s\n", strerror(-r));
    return r;
}

/* Keep only what serving 'T' and 'S' needs; returns 0 or -errno. */
static int drop_capabilities(void)
{
    const uint64_t keep = (1ULL << CAP_NET_ADMIN) | (1ULL << CAP_NET_BIND_SERVICE);
    for (int c = 0; c < 64; c++) {
        if (keep & (1ULL << c))
            continue;
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
            return -errno;
    }
    struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    data[0].effective = data[0].permitted = (uint32_t)keep;
    if (syscall(SYS_capset, &h, data) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -errno;
    return 0;
}

static int listen_at(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char tmp[sizeof sa.sun_path];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        fprintf(stderr, "netmed holder: socket path too long: %s\n", path);
        return -ENAMETOOLONG;
    }
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", tmp);
    unlink(tmp);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    mode_t old = umask(0177); /* the socket is 0600 */
    int r = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (r < 0 || listen(fd, 8) < 0 || rename(tmp, path) < 0) {
        int e = errno;
        fprintf(stderr, "netmed holder: listen on %s: %s\n", path, strerror(e));
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        return -e;
    }
    return fd;
}

static void reply(int cfd, const char *text, const int *fds, size_t nfds)
{
    struct iovec iov = { .iov_base = (void *)text, .iov_len = strlen(text) };
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(2 * sizeof(int))];
    } u;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (nfds) {
        memset(&u, 0, sizeof u);
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    }
    while (sendmsg(cfd, &mh, MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

static int open_tap(void)
{
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "tap0");
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* One request. Returns 1 when asked to quit. */
static int serve_one(int cfd, uint16_t port, const netaddr_t *gw, const char *path)
{
    struct ucred cr;
    socklen_t crl = sizeof cr;
    if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cr, &crl) < 0 || cr.uid != getuid())
        return 0;                       /* only lanesd's own uid (0 as seen from here) */
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char cmd = 0;
    ssize_t n;
    do {
        n = recv(cfd, &cmd, 1, 0);
    } while (n < 0 && errno == EINTR);
    if (n != 1)
        return 0;
    char msg[256];
    if (cmd == 'T') {
        int fd = open_tap();
        if (fd < 0) {
            snprintf(msg, sizeof msg, "error: attach tap0: %s", strerror(-fd));
            reply(cfd, msg, NULL, 0);
            return 0;
        }
        reply(cfd, "ok", &fd, 1);
        close(fd);
    } else if (cmd == 'S') {
        int fds[2];
        const char *what = "";
        int r = lane_sockets_open(port, gw, &fds[0], &fds[1], &what);
        if (r < 0) {
            snprintf(msg, sizeof msg, "error: %s in the lane netns: %s", what, strerror(-r));
            reply(cfd, msg, NULL, 0);
            return 0;
        }
        reply(cfd, "ok", fds, 2);
        close(fds[0]);                  /* netmed holds the only copies */
        close(fds[1]);
    } else if (cmd == 'Q') {
        unlink(path);
        reply(cfd, "ok", NULL, 0);
        return 1;
    } else {
        reply(cfd, "error: unknown request", NULL, 0);
    }
    return 0;
}

int holder_main(int argc, char **argv)
{
    const char *gnet = "10.0.2.0/30", *path = NULL;
    int port = NETMED_TPROXY_PORT, c;
    static const struct option opts[] = {
        { "guest-net", required_argument, NULL, 'g' },
        { "port", required_argument, NULL, 'p' },
        { "socket", required_argument, NULL, 's' },
        { 0 } };
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'g')
            gnet = optarg;
        else if (c == 'p')
            port = atoi(optarg);
        else if (c == 's')
            path = optarg;
        else
            return 2;
    }
    cidr_t g;
    if (optind != argc || !path || port < 1 || port > 65535 || cidr_parse(gnet, &g) < 0 ||
        g.net.family != AF_INET || g.len > 30) {
        fprintf(stderr, "usage: netmed netns-holder [--guest-net IPv4-CIDR/30] [--port N] --socket PATH\n");
        return 2;
    }
    netaddr_t gw;
    netaddr_from_v4(netaddr_v4(&g.net) + 1, &gw);
    if (enter_own_namespaces() < 0 || setup_prepare_current_netns(true) < 0 ||
        setup_configure_netns(NULL, gnet, port) < 0)
        return 1;
    /* Fail now, not at netmed's start, if the sockets cannot be made here. */
    int lfd, dfd;
    const char *what = "";
    int r = lane_sockets_open((uint16_t)port, &gw, &lfd, &dfd, &what);
    if (r < 0) {
        fprintf(stderr, "netmed holder: %s in the lane netns: %s\n", what, strerror(-r));
        return 1;
    }
    close(lfd);
    close(dfd);
    if ((r = drop_capabilities()) < 0) {
        fprintf(stderr, "netmed holder: drop capabilities: %s\n", strerror(-r));
        return 1;
    }
    int sfd = listen_at(path);
    if (sfd < 0)
        return 1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "netmed holder: fork: %m\n");
        unlink(path);
        return 1;
    }
    if (pid > 0) {
        printf("holder %d ready on %s\n", (int)pid, path);
        return 0;
    }
    setsid();
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        close(null);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    for (;;) {
        int cfd = accept4(sfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            _exit(1);
        }
        int quit = serve_one(cfd, (uint16_t)port, &gw, path);
        close(cfd);
        if (quit)
            _exit(0);
    }
}
