/* lanes S3 client — requests over libcurl: signing, retries, parallelism.
 *
 * Every request runs through batch_run(): a curl_multi driving at most
 * max_parallel transfers, each a fresh easy handle attached to the client's
 * CURLSH so connections (and DNS, TLS sessions) are reused across requests,
 * batches and threads.  A request that fails in a retryable way waits
 * (exponential backoff, full jitter) and is re-signed and re-sent; the wait
 * happens inside the multi loop, so other requests keep running meanwhile.
 *
 * Invariants:
 *   - What is signed is exactly what is sent: the client sets Host itself,
 *     sends the canonical (encoded, sorted) query string as the URL's query,
 *     and suppresses curl's Accept/Expect headers.
 *   - A GET with an expected SHA-256 succeeds only with a body that hashes
 *     to it; a 2xx whose body is an S3 <Error> document is a failure.
 *   - Error messages pass through s3_scrub() before they leave the library.
 *
 * Threading: the share handle is protected by per-data-type mutexes; a
 * batch (multi handle, easy handles, transfer states) is owned by the thread
 * that called s3_batch().  Counters are atomics.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "s3.h"
#include "s3-internal.h"
#include "s3-sign.h"

#define S3_ERROR_BODY_MAX (64 * 1024)
#define S3_GET_MAX (256u * 1024 * 1024)   /* sanity cap for malloc'd GETs */
#define S3_EMPTY_SHA256 \
  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct s3_client {
  char *scheme;                 /* "http" or "https" */
  char *host;                   /* host[:port] from the endpoint */
  char *bucket;
  char *region;
  int path_style;
  int anonymous;
  s3_credentials_t cred;
  struct curl_slist *resolve;
  char *ca_file;
  unsigned max_parallel, max_attempts, backoff_base_ms, backoff_cap_ms;
  unsigned connect_timeout_ms, request_timeout_ms;
  s3_checksum_t checksum;
  CURLSH *share;
  pthread_mutex_t share_lock[CURL_LOCK_DATA_LAST];
  atomic_uint_fast64_t connections;
  atomic_uint_fast64_t attempts;
};

/* ---- small helpers ---- */

int s3_buf_append(s3_buf_t *b, const void *p, size_t n)
{
  if (b->oom)
    return -ENOMEM;
  if (b->len + n + 1 > b->cap) {
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->len + n + 1)
      nc *= 2;
    char *d = realloc(b->data, nc);
    if (!d) {
      b->oom = 1;
      return -ENOMEM;
    }
    b->data = d;
    b->cap = nc;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

int s3_buf_printf(s3_buf_t *b, const char *fmt, ...)
{
  char *s;
  va_list ap;
  va_start(ap, fmt);
  int n = vasprintf(&s, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->oom = 1;
    return -ENOMEM;
  }
  int r = s3_buf_append(b, s, (size_t)n);
  free(s);
  return r;
}

int s3_err(char **err, int errnum, const char *fmt, ...)
{
  if (err && !*err) {
    va_list ap;
    int saved = errno;
    errno = errnum;
    va_start(ap, fmt);
    if (vasprintf(err, fmt, ap) == -1)
      *err = NULL;
    va_end(ap);
    errno = saved;
  }
  return -errnum;
}

int64_t s3_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void base64(const uint8_t *in, size_t n, char *out)
{
  EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* ---- client ---- */

static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *ud)
{
  (void)h; (void)a;
  struct s3_client *c = ud;
  pthread_mutex_lock(&c->share_lock[d]);
}

static void share_unlock(CURL *h, curl_lock_data d, void *ud)
{
  (void)h;
  struct s3_client *c = ud;
  pthread_mutex_unlock(&c->share_lock[d]);
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
  curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int valid_bucket(const char *b)
{
  size_t n = strlen(b);
  if (n < 3 || n > 63)
    return 0;
  for (const char *p = b; *p; p++)
    if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) ||
          *p == '-' || *p == '.'))
      return 0;
  return 1;
}

