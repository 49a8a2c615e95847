/* Unit tests for blockstore/objects-s3.c (the block store's S3 backend)
 * against recorded S3 responses served by the replay server — a stand-in
 * for an S3 store that enforces conditional writes (s3rver ignores them, so
 * the fencing and lease paths of the backend can only be covered this way):
 *
 *   - a writer whose lease was taken over cannot commit: its FLUSH uploads
 *     its objects (harmless) but the ref PUT carries If-Match on the ETag it
 *     claimed, the store answers 412, FLUSH fails with -ESTALE, the local
 *     commit is rolled back, and later FLUSHes fail without touching the
 *     network
 *   - pending-upload marker: the first upload is preceded by a PUT of
 *     P/pending/... naming the writer's lease and generation; a fenced
 *     writer uploads nothing more; once nothing is left unpublished (the
 *     failed commit rolled back, the journal drained) close DELETEs it
 *   - lease checks: a live lease of another host is -EBUSY naming it; on a
 *     store that does not enforce conditional writes another host's lane is
 *     -EPERM with the way out named, and allowed once the operator set
 *     allow_unenforced_leases and the lease was released
 *   - a refresh racing this host's publish of a ref keeps the ref
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "s3.h"
#include "store-internal.h"
#include "test_s3_replay.h"

struct fx {
  replay_t *rp;
  char dir[64];
  char cred[128];
};

static void write_file(const char *path, const char *text, mode_t mode)
{
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  chmod(path, mode);
}

/* An S3 store directory pointing at the replay server (no probe: the
 * conditional-write capability is written into backend.conf). */
static void make_store(struct fx *f, const char *durability, int enforced,
                       int allow)
{
  char conf[1024], path[256];
  snprintf(conf, sizeof conf,
           "endpoint=http://127.0.0.1:%d\nbucket=bkt\nprefix=p\n"
           "credentials_file=%s\ndurability=%s\ncache_dir=%s/cache\n"
           "conditional_writes=%s\nallow_unenforced_leases=%d\n",
           replay_port(f->rp), f->cred, durability, f->dir,
           enforced ? "enforced" : "unenforced", allow);
  snprintf(path, sizeof path, "%s/backend.conf", f->dir);
  write_file(path, conf, 0600);
  store_params_t p = {4096, 4};
  char *err = NULL;
  if (store_create_backend(f->dir, &p, "s3", &err) < 0)
    fail_msg("create: %s", err);
}

