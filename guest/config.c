/* config.c — LP_CONFIGURE: the lane's network, resolver, CA and default
 * environment, applied inside the guest.
 *
 * Everything written lives on tmpfs (/run/lanes) and reaches the distro's
 * paths through bind mounts, so the lane's disk is never modified and a
 * re-configure (sent after every HELLO) replaces the previous state:
 *   /run/lanes/resolv.conf    bind-mounted over /etc/resolv.conf
 *   /run/lanes/lane-ca.crt    the lane CA (public certificate only)
 *   /run/lanes/ca-bundle.crt  system bundle + lane CA, bind-mounted over
 *                             /etc/ssl/certs/ca-certificates.crt if present
 * Execs then get SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE (bundle)
 * and NODE_EXTRA_CA_CERTS (lane CA) plus the host's DEFAULT_ENV entries.
 *
 * The network: the first non-loopback interface gets NET_ADDR, is brought
 * up, and gets a default route via NET_GW (ioctls; no ip(8) needed).
 */
#include "lane_init.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define RUN_DIR "/run/lanes"
#define SYSTEM_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

typedef struct {
    char addr[64];
    char gw[64];
    char dns[4][64];
    int ndns;
    const uint8_t *ca;
    uint32_t ca_len;
    char *env[LI_MAX_DEFAULT_ENV];
    size_t nenv;
} li_config_t;

static void config_free(li_config_t *c)
{
    for (size_t i = 0; i < c->nenv; i++)
        free(c->env[i]);
    c->nenv = 0;
}

static int config_parse(const uint8_t *payload, size_t len, li_config_t *c, char *msg, size_t msglen)
{
    lp_tlv_iter_t it;
    lp_tlv_init(&it, payload, len);
    uint16_t tag;
    const uint8_t *val;
    uint32_t vlen;
    int r;
    while ((r = lp_tlv_next(&it, &tag, &val, &vlen)) > 0) {
        switch (tag) {
        case LP_T_NET_ADDR:
            r = lp_val_str(val, vlen, c->addr, sizeof(c->addr));
            break;
        case LP_T_NET_GW:
            r = lp_val_str(val, vlen, c->gw, sizeof(c->gw));
            break;
        case LP_T_DNS:
            if (c->ndns >= 4) {
                r = 0;
                break;
            }
            r = lp_val_str(val, vlen, c->dns[c->ndns], sizeof(c->dns[0]));
            if (r == 0)
                c->ndns++;
            break;
        case LP_T_CA_PEM:
            if (memchr(val, '\0', vlen)) {
                r = -EBADMSG;
                break;
            }
            c->ca = val;
            c->ca_len = vlen;
            r = 0;
            break;
        case LP_T_DEFAULT_ENV: {
            if (c->nenv >= LI_MAX_DEFAULT_ENV) {
                snprintf(msg, msglen, "CONFIGURE: more than %d DEFAULT_ENV entries", LI_MAX_DEFAULT_ENV);
                return -E2BIG;
            }
            char *kv = malloc((size_t)vlen + 1);
            if (!kv)
                return -ENOMEM;
            r = lp_val_str(val, vlen, kv, (size_t)vlen + 1);
            if (r == 0 && (!strchr(kv, '=') || kv[0] == '=')) {
                r = -EINVAL;
            }
            if (r < 0) {
                free(kv);
                break;
            }
            c->env[c->nenv++] = kv;
            break;
        }
        default:
            r = 0; /* unknown tags are ignored */
        }
        if (r < 0) {
            snprintf(msg, msglen, "CONFIGURE: malformed field %u", tag);
            return r;
        }
    }
    if (r < 0) {
        snprintf(msg, msglen, "CONFIGURE: truncated field list");
        return r;
    }
    return 0;
}

static int write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    int r = li_write_all(fd, data, len);
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0)
        unlink(tmp);
    return r;
}

/* Bind src over dst (an existing regular file), replacing an earlier bind. */
static int bind_over(const char *src, const char *dst)
{
    while (umount2(dst, MNT_DETACH) == 0)
        ; /* peel off earlier configures */
    struct stat st;
    if (stat(dst, &st) < 0 || !S_ISREG(st.st_mode))
        return -ENOENT;
    if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
        return -errno;
    return 0;
}

static int prefix_to_mask(int prefix, struct in_addr *mask)
{
    if (prefix < 0 || prefix > 32)
        return -EINVAL;
    mask->s_addr = prefix == 0 ? 0 : htonl(0xffffffffu << (32 - prefix));
    return 0;
}

