/* lanes S3 client — leases and fencing tokens over conditional PUTs.
 *
 * One host at a time may write a lane.  The lease is a small JSON object
 * (key chosen by the caller, e.g. PREFIX/lanes/NAME/lease):
 *
 *   {"lanes_lease":1,"holder":"host-a","generation":7,
 *    "expires_ms":1700000000000,"released":false}
 *
 *   acquire  GET it.  Missing: create it with If-None-Match: * (generation
 *            1).  Present and released, expired (expires_ms + skew_ms < now)
 *            or ours: overwrite it with If-Match: <its ETag> and
 *            generation + 1.  Otherwise -EBUSY naming the holder.  A 412 on
 *            either write means another host won the race: -EBUSY.
 *   renew    overwrite with If-Match: <our last ETag>, same generation, new
 *            expiry; 412 = the lease was taken over: -ESTALE, stop writing.
 *   release  same, with released = true (the object stays, so generations
 *            keep increasing across holders).
 *
 * The generation is the fencing token.  Objects a lease protects (a lane's
 * ref/manifest pointer) carry the token of their last writer as metadata
 * (x-amz-meta-lanes-fence) and are only ever written with If-Match on the
 * ETag the writer last saw:
 *
 *   s3_fence_claim   a new holder's first write: refused (-ESTALE) if the
 *                    object's fence is above our token; otherwise rewrites it
 *                    with our token, which changes its ETag, so every older
 *                    writer's next If-Match commit fails.
 *   s3_fence_commit  a commit: If-Match on our last ETag; a 412 means
 *                    someone claimed or committed after us: -ESTALE with the
 *                    current fence in the message.
 *
 * All of this is only safe on a store that enforces If-None-Match / If-Match
 * on PUT: check with s3_probe_conditional() first (s3rver does not).
 *
 * Times are wall-clock milliseconds passed in by the caller (s3_now_ms() in
 * production, fixed values in tests).  Threading: as the client.
 */
#ifndef LANES_BLOCKSTORE_S3_LEASE_H
#define LANES_BLOCKSTORE_S3_LEASE_H

#include <stddef.h>
#include <stdint.h>

#include "s3.h"

#define S3_HOLDER_MAX 128

typedef struct s3_lease {
  char holder[S3_HOLDER_MAX + 1];
  uint64_t generation;             /* the fencing token */
  int64_t expires_ms;
  int released;
  char etag[S3_ETAG_MAX + 1];      /* of the lease object we last wrote/read */
} s3_lease_t;

/* JSON body of a lease (malloc'd) / parse one (-EBADMSG if malformed). */
char *s3_lease_encode(const s3_lease_t *l);
int s3_lease_decode(const char *body, size_t len, s3_lease_t *out);

/* Read the lease at key (-ENOENT if none). */
int s3_lease_read(s3_client_t *c, const char *key, s3_lease_t *out, char **err);
int s3_lease_acquire(s3_client_t *c, const char *key, const char *holder,
                     int64_t ttl_ms, int64_t skew_ms, int64_t now_ms,
                     s3_lease_t *out, char **err);
int s3_lease_renew(s3_client_t *c, const char *key, s3_lease_t *lease,
                   int64_t ttl_ms, int64_t now_ms, char **err);
int s3_lease_release(s3_client_t *c, const char *key, s3_lease_t *lease,
                     char **err);

/* Claim the fenced object at key for token.  If it does not exist it is
 * created from init_body (NULL = -ENOENT).  On success etag_out = the ETag
 * to pass to the first s3_fence_commit(). */
int s3_fence_claim(s3_client_t *c, const char *key, uint64_t token,
                   const void *init_body, size_t init_len,
                   char etag_out[S3_ETAG_MAX + 1], char **err);
/* Replace the fenced object if it is still at expect_etag; etag_out (may
 * alias expect_etag) gets the new ETag.  -ESTALE when fenced out. */
int s3_fence_commit(s3_client_t *c, const char *key, uint64_t token,
                    const char *expect_etag, const void *body, size_t len,
                    char etag_out[S3_ETAG_MAX + 1], char **err);

#endif
