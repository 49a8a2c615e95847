/* lanes block store — S3 object backend: objects and refs in a bucket.
 *
 * Layout in the bucket (P = the store's prefix, "" allowed):
 *   P/store.json          {"lanes_store":1,"chunk_size":N,"fanout":N}
 *   P/objects/<sha256>    chunks and map pages (immutable)
 *   P/refs/<ref name>     {"name","root","size","generation","parent",
 *                          "created","updated"}; disk refs carry the fencing
 *                          token of their last writer (x-amz-meta-lanes-fence)
 *   P/leases/<ref name>   lease objects (s3-lease.h)
 *   P/meta/<name>         orchestrator documents (store_meta_*)
 * Locally, in the store directory:
 *   backend.conf          endpoint, bucket, prefix, ... (no secrets: only the
 *                         credentials file's path)
 *   store.db              the core's SQLite: a mirror of the bucket's refs
 *                         plus table s3_pub (refs with unpublished changes)
 *   journal/objects/...   write-back journal: objects put but not yet
 *                         uploaded, in the local backend's layout
 * Host-wide: the clean chunk cache (cache_dir, shared by every store and
 * lane of the host): files named by their SHA-256, verified on every read,
 * LRU by mtime (touched on each hit), evicted down to 90 % of cache_bytes
 * when an insert pushes the estimate over the bound.
 *
 * Invariants:
 *   - An object reaches the bucket before any ref naming it is published:
 *     publish() drains the whole journal first.  A journal file is removed
 *     only after its PUT succeeded (it then moves into the cache).
 *   - Every put() is uploaded again even if the object may already be in
 *     the bucket: the re-PUT refreshes its LastModified, which is what GC's
 *     grace period protects (a reused object is never swept under a writer
 *     whose commit is about to name it).
 *   - get() trusts nothing: journal and cache files and GET bodies are
 *     hash-checked (the core checks again).
 *   - A ref is published by its writer only: a disk commit in local
 *     durability marks the ref with the committing process as owner, and
 *     other processes skip refs owned by a live process.  The lease holder
 *     publishes its disk ref with If-Match on the ETag it last wrote
 *     (fencing, s3_fence_commit): a writer that lost its lease cannot move
 *     the ref.
 *
 * Threading: put/get/sync/publish may run on several threads.  be->lock
 * guards the prefetch queue, the in-flight set, the cache estimate and the
 * lease state; be->drain_lock serializes drains and publishes of one
 * handle; SQLite is used under s->lock.  Threads: an uploader (started by
 * store_background_start), a prefetcher (started on first use) and a lease
 * renewer (while a lease is held); all are joined by close.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "s3-lease.h"
#include "s3.h"
#include "store-internal.h"

#define S3BE_DEFAULT_CACHE_BYTES (1024ull * 1024 * 1024)
#define S3BE_LEASE_TTL_MS 30000
#define S3BE_BATCH 32                 /* uploads / prefetches per batch */
#define S3BE_PREFETCH_QUEUE 1024
#define S3BE_INFLIGHT_MAX 256
#define S3BE_MARKER_TTL_MS (10 * 60 * 1000) /* unrenewed this long: dead */
#define S3BE_MARKER_SKEW_MS 30000           /* host vs store clock allowance */

struct s3be_conf {
  char *endpoint, *bucket, *prefix, *region, *credentials_file, *profile;
  char *cache_dir;
  uint64_t cache_bytes;
  int vhost;
  store_durability_t durability;
  int enforced;                 /* probed at creation */
  int allow_unenforced;
};

struct s3_be {
  store_t *store;
  char *dir;
  struct s3be_conf conf;
  char *pfx;                    /* "P/" or "" */
  s3_client_t *cli;
  void *journal;                /* store_backend_local on DIR/journal */
  char owner[64];               /* "<pid>-<start time>" of this process */
  _Atomic int64_t last_publish; /* unix s: a ref PUT/DELETE last completed */

  pthread_mutex_t lock;
  pthread_cond_t cond;
  pthread_mutex_t drain_lock;
  uint64_t cache_used;          /* estimate */

  /* uploader */
  pthread_t uploader;
  int uploader_on, stop, kick;

  /* prefetch */
  pthread_t prefetcher;
  int prefetcher_on;
  store_id_t queue[S3BE_PREFETCH_QUEUE];
  size_t qhead, qlen;
  store_id_t inflight[S3BE_INFLIGHT_MAX];
  size_t ninflight;
  pthread_mutex_t pf_lock;      /* the prefetch map below */
  map_t *pf_map;
  store_id_t pf_root;
  uint64_t pf_size;

  /* lease (one per handle) */
  char lease_ref[STORE_REF_NAME_MAX + 1];
  char holder[S3_HOLDER_MAX + 1];
  s3_lease_t lease;
  int have_lease, fenced;
  char ref_etag[S3_ETAG_MAX + 1];
  int64_t renewed_mono_ms;      /* when the last successful renew was sent */
  pthread_t renewer;
  int renewer_on;

  /* pending-upload marker (see PENDING-UPLOAD MARKERS below) */
  pthread_mutex_t marker_lock;
  char marker_key[512];
  int marker_on;
  int64_t marker_started_ms, marker_expires_ms;

  atomic_uint_fast64_t gets, get_bytes, prefetch_gets, puts, put_bytes,
      cache_hits, journal_hits, ref_puts;
};

static void marker_tick(struct s3_be *be, int final);

/* ---- small helpers ---- */

static int64_t mono_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *key_for(const struct s3_be *be, const char *kind,
                     const char *name)
{
  char *k;
  if (asprintf(&k, "%s%s%s", be->pfx, kind, name) == -1)
    return NULL;
  return k;
}

static char *key_object(const struct s3_be *be, const store_id_t *id)
{
  char hex[STORE_ID_HEX_LEN + 1];
  store_id_to_hex(id, hex);
  return key_for(be, "objects/", hex);
}

static int write_file_atomic(const char *path, const void *buf, size_t len,
                             mode_t mode, char **err)
{
  char *tmp;
  if (asprintf(&tmp, "%s.tmp-%ld", path, (long)getpid()) == -1)
    return store_err(err, ENOMEM, "out of memory");
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  int r = 0;
  if (fd == -1) {
    r = store_err(err, errno, "create %s: %m", tmp);
    free(tmp);
    return r;
  }
  const char *p = buf;
  while (len) {
    ssize_t n = write(fd, p, len);
    if (n == -1 && errno == EINTR)
      continue;
    if (n == -1) {
      r = store_err(err, errno, "write %s: %m", tmp);
      break;
    }
    p += n;
    len -= (size_t)n;
  }
  if (r == 0 && fsync(fd) == -1)
    r = store_err(err, errno, "fsync %s: %m", tmp);
  close(fd);
  if (r == 0 && rename(tmp, path) == -1)
    r = store_err(err, errno, "rename %s: %m", tmp);
  if (r < 0)
    unlink(tmp);
  free(tmp);
  return r;
}

static int read_file(const char *path, void *buf, size_t cap, size_t *len)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return -errno;
  size_t got = 0;
  for (;;) {
    if (got == cap) {
      char extra;
      ssize_t n = read(fd, &extra, 1);
      close(fd);
      return n > 0 ? -EFBIG : (*len = got, 0);
    }
    ssize_t n = read(fd, (char *)buf + got, cap - got);
    if (n == -1 && errno == EINTR)
      continue;
    if (n == -1) {
      int e = errno;
      close(fd);
      return -e;
    }
    if (n == 0)
      break;
    got += (size_t)n;
  }
  close(fd);
  *len = got;
  return 0;
}

/* ---- backend.conf ---- */

static void conf_clear(struct s3be_conf *c)
{
  free(c->endpoint); free(c->bucket); free(c->prefix); free(c->region);
  free(c->credentials_file); free(c->profile); free(c->cache_dir);
  memset(c, 0, sizeof *c);
}

static int conf_load(const char *dir, struct s3be_conf *c, char **err)
{
  char *path;
  if (asprintf(&path, "%s/backend.conf", dir) == -1)
    return store_err(err, ENOMEM, "out of memory");
  FILE *f = fopen(path, "re");
  if (!f) {
    int r = store_err(err, errno, "open %s: %m", path);
    free(path);
    return r;
  }
  memset(c, 0, sizeof *c);
  c->cache_bytes = S3BE_DEFAULT_CACHE_BYTES;
  char line[4096];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = '\0';
    char *eq = strchr(line, '=');
    if (line[0] == '#' || !eq)
      continue;
    *eq = '\0';
    const char *k = line, *v = eq + 1;
    char **slot = !strcmp(k, "endpoint") ? &c->endpoint
                : !strcmp(k, "bucket") ? &c->bucket
                : !strcmp(k, "prefix") ? &c->prefix
                : !strcmp(k, "region") ? &c->region
                : !strcmp(k, "credentials_file") ? &c->credentials_file
                : !strcmp(k, "profile") ? &c->profile
                : !strcmp(k, "cache_dir") ? &c->cache_dir : NULL;
    if (slot) {
      free(*slot);
      *slot = strdup(v);
    } else if (!strcmp(k, "cache_bytes")) {
      c->cache_bytes = strtoull(v, NULL, 10);
    } else if (!strcmp(k, "vhost")) {
      c->vhost = atoi(v);
    } else if (!strcmp(k, "durability")) {
      c->durability = !strcmp(v, "remote") ? STORE_DURABILITY_REMOTE
                                           : STORE_DURABILITY_LOCAL;
    } else if (!strcmp(k, "conditional_writes")) {
      c->enforced = !strcmp(v, "enforced");
    } else if (!strcmp(k, "allow_unenforced_leases")) {
      c->allow_unenforced = atoi(v);
    }
  }
  fclose(f);
  int r = 0;
  if (!c->endpoint || !c->bucket)
    r = store_err(err, EINVAL, "%s: endpoint and bucket are required", path);
  free(path);
  if (r < 0)
    conf_clear(c);
  return r;
}

