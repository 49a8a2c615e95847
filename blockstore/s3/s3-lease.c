/* lanes S3 client — leases and fencing tokens (protocol in s3-lease.h).
 *
 * Invariants:
 *   - Every write of a lease or fenced object is conditional (If-None-Match
 *     on create, If-Match on the last seen ETag otherwise), so two hosts can
 *     never both believe a write succeeded on top of the same state.
 *   - A lease's generation only grows: takeovers add one, renew/release
 *     keep it, and the lease object is never deleted.
 *
 * Threading: no state of its own; as the client.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "s3-internal.h"
#include "s3-lease.h"

static int valid_holder(const char *h)
{
  size_t n = strlen(h);
  if (n == 0 || n > S3_HOLDER_MAX)
    return 0;
  for (const char *p = h; *p; p++)
    if (*p <= ' ' || *p >= 127 || *p == '"' || *p == '\\')
      return 0;
  return 1;
}

char *s3_lease_encode(const s3_lease_t *l)
{
  char *s = NULL;
  if (asprintf(&s, "{\"lanes_lease\":1,\"holder\":\"%s\",\"generation\":%" PRIu64
               ",\"expires_ms\":%" PRId64 ",\"released\":%s}\n",
               l->holder, l->generation, l->expires_ms,
               l->released ? "true" : "false") < 0)
    return NULL;
  return s;
}

int s3_lease_decode(const char *body, size_t len, s3_lease_t *out)
{
  if (!body || len == 0 || len > 4096)
    return -EBADMSG;
  struct json_tokener *tok = json_tokener_new();
  if (!tok)
    return -ENOMEM;
  json_object *o = json_tokener_parse_ex(tok, body, (int)len);
  json_tokener_free(tok);
  s3_lease_t l = {0};
  json_object *v, *h, *g, *e, *r;
  int ok = o && json_object_is_type(o, json_type_object) &&
           json_object_object_get_ex(o, "lanes_lease", &v) &&
           json_object_get_int(v) == 1 &&
           json_object_object_get_ex(o, "holder", &h) &&
           json_object_is_type(h, json_type_string) &&
           json_object_object_get_ex(o, "generation", &g) &&
           json_object_is_type(g, json_type_int) &&
           json_object_object_get_ex(o, "expires_ms", &e) &&
           json_object_is_type(e, json_type_int);
  if (ok) {
    const char *hs = json_object_get_string(h);
    int64_t gen = json_object_get_int64(g);
    ok = valid_holder(hs) && gen >= 1;
    if (ok) {
      snprintf(l.holder, sizeof l.holder, "%s", hs);
      l.generation = (uint64_t)gen;
      l.expires_ms = json_object_get_int64(e);
      l.released = json_object_object_get_ex(o, "released", &r) &&
                   json_object_get_boolean(r);
    }
  }
  json_object_put(o);
  if (!ok)
    return -EBADMSG;
  *out = l;
  return 0;
}

int s3_lease_read(s3_client_t *c, const char *key, s3_lease_t *out, char **err)
{
  void *data = NULL;
  size_t len = 0;
  s3_object_info_t info;
  int r = s3_get(c, key, 0, 0, NULL, &data, &len, &info, err);
  if (r < 0)
    return r;
  s3_lease_t l;
  r = s3_lease_decode(data, len, &l);
  free(data);
  if (r < 0) {
    /* Still hand back the ETag: a caller may take an unreadable lease over
     * conditionally (see s3_lease_acquire). */
    memset(out, 0, sizeof *out);
    snprintf(out->etag, sizeof out->etag, "%s", info.etag);
    return s3_err(err, EBADMSG, "lease %s: not a lanes lease object (%zu bytes)", key, len);
  }
  snprintf(l.etag, sizeof l.etag, "%s", info.etag);
  *out = l;
  return 0;
}

