/* test_guest_agent.c — lane-init's agent over a socketpair.
 *
 * Each test spawns `lane-init --agent-fd N` (real binary, real children)
 * and speaks the control protocol with a small synchronous client. The
 * client checks flow control on every data frame: the guest must never
 * have more bytes outstanding than the window this client granted. The
 * teardown checks that the agent exits cleanly (exit 0) when the host
 * closes the channel — so a crash anywhere in a test fails it.
 *
 * Threading: single-threaded test client.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "proto.h"

#ifndef LANE_INIT_PATH
#error "LANE_INIT_PATH must point at the lane-init binary"
#endif

#define MAX_SESS 300
#define WAIT_MS 30000

typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const uint8_t *d, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap + 1);
        assert_non_null(b->p);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = '\0';
}

typedef struct {
    uint32_t id;
    int started, done;
    uint32_t pid;
    buf_t out, err, data;
    int out_eof, err_eof, data_eof;
    int exited;
    int32_t code;
    uint32_t term_signal, timed_out;
    int is_error, ok, info;
    uint32_t err_no;
    char msg[512];
    uint64_t size;
    uint32_t mode;
    uint64_t granted;  /* window we granted for guest→host data */
    uint64_t received; /* guest→host data bytes received */
    int auto_ack;
    uint64_t guest_window; /* bytes we may still send (stdin / put data) */
} sess_t;

typedef struct {
    int fd;
    pid_t pid;
    uint8_t in[2 * (LP_HDR_SIZE + LP_MAX_PAYLOAD)];
    size_t in_len;
    sess_t *sess[MAX_SESS];
    /* last connection-level frame (stream 0 or unknown stream) */
    uint8_t last_type;
    uint32_t last_stream;
    uint8_t last_payload[LP_MAX_PAYLOAD];
    uint32_t last_len;
} cl_t;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

static void send_frame(cl_t *c, uint8_t type, uint32_t stream, const void *payload, size_t len)
{
    uint8_t hdr[LP_HDR_SIZE];
    assert_int_equal(lp_hdr_encode(hdr, type, stream, (uint32_t)len), 0);
    write_all(c->fd, hdr, sizeof(hdr));
    if (len)
        write_all(c->fd, payload, len);
}

static void send_window(cl_t *c, uint32_t stream, uint32_t inc)
{
    uint8_t b[16];
    lp_msg_t m;
    lp_msg_init(&m, b, sizeof(b));
    lp_msg_put_u32(&m, LP_T_INCREMENT, inc);
    send_frame(c, LP_WINDOW, stream, b, m.len);
}

static sess_t *sess_find(cl_t *c, uint32_t id)
{
    for (int i = 0; i < MAX_SESS; i++)
        if (c->sess[i] && c->sess[i]->id == id)
            return c->sess[i];
    return NULL;
}

static sess_t *sess_new(cl_t *c, uint32_t id)
{
    sess_t *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    s->id = id;
    s->granted = LP_WINDOW_INITIAL;
    s->guest_window = LP_WINDOW_INITIAL;
    s->auto_ack = 1;
    for (int i = 0; i < MAX_SESS; i++) {
        if (!c->sess[i]) {
            c->sess[i] = s;
            return s;
        }
    }
    fail_msg("too many sessions");
    return NULL;
}

static void sess_free(cl_t *c, sess_t *s)
{
    for (int i = 0; i < MAX_SESS; i++)
        if (c->sess[i] == s)
            c->sess[i] = NULL;
    free(s->out.p);
    free(s->err.p);
    free(s->data.p);
    free(s);
}

static void parse_terminal(sess_t *s, const lp_frame_t *f)
{
    lp_tlv_iter_t it;
    uint16_t tag;
    const uint8_t *v;
    uint32_t l;
    lp_tlv_init(&it, f->payload, f->len);
    while (lp_tlv_next(&it, &tag, &v, &l) > 0) {
        switch (tag) {
        case LP_T_EXIT_CODE: assert_int_equal(lp_val_i32(v, l, &s->code), 0); s->exited = 1; break;
        case LP_T_TERM_SIGNAL: assert_int_equal(lp_val_u32(v, l, &s->term_signal), 0); break;
        case LP_T_TIMED_OUT: assert_int_equal(lp_val_u32(v, l, &s->timed_out), 0); break;
        case LP_T_ERRNO: assert_int_equal(lp_val_u32(v, l, &s->err_no), 0); break;
        case LP_T_MESSAGE: assert_int_equal(lp_val_str(v, l, s->msg, sizeof(s->msg)), 0); break;
        case LP_T_PID: assert_int_equal(lp_val_u32(v, l, &s->pid), 0); break;
        case LP_T_SIZE: assert_int_equal(lp_val_u64(v, l, &s->size), 0); break;
        case LP_T_MODE: assert_int_equal(lp_val_u32(v, l, &s->mode), 0); break;
        default: break;
        }
    }
}

