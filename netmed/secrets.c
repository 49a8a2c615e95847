/* secrets.c — secrets file, substitution, placeholder scan and value
 * masking (see secrets.h). */
#include "secrets.h"
#include "policy.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRETS_MAX_BYTES (1 << 20)
#define SECRET_MIN_PLACEHOLDER 16

__attribute__((format(printf, 4, 5)))
static int serr(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

void secrets_free(secrets_t *ss)
{
    if (!ss)
        return;
    for (size_t i = 0; i < ss->n; i++) {
        secret_t *s = &ss->s[i];
        free(s->name);
        if (s->value) {
            explicit_bzero(s->value, strlen(s->value));
            free(s->value);
        }
        free(s->placeholder);
        for (size_t k = 0; k < s->nhosts; k++)
            free(s->hosts[k]);
        free(s->hosts);
    }
    free(ss->s);
    free(ss);
}

secrets_t *secrets_ref(secrets_t *ss)
{
    if (ss)
        __atomic_add_fetch(&ss->refs, 1, __ATOMIC_RELAXED);
    return ss;
}

void secrets_unref(secrets_t *ss)
{
    if (ss && __atomic_sub_fetch(&ss->refs, 1, __ATOMIC_ACQ_REL) == 0)
        secrets_free(ss);
}

static char *jstr(json_object *o, const char *key)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return strdup(json_object_get_string(v));
}

int secrets_parse(const char *json, size_t len, secrets_t **out, char *err, size_t errlen)
{
    json_tokener *tok = json_tokener_new();
    if (!tok)
        return -ENOMEM;
    json_object *root = json_tokener_parse_ex(tok, json, (int)len);
    json_tokener_free(tok);
    json_object *arr;
    if (!root || !json_object_object_get_ex(root, "secrets", &arr) ||
        !json_object_is_type(arr, json_type_array)) {
        json_object_put(root);
        return serr(err, errlen, -EINVAL, "secrets: expected {\"secrets\": [...]}");
    }
    int r = -ENOMEM;
    secrets_t *ss = calloc(1, sizeof *ss);
    size_t n = json_object_array_length(arr);
    if (!ss || !(ss->s = calloc(n ? n : 1, sizeof *ss->s)))
        goto out;
    ss->refs = 1;
    for (size_t i = 0; i < n; i++) {
        json_object *o = json_object_array_get_idx(arr, i);
        secret_t *s = &ss->s[i];
        ss->n = i + 1;
        json_object *hosts;
        if (!json_object_is_type(o, json_type_object) || !(s->name = jstr(o, "name")) ||
            !(s->value = jstr(o, "value")) || !(s->placeholder = jstr(o, "placeholder")) ||
            !json_object_object_get_ex(o, "hosts", &hosts) ||
            !json_object_is_type(hosts, json_type_array)) {
            r = serr(err, errlen, -EINVAL, "secrets[%zu]: needs name, value, placeholder, hosts", i);
            goto out;
        }
        if (!*s->value || strlen(s->placeholder) < SECRET_MIN_PLACEHOLDER ||
            strstr(s->placeholder, s->value) || strstr(s->value, s->placeholder)) {
            r = serr(err, errlen, -EINVAL,
                     "secrets[%zu] (%s): empty value or placeholder shorter than %d bytes or overlapping",
                     i, s->name, SECRET_MIN_PLACEHOLDER);
            goto out;
        }
        for (const char *c = s->placeholder; *c; c++)
            if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_') {
                r = serr(err, errlen, -EINVAL, "secrets[%zu]: placeholder must be [A-Za-z0-9_-]", i);
                goto out;
            }
        for (const char *c = s->value; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f) {
                r = serr(err, errlen, -EINVAL, "secrets[%zu]: value must be a valid header value", i);
                goto out;
            }
        size_t nh = json_object_array_length(hosts);
        s->hosts = calloc(nh ? nh : 1, sizeof *s->hosts);
        if (!s->hosts)
            goto out;
        for (size_t k = 0; k < nh; k++) {
            json_object *h = json_object_array_get_idx(hosts, k);
            if (!json_object_is_type(h, json_type_string)) {
                r = serr(err, errlen, -EINVAL, "secrets[%zu].hosts[%zu]: not a string", i, k);
                goto out;
            }
            s->hosts[k] = strdup(json_object_get_string(h));
            if (!s->hosts[k])
                goto out;
            s->nhosts = k + 1;
            for (char *c = s->hosts[k]; *c; c++)
                *c = (char)tolower((unsigned char)*c);
        }
    }
    *out = ss;
    ss = NULL;
    r = 0;
