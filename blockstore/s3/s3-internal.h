/* lanes S3 client — internal helpers shared by the library's modules.
 *
 *   s3-sign.c    SigV4, credentials file, scrubbing
 *   s3-xml.c     the few S3 XML documents we read (Error, ListBucketResult)
 *   s3-client.c  requests over libcurl: signing, retries, parallel batches
 *   s3-lease.c   lease objects and fencing tokens over conditional PUTs
 *
 * Not installed; tests include it for the XML parser.
 */
#ifndef LANES_BLOCKSTORE_S3_INTERNAL_H
#define LANES_BLOCKSTORE_S3_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Growable byte buffer; oom is sticky (later appends are no-ops). */
typedef struct s3_buf {
  char *data;
  size_t len, cap;
  int oom;
} s3_buf_t;

int s3_buf_append(s3_buf_t *b, const void *p, size_t n);
int s3_buf_printf(s3_buf_t *b, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));

/* Set *err (if err and not yet set) and return -errnum; %m = errnum. */
int s3_err(char **err, int errnum, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

/* An S3 <Error> document's fields (each malloc'd or NULL). */
typedef struct s3_xml_error {
  char *code;
  char *message;
  char *request_id;
} s3_xml_error_t;

/* 1 if body is an <Error> document (fields filled), 0 if it is some other
 * XML or not XML, negative errno on allocation failure. */
int s3_xml_parse_error(const char *body, size_t len, s3_xml_error_t *out);
void s3_xml_error_clear(s3_xml_error_t *e);

/* ListObjectsV2 result: entries are delivered through cb as parsed. */
typedef struct s3_xml_list {
  int truncated;
  char *next_token;                  /* NextContinuationToken or NULL */
  unsigned count;
} s3_xml_list_t;
typedef int (*s3_xml_list_cb)(const char *key, uint64_t size,
                              const char *etag, int64_t mtime_ms, void *ud);
/* ISO 8601 UTC timestamp as S3 lists them -> ms since the epoch, -1 if
 * malformed. */
int64_t s3_parse_iso8601_ms(const char *t);
/* 0 on success; -EBADMSG if body is not a ListBucketResult; -ECANCELED if
 * cb asked to stop. */
int s3_xml_parse_list(const char *body, size_t len, s3_xml_list_cb cb,
                      void *ud, s3_xml_list_t *out);

#endif