static void dispatch(cl_t *c, const lp_frame_t *f)
{
    sess_t *s = f->stream ? sess_find(c, f->stream) : NULL;
    if (!s || s->done) {
        c->last_type = f->type;
        c->last_stream = f->stream;
        c->last_len = f->len;
        memcpy(c->last_payload, f->payload, f->len);
        return;
    }
    switch (f->type) {
    case LP_EXEC_STARTED:
        assert_false(s->started);
        s->started = 1;
        parse_terminal(s, f);
        break;
    case LP_STDOUT:
    case LP_STDERR:
    case LP_DATA:
        if (f->len == 0) {
            int *eof = f->type == LP_STDOUT ? &s->out_eof : f->type == LP_STDERR ? &s->err_eof : &s->data_eof;
            assert_false(*eof);
            *eof = 1;
            break;
        }
        /* Flow control: never more than we granted. */
        s->received += f->len;
        assert_true(s->received <= s->granted);
        buf_add(f->type == LP_STDOUT ? &s->out : f->type == LP_STDERR ? &s->err : &s->data, f->payload, f->len);
        if (s->auto_ack) {
            send_window(c, s->id, f->len);
            s->granted += f->len;
        }
        break;
    case LP_WINDOW: {
        lp_tlv_iter_t it;
        uint16_t tag;
        const uint8_t *v;
        uint32_t l, inc;
        lp_tlv_init(&it, f->payload, f->len);
        while (lp_tlv_next(&it, &tag, &v, &l) > 0)
            if (tag == LP_T_INCREMENT && lp_val_u32(v, l, &inc) == 0)
                s->guest_window += inc;
        break;
    }
    case LP_FILE_INFO:
        s->info = 1;
        parse_terminal(s, f);
        break;
    case LP_EXIT:
        assert_true(s->out_eof && s->err_eof); /* EOFs come before EXIT */
        parse_terminal(s, f);
        s->done = 1;
        break;
    case LP_ERROR:
        s->is_error = 1;
        parse_terminal(s, f);
        s->done = 1;
        break;
    case LP_OK:
        s->ok = 1;
        s->done = 1;
        break;
    default:
        fail_msg("unexpected %s on stream %u", lp_type_name(f->type), f->stream);
    }
}

/* Read and dispatch one frame. Returns its type, 0 on timeout, -1 on EOF. */
static int cl_pump(cl_t *c, int timeout_ms)
{
    for (;;) {
        lp_frame_t f;
        size_t used;
        int r = lp_frame_parse(c->in, c->in_len, &f, &used);
        assert_true(r >= 0);
        if (r == 1) {
            int type = f.type;
            dispatch(c, &f);
            memmove(c->in, c->in + used, c->in_len - used);
            c->in_len -= used;
            return type;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&p, 1, timeout_ms);
        if (pr == 0)
            return 0;
        assert_true(pr > 0);
        ssize_t n = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
        if (n == 0)
            return -1;
        assert_true(n > 0);
        c->in_len += (size_t)n;
    }
}

static void run_until_done(cl_t *c, sess_t *s)
{
    uint64_t end = now_ms() + WAIT_MS;
    while (!s->done) {
        assert_true(now_ms() < end);
        assert_true(cl_pump(c, 1000) >= 0);
    }
}

/* Wait for a connection-level frame of the given type. */
static void wait_conn_frame(cl_t *c, uint8_t type)
{
    uint64_t end = now_ms() + WAIT_MS;
    c->last_type = 0;
    while (c->last_type != type) {
        assert_true(now_ms() < end);
        assert_true(cl_pump(c, 1000) >= 0);
    }
}

static uint64_t do_hello(cl_t *c, uint64_t nonce)
{
    uint8_t b[64];
    lp_msg_t m;
    lp_msg_init(&m, b, sizeof(b));
    lp_msg_put_u64(&m, LP_T_NONCE, nonce);
    lp_msg_put_u32(&m, LP_T_VERSION, LP_VERSION);
    send_frame(c, LP_HELLO, 0, b, m.len);
    uint64_t end = now_ms() + WAIT_MS;
    for (;;) {
        assert_true(now_ms() < end);
        c->last_type = 0;
        assert_true(cl_pump(c, 1000) >= 0);
        if (c->last_type != LP_HELLO_ACK)
            continue;
        lp_tlv_iter_t it;
        uint16_t tag;
        const uint8_t *v;
        uint32_t l;
        uint64_t got = 0, boot = 0;
        lp_tlv_init(&it, c->last_payload, c->last_len);
        while (lp_tlv_next(&it, &tag, &v, &l) > 0) {
            if (tag == LP_T_NONCE)
                assert_int_equal(lp_val_u64(v, l, &got), 0);
            if (tag == LP_T_BOOT_MS)
                assert_int_equal(lp_val_u64(v, l, &boot), 0);
        }
        if (got == nonce)
            return boot;
    }
}

