/* api_stores.c — block stores other than the host's local one (S3), and the
 * lanes that live in them.
 *
 *   GET    /v1/stores            the local store + every added S3 store
 *   POST   /v1/stores            add one: {"name","type":"s3","endpoint",
 *                                "bucket","prefix","region","credentials_file",
 *                                "profile","flush":"local|remote",
 *                                "allow_unenforced_leases":bool,"vhost":bool}
 *   DELETE /v1/stores/{name}     forget it on this host (the bucket stays)
 *
 * State: table stores(name, type, dir, created_at) and lane_stores(lane_id,
 * store) in lanesd's database; each S3 store's local side lives in
 * STATE/stores/NAME (store.h: store_create_s3; backend.conf there holds the
 * credentials file's *path*, never a secret), all sharing one clean-chunk
 * cache STATE/s3cache.  In the bucket, besides the block store's objects and
 * refs, each lane has a document meta/lanes/<name>.json (its configuration):
 * every lanesd that added the store adopts those lanes (a sync at store add
 * and every SYNC_PERIOD_MS), so `lanectl ls` shows them and `lanectl boot`
 * boots them from the bucket.
 *
 * Hosts: this lanesd's holder id (STATE/host-id, random, made once) names it
 * in lane leases.  The lease itself is taken, renewed and released by the
 * lane's nbdkit-laness3-plugin (it is the writer and needs the fencing
 * token); lanesd checks it before a boot to refuse with a clear message
 * (store_lease_check: held by another host, or a store that does not
 * enforce conditional writes and a lane another host used last).
 *
 * Credentials: only the file's path is ever accepted, stored, passed to the
 * plugin or shown.  Error messages from the S3 client are scrubbed of key
 * material (s3_scrub).
 *
 * Threading: handlers and bookkeeping run on the uv loop; every S3 call
 * (store add's probe, a lane's create with the image upload on first use,
 * the sync's LIST + GETs, fork registration) runs on the libuv thread pool
 * (stores_job_t), so a slow or failing store never stalls the API.  A job
 * names its store by name and re-finds it afterwards (the table compacts);
 * while jobs use a store's store_t (busy > 0, also taken by other modules
 * through api_stores_hold) the store cannot be removed, and at shutdown a
 * busy store_t is left open for the exiting process.  Remaining on the
 * loop: store rm's final publish.  A boot through the API checks the lease
 * on the thread pool first (api_stores_boot_precheck; restore --reboot
 * does it with the restore) and vm_lane_boot's own check then uses that
 * result.  rm through the API removes the
 * bucket side on the thread pool first (api_stores_remove_precheck), then
 * the handler runs again and forgets the lane here.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lanesd.h"

#define SYNC_PERIOD_MS 5000
#define STORES_MAX 32

typedef struct store_ent {
    char name[64];
    char dir[600];
    store_t *st;
    int busy;    /* thread-pool jobs using st */
    int adding;  /* store add in flight: name reserved, not listed */
    int syncing; /* a sync job is in flight */
} store_ent_t;

/* One piece of S3 work on the thread pool. */
typedef struct stores_job stores_job_t;
struct stores_job {
    lanesd_t *d;
    char store[64];
    store_t *st;              /* held (busy) for the job's duration, or NULL */
    http_req_t *req;          /* answered by after_fn, or NULL */
    uv_work_t work;
    void (*work_fn)(stores_job_t *j);
    void (*after_fn)(stores_job_t *j);
    int r;
    char *err;
    /* sync */
    char **docs;
    int ndocs;
    /* store add */
    json_object *body;
    char dir[600], cache[600];
    int enforced;
    /* lane create */
    char lane_id[32];
    char image[64];
    char meta_name[128];
    char *meta_body;
    uint64_t disk_bytes;
    store_t *local;
    char *policy;
    /* boot check: the handler to run again once the lease check passed */
    http_handler_fn again;
};

#define CREATING_MAX 64

struct api_stores {
    store_ent_t v[STORES_MAX];
    int n;
    char host_id[64];
    uv_timer_t sync_timer;
    char creating[CREATING_MAX][32]; /* lane ids being created (no sync) */
    struct {
        char lane_id[32];
        int64_t at_ms;
    } checked[CREATING_MAX]; /* lease checks passed on the thread pool */
    char removed[CREATING_MAX][32]; /* lanes whose bucket side rm already removed */
};

#define CHECK_FRESH_MS 3000

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return 0;
    return s[0] != '-';
}

static store_ent_t *ent_find(lanesd_t *d, const char *name)
{
    struct api_stores *a = d->stores;
    for (int i = 0; a && i < a->n; i++)
        if (!strcmp(a->v[i].name, name))
            return &a->v[i];
    return NULL;
}

static int db_run(lanesd_t *d, const char *sql, const char *a1, const char *a2, const char *a3)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    const char *args[3] = {a1, a2, a3};
    for (int i = 0; i < 3; i++)
        if (args[i])
            sqlite3_bind_text(st, i + 1, args[i], -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -EIO;
}

