/* cmd_logs.c — lanectl logs [-f] [--source console|qemu|nbdkit|netmed] NAME
 *
 *   GET /v1/lanes/{name}/logs?source=S[&follow=true]   text, streamed to stdout
 *
 * Without -f prints the log as it is now; with -f keeps printing new output
 * until the lane stops or lanectl is interrupted.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "codec.h"
#include "lanectl.h"
#include "xfer.h"

static const char usage[] =
    "usage: lanectl logs [-f] [--source SOURCE] NAME\n"
    "  -f, --follow      keep printing new output until the lane stops\n"
    "  --source SOURCE   console (default: the guest's serial console), qemu, nbdkit, netmed\n";

int cmd_logs(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"follow", no_argument, NULL, 'f'},
                                         {"source", required_argument, NULL, 's'},
                                         LANECTL_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    const char *source = "console";
    bool follow = false;
    int opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "hf", opts, NULL)) != -1) {
        switch (opt) {
        case 'h': fputs(usage, stdout); return EXIT_OK;
        case 'f': follow = true; break;
        case 's': source = optarg; break;
        default:
            if (!lanectl_common_opt(ctx, opt, optarg))
                return lanectl_usage_error(usage, "logs: unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return lanectl_usage_error(usage, "logs: expected one lane NAME");
    const char *name = argv[optind];
    if (!lanectl_valid_name(name))
        return lanectl_usage_error(usage, "logs: invalid lane name '%s'", name);
    char *es = url_escape(source), *suffix = NULL, *path = NULL;
    if (es && asprintf(&suffix, "logs?source=%s%s", es, follow ? "&follow=true" : "") >= 0)
        path = client_lane_path(name, suffix);
    free(es);
    free(suffix);
    if (!path) {
        lanectl_err("out of memory");
        return EXIT_ERROR;
    }
    int r = xfer_fd(ctx, "GET", path, -1, STDOUT_FILENO);
    free(path);
    return r < 0 ? EXIT_ERROR : EXIT_OK;
}
