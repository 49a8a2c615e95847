/* cmd_audit.c — lanectl audit LANE [--json|--jsonl] [--after ID] [--limit N]
 *                  [--kind K] [--decision D] [--host GLOB] [--since T] [--until T]
 * → GET /v1/lanes/{name}/audit: every network decision netmed made for the
 * lane (connections, DNS answers, intercepted HTTP requests with the secret
 * names used — never values), filtered server-side. --jsonl streams the
 * NDJSON export as it comes. */
#include <json-c/json.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lanectl.h"
#include "table.h"

static const char usage[] =
    "usage: lanectl audit LANE [--json|--jsonl] [--after ID] [--limit N] [--kind K] [--decision D]\n"
    "                     [--host GLOB] [--since T] [--until T]\n"
    "  --kind K        conn, dns, http, policy, start, stop, ...\n"
    "  --decision D    allow or deny\n"
    "  --host GLOB     host name, '*' matching any run of characters (*.example.com)\n"
    "  --since/--until T   a duration ago (30s, 10m, 2h, 1d) or unix milliseconds\n"
    "  --jsonl         stream one JSON entry per line (export)\n";

/* T as unix ms: "<n>s|m|h|d" counts back from now, plain digits are ms. */
static int parse_when(const char *t, long long *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(t, &end, 10);
    if (!isdigit((unsigned char)t[0]) || errno || n < 0)
        return -1;
    if (!*end) {
        *out = n;
        return 0;
    }
    long long unit = 0;
    if (!strcmp(end, "s"))
        unit = 1000;
    else if (!strcmp(end, "m"))
        unit = 60 * 1000;
    else if (!strcmp(end, "h"))
        unit = 3600 * 1000;
    else if (!strcmp(end, "d"))
        unit = 86400 * 1000;
    if (!unit || n > 100LL * 365 * 86400)
        return -1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    *out = now - n * unit;
    return *out < 0 ? -1 : 0;
}

