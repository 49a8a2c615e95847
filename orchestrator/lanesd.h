/* lanesd.h — the lanesd daemon context shared by its modules.
 *
 * Modules: lanesd.c (main, startup, recovery), db.c (SQLite state), vm.c
 * (per-lane nbdkit + QEMU processes and the agent channel), api_*.c (HTTP
 * handlers), util.c (small helpers).
 *
 * Threading: one uv loop; every function here runs on it. No globals: the
 * lanesd_t is passed explicitly and reachable from each lane_rt_t.
 *
 * Invariants:
 *  - The SQLite row is the durable truth of a lane's configuration and state;
 *    lane_rt_t is the in-memory runtime (processes, agent, waiters). Every
 *    state change goes through vm_lane_set_state(), which validates it with
 *    lane_transition() and persists it before anything observes it.
 *  - A lane in an active state (booting/running/stopping) has a qemu pid and
 *    an nbdkit pid recorded; lanesd watches both with pidfds so it notices
 *    their death whether or not it spawned them (after a lanesd restart they
 *    are no longer its children).
 */
#ifndef LANES_LANESD_H
#define LANES_LANESD_H

#include <json-c/json.h>
#include <sqlite3.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "agent.h"
#include "http_server.h"
#include "lane.h"
#include "store.h"

typedef struct lanesd lanesd_t;
typedef struct lane_rt lane_rt_t;
typedef struct exec_session exec_session_t;
typedef struct shell_session shell_session_t;

/* A process lanesd supervises (QEMU or nbdkit). */
typedef struct {
    pid_t pid;
    uint64_t start_time; /* /proc/PID/stat field 22, guards against pid reuse */
    int pidfd;
    uv_poll_t poll;
    int polling;
    lane_rt_t *lane;
    const char *what; /* "qemu" or "nbdkit" */
} lane_proc_t;

/* A client waiting for a lane to reach a state (boot/stop requests). */
typedef struct lane_waiter {
    http_req_t *req;
    lane_state_t want;
    struct lane_waiter *next;
} lane_waiter_t;

struct lane_rt {
    lanesd_t *d;
    char id[32];
    char name[64];
    char image[64];
    int cpus;
    int memory_mib;
    int disk_gib;
    int ttl_s;           /* stop this long after boot; 0 = never */
    int idle_timeout_s;  /* stop after this long without API activity; 0 = never */
    int64_t last_activity_ms;
    int transfers;       /* file transfers in flight (count as activity) */
    char stop_reason[128]; /* why an automatic stop happened, shown once stopped */
    int degraded;        /* the store failed a read of this lane's disk (sticky) */
    char degraded_reason[512];
    lane_state_t state;
    char reason[512];
    char accel[8];
    int64_t created_at;
    int64_t booted_at;
    char dir[512];       /* STATE/lanes/<id> */

    lane_proc_t qemu;
    lane_proc_t nbdkit;
    /* network (net.c) */
    int network;         /* 0 none, 1 mediated by netmed */
    lane_proc_t netmed;
    int tap_fd;          /* TAP opened in the lane netns, until QEMU has it */
    uv_timer_t net_timer;/* netmed start wait / restart */
    void *net_job;
    int net_wait_ms;
    int net_restarts;
    int64_t audit_offset;/* bytes of audit.jsonl already in SQLite */
    agent_hello_t hello; /* the last handshake (kept while configuring) */
    int configuring;     /* LP_CONFIGURE of a handshake in flight */
    int net_cleaning;    /* teardown waits for the namespace removal */
    agent_t *agent;
    uv_timer_t timer;    /* boot / stop / kill-escalation deadline */
    uv_timer_t tick;     /* nbd socket wait, agent reconnect */
    int handles_open;    /* timers not yet closed (free when 0) */
    int stop_phase;      /* 0 none, 1 asked guest, 2 SIGTERM qemu, 3 SIGKILL */
    int stop_timeout_ms;
    int nbd_wait_ms;
    int waiting_artifacts;
    /* Set when QEMU is gone: the transition applied once nbdkit is gone too. */
    int teardown;
    lane_event_t teardown_ev;
    char teardown_reason[512];
    int64_t boot_started_ms;
    lane_waiter_t *waiters;
    exec_session_t *sessions;
    int freeing;         /* rm in progress: free when processes are gone */
    struct lane_rt *next;
};

