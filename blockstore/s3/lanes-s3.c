/* lanes-s3 — command-line tool over the lanes_s3 client (tests, debugging).
 *
 *   lanes-s3 OPTIONS mb
 *   lanes-s3 OPTIONS put KEY FILE            (FILE "-" = stdin)
 *   lanes-s3 OPTIONS get KEY [OFF LEN]       body to stdout (--sha256 HEX:
 *                                            verify the whole object)
 *   lanes-s3 OPTIONS head KEY
 *   lanes-s3 OPTIONS rm KEY
 *   lanes-s3 OPTIONS ls [PREFIX]
 *   lanes-s3 OPTIONS probe [KEY]             conditional-write capability
 *   lanes-s3 OPTIONS put-many PREFIX COUNT SIZE   random objects named by SHA-256
 *   lanes-s3 OPTIONS get-many PREFIX         GET (verified) every object
 *                                            put-many wrote, in parallel
 *   lanes-s3 OPTIONS store-init DIR PREFIX [KEY=VALUE...]
 *                                            make DIR an S3 block store on
 *                                            PREFIX (store.h store_create_s3);
 *                                            keys: durability=local|remote,
 *                                            cache_dir=D, cache_bytes=N,
 *                                            chunk_size=N,
 *                                            allow_unenforced_leases=0|1
 *
 * Options: --endpoint URL --bucket B [--region R] [--path-style|--vhost]
 *   [--credentials-file F] [--profile P] [--resolve HOST:PORT:ADDR]
 *   [--attempts N] [--parallel N] [--backoff-ms N] [--backoff-cap-ms N]
 *   [--timeout-ms N] [--page N] [--checksum md5|sha256|both] [--sha256 HEX] [-v]
 * Credentials are read from the file only, never from the command line.
 * With -v a last line "stats: attempts=N connections=M ms=T" goes to stderr.
 * Exit status: 0 ok, 1 failure, 2 usage error, 3 (probe) not enforced.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "s3.h"
#include "store.h"

/* store-init: make DIR an S3 store (the same call lanesd's store add makes). */
static int cmd_store_init(const s3_config_t *cfg, char **a, int na,
                          char **err)
{
  store_s3_config_t sc = {
    .endpoint = cfg->endpoint, .bucket = cfg->bucket, .prefix = a[1],
    .region = cfg->region, .credentials_file = cfg->credentials_file,
    .profile = cfg->profile, .vhost = !cfg->path_style,
  };
  store_params_t params = {0, 0};
  for (int i = 2; i < na; i++) {
    const char *v = strchr(a[i], '=');
    if (!v) {
      fprintf(stderr, "lanes-s3: store-init: expected KEY=VALUE, not %s\n", a[i]);
      return -EINVAL;
    }
    v++;
    if (!strncmp(a[i], "durability=", 11))
      sc.durability = strcmp(v, "remote") == 0 ? STORE_DURABILITY_REMOTE
                                               : STORE_DURABILITY_LOCAL;
    else if (!strncmp(a[i], "cache_dir=", 10))
      sc.cache_dir = v;
    else if (!strncmp(a[i], "cache_bytes=", 12))
      sc.cache_bytes = strtoull(v, NULL, 10);
    else if (!strncmp(a[i], "chunk_size=", 11))
      params.chunk_size = (uint32_t)strtoul(v, NULL, 10);
    else if (!strncmp(a[i], "allow_unenforced_leases=", 24))
      sc.allow_unenforced_leases = atoi(v);
    else {
      fprintf(stderr, "lanes-s3: store-init: unknown key in %s\n", a[i]);
      return -EINVAL;
    }
  }
  int enforced = 0;
  int r = store_create_s3(a[0], &sc, &params, &enforced, err);
  if (r == 0)
    printf("conditional writes: %s\n", enforced ? "enforced" : "not enforced");
  return r;
}

