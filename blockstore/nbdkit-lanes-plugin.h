/* nbdkit-lanes-plugin.h — what nbdkit-laneslocal-plugin and
 * nbdkit-laness3-plugin share: the parameters both take, the per-connection
 * handle, the can_* answers, the data callbacks over one store_disk_t, the
 * errno mapping and the status= integrity report.
 *
 * Each plugin keeps one lanes_plugin_t (static, set up by its config
 * callbacks before any connection and read-only afterwards except for
 * `reported`) and points its struct nbdkit_plugin at the lanes_plugin_*
 * callbacks below; the backend-specific parts (opening the engine, leases,
 * read-ahead, transfer stats) come in through the hooks. Compiled into each
 * plugin module (nbdkit loads them separately), never into a library.
 *
 * Threading: callbacks run under the plugins' SERIALIZE_ALL_REQUESTS model;
 * `reported` is atomic because error paths may run on any nbdkit thread.
 */
#ifndef LANES_NBDKIT_LANES_PLUGIN_H
#define LANES_NBDKIT_LANES_PLUGIN_H

#include <stdatomic.h>
#include <stdint.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "store.h"

typedef struct lanes_plugin {
  const char *name;            /* "laneslocal", prefixes every message */
  /* Parameters both plugins take (lanes_plugin_config). */
  const char *store;           /* store= */
  char ref[STORE_REF_NAME_MAX + 16]; /* disk=, image= or ref= */
  int readonly;                /* readonly=, or a ref that is not disk/ */
  int64_t dirty_limit;         /* dirty-limit= */
  int64_t cache_bytes;         /* cache= */
  const char *status;          /* status= */
  /* The engine, opened in after_fork, closed in unload. */
  store_t *st;
  store_disk_t *disk;
  atomic_int reported;         /* the first EIO went to status= */
  /* Optional backend hooks (NULL: nothing to do). */
  int (*before_write)(char **err);            /* write, zero, flush; <0 refuses */
  void (*before_read)(uint64_t offset, uint32_t count);
  void (*after_read)(void);
  void (*after_flush)(void);
} lanes_plugin_t;

/* Parameters common to both plugins: 1 taken, 0 not ours, -1 bad value
 * (reported with nbdkit_error). */
int lanes_plugin_config(lanes_plugin_t *p, const char *key, const char *value);
/* store= and a ref are required; non-disk refs are served read-only. */
int lanes_plugin_config_complete(lanes_plugin_t *p);
#define LANES_PLUGIN_CONFIG_HELP \
  "disk=NAME            Serve ref disk/NAME (read-write).\n" \
  "image=NAME           Serve ref image/NAME (read-only).\n" \
  "ref=REF              Serve any ref by full name (read-only unless disk/).\n" \
  "readonly=BOOL        Serve read-only.\n" \
  "dirty-limit=SIZE     Staged (unhashed) bytes before spilling (default 1G).\n" \
  "cache=SIZE           Clean chunk cache (default 64 chunks).\n" \
  "status=FILE          Append a JSON line here on the first EIO.\n"

/* Disk options from the parameters, for store_disk_open. */
store_disk_opts_t lanes_plugin_disk_opts(const lanes_plugin_t *p, store_t *s);

/* Log the engine's message once, report a first EIO to status=, set errno
 * to what NBD can carry (anything else becomes EIO) and return -1. Frees
 * err. */
int lanes_plugin_fail(lanes_plugin_t *p, int r, char *err);

/* The plugin whose callbacks these are; each module defines it. */
extern lanes_plugin_t lanes_plugin;

void *lanes_plugin_open(int readonly);
void lanes_plugin_close(void *handle);
int64_t lanes_plugin_get_size(void *handle);
int lanes_plugin_can_write(void *handle);
int lanes_plugin_can_yes(void *handle);
int lanes_plugin_can_fua(void *handle);
int lanes_plugin_flush(void *handle, uint32_t flags);
int lanes_plugin_pread(void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags);
int lanes_plugin_pwrite(void *handle, const void *buf, uint32_t count, uint64_t offset, uint32_t flags);
int lanes_plugin_zero(void *handle, uint32_t count, uint64_t offset, uint32_t flags);
int lanes_plugin_trim(void *handle, uint32_t count, uint64_t offset, uint32_t flags);
int lanes_plugin_extents(void *handle, uint32_t count, uint64_t offset, uint32_t flags,
                         struct nbdkit_extents *extents);

/* Fills the parts of struct nbdkit_plugin both plugins share. */
#define LANES_PLUGIN_CALLBACKS \
  .open = lanes_plugin_open, \
  .close = lanes_plugin_close, \
  .get_size = lanes_plugin_get_size, \
  .can_write = lanes_plugin_can_write, \
  .can_flush = lanes_plugin_can_yes, \
  .can_fua = lanes_plugin_can_fua, \
  .can_trim = lanes_plugin_can_yes, \
  .can_zero = lanes_plugin_can_yes, \
  .can_fast_zero = lanes_plugin_can_yes, \
  .can_extents = lanes_plugin_can_yes, \
  .can_multi_conn = lanes_plugin_can_yes, \
  .pread = lanes_plugin_pread, \
  .pwrite = lanes_plugin_pwrite, \
  .flush = lanes_plugin_flush, \
  .trim = lanes_plugin_trim, \
  .zero = lanes_plugin_zero, \
  .extents = lanes_plugin_extents, \
  .errno_is_preserved = 1

#endif
