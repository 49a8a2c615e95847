/* cmd_boot.c — lanectl boot NAME [--no-wait] → POST /v1/lanes/{name}/boot */
#include <json-c/json.h>
#include <stdlib.h>

#include "client.h"
#include "lanectl.h"

static const char usage[] = "usage: lanectl boot NAME [--no-wait]\n"
                            "  --no-wait   return once booting started instead of when running\n";

int cmd_boot(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"no-wait", no_argument, NULL, 'n'}, LANECTL_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    bool wait = true;
    int opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (opt == 'n')
            wait = false;
        else if (opt == 'h') {
            fputs(usage, stdout);
            return EXIT_OK;
        } else if (!lanectl_common_opt(ctx, opt, optarg))
            return lanectl_usage_error(usage, "boot: unknown option '%s'", argv[optind - 1]);
    }
    if (optind != argc - 1 || !lanectl_valid_name(argv[optind]))
        return lanectl_usage_error(usage, "boot: expected one valid lane NAME");
    char *path = client_lane_path(argv[optind], wait ? "boot" : "boot?wait=false");
    json_object *lane = NULL;
    int r = client_call(ctx, "POST", path, NULL, &lane, NULL);
    free(path);
    if (r < 0)
        return EXIT_ERROR;
    lanectl_print_lane_state(lane);
    json_object_put(lane);
    return EXIT_OK;
}
