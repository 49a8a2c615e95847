/* http_route.c — route patterns, path splitting and percent-decoding for
 * lanes_http. Pure string code; every function returns negative errno on
 * failure and leaves its out-parameters untouched. */
#include "http_route.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int http_url_decode(const char *in, size_t len, bool plus_space, char **out)
{
    char *s = malloc(len + 1);
    if (!s)
        return -ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '%') {
            if (len - i < 3) {
                free(s);
                return -EINVAL;
            }
            int h = hexval(in[i + 1]), l = hexval(in[i + 2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0)) {
                free(s);
                return -EINVAL;
            }
            s[o++] = (char)(h * 16 + l);
            i += 2;
        } else if (c == '+' && plus_space) {
            s[o++] = ' ';
        } else if (c == '\0') {
            free(s);
            return -EINVAL;
        } else {
            s[o++] = c;
        }
    }
    s[o] = '\0';
    *out = s;
    return 0;
}

void http_segs_free(char **segs, size_t nsegs)
{
    if (!segs)
        return;
    for (size_t i = 0; i < nsegs; i++)
        free(segs[i]);
    free(segs);
}

int http_path_split(const char *raw, size_t len, char ***segs_out, size_t *nsegs_out)
{
    if (len == 0 || raw[0] != '/')
        return -EINVAL;
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (raw[i] == '/')
            n++;
    char **segs = calloc(n, sizeof(*segs));
    if (!segs)
        return -ENOMEM;
    size_t k = 0, start = 1;
    for (size_t i = 1; i <= len; i++) {
        if (i == len || raw[i] == '/') {
            int r = http_url_decode(raw + start, i - start, false, &segs[k]);
            if (r < 0) {
                http_segs_free(segs, k);
                return r;
            }
            k++;
            start = i + 1;
        }
    }
    *segs_out = segs;
    *nsegs_out = k;
    return 0;
}

static bool seg_is_param(const char *seg)
{
    size_t l = strlen(seg);
    return l > 2 && seg[0] == '{' && seg[l - 1] == '}';
}

http_route_t *http_route_new(const char *method, const char *pattern, unsigned flags,
                             http_handler_fn fn, void *ctx)
{
    if (!method || !pattern || !fn || pattern[0] != '/') {
        errno = EINVAL;
        return NULL;
    }
    http_route_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->method = strdup(method);
    size_t n = 0;
    for (const char *p = pattern; *p; p++)
        if (*p == '/')
            n++;
    r->segs = calloc(n, sizeof(*r->segs));
    if (!r->method || !r->segs)
        goto fail;
    const char *start = pattern + 1;
    size_t nparams = 0;
    for (;;) {
        const char *end = strchr(start, '/');
        size_t l = end ? (size_t)(end - start) : strlen(start);
        char *seg = strndup(start, l);
        if (!seg)
            goto fail;
        r->segs[r->nsegs++] = seg;
        if (strchr(seg, '{') || strchr(seg, '}')) {
            if (!seg_is_param(seg) || strchr(seg + 1, '{') || ++nparams > HTTP_ROUTE_MAX_PARAMS) {
                errno = EINVAL;
                goto fail;
            }
        }
        if (!end)
            break;
        start = end + 1;
    }
    r->flags = flags;
    r->fn = fn;
    r->ctx = ctx;
    return r;
fail:;
    int e = errno;
    http_route_free(r);
    errno = e;
    return NULL;
}

void http_route_free(http_route_t *route)
{
    if (!route)
        return;
    free(route->method);
    http_segs_free(route->segs, route->nsegs);
    free(route);
}

void http_kv_free(http_kv_t *kv, size_t n)
{
    if (!kv)
        return;
    for (size_t i = 0; i < n; i++) {
        free(kv[i].name);
        free(kv[i].value);
    }
}

int http_route_match(const http_route_t *route, char *const *segs, size_t nsegs,
                     http_kv_t params[HTTP_ROUTE_MAX_PARAMS])
{
    if (route->nsegs != nsegs)
        return -1;
    for (size_t i = 0; i < nsegs; i++) {
        if (seg_is_param(route->segs[i])) {
            if (segs[i][0] == '\0')
                return -1;
        } else if (strcmp(route->segs[i], segs[i]) != 0) {
            return -1;
        }
    }
    int np = 0;
    for (size_t i = 0; i < nsegs; i++) {
        if (!seg_is_param(route->segs[i]))
            continue;
        const char *s = route->segs[i];
        params[np].name = strndup(s + 1, strlen(s) - 2);
        params[np].value = strdup(segs[i]);
        np++;
        if (!params[np - 1].name || !params[np - 1].value) {
            http_kv_free(params, (size_t)np);
            return -ENOMEM;
        }
    }
    return np;
}

int http_query_parse(const char *raw, size_t len, http_kv_t **pairs_out, size_t *npairs_out)
{
    size_t n = 1;
    for (size_t i = 0; i < len; i++)
        if (raw[i] == '&')
            n++;
    http_kv_t *kv = calloc(n, sizeof(*kv));
    if (!kv)
        return -ENOMEM;
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && raw[i] != '&')
            continue;
        const char *p = raw + start;
        size_t l = i - start;
        start = i + 1;
        if (l == 0)
            continue;
        const char *eq = memchr(p, '=', l);
        size_t nl = eq ? (size_t)(eq - p) : l;
        int r = http_url_decode(p, nl, true, &kv[k].name);
        if (r == 0) {
            r = eq ? http_url_decode(eq + 1, l - nl - 1, true, &kv[k].value)
                   : ((kv[k].value = strdup("")) ? 0 : -ENOMEM);
            if (r < 0)
                free(kv[k].name);
        }
        if (r < 0) {
            http_kv_free(kv, k);
            free(kv);
            return r;
        }
        k++;
    }
    *pairs_out = kv;
    *npairs_out = k;
    return 0;
}
