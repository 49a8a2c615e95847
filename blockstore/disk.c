/* lanes block store — the disk engine behind the nbdkit plugins.
 *
 * State of an open disk:
 *   map     the working manifest (map.c), loaded from the ref's root; it
 *           also holds the ids of chunks spilled since the last commit
 *   stage   written chunks not yet turned into objects: whole chunks in
 *           slots of an unlinked scratch file in the store directory
 *           (O_TMPFILE), found through a table chunk index -> slot.  Up to
 *           dirty_limit bytes are staged; beyond that staged chunks are
 *           spilled, a batch or two at a time: hashed, written as unsynced
 *           objects, entered into the map, their slots punched out and
 *           reused
 *   cache   a small LRU of verified clean chunk contents, keyed by object id
 *
 * Why a file: staged data lives in the page cache, which the kernel bounds
 * and reclaims (no resident memory of ours grows with it), and hashing is
 * deferred to the commit, so a chunk overwritten many times between two
 * FLUSHes is hashed and stored once, and a write to a staged chunk is one
 * pwrite at its place — as cheap as a write to a raw file.  The stage is
 * process-private scratch: nothing in it is durable or visible to any other
 * process, and it vanishes with the process (a crash then loses exactly the
 * unflushed writes, as NBD allows).
 *
 * Reads look at the stage first, then map -> object (SHA-256 verified on
 * every fetch from the backend; a mismatch or a missing object is -EIO).
 * The first write to a chunk stages all of it: a partial write merges the
 * chunk's current content (read-modify-write); a whole-chunk write needs no
 * read.  A whole-chunk zero/trim sets the map entry to the zero id directly
 * and drops the chunk from the stage.
 *
 * Commit (store_disk_flush): spill the stage (its slots read back in
 * batches and hashed on several threads), empty the stage file (so a
 * syncfs() does not write it back), write the changed map pages, sync the
 * backend once, then compare-and-swap the ref (root, size, generation) in
 * one SQLite transaction.  Until that transaction commits nothing of the
 * new state is visible through the ref; a crash at any point leaves the
 * previous generation intact plus unreferenced objects.
 *
 * GC safety: from the first put() after a commit until the next commit the
 * disk holds a pending session (store_pending_begin), so GC keeps every
 * object it wrote or reused meanwhile even though no ref names them yet.
 *
 * Threading: disk->lock serializes every public call on one disk (stage
 * reads and writes are page-cache copies, so the lock is held briefly; the
 * plugin's socket I/O runs outside it).  SHA-256 work — a spill, the
 * verification of the whole chunks of one large read — runs on up to
 * PAR_THREADS short-lived threads while the lock is held.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store-internal.h"

#define DISK_DEFAULT_DIRTY_LIMIT (1024ull * 1024 * 1024)
#define DISK_DEFAULT_CACHE_CHUNKS 64u
#define SLOT_FREE UINT64_MAX
/* Chunks read back and hashed per round of a spill. */
#define SPILL_BATCH 256u

struct schunk {
  uint64_t idx;
  uint64_t slot;            /* file offset = slot * chunk size */
  struct schunk *next;      /* hash chain */
};

struct cchunk {
  store_id_t id;
  uint8_t *data;
  uint64_t used;            /* LRU clock; 0 = empty slot */
};

struct store_disk {
  store_t *store;
  char ref[STORE_REF_NAME_MAX + 1];
  int readonly;
  uint64_t size;
  uint64_t generation;      /* generation of the ref we are based on */
  uint32_t cs;              /* chunk size */
  map_t *map;
  int changed;              /* anything written since the last commit */
  int pending;              /* holds a pending session (see above) */

  /* The stage (see above). */
  int stage_fd;             /* -1 until the first write */
  struct schunk **buckets;
  size_t nbuckets;
  size_t nstaged;           /* chunks in the table */
  uint64_t *slot_idx;       /* slot -> chunk index, or SLOT_FREE */
  size_t nslots;            /* slots ever used since the stage was emptied */
  size_t slots_cap;
  uint64_t *free_slots;     /* freed slots below nslots, reused first */
  size_t nfree;
  uint64_t dirty_limit;     /* staged bytes before a spill */
  uint8_t *scratch;         /* one chunk: merging a partial write */

