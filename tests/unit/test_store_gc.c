/* Unit tests for the block store's snapshots, GC, verify, stats and usage
 * (blockstore/store.h, gc.c).  Real stores in temp directories, small
 * chunks (4 KiB) and fanout 4 so trees have several levels.
 *
 * The GC property checked everywhere: after a GC every ref still reads back
 * exactly as its shadow model, `verify` finds nothing missing, and the
 * object files left are exactly the reachable ones (stats: unique chunks +
 * pages == objects, garbage == 0).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <sqlite3.h>

#include "store-internal.h"

#define CS 4096u
#define NCH 48u                  /* chunks per disk */
#define DSIZE (NCH * CS)

#define STORE_FIXTURE_NAME "test_store_gc"
#include "store_fixture.h"

/* Set the mtime of every file under dir to t. */
static time_t g_backdate_to;
static int backdate_cb(const char *path, const struct stat *sb, int flag,
                       struct FTW *ftw)
{
  if (flag == FTW_F) {
    struct timespec ts[2] = { { g_backdate_to, 0 }, { g_backdate_to, 0 } };
    utimensat(AT_FDCWD, path, ts, 0);
  }
  return 0;
}

static void backdate(const char *dir, time_t t)
{
  g_backdate_to = t;
  nftw(dir, backdate_cb, 16, FTW_PHYS);
}

/* Run SQL on the store's object index (objects/index.db). */
static void index_sql(const char *store, const char *sql)
{
  char path[200];
  sqlite3 *db;
  snprintf(path, sizeof path, "%s/objects/index.db", store);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
    fail_msg("%s: %s", sql, sqlite3_errmsg(db));
  sqlite3_close(db);
}

/* Objects (pack index rows and loose files) under STORE/objects get time
 * t, as if last stored or reused then. */
static void backdate_objects(const char *store, time_t t)
{
  char dir[200], sql[128];
  snprintf(dir, sizeof dir, "%s/objects", store);
  backdate(dir, t);
  snprintf(sql, sizeof sql, "UPDATE objects SET t=%lld",
           (long long)t * 1000000000);
  index_sql(store, sql);
}

static int object_exists(store_t *s, const store_id_t *id)
{
  char *path = NULL, *err = NULL;
  uint64_t off, len;
  int r = store_object_locate(s, id, &path, &off, &len, &err);
  free(path);
  free(err);
  return r == 0;
}

/* Flip one byte of object id's data (offset off) where it is stored. */
static void object_corrupt(store_t *s, const store_id_t *id, uint64_t off)
{
  char *path = NULL, *err = NULL;
  uint64_t pos, len;
  uint8_t b;
  assert_int_equal(store_object_locate(s, id, &path, &pos, &len, &err), 0);
  int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  assert_int_equal(pread(fd, &b, 1, (off_t)(pos + off)), 1);
  b ^= 0x5a;
  assert_int_equal(pwrite(fd, &b, 1, (off_t)(pos + off)), 1);
  close(fd);
  free(path);
}

static store_gc_result_t gc(store_t *s, int64_t grace)
{
  store_gc_result_t g;
  char *err = NULL;
  store_gc_opts_t o = { .grace_s = grace };
  int r = store_gc(s, &o, &g, &err);
  if (r < 0)
    fail_msg("gc: %s", err);
  return g;
}

/* GC as if every object were `age` seconds old (time passing), so that
 * fresh garbage is not protected by the clock margin. */
static store_gc_result_t gc_aged(struct fixture *f, store_t *s, int64_t grace,
                                 time_t age)
{
  backdate_objects(f->store, time(NULL) - age);
  return gc(s, grace);
}

/* After a GC: nothing reachable is missing, nothing unreachable is left. */
static void check_exact(store_t *s)
{
  store_stats_t st;
  store_verify_result_t v;
  char *err = NULL;
  assert_int_equal(store_verify(s, NULL, NULL, &v, &err), 0);
  assert_int_equal(store_stats(s, &st, &err), 0);
  assert_int_equal(st.garbage_objects, 0);
  assert_int_equal(st.objects, st.unique_chunks + st.pages);
}

