/* Unit tests for the local backend's pack files (blockstore/objects-local.c,
 * pack.c): dedup (nothing appended for content already stored), torn-tail
 * recovery after a writer dies (its unsynced records and a half-written
 * record are cut off; a pack with nothing committed goes), compaction by GC
 * (packs under half live are rewritten, a live writer's pack is left
 * alone), damage inside a pack (EIO, never wrong data), and stores with
 * loose objects from before packs (read, reused, swept).
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

#include "pack.h"
#include "store-internal.h"

#define CS 4096u
#define NCH 64u
#define DSIZE (NCH * CS)

#define STORE_FIXTURE_NAME "test_store_pack"
#include "store_fixture.h"

static void fill(uint8_t *p, size_t n, unsigned *seed)
{
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)(rand_r(seed) >> 7);
}

static void check_verify_clean(store_t *s)
{
  store_verify_result_t v;
  char *err = NULL;
  int r = store_verify(s, NULL, NULL, &v, &err);
  if (r != 0)
    fail_msg("verify: %d %s", r, err ? err : "");
}

/* ---- looking at the packs ---- */

struct packs_info {
  int n;                       /* pack files */
  uint64_t bytes;              /* their total size */
  uint64_t sizes[64];
  uint64_t ids[64];
};

static void packs_list(struct fixture *f, struct packs_info *pi)
{
  char path[200];
  memset(pi, 0, sizeof *pi);
  snprintf(path, sizeof path, "%s/objects/packs", f->store);
  DIR *d = opendir(path);
  assert_non_null(d);
  struct dirent *de;
  while ((de = readdir(d))) {
    size_t l = strlen(de->d_name);
    if (l != 21 || strcmp(de->d_name + 16, ".pack") != 0)
      continue;
    struct stat st;
    char p[300];
    snprintf(p, sizeof p, "%s/%s", path, de->d_name);
    assert_int_equal(stat(p, &st), 0);
    assert_true(pi->n < 64);
    pi->sizes[pi->n] = (uint64_t)st.st_size;
    pi->ids[pi->n] = strtoull(de->d_name, NULL, 16);
    pi->n++;
    pi->bytes += (uint64_t)st.st_size;
  }
  closedir(d);
}

