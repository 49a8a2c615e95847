/* Unit tests for the lanes block store (blockstore/store.h): refs, import,
 * disk engine I/O against a shadow model, persistence, sharing, growth,
 * corruption handling.  Every test uses a fresh store in a temp directory,
 * most with small chunks (4 KiB) and a tiny fanout (4) so that multi-level
 * map trees and page boundaries appear with small disks.
 */
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
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <sqlite3.h>

#include "store-internal.h"

#define CS 4096u

struct fixture {
  char dir[64];
  char store[96];
  store_t *s;
};

static int rm_cb(const char *path, const struct stat *sb, int flag,
                 struct FTW *ftw)
{
  return remove(path);
}

static int setup_params(void **state, uint32_t chunk, uint32_t fanout)
{
  struct fixture *f = calloc(1, sizeof *f);
  char *err = NULL;
  snprintf(f->dir, sizeof f->dir, "/tmp/test_store.XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->store, sizeof f->store, "%s/store", f->dir);
  store_params_t p = { chunk, fanout };
  assert_int_equal(store_create(f->store, &p, &err), 0);
  assert_int_equal(store_open(f->store, 0, &f->s, &err), 0);
  *state = f;
  return 0;
}

static int setup_small(void **state)
{
  return setup_params(state, CS, 4);
}

static int setup_default(void **state)
{
  return setup_params(state, 0, 0);
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  store_close(f->s);
  nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

static void fill_random(void *buf, size_t len, unsigned *seed)
{
  unsigned char *p = buf;
  for (size_t i = 0; i < len; i++)
    p[i] = (unsigned char)(rand_r(seed) >> 7);
}

static void write_file(const char *path, const void *buf, size_t len)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, buf, len), (ssize_t)len);
  close(fd);
}

/* Objects in the store (pack index rows and loose files). */
static int count_objects(struct fixture *f)
{
  store_stats_t st;
  char *err = NULL;
  assert_int_equal(store_stats(f->s, &st, &err), 0);
  return (int)st.objects;
}

static void chunk_id(const void *buf, size_t len, store_id_t *id)
{
  unsigned int n = sizeof id->b;
  EVP_Digest(buf, len, id->b, &n, EVP_sha256(), NULL);
}

/* Damage object id where it is stored: one byte of its data at off. */
static void object_corrupt(struct fixture *f, const store_id_t *id,
                           uint64_t off)
{
  char *path = NULL, *err = NULL;
  uint64_t pos, len;
  assert_int_equal(store_object_locate(f->s, id, &path, &pos, &len, &err), 0);
  assert_true(off < len);
  chmod(path, 0644);
  int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  uint8_t b;
  assert_int_equal(pread(fd, &b, 1, (off_t)(pos + off)), 1);
  b ^= 0x5a;
  assert_int_equal(pwrite(fd, &b, 1, (off_t)(pos + off)), 1);
  close(fd);
  free(path);
}

/* Lose object id (its index row), as if it had never been stored. */
static void object_forget(struct fixture *f, const store_id_t *id)
{
  char path[200], *sql, hex[STORE_ID_HEX_LEN + 1];
  sqlite3 *db;
  snprintf(path, sizeof path, "%s/objects/index.db", f->store);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  store_id_to_hex(id, hex);
  assert_true(asprintf(&sql, "DELETE FROM objects WHERE id=x'%s'", hex) > 0);
  assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_changes(db), 1);
  free(sql);
  sqlite3_close(db);
}

static store_disk_t *disk_open(struct fixture *f, const char *ref,
                               size_t dirty_limit)
{
  store_disk_t *d = NULL;
  char *err = NULL;
  store_disk_opts_t o = { .dirty_limit = dirty_limit, .cache_chunks = 4 };
  int r = store_disk_open(f->s, ref, &o, &d, &err);
  if (r < 0)
    fail_msg("open %s: %s", ref, err);
  return d;
}

static void check_disk_equals(store_disk_t *d, const uint8_t *model,
                              size_t size)
{
  uint8_t *buf = malloc(size);
  char *err = NULL;
  int r = store_disk_read(d, buf, size, 0, &err);
  if (r < 0)
    fail_msg("read: %s", err);
  for (size_t i = 0; i < size; i++)
    if (buf[i] != model[i])
      fail_msg("mismatch at byte %zu (chunk %zu): %02x != %02x", i, i / CS,
               buf[i], model[i]);
  free(buf);
}

/* An empty image of the given size to create disks from. */
static void make_empty_image(struct fixture *f, const char *name, size_t size)
{
  char path[160], *err = NULL;
  snprintf(path, sizeof path, "%s/%s.raw", f->dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, (off_t)size), 0);
  close(fd);
  assert_int_equal(store_image_import(f->s, name, path, NULL, NULL, &err), 0);
}

/* disk/d over an empty image/e of size bytes. */
static void empty_disk(struct fixture *f, size_t size)
{
  char *err = NULL;
  make_empty_image(f, "e", size);
  if (store_disk_create(f->s, "d", "image/e", 0, &err) < 0)
    fail_msg("create disk/d: %s", err);
}

