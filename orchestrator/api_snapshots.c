/* api_snapshots.c — HTTP handlers for snapshots, restore, fork and the
 * store (gc, verify, stats), plus lane lineage for lane JSON.
 *
 * Store refs (blockstore/store.h): a lane's disk is disk/<lane id>; its
 * snapshots are snap/<lane id>/<name>.  Snapshot, restore and fork are ref
 * operations: O(1), no data copied.
 *
 * Snapshot of a running lane:
 *   agent FREEZE (guest FIFREEZE: fs synced, virtio-blk cache flushed, which
 *   QEMU forwards to nbdkit as NBD FLUSH/FUA = a commit)
 *   → our own NBD FLUSH on a second connection to the lane's nbdkit (the
 *   plugin shares one engine across connections, so this commits anything
 *   still uncommitted; the disk ref's generation before/after is reported)
 *   → snap ref := disk ref (one SQLite transaction) → agent THAW.
 * The guest is thawed on every path after a successful freeze.  If lanesd
 * dies while a guest is frozen, the next agent connection thaws it (vm.c
 * calls api_snapshots_agent_ready).
 *
 * Blocking work (NBD flush, store walks for ls/gc/verify/stats, and every
 * ref change: for a lane in an S3 store each one is a request to the
 * bucket) runs on the libuv thread pool; the store handle is thread-safe
 * and held (api_stores_hold) while a worker uses it.  A fork of an S3 lane
 * lives in the same store and is registered in its bucket (disk ref + lane
 * document), so every host that added the store adopts it.  Everything else runs
 * on the loop thread.  A lane has at most one snapshot/restore operation in
 * flight (busy list below).  After a snapshot or lane is removed a GC of
 * its store (local or S3) is scheduled (one at a time; each store queued
 * at most once).
 */
#include "lanesd.h"

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define SNAP_NAME_MAX 63
#define NBD_TIMEOUT_S 120
#define RESTORE_STOP_TIMEOUT_MS 30000
#define LINEAGE_MAX_HOPS 64
#define GC_QUEUE_MAX 40

typedef struct snap_op snap_op_t;
typedef void (*snap_op_fn)(snap_op_t *op);

struct snapshots {
    lanesd_t *d;
    snap_op_t *busy;     /* operations holding a lane */
    int gc_running;
    store_t *gc_queue[GC_QUEUE_MAX]; /* stores waiting for a background GC (held) */
    int gc_nqueue;
    /* The local store's last stats, for /metrics (refreshed in the
     * background when older than STATS_MAX_AGE_MS, and by store stats). */
    store_stats_t stats;
    int64_t stats_at_ms;     /* 0: never measured */
    int stats_running;
};

/* One API operation; lives until it has answered its request. */
struct snap_op {
    lanesd_t *d;
    http_req_t *req;
    store_t *st;             /* the lane's store (local or S3), resolved on the loop */
    char lane_id[32];
    char snap[SNAP_NAME_MAX + 1];
    char new_name[64];       /* fork */
    char new_id[32];         /* fork: the new lane's id */
    char meta_name[128];     /* fork of an S3 lane: its bucket document */
    char *meta_body;
    int held;                /* api_stores_hold taken on st */
    int reboot;              /* restore: boot again afterwards */
    char host_id[64];        /* restore + reboot of an S3 lane: lease check */
    int lease_r;
    int holds_lane;          /* on the busy list */
    snap_op_t *next_busy;
    uv_work_t work;
    uv_timer_t timer;
    snap_op_fn work_fn;      /* thread pool */
    snap_op_fn after_fn;     /* loop */
    snap_op_fn then_fn;      /* after a snapshot was taken (fork) */
    int frozen;
    int r;
    char msg[1024];
    int64_t t0, t_frozen, t_flushed, t_committed, t_thawed;
    uint64_t gen_before, gen_after;
    int nbd_flushed;
    json_object *result;     /* built in the worker (not shared) */
    store_gc_opts_t gc_opts;
    store_stats_t stats;     /* work_stats */
};

static struct snapshots *ctx_of(lanesd_t *d)
{
    return d->snapshots;
}

/* ---- helpers -------------------------------------------------------------------- */

static int snap_name_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > SNAP_NAME_MAX || s[0] == '.' || s[0] == '-')
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
              *p == '_' || *p == '-'))
            return 0;
    return 1;
}

static lane_rt_t *lane_by_id(lanesd_t *d, const char *id)
{
    for (lane_rt_t *l = d->lanes; l; l = l->next)
        if (!l->freeing && strcmp(l->id, id) == 0)
            return l;
    return NULL;
}

static const char *json_str(json_object *o, const char *key)
{
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static int body_bool(json_object *o, const char *key)
{
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v))
        return 0;
    return json_object_get_boolean(v);
}

static snap_op_t *op_new(lanesd_t *d, http_req_t *req, const lane_rt_t *l)
{
    snap_op_t *op = calloc(1, sizeof(*op));
    if (!op) {
        http_req_respond_error(req, 500, "internal", "out of memory");
        return NULL;
    }
    op->d = d;
    op->req = req;
    op->t0 = util_now_ms();
    op->st = d->store;
    if (l) {
        snprintf(op->lane_id, sizeof(op->lane_id), "%s", l->id);
        op->st = api_stores_lane_store(d, l->id);
    }
    return op;
}

static int lane_busy(lanesd_t *d, const char *id)
{
    for (snap_op_t *o = ctx_of(d)->busy; o; o = o->next_busy)
        if (strcmp(o->lane_id, id) == 0)
            return 1;
    return 0;
}

static int op_hold_lane(snap_op_t *op)
{
    struct snapshots *c = ctx_of(op->d);
    if (lane_busy(op->d, op->lane_id)) {
        http_req_respond_error(op->req, 409, "lane_busy", "a snapshot or restore of this lane is in progress");
        return -1;
    }
    op->holds_lane = 1;
    op->next_busy = c->busy;
    c->busy = op;
    return 0;
}

static void on_op_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void op_free(snap_op_t *op)
{
    if (op->holds_lane) {
        for (snap_op_t **pp = &ctx_of(op->d)->busy; *pp; pp = &(*pp)->next_busy)
            if (*pp == op) {
                *pp = op->next_busy;
                break;
            }
    }
    if (op->result)
        json_object_put(op->result);
    if (op->held)
        api_stores_hold(op->d, op->st, -1);
    free(op->meta_body);
    if (op->timer.data) {  /* timer initialised: free after close */
        op->timer.data = op;
        uv_close((uv_handle_t *)&op->timer, on_op_timer_closed);
        return;
    }
    free(op);
}

static void op_fail(snap_op_t *op, int status, const char *code)
{
    http_req_respond_error(op->req, status, code, "%s", op->msg[0] ? op->msg : strerror(-op->r));
    op_free(op);
}

