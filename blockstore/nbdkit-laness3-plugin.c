/* nbdkit-laness3-plugin — serve one ref of a lanes S3 block store.
 *
 *   nbdkit --unix SOCK nbdkit-laness3-plugin.so store=DIR disk=NAME \
 *          holder=HOST-ID [readahead=SIZE] [stats=FILE]
 *
 * The same disk engine as nbdkit-laneslocal-plugin (store.h) over the S3
 * object backend (objects-s3.c): DIR is an S3 store made by
 * store_create_s3 (lanesd `store add`, or `lanes-s3 store-init`), which
 * names the bucket, the prefix, the credentials file (a path: no secret is
 * ever a parameter, so none shows in nbdkit's argv) and the FLUSH
 * durability (local: journal fsynced, upload follows; remote: objects and
 * ref in the bucket before FLUSH returns).
 *
 * Writers hold a lease on the ref (holder= names this host): taken before
 * the disk is served, renewed in the background, released at exit after
 * the journal is uploaded.  A writer whose lease was taken over (fenced) or
 * could not be renewed in time fails every write and FLUSH with EIO and can
 * no longer move the ref in the bucket.
 *
 * Reads: lazy (only chunks the guest reads are fetched, through the
 * host-wide cache); a read spanning several chunks fetches them in parallel
 * first; sequential reads trigger read-ahead of up to readahead= bytes
 * (default 4M) in a background thread.
 *
 * Threading: NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS, as the local
 * plugin; the backend's threads (uploader, prefetcher, lease renewer) run
 * beside it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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
static const char *cfg_holder;
static const char *cfg_stats;
static const char *cfg_status;
static int cfg_readonly;
static int cfg_lease = 1;
static int64_t cfg_readahead = 4 * 1024 * 1024;
static int64_t cfg_dirty_limit;
static int64_t cfg_cache_bytes;

/* The engine, opened in after_fork, closed in unload. */
static store_t *g_store;
static store_disk_t *g_disk;
static int g_reported;             /* first EIO written to status= */
static uint64_t g_next_seq;        /* end of the last read */
static unsigned g_seq_run;         /* consecutive sequential reads */
static unsigned g_reads;

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

static int laness3_config(const char *key, const char *value)
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
  } else if (strcmp(key, "holder") == 0) {
    cfg_holder = value;
  } else if (strcmp(key, "stats") == 0) {
    cfg_stats = value;
  } else if (strcmp(key, "status") == 0) {
    cfg_status = value;
  } else if (strcmp(key, "readonly") == 0) {
    if ((b = nbdkit_parse_bool(value)) == -1)
      return -1;
    cfg_readonly = b;
  } else if (strcmp(key, "lease") == 0) {
    if ((b = nbdkit_parse_bool(value)) == -1)
      return -1;
    cfg_lease = b;
  } else if (strcmp(key, "readahead") == 0) {
    if ((cfg_readahead = nbdkit_parse_size(value)) == -1)
      return -1;
  } else if (strcmp(key, "dirty-limit") == 0) {
    if ((cfg_dirty_limit = nbdkit_parse_size(value)) == -1)
      return -1;
  } else if (strcmp(key, "cache") == 0) {
    if ((cfg_cache_bytes = nbdkit_parse_size(value)) == -1)
      return -1;
  } else {
    nbdkit_error("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

static int laness3_config_complete(void)
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
  if (!cfg_readonly && cfg_lease && !cfg_holder) {
    nbdkit_error("holder=HOST-ID is required to write (it names this host "
                 "in the lane's lease); or lease=false for a store only "
                 "this host uses");
    return -1;
  }
  return 0;
}

#define laness3_config_help \
  "store=DIR            (required) The lanes S3 store directory.\n" \
  "disk=NAME            Serve ref disk/NAME (read-write).\n" \
  "image=NAME           Serve ref image/NAME (read-only).\n" \
  "ref=REF              Serve any ref by full name (read-only unless disk/).\n" \
  "holder=ID            This host's id in the lease (required to write).\n" \
  "lease=BOOL           Take a lease when writing (default true).\n" \
  "readonly=BOOL        Serve read-only.\n" \
  "readahead=SIZE       Sequential read-ahead window (default 4M, 0 = off).\n" \
  "stats=FILE           Write S3 transfer counters (JSON) there.\n" \
  "status=FILE          Append a JSON line here on the first EIO.\n" \
  "dirty-limit=SIZE     Dirty chunk memory before spilling (default 64M).\n" \
  "cache=SIZE           Per-disk clean chunk cache (default 64 chunks)."

static void stats_write(void)
{
  store_remote_stats_t st;
  if (!cfg_stats || !g_store || store_remote_stats(g_store, &st) < 0)
    return;
  char tmp[4096 + 16], body[1024];
  snprintf(tmp, sizeof tmp, "%s.tmp", cfg_stats);
  int n = snprintf(body, sizeof body,
                   "{\"gets\":%" PRIu64 ",\"get_bytes\":%" PRIu64
                   ",\"prefetch_gets\":%" PRIu64 ",\"puts\":%" PRIu64
                   ",\"put_bytes\":%" PRIu64 ",\"cache_hits\":%" PRIu64
                   ",\"journal_hits\":%" PRIu64 ",\"ref_puts\":%" PRIu64
                   ",\"attempts\":%" PRIu64 ",\"connections\":%" PRIu64 "}\n",
                   st.gets, st.get_bytes, st.prefetch_gets, st.puts,
                   st.put_bytes, st.cache_hits, st.journal_hits, st.ref_puts,
                   st.attempts, st.connections);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd == -1)
    return;
  int ok = write(fd, body, (size_t)n) == n;
  close(fd);
  if (ok)
    rename(tmp, cfg_stats);
  else
    unlink(tmp);
}

