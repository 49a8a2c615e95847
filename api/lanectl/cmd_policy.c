/* cmd_policy.c — lanectl policy get|set LANE [FILE]
 *   get → GET /v1/lanes/{name}/policy (pretty JSON)
 *   set → PUT /v1/lanes/{name}/policy with FILE's JSON ("-" = stdin); applies
 *         live to a running lane, no reboot. */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lanectl.h"

static const char usage[] = "usage: lanectl policy get LANE\n"
                            "       lanectl policy set LANE FILE   (FILE \"-\" reads stdin; see docs/policy.md)\n";

json_object *lanectl_read_json_file(const char *path)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
    if (!f) {
        lanectl_err("cannot open %s: %m", path);
        return NULL;
    }
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            if (cap >= (16u << 20))
                break;
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
    }
    if (f != stdin)
        fclose(f);
    if (!buf) {
        lanectl_err("out of memory");
        return NULL;
    }
    buf[n] = '\0';
    json_tokener *tok = json_tokener_new_ex(64);
    if (!tok) {
        free(buf);
        lanectl_err("out of memory");
        return NULL;
    }
    json_object *o = json_tokener_parse_ex(tok, buf, (int)n);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    json_tokener_free(tok);
    free(buf);
    if (!o || jerr != json_tokener_success) {
        lanectl_err("%s is not valid JSON: %s", path,
                    jerr == json_tokener_continue ? "unexpected end of input" : json_tokener_error_desc(jerr));
        json_object_put(o);
        return NULL;
    }
    if (!json_object_is_type(o, json_type_object)) {
        lanectl_err("%s must hold a JSON object", path);
        json_object_put(o);
        return NULL;
    }
    return o;
}

int cmd_policy(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {LANECTL_COMMON_OPTS, {NULL, 0, NULL, 0}};
    int opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        if (opt == 'h') {
            fputs(usage, stdout);
            return EXIT_OK;
        }
        if (!lanectl_common_opt(ctx, opt, optarg))
            return lanectl_usage_error(usage, "policy: unknown option '%s'", argv[optind - 1]);
    }
    int n = argc - optind;
    if (n < 2)
        return lanectl_usage_error(usage, "policy: expected get|set and a LANE");
    const char *verb = argv[optind], *lane = argv[optind + 1];
    if (!lanectl_valid_name(lane))
        return lanectl_usage_error(usage, "policy: invalid lane name '%s'", lane);
    char *path = client_lane_path(lane, "policy");
    json_object *out = NULL, *body = NULL;
    int r;
    if (!strcmp(verb, "get") && n == 2) {
        r = client_call(ctx, "GET", path, NULL, &out, NULL);
    } else if (!strcmp(verb, "set") && n == 3) {
        body = lanectl_read_json_file(argv[optind + 2]);
        if (!body) {
            free(path);
            return EXIT_ERROR;
        }
        r = client_call(ctx, "PUT", path, body, &out, NULL);
    } else {
        free(path);
        return lanectl_usage_error(usage, "policy: expected 'get LANE' or 'set LANE FILE'");
    }
    free(path);
    json_object_put(body);
    if (r < 0)
        return EXIT_ERROR;
    printf("%s\n", json_object_to_json_string_ext(out, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(out);
    return EXIT_OK;
}
