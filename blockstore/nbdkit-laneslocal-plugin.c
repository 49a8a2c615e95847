/* nbdkit-laneslocal-plugin — serve one ref of a local lanes block store.
 *
 *   nbdkit --unix SOCK nbdkit-laneslocal-plugin.so store=DIR disk=NAME
 *
 * A thin wrapper over the lanes_store disk engine (store.h): one engine per
 * nbdkit process, shared by all connections, so every connection sees the
 * same state and a FLUSH on any connection commits the writes of all of
 * them (which is what makes can_multi_conn safe to advertise).
 *
 * Threading: NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS — one request at a
 * time across all connections (first cut; the engine also locks itself).
 *
 * Integrity reporting: with status=PATH, the first request that fails with
 * EIO (a missing, corrupt or unreadable object, or an I/O error of the
 * store) appends one JSON line to PATH, e.g.
 *   {"event":"integrity","time":1700000000,"errno":5,"error":"..."}
 * so the supervisor (lanesd) can mark the lane degraded.  Later failures are
 * only logged: the first one is what matters and a guest retrying a bad
 * block must not grow the file without bound.
 *
 * Lifecycle: config/config_complete validate parameters; get_ready opens the
 * store and the ref once so errors reach the user's terminal before nbdkit
 * daemonizes, then closes them; after_fork opens them for real (SQLite
 * handles must not cross a fork).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "store.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS

/* Configuration (set before any connection; read-only afterwards). */
static const char *cfg_store;
static char cfg_ref[STORE_REF_NAME_MAX + 16];
static int cfg_readonly;
static int64_t cfg_dirty_limit;
static int64_t cfg_cache_bytes;
static store_sync_mode_t cfg_sync = STORE_SYNC_SYNCFS;
static const char *cfg_status;

/* Set once the first integrity failure has been reported (status=). */
static atomic_int g_reported;

/* The engine, opened in after_fork, closed in unload. */
static store_t *g_store;
static store_disk_t *g_disk;

struct handle {
  int readonly;
};

static int set_ref(const char *ns, const char *value)
{
  if (cfg_ref[0]) {
    nbdkit_error("only one of disk=, image= or ref= may be given");
    return -1;
  }
  if (!*value || (ns[0] && strchr(value, '/'))) {
    nbdkit_error("bad %s name '%s'", ns[0] ? ns : "ref", value);
    return -1;
  }
  snprintf(cfg_ref, sizeof cfg_ref, "%s%s%s", ns, ns[0] ? "/" : "", value);
  return 0;
}

