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
 * Threading: the uv loop thread only.  S3 calls here block the loop (store
 * add: a probe of a few requests; lane create: the image upload on first
 * use; sync: one LIST + GETs) — acceptable for a first cut, noted in
 * docs/s3.md.
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
} store_ent_t;

struct api_stores {
    store_ent_t v[STORES_MAX];
    int n;
    char host_id[64];
    uv_timer_t sync_timer;
};

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

/* ---- helpers for other modules (lanesd.h) ---- */

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

void api_stores_lane_json(lanesd_t *d, const char *lane_id, json_object *o)
{
    char name[64];
    json_object_object_add(o, "store",
                           json_object_new_string(lane_store_name(d, lane_id, name, sizeof(name)) ? name : "local"));
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
    char ref[80], *err = NULL;
    snprintf(ref, sizeof(ref), "disk/%s", l->id);
    int r = store_lease_check(e->st, ref, l->d->stores->host_id, &err);
    if (r < 0)
        snprintf(msg, msglen, "lane %s (store %s): %s", l->name, e->name, err ? err : strerror(-r));
    free(err);
    return r;
}

/* Copy the local store's image/<image> into st (first use of the image in
 * that store): a sparse raw file in between, then the normal import. */
static int image_copy_in(lanesd_t *d, store_ent_t *e, const char *image, char **err)
{
    char ref[128], tmp[700];
    snprintf(ref, sizeof(ref), "image/%s", image);
    store_disk_t *src = NULL;
    store_disk_opts_t o = {.readonly = 1};
    int r = store_disk_open(d->store, ref, &o, &src, err);
    if (r < 0)
        return r;
    snprintf(tmp, sizeof(tmp), "%s/import-%s.raw", e->dir, image);
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
        r = store_image_import(e->st, image, tmp, NULL, NULL, err);
    unlink(tmp);
    return r;
}

static json_object *lane_meta_json(const lane_rt_t *l)
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
    return o;
}

int api_stores_lane_create(lanesd_t *d, lane_rt_t *l, const char *store, uint64_t disk_bytes, char **err)
{
    store_ent_t *e = ent_find(d, store);
    if (!e || !e->st) {
        if (err)
            *err = strdup(e ? "store could not be opened on this host" : "no such store (see lanectl store ls)");
        return -ENOENT;
    }
    char ref[128], meta[128];
    snprintf(ref, sizeof(ref), "image/%s", l->image);
    store_ref_t r0;
    int r = store_refresh(e->st, err);
    if (r == 0 && store_ref_get(e->st, ref, &r0, NULL) == -ENOENT) {
        util_log("store %s: importing image %s (first use in this store)", e->name, l->image);
        r = image_copy_in(d, e, l->image, err);
    }
    if (r == 0)
        r = store_disk_create(e->st, l->id, ref, disk_bytes, err);
    if (r < 0)
        return r;
    snprintf(meta, sizeof(meta), "lanes/%s.json", l->name);
    json_object *o = lane_meta_json(l);
    r = store_meta_put(e->st, meta, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), err);
    json_object_put(o);
    if (r == 0 && db_run(d, "INSERT OR REPLACE INTO lane_stores(lane_id, store) VALUES(?,?)", l->id, e->name, NULL) < 0)
        r = -EIO;
    if (r < 0) {
        store_disk_delete(e->st, l->id, NULL);
        store_meta_delete(e->st, meta, NULL);
    }
    return r;
}