/* ---- tests ---- */

/* Random unaligned writes and zeroes spanning chunks, against a shadow
 * buffer, with a dirty limit small enough to force spills; then flush,
 * reopen and compare again. */
static void random_io_model(struct fixture *f, size_t nchunks,
                            size_t dirty_limit, int ops, unsigned seed)
{
  const size_t size = nchunks * CS + 1234;   /* partial last chunk */
  char *err = NULL;
  uint8_t *model = calloc(1, size), *buf = malloc(3 * CS + 100);

  make_empty_image(f, "empty", size);
  assert_int_equal(store_disk_create(f->s, "d", "image/empty", 0, &err), 0);
  store_disk_t *d = disk_open(f, "disk/d", dirty_limit);
  for (int op = 0; op < ops; op++) {
    size_t len = 1 + (size_t)rand_r(&seed) % (3 * CS + 100);
    size_t off = (size_t)rand_r(&seed) % size;
    if (off + len > size)
      len = size - off;
    int kind = rand_r(&seed) % 10;
    if (kind < 7) {
      fill_random(buf, len, &seed);
      assert_int_equal(store_disk_write(d, buf, len, off, &err), 0);
      memcpy(model + off, buf, len);
    } else if (kind < 9) {
      assert_int_equal(store_disk_zero(d, len, off, &err), 0);
      memset(model + off, 0, len);
    } else {
      assert_int_equal(store_disk_read(d, buf, len, off, &err), 0);
      assert_memory_equal(buf, model + off, len);
    }
    if (op % 500 == 499)
      assert_int_equal(store_disk_flush(d, &err), 0);
  }
  check_disk_equals(d, model, size);
  assert_int_equal(store_disk_flush(d, &err), 0);
  store_disk_close(d);

  d = disk_open(f, "disk/d", 0);
  check_disk_equals(d, model, size);
  /* out of range */
  assert_int_equal(store_disk_read(d, buf, 2, size - 1, &err), -EINVAL);
  free(err);
  err = NULL;
  assert_int_equal(store_disk_write(d, buf, 2, size - 1, &err), -ENOSPC);
  free(err);
  store_disk_close(d);
  free(model);
  free(buf);
}

static void test_random_io_model(void **state)
{
  random_io_model(*state, 300, 8 * CS, 2000, 42);
}

/* A dirty limit above one spill batch (256 chunks): spills are partial
 * (slots punched out and reused while other chunks stay staged). */
static void test_partial_spill_model(void **state)
{
  random_io_model(*state, 900, 300 * CS, 3000, 4711);
}

/* Chunks on both sides of leaf and interior page boundaries (fanout 4:
 * a leaf covers 4 chunks, level 1 covers 16, level 2 covers 64). */
static void test_page_boundaries(void **state)
{
  struct fixture *f = *state;
  const uint64_t idxs[] = { 0, 3, 4, 15, 16, 17, 63, 64, 127, 128, 255 };
  const size_t n = sizeof idxs / sizeof idxs[0], size = 256 * CS;
  uint8_t chunk[CS], got[CS];
  char *err = NULL;

  make_empty_image(f, "empty", size);
  assert_int_equal(store_disk_create(f->s, "d", "image/empty", 0, &err), 0);
  store_disk_t *d = disk_open(f, "disk/d", 0);
  for (size_t i = 0; i < n; i++) {
    memset(chunk, (int)(i + 1), CS);
    assert_int_equal(store_disk_write(d, chunk, CS, idxs[i] * CS, &err), 0);
  }
  assert_int_equal(store_disk_flush(d, &err), 0);
  store_disk_close(d);

  d = disk_open(f, "disk/d", 0);
  for (uint64_t c = 0; c < 256; c++) {
    int want = 0;
    for (size_t i = 0; i < n; i++)
      if (idxs[i] == c)
        want = (int)(i + 1);
    assert_int_equal(store_disk_read(d, got, CS, c * CS, &err), 0);
    memset(chunk, want, CS);
    if (memcmp(got, chunk, CS) != 0)
      fail_msg("chunk %llu: want fill %d", (unsigned long long)c, want);
  }
  /* extents: chunk 1..2 are zero, chunk 3 data */
  uint64_t len;
  int zero;
  assert_int_equal(store_disk_extent(d, CS, size - CS, &len, &zero, &err), 0);
  assert_true(zero);
  assert_int_equal(len, 2 * CS);
  assert_int_equal(store_disk_extent(d, 18 * CS, size - 18 * CS, &len, &zero,
                                     &err), 0);
  assert_true(zero);
  assert_int_equal(len, (63 - 18) * CS);
  store_disk_close(d);
}

/* Import of a file with random data, zero runs, a hole and a partial last
 * chunk; read back through the engine equals the file; zero chunks are not
 * stored. */
