/* Unit tests for the lane state machine and name rules (orchestrator/lane.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>

#include "lane.h"

static void test_transitions_table(void **state)
{
    (void)state;
    static const struct {
        lane_state_t from;
        lane_event_t ev;
        int ok;
        lane_state_t to;
    } cases[] = {
        {LANE_CREATED, LANE_EV_BOOT, 1, LANE_BOOTING},
        {LANE_CREATED, LANE_EV_READY, 0, 0},
        {LANE_CREATED, LANE_EV_STOP, 0, 0},
        {LANE_CREATED, LANE_EV_FAIL, 0, 0},
        {LANE_BOOTING, LANE_EV_READY, 1, LANE_RUNNING},
        {LANE_BOOTING, LANE_EV_FAIL, 1, LANE_FAILED},
        {LANE_BOOTING, LANE_EV_STOP, 1, LANE_STOPPING},
        {LANE_BOOTING, LANE_EV_EXITED, 1, LANE_FAILED},
        {LANE_BOOTING, LANE_EV_BOOT, 0, 0},
        {LANE_RUNNING, LANE_EV_STOP, 1, LANE_STOPPING},
        {LANE_RUNNING, LANE_EV_FAIL, 1, LANE_FAILED},
        {LANE_RUNNING, LANE_EV_EXITED, 1, LANE_STOPPED},
        {LANE_RUNNING, LANE_EV_BOOT, 0, 0},
        {LANE_RUNNING, LANE_EV_READY, 0, 0},
        {LANE_STOPPING, LANE_EV_EXITED, 1, LANE_STOPPED},
        {LANE_STOPPING, LANE_EV_FAIL, 1, LANE_FAILED},
        {LANE_STOPPING, LANE_EV_STOP, 0, 0},
        {LANE_STOPPING, LANE_EV_BOOT, 0, 0},
        {LANE_STOPPED, LANE_EV_BOOT, 1, LANE_BOOTING},
        {LANE_STOPPED, LANE_EV_STOP, 0, 0},
        {LANE_STOPPED, LANE_EV_FAIL, 0, 0},
        {LANE_FAILED, LANE_EV_BOOT, 1, LANE_BOOTING},
        {LANE_FAILED, LANE_EV_READY, 0, 0},
        {LANE_FAILED, LANE_EV_EXITED, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        lane_state_t to = (lane_state_t)99;
        int r = lane_transition(cases[i].from, cases[i].ev, &to);
        if (cases[i].ok) {
            assert_int_equal(r, 0);
            assert_int_equal(to, cases[i].to);
        } else {
            assert_int_equal(r, -EINVAL);
            assert_int_equal(to, 99); /* untouched on failure */
        }
    }
}

static void test_every_active_state_can_fail(void **state)
{
    (void)state;
    for (int s = 0; s < LANE_STATE_COUNT; s++) {
        lane_state_t to;
        int r = lane_transition((lane_state_t)s, LANE_EV_FAIL, &to);
        assert_int_equal(r == 0, lane_state_is_active((lane_state_t)s));
    }
}

static void test_out_of_range(void **state)
{
    (void)state;
    lane_state_t to;
    assert_int_equal(lane_transition(LANE_STATE_COUNT, LANE_EV_BOOT, &to), -EINVAL);
    assert_int_equal(lane_transition(LANE_CREATED, LANE_EV_COUNT, &to), -EINVAL);
    assert_string_equal(lane_state_name(LANE_STATE_COUNT), "unknown");
}

static void test_state_names_roundtrip(void **state)
{
    (void)state;
    for (int s = 0; s < LANE_STATE_COUNT; s++) {
        lane_state_t back;
        assert_int_equal(lane_state_parse(lane_state_name((lane_state_t)s), &back), 0);
        assert_int_equal(back, s);
    }
    lane_state_t x;
    assert_int_equal(lane_state_parse("runnin", &x), -EINVAL);
    assert_int_equal(lane_state_parse("", &x), -EINVAL);
}

static void test_names(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int ok;
    } cases[] = {
        {"a", 1}, {"demo", 1}, {"lane-1", 1}, {"0abc", 1},
        {"", 0}, {"-a", 0}, {"a-", 0}, {"A", 0}, {"a_b", 0}, {"a.b", 0}, {"a/b", 0},
        {"a b", 0}, {"..", 0}, {"ab\n", 0},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 1}, /* 63 */
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0}, /* 64 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(lane_name_valid(cases[i].name), cases[i].ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transitions_table),
        cmocka_unit_test(test_every_active_state_can_fail),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_state_names_roundtrip),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