static void on_work(uv_work_t *w)
{
    snap_op_t *op = w->data;
    op->work_fn(op);
}

static void on_after_work(uv_work_t *w, int status)
{
    snap_op_t *op = w->data;
    if (status < 0 && op->r == 0) {
        op->r = status;
        snprintf(op->msg, sizeof(op->msg), "work cancelled: %s", uv_strerror(status));
    }
    op->after_fn(op);
}

static void op_queue(snap_op_t *op, snap_op_fn work_fn, snap_op_fn after_fn)
{
    op->work_fn = work_fn;
    op->after_fn = after_fn;
    op->work.data = op;
    if (!op->held) {
        api_stores_hold(op->d, op->st, 1);
        op->held = 1;
    }
    int r = uv_queue_work(op->d->loop, &op->work, on_work, on_after_work);
    if (r < 0) {
        op->r = r;
        snprintf(op->msg, sizeof(op->msg), "cannot queue work: %s", uv_strerror(r));
        after_fn(op);
    }
}

static void set_store_err(snap_op_t *op, int r, char *err, const char *what)
{
    op->r = r;
    snprintf(op->msg, sizeof(op->msg), "%s: %s", what, err ? err : strerror(-r));
    free(err);
}

/* "snap/<id>/<s>" → lane id and snapshot name; 0 if it is not one. */
static int parse_snap_ref(const char *ref, char *id, size_t idlen, const char **snap)
{
    if (strncmp(ref, "snap/", 5) != 0)
        return 0;
    const char *slash = strchr(ref + 5, '/');
    if (!slash || (size_t)(slash - ref - 5) >= idlen)
        return 0;
    memcpy(id, ref + 5, (size_t)(slash - ref - 5));
    id[slash - ref - 5] = '\0';
    *snap = slash + 1;
    return 1;
}

/* A ref as users see it: "NAME" (own snapshot), "LANE@NAME", "image:NAME". */
static json_object *ref_display(lanesd_t *d, const char *own_id, const char *ref)
{
    char id[64];
    const char *snap;
    char buf[STORE_REF_NAME_MAX + 80];
    if (!ref || !ref[0])
        return NULL;
    if (parse_snap_ref(ref, id, sizeof(id), &snap)) {
        if (own_id && strcmp(id, own_id) == 0)
            return json_object_new_string(snap);
        lane_rt_t *o = lane_by_id(d, id);
        snprintf(buf, sizeof(buf), "%s@%s", o ? o->name : id, snap);
        return json_object_new_string(buf);
    }
    if (strncmp(ref, "image/", 6) == 0) {
        snprintf(buf, sizeof(buf), "image:%s", ref + 6);
        return json_object_new_string(buf);
    }
    return json_object_new_string(ref);
}

/* ---- NBD FLUSH over a unix socket (fixed newstyle, NBD_OPT_GO) -------------------- */

#define NBD_IHAVEOPT 0x49484156454F5054ull
#define NBD_REP_MAGIC 0x3e889045565a9ull
#define NBD_REQ_MAGIC 0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_OPT_GO 7u
#define NBD_REP_ACK 1u
#define NBD_CMD_DISC 2u
#define NBD_CMD_FLUSH 3u

static int nbd_io(int fd, void *buf, size_t len, int wr)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = wr ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -ECONNRESET;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int nbd_flush_unix(const char *path, char *msg, size_t msglen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(msg, msglen, "nbd socket path too long");
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = {.tv_sec = NBD_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int r;
    uint8_t hs[18];
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        r = -errno;
        snprintf(msg, msglen, "connect %s: %s", path, strerror(-r));
        goto out;
    }
    if ((r = nbd_io(fd, hs, sizeof(hs), 0)) < 0)
        goto io;
    uint64_t m1, m2;
    memcpy(&m1, hs, 8);
    memcpy(&m2, hs + 8, 8);
    uint16_t hflags = (uint16_t)(hs[16] << 8 | hs[17]);
    if (memcmp(hs, "NBDMAGIC", 8) != 0 || be64toh(m2) != NBD_IHAVEOPT || !(hflags & 1)) {
        r = -EPROTO;
        snprintf(msg, msglen, "nbd %s: not a fixed-newstyle server", path);
        goto out;
    }
    uint32_t cflags = htobe32(1u | (hflags & 2u)); /* FIXED_NEWSTYLE, NO_ZEROES if offered */
    uint8_t opt[16 + 6] = {0};
    uint64_t ihave = htobe64(NBD_IHAVEOPT);
    uint32_t o = htobe32(NBD_OPT_GO), olen = htobe32(6);
    memcpy(opt, &ihave, 8);
    memcpy(opt + 8, &o, 4);
    memcpy(opt + 12, &olen, 4); /* data: name length 0, no info requests */
    if ((r = nbd_io(fd, &cflags, 4, 1)) < 0 || (r = nbd_io(fd, opt, sizeof(opt), 1)) < 0)
        goto io;
    for (;;) {
        uint8_t rep[20];
        if ((r = nbd_io(fd, rep, sizeof(rep), 0)) < 0)
            goto io;
        uint64_t magic;
        uint32_t type, len;
        memcpy(&magic, rep, 8);
        memcpy(&type, rep + 12, 4);
        memcpy(&len, rep + 16, 4);
        type = be32toh(type);
        len = be32toh(len);
        if (be64toh(magic) != NBD_REP_MAGIC || len > 65536) {
            r = -EPROTO;
            snprintf(msg, msglen, "nbd %s: bad option reply", path);
            goto out;
        }
        uint8_t skip[512];
        while (len) {
            uint32_t n = len < sizeof(skip) ? len : (uint32_t)sizeof(skip);
            if ((r = nbd_io(fd, skip, n, 0)) < 0)
                goto io;
            len -= n;
        }
        if (type == NBD_REP_ACK)
            break;
        if (type & 0x80000000u) {
            r = -EPROTO;
            snprintf(msg, msglen, "nbd %s: server refused NBD_OPT_GO (%#x)", path, type);
            goto out;
        }
    }
    uint8_t req[28] = {0};
    uint32_t rm = htobe32(NBD_REQ_MAGIC);
    uint16_t cmd = htobe16(NBD_CMD_FLUSH);
    uint64_t cookie = htobe64(0x1a2e5);
    memcpy(req, &rm, 4);
    memcpy(req + 6, &cmd, 2);
    memcpy(req + 8, &cookie, 8);
    if ((r = nbd_io(fd, req, sizeof(req), 1)) < 0)
        goto io;
    uint8_t rep[16];
    if ((r = nbd_io(fd, rep, sizeof(rep), 0)) < 0)
        goto io;
    uint32_t rmagic, rerr;
    memcpy(&rmagic, rep, 4);
    memcpy(&rerr, rep + 4, 4);
    if (be32toh(rmagic) != NBD_SIMPLE_REPLY_MAGIC) {
        r = -EPROTO;
        snprintf(msg, msglen, "nbd %s: bad reply to FLUSH", path);
        goto out;
    }
    if (rerr) {
        r = -(int)be32toh(rerr);
        snprintf(msg, msglen, "nbd %s: FLUSH failed: %s", path, strerror(-r));
        goto out;
    }
    cmd = htobe16(NBD_CMD_DISC);
    memcpy(req + 6, &cmd, 2);
    nbd_io(fd, req, sizeof(req), 1); /* best effort */
    r = 0;
    goto out;
io:
    snprintf(msg, msglen, "nbd %s: %s", path, strerror(-r));
out:
    close(fd);
    return r;
}