static void test_import_readback(void **state)
{
  struct fixture *f = *state;
  const size_t size = 100 * CS + 777;
  uint8_t *raw = calloc(1, size);
  unsigned seed = 7;
  char path[160], *err = NULL;
  fill_random(raw, 10 * CS, &seed);                 /* chunks 0-9 */
  fill_random(raw + 40 * CS + 5, 100, &seed);       /* chunk 40, partial */
  fill_random(raw + 100 * CS, 777, &seed);          /* partial last chunk */
  memcpy(raw + 50 * CS, raw, CS);                   /* duplicate of chunk 0 */
  snprintf(path, sizeof path, "%s/img.raw", f->dir);
  write_file(path, raw, size);

  assert_int_equal(store_image_import(f->s, "img", path, NULL, NULL, &err), 0);
  store_ref_t ref;
  assert_int_equal(store_ref_get(f->s, "image/img", &ref, &err), 0);
  assert_int_equal(ref.size, size);
  assert_int_equal(ref.generation, 1);
  store_disk_t *d = disk_open(f, "image/img", 0);
  assert_true(store_disk_is_readonly(d));
  check_disk_equals(d, raw, size);
  assert_int_equal(store_disk_write(d, raw, 1, 0, &err), -EROFS);
  free(err);
  err = NULL;
  store_disk_close(d);

  /* 12 distinct data chunks (chunk 50 dedups with chunk 0) + map pages:
   * 101 chunks, fanout 4 -> depth 4; pages on non-zero paths only. */
  int objs = count_objects(f);
  assert_true(objs >= 12 + 4);
  assert_true(objs < 12 + 20);

  /* Re-import replaces atomically, generation moves on. */
  assert_int_equal(store_image_import(f->s, "img", path, NULL, NULL, &err), 0);
  assert_int_equal(store_ref_get(f->s, "image/img", &ref, &err), 0);
  assert_int_equal(ref.generation, 2);
  assert_int_equal(count_objects(f), objs);
  free(raw);
}

static void test_zero_elision(void **state)
{
  struct fixture *f = *state;
  char *err = NULL;
  uint8_t buf[CS];
  make_empty_image(f, "zero", 64 * CS);
  store_ref_t ref;
  assert_int_equal(store_ref_get(f->s, "image/zero", &ref, &err), 0);
  assert_true(store_id_is_zero(&ref.root));
  assert_int_equal(count_objects(f), 0);

  /* Writing zeros or zeroing stores nothing either. */
  assert_int_equal(store_disk_create(f->s, "d", "image/zero", 0, &err), 0);
  store_disk_t *d = disk_open(f, "disk/d", 0);
  memset(buf, 0, sizeof buf);
  assert_int_equal(store_disk_write(d, buf, CS, 5 * CS, &err), 0);
  assert_int_equal(store_disk_zero(d, 10 * CS, 3, &err), 0);
  assert_int_equal(store_disk_flush(d, &err), 0);
  assert_int_equal(count_objects(f), 0);
  /* Data then whole-chunk zero: reads zero, the map drops the chunk. */
  memset(buf, 0x5a, sizeof buf);
  assert_int_equal(store_disk_write(d, buf, CS, 7 * CS, &err), 0);
  assert_int_equal(store_disk_flush(d, &err), 0);
  assert_int_equal(store_disk_zero(d, CS, 7 * CS, &err), 0);
  assert_int_equal(store_disk_flush(d, &err), 0);
  assert_int_equal(store_disk_read(d, buf, CS, 7 * CS, &err), 0);
  assert_true(buf[0] == 0 && buf[CS - 1] == 0);
  store_disk_close(d);
  assert_int_equal(store_ref_get(f->s, "disk/d", &ref, &err), 0);
  assert_true(store_id_is_zero(&ref.root));
}

static void test_flush_persists_unflushed_lost(void **state)
{
  struct fixture *f = *state;
  char *err = NULL;
  uint8_t a[CS], b[CS], got[CS];
  memset(a, 0xaa, CS);
  memset(b, 0xbb, CS);
  empty_disk(f, 32 * CS);

  store_disk_t *d = disk_open(f, "disk/d", 0);
  assert_int_equal(store_disk_write(d, a, CS, 100, &err), 0);
  assert_int_equal(store_disk_flush(d, &err), 0);
  assert_int_equal(store_disk_generation(d), 2);
  /* unflushed write, and a spill-forced one, then close: both discarded */
  assert_int_equal(store_disk_write(d, b, CS, 100, &err), 0);
  store_disk_close(d);
  d = disk_open(f, "disk/d", CS);       /* dirty limit 1 chunk: spills */
  for (int i = 0; i < 8; i++)
    assert_int_equal(store_disk_write(d, b, CS, (uint64_t)i * CS + 9 * CS,
                                      &err), 0);
  store_disk_close(d);

  d = disk_open(f, "disk/d", 0);
  assert_int_equal(store_disk_generation(d), 2);
  assert_int_equal(store_disk_read(d, got, CS, 100, &err), 0);
  assert_memory_equal(got, a, CS);
  assert_int_equal(store_disk_read(d, got, CS, 9 * CS, &err), 0);
  memset(b, 0, CS);
  assert_memory_equal(got, b, CS);
  /* a flush with nothing changed is a no-op */
  assert_int_equal(store_disk_flush(d, &err), 0);
  assert_int_equal(store_disk_generation(d), 2);
  store_disk_close(d);
}

