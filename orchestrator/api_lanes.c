/* api_lanes.c — HTTP handlers for lane lifecycle: create, list, inspect,
 * boot, stop, rm, and health. Validation happens here; state changes go
 * through vm.c. Every error is a JSON error body with a stable code. */
#include "lanesd.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LANE_MAX_CPUS 64
#define LANE_MAX_MEMORY_MIB (256 * 1024)
#define LANE_MAX_DISK_GIB 16384

lane_rt_t *api_lane_or_404(lanesd_t *d, http_req_t *req)
{
    const char *name = http_req_param(req, "name");
    lane_rt_t *l = name ? vm_lane_find(d, name) : NULL;
    if (!l || l->freeing) {
        http_req_respond_error(req, 404, "lane_not_found", "no lane named '%s'", name ? name : "");
        return NULL;
    }
    return l;
}

lane_rt_t *api_running_lane_or_409(lanesd_t *d, http_req_t *req)
{
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return NULL;
    if (l->state != LANE_RUNNING) {
        http_req_respond_error(req, 409, "lane_not_running", "lane %s is %s, not running%s%s", l->name,
                               lane_state_name(l->state), l->reason[0] ? ": " : "", l->reason);
        return NULL;
    }
    vm_lane_touch(l);
    if (!l->agent || !agent_is_ready(l->agent)) {
        http_req_respond_error(req, 503, "agent_unavailable",
                               "lane %s is running but its guest agent is reconnecting; retry", l->name);
        return NULL;
    }
    return l;
}

/* Read an optional integer field within [min,max]; returns 0 ok, -1 after
 * responding 400. */
