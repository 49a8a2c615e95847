/* client.c — libcurl transport for lanectl (see client.h). */
#include "client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

typedef struct {
    lanectl_t *ctx;
    struct curl_slist *headers;
    char *payload;
} easy_state_t;

CURL *client_easy(lanectl_t *ctx, const char *method, const char *path)
{
    CURL *h = curl_easy_init();
    if (!h)
        return NULL;
    /* The host part is a placeholder: the unix socket decides where we go. */
    char url[4096];
    snprintf(url, sizeof(url), "http://localhost%s", path);
    curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, ctx->socket_path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "lanectl/" LANES_VERSION);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
    return h;
}

void client_report_transport(lanectl_t *ctx, CURLcode rc, const char *errbuf)
{
    const char *why = errbuf && errbuf[0] ? errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST)
        lanectl_err("cannot reach lanesd at %s: %s (is lanesd running? set --socket or LANES_SOCKET)",
                    ctx->socket_path, why);
    else
        lanectl_err("request to lanesd at %s failed: %s", ctx->socket_path, why);
}

void client_report_api_error(long status, const char *body, size_t len)
{
    json_object *o = NULL, *err, *msg;
    if (body && len) {
        json_tokener *tok = json_tokener_new_ex(16);
        if (tok) {
            o = json_tokener_parse_ex(tok, body, (int)len);
            json_tokener_free(tok);
        }
    }
    if (o && json_object_object_get_ex(o, "error", &err) && json_object_object_get_ex(err, "message", &msg))
        lanectl_err("%s", json_object_get_string(msg));
    else
        lanectl_err("lanesd answered HTTP %ld", status);
    if (o)
        json_object_put(o);
}

typedef struct {
    char *data;
    size_t len;
} buf_t;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    buf_t *b = ud;
    size_t len = size * n;
    if (b->len + len > (64u << 20))
        return 0; /* absurd for an API answer */
    char *d = realloc(b->data, b->len + len + 1);
    if (!d)
        return 0;
    memcpy(d + b->len, p, len);
    b->len += len;
    d[b->len] = '\0';
    b->data = d;
    return len;
}

/* Attach a JSON request body to h; returns the header list to free. */
static struct curl_slist *set_json_body(CURL *h, json_object *body, const char **payload)
{
    struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
    if (body) {
        *payload = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, *payload);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(*payload));
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    return hdrs;
}

int client_call(lanectl_t *ctx, const char *method, const char *path, json_object *body,
                json_object **out, long *status_out)
{
    return client_call_full(ctx, method, path, body, out, status_out, NULL);
}

int client_call_full(lanectl_t *ctx, const char *method, const char *path, json_object *body,
                     json_object **out, long *status_out, json_object **err_out)
{
    CURL *h = client_easy(ctx, method, path);
    if (!h) {
        lanectl_err("out of memory");
        return -1;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    buf_t resp = {0};
    const char *payload = NULL;
    struct curl_slist *hdrs = set_json_body(h, body, &payload);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    if (status_out)
        *status_out = status;
    int ret = -1;
    if (rc != CURLE_OK) {
        client_report_transport(ctx, rc, errbuf);
    } else if (status < 200 || status > 299) {
        client_report_api_error(status, resp.data, resp.len);
        if (err_out && resp.len)
            *err_out = json_tokener_parse(resp.data);
    } else {
        json_object *o = NULL;
        if (resp.len) {
            o = json_tokener_parse(resp.data);
            if (!o) {
                lanectl_err("lanesd sent an unparsable answer");
                goto done;
            }
        }
        if (out)
            *out = o;
        else if (o)
            json_object_put(o);
        ret = 0;
    }
done:
    free(resp.data);
    return ret;
}

typedef struct {
    CURL *h;
    long status;
    buf_t err;          /* error body when status is not 2xx */
    ndjson_t nd;
    client_line_fn fn;
    void *ud;
    int stopped;        /* fn asked to stop, or a line was unparsable */
} stream_state_t;

static int stream_line(const char *line, size_t len, void *ud)
{
    stream_state_t *st = ud;
    json_tokener *tok = json_tokener_new_ex(32);
    json_object *o = tok ? json_tokener_parse_ex(tok, line, (int)len) : NULL;
    if (tok)
        json_tokener_free(tok);
    if (!o) {
        lanectl_err("lanesd sent an unparsable stream line");
        return st->stopped = -1;
    }
    int r = st->fn(o, st->ud);
    json_object_put(o);
    if (r)
        st->stopped = r;
    return r;
}

static size_t on_stream(char *p, size_t size, size_t n, void *ud)
{
    stream_state_t *st = ud;
    size_t len = size * n;
    if (!st->status)
        curl_easy_getinfo(st->h, CURLINFO_RESPONSE_CODE, &st->status);
    if (st->status < 200 || st->status > 299)
        return on_body(p, size, n, &st->err);
    return ndjson_feed(&st->nd, p, len, stream_line, st) == 0 ? len : 0;
}

int client_stream(lanectl_t *ctx, const char *method, const char *path, json_object *body,
                  client_line_fn fn, void *ud)
{
    CURL *h = client_easy(ctx, method, path);
    if (!h) {
        lanectl_err("out of memory");
        return -1;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    stream_state_t st = {.h = h, .fn = fn, .ud = ud};
    const char *payload = NULL;
    struct curl_slist *hdrs = set_json_body(h, body, &payload);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_stream);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &st);
    CURLcode rc = curl_easy_perform(h);
    if (!st.status)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st.status);
    int ret = -1;
    if (st.stopped) {
        ret = st.stopped > 0 ? 0 : -1; /* the callback decided */
    } else if (rc != CURLE_OK) {
        client_report_transport(ctx, rc, errbuf);
    } else if (st.status < 200 || st.status > 299) {
        client_report_api_error(st.status, st.err.data, st.err.len);
    } else if (ndjson_finish(&st.nd, stream_line, &st) == 0 || st.stopped > 0) {
        ret = 0;
    }
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    ndjson_free(&st.nd);
    free(st.err.data);
    return ret;
}

char *client_lane_path(const char *name, const char *suffix)
{
    char *esc = url_escape(name);
    if (!esc)
        return NULL;
    char *p = NULL;
    if (asprintf(&p, "/v1/lanes/%s%s%s", esc, suffix && suffix[0] && suffix[0] != '?' ? "/" : "", suffix ? suffix : "") < 0)
        p = NULL;
    free(esc);
    return p;
}
