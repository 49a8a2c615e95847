/* netmed.h — netmed's internal module map and shared context.
 *
 * Threads: the main thread accepts guest TCP (TPROXY listener) and serves
 * the control socket; one thread answers guest DNS; each accepted guest
 * connection gets its own thread (bounded by NETMED_MAX_CONNS) with blocking
 * sockets and timeouts. Shared state lives in netmed_t: the current policy
 * (swapped whole under lock, readers take a reference), the name table
 * (locked inside), secrets (swapped whole under lock like the policy,
 * readers take a reference), TLS (locked inside), counters
 * (atomics). The process never changes netns after startup: listeners were
 * opened in the lane netns, everything else runs in the netns netmed was
 * started in (the host's).
 */
#ifndef LANES_NETMED_NETMED_H
#define LANES_NETMED_NETMED_H

#include "addr.h"
#include "approval.h"
#include "audit.h"
#include "dns.h"
#include "http.h"
#include "policy.h"
#include "secrets.h"
#include "tls.h"

#include <pthread.h>
#include <stdint.h>

#define NETMED_TPROXY_PORT 15001
#define NETMED_MAX_CONNS 512
#define NETMED_MAX_HOST_ADDRS 64
#define NETMED_SYNTH_RANGE "198.18.0.0/16"

typedef struct {
    uint64_t conns_allowed, conns_denied, dns_queries, dns_refused, http_requests, http_blocked,
        bytes_up, bytes_down, secrets_injected, secrets_masked;
    int64_t active;
} netmed_stats_t;

typedef struct netmed {
    cidr_t guest_net;
    netaddr_t gw;                /* lane side of tap0: DNS resolver address */
    uint16_t tproxy_port;
    int connect_timeout_ms;
    int idle_timeout_s;

    pthread_mutex_t lock;        /* guards policy and host_addrs */
    policy_t *policy;
    netaddr_t host_addrs[NETMED_MAX_HOST_ADDRS];
    size_t nhost;

    secrets_t *secrets;          /* may be NULL; swapped whole under lock (reload) */
    const char *secrets_path;    /* --secrets, re-read by "secrets-reload" */
    dns_table_t names;
    tls_t *tls;
    audit_t *audit;
    approvals_t approvals;       /* connections held for a human (approval.h) */
    netmed_stats_t stats;

    int listen_fd, dns_fd, ctl_fd;
} netmed_t;

/* main.c */
policy_t *netmed_policy_get(netmed_t *m);            /* new reference */
void netmed_policy_set(netmed_t *m, policy_t *p);    /* takes the reference */
secrets_t *netmed_secrets_get(netmed_t *m);          /* new reference (NULL: none) */
int netmed_secrets_reload(netmed_t *m, char *err, size_t errlen); /* count or -errno */
size_t netmed_host_addrs(netmed_t *m, netaddr_t *out, size_t max);
int netmed_refresh_host_addrs(netmed_t *m);

/* resolve.c: upstream resolution for name under policy p (A records).
 * Returns count, -ENOENT (no such name), -EIO/-ETIMEDOUT. */
int resolve_upstream(const policy_t *p, const char *name, netaddr_t *out, size_t max);

/* proxy.c */
typedef struct {
    netmed_t *m;
    int fd;
} conn_arg_t;
void *proxy_conn_thread(void *arg);                  /* arg: heap conn_arg_t */
void *dns_thread(void *arg);                         /* arg: netmed_t */

/* control.c */
int control_listen(const char *path);
void control_serve_one(netmed_t *m, int cfd);
int control_client(int argc, char **argv);

/* setup.c */
int setup_netns_main(int argc, char **argv);
/* IPv6/forwarding off in the current netns; make_tap: persistent tap0. */
int setup_prepare_current_netns(bool make_tap);
/* Addresses, routing, nft rules in netns ns (NULL: the current one). */
int setup_configure_netns(const char *ns, const char *gnet, int port);

/* holder.c: `netmed netns-holder` (rootless lanes, docs/lanesd.md) */
int holder_main(int argc, char **argv);
/* The lane-side sockets netmed serves (TPROXY listener, DNS on the
 * gateway), opened in the current netns; both fds or -errno + *what. */
int lane_sockets_open(uint16_t port, const netaddr_t *gw, int *listen_fd, int *dns_fd, const char **what);

#define STAT_ADD(m, f, v) __atomic_add_fetch(&(m)->stats.f, (v), __ATOMIC_RELAXED)

#endif
