/* lanes block store — whole-store walks over the refs' Merkle trees:
 * garbage collection, verification, stats and per-ref usage.
 *
 * One walker visits every ref's tree (pages read through the backend and
 * hash-checked) and records each reachable object once in an open-addressing
 * table keyed by id, with the number of distinct refs reaching it.  Because
 * pages are content-addressed, a page already seen carries its whole subtree:
 * the mark walk stops there; the counting walks descend again so that every
 * object's ref count is exact (needed for "bytes unique to a ref").
 *
 * GC safety against live writers (an nbdkit that has spilled objects, or an
 * import, that no ref names yet).  Writers hold a pending session
 * (store.c) from before their first put() until after the commit that
 * references the objects; the session is a file in STORE/pending whose mtime
 * is the session start.  GC does, in this order:
 *   1. cutoff := min(now - grace, mtime of every live writer's pending
 *      file) - 2 s  (files of dead processes are stale and removed);
 *   2. mark from all refs (read after step 1);
 *   3. sweep: delete unmarked objects whose mtime < cutoff.
 * A writer that committed before step 2 has its objects marked; one that
 * commits later had its session open at step 1 (so its objects are younger
 * than the cutoff) or opened it after step 1 (so they are younger than
 * now).  Reused objects get their mtime refreshed by put(), and the backend
 * excludes that refresh from a concurrent check-then-unlink (objects-local.c).
 * We chose this over a grace period alone because a lane can keep spilled
 * chunks uncommitted for as long as its guest does not flush; the 2 s margin
 * covers the coarse filesystem clock, the grace period covers writers that
 * do not use this library.
 *
 * Threading: a walk owns its table; the store's own locks cover the rest.
 * Several GCs at once are safe (unlink of a missing file is ignored) but
 * pointless.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store-internal.h"

#define GC_DEFAULT_GRACE_S 60
#define GC_CLOCK_MARGIN_NS (2LL * 1000000000)

enum { K_CHUNK = 1, K_PAGE = 2 };
enum { ST_UNCHECKED = 0, ST_OK, ST_BAD };
enum walk_mode { W_MARK, W_COUNT, W_VERIFY };

struct oent {
  store_id_t id;
  uint64_t below;         /* pages: non-zero chunk slots in the subtree */
  uint32_t nrefs;         /* distinct refs reaching it */
  uint32_t last_ref;      /* 1-based index of the last ref that reached it */
  uint32_t size;          /* bytes (once read) */
  int32_t bad;            /* index into walk.bad, or -1 */
  uint8_t used, kind, state;
};

struct badobj {
  store_id_t id;
  int is_page;
  store_problem_kind_t kind;
  uint32_t *refs;
  size_t nrefs, cap;
};

struct walk {
  store_t *s;
  enum walk_mode mode;
  struct oent *tab;
  size_t cap, used;
  store_ref_t *refs;
  size_t nrefs, refcap;
  uint64_t *ref_chunks;
  uint64_t *ref_logical;
  struct badobj *bad;
  size_t nbad, badcap;
  uint8_t *buf;
  size_t bufcap;
  uint64_t checked, checked_bytes;
};

/* ---- object table ---- */

static size_t tab_slot(const struct walk *w, const store_id_t *id)
{
  uint64_t h;
  memcpy(&h, id->b, sizeof h);   /* ids are uniformly random already */
  return (size_t)h & (w->cap - 1);
}

static struct oent *tab_find(struct walk *w, const store_id_t *id)
{
  if (!w->cap)
    return NULL;
  for (size_t i = tab_slot(w, id);; i = (i + 1) & (w->cap - 1)) {
    struct oent *e = &w->tab[i];
    if (!e->used)
      return NULL;
    if (memcmp(&e->id, id, sizeof *id) == 0)
      return e;
  }
}

static int tab_grow(struct walk *w)
{
  size_t ncap = w->cap ? w->cap * 2 : 4096;
  struct oent *old = w->tab, *nt = calloc(ncap, sizeof *nt);
  size_t ocap = w->cap;
  if (!nt)
    return -ENOMEM;
  w->tab = nt;
  w->cap = ncap;
  for (size_t i = 0; i < ocap; i++) {
    if (!old[i].used)
      continue;
    size_t j = tab_slot(w, &old[i].id);
    while (nt[j].used)
      j = (j + 1) & (ncap - 1);
    nt[j] = old[i];
  }
  free(old);
  return 0;
}

