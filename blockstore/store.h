/* lanes block store — public interface of the lanes_store library.
 *
 * A content-addressed store for virtual disks.  A disk is cut into fixed-size
 * chunks (the store's chunk size, fixed when the store is created).  Chunk
 * contents are immutable objects named by their SHA-256; all-zero chunks are
 * never stored and are named by the zero id.  One disk state (a manifest) is a
 * small Merkle tree of map pages whose leaves hold chunk ids; pages are
 * objects too.  A ref (name -> root page id + virtual size + generation) names
 * a manifest; refs live in SQLite.  Ref namespaces: "image/<name>",
 * "disk/<name>", "snap/<disk>/<name>".  A ref's parent is the ref it
 * descends from: image -> disk, the disk's previous snapshot -> snapshot,
 * snapshot -> restored disk or fork.
 *
 * Copying a ref is O(1) (snapshot / fork); committing a disk writes only the
 * changed chunks and pages and then swaps the ref's root in one transaction.
 *
 * Errors: functions return 0 (or a count) on success and a negative errno on
 * failure.  Where a `char **err` is taken, a malloc'd human-readable message is
 * stored there on failure (the caller frees it; pass NULL to ignore).  Output
 * parameters are left untouched on failure.  Nothing here logs.
 *
 * Threading: a store_t may be used from several threads (calls on it are
 * serialized internally).  A store_disk_t is used by one thread at a time
 * (calls on it are serialized by an internal mutex).  Several processes may
 * open the same store directory at once (SQLite arbitrates the refs; objects
 * are immutable and idempotent).  Only one writer per disk ref is supported:
 * a commit fails with -ESTALE when the ref changed under it.
 */
#ifndef LANES_BLOCKSTORE_STORE_H
#define LANES_BLOCKSTORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define STORE_ID_LEN 32                      /* SHA-256 */
#define STORE_ID_HEX_LEN (2 * STORE_ID_LEN)  /* without the NUL */
#define STORE_REF_NAME_MAX 200
#define STORE_DEFAULT_CHUNK_SIZE (64u * 1024)
#define STORE_DEFAULT_FANOUT 1024u

typedef struct store store_t;
typedef struct store_disk store_disk_t;

/* Object id: the SHA-256 of the object's bytes.  All zero bytes = the zero
 * id: an all-zero chunk, or an all-zero subtree of the map. */
typedef struct store_id {
  uint8_t b[STORE_ID_LEN];
} store_id_t;

typedef struct store_ref {
  char name[STORE_REF_NAME_MAX + 1];
  char parent[STORE_REF_NAME_MAX + 1];  /* ref it was created from, or "" */
  store_id_t root;                      /* root map page (zero id = all zero) */
  uint64_t size;                        /* virtual size in bytes */
  uint64_t generation;                  /* +1 on every commit */
  int64_t created;                      /* unix seconds */
  int64_t updated;                      /* unix seconds */
} store_ref_t;

/* Store-level parameters, fixed when the store is created. */
typedef struct store_params {
  uint32_t chunk_size;   /* power of two, 4 KiB .. 4 MiB; 0 = default */
  uint32_t fanout;       /* entries per map page, power of two 4..4096; 0 = default */
} store_params_t;

/* How durable commits reach the disk (local backend). */
typedef enum store_sync_mode {
  STORE_SYNC_SYNCFS = 0, /* objects written unsynced, one syncfs() per commit */
  STORE_SYNC_FSYNC = 1,  /* fsync every object file and its directory */
} store_sync_mode_t;

typedef struct store_disk_opts {
  int readonly;
  size_t dirty_limit;    /* bytes of written chunks kept in the disk's stage
                            file (page cache, not heap) before they are
                            spilled to (uncommitted) objects; 0 = 1 GiB */
  size_t cache_chunks;   /* verified clean chunks kept in an LRU; 0 = 64 */
} store_disk_opts_t;

/* Return nonzero to cancel (the operation then fails with -ECANCELED). */
typedef int (*store_progress_cb)(uint64_t done, uint64_t total, void *ud);
/* Called once per ref; return nonzero to stop the listing early. */
typedef int (*store_ref_cb)(const store_ref_t *ref, void *ud);

/* ---- ids ---- */
int store_id_is_zero(const store_id_t *id);
void store_id_to_hex(const store_id_t *id, char hex[STORE_ID_HEX_LEN + 1]);
int store_id_from_hex(const char *hex, store_id_t *out);

