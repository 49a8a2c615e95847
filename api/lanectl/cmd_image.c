/* cmd_image.c — lanectl image build|import|ls|rm
 *   build NAME          → POST /v1/images/build {"name"}         (NDJSON progress)
 *   import NAME TAR     → POST /v1/images/import {"name","tar"}  (NDJSON progress)
 *   ls [--json]         → GET /v1/images
 *   rm NAME             → DELETE /v1/images/{name}
 */
#include <json-c/json.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "codec.h"
#include "lanectl.h"
#include "table.h"

static const char usage[] = "usage: lanectl image build minimal|debian\n"
                            "       lanectl image import NAME ROOTFS.tar\n"
                            "       lanectl image ls [--json]\n"
                            "       lanectl image rm NAME\n";

int images_table_print(json_object *images, long now, FILE *out)
{
    static const char *const head[] = {"NAME", "SIZE", "AGE", "SOURCE"};
    if (!json_object_is_type(images, json_type_array))
        return -1;
    table_t t;
    if (table_init(&t, 4, head) < 0)
        return -1;
    for (size_t i = 0; i < json_object_array_length(images); i++) {
        json_object *im = json_object_array_get_idx(images, i), *v;
        char size[32] = "-", age[32];
        if (json_object_object_get_ex(im, "size_bytes", &v) && v)
            format_size((uint64_t)json_object_get_int64(v), size, sizeof(size));
        format_age((time_t)now, lanectl_jstr(im, "created_at"), age, sizeof(age));
        const char *row[] = {lanectl_jstr(im, "name"), size, age, lanectl_jstr(im, "source")};
        table_add_row(&t, row);
    }
    table_print(&t, out);
    table_free(&t);
    return 0;
}

typedef struct {
    bool done;
} progress_t;

/* One line of a build/import stream: progress, the final image, or an error. */
static int on_progress(json_object *line, void *ud)
{
    progress_t *p = ud;
    json_object *v;
    if (json_object_object_get_ex(line, "progress", &v)) {
        fprintf(stderr, "%s\n", json_object_get_string(v));
        return 0;
    }
    if (json_object_object_get_ex(line, "image", &v)) {
        char size[32] = "?";
        json_object *sz;
        if (json_object_object_get_ex(v, "size_bytes", &sz))
            format_size((uint64_t)json_object_get_int64(sz), size, sizeof(size));
        printf("image %s ready (%s)\n", lanectl_jstr(v, "name") ? lanectl_jstr(v, "name") : "?", size);
        p->done = true;
        return 1;
    }
    if (json_object_object_get_ex(line, "error", &v)) {
        const char *msg = lanectl_jstr(v, "message");
        lanectl_err("%s", msg ? msg : "image operation failed");
        return -1;
    }
    return 0; /* unknown line kinds are for newer clients */
}

static int image_stream(lanectl_t *ctx, const char *path, json_object *body)
{
    progress_t p = {0};
    int r = client_stream(ctx, "POST", path, body, on_progress, &p);
    json_object_put(body);
    if (r < 0)
        return EXIT_ERROR;
    if (!p.done) {
        lanectl_err("lanesd ended the stream without a result");
        return EXIT_ERROR;
    }
    return EXIT_OK;
}

int cmd_image(lanectl_t *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, LANECTL_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    if (argc < 2)
        return lanectl_usage_error(usage, "image: expected a subcommand");
    const char *sub = argv[1];
    bool as_json = false;
    int opt;
    optind = 0;
    opterr = 0;
    argc--;
    argv++;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (opt == 'j')
            as_json = true;
        else if (opt == 'h') {
            fputs(usage, stdout);
            return EXIT_OK;
        } else if (!lanectl_common_opt(ctx, opt, optarg))
            return lanectl_usage_error(usage, "image: unknown option '%s'", argv[optind - 1]);
    }
    char **args = argv + optind;
    int nargs = argc - optind;

    if (strcmp(sub, "build") == 0) {
        if (nargs != 1 || as_json)
            return lanectl_usage_error(usage, "image build: expected minimal or debian");
        json_object *body = json_object_new_object();
        json_object_object_add(body, "name", json_object_new_string(args[0]));
        return image_stream(ctx, "/v1/images/build", body);
    }
    if (strcmp(sub, "import") == 0) {
        if (nargs != 2 || as_json)
            return lanectl_usage_error(usage, "image import: expected NAME and ROOTFS.tar");
        char tar[PATH_MAX];
        if (!realpath(args[1], tar)) {
            lanectl_err("image import: %s: %m", args[1]);
            return EXIT_ERROR;
        }
        json_object *body = json_object_new_object();
        json_object_object_add(body, "name", json_object_new_string(args[0]));
        json_object_object_add(body, "tar", json_object_new_string(tar));
        return image_stream(ctx, "/v1/images/import", body);
    }
    if (strcmp(sub, "ls") == 0) {
        if (nargs != 0)
            return lanectl_usage_error(usage, "image ls: takes no arguments");
        json_object *resp = NULL, *images;
        if (client_call(ctx, "GET", "/v1/images", NULL, &resp, NULL) < 0)
            return EXIT_ERROR;
        int ret = EXIT_OK;
        if (as_json)
            printf("%s\n", json_object_to_json_string_ext(resp, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
        else if (!json_object_object_get_ex(resp, "images", &images) ||
                 images_table_print(images, (long)time(NULL), stdout) < 0) {
            lanectl_err("lanesd sent a malformed image list");
            ret = EXIT_ERROR;
        }
        json_object_put(resp);
        return ret;
    }
    if (strcmp(sub, "rm") == 0) {
        if (nargs != 1 || as_json)
            return lanectl_usage_error(usage, "image rm: expected one image NAME");
        char *esc = url_escape(args[0]), *path = NULL;
        if (!esc || asprintf(&path, "/v1/images/%s", esc) < 0)
            path = NULL;
        free(esc);
        int r = path ? client_call(ctx, "DELETE", path, NULL, NULL, NULL) : -1;
        free(path);
        if (r < 0)
            return EXIT_ERROR;
        printf("%s\n", args[0]);
        return EXIT_OK;
    }
    return lanectl_usage_error(usage, "image: unknown subcommand '%s'", sub);
}
