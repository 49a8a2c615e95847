/* files.c — FILE_PUT and FILE_GET transfers, and the freeze hook.
 *
 * FILE_PUT writes into a temp file in the target's directory (so the final
 * rename is atomic on the same filesystem), then fsync, chown/chmod, rename
 * over the target and fsync the directory: a reader never sees a partial
 * file, and after LP_OK the file survives a crash. Any failure removes the
 * temp file. The host→guest window is re-granted as each LP_DATA frame is
 * written, so at most LP_WINDOW_INITIAL bytes are ever in flight.
 *
 * FILE_GET sends LP_FILE_INFO, then data frames while the host's window is
 * open and the out queue has room, then LP_DATA len 0 and LP_OK.
 *
 * Threading: single-threaded; disk I/O is blocking (local disk).
 */
#include "lane_init.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char path[4096];
    uint32_t mode;
    int have_mode;
    int64_t uid, gid;
} file_req_t;

/* Parse PATH/MODE/UID/GID. Returns 0 or negative errno with msg. */
static int req_parse(const char *what, const uint8_t *payload, size_t len, file_req_t *q, char *msg,
                     size_t msglen)
{
    lp_tlv_iter_t it;
    uint16_t tag;
    const uint8_t *val;
    uint32_t vlen, u;
    int r, have_path = 0;
    q->uid = q->gid = -1;
    q->mode = 0644;
    lp_tlv_init(&it, payload, len);
    while ((r = lp_tlv_next(&it, &tag, &val, &vlen)) > 0) {
        int e = 0;
        switch (tag) {
        case LP_T_PATH:
            e = lp_val_str(val, vlen, q->path, sizeof(q->path));
            if (e == -ENAMETOOLONG) {
                snprintf(msg, msglen, "%s: path too long", what);
                return e;
            }
            have_path = 1;
            break;
        case LP_T_MODE:
            e = lp_val_u32(val, vlen, &q->mode);
            q->have_mode = 1;
            break;
        case LP_T_UID:
            e = lp_val_u32(val, vlen, &u);
            q->uid = u;
            break;
        case LP_T_GID:
            e = lp_val_u32(val, vlen, &u);
            q->gid = u;
            break;
        default:
            break;
        }
        if (e < 0) {
            snprintf(msg, msglen, "%s: bad value for tag %u", what, tag);
            return -EBADMSG;
        }
    }
    if (r < 0) {
        snprintf(msg, msglen, "%s: malformed TLV payload", what);
        return -EBADMSG;
    }
    if (!have_path || q->path[0] != '/') {
        snprintf(msg, msglen, "%s: an absolute PATH is required", what);
        return -EINVAL;
    }
    if (q->mode & ~07777u) {
        snprintf(msg, msglen, "%s: bad MODE %o", what, q->mode);
        return -EINVAL;
    }
    return 0;
}

void files_put_start(li_ctx_t *ctx, uint32_t stream, const uint8_t *payload, size_t len)
{
    file_req_t q = {0};
    char msg[512];
    int r = req_parse("FILE_PUT", payload, len, &q, msg, sizeof(msg));
    if (r < 0) {
        agent_send_error(ctx, stream, r, "%s", msg);
        return;
    }
    size_t plen = strlen(q.path);
    if (q.path[plen - 1] == '/') {
        agent_send_error(ctx, stream, EISDIR, "FILE_PUT \"%s\": is a directory", q.path);
        return;
    }
    const char *slash = strrchr(q.path, '/');
    const char *base = slash + 1;
    int dirlen = (int)(slash - q.path);
    li_stream_t *s = agent_stream_new(ctx, stream, LI_S_PUT);
    if (!s) {
        agent_send_error(ctx, stream, ENOMEM, "out of memory");
        return;
    }
    li_put_t *p = &s->u.put;
    p->fd = -1;
    if ((size_t)snprintf(p->tmp_path, sizeof(p->tmp_path), "%.*s/.%s.lanes-XXXXXX", dirlen, q.path, base) >=
        sizeof(p->tmp_path)) {
        agent_send_error(ctx, stream, ENAMETOOLONG, "FILE_PUT \"%s\": path too long", q.path);
        agent_stream_free(ctx, s);
        return;
    }
    memcpy(p->path, q.path, plen + 1);
    p->mode = q.mode;
    p->uid = q.uid;
    p->gid = q.gid;
    p->fd = mkostemp(p->tmp_path, O_CLOEXEC);
    if (p->fd < 0) {
        r = -errno;
        agent_send_error(ctx, stream, r, "FILE_PUT \"%s\": create temp file: %s", q.path, strerror(-r));
        agent_stream_free(ctx, s);
        return;
    }
    li_debug(ctx, "stream %u: FILE_PUT %s", stream, q.path);
}

/* Remove the temp file and free the stream. */
static void put_abort(li_ctx_t *ctx, li_stream_t *s)
{
    li_put_t *p = &s->u.put;
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
        unlink(p->tmp_path);
    }
    agent_stream_free(ctx, s);
}