/* ---- store ---- */
/* Create a new, empty store in dir (created if missing) with the given
 * parameters (NULL = defaults).  -EEXIST if a store already exists there. */
int store_create(const char *dir, const store_params_t *params, char **err);
/* Open the store in dir; with create != 0 make one with default parameters
 * if none exists yet. */
int store_open(const char *dir, int create, store_t **out, char **err);
void store_close(store_t *store);
void store_get_params(const store_t *store, store_params_t *out);
void store_set_sync_mode(store_t *store, store_sync_mode_t mode);
/* Path of the loose object file for id (for tools and tests); malloc'd. */
char *store_object_path(const store_t *store, const store_id_t *id);

/* ---- refs ---- */
/* Chunk a raw image file into ref "image/<name>" (zero chunks skipped),
 * replacing an existing image ref atomically.  The image is durable when
 * this returns. */
int store_image_import(store_t *store, const char *name, const char *raw_path,
                       store_progress_cb progress, void *ud, char **err);
/* New ref "disk/<disk>" sharing from_ref's tree.  size = 0 keeps the
 * source's size; a larger size grows the disk (the new range reads as
 * zeros); a smaller one is -EINVAL.  -EEXIST if the disk exists. */
int store_disk_create(store_t *store, const char *disk, const char *from_ref,
                      uint64_t size, char **err);
/* dst := src (O(1)); -EEXIST if dst exists unless replace != 0. */
int store_ref_copy(store_t *store, const char *src, const char *dst,
                   int replace, char **err);
int store_ref_delete(store_t *store, const char *name, char **err);
/* -ENOENT if there is no such ref. */
int store_ref_get(store_t *store, const char *name, store_ref_t *out,
                  char **err);
/* Refs whose name starts with prefix (NULL or "" = all), in name order.
 * Returns the number of refs passed to cb, or a negative errno. */
int store_ref_list(store_t *store, const char *prefix, store_ref_cb cb,
                   void *ud, char **err);

/* ---- snapshots (O(1): refs only, no data copied) ---- */
/* snap/<disk>/<name> := disk/<disk>'s last commit.  The snapshot's parent
 * is the disk's parent; the disk's parent becomes the snapshot.  Safe while
 * a writer has the disk open (its uncommitted writes are not included:
 * flush first).  -EEXIST if the snapshot exists. */
int store_snapshot_create(store_t *store, const char *disk, const char *name,
                          char **err);
/* disk/<disk> := snap/<disk>/<name> (generation keeps counting, parent =
 * the snapshot).  A writer still holding the disk then fails its next
 * commit with -ESTALE: stop it first. */
int store_snapshot_restore(store_t *store, const char *disk, const char *name,
                           char **err);
/* Delete snap/<disk>/<name>; refs whose parent it was get its parent. */
int store_snapshot_delete(store_t *store, const char *disk, const char *name,
                          char **err);
/* Delete disk/<disk> and every snap/<disk>/...; returns the number of refs
 * deleted (0 if none existed).  Forks are independent refs and stay. */
int store_disk_delete(store_t *store, const char *disk, char **err);

/* ---- whole-store walks: GC, verify, stats, usage (gc.c) ---- */
typedef struct store_gc_opts {
  /* Objects younger than this many seconds are never deleted, in addition
   * to the protection of live writers' pending sessions.  < 0 = default
   * (60 s). */
  int64_t grace_s;
  int dry_run;            /* count garbage, delete nothing */
} store_gc_opts_t;

typedef struct store_gc_result {
  uint64_t refs;               /* refs marked from */
  uint64_t reachable;          /* distinct reachable objects (chunks+pages) */
  uint64_t objects, bytes;     /* object files present before the sweep */
  uint64_t garbage_objects, garbage_bytes;  /* unreachable ones */
  uint64_t kept_recent;        /* garbage kept: younger than the cutoff */
  uint64_t deleted_objects, deleted_bytes;
  uint64_t deleted_tmp;        /* stale temporary files removed */
  uint64_t live_writers;       /* pending sessions of live processes */
  uint64_t stale_writers;      /* pending files of dead processes, removed */
} store_gc_result_t;

/* Mark every object reachable from any ref, delete the rest that are older
 * than the cutoff: min(now - grace, oldest pending session of a live
 * writer) - 2 s.  Fails with -EIO (deleting nothing) if a reachable map
 * page is missing or corrupt, since what lies below it is unknown. */
int store_gc(store_t *store, const store_gc_opts_t *opts,
             store_gc_result_t *out, char **err);

