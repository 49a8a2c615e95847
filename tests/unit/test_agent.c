/* Unit tests for orchestrator/agent.c, the host side of the control channel.
 *
 * Two groups in one binary:
 *  - scripted: a peer written here plays the guest frame by frame on a real
 *    unix socket (plain blocking-style POSIX I/O in the same thread, pumping
 *    the agent's uv loop while it waits), so every byte the agent sends is
 *    checked and every hostile byte sequence is crafted exactly;
 *  - guest (argv: --guest /path/to/lane-init): the agent against the real
 *    lane-init in its host-test mode (--agent-fd N) on an accepted socket.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "proto.h"

#define PEER_BUF (2 * (LP_HDR_SIZE + LP_MAX_PAYLOAD))

/* One frame as the peer received it (payload copied). */
typedef struct {
    uint8_t type;
    uint32_t stream;
    uint32_t len;
    uint8_t payload[LP_MAX_PAYLOAD];
} pframe_t;

typedef struct fx fx_t;

typedef struct {
    fx_t *fx;
    agent_exec_t *h;
    int started;
    uint32_t pid;
    size_t out[3];
    int exits;
    int exits_inside_cancel; /* on_exit ran synchronously inside agent_exec_cancel */
    agent_exit_t exit;
    int rooms;
    int free_agent_on_output;
    int cancel_on_output;
    int cancel_on_exit;
    int ack_immediately;
    int in_cancel;
    uint8_t *capture;
    size_t capture_len, capture_cap;
} exec_rec_t;

typedef struct {
    fx_t *fx;
    agent_xfer_t *h;
    int infos;
    uint64_t size;
    uint32_t mode;
    size_t data;
    int dones;
    int err;
    char msg[512];
    int rooms;
} xfer_rec_t;

typedef struct {
    int calls;
    int err;
} done_rec_t;

struct fx {
    uv_loop_t loop;
    char dir[64];
    char path[128];
    int lfd;
    int pfd;
    uint8_t pbuf[PEER_BUF];
    size_t plen;
    int peer_eof;
    uint64_t nonce;
    agent_t *agent;
    int ready;
    agent_hello_t hello;
    int disconnects;
    int disc_err;
    char disc_msg[512];
    int free_on_ready;
    int free_on_disconnect;
    pframe_t fr;
};

/* ---- fixture ------------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One bounded turn: run ready uv callbacks, then wait up to 1 ms. */
static void turn(fx_t *fx)
{
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    poll(NULL, 0, 1);
}

#define RUN_UNTIL(fx, cond, ms)                                                                                        \
    ({                                                                                                                 \
        uint64_t _end = now_ms() + (ms);                                                                               \
        while (!(cond) && now_ms() < _end)                                                                             \
            turn(fx);                                                                                                  \
        (cond);                                                                                                        \
    })

static void pump(fx_t *fx, unsigned ms)
{
    uint64_t end = now_ms() + ms;
    while (now_ms() < end)
        turn(fx);
}

static void on_ready(agent_t *a, const agent_hello_t *h, void *ud)
{
    fx_t *fx = ud;
    fx->ready++;
    fx->hello = *h;
    if (fx->free_on_ready) {
        agent_free(a);
        fx->agent = NULL;
    }
}

static void on_disconnect(agent_t *a, int err, const char *msg, void *ud)
{
    fx_t *fx = ud;
    fx->disconnects++;
    fx->disc_err = err;
    snprintf(fx->disc_msg, sizeof(fx->disc_msg), "%s", msg);
    if (fx->free_on_disconnect) {
        agent_free(a);
        fx->agent = NULL;
    }
}

static const agent_callbacks_t fx_cb = {on_ready, on_disconnect};

static fx_t *fx_new(void)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/test-agent-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof(fx->path), "%s/ctl.sock", fx->dir);
    fx->lfd = fx->pfd = -1;
    fx->agent = agent_new(&fx->loop, fx->path, &fx_cb, fx);
    assert_non_null(fx->agent);
    return fx;
}