static int fsync_dir_of(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n = (size_t)(slash - path);
    if (n == 0)
        n = 1;
    memcpy(dir, path, n);
    dir[n] = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

/* All data written: make it durable and move it into place. */
static void put_finish(li_ctx_t *ctx, li_stream_t *s)
{
    li_put_t *p = &s->u.put;
    const char *step;
    if ((step = "fsync", fsync(p->fd) < 0) ||
        ((p->uid >= 0 || p->gid >= 0) &&
         (step = "chown", fchown(p->fd, (uid_t)p->uid, (gid_t)p->gid) < 0)) ||
        (step = "chmod", fchmod(p->fd, (mode_t)p->mode) < 0)) {
        agent_send_error(ctx, s->id, errno, "FILE_PUT \"%s\": %s: %s", p->path, step, strerror(errno));
        put_abort(ctx, s);
        return;
    }
    int r = close(p->fd);
    p->fd = -1;
    if (r < 0 || rename(p->tmp_path, p->path) < 0) {
        int e = errno;
        unlink(p->tmp_path);
        agent_send_error(ctx, s->id, e, "FILE_PUT \"%s\": %s", p->path, strerror(e));
        agent_stream_free(ctx, s);
        return;
    }
    r = fsync_dir_of(p->path);
    if (r < 0)
        li_log(ctx, "FILE_PUT %s: fsync directory: %s", p->path, strerror(-r));
    agent_send_frame(ctx, LP_OK, s->id, NULL, 0);
    li_debug(ctx, "stream %u: FILE_PUT %s done", s->id, p->path);
    agent_stream_free(ctx, s);
}

void files_put_data(li_ctx_t *ctx, li_stream_t *s, const uint8_t *data, size_t len)
{
    li_put_t *p = &s->u.put;
    if (len > s->win_in) {
        li_log(ctx, "stream %u: FILE_PUT window overrun by host; failing the stream", s->id);
        agent_send_error(ctx, s->id, EPROTO, "FILE_PUT: window overrun by host");
        put_abort(ctx, s);
        return;
    }
    if (len == 0) {
        put_finish(ctx, s);
        return;
    }
    int r = li_write_all(p->fd, data, len);
    if (r < 0) {
        agent_send_error(ctx, s->id, r, "FILE_PUT \"%s\": write: %s", p->path, strerror(-r));
        put_abort(ctx, s);
        return;
    }
    /* Written synchronously: the window re-opens at once. */
    agent_send_window(ctx, s->id, (uint32_t)len);
}

void files_get_start(li_ctx_t *ctx, uint32_t stream, const uint8_t *payload, size_t len)
{
    file_req_t q = {0};
    char msg[512];
    int r = req_parse("FILE_GET", payload, len, &q, msg, sizeof(msg));
    if (r < 0) {
        agent_send_error(ctx, stream, r, "%s", msg);
        return;
    }
    int fd = open(q.path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        r = errno;
        agent_send_error(ctx, stream, r, "FILE_GET \"%s\": %s", q.path, strerror(r));
        return;
    }
    struct stat st;
    errno = 0;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        r = errno;
        const char *why = strerror(r);
        if (r == 0) { /* fstat worked: wrong file type */
            r = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
            why = r == EISDIR ? "is a directory" : "not a regular file";
        }
        agent_send_error(ctx, stream, r, "FILE_GET \"%s\": %s", q.path, why);
        close(fd);
        return;
    }
    li_stream_t *s = agent_stream_new(ctx, stream, LI_S_GET);
    if (!s) {
        close(fd);
        agent_send_error(ctx, stream, ENOMEM, "out of memory");
        return;
    }
    s->u.get.fd = fd;
    uint8_t buf[32];
    lp_msg_t m;
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_u64(&m, LP_T_SIZE, (uint64_t)st.st_size);
    lp_msg_put_u32(&m, LP_T_MODE, st.st_mode & 07777);
    agent_send_frame(ctx, LP_FILE_INFO, stream, buf, m.len);
}

int files_get_service(li_ctx_t *ctx, li_stream_t *s)
{
    li_get_t *g = &s->u.get;
    for (int rounds = 0; rounds < 4; rounds++) {
        if (s->win_out == 0 || agent_outq_len(ctx) >= LI_OUTQ_HIGH)
            return 0;
        size_t want = s->win_out < LP_MAX_PAYLOAD ? (size_t)s->win_out : LP_MAX_PAYLOAD;
        uint8_t *p = agent_reserve_data(ctx, want);
        ssize_t n = read(g->fd, p, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            agent_send_error(ctx, s->id, e, "FILE_GET: read: %s", strerror(e));
            files_destroy(ctx, s);
            return 1;
        }
        if (n == 0) {
            agent_send_frame(ctx, LP_DATA, s->id, NULL, 0);
            agent_send_frame(ctx, LP_OK, s->id, NULL, 0);
            files_destroy(ctx, s);
            return 1;
        }
        agent_commit_data(ctx, LP_DATA, s->id, (size_t)n);
        s->win_out -= (uint64_t)n;
    }
    return 0;
}

void files_cancel(li_ctx_t *ctx, li_stream_t *s)
{
    agent_send_error(ctx, s->id, ECANCELED, "transfer cancelled");
    files_destroy(ctx, s);
}

void files_destroy(li_ctx_t *ctx, li_stream_t *s)
{
    if (s->kind == LI_S_PUT) {
        put_abort(ctx, s);
        return;
    }
    if (s->u.get.fd >= 0)
        close(s->u.get.fd);
    agent_stream_free(ctx, s);
}

static int freeze_ioctl(const char *path, unsigned long req)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = ioctl(fd, req, 0) < 0 ? -errno : 0;
    close(fd);
    return r;
}

int files_freeze(const char *path)
{
    return freeze_ioctl(path, FIFREEZE);
}

int files_thaw(const char *path)
{
    return freeze_ioctl(path, FITHAW);
}
