/* cmd_events.c — lanectl events [--lane NAME] [--kind K[,K]] [--since ID] [--json]
 *
 *   GET /v1/events?lane&kind&since   NDJSON, long-lived
 *
 * Prints one line per event as it happens ("TIME  LANE  KIND  DETAIL"), or
 * the raw JSON lines with --json, until interrupted or lanesd ends the
 * stream. A final {"error"} line (lanesd dropped a client that fell behind)
 * is printed and makes the exit status 1.
 */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "codec.h"
#include "lanectl.h"

static const char usage[] =
    "usage: lanectl events [--lane NAME] [--kind KIND[,KIND]] [--since ID] [--json]\n"
    "  --lane NAME    only events of this lane\n"
    "  --kind KINDS   only these kinds (state, boot, create, rm, image, recover)\n"
    "  --since ID     first replay stored events after event ID (0: all)\n"
    "  --json         print the raw NDJSON lines\n";

typedef struct {
    bool json;
    bool failed;
} events_run_t;

int events_format_line(json_object *ev, char *out, size_t len)
{
    json_object *v;
    if (json_object_object_get_ex(ev, "error", &v)) {
        snprintf(out, len, "%s", lanectl_jstr(v, "message") ? lanectl_jstr(v, "message") : "stream error");
        return -1;
    }
    long long ms = json_object_object_get_ex(ev, "ts", &v) ? json_object_get_int64(v) : 0;
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char ts[32] = "-";
    if (gmtime_r(&t, &tm))
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    const char *lane = lanectl_jstr(ev, "lane"), *kind = lanectl_jstr(ev, "kind"),
               *detail = lanectl_jstr(ev, "detail");
    snprintf(out, len, "%s  %-16s %-8s %s", ts, lane ? lane : "-", kind ? kind : "?", detail ? detail : "");
    return 0;
}

static int on_event(json_object *ev, void *ud)
{
    events_run_t *run = ud;
    char line[1024];
    int r = events_format_line(ev, line, sizeof(line));
    if (r < 0) {
        lanectl_err("%s", line);
        run->failed = true;
        return 0;
    }
    if (run->json)
        printf("%s\n", json_object_to_json_string_ext(ev, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    else
        printf("%s\n", line);
    fflush(stdout);
    return 0;
}

int cmd_events(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"lane", required_argument, NULL, 'l'}, {"kind", required_argument, NULL, 'k'},
        {"since", required_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'},
        LANECTL_COMMON_OPTS,                    {NULL, 0, NULL, 0}};
    const char *lane = NULL, *kind = NULL;
    unsigned long long since = 0;
    bool have_since = false;
    events_run_t run = {0};
    int opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'h': fputs(usage, stdout); return EXIT_OK;
        case 'l': lane = optarg; break;
        case 'k': kind = optarg; break;
        case 's':
            if (!lanectl_parse_uint(optarg, (1ULL << 62), &since))
                return lanectl_usage_error(usage, "events: --since needs an event id");
            have_since = true;
            break;
        case 'j': run.json = true; break;
        default:
            if (!lanectl_common_opt(ctx, opt, optarg))
                return lanectl_usage_error(usage, "events: unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc)
        return lanectl_usage_error(usage, "events: unexpected argument '%s'", argv[optind]);
    if (lane && !lanectl_valid_name(lane))
        return lanectl_usage_error(usage, "events: invalid lane name '%s'", lane);
    char *el = url_escape(lane ? lane : ""), *ek = url_escape(kind ? kind : ""), *path = NULL;
    char q[600] = "";
    size_t ql = 0;
    if (have_since)
        ql += (size_t)snprintf(q + ql, sizeof(q) - ql, "&since=%llu", since);
    if (lane && el && ql < sizeof(q))
        ql += (size_t)snprintf(q + ql, sizeof(q) - ql, "&lane=%s", el);
    if (kind && ek && ql < sizeof(q))
        ql += (size_t)snprintf(q + ql, sizeof(q) - ql, "&kind=%s", ek);
    int n = el && ek && ql < sizeof(q) ? asprintf(&path, "/v1/events%s%s", ql ? "?" : "", ql ? q + 1 : "") : -1;
    free(el);
    free(ek);
    if (n < 0) {
        lanectl_err("bad --lane/--kind or out of memory");
        return EXIT_ERROR;
    }
    int r = client_stream(ctx, "GET", path, NULL, on_event, &run);
    free(path);
    return r < 0 || run.failed ? EXIT_ERROR : EXIT_OK;
}
