/* resolve.c — netmed's own upstream name resolution, done in the host netns
 * at dial time (and for trusted/open DNS answers).
 *
 * trusted mode, or any mode with dns.servers: ask the configured servers
 * over UDP with our codec (2 tries per server, 1.5 s each, random id and
 * source port, answer must match id, name and type). Otherwise the host
 * resolver (getaddrinfo: /etc/hosts, resolv.conf, nsswitch).
 * IPv4 only: lanes' guest network is IPv4.
 */
#include "netmed.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int ask_server(const dns_server_t *srv, const char *name, netaddr_t *out, size_t max)
{
    uint8_t q[512], resp[1500];
    uint16_t id;
    if (getrandom(&id, sizeof id, 0) != sizeof id)
        return -EIO;
    int qn = dns_build_query(q, sizeof q, id, name, DNS_TYPE_A);
    if (qn < 0)
        return qn;
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    if (srv->addr.family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(srv->port);
        memcpy(&s4->sin_addr, srv->addr.a, 4);
        sl = sizeof *s4;
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(srv->port);
        memcpy(&s6->sin6_addr, srv->addr.a, 16);
        sl = sizeof *s6;
    }
    int fd = socket(srv->addr.family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int r = -ETIMEDOUT;
    /* connect() makes the kernel drop datagrams from other sources */
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0) {
        r = -errno;
        goto out;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        if (send(fd, q, (size_t)qn, 0) < 0) {
            r = -errno;
            goto out;
        }
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int pr;
        while ((pr = poll(&pfd, 1, 1500)) > 0) {
            ssize_t n = recv(fd, resp, sizeof resp, 0);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                r = -errno;
                goto out;
            }
            int k = dns_parse_response(resp, (size_t)n, id, name, DNS_TYPE_A, out, max);
            if (k == -EINVAL)
                continue;               /* not our answer: keep waiting */
            r = k;
            goto out;
        }
    }
out:
    close(fd);
    return r;
}

int resolve_upstream(const policy_t *p, const char *name, netaddr_t *out, size_t max)
{
    if (p->nservers > 0) {
        int r = -EIO;
        for (size_t i = 0; i < p->nservers; i++) {
            r = ask_server(&p->servers[i], name, out, max);
            if (r > 0 || r == -ENOENT)
                return r;
        }
        return r;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int e = getaddrinfo(name, NULL, &hints, &res);
    if (e == EAI_NONAME || e == EAI_NODATA)
        return -ENOENT;
    if (e != 0)
        return -EIO;
    size_t n = 0;
    for (struct addrinfo *ai = res; ai && n < max; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET)
            continue;
        memset(&out[n], 0, sizeof out[n]);
        out[n].family = AF_INET;
        memcpy(out[n].a, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, 4);
        bool dup = false;
        for (size_t k = 0; k < n; k++)
            dup |= netaddr_equal(&out[k], &out[n]);
        if (!dup)
            n++;
    }
    freeaddrinfo(res);
    return n ? (int)n : -ENOENT;
}