static char *conf_format(const store_s3_config_t *cfg, const char *cache_dir,
                         int enforced)
{
  char *s;
  if (asprintf(&s,
               "# lanes S3 store (no secrets here: only the credentials "
               "file's path)\n"
               "endpoint=%s\nbucket=%s\nprefix=%s\nregion=%s\n"
               "credentials_file=%s\nprofile=%s\nvhost=%d\ndurability=%s\n"
               "cache_dir=%s\ncache_bytes=%llu\nconditional_writes=%s\n"
               "allow_unenforced_leases=%d\n",
               cfg->endpoint, cfg->bucket, cfg->prefix ? cfg->prefix : "",
               cfg->region ? cfg->region : "us-east-1",
               cfg->credentials_file ? cfg->credentials_file : "",
               cfg->profile ? cfg->profile : "default", cfg->vhost ? 1 : 0,
               cfg->durability == STORE_DURABILITY_REMOTE ? "remote" : "local",
               cache_dir,
               (unsigned long long)(cfg->cache_bytes ? cfg->cache_bytes
                                                     : S3BE_DEFAULT_CACHE_BYTES),
               enforced ? "enforced" : "unenforced",
               cfg->allow_unenforced_leases ? 1 : 0) == -1)
    return NULL;
  return s;
}

static int client_new(const struct s3be_conf *c, s3_client_t **out,
                      char **err)
{
  s3_config_t sc = {
    .endpoint = c->endpoint,
    .bucket = c->bucket,
    .region = c->region && *c->region ? c->region : NULL,
    .path_style = !c->vhost,
    .credentials_file = c->credentials_file && *c->credentials_file
                          ? c->credentials_file : NULL,
    .profile = c->profile && *c->profile ? c->profile : NULL,
    .max_parallel = 16,
  };
  return s3_client_new(&sc, out, err);
}

static char *prefix_dup(const char *p)
{
  char *s;
  if (!p || !*p)
    return strdup("");
  if (asprintf(&s, "%s/", p) == -1)
    return NULL;
  return s;
}

/* ---- cache ---- */

static char *cache_path(const struct s3_be *be, const store_id_t *id)
{
  char hex[STORE_ID_HEX_LEN + 1], *p;
  store_id_to_hex(id, hex);
  if (asprintf(&p, "%s/%s", be->conf.cache_dir, hex) == -1)
    return NULL;
  return p;
}

struct centry {
  char name[STORE_ID_HEX_LEN + 1];
  int64_t mtime;
  uint64_t size;
};

static int centry_cmp(const void *a, const void *b)
{
  const struct centry *x = a, *y = b;
  return x->mtime < y->mtime ? -1 : x->mtime > y->mtime;
}

/* Total size of the cache; with evict, delete the least recently used
 * files until it is at most 90 % of the bound. */
static uint64_t cache_scan(struct s3_be *be, int evict)
{
  DIR *d = opendir(be->conf.cache_dir);
  if (!d)
    return 0;
  struct centry *v = NULL;
  size_t n = 0, cap = 0;
  uint64_t total = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    struct stat st;
    if (strlen(de->d_name) != STORE_ID_HEX_LEN ||
        fstatat(dirfd(d), de->d_name, &st, 0) == -1)
      continue;
    total += (uint64_t)st.st_size;
    if (!evict)
      continue;
    if (n == cap) {
      size_t nc = cap ? cap * 2 : 256;
      struct centry *nv = realloc(v, nc * sizeof *nv);
      if (!nv)
        break;
      v = nv;
      cap = nc;
    }
    memcpy(v[n].name, de->d_name, sizeof v[n].name);
    v[n].mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    v[n].size = (uint64_t)st.st_size;
    n++;
  }
  if (evict && v) {
    qsort(v, n, sizeof *v, centry_cmp);
    uint64_t goal = be->conf.cache_bytes / 10 * 9;
    for (size_t i = 0; i < n && total > goal; i++)
      if (unlinkat(dirfd(d), v[i].name, 0) == 0)
        total -= v[i].size;
  }
  free(v);
  closedir(d);
  return total;
}

static void cache_put(struct s3_be *be, const store_id_t *id, const void *buf,
                      size_t len)
{
  char *path = cache_path(be, id), *tmp = NULL;
  uint64_t rnd = 0;
  if (!path)
    return;
  (void)!getrandom(&rnd, sizeof rnd, 0);
  if (asprintf(&tmp, "%s/.tmp-%ld-%016llx", be->conf.cache_dir,
               (long)getpid(), (unsigned long long)rnd) == -1) {
    free(path);
    return;
  }
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  int ok = fd >= 0;
  const char *p = buf;
  size_t left = len;
  while (ok && left) {
    ssize_t w = write(fd, p, left);
    if (w == -1 && errno == EINTR)
      continue;
    if (w <= 0)
      ok = 0;
    else {
      p += w;
      left -= (size_t)w;
    }
  }
  if (fd >= 0)
    close(fd);
  /* Not fsynced: a cache file lost or torn by a crash fails its hash check
   * and is fetched again. */
  if (ok && rename(tmp, path) == 0) {
    pthread_mutex_lock(&be->lock);
    be->cache_used += len;
    int over = be->cache_used > be->conf.cache_bytes;
    pthread_mutex_unlock(&be->lock);
    if (over) {
      uint64_t now = cache_scan(be, 1);
      pthread_mutex_lock(&be->lock);
      be->cache_used = now;
      pthread_mutex_unlock(&be->lock);
    }
  } else {
    unlink(tmp);
  }
  free(tmp);
  free(path);
}

/* 0 and the verified object in buf, or -ENOENT (missing or bad: dropped). */
static int cache_get(struct s3_be *be, const store_id_t *id, void *buf,
                     size_t cap, size_t *len)
{
  char *path = cache_path(be, id);
  if (!path)
    return -ENOMEM;
  size_t n = 0;
  int r = read_file(path, buf, cap, &n);
  if (r == 0) {
    store_id_t got;
    store_hash(buf, n, &got);
    if (memcmp(&got, id, sizeof got) != 0) {
      unlink(path);
      r = -ENOENT;
    } else {
      utimensat(AT_FDCWD, path, NULL, 0);   /* LRU: recently used */
      *len = n;
    }
  } else if (r == -EFBIG) {
    unlink(path);
    r = -ENOENT;
  }
  free(path);
  return r;
}

/* ---- open / close ---- */

static int s3be_open(const char *dir, void **out, char **err)
{
  struct s3_be *be = calloc(1, sizeof *be);
  int r;
  if (!be || !(be->dir = strdup(dir))) {
    free(be);
    return store_err(err, ENOMEM, "out of memory");
  }
  pthread_mutex_init(&be->lock, NULL);
  pthread_cond_init(&be->cond, NULL);
  pthread_mutex_init(&be->drain_lock, NULL);
  pthread_mutex_init(&be->pf_lock, NULL);
  pthread_mutex_init(&be->marker_lock, NULL);
  snprintf(be->owner, sizeof be->owner, "%ld-%llu", (long)getpid(),
           (unsigned long long)store_proc_start_time(getpid()));
  if ((r = conf_load(dir, &be->conf, err)) < 0)
    goto fail;
  if (!be->conf.cache_dir || !*be->conf.cache_dir) {
    free(be->conf.cache_dir);
    if (asprintf(&be->conf.cache_dir, "%s/cache", dir) == -1) {
      be->conf.cache_dir = NULL;
      r = store_err(err, ENOMEM, "out of memory");
      goto fail;
    }
  }
  if (mkdir(be->conf.cache_dir, 0755) == -1 && errno != EEXIST) {
    r = store_err(err, errno, "mkdir %s: %m", be->conf.cache_dir);
    goto fail;
  }
  if (!(be->pfx = prefix_dup(be->conf.prefix))) {
    r = store_err(err, ENOMEM, "out of memory");
    goto fail;
  }
  char *jdir;
  if (asprintf(&jdir, "%s/journal", dir) == -1) {
    r = store_err(err, ENOMEM, "out of memory");
    goto fail;
  }
  if (mkdir(jdir, 0755) == -1 && errno != EEXIST) {
    r = store_err(err, errno, "mkdir %s: %m", jdir);
    free(jdir);
    goto fail;
  }
  r = store_backend_local.open(jdir, &be->journal, err);
  free(jdir);
  if (r < 0)
    goto fail;
  if ((r = client_new(&be->conf, &be->cli, err)) < 0)
    goto fail;
  be->cache_used = cache_scan(be, 0);
  *out = be;
  return 0;
fail:
  if (be->journal)
    store_backend_local.close(be->journal);
  conf_clear(&be->conf);
  free(be->pfx);
  free(be->dir);
  free(be);
  return r;
}

static void stop_threads(struct s3_be *be)
{
  pthread_mutex_lock(&be->lock);
  be->stop = 1;
  pthread_cond_broadcast(&be->cond);
  pthread_mutex_unlock(&be->lock);
  if (be->uploader_on)
    pthread_join(be->uploader, NULL);
  if (be->prefetcher_on)
    pthread_join(be->prefetcher, NULL);
  if (be->renewer_on)
    pthread_join(be->renewer, NULL);
  be->uploader_on = be->prefetcher_on = be->renewer_on = 0;
}

static void s3be_close(void *p)
{
  struct s3_be *be = p;
  if (!be)
    return;
  stop_threads(be);
  if (be->cli)
    marker_tick(be, 1);
  map_free(be->pf_map);
  if (be->journal)
    store_backend_local.close(be->journal);
  s3_client_free(be->cli);
  conf_clear(&be->conf);
  pthread_mutex_destroy(&be->pf_lock);
  pthread_mutex_destroy(&be->marker_lock);
  pthread_mutex_destroy(&be->drain_lock);
  pthread_cond_destroy(&be->cond);
  pthread_mutex_destroy(&be->lock);
  free(be->pfx);
  free(be->dir);
  free(be);
}