/* Name of the store lane_id lives in, into out; 0 if local. */
static int lane_store_name(lanesd_t *d, const char *lane_id, char *out, size_t cap)
{
    sqlite3_stmt *st;
    int found = 0;
    if (sqlite3_prepare_v2(d->db, "SELECT store FROM lane_stores WHERE lane_id=?", -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_text(st, 1, lane_id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
        found = 1;
    }
    sqlite3_finalize(st);
    return found;
}

static store_ent_t *lane_ent(lanesd_t *d, const char *lane_id)
{
    char name[64];
    return lane_store_name(d, lane_id, name, sizeof(name)) ? ent_find(d, name) : NULL;
}

static store_ent_t *ent_of_store(lanesd_t *d, const store_t *st)
{
    struct api_stores *a = d->stores;
    for (int i = 0; st && a && i < a->n; i++)
        if (a->v[i].st == st)
            return &a->v[i];
    return NULL;
}

static int creating_has(lanesd_t *d, const char *id)
{
    for (int i = 0; i < CREATING_MAX; i++)
        if (d->stores->creating[i][0] && !strcmp(d->stores->creating[i], id))
            return 1;
    return 0;
}

/* ---- thread-pool jobs ---- */

static void on_job_work(uv_work_t *w)
{
    stores_job_t *j = w->data;
    j->work_fn(j);
}

static void job_free(stores_job_t *j)
{
    if (j->st)
        api_stores_hold(j->d, j->st, -1);
    for (int i = 0; i < j->ndocs; i++)
        free(j->docs[i]);
    free(j->docs);
    if (j->body)
        json_object_put(j->body);
    free(j->meta_body);
    free(j->policy);
    free(j->err);
    free(j);
}

static void on_job_after(uv_work_t *w, int status)
{
    stores_job_t *j = w->data;
    if (status < 0 && j->r == 0) {
        j->r = status;
        j->err = strdup("work cancelled");
    }
    j->after_fn(j);
    job_free(j);
}

/* New job on store e (held until the job is freed); NULL: out of memory. */
static stores_job_t *job_new(lanesd_t *d, store_ent_t *e, http_req_t *req)
{
    stores_job_t *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->d = d;
    j->req = req;
    if (e) {
        snprintf(j->store, sizeof(j->store), "%s", e->name);
        j->st = e->st;
        if (j->st)
            e->busy++;
    }
    return j;
}

static void job_queue(stores_job_t *j, void (*work_fn)(stores_job_t *), void (*after_fn)(stores_job_t *))
{
    j->work_fn = work_fn;
    j->after_fn = after_fn;
    j->work.data = j;
    int r = uv_queue_work(j->d->loop, &j->work, on_job_work, on_job_after);
    if (r < 0) {
        j->r = r;
        j->err = strdup(uv_strerror(r));
        after_fn(j);
        job_free(j);
    }
}

/* ---- helpers for other modules (lanesd.h) ---- */

void api_stores_hold(lanesd_t *d, store_t *st, int delta)
{
    store_ent_t *e = d->stores ? ent_of_store(d, st) : NULL;
    if (e)
        e->busy += delta;
}

void api_stores_creating(lanesd_t *d, const char *lane_id, int on)
{
    struct api_stores *a = d->stores;
    if (!a)
        return;
    for (int i = 0; i < CREATING_MAX; i++) {
        if (on && !a->creating[i][0]) {
            snprintf(a->creating[i], sizeof(a->creating[i]), "%s", lane_id);
            return;
        }
        if (!on && !strcmp(a->creating[i], lane_id)) {
            a->creating[i][0] = '\0';
            return;
        }
    }
}

int api_stores_lane_link(lanesd_t *d, const char *lane_id, const char *src_lane_id)
{
    char name[64];
    if (!lane_store_name(d, src_lane_id, name, sizeof(name)))
        return 0;
    return db_run(d, "INSERT OR REPLACE INTO lane_stores(lane_id, store) VALUES(?,?)", lane_id, name, NULL);
}


const char *api_stores_host_id(lanesd_t *d)
{
    return d->stores ? d->stores->host_id : "";
}

const char *api_stores_lane_dir(lanesd_t *d, const char *lane_id)
{
    store_ent_t *e = lane_ent(d, lane_id);
    return e ? e->dir : NULL;
}

store_t *api_stores_lane_store(lanesd_t *d, const char *lane_id)
{
    store_ent_t *e = lane_ent(d, lane_id);
    return e ? e->st : d->store;
}

store_t *api_stores_find(lanesd_t *d, const char *name)
{
    store_ent_t *e = ent_find(d, name);
    return e && !e->adding ? e->st : NULL;
}

void api_stores_lane_json(lanesd_t *d, const char *lane_id, json_object *o)
{
    char name[64];
    json_object_object_add(o, "store",
                           json_object_new_string(lane_store_name(d, lane_id, name, sizeof(name)) ? name : "local"));
}

/* A passed lease check of lane_id younger than CHECK_FRESH_MS (consumed). */
static int checked_take(lanesd_t *d, const char *lane_id)
{
    struct api_stores *a = d->stores;
    for (int i = 0; i < CREATING_MAX; i++)
        if (a->checked[i].lane_id[0] && !strcmp(a->checked[i].lane_id, lane_id)) {
            int fresh = util_now_ms() - a->checked[i].at_ms < CHECK_FRESH_MS;
            a->checked[i].lane_id[0] = '\0';
            return fresh;
        }
    return 0;
}

static void checked_put(lanesd_t *d, const char *lane_id)
{
    struct api_stores *a = d->stores;
    int slot = 0;
    for (int i = 0; i < CREATING_MAX; i++) {
        if (!strcmp(a->checked[i].lane_id, lane_id) || !a->checked[i].lane_id[0]) {
            slot = i;
            break;
        }
        if (a->checked[i].at_ms < a->checked[slot].at_ms)
            slot = i;
    }
    snprintf(a->checked[slot].lane_id, sizeof(a->checked[slot].lane_id), "%s", lane_id);
    a->checked[slot].at_ms = util_now_ms();
}

void api_stores_lease_checked(lanesd_t *d, const char *lane_id)
{
    if (d->stores)
        checked_put(d, lane_id);
}

static int lease_msg(const char *lane, const char *store, int r, const char *err, char *msg, size_t msglen)
{
    snprintf(msg, msglen, "lane %s (store %s): %s", lane, store, err ? err : strerror(-r));
    return r;
}

int api_stores_boot_check(lane_rt_t *l, char *msg, size_t msglen)
{
    store_ent_t *e = lane_ent(l->d, l->id);
    if (!e)
        return 0;
    if (!e->st) {
        snprintf(msg, msglen, "lane %s lives in store %s, which could not be opened on this host", l->name, e->name);
        return -EIO;
    }
    if (checked_take(l->d, l->id)) /* checked off the loop just now (boot API) */
        return 0;
    char ref[80], *err = NULL;
    snprintf(ref, sizeof(ref), "disk/%s", l->id);
    int r = store_lease_check(e->st, ref, l->d->stores->host_id, &err);
    if (r < 0)
        lease_msg(l->name, e->name, r, err, msg, msglen);
    free(err);
    return r;
}

/* Thread pool: the lease check of a boot. */
static void work_boot_check(stores_job_t *j)
{
    char ref[80];
    snprintf(ref, sizeof(ref), "disk/%s", j->lane_id);
    j->r = store_lease_check(j->st, ref, j->d->stores->host_id, &j->err);
}

static void after_boot_check(stores_job_t *j)
{
    lanesd_t *d = j->d;
    if (j->r < 0) {
        char msg[1024];
        lease_msg(j->meta_name, j->store, j->r, j->err, msg, sizeof(msg));
        http_req_respond_error(j->req, 409, "lane_busy", "%s", msg);
        return;
    }
    checked_put(d, j->lane_id);
    j->again(j->req, d); /* the handler again: boots without a second GET */
}

int api_stores_boot_precheck(lanesd_t *d, lane_rt_t *l, http_req_t *req, http_handler_fn again)
{
    store_ent_t *e = lane_ent(d, l->id);
    if (!e || !e->st)
        return 0; /* local lane, or vm_lane_boot reports the unavailable store */
    struct api_stores *a = d->stores;
    for (int i = 0; i < CREATING_MAX; i++)
        if (!strcmp(a->checked[i].lane_id, l->id) && util_now_ms() - a->checked[i].at_ms < CHECK_FRESH_MS)
            return 0; /* second pass: checked just now */
    if (creating_has(d, l->id)) {
        http_req_respond_error(req, 409, "lane_busy", "lane %s is being created or removed; retry", l->name);
        return 1;
    }
    stores_job_t *j = job_new(d, e, req);
    if (!j)
        return 0; /* fall back to the check on the loop */
    snprintf(j->lane_id, sizeof(j->lane_id), "%s", l->id);
    snprintf(j->meta_name, sizeof(j->meta_name), "%s", l->name);
    j->again = again;
    job_queue(j, work_boot_check, after_boot_check);
    return 1;
}

/* Copy the local store's image/<image> into st (first use of the image in
 * that store): a sparse raw file in dir in between, then the normal import.
 * Thread pool (both stores are thread-safe). */
static int image_copy_in(store_t *local, store_t *st, const char *dir, const char *image, char **err)
{
    char ref[128], tmp[700];
    snprintf(ref, sizeof(ref), "image/%s", image);
    store_disk_t *src = NULL;
    store_disk_opts_t o = {.readonly = 1};
    int r = store_disk_open(local, ref, &o, &src, err);
    if (r < 0)
        return r;
    snprintf(tmp, sizeof(tmp), "%s/import-%s.raw", dir, image);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        store_disk_close(src);
        return -errno;
    }
    uint64_t size = store_disk_size(src), off = 0;
    char *buf = malloc(1 << 20);
    if (!buf)
        r = -ENOMEM;
    while (r == 0 && off < size) {
        uint64_t len;
        int zero;
        if ((r = store_disk_extent(src, off, size - off, &len, &zero, err)) < 0)
            break;
        for (uint64_t done = 0; !zero && done < len && r == 0;) {
            size_t n = len - done > (1u << 20) ? (1u << 20) : (size_t)(len - done);
            if ((r = store_disk_read(src, buf, n, off + done, err)) < 0)
                break;
            if (pwrite(fd, buf, n, (off_t)(off + done)) != (ssize_t)n)
                r = -EIO;
            done += n;
        }
        off += len;
    }
    if (r == 0 && ftruncate(fd, (off_t)size) < 0)
        r = -errno;
    close(fd);
    free(buf);
    store_disk_close(src);
    if (r == 0)
        r = store_image_import(st, image, tmp, NULL, NULL, err);
    unlink(tmp);
    return r;
}

char *api_stores_lane_doc(const lane_rt_t *l, char *meta_name, size_t cap)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "lanes_lane", json_object_new_int(1));
    json_object_object_add(o, "name", json_object_new_string(l->name));
    json_object_object_add(o, "id", json_object_new_string(l->id));
    json_object_object_add(o, "image", json_object_new_string(l->image));
    json_object_object_add(o, "cpus", json_object_new_int(l->cpus));
    json_object_object_add(o, "memory_mib", json_object_new_int(l->memory_mib));
    json_object_object_add(o, "disk_gib", json_object_new_int(l->disk_gib));
    json_object_object_add(o, "network", json_object_new_int(l->network));
    json_object_object_add(o, "created_at", json_object_new_int64(l->created_at));
    char *body = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    snprintf(meta_name, cap, "lanes/%s.json", l->name);
    return body;
}

