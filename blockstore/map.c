/* lanes block store — the manifest map: chunk index -> chunk id.
 *
 * The map is a fixed-fanout Merkle tree of pages (format in
 * store-internal.h).  In memory, a node mirrors one page; nodes are loaded
 * lazily from objects on first use (and their hash verified), changed nodes
 * are marked dirty up to the root, and map_write() serializes the dirty ones
 * bottom-up, so a commit writes only the pages on changed paths.  Unchanged
 * subtrees keep their ids and stay shared with every other ref that points at
 * them.
 *
 * Invariant: for an interior node, kids[i] (when non-NULL) is the truth for
 * slot i; slots[i] is the id that subtree had when last loaded or written.
 *
 * Threading: none; the owner (a disk or an import) serializes access.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store-internal.h"

struct mnode {
  store_id_t id;          /* page id as last loaded/written (zero = empty) */
  unsigned level;         /* 0 = leaf */
  int loaded;
  int dirty;
  store_id_t *slots;      /* fanout entries */
  struct mnode **kids;    /* interior only: materialized children */
};

struct map {
  store_t *store;
  struct mnode *root;
  unsigned depth;
  unsigned fbits;         /* log2(fanout) */
  uint32_t fanout;
  uint64_t nchunks;
  uint8_t *pagebuf;       /* scratch: one serialized page */
};

static unsigned log2u(uint32_t v)
{
  unsigned b = 0;
  while ((1u << b) < v)
    b++;
  return b;
}

unsigned map_depth_for(const store_t *s, uint64_t size)
{
  uint64_t nchunks = (size + s->chunk_size - 1) / s->chunk_size;
  unsigned fbits = log2u(s->fanout), d = 1;
  while (nchunks > 1 && d * fbits < 64 && ((nchunks - 1) >> (d * fbits)) != 0)
    d++;
  return d;
}

static size_t page_cap(const map_t *m)
{
  return MAP_PAGE_HDR + (size_t)m->fanout * STORE_ID_LEN;
}

static struct mnode *node_new(map_t *m, unsigned level, const store_id_t *id)
{
  struct mnode *n = calloc(1, sizeof *n);
  if (!n)
    return NULL;
  n->level = level;
  if (id)
    n->id = *id;
  n->slots = calloc(m->fanout, sizeof *n->slots);
  if (level > 0)
    n->kids = calloc(m->fanout, sizeof *n->kids);
  if (!n->slots || (level > 0 && !n->kids)) {
    free(n->slots);
    free(n->kids);
    free(n);
    return NULL;
  }
  /* A zero id is an empty page: nothing to load. */
  n->loaded = store_id_is_zero(&n->id);
  return n;
}

static void node_free(map_t *m, struct mnode *n)
{
  if (!n)
    return;
  if (n->kids)
    for (uint32_t i = 0; i < m->fanout; i++)
      node_free(m, n->kids[i]);
  free(n->kids);
  free(n->slots);
  free(n);
}

static int node_load(map_t *m, struct mnode *n, char **err)
{
  size_t len;
  char what[64];
  snprintf(what, sizeof what, "map page (level %u)", n->level);
  int r = store_object_read(m->store, &n->id, m->pagebuf, page_cap(m), &len,
                            what, err);
  if (r < 0)
    return r;
  if (len < MAP_PAGE_HDR || memcmp(m->pagebuf, MAP_PAGE_MAGIC, 4) != 0 ||
      m->pagebuf[4] != n->level || (len - MAP_PAGE_HDR) % STORE_ID_LEN != 0) {
    char hex[STORE_ID_HEX_LEN + 1];
    store_id_to_hex(&n->id, hex);
    return store_err(err, EIO, "map page %s: bad header or size (level %u)",
                     hex, n->level);
  }
  size_t count = (len - MAP_PAGE_HDR) / STORE_ID_LEN;
  memset(n->slots, 0, (size_t)m->fanout * sizeof *n->slots);
  memcpy(n->slots, m->pagebuf + MAP_PAGE_HDR, count * STORE_ID_LEN);
  n->loaded = 1;
  return 0;
}

int map_open(store_t *s, const store_id_t *root, uint64_t size, map_t **out,
             char **err)
{
  map_t *m = calloc(1, sizeof *m);
  if (!m)
    return store_err(err, ENOMEM, "out of memory");
  m->store = s;
  m->fanout = s->fanout;
  m->fbits = log2u(s->fanout);
  m->depth = map_depth_for(s, size);
  m->nchunks = (size + s->chunk_size - 1) / s->chunk_size;
  m->pagebuf = malloc(page_cap(m));
  m->root = node_new(m, m->depth - 1, root);
  if (!m->pagebuf || !m->root) {
    map_free(m);
    return store_err(err, ENOMEM, "out of memory");
  }
  *out = m;
  return 0;
}

void map_free(map_t *m)
{
  if (!m)
    return;
  node_free(m, m->root);
  free(m->pagebuf);
  free(m);
}

uint64_t map_nchunks(const map_t *m)
{
  return m->nchunks;
}

int map_is_dirty(const map_t *m)
{
  return m->root->dirty;
}

static unsigned slot_at(const map_t *m, uint64_t idx, unsigned level)
{
  return (unsigned)((idx >> (level * m->fbits)) & (m->fanout - 1));
}

/* Descend toward idx.  Stops at the leaf (*leaf set) or at an interior
 * zero slot (*leaf NULL, *zero_level = that level) — materializing nothing
 * unless create != 0, in which case empty nodes are made and the path is
 * marked dirty. */