struct lanesd {
    uv_loop_t *loop;
    char state_dir[256];
    char socket_path[512];
    char root_dir[256];      /* lanes source/install root (rootfs scripts) */
    char bin_dir[256];       /* where lane-init, the plugin and lanes-store live */
    char kernel[512];        /* resolved lazily unless given */
    char initrd[512];
    int artifacts;           /* 0 unresolved, 1 resolving, 2 ready */
    char upstream_ca[512];   /* netmed's upstream trust roots; "" = host store */
    char accel[8];           /* "kvm" or "tcg" */
    int rootless;            /* lane networks in user namespaces (net.c): not root, or --rootless */
    uint64_t boot_timeout_ms;
    sqlite3 *db;
    store_t *store;
    http_server_t *http;
    lane_rt_t *lanes;
    uint64_t exec_seq;
    uv_signal_t sigterm, sigint;
    uv_timer_t housekeeping; /* 1 s: lane TTL and idle auto-stop */
    int shutting_down;
    struct snapshots *snapshots; /* api_snapshots.c state */
    struct api_events *events;   /* api_events.c: /v1/events subscribers */
    struct api_metrics *metrics; /* api_metrics.c: histograms */
    struct api_stores *stores;   /* api_stores.c: S3 stores, host id */
    struct api_approvals *approvals; /* api_approvals.c: audit watchers */
    shell_session_t *shell_sessions; /* api_shell.c: named shell sessions of all lanes */
};

/* ---- db.c ------------------------------------------------------------------ */
int db_open(lanesd_t *d, char *err, size_t errlen);
void db_close(lanesd_t *d);
int db_lane_insert(lanesd_t *d, const lane_rt_t *l);
int db_lane_update(lanesd_t *d, const lane_rt_t *l);
int db_lane_delete(lanesd_t *d, const char *id);
/* Load all lanes into d->lanes (startup). */
int db_lanes_load(lanesd_t *d);
int db_image_put(lanesd_t *d, const char *name, uint64_t size, const char *source);
int db_image_delete(lanesd_t *d, const char *name);
/* Returns 1 if found (fills size/created), 0 if not, <0 on error. */
int db_image_get(lanesd_t *d, const char *name, uint64_t *size, int64_t *created, char *source,
                 size_t srclen);
json_object *db_images_json(lanesd_t *d);
int db_event(lanesd_t *d, const char *lane, const char *kind, const char *detail);

/* ---- vm.c ------------------------------------------------------------------- */
/* Probe the accelerator honestly (CPU flags, not just /dev/kvm). */
const char *vm_probe_accel(char *why, size_t whylen);
lane_rt_t *vm_lane_find(lanesd_t *d, const char *name);
lane_rt_t *vm_lane_new(lanesd_t *d);
/* A new lane record in state created: fresh id, runtime dir, creation time,
 * and the given name, image and sizes. NULL on out of memory. */
lane_rt_t *vm_lane_new_record(lanesd_t *d, const char *name, const char *image, int cpus, int memory_mib,
                              int disk_gib);
