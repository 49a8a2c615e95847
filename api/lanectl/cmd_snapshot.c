/* cmd_snapshot.c — lanectl snapshot create|ls|rm|restore
 *
 *   snapshot create LANE NAME            POST   /v1/lanes/{lane}/snapshots {"name"}
 *   snapshot ls LANE [--json]            GET    /v1/lanes/{lane}/snapshots
 *   snapshot rm LANE NAME                DELETE /v1/lanes/{lane}/snapshots/{name}
 *   snapshot restore LANE NAME [--reboot] POST  /v1/lanes/{lane}/snapshots/{name}/restore
 *
 * Snapshot names are [A-Za-z0-9._-] (URL-safe), checked by lanesd. */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "lanectl.h"

int cmd_snapshot(lanectl_t *ctx, int argc, char **argv);

static const char usage[] = "usage: lanectl snapshot create LANE NAME\n"
                            "       lanectl snapshot ls LANE [--json]\n"
                            "       lanectl snapshot rm LANE NAME\n"
                            "       lanectl snapshot restore LANE NAME [--reboot]\n"
                            "  --json     print the API's JSON instead of a table\n"
                            "  --reboot   restore a running lane: stop it, restore, boot it again\n";

static void human_bytes(long long b, char *out, size_t len)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        i++;
    }
    snprintf(out, len, i ? "%.1f%s" : "%.0f%s", v, u[i]);
}

static long long jint(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && v ? (long long)json_object_get_int64(v) : 0;
}

static int snapshot_ls_print(json_object *resp)
{
    json_object *arr;
    if (!json_object_object_get_ex(resp, "snapshots", &arr) || !json_object_is_type(arr, json_type_array)) {
        lanectl_err("snapshot ls: unexpected response");
        return EXIT_ERROR;
    }
    printf("%-24s %-20s %-28s %10s\n", "NAME", "CREATED", "PARENT", "UNIQUE");
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        json_object *s = json_object_array_get_idx(arr, i);
        char t[32], ub[32];
        time_t c = (time_t)jint(s, "created_at");
        strftime(t, sizeof(t), "%Y-%m-%d %H:%M:%S", localtime(&c));
        human_bytes(jint(s, "unique_bytes"), ub, sizeof(ub));
        const char *parent = lanectl_jstr(s, "parent");
        printf("%-24s %-20s %-28s %10s\n", lanectl_jstr(s, "name"), t, parent ? parent : "-", ub);
    }
    return EXIT_OK;
}

int cmd_snapshot(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, {"reboot", no_argument, NULL, 'r'},
                                         LANECTL_COMMON_OPTS, {NULL, 0, NULL, 0}};
    bool json = false, reboot = false;
    int opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (opt == 'j')
            json = true;
        else if (opt == 'r')
            reboot = true;
        else if (opt == 'h') {
            fputs(usage, stdout);
            return EXIT_OK;
        } else if (!lanectl_common_opt(ctx, opt, optarg))
            return lanectl_usage_error(usage, "snapshot: unknown option '%s'", argv[optind - 1]);
    }
    int n = argc - optind;
    char **a = argv + optind;
    if (n < 2)
        return lanectl_usage_error(usage, "snapshot: expected a verb and a LANE");
    const char *verb = a[0], *lane = a[1];
    if (!lanectl_valid_name(lane))
        return lanectl_usage_error(usage, "snapshot: invalid lane name '%s'", lane);
    int want = strcmp(verb, "ls") == 0 ? 2 : 3;
    if (n != want || (strcmp(verb, "ls") && strcmp(verb, "create") && strcmp(verb, "rm") && strcmp(verb, "restore")))
        return lanectl_usage_error(usage, "snapshot: bad arguments");
    const char *name = n == 3 ? a[2] : NULL;
    if (name && (strchr(name, '/') || strchr(name, '?') || strchr(name, '%') || !name[0]))
        return lanectl_usage_error(usage, "snapshot: invalid snapshot name '%s'", name);

    json_object *resp = NULL;
    char suffix[160];
    int ret = EXIT_OK;
    if (!strcmp(verb, "ls")) {
        char *path = client_lane_path(lane, "snapshots");
        if (client_call(ctx, "GET", path, NULL, &resp, NULL) < 0)
            ret = EXIT_ERROR;
        else if (json)
            printf("%s\n", json_object_to_json_string_ext(resp, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
        else
            ret = snapshot_ls_print(resp);
        free(path);
    } else if (!strcmp(verb, "create")) {
        char *path = client_lane_path(lane, "snapshots");
        json_object *body = json_object_new_object();
        json_object_object_add(body, "name", json_object_new_string(name));
        if (client_call(ctx, "POST", path, body, &resp, NULL) < 0) {
            ret = EXIT_ERROR;
        } else {
            json_object *t;
            printf("%s@%s", lane, name);
            if (json_object_object_get_ex(resp, "timings", &t))
                printf(" (freeze %lld ms, flush %lld ms, commit %lld ms, thaw %lld ms)", jint(t, "freeze_ms"),
                       jint(t, "flush_ms"), jint(t, "commit_ms"), jint(t, "thaw_ms"));
            printf("\n");
        }
        json_object_put(body);
        free(path);
    } else if (!strcmp(verb, "rm")) {
        snprintf(suffix, sizeof(suffix), "snapshots/%s", name);
        char *path = client_lane_path(lane, suffix);
        if (client_call(ctx, "DELETE", path, NULL, NULL, NULL) < 0)
            ret = EXIT_ERROR;
        else
            printf("%s@%s\n", lane, name);
        free(path);
    } else {
        snprintf(suffix, sizeof(suffix), "snapshots/%s/restore", name);
        char *path = client_lane_path(lane, suffix);
        json_object *body = json_object_new_object();
        json_object_object_add(body, "reboot", json_object_new_boolean(reboot));
        if (client_call(ctx, "POST", path, body, &resp, NULL) < 0)
            ret = EXIT_ERROR;
        else
            lanectl_print_lane_state(resp);
        json_object_put(body);
        free(path);
    }
    json_object_put(resp);
    return ret;
}