static void fx_listen(fx_t *fx)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    assert_true(strlen(fx->path) < sizeof(sun.sun_path));
    memcpy(sun.sun_path, fx->path, strlen(fx->path) + 1);
    fx->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(fx->lfd >= 0);
    assert_int_equal(bind(fx->lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    assert_int_equal(listen(fx->lfd, 4), 0);
}

static void fx_free(fx_t *fx)
{
    agent_free(fx->agent);
    fx->agent = NULL;
    if (fx->pfd >= 0)
        close(fx->pfd);
    if (fx->lfd >= 0)
        close(fx->lfd);
    /* Let close callbacks run, then the loop must be empty. */
    for (int i = 0; i < 100 && uv_run(&fx->loop, UV_RUN_NOWAIT); i++)
        ;
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    unlink(fx->path);
    rmdir(fx->dir);
    free(fx);
}

static int peer_accept(fx_t *fx, unsigned ms)
{
    uint64_t end = now_ms() + ms;
    while (now_ms() < end) {
        int fd = accept4(fx->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
            fx->pfd = fd;
            return 0;
        }
        turn(fx);
    }
    return -1;
}

/* Read one frame from the agent into fx->fr. Returns 1, 0 on timeout, -1 on
 * EOF (the agent closed the connection). */
static int peer_recv(fx_t *fx, unsigned ms)
{
    uint64_t end = now_ms() + ms;
    for (;;) {
        lp_frame_t f;
        size_t used;
        int r = lp_frame_parse(fx->pbuf, fx->plen, &f, &used);
        assert_true(r >= 0); /* the agent must always send valid frames */
        if (r == 1) {
            fx->fr.type = f.type;
            fx->fr.stream = f.stream;
            fx->fr.len = f.len;
            memcpy(fx->fr.payload, f.payload, f.len);
            memmove(fx->pbuf, fx->pbuf + used, fx->plen - used);
            fx->plen -= used;
            return 1;
        }
        ssize_t n = read(fx->pfd, fx->pbuf + fx->plen, sizeof(fx->pbuf) - fx->plen);
        if (n > 0) {
            fx->plen += (size_t)n;
            continue;
        }
        if (n == 0) {
            fx->peer_eof = 1;
            return -1;
        }
        assert_true(errno == EAGAIN || errno == EINTR);
        if (now_ms() >= end)
            return 0;
        turn(fx);
    }
}

/* Receive frames, skipping WINDOW frames unless asked for, until one of type. */
static void peer_expect(fx_t *fx, uint8_t type)
{
    int r = peer_recv(fx, 3000);
    assert_int_equal(r, 1);
    if (fx->fr.type != type)
        fail_msg("peer expected %s, got %s", lp_type_name(type), lp_type_name(fx->fr.type));
}

static void peer_write(fx_t *fx, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint64_t end = now_ms() + 5000;
    while (len) {
        ssize_t n = write(fx->pfd, p, len);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        assert_true(n < 0 && (errno == EAGAIN || errno == EINTR));
        assert_true(now_ms() < end);
        turn(fx);
    }
}

static void peer_send(fx_t *fx, uint8_t type, uint32_t stream, const void *payload, size_t len)
{
    uint8_t hdr[LP_HDR_SIZE];
    lp_put_le16(hdr, LP_MAGIC);
    hdr[2] = LP_VERSION;
    hdr[3] = type;
    lp_put_le32(hdr + 4, stream);
    lp_put_le32(hdr + 8, (uint32_t)len);
    peer_write(fx, hdr, sizeof(hdr));
    if (len)
        peer_write(fx, payload, len);
}

static void peer_send_u32(fx_t *fx, uint8_t type, uint32_t stream, uint16_t tag, uint32_t v)
{
    uint8_t buf[16];
    lp_msg_t m;
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_u32(&m, tag, v);
    peer_send(fx, type, stream, buf, m.len);
}

static void peer_send_exit(fx_t *fx, uint32_t stream, int32_t code)
{
    uint8_t buf[16];
    lp_msg_t m;
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_i32(&m, LP_T_EXIT_CODE, code);
    peer_send(fx, LP_EXIT, stream, buf, m.len);
}

static void peer_send_ack(fx_t *fx, uint64_t nonce)
{
    uint8_t buf[128];
    lp_msg_t m;
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_u64(&m, LP_T_NONCE, nonce);
    lp_msg_put_u32(&m, LP_T_VERSION, LP_VERSION);
    lp_msg_put_str(&m, LP_T_HOSTNAME, "lane-test");
    lp_msg_put_str(&m, LP_T_KERNEL, "6.1.0-test");
    lp_msg_put_u64(&m, LP_T_BOOT_MS, 1234);
    peer_send(fx, LP_HELLO_ACK, 0, buf, m.len);
}

/* Find the first TLV with tag in the last received frame. */
static int fr_tlv(fx_t *fx, uint16_t want, int nth, const uint8_t **val, uint32_t *len)
{
    lp_tlv_iter_t it;
    uint16_t tag;
    lp_tlv_init(&it, fx->fr.payload, fx->fr.len);
    while (lp_tlv_next(&it, &tag, val, len) == 1)
        if (tag == want && nth-- == 0)
            return 1;
    return 0;
}

static uint64_t fr_u64(fx_t *fx, uint16_t tag)
{
    const uint8_t *v;
    uint32_t l;
    uint64_t out = 0;
    assert_true(fr_tlv(fx, tag, 0, &v, &l));
    assert_int_equal(lp_val_u64(v, l, &out), 0);
    return out;
}

static uint32_t fr_u32(fx_t *fx, uint16_t tag)
{
    const uint8_t *v;
    uint32_t l;
    uint32_t out = 0;
    assert_true(fr_tlv(fx, tag, 0, &v, &l));
    assert_int_equal(lp_val_u32(v, l, &out), 0);
    return out;
}

static void peer_read_hello(fx_t *fx)
{
    peer_expect(fx, LP_HELLO);
    assert_int_equal(fx->fr.stream, 0);
    fx->nonce = fr_u64(fx, LP_T_NONCE);
    assert_int_equal(fr_u32(fx, LP_T_VERSION), LP_VERSION);
}

/* Listen, start the agent, accept, answer HELLO, wait for on_ready. */
static void fx_handshake(fx_t *fx)
{
    fx_listen(fx);
    assert_int_equal(agent_start(fx->agent, 5000), 0);
    assert_int_equal(peer_accept(fx, 3000), 0);
    peer_read_hello(fx);
    peer_send_ack(fx, fx->nonce);
    assert_true(RUN_UNTIL(fx, fx->ready == 1, 3000));
    assert_true(agent_is_ready(fx->agent));
}

/* ---- exec callbacks -------------------------------------------------------- */

static void rec_started(agent_exec_t *e, uint32_t pid, void *ud)
{
    exec_rec_t *r = ud;
    assert_ptr_equal(e, r->h);
    r->started++;
    r->pid = pid;
}

static void rec_output(agent_exec_t *e, int fd, const uint8_t *data, size_t len, void *ud)
{
    exec_rec_t *r = ud;
    assert_ptr_equal(e, r->h);
    assert_true(fd == 1 || fd == 2);
    assert_int_equal(r->exits, 0);
    r->out[fd] += len;
    if (r->capture && fd == 1) {
        size_t n = len < r->capture_cap - r->capture_len ? len : r->capture_cap - r->capture_len;
        memcpy(r->capture + r->capture_len, data, n);
        r->capture_len += n;
    }
    if (r->ack_immediately)
        agent_exec_ack(e, len);
    if (r->cancel_on_output) {
        r->in_cancel = 1;
        agent_exec_cancel(e);
        r->in_cancel = 0;
    }
    if (r->free_agent_on_output) {
        agent_free(r->fx->agent);
        r->fx->agent = NULL;
    }
}

static void rec_room(agent_exec_t *e, void *ud)
{
    exec_rec_t *r = ud;
    assert_ptr_equal(e, r->h);
    r->rooms++;
}

static void rec_exit(agent_exec_t *e, const agent_exit_t *x, void *ud)
{
    exec_rec_t *r = ud;
    assert_ptr_equal(e, r->h);
    r->exits++;
    if (r->in_cancel)
        r->exits_inside_cancel++;
    r->exit = *x;
    if (r->cancel_on_exit)
        agent_exec_cancel(e); /* must be a no-op now */
}

static const agent_exec_callbacks_t rec_cb = {rec_started, rec_output, rec_room, rec_exit};

static void start_exec(fx_t *fx, exec_rec_t *r, int stdin_open)
{
    static const char *const argv[] = {"/bin/echo", "hi", NULL};
    static const char *const env[] = {"A=1", NULL};
    agent_exec_opts_t o = {.argv = argv, .env = env, .cwd = "/tmp", .user = "1000:1000",
                           .timeout_ms = 7000, .stdin_open = stdin_open};
    r->fx = fx;
    assert_int_equal(agent_exec_start(fx->agent, &o, &rec_cb, r, &r->h), 0);
    peer_expect(fx, LP_EXEC);
}

/* ---- tests: connection --------------------------------------------------- */

static void test_handshake_after_garbage(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    fx_listen(fx);
    assert_int_equal(agent_is_ready(fx->agent), 0);
    assert_int_equal(agent_start(fx->agent, 5000), 0);
    assert_int_equal(peer_accept(fx, 3000), 0);
    peer_read_hello(fx);

    /* Leftovers of an earlier session: random bytes, a stray magic, a whole
     * STDOUT frame, an ACK with a stale nonce, and a header claiming a 60000
     * byte payload that never arrives (it must not swallow the real ACK). */
    uint8_t junk[] = {0x00, 0x4e, 0x4c, 0x13, 0x4e, 0x4c, 0x01, 0xff, 0x99, 0x4e};
    peer_write(fx, junk, sizeof(junk));
    peer_send(fx, LP_STDOUT, 3, "old output", 10);
    peer_send_ack(fx, fx->nonce ^ 1);
    uint8_t trap[LP_HDR_SIZE];
    lp_hdr_encode(trap, LP_STDOUT, 5, 60000);
    peer_write(fx, trap, sizeof(trap));
    pump(fx, 20);
    assert_int_equal(fx->ready, 0);
    /* The real ACK arrives split across reads (mid-header), followed in the
     * same burst by a frame that must be decoded too. */
    uint8_t ack[128];
    lp_msg_t m;
    lp_msg_init(&m, ack + LP_HDR_SIZE, sizeof(ack) - LP_HDR_SIZE);
    lp_msg_put_u64(&m, LP_T_NONCE, fx->nonce);
    lp_msg_put_str(&m, LP_T_HOSTNAME, "lane-test");
    lp_msg_put_str(&m, LP_T_KERNEL, "6.1.0-test");
    lp_msg_put_u64(&m, LP_T_BOOT_MS, 1234);
    lp_hdr_encode(ack, LP_HELLO_ACK, 0, (uint32_t)m.len);
    peer_write(fx, ack, 5);
    pump(fx, 20);
    peer_write(fx, ack + 5, LP_HDR_SIZE + m.len - 5);
    peer_send(fx, LP_PING, 0, "abc", 3);
    assert_true(RUN_UNTIL(fx, fx->ready == 1, 3000));
    assert_string_equal(fx->hello.hostname, "lane-test");
    assert_string_equal(fx->hello.kernel, "6.1.0-test");
    assert_int_equal(fx->hello.boot_ms, 1234);
    assert_true(agent_is_ready(fx->agent));
    peer_expect(fx, LP_PONG);
    assert_int_equal(fx->fr.len, 3);
    assert_memory_equal(fx->fr.payload, "abc", 3);
    assert_int_equal(fx->disconnects, 0);
    fx_free(fx);
}

static void test_hello_resent_and_duplicate_acks(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    fx_listen(fx);
    assert_int_equal(agent_start(fx->agent, 5000), 0);
    assert_int_equal(peer_accept(fx, 3000), 0);
    peer_read_hello(fx);
    uint64_t first = fx->nonce;
    uint64_t t0 = now_ms();
    peer_read_hello(fx); /* resent after ~500 ms, same nonce */
    assert_true(now_ms() - t0 >= 300);
    assert_int_equal(fx->nonce, first);
    /* A guest that saw both HELLOs answers both. */
    peer_send_ack(fx, fx->nonce);
    peer_send_ack(fx, fx->nonce);
    assert_true(RUN_UNTIL(fx, fx->ready == 1, 3000));
    pump(fx, 30);
    assert_int_equal(fx->disconnects, 0);
    /* A third ACK answers no HELLO: violation. */
    peer_send_ack(fx, fx->nonce);
    assert_true(RUN_UNTIL(fx, fx->disconnects == 1, 3000));
    assert_int_equal(fx->disc_err, -EPROTO);
    fx_free(fx);
}

static void test_connect_retry_until_socket_appears(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    assert_int_equal(agent_start(fx->agent, 3000), 0);
    pump(fx, 300); /* several failed attempts: no socket yet */
    assert_int_equal(fx->disconnects, 0);
    fx_listen(fx);
    assert_int_equal(peer_accept(fx, 1000), 0);
    peer_read_hello(fx);
    peer_send_ack(fx, fx->nonce);
    assert_true(RUN_UNTIL(fx, fx->ready == 1, 3000));
    fx_free(fx);
}

static void test_connect_timeout(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    uint64_t t0 = now_ms();
    assert_int_equal(agent_start(fx->agent, 250), 0);
    assert_int_equal(agent_start(fx->agent, 250), -EALREADY);
    assert_true(RUN_UNTIL(fx, fx->disconnects == 1, 3000));
    uint64_t dt = now_ms() - t0;
    assert_true(dt >= 240 && dt < 1500);
    assert_int_equal(fx->disc_err, -ETIMEDOUT);
    assert_non_null(strstr(fx->disc_msg, fx->path));
    assert_int_equal(fx->ready, 0);
    pump(fx, 100);
    assert_int_equal(fx->disconnects, 1);
    fx_free(fx);
}

static void test_new_free_unstarted(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    char longpath[200];
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    errno = 0;
    assert_null(agent_new(&loop, longpath, &fx_cb, NULL));
    assert_int_equal(errno, EINVAL);
    agent_t *a = agent_new(&loop, "/nonexistent/x.sock", &fx_cb, NULL);
    assert_non_null(a);
    assert_false(agent_is_ready(a));
    done_rec_t d = {0};
    assert_int_equal(agent_ping(a, NULL, &d), -ENOTCONN);
    agent_free(a);
    agent_free(NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_hello_timeout(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    fx_listen(fx);
    assert_int_equal(agent_start(fx->agent, 700), 0);
    assert_int_equal(peer_accept(fx, 1000), 0);
    assert_true(RUN_UNTIL(fx, fx->disconnects == 1, 3000));
    assert_int_equal(fx->disc_err, -ETIMEDOUT);
    assert_int_equal(fx->ready, 0);
    fx_free(fx);
}

static void test_peer_closes(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    fx_handshake(fx);
    exec_rec_t r = {0};
    start_exec(fx, &r, 0);
    close(fx->pfd);
    fx->pfd = -1;
    assert_true(RUN_UNTIL(fx, fx->disconnects == 1, 3000));
    assert_int_equal(fx->disc_err, -ECONNRESET);
    assert_int_equal(r.exits, 1);
    assert_int_equal(r.exit.error, -ECONNRESET);
    assert_false(agent_is_ready(fx->agent));
    static const char *const argv[] = {"true", NULL};
    agent_exec_opts_t o = {.argv = argv};
    agent_exec_t *e = NULL;
    assert_int_equal(agent_exec_start(fx->agent, &o, &rec_cb, &r, &e), -ENOTCONN);
    assert_null(e);
    fx_free(fx);
}

/* ---- tests: exec ----------------------------------------------------------- */

static void test_exec_request_encoding(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    fx_handshake(fx);
    exec_rec_t r = {0};
    start_exec(fx, &r, 1);
    assert_int_equal(fx->fr.stream, 1);
    const uint8_t *v;
    uint32_t l;
    assert_true(fr_tlv(fx, LP_T_ARG, 0, &v, &l));
    assert_int_equal(l, 9);
    assert_memory_equal(v, "/bin/echo", 9);
    assert_true(fr_tlv(fx, LP_T_ARG, 1, &v, &l));
    assert_memory_equal(v, "hi", 2);
    assert_false(fr_tlv(fx, LP_T_ARG, 2, &v, &l));
    assert_true(fr_tlv(fx, LP_T_ENV, 0, &v, &l));
    assert_memory_equal(v, "A=1", 3);
    assert_true(fr_tlv(fx, LP_T_CWD, 0, &v, &l));
    assert_memory_equal(v, "/tmp", 4);
    assert_true(fr_tlv(fx, LP_T_USER, 0, &v, &l));
    assert_memory_equal(v, "1000:1000", 9);
    assert_int_equal(fr_u64(fx, LP_T_TIMEOUT_MS), 7000);
    assert_int_equal(fr_u32(fx, LP_T_STDIN), 1);
    assert_false(fr_tlv(fx, LP_T_TTY_ROWS, 0, &v, &l));

    /* Second stream: next odd id, with a PTY. */
    static const char *const argv[] = {"sh", NULL};
    agent_exec_opts_t o = {.argv = argv, .tty = 1, .rows = 40, .cols = 120};
    exec_rec_t r2 = {.fx = fx};
    assert_int_equal(agent_exec_start(fx->agent, &o, &rec_cb, &r2, &r2.h), 0);
    peer_expect(fx, LP_EXEC);
    assert_int_equal(fx->fr.stream, 3);
    assert_int_equal(fr_u32(fx, LP_T_TTY_ROWS), 40);
    assert_int_equal(fr_u32(fx, LP_T_TTY_COLS), 120);
    assert_int_equal(fr_u32(fx, LP_T_STDIN), 0);
    assert_int_equal(agent_exec_resize(r2.h, 50, 132), 0);
    peer_expect(fx, LP_RESIZE);
    assert_int_equal(fr_u32(fx, LP_T_TTY_COLS), 132);
    assert_int_equal(agent_exec_signal(r2.h, SIGTERM), 0);
    peer_expect(fx, LP_SIGNAL);
    assert_int_equal(fr_u32(fx, LP_T_SIGNO), SIGTERM);

    /* An argv that cannot fit in one frame is refused up front. */
    char *big = malloc(LP_MAX_PAYLOAD + 1);
    memset(big, 'x', LP_MAX_PAYLOAD);
    big[LP_MAX_PAYLOAD] = '\0';
    const char *bigv[] = {big, NULL};
    agent_exec_opts_t ob = {.argv = bigv};
    agent_exec_t *e = NULL;
    assert_int_equal(agent_exec_start(fx->agent, &ob, &rec_cb, &r2, &e), -E2BIG);
    assert_null(e);
    free(big);

    /* Lifecycle frames. */
    peer_send_u32(fx, LP_EXEC_STARTED, 1, LP_T_PID, 4242);
    peer_send(fx, LP_STDERR, 1, "err", 3);
    peer_send(fx, LP_STDOUT, 1, "hi\n", 3);
    peer_send(fx, LP_STDOUT, 1, NULL, 0);
    peer_send_exit(fx, 1, 3);
    assert_true(RUN_UNTIL(fx, r.exits == 1, 3000));
    assert_int_equal(r.started, 1);
    assert_int_equal(r.pid, 4242);
    assert_int_equal(r.out[1], 3);
    assert_int_equal(r.out[2], 3);
    assert_true(r.exit.exited);
    assert_int_equal(r.exit.code, 3);
    assert_int_equal(r.exit.error, 0);

    /* Killed by a signal after a timeout. */
    uint8_t buf[32];
    lp_msg_t m;
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_u32(&m, LP_T_TERM_SIGNAL, SIGKILL);
    lp_msg_put_u32(&m, LP_T_TIMED_OUT, 1);
    peer_send(fx, LP_EXIT, 3, buf, m.len);
    assert_true(RUN_UNTIL(fx, r2.exits == 1, 3000));
    assert_false(r2.exit.exited);
    assert_int_equal(r2.exit.term_signal, SIGKILL);
    assert_true(r2.exit.timed_out);
    pump(fx, 20);
    assert_int_equal(fx->disconnects, 0);
    fx_free(fx);
}

static void test_exec_error_enoent(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    fx_handshake(fx);
    exec_rec_t r = {0};
    start_exec(fx, &r, 0);
    uint8_t buf[128];
    lp_msg_t m;
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_u32(&m, LP_T_ERRNO, ENOENT);
    lp_msg_put_str(&m, LP_T_MESSAGE, "exec /bin/echo: No such file or directory");
    peer_send(fx, LP_ERROR, 1, buf, m.len);
    assert_true(RUN_UNTIL(fx, r.exits == 1, 3000));
    assert_int_equal(r.exit.error, -ENOENT);
    assert_false(r.exit.exited);
    assert_string_equal(r.exit.message, "exec /bin/echo: No such file or directory");
    pump(fx, 20);
    assert_int_equal(r.exits, 1);
    assert_int_equal(fx->disconnects, 0);
    fx_free(fx);
}

static void test_output_window_and_acks(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    fx_handshake(fx);
    exec_rec_t r = {0};
    start_exec(fx, &r, 0);
    static uint8_t chunk[LP_MAX_PAYLOAD];
    memset(chunk, 'o', sizeof(chunk));

    /* 64 KiB delivered, 1000 acked: below a quarter window, guest window
     * still large: no WINDOW frame yet (coalescing). */
    peer_send(fx, LP_STDOUT, 1, chunk, LP_MAX_PAYLOAD);
    assert_true(RUN_UNTIL(fx, r.out[1] == LP_MAX_PAYLOAD, 3000));
    agent_exec_ack(r.h, 1000);
    assert_int_equal(peer_recv(fx, 50), 0);
    /* The rest of that chunk makes a quarter: one WINDOW for all of it. */
    agent_exec_ack(r.h, LP_MAX_PAYLOAD - 1000);
    peer_expect(fx, LP_WINDOW);
    assert_int_equal(fx->fr.stream, 1);
    assert_int_equal(fr_u32(fx, LP_T_INCREMENT), LP_MAX_PAYLOAD);

    /* Fill the whole window without acking: everything is delivered... */
    for (unsigned i = 0; i < LP_WINDOW_INITIAL / LP_MAX_PAYLOAD; i++)
        peer_send(fx, LP_STDOUT, 1, chunk, LP_MAX_PAYLOAD);
    assert_true(RUN_UNTIL(fx, r.out[1] == LP_MAX_PAYLOAD + LP_WINDOW_INITIAL, 3000));
    assert_int_equal(peer_recv(fx, 50), 0);
    /* ...over-acking is clamped to what was delivered; with the guest's window
     * at 0 even a small ack is sent at once. */
    agent_exec_ack(r.h, 100);
    peer_expect(fx, LP_WINDOW);
    assert_int_equal(fr_u32(fx, LP_T_INCREMENT), 100);
    agent_exec_ack(r.h, 10 * LP_WINDOW_INITIAL);
    peer_expect(fx, LP_WINDOW);
    assert_int_equal(fr_u32(fx, LP_T_INCREMENT), LP_WINDOW_INITIAL - 100);

    /* The guest may now use exactly the window again; one byte more is an
     * overrun. */
    for (unsigned i = 0; i < LP_WINDOW_INITIAL / LP_MAX_PAYLOAD; i++)
        peer_send(fx, LP_STDERR, 1, chunk, LP_MAX_PAYLOAD);
    assert_true(RUN_UNTIL(fx, r.out[2] == LP_WINDOW_INITIAL, 3000));
    assert_int_equal(fx->disconnects, 0);
    peer_send(fx, LP_STDOUT, 1, "x", 1);
    assert_true(RUN_UNTIL(fx, fx->disconnects == 1, 3000));
    assert_int_equal(fx->disc_err, -EPROTO);
    assert_non_null(strstr(fx->disc_msg, "window"));
    assert_int_equal(r.out[2], LP_WINDOW_INITIAL);
    assert_int_equal(r.out[1], LP_MAX_PAYLOAD + LP_WINDOW_INITIAL);
    assert_int_equal(r.exits, 1);
    assert_int_equal(r.exit.error, -EPROTO);
    fx_free(fx);
}

static void test_stdin_split_and_room(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    fx_handshake(fx);
    exec_rec_t r = {0};
    start_exec(fx, &r, 1);
    assert_int_equal(agent_exec_stdin_room(r.h), LP_WINDOW_INITIAL);
    size_t n = 400 * 1024;
    uint8_t *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 7);
    ssize_t w = agent_exec_write_stdin(r.h, data, n);
    assert_int_equal(w, LP_WINDOW_INITIAL);
    assert_int_equal(agent_exec_stdin_room(r.h), 0);
    assert_int_equal(agent_exec_write_stdin(r.h, data, 10), 0);
    size_t got = 0;
    while (got < LP_WINDOW_INITIAL) {
        peer_expect(fx, LP_STDIN);
        assert_int_equal(fx->fr.stream, 1);
        assert_true(fx->fr.len > 0 && fx->fr.len <= LP_MAX_PAYLOAD);
        assert_memory_equal(fx->fr.payload, data + got, fx->fr.len);
        got += fx->fr.len;
    }
    assert_int_equal(got, LP_WINDOW_INITIAL);
    pump(fx, 20);
    assert_int_equal(r.rooms, 0);
    peer_send_u32(fx, LP_WINDOW, 1, LP_T_INCREMENT, 100000);
    assert_true(RUN_UNTIL(fx, r.rooms == 1, 3000));
    assert_int_equal(agent_exec_stdin_room(r.h), 100000);
    w = agent_exec_write_stdin(r.h, data + got, n - got);
    assert_int_equal(w, 100000);
    while (got < LP_WINDOW_INITIAL + 100000) {
        peer_expect(fx, LP_STDIN);
        assert_memory_equal(fx->fr.payload, data + got, fx->fr.len);
        got += fx->fr.len;
    }
    assert_int_equal(agent_exec_close_stdin(r.h), 0);
    peer_expect(fx, LP_STDIN);
    assert_int_equal(fx->fr.len, 0);
    assert_int_equal(agent_exec_write_stdin(r.h, data, 1), -EPIPE);
    /* A window after EOF does not call on_stdin_room. */
    peer_send_u32(fx, LP_WINDOW, 1, LP_T_INCREMENT, 5000);
    peer_send_exit(fx, 1, 0);
    assert_true(RUN_UNTIL(fx, r.exits == 1, 3000));
    assert_int_equal(r.rooms, 1);
    assert_true(r.exit.exited);

    /* Without stdin_open there is no stdin at all. */
    exec_rec_t r2 = {0};
    start_exec(fx, &r2, 0);
    assert_int_equal(agent_exec_stdin_room(r2.h), 0);
    assert_int_equal(agent_exec_write_stdin(r2.h, data, 1), -EPIPE);
    free(data);
    fx_free(fx);
}

/* ---- tests: protocol violations ------------------------------------------- */

typedef struct {
    const char *name;
    void (*send)(fx_t *fx);
    const char *msg_part;
} violation_case_t;

static void v_bad_magic(fx_t *fx)
{
    uint8_t b[LP_HDR_SIZE] = {0x4e, 0x4d, 1, LP_STDOUT, 1, 0, 0, 0, 0, 0, 0, 0};
    peer_write(fx, b, sizeof(b));
}
static void v_bad_version(fx_t *fx)
{
    uint8_t b[LP_HDR_SIZE] = {0x4e, 0x4c, 9, LP_STDOUT, 1, 0, 0, 0, 0, 0, 0, 0};
    peer_write(fx, b, sizeof(b));
}
static void v_bad_type(fx_t *fx)
{
    uint8_t b[LP_HDR_SIZE] = {0x4e, 0x4c, 1, 200, 1, 0, 0, 0, 0, 0, 0, 0};
    peer_write(fx, b, sizeof(b));
}
static void v_oversized(fx_t *fx)
{
    uint8_t b[LP_HDR_SIZE];
    lp_put_le16(b, LP_MAGIC);
    b[2] = LP_VERSION;
    b[3] = LP_STDOUT;
    lp_put_le32(b + 4, 1);
    lp_put_le32(b + 8, LP_MAX_PAYLOAD + 1);
    peer_write(fx, b, sizeof(b));
}
static void v_unknown_stream(fx_t *fx)
{
    peer_send(fx, LP_STDOUT, 99, "x", 1);
}
static void v_even_stream(fx_t *fx)
{
    peer_send(fx, LP_STDOUT, 2, "x", 1);
}
static void v_window_overrun(fx_t *fx)
{
    static uint8_t chunk[LP_MAX_PAYLOAD];
    for (unsigned i = 0; i < LP_WINDOW_INITIAL / LP_MAX_PAYLOAD; i++)
        peer_send(fx, LP_STDOUT, 1, chunk, LP_MAX_PAYLOAD);
    peer_send(fx, LP_STDERR, 1, chunk, 1);
}
static void v_truncated_tlv(fx_t *fx)
{
    uint8_t b[10];
    lp_put_le16(b, LP_T_EXIT_CODE);
    lp_put_le32(b + 2, 8); /* claims 8 bytes, 4 present */
    lp_put_le32(b + 6, 0);
    peer_send(fx, LP_EXIT, 1, b, sizeof(b));
}
static void v_short_tlv_header(fx_t *fx)
{
    peer_send(fx, LP_EXEC_STARTED, 1, "\x14\x00\x04", 3);
}
static void v_wrong_int_size(fx_t *fx)
{
    uint8_t b[8];
    lp_msg_t m;
    lp_msg_init(&m, b, sizeof(b));
    lp_msg_put(&m, LP_T_PID, "\1\2", 2);
    peer_send(fx, LP_EXEC_STARTED, 1, b, m.len);
}
static void v_nul_in_message(fx_t *fx)
{
    uint8_t b[32];
    lp_msg_t m;
    lp_msg_init(&m, b, sizeof(b));
    lp_msg_put_u32(&m, LP_T_ERRNO, EIO);
    lp_msg_put(&m, LP_T_MESSAGE, "a\0b", 3);
    peer_send(fx, LP_ERROR, 1, b, m.len);
}
static void v_started_twice(fx_t *fx)
{
    peer_send_u32(fx, LP_EXEC_STARTED, 1, LP_T_PID, 1);
    peer_send_u32(fx, LP_EXEC_STARTED, 1, LP_T_PID, 1);
}
static void v_after_exit(fx_t *fx)
{
    peer_send_exit(fx, 1, 0);
    peer_send(fx, LP_STDOUT, 1, "late", 4);
}
static void v_data_after_eof(fx_t *fx)
{
    peer_send(fx, LP_STDOUT, 1, NULL, 0);
    peer_send(fx, LP_STDOUT, 1, "x", 1);
}
static void v_wrong_kind(fx_t *fx)
{
    peer_send(fx, LP_FILE_INFO, 1, NULL, 0);
}
static void v_host_type(fx_t *fx)
{
    peer_send(fx, LP_STDIN, 1, "x", 1);
}
static void v_unmatched_pong(fx_t *fx)
{
    peer_send(fx, LP_PONG, 0, "\x77\0\0\0\0\0\0\0", 8);
}
static void v_stream0_data(fx_t *fx)
{
    peer_send(fx, LP_STDOUT, 0, "x", 1);
}
static void v_window_no_increment(fx_t *fx)
{
    peer_send(fx, LP_WINDOW, 1, NULL, 0);
}

static const violation_case_t violation_cases[] = {
    {"bad magic", v_bad_magic, "header"},
    {"bad version", v_bad_version, "header"},
    {"bad type", v_bad_type, "header"},
    {"oversized length", v_oversized, "limit"},
    {"unknown stream", v_unknown_stream, "unknown stream"},
    {"even stream", v_even_stream, "unknown stream"},
    {"window overrun", v_window_overrun, "window"},
    {"truncated TLV", v_truncated_tlv, "malformed"},
    {"short TLV header", v_short_tlv_header, "malformed"},
    {"wrong integer size", v_wrong_int_size, "malformed"},
    {"NUL in string", v_nul_in_message, "malformed"},
    {"EXEC_STARTED twice", v_started_twice, "unexpected"},
    {"frame after EXIT", v_after_exit, "after the end"},
    {"data after EOF", v_data_after_eof, "EOF"},
    {"frame of another kind", v_wrong_kind, "unexpected"},
    {"host-only type", v_host_type, "unexpected"},
    {"unmatched PONG", v_unmatched_pong, "PONG"},
    {"data on stream 0", v_stream0_data, "stream 0"},
    {"WINDOW without INCREMENT", v_window_no_increment, "INCREMENT"},
};

static void ping_done(agent_t *a, int err, const char *msg, void *ud)
{
    done_rec_t *d = ud;
    d->calls++;
    d->err = err;
}

static void test_violations(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(violation_cases) / sizeof(violation_cases[0]); i++) {
        const violation_case_t *c = &violation_cases[i];
        fx_t *fx = fx_new();
        fx_handshake(fx);
        exec_rec_t r1 = {0}, r2 = {0};
        start_exec(fx, &r1, 1);
        start_exec(fx, &r2, 0);
        done_rec_t ping = {0};
        assert_int_equal(agent_ping(fx->agent, ping_done, &ping), 0);
        peer_expect(fx, LP_PING);
        c->send(fx);
        if (!RUN_UNTIL(fx, fx->disconnects == 1, 3000))
            fail_msg("case '%s': no disconnect", c->name);
        if (fx->disc_err != -EPROTO || !strstr(fx->disc_msg, c->msg_part))
            fail_msg("case '%s': err %d msg '%s'", c->name, fx->disc_err, fx->disc_msg);
        /* Every open stream ended once, with the error; so did the ping. */
        if (c->send != v_after_exit) {
            assert_int_equal(r1.exits, 1);
            assert_int_equal(r1.exit.error, -EPROTO);
        }
        assert_int_equal(r2.exits, 1);
        assert_int_equal(r2.exit.error, -EPROTO);
        assert_non_null(strstr(r2.exit.message, "protocol violation"));
        assert_int_equal(ping.calls, 1);
        assert_int_equal(ping.err, -EPROTO);
        assert_false(agent_is_ready(fx->agent));
        /* The agent hung up on the guest. */
        int rr;
        while ((rr = peer_recv(fx, 2000)) == 1)
            ;
        assert_int_equal(rr, -1);
        pump(fx, 20);
        assert_int_equal(fx->disconnects, 1);
        assert_int_equal(r2.exits, 1);
        fx_free(fx);
    }
}

/* ---- tests: cancel and re-entrancy ---------------------------------------- */

static void test_cancel_then_late_frames(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    fx_handshake(fx);
    exec_rec_t r = {0};
    start_exec(fx, &r, 1);
    r.in_cancel = 1;
    agent_exec_cancel(r.h);
    r.in_cancel = 0;
    agent_exec_cancel(r.h); /* idempotent */
    assert_int_equal(r.exits, 0); /* not from inside the call */
    peer_expect(fx, LP_CANCEL);
    assert_int_equal(fx->fr.stream, 1);
    assert_true(RUN_UNTIL(fx, r.exits == 1, 3000));
    assert_int_equal(r.exits_inside_cancel, 0);
    assert_int_equal(r.exit.error, -ECANCELED);
    /* Frames the guest sent before it saw CANCEL are fine and invisible. */
    static uint8_t chunk[LP_MAX_PAYLOAD];
    peer_send_u32(fx, LP_EXEC_STARTED, 1, LP_T_PID, 7);
    for (int i = 0; i < 8; i++) /* twice the window: acknowledged for us */
    {
        peer_send(fx, LP_STDOUT, 1, chunk, sizeof(chunk));
        if (i % 2)
            while (peer_recv(fx, 20) == 1)
                assert_int_equal(fx->fr.type, LP_WINDOW);
    }
    peer_send_u32(fx, LP_EXIT, 1, LP_T_TERM_SIGNAL, SIGKILL);
    pump(fx, 50);
    assert_int_equal(fx->disconnects, 0);
    assert_int_equal(r.exits, 1);
    assert_int_equal(r.started, 0);
    assert_int_equal(r.out[1], 0);
    /* The stream is finished now: anything more is a violation. */
    peer_send(fx, LP_STDOUT, 1, "x", 1);
    assert_true(RUN_UNTIL(fx, fx->disconnects == 1, 3000));
    assert_int_equal(fx->disc_err, -EPROTO);
    fx_free(fx);
}

static void test_cancel_from_callbacks(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    fx_handshake(fx);
    exec_rec_t r = {.cancel_on_output = 1, .cancel_on_exit = 1};
    start_exec(fx, &r, 0);
    peer_send(fx, LP_STDOUT, 1, "a", 1);
    peer_send(fx, LP_STDOUT, 1, "b", 1); /* same burst: not delivered any more */
    assert_true(RUN_UNTIL(fx, r.exits == 1, 3000));
    assert_int_equal(r.out[1], 1);
    assert_int_equal(r.exits_inside_cancel, 0);
    assert_int_equal(r.exit.error, -ECANCELED);
    peer_expect(fx, LP_CANCEL);
    peer_send_exit(fx, 1, 0);
    pump(fx, 30);
    assert_int_equal(r.exits, 1);
    assert_int_equal(fx->disconnects, 0);
    fx_free(fx);
}

static void test_free_inside_output(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    fx_handshake(fx);
    exec_rec_t r1 = {.free_agent_on_output = 1}, r2 = {0};
    start_exec(fx, &r1, 0);
    start_exec(fx, &r2, 0);
    done_rec_t ping = {0};
    assert_int_equal(agent_ping(fx->agent, ping_done, &ping), 0);
    peer_send(fx, LP_STDOUT, 1, "a", 1);
    peer_send(fx, LP_STDOUT, 1, "b", 1);
    peer_send(fx, LP_STDOUT, 3, "c", 1);
    assert_true(RUN_UNTIL(fx, fx->agent == NULL, 3000));
    /* Terminal callbacks ran synchronously inside agent_free, once each. */
    assert_int_equal(r1.exits, 1);
    assert_int_equal(r1.exit.error, -ECANCELED);
    assert_int_equal(r2.exits, 1);
    assert_int_equal(r2.exit.error, -ECANCELED);
    assert_int_equal(ping.calls, 1);
    assert_int_equal(ping.err, -ECANCELED);
    pump(fx, 30);
    assert_int_equal(r1.out[1], 1);
    assert_int_equal(r2.out[1], 0);
    assert_int_equal(fx->disconnects, 0);
    fx_free(fx);
}

static void test_free_inside_disconnect_and_ready(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    fx_handshake(fx);
    exec_rec_t r = {0};
    start_exec(fx, &r, 0);
    fx->free_on_disconnect = 1;
    peer_send(fx, LP_STDOUT, 77, "x", 1);
    assert_true(RUN_UNTIL(fx, fx->agent == NULL, 3000));
    assert_int_equal(fx->disconnects, 1);
    assert_int_equal(r.exits, 1);
    assert_int_equal(r.exit.error, -EPROTO); /* ran before on_disconnect */
    fx_free(fx);

    fx = fx_new();
    fx->free_on_ready = 1;
    fx_listen(fx);
    assert_int_equal(agent_start(fx->agent, 5000), 0);
    assert_int_equal(peer_accept(fx, 3000), 0);
    peer_read_hello(fx);
    peer_send_ack(fx, fx->nonce);
    peer_send(fx, LP_PING, 0, NULL, 0);
    assert_true(RUN_UNTIL(fx, fx->agent == NULL, 3000));
    assert_int_equal(fx->ready, 1);
    pump(fx, 30);
    assert_int_equal(fx->disconnects, 0);
    fx_free(fx);
}

static void free_in_exit(agent_exec_t *e, const agent_exit_t *x, void *ud)
{
    exec_rec_t *r = ud;
    rec_exit(e, x, ud);
    agent_free(r->fx->agent);
    r->fx->agent = NULL;
}

static void test_free_inside_exit(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    fx_handshake(fx);
    agent_exec_callbacks_t cb = rec_cb;
    cb.on_exit = free_in_exit;
    static const char *const argv[] = {"x", NULL};
    agent_exec_opts_t o = {.argv = argv};
    exec_rec_t r1 = {.fx = fx}, r2 = {.fx = fx};
    assert_int_equal(agent_exec_start(fx->agent, &o, &cb, &r1, &r1.h), 0);
    assert_int_equal(agent_exec_start(fx->agent, &o, &rec_cb, &r2, &r2.h), 0);
    peer_send_exit(fx, 1, 0);
    peer_send(fx, LP_STDOUT, 3, "x", 1);
    assert_true(RUN_UNTIL(fx, fx->agent == NULL, 3000));
    assert_int_equal(r1.exits, 1);
    assert_true(r1.exit.exited);
    assert_int_equal(r2.exits, 1);
    assert_int_equal(r2.exit.error, -ECANCELED);
    assert_int_equal(r2.out[1], 0);
    fx_free(fx);
}

/* ---- tests: files, sync, ping ---------------------------------------------- */

static void x_info(agent_xfer_t *x, uint64_t size, uint32_t mode, void *ud)
{
    xfer_rec_t *r = ud;
    assert_ptr_equal(x, r->h);
    r->infos++;
    r->size = size;
    r->mode = mode;
}

static void x_data(agent_xfer_t *x, const uint8_t *data, size_t len, void *ud)
{
    xfer_rec_t *r = ud;
    r->data += len;
    agent_xfer_ack(x, len);
}

static void x_room(agent_xfer_t *x, void *ud)
{
    ((xfer_rec_t *)ud)->rooms++;
}

static void x_done(agent_xfer_t *x, int err, const char *msg, void *ud)
{
    xfer_rec_t *r = ud;
    assert_ptr_equal(x, r->h);
    r->dones++;
    r->err = err;
    snprintf(r->msg, sizeof(r->msg), "%s", msg ? msg : "");
}

static const agent_xfer_callbacks_t x_cb = {x_info, x_data, x_room, x_done};

static void test_file_put_get_scripted(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    fx_handshake(fx);

    xfer_rec_t put = {0};
    assert_int_equal(agent_file_put(fx->agent, "/etc/motd", 0640, &x_cb, &put, &put.h), 0);
    peer_expect(fx, LP_FILE_PUT);
    const uint8_t *v;
    uint32_t l;
    assert_true(fr_tlv(fx, LP_T_PATH, 0, &v, &l));
    assert_int_equal(l, 9);
    assert_memory_equal(v, "/etc/motd", 9);
    assert_int_equal(fr_u32(fx, LP_T_MODE), 0640);
    assert_int_equal(agent_xfer_room(put.h), LP_WINDOW_INITIAL);
    assert_int_equal(agent_xfer_write(put.h, "hello", 5), 5);
    assert_int_equal(agent_xfer_finish(put.h), 0);
    peer_expect(fx, LP_DATA);
    assert_int_equal(fx->fr.len, 5);
    peer_expect(fx, LP_DATA);
    assert_int_equal(fx->fr.len, 0);
    peer_send(fx, LP_OK, fx->fr.stream, NULL, 0);
    assert_true(RUN_UNTIL(fx, put.dones == 1, 3000));
    assert_int_equal(put.err, 0);

    xfer_rec_t get = {0};
    assert_int_equal(agent_file_get(fx->agent, "/etc/hostname", &x_cb, &get, &get.h), 0);
    peer_expect(fx, LP_FILE_GET);
    uint32_t sid = fx->fr.stream;
    uint8_t buf[32];
    lp_msg_t m;
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_u64(&m, LP_T_SIZE, 7);
    lp_msg_put_u32(&m, LP_T_MODE, 0100644);
    peer_send(fx, LP_FILE_INFO, sid, buf, m.len);
    peer_send(fx, LP_DATA, sid, "abc", 3);
    peer_send(fx, LP_DATA, sid, "defg", 4);
    peer_send(fx, LP_DATA, sid, NULL, 0);
    peer_send(fx, LP_OK, sid, NULL, 0);
    assert_true(RUN_UNTIL(fx, get.dones == 1, 3000));
    assert_int_equal(get.err, 0);
    assert_int_equal(get.infos, 1);
    assert_int_equal(get.size, 7);
    assert_int_equal(get.mode, 0100644);
    assert_int_equal(get.data, 7);

    xfer_rec_t miss = {0};
    assert_int_equal(agent_file_get(fx->agent, "/nope", &x_cb, &miss, &miss.h), 0);
    peer_expect(fx, LP_FILE_GET);
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_u32(&m, LP_T_ERRNO, ENOENT);
    peer_send(fx, LP_ERROR, fx->fr.stream, buf, m.len);
    assert_true(RUN_UNTIL(fx, miss.dones == 1, 3000));
    assert_int_equal(miss.err, -ENOENT);
    assert_true(strlen(miss.msg) > 0);

    /* DATA before FILE_INFO is a violation. */
    xfer_rec_t bad = {0};
    assert_int_equal(agent_file_get(fx->agent, "/x", &x_cb, &bad, &bad.h), 0);
    peer_expect(fx, LP_FILE_GET);
    peer_send(fx, LP_DATA, fx->fr.stream, "x", 1);
    assert_true(RUN_UNTIL(fx, fx->disconnects == 1, 3000));
    assert_int_equal(bad.dones, 1);
    assert_int_equal(bad.err, -EPROTO);
    assert_int_equal(bad.data, 0);
    fx_free(fx);
}

static void sync_done(agent_t *a, int err, const char *msg, void *ud)
{
    done_rec_t *d = ud;
    d->calls++;
    d->err = err;
}

static void test_ping_sync_shutdown(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    fx_handshake(fx);
    done_rec_t p1 = {0}, p2 = {0}, s = {0}, sd = {0};
    assert_int_equal(agent_ping(fx->agent, ping_done, &p1), 0);
    peer_expect(fx, LP_PING);
    assert_int_equal(fx->fr.stream, 0);
    pframe_t *first = malloc(sizeof(*first));
    *first = fx->fr;
    assert_int_equal(agent_ping(fx->agent, ping_done, &p2), 0);
    peer_expect(fx, LP_PING);
    assert_memory_not_equal(first->payload, fx->fr.payload, 8);
    /* Answer out of order: matched by sequence number. */
    peer_send(fx, LP_PONG, 0, fx->fr.payload, fx->fr.len);
    assert_true(RUN_UNTIL(fx, p2.calls == 1, 3000));
    assert_int_equal(p1.calls, 0);
    peer_send(fx, LP_PONG, 0, first->payload, first->len);
    assert_true(RUN_UNTIL(fx, p1.calls == 1, 3000));
    assert_int_equal(p1.err, 0);
    free(first);

    assert_int_equal(agent_sync(fx->agent, sync_done, &s), 0);
    peer_expect(fx, LP_SYNC);
    peer_send(fx, LP_OK, fx->fr.stream, NULL, 0);
    assert_true(RUN_UNTIL(fx, s.calls == 1, 3000));
    assert_int_equal(s.err, 0);

    assert_int_equal(agent_shutdown(fx->agent, 2, sync_done, &sd), -EINVAL);
    assert_int_equal(agent_shutdown(fx->agent, 1, sync_done, &sd), 0);
    peer_expect(fx, LP_SHUTDOWN);
    assert_int_equal(fr_u32(fx, LP_T_SHUTDOWN_MODE), 1);
    peer_send(fx, LP_OK, fx->fr.stream, NULL, 0);
    close(fx->pfd); /* the guest powers off */
    fx->pfd = -1;
    assert_true(RUN_UNTIL(fx, fx->disconnects == 1, 3000));
    assert_int_equal(sd.calls, 1);
    assert_int_equal(sd.err, 0);
    fx_free(fx);
}

static void test_guest_not_reading(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    fx_handshake(fx);
    /* The guest grants a huge window but never reads: the agent must stop
     * taking data at its queue bound instead of buffering without limit. */
    exec_rec_t r = {0};
    start_exec(fx, &r, 1);
    for (int i = 0; i < 64; i++)
        peer_send_u32(fx, LP_WINDOW, 1, LP_T_INCREMENT, UINT32_MAX);
    pump(fx, 30);
    size_t total = 0;
    uint8_t *chunk = calloc(1, 1 << 20);
    for (int i = 0; i < 200; i++) {
        ssize_t w = agent_exec_write_stdin(r.h, chunk, 1 << 20);
        assert_true(w >= 0);
        total += (size_t)w;
        if (w == 0)
            break;
        pump(fx, 1);
    }
    free(chunk);
    assert_true(total < 64u * 1024 * 1024);
    assert_int_equal(fx->disconnects, 0);
    /* Draining the queue reopens it. */
    int rr;
    while ((rr = peer_recv(fx, 100)) == 1 && r.rooms == 0)
        ;
    assert_true(RUN_UNTIL(fx, r.rooms >= 1, 3000));
    assert_true(agent_exec_stdin_room(r.h) > 0);
    fx_free(fx);
}

/* ---- against the real lane-init ------------------------------------------- */

static const char *lane_init_path;

typedef struct {
    fx_t *fx;
    pid_t pid;
} guest_t;

static void guest_start(fx_t *fx, guest_t *g)
{
    fx_listen(fx);
    assert_int_equal(agent_start(fx->agent, 5000), 0);
    assert_int_equal(peer_accept(fx, 3000), 0);
    int fd = fx->pfd;
    fx->pfd = -1;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int flags = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
        if (fd != 3) {
            dup2(fd, 3);
            close(fd);
        } else {
            fcntl(3, F_SETFD, 0);
        }
        execl(lane_init_path, lane_init_path, "--agent-fd", "3", (char *)NULL);
        _exit(127);
    }
    close(fd);
    g->fx = fx;
    g->pid = pid;
    if (!RUN_UNTIL(fx, fx->ready == 1 || fx->disconnects, 10000))
        fail_msg("lane-init did not answer HELLO");
    assert_int_equal(fx->ready, 1);
}

