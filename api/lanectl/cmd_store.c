/* cmd_store.c — lanectl store gc|verify|stats|add|ls|rm
 *
 *   store add NAME s3 --endpoint URL --bucket B [--prefix P] [--region R]
 *       --credentials-file F [--profile P] [--flush local|remote]
 *       [--allow-unenforced-leases] [--vhost]             POST   /v1/stores
 *   store ls [--json]                                     GET    /v1/stores
 *   store rm NAME                                         DELETE /v1/stores/NAME
 *   (the credentials file's path is sent, never its contents)
 *
 *   store gc [--store NAME] [--grace SECONDS] [--dry-run] [--json]
 *                                                     POST /v1/store/gc
 *   store verify [--store NAME] [--json]              POST /v1/store/verify
 *   store stats [--store NAME] [--json]               GET  /v1/store/stats
 *   (--store: an added S3 store instead of the local one: ?store=NAME)
 *
 * Exit status of verify: 0 clean, 1 problems found (listed). */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lanectl.h"

int cmd_store(lanectl_t *ctx, int argc, char **argv);

static const char usage[] = "usage: lanectl store add NAME s3 --endpoint URL --bucket B [--prefix P] [--region R]\n"
                            "                 --credentials-file F [--profile P] [--flush local|remote]\n"
                            "                 [--allow-unenforced-leases] [--vhost]\n"
                            "       lanectl store ls [--json]\n"
                            "       lanectl store rm NAME\n"
                            "       lanectl store gc [--store NAME] [--grace SECONDS] [--dry-run] [--json]\n"
                            "       lanectl store verify [--store NAME] [--json]\n"
                            "       lanectl store stats [--store NAME] [--json]\n";

static long long jint(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && v ? (long long)json_object_get_int64(v) : 0;
}