/* Entry for id, added if absent.  Pointers die at the next tab_get. */
static int tab_get(struct walk *w, const store_id_t *id, int kind,
                   struct oent **out)
{
  struct oent *e = tab_find(w, id);
  if (!e) {
    if ((w->used + 1) * 2 > w->cap && tab_grow(w) < 0)
      return -ENOMEM;
    size_t i = tab_slot(w, id);
    while (w->tab[i].used)
      i = (i + 1) & (w->cap - 1);
    e = &w->tab[i];
    e->id = *id;
    e->used = 1;
    e->kind = (uint8_t)kind;
    e->bad = -1;
    w->used++;
  }
  *out = e;
  return 0;
}

/* ---- problems (verify) ---- */

static int bad_add(struct walk *w, struct oent *e, int is_page,
                   store_problem_kind_t kind)
{
  if (w->nbad == w->badcap) {
    size_t nc = w->badcap ? w->badcap * 2 : 16;
    struct badobj *nb = realloc(w->bad, nc * sizeof *nb);
    if (!nb)
      return -ENOMEM;
    w->bad = nb;
    w->badcap = nc;
  }
  struct badobj *b = &w->bad[w->nbad];
  memset(b, 0, sizeof *b);
  b->id = e->id;
  b->is_page = is_page;
  b->kind = kind;
  e->bad = (int32_t)w->nbad++;
  e->state = ST_BAD;
  return 0;
}

static int bad_add_ref(struct walk *w, const struct oent *e, uint32_t ri)
{
  struct badobj *b = &w->bad[e->bad];
  if (b->nrefs && b->refs[b->nrefs - 1] == ri)
    return 0;
  if (b->nrefs == b->cap) {
    size_t nc = b->cap ? b->cap * 2 : 4;
    uint32_t *nr = realloc(b->refs, nc * sizeof *nr);
    if (!nr)
      return -ENOMEM;
    b->refs = nr;
    b->cap = nc;
  }
  b->refs[b->nrefs++] = ri;
  return 0;
}

/* ---- reading objects ---- */

/* Read and hash-check object id into w->buf.  Returns 0, or the problem
 * kind (> 0) for a bad object, or a negative errno for a real failure. */
static int obj_read(struct walk *w, const store_id_t *id, size_t *len,
                    char **err)
{
  store_t *s = w->s;
  char *berr = NULL;
  size_t n;
  store_id_t got;
  int r = s->ops->get(s->be, id, w->buf, w->bufcap, &n, &berr);
  if (r < 0) {
    if (r == -ENOMEM) {
      store_err(err, ENOMEM, "%s", berr ? berr : "out of memory");
      free(berr);
      return r;
    }
    free(berr);
    return r == -ENOENT ? STORE_PROBLEM_MISSING
         : r == -EFBIG ? STORE_PROBLEM_CORRUPT : STORE_PROBLEM_UNREADABLE;
  }
  store_hash(w->buf, n, &got);
  w->checked++;
  w->checked_bytes += n;
  if (memcmp(&got, id, sizeof got) != 0)
    return STORE_PROBLEM_CORRUPT;
  *len = n;
  return 0;
}

static const char *problem_name(int kind)
{
  return kind == STORE_PROBLEM_MISSING ? "missing"
       : kind == STORE_PROBLEM_CORRUPT ? "corrupt" : "unreadable";
}

/* ---- the walk ---- */

static int visit_chunk(struct walk *w, uint32_t ri, const store_id_t *id,
                       char **err)
{
  struct oent *e;
  if (tab_get(w, id, K_CHUNK, &e) < 0)
    return store_err(err, ENOMEM, "out of memory");
  if (e->last_ref == ri + 1)
    return 0;
  e->last_ref = ri + 1;
  e->nrefs++;
  w->ref_chunks[ri]++;
  if (w->mode != W_VERIFY)
    return 0;
  if (e->state == ST_UNCHECKED) {
    size_t len = 0;
    int k = obj_read(w, id, &len, err);
    if (k < 0)
      return k;
    if (k == 0 && len != w->s->chunk_size)
      k = STORE_PROBLEM_CORRUPT;
    e = tab_find(w, id);
    e->size = (uint32_t)len;
    if (k == 0)
      e->state = ST_OK;
    else if (bad_add(w, e, 0, (store_problem_kind_t)k) < 0)
      return store_err(err, ENOMEM, "out of memory");
  }
  if (e->state == ST_BAD && bad_add_ref(w, e, ri) < 0)
    return store_err(err, ENOMEM, "out of memory");
  return 0;
}

