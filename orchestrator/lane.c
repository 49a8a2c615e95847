/* lane.c — lane lifecycle state machine (see lane.h). */
#include "lane.h"

#include <errno.h>
#include <string.h>

static const char *const state_names[LANE_STATE_COUNT] = {
    [LANE_CREATED] = "created", [LANE_BOOTING] = "booting", [LANE_RUNNING] = "running",
    [LANE_STOPPING] = "stopping", [LANE_STOPPED] = "stopped", [LANE_FAILED] = "failed",
};

static const char *const event_names[LANE_EV_COUNT] = {
    [LANE_EV_BOOT] = "boot", [LANE_EV_READY] = "ready", [LANE_EV_STOP] = "stop",
    [LANE_EV_EXITED] = "exited", [LANE_EV_FAIL] = "fail",
};

/* next[from][event]; -1 = not allowed. */
static const signed char next_state[LANE_STATE_COUNT][LANE_EV_COUNT] = {
    [LANE_CREATED] = {[LANE_EV_BOOT] = LANE_BOOTING, [LANE_EV_READY] = -1, [LANE_EV_STOP] = -1,
                      [LANE_EV_EXITED] = -1, [LANE_EV_FAIL] = -1},
    [LANE_BOOTING] = {[LANE_EV_BOOT] = -1, [LANE_EV_READY] = LANE_RUNNING, [LANE_EV_STOP] = LANE_STOPPING,
                      [LANE_EV_EXITED] = LANE_FAILED, [LANE_EV_FAIL] = LANE_FAILED},
    [LANE_RUNNING] = {[LANE_EV_BOOT] = -1, [LANE_EV_READY] = -1, [LANE_EV_STOP] = LANE_STOPPING,
                      [LANE_EV_EXITED] = LANE_STOPPED, [LANE_EV_FAIL] = LANE_FAILED},
    [LANE_STOPPING] = {[LANE_EV_BOOT] = -1, [LANE_EV_READY] = -1, [LANE_EV_STOP] = -1,
                       [LANE_EV_EXITED] = LANE_STOPPED, [LANE_EV_FAIL] = LANE_FAILED},
    [LANE_STOPPED] = {[LANE_EV_BOOT] = LANE_BOOTING, [LANE_EV_READY] = -1, [LANE_EV_STOP] = -1,
                      [LANE_EV_EXITED] = -1, [LANE_EV_FAIL] = -1},
    [LANE_FAILED] = {[LANE_EV_BOOT] = LANE_BOOTING, [LANE_EV_READY] = -1, [LANE_EV_STOP] = -1,
                     [LANE_EV_EXITED] = -1, [LANE_EV_FAIL] = -1},
};

const char *lane_state_name(lane_state_t s)
{
    if ((unsigned)s >= LANE_STATE_COUNT)
        return "unknown";
    return state_names[s];
}

int lane_state_parse(const char *name, lane_state_t *out)
{
    for (int i = 0; i < LANE_STATE_COUNT; i++) {
        if (strcmp(name, state_names[i]) == 0) {
            *out = (lane_state_t)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *lane_event_name(lane_event_t e)
{
    if ((unsigned)e >= LANE_EV_COUNT)
        return "unknown";
    return event_names[e];
}

int lane_transition(lane_state_t from, lane_event_t ev, lane_state_t *to)
{
    if ((unsigned)from >= LANE_STATE_COUNT || (unsigned)ev >= LANE_EV_COUNT)
        return -EINVAL;
    int n = next_state[from][ev];
    if (n < 0)
        return -EINVAL;
    *to = (lane_state_t)n;
    return 0;
}

int lane_state_is_active(lane_state_t s)
{
    return s == LANE_BOOTING || s == LANE_RUNNING || s == LANE_STOPPING;
}

int lane_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0);
        if (!ok)
            return 0;
    }
    return name[n - 1] != '-';
}