static void usage(FILE *f)
{
  fputs("usage: lanes-s3 --endpoint URL --bucket B [OPTIONS] COMMAND ...\n"
        "  mb | put KEY FILE | get KEY [OFF LEN] | head KEY | rm KEY\n"
        "  ls [PREFIX] | probe [KEY] | put-many PREFIX COUNT SIZE | get-many PREFIX\n"
        "  store-init DIR PREFIX [durability=local|remote] [cache_dir=D]\n"
        "             [cache_bytes=N] [chunk_size=N] [allow_unenforced_leases=1]\n"
        "options: --region R --path-style --vhost --credentials-file F --profile P\n"
        "  --resolve HOST:PORT:ADDR --attempts N --parallel N --backoff-ms N\n"
        "  --backoff-cap-ms N --timeout-ms N --page N --checksum md5|sha256|both\n"
        "  --sha256 HEX -v\n",
        f);
}

static int64_t mono_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int read_all(const char *path, void **out, size_t *len)
{
  int fd = strcmp(path, "-") == 0 ? 0 : open(path, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return -errno;
  size_t cap = 1 << 16, n = 0;
  char *b = malloc(cap);
  for (;;) {
    if (!b)
      return -ENOMEM;
    if (n == cap) {
      char *nb = realloc(b, cap *= 2);
      if (!nb) {
        free(b);
        return -ENOMEM;
      }
      b = nb;
    }
    ssize_t r = read(fd, b + n, cap - n);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1) {
      int e = -errno;
      free(b);
      if (fd)
        close(fd);
      return e;
    }
    if (r == 0)
      break;
    n += (size_t)r;
  }
  if (fd)
    close(fd);
  *out = b;
  *len = n;
  return 0;
}

static int write_all(int fd, const void *p, size_t n)
{
  while (n) {
    ssize_t r = write(fd, p, n);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1)
      return -errno;
    p = (const char *)p + r;
    n -= (size_t)r;
  }
  return 0;
}

static int print_entry(const s3_list_entry_t *e, void *ud)
{
  (void)ud;
  printf("%s\t%" PRIu64 "\t%s\n", e->key, e->size, e->etag);
  return 0;
}

struct keys {
  char **v;
  size_t n, cap;
};

static int collect_key(const s3_list_entry_t *e, void *ud)
{
  struct keys *k = ud;
  if (k->n == k->cap) {
    size_t nc = k->cap ? 2 * k->cap : 64;
    char **nv = realloc(k->v, nc * sizeof *nv);
    if (!nv)
      return 1;
    k->v = nv;
    k->cap = nc;
  }
  if (!(k->v[k->n] = strdup(e->key)))
    return 1;
  k->n++;
  return 0;
}

static int hex_to_bytes(const char *hex, uint8_t out[32])
{
  if (strlen(hex) != 64)
    return -1;
  for (int i = 0; i < 32; i++) {
    unsigned v;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1)
      return -1;
    out[i] = (uint8_t)v;
  }
  return 0;
}

static int cmd_put_many(s3_client_t *c, const char *prefix, long count, long size,
                        char **err)
{
  s3_request_t *rs = calloc((size_t)count, sizeof *rs);
  char (*keys)[600] = calloc((size_t)count, sizeof *keys);
  char *bodies = malloc((size_t)count * (size_t)size);
  int r = -ENOMEM;
  if (!rs || !keys || !bodies)
    goto out;
  for (long i = 0; i < count; i++) {
    char *b = bodies + i * size;
    uint8_t md[32];
    for (long off = 0; off < size;) {
      ssize_t g = getrandom(b + off, (size_t)(size - off), 0);
      if (g > 0)
        off += g;
    }
    SHA256((unsigned char *)b, (size_t)size, md);
    int o = snprintf(keys[i], sizeof keys[i], "%s", prefix);
    for (int j = 0; j < 32; j++)
      o += snprintf(keys[i] + o, sizeof keys[i] - (size_t)o, "%02x", md[j]);
    rs[i] = (s3_request_t){.op = S3_OP_PUT, .key = keys[i], .body = b,
                           .body_len = (size_t)size, .fence = -1};
  }
  r = s3_batch(c, rs, (size_t)count, err);
  for (long i = 0; i < count; i++)
    s3_request_clear(&rs[i]);
out:
  free(rs);
  free(keys);
  free(bodies);
  return r;
}