static void guest_stop(guest_t *g)
{
    fx_t *fx = g->fx;
    agent_free(fx->agent);
    fx->agent = NULL;
    int st = 0;
    for (int i = 0; i < 300; i++) {
        if (waitpid(g->pid, &st, WNOHANG) == g->pid)
            goto reaped;
        poll(NULL, 0, 10);
    }
    kill(g->pid, SIGKILL);
    waitpid(g->pid, &st, 0);
    fail_msg("lane-init did not exit on EOF");
reaped:
    fx_free(fx);
}

static void run_exec(fx_t *fx, exec_rec_t *r, const char *const *argv, int stdin_open)
{
    agent_exec_opts_t o = {.argv = argv, .stdin_open = stdin_open};
    r->fx = fx;
    assert_int_equal(agent_exec_start(fx->agent, &o, &rec_cb, r, &r->h), 0);
}

static void test_guest_echo_exit_ping(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    guest_t g;
    guest_start(fx, &g);
    uint8_t cap[64];
    exec_rec_t r = {.capture = cap, .capture_cap = sizeof(cap), .ack_immediately = 1};
    static const char *const echo[] = {"/bin/sh", "-c", "echo hello; echo oops >&2; exit 7", NULL};
    run_exec(fx, &r, echo, 0);
    assert_true(RUN_UNTIL(fx, r.exits == 1, 10000));
    assert_int_equal(r.exit.error, 0);
    assert_true(r.exit.exited);
    assert_int_equal(r.exit.code, 7);
    assert_int_equal(r.started, 1);
    assert_true(r.pid > 0);
    assert_int_equal(r.capture_len, 6);
    assert_memory_equal(cap, "hello\n", 6);
    assert_int_equal(r.out[2], 5);

    done_rec_t p = {0};
    assert_int_equal(agent_ping(fx->agent, ping_done, &p), 0);
    assert_true(RUN_UNTIL(fx, p.calls == 1, 5000));
    assert_int_equal(p.err, 0);

    exec_rec_t miss = {0};
    static const char *const nope[] = {"/nonexistent/program", NULL};
    run_exec(fx, &miss, nope, 0);
    assert_true(RUN_UNTIL(fx, miss.exits == 1, 10000));
    assert_int_equal(miss.exit.error, -ENOENT);
    assert_true(strlen(miss.exit.message) > 0);
    assert_int_equal(fx->disconnects, 0);
    guest_stop(&g);
}

