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
 * Threading: NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS (the local plugin
 * is parallel): the read-ahead detector below keeps unlocked state across
 * requests, and a request's time is dominated by the bucket, not by nbdkit.
 * The backend's threads (uploader, prefetcher, lease renewer) run beside
 * it.
 *
 * The parameters, callbacks, errno mapping and status= report it shares
 * with nbdkit-laneslocal-plugin live in nbdkit-lanes-plugin.c; this file
 * adds the S3 parameters, the lease, read-ahead and transfer stats (as
 * lanes_plugin_t hooks) and opens the engine.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nbdkit-lanes-plugin.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS

static int laness3_before_write(char **err);
static void laness3_before_read(uint64_t offset, uint32_t count);
static void laness3_after_read(void);
static void stats_write(void);

lanes_plugin_t lanes_plugin = {
  .name = "laness3",
  .before_write = laness3_before_write,
  .before_read = laness3_before_read,
  .after_read = laness3_after_read,
  .after_flush = stats_write,
};

/* S3-only configuration (set before any connection; read-only afterwards). */
static const char *cfg_holder;
static const char *cfg_stats;
static int cfg_lease = 1;
static int64_t cfg_readahead = 4 * 1024 * 1024;

static uint64_t g_next_seq;        /* end of the last read */
static unsigned g_seq_run;         /* consecutive sequential reads */
static unsigned g_reads;

static int laness3_config(const char *key, const char *value)
{
  int b, r = lanes_plugin_config(&lanes_plugin, key, value);
  if (r != 0)
    return r == 1 ? 0 : -1;
  if (strcmp(key, "holder") == 0) {
    cfg_holder = value;
  } else if (strcmp(key, "stats") == 0) {
    cfg_stats = value;
  } else if (strcmp(key, "lease") == 0) {
    if ((b = nbdkit_parse_bool(value)) == -1)
      return -1;
    cfg_lease = b;
  } else if (strcmp(key, "readahead") == 0) {
    if ((cfg_readahead = nbdkit_parse_size(value)) == -1)
      return -1;
  } else {
    nbdkit_error("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

static int laness3_config_complete(void)
{
  if (lanes_plugin_config_complete(&lanes_plugin) == -1)
    return -1;
  if (!lanes_plugin.readonly && cfg_lease && !cfg_holder) {
    nbdkit_error("holder=HOST-ID is required to write (it names this host "
                 "in the lane's lease); or lease=false for a store only "
                 "this host uses");
    return -1;
  }
  return 0;
}

#define laness3_config_help \
  "store=DIR            (required) The lanes S3 store directory.\n" \
  LANES_PLUGIN_CONFIG_HELP \
  "holder=ID            This host's id in the lease (required to write).\n" \
  "lease=BOOL           Take a lease when writing (default true).\n" \
  "readahead=SIZE       Sequential read-ahead window (default 4M, 0 = off).\n" \
  "stats=FILE           Write S3 transfer counters (JSON) there."

static void stats_write(void)
{
  store_remote_stats_t st;
  if (!cfg_stats || !lanes_plugin.st || store_remote_stats(lanes_plugin.st, &st) < 0)
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
  int r = store_open(lanes_plugin.store, 0, &s, &err);
  if (r == 0 && strcmp(store_backend_name(s), "s3") != 0)
    r = -EINVAL, err = strdup("not an S3 store (use nbdkit-laneslocal-plugin)");
  /* (store_open pulled the bucket's refs: other hosts' commits too.) */
  if (r == 0 && for_real && !lanes_plugin.readonly && cfg_lease)
    r = store_lease_acquire(s, lanes_plugin.ref, cfg_holder, 0, &err);
  if (r == 0) {
    store_disk_opts_t opts = lanes_plugin_disk_opts(&lanes_plugin, s);
    r = store_disk_open(s, lanes_plugin.ref, &opts, &d, &err);
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
  return engine_open(&lanes_plugin.st, &lanes_plugin.disk, 1);
}

static void laness3_unload(void)
{
  char *err = NULL;
  /* Unflushed writes are discarded, exactly as after a crash; flushed ones
   * are uploaded before the lease goes (local durability). */
  store_disk_close(lanes_plugin.disk);
  if (lanes_plugin.st) {
    int r = store_publish(lanes_plugin.st, &err);
    if (r < 0) {
      /* Keep the lease: the journal still holds acknowledged data that only
       * this host has; it expires on its own if the host stays away. */
      nbdkit_error("laness3: upload at exit failed, journal kept in %s: %s",
                   lanes_plugin.store, err ? err : strerror(-r));
    } else {
      free(err);
      err = NULL;
      if (store_lease_release(lanes_plugin.st, &err) < 0)
        nbdkit_error("laness3: lease release: %s", err ? err : "?");
    }
    free(err);
    stats_write();
  }
  store_close(lanes_plugin.st);
}

/* A writer that lost its lease must not write or commit anything. */
static int laness3_before_write(char **err)
{
  return store_lease_ok(lanes_plugin.st, err);
}

/* Many chunks at once: fetch them in parallel instead of one by one; a run
 * of sequential reads also reads ahead (growing to readahead=). */
static void laness3_before_read(uint64_t offset, uint32_t count)
{
  store_prefetch(lanes_plugin.st, lanes_plugin.ref, offset, count, 1);
  if (cfg_readahead <= 0)
    return;
  if (offset == g_next_seq) {
    if (g_seq_run < 16)
      g_seq_run++;
    uint64_t win = (uint64_t)count << g_seq_run;
    if (win > (uint64_t)cfg_readahead)
      win = (uint64_t)cfg_readahead;
    if (g_seq_run >= 2)
      store_prefetch(lanes_plugin.st, lanes_plugin.ref, offset + count, win, 0);
  } else {
    g_seq_run = 0;
  }
  g_next_seq = offset + count;
}

static void laness3_after_read(void)
{
  if (++g_reads % 64 == 0)
    stats_write();
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
  LANES_PLUGIN_CALLBACKS,
};

NBDKIT_REGISTER_PLUGIN(plugin)