  struct cchunk *cache;
  size_t ncache;
  uint64_t clock;

  pthread_mutex_t lock;
};

/* ---- stage file I/O ---- */

/* Stage file I/O: a read past the end (a slot whose coalesced write
 * failed) reads as zeros. */
static int io_full(int fd, int write, void *buf, size_t len, uint64_t off)
{
  if (write)
    return store_pwritev_all(fd, &(struct iovec){ buf, len }, 1, off);
  size_t got;
  int r = store_pread_all(fd, buf, len, off, &got);
  if (r == 0 && got < len)
    memset((uint8_t *)buf + got, 0, len - got);
  return r;
}

static int stage_io_err(store_disk_t *d, int r, int write, char **err)
{
  /* A full store filesystem is ENOSPC to the client; any other failure of
   * the scratch file is an I/O error. */
  return store_err(err, r == -ENOSPC ? ENOSPC : EIO, "%s: %s the stage file: %s",
                   d->ref, write ? "writing" : "reading", strerror(-r));
}

/* Consecutive pieces of one request that are also consecutive in the stage
 * file and in the caller's buffer go out as one pread/pwrite. */
struct iorun {
  uint64_t off;
  uint8_t *buf;
  size_t len;
};

static int run_flush(store_disk_t *d, struct iorun *run, int write, char **err)
{
  if (!run->len)
    return 0;
  int r = io_full(d->stage_fd, write, run->buf, run->len, run->off);
  run->len = 0;
  return r < 0 ? stage_io_err(d, r, write, err) : 0;
}

static int run_add(store_disk_t *d, struct iorun *run, int write, uint64_t off,
                   uint8_t *buf, size_t len, char **err)
{
  if (run->len && run->off + run->len == off && run->buf + run->len == buf) {
    run->len += len;
    return 0;
  }
  int r = run_flush(d, run, write, err);
  *run = (struct iorun){ off, buf, len };
  return r;
}

static int stage_open(store_disk_t *d, char **err)
{
  if (d->stage_fd >= 0)
    return 0;
  const char *dir = d->store->dir;
  int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    /* A filesystem without O_TMPFILE: a named file, unlinked at once. */
    char *path;
    if (asprintf(&path, "%s/.stage-XXXXXX", dir) < 0)
      return store_err(err, ENOMEM, "out of memory");
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0)
      unlink(path);
    free(path);
  }
  if (fd < 0)
    return store_err(err, errno == ENOSPC ? ENOSPC : EIO,
                     "%s: cannot create the stage file in %s: %s", d->ref,
                     dir, strerror(errno));
  d->stage_fd = fd;
  return 0;
}

/* ---- stage table ---- */

static size_t stage_bucket(size_t nbuckets, uint64_t idx)
{
  return (size_t)((idx * 0x9E3779B97F4A7C15ull) >> 29) % nbuckets;
}

static struct schunk *stage_find(const store_disk_t *d, uint64_t idx)
{
  for (struct schunk *c = d->buckets[stage_bucket(d->nbuckets, idx)]; c;
       c = c->next)
    if (c->idx == idx)
      return c;
  return NULL;
}

/* Table grows with the number of staged chunks (chains stay short). */
static int stage_rehash(store_disk_t *d)
{
  size_t nb = d->nbuckets * 4 + 1;
  struct schunk **b = calloc(nb, sizeof *b);
  if (!b)
    return -ENOMEM;
  for (size_t i = 0; i < d->nbuckets; i++)
    while (d->buckets[i]) {
      struct schunk *c = d->buckets[i];
      d->buckets[i] = c->next;
      size_t k = stage_bucket(nb, c->idx);
      c->next = b[k];
      b[k] = c;
    }
  free(d->buckets);
  d->buckets = b;
  d->nbuckets = nb;
  return 0;
}