static int engine_open(store_t **sp, store_disk_t **dp, int for_real)
{
  char *err = NULL;
  store_t *s = NULL;
  store_disk_t *d = NULL;
  store_params_t params;
  int r = store_open(cfg_store, 0, &s, &err);
  if (r == 0 && strcmp(store_backend_name(s), "s3") != 0)
    r = -EINVAL, err = strdup("not an S3 store (use nbdkit-laneslocal-plugin)");
  /* (store_open pulled the bucket's refs: other hosts' commits too.) */
  if (r == 0 && for_real && !cfg_readonly && cfg_lease)
    r = store_lease_acquire(s, cfg_ref, cfg_holder, 0, &err);
  if (r == 0) {
    store_get_params(s, &params);
    store_disk_opts_t opts = {
      .readonly = cfg_readonly,
      .dirty_limit = (size_t)cfg_dirty_limit,
      .cache_chunks = cfg_cache_bytes ? (size_t)cfg_cache_bytes /
                                          params.chunk_size : 0,
    };
    if (cfg_cache_bytes && opts.cache_chunks == 0)
      opts.cache_chunks = 1;
    r = store_disk_open(s, cfg_ref, &opts, &d, &err);
  }
  if (r == 0 && for_real)
    r = store_background_start(s, &err);
  if (r < 0) {
    nbdkit_error("laness3: %s", err ? err : strerror(-r));
    free(err);
    store_disk_close(d);
    if (s) {
      char *e2 = NULL;
      store_lease_release(s, &e2);
      free(e2);
    }
    store_close(s);
    errno = -r;
    return -1;
  }
  *sp = s;
  *dp = d;
  return 0;
}

static int laness3_get_ready(void)
{
  store_t *s;
  store_disk_t *d;
  if (engine_open(&s, &d, 0) == -1)
    return -1;
  store_disk_close(d);
  store_close(s);
  return 0;
}

static int laness3_after_fork(void)
{
  return engine_open(&g_store, &g_disk, 1);
}

static void laness3_unload(void)
{
  char *err = NULL;
  /* Unflushed writes are discarded, exactly as after a crash; flushed ones
   * are uploaded before the lease goes (local durability). */
  store_disk_close(g_disk);
  if (g_store) {
    int r = store_publish(g_store, &err);
    if (r < 0) {
      /* Keep the lease: the journal still holds acknowledged data that only
       * this host has; it expires on its own if the host stays away. */
      nbdkit_error("laness3: upload at exit failed, journal kept in %s: %s",
                   cfg_store, err ? err : strerror(-r));
    } else {
      free(err);
      err = NULL;
      if (store_lease_release(g_store, &err) < 0)
        nbdkit_error("laness3: lease release: %s", err ? err : "?");
    }
    free(err);
    stats_write();
  }
  store_close(g_store);
}

static void *laness3_open(int readonly)
{
  struct handle *h = malloc(sizeof *h);
  if (!h) {
    nbdkit_error("malloc: %m");
    return NULL;
  }
  h->readonly = readonly || store_disk_is_readonly(g_disk);
  return h;
}

static void laness3_close(void *handle)
{
  free(handle);
}

static int64_t laness3_get_size(void *handle)
{
  return (int64_t)store_disk_size(g_disk);
}

static int laness3_can_write(void *handle)
{
  return !((struct handle *)handle)->readonly;
}

static int laness3_can_flush(void *handle)
{
  return 1;
}

static int laness3_can_fua(void *handle)
{
  return NBDKIT_FUA_NATIVE;
}

static int laness3_can_trim(void *handle)
{
  return 1;
}

static int laness3_can_zero(void *handle)
{
  return 1;
}

static int laness3_can_fast_zero(void *handle)
{
  return 1;
}

static int laness3_can_extents(void *handle)
{
  return 1;
}

static int laness3_can_multi_conn(void *handle)
{
  return 1;
}

/* First EIO of this process: one durable JSON line in the status file (the
 * same contract as nbdkit-laneslocal-plugin's status=: lanesd marks the
 * lane degraded).  Quotes and control characters are dropped. */
