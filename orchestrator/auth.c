/* auth.c — who may use lanesd's API.
 *
 * The unix socket is the trust boundary for local use: it is created 0600
 * in a directory nobody else can write (auth_check_socket_dir refuses to
 * start otherwise), so a request on it is the owner's. The optional TCP
 * listener (--listen-tcp) requires "Authorization: Bearer TOKEN" with a
 * token from the tokens file (--tokens), one "SCOPE TOKEN" per line:
 *
 *   admin     everything
 *   read-only GET requests only, and no WebSocket upgrades (shells)
 *
 * Tokens are compared in constant time: both sides are hashed with SHA-256
 * and the digests compared with CRYPTO_memcmp, so neither the content nor
 * the length of a token leaks through timing. The tokens file must not be
 * readable by group or others.
 *
 * Threading: the uv loop; the token table is immutable after loading.
 */
#include "lanesd.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define AUTH_MIN_TOKEN 16

struct auth_token {
    unsigned char digest[32];
    int admin;
};

struct auth {
    struct auth_token *tokens;
    size_t ntokens;
};

static void token_digest(const char *tok, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    EVP_Digest(tok, len, out, &n, EVP_sha256(), NULL);
}

int auth_load_tokens(const char *path, auth_t **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "open tokens file %s: %s", path, strerror(errno));
        return -errno;
    }
    struct stat st;
    if (fstat(fileno(f), &st) < 0 || (st.st_mode & 077)) {
        snprintf(err, errlen, "tokens file %s must not be accessible by group or others (chmod 600)", path);
        fclose(f);
        return -EPERM;
    }
    auth_t *a = calloc(1, sizeof(*a));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int lineno = 0, r = 0;
    while (a && (n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        char scope[32], tok[512];
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '#' || *p == '\n' || *p == '\0')
            continue;
        char extra[2];
        if (sscanf(p, "%31s %511s %1s", scope, tok, extra) != 2) {
            snprintf(err, errlen, "%s:%d: expected \"SCOPE TOKEN\"", path, lineno);
            r = -EINVAL;
            break;
        }
        int admin = !strcmp(scope, "admin");
        if (!admin && strcmp(scope, "read-only") != 0) {
            snprintf(err, errlen, "%s:%d: unknown scope '%s' (admin or read-only)", path, lineno, scope);
            r = -EINVAL;
            break;
        }
        if (strlen(tok) < AUTH_MIN_TOKEN) {
            snprintf(err, errlen, "%s:%d: token shorter than %d characters", path, lineno, AUTH_MIN_TOKEN);
            r = -EINVAL;
            break;
        }
        struct auth_token *t = realloc(a->tokens, (a->ntokens + 1) * sizeof(*t));
        if (!t) {
            r = -ENOMEM;
            break;
        }
        a->tokens = t;
        token_digest(tok, strlen(tok), t[a->ntokens].digest);
        t[a->ntokens].admin = admin;
        a->ntokens++;
        OPENSSL_cleanse(tok, sizeof(tok));
    }
    if (line)
        OPENSSL_cleanse(line, cap);
    free(line);
    fclose(f);
    if (!a)
        r = -ENOMEM;
    if (r == 0 && a->ntokens == 0) {
        snprintf(err, errlen, "tokens file %s has no tokens", path);
        r = -EINVAL;
    }
    if (r < 0) {
        auth_free(a);
        return r;
    }
    *out = a;
    return 0;
}

void auth_free(auth_t *a)
{
    if (!a)
        return;
    free(a->tokens);
    free(a);
}

/* 1 admin, 0 read-only, -1 unknown. Every token is compared (no early exit). */
static int auth_lookup(const auth_t *a, const char *tok)
{
    unsigned char d[32];
    token_digest(tok, strlen(tok), d);
    int found = -1;
    for (size_t i = 0; i < a->ntokens; i++)
        if (CRYPTO_memcmp(d, a->tokens[i].digest, sizeof(d)) == 0)
            found = a->tokens[i].admin;
    return found;
}

int auth_check_request(http_req_t *req, void *ud)
{
    const auth_t *a = ud;
    if (!http_req_is_tcp(req))
        return 0; /* the 0600 unix socket: the owner */
    const char *h = http_req_header(req, "Authorization");
    int scope = -1;
    if (a && h && !strncasecmp(h, "Bearer ", 7))
        scope = auth_lookup(a, h + 7);
    if (scope < 0) {
        http_req_add_header(req, "WWW-Authenticate", "Bearer realm=\"lanes\"");
        http_req_respond_error(req, 401, "unauthorized", "a valid bearer token is required on the TCP listener");
        return -1;
    }
    if (scope == 0 && (strcmp(http_req_method(req), "GET") != 0 || http_req_is_websocket(req))) {
        http_req_respond_error(req, 403, "forbidden", "this token is read-only (GET requests only)");
        return -1;
    }
    return 0;
}

int auth_check_socket_dir(const char *socket_path, char *err, size_t errlen)
{
    char dir[600];
    snprintf(dir, sizeof(dir), "%s", socket_path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    struct stat st;
    if (stat(dir, &st) < 0) {
        snprintf(err, errlen, "socket directory %s: %s", dir, strerror(errno));
        return -errno;
    }
    if (st.st_uid != geteuid() && st.st_uid != 0) {
        snprintf(err, errlen, "socket directory %s belongs to uid %u, not to us", dir, (unsigned)st.st_uid);
        return -EPERM;
    }
    /* Anyone who can write the directory can swap the socket for their own. */
    if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX)) {
        snprintf(err, errlen, "socket directory %s is writable by group or others (mode %04o); use a private directory",
                 dir, (unsigned)(st.st_mode & 07777));
        return -EPERM;
    }
    return 0;
}

int auth_check_socket(const char *socket_path, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(socket_path, &st) < 0) {
        snprintf(err, errlen, "socket %s: %s", socket_path, strerror(errno));
        return -errno;
    }
    if (!S_ISSOCK(st.st_mode) || (st.st_mode & 0777) != 0600 || st.st_uid != geteuid()) {
        snprintf(err, errlen, "socket %s has mode %04o owned by uid %u; lanesd requires 0600 owned by itself",
                 socket_path, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid);
        return -EPERM;
    }
    return 0;
}
