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
 *   lanes-store --store DIR snap create|restore|rm DISK NAME
 *   lanes-store --store DIR snap ls DISK [--json]
 *   lanes-store --store DIR usage [PREFIX] [--json]
 *   lanes-store --store DIR gc [--grace SECONDS] [--dry-run] [--json]
 *   lanes-store --store DIR verify [--json]
 *   lanes-store --store DIR stats [--json]
 *
 * Exit status: 0 ok, 1 failure (verify: problems found), 2 usage error.
 * Errors are printed once.  --json output is one JSON document on stdout.
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
        "  snap create|restore|rm DISK NAME        snapshot snap/DISK/NAME\n"
        "  snap ls DISK [--json]                   snapshots with unique bytes\n"
        "  usage [PREFIX] [--json]                 per-ref chunks, unique bytes\n"
        "  gc [--grace S] [--dry-run] [--json]     delete unreferenced objects\n"
        "  verify [--json]                         re-hash everything reachable\n"
        "  stats [--json]                          logical/physical bytes, dedup\n"
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

static int has_flag(char **args, int *nargs, const char *flag)
{
  for (int k = 0; k < *nargs; k++)
    if (strcmp(args[k], flag) == 0) {
      memmove(args + k, args + k + 1, (size_t)(*nargs - k - 1) * sizeof *args);
      (*nargs)--;
      return 1;
    }
  return 0;
}

struct usage_out {
  int json, n;
};

static int print_usage(const store_ref_usage_t *u, void *ud)
{
  struct usage_out *o = ud;
  char t[32];
  time_t c = (time_t)u->ref.created;
  strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%SZ", gmtime(&c));
  if (o->json)
    printf("%s{\"name\":\"%s\",\"parent\":%s%s%s,\"created\":%" PRId64
           ",\"size\":%" PRIu64 ",\"generation\":%" PRIu64
           ",\"chunks\":%" PRIu64 ",\"logical_bytes\":%" PRIu64
           ",\"unique_bytes\":%" PRIu64 "}", o->n ? "," : "", u->ref.name,
           u->ref.parent[0] ? "\"" : "", u->ref.parent[0] ? u->ref.parent : "null",
           u->ref.parent[0] ? "\"" : "", u->ref.created, u->ref.size,
           u->ref.generation, u->chunks, u->logical_bytes, u->unique_bytes);
  else
    printf("%-36s %-20s %-30s %14" PRIu64 " %14" PRIu64 "\n", u->ref.name, t,
           u->ref.parent[0] ? u->ref.parent : "-", u->logical_bytes,
           u->unique_bytes);
  o->n++;
  return 0;
}

static int cmd_usage(store_t *s, const char *prefix, int json)
{
  struct usage_out o = { json, 0 };
  char *err = NULL;
  if (json)
    fputs("[", stdout);
  else
    printf("%-36s %-20s %-30s %14s %14s\n", "REF", "CREATED", "PARENT",
           "LOGICAL", "UNIQUE");
  int r = store_usage(s, prefix, print_usage, &o, &err);
  if (json)
    fputs("]\n", stdout);
  return r < 0 ? fail("usage", r, err) : 0;
}

static int print_problem(const store_verify_problem_t *p, void *ud)
{
  int *json = ud;
  char hex[STORE_ID_HEX_LEN + 1];
  const char *kind = p->kind == STORE_PROBLEM_MISSING ? "missing"
                   : p->kind == STORE_PROBLEM_CORRUPT ? "corrupt" : "unreadable";
  store_id_to_hex(&p->id, hex);
  if (*json > 0) {
    printf("%s{\"id\":\"%s\",\"type\":\"%s\",\"problem\":\"%s\",\"refs\":[",
           *json > 1 ? "," : "", hex, p->is_page ? "page" : "chunk", kind);
    for (size_t i = 0; i < p->nrefs; i++)
      printf("%s\"%s\"", i ? "," : "", p->refs[i]);
    fputs("]}", stdout);
    (*json)++;
  } else {
    printf("%s %s %s; affects:", p->is_page ? "page " : "chunk", hex, kind);
    for (size_t i = 0; i < p->nrefs; i++)
      printf(" %s", p->refs[i]);
    putchar('\n');
  }
  return 0;
}

static int cmd_verify(store_t *s, int json)
{
  store_verify_result_t res;
  char *err = NULL;
  int state = json ? 1 : 0;
  if (json)
    fputs("{\"problems\":[", stdout);
  int r = store_verify(s, print_problem, &state, &res, &err);
  if (r < 0) {
    if (json)
      fputs("]}\n", stdout);
    return fail("verify", r, err);
  }
  if (json)
    printf("],\"refs\":%" PRIu64 ",\"objects_checked\":%" PRIu64
           ",\"bytes_checked\":%" PRIu64 ",\"ok\":%s}\n", res.refs,
           res.objects_checked, res.bytes_checked, r ? "false" : "true");
  else
    printf("verify: %" PRIu64 " refs, %" PRIu64 " objects (%" PRIu64
           " bytes) checked, %d bad\n", res.refs, res.objects_checked,
           res.bytes_checked, r);
  return r ? 1 : 0;
}

