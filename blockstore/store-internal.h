/* lanes block store — internal header shared by the core modules and the
 * object backends.  Not part of the public surface (store.h is).
 *
 * Modules:
 *   store.c          store open/close, refs in SQLite, import, disk_create
 *   map.c            the manifest: a Merkle tree of map pages (in memory,
 *                    loaded lazily, copy-on-write, serialized on commit)
 *   disk.c           the disk engine: stage file of written chunks,
 *                    read/write/flush
 *   objects-local.c  object backend: pack files + SQLite index under
 *                    STORE/objects (pack.c: the pack format); loose files
 *                    of older stores are still read
 *   objects-s3.c     object backend: objects and refs in an S3 bucket, a
 *                    local write-back journal, a host-wide chunk cache
 *   gc.c             reachability walks over all refs: gc, verify, stats,
 *                    per-ref usage (bytes unique to a ref)
 *
 * Object backends bind through `struct store_backend_ops`; an S3 backend will
 * be a second implementation of the same table (built into its own plugin).
 *
 * Map page format (the bytes hashed to get the page id):
 *   8-byte header: "LMP1", level (0 = leaf), 3 reserved zero bytes;
 *   then fanout slots of 32-byte ids, truncated after the last non-zero slot
 *   (missing slots are zero ids).  A page whose slots are all zero is never
 *   stored: its id is the zero id.
 * Tree depth is a function of (virtual size, chunk size, fanout) only:
 *   the smallest depth >= 1 such that fanout^depth >= number of chunks.
 * GC = mark from every ref's root through the pages, sweep objects that are
 * unmarked and older than a cutoff (see gc.c for why that is safe against
 * live writers).
 */
#ifndef LANES_BLOCKSTORE_STORE_INTERNAL_H
#define LANES_BLOCKSTORE_STORE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "store.h"

#define MAP_PAGE_MAGIC "LMP1"
#define MAP_PAGE_HDR 8

/* ---- object backend ---- */
typedef struct store_sweep_counts {
  uint64_t objects, bytes;                  /* all object files seen */
  uint64_t garbage_objects, garbage_bytes;  /* of those, unreferenced */
  uint64_t kept_recent;                     /* garbage kept: too new */
  uint64_t removed_objects, removed_bytes;
  uint64_t tmp_files, removed_tmp;
  uint64_t foreign_files;
} store_sweep_counts_t;

struct store_backend_ops {
  const char *name;
  /* Open the object space under the store directory. */
  int (*open)(const char *dir, void **be, char **err);
  void (*close)(void *be);
  /* Store an object (idempotent).  Durable only after sync(). */
  int (*put)(void *be, const store_id_t *id, const void *buf, size_t len,
             char **err);
  /* Read an object into buf (cap bytes); *len = its size.  -ENOENT if
   * missing, -EFBIG if larger than cap.  The caller verifies the hash. */
  int (*get)(void *be, const store_id_t *id, void *buf, size_t cap,
             size_t *len, char **err);
  /* Make every put() so far durable. */
  int (*sync)(void *be, char **err);
  void (*set_sync_mode)(void *be, store_sync_mode_t mode);
  char *(*path)(void *be, const store_id_t *id);
  /* Visit every object; those for which doomed() returns nonzero and whose
   * mtime is older than cutoff_ns are removed (cutoff_ns = INT64_MIN: only
   * count).  put() of an existing object refreshes its mtime and excludes a
   * concurrent removal of it. */
  int (*sweep)(void *be, int64_t cutoff_ns,
               int (*doomed)(const store_id_t *id, void *ud), void *ud,
               store_sweep_counts_t *counts, char **err);

  /* ---- optional: backends whose refs also live elsewhere (S3) ---- */
  /* Called once after store_open has the SQLite handle. */
  int (*attach)(void *be, store_t *s, char **err);
  /* Inside a SQLite transaction (caller holds s->lock): ref name changed
   * (or was deleted) and must be published. */
  int (*ref_dirty)(void *be, const char *name, char **err);
  /* Inside the transaction of a disk commit (caller holds s->lock), after
   * the local UPDATE: publish ref now (remote durability; failure rolls
   * the commit back) or mark it for the uploader (local durability). */
  int (*ref_commit)(void *be, const store_ref_t *ref, char **err);
  /* Outside any lock: upload the journal and publish dirty refs. */
  int (*publish)(void *be, char **err);
  /* Outside any lock: replace local refs with the remote ones (refs with
   * unpublished local changes are kept). */
  int (*refresh)(void *be, char **err);
  /* GC, before the mark: lower *cutoff_ns for writers only the backend
   * knows of (other hosts), count them, drop dead ones if remove. */
  int (*gc_prepare)(void *be, int remove, int64_t *cutoff_ns, uint64_t *live,
                    uint64_t *dead, char **err);

  /* ---- optional: tools and tests (local backend) ---- */
  /* Where object id's bytes are: file, offset, length. */
  int (*locate)(void *be, const store_id_t *id, char **path,
                uint64_t *offset, uint64_t *len, char **err);
  /* Set the time GC compares with its cutoff (ns since the epoch). */
  int (*set_time)(void *be, const store_id_t *id, int64_t t_ns, char **err);
};