void vm_lane_unlink_free(lane_rt_t *l);
json_object *vm_lane_json(const lane_rt_t *l);
/* Validated, persisted state change; reason may be NULL. Wakes waiters. */
int vm_lane_set_state(lane_rt_t *l, lane_event_t ev, const char *reason_fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Start booting (state must allow it). Returns 0 or negative errno with msg. */
int vm_lane_boot(lane_rt_t *l, char *msg, size_t msglen);
/* Begin a graceful stop: guest shutdown, then SIGTERM/SIGKILL after timeout. */
int vm_lane_stop(lane_rt_t *l, uint64_t timeout_ms);
/* Kill everything at once (rm --force, lanesd failure paths). */
void vm_lane_kill(lane_rt_t *l);
/* After a lanesd restart: reattach to running processes or clean up. */
void vm_lane_recover(lane_rt_t *l);
void vm_lane_add_waiter(lane_rt_t *l, http_req_t *req, lane_state_t want);
/* Note API activity on a lane (resets its idle clock). */
void vm_lane_touch(lane_rt_t *l);
/* Periodic: stop lanes past their TTL or idle timeout; pick up integrity
 * reports of the lanes' nbdkit (STATE/lanes/ID/store-status). */
void vm_housekeeping(lanesd_t *d);
/* Resolve kernel and initramfs paths (runs lanes-rootfs, cached). */
int vm_resolve_boot_artifacts(lanesd_t *d, char *msg, size_t msglen);

/* ---- net.c ------------------------------------------------------------------ */
typedef void (*net_done_cb)(lane_rt_t *l, int err, const char *msg);
extern const char *net_default_policy;
void net_netns_name(const lane_rt_t *l, char *out, size_t len);
/* Rootless mode: can this host give lanes a network? 0, or -errno + why. */
int net_rootless_probe(char *why, size_t whylen);
/* Namespace + TAP + netmed, then done(l, 0 | -errno, msg); l->tap_fd is open. */
int net_lane_start(lane_rt_t *l, net_done_cb done);
int net_spawn_netmed(lane_rt_t *l, char *msg, size_t msglen);
void net_netmed_exited(lane_rt_t *l);
/* After the processes are gone: close the TAP, remove the namespace. Returns
 * 1 if removal is under way (done runs when it finished), 0 if nothing to do. */
int net_lane_cleanup(lane_rt_t *l, net_done_cb done);
int net_write_policy_file(lane_rt_t *l, const char *policy_json);
int net_write_secrets_file(lane_rt_t *l);
/* Fill an LP_CONFIGURE for the lane; free with net_guest_config_free. */
int net_guest_config(lane_rt_t *l, agent_config_t *cfg, char **ca_out, char ***env_out);
void net_guest_config_free(char *ca, char **env);
void net_audit_ingest(lane_rt_t *l);
/* vm.c helpers net.c uses */
pid_t vm_spawn_detached(char *const argv[], const char *logfile, const char *cwd, int with_shim);
int vm_proc_watch_new(lane_proc_t *p, pid_t pid);
void vm_lane_configure(lane_rt_t *l);

/* ---- db.c (network) -------------------------------------------------------------- */
int db_lane_policy_get(lanesd_t *d, const char *lane_id, char **out); /* *out NULL if unset */
int db_lane_policy_set(lanesd_t *d, const char *lane_id, const char *policy_json);
int db_secret_put(lanesd_t *d, const char *lane_id, const char *name, const char *value, const char *hosts_json,
                  const char *placeholder);
/* 1 deleted, 0 not found, <0 error */
int db_secret_delete(lanesd_t *d, const char *lane_id, const char *name);
/* [{"name","hosts","placeholder"[,"value"]}] — values only for netmed's file. */
json_object *db_secrets_json(lanesd_t *d, const char *lane_id, int with_values);
int db_audit_insert(lanesd_t *d, const char *lane_id, const char *jsonl);
/* Which audit entries a query wants; NULL/0 fields do not filter. */
typedef struct {
    int64_t after_id;            /* entries with a larger id */
    int limit;                   /* at most this many, oldest first */
    const char *ev;              /* "conn", "dns", "http", ... */
    const char *decision;        /* "allow", "deny", ... */
    const char *host_glob;       /* host, '*' matching any run of characters */
    int64_t since_ms, until_ms;  /* recorded in [since, until) */
} db_audit_query_t;
json_object *db_audit_json(lanesd_t *d, const char *lane_id, const db_audit_query_t *q);
/* fn per lane with relayed bytes (guest->upstream, upstream->guest) since
 * the lane was created. 0 or -EIO. */
int db_net_bytes_each(lanesd_t *d, void (*fn)(const char *lane_id, int64_t up, int64_t down, void *ud), void *ud);
void db_lane_forget_network(lanesd_t *d, const char *lane_id);

/* ---- api_*.c ------------------------------------------------------------------ */
void api_lanes_register(lanesd_t *d);
void api_exec_register(lanesd_t *d);
void api_files_register(lanesd_t *d);
void api_images_register(lanesd_t *d);
void api_net_register(lanesd_t *d);
/* Validate a policy with netmed's parser; cb(d, ok, message, ud). */
int api_net_policy_validate(lanesd_t *d, const char *json, void (*cb)(lanesd_t *, int, const char *, void *),
                            void *ud);
/* Snapshots, restore, fork, /v1/store (api_snapshots.c). */
void api_snapshots_register(lanesd_t *d);
/* Adds "parent" (image or LANE@SNAP it descends from) and "children". */
void api_snapshots_lineage(const lane_rt_t *l, json_object *o);
/* Delete the lane's disk and snapshot refs, then schedule a GC. */
int api_snapshots_lane_removed(lanesd_t *d, const char *lane_id, char **err);
/* Queue a background GC of st (after deletions in an S3 store). */
void api_snapshots_gc_schedule(lanesd_t *d, store_t *st);
/* The local store's stats as last measured (1) or none yet (0); starts a
 * background refresh when they are older than a minute. For /metrics. */
int api_snapshots_store_stats_cached(lanesd_t *d, store_stats_t *out, int64_t *at_ms);
/* The agent (re)connected: thaw a guest a dead lanesd left frozen. */
void api_snapshots_agent_ready(lane_rt_t *l);
/* Drop every exec session of a lane (lane stopped/failed). */
void api_exec_lane_gone(lane_rt_t *l);
/* External exec readers (api_shell.c's WebSocket; see api_exec.c). on_output
 * bytes must be acked with api_exec_ack(); on_exit is terminal (the session
 * is freed right after it returns). */
typedef struct {
    void (*on_output)(exec_session_t *s, int fd, const uint8_t *data, size_t len, void *ud);
    void (*on_stdin_room)(exec_session_t *s, void *ud);
    void (*on_exit)(exec_session_t *s, const agent_exit_t *exit, void *ud);
} api_exec_reader_t;
exec_session_t *api_exec_start(lane_rt_t *l, const agent_exec_opts_t *o, char *msg, size_t msglen);
exec_session_t *api_exec_find(lane_rt_t *l, const char *id);
const char *api_exec_id(const exec_session_t *s);
uint32_t api_exec_pid(const exec_session_t *s); /* 0 until the guest reported it */
int api_exec_attach(exec_session_t *s, const api_exec_reader_t *r, void *ud); /* -EBUSY */
void api_exec_detach(exec_session_t *s);
void api_exec_ack(exec_session_t *s, size_t len);
ssize_t api_exec_write_stdin(exec_session_t *s, const void *data, size_t len);
void api_exec_close_stdin(exec_session_t *s);
int api_exec_resize(exec_session_t *s, uint16_t rows, uint16_t cols);
int api_exec_signal(exec_session_t *s, int sig);
void api_shell_register(lanesd_t *d);
/* api_logs.c: GET /v1/lanes/{name}/logs. api_archive.c: tar in/out, stat, list. */
void api_logs_register(lanesd_t *d);
void api_archive_register(lanesd_t *d);
/* api_events.c: GET /v1/events; db_event() publishes every stored event. */
void api_events_register(lanesd_t *d);
/* api_approvals.c: approvals routes; approval/denial events from netmed's audit. */
void api_approvals_register(lanesd_t *d);
void api_events_publish(lanesd_t *d, int64_t id, const char *lane_id, const char *kind, const char *detail);
int api_events_subscribers(const lanesd_t *d);
/* api_metrics.c: GET /metrics; observers for boot events and exec exits. */
void api_metrics_register(lanesd_t *d);
/* ---- api_stores.c: S3 stores and their lanes ----------------------------------- */
void api_stores_register(lanesd_t *d);
void api_stores_close(lanesd_t *d);
const char *api_stores_host_id(lanesd_t *d);
/* S3 store directory of a lane (its plugin's store=), NULL for local lanes. */
const char *api_stores_lane_dir(lanesd_t *d, const char *lane_id);
/* The store_t holding a lane's disk (d->store for local lanes). */
store_t *api_stores_lane_store(lanesd_t *d, const char *lane_id);
void api_stores_lane_json(lanesd_t *d, const char *lane_id, json_object *o);
/* Before a boot: may this host attach the lane's disk (lease)?  0 or -errno + msg. */
int api_stores_boot_check(lane_rt_t *l, char *msg, size_t msglen);
/* Create lane l's disk in S3 store `store` (image copied in on first use) and
 * its document in the bucket on the thread pool, then record the lane and
 * answer req (201 or an error; l is freed on failure). */
void api_stores_lane_create_start(lanesd_t *d, lane_rt_t *l, const char *store, uint64_t disk_bytes,
                                  const char *policy, http_req_t *req);
/* For S3 work done by other modules off the loop (fork): the lane's bucket
 * document (malloc'd body; meta_name set), the store row of a new lane
 * (same store as src), an id the periodic sync must neither adopt nor
 * forget yet, and a hold on a store_t in use (no-op for the local store). */
char *api_stores_lane_doc(const lane_rt_t *l, char *meta_name, size_t cap);
int api_stores_lane_link(lanesd_t *d, const char *lane_id, const char *src_lane_id);
void api_stores_creating(lanesd_t *d, const char *lane_id, int on);
void api_stores_hold(lanesd_t *d, store_t *st, int delta);
/* The store_t of an S3 store by name (NULL if none or unavailable). */
store_t *api_stores_find(lanesd_t *d, const char *name);
/* Boot API, S3 lanes: check the lease on the thread pool, then run
 * again(req, d) (vm_lane_boot then skips its own check) or answer 409.
 * 1 if it took the request, 0 to go on now (local lane, or checked). */
int api_stores_boot_precheck(lanesd_t *d, lane_rt_t *l, http_req_t *req, http_handler_fn again);
/* rm API, S3 lanes: remove the lane's document and disk refs from the
 * bucket on the thread pool, then run again(req, d) (api_stores_lane_removed
 * then skips the bucket) or answer 500.  1 if it took the request. */
int api_stores_remove_precheck(lanesd_t *d, lane_rt_t *l, http_req_t *req, http_handler_fn again);
/* A lease check of lane_id passed off the loop just now: vm_lane_boot's
 * own check uses it instead of asking the bucket again. */
void api_stores_lease_checked(lanesd_t *d, const char *lane_id);
int api_stores_lane_removed(lanesd_t *d, const lane_rt_t *l, char **err);
void api_metrics_observe_event(lanesd_t *d, const char *kind, const char *detail);
void api_metrics_exec_done(lanesd_t *d, int64_t duration_ms, int failed);

/* ---- auth.c ------------------------------------------------------------------------ */
typedef struct auth auth_t;
/* Load "SCOPE TOKEN" lines (scopes admin, read-only); the file must be 0600. */
int auth_load_tokens(const char *path, auth_t **out, char *err, size_t errlen);
void auth_free(auth_t *a);
/* http_auth_fn: unix-socket requests pass; TCP needs a bearer token. */
int auth_check_request(http_req_t *req, void *ud);
/* Refuse a socket directory others can write, or a socket not 0600/ours. */
int auth_check_socket_dir(const char *socket_path, char *err, size_t errlen);
int auth_check_socket(const char *socket_path, char *err, size_t errlen);

/* Respond with the standard error for "lane not found / not running". */
lane_rt_t *api_lane_or_404(lanesd_t *d, http_req_t *req);
lane_rt_t *api_running_lane_or_409(lanesd_t *d, http_req_t *req);

/* ---- util.c -------------------------------------------------------------------- */
int64_t util_now_ms(void);
int64_t util_now_s(void);
void util_random_hex(char *out, size_t nbytes); /* out gets 2*nbytes hex + NUL */
int util_mkdir_p(const char *path, unsigned mode);
int util_rm_rf(const char *path);
/* base64 (standard alphabet, padded). Returns malloc'd NUL-terminated text. */
char *util_base64_encode(const uint8_t *data, size_t len);
/* RFC 3339 UTC timestamp as a JSON string; NULL (JSON null) for 0. */
json_object *util_json_time(int64_t unix_seconds);
void util_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Read /proc/PID/stat start time; 0 if the process does not exist. */
uint64_t util_proc_start_time(pid_t pid);
/* 1 if /proc/PID/cmdline contains needle. */
int util_proc_cmdline_has(pid_t pid, const char *needle);
/* 1 if /proc/PID/comm equals name. */
int util_proc_comm_is(pid_t pid, const char *name);

#endif
