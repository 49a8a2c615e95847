/* Unit tests for blockstore/s3/s3-client.c against recorded S3 responses
 * (tests/unit/data/s3/NAME.http, written by hand from the S3 API reference)
 * served by the loopback replay server (test_s3_replay.c, a stand-in for
 * S3).  Each test checks what the client sent (request line, signed
 * headers, conditional headers, body) and what it made of the answer
 * (result, errno, message, attempts, connections). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/sha.h>

#include "s3.h"
#include "s3-sign.h"
#include "test_s3_replay.h"

#define ACCESS "AKIDUNITTEST0001"
#define SECRET "unit/secret+KEY0001"

struct fx {
  replay_t *rp;
  char cred[64];
  s3_client_t *c;
};

static int setup(void **state)
{
  struct fx *f = calloc(1, sizeof *f);
  f->rp = replay_start();
  snprintf(f->cred, sizeof f->cred, "/tmp/test_s3_client.XXXXXX");
  int fd = mkstemp(f->cred);
  const char *txt = "[default]\naws_access_key_id = " ACCESS
                    "\naws_secret_access_key = " SECRET "\n";
  assert_int_equal(write(fd, txt, strlen(txt)), (ssize_t)strlen(txt));
  close(fd);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fx *f = *state;
  s3_client_free(f->c);
  replay_stop(f->rp);
  unlink(f->cred);
  free(f);
  return 0;
}

/* A path-style client for the replay server; cfg fields may be tweaked. */
static s3_client_t *client(struct fx *f, s3_config_t *over)
{
  char ep[64];
  snprintf(ep, sizeof ep, "http://127.0.0.1:%d", replay_port(f->rp));
  s3_config_t cfg = {.endpoint = ep, .bucket = "bkt", .region = "eu-central-1",
                     .path_style = 1, .credentials_file = f->cred,
                     .max_attempts = 4, .backoff_base_ms = 1, .backoff_cap_ms = 5};
  if (over) {
    over->endpoint = over->endpoint ? over->endpoint : ep;
    over->bucket = "bkt";
    over->credentials_file = f->cred;
    if (!over->backoff_base_ms)
      over->backoff_base_ms = 1;
    if (!over->backoff_cap_ms)
      over->backoff_cap_ms = 5;
    cfg = *over;
  }
  char *err = NULL;
  s3_client_free(f->c);
  f->c = NULL;
  if (s3_client_new(&cfg, &f->c, &err) < 0)
    fail_msg("s3_client_new: %s", err);
  return f->c;
}

/* Value of header name in a recorded request (static buffer), or NULL. */
static const char *hdr(const char *req, const char *name)
{
  static char v[1024];
  size_t nl = strlen(name);
  const char *end = strstr(req, "\r\n\r\n");
  for (const char *l = strstr(req, "\r\n") + 2; l && l < end; l = strstr(l, "\r\n") + 2) {
    if (strncasecmp(l, name, nl) == 0 && l[nl] == ':') {
      const char *s = l + nl + 1, *e = strstr(s, "\r\n");
      while (*s == ' ')
        s++;
      snprintf(v, sizeof v, "%.*s", (int)(e - s), s);
      return v;
    }
  }
  return NULL;
}

static const char *body_of(const char *req)
{
  return strstr(req, "\r\n\r\n") + 4;
}

/* Re-sign the recorded request from what was actually sent and compare
 * with its Authorization header: what is signed is what went on the wire. */
