/* cmd_exec.c — lanectl exec [-i] [-t] [-e K=V]... [-w DIR] [-u USER]
 *                            [--timeout S] NAME [--] CMD [ARGS...]
 *
 *   POST /v1/lanes/{name}/execs                 → {"id"}   (one exec session)
 *   GET  /v1/lanes/{name}/execs/{id}/output     NDJSON: base64 stdout/stderr
 *                                               frames, then {"exit"} or {"error"}
 *   POST /v1/lanes/{name}/execs/{id}/stdin      (-i) our stdin, chunked, EOF closes
 *   POST /v1/lanes/{name}/execs/{id}/resize     (-t) on SIGWINCH
 *   POST /v1/lanes/{name}/execs/{id}/signal     SIGINT/SIGTERM/SIGHUP forwarded
 *
 * Output and stdin run concurrently as two transfers on one curl multi
 * handle. Our stdin is never made non-blocking (it is shared with the
 * shell): the read callback pauses the upload when poll() says nothing is
 * readable, and the main loop unpauses it when stdin becomes readable.
 * Signals arrive through a signalfd, so no handler state is global.
 */
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include "client.h"
#include "codec.h"
#include "exec_result.h"
#include "lanectl.h"

static const char usage[] =
    "usage: lanectl exec [-i] [-t] [-e K=V]... [-w DIR] [-u USER] [--timeout S] NAME [--] CMD [ARGS...]\n"
    "  -i, --interactive   send our stdin to the command (EOF closes its stdin)\n"
    "  -t, --tty           run the command on a pseudo-terminal (raw local tty with -i)\n"
    "  -e, --env K=V       set an environment variable (repeatable)\n"
    "  -w, --workdir DIR   working directory in the lane\n"
    "  -u, --user USER     user to run as\n"
    "      --timeout S     kill the command after S seconds (exit status 124)\n";

void exec_opts_free(exec_opts_t *o)
{
    if (o->env)
        json_object_put(o->env);
    o->env = NULL;
}