static int setup(void **state)
{
  struct fx *f = calloc(1, sizeof *f);
  f->rp = replay_start();
  snprintf(f->dir, sizeof f->dir, "/tmp/test_s3_store.XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->cred, sizeof f->cred, "%s/credentials", f->dir);
  write_file(f->cred, "[default]\naws_access_key_id = AKIDSTORE0001\n"
             "aws_secret_access_key = storesecret\n", 0600);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fx *f = *state;
  replay_stop(f->rp);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  assert_int_equal(system(cmd), 0);
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

/* Open the store (its refresh LISTs refs: none) and put disk/d1 (all zero,
 * 16 KiB) into the local mirror without publishing it. */
static store_t *open_with_disk(struct fx *f)
{
  store_t *s = NULL;
  char *err = NULL;
  replay_push(f->rp, "list-empty");
  if (store_open(f->dir, 0, &s, &err) < 0)
    fail_msg("open: %s", err);
  store_ref_t ref;
  memset(&ref, 0, sizeof ref);
  snprintf(ref.name, sizeof ref.name, "disk/d1");
  ref.size = 16384;
  ref.generation = 1;
  pthread_mutex_lock(&s->lock);
  assert_int_equal(store_ref_set_locked(s, &ref, NULL), 0);
  pthread_mutex_unlock(&s->lock);
  return s;
}

static void test_fenced_writer_cannot_commit(void **state)
{
  struct fx *f = *state;
  make_store(f, "remote", 1, 0);
  store_t *s = open_with_disk(f);
  char *err = NULL;

  /* acquire: check (no lease), read (none), create; claim the ref */
  replay_push(f->rp, "nosuchkey-404");
  replay_push(f->rp, "nosuchkey-404");
  replay_push(f->rp, "put-ok");
  replay_push(f->rp, "ref-d1");
  replay_push(f->rp, "put-ok-ref-e2");
  if (store_lease_acquire(s, "disk/d1", "host-a", 0, &err) < 0)
    fail_msg("acquire: %s", err);
  size_t n0 = replay_nrequests(f->rp);
  const char *claim = replay_request(f->rp, n0 - 1);
  assert_non_null(strstr(claim, "PUT /bkt/p/refs/disk/d1 "));
  assert_string_equal(hdr(claim, "If-Match"), "\"ref-d1-e1\"");
  assert_string_equal(hdr(claim, "x-amz-meta-lanes-fence"), "1");
  assert_int_equal(store_lease_ok(s, NULL), 0);

  store_disk_t *d = NULL;
  assert_int_equal(store_disk_open(s, "disk/d1", NULL, &d, NULL), 0);
  char buf[4096];
  memset(buf, 0xab, sizeof buf);
  assert_int_equal(store_disk_write(d, buf, sizeof buf, 0, NULL), 0);

  /* Meanwhile another host took the lease over and claimed the ref: our
   * objects upload fine, the ref PUT meets 412, the HEAD names the fence. */
  replay_push(f->rp, "put-ok");   /* pending-upload marker */
  replay_push(f->rp, "put-ok");
  replay_push(f->rp, "put-ok-2");
  replay_push(f->rp, "precondition-412");
  replay_push(f->rp, "head-ok");
  int r = store_disk_flush(d, &err);
  assert_int_equal(r, -ESTALE);
  assert_non_null(err);
  assert_non_null(strstr(err, "fenced"));
  free(err);
  err = NULL;
  size_t n1 = replay_nrequests(f->rp);
  assert_int_equal(n1 - n0, 5);
  const char *marker = replay_request(f->rp, n0);
  assert_non_null(strstr(marker, "PUT /bkt/p/pending/"));
  assert_non_null(strstr(marker, "\"lease\":\"disk/d1\""));
  assert_non_null(strstr(marker, "\"lease_generation\":1"));
  assert_non_null(strstr(marker, "\"holder\":\"host-a\""));
  const char *commit = replay_request(f->rp, n0 + 3);
  assert_non_null(strstr(commit, "PUT /bkt/p/refs/disk/d1 "));
  assert_string_equal(hdr(commit, "If-Match"), "\"ref-d1-e2\"");
  assert_int_equal(replay_pending(f->rp), 0);

  /* The local commit was rolled back; the writer now knows it is fenced. */
  store_ref_t ref;
  assert_int_equal(store_ref_get(s, "disk/d1", &ref, NULL), 0);
  assert_int_equal(ref.generation, 1);
  assert_int_equal(store_lease_ok(s, NULL), -ESTALE);
  r = store_disk_flush(d, &err);
  assert_int_equal(r, -ESTALE);
  free(err);
  err = NULL;
  assert_int_equal(replay_nrequests(f->rp), n1);  /* no network at all */

  store_disk_close(d);
  assert_int_equal(store_lease_release(s, NULL), 0);  /* fenced: no write */
  assert_int_equal(replay_nrequests(f->rp), n1);
  /* Nothing unpublished is left (the failed commit was rolled back, the
   * journal was drained): close drops the marker. */
  replay_push(f->rp, "delete-204");
  store_close(s);
  assert_int_equal(replay_nrequests(f->rp), n1 + 1);
  const char *del = replay_request(f->rp, n1);
  assert_non_null(strstr(del, "DELETE /bkt/p/pending/"));
  assert_int_equal(replay_pending(f->rp), 0);
}

static void push_lease(struct fx *f, const char *holder, int released,
                       int64_t expires_ms)
{
  char text[512];
  snprintf(text, sizeof text,
           "HTTP/1.1 200 OK\nETag: \"lease-e\"\nContent-Type: application/json\n\n"
           "{\"lanes_lease\":1,\"holder\":\"%s\",\"generation\":4,"
           "\"expires_ms\":%lld,\"released\":%s}\n",
           holder, (long long)expires_ms, released ? "true" : "false");
  replay_push_text(f->rp, text);
}

static void test_lease_checks(void **state)
{
  struct fx *f = *state;
  make_store(f, "local", 1, 0);
  store_t *s = open_with_disk(f);
  char *err = NULL;

  push_lease(f, "host-b", 0, s3_now_ms() + 60000);
  assert_int_equal(store_lease_check(s, "disk/d1", "host-a", &err), -EBUSY);
  assert_non_null(strstr(err, "in use by host host-b"));
  free(err);
  err = NULL;
  push_lease(f, "host-b", 0, s3_now_ms() + 60000);
  assert_int_equal(store_lease_check(s, "disk/d1", "host-b", NULL), 0);
  push_lease(f, "host-b", 1, 0);
  assert_int_equal(store_lease_check(s, "disk/d1", "host-a", NULL), 0);
  store_close(s);
}

static void test_unenforced_store(void **state)
{
  struct fx *f = *state;
  make_store(f, "local", 0, 0);
  store_t *s = open_with_disk(f);
  char *err = NULL;
  assert_int_equal(store_conditional_enforced(s), 0);

  push_lease(f, "host-b", 1, 0);      /* released, still refused */
  assert_int_equal(store_lease_check(s, "disk/d1", "host-a", &err), -EPERM);
  assert_non_null(strstr(err, "does not enforce conditional writes"));
  assert_non_null(strstr(err, "--allow-unenforced-leases"));
  free(err);
  err = NULL;
  replay_push(f->rp, "nosuchkey-404");   /* never attached: fine */
  assert_int_equal(store_lease_check(s, "disk/d1", "host-a", NULL), 0);
  store_close(s);

  /* The operator opted in: released or expired leases may move. */
  char path[256];
  snprintf(path, sizeof path, "%s/store.db", f->dir);
  unlink(path);
  make_store(f, "local", 0, 1);
  s = open_with_disk(f);
  push_lease(f, "host-b", 1, 0);
  assert_int_equal(store_lease_check(s, "disk/d1", "host-a", NULL), 0);
  push_lease(f, "host-b", 0, s3_now_ms() + 60000);   /* live: still no */
  assert_int_equal(store_lease_check(s, "disk/d1", "host-a", &err), -EBUSY);
  free(err);
  store_close(s);
}

/* A refresh whose LIST began before this host's PUT of a ref finished must
 * not drop that ref from the local mirror as "deleted by another host"
 * (lanesd would then forget the lane).  The ref is old (updated = 0) and
 * was unpublished; the LIST (delayed 1.5 s, answering "no refs") is sent
 * first, the publish's PUT completes while it waits.  A later refresh
 * with nothing published meanwhile still deletes a ref gone from the
 * bucket. */
struct refresh_arg {
  store_t *s;
  int r;
};

static void *refresh_thread(void *p)
{
  struct refresh_arg *a = p;
  char *err = NULL;
  a->r = store_refresh(a->s, &err);
  free(err);
  return NULL;
}

static void test_refresh_races_publish(void **state)
{
  struct fx *f = *state;
  char *err = NULL;
  make_store(f, "local", 1, 0);
  store_t *s = open_with_disk(f);
  pthread_mutex_lock(&s->lock);
  assert_int_equal(sqlite3_exec(s->db, "INSERT INTO s3_pub(name, seq, owner) "
                                "VALUES('disk/d1', 1, NULL)", NULL, NULL, NULL),
                   SQLITE_OK);
  pthread_mutex_unlock(&s->lock);

  replay_push_text(f->rp,
    "HTTP/1.1 200 OK\nX-Replay-Delay-Ms: 1500\nContent-Type: application/xml\n\n"
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://"
    "s3.amazonaws.com/doc/2006-03-01/\"><Name>bkt</Name><Prefix>p/refs/</Prefix>"
    "<KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>"
    "</ListBucketResult>");
  replay_push(f->rp, "put-ok");
  struct refresh_arg a = { s, 1 };
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, refresh_thread, &a), 0);
  while (replay_nrequests(f->rp) < 2)   /* open's LIST, then this one */
    usleep(10000);
  if (store_publish(s, &err) < 0)
    fail_msg("publish: %s", err);
  pthread_join(t, NULL);
  assert_int_equal(a.r, 0);
  assert_int_equal(strncmp(replay_request(f->rp, 2), "PUT ", 4), 0);
  store_ref_t ref;
  if (store_ref_get(s, "disk/d1", &ref, &err) < 0)
    fail_msg("disk/d1 dropped by a refresh that raced its publish: %s", err);

  sleep(3);                      /* the publish is now older than a listing */
  replay_push(f->rp, "list-empty");
  assert_int_equal(store_refresh(s, &err), 0);
  assert_int_equal(store_ref_get(s, "disk/d1", &ref, &err), -ENOENT);
  free(err);
  store_close(s);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_fenced_writer_cannot_commit, setup, teardown),
    cmocka_unit_test_setup_teardown(test_lease_checks, setup, teardown),
    cmocka_unit_test_setup_teardown(test_unenforced_store, setup, teardown),
    cmocka_unit_test_setup_teardown(test_refresh_races_publish, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
