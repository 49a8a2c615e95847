/* vm.c — per-lane processes: nbdkit serving the root disk, QEMU running the
 * guest, and the agent channel to lane-init.
 *
 * Boot:  booting → [resolve kernel+initramfs once] → spawn nbdkit (and, in
 *        parallel, set up the lane network: netns, TAP, netmed) → wait for
 *        its socket and the TAP → spawn QEMU → agent handshake → running.
 * Stop:  stopping → agent shutdown → QEMU exits → nbdkit SIGTERM → stopped;
 *        escalation SIGTERM/SIGKILL on the deadline.
 * Death: QEMU or nbdkit dying unexpectedly fails the lane; the survivor is
 *        killed and the final state is applied only once both are gone, so
 *        a stopped/failed lane never has a process left (no orphans) and a
 *        later boot never races a previous nbdkit on the same disk.
 *
 * Processes are spawned detached (own session) so they outlive a lanesd
 * crash; they are watched through pidfds, which works the same for children
 * and for processes re-adopted after a lanesd restart. Signals go through
 * pidfd_send_signal, so a recycled pid is never hit.
 */
#include "lanesd.h"

#include "accel.h"
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define NBD_SOCKET_WAIT_MS 15000
#define NBD_POLL_MS 5 /* nbd.sock poll interval: paid once per boot (lanes without network) */
#define KILL_GRACE_MS 3000

static void lane_teardown_step(lane_rt_t *l);
static void lane_spawn_qemu(lane_rt_t *l);
static void lane_agent_connect(lane_rt_t *l);

/* ---- accelerator ---------------------------------------------------------------- */

const char *vm_probe_accel(char *why, size_t whylen)
{
    const char *force = getenv("LANES_ACCEL");
    if (force && (!strcmp(force, "tcg") || !strcmp(force, "kvm"))) {
        snprintf(why, whylen, "forced by LANES_ACCEL=%s", force);
        return strcmp(force, "kvm") == 0 ? "kvm" : "tcg";
    }
    return accel_probe_kvm(why, whylen) ? "kvm" : "tcg";
}

/* ---- lane objects --------------------------------------------------------------- */

lane_rt_t *vm_lane_new(lanesd_t *d)
{
    lane_rt_t *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->d = d;
    l->qemu.lane = l;
    l->qemu.what = "qemu";
    l->qemu.pidfd = -1;
    l->nbdkit.lane = l;
    l->nbdkit.what = "nbdkit";
    l->nbdkit.pidfd = -1;
    l->netmed.lane = l;
    l->netmed.what = "netmed";
    l->netmed.pidfd = -1;
    l->tap_fd = -1;
    uv_timer_init(d->loop, &l->timer);
    uv_timer_init(d->loop, &l->tick);
    uv_timer_init(d->loop, &l->net_timer);
    l->timer.data = l->tick.data = l->net_timer.data = l;
    l->handles_open = 3;
    /* append, keeping creation order for listings */
    lane_rt_t **pp = &d->lanes;
    while (*pp)
        pp = &(*pp)->next;
    *pp = l;
    return l;
}

lane_rt_t *vm_lane_new_record(lanesd_t *d, const char *name, const char *image, int cpus, int memory_mib,
                              int disk_gib)
{
    lane_rt_t *l = vm_lane_new(d);
    if (!l)
        return NULL;
    util_random_hex(l->id, 6);
    snprintf(l->name, sizeof(l->name), "%s", name);
    snprintf(l->image, sizeof(l->image), "%s", image);
    l->cpus = cpus;
    l->memory_mib = memory_mib;
    l->disk_gib = disk_gib;
    l->state = LANE_CREATED;
    l->created_at = util_now_s();
    snprintf(l->dir, sizeof(l->dir), "%s/lanes/%s", d->state_dir, l->id);
    return l;
}

lane_rt_t *vm_lane_find(lanesd_t *d, const char *name)
{
    for (lane_rt_t *l = d->lanes; l; l = l->next)
        if (!strcmp(l->name, name) || !strcmp(l->id, name))
            return l;
    return NULL;
}

static void on_lane_handle_closed(uv_handle_t *h)
{
    lane_rt_t *l = h->data;
    if (--l->handles_open == 0)
        free(l);
}

void vm_lane_unlink_free(lane_rt_t *l)
{
    lanesd_t *d = l->d;
    for (lane_rt_t **pp = &d->lanes; *pp; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    }
    agent_free(l->agent);
    l->agent = NULL;
    if (l->tap_fd >= 0)
        close(l->tap_fd);
    l->tap_fd = -1;
    uv_close((uv_handle_t *)&l->timer, on_lane_handle_closed);
    uv_close((uv_handle_t *)&l->tick, on_lane_handle_closed);
    uv_close((uv_handle_t *)&l->net_timer, on_lane_handle_closed);
}

json_object *vm_lane_json(const lane_rt_t *l)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(l->name));
    json_object_object_add(o, "id", json_object_new_string(l->id));
    json_object_object_add(o, "state", json_object_new_string(lane_state_name(l->state)));
    json_object_object_add(o, "reason", l->reason[0] ? json_object_new_string(l->reason) : NULL);
    json_object_object_add(o, "image", json_object_new_string(l->image));
    json_object_object_add(o, "cpus", json_object_new_int(l->cpus));
    json_object_object_add(o, "memory_mib", json_object_new_int(l->memory_mib));
    json_object_object_add(o, "disk_gib", json_object_new_int(l->disk_gib));
    json_object_object_add(o, "network", json_object_new_string(l->network ? "mediated" : "none"));
    api_stores_lane_json(l->d, l->id, o);
    json_object_object_add(o, "ttl_s", json_object_new_int(l->ttl_s));
    json_object_object_add(o, "idle_timeout_s", json_object_new_int(l->idle_timeout_s));
    json_object_object_add(o, "accel", l->accel[0] ? json_object_new_string(l->accel) : NULL);
    json_object_object_add(o, "created_at", util_json_time(l->created_at));
    json_object_object_add(o, "booted_at", util_json_time(l->booted_at));
    json_object_object_add(o, "pid", l->qemu.pid > 0 ? json_object_new_int(l->qemu.pid) : NULL);
    json_object_object_add(o, "agent_ready", json_object_new_boolean(l->agent && agent_is_ready(l->agent)));
    char path[600];
    snprintf(path, sizeof(path), "%s/console.log", l->dir);
    json_object_object_add(o, "console_log", json_object_new_string(path));
    json_object_object_add(o, "degraded", json_object_new_boolean(l->degraded));
    json_object_object_add(o, "degraded_reason",
                           l->degraded ? json_object_new_string(l->degraded_reason) : NULL);
    api_snapshots_lineage(l, o);
    return o;
}

