/* api_images.c — base images: build (minimal, debian), import a rootfs
 * tarball, list, remove.
 *
 * Building runs two helper programs as children of lanesd, never blocking
 * the loop: rootfs/lanes-rootfs makes (or finds cached) the ext4 image, then
 * lanes-store imports it into the block store as ref image/<name>. Their
 * stderr lines are streamed to the client as NDJSON {"progress": ...} lines;
 * the last line is {"image": {...}} or {"error": {...}}.
 */
#include "lanesd.h"
#include "proc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    lanesd_t *d;
    http_req_t *req;
    int client_gone;
    char name[64];
    char source[600];
    char tar[600];
    char raw[600];
    int step; /* 0 rootfs, 1 store import */
    char last_line[512];
} image_job_t;

static void job_step(image_job_t *j);

static void job_progress(image_job_t *j, const char *line)
{
    if (j->client_gone)
        return;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "progress", json_object_new_string(line));
    http_req_stream_json(j->req, o);
}

static void job_end(image_job_t *j, const char *err_code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void job_end(image_job_t *j, const char *err_code, const char *fmt, ...)
{
    json_object *o = json_object_new_object();
    if (err_code) {
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        util_log("image %s: %s", j->name, msg);
        json_object *e = json_object_new_object();
        json_object_object_add(e, "code", json_object_new_string(err_code));
        json_object_object_add(e, "message", json_object_new_string(msg));
        json_object_object_add(o, "error", e);
    } else {
        uint64_t size = 0;
        int64_t created = 0;
        db_image_get(j->d, j->name, &size, &created, NULL, 0);
        json_object *img = json_object_new_object();
        json_object_object_add(img, "name", json_object_new_string(j->name));
        json_object_object_add(img, "size_bytes", json_object_new_int64((int64_t)size));
        json_object_object_add(img, "created_at", util_json_time(created));
        json_object_object_add(img, "source", json_object_new_string(j->source));
        json_object_object_add(o, "image", img);
    }
    if (j->client_gone)
        json_object_put(o);
    else
        http_req_stream_json(j->req, o);
    http_req_stream_end(j->req);
    free(j);
}

static void on_job_line(proc_run_t *p, const char *line, void *ud)
{
    image_job_t *j = ud;
    (void)p;
    snprintf(j->last_line, sizeof(j->last_line), "%s", line);
    job_progress(j, line);
}

static void on_job_exit(proc_run_t *p, int status, int sig, const char *out, void *ud)
{
    image_job_t *j = ud;
    (void)p;
    if (status != 0) {
        const char *what = j->step == 0 ? "building the image" : "importing the image into the store";
        if (sig)
            job_end(j, "build_failed", "%s was killed by signal %d", what, sig);
        else
            job_end(j, "build_failed", "%s failed: %s", what, j->last_line[0] ? j->last_line : "no output");
        return;
    }
    if (j->step == 0) {
        if (!out[0]) {
            job_end(j, "build_failed", "lanes-rootfs printed no image path");
            return;
        }
        snprintf(j->raw, sizeof(j->raw), "%s", out);
        j->step = 1;
        job_step(j);
        return;
    }
    struct stat st;
    uint64_t size = stat(j->raw, &st) == 0 ? (uint64_t)st.st_size : 0;
    if (db_image_put(j->d, j->name, size, j->source) < 0) {
        job_end(j, "internal", "cannot record image %s", j->name);
        return;
    }
    db_event(j->d, NULL, "image", j->name);
    util_log("image %s: ready (%llu MiB, %s)", j->name, (unsigned long long)(size >> 20), j->source);
    job_end(j, NULL, NULL);
}

static void job_step(image_job_t *j)
{
    lanesd_t *d = j->d;
    char script[700], store_bin[700], store_dir[700];
    snprintf(script, sizeof(script), "%s/rootfs/lanes-rootfs", d->root_dir);
    snprintf(store_bin, sizeof(store_bin), "%s/lanes-store", d->bin_dir);
    snprintf(store_dir, sizeof(store_dir), "%s/store", d->state_dir);
    char *argv_build[] = {script, "image", j->name, NULL};
    char *argv_import_tar[] = {script, "import", j->name, j->tar, NULL};
    char *argv_store[] = {store_bin, "--store", store_dir, "import", j->name, j->raw, NULL};
    char **argv = j->step == 1 ? argv_store : j->tar[0] ? argv_import_tar : argv_build;
    if (j->step == 1)
        job_progress(j, "[store] importing into the block store (chunking, dedup)");
    static const proc_run_callbacks_t cbs = {on_job_line, on_job_exit};
    int r = proc_run_start(d->loop, argv, NULL, &cbs, j, NULL);
    if (r < 0)
        job_end(j, "internal", "cannot run %s: %s", argv[0], uv_strerror(r));
}

static void on_job_client_gone(http_req_t *req, void *ud)
{
    image_job_t *j = ud;
    (void)req;
    /* Keep building: the result is cached and recorded for the next caller. */
    j->client_gone = 1;
}

static image_job_t *job_new(lanesd_t *d, http_req_t *req, const char *name)
{
    image_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        http_req_respond_error(req, 500, "internal", "out of memory");
        return NULL;
    }
    j->d = d;
    j->req = req;
    snprintf(j->name, sizeof(j->name), "%s", name);
    return j;
}