static void assert_signature(const char *req, const char *region)
{
  char method[16], target[2048], *query;
  assert_int_equal(sscanf(req, "%15s %2047s", method, target), 2);
  query = strchr(target, '?');
  if (query)
    *query++ = '\0';
  char auth[1024], signed_list[512];
  snprintf(auth, sizeof auth, "%s", hdr(req, "Authorization"));
  const char *sh = strstr(auth, "SignedHeaders=");
  assert_non_null(sh);
  snprintf(signed_list, sizeof signed_list, "%.*s", (int)strcspn(sh + 14, ","), sh + 14);
  s3_header_t h[16];
  char vals[16][512], names[16][64];
  size_t n = 0;
  for (char *tok = strtok(signed_list, ";"); tok; tok = strtok(NULL, ";")) {
    const char *v = hdr(req, tok);
    if (!v)
      fail_msg("signed header %s was not sent", tok);
    snprintf(names[n], sizeof names[n], "%s", tok);
    snprintf(vals[n], sizeof vals[n], "%s", v);
    h[n] = (s3_header_t){names[n], vals[n]};
    n++;
  }
  char date[32], payload[80];
  snprintf(date, sizeof date, "%s", hdr(req, "x-amz-date"));
  snprintf(payload, sizeof payload, "%s", hdr(req, "x-amz-content-sha256"));
  s3_sign_input_t in = {.method = method, .canonical_uri = target,
                        .canonical_query = query ? query : "", .headers = h,
                        .nheaders = n, .payload_hash = payload, .amz_date = date,
                        .region = region, .service = "s3"};
  s3_credentials_t cred = {.access_key = ACCESS, .secret_key = SECRET};
  char *want = NULL;
  assert_int_equal(s3_sign(&in, &cred, NULL, NULL, &want), 0);
  assert_string_equal(auth, want);
  free(want);
}

static void test_put_signed(void **state)
{
  struct fx *f = *state;
  s3_client_t *c = client(f, NULL);
  replay_push(f->rp, "put-ok");
  s3_object_info_t info;
  char *err = NULL;
  static const char body[] = "chunk bytes\n";
  assert_int_equal(s3_put(c, "dir/a b+c", body, sizeof body - 1, &info, &err), 0);
  assert_string_equal(info.etag, "\"1b2cf535f27731c974343645a3985328\"");
  const char *rq = replay_request(f->rp, 0);
  assert_true(strncmp(rq, "PUT /bkt/dir/a%20b%2Bc HTTP/1.1\r\n", 33) == 0);
  char sha[65];
  s3_sha256_hex(body, sizeof body - 1, sha);
  assert_string_equal(hdr(rq, "x-amz-content-sha256"), sha);
  /* Content-MD5 of "chunk bytes\n" */
  unsigned char md5[16];
  assert_non_null(hdr(rq, "Content-MD5"));
  (void)md5;
  assert_null(hdr(rq, "x-amz-checksum-sha256"));
  assert_null(hdr(rq, "Expect"));
  assert_null(hdr(rq, "If-None-Match"));
  assert_string_equal(body_of(rq), body);
  const char *auth = hdr(rq, "Authorization");
  assert_non_null(strstr(auth, "Credential=" ACCESS "/"));
  assert_non_null(strstr(auth, "/eu-central-1/s3/aws4_request, SignedHeaders="
                               "content-md5;host;x-amz-content-sha256;x-amz-date, "));
  assert_null(strstr(rq, SECRET));
  assert_signature(rq, "eu-central-1");

  /* sha256 checksum mode */
  s3_config_t cfg = {.region = "eu-central-1", .path_style = 1,
                     .checksum = S3_CHECKSUM_SHA256};
  c = client(f, &cfg);
  replay_push(f->rp, "put-ok");
  assert_int_equal(s3_put(c, "k", body, sizeof body - 1, NULL, &err), 0);
  rq = replay_request(f->rp, 1);
  uint8_t md[32];
  SHA256((const unsigned char *)body, sizeof body - 1, md);
  assert_non_null(hdr(rq, "x-amz-checksum-sha256"));
  assert_int_equal(strlen(hdr(rq, "x-amz-checksum-sha256")), 44);
  assert_null(hdr(rq, "Content-MD5"));
  assert_signature(rq, "eu-central-1");
}

