/* setup.c — `netmed setup-netns NAME` and `netmed teardown-netns NAME`:
 * create a lane network namespace ready for netmed: tap0 (the guest's NIC),
 * its address, the nftables ruleset (TPROXY all guest TCP to netmed, guest
 * DNS to netmed, drop everything else, IPv6 off), and the policy routing
 * TPROXY needs. Uses the ip(8) and nft(8) programs for links, routes and
 * rules (argv, never a shell); the TAP itself is made here with TUNSETIFF.
 *
 * With --veth-peer NS, tap0 is one end of a veth pair whose other end is
 * eth0 in netns NS (configured as the guest would be). That is a stand-in
 * for the TAP used only by tests that run no VM: a real lane's QEMU attaches
 * to the persistent TAP (open /dev/net/tun in the lane netns, TUNSETIFF
 * "tap0", pass the fd as -netdev tap,fd=N).
 *
 * Single-threaded program path: setns() here moves the whole process.
 */
#include "netmed.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Run argv; feed stdin_text if non-NULL. Returns the exit status or -errno. */
static int run(char *const argv[], const char *stdin_text)
{
    int pfd[2] = { -1, -1 };
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (stdin_text) {
        if (pipe2(pfd, O_CLOEXEC) < 0)
            return -errno;
        posix_spawn_file_actions_adddup2(&fa, pfd[0], 0);
    }
    pid_t pid;
    int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (stdin_text) {
        close(pfd[0]);
        if (r == 0) {
            size_t n = strlen(stdin_text), off = 0;
            while (off < n) {
                ssize_t w = write(pfd[1], stdin_text + off, n - off);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0)
                    break;
                off += (size_t)w;
            }
        }
        close(pfd[1]);
    }
    if (r != 0)
        return -r;
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -errno;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "netmed setup: command failed:");
        for (int i = 0; argv[i]; i++)
            fprintf(stderr, " %s", argv[i]);
        fprintf(stderr, "\n");
        return -EIO;
    }
    return 0;
}

#define RUN(...) do { char *a_[] = { __VA_ARGS__, NULL }; if ((r = run(a_, NULL)) < 0) goto out; } while (0)

static int write_sysctl(const char *path, const char *val)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t w = write(fd, val, strlen(val));
    int e = w < 0 ? -errno : 0;
    close(fd);
    return e;
}

/* The current netns: IPv6 and forwarding off; with make_tap, the
 * persistent tap0 (TUNSETPERSIST, so QEMU can attach to it later). */
int setup_prepare_current_netns(bool make_tap)
{
    int r = 0;
    write_sysctl("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
    write_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "0");
    if (make_tap) {
        int tfd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (tfd < 0) {
            r = -errno;
            fprintf(stderr, "netmed setup: open /dev/net/tun: %m%s\n",
                    r == -EACCES ? " (the user running lanesd needs read/write access to it; "
                                   "Debian's default mode is 0666)" : "");
            return r;
        }
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "tap0");
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        if (ioctl(tfd, TUNSETIFF, &ifr) < 0 || ioctl(tfd, TUNSETPERSIST, 1) < 0) {
            r = -errno;
            fprintf(stderr, "netmed setup: create tap0: %m\n");
        }
        close(tfd);
    }
    return r;
}

/* Inside the lane netns: the persistent TAP, and IPv6 off. */
static int in_netns(const char *name, bool make_tap)
{
    char path[256];
    snprintf(path, sizeof path, "/run/netns/%s", name);
    int lane = open(path, O_RDONLY | O_CLOEXEC);
    int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    int r = 0;
    if (lane < 0 || self < 0 || setns(lane, CLONE_NEWNET) < 0) {
        r = -errno;
        fprintf(stderr, "netmed setup: enter netns %s: %m\n", name);
        goto out;
    }
    r = setup_prepare_current_netns(make_tap);
    if (setns(self, CLONE_NEWNET) < 0) {
        fprintf(stderr, "netmed setup: return to own netns: %m\n");
        abort();                        /* never continue in the wrong netns */
    }
out:
    if (lane >= 0)
        close(lane);
    if (self >= 0)
        close(self);
    return r;
}

/* argv of `ip` for netns `ns`: "ip -n NS ARGS..." or, with ns NULL (the
 * caller is already inside the lane netns), "ip ARGS...". */
static int run_ip(const char *ns, char *const args[])
{
    char *a[24];
    size_t n = 0;
    a[n++] = "ip";
    if (ns) {
        a[n++] = "-n";
        a[n++] = (char *)ns;
    }
    for (size_t i = 0; args[i] && n < 23; i++)
        a[n++] = args[i];
    a[n] = NULL;
    return run(a, NULL);
}

#define IP(...) do { char *a_[] = { __VA_ARGS__, NULL }; if ((r = run_ip(ns, a_)) < 0) return r; } while (0)

/* Addresses, policy routing and the nftables ruleset of a lane netns whose
 * tap0 exists: in netns `ns`, or in the current one when ns is NULL (the
 * rootless holder, which is ns-root of its own user namespace). */