/* Write lease l at key conditionally; on success l->etag is updated. */
static int lease_write(s3_client_t *c, const char *key, s3_lease_t *l,
                       const char *if_match, char **err)
{
  char *body = s3_lease_encode(l);
  if (!body)
    return s3_err(err, ENOMEM, "out of memory");
  s3_object_info_t info;
  int r = s3_put_cond(c, key, body, strlen(body), if_match, -1, &info, err);
  free(body);
  if (r == 0)
    snprintf(l->etag, sizeof l->etag, "%s", info.etag);
  return r;
}

int s3_lease_acquire(s3_client_t *c, const char *key, const char *holder,
                     int64_t ttl_ms, int64_t skew_ms, int64_t now_ms,
                     s3_lease_t *out, char **err)
{
  s3_lease_t cur, next = {0};
  char *e = NULL;
  int r;

  if (!valid_holder(holder))
    return s3_err(err, EINVAL, "lease %s: invalid holder id", key);
  if (ttl_ms <= 0 || skew_ms < 0)
    return s3_err(err, EINVAL, "lease %s: ttl must be > 0, skew >= 0", key);
  snprintf(next.holder, sizeof next.holder, "%s", holder);
  next.expires_ms = now_ms + ttl_ms;

  r = s3_lease_read(c, key, &cur, &e);
  if (r == -EBADMSG) {
    /* An unreadable lease (e.g. a store that kept a half-written PUT of a
     * writer killed mid-upload) proves nobody holds the lane: take it over
     * conditionally on its ETag, like an expired one. Its generation is
     * lost, so continue from the clock in ms — above any counter reached
     * by +1 steps — keeping generations monotonic; refs stay fenced by
     * their own ETags regardless. */
    free(e);
    e = NULL;
    next.generation = now_ms > 0 ? (uint64_t)now_ms : 1;
    r = lease_write(c, key, &next, cur.etag[0] ? cur.etag : NULL, &e);
    if (r == -ESTALE || r == -EEXIST) {
      free(e);
      return s3_err(err, EBUSY, "lease %s: another host took it over at the "
                    "same time; not acquired", key);
    }
  } else if (r == -ENOENT) {
    free(e);
    e = NULL;
    next.generation = 1;
    r = lease_write(c, key, &next, NULL, &e);
    if (r == -EEXIST) {
      free(e);
      return s3_err(err, EBUSY, "lease %s: another host created it at the "
                    "same time; not acquired", key);
    }
  } else if (r == 0) {
    int ours = strcmp(cur.holder, holder) == 0;
    int expired = cur.expires_ms + skew_ms < now_ms;
    if (!cur.released && !expired && !ours) {
      return s3_err(err, EBUSY, "lease %s: held by %s (generation %" PRIu64
                    ") for another %" PRId64 " ms", key, cur.holder,
                    cur.generation, cur.expires_ms + skew_ms - now_ms);
    }
    /* Take over (or re-take our own): a new generation fences out every
     * writer of the previous one, including an older process of ours. */
    next.generation = cur.generation + 1;
    r = lease_write(c, key, &next, cur.etag, &e);
    if (r == -ESTALE) {
      free(e);
      return s3_err(err, EBUSY, "lease %s: another host took it over at the "
                    "same time; not acquired", key);
    }
  }
  if (r < 0) {
    if (err && !*err) {
      *err = e;
      e = NULL;
    }
    free(e);
    return r;
  }
  free(e);
  *out = next;
  return 0;
}

int s3_lease_renew(s3_client_t *c, const char *key, s3_lease_t *lease,
                   int64_t ttl_ms, int64_t now_ms, char **err)
{
  s3_lease_t next = *lease;
  char *e = NULL;
  next.expires_ms = now_ms + ttl_ms;
  next.released = 0;
  int r = lease_write(c, key, &next, lease->etag, &e);
  if (r == -ESTALE) {
    free(e);
    return s3_err(err, ESTALE, "lease %s: lost (generation %" PRIu64 " was "
                  "taken over by another host); stop writing", key,
                  lease->generation);
  }
  if (r < 0) {
    if (err && !*err) {
      *err = e;
      e = NULL;
    }
    free(e);
    return r;
  }
  *lease = next;
  return 0;
}

