/* common.c — helpers every lanectl subcommand uses: socket resolution,
 * common options, error printing, argument validation. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "lanectl.h"

int lanectl_socket_path(const char *opt, const char *env_socket, const char *xdg_runtime_dir,
                        char *buf, size_t len)
{
    int n;
    if (opt && opt[0])
        n = snprintf(buf, len, "%s", opt);
    else if (env_socket && env_socket[0])
        n = snprintf(buf, len, "%s", env_socket);
    else if (xdg_runtime_dir && xdg_runtime_dir[0])
        n = snprintf(buf, len, "%s/lanes/lanesd.sock", xdg_runtime_dir);
    else
        n = snprintf(buf, len, "/run/lanes/lanesd.sock");
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

bool lanectl_common_opt(lanectl_t *ctx, int opt, const char *arg)
{
    if (opt != LANECTL_OPT_SOCKET)
        return false;
    snprintf(ctx->socket_path, sizeof(ctx->socket_path), "%s", arg);
    ctx->socket_set = true;
    return true;
}

void lanectl_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("lanectl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int lanectl_usage_error(const char *usage, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("lanectl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fputs(usage, stderr);
    return EXIT_USAGE;
}

bool lanectl_valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0);
        if (!ok)
            return false;
    }
    return true;
}

bool lanectl_parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

const char *lanectl_jstr(struct json_object *o, const char *key)
{
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !v)
        return NULL;
    return json_object_get_string(v);
}

void lanectl_print_lane_state(struct json_object *lane)
{
    const char *name = lanectl_jstr(lane, "name"), *state = lanectl_jstr(lane, "state");
    const char *reason = lanectl_jstr(lane, "reason");
    printf("%s: %s", name ? name : "?", state ? state : "?");
    if (reason && reason[0])
        printf(" (%s)", reason);
    printf("\n");
}
