/* lanes block store — store directory, refs, image import, disk creation.
 *
 * STORE/store.db (SQLite, WAL, synchronous=FULL, busy_timeout) holds:
 *   meta(key, value)   format, chunk_size, fanout, backend — fixed at creation
 *   refs(name, root, size, generation, parent, created, updated)
 * STORE/objects/...    the object backend (objects-local.c), or, for an S3
 *                      store (meta backend = 's3'), STORE/backend.conf and
 *                      objects-s3.c: objects and refs in a bucket, SQLite a
 *                      local mirror of the bucket's refs.
 *
 * Remote refs (backends with the optional ref_* ops): every transaction
 * that changes a ref also tells the backend (ref_dirty/ref_commit) while
 * it still holds the lock, and every public call that changed refs calls
 * ops->publish afterwards, so the bucket follows the local mirror.
 *
 * Ordering invariant (crash safety): every object a ref will reference is
 * written and synced (ops->sync) BEFORE the transaction that makes the ref
 * point at it.  So a ref never names a missing object; a crash in between
 * only leaves unreferenced objects (garbage for GC).
 *
 * Writers and GC: every path that puts objects a ref commit will later
 * reference (the disk engine, import, disk creation) runs inside a pending
 * session (store_pending_begin/end), published as the mtime of the file
 * STORE/pending/<pid>-<start time>-<random>; gc.c reads those files and
 * never deletes objects younger than the oldest open session of a live
 * process.
 *
 * Threading: store->lock serializes every use of the SQLite connection;
 * pending_lock the pending session count; object backend calls need no
 * store lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store-internal.h"

#define STORE_FORMAT "1"

int store_err(char **err, int errnum, const char *fmt, ...)
{
  if (err && !*err) {
    va_list ap;
    int saved = errno;
    errno = errnum;    /* so %m in fmt names errnum */
    va_start(ap, fmt);
    if (vasprintf(err, fmt, ap) == -1)
      *err = NULL;
    va_end(ap);
    errno = saved;
  }
  return -errnum;
}

void store_hash(const void *buf, size_t len, store_id_t *out)
{
  unsigned int n = STORE_ID_LEN;
  EVP_Digest(buf, len, out->b, &n, EVP_sha256(), NULL);
}

int store_id_is_zero(const store_id_t *id)
{
  static const store_id_t zero;
  return memcmp(id, &zero, sizeof zero) == 0;
}

void store_id_to_hex(const store_id_t *id, char hex[STORE_ID_HEX_LEN + 1])
{
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < STORE_ID_LEN; i++) {
    hex[2 * i] = digits[id->b[i] >> 4];
    hex[2 * i + 1] = digits[id->b[i] & 15];
  }
  hex[STORE_ID_HEX_LEN] = '\0';
}

static int hexval(char c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int store_id_from_hex(const char *hex, store_id_t *out)
{
  store_id_t id;
  if (strlen(hex) != STORE_ID_HEX_LEN)
    return -EINVAL;
  for (int i = 0; i < STORE_ID_LEN; i++) {
    int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return -EINVAL;
    id.b[i] = (uint8_t)(hi << 4 | lo);
  }
  *out = id;
  return 0;
}

int store_object_read(store_t *s, const store_id_t *id, void *buf, size_t cap,
                      size_t *len, const char *what, char **err)
{
  char hex[STORE_ID_HEX_LEN + 1];
  char *berr = NULL;
  size_t n;
  store_id_t got;

  store_id_to_hex(id, hex);
  int r = s->ops->get(s->be, id, buf, cap, &n, &berr);
  if (r < 0) {
    store_err(err, EIO, "%s: object %s %s: %s", what, hex,
              r == -ENOENT ? "missing" : "unreadable", berr ? berr : "");
    free(berr);
    return -EIO;
  }
  store_hash(buf, n, &got);
  if (memcmp(&got, id, sizeof got) != 0)
    return store_err(err, EIO, "%s: object %s is corrupt (SHA-256 mismatch)",
                     what, hex);
  *len = n;
  return 0;
}

/* ---- positioned I/O ---- */

int store_pread_all(int fd, void *buf, size_t len, uint64_t off, size_t *got)
{
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, (char *)buf + done, len - done,
                      (off_t)(off + done));
    if (n == -1) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (n == 0)
      break;
    done += (size_t)n;
  }
  *got = done;
  return 0;
}

int store_pwritev_all(int fd, const struct iovec *iov, int n, uint64_t off)
{
  struct iovec v[4];
  if (n < 0 || n > 4)
    return -EINVAL;
  memcpy(v, iov, (size_t)n * sizeof *v);
  struct iovec *p = v;
  while (n) {
    ssize_t w = pwritev(fd, p, n, (off_t)off);
    if (w == -1) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (w == 0)
      return -EIO;
    off += (uint64_t)w;
    while (n && (size_t)w >= p->iov_len) {
      w -= (ssize_t)p->iov_len;
      p++;
      n--;
    }
    if (n) {
      p->iov_base = (char *)p->iov_base + w;
      p->iov_len -= (size_t)w;
    }
  }
  return 0;
}

/* ---- SQLite helpers ---- */

