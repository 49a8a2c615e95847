/* cmd_ls.c — lanectl ls [--json] → GET /v1/lanes
 * Table: NAME STATE IMAGE CPUS MEMORY DISK AGE. */
#include <json-c/json.h>
#include <stdlib.h>
#include <time.h>

#include "client.h"
#include "lanectl.h"
#include "table.h"

static const char usage[] = "usage: lanectl ls [--json]\n"
                            "  --json   print the API's JSON instead of a table\n";

/* Print the lanes array as a table; 0 or -1 on a malformed answer. */
int lanes_table_print(json_object *lanes, long now, FILE *out)
{
    static const char *const head[] = {"NAME", "STATE", "IMAGE", "CPUS", "MEMORY", "DISK", "AGE"};
    if (!json_object_is_type(lanes, json_type_array))
        return -1;
    table_t t;
    if (table_init(&t, 7, head) < 0)
        return -1;
    for (size_t i = 0; i < json_object_array_length(lanes); i++) {
        json_object *l = json_object_array_get_idx(lanes, i), *v;
        char mem[32] = "-", disk[32] = "-", age[32];
        if (json_object_object_get_ex(l, "memory_mib", &v) && v)
            snprintf(mem, sizeof(mem), "%lldMiB", (long long)json_object_get_int64(v));
        if (json_object_object_get_ex(l, "disk_gib", &v) && v)
            snprintf(disk, sizeof(disk), "%lldGiB", (long long)json_object_get_int64(v));
        format_age((time_t)now, lanectl_jstr(l, "created_at"), age, sizeof(age));
        const char *row[] = {lanectl_jstr(l, "name"), lanectl_jstr(l, "state"), lanectl_jstr(l, "image"),
                             lanectl_jstr(l, "cpus"), mem, disk, age};
        table_add_row(&t, row);
    }
    table_print(&t, out);
    table_free(&t);
    return 0;
}

int cmd_ls(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, LANECTL_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    bool as_json = false;
    int opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (opt == 'j')
            as_json = true;
        else if (opt == 'h') {
            fputs(usage, stdout);
            return EXIT_OK;
        } else if (!lanectl_common_opt(ctx, opt, optarg))
            return lanectl_usage_error(usage, "ls: unknown option '%s'", argv[optind - 1]);
    }
    if (optind != argc)
        return lanectl_usage_error(usage, "ls: takes no arguments");
    json_object *resp = NULL, *lanes;
    if (client_call(ctx, "GET", "/v1/lanes", NULL, &resp, NULL) < 0)
        return EXIT_ERROR;
    int ret = EXIT_OK;
    if (as_json) {
        printf("%s\n", json_object_to_json_string_ext(resp, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    } else if (!json_object_object_get_ex(resp, "lanes", &lanes) || lanes_table_print(lanes, time(NULL), stdout) < 0) {
        lanectl_err("lanesd sent a malformed lane list");
        ret = EXIT_ERROR;
    }
    json_object_put(resp);
    return ret;
}