int s3_lease_release(s3_client_t *c, const char *key, s3_lease_t *lease,
                     char **err)
{
  s3_lease_t next = *lease;
  char *e = NULL;
  next.released = 1;
  next.expires_ms = 0;
  int r = lease_write(c, key, &next, lease->etag, &e);
  if (r == -ESTALE) {
    free(e);
    return s3_err(err, ESTALE, "lease %s: already taken over; nothing to "
                  "release", key);
  }
  if (r < 0) {
    if (err && !*err) {
      *err = e;
      e = NULL;
    }
    free(e);
    return r;
  }
  *lease = next;
  return 0;
}

/* -ESTALE message naming the object's current fence (best effort HEAD). */
static int fenced_out(s3_client_t *c, const char *key, uint64_t token,
                      char **err)
{
  s3_object_info_t info;
  if (s3_head(c, key, &info, NULL) == 0 && info.fence >= 0)
    return s3_err(err, ESTALE, "fenced: %s was written by generation %" PRId64
                  " after us; our generation %" PRIu64 " may not commit",
                  key, info.fence, token);
  return s3_err(err, ESTALE, "fenced: %s changed since generation %" PRIu64
                " last wrote it; commit refused", key, token);
}

int s3_fence_claim(s3_client_t *c, const char *key, uint64_t token,
                   const void *init_body, size_t init_len,
                   char etag_out[S3_ETAG_MAX + 1], char **err)
{
  void *data = NULL;
  size_t len = 0;
  s3_object_info_t info;
  char *e = NULL;
  int r = s3_get(c, key, 0, 0, NULL, &data, &len, &info, &e);
  if (r == -ENOENT) {
    free(e);
    if (!init_body)
      return s3_err(err, ENOENT, "fence %s: no such object", key);
    r = s3_put_cond(c, key, init_body, init_len, NULL, (int64_t)token, &info, err);
    if (r == -EEXIST)
      return fenced_out(c, key, token, err);
    if (r == 0)
      snprintf(etag_out, S3_ETAG_MAX + 1, "%s", info.etag);
    return r;
  }
  if (r < 0) {
    if (err && !*err) {
      *err = e;
      e = NULL;
    }
    free(e);
    return r;
  }
  if (info.fence > (int64_t)token) {
    free(data);
    return s3_err(err, ESTALE, "fenced: %s belongs to generation %" PRId64
                  ", newer than ours (%" PRIu64 ")", key, info.fence, token);
  }
  char etag[S3_ETAG_MAX + 1];
  snprintf(etag, sizeof etag, "%s", info.etag);
  r = s3_put_cond(c, key, data, len, etag, (int64_t)token, &info, &e);
  free(data);
  if (r == -ESTALE) {
    free(e);
    return fenced_out(c, key, token, err);
  }
  if (r < 0) {
    if (err && !*err) {
      *err = e;
      e = NULL;
    }
    free(e);
    return r;
  }
  snprintf(etag_out, S3_ETAG_MAX + 1, "%s", info.etag);
  return 0;
}

int s3_fence_commit(s3_client_t *c, const char *key, uint64_t token,
                    const char *expect_etag, const void *body, size_t len,
                    char etag_out[S3_ETAG_MAX + 1], char **err)
{
  s3_object_info_t info;
  char *e = NULL;
  if (!expect_etag || !*expect_etag)
    return s3_err(err, EINVAL, "fence %s: commit without an ETag", key);
  int r = s3_put_cond(c, key, body, len, expect_etag, (int64_t)token, &info, &e);
  if (r == -ESTALE) {
    free(e);
    return fenced_out(c, key, token, err);
  }
  if (r < 0) {
    if (err && !*err) {
      *err = e;
      e = NULL;
    }
    free(e);
    return r;
  }
  snprintf(etag_out, S3_ETAG_MAX + 1, "%s", info.etag);
  return 0;
}