/* ---- state ---------------------------------------------------------------------- */

static void lane_wake_waiters(lane_rt_t *l)
{
    lane_waiter_t **pp = &l->waiters;
    while (*pp) {
        lane_waiter_t *w = *pp;
        int done = 0;
        if (l->state == w->want) {
            http_req_respond_json(w->req, 200, vm_lane_json(l));
            done = 1;
        } else if (l->state == LANE_FAILED || (w->want == LANE_RUNNING && l->state == LANE_STOPPED) ||
                   (w->want == LANE_STOPPED && l->state == LANE_RUNNING)) {
            if (l->state == LANE_FAILED && w->want == LANE_RUNNING)
                http_req_respond_error(w->req, 500, "boot_failed", "lane %s failed to boot: %s", l->name,
                                       l->reason[0] ? l->reason : "unknown reason");
            else
                http_req_respond_error(w->req, 409, "state_changed", "lane %s is now %s%s%s", l->name,
                                       lane_state_name(l->state), l->reason[0] ? ": " : "", l->reason);
            done = 1;
        }
        if (done) {
            *pp = w->next;
            free(w);
        } else {
            pp = &w->next;
        }
    }
}

static void on_waiter_gone(http_req_t *req, void *ud)
{
    lane_rt_t *l = ud;
    for (lane_waiter_t **pp = &l->waiters; *pp; pp = &(*pp)->next) {
        if ((*pp)->req == req) {
            lane_waiter_t *w = *pp;
            *pp = w->next;
            /* The request still has to be released by answering it. */
            http_req_respond_error(req, 499, "client_closed", "client went away");
            free(w);
            return;
        }
    }
}

void vm_lane_add_waiter(lane_rt_t *l, http_req_t *req, lane_state_t want)
{
    lane_waiter_t *w = calloc(1, sizeof(*w));
    if (!w) {
        http_req_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    w->req = req;
    w->want = want;
    w->next = l->waiters;
    l->waiters = w;
    http_req_on_close(req, on_waiter_gone, l);
}

int vm_lane_set_state(lane_rt_t *l, lane_event_t ev, const char *reason_fmt, ...)
{
    lane_state_t to;
    if (lane_transition(l->state, ev, &to) < 0) {
        util_log("lane %s: ignoring event %s in state %s", l->name, lane_event_name(ev), lane_state_name(l->state));
        return -EINVAL;
    }
    lane_state_t from = l->state;
    l->state = to;
    if (reason_fmt) {
        va_list ap;
        va_start(ap, reason_fmt);
        vsnprintf(l->reason, sizeof(l->reason), reason_fmt, ap);
        va_end(ap);
    } else if (to != LANE_FAILED) {
        l->reason[0] = '\0';
    }
    if (to == LANE_RUNNING) {
        l->booted_at = util_now_s();
        l->last_activity_ms = util_now_ms();
    }
    db_lane_update(l->d, l);
    char detail[700];
    snprintf(detail, sizeof(detail), "%s -> %s%s%s", lane_state_name(from), lane_state_name(to),
             l->reason[0] ? ": " : "", l->reason);
    db_event(l->d, l->id, "state", detail);
    util_log("lane %s: %s", l->name, detail);
    lane_wake_waiters(l);
    return 0;
}

/* ---- process watching -------------------------------------------------------------- */

static int pidfd_open_compat(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int proc_signal(lane_proc_t *p, int sig)
{
    if (p->pid <= 0)
        return -ESRCH;
    if (p->pidfd >= 0) {
        if (syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0) < 0)
            return -errno;
        return 0;
    }
    /* No pidfd (should not happen): fall back to a start-time-checked kill. */
    if (util_proc_start_time(p->pid) != p->start_time)
        return -ESRCH;
    return kill(p->pid, sig) < 0 ? -errno : 0;
}

static void proc_reset(lane_proc_t *p)
{
    p->pid = 0;
    p->start_time = 0;
}

static void on_pidfd_closed(uv_handle_t *h)
{
    lane_proc_t *p = h->data;
    if (p->pidfd >= 0)
        close(p->pidfd);
    p->pidfd = -1;
    lane_rt_t *l = p->lane;
    if (--l->handles_open == 0)
        free(l);
}

/* The process behind p is gone (status < 0: unknown, it was not our child). */
static void proc_gone(lane_proc_t *p, int status)
{
    lane_rt_t *l = p->lane;
    if (p->polling) {
        p->polling = 0;
        uv_poll_stop(&p->poll);
        l->handles_open++;
        uv_close((uv_handle_t *)&p->poll, on_pidfd_closed);
    }
    pid_t pid = p->pid;
    proc_reset(p);
    db_lane_update(l->d, l);

    char desc[128];
    if (status < 0)
        snprintf(desc, sizeof(desc), "exited");
    else if (WIFSIGNALED(status))
        snprintf(desc, sizeof(desc), "was killed by signal %d", WTERMSIG(status));
    else
        snprintf(desc, sizeof(desc), "exited with status %d", WEXITSTATUS(status));
    util_log("lane %s: %s (pid %d) %s", l->name, p->what, (int)pid, desc);

    if (p == &l->netmed) {
        /* Not fatal: the lane is offline (closed) until netmed is back. */
        if (l->teardown)
            lane_teardown_step(l);
        else
            net_netmed_exited(l);
        return;
    }
    if (!l->teardown) {
        /* First process to go decides how the lane ends. */
        l->teardown = 1;
        int clean = p == &l->qemu && status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (p == &l->qemu && (l->state == LANE_STOPPING || (l->state == LANE_RUNNING && clean))) {
            l->teardown_ev = LANE_EV_EXITED;
            l->teardown_reason[0] = '\0';
        } else {
            l->teardown_ev = LANE_EV_FAIL;
            snprintf(l->teardown_reason, sizeof(l->teardown_reason), "%s %s unexpectedly%s", p->what, desc,
                     p == &l->qemu ? " (see console log)" : "");
            if (l->state == LANE_BOOTING && p == &l->qemu)
                snprintf(l->teardown_reason, sizeof(l->teardown_reason), "qemu %s during boot (see console log)",
                         desc);
        }
    }
    lane_teardown_step(l);
}

static void on_pidfd_readable(uv_poll_t *h, int status, int events)
{
    lane_proc_t *p = h->data;
    (void)status;
    (void)events;
    int wstatus = -1;
    /* If it was our child, reap it for the status (libuv may have already). */
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    if (waitid(P_PIDFD, (id_t)p->pidfd, &si, WEXITED | WNOHANG) == 0 && si.si_pid != 0) {
        if (si.si_code == CLD_EXITED)
            wstatus = (si.si_status & 0xff) << 8;
        else
            wstatus = si.si_status & 0x7f;
    }
    proc_gone(p, wstatus);
}

static int proc_watch(lane_proc_t *p)
{
    lane_rt_t *l = p->lane;
    p->pidfd = pidfd_open_compat(p->pid);
    if (p->pidfd < 0)
        return -errno;
    fcntl(p->pidfd, F_SETFD, FD_CLOEXEC);
    uv_poll_init(l->d->loop, &p->poll, p->pidfd);
    p->poll.data = p;
    p->polling = 1;
    uv_poll_start(&p->poll, UV_READABLE, on_pidfd_readable);
    return 0;
}

/* Body of the shim process: wait for the real child, forward termination
 * signals to it, and leave with its status. Never returns. */
static void shim_run(pid_t child) __attribute__((noreturn));
static void shim_run(pid_t child)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    prctl(PR_SET_NAME, "lanes-shim");
    for (;;) {
        int status;
        pid_t r = waitpid(child, &status, WNOHANG);
        if (r == child) {
            if (WIFSIGNALED(status)) {
                signal(WTERMSIG(status), SIG_DFL);
                sigprocmask(SIG_UNBLOCK, &set, NULL);
                raise(WTERMSIG(status));
            }
            _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
        }
        if (r < 0 && errno != EINTR)
            _exit(1);
        siginfo_t si;
        if (sigwaitinfo(&set, &si) < 0)
            continue;
        if (si.si_signo != SIGCHLD)
            kill(child, si.si_signo);
    }
}

