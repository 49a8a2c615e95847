/* test_lanectl.c — lanectl's pure parts: argument parsing, socket choice,
 * base64 and NDJSON decoding of exec streams, exit-status mapping, tables. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "codec.h"
#include "exec_result.h"
#include "lanectl.h"
#include "table.h"

static void test_socket_path(void **state)
{
    char buf[108];
    assert_int_equal(lanectl_socket_path("/a.sock", "/b.sock", "/run/user/1", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "/a.sock");
    assert_int_equal(lanectl_socket_path(NULL, "/b.sock", "/run/user/1", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "/b.sock");
    assert_int_equal(lanectl_socket_path(NULL, "", "/run/user/1", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "/run/user/1/lanes/lanesd.sock");
    assert_int_equal(lanectl_socket_path(NULL, NULL, NULL, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "/run/lanes/lanesd.sock");
    char longp[300];
    memset(longp, 'x', sizeof(longp) - 1);
    longp[sizeof(longp) - 1] = '\0';
    assert_int_equal(lanectl_socket_path(longp, NULL, NULL, buf, sizeof(buf)), -ENAMETOOLONG);
}

static void test_names_and_numbers(void **state)
{
    static const struct {
        const char *name;
        bool ok;
    } cases[] = {{"a", true}, {"lane-1", true}, {"0x", true}, {"-a", false}, {"A", false},
                 {"a_b", false}, {"", false}, {"a.b", false},
                 {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true},   /* 63 */
                 {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false}}; /* 64 */
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(lanectl_valid_name(cases[i].name), cases[i].ok);
    unsigned long long v;
    assert_true(lanectl_parse_uint("42", 100, &v));
    assert_int_equal(v, 42);
    assert_false(lanectl_parse_uint("101", 100, &v));
    assert_false(lanectl_parse_uint("-1", 100, &v));
    assert_false(lanectl_parse_uint("4x", 100, &v));
    assert_false(lanectl_parse_uint("", 100, &v));
}

static void test_create_args(void **state)
{
    lanectl_t ctx = {0};
    char *name;
    json_object *body;
    char *argv[] = {"create", "web-1", "--image", "minimal", "--cpus", "2", "--memory", "1024",
                    "--disk", "8", "--socket", "/tmp/s.sock", NULL};
    assert_int_equal(create_parse_args(12, argv, &ctx, &name, &body), 0);
    assert_string_equal(name, "web-1");
    assert_string_equal(json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN),
                        "{\"image\":\"minimal\",\"cpus\":2,\"memory_mib\":1024,\"disk_gib\":8,\"name\":\"web-1\"}");
    assert_string_equal(ctx.socket_path, "/tmp/s.sock");
    json_object_put(body);

    char *bad1[] = {"create", "Bad_Name", NULL};
    assert_int_equal(create_parse_args(2, bad1, &ctx, &name, &body), EXIT_USAGE);
    char *bad2[] = {"create", "x", "--cpus", "two", NULL};
    assert_int_equal(create_parse_args(4, bad2, &ctx, &name, &body), EXIT_USAGE);
    char *bad3[] = {"create", NULL};
    assert_int_equal(create_parse_args(1, bad3, &ctx, &name, &body), EXIT_USAGE);
    char *bad4[] = {"create", "x", "--bogus", NULL};
    assert_int_equal(create_parse_args(3, bad4, &ctx, &name, &body), EXIT_USAGE);
    char *bad5[] = {"create", "x", "--cpus", "0", NULL};
    assert_int_equal(create_parse_args(4, bad5, &ctx, &name, &body), EXIT_USAGE);
}

