/* cmd_shell.c — lanectl shell [-u USER] [-w DIR] [--shell PATH] NAME
 *               lanectl shell --session S [--takeover] NAME
 *               lanectl shell --attach ID NAME
 *               lanectl shell ls NAME [--json] | lanectl shell kill NAME S
 *
 *   GET /v1/lanes/{name}/shell?rows&cols&term...   WebSocket: a PTY shell
 *   GET /v1/lanes/{name}/shell?session=S...        WebSocket: a named session
 *   GET /v1/lanes/{name}/execs/{id}/attach          WebSocket: an exec session
 *   GET /v1/lanes/{name}/sessions, DELETE .../sessions/{s}
 *
 * A named session outlives lanectl: leaving (the detach keys Ctrl-P Ctrl-Q
 * on a terminal, or losing the connection) keeps it running, and the next
 * `--session S` gets its recent output replayed. A Ctrl-P not followed by
 * Ctrl-Q is passed on (with the key after it), like docker attach. When
 * stdin is not a terminal, its end detaches from a session (after what was
 * read is sent) instead of closing the shell's stdin.
 *
 * Our terminal goes raw; its bytes are binary frames, the lane's output comes
 * back as binary frames; SIGWINCH sends a {"type":"resize"} control message.
 * The exit status is the shell's (same mapping as lanectl exec). Stdin that
 * is not a terminal is sent as is and its EOF closes the remote stdin.
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
#include "table.h"
#include "ws_client.h"

#define SHELL_OUT_HIGH (256u * 1024) /* stop reading stdin above this much queued */

static const char usage[] =
    "usage: lanectl shell [-u USER] [-w DIR] [--shell PATH] NAME\n"
    "       lanectl shell --session S [--takeover] [-u USER] [-w DIR] NAME\n"
    "       lanectl shell --attach ID NAME\n"
    "       lanectl shell ls NAME [--json]\n"
    "       lanectl shell kill NAME S\n"
    "  -u, --user USER     user to run the shell as\n"
    "  -w, --workdir DIR   working directory\n"
    "      --shell PATH    shell program (default /bin/sh, run with -l)\n"
    "  -s, --session S     attach to the named session S, creating it if needed;\n"
    "                      it keeps running after you leave (detach: Ctrl-P Ctrl-Q)\n"
    "      --takeover      detach the session's current client instead of failing\n"
    "      --attach ID     attach to a running exec session instead\n"
    "      --json          (ls) print the API's JSON instead of a table\n";

#define DETACH_KEY1 0x10 /* Ctrl-P */
#define DETACH_KEY2 0x11 /* Ctrl-Q */

typedef struct {
    json_object *final;  /* the exit or error control message */
    bool closed;
    int close_code;
    bool failed;
    bool detach_keys;    /* watch stdin for Ctrl-P Ctrl-Q */
    bool held_key1;      /* a Ctrl-P is held back, waiting for the next key */
    bool detached;       /* we left with the detach keys */
    bool taken_over;     /* another client took the session over */
    const char *session;
} shell_run_t;

static void write_fd_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EAGAIN) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            poll(&pfd, 1, 1000);
            continue;
        }
        if (k <= 0)
            return;
        p += k;
        n -= (size_t)k;
    }
}

static void on_message(int type, const uint8_t *data, size_t len, int code, void *ud)
{
    shell_run_t *run = ud;
    if (type == WSC_BINARY) {
        write_fd_all(STDOUT_FILENO, data, len);
        return;
    }
    if (type == WSC_CLOSE) {
        run->closed = true;
        run->close_code = code;
        return;
    }
    json_tokener *tok = json_tokener_new_ex(8);
    json_object *m = tok ? json_tokener_parse_ex(tok, (const char *)data, (int)len) : NULL;
    if (tok)
        json_tokener_free(tok);
    const char *t = m ? lanectl_jstr(m, "type") : NULL;
    if (t && !strcmp(t, "stderr")) {
        const char *b = lanectl_jstr(m, "data");
        size_t bl = b ? strlen(b) : 0;
        uint8_t *raw = malloc(bl / 4 * 3 + 3);
        long n = raw ? b64_decode(b ? b : "", bl, raw) : -1;
        if (n > 0)
            write_fd_all(STDERR_FILENO, raw, (size_t)n);
        free(raw);
    } else if (t && !strcmp(t, "detached")) {
        run->taken_over = true;
    } else if (t && !strcmp(t, "started") && run->session && isatty(STDERR_FILENO)) {
        json_object *c;
        bool created = json_object_object_get_ex(m, "created", &c) && json_object_get_boolean(c);
        fprintf(stderr, "[%s session '%s'; detach with Ctrl-P Ctrl-Q]\r\n", created ? "new" : "attached to",
                run->session);
    } else if (t && (!strcmp(t, "exit") || !strcmp(t, "error"))) {
        if (run->final)
            json_object_put(run->final);
        run->final = json_object_get(m);
        if (!strcmp(t, "error"))
            lanectl_err("%s", lanectl_jstr(m, "message") ? lanectl_jstr(m, "message") : "exec failed");
    }
    if (m)
        json_object_put(m);
}