static void fill(uint8_t *p, size_t n, unsigned *seed)
{
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)(rand_r(seed) >> 5);
}

/* ---- tests ---- */

/* Snapshot = O(1) ref with parent chain; restore brings the state back;
 * writes after restore never alter the snapshot; a writer that still held
 * the disk across a restore fails its commit (ESTALE). */
static void test_snapshot_restore(void **state)
{
  struct fixture *f = *state;
  uint8_t *img = calloc(1, DSIZE), *m1 = malloc(DSIZE), *m2 = malloc(DSIZE);
  unsigned seed = 7;
  char *err = NULL;
  fill(img, DSIZE / 2, &seed);
  import_image(f, "base", img, DSIZE);
  assert_int_equal(store_disk_create(f->s, "d", "image/base", 0, &err), 0);

  store_disk_t *d = dopen(f->s, "disk/d", 0);
  memcpy(m1, img, DSIZE);
  fill(m1 + 5 * CS, 3 * CS, &seed);
  dwrite(d, m1 + 5 * CS, 3 * CS, 5 * CS);
  dflush(d);
  assert_int_equal(store_snapshot_create(f->s, "d", "s1", &err), 0);
  assert_int_equal(store_snapshot_create(f->s, "d", "s1", &err), -EEXIST);
  free(err);
  err = NULL;
  memcpy(m2, m1, DSIZE);
  fill(m2 + 20 * CS, 2 * CS + 7, &seed);
  dwrite(d, m2 + 20 * CS, 2 * CS + 7, 20 * CS);
  dflush(d);          /* the live writer commits after a snapshot: fine */
  assert_int_equal(store_snapshot_create(f->s, "d", "s2", &err), 0);

  store_ref_t r1, r2, rd;
  assert_int_equal(store_ref_get(f->s, "snap/d/s1", &r1, &err), 0);
  assert_int_equal(store_ref_get(f->s, "snap/d/s2", &r2, &err), 0);
  assert_int_equal(store_ref_get(f->s, "disk/d", &rd, &err), 0);
  assert_string_equal(r1.parent, "image/base");
  assert_string_equal(r2.parent, "snap/d/s1");
  assert_string_equal(rd.parent, "snap/d/s2");
  check_ref(f->s, "snap/d/s1", m1);
  check_ref(f->s, "snap/d/s2", m2);

  /* restore while the writer is open: its next commit must fail */
  assert_int_equal(store_snapshot_restore(f->s, "d", "s1", &err), 0);
  dwrite(d, m2, CS, 0);
  assert_int_equal(store_disk_flush(d, &err), -ESTALE);
  free(err);
  err = NULL;
  store_disk_close(d);
  check_ref(f->s, "disk/d", m1);
  assert_int_equal(store_ref_get(f->s, "disk/d", &rd, &err), 0);
  assert_string_equal(rd.parent, "snap/d/s1");

  /* writes after the restore do not touch the snapshot */
  d = dopen(f->s, "disk/d", 0);
  uint8_t pat[CS];
  memset(pat, 0x5a, CS);
  dwrite(d, pat, CS, 6 * CS);
  dflush(d);
  store_disk_close(d);
  check_ref(f->s, "snap/d/s1", m1);

  /* deleting s1 re-parents s2 and the disk onto image/base */
  assert_int_equal(store_snapshot_delete(f->s, "d", "s1", &err), 0);
  assert_int_equal(store_ref_get(f->s, "snap/d/s2", &r2, &err), 0);
  assert_string_equal(r2.parent, "image/base");
  assert_int_equal(store_snapshot_delete(f->s, "d", "s1", &err), -ENOENT);
  free(err);
  err = NULL;

  /* fork from s2, then delete d with its snapshots: the fork survives */
  assert_int_equal(store_disk_create(f->s, "fork", "snap/d/s2", 0, &err), 0);
  assert_int_equal(store_disk_delete(f->s, "d", &err), 2);
  assert_int_equal(store_ref_get(f->s, "snap/d/s2", &r2, &err), -ENOENT);
  free(err);
  gc_aged(f, f->s, 0, 10);
  check_ref(f->s, "disk/fork", m2);
  check_exact(f->s);
  free(img);
  free(m1);
  free(m2);
}