static int s3be_attach(void *p, store_t *s, char **err)
{
  struct s3_be *be = p;
  be->store = s;
  pthread_mutex_lock(&s->lock);
  int rc = sqlite3_exec(s->db,
                        "CREATE TABLE IF NOT EXISTS s3_pub(name TEXT PRIMARY "
                        "KEY, seq INTEGER NOT NULL, owner TEXT)",
                        NULL, NULL, NULL);
  pthread_mutex_unlock(&s->lock);
  if (rc != SQLITE_OK)
    return store_err(err, EIO, "create table s3_pub: %s",
                     sqlite3_errmsg(s->db));
  return 0;
}

/* ---- objects ---- */

static int s3be_put(void *p, const store_id_t *id, const void *buf,
                    size_t len, char **err)
{
  struct s3_be *be = p;
  return store_backend_local.put(be->journal, id, buf, len, err);
}

static int inflight_has(struct s3_be *be, const store_id_t *id)
{
  for (size_t i = 0; i < be->ninflight; i++)
    if (!memcmp(&be->inflight[i], id, sizeof *id))
      return 1;
  return 0;
}

static void inflight_del(struct s3_be *be, const store_id_t *id)
{
  for (size_t i = 0; i < be->ninflight; i++)
    if (!memcmp(&be->inflight[i], id, sizeof *id)) {
      be->inflight[i] = be->inflight[--be->ninflight];
      return;
    }
}

static int s3be_get(void *p, const store_id_t *id, void *buf, size_t cap,
                    size_t *len, char **err)
{
  struct s3_be *be = p;
  size_t n = 0;
  char *jerr = NULL;
  int r = store_backend_local.get(be->journal, id, buf, cap, &n, &jerr);
  free(jerr);
  if (r == 0) {
    store_id_t got;
    store_hash(buf, n, &got);
    if (!memcmp(&got, id, sizeof got)) {
      atomic_fetch_add(&be->journal_hits, 1);
      *len = n;
      return 0;
    }
  }
  if (cache_get(be, id, buf, cap, len) == 0) {
    atomic_fetch_add(&be->cache_hits, 1);
    return 0;
  }
  /* Being read ahead right now: wait for it rather than fetch it twice. */
  pthread_mutex_lock(&be->lock);
  int waited = 0;
  while (inflight_has(be, id)) {
    waited = 1;
    pthread_cond_wait(&be->cond, &be->lock);
  }
  pthread_mutex_unlock(&be->lock);
  if (waited && cache_get(be, id, buf, cap, len) == 0) {
    atomic_fetch_add(&be->cache_hits, 1);
    return 0;
  }
  char *key = key_object(be, id);
  if (!key)
    return store_err(err, ENOMEM, "out of memory");
  s3_request_t q = {.op = S3_OP_GET, .key = key, .buf = buf, .cap = cap,
                    .expect_sha256 = id->b};
  r = s3_batch(be->cli, &q, 1, err);
  if (r == 0) {
    *len = q.len;
    atomic_fetch_add(&be->gets, 1);
    atomic_fetch_add(&be->get_bytes, q.len);
    cache_put(be, id, buf, q.len);
  }
  s3_request_clear(&q);
  free(key);
  return r;
}

struct idlist {
  store_id_t *v;
  size_t n, cap;
};

static int collect_id(const store_id_t *id, void *ud)
{
  struct idlist *l = ud;
  if (l->n == l->cap) {
    size_t nc = l->cap ? l->cap * 2 : 64;
    store_id_t *nv = realloc(l->v, nc * sizeof *nv);
    if (!nv)
      return 0;           /* the rest waits for the next drain */
    l->v = nv;
    l->cap = nc;
  }
  l->v[l->n++] = *id;
  return 0;               /* never "doomed": this only enumerates */
}

/* ---- pending-upload markers (cross-host GC safety) ----
 *
 * An object uploaded to the bucket is unreferenced until the ref commit
 * that names it is published; GC on another host must not sweep it in
 * between.  Before its first upload a handle PUTs a marker
 * P/pending/<owner>-<random> = {"lanes_pending":1,"owner","holder","lease",
 * "lease_generation","started_ms","expires_ms"} and keeps it (renewed
 * before TTL/2 by drains, publishes, refreshes and the lease renewer,
 * started_ms unchanged) until this host has nothing uploaded-but-unnamed:
 * journal empty, no unpublished ref, no open writer session of a live
 * process in DIR/pending.  GC (s3be_gc_prepare) lists the markers before
 * it reads any ref and sweeps nothing uploaded after (started_ms - skew)
 * of a live marker; markers past expires_ms + skew are dead (their
 * writer stopped renewing: crashed, or gone for longer than the TTL) and
 * are deleted.  Lock order: drain_lock, marker_lock, s->lock. */

static int marker_put(struct s3_be *be, char **err)
{
  json_object *o = json_object_new_object();
  pthread_mutex_lock(&be->lock);
  int lease = be->have_lease;
  char ref[STORE_REF_NAME_MAX + 1], holder[S3_HOLDER_MAX + 1];
  snprintf(ref, sizeof ref, "%s", lease ? be->lease_ref : "");
  snprintf(holder, sizeof holder, "%s", be->holder);
  uint64_t gen = lease ? be->lease.generation : 0;
  pthread_mutex_unlock(&be->lock);
  json_object_object_add(o, "lanes_pending", json_object_new_int(1));
  json_object_object_add(o, "owner", json_object_new_string(be->owner));
  json_object_object_add(o, "holder", json_object_new_string(holder));
  json_object_object_add(o, "lease", json_object_new_string(ref));
  json_object_object_add(o, "lease_generation",
                         json_object_new_int64((int64_t)gen));
  json_object_object_add(o, "started_ms",
                         json_object_new_int64(be->marker_started_ms));
  json_object_object_add(o, "expires_ms",
                         json_object_new_int64(be->marker_expires_ms));
  const char *body = json_object_to_json_string_ext(
      o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  int r = s3_put(be->cli, be->marker_key, body, strlen(body), NULL, err);
  json_object_put(o);
  return r;
}

/* Make sure this handle's marker exists and is fresh (before an upload). */
static int marker_begin(struct s3_be *be, char **err)
{
  int r = 0;
  pthread_mutex_lock(&be->marker_lock);
  int64_t now = s3_now_ms();
  if (!be->marker_on) {
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
      rnd = (uint64_t)now;
    snprintf(be->marker_key, sizeof be->marker_key, "%spending/%s-%016llx",
             be->pfx, be->owner, (unsigned long long)rnd);
    be->marker_started_ms = now;
  }
  if (!be->marker_on || be->marker_expires_ms - now < S3BE_MARKER_TTL_MS / 2) {
    be->marker_expires_ms = now + S3BE_MARKER_TTL_MS;
    if ((r = marker_put(be, err)) == 0)
      be->marker_on = 1;
  }
  pthread_mutex_unlock(&be->marker_lock);
  return r;
}

static int count_id(const store_id_t *id, void *ud)
{
  (void)id;
  (void)ud;
  return 0;
}

/* 1 if nothing this host uploaded may still be waiting for a ref. */
static int host_quiescent(struct s3_be *be)
{
  store_t *s = be->store;
  store_sweep_counts_t c;
  memset(&c, 0, sizeof c);
  char *e = NULL;
  int r = store_backend_local.sweep(be->journal, INT64_MIN, count_id, NULL,
                                    &c, &e);
  free(e);
  if (r < 0 || c.objects > 0 || !s)
    return 0;
  int busy = 1;
  sqlite3_stmt *st;
  pthread_mutex_lock(&s->lock);
  if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM s3_pub LIMIT 1", -1, &st,
                         NULL) == SQLITE_OK) {
    busy = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
  }
  pthread_mutex_unlock(&s->lock);
  if (busy)
    return 0;
  char path[4096];
  snprintf(path, sizeof path, "%s/pending", s->dir);
  DIR *d = opendir(path);
  if (!d)
    return errno == ENOENT;
  struct dirent *de;
  while (!busy && (de = readdir(d))) {
    long pid;
    unsigned long long start;
    struct stat sb;
    if (de->d_name[0] == '.' || fstatat(dirfd(d), de->d_name, &sb, 0) == -1 ||
        sb.st_size == 0)
      continue;
    if (sscanf(de->d_name, "%ld-%llu-", &pid, &start) == 2 && pid > 0 &&
        store_proc_start_time((pid_t)pid) != start)
      continue;               /* its writer is dead */
    busy = 1;
  }
  closedir(d);
  return !busy;
}

/* Periodic: drop the marker once the host is quiescent, else renew it
 * when due.  final: at close (a marker still needed is left to expire). */
static void marker_tick(struct s3_be *be, int final)
{
  pthread_mutex_lock(&be->marker_lock);
  if (be->marker_on) {
    char *err = NULL;
    if (host_quiescent(be)) {
      if (s3_delete(be->cli, be->marker_key, &err) == 0 || final)
        be->marker_on = 0;
    } else if (!final &&
               be->marker_expires_ms - s3_now_ms() < S3BE_MARKER_TTL_MS / 2) {
      be->marker_expires_ms = s3_now_ms() + S3BE_MARKER_TTL_MS;
      (void)marker_put(be, &err);
    } else if (final) {
      fprintf(stderr, "lanes s3: leaving pending-upload marker %s to expire "
              "(this host still has unpublished uploads)\n", be->marker_key);
    }
    free(err);
  }
  pthread_mutex_unlock(&be->marker_lock);
}