static int cmd_get_many(s3_client_t *c, const char *prefix, unsigned page,
                        char **err)
{
  struct keys k = {0};
  int r = s3_list(c, prefix, page, collect_key, &k, err);
  if (r < 0)
    goto out;
  s3_request_t *rs = calloc(k.n ? k.n : 1, sizeof *rs);
  uint8_t (*sums)[32] = calloc(k.n ? k.n : 1, 32);
  if (!rs || !sums) {
    free(rs);
    free(sums);
    r = -ENOMEM;
    goto out;
  }
  size_t pl = strlen(prefix);
  for (size_t i = 0; i < k.n; i++) {
    rs[i] = (s3_request_t){.op = S3_OP_GET, .key = k.v[i]};
    if (hex_to_bytes(k.v[i] + pl, sums[i]) == 0)
      rs[i].expect_sha256 = sums[i];
  }
  r = s3_batch(c, rs, k.n, err);
  uint64_t bytes = 0;
  for (size_t i = 0; i < k.n; i++) {
    bytes += rs[i].len;
    s3_request_clear(&rs[i]);
  }
  if (r == 0)
    printf("%zu objects, %" PRIu64 " bytes, all verified\n", k.n, bytes);
  free(rs);
  free(sums);
out:
  for (size_t i = 0; i < k.n; i++)
    free(k.v[i]);
  free(k.v);
  return r;
}

