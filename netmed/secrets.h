/* secrets.h — a lane's secrets as netmed sees them: name, real value,
 * placeholder (what the guest holds), and the hosts the value may go to.
 *
 * Also the streaming filter used on bodies and tunnels: it holds back the
 * last (longest pattern - 1) bytes so a pattern split across reads is still
 * seen. In SCAN mode it reports a placeholder; in MASK mode it overwrites
 * real values with '*' of the same length (framing and lengths unchanged).
 *
 * A secrets_t is immutable after load and reference-counted: netmed swaps
 * the whole set on a reload (control "secrets-reload") while connections
 * keep the set they took until they take the new one. Never log a value.
 */
#ifndef LANES_NETMED_SECRETS_H
#define LANES_NETMED_SECRETS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *name;
    char *value;
    char *placeholder;
    char **hosts;        /* lowercase patterns as in policy host rules */
    size_t nhosts;
} secret_t;

typedef struct {
    secret_t *s;
    size_t n;
    unsigned refs;       /* atomic; 1 after load/parse */
} secrets_t;

/* Load secrets JSON: {"secrets":[{"name","value","placeholder","hosts":[]}]}.
 * The file must not be readable by group or others. 0 or -errno + err. */
int secrets_load(const char *path, secrets_t **out, char *err, size_t errlen);
int secrets_parse(const char *json, size_t len, secrets_t **out, char *err, size_t errlen);
void secrets_free(secrets_t *s);
/* Reference counting (NULL-safe): unref frees the set with the last one. */
secrets_t *secrets_ref(secrets_t *s);
void secrets_unref(secrets_t *s);

bool secret_host_allowed(const secret_t *s, const char *host);

/* First placeholder found in buf (any secret), or NULL. */
const secret_t *secrets_find_placeholder(const secrets_t *ss, const char *buf, size_t len);

/* Replace every placeholder in a header value with the real value if the
 * secret may go to host. Returns a new string in *out (caller frees; NULL if
 * nothing changed), and sets *bad to the first placeholder that may not go
 * to host. used[] (ss->n flags) marks substituted secrets. */
int secrets_substitute(const secrets_t *ss, const char *value, const char *host, char **out,
                       const secret_t **bad, bool *used);

/* Overwrite real values of secrets in buf with '*'. Returns the count. */
size_t secrets_mask(const secrets_t *ss, char *buf, size_t len);

typedef enum { FILTER_SCAN, FILTER_MASK } filter_mode_t;

typedef struct {
    const secrets_t *ss;
    filter_mode_t mode;
    size_t keep;         /* longest pattern - 1 */
    char *buf;           /* held bytes, not yet emitted */
    size_t len, cap;
    char *out;           /* last emitted block */
    size_t outcap;
    const secret_t *found; /* SCAN: first placeholder seen */
    size_t masked;
} secret_filter_t;

void secret_filter_init(secret_filter_t *f, const secrets_t *ss, filter_mode_t mode);
/* Switch a filter to another secrets set (after a reload); held bytes stay
 * and are checked against the new set's patterns with the next push. */
void secret_filter_rebind(secret_filter_t *f, const secrets_t *ss);
void secret_filter_free(secret_filter_t *f);
/* Add n bytes; out and outn: bytes now safe to pass on (valid until the next
 * call). In SCAN mode returns 1 (and emits nothing more) once a placeholder
 * is seen. flush: end of stream, emit everything held. -ENOMEM on failure. */
int secret_filter_push(secret_filter_t *f, const char *in, size_t n, bool flush,
                       const char **out, size_t *outn);

#endif