/* disk_create shares the source's tree (same root, O(1)); writes to the
 * new disk are invisible to the source and to siblings. */
static void test_disk_create_sharing(void **state)
{
  struct fixture *f = *state;
  const size_t size = 40 * CS;
  uint8_t *raw = malloc(size), got[CS], pat[CS];
  unsigned seed = 3;
  char path[160], *err = NULL;
  fill_random(raw, size, &seed);
  snprintf(path, sizeof path, "%s/img.raw", f->dir);
  write_file(path, raw, size);
  assert_int_equal(store_image_import(f->s, "base", path, NULL, NULL, &err), 0);
  int objs = count_objects(f);

  assert_int_equal(store_disk_create(f->s, "a", "image/base", 0, &err), 0);
  assert_int_equal(store_disk_create(f->s, "b", "image/base", 0, &err), 0);
  assert_int_equal(count_objects(f), objs);   /* O(1): nothing written */
  store_ref_t ra, rimg;
  assert_int_equal(store_ref_get(f->s, "disk/a", &ra, &err), 0);
  assert_int_equal(store_ref_get(f->s, "image/base", &rimg, &err), 0);
  assert_memory_equal(&ra.root, &rimg.root, sizeof ra.root);
  assert_string_equal(ra.parent, "image/base");
  assert_int_equal(store_disk_create(f->s, "a", "image/base", 0, &err),
                   -EEXIST);
  free(err);
  err = NULL;

  store_disk_t *d = disk_open(f, "disk/a", 0);
  memset(pat, 0x77, CS);
  assert_int_equal(store_disk_write(d, pat, CS, 3 * CS, &err), 0);
  assert_int_equal(store_disk_flush(d, &err), 0);
  store_disk_close(d);

  d = disk_open(f, "image/base", 0);
  check_disk_equals(d, raw, size);
  store_disk_close(d);
  d = disk_open(f, "disk/b", 0);
  check_disk_equals(d, raw, size);
  store_disk_close(d);
  d = disk_open(f, "disk/a", 0);
  assert_int_equal(store_disk_read(d, got, CS, 3 * CS, &err), 0);
  assert_memory_equal(got, pat, CS);
  assert_int_equal(store_disk_read(d, got, CS, 4 * CS, &err), 0);
  assert_memory_equal(got, raw + 4 * CS, CS);
  store_disk_close(d);
  free(raw);
}

/* A disk bigger than its source (tree gets deeper): old range unchanged,
 * the new range reads as zeros and is writable. */
static void test_grow_beyond_source(void **state)
{
  struct fixture *f = *state;
  const size_t src_size = 10 * CS + 100, size = 1000 * CS;
  uint8_t *raw = malloc(src_size), *buf = malloc(size);
  unsigned seed = 9;
  char path[160], *err = NULL;
  fill_random(raw, src_size, &seed);
  snprintf(path, sizeof path, "%s/img.raw", f->dir);
  write_file(path, raw, src_size);
  assert_int_equal(store_image_import(f->s, "small", path, NULL, NULL, &err),
                   0);
  assert_int_equal(store_disk_create(f->s, "big", "image/small", size / 2 - 1,
                                     &err), 0);
  assert_int_equal(store_disk_create(f->s, "huge", "image/small", size, &err),
                   0);
  assert_int_equal(store_disk_create(f->s, "tiny", "image/small", 100, &err),
                   -EINVAL);
  free(err);
  err = NULL;

  store_disk_t *d = disk_open(f, "disk/huge", 0);
  assert_int_equal(store_disk_size(d), size);
  assert_int_equal(store_disk_read(d, buf, size, 0, &err), 0);
  assert_memory_equal(buf, raw, src_size);
  for (size_t i = src_size; i < size; i++)
    if (buf[i])
      fail_msg("byte %zu beyond the source is not zero", i);
  memset(buf, 0x42, CS);
  assert_int_equal(store_disk_write(d, buf, CS, size - CS, &err), 0);
  assert_int_equal(store_disk_flush(d, &err), 0);
  store_disk_close(d);
  d = disk_open(f, "disk/huge", 0);
  assert_int_equal(store_disk_read(d, buf, CS, size - CS, &err), 0);
  assert_int_equal(buf[0], 0x42);
  assert_int_equal(store_disk_read(d, buf, src_size, 0, &err), 0);
  assert_memory_equal(buf, raw, src_size);
  store_disk_close(d);
  free(raw);
  free(buf);
}