int exec_parse_args(int argc, char **argv, lanectl_t *ctx, exec_opts_t *o)
{
    static const struct option opts[] = {
        {"interactive", no_argument, NULL, 'i'}, {"tty", no_argument, NULL, 't'},
        {"env", required_argument, NULL, 'e'},   {"workdir", required_argument, NULL, 'w'},
        {"user", required_argument, NULL, 'u'},  {"timeout", required_argument, NULL, 'T'},
        LANECTL_COMMON_OPTS,                     {NULL, 0, NULL, 0}};
    memset(o, 0, sizeof(*o));
    o->env = json_object_new_object();
    int opt;
    optind = 0;
    opterr = 0;
    /* '+': options end at NAME, so "exec NAME ls -la" needs no "--". */
    while ((opt = getopt_long(argc, argv, "+ite:w:u:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'i': o->interactive = true; break;
        case 't': o->tty = true; break;
        case 'w': o->cwd = optarg; break;
        case 'u': o->user = optarg; break;
        case 'e': {
            const char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg) {
                exec_opts_free(o);
                return lanectl_usage_error(usage, "exec: -e needs KEY=VALUE, not '%s'", optarg);
            }
            char *key = strndup(optarg, (size_t)(eq - optarg));
            json_object_object_add(o->env, key, json_object_new_string(eq + 1));
            free(key);
            break;
        }
        case 'T': {
            unsigned long long s;
            if (!lanectl_parse_uint(optarg, 10u * 365 * 86400, &s) || s == 0) {
                exec_opts_free(o);
                return lanectl_usage_error(usage, "exec: --timeout needs positive seconds, not '%s'", optarg);
            }
            o->timeout_ms = s * 1000;
            break;
        }
        case 'h':
            fputs(usage, stdout);
            exec_opts_free(o);
            return -1;
        default:
            if (lanectl_common_opt(ctx, opt, optarg))
                break;
            exec_opts_free(o);
            return lanectl_usage_error(usage, "exec: unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc && strcmp(argv[optind], "--") == 0)
        optind++; /* "exec -- NAME CMD" is odd but harmless */
    if (optind >= argc || !lanectl_valid_name(argv[optind])) {
        exec_opts_free(o);
        return lanectl_usage_error(usage, "exec: expected a valid lane NAME");
    }
    o->lane = argv[optind++];
    if (optind < argc && strcmp(argv[optind], "--") == 0)
        optind++;
    if (optind >= argc) {
        exec_opts_free(o);
        return lanectl_usage_error(usage, "exec: expected a command after the lane name");
    }
    o->argv = argv + optind;
    o->argc = argc - optind;
    return 0;
}

static json_object *exec_body(const exec_opts_t *o, int rows, int cols)
{
    json_object *b = json_object_new_object(), *av = json_object_new_array();
    for (int i = 0; i < o->argc; i++)
        json_object_array_add(av, json_object_new_string(o->argv[i]));
    json_object_object_add(b, "argv", av);
    json_object_object_add(b, "env", json_object_get(o->env));
    if (o->cwd)
        json_object_object_add(b, "cwd", json_object_new_string(o->cwd));
    if (o->user)
        json_object_object_add(b, "user", json_object_new_string(o->user));
    json_object_object_add(b, "tty", json_object_new_boolean(o->tty));
    if (o->tty && rows > 0 && cols > 0) {
        json_object_object_add(b, "rows", json_object_new_int(rows));
        json_object_object_add(b, "cols", json_object_new_int(cols));
    }
    json_object_object_add(b, "stdin", json_object_new_boolean(o->interactive));
    if (o->timeout_ms)
        json_object_object_add(b, "timeout_ms", json_object_new_int64((int64_t)o->timeout_ms));
    return b;
}

typedef struct {
    lanectl_t *ctx;
    char *base;             /* /v1/lanes/{name}/execs/{id} */
    ndjson_t nd;
    json_object *final;     /* {"exit":...} or {"error":...} */
    CURL *out_h;
    long out_status;
    char *err_body;         /* body of a non-2xx output response */
    size_t err_len;
    bool bad_stream;
    CURL *in_h;
    bool in_paused;
    bool in_eof;
} exec_run_t;

static void write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* our stdout went away; keep draining the stream */
        p += w;
        n -= (size_t)w;
    }
}

static int on_output_line(const char *line, size_t len, void *ud)
{
    exec_run_t *run = ud;
    json_tokener *tok = json_tokener_new_ex(16);
    json_object *o = tok ? json_tokener_parse_ex(tok, line, (int)len) : NULL;
    if (tok)
        json_tokener_free(tok);
    json_object *v;
    if (!o) {
        run->bad_stream = true;
        return -1;
    }
    if (json_object_object_get_ex(o, "data", &v)) {
        const char *stream = lanectl_jstr(o, "stream");
        const char *b64 = json_object_get_string(v);
        size_t bl = strlen(b64);
        uint8_t *buf = malloc(bl / 4 * 3 + 3);
        long n = buf ? b64_decode(b64, bl, buf) : -1;
        if (n > 0)
            write_all(stream && strcmp(stream, "stderr") == 0 ? STDERR_FILENO : STDOUT_FILENO, buf, (size_t)n);
        free(buf);
        if (n < 0)
            run->bad_stream = true;
    } else if (json_object_object_get_ex(o, "exit", &v) || json_object_object_get_ex(o, "error", &v)) {
        if (run->final)
            json_object_put(run->final);
        run->final = json_object_get(o);
    }
    json_object_put(o);
    return run->bad_stream ? -1 : 0;
}

static size_t on_output(char *p, size_t size, size_t n, void *ud)
{
    exec_run_t *run = ud;
    size_t len = size * n;
    if (!run->out_status)
        curl_easy_getinfo(run->out_h, CURLINFO_RESPONSE_CODE, &run->out_status);
    if (run->out_status < 200 || run->out_status > 299) {
        char *b = realloc(run->err_body, run->err_len + len + 1);
        if (!b || run->err_len > (1u << 20))
            return 0;
        memcpy(b + run->err_len, p, len);
        run->err_len += len;
        b[run->err_len] = '\0';
        run->err_body = b;
        return len;
    }
    return ndjson_feed(&run->nd, p, len, on_output_line, run) == 0 ? len : 0;
}

/* Upload callback: never blocks on our stdin (see file comment). */
static size_t on_stdin(char *buf, size_t size, size_t n, void *ud)
{
    exec_run_t *run = ud;
    struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
    if (poll(&pfd, 1, 0) <= 0) {
        run->in_paused = true;
        return CURL_READFUNC_PAUSE;
    }
    ssize_t r;
    do
        r = read(STDIN_FILENO, buf, size * n);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno == EAGAIN) {
        run->in_paused = true;
        return CURL_READFUNC_PAUSE;
    }
    if (r <= 0) {
        run->in_eof = true;
        return 0; /* end of body = EOF for the command */
    }
    return (size_t)r;
}