static int db_err(store_t *s, char **err, const char *what)
{
  int code = sqlite3_errcode(s->db);
  int e = (code == SQLITE_BUSY || code == SQLITE_LOCKED) ? EBUSY
        : code == SQLITE_FULL ? ENOSPC
        : code == SQLITE_CONSTRAINT ? EEXIST : EIO;
  return store_err(err, e, "%s: %s", what, sqlite3_errmsg(s->db));
}

static int db_exec(store_t *s, const char *sql, char **err)
{
  if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
    return db_err(s, err, sql);
  return 0;
}

static int db_prepare(store_t *s, const char *sql, sqlite3_stmt **st,
                      char **err)
{
  if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK)
    return db_err(s, err, "prepare");
  return 0;
}

static void db_rollback(store_t *s)
{
  sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

static int db_open(const char *dir, sqlite3 **out, char **err)
{
  char *path;
  sqlite3 *db = NULL;
  if (asprintf(&path, "%s/store.db", dir) == -1)
    return store_err(err, ENOMEM, "out of memory");
  int rc = sqlite3_open_v2(path, &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                           SQLITE_OPEN_FULLMUTEX, NULL);
  if (rc != SQLITE_OK) {
    int r = store_err(err, EIO, "open %s: %s", path,
                      db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    free(path);
    return r;
  }
  free(path);
  sqlite3_busy_timeout(db, 10000);
  const char *pragmas =
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS refs("
    " name TEXT PRIMARY KEY, root BLOB NOT NULL, size INTEGER NOT NULL,"
    " generation INTEGER NOT NULL, parent TEXT,"
    " created INTEGER NOT NULL, updated INTEGER NOT NULL);";
  char *msg = NULL;
  if (sqlite3_exec(db, pragmas, NULL, NULL, &msg) != SQLITE_OK) {
    int r = store_err(err, EIO, "initialize %s/store.db: %s", dir,
                      msg ? msg : "?");
    sqlite3_free(msg);
    sqlite3_close(db);
    return r;
  }
  *out = db;
  return 0;
}

static int is_pow2(uint32_t v)
{
  return v && !(v & (v - 1));
}

/* Create the SQLite side of a store with the given backend name. */
int store_create_backend(const char *dir, const store_params_t *params,
                         const char *backend, char **err)
{
  store_params_t p = { STORE_DEFAULT_CHUNK_SIZE, STORE_DEFAULT_FANOUT };
  if (params && params->chunk_size)
    p.chunk_size = params->chunk_size;
  if (params && params->fanout)
    p.fanout = params->fanout;
  if (!is_pow2(p.chunk_size) || p.chunk_size < 4096 ||
      p.chunk_size > 4u * 1024 * 1024)
    return store_err(err, EINVAL, "chunk size %u: must be a power of two "
                     "between 4 KiB and 4 MiB", p.chunk_size);
  if (!is_pow2(p.fanout) || p.fanout < 4 || p.fanout > 4096)
    return store_err(err, EINVAL, "fanout %u: must be a power of two "
                     "between 4 and 4096", p.fanout);
  if (mkdir(dir, 0755) == -1 && errno != EEXIST)
    return store_err(err, errno, "mkdir %s: %m", dir);

  sqlite3 *db;
  int r = db_open(dir, &db, err);
  if (r < 0)
    return r;
  char sql[512];
  snprintf(sql, sizeof sql,
           "BEGIN IMMEDIATE;"
           "INSERT INTO meta VALUES('format','" STORE_FORMAT "');"
           "INSERT INTO meta VALUES('backend','%s');"
           "INSERT INTO meta VALUES('chunk_size','%u');"
           "INSERT INTO meta VALUES('fanout','%u');"
           "COMMIT;", backend, p.chunk_size, p.fanout);
  if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
    int code = sqlite3_errcode(db);
    r = code == SQLITE_CONSTRAINT
      ? store_err(err, EEXIST, "a store already exists in %s", dir)
      : store_err(err, EIO, "create store in %s: %s", dir, sqlite3_errmsg(db));
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  }
  sqlite3_close(db);
  if (r == 0 && strcmp(backend, "local") == 0) {
    /* The objects directory is made here so a fresh store is complete. */
    void *be;
    if ((r = store_backend_local.open(dir, &be, err)) == 0)
      store_backend_local.close(be);
  }
  return r;
}

int store_create(const char *dir, const store_params_t *params, char **err)
{
  return store_create_backend(dir, params, "local", err);
}

static int meta_get_text(store_t *s, const char *key, char *out, size_t cap)
{
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key=?", -1, &st,
                         NULL) != SQLITE_OK)
    return -EIO;
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  int r = -ENOENT;
  if (sqlite3_step(st) == SQLITE_ROW) {
    snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
    r = 0;
  }
  sqlite3_finalize(st);
  return r;
}

static int meta_get_u32(store_t *s, const char *key, uint32_t *out,
                        char **err)
{
  sqlite3_stmt *st;
  int r = db_prepare(s, "SELECT value FROM meta WHERE key=?", &st, err);
  if (r < 0)
    return r;
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    *out = (uint32_t)strtoul((const char *)sqlite3_column_text(st, 0), NULL, 10);
  else if (rc == SQLITE_DONE)
    r = store_err(err, ENOENT, "no store in %s (meta key %s missing)",
                  s->dir, key);
  else
    r = db_err(s, err, "read store meta");
  sqlite3_finalize(st);
  return r;
}