/* Cancel a running exec: -ECANCELED at once, the guest's late output and
 * EXIT for it are absorbed, and the channel keeps working. */
static void test_guest_cancel(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    guest_t g;
    guest_start(fx, &g);
    exec_rec_t r = {0};
    static const char *const loud[] = {"/bin/sh", "-c", "while :; do echo spam; done", NULL};
    run_exec(fx, &r, loud, 0); /* never acks: the guest fills the window */
    assert_true(RUN_UNTIL(fx, r.out[1] >= LP_WINDOW_INITIAL / 2, 10000));
    agent_exec_cancel(r.h);
    assert_true(RUN_UNTIL(fx, r.exits == 1, 5000));
    assert_int_equal(r.exit.error, -ECANCELED);
    for (int i = 0; i < 3; i++) {
        done_rec_t p = {0};
        assert_int_equal(agent_ping(fx->agent, ping_done, &p), 0);
        assert_true(RUN_UNTIL(fx, p.calls == 1, 5000));
        assert_int_equal(p.err, 0);
    }
    exec_rec_t r2 = {.ack_immediately = 1};
    static const char *const t[] = {"/bin/true", NULL};
    run_exec(fx, &r2, t, 0);
    assert_true(RUN_UNTIL(fx, r2.exits == 1, 10000));
    assert_true(r2.exit.exited);
    assert_int_equal(fx->disconnects, 0);

    /* agent_free with an exec still running: the guest sees EOF and exits
     * (checked by guest_stop). */
    exec_rec_t r3 = {0};
    static const char *const sl[] = {"/bin/sleep", "100", NULL};
    run_exec(fx, &r3, sl, 0);
    assert_true(RUN_UNTIL(fx, r3.started == 1, 10000));
    guest_stop(&g);
    assert_int_equal(r3.exits, 1);
    assert_int_equal(r3.exit.error, -ECANCELED);
}

