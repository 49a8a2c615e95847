/* lanes S3 client — AWS Signature Version 4 and the credentials file.
 *
 * SigV4 in four steps: canonical request (method, encoded path, sorted
 * encoded query, lowercased sorted headers with trimmed values, the list of
 * signed header names, the payload hash); string to sign (algorithm, date,
 * scope, hash of the canonical request); signing key (HMAC chain over date,
 * region, service, "aws4_request" starting from "AWS4"+secret); signature =
 * HMAC(signing key, string to sign).  S3 encodes the path once (no double
 * encoding) and keeps '/'.
 *
 * Threading: reentrant; no shared state.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "s3-sign.h"
#include "s3-internal.h"

static const char hexdig[] = "0123456789abcdef";

static void hex_encode(const uint8_t *b, size_t n, char *out)
{
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hexdig[b[i] >> 4];
    out[2 * i + 1] = hexdig[b[i] & 15];
  }
  out[2 * n] = '\0';
}

void s3_sha256_hex(const void *buf, size_t len, char hex[S3_SHA256_HEX_LEN + 1])
{
  uint8_t md[32];
  SHA256(buf, len, md);
  hex_encode(md, 32, hex);
}

void s3_amz_date(int64_t t, char out[S3_AMZ_DATE_LEN + 1])
{
  time_t tt = (time_t)t;
  struct tm tm;
  gmtime_r(&tt, &tm);
  strftime(out, S3_AMZ_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm);
}

char *s3_uri_encode(const char *s, int keep_slash)
{
  size_t n = strlen(s);
  char *out = malloc(3 * n + 1), *p = out;
  if (!out)
    return NULL;
  for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
    if (isalnum(*q) || *q == '-' || *q == '_' || *q == '.' || *q == '~' ||
        (keep_slash && *q == '/')) {
      *p++ = (char)*q;
    } else {
      *p++ = '%';
      *p++ = "0123456789ABCDEF"[*q >> 4];
      *p++ = "0123456789ABCDEF"[*q & 15];
    }
  }
  *p = '\0';
  return out;
}

static void hmac256(const void *key, size_t klen, const void *msg, size_t mlen,
                    uint8_t out[32])
{
  unsigned int olen = 32;
  HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &olen);
}

void s3_signing_key(const char *secret, const char *date8, const char *region,
                    const char *service, uint8_t key[32])
{
  size_t slen = strlen(secret);
  char *k0 = malloc(slen + 5);
  uint8_t a[32], b[32];
  if (!k0) {
    memset(key, 0, 32);
    return;
  }
  memcpy(k0, "AWS4", 4);
  memcpy(k0 + 4, secret, slen + 1);
  hmac256(k0, slen + 4, date8, strlen(date8), a);
  hmac256(a, 32, region, strlen(region), b);
  hmac256(b, 32, service, strlen(service), a);
  hmac256(a, 32, "aws4_request", 12, key);
  explicit_bzero(k0, slen + 4);
  explicit_bzero(a, sizeof a);
  explicit_bzero(b, sizeof b);
  free(k0);
}

/* A header prepared for signing: lowercased name, canonical value. */
struct canon_hdr {
  char *name;
  char *value;
  size_t order;
};

static int canon_hdr_cmp(const void *a, const void *b)
{
  const struct canon_hdr *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  if (c)
    return c;
  return x->order < y->order ? -1 : x->order > y->order;
}

/* Trim and collapse runs of spaces/tabs to one space. */
static char *canon_value(const char *v)
{
  char *out = malloc(strlen(v) + 1), *p = out;
  if (!out)
    return NULL;
  int space = 0;
  while (*v == ' ' || *v == '\t')
    v++;
  for (; *v; v++) {
    if (*v == ' ' || *v == '\t') {
      space = 1;
      continue;
    }
    if (space && p != out)
      *p++ = ' ';
    space = 0;
    *p++ = *v;
  }
  *p = '\0';
  return out;
}