/* Spawn a detached process with stdout+stderr to logfile; returns the pid to
 * watch or a negative errno. We fork ourselves (not uv_spawn) so libuv does
 * not reap the child behind our pidfd's back: waitid(P_PIDFD) gets the
 * status.
 *
 * with_shim: Debian's nbdkit arms PR_SET_PDEATHSIG(SIGTERM) on itself, so it
 * would die with lanesd. It gets a minimal parent (a "shim", like
 * containerd-shim or conmon) that outlives lanesd, forwards SIGTERM/INT/HUP,
 * and exits with the child's status; the returned pid is the shim's. If the
 * shim is SIGKILLed the child gets its death signal and goes too. */
static pid_t spawn_detached(char *const argv[], const char *logfile, const char *cwd, int with_shim, int keep_fd)
{
    int logfd = open(logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (logfd < 0)
        return -errno;
    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) < 0) {
        int e = errno;
        close(logfd);
        return -e;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(logfd);
        close(errpipe[0]);
        close(errpipe[1]);
        return -e;
    }
    if (pid == 0) {
        setsid();
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (int s = 1; s < NSIG; s++)
            signal(s, SIG_DFL);
        int nullfd = open("/dev/null", O_RDONLY);
        if (nullfd >= 0)
            dup2(nullfd, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        if (cwd && chdir(cwd) < 0)
            _exit(126);
        if (keep_fd >= 0)
            fcntl(keep_fd, F_SETFD, 0); /* e.g. the TAP for QEMU's -netdev fd= */
        if (with_shim) {
            pid_t child = fork();
            if (child < 0)
                _exit(125);
            if (child > 0) {
                /* the shim keeps nothing of lanesd's: no sockets, no db */
                close_range(3, ~0U, 0);
                shim_run(child);
            }
        }
        execvp(argv[0], argv);
        int e = errno;
        ssize_t w = write(errpipe[1], &e, sizeof(e));
        (void)w;
        _exit(127);
    }
    close(logfd);
    close(errpipe[1]);
    int child_errno = 0;
    ssize_t n;
    do {
        n = read(errpipe[0], &child_errno, sizeof(child_errno));
    } while (n < 0 && errno == EINTR);
    close(errpipe[0]);
    if (n == (ssize_t)sizeof(child_errno)) {
        waitpid(pid, NULL, 0);
        return -child_errno;
    }
    return pid;
}

pid_t vm_spawn_detached(char *const argv[], const char *logfile, const char *cwd, int with_shim)
{
    return spawn_detached(argv, logfile, cwd, with_shim, -1);
}

int vm_proc_watch_new(lane_proc_t *p, pid_t pid)
{
    p->pid = pid;
    p->start_time = util_proc_start_time(pid);
    int r = proc_watch(p);
    if (r < 0) {
        kill(pid, SIGKILL);
        proc_reset(p);
    }
    return r;
}

/* ---- teardown ---------------------------------------------------------------------- */

static void on_kill_escalate(uv_timer_t *t)
{
    lane_rt_t *l = t->data;
    if (l->qemu.pid > 0)
        proc_signal(&l->qemu, SIGKILL);
    if (l->nbdkit.pid > 0)
        proc_signal(&l->nbdkit, SIGKILL);
    if (l->netmed.pid > 0)
        proc_signal(&l->netmed, SIGKILL);
}

static void lane_remove_runtime_files(lane_rt_t *l)
{
    static const char *const files[] = {"nbd.sock", "ctl.sock", "qmp.sock", "netmed.sock"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[700];
        snprintf(path, sizeof(path), "%s/%s", l->dir, files[i]);
        unlink(path);
    }
}

static void on_net_cleaned(lane_rt_t *l, int err, const char *msg)
{
    (void)err;
    (void)msg;
    l->net_cleaning = 2; /* done: finish the teardown */
    lane_teardown_step(l);
}