/* stdin through cat, paced by on_stdin_room. */
typedef struct {
    exec_rec_t r;
    const uint8_t *src;
    size_t len, off;
} feeder_t;

static void feed(feeder_t *f)
{
    while (f->off < f->len) {
        ssize_t w = agent_exec_write_stdin(f->r.h, f->src + f->off, f->len - f->off);
        assert_true(w >= 0);
        if (w == 0)
            return;
        f->off += (size_t)w;
    }
    assert_int_equal(agent_exec_close_stdin(f->r.h), 0);
}

static void feeder_room(agent_exec_t *e, void *ud)
{
    feeder_t *f = ud;
    f->r.rooms++;
    feed(f);
}

static void test_guest_stdin_cat(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    guest_t g;
    guest_start(fx, &g);
    size_t n = 3 * 1024 * 1024 + 17;
    uint8_t *src = malloc(n), *dst = malloc(n);
    for (size_t i = 0; i < n; i++)
        src[i] = (uint8_t)(i * 131 + (i >> 10));
    feeder_t f = {.r = {.fx = fx, .capture = dst, .capture_cap = n, .ack_immediately = 1}, .src = src, .len = n};
    agent_exec_callbacks_t cb = rec_cb;
    cb.on_stdin_room = feeder_room;
    static const char *const cat[] = {"/bin/cat", NULL};
    agent_exec_opts_t o = {.argv = cat, .stdin_open = 1};
    assert_int_equal(agent_exec_start(fx->agent, &o, &cb, &f, &f.r.h), 0);
    feed(&f);
    assert_true(RUN_UNTIL(fx, f.r.exits == 1, 60000));
    assert_int_equal(f.r.exit.error, 0);
    assert_int_equal(f.r.exit.code, 0);
    assert_int_equal(f.r.capture_len, n);
    assert_memory_equal(src, dst, n);
    assert_true(f.r.rooms > 0); /* 3 MiB > window: had to wait for room */
    free(src);
    free(dst);
    guest_stop(&g);
}

