/* cmd_stop.c — lanectl stop NAME [--timeout S] → POST /v1/lanes/{name}/stop */
#include <json-c/json.h>
#include <stdlib.h>

#include "client.h"
#include "lanectl.h"

static const char usage[] = "usage: lanectl stop NAME [--timeout SECONDS]\n"
                            "  --timeout S   seconds to wait for a clean shutdown before killing (default 10)\n";

int cmd_stop(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"timeout", required_argument, NULL, 't'}, LANECTL_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    json_object *body = json_object_new_object();
    int opt, ret = EXIT_ERROR;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        unsigned long long v;
        if (opt == 't') {
            if (!lanectl_parse_uint(optarg, 86400, &v)) {
                ret = lanectl_usage_error(usage, "stop: --timeout needs seconds, not '%s'", optarg);
                goto out;
            }
            json_object_object_add(body, "timeout_s", json_object_new_int64((int64_t)v));
        } else if (opt == 'h') {
            fputs(usage, stdout);
            ret = EXIT_OK;
            goto out;
        } else if (!lanectl_common_opt(ctx, opt, optarg)) {
            ret = lanectl_usage_error(usage, "stop: unknown option '%s'", argv[optind - 1]);
            goto out;
        }
    }
    if (optind != argc - 1 || !lanectl_valid_name(argv[optind])) {
        ret = lanectl_usage_error(usage, "stop: expected one valid lane NAME");
        goto out;
    }
    char *path = client_lane_path(argv[optind], "stop");
    json_object *lane = NULL;
    int r = client_call(ctx, "POST", path, body, &lane, NULL);
    free(path);
    if (r == 0) {
        lanectl_print_lane_state(lane);
        json_object_put(lane);
        ret = EXIT_OK;
    }
out:
    json_object_put(body);
    return ret;
}