static int setup(void **state)
{
    cl_t *c = calloc(1, sizeof(*c));
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char fdstr[16];
        int fd = dup(sv[1]); /* without CLOEXEC */
        snprintf(fdstr, sizeof(fdstr), "%d", fd);
        execl(LANE_INIT_PATH, "lane-init", "--agent-fd", fdstr, (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    c->fd = sv[0];
    c->pid = pid;
    *state = c;
    do_hello(c, 0x1234567890abcdefull);
    return 0;
}

static int teardown(void **state)
{
    cl_t *c = *state;
    close(c->fd);
    int st = 0;
    uint64_t end = now_ms() + 10000;
    pid_t r;
    while ((r = waitpid(c->pid, &st, WNOHANG)) == 0 && now_ms() < end)
        usleep(10000);
    if (r == 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, &st, 0);
        fail_msg("agent did not exit after the host closed the channel");
    }
    for (int i = 0; i < MAX_SESS; i++)
        if (c->sess[i])
            sess_free(c, c->sess[i]);
    free(c);
    /* A crash (signal) or error exit of the agent fails the test. */
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    return 0;
}

typedef struct {
    const char *const *argv;
    const char *const *env;
    const char *cwd;
    const char *user;
    uint32_t rows, cols; /* tty when nonzero */
    uint64_t timeout_ms;
    int stdin_open;
} exec_opts_t;

static sess_t *start_exec(cl_t *c, uint32_t id, const exec_opts_t *o)
{
    static uint8_t b[LP_MAX_PAYLOAD];
    lp_msg_t m;
    lp_msg_init(&m, b, sizeof(b));
    for (int i = 0; o->argv[i]; i++)
        lp_msg_put_str(&m, LP_T_ARG, o->argv[i]);
    for (int i = 0; o->env && o->env[i]; i++)
        lp_msg_put_str(&m, LP_T_ENV, o->env[i]);
    if (o->cwd)
        lp_msg_put_str(&m, LP_T_CWD, o->cwd);
    if (o->user)
        lp_msg_put_str(&m, LP_T_USER, o->user);
    if (o->rows) {
        lp_msg_put_u32(&m, LP_T_TTY_ROWS, o->rows);
        lp_msg_put_u32(&m, LP_T_TTY_COLS, o->cols);
    }
    if (o->timeout_ms)
        lp_msg_put_u64(&m, LP_T_TIMEOUT_MS, o->timeout_ms);
    lp_msg_put_u32(&m, LP_T_STDIN, o->stdin_open ? 1 : 0);
    assert_int_equal(m.err, 0);
    sess_t *s = sess_new(c, id);
    send_frame(c, LP_EXEC, id, b, m.len);
    return s;
}

static sess_t *run_sh(cl_t *c, uint32_t id, const char *script)
{
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    exec_opts_t o = {.argv = argv};
    sess_t *s = start_exec(c, id, &o);
    run_until_done(c, s);
    return s;
}

/* Send stdin (or put data) respecting the guest's window. */
static void send_data(cl_t *c, sess_t *s, uint8_t type, const uint8_t *d, size_t len)
{
    uint64_t end = now_ms() + WAIT_MS;
    while (len) {
        while (s->guest_window == 0) {
            assert_true(now_ms() < end);
            assert_false(s->done);
            assert_true(cl_pump(c, 1000) >= 0);
        }
        size_t n = len;
        if (n > LP_MAX_PAYLOAD)
            n = LP_MAX_PAYLOAD;
        if (n > s->guest_window)
            n = (size_t)s->guest_window;
        send_frame(c, type, s->id, d, n);
        s->guest_window -= n;
        d += n;
        len -= n;
        /* Consume whatever arrived meanwhile (windows, output). */
        while (cl_pump(c, 0) > 0)
            ;
    }
}

/* ---- tests -------------------------------------------------------------- */

static void test_hello_and_ping(void **state)
{
    cl_t *c = *state;
    uint64_t boot = do_hello(c, 42);
    assert_true(boot > 0);
    uint8_t kernel[256] = "";
    lp_tlv_iter_t it;
    uint16_t tag;
    const uint8_t *v;
    uint32_t l, version = 0;
    lp_tlv_init(&it, c->last_payload, c->last_len);
    while (lp_tlv_next(&it, &tag, &v, &l) > 0) {
        if (tag == LP_T_KERNEL)
            assert_int_equal(lp_val_str(v, l, (char *)kernel, sizeof(kernel)), 0);
        if (tag == LP_T_VERSION)
            assert_int_equal(lp_val_u32(v, l, &version), 0);
    }
    assert_int_equal(version, LP_VERSION);
    assert_true(strlen((char *)kernel) > 0);

    send_frame(c, LP_PING, 0, "abc", 3);
    wait_conn_frame(c, LP_PONG);
    assert_int_equal(c->last_len, 3);
    assert_memory_equal(c->last_payload, "abc", 3);
}

static void test_exec_exit_codes(void **state)
{
    cl_t *c = *state;
    sess_t *s = run_sh(c, 1, "echo hello; echo oops >&2; exit 3");
    assert_true(s->started);
    assert_true(s->pid > 0);
    assert_string_equal((char *)s->out.p, "hello\n");
    assert_string_equal((char *)s->err.p, "oops\n");
    assert_true(s->exited);
    assert_int_equal(s->code, 3);
    assert_int_equal(s->timed_out, 0);

    const char *argv[] = {"true", NULL};
    exec_opts_t o = {.argv = argv};
    s = start_exec(c, 3, &o);
    run_until_done(c, s);
    assert_true(s->exited);
    assert_int_equal(s->code, 0);
    assert_int_equal(s->out.len, 0);
}

static void test_exec_signal_death(void **state)
{
    cl_t *c = *state;
    sess_t *s = run_sh(c, 1, "kill -9 $$");
    assert_false(s->exited);
    assert_int_equal(s->term_signal, 9);

    /* LP_SIGNAL reaches the process group. */
    const char *argv[] = {"sleep", "100", NULL};
    exec_opts_t o = {.argv = argv};
    s = start_exec(c, 3, &o);
    while (!s->started)
        assert_true(cl_pump(c, 5000) > 0);
    uint8_t b[16];
    lp_msg_t m;
    lp_msg_init(&m, b, sizeof(b));
    lp_msg_put_u32(&m, LP_T_SIGNO, SIGTERM);
    send_frame(c, LP_SIGNAL, 3, b, m.len);
    run_until_done(c, s);
    assert_int_equal(s->term_signal, SIGTERM);

    /* LP_CANCEL kills it and still ends the stream. */
    s = start_exec(c, 5, &o);
    while (!s->started)
        assert_true(cl_pump(c, 5000) > 0);
    send_frame(c, LP_CANCEL, 5, NULL, 0);
    run_until_done(c, s);
    assert_int_equal(s->term_signal, SIGKILL);
}

static void test_exec_stdin_roundtrip(void **state)
{
    cl_t *c = *state;
    const char *argv[] = {"cat", NULL};
    exec_opts_t o = {.argv = argv, .stdin_open = 1};
    sess_t *s = start_exec(c, 7, &o);
    size_t n = 3 * 1024 * 1024 + 17;
    uint8_t *d = malloc(n);
    for (size_t i = 0; i < n; i++)
        d[i] = (uint8_t)(i * 131 + (i >> 11));
    send_data(c, s, LP_STDIN, d, n);
    send_frame(c, LP_STDIN, 7, NULL, 0);
    run_until_done(c, s);
    assert_int_equal(s->code, 0);
    assert_int_equal(s->out.len, n);
    assert_memory_equal(s->out.p, d, n);
    free(d);
}

static void test_exec_env_cwd(void **state)
{
    cl_t *c = *state;
    const char *argv[] = {"/bin/sh", "-c", "echo $FOO; pwd; echo $PATH; echo $HOME", NULL};
    const char *env[] = {"FOO=bar baz", NULL};
    exec_opts_t o = {.argv = argv, .env = env, .cwd = "/tmp"};
    sess_t *s = start_exec(c, 9, &o);
    run_until_done(c, s);
    assert_int_equal(s->code, 0);
    assert_string_equal((char *)s->out.p,
                        "bar baz\n/tmp\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/root\n");

    /* An explicit PATH overrides the default; missing cwd is an error. */
    const char *env2[] = {"PATH=/nowhere", NULL};
    exec_opts_t o2 = {.argv = argv, .env = env2, .cwd = "/no/such/dir"};
    s = start_exec(c, 11, &o2);
    run_until_done(c, s);
    assert_true(s->is_error);
    assert_int_equal(s->err_no, ENOENT);
    assert_non_null(strstr(s->msg, "chdir \"/no/such/dir\""));
}

static void test_exec_user(void **state)
{
    cl_t *c = *state;
    const char *argv[] = {"id", "-u", NULL};
    exec_opts_t o = {.argv = argv, .user = "1234:4321"};
    sess_t *s = start_exec(c, 13, &o);
    run_until_done(c, s);
    assert_int_equal(s->code, 0);
    assert_string_equal((char *)s->out.p, "1234\n");

    const char *argv2[] = {"id", "-g", NULL};
    exec_opts_t o2 = {.argv = argv2, .user = "1234:4321"};
    s = start_exec(c, 15, &o2);
    run_until_done(c, s);
    assert_string_equal((char *)s->out.p, "4321\n");

    exec_opts_t o3 = {.argv = argv, .user = "no-such-user-xyz"};
    s = start_exec(c, 17, &o3);
    run_until_done(c, s);
    assert_true(s->is_error);
    assert_int_equal(s->err_no, ENOENT);
    assert_false(s->started);
}

static void test_exec_missing_program(void **state)
{
    cl_t *c = *state;
    const char *argv[] = {"no-such-prog-xyz", "arg", NULL};
    exec_opts_t o = {.argv = argv};
    sess_t *s = start_exec(c, 19, &o);
    run_until_done(c, s);
    assert_true(s->is_error);
    assert_false(s->started);
    assert_int_equal(s->err_no, ENOENT);
    assert_string_equal(s->msg, "exec \"no-such-prog-xyz\": No such file or directory");

    const char *argv2[] = {"/etc/passwd", NULL};
    exec_opts_t o2 = {.argv = argv2};
    s = start_exec(c, 21, &o2);
    run_until_done(c, s);
    assert_true(s->is_error);
    assert_int_equal(s->err_no, EACCES);
}

static void test_exec_timeout(void **state)
{
    cl_t *c = *state;
    const char *argv[] = {"/bin/sh", "-c", "sleep 30; echo never", NULL};
    exec_opts_t o = {.argv = argv, .timeout_ms = 300};
    uint64_t t0 = now_ms();
    sess_t *s = start_exec(c, 23, &o);
    run_until_done(c, s);
    assert_true(now_ms() - t0 < 5000);
    assert_int_equal(s->timed_out, 1);
    assert_int_equal(s->term_signal, SIGKILL);
    assert_int_equal(s->out.len, 0);
}

static void test_exec_background_grandchild(void **state)
{
    cl_t *c = *state;
    uint64_t t0 = now_ms();
    /* The grandchild keeps stdout open; EXIT must not wait for it. */
    sess_t *s = run_sh(c, 25, "sleep 20 & echo hi");
    assert_true(now_ms() - t0 < 5000);
    assert_string_equal((char *)s->out.p, "hi\n");
    assert_int_equal(s->code, 0);
    /* The background sleep is still in the session's process group. */
    assert_int_equal(kill(-(pid_t)s->pid, SIGKILL), 0);
}

static void test_exec_pty(void **state)
{
    cl_t *c = *state;
    const char *argv[] = {"tty", NULL};
    exec_opts_t o = {.argv = argv, .rows = 24, .cols = 80};
    sess_t *s = start_exec(c, 27, &o);
    run_until_done(c, s);
    assert_int_equal(s->code, 0);
    assert_int_equal(s->err.len, 0);
    assert_non_null(s->out.p);
    assert_memory_equal(s->out.p, "/dev/pts/", 9);

    const char *argv2[] = {"/bin/sh", "-c", "stty size; read x; stty size; echo \"TERM=$TERM\"", NULL};
    exec_opts_t o2 = {.argv = argv2, .rows = 24, .cols = 80, .stdin_open = 1};
    s = start_exec(c, 29, &o2);
    uint64_t end = now_ms() + WAIT_MS;
    while (!strstr(s->out.p ? (char *)s->out.p : "", "24 80")) {
        assert_true(now_ms() < end);
        assert_true(cl_pump(c, 1000) >= 0);
    }
    uint8_t b[32];
    lp_msg_t m;
    lp_msg_init(&m, b, sizeof(b));
    lp_msg_put_u32(&m, LP_T_TTY_ROWS, 50);
    lp_msg_put_u32(&m, LP_T_TTY_COLS, 132);
    send_frame(c, LP_RESIZE, 29, b, m.len);
    send_data(c, s, LP_STDIN, (const uint8_t *)"go\n", 3);
    run_until_done(c, s);
    assert_int_equal(s->code, 0);
    assert_non_null(strstr((char *)s->out.p, "50 132"));
    assert_non_null(strstr((char *)s->out.p, "TERM=xterm-256color"));
}

static void test_exec_concurrent(void **state)
{
    cl_t *c = *state;
    enum { N = 20 };
    sess_t *s[N];
    char scripts[N][128];
    for (int i = 0; i < N; i++) {
        snprintf(scripts[i], sizeof(scripts[i]), "i=0; while [ $i -lt 200 ]; do echo s%d-$i; i=$((i+1)); done; exit %d",
                 i, i);
        const char *argv[] = {"/bin/sh", "-c", scripts[i], NULL};
        exec_opts_t o = {.argv = argv};
        s[i] = start_exec(c, 101 + 2 * (uint32_t)i, &o);
    }
    for (int i = 0; i < N; i++)
        run_until_done(c, s[i]);
    for (int i = 0; i < N; i++) {
        assert_int_equal(s[i]->code, i);
        buf_t want = {0};
        for (int j = 0; j < 200; j++) {
            char line[32];
            int n = snprintf(line, sizeof(line), "s%d-%d\n", i, j);
            buf_add(&want, (uint8_t *)line, (size_t)n);
        }
        assert_int_equal(s[i]->out.len, want.len);
        assert_memory_equal(s[i]->out.p, want.p, want.len);
        free(want.p);
    }
}

static void test_exec_large_output_windowed(void **state)
{
    cl_t *c = *state;
    const char *argv[] = {"seq", "1", "1000000", NULL};
    exec_opts_t o = {.argv = argv};
    sess_t *s = start_exec(c, 31, &o);
    s->auto_ack = 0;
    /* Twice: take the whole window, then check the guest stays silent. */
    for (int round = 0; round < 2; round++) {
        uint64_t end = now_ms() + WAIT_MS;
        while (s->received < s->granted) {
            assert_true(now_ms() < end);
            assert_true(cl_pump(c, 1000) >= 0);
        }
        assert_int_equal(cl_pump(c, 300), 0); /* nothing while window is 0 */
        send_window(c, 31, 100000);
        s->granted += 100000;
    }
    s->auto_ack = 1;
    send_window(c, 31, (uint32_t)(s->received + LP_WINDOW_INITIAL - s->granted + 0));
    s->granted = s->received + LP_WINDOW_INITIAL;
    run_until_done(c, s);
    assert_int_equal(s->code, 0);
    buf_t want = {0};
    for (int i = 1; i <= 1000000; i++) {
        char line[16];
        int n = snprintf(line, sizeof(line), "%d\n", i);
        buf_add(&want, (uint8_t *)line, (size_t)n);
    }
    assert_int_equal(s->out.len, want.len);
    assert_memory_equal(s->out.p, want.p, want.len);
    free(want.p);

    /* 8 MiB of stdout+stderr in one stream. */
    s = run_sh(c, 33, "head -c 8388608 /dev/zero; head -c 1000 /dev/zero >&2");
    assert_int_equal(s->code, 0);
    assert_int_equal(s->out.len, 8388608);
    assert_int_equal(s->err.len, 1000);
}

static void sha256(const uint8_t *d, size_t n, uint8_t out[32])
{
    unsigned int len = 32;
    assert_int_equal(EVP_Digest(d, n, out, &len, EVP_sha256(), NULL), 1);
}

static sess_t *start_file(cl_t *c, uint8_t type, uint32_t id, const char *path, uint32_t mode)
{
    uint8_t b[4200];
    lp_msg_t m;
    lp_msg_init(&m, b, sizeof(b));
    lp_msg_put_str(&m, LP_T_PATH, path);
    if (mode)
        lp_msg_put_u32(&m, LP_T_MODE, mode);
    sess_t *s = sess_new(c, id);
    send_frame(c, type, id, b, m.len);
    return s;
}

static void test_file_put_get(void **state)
{
    cl_t *c = *state;
    char dir[] = "/tmp/lanes-agent-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/blob", dir);

    size_t n = 10 * 1024 * 1024 + 3;
    uint8_t *d = malloc(n);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        d[i] = (uint8_t)(x >> 16);
    }
    sess_t *s = start_file(c, LP_FILE_PUT, 41, path, 0640);
    send_data(c, s, LP_DATA, d, n);
    send_frame(c, LP_DATA, 41, NULL, 0);
    run_until_done(c, s);
    assert_true(s->ok);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, (off_t)n);
    assert_int_equal(st.st_mode & 07777, 0640);

    s = start_file(c, LP_FILE_GET, 43, path, 0);
    run_until_done(c, s);
    assert_true(s->ok);
    assert_true(s->info);
    assert_true(s->data_eof);
    assert_int_equal(s->size, n);
    assert_int_equal(s->mode, 0640);
    assert_int_equal(s->data.len, n);
    uint8_t h1[32], h2[32];
    sha256(d, n, h1);
    sha256(s->data.p, s->data.len, h2);
    assert_memory_equal(h1, h2, 32);

    /* Overwrite atomically with a small file: no temp files left over. */
    s = start_file(c, LP_FILE_PUT, 45, path, 0);
    send_data(c, s, LP_DATA, (const uint8_t *)"small", 5);
    send_frame(c, LP_DATA, 45, NULL, 0);
    run_until_done(c, s);
    assert_true(s->ok);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 5);
    assert_int_equal(st.st_mode & 07777, 0644);

    /* Errors: missing parent, relative path, directory, missing file. */
    char bad[300];
    snprintf(bad, sizeof(bad), "%s/nodir/file", dir);
    s = start_file(c, LP_FILE_PUT, 47, bad, 0);
    run_until_done(c, s);
    assert_true(s->is_error);
    assert_int_equal(s->err_no, ENOENT);
    s = start_file(c, LP_FILE_PUT, 49, "relative/path", 0);
    run_until_done(c, s);
    assert_int_equal(s->err_no, EINVAL);
    s = start_file(c, LP_FILE_GET, 51, dir, 0);
    run_until_done(c, s);
    assert_int_equal(s->err_no, EISDIR);
    s = start_file(c, LP_FILE_GET, 53, bad, 0);
    run_until_done(c, s);
    assert_int_equal(s->err_no, ENOENT);

    /* Cancelled put leaves nothing behind. */
    char p2[300];
    snprintf(p2, sizeof(p2), "%s/cancelled", dir);
    s = start_file(c, LP_FILE_PUT, 55, p2, 0);
    send_data(c, s, LP_DATA, d, 100000);
    send_frame(c, LP_CANCEL, 55, NULL, 0);
    run_until_done(c, s);
    assert_true(s->is_error);
    assert_int_equal(s->err_no, ECANCELED);

    /* SYNC answers OK. */
    s = sess_new(c, 57);
    send_frame(c, LP_SYNC, 57, NULL, 0);
    run_until_done(c, s);
    assert_true(s->ok);

    unlink(path);
    assert_int_equal(rmdir(dir), 0); /* fails if a temp file was left */
    free(d);
}

