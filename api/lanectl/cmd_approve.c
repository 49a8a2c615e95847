/* cmd_approve.c — human approval of a lane's "ask" connections:
 *   lanectl approvals LANE [--json]          → GET  /v1/lanes/{name}/approvals
 *   lanectl approve LANE ID [--remember]     → POST /v1/lanes/{name}/approvals/{id} allow
 *   lanectl deny LANE ID [--remember]        → POST /v1/lanes/{name}/approvals/{id} deny
 * --remember keeps the decision as an allow/deny rule for that host (or
 * address) and port in the lane's policy. Pending approvals are announced on
 * `lanectl events` (kind approval.pending). */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "lanectl.h"
#include "table.h"

/* entry points, listed in main.c */
int cmd_approvals(lanectl_t *ctx, int argc, char **argv);
int cmd_approve(lanectl_t *ctx, int argc, char **argv);
int cmd_deny(lanectl_t *ctx, int argc, char **argv);

static const char usage_list[] = "usage: lanectl approvals LANE [--json]\n"
                                 "  connections of LANE waiting for a human (policy rules with \"action\": \"ask\")\n";
static const char usage_decide[] = "usage: lanectl approve LANE ID [--remember] [--json]\n"
                                   "       lanectl deny LANE ID [--remember] [--json]\n"
                                   "  --remember   add an allow (deny) rule for that host and port to the lane's policy\n";

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cmd_approvals(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {LANECTL_COMMON_OPTS, {"json", no_argument, NULL, 'j'}, {NULL, 0, NULL, 0}};
    int json = 0, opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (opt == 'h') {
            fputs(usage_list, stdout);
            return EXIT_OK;
        }
        if (opt == 'j')
            json = 1;
        else if (!lanectl_common_opt(ctx, opt, optarg))
            return lanectl_usage_error(usage_list, "approvals: unknown option '%s'", argv[optind - 1]);
    }
    if (argc - optind != 1)
        return lanectl_usage_error(usage_list, "approvals: expected LANE");
    const char *lane = argv[optind];
    if (!lanectl_valid_name(lane))
        return lanectl_usage_error(usage_list, "approvals: invalid lane name '%s'", lane);
    char *path = client_lane_path(lane, "approvals");
    json_object *out = NULL, *list = NULL;
    int r = client_call(ctx, "GET", path, NULL, &out, NULL);
    free(path);
    if (r < 0)
        return EXIT_ERROR;
    if (json) {
        printf("%s\n", json_object_to_json_string_ext(out, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(out);
        return EXIT_OK;
    }
    if (!json_object_object_get_ex(out, "approvals", &list) || !json_object_is_type(list, json_type_array)) {
        lanectl_err("unexpected reply from lanesd (no approvals list)");
        json_object_put(out);
        return EXIT_ERROR;
    }
    static const char *const hdr[] = {"ID", "HOST", "ADDRESS", "PORT", "RULE", "WAITING", "DENIED IN"};
    table_t t;
    table_init(&t, 7, hdr);
    long long now = now_ms();
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *a = json_object_array_get_idx(list, i), *v;
        char port[8], rule[12], waiting[24], left[24];
        long long created = json_object_object_get_ex(a, "created_ms", &v) ? json_object_get_int64(v) : now;
        int timeout = json_object_object_get_ex(a, "timeout_s", &v) ? json_object_get_int(v) : 0;
        long long w = (now - created) / 1000;
        snprintf(port, sizeof(port), "%d", json_object_object_get_ex(a, "port", &v) ? json_object_get_int(v) : 0);
        snprintf(rule, sizeof(rule), "%d", json_object_object_get_ex(a, "rule", &v) ? json_object_get_int(v) : -1);
        snprintf(waiting, sizeof(waiting), "%llds", w < 0 ? 0 : w);
        snprintf(left, sizeof(left), "%llds", timeout - w < 0 ? 0 : timeout - w);
        const char *cells[] = {lanectl_jstr(a, "id"), lanectl_jstr(a, "host"), lanectl_jstr(a, "addr"), port, rule,
                               waiting, left};
        table_add_row(&t, cells);
    }
    if (json_object_array_length(list) == 0)
        printf("no connection of lane %s is waiting for approval\n", lane);
    else
        table_print(&t, stdout);
    table_free(&t);
    json_object_put(out);
    return EXIT_OK;
}

static int decide(lanectl_t *ctx, int argc, char **argv, int allow)
{
    const char *verb = allow ? "approve" : "deny";
    static const struct option opts[] = {LANECTL_COMMON_OPTS,
                                         {"remember", no_argument, NULL, 'r'},
                                         {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    int remember = 0, json = 0, opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (opt == 'h') {
            fputs(usage_decide, stdout);
            return EXIT_OK;
        }
        if (opt == 'r')
            remember = 1;
        else if (opt == 'j')
            json = 1;
        else if (!lanectl_common_opt(ctx, opt, optarg))
            return lanectl_usage_error(usage_decide, "%s: unknown option '%s'", verb, argv[optind - 1]);
    }
    if (argc - optind != 2)
        return lanectl_usage_error(usage_decide, "%s: expected LANE and an approval ID", verb);
    const char *lane = argv[optind], *id = argv[optind + 1];
    if (!lanectl_valid_name(lane))
        return lanectl_usage_error(usage_decide, "%s: invalid lane name '%s'", verb, lane);
    if (!*id || strlen(id) > 32 || strspn(id, "0123456789abcdef") != strlen(id))
        return lanectl_usage_error(usage_decide, "%s: '%s' is not an approval id (see 'lanectl approvals %s')", verb,
                                   id, lane);
    char suffix[64];
    snprintf(suffix, sizeof(suffix), "approvals/%s", id);
    char *path = client_lane_path(lane, suffix);
    json_object *body = json_object_new_object(), *out = NULL;
    json_object_object_add(body, "decision", json_object_new_string(allow ? "allow" : "deny"));
    json_object_object_add(body, "remember", json_object_new_boolean(remember));
    int r = client_call(ctx, "POST", path, body, &out, NULL);
    free(path);
    json_object_put(body);
    if (r < 0)
        return EXIT_ERROR;
    if (json) {
        printf("%s\n", json_object_to_json_string_ext(out, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    } else {
        json_object *a = NULL, *v;
        json_object_object_get_ex(out, "approval", &a);
        const char *host = a ? lanectl_jstr(a, "host") : NULL, *addr = a ? lanectl_jstr(a, "addr") : NULL;
        int port = a && json_object_object_get_ex(a, "port", &v) ? json_object_get_int(v) : 0;
        printf("%s %s:%d (%s)%s\n", allow ? "allowed" : "denied", host ? host : addr ? addr : "?", port, id,
               remember ? "; remembered in the lane's policy" : "");
    }
    json_object_put(out);
    return EXIT_OK;
}

int cmd_approve(lanectl_t *ctx, int argc, char **argv)
{
    return decide(ctx, argc, argv, 1);
}

int cmd_deny(lanectl_t *ctx, int argc, char **argv)
{
    return decide(ctx, argc, argv, 0);
}
