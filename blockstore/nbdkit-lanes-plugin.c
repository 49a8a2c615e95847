/* nbdkit-lanes-plugin.c — the callbacks and parameters the laneslocal and
 * laness3 plugins share (see nbdkit-lanes-plugin.h). */
#include "nbdkit-lanes-plugin.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct handle {
  int readonly;
};

/* ---- parameters ---------------------------------------------------------- */

static int set_ref(lanes_plugin_t *p, const char *ns, const char *value)
{
  if (p->ref[0]) {
    nbdkit_error("only one of disk=, image= or ref= may be given");
    return -1;
  }
  if (!*value || (ns[0] && strchr(value, '/'))) {
    nbdkit_error("bad %s name '%s'", ns[0] ? ns : "ref", value);
    return -1;
  }
  snprintf(p->ref, sizeof p->ref, "%s%s%s", ns, ns[0] ? "/" : "", value);
  return 0;
}

int lanes_plugin_config(lanes_plugin_t *p, const char *key, const char *value)
{
  int b;
  if (strcmp(key, "store") == 0) {
    p->store = value;
  } else if (strcmp(key, "disk") == 0) {
    return set_ref(p, "disk", value) == 0 ? 1 : -1;
  } else if (strcmp(key, "image") == 0) {
    return set_ref(p, "image", value) == 0 ? 1 : -1;
  } else if (strcmp(key, "ref") == 0) {
    return set_ref(p, "", value) == 0 ? 1 : -1;
  } else if (strcmp(key, "readonly") == 0) {
    if ((b = nbdkit_parse_bool(value)) == -1)
      return -1;
    p->readonly = b;
  } else if (strcmp(key, "dirty-limit") == 0) {
    if ((p->dirty_limit = nbdkit_parse_size(value)) == -1)
      return -1;
  } else if (strcmp(key, "cache") == 0) {
    if ((p->cache_bytes = nbdkit_parse_size(value)) == -1)
      return -1;
  } else if (strcmp(key, "status") == 0) {
    if (!*value) {
      nbdkit_error("status= needs a file name");
      return -1;
    }
    p->status = value;
  } else {
    return 0;
  }
  return 1;
}

int lanes_plugin_config_complete(lanes_plugin_t *p)
{
  if (!p->store) {
    nbdkit_error("the store=DIR parameter is required");
    return -1;
  }
  if (!p->ref[0]) {
    nbdkit_error("one of disk=NAME, image=NAME or ref=REF is required");
    return -1;
  }
  if (strncmp(p->ref, "disk/", 5) != 0)
    p->readonly = 1;
  return 0;
}

store_disk_opts_t lanes_plugin_disk_opts(const lanes_plugin_t *p, store_t *s)
{
  store_params_t params;
  store_get_params(s, &params);
  store_disk_opts_t opts = {
    .readonly = p->readonly,
    .dirty_limit = (size_t)p->dirty_limit,
    .cache_chunks = p->cache_bytes ? (size_t)p->cache_bytes / params.chunk_size : 0,
  };
  if (p->cache_bytes && opts.cache_chunks == 0)
    opts.cache_chunks = 1;
  return opts;
}

/* ---- errors -------------------------------------------------------------- */

/* msg as the inside of a JSON string (bounded by cap, always terminated). */
static void json_escape(char *out, size_t cap, const char *msg)
{
  size_t o = 0;
  for (const unsigned char *c = (const unsigned char *)msg; *c && o + 7 < cap; c++) {
    if (*c == '"' || *c == '\\') {
      out[o++] = '\\';
      out[o++] = (char)*c;
    } else if (*c < 0x20) {
      o += (size_t)snprintf(out + o, cap - o, "\\u%04x", *c);
    } else {
      out[o++] = (char)*c;
    }
  }
  out[o] = 0;
}

/* First EIO of this process: one durable JSON line in the status file, so
 * the supervisor (lanesd) can mark the lane degraded. Later failures are
 * only logged: a guest retrying a bad block must not grow the file. */
static void report_integrity(lanes_plugin_t *p, const char *msg)
{
  int expected = 0;
  if (!p->status || !atomic_compare_exchange_strong(&p->reported, &expected, 1))
    return;
  char esc[1024], line[1200];
  json_escape(esc, sizeof esc, msg);
  int n = snprintf(line, sizeof line,
                   "{\"event\":\"integrity\",\"time\":%lld,\"errno\":%d,\"error\":\"%s\"}\n",
                   (long long)time(NULL), EIO, esc);
  if (n < 0 || (size_t)n >= sizeof line)
    n = (int)strlen(line);
  int fd = open(p->status, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd == -1) {
    nbdkit_error("%s: open status file %s: %m", p->name, p->status);
    return;
  }
  const char *c = line;
  size_t left = (size_t)n;
  while (left) {
    ssize_t w = write(fd, c, left);
    if (w == -1) {
      if (errno == EINTR)
        continue;
      nbdkit_error("%s: write status file %s: %m", p->name, p->status);
      break;
    }
    c += w;
    left -= (size_t)w;
  }
  fsync(fd);
  close(fd);
}

