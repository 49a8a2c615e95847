#!/bin/sh
# Snapshots of a running *debian* lane under a write-heavy guest workload
# (lanesd + QEMU/TCG + nbdkit + the guest agent's FREEZE/THAW; the store
# keeps chunks in pack files): while a guest loop keeps rewriting files with
# fsync, snapshots are taken; each snapshot's ext4 checks clean and holds
# the marker written (and synced) just before it; a fork of the first
# snapshot boots with that state and its writes stay its own; restore
# --reboot and an offline restore bring each state back; afterwards verify
# is clean and GC leaves exactly the reachable objects.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
need_cmd e2fsck debugfs python3

test_tmpdir
lanes_start
lanes_image debian
STORE_CLI="$LANES_BUILD/bin/lanes-store --store $LANES_STATE/store"
jq_py() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

lc create d1 --image debian --memory 512 --disk 2 --idle-timeout 3600 >/dev/null
lc boot d1 >/dev/null
L1=$(lc inspect d1 | json_field id)

# The workload: 24 files of 512 KiB rewritten in turn with fsync, plus a
# running log, until /root/stop exists (bounded: 600 rounds).
lc exec d1 -- sh -c 'mkdir -p /root/w && rm -f /root/stop'
WL_PID=""
on_exit '[ -z "$WL_PID" ] || kill $WL_PID 2>/dev/null || true'
lc exec d1 -- sh -c 'i=0; while [ ! -e /root/stop ] && [ $i -lt 600 ]; do
    dd if=/dev/urandom of=/root/w/f$((i % 24)) bs=64k count=8 conv=fsync 2>/dev/null
    echo "round $i" >> /root/w/log; i=$((i + 1)); done; echo rounds=$i' \
    >"$T/workload.out" 2>&1 &
WL_PID=$!
wait_for 60 lc exec d1 -- test -s /root/w/log || fail "the workload did not start"

rounds_done() { lc exec d1 -- wc -l /root/w/log | cut -d' ' -f1; }
enough_rounds() { [ "$(rounds_done)" -ge "$1" ]; }
snap_during_workload() {  # NAME VALUE: marker := VALUE (synced), snapshot
    want=$(($(rounds_done) + 25))
    wait_for 300 enough_rounds "$want" || fail "the workload stalled before $1"
    lc exec d1 -- sh -c "echo $2 > /root/marker && sync"
    t0=$(now)
    lc snapshot create d1 "$1" >/dev/null || fail "snapshot $1 under load"
    log "snapshot $1 under load: $(elapsed "$t0") s (freeze, flush, commit, thaw)"
    lc exec d1 -- sh -c "echo $2-after > /root/marker && sync"
}
snap_during_workload s1 first
snap_during_workload s2 second
lc exec d1 -- touch /root/stop
wait "$WL_PID" || fail "workload failed: $(cat "$T/workload.out")"
WL_PID=""
log "workload: $(cat "$T/workload.out")"
grep -q "rounds=" "$T/workload.out" || fail "workload output: $(cat "$T/workload.out")"
[ "$(lc exec d1 -- cat /root/marker)" = second-after ] || fail "live marker"
[ "$(rounds_done)" -ge 50 ] || fail "the workload wrote too little: $(rounds_done) rounds"

log "each snapshot's filesystem is clean and has its marker"
for s in s1:first s2:second; do
    name=${s%%:*} want=${s#*:}
    $STORE_CLI export "snap/$L1/$name" "$T/$name.raw"
    e2fsck -fn "$T/$name.raw" >"$T/fsck-$name.log" 2>&1 ||
        fail "e2fsck of $name: $(tail -5 "$T/fsck-$name.log")"
    got=$(debugfs -R 'cat /root/marker' "$T/$name.raw" 2>/dev/null)
    [ "$got" = "$want" ] || fail "$name holds marker '$got', not '$want'"
    # the workload's files are whole 512 KiB files in the snapshot
    debugfs -R 'ls -l /root/w' "$T/$name.raw" 2>/dev/null >"$T/ls-$name.txt"
    grep -q ' f3 *$\| f3$' "$T/ls-$name.txt" || fail "$name lacks /root/w/f3: $(cat "$T/ls-$name.txt")"
    rm -f "$T/$name.raw"
done

log "fork d1@s1 boots with s1's state; its writes are its own"
lc fork d1@s1 f1 >/dev/null
lc boot f1 >/dev/null
[ "$(lc exec f1 -- cat /root/marker)" = first ] || fail "f1 does not start from s1"
lc exec f1 -- sh -c 'dd if=/dev/urandom of=/root/w/f0 bs=64k count=8 conv=fsync 2>/dev/null &&
    echo fork > /root/marker && sync'
sum_d1=$(lc exec d1 -- sha256sum /root/w/f0 | cut -d' ' -f1)
sum_f1=$(lc exec f1 -- sha256sum /root/w/f0 | cut -d' ' -f1)
[ "$sum_d1" != "$sum_f1" ] || fail "fork and source share a rewritten file"
[ "$(lc exec d1 -- cat /root/marker)" = second-after ] || fail "fork write visible in d1"

log "restore --reboot to s1 on the running lane, then offline restore to s2"
lc snapshot restore d1 s1 --reboot >/dev/null
[ "$(lc exec d1 -- cat /root/marker)" = first ] || fail "restore s1: $(lc exec d1 -- cat /root/marker)"
lc exec d1 -- sh -c 'echo after-restore > /root/marker && sync'
lc stop d1 >/dev/null
lc snapshot restore d1 s2 >/dev/null
lc boot d1 >/dev/null
[ "$(lc exec d1 -- cat /root/marker)" = second ] || fail "offline restore of s2"
lc snapshot restore d1 s1 --reboot >/dev/null
[ "$(lc exec d1 -- cat /root/marker)" = first ] || fail "s1 changed by writes after a restore"
[ "$(lc exec f1 -- cat /root/marker)" = fork ] || fail "f1 changed by d1's restores"

log "verify, then GC leaves exactly the reachable objects"
lc stop d1 >/dev/null
lc stop f1 >/dev/null
lc snapshot rm d1 s2 >/dev/null
sleep 3   # GC keeps objects younger than its 2 s clock margin
lc store gc --grace 0 --json >"$T/gc.json"
log "gc: $(tr -d '\n ' <"$T/gc.json")"
lc store verify >"$T/verify.txt" || fail "verify: $(cat "$T/verify.txt")"
lc store stats --json >"$T/stats.json"
[ "$(jq_py 'd["garbage_objects"]' <"$T/stats.json")" = 0 ] || fail "garbage left after gc: $(cat "$T/stats.json")"
lc boot d1 >/dev/null
[ "$(lc exec d1 -- cat /root/marker)" = first ] || fail "d1 damaged by GC"
log "ok"
