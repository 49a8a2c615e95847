/* lanes block store — the disk engine behind the nbdkit plugins.
 *
 * State of an open disk:
 *   map     the working manifest (map.c), loaded from the ref's root; it
 *           also holds the ids of chunks spilled since the last commit
 *   dirty   written chunks not yet turned into objects, keyed by chunk index
 *           (bounded by dirty_limit bytes; over the bound they are spilled:
 *           written as unsynced objects and entered into the map)
 *   cache   a small LRU of verified clean chunk contents, keyed by object id
 *
 * Reads look at dirty first, then map -> object (SHA-256 verified on every
 * fetch from the backend; a mismatch or a missing object is -EIO).  Writes
 * are read-modify-write into dirty chunks.  A whole-chunk zero/trim sets the
 * map entry to the zero id directly.
 *
 * Commit (store_disk_flush): spill every dirty chunk, write the changed map
 * pages, sync the backend once, then compare-and-swap the ref (root, size,
 * generation) in one SQLite transaction.  Until that transaction commits
 * nothing of the new state is visible through the ref; a crash at any point
 * leaves the previous generation intact plus unreferenced objects.
 *
 * GC safety: from the first put() after a commit until the next commit the
 * disk holds a pending session (store_pending_begin), so GC keeps every
 * object it wrote or reused meanwhile even though no ref names them yet.
 *
 * Threading: disk->lock serializes every public call on one disk.  A
 * writable disk has one background spiller thread (dirty_bg_main) that
 * hashes and stores a batch of dirty chunks outside the lock once they
 * reach half the dirty limit; chunks of that batch are immutable (a write
 * to one continues on a copy).  A synchronous spill (commit, or the dirty
 * limit reached) first waits for that batch, then hashes and writes while
 * holding the lock.  Both use up to SPILL_THREADS short-lived threads.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store-internal.h"

#define DISK_DEFAULT_DIRTY_LIMIT (64u * 1024 * 1024)
#define DISK_DEFAULT_CACHE_CHUNKS 64u

struct dchunk {
  uint64_t idx;
  uint8_t *data;            /* chunk_size bytes */
  struct dchunk *next;      /* hash chain */
  int spilling;             /* in the background batch: data is immutable */
  int detached;             /* spilling, but superseded and out of the table:
                               the spiller frees it and records nothing */
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

  struct dchunk **buckets;
  size_t nbuckets;
  size_t ndirty;
  size_t dirty_limit;

  struct cchunk *cache;
  size_t ncache;
  uint64_t clock;

  /* Background spiller (writable disks): see dirty_bg_main. */
  pthread_cond_t cond;      /* with lock: batch done / work / stop */
  pthread_t bg;
  int bg_running;           /* thread started */
  int bg_stop;
  int bg_busy;              /* a batch is being written outside the lock */
  int bg_failed;            /* last batch failed: no retry before a flush */
  size_t nspilling;         /* chunks of the table in the current batch */
  size_t bg_threshold;      /* bytes of not-yet-spilling dirty chunks */

  pthread_mutex_t lock;
};

/* ---- dirty table ---- */

static size_t dirty_bucket(const store_disk_t *d, uint64_t idx)
{
  return (size_t)((idx * 0x9E3779B97F4A7C15ull) >> 32) % d->nbuckets;
}

static struct dchunk *dirty_find(const store_disk_t *d, uint64_t idx)
{
  for (struct dchunk *c = d->buckets[dirty_bucket(d, idx)]; c; c = c->next)
    if (c->idx == idx)
      return c;
  return NULL;
}

/* Drop idx from the table.  A chunk the background batch is writing is
 * only detached (the spiller owns and frees it). */
static void dirty_remove(store_disk_t *d, uint64_t idx)
{
  struct dchunk **pp = &d->buckets[dirty_bucket(d, idx)];
  for (; *pp; pp = &(*pp)->next)
    if ((*pp)->idx == idx) {
      struct dchunk *c = *pp;
      *pp = c->next;
      d->ndirty--;
      if (c->spilling) {
        c->detached = 1;
        d->nspilling--;
      } else {
        free(c->data);
        free(c);
      }
      return;
    }
}

/* Wait until no background batch is in flight (caller holds d->lock);
 * afterwards no chunk of the table is spilling until the lock is
 * released. */