/* ---- snapshot create ---------------------------------------------------------------- */

static json_object *snapshot_json(lanesd_t *d, const char *lane_id, const store_ref_t *ref, const char *name,
                                  int64_t unique_bytes)
{
    json_object *o = json_object_new_object();
    lane_rt_t *l = lane_by_id(d, lane_id);
    json_object_object_add(o, "name", json_object_new_string(name));
    json_object_object_add(o, "lane", json_object_new_string(l ? l->name : lane_id));
    json_object_object_add(o, "created_at", json_object_new_int64(ref->created));
    json_object_object_add(o, "parent", ref_display(d, lane_id, ref->parent));
    json_object_object_add(o, "size_bytes", json_object_new_int64((int64_t)ref->size));
    if (unique_bytes >= 0)
        json_object_object_add(o, "unique_bytes", json_object_new_int64(unique_bytes));
    return o;
}

/* Thread pool: flush the running disk (if any) and copy the ref. */
static void work_snapshot(snap_op_t *op)
{
    char dref[64], *err = NULL;
    store_ref_t ref;
    lanesd_t *d = op->d;
    snprintf(dref, sizeof(dref), "disk/%s", op->lane_id);
    if (store_ref_get(op->st, dref, &ref, NULL) == 0)
        op->gen_before = ref.generation;
    op->t_frozen = util_now_ms();
    if (op->frozen) {
        char sock[700];
        snprintf(sock, sizeof(sock), "%s/lanes/%s/nbd.sock", d->state_dir, op->lane_id);
        int r = nbd_flush_unix(sock, op->msg, sizeof(op->msg));
        if (r < 0) {
            op->r = r;
            return;
        }
        op->nbd_flushed = 1;
    }
    op->t_flushed = util_now_ms();
    int r = store_snapshot_create(op->st, op->lane_id, op->snap, &err);
    op->t_committed = util_now_ms();
    if (r < 0) {
        set_store_err(op, r, err, "create snapshot");
        return;
    }
    char sref[STORE_REF_NAME_MAX + 1];
    snprintf(sref, sizeof(sref), "snap/%s/%s", op->lane_id, op->snap);
    if (store_ref_get(op->st, sref, &ref, NULL) == 0)
        op->gen_after = ref.generation;
    store_ref_t disk;
    if (store_ref_get(op->st, dref, &disk, NULL) == 0)
        op->gen_after = disk.generation;
}

static void snapshot_respond(snap_op_t *op)
{
    lanesd_t *d = op->d;
    if (op->r < 0) {
        int exists = op->r == -EEXIST;
        op_fail(op, exists ? 409 : 500, exists ? "exists" : "snapshot_failed");
        return;
    }
    char sref[STORE_REF_NAME_MAX + 1];
    store_ref_t ref;
    snprintf(sref, sizeof(sref), "snap/%s/%s", op->lane_id, op->snap);
    if (store_ref_get(op->st, sref, &ref, NULL) < 0)
        memset(&ref, 0, sizeof(ref));
    lane_rt_t *l = lane_by_id(d, op->lane_id);
    char detail[256];
    snprintf(detail, sizeof(detail), "snapshot %s (%s, freeze %lld ms, flush %lld ms, commit %lld ms)", op->snap,
             op->frozen ? "running" : "stopped", (long long)(op->frozen ? op->t_frozen - op->t0 : 0),
             (long long)(op->t_flushed - op->t_frozen), (long long)(op->t_committed - op->t_flushed));
    db_event(d, op->lane_id, "snapshot", detail);
    util_log("lane %s: %s", l ? l->name : op->lane_id, detail);
    if (op->then_fn) {
        op->then_fn(op);
        return;
    }
    json_object *o = snapshot_json(d, op->lane_id, &ref, op->snap, -1);
    json_object *t = json_object_new_object();
    json_object_object_add(t, "freeze_ms", json_object_new_int64(op->frozen ? op->t_frozen - op->t0 : 0));
    json_object_object_add(t, "flush_ms", json_object_new_int64(op->t_flushed - op->t_frozen));
    json_object_object_add(t, "commit_ms", json_object_new_int64(op->t_committed - op->t_flushed));
    json_object_object_add(t, "thaw_ms", json_object_new_int64(op->frozen ? op->t_thawed - op->t_committed : 0));
    json_object_object_add(o, "timings", t);
    json_object_object_add(o, "running", json_object_new_boolean(op->frozen));
    json_object_object_add(o, "disk_generation_before", json_object_new_int64((int64_t)op->gen_before));
    json_object_object_add(o, "disk_generation", json_object_new_int64((int64_t)op->gen_after));
    http_req_respond_json(op->req, 201, o);
    op_free(op);
}

static void on_thawed(agent_t *a, int err, const char *msg, void *ud)
{
    snap_op_t *op = ud;
    op->t_thawed = util_now_ms();
    if (err) {
        util_log("lane %s: THAW failed: %s", op->lane_id, msg ? msg : strerror(err));
        db_event(op->d, op->lane_id, "thaw_failed", msg ? msg : strerror(err));
    }
    snapshot_respond(op);
}

static void after_snapshot(snap_op_t *op)
{
    if (!op->frozen) {
        snapshot_respond(op);
        return;
    }
    lane_rt_t *l = lane_by_id(op->d, op->lane_id);
    if (!l || !l->agent || agent_thaw(l->agent, on_thawed, op) < 0) {
        op->t_thawed = util_now_ms();
        snapshot_respond(op);
    }
}

static void on_frozen(agent_t *a, int err, const char *msg, void *ud)
{
    snap_op_t *op = ud;
    if (err) {
        op->r = -err;
        snprintf(op->msg, sizeof(op->msg), "guest freeze failed: %s", msg ? msg : strerror(err));
        lane_rt_t *l = lane_by_id(op->d, op->lane_id);
        if (l && l->agent)
            agent_thaw(l->agent, NULL, NULL); /* in case it froze after all */
        op_fail(op, 500, "freeze_failed");
        return;
    }
    op->frozen = 1;
    op_queue(op, work_snapshot, after_snapshot);
}

