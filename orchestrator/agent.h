/* agent.h — lanesd's client for lane-init's control channel (common/proto.h).
 *
 * One agent_t per running lane: it connects to QEMU's virtio-serial chardev
 * (a unix socket QEMU listens on), performs the HELLO resync, and multiplexes
 * execs and file transfers as protocol streams with per-stream flow control.
 *
 * Threading: everything runs on the uv loop passed to agent_new(); no locks.
 * Every byte from the guest is hostile: a protocol violation (bad frame,
 * window overrun, unknown stream) fails the connection with a message via
 * on_disconnect, never crashes lanesd. After a disconnect every open
 * exec/transfer gets its terminal callback with an error.
 *
 * Ownership: agent_exec_t / agent_xfer_t / agent_req_t handles stay valid until
 * their terminal callback (on_exit / on_done) has returned; the agent frees
 * them right after. A caller that loses interest calls *_cancel() and still
 * receives the terminal callback.
 */
#ifndef LANES_AGENT_H
#define LANES_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct agent agent_t;
typedef struct agent_exec agent_exec_t;
typedef struct agent_xfer agent_xfer_t;

typedef struct {
    char hostname[256];
    char kernel[256];
    uint64_t boot_ms; /* guest's ms since kernel start when HELLO_ACK was sent */
} agent_hello_t;

typedef struct {
    /* The HELLO handshake finished: the guest is ready for requests. */
    void (*on_ready)(agent_t *agent, const agent_hello_t *hello, void *ud);
    /* The connection ended (QEMU gone, guest powered off, protocol violation).
     * err is a negative errno, msg a human-readable reason. */
    void (*on_disconnect)(agent_t *agent, int err, const char *msg, void *ud);
} agent_callbacks_t;

/* Create an agent for the chardev socket at sock_path. Nothing happens until
 * agent_start(). */
agent_t *agent_new(uv_loop_t *loop, const char *sock_path, const agent_callbacks_t *cb, void *ud);

/* Start connecting. Connection attempts are retried every 50 ms; after
 * connecting, HELLO is (re)sent every 500 ms until HELLO_ACK arrives. The
 * deadline connect_timeout_ms covers both (0 = none): if on_ready has not
 * happened by then, on_disconnect(-ETIMEDOUT). An agent is single-use: after
 * a disconnect, make a new one (agent_start returns -EALREADY). */
int agent_start(agent_t *agent, uint64_t connect_timeout_ms);

/* True after on_ready and before on_disconnect. */
int agent_is_ready(const agent_t *agent);

/* Close the connection and free the agent (after terminal callbacks of open
 * streams have run with -ECANCELED). Safe to call from inside callbacks;
 * accepts NULL. */
void agent_free(agent_t *agent);

/* ---- exec ---------------------------------------------------------------- */

typedef struct {
    const char *const *argv; /* NULL-terminated, argv[0] required */
    const char *const *env;  /* NULL-terminated "K=V", may be NULL */
    const char *cwd;         /* may be NULL */
    const char *user;        /* may be NULL (root) */
    int tty;                 /* allocate a PTY */
    uint16_t rows, cols;     /* PTY size when tty */
    uint64_t timeout_ms;     /* 0 = none */
    int stdin_open;          /* caller will send stdin (else guest stdin is /dev/null) */
} agent_exec_opts_t;

typedef struct {
    int exited;       /* 1: normal exit with code; 0: see term_signal/error */
    int code;         /* exit code when exited */
    int term_signal;  /* killing signal, 0 if none */
    int timed_out;    /* killed because timeout_ms elapsed */
    int error;        /* negative errno when the exec failed (not found, lane gone, ...) */
    char message[512];/* error text when error != 0 */
} agent_exit_t;

typedef struct {
    void (*on_started)(agent_exec_t *exec, uint32_t pid, void *ud);
    /* fd is 1 (stdout/pty) or 2 (stderr). The bytes count against the guest's
     * window until the caller calls agent_exec_ack(): that is the
     * backpressure path (ack immediately if you buffer unboundedly). */
    void (*on_output)(agent_exec_t *exec, int fd, const uint8_t *data, size_t len, void *ud);
    /* Stdin window opened again after agent_exec_stdin_room() was 0. */
    void (*on_stdin_room)(agent_exec_t *exec, void *ud);
    /* Terminal: always called exactly once. */
    void (*on_exit)(agent_exec_t *exec, const agent_exit_t *exit, void *ud);
} agent_exec_callbacks_t;