/* Drive the lane towards "no processes", then apply the pending transition. */
static void lane_teardown_step(lane_rt_t *l)
{
    if (l->agent) {
        agent_free(l->agent);
        l->agent = NULL;
    }
    api_exec_lane_gone(l);
    uv_timer_stop(&l->tick);
    if (l->qemu.pid > 0) {
        proc_signal(&l->qemu, SIGKILL);
        return; /* its pidfd fires and we come back */
    }
    if (l->nbdkit.pid > 0) {
        /* SIGTERM lets nbdkit close cleanly; committed data is already durable. */
        proc_signal(&l->nbdkit, SIGTERM);
        uv_timer_start(&l->timer, on_kill_escalate, KILL_GRACE_MS, 0);
        return;
    }
    uv_timer_stop(&l->net_timer);
    if (l->netmed.pid > 0) {
        proc_signal(&l->netmed, SIGTERM);
        uv_timer_start(&l->timer, on_kill_escalate, KILL_GRACE_MS, 0);
        return;
    }
    uv_timer_stop(&l->timer);
    if (l->net_cleaning == 1)
        return; /* the namespace removal calls back */
    net_audit_ingest(l);
    if (l->network && l->net_cleaning == 0 && net_lane_cleanup(l, on_net_cleaned)) {
        /* The lane reports stopped/failed only once its namespace is gone,
         * so a boot right after never races the removal. */
        l->net_cleaning = 1;
        return;
    }
    l->net_cleaning = 0;
    lane_remove_runtime_files(l);
    l->teardown = 0;
    l->stop_phase = 0;
    l->waiting_artifacts = 0;
    if (l->state == LANE_CREATED || l->state == LANE_STOPPED || l->state == LANE_FAILED) {
        db_lane_update(l->d, l);
    } else if (l->teardown_ev == LANE_EV_FAIL) {
        vm_lane_set_state(l, LANE_EV_FAIL, "%s", l->teardown_reason);
    } else if (l->stop_reason[0]) {
        vm_lane_set_state(l, l->teardown_ev, "%s", l->stop_reason);
    } else {
        vm_lane_set_state(l, l->teardown_ev, NULL);
    }
    l->stop_reason[0] = '\0';
    if (l->freeing) {
        /* rm was waiting for the processes to go */
        vm_lane_unlink_free(l);
    }
}

/* Fail the lane: kill everything, final state failed with reason. */
static void lane_fail(lane_rt_t *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lane_fail(lane_rt_t *l, const char *fmt, ...)
{
    if (!l->teardown) {
        l->teardown = 1;
        l->teardown_ev = LANE_EV_FAIL;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(l->teardown_reason, sizeof(l->teardown_reason), fmt, ap);
        va_end(ap);
        util_log("lane %s: failing: %s", l->name, l->teardown_reason);
    }
    lane_teardown_step(l);
}

void vm_lane_kill(lane_rt_t *l)
{
    if (l->qemu.pid <= 0 && l->nbdkit.pid <= 0 && !lane_state_is_active(l->state))
        return;
    if (!l->teardown) {
        l->teardown = 1;
        l->teardown_ev = l->state == LANE_STOPPING ? LANE_EV_EXITED : LANE_EV_FAIL;
        snprintf(l->teardown_reason, sizeof(l->teardown_reason), "killed");
        if (l->state == LANE_RUNNING || l->state == LANE_BOOTING) {
            /* forced stop by the user: go through stopping so the end state is stopped */
            vm_lane_set_state(l, LANE_EV_STOP, NULL);
            l->teardown_ev = LANE_EV_EXITED;
        }
    }
    lane_teardown_step(l);
}

/* ---- agent ----------------------------------------------------------------------------- */

static void lane_agent_ready_final(lane_rt_t *l, const agent_hello_t *hello);

static void on_configured(agent_t *a, int err, const char *msg, void *ud)
{
    lane_rt_t *l = ud;
    (void)a;
    int handshake = l->configuring;
    l->configuring = 0;
    if (err && err != -ECANCELED) {
        if (l->state == LANE_BOOTING)
            lane_fail(l, "guest configuration failed: %s", msg ? msg : strerror(-err));
        else
            util_log("lane %s: guest configuration failed: %s", l->name, msg ? msg : strerror(-err));
        return;
    }
    if (!err && handshake)
        lane_agent_ready_final(l, NULL);
}

void vm_lane_configure(lane_rt_t *l)
{
    if (!l->agent || !agent_is_ready(l->agent))
        return;
    agent_config_t cfg;
    char *ca = NULL, **env = NULL;
    net_guest_config(l, &cfg, &ca, &env);
    int r = agent_configure(l->agent, &cfg, on_configured, l);
    net_guest_config_free(ca, env);
    if (r < 0 && l->state == LANE_BOOTING)
        lane_fail(l, "guest configuration: %s", strerror(-r));
}

static void on_agent_ready(agent_t *a, const agent_hello_t *hello, void *ud)
{
    lane_rt_t *l = ud;
    (void)a;
    l->hello = *hello;
    if (l->network) {
        /* Network, resolver, CA and secret placeholders first: an exec must
         * never run in a half-configured lane. While netmed is still
         * starting (l->net_job), on_net_ready sends the CONFIGURE. */
        l->configuring = 1;
        if (!l->net_job)
            vm_lane_configure(l);
        return;
    }
    lane_agent_ready_final(l, hello);
}

static void lane_agent_ready_final(lane_rt_t *l, const agent_hello_t *hello)
{
    if (!hello)
        hello = &l->hello;
    uv_timer_stop(&l->timer);
    if (l->state == LANE_BOOTING) {
        int64_t ms = util_now_ms() - l->boot_started_ms;
        char detail[256];
        snprintf(detail, sizeof(detail), "agent ready after %lld ms (guest kernel %s, guest uptime %llu ms)",
                 (long long)ms, hello->kernel, (unsigned long long)hello->boot_ms);
        db_event(l->d, l->id, "boot", detail);
        vm_lane_set_state(l, LANE_EV_READY, NULL);
    } else if (l->state == LANE_RUNNING) {
        util_log("lane %s: agent reconnected", l->name);
        api_snapshots_agent_ready(l);
    }
}

static void on_agent_reconnect(uv_timer_t *t)
{
    lane_rt_t *l = t->data;
    if (l->qemu.pid > 0 && !l->teardown && (l->state == LANE_RUNNING || l->state == LANE_BOOTING))
        lane_agent_connect(l);
}

static void on_agent_disconnect(agent_t *a, int err, const char *msg, void *ud)
{
    lane_rt_t *l = ud;
    (void)a;
    (void)err;
    util_log("lane %s: agent channel closed: %s", l->name, msg ? msg : "");
    /* Don't free the agent from inside its callback: do it on the next tick. */
    if (l->teardown || l->state == LANE_STOPPING)
        return;
    if (l->state == LANE_BOOTING && err == -ETIMEDOUT) {
        lane_fail(l, "boot timed out: the guest agent did not answer (see console log)");
        return;
    }
    /* QEMU still there: the guest side reset or misbehaved; reconnect. */
    uv_timer_start(&l->tick, on_agent_reconnect, 500, 0);
}

static void lane_agent_connect(lane_rt_t *l)
{
    if (l->agent) {
        agent_free(l->agent);
        l->agent = NULL;
    }
    char path[700];
    snprintf(path, sizeof(path), "%s/ctl.sock", l->dir);
    static const agent_callbacks_t cbs = {on_agent_ready, on_agent_disconnect};
    l->agent = agent_new(l->d->loop, path, &cbs, l);
    if (!l->agent) {
        lane_fail(l, "out of memory creating the agent channel");
        return;
    }
    uint64_t timeout = l->state == LANE_BOOTING ? l->d->boot_timeout_ms : 30000;
    int r = agent_start(l->agent, timeout);
    if (r < 0)
        lane_fail(l, "agent channel: %s", strerror(-r));
}

/* ---- boot -------------------------------------------------------------------------------- */

static void on_boot_deadline(uv_timer_t *t)
{
    lane_rt_t *l = t->data;
    if (l->state == LANE_BOOTING)
        lane_fail(l, "boot timed out after %llu s (see console log)",
                  (unsigned long long)(l->d->boot_timeout_ms / 1000));
}

static void on_nbd_socket_poll(uv_timer_t *t)
{
    lane_rt_t *l = t->data;
    if (l->teardown || l->state != LANE_BOOTING)
        return;
    char path[700];
    snprintf(path, sizeof(path), "%s/nbd.sock", l->dir);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        /* nbdkit starts in parallel with the network setup (boot time):
         * QEMU needs the socket and the TAP (net.c opens it before netmed
         * is up); keep polling for the TAP, uncounted, until it is open. */
        if (l->qemu.pid > 0)
            return;
        if (!l->network || l->tap_fd >= 0) {
            lane_spawn_qemu(l);
            return;
        }
        uv_timer_start(&l->tick, on_nbd_socket_poll, NBD_POLL_MS, 0);
        return;
    }
    l->nbd_wait_ms += NBD_POLL_MS;
    if (l->nbd_wait_ms > NBD_SOCKET_WAIT_MS) {
        lane_fail(l, "nbdkit did not create its socket within %d s (see %s/nbdkit.log)", NBD_SOCKET_WAIT_MS / 1000,
                  l->dir);
        return;
    }
    uv_timer_start(&l->tick, on_nbd_socket_poll, NBD_POLL_MS, 0);
}