typedef struct store_stats {
  uint64_t refs;
  uint64_t virtual_bytes;      /* sum of ref sizes */
  uint64_t logical_bytes;      /* sum over refs of their non-zero chunks */
  uint64_t unique_chunks;      /* distinct reachable chunk objects */
  uint64_t unique_bytes;       /* unique_chunks * chunk size */
  uint64_t pages, page_bytes;  /* distinct reachable map pages */
  uint64_t objects, physical_bytes;  /* all object files and their sizes */
  uint64_t garbage_objects, garbage_bytes;
  double dedup_ratio;          /* logical_bytes / unique_bytes (1 if none) */
} store_stats_t;

int store_stats(store_t *store, store_stats_t *out, char **err);

/* Per-ref usage: chunks it references (distinct) and the bytes that only
 * it references (what deleting it alone would free, pages included). */
typedef struct store_ref_usage {
  store_ref_t ref;
  uint64_t chunks;             /* distinct non-zero chunks */
  uint64_t logical_bytes;      /* non-zero chunks * chunk size */
  uint64_t unique_bytes;
} store_ref_usage_t;
typedef int (*store_usage_cb)(const store_ref_usage_t *u, void *ud);
/* Walks every ref (uniqueness is relative to all refs) and reports those
 * whose name starts with prefix.  Returns the number reported. */
int store_usage(store_t *store, const char *prefix, store_usage_cb cb,
                void *ud, char **err);

typedef enum store_problem_kind {
  STORE_PROBLEM_MISSING = 1,
  STORE_PROBLEM_CORRUPT = 2,   /* hash mismatch, bad size or page header */
  STORE_PROBLEM_UNREADABLE = 3,
} store_problem_kind_t;

typedef struct store_verify_problem {
  store_id_t id;
  int is_page;                 /* map page (what is below is unchecked) */
  store_problem_kind_t kind;
  const char *const *refs;     /* names of the refs that reach it */
  size_t nrefs;
} store_verify_problem_t;
typedef int (*store_verify_cb)(const store_verify_problem_t *p, void *ud);

typedef struct store_verify_result {
  uint64_t refs, objects_checked, bytes_checked, problems;
} store_verify_result_t;

/* Re-read and re-hash every object reachable from any ref.  cb (may be
 * NULL) is called once per bad object after the walk.  Returns the number
 * of bad objects (0 = clean) or a negative errno. */
int store_verify(store_t *store, store_verify_cb cb, void *ud,
                 store_verify_result_t *out, char **err);

/* ---- S3 stores (objects-s3.c; docs/s3.md) ----
 * An S3 store is a local directory (SQLite mirror of the bucket's refs,
 * write-back journal, backend.conf) plus a bucket holding everything a host
 * needs: PREFIX/store.json (chunk size, fanout), PREFIX/objects/<sha256>,
 * PREFIX/refs/<ref name> (JSON), PREFIX/leases/<ref name>, PREFIX/meta/...
 * (small documents of the orchestrator, e.g. lane configurations).  The
 * calls below return -EOPNOTSUPP on a local store unless said otherwise. */
typedef enum store_durability {
  STORE_DURABILITY_LOCAL = 0,   /* FLUSH = journal fsynced; upload follows */
  STORE_DURABILITY_REMOTE = 1,  /* FLUSH = objects and ref in the bucket */
} store_durability_t;

typedef struct store_s3_config {
  const char *endpoint;         /* http[s]://host[:port] */
  const char *bucket;
  const char *prefix;           /* key prefix, no leading/trailing '/'; may be "" */
  const char *region;           /* NULL = us-east-1 */
  const char *credentials_file; /* path only: secrets never leave the file */
  const char *profile;          /* NULL = default */
  int vhost;                    /* virtual-host addressing (default: path) */
  store_durability_t durability;
  const char *cache_dir;        /* host-wide clean chunk cache; NULL = DIR/cache */
  uint64_t cache_bytes;         /* LRU bound; 0 = 1 GiB */
  int allow_unenforced_leases;  /* see docs/s3.md: LEASES ON STORES THAT DO
                                   NOT ENFORCE CONDITIONAL WRITES */
} store_s3_config_t;

/* Make dir an S3 store for cfg: probe whether the bucket enforces
 * conditional writes (*enforced), adopt PREFIX/store.json if the bucket
 * already holds a store there (params are then ignored), else write it.
 * -EEXIST if dir already holds a store. */
int store_create_s3(const char *dir, const store_s3_config_t *cfg,
                    const store_params_t *params, int *enforced, char **err);
