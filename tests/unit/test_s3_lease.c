/* Unit tests for blockstore/s3/s3-lease.c: the lease and fencing protocol
 * against recorded S3 responses served by the replay server (a stand-in
 * for an S3 store that enforces conditional writes; s3rver does not, so
 * these paths can only be covered this way).  Fixture times: host-b's
 * lease (generation 4) expires at T0 + 60 s. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>

#include "s3.h"
#include "s3-lease.h"
#include "test_s3_replay.h"

#define T0 1700000000000LL
#define TTL 30000
#define SKEW 5000
#define KEY "lanes/lane1/lease"

struct fx {
  replay_t *rp;
  char cred[64];
  s3_client_t *c;
};

static int setup(void **state)
{
  struct fx *f = calloc(1, sizeof *f);
  f->rp = replay_start();
  snprintf(f->cred, sizeof f->cred, "/tmp/test_s3_lease.XXXXXX");
  int fd = mkstemp(f->cred);
  const char *txt = "[default]\naws_access_key_id = AKIDLEASE0001\n"
                    "aws_secret_access_key = leasesecret\n";
  assert_int_equal(write(fd, txt, strlen(txt)), (ssize_t)strlen(txt));
  close(fd);
  char ep[64], *err = NULL;
  snprintf(ep, sizeof ep, "http://127.0.0.1:%d", replay_port(f->rp));
  s3_config_t cfg = {.endpoint = ep, .bucket = "bkt", .path_style = 1,
                     .credentials_file = f->cred, .max_attempts = 2,
                     .backoff_base_ms = 1, .backoff_cap_ms = 2};
  if (s3_client_new(&cfg, &f->c, &err) < 0)
    fail_msg("client: %s", err);
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

static const char *hdr(const char *req, const char *name)
{
  static char v[512];
  size_t nl = strlen(name);
  const char *end = strstr(req, "\r\n\r\n");
  for (const char *l = strstr(req, "\r\n") + 2; l < end; l = strstr(l, "\r\n") + 2) {
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

static const char *req(struct fx *f, size_t i)
{
  const char *r = replay_request(f->rp, i);
  assert_non_null(r);
  return r;
}

static s3_lease_t body_lease(const char *rq)
{
  const char *b = strstr(rq, "\r\n\r\n") + 4;
  s3_lease_t l;
  assert_int_equal(s3_lease_decode(b, strlen(b), &l), 0);
  return l;
}

static void test_acquire_new(void **state)
{
  struct fx *f = *state;
  replay_push(f->rp, "nosuchkey-404");
  replay_push(f->rp, "put-ok");
  s3_lease_t l;
  char *err = NULL;
  assert_int_equal(s3_lease_acquire(f->c, KEY, "host-a", TTL, SKEW, T0, &l, &err), 0);
  assert_int_equal(l.generation, 1);
  assert_string_equal(l.holder, "host-a");
  assert_int_equal(l.expires_ms, T0 + TTL);
  assert_string_equal(l.etag, "\"1b2cf535f27731c974343645a3985328\"");
  assert_true(strncmp(req(f, 0), "GET /bkt/" KEY " ", 9 + strlen(KEY) + 1) == 0);
  const char *put = req(f, 1);
  assert_true(strncmp(put, "PUT /bkt/" KEY " ", 9 + strlen(KEY) + 1) == 0);
  assert_string_equal(hdr(put, "If-None-Match"), "*");
  assert_null(hdr(put, "If-Match"));
  s3_lease_t w = body_lease(put);
  assert_int_equal(w.generation, 1);
  assert_int_equal(w.expires_ms, T0 + TTL);
  assert_false(w.released);
}

static void test_acquire_create_race(void **state)
{
  struct fx *f = *state;
  replay_push(f->rp, "nosuchkey-404");
  replay_push(f->rp, "precondition-412");
  s3_lease_t l = {.generation = 77};
  char *err = NULL;
  assert_int_equal(s3_lease_acquire(f->c, KEY, "host-a", TTL, SKEW, T0, &l, &err), -EBUSY);
  assert_non_null(strstr(err, "another host created it at the same time"));
  assert_int_equal(l.generation, 77);        /* untouched on failure */
  free(err);
}

static void test_acquire_conflict(void **state)
{
  struct fx *f = *state;
  replay_push(f->rp, "lease-held-b");
  s3_lease_t l;
  char *err = NULL;
  /* not expired yet, and within the skew margin after expiry: busy */
  assert_int_equal(s3_lease_acquire(f->c, KEY, "host-a", TTL, SKEW, T0, &l, &err), -EBUSY);
  assert_string_equal(err, "lease " KEY ": held by host-b (generation 4) for "
                      "another 65000 ms");
  free(err);
  err = NULL;
  replay_push(f->rp, "lease-held-b");
  assert_int_equal(s3_lease_acquire(f->c, KEY, "host-a", TTL, SKEW,
                                    T0 + 60000 + SKEW / 2, &l, &err), -EBUSY);
  free(err);
  assert_int_equal(replay_nrequests(f->rp), 2);   /* no write attempted */
}

