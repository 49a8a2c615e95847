/* lanectl.h — shared context and the subcommand entry points of lanectl.
 *
 * Each subcommand lives in its own cmd_<name>.c: it parses its arguments with
 * getopt_long and makes one or two API calls through client.h. Commands
 * return the process exit status (see EXIT_* and docs/lanectl.md) and print
 * their own errors as one line "lanectl: <message>" on stderr.
 */
#ifndef LANES_LANECTL_H
#define LANES_LANECTL_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

enum {
    EXIT_OK = 0,
    EXIT_ERROR = 1,      /* lanesd reported an error, or I/O / connection failure */
    EXIT_USAGE = 2,      /* bad command line */
    EXIT_EXEC_FAILED = 125, /* lanectl exec: could not run the command at all */
};

typedef struct {
    char socket_path[108];
    bool socket_set;     /* --socket given on the command line */
    const char *prog;
} lanectl_t;

/* Options every subcommand accepts ("--socket PATH", "--help"). */
#define LANECTL_OPT_SOCKET 0x1000
#define LANECTL_OPT_HELP 'h'
#define LANECTL_COMMON_OPTS                                                  \
    {"socket", required_argument, NULL, LANECTL_OPT_SOCKET},                 \
    {"help", no_argument, NULL, LANECTL_OPT_HELP}

/* Handle a common option; returns true if opt was one. */
bool lanectl_common_opt(lanectl_t *ctx, int opt, const char *arg);

/* Fill buf with the socket to use: option, else $LANES_SOCKET, else
 * $XDG_RUNTIME_DIR/lanes/lanesd.sock, else /run/lanes/lanesd.sock.
 * Returns 0 or -ENAMETOOLONG. */
int lanectl_socket_path(const char *opt, const char *env_socket, const char *xdg_runtime_dir,
                        char *buf, size_t len);

/* Print "lanectl: <fmt>" to stderr. */
void lanectl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print a usage error plus the command's usage text; returns EXIT_USAGE. */
int lanectl_usage_error(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Lane names: [a-z0-9][a-z0-9-]{0,62}. */
bool lanectl_valid_name(const char *name);
/* Parse a non-negative integer option; false on junk or overflow. */
bool lanectl_parse_uint(const char *s, unsigned long long max, unsigned long long *out);

/* String member of a JSON object, or NULL. */
struct json_object;
const char *lanectl_jstr(struct json_object *o, const char *key);
/* Read a JSON object from a file ("-" = stdin); prints the error, NULL on failure. */
struct json_object *lanectl_read_json_file(const char *path);
/* "NAME: STATE" (plus the reason when there is one) for a lane object. */
void lanectl_print_lane_state(struct json_object *lane);

/* Argument parsers, exposed for unit tests. Each returns 0 or EXIT_USAGE
 * (message printed) and builds the API request body. */
int create_parse_args(int argc, char **argv, lanectl_t *ctx, char **name, struct json_object **body);

typedef struct {
    const char *lane;
    char **argv;          /* the command: points into the caller's argv */
    int argc;
    bool interactive;     /* -i */
    bool tty;             /* -t */
    struct json_object *env; /* {"K":"V"} */
    const char *cwd, *user;
    unsigned long long timeout_ms; /* 0 = none */
} exec_opts_t;
int exec_parse_args(int argc, char **argv, lanectl_t *ctx, exec_opts_t *opts);
void exec_opts_free(exec_opts_t *opts);

/* "NAME:/path" → lane NAME, path "/path"; false for a local path. */
bool cp_parse_spec(const char *spec, char *lane, size_t lane_len, const char **path);

/* Tables of `ls` and `image ls` from the API's arrays; 0 or -1 if malformed. */
int lanes_table_print(struct json_object *lanes, long now, FILE *out);
int images_table_print(struct json_object *images, long now, FILE *out);

int cmd_create(lanectl_t *ctx, int argc, char **argv);
int cmd_boot(lanectl_t *ctx, int argc, char **argv);
int cmd_stop(lanectl_t *ctx, int argc, char **argv);
int cmd_rm(lanectl_t *ctx, int argc, char **argv);
int cmd_ls(lanectl_t *ctx, int argc, char **argv);
int cmd_inspect(lanectl_t *ctx, int argc, char **argv);
int cmd_exec(lanectl_t *ctx, int argc, char **argv);
int cmd_cp(lanectl_t *ctx, int argc, char **argv);
int cmd_image(lanectl_t *ctx, int argc, char **argv);
int cmd_version(lanectl_t *ctx, int argc, char **argv);
int cmd_policy(lanectl_t *ctx, int argc, char **argv);
int cmd_secret(lanectl_t *ctx, int argc, char **argv);
int cmd_audit(lanectl_t *ctx, int argc, char **argv);
int cmd_shell(lanectl_t *ctx, int argc, char **argv);
int cmd_events(lanectl_t *ctx, int argc, char **argv);
int cmd_logs(lanectl_t *ctx, int argc, char **argv);
int cmd_files(lanectl_t *ctx, int argc, char **argv);
int cmd_doctor(lanectl_t *ctx, int argc, char **argv);
int cmd_completion(lanectl_t *ctx, int argc, char **argv);
/* One human-readable line for an event object; -1 (message in out) for an
 * {"error"} line. Exposed for unit tests. */
struct json_object;
int events_format_line(struct json_object *ev, char *out, size_t len);

#endif