/* "local" or "s3". */
const char *store_backend_name(const store_t *store);
/* Pull the bucket's refs into the local mirror (local store: no-op, 0). */
int store_refresh(store_t *store, char **err);
/* Upload the journal and publish every unpublished ref (local: no-op). */
int store_publish(store_t *store, char **err);
/* Start the background uploader (local durability) of this handle. */
int store_background_start(store_t *store, char **err);

typedef struct store_remote_stats {
  uint64_t gets, get_bytes;     /* objects fetched from the bucket */
  uint64_t prefetch_gets;       /* of those, by read-ahead */
  uint64_t puts, put_bytes;     /* objects uploaded */
  uint64_t cache_hits, journal_hits;
  uint64_t ref_puts;
  uint64_t attempts;            /* HTTP attempts, retries included */
  uint64_t connections;         /* connections opened */
} store_remote_stats_t;
int store_remote_stats(store_t *store, store_remote_stats_t *out);

/* Leases (one writer host per ref; docs/s3.md).  check: may holder attach
 * ref now?  0 yes; -EBUSY held by another host (message names it and the
 * time left); -EPERM the store does not enforce conditional writes and the
 * ref was last held by another host (allowed only with
 * allow_unenforced_leases once released or expired).  acquire: take the
 * lease, claim the ref's fencing token and keep renewing in a thread;
 * release: stop renewing, release.  store_lease_ok: 0 while the lease is
 * held, -ESTALE once it was lost (the handle then refuses to publish). */
int store_lease_check(store_t *store, const char *ref, const char *holder,
                      char **err);
int store_lease_acquire(store_t *store, const char *ref, const char *holder,
                        int64_t ttl_ms, char **err);
int store_lease_release(store_t *store, char **err);
int store_lease_ok(store_t *store, char **err);
/* 1 if the bucket enforces conditional writes (probed at creation). */
int store_conditional_enforced(const store_t *store);

/* Read-ahead: fetch the committed chunks of ref covering [offset,
 * offset+len) into the cache.  wait = 0 queues them for a background
 * thread; wait = 1 fetches them in parallel before returning (used to turn
 * one multi-chunk read into parallel GETs).  Best effort: errors are left
 * for the real read to report.  Local store: no-op. */
int store_prefetch(store_t *store, const char *ref, uint64_t offset,
                   uint64_t len, int wait);

/* Small documents under PREFIX/meta/ (orchestrator state shared by hosts).
 * get: malloc'd NUL-terminated body; -ENOENT if missing.  list: cb gets
 * each name below prefix (relative to meta/). */
int store_meta_put(store_t *store, const char *name, const char *body,
                   char **err);
int store_meta_get(store_t *store, const char *name, char **body, char **err);
int store_meta_delete(store_t *store, const char *name, char **err);
typedef int (*store_meta_cb)(const char *name, void *ud);
int store_meta_list(store_t *store, const char *prefix, store_meta_cb cb,
                    void *ud, char **err);

/* ---- disk engine (what the nbdkit plugin wraps) ---- */
/* Open ref (any namespace) for I/O; opts may be NULL.  Refs outside "disk/"
 * are always opened read-only. */
int store_disk_open(store_t *store, const char *ref,
                    const store_disk_opts_t *opts, store_disk_t **out,
                    char **err);
uint64_t store_disk_size(const store_disk_t *disk);
int store_disk_is_readonly(const store_disk_t *disk);
/* Byte-granular I/O.  A corrupt or missing object fails with -EIO. */
int store_disk_read(store_disk_t *disk, void *buf, size_t count,
                    uint64_t offset, char **err);
int store_disk_write(store_disk_t *disk, const void *buf, size_t count,
                     uint64_t offset, char **err);
int store_disk_zero(store_disk_t *disk, size_t count, uint64_t offset,
                    char **err);
/* Length (<= count) of the run starting at offset that is either entirely
 * known-zero (*is_zero = 1) or not (*is_zero = 0); for extents/sparse copy. */
int store_disk_extent(store_disk_t *disk, uint64_t offset, uint64_t count,
                      uint64_t *len, int *is_zero, char **err);
/* Durable commit of everything written so far: objects, pages, then the ref
 * (root + generation) in one transaction.  No-op when nothing changed. */
int store_disk_flush(store_disk_t *disk, char **err);
uint64_t store_disk_generation(const store_disk_t *disk);
/* Close without committing: unflushed writes are discarded. */
void store_disk_close(store_disk_t *disk);

#ifdef __cplusplus
}
#endif
#endif