static void report_eio(int errnum, const char *msg)
{
  if (!cfg_status || __atomic_exchange_n(&g_reported, 1, __ATOMIC_SEQ_CST))
    return;
  char esc[1024], line[1200];
  size_t o = 0;
  for (const char *p = msg; *p && o < sizeof esc - 1; p++)
    if ((unsigned char)*p >= 0x20 && *p != '"' && *p != '\\')
      esc[o++] = *p;
  esc[o] = '\0';
  int n = snprintf(line, sizeof line,
                   "{\"event\":\"integrity\",\"time\":%lld,\"errno\":%d,"
                   "\"error\":\"%s\"}\n", (long long)time(NULL), errnum, esc);
  int fd = open(cfg_status, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd == -1)
    return;
  if (n > 0 && write(fd, line, (size_t)n) != n)
    nbdkit_error("laness3: write status file %s: %m", cfg_status);
  fsync(fd);
  close(fd);
}

/* Log the engine's message once and set errno (see the local plugin). */
static int fail(int r, char *err)
{
  nbdkit_error("laness3: %s", err ? err : strerror(-r));
  report_eio(-r, err ? err : strerror(-r));
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

/* A writer that lost its lease must not write or commit anything. */
static int lease_guard(char **err)
{
  return store_lease_ok(g_store, err);
}

static int laness3_flush(void *handle, uint32_t flags)
{
  char *err = NULL;
  int r = lease_guard(&err);
  if (r == 0)
    r = store_disk_flush(g_disk, &err);
  stats_write();
  return r < 0 ? fail(r, err) : 0;
}

static int laness3_pread(void *handle, void *buf, uint32_t count,
                         uint64_t offset, uint32_t flags)
{
  char *err = NULL;
  /* Many chunks at once: fetch them in parallel instead of one by one. */
  store_prefetch(g_store, cfg_ref, offset, count, 1);
  if (cfg_readahead > 0) {
    if (offset == g_next_seq) {
      if (g_seq_run < 16)
        g_seq_run++;
      uint64_t win = (uint64_t)count << g_seq_run;
      if (win > (uint64_t)cfg_readahead)
        win = (uint64_t)cfg_readahead;
      if (g_seq_run >= 2)
        store_prefetch(g_store, cfg_ref, offset + count, win, 0);
    } else {
      g_seq_run = 0;
    }
    g_next_seq = offset + count;
  }
  int r = store_disk_read(g_disk, buf, count, offset, &err);
  if (++g_reads % 64 == 0)
    stats_write();
  return r < 0 ? fail(r, err) : 0;
}

static int laness3_pwrite(void *handle, const void *buf, uint32_t count,
                          uint64_t offset, uint32_t flags)
{
  char *err = NULL;
  int r = lease_guard(&err);
  if (r == 0)
    r = store_disk_write(g_disk, buf, count, offset, &err);
  if (r == 0 && (flags & NBDKIT_FLAG_FUA))
    r = store_disk_flush(g_disk, &err);
  return r < 0 ? fail(r, err) : 0;
}

static int laness3_zero(void *handle, uint32_t count, uint64_t offset,
                        uint32_t flags)
{
  char *err = NULL;
  int r = lease_guard(&err);
  if (r == 0)
    r = store_disk_zero(g_disk, count, offset, &err);
  if (r == 0 && (flags & NBDKIT_FLAG_FUA))
    r = store_disk_flush(g_disk, &err);
  return r < 0 ? fail(r, err) : 0;
}

/* Trim = zero: a trimmed range must not resurrect old data later. */
static int laness3_trim(void *handle, uint32_t count, uint64_t offset,
                        uint32_t flags)
{
  return laness3_zero(handle, count, offset, flags);
}

static int laness3_extents(void *handle, uint32_t count, uint64_t offset,
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
  .name = "laness3",
  .longname = "lanes S3 block store",
  .version = LANES_VERSION,
  .config = laness3_config,
  .config_complete = laness3_config_complete,
  .config_help = laness3_config_help,
  .get_ready = laness3_get_ready,
  .after_fork = laness3_after_fork,
  .unload = laness3_unload,
  .open = laness3_open,
  .close = laness3_close,
  .get_size = laness3_get_size,
  .can_write = laness3_can_write,
  .can_flush = laness3_can_flush,
  .can_fua = laness3_can_fua,
  .can_trim = laness3_can_trim,
  .can_zero = laness3_can_zero,
  .can_fast_zero = laness3_can_fast_zero,
  .can_extents = laness3_can_extents,
  .can_multi_conn = laness3_can_multi_conn,
  .pread = laness3_pread,
  .pwrite = laness3_pwrite,
  .flush = laness3_flush,
  .trim = laness3_trim,
  .zero = laness3_zero,
  .extents = laness3_extents,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN(plugin)