static void test_hostile_frames(void **state)
{
    cl_t *c = *state;
    uint8_t junk[5000];
    uint32_t x = 99;
    for (size_t i = 0; i < sizeof(junk); i++) {
        x = x * 1664525u + 1013904223u;
        junk[i] = (uint8_t)(x >> 24);
    }
    write_all(c->fd, junk, sizeof(junk));
    /* Bad version, bad type, oversized length. */
    uint8_t h[LP_HDR_SIZE];
    lp_hdr_encode(h, LP_PING, 0, 0);
    h[2] = 9;
    write_all(c->fd, h, sizeof(h));
    lp_hdr_encode(h, LP_PING, 0, 0);
    h[3] = 200;
    write_all(c->fd, h, sizeof(h));
    lp_hdr_encode(h, LP_PING, 0, 0);
    lp_put_le32(h + 8, 0x7fffffff);
    write_all(c->fd, h, sizeof(h));
    /* TLV overrun inside an EXEC: answered with an error, not a crash. */
    uint8_t tlv[10];
    lp_put_le16(tlv, LP_T_ARG);
    lp_put_le32(tlv + 2, 1000);
    memcpy(tlv + 6, "true", 4);
    do_hello(c, 7); /* resyncs even after the garbage */
    sess_t *s = sess_new(c, 61);
    send_frame(c, LP_EXEC, 61, tlv, sizeof(tlv));
    run_until_done(c, s);
    assert_true(s->is_error);
    assert_int_equal(s->err_no, EBADMSG);
    /* Embedded NUL in an argument. */
    uint8_t nul[12];
    lp_put_le16(nul, LP_T_ARG);
    lp_put_le32(nul + 2, 6);
    memcpy(nul + 6, "tr\0ue", 6);
    s = sess_new(c, 63);
    send_frame(c, LP_EXEC, 63, nul, sizeof(nul));
    run_until_done(c, s);
    assert_int_equal(s->err_no, EBADMSG);
    /* EXEC without argv; frames for unknown streams; host-only types. */
    s = sess_new(c, 65);
    send_frame(c, LP_EXEC, 65, NULL, 0);
    run_until_done(c, s);
    assert_int_equal(s->err_no, EINVAL);
    send_frame(c, LP_STDIN, 999, "x", 1);
    send_window(c, 999, 5);
    send_frame(c, LP_EXIT, 999, NULL, 0);
    send_frame(c, LP_EXEC, 0, NULL, 0);
    /* A full-size frame split byte by byte still parses. */
    static uint8_t big[LP_HDR_SIZE + LP_MAX_PAYLOAD];
    lp_hdr_encode(big, LP_PING, 0, LP_MAX_PAYLOAD);
    memset(big + LP_HDR_SIZE, 'p', LP_MAX_PAYLOAD);
    for (size_t i = 0; i < 40; i++)
        write_all(c->fd, big + i, 1);
    write_all(c->fd, big + 40, sizeof(big) - 40);
    wait_conn_frame(c, LP_PONG);
    assert_int_equal(c->last_len, LP_MAX_PAYLOAD);
    /* Still alive and sane. */
    s = run_sh(c, 67, "echo alive");
    assert_string_equal((char *)s->out.p, "alive\n");
}