int s3_client_new(const s3_config_t *cfg, s3_client_t **out, char **err)
{
  int r;
  if (!cfg->endpoint || !cfg->bucket)
    return s3_err(err, EINVAL, "s3: endpoint and bucket are required");
  const char *ep = cfg->endpoint, *rest;
  const char *scheme;
  if (strncmp(ep, "http://", 7) == 0) {
    scheme = "http";
    rest = ep + 7;
  } else if (strncmp(ep, "https://", 8) == 0) {
    scheme = "https";
    rest = ep + 8;
  } else {
    return s3_err(err, EINVAL, "s3: endpoint %s: must start with http:// or https://", ep);
  }
  size_t hl = strcspn(rest, "/?#");
  if (hl == 0 || (rest[hl] && strcmp(rest + hl, "/") != 0) ||
      memchr(rest, '@', hl))
    return s3_err(err, EINVAL, "s3: endpoint %s: want scheme://host[:port] "
                  "with no path or user info", ep);
  if (!valid_bucket(cfg->bucket))
    return s3_err(err, EINVAL, "s3: bucket name '%s' is not valid "
                  "(3-63 of a-z 0-9 . -)", cfg->bucket);
  if (!cfg->path_style && strchr(cfg->bucket, '.') && strcmp(scheme, "https") == 0)
    return s3_err(err, EINVAL, "s3: bucket '%s' contains '.': use path-style "
                  "addressing with https", cfg->bucket);

  struct s3_client *c = calloc(1, sizeof *c);
  if (!c)
    return s3_err(err, ENOMEM, "out of memory");
  for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
    pthread_mutex_init(&c->share_lock[i], NULL);
  c->scheme = strdup(scheme);
  c->host = strndup(rest, hl);
  c->bucket = strdup(cfg->bucket);
  c->region = strdup(cfg->region && *cfg->region ? cfg->region : "us-east-1");
  c->ca_file = cfg->ca_file ? strdup(cfg->ca_file) : NULL;
  if (!c->scheme || !c->host || !c->bucket || !c->region ||
      (cfg->ca_file && !c->ca_file)) {
    r = s3_err(err, ENOMEM, "out of memory");
    goto fail;
  }
  for (char *p = c->host; *p; p++)
    *p = (char)tolower((unsigned char)*p);
  c->path_style = cfg->path_style;
  c->max_parallel = cfg->max_parallel ? cfg->max_parallel : 8;
  c->max_attempts = cfg->max_attempts ? cfg->max_attempts : 6;
  c->backoff_base_ms = cfg->backoff_base_ms ? cfg->backoff_base_ms : 100;
  c->backoff_cap_ms = cfg->backoff_cap_ms ? cfg->backoff_cap_ms : 5000;
  c->connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 5000;
  c->request_timeout_ms = cfg->request_timeout_ms ? cfg->request_timeout_ms : 30000;
  c->checksum = cfg->checksum;
  if (cfg->resolve && *cfg->resolve &&
      !(c->resolve = curl_slist_append(NULL, cfg->resolve))) {
    r = s3_err(err, ENOMEM, "out of memory");
    goto fail;
  }
  if (cfg->credentials_file) {
    if ((r = s3_credentials_load(cfg->credentials_file, cfg->profile, &c->cred, err)) < 0)
      goto fail;
  } else {
    c->anonymous = 1;
  }

  pthread_once(&curl_once, curl_init_once);
  c->share = curl_share_init();
  if (!c->share) {
    r = s3_err(err, ENOMEM, "s3: curl_share_init failed");
    goto fail;
  }
  curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
  curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
  curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
  curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
  curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  *out = c;
  return 0;
fail:
  s3_client_free(c);
  return r;
}

void s3_client_free(s3_client_t *c)
{
  if (!c)
    return;
  if (c->share)
    curl_share_cleanup(c->share);
  for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
    pthread_mutex_destroy(&c->share_lock[i]);
  s3_credentials_clear(&c->cred);
  curl_slist_free_all(c->resolve);
  free(c->scheme);
  free(c->host);
  free(c->bucket);
  free(c->region);
  free(c->ca_file);
  free(c);
}

uint64_t s3_client_connections(s3_client_t *c)
{
  return atomic_load(&c->connections);
}

uint64_t s3_client_attempts(s3_client_t *c)
{
  return atomic_load(&c->attempts);
}

/* ---- one transfer ---- */

enum xfer_state { XF_WAITING, XF_ACTIVE, XF_DONE };

enum fail_kind {
  FK_NONE = 0,
  FK_CURL,        /* transport error (curl_code, errbuf) */
  FK_HTTP,        /* non-2xx status (status, s3 error fields) */
  FK_BODY_ERROR,  /* 2xx with an <Error> body */
  FK_CHECKSUM,    /* GET body hash mismatch */
  FK_SHORT,       /* GET body shorter than the range asked for */
};

struct xfer {
  s3_request_t *req;
  const char *method;
  const char *query;              /* canonical query or "" */
  enum xfer_state state;
  int64_t due;                    /* monotonic ms: earliest next attempt */
  CURL *easy;
  struct curl_slist *hdrs;
  char errbuf[CURL_ERROR_SIZE];
  char payload_hash[S3_SHA256_HEX_LEN + 1];
  char md5_b64[32];
  char sha_b64[48];
  size_t upload_off;
  /* response of the current attempt */
  long status;
  s3_buf_t body;                  /* error bodies / malloc'd GETs */
  size_t buf_len;                 /* bytes written into req->buf */
  int overflow;
  char etag[S3_ETAG_MAX + 1];
  int64_t fence;
  uint64_t content_length;
  uint64_t total_size;            /* from Content-Range */
  int have_total;
  char request_id[80];
  /* failure of the last attempt */
  enum fail_kind fail;
  CURLcode curl_code;
  s3_xml_error_t s3e;
};

static void xfer_reset_response(struct xfer *x)
{
  x->status = 0;
  x->body.len = 0;
  x->buf_len = 0;
  x->overflow = 0;
  x->etag[0] = '\0';
  x->fence = -1;
  x->content_length = 0;
  x->total_size = 0;
  x->have_total = 0;
  x->request_id[0] = '\0';
  x->fail = FK_NONE;
  x->curl_code = CURLE_OK;
  x->errbuf[0] = '\0';
  x->upload_off = 0;
  s3_xml_error_clear(&x->s3e);
}

