/* lane_init.h — internal interface of lane-init, the guest's PID 1 and
 * control agent (see docs/protocol.md and common/proto.h).
 *
 * lane-init is one process with one context (li_ctx_t) passed to every
 * function; as PID 1 that context is the only long-lived mutable state.
 * Modules:
 *   boot.c   PID-1 duties: mounts, modules, root switch, shutdown sequence
 *   agent.c  the protocol server loop: port I/O, frame dispatch, out queue
 *   exec.c   exec sessions (fork/exec, pipes or PTY, windows, reaping)
 *   files.c  FILE_PUT / FILE_GET transfers, SYNC, freeze hook
 *   users.c  /etc/passwd and /etc/group parsing (no NSS in a static binary)
 *   config.c LP_CONFIGURE: network, resolver, lane CA, default environment
 *   log.c    console logging
 *
 * Threading: single-threaded, one poll() loop; nothing blocks on the host.
 */
#ifndef LANES_GUEST_LANE_INIT_H
#define LANES_GUEST_LANE_INIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto.h"

#define LI_MAX_STREAMS 256
/* DEFAULT_ENV entries kept from LP_CONFIGURE (CA variables + the host's). */
#define LI_MAX_DEFAULT_ENV 128
/* Stop reading child output / files while this much is queued for the host. */
#define LI_OUTQ_HIGH (512u * 1024u)
/* Stop reading frames from the host while this much is queued (a host that
 * floods PINGs without reading gets backpressure instead of OOM). */
#define LI_OUTQ_HARD (4u * 1024u * 1024u)
/* Input decoder capacity: at least one maximal frame. */
#define LI_INBUF_SIZE (2u * (LP_HDR_SIZE + LP_MAX_PAYLOAD))

typedef enum { LI_S_EXEC = 1, LI_S_PUT, LI_S_GET } li_kind_t;

typedef struct {
    pid_t pid;
    int out_fd;          /* stdout pipe or PTY master, -1 when done */
    int err_fd;          /* stderr pipe, -1 when done or PTY */
    int in_fd;           /* stdin pipe or dup of PTY master, -1 when closed */
    int tty;
    short out_rev, err_rev, in_rev; /* revents of the last poll */
    uint8_t *in_buf;     /* stdin bytes accepted from the host, not yet written */
    size_t in_len;
    int in_eof;          /* host sent STDIN len 0: close after in_buf drains */
    int in_dead;         /* child's stdin is gone (EPIPE): discard stdin */
    int stdin_open;      /* host announced it will send stdin */
    uint64_t deadline_ms;/* CLOCK_MONOTONIC ms, 0 = no timeout */
    int timed_out;
    int cancelled;
    int reaped;
    int wstatus;
    uint64_t drain_deadline_ms; /* PTY: stop waiting for output after this */
    size_t out_budget, err_budget; /* bytes still to drain after reaping */
} li_exec_t;

typedef struct {
    int fd;                 /* temp file, -1 once finished */
    char tmp_path[4096 + 32];
    char path[4096];
    uint32_t mode;
    int64_t uid, gid;       /* -1 = keep */
} li_put_t;

typedef struct {
    int fd;
    int eof_sent;
} li_get_t;

typedef struct li_stream {
    struct li_stream *next;
    uint32_t id;
    li_kind_t kind;
    uint64_t win_out; /* data bytes we may still send to the host */
    uint64_t win_in;  /* data bytes the host may still send us */
    union {
        li_exec_t exec;
        li_put_t put;
        li_get_t get;
    } u;
} li_stream_t;

typedef struct li_ctx {
    int log_fd;
    int debug;
    int pid1;           /* boot duties, reconnectable virtio port, poweroff */
    int port_fd;
    int port_down;      /* host not connected (vport): retry at port_retry_ms */
    uint64_t port_retry_ms;
    int sig_fd;
    int running;
    int shutdown_mode;  /* -1 none, 0 poweroff, 1 reboot */

    uint8_t *outq;
    size_t out_head, out_tail, out_cap;

    uint8_t inbuf[LI_INBUF_SIZE];
    size_t in_len;
    int resyncing;      /* skipping garbage; logged once per episode */

    li_stream_t *streams;
    size_t nstreams;

    char *default_env[LI_MAX_DEFAULT_ENV]; /* from LP_CONFIGURE, for every exec */
    size_t ndefault_env;

    char hostname[65];
    char root_dev[256];
    char root_fstype[32];
} li_ctx_t;

