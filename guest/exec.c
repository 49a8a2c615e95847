/* exec.c — exec sessions: one child process per LP_EXEC stream.
 *
 * Life of a session: EXEC parsed → user/env/cwd resolved → fork; the child
 * sets up its own session (setsid), fds, credentials and execs; exec
 * failure comes back through a CLOEXEC pipe and is answered with LP_ERROR
 * (no session is created). Otherwise EXEC_STARTED, then output frames while
 * the host's window allows, stdin frames written to the child, and when the
 * child is reaped: whatever it left in the pipes is drained (bounded by
 * what was buffered at reap time, so background grandchildren holding the
 * pipe cannot keep the session open), both EOF frames, then LP_EXIT.
 *
 * Invariants: the process group id equals the child's pid (setsid), so
 * signals, timeouts and cancellation hit the whole group. stdout and stderr
 * share the stream's single guest→host window. Stdin bytes buffered here
 * never exceed LP_WINDOW_INITIAL because the host's window is only
 * re-opened as bytes reach the child.
 *
 * Threading: single-threaded; the child between fork and exec only uses
 * async-signal-safe calls plus execvp.
 */
#include "lane_init.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define MAX_ARGS 4096
#define MAX_ENVS 4096
#define PTY_GRACE_MS 100
#define PTY_DRAIN_BUDGET (4u * 1024u * 1024u)
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

extern char **environ;

typedef struct {
    char **argv;
    size_t argc;
    char **envs;
    size_t nenv;
    char *cwd;
    char *user;
    uint32_t rows, cols;
    int tty;
    uint64_t timeout_ms;
    uint32_t stdin_open;
} exec_req_t;

static void req_free(exec_req_t *q)
{
    for (size_t i = 0; i < q->argc; i++)
        free(q->argv[i]);
    free(q->argv);
    for (size_t i = 0; i < q->nenv; i++)
        free(q->envs[i]);
    free(q->envs);
    free(q->cwd);
    free(q->user);
}

/* Copy a TLV string value into a fresh allocation; NULL on embedded NUL or
 * out of memory. */
static char *val_strdup(const uint8_t *val, uint32_t len)
{
    if (memchr(val, '\0', len))
        return NULL;
    char *s = malloc((size_t)len + 1);
    if (!s)
        return NULL;
    memcpy(s, val, len);
    s[len] = '\0';
    return s;
}

static int str_push(char ***vec, size_t *n, size_t max, char *s)
{
    if (*n >= max)
        return -E2BIG;
    char **v = realloc(*vec, (*n + 2) * sizeof(char *));
    if (!v)
        return -ENOMEM;
    v[(*n)++] = s;
    v[*n] = NULL;
    *vec = v;
    return 0;
}