int s3_sign(const s3_sign_input_t *in, const s3_credentials_t *cred,
            char **canonical_request, char **string_to_sign,
            char **authorization)
{
  int r = -ENOMEM;
  struct canon_hdr *h = calloc(in->nheaders ? in->nheaders : 1, sizeof *h);
  s3_buf_t cr = {0}, sh = {0}, sts = {0}, auth = {0};
  if (!h)
    return -ENOMEM;
  if (strlen(in->amz_date) != S3_AMZ_DATE_LEN ||
      strlen(in->payload_hash) != S3_SHA256_HEX_LEN) {
    r = -EINVAL;
    goto out;
  }
  for (size_t i = 0; i < in->nheaders; i++) {
    const char *n = in->headers[i].name;
    if (!*n) {
      r = -EINVAL;
      goto out;
    }
    h[i].order = i;
    if (!(h[i].name = strdup(n)) || !(h[i].value = canon_value(in->headers[i].value)))
      goto out;
    for (char *p = h[i].name; *p; p++) {
      if (*p <= ' ' || *p == ':' || (unsigned char)*p >= 127) {
        r = -EINVAL;
        goto out;
      }
      *p = (char)tolower((unsigned char)*p);
    }
  }
  qsort(h, in->nheaders, sizeof *h, canon_hdr_cmp);

  /* canonical headers (duplicates joined with ',') and signed headers */
  s3_buf_printf(&cr, "%s\n%s\n%s\n", in->method,
                *in->canonical_uri ? in->canonical_uri : "/",
                in->canonical_query);
  for (size_t i = 0; i < in->nheaders; i++) {
    if (i > 0 && strcmp(h[i].name, h[i - 1].name) == 0) {
      cr.len--;                        /* drop the '\n' and append */
      s3_buf_printf(&cr, ",%s\n", h[i].value);
      continue;
    }
    s3_buf_printf(&cr, "%s:%s\n", h[i].name, h[i].value);
    s3_buf_printf(&sh, "%s%s", sh.len ? ";" : "", h[i].name);
  }
  s3_buf_printf(&cr, "\n%s\n%s", sh.len ? sh.data : "", in->payload_hash);
  if (cr.oom || sh.oom)
    goto out;

  char date8[9], crhash[S3_SHA256_HEX_LEN + 1];
  memcpy(date8, in->amz_date, 8);
  date8[8] = '\0';
  s3_sha256_hex(cr.data, cr.len, crhash);
  s3_buf_printf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s",
                in->amz_date, date8, in->region, in->service, crhash);
  if (sts.oom)
    goto out;

  if (authorization) {
    uint8_t key[32], sig[32];
    char sighex[65];
    s3_signing_key(cred->secret_key, date8, in->region, in->service, key);
    hmac256(key, 32, sts.data, sts.len, sig);
    explicit_bzero(key, sizeof key);
    hex_encode(sig, 32, sighex);
    s3_buf_printf(&auth,
                  "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, "
                  "SignedHeaders=%s, Signature=%s",
                  cred->access_key, date8, in->region, in->service,
                  sh.len ? sh.data : "", sighex);
    if (auth.oom)
      goto out;
  }
  if (canonical_request) {
    *canonical_request = cr.data;
    cr.data = NULL;
  }
  if (string_to_sign) {
    *string_to_sign = sts.data;
    sts.data = NULL;
  }
  if (authorization) {
    *authorization = auth.data;
    auth.data = NULL;
  }
  r = 0;
out:
  for (size_t i = 0; i < in->nheaders; i++) {
    free(h[i].name);
    free(h[i].value);
  }
  free(h);
  free(cr.data);
  free(sh.data);
  free(sts.data);
  free(auth.data);
  return r;
}

/* ---- credentials file ---- */

static char *trim(char *s)
{
  while (*s == ' ' || *s == '\t')
    s++;
  char *e = s + strlen(s);
  while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' ||
                   e[-1] == '\n'))
    *--e = '\0';
  return s;
}

static void wipe_free(char *s)
{
  if (s) {
    explicit_bzero(s, strlen(s));
    free(s);
  }
}

void s3_credentials_clear(s3_credentials_t *c)
{
  if (!c)
    return;
  wipe_free(c->access_key);
  wipe_free(c->secret_key);
  wipe_free(c->session_token);
  c->access_key = c->secret_key = c->session_token = NULL;
}