out:
    secrets_free(ss);
    json_object_put(root);
    return r;
}

int secrets_load(const char *path, secrets_t **out, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return serr(err, errlen, -e, "open secrets %s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || (st.st_mode & 077)) {
        close(fd);
        return serr(err, errlen, -EPERM, "secrets %s: must not be accessible to group/others (chmod 600)", path);
    }
    char *buf = malloc(SECRETS_MAX_BYTES);
    size_t n = 0;
    int r = 0;
    while (buf && n < SECRETS_MAX_BYTES) {
        ssize_t k = read(fd, buf + n, SECRETS_MAX_BYTES - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            r = -errno;
            break;
        }
        if (k == 0)
            break;
        n += (size_t)k;
    }
    close(fd);
    if (!buf)
        return -ENOMEM;
    if (r == 0)
        r = secrets_parse(buf, n, out, err, errlen);
    else
        serr(err, errlen, r, "read secrets %s: %s", path, strerror(-r));
    explicit_bzero(buf, n);
    free(buf);
    return r;
}

bool secret_host_allowed(const secret_t *s, const char *host)
{
    for (size_t i = 0; i < s->nhosts; i++)
        if (policy_host_match(s->hosts[i], host))
            return true;
    return false;
}

const secret_t *secrets_find_placeholder(const secrets_t *ss, const char *buf, size_t len)
{
    if (!ss)
        return NULL;
    for (size_t i = 0; i < ss->n; i++)
        if (memmem(buf, len, ss->s[i].placeholder, strlen(ss->s[i].placeholder)))
            return &ss->s[i];
    return NULL;
}

int secrets_substitute(const secrets_t *ss, const char *value, const char *host, char **out,
                       const secret_t **bad, bool *used)
{
    *out = NULL;
    *bad = NULL;
    if (!ss || !secrets_find_placeholder(ss, value, strlen(value)))
        return 0;
    for (size_t i = 0; i < ss->n; i++) {
        const secret_t *s = &ss->s[i];
        if (strstr(value, s->placeholder) && !secret_host_allowed(s, host)) {
            *bad = s;
            return 0;
        }
    }
    /* Build the substituted value. Placeholders are [A-Za-z0-9_-] and no
     * placeholder contains another's value, so one left-to-right pass is
     * unambiguous. */
    size_t cap = strlen(value) + 1, len = 0;
    for (size_t i = 0; i < ss->n; i++)
        cap += strlen(ss->s[i].value) * (strlen(value) / strlen(ss->s[i].placeholder) + 1);
    char *res = malloc(cap);
    if (!res)
        return -ENOMEM;
    const char *p = value;
    while (*p) {
        size_t i;
        for (i = 0; i < ss->n; i++) {
            size_t pl = strlen(ss->s[i].placeholder);
            if (strncmp(p, ss->s[i].placeholder, pl) == 0) {
                size_t vl = strlen(ss->s[i].value);
                memcpy(res + len, ss->s[i].value, vl);
                len += vl;
                p += pl;
                used[i] = true;
                break;
            }
        }
        if (i == ss->n)
            res[len++] = *p++;
    }
    res[len] = '\0';
    *out = res;
    return 1;
}

size_t secrets_mask(const secrets_t *ss, char *buf, size_t len)
{
    size_t count = 0;
    if (!ss)
        return 0;
    for (size_t i = 0; i < ss->n; i++) {
        size_t vl = strlen(ss->s[i].value);
        char *p = buf, *end = buf + len;
        while ((p = memmem(p, (size_t)(end - p), ss->s[i].value, vl))) {
            memset(p, '*', vl);
            p += vl;
            count++;
        }
    }
    return count;
}

