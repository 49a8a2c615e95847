/* test_lanectl_progress.c — lanectl's progress line: the formatter (sizes,
 * percent, bar, rate, unknown totals, truncation) and that a disabled or
 * never-drawn meter writes nothing. Table-driven. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "progress.h"

static void test_format(void **state)
{
    (void)state;
    static const struct {
        uint64_t done, total;
        double secs;
        const char *want;
    } cases[] = {
        {0, 0, 0, "f  0 B  0 B/s"},
        {1536, 0, 1.0, "f  1.5 KiB  1.5 KiB/s"},
        {0, 4u << 20, 0, "f  0 B / 4 MiB    0% [                    ]  0 B/s"},
        {1u << 20, 4u << 20, 2.0, "f  1 MiB / 4 MiB   25% [=====               ]  512 KiB/s"},
        {4u << 20, 4u << 20, 1.0, "f  4 MiB / 4 MiB  100% [====================]  4 MiB/s"},
        {5u << 20, 4u << 20, 1.0, "f  5 MiB / 4 MiB  100% [====================]  5 MiB/s"},
        {3, 10, 0.01, "f  3 B / 10 B   30% [======              ]  0 B/s"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[200];
        size_t n = progress_format(buf, sizeof(buf), "f", cases[i].done, cases[i].total, cases[i].secs);
        assert_string_equal(buf, cases[i].want);
        assert_int_equal(n, strlen(cases[i].want));
    }
    char small[8];
    size_t n = progress_format(small, sizeof(small), "a-long-label", 1, 0, 1);
    assert_int_equal(n, sizeof(small) - 1);
    assert_string_equal(small, "a-long-");
}

/* A disabled meter, or one finished before its first redraw, leaves stderr untouched. */
static void test_silent(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    int saved = dup(STDERR_FILENO);
    dup2(p[1], STDERR_FILENO);
    progress_t m;
    progress_init(&m, "x", 100, false, false);
    progress_update(&m, 50);
    progress_finish(&m, true);
    progress_init(&m, "y", 100, false, true);
    progress_update(&m, 100); /* within the first redraw interval: not drawn */
    progress_finish(&m, true);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(p[1]);
    char buf[64];
    assert_int_equal(read(p[0], buf, sizeof(buf)), 0);
    close(p[0]);
}

/* An enabled meter past its interval draws "\r...\033[K" and ends with a newline. */
static void test_draw(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    int saved = dup(STDERR_FILENO);
    dup2(p[1], STDERR_FILENO);
    progress_t m;
    progress_init(&m, "z", 1000, false, true);
    usleep(150 * 1000);
    progress_update(&m, 500);
    progress_finish(&m, true);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(p[1]);
    char buf[512];
    ssize_t n = read(p[0], buf, sizeof(buf) - 1);
    close(p[0]);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "\rz  500 B / 1000 B   50% "));
    assert_non_null(strstr(buf, "\rz  1000 B / 1000 B  100% [====================]"));
    assert_int_equal(buf[n - 1], '\n');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_silent),
        cmocka_unit_test(test_draw),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