/* Thread pool: image (first use), disk, lane document. */
static void work_lane_create(stores_job_t *j)
{
    char ref[128];
    snprintf(ref, sizeof(ref), "image/%s", j->image);
    store_ref_t r0;
    int r = store_refresh(j->st, &j->err);
    if (r == 0 && store_ref_get(j->st, ref, &r0, NULL) == -ENOENT) {
        util_log("store %s: importing image %s (first use in this store)", j->store, j->image);
        r = image_copy_in(j->local, j->st, j->dir, j->image, &j->err);
    }
    if (r == 0)
        r = store_disk_create(j->st, j->lane_id, ref, j->disk_bytes, &j->err);
    if (r == 0 && (r = store_meta_put(j->st, j->meta_name, j->meta_body, &j->err)) < 0) {
        store_disk_delete(j->st, j->lane_id, NULL);
        store_meta_delete(j->st, j->meta_name, NULL);
    }
    j->r = r;
}

static lane_rt_t *lane_by_id(lanesd_t *d, const char *id)
{
    for (lane_rt_t *l = d->lanes; l; l = l->next)
        if (!l->freeing && !strcmp(l->id, id))
            return l;
    return NULL;
}

static void after_lane_create(stores_job_t *j)
{
    lanesd_t *d = j->d;
    api_stores_creating(d, j->lane_id, 0);
    lane_rt_t *l = lane_by_id(d, j->lane_id);
    if (j->r == 0 && !l) {
        util_log("store %s: lane %s was removed while it was being created; removing its disk", j->store, j->lane_id);
        store_disk_delete(j->st, j->lane_id, NULL); /* rare: accept a blocking cleanup */
        store_meta_delete(j->st, j->meta_name, NULL);
        http_req_respond_error(j->req, 409, "lane_gone", "the lane was removed while it was being created");
        return;
    }
    if (j->r < 0) {
        http_req_respond_error(j->req, 500, "store_error", "create disk for lane %s: %s", l ? l->name : j->lane_id,
                               j->err ? j->err : strerror(-j->r));
        db_run(d, "DELETE FROM lane_stores WHERE lane_id=?", j->lane_id, NULL, NULL);
        if (l)
            vm_lane_unlink_free(l);
        return;
    }
    if (util_mkdir_p(l->dir, 0700) < 0 || db_lane_insert(d, l) < 0 ||
        (j->policy && db_lane_policy_set(d, l->id, j->policy) < 0)) {
        http_req_respond_error(j->req, 500, "internal", "cannot record lane %s", l->name);
        db_run(d, "DELETE FROM lane_stores WHERE lane_id=?", l->id, NULL, NULL);
        db_lane_delete(d, l->id);
        util_rm_rf(l->dir);
        vm_lane_unlink_free(l);
        return;
    }
    db_event(d, l->id, "create", l->name);
    util_log("lane %s: created in store %s (id %s, image %s, %d cpu, %d MiB, %d GiB, network %s)", l->name, j->store,
             l->id, l->image, l->cpus, l->memory_mib, l->disk_gib, l->network ? "mediated" : "none");
    http_req_respond_json(j->req, 201, vm_lane_json(l));
}