static size_t on_write(char *p, size_t sz, size_t n, void *ud)
{
  struct xfer *x = ud;
  size_t len = sz * n;
  long st = 0;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &st);
  s3_request_t *r = x->req;
  if (st >= 200 && st < 300 && r->op == S3_OP_GET && r->buf) {
    if (x->buf_len + len > r->cap) {
      x->overflow = 1;
      return 0;
    }
    memcpy((char *)r->buf + x->buf_len, p, len);
    x->buf_len += len;
    return len;
  }
  size_t limit = (st >= 200 && st < 300 && r->op == S3_OP_GET) ? S3_GET_MAX
                                                                : S3_ERROR_BODY_MAX;
  if (x->body.len + len > limit) {
    if (limit == S3_GET_MAX) {
      x->overflow = 1;
      return 0;
    }
    return len;           /* error bodies: keep the head, drop the rest */
  }
  if (s3_buf_append(&x->body, p, len) < 0)
    return 0;
  return len;
}

/* Copy a header value (trimmed) into dst. */
static void hdr_value(const char *v, size_t n, char *dst, size_t cap)
{
  while (n && (*v == ' ' || *v == '\t')) {
    v++;
    n--;
  }
  while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
    n--;
  if (n >= cap)
    n = cap - 1;
  memcpy(dst, v, n);
  dst[n] = '\0';
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
  struct xfer *x = ud;
  size_t len = sz * n;
  char v[S3_ETAG_MAX + 1];
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    /* a new response (e.g. after 100 Continue): forget the last one's */
    x->etag[0] = '\0';
    x->fence = -1;
    x->have_total = 0;
    x->request_id[0] = '\0';
    return len;
  }
  const char *colon = memchr(p, ':', len);
  if (!colon)
    return len;
  size_t nl = (size_t)(colon - p);
  const char *val = colon + 1;
  size_t vl = len - nl - 1;
#define IS(name) (nl == sizeof(name) - 1 && strncasecmp(p, name, nl) == 0)
  if (IS("etag")) {
    hdr_value(val, vl, x->etag, sizeof x->etag);
  } else if (IS("content-length")) {
    hdr_value(val, vl, v, sizeof v);
    x->content_length = strtoull(v, NULL, 10);
  } else if (IS("content-range")) {
    hdr_value(val, vl, v, sizeof v);
    const char *slash = strrchr(v, '/');
    if (slash && isdigit((unsigned char)slash[1])) {
      x->total_size = strtoull(slash + 1, NULL, 10);
      x->have_total = 1;
    }
  } else if (IS("x-amz-meta-lanes-fence")) {
    hdr_value(val, vl, v, sizeof v);
    char *e;
    long long f = strtoll(v, &e, 10);
    x->fence = (*v && !*e && f >= 0) ? f : -1;
  } else if (IS("x-amz-request-id")) {
    hdr_value(val, vl, x->request_id, sizeof x->request_id);
  }
#undef IS
  return len;
}

static size_t on_read(char *p, size_t sz, size_t n, void *ud)
{
  struct xfer *x = ud;
  size_t want = sz * n, left = x->req->body_len - x->upload_off;
  if (want > left)
    want = left;
  if (want)
    memcpy(p, (const char *)x->req->body + x->upload_off, want);
  x->upload_off += want;
  return want;
}

static int on_seek(void *ud, curl_off_t off, int origin)
{
  struct xfer *x = ud;
  if (origin != SEEK_SET || off < 0 || (size_t)off > x->req->body_len)
    return CURL_SEEKFUNC_FAIL;
  x->upload_off = (size_t)off;
  return CURL_SEEKFUNC_OK;
}

/* Once per request: hashes of the PUT body. */
static int xfer_prepare(s3_client_t *c, struct xfer *x)
{
  s3_request_t *r = x->req;
  x->fence = -1;
  if (r->op == S3_OP_PUT) {
    uint8_t md[32];
    unsigned int mdlen = 0;
    const void *body = r->body ? r->body : "";
    SHA256(body, r->body_len, md);
    static const char hexd[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
      x->payload_hash[2 * i] = hexd[md[i] >> 4];
      x->payload_hash[2 * i + 1] = hexd[md[i] & 15];
    }
    x->payload_hash[64] = '\0';
    base64(md, 32, x->sha_b64);
    if (c->checksum != S3_CHECKSUM_SHA256) {
      uint8_t m5[16];
      if (!EVP_Digest(body, r->body_len, m5, &mdlen, EVP_md5(), NULL))
        return -EIO;
      base64(m5, 16, x->md5_b64);
    }
  } else {
    memcpy(x->payload_hash, S3_EMPTY_SHA256, sizeof x->payload_hash);
  }
  return 0;
}

static int add_hdr(struct curl_slist **l, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));
static int add_hdr(struct curl_slist **l, const char *fmt, ...)
{
  char *s;
  va_list ap;
  va_start(ap, fmt);
  int n = vasprintf(&s, fmt, ap);
  va_end(ap);
  if (n < 0)
    return -ENOMEM;
  struct curl_slist *nl = curl_slist_append(*l, s);
  explicit_bzero(s, (size_t)n);
  free(s);
  if (!nl)
    return -ENOMEM;
  *l = nl;
  return 0;
}