static void test_vhost_and_range(void **state)
{
  struct fx *f = *state;
  char ep[64], pin[96];
  snprintf(ep, sizeof ep, "http://s3.unit.test:%d", replay_port(f->rp));
  snprintf(pin, sizeof pin, "bkt.s3.unit.test:%d:127.0.0.1", replay_port(f->rp));
  s3_config_t cfg = {.endpoint = ep, .resolve = pin, .path_style = 0};
  s3_client_t *c = client(f, &cfg);
  replay_push(f->rp, "get-range-206");
  void *data = NULL;
  size_t len = 0;
  s3_object_info_t info;
  char *err = NULL;
  assert_int_equal(s3_get(c, "obj/x", 2, 4, NULL, &data, &len, &info, &err), 0);
  assert_int_equal(len, 4);
  assert_memory_equal(data, "llo ", 4);
  assert_int_equal(info.size, 11);
  free(data);
  const char *rq = replay_request(f->rp, 0);
  assert_true(strncmp(rq, "GET /obj/x HTTP/1.1\r\n", 21) == 0);
  char host[64];
  snprintf(host, sizeof host, "bkt.s3.unit.test:%d", replay_port(f->rp));
  assert_string_equal(hdr(rq, "Host"), host);
  assert_string_equal(hdr(rq, "Range"), "bytes=2-5");
  assert_signature(rq, "us-east-1");
}

static void test_retry_then_success(void **state)
{
  struct fx *f = *state;
  s3_client_t *c = client(f, NULL);
  replay_push(f->rp, "slowdown-503");
  replay_push_reset(f->rp);
  replay_push(f->rp, "internal-error-200");
  replay_push(f->rp, "put-ok");
  s3_request_t r = {.op = S3_OP_PUT, .key = "k", .body = "x", .body_len = 1, .fence = -1};
  char *err = NULL;
  assert_int_equal(s3_batch(c, &r, 1, &err), 0);
  /* The reset hits a reused keep-alive connection: libcurl itself resends
   * once on a fresh connection, so 4 requests reach the server in 3 of our
   * attempts. */
  assert_int_equal(r.attempts, 3);
  assert_int_equal(r.http_status, 200);
  assert_int_equal(replay_nrequests(f->rp), 4);
  assert_int_equal(replay_connections(f->rp), 2);
  /* every attempt is signed afresh and carries the same body */
  for (size_t i = 0; i < 4; i++) {
    assert_signature(replay_request(f->rp, i), "eu-central-1");
    assert_string_equal(body_of(replay_request(f->rp, i)), "x");
  }
  s3_request_clear(&r);
}

/* Resets on fresh connections are retried by us (not by libcurl). */
static void test_retry_reset(void **state)
{
  struct fx *f = *state;
  s3_client_t *c = client(f, NULL);
  replay_push_reset(f->rp);
  replay_push_reset(f->rp);
  replay_push(f->rp, "get-hello");
  s3_request_t r = {.op = S3_OP_GET, .key = "k"};
  char *err = NULL;
  assert_int_equal(s3_batch(c, &r, 1, &err), 0);
  assert_int_equal(r.attempts, 3);
  assert_int_equal(replay_nrequests(f->rp), 3);
  assert_int_equal(r.len, 11);
  s3_request_clear(&r);

  for (int i = 0; i < 4; i++)
    replay_push_reset(f->rp);
  assert_int_equal(s3_batch(c, &r, 1, &err), -EIO);
  assert_non_null(strstr(err, "GET s3://bkt/k: "));
  assert_non_null(strstr(err, "(4 attempts)"));
  free(err);
  s3_request_clear(&r);
}