static void test_acquire_expired_takeover(void **state)
{
  struct fx *f = *state;
  int64_t now = T0 + 60000 + SKEW + 1;
  replay_push(f->rp, "lease-held-b");
  replay_push(f->rp, "put-ok-2");
  s3_lease_t l;
  char *err = NULL;
  assert_int_equal(s3_lease_acquire(f->c, KEY, "host-a", TTL, SKEW, now, &l, &err), 0);
  assert_int_equal(l.generation, 5);
  assert_string_equal(l.etag, "\"etag-after-second-write\"");
  const char *put = req(f, 1);
  assert_string_equal(hdr(put, "If-Match"), "\"lease-etag-4\"");
  assert_null(hdr(put, "If-None-Match"));
  s3_lease_t w = body_lease(put);
  assert_string_equal(w.holder, "host-a");
  assert_int_equal(w.generation, 5);
  assert_int_equal(w.expires_ms, now + TTL);

  /* someone else wins the takeover race: 412 -> busy */
  replay_push(f->rp, "lease-held-b");
  replay_push(f->rp, "precondition-412");
  assert_int_equal(s3_lease_acquire(f->c, KEY, "host-c", TTL, SKEW, now, &l, &err), -EBUSY);
  assert_non_null(strstr(err, "took it over at the same time"));
  free(err);

  /* a released lease is free at once and keeps counting generations */
  err = NULL;
  replay_push(f->rp, "lease-released-b");
  replay_push(f->rp, "put-ok");
  assert_int_equal(s3_lease_acquire(f->c, KEY, "host-a", TTL, SKEW, T0, &l, &err), 0);
  assert_int_equal(l.generation, 7);
  assert_string_equal(hdr(req(f, 5), "If-Match"), "\"lease-etag-6\"");
}

/* A lease object that is not a lease (here: empty, as a store that keeps a
 * half-written PUT of a killed writer leaves it) bricks nothing: it is taken
 * over conditionally on its ETag, with a generation above any +1 counter. */
static void test_acquire_unreadable_takeover(void **state)
{
  struct fx *f = *state;
  replay_push(f->rp, "lease-empty");
  replay_push(f->rp, "put-ok");
  s3_lease_t l;
  char *err = NULL;
  assert_int_equal(s3_lease_acquire(f->c, KEY, "host-a", TTL, SKEW, T0, &l, &err), 0);
  assert_int_equal(l.generation, (uint64_t)T0);
  const char *put = req(f, 1);
  assert_string_equal(hdr(put, "If-Match"), "\"lease-etag-empty\"");
  s3_lease_t w = body_lease(put);
  assert_string_equal(w.holder, "host-a");
  assert_int_equal(w.generation, (uint64_t)T0);

  /* losing that race is "busy", not a crash or a silent double holder */
  replay_push(f->rp, "lease-empty");
  replay_push(f->rp, "precondition-412");
  assert_int_equal(s3_lease_acquire(f->c, KEY, "host-c", TTL, SKEW, T0, &l, &err), -EBUSY);
  free(err);
}

static void test_renew_release(void **state)
{
  struct fx *f = *state;
  s3_lease_t l = {.holder = "host-a", .generation = 5, .expires_ms = T0 + TTL,
                  .etag = "\"mine-1\""};
  char *err = NULL;
  replay_push(f->rp, "put-ok-2");
  assert_int_equal(s3_lease_renew(f->c, KEY, &l, TTL, T0 + 10000, &err), 0);
  assert_int_equal(l.expires_ms, T0 + 10000 + TTL);
  assert_int_equal(l.generation, 5);
  assert_string_equal(l.etag, "\"etag-after-second-write\"");
  assert_string_equal(hdr(req(f, 0), "If-Match"), "\"mine-1\"");
  assert_int_equal(body_lease(req(f, 0)).generation, 5);

  /* taken over meanwhile: renew fails with ESTALE, lease untouched */
  replay_push(f->rp, "precondition-412");
  s3_lease_t before = l;
  assert_int_equal(s3_lease_renew(f->c, KEY, &l, TTL, T0 + 20000, &err), -ESTALE);
  assert_non_null(strstr(err, "lost (generation 5"));
  assert_memory_equal(&before, &l, sizeof l);
  free(err);
  err = NULL;

  replay_push(f->rp, "put-ok");
  assert_int_equal(s3_lease_release(f->c, KEY, &l, &err), 0);
  s3_lease_t w = body_lease(req(f, 2));
  assert_true(w.released);
  assert_int_equal(w.generation, 5);
  assert_string_equal(hdr(req(f, 2), "If-Match"), "\"etag-after-second-write\"");
}