static int64_t index_int(struct fixture *f, const char *sql)
{
  char path[200];
  sqlite3 *db;
  sqlite3_stmt *st;
  snprintf(path, sizeof path, "%s/objects/index.db", f->store);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

static void index_exec(struct fixture *f, const char *sql)
{
  char path[200];
  sqlite3 *db;
  snprintf(path, sizeof path, "%s/objects/index.db", f->store);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
    fail_msg("%s: %s", sql, sqlite3_errmsg(db));
  sqlite3_close(db);
}

static void age_objects(struct fixture *f, time_t age)
{
  char sql[128];
  snprintf(sql, sizeof sql, "UPDATE objects SET t=%lld",
           (long long)(time(NULL) - age) * 1000000000);
  index_exec(f, sql);
}

static store_gc_result_t gc_now(store_t *s)
{
  store_gc_result_t g;
  char *err = NULL;
  store_gc_opts_t o = { .grace_s = 0 };
  if (store_gc(s, &o, &g, &err) < 0)
    fail_msg("gc: %s", err);
  return g;
}

static void chunk_id(const void *buf, size_t len, store_id_t *id)
{
  unsigned int n = sizeof id->b;
  EVP_Digest(buf, len, id->b, &n, EVP_sha256(), NULL);
}

/* ---- tests ---- */

/* Identical content is stored once: across chunks of one image, across
 * images, and when a disk rewrites what is already there. */
static void test_pack_dedup(void **state)
{
  struct fixture *f = *state;
  uint8_t *img = malloc(DSIZE), a[CS], b[CS];
  unsigned seed = 3;
  char *err = NULL;
  fill(a, CS, &seed);
  fill(b, CS, &seed);
  for (unsigned i = 0; i < NCH; i++)
    memcpy(img + (size_t)i * CS, i % 2 ? a : b, CS);
  import_image(f, "two", img, DSIZE);
  assert_int_equal(index_int(f, "SELECT count(*) FROM objects WHERE "
                             "len=4096"), 2);
  struct packs_info p0, p1;
  packs_list(f, &p0);
  int64_t objs0 = index_int(f, "SELECT count(*) FROM objects");

  /* the same image again: no new chunk data, identical tree */
  import_image(f, "again", img, DSIZE);
  packs_list(f, &p1);
  assert_int_equal(index_int(f, "SELECT count(*) FROM objects"), objs0);
  assert_int_equal(p1.bytes, p0.bytes);

  /* a disk writing chunks that exist already appends nothing for them */
  assert_int_equal(store_disk_create(f->s, "d", "image/two", 0, &err), 0);
  store_disk_t *d = dopen(f->s, "disk/d", 0);
  for (unsigned i = 0; i < NCH; i++)
    dwrite(d, i % 2 ? b : a, CS, (uint64_t)i * CS);   /* swapped */
  dflush(d);
  store_disk_close(d);
  struct packs_info p2;
  packs_list(f, &p2);
  /* only new map pages (a few hundred bytes each) were appended */
  assert_true(p2.bytes - p1.bytes < 2 * CS);
  assert_int_equal(index_int(f, "SELECT count(*) FROM objects WHERE "
                             "len=4096"), 2);
  /* live bytes are exact: every indexed byte is counted once */
  assert_int_equal(index_int(f, "SELECT sum(live) FROM packs"),
                   index_int(f, "SELECT sum(len) FROM objects"));
  for (unsigned i = 0; i < NCH; i++)
    memcpy(img + (size_t)i * CS, i % 2 ? b : a, CS);
  check_ref(f->s, "disk/d", img);
  check_verify_clean(f->s);
  free(img);
}

/* A writer killed with unsynced records (and a torn last record) leaves
 * bytes beyond its pack's committed end: the next open cuts them off; a
 * pack of which nothing was committed is removed.  Data and the index stay
 * exactly the committed state. */
static void test_pack_torn_tail(void **state)
{
  struct fixture *f = *state;
  uint8_t *img = malloc(DSIZE), *m = malloc(DSIZE);
  unsigned seed = 7;
  char *err = NULL;
  fill(img, DSIZE, &seed);
  import_image(f, "base", img, DSIZE);
  assert_int_equal(store_disk_create(f->s, "d", "image/base", 0, &err), 0);
  memcpy(m, img, DSIZE);
  store_close(f->s);
  f->s = NULL;

  struct packs_info before;
  packs_list(f, &before);
  int64_t committed0 = index_int(f, "SELECT sum(committed) FROM packs");
  assert_int_equal((int64_t)before.bytes, committed0);

  /* child 1: commits some writes, then spills more and dies (no close) */
  pid_t pid = fork();
  if (pid == 0) {
    store_t *s;
    store_disk_t *d;
    uint8_t buf[4 * CS];
    unsigned cs = 99;
    if (store_open(f->store, 0, &s, NULL) < 0 ||
        store_disk_open(s, "disk/d", &(store_disk_opts_t){ .dirty_limit = CS },
                        &d, NULL) < 0)
      _exit(1);
    memset(buf, 0x44, sizeof buf);
    if (store_disk_write(d, buf, sizeof buf, 0, NULL) < 0 ||
        store_disk_flush(d, NULL) < 0)
      _exit(2);
    fill(buf, sizeof buf, &cs);
    for (int i = 0; i < 8; i++)   /* spilled: appended, never synced */
      if (store_disk_write(d, buf, sizeof buf, (uint64_t)(8 + 4 * i) * CS,
                           NULL) < 0)
        _exit(3);
    _exit(0);                      /* as if killed: nothing closed */
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  memset(m, 0x44, 4 * CS);

  /* child 2: spills without ever committing anything, dies */
  pid = fork();
  if (pid == 0) {
    store_t *s;
    store_disk_t *d;
    uint8_t buf[4 * CS];
    unsigned cs = 5;
    if (store_open(f->store, 0, &s, NULL) < 0 ||
        store_disk_open(s, "disk/d", &(store_disk_opts_t){ .dirty_limit = CS },
                        &d, NULL) < 0)
      _exit(1);
    fill(buf, sizeof buf, &cs);
    if (store_disk_write(d, buf, sizeof buf, 40 * CS, NULL) < 0)
      _exit(3);
    _exit(0);
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  struct packs_info mid;
  packs_list(f, &mid);
  assert_int_equal(mid.n, before.n + 2);     /* both writers' packs */
  int64_t committed1 = index_int(f, "SELECT sum(committed) FROM packs");
  assert_true((int64_t)mid.bytes > committed1);
  /* and a torn record at the end of one: a header, half the data */
  uint64_t torn_pack = 0;
  for (int i = 0; i < mid.n; i++) {
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM packs WHERE id=%llu",
             (unsigned long long)mid.ids[i]);
    if (index_int(f, sql) == 1 && mid.ids[i] != before.ids[0])
      torn_pack = mid.ids[i];
  }
  assert_true(torn_pack != 0);
  char path[300];
  snprintf(path, sizeof path, "%s/objects/packs/%016llx.pack", f->store,
           (unsigned long long)torn_pack);
  uint8_t hdr[PACK_REC_HDR], junk[CS / 2];
  store_id_t jid;
  memset(junk, 0x77, sizeof junk);
  chunk_id(junk, sizeof junk, &jid);
  pack_record_header(hdr, &jid, CS);
  int fd = open(path, O_WRONLY | O_APPEND);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, hdr, sizeof hdr), (ssize_t)sizeof hdr);
  assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
  close(fd);

  /* a scan of the torn pack stops before the torn record */
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  fd = open(path, O_RDONLY);
  uint64_t end = 0;
  assert_int_equal(pack_scan(fd, (uint64_t)st.st_size, NULL, NULL, &end), 0);
  close(fd);
  assert_int_equal(end, (uint64_t)st.st_size - sizeof hdr - sizeof junk);

  /* reopen: every pack is cut back to its committed end, the orphan goes */
  assert_int_equal(store_open(f->store, 0, &f->s, &err), 0);
  struct packs_info after;
  packs_list(f, &after);
  assert_int_equal(after.n, before.n + 1);
  assert_int_equal((int64_t)after.bytes,
                   index_int(f, "SELECT sum(committed) FROM packs"));
  for (int i = 0; i < after.n; i++) {
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT committed FROM packs WHERE id=%llu",
             (unsigned long long)after.ids[i]);
    assert_int_equal((int64_t)after.sizes[i], index_int(f, sql));
  }
  check_ref(f->s, "disk/d", m);
  check_verify_clean(f->s);

  /* and the store keeps working: write, flush, reopen, read */
  store_disk_t *d = dopen(f->s, "disk/d", 0);
  fill(m + 50 * CS, 4 * CS, &seed);
  dwrite(d, m + 50 * CS, 4 * CS, 50 * CS);
  dflush(d);
  store_disk_close(d);
  store_close(f->s);
  assert_int_equal(store_open(f->store, 0, &f->s, &err), 0);
  check_ref(f->s, "disk/d", m);
  check_verify_clean(f->s);
  free(img);
  free(m);
}

