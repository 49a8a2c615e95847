/* cmd_secret.c — lanectl secret set|ls|rm
 *
 *   secret set LANE NAME --hosts H[,H...] [--from-file F]
 *       the value comes from stdin (or F), never from the command line, so it
 *       stays out of ps and shell history; the guest only ever sees the
 *       placeholder printed here, as $NAME in every exec.
 *   secret ls LANE [--json]    names, hosts, placeholders (never values)
 *   secret rm LANE NAME */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "lanectl.h"
#include "table.h"

static const char usage[] =
    "usage: lanectl secret set LANE NAME --hosts HOST[,HOST...] [--from-file FILE]   (value from stdin)\n"
    "       lanectl secret ls LANE [--json]\n"
    "       lanectl secret rm LANE NAME\n";

#define SECRET_MAX 16384

static char *read_value(const char *file)
{
    FILE *f = file ? fopen(file, "re") : stdin;
    if (!f) {
        lanectl_err("cannot open %s: %m", file);
        return NULL;
    }
    char *buf = malloc(SECRET_MAX + 2);
    size_t n = buf ? fread(buf, 1, SECRET_MAX + 1, f) : 0;
    if (file)
        fclose(f);
    if (!buf)
        return NULL;
    if (n > SECRET_MAX) {
        lanectl_err("secret value longer than %d bytes", SECRET_MAX);
        free(buf);
        return NULL;
    }
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--; /* `echo value |` adds a newline that is not part of the secret */
    buf[n] = '\0';
    if (!n || memchr(buf, '\0', n)) {
        lanectl_err("the secret value is empty or contains a NUL byte");
        free(buf);
        return NULL;
    }
    return buf;
}

static int secret_set(lanectl_t *ctx, const char *lane, const char *name, const char *hosts, const char *file)
{
    char *value = read_value(file);
    if (!value)
        return EXIT_ERROR;
    json_object *body = json_object_new_object();
    json_object_object_add(body, "value", json_object_new_string(value));
    explicit_bzero(value, strlen(value));
    free(value);
    json_object *arr = json_object_new_array();
    char *h = strdup(hosts), *save = NULL;
    for (char *tok = strtok_r(h, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        if (*tok)
            json_object_array_add(arr, json_object_new_string(tok));
    free(h);
    json_object_object_add(body, "hosts", arr);
    char suffix[256];
    snprintf(suffix, sizeof(suffix), "secrets/%s", name);
    char *path = client_lane_path(lane, suffix);
    json_object *out = NULL;
    int r = client_call(ctx, "PUT", path, body, &out, NULL);
    free(path);
    json_object_put(body); /* the request body held the value: gone now */
    if (r < 0)
        return EXIT_ERROR;
    printf("%s: set for %s; the lane sees $%s=%s\n", name, hosts, name, lanectl_jstr(out, "placeholder"));
    json_object_put(out);
    return EXIT_OK;
}

static int secret_ls(lanectl_t *ctx, const char *lane, int json)
{
    char *path = client_lane_path(lane, "secrets");
    json_object *out = NULL;
    int r = client_call(ctx, "GET", path, NULL, &out, NULL);
    free(path);
    if (r < 0)
        return EXIT_ERROR;
    if (json) {
        printf("%s\n", json_object_to_json_string_ext(out, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(out);
        return EXIT_OK;
    }
    static const char *const hdr[] = {"NAME", "HOSTS", "PLACEHOLDER"};
    table_t t;
    table_init(&t, 3, hdr);
    json_object *arr;
    if (json_object_object_get_ex(out, "secrets", &arr)) {
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
            json_object *s = json_object_array_get_idx(arr, i), *hs;
            char hosts[1024] = "";
            if (json_object_object_get_ex(s, "hosts", &hs))
                for (size_t k = 0; k < json_object_array_length(hs); k++)
                    snprintf(hosts + strlen(hosts), sizeof(hosts) - strlen(hosts), "%s%s", k ? "," : "",
                             json_object_get_string(json_object_array_get_idx(hs, k)));
            const char *row[] = {lanectl_jstr(s, "name"), hosts, lanectl_jstr(s, "placeholder")};
            table_add_row(&t, row);
        }
    }
    table_print(&t, stdout);
    table_free(&t);
    json_object_put(out);
    return EXIT_OK;
}

int cmd_secret(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {LANECTL_COMMON_OPTS,
                                         {"hosts", required_argument, NULL, 'H'},
                                         {"from-file", required_argument, NULL, 'f'},
                                         {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    const char *hosts = NULL, *file = NULL;
    int json = 0, opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'h': fputs(usage, stdout); return EXIT_OK;
        case 'H': hosts = optarg; break;
        case 'f': file = optarg; break;
        case 'j': json = 1; break;
        default:
            if (!lanectl_common_opt(ctx, opt, optarg))
                return lanectl_usage_error(usage, "secret: unknown option '%s'", argv[optind - 1]);
        }
    }
    int n = argc - optind;
    if (n < 2)
        return lanectl_usage_error(usage, "secret: expected set|ls|rm and a LANE");
    const char *verb = argv[optind], *lane = argv[optind + 1];
    if (!lanectl_valid_name(lane))
        return lanectl_usage_error(usage, "secret: invalid lane name '%s'", lane);
    if (!strcmp(verb, "set") && n == 3) {
        if (!hosts || !*hosts)
            return lanectl_usage_error(usage, "secret set: --hosts is required (where the real value may go)");
        return secret_set(ctx, lane, argv[optind + 2], hosts, file);
    }
    if (!strcmp(verb, "ls") && n == 2)
        return secret_ls(ctx, lane, json);
    if (!strcmp(verb, "rm") && n == 3) {
        char suffix[256];
        snprintf(suffix, sizeof(suffix), "secrets/%s", argv[optind + 2]);
        char *path = client_lane_path(lane, suffix);
        int r = client_call(ctx, "DELETE", path, NULL, NULL, NULL);
        free(path);
        return r < 0 ? EXIT_ERROR : EXIT_OK;
    }
    return lanectl_usage_error(usage, "secret: expected 'set LANE NAME', 'ls LANE' or 'rm LANE NAME'");
}