static int print_line(json_object *line, void *ud)
{
    (void)ud;
    printf("%s\n", json_object_to_json_string_ext(line, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    return 0;
}

static const char *field(json_object *o, const char *k, char *buf, size_t len)
{
    json_object *v;
    if (!json_object_object_get_ex(o, k, &v) || json_object_is_type(v, json_type_null))
        return "-";
    if (json_object_is_type(v, json_type_array)) {
        buf[0] = '\0';
        for (size_t i = 0; i < json_object_array_length(v); i++)
            snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", i ? "," : "",
                     json_object_get_string(json_object_array_get_idx(v, i)));
        return buf[0] ? buf : "-";
    }
    snprintf(buf, len, "%s", json_object_get_string(v));
    return buf;
}

int cmd_audit(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {LANECTL_COMMON_OPTS,
                                         {"json", no_argument, NULL, 'j'},
                                         {"after", required_argument, NULL, 'a'},
                                         {"limit", required_argument, NULL, 'n'},
                                         {"jsonl", no_argument, NULL, 'J'},
                                         {"kind", required_argument, NULL, 'k'},
                                         {"decision", required_argument, NULL, 'd'},
                                         {"host", required_argument, NULL, 'H'},
                                         {"since", required_argument, NULL, 's'},
                                         {"until", required_argument, NULL, 'u'},
                                         {NULL, 0, NULL, 0}};
    int json = 0, jsonl = 0, opt;
    long after = 0, limit = 1000;
    long long since = -1, until = -1;
    const char *kind = NULL, *decision = NULL, *host_glob = NULL;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'h': fputs(usage, stdout); return EXIT_OK;
        case 'j': json = 1; break;
        case 'a': after = strtol(optarg, NULL, 10); break;
        case 'n': limit = strtol(optarg, NULL, 10); break;
        case 'J': jsonl = 1; break;
        case 'k': kind = optarg; break;
        case 'd': decision = optarg; break;
        case 'H': host_glob = optarg; break;
        case 's':
        case 'u':
            if (parse_when(optarg, opt == 's' ? &since : &until) < 0)
                return lanectl_usage_error(usage, "audit: --%s '%s' is neither a duration (10m) nor unix ms",
                                           opt == 's' ? "since" : "until", optarg);
            break;
        default:
            if (!lanectl_common_opt(ctx, opt, optarg))
                return lanectl_usage_error(usage, "audit: unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1 || !lanectl_valid_name(argv[optind]))
        return lanectl_usage_error(usage, "audit: expected one valid lane NAME");
    if (limit <= 0 || after < 0)
        return lanectl_usage_error(usage, "audit: --limit must be positive and --after non-negative");
    char suffix[1024];
    int n = snprintf(suffix, sizeof(suffix), "audit?after=%ld&limit=%ld%s", after, limit, jsonl ? "&format=jsonl" : "");
    const char *keys[] = {"kind", "decision", "host"}, *vals[] = {kind, decision, host_glob};
    for (size_t i = 0; i < 3; i++) {
        if (!vals[i])
            continue;
        /* Values are validated by lanesd; escape the few that break a URL. */
        n += snprintf(suffix + n, sizeof(suffix) - (size_t)n, "&%s=", keys[i]);
        for (const char *c = vals[i]; *c && (size_t)n < sizeof(suffix) - 4; c++)
            n += isalnum((unsigned char)*c) || strchr(".-_*:", *c)
                     ? snprintf(suffix + n, sizeof(suffix) - (size_t)n, "%c", *c)
                     : snprintf(suffix + n, sizeof(suffix) - (size_t)n, "%%%02X", (unsigned char)*c);
    }
    if (since >= 0)
        n += snprintf(suffix + n, sizeof(suffix) - (size_t)n, "&since=%lld", since);
    if (until >= 0)
        snprintf(suffix + n, sizeof(suffix) - (size_t)n, "&until=%lld", until);
    char *path = client_lane_path(argv[optind], suffix);
    if (jsonl) {
        int sr = client_stream(ctx, "GET", path, NULL, print_line, NULL);
        free(path);
        return sr < 0 ? EXIT_ERROR : EXIT_OK;
    }
    json_object *out = NULL;
    int r = client_call(ctx, "GET", path, NULL, &out, NULL);
    free(path);
    if (r < 0)
        return EXIT_ERROR;
    json_object *arr = NULL;
    json_object_object_get_ex(out, "entries", &arr);
    if (json) {
        printf("%s\n", json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(out);
        return EXIT_OK;
    }
    static const char *const hdr[] = {"ID", "TIME", "EVENT", "DECISION", "HOST", "PORT", "DETAIL"};
    table_t t;
    table_init(&t, 7, hdr);
    for (size_t i = 0; arr && i < json_object_array_length(arr); i++) {
        json_object *e = json_object_array_get_idx(arr, i);
        char id[32], ts[64], ev[32], dec[32], host[256], port[16], detail[512], tmp[256];
        field(e, "id", id, sizeof(id));
        field(e, "ts", ts, sizeof(ts));
        field(e, "ev", ev, sizeof(ev));
        field(e, "decision", dec, sizeof(dec));
        field(e, "host", host, sizeof(host));
        if (!strcmp(host, "-"))
            field(e, "name", host, sizeof(host));
        field(e, "port", port, sizeof(port));
        detail[0] = '\0';
        if (!strcmp(ev, "http"))
            snprintf(detail, sizeof(detail), "%s %s -> %s%s%s", field(e, "method", tmp, sizeof(tmp)),
                     field(e, "path", tmp + 64, sizeof(tmp) - 64), field(e, "status", tmp + 192, 64),
                     strcmp(field(e, "secrets", tmp, sizeof(tmp)), "-") ? " secrets:" : "",
                     strcmp(tmp, "-") ? tmp : "");
        else
            snprintf(detail, sizeof(detail), "%s", field(e, "reason", tmp, sizeof(tmp)));
        const char *row[] = {id, ts, ev, dec, host, port, detail};
        table_add_row(&t, row);
    }
    table_print(&t, stdout);
    table_free(&t);
    json_object_put(out);
    return EXIT_OK;
}
