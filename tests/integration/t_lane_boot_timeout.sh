#!/bin/sh
# A lane whose boot does not finish in time ends in "failed" with a reason,
# with no QEMU or nbdkit left behind; lanesd keeps serving and the same lane
# boots normally once the deadline allows it.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"

test_tmpdir
# One second is far less than a TCG boot (~2 s): the deadline must fire.
LANES_BOOT_TIMEOUT=1 lanes_start
lanes_image minimal
lc create slow --image minimal --disk 1 >/dev/null
expect_fail "timed out" lc boot slow
[ "$(lane_state slow)" = failed ] || fail "state after a boot timeout: $(lane_state slow)"
lc inspect slow | json_field reason | grep -q "timed out" || fail "reason: $(lc inspect slow)"
wait_for 10 no_lane_procs || fail "processes left after boot timeout: $(lane_procs)"
[ "$(lc ls --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["lanes"]))')" = 1 ] \
    || fail "lanesd stopped serving"

log "the same lane boots with a normal deadline"
kill -TERM "$LANESD_PID"
wait "$LANESD_PID" 2>/dev/null || true
LANES_BOOT_TIMEOUT=120 lanes_restart
lc boot slow >/dev/null
[ "$(lc exec slow -- echo up)" = up ] || fail "boot after timeout"
log "ok"