static void send_resize(ws_client_t *ws)
{
    struct winsize w;
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &w) < 0 || !w.ws_row)
        return;
    char msg[96];
    int n = snprintf(msg, sizeof(msg), "{\"type\":\"resize\",\"rows\":%u,\"cols\":%u}", w.ws_row, w.ws_col);
    ws_client_send(ws, WSC_TEXT, msg, (size_t)n);
}

/* Forward typed bytes, minus the detach keys. Returns true when they were
 * typed (what came before them is sent). */
static bool forward_input(ws_client_t *ws, shell_run_t *run, const uint8_t *buf, size_t n)
{
    if (!run->detach_keys) {
        ws_client_send(ws, WSC_BINARY, buf, n);
        return false;
    }
    uint8_t out[16384 + 1];
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = buf[i];
        if (run->held_key1) {
            run->held_key1 = false;
            if (c == DETACH_KEY2) {
                if (o)
                    ws_client_send(ws, WSC_BINARY, out, o);
                return true;
            }
            out[o++] = DETACH_KEY1;
        }
        if (c == DETACH_KEY1)
            run->held_key1 = true;
        else
            out[o++] = c;
        if (o >= sizeof(out) - 1) {
            ws_client_send(ws, WSC_BINARY, out, o);
            o = 0;
        }
    }
    if (o)
        ws_client_send(ws, WSC_BINARY, out, o);
    return false;
}

/* The poll loop; returns when the WebSocket is finished. */
static void shell_loop(ws_client_t *ws, shell_run_t *run, int sfd)
{
    bool stdin_open = true;
    uint8_t buf[16384];
    for (;;) {
        int r = ws_client_read(ws, on_message, run);
        if (r != 0) {
            run->failed = r < 0;
            return;
        }
        struct pollfd p[3] = {
            {.fd = ws_client_fd(ws), .events = POLLIN | (ws_client_want_write(ws) ? POLLOUT : 0)},
            {.fd = stdin_open && ws_client_queued(ws) < SHELL_OUT_HIGH ? STDIN_FILENO : -1, .events = POLLIN},
            {.fd = sfd, .events = POLLIN},
        };
        if (poll(p, 3, -1) < 0 && errno != EINTR)
            return;
        if (p[0].revents & POLLOUT && ws_client_flush(ws) < 0) {
            run->failed = true;
            return;
        }
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
            if (n > 0) {
                if (forward_input(ws, run, buf, (size_t)n)) {
                    run->detached = true;
                    ws_client_send(ws, WSC_CLOSE, "\x03\xe8", 2);
                    ws_client_flush(ws);
                    return;
                }
            } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                stdin_open = false;
                if (run->session) {
                    /* a session outlives its input: what was typed is
                     * delivered, then we leave it running */
                    run->detached = true;
                    ws_client_send(ws, WSC_CLOSE, "\x03\xe8", 2);
                    for (int i = 0; i < 30 && ws_client_want_write(ws) && ws_client_flush(ws) == 0; i++) {
                        struct pollfd w = {.fd = ws_client_fd(ws), .events = POLLOUT};
                        poll(&w, 1, 1000);
                    }
                    return;
                }
                ws_client_send(ws, WSC_TEXT, "{\"type\":\"eof\"}", 14);
            }
        }
        if (p[2].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                if (si.ssi_signo == SIGWINCH) {
                    send_resize(ws);
                } else { /* SIGTERM/SIGHUP to lanectl: leave; a plain shell gets SIGHUP, a session stays */
                    run->detached = run->session != NULL;
                    ws_client_send(ws, WSC_CLOSE, "\x03\xe9", 2);
                    ws_client_flush(ws);
                    return;
                }
            }
        }
    }
}

