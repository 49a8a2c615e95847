/* tls.h — netmed's TLS: the per-lane CA (generated on first use, key 0600,
 * never leaves the host), leaf certificates minted per host name and
 * cached, and the upstream client context (host trust store or a bundle
 * given for tests, hostname verification always on).
 *
 * tls_t is shared by all connection threads; the leaf cache is locked
 * inside. SSL objects belong to one thread.
 */
#ifndef LANES_NETMED_TLS_H
#define LANES_NETMED_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

typedef struct tls tls_t;

/* Load ca_dir/ca.key + ca.crt, or create both if neither exists.
 * trust_bundle: PEM file of upstream roots, NULL = the host's default store. */
int tls_open(const char *ca_dir, const char *trust_bundle, tls_t **out, char *err, size_t errlen);
void tls_close(tls_t *t);

/* Server side towards the guest for connection name. The handshake fails if
 * the client's SNI is present and differs from name; *sni_bad is then set
 * (read it after SSL_accept fails). */
SSL *tls_server_new(tls_t *t, int fd, const char *name, int *sni_bad);
/* Client side towards upstream: SNI = name, certificate must verify for it. */
SSL *tls_client_new(tls_t *t, int fd, const char *name);

#endif