int store_open(const char *dir, int create, store_t **out, char **err)
{
  char *dbpath;
  struct stat sb;
  int r;

  if (asprintf(&dbpath, "%s/store.db", dir) == -1)
    return store_err(err, ENOMEM, "out of memory");
  int exists = stat(dbpath, &sb) == 0;
  free(dbpath);
  if (!exists) {
    if (!create)
      return store_err(err, ENOENT, "no store in %s", dir);
    r = store_create(dir, NULL, err);
    if (r < 0 && r != -EEXIST)
      return r;
    if (r == -EEXIST && err) {  /* lost a creation race: fine */
      free(*err);
      *err = NULL;
    }
  }

  store_t *s = calloc(1, sizeof *s);
  if (!s || !(s->dir = strdup(dir))) {
    free(s);
    return store_err(err, ENOMEM, "out of memory");
  }
  pthread_mutex_init(&s->lock, NULL);
  pthread_mutex_init(&s->pending_lock, NULL);
  s->pending_fd = -1;
  s->ops = &store_backend_local;
  if ((r = db_open(dir, &s->db, err)) < 0)
    goto fail;
  if ((r = meta_get_u32(s, "chunk_size", &s->chunk_size, err)) < 0 ||
      (r = meta_get_u32(s, "fanout", &s->fanout, err)) < 0)
    goto fail;
  if (!is_pow2(s->chunk_size) || s->chunk_size < 4096 || !is_pow2(s->fanout) ||
      s->fanout < 4) {
    r = store_err(err, EINVAL, "store %s: bad parameters in meta", dir);
    goto fail;
  }
  char backend[32] = "local";
  (void)meta_get_text(s, "backend", backend, sizeof backend);
  if (strcmp(backend, "s3") == 0) {
    s->ops = &store_backend_s3;
  } else if (strcmp(backend, "local") != 0) {
    r = store_err(err, EINVAL, "store %s: unknown backend '%s'", dir, backend);
    goto fail;
  }
  if ((r = s->ops->open(dir, &s->be, err)) < 0)
    goto fail;
  if (s->ops->attach && (r = s->ops->attach(s->be, s, err)) < 0)
    goto fail;
  /* A remote backend's refs are the truth: start from them. */
  if (s->ops->refresh && (r = s->ops->refresh(s->be, err)) < 0)
    goto fail;
  *out = s;
  return 0;
fail:
  store_close(s);
  return r;
}

void store_close(store_t *s)
{
  if (!s)
    return;
  if (s->be)
    s->ops->close(s->be);
  sqlite3_close(s->db);
  if (s->pending_fd >= 0) {
    unlink(s->pending_path);
    close(s->pending_fd);
  }
  free(s->pending_path);
  pthread_mutex_destroy(&s->pending_lock);
  pthread_mutex_destroy(&s->lock);
  free(s->dir);
  free(s);
}

void store_get_params(const store_t *s, store_params_t *out)
{
  out->chunk_size = s->chunk_size;
  out->fanout = s->fanout;
}

void store_set_sync_mode(store_t *s, store_sync_mode_t mode)
{
  s->ops->set_sync_mode(s->be, mode);
}

char *store_object_path(const store_t *s, const store_id_t *id)
{
  return s->ops->path(s->be, id);
}

int store_object_locate(store_t *s, const store_id_t *id, char **path,
                        uint64_t *offset, uint64_t *len, char **err)
{
  if (!s->ops->locate)
    return store_err(err, EOPNOTSUPP, "the %s backend cannot locate objects",
                     s->ops->name);
  return s->ops->locate(s->be, id, path, offset, len, err);
}

int store_object_set_time(store_t *s, const store_id_t *id, int64_t t_ns,
                          char **err)
{
  if (!s->ops->set_time)
    return store_err(err, EOPNOTSUPP, "the %s backend has no object times",
                     s->ops->name);
  return s->ops->set_time(s->be, id, t_ns, err);
}

/* ---- pending writer sessions ---- */

uint64_t store_proc_start_time(pid_t pid)
{
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  /* comm may contain spaces and parentheses: fields follow the last ')' */
  char *p = strrchr(buf, ')');
  if (!p)
    return 0;
  p++;
  for (int field = 3; field < 22 && p; field++)   /* p: space before 3 */
    p = strchr(p + 1, ' ');
  return p ? strtoull(p + 1, NULL, 10) : 0;
}

