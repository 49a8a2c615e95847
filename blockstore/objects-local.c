/* lanes block store — local object backend: loose object files.
 *
 * Layout: STORE/objects/<2 hex>/<62 hex> holds the object whose SHA-256 is
 * the 64 hex digits.  New objects are written as anonymous O_TMPFILEs in
 * their fan-out directory and linked in when complete (linkat of the fd
 * with AT_EMPTY_PATH where allowed, else through /proc/self/fd; fallback: a
 * named "<2 hex>/.tmp-PID-SEQ" file renamed into place).
 *
 * Invariants:
 *   - An object file appears under its final name only by linkat()/rename()
 *     of a completely written temporary file, so a final name never has a
 *     short write from this process.  After a power loss a file whose data had not
 *     reached the disk may exist; put() therefore trusts an existing file only
 *     if its size matches, and every reader verifies the hash anyway.
 *   - put() of an object that already exists still marks it for the next
 *     sync(): it may be another process's object that is not durable yet.
 *   - Durability: in STORE_SYNC_SYNCFS mode nothing is synced per object;
 *     sync() issues one syncfs() on the store's filesystem, which makes every
 *     earlier put (data, inode, directory entry) durable.  In
 *     STORE_SYNC_FSYNC mode every object is fsync'd before its rename and
 *     sync() fsyncs the directories that got new entries.
 *   - Stale ".tmp-*" files (crash mid-put on the fallback path) and
 *     unreferenced objects are left for garbage collection.
 *   - GC safety: put() of an object that already exists refreshes its mtime
 *     (a writer is about to reference it), and sweep() deletes only files
 *     whose mtime is older than the caller's cutoff.  The refresh and the
 *     sweep's check-then-unlink of one fan-out directory exclude each other
 *     through an OFD lock on byte <dir> of objects/.gc-lock (shared for
 *     put, exclusive for sweep), so an object a writer just decided to reuse
 *     is never unlinked under it.  OFD locks are per open file description,
 *     so two store handles conflict even inside one process; the threads of
 *     one handle serialize their shared-lock sections with be->lock.
 *
 * Threading: put/get/sync may run concurrently from several threads (the
 * dirty-directory set is under a mutex, temp names are unique per call) and
 * from several processes (renames of identical content are idempotent).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store-internal.h"

struct local_be {
  char *objdir;
  int objfd;                     /* O_PATH|O_DIRECTORY fd of objects/ */
  int lockfd;                    /* objects/.gc-lock (OFD byte locks) */
  store_sync_mode_t mode;
  pthread_mutex_t lock;
  uint8_t dirty_dirs[256 / 8];   /* fsync mode: subdirs with new entries */
  int have_dirty;                /* syncfs mode: any put since last sync */
  atomic_uint_fast64_t tmp_seq;
  atomic_int no_empty_path;      /* linkat(AT_EMPTY_PATH) refused once */
};

static int local_mkdir(int dirfd, const char *name)
{
  if (mkdirat(dirfd, name, 0755) == -1 && errno != EEXIST)
    return -errno;
  return 0;
}