/* Parse EXEC's TLVs. Returns 0 or negative errno with msg set. */
static int req_parse(const uint8_t *payload, size_t len, exec_req_t *q, char *msg, size_t msglen)
{
    lp_tlv_iter_t it;
    uint16_t tag;
    const uint8_t *val;
    uint32_t vlen;
    int r;
    int have_rows = 0, have_cols = 0;
    lp_tlv_init(&it, payload, len);
    while ((r = lp_tlv_next(&it, &tag, &val, &vlen)) > 0) {
        char *s = NULL;
        int e = 0;
        switch (tag) {
        case LP_T_ARG:
        case LP_T_ENV:
        case LP_T_CWD:
        case LP_T_USER:
            s = val_strdup(val, vlen);
            if (!s) {
                snprintf(msg, msglen, "EXEC: bad string in tag %u", tag);
                return -EBADMSG;
            }
            if (tag == LP_T_ARG) {
                e = str_push(&q->argv, &q->argc, MAX_ARGS, s);
            } else if (tag == LP_T_ENV) {
                if (!strchr(s, '=') || s[0] == '=') {
                    snprintf(msg, msglen, "EXEC: environment entry without KEY=: \"%.64s\"", s);
                    free(s);
                    return -EINVAL;
                }
                e = str_push(&q->envs, &q->nenv, MAX_ENVS, s);
            } else if (tag == LP_T_CWD) {
                free(q->cwd);
                q->cwd = s;
            } else {
                free(q->user);
                q->user = s;
            }
            if (e < 0) {
                free(s);
                snprintf(msg, msglen, "EXEC: too many arguments or environment entries");
                return e;
            }
            break;
        case LP_T_TTY_ROWS:
            e = lp_val_u32(val, vlen, &q->rows);
            have_rows = 1;
            break;
        case LP_T_TTY_COLS:
            e = lp_val_u32(val, vlen, &q->cols);
            have_cols = 1;
            break;
        case LP_T_TIMEOUT_MS:
            e = lp_val_u64(val, vlen, &q->timeout_ms);
            break;
        case LP_T_STDIN:
            e = lp_val_u32(val, vlen, &q->stdin_open);
            break;
        default:
            break;
        }
        if (e < 0) {
            snprintf(msg, msglen, "EXEC: bad value for tag %u", tag);
            return -EBADMSG;
        }
    }
    if (r < 0) {
        snprintf(msg, msglen, "EXEC: malformed TLV payload");
        return -EBADMSG;
    }
    if (q->argc == 0) {
        snprintf(msg, msglen, "EXEC without argv");
        return -EINVAL;
    }
    if (q->argv[0][0] == '\0') {
        snprintf(msg, msglen, "EXEC with empty argv[0]");
        return -EINVAL;
    }
    q->tty = have_rows || have_cols;
    if (q->rows > 0xffff || q->cols > 0xffff) {
        snprintf(msg, msglen, "EXEC: terminal size out of range");
        return -EINVAL;
    }
    return 0;
}

/* Set or replace KEY=VALUE in a NULL-terminated vector. */
static int env_set(char ***env, size_t *n, const char *kv)
{
    size_t klen = (size_t)(strchr(kv, '=') - kv);
    char *dup = strdup(kv);
    if (!dup)
        return -ENOMEM;
    for (size_t i = 0; i < *n; i++) {
        if (strncmp((*env)[i], kv, klen) == 0 && (*env)[i][klen] == '=') {
            free((*env)[i]);
            (*env)[i] = dup;
            return 0;
        }
    }
    int r = str_push(env, n, MAX_ENVS + 16, dup);
    if (r < 0)
        free(dup);
    return r;
}

static int env_setf(char ***env, size_t *n, const char *key, const char *value)
{
    size_t len = strlen(key) + strlen(value) + 2;
    char *kv = malloc(len);
    if (!kv)
        return -ENOMEM;
    snprintf(kv, len, "%s=%s", key, value);
    int r = env_set(env, n, kv);
    free(kv);
    return r;
}

static void env_free(char **env, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(env[i]);
    free(env);
}