/* GC compacts packs that are mostly garbage, keeps every live object
 * readable through the move, and leaves a live writer's pack alone. */
static void test_pack_compaction(void **state)
{
  struct fixture *f = *state;
  uint8_t *img = malloc(DSIZE), *m = malloc(DSIZE);
  unsigned seed = 11;
  char *err = NULL;
  fill(img, DSIZE, &seed);
  import_image(f, "base", img, DSIZE);
  assert_int_equal(store_disk_create(f->s, "d", "image/base", 0, &err), 0);
  memcpy(m, img, DSIZE);
  /* a new handle (as a new process would): a pack of its own */
  store_close(f->s);
  assert_int_equal(store_open(f->store, 0, &f->s, &err), 0);
  /* overwrite 3/4 of the disk and drop the image: its pack is then 1/4
   * live */
  store_disk_t *d = dopen(f->s, "disk/d", 0);
  fill(m, 3 * DSIZE / 4, &seed);
  dwrite(d, m, 3 * DSIZE / 4, 0);
  dflush(d);
  store_disk_close(d);
  assert_int_equal(store_ref_delete(f->s, "image/base", &err), 0);

  struct packs_info p0, p1;
  packs_list(f, &p0);
  assert_int_equal(p0.n, 2);

  /* a live writer elsewhere: spilled, unsynced records in its pack */
  store_t *s2;
  assert_int_equal(store_open(f->store, 0, &s2, &err), 0);
  store_disk_t *w = dopen(s2, "disk/d", CS);
  uint8_t late[4 * CS];
  fill(late, sizeof late, &seed);
  dwrite(w, late, sizeof late, 60 * CS);

  age_objects(f, 3600);
  store_gc_result_t g = gc_now(f->s);
  assert_true(g.deleted_objects >= 3 * NCH / 4);
  packs_list(f, &p1);
  /* the import's pack was rewritten: what is left is about a quarter */
  assert_true(p1.bytes < p0.bytes - (uint64_t)(NCH / 2) * CS);
  check_ref(f->s, "disk/d", m);
  check_verify_clean(f->s);
  assert_int_equal(index_int(f, "SELECT sum(live) FROM packs"),
                   index_int(f, "SELECT sum(len) FROM objects"));
  assert_int_equal(index_int(f, "SELECT count(*) FROM objects WHERE pack "
                             "NOT IN (SELECT id FROM packs)"), 0);

  /* the live writer's records survived: its flush commits them */
  dflush(w);
  store_disk_close(w);
  store_close(s2);
  memcpy(m + 60 * CS, late, sizeof late);
  check_ref(f->s, "disk/d", m);
  check_verify_clean(f->s);

  /* everything garbage: GC removes whole packs */
  assert_int_equal(store_disk_delete(f->s, "d", &err), 1);
  age_objects(f, 3600);
  gc_now(f->s);
  struct packs_info p2;
  packs_list(f, &p2);
  assert_int_equal(p2.n, 0);
  assert_int_equal(index_int(f, "SELECT count(*) FROM objects"), 0);
  free(img);
  free(m);
}