static void corrupt_or_remove(struct fixture *f, int remove_it)
{
  const size_t size = 40 * CS;
  uint8_t *raw = malloc(size), got[CS];
  unsigned seed = 11;
  char path[160], *err = NULL;
  fill_random(raw, size, &seed);
  snprintf(path, sizeof path, "%s/img.raw", f->dir);
  write_file(path, raw, size);
  assert_int_equal(store_image_import(f->s, "img", path, NULL, NULL, &err), 0);

  store_id_t oid;
  chunk_id(raw + 2 * CS, CS, &oid);
  if (remove_it)
    object_forget(f, &oid);
  else
    object_corrupt(f, &oid, 1000);
  store_disk_t *d = disk_open(f, "image/img", 0);
  assert_int_equal(store_disk_read(d, got, CS, CS, &err), 0);   /* fine */
  assert_memory_equal(got, raw + CS, CS);
  assert_int_equal(store_disk_read(d, got, 10, 2 * CS + 5, &err), -EIO);
  assert_non_null(err);
  assert_non_null(strstr(err, remove_it ? "missing" : "corrupt"));
  assert_non_null(strstr(err, "chunk 2"));
  free(err);
  err = NULL;
  /* whole chunks of a large read are verified on several threads: the bad
   * one fails the read, a range without it reads right */
  uint8_t *big = malloc(size);
  assert_int_equal(store_disk_read(d, big, size, 0, &err), -EIO);
  assert_non_null(err);
  assert_non_null(strstr(err, remove_it ? "missing" : "corrupt"));
  assert_non_null(strstr(err, "chunk 2:"));
  free(err);
  err = NULL;
  assert_int_equal(store_disk_read(d, big, size - 3 * CS, 3 * CS, &err), 0);
  assert_memory_equal(big, raw + 3 * CS, size - 3 * CS);
  free(big);
  /* a write that needs read-modify-write of that chunk fails too */
  assert_int_equal(store_disk_create(f->s, "d", "image/img", 0, &err), 0);
  store_disk_t *w = disk_open(f, "disk/d", 0);
  assert_int_equal(store_disk_write(w, "x", 1, 2 * CS, &err), -EIO);
  free(err);
  store_disk_close(w);
  store_disk_close(d);
  free(raw);
}

static void test_corrupt_object_eio(void **state)
{
  corrupt_or_remove(*state, 0);
}

static void test_missing_object_eio(void **state)
{
  corrupt_or_remove(*state, 1);
}

/* A corrupt map page fails the read too (never reads as zeros). */
static void test_corrupt_page_eio(void **state)
{
  struct fixture *f = *state;
  uint8_t pat[CS], got[CS];
  char *err = NULL;
  empty_disk(f, 64 * CS);
  store_disk_t *d = disk_open(f, "disk/d", 0);
  memset(pat, 1, CS);
  assert_int_equal(store_disk_write(d, pat, CS, 0, &err), 0);
  assert_int_equal(store_disk_flush(d, &err), 0);
  store_disk_close(d);
  store_ref_t ref;
  assert_int_equal(store_ref_get(f->s, "disk/d", &ref, &err), 0);
  object_corrupt(f, &ref.root, 8);
  d = disk_open(f, "disk/d", 0);
  assert_int_equal(store_disk_read(d, got, CS, 0, &err), -EIO);
  assert_non_null(strstr(err, "map page"));
  free(err);
  store_disk_close(d);
}

static int collect_names(const store_ref_t *ref, void *ud)
{
  char *acc = ud;
  strcat(acc, ref->name);
  strcat(acc, ";");
  return 0;
}

static void test_ref_ops(void **state)
{
  struct fixture *f = *state;
  char *err = NULL, names[512] = "";
  store_ref_t ref;
  make_empty_image(f, "base", 4 * CS);
  assert_int_equal(store_disk_create(f->s, "x_1", "image/base", 0, &err), 0);
  assert_int_equal(store_ref_copy(f->s, "disk/x_1", "snap/x_1/s1", 0, &err), 0);
  assert_int_equal(store_ref_copy(f->s, "disk/x_1", "snap/x_1/s1", 0, &err),
                   -EEXIST);
  free(err);
  err = NULL;
  assert_int_equal(store_ref_copy(f->s, "disk/x_1", "snap/x_1/s1", 1, &err), 0);
  assert_int_equal(store_ref_get(f->s, "snap/x_1/s1", &ref, &err), 0);
  assert_int_equal(ref.generation, 2);
  assert_string_equal(ref.parent, "disk/x_1");

  assert_int_equal(store_ref_list(f->s, NULL, collect_names, names, &err), 3);
  assert_string_equal(names, "disk/x_1;image/base;snap/x_1/s1;");
  names[0] = '\0';
  assert_int_equal(store_ref_list(f->s, "snap/", collect_names, names, &err),
                   1);
  names[0] = '\0';
  assert_int_equal(store_ref_list(f->s, "disk/x%", collect_names, names, &err),
                   0);

  const char *bad[] = { "disk/", "disk/../x", "foo/bar", "disk//x",
                        "disk/a b", "image/.", "" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(store_ref_copy(f->s, "disk/x_1", bad[i], 0, &err),
                     -EINVAL);
    free(err);
    err = NULL;
  }
  assert_int_equal(store_ref_delete(f->s, "snap/x_1/s1", &err), 0);
  assert_int_equal(store_ref_delete(f->s, "snap/x_1/s1", &err), -ENOENT);
  free(err);
  err = NULL;
  assert_int_equal(store_ref_get(f->s, "snap/x_1/s1", &ref, &err), -ENOENT);
  free(err);
  err = NULL;
  assert_int_equal(store_disk_open(f->s, "disk/nope", NULL, &(store_disk_t *){0},
                                   &err), -ENOENT);
  free(err);
}