static void dirty_wait_bg(store_disk_t *d)
{
  while (d->bg_busy)
    pthread_cond_wait(&d->cond, &d->lock);
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

static void cache_adopt(store_disk_t *d, const store_id_t *id,
                        uint8_t **data);

/* One spill worker's share: hash and put every nth dirty chunk from first.
 * Objects are independent and the backend's put() is thread-safe, so the
 * expensive part of a commit (SHA-256 + one file per chunk) runs on several
 * threads; the map is updated afterwards on the caller's thread. */
struct spill_job {
  store_disk_t *d;
  struct dchunk **chunks;
  store_id_t *ids;
  int *done;                /* per chunk: 1 = put (or zero), 0 = not */
  size_t n, first, step;
  int r;
  char *err;
};

static void *spill_worker(void *arg)
{
  struct spill_job *j = arg;
  store_t *s = j->d->store;
  for (size_t i = j->first; i < j->n; i += j->step) {
    struct dchunk *c = j->chunks[i];
    memset(&j->ids[i], 0, sizeof j->ids[i]);
    if (!store_buf_is_zero(c->data, j->d->cs)) {
      store_hash(c->data, j->d->cs, &j->ids[i]);
      int r = s->ops->put(s->be, &j->ids[i], c->data, j->d->cs, &j->err);
      if (r < 0) {
        j->r = r;
        return NULL;    /* the rest of this share stays dirty */
      }
    }
    j->done[i] = 1;
  }
  return NULL;
}

#define SPILL_THREADS 4
#define SPILL_MIN_PER_THREAD 8

/* Hash and put chunks[0..n) on up to SPILL_THREADS threads; done[i] = 1
 * for each one stored.  Touches neither the table nor the map, so it runs
 * with or without d->lock (the chunks' data must not change meanwhile). */
static int spill_batch(store_disk_t *d, struct dchunk **chunks, size_t n,
                       store_id_t *ids, int *done, char **err)
{
  int r = 0;
  size_t nthreads = n / SPILL_MIN_PER_THREAD;
  if (nthreads > SPILL_THREADS)
    nthreads = SPILL_THREADS;
  if (nthreads < 1)
    nthreads = 1;
  struct spill_job jobs[SPILL_THREADS];
  pthread_t tids[SPILL_THREADS];
  int started[SPILL_THREADS] = {0};
  for (size_t t = 0; t < nthreads; t++)
    jobs[t] = (struct spill_job){ .d = d, .chunks = chunks, .ids = ids,
                                  .done = done, .n = n, .first = t,
                                  .step = nthreads };
  /* Worker 0 runs here; a thread that cannot be created is run inline. */
  for (size_t t = 1; t < nthreads; t++)
    started[t] = pthread_create(&tids[t], NULL, spill_worker, &jobs[t]) == 0;
  spill_worker(&jobs[0]);
  for (size_t t = 1; t < nthreads; t++) {
    if (started[t])
      pthread_join(tids[t], NULL);
    else
      spill_worker(&jobs[t]);
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

/* Write every dirty chunk as an object (unsynced), record it in the map and
 * drop it from the table.  On failure the chunks not written stay dirty.
 * Waits for a background batch first. */
static int dirty_spill(store_disk_t *d, char **err)
{
  int r = 0;
  dirty_wait_bg(d);
  if (!d->ndirty)
    return 0;
  if ((r = disk_pending(d, err)) < 0)
    return r;
  size_t n = 0;
  struct dchunk **chunks = malloc(d->ndirty * sizeof *chunks);
  store_id_t *ids = malloc(d->ndirty * sizeof *ids);
  int *done = calloc(d->ndirty, sizeof *done);
  if (!chunks || !ids || !done) {
    r = store_err(err, ENOMEM, "out of memory");
    goto out;
  }
  for (size_t b = 0; b < d->nbuckets; b++)
    for (struct dchunk *c = d->buckets[b]; c; c = c->next)
      chunks[n++] = c;
  r = spill_batch(d, chunks, n, ids, done, err);
  /* Enter what was written into the map and drop it from the table. */
  for (size_t i = 0; i < n; i++) {
    if (!done[i])
      continue;
    int r2 = map_set(d->map, chunks[i]->idx, &ids[i], err);
    if (r2 < 0) {
      r = r2;
      break;
    }
    if (!store_id_is_zero(&ids[i]))
      cache_adopt(d, &ids[i], &chunks[i]->data);
    dirty_remove(d, chunks[i]->idx);
  }
out:
  free(chunks);
  free(ids);
  free(done);
  return r;
}

/* The background spiller.  Once the dirty chunks not yet being written
 * reach bg_threshold bytes it takes all of them as one batch, marks them
 * spilling and writes them outside d->lock (readers still find them in the
 * table; a writer replaces a spilling chunk by a copy and detaches it, see
 * dirty_get), then enters the batch into the map under the lock.  One
 * batch at a time, and dirty_spill waits for it, so map updates of one
 * chunk index happen in write order.  A failed batch leaves its chunks
 * dirty; the next flush retries them synchronously and reports the error. */
static void *dirty_bg_main(void *arg)
{
  store_disk_t *d = arg;
  pthread_mutex_lock(&d->lock);
  for (;;) {
    while (!d->bg_stop &&
           (d->bg_failed || (d->ndirty - d->nspilling) * (uint64_t)d->cs <
                            d->bg_threshold || !d->ndirty))
      pthread_cond_wait(&d->cond, &d->lock);
    if (d->bg_stop)
      break;
    char *err = NULL;
    size_t n = 0, cap = d->ndirty;
    struct dchunk **chunks = malloc(cap * sizeof *chunks);
    store_id_t *ids = malloc(cap * sizeof *ids);
    int *done = calloc(cap, sizeof *done);
    if (!chunks || !ids || !done || disk_pending(d, &err) < 0) {
      d->bg_failed = 1;
      free(chunks);
      free(ids);
      free(done);
      free(err);
      continue;
    }
    for (size_t b = 0; b < d->nbuckets; b++)
      for (struct dchunk *c = d->buckets[b]; c; c = c->next) {
        c->spilling = 1;
        chunks[n++] = c;
      }
    d->nspilling = n;
    d->bg_busy = 1;
    pthread_mutex_unlock(&d->lock);

    int r = spill_batch(d, chunks, n, ids, done, &err);

    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < n; i++) {
      struct dchunk *c = chunks[i];
      if (c->detached) {         /* superseded meanwhile: nothing to record */
        free(c->data);
        free(c);
        continue;
      }
      c->spilling = 0;
      d->nspilling--;
      if (!done[i])
        continue;
      int r2 = map_set(d->map, c->idx, &ids[i], &err);
      if (r2 < 0) {
        r = r2;
        continue;                /* stays dirty */
      }
      if (!store_id_is_zero(&ids[i]))
        cache_adopt(d, &ids[i], &c->data);
      dirty_remove(d, c->idx);
    }
    if (r < 0)
      d->bg_failed = 1;
    free(err);
    free(chunks);
    free(ids);
    free(done);
    d->bg_busy = 0;
    pthread_cond_broadcast(&d->cond);
  }
  pthread_mutex_unlock(&d->lock);
  return NULL;
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

/* A chunk just spilled is as good as a verified read (its id was hashed
 * from these bytes): swap its buffer into the cache, so that a partial
 * write to it soon after does not read and hash it back. */
static void cache_adopt(store_disk_t *d, const store_id_t *id, uint8_t **data)
{
  struct cchunk *v = cache_victim(d);
  uint8_t *old = v->data;
  v->data = *data;
  *data = old;
  v->id = *id;
  v->used = ++d->clock;
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
  size_t len;
  char what[STORE_REF_NAME_MAX + 64];
  snprintf(what, sizeof what, "%s chunk %llu", d->ref,
           (unsigned long long)idx);
  r = store_object_read(d->store, &id, v->data, d->cs, &len, what, err);
  if (r < 0)
    return r;
  if (len != d->cs) {
    char hex[STORE_ID_HEX_LEN + 1];
    store_id_to_hex(&id, hex);
    return store_err(err, EIO, "%s: object %s has size %zu, expected %u",
                     what, hex, len, d->cs);
  }
  v->id = id;
  v->used = ++d->clock;
  *data = v->data;
  return 0;
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
  pthread_cond_init(&d->cond, NULL);
  d->store = s;
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
  d->nbuckets = d->dirty_limit / d->cs * 2 + 1;
  d->buckets = calloc(d->nbuckets, sizeof *d->buckets);
  d->cache = calloc(d->ncache, sizeof *d->cache);
  if (!d->buckets || !d->cache) {
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
  /* Background spilling starts at half the dirty limit, so writes keep
   * being absorbed while a batch is hashed and stored.  Without the thread
   * every spill is synchronous (as with a read-only disk, which never
   * spills). */
  d->bg_threshold = d->dirty_limit / 2;
  if (d->bg_threshold < d->cs)
    d->bg_threshold = d->cs;
  if (!d->readonly)
    d->bg_running = pthread_create(&d->bg, NULL, dirty_bg_main, d) == 0;
  *out = d;
  return 0;
}

void store_disk_close(store_disk_t *d)
{
  if (!d)
    return;
  if (d->bg_running) {
    /* The thread finishes its batch (if any) before it looks at bg_stop. */
    pthread_mutex_lock(&d->lock);
    d->bg_stop = 1;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    pthread_join(d->bg, NULL);
  }
  if (d->buckets)
    for (size_t b = 0; b < d->nbuckets; b++)
      while (d->buckets[b]) {
        struct dchunk *c = d->buckets[b];
        d->buckets[b] = c->next;
        free(c->data);
        free(c);
      }
  free(d->buckets);
  if (d->cache)
    for (size_t i = 0; i < d->ncache; i++)
      free(d->cache[i].data);
  free(d->cache);
  map_free(d->map);
  if (d->pending)
    store_pending_end(d->store);
  pthread_cond_destroy(&d->cond);
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
  pthread_mutex_lock(&d->lock);
  if ((r = disk_check_range(d, count, offset, 0, err)) < 0)
    goto out;
  uint8_t *p = buf;
  while (count) {
    uint64_t idx = offset / d->cs;
    size_t coff = (size_t)(offset % d->cs);
    size_t n = d->cs - coff < count ? d->cs - coff : count;
    struct dchunk *c = dirty_find(d, idx);
    const uint8_t *src;
    if (c)
      src = c->data;
    else if ((r = chunk_fetch(d, idx, &src, err)) < 0)
      goto out;
    if (src)
      memcpy(p, src + coff, n);
    else
      memset(p, 0, n);
    p += n;
    offset += n;
    count -= n;
  }
out:
  pthread_mutex_unlock(&d->lock);
  return r;
}

/* Dirty chunk for idx, created from the current content if needed.  With
 * whole != 0 the caller overwrites all of it, so nothing is read. */
static int dirty_get(store_disk_t *d, uint64_t idx, int whole,
                     struct dchunk **out, char **err)
{
  struct dchunk *c = dirty_find(d, idx);
  if (c && c->spilling) {
    /* The background batch is writing c: continue on a copy and detach c
     * (the batch then records nothing for it). */
    struct dchunk *n = malloc(sizeof *n);
    if (!n || !(n->data = malloc(d->cs))) {
      free(n);
      return store_err(err, ENOMEM, "out of memory");
    }
    if (!whole)
      memcpy(n->data, c->data, d->cs);
    n->idx = idx;
    n->spilling = n->detached = 0;
    struct dchunk **pp = &d->buckets[dirty_bucket(d, idx)];
    while (*pp != c)
      pp = &(*pp)->next;
    n->next = c->next;
    *pp = n;
    c->detached = 1;
    d->nspilling--;
    *out = n;
    return 0;
  }
  if (c) {
    *out = c;
    return 0;
  }
  const uint8_t *cur = NULL;
  int r;
  if (!whole && (r = chunk_fetch(d, idx, &cur, err)) < 0)
    return r;
  c = malloc(sizeof *c);
  if (!c || !(c->data = malloc(d->cs))) {
    free(c);
    return store_err(err, ENOMEM, "out of memory");
  }
  if (cur)
    memcpy(c->data, cur, d->cs);
  else if (!whole)
    memset(c->data, 0, d->cs);
  c->idx = idx;
  c->spilling = c->detached = 0;
  size_t b = dirty_bucket(d, idx);
  c->next = d->buckets[b];
  d->buckets[b] = c;
  d->ndirty++;
  *out = c;
  return 0;
}

/* Common body of write (buf != NULL) and zero (buf == NULL). */
static int disk_update(store_disk_t *d, const void *buf, size_t count,
                       uint64_t offset, char **err)
{
  int r;
  pthread_mutex_lock(&d->lock);
  if ((r = disk_check_range(d, count, offset, 1, err)) < 0)
    goto out;
  const uint8_t *p = buf;
  while (count) {
    uint64_t idx = offset / d->cs;
    size_t coff = (size_t)(offset % d->cs);
    size_t n = d->cs - coff < count ? d->cs - coff : count;
    d->changed = 1;
    if (!buf && n == d->cs) {
      store_id_t zero;
      memset(&zero, 0, sizeof zero);
      dirty_remove(d, idx);
      if ((r = map_set(d->map, idx, &zero, err)) < 0)
        goto out;
    } else {
      struct dchunk *c = NULL;
      if ((r = dirty_get(d, idx, n == d->cs, &c, err)) < 0)
        goto out;
      if (buf)
        memcpy(c->data + coff, p, n);
      else
        memset(c->data + coff, 0, n);
    }
    if (p)
      p += n;
    offset += n;
    count -= n;
  }
  if ((uint64_t)d->ndirty * d->cs > d->dirty_limit) {
    /* Over the bound: let a running batch finish, then spill the rest
     * here if still needed. */
    dirty_wait_bg(d);
    if ((uint64_t)d->ndirty * d->cs > d->dirty_limit)
      r = dirty_spill(d, err);
  } else if (d->bg_running && !d->bg_busy && !d->bg_failed &&
             (uint64_t)d->ndirty * d->cs >= d->bg_threshold) {
    pthread_cond_broadcast(&d->cond);
  }
out:
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
    struct dchunk *c = dirty_find(d, idx);
    if (c) {
      z = 0;
    } else {
      uint64_t run;
      if ((r = map_zero_run(d->map, idx, d->ndirty ? 1 : UINT64_MAX / d->cs,
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
  d->bg_failed = 0;     /* the background may try again after a flush */
  if (d->readonly || !d->changed)
    goto out;
  if ((r = dirty_spill(d, err)) < 0 ||
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