void api_stores_lane_create_start(lanesd_t *d, lane_rt_t *l, const char *store, uint64_t disk_bytes,
                                  const char *policy, http_req_t *req)
{
    store_ent_t *e = ent_find(d, store);
    if (!e || !e->st) {
        http_req_respond_error(req, 404, "store_not_found", "%s",
                               e ? "store could not be opened on this host" : "no such store (see lanectl store ls)");
        vm_lane_unlink_free(l);
        return;
    }
    stores_job_t *j = job_new(d, e, req);
    if (!j || !(j->meta_body = api_stores_lane_doc(l, j->meta_name, sizeof(j->meta_name))) ||
        (policy && !(j->policy = strdup(policy))) ||
        db_run(d, "INSERT OR REPLACE INTO lane_stores(lane_id, store) VALUES(?,?)", l->id, e->name, NULL) < 0) {
        if (j)
            job_free(j);
        http_req_respond_error(req, 500, "internal", "out of memory");
        vm_lane_unlink_free(l);
        return;
    }
    snprintf(j->lane_id, sizeof(j->lane_id), "%s", l->id);
    snprintf(j->image, sizeof(j->image), "%s", l->image);
    snprintf(j->dir, sizeof(j->dir), "%s", e->dir);
    j->disk_bytes = disk_bytes;
    j->local = d->store;
    api_stores_creating(d, l->id, 1);
    job_queue(j, work_lane_create, after_lane_create);
}

/* Find (and with take, forget) lane_id in the removed list. */
static int removed_has(lanesd_t *d, const char *lane_id, int take)
{
    struct api_stores *a = d->stores;
    for (int i = 0; i < CREATING_MAX; i++)
        if (a->removed[i][0] && !strcmp(a->removed[i], lane_id)) {
            if (take)
                a->removed[i][0] = '\0';
            return 1;
        }
    return 0;
}

/* Thread pool: the lane's document and disk refs leave the bucket. */
static void work_lane_remove(stores_job_t *j)
{
    j->r = store_meta_delete(j->st, j->meta_name, &j->err);
    if (j->r == 0 || j->r == -ENOENT)
        j->r = store_disk_delete(j->st, j->lane_id, &j->err);
    if (j->r > 0)
        j->r = 0;
}

