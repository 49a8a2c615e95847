/* lanes S3 client — public interface of the lanes_s3 library.
 *
 * A small S3 client for the block store's S3 backend: objects are small
 * (at most a few MiB), so there is no multipart upload.  Requests are signed
 * with AWS Signature V4 (s3-sign.h; our own implementation, tested against
 * AWS's published vectors) and sent with libcurl.
 *
 *   - One client = one CURLSH holding the connection cache, DNS cache and
 *     TLS session cache, shared by every transfer the client makes, from any
 *     thread.  s3_batch() runs many requests over a curl_multi with at most
 *     max_parallel transfers in flight.
 *   - Retries: 5xx, 429, S3 error codes SlowDown/InternalError/
 *     ServiceUnavailable/RequestTimeout (also inside a 200 body), connection
 *     failures and resets, timeouts, short bodies and GET bodies whose SHA-256
 *     does not match the expected one are retried with exponential backoff
 *     and full jitter: the wait before attempt n+1 is uniform in
 *     [0, min(cap, base * 2^(n-1))].  Other 4xx are final.
 *   - A 2xx response whose body is an XML <Error> document is a failure.
 *   - Credentials come only from an AWS-style credentials file.  They never
 *     appear in a URL, a log line or an error message: every message is
 *     scrubbed of the access key id, secret key and session token.
 *
 * Errors: 0 (or a count) on success, a negative errno on failure, and where
 * `char **err` is taken a malloc'd message naming the operation, the object,
 * the HTTP status, the S3 error code and the number of attempts.  Mapping:
 *   -ENOENT  404 (NoSuchKey/NoSuchBucket)
 *   -EEXIST  412 on a PUT with If-None-Match: * (the object exists)
 *   -ESTALE  412 on a PUT with If-Match (the ETag moved on)
 *   -EBUSY   409 (e.g. ConditionalRequestConflict)
 *   -EACCES  401/403
 *   -EINVAL  other 4xx;  -ERANGE 416
 *   -EIO     retries exhausted (5xx, resets, short or corrupt bodies),
 *            a 2xx with an <Error> body, unparsable responses
 *   -ETIMEDOUT  retries exhausted and the last attempt timed out
 * Output parameters are left untouched on failure.  Nothing here logs.
 *
 * Threading: an s3_client_t may be used by several threads at once (the
 * share handle is locked internally).  A request array passed to s3_batch()
 * belongs to the calling thread until it returns.
 */
#ifndef LANES_BLOCKSTORE_S3_H
#define LANES_BLOCKSTORE_S3_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define S3_ETAG_MAX 128
#define S3_KEY_MAX 1024

typedef struct s3_client s3_client_t;

typedef enum s3_checksum {
  S3_CHECKSUM_MD5 = 0,     /* Content-MD5 (every S3 implementation) */
  S3_CHECKSUM_SHA256 = 1,  /* x-amz-checksum-sha256 (newer stores) */
  S3_CHECKSUM_BOTH = 2,
} s3_checksum_t;

typedef struct s3_config {
  const char *endpoint;          /* "http[s]://host[:port]", no path */
  const char *bucket;
  const char *region;            /* NULL = "us-east-1" */
  int path_style;                /* 1: host/bucket/key; 0: bucket.host/key */
  const char *credentials_file;  /* AWS-style INI; NULL = unsigned requests */
  const char *profile;           /* NULL = "default" */
  const char *resolve;           /* optional "host:port:addr" pin */
  const char *ca_file;           /* optional CA bundle for https */
  unsigned max_parallel;         /* transfers in flight per batch; 0 = 8 */
  unsigned max_attempts;         /* per request, first included; 0 = 6 */
  unsigned backoff_base_ms;      /* 0 = 100 */
  unsigned backoff_cap_ms;       /* 0 = 5000 */
  unsigned connect_timeout_ms;   /* 0 = 5000 */
  unsigned request_timeout_ms;   /* one attempt, whole transfer; 0 = 30000 */
  s3_checksum_t checksum;        /* PUT integrity header(s) */
} s3_config_t;

typedef enum s3_op {
  S3_OP_GET = 0,
  S3_OP_PUT,
  S3_OP_HEAD,
  S3_OP_DELETE,
} s3_op_t;

/* What the server said about an object. */
typedef struct s3_object_info {
  uint64_t size;                 /* object size (HEAD/GET; total for ranges) */
  char etag[S3_ETAG_MAX + 1];    /* as sent, quotes included; "" if none */
  int64_t fence;                 /* x-amz-meta-lanes-fence, -1 if absent */
} s3_object_info_t;

