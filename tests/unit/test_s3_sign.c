/* Unit tests for blockstore/s3/s3-sign.c: SigV4 against AWS's published
 * examples (inputs rebuilt from the SigV4 and S3 documentation: the generic
 * "vanilla" suite with the AKIDEXAMPLE key, and the S3 header-auth examples
 * with the AKIAIOSFODNN7EXAMPLE key), canonicalization rules, URI encoding,
 * the credentials file (profiles, permissions) and scrubbing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "s3-sign.h"

#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static const s3_credentials_t suite_cred = {
  .access_key = "AKIDEXAMPLE",
  .secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
};
static const s3_credentials_t s3doc_cred = {
  .access_key = "AKIAIOSFODNN7EXAMPLE",
  .secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
};

struct vector {
  const char *name;
  const s3_credentials_t *cred;
  const char *method, *uri, *query, *service, *date, *payload;
  s3_header_t hdr[6];
  size_t nhdr;
  const char *signed_headers;
  const char *signature;
};

static const struct vector vectors[] = {
  {"get-vanilla", &suite_cred, "GET", "/", "", "service", "20150830T123600Z",
   EMPTY_SHA,
   {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}}, 2,
   "host;x-amz-date",
   "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
  {"get-vanilla-query-order-key-case", &suite_cred, "GET", "/",
   "Param1=value1&Param2=value2", "service", "20150830T123600Z", EMPTY_SHA,
   {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}}, 2,
   "host;x-amz-date",
   "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
  {"post-vanilla", &suite_cred, "POST", "/", "", "service", "20150830T123600Z",
   EMPTY_SHA,
   {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}}, 2,
   "host;x-amz-date",
   "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
  /* S3 examples: GET with Range, PUT with storage class, bucket lifecycle
   * subresource, ListObjects with query parameters. */
  {"s3-get-object-range", &s3doc_cred, "GET", "/test.txt", "", "s3",
   "20130524T000000Z", EMPTY_SHA,
   {{"Host", "examplebucket.s3.amazonaws.com"}, {"Range", "bytes=0-9"},
    {"x-amz-content-sha256", EMPTY_SHA}, {"x-amz-date", "20130524T000000Z"}}, 4,
   "host;range;x-amz-content-sha256;x-amz-date",
   "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"},
  {"s3-put-object", &s3doc_cred, "PUT", "/test%24file.text", "", "s3",
   "20130524T000000Z",
   "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
   {{"Host", "examplebucket.s3.amazonaws.com"},
    {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
    {"x-amz-date", "20130524T000000Z"},
    {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
    {"x-amz-content-sha256",
     "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"}}, 5,
   "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
   "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"},
  {"s3-get-bucket-lifecycle", &s3doc_cred, "GET", "/", "lifecycle=", "s3",
   "20130524T000000Z", EMPTY_SHA,
   {{"Host", "examplebucket.s3.amazonaws.com"},
    {"x-amz-date", "20130524T000000Z"}, {"x-amz-content-sha256", EMPTY_SHA}}, 3,
   "host;x-amz-content-sha256;x-amz-date",
   "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"},
  {"s3-list-objects", &s3doc_cred, "GET", "/", "max-keys=2&prefix=J", "s3",
   "20130524T000000Z", EMPTY_SHA,
   {{"Host", "examplebucket.s3.amazonaws.com"},
    {"x-amz-date", "20130524T000000Z"}, {"x-amz-content-sha256", EMPTY_SHA}}, 3,
   "host;x-amz-content-sha256;x-amz-date",
   "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"},
};

static void test_vectors(void **state)
{
  (void)state;
  for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
    const struct vector *v = &vectors[i];
    s3_sign_input_t in = {
      .method = v->method, .canonical_uri = v->uri, .canonical_query = v->query,
      .headers = v->hdr, .nheaders = v->nhdr, .payload_hash = v->payload,
      .amz_date = v->date, .region = "us-east-1", .service = v->service,
    };
    char *auth = NULL, expect[512];
    assert_int_equal(s3_sign(&in, v->cred, NULL, NULL, &auth), 0);
    snprintf(expect, sizeof expect,
             "AWS4-HMAC-SHA256 Credential=%s/%.8s/us-east-1/%s/aws4_request, "
             "SignedHeaders=%s, Signature=%s", v->cred->access_key, v->date,
             v->service, v->signed_headers, v->signature);
    if (strcmp(auth, expect) != 0)
      fail_msg("vector %s:\n got  %s\n want %s", v->name, auth, expect);
    free(auth);
  }
}

/* The documented example of a derived signing key. */
static void test_signing_key(void **state)
{
  (void)state;
  uint8_t key[32];
  char hex[65];
  s3_signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830",
                 "us-east-1", "iam", key);
  for (int i = 0; i < 32; i++)
    snprintf(hex + 2 * i, 3, "%02x", key[i]);
  assert_string_equal(hex, "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
}

/* Header names lowercased and sorted, values trimmed with inner runs of
 * spaces collapsed, duplicates joined with ','. */