/* A free slot for a new staged chunk (not yet in the table). */
static int slot_alloc(store_disk_t *d, uint64_t *slot, char **err)
{
  if (d->nfree) {
    *slot = d->free_slots[--d->nfree];
    return 0;
  }
  if (d->nslots == d->slots_cap) {
    size_t cap = d->slots_cap ? d->slots_cap * 2 : 256;
    uint64_t *si = realloc(d->slot_idx, cap * sizeof *si);
    if (!si)
      return store_err(err, ENOMEM, "out of memory");
    d->slot_idx = si;
    uint64_t *fs = realloc(d->free_slots, cap * sizeof *fs);
    if (!fs)
      return store_err(err, ENOMEM, "out of memory");
    d->free_slots = fs;
    d->slots_cap = cap;
  }
  d->slot_idx[d->nslots] = SLOT_FREE;
  *slot = d->nslots++;
  return 0;
}

static void slot_release(store_disk_t *d, uint64_t slot)
{
  d->slot_idx[slot] = SLOT_FREE;
  d->free_slots[d->nfree++] = slot;   /* cap >= nslots > nfree */
}

static int stage_insert(store_disk_t *d, uint64_t idx, uint64_t slot,
                        char **err)
{
  if (d->nstaged >= d->nbuckets * 2 && stage_rehash(d) < 0)
    return store_err(err, ENOMEM, "out of memory");
  struct schunk *c = malloc(sizeof *c);
  if (!c)
    return store_err(err, ENOMEM, "out of memory");
  size_t b = stage_bucket(d->nbuckets, idx);
  *c = (struct schunk){ .idx = idx, .slot = slot, .next = d->buckets[b] };
  d->buckets[b] = c;
  d->slot_idx[slot] = idx;
  d->nstaged++;
  return 0;
}

static void stage_remove(store_disk_t *d, uint64_t idx)
{
  struct schunk **pp = &d->buckets[stage_bucket(d->nbuckets, idx)];
  for (; *pp; pp = &(*pp)->next)
    if ((*pp)->idx == idx) {
      struct schunk *c = *pp;
      *pp = c->next;
      slot_release(d, c->slot);
      d->nstaged--;
      free(c);
      return;
    }
}

/* Once nothing is staged: give the file's blocks and page cache back (the
 * dirty pages are dropped, never written back) and restart at slot 0. */
static int stage_reset(store_disk_t *d, char **err)
{
  if (d->nstaged)
    return 0;
  d->nslots = d->nfree = 0;
  if (d->stage_fd >= 0 && ftruncate(d->stage_fd, 0) < 0)
    return store_err(err, EIO, "%s: emptying the stage file: %s", d->ref,
                     strerror(errno));
  return 0;
}

static int disk_pending(store_disk_t *d, char **err)
{
  if (d->pending)
    return 0;
  int r = store_pending_begin(d->store, err);
  if (r == 0)
    d->pending = 1;
  return r;
}

/* ---- work on several threads ---- */

/* par_for runs fn(ctx, i) for i in [0, n) on up to PAR_THREADS threads (the
 * caller's included; no more than the CPUs online, and at least
 * PAR_MIN_PER_THREAD items each), every nth item per thread.  A thread
 * stops at its first failure; the first failure's message is returned.
 * Used for the SHA-256 work: hashing a spill, verifying the chunks of one
 * large read. */
#define PAR_THREADS 4
#define PAR_MIN_PER_THREAD 4

typedef int (*par_fn)(void *ctx, size_t i, char **err);

struct par_job {
  par_fn fn;
  void *ctx;
  size_t n, first, step;
  int r;
  char *err;
};

static void *par_worker(void *arg)
{
  struct par_job *j = arg;
  for (size_t i = j->first; i < j->n; i += j->step)
    if ((j->r = j->fn(j->ctx, i, &j->err)) < 0)
      break;
  return NULL;
}

static size_t par_threads(size_t n)
{
  static long ncpu;
  if (!ncpu) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    ncpu = c > 0 ? c : 1;
  }
  size_t t = n / PAR_MIN_PER_THREAD;
  if (t > PAR_THREADS)
    t = PAR_THREADS;
  if (t > (size_t)ncpu)
    t = (size_t)ncpu;
  return t ? t : 1;
}