static int net_apply(li_ctx_t *ctx, const li_config_t *c, char *msg, size_t msglen)
{
    char addr[64];
    snprintf(addr, sizeof(addr), "%s", c->addr);
    char *slash = strchr(addr, '/');
    int prefix = 24;
    if (slash) {
        *slash = '\0';
        prefix = atoi(slash + 1);
    }
    struct in_addr ip, mask, gw;
    if (inet_pton(AF_INET, addr, &ip) != 1 || prefix_to_mask(prefix, &mask) < 0 ||
        (c->gw[0] && inet_pton(AF_INET, c->gw, &gw) != 1)) {
        snprintf(msg, msglen, "CONFIGURE: bad address %s / gateway %s", c->addr, c->gw);
        return -EINVAL;
    }
    /* The first interface that is not loopback: virtio-net comes up as eth0
     * (no udev renames it), but do not depend on the name. */
    char ifname[IF_NAMESIZE] = "";
    struct if_nameindex *ifs = if_nameindex();
    for (struct if_nameindex *i = ifs; i && i->if_index; i++) {
        if (strcmp(i->if_name, "lo") != 0) {
            snprintf(ifname, sizeof(ifname), "%s", i->if_name);
            break;
        }
    }
    if (ifs)
        if_freenameindex(ifs);
    if (!ifname[0]) {
        snprintf(msg, msglen, "CONFIGURE: the lane has no network interface");
        return -ENODEV;
    }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    int r = 0;
    const char *what = "";
    sin->sin_family = AF_INET;
    sin->sin_addr = ip;
    if (ioctl(s, SIOCSIFADDR, &ifr) < 0) {
        what = "SIOCSIFADDR";
        goto fail;
    }
    sin->sin_addr = mask;
    if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0) {
        what = "SIOCSIFNETMASK";
        goto fail;
    }
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
        what = "SIOCGIFFLAGS";
        goto fail;
    }
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) {
        what = "SIOCSIFFLAGS";
        goto fail;
    }
    if (c->gw[0]) {
        struct rtentry rt;
        memset(&rt, 0, sizeof(rt));
        struct sockaddr_in *dst = (struct sockaddr_in *)&rt.rt_dst;
        struct sockaddr_in *gen = (struct sockaddr_in *)&rt.rt_genmask;
        struct sockaddr_in *gwa = (struct sockaddr_in *)&rt.rt_gateway;
        dst->sin_family = gen->sin_family = gwa->sin_family = AF_INET;
        gwa->sin_addr = gw;
        rt.rt_flags = RTF_UP | RTF_GATEWAY;
        rt.rt_dev = ifname;
        if (ioctl(s, SIOCADDRT, &rt) < 0 && errno != EEXIST) {
            what = "SIOCADDRT";
            goto fail;
        }
    }
    close(s);
    li_debug(ctx, "network: %s %s via %s", ifname, c->addr, c->gw[0] ? c->gw : "-");
    return 0;
fail:
    r = -errno;
    close(s);
    snprintf(msg, msglen, "CONFIGURE: %s on %s: %s", what, ifname, strerror(-r));
    return r;
}

static int resolver_apply(const li_config_t *c, char *msg, size_t msglen)
{
    char buf[512];
    size_t n = 0;
    for (int i = 0; i < c->ndns; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "nameserver %s\n", c->dns[i]);
    int r = write_file(RUN_DIR "/resolv.conf", buf, n, 0644);
    if (r == 0)
        r = bind_over(RUN_DIR "/resolv.conf", "/etc/resolv.conf");
    if (r == -ENOENT) {
        /* No regular /etc/resolv.conf (missing, or a symlink into a resolver
         * daemon's runtime dir that does not run here): create the file. */
        struct stat st;
        if (lstat("/etc/resolv.conf", &st) == 0 && S_ISLNK(st.st_mode))
            unlink("/etc/resolv.conf");
        r = write_file("/etc/resolv.conf", buf, n, 0644);
    }
    if (r < 0)
        snprintf(msg, msglen, "CONFIGURE: resolver: %s", strerror(-r));
    return r;
}