int api_stores_lane_removed(lanesd_t *d, const lane_rt_t *l, char **err)
{
    store_ent_t *e = lane_ent(d, l->id);
    if (!e)
        return 0;
    int r = 0;
    if (e->st) {
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

/* Adopt lanes the bucket has and this host does not; forget stopped lanes
 * whose documents are gone from the bucket (removed on another host). */
static void store_sync(lanesd_t *d, store_ent_t *e)
{
    char *err = NULL;
    struct meta_names *m = calloc(1, sizeof(*m));
    if (!m || !e->st)
        goto out;
    if (store_refresh(e->st, &err) < 0 || store_meta_list(e->st, "lanes/", collect_meta, m, &err) < 0) {
        util_log("store %s: sync: %s", e->name, err ? err : "failed");
        goto out;
    }
    for (int i = 0; i < m->n; i++) {
        char *body = NULL;
        if (store_meta_get(e->st, m->names[i], &body, NULL) < 0)
            continue;
        json_object *o = json_tokener_parse(body), *v;
        free(body);
        const char *name = o && json_object_object_get_ex(o, "name", &v) ? json_object_get_string(v) : NULL;
        const char *id = o && json_object_object_get_ex(o, "id", &v) ? json_object_get_string(v) : NULL;
        char ref[80];
        store_ref_t dref;
        if (!name || !id || strlen(name) >= 64 || strlen(id) >= 32 || !name_ok(name)) {
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
            !lane_store_name(d, l->id, sname, sizeof(sname)) || strcmp(sname, e->name))
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
out:
    free(err);
    free(m);
}

static void on_sync_timer(uv_timer_t *t)
{
    lanesd_t *d = t->data;
    if (d->shutting_down)
        return;
    for (int i = 0; i < d->stores->n; i++)
        store_sync(d, &d->stores->v[i]);
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
    store_ent_t *e = &a->v[a->n];
    memset(e, 0, sizeof(*e));
    snprintf(e->name, sizeof(e->name), "%s", name);
    snprintf(e->dir, sizeof(e->dir), "%s/stores/%s", d->state_dir, name);
    char cache[600], sdir[600];
    snprintf(cache, sizeof(cache), "%s/s3cache", d->state_dir);
    snprintf(sdir, sizeof(sdir), "%s/stores", d->state_dir);
    util_mkdir_p(sdir, 0700);
    util_rm_rf(e->dir); /* leftovers of an earlier add of this name */
    store_s3_config_t cfg = {
        .endpoint = jstr(body, "endpoint"),
        .bucket = jstr(body, "bucket"),
        .prefix = jstr(body, "prefix") ? jstr(body, "prefix") : "",
        .region = jstr(body, "region"),
        .credentials_file = cred,
        .profile = jstr(body, "profile"),
        .vhost = jbool(body, "vhost"),
        .durability = flush && !strcmp(flush, "remote") ? STORE_DURABILITY_REMOTE : STORE_DURABILITY_LOCAL,
        .cache_dir = cache,
        .allow_unenforced_leases = jbool(body, "allow_unenforced_leases"),
    };
    char *err = NULL;
    int enforced = 0;
    int r = store_create_s3(e->dir, &cfg, NULL, &enforced, &err);
    if (r == 0)
        r = store_open(e->dir, 0, &e->st, &err);
    if (r < 0) {
        http_req_respond_error(req, r == -EACCES || r == -EINVAL ? 400 : 502, "store_error", "add store %s: %s", name,
                               err ? err : strerror(-r));
        free(err);
        util_rm_rf(e->dir);
        return;
    }
    char now[32];
    snprintf(now, sizeof(now), "%lld", (long long)util_now_s());
    if (db_run(d, "INSERT INTO stores(name, type, dir, created_at) VALUES(?,'s3',?,?)", e->name, e->dir, now) < 0) {
        store_close(e->st);
        util_rm_rf(e->dir);
        http_req_respond_error(req, 500, "internal", "state database error");
        return;
    }
    a->n++;
    util_log("store %s: added (s3, conditional writes %s%s)", name, enforced ? "enforced" : "NOT enforced",
             !enforced && cfg.allow_unenforced_leases ? "; lanes may move between hosts at the operator's risk" : "");
    store_sync(d, e);
    json_object *o = store_json(d, e);
    if (!enforced)
        json_object_object_add(
            o, "warning",
            json_object_new_string(cfg.allow_unenforced_leases
                                       ? "this store does not enforce conditional writes: leases are best effort; "
                                         "you must make sure only one host uses a lane at a time"
                                       : "this store does not enforce conditional writes: a lane can be used only "
                                         "from the host that used it last (no moves between hosts)"));
    http_req_respond_json(req, 201, o);
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
        store_close(a->v[i].st);
    a->n = 0;
}