/* Build URL, headers and signature for one attempt and add it to m. */
static int xfer_start(s3_client_t *c, CURLM *m, struct xfer *x)
{
  s3_request_t *r = x->req;
  char *ekey = NULL, *url = NULL, *path = NULL, *host = NULL, *auth = NULL;
  char amz_date[S3_AMZ_DATE_LEN + 1], range[64] = "", fence[32] = "";
  s3_header_t sh[12];
  size_t nsh = 0;
  int rc = -ENOMEM;

  xfer_reset_response(x);
  if (!(ekey = s3_uri_encode(r->key ? r->key : "", 1)))
    goto out;
  if (c->path_style) {
    host = strdup(c->host);
    rc = asprintf(&path, "/%s%s%s", c->bucket, r->key ? "/" : "", ekey);
  } else {
    rc = asprintf(&host, "%s.%s", c->bucket, c->host);
    if (rc >= 0)
      rc = asprintf(&path, "/%s", ekey);
  }
  if (rc < 0 || !host || !path) {
    rc = -ENOMEM;
    goto out;
  }
  if (asprintf(&url, "%s://%s%s%s%s", c->scheme, host, path,
               *x->query ? "?" : "", x->query) < 0) {
    url = NULL;
    rc = -ENOMEM;
    goto out;
  }
  s3_amz_date(time(NULL), amz_date);

  sh[nsh++] = (s3_header_t){"host", host};
  sh[nsh++] = (s3_header_t){"x-amz-date", amz_date};
  sh[nsh++] = (s3_header_t){"x-amz-content-sha256", x->payload_hash};
  if (!c->anonymous && c->cred.session_token)
    sh[nsh++] = (s3_header_t){"x-amz-security-token", c->cred.session_token};
  if (r->op == S3_OP_PUT) {
    if (c->checksum != S3_CHECKSUM_SHA256)
      sh[nsh++] = (s3_header_t){"content-md5", x->md5_b64};
    if (c->checksum != S3_CHECKSUM_MD5)
      sh[nsh++] = (s3_header_t){"x-amz-checksum-sha256", x->sha_b64};
    if (r->if_match)
      sh[nsh++] = (s3_header_t){"if-match", r->if_match};
    if (r->if_none_match)
      sh[nsh++] = (s3_header_t){"if-none-match", "*"};
    if (r->fence >= 0) {
      snprintf(fence, sizeof fence, "%" PRId64, r->fence);
      sh[nsh++] = (s3_header_t){"x-amz-meta-lanes-fence", fence};
    }
  }
  if (r->op == S3_OP_GET && r->range_len) {
    snprintf(range, sizeof range, "bytes=%" PRIu64 "-%" PRIu64, r->range_off,
             r->range_off + r->range_len - 1);
    sh[nsh++] = (s3_header_t){"range", range};
  }
  if (!c->anonymous) {
    s3_sign_input_t in = {
      .method = x->method, .canonical_uri = path, .canonical_query = x->query,
      .headers = sh, .nheaders = nsh, .payload_hash = x->payload_hash,
      .amz_date = amz_date, .region = c->region, .service = "s3",
    };
    if ((rc = s3_sign(&in, &c->cred, NULL, NULL, &auth)) < 0)
      goto out;
  }

  curl_slist_free_all(x->hdrs);
  x->hdrs = NULL;
  for (size_t i = 0; i < nsh; i++)
    if (add_hdr(&x->hdrs, "%s: %s", sh[i].name, sh[i].value) < 0)
      goto out;
  if ((auth && add_hdr(&x->hdrs, "Authorization: %s", auth) < 0) ||
      add_hdr(&x->hdrs, "Accept:") < 0 || add_hdr(&x->hdrs, "Expect:") < 0) {
    rc = -ENOMEM;
    goto out;
  }

  CURL *e = curl_easy_init();
  if (!e) {
    rc = -ENOMEM;
    goto out;
  }
  x->easy = e;
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_SHARE, c->share);
  curl_easy_setopt(e, CURLOPT_PRIVATE, x);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)c->request_timeout_ms);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
  if (c->resolve)
    curl_easy_setopt(e, CURLOPT_RESOLVE, c->resolve);
  if (c->ca_file)
    curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
  switch (r->op) {
  case S3_OP_PUT:
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(e, CURLOPT_READDATA, x);
    curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
    curl_easy_setopt(e, CURLOPT_SEEKDATA, x);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
    break;
  case S3_OP_HEAD:
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    break;
  case S3_OP_DELETE:
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE");
    break;
  case S3_OP_GET:
    break;
  }
  if (curl_multi_add_handle(m, e) != CURLM_OK) {
    curl_easy_cleanup(e);
    x->easy = NULL;
    rc = -ENOMEM;
    goto out;
  }
  x->state = XF_ACTIVE;
  r->attempts++;
  atomic_fetch_add(&c->attempts, 1);
  rc = 0;
