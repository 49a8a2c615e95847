/* lane.h — the lane lifecycle state machine and lane naming rules.
 *
 * Pure functions (no I/O) so the rules are unit-tested on their own and
 * lanesd, the API and recovery all apply the same ones.
 *
 *   created ──boot──► booting ──ready──► running ──stop──► stopping ──exited──► stopped
 *      ▲                 │                  │                  │                   │
 *      │                 └──fail────────────┴──────fail────────┴──► failed        boot
 *      │                                                             │ boot        ▼
 *      └─────────────────────────────────────────────────────────── booting ◄─────┘
 *
 * "exited" from running (the guest powered itself off) also ends in stopped;
 * any unexpected process death is "fail". stop from booting is allowed
 * (abort a boot).
 */
#ifndef LANES_LANE_H
#define LANES_LANE_H

typedef enum {
    LANE_CREATED = 0,
    LANE_BOOTING,
    LANE_RUNNING,
    LANE_STOPPING,
    LANE_STOPPED,
    LANE_FAILED,
    LANE_STATE_COUNT,
} lane_state_t;

typedef enum {
    LANE_EV_BOOT = 0, /* user asked to boot */
    LANE_EV_READY,    /* agent handshake done */
    LANE_EV_STOP,     /* user asked to stop */
    LANE_EV_EXITED,   /* QEMU exited after a shutdown (clean) */
    LANE_EV_FAIL,     /* something died or timed out */
    LANE_EV_COUNT,
} lane_event_t;

const char *lane_state_name(lane_state_t s);
/* Returns 0 and sets *out, or -EINVAL for an unknown name. */
int lane_state_parse(const char *name, lane_state_t *out);
const char *lane_event_name(lane_event_t e);

/* Apply ev to from. Returns 0 and sets *to, or -EINVAL if the transition is
 * not allowed (*to untouched). */
int lane_transition(lane_state_t from, lane_event_t ev, lane_state_t *to);

/* States in which QEMU/nbdkit may be running and lanesd must supervise. */
int lane_state_is_active(lane_state_t s);

/* Lane, image and snapshot names: [a-z0-9][a-z0-9-]{0,62}, no trailing '-'. */
int lane_name_valid(const char *name);

#endif