static void after_lane_remove(stores_job_t *j)
{
    lanesd_t *d = j->d;
    api_stores_creating(d, j->lane_id, 0);
    if (j->r < 0) {
        http_req_respond_error(j->req, 500, "internal", "delete disk of lane %s in its store: %s", j->image,
                               j->err ? j->err : strerror(-j->r));
        return;
    }
    struct api_stores *a = d->stores;
    for (int i = 0; i < CREATING_MAX; i++)
        if (!a->removed[i][0]) {
            snprintf(a->removed[i], sizeof(a->removed[i]), "%s", j->lane_id);
            break;
        }
    api_snapshots_gc_schedule(d, j->st); /* its chunks, once nothing else names them */
    j->again(j->req, d); /* the handler again: forgets the lane here */
}

int api_stores_remove_precheck(lanesd_t *d, lane_rt_t *l, http_req_t *req, http_handler_fn again)
{
    store_ent_t *e = lane_ent(d, l->id);
    if (!e || !e->st || removed_has(d, l->id, 0))
        return 0;
    if (creating_has(d, l->id)) {
        http_req_respond_error(req, 409, "lane_busy", "lane %s is being created or removed; retry", l->name);
        return 1;
    }
    stores_job_t *j = job_new(d, e, req);
    if (!j)
        return 0; /* fall back to removing on the loop */
    snprintf(j->lane_id, sizeof(j->lane_id), "%s", l->id);
    snprintf(j->image, sizeof(j->image), "%s", l->name); /* for messages */
    snprintf(j->meta_name, sizeof(j->meta_name), "lanes/%s.json", l->name);
    j->again = again;
    api_stores_creating(d, l->id, 1);
    job_queue(j, work_lane_remove, after_lane_remove);
    return 1;
}

int api_stores_lane_removed(lanesd_t *d, const lane_rt_t *l, char **err)
{
    store_ent_t *e = lane_ent(d, l->id);
    if (!e)
        return 0;
    int r = 0;
    if (removed_has(d, l->id, 1)) {
        /* the bucket side is gone already (api_stores_remove_precheck) */
    } else if (e->st) {
        char meta[128];
        snprintf(meta, sizeof(meta), "lanes/%s.json", l->name);
        if ((r = store_meta_delete(e->st, meta, err)) == 0)
            r = store_disk_delete(e->st, l->id, err);
    }
    if (r >= 0)
        db_run(d, "DELETE FROM lane_stores WHERE lane_id=?", l->id, NULL, NULL);
    return r < 0 ? r : 0;
}

/* ---- lanes of other hosts ---- */

struct meta_names {
    char names[256][128];
    int n;
};

static int collect_meta(const char *name, void *ud)
{
    struct meta_names *m = ud;
    size_t len = strlen(name);
    if (m->n < 256 && len > 5 && len < 128 && !strcmp(name + len - 5, ".json"))
        snprintf(m->names[m->n++], sizeof(m->names[0]), "%s", name);
    return 0;
}

/* Thread pool: pull the bucket's refs and its lane documents into j->docs. */
static void work_sync(stores_job_t *j)
{
    struct meta_names *m = calloc(1, sizeof(*m));
    if (!m) {
        j->r = -ENOMEM;
        return;
    }
    if ((j->r = store_refresh(j->st, &j->err)) < 0 ||
        (j->r = store_meta_list(j->st, "lanes/", collect_meta, m, &j->err)) < 0) {
        free(m);
        return;
    }
    j->r = 0;
    j->docs = calloc((size_t)m->n + 1, sizeof(char *));
    for (int i = 0; j->docs && i < m->n; i++) {
        char *body = NULL;
        if (store_meta_get(j->st, m->names[i], &body, NULL) == 0)
            j->docs[j->ndocs++] = body;
    }
    free(m);
}

/* Loop: adopt lanes the bucket has and this host does not; forget stopped
 * lanes whose disks are gone from the bucket (removed on another host). */