static int par_for(size_t n, par_fn fn, void *ctx, char **err)
{
  int r = 0;
  size_t nthreads = par_threads(n);
  struct par_job jobs[PAR_THREADS];
  pthread_t tids[PAR_THREADS];
  int started[PAR_THREADS] = {0};
  for (size_t t = 0; t < nthreads; t++)
    jobs[t] = (struct par_job){ .fn = fn, .ctx = ctx, .n = n, .first = t,
                                .step = nthreads };
  /* Job 0 runs here; a thread that cannot be created is run inline. */
  for (size_t t = 1; t < nthreads; t++)
    started[t] = pthread_create(&tids[t], NULL, par_worker, &jobs[t]) == 0;
  par_worker(&jobs[0]);
  for (size_t t = 1; t < nthreads; t++) {
    if (started[t])
      pthread_join(tids[t], NULL);
    else
      par_worker(&jobs[t]);
  }
  for (size_t t = 0; t < nthreads; t++) {
    if (jobs[t].r < 0 && r == 0) {
      r = jobs[t].r;
      store_err(err, -r, "%s", jobs[t].err ? jobs[t].err : strerror(-r));
    }
    free(jobs[t].err);
  }
  return r;
}

/* Spill: hash and put data[i] (chunk_size bytes); done[i] = 1 once stored
 * (objects are independent and the backend's put() is thread-safe). */
struct spill_ctx {
  store_disk_t *d;
  uint8_t *const *data;
  store_id_t *ids;
  int *done;
};

static int spill_one(void *arg, size_t i, char **err)
{
  struct spill_ctx *c = arg;
  store_t *s = c->d->store;
  memset(&c->ids[i], 0, sizeof c->ids[i]);
  if (!store_buf_is_zero(c->data[i], c->d->cs)) {
    store_hash(c->data[i], c->d->cs, &c->ids[i]);
    int r = s->ops->put(s->be, &c->ids[i], c->data[i], c->d->cs, err);
    if (r < 0)
      return r;             /* the rest of this share stays staged */
  }
  c->done[i] = 1;
  return 0;
}

static int spill_batch(store_disk_t *d, uint8_t *const *data, size_t n,
                       store_id_t *ids, int *done, char **err)
{
  struct spill_ctx c = { d, data, ids, done };
  return par_for(n, spill_one, &c, err);
}

/* Turn staged chunks into objects (unsynced), record them in the map and
 * drop them from the stage: all of them (max = 0) or at least max, in slot
 * order, SPILL_BATCH chunks per round.  Slots of a partial spill are
 * punched out of the file (their pages dropped, not written back) and
 * reused; once nothing is staged the file is emptied.  On failure the
 * chunks not yet stored stay staged. */
static int stage_spill(store_disk_t *d, size_t max, char **err)
{
  int r = 0;
  if (!d->nstaged)
    return stage_reset(d, err);
  if ((r = disk_pending(d, err)) < 0)
    return r;
  uint8_t *buf = malloc((size_t)SPILL_BATCH * d->cs);
  uint8_t **data = malloc(SPILL_BATCH * sizeof *data);
  uint64_t *idxs = malloc(SPILL_BATCH * sizeof *idxs);
  uint64_t *slots = malloc(SPILL_BATCH * sizeof *slots);
  store_id_t *ids = malloc(SPILL_BATCH * sizeof *ids);
  int *done = malloc(SPILL_BATCH * sizeof *done);
  if (!buf || !data || !idxs || !slots || !ids || !done) {
    r = store_err(err, ENOMEM, "out of memory");
    goto out;
  }
  size_t spilled = 0;
  for (uint64_t slot = 0; slot < d->nslots && r == 0 &&
                          (max == 0 || spilled < max);) {
    /* Gather up to SPILL_BATCH used slots; read each run of consecutive
     * ones with one pread. */
    size_t n = 0;
    struct iorun run = {0};
    for (; slot < d->nslots && n < SPILL_BATCH; slot++) {
      if (d->slot_idx[slot] == SLOT_FREE)
        continue;
      data[n] = buf + (size_t)n * d->cs;
      idxs[n] = d->slot_idx[slot];
      slots[n] = slot;
      if ((r = run_add(d, &run, 0, slot * d->cs, data[n], d->cs, err)) < 0)
        goto out;
      n++;
    }
    if ((r = run_flush(d, &run, 0, err)) < 0)
      goto out;
    memset(done, 0, n * sizeof *done);
    r = spill_batch(d, data, n, ids, done, err);
    for (size_t i = 0; i < n; i++) {
      if (!done[i])
        continue;
      int r2 = map_set(d->map, idxs[i], &ids[i], err);
      if (r2 < 0) {
        r = r2;
        break;
      }
      stage_remove(d, idxs[i]);
      spilled++;
      if (max)   /* best effort: a slot left allocated is only space */
        fallocate(d->stage_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  (off_t)(slots[i] * d->cs), d->cs);
    }
  }
  if (r == 0)
    r = stage_reset(d, err);
out:
  free(buf);
  free(data);
  free(idxs);
  free(slots);
  free(ids);
  free(done);
  return r;
}

