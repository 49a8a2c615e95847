/* tls.c — per-lane CA, leaf minting, TLS contexts (see tls.h).
 *
 * One EC P-256 leaf key per netmed process signs every minted leaf; leaves
 * are valid from one hour ago for 7 days and cached by name for the life of
 * the process (bounded; the cache is simply cleared when full).
 */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define LEAF_CACHE_MAX 1024

typedef struct {
    char *name;
    X509 *cert;
} leaf_t;

struct tls {
    EVP_PKEY *ca_key;
    X509 *ca_cert;
    EVP_PKEY *leaf_key;
    SSL_CTX *server;
    SSL_CTX *client;
    pthread_mutex_t lock;
    leaf_t leaves[LEAF_CACHE_MAX];
    size_t nleaves;
    int idx_name, idx_bad;
};

__attribute__((format(printf, 3, 4)))
static int terr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    unsigned long e = ERR_get_error();
    if (e && n >= 0 && (size_t)n < errlen)
        ERR_error_string_n(e, err + n, errlen - (size_t)n);
    ERR_clear_error();
    return -EIO;
}

static EVP_PKEY *key_new(void)
{
    return EVP_EC_gen("P-256");
}

static int set_serial(X509 *x)
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1)
        return -1;
    b[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(b, sizeof b, NULL);
    int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok ? 0 : -1;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ex)
        return -1;
    int ok = X509_add_ext(cert, ex, -1);
    X509_EXTENSION_free(ex);
    return ok ? 0 : -1;
}

static int write_file(const char *path, mode_t mode, int (*wr)(FILE *, void *), void *obj)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return -errno;
    }
    int ok = wr(f, obj);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        ok = 0;
    fclose(f);
    return ok ? 0 : -EIO;
}

static int wr_key(FILE *f, void *k) { return PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL); }
static int wr_cert(FILE *f, void *c) { return PEM_write_X509(f, c); }

static int ca_generate(tls_t *t, const char *dir, char *err, size_t errlen)
{
    char kp[4096], cp[4096];
    snprintf(kp, sizeof kp, "%s/ca.key", dir);
    snprintf(cp, sizeof cp, "%s/ca.crt", dir);
    t->ca_key = key_new();
    t->ca_cert = X509_new();
    if (!t->ca_key || !t->ca_cert)
        return terr(err, errlen, "generate CA key: ");
    X509 *x = t->ca_cert;
    unsigned char rnd[6];
    char cn[64];
    RAND_bytes(rnd, sizeof rnd);
    snprintf(cn, sizeof cn, "lanes lane CA %02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3],
             rnd[4], rnd[5]);
    X509_set_version(x, 2);
    set_serial(x);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "O", MBSTRING_ASC, (const unsigned char *)"lanes", -1, -1, 0);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, nm);
    X509_set_pubkey(x, t->ca_key);
    if (add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
        add_ext(x, x, NID_subject_key_identifier, "hash") < 0 || !X509_sign(x, t->ca_key, EVP_sha256()))
        return terr(err, errlen, "sign CA: ");
    int r;
    if ((r = write_file(kp, 0600, wr_key, t->ca_key)) < 0) {
        snprintf(err, errlen, "write %s: %s", kp, strerror(-r));
        return r;
    }
    if ((r = write_file(cp, 0644, wr_cert, t->ca_cert)) < 0) {
        snprintf(err, errlen, "write %s: %s", cp, strerror(-r));
        return r;
    }
    return 0;
}

static int ca_load(tls_t *t, const char *dir, char *err, size_t errlen)
{
    char kp[4096], cp[4096];
    snprintf(kp, sizeof kp, "%s/ca.key", dir);
    snprintf(cp, sizeof cp, "%s/ca.crt", dir);
    bool have_k = access(kp, F_OK) == 0, have_c = access(cp, F_OK) == 0;
    if (!have_k && !have_c) {
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
            snprintf(err, errlen, "mkdir %s: %s", dir, strerror(errno));
            return -errno;
        }
        return ca_generate(t, dir, err, errlen);
    }
    if (!have_k || !have_c) {
        snprintf(err, errlen, "%s: has only one of ca.key and ca.crt", dir);
        return -ENOENT;
    }
    struct stat st;
    if (stat(kp, &st) < 0 || (st.st_mode & 077)) {
        snprintf(err, errlen, "%s: CA key must be mode 0600", kp);
        return -EPERM;
    }
    FILE *f = fopen(kp, "re");
    if (f) {
        t->ca_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
    }
    f = fopen(cp, "re");
    if (f) {
        t->ca_cert = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (!t->ca_key || !t->ca_cert || X509_check_private_key(t->ca_cert, t->ca_key) != 1)
        return terr(err, errlen, "load CA from %s: ", dir);
    return 0;
}