static void test_fence_claim(void **state)
{
  struct fx *f = *state;
  char etag[S3_ETAG_MAX + 1];
  char *err = NULL;
  /* older fence (3) -> rewritten with our token 5 under If-Match */
  replay_push(f->rp, "ref-fence-3");
  replay_push(f->rp, "put-ok-2");
  assert_int_equal(s3_fence_claim(f->c, "lanes/lane1/ref", 5, NULL, 0, etag, &err), 0);
  assert_string_equal(etag, "\"etag-after-second-write\"");
  const char *put = req(f, 1);
  assert_string_equal(hdr(put, "If-Match"), "\"ref-etag-3\"");
  assert_string_equal(hdr(put, "x-amz-meta-lanes-fence"), "5");
  assert_string_equal(strstr(put, "\r\n\r\n") + 4, "ref root=0f0f size=1073741824");

  /* newer fence (9) than our token: refused without writing */
  replay_push(f->rp, "ref-fence-9");
  assert_int_equal(s3_fence_claim(f->c, "lanes/lane1/ref", 5, NULL, 0, etag, &err), -ESTALE);
  assert_string_equal(err, "fenced: lanes/lane1/ref belongs to generation 9, newer "
                      "than ours (5)");
  free(err);
  err = NULL;
  assert_int_equal(replay_nrequests(f->rp), 3);

  /* missing: created with If-None-Match and the token */
  replay_push(f->rp, "nosuchkey-404");
  replay_push(f->rp, "put-ok");
  assert_int_equal(s3_fence_claim(f->c, "lanes/lane2/ref", 1, "init", 4, etag, &err), 0);
  assert_string_equal(hdr(req(f, 4), "If-None-Match"), "*");
  assert_string_equal(hdr(req(f, 4), "x-amz-meta-lanes-fence"), "1");
}

static void test_fence_commit_stale(void **state)
{
  struct fx *f = *state;
  char etag[S3_ETAG_MAX + 1] = "\"ref-etag-3\"";
  char *err = NULL;
  replay_push(f->rp, "put-ok");
  assert_int_equal(s3_fence_commit(f->c, "lanes/lane1/ref", 5, etag, "v2", 2, etag, &err), 0);
  assert_string_equal(etag, "\"1b2cf535f27731c974343645a3985328\"");
  assert_string_equal(hdr(req(f, 0), "If-Match"), "\"ref-etag-3\"");

  /* a newer generation claimed the ref: our commit is refused (412), and
   * the message names the generation that fenced us out (from HEAD) */
  replay_push(f->rp, "precondition-412");
  replay_push(f->rp, "head-ok");
  assert_int_equal(s3_fence_commit(f->c, "lanes/lane1/ref", 5, etag, "v3", 2, etag, &err), -ESTALE);
  assert_string_equal(err, "fenced: lanes/lane1/ref was written by generation 9 after "
                      "us; our generation 5 may not commit");
  free(err);
  assert_true(strncmp(req(f, 2), "HEAD /bkt/lanes/lane1/ref ", 26) == 0);
  assert_string_equal(etag, "\"1b2cf535f27731c974343645a3985328\"");
}

static void test_decode(void **state)
{
  (void)state;
  static const char *bad[] = {
    "", "{}", "[1]", "not json",
    "{\"lanes_lease\":2,\"holder\":\"a\",\"generation\":1,\"expires_ms\":1}",
    "{\"lanes_lease\":1,\"holder\":\"\",\"generation\":1,\"expires_ms\":1}",
    "{\"lanes_lease\":1,\"holder\":\"a b\",\"generation\":1,\"expires_ms\":1}",
    "{\"lanes_lease\":1,\"holder\":\"a\",\"generation\":0,\"expires_ms\":1}",
    "{\"lanes_lease\":1,\"holder\":\"a\",\"generation\":\"1\",\"expires_ms\":1}",
    "{\"lanes_lease\":1,\"holder\":\"a\",\"generation\":1}",
  };
  s3_lease_t l;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(s3_lease_decode(bad[i], strlen(bad[i]), &l), -EBADMSG);
  s3_lease_t in = {.holder = "h-1", .generation = 123456789012ULL,
                   .expires_ms = T0, .released = 1};
  char *s = s3_lease_encode(&in);
  assert_int_equal(s3_lease_decode(s, strlen(s), &l), 0);
  assert_string_equal(l.holder, "h-1");
  assert_int_equal(l.generation, 123456789012ULL);
  assert_int_equal(l.expires_ms, T0);
  assert_true(l.released);
  free(s);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_acquire_new, setup, teardown),
    cmocka_unit_test_setup_teardown(test_acquire_unreadable_takeover, setup, teardown),
    cmocka_unit_test_setup_teardown(test_acquire_create_race, setup, teardown),
    cmocka_unit_test_setup_teardown(test_acquire_conflict, setup, teardown),
    cmocka_unit_test_setup_teardown(test_acquire_expired_takeover, setup, teardown),
    cmocka_unit_test_setup_teardown(test_renew_release, setup, teardown),
    cmocka_unit_test_setup_teardown(test_fence_claim, setup, teardown),
    cmocka_unit_test_setup_teardown(test_fence_commit_stale, setup, teardown),
    cmocka_unit_test(test_decode),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
