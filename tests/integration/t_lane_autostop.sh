#!/bin/sh
# Lane TTL and idle auto-stop: a lane with idle_timeout_s stops by itself
# once nothing uses it (and not while an exec is running); a lane with ttl_s
# stops that long after boot even while busy. Stopped lanes say why.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"

test_tmpdir
lanes_start
lanes_image minimal

api POST /v1/lanes -d '{"name":"idle","image":"minimal","disk_gib":1,"idle_timeout_s":3}' >/dev/null
[ "$API_STATUS" = 201 ] || fail "create with idle_timeout_s: $API_STATUS"
api POST /v1/lanes -d '{"name":"bad","image":"minimal","idle_timeout_s":-1}' >/dev/null
[ "$API_STATUS" = 400 ] || fail "negative idle_timeout_s accepted: $API_STATUS"

lc boot idle >/dev/null
log "an exec longer than the idle timeout keeps the lane up"
[ "$(lc exec idle -- sh -c 'sleep 5; echo survived')" = survived ] || fail "lane stopped under a running exec"
log "then it stops by itself"
wait_for 15 lane_state_is idle stopped || fail "idle lane not stopped: $(lc inspect idle)"
lc inspect idle | json_field reason | grep -q "idle for 3 s" || fail "reason: $(lc inspect idle)"
no_lane_procs || fail "processes left after auto-stop"

api POST /v1/lanes -d '{"name":"ttl","image":"minimal","disk_gib":1,"ttl_s":4}' >/dev/null
lc boot ttl >/dev/null
s=$(now)
set +e; lc exec ttl -- sleep 60 >/dev/null 2>&1; set -e
wait_for 20 lane_state_is ttl stopped || fail "ttl lane not stopped: $(lc inspect ttl)"
lc inspect ttl | json_field reason | grep -q "ttl of 4 s" || fail "reason: $(lc inspect ttl)"
log "ttl stop after $(elapsed "$s") s"
log "a reboot clears the reason and restarts the clock"
lc boot ttl >/dev/null
[ -z "$(lc inspect ttl | json_field reason)" ] || fail "stale reason after boot"
log "ok"