/* Start taking snapshot op->snap of lane l (op holds the lane). Answers the
 * request itself on failure; on success calls op->then_fn or answers 201. */
static void snapshot_start(snap_op_t *op, lane_rt_t *l)
{
    char sref[STORE_REF_NAME_MAX + 1];
    store_ref_t ref;
    snprintf(sref, sizeof(sref), "snap/%s/%s", l->id, op->snap);
    if (store_ref_get(op->st, sref, &ref, NULL) == 0) {
        http_req_respond_error(op->req, 409, "exists", "lane %s already has a snapshot named '%s'", l->name,
                               op->snap);
        op_free(op);
        return;
    }
    if (l->state == LANE_RUNNING) {
        if (!l->agent || !agent_is_ready(l->agent)) {
            http_req_respond_error(op->req, 503, "agent_unavailable",
                                   "lane %s is running but its guest agent is not connected; retry", l->name);
            op_free(op);
            return;
        }
        int r = agent_freeze(l->agent, on_frozen, op);
        if (r < 0) {
            http_req_respond_error(op->req, 500, "freeze_failed", "cannot ask the guest to freeze: %s",
                                   strerror(-r));
            op_free(op);
        }
        return;
    }
    if (lane_state_is_active(l->state) || l->teardown || l->nbdkit.pid > 0) {
        http_req_respond_error(op->req, 409, "lane_busy", "lane %s is %s; snapshot it when running or stopped",
                               l->name, lane_state_name(l->state));
        op_free(op);
        return;
    }
    /* Stopped: the ref is the whole state. */
    op_queue(op, work_snapshot, after_snapshot);
}

static void h_snapshot_create(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    json_object *body = http_req_json(req);
    if (!body)
        return;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    const char *name = json_str(body, "name");
    if (!snap_name_valid(name)) {
        http_req_respond_error(req, 400, "invalid",
                               "'name' must be 1-%d of A-Z a-z 0-9 . _ -, not starting with '.' or '-'",
                               SNAP_NAME_MAX);
        return;
    }
    snap_op_t *op = op_new(d, req, l);
    if (!op)
        return;
    snprintf(op->snap, sizeof(op->snap), "%s", name);
    if (op_hold_lane(op) < 0) {
        op_free(op);
        return;
    }
    snapshot_start(op, l);
}

/* ---- list / delete ------------------------------------------------------------------- */

struct usage_acc {
    snap_op_t *op;
    json_object *arr;
};

static int usage_add(const store_ref_usage_t *u, void *ud)
{
    struct usage_acc *acc = ud;
    const char *slash = strrchr(u->ref.name, '/');
    json_object *o = snapshot_json(acc->op->d, acc->op->lane_id, &u->ref, slash ? slash + 1 : u->ref.name,
                                   (int64_t)u->unique_bytes);
    json_object_object_add(o, "logical_bytes", json_object_new_int64((int64_t)u->logical_bytes));
    json_object_array_add(acc->arr, o);
    return 0;
}

static int usage_collect(const store_ref_usage_t *u, void *ud)
{
    json_object *arr = ud;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "ref", json_object_new_string(u->ref.name));
    json_object_object_add(o, "parent", json_object_new_string(u->ref.parent));
    json_object_object_add(o, "created", json_object_new_int64(u->ref.created));
    json_object_object_add(o, "size", json_object_new_int64((int64_t)u->ref.size));
    json_object_object_add(o, "logical", json_object_new_int64((int64_t)u->logical_bytes));
    json_object_object_add(o, "unique", json_object_new_int64((int64_t)u->unique_bytes));
    json_object_array_add(arr, o);
    return 0;
}

static void work_usage(snap_op_t *op)
{
    char prefix[64], *err = NULL;
    snprintf(prefix, sizeof(prefix), "snap/%s/", op->lane_id);
    op->result = json_object_new_array();
    int r = store_usage(op->st, prefix, usage_collect, op->result, &err);
    if (r < 0)
        set_store_err(op, r, err, "list snapshots");
}

static void after_usage(snap_op_t *op)
{
    if (op->r < 0) {
        op_fail(op, 500, "store_error");
        return;
    }
    json_object *arr = json_object_new_array();
    struct usage_acc acc = {op, arr};
    size_t n = json_object_array_length(op->result);
    for (size_t i = 0; i < n; i++) {
        json_object *raw = json_object_array_get_idx(op->result, i);
        store_ref_usage_t u;
        memset(&u, 0, sizeof(u));
        snprintf(u.ref.name, sizeof(u.ref.name), "%s", json_str(raw, "ref"));
        snprintf(u.ref.parent, sizeof(u.ref.parent), "%s", json_str(raw, "parent"));
        json_object *v;
        if (json_object_object_get_ex(raw, "created", &v))
            u.ref.created = json_object_get_int64(v);
        if (json_object_object_get_ex(raw, "size", &v))
            u.ref.size = (uint64_t)json_object_get_int64(v);
        if (json_object_object_get_ex(raw, "logical", &v))
            u.logical_bytes = (uint64_t)json_object_get_int64(v);
        if (json_object_object_get_ex(raw, "unique", &v))
            u.unique_bytes = (uint64_t)json_object_get_int64(v);
        usage_add(&u, &acc);
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "snapshots", arr);
    http_req_respond_json(op->req, 200, o);
    op_free(op);
}

static void h_snapshot_list(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    snap_op_t *op = op_new(d, req, l);
    if (op)
        op_queue(op, work_usage, after_usage);
}

static void gc_schedule(lanesd_t *d, store_t *st);

static void work_snapshot_delete(snap_op_t *op)
{
    char *err = NULL;
    int r = store_snapshot_delete(op->st, op->lane_id, op->snap, &err);
    if (r < 0)
        set_store_err(op, r, err, "delete snapshot");
}

static void after_snapshot_delete(snap_op_t *op)
{
    lane_rt_t *l = lane_by_id(op->d, op->lane_id);
    if (op->r == -ENOENT) {
        http_req_respond_error(op->req, 404, "snapshot_not_found", "lane %s has no snapshot '%s'",
                               l ? l->name : op->lane_id, op->snap);
        op_free(op);
        return;
    }
    if (op->r < 0) {
        op_fail(op, 500, "store_error");
        return;
    }
    char detail[128];
    snprintf(detail, sizeof(detail), "snapshot %s removed", op->snap);
    db_event(op->d, op->lane_id, "snapshot_rm", detail);
    util_log("lane %s: %s", l ? l->name : op->lane_id, detail);
    http_req_respond_raw(op->req, 204, NULL, NULL, 0);
    lanesd_t *d = op->d;
    store_t *st = op->st;
    op_free(op);
    gc_schedule(d, st);
}