static int laneslocal_config(const char *key, const char *value)
{
  int b;
  if (strcmp(key, "store") == 0) {
    cfg_store = value;
  } else if (strcmp(key, "disk") == 0) {
    return set_ref("disk", value);
  } else if (strcmp(key, "image") == 0) {
    return set_ref("image", value);
  } else if (strcmp(key, "ref") == 0) {
    return set_ref("", value);
  } else if (strcmp(key, "readonly") == 0) {
    if ((b = nbdkit_parse_bool(value)) == -1)
      return -1;
    cfg_readonly = b;
  } else if (strcmp(key, "dirty-limit") == 0) {
    if ((cfg_dirty_limit = nbdkit_parse_size(value)) == -1)
      return -1;
  } else if (strcmp(key, "cache") == 0) {
    if ((cfg_cache_bytes = nbdkit_parse_size(value)) == -1)
      return -1;
  } else if (strcmp(key, "status") == 0) {
    if (!*value) {
      nbdkit_error("status= needs a file name");
      return -1;
    }
    cfg_status = value;
  } else if (strcmp(key, "sync") == 0) {
    if (strcmp(value, "syncfs") == 0)
      cfg_sync = STORE_SYNC_SYNCFS;
    else if (strcmp(value, "fsync") == 0)
      cfg_sync = STORE_SYNC_FSYNC;
    else {
      nbdkit_error("sync must be 'syncfs' or 'fsync', not '%s'", value);
      return -1;
    }
  } else {
    nbdkit_error("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

static int laneslocal_config_complete(void)
{
  if (!cfg_store) {
    nbdkit_error("the store=DIR parameter is required");
    return -1;
  }
  if (!cfg_ref[0]) {
    nbdkit_error("one of disk=NAME, image=NAME or ref=REF is required");
    return -1;
  }
  if (strncmp(cfg_ref, "disk/", 5) != 0)
    cfg_readonly = 1;
  return 0;
}

#define laneslocal_config_help \
  "store=DIR            (required) The lanes block store directory.\n" \
  "disk=NAME            Serve ref disk/NAME (read-write).\n" \
  "image=NAME           Serve ref image/NAME (read-only).\n" \
  "ref=REF              Serve any ref by full name (read-only unless disk/).\n" \
  "readonly=BOOL        Serve read-only.\n" \
  "dirty-limit=SIZE     Dirty chunk memory before spilling (default 64M).\n" \
  "cache=SIZE           Clean chunk cache (default 64 chunks).\n" \
  "sync=syncfs|fsync    Ignored (packs are always fdatasync'ed).\n" \
  "status=FILE          Append a JSON line here on the first EIO."

static int engine_open(store_t **sp, store_disk_t **dp)
{
  char *err = NULL;
  store_t *s = NULL;
  store_disk_t *d = NULL;
  store_params_t params;
  int r = store_open(cfg_store, 0, &s, &err);
  if (r == 0) {
    store_params_t *pp = &params;
    store_get_params(s, pp);
    store_disk_opts_t opts = {
      .readonly = cfg_readonly,
      .dirty_limit = (size_t)cfg_dirty_limit,
      .cache_chunks = cfg_cache_bytes ? (size_t)cfg_cache_bytes / pp->chunk_size
                                      : 0,
    };
    if (cfg_cache_bytes && opts.cache_chunks == 0)
      opts.cache_chunks = 1;
    store_set_sync_mode(s, cfg_sync);
    r = store_disk_open(s, cfg_ref, &opts, &d, &err);
  }
  if (r < 0) {
    nbdkit_error("laneslocal: %s", err ? err : strerror(-r));
    free(err);
    store_close(s);
    errno = -r;
    return -1;
  }
  *sp = s;
  *dp = d;
  return 0;
}

static int laneslocal_get_ready(void)
{
  store_t *s;
  store_disk_t *d;
  if (engine_open(&s, &d) == -1)
    return -1;
  store_disk_close(d);
  store_close(s);
  return 0;
}

static int laneslocal_after_fork(void)
{
  return engine_open(&g_store, &g_disk);
}

static void laneslocal_unload(void)
{
  /* Unflushed writes are discarded, exactly as after a crash. */
  store_disk_close(g_disk);
  store_close(g_store);
}

static void *laneslocal_open(int readonly)
{
  struct handle *h = malloc(sizeof *h);
  if (!h) {
    nbdkit_error("malloc: %m");
    return NULL;
  }
  h->readonly = readonly || store_disk_is_readonly(g_disk);
  return h;
}

static void laneslocal_close(void *handle)
{
  free(handle);
}

static int64_t laneslocal_get_size(void *handle)
{
  return (int64_t)store_disk_size(g_disk);
}

static int laneslocal_can_write(void *handle)
{
  return !((struct handle *)handle)->readonly;
}

static int laneslocal_can_flush(void *handle)
{
  return 1;
}

static int laneslocal_can_fua(void *handle)
{
  return NBDKIT_FUA_NATIVE;
}

static int laneslocal_can_trim(void *handle)
{
  return 1;
}

static int laneslocal_can_zero(void *handle)
{
  return 1;
}

static int laneslocal_can_fast_zero(void *handle)
{
  return 1;
}

static int laneslocal_can_extents(void *handle)
{
  return 1;
}

static int laneslocal_can_multi_conn(void *handle)
{
  return 1;
}

/* Append msg as a JSON string to out (bounded by cap, always terminated). */
static void json_escape(char *out, size_t cap, const char *msg)
{
  size_t o = 0;
  for (const unsigned char *p = (const unsigned char *)msg; *p && o + 7 < cap;
       p++) {
    if (*p == '"' || *p == '\\') {
      out[o++] = '\\';
      out[o++] = (char)*p;
    } else if (*p < 0x20) {
      o += (size_t)snprintf(out + o, cap - o, "\\u%04x", *p);
    } else {
      out[o++] = (char)*p;
    }
  }
  out[o] = 0;
}

/* First EIO of this process: one durable JSON line in the status file. */
static void report_integrity(int errnum, const char *msg)
{
  int expected = 0;
  if (!cfg_status || !atomic_compare_exchange_strong(&g_reported, &expected, 1))
    return;
  char esc[1024], line[1200];
  json_escape(esc, sizeof esc, msg);
  int n = snprintf(line, sizeof line,
                   "{\"event\":\"integrity\",\"time\":%lld,\"errno\":%d,"
                   "\"error\":\"%s\"}\n",
                   (long long)time(NULL), errnum, esc);
  if (n < 0 || (size_t)n >= sizeof line)
    n = (int)strlen(line);
  int fd = open(cfg_status, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd == -1) {
    nbdkit_error("laneslocal: open status file %s: %m", cfg_status);
    return;
  }
  const char *p = line;
  size_t left = (size_t)n;
  while (left) {
    ssize_t w = write(fd, p, left);
    if (w == -1) {
      if (errno == EINTR)
        continue;
      nbdkit_error("laneslocal: write status file %s: %m", cfg_status);
      break;
    }
    p += w;
    left -= (size_t)w;
  }
  fsync(fd);
  close(fd);
}

/* Log the engine's message once and set errno from its return value.  NBD
 * carries only a few error codes; anything else (ESTALE from a lost commit
 * race, ENOENT of a deleted ref, ...) is an I/O error to the client. */
static int fail(int r, char *err)
{
  const char *msg = err ? err : strerror(-r);
  nbdkit_error("laneslocal: %s", msg);
  if (r == -EIO)
    report_integrity(EIO, msg);
  free(err);
  switch (-r) {
  case EIO: case ENOSPC: case ENOMEM: case EINVAL: case EPERM: case EROFS:
    errno = -r;
    break;
  default:
    errno = EIO;
  }
  return -1;
}

static int laneslocal_flush(void *handle, uint32_t flags)
{
  char *err = NULL;
  int r = store_disk_flush(g_disk, &err);
  return r < 0 ? fail(r, err) : 0;
}

static int laneslocal_pread(void *handle, void *buf, uint32_t count,
                            uint64_t offset, uint32_t flags)
{
  char *err = NULL;
  int r = store_disk_read(g_disk, buf, count, offset, &err);
  return r < 0 ? fail(r, err) : 0;
}

static int laneslocal_pwrite(void *handle, const void *buf, uint32_t count,
                             uint64_t offset, uint32_t flags)
{
  char *err = NULL;
  int r = store_disk_write(g_disk, buf, count, offset, &err);
  if (r == 0 && (flags & NBDKIT_FLAG_FUA))
    r = store_disk_flush(g_disk, &err);
  return r < 0 ? fail(r, err) : 0;
}

static int laneslocal_zero(void *handle, uint32_t count, uint64_t offset,
                           uint32_t flags)
{
  char *err = NULL;
  int r = store_disk_zero(g_disk, count, offset, &err);
  if (r == 0 && (flags & NBDKIT_FLAG_FUA))
    r = store_disk_flush(g_disk, &err);
  return r < 0 ? fail(r, err) : 0;
}

/* Trim = zero: a trimmed range must not resurrect old data later. */
static int laneslocal_trim(void *handle, uint32_t count, uint64_t offset,
                           uint32_t flags)
{
  return laneslocal_zero(handle, count, offset, flags);
}

static int laneslocal_extents(void *handle, uint32_t count, uint64_t offset,
                              uint32_t flags, struct nbdkit_extents *extents)
{
  uint64_t end = offset + count;
  while (offset < end) {
    uint64_t len;
    int zero;
    char *err = NULL;
    int r = store_disk_extent(g_disk, offset, end - offset, &len, &zero, &err);
    if (r < 0)
      return fail(r, err);
    if (nbdkit_add_extent(extents, offset, len,
                          zero ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0)
        == -1)
      return -1;
    offset += len;
    if (flags & NBDKIT_FLAG_REQ_ONE)
      break;
  }
  return 0;
}

static struct nbdkit_plugin plugin = {
  .name = "laneslocal",
  .longname = "lanes local block store",
  .version = LANES_VERSION,
  .config = laneslocal_config,
  .config_complete = laneslocal_config_complete,
  .config_help = laneslocal_config_help,
  .get_ready = laneslocal_get_ready,
  .after_fork = laneslocal_after_fork,
  .unload = laneslocal_unload,
  .open = laneslocal_open,
  .close = laneslocal_close,
  .get_size = laneslocal_get_size,
  .can_write = laneslocal_can_write,
  .can_flush = laneslocal_can_flush,
  .can_fua = laneslocal_can_fua,
  .can_trim = laneslocal_can_trim,
  .can_zero = laneslocal_can_zero,
  .can_fast_zero = laneslocal_can_fast_zero,
  .can_extents = laneslocal_can_extents,
  .can_multi_conn = laneslocal_can_multi_conn,
  .pread = laneslocal_pread,
  .pwrite = laneslocal_pwrite,
  .flush = laneslocal_flush,
  .trim = laneslocal_trim,
  .zero = laneslocal_zero,
  .extents = laneslocal_extents,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN(plugin)
