/* cmd_store.c — lanectl store gc|verify|stats
 *
 *   store gc [--grace SECONDS] [--dry-run] [--json]   POST /v1/store/gc
 *   store verify [--json]                             POST /v1/store/verify
 *   store stats [--json]                              GET  /v1/store/stats
 *
 * Exit status of verify: 0 clean, 1 problems found (listed). */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lanectl.h"

int cmd_store(lanectl_t *ctx, int argc, char **argv);

static const char usage[] = "usage: lanectl store gc [--grace SECONDS] [--dry-run] [--json]\n"
                            "       lanectl store verify [--json]\n"
                            "       lanectl store stats [--json]\n";

static long long jint(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && v ? (long long)json_object_get_int64(v) : 0;
}

int cmd_store(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"dry-run", no_argument, NULL, 'n'},
                                         {"grace", required_argument, NULL, 'g'},
                                         LANECTL_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    bool json = false, dry = false;
    long long grace = -1;
    int opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        unsigned long long g;
        if (opt == 'j')
            json = true;
        else if (opt == 'n')
            dry = true;
        else if (opt == 'g') {
            if (!lanectl_parse_uint(optarg, 1u << 30, &g))
                return lanectl_usage_error(usage, "store: bad --grace '%s'", optarg);
            grace = (long long)g;
        } else if (opt == 'h') {
            fputs(usage, stdout);
            return EXIT_OK;
        } else if (!lanectl_common_opt(ctx, opt, optarg))
            return lanectl_usage_error(usage, "store: unknown option '%s'", argv[optind - 1]);
    }
    if (argc - optind != 1)
        return lanectl_usage_error(usage, "store: expected gc, verify or stats");
    const char *verb = argv[optind];
    json_object *resp = NULL, *body = NULL;
    int r;
    if (!strcmp(verb, "gc")) {
        body = json_object_new_object();
        if (grace >= 0)
            json_object_object_add(body, "grace_s", json_object_new_int64(grace));
        json_object_object_add(body, "dry_run", json_object_new_boolean(dry));
        r = client_call(ctx, "POST", "/v1/store/gc", body, &resp, NULL);
    } else if (!strcmp(verb, "verify")) {
        r = client_call(ctx, "POST", "/v1/store/verify", NULL, &resp, NULL);
    } else if (!strcmp(verb, "stats")) {
        r = client_call(ctx, "GET", "/v1/store/stats", NULL, &resp, NULL);
    } else {
        return lanectl_usage_error(usage, "store: unknown verb '%s'", verb);
    }
    json_object_put(body);
    if (r < 0)
        return EXIT_ERROR;
    int ret = EXIT_OK;
    if (json) {
        printf("%s\n", json_object_to_json_string_ext(resp, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    } else if (!strcmp(verb, "gc")) {
        printf("%s %lld of %lld objects (%lld bytes); %lld unreferenced, %lld kept as too recent; %lld refs\n",
               dry ? "would delete" : "deleted", dry ? jint(resp, "garbage_objects") : jint(resp, "deleted_objects"),
               jint(resp, "objects"), dry ? jint(resp, "garbage_bytes") : jint(resp, "deleted_bytes"),
               jint(resp, "garbage_objects"), jint(resp, "kept_recent"), jint(resp, "refs"));
    } else if (!strcmp(verb, "stats")) {
        json_object *v;
        double ratio = json_object_object_get_ex(resp, "dedup_ratio", &v) ? json_object_get_double(v) : 1.0;
        printf("refs:           %lld\nlogical bytes:  %lld\nunique chunks:  %lld (%lld bytes)\n"
               "physical bytes: %lld (%lld objects)\ngarbage:        %lld bytes\ndedup ratio:    %.2f\n",
               jint(resp, "refs"), jint(resp, "logical_bytes"), jint(resp, "unique_chunks"),
               jint(resp, "unique_bytes"), jint(resp, "physical_bytes"), jint(resp, "objects"),
               jint(resp, "garbage_bytes"), ratio);
    } else {
        json_object *probs = NULL;
        if (json_object_object_get_ex(resp, "problems", &probs))
            for (size_t i = 0; i < json_object_array_length(probs); i++) {
                json_object *p = json_object_array_get_idx(probs, i), *refs;
                printf("%s %s %s; affects:", lanectl_jstr(p, "type"), lanectl_jstr(p, "id"),
                       lanectl_jstr(p, "problem"));
                if (json_object_object_get_ex(p, "refs", &refs))
                    for (size_t k = 0; k < json_object_array_length(refs); k++)
                        printf(" %s", json_object_get_string(json_object_array_get_idx(refs, k)));
                printf("\n");
            }
        printf("verify: %lld refs, %lld objects checked, %zu problems\n", jint(resp, "refs"),
               jint(resp, "objects_checked"), probs ? json_object_array_length(probs) : 0);
    }
    json_object *ok;
    if (!strcmp(verb, "verify") && json_object_object_get_ex(resp, "ok", &ok) && !json_object_get_boolean(ok))
        ret = EXIT_ERROR;
    json_object_put(resp);
    return ret;
}