/* Mint (or fetch) the leaf for name. Returns a new reference or NULL. */
static X509 *leaf_get(tls_t *t, const char *name)
{
    X509 *x = NULL;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < t->nleaves; i++)
        if (strcmp(t->leaves[i].name, name) == 0) {
            x = t->leaves[i].cert;
            X509_up_ref(x);
            goto out;
        }
    x = X509_new();
    if (!x)
        goto out;
    char san[300];
    snprintf(san, sizeof san, "DNS:%s", name);
    X509_set_version(x, 2);
    set_serial(x);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 7L * 24 * 3600);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(t->ca_cert));
    X509_set_pubkey(x, t->leaf_key);
    if (add_ext(x, t->ca_cert, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
        add_ext(x, t->ca_cert, NID_key_usage, "critical,digitalSignature") < 0 ||
        add_ext(x, t->ca_cert, NID_ext_key_usage, "serverAuth") < 0 ||
        add_ext(x, t->ca_cert, NID_subject_alt_name, san) < 0 ||
        add_ext(x, t->ca_cert, NID_authority_key_identifier, "keyid") < 0 ||
        !X509_sign(x, t->ca_key, EVP_sha256())) {
        X509_free(x);
        x = NULL;
        ERR_clear_error();
        goto out;
    }
    if (t->nleaves == LEAF_CACHE_MAX) {
        for (size_t i = 0; i < t->nleaves; i++) {
            free(t->leaves[i].name);
            X509_free(t->leaves[i].cert);
        }
        t->nleaves = 0;
    }
    t->leaves[t->nleaves].name = strdup(name);
    if (t->leaves[t->nleaves].name) {
        X509_up_ref(x);
        t->leaves[t->nleaves].cert = x;
        t->nleaves++;
    }
out:
    pthread_mutex_unlock(&t->lock);
    return x;
}

static int sni_cb(SSL *ssl, int *alert, void *arg)
{
    tls_t *t = arg;
    const char *want = SSL_get_ex_data(ssl, t->idx_name);
    int *bad = SSL_get_ex_data(ssl, t->idx_bad);
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!sni)
        return SSL_TLSEXT_ERR_OK;       /* no SNI: the name is ours anyway */
    size_t n = strlen(sni);
    if (n && sni[n - 1] == '.')
        n--;
    if (want && strlen(want) == n && strncasecmp(sni, want, n) == 0)
        return SSL_TLSEXT_ERR_OK;
    if (bad)
        *bad = 1;
    *alert = SSL_AD_UNRECOGNIZED_NAME;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Offer only HTTP/1.1 to the guest: we parse HTTP/1.x, not h2. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg)
{
    static const unsigned char h11[] = "\x08http/1.1";
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, h11, sizeof h11 - 1, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

int tls_open(const char *ca_dir, const char *trust_bundle, tls_t **out, char *err, size_t errlen)
{
    tls_t *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    pthread_mutex_init(&t->lock, NULL);
    int r = ca_load(t, ca_dir, err, errlen);
    if (r < 0)
        goto fail;
    r = -EIO;
    t->leaf_key = key_new();
    t->server = SSL_CTX_new(TLS_server_method());
    t->client = SSL_CTX_new(TLS_client_method());
    if (!t->leaf_key || !t->server || !t->client) {
        terr(err, errlen, "TLS init: ");
        goto fail;
    }
    t->idx_name = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    t->idx_bad = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    SSL_CTX_set_min_proto_version(t->server, TLS1_2_VERSION);
    SSL_CTX_set_min_proto_version(t->client, TLS1_2_VERSION);
    SSL_CTX_set_tlsext_servername_callback(t->server, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(t->server, t);
    SSL_CTX_set_alpn_select_cb(t->server, alpn_cb, NULL);
    SSL_CTX_set_options(t->server, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
    SSL_CTX_set_verify(t->client, SSL_VERIFY_PEER, NULL);
    /* Bulk relaying: read ahead into a 64 KiB buffer, so one recv() brings
     * several records instead of two syscalls (header, body) per record.
     * Callers must test SSL_has_pending(), not SSL_pending(), before poll. */
    SSL_CTX_set_read_ahead(t->server, 1);
    SSL_CTX_set_read_ahead(t->client, 1);
    SSL_CTX_set_default_read_buffer_len(t->server, 65536);
    SSL_CTX_set_default_read_buffer_len(t->client, 65536);
    if (trust_bundle) {
        if (SSL_CTX_load_verify_locations(t->client, trust_bundle, NULL) != 1) {
            terr(err, errlen, "load trust bundle %s: ", trust_bundle);
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(t->client) != 1) {
        terr(err, errlen, "load host trust store: ");
        goto fail;
    }
    static const unsigned char h11[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(t->client, h11, sizeof h11 - 1);
    *out = t;
    return 0;
fail:
    tls_close(t);
    return r;
}

void tls_close(tls_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nleaves; i++) {
        free(t->leaves[i].name);
        X509_free(t->leaves[i].cert);
    }
    SSL_CTX_free(t->server);
    SSL_CTX_free(t->client);
    EVP_PKEY_free(t->leaf_key);
    EVP_PKEY_free(t->ca_key);
    X509_free(t->ca_cert);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

SSL *tls_server_new(tls_t *t, int fd, const char *name, int *sni_bad)
{
    X509 *leaf = leaf_get(t, name);
    if (!leaf)
        return NULL;
    SSL *s = SSL_new(t->server);
    if (!s || SSL_use_certificate(s, leaf) != 1 || SSL_use_PrivateKey(s, t->leaf_key) != 1 ||
        SSL_add1_chain_cert(s, t->ca_cert) != 1 || SSL_set_fd(s, fd) != 1) {
        SSL_free(s);
        X509_free(leaf);
        ERR_clear_error();
        return NULL;
    }
    X509_free(leaf);
    SSL_set_ex_data(s, t->idx_name, (void *)name);
    SSL_set_ex_data(s, t->idx_bad, sni_bad);
    return s;
}

SSL *tls_client_new(tls_t *t, int fd, const char *name)
{
    SSL *s = SSL_new(t->client);
    if (!s || SSL_set_tlsext_host_name(s, name) != 1 || SSL_set1_host(s, name) != 1 ||
        SSL_set_fd(s, fd) != 1) {
        SSL_free(s);
        ERR_clear_error();
        return NULL;
    }
    return s;
}