static int store_ls(lanectl_t *ctx, bool json)
{
    json_object *resp = NULL, *arr;
    if (client_call(ctx, "GET", "/v1/stores", NULL, &resp, NULL) < 0)
        return EXIT_ERROR;
    if (json) {
        printf("%s\n", json_object_to_json_string_ext(resp, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    } else if (json_object_object_get_ex(resp, "stores", &arr)) {
        printf("%-16s %-6s %-5s %-6s %-12s %s\n", "NAME", "TYPE", "LANES", "FLUSH", "COND-WRITES", "LOCATION");
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
            json_object *s = json_object_array_get_idx(arr, i);
            const char *type = lanectl_jstr(s, "type");
            char loc[600] = "this host";
            if (!strcmp(type, "s3"))
                snprintf(loc, sizeof(loc), "%s s3://%s/%s", lanectl_jstr(s, "endpoint"), lanectl_jstr(s, "bucket"),
                         lanectl_jstr(s, "prefix"));
            printf("%-16s %-6s %-5lld %-6s %-12s %s\n", lanectl_jstr(s, "name"), type, jint(s, "lanes"),
                   strcmp(type, "s3") ? "-" : lanectl_jstr(s, "flush"),
                   strcmp(type, "s3") ? "-" : lanectl_jstr(s, "conditional_writes"), loc);
        }
    }
    json_object_put(resp);
    return EXIT_OK;
}

static int store_add(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"endpoint", required_argument, NULL, 'e'},
                                         {"bucket", required_argument, NULL, 'b'},
                                         {"prefix", required_argument, NULL, 'p'},
                                         {"region", required_argument, NULL, 'r'},
                                         {"credentials-file", required_argument, NULL, 'c'},
                                         {"profile", required_argument, NULL, 'P'},
                                         {"flush", required_argument, NULL, 'f'},
                                         {"allow-unenforced-leases", no_argument, NULL, 'A'},
                                         {"vhost", no_argument, NULL, 'V'},
                                         {"json", no_argument, NULL, 'j'},
                                         LANECTL_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    json_object *body = json_object_new_object();
    bool json = false;
    int opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        const char *key = opt == 'e' ? "endpoint" : opt == 'b' ? "bucket" : opt == 'p' ? "prefix"
                        : opt == 'r' ? "region" : opt == 'P' ? "profile" : opt == 'f' ? "flush" : NULL;
        if (key) {
            json_object_object_add(body, key, json_object_new_string(optarg));
        } else if (opt == 'c') {
            /* Only the path travels; lanesd and the plugin read the file. */
            char *abs = realpath(optarg, NULL);
            if (!abs) {
                json_object_put(body);
                fprintf(stderr, "lanectl: store add: credentials file %s: %s\n", optarg, strerror(errno));
                return EXIT_ERROR;
            }
            json_object_object_add(body, "credentials_file", json_object_new_string(abs));
            free(abs);
        } else if (opt == 'A') {
            json_object_object_add(body, "allow_unenforced_leases", json_object_new_boolean(1));
        } else if (opt == 'V') {
            json_object_object_add(body, "vhost", json_object_new_boolean(1));
        } else if (opt == 'j') {
            json = true;
        } else if (opt == 'h') {
            json_object_put(body);
            fputs(usage, stdout);
            return EXIT_OK;
        } else if (!lanectl_common_opt(ctx, opt, optarg)) {
            json_object_put(body);
            return lanectl_usage_error(usage, "store add: unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 3 || strcmp(argv[optind + 2], "s3")) {
        json_object_put(body);
        return lanectl_usage_error(usage, "store add: expected NAME s3");
    }
    json_object_object_add(body, "name", json_object_new_string(argv[optind + 1]));
    json_object_object_add(body, "type", json_object_new_string("s3"));
    json_object *resp = NULL;
    int r = client_call(ctx, "POST", "/v1/stores", body, &resp, NULL);
    json_object_put(body);
    if (r < 0)
        return EXIT_ERROR;
    if (json)
        printf("%s\n", json_object_to_json_string_ext(resp, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    else
        printf("store %s added: s3://%s/%s, flush %s, conditional writes %s, %lld lanes\n", lanectl_jstr(resp, "name"),
               lanectl_jstr(resp, "bucket"), lanectl_jstr(resp, "prefix"), lanectl_jstr(resp, "flush"),
               lanectl_jstr(resp, "conditional_writes"), jint(resp, "lanes"));
    json_object *w;
    if (json_object_object_get_ex(resp, "warning", &w))
        fprintf(stderr, "warning: %s\n", json_object_get_string(w));
    json_object_put(resp);
    return EXIT_OK;
}

int cmd_store(lanectl_t *ctx, int argc, char **argv)
{
    /* add has its own options; ls/rm are simple */
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-')
            continue;
        if (!strcmp(argv[i], "add"))
            return store_add(ctx, argc, argv);
        if (!strcmp(argv[i], "rm")) {
            int o;
            optind = 0;
            opterr = 0;
            static const struct option ro[] = {LANECTL_COMMON_OPTS, {NULL, 0, NULL, 0}};
            while ((o = getopt_long(argc, argv, "h", ro, NULL)) != -1)
                if (!lanectl_common_opt(ctx, o, optarg))
                    return lanectl_usage_error(usage, "store rm: unknown option '%s'", argv[optind - 1]);
            if (argc - optind != 2)
                return lanectl_usage_error(usage, "store rm: expected NAME");
            char path[256];
            snprintf(path, sizeof(path), "/v1/stores/%s", argv[optind + 1]);
            return client_call(ctx, "DELETE", path, NULL, NULL, NULL) < 0 ? EXIT_ERROR : EXIT_OK;
        }
        break;
    }

    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"dry-run", no_argument, NULL, 'n'},
                                         {"grace", required_argument, NULL, 'g'},
                                         {"store", required_argument, NULL, 's'},
                                         LANECTL_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    bool json = false, dry = false;
    long long grace = -1;
    const char *store = NULL;
    int opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        unsigned long long g;
        if (opt == 'j')
            json = true;
        else if (opt == 's')
            store = optarg;
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
        return lanectl_usage_error(usage, "store: expected add, ls, rm, gc, verify or stats");
    const char *verb = argv[optind];
    if (!strcmp(verb, "ls"))
        return store_ls(ctx, json);
    json_object *resp = NULL, *body = NULL;
    int r;
    char path[160];
    if (store && strspn(store, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(store))
        return lanectl_usage_error(usage, "store: bad --store '%s'", store);
    if (store && strlen(store) > 63)
        return lanectl_usage_error(usage, "store: bad --store '%s'", store);
#define STORE_PATH(p) (snprintf(path, sizeof(path), "%s%s%s", (p), store ? "?store=" : "", store ? store : ""), path)
    if (!strcmp(verb, "gc")) {
        body = json_object_new_object();
        if (grace >= 0)
            json_object_object_add(body, "grace_s", json_object_new_int64(grace));
        json_object_object_add(body, "dry_run", json_object_new_boolean(dry));
        r = client_call(ctx, "POST", STORE_PATH("/v1/store/gc"), body, &resp, NULL);
    } else if (!strcmp(verb, "verify")) {
        r = client_call(ctx, "POST", STORE_PATH("/v1/store/verify"), NULL, &resp, NULL);
    } else if (!strcmp(verb, "stats")) {
        r = client_call(ctx, "GET", STORE_PATH("/v1/store/stats"), NULL, &resp, NULL);
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
        if (jint(resp, "live_writers"))
            printf("%lld live writers (this host's sessions, other hosts' pending uploads) protect recent objects\n",
                   jint(resp, "live_writers"));
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
