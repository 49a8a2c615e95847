/* lanes block store — local object backend: pack files plus an index.
 *
 * Layout (under STORE/objects):
 *   packs/<16 hex>.pack  append-only pack files (format: pack.h)
 *   index.db             SQLite (WAL): objects(id -> pack, data offset,
 *                        length, t = last time a writer stored or reused it)
 *                        and packs(id -> committed end, live bytes, records)
 *   <2 hex>/<62 hex>     loose objects of stores written before packs
 *                        (read, reused and swept; never written any more)
 *   .reserve             4 MiB of allocated space GC gives up when the
 *                        filesystem is full (see "space reserve")
 *
 * Write path: put() appends the record to this handle's *active pack* (a
 * pack only its creator ever appends to, held under an exclusive OFD lock
 * for as long as it is active) and remembers it in an in-memory pending
 * table; nothing touches SQLite for a new object.  sync() fdatasyncs the
 * active pack and then inserts the pending records into the index in one
 * transaction (synchronous=FULL) together with the pack's committed end.
 * So an index row never names bytes that are not durable, and a ref
 * (committed after sync) never names an object that is not indexed.
 *
 * Invariants:
 *   - A pack's bytes beyond its committed end belong to no index row: a
 *     crashed or closed-without-sync writer leaves at most a torn tail
 *     there.  Opening the backend (and GC) truncates the tail of every
 *     pack whose writer is gone (its OFD lock can be taken), and removes
 *     packs with nothing committed.  New packs get their final name only
 *     after their creator holds the lock (".new-*" first), so a pack that
 *     can be locked by someone else is never being written.
 *   - Dedup: put() of an object already in the pending table or the index
 *     appends nothing; an indexed object gets its t refreshed (an UPDATE,
 *     atomic against GC's conditional DELETE), a loose one its mtime (under
 *     the legacy per-directory OFD lock, as before).
 *   - GC: sweep deletes unmarked index rows whose t is older than the
 *     cutoff (DELETE ... WHERE t < cutoff, so a concurrent refresh wins),
 *     tracks each pack's live bytes, and compacts packs under half live
 *     (and not locked by a writer): live records are copied to a new pack,
 *     which is synced before the index rows move to it; then the old pack
 *     is unlinked.  A reader that looked up the old location and finds the
 *     file gone looks up again.  A GC first retires its own process's
 *     active pack if nothing of it is pending, so that one can be compacted
 *     too; a pack is otherwise closed for appends at the first sync after
 *     it reaches PACK_TARGET_BYTES.
 *   - Reads check the record header (magic, CRC, id, length) and the
 *     caller checks the SHA-256: damage inside a pack is EIO, never data.
 *
 * Threading: put/get/sync from several threads.  be->lock guards the
 * pending table, the active pack and the fd cache; be->append (rwlock) is
 * held shared by a put while it writes its record and exclusively by sync
 * while it takes the set of records to commit, so every record it commits
 * is completely written; be->dblock serializes the SQLite handle;
 * be->synclock serializes syncs.  Several processes may share the store:
 * SQLite arbitrates the index, OFD locks the packs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "pack.h"
#include "store-internal.h"

/* A pack is closed for appends at the first sync after it reaches this. */
#define PACK_TARGET_BYTES (256ull * 1024 * 1024)
#define PACK_FD_CACHE 32
#define GC_DELETE_BATCH 512
#define RESERVE_BYTES (4ull * 1024 * 1024)

struct pent {                  /* pending (appended, not yet indexed) */
  store_id_t id;
  uint64_t off;                /* data offset in the active pack */
  uint32_t len;
  uint8_t used;
  uint8_t reused;              /* not appended: indexed elsewhere, its time
                                  refreshed since the last sync */
  uint64_t seq;
};

struct pfd {                   /* cached read fd of a pack */
  uint64_t pack;
  int fd;                      /* -1 = empty */
  unsigned refs;
  uint64_t used;
};

struct local_be {
  char *objdir;
  int objfd;                     /* objects/ */
  int packdir;                   /* objects/packs/ */
  int lockfd;                    /* objects/.gc-lock (loose objects) */
  int have_loose;                /* fan-out directories exist */
  store_sync_mode_t mode;
  pthread_mutex_t lock;
  pthread_rwlock_t append;
  pthread_mutex_t synclock;

  /* active pack (be->lock) */
  int afd;                       /* -1 = none */
  uint64_t aid, aend;
  int a_dir_synced;              /* its directory entry is durable */
  /* pending table (be->lock): open addressing, no deletions in place */
  struct pent *pend;
  size_t pcap, pn;
  uint64_t seq;
  /* read fds (be->lock) */
  struct pfd fds[PACK_FD_CACHE];
  uint64_t fdclock;

  /* index (be->dblock) */
  pthread_mutex_t dblock;
  sqlite3 *db;
  sqlite3_stmt *q_get, *q_refresh;

  /* loose objects (legacy) */
  uint8_t dirty_dirs[256 / 8];
};

