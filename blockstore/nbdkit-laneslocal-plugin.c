/* nbdkit-laneslocal-plugin — serve one ref of a local lanes block store.
 *
 *   nbdkit --unix SOCK nbdkit-laneslocal-plugin.so store=DIR disk=NAME
 *
 * A thin wrapper over the lanes_store disk engine (store.h): one engine per
 * nbdkit process, shared by all connections, so every connection sees the
 * same state and a FLUSH on any connection commits the writes of all of
 * them (which is what makes can_multi_conn safe to advertise).
 *
 * Threading: NBDKIT_THREAD_MODEL_PARALLEL — nbdkit's socket I/O and request
 * handling of all connections run in parallel; the engine serializes its
 * own state under one lock (disk.c).
 *
 * Integrity reporting: with status=PATH, the first request that fails with
 * EIO (a missing, corrupt or unreadable object, or an I/O error of the
 * store) appends one JSON line to PATH, e.g.
 *   {"event":"integrity","time":1700000000,"errno":5,"error":"..."}
 * so the supervisor (lanesd) can mark the lane degraded.  Later failures are
 * only logged: the first one is what matters and a guest retrying a bad
 * block must not grow the file without bound.
 *
 * The parameters, callbacks and error handling this plugin shares with
 * nbdkit-laness3-plugin live in nbdkit-lanes-plugin.c; this file adds the
 * local store's own parameter (sync=) and opens the engine.
 *
 * Lifecycle: config/config_complete validate parameters; get_ready opens the
 * store and the ref once so errors reach the user's terminal before nbdkit
 * daemonizes, then closes them; after_fork opens them for real (SQLite
 * handles must not cross a fork).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbdkit-lanes-plugin.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

lanes_plugin_t lanes_plugin = {.name = "laneslocal"};

static store_sync_mode_t cfg_sync = STORE_SYNC_SYNCFS;

static int laneslocal_config(const char *key, const char *value)
{
  int r = lanes_plugin_config(&lanes_plugin, key, value);
  if (r != 0)
    return r == 1 ? 0 : -1;
  if (strcmp(key, "sync") == 0) {
    if (strcmp(value, "syncfs") == 0)
      cfg_sync = STORE_SYNC_SYNCFS;
    else if (strcmp(value, "fsync") == 0)
      cfg_sync = STORE_SYNC_FSYNC;
    else {
      nbdkit_error("sync must be 'syncfs' or 'fsync', not '%s'", value);
      return -1;
    }
    return 0;
  }
  nbdkit_error("unknown parameter '%s'", key);
  return -1;
}

static int laneslocal_config_complete(void)
{
  return lanes_plugin_config_complete(&lanes_plugin);
}

#define laneslocal_config_help \
  "store=DIR            (required) The lanes block store directory.\n" \
  LANES_PLUGIN_CONFIG_HELP \
  "sync=syncfs|fsync    Ignored (packs are always fdatasync'ed)."

static int engine_open(store_t **sp, store_disk_t **dp)
{
  char *err = NULL;
  store_t *s = NULL;
  store_disk_t *d = NULL;
  int r = store_open(lanes_plugin.store, 0, &s, &err);
  if (r == 0) {
    store_disk_opts_t opts = lanes_plugin_disk_opts(&lanes_plugin, s);
    store_set_sync_mode(s, cfg_sync);
    r = store_disk_open(s, lanes_plugin.ref, &opts, &d, &err);
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

/* Open once so errors reach the terminal before nbdkit daemonizes. */
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
  return engine_open(&lanes_plugin.st, &lanes_plugin.disk);
}

static void laneslocal_unload(void)
{
  /* Unflushed writes are discarded, exactly as after a crash. */
  store_disk_close(lanes_plugin.disk);
  store_close(lanes_plugin.st);
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
  LANES_PLUGIN_CALLBACKS,
};

NBDKIT_REGISTER_PLUGIN(plugin)