static int visit_page(struct walk *w, uint32_t ri, const store_id_t *id,
                      unsigned level, uint64_t *below, char **err)
{
  struct oent *e;
  int r;
  *below = 0;
  if (store_id_is_zero(id))
    return 0;
  if (tab_get(w, id, K_PAGE, &e) < 0)
    return store_err(err, ENOMEM, "out of memory");
  if (e->last_ref == ri + 1) {   /* repeated inside this ref */
    *below = e->below;
    return 0;
  }
  e->last_ref = ri + 1;
  e->nrefs++;
  if (e->state == ST_BAD)
    return bad_add_ref(w, e, ri) < 0 ? store_err(err, ENOMEM, "out of memory")
                                     : 0;
  if (w->mode == W_MARK && e->nrefs > 1) {  /* subtree already marked */
    *below = e->below;
    return 0;
  }

  size_t len = 0;
  int k = obj_read(w, id, &len, err);
  if (k < 0)
    return k;
  if (k == 0 && (len < MAP_PAGE_HDR || memcmp(w->buf, MAP_PAGE_MAGIC, 4) ||
                 w->buf[4] != level ||
                 (len - MAP_PAGE_HDR) % STORE_ID_LEN ||
                 (len - MAP_PAGE_HDR) / STORE_ID_LEN > w->s->fanout))
    k = STORE_PROBLEM_CORRUPT;
  if (k > 0) {
    char hex[STORE_ID_HEX_LEN + 1];
    store_id_to_hex(id, hex);
    if (w->mode != W_VERIFY)
      return store_err(err, EIO, "%s: map page %s (level %u) is %s; "
                       "nothing below it can be accounted for",
                       w->refs[ri].name, hex, level, problem_name(k));
    e = tab_find(w, id);
    if (bad_add(w, e, 1, (store_problem_kind_t)k) < 0 ||
        bad_add_ref(w, e, ri) < 0)
      return store_err(err, ENOMEM, "out of memory");
    return 0;
  }
  e->state = ST_OK;
  e->size = (uint32_t)len;

  /* w->buf is reused below: copy the slots out. */
  size_t nslots = (len - MAP_PAGE_HDR) / STORE_ID_LEN;
  store_id_t *slots = malloc(nslots * sizeof *slots + 1);
  if (!slots)
    return store_err(err, ENOMEM, "out of memory");
  memcpy(slots, w->buf + MAP_PAGE_HDR, nslots * sizeof *slots);
  uint64_t sum = 0;
  r = 0;
  for (size_t i = 0; i < nslots && r == 0; i++) {
    if (store_id_is_zero(&slots[i]))
      continue;
    if (level > 0) {
      uint64_t b = 0;
      r = visit_page(w, ri, &slots[i], level - 1, &b, err);
      sum += b;
    } else {
      r = visit_chunk(w, ri, &slots[i], err);
      sum++;
    }
  }
  free(slots);
  if (r < 0)
    return r;
  tab_find(w, id)->below = sum;
  *below = sum;
  return 0;
}

static int collect_ref(const store_ref_t *ref, void *ud)
{
  struct walk *w = ud;
  if (w->nrefs == w->refcap) {
    size_t nc = w->refcap ? w->refcap * 2 : 16;
    store_ref_t *nr = realloc(w->refs, nc * sizeof *nr);
    if (!nr) {
      w->refcap = SIZE_MAX;   /* flags the failure */
      return 1;
    }
    w->refs = nr;
    w->refcap = nc;
  }
  w->refs[w->nrefs++] = *ref;
  return 0;
}

static void walk_free(struct walk *w)
{
  for (size_t i = 0; i < w->nbad; i++)
    free(w->bad[i].refs);
  free(w->bad);
  free(w->tab);
  free(w->refs);
  free(w->ref_chunks);
  free(w->ref_logical);
  free(w->buf);
}

/* Read every ref (one SQLite statement = one consistent snapshot of them)
 * and walk their trees. */