/* Output with delayed acks: never more than a window unacknowledged. */
typedef struct {
    exec_rec_t r;
    size_t unacked, max_unacked;
    uv_timer_t t;
} slow_reader_t;

static void slow_ack(uv_timer_t *t)
{
    slow_reader_t *s = t->data;
    if (s->r.exits || !s->unacked)
        return;
    agent_exec_ack(s->r.h, s->unacked);
    s->unacked = 0;
}

static void slow_output(agent_exec_t *e, int fd, const uint8_t *data, size_t len, void *ud)
{
    slow_reader_t *s = ud;
    s->r.out[fd] += len;
    s->unacked += len;
    if (s->unacked > s->max_unacked)
        s->max_unacked = s->unacked;
}

static void test_guest_big_output(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    guest_t g;
    guest_start(fx, &g);
    slow_reader_t s = {.r = {.fx = fx}};
    uv_timer_init(&fx->loop, &s.t);
    s.t.data = &s;
    uv_timer_start(&s.t, slow_ack, 2, 2);
    agent_exec_callbacks_t cb = rec_cb;
    cb.on_output = slow_output;
    static const char *const dd[] = {"/bin/sh", "-c", "head -c 8388608 /dev/zero", NULL};
    agent_exec_opts_t o = {.argv = dd};
    assert_int_equal(agent_exec_start(fx->agent, &o, &cb, &s, &s.r.h), 0);
    assert_true(RUN_UNTIL(fx, s.r.exits == 1, 60000));
    assert_int_equal(s.r.exit.code, 0);
    assert_int_equal(s.r.out[1], 8u * 1024 * 1024);
    assert_true(s.max_unacked <= LP_WINDOW_INITIAL);
    uv_close((uv_handle_t *)&s.t, NULL);
    guest_stop(&g);
}