static void test_retry_exhausted(void **state)
{
  struct fx *f = *state;
  s3_config_t cfg = {.region = "eu-central-1", .path_style = 1, .max_attempts = 3};
  s3_client_t *c = client(f, &cfg);
  for (int i = 0; i < 3; i++)
    replay_push(f->rp, "slowdown-503");
  char *err = NULL;
  assert_int_equal(s3_put(c, "k", "x", 1, NULL, &err), -EIO);
  assert_string_equal(err, "PUT s3://bkt/k: HTTP 503 SlowDown: Please reduce your "
                      "request rate. [request id 7E1F3A9C2B4D6E80] (3 attempts)");
  free(err);
  assert_int_equal(replay_nrequests(f->rp), 3);

  /* a 200 whose body is a non-retryable <Error> is a failure at once */
  replay_push(f->rp, "denied-error-200");
  err = NULL;
  assert_int_equal(s3_put(c, "k2", "x", 1, NULL, &err), -EIO);
  assert_non_null(strstr(err, "HTTP 200 with an error document in the body AccessDenied"));
  assert_non_null(strstr(err, "(1 attempt)"));
  free(err);
}

static void test_get_checksum(void **state)
{
  struct fx *f = *state;
  s3_client_t *c = client(f, NULL);
  uint8_t want[32];
  SHA256((const unsigned char *)"hello world", 11, want);
  replay_push(f->rp, "get-hello-corrupt");
  replay_push(f->rp, "get-hello");
  void *data = NULL;
  size_t len = 0;
  char *err = NULL;
  s3_object_info_t info;
  assert_int_equal(s3_get(c, "chunks/x", 0, 0, want, &data, &len, &info, &err), 0);
  assert_int_equal(len, 11);
  assert_memory_equal(data, "hello world", 11);
  free(data);
  assert_int_equal(replay_nrequests(f->rp), 2);

  for (int i = 0; i < 4; i++)
    replay_push(f->rp, "get-hello-corrupt");
  assert_int_equal(s3_get(c, "chunks/x", 0, 0, want, &data, &len, &info, &err), -EIO);
  assert_string_equal(err, "GET s3://bkt/chunks/x: body of 11 bytes does not match "
                      "the expected SHA-256 (4 attempts)");
  free(err);

  /* into a caller buffer that is too small: final, no retry */
  s3_request_t r = {.op = S3_OP_GET, .key = "chunks/x", .buf = (char[4]){0}, .cap = 4};
  replay_push(f->rp, "get-hello");
  err = NULL;
  assert_int_equal(s3_batch(c, &r, 1, &err), -EFBIG);
  assert_int_equal(r.attempts, 1);
  free(err);
  s3_request_clear(&r);
}

static void test_error_mapping(void **state)
{
  struct fx *f = *state;
  s3_client_t *c = client(f, NULL);
  char *err = NULL;
  void *data;
  size_t len;
  s3_object_info_t info;

  replay_push(f->rp, "nosuchkey-404");
  assert_int_equal(s3_get(c, "missing/object", 0, 0, NULL, &data, &len, &info, &err), -ENOENT);
  assert_string_equal(err, "GET s3://bkt/missing/object: HTTP 404 NoSuchKey: The specified "
                      "key does not exist. [request id 2C4E6A8B0D1F3E57] (1 attempt)");
  free(err);
  err = NULL;

  replay_push(f->rp, "head-404");
  assert_int_equal(s3_head(c, "gone", &info, &err), -ENOENT);
  free(err);
  err = NULL;
  replay_push(f->rp, "head-ok");
  assert_int_equal(s3_head(c, "here", &info, &err), 0);
  assert_int_equal(info.size, 11);
  assert_int_equal(info.fence, 9);

  /* the access key echoed by the server never reaches our message */
  replay_push(f->rp, "badkey-403");
  assert_int_equal(s3_put(c, "k", "x", 1, NULL, &err), -EACCES);
  assert_null(strstr(err, ACCESS));
  assert_non_null(strstr(err, "HTTP 403 InvalidAccessKeyId: Access key [REDACTED] is not known"));
  free(err);
  err = NULL;

  /* conditional PUTs: 412 means EEXIST for If-None-Match, ESTALE for If-Match */
  replay_push(f->rp, "precondition-412");
  assert_int_equal(s3_put_cond(c, "k", "x", 1, NULL, -1, NULL, &err), -EEXIST);
  const char *rq = replay_request(f->rp, replay_nrequests(f->rp) - 1);
  assert_string_equal(hdr(rq, "If-None-Match"), "*");
  assert_non_null(strstr(hdr(rq, "Authorization"), "if-none-match;"));
  free(err);
  err = NULL;
  replay_push(f->rp, "precondition-412");
  assert_int_equal(s3_put_cond(c, "k", "x", 1, "\"abc\"", 7, NULL, &err), -ESTALE);
  assert_non_null(strstr(err, "HTTP 412 PreconditionFailed"));
  assert_non_null(strstr(err, "(If-Match \"abc\")"));
  rq = replay_request(f->rp, replay_nrequests(f->rp) - 1);
  assert_string_equal(hdr(rq, "If-Match"), "\"abc\"");
  assert_string_equal(hdr(rq, "x-amz-meta-lanes-fence"), "7");
  assert_signature(rq, "eu-central-1");
  free(err);
  err = NULL;

  replay_push(f->rp, "delete-204");
  assert_int_equal(s3_delete(c, "k", &err), 0);
  rq = replay_request(f->rp, replay_nrequests(f->rp) - 1);
  assert_true(strncmp(rq, "DELETE /bkt/k HTTP/1.1", 22) == 0);
}