int s3_credentials_load(const char *path, const char *profile,
                        s3_credentials_t *out, char **err)
{
  s3_credentials_t c = {0};
  struct stat st;
  char *line = NULL;
  size_t cap = 0;
  int r, in_section = 0, found = 0;

  if (!profile || !*profile)
    profile = "default";
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd == -1)
    return s3_err(err, errno, "credentials file %s: %m", path);
  if (fstat(fd, &st) == -1) {
    r = s3_err(err, errno, "credentials file %s: %m", path);
    close(fd);
    return r;
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return s3_err(err, EINVAL, "credentials file %s: not a regular file", path);
  }
  if (st.st_mode & (S_IROTH | S_IWOTH | S_IWGRP)) {
    close(fd);
    return s3_err(err, EPERM,
                  "credentials file %s: readable or writable by others "
                  "(mode %03o); chmod 600 it", path,
                  (unsigned)(st.st_mode & 0777));
  }
  FILE *f = fdopen(fd, "r");
  if (!f) {
    r = s3_err(err, errno, "credentials file %s: %m", path);
    close(fd);
    return r;
  }
  while (getline(&line, &cap, f) != -1) {
    char *s = trim(line);
    if (!*s || *s == '#' || *s == ';')
      continue;
    if (*s == '[') {
      char *e = strchr(s, ']');
      if (!e)
        continue;
      *e = '\0';
      char *name = trim(s + 1);
      if (strncmp(name, "profile ", 8) == 0)
        name = trim(name + 8);
      in_section = strcmp(name, profile) == 0;
      found |= in_section;
      continue;
    }
    if (!in_section)
      continue;
    char *eq = strchr(s, '=');
    if (!eq)
      continue;
    *eq = '\0';
    char *k = trim(s), *v = trim(eq + 1);
    char **slot = NULL;
    if (strcmp(k, "aws_access_key_id") == 0)
      slot = &c.access_key;
    else if (strcmp(k, "aws_secret_access_key") == 0)
      slot = &c.secret_key;
    else if (strcmp(k, "aws_session_token") == 0)
      slot = &c.session_token;
    if (slot && *v) {
      wipe_free(*slot);
      if (!(*slot = strdup(v))) {
        r = s3_err(err, ENOMEM, "out of memory");
        goto fail;
      }
    }
  }
  if (ferror(f)) {
    r = s3_err(err, EIO, "credentials file %s: read error", path);
    goto fail;
  }
  if (!found) {
    r = s3_err(err, ENOENT, "credentials file %s: no profile [%s]", path,
               profile);
    goto fail;
  }
  if (!c.access_key || !c.secret_key) {
    r = s3_err(err, EINVAL,
               "credentials file %s: profile [%s] lacks aws_access_key_id or "
               "aws_secret_access_key", path, profile);
    goto fail;
  }
  if (line) {
    explicit_bzero(line, cap);
    free(line);
  }
  fclose(f);
  *out = c;
  return 0;
fail:
  if (line) {
    explicit_bzero(line, cap);
    free(line);
  }
  fclose(f);
  s3_credentials_clear(&c);
  return r;
}

/* Replace each occurrence of secret in msg by a marker no longer than it. */
static void scrub_one(char *msg, const char *secret)
{
  static const char mark[] = "[REDACTED]";
  size_t sl = secret ? strlen(secret) : 0;
  if (sl < 4)          /* too short to search for without mangling text */
    return;
  size_t ml = sl < sizeof mark - 1 ? sl : sizeof mark - 1;
  char *p;
  while ((p = strstr(msg, secret))) {
    memcpy(p, sl >= sizeof mark - 1 ? mark : "********************", ml);
    memmove(p + ml, p + sl, strlen(p + sl) + 1);
  }
}

void s3_scrub(const s3_credentials_t *c, char *msg)
{
  if (!c || !msg)
    return;
  scrub_one(msg, c->secret_key);
  scrub_one(msg, c->session_token);
  scrub_one(msg, c->access_key);
}