static int json_int_field(http_req_t *req, json_object *body, const char *key, int def, int min, int max,
                          int *out)
{
    json_object *v;
    if (!json_object_object_get_ex(body, key, &v) || json_object_is_type(v, json_type_null)) {
        *out = def;
        return 0;
    }
    if (!json_object_is_type(v, json_type_int)) {
        http_req_respond_error(req, 400, "invalid", "'%s' must be an integer", key);
        return -1;
    }
    int64_t x = json_object_get_int64(v);
    if (x < min || x > max) {
        http_req_respond_error(req, 400, "invalid", "'%s' must be between %d and %d (got %lld)", key, min, max,
                               (long long)x);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static const char *json_str_field(json_object *body, const char *key)
{
    json_object *v;
    if (!json_object_object_get_ex(body, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static void h_health(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "status", json_object_new_string("ok"));
    json_object_object_add(o, "version", json_object_new_string(LANES_VERSION));
    json_object_object_add(o, "accel", json_object_new_string(d->accel));
    int n = 0;
    for (lane_rt_t *l = d->lanes; l; l = l->next)
        n++;
    json_object_object_add(o, "lanes", json_object_new_int(n));
    http_req_respond_json(req, 200, o);
}

static void h_lanes_list(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    json_object *arr = json_object_new_array();
    for (lane_rt_t *l = d->lanes; l; l = l->next)
        if (!l->freeing)
            json_object_array_add(arr, vm_lane_json(l));
    json_object *o = json_object_new_object();
    json_object_object_add(o, "lanes", arr);
    http_req_respond_json(req, 200, o);
}

static void h_lane_get(http_req_t *req, void *ctx)
{
    lane_rt_t *l = api_lane_or_404(ctx, req);
    if (l)
        http_req_respond_json(req, 200, vm_lane_json(l));
}

typedef struct {
    http_req_t *req;
    int client_gone;
    char name[64];
    char image[64];
    char store[64]; /* "" or "local": this host's store; else an S3 store (api_stores.c) */
    int cpus, mem, disk, ttl, idle;
    int network;  /* 1 mediated, 0 none */
    char *policy; /* validated policy JSON or NULL (default: deny all) */
} lane_create_t;

static void create_free(lane_create_t *c)
{
    free(c->policy);
    free(c);
}

/* Everything validated: make the disk, the row and the runtime object. */
static void lane_create_finish(lanesd_t *d, lane_create_t *c)
{
    http_req_t *req = c->req;
    if (vm_lane_find(d, c->name)) {
        http_req_respond_error(req, 409, "exists", "a lane named '%s' already exists", c->name);
        return;
    }
    uint64_t image_size = 0;
    int r = db_image_get(d, c->image, &image_size, NULL, NULL, 0);
    if (r < 0) {
        http_req_respond_error(req, 500, "internal", "state database error");
        return;
    }
    if (r == 0) {
        http_req_respond_error(req, 404, "image_not_found",
                               "no image named '%s' (build it with: lanectl image build %s)", c->image, c->image);
        return;
    }
    uint64_t disk_bytes = (uint64_t)c->disk << 30;
    if (disk_bytes < image_size) {
        http_req_respond_error(req, 400, "invalid", "disk_gib %d is smaller than image '%s' (%llu MiB)", c->disk,
                               c->image, (unsigned long long)(image_size >> 20));
        return;
    }

    lane_rt_t *l = vm_lane_new_record(d, c->name, c->image, c->cpus, c->mem, c->disk);
    if (!l) {
        http_req_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    l->ttl_s = c->ttl;
    l->idle_timeout_s = c->idle;
    l->network = c->network;

    char ref[128];
    snprintf(ref, sizeof(ref), "image/%s", c->image);
    char *err = NULL;
    if (c->store[0] && strcmp(c->store, "local")) {
        /* S3: the disk is made on the thread pool; api_stores answers req. */
        api_stores_lane_create_start(d, l, c->store, disk_bytes, c->policy, req);
        return;
    }
    r = store_disk_create(d->store, l->id, ref, disk_bytes, &err);
    if (r < 0) {
        http_req_respond_error(req, 500, "store_error", "create disk for lane %s: %s", c->name,
                               err ? err : strerror(-r));
        free(err);
        vm_lane_unlink_free(l);
        return;
    }
    if (util_mkdir_p(l->dir, 0700) < 0 || db_lane_insert(d, l) < 0 ||
        (c->policy && db_lane_policy_set(d, l->id, c->policy) < 0)) {
        http_req_respond_error(req, 500, "internal", "cannot record lane %s", c->name);
        char dref[64];
        snprintf(dref, sizeof(dref), "disk/%s", l->id);
        store_ref_delete(d->store, dref, NULL);
        db_lane_delete(d, l->id);
        util_rm_rf(l->dir);
        vm_lane_unlink_free(l);
        return;
    }
    db_event(d, l->id, "create", c->name);
    util_log("lane %s: created (id %s, image %s, %d cpu, %d MiB, %d GiB, network %s)", c->name, l->id, c->image,
             c->cpus, c->mem, c->disk, c->network ? "mediated" : "none");
    http_req_respond_json(req, 201, vm_lane_json(l));
}

static void on_create_client_gone(http_req_t *req, void *ud)
{
    lane_create_t *c = ud;
    (void)req;
    c->client_gone = 1;
}

static void on_create_policy_checked(lanesd_t *d, int ok, const char *msg, void *ud)
{
    lane_create_t *c = ud;
    if (c->client_gone)
        http_req_respond_raw(c->req, 499, NULL, NULL, 0);
    else if (!ok)
        http_req_respond_error(c->req, 400, "invalid_policy", "%s", msg);
    else
        lane_create_finish(d, c);
    create_free(c);
}

static void h_lane_create(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    json_object *body = http_req_json(req);
    if (!body)
        return;
    if (!json_object_is_type(body, json_type_object)) {
        http_req_respond_error(req, 400, "invalid", "request body must be a JSON object");
        return;
    }
    const char *name = json_str_field(body, "name");
    if (!name) {
        http_req_respond_error(req, 400, "invalid", "'name' (string) is required");
        return;
    }
    if (!lane_name_valid(name)) {
        http_req_respond_error(req, 400, "invalid",
                               "invalid lane name '%s': use 1-63 of a-z, 0-9 and '-', starting with a letter or digit",
                               name);
        return;
    }
    const char *image = json_str_field(body, "image");
    if (!image)
        image = "debian";
    if (strlen(image) >= 64) {
        http_req_respond_error(req, 400, "invalid", "image name too long");
        return;
    }
    lane_create_t *c = calloc(1, sizeof(*c));
    if (!c) {
        http_req_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    c->req = req;
    snprintf(c->name, sizeof(c->name), "%s", name);
    snprintf(c->image, sizeof(c->image), "%s", image);
    const char *store = json_str_field(body, "store");
    snprintf(c->store, sizeof(c->store), "%s", store && strlen(store) < 64 ? store : "");
    if (json_int_field(req, body, "cpus", 1, 1, LANE_MAX_CPUS, &c->cpus) < 0 ||
        json_int_field(req, body, "memory_mib", 512, 64, LANE_MAX_MEMORY_MIB, &c->mem) < 0 ||
        json_int_field(req, body, "disk_gib", 4, 1, LANE_MAX_DISK_GIB, &c->disk) < 0 ||
        json_int_field(req, body, "ttl_s", 0, 0, 365 * 86400, &c->ttl) < 0 ||
        json_int_field(req, body, "idle_timeout_s", 0, 0, 365 * 86400, &c->idle) < 0) {
        create_free(c);
        return;
    }
    /* Network: mediated by netmed unless "none"; the default policy denies
     * everything, and a later policy change applies live. */
    const char *network = json_str_field(body, "network");
    json_object *policy = NULL;
    json_object_object_get_ex(body, "policy", &policy);
    if (network && strcmp(network, "none") != 0 && strcmp(network, "mediated") != 0) {
        http_req_respond_error(req, 400, "invalid", "'network' must be \"mediated\" (default) or \"none\"");
        create_free(c);
        return;
    }
    c->network = !(network && !strcmp(network, "none"));
    if (policy && !json_object_is_type(policy, json_type_null)) {
        if (!c->network) {
            http_req_respond_error(req, 400, "invalid", "a policy needs a network: drop \"network\": \"none\"");
            create_free(c);
            return;
        }
        if (!json_object_is_type(policy, json_type_object)) {
            http_req_respond_error(req, 400, "invalid_policy", "'policy' must be a JSON object (see docs/policy.md)");
            create_free(c);
            return;
        }
        c->policy = strdup(json_object_to_json_string_ext(policy, JSON_C_TO_STRING_PLAIN));
        http_req_on_close(req, on_create_client_gone, c);
        if (!c->policy || api_net_policy_validate(d, c->policy, on_create_policy_checked, c) < 0) {
            http_req_respond_error(req, 500, "internal", "cannot validate the policy (is netmed built?)");
            create_free(c);
        }
        return;
    }
    lane_create_finish(d, c);
    create_free(c);
}

static void h_lane_boot(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    if (l->state == LANE_RUNNING) {
        http_req_respond_error(req, 409, "lane_running", "lane %s is already running", l->name);
        return;
    }
    if (api_stores_boot_precheck(d, l, req, h_lane_boot)) /* S3: lease GET off the loop, then again */
        return;
    char msg[512] = "";
    int r = vm_lane_boot(l, msg, sizeof(msg));
    if (r < 0) {
        http_req_respond_error(req, 409, "lane_busy", "%s", msg);
        return;
    }
    const char *wait = http_req_query(req, "wait");
    if (wait && (!strcmp(wait, "false") || !strcmp(wait, "0"))) {
        http_req_respond_json(req, 202, vm_lane_json(l));
        return;
    }
    if (l->state == LANE_RUNNING) {
        http_req_respond_json(req, 200, vm_lane_json(l));
        return;
    }
    if (l->state == LANE_FAILED) {
        http_req_respond_error(req, 500, "boot_failed", "lane %s failed to boot: %s", l->name, l->reason);
        return;
    }
    vm_lane_add_waiter(l, req, LANE_RUNNING);
}

static void h_lane_stop(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    json_object *body = http_req_json(req);
    if (!body)
        return;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    int timeout_s;
    if (json_int_field(req, body, "timeout_s", 10, 0, 3600, &timeout_s) < 0)
        return;
    if (l->state == LANE_STOPPED || l->state == LANE_CREATED || l->state == LANE_FAILED) {
        http_req_respond_json(req, 200, vm_lane_json(l));
        return;
    }
    if (l->state != LANE_STOPPING && vm_lane_stop(l, (uint64_t)timeout_s * 1000) < 0) {
        http_req_respond_error(req, 409, "lane_busy", "lane %s is %s", l->name, lane_state_name(l->state));
        return;
    }
    if (l->state == LANE_STOPPED) {
        http_req_respond_json(req, 200, vm_lane_json(l));
        return;
    }
    vm_lane_add_waiter(l, req, LANE_STOPPED);
}

/* Remove the lane's disk and files and forget it. */
static int lane_destroy(lanesd_t *d, lane_rt_t *l, char *msg, size_t msglen)
{
    char *err = NULL;
    int r = api_stores_lane_removed(d, l, &err); /* S3 lanes: disk + lane document in the bucket */
    if (r < 0) {
        snprintf(msg, msglen, "delete disk of lane %s in its store: %s", l->name, err ? err : strerror(-r));
        free(err);
        return r;
    }
    r = api_snapshots_lane_removed(d, l->id, &err); /* disk + snapshots, then GC */
    if (r < 0 && r != -ENOENT) {
        snprintf(msg, msglen, "delete disk of lane %s: %s", l->name, err ? err : strerror(-r));
        free(err);
        return r;
    }
    free(err);
    if (db_lane_delete(d, l->id) < 0) {
        snprintf(msg, msglen, "state database error deleting lane %s", l->name);
        return -EIO;
    }
    util_rm_rf(l->dir);
    db_event(d, l->id, "rm", l->name);
    util_log("lane %s: removed", l->name);
    return 0;
}

static void h_lane_delete(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    lane_rt_t *l = api_lane_or_404(d, req);
    if (!l)
        return;
    const char *force = http_req_query(req, "force");
    int forced = force && (!strcmp(force, "true") || !strcmp(force, "1"));
    int busy = lane_state_is_active(l->state) || l->teardown || l->qemu.pid > 0 || l->nbdkit.pid > 0;
    if (busy && !forced) {
        http_req_respond_error(req, 409, "lane_running", "lane %s is %s; stop it first or use --force", l->name,
                               lane_state_name(l->state));
        return;
    }
    if (api_stores_remove_precheck(d, l, req, h_lane_delete)) /* S3: bucket side off the loop, then again */
        return;
    char msg[512];
    if (lane_destroy(d, l, msg, sizeof(msg)) < 0) {
        http_req_respond_error(req, 500, "internal", "%s", msg);
        return;
    }
    if (busy) {
        /* processes die first; the runtime object is freed after teardown */
        l->freeing = 1;
        vm_lane_kill(l);
    } else {
        vm_lane_unlink_free(l);
    }
    http_req_respond_raw(req, 204, NULL, NULL, 0);
}

void api_lanes_register(lanesd_t *d)
{
    http_server_route(d->http, "GET", "/v1/health", 0, h_health, d);
    http_server_route(d->http, "GET", "/v1/lanes", 0, h_lanes_list, d);
    http_server_route(d->http, "POST", "/v1/lanes", 0, h_lane_create, d);
    http_server_route(d->http, "GET", "/v1/lanes/{name}", 0, h_lane_get, d);
    http_server_route(d->http, "DELETE", "/v1/lanes/{name}", 0, h_lane_delete, d);
    http_server_route(d->http, "POST", "/v1/lanes/{name}/boot", 0, h_lane_boot, d);
    http_server_route(d->http, "POST", "/v1/lanes/{name}/stop", 0, h_lane_stop, d);
}