/* GC deletes exactly what a deleted snapshot alone referenced. */
static void test_gc_frees_exactly(void **state)
{
  struct fixture *f = *state;
  uint8_t *img = calloc(1, DSIZE), *m = malloc(DSIZE);
  unsigned seed = 11;
  char *err = NULL;
  fill(img, DSIZE, &seed);
  import_image(f, "base", img, DSIZE);
  assert_int_equal(store_disk_create(f->s, "d", "image/base", 0, &err), 0);
  store_gc_result_t g = gc_aged(f, f->s, 0, 10);
  assert_int_equal(g.deleted_objects, 0);
  check_exact(f->s);

  /* s1 holds chunk 3 = A; the disk then overwrites it with B */
  uint8_t a[CS], b[CS];
  memset(a, 0xa1, CS);
  memset(b, 0xb2, CS);
  store_disk_t *d = dopen(f->s, "disk/d", 0);
  dwrite(d, a, CS, 3 * CS);
  dflush(d);
  assert_int_equal(store_snapshot_create(f->s, "d", "s1", &err), 0);
  dwrite(d, b, CS, 3 * CS);
  dflush(d);
  store_disk_close(d);

  /* unique bytes: s1 alone holds chunk A (plus its own pages) */
  store_stats_t before;
  assert_int_equal(store_stats(f->s, &before, &err), 0);
  g = gc_aged(f, f->s, 0, 10);
  assert_int_equal(g.deleted_objects, 0);   /* every generation has a ref */
  check_exact(f->s);
  store_id_t aid;
  unsigned int n = sizeof aid.b;
  EVP_Digest(a, CS, aid.b, &n, EVP_sha256(), NULL);
  assert_true(object_exists(f->s, &aid));     /* still in s1 */

  assert_int_equal(store_snapshot_delete(f->s, "d", "s1", &err), 0);
  g = gc_aged(f, f->s, 0, 10);
  assert_true(g.deleted_objects >= 1);
  assert_false(object_exists(f->s, &aid));    /* now garbage, gone */
  check_exact(f->s);
  memcpy(m, img, DSIZE);
  memcpy(m + 3 * CS, b, CS);
  check_ref(f->s, "disk/d", m);
  check_ref(f->s, "image/base", img);

  /* the grace period keeps young garbage */
  assert_int_equal(store_snapshot_create(f->s, "d", "s2", &err), 0);
  d = dopen(f->s, "disk/d", 0);
  dwrite(d, a, CS, 4 * CS);
  dflush(d);
  store_disk_close(d);
  assert_int_equal(store_snapshot_delete(f->s, "d", "s2", &err), 0);
  g = gc_aged(f, f->s, 3600, 120);
  assert_int_equal(g.deleted_objects, 0);
  assert_true(g.kept_recent > 0);
  g = gc_aged(f, f->s, 0, 10);
  assert_true(g.deleted_objects > 0);
  check_exact(f->s);
  free(img);
  free(m);
}

/* Random rounds of writes, snapshots, restores, forks and deletions over
 * several disks, each followed by a GC: every ref always reads back as its
 * model and the store holds exactly the reachable objects. */
#define MAXREFS 24
struct mref {
  char name[64];
  uint8_t *data;
};

static struct mref *mref_find(struct mref *t, const char *name)
{
  for (int i = 0; i < MAXREFS; i++)
    if (t[i].data && strcmp(t[i].name, name) == 0)
      return &t[i];
  return NULL;
}

static struct mref *mref_put(struct mref *t, const char *name,
                             const uint8_t *data)
{
  struct mref *m = mref_find(t, name);
  for (int i = 0; !m && i < MAXREFS; i++)
    if (!t[i].data) {
      m = &t[i];
      m->data = malloc(DSIZE);
    }
  assert_non_null(m);
  snprintf(m->name, sizeof m->name, "%s", name);
  memcpy(m->data, data, DSIZE);
  return m;
}