/* Damage inside a pack — a record's data, its header, or the file cut
 * short — is EIO with a message, never other data. */
static void test_pack_damage_eio(void **state)
{
  struct fixture *f = *state;
  uint8_t *img = malloc(DSIZE), got[CS];
  unsigned seed = 13;
  char *err = NULL, *path = NULL;
  uint64_t off, len;
  fill(img, DSIZE, &seed);
  import_image(f, "base", img, DSIZE);
  store_disk_t *d = dopen(f->s, "image/base", 0);
  const struct { unsigned chunk; int64_t where; const char *msg; } cases[] = {
    { 3, 100, "corrupt" },                       /* data byte */
    { 9, -(int64_t)PACK_REC_HDR + 2, "corrupt" },         /* header magic */
    { 17, -(int64_t)PACK_REC_HDR + 12, "corrupt" },       /* header id (CRC) */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    store_id_t id;
    chunk_id(img + (size_t)cases[i].chunk * CS, CS, &id);
    assert_int_equal(store_object_locate(f->s, &id, &path, &off, &len, &err),
                     0);
    assert_int_equal(len, CS);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    off_t at = (off_t)((int64_t)off + cases[i].where);
    assert_int_equal(pread(fd, &b, 1, at), 1);
    b ^= 0xff;
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    close(fd);
    free(path);
    path = NULL;
    assert_int_equal(store_disk_read(d, got, CS,
                                     (uint64_t)cases[i].chunk * CS, &err),
                     -EIO);
    assert_non_null(strstr(err, cases[i].msg));
    free(err);
    err = NULL;
    /* neighbours are fine */
    assert_int_equal(store_disk_read(d, got, CS,
                                     (uint64_t)(cases[i].chunk + 1) * CS,
                                     &err), 0);
    assert_memory_equal(got, img + (size_t)(cases[i].chunk + 1) * CS, CS);
  }
  store_verify_result_t v;
  assert_int_equal(store_verify(f->s, NULL, NULL, &v, &err), 3);

  /* the pack cut short in the middle of the last chunk's record */
  store_id_t last;
  chunk_id(img + (size_t)(NCH - 1) * CS, CS, &last);
  assert_int_equal(store_object_locate(f->s, &last, &path, &off, &len, &err),
                   0);
  assert_int_equal(truncate(path, (off_t)(off + CS / 2)), 0);
  free(path);
  store_disk_close(d);
  d = dopen(f->s, "image/base", 0);
  assert_int_equal(store_disk_read(d, got, CS, (uint64_t)(NCH - 1) * CS,
                                   &err), -EIO);
  assert_non_null(strstr(err, "corrupt"));
  free(err);
  store_disk_close(d);
  free(img);
}

