/* lanes-store — admin CLI for a lanes block store (thin layer over store.h).
 *
 *   lanes-store --store DIR init [--chunk-size SIZE] [--fanout N]
 *   lanes-store --store DIR import NAME RAW
 *   lanes-store --store DIR create DISK --from REF [--size SIZE]
 *   lanes-store --store DIR cp SRC DST [--force]
 *   lanes-store --store DIR ls [PREFIX]
 *   lanes-store --store DIR info REF
 *   lanes-store --store DIR rm REF
 *   lanes-store --store DIR export REF OUT.raw
 *
 * Exit status: 0 ok, 1 failure, 2 usage error.  Errors are printed once.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

static void usage(FILE *f)
{
  fputs("usage: lanes-store --store DIR COMMAND ...\n"
        "  init [--chunk-size SIZE] [--fanout N]   create an empty store\n"
        "  import NAME RAW                         raw file -> image/NAME\n"
        "  create DISK --from REF [--size SIZE]    new disk/DISK from REF\n"
        "  cp SRC DST [--force]                    copy a ref (O(1))\n"
        "  ls [PREFIX]                             list refs\n"
        "  info REF                                show one ref\n"
        "  rm REF                                  delete a ref\n"
        "  export REF OUT                          write a ref as a raw file\n"
        "SIZE takes K, M, G, T suffixes (powers of 1024).\n", f);
}

/* Parse "123", "64K", "4G"...; -1 on error. */
static int64_t parse_size(const char *s)
{
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s)
    return -1;
  int shift = 0;
  switch (*end) {
  case 'k': case 'K': shift = 10; end++; break;
  case 'm': case 'M': shift = 20; end++; break;
  case 'g': case 'G': shift = 30; end++; break;
  case 't': case 'T': shift = 40; end++; break;
  }
  if (*end == 'i' && shift) end++;
  if ((*end == 'b' || *end == 'B') && shift) end++;
  if (*end || v > (unsigned long long)INT64_MAX >> shift)
    return -1;
  return (int64_t)(v << shift);
}

static int fail(const char *what, int r, char *err)
{
  fprintf(stderr, "lanes-store: %s: %s\n", what, err ? err : strerror(-r));
  free(err);
  return 1;
}

static int print_ref(const store_ref_t *ref, void *ud)
{
  char hex[STORE_ID_HEX_LEN + 1];
  store_id_to_hex(&ref->root, hex);
  if (ud) {   /* info */
    char t1[32], t2[32];
    time_t c = (time_t)ref->created, u = (time_t)ref->updated;
    strftime(t1, sizeof t1, "%Y-%m-%dT%H:%M:%SZ", gmtime(&c));
    strftime(t2, sizeof t2, "%Y-%m-%dT%H:%M:%SZ", gmtime(&u));
    printf("name:       %s\nroot:       %s\nsize:       %" PRIu64 "\n"
           "generation: %" PRIu64 "\nparent:     %s\ncreated:    %s\n"
           "updated:    %s\n", ref->name, hex, ref->size, ref->generation,
           ref->parent[0] ? ref->parent : "-", t1, t2);
  } else {
    printf("%-40s %14" PRIu64 " gen %-6" PRIu64 " %.16s\n", ref->name,
           ref->size, ref->generation, hex);
  }
  return 0;
}

static int progress(uint64_t done, uint64_t total, void *ud)
{
  if (isatty(STDERR_FILENO))
    fprintf(stderr, "\rimport: %3d%%", total ? (int)(done * 100 / total) : 100);
  return 0;
}

static int cmd_export(store_t *s, const char *ref, const char *out)
{
  store_disk_t *d;
  char *err = NULL;
  int r = store_disk_open(s, ref, &(store_disk_opts_t){ .readonly = 1 }, &d,
                          &err);
  if (r < 0)
    return fail(ref, r, err);
  int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd == -1) {
    perror(out);
    store_disk_close(d);
    return 1;
  }
  uint64_t size = store_disk_size(d), off = 0;
  size_t bufsz = 1024 * 1024;
  char *buf = malloc(bufsz);
  int rc = 0;
  if (!buf || ftruncate(fd, (off_t)size) == -1) {
    perror(out);
    rc = 1;
  }
  while (rc == 0 && off < size) {
    uint64_t len;
    int zero;
    if ((r = store_disk_extent(d, off, size - off, &len, &zero, &err)) < 0) {
      rc = fail(ref, r, err);
      break;
    }
    if (zero) {      /* leave a hole (the file was truncated to size) */
      off += len;
      continue;
    }
    uint64_t end = off + len;
    while (rc == 0 && off < end) {
      size_t n = end - off < bufsz ? (size_t)(end - off) : bufsz;
      if ((r = store_disk_read(d, buf, n, off, &err)) < 0) {
        rc = fail(ref, r, err);
        break;
      }
      for (size_t done = 0; done < n;) {
        ssize_t w = pwrite(fd, buf + done, n - done, (off_t)(off + done));
        if (w == -1 && errno == EINTR)
          continue;
        if (w <= 0) {
          perror(out);
          rc = 1;
          break;
        }
        done += (size_t)w;
      }
      off += n;
    }
  }
  if (close(fd) == -1 && rc == 0) {
    perror(out);
    rc = 1;
  }
  free(buf);
  store_disk_close(d);
  return rc;
}