static int pending_file_open(store_t *s, char **err)
{
  char *dir;
  uint64_t rnd = 0;
  if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
    rnd = (uint64_t)(uintptr_t)s ^ (uint64_t)time(NULL);
  if (asprintf(&dir, "%s/pending", s->dir) == -1)
    return store_err(err, ENOMEM, "out of memory");
  if (mkdir(dir, 0755) == -1 && errno != EEXIST) {
    int r = store_err(err, errno, "mkdir %s: %m", dir);
    free(dir);
    return r;
  }
  pid_t pid = getpid();
  int r = asprintf(&s->pending_path, "%s/%ld-%llu-%016llx", dir, (long)pid,
                   (unsigned long long)store_proc_start_time(pid),
                   (unsigned long long)rnd);
  free(dir);
  if (r == -1) {
    s->pending_path = NULL;
    return store_err(err, ENOMEM, "out of memory");
  }
  s->pending_fd = open(s->pending_path,
                       O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (s->pending_fd == -1) {
    r = store_err(err, errno, "create %s: %m", s->pending_path);
    free(s->pending_path);
    s->pending_path = NULL;
    return r;
  }
  return 0;
}

int store_pending_begin(store_t *s, char **err)
{
  int r = 0;
  pthread_mutex_lock(&s->pending_lock);
  if (s->pending_count == 0) {
    if (s->pending_fd < 0)
      r = pending_file_open(s, err);
    /* size 1 = a session is open; mtime := now, before any object of
     * this session is put */
    if (r == 0 && (ftruncate(s->pending_fd, 1) == -1 ||
                   futimens(s->pending_fd, NULL) == -1))
      r = store_err(err, errno, "touch %s: %m", s->pending_path);
  }
  if (r == 0)
    s->pending_count++;
  pthread_mutex_unlock(&s->pending_lock);
  return r;
}

void store_pending_end(store_t *s)
{
  pthread_mutex_lock(&s->pending_lock);
  /* size 0 = idle.  If this fails the file still says "pending since
   * then": GC is only more careful. */
  if (s->pending_count > 0 && --s->pending_count == 0)
    (void)!ftruncate(s->pending_fd, 0);
  pthread_mutex_unlock(&s->pending_lock);
}

/* ---- refs ---- */

/* Ref names: "<namespace>/<rest>", chars [A-Za-z0-9._-] and '/', no empty
 * or dot-only components. */
static int ref_name_check(const char *name, char **err)
{
  size_t len = strlen(name);
  if (len == 0 || len > STORE_REF_NAME_MAX)
    return store_err(err, EINVAL, "ref name '%s': empty or too long", name);
  if (strncmp(name, "image/", 6) && strncmp(name, "disk/", 5) &&
      strncmp(name, "snap/", 5))
    return store_err(err, EINVAL, "ref name '%s': must start with image/, "
                     "disk/ or snap/", name);
  const char *comp = name;
  for (const char *p = name;; p++) {
    if (*p == '/' || *p == '\0') {
      size_t cl = (size_t)(p - comp);
      if (cl == 0 || (cl == 1 && comp[0] == '.') ||
          (cl == 2 && comp[0] == '.' && comp[1] == '.'))
        return store_err(err, EINVAL, "ref name '%s': bad component", name);
      if (*p == '\0')
        break;
      comp = p + 1;
      continue;
    }
    char c = *p;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return store_err(err, EINVAL, "ref name '%s': bad character", name);
  }
  return 0;
}

static void ref_from_row(sqlite3_stmt *st, store_ref_t *ref)
{
  memset(ref, 0, sizeof *ref);
  snprintf(ref->name, sizeof ref->name, "%s",
           (const char *)sqlite3_column_text(st, 0));
  if (sqlite3_column_bytes(st, 1) == STORE_ID_LEN)
    memcpy(ref->root.b, sqlite3_column_blob(st, 1), STORE_ID_LEN);
  ref->size = (uint64_t)sqlite3_column_int64(st, 2);
  ref->generation = (uint64_t)sqlite3_column_int64(st, 3);
  if (sqlite3_column_type(st, 4) != SQLITE_NULL)
    snprintf(ref->parent, sizeof ref->parent, "%s",
             (const char *)sqlite3_column_text(st, 4));
  ref->created = sqlite3_column_int64(st, 5);
  ref->updated = sqlite3_column_int64(st, 6);
}

#define REF_COLS "name, root, size, generation, parent, created, updated"

/* Caller holds s->lock. */
int store_ref_get_locked(store_t *s, const char *name, store_ref_t *out,
                         char **err)
{
  sqlite3_stmt *st;
  int r = db_prepare(s, "SELECT " REF_COLS " FROM refs WHERE name=?", &st,
                     err);
  if (r < 0)
    return r;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    ref_from_row(st, out);
  else if (rc == SQLITE_DONE)
    r = store_err(err, ENOENT, "no ref %s", name);
  else
    r = db_err(s, err, "read ref");
  sqlite3_finalize(st);
  return r;
}

/* Tell a backend with remote refs that name changed (caller holds s->lock
 * inside the transaction that changes it). */
static int ref_mark(store_t *s, const char *name, char **err)
{
  return s->ops->ref_dirty ? s->ops->ref_dirty(s->be, name, err) : 0;
}

/* After a public call changed refs: push them to the remote, if any. */
static int refs_publish(store_t *s, int r, char **err)
{
  if (r < 0 || !s->ops->publish)
    return r;
  int p = s->ops->publish(s->be, err);
  return p < 0 ? p : r;
}

int store_ref_set_locked(store_t *s, const store_ref_t *ref, char **err)
{
  sqlite3_stmt *st;
  int r = db_prepare(s, "INSERT OR REPLACE INTO refs(" REF_COLS ") "
                     "VALUES(?1,?2,?3,?4,?5,?6,?7)", &st, err);
  if (r < 0)
    return r;
  sqlite3_bind_text(st, 1, ref->name, -1, SQLITE_STATIC);
  sqlite3_bind_blob(st, 2, ref->root.b, STORE_ID_LEN, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)ref->size);
  sqlite3_bind_int64(st, 4, (sqlite3_int64)ref->generation);
  if (ref->parent[0])
    sqlite3_bind_text(st, 5, ref->parent, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 5);
  sqlite3_bind_int64(st, 6, ref->created);
  sqlite3_bind_int64(st, 7, ref->updated);
  if (sqlite3_step(st) != SQLITE_DONE)
    r = db_err(s, err, "write ref");
  sqlite3_finalize(st);
  return r;
}