/* Testing knob LANES_NBDKIT_FILTERS (fault-injection tests only): words
 * starting with '-' (e.g. --filter=error) go before the plugin, the others
 * (error-rate=100% error-file=PATH) after it as parameters.  Words are split
 * on spaces in place in buf; at most max of each kind. */
static void nbdkit_filter_args(char *buf, char **pre, int *npre, char **post, int *npost, int max)
{
    for (char *save = NULL, *w = strtok_r(buf, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        if (w[0] == '-' && *npre < max)
            pre[(*npre)++] = w;
        else if (w[0] != '-' && *npost < max)
            post[(*npost)++] = w;
    }
}

static void lane_spawn_nbdkit(lane_rt_t *l)
{
    lanesd_t *d = l->d;
    char plugin[700], store_arg[700], disk_arg[128], status_arg[700], sock[700], log[700];
    char holder_arg[128] = "", stats_arg[700] = "";
    const char *s3dir = api_stores_lane_dir(d, l->id);
    snprintf(plugin, sizeof(plugin), "%s/nbdkit-laneslocal-plugin.so", d->bin_dir);
    snprintf(store_arg, sizeof(store_arg), "store=%s/store", d->state_dir);
    if (s3dir) { /* S3 store: its own plugin; it takes the lane's lease as holder */
        snprintf(plugin, sizeof(plugin), "%s/nbdkit-laness3-plugin.so", d->bin_dir);
        snprintf(store_arg, sizeof(store_arg), "store=%s", s3dir);
        snprintf(holder_arg, sizeof(holder_arg), "holder=%s", api_stores_host_id(d));
        snprintf(stats_arg, sizeof(stats_arg), "stats=%s/s3stats.json", l->dir);
    }
    snprintf(disk_arg, sizeof(disk_arg), "disk=%s", l->id);
    /* the plugin appends a JSON line here on its first EIO (vm_housekeeping) */
    snprintf(status_arg, sizeof(status_arg), "status=%s/store-status", l->dir);
    snprintf(sock, sizeof(sock), "%s/nbd.sock", l->dir);
    snprintf(log, sizeof(log), "%s/nbdkit.log", l->dir);
    unlink(sock);
    char filters[1024] = "", *pre[8], *post[8];
    int npre = 0, npost = 0;
    const char *env = getenv("LANES_NBDKIT_FILTERS");
    if (env)
        snprintf(filters, sizeof(filters), "%s", env);
    nbdkit_filter_args(filters, pre, &npre, post, &npost, 8);
    char *argv[32];
    int n = 0;
    argv[n++] = "nbdkit";
    argv[n++] = "--foreground";
    argv[n++] = "--unix";
    argv[n++] = sock;
    for (int i = 0; i < npre; i++)
        argv[n++] = pre[i];
    argv[n++] = plugin;
    argv[n++] = store_arg;
    argv[n++] = disk_arg;
    argv[n++] = status_arg;
    if (holder_arg[0]) {
        argv[n++] = holder_arg;
        argv[n++] = stats_arg;
    }
    for (int i = 0; i < npost; i++)
        argv[n++] = post[i];
    argv[n] = NULL;
    pid_t pid = spawn_detached(argv, log, NULL, 1, -1);
    if (pid < 0) {
        lane_fail(l, "cannot start nbdkit: %s", strerror((int)-pid));
        return;
    }
    l->nbdkit.pid = pid;
    l->nbdkit.start_time = util_proc_start_time(pid);
    if (proc_watch(&l->nbdkit) < 0) {
        lane_fail(l, "cannot watch nbdkit: %s", strerror(errno));
        return;
    }
    db_lane_update(d, l);
    l->nbd_wait_ms = 0;
    uv_timer_start(&l->tick, on_nbd_socket_poll, NBD_POLL_MS, 0);
}

/* Build QEMU's argv. Returns the count; strings live in buf. */
static int qemu_argv(lane_rt_t *l, char **argv, int max, char *buf, size_t buflen)
{
    lanesd_t *d = l->d;
    size_t used = 0;
    int n = 0;
#define ARG(...)                                                                       \
    do {                                                                               \
        if (n >= max - 1 || used >= buflen)                                            \
            return -E2BIG;                                                             \
        int w_ = snprintf(buf + used, buflen - used, __VA_ARGS__);                     \
        if (w_ < 0 || (size_t)w_ >= buflen - used)                                     \
            return -E2BIG;                                                             \
        argv[n++] = buf + used;                                                        \
        used += (size_t)w_ + 1;                                                        \
    } while (0)
    int kvm = strcmp(l->accel, "kvm") == 0;
    ARG("qemu-system-x86_64");
    ARG("-name");
    ARG("lanes-%s,debug-threads=on", l->id);
    ARG("-M");
    ARG("microvm,x-option-roms=off,isa-serial=on,rtc=on,pit=%s,pic=%s", kvm ? "off" : "on", kvm ? "off" : "on");
    ARG("-accel");
    ARG(kvm ? "kvm" : "tcg,thread=multi");
    ARG("-cpu");
    ARG(kvm ? "host" : "max");
    ARG("-smp");
    ARG("%d", l->cpus);
    ARG("-m");
    ARG("%d", l->memory_mib);
    ARG("-nodefaults");
    ARG("-no-user-config");
    ARG("-nographic");
    ARG("-no-reboot");
    ARG("-kernel");
    ARG("%s", d->kernel);
    ARG("-initrd");
    ARG("%s", d->initrd);
    ARG("-append");
    /* tsc_early_khz: under TCG microvm cannot calibrate the TSC and hangs in
     * about one boot of four without it (DESIGN.md Findings). panic=-1 turns
     * a guest panic into a QEMU exit instead of a hung lane. */
    ARG("console=ttyS0 reboot=t panic=-1 quiet%s lanes.hostname=%s lanes.root=/dev/vda",
        kvm ? "" : " tsc_early_khz=2000000", l->name);
    ARG("-chardev");
    ARG("file,id=con,path=%s/console.log,append=on", l->dir);
    ARG("-serial");
    ARG("chardev:con");
    ARG("-blockdev");
    ARG("{\"driver\":\"nbd\",\"node-name\":\"root\",\"server\":{\"type\":\"unix\",\"path\":\"%s/nbd.sock\"},"
        "\"reconnect-delay\":10}",
        l->dir);
    ARG("-device");
    /* werror=report: a full store (ENOSPC) is an I/O error in the guest,
     * not a paused VM that looks hung. */
    ARG("virtio-blk-device,drive=root,werror=report,rerror=report");
    ARG("-device");
    ARG("virtio-serial-device,max_ports=2");
    ARG("-chardev");
    ARG("socket,id=ctl,path=%s/ctl.sock,server=on,wait=off", l->dir);
    ARG("-device");
    ARG("virtserialport,chardev=ctl,name=org.lanes.ctl.0");
    ARG("-qmp");
    ARG("unix:%s/qmp.sock,server=on,wait=off", l->dir);
    if (l->tap_fd >= 0) {
        /* The TAP lives in the lane's netns (opened there by net.c); QEMU
         * itself stays in lanesd's namespace and only holds the fd. */
        ARG("-netdev");
        ARG("tap,id=net0,fd=%d,vhost=off", l->tap_fd);
        ARG("-device");
        ARG("virtio-net-device,netdev=net0,mac=52:54:00:%c%c:%c%c:%c%c", l->id[0], l->id[1], l->id[2], l->id[3],
            l->id[4], l->id[5]);
    }
    /* The guest runs untrusted code: confine QEMU with its seccomp policy
     * (no obsolete syscalls, no privilege changes, no spawning). */
    ARG("-sandbox");
    ARG("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
#undef ARG
    argv[n] = NULL;
    return n;
}

static void lane_spawn_qemu(lane_rt_t *l)
{
    char *argv[64];
    char buf[8192];
    if (qemu_argv(l, argv, 64, buf, sizeof(buf)) < 0) {
        lane_fail(l, "qemu command line too long");
        return;
    }
    char log[700];
    snprintf(log, sizeof(log), "%s/qemu.log", l->dir);
    char con[700];
    snprintf(con, sizeof(con), "%s/console.log", l->dir);
    /* a fresh console log per boot */
    int fd = open(con, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
    pid_t pid = spawn_detached(argv, log, l->dir, 0, l->tap_fd);
    if (pid < 0) {
        lane_fail(l, "cannot start qemu-system-x86_64: %s", strerror((int)-pid));
        return;
    }
    if (l->tap_fd >= 0) {
        close(l->tap_fd); /* QEMU has its own copy now */
        l->tap_fd = -1;
    }
    l->qemu.pid = pid;
    l->qemu.start_time = util_proc_start_time(pid);
    if (proc_watch(&l->qemu) < 0) {
        lane_fail(l, "cannot watch qemu: %s", strerror(errno));
        return;
    }
    db_lane_update(l->d, l);
    lane_agent_connect(l);
}

static void on_net_ready(lane_rt_t *l, int err, const char *msg)
{
    if (l->state != LANE_BOOTING || l->teardown)
        return;
    if (err) {
        lane_fail(l, "%s", msg ? msg : strerror(-err));
        return;
    }
    /* netmed listens now. QEMU was normally started by on_nbd_socket_poll
     * as soon as the TAP was open; if the guest's HELLO came before this,
     * its CONFIGURE was held back (on_agent_ready): send it now. */
    char path[700];
    struct stat st;
    snprintf(path, sizeof(path), "%s/nbd.sock", l->dir);
    if (l->qemu.pid <= 0 && l->tap_fd >= 0 && stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        lane_spawn_qemu(l);
    if (l->configuring && l->agent && agent_is_ready(l->agent))
        vm_lane_configure(l);
}

static void lane_boot_continue(lane_rt_t *l)
{
    l->waiting_artifacts = 0;
    if (l->state != LANE_BOOTING || l->teardown)
        return;
    /* Boot time: nbdkit starts at once, in parallel with the network setup
     * (namespace, TAP, netmed: ~100 ms of helper processes); only QEMU
     * needs the TAP. */
    lane_spawn_nbdkit(l);
    if (l->network && l->state == LANE_BOOTING && !l->teardown) {
        int r = net_lane_start(l, on_net_ready);
        if (r < 0)
            lane_fail(l, "network setup: %s", strerror(-r));
    }
}

/* ---- boot artifacts (kernel + initramfs), resolved once per lanesd ------------------------ */

typedef struct {
    lanesd_t *d;
    int step; /* 0 kernel, 1 initramfs */
    char err[512];
} artifacts_job_t;

static void artifacts_run_step(artifacts_job_t *job);

static void artifacts_finish(artifacts_job_t *job, int ok)
{
    lanesd_t *d = job->d;
    d->artifacts = ok ? 2 : 0;
    for (lane_rt_t *l = d->lanes; l; l = l->next) {
        if (!l->waiting_artifacts)
            continue;
        if (ok)
            lane_boot_continue(l);
        else
            lane_fail(l, "cannot prepare the guest kernel/initramfs: %s", job->err);
    }
    free(job);
}

static void on_artifact_line(proc_run_t *p, const char *line, void *ud)
{
    artifacts_job_t *job = ud;
    (void)p;
    util_log("rootfs: %s", line);
    snprintf(job->err, sizeof(job->err), "%s", line);
}

static void on_artifact_exit(proc_run_t *p, int status, int sig, const char *out, void *ud)
{
    artifacts_job_t *job = ud;
    lanesd_t *d = job->d;
    (void)p;
    if (status != 0 || !out[0]) {
        if (sig)
            snprintf(job->err, sizeof(job->err), "lanes-rootfs killed by signal %d", sig);
        artifacts_finish(job, 0);
        return;
    }
    if (job->step == 0) {
        snprintf(d->kernel, sizeof(d->kernel), "%s/vmlinuz", out);
        job->step = 1;
        artifacts_run_step(job);
        return;
    }
    snprintf(d->initrd, sizeof(d->initrd), "%s", out);
    util_log("guest kernel %s, initramfs %s", d->kernel, d->initrd);
    artifacts_finish(job, 1);
}

static void artifacts_run_step(artifacts_job_t *job)
{
    lanesd_t *d = job->d;
    char script[700], init[700];
    snprintf(script, sizeof(script), "%s/rootfs/lanes-rootfs", d->root_dir);
    snprintf(init, sizeof(init), "%s/lane-init", d->bin_dir);
    char *argv_k[] = {script, "kernel", NULL};
    char *argv_i[] = {script, "initramfs", init, NULL};
    static const proc_run_callbacks_t cbs = {on_artifact_line, on_artifact_exit};
    int r = proc_run_start(d->loop, job->step == 0 ? argv_k : argv_i, NULL, &cbs, job, NULL);
    if (r < 0) {
        snprintf(job->err, sizeof(job->err), "cannot run %s: %s", script, uv_strerror(r));
        artifacts_finish(job, 0);
    }
}

int vm_resolve_boot_artifacts(lanesd_t *d, char *msg, size_t msglen)
{
    if (d->artifacts != 0)
        return 0;
    if (d->kernel[0] && d->initrd[0]) {
        d->artifacts = 2;
        return 0;
    }
    artifacts_job_t *job = calloc(1, sizeof(*job));
    if (!job) {
        snprintf(msg, msglen, "out of memory");
        return -ENOMEM;
    }
    job->d = d;
    d->artifacts = 1;
    artifacts_run_step(job);
    return 0;
}

int vm_lane_boot(lane_rt_t *l, char *msg, size_t msglen)
{
    lanesd_t *d = l->d;
    lane_state_t to;
    if (lane_transition(l->state, LANE_EV_BOOT, &to) < 0) {
        snprintf(msg, msglen, "lane %s is %s", l->name, lane_state_name(l->state));
        return -EBUSY;
    }
    if (l->teardown) {
        snprintf(msg, msglen, "lane %s is still shutting down", l->name);
        return -EBUSY;
    }
    if (api_stores_boot_check(l, msg, msglen) < 0) /* S3 lanes: lease held elsewhere? */
        return -EBUSY;
    int r = util_mkdir_p(l->dir, 0700);
    if (r < 0) {
        snprintf(msg, msglen, "create %s: %s", l->dir, strerror(-r));
        return r;
    }
    snprintf(l->accel, sizeof(l->accel), "%s", d->accel);
    l->configuring = 0; /* on_net_ready must not act on a previous boot's handshake */
    l->boot_started_ms = util_now_ms();
    l->reason[0] = '\0';
    vm_lane_set_state(l, LANE_EV_BOOT, NULL);
    uv_timer_start(&l->timer, on_boot_deadline, d->boot_timeout_ms, 0);
    if (d->artifacts == 2) {
        lane_boot_continue(l);
        return 0;
    }
    l->waiting_artifacts = 1;
    r = vm_resolve_boot_artifacts(d, msg, msglen);
    if (r < 0) {
        lane_fail(l, "%s", msg);
        return 0;
    }
    if (d->artifacts == 2) /* --kernel and --initrd given: nothing to wait for */
        lane_boot_continue(l);
    return 0;
}

/* ---- stop --------------------------------------------------------------------------------- */

static void on_stop_deadline(uv_timer_t *t)
{
    lane_rt_t *l = t->data;
    if (l->state != LANE_STOPPING)
        return;
    if (l->stop_phase <= 1 && l->qemu.pid > 0) {
        util_log("lane %s: guest did not power off in time; sending SIGTERM to qemu", l->name);
        l->stop_phase = 2;
        proc_signal(&l->qemu, SIGTERM);
        uv_timer_start(&l->timer, on_stop_deadline, KILL_GRACE_MS, 0);
        return;
    }
    util_log("lane %s: still not stopped; SIGKILL", l->name);
    l->stop_phase = 3;
    on_kill_escalate(t);
}

static void on_guest_shutdown_ack(agent_t *a, int err, const char *msg, void *ud)
{
    lane_rt_t *l = ud;
    (void)a;
    if (err)
        util_log("lane %s: guest shutdown request: %s", l->name, msg ? msg : strerror(-err));
}

int vm_lane_stop(lane_rt_t *l, uint64_t timeout_ms)
{
    if (l->state == LANE_STOPPING)
        return 0;
    if (vm_lane_set_state(l, LANE_EV_STOP, NULL) < 0)
        return -EINVAL;
    l->stop_phase = 1;
    if (l->agent && agent_is_ready(l->agent) && agent_shutdown(l->agent, 0, on_guest_shutdown_ack, l) == 0) {
        uv_timer_start(&l->timer, on_stop_deadline, timeout_ms, 0);
    } else if (l->qemu.pid > 0) {
        l->stop_phase = 2;
        proc_signal(&l->qemu, SIGTERM);
        uv_timer_start(&l->timer, on_stop_deadline, KILL_GRACE_MS, 0);
    } else {
        /* booting, nothing started yet (waiting for artifacts or nbdkit) */
        l->teardown = 1;
        l->teardown_ev = LANE_EV_EXITED;
        lane_teardown_step(l);
    }
    return 0;
}

/* ---- recovery after a lanesd restart --------------------------------------------------------- */

static int proc_adopt(lane_proc_t *p)
{
    if (p->pid <= 0)
        return 0;
    /* pid + start time identify a process; QEMU's command line also names
     * the lane, nbdkit's shim is a bare fork named lanes-shim. */
    uint64_t st = util_proc_start_time(p->pid);
    int ident = p == &p->lane->qemu ? util_proc_cmdline_has(p->pid, p->lane->id) : util_proc_comm_is(p->pid, "lanes-shim");
    if (st == 0 || st != p->start_time || !ident) {
        proc_reset(p);
        return 0;
    }
    if (proc_watch(p) < 0) {
        proc_reset(p);
        return 0;
    }
    return 1;
}

void vm_lane_recover(lane_rt_t *l)
{
    if (!lane_state_is_active(l->state)) {
        if (l->qemu.pid || l->nbdkit.pid || l->netmed.pid) {
            proc_reset(&l->qemu);
            proc_reset(&l->nbdkit);
            proc_reset(&l->netmed);
            db_lane_update(l->d, l);
        }
        return;
    }
    int q = proc_adopt(&l->qemu);
    int n = proc_adopt(&l->nbdkit);
    int m = l->network ? proc_adopt(&l->netmed) : 0;
    util_log("lane %s: recovering (%s): qemu %s, nbdkit %s", l->name, lane_state_name(l->state),
             q ? "alive" : "gone", n ? "alive" : "gone");
    if (q && n && l->state != LANE_STOPPING) {
        db_event(l->d, l->id, "recover", "lanesd restarted; re-attached to qemu and nbdkit");
        if (l->network && !m)
            net_netmed_exited(l); /* restart it: the lane is offline meanwhile */
        if (l->state == LANE_BOOTING) {
            l->boot_started_ms = util_now_ms();
            uv_timer_start(&l->timer, on_boot_deadline, l->d->boot_timeout_ms, 0);
        }
        lane_agent_connect(l);
        return;
    }
    if (q && n && l->state == LANE_STOPPING) {
        l->stop_phase = 2;
        proc_signal(&l->qemu, SIGTERM);
        uv_timer_start(&l->timer, on_stop_deadline, KILL_GRACE_MS, 0);
        return;
    }
    l->teardown = 1;
    if (l->state == LANE_STOPPING) {
        l->teardown_ev = LANE_EV_EXITED;
    } else {
        l->teardown_ev = LANE_EV_FAIL;
        snprintf(l->teardown_reason, sizeof(l->teardown_reason),
                 "lanesd restarted and found %s no longer running", !q ? "qemu" : "nbdkit");
    }
    lane_teardown_step(l);
}

/* ---- TTL and idle auto-stop ----------------------------------------------------------------- */

void vm_lane_touch(lane_rt_t *l)
{
    l->last_activity_ms = util_now_ms();
}

/* Pick up the first integrity report the lane's nbdkit wrote (status= of
 * the plugin: one JSON line per failure): mark the lane degraded, persist
 * it and write an "integrity" event.  Degraded is sticky: the file stays,
 * later lines are ignored. */
static void lane_check_store_status(lane_rt_t *l)
{
    if (l->degraded || !l->dir[0])
        return;
    char path[600];
    snprintf(path, sizeof(path), "%s/store-status", l->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char line[2048];
    ssize_t n;
    do {
        n = read(fd, line, sizeof(line) - 1);
    } while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return;
    line[n] = 0;
    char *nl = strchr(line, '\n');
    if (!nl)
        return; /* still being written */
    *nl = 0;
    json_object *o = json_tokener_parse(line), *e = NULL;
    const char *why = o && json_object_object_get_ex(o, "error", &e) ? json_object_get_string(e) : NULL;
    l->degraded = 1;
    snprintf(l->degraded_reason, sizeof(l->degraded_reason), "store I/O error: %s", why ? why : line);
    json_object_put(o);
    util_log("lane %s: degraded: %s", l->name, l->degraded_reason);
    db_lane_update(l->d, l);
    db_event(l->d, l->id, "integrity", l->degraded_reason);
}

void vm_housekeeping(lanesd_t *d)
{
    int64_t now_ms = util_now_ms();
    for (lane_rt_t *l = d->lanes; l; l = l->next)
        lane_check_store_status(l);
    for (lane_rt_t *l = d->lanes; l; l = l->next) {
        if (l->state != LANE_RUNNING || l->teardown || l->freeing)
            continue;
        if (l->ttl_s > 0 && now_ms - l->booted_at * 1000 >= (int64_t)l->ttl_s * 1000) {
            snprintf(l->stop_reason, sizeof(l->stop_reason), "stopped automatically: ttl of %d s reached", l->ttl_s);
        } else if (l->idle_timeout_s > 0 && !l->sessions && !l->transfers &&
                   now_ms - l->last_activity_ms >= (int64_t)l->idle_timeout_s * 1000) {
            snprintf(l->stop_reason, sizeof(l->stop_reason), "stopped automatically: idle for %d s",
                     l->idle_timeout_s);
        } else {
            continue;
        }
        util_log("lane %s: %s", l->name, l->stop_reason);
        db_event(d, l->id, "autostop", l->stop_reason);
        vm_lane_stop(l, 10000);
    }
}