static void test_guest_concurrent_execs(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    guest_t g;
    guest_start(fx, &g);
    enum { N = 20 };
    exec_rec_t r[N];
    char script[N][64];
    const char *argv[N][4];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < N; i++) {
        snprintf(script[i], sizeof(script[i]), "head -c %d /dev/zero; exit %d", 1000 * (i + 1), i);
        argv[i][0] = "/bin/sh";
        argv[i][1] = "-c";
        argv[i][2] = script[i];
        argv[i][3] = NULL;
        r[i].ack_immediately = 1;
        run_exec(fx, &r[i], argv[i], 0);
    }
    int done = 0;
    uint64_t end = now_ms() + 60000;
    while (done < N && now_ms() < end) {
        turn(fx);
        done = 0;
        for (int i = 0; i < N; i++)
            done += r[i].exits;
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].exits, 1);
        assert_int_equal(r[i].exit.error, 0);
        assert_int_equal(r[i].exit.code, i);
        assert_int_equal(r[i].out[1], 1000u * (i + 1));
    }
    guest_stop(&g);
}

/* Put 10 MiB, get it back, compare checksums. */
typedef struct {
    xfer_rec_t x;
    const uint8_t *src;
    size_t len, off;
    uint64_t sum;
} putter_t;

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void put_feed(putter_t *p)
{
    while (p->off < p->len) {
        ssize_t w = agent_xfer_write(p->x.h, p->src + p->off, p->len - p->off);
        assert_true(w >= 0);
        if (w == 0)
            return;
        p->off += (size_t)w;
    }
    assert_int_equal(agent_xfer_finish(p->x.h), 0);
}