int store_ref_get(store_t *s, const char *name, store_ref_t *out, char **err)
{
  pthread_mutex_lock(&s->lock);
  int r = store_ref_get_locked(s, name, out, err);
  pthread_mutex_unlock(&s->lock);
  return r;
}

/* Insert or replace ref name (caller holds s->lock and a transaction).
 * A replaced ref keeps counting generations so a writer holding the old one
 * notices (its compare-and-swap commit fails). */
static int ref_put_locked(store_t *s, const char *name, const store_id_t *root,
                          uint64_t size, const char *parent, int replace,
                          char **err)
{
  sqlite3_stmt *st;
  const char *sql = replace
    ? "INSERT INTO refs(" REF_COLS ") VALUES(?1,?2,?3,1,?4,?5,?5) "
      "ON CONFLICT(name) DO UPDATE SET root=?2, size=?3, "
      "generation=generation+1, parent=?4, updated=?5"
    : "INSERT INTO refs(" REF_COLS ") VALUES(?1,?2,?3,1,?4,?5,?5)";
  int r = db_prepare(s, sql, &st, err);
  if (r < 0)
    return r;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  sqlite3_bind_blob(st, 2, root->b, STORE_ID_LEN, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)size);
  if (parent && *parent)
    sqlite3_bind_text(st, 4, parent, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 4);
  sqlite3_bind_int64(st, 5, (sqlite3_int64)time(NULL));
  int rc = sqlite3_step(st);
  if (rc != SQLITE_DONE) {
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
      r = store_err(err, EEXIST, "ref %s already exists", name);
    else
      r = db_err(s, err, "write ref");
  }
  sqlite3_finalize(st);
  return r < 0 ? r : ref_mark(s, name, err);
}

int store_ref_commit(store_t *s, const char *name, uint64_t expect_gen,
                     const store_id_t *root, uint64_t size, char **err)
{
  sqlite3_stmt *st;
  int r;
  pthread_mutex_lock(&s->lock);
  if ((r = db_exec(s, "BEGIN IMMEDIATE", err)) < 0)
    goto out;
  if ((r = db_prepare(s, "UPDATE refs SET root=?, size=?, "
                      "generation=generation+1, updated=? "
                      "WHERE name=? AND generation=?", &st, err)) < 0) {
    db_rollback(s);
    goto out;
  }
  sqlite3_bind_blob(st, 1, root->b, STORE_ID_LEN, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)size);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL));
  sqlite3_bind_text(st, 4, name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 5, (sqlite3_int64)expect_gen);
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    r = db_err(s, err, "commit ref");
    db_rollback(s);
    goto out;
  }
  if (sqlite3_changes(s->db) != 1) {
    store_ref_t cur;
    char *e2 = NULL;
    r = store_ref_get_locked(s, name, &cur, &e2);
    free(e2);
    r = r == -ENOENT
      ? store_err(err, ENOENT, "commit %s: ref was deleted", name)
      : store_err(err, ESTALE, "commit %s: ref changed under us "
                  "(generation %llu, expected %llu)", name,
                  (unsigned long long)cur.generation,
                  (unsigned long long)expect_gen);
    db_rollback(s);
    goto out;
  }
  if (s->ops->ref_commit) {
    store_ref_t now;
    if ((r = store_ref_get_locked(s, name, &now, err)) < 0 ||
        (r = s->ops->ref_commit(s->be, &now, err)) < 0) {
      db_rollback(s);
      goto out;
    }
  }
  if ((r = db_exec(s, "COMMIT", err)) < 0)
    db_rollback(s);
out:
  pthread_mutex_unlock(&s->lock);
  return r;
}

int store_ref_copy(store_t *s, const char *src, const char *dst, int replace,
                   char **err)
{
  store_ref_t ref;
  int r;
  if ((r = ref_name_check(dst, err)) < 0)
    return r;
  pthread_mutex_lock(&s->lock);
  if ((r = db_exec(s, "BEGIN IMMEDIATE", err)) < 0)
    goto out;
  if ((r = store_ref_get_locked(s, src, &ref, err)) < 0 ||
      (r = ref_put_locked(s, dst, &ref.root, ref.size, src, replace, err)) < 0 ||
      (r = db_exec(s, "COMMIT", err)) < 0)
    db_rollback(s);
out:
  pthread_mutex_unlock(&s->lock);
  return refs_publish(s, r, err);
}