/* Open a PTY pair: master non-blocking. Returns 0 or negative errno. */
static int pty_open(int *master_out, int *slave_out)
{
    int m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (m < 0)
        return -errno;
    int unlock = 0;
    if (ioctl(m, TIOCSPTLCK, &unlock) < 0) {
        int e = -errno;
        close(m);
        return e;
    }
    int sl = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (sl < 0) {
        unsigned int n;
        char path[64];
        if (ioctl(m, TIOCGPTN, &n) < 0) {
            int e = -errno;
            close(m);
            return e;
        }
        snprintf(path, sizeof(path), "/dev/pts/%u", n);
        sl = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (sl < 0) {
            int e = -errno;
            close(m);
            return e;
        }
    }
    *master_out = m;
    *slave_out = sl;
    return 0;
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

enum { STAGE_SETUP = 1, STAGE_CHDIR, STAGE_CREDS, STAGE_EXEC };

typedef struct {
    int stage;
    int err;
} child_report_t;

/* Child side after fork: never returns. */
static void child_run(const exec_req_t *q, const li_user_t *u, const char *cwd, char **envp, int in_fd,
                      int out_fd, int err_fd, int tty_fd, int report_fd)
{
    child_report_t rep = {STAGE_SETUP, 0};
    sigset_t none;
    sigemptyset(&none);
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    umask(022);
    if (setsid() < 0)
        goto fail;
    if (tty_fd >= 0) {
        if (ioctl(tty_fd, TIOCSCTTY, 0) < 0)
            goto fail;
        in_fd = out_fd = err_fd = tty_fd;
    }
    if (in_fd < 0) {
        in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (in_fd < 0)
            goto fail;
    }
    /* All fds here are >= 3 (main keeps 0..2 occupied), so dup2 never
     * clobbers a source we still need. */
    if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
        goto fail;
    if (syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) < 0) {
        for (int fd = 3; fd < 1024; fd++)
            if (fd != report_fd)
                close(fd);
    }
    rep.stage = STAGE_CHDIR;
    if (chdir(cwd) < 0)
        goto fail;
    rep.stage = STAGE_CREDS;
    if (setgroups((size_t)u->ngroups, u->groups) < 0 && (errno != EPERM || getuid() == 0))
        goto fail;
    if (setgid(u->gid) < 0 && (errno != EPERM || getuid() == 0))
        goto fail;
    if (setuid(u->uid) < 0 && (errno != EPERM || getuid() == 0))
        goto fail;
    rep.stage = STAGE_EXEC;
    environ = envp;
    execvp(q->argv[0], q->argv);
fail:
    rep.err = errno;
    (void)!write(report_fd, &rep, sizeof(rep));
    _exit(127);
}

