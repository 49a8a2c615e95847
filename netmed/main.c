/* main.c — netmed: the per-lane network mediator (docs/netmed.md).
 *
 * Startup: load policy, secrets, CA; enter the lane netns just long enough
 * to open the TPROXY listener (127.0.0.1:PORT, IP_TRANSPARENT) and the DNS
 * socket (gateway:53), then return to the netns netmed was started in (the
 * host's) for everything else — upstream dials happen there. The process
 * never moves afterwards; threads are created only after the return.
 * Then: DNS thread, and the main loop accepting guest connections (one
 * thread each) and control-socket clients. SIGTERM/SIGINT exit cleanly.
 * If netmed dies, the lane's nft rules still steer guest TCP to a listener
 * that no longer exists, so the lane has no network (fail closed).
 */
#include "netmed.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

policy_t *netmed_policy_get(netmed_t *m)
{
    pthread_mutex_lock(&m->lock);
    policy_t *p = policy_ref(m->policy);
    pthread_mutex_unlock(&m->lock);
    return p;
}

void netmed_policy_set(netmed_t *m, policy_t *p)
{
    pthread_mutex_lock(&m->lock);
    policy_t *old = m->policy;
    m->policy = p;
    pthread_mutex_unlock(&m->lock);
    policy_unref(old);
}

secrets_t *netmed_secrets_get(netmed_t *m)
{
    pthread_mutex_lock(&m->lock);
    secrets_t *ss = secrets_ref(m->secrets);
    pthread_mutex_unlock(&m->lock);
    return ss;
}

/* Re-read the --secrets file and swap the set. Open connections keep
 * theirs until their next request (or next read, for a splice): nothing is
 * dropped. On error the old set stays. Returns the count or -errno. */
int netmed_secrets_reload(netmed_t *m, char *err, size_t errlen)
{
    if (!m->secrets_path) {
        snprintf(err, errlen, "netmed was started without --secrets");
        return -ENOENT;
    }
    secrets_t *ss;
    int r = secrets_load(m->secrets_path, &ss, err, errlen);
    if (r < 0)
        return r;
    pthread_mutex_lock(&m->lock);
    secrets_t *old = m->secrets;
    m->secrets = ss;
    pthread_mutex_unlock(&m->lock);
    secrets_unref(old);
    return (int)ss->n;
}

size_t netmed_host_addrs(netmed_t *m, netaddr_t *out, size_t max)
{
    pthread_mutex_lock(&m->lock);
    size_t n = m->nhost < max ? m->nhost : max;
    memcpy(out, m->host_addrs, n * sizeof *out);
    pthread_mutex_unlock(&m->lock);
    return n;
}