int store_ref_delete(store_t *s, const char *name, char **err)
{
  sqlite3_stmt *st;
  int r;
  pthread_mutex_lock(&s->lock);
  if ((r = db_exec(s, "BEGIN IMMEDIATE", err)) < 0)
    goto out;
  if ((r = db_prepare(s, "DELETE FROM refs WHERE name=?", &st, err)) < 0)
    goto fail;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  if (sqlite3_step(st) != SQLITE_DONE)
    r = db_err(s, err, "delete ref");
  else if (sqlite3_changes(s->db) == 0)
    r = store_err(err, ENOENT, "no ref %s", name);
  sqlite3_finalize(st);
  if (r < 0 || (r = ref_mark(s, name, err)) < 0 ||
      (r = db_exec(s, "COMMIT", err)) < 0)
    goto fail;
  goto out;
fail:
  db_rollback(s);
out:
  pthread_mutex_unlock(&s->lock);
  return refs_publish(s, r, err);
}

int store_ref_list(store_t *s, const char *prefix, store_ref_cb cb, void *ud,
                   char **err)
{
  sqlite3_stmt *st;
  int r, n = 0;
  if (!prefix)
    prefix = "";
  pthread_mutex_lock(&s->lock);
  /* substr() rather than LIKE: ref names may contain '_' */
  if ((r = db_prepare(s, "SELECT " REF_COLS " FROM refs WHERE "
                      "substr(name, 1, length(?1)) = ?1 ORDER BY name",
                      &st, err)) < 0)
    goto out;
  sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    store_ref_t ref;
    ref_from_row(st, &ref);
    n++;
    if (cb(&ref, ud))
      break;
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    r = db_err(s, err, "list refs");
  sqlite3_finalize(st);
out:
  pthread_mutex_unlock(&s->lock);
  return r < 0 ? r : n;
}

/* ---- import / create ---- */