static int walk_all(store_t *s, enum walk_mode mode, struct walk *w,
                    char **err)
{
  memset(w, 0, sizeof *w);
  w->s = s;
  w->mode = mode;
  int r = store_ref_list(s, NULL, collect_ref, w, err);
  if (r < 0)
    return r;
  if (w->refcap == SIZE_MAX)
    return store_err(err, ENOMEM, "out of memory");
  size_t pagecap = MAP_PAGE_HDR + (size_t)s->fanout * STORE_ID_LEN;
  w->bufcap = pagecap > s->chunk_size ? pagecap : s->chunk_size;
  w->buf = malloc(w->bufcap);
  w->ref_chunks = calloc(w->nrefs + 1, sizeof *w->ref_chunks);
  w->ref_logical = calloc(w->nrefs + 1, sizeof *w->ref_logical);
  if (!w->buf || !w->ref_chunks || !w->ref_logical || tab_grow(w) < 0)
    return store_err(err, ENOMEM, "out of memory");
  for (uint32_t i = 0; i < w->nrefs; i++) {
    unsigned depth = map_depth_for(s, w->refs[i].size);
    if ((r = visit_page(w, i, &w->refs[i].root, depth - 1,
                        &w->ref_logical[i], err)) < 0)
      return r;
  }
  return 0;
}

/* ---- GC ---- */

static int64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Lower *cutoff to the oldest live pending session; remove stale files. */
static int pending_scan(store_t *s, int remove_stale, int64_t *cutoff,
                        store_gc_result_t *res, char **err)
{
  char path[4096];
  snprintf(path, sizeof path, "%s/pending", s->dir);
  int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd == -1)
    return errno == ENOENT ? 0 : store_err(err, errno, "open %s: %m", path);
  DIR *dir = fdopendir(dfd);
  if (!dir) {
    close(dfd);
    return store_err(err, errno, "opendir %s: %m", path);
  }
  struct dirent *de;
  while ((de = readdir(dir))) {
    long pid;
    unsigned long long start;
    struct stat st;
    if (de->d_name[0] == '.')
      continue;
    if (fstatat(dfd, de->d_name, &st, 0) == -1)
      continue;              /* its writer closed meanwhile */
    int live = 1;
    if (sscanf(de->d_name, "%ld-%llu-", &pid, &start) == 2 && pid > 0) {
      uint64_t cur = store_proc_start_time((pid_t)pid);
      if (cur)
        live = cur == start;
      else
        live = kill((pid_t)pid, 0) == 0 || errno == EPERM;
    }
    if (!live) {
      res->stale_writers++;
      if (remove_stale)
        unlinkat(dfd, de->d_name, 0);
      continue;
    }
    if (st.st_size == 0)
      continue;              /* live but idle: nothing uncommitted */
    res->live_writers++;
    int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    if (mt < *cutoff)
      *cutoff = mt;
  }
  closedir(dir);
  return 0;
}

static int gc_doomed(const store_id_t *id, void *ud)
{
  return tab_find(ud, id) == NULL;
}

int store_gc(store_t *s, const store_gc_opts_t *opts, store_gc_result_t *out,
             char **err)
{
  store_gc_result_t res;
  store_sweep_counts_t c;
  struct walk w;
  int64_t grace = opts && opts->grace_s >= 0 ? opts->grace_s
                                             : GC_DEFAULT_GRACE_S;
  int dry = opts && opts->dry_run;
  memset(&res, 0, sizeof res);
  memset(&c, 0, sizeof c);
  if (!s->ops->sweep)
    return store_err(err, EOPNOTSUPP, "the %s backend cannot be swept",
                     s->ops->name);

  /* 1. cutoff, before the refs are read */
  int64_t cutoff = now_ns() - grace * 1000000000;
  int r = pending_scan(s, !dry, &cutoff, &res, err);
  if (r < 0)
    return r;
  /* Writers on other hosts (S3 pending-upload markers); refreshes refs. */
  if (s->ops->gc_prepare &&
      (r = s->ops->gc_prepare(s->be, !dry, &cutoff, &res.live_writers,
                              &res.stale_writers, err)) < 0)
    return r;
  cutoff -= GC_CLOCK_MARGIN_NS;
  /* 2. mark */
  if ((r = walk_all(s, W_MARK, &w, err)) < 0)
    goto out;
  /* 3. sweep */
  if ((r = s->ops->sweep(s->be, dry ? INT64_MIN : cutoff, gc_doomed, &w, &c,
                         err)) < 0)
    goto out;
  res.refs = w.nrefs;
  res.reachable = w.used;
  res.objects = c.objects;
  res.bytes = c.bytes;
  res.garbage_objects = c.garbage_objects;
  res.garbage_bytes = c.garbage_bytes;
  res.kept_recent = dry ? 0 : c.kept_recent;
  res.deleted_objects = c.removed_objects;
  res.deleted_bytes = c.removed_bytes;
  res.deleted_tmp = c.removed_tmp;
  if (out)
    *out = res;
out:
  walk_free(&w);
  return r;
}