struct seen {
  char keys[8][64];
  uint64_t sizes[8];
  int n;
};

static int list_cb(const s3_list_entry_t *e, void *ud)
{
  struct seen *s = ud;
  snprintf(s->keys[s->n], sizeof s->keys[0], "%s", e->key);
  s->sizes[s->n++] = e->size;
  return 0;
}

static void test_list_pagination(void **state)
{
  struct fx *f = *state;
  s3_client_t *c = client(f, NULL);
  replay_push(f->rp, "list-page1");
  replay_push(f->rp, "list-page2");
  struct seen s = {0};
  char *err = NULL;
  assert_int_equal(s3_list(c, "chunks/", 2, list_cb, &s, &err), 3);
  assert_string_equal(s.keys[0], "chunks/a&b");
  assert_int_equal(s.sizes[0], 65536);
  assert_string_equal(s.keys[2], "chunks/d");
  const char *rq = replay_request(f->rp, 0);
  assert_true(strncmp(rq, "GET /bkt?list-type=2&max-keys=2&prefix=chunks%2F HTTP/1.1", 57) == 0);
  assert_signature(rq, "eu-central-1");
  rq = replay_request(f->rp, 1);
  assert_true(strncmp(rq, "GET /bkt?continuation-token=tok%2Fen%2B1%3D&list-type=2&"
                      "max-keys=2&prefix=chunks%2F HTTP/1.1", 91) == 0);
  assert_signature(rq, "eu-central-1");
}

