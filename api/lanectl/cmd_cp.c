/* cmd_cp.c — lanectl cp SRC DST, exactly one side "NAME:/abs/path".
 *   into a lane:  PUT /v1/lanes/{name}/files?path=P&mode=0644   body streamed from the file
 *   out of one:   GET /v1/lanes/{name}/files?path=P             body streamed to the file,
 *                 mode from the X-Lane-File-Mode response header
 * A DST ending in '/' (or an existing local directory) gets SRC's basename.
 * "-" as the local side means stdin / stdout.
 * On a terminal, a progress line (bytes, rate, percent when the size is
 * known) is drawn on stderr; -q/--quiet or a non-tty stderr turn it off.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"
#include "codec.h"
#include "lanectl.h"
#include "progress.h"
#include "xfer.h"

static const char usage[] = "usage: lanectl cp LOCAL NAME:/PATH    copy a local file into lane NAME\n"
                            "       lanectl cp NAME:/PATH LOCAL    copy a file out of lane NAME\n"
                            "       lanectl cp -r DIR NAME:/PATH   copy a directory (tar stream) in; -r NAME:/DIR DIR out\n"
                            "  LOCAL may be '-' for stdin/stdout; file modes are preserved.\n"
                            "  -q, --quiet   no progress line (it is only drawn when stderr is a terminal)\n";

bool cp_parse_spec(const char *spec, char *lane, size_t lane_len, const char **path)
{
    const char *colon = strchr(spec, ':');
    if (!colon || colon == spec || colon[1] != '/' || (size_t)(colon - spec) >= lane_len)
        return false;
    memcpy(lane, spec, (size_t)(colon - spec));
    lane[colon - spec] = '\0';
    if (!lanectl_valid_name(lane))
        return false;
    *path = colon + 1;
    return true;
}

static char *files_path(const char *lane, const char *path, unsigned mode)
{
    char *esc = url_escape(path), *base = client_lane_path(lane, "files"), *out = NULL;
    if (esc && base) {
        int r = mode ? asprintf(&out, "%s?path=%s&mode=%04o", base, esc, mode)
                     : asprintf(&out, "%s?path=%s", base, esc);
        if (r < 0)
            out = NULL;
    }
    free(esc);
    free(base);
    return out;
}

typedef struct {
    char err[CURL_ERROR_SIZE];
    long status;
    CURL *h;
    char *err_body;      /* error responses are JSON, not file content */
    size_t err_len;
    const char *dst;     /* local path, or NULL for stdout */
    int fd;
    unsigned mode;
    char *tmp;           /* written here, renamed over dst at the end */
    progress_t *meter;   /* NULL for uploads' error bodies */
} download_t;

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    download_t *d = ud;
    size_t len = size * n;
    if (len > 17 && strncasecmp(p, "X-Lane-File-Mode:", 17) == 0) {
        unsigned long m = strtoul(p + 17, NULL, 8);
        if (m && m <= 07777)
            d->mode = (unsigned)m;
    }
    if (d->meter && !d->meter->total && len > 17 && strncasecmp(p, "X-Lane-File-Size:", 17) == 0)
        d->meter->total = strtoull(p + 17, NULL, 10);
    return len;
}

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    download_t *d = ud;
    size_t len = size * n;
    if (!d->status)
        curl_easy_getinfo(d->h, CURLINFO_RESPONSE_CODE, &d->status);
    if (d->status < 200 || d->status > 299) {
        char *b = realloc(d->err_body, d->err_len + len + 1);
        if (!b)
            return 0;
        memcpy(b + d->err_len, p, len);
        d->err_len += len;
        b[d->err_len] = '\0';
        d->err_body = b;
        return len;
    }
    if (d->fd < 0) {
        if (asprintf(&d->tmp, "%s.lanectl-XXXXXX", d->dst) < 0)
            return 0;
        d->fd = mkostemp(d->tmp, O_CLOEXEC);
        if (d->fd < 0) {
            lanectl_err("cp: create %s: %m", d->dst);
            free(d->tmp);
            d->tmp = NULL;
            return 0;
        }
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(d->fd, p + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            lanectl_err("cp: write %s: %m", d->dst ? d->dst : "stdout");
            return 0;
        }
        off += (size_t)w;
    }
    return len;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s && s[1] ? s + 1 : path;
}