/* Two writers on one disk: the second commit must fail, not overwrite. */
static void test_stale_writer(void **state)
{
  struct fixture *f = *state;
  char *err = NULL;
  uint8_t a[CS];
  memset(a, 1, CS);
  empty_disk(f, 8 * CS);
  store_disk_t *d1 = disk_open(f, "disk/d", 0);
  store_disk_t *d2 = disk_open(f, "disk/d", 0);
  assert_int_equal(store_disk_write(d1, a, CS, 0, &err), 0);
  assert_int_equal(store_disk_write(d2, a, CS, CS, &err), 0);
  assert_int_equal(store_disk_flush(d1, &err), 0);
  assert_int_equal(store_disk_flush(d2, &err), -ESTALE);
  free(err);
  store_disk_close(d1);
  store_disk_close(d2);
}

/* Default parameters (64 KiB chunks, fanout 1024) and persistence across
 * store_close/store_open; store_open(create) on an existing store. */
static void test_default_store_reopen(void **state)
{
  struct fixture *f = *state;
  char *err = NULL;
  store_params_t p;
  store_get_params(f->s, &p);
  assert_int_equal(p.chunk_size, 64 * 1024);
  assert_int_equal(p.fanout, 1024);
  make_empty_image(f, "e", (size_t)1 << 30);   /* 1 GiB sparse */
  assert_int_equal(store_disk_create(f->s, "d", "image/e", 4ull << 30, &err), 0);
  store_disk_t *d = disk_open(f, "disk/d", 0);
  char msg[] = "hello across a chunk boundary";
  uint64_t off = (3ull << 30) + 65536 - 5;
  assert_int_equal(store_disk_write(d, msg, sizeof msg, off, &err), 0);
  assert_int_equal(store_disk_flush(d, &err), 0);
  store_disk_close(d);
  store_close(f->s);
  f->s = NULL;
  assert_int_equal(store_open(f->store, 1, &f->s, &err), 0);
  d = disk_open(f, "disk/d", 0);
  char got[sizeof msg];
  assert_int_equal(store_disk_read(d, got, sizeof got, off, &err), 0);
  assert_string_equal(got, msg);
  store_disk_close(d);
  assert_int_equal(store_create(f->store, NULL, &err), -EEXIST);
  free(err);
  err = NULL;
  assert_int_equal(store_open("/nonexistent/lanes", 0, &(store_t *){0}, &err),
                   -ENOENT);
  free(err);
}

/* The stage under churn: with a dirty limit of 4 chunks (of 12) it spills
 * often, while writes, partial and whole-chunk zeroes (which unstage and
 * free slots that later writes reuse) and reads go on.  Every read must
 * match the model, and so must the disk after flushes at random points and
 * a reopen. */
static void test_stage_spill_model(void **state)
{
  struct fixture *f = *state;
  const size_t nchunks = 12, size = nchunks * CS;
  uint8_t *model = calloc(1, size), *buf = malloc(2 * CS);
  char *err = NULL;
  unsigned seed = 4242;
  empty_disk(f, size);
  store_disk_t *d = disk_open(f, "disk/d", 4 * CS);
  for (int op = 0; op < 6000; op++) {
    int kind = rand_r(&seed) % 10;
    size_t idx = (size_t)rand_r(&seed) % nchunks;
    if (kind < 5) {                               /* partial write */
      size_t len = 1 + (size_t)rand_r(&seed) % (2 * CS - 1);
      size_t off = idx * CS + (size_t)rand_r(&seed) % CS;
      if (off + len > size)
        len = size - off;
      fill_random(buf, len, &seed);
      assert_int_equal(store_disk_write(d, buf, len, off, &err), 0);
      memcpy(model + off, buf, len);
    } else if (kind < 7) {                        /* whole chunk */
      fill_random(buf, CS, &seed);
      assert_int_equal(store_disk_write(d, buf, CS, idx * CS, &err), 0);
      memcpy(model + idx * CS, buf, CS);
    } else if (kind == 7) {                       /* zero: whole or part */
      size_t len = rand_r(&seed) % 2 ? CS : 100;
      assert_int_equal(store_disk_zero(d, len, idx * CS, &err), 0);
      memset(model + idx * CS, 0, len);
    } else if (kind == 8) {
      assert_int_equal(store_disk_read(d, buf, CS, idx * CS, &err), 0);
      if (memcmp(buf, model + idx * CS, CS) != 0)
        fail_msg("op %d: chunk %zu differs from the model", op, idx);
    } else if (rand_r(&seed) % 50 == 0) {
      assert_int_equal(store_disk_flush(d, &err), 0);
    }
  }
  check_disk_equals(d, model, size);
  assert_int_equal(store_disk_flush(d, &err), 0);
  store_disk_close(d);
  d = disk_open(f, "disk/d", 0);
  check_disk_equals(d, model, size);
  store_disk_close(d);
  free(model);
  free(buf);
}