static int dir_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Handle LP_EXEC: start the child or answer LP_ERROR. */
void exec_start(li_ctx_t *ctx, uint32_t stream, const uint8_t *payload, size_t len)
{
    exec_req_t q = {0};
    char msg[512];
    li_user_t user;
    char **env = NULL;
    size_t nenv = 0;
    int in_p[2] = {-1, -1}, out_p[2] = {-1, -1}, err_p[2] = {-1, -1}, rep_p[2] = {-1, -1};
    int master = -1, slave = -1;
    int r;

    r = req_parse(payload, len, &q, msg, sizeof(msg));
    if (r < 0) {
        agent_send_error(ctx, stream, r, "%s", msg);
        goto out;
    }
    r = users_resolve("", q.user, &user, msg, sizeof(msg));
    if (r < 0) {
        agent_send_error(ctx, stream, r, "%s", msg);
        goto out;
    }

    char host[65] = "";
    if (gethostname(host, sizeof(host) - 1) < 0)
        host[0] = '\0';
    if ((r = env_setf(&env, &nenv, "PATH", DEFAULT_PATH)) < 0 || (r = env_setf(&env, &nenv, "HOME", user.home)) < 0 ||
        (r = env_setf(&env, &nenv, "USER", user.name)) < 0 ||
        (r = env_setf(&env, &nenv, "LOGNAME", user.name)) < 0 ||
        (r = env_setf(&env, &nenv, "HOSTNAME", host)) < 0 ||
        (q.tty && (r = env_setf(&env, &nenv, "TERM", "xterm-256color")) < 0)) {
        agent_send_error(ctx, stream, r, "EXEC: building environment: %s", strerror(-r));
        goto out;
    }
    for (size_t i = 0; i < ctx->ndefault_env; i++) {
        if ((r = env_set(&env, &nenv, ctx->default_env[i])) < 0) {
            agent_send_error(ctx, stream, r, "EXEC: building environment: %s", strerror(-r));
            goto out;
        }
    }
    for (size_t i = 0; i < q.nenv; i++) {
        if ((r = env_set(&env, &nenv, q.envs[i])) < 0) {
            agent_send_error(ctx, stream, r, "EXEC: building environment: %s", strerror(-r));
            goto out;
        }
    }
    const char *cwd = q.cwd && q.cwd[0] ? q.cwd : (dir_exists(user.home) ? user.home : "/");

    if (q.tty) {
        r = pty_open(&master, &slave);
        if (r < 0) {
            agent_send_error(ctx, stream, r, "open pty: %s", strerror(-r));
            goto out;
        }
        struct winsize ws = {.ws_row = (unsigned short)(q.rows ? q.rows : 24),
                             .ws_col = (unsigned short)(q.cols ? q.cols : 80)};
        (void)ioctl(master, TIOCSWINSZ, &ws);
    } else {
        if (pipe2(out_p, O_CLOEXEC) < 0 || pipe2(err_p, O_CLOEXEC) < 0 ||
            (q.stdin_open && pipe2(in_p, O_CLOEXEC) < 0)) {
            r = -errno;
            agent_send_error(ctx, stream, r, "pipe: %s", strerror(-r));
            goto out;
        }
        if (set_nonblock(out_p[0]) < 0 || set_nonblock(err_p[0]) < 0 ||
            (in_p[1] >= 0 && set_nonblock(in_p[1]) < 0)) {
            r = -errno;
            agent_send_error(ctx, stream, r, "pipe: %s", strerror(-r));
            goto out;
        }
    }
    if (pipe2(rep_p, O_CLOEXEC) < 0) {
        r = -errno;
        agent_send_error(ctx, stream, r, "pipe: %s", strerror(-r));
        goto out;
    }

    pid_t pid = fork();
    if (pid < 0) {
        r = -errno;
        agent_send_error(ctx, stream, r, "fork: %s", strerror(-r));
        goto out;
    }
    if (pid == 0) {
        close(rep_p[0]);
        child_run(&q, &user, cwd, env, in_p[0], out_p[1], err_p[1], slave, rep_p[1]);
    }
    close(rep_p[1]);
    rep_p[1] = -1;
    child_report_t rep;
    ssize_t n;
    do
        n = read(rep_p[0], &rep, sizeof(rep));
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof(rep)) {
        /* The child _exit()s; the SIGCHLD reaper collects it. */
        const char *what = rep.stage == STAGE_EXEC    ? "exec"
                           : rep.stage == STAGE_CHDIR ? "chdir"
                           : rep.stage == STAGE_CREDS ? "set credentials for"
                                                      : "set up";
        const char *obj = rep.stage == STAGE_CHDIR ? cwd : rep.stage == STAGE_CREDS ? user.name : q.argv[0];
        agent_send_error(ctx, stream, rep.err, "%s \"%s\": %s", what, obj, strerror(rep.err));
        goto out;
    }

    li_stream_t *s = agent_stream_new(ctx, stream, LI_S_EXEC);
    if (!s) {
        kill(-pid, SIGKILL);
        agent_send_error(ctx, stream, ENOMEM, "out of memory");
        goto out;
    }
    li_exec_t *e = &s->u.exec;
    e->pid = pid;
    e->tty = q.tty;
    e->stdin_open = q.tty || q.stdin_open;
    if (q.tty) {
        e->out_fd = master;
        e->err_fd = -1;
        e->in_fd = fcntl(master, F_DUPFD_CLOEXEC, 3);
        master = -1;
    } else {
        e->out_fd = out_p[0];
        e->err_fd = err_p[0];
        e->in_fd = in_p[1];
        out_p[0] = err_p[0] = in_p[1] = -1;
    }
    if (q.timeout_ms)
        e->deadline_ms = li_now_ms() + q.timeout_ms;

    uint8_t buf[16];
    lp_msg_t m;
    lp_msg_init(&m, buf, sizeof(buf));
    lp_msg_put_u32(&m, LP_T_PID, (uint32_t)pid);
    agent_send_frame(ctx, LP_EXEC_STARTED, stream, buf, m.len);
    li_debug(ctx, "stream %u: started \"%s\" as pid %d", stream, q.argv[0], (int)pid);