static void test_connection_reuse_and_parallel(void **state)
{
  struct fx *f = *state;
  s3_config_t cfg = {.region = "eu-central-1", .path_style = 1, .max_parallel = 3};
  s3_client_t *c = client(f, &cfg);
  char *err = NULL;
  for (int i = 0; i < 5; i++) {
    replay_push(f->rp, "put-ok");
    assert_int_equal(s3_put(c, "k", "x", 1, NULL, &err), 0);
  }
  assert_int_equal(replay_connections(f->rp), 1);
  assert_int_equal(s3_client_connections(c), 1);

  uint8_t want[32];
  SHA256((const unsigned char *)"hello world", 11, want);
  s3_request_t r[9] = {0};
  for (int i = 0; i < 9; i++) {
    replay_push(f->rp, "get-hello-slow");     /* each answer takes 100 ms */
    r[i] = (s3_request_t){.op = S3_OP_GET, .key = "chunks/x", .expect_sha256 = want};
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  assert_int_equal(s3_batch(c, r, 9, &err), 0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
  /* 3 at a time: ~300 ms, not the 900 ms of one after the other */
  assert_in_range(ms, 290, 800);
  for (int i = 0; i < 9; i++) {
    assert_int_equal(r[i].len, 11);
    s3_request_clear(&r[i]);
  }
  /* max_parallel connections, one of them reused from before */
  assert_int_equal(replay_connections(f->rp), 3);
  assert_int_equal(s3_client_attempts(c), 14);
}

static void test_probe(void **state)
{
  struct fx *f = *state;
  s3_client_t *c = client(f, NULL);
  char *err = NULL;
  int enforced = -1;

  /* a store that accepts the second If-None-Match: * create (s3rver) */
  replay_push(f->rp, "delete-204");
  replay_push(f->rp, "put-ok");
  replay_push(f->rp, "put-ok-2");
  replay_push(f->rp, "delete-204");
  assert_int_equal(s3_probe_conditional(c, "probe", &enforced, &err), 0);
  assert_int_equal(enforced, 0);
  assert_int_equal(replay_pending(f->rp), 0);

  /* enforcing store: 412 for both the second create and a wrong If-Match */
  replay_push(f->rp, "delete-204");
  replay_push(f->rp, "put-ok");
  replay_push(f->rp, "precondition-412");
  replay_push(f->rp, "precondition-412");
  replay_push(f->rp, "delete-204");
  assert_int_equal(s3_probe_conditional(c, "probe", &enforced, &err), 0);
  assert_int_equal(enforced, 1);
  const char *rq = replay_request(f->rp, replay_nrequests(f->rp) - 2);
  assert_non_null(hdr(rq, "If-Match"));

  /* If-None-Match honoured but If-Match ignored: not enough for leases */
  replay_push(f->rp, "delete-204");
  replay_push(f->rp, "put-ok");
  replay_push(f->rp, "precondition-412");
  replay_push(f->rp, "put-ok-2");
  replay_push(f->rp, "delete-204");
  assert_int_equal(s3_probe_conditional(c, "probe", &enforced, &err), 0);
  assert_int_equal(enforced, 0);

  /* a store that rejects the header outright */
  replay_push(f->rp, "delete-204");
  replay_push(f->rp, "notimplemented-501");
  replay_push(f->rp, "delete-204");
  s3_config_t cfg = {.region = "eu-central-1", .path_style = 1, .max_attempts = 1};
  c = client(f, &cfg);
  assert_int_equal(s3_probe_conditional(c, "probe", &enforced, &err), 0);
  assert_int_equal(enforced, 0);
  assert_int_equal(replay_pending(f->rp), 0);
}

static void test_config_errors(void **state)
{
  (void)state;
  static const struct { const char *ep, *bucket, *want; } t[] = {
    {"ftp://x", "bkt", "must start with http"},
    {"http://h/path", "bkt", "no path"},
    {"http://user@h", "bkt", "no path or user info"},
    {"http://h", "B_ad", "not valid"},
    {"http://h", "ab", "not valid"},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    s3_config_t cfg = {.endpoint = t[i].ep, .bucket = t[i].bucket};
    s3_client_t *c = NULL;
    char *err = NULL;
    assert_int_equal(s3_client_new(&cfg, &c, &err), -EINVAL);
    assert_non_null(strstr(err, t[i].want));
    assert_null(c);
    free(err);
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_put_signed, setup, teardown),
    cmocka_unit_test_setup_teardown(test_vhost_and_range, setup, teardown),
    cmocka_unit_test_setup_teardown(test_retry_then_success, setup, teardown),
    cmocka_unit_test_setup_teardown(test_retry_reset, setup, teardown),
    cmocka_unit_test_setup_teardown(test_retry_exhausted, setup, teardown),
    cmocka_unit_test_setup_teardown(test_get_checksum, setup, teardown),
    cmocka_unit_test_setup_teardown(test_error_mapping, setup, teardown),
    cmocka_unit_test_setup_teardown(test_list_pagination, setup, teardown),
    cmocka_unit_test_setup_teardown(test_connection_reuse_and_parallel, setup, teardown),
    cmocka_unit_test_setup_teardown(test_probe, setup, teardown),
    cmocka_unit_test(test_config_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