static void h_snapshot_delete(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    const char *snap = http_req_param(req, "snap");
    if (!snap_name_valid(snap)) {
        http_req_respond_error(req, 404, "snapshot_not_found", "no snapshot '%s'", snap ? snap : "");
        return;
    }
    if (lane_busy(d, l->id)) {
        http_req_respond_error(req, 409, "lane_busy", "a snapshot or restore of this lane is in progress");
        return;
    }
    snap_op_t *op = op_new(d, req, l);
    if (!op)
        return;
    snprintf(op->snap, sizeof(op->snap), "%s", snap);
    if (op_hold_lane(op) < 0) {
        op_free(op);
        return;
    }
    op_queue(op, work_snapshot_delete, after_snapshot_delete);
}

/* ---- restore ------------------------------------------------------------------------ */

static int lane_quiet(const lane_rt_t *l)
{
    return !lane_state_is_active(l->state) && !l->teardown && l->qemu.pid <= 0 && l->nbdkit.pid <= 0;
}

/* Thread pool: disk := snapshot (for an S3 lane, published to the
 * bucket); before a reboot of an S3 lane also its lease check. */
static void work_restore(snap_op_t *op)
{
    char *err = NULL;
    int r = store_snapshot_restore(op->st, op->lane_id, op->snap, &err);
    if (r < 0) {
        set_store_err(op, r, err, "restore");
        return;
    }
    if (op->reboot && op->host_id[0]) {
        char dref[64];
        snprintf(dref, sizeof(dref), "disk/%s", op->lane_id);
        op->lease_r = store_lease_check(op->st, dref, op->host_id, &err);
        if (op->lease_r < 0)
            snprintf(op->msg, sizeof(op->msg), "restored, but %s", err ? err : strerror(-op->lease_r));
        free(err);
    }
}

static void after_restore(snap_op_t *op)
{
    lane_rt_t *l = lane_by_id(op->d, op->lane_id);
    if (op->r < 0) {
        op_fail(op, op->r == -ENOENT ? 404 : 500, op->r == -ENOENT ? "snapshot_not_found" : "store_error");
        return;
    }
    if (!l) {
        snprintf(op->msg, sizeof(op->msg), "lane was removed during restore");
        op->r = -ENOENT;
        op_fail(op, 409, "lane_gone");
        return;
    }
    char detail[128];
    snprintf(detail, sizeof(detail), "restored snapshot %s", op->snap);
    db_event(op->d, l->id, "restore", detail);
    util_log("lane %s: %s", l->name, detail);
    if (!op->reboot) {
        json_object *o = vm_lane_json(l);
        json_object_object_add(o, "restored", json_object_new_string(op->snap));
        http_req_respond_json(op->req, 200, o);
        op_free(op);
        return;
    }
    if (op->lease_r < 0) {
        op_fail(op, 409, "lane_busy");
        return;
    }
    if (op->host_id[0])
        api_stores_lease_checked(op->d, l->id); /* vm_lane_boot: no second GET */
    char msg[512] = "";
    if (vm_lane_boot(l, msg, sizeof(msg)) < 0) {
        snprintf(op->msg, sizeof(op->msg), "restored, but boot failed: %s", msg);
        op->r = -EIO;
        op_fail(op, 500, "boot_failed");
        return;
    }
    http_req_t *req = op->req;
    op_free(op);
    if (l->state == LANE_RUNNING)
        http_req_respond_json(req, 200, vm_lane_json(l));
    else
        vm_lane_add_waiter(l, req, LANE_RUNNING);
}

static void on_restore_poll(uv_timer_t *t)
{
    snap_op_t *op = t->data;
    lane_rt_t *l = lane_by_id(op->d, op->lane_id);
    if (!l) {
        op->r = -ENOENT;
        snprintf(op->msg, sizeof(op->msg), "lane was removed during restore");
        op_fail(op, 409, "lane_gone");
        return;
    }
    if (!lane_quiet(l)) {
        if (util_now_ms() - op->t0 > RESTORE_STOP_TIMEOUT_MS + 15000) {
            snprintf(op->msg, sizeof(op->msg), "lane %s did not stop", l->name);
            op->r = -ETIMEDOUT;
            op_fail(op, 500, "stop_timeout");
            return;
        }
        uv_timer_start(&op->timer, on_restore_poll, 100, 0);
        return;
    }
    op->reboot = 1;
    if (api_stores_lane_dir(op->d, l->id))
        snprintf(op->host_id, sizeof(op->host_id), "%s", api_stores_host_id(op->d));
    op_queue(op, work_restore, after_restore);
}

static void h_snapshot_restore(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    json_object *body = http_req_json(req);
    if (!body)
        return;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    const char *snap = http_req_param(req, "snap");
    char sref[STORE_REF_NAME_MAX + 1];
    store_ref_t ref;
    snprintf(sref, sizeof(sref), "snap/%s/%s", l->id, snap ? snap : "");
    if (!snap_name_valid(snap) || store_ref_get(api_stores_lane_store(d, l->id), sref, &ref, NULL) < 0) {
        http_req_respond_error(req, 404, "snapshot_not_found", "lane %s has no snapshot '%s'", l->name,
                               snap ? snap : "");
        return;
    }
    int reboot = body_bool(body, "reboot");
    if (!lane_quiet(l) && !reboot) {
        http_req_respond_error(req, 409, "lane_running",
                               "lane %s is %s; stop it first or restore with --reboot", l->name,
                               lane_state_name(l->state));
        return;
    }
    snap_op_t *op = op_new(d, req, l);
    if (!op)
        return;
    snprintf(op->snap, sizeof(op->snap), "%s", snap);
    if (op_hold_lane(op) < 0) {
        op_free(op);
        return;
    }
    if (lane_quiet(l)) {
        op_queue(op, work_restore, after_restore);
        return;
    }
    /* Running: stop, restore when everything is gone, boot again. */
    if (l->state != LANE_STOPPING && vm_lane_stop(l, RESTORE_STOP_TIMEOUT_MS) < 0) {
        snprintf(op->msg, sizeof(op->msg), "lane %s is %s", l->name, lane_state_name(l->state));
        op_fail(op, 409, "lane_busy");
        return;
    }
    uv_timer_init(d->loop, &op->timer);
    op->timer.data = op;
    uv_timer_start(&op->timer, on_restore_poll, 100, 0);
}

/* ---- fork ------------------------------------------------------------------------------ */

/* Thread pool: the fork's disk ref (and, in an S3 store, its lane
 * document: with both in the bucket every host that added the store
 * adopts the fork). */