/* Names of every file under dir (recursively), sorted, one per line. */
static char *list_tree(const char *dir)
{
  char cmd[256];
  snprintf(cmd, sizeof cmd, "cd '%s' && find . | LC_ALL=C sort", dir);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  char *out = calloc(1, 65536);
  size_t n = fread(out, 1, 65535, p);
  out[n] = 0;
  pclose(p);
  return out;
}

/* Writes are staged, not hashed: a chunk rewritten 200 times between two
 * flushes is stored once, so the commit leaves no garbage objects, and the
 * last content wins. */
static void test_stage_rewrites_hashed_once(void **state)
{
  struct fixture *f = *state;
  char *err = NULL;
  uint8_t buf[CS];
  empty_disk(f, 16 * CS);
  store_disk_t *d = disk_open(f, "disk/d", 0);
  for (int i = 0; i < 200; i++) {
    memset(buf, i + 1, CS);
    assert_int_equal(store_disk_write(d, buf, CS, 3 * CS, &err), 0);
    /* partial rewrites of another chunk, unaligned */
    assert_int_equal(store_disk_write(d, buf, 100, 7 * CS + 33 + (size_t)i, &err), 0);
  }
  assert_int_equal(store_disk_flush(d, &err), 0);
  store_stats_t st;
  assert_int_equal(store_stats(f->s, &st, &err), 0);
  assert_int_equal(st.unique_chunks, 2);
  assert_int_equal(st.garbage_objects, 0);
  store_disk_close(d);
  d = disk_open(f, "disk/d", 0);
  assert_int_equal(store_disk_read(d, buf, CS, 3 * CS, &err), 0);
  for (size_t i = 0; i < CS; i++)
    assert_int_equal(buf[i], 200);
  assert_int_equal(store_disk_read(d, buf, 1, 7 * CS + 33 + 199 + 99, &err), 0);
  assert_int_equal(buf[0], 200);
  assert_int_equal(store_disk_read(d, buf, 1, 7 * CS + 32, &err), 0);
  assert_int_equal(buf[0], 0);
  store_disk_close(d);
}

/* The stage is process-private scratch: while writes are staged (and after
 * a close without flush) nothing new is visible in the store directory,
 * and the unflushed writes are gone. */
static void test_stage_private(void **state)
{
  struct fixture *f = *state;
  char *err = NULL;
  uint8_t buf[3 * CS];
  empty_disk(f, 16 * CS);
  char *before = list_tree(f->store);
  store_disk_t *d = disk_open(f, "disk/d", 0);
  memset(buf, 0x5a, sizeof buf);
  for (int i = 0; i < 5; i++)
    assert_int_equal(store_disk_write(d, buf, sizeof buf, (uint64_t)i * 3 * CS + 7, &err), 0);
  char *during = list_tree(f->store);
  assert_string_equal(before, during);
  store_disk_close(d);
  char *after = list_tree(f->store);
  assert_string_equal(before, after);
  d = disk_open(f, "disk/d", 0);
  assert_int_equal(store_disk_read(d, buf, CS, 0, &err), 0);
  for (size_t i = 0; i < CS; i++)
    assert_int_equal(buf[i], 0);
  store_disk_close(d);
  free(before);
  free(during);
  free(after);
}

/* A stage write that fails (here: RLIMIT_FSIZE, standing in for a full
 * filesystem) fails the request and loses nothing written before; staged
 * chunks stay writable and readable, and once the limit is lifted the new
 * write and a commit succeed. */
static void test_stage_write_failure(void **state)
{
  struct fixture *f = *state;
  char *err = NULL;
  const size_t size = 8 * CS;
  uint8_t *model = calloc(1, size), buf[CS];
  empty_disk(f, size);
  store_disk_t *d = disk_open(f, "disk/d", 0);
  memset(model, 0x11, 2 * CS);
  assert_int_equal(store_disk_write(d, model, 2 * CS, 0, &err), 0);

  struct rlimit old, lim;
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
  lim = old;
  lim.rlim_cur = 2 * CS;             /* the stage holds two chunks */
  signal(SIGXFSZ, SIG_IGN);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
  memset(buf, 0x22, CS);
  int r = store_disk_write(d, buf, CS, 5 * CS, &err);
  assert_true(r < 0);
  assert_non_null(err);
  free(err);
  err = NULL;
  /* a staged chunk is rewritten in place: no growth, still fine */
  memset(model + CS + 10, 0x33, 50);
  assert_int_equal(store_disk_write(d, model + CS + 10, 50, CS + 10, &err), 0);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
  check_disk_equals(d, model, size);

  assert_int_equal(store_disk_write(d, buf, CS, 5 * CS, &err), 0);
  memcpy(model + 5 * CS, buf, CS);
  assert_int_equal(store_disk_flush(d, &err), 0);
  store_disk_close(d);
  d = disk_open(f, "disk/d", 0);
  check_disk_equals(d, model, size);
  store_disk_close(d);
  free(model);
}

