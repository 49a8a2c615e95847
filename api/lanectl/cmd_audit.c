/* cmd_audit.c — lanectl audit LANE [--json] [--after ID] [--limit N]
 * → GET /v1/lanes/{name}/audit: every network decision netmed made for the
 * lane (connections, DNS answers, intercepted HTTP requests with the secret
 * names used — never values). */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lanectl.h"
#include "table.h"

static const char usage[] = "usage: lanectl audit LANE [--json] [--after ID] [--limit N]\n";

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
                                         {NULL, 0, NULL, 0}};
    int json = 0, opt;
    long after = 0, limit = 1000;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'h': fputs(usage, stdout); return EXIT_OK;
        case 'j': json = 1; break;
        case 'a': after = strtol(optarg, NULL, 10); break;
        case 'n': limit = strtol(optarg, NULL, 10); break;
        default:
            if (!lanectl_common_opt(ctx, opt, optarg))
                return lanectl_usage_error(usage, "audit: unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1 || !lanectl_valid_name(argv[optind]))
        return lanectl_usage_error(usage, "audit: expected one valid lane NAME");
    if (limit <= 0 || after < 0)
        return lanectl_usage_error(usage, "audit: --limit must be positive and --after non-negative");
    char suffix[96];
    snprintf(suffix, sizeof(suffix), "audit?after=%ld&limit=%ld", after, limit);
    char *path = client_lane_path(argv[optind], suffix);
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
