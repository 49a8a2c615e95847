#!/bin/sh
# Failure handling with real processes: kill -9 of QEMU fails the lane with a
# reason and leaves nothing behind; kill -9 of nbdkit likewise; kill -9 of
# lanesd loses nothing: the restarted lanesd re-adopts the running lane.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"

test_tmpdir
lanes_start
lanes_image minimal

log "kill -9 QEMU"
lc create k1 --image minimal --disk 1 >/dev/null
lc boot k1 >/dev/null
qpid=$(lane_qemu_pid k1)
[ -n "$qpid" ] || fail "no qemu pid"
kill -KILL "$qpid"
wait_for 15 lane_state_is k1 failed \
    || fail "lane did not go to failed after qemu was killed: $(lc inspect k1)"
lc inspect k1 | json_field reason | grep -q 'qemu' || fail "failed reason does not name qemu: $(lc inspect k1)"
id=$(lc inspect k1 | json_field id)
wait_for 10 no_lane_procs "$id" || fail "nbdkit left running after qemu died"
[ -e "$LANES_STATE/lanes/$id/nbd.sock" ] && fail "nbd socket left behind"
log "a failed lane boots again with its data"
lc boot k1 >/dev/null
[ "$(lc exec k1 -- echo back)" = back ] || fail "reboot after failure"

log "kill -9 nbdkit"
npid=$(pgrep -f -- "nbdkit.*disk=$id" | head -n1)
[ -n "$npid" ] || fail "no nbdkit process for $id"
kill -KILL "$npid"
wait_for 20 lane_state_is k1 failed \
    || fail "lane did not fail after nbdkit died: $(lc inspect k1)"
lc inspect k1 | json_field reason | grep -q nbdkit || fail "reason does not name nbdkit"
wait_for 10 no_lane_procs "$id" || fail "qemu left running after nbdkit died"

log "kill -9 lanesd with a running lane"
lc boot k1 >/dev/null
lc exec k1 -- sh -c 'echo before > /root/b; sync'
qpid=$(lane_qemu_pid k1)
lanes_restart
wait_for 30 lc exec k1 -- true \
    || fail "lane not usable after lanesd restart: $(lc inspect k1)"
[ "$(lane_state k1)" = running ] || fail "lane not running after lanesd restart"
[ "$(lane_qemu_pid k1)" = "$qpid" ] || fail "lane was rebooted instead of re-adopted"
[ "$(lc exec k1 -- cat /root/b)" = before ] || fail "data lost"
log "the re-adopted lane is still supervised: kill its qemu"
kill -KILL "$qpid"
wait_for 15 lane_state_is k1 failed \
    || fail "re-adopted lane not supervised"
wait_for 10 no_lane_procs "$id" || fail "processes left"

log "lanesd killed while the lane's processes also died: cleaned up on restart"
lc boot k1 >/dev/null
qpid=$(lane_qemu_pid k1)
kill -KILL "$LANESD_PID"
kill -KILL "$qpid"
sleep 0.5
lanes_restart
wait_for 15 lane_state_is k1 failed \
    || fail "lane with dead qemu not marked failed after restart: $(lc inspect k1)"
wait_for 10 no_lane_procs "$id" || fail "orphan nbdkit not cleaned up"
log "ok"