int store_image_import(store_t *s, const char *name, const char *raw_path,
                       store_progress_cb progress, void *ud, char **err)
{
  char refname[STORE_REF_NAME_MAX + 8];
  map_t *m = NULL;
  uint8_t *buf = NULL;
  struct stat sb;
  int r, fd, pending = 0;

  snprintf(refname, sizeof refname, "image/%s", name);
  if (strchr(name, '/'))
    return store_err(err, EINVAL, "image name '%s': no '/' allowed", name);
  if ((r = ref_name_check(refname, err)) < 0)
    return r;
  fd = open(raw_path, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return store_err(err, errno, "open %s: %m", raw_path);
  if (fstat(fd, &sb) == -1) {
    r = store_err(err, errno, "stat %s: %m", raw_path);
    goto out;
  }
  uint64_t size = (uint64_t)sb.st_size;
  store_id_t zero;
  memset(&zero, 0, sizeof zero);
  if ((r = store_pending_begin(s, err)) < 0)
    goto out;
  pending = 1;
  if ((r = map_open(s, &zero, size, &m, err)) < 0)
    goto out;
  size_t cs = s->chunk_size;
  if (!(buf = malloc(cs))) {
    r = store_err(err, ENOMEM, "out of memory");
    goto out;
  }
  uint64_t nchunks = map_nchunks(m), data_end = 0;
  for (uint64_t idx = 0; idx < nchunks; idx++) {
    off_t off = (off_t)(idx * cs);
    /* Skip holes of sparse files without reading them. */
    if ((uint64_t)off >= data_end) {
      off_t d = lseek(fd, off, SEEK_DATA);
      if (d == -1 && errno == ENXIO)
        break;                        /* only a hole remains */
      if (d == -1) {
        data_end = size;              /* no SEEK_DATA: read everything */
      } else {
        if ((uint64_t)d >= (uint64_t)off + cs) {
          idx = (uint64_t)d / cs - 1;  /* loop ++ lands on d's chunk */
          continue;
        }
        off_t h = lseek(fd, d, SEEK_HOLE);
        data_end = h == -1 ? size : (uint64_t)h;
      }
    }
    size_t got = 0;
    if ((r = store_pread_all(fd, buf, cs, (uint64_t)off, &got)) < 0) {
      r = store_err(err, -r, "read %s at %lld: %s", raw_path, (long long)off,
                    strerror(-r));
      goto out;
    }
    if (got < cs)
      memset(buf + got, 0, cs - got);
    if (!store_buf_is_zero(buf, cs)) {
      store_id_t id;
      store_hash(buf, cs, &id);
      if ((r = s->ops->put(s->be, &id, buf, cs, err)) < 0 ||
          (r = map_set(m, idx, &id, err)) < 0)
        goto out;
    }
    if (progress && (idx % 256 == 255) &&
        progress((idx + 1) * cs < size ? (idx + 1) * cs : size, size, ud)) {
      r = store_err(err, ECANCELED, "import of %s cancelled", raw_path);
      goto out;
    }
  }
  store_id_t root;
  if ((r = map_write(m, &root, err)) < 0 || (r = s->ops->sync(s->be, err)) < 0)
    goto out;
  pthread_mutex_lock(&s->lock);
  if ((r = db_exec(s, "BEGIN IMMEDIATE", err)) == 0) {
    if ((r = ref_put_locked(s, refname, &root, size, NULL, 1, err)) < 0 ||
        (r = db_exec(s, "COMMIT", err)) < 0)
      db_rollback(s);
  }
  pthread_mutex_unlock(&s->lock);
  r = refs_publish(s, r, err);
  if (r == 0 && progress)
    progress(size, size, ud);
out:
  if (pending)
    store_pending_end(s);
  map_free(m);
  free(buf);
  close(fd);
  return r;
}

int store_disk_create(store_t *s, const char *disk, const char *from_ref,
                      uint64_t size, char **err)
{
  char refname[STORE_REF_NAME_MAX + 8];
  store_ref_t src;
  store_id_t root;
  int r;

  if (strchr(disk, '/'))
    return store_err(err, EINVAL, "disk name '%s': no '/' allowed", disk);
  snprintf(refname, sizeof refname, "disk/%s", disk);
  if ((r = ref_name_check(refname, err)) < 0)
    return r;
  if ((r = store_ref_get(s, from_ref, &src, err)) < 0)
    return r;
  if (size == 0)
    size = src.size;
  if (size < src.size)
    return store_err(err, EINVAL, "disk %s: size %llu is smaller than %s "
                     "(%llu bytes)", disk, (unsigned long long)size, from_ref,
                     (unsigned long long)src.size);
  unsigned od = map_depth_for(s, src.size), nd = map_depth_for(s, size);
  root = src.root;
  int pending = 0;
  if (nd > od) {
    if ((r = store_pending_begin(s, err)) < 0)
      return r;
    pending = 1;
    if ((r = map_grow_root(s, &src.root, od, nd, &root, err)) < 0 ||
        (r = s->ops->sync(s->be, err)) < 0) {
      store_pending_end(s);
      return r;
    }
  }
  pthread_mutex_lock(&s->lock);
  if ((r = db_exec(s, "BEGIN IMMEDIATE", err)) == 0) {
    /* Re-check the source: it must not have moved since we read it. */
    store_ref_t again;
    if ((r = store_ref_get_locked(s, from_ref, &again, err)) == 0 &&
        (again.generation != src.generation ||
         memcmp(&again.root, &src.root, sizeof src.root) != 0))
      r = store_err(err, EAGAIN, "%s changed while creating disk %s",
                    from_ref, disk);
    if (r < 0 ||
        (r = ref_put_locked(s, refname, &root, size, from_ref, 0, err)) < 0 ||
        (r = db_exec(s, "COMMIT", err)) < 0)
      db_rollback(s);
  }
  pthread_mutex_unlock(&s->lock);
  r = refs_publish(s, r, err);
  if (pending)
    store_pending_end(s);
  return r;
}

/* ---- snapshots ---- */

static int snap_names(const char *disk, const char *name, char *dref,
                      char *sref, char **err)
{
  if (strchr(disk, '/') || (name && strchr(name, '/')))
    return store_err(err, EINVAL, "disk and snapshot names may not contain "
                     "'/'");
  snprintf(dref, STORE_REF_NAME_MAX + 1, "disk/%s", disk);
  if (name && (size_t)snprintf(sref, STORE_REF_NAME_MAX + 1, "snap/%s/%s",
                               disk, name) > STORE_REF_NAME_MAX)
    return store_err(err, EINVAL, "snapshot name '%s' too long", name);
  int r = ref_name_check(dref, err);
  if (r == 0 && name)
    r = ref_name_check(sref, err);
  return r;
}

static int db_update_parent(store_t *s, const char *name, const char *parent,
                            const char *where_parent, char **err)
{
  sqlite3_stmt *st;
  int r;
  if (s->ops->ref_dirty) {
    /* Every ref whose parent changes must be republished. */
    if ((r = db_prepare(s, where_parent
                        ? "SELECT name FROM refs WHERE parent=?1"
                        : "SELECT name FROM refs WHERE name=?1", &st,
                        err)) < 0)
      return r;
    sqlite3_bind_text(st, 1, where_parent ? where_parent : name, -1,
                      SQLITE_STATIC);
    while (r == 0 && sqlite3_step(st) == SQLITE_ROW)
      r = ref_mark(s, (const char *)sqlite3_column_text(st, 0), err);
    sqlite3_finalize(st);
    if (r < 0)
      return r;
  }
  r = db_prepare(s, where_parent
                 ? "UPDATE refs SET parent=?1 WHERE parent=?2"
                 : "UPDATE refs SET parent=?1 WHERE name=?2", &st, err);
  if (r < 0)
    return r;
  if (parent && *parent)
    sqlite3_bind_text(st, 1, parent, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 1);
  sqlite3_bind_text(st, 2, where_parent ? where_parent : name, -1,
                    SQLITE_STATIC);
  if (sqlite3_step(st) != SQLITE_DONE)
    r = db_err(s, err, "update parent");
  sqlite3_finalize(st);
  return r;
}

int store_snapshot_create(store_t *s, const char *disk, const char *name,
                          char **err)
{
  char dref[STORE_REF_NAME_MAX + 1], sref[STORE_REF_NAME_MAX + 1];
  store_ref_t cur;
  int r = snap_names(disk, name, dref, sref, err);
  if (r < 0)
    return r;
  pthread_mutex_lock(&s->lock);
  if ((r = db_exec(s, "BEGIN IMMEDIATE", err)) < 0)
    goto out;
  /* The snapshot descends from what the disk descended from; the disk
   * now descends from the snapshot.  The disk's generation is untouched,
   * so a live writer's next commit still succeeds. */
  if ((r = store_ref_get_locked(s, dref, &cur, err)) < 0 ||
      (r = ref_put_locked(s, sref, &cur.root, cur.size, cur.parent, 0,
                          err)) < 0 ||
      (r = db_update_parent(s, dref, sref, NULL, err)) < 0 ||
      (r = db_exec(s, "COMMIT", err)) < 0)
    db_rollback(s);
out:
  pthread_mutex_unlock(&s->lock);
  return refs_publish(s, r, err);
}

int store_snapshot_restore(store_t *s, const char *disk, const char *name,
                           char **err)
{
  char dref[STORE_REF_NAME_MAX + 1], sref[STORE_REF_NAME_MAX + 1];
  store_ref_t snap, cur;
  int r = snap_names(disk, name, dref, sref, err);
  if (r < 0)
    return r;
  pthread_mutex_lock(&s->lock);
  if ((r = db_exec(s, "BEGIN IMMEDIATE", err)) < 0)
    goto out;
  if ((r = store_ref_get_locked(s, sref, &snap, err)) < 0 ||
      (r = store_ref_get_locked(s, dref, &cur, err)) < 0)
    goto fail;
  if (snap.size != cur.size) {
    r = store_err(err, EINVAL, "%s has size %llu but %s has %llu", sref,
                  (unsigned long long)snap.size, dref,
                  (unsigned long long)cur.size);
    goto fail;
  }
  /* Replacing bumps the generation: a writer still holding the disk open
   * fails its next commit instead of overwriting the restored state. */
  if ((r = ref_put_locked(s, dref, &snap.root, snap.size, sref, 1, err)) < 0 ||
      (r = db_exec(s, "COMMIT", err)) < 0)
    goto fail;
  goto out;
fail:
  db_rollback(s);
out:
  pthread_mutex_unlock(&s->lock);
  return refs_publish(s, r, err);
}

int store_snapshot_delete(store_t *s, const char *disk, const char *name,
                          char **err)
{
  char dref[STORE_REF_NAME_MAX + 1], sref[STORE_REF_NAME_MAX + 1];
  store_ref_t snap;
  sqlite3_stmt *st;
  int r = snap_names(disk, name, dref, sref, err);
  if (r < 0)
    return r;
  pthread_mutex_lock(&s->lock);
  if ((r = db_exec(s, "BEGIN IMMEDIATE", err)) < 0)
    goto out;
  if ((r = store_ref_get_locked(s, sref, &snap, err)) < 0)
    goto fail;
  /* Children of the snapshot now descend from its parent. */
  if ((r = db_update_parent(s, NULL, snap.parent, sref, err)) < 0 ||
      (r = db_prepare(s, "DELETE FROM refs WHERE name=?", &st, err)) < 0)
    goto fail;
  sqlite3_bind_text(st, 1, sref, -1, SQLITE_STATIC);
  if (sqlite3_step(st) != SQLITE_DONE)
    r = db_err(s, err, "delete ref");
  sqlite3_finalize(st);
  if (r < 0 || (r = ref_mark(s, sref, err)) < 0 ||
      (r = db_exec(s, "COMMIT", err)) < 0)
    goto fail;
  goto out;
fail:
  db_rollback(s);
out:
  pthread_mutex_unlock(&s->lock);
  return refs_publish(s, r, err);
}

int store_disk_delete(store_t *s, const char *disk, char **err)
{
  char dref[STORE_REF_NAME_MAX + 1], prefix[STORE_REF_NAME_MAX + 8];
  sqlite3_stmt *st;
  int r = snap_names(disk, NULL, dref, NULL, err), n = 0;
  if (r < 0)
    return r;
  snprintf(prefix, sizeof prefix, "snap/%s/", disk);
  pthread_mutex_lock(&s->lock);
  if ((r = db_exec(s, "BEGIN IMMEDIATE", err)) < 0)
    goto out;
  if (s->ops->ref_dirty) {
    if ((r = db_prepare(s, "SELECT name FROM refs WHERE name=?1 OR "
                        "substr(name, 1, length(?2)) = ?2", &st, err)) < 0)
      goto fail;
    sqlite3_bind_text(st, 1, dref, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, prefix, -1, SQLITE_STATIC);
    while (r == 0 && sqlite3_step(st) == SQLITE_ROW)
      r = ref_mark(s, (const char *)sqlite3_column_text(st, 0), err);
    sqlite3_finalize(st);
    if (r < 0)
      goto fail;
  }
  if ((r = db_prepare(s, "DELETE FROM refs WHERE name=?1 OR "
                      "substr(name, 1, length(?2)) = ?2", &st, err)) < 0)
    goto fail;
  sqlite3_bind_text(st, 1, dref, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, prefix, -1, SQLITE_STATIC);
  if (sqlite3_step(st) != SQLITE_DONE)
    r = db_err(s, err, "delete disk refs");
  else
    n = sqlite3_changes(s->db);
  sqlite3_finalize(st);
  if (r < 0 || (r = db_exec(s, "COMMIT", err)) < 0)
    goto fail;
  r = n;
  goto out;
fail:
  db_rollback(s);
out:
  pthread_mutex_unlock(&s->lock);
  return refs_publish(s, r, err);
}