int lanes_plugin_fail(lanes_plugin_t *p, int r, char *err)
{
  const char *msg = err ? err : strerror(-r);
  nbdkit_error("%s: %s", p->name, msg);
  if (r == -EIO)
    report_integrity(p, msg);
  free(err);
  /* NBD carries only a few error codes; anything else (ESTALE from a lost
   * commit race or a fenced lease, ENOENT of a deleted ref, ...) is an I/O
   * error to the client. */
  switch (-r) {
  case EIO: case ENOSPC: case ENOMEM: case EINVAL: case EPERM: case EROFS:
    errno = -r;
    break;
  default:
    errno = EIO;
  }
  return -1;
}

/* ---- callbacks ----------------------------------------------------------- */

void *lanes_plugin_open(int readonly)
{
  struct handle *h = malloc(sizeof *h);
  if (!h) {
    nbdkit_error("malloc: %m");
    return NULL;
  }
  h->readonly = readonly || store_disk_is_readonly(lanes_plugin.disk);
  return h;
}

void lanes_plugin_close(void *handle)
{
  free(handle);
}

int64_t lanes_plugin_get_size(void *handle)
{
  (void)handle;
  return (int64_t)store_disk_size(lanes_plugin.disk);
}

int lanes_plugin_can_write(void *handle)
{
  return !((struct handle *)handle)->readonly;
}

/* flush, trim, zero, fast zero, extents and multi-conn: always. One engine
 * per process serves every connection, so a FLUSH on any connection
 * commits the writes of all of them (what makes multi-conn safe). */
int lanes_plugin_can_yes(void *handle)
{
  (void)handle;
  return 1;
}

int lanes_plugin_can_fua(void *handle)
{
  (void)handle;
  return NBDKIT_FUA_NATIVE;
}

static int guard(char **err)
{
  return lanes_plugin.before_write ? lanes_plugin.before_write(err) : 0;
}

int lanes_plugin_flush(void *handle, uint32_t flags)
{
  (void)handle, (void)flags;
  char *err = NULL;
  int r = guard(&err);
  if (r == 0)
    r = store_disk_flush(lanes_plugin.disk, &err);
  if (lanes_plugin.after_flush)
    lanes_plugin.after_flush();
  return r < 0 ? lanes_plugin_fail(&lanes_plugin, r, err) : 0;
}

int lanes_plugin_pread(void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
  (void)handle, (void)flags;
  char *err = NULL;
  if (lanes_plugin.before_read)
    lanes_plugin.before_read(offset, count);
  int r = store_disk_read(lanes_plugin.disk, buf, count, offset, &err);
  if (lanes_plugin.after_read)
    lanes_plugin.after_read();
  return r < 0 ? lanes_plugin_fail(&lanes_plugin, r, err) : 0;
}

int lanes_plugin_pwrite(void *handle, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
  (void)handle;
  char *err = NULL;
  int r = guard(&err);
  if (r == 0)
    r = store_disk_write(lanes_plugin.disk, buf, count, offset, &err);
  if (r == 0 && (flags & NBDKIT_FLAG_FUA))
    r = store_disk_flush(lanes_plugin.disk, &err);
  return r < 0 ? lanes_plugin_fail(&lanes_plugin, r, err) : 0;
}

int lanes_plugin_zero(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  (void)handle;
  char *err = NULL;
  int r = guard(&err);
  if (r == 0)
    r = store_disk_zero(lanes_plugin.disk, count, offset, &err);
  if (r == 0 && (flags & NBDKIT_FLAG_FUA))
    r = store_disk_flush(lanes_plugin.disk, &err);
  return r < 0 ? lanes_plugin_fail(&lanes_plugin, r, err) : 0;
}

/* Trim = zero: a trimmed range must not resurrect old data later. */
int lanes_plugin_trim(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  return lanes_plugin_zero(handle, count, offset, flags);
}

int lanes_plugin_extents(void *handle, uint32_t count, uint64_t offset, uint32_t flags,
                         struct nbdkit_extents *extents)
{
  (void)handle;
  uint64_t end = offset + count;
  while (offset < end) {
    uint64_t len;
    int zero;
    char *err = NULL;
    int r = store_disk_extent(lanes_plugin.disk, offset, end - offset, &len, &zero, &err);
    if (r < 0)
      return lanes_plugin_fail(&lanes_plugin, r, err);
    if (nbdkit_add_extent(extents, offset, len, zero ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0) == -1)
      return -1;
    offset += len;
    if (flags & NBDKIT_FLAG_REQ_ONE)
      break;
  }
  return 0;
}