/* ---- clean chunk cache ---- */

static uint8_t *cache_lookup(store_disk_t *d, const store_id_t *id)
{
  for (size_t i = 0; i < d->ncache; i++)
    if (d->cache[i].used && memcmp(&d->cache[i].id, id, sizeof *id) == 0) {
      d->cache[i].used = ++d->clock;
      return d->cache[i].data;
    }
  return NULL;
}

static struct cchunk *cache_victim(store_disk_t *d)
{
  struct cchunk *v = &d->cache[0];
  for (size_t i = 1; i < d->ncache && v->used; i++)
    if (d->cache[i].used < v->used)
      v = &d->cache[i];
  return v;
}

/* Read object id, chunk idx's content, into dst (chunk_size bytes) and
 * verify it; thread-safe (no disk state touched). */
static int chunk_read_verified(store_disk_t *d, uint64_t idx,
                               const store_id_t *id, uint8_t *dst, char **err)
{
  size_t len;
  char what[STORE_REF_NAME_MAX + 64];
  snprintf(what, sizeof what, "%s chunk %llu", d->ref,
           (unsigned long long)idx);
  int r = store_object_read(d->store, id, dst, d->cs, &len, what, err);
  if (r < 0)
    return r;
  if (len != d->cs) {
    char hex[STORE_ID_HEX_LEN + 1];
    store_id_to_hex(id, hex);
    return store_err(err, EIO, "%s: object %s has size %zu, expected %u",
                     what, hex, len, d->cs);
  }
  return 0;
}

/* Current committed-or-spilled content of chunk idx: *data = NULL means all
 * zero.  The pointer is valid until the next chunk fetch. */
static int chunk_fetch(store_disk_t *d, uint64_t idx, const uint8_t **data,
                       char **err)
{
  store_id_t id;
  int r = map_get(d->map, idx, &id, err);
  if (r < 0)
    return r;
  if (store_id_is_zero(&id)) {
    *data = NULL;
    return 0;
  }
  uint8_t *hit = cache_lookup(d, &id);
  if (hit) {
    *data = hit;
    return 0;
  }
  struct cchunk *v = cache_victim(d);
  v->used = 0;
  if ((r = chunk_read_verified(d, idx, &id, v->data, err)) < 0)
    return r;
  v->id = id;
  v->used = ++d->clock;
  *data = v->data;
  return 0;
}

/* Whole chunks of one read that come from objects: read and verified
 * straight into the caller's buffer, on several threads (SHA-256 is what a
 * large read costs). */
struct fetch {
  uint64_t idx;
  store_id_t id;
  uint8_t *dst;
};

struct fetch_ctx {
  store_disk_t *d;
  struct fetch *f;
};

static int fetch_one(void *arg, size_t i, char **err)
{
  struct fetch_ctx *c = arg;
  return chunk_read_verified(c->d, c->f[i].idx, &c->f[i].id, c->f[i].dst, err);
}