/* ---- stats and usage ---- */

int store_stats(store_t *s, store_stats_t *out, char **err)
{
  struct walk w;
  store_stats_t st;
  store_sweep_counts_t c;
  memset(&st, 0, sizeof st);
  memset(&c, 0, sizeof c);
  int r = walk_all(s, W_COUNT, &w, err);
  if (r < 0)
    goto out;
  if (s->ops->sweep &&
      (r = s->ops->sweep(s->be, INT64_MIN, gc_doomed, &w, &c, err)) < 0)
    goto out;
  st.refs = w.nrefs;
  for (size_t i = 0; i < w.nrefs; i++) {
    st.virtual_bytes += w.refs[i].size;
    st.logical_bytes += w.ref_logical[i] * s->chunk_size;
  }
  for (size_t i = 0; i < w.cap; i++) {
    const struct oent *e = &w.tab[i];
    if (!e->used)
      continue;
    if (e->kind == K_CHUNK) {
      st.unique_chunks++;
    } else {
      st.pages++;
      st.page_bytes += e->size;
    }
  }
  st.unique_bytes = st.unique_chunks * s->chunk_size;
  st.objects = c.objects;
  st.physical_bytes = c.bytes;
  st.garbage_objects = c.garbage_objects;
  st.garbage_bytes = c.garbage_bytes;
  st.dedup_ratio = st.unique_bytes
                 ? (double)st.logical_bytes / (double)st.unique_bytes : 1.0;
  *out = st;
out:
  walk_free(&w);
  return r;
}

int store_usage(store_t *s, const char *prefix, store_usage_cb cb, void *ud,
                char **err)
{
  struct walk w;
  uint64_t *unique = NULL;
  int r = walk_all(s, W_COUNT, &w, err), n = 0;
  if (r < 0)
    goto out;
  if (!(unique = calloc(w.nrefs + 1, sizeof *unique))) {
    r = store_err(err, ENOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < w.cap; i++) {
    const struct oent *e = &w.tab[i];
    if (e->used && e->nrefs == 1)
      unique[e->last_ref - 1] += e->kind == K_CHUNK ? s->chunk_size : e->size;
  }
  size_t plen = prefix ? strlen(prefix) : 0;
  for (size_t i = 0; i < w.nrefs; i++) {
    if (plen && strncmp(w.refs[i].name, prefix, plen) != 0)
      continue;
    store_ref_usage_t u = {
      .ref = w.refs[i],
      .chunks = w.ref_chunks[i],
      .logical_bytes = w.ref_logical[i] * s->chunk_size,
      .unique_bytes = unique[i],
    };
    n++;
    if (cb && cb(&u, ud))
      break;
  }
  r = n;
out:
  free(unique);
  walk_free(&w);
  return r;
}

/* ---- verify ---- */

int store_verify(store_t *s, store_verify_cb cb, void *ud,
                 store_verify_result_t *out, char **err)
{
  struct walk w;
  int r = walk_all(s, W_VERIFY, &w, err);
  if (r < 0)
    goto out;
  for (size_t i = 0; i < w.nbad; i++) {
    struct badobj *b = &w.bad[i];
    const char **names = calloc(b->nrefs + 1, sizeof *names);
    if (!names) {
      r = store_err(err, ENOMEM, "out of memory");
      goto out;
    }
    for (size_t k = 0; k < b->nrefs; k++)
      names[k] = w.refs[b->refs[k]].name;
    store_verify_problem_t p = {
      .id = b->id, .is_page = b->is_page, .kind = b->kind,
      .refs = names, .nrefs = b->nrefs,
    };
    int stop = cb ? cb(&p, ud) : 0;
    free(names);
    if (stop)
      break;
  }
  if (out) {
    out->refs = w.nrefs;
    out->objects_checked = w.checked;
    out->bytes_checked = w.checked_bytes;
    out->problems = w.nbad;
  }
  r = (int)(w.nbad > INT32_MAX ? INT32_MAX : w.nbad);
out:
  walk_free(&w);
  return r;
}
