/* lanes S3 client — AWS Signature Version 4 and credentials.
 *
 * Pure functions (no I/O except s3_credentials_load): the client builds a
 * canonical request from exactly the method, path, query and headers it
 * sends, so what is signed is what goes on the wire.  Exposed for the unit
 * tests, which check them against AWS's published SigV4 examples.
 *
 * Credentials are kept in one struct that is wiped (explicit_bzero) when
 * freed; s3_scrub() removes any of its strings from a message.
 *
 * Threading: all functions are reentrant.
 */
#ifndef LANES_BLOCKSTORE_S3_SIGN_H
#define LANES_BLOCKSTORE_S3_SIGN_H

#include <stddef.h>
#include <stdint.h>

#define S3_SHA256_HEX_LEN 64
#define S3_AMZ_DATE_LEN 16           /* "YYYYMMDDTHHMMSSZ" */

typedef struct s3_credentials {
  char *access_key;
  char *secret_key;
  char *session_token;               /* NULL if none */
} s3_credentials_t;

typedef struct s3_header {
  const char *name;                  /* any case */
  const char *value;
} s3_header_t;

typedef struct s3_sign_input {
  const char *method;                /* "GET", "PUT", ... */
  const char *canonical_uri;         /* URI-encoded path, "/" if empty */
  const char *canonical_query;       /* sorted, encoded; "" if none */
  const s3_header_t *headers;        /* every header to sign (host too) */
  size_t nheaders;
  const char *payload_hash;          /* hex SHA-256 of the body */
  const char *amz_date;              /* S3_AMZ_DATE_LEN chars */
  const char *region;
  const char *service;               /* "s3" */
} s3_sign_input_t;

/* Read profile (NULL = "default") from an AWS-style credentials file.
 * Sections "[name]" and "[profile name]" are both accepted.  The file must
 * be a regular file not readable or writable by others (like ssh keys).
 * Messages name the file and profile, never a value. */
int s3_credentials_load(const char *path, const char *profile,
                        s3_credentials_t *out, char **err);
void s3_credentials_clear(s3_credentials_t *c);
/* Replace every occurrence of a credential string in msg (in place,
 * shrinking) by "[REDACTED]"-style text; msg stays NUL-terminated.  The
 * replacement is never longer than what it replaces. */
void s3_scrub(const s3_credentials_t *c, char *msg);

/* Lowercase hex SHA-256 of buf. */
void s3_sha256_hex(const void *buf, size_t len,
                   char hex[S3_SHA256_HEX_LEN + 1]);
/* "YYYYMMDDTHHMMSSZ" for unix time t (UTC). */
void s3_amz_date(int64_t t, char out[S3_AMZ_DATE_LEN + 1]);
/* RFC 3986 encoding as SigV4 wants it: unreserved A-Za-z0-9-_.~ kept, '/'
 * kept when keep_slash, everything else %XX (uppercase).  malloc'd. */
char *s3_uri_encode(const char *s, int keep_slash);

/* Canonical request, string to sign and Authorization header value for in,
 * each malloc'd (pass NULL for the ones not wanted).  -EINVAL on bad input
 * (e.g. header names with illegal characters), -ENOMEM. */
int s3_sign(const s3_sign_input_t *in, const s3_credentials_t *cred,
            char **canonical_request, char **string_to_sign,
            char **authorization);
/* The signing key HMAC chain (exposed for the test vectors). */
void s3_signing_key(const char *secret, const char *date8,
                    const char *region, const char *service,
                    uint8_t key[32]);

#endif