/* The host's own addresses (this netns), blocked as destinations. */
int netmed_refresh_host_addrs(netmed_t *m)
{
    struct ifaddrs *ifa, *i;
    if (getifaddrs(&ifa) < 0)
        return -errno;
    netaddr_t tmp[NETMED_MAX_HOST_ADDRS];
    size_t n = 0;
    for (i = ifa; i && n < NETMED_MAX_HOST_ADDRS; i = i->ifa_next) {
        if (!i->ifa_addr)
            continue;
        memset(&tmp[n], 0, sizeof tmp[n]);
        if (i->ifa_addr->sa_family == AF_INET) {
            tmp[n].family = AF_INET;
            memcpy(tmp[n].a, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, 4);
            n++;
        } else if (i->ifa_addr->sa_family == AF_INET6) {
            tmp[n].family = AF_INET6;
            memcpy(tmp[n].a, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, 16);
            n++;
        }
    }
    freeifaddrs(ifa);
    pthread_mutex_lock(&m->lock);
    memcpy(m->host_addrs, tmp, n * sizeof *tmp);
    m->nhost = n;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int netns_open(const char *spec)
{
    char path[512];
    bool digits = spec[0] != '\0';
    for (const char *c = spec; *c; c++)
        digits &= *c >= '0' && *c <= '9';
    if (digits)
        snprintf(path, sizeof path, "/proc/%s/ns/net", spec);
    else if (strchr(spec, '/'))
        snprintf(path, sizeof path, "%s", spec);
    else
        snprintf(path, sizeof path, "/run/netns/%s", spec);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/* Open both lane-side sockets inside the lane netns. */
static int open_lane_sockets(netmed_t *m, const char *netns, char *err, size_t errlen)
{
    int lane = netns_open(netns);
    if (lane < 0) {
        snprintf(err, errlen, "open netns %s: %s", netns, strerror(-lane));
        return lane;
    }
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0 || setns(lane, CLONE_NEWNET) < 0) {
        int e = errno;
        snprintf(err, errlen, "enter netns %s: %s", netns, strerror(e));
        close(lane);
        if (self >= 0)
            close(self);
        return -e;
    }
    const char *what = "";
    int r = lane_sockets_open(m->tproxy_port, &m->gw, &m->listen_fd, &m->dns_fd, &what);
    if (setns(self, CLONE_NEWNET) < 0) {
        fprintf(stderr, "netmed: cannot return to the host netns: %m\n");
        abort();                        /* never run on in the lane netns */
    }
    close(self);
    close(lane);
    if (r < 0)
        snprintf(err, errlen, "%s in netns %s: %s", what, netns, strerror(-r));
    return r;
}

/* Take over the inherited lane sockets: check they are what netmed expects
 * (a listening TCP and a bound UDP IPv4 socket) and make them close-on-exec. */
static int lane_fds_adopt(int lfd, int dfd, netmed_t *m, char *err, size_t errlen)
{
    const int fds[2] = { lfd, dfd }, want[2] = { SOCK_STREAM, SOCK_DGRAM };
    for (int i = 0; i < 2; i++) {
        int type = 0, domain = 0, acc = 0;
        socklen_t l1 = sizeof type, l2 = sizeof domain, l3 = sizeof acc;
        if (getsockopt(fds[i], SOL_SOCKET, SO_TYPE, &type, &l1) < 0 ||
            getsockopt(fds[i], SOL_SOCKET, SO_DOMAIN, &domain, &l2) < 0 ||
            getsockopt(fds[i], SOL_SOCKET, SO_ACCEPTCONN, &acc, &l3) < 0 || type != want[i] ||
            domain != AF_INET || acc != (i == 0)) {
            snprintf(err, errlen, "--lane-fds: fd %d is not the expected %s socket", fds[i],
                     i == 0 ? "listening TCP" : "UDP");
            return -EINVAL;
        }
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    m->listen_fd = lfd;
    m->dns_fd = dfd;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: netmed --netns NAME|PATH|PID --policy FILE --ca-dir DIR [--secrets FILE]\n"
            "              [--audit FILE | --audit-fd N] [--control SOCK] [--guest-net CIDR]\n"
            "              [--trust-bundle PEM] [--port N] [--ready-fd N]\n"
            "       netmed --lane-fds LISTEN,DNS ... (sockets made in the lane netns by netns-holder)\n"
            "       netmed setup-netns [--guest-net CIDR] [--veth-peer NETNS] [--port N] NAME\n"
            "       netmed netns-holder [--guest-net CIDR] [--port N] --socket PATH\n"
            "       netmed teardown-netns NAME\n"
            "       netmed check-policy FILE\n"
            "       netmed ctl SOCK stats|policy-get|policy-set FILE|approvals\n"
            "       netmed ctl SOCK approval-decide ID allow|deny [remember] [by=WHO]\n");
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "setup-netns") == 0)
        return setup_netns_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "netns-holder") == 0)
        return holder_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "ctl") == 0)
        return control_client(argc - 1, argv + 1);
    if (argc == 3 && strcmp(argv[1], "check-policy") == 0) {
        policy_t *p;
        char err[512];
        if (policy_load_file(argv[2], &p, err, sizeof err) < 0) {
            fprintf(stderr, "netmed: %s\n", err);
            return 1;
        }
        policy_unref(p);
        printf("ok\n");
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "teardown-netns") == 0) {
        execlp("ip", "ip", "netns", "del", argv[2], (char *)NULL);
        return 127;
    }
    static const struct option opts[] = {
        { "netns", required_argument, NULL, 'n' },
        { "policy", required_argument, NULL, 'p' },
        { "ca-dir", required_argument, NULL, 'c' },
        { "secrets", required_argument, NULL, 's' },
        { "audit", required_argument, NULL, 'a' },
        { "audit-fd", required_argument, NULL, 'A' },
        { "control", required_argument, NULL, 'C' },
        { "guest-net", required_argument, NULL, 'g' },
        { "trust-bundle", required_argument, NULL, 't' },
        { "port", required_argument, NULL, 'P' },
        { "ready-fd", required_argument, NULL, 'r' },
        { "lane-fds", required_argument, NULL, 'L' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { 0 } };
    const char *netns = NULL, *policy_path = NULL, *ca_dir = NULL, *secrets_path = NULL, *audit_path = NULL,
               *ctl_path = NULL, *gnet = "10.0.2.0/30", *trust = NULL;
    int audit_fd = -1, ready_fd = -1, port = NETMED_TPROXY_PORT, c;
    int lane_lfd = -1, lane_dfd = -1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'n': netns = optarg; break;
        case 'p': policy_path = optarg; break;
        case 'c': ca_dir = optarg; break;
        case 's': secrets_path = optarg; break;
        case 'a': audit_path = optarg; break;
        case 'A': audit_fd = atoi(optarg); break;
        case 'C': ctl_path = optarg; break;
        case 'g': gnet = optarg; break;
        case 't': trust = optarg; break;
        case 'P': port = atoi(optarg); break;
        case 'r': ready_fd = atoi(optarg); break;
        case 'L':
            if (sscanf(optarg, "%d,%d", &lane_lfd, &lane_dfd) != 2 || lane_lfd < 3 || lane_dfd < 3) {
                fprintf(stderr, "netmed: --lane-fds LISTEN,DNS: two inherited fd numbers\n");
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("netmed %s\n", LANES_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if ((!netns == (lane_lfd < 0)) || !policy_path || !ca_dir || optind != argc || port < 1 || port > 65535) {
        usage(stderr);
        return 2;
    }
    netmed_t m;
    memset(&m, 0, sizeof m);
    m.tproxy_port = (uint16_t)port;
    m.connect_timeout_ms = 10000;
    m.idle_timeout_s = 300;
    m.listen_fd = m.dns_fd = m.ctl_fd = -1;
    pthread_mutex_init(&m.lock, NULL);
    approvals_init(&m.approvals);
    char err[512];
    if (cidr_parse(gnet, &m.guest_net) < 0 || m.guest_net.net.family != AF_INET || m.guest_net.len > 30) {
        fprintf(stderr, "netmed: --guest-net: an IPv4 CIDR of /30 or wider\n");
        return 2;
    }
    netaddr_from_v4(netaddr_v4(&m.guest_net.net) + 1, &m.gw);
    if (policy_load_file(policy_path, &m.policy, err, sizeof err) < 0) {
        fprintf(stderr, "netmed: %s\n", err);
        return 1;
    }
    m.secrets_path = secrets_path;
    if (secrets_path && secrets_load(secrets_path, &m.secrets, err, sizeof err) < 0) {
        fprintf(stderr, "netmed: %s\n", err);
        return 1;
    }
    cidr_t synth;
    cidr_parse(NETMED_SYNTH_RANGE, &synth);
    dns_table_init(&m.names, &synth, 65536);
    if (tls_open(ca_dir, trust, &m.tls, err, sizeof err) < 0) {
        fprintf(stderr, "netmed: %s\n", err);
        return 1;
    }
    int r = audit_path ? audit_open(audit_path, -1, &m.audit) : audit_open(NULL, audit_fd >= 0 ? audit_fd : 2, &m.audit);
    if (r < 0) {
        fprintf(stderr, "netmed: audit log: %s\n", strerror(-r));
        return 1;
    }
    if (lane_lfd >= 0) {
        /* Rootless: made in the lane netns by `netmed netns-holder`. */
        if (lane_fds_adopt(lane_lfd, lane_dfd, &m, err, sizeof err) < 0) {
            fprintf(stderr, "netmed: %s\n", err);
            return 1;
        }
    } else if (open_lane_sockets(&m, netns, err, sizeof err) < 0) {
        fprintf(stderr, "netmed: %s\n", err);
        return 1;
    }
    netmed_refresh_host_addrs(&m);
    if (ctl_path && (m.ctl_fd = control_listen(ctl_path)) < 0) {
        fprintf(stderr, "netmed: control socket %s: %s\n", ctl_path, strerror(-m.ctl_fd));
        return 1;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &mask, NULL); /* threads inherit the mask */
    sigdelset(&mask, SIGPIPE);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_t tid;
    if (pthread_create(&tid, &attr, dns_thread, &m) != 0) {
        fprintf(stderr, "netmed: start DNS thread failed\n");
        return 1;
    }
    json_object *a = json_object_new_object();
    json_object_object_add(a, "ev", json_object_new_string("start"));
    json_object_object_add(a, "pid", json_object_new_int(getpid()));
    json_object_object_add(a, "netns", json_object_new_string(netns ? netns : "user namespace (inherited sockets)"));
    audit_emit(m.audit, a);
    fprintf(stderr, "netmed: ready (netns %s, tproxy 127.0.0.1:%d)\n", netns ? netns : "of the inherited sockets", port);
    if (ready_fd >= 0) {
        (void)!write(ready_fd, "ready\n", 6);
        close(ready_fd);
    }

    for (;;) {
        struct pollfd pf[3] = { { .fd = m.listen_fd, .events = POLLIN },
                                { .fd = m.ctl_fd, .events = POLLIN },
                                { .fd = sfd, .events = POLLIN } };
        if (poll(pf, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pf[2].revents)
            break;
        if (pf[0].revents) {
            int fd = accept4(m.listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                conn_arg_t *ca = malloc(sizeof *ca);
                int64_t act = __atomic_add_fetch(&m.stats.active, 1, __ATOMIC_RELAXED);
                if (!ca || act > NETMED_MAX_CONNS || (ca->m = &m, ca->fd = fd, pthread_create(&tid, &attr, proxy_conn_thread, ca) != 0)) {
                    __atomic_sub_fetch(&m.stats.active, 1, __ATOMIC_RELAXED);
                    free(ca);
                    close(fd);
                }
            }
        }
        if (pf[1].revents) {
            int cfd = accept4(m.ctl_fd, NULL, NULL, SOCK_CLOEXEC);
            if (cfd >= 0)
                control_serve_one(&m, cfd);
        }
    }
    approvals_stop(&m.approvals, m.audit);
    json_object *e = json_object_new_object();
    json_object_object_add(e, "ev", json_object_new_string("stop"));
    audit_emit(m.audit, e);
    if (ctl_path)
        unlink(ctl_path);
    /* Connection threads may still run: exit without tearing shared state
     * down under them; the kernel closes every socket. */
    _exit(0);
}