static void test_window_overrun(void **state)
{
    cl_t *c = *state;
    /* sleep never reads stdin: 64 KiB pipe + the 256 KiB window fill up. */
    const char *argv[] = {"sleep", "30", NULL};
    exec_opts_t o = {.argv = argv, .stdin_open = 1};
    sess_t *s = start_exec(c, 71, &o);
    static uint8_t chunk[LP_MAX_PAYLOAD];
    memset(chunk, 'z', sizeof(chunk));
    for (int i = 0; i < 12; i++) /* 768 KiB, ignoring the window */
        send_frame(c, LP_STDIN, 71, chunk, sizeof(chunk));
    run_until_done(c, s);
    assert_true(s->is_error);
    assert_int_equal(s->err_no, EPROTO);
    s = run_sh(c, 73, "echo still-here");
    assert_string_equal((char *)s->out.p, "still-here\n");
}

static void test_hello_resets_sessions(void **state)
{
    cl_t *c = *state;
    const char *argv[] = {"sleep", "100", NULL};
    exec_opts_t o = {.argv = argv};
    sess_t *s = start_exec(c, 81, &o);
    while (!s->started)
        assert_true(cl_pump(c, 5000) > 0);
    pid_t pid = (pid_t)s->pid;
    assert_int_equal(kill(pid, 0), 0);
    sess_free(c, s);
    do_hello(c, 99);
    uint64_t end = now_ms() + 5000;
    while (kill(pid, 0) == 0) { /* killed and reaped by the agent */
        assert_true(now_ms() < end);
        usleep(10000);
    }
    /* The stream id is free again after the reset. */
    s = run_sh(c, 81, "echo again");
    assert_string_equal((char *)s->out.p, "again\n");
}