static void sync_apply(lanesd_t *d, store_ent_t *e, stores_job_t *j)
{
    for (int i = 0; i < j->ndocs; i++) {
        json_object *o = json_tokener_parse(j->docs[i]), *v;
        const char *name = o && json_object_object_get_ex(o, "name", &v) ? json_object_get_string(v) : NULL;
        const char *id = o && json_object_object_get_ex(o, "id", &v) ? json_object_get_string(v) : NULL;
        char ref[80];
        store_ref_t dref;
        if (!name || !id || strlen(name) >= 64 || strlen(id) >= 32 || !name_ok(name) || creating_has(d, id)) {
            json_object_put(o);
            continue;
        }
        snprintf(ref, sizeof(ref), "disk/%s", id);
        lane_rt_t *have = vm_lane_find(d, name);
        if (have || store_ref_get(e->st, ref, &dref, NULL) < 0) {
            if (have && strcmp(have->id, id))
                util_log("store %s: lane %s exists here with another id; not adopting %s", e->name, name, id);
            json_object_put(o);
            continue;
        }
        lane_rt_t *l = vm_lane_new(d);
        if (!l) {
            json_object_put(o);
            break;
        }
        snprintf(l->id, sizeof(l->id), "%s", id);
        snprintf(l->name, sizeof(l->name), "%s", name);
        snprintf(l->image, sizeof(l->image), "%s",
                 json_object_object_get_ex(o, "image", &v) ? json_object_get_string(v) : "");
        l->cpus = json_object_object_get_ex(o, "cpus", &v) ? json_object_get_int(v) : 1;
        l->memory_mib = json_object_object_get_ex(o, "memory_mib", &v) ? json_object_get_int(v) : 512;
        l->disk_gib = json_object_object_get_ex(o, "disk_gib", &v) ? json_object_get_int(v) : 4;
        l->network = json_object_object_get_ex(o, "network", &v) ? json_object_get_int(v) : 0;
        l->created_at = json_object_object_get_ex(o, "created_at", &v) ? json_object_get_int64(v) : util_now_s();
        l->state = LANE_STOPPED;
        snprintf(l->dir, sizeof(l->dir), "%s/lanes/%s", d->state_dir, l->id);
        json_object_put(o);
        if (util_mkdir_p(l->dir, 0700) < 0 || db_lane_insert(d, l) < 0 ||
            db_run(d, "INSERT OR REPLACE INTO lane_stores(lane_id, store) VALUES(?,?)", l->id, e->name, NULL) < 0) {
            db_lane_delete(d, l->id);
            vm_lane_unlink_free(l);
            continue;
        }
        db_event(d, l->id, "adopt", e->name);
        util_log("lane %s: found in store %s (id %s), added here", l->name, e->name, l->id);
    }
    /* Lanes of this store whose disk is gone from the bucket. */
    for (lane_rt_t *l = d->lanes, *next; l; l = next) {
        next = l->next;
        char sname[64], ref[80];
        store_ref_t dref;
        if (l->freeing || lane_state_is_active(l->state) || l->qemu.pid > 0 || l->nbdkit.pid > 0 ||
            creating_has(d, l->id) || !lane_store_name(d, l->id, sname, sizeof(sname)) || strcmp(sname, e->name))
            continue;
        snprintf(ref, sizeof(ref), "disk/%s", l->id);
        if (store_ref_get(e->st, ref, &dref, NULL) != -ENOENT)
            continue;
        util_log("lane %s: removed from store %s by another host; forgetting it here", l->name, e->name);
        db_run(d, "DELETE FROM lane_stores WHERE lane_id=?", l->id, NULL, NULL);
        db_lane_delete(d, l->id);
        db_event(d, l->id, "rm", "removed from the store by another host");
        util_rm_rf(l->dir);
        vm_lane_unlink_free(l);
    }
}

static void after_sync(stores_job_t *j)
{
    store_ent_t *e = ent_find(j->d, j->store);
    if (!e || e->st != j->st)
        return;
    e->syncing = 0;
    if (j->r < 0) {
        util_log("store %s: sync: %s", e->name, j->err ? j->err : strerror(-j->r));
        return;
    }
    if (!j->d->shutting_down)
        sync_apply(j->d, e, j);
}

static void sync_start(lanesd_t *d, store_ent_t *e)
{
    if (e->syncing || e->adding || !e->st)
        return;
    stores_job_t *j = job_new(d, e, NULL);
    if (!j)
        return;
    e->syncing = 1;
    job_queue(j, work_sync, after_sync);
}

static void on_sync_timer(uv_timer_t *t)
{
    lanesd_t *d = t->data;
    if (d->shutting_down)
        return;
    for (int i = 0; i < d->stores->n; i++)
        sync_start(d, &d->stores->v[i]);
}

/* ---- backend.conf (for listing; the file holds no secret) ---- */

static json_object *store_json(lanesd_t *d, const store_ent_t *e)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(e ? e->name : "local"));
    json_object_object_add(o, "type", json_object_new_string(e ? "s3" : "local"));
    int lanes = 0;
    for (lane_rt_t *l = d->lanes; l; l = l->next) {
        char sname[64];
        int in = lane_store_name(d, l->id, sname, sizeof(sname));
        if (!l->freeing && ((e && in && !strcmp(sname, e->name)) || (!e && !in)))
            lanes++;
    }
    json_object_object_add(o, "lanes", json_object_new_int(lanes));
    if (!e)
        return o;
    char path[700], line[1024];
    snprintf(path, sizeof(path), "%s/backend.conf", e->dir);
    FILE *f = fopen(path, "re");
    static const char *keys[] = {"endpoint", "bucket", "prefix", "region", "credentials_file", "profile",
                                 "durability", "conditional_writes", "allow_unenforced_leases"};
    while (f && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *eq = strchr(line, '=');
        if (!eq || line[0] == '#')
            continue;
        *eq = '\0';
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
            if (!strcmp(line, keys[k])) {
                const char *out = !strcmp(line, "durability") ? "flush" : line;
                if (!strcmp(line, "allow_unenforced_leases"))
                    json_object_object_add(o, out, json_object_new_boolean(atoi(eq + 1)));
                else
                    json_object_object_add(o, out, json_object_new_string(eq + 1));
            }
    }
    if (f)
        fclose(f);
    json_object_object_add(o, "available", json_object_new_boolean(e->st != NULL));
    return o;
}

static void h_stores_list(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    json_object *arr = json_object_new_array();
    json_object_array_add(arr, store_json(d, NULL));
    for (int i = 0; i < d->stores->n; i++)
        if (!d->stores->v[i].adding)
            json_object_array_add(arr, store_json(d, &d->stores->v[i]));
    json_object *o = json_object_new_object();
    json_object_object_add(o, "stores", arr);
    http_req_respond_json(req, 200, o);
}

static const char *jstr(json_object *b, const char *k)
{
    json_object *v;
    return json_object_object_get_ex(b, k, &v) && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                                                           : NULL;
}

static int jbool(json_object *b, const char *k)
{
    json_object *v;
    return json_object_object_get_ex(b, k, &v) && json_object_get_boolean(v);
}

