/* lanes S3 client — the few S3 XML documents the client reads, with expat.
 *
 * Only element local names and text matter here: <Error> (Code, Message,
 * RequestId) and <ListBucketResult> (IsTruncated, NextContinuationToken,
 * Contents/Key, Contents/Size, Contents/ETag).  Bodies come from the network
 * and are treated as hostile: text is bounded (S3_XML_TEXT_MAX), depth is
 * bounded, expat does not load external entities and limits entity
 * amplification.
 *
 * Threading: reentrant (one parser per call).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <expat.h>

#include "s3-internal.h"

#define S3_XML_TEXT_MAX 4096
#define S3_XML_DEPTH_MAX 16

struct xml_state {
  XML_Parser p;
  int depth;
  char path[S3_XML_DEPTH_MAX][32];   /* local names, truncated */
  s3_buf_t text;
  int text_overflow;
  int root_ok;
  int failed;                        /* -errno set by a handler */
  /* Error */
  s3_xml_error_t *err;
  /* ListBucketResult */
  s3_xml_list_t *list;
  s3_xml_list_cb cb;
  void *ud;
  char *key, *etag;
  uint64_t size;
  int64_t mtime_ms;                  /* LastModified, -1 if absent */
};

static const char *local_name(const char *n)
{
  const char *c = strrchr(n, ':');
  return c ? c + 1 : n;
}

static void xml_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
  struct xml_state *s = ud;
  (void)attrs;
  if (s->depth >= S3_XML_DEPTH_MAX) {
    s->failed = -EBADMSG;
    XML_StopParser(s->p, XML_FALSE);
    return;
  }
  snprintf(s->path[s->depth], sizeof s->path[0], "%s", local_name(name));
  if (s->depth == 0) {
    const char *want = s->err ? "Error" : "ListBucketResult";
    s->root_ok = strcmp(s->path[0], want) == 0;
    if (!s->root_ok) {
      XML_StopParser(s->p, XML_FALSE);
      return;
    }
  }
  if (s->list && s->depth == 1 && strcmp(s->path[1], "Contents") == 0) {
    free(s->key);
    free(s->etag);
    s->key = s->etag = NULL;
    s->size = 0;
    s->mtime_ms = -1;
  }
  s->depth++;
  s->text.len = 0;
  s->text_overflow = 0;
}

static void xml_text(void *ud, const XML_Char *t, int len)
{
  struct xml_state *s = ud;
  if (s->text.len + (size_t)len > S3_XML_TEXT_MAX) {
    s->text_overflow = 1;
    return;
  }
  s3_buf_append(&s->text, t, (size_t)len);
}

static char *text_dup(struct xml_state *s)
{
  if (s->text_overflow || s->text.oom)
    return NULL;
  char *r = malloc(s->text.len + 1);
  if (!r)
    return NULL;
  memcpy(r, s->text.data ? s->text.data : "", s->text.len);
  r[s->text.len] = '\0';
  return r;
}

/* "2024-01-02T03:04:05.678Z" -> ms since the epoch; -1 if malformed. */
int64_t s3_parse_iso8601_ms(const char *t)
{
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  int ms = 0;
  const char *p = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm);
  if (!p)
    return -1;
  if (*p == '.') {
    int scale = 100;
    for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
      ms += (*p - '0') * scale;
  }
  if (*p != 'Z' && *p != '\0')
    return -1;
  return (int64_t)timegm(&tm) * 1000 + ms;
}

static void set_field(char **slot, char *v)
{
  free(*slot);
  *slot = v;
}

static void xml_end(void *ud, const XML_Char *name)
{
  struct xml_state *s = ud;
  (void)name;
  if (s->depth == 0)
    return;
  s->depth--;
  const char *el = s->path[s->depth];
  if (s->err && s->depth == 1) {
    if (strcmp(el, "Code") == 0)
      set_field(&s->err->code, text_dup(s));
    else if (strcmp(el, "Message") == 0)
      set_field(&s->err->message, text_dup(s));
    else if (strcmp(el, "RequestId") == 0)
      set_field(&s->err->request_id, text_dup(s));
  } else if (s->list && s->depth == 1) {
    if (strcmp(el, "IsTruncated") == 0) {
      s->list->truncated = s->text.len == 4 && memcmp(s->text.data, "true", 4) == 0;
    } else if (strcmp(el, "NextContinuationToken") == 0) {
      set_field(&s->list->next_token, text_dup(s));
    } else if (strcmp(el, "Contents") == 0) {
      if (!s->key) {
        s->failed = -EBADMSG;
        XML_StopParser(s->p, XML_FALSE);
        return;
      }
      s->list->count++;
      if (s->cb && s->cb(s->key, s->size, s->etag ? s->etag : "",
                         s->mtime_ms, s->ud)) {
        s->failed = -ECANCELED;
        XML_StopParser(s->p, XML_FALSE);
      }
    }
  } else if (s->list && s->depth == 2 && strcmp(s->path[1], "Contents") == 0) {
    if (strcmp(el, "Key") == 0) {
      set_field(&s->key, text_dup(s));
    } else if (strcmp(el, "ETag") == 0) {
      set_field(&s->etag, text_dup(s));
    } else if (strcmp(el, "Size") == 0) {
      char *t = text_dup(s), *e;
      s->size = t ? strtoull(t, &e, 10) : 0;
      free(t);
    } else if (strcmp(el, "LastModified") == 0) {
      char *t = text_dup(s);
      s->mtime_ms = t ? s3_parse_iso8601_ms(t) : -1;
      free(t);
    }
  }
  s->text.len = 0;
}

static int xml_run(struct xml_state *s, const char *body, size_t len)
{
  s->p = XML_ParserCreate(NULL);
  if (!s->p)
    return -ENOMEM;
  XML_SetUserData(s->p, s);
  XML_SetElementHandler(s->p, xml_start, xml_end);
  XML_SetCharacterDataHandler(s->p, xml_text);
  enum XML_Status st = XML_Parse(s->p, body, (int)len, XML_TRUE);
  int r = 0;
  if (s->failed)
    r = s->failed;
  else if (!s->root_ok)
    r = -EBADMSG;
  else if (st != XML_STATUS_OK)
    r = -EBADMSG;
  XML_ParserFree(s->p);
  free(s->text.data);
  return r;
}

void s3_xml_error_clear(s3_xml_error_t *e)
{
  if (!e)
    return;
  free(e->code);
  free(e->message);
  free(e->request_id);
  e->code = e->message = e->request_id = NULL;
}

int s3_xml_parse_error(const char *body, size_t len, s3_xml_error_t *out)
{
  s3_xml_error_t e = {0};
  struct xml_state s = {.err = &e};
  /* Cheap pre-check: an object body that merely is big is not parsed. */
  if (!body || len == 0 || len > 64 * 1024 || !memmem(body, len, "<Error", 6))
    return 0;
  int r = xml_run(&s, body, len);
  if (r == 0 && e.code) {
    *out = e;
    return 1;
  }
  s3_xml_error_clear(&e);
  return r == -ENOMEM ? r : 0;
}

int s3_xml_parse_list(const char *body, size_t len, s3_xml_list_cb cb,
                      void *ud, s3_xml_list_t *out)
{
  s3_xml_list_t l = {0};
  struct xml_state s = {.list = &l, .cb = cb, .ud = ud};
  if (!body || len > INT32_MAX)
    return -EBADMSG;
  int r = xml_run(&s, body, len);
  free(s.key);
  free(s.etag);
  if (r < 0) {
    free(l.next_token);
    return r;
  }
  *out = l;
  return 0;
}