static void test_stream_limit(void **state)
{
    cl_t *c = *state;
    enum { LIMIT = 256 };
    const char *argv[] = {"sleep", "30", NULL};
    exec_opts_t o = {.argv = argv};
    sess_t *s[LIMIT];
    for (int i = 0; i < LIMIT; i++)
        s[i] = start_exec(c, 1001 + 2 * (uint32_t)i, &o);
    for (int i = 0; i < LIMIT; i++) {
        uint64_t end = now_ms() + WAIT_MS;
        while (!s[i]->started) {
            assert_false(s[i]->done);
            assert_true(now_ms() < end);
            assert_true(cl_pump(c, 1000) >= 0);
        }
    }
    sess_t *extra = start_exec(c, 3001, &o);
    run_until_done(c, extra);
    assert_true(extra->is_error);
    assert_int_equal(extra->err_no, EAGAIN);
    /* Freeing one slot makes room again. */
    send_frame(c, LP_CANCEL, s[0]->id, NULL, 0);
    run_until_done(c, s[0]);
    assert_int_equal(s[0]->term_signal, SIGKILL);
    sess_t *again = run_sh(c, 3003, "echo room");
    assert_string_equal((char *)again->out.p, "room\n");
    /* The rest are killed when the host goes away (teardown). */
}

static void test_shutdown(void **state)
{
    cl_t *c = *state;
    sess_t *s = sess_new(c, 91);
    uint8_t b[16];
    lp_msg_t m;
    lp_msg_init(&m, b, sizeof(b));
    lp_msg_put_u32(&m, LP_T_SHUTDOWN_MODE, 0);
    send_frame(c, LP_SHUTDOWN, 91, b, m.len);
    run_until_done(c, s);
    assert_true(s->ok);
    /* In --agent-fd mode the agent then leaves its loop and closes. */
    assert_int_equal(cl_pump(c, 5000), -1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hello_and_ping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_exit_codes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_signal_death, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_stdin_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_env_cwd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_missing_program, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_background_grandchild, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_pty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_large_output_windowed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_put_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_overrun, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hello_resets_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