/* One request for s3_batch().  Fill the inputs (zero the struct first);
 * s3_batch() fills the outputs. */
typedef struct s3_request {
  /* inputs */
  s3_op_t op;
  const char *key;               /* object key (not URL-encoded) */
  const void *body;              /* PUT body (may be NULL when body_len 0) */
  size_t body_len;
  const char *if_match;          /* PUT: If-Match (an ETag), or NULL */
  int if_none_match;             /* PUT: If-None-Match: * */
  int64_t fence;                 /* PUT: >= 0 sets x-amz-meta-lanes-fence */
  uint64_t range_off;            /* GET: first byte */
  uint64_t range_len;            /* GET: bytes; 0 = the whole object */
  void *buf;                     /* GET: caller's buffer of cap bytes, or */
  size_t cap;                    /*   NULL: a malloc'd buffer in data */
  const uint8_t *expect_sha256;  /* GET: 32 bytes the body must hash to */
  /* outputs */
  int result;                    /* 0 or negative errno */
  char *error;                   /* malloc'd message when result < 0 */
  void *data;                    /* GET into NULL buf: malloc'd body */
  size_t len;                    /* GET: body bytes received */
  unsigned attempts;             /* attempts made */
  long http_status;              /* last HTTP status (0: no response) */
  s3_object_info_t info;
} s3_request_t;

/* One entry of a listing. */
typedef struct s3_list_entry {
  const char *key;
  uint64_t size;
  const char *etag;
  int64_t mtime_ms;              /* LastModified (ms since epoch), -1 if absent */
} s3_list_entry_t;
typedef int (*s3_list_cb)(const s3_list_entry_t *e, void *ud);

/* ---- client ---- */
/* Validate cfg, read the credentials and set up the shared handles.  The
 * strings in cfg are copied. */
int s3_client_new(const s3_config_t *cfg, s3_client_t **out, char **err);
void s3_client_free(s3_client_t *c);
/* Connections opened so far (to show reuse in tests and benchmarks). */
uint64_t s3_client_connections(s3_client_t *c);
/* Total attempts, retries included, made by the client so far. */
uint64_t s3_client_attempts(s3_client_t *c);

/* ---- requests ---- */
/* Run n requests, at most max_parallel at a time.  Returns 0 if all
 * succeeded, else the result of the first failed request (in array order),
 * with its message copied to *err.  Each request's outputs are set either
 * way; release them with s3_request_clear(). */
int s3_batch(s3_client_t *c, s3_request_t *reqs, size_t n, char **err);
void s3_request_clear(s3_request_t *r);

/* Single-request conveniences over s3_batch(). */
int s3_put(s3_client_t *c, const char *key, const void *body, size_t len,
           s3_object_info_t *info, char **err);
/* Conditional PUT: if_match = ETag (If-Match) or NULL for If-None-Match: *;
 * fence >= 0 is stored as the object's lanes-fence metadata. */
int s3_put_cond(s3_client_t *c, const char *key, const void *body,
                size_t len, const char *if_match, int64_t fence,
                s3_object_info_t *info, char **err);
/* GET the whole object (range_len 0) or a range into a malloc'd buffer.
 * expect_sha256 (32 bytes, whole-object GETs only) is verified. */
int s3_get(s3_client_t *c, const char *key, uint64_t range_off,
           uint64_t range_len, const uint8_t *expect_sha256, void **data,
           size_t *len, s3_object_info_t *info, char **err);
int s3_head(s3_client_t *c, const char *key, s3_object_info_t *info,
            char **err);
/* Deleting a missing object succeeds (S3 semantics). */
int s3_delete(s3_client_t *c, const char *key, char **err);
/* ListObjectsV2 over every page; page_size 0 = server default (1000).
 * Returns the number of entries passed to cb or a negative errno; cb
 * returning nonzero stops the listing. */
int s3_list(s3_client_t *c, const char *prefix, unsigned page_size,
            s3_list_cb cb, void *ud, char **err);
/* Create the client's bucket; an existing bucket we own is not an error. */
int s3_bucket_create(s3_client_t *c, char **err);

/* Does the store enforce conditional PUTs?  Writes probe_key twice with
 * If-None-Match: * (deleting it first and afterwards): a store that accepts
 * the second write does not enforce them.  *enforced = 1 / 0. */
int s3_probe_conditional(s3_client_t *c, const char *probe_key,
                         int *enforced, char **err);

/* ---- helpers ---- */
/* Wall clock in milliseconds since the epoch. */
int64_t s3_now_ms(void);

#ifdef __cplusplus
}
#endif
#endif