static int id_cmp(const void *a, const void *b)
{
  return memcmp(a, b, sizeof(store_id_t));
}

static int id_uploaded(const store_id_t *id, void *ud)
{
  const struct idlist *u = ud;
  return u->n && bsearch(id, u->v, u->n, sizeof *id, id_cmp) != NULL;
}

static int64_t real_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Upload every object in the journal, then move it to the cache and drop
 * it from the journal -- unless a writer stored it again since the listing
 * (its journal time is then newer than t0 and it goes with the next drain,
 * which refreshes its LastModified for GC).  Caller holds drain_lock. */
static int journal_drain(struct s3_be *be, char **err)
{
  struct idlist l = {0}, up = {0};
  store_sweep_counts_t c;
  memset(&c, 0, sizeof c);
  int64_t t0 = real_ns();
  int r = store_backend_local.sweep(be->journal, INT64_MIN, collect_id, &l,
                                    &c, err);
  if (r < 0)
    return r;
  /* Cross-host GC must see that uploads are under way (marker first). */
  if (l.n && (r = marker_begin(be, err)) < 0) {
    free(l.v);
    return r;
  }
  size_t cs = be->store ? be->store->chunk_size : 4u << 20;
  size_t cap = cs > 65536 ? cs : 65536;
  for (size_t i = 0; i < l.n && r == 0; i += S3BE_BATCH) {
    size_t n = l.n - i < S3BE_BATCH ? l.n - i : S3BE_BATCH;
    s3_request_t q[S3BE_BATCH];
    void *bufs[S3BE_BATCH];
    char *keys[S3BE_BATCH];
    size_t m = 0;
    memset(q, 0, sizeof q);
    for (size_t j = 0; j < n; j++) {
      const store_id_t *id = &l.v[i + j];
      void *b = malloc(cap);
      size_t len;
      char *jerr = NULL;
      if (!b) {
        r = store_err(err, ENOMEM, "out of memory");
        break;
      }
      int g = store_backend_local.get(be->journal, id, b, cap, &len, &jerr);
      free(jerr);
      if (g < 0) {          /* drained by another process meanwhile */
        free(b);
        continue;
      }
      bufs[m] = b;
      keys[m] = key_object(be, id);
      q[m].op = S3_OP_PUT;
      q[m].key = keys[m];
      q[m].body = b;
      q[m].body_len = len;
      q[m].fence = -1;
      m++;
    }
    if (r == 0 && m)
      r = s3_batch(be->cli, q, m, err);
    for (size_t j = 0; j < m; j++) {
      if (q[j].result == 0 && r == 0) {
        store_id_t id;
        store_hash(bufs[j], q[j].body_len, &id);
        collect_id(&id, &up);
        atomic_fetch_add(&be->puts, 1);
        atomic_fetch_add(&be->put_bytes, q[j].body_len);
        /* Uploaded: the journal copy becomes a clean cached chunk. */
        char *jp = store_backend_local.path(be->journal, &id);
        char *cp = cache_path(be, &id);
        if (jp && cp && rename(jp, cp) == 0) {
          pthread_mutex_lock(&be->lock);
          be->cache_used += q[j].body_len;
          pthread_mutex_unlock(&be->lock);
        } else {      /* in a pack (or the rename failed): copy */
          cache_put(be, &id, bufs[j], q[j].body_len);
          if (jp)
            unlink(jp);
        }
        free(jp);
        free(cp);
      }
      s3_request_clear(&q[j]);
      free(bufs[j]);
      free(keys[j]);
    }
  }
  free(l.v);
  if (up.n) {
    /* Uploaded: forget them in the journal (pack-backed journals keep
     * objects until swept; this also compacts its packs). */
    store_sweep_counts_t c2;
    memset(&c2, 0, sizeof c2);
    char *serr = NULL;
    qsort(up.v, up.n, sizeof *up.v, id_cmp);
    int s2 = store_backend_local.sweep(be->journal, t0, id_uploaded, &up, &c2,
                                       &serr);
    if (s2 < 0 && r == 0) {
      r = s2;
      if (err && !*err)
        *err = serr;
      else
        free(serr);
    } else {
      free(serr);
    }
  }
  free(up.v);
  pthread_mutex_lock(&be->lock);
  int over = be->cache_used > be->conf.cache_bytes;
  pthread_mutex_unlock(&be->lock);
  if (over) {
    uint64_t now = cache_scan(be, 1);
    pthread_mutex_lock(&be->lock);
    be->cache_used = now;
    pthread_mutex_unlock(&be->lock);
  }
  return r;
}

/* A writer that lost its lease can never commit: it uploads nothing more. */
static int fenced_check(struct s3_be *be, char **err)
{
  pthread_mutex_lock(&be->lock);
  int fenced = be->have_lease && be->fenced;
  pthread_mutex_unlock(&be->lock);
  if (fenced)
    return store_err(err, ESTALE, "%s: this host lost its lease on it "
                     "(fenced): not uploading", be->lease_ref);
  return 0;
}

static int s3be_sync(void *p, char **err)
{
  struct s3_be *be = p;
  int r = store_backend_local.sync(be->journal, err);
  if (r < 0 || be->conf.durability != STORE_DURABILITY_REMOTE)
    return r;
  if ((r = fenced_check(be, err)) < 0)
    return r;
  pthread_mutex_lock(&be->drain_lock);
  r = journal_drain(be, err);
  pthread_mutex_unlock(&be->drain_lock);
  return r;
}

static void s3be_set_sync_mode(void *p, store_sync_mode_t mode)
{
  struct s3_be *be = p;
  store_backend_local.set_sync_mode(be->journal, mode);
}

static char *s3be_path(void *p, const store_id_t *id)
{
  return cache_path(p, id);
}

struct sweep_ctx {
  struct s3_be *be;
  int64_t cutoff_ns;
  int (*doomed)(const store_id_t *id, void *ud);
  void *ud;
  store_sweep_counts_t *c;
  char **keys;
  uint64_t *sizes;
  size_t n, cap;
};

static int sweep_entry(const s3_list_entry_t *e, void *ud)
{
  struct sweep_ctx *x = ud;
  const char *hex = strrchr(e->key, '/');
  hex = hex ? hex + 1 : e->key;
  store_id_t id;
  if (store_id_from_hex(hex, &id) < 0) {
    x->c->foreign_files++;
    return 0;
  }
  x->c->objects++;
  x->c->bytes += e->size;
  if (!x->doomed(&id, x->ud))
    return 0;
  x->c->garbage_objects++;
  x->c->garbage_bytes += e->size;
  if (x->cutoff_ns == INT64_MIN)
    return 0;
  /* No LastModified: unknown age, keep it. */
  if (e->mtime_ms < 0 || e->mtime_ms * 1000000 >= x->cutoff_ns) {
    x->c->kept_recent++;
    return 0;
  }
  if (x->n == x->cap) {
    size_t nc = x->cap ? x->cap * 2 : 64;
    char **nk = realloc(x->keys, nc * sizeof *nk);
    uint64_t *ns = nk ? realloc(x->sizes, nc * sizeof *ns) : NULL;
    if (nk)
      x->keys = nk;
    if (!ns)
      return 1;
    x->sizes = ns;
    x->cap = nc;
  }
  if (!(x->keys[x->n] = strdup(e->key)))
    return 1;
  x->sizes[x->n++] = e->size;
  return 0;
}

/* GC sweep of the bucket: list P/objects/, delete unreferenced objects
 * whose LastModified is older than the cutoff (the grace period must cover
 * the longest upload-to-commit delay of any host: docs/s3.md). */
static int s3be_sweep(void *p, int64_t cutoff_ns,
                      int (*doomed)(const store_id_t *id, void *ud), void *ud,
                      store_sweep_counts_t *c, char **err)
{
  struct s3_be *be = p;
  struct sweep_ctx x = {.be = be, .cutoff_ns = cutoff_ns, .doomed = doomed,
                        .ud = ud, .c = c};
  char *prefix = key_for(be, "objects/", "");
  if (!prefix)
    return store_err(err, ENOMEM, "out of memory");
  int r = s3_list(be->cli, prefix, 0, sweep_entry, &x, err);
  free(prefix);
  for (size_t i = 0; r >= 0 && i < x.n; i += S3BE_BATCH) {
    size_t n = x.n - i < S3BE_BATCH ? x.n - i : S3BE_BATCH;
    s3_request_t q[S3BE_BATCH];
    memset(q, 0, sizeof q);
    for (size_t j = 0; j < n; j++) {
      q[j].op = S3_OP_DELETE;
      q[j].key = x.keys[i + j];
    }
    r = s3_batch(be->cli, q, n, err);
    for (size_t j = 0; j < n; j++) {
      if (q[j].result == 0) {
        c->removed_objects++;
        c->removed_bytes += x.sizes[i + j];
      }
      s3_request_clear(&q[j]);
    }
  }
  for (size_t i = 0; i < x.n; i++)
    free(x.keys[i]);
  free(x.keys);
  free(x.sizes);
  return r < 0 ? r : 0;
}

/* ---- refs in the bucket ---- */

static char *ref_encode(const store_ref_t *ref)
{
  char root[STORE_ID_HEX_LEN + 1];
  store_id_to_hex(&ref->root, root);
  json_object *o = json_object_new_object();
  json_object_object_add(o, "lanes_ref", json_object_new_int(1));
  json_object_object_add(o, "name", json_object_new_string(ref->name));
  json_object_object_add(o, "root", json_object_new_string(root));
  json_object_object_add(o, "size", json_object_new_int64((int64_t)ref->size));
  json_object_object_add(o, "generation",
                         json_object_new_int64((int64_t)ref->generation));
  json_object_object_add(o, "parent", json_object_new_string(ref->parent));
  json_object_object_add(o, "created", json_object_new_int64(ref->created));
  json_object_object_add(o, "updated", json_object_new_int64(ref->updated));
  char *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
  json_object_put(o);
  return s;
}