out:
    for (int i = 0; i < 2; i++) {
        if (in_p[i] >= 0)
            close(in_p[i]);
        if (out_p[i] >= 0)
            close(out_p[i]);
        if (err_p[i] >= 0)
            close(err_p[i]);
        if (rep_p[i] >= 0)
            close(rep_p[i]);
    }
    if (master >= 0)
        close(master);
    if (slave >= 0)
        close(slave);
    env_free(env, nenv);
    req_free(&q);
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

void exec_destroy(li_ctx_t *ctx, li_stream_t *s)
{
    li_exec_t *e = &s->u.exec;
    if (!e->reaped && e->pid > 0)
        kill(-e->pid, SIGKILL);
    close_fd(&e->out_fd);
    close_fd(&e->err_fd);
    close_fd(&e->in_fd);
    free(e->in_buf);
    agent_stream_free(ctx, s);
}

/* A protocol violation on this stream: kill it and answer LP_ERROR. */
static void exec_fail(li_ctx_t *ctx, li_stream_t *s, int err, const char *what)
{
    li_log(ctx, "stream %u: %s; failing the stream", s->id, what);
    agent_send_error(ctx, s->id, err, "%s", what);
    exec_destroy(ctx, s);
}

static void stdin_grant(li_ctx_t *ctx, li_stream_t *s, size_t n)
{
    s->win_in += n;
    agent_send_window(ctx, s->id, (uint32_t)n);
}

/* Write buffered stdin to the child; grant the host window for what went
 * through. */
static void stdin_pump(li_ctx_t *ctx, li_stream_t *s)
{
    li_exec_t *e = &s->u.exec;
    while (e->in_len > 0 && e->in_fd >= 0) {
        ssize_t n = write(e->in_fd, e->in_buf, e->in_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
            /* Child closed stdin: from now on stdin is discarded. */
            e->in_dead = 1;
            stdin_grant(ctx, s, e->in_len);
            e->in_len = 0;
            if (!e->tty)
                close_fd(&e->in_fd);
            return;
        }
        memmove(e->in_buf, e->in_buf + n, e->in_len - (size_t)n);
        e->in_len -= (size_t)n;
        stdin_grant(ctx, s, (size_t)n);
    }
    if (e->in_eof && e->in_len == 0 && e->in_fd >= 0) {
        if (e->tty) {
            /* A terminal has no half-close: send the EOF character once. */
            struct termios t;
            char eof = 4;
            if (tcgetattr(e->in_fd, &t) == 0 && t.c_cc[VEOF])
                eof = (char)t.c_cc[VEOF];
            (void)!write(e->in_fd, &eof, 1);
            e->in_eof = 0;
            e->in_dead = 1;
        } else {
            close_fd(&e->in_fd);
        }
    }
}

void exec_on_stdin(li_ctx_t *ctx, li_stream_t *s, const uint8_t *data, size_t len)
{
    li_exec_t *e = &s->u.exec;
    if (len > s->win_in) {
        exec_fail(ctx, s, EPROTO, "stdin window overrun by host");
        return;
    }
    s->win_in -= len;
    if (len == 0) {
        e->in_eof = 1;
        stdin_pump(ctx, s);
        return;
    }
    if (e->in_dead || e->in_fd < 0 || e->cancelled) {
        stdin_grant(ctx, s, len); /* discarded */
        return;
    }
    if (!e->in_buf) {
        e->in_buf = malloc(LP_WINDOW_INITIAL);
        if (!e->in_buf) {
            exec_fail(ctx, s, ENOMEM, "out of memory for stdin");
            return;
        }
    }
    if (e->in_len + len > LP_WINDOW_INITIAL) {
        exec_fail(ctx, s, EPROTO, "stdin window overrun by host");
        return;
    }
    /* The window is re-granted byte for byte as stdin reaches the child, so
     * win_in + in_len stays LP_WINDOW_INITIAL. */
    memcpy(e->in_buf + e->in_len, data, len);
    e->in_len += len;
    stdin_pump(ctx, s);
}