out:
  if (auth) {
    explicit_bzero(auth, strlen(auth));
    free(auth);
  }
  free(ekey);
  free(url);
  free(path);
  free(host);
  return rc;
}

static int retryable_code(const char *code)
{
  static const char *const codes[] = {
    "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout",
    "OperationAborted", "Throttling",
    "ThrottlingException", "RequestLimitExceeded", NULL,
  };
  for (int i = 0; code && codes[i]; i++)
    if (strcmp(code, codes[i]) == 0)
      return 1;
  return 0;
}

static int retryable_curl(CURLcode cc)
{
  switch (cc) {
  case CURLE_COULDNT_CONNECT:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_WEIRD_SERVER_REPLY:
    return 1;
  default:
    return 0;
  }
}

/* Classify the finished attempt.  Returns 1 if it should be retried, 0 if
 * it is final (x->req->result set; 0 = success). */
static int xfer_finish(s3_client_t *c, struct xfer *x, CURLcode cc)
{
  s3_request_t *r = x->req;
  long conns = 0;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
  curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &conns);
  atomic_fetch_add(&c->connections, (uint64_t)conns);
  r->http_status = x->status;

  if (cc != CURLE_OK) {
    if (x->overflow) {
      r->result = -EFBIG;
      x->fail = FK_CURL;
      x->curl_code = cc;
      return 0;
    }
    x->fail = FK_CURL;
    x->curl_code = cc;
    if (retryable_curl(cc))
      return 1;
    r->result = cc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EIO;
    return 0;
  }

  long st = x->status;
  if (st >= 200 && st < 300) {
    if (r->op == S3_OP_GET) {
      const void *data = r->buf ? r->buf : x->body.data;
      size_t len = r->buf ? x->buf_len : x->body.len;
      if (!data)
        data = "";
      if (r->expect_sha256) {
        uint8_t md[32];
        SHA256(data, len, md);
        if (memcmp(md, r->expect_sha256, 32) != 0) {
          x->fail = FK_CHECKSUM;
          return 1;
        }
      } else if (r->range_len && len != r->range_len &&
                 (!x->have_total || r->range_off + len < x->total_size)) {
        x->fail = FK_SHORT;
        return 1;
      } else if (s3_xml_parse_error(data, len, &x->s3e) == 1) {
        x->fail = FK_BODY_ERROR;
        return retryable_code(x->s3e.code);
      }
    } else if (x->body.len && s3_xml_parse_error(x->body.data, x->body.len, &x->s3e) == 1) {
      x->fail = FK_BODY_ERROR;
      if (retryable_code(x->s3e.code))
        return 1;
      r->result = -EIO;
      return 0;
    }
    r->result = 0;
    return 0;
  }

  x->fail = FK_HTTP;
  if (x->body.len)
    s3_xml_parse_error(x->body.data, x->body.len, &x->s3e);
  if (st >= 500 || st == 429 || (x->s3e.code && retryable_code(x->s3e.code)))
    return 1;
  switch (st) {
  case 404:
    r->result = -ENOENT;
    break;
  case 412:
    r->result = r->if_none_match ? -EEXIST : -ESTALE;
    break;
  case 409:
    r->result = -EBUSY;
    break;
  case 401:
  case 403:
    r->result = -EACCES;
    break;
  case 416:
    r->result = -ERANGE;
    break;
  default:
    r->result = st >= 400 && st < 500 ? -EINVAL : -EIO;
  }
  return 0;
}

static const char *op_name(const struct xfer *x)
{
  return x->method;
}

/* The final message for a failed request (scrubbed). */
static void xfer_message(s3_client_t *c, struct xfer *x)
{
  s3_request_t *r = x->req;
  s3_buf_t b = {0};
  if (!r->key && *x->query)
    s3_buf_printf(&b, "LIST s3://%s/?%s: ", c->bucket, x->query);
  else
    s3_buf_printf(&b, "%s s3://%s/%s: ", op_name(x), c->bucket, r->key ? r->key : "");
  switch (x->fail) {
  case FK_CURL:
    if (x->overflow)
      s3_buf_printf(&b, "object larger than the %zu-byte buffer",
                    r->buf ? r->cap : (size_t)S3_GET_MAX);
    else
      s3_buf_printf(&b, "%s (%s)", x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->curl_code),
                    curl_easy_strerror(x->curl_code));
    break;
  case FK_HTTP:
  case FK_BODY_ERROR:
    s3_buf_printf(&b, "HTTP %ld%s", x->status,
                  x->fail == FK_BODY_ERROR ? " with an error document in the body" : "");
    if (x->s3e.code)
      s3_buf_printf(&b, " %s", x->s3e.code);
    if (x->s3e.message)
      s3_buf_printf(&b, ": %s", x->s3e.message);
    if (x->fail == FK_HTTP && r->result == -ESTALE)
      s3_buf_printf(&b, " (If-Match %s)", r->if_match);
    if (x->fail == FK_HTTP && r->result == -EEXIST)
      s3_buf_printf(&b, " (If-None-Match: * and the object exists)");
    if (x->s3e.request_id || x->request_id[0])
      s3_buf_printf(&b, " [request id %s]", x->s3e.request_id ? x->s3e.request_id : x->request_id);
    break;
  case FK_CHECKSUM:
    s3_buf_printf(&b, "body of %zu bytes does not match the expected SHA-256",
                  r->buf ? x->buf_len : x->body.len);
    break;
  case FK_SHORT:
    s3_buf_printf(&b, "short body: %zu of %" PRIu64 " bytes",
                  r->buf ? x->buf_len : x->body.len, r->range_len);
    break;
  case FK_NONE:
    s3_buf_printf(&b, "failed");
    break;
  }
  s3_buf_printf(&b, " (%u attempt%s)", r->attempts, r->attempts == 1 ? "" : "s");
  if (!b.oom) {
    s3_scrub(&c->cred, b.data);
    r->error = b.data;
  } else {
    free(b.data);
    r->error = strdup("out of memory");
  }
}