/* A store from before packs: loose objects are read, reused by writers
 * (nothing appended for them), verified and swept by GC. */
static void test_pack_loose_legacy(void **state)
{
  struct fixture *f = *state;
  uint8_t *img = malloc(DSIZE), *m = malloc(DSIZE);
  unsigned seed = 17;
  char *err = NULL;
  fill(img, DSIZE, &seed);
  import_image(f, "base", img, DSIZE);
  store_close(f->s);
  f->s = NULL;

  /* turn every indexed object into a loose file, as an old store had */
  char path[300], sql[64];
  for (unsigned d = 0; d < 256; d++) {
    snprintf(path, sizeof path, "%s/objects/%02x", f->store, d);
    assert_int_equal(mkdir(path, 0755), 0);
  }
  char ipath[200];
  sqlite3 *db;
  sqlite3_stmt *st;
  snprintf(ipath, sizeof ipath, "%s/objects/index.db", f->store);
  assert_int_equal(sqlite3_open(ipath, &db), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, "SELECT id, pack, off, len FROM "
                                      "objects", -1, &st, NULL), SQLITE_OK);
  int nloose = 0;
  uint8_t *buf = malloc(1 << 16);
  while (sqlite3_step(st) == SQLITE_ROW) {
    store_id_t id;
    char hex[STORE_ID_HEX_LEN + 1], pp[300];
    memcpy(id.b, sqlite3_column_blob(st, 0), STORE_ID_LEN);
    store_id_to_hex(&id, hex);
    snprintf(pp, sizeof pp, "%s/objects/packs/%016llx.pack", f->store,
             (unsigned long long)sqlite3_column_int64(st, 1));
    int len = sqlite3_column_int(st, 3);
    int fd = open(pp, O_RDONLY);
    assert_int_equal(pread(fd, buf, (size_t)len,
                           (off_t)sqlite3_column_int64(st, 2)), len);
    close(fd);
    snprintf(path, sizeof path, "%s/objects/%.2s/%s", f->store, hex, hex + 2);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0444);
    assert_int_equal(write(fd, buf, (size_t)len), len);
    close(fd);
    nloose++;
  }
  sqlite3_finalize(st);
  assert_int_equal(sqlite3_exec(db, "DELETE FROM objects; DELETE FROM packs",
                                NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  free(buf);
  snprintf(sql, sizeof sql, "%s/objects/packs", f->store);
  DIR *dir = opendir(sql);
  struct dirent *de;
  while ((de = readdir(dir)))
    if (de->d_name[0] != '.') {
      snprintf(path, sizeof path, "%s/%s", sql, de->d_name);
      unlink(path);
    }
  closedir(dir);

  assert_int_equal(store_open(f->store, 0, &f->s, &err), 0);
  check_ref(f->s, "image/base", img);
  check_verify_clean(f->s);
  store_stats_t sst;
  assert_int_equal(store_stats(f->s, &sst, &err), 0);
  assert_int_equal(sst.objects, (uint64_t)nloose);

  /* a disk rewriting existing content reuses the loose objects */
  assert_int_equal(store_disk_create(f->s, "d", "image/base", 0, &err), 0);
  store_disk_t *d = dopen(f->s, "disk/d", 0);
  memcpy(m, img, DSIZE);
  memcpy(m, img + 8 * CS, 8 * CS);       /* chunks 0..7 := 8..15 */
  dwrite(d, m, 8 * CS, 0);
  fill(m + 32 * CS, CS, &seed);           /* and one new chunk */
  dwrite(d, m + 32 * CS, CS, 32 * CS);
  dflush(d);
  store_disk_close(d);
  assert_int_equal(index_int(f, "SELECT count(*) FROM objects WHERE len=4096"),
                   1);
  check_ref(f->s, "disk/d", m);

  /* GC sweeps loose garbage (old chunks 0..7 of the image) */
  assert_int_equal(store_ref_delete(f->s, "image/base", &err), 0);
  age_objects(f, 3600);
  snprintf(path, sizeof path, "%s/objects", f->store);
  {
    /* loose files: mtime an hour back */
    struct timespec ts[2] = { { time(NULL) - 3600, 0 },
                              { time(NULL) - 3600, 0 } };
    for (unsigned dd = 0; dd < 256; dd++) {
      char dp[300];
      snprintf(dp, sizeof dp, "%s/%02x", path, dd);
      DIR *x = opendir(dp);
      while (x && (de = readdir(x)))
        if (de->d_name[0] != '.') {
          char fp[400];
          snprintf(fp, sizeof fp, "%s/%s", dp, de->d_name);
          utimensat(AT_FDCWD, fp, ts, 0);
        }
      if (x)
        closedir(x);
    }
  }
  store_gc_result_t g = gc_now(f->s);
  assert_true(g.deleted_objects >= 8);
  check_ref(f->s, "disk/d", m);
  check_verify_clean(f->s);
  assert_int_equal(store_stats(f->s, &sst, &err), 0);
  assert_int_equal(sst.garbage_objects, 0);
  free(img);
  free(m);
}

/* Reusing an indexed object refreshes its time once per commit interval;
 * the next interval must refresh it again, or a GC could collect an object
 * the writer is about to commit. */
static void test_pack_reuse_refresh(void **state)
{
  struct fixture *f = *state;
  uint8_t *img = calloc(1, DSIZE), a[CS], b[CS];
  unsigned seed = 23;
  char *err = NULL;
  fill(a, CS, &seed);
  fill(b, CS, &seed);
  memcpy(img, a, CS);
  import_image(f, "base", img, DSIZE);
  assert_int_equal(store_disk_create(f->s, "d", "image/base", 0, &err), 0);
  store_close(f->s);
  assert_int_equal(store_open(f->store, 0, &f->s, &err), 0);

  /* interval 1: A reused twice (the second time without SQLite); a
   * dirty limit of one chunk makes every two-chunk write spill at once */
  store_disk_t *w = dopen(f->s, "disk/d", CS);
  uint8_t two[2 * CS];
  memcpy(two, a, CS);
  memcpy(two + CS, a, CS);
  dwrite(w, two, 2 * CS, 3 * CS);
  dflush(w);
  /* A becomes garbage, and old */
  dwrite(w, b, CS, 0);
  dwrite(w, b, CS, 3 * CS);
  dwrite(w, b, CS, 4 * CS);
  dflush(w);
  assert_int_equal(store_ref_delete(f->s, "image/base", &err), 0);
  age_objects(f, 3600);

  /* interval 2: the same writer reuses A again (spilled: its pending
   * session is open), a GC runs, then the commit */
  memcpy(two + CS, b, CS);
  dwrite(w, two, 2 * CS, 5 * CS);
  store_t *s2;
  assert_int_equal(store_open(f->store, 0, &s2, &err), 0);
  store_gc_result_t g = gc_now(s2);
  assert_int_equal(g.live_writers, 1);
  dflush(w);
  store_disk_close(w);
  check_verify_clean(s2);
  memcpy(img, b, CS);
  memcpy(img + 3 * CS, b, CS);
  memcpy(img + 4 * CS, b, CS);
  memcpy(img + 5 * CS, a, CS);
  memcpy(img + 6 * CS, b, CS);
  check_ref(s2, "disk/d", img);
  store_close(s2);
  free(img);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_pack_dedup, setup, teardown),
    cmocka_unit_test_setup_teardown(test_pack_torn_tail, setup, teardown),
    cmocka_unit_test_setup_teardown(test_pack_compaction, setup, teardown),
    cmocka_unit_test_setup_teardown(test_pack_damage_eio, setup, teardown),
    cmocka_unit_test_setup_teardown(test_pack_loose_legacy, setup, teardown),
    cmocka_unit_test_setup_teardown(test_pack_reuse_refresh, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