int agent_exec_start(agent_t *agent, const agent_exec_opts_t *opts, const agent_exec_callbacks_t *cb,
                     void *ud, agent_exec_t **out);
/* Bytes of stdin the guest will accept right now. */
size_t agent_exec_stdin_room(const agent_exec_t *exec);
/* Send up to stdin_room bytes (split into frames internally). Returns bytes
 * taken (may be less than len), or negative errno. */
ssize_t agent_exec_write_stdin(agent_exec_t *exec, const void *data, size_t len);
int agent_exec_close_stdin(agent_exec_t *exec);
void agent_exec_ack(agent_exec_t *exec, size_t len);
int agent_exec_resize(agent_exec_t *exec, uint16_t rows, uint16_t cols);
int agent_exec_signal(agent_exec_t *exec, int signo);
void agent_exec_cancel(agent_exec_t *exec);

/* ---- files ----------------------------------------------------------------- */

typedef struct {
    /* get only: size and mode of the file, before any data */
    void (*on_info)(agent_xfer_t *x, uint64_t size, uint32_t mode, void *ud);
    /* get only: file bytes; ack with agent_xfer_ack() */
    void (*on_data)(agent_xfer_t *x, const uint8_t *data, size_t len, void *ud);
    /* put only: window opened again */
    void (*on_room)(agent_xfer_t *x, void *ud);
    /* terminal: err 0 on success, else negative errno and message */
    void (*on_done)(agent_xfer_t *x, int err, const char *msg, void *ud);
} agent_xfer_callbacks_t;

int agent_file_put(agent_t *agent, const char *path, uint32_t mode, const agent_xfer_callbacks_t *cb,
                   void *ud, agent_xfer_t **out);
int agent_file_get(agent_t *agent, const char *path, const agent_xfer_callbacks_t *cb, void *ud,
                   agent_xfer_t **out);
size_t agent_xfer_room(const agent_xfer_t *x);
ssize_t agent_xfer_write(agent_xfer_t *x, const void *data, size_t len);
/* put: all data sent; the guest fsyncs, renames into place and answers. */
int agent_xfer_finish(agent_xfer_t *x);
void agent_xfer_ack(agent_xfer_t *x, size_t len);
void agent_xfer_cancel(agent_xfer_t *x);

/* ---- simple requests ----------------------------------------------------------- */

typedef void (*agent_done_cb)(agent_t *agent, int err, const char *msg, void *ud);

int agent_sync(agent_t *agent, agent_done_cb cb, void *ud);
/* FIFREEZE / FITHAW of the guest's root filesystem (snapshots). A thaw of a
 * filesystem that is not frozen succeeds. */
/* Lane settings (LP_CONFIGURE), idempotent: network, resolver, lane CA and
 * default exec environment. NULL/0 fields are left out. */
typedef struct {
    const char *net_addr;  /* "10.0.2.2/30" */
    const char *net_gw;    /* "10.0.2.1" */
    const char *dns;       /* resolver address */
    const char *ca_pem;    /* lane CA certificate (public) */
    size_t ca_pem_len;
    const char *const *env;/* NULL-terminated "K=V" */
} agent_config_t;
int agent_configure(agent_t *agent, const agent_config_t *cfg, agent_done_cb cb, void *ud);
int agent_freeze(agent_t *agent, agent_done_cb cb, void *ud);
int agent_thaw(agent_t *agent, agent_done_cb cb, void *ud);
/* mode 0 poweroff, 1 reboot. cb runs when the guest acknowledged. */
int agent_shutdown(agent_t *agent, int mode, agent_done_cb cb, void *ud);
/* Round trip of an empty PING (used by bench and health checks). */
int agent_ping(agent_t *agent, agent_done_cb cb, void *ud);

#endif
