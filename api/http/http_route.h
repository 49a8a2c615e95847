/* http_route.h — internal to lanes_http: route patterns and URL decoding.
 *
 * A pattern like "/v1/lanes/{name}/exec" is split into segments once at
 * registration; a request path is split into percent-decoded segments and
 * compared segment by segment, so "%2F" inside a {param} never splits it.
 * Pure functions, no uv, no globals.
 */
#ifndef LANES_HTTP_ROUTE_H
#define LANES_HTTP_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "http_server.h"

#define HTTP_ROUTE_MAX_PARAMS 8

typedef struct http_route http_route_t;
struct http_route {
    char *method;
    char **segs;      /* literal text, or "{name}" for a parameter */
    size_t nsegs;
    unsigned flags;
    http_handler_fn fn;
    void *ctx;
    http_route_t *next;
};

typedef struct {
    char *name;
    char *value;
} http_kv_t;

/* Parse pattern; NULL on a malformed pattern (errno EINVAL) or ENOMEM. */
http_route_t *http_route_new(const char *method, const char *pattern, unsigned flags,
                             http_handler_fn fn, void *ctx);
void http_route_free(http_route_t *route);

/* Percent-decode in[0..len) into a new NUL-terminated string. plus_space turns
 * '+' into ' ' (query strings). Returns 0, -EINVAL (bad escape or %00) or
 * -ENOMEM. */
int http_url_decode(const char *in, size_t len, bool plus_space, char **out);

/* Split a raw path ("/a/b%20c") into decoded segments. 0 or negative errno. */
int http_path_split(const char *raw, size_t len, char ***segs, size_t *nsegs);
void http_segs_free(char **segs, size_t nsegs);

/* Does route match segs? On a match fills params (names and values are
 * newly allocated) and returns the number of params (>= 0); -1 on no match,
 * -ENOMEM on allocation failure. */
int http_route_match(const http_route_t *route, char *const *segs, size_t nsegs,
                     http_kv_t params[HTTP_ROUTE_MAX_PARAMS]);

/* Parse "a=1&b=x%20y" into decoded pairs. 0 or negative errno. */
int http_query_parse(const char *raw, size_t len, http_kv_t **pairs, size_t *npairs);
void http_kv_free(http_kv_t *kv, size_t n);

#endif
