/* cmd_fork.c — lanectl fork LANE[@SNAP] NEW → POST /v1/lanes/{lane}/fork
 * {"name": NEW, "snapshot": SNAP}.  Without @SNAP lanesd snapshots the
 * current state first (as "fork-NEW").  The new lane shares every chunk. */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lanectl.h"

int cmd_fork(lanectl_t *ctx, int argc, char **argv);

static const char usage[] = "usage: lanectl fork LANE[@SNAPSHOT] NEW\n"
                            "  new lane NEW from LANE's snapshot, or from its current state\n";

int cmd_fork(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {LANECTL_COMMON_OPTS, {NULL, 0, NULL, 0}};
    int opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (opt == 'h') {
            fputs(usage, stdout);
            return EXIT_OK;
        }
        if (!lanectl_common_opt(ctx, opt, optarg))
            return lanectl_usage_error(usage, "fork: unknown option '%s'", argv[optind - 1]);
    }
    if (argc - optind != 2)
        return lanectl_usage_error(usage, "fork: expected LANE[@SNAPSHOT] and NEW");
    char src[128];
    snprintf(src, sizeof(src), "%s", argv[optind]);
    const char *newname = argv[optind + 1];
    char *at = strchr(src, '@');
    const char *snap = NULL;
    if (at) {
        *at = '\0';
        snap = at + 1;
        if (!snap[0])
            return lanectl_usage_error(usage, "fork: empty snapshot name");
    }
    if (!lanectl_valid_name(src) || !lanectl_valid_name(newname))
        return lanectl_usage_error(usage, "fork: invalid lane name");
    json_object *body = json_object_new_object(), *resp = NULL;
    json_object_object_add(body, "name", json_object_new_string(newname));
    if (snap)
        json_object_object_add(body, "snapshot", json_object_new_string(snap));
    char *path = client_lane_path(src, "fork");
    int ret = client_call(ctx, "POST", path, body, &resp, NULL) < 0 ? EXIT_ERROR : EXIT_OK;
    if (ret == EXIT_OK)
        lanectl_print_lane_state(resp);
    free(path);
    json_object_put(body);
    json_object_put(resp);
    return ret;
}