/* Thread pool: probe the bucket, make the local side, open it, first sync. */
static void work_store_add(stores_job_t *j)
{
    json_object *body = j->body;
    const char *flush = jstr(body, "flush");
    store_s3_config_t cfg = {
        .endpoint = jstr(body, "endpoint"),
        .bucket = jstr(body, "bucket"),
        .prefix = jstr(body, "prefix") ? jstr(body, "prefix") : "",
        .region = jstr(body, "region"),
        .credentials_file = jstr(body, "credentials_file"),
        .profile = jstr(body, "profile"),
        .vhost = jbool(body, "vhost"),
        .durability = flush && !strcmp(flush, "remote") ? STORE_DURABILITY_REMOTE : STORE_DURABILITY_LOCAL,
        .cache_dir = j->cache,
        .allow_unenforced_leases = jbool(body, "allow_unenforced_leases"),
    };
    util_rm_rf(j->dir); /* leftovers of an earlier add of this name */
    int r = store_create_s3(j->dir, &cfg, NULL, &j->enforced, &j->err);
    if (r == 0)
        r = store_open(j->dir, 0, &j->st, &j->err);
    if (r < 0) {
        util_rm_rf(j->dir);
        j->r = r;
        return;
    }
    work_sync(j);
    if (j->r < 0) { /* the store is fine; its lanes come with the next sync */
        util_log("store %s: first sync: %s", j->store, j->err ? j->err : strerror(-j->r));
        free(j->err);
        j->err = NULL;
        j->r = 0;
    }
}

static void after_store_add(stores_job_t *j)
{
    lanesd_t *d = j->d;
    struct api_stores *a = d->stores;
    store_ent_t *e = ent_find(d, j->store);
    http_req_t *req = j->req;
    char now[32];
    snprintf(now, sizeof(now), "%lld", (long long)util_now_s());
    if (j->r == 0 && e &&
        db_run(d, "INSERT INTO stores(name, type, dir, created_at) VALUES(?,'s3',?,?)", e->name, e->dir, now) < 0) {
        j->r = -EIO;
        j->err = strdup("state database error");
    }
    if (j->r < 0 || !e) {
        int r = j->r;
        http_req_respond_error(req, r == -EACCES || r == -EINVAL ? 400 : r == -EIO ? 500 : 502, "store_error",
                               "add store %s: %s", j->store, j->err ? j->err : strerror(-r));
        if (j->st) {
            store_close(j->st);
            j->st = NULL;
            util_rm_rf(j->dir);
        }
        if (e)
            *e = a->v[--a->n];
        return;
    }
    e->st = j->st;
    e->adding = 0;
    e->busy++; /* balanced by job_free's release of j->st */
    int allow = jbool(j->body, "allow_unenforced_leases");
    util_log("store %s: added (s3, conditional writes %s%s)", e->name, j->enforced ? "enforced" : "NOT enforced",
             !j->enforced && allow ? "; lanes may move between hosts at the operator's risk" : "");
    sync_apply(d, e, j);
    json_object *o = store_json(d, e);
    if (!j->enforced)
        json_object_object_add(
            o, "warning",
            json_object_new_string(allow ? "this store does not enforce conditional writes: leases are best effort; "
                                           "you must make sure only one host uses a lane at a time"
                                         : "this store does not enforce conditional writes: a lane can be used only "
                                           "from the host that used it last (no moves between hosts)"));
    http_req_respond_json(req, 201, o);
}