void exec_on_resize(li_ctx_t *ctx, li_stream_t *s, const uint8_t *payload, size_t len)
{
    li_exec_t *e = &s->u.exec;
    uint32_t rows = 0, cols = 0;
    lp_tlv_iter_t it;
    uint16_t tag;
    const uint8_t *val;
    uint32_t vlen;
    int r;
    lp_tlv_init(&it, payload, len);
    while ((r = lp_tlv_next(&it, &tag, &val, &vlen)) > 0) {
        if (tag == LP_T_TTY_ROWS && lp_val_u32(val, vlen, &rows) < 0)
            r = -EBADMSG;
        if (tag == LP_T_TTY_COLS && lp_val_u32(val, vlen, &cols) < 0)
            r = -EBADMSG;
        if (r < 0)
            break;
    }
    if (r < 0 || rows > 0xffff || cols > 0xffff || !e->tty || e->in_fd < 0) {
        li_debug(ctx, "stream %u: RESIZE ignored", s->id);
        return;
    }
    struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
    if (ioctl(e->in_fd, TIOCSWINSZ, &ws) < 0)
        li_debug(ctx, "stream %u: TIOCSWINSZ: %m", s->id);
}

void exec_on_signal(li_ctx_t *ctx, li_stream_t *s, const uint8_t *payload, size_t len)
{
    li_exec_t *e = &s->u.exec;
    uint32_t signo = 0;
    lp_tlv_iter_t it;
    uint16_t tag;
    const uint8_t *val;
    uint32_t vlen;
    int r;
    lp_tlv_init(&it, payload, len);
    while ((r = lp_tlv_next(&it, &tag, &val, &vlen)) > 0)
        if (tag == LP_T_SIGNO && lp_val_u32(val, vlen, &signo) < 0)
            r = -EBADMSG;
    if (r < 0 || signo == 0 || signo >= (uint32_t)NSIG) {
        li_debug(ctx, "stream %u: bad SIGNAL ignored", s->id);
        return;
    }
    if (!e->reaped && kill(-e->pid, (int)signo) < 0)
        li_debug(ctx, "stream %u: kill(-%d, %u): %m", s->id, (int)e->pid, signo);
}

void exec_cancel(li_ctx_t *ctx, li_stream_t *s)
{
    li_exec_t *e = &s->u.exec;
    if (!e->reaped)
        kill(-e->pid, SIGKILL);
    e->cancelled = 1;
    e->deadline_ms = 0;
    close_fd(&e->out_fd);
    close_fd(&e->err_fd);
    close_fd(&e->in_fd);
    e->in_len = 0;
    li_debug(ctx, "stream %u: cancelled", s->id);
}

short exec_out_events(li_ctx_t *ctx, li_stream_t *s, int which)
{
    li_exec_t *e = &s->u.exec;
    int fd = which == 1 ? e->out_fd : e->err_fd;
    if (fd < 0 || s->win_out == 0 || agent_outq_len(ctx) >= LI_OUTQ_HIGH)
        return 0;
    return POLLIN;
}

short exec_in_events(li_stream_t *s)
{
    li_exec_t *e = &s->u.exec;
    return e->in_fd >= 0 && e->in_len > 0 ? POLLOUT : 0;
}

uint64_t exec_next_deadline(li_stream_t *s)
{
    li_exec_t *e = &s->u.exec;
    if (e->reaped)
        return e->tty && e->out_fd >= 0 ? e->drain_deadline_ms : 0;
    return e->deadline_ms;
}

void exec_on_reaped(li_ctx_t *ctx, pid_t pid, int wstatus)
{
    for (li_stream_t *s = ctx->streams; s; s = s->next) {
        if (s->kind != LI_S_EXEC || s->u.exec.pid != pid || s->u.exec.reaped)
            continue;
        li_exec_t *e = &s->u.exec;
        e->reaped = 1;
        e->wstatus = wstatus;
        /* Drain only what is buffered now: a background grandchild holding
         * the pipe must not keep the session alive. */
        int avail = 0;
        if (e->tty) {
            e->out_budget = PTY_DRAIN_BUDGET;
            e->drain_deadline_ms = li_now_ms() + PTY_GRACE_MS;
        } else {
            e->out_budget = e->out_fd >= 0 && ioctl(e->out_fd, FIONREAD, &avail) == 0 ? (size_t)avail : 0;
            avail = 0;
            e->err_budget = e->err_fd >= 0 && ioctl(e->err_fd, FIONREAD, &avail) == 0 ? (size_t)avail : 0;
        }
        li_debug(ctx, "stream %u: pid %d exited (status 0x%x)", s->id, (int)pid, wstatus);
        return;
    }
}

