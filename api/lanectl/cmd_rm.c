/* cmd_rm.c — lanectl rm NAME... [--force] → DELETE /v1/lanes/{name}[?force=true] */
#include <stdlib.h>

#include "client.h"
#include "lanectl.h"

static const char usage[] = "usage: lanectl rm [--force] NAME...\n"
                            "  -f, --force   delete even if the lane is running (it is killed)\n";

int cmd_rm(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"force", no_argument, NULL, 'f'}, LANECTL_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    bool force = false;
    int opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "fh", opts, NULL)) != -1) {
        if (opt == 'f')
            force = true;
        else if (opt == 'h') {
            fputs(usage, stdout);
            return EXIT_OK;
        } else if (!lanectl_common_opt(ctx, opt, optarg))
            return lanectl_usage_error(usage, "rm: unknown option '%s'", argv[optind - 1]);
    }
    if (optind >= argc)
        return lanectl_usage_error(usage, "rm: expected at least one lane NAME");
    int ret = EXIT_OK;
    for (int i = optind; i < argc; i++) {
        if (!lanectl_valid_name(argv[i])) {
            lanectl_err("rm: invalid lane name '%s'", argv[i]);
            ret = EXIT_ERROR;
            continue;
        }
        char *path = client_lane_path(argv[i], force ? "?force=true" : "");
        if (client_call(ctx, "DELETE", path, NULL, NULL, NULL) < 0)
            ret = EXIT_ERROR;
        else
            printf("%s\n", argv[i]);
        free(path);
    }
    return ret;
}