static int cp_out(lanectl_t *ctx, const char *lane, const char *rpath, const char *local, bool progress)
{
    char *dst = NULL;
    struct stat st;
    bool to_stdout = strcmp(local, "-") == 0;
    if (!to_stdout) {
        size_t l = strlen(local);
        if ((l && local[l - 1] == '/') || (stat(local, &st) == 0 && S_ISDIR(st.st_mode))) {
            char *copy = strdup(rpath);
            if (!copy || asprintf(&dst, "%s%s%s", local, local[l - 1] == '/' ? "" : "/", basename(copy)) < 0)
                dst = NULL;
            free(copy);
        } else {
            dst = strdup(local);
        }
        if (!dst) {
            lanectl_err("out of memory");
            return EXIT_ERROR;
        }
    }
    char *path = files_path(lane, rpath, 0);
    download_t d = {.dst = dst, .fd = to_stdout ? STDOUT_FILENO : -1};
    d.h = path ? client_easy(ctx, "GET", path) : NULL;
    free(path);
    if (!d.h) {
        free(dst);
        lanectl_err("out of memory");
        return EXIT_ERROR;
    }
    curl_easy_setopt(d.h, CURLOPT_ERRORBUFFER, d.err);
    curl_easy_setopt(d.h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(d.h, CURLOPT_HEADERDATA, &d);
    curl_easy_setopt(d.h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(d.h, CURLOPT_WRITEDATA, &d);
    progress_t meter;
    /* no meter when the file itself goes to the terminal */
    progress_init(&meter, base_name(rpath), 0, false, progress && !(to_stdout && isatty(STDOUT_FILENO)));
    d.meter = &meter;
    progress_attach(&meter, d.h);
    CURLcode rc = curl_easy_perform(d.h);
    if (!d.status)
        curl_easy_getinfo(d.h, CURLINFO_RESPONSE_CODE, &d.status);
    curl_easy_cleanup(d.h);
    progress_finish(&meter, rc == CURLE_OK && d.status >= 200 && d.status <= 299);
    int ret = EXIT_ERROR;
    if (d.status && (d.status < 200 || d.status > 299)) {
        client_report_api_error(d.status, d.err_body, d.err_len);
    } else if (rc != CURLE_OK) {
        if (rc != CURLE_WRITE_ERROR)
            client_report_transport(ctx, rc, d.err);
    } else if (!to_stdout) {
        if (d.fd < 0) { /* empty file: nothing was written yet */
            if (asprintf(&d.tmp, "%s.lanectl-XXXXXX", dst) >= 0)
                d.fd = mkostemp(d.tmp, O_CLOEXEC);
        }
        if (d.fd < 0 || fchmod(d.fd, d.mode ? d.mode : 0644) < 0 || fsync(d.fd) < 0 ||
            rename(d.tmp, dst) < 0)
            lanectl_err("cp: %s: %m", dst);
        else
            ret = EXIT_OK;
    } else {
        ret = EXIT_OK;
    }
    if (!to_stdout && d.fd >= 0)
        close(d.fd);
    if (d.tmp && ret != EXIT_OK)
        unlink(d.tmp);
    free(d.tmp);
    free(d.err_body);
    free(dst);
    return ret;
}

static size_t on_read_file(char *buf, size_t size, size_t n, void *ud)
{
    int fd = *(int *)ud;
    ssize_t r;
    do
        r = read(fd, buf, size * n);
    while (r < 0 && errno == EINTR);
    return r < 0 ? CURL_READFUNC_ABORT : (size_t)r;
}

static size_t on_discard(char *p, size_t size, size_t n, void *ud)
{
    download_t *d = ud;
    size_t len = size * n;
    char *b = realloc(d->err_body, d->err_len + len + 1);
    if (!b)
        return 0;
    memcpy(b + d->err_len, p, len);
    d->err_len += len;
    b[d->err_len] = '\0';
    d->err_body = b;
    return len;
}

static int cp_in(lanectl_t *ctx, const char *local, const char *lane, const char *rpath, bool progress)
{
    bool from_stdin = strcmp(local, "-") == 0;
    int fd = from_stdin ? STDIN_FILENO : open(local, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        lanectl_err("cp: %s: %m", local);
        if (fd >= 0 && !from_stdin)
            close(fd);
        return EXIT_ERROR;
    }
    if (S_ISDIR(st.st_mode)) {
        lanectl_err("cp: %s is a directory (only files are copied)", local);
        close(fd);
        return EXIT_ERROR;
    }
    char *target = NULL;
    size_t rl = strlen(rpath);
    if (rpath[rl - 1] == '/' && !from_stdin) {
        char *copy = strdup(local);
        if (!copy || asprintf(&target, "%s%s", rpath, basename(copy)) < 0)
            target = NULL;
        free(copy);
    } else {
        target = strdup(rpath);
    }
    unsigned mode = S_ISREG(st.st_mode) && !from_stdin ? (st.st_mode & 07777) : 0644;
    char *path = target ? files_path(lane, target, mode) : NULL;
    free(target);
    download_t d = {.fd = -1};
    CURL *h = path ? client_easy(ctx, "PUT", path) : NULL;
    free(path);
    if (!h) {
        if (!from_stdin)
            close(fd);
        lanectl_err("out of memory");
        return EXIT_ERROR;
    }
    struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
    hdrs = curl_slist_append(hdrs, "Content-Type: application/octet-stream");
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read_file);
    curl_easy_setopt(h, CURLOPT_READDATA, &fd);
    if (S_ISREG(st.st_mode))
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, d.err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_discard);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &d);
    progress_t meter;
    progress_init(&meter, from_stdin ? "stdin" : base_name(local), S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0,
                  true, progress);
    progress_attach(&meter, h);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &d.status);
    curl_easy_cleanup(h);
    progress_finish(&meter, rc == CURLE_OK && d.status >= 200 && d.status <= 299);
    curl_slist_free_all(hdrs);
    if (!from_stdin)
        close(fd);
    int ret = EXIT_ERROR;
    if (d.status && (d.status < 200 || d.status > 299))
        client_report_api_error(d.status, d.err_body, d.err_len);
    else if (rc != CURLE_OK)
        client_report_transport(ctx, rc, d.err);
    else
        ret = EXIT_OK;
    free(d.err_body);
    return ret;
}

