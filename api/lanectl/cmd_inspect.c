/* cmd_inspect.c — lanectl inspect NAME → GET /v1/lanes/{name}, pretty JSON. */
#include <json-c/json.h>
#include <stdlib.h>

#include "client.h"
#include "lanectl.h"

static const char usage[] = "usage: lanectl inspect NAME\n";

int cmd_inspect(lanectl_t *ctx, int argc, char **argv)
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
            return lanectl_usage_error(usage, "inspect: unknown option '%s'", argv[optind - 1]);
    }
    if (optind != argc - 1 || !lanectl_valid_name(argv[optind]))
        return lanectl_usage_error(usage, "inspect: expected one valid lane NAME");
    char *path = client_lane_path(argv[optind], NULL);
    json_object *lane = NULL;
    int r = client_call(ctx, "GET", path, NULL, &lane, NULL);
    free(path);
    if (r < 0)
        return EXIT_ERROR;
    printf("%s\n", json_object_to_json_string_ext(lane, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(lane);
    return EXIT_OK;
}