static int ref_decode(const char *body, size_t len, store_ref_t *out)
{
  json_tokener *tok = json_tokener_new();
  if (!tok)
    return -ENOMEM;
  json_object *o = json_tokener_parse_ex(tok, body, (int)len);
  json_tokener_free(tok);
  json_object *v;
  store_ref_t r;
  memset(&r, 0, sizeof r);
  int ok = o && json_object_is_type(o, json_type_object);
  const char *name = ok && json_object_object_get_ex(o, "name", &v)
                       ? json_object_get_string(v) : NULL;
  const char *root = ok && json_object_object_get_ex(o, "root", &v)
                       ? json_object_get_string(v) : NULL;
  if (!name || !root || strlen(name) > STORE_REF_NAME_MAX ||
      store_id_from_hex(root, &r.root) < 0) {
    json_object_put(o);
    return -EBADMSG;
  }
  snprintf(r.name, sizeof r.name, "%s", name);
  if (json_object_object_get_ex(o, "parent", &v))
    snprintf(r.parent, sizeof r.parent, "%s", json_object_get_string(v));
  if (json_object_object_get_ex(o, "size", &v))
    r.size = (uint64_t)json_object_get_int64(v);
  if (json_object_object_get_ex(o, "generation", &v))
    r.generation = (uint64_t)json_object_get_int64(v);
  if (json_object_object_get_ex(o, "created", &v))
    r.created = json_object_get_int64(v);
  if (json_object_object_get_ex(o, "updated", &v))
    r.updated = json_object_get_int64(v);
  json_object_put(o);
  *out = r;
  return 0;
}

/* Mark name unpublished (caller holds s->lock, inside a transaction). */
static int pub_mark(struct s3_be *be, const char *name, const char *owner,
                    char **err)
{
  sqlite3_stmt *st;
  store_t *s = be->store;
  if (sqlite3_prepare_v2(s->db, "INSERT INTO s3_pub(name, seq, owner) "
                         "VALUES(?1, 1, ?2) ON CONFLICT(name) DO UPDATE SET "
                         "seq = seq + 1, owner = ?2", -1, &st, NULL)
      != SQLITE_OK)
    return store_err(err, EIO, "s3_pub: %s", sqlite3_errmsg(s->db));
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  if (owner)
    sqlite3_bind_text(st, 2, owner, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, 2);
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE)
    return store_err(err, EIO, "s3_pub: %s", sqlite3_errmsg(s->db));
  return 0;
}

static int s3be_ref_dirty(void *p, const char *name, char **err)
{
  return pub_mark(p, name, NULL, err);
}

/* PUT one ref (fenced if it is the ref this handle holds the lease for). */
static int ref_upload(struct s3_be *be, const store_ref_t *ref, char **err)
{
  char *key = key_for(be, "refs/", ref->name);
  char *body = ref_encode(ref);
  int r;
  if (!key || !body) {
    free(key);
    free(body);
    return store_err(err, ENOMEM, "out of memory");
  }
  pthread_mutex_lock(&be->lock);
  int fenced_ref = be->have_lease && !strcmp(be->lease_ref, ref->name);
  int fenced = be->fenced;
  uint64_t token = be->lease.generation;
  char etag[S3_ETAG_MAX + 1];
  snprintf(etag, sizeof etag, "%s", be->ref_etag);
  pthread_mutex_unlock(&be->lock);
  if (fenced_ref && fenced) {
    r = store_err(err, ESTALE, "publish %s: this host lost its lease on it "
                  "(fenced): not committing", ref->name);
  } else if (fenced_ref) {
    r = s3_fence_commit(be->cli, key, token, etag, body, strlen(body), etag,
                        err);
    pthread_mutex_lock(&be->lock);
    if (r == 0)
      snprintf(be->ref_etag, sizeof be->ref_etag, "%s", etag);
    else if (r == -ESTALE)
      be->fenced = 1;
    pthread_mutex_unlock(&be->lock);
  } else {
    r = s3_put(be->cli, key, body, strlen(body), NULL, err);
  }
  if (r == 0)
    atomic_fetch_add(&be->ref_puts, 1);
  free(key);
  free(body);
  return r;
}

static int s3be_ref_commit(void *p, const store_ref_t *ref, char **err)
{
  struct s3_be *be = p;
  if (be->conf.durability == STORE_DURABILITY_REMOTE)
    return ref_upload(be, ref, err);   /* the journal was drained by sync */
  int r = pub_mark(be, ref->name, be->owner, err);
  if (r == 0) {
    pthread_mutex_lock(&be->lock);
    be->kick = 1;
    pthread_cond_broadcast(&be->cond);
    pthread_mutex_unlock(&be->lock);
  }
  return r;
}

static int owner_alive(const char *owner)
{
  long pid;
  unsigned long long start;
  if (!owner || sscanf(owner, "%ld-%llu", &pid, &start) != 2)
    return 0;
  return store_proc_start_time((pid_t)pid) == start;
}

struct pubrow {
  char name[STORE_REF_NAME_MAX + 1];
  int64_t seq;
};

/* Upload the journal, then publish every unpublished ref this handle may
 * publish (not those owned by another live writer). */
static int s3be_publish(void *p, char **err)
{
  struct s3_be *be = p;
  store_t *s = be->store;
  int r = fenced_check(be, err);
  if (r < 0)
    return r;
  pthread_mutex_lock(&be->drain_lock);
  r = journal_drain(be, err);
  struct pubrow *rows = NULL;
  size_t n = 0, cap = 0;
  if (r == 0) {
    sqlite3_stmt *st;
    pthread_mutex_lock(&s->lock);
    if (sqlite3_prepare_v2(s->db, "SELECT name, seq, owner FROM s3_pub "
                           "ORDER BY name", -1, &st, NULL) == SQLITE_OK) {
      while (sqlite3_step(st) == SQLITE_ROW) {
        const char *owner = (const char *)sqlite3_column_text(st, 2);
        if (owner && strcmp(owner, be->owner) && owner_alive(owner))
          continue;
        if (n == cap) {
          size_t nc = cap ? cap * 2 : 16;
          struct pubrow *nr = realloc(rows, nc * sizeof *nr);
          if (!nr)
            break;
          rows = nr;
          cap = nc;
        }
        snprintf(rows[n].name, sizeof rows[n].name, "%s",
                 (const char *)sqlite3_column_text(st, 0));
        rows[n].seq = sqlite3_column_int64(st, 1);
        n++;
      }
      sqlite3_finalize(st);
    } else {
      r = store_err(err, EIO, "s3_pub: %s", sqlite3_errmsg(s->db));
    }
    pthread_mutex_unlock(&s->lock);
  }
  for (size_t i = 0; i < n && r == 0; i++) {
    store_ref_t ref;
    char *gerr = NULL;
    int g = store_ref_get(s, rows[i].name, &ref, &gerr);
    free(gerr);
    if (g == 0) {
      r = ref_upload(be, &ref, err);
    } else if (g == -ENOENT) {
      char *key = key_for(be, "refs/", rows[i].name);
      r = key ? s3_delete(be->cli, key, err)
              : store_err(err, ENOMEM, "out of memory");
      free(key);
    } else {
      r = g;
    }
    if (r < 0)
      break;
    /* Before the row goes: a refresh whose listing began before this PUT
     * must not take the ref's absence there for a deletion elsewhere. */
    atomic_store(&be->last_publish, (int64_t)time(NULL));
    /* Published: forget it, unless it changed again meanwhile. */
    sqlite3_stmt *st;
    pthread_mutex_lock(&s->lock);
    if (sqlite3_prepare_v2(s->db, "DELETE FROM s3_pub WHERE name=? AND seq=?",
                           -1, &st, NULL) == SQLITE_OK) {
      sqlite3_bind_text(st, 1, rows[i].name, -1, SQLITE_STATIC);
      sqlite3_bind_int64(st, 2, rows[i].seq);
      sqlite3_step(st);
      sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->lock);
  }
  free(rows);
  if (r == 0)
    marker_tick(be, 0);
  pthread_mutex_unlock(&be->drain_lock);
  return r;
}

struct keylist {
  char **v;
  size_t n, cap;
};

static int collect_key(const s3_list_entry_t *e, void *ud)
{
  struct keylist *l = ud;
  if (l->n == l->cap) {
    size_t nc = l->cap ? l->cap * 2 : 64;
    char **nv = realloc(l->v, nc * sizeof *nv);
    if (!nv)
      return 1;
    l->v = nv;
    l->cap = nc;
  }
  if (!(l->v[l->n] = strdup(e->key)))
    return 1;
  l->n++;
  return 0;
}

static void keylist_free(struct keylist *l)
{
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i]);
  free(l->v);
}

