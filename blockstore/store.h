/* lanes block store — public interface of the lanes_store library.
 *
 * A content-addressed store for virtual disks.  A disk is cut into fixed-size
 * chunks (the store's chunk size, fixed when the store is created).  Chunk
 * contents are immutable objects named by their SHA-256; all-zero chunks are
 * never stored and are named by the zero id.  One disk state (a manifest) is a
 * small Merkle tree of map pages whose leaves hold chunk ids; pages are
 * objects too.  A ref (name -> root page id + virtual size + generation) names
 * a manifest; refs live in SQLite.  Ref namespaces: "image/<name>",
 * "disk/<name>", later "snap/<disk>/<name>".
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
  size_t dirty_limit;    /* bytes of dirty chunks kept in memory before they
                            are spilled to (uncommitted) objects; 0 = 64 MiB */
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