static void work_fork(snap_op_t *op)
{
    char sref[STORE_REF_NAME_MAX + 1], *err = NULL;
    snprintf(sref, sizeof(sref), "snap/%s/%s", op->lane_id, op->snap);
    int r = store_disk_create(op->st, op->new_id, sref, 0, &err);
    if (r < 0) {
        set_store_err(op, r, err, "create fork disk");
        return;
    }
    if (op->meta_body && (r = store_meta_put(op->st, op->meta_name, op->meta_body, &err)) < 0) {
        set_store_err(op, r, err, "register the fork in the store's bucket");
        store_disk_delete(op->st, op->new_id, NULL);
    }
}

static void after_fork(snap_op_t *op)
{
    lanesd_t *d = op->d;
    api_stores_creating(d, op->new_id, 0);
    if (op->r < 0) {
        op_fail(op, op->r == -ENOENT ? 404 : 500, op->r == -ENOENT ? "snapshot_not_found" : "store_error");
        return;
    }
    lane_rt_t *src = lane_by_id(d, op->lane_id);
    lane_rt_t *l = NULL;
    if (!src || vm_lane_find(d, op->new_name) ||
        !(l = vm_lane_new_record(d, op->new_name, src->image, src->cpus, src->memory_mib, src->disk_gib))) {
        /* Lost a race (source removed, name taken meanwhile): undo. Rare,
         * so the cleanup may block the loop briefly. */
        store_disk_delete(op->st, op->new_id, NULL);
        if (op->meta_body)
            store_meta_delete(op->st, op->meta_name, NULL);
        snprintf(op->msg, sizeof(op->msg), "%s", !src ? "source lane was removed" : "a lane with that name exists");
        op->r = -EEXIST;
        op_fail(op, 409, !src ? "lane_gone" : "exists");
        return;
    }
    snprintf(l->id, sizeof(l->id), "%s", op->new_id);
    snprintf(l->dir, sizeof(l->dir), "%s/lanes/%s", d->state_dir, l->id);
    /* A fork runs under the same rules as its source: network, policy
     * (copied below, once the row exists), TTL and idle timeout. Secrets are
     * not copied: they are granted per lane. */
    l->network = src->network;
    l->ttl_s = src->ttl_s;
    l->idle_timeout_s = src->idle_timeout_s;
    char *policy = NULL;
    db_lane_policy_get(d, src->id, &policy);
    int recorded = util_mkdir_p(l->dir, 0700) == 0 && db_lane_insert(d, l) == 0 &&
                   (!policy || db_lane_policy_set(d, l->id, policy) == 0) &&
                   api_stores_lane_link(d, l->id, src->id) == 0;
    free(policy);
    if (!recorded) {
        char dref[64];
        snprintf(dref, sizeof(dref), "disk/%s", l->id);
        store_ref_delete(op->st, dref, NULL);
        db_lane_delete(d, l->id);
        util_rm_rf(l->dir);
        vm_lane_unlink_free(l);
        snprintf(op->msg, sizeof(op->msg), "cannot record lane %s", op->new_name);
        op->r = -EIO;
        op_fail(op, 500, "internal");
        return;
    }
    char detail[256];
    snprintf(detail, sizeof(detail), "forked from %s@%s", src->name, op->snap);
    db_event(d, l->id, "create", detail);
    util_log("lane %s: %s", l->name, detail);
    http_req_respond_json(op->req, 201, vm_lane_json(l));
    op_free(op);
}

/* Loop: the snapshot exists; make the fork's disk on the thread pool. */
static void fork_create(snap_op_t *op)
{
    lanesd_t *d = op->d;
    lane_rt_t *src = lane_by_id(d, op->lane_id);
    if (!src) {
        snprintf(op->msg, sizeof(op->msg), "source lane was removed");
        op->r = -ENOENT;
        op_fail(op, 409, "lane_gone");
        return;
    }
    if (vm_lane_find(d, op->new_name)) {
        snprintf(op->msg, sizeof(op->msg), "a lane named '%s' already exists", op->new_name);
        op->r = -EEXIST;
        op_fail(op, 409, "exists");
        return;
    }
    util_random_hex(op->new_id, 6);
    if (api_stores_lane_dir(d, src->id)) {
        /* S3: the lane document other hosts adopt the fork from. */
        lane_rt_t *tmp = calloc(1, sizeof(*tmp));
        if (tmp) {
            snprintf(tmp->name, sizeof(tmp->name), "%s", op->new_name);
            snprintf(tmp->id, sizeof(tmp->id), "%s", op->new_id);
            snprintf(tmp->image, sizeof(tmp->image), "%s", src->image);
            tmp->cpus = src->cpus;
            tmp->memory_mib = src->memory_mib;
            tmp->disk_gib = src->disk_gib;
            tmp->network = src->network;
            tmp->created_at = util_now_s();
            op->meta_body = api_stores_lane_doc(tmp, op->meta_name, sizeof(op->meta_name));
            free(tmp);
        }
        if (!op->meta_body) {
            op->r = -ENOMEM;
            op_fail(op, 500, "internal");
            return;
        }
        api_stores_creating(d, op->new_id, 1);
    }
    op_queue(op, work_fork, after_fork);
}

static void h_fork(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    json_object *body = http_req_json(req);
    if (!body)
        return;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    const char *name = json_str(body, "name");
    const char *snap = json_str(body, "snapshot");
    if (!name || !lane_name_valid(name)) {
        http_req_respond_error(req, 400, "invalid", "'name' must be a valid lane name");
        return;
    }
    if (snap && !snap_name_valid(snap)) {
        http_req_respond_error(req, 400, "invalid", "bad snapshot name '%s'", snap);
        return;
    }
    if (vm_lane_find(d, name)) {
        http_req_respond_error(req, 409, "exists", "a lane named '%s' already exists", name);
        return;
    }
    snap_op_t *op = op_new(d, req, l);
    if (!op)
        return;
    snprintf(op->new_name, sizeof(op->new_name), "%s", name);
    if (snap) {
        snprintf(op->snap, sizeof(op->snap), "%s", snap);
        fork_create(op);
        return;
    }
    /* From the current state: snapshot first (named after the fork). */
    snprintf(op->snap, sizeof(op->snap), "fork-%s", name);
    op->then_fn = fork_create;
    if (op_hold_lane(op) < 0) {
        op_free(op);
        return;
    }
    snapshot_start(op, l);
}

/* ---- store: gc, verify, stats ------------------------------------------------------------ */

