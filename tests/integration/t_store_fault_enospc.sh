#!/bin/sh
# A full store disk (ENOSPC) under a running lane: lanesd's store
# (STATE/store) lives on a small tmpfs this test mounts.  A guest filling its
# disk gets EIO once the host store is full (never silent loss: what it
# synced before stays intact), the store stays consistent (verify clean), and
# after space is freed (another lane removed + GC) the lane is writable again
# (after a reboot if the guest's ext4 aborted its journal on the errors).
#
# The plugin's dirty-limit is lowered to 4M through lanesd's
# LANES_NBDKIT_FILTERS testing knob (words without '-' are parameters), so
# the store fills at the guest's writes rather than only at its flushes.
set -eu
. "$(dirname "$0")/lib.sh"
need_root
need_cmd python3 mount umount
test_tmpdir
LANES_STATE="$T/state"
SMALL="$LANES_STATE/store"
mkdir -p "$SMALL"
mount -t tmpfs -o size=72m lanes-enospc "$SMALL" || skip "cannot mount a tmpfs"
# lanes.sh's cleanup (registered later, so run first) kills the lane
# processes before the tmpfs goes away.
on_exit "umount -l '$SMALL' 2>/dev/null || true"
export LANES_NBDKIT_FILTERS="dirty-limit=4M"
. "$(dirname "$0")/lanes.sh"
lanes_start
lanes_image minimal
free_mib() { df -m --output=avail "$SMALL" | tail -n1 | tr -d ' '; }
log "store tmpfs: $(free_mib) MiB free after the image import"

lc create l0 --image minimal --memory 256 --disk 1 >/dev/null
lc create l1 --image minimal --memory 256 --disk 1 >/dev/null
lc boot l0 >/dev/null
lc exec l0 -- sh -c 'head -c 16777216 /dev/urandom > /root/ballast && sync' || fail "l0 ballast"
lc stop l0 >/dev/null
log "after l0's 16 MiB ballast: $(free_mib) MiB free"
# GC spares objects newer than the oldest open session of a live writer
# minus a 2 s clock margin (a live nbdkit's spilled chunks): l1 below stays
# a live writer, so its session must start more than 2 s after l0's
# ballast, or the ballast is rightly kept and nothing is freed later.
sleep 3

# Like a filesystem's root reserve: 4 MiB given back once the store is full
# so the store's SQLite can commit the deletion that frees the real space.
head -c 4194304 /dev/zero >"$SMALL/reserve"
lc boot l1 >/dev/null
lc exec l1 -- sh -c 'head -c 1048576 /dev/urandom > /root/keep && sync'
keep=$(lc exec l1 -- sha256sum /root/keep | cut -d' ' -f1)
log "fill l1's disk until the host store is full"
if lc exec --timeout 300 l1 -- dd if=/dev/urandom of=/root/fill bs=1M count=400 oflag=direct \
    >"$T/fill.out" 2>&1; then
    fail "filling $(($(free_mib))) MiB-free store with 400 MiB succeeded: $(tail -2 "$T/fill.out")"
fi
grep -q "Input/output error" "$T/fill.out" || fail "guest did not see EIO: $(cat "$T/fill.out")"
log "guest: $(grep -i error "$T/fill.out" | head -1); host free: $(free_mib) MiB"
[ "$(free_mib)" -le 1 ] || fail "the guest saw an error but the store is not full ($(free_mib) MiB free)"
grep -q "No space left" "$LANES_STATE"/lanes/*/nbdkit.log || fail "nbdkit did not log ENOSPC"

log "the store is consistent while full"
STORE_CLI="$LANES_BUILD/bin/lanes-store --store $LANES_STATE/store"
$STORE_CLI verify >"$T/verify.txt" 2>&1 || fail "verify on a full store: $(cat "$T/verify.txt")"

log "free space: remove lane l0 and collect"
rm -f "$SMALL/reserve"
lc rm l0 >/dev/null || fail "lane rm on a full store"
sleep 3   # GC keeps objects younger than its 2 s clock margin
lc store gc --grace 0 >/dev/null || fail "gc on a full store"
log "free after gc: $(free_mib) MiB"
[ "$(free_mib)" -ge 8 ] || fail "gc freed too little ($(free_mib) MiB)"

log "the lane is writable again"
if lc exec --timeout 120 l1 -- sh -c 'rm -f /root/fill; echo again > /root/again && sync && cat /root/again' \
    2>"$T/again.err" | grep -qx again && lc exec l1 -- dd if=/dev/zero of=/root/d bs=64k count=4 oflag=direct \
    >/dev/null 2>&1; then
    log "writable without a reboot"
else
    log "guest fs needs a reboot ($(head -1 "$T/again.err")): rebooting"
    lc stop l1 >/dev/null 2>&1 || true
    lc boot l1 >/dev/null || fail "reboot after ENOSPC: $(lc inspect l1)"
    lc exec l1 -- sh -c 'rm -f /root/fill; echo again > /root/again && sync && cat /root/again' | grep -qx again ||
        fail "lane not writable after space was freed"
fi
[ "$(lc exec l1 -- sha256sum /root/keep | cut -d' ' -f1)" = "$keep" ] || fail "data synced before ENOSPC changed"
lc stop l1 >/dev/null
$STORE_CLI verify >"$T/verify2.txt" 2>&1 || fail "verify after recovery: $(cat "$T/verify2.txt")"
log "ok"