int cmd_cp(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"recursive", no_argument, NULL, 'r'}, {"quiet", no_argument, NULL, 'q'},
                                         LANECTL_COMMON_OPTS, {NULL, 0, NULL, 0}};
    int opt;
    bool recursive = false, quiet = false;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "+hrq", opts, NULL)) != -1) {
        if (opt == 'h') {
            fputs(usage, stdout);
            return EXIT_OK;
        }
        if (opt == 'q') {
            quiet = true;
            continue;
        }
        if (opt == 'r') {
            recursive = true;
            continue;
        }
        if (!lanectl_common_opt(ctx, opt, optarg))
            return lanectl_usage_error(usage, "cp: unknown option '%s'", argv[optind - 1]);
    }
    if (argc - optind != 2)
        return lanectl_usage_error(usage, "cp: expected SRC and DST");
    const char *src = argv[optind], *dst = argv[optind + 1], *rpath;
    char lane[64];
    bool src_lane = cp_parse_spec(src, lane, sizeof(lane), &rpath);
    char lane2[64];
    const char *rpath2;
    bool dst_lane = cp_parse_spec(dst, lane2, sizeof(lane2), &rpath2);
    if (src_lane == dst_lane)
        return lanectl_usage_error(usage, "cp: exactly one of SRC and DST must be NAME:/path");
    bool progress = !quiet && isatty(STDERR_FILENO);
    if (recursive)
        return src_lane ? cp_dir_out(ctx, lane, rpath, dst, progress) : cp_dir_in(ctx, src, lane2, rpath2, progress);
    return src_lane ? cp_out(ctx, lane, rpath, dst, progress) : cp_in(ctx, src, lane2, rpath2, progress);
}