static void mref_del(struct mref *t, const char *name)
{
  struct mref *m = mref_find(t, name);
  if (m) {
    free(m->data);
    m->data = NULL;
  }
}

static void test_gc_random_rounds(void **state)
{
  struct fixture *f = *state;
  struct mref refs[MAXREFS];
  uint8_t *img = calloc(1, DSIZE), buf[3 * CS];
  unsigned seed = 2024;
  char *err = NULL, name[64], sname[64];
  memset(refs, 0, sizeof refs);
  fill(img, DSIZE, &seed);
  memcpy(img + 10 * CS, img, 4 * CS);    /* duplicate chunks: dedup */
  import_image(f, "base", img, DSIZE);
  mref_put(refs, "image/base", img);
  for (int k = 0; k < 3; k++) {
    snprintf(name, sizeof name, "d%d", k);
    assert_int_equal(store_disk_create(f->s, name, "image/base", 0, &err), 0);
    snprintf(name, sizeof name, "disk/d%d", k);
    mref_put(refs, name, img);
  }
  int nsnap = 0;
  for (int round = 0; round < 25; round++) {
    int k = rand_r(&seed) % 3;
    char disk[16];
    snprintf(disk, sizeof disk, "d%d", k);
    snprintf(name, sizeof name, "disk/d%d", k);
    struct mref *dm = mref_find(refs, name);
    if (!dm) {     /* re-create a deleted disk as a fork of the image */
      assert_int_equal(store_disk_create(f->s, disk, "image/base", 0, &err), 0);
      dm = mref_put(refs, name, img);
    }
    /* some writes (partial, spanning, zeroes, repeats of old content) */
    store_disk_t *d = dopen(f->s, name, 2 * CS);
    for (int w = 0; w < 6; w++) {
      size_t len = 1 + (size_t)rand_r(&seed) % sizeof buf;
      uint64_t off = (uint64_t)rand_r(&seed) % (DSIZE - len);
      int how = rand_r(&seed) % 4;
      if (how == 0)
        memset(buf, 0, len);
      else if (how == 1)
        memcpy(buf, img + off, len);
      else
        fill(buf, len, &seed);
      dwrite(d, buf, len, off);
      memcpy(dm->data + off, buf, len);
    }
    dflush(d);
    store_disk_close(d);
    int op = rand_r(&seed) % 5;
    if (op <= 1) {
      snprintf(sname, sizeof sname, "s%d", nsnap++);
      assert_int_equal(store_snapshot_create(f->s, disk, sname, &err), 0);
      snprintf(name, sizeof name, "snap/%s/%s", disk, sname);
      mref_put(refs, name, dm->data);
    } else if (op == 2 || op == 3) {
      /* delete or restore a random snapshot of this disk */
      for (int i = 0; i < MAXREFS; i++) {
        char pre[32];
        snprintf(pre, sizeof pre, "snap/%s/", disk);
        if (!refs[i].data || strncmp(refs[i].name, pre, strlen(pre)))
          continue;
        const char *sn = refs[i].name + strlen(pre);
        if (op == 2) {
          assert_int_equal(store_snapshot_delete(f->s, disk, sn, &err), 0);
          mref_del(refs, refs[i].name);
        } else {
          assert_int_equal(store_snapshot_restore(f->s, disk, sn, &err), 0);
          memcpy(dm->data, refs[i].data, DSIZE);
        }
        break;
      }
    } else if (rand_r(&seed) % 2) {
      assert_true(store_disk_delete(f->s, disk, &err) >= 1);
      for (int i = 0; i < MAXREFS; i++) {
        char pre[32];
        snprintf(pre, sizeof pre, "snap/%s/", disk);
        if (refs[i].data && (!strcmp(refs[i].name, dm->name) ||
                             !strncmp(refs[i].name, pre, strlen(pre)))) {
          free(refs[i].data);
          refs[i].data = NULL;
        }
      }
    }
    gc_aged(f, f->s, 0, 10);
    for (int i = 0; i < MAXREFS; i++)
      if (refs[i].data)
        check_ref(f->s, refs[i].name, refs[i].data);
    check_exact(f->s);
  }
  for (int i = 0; i < MAXREFS; i++)
    free(refs[i].data);
  free(img);
}