int main(int argc, char **argv)
{
  const char *dir = NULL;
  int i = 1;
  if (i + 1 < argc && strcmp(argv[i], "--store") == 0) {
    dir = argv[i + 1];
    i += 2;
  }
  if (!dir || i >= argc) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[i++];
  char **args = argv + i;
  int nargs = argc - i;
  char *err = NULL;
  store_t *s = NULL;
  int r, rc = 0;

  if (strcmp(cmd, "init") == 0) {
    store_params_t p = { 0, 0 };
    for (int k = 0; k < nargs; k++) {
      if (strcmp(args[k], "--chunk-size") == 0 && k + 1 < nargs) {
        int64_t v = parse_size(args[++k]);
        if (v <= 0 || v > UINT32_MAX) { usage(stderr); return 2; }
        p.chunk_size = (uint32_t)v;
      } else if (strcmp(args[k], "--fanout") == 0 && k + 1 < nargs) {
        p.fanout = (uint32_t)strtoul(args[++k], NULL, 10);
      } else {
        usage(stderr);
        return 2;
      }
    }
    r = store_create(dir, &p, &err);
    return r < 0 ? fail("init", r, err) : 0;
  }

  if ((r = store_open(dir, strcmp(cmd, "import") == 0, &s, &err)) < 0)
    return fail(dir, r, err);

  if (strcmp(cmd, "import") == 0 && nargs == 2) {
    r = store_image_import(s, args[0], args[1], progress, NULL, &err);
    if (isatty(STDERR_FILENO))
      fputc('\n', stderr);
    rc = r < 0 ? fail("import", r, err) : 0;
  } else if (strcmp(cmd, "create") == 0 && nargs >= 3) {
    const char *from = NULL;
    int64_t size = 0;
    for (int k = 1; k < nargs; k++) {
      if (strcmp(args[k], "--from") == 0 && k + 1 < nargs)
        from = args[++k];
      else if (strcmp(args[k], "--size") == 0 && k + 1 < nargs)
        size = parse_size(args[++k]);
      else
        size = -1;
    }
    if (!from || size < 0) {
      usage(stderr);
      rc = 2;
    } else {
      r = store_disk_create(s, args[0], from, (uint64_t)size, &err);
      rc = r < 0 ? fail("create", r, err) : 0;
    }
  } else if (strcmp(cmd, "cp") == 0 && (nargs == 2 || nargs == 3)) {
    int force = nargs == 3 && strcmp(args[2], "--force") == 0;
    if (nargs == 3 && !force) {
      usage(stderr);
      rc = 2;
    } else {
      r = store_ref_copy(s, args[0], args[1], force, &err);
      rc = r < 0 ? fail("cp", r, err) : 0;
    }
  } else if (strcmp(cmd, "ls") == 0 && nargs <= 1) {
    r = store_ref_list(s, nargs ? args[0] : NULL, print_ref, NULL, &err);
    rc = r < 0 ? fail("ls", r, err) : 0;
  } else if (strcmp(cmd, "info") == 0 && nargs == 1) {
    store_ref_t ref;
    r = store_ref_get(s, args[0], &ref, &err);
    if (r < 0) {
      rc = fail("info", r, err);
    } else {
      store_params_t p;
      store_get_params(s, &p);
      print_ref(&ref, &ref);
      printf("chunk size: %u\n", p.chunk_size);
    }
  } else if (strcmp(cmd, "rm") == 0 && nargs == 1) {
    r = store_ref_delete(s, args[0], &err);
    rc = r < 0 ? fail("rm", r, err) : 0;
  } else if (strcmp(cmd, "export") == 0 && nargs == 2) {
    rc = cmd_export(s, args[0], args[1]);
  } else {
    usage(stderr);
    rc = 2;
  }
  store_close(s);
  return rc;
}
