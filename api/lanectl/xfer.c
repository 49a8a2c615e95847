/* xfer.c — streamed raw transfers between file descriptors and the API (see xfer.h).
 * Threading: single-threaded, blocking libcurl easy handle. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "progress.h"
#include "xfer.h"

typedef struct {
    CURL *h;
    long status;
    int in_fd, out_fd;
    char *err_body;
    size_t err_len;
    int write_failed;
} xfer_t;

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
    xfer_t *x = ud;
    ssize_t r;
    do
        r = read(x->in_fd, buf, size * n);
    while (r < 0 && errno == EINTR);
    return r < 0 ? CURL_READFUNC_ABORT : (size_t)r;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    xfer_t *x = ud;
    size_t len = size * n;
    if (!x->status)
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
    if (x->status < 200 || x->status > 299) {
        if (x->err_len + len > 65536)
            return len;
        char *b = realloc(x->err_body, x->err_len + len + 1);
        if (!b)
            return 0;
        memcpy(b + x->err_len, p, len);
        x->err_len += len;
        b[x->err_len] = '\0';
        x->err_body = b;
        return len;
    }
    if (x->out_fd < 0)
        return len;
    for (size_t off = 0; off < len;) {
        ssize_t w = write(x->out_fd, p + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            x->write_failed = errno ? errno : EIO;
            return 0;
        }
        off += (size_t)w;
    }
    return len;
}

int xfer_fd(lanectl_t *ctx, const char *method, const char *path, int in_fd, int out_fd)
{
    return xfer_fd_progress(ctx, method, path, in_fd, out_fd, NULL);
}

int xfer_fd_progress(lanectl_t *ctx, const char *method, const char *path, int in_fd, int out_fd,
                     const char *label)
{
    xfer_t x = {.in_fd = in_fd, .out_fd = out_fd};
    char err[CURL_ERROR_SIZE] = "";
    x.h = client_easy(ctx, method, path);
    if (!x.h) {
        lanectl_err("out of memory");
        return -1;
    }
    struct curl_slist *hdrs = NULL;
    if (in_fd >= 0) {
        hdrs = curl_slist_append(hdrs, "Expect:");
        hdrs = curl_slist_append(hdrs, "Content-Type: application/octet-stream");
        curl_easy_setopt(x.h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(x.h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(x.h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(x.h, CURLOPT_READDATA, &x);
    }
    curl_easy_setopt(x.h, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(x.h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(x.h, CURLOPT_WRITEDATA, &x);
    progress_t meter;
    progress_init(&meter, label ? label : "", 0, in_fd >= 0, label != NULL);
    progress_attach(&meter, x.h);
    CURLcode rc = curl_easy_perform(x.h);
    if (!x.status)
        curl_easy_getinfo(x.h, CURLINFO_RESPONSE_CODE, &x.status);
    curl_easy_cleanup(x.h);
    curl_slist_free_all(hdrs);
    progress_finish(&meter, rc == CURLE_OK && x.status >= 200 && x.status <= 299);
    int ret = -1;
    if (x.status && (x.status < 200 || x.status > 299))
        client_report_api_error(x.status, x.err_body, x.err_len);
    else if (x.write_failed)
        lanectl_err("write: %s", strerror(x.write_failed));
    else if (rc != CURLE_OK)
        client_report_transport(ctx, rc, err);
    else
        ret = 0;
    free(x.err_body);
    return ret;
}