static int read_file(const char *path, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t cap = 256 * 1024, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    for (;;) {
        if (n == cap) {
            if (cap >= 16 * 1024 * 1024)
                break;
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    *out = buf;
    *len = n;
    return 0;
}

static int ca_apply(li_ctx_t *ctx, const li_config_t *c, char *msg, size_t msglen)
{
    int r = write_file(RUN_DIR "/lane-ca.crt", c->ca, c->ca_len, 0644);
    if (r < 0) {
        snprintf(msg, msglen, "CONFIGURE: write lane CA: %s", strerror(-r));
        return r;
    }
    /* The original system bundle (peel earlier binds off first). */
    while (umount2(SYSTEM_BUNDLE, MNT_DETACH) == 0)
        ;
    char *sys = NULL;
    size_t syslen = 0;
    int have_sys = read_file(SYSTEM_BUNDLE, &sys, &syslen) == 0;
    size_t total = syslen + 1 + c->ca_len;
    char *bundle = malloc(total);
    if (!bundle) {
        free(sys);
        return -ENOMEM;
    }
    size_t n = 0;
    if (have_sys && syslen) {
        memcpy(bundle, sys, syslen);
        n = syslen;
        if (bundle[n - 1] != '\n')
            bundle[n++] = '\n';
    }
    memcpy(bundle + n, c->ca, c->ca_len);
    n += c->ca_len;
    free(sys);
    r = write_file(RUN_DIR "/ca-bundle.crt", bundle, n, 0644);
    free(bundle);
    if (r < 0) {
        snprintf(msg, msglen, "CONFIGURE: write CA bundle: %s", strerror(-r));
        return r;
    }
    if (have_sys) {
        r = bind_over(RUN_DIR "/ca-bundle.crt", SYSTEM_BUNDLE);
        if (r < 0)
            li_log(ctx, "CONFIGURE: cannot bind the CA bundle over %s: %s", SYSTEM_BUNDLE, strerror(-r));
    }
    return 0;
}

static int ctx_env_add(li_ctx_t *ctx, const char *kv)
{
    if (ctx->ndefault_env >= LI_MAX_DEFAULT_ENV)
        return -E2BIG;
    char *dup = strdup(kv);
    if (!dup)
        return -ENOMEM;
    ctx->default_env[ctx->ndefault_env++] = dup;
    return 0;
}

void config_reset(li_ctx_t *ctx)
{
    for (size_t i = 0; i < ctx->ndefault_env; i++)
        free(ctx->default_env[i]);
    ctx->ndefault_env = 0;
}

void config_apply(li_ctx_t *ctx, uint32_t stream, const uint8_t *payload, size_t len)
{
    li_config_t c;
    memset(&c, 0, sizeof(c));
    char msg[256] = "";
    int r = config_parse(payload, len, &c, msg, sizeof(msg));
    if (r == 0 && mkdir(RUN_DIR, 0755) < 0 && errno != EEXIST) {
        r = -errno;
        snprintf(msg, sizeof(msg), "CONFIGURE: mkdir %s: %s", RUN_DIR, strerror(errno));
    }
    if (r == 0 && c.addr[0])
        r = net_apply(ctx, &c, msg, sizeof(msg));
    if (r == 0 && c.ndns)
        r = resolver_apply(&c, msg, sizeof(msg));
    if (r == 0 && c.ca_len)
        r = ca_apply(ctx, &c, msg, sizeof(msg));
    if (r == 0) {
        config_reset(ctx);
        if (c.ca_len) {
            static const char *const ca_env[] = {
                "SSL_CERT_FILE=" RUN_DIR "/ca-bundle.crt", "REQUESTS_CA_BUNDLE=" RUN_DIR "/ca-bundle.crt",
                "CURL_CA_BUNDLE=" RUN_DIR "/ca-bundle.crt", "NODE_EXTRA_CA_CERTS=" RUN_DIR "/lane-ca.crt",
            };
            for (size_t i = 0; r == 0 && i < sizeof(ca_env) / sizeof(ca_env[0]); i++)
                r = ctx_env_add(ctx, ca_env[i]);
        }
        for (size_t i = 0; r == 0 && i < c.nenv; i++)
            r = ctx_env_add(ctx, c.env[i]);
        if (r < 0)
            snprintf(msg, sizeof(msg), "CONFIGURE: default environment: %s", strerror(-r));
    }
    config_free(&c);
    if (r < 0) {
        li_log(ctx, "%s", msg);
        agent_send_error(ctx, stream, -r, "%s", msg);
        return;
    }
    agent_send_frame(ctx, LP_OK, stream, NULL, 0);
}