static int local_open(const char *dir, void **out, char **err)
{
  struct local_be *be = calloc(1, sizeof *be);
  if (!be)
    return store_err(err, ENOMEM, "out of memory");
  if (asprintf(&be->objdir, "%s/objects", dir) == -1) {
    free(be);
    return store_err(err, ENOMEM, "out of memory");
  }
  int r;
  if (mkdir(be->objdir, 0755) == -1 && errno != EEXIST) {
    r = store_err(err, errno, "mkdir %s: %m", be->objdir);
    goto fail;
  }
  be->objfd = open(be->objdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (be->objfd == -1) {
    r = store_err(err, errno, "open %s: %m", be->objdir);
    goto fail;
  }
  /* The 256 fan-out directories, made once so put() never has to. */
  if (faccessat(be->objfd, "ff", F_OK, 0) == -1) {
    for (unsigned d = 0; d < 256; d++) {
      char name[3];
      snprintf(name, sizeof name, "%02x", d);
      if ((r = local_mkdir(be->objfd, name)) < 0) {
        store_err(err, -r, "mkdir %s/%s: %s", be->objdir, name, strerror(-r));
        close(be->objfd);
        goto fail;
      }
    }
  }
  be->lockfd = openat(be->objfd, ".gc-lock", O_RDWR | O_CREAT | O_CLOEXEC,
                      0644);
  if (be->lockfd == -1) {
    r = store_err(err, errno, "open %s/.gc-lock: %m", be->objdir);
    close(be->objfd);
    goto fail;
  }
  pthread_mutex_init(&be->lock, NULL);
  *out = be;
  return 0;
fail:
  free(be->objdir);
  free(be);
  return r;
}

static void local_close(void *p)
{
  struct local_be *be = p;
  if (!be)
    return;
  close(be->objfd);
  close(be->lockfd);
  pthread_mutex_destroy(&be->lock);
  free(be->objdir);
  free(be);
}

/* OFD lock (type F_RDLCK/F_WRLCK/F_UNLCK) on byte dir of .gc-lock. */
static int local_dir_lock(struct local_be *be, unsigned dir, short type)
{
  struct flock fl = { .l_type = type, .l_whence = SEEK_SET,
                      .l_start = (off_t)dir, .l_len = 1, .l_pid = 0 };
  while (fcntl(be->lockfd, F_OFD_SETLKW, &fl) == -1) {
    if (errno != EINTR)
      return -errno;
  }
  return 0;
}

/* Refresh the mtime of an existing object under the shared directory lock
 * so a concurrent sweep keeps it.  1 = refreshed, 0 = it is gone (swept
 * meanwhile: the caller writes it anew), < 0 error. */
static int local_refresh(struct local_be *be, const char *rel, unsigned dir)
{
  int r;
  pthread_mutex_lock(&be->lock);
  if ((r = local_dir_lock(be, dir, F_RDLCK)) == 0) {
    if (utimensat(be->objfd, rel, NULL, 0) == 0)
      r = 1;
    else
      r = errno == ENOENT ? 0 : -errno;
    local_dir_lock(be, dir, F_UNLCK);
  }
  pthread_mutex_unlock(&be->lock);
  return r;
}

static void local_set_sync_mode(void *p, store_sync_mode_t mode)
{
  ((struct local_be *)p)->mode = mode;
}

/* "ab/cdef..." relative to objects/. */
static void local_relpath(const store_id_t *id, char rel[STORE_ID_HEX_LEN + 2])
{
  char hex[STORE_ID_HEX_LEN + 1];
  store_id_to_hex(id, hex);
  rel[0] = hex[0];
  rel[1] = hex[1];
  rel[2] = '/';
  memcpy(rel + 3, hex + 2, STORE_ID_HEX_LEN - 2 + 1);
}

static char *local_path(void *p, const store_id_t *id)
{
  struct local_be *be = p;
  char rel[STORE_ID_HEX_LEN + 2], *path;
  local_relpath(id, rel);
  if (asprintf(&path, "%s/%s", be->objdir, rel) == -1)
    return NULL;
  return path;
}

static int local_write_all(int fd, const void *buf, size_t len)
{
  const char *p = buf;
  while (len) {
    ssize_t n = write(fd, p, len);
    if (n == -1) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Write an object as an anonymous O_TMPFILE in fan-out directory dir and
 * link it in as dir/name: a crash never leaves a partial file behind.
 * -EOPNOTSUPP when O_TMPFILE or /proc/self/fd is unavailable. */
static int local_put_tmpfile(struct local_be *be, const char *dir,
                             const char *name, const void *buf, size_t len)
{
  int fd = openat(be->objfd, dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0444);
  if (fd == -1)
    return errno == EISDIR || errno == EOPNOTSUPP || errno == EINVAL
           ? -EOPNOTSUPP : -errno;
  int r = local_write_all(fd, buf, len);
  if (r == 0 && be->mode == STORE_SYNC_FSYNC && fdatasync(fd) == -1)
    r = -errno;
  if (r == 0) {
    char proc[64], target[STORE_ID_HEX_LEN + 2];
    snprintf(target, sizeof target, "%s/%s", dir, name);
    /* Linking the fd itself needs CAP_DAC_READ_SEARCH (without it: ENOENT)
     * but saves the /proc path walk; remember a refusal. */
    int done = 0;
    if (!atomic_load(&be->no_empty_path)) {
      if (linkat(fd, "", be->objfd, target, AT_EMPTY_PATH) == 0 ||
          errno == EEXIST)
        done = 1;
      else if (errno == ENOENT || errno == EPERM || errno == EINVAL)
        atomic_store(&be->no_empty_path, 1);
      else
        r = -errno;
    }
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    if (r == 0 && !done &&
        linkat(AT_FDCWD, proc, be->objfd, target, AT_SYMLINK_FOLLOW) == -1 &&
        errno != EEXIST)   /* EEXIST: another writer stored it meanwhile */
      r = errno == ENOENT ? -EOPNOTSUPP : -errno;
  }
  close(fd);
  return r;
}

/* Remember that the next sync() must make id's directory entry durable. */
static void local_mark_dirty(struct local_be *be, const store_id_t *id)
{
  unsigned dir = (unsigned)id->b[0];
  pthread_mutex_lock(&be->lock);
  be->dirty_dirs[dir / 8] |= (uint8_t)(1u << (dir % 8));
  be->have_dirty = 1;
  pthread_mutex_unlock(&be->lock);
}

static int local_put(void *p, const store_id_t *id, const void *buf,
                     size_t len, char **err)
{
  struct local_be *be = p;
  char rel[STORE_ID_HEX_LEN + 2], tmp[64];
  struct stat st;
  int r;

  local_relpath(id, rel);
  int exists = fstatat(be->objfd, rel, &st, 0) == 0;
  if (exists && (size_t)st.st_size == len) {
    r = local_refresh(be, rel, id->b[0]);
    if (r < 0)
      return store_err(err, -r, "touch object %s/%s: %s", be->objdir, rel,
                       strerror(-r));
    exists = r;
  }
  if (exists && (size_t)st.st_size == len) {
    /* Already stored (content-addressed).  It may be another writer's
     * not-yet-synced object, so our next sync() must still cover it. */
    if (be->mode == STORE_SYNC_FSYNC) {
      int efd = openat(be->objfd, rel, O_RDONLY | O_CLOEXEC);
      if (efd == -1 || fdatasync(efd) == -1) {
        r = store_err(err, errno, "sync object %s/%s: %m", be->objdir, rel);
        if (efd != -1)
          close(efd);
        return r;
      }
      close(efd);
    }
    local_mark_dirty(be, id);
    return 0;
  }

  rel[2] = '\0';                      /* rel = fan-out dir "ab" */
  if (!exists) {
    r = local_put_tmpfile(be, rel, rel + 3, buf, len);
    if (r == 0) {
      local_mark_dirty(be, id);
      return 0;
    }
    if (r != -EOPNOTSUPP) {
      rel[2] = '/';
      return store_err(err, -r, "write object %s/%s: %s", be->objdir, rel,
                       strerror(-r));
    }
  }
  /* Fallback (no O_TMPFILE or /proc, or replacing a damaged object): a
   * named temporary in the same directory, renamed over the final name. */
  snprintf(tmp, sizeof tmp, "%s/.tmp-%ld-%llu", rel, (long)getpid(),
           (unsigned long long)atomic_fetch_add(&be->tmp_seq, 1));
  rel[2] = '/';
  int fd = openat(be->objfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                  0444);
  if (fd == -1)
    return store_err(err, errno, "create %s/%s: %m", be->objdir, tmp);
  r = local_write_all(fd, buf, len);
  if (r == 0 && be->mode == STORE_SYNC_FSYNC && fdatasync(fd) == -1)
    r = -errno;
  if (close(fd) == -1 && r == 0 && errno != EINTR)
    r = -errno;
  if (r == 0 && renameat(be->objfd, tmp, be->objfd, rel) == -1)
    r = -errno;
  if (r < 0) {
    unlinkat(be->objfd, tmp, 0);
    return store_err(err, -r, "write object %s/%s: %s", be->objdir, rel,
                     strerror(-r));
  }
  local_mark_dirty(be, id);
  return 0;
}

static int local_get(void *p, const store_id_t *id, void *buf, size_t cap,
                     size_t *len, char **err)
{
  struct local_be *be = p;
  char rel[STORE_ID_HEX_LEN + 2];
  struct stat st;

  local_relpath(id, rel);
  int fd = openat(be->objfd, rel, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return store_err(err, errno, "open object %s/%s: %m", be->objdir, rel);
  if (fstat(fd, &st) == -1) {
    int r = store_err(err, errno, "stat object %s/%s: %m", be->objdir, rel);
    close(fd);
    return r;
  }
  if ((uint64_t)st.st_size > cap) {
    close(fd);
    return store_err(err, EFBIG, "object %s/%s: size %lld exceeds %zu",
                     be->objdir, rel, (long long)st.st_size, cap);
  }
  size_t want = (size_t)st.st_size, got = 0;
  while (got < want) {
    ssize_t n = pread(fd, (char *)buf + got, want - got, (off_t)got);
    if (n == -1) {
      if (errno == EINTR)
        continue;
      int r = store_err(err, errno, "read object %s/%s: %m", be->objdir, rel);
      close(fd);
      return r;
    }
    if (n == 0)
      break;   /* truncated under us: the hash check will fail */
    got += (size_t)n;
  }
  close(fd);
  *len = got;
  return 0;
}

static int local_sync(void *p, char **err)
{
  struct local_be *be = p;
  uint8_t dirs[sizeof be->dirty_dirs];
  int any;

  pthread_mutex_lock(&be->lock);
  memcpy(dirs, be->dirty_dirs, sizeof dirs);
  memset(be->dirty_dirs, 0, sizeof be->dirty_dirs);
  any = be->have_dirty;
  be->have_dirty = 0;
  pthread_mutex_unlock(&be->lock);
  if (!any)
    return 0;

  int r = 0;
  if (be->mode == STORE_SYNC_SYNCFS) {
    if (syncfs(be->objfd) == -1)
      r = store_err(err, errno, "syncfs %s: %m", be->objdir);
  } else {
    for (unsigned d = 0; d < 256 && r == 0; d++) {
      if (!(dirs[d / 8] & (1u << (d % 8))))
        continue;
      char name[3];
      snprintf(name, sizeof name, "%02x", d);
      int fd = openat(be->objfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd == -1 || fsync(fd) == -1)
        r = store_err(err, errno, "fsync %s/%s: %m", be->objdir, name);
      if (fd != -1)
        close(fd);
    }
    if (r == 0 && fsync(be->objfd) == -1)
      r = store_err(err, errno, "fsync %s: %m", be->objdir);
  }
  if (r < 0) {
    /* Keep them dirty so the next sync retries. */
    pthread_mutex_lock(&be->lock);
    for (size_t i = 0; i < sizeof dirs; i++)
      be->dirty_dirs[i] |= dirs[i];
    be->have_dirty = 1;
    pthread_mutex_unlock(&be->lock);
  }
  return r;
}

static int is_hex_name(const char *name, size_t len)
{
  for (size_t i = 0; i < len; i++) {
    char c = name[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return 0;
  }
  return name[len] == '\0';
}

static int64_t st_mtime_ns(const struct stat *st)
{
  return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static int local_sweep(void *p, int64_t cutoff_ns,
                       int (*doomed)(const store_id_t *id, void *ud), void *ud,
                       store_sweep_counts_t *c, char **err)
{
  struct local_be *be = p;
  int r = 0;
  for (unsigned d = 0; d < 256 && r == 0; d++) {
    char name[3];
    snprintf(name, sizeof name, "%02x", d);
    int dfd = openat(be->objfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd == -1) {
      if (errno == ENOENT)
        continue;
      return store_err(err, errno, "open %s/%s: %m", be->objdir, name);
    }
    DIR *dir = fdopendir(dfd);
    if (!dir) {
      close(dfd);
      return store_err(err, errno, "opendir %s/%s: %m", be->objdir, name);
    }
    /* Exclusive for the whole directory: writers refreshing an object of
     * it wait, so check-then-unlink below cannot race a refresh. */
    int locked = cutoff_ns > INT64_MIN;
    if (locked && (r = local_dir_lock(be, d, F_WRLCK)) < 0) {
      closedir(dir);
      return store_err(err, -r, "lock %s/%s: %s", be->objdir, name,
                       strerror(-r));
    }
    struct dirent *de;
    while ((errno = 0, de = readdir(dir))) {
      struct stat st;
      if (de->d_name[0] == '.' && (!de->d_name[1] ||
                                   (de->d_name[1] == '.' && !de->d_name[2])))
        continue;
      if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1 ||
          !S_ISREG(st.st_mode))
        continue;
      int64_t mt = st_mtime_ns(&st);
      if (strncmp(de->d_name, ".tmp-", 5) == 0) {
        c->tmp_files++;
        if (mt < cutoff_ns && unlinkat(dfd, de->d_name, 0) == 0)
          c->removed_tmp++;
        continue;
      }
      store_id_t id;
      char hex[STORE_ID_HEX_LEN + 1];
      if (!is_hex_name(de->d_name, STORE_ID_HEX_LEN - 2)) {
        c->foreign_files++;
        continue;
      }
      memcpy(hex, name, 2);
      memcpy(hex + 2, de->d_name, STORE_ID_HEX_LEN - 2 + 1);
      if (store_id_from_hex(hex, &id) < 0)
        continue;
      c->objects++;
      c->bytes += (uint64_t)st.st_size;
      if (!doomed(&id, ud))
        continue;
      c->garbage_objects++;
      c->garbage_bytes += (uint64_t)st.st_size;
      if (mt >= cutoff_ns) {
        c->kept_recent++;
        continue;
      }
      if (unlinkat(dfd, de->d_name, 0) == 0) {
        c->removed_objects++;
        c->removed_bytes += (uint64_t)st.st_size;
      } else if (errno != ENOENT) {
        r = store_err(err, errno, "unlink %s/%s/%s: %m", be->objdir, name,
                      de->d_name);
        break;
      }
    }
    if (r == 0 && errno)
      r = store_err(err, errno, "readdir %s/%s: %m", be->objdir, name);
    if (locked) {
      /* Make the unlinks durable before anyone may rely on their absence
       * (nobody does; but keep the directory consistent after a crash). */
      if (c->removed_objects && fsync(dfd) == -1 && r == 0)
        r = store_err(err, errno, "fsync %s/%s: %m", be->objdir, name);
      local_dir_lock(be, d, F_UNLCK);
    }
    closedir(dir);
  }
  return r;
}

const struct store_backend_ops store_backend_local = {
  .name = "local",
  .open = local_open,
  .close = local_close,
  .put = local_put,
  .get = local_get,
  .sync = local_sync,
  .set_sync_mode = local_set_sync_mode,
  .path = local_path,
  .sweep = local_sweep,
};