static int s3be_refresh(void *p, char **err)
{
  struct s3_be *be = p;
  store_t *s = be->store;
  struct keylist l = {0};
  char *prefix = key_for(be, "refs/", "");
  if (!prefix)
    return store_err(err, ENOMEM, "out of memory");
  size_t plen = strlen(prefix);
  time_t list_start = time(NULL);
  int r = s3_list(be->cli, prefix, 0, collect_key, &l, err);
  free(prefix);
  if (r < 0) {
    keylist_free(&l);
    return r;
  }
  store_ref_t *refs = calloc(l.n ? l.n : 1, sizeof *refs);
  s3_request_t *q = calloc(l.n ? l.n : 1, sizeof *q);
  if (!refs || !q) {
    free(refs);
    free(q);
    keylist_free(&l);
    return store_err(err, ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < l.n; i++) {
    q[i].op = S3_OP_GET;
    q[i].key = l.v[i];
  }
  r = l.n ? s3_batch(be->cli, q, l.n, err) : 0;
  size_t nref = 0;
  for (size_t i = 0; i < l.n; i++) {
    if (q[i].result == 0 &&
        ref_decode(q[i].data, q[i].len, &refs[nref]) == 0 &&
        !strcmp(refs[nref].name, l.v[i] + plen))
      nref++;
    s3_request_clear(&q[i]);
  }
  free(q);
  if (r == -ENOENT) {           /* deleted between LIST and GET: skip it */
    if (err) {
      free(*err);
      *err = NULL;
    }
    r = 0;
  }
  if (r == 0) {
    /* One transaction: bucket refs replace local ones, except refs with
     * unpublished local changes; local refs gone from the bucket go. */
    pthread_mutex_lock(&s->lock);
    sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    sqlite3_exec(s->db, "CREATE TEMP TABLE IF NOT EXISTS s3_seen(name TEXT "
                 "PRIMARY KEY); DELETE FROM s3_seen", NULL, NULL, NULL);
    for (size_t i = 0; i < nref && r == 0; i++) {
      sqlite3_stmt *st;
      int dirty = 0;
      if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM s3_pub WHERE name=?", -1,
                             &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, refs[i].name, -1, SQLITE_STATIC);
        dirty = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
      }
      if (sqlite3_prepare_v2(s->db, "INSERT OR IGNORE INTO s3_seen VALUES(?)",
                             -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, refs[i].name, -1, SQLITE_STATIC);
        sqlite3_step(st);
        sqlite3_finalize(st);
      }
      /* Never move a ref backwards: a local writer may have committed (and
       * published) a newer generation since the GET above. */
      store_ref_t cur;
      char *gerr = NULL;
      int have = store_ref_get_locked(s, refs[i].name, &cur, &gerr) == 0;
      free(gerr);
      if (!dirty && (!have || refs[i].generation > cur.generation))
        r = store_ref_set_locked(s, &refs[i], err);
    }
    /* Gone from the bucket: deleted by another host -- unless changed here
     * since the listing began (not yet published, or updated after it).
     * If this host published any ref since the listing began, the listing
     * may predate that PUT: delete nothing this round (the next refresh
     * decides). */
    char sql[256];
    snprintf(sql, sizeof sql, "DELETE FROM refs WHERE name NOT IN (SELECT "
             "name FROM s3_seen) AND name NOT IN (SELECT name FROM s3_pub) "
             "AND updated < %lld", (long long)list_start - 2);
    if (r == 0 && atomic_load(&be->last_publish) < (int64_t)list_start - 2 &&
        sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
      r = store_err(err, EIO, "refresh refs: %s", sqlite3_errmsg(s->db));
    if (r == 0 && sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
      r = store_err(err, EIO, "refresh refs: %s", sqlite3_errmsg(s->db));
    if (r < 0)
      sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->lock);
  }
  free(refs);
  keylist_free(&l);
  if (r == 0)
    marker_tick(be, 0);
  return r;
}


/* GC, before the mark: list P/pending/, lower *cutoff_ns below the start
 * of every live marker (minus the clock allowance), delete dead ones
 * (remove != 0), then pull the bucket's refs into the mirror so the mark
 * sees every host's commits. */
static int s3be_gc_prepare(void *p, int remove, int64_t *cutoff_ns,
                           uint64_t *live, uint64_t *dead, char **err)
{
  struct s3_be *be = p;
  struct keylist l = {0};
  char *prefix = key_for(be, "pending/", "");
  if (!prefix)
    return store_err(err, ENOMEM, "out of memory");
  int r = s3_list(be->cli, prefix, 0, collect_key, &l, err);
  free(prefix);
  int64_t now = s3_now_ms();
  for (size_t i = 0; r >= 0 && i < l.n; i++) {
    void *data = NULL;
    size_t len = 0;
    char *gerr = NULL;
    int g = s3_get(be->cli, l.v[i], 0, 0, NULL, &data, &len, NULL, &gerr);
    free(gerr);
    if (g == -ENOENT)
      continue;                 /* its writer finished meanwhile */
    if (g < 0) {
      r = store_err(err, -g, "read pending-upload marker %s", l.v[i]);
      break;
    }
    json_tokener *tok = json_tokener_new();
    json_object *o = tok ? json_tokener_parse_ex(tok, data, (int)len) : NULL, *v;
    if (tok)
      json_tokener_free(tok);
    free(data);
    int64_t started = 0, expires = 0;
    if (o && json_object_object_get_ex(o, "started_ms", &v))
      started = json_object_get_int64(v);
    if (o && json_object_object_get_ex(o, "expires_ms", &v))
      expires = json_object_get_int64(v);
    json_object_put(o);
    if (!started || !expires) {
      /* Unreadable: assume a writer started just now and keep it until
       * a TTL from now would have passed -- i.e. protect everything. */
      started = now;
      expires = now + S3BE_MARKER_TTL_MS;
    }
    if (expires + S3BE_MARKER_SKEW_MS < now) {
      (*dead)++;
      if (remove) {
        char *derr = NULL;
        (void)s3_delete(be->cli, l.v[i], &derr);
        free(derr);
      }
      continue;
    }
    (*live)++;
    int64_t c = (started - S3BE_MARKER_SKEW_MS) * 1000000;
    if (c < *cutoff_ns)
      *cutoff_ns = c;
  }
  keylist_free(&l);
  if (r < 0)
    return r;
  return s3be_refresh(be, err);
}

const struct store_backend_ops store_backend_s3 = {
  .name = "s3",
  .open = s3be_open,
  .close = s3be_close,
  .put = s3be_put,
  .get = s3be_get,
  .sync = s3be_sync,
  .set_sync_mode = s3be_set_sync_mode,
  .path = s3be_path,
  .sweep = s3be_sweep,
  .attach = s3be_attach,
  .ref_dirty = s3be_ref_dirty,
  .ref_commit = s3be_ref_commit,
  .publish = s3be_publish,
  .refresh = s3be_refresh,
  .gc_prepare = s3be_gc_prepare,
};

/* ---- public S3 calls (store.h) ---- */

static struct s3_be *be_of(const store_t *s)
{
  return s->ops == &store_backend_s3 ? s->be : NULL;
}

const char *store_backend_name(const store_t *s)
{
  return s->ops->name;
}

int store_refresh(store_t *s, char **err)
{
  return s->ops->refresh ? s->ops->refresh(s->be, err) : 0;
}

int store_publish(store_t *s, char **err)
{
  return s->ops->publish ? s->ops->publish(s->be, err) : 0;
}

static void *uploader_main(void *p)
{
  struct s3_be *be = p;
  unsigned backoff_ms = 0;
  pthread_mutex_lock(&be->lock);
  while (!be->stop) {
    if (!be->kick) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      unsigned wait = backoff_ms ? backoff_ms : 1000;
      ts.tv_sec += wait / 1000;
      ts.tv_nsec += (long)(wait % 1000) * 1000000;
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
      pthread_cond_timedwait(&be->cond, &be->lock, &ts);
      if (be->stop)
        break;
    }
    be->kick = 0;
    pthread_mutex_unlock(&be->lock);
    char *err = NULL;
    int r = s3be_publish(be, &err);
    if (r < 0) {
      /* Retried on the next round; nothing acknowledged is lost: the
       * journal and the unpublished mark stay until this succeeds. */
      fprintf(stderr, "lanes s3 uploader: %s (retrying)\n",
              err ? err : strerror(-r));
      backoff_ms = backoff_ms ? (backoff_ms * 2 > 10000 ? 10000
                                                        : backoff_ms * 2)
                              : 500;
    } else {
      backoff_ms = 0;
    }
    free(err);
    pthread_mutex_lock(&be->lock);
  }
  pthread_mutex_unlock(&be->lock);
  return NULL;
}

int store_background_start(store_t *s, char **err)
{
  struct s3_be *be = be_of(s);
  /* Remote durability uploads inside FLUSH itself; what a failed FLUSH
   * left in the journal goes with the next FLUSH or at close. */
  if (!be || be->uploader_on || be->conf.durability == STORE_DURABILITY_REMOTE)
    return 0;
  int e = pthread_create(&be->uploader, NULL, uploader_main, be);
  if (e)
    return store_err(err, e, "start uploader thread: %m");
  be->uploader_on = 1;
  return 0;
}

int store_remote_stats(store_t *s, store_remote_stats_t *out)
{
  struct s3_be *be = be_of(s);
  if (!be)
    return -EOPNOTSUPP;
  memset(out, 0, sizeof *out);
  out->gets = atomic_load(&be->gets);
  out->get_bytes = atomic_load(&be->get_bytes);
  out->prefetch_gets = atomic_load(&be->prefetch_gets);
  out->puts = atomic_load(&be->puts);
  out->put_bytes = atomic_load(&be->put_bytes);
  out->cache_hits = atomic_load(&be->cache_hits);
  out->journal_hits = atomic_load(&be->journal_hits);
  out->ref_puts = atomic_load(&be->ref_puts);
  out->attempts = s3_client_attempts(be->cli);
  out->connections = s3_client_connections(be->cli);
  return 0;
}

int store_conditional_enforced(const store_t *s)
{
  const struct s3_be *be = be_of(s);
  return be ? be->conf.enforced : 0;
}

/* ---- leases ---- */

static int64_t lease_skew_ms(void)
{
  return 2 * (S3BE_LEASE_TTL_MS / 3);
}