static void h_store_add(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    struct api_stores *a = d->stores;
    json_object *body = http_req_json(req);
    if (!body)
        return;
    const char *name = jstr(body, "name"), *type = jstr(body, "type");
    const char *cred = jstr(body, "credentials_file"), *flush = jstr(body, "flush");
    if (!name || !name_ok(name) || !strcmp(name, "local")) {
        http_req_respond_error(req, 400, "invalid", "'name': 1-63 of a-z, 0-9 and '-' (not 'local')");
        return;
    }
    if (!type || strcmp(type, "s3")) {
        http_req_respond_error(req, 400, "invalid", "'type' must be \"s3\"");
        return;
    }
    if (!jstr(body, "endpoint") || !jstr(body, "bucket")) {
        http_req_respond_error(req, 400, "invalid", "'endpoint' and 'bucket' are required");
        return;
    }
    if (!cred || cred[0] != '/') {
        http_req_respond_error(req, 400, "invalid",
                               "'credentials_file' (an absolute path to an AWS-style credentials file) is required; "
                               "keys themselves are never accepted");
        return;
    }
    if (json_object_object_get_ex(body, "access_key", NULL) || json_object_object_get_ex(body, "secret_key", NULL) ||
        json_object_object_get_ex(body, "aws_secret_access_key", NULL)) {
        http_req_respond_error(req, 400, "invalid", "keys are never accepted in requests: use credentials_file");
        return;
    }
    if (flush && strcmp(flush, "local") && strcmp(flush, "remote")) {
        http_req_respond_error(req, 400, "invalid", "'flush' must be \"local\" or \"remote\"");
        return;
    }
    if (ent_find(d, name)) {
        http_req_respond_error(req, 409, "exists", "a store named '%s' already exists", name);
        return;
    }
    if (a->n >= STORES_MAX) {
        http_req_respond_error(req, 409, "too_many", "at most %d stores", STORES_MAX);
        return;
    }
    store_ent_t *e = &a->v[a->n++];
    memset(e, 0, sizeof(*e));
    snprintf(e->name, sizeof(e->name), "%s", name);
    snprintf(e->dir, sizeof(e->dir), "%s/stores/%s", d->state_dir, name);
    e->adding = 1; /* name reserved; probe and first sync off the loop */
    stores_job_t *j = job_new(d, e, req);
    if (!j) {
        *e = a->v[--a->n];
        http_req_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    j->body = json_object_get(body);
    snprintf(j->dir, sizeof(j->dir), "%s", e->dir);
    snprintf(j->cache, sizeof(j->cache), "%s/s3cache", d->state_dir);
    char sdir[600];
    snprintf(sdir, sizeof(sdir), "%s/stores", d->state_dir);
    util_mkdir_p(sdir, 0700);
    job_queue(j, work_store_add, after_store_add);
}

static void h_store_rm(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    struct api_stores *a = d->stores;
    const char *name = http_req_param(req, "name");
    store_ent_t *e = name ? ent_find(d, name) : NULL;
    if (!e) {
        http_req_respond_error(req, 404, "store_not_found", "no store named '%s'", name ? name : "");
        return;
    }
    if (e->busy || e->adding || e->syncing) {
        http_req_respond_error(req, 409, "store_busy", "store %s has work in progress (add, sync, create, snapshot or "
                               "gc): retry shortly", e->name);
        return;
    }
    for (lane_rt_t *l = d->lanes; l; l = l->next) {
        char sname[64];
        if (lane_store_name(d, l->id, sname, sizeof(sname)) && !strcmp(sname, e->name) &&
            (lane_state_is_active(l->state) || l->nbdkit.pid > 0)) {
            http_req_respond_error(req, 409, "store_busy", "lane %s of store %s is %s: stop it first", l->name,
                                   e->name, lane_state_name(l->state));
            return;
        }
    }
    char *err = NULL;
    if (e->st && store_publish(e->st, &err) < 0) {
        http_req_respond_error(req, 409, "store_busy",
                               "store %s still has data not uploaded to the bucket: %s (retry when it is reachable)",
                               e->name, err ? err : "?");
        free(err);
        return;
    }
    /* Forget its lanes here; they stay in the bucket. */
    for (lane_rt_t *l = d->lanes, *next; l; l = next) {
        next = l->next;
        char sname[64];
        if (lane_store_name(d, l->id, sname, sizeof(sname)) && !strcmp(sname, e->name)) {
            db_lane_delete(d, l->id);
            util_rm_rf(l->dir);
            vm_lane_unlink_free(l);
        }
    }
    db_run(d, "DELETE FROM lane_stores WHERE store=?", e->name, NULL, NULL);
    db_run(d, "DELETE FROM stores WHERE name=?", e->name, NULL, NULL);
    store_close(e->st);
    util_rm_rf(e->dir);
    util_log("store %s: removed from this host", e->name);
    *e = a->v[--a->n];
    http_req_respond_raw(req, 204, NULL, NULL, 0);
}

/* ---- setup ---- */

static void host_id_load(lanesd_t *d, char *out, size_t cap)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/host-id", d->state_dir);
    FILE *f = fopen(path, "re");
    if (f) {
        if (fgets(out, (int)cap, f))
            out[strcspn(out, "\r\n")] = '\0';
        fclose(f);
        if (out[0])
            return;
    }
    char rnd[17];
    util_random_hex(rnd, 8);
    snprintf(out, cap, "lanesd-%s", rnd);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        dprintf(fd, "%s\n", out);
        fsync(fd);
        close(fd);
    }
}

void api_stores_register(lanesd_t *d)
{
    struct api_stores *a = calloc(1, sizeof(*a));
    if (!a) {
        util_log("stores: out of memory");
        return;
    }
    d->stores = a;
    host_id_load(d, a->host_id, sizeof(a->host_id));
    sqlite3_exec(d->db,
                 "CREATE TABLE IF NOT EXISTS stores(name TEXT PRIMARY KEY, type TEXT NOT NULL, dir TEXT NOT NULL,"
                 " created_at INTEGER NOT NULL);"
                 "CREATE TABLE IF NOT EXISTS lane_stores(lane_id TEXT PRIMARY KEY, store TEXT NOT NULL);",
                 NULL, NULL, NULL);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(d->db, "SELECT name, dir FROM stores ORDER BY name", -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW && a->n < STORES_MAX) {
            store_ent_t *e = &a->v[a->n++];
            snprintf(e->name, sizeof(e->name), "%s", (const char *)sqlite3_column_text(st, 0));
            snprintf(e->dir, sizeof(e->dir), "%s", (const char *)sqlite3_column_text(st, 1));
            char *err = NULL;
            /* Unreachable now: lanes stay listed, boots fail with a message. */
            if (store_open(e->dir, 0, &e->st, &err) < 0)
                util_log("store %s: cannot open: %s", e->name, err ? err : "?");
            free(err);
        }
        sqlite3_finalize(st);
    }
    http_server_route(d->http, "GET", "/v1/stores", 0, h_stores_list, d);
    http_server_route(d->http, "POST", "/v1/stores", 0, h_store_add, d);
    http_server_route(d->http, "DELETE", "/v1/stores/{name}", 0, h_store_rm, d);
    uv_timer_init(d->loop, &a->sync_timer);
    a->sync_timer.data = d;
    uv_timer_start(&a->sync_timer, on_sync_timer, SYNC_PERIOD_MS, SYNC_PERIOD_MS);
    uv_unref((uv_handle_t *)&a->sync_timer);
}

void api_stores_close(lanesd_t *d)
{
    struct api_stores *a = d->stores;
    if (!a)
        return;
    for (int i = 0; i < a->n; i++)
        if (!a->v[i].busy) /* busy: a worker still uses it; the process is exiting */
            store_close(a->v[i].st);
    a->n = 0;
}