static int cmd_gc(store_t *s, char **args, int nargs)
{
  store_gc_opts_t o = { .grace_s = -1 };
  int json = has_flag(args, &nargs, "--json");
  o.dry_run = has_flag(args, &nargs, "--dry-run");
  if (nargs == 2 && strcmp(args[0], "--grace") == 0) {
    char *end;
    o.grace_s = strtoll(args[1], &end, 10);
    if (*end || o.grace_s < 0) {
      usage(stderr);
      return 2;
    }
  } else if (nargs) {
    usage(stderr);
    return 2;
  }
  store_gc_result_t g;
  char *err = NULL;
  int r = store_gc(s, &o, &g, &err);
  if (r < 0)
    return fail("gc", r, err);
  if (json)
    printf("{\"refs\":%" PRIu64 ",\"reachable\":%" PRIu64 ",\"objects\":%"
           PRIu64 ",\"bytes\":%" PRIu64 ",\"garbage_objects\":%" PRIu64
           ",\"garbage_bytes\":%" PRIu64 ",\"kept_recent\":%" PRIu64
           ",\"deleted_objects\":%" PRIu64 ",\"deleted_bytes\":%" PRIu64
           ",\"deleted_tmp\":%" PRIu64 ",\"live_writers\":%" PRIu64
           ",\"stale_writers\":%" PRIu64 ",\"dry_run\":%s}\n", g.refs,
           g.reachable, g.objects, g.bytes, g.garbage_objects, g.garbage_bytes,
           g.kept_recent, g.deleted_objects, g.deleted_bytes, g.deleted_tmp,
           g.live_writers, g.stale_writers, o.dry_run ? "true" : "false");
  else
    printf("gc: %" PRIu64 " refs, %" PRIu64 " reachable of %" PRIu64
           " objects; garbage %" PRIu64 " (%" PRIu64 " bytes), %s %" PRIu64
           " (%" PRIu64 " bytes), kept %" PRIu64 " too recent; %" PRIu64
           " live writers\n", g.refs, g.reachable, g.objects,
           g.garbage_objects, g.garbage_bytes,
           o.dry_run ? "would delete" : "deleted",
           o.dry_run ? g.garbage_objects : g.deleted_objects,
           o.dry_run ? g.garbage_bytes : g.deleted_bytes, g.kept_recent,
           g.live_writers);
  return 0;
}

static int cmd_stats(store_t *s, int json)
{
  store_stats_t st;
  char *err = NULL;
  int r = store_stats(s, &st, &err);
  if (r < 0)
    return fail("stats", r, err);
  if (json)
    printf("{\"refs\":%" PRIu64 ",\"virtual_bytes\":%" PRIu64
           ",\"logical_bytes\":%" PRIu64 ",\"unique_chunks\":%" PRIu64
           ",\"unique_bytes\":%" PRIu64 ",\"pages\":%" PRIu64
           ",\"page_bytes\":%" PRIu64 ",\"objects\":%" PRIu64
           ",\"physical_bytes\":%" PRIu64 ",\"garbage_objects\":%" PRIu64
           ",\"garbage_bytes\":%" PRIu64 ",\"dedup_ratio\":%.4f}\n",
           st.refs, st.virtual_bytes, st.logical_bytes, st.unique_chunks,
           st.unique_bytes, st.pages, st.page_bytes, st.objects,
           st.physical_bytes, st.garbage_objects, st.garbage_bytes,
           st.dedup_ratio);
  else
    printf("refs:           %" PRIu64 "\nvirtual bytes:  %" PRIu64
           "\nlogical bytes:  %" PRIu64 "\nunique chunks:  %" PRIu64
           " (%" PRIu64 " bytes)\nmap pages:      %" PRIu64 " (%" PRIu64
           " bytes)\nobjects:        %" PRIu64 "\nphysical bytes: %" PRIu64
           "\ngarbage:        %" PRIu64 " objects (%" PRIu64 " bytes)\n"
           "dedup ratio:    %.2f\n", st.refs, st.virtual_bytes,
           st.logical_bytes, st.unique_chunks, st.unique_bytes, st.pages,
           st.page_bytes, st.objects, st.physical_bytes, st.garbage_objects,
           st.garbage_bytes, st.dedup_ratio);
  return 0;
}

static int cmd_snap(store_t *s, char **args, int nargs)
{
  char *err = NULL;
  int json = has_flag(args, &nargs, "--json"), r;
  if (nargs == 2 && strcmp(args[0], "ls") == 0) {
    char prefix[STORE_REF_NAME_MAX + 8];
    snprintf(prefix, sizeof prefix, "snap/%s/", args[1]);
    return cmd_usage(s, prefix, json);
  }
  if (nargs != 3) {
    usage(stderr);
    return 2;
  }
  if (strcmp(args[0], "create") == 0)
    r = store_snapshot_create(s, args[1], args[2], &err);
  else if (strcmp(args[0], "restore") == 0)
    r = store_snapshot_restore(s, args[1], args[2], &err);
  else if (strcmp(args[0], "rm") == 0)
    r = store_snapshot_delete(s, args[1], args[2], &err);
  else {
    usage(stderr);
    return 2;
  }
  return r < 0 ? fail(args[0], r, err) : 0;
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
  } else if (strcmp(cmd, "snap") == 0) {
    rc = cmd_snap(s, args, nargs);
  } else if (strcmp(cmd, "gc") == 0) {
    rc = cmd_gc(s, args, nargs);
  } else if (strcmp(cmd, "verify") == 0) {
    int json = has_flag(args, &nargs, "--json");
    rc = nargs ? (usage(stderr), 2) : cmd_verify(s, json);
  } else if (strcmp(cmd, "stats") == 0) {
    int json = has_flag(args, &nargs, "--json");
    rc = nargs ? (usage(stderr), 2) : cmd_stats(s, json);
  } else if (strcmp(cmd, "usage") == 0) {
    int json = has_flag(args, &nargs, "--json");
    rc = nargs > 1 ? (usage(stderr), 2) : cmd_usage(s, nargs ? args[0] : NULL,
                                                      json);
  } else {
    usage(stderr);
    rc = 2;
  }
  store_close(s);
  return rc;
}