static uint64_t rng_next(uint64_t *s)
{
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

/* Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]. */
static int64_t backoff_ms(s3_client_t *c, unsigned attempt, uint64_t *rng)
{
  uint64_t ceil = c->backoff_base_ms;
  for (unsigned i = 1; i < attempt && ceil < c->backoff_cap_ms; i++)
    ceil *= 2;
  if (ceil > c->backoff_cap_ms)
    ceil = c->backoff_cap_ms;
  return (int64_t)(rng_next(rng) % (ceil + 1));
}

static void xfer_release(struct xfer *x)
{
  curl_slist_free_all(x->hdrs);
  x->hdrs = NULL;
  free(x->body.data);
  x->body = (s3_buf_t){0};
  s3_xml_error_clear(&x->s3e);
}

/* Hand the GET body and metadata to the request (on success). */
static void xfer_deliver(struct xfer *x)
{
  s3_request_t *r = x->req;
  snprintf(r->info.etag, sizeof r->info.etag, "%s", x->etag);
  r->info.fence = x->fence;
  r->info.size = x->have_total ? x->total_size : x->content_length;
  if (r->op == S3_OP_GET) {
    if (r->buf) {
      r->len = x->buf_len;
    } else {
      r->len = x->body.len;
      r->data = x->body.data ? x->body.data : malloc(1);
      x->body = (s3_buf_t){0};
      if (!r->data) {
        r->result = -ENOMEM;
        r->error = strdup("out of memory");
      }
    }
    if (!x->have_total)
      r->info.size = r->len;
  }
}

static int batch_run(s3_client_t *c, s3_request_t *reqs, const char *const *methods,
                     const char *const *queries, size_t n, char **err)
{
  static const char *const op_methods[] = {"GET", "PUT", "HEAD", "DELETE"};
  struct xfer *xs = calloc(n ? n : 1, sizeof *xs);
  CURLM *m = curl_multi_init();
  uint64_t rng = 0;
  size_t done = 0, active = 0;
  if (!xs || !m) {
    free(xs);
    if (m)
      curl_multi_cleanup(m);
    return s3_err(err, ENOMEM, "out of memory");
  }
  if (getrandom(&rng, sizeof rng, 0) != sizeof rng || rng == 0)
    rng = (uint64_t)mono_ms() * 0x9E3779B97F4A7C15ULL | 1;

  for (size_t i = 0; i < n; i++) {
    struct xfer *x = &xs[i];
    s3_request_t *r = &reqs[i];
    x->req = r;
    r->result = 0;
    r->error = NULL;
    r->data = NULL;
    r->len = 0;
    r->attempts = 0;
    r->http_status = 0;
    r->info = (s3_object_info_t){.fence = -1};
    x->method = methods && methods[i] ? methods[i] : op_methods[r->op];
    x->query = queries && queries[i] ? queries[i] : "";
    x->state = XF_WAITING;
    if (xfer_prepare(c, x) < 0) {
      r->result = -EIO;
      r->error = strdup("cannot hash the request body");
      x->state = XF_DONE;
      done++;
    }
  }

  while (done < n) {
    int64_t now = mono_ms(), next_due = INT64_MAX;
    for (size_t i = 0; i < n && active < c->max_parallel; i++) {
      struct xfer *x = &xs[i];
      if (x->state != XF_WAITING || x->due > now)
        continue;
      if (xfer_start(c, m, x) < 0) {
        x->req->result = -ENOMEM;
        x->req->error = strdup("out of memory");
        x->state = XF_DONE;
        done++;
        continue;
      }
      active++;
    }
    int running = 0;
    curl_multi_perform(m, &running);
    CURLMsg *msg;
    int q;
    while ((msg = curl_multi_info_read(m, &q))) {
      if (msg->msg != CURLMSG_DONE)
        continue;
      struct xfer *x = NULL;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
      CURLcode cc = msg->data.result;
      curl_multi_remove_handle(m, msg->easy_handle);
      active--;
      int retry = xfer_finish(c, x, cc);
      if (retry && x->req->attempts < c->max_attempts) {
        x->state = XF_WAITING;
        x->due = mono_ms() + backoff_ms(c, x->req->attempts, &rng);
      } else {
        if (retry)   /* retryable but out of attempts */
          x->req->result = x->fail == FK_CURL && x->curl_code == CURLE_OPERATION_TIMEDOUT
                           ? -ETIMEDOUT : -EIO;
        if (x->req->result == 0)
          xfer_deliver(x);
        if (x->req->result < 0 && !x->req->error)
          xfer_message(c, x);
        x->state = XF_DONE;
        done++;
      }
      curl_easy_cleanup(x->easy);
      x->easy = NULL;
    }
    if (done == n)
      break;
    now = mono_ms();
    for (size_t i = 0; i < n; i++)
      if (xs[i].state == XF_WAITING && xs[i].due < next_due)
        next_due = xs[i].due;
    int timeout = 1000;
    if (next_due != INT64_MAX && active < c->max_parallel)
      timeout = next_due <= now ? 0 : (int)(next_due - now < 1000 ? next_due - now : 1000);
    if (timeout > 0 || active > 0)
      curl_multi_poll(m, NULL, 0, timeout, NULL);
  }

  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    xfer_release(&xs[i]);
    if (rc == 0 && reqs[i].result < 0) {
      rc = reqs[i].result;
      if (err && !*err && reqs[i].error)
        *err = strdup(reqs[i].error);
    }
  }
  curl_multi_cleanup(m);
  free(xs);
  return rc;
}