static void test_exec_args(void **state)
{
    lanectl_t ctx = {0};
    exec_opts_t o;
    char *argv[] = {"exec", "-it", "-e", "A=1", "-e", "B=x=y", "-w", "/srv", "-u", "app", "--timeout", "5",
                    "box", "--", "ls", "-la", NULL};
    assert_int_equal(exec_parse_args(16, argv, &ctx, &o), 0);
    assert_true(o.interactive);
    assert_true(o.tty);
    assert_string_equal(o.lane, "box");
    assert_string_equal(o.cwd, "/srv");
    assert_string_equal(o.user, "app");
    assert_int_equal(o.timeout_ms, 5000);
    assert_int_equal(o.argc, 2);
    assert_string_equal(o.argv[0], "ls");
    assert_string_equal(o.argv[1], "-la");
    assert_string_equal(json_object_to_json_string_ext(o.env, JSON_C_TO_STRING_PLAIN), "{\"A\":\"1\",\"B\":\"x=y\"}");
    exec_opts_free(&o);

    /* Without "--": everything after NAME belongs to the command. */
    char *argv2[] = {"exec", "box", "sh", "-c", "echo -i", NULL};
    assert_int_equal(exec_parse_args(5, argv2, &ctx, &o), 0);
    assert_false(o.interactive);
    assert_int_equal(o.argc, 3);
    assert_string_equal(o.argv[2], "echo -i");
    exec_opts_free(&o);

    char *bad1[] = {"exec", "box", NULL};
    assert_int_equal(exec_parse_args(2, bad1, &ctx, &o), EXIT_USAGE);
    char *bad2[] = {"exec", "-e", "NOEQ", "box", "ls", NULL};
    assert_int_equal(exec_parse_args(5, bad2, &ctx, &o), EXIT_USAGE);
    char *bad3[] = {"exec", "--timeout", "-3", "box", "ls", NULL};
    assert_int_equal(exec_parse_args(5, bad3, &ctx, &o), EXIT_USAGE);
    char *bad4[] = {"exec", "NOT A LANE", "ls", NULL};
    assert_int_equal(exec_parse_args(3, bad4, &ctx, &o), EXIT_USAGE);
}

static void test_cp_spec(void **state)
{
    char lane[64];
    const char *path;
    assert_true(cp_parse_spec("box:/etc/hosts", lane, sizeof(lane), &path));
    assert_string_equal(lane, "box");
    assert_string_equal(path, "/etc/hosts");
    assert_false(cp_parse_spec("./a:b", lane, sizeof(lane), &path));
    assert_false(cp_parse_spec("box:rel/path", lane, sizeof(lane), &path));
    assert_false(cp_parse_spec("/abs/file", lane, sizeof(lane), &path));
    assert_false(cp_parse_spec(":/x", lane, sizeof(lane), &path));
    assert_false(cp_parse_spec("Box:/x", lane, sizeof(lane), &path));
}

static void test_base64(void **state)
{
    static const struct {
        const char *in;
        const char *out;
        long len;
    } cases[] = {{"", "", 0},        {"Zg==", "f", 1},     {"Zm8=", "fo", 2},  {"Zm9v", "foo", 3},
                 {"Zm9vYg", "foob", 4}, {"AP8=", "\x00\xff", 2}, {"Zm9v!", NULL, -EINVAL},
                 {"Z", NULL, -EINVAL},  {"Zh==", NULL, -EINVAL}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t out[16];
        long n = b64_decode(cases[i].in, strlen(cases[i].in), out);
        assert_int_equal(n, cases[i].len);
        if (n > 0)
            assert_memory_equal(out, cases[i].out, (size_t)n);
    }
}

typedef struct {
    char lines[8][64];
    int n;
} lines_t;

static int collect(const char *line, size_t len, void *ud)
{
    lines_t *l = ud;
    snprintf(l->lines[l->n++], 64, "%.*s", (int)len, line);
    return 0;
}

static void test_ndjson_split(void **state)
{
    const char *stream = "{\"a\":1}\n\n{\"b\":2}\r\n{\"c\":3}";
    /* Every way of cutting the stream into two pieces gives the same lines. */
    for (size_t cut = 0; cut <= strlen(stream); cut++) {
        ndjson_t nd = {0};
        lines_t l = {0};
        assert_int_equal(ndjson_feed(&nd, stream, cut, collect, &l), 0);
        assert_int_equal(ndjson_feed(&nd, stream + cut, strlen(stream) - cut, collect, &l), 0);
        assert_int_equal(ndjson_finish(&nd, collect, &l), 0);
        assert_int_equal(l.n, 3);
        assert_string_equal(l.lines[0], "{\"a\":1}");
        assert_string_equal(l.lines[1], "{\"b\":2}");
        assert_string_equal(l.lines[2], "{\"c\":3}");
        ndjson_free(&nd);
    }
    ndjson_t nd = {.max_line = 8};
    lines_t l = {0};
    assert_int_equal(ndjson_feed(&nd, "0123456789\n", 11, collect, &l), -E2BIG);
    ndjson_free(&nd);
}