int setup_configure_netns(const char *ns, const char *gnet, int port)
{
    cidr_t g;
    if (cidr_parse(gnet, &g) < 0 || g.net.family != AF_INET || g.len > 30) {
        fprintf(stderr, "netmed setup: --guest-net must be an IPv4 CIDR of /30 or wider\n");
        return -EINVAL;
    }
    netaddr_t gw, guest;
    netaddr_from_v4(netaddr_v4(&g.net) + 1, &gw);
    netaddr_from_v4(netaddr_v4(&g.net) + 2, &guest);
    char gws[NETADDR_STRLEN], gs[NETADDR_STRLEN], gwc[64];
    netaddr_format(&gw, gws, sizeof gws);
    netaddr_format(&guest, gs, sizeof gs);
    snprintf(gwc, sizeof gwc, "%s/%d", gws, g.len);
    int r;
    IP("addr", "add", gwc, "dev", "tap0");
    IP("link", "set", "tap0", "up");
    IP("link", "set", "lo", "up");
    IP("rule", "add", "fwmark", "1", "lookup", "100");
    IP("route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100");
    char rules[4096];
    snprintf(rules, sizeof rules,
             "table inet lanes {\n"
             "  chain prerouting {\n"
             "    type filter hook prerouting priority mangle; policy drop;\n"
             "    iifname \"lo\" accept\n"
             "    iifname != \"tap0\" drop\n"
             "    meta nfproto != ipv4 drop\n"
             "    ip saddr != %s drop\n"
             "    ip daddr %s udp dport 53 accept\n"
             "    meta l4proto tcp tproxy ip to 127.0.0.1:%d meta mark set 1 accept\n"
             "  }\n"
             "  chain input {\n"
             "    type filter hook input priority filter; policy drop;\n"
             "    iifname \"lo\" accept\n"
             "    meta mark 1 meta l4proto tcp accept\n"
             "    iifname \"tap0\" ip daddr %s udp dport 53 accept\n"
             "  }\n"
             "  chain forward {\n"
             "    type filter hook forward priority filter; policy drop;\n"
             "  }\n"
             "  chain output {\n"
             "    type filter hook output priority filter; policy drop;\n"
             "    oifname \"lo\" accept\n"
             "    oifname \"tap0\" ip daddr %s accept\n"
             "  }\n"
             "}\n",
             gs, gws, port, gws, gs);
    char *in_ns[] = { "ip", "netns", "exec", (char *)ns, "nft", "-f", "-", NULL };
    char *here[] = { "nft", "-f", "-", NULL };
    if ((r = run(ns ? in_ns : here, rules)) < 0) {
        if (!ns)
            fprintf(stderr, "netmed setup: loading the nftables ruleset failed; in a user namespace the kernel "
                            "cannot load modules: as root, `modprobe -a nf_tables nft_tproxy nf_tproxy_ipv4 "
                            "nft_chain_nat` (or add them to /etc/modules-load.d)\n");
        return r;
    }
    printf("netns %s ready: tap0 %s, guest %s, resolver %s, tproxy 127.0.0.1:%d\n", ns ? ns : "(own user namespace)",
           gwc, gs, gws, port);
    return 0;
}

int setup_netns_main(int argc, char **argv)
{
    const char *gnet = "10.0.2.0/30";
    char *peer = NULL;
    int port = NETMED_TPROXY_PORT;
    static const struct option opts[] = {
        { "guest-net", required_argument, NULL, 'g' },
        { "veth-peer", required_argument, NULL, 'v' },
        { "port", required_argument, NULL, 'p' },
        { 0 } };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'g')
            gnet = optarg;
        else if (c == 'v')
            peer = optarg;
        else if (c == 'p')
            port = atoi(optarg);
        else
            return 2;
    }
    if (optind + 1 != argc || port < 1 || port > 65535) {
        fprintf(stderr, "usage: netmed setup-netns [--guest-net CIDR] [--veth-peer NETNS] [--port N] NAME\n");
        return 2;
    }
    char *name = argv[optind];
    cidr_t g;
    if (cidr_parse(gnet, &g) < 0 || g.net.family != AF_INET || g.len > 30) {
        fprintf(stderr, "netmed setup: --guest-net must be an IPv4 CIDR of /30 or wider\n");
        return 2;
    }
    netaddr_t gw, guest;
    netaddr_from_v4(netaddr_v4(&g.net) + 1, &gw);
    netaddr_from_v4(netaddr_v4(&g.net) + 2, &guest);
    char gws[NETADDR_STRLEN], gs[NETADDR_STRLEN], gc[64];
    netaddr_format(&gw, gws, sizeof gws);
    netaddr_format(&guest, gs, sizeof gs);
    snprintf(gc, sizeof gc, "%s/%d", gs, g.len);
    int r;
    {
        char *a[] = { "ip", "netns", "add", name, NULL };
        if (run(a, NULL) < 0)
            return 1;                   /* exists or cannot be made: not ours to remove */
    }
    if (peer) {
        RUN("ip", "link", "add", "tap0", "netns", name, "type", "veth", "peer", "name", "eth0", "netns", peer);
        RUN("ip", "-n", peer, "addr", "add", gc, "dev", "eth0");
        RUN("ip", "-n", peer, "link", "set", "eth0", "up");
        RUN("ip", "-n", peer, "link", "set", "lo", "up");
        RUN("ip", "-n", peer, "route", "add", "default", "via", gws);
    }
    if ((r = in_netns(name, !peer)) < 0 || (r = setup_configure_netns(name, gnet, port)) < 0)
        goto out;
    return 0;
out:
    fprintf(stderr, "netmed setup-netns %s failed; removing it\n", name);
    char *d[] = { "ip", "netns", "del", name, NULL };
    run(d, NULL);
    return 1;
}