static void test_canonical_request(void **state)
{
  (void)state;
  s3_header_t h[] = {
    {"X-Amz-Date", "20150830T123600Z"},
    {"My-Header1", "   value1  "},
    {"Host", "example.amazonaws.com"},
    {"My-Header2", "a   b \t  c"},
    {"my-header1", "value2"},
  };
  s3_sign_input_t in = {
    .method = "GET", .canonical_uri = "/a%20b/c", .canonical_query = "x=1",
    .headers = h, .nheaders = 5, .payload_hash = EMPTY_SHA,
    .amz_date = "20150830T123600Z", .region = "eu-west-1", .service = "s3",
  };
  char *cr = NULL, *sts = NULL;
  assert_int_equal(s3_sign(&in, &suite_cred, &cr, &sts, NULL), 0);
  assert_string_equal(cr,
    "GET\n/a%20b/c\nx=1\n"
    "host:example.amazonaws.com\n"
    "my-header1:value1,value2\n"
    "my-header2:a b c\n"
    "x-amz-date:20150830T123600Z\n"
    "\n"
    "host;my-header1;my-header2;x-amz-date\n" EMPTY_SHA);
  static const char sts_head[] = "AWS4-HMAC-SHA256\n20150830T123600Z\n"
                                 "20150830/eu-west-1/s3/aws4_request\n";
  assert_true(strncmp(sts, sts_head, sizeof sts_head - 1) == 0);
  assert_int_equal(strlen(sts), sizeof sts_head - 1 + 64);
  free(cr);
  free(sts);

  s3_header_t bad[] = {{"Bad Name", "x"}};
  in.headers = bad;
  in.nheaders = 1;
  assert_int_equal(s3_sign(&in, &suite_cred, &cr, NULL, NULL), -EINVAL);
  in.nheaders = 0;
  in.amz_date = "2015";
  assert_int_equal(s3_sign(&in, &suite_cred, &cr, NULL, NULL), -EINVAL);
}

static void test_uri_encode(void **state)
{
  (void)state;
  static const struct { const char *in; int slash; const char *out; } t[] = {
    {"a/b c", 1, "a/b%20c"},
    {"a/b c", 0, "a%2Fb%20c"},
    {"AZaz09-_.~", 0, "AZaz09-_.~"},
    {"x+y=z&$", 1, "x%2By%3Dz%26%24"},
    {"\xc3\xa9", 1, "%C3%A9"},
    {"", 1, ""},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    char *e = s3_uri_encode(t[i].in, t[i].slash);
    assert_string_equal(e, t[i].out);
    free(e);
  }
  char d[S3_AMZ_DATE_LEN + 1];
  s3_amz_date(1440938160, d);
  assert_string_equal(d, "20150830T123600Z");
}

static char *write_file(const char *text, mode_t mode)
{
  char *path = strdup("/tmp/test_s3_cred.XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  chmod(path, mode);
  return path;
}

static void test_credentials(void **state)
{
  (void)state;
  char *p = write_file(
    "# comment\n"
    "[default]\n"
    "aws_access_key_id = AKIDDEFAULT0001\n"
    "aws_secret_access_key=secretdefault/abc+1\n"
    "\n"
    "[profile other]\r\n"
    "  aws_access_key_id =  AKIDOTHER0002  \r\n"
    "aws_secret_access_key = secretother\r\n"
    "aws_session_token = tokenother123\r\n"
    "[incomplete]\n"
    "aws_access_key_id = AKIDNOSECRET\n", 0600);
  s3_credentials_t c = {0};
  char *err = NULL;
  assert_int_equal(s3_credentials_load(p, NULL, &c, &err), 0);
  assert_string_equal(c.access_key, "AKIDDEFAULT0001");
  assert_string_equal(c.secret_key, "secretdefault/abc+1");
  assert_null(c.session_token);
  s3_credentials_clear(&c);
  assert_int_equal(s3_credentials_load(p, "other", &c, &err), 0);
  assert_string_equal(c.access_key, "AKIDOTHER0002");
  assert_string_equal(c.secret_key, "secretother");
  assert_string_equal(c.session_token, "tokenother123");
  s3_credentials_clear(&c);

  assert_int_equal(s3_credentials_load(p, "missing", &c, &err), -ENOENT);
  assert_non_null(strstr(err, "no profile [missing]"));
  free(err);
  err = NULL;
  assert_int_equal(s3_credentials_load(p, "incomplete", &c, &err), -EINVAL);
  assert_null(strstr(err, "AKIDNOSECRET"));   /* messages never show values */
  free(err);
  err = NULL;

  chmod(p, 0644);
  assert_int_equal(s3_credentials_load(p, NULL, &c, &err), -EPERM);
  assert_non_null(strstr(err, "chmod 600"));
  free(err);
  err = NULL;
  unlink(p);
  assert_int_equal(s3_credentials_load(p, NULL, &c, &err), -ENOENT);
  free(err);
  free(p);
}

static void test_scrub(void **state)
{
  (void)state;
  s3_credentials_t c = {.access_key = "AKIDSCRUBME", .secret_key = "s3cr3t/KEY+xyz",
                        .session_token = "tok"};
  char msg[] = "PUT: Credential=AKIDSCRUBME/2015 s3cr3t/KEY+xyz and AKIDSCRUBMEtwice tok";
  s3_scrub(&c, msg);
  assert_null(strstr(msg, "AKIDSCRUBME"));
  assert_null(strstr(msg, "s3cr3t"));
  assert_non_null(strstr(msg, "[REDACTED]"));
  /* tokens shorter than 4 bytes are not searched for (would mangle text) */
  assert_non_null(strstr(msg, "tok"));
  s3_credentials_t shortk = {.access_key = "abcdef", .secret_key = "0123456789abcdef"};
  char m2[] = "x abcdef y";
  s3_scrub(&shortk, m2);
  assert_string_equal(m2, "x ****** y");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_vectors),
    cmocka_unit_test(test_signing_key),
    cmocka_unit_test(test_canonical_request),
    cmocka_unit_test(test_uri_encode),
    cmocka_unit_test(test_credentials),
    cmocka_unit_test(test_scrub),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