int main(int argc, char **argv)
{
  s3_config_t cfg = {.path_style = 1};
  unsigned page = 0;
  int verbose = 0, have_sha = 0;
  uint8_t want_sha[32];
  enum { OPT_EP = 256, OPT_BUCKET, OPT_REGION, OPT_PATH, OPT_VHOST, OPT_CRED, OPT_PROFILE,
         OPT_RESOLVE, OPT_ATT, OPT_PAR, OPT_BO, OPT_BOCAP, OPT_TMO, OPT_PAGE, OPT_CSUM,
         OPT_SHA };
  static const struct option opts[] = {
    {"endpoint", required_argument, 0, OPT_EP},
    {"bucket", required_argument, 0, OPT_BUCKET},
    {"region", required_argument, 0, OPT_REGION},
    {"path-style", no_argument, 0, OPT_PATH},
    {"vhost", no_argument, 0, OPT_VHOST},
    {"credentials-file", required_argument, 0, OPT_CRED},
    {"profile", required_argument, 0, OPT_PROFILE},
    {"resolve", required_argument, 0, OPT_RESOLVE},
    {"attempts", required_argument, 0, OPT_ATT},
    {"parallel", required_argument, 0, OPT_PAR},
    {"backoff-ms", required_argument, 0, OPT_BO},
    {"backoff-cap-ms", required_argument, 0, OPT_BOCAP},
    {"timeout-ms", required_argument, 0, OPT_TMO},
    {"page", required_argument, 0, OPT_PAGE},
    {"checksum", required_argument, 0, OPT_CSUM},
    {"sha256", required_argument, 0, OPT_SHA},
    {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0},
  };
  int o;
  while ((o = getopt_long(argc, argv, "+vh", opts, NULL)) != -1) {
    switch (o) {
    case OPT_EP: cfg.endpoint = optarg; break;
    case OPT_BUCKET: cfg.bucket = optarg; break;
    case OPT_REGION: cfg.region = optarg; break;
    case OPT_PATH: cfg.path_style = 1; break;
    case OPT_VHOST: cfg.path_style = 0; break;
    case OPT_CRED: cfg.credentials_file = optarg; break;
    case OPT_PROFILE: cfg.profile = optarg; break;
    case OPT_RESOLVE: cfg.resolve = optarg; break;
    case OPT_ATT: cfg.max_attempts = (unsigned)atoi(optarg); break;
    case OPT_PAR: cfg.max_parallel = (unsigned)atoi(optarg); break;
    case OPT_BO: cfg.backoff_base_ms = (unsigned)atoi(optarg); break;
    case OPT_BOCAP: cfg.backoff_cap_ms = (unsigned)atoi(optarg); break;
    case OPT_TMO: cfg.request_timeout_ms = (unsigned)atoi(optarg); break;
    case OPT_PAGE: page = (unsigned)atoi(optarg); break;
    case OPT_CSUM:
      if (strcmp(optarg, "md5") == 0) cfg.checksum = S3_CHECKSUM_MD5;
      else if (strcmp(optarg, "sha256") == 0) cfg.checksum = S3_CHECKSUM_SHA256;
      else if (strcmp(optarg, "both") == 0) cfg.checksum = S3_CHECKSUM_BOTH;
      else { usage(stderr); return 2; }
      break;
    case OPT_SHA:
      if (hex_to_bytes(optarg, want_sha) < 0) { usage(stderr); return 2; }
      have_sha = 1;
      break;
    case 'v': verbose = 1; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind >= argc || !cfg.endpoint || !cfg.bucket) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[optind];
  char **a = argv + optind + 1;
  int na = argc - optind - 1;

  s3_client_t *c = NULL;
  char *err = NULL;
  int r = s3_client_new(&cfg, &c, &err), rc = 0;
  if (r < 0) {
    fprintf(stderr, "lanes-s3: %s\n", err ? err : strerror(-r));
    free(err);
    return 1;
  }
  int64_t t0 = mono_ms();
  s3_object_info_t info;
  if (strcmp(cmd, "mb") == 0 && na == 0) {
    r = s3_bucket_create(c, &err);
  } else if (strcmp(cmd, "put") == 0 && na == 2) {
    void *data = NULL;
    size_t len = 0;
    if ((r = read_all(a[1], &data, &len)) < 0) {
      fprintf(stderr, "lanes-s3: read %s: %s\n", a[1], strerror(-r));
      rc = 1;
    } else {
      r = s3_put(c, a[0], data, len, &info, &err);
      if (r == 0)
        printf("%s\n", info.etag);
      free(data);
    }
  } else if (strcmp(cmd, "get") == 0 && (na == 1 || na == 3)) {
    void *data = NULL;
    size_t len = 0;
    uint64_t off = na == 3 ? strtoull(a[1], NULL, 10) : 0;
    uint64_t l = na == 3 ? strtoull(a[2], NULL, 10) : 0;
    r = s3_get(c, a[0], off, l, have_sha ? want_sha : NULL, &data, &len, &info, &err);
    if (r == 0) {
      if (write_all(1, data, len) < 0)
        rc = 1;
      free(data);
    }
  } else if (strcmp(cmd, "head") == 0 && na == 1) {
    r = s3_head(c, a[0], &info, &err);
    if (r == 0)
      printf("size=%" PRIu64 " etag=%s fence=%" PRId64 "\n", info.size,
             info.etag, info.fence);
  } else if (strcmp(cmd, "rm") == 0 && na == 1) {
    r = s3_delete(c, a[0], &err);
  } else if (strcmp(cmd, "ls") == 0 && na <= 1) {
    r = s3_list(c, na ? a[0] : "", page, print_entry, NULL, &err);
  } else if (strcmp(cmd, "probe") == 0 && na <= 1) {
    int enforced = 0;
    r = s3_probe_conditional(c, na ? a[0] : ".lanes-probe", &enforced, &err);
    if (r == 0) {
      printf("conditional writes: %s\n", enforced ? "enforced" : "not enforced");
      if (!enforced)
        rc = 3;
    }
  } else if (strcmp(cmd, "put-many") == 0 && na == 3) {
    long n = atol(a[1]), sz = atol(a[2]);
    if (n <= 0 || sz <= 0 || n > 100000 || sz > 64L << 20) {
      usage(stderr);
      rc = 2;
    } else {
      r = cmd_put_many(c, a[0], n, sz, &err);
    }
  } else if (strcmp(cmd, "get-many") == 0 && na == 1) {
    r = cmd_get_many(c, a[0], page, &err);
  } else if (strcmp(cmd, "store-init") == 0 && na >= 2) {
    r = cmd_store_init(&cfg, a, na, &err);
  } else {
    usage(stderr);
    rc = 2;
  }
  if (r < 0) {
    fprintf(stderr, "lanes-s3: %s\n", err ? err : strerror(-r));
    rc = 1;
  }
  if (verbose)
    fprintf(stderr, "stats: attempts=%" PRIu64 " connections=%" PRIu64
            " ms=%" PRId64 "\n", s3_client_attempts(c), s3_client_connections(c),
            mono_ms() - t0);
  free(err);
  s3_client_free(c);
  return rc;
}