static void put_room(agent_xfer_t *x, void *ud)
{
    putter_t *p = ud;
    p->x.rooms++;
    put_feed(p);
}

static void get_data(agent_xfer_t *x, const uint8_t *data, size_t len, void *ud)
{
    putter_t *p = ud;
    p->x.data += len;
    p->sum = fnv(p->sum, data, len);
    agent_xfer_ack(x, len);
}

static void test_guest_file_put_get(void **state)
{
    (void)state;
    fx_t *fx = fx_new();
    guest_t g;
    guest_start(fx, &g);
    size_t n = 10u * 1024 * 1024;
    uint8_t *src = malloc(n);
    for (size_t i = 0; i < n; i++)
        src[i] = (uint8_t)((i * 2654435761u) >> 13);
    char path[160];
    snprintf(path, sizeof(path), "%s/blob.bin", fx->dir);

    agent_xfer_callbacks_t pcb = {x_info, NULL, put_room, x_done};
    putter_t p = {.src = src, .len = n};
    assert_int_equal(agent_file_put(fx->agent, path, 0600, &pcb, &p, &p.x.h), 0);
    put_feed(&p);
    assert_true(RUN_UNTIL(fx, p.x.dones == 1, 60000));
    if (p.x.err)
        fail_msg("put: %d %s", p.x.err, p.x.msg);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, n);
    assert_int_equal(st.st_mode & 0777, 0600);

    agent_xfer_callbacks_t gcb = {x_info, get_data, NULL, x_done};
    putter_t q = {.sum = 1469598103934665603ull};
    assert_int_equal(agent_file_get(fx->agent, path, &gcb, &q, &q.x.h), 0);
    assert_true(RUN_UNTIL(fx, q.x.dones == 1, 60000));
    if (q.x.err)
        fail_msg("get: %d %s", q.x.err, q.x.msg);
    assert_int_equal(q.x.infos, 1);
    assert_int_equal(q.x.size, n);
    assert_int_equal(q.x.data, n);
    assert_int_equal(q.sum, fnv(1469598103934665603ull, src, n));

    xfer_rec_t miss = {0};
    char nope[200];
    snprintf(nope, sizeof(nope), "%s/does-not-exist", fx->dir);
    assert_int_equal(agent_file_get(fx->agent, nope, &x_cb, &miss, &miss.h), 0);
    assert_true(RUN_UNTIL(fx, miss.dones == 1, 10000));
    assert_int_equal(miss.err, -ENOENT);
    unlink(path);
    free(src);
    guest_stop(&g);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "--guest") == 0) {
        lane_init_path = argv[2];
        if (access(lane_init_path, X_OK) != 0) {
            fprintf(stderr, "skip: %s is not executable\n", lane_init_path);
            return 77;
        }
        const struct CMUnitTest guest[] = {
            cmocka_unit_test(test_guest_echo_exit_ping), cmocka_unit_test(test_guest_stdin_cat),
            cmocka_unit_test(test_guest_big_output),     cmocka_unit_test(test_guest_concurrent_execs),
            cmocka_unit_test(test_guest_file_put_get),   cmocka_unit_test(test_guest_cancel),
        };
        return cmocka_run_group_tests_name("agent vs lane-init", guest, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_after_garbage),
        cmocka_unit_test(test_hello_resent_and_duplicate_acks),
        cmocka_unit_test(test_connect_retry_until_socket_appears),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_new_free_unstarted),
        cmocka_unit_test(test_hello_timeout),
        cmocka_unit_test(test_peer_closes),
        cmocka_unit_test(test_exec_request_encoding),
        cmocka_unit_test(test_exec_error_enoent),
        cmocka_unit_test(test_output_window_and_acks),
        cmocka_unit_test(test_stdin_split_and_room),
        cmocka_unit_test(test_violations),
        cmocka_unit_test(test_cancel_then_late_frames),
        cmocka_unit_test(test_cancel_from_callbacks),
        cmocka_unit_test(test_free_inside_output),
        cmocka_unit_test(test_free_inside_disconnect_and_ready),
        cmocka_unit_test(test_free_inside_exit),
        cmocka_unit_test(test_file_put_get_scripted),
        cmocka_unit_test(test_ping_sync_shutdown),
        cmocka_unit_test(test_guest_not_reading),
    };
    return cmocka_run_group_tests_name("agent (scripted peer)", tests, NULL, NULL);
}
