/* cmd_version.c — lanectl version → GET /v1/health for the daemon's version. */
#include <json-c/json.h>
#include <string.h>

#include "client.h"
#include "lanectl.h"

int cmd_version(lanectl_t *ctx, int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--socket") == 0 && argc > 2)
        lanectl_common_opt(ctx, LANECTL_OPT_SOCKET, argv[2]);
    else if (argc > 1) {
        printf("usage: lanectl version\n");
        return strcmp(argv[1], "--help") == 0 ? EXIT_OK : EXIT_USAGE;
    }
    printf("lanectl %s\n", LANES_VERSION);
    json_object *health = NULL;
    if (client_call(ctx, "GET", "/v1/health", NULL, &health, NULL) < 0)
        return EXIT_ERROR;
    const char *v = lanectl_jstr(health, "version");
    printf("lanesd  %s\n", v ? v : "unknown");
    json_object_put(health);
    return EXIT_OK;
}
