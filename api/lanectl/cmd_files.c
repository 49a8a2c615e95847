/* cmd_files.c — directories and metadata in a lane.
 *
 *   lanectl files ls [--json] NAME:/DIR     GET /v1/lanes/{name}/files/list?path=
 *   lanectl files stat [--json] NAME:/PATH  GET /v1/lanes/{name}/files/stat?path=
 *   lanectl cp -r DIR NAME:/PATH            PUT /v1/lanes/{name}/archive?path=   (cmd_cp.c → cp_dir_in)
 *   lanectl cp -r NAME:/PATH DIR            GET /v1/lanes/{name}/archive?path=   (cmd_cp.c → cp_dir_out)
 *
 * Directory copies run the host's tar (create or extract) connected to the
 * streamed request/response body by a pipe, so any size streams with
 * constant memory. Same destination rule as single-file cp: a destination
 * ending in '/' (or, when copying out, an existing local directory)
 * receives the source directory under its basename; otherwise the
 * destination becomes the copy.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <libgen.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "codec.h"
#include "lanectl.h"
#include "xfer.h"

extern char **environ;

static const char usage[] = "usage: lanectl files ls [--json] NAME:/DIR      list a directory in a lane\n"
                            "       lanectl files stat [--json] NAME:/PATH   type, mode, size, mtime of a path\n"
                            "  (copy directories with 'lanectl cp -r')\n";

static char *query_path(const char *lane, const char *what, const char *rpath)
{
    char *esc = url_escape(rpath), *suffix = NULL, *out = NULL;
    if (esc && asprintf(&suffix, "%s?path=%s", what, esc) >= 0)
        out = client_lane_path(lane, suffix);
    free(esc);
    free(suffix);
    return out;
}

static void fmt_time(long long t, char *buf, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M", &tm))
        snprintf(buf, len, "-");
}

static long long jint(json_object *o, const char *k)
{
    json_object *v;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : 0;
}

static int files_ls_stat(lanectl_t *ctx, bool list, int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, LANECTL_COMMON_OPTS, {NULL, 0, NULL, 0}};
    bool json = false;
    int opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (opt == 'h') {
            fputs(usage, stdout);
            return EXIT_OK;
        }
        if (opt == 'j')
            json = true;
        else if (!lanectl_common_opt(ctx, opt, optarg))
            return lanectl_usage_error(usage, "files: unknown option '%s'", argv[optind - 1]);
    }
    char lane[64];
    const char *rpath;
    if (argc - optind != 1 || !cp_parse_spec(argv[optind], lane, sizeof(lane), &rpath))
        return lanectl_usage_error(usage, "files %s: expected NAME:/PATH", list ? "ls" : "stat");
    char *path = query_path(lane, list ? "files/list" : "files/stat", rpath);
    json_object *out = NULL;
    int r = path ? client_call(ctx, "GET", path, NULL, &out, NULL) : -1;
    free(path);
    if (r < 0)
        return EXIT_ERROR;
    if (json) {
        printf("%s\n", json_object_to_json_string_ext(out, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    } else if (list) {
        json_object *entries = json_object_object_get(out, "entries");
        printf("%-5s %-8s %12s  %-16s  %s\n", "MODE", "TYPE", "SIZE", "MODIFIED", "NAME");
        for (size_t i = 0; entries && i < json_object_array_length(entries); i++) {
            json_object *e = json_object_array_get_idx(entries, i);
            char ts[32];
            fmt_time(jint(e, "mtime"), ts, sizeof(ts));
            const char *type = lanectl_jstr(e, "type");
            printf("%-5s %-8s %12lld  %-16s  %s%s\n", lanectl_jstr(e, "mode"), type, jint(e, "size"), ts,
                   lanectl_jstr(e, "name"), type && !strcmp(type, "dir") ? "/" : "");
        }
    } else {
        char ts[32];
        fmt_time(jint(out, "mtime"), ts, sizeof(ts));
        printf("path:  %s\ntype:  %s\nmode:  %s\nsize:  %lld\nmtime: %s UTC\nowner: %lld:%lld\n",
               lanectl_jstr(out, "path"), lanectl_jstr(out, "type"), lanectl_jstr(out, "mode"), jint(out, "size"), ts,
               jint(out, "uid"), jint(out, "gid"));
    }
    json_object_put(out);
    return EXIT_OK;
}

int cmd_files(lanectl_t *ctx, int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    if (!strcmp(argv[1], "ls"))
        return files_ls_stat(ctx, true, argc - 1, argv + 1);
    if (!strcmp(argv[1], "stat"))
        return files_ls_stat(ctx, false, argc - 1, argv + 1);
    return lanectl_usage_error(usage, "files: unknown subcommand '%s'", argv[1]);
}

/* ---- cp -r -------------------------------------------------------------------------------- */