/* log.c */
void li_log(li_ctx_t *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void li_debug(li_ctx_t *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* util (log.c) */
uint64_t li_now_ms(void);
int li_write_all(int fd, const void *buf, size_t len);

/* agent.c */
int agent_run(li_ctx_t *ctx);
/* Queue a whole frame; payload may be NULL when len is 0. */
void agent_send_frame(li_ctx_t *ctx, uint8_t type, uint32_t stream, const void *payload, size_t len);
void agent_send_error(li_ctx_t *ctx, uint32_t stream, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void agent_send_window(li_ctx_t *ctx, uint32_t stream, uint32_t increment);
size_t agent_outq_len(const li_ctx_t *ctx);
/* Reserve room for one data frame with up to max payload bytes; returns the
 * payload pointer. Finish with agent_commit_data(). */
uint8_t *agent_reserve_data(li_ctx_t *ctx, size_t max);
void agent_commit_data(li_ctx_t *ctx, uint8_t type, uint32_t stream, size_t len);
li_stream_t *agent_stream_new(li_ctx_t *ctx, uint32_t id, li_kind_t kind);
void agent_stream_free(li_ctx_t *ctx, li_stream_t *s);

/* exec.c */
void exec_start(li_ctx_t *ctx, uint32_t stream, const uint8_t *payload, size_t len);
void exec_on_stdin(li_ctx_t *ctx, li_stream_t *s, const uint8_t *data, size_t len);
void exec_on_resize(li_ctx_t *ctx, li_stream_t *s, const uint8_t *payload, size_t len);
void exec_on_signal(li_ctx_t *ctx, li_stream_t *s, const uint8_t *payload, size_t len);
void exec_cancel(li_ctx_t *ctx, li_stream_t *s);
/* Kill the session's process group and release its fds (HELLO reset,
 * protocol violation, agent exit). */
void exec_destroy(li_ctx_t *ctx, li_stream_t *s);
/* Poll interest for each fd; returns the events to wait for. */
short exec_out_events(li_ctx_t *ctx, li_stream_t *s, int which);
short exec_in_events(li_stream_t *s);
/* Move data, handle timeouts, finish reaped sessions. Returns 1 if the
 * stream was freed. */
int exec_service(li_ctx_t *ctx, li_stream_t *s, uint64_t now);
/* Earliest deadline of the session (ms), or 0. */
uint64_t exec_next_deadline(li_stream_t *s);
/* A child exited: mark the matching session reaped. */
void exec_on_reaped(li_ctx_t *ctx, pid_t pid, int wstatus);
void exec_reap_all(li_ctx_t *ctx);

/* files.c */
void files_put_start(li_ctx_t *ctx, uint32_t stream, const uint8_t *payload, size_t len);
void files_put_data(li_ctx_t *ctx, li_stream_t *s, const uint8_t *data, size_t len);
void files_get_start(li_ctx_t *ctx, uint32_t stream, const uint8_t *payload, size_t len);
/* Send file data while the window allows. Returns 1 if the stream was freed. */
int files_get_service(li_ctx_t *ctx, li_stream_t *s);
void files_cancel(li_ctx_t *ctx, li_stream_t *s);
void files_destroy(li_ctx_t *ctx, li_stream_t *s);
/* Freeze/thaw hook (FIFREEZE/FITHAW on the filesystem holding path) for
 * consistent snapshots; returns 0 or negative errno. */
int files_freeze(const char *path);
int files_thaw(const char *path);

/* config.c */
void config_apply(li_ctx_t *ctx, uint32_t stream, const uint8_t *payload, size_t len);
void config_reset(li_ctx_t *ctx);

/* users.c */
typedef struct {
    uid_t uid;
    gid_t gid;
    char name[256];
    char home[1024];
    gid_t groups[64];
    int ngroups;
} li_user_t;

/* Resolve "name", "uid" or "uid:gid" against root_dir/etc/passwd and
 * /etc/group. Returns 0, or negative errno with a message in err. */
int users_resolve(const char *root_dir, const char *spec, li_user_t *out, char *err, size_t errlen);
/* gid of a group by name, or -1. */
long users_group_gid(const char *root_dir, const char *name);

/* boot.c */
int boot_pid1(li_ctx_t *ctx);
void boot_shutdown(li_ctx_t *ctx, int mode) __attribute__((noreturn));
/* Find and open the control port; returns fd or negative errno. */
int boot_open_port(li_ctx_t *ctx, int wait_ms);

#endif