static void test_exit_codes(void **state)
{
    static const struct {
        const char *json;
        int code;
    } cases[] = {
        {"{\"exit\":{\"exit_code\":0,\"signal\":null,\"timed_out\":false}}", 0},
        {"{\"exit\":{\"exit_code\":3,\"signal\":null,\"timed_out\":false}}", 3},
        {"{\"exit\":{\"exit_code\":300,\"signal\":null,\"timed_out\":false}}", 300 & 255},
        {"{\"exit\":{\"exit_code\":null,\"signal\":9,\"timed_out\":false}}", 137},
        {"{\"exit\":{\"exit_code\":null,\"signal\":9,\"timed_out\":true}}", 124},
        {"{\"exit\":{}}", 125},
        {"{\"error\":{\"code\":\"command_not_found\",\"message\":\"x\"}}", 127},
        {"{\"error\":{\"code\":\"command_not_executable\",\"message\":\"x\"}}", 126},
        {"{\"error\":{\"code\":\"not_found\",\"message\":\"x\"}}", 127},
        {"{\"error\":{\"code\":\"permission_denied\",\"message\":\"x\"}}", 126},
        {"{\"error\":{\"code\":\"lane_not_found\",\"message\":\"x\"}}", 125},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_object *o = json_tokener_parse(cases[i].json);
        assert_non_null(o);
        assert_int_equal(exec_result_exit_code(o), cases[i].code);
        json_object_put(o);
    }
    assert_int_equal(exec_result_exit_code(NULL), 125);
}

static void test_tables(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    json_object *lanes = json_tokener_parse(
        "[{\"name\":\"web\",\"state\":\"running\",\"image\":\"debian\",\"cpus\":2,\"memory_mib\":1024,"
        "\"disk_gib\":4,\"created_at\":\"2024-01-01T00:00:00Z\"},"
        "{\"name\":\"a-long-lane\",\"state\":\"stopped\",\"image\":\"minimal\",\"cpus\":1,\"memory_mib\":512,"
        "\"disk_gib\":16,\"created_at\":\"2024-01-01T00:59:00.5Z\"}]");
    assert_int_equal(lanes_table_print(lanes, 1704070800 /* 2024-01-01T01:00:00Z */, f), 0);
    fclose(f);
    assert_string_equal(buf, "NAME          STATE     IMAGE     CPUS   MEMORY    DISK    AGE\n"
                             "web           running   debian    2      1024MiB   4GiB    1h\n"
                             "a-long-lane   stopped   minimal   1      512MiB    16GiB   1m\n");
    free(buf);
    json_object_put(lanes);

    char s[32];
    format_size(0, s, sizeof(s));
    assert_string_equal(s, "0 B");
    format_size(1536, s, sizeof(s));
    assert_string_equal(s, "1.5 KiB");
    format_size(200ull << 20, s, sizeof(s));
    assert_string_equal(s, "200 MiB");
    format_age(1000, NULL, s, sizeof(s));
    assert_string_equal(s, "-");
    format_age(1000, "garbage", s, sizeof(s));
    assert_string_equal(s, "-");
    format_age(1704070800 + 3 * 86400, "2024-01-01T01:00:00Z", s, sizeof(s));
    assert_string_equal(s, "3d");

    char *esc = url_escape("/a b/ü?&=%");
    assert_string_equal(esc, "/a%20b/%C3%BC%3F%26%3D%25");
    free(esc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_socket_path), cmocka_unit_test(test_names_and_numbers),
        cmocka_unit_test(test_create_args), cmocka_unit_test(test_exec_args),
        cmocka_unit_test(test_cp_spec),     cmocka_unit_test(test_base64),
        cmocka_unit_test(test_ndjson_split), cmocka_unit_test(test_exit_codes),
        cmocka_unit_test(test_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