/* A live writer's spilled-but-uncommitted objects survive a GC run from
 * another handle even when they (and the writer's session) are old, and an
 * old garbage object the writer reuses survives too (mtime refresh). */
static void test_gc_spares_live_writer(void **state)
{
  struct fixture *f = *state;
  uint8_t *img = calloc(1, DSIZE), *m = malloc(DSIZE), a[CS];
  unsigned seed = 5;
  char *err = NULL, pdir[160];
  fill(img, DSIZE, &seed);
  import_image(f, "base", img, DSIZE);
  assert_int_equal(store_disk_create(f->s, "d", "image/base", 0, &err), 0);
  snprintf(pdir, sizeof pdir, "%s/pending", f->store);

  /* garbage object A (old) */
  memset(a, 0x3c, CS);
  store_disk_t *d = dopen(f->s, "disk/d", 0);
  dwrite(d, a, CS, 0);
  dflush(d);
  assert_int_equal(store_snapshot_create(f->s, "d", "old", &err), 0);
  dwrite(d, img, CS, 0);
  dflush(d);
  store_disk_close(d);
  assert_int_equal(store_snapshot_delete(f->s, "d", "old", &err), 0);
  backdate_objects(f->store, time(NULL) - 7200);

  /* the writer (handle 1): reuses A, spills random chunks, no flush */
  d = dopen(f->s, "disk/d", CS);
  memcpy(m, img, DSIZE);
  dwrite(d, a, CS, 7 * CS);
  memcpy(m + 7 * CS, a, CS);
  fill(m + 20 * CS, 8 * CS, &seed);
  dwrite(d, m + 20 * CS, 8 * CS, 20 * CS);   /* > dirty limit: spilled */
  /* pretend it all happened an hour ago (writer idle since), except that
   * the refresh of A happened now */
  time_t hour_ago = time(NULL) - 3600;
  store_id_t aid;
  unsigned int n = sizeof aid.b;
  EVP_Digest(a, CS, aid.b, &n, EVP_sha256(), NULL);
  char hex[STORE_ID_HEX_LEN + 1], sql[256];
  store_id_to_hex(&aid, hex);
  snprintf(sql, sizeof sql, "CREATE TABLE keep AS SELECT id, t FROM objects "
           "WHERE id=x'%s'", hex);
  index_sql(f->store, sql);
  backdate_objects(f->store, hour_ago);
  backdate(pdir, hour_ago);
  index_sql(f->store, "UPDATE objects SET t=(SELECT t FROM keep WHERE "
            "keep.id=objects.id) WHERE id IN (SELECT id FROM keep);"
            "DROP TABLE keep");

  /* GC from a second handle, no grace */
  store_t *s2;
  assert_int_equal(store_open(f->store, 0, &s2, &err), 0);
  store_gc_result_t g = gc(s2, 0);
  assert_int_equal(g.live_writers, 1);
  assert_true(object_exists(s2, &aid));
  dflush(d);
  store_disk_close(d);
  check_ref(s2, "disk/d", m);
  store_verify_result_t v;
  assert_int_equal(store_verify(s2, NULL, NULL, &v, &err), 0);
  /* the writer is idle now: its session no longer protects old objects */
  d = dopen(f->s, "disk/d", 0);
  dwrite(d, img + 7 * CS, CS, 7 * CS);
  dflush(d);
  store_disk_close(d);
  backdate_objects(f->store, hour_ago);
  g = gc(s2, 0);
  assert_false(object_exists(s2, &aid));
  memcpy(m + 7 * CS, img + 7 * CS, CS);
  check_ref(s2, "disk/d", m);
  check_exact(s2);
  store_close(s2);
  free(img);
  free(m);
}

/* A pending file of a dead process is stale: GC removes it and it does
 * not hold garbage back. */