/* ---- open / close ---- */

int store_disk_open(store_t *s, const char *refname,
                    const store_disk_opts_t *opts, store_disk_t **out,
                    char **err)
{
  store_ref_t ref;
  int r = store_ref_get(s, refname, &ref, err);
  if (r < 0)
    return r;
  store_disk_t *d = calloc(1, sizeof *d);
  if (!d)
    return store_err(err, ENOMEM, "out of memory");
  pthread_mutex_init(&d->lock, NULL);
  d->store = s;
  d->stage_fd = -1;
  snprintf(d->ref, sizeof d->ref, "%s", refname);
  d->readonly = (opts && opts->readonly) || strncmp(refname, "disk/", 5) != 0;
  d->size = ref.size;
  d->generation = ref.generation;
  d->cs = s->chunk_size;
  d->dirty_limit = opts && opts->dirty_limit ? opts->dirty_limit
                                             : DISK_DEFAULT_DIRTY_LIMIT;
  if (d->dirty_limit < d->cs)
    d->dirty_limit = d->cs;
  d->ncache = opts && opts->cache_chunks ? opts->cache_chunks
                                         : DISK_DEFAULT_CACHE_CHUNKS;
  d->nbuckets = 1021;
  d->buckets = calloc(d->nbuckets, sizeof *d->buckets);
  d->cache = calloc(d->ncache, sizeof *d->cache);
  d->scratch = malloc(d->cs);
  if (!d->buckets || !d->cache || !d->scratch) {
    store_disk_close(d);
    return store_err(err, ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < d->ncache; i++)
    if (!(d->cache[i].data = malloc(d->cs))) {
      store_disk_close(d);
      return store_err(err, ENOMEM, "out of memory");
    }
  if ((r = map_open(s, &ref.root, ref.size, &d->map, err)) < 0) {
    store_disk_close(d);
    return r;
  }
  *out = d;
  return 0;
}

void store_disk_close(store_disk_t *d)
{
  if (!d)
    return;
  if (d->buckets)
    for (size_t b = 0; b < d->nbuckets; b++)
      while (d->buckets[b]) {
        struct schunk *c = d->buckets[b];
        d->buckets[b] = c->next;
        free(c);
      }
  free(d->buckets);
  free(d->slot_idx);
  free(d->free_slots);
  free(d->scratch);
  if (d->stage_fd >= 0)
    close(d->stage_fd);     /* unlinked: its blocks go with it */
  if (d->cache)
    for (size_t i = 0; i < d->ncache; i++)
      free(d->cache[i].data);
  free(d->cache);
  map_free(d->map);
  if (d->pending)
    store_pending_end(d->store);
  pthread_mutex_destroy(&d->lock);
  free(d);
}

uint64_t store_disk_size(const store_disk_t *d)
{
  return d->size;
}

int store_disk_is_readonly(const store_disk_t *d)
{
  return d->readonly;
}

uint64_t store_disk_generation(const store_disk_t *d)
{
  return d->generation;
}

static int disk_check_range(const store_disk_t *d, size_t count,
                            uint64_t offset, int write, char **err)
{
  if (write && d->readonly)
    return store_err(err, EROFS, "%s is read-only", d->ref);
  if (offset > d->size || count > d->size - offset)
    return store_err(err, write ? ENOSPC : EINVAL,
                     "%s: range %llu+%zu beyond the end (%llu)", d->ref,
                     (unsigned long long)offset, count,
                     (unsigned long long)d->size);
  return 0;
}

/* ---- I/O ---- */

int store_disk_read(store_disk_t *d, void *buf, size_t count, uint64_t offset,
                    char **err)
{
  int r;
  struct iorun run = {0};
  struct fetch fstack[32], *fetch = fstack;
  size_t nfetch = 0;
  pthread_mutex_lock(&d->lock);
  if ((r = disk_check_range(d, count, offset, 0, err)) < 0)
    goto out;
  if (count / d->cs + 2 > sizeof fstack / sizeof fstack[0] &&
      !(fetch = malloc((count / d->cs + 2) * sizeof *fetch))) {
    r = store_err(err, ENOMEM, "out of memory");
    goto out;
  }
  uint8_t *p = buf;
  while (count) {
    uint64_t idx = offset / d->cs;
    size_t coff = (size_t)(offset % d->cs);
    size_t n = d->cs - coff < count ? d->cs - coff : count;
    struct schunk *c = stage_find(d, idx);
    if (c) {
      if ((r = run_add(d, &run, 0, c->slot * d->cs + coff, p, n, err)) < 0)
        goto out;
    } else if (n == d->cs) {
      struct fetch *f = &fetch[nfetch];
      if ((r = map_get(d->map, idx, &f->id, err)) < 0)
        goto out;
      const uint8_t *hit = NULL;
      if (store_id_is_zero(&f->id)) {
        memset(p, 0, n);
      } else if ((hit = cache_lookup(d, &f->id))) {
        memcpy(p, hit, n);
      } else {
        f->idx = idx;
        f->dst = p;
        nfetch++;
      }
    } else {
      const uint8_t *src;
      if ((r = chunk_fetch(d, idx, &src, err)) < 0)
        goto out;
      if (src)
        memcpy(p, src + coff, n);
      else
        memset(p, 0, n);
    }
    p += n;
    offset += n;
    count -= n;
  }
  if ((r = run_flush(d, &run, 0, err)) < 0)
    goto out;
  if (nfetch)
    r = par_for(nfetch, fetch_one, &(struct fetch_ctx){ d, fetch }, err);
out:
  if (fetch != fstack)
    free(fetch);
  pthread_mutex_unlock(&d->lock);
  return r;
}

/* Stage chunk idx, which is not staged yet, with n bytes at coff taken
 * from p (NULL: zeros) and the rest from its current content. */
static int stage_new(store_disk_t *d, uint64_t idx, const uint8_t *p,
                     size_t coff, size_t n, struct iorun *run, char **err)
{
  uint64_t slot = 0;
  int r;
  if ((r = stage_open(d, err)) < 0 || (r = slot_alloc(d, &slot, err)) < 0)
    return r;
  if (p && n == d->cs) {
    /* A whole chunk: nothing to read, and no copy (the write may join the
     * neighbours' in one pwrite). */
    if ((r = run_add(d, run, 1, slot * d->cs, (uint8_t *)p, n, err)) < 0)
      goto fail;
  } else {
    const uint8_t *cur = NULL;
    if ((r = chunk_fetch(d, idx, &cur, err)) < 0)
      goto fail;
    if (cur)
      memcpy(d->scratch, cur, d->cs);
    else
      memset(d->scratch, 0, d->cs);
    if (p)
      memcpy(d->scratch + coff, p, n);
    else
      memset(d->scratch + coff, 0, n);
    r = io_full(d->stage_fd, 1, d->scratch, d->cs, slot * d->cs);
    if (r < 0) {
      r = stage_io_err(d, r, 1, err);
      goto fail;
    }
  }
  if ((r = stage_insert(d, idx, slot, err)) < 0)
    goto fail;
  return 0;
fail:
  slot_release(d, slot);
  return r;
}

/* Common body of write (buf != NULL) and zero (buf == NULL).  A failed
 * request leaves its range unspecified, as NBD allows (a chunk is staged
 * before a coalesced write of it fails), never the rest of the disk. */
static int disk_update(store_disk_t *d, const void *buf, size_t count,
                       uint64_t offset, char **err)
{
  int r;
  struct iorun run = {0};
  pthread_mutex_lock(&d->lock);
  if ((r = disk_check_range(d, count, offset, 1, err)) < 0)
    goto out;
  const uint8_t *p = buf;
  while (count) {
    uint64_t idx = offset / d->cs;
    size_t coff = (size_t)(offset % d->cs);
    size_t n = d->cs - coff < count ? d->cs - coff : count;
    d->changed = 1;
    struct schunk *c = stage_find(d, idx);
    if (!buf && n == d->cs) {
      store_id_t zero;
      memset(&zero, 0, sizeof zero);
      if ((r = run_flush(d, &run, 1, err)) < 0)
        goto out;
      if (c)
        stage_remove(d, idx);
      if ((r = map_set(d->map, idx, &zero, err)) < 0)
        goto out;
    } else if (c && buf) {
      if ((r = run_add(d, &run, 1, c->slot * d->cs + coff, (uint8_t *)p, n,
                       err)) < 0)
        goto out;
    } else if (c) {                       /* zero part of a staged chunk */
      memset(d->scratch, 0, n);
      if ((r = io_full(d->stage_fd, 1, d->scratch, n,
                       c->slot * d->cs + coff)) < 0) {
        r = stage_io_err(d, r, 1, err);
        goto out;
      }
    } else if ((r = stage_new(d, idx, p, coff, n, &run, err)) < 0) {
      goto out;
    }
    if (p)
      p += n;
    offset += n;
    count -= n;
  }
  if ((r = run_flush(d, &run, 1, err)) < 0)
    goto out;
  if ((uint64_t)d->nstaged * d->cs > d->dirty_limit) {
    /* Over the limit: spill down to one batch below it, so one request
     * stalls for a batch or two, not for the whole stage. */
    size_t limit = (size_t)(d->dirty_limit / d->cs);
    size_t target = limit > SPILL_BATCH ? limit - SPILL_BATCH : 0;
    r = stage_spill(d, target ? d->nstaged - target : 0, err);
  }
out:
  if (r < 0)
    run_flush(d, &run, 1, NULL);
  pthread_mutex_unlock(&d->lock);
  return r;
}

int store_disk_write(store_disk_t *d, const void *buf, size_t count,
                     uint64_t offset, char **err)
{
  return disk_update(d, buf, count, offset, err);
}

int store_disk_zero(store_disk_t *d, size_t count, uint64_t offset,
                    char **err)
{
  return disk_update(d, NULL, count, offset, err);
}

int store_disk_extent(store_disk_t *d, uint64_t offset, uint64_t count,
                      uint64_t *len, int *is_zero, char **err)
{
  int r = 0, state = -1;
  uint64_t done = 0;
  pthread_mutex_lock(&d->lock);
  if (offset >= d->size || count == 0) {
    r = store_err(err, EINVAL, "%s: extent query beyond the end", d->ref);
    goto out;
  }
  if (count > d->size - offset)
    count = d->size - offset;
  /* Bounded work per call: callers ask again for the rest. */
  for (unsigned steps = 0; done < count && steps < 65536; steps++) {
    uint64_t pos = offset + done, idx = pos / d->cs;
    uint64_t n = d->cs - pos % d->cs;
    int z;
    if (stage_find(d, idx)) {
      z = 0;
    } else {
      uint64_t run;
      if ((r = map_zero_run(d->map, idx, d->nstaged ? 1 : UINT64_MAX / d->cs,
                            &run, err)) < 0)
        goto out;
      z = run > 0;
      if (run > 1)
        n += (run - 1) * d->cs;
    }
    if (state == -1)
      state = z;
    else if (state != z)
      break;
    done += n;
  }
  *len = done < count ? done : count;
  *is_zero = state;
out:
  pthread_mutex_unlock(&d->lock);
  return r;
}

int store_disk_flush(store_disk_t *d, char **err)
{
  store_t *s = d->store;
  store_id_t root;
  int r = 0;
  pthread_mutex_lock(&d->lock);
  if (d->readonly || !d->changed)
    goto out;
  if ((r = stage_spill(d, 0, err)) < 0 ||
      (r = disk_pending(d, err)) < 0 ||
      (r = map_write(d->map, &root, err)) < 0 ||
      (r = s->ops->sync(s->be, err)) < 0 ||
      (r = store_ref_commit(s, d->ref, d->generation, &root, d->size, err)) < 0)
    goto out;
  d->generation++;
  d->changed = 0;
  /* Everything put so far is referenced by the ref now. */
  store_pending_end(s);
  d->pending = 0;
out:
  pthread_mutex_unlock(&d->lock);
  return r;
}