static int64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t st_mtime_ns(const struct stat *st)
{
  return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* OFD write lock over a whole pack file; nonblocking.  0, -EAGAIN if held
 * by someone else, or another negative errno. */
static int pack_trylock(int fd)
{
  struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
  while (fcntl(fd, F_OFD_SETLK, &fl) == -1) {
    if (errno == EINTR)
      continue;
    return errno == EACCES ? -EAGAIN : -errno;
  }
  return 0;
}

static void pack_name(char name[32], uint64_t pack)
{
  snprintf(name, 32, "%016" PRIx64 ".pack", pack);
}

static int pack_name_parse(const char *name, uint64_t *pack)
{
  if (strlen(name) != 21 || strcmp(name + 16, ".pack") != 0)
    return -EINVAL;
  uint64_t v = 0;
  for (int i = 0; i < 16; i++) {
    char c = name[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                                  : -1;
    if (d < 0)
      return -EINVAL;
    v = v << 4 | (uint64_t)d;
  }
  *pack = v;
  return 0;
}

/* ---- index (SQLite) ---- */

static int db_fail(struct local_be *be, char **err, const char *what)
{
  int code = sqlite3_errcode(be->db);
  int e = (code == SQLITE_BUSY || code == SQLITE_LOCKED) ? EBUSY
        : code == SQLITE_FULL ? ENOSPC : EIO;
  return store_err(err, e, "%s/index.db: %s: %s", be->objdir, what,
                   sqlite3_errmsg(be->db));
}

static int db_exec(struct local_be *be, const char *sql, char **err)
{
  if (sqlite3_exec(be->db, sql, NULL, NULL, NULL) != SQLITE_OK)
    return db_fail(be, err, sql);
  return 0;
}

static int db_open(struct local_be *be, char **err)
{
  char path[4096];
  snprintf(path, sizeof path, "%s/index.db", be->objdir);
  if (sqlite3_open_v2(path, &be->db, SQLITE_OPEN_READWRITE |
                      SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL)
      != SQLITE_OK)
    return store_err(err, EIO, "open %s: %s", path,
                     be->db ? sqlite3_errmsg(be->db) : "out of memory");
  sqlite3_busy_timeout(be->db, 10000);
  int r;
  if ((r = db_exec(be, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                   "CREATE TABLE IF NOT EXISTS objects(id BLOB PRIMARY KEY,"
                   " pack INTEGER NOT NULL, off INTEGER NOT NULL,"
                   " len INTEGER NOT NULL, t INTEGER NOT NULL) WITHOUT ROWID;"
                   "CREATE TABLE IF NOT EXISTS packs(id INTEGER PRIMARY KEY,"
                   " committed INTEGER NOT NULL, live INTEGER NOT NULL,"
                   " records INTEGER NOT NULL);", err)) < 0)
    return r;
  if (sqlite3_prepare_v2(be->db, "SELECT pack, off, len FROM objects "
                         "WHERE id=?", -1, &be->q_get, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(be->db, "UPDATE objects SET t=?2 WHERE id=?1", -1,
                         &be->q_refresh, NULL) != SQLITE_OK)
    return db_fail(be, err, "prepare");
  return 0;
}

/* Index lookup: 1 found, 0 not, < 0 error. */
static int idx_get(struct local_be *be, const store_id_t *id, uint64_t *pack,
                   uint64_t *off, uint32_t *len, char **err)
{
  int r = 0;
  pthread_mutex_lock(&be->dblock);
  sqlite3_bind_blob(be->q_get, 1, id->b, STORE_ID_LEN, SQLITE_STATIC);
  int rc = sqlite3_step(be->q_get);
  if (rc == SQLITE_ROW) {
    *pack = (uint64_t)sqlite3_column_int64(be->q_get, 0);
    *off = (uint64_t)sqlite3_column_int64(be->q_get, 1);
    *len = (uint32_t)sqlite3_column_int64(be->q_get, 2);
    r = 1;
  } else if (rc != SQLITE_DONE) {
    r = db_fail(be, err, "look up object");
  }
  sqlite3_reset(be->q_get);
  pthread_mutex_unlock(&be->dblock);
  return r;
}

/* Refresh t of an indexed object: 1 refreshed, 0 not indexed. */
static int idx_refresh(struct local_be *be, const store_id_t *id, char **err)
{
  int r;
  pthread_mutex_lock(&be->dblock);
  sqlite3_bind_blob(be->q_refresh, 1, id->b, STORE_ID_LEN, SQLITE_STATIC);
  sqlite3_bind_int64(be->q_refresh, 2, now_ns());
  if (sqlite3_step(be->q_refresh) == SQLITE_DONE)
    r = sqlite3_changes(be->db) > 0;
  else
    r = db_fail(be, err, "refresh object");
  sqlite3_reset(be->q_refresh);
  pthread_mutex_unlock(&be->dblock);
  return r;
}

/* ---- pending table (caller holds be->lock) ---- */

static size_t pend_slot(size_t cap, const store_id_t *id)
{
  uint64_t h;
  memcpy(&h, id->b, sizeof h);
  return (size_t)h & (cap - 1);
}

static struct pent *pend_find(struct local_be *be, const store_id_t *id)
{
  if (!be->pcap)
    return NULL;
  for (size_t i = pend_slot(be->pcap, id);; i = (i + 1) & (be->pcap - 1)) {
    struct pent *e = &be->pend[i];
    if (!e->used)
      return NULL;
    if (memcmp(&e->id, id, sizeof *id) == 0)
      return e;
  }
}

static void pend_place(struct pent *tab, size_t cap, const struct pent *e)
{
  size_t i = pend_slot(cap, &e->id);
  while (tab[i].used)
    i = (i + 1) & (cap - 1);
  tab[i] = *e;
}

/* Rebuild with capacity cap, keeping entries with seq >= keep_from. */
static int pend_rebuild(struct local_be *be, size_t cap, uint64_t keep_from)
{
  struct pent *nt = calloc(cap, sizeof *nt);
  if (!nt)
    return -ENOMEM;
  size_t n = 0;
  for (size_t i = 0; i < be->pcap; i++)
    if (be->pend[i].used && be->pend[i].seq >= keep_from) {
      pend_place(nt, cap, &be->pend[i]);
      n++;
    }
  free(be->pend);
  be->pend = nt;
  be->pcap = cap;
  be->pn = n;
  return 0;
}

static int pend_add(struct local_be *be, const store_id_t *id, uint64_t off,
                    uint32_t len, int reused)
{
  if ((be->pn + 1) * 2 > be->pcap &&
      pend_rebuild(be, be->pcap ? be->pcap * 2 : 1024, 0) < 0)
    return -ENOMEM;
  struct pent e = { .id = *id, .off = off, .len = len, .used = 1,
                    .reused = (uint8_t)reused, .seq = be->seq++ };
  pend_place(be->pend, be->pcap, &e);
  be->pn++;
  return 0;
}

/* ---- read fd cache ---- */

/* A read fd of pack (be->lock not held).  *slot = cache slot to release
 * with fd_put, or -1 for an uncached fd the caller closes. */
static int fd_get(struct local_be *be, uint64_t pack, int *slot)
{
  pthread_mutex_lock(&be->lock);
  if (be->afd >= 0 && be->aid == pack) {
    /* our own active pack: a dup so sync's rotation cannot close it */
    int fd = fcntl(be->afd, F_DUPFD_CLOEXEC, 0);
    pthread_mutex_unlock(&be->lock);
    *slot = -1;
    return fd == -1 ? -errno : fd;
  }
  struct pfd *victim = NULL;
  for (int i = 0; i < PACK_FD_CACHE; i++) {
    struct pfd *c = &be->fds[i];
    if (c->fd >= 0 && c->pack == pack) {
      c->refs++;
      c->used = ++be->fdclock;
      pthread_mutex_unlock(&be->lock);
      *slot = i;
      return c->fd;
    }
    if (!c->refs && (!victim || c->fd < 0 ||
                     (victim->fd >= 0 && c->used < victim->used)))
      victim = c;
  }
  pthread_mutex_unlock(&be->lock);
  char name[32];
  pack_name(name, pack);
  int fd = openat(be->packdir, name, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return -errno;
  pthread_mutex_lock(&be->lock);
  if (victim && !victim->refs) {
    if (victim->fd >= 0)
      close(victim->fd);
    victim->fd = fd;
    victim->pack = pack;
    victim->refs = 1;
    victim->used = ++be->fdclock;
    *slot = (int)(victim - be->fds);
  } else {
    *slot = -1;
  }
  pthread_mutex_unlock(&be->lock);
  return fd;
}

static void fd_put(struct local_be *be, int fd, int slot)
{
  if (slot < 0) {
    close(fd);
    return;
  }
  pthread_mutex_lock(&be->lock);
  be->fds[slot].refs--;
  pthread_mutex_unlock(&be->lock);
}

/* Drop cached fds of packs that were unlinked (compacted away), so their
 * space is released.  Called after each sync. */
static void fd_prune(struct local_be *be)
{
  pthread_mutex_lock(&be->lock);
  for (int i = 0; i < PACK_FD_CACHE; i++) {
    struct pfd *c = &be->fds[i];
    struct stat st;
    if (c->fd >= 0 && !c->refs && fstat(c->fd, &st) == 0 && st.st_nlink == 0) {
      close(c->fd);
      c->fd = -1;
    }
  }
  pthread_mutex_unlock(&be->lock);
}

/* ---- pack recovery: torn tails and orphans ---- */

/* For every pack no live writer holds: truncate bytes beyond its committed
 * end, remove it if nothing was ever committed; remove stale ".new-*".
 * *truncated / *removed count what was done (may be NULL). */
static int packs_recover(struct local_be *be, uint64_t *truncated,
                         uint64_t *removed, char **err)
{
  int dfd = openat(be->packdir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd == -1)
    return store_err(err, errno, "open %s/packs: %m", be->objdir);
  DIR *dir = fdopendir(dfd);
  if (!dir) {
    close(dfd);
    return store_err(err, errno, "opendir %s/packs: %m", be->objdir);
  }
  sqlite3_stmt *q = NULL;
  pthread_mutex_lock(&be->dblock);
  int rc = sqlite3_prepare_v2(be->db, "SELECT committed FROM packs WHERE id=?",
                              -1, &q, NULL);
  pthread_mutex_unlock(&be->dblock);
  if (rc != SQLITE_OK) {
    closedir(dir);
    return db_fail(be, err, "prepare");
  }
  int r = 0, changed = 0;
  struct dirent *de;
  while ((errno = 0, de = readdir(dir))) {
    uint64_t pack;
    int is_new = strncmp(de->d_name, ".new-", 5) == 0;
    if (!is_new && pack_name_parse(de->d_name, &pack) < 0)
      continue;
    int fd = openat(be->packdir, de->d_name, O_RDWR | O_CLOEXEC);
    if (fd == -1)
      continue;                  /* removed meanwhile */
    if (pack_trylock(fd) < 0) {  /* a live writer's */
      close(fd);
      continue;
    }
    struct stat st;
    if (fstat(fd, &st) == -1 || st.st_nlink == 0) {
      close(fd);
      continue;
    }
    int64_t committed = -1;
    if (!is_new) {
      pthread_mutex_lock(&be->dblock);
      sqlite3_bind_int64(q, 1, (sqlite3_int64)pack);
      rc = sqlite3_step(q);
      if (rc == SQLITE_ROW)
        committed = sqlite3_column_int64(q, 0);
      sqlite3_reset(q);
      pthread_mutex_unlock(&be->dblock);
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        close(fd);
        r = db_fail(be, err, "read packs");
        break;
      }
    }
    if (committed < 0) {
      /* nothing of it was ever committed: a crashed writer's */
      if (unlinkat(be->packdir, de->d_name, 0) == 0) {
        changed = 1;
        if (removed)
          (*removed)++;
      }
    } else if (st.st_size > committed) {
      /* torn tail (or records never synced): cut it off */
      if (ftruncate(fd, (off_t)committed) == -1 || fdatasync(fd) == -1) {
        r = store_err(err, errno, "truncate %s/packs/%s: %m", be->objdir,
                      de->d_name);
        close(fd);
        break;
      }
      if (truncated)
        (*truncated)++;
    }
    close(fd);                   /* releases the lock */
  }
  if (r == 0 && errno)
    r = store_err(err, errno, "readdir %s/packs: %m", be->objdir);
  if (changed)
    fsync(dfd);
  sqlite3_finalize(q);
  closedir(dir);
  return r;
}

/* ---- space reserve ----
 * objects/.reserve holds RESERVE_BYTES of allocated space.  Deleting index
 * rows needs room in SQLite's WAL; on a full filesystem GC gives the
 * reserve up to make that room, and takes it back once it has freed
 * space.  Best effort: without it GC on a full disk may fail. */

static void reserve_take(struct local_be *be)
{
  struct stat st;
  if (fstatat(be->objfd, ".reserve", &st, 0) == 0 &&
      (uint64_t)st.st_blocks * 512 >= RESERVE_BYTES)
    return;
  int fd = openat(be->objfd, ".reserve", O_WRONLY | O_CREAT | O_CLOEXEC,
                  0600);
  if (fd == -1)
    return;
  if (fallocate(fd, 0, 0, RESERVE_BYTES) == -1)
    (void)!ftruncate(fd, 0);   /* no room now: try again after a GC */
  close(fd);
}

static void reserve_release(struct local_be *be)
{
  unlinkat(be->objfd, ".reserve", 0);
}

/* ---- open / close ---- */

static void local_free(struct local_be *be)
{
  if (!be)
    return;
  if (be->afd >= 0)
    close(be->afd);
  for (int i = 0; i < PACK_FD_CACHE; i++)
    if (be->fds[i].fd >= 0)
      close(be->fds[i].fd);
  sqlite3_finalize(be->q_get);
  sqlite3_finalize(be->q_refresh);
  sqlite3_close(be->db);
  if (be->objfd >= 0)
    close(be->objfd);
  if (be->packdir >= 0)
    close(be->packdir);
  if (be->lockfd >= 0)
    close(be->lockfd);
  free(be->pend);
  pthread_mutex_destroy(&be->lock);
  pthread_mutex_destroy(&be->dblock);
  pthread_mutex_destroy(&be->synclock);
  pthread_rwlock_destroy(&be->append);
  free(be->objdir);
  free(be);
}

static int local_open(const char *dir, void **out, char **err)
{
  struct local_be *be = calloc(1, sizeof *be);
  if (!be)
    return store_err(err, ENOMEM, "out of memory");
  be->objfd = be->packdir = be->lockfd = be->afd = -1;
  for (int i = 0; i < PACK_FD_CACHE; i++)
    be->fds[i].fd = -1;
  pthread_mutex_init(&be->lock, NULL);
  pthread_mutex_init(&be->dblock, NULL);
  pthread_mutex_init(&be->synclock, NULL);
  pthread_rwlock_init(&be->append, NULL);
  int r;
  if (asprintf(&be->objdir, "%s/objects", dir) == -1) {
    be->objdir = NULL;
    r = store_err(err, ENOMEM, "out of memory");
    goto fail;
  }
  if (mkdir(be->objdir, 0755) == -1 && errno != EEXIST) {
    r = store_err(err, errno, "mkdir %s: %m", be->objdir);
    goto fail;
  }
  be->objfd = open(be->objdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (be->objfd == -1) {
    r = store_err(err, errno, "open %s: %m", be->objdir);
    goto fail;
  }
  if (mkdirat(be->objfd, "packs", 0755) == -1 && errno != EEXIST) {
    r = store_err(err, errno, "mkdir %s/packs: %m", be->objdir);
    goto fail;
  }
  be->packdir = openat(be->objfd, "packs", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (be->packdir == -1) {
    r = store_err(err, errno, "open %s/packs: %m", be->objdir);
    goto fail;
  }
  /* Stores from before packs have the 256 fan-out directories. */
  be->have_loose = faccessat(be->objfd, "ff", F_OK, 0) == 0;
  be->lockfd = openat(be->objfd, ".gc-lock", O_RDWR | O_CREAT | O_CLOEXEC,
                      0644);
  if (be->lockfd == -1) {
    r = store_err(err, errno, "open %s/.gc-lock: %m", be->objdir);
    goto fail;
  }
  if ((r = db_open(be, err)) < 0 || (r = packs_recover(be, NULL, NULL,
                                                       err)) < 0)
    goto fail;
  reserve_take(be);
  *out = be;
  return 0;
fail:
  local_free(be);
  return r;
}


static void local_close(void *p)
{
  local_free(p);
}

static void local_set_sync_mode(void *p, store_sync_mode_t mode)
{
  /* Packs are always fdatasync'ed; the mode only mattered for loose
   * objects, which are no longer written. */
  ((struct local_be *)p)->mode = mode;
}

/* ---- loose objects (stores from before packs) ---- */

/* "ab/cdef..." relative to objects/. */
static void loose_relpath(const store_id_t *id, char rel[STORE_ID_HEX_LEN + 2])
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
  loose_relpath(id, rel);
  if (asprintf(&path, "%s/%s", be->objdir, rel) == -1)
    return NULL;
  return path;
}

/* OFD lock (type F_RDLCK/F_WRLCK/F_UNLCK) on byte dir of .gc-lock. */
static int loose_dir_lock(struct local_be *be, unsigned dir, short type)
{
  struct flock fl = { .l_type = type, .l_whence = SEEK_SET,
                      .l_start = (off_t)dir, .l_len = 1, .l_pid = 0 };
  while (fcntl(be->lockfd, F_OFD_SETLKW, &fl) == -1) {
    if (errno != EINTR)
      return -errno;
  }
  return 0;
}

/* Reuse a loose object of the right size: refresh its mtime under the
 * shared directory lock so a concurrent sweep keeps it.  1 = reused, 0 =
 * absent (or swept meanwhile), < 0 error. */
static int loose_reuse(struct local_be *be, const store_id_t *id, size_t len,
                       char **err)
{
  char rel[STORE_ID_HEX_LEN + 2];
  struct stat st;
  int r;
  loose_relpath(id, rel);
  if (fstatat(be->objfd, rel, &st, 0) == -1 || (size_t)st.st_size != len)
    return 0;
  pthread_mutex_lock(&be->lock);
  if ((r = loose_dir_lock(be, id->b[0], F_RDLCK)) == 0) {
    if (utimensat(be->objfd, rel, NULL, 0) == 0)
      r = 1;
    else
      r = errno == ENOENT ? 0 : -errno;
    loose_dir_lock(be, id->b[0], F_UNLCK);
  }
  if (r == 1)
    be->dirty_dirs[id->b[0] / 8] |= (uint8_t)(1u << (id->b[0] % 8));
  pthread_mutex_unlock(&be->lock);
  if (r < 0)
    return store_err(err, -r, "touch object %s/%s: %s", be->objdir, rel,
                     strerror(-r));
  return r;
}

static int loose_get(struct local_be *be, const store_id_t *id, void *buf,
                     size_t cap, size_t *len, char **err)
{
  char rel[STORE_ID_HEX_LEN + 2];
  struct stat st;
  loose_relpath(id, rel);
  int fd = openat(be->objfd, rel, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return store_err(err, errno, "open object %s/%s: %m", be->objdir, rel);
  int r = 0;
  size_t got = 0;
  if (fstat(fd, &st) == -1)
    r = store_err(err, errno, "stat object %s/%s: %m", be->objdir, rel);
  else if ((uint64_t)st.st_size > cap)
    r = store_err(err, EFBIG, "object %s/%s: size %lld exceeds %zu",
                  be->objdir, rel, (long long)st.st_size, cap);
  else if ((r = store_pread_all(fd, buf, (size_t)st.st_size, 0, &got)) < 0)
    r = store_err(err, -r, "read object %s/%s: %s", be->objdir, rel,
                  strerror(-r));
  close(fd);
  if (r == 0)
    *len = got;   /* short if truncated under us: the hash check fails */
  return r;
}

/* ---- packs: writing ---- */

/* A new, locked, empty pack (file header written) in *fd / *pack. */
static int pack_new(struct local_be *be, int *fdp, uint64_t *packp,
                    char **err)
{
  for (int attempt = 0; attempt < 16; attempt++) {
    uint64_t pack = 0;
    if (getrandom(&pack, sizeof pack, 0) != sizeof pack)
      pack = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 40);
    pack &= 0x7fffffffffffffffull;   /* fits SQLite's INTEGER */
    if (!pack)
      continue;
    char tmp[40], name[32];
    snprintf(tmp, sizeof tmp, ".new-%016" PRIx64, pack);
    pack_name(name, pack);
    int fd = openat(be->packdir, tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
                    0644);
    if (fd == -1) {
      if (errno == EEXIST)
        continue;
      return store_err(err, errno, "create %s/packs/%s: %m", be->objdir, tmp);
    }
    uint8_t hdr[PACK_FILE_HDR];
    pack_file_header(hdr, pack);
    struct iovec v = { hdr, sizeof hdr };
    int r;
    if ((r = pack_trylock(fd)) < 0) {   /* a recovery took it: it goes */
      close(fd);
      if (r == -EAGAIN)
        continue;
      return store_err(err, -r, "lock %s/packs/%s: %s", be->objdir, tmp,
                       strerror(-r));
    }
    if ((r = store_pwritev_all(fd, &v, 1, 0)) < 0) {
      unlinkat(be->packdir, tmp, 0);
      close(fd);
      return store_err(err, -r, "write %s/packs/%s: %s", be->objdir, tmp,
                       strerror(-r));
    }
    if (faccessat(be->packdir, name, F_OK, 0) == 0 ||
        renameat(be->packdir, tmp, be->packdir, name) == -1) {
      /* name taken, or our .new- file was removed by a recovery */
      unlinkat(be->packdir, tmp, 0);
      close(fd);
      continue;
    }
    *fdp = fd;
    *packp = pack;
    return 0;
  }
  return store_err(err, EIO, "%s/packs: could not create a new pack",
                   be->objdir);
}

/* Find and delete the pending entry of id (caller holds be->lock). */
static void pend_del(struct local_be *be, const store_id_t *id)
{
  struct pent *e = pend_find(be, id);
  if (!e)
    return;
  size_t mask = be->pcap - 1, i = (size_t)(e - be->pend), j = i;
  for (;;) {   /* backward-shift deletion for linear probing */
    j = (j + 1) & mask;
    if (!be->pend[j].used)
      break;
    size_t k = pend_slot(be->pcap, &be->pend[j].id);
    if ((j > i && (k <= i || k > j)) || (j < i && k <= i && k > j)) {
      be->pend[i] = be->pend[j];
      i = j;
    }
  }
  be->pend[i].used = 0;
  be->pn--;
}

static int pack_append(struct local_be *be, const store_id_t *id,
                       const void *buf, uint32_t len, char **err)
{
  int r = 0;
  pthread_rwlock_rdlock(&be->append);
  pthread_mutex_lock(&be->lock);
  if (pend_find(be, id)) {            /* another thread just stored it */
    pthread_mutex_unlock(&be->lock);
    pthread_rwlock_unlock(&be->append);
    return 0;
  }
  if (be->afd < 0) {
    if ((r = pack_new(be, &be->afd, &be->aid, err)) < 0)
      goto unlock;
    be->aend = PACK_FILE_HDR;
    be->a_dir_synced = 0;
  }
  uint64_t rec = be->aend;
  int fd = be->afd;
  uint64_t pack = be->aid;
  if (pend_add(be, id, rec + PACK_REC_HDR, len, 0) < 0) {
    r = store_err(err, ENOMEM, "out of memory");
    goto unlock;
  }
  be->aend += PACK_REC_HDR + len;
  pthread_mutex_unlock(&be->lock);

  uint8_t hdr[PACK_REC_HDR];
  pack_record_header(hdr, id, len);
  struct iovec v[2] = { { hdr, sizeof hdr }, { (void *)buf, len } };
  r = store_pwritev_all(fd, v, 2, rec);
  if (r == 0) {
    pthread_rwlock_unlock(&be->append);
    return 0;
  }
  pthread_mutex_lock(&be->lock);
  pend_del(be, id);     /* its bytes stay behind as dead space */
  pthread_mutex_unlock(&be->lock);
  pthread_rwlock_unlock(&be->append);
  char name[32];
  pack_name(name, pack);
  return store_err(err, -r, "write object to %s/packs/%s: %s", be->objdir,
                   name, strerror(-r));
unlock:
  pthread_mutex_unlock(&be->lock);
  pthread_rwlock_unlock(&be->append);
  return r;
}

static int local_put(void *p, const store_id_t *id, const void *buf,
                     size_t len, char **err)
{
  struct local_be *be = p;
  uint64_t pack, off;
  uint32_t ilen;
  int r;
  if (len > PACK_REC_MAX_LEN)
    return store_err(err, EINVAL, "object of %zu bytes is too large", len);
  pthread_mutex_lock(&be->lock);
  int pending = pend_find(be, id) != NULL;
  pthread_mutex_unlock(&be->lock);
  if (pending)
    return 0;
  /* Stored before (content-addressed): reuse it, refreshing its time so
   * a concurrent GC keeps it. */
  if ((r = idx_get(be, id, &pack, &off, &ilen, err)) < 0)
    return r;
  if (r == 1 && ilen == len) {
    if ((r = idx_refresh(be, id, err)) < 0)
      return r;
    if (r == 1) {
      /* Refreshed: until the next sync (which precedes the commit that
       * ends the caller's pending session) that protects it from GC, so
       * further puts of it need not touch SQLite at all. */
      pthread_mutex_lock(&be->lock);
      if (!pend_find(be, id))
        (void)pend_add(be, id, 0, 0, 1);
      pthread_mutex_unlock(&be->lock);
      return 0;
    }
  }
  if (be->have_loose && (r = loose_reuse(be, id, len, err)) != 0)
    return r < 0 ? r : 0;
  return pack_append(be, id, buf, (uint32_t)len, err);
}

/* ---- packs: reading ---- */

static int pack_read(struct local_be *be, const store_id_t *id, uint64_t pack,
                     uint64_t off, uint32_t len, void *buf, size_t cap,
                     size_t *got, char **err)
{
  char name[32];
  pack_name(name, pack);
  if (len > cap)
    return store_err(err, EFBIG, "object in %s/packs/%s: size %u exceeds %zu",
                     be->objdir, name, len, cap);
  if (off < PACK_FILE_HDR + PACK_REC_HDR)
    return store_err(err, EIO, "%s/packs/%s: bad index offset %" PRIu64,
                     be->objdir, name, off);
  int slot = -1, fd = fd_get(be, pack, &slot);
  if (fd < 0)
    return fd == -ENOENT ? -ENOENT
         : store_err(err, -fd, "open %s/packs/%s: %s", be->objdir, name,
                     strerror(-fd));
  uint8_t hdr[PACK_REC_HDR];
  size_t n = 0;
  int r = store_pread_all(fd, hdr, sizeof hdr, off - PACK_REC_HDR, &n);
  if (r == 0 && n == sizeof hdr)
    r = store_pread_all(fd, buf, len, off, got);
  fd_put(be, fd, slot);
  if (r < 0)
    return store_err(err, -r, "read %s/packs/%s at %" PRIu64 ": %s",
                     be->objdir, name, off, strerror(-r));
  store_id_t hid;
  uint32_t hlen;
  if (n != sizeof hdr || pack_record_header_check(hdr, &hid, &hlen) < 0 ||
      hlen != len || memcmp(&hid, id, sizeof hid) != 0)
    return store_err(err, EIO, "%s/packs/%s at %" PRIu64 ": record header "
                     "is corrupt", be->objdir, name, off - PACK_REC_HDR);
  return 0;   /* *got < len if the pack is short: the hash check fails */
}

static int local_get(void *p, const store_id_t *id, void *buf, size_t cap,
                     size_t *len, char **err)
{
  struct local_be *be = p;
  uint64_t pack = 0, off = 0;
  uint32_t ilen = 0;
  int r, found = 0;
  pthread_mutex_lock(&be->lock);
  struct pent *e = pend_find(be, id);
  if (e && !e->reused) {
    pack = be->aid;
    off = e->off;
    ilen = e->len;
    found = 1;
  }
  pthread_mutex_unlock(&be->lock);
  for (int attempt = 0; attempt < 3; attempt++) {
    if (!found && (r = idx_get(be, id, &pack, &off, &ilen, err)) <= 0)
      break;
    r = pack_read(be, id, pack, off, ilen, buf, cap, len, err);
    if (r != -ENOENT)
      return r;
    found = 0;   /* compacted away meanwhile: look it up again */
  }
  if (r < 0)
    return r;
  if (be->have_loose)
    return loose_get(be, id, buf, cap, len, err);
  char hex[STORE_ID_HEX_LEN + 1];
  store_id_to_hex(id, hex);
  return store_err(err, ENOENT, "object %s is not in %s", hex, be->objdir);
}

/* ---- sync ---- */

static int local_sync(void *p, char **err)
{
  struct local_be *be = p;
  int r = 0;
  pthread_mutex_lock(&be->synclock);

  /* Take the set of completely written records. */
  pthread_rwlock_wrlock(&be->append);
  pthread_mutex_lock(&be->lock);
  uint64_t limit = be->seq, pack = be->aid, end = be->aend;
  int fd = be->afd, dir_synced = be->a_dir_synced, loose = 0;
  size_t n = 0;
  struct pent *recs = be->pn ? malloc(be->pn * sizeof *recs) : NULL;
  if (be->pn && !recs)
    r = store_err(err, ENOMEM, "out of memory");
  for (size_t i = 0; r == 0 && i < be->pcap; i++)
    if (be->pend[i].used && be->pend[i].seq < limit && !be->pend[i].reused)
      recs[n++] = be->pend[i];
  for (size_t i = 0; i < sizeof be->dirty_dirs; i++)
    loose |= be->dirty_dirs[i];
  memset(be->dirty_dirs, 0, sizeof be->dirty_dirs);
  if (fd >= 0)
    fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);   /* survives a rotation */
  pthread_mutex_unlock(&be->lock);
  pthread_rwlock_unlock(&be->append);
  if (r < 0)
    goto out;

  /* Reused loose objects may be another (older) writer's, unsynced. */
  if (loose && syncfs(be->objfd) == -1) {
    r = store_err(err, errno, "syncfs %s: %m", be->objdir);
    goto out;
  }
  if (n == 0) {
    /* nothing appended; forget the reuse marks up to here */
    pthread_mutex_lock(&be->lock);
    if (be->pn && pend_rebuild(be, be->pcap, limit) < 0)
      r = store_err(err, ENOMEM, "out of memory");
    pthread_mutex_unlock(&be->lock);
    goto out;
  }
  char name[32];
  pack_name(name, pack);
  if (fd < 0 || fdatasync(fd) == -1) {
    r = store_err(err, errno, "fdatasync %s/packs/%s: %m", be->objdir, name);
    goto out;
  }
  if (!dir_synced && fsync(be->packdir) == -1) {
    r = store_err(err, errno, "fsync %s/packs: %m", be->objdir);
    goto out;
  }

  /* Index the records (now durable) in one durable transaction. */
  sqlite3_stmt *ins = NULL, *upd = NULL, *pk = NULL;
  int64_t t = now_ns();
  uint64_t live = 0, added = 0;
  pthread_mutex_lock(&be->dblock);
  if ((r = db_exec(be, "PRAGMA synchronous=FULL", err)) < 0)
    goto unlock_db;
  if ((r = db_exec(be, "BEGIN IMMEDIATE", err)) < 0)
    goto restore;
  if (sqlite3_prepare_v2(be->db, "INSERT OR IGNORE INTO objects"
                         "(id, pack, off, len, t) VALUES(?1,?2,?3,?4,?5)",
                         -1, &ins, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(be->db, "UPDATE objects SET t=?2 WHERE id=?1", -1,
                         &upd, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(be->db, "INSERT INTO packs(id, committed, live, "
                         "records) VALUES(?1,?2,?3,?4) ON CONFLICT(id) DO "
                         "UPDATE SET committed=max(committed, ?2), "
                         "live=live+?3, records=records+?4", -1, &pk, NULL)
      != SQLITE_OK) {
    r = db_fail(be, err, "prepare");
    goto rollback;
  }
  for (size_t i = 0; i < n; i++) {
    sqlite3_bind_blob(ins, 1, recs[i].id.b, STORE_ID_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(ins, 2, (sqlite3_int64)pack);
    sqlite3_bind_int64(ins, 3, (sqlite3_int64)recs[i].off);
    sqlite3_bind_int64(ins, 4, recs[i].len);
    sqlite3_bind_int64(ins, 5, t);
    if (sqlite3_step(ins) != SQLITE_DONE) {
      r = db_fail(be, err, "index object");
      goto rollback;
    }
    sqlite3_reset(ins);
    if (sqlite3_changes(be->db) > 0) {
      live += recs[i].len;
      added++;
      continue;
    }
    /* Someone else indexed it meanwhile: keep theirs, refresh it. */
    sqlite3_bind_blob(upd, 1, recs[i].id.b, STORE_ID_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(upd, 2, t);
    if (sqlite3_step(upd) != SQLITE_DONE) {
      r = db_fail(be, err, "refresh object");
      goto rollback;
    }
    sqlite3_reset(upd);
  }
  sqlite3_bind_int64(pk, 1, (sqlite3_int64)pack);
  sqlite3_bind_int64(pk, 2, (sqlite3_int64)end);
  sqlite3_bind_int64(pk, 3, (sqlite3_int64)live);
  sqlite3_bind_int64(pk, 4, (sqlite3_int64)added);
  if (sqlite3_step(pk) != SQLITE_DONE) {
    r = db_fail(be, err, "record pack");
    goto rollback;
  }
  if ((r = db_exec(be, "COMMIT", err)) == 0)
    goto restore;
rollback:
  sqlite3_exec(be->db, "ROLLBACK", NULL, NULL, NULL);
restore:
  sqlite3_exec(be->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
unlock_db:
  sqlite3_finalize(ins);
  sqlite3_finalize(upd);
  sqlite3_finalize(pk);
  pthread_mutex_unlock(&be->dblock);
  if (r < 0)
    goto out;

  /* Forget what is indexed now; close a full pack for appends. */
  pthread_mutex_lock(&be->lock);
  if (be->aid == pack)
    be->a_dir_synced = 1;
  if (pend_rebuild(be, be->pcap, limit) < 0) {
    pthread_mutex_unlock(&be->lock);
    r = store_err(err, ENOMEM, "out of memory");
    goto out;
  }
  if (be->pn == 0 && be->afd >= 0 && be->aend >= PACK_TARGET_BYTES) {
    close(be->afd);   /* the lock goes with its last dup */
    be->afd = -1;
  }
  pthread_mutex_unlock(&be->lock);
  fd_prune(be);
out:
  if (r < 0) {
    /* Keep the loose marks for a retry (the records stay pending). */
    pthread_mutex_lock(&be->lock);
    if (loose)
      memset(be->dirty_dirs, 0xff, sizeof be->dirty_dirs);
    pthread_mutex_unlock(&be->lock);
  }
  if (fd >= 0)
    close(fd);
  free(recs);
  pthread_mutex_unlock(&be->synclock);
  return r;
}

/* ---- GC: sweep the index, the loose objects, compact packs ---- */

static int is_hex_name(const char *name, size_t len)
{
  for (size_t i = 0; i < len; i++) {
    char c = name[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return 0;
  }
  return name[len] == '\0';
}

static int loose_sweep(struct local_be *be, int64_t cutoff_ns,
                       int (*doomed)(const store_id_t *id, void *ud), void *ud,
                       store_sweep_counts_t *c, char **err)
{
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
    /* Exclusive for the whole directory: writers reusing an object of it
     * wait, so check-then-unlink below cannot race a refresh. */
    int locked = cutoff_ns > INT64_MIN;
    if (locked && (r = loose_dir_lock(be, d, F_WRLCK)) < 0) {
      closedir(dir);
      return store_err(err, -r, "lock %s/%s: %s", be->objdir, name,
                       strerror(-r));
    }
    uint64_t removed = 0;
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
        removed++;
      } else if (errno != ENOENT) {
        r = store_err(err, errno, "unlink %s/%s/%s: %m", be->objdir, name,
                      de->d_name);
        break;
      }
    }
    if (r == 0 && errno)
      r = store_err(err, errno, "readdir %s/%s: %m", be->objdir, name);
    if (locked) {
      if (removed && fsync(dfd) == -1 && r == 0)
        r = store_err(err, errno, "fsync %s/%s: %m", be->objdir, name);
      loose_dir_lock(be, d, F_UNLCK);
    }
    closedir(dir);
  }
  return r;
}

struct moved {
  store_id_t id;
  uint64_t off, noff;
  uint32_t len;
};

/* Copy the live records of pack (not locked by a writer) into a new pack,
 * switch the index to it, remove the old one.  *freed += bytes released.
 * A pack with a damaged record header is left alone (verify reports it). */
static int pack_compact(struct local_be *be, uint64_t pack, uint64_t *freed,
                        char **err)
{
  char name[32];
  pack_name(name, pack);
  int fd = openat(be->packdir, name, O_RDWR | O_CLOEXEC);
  if (fd == -1)
    return errno == ENOENT ? 0 : store_err(err, errno, "open %s/packs/%s: %m",
                                           be->objdir, name);
  int r = pack_trylock(fd);
  struct stat st;
  if (r < 0 || fstat(fd, &st) == -1 || st.st_nlink == 0) {
    close(fd);
    return r == -EAGAIN || r == 0 ? 0
         : store_err(err, -r, "lock %s/packs/%s: %s", be->objdir, name,
                     strerror(-r));
  }
  /* Its live records (nobody adds any while we hold the lock). */
  struct moved *mv = NULL;
  size_t n = 0, cap = 0;
  sqlite3_stmt *q = NULL;
  pthread_mutex_lock(&be->dblock);
  if (sqlite3_prepare_v2(be->db, "SELECT id, off, len FROM objects WHERE "
                         "pack=? ORDER BY off", -1, &q, NULL) != SQLITE_OK) {
    r = db_fail(be, err, "prepare");
  } else {
    sqlite3_bind_int64(q, 1, (sqlite3_int64)pack);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
      if (n == cap) {
        size_t nc = cap ? cap * 2 : 256;
        struct moved *nm = realloc(mv, nc * sizeof *nm);
        if (!nm) {
          r = store_err(err, ENOMEM, "out of memory");
          break;
        }
        mv = nm;
        cap = nc;
      }
      if (sqlite3_column_bytes(q, 0) != STORE_ID_LEN)
        continue;
      memcpy(mv[n].id.b, sqlite3_column_blob(q, 0), STORE_ID_LEN);
      mv[n].off = (uint64_t)sqlite3_column_int64(q, 1);
      mv[n].len = (uint32_t)sqlite3_column_int64(q, 2);
      n++;
    }
    if (r == 0 && rc != SQLITE_DONE)
      r = db_fail(be, err, "list pack");
  }
  sqlite3_finalize(q);
  pthread_mutex_unlock(&be->dblock);
  if (r < 0)
    goto out;

  int nfd = -1;
  uint64_t npack = 0, nend = PACK_FILE_HDR;
  uint8_t *buf = NULL;
  if (n) {
    if (!(buf = malloc(PACK_REC_HDR + PACK_REC_MAX_LEN))) {
      r = store_err(err, ENOMEM, "out of memory");
      goto out;
    }
    if ((r = pack_new(be, &nfd, &npack, err)) < 0)
      goto out_buf;
    for (size_t i = 0; i < n; i++) {
      size_t got = 0, want = PACK_REC_HDR + mv[i].len;
      store_id_t hid;
      uint32_t hlen;
      if (mv[i].off < PACK_REC_HDR ||
          (r = store_pread_all(fd, buf, want, mv[i].off - PACK_REC_HDR,
                           &got)) < 0 || got != want ||
          pack_record_header_check(buf, &hid, &hlen) < 0 ||
          hlen != mv[i].len || memcmp(&hid, &mv[i].id, sizeof hid) != 0) {
        r = 0;                 /* damaged: leave this pack as it is */
        goto out_new;
      }
      struct iovec v = { buf, want };
      if ((r = store_pwritev_all(nfd, &v, 1, nend)) < 0) {
        r = store_err(err, -r, "write %s/packs: %s", be->objdir,
                      strerror(-r));
        goto out_new;
      }
      mv[i].noff = nend + PACK_REC_HDR;
      nend += want;
    }
    if (fdatasync(nfd) == -1 || fsync(be->packdir) == -1) {
      r = store_err(err, errno, "sync %s/packs: %m", be->objdir);
      goto out_new;
    }
  }

  /* Switch the index over in one durable transaction. */
  uint64_t live = 0, recs = 0;
  sqlite3_stmt *u = NULL;
  pthread_mutex_lock(&be->dblock);
  sqlite3_exec(be->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
  if ((r = db_exec(be, "BEGIN IMMEDIATE", err)) == 0) {
    if (sqlite3_prepare_v2(be->db, "UPDATE objects SET pack=?1, off=?2 "
                           "WHERE id=?3 AND pack=?4", -1, &u, NULL)
        != SQLITE_OK)
      r = db_fail(be, err, "prepare");
    for (size_t i = 0; r == 0 && i < n; i++) {
      sqlite3_bind_int64(u, 1, (sqlite3_int64)npack);
      sqlite3_bind_int64(u, 2, (sqlite3_int64)mv[i].noff);
      sqlite3_bind_blob(u, 3, mv[i].id.b, STORE_ID_LEN, SQLITE_STATIC);
      sqlite3_bind_int64(u, 4, (sqlite3_int64)pack);
      if (sqlite3_step(u) != SQLITE_DONE)
        r = db_fail(be, err, "move object");
      else if (sqlite3_changes(be->db) > 0) {
        live += mv[i].len;
        recs++;
      }
      sqlite3_reset(u);
    }
    sqlite3_finalize(u);
    char sql[256];
    if (r == 0 && n) {
      snprintf(sql, sizeof sql, "INSERT INTO packs VALUES(%" PRIu64 ",%"
               PRIu64 ",%" PRIu64 ",%" PRIu64 ")", npack, nend, live, recs);
      r = db_exec(be, sql, err);
    }
    if (r == 0) {
      snprintf(sql, sizeof sql, "DELETE FROM packs WHERE id=%" PRIu64, pack);
      r = db_exec(be, sql, err);
    }
    if (r == 0)
      r = db_exec(be, "COMMIT", err);
    if (r < 0)
      sqlite3_exec(be->db, "ROLLBACK", NULL, NULL, NULL);
  }
  sqlite3_exec(be->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
  pthread_mutex_unlock(&be->dblock);
  if (r == 0) {
    unlinkat(be->packdir, name, 0);
    fsync(be->packdir);
    *freed += (uint64_t)st.st_size - (n ? nend : 0);
    if (nfd >= 0)
      close(nfd);
    nfd = -1;
  }
out_new:
  if (nfd >= 0) {              /* not switched: the copy goes */
    char nname[32];
    pack_name(nname, npack);
    unlinkat(be->packdir, nname, 0);
    close(nfd);
  }
out_buf:
  free(buf);
out:
  free(mv);
  close(fd);
  return r;
}

/* Delete the index rows of ids whose time is still < cutoff_ns, in one
 * transaction, keeping the packs' live bytes; counts into c only once
 * committed.  -ENOSPC if the filesystem is full. */
static int idx_delete(struct local_be *be, const store_id_t *ids, size_t n,
                      int64_t cutoff_ns, store_sweep_counts_t *c, char **err)
{
  sqlite3_stmt *q = NULL, *lv = NULL;
  uint64_t removed = 0, bytes = 0;
  int r;
  pthread_mutex_lock(&be->dblock);
  if ((r = db_exec(be, "BEGIN IMMEDIATE", err)) < 0)
    goto out;
  if (sqlite3_prepare_v2(be->db, "DELETE FROM objects WHERE id=?1 AND t<?2 "
                         "RETURNING pack, len", -1, &q, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(be->db, "UPDATE packs SET live=live-?2, "
                         "records=records-1 WHERE id=?1", -1, &lv, NULL)
      != SQLITE_OK)
    r = db_fail(be, err, "prepare");
  for (size_t i = 0; r == 0 && i < n; i++) {
    sqlite3_bind_blob(q, 1, ids[i].b, STORE_ID_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, cutoff_ns);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
      int64_t pk = sqlite3_column_int64(q, 0);
      int64_t len = sqlite3_column_int64(q, 1);
      while ((rc = sqlite3_step(q)) == SQLITE_ROW)
        ;
      removed++;
      bytes += (uint64_t)len;
      sqlite3_bind_int64(lv, 1, pk);
      sqlite3_bind_int64(lv, 2, len);
      if (sqlite3_step(lv) != SQLITE_DONE)
        r = db_fail(be, err, "account pack");
      sqlite3_reset(lv);
    }
    if (r == 0 && rc != SQLITE_DONE)
      r = db_fail(be, err, "delete object");
    sqlite3_reset(q);
  }
  if (r == 0)
    r = db_exec(be, "COMMIT", err);
  if (r < 0)
    sqlite3_exec(be->db, "ROLLBACK", NULL, NULL, NULL);
out:
  sqlite3_finalize(q);
  sqlite3_finalize(lv);
  pthread_mutex_unlock(&be->dblock);
  if (r == 0) {
    c->removed_objects += removed;
    c->removed_bytes += bytes;
  }
  return r;
}

static int local_sweep(void *p, int64_t cutoff_ns,
                       int (*doomed)(const store_id_t *id, void *ud), void *ud,
                       store_sweep_counts_t *c, char **err)
{
  struct local_be *be = p;
  int gc = cutoff_ns > INT64_MIN, r = 0;
  uint64_t torn = 0, orphans = 0;
  if (gc && (r = packs_recover(be, &torn, &orphans, err)) < 0)
    return r;
  c->tmp_files += orphans;
  c->removed_tmp += orphans;

  /* 1. the index: count, and collect what is doomed and old enough */
  store_id_t *del = NULL;
  size_t ndel = 0, cap = 0;
  sqlite3_stmt *q = NULL;
  pthread_mutex_lock(&be->dblock);
  if (sqlite3_prepare_v2(be->db, "SELECT id, len, t FROM objects", -1, &q,
                         NULL) != SQLITE_OK) {
    r = db_fail(be, err, "prepare");
  } else {
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
      store_id_t id;
      if (sqlite3_column_bytes(q, 0) != STORE_ID_LEN) {
        c->foreign_files++;
        continue;
      }
      memcpy(id.b, sqlite3_column_blob(q, 0), STORE_ID_LEN);
      uint64_t len = (uint64_t)sqlite3_column_int64(q, 1);
      c->objects++;
      c->bytes += len;
      if (!doomed(&id, ud))
        continue;
      c->garbage_objects++;
      c->garbage_bytes += len;
      if (sqlite3_column_int64(q, 2) >= cutoff_ns) {
        c->kept_recent++;
        continue;
      }
      if (ndel == cap) {
        size_t nc = cap ? cap * 2 : 1024;
        store_id_t *nd = realloc(del, nc * sizeof *nd);
        if (!nd) {
          r = store_err(err, ENOMEM, "out of memory");
          break;
        }
        del = nd;
        cap = nc;
      }
      del[ndel++] = id;
    }
    if (r == 0 && rc != SQLITE_DONE)
      r = db_fail(be, err, "scan index");
  }
  sqlite3_finalize(q);
  q = NULL;
  pthread_mutex_unlock(&be->dblock);

  /* 2. delete them, unless a writer refreshed them meanwhile; in batches,
   * so a full filesystem needs only a little room (the reserve) to let
   * GC free space */
  int released = 0;
  for (size_t i = 0; r == 0 && gc && i < ndel; i += GC_DELETE_BATCH) {
    size_t nb = ndel - i < GC_DELETE_BATCH ? ndel - i : GC_DELETE_BATCH;
    char *e2 = NULL;
    r = idx_delete(be, del + i, nb, cutoff_ns, c, &e2);
    if (r == -ENOSPC && !released) {
      released = 1;
      reserve_release(be);
      free(e2);
      e2 = NULL;
      r = idx_delete(be, del + i, nb, cutoff_ns, c, &e2);
    }
    if (r < 0)
      store_err(err, -r, "%s", e2 ? e2 : strerror(-r));
    free(e2);
  }
  free(del);
  if (r < 0)
    return r;

  /* 3. loose objects of older stores */
  if (be->have_loose && (r = loose_sweep(be, cutoff_ns, doomed, ud, c,
                                         err)) < 0)
    return r;
  if (!gc)
    return 0;

  /* 4. compact packs that are less than half live.  Our own active pack
   * is retired first if nothing of it is pending, so it can be compacted
   * too (other writers' active packs stay locked and are skipped). */
  pthread_rwlock_wrlock(&be->append);
  pthread_mutex_lock(&be->lock);
  if (be->pn == 0 && be->afd >= 0) {
    close(be->afd);
    be->afd = -1;
  }
  pthread_mutex_unlock(&be->lock);
  pthread_rwlock_unlock(&be->append);
  uint64_t *cand = NULL;
  size_t ncand = 0;
  cap = 0;
  pthread_mutex_lock(&be->dblock);
  if (sqlite3_prepare_v2(be->db, "SELECT id FROM packs WHERE live*2 < "
                         "committed - 16 ORDER BY live", -1, &q, NULL)
      != SQLITE_OK) {
    r = db_fail(be, err, "prepare");
  } else {
    while (sqlite3_step(q) == SQLITE_ROW) {
      if (ncand == cap) {
        size_t nc = cap ? cap * 2 : 64;
        uint64_t *nn = realloc(cand, nc * sizeof *nn);
        if (!nn) {
          r = store_err(err, ENOMEM, "out of memory");
          break;
        }
        cand = nn;
        cap = nc;
      }
      cand[ncand++] = (uint64_t)sqlite3_column_int64(q, 0);
    }
  }
  sqlite3_finalize(q);
  pthread_mutex_unlock(&be->dblock);
  /* Emptiest first: removing a dead pack needs no room; copying live
   * records does, and a pack that cannot be copied for want of space is
   * left for the next GC. */
  uint64_t freed = 0;
  for (size_t i = 0; r == 0 && i < ncand; i++) {
    char *e2 = NULL;
    r = pack_compact(be, cand[i], &freed, &e2);
    if (r == -ENOSPC)
      r = 0;
    else if (r < 0)
      store_err(err, -r, "%s", e2 ? e2 : strerror(-r));
    free(e2);
  }
  free(cand);
  reserve_take(be);
  return r;
}

/* ---- tools and tests ---- */

static int local_locate(void *p, const store_id_t *id, char **path,
                        uint64_t *offset, uint64_t *len, char **err)
{
  struct local_be *be = p;
  uint64_t pack, off;
  uint32_t ilen;
  int r = idx_get(be, id, &pack, &off, &ilen, err);
  if (r < 0)
    return r;
  if (r == 1) {
    char name[32];
    pack_name(name, pack);
    if (asprintf(path, "%s/packs/%s", be->objdir, name) == -1)
      return store_err(err, ENOMEM, "out of memory");
    *offset = off;
    *len = ilen;
    return 0;
  }
  char *lp = local_path(be, id);
  struct stat st;
  if (!lp)
    return store_err(err, ENOMEM, "out of memory");
  if (stat(lp, &st) == -1) {
    r = store_err(err, errno, "object %s: %m", lp);
    free(lp);
    return r;
  }
  *path = lp;
  *offset = 0;
  *len = (uint64_t)st.st_size;
  return 0;
}

static int local_set_time(void *p, const store_id_t *id, int64_t t_ns,
                          char **err)
{
  struct local_be *be = p;
  sqlite3_stmt *u;
  int r = 0;
  pthread_mutex_lock(&be->dblock);
  if (sqlite3_prepare_v2(be->db, "UPDATE objects SET t=?2 WHERE id=?1", -1,
                         &u, NULL) != SQLITE_OK) {
    pthread_mutex_unlock(&be->dblock);
    return db_fail(be, err, "prepare");
  }
  sqlite3_bind_blob(u, 1, id->b, STORE_ID_LEN, SQLITE_STATIC);
  sqlite3_bind_int64(u, 2, t_ns);
  if (sqlite3_step(u) != SQLITE_DONE)
    r = db_fail(be, err, "set time");
  else if (sqlite3_changes(be->db) == 0)
    r = -ENOENT;
  sqlite3_finalize(u);
  pthread_mutex_unlock(&be->dblock);
  if (r != -ENOENT)
    return r;
  char rel[STORE_ID_HEX_LEN + 2];
  loose_relpath(id, rel);
  struct timespec ts[2] = { { t_ns / 1000000000, t_ns % 1000000000 },
                            { t_ns / 1000000000, t_ns % 1000000000 } };
  if (utimensat(be->objfd, rel, ts, 0) == -1)
    return store_err(err, errno, "object %s/%s: %m", be->objdir, rel);
  return 0;
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
  .locate = local_locate,
  .set_time = local_set_time,
};