/* Small synchronous side request (resize, signal); errors are only printed. */
static void exec_side_call(exec_run_t *run, const char *what, json_object *body)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", run->base, what) >= 0)
        client_call(run->ctx, "POST", path, body, NULL, NULL);
    free(path);
    json_object_put(body);
}

static void exec_send_resize(exec_run_t *run)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) < 0 || !ws.ws_row)
        return;
    json_object *b = json_object_new_object();
    json_object_object_add(b, "rows", json_object_new_int(ws.ws_row));
    json_object_object_add(b, "cols", json_object_new_int(ws.ws_col));
    exec_side_call(run, "resize", b);
}

static CURL *exec_transfer(exec_run_t *run, const char *method, const char *what)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", run->base, what) < 0)
        return NULL;
    CURL *h = client_easy(run->ctx, method, path);
    free(path);
    return h;
}

/* Run the output (and stdin) transfers to the end; returns exit status. */
static int exec_stream(exec_run_t *run, bool interactive, bool tty, int sfd)
{
    CURLM *m = curl_multi_init();
    char out_err[CURL_ERROR_SIZE] = "", in_err[CURL_ERROR_SIZE] = "";
    struct curl_slist *in_hdrs = NULL;
    run->out_h = exec_transfer(run, "GET", "output");
    if (!m || !run->out_h) {
        lanectl_err("out of memory");
        return EXIT_EXEC_FAILED;
    }
    curl_easy_setopt(run->out_h, CURLOPT_WRITEFUNCTION, on_output);
    curl_easy_setopt(run->out_h, CURLOPT_WRITEDATA, run);
    curl_easy_setopt(run->out_h, CURLOPT_ERRORBUFFER, out_err);
    curl_multi_add_handle(m, run->out_h);
    if (interactive) {
        run->in_h = exec_transfer(run, "POST", "stdin");
        in_hdrs = curl_slist_append(NULL, "Expect:");
        in_hdrs = curl_slist_append(in_hdrs, "Content-Type: application/octet-stream");
        curl_easy_setopt(run->in_h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(run->in_h, CURLOPT_HTTPHEADER, in_hdrs);
        curl_easy_setopt(run->in_h, CURLOPT_READFUNCTION, on_stdin);
        curl_easy_setopt(run->in_h, CURLOPT_READDATA, run);
        curl_easy_setopt(run->in_h, CURLOPT_ERRORBUFFER, in_err);
        curl_multi_add_handle(m, run->in_h);
    }
    bool out_done = false;
    CURLcode out_rc = CURLE_OK;
    while (!out_done) {
        int running;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            if (msg->easy_handle == run->out_h) {
                out_done = true;
                out_rc = msg->data.result;
            } else if (msg->easy_handle == run->in_h) {
                long st = 0;
                curl_easy_getinfo(run->in_h, CURLINFO_RESPONSE_CODE, &st);
                if (msg->data.result != CURLE_OK && !run->final)
                    lanectl_err("sending stdin failed: %s", in_err[0] ? in_err : curl_easy_strerror(msg->data.result));
                curl_multi_remove_handle(m, run->in_h);
                curl_easy_cleanup(run->in_h);
                run->in_h = NULL;
            }
        }
        if (out_done)
            break;
        struct curl_waitfd extra[2];
        unsigned nextra = 0;
        extra[nextra++] = (struct curl_waitfd){.fd = sfd, .events = CURL_WAIT_POLLIN};
        if (run->in_h && run->in_paused && !run->in_eof)
            extra[nextra++] = (struct curl_waitfd){.fd = STDIN_FILENO, .events = CURL_WAIT_POLLIN};
        curl_multi_poll(m, extra, nextra, 1000, NULL);
        if (nextra == 2 && extra[1].revents) {
            run->in_paused = false;
            curl_easy_pause(run->in_h, CURLPAUSE_CONT);
        }
        if (extra[0].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                if (si.ssi_signo == SIGWINCH) {
                    if (tty)
                        exec_send_resize(run);
                } else {
                    json_object *b = json_object_new_object();
                    json_object_object_add(b, "signal", json_object_new_int((int)si.ssi_signo));
                    exec_side_call(run, "signal", b);
                }
            }
        }
    }
    int ret;
    if (out_rc != CURLE_OK && !run->final && !run->bad_stream) {
        client_report_transport(run->ctx, out_rc, out_err);
        ret = EXIT_EXEC_FAILED;
    } else if (run->out_status < 200 || run->out_status > 299) {
        client_report_api_error(run->out_status, run->err_body, run->err_len);
        ret = EXIT_EXEC_FAILED;
    } else {
        if (!run->final)
            ndjson_finish(&run->nd, on_output_line, run);
        if (run->bad_stream) {
            lanectl_err("lanesd sent a malformed exec output stream");
            ret = EXIT_EXEC_FAILED;
        } else if (!run->final) {
            lanectl_err("exec output ended without an exit status");
            ret = EXIT_EXEC_FAILED;
        } else {
            json_object *err;
            if (json_object_object_get_ex(run->final, "error", &err)) {
                const char *msg = lanectl_jstr(err, "message");
                lanectl_err("%s", msg ? msg : "exec failed");
            }
            ret = exec_result_exit_code(run->final);
        }
    }
    if (run->in_h) {
        curl_multi_remove_handle(m, run->in_h);
        curl_easy_cleanup(run->in_h);
    }
    curl_multi_remove_handle(m, run->out_h);
    curl_easy_cleanup(run->out_h);
    curl_multi_cleanup(m);
    curl_slist_free_all(in_hdrs);
    return ret;
}