void secret_filter_init(secret_filter_t *f, const secrets_t *ss, filter_mode_t mode)
{
    memset(f, 0, sizeof *f);
    f->ss = ss;
    f->mode = mode;
    size_t longest = 0;
    for (size_t i = 0; ss && i < ss->n; i++) {
        size_t l = strlen(mode == FILTER_SCAN ? ss->s[i].placeholder : ss->s[i].value);
        if (l > longest)
            longest = l;
    }
    f->keep = longest ? longest - 1 : 0;
}

void secret_filter_rebind(secret_filter_t *f, const secrets_t *ss)
{
    size_t longest = 0;
    for (size_t i = 0; ss && i < ss->n; i++) {
        size_t l = strlen(f->mode == FILTER_SCAN ? ss->s[i].placeholder : ss->s[i].value);
        if (l > longest)
            longest = l;
    }
    f->ss = ss;
    f->keep = longest ? longest - 1 : 0;
}

void secret_filter_free(secret_filter_t *f)
{
    if (f->buf) {
        explicit_bzero(f->buf, f->cap);
        free(f->buf);
    }
    if (f->out) {
        explicit_bzero(f->out, f->outcap);
        free(f->out);
    }
    f->buf = f->out = NULL;
}

static int grow(char **b, size_t *cap, size_t need)
{
    if (need <= *cap && *b)
        return 0;
    size_t nc = need + 16384;
    char *nb = malloc(nc);
    if (!nb)
        return -ENOMEM;
    if (*b) {
        memcpy(nb, *b, *cap);
        explicit_bzero(*b, *cap);
        free(*b);
    }
    *b = nb;
    *cap = nc;
    return 0;
}

/* Length of the longest suffix of f->buf that is a proper prefix of one of
 * the filter's patterns (placeholders when scanning, values when masking). */
static size_t filter_pending_tail(const secret_filter_t *f)
{
    size_t best = 0;
    for (size_t i = 0; f->ss && i < f->ss->n; i++) {
        const char *pat = f->mode == FILTER_SCAN ? f->ss->s[i].placeholder : f->ss->s[i].value;
        size_t pl = strlen(pat);
        size_t max = pl - 1 < f->len ? pl - 1 : f->len;
        for (size_t k = max; k > best; k--) {
            if (memcmp(f->buf + f->len - k, pat, k) == 0) {
                best = k;
                break;
            }
        }
    }
    return best;
}

int secret_filter_push(secret_filter_t *f, const char *in, size_t n, bool flush,
                       const char **out, size_t *outn)
{
    *out = NULL;
    *outn = 0;
    if (f->found)
        return 1;
    if ((!f->ss || f->ss->n == 0) && f->len == 0) { /* nothing to look for: pass through */
        *out = in;
        *outn = n;
        return 0;
    }
    if (grow(&f->buf, &f->cap, f->len + n) < 0)
        return -ENOMEM;
    memcpy(f->buf + f->len, in, n);
    f->len += n;
    if (f->mode == FILTER_SCAN) {
        const secret_t *s = secrets_find_placeholder(f->ss, f->buf, f->len);
        if (s) {
            f->found = s;
            return 1;
        }
    } else {
        f->masked += secrets_mask(f->ss, f->buf, f->len);
    }
    /* After masking/scanning, only a tail that is a proper prefix of some
     * pattern can still grow into a match; everything before it is final.
     * Holding back just that tail (usually nothing) keeps keep-alive
     * responses flowing: holding a fixed keep bytes would stall the end of
     * every response until the peer sends more or closes. */
    size_t emit = flush ? f->len : f->len - filter_pending_tail(f);
    if (grow(&f->out, &f->outcap, emit) < 0)
        return -ENOMEM;
    memcpy(f->out, f->buf, emit);
    memmove(f->buf, f->buf + emit, f->len - emit);
    f->len -= emit;
    *out = f->out;
    *outn = emit;
    return 0;
}