extern const struct store_backend_ops store_backend_local;
extern const struct store_backend_ops store_backend_s3;

struct store {
  char *dir;
  sqlite3 *db;
  pthread_mutex_t lock;          /* serializes use of db */
  const struct store_backend_ops *ops;
  void *be;
  uint32_t chunk_size;
  uint32_t fanout;
  /* Writer registration for GC (store.c): STORE/pending/<pid>-<start>-<rnd>;
   * size 1 while a session is open, and then its mtime is the session's
   * start (before its first put); size 0 when idle. */
  pthread_mutex_t pending_lock;
  int pending_fd;             /* -1 until first use */
  unsigned pending_count;     /* open writer sessions */
  char *pending_path;
};

/* Create the SQLite side of a store whose meta says backend (store.c). */
int store_create_backend(const char *dir, const store_params_t *params,
                         const char *backend, char **err);
/* Read a ref inside a transaction (caller holds s->lock). */
int store_ref_get_locked(store_t *s, const char *name, store_ref_t *out,
                         char **err);
/* Insert or replace a ref exactly as given (generation and times
 * included), for refs pulled from a remote; caller holds s->lock. */
int store_ref_set_locked(store_t *s, const store_ref_t *ref, char **err);


/* ---- errors ---- */
/* Set *err to a formatted message (if err != NULL and *err not yet set) and
 * return -errnum. */
int store_err(char **err, int errnum, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

/* ---- positioned I/O (store.c) ---- */
/* Read up to len bytes at off, retrying short reads and EINTR; *got = bytes
 * read (< len only at end of file).  0 or -errno. */
int store_pread_all(int fd, void *buf, size_t len, uint64_t off, size_t *got);
/* Write all of iov[0..n) (n <= 4) at off, retrying short writes and EINTR.
 * 0 or -errno (-EIO if the kernel writes nothing). */
int store_pwritev_all(int fd, const struct iovec *iov, int n, uint64_t off);

/* ---- hashing ---- */
void store_hash(const void *buf, size_t len, store_id_t *out);

/* Read object id and verify its hash; -EIO (with a message naming what) if
 * missing or corrupt. */
int store_object_read(store_t *s, const store_id_t *id, void *buf, size_t cap,
                      size_t *len, const char *what, char **err);

/* For tools and tests: where object id is stored (*path malloc'd; a pack
 * file and the data offset in it, or a loose file and 0), and setting its
 * GC time.  -ENOENT if absent, -EOPNOTSUPP for backends without them. */
int store_object_locate(store_t *s, const store_id_t *id, char **path,
                        uint64_t *offset, uint64_t *len, char **err);
int store_object_set_time(store_t *s, const store_id_t *id, int64_t t_ns,
                          char **err);

/* ---- refs (store.c) ---- */
/* Swap ref name's root/size/generation if its generation is still
 * expect_gen; -ESTALE otherwise; -ENOENT if gone.  Runs the transaction
 * with synchronous=FULL. */
int store_ref_commit(store_t *s, const char *name, uint64_t expect_gen,
                     const store_id_t *root, uint64_t size, char **err);

/* A writer session: begin before the first put() whose object a later ref
 * commit will reference, end after that commit (or after giving up).
 * Sessions nest (counted per store handle).  GC never deletes objects
 * younger than the oldest open session of any live process. */
int store_pending_begin(store_t *s, char **err);
void store_pending_end(store_t *s);
/* Start time of process pid (/proc/PID/stat field 22); 0 if gone. */
uint64_t store_proc_start_time(pid_t pid);

/* ---- manifest map (map.c) ---- */
typedef struct map map_t;

unsigned map_depth_for(const store_t *s, uint64_t size);
/* In-memory view of the tree rooted at root for a disk of size bytes. */
int map_open(store_t *s, const store_id_t *root, uint64_t size, map_t **out,
             char **err);
void map_free(map_t *m);
uint64_t map_nchunks(const map_t *m);
/* Chunk id at index idx (zero id beyond the data). */
int map_get(map_t *m, uint64_t idx, store_id_t *out, char **err);
int map_set(map_t *m, uint64_t idx, const store_id_t *id, char **err);
/* Number of consecutive chunks from idx that are zero (up to max); used to
 * skip whole zero subtrees quickly. */
int map_zero_run(map_t *m, uint64_t idx, uint64_t max, uint64_t *run,
                 char **err);
int map_is_dirty(const map_t *m);
/* Write every changed page as an object (unsynced) and return the new root
 * id; the map is clean afterwards. */
int map_write(map_t *m, store_id_t *root, char **err);
/* Build the root id for growing a tree of depth old_depth to new_depth
 * (wraps the root in extra pages). */
int map_grow_root(store_t *s, const store_id_t *root, unsigned old_depth,
                  unsigned new_depth, store_id_t *out, char **err);

static inline int store_buf_is_zero(const void *buf, size_t len)
{
  const unsigned char *p = buf;
  while (len && ((uintptr_t)p & 7)) {
    if (*p) return 0;
    p++; len--;
  }
  const uint64_t *q = (const uint64_t *)p;
  for (; len >= 8; len -= 8, q++)
    if (*q) return 0;
  p = (const unsigned char *)q;
  for (; len; len--, p++)
    if (*p) return 0;
  return 1;
}

#endif