int s3_batch(s3_client_t *c, s3_request_t *reqs, size_t n, char **err)
{
  for (size_t i = 0; i < n; i++)
    if (!reqs[i].key || !*reqs[i].key || strlen(reqs[i].key) > S3_KEY_MAX)
      return s3_err(err, EINVAL, "s3: request %zu: empty or overlong key", i);
  return batch_run(c, reqs, NULL, NULL, n, err);
}

void s3_request_clear(s3_request_t *r)
{
  if (!r)
    return;
  free(r->error);
  free(r->data);
  r->error = NULL;
  r->data = NULL;
}

/* ---- single-request conveniences ---- */

static int run_one(s3_client_t *c, s3_request_t *r, s3_object_info_t *info,
                   char **err)
{
  int rc = s3_batch(c, r, 1, err);
  if (rc == 0 && info)
    *info = r->info;
  return rc;
}

int s3_put_cond(s3_client_t *c, const char *key, const void *body, size_t len,
                const char *if_match, int64_t fence, s3_object_info_t *info,
                char **err)
{
  s3_request_t r = {.op = S3_OP_PUT, .key = key, .body = body, .body_len = len,
                    .if_match = if_match, .if_none_match = !if_match,
                    .fence = fence};
  int rc = run_one(c, &r, info, err);
  s3_request_clear(&r);
  return rc;
}

int s3_put(s3_client_t *c, const char *key, const void *body, size_t len,
           s3_object_info_t *info, char **err)
{
  s3_request_t r = {.op = S3_OP_PUT, .key = key, .body = body, .body_len = len,
                    .fence = -1};
  int rc = run_one(c, &r, info, err);
  s3_request_clear(&r);
  return rc;
}

int s3_get(s3_client_t *c, const char *key, uint64_t range_off,
           uint64_t range_len, const uint8_t *expect_sha256, void **data,
           size_t *len, s3_object_info_t *info, char **err)
{
  s3_request_t r = {.op = S3_OP_GET, .key = key, .range_off = range_off,
                    .range_len = range_len, .expect_sha256 = expect_sha256};
  if (range_off && !range_len)
    return s3_err(err, EINVAL, "s3: GET %s: offset without length", key);
  int rc = run_one(c, &r, info, err);
  if (rc == 0) {
    *data = r.data;
    *len = r.len;
    r.data = NULL;
  }
  s3_request_clear(&r);
  return rc;
}

int s3_head(s3_client_t *c, const char *key, s3_object_info_t *info, char **err)
{
  s3_request_t r = {.op = S3_OP_HEAD, .key = key};
  int rc = run_one(c, &r, info, err);
  s3_request_clear(&r);
  return rc;
}

int s3_delete(s3_client_t *c, const char *key, char **err)
{
  s3_request_t r = {.op = S3_OP_DELETE, .key = key};
  char *e = NULL;
  int rc = run_one(c, &r, NULL, &e);
  if (rc == -ENOENT)
    rc = 0;       /* S3 semantics: deleting nothing is fine */
  if (rc < 0 && err && !*err) {
    *err = e;
    e = NULL;
  }
  free(e);
  s3_request_clear(&r);
  return rc;
}

struct list_ctx {
  s3_list_cb cb;
  void *ud;
  int count;
  char *last_key;
};

static int list_entry(const char *key, uint64_t size, const char *etag,
                      int64_t mtime_ms, void *ud)
{
  struct list_ctx *lc = ud;
  s3_list_entry_t e = {.key = key, .size = size, .etag = etag,
                       .mtime_ms = mtime_ms};
  lc->count++;
  free(lc->last_key);
  lc->last_key = strdup(key);
  return lc->cb ? lc->cb(&e, lc->ud) : 0;
}