static void test_gc_stale_pending(void **state)
{
  struct fixture *f = *state;
  char path[256], *err = NULL;
  snprintf(path, sizeof path, "%s/pending", f->store);
  mkdir(path, 0755);
  pid_t pid = fork();
  if (pid == 0)
    _exit(0);
  waitpid(pid, NULL, 0);
  snprintf(path, sizeof path, "%s/pending/%ld-12345-00", f->store, (long)pid);
  int fd = open(path, O_WRONLY | O_CREAT, 0644);
  assert_true(fd >= 0);
  close(fd);
  struct timespec old[2] = { { 1000, 0 }, { 1000, 0 } };
  utimensat(AT_FDCWD, path, old, 0);
  store_gc_result_t g = gc_aged(f, f->s, 0, 10);
  assert_int_equal(g.stale_writers, 1);
  assert_int_equal(g.live_writers, 0);
  assert_int_equal(access(path, F_OK), -1);
  (void)err;
}

struct problems {
  int n;
  char text[2048];
};

static int collect_problem(const store_verify_problem_t *p, void *ud)
{
  struct problems *pr = ud;
  char hex[STORE_ID_HEX_LEN + 1];
  store_id_to_hex(&p->id, hex);
  size_t len = strlen(pr->text);
  snprintf(pr->text + len, sizeof pr->text - len, "%s:%.8s:%d:",
           p->is_page ? "page" : "chunk", hex, (int)p->kind);
  for (size_t i = 0; i < p->nrefs; i++) {
    len = strlen(pr->text);
    snprintf(pr->text + len, sizeof pr->text - len, "%s,", p->refs[i]);
  }
  len = strlen(pr->text);
  snprintf(pr->text + len, sizeof pr->text - len, ";");
  pr->n++;
  return 0;
}

/* verify finds a corrupt chunk (naming every ref that reaches it) and a
 * missing map page; GC refuses to run while a page is missing. */
static void test_verify_reports_refs(void **state)
{
  struct fixture *f = *state;
  uint8_t *img = calloc(1, DSIZE), a[CS];
  unsigned seed = 9;
  char *err = NULL, expect[512];
  fill(img, DSIZE, &seed);
  import_image(f, "base", img, DSIZE);
  assert_int_equal(store_disk_create(f->s, "d", "image/base", 0, &err), 0);
  assert_int_equal(store_disk_create(f->s, "e", "image/base", 0, &err), 0);
  memset(a, 0x42, CS);
  store_disk_t *d = dopen(f->s, "disk/e", 0);
  dwrite(d, a, CS, 0);
  dflush(d);
  store_disk_close(d);

  struct problems pr = { 0, "" };
  store_verify_result_t v;
  assert_int_equal(store_verify(f->s, collect_problem, &pr, &v, &err), 0);
  assert_int_equal(v.refs, 3);

  /* corrupt chunk 5 of the image (shared by all three refs) */
  store_id_t id;
  unsigned int n = sizeof id.b;
  EVP_Digest(img + 5 * CS, CS, id.b, &n, EVP_sha256(), NULL);
  object_corrupt(f->s, &id, 100);
  assert_int_equal(store_verify(f->s, collect_problem, &pr, &v, &err), 1);
  char hex[STORE_ID_HEX_LEN + 1];
  store_id_to_hex(&id, hex);
  snprintf(expect, sizeof expect, "chunk:%.8s:%d:disk/d,disk/e,image/base,;",
           hex, STORE_PROBLEM_CORRUPT);
  assert_string_equal(pr.text, expect);

  /* remove disk/e's root page: a missing page affecting only disk/e */
  store_ref_t re;
  assert_int_equal(store_ref_get(f->s, "disk/e", &re, &err), 0);
  char sql[256];
  store_id_to_hex(&re.root, hex);
  snprintf(sql, sizeof sql, "DELETE FROM objects WHERE id=x'%s'", hex);
  index_sql(f->store, sql);
  pr.n = 0;
  pr.text[0] = '\0';
  assert_int_equal(store_verify(f->s, collect_problem, &pr, &v, &err), 2);
  store_id_to_hex(&re.root, hex);
  snprintf(expect, sizeof expect, "page:%.8s:%d:disk/e,;", hex,
           STORE_PROBLEM_MISSING);
  assert_non_null(strstr(pr.text, expect));

  /* GC must not run on an incomplete mark */
  store_gc_opts_t o = { .grace_s = 0 };
  assert_int_equal(store_gc(f->s, &o, NULL, &err), -EIO);
  assert_non_null(strstr(err, "disk/e"));
  free(err);
  free(img);
}