static int sessions_table_print(json_object *resp)
{
    json_object *arr;
    if (!json_object_object_get_ex(resp, "sessions", &arr) || !json_object_is_type(arr, json_type_array)) {
        lanectl_err("unexpected answer from lanesd (no \"sessions\" array)");
        return EXIT_ERROR;
    }
    static const char *const head[] = {"NAME", "PID", "ATTACHED", "CREATED", "LAST ACTIVITY", "BUFFERED"};
    table_t t;
    if (table_init(&t, 6, head) < 0)
        return EXIT_ERROR;
    time_t now = time(NULL);
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        json_object *s = json_object_array_get_idx(arr, i), *v;
        char pid[24] = "-", created[24], active[32], buffered[32];
        if (json_object_object_get_ex(s, "pid", &v) && v)
            snprintf(pid, sizeof(pid), "%lld", (long long)json_object_get_int64(v));
        bool attached = json_object_object_get_ex(s, "attached", &v) && json_object_get_boolean(v);
        format_age(now, lanectl_jstr(s, "created_at"), created, sizeof(created));
        format_age(now, lanectl_jstr(s, "last_activity_at"), active, sizeof(active));
        if (strcmp(created, "-"))
            strcat(created, " ago");
        if (strcmp(active, "-"))
            strcat(active, " ago");
        format_size(json_object_object_get_ex(s, "buffered_bytes", &v) ? (uint64_t)json_object_get_int64(v) : 0,
                    buffered, sizeof(buffered));
        const char *row[] = {lanectl_jstr(s, "name"), pid, attached ? "yes" : "no", created, active, buffered};
        table_add_row(&t, row);
    }
    table_print(&t, stdout);
    table_free(&t);
    return EXIT_OK;
}

/* lanectl shell ls LANE [--json] | lanectl shell kill LANE SESSION */
static int shell_sessions_cmd(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, LANECTL_COMMON_OPTS, {NULL, 0, NULL, 0}};
    bool json = false, ls = !strcmp(argv[1], "ls");
    int opt;
    /* parse argv[1..] (options may follow the lane, as in other commands) */
    argc--;
    argv++;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'h': fputs(usage, stdout); return EXIT_OK;
        case 'j': json = true; break;
        default:
            if (!lanectl_common_opt(ctx, opt, optarg))
                return lanectl_usage_error(usage, "shell %s: unknown option '%s'", argv[0], argv[optind - 1]);
        }
    }
    int want = ls ? 1 : 2; /* argv[0] is the subcommand word */
    if (argc - optind != want || !lanectl_valid_name(argv[optind]))
        return lanectl_usage_error(usage, ls ? "shell ls: expected one lane NAME"
                                             : "shell kill: expected a lane NAME and a SESSION");
    const char *lane = argv[optind];
    if (ls) {
        char *path = client_lane_path(lane, "sessions");
        json_object *resp = NULL;
        int ret = EXIT_ERROR;
        if (path && client_call(ctx, "GET", path, NULL, &resp, NULL) == 0) {
            if (json) {
                printf("%s\n", json_object_to_json_string_ext(resp, JSON_C_TO_STRING_PRETTY |
                                                                        JSON_C_TO_STRING_NOSLASHESCAPE));
                ret = EXIT_OK;
            } else {
                ret = sessions_table_print(resp);
            }
        }
        json_object_put(resp);
        free(path);
        return ret;
    }
    char *esc = url_escape(argv[optind + 1]), *base = client_lane_path(lane, "sessions"), *path = NULL;
    if (esc && base && asprintf(&path, "%s/%s", base, esc) < 0)
        path = NULL;
    free(esc);
    free(base);
    if (!path) {
        lanectl_err("out of memory");
        return EXIT_ERROR;
    }
    int r = client_call(ctx, "DELETE", path, NULL, NULL, NULL);
    free(path);
    if (r < 0)
        return EXIT_ERROR;
    if (json)
        printf("{\"killed\":true}\n");
    return EXIT_OK;
}

