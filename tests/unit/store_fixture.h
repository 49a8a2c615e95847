/* store_fixture.h — the temporary-store fixture and disk helpers shared by
 * the block store unit tests (test_store_gc.c, test_store_pack.c).
 *
 * Include after <cmocka.h> and "store-internal.h", with CS (chunk size)
 * and DSIZE (bytes of a test disk) defined and STORE_FIXTURE_NAME naming
 * the test (it becomes the temporary directory's prefix). Every helper
 * fails the running test with the store's own message.
 */
#ifndef LANES_TEST_STORE_FIXTURE_H
#define LANES_TEST_STORE_FIXTURE_H

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define FIXTURE_UNUSED __attribute__((unused))

struct fixture {
  char dir[64];
  char store[96];
  store_t *s;
};

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

/* A fresh store (chunk size CS, 4 chunks per map page) in a new temp dir. */
static FIXTURE_UNUSED int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof *f);
  char *err = NULL;
  snprintf(f->dir, sizeof f->dir, "/tmp/" STORE_FIXTURE_NAME ".XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->store, sizeof f->store, "%s/store", f->dir);
  store_params_t p = { CS, 4 };
  assert_int_equal(store_create(f->store, &p, &err), 0);
  assert_int_equal(store_open(f->store, 0, &f->s, &err), 0);
  *state = f;
  return 0;
}

static FIXTURE_UNUSED int teardown(void **state)
{
  struct fixture *f = *state;
  store_close(f->s);
  nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

/* Import size bytes of data as image NAME (through a raw file). */
static FIXTURE_UNUSED void import_image(struct fixture *f, const char *name, const uint8_t *data, size_t size)
{
  char path[160], *err = NULL;
  snprintf(path, sizeof path, "%s/%s.raw", f->dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, size), (ssize_t)size);
  close(fd);
  if (store_image_import(f->s, name, path, NULL, NULL, &err) < 0)
    fail_msg("import: %s", err);
}

static FIXTURE_UNUSED store_disk_t *dopen(store_t *s, const char *ref, size_t dirty_limit)
{
  store_disk_t *d = NULL;
  char *err = NULL;
  store_disk_opts_t o = { .dirty_limit = dirty_limit, .cache_chunks = 2 };
  if (store_disk_open(s, ref, &o, &d, &err) < 0)
    fail_msg("open %s: %s", ref, err);
  return d;
}

static FIXTURE_UNUSED void dwrite(store_disk_t *d, const void *buf, size_t len, uint64_t off)
{
  char *err = NULL;
  if (store_disk_write(d, buf, len, off, &err) < 0)
    fail_msg("write: %s", err);
}

static FIXTURE_UNUSED void dflush(store_disk_t *d)
{
  char *err = NULL;
  if (store_disk_flush(d, &err) < 0)
    fail_msg("flush: %s", err);
}

/* REF reads back exactly as model (DSIZE bytes). */
static FIXTURE_UNUSED void check_ref(store_t *s, const char *ref, const uint8_t *model)
{
  uint8_t *buf = malloc(DSIZE);
  char *err = NULL;
  store_disk_t *d = dopen(s, ref, 0);
  if (store_disk_read(d, buf, DSIZE, 0, &err) < 0)
    fail_msg("read %s: %s", ref, err);
  for (size_t i = 0; i < DSIZE; i++)
    if (buf[i] != model[i])
      fail_msg("%s: mismatch at byte %zu", ref, i);
  store_disk_close(d);
  free(buf);
}

#endif