/* Sector-aligned partial writes and zeroes (the guest's usual pattern)
 * over a random, non-zero base: against a model, with byte-granular reads,
 * unaligned writes, background and synchronous spills, flushes and
 * reopens. */
static void test_sector_model(void **state)
{
  struct fixture *f = *state;
  const size_t nchunks = 12, size = nchunks * CS;
  uint8_t *model = malloc(size), *buf = malloc(2 * CS);
  char path[160], *err = NULL;
  unsigned seed = 777;
  fill_random(model, size, &seed);
  memset(model + 5 * CS, 0, CS);               /* one zero chunk too */
  snprintf(path, sizeof path, "%s/lazy.raw", f->dir);
  write_file(path, model, size);
  assert_int_equal(store_image_import(f->s, "lazy", path, NULL, NULL, &err),
                   0);
  assert_int_equal(store_disk_create(f->s, "d", "image/lazy", 0, &err), 0);
  store_disk_t *d = disk_open(f, "disk/d", 4 * CS);
  for (int op = 0; op < 6000; op++) {
    int kind = rand_r(&seed) % 12;
    size_t idx = (size_t)rand_r(&seed) % nchunks;
    if (kind < 6) {                               /* aligned sectors */
      size_t first = (size_t)rand_r(&seed) % (CS / 512);
      size_t cnt = 1 + (size_t)rand_r(&seed) % (CS / 512 - first);
      size_t off = idx * CS + first * 512, len = cnt * 512;
      if (rand_r(&seed) % 4 == 0) {
        assert_int_equal(store_disk_zero(d, len, off, &err), 0);
        memset(model + off, 0, len);
      } else {
        fill_random(buf, len, &seed);
        assert_int_equal(store_disk_write(d, buf, len, off, &err), 0);
        memcpy(model + off, buf, len);
      }
    } else if (kind == 6) {                       /* unaligned */
      size_t len = 1 + (size_t)rand_r(&seed) % 700;
      size_t off = idx * CS + (size_t)rand_r(&seed) % CS;
      if (off + len > size)
        len = size - off;
      fill_random(buf, len, &seed);
      assert_int_equal(store_disk_write(d, buf, len, off, &err), 0);
      memcpy(model + off, buf, len);
    } else if (kind < 10) {                       /* byte-granular read */
      size_t len = 1 + (size_t)rand_r(&seed) % (2 * CS - 1);
      size_t off = idx * CS + (size_t)rand_r(&seed) % CS;
      if (off + len > size)
        len = size - off;
      assert_int_equal(store_disk_read(d, buf, len, off, &err), 0);
      if (memcmp(buf, model + off, len) != 0)
        fail_msg("op %d: read %zu+%zu differs from the model", op, off, len);
    } else if (kind == 10 && rand_r(&seed) % 40 == 0) {
      assert_int_equal(store_disk_flush(d, &err), 0);
    } else if (kind == 11 && rand_r(&seed) % 100 == 0) {
      assert_int_equal(store_disk_flush(d, &err), 0);
      store_disk_close(d);
      d = disk_open(f, "disk/d", 4 * CS);
      check_disk_equals(d, model, size);
    }
  }
  check_disk_equals(d, model, size);
  assert_int_equal(store_disk_flush(d, &err), 0);
  store_disk_close(d);
  d = disk_open(f, "disk/d", 0);
  check_disk_equals(d, model, size);
  store_disk_close(d);
  free(model);
  free(buf);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_random_io_model, setup_small, teardown),
    cmocka_unit_test_setup_teardown(test_partial_spill_model, setup_small,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_sector_model, setup_small,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_page_boundaries, setup_small, teardown),
    cmocka_unit_test_setup_teardown(test_stage_spill_model, setup_small,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_stage_rewrites_hashed_once,
                                    setup_small, teardown),
    cmocka_unit_test_setup_teardown(test_stage_private, setup_small,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_stage_write_failure, setup_small,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_import_readback, setup_small, teardown),
    cmocka_unit_test_setup_teardown(test_zero_elision, setup_small, teardown),
    cmocka_unit_test_setup_teardown(test_flush_persists_unflushed_lost,
                                    setup_small, teardown),
    cmocka_unit_test_setup_teardown(test_disk_create_sharing, setup_small,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_grow_beyond_source, setup_small,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_corrupt_object_eio, setup_small,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_missing_object_eio, setup_small,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_corrupt_page_eio, setup_small,
                                    teardown),
    cmocka_unit_test_setup_teardown(test_ref_ops, setup_small, teardown),
    cmocka_unit_test_setup_teardown(test_stale_writer, setup_small, teardown),
    cmocka_unit_test_setup_teardown(test_default_store_reopen, setup_default,
                                    teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