struct usage_state {
  int n;
  store_ref_usage_t u[3];
};

static int usage_cb(const store_ref_usage_t *u, void *ud)
{
  struct usage_state *us = ud;
  if (us->n >= 3)
    us->n = 0;
  us->u[us->n++] = *u;
  return 0;
}

/* stats and usage on a known layout. */
static void test_stats_usage(void **state)
{
  struct fixture *f = *state;
  uint8_t *img = calloc(1, DSIZE), a[CS], b[CS];
  unsigned seed = 13;
  char *err = NULL;
  fill(img, 16 * CS, &seed);               /* 16 data chunks, rest zero */
  memcpy(img + 16 * CS, img, CS);          /* chunk 16 = chunk 0 */
  import_image(f, "base", img, DSIZE);
  assert_int_equal(store_disk_create(f->s, "d", "image/base", 0, &err), 0);
  memset(a, 0xa, CS);
  memset(b, 0xb, CS);
  store_disk_t *d = dopen(f->s, "disk/d", 0);
  dwrite(d, a, CS, 30 * CS);
  dwrite(d, b, CS, 31 * CS);
  dflush(d);
  store_disk_close(d);
  assert_int_equal(store_snapshot_create(f->s, "d", "s", &err), 0);
  d = dopen(f->s, "disk/d", 0);
  dwrite(d, b, CS, 30 * CS);               /* disk: b b; snapshot: a b */
  dflush(d);
  store_disk_close(d);
  gc_aged(f, f->s, 0, 10);

  store_stats_t st;
  assert_int_equal(store_stats(f->s, &st, &err), 0);
  assert_int_equal(st.refs, 3);
  assert_int_equal(st.virtual_bytes, 3 * DSIZE);
  /* image 17 non-zero slots, disk 19, snapshot 19 */
  assert_int_equal(st.logical_bytes, (17 + 19 + 19) * (uint64_t)CS);
  assert_int_equal(st.unique_chunks, 16 + 2);
  assert_int_equal(st.objects, st.unique_chunks + st.pages);
  double want = (double)(17 + 19 + 19) / 18.0;
  assert_true(st.dedup_ratio > want - 0.001 && st.dedup_ratio < want + 0.001);

  struct { const char *name; uint64_t chunks; int a_unique; } want_u[] = {
    { "disk/d", 17, 0 }, { "image/base", 16, 0 }, { "snap/d/s", 18, 1 },
  };
  struct usage_state cs = { 0 };
  assert_int_equal(store_usage(f->s, NULL, usage_cb, &cs, &err), 3);
  for (int i = 0; i < 3; i++) {
    assert_string_equal(cs.u[i].ref.name, want_u[i].name);
    assert_int_equal(cs.u[i].chunks, want_u[i].chunks);
  }
  /* the snapshot alone holds chunk a; the image alone holds nothing data-
   * wise (disk/d shares all but chunk 30/31 through its own leaf pages) */
  assert_true(cs.u[2].unique_bytes >= CS);
  assert_true(cs.u[2].unique_bytes < 2 * CS + 4 * 200);
  cs.n = 0;
  assert_int_equal(store_usage(f->s, "snap/d/", usage_cb, &cs, &err), 1);
  assert_string_equal(cs.u[0].ref.name, "snap/d/s");
  free(img);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_snapshot_restore, setup, teardown),
    cmocka_unit_test_setup_teardown(test_gc_frees_exactly, setup, teardown),
    cmocka_unit_test_setup_teardown(test_gc_random_rounds, setup, teardown),
    cmocka_unit_test_setup_teardown(test_gc_spares_live_writer, setup,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_gc_stale_pending, setup, teardown),
    cmocka_unit_test_setup_teardown(test_verify_reports_refs, setup, teardown),
    cmocka_unit_test_setup_teardown(test_stats_usage, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