/* Read child output into data frames while the window allows. */
static void output_pump(li_ctx_t *ctx, li_stream_t *s, int which, uint64_t now)
{
    li_exec_t *e = &s->u.exec;
    int *fd = which == 1 ? &e->out_fd : &e->err_fd;
    short rev = which == 1 ? e->out_rev : e->err_rev;
    size_t *budget = which == 1 ? &e->out_budget : &e->err_budget;
    uint8_t type = which == 1 ? LP_STDOUT : LP_STDERR;

    if (*fd < 0)
        return;
    if (!e->reaped && !(rev & (POLLIN | POLLHUP | POLLERR)))
        return;
    for (int rounds = 0; rounds < 4; rounds++) {
        if (e->reaped && !e->tty && *budget == 0) {
            close_fd(fd);
            return;
        }
        if (s->win_out == 0 || agent_outq_len(ctx) >= LI_OUTQ_HIGH)
            return;
        size_t want = LP_MAX_PAYLOAD;
        if (want > s->win_out)
            want = (size_t)s->win_out;
        if (e->reaped && want > *budget)
            want = *budget;
        uint8_t *p = agent_reserve_data(ctx, want);
        ssize_t n = read(*fd, p, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0) {
            agent_commit_data(ctx, type, s->id, (size_t)n);
            s->win_out -= (uint64_t)n;
            if (e->reaped)
                *budget -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            /* Pipes: writes are synchronous, so after reaping an empty
             * pipe means done. A PTY gets a short grace period. */
            if (e->reaped && (!e->tty || now >= e->drain_deadline_ms))
                close_fd(fd);
            return;
        }
        /* EOF, or EIO from a PTY master whose slave side is all closed. */
        close_fd(fd);
        return;
    }
}

int exec_service(li_ctx_t *ctx, li_stream_t *s, uint64_t now)
{
    li_exec_t *e = &s->u.exec;
    if (!e->reaped && e->deadline_ms && now >= e->deadline_ms) {
        li_debug(ctx, "stream %u: timeout, killing process group %d", s->id, (int)e->pid);
        kill(-e->pid, SIGKILL);
        e->timed_out = 1;
        e->deadline_ms = 0;
    }
    if (e->in_rev || (e->in_eof && e->in_len == 0))
        stdin_pump(ctx, s);
    output_pump(ctx, s, 1, now);
    output_pump(ctx, s, 2, now);
    if (!e->reaped || e->out_fd >= 0 || e->err_fd >= 0)
        return 0;

    agent_send_frame(ctx, LP_STDOUT, s->id, NULL, 0);
    agent_send_frame(ctx, LP_STDERR, s->id, NULL, 0);
    uint8_t buf[64];
    lp_msg_t m;
    lp_msg_init(&m, buf, sizeof(buf));
    if (WIFEXITED(e->wstatus))
        lp_msg_put_i32(&m, LP_T_EXIT_CODE, WEXITSTATUS(e->wstatus));
    else if (WIFSIGNALED(e->wstatus))
        lp_msg_put_u32(&m, LP_T_TERM_SIGNAL, (uint32_t)WTERMSIG(e->wstatus));
    lp_msg_put_u32(&m, LP_T_TIMED_OUT, e->timed_out ? 1 : 0);
    agent_send_frame(ctx, LP_EXIT, s->id, buf, m.len);
    li_debug(ctx, "stream %u: exit sent", s->id);
    exec_destroy(ctx, s);
    return 1;
}