int cmd_shell(lanectl_t *ctx, int argc, char **argv)
{
    /* "shell ls LANE", "shell kill LANE S"; a lane may be called ls or kill,
     * so these need their further argument to count as subcommands. */
    if (argc >= 3 && (!strcmp(argv[1], "ls") || !strcmp(argv[1], "kill")))
        return shell_sessions_cmd(ctx, argc, argv);

    static const struct option opts[] = {
        {"user", required_argument, NULL, 'u'},   {"workdir", required_argument, NULL, 'w'},
        {"shell", required_argument, NULL, 'S'},  {"attach", required_argument, NULL, 'A'},
        {"session", required_argument, NULL, 's'}, {"takeover", no_argument, NULL, 'T'},
        LANECTL_COMMON_OPTS,                      {NULL, 0, NULL, 0}};
    const char *user = NULL, *cwd = NULL, *shell = NULL, *attach = NULL, *session = NULL;
    bool takeover = false;
    int opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "+hu:w:s:", opts, NULL)) != -1) {
        switch (opt) {
        case 'h': fputs(usage, stdout); return EXIT_OK;
        case 's': session = optarg; break;
        case 'T': takeover = true; break;
        case 'u': user = optarg; break;
        case 'w': cwd = optarg; break;
        case 'S': shell = optarg; break;
        case 'A': attach = optarg; break;
        default:
            if (!lanectl_common_opt(ctx, opt, optarg))
                return lanectl_usage_error(usage, "shell: unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1 || !lanectl_valid_name(argv[optind]))
        return lanectl_usage_error(usage, "shell: expected one valid lane NAME");
    if (session && attach)
        return lanectl_usage_error(usage, "shell: --session and --attach exclude each other");
    if (takeover && !session)
        return lanectl_usage_error(usage, "shell: --takeover needs --session");
    const char *lane = argv[optind];

    bool tty = isatty(STDIN_FILENO);
    struct winsize w = {.ws_row = 24, .ws_col = 80};
    if (tty && (ioctl(STDIN_FILENO, TIOCGWINSZ, &w) < 0 || !w.ws_row)) {
        w.ws_row = 24;
        w.ws_col = 80;
    }
    char *path = NULL;
    if (attach) {
        char *esc = url_escape(attach), *base = client_lane_path(lane, "execs");
        if (esc && base && asprintf(&path, "%s/%s/attach", base, esc) < 0)
            path = NULL;
        free(esc);
        free(base);
    } else {
        const char *term = getenv("TERM");
        char *q = NULL, *eu = url_escape(user ? user : ""), *ew = url_escape(cwd ? cwd : ""),
             *es = url_escape(shell ? shell : ""), *et = url_escape(term && *term ? term : "xterm-256color"),
             *en = url_escape(session ? session : "");
        if (eu && ew && es && et && en &&
            asprintf(&q, "?rows=%u&cols=%u&term=%s%s%s%s%s%s%s%s%s%s", w.ws_row, w.ws_col, et,
                     user ? "&user=" : "", eu, cwd ? "&cwd=" : "", ew, shell ? "&shell=" : "", es,
                     session ? "&session=" : "", en, takeover ? "&takeover=1" : "") >= 0) {
            char *base = client_lane_path(lane, "shell");
            if (base && asprintf(&path, "%s%s", base, q) < 0)
                path = NULL;
            free(base);
        }
        free(q);
        free(eu);
        free(ew);
        free(es);
        free(et);
        free(en);
    }
    if (!path) {
        lanectl_err("out of memory");
        return EXIT_ERROR;
    }
    ws_client_t *ws = NULL;
    long status = 0;
    int r = ws_client_connect(ctx, path, &ws, &status);
    free(path);
    if (r < 0)
        return EXIT_ERROR;

    sigset_t mask, old;
    sigemptyset(&mask);
    sigaddset(&mask, SIGWINCH);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, &old);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

    struct termios saved;
    bool raw = tty && tcgetattr(STDIN_FILENO, &saved) == 0;
    if (raw) {
        struct termios t = saved;
        cfmakeraw(&t);
        tcsetattr(STDIN_FILENO, TCSANOW, &t);
    }
    if (attach && tty)
        send_resize(ws);
    shell_run_t run = {0};
    run.session = session;
    run.detach_keys = session && tty;
    shell_loop(ws, &run, sfd);
    if (raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    if (sfd >= 0)
        close(sfd);
    sigprocmask(SIG_SETMASK, &old, NULL);
    ws_client_free(ws);

    int ret;
    if (session && !run.final && (run.detached || run.taken_over)) {
        if (run.taken_over)
            lanectl_err("another client took session '%s' over; it keeps running", session);
        else if (isatty(STDERR_FILENO))
            fprintf(stderr, "[detached from session '%s'; reattach: %s shell --session %s %s]\n", session,
                    ctx->prog ? ctx->prog : "lanectl", session, lane);
        ret = EXIT_OK;
    } else if (run.final) {
        const char *t = lanectl_jstr(run.final, "type");
        json_object *wrap = json_object_new_object();
        if (t && !strcmp(t, "exit")) {
            json_object_object_del(run.final, "type");
            json_object_object_add(wrap, "exit", json_object_get(run.final));
        } else {
            json_object_object_add(wrap, "error", json_object_get(run.final));
        }
        ret = exec_result_exit_code(wrap);
        json_object_put(wrap);
        json_object_put(run.final);
    } else {
        if (!run.failed)
            lanectl_err("the shell connection ended without an exit status (close code %d)",
                        run.closed ? run.close_code : 1006);
        ret = EXIT_ERROR;
    }
    return ret;
}