static void job_begin(image_job_t *j)
{
    http_req_on_close(j->req, on_job_client_gone, j);
    http_req_stream_begin(j->req, 200, "application/x-ndjson", NULL);
    job_step(j);
}

static void h_image_build(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    json_object *body = http_req_json(req);
    if (!body)
        return;
    json_object *v;
    const char *name = json_object_object_get_ex(body, "name", &v) && json_object_is_type(v, json_type_string)
                           ? json_object_get_string(v)
                           : NULL;
    if (!name || (strcmp(name, "minimal") != 0 && strcmp(name, "debian") != 0)) {
        http_req_respond_error(req, 400, "invalid", "'name' must be \"minimal\" or \"debian\" (use import for others)");
        return;
    }
    image_job_t *j = job_new(d, req, name);
    if (!j)
        return;
    snprintf(j->source, sizeof(j->source), "build:%s", name);
    job_begin(j);
}

static void h_image_import(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    json_object *body = http_req_json(req);
    if (!body)
        return;
    json_object *v;
    const char *name = json_object_object_get_ex(body, "name", &v) && json_object_is_type(v, json_type_string)
                           ? json_object_get_string(v)
                           : NULL;
    const char *tar = json_object_object_get_ex(body, "tar", &v) && json_object_is_type(v, json_type_string)
                          ? json_object_get_string(v)
                          : NULL;
    if (!name || !lane_name_valid(name)) {
        http_req_respond_error(req, 400, "invalid", "'name' must be 1-63 of a-z, 0-9 and '-'");
        return;
    }
    if (!tar || tar[0] != '/') {
        http_req_respond_error(req, 400, "invalid", "'tar' must be an absolute path on the lanesd host");
        return;
    }
    struct stat st;
    if (stat(tar, &st) < 0 || !S_ISREG(st.st_mode)) {
        http_req_respond_error(req, 400, "invalid", "cannot read tarball %s: %s", tar,
                               errno ? strerror(errno) : "not a regular file");
        return;
    }
    image_job_t *j = job_new(d, req, name);
    if (!j)
        return;
    snprintf(j->tar, sizeof(j->tar), "%s", tar);
    snprintf(j->source, sizeof(j->source), "import:%s", tar);
    job_begin(j);
}

static void h_images_list(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "images", db_images_json(d));
    http_req_respond_json(req, 200, o);
}

static void h_image_delete(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    const char *name = http_req_param(req, "name");
    int r = db_image_get(d, name, NULL, NULL, NULL, 0);
    if (r <= 0) {
        http_req_respond_error(req, r < 0 ? 500 : 404, r < 0 ? "internal" : "image_not_found", "no image named '%s'",
                               name);
        return;
    }
    for (lane_rt_t *l = d->lanes; l; l = l->next) {
        if (!l->freeing && !strcmp(l->image, name)) {
            http_req_respond_error(req, 409, "image_in_use", "image %s is used by lane %s", name, l->name);
            return;
        }
    }
    char ref[128];
    snprintf(ref, sizeof(ref), "image/%s", name);
    char *err = NULL;
    r = store_ref_delete(d->store, ref, &err);
    if (r < 0 && r != -ENOENT) {
        http_req_respond_error(req, 500, "store_error", "delete image %s: %s", name, err ? err : strerror(-r));
        free(err);
        return;
    }
    free(err);
    db_image_delete(d, name);
    http_req_respond_raw(req, 204, NULL, NULL, 0);
}

void api_images_register(lanesd_t *d)
{
    http_server_route(d->http, "GET", "/v1/images", 0, h_images_list, d);
    http_server_route(d->http, "POST", "/v1/images/build", 0, h_image_build, d);
    http_server_route(d->http, "POST", "/v1/images/import", 0, h_image_import, d);
    http_server_route(d->http, "DELETE", "/v1/images/{name}", 0, h_image_delete, d);
}