int s3_list(s3_client_t *c, const char *prefix, unsigned page_size,
            s3_list_cb cb, void *ud, char **err)
{
  struct list_ctx lc = {.cb = cb, .ud = ud};
  char *token = NULL;
  int rc = 0;
  for (;;) {
    s3_buf_t q = {0};
    char *et = token ? s3_uri_encode(token, 0) : NULL;
    char *ep = prefix && *prefix ? s3_uri_encode(prefix, 0) : NULL;
    /* sorted by parameter name, as SigV4 canonical queries must be */
    if (et)
      s3_buf_printf(&q, "continuation-token=%s&", et);
    s3_buf_printf(&q, "list-type=2");
    if (page_size)
      s3_buf_printf(&q, "&max-keys=%u", page_size);
    if (ep)
      s3_buf_printf(&q, "&prefix=%s", ep);
    free(et);
    free(ep);
    if (q.oom) {
      free(q.data);
      rc = s3_err(err, ENOMEM, "out of memory");
      break;
    }
    s3_xml_list_t page;
    int pr = -EBADMSG;
    /* An unparsable page (e.g. a body cut short with a matching length) is
     * fetched again; entries are only delivered from a page that parses. */
    for (unsigned tries = 0; pr == -EBADMSG && tries < c->max_attempts; tries++) {
      s3_request_t r = {.op = S3_OP_GET, .key = NULL};
      const char *qs[1] = {q.data};
      rc = batch_run(c, &r, NULL, qs, 1, err);
      if (rc < 0) {
        s3_request_clear(&r);
        break;
      }
      pr = s3_xml_parse_list(r.data, r.len, NULL, NULL, &page);
      if (pr == 0) {
        free(page.next_token);
        pr = s3_xml_parse_list(r.data, r.len, list_entry, &lc, &page);
      }
      s3_request_clear(&r);
    }
    free(q.data);
    if (rc < 0)
      break;
    if (pr == -ECANCELED) {
      rc = 0;
      break;
    }
    if (pr < 0) {
      rc = s3_err(err, EIO, "LIST s3://%s/%s: unparsable ListBucketResult",
                  c->bucket, prefix ? prefix : "");
      break;
    }
    free(token);
    token = page.next_token;
    if (!page.truncated)
      break;
    if (!token) {
      rc = s3_err(err, EIO, "LIST s3://%s/%s: truncated page without a "
                  "NextContinuationToken", c->bucket, prefix ? prefix : "");
      break;
    }
  }
  free(token);
  free(lc.last_key);
  return rc < 0 ? rc : lc.count;
}

int s3_bucket_create(s3_client_t *c, char **err)
{
  char *body = NULL;
  if (strcmp(c->region, "us-east-1") != 0 &&
      asprintf(&body, "<CreateBucketConfiguration><LocationConstraint>%s"
               "</LocationConstraint></CreateBucketConfiguration>", c->region) < 0)
    return s3_err(err, ENOMEM, "out of memory");
  s3_request_t r = {.op = S3_OP_PUT, .key = NULL, .body = body,
                    .body_len = body ? strlen(body) : 0, .fence = -1};
  char *e = NULL;
  int rc = batch_run(c, &r, NULL, NULL, 1, &e);
  if (rc == -EBUSY && e && strstr(e, "BucketAlreadyOwnedByYou"))
    rc = 0;
  if (rc < 0 && err && !*err) {
    *err = e;
    e = NULL;
  }
  free(e);
  free(body);
  s3_request_clear(&r);
  return rc;
}

/* One conditional PUT of the probe body; returns its result and status. */
static int probe_put(s3_client_t *c, const char *key, const char *if_match,
                     long *status, char **err)
{
  static const char body[] = "lanes conditional-write probe\n";
  s3_request_t r = {.op = S3_OP_PUT, .key = key, .body = body,
                    .body_len = sizeof body - 1, .if_match = if_match,
                    .if_none_match = !if_match, .fence = -1};
  int rc = s3_batch(c, &r, 1, err);
  *status = r.http_status;
  s3_request_clear(&r);
  return rc;
}

int s3_probe_conditional(s3_client_t *c, const char *probe_key, int *enforced,
                         char **err)
{
  char *e = NULL;
  long st = 0;
  int rc, result = 1;
  if ((rc = s3_delete(c, probe_key, err)) < 0)
    return rc;
  rc = probe_put(c, probe_key, NULL, &st, &e);
  if (rc < 0 && (st == 501 || st == 400)) {
    /* NotImplemented / InvalidArgument: the header itself is refused */
    result = 0;
  } else if (rc < 0) {
    if (err && !*err) {
      *err = e;
      e = NULL;
    }
    free(e);
    return rc;
  } else {
    /* A second create must be refused with 412 ... */
    if (probe_put(c, probe_key, NULL, &st, NULL) != -EEXIST)
      result = 0;
    /* ... and so must a mismatching If-Match. */
    if (result && probe_put(c, probe_key, "\"00000000000000000000000000000000\"",
                            &st, NULL) != -ESTALE)
      result = 0;
  }
  free(e);
  if ((rc = s3_delete(c, probe_key, err)) < 0)
    return rc;
  *enforced = result;
  return 0;
}
