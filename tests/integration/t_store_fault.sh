#!/bin/sh
# Store faults seen from a running lane (lanesd + QEMU/TCG + nbdkit):
#  1. integrity: an object of a file the guest wrote is corrupted on the
#     host; once the plugin's chunk cache no longer holds it, reading the
#     file in the guest fails with EIO (never wrong data), the lane is marked
#     degraded with the reason, an "integrity" event is stored, the state
#     survives a lanesd restart, and `store verify` names the lane's ref.
#  2. nbdkit's error filter (lanesd's LANES_NBDKIT_FILTERS testing knob):
#     while the trigger file exists guest reads and writes get EIO; the store
#     stays consistent (verify clean); without the trigger the lane works
#     again after a reboot, and what the guest synced before is intact.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
need_cmd debugfs e2fsck python3 sha256sum

test_tmpdir
TRIGGER="$T/inject-errors"
export LANES_NBDKIT_FILTERS="--filter=error error-rate=100% error-file=$TRIGGER"
lanes_start
lanes_image minimal
STORE_CLI="$LANES_BUILD/bin/lanes-store --store $LANES_STATE/store"

lc create l1 --image minimal --memory 256 --disk 1 >/dev/null
lc boot l1 >/dev/null
L1=$(lc inspect l1 | json_field id)
[ "$(lc inspect l1 | json_field degraded)" = False ] || fail "new lane is degraded"
grep -q -- "--filter=error" /proc/"$(pgrep -f -- "$LANES_STATE/lanes/$L1/nbd.sock" | head -1)"/cmdline ||
    fail "nbdkit was not started with the filter knob"

log "write a 256 KiB file (unique data) and 8 MiB of filler, sync"
lc exec l1 -- sh -c 'head -c 8388608 /dev/urandom > /root/filler &&
    head -c 262144 /dev/urandom > /root/target && sync' || fail "guest write"
want=$(lc exec l1 -- sha256sum /root/target | cut -d' ' -f1)

log "find the chunk in the middle of /root/target in the committed disk"
$STORE_CLI export "disk/$L1" "$T/disk.raw" || fail "export"
# replay the journal on the copy so debugfs sees the new files
e2fsck -fy "$T/disk.raw" >"$T/fsck.log" 2>&1 || [ $? -le 2 ] || fail "e2fsck -fy: $(tail -3 "$T/fsck.log")"
bs=$(debugfs -R "stats" "$T/disk.raw" 2>/dev/null | awk -F: '/^Block size/ {gsub(/ /,"",$2); print $2}')
[ -n "$bs" ] || fail "debugfs stats"
blk=$(debugfs -R "bmap /root/target $((131072 / bs))" "$T/disk.raw" 2>/dev/null)
[ -n "$blk" ] || fail "debugfs bmap"
idx=$((blk * bs / 65536))
hex=$(dd if="$T/disk.raw" bs=65536 skip="$idx" count=1 2>/dev/null | sha256sum | cut -d' ' -f1)
OBJ="$(dirname "$0")/store_objects.py"
python3 "$OBJ" locate "$LANES_STATE/store" "$hex" >/dev/null || fail "object of chunk $idx not found"
rm -f "$T/disk.raw"
log "chunk $idx = $hex: corrupting one byte"
python3 "$OBJ" corrupt "$LANES_STATE/store" "$hex" 1000

log "evict it from the guest page cache and the plugin's chunk cache, read"
lc exec l1 -- sh -c 'echo 3 > /proc/sys/vm/drop_caches; cat /root/filler > /dev/null' ||
    fail "reading the filler failed"
if lc exec l1 -- cat /root/target >"$T/read.out" 2>"$T/read.err"; then
    fail "reading a file over a corrupt chunk succeeded ($(sha256sum <"$T/read.out"))"
fi
grep -qi "error" "$T/read.err" || fail "guest read error is not an I/O error: $(cat "$T/read.err")"
log "guest: $(head -1 "$T/read.err")"
is_degraded() { [ "$(lc inspect "$1" | json_field degraded)" = True ]; }
wait_for 10 is_degraded l1 || fail "lane not marked degraded: $(lc inspect l1)"
reason=$(lc inspect l1 | json_field degraded_reason)
echo "$reason" | grep -q "corrupt" || fail "degraded reason does not say corrupt: $reason"
echo "$reason" | grep -q "$hex" || fail "degraded reason does not name the object: $reason"
timeout 3 curl -sN --unix-socket "$LANES_SOCKET" "http://lanes/v1/events?lane=l1&kind=integrity&since=0" \
    >"$T/events.ndjson" || true
grep -q '"kind":"integrity"' "$T/events.ndjson" || fail "no integrity event: $(cat "$T/events.ndjson")"
if lc store verify >"$T/verify.txt" 2>&1; then
    fail "verify is clean with a corrupt object"
fi
grep -q "$hex" "$T/verify.txt" || fail "verify does not name the object: $(cat "$T/verify.txt")"
grep -q "disk/$L1" "$T/verify.txt" || fail "verify does not name the lane's ref: $(cat "$T/verify.txt")"

log "degraded survives a lanesd restart"
lanes_restart
wait_for 10 lc ls >/dev/null 2>&1 || fail "lanesd does not answer after restart"
[ "$(lc inspect l1 | json_field degraded)" = True ] || fail "degraded lost across restart"
[ "$(lc exec l1 -- sh -c 'echo alive')" = alive ] || fail "degraded lane no longer runs commands"

lc rm --force l1 >/dev/null

log "error filter: lane l2, sync a file, then inject EIO"
lc create l2 --image minimal --memory 256 --disk 1 >/dev/null
lc boot l2 >/dev/null
L2=$(lc inspect l2 | json_field id)
lc exec l2 -- sh -c 'head -c 1048576 /dev/urandom > /root/before && sync'
before=$(lc exec l2 -- sha256sum /root/before | cut -d' ' -f1)
touch "$TRIGGER"
if lc exec l2 -- dd if=/dev/zero of=/root/during bs=64k count=4 oflag=direct >"$T/w.out" 2>&1; then
    fail "direct write succeeded with the error filter on"
fi
grep -qi "error" "$T/w.out" || fail "write error is not an I/O error: $(cat "$T/w.out")"
if lc exec l2 -- dd if=/root/before of=/dev/null bs=64k iflag=direct >"$T/r.out" 2>&1; then
    fail "direct read succeeded with the error filter on"
fi
log "guest saw: $(grep -i error "$T/w.out" | head -1) / $(grep -i error "$T/r.out" | head -1)"
lc store verify >"$T/verify2.txt" 2>&1 || fail "store not consistent under injected errors: $(cat "$T/verify2.txt")"
[ "$(lc inspect l2 | json_field degraded)" = False ] ||
    fail "errors above the plugin marked the lane degraded (the store is fine)"

log "remove the trigger, reboot: the lane works and the synced file is intact"
rm -f "$TRIGGER"
lc stop l2 >/dev/null 2>&1 || true
wait_for 60 lane_state_is l2 stopped || wait_for 60 lane_state_is l2 failed || fail "l2 did not stop: $(lane_state l2)"
lc boot l2 >/dev/null
[ "$(lc exec l2 -- sha256sum /root/before | cut -d' ' -f1)" = "$before" ] || fail "synced file damaged"
lc exec l2 -- sh -c 'echo after > /root/after && sync && cat /root/after' | grep -qx after ||
    fail "lane not writable after the trigger was removed"
lc stop l2 >/dev/null
lc store verify >"$T/verify3.txt" 2>&1 || fail "verify after recovery: $(cat "$T/verify3.txt")"
log "ok"
