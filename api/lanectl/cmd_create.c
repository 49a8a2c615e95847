/* cmd_create.c — lanectl create NAME [--image I] [--cpus N] [--memory MiB] [--disk GiB] [--store S]
 * → POST /v1/lanes */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lanectl.h"

static const char usage[] =
    "usage: lanectl create NAME [--image IMAGE] [--cpus N] [--memory MiB] [--disk GiB]\n"
    "  --image IMAGE   base image (default: debian)\n"
    "  --cpus N        virtual CPUs (default: 1)\n"
    "  --memory MiB    memory in MiB (default: 512)\n"
    "  --disk GiB      root disk size in GiB (default: 4)\n"
    "  --store NAME    block store for the disk (default: local; see lanectl store ls)\n"
    "  --policy FILE   network policy JSON (docs/policy.md; default: deny everything)\n"
    "  --network none  no network interface at all (default: mediated by netmed)\n"
    "  --ttl S         stop the lane S seconds after each boot\n"
    "  --idle-timeout S  stop the lane after S seconds without API activity\n";

int create_parse_args(int argc, char **argv, lanectl_t *ctx, char **name_out, json_object **body_out)
{
    static const struct option opts[] = {
        {"image", required_argument, NULL, 'I'}, {"cpus", required_argument, NULL, 'c'},
        {"memory", required_argument, NULL, 'm'}, {"disk", required_argument, NULL, 'd'},
        {"store", required_argument, NULL, 'S'}, {"policy", required_argument, NULL, 'P'},
        {"network", required_argument, NULL, 'N'}, {"ttl", required_argument, NULL, 't'},
        {"idle-timeout", required_argument, NULL, 'i'}, LANECTL_COMMON_OPTS, {NULL, 0, NULL, 0}};
    json_object *body = json_object_new_object();
    int opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        unsigned long long v;
        const char *key = NULL;
        switch (opt) {
        case 'I':
            json_object_object_add(body, "image", json_object_new_string(optarg));
            continue;
        case 'S':
            json_object_object_add(body, "store", json_object_new_string(optarg));
            continue;
        case 'P': {
            json_object *policy = lanectl_read_json_file(optarg);
            if (!policy) {
                json_object_put(body);
                return EXIT_ERROR;
            }
            json_object_object_add(body, "policy", policy);
            continue;
        }
        case 'N':
            if (strcmp(optarg, "none") != 0 && strcmp(optarg, "mediated") != 0) {
                json_object_put(body);
                return lanectl_usage_error(usage, "create: --network is 'none' or 'mediated', not '%s'", optarg);
            }
            json_object_object_add(body, "network", json_object_new_string(optarg));
            continue;
        case 't': key = "ttl_s"; break;
        case 'i': key = "idle_timeout_s"; break;
        case 'c': key = "cpus"; break;
        case 'm': key = "memory_mib"; break;
        case 'd': key = "disk_gib"; break;
        case 'h':
            fputs(usage, stdout);
            json_object_put(body);
            return -1;
        default:
            if (lanectl_common_opt(ctx, opt, optarg))
                continue;
            json_object_put(body);
            return lanectl_usage_error(usage, "create: unknown or incomplete option '%s'", argv[optind - 1]);
        }
        if (!lanectl_parse_uint(optarg, 1u << 30, &v) || v == 0) {
            json_object_put(body);
            return lanectl_usage_error(usage, "create: --%s needs a positive integer, not '%s'",
                                       opt == 'c' ? "cpus" : opt == 'm' ? "memory" : opt == 't' ? "ttl" :
                                       opt == 'i' ? "idle-timeout" : "disk", optarg);
        }
        json_object_object_add(body, key, json_object_new_int64((int64_t)v));
    }
    if (optind != argc - 1) {
        json_object_put(body);
        return lanectl_usage_error(usage, "create: expected exactly one lane NAME");
    }
    if (!lanectl_valid_name(argv[optind])) {
        json_object_put(body);
        return lanectl_usage_error(usage, "create: invalid lane name '%s' (want [a-z0-9][a-z0-9-]{0,62})",
                                   argv[optind]);
    }
    json_object_object_add(body, "name", json_object_new_string(argv[optind]));
    *name_out = argv[optind];
    *body_out = body;
    return 0;
}

int cmd_create(lanectl_t *ctx, int argc, char **argv)
{
    char *name;
    json_object *body;
    int r = create_parse_args(argc, argv, ctx, &name, &body);
    if (r)
        return r < 0 ? EXIT_OK : r;
    json_object *lane = NULL;
    r = client_call(ctx, "POST", "/v1/lanes", body, &lane, NULL);
    json_object_put(body);
    if (r < 0)
        return EXIT_ERROR;
    lanectl_print_lane_state(lane);
    json_object_put(lane);
    return EXIT_OK;
}