static json_object *gc_json(const store_gc_result_t *g, int dry)
{
    json_object *o = json_object_new_object();
#define F(k) json_object_object_add(o, #k, json_object_new_int64((int64_t)g->k))
    F(refs);
    F(reachable);
    F(objects);
    F(bytes);
    F(garbage_objects);
    F(garbage_bytes);
    F(kept_recent);
    F(deleted_objects);
    F(deleted_bytes);
    F(deleted_tmp);
    F(live_writers);
    F(stale_writers);
#undef F
    json_object_object_add(o, "dry_run", json_object_new_boolean(dry));
    return o;
}

static void work_gc(snap_op_t *op)
{
    /* (S3 stores: store_gc lists other hosts' pending-upload markers and
     * pulls the bucket's refs before it marks; docs/s3.md.) */
    store_gc_result_t g;
    char *err = NULL;
    int r = store_gc(op->st, &op->gc_opts, &g, &err);
    if (r < 0)
        set_store_err(op, r, err, "gc");
    else
        op->result = gc_json(&g, op->gc_opts.dry_run);
}

static void gc_next(lanesd_t *d);

static void after_gc_auto(snap_op_t *op)
{
    struct snapshots *c = ctx_of(op->d);
    if (op->r < 0)
        util_log("store gc: %s", op->msg);
    else
        util_log("store gc: %s", json_object_to_json_string(op->result));
    if (op->result)
        json_object_put(op->result);
    if (op->held)
        api_stores_hold(op->d, op->st, -1);
    free(op);
    c->gc_running = 0;
    gc_next(c->d);
}

/* Start the next queued background GC, if none runs. */
static void gc_next(lanesd_t *d)
{
    struct snapshots *c = ctx_of(d);
    if (c->gc_running || c->gc_nqueue == 0 || d->shutting_down)
        return;
    store_t *st = c->gc_queue[0];
    memmove(c->gc_queue, c->gc_queue + 1, (size_t)(--c->gc_nqueue) * sizeof(c->gc_queue[0]));
    snap_op_t *op = calloc(1, sizeof(*op));
    if (!op) {
        api_stores_hold(d, st, -1);
        return;
    }
    op->d = d;
    op->st = st;
    op->held = 1; /* the queue's hold passes to the op */
    op->gc_opts.grace_s = -1;
    c->gc_running = 1;
    op_queue(op, work_gc, after_gc_auto);
}

/* Background GC of st after deletions in it (default grace period; one at
 * a time, each store queued at most once; S3 stores are held meanwhile). */
static void gc_schedule(lanesd_t *d, store_t *st)
{
    struct snapshots *c = ctx_of(d);
    for (int i = 0; i < c->gc_nqueue; i++)
        if (c->gc_queue[i] == st)
            return;
    if (!st || c->gc_nqueue >= GC_QUEUE_MAX)
        return;
    api_stores_hold(d, st, 1);
    c->gc_queue[c->gc_nqueue++] = st;
    gc_next(d);
}

/* The store a /v1/store request names (?store=NAME or body "store"; default
 * the local one); answers 404 itself and returns -1 if there is none. */
static int op_pick_store(snap_op_t *op, json_object *body)
{
    const char *name = http_req_query(op->req, "store");
    if (!name)
        name = json_str(body, "store");
    if (!name || !name[0] || !strcmp(name, "local"))
        return 0;
    store_t *st = api_stores_find(op->d, name);
    if (!st) {
        http_req_respond_error(op->req, 404, "store_not_found", "no available store named '%s' (see lanectl store ls)",
                               name);
        op_free(op);
        return -1;
    }
    op->st = st;
    return 0;
}

static void after_store_op(snap_op_t *op)
{
    if (op->r < 0) {
        op_fail(op, 500, "store_error");
        return;
    }
    http_req_respond_json(op->req, 200, json_object_get(op->result));
    op_free(op);
}

static void h_store_gc(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    json_object *body = http_req_json(req);
    if (!body)
        return;
    snap_op_t *op = op_new(d, req, NULL);
    if (!op)
        return;
    if (op_pick_store(op, body) < 0)
        return;
    json_object *v;
    op->gc_opts.grace_s = -1;
    if (json_object_object_get_ex(body, "grace_s", &v) && json_object_is_type(v, json_type_int))
        op->gc_opts.grace_s = json_object_get_int64(v);
    op->gc_opts.dry_run = body_bool(body, "dry_run");
    op_queue(op, work_gc, after_store_op);
}

static int verify_add(const store_verify_problem_t *p, void *ud)
{
    json_object *arr = ud;
    char hex[STORE_ID_HEX_LEN + 1];
    store_id_to_hex(&p->id, hex);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_string(hex));
    json_object_object_add(o, "type", json_object_new_string(p->is_page ? "page" : "chunk"));
    json_object_object_add(o, "problem", json_object_new_string(p->kind == STORE_PROBLEM_MISSING   ? "missing"
                                                                : p->kind == STORE_PROBLEM_CORRUPT ? "corrupt"
                                                                                                    : "unreadable"));
    json_object *refs = json_object_new_array();
    for (size_t i = 0; i < p->nrefs; i++)
        json_object_array_add(refs, json_object_new_string(p->refs[i]));
    json_object_object_add(o, "refs", refs);
    json_object_array_add(arr, o);
    return 0;
}

static void work_verify(snap_op_t *op)
{
    store_verify_result_t v;
    char *err = NULL;
    json_object *problems = json_object_new_array();
    int r = store_verify(op->st, verify_add, problems, &v, &err);
    if (r < 0) {
        json_object_put(problems);
        set_store_err(op, r, err, "verify");
        return;
    }
    op->result = json_object_new_object();
    json_object_object_add(op->result, "ok", json_object_new_boolean(r == 0));
    json_object_object_add(op->result, "refs", json_object_new_int64((int64_t)v.refs));
    json_object_object_add(op->result, "objects_checked", json_object_new_int64((int64_t)v.objects_checked));
    json_object_object_add(op->result, "bytes_checked", json_object_new_int64((int64_t)v.bytes_checked));
    json_object_object_add(op->result, "problems", problems);
}

static void h_store_verify(http_req_t *req, void *ctx)
{
    snap_op_t *op = op_new(ctx, req, NULL);
    if (op && op_pick_store(op, NULL) == 0)
        op_queue(op, work_verify, after_store_op);
}

static void work_stats(snap_op_t *op)
{
    store_stats_t st;
    char *err = NULL;
    int r = store_stats(op->st, &st, &err);
    if (r < 0) {
        set_store_err(op, r, err, "stats");
        return;
    }
    json_object *o = json_object_new_object();
#define F(k) json_object_object_add(o, #k, json_object_new_int64((int64_t)st.k))
    F(refs);
    F(virtual_bytes);
    F(logical_bytes);
    F(unique_chunks);
    F(unique_bytes);
    F(pages);
    F(page_bytes);
    F(objects);
    F(physical_bytes);
    F(garbage_objects);
    F(garbage_bytes);
#undef F
    json_object_object_add(o, "dedup_ratio", json_object_new_double(st.dedup_ratio));
    op->result = o;
    op->stats = st;
}