int store_lease_check(store_t *s, const char *ref, const char *holder,
                      char **err)
{
  struct s3_be *be = be_of(s);
  if (!be)
    return 0;
  char *key = key_for(be, "leases/", ref);
  if (!key)
    return store_err(err, ENOMEM, "out of memory");
  s3_lease_t l;
  int r = s3_lease_read(be->cli, key, &l, err);
  free(key);
  if (r == -ENOENT || r == -EBADMSG) {
    /* no lease, or an unreadable one nobody can be holding: free to take */
    if (err) {
      free(*err);
      *err = NULL;
    }
    return 0;
  }
  if (r < 0)
    return r;
  if (!strcmp(l.holder, holder))
    return 0;
  int64_t now = s3_now_ms();
  int free_now = l.released || l.expires_ms + lease_skew_ms() < now;
  if (!be->conf.enforced && !be->conf.allow_unenforced)
    return store_err(err, EPERM,
                     "%s was last attached by host %s, and this store "
                     "(s3://%s/%s) does not enforce conditional writes "
                     "(If-None-Match/If-Match were ignored by the probe at "
                     "store add), so a lease cannot keep two hosts from "
                     "writing it at once: refusing to attach it here.  Use "
                     "a store that enforces them, or re-add the store with "
                     "--allow-unenforced-leases if you make sure yourself "
                     "that only one host uses a lane at a time",
                     ref, l.holder, be->conf.bucket, be->pfx);
  if (!free_now)
    return store_err(err, EBUSY, "%s is in use by host %s (lease expires in "
                     "%lld s)", ref, l.holder,
                     (long long)((l.expires_ms + lease_skew_ms() - now) / 1000
                                 + 1));
  return 0;
}

static void *renewer_main(void *p)
{
  struct s3_be *be = p;
  pthread_mutex_lock(&be->lock);
  while (!be->stop && be->have_lease) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += S3BE_LEASE_TTL_MS / 3000;
    pthread_cond_timedwait(&be->cond, &be->lock, &ts);
    if (be->stop || !be->have_lease)
      break;
    s3_lease_t l = be->lease;
    char key_name[STORE_REF_NAME_MAX + 1];
    snprintf(key_name, sizeof key_name, "%s", be->lease_ref);
    pthread_mutex_unlock(&be->lock);
    char *key = key_for(be, "leases/", key_name), *err = NULL;
    int64_t sent = mono_ms();
    int r = key ? s3_lease_renew(be->cli, key, &l, S3BE_LEASE_TTL_MS,
                                 s3_now_ms(), &err) : -ENOMEM;
    free(key);
    pthread_mutex_lock(&be->lock);
    if (r == 0) {
      be->lease = l;
      be->renewed_mono_ms = sent;
      pthread_mutex_unlock(&be->lock);
      marker_tick(be, 0);
      pthread_mutex_lock(&be->lock);
    } else if (r == -ESTALE) {
      be->fenced = 1;
      fprintf(stderr, "lanes s3: lease on %s lost: %s\n", key_name,
              err ? err : "taken over");
    } else {
      fprintf(stderr, "lanes s3: lease renew of %s failed: %s\n", key_name,
              err ? err : strerror(-r));
    }
    free(err);
  }
  pthread_mutex_unlock(&be->lock);
  return NULL;
}

int store_lease_acquire(store_t *s, const char *ref, const char *holder,
                        int64_t ttl_ms, char **err)
{
  struct s3_be *be = be_of(s);
  if (!be)
    return 0;
  if (be->have_lease)
    return store_err(err, EBUSY, "this handle already holds a lease");
  int r = store_lease_check(s, ref, holder, err);
  if (r < 0)
    return r;
  (void)ttl_ms;                 /* fixed: the renewer's period derives from it */
  char *key = key_for(be, "leases/", ref), *rkey = key_for(be, "refs/", ref);
  if (!key || !rkey) {
    free(key);
    free(rkey);
    return store_err(err, ENOMEM, "out of memory");
  }
  s3_lease_t l;
  int64_t sent = mono_ms();
  r = s3_lease_acquire(be->cli, key, holder, S3BE_LEASE_TTL_MS,
                       lease_skew_ms(), s3_now_ms(), &l, err);
  char etag[S3_ETAG_MAX + 1] = "";
  if (r == 0) {
    r = s3_fence_claim(be->cli, rkey, l.generation, NULL, 0, etag, err);
    if (r < 0) {
      char *e2 = NULL;
      s3_lease_release(be->cli, key, &l, &e2);
      free(e2);
    }
  }
  free(key);
  free(rkey);
  if (r < 0)
    return r;
  pthread_mutex_lock(&be->lock);
  snprintf(be->lease_ref, sizeof be->lease_ref, "%s", ref);
  snprintf(be->holder, sizeof be->holder, "%s", holder);
  snprintf(be->ref_etag, sizeof be->ref_etag, "%s", etag);
  be->lease = l;
  be->have_lease = 1;
  be->fenced = 0;
  be->renewed_mono_ms = sent;
  pthread_mutex_unlock(&be->lock);
  int e = pthread_create(&be->renewer, NULL, renewer_main, be);
  if (e == 0)
    be->renewer_on = 1;
  return 0;
}

int store_lease_ok(store_t *s, char **err)
{
  struct s3_be *be = be_of(s);
  if (!be)
    return 0;
  pthread_mutex_lock(&be->lock);
  int r = 0;
  if (be->have_lease) {
    if (be->fenced)
      r = store_err(err, ESTALE, "the lease on %s was taken over by another "
                    "host: this writer is fenced", be->lease_ref);
    else if (mono_ms() > be->renewed_mono_ms + S3BE_LEASE_TTL_MS -
                         lease_skew_ms() / 2)
      r = store_err(err, ESTALE, "the lease on %s could not be renewed in "
                    "time: not writing", be->lease_ref);
  }
  pthread_mutex_unlock(&be->lock);
  return r;
}

int store_lease_release(store_t *s, char **err)
{
  struct s3_be *be = be_of(s);
  if (!be || !be->have_lease)
    return 0;
  pthread_mutex_lock(&be->lock);
  be->have_lease = 0;
  pthread_cond_broadcast(&be->cond);
  s3_lease_t l = be->lease;
  int fenced = be->fenced;
  char ref[STORE_REF_NAME_MAX + 1];
  snprintf(ref, sizeof ref, "%s", be->lease_ref);
  pthread_mutex_unlock(&be->lock);
  if (be->renewer_on) {
    pthread_join(be->renewer, NULL);
    be->renewer_on = 0;
  }
  if (fenced)
    return 0;                   /* not ours any more: leave it alone */
  char *key = key_for(be, "leases/", ref);
  int r = key ? s3_lease_release(be->cli, key, &l, err)
              : store_err(err, ENOMEM, "out of memory");
  free(key);
  return r;
}

/* ---- prefetch ---- */

static int cached_or_journal(struct s3_be *be, const store_id_t *id)
{
  char *cp = cache_path(be, id), *jp = store_backend_local.path(be->journal, id);
  int hit = (cp && access(cp, F_OK) == 0) || (jp && access(jp, F_OK) == 0);
  free(cp);
  free(jp);
  return hit;
}

/* Fetch ids (not in flight: the caller marked them) into the cache in one
 * parallel batch, then clear their in-flight marks. */
static void fetch_ids(struct s3_be *be, const store_id_t *ids, size_t n)
{
  s3_request_t q[S3BE_BATCH];
  char *keys[S3BE_BATCH];
  memset(q, 0, sizeof q);
  for (size_t i = 0; i < n; i++) {
    keys[i] = key_object(be, &ids[i]);
    q[i].op = S3_OP_GET;
    q[i].key = keys[i];
    q[i].expect_sha256 = ids[i].b;
  }
  char *err = NULL;
  (void)s3_batch(be->cli, q, n, &err);
  free(err);
  for (size_t i = 0; i < n; i++) {
    if (q[i].result == 0) {
      atomic_fetch_add(&be->gets, 1);
      atomic_fetch_add(&be->prefetch_gets, 1);
      atomic_fetch_add(&be->get_bytes, q[i].len);
      cache_put(be, &ids[i], q[i].data, q[i].len);
    }
    s3_request_clear(&q[i]);
    free(keys[i]);
  }
  pthread_mutex_lock(&be->lock);
  for (size_t i = 0; i < n; i++)
    inflight_del(be, &ids[i]);
  pthread_cond_broadcast(&be->cond);
  pthread_mutex_unlock(&be->lock);
}

static void *prefetcher_main(void *p)
{
  struct s3_be *be = p;
  pthread_mutex_lock(&be->lock);
  while (!be->stop) {
    if (be->qlen == 0) {
      pthread_cond_wait(&be->cond, &be->lock);
      continue;
    }
    store_id_t ids[S3BE_BATCH];
    size_t n = 0;
    while (be->qlen && n < S3BE_BATCH &&
           be->ninflight < S3BE_INFLIGHT_MAX) {
      ids[n++] = be->queue[be->qhead];
      be->qhead = (be->qhead + 1) % S3BE_PREFETCH_QUEUE;
      be->qlen--;
    }
    if (n == 0) {             /* in-flight set full: wait for room */
      pthread_cond_wait(&be->cond, &be->lock);
      continue;
    }
    pthread_mutex_unlock(&be->lock);
    fetch_ids(be, ids, n);
    pthread_mutex_lock(&be->lock);
  }
  pthread_mutex_unlock(&be->lock);
  return NULL;
}