static int map_descend(map_t *m, uint64_t idx, int create,
                       struct mnode **leaf, unsigned *zero_level, char **err)
{
  struct mnode *n = m->root;
  int r;
  for (;;) {
    if (!n->loaded && (r = node_load(m, n, err)) < 0)
      return r;
    if (create)
      n->dirty = 1;
    if (n->level == 0) {
      *leaf = n;
      return 0;
    }
    unsigned i = slot_at(m, idx, n->level);
    if (!n->kids[i]) {
      if (store_id_is_zero(&n->slots[i]) && !create) {
        *leaf = NULL;
        *zero_level = n->level;
        return 0;
      }
      n->kids[i] = node_new(m, n->level - 1, &n->slots[i]);
      if (!n->kids[i])
        return store_err(err, ENOMEM, "out of memory");
    }
    n = n->kids[i];
  }
}

int map_get(map_t *m, uint64_t idx, store_id_t *out, char **err)
{
  struct mnode *leaf;
  unsigned zl;
  if (idx >= m->nchunks) {
    memset(out, 0, sizeof *out);
    return 0;
  }
  int r = map_descend(m, idx, 0, &leaf, &zl, err);
  if (r < 0)
    return r;
  if (leaf)
    *out = leaf->slots[slot_at(m, idx, 0)];
  else
    memset(out, 0, sizeof *out);
  return 0;
}

int map_set(map_t *m, uint64_t idx, const store_id_t *id, char **err)
{
  struct mnode *leaf = NULL;
  unsigned zl = 0;
  if (idx >= m->nchunks)
    return store_err(err, EINVAL, "chunk %llu beyond map end",
                     (unsigned long long)idx);
  if (store_id_is_zero(id)) {
    /* Do not materialize empty subtrees just to store a zero. */
    store_id_t cur;
    int r = map_get(m, idx, &cur, err);
    if (r < 0)
      return r;
    if (store_id_is_zero(&cur))
      return 0;
  }
  int r = map_descend(m, idx, 1, &leaf, &zl, err);
  if (r < 0)
    return r;
  leaf->slots[slot_at(m, idx, 0)] = *id;
  return 0;
}

int map_zero_run(map_t *m, uint64_t idx, uint64_t max, uint64_t *run,
                 char **err)
{
  uint64_t n = 0;
  while (n < max) {
    uint64_t i = idx + n;
    if (i >= m->nchunks) {
      n = max;
      break;
    }
    struct mnode *leaf;
    unsigned zl;
    int r = map_descend(m, i, 0, &leaf, &zl, err);
    if (r < 0)
      return r;
    if (leaf) {
      if (!store_id_is_zero(&leaf->slots[slot_at(m, i, 0)]))
        break;
      n++;
    } else {
      /* A zero slot at level zl covers fanout^zl chunks. */
      uint64_t span = (uint64_t)1 << (zl * m->fbits);
      n += span - (i & (span - 1));
    }
  }
  *run = n < max ? n : max;
  return 0;
}

/* Serialize node n into a page object (if dirty) and return its id. */
static int node_write(map_t *m, struct mnode *n, store_id_t *out, char **err)
{
  int r;
  if (!n->dirty) {
    *out = n->id;
    return 0;
  }
  if (n->kids)
    for (uint32_t i = 0; i < m->fanout; i++)
      if (n->kids[i] && (r = node_write(m, n->kids[i], &n->slots[i], err)) < 0)
        return r;
  int last = -1;
  for (int i = (int)m->fanout - 1; i >= 0; i--)
    if (!store_id_is_zero(&n->slots[i])) {
      last = i;
      break;
    }
  store_id_t id;
  memset(&id, 0, sizeof id);
  if (last >= 0) {
    size_t len = MAP_PAGE_HDR + (size_t)(last + 1) * STORE_ID_LEN;
    memset(m->pagebuf, 0, MAP_PAGE_HDR);
    memcpy(m->pagebuf, MAP_PAGE_MAGIC, 4);
    m->pagebuf[4] = (uint8_t)n->level;
    memcpy(m->pagebuf + MAP_PAGE_HDR, n->slots,
           (size_t)(last + 1) * STORE_ID_LEN);
    store_hash(m->pagebuf, len, &id);
    r = m->store->ops->put(m->store->be, &id, m->pagebuf, len, err);
    if (r < 0)
      return r;
  }
  n->id = id;
  n->dirty = 0;
  *out = id;
  return 0;
}

int map_write(map_t *m, store_id_t *root, char **err)
{
  return node_write(m, m->root, root, err);
}

int map_grow_root(store_t *s, const store_id_t *root, unsigned old_depth,
                  unsigned new_depth, store_id_t *out, char **err)
{
  store_id_t cur = *root;
  uint8_t page[MAP_PAGE_HDR + STORE_ID_LEN];
  for (unsigned level = old_depth; level < new_depth; level++) {
    if (store_id_is_zero(&cur))
      break;
    memset(page, 0, sizeof page);
    memcpy(page, MAP_PAGE_MAGIC, 4);
    page[4] = (uint8_t)level;
    memcpy(page + MAP_PAGE_HDR, cur.b, STORE_ID_LEN);
    store_hash(page, sizeof page, &cur);
    int r = s->ops->put(s->be, &cur, page, sizeof page, err);
    if (r < 0)
      return r;
  }
  *out = cur;
  return 0;
}