/* Run tar with one end of a pipe as its stdin (extract) or stdout (create);
 * returns the pid and the other end in *fd, or -1. */
static pid_t spawn_tar(const char *const *argv, bool tar_reads, int *fd)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, tar_reads ? p[0] : p[1], tar_reads ? 0 : 1);
    pid_t pid;
    int r = posix_spawnp(&pid, "tar", &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(tar_reads ? p[0] : p[1]);
    if (r != 0) {
        close(tar_reads ? p[1] : p[0]);
        errno = r;
        return -1;
    }
    *fd = tar_reads ? p[1] : p[0];
    return pid;
}

static int wait_tar(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static char *with_basename(const char *dir, const char *src)
{
    char *copy = strdup(src), *out = NULL;
    if (!copy)
        return NULL;
    size_t l = strlen(copy);
    while (l > 1 && copy[l - 1] == '/')
        copy[--l] = 0;
    size_t dl = strlen(dir);
    if (asprintf(&out, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/", basename(copy)) < 0)
        out = NULL;
    free(copy);
    return out;
}

int cp_dir_in(lanectl_t *ctx, const char *local, const char *lane, const char *rpath, bool progress)
{
    struct stat st;
    if (stat(local, &st) < 0 || !S_ISDIR(st.st_mode)) {
        lanectl_err("cp -r: %s is not a directory", local);
        return EXIT_ERROR;
    }
    size_t rl = strlen(rpath);
    char *target = rl && rpath[rl - 1] == '/' ? with_basename(rpath, local) : strdup(rpath);
    char *path = target ? query_path(lane, "archive", target) : NULL;
    free(target);
    if (!path) {
        lanectl_err("out of memory");
        return EXIT_ERROR;
    }
    const char *argv[] = {"tar", "-c", "-f", "-", "-C", local, ".", NULL};
    int fd;
    pid_t pid = spawn_tar(argv, false, &fd);
    if (pid < 0) {
        lanectl_err("cp -r: cannot run tar: %m");
        free(path);
        return EXIT_ERROR;
    }
    int r = xfer_fd_progress(ctx, "PUT", path, fd, -1, progress ? local : NULL);
    free(path);
    close(fd);
    if (r < 0)
        kill(pid, SIGTERM);
    int t = wait_tar(pid);
    if (r == 0 && t < 0)
        lanectl_err("cp -r: tar failed reading %s", local);
    return r < 0 || t < 0 ? EXIT_ERROR : EXIT_OK;
}

int cp_dir_out(lanectl_t *ctx, const char *lane, const char *rpath, const char *local, bool progress)
{
    struct stat st;
    size_t ll = strlen(local);
    bool into = (ll && local[ll - 1] == '/') || (stat(local, &st) == 0 && S_ISDIR(st.st_mode));
    char *target = into ? with_basename(local, rpath) : strdup(local);
    char *path = query_path(lane, "archive", rpath);
    if (!target || !path) {
        free(target);
        free(path);
        lanectl_err("out of memory");
        return EXIT_ERROR;
    }
    if (mkdir(target, 0755) < 0 && errno != EEXIST) {
        lanectl_err("cp -r: mkdir %s: %m", target);
        free(target);
        free(path);
        return EXIT_ERROR;
    }
    const char *argv[] = {"tar", "-x", "-f", "-", "-C", target, NULL};
    int fd;
    pid_t pid = spawn_tar(argv, true, &fd);
    if (pid < 0) {
        lanectl_err("cp -r: cannot run tar: %m");
        free(target);
        free(path);
        return EXIT_ERROR;
    }
    signal(SIGPIPE, SIG_IGN);
    int r = xfer_fd_progress(ctx, "GET", path, -1, fd, progress ? rpath : NULL);
    close(fd);
    int t = wait_tar(pid);
    if (r == 0 && t < 0)
        lanectl_err("cp -r: tar failed extracting into %s", target);
    free(target);
    free(path);
    return r < 0 || t < 0 ? EXIT_ERROR : EXIT_OK;
}