int store_prefetch(store_t *s, const char *refname, uint64_t offset,
                   uint64_t len, int wait)
{
  struct s3_be *be = be_of(s);
  if (!be || len == 0)
    return 0;
  store_ref_t ref;
  if (store_ref_get(s, refname, &ref, NULL) < 0)
    return 0;
  if (offset >= ref.size)
    return 0;
  if (len > ref.size - offset)
    len = ref.size - offset;
  uint64_t first = offset / s->chunk_size;
  uint64_t last = (offset + len - 1) / s->chunk_size;
  if (last - first >= S3BE_BATCH * 4)
    last = first + S3BE_BATCH * 4 - 1;
  store_id_t want[S3BE_BATCH * 4];
  size_t n = 0;
  pthread_mutex_lock(&be->pf_lock);
  if (!be->pf_map || memcmp(&be->pf_root, &ref.root, sizeof ref.root) ||
      be->pf_size != ref.size) {
    map_free(be->pf_map);
    be->pf_map = NULL;
    if (map_open(s, &ref.root, ref.size, &be->pf_map, NULL) < 0) {
      pthread_mutex_unlock(&be->pf_lock);
      return 0;
    }
    be->pf_root = ref.root;
    be->pf_size = ref.size;
  }
  for (uint64_t idx = first; idx <= last; idx++) {
    store_id_t id;
    if (map_get(be->pf_map, idx, &id, NULL) < 0)
      break;
    if (!store_id_is_zero(&id) && !cached_or_journal(be, &id))
      want[n++] = id;
  }
  pthread_mutex_unlock(&be->pf_lock);
  if (n == 0)
    return 0;
  pthread_mutex_lock(&be->lock);
  if (wait) {
    /* Fetch now, in parallel, those nobody is fetching yet. */
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
      if (!inflight_has(be, &want[i]) && be->ninflight < S3BE_INFLIGHT_MAX) {
        be->inflight[be->ninflight++] = want[i];
        want[m++] = want[i];
      }
    pthread_mutex_unlock(&be->lock);
    for (size_t i = 0; i < m; i += S3BE_BATCH)
      fetch_ids(be, want + i, m - i < S3BE_BATCH ? m - i : S3BE_BATCH);
    return (int)m;
  }
  if (!be->prefetcher_on && !be->stop) {
    if (pthread_create(&be->prefetcher, NULL, prefetcher_main, be) == 0)
      be->prefetcher_on = 1;
  }
  size_t queued = 0;
  for (size_t i = 0; i < n && be->qlen < S3BE_PREFETCH_QUEUE; i++) {
    if (inflight_has(be, &want[i]))
      continue;
    be->queue[(be->qhead + be->qlen) % S3BE_PREFETCH_QUEUE] = want[i];
    be->qlen++;
    queued++;
  }
  /* Queued ids count as in flight at once, so a read arriving before the
   * prefetcher picks them up waits instead of fetching them again. */
  for (size_t i = 0; i < n && be->ninflight < S3BE_INFLIGHT_MAX; i++)
    if (!inflight_has(be, &want[i]))
      be->inflight[be->ninflight++] = want[i];
  pthread_cond_broadcast(&be->cond);
  pthread_mutex_unlock(&be->lock);
  return (int)queued;
}

/* ---- meta documents ---- */

int store_meta_put(store_t *s, const char *name, const char *body, char **err)
{
  struct s3_be *be = be_of(s);
  if (!be)
    return store_err(err, EOPNOTSUPP, "not an S3 store");
  char *key = key_for(be, "meta/", name);
  if (!key)
    return store_err(err, ENOMEM, "out of memory");
  int r = s3_put(be->cli, key, body, strlen(body), NULL, err);
  free(key);
  return r;
}

int store_meta_get(store_t *s, const char *name, char **body, char **err)
{
  struct s3_be *be = be_of(s);
  if (!be)
    return store_err(err, EOPNOTSUPP, "not an S3 store");
  char *key = key_for(be, "meta/", name);
  if (!key)
    return store_err(err, ENOMEM, "out of memory");
  void *data = NULL;
  size_t len = 0;
  int r = s3_get(be->cli, key, 0, 0, NULL, &data, &len, NULL, err);
  free(key);
  if (r < 0)
    return r;
  char *b = malloc(len + 1);
  if (!b) {
    free(data);
    return store_err(err, ENOMEM, "out of memory");
  }
  memcpy(b, data, len);
  b[len] = '\0';
  free(data);
  *body = b;
  return 0;
}

int store_meta_delete(store_t *s, const char *name, char **err)
{
  struct s3_be *be = be_of(s);
  if (!be)
    return store_err(err, EOPNOTSUPP, "not an S3 store");
  char *key = key_for(be, "meta/", name);
  if (!key)
    return store_err(err, ENOMEM, "out of memory");
  int r = s3_delete(be->cli, key, err);
  free(key);
  return r;
}

int store_meta_list(store_t *s, const char *prefix, store_meta_cb cb,
                    void *ud, char **err)
{
  struct s3_be *be = be_of(s);
  if (!be)
    return store_err(err, EOPNOTSUPP, "not an S3 store");
  struct keylist l = {0};
  char *base = key_for(be, "meta/", "");
  char *full = key_for(be, "meta/", prefix ? prefix : "");
  if (!base || !full) {
    free(base);
    free(full);
    return store_err(err, ENOMEM, "out of memory");
  }
  int r = s3_list(be->cli, full, 0, collect_key, &l, err);
  size_t blen = strlen(base);
  int n = 0;
  for (size_t i = 0; r >= 0 && i < l.n; i++) {
    n++;
    if (cb(l.v[i] + blen, ud))
      break;
  }
  free(base);
  free(full);
  keylist_free(&l);
  return r < 0 ? r : n;
}

/* ---- creation ---- */

int store_create_s3(const char *dir, const store_s3_config_t *cfg,
                    const store_params_t *params, int *enforced, char **err)
{
  if (!cfg->endpoint || !cfg->bucket)
    return store_err(err, EINVAL, "an S3 store needs an endpoint and a bucket");
  if (cfg->prefix && (cfg->prefix[0] == '/' ||
                      (*cfg->prefix &&
                       cfg->prefix[strlen(cfg->prefix) - 1] == '/')))
    return store_err(err, EINVAL, "prefix '%s': no leading or trailing '/'",
                     cfg->prefix);
  if (mkdir(dir, 0755) == -1 && errno != EEXIST)
    return store_err(err, errno, "mkdir %s: %m", dir);
  char *dbpath;
  struct stat sb;
  if (asprintf(&dbpath, "%s/store.db", dir) == -1)
    return store_err(err, ENOMEM, "out of memory");
  int exists = stat(dbpath, &sb) == 0;
  free(dbpath);
  if (exists)
    return store_err(err, EEXIST, "a store already exists in %s", dir);

  struct s3be_conf c;
  memset(&c, 0, sizeof c);
  c.endpoint = (char *)cfg->endpoint;
  c.bucket = (char *)cfg->bucket;
  c.region = (char *)cfg->region;
  c.credentials_file = (char *)cfg->credentials_file;
  c.profile = (char *)cfg->profile;
  c.vhost = cfg->vhost;
  s3_client_t *cli;
  int r = client_new(&c, &cli, err);
  if (r < 0)
    return r;
  char *pfx = prefix_dup(cfg->prefix), *probe = NULL, *sjkey = NULL;
  char *conf = NULL, *cdir = NULL, *cpath = NULL;
  void *data = NULL;
  size_t len = 0;
  uint64_t rnd = 0;
  (void)!getrandom(&rnd, sizeof rnd, 0);
  if (!pfx || asprintf(&probe, "%sprobe/%016llx", pfx,
                       (unsigned long long)rnd) == -1 ||
      asprintf(&sjkey, "%sstore.json", pfx) == -1) {
    r = store_err(err, ENOMEM, "out of memory");
    goto out;
  }
  int enf = 0;
  if ((r = s3_probe_conditional(cli, probe, &enf, err)) < 0)
    goto out;
  store_params_t p = {STORE_DEFAULT_CHUNK_SIZE, STORE_DEFAULT_FANOUT};
  if (params && params->chunk_size)
    p.chunk_size = params->chunk_size;
  if (params && params->fanout)
    p.fanout = params->fanout;
  r = s3_get(cli, sjkey, 0, 0, NULL, &data, &len, NULL, err);
  if (r == 0) {
    /* The bucket already holds this store: adopt its parameters. */
    json_tokener *tok = json_tokener_new();
    json_object *o = tok && data ? json_tokener_parse_ex(tok, data, (int)len)
                                 : NULL, *v;
    json_tokener_free(tok);
    if (o && json_object_object_get_ex(o, "chunk_size", &v))
      p.chunk_size = (uint32_t)json_object_get_int64(v);
    if (o && json_object_object_get_ex(o, "fanout", &v))
      p.fanout = (uint32_t)json_object_get_int64(v);
    json_object_put(o);
    if (!o) {
      r = store_err(err, EBADMSG, "s3://%s/%s is not a lanes store "
                    "description", cfg->bucket, sjkey);
      goto out;
    }
  } else if (r == -ENOENT) {
    if (err) {
      free(*err);
      *err = NULL;
    }
    char body[160];
    snprintf(body, sizeof body,
             "{\"lanes_store\":1,\"chunk_size\":%u,\"fanout\":%u}",
             p.chunk_size, p.fanout);
    if ((r = s3_put_cond(cli, sjkey, body, strlen(body), NULL, -1, NULL,
                         err)) < 0)
      goto out;
  } else {
    goto out;
  }
  if (cfg->cache_dir && *cfg->cache_dir)
    cdir = strdup(cfg->cache_dir);
  else if (asprintf(&cdir, "%s/cache", dir) == -1)
    cdir = NULL;
  if (!cdir || !(conf = conf_format(cfg, cdir, enf)) ||
      asprintf(&cpath, "%s/backend.conf", dir) == -1) {
    r = store_err(err, ENOMEM, "out of memory");
    goto out;
  }
  if ((r = write_file_atomic(cpath, conf, strlen(conf), 0600, err)) < 0)
    goto out;
  if ((r = store_create_backend(dir, &p, "s3", err)) < 0) {
    unlink(cpath);
    goto out;
  }
  if (enforced)
    *enforced = enf;
out:
  free(data);
  free(pfx);
  free(probe);
  free(sjkey);
  free(conf);
  free(cdir);
  free(cpath);
  s3_client_free(cli);
  return r;
}