int cmd_exec(lanectl_t *ctx, int argc, char **argv)
{
    exec_opts_t o;
    int r = exec_parse_args(argc, argv, ctx, &o);
    if (r)
        return r < 0 ? EXIT_OK : r;
    int rows = 0, cols = 0;
    struct winsize ws;
    if (o.tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
        rows = ws.ws_row;
        cols = ws.ws_col;
    }
    json_object *body = exec_body(&o, rows, cols), *created = NULL, *err = NULL;
    char *path = client_lane_path(o.lane, "execs");
    r = client_call_full(ctx, "POST", path, body, &created, NULL, &err);
    free(path);
    json_object_put(body);
    if (r < 0) {
        int code = exec_result_exit_code(err);
        if (err)
            json_object_put(err);
        exec_opts_free(&o);
        return code;
    }
    const char *id = lanectl_jstr(created, "id");
    exec_run_t run = {.ctx = ctx};
    char *esc = id ? url_escape(id) : NULL;
    char *lane_base = client_lane_path(o.lane, "execs");
    if (!esc || !lane_base || asprintf(&run.base, "%s/%s", lane_base, esc) < 0) {
        lanectl_err("lanesd did not return an exec id");
        free(esc);
        free(lane_base);
        json_object_put(created);
        exec_opts_free(&o);
        return EXIT_EXEC_FAILED;
    }
    free(esc);
    free(lane_base);
    json_object_put(created);

    /* Signals become events on a signalfd for the loop. */
    sigset_t mask, old;
    sigemptyset(&mask);
    sigaddset(&mask, SIGWINCH);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, &old);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

    struct termios saved;
    bool raw = o.tty && o.interactive && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
    if (raw) {
        struct termios t = saved;
        cfmakeraw(&t);
        tcsetattr(STDIN_FILENO, TCSANOW, &t);
    }
    int ret = exec_stream(&run, o.interactive, o.tty, sfd);
    if (raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    if (sfd >= 0)
        close(sfd);
    sigprocmask(SIG_SETMASK, &old, NULL);

    if (run.final)
        json_object_put(run.final);
    ndjson_free(&run.nd);
    free(run.err_body);
    free(run.base);
    exec_opts_free(&o);
    return ret;
}