/* Keep what a stats run of the local store measured, for /metrics. */
static void stats_remember(snap_op_t *op)
{
    struct snapshots *c = ctx_of(op->d);
    if (op->r == 0 && op->result && op->st == op->d->store) {
        c->stats = op->stats;
        c->stats_at_ms = util_now_ms();
    }
}

static void after_stats(snap_op_t *op)
{
    stats_remember(op);
    after_store_op(op);
}

static void after_stats_bg(snap_op_t *op)
{
    struct snapshots *c = ctx_of(op->d);
    stats_remember(op);
    if (op->r < 0)
        util_log("store stats for metrics: %s", op->msg);
    if (op->result)
        json_object_put(op->result);
    if (op->held)
        api_stores_hold(op->d, op->st, -1);
    free(op);
    c->stats_running = 0;
}

static void h_store_stats(http_req_t *req, void *ctx)
{
    snap_op_t *op = op_new(ctx, req, NULL);
    if (op && op_pick_store(op, NULL) == 0)
        op_queue(op, work_stats, after_stats);
}

#define STATS_MAX_AGE_MS (60 * 1000)

int api_snapshots_store_stats_cached(lanesd_t *d, store_stats_t *out, int64_t *at_ms)
{
    struct snapshots *c = ctx_of(d);
    if (!c || !d->store)
        return 0;
    if (!c->stats_running && !d->shutting_down && util_now_ms() - c->stats_at_ms > STATS_MAX_AGE_MS) {
        snap_op_t *op = calloc(1, sizeof(*op));
        if (op) {
            op->d = d;
            op->st = d->store;
            c->stats_running = 1;
            op_queue(op, work_stats, after_stats_bg);
        }
    }
    if (!c->stats_at_ms)
        return 0;
    *out = c->stats;
    *at_ms = c->stats_at_ms;
    return 1;
}

/* ---- lineage, lane removal, agent reconnect ------------------------------------------------ */

/* The ref a lane's disk came from outside the lane itself: an image or
 * another lane's snapshot (walking up through the lane's own snapshots). */
static int lane_origin(lanesd_t *d, const char *id, char *out, size_t outlen)
{
    char cur[STORE_REF_NAME_MAX + 1], own[64];
    store_ref_t ref;
    snprintf(cur, sizeof(cur), "disk/%s", id);
    snprintf(own, sizeof(own), "snap/%s/", id);
    for (int hop = 0; hop < LINEAGE_MAX_HOPS; hop++) {
        if (store_ref_get(api_stores_lane_store(d, id), cur, &ref, NULL) < 0 || !ref.parent[0])
            return hop ? (snprintf(out, outlen, "%s", cur), 0) : -ENOENT;
        if (strncmp(ref.parent, own, strlen(own)) != 0) {
            snprintf(out, outlen, "%s", ref.parent);
            return 0;
        }
        snprintf(cur, sizeof(cur), "%s", ref.parent);
    }
    return -ELOOP;
}

void api_snapshots_lineage(const lane_rt_t *l, json_object *o)
{
    lanesd_t *d = l->d;
    char origin[STORE_REF_NAME_MAX + 1], id[64];
    const char *snap;
    if (!d->snapshots || !d->store)
        return;
    if (lane_origin(d, l->id, origin, sizeof(origin)) == 0) {
        json_object *p = json_object_new_object();
        if (parse_snap_ref(origin, id, sizeof(id), &snap)) {
            lane_rt_t *pl = lane_by_id(d, id);
            json_object_object_add(p, "lane", pl ? json_object_new_string(pl->name) : NULL);
            json_object_object_add(p, "snapshot", json_object_new_string(snap));
        } else if (strncmp(origin, "image/", 6) == 0) {
            json_object_object_add(p, "image", json_object_new_string(origin + 6));
        }
        json_object_object_add(p, "ref", json_object_new_string(origin));
        json_object_object_add(o, "parent", p);
    }
    json_object *children = json_object_new_array();
    for (lane_rt_t *c = d->lanes; c; c = c->next) {
        if (c == l || c->freeing || lane_origin(d, c->id, origin, sizeof(origin)) < 0 ||
            !parse_snap_ref(origin, id, sizeof(id), &snap) || strcmp(id, l->id) != 0)
            continue;
        json_object *ch = json_object_new_object();
        json_object_object_add(ch, "lane", json_object_new_string(c->name));
        json_object_object_add(ch, "snapshot", json_object_new_string(snap));
        json_object_array_add(children, ch);
    }
    json_object_object_add(o, "children", children);
}

int api_snapshots_lane_removed(lanesd_t *d, const char *lane_id, char **err)
{
    int r = store_disk_delete(api_stores_lane_store(d, lane_id), lane_id, err);
    if (r >= 0 && d->snapshots)
        gc_schedule(d, d->store);
    return r < 0 ? r : 0;
}

void api_snapshots_gc_schedule(lanesd_t *d, store_t *st)
{
    if (d->snapshots)
        gc_schedule(d, st);
}

void api_snapshots_agent_ready(lane_rt_t *l)
{
    /* A guest left frozen by a lanesd that died mid-snapshot is thawed;
     * unless a snapshot of ours is in flight. */
    if (l->agent && l->d->snapshots && !lane_busy(l->d, l->id))
        agent_thaw(l->agent, NULL, NULL);
}

void api_snapshots_register(lanesd_t *d)
{
    struct snapshots *c = calloc(1, sizeof(*c));
    if (!c) {
        util_log("snapshots: out of memory; snapshot API disabled");
        return;
    }
    c->d = d;
    d->snapshots = c;
    http_server_route(d->http, "GET", "/v1/lanes/{name}/snapshots", 0, h_snapshot_list, d);
    http_server_route(d->http, "POST", "/v1/lanes/{name}/snapshots", 0, h_snapshot_create, d);
    http_server_route(d->http, "DELETE", "/v1/lanes/{name}/snapshots/{snap}", 0, h_snapshot_delete, d);
    http_server_route(d->http, "POST", "/v1/lanes/{name}/snapshots/{snap}/restore", 0, h_snapshot_restore, d);
    http_server_route(d->http, "POST", "/v1/lanes/{name}/fork", 0, h_fork, d);
    http_server_route(d->http, "POST", "/v1/store/gc", 0, h_store_gc, d);
    http_server_route(d->http, "POST", "/v1/store/verify", 0, h_store_verify, d);
    http_server_route(d->http, "GET", "/v1/store/stats", 0, h_store_stats, d);
}
