#!/bin/sh
# Crash consistency of the block store under a real lane (lanesd + QEMU/TCG
# + nbdkit + lane-init), kill -9 at random points:
#   - of nbdkit, of QEMU and of lanesd, during a write-heavy guest workload
#     (records appended to files, `sync` after each batch, the batch number
#     printed on the exec output stream only after its sync returned);
#   - of lanesd during snapshot create and snapshot rm, and of a GC process.
# After each kill: the disk ref's last commit, exported and with its journal
# replayed (e2fsck -fy on the copy), checks clean with e2fsck -fn; after the
# lane is back every batch reported synced is present and intact;
# `store verify` is clean; at the end `store gc` leaves exactly the
# reachable objects (nothing dangling, nothing leaked).
#
# LANES_CRASH_ROUNDS (default 3) kills per target; LANES_CRASH_SEED seeds
# the random delays (printed, so a failing run can be replayed).
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
need_cmd e2fsck python3

ROUNDS=${LANES_CRASH_ROUNDS:-3}
SEED=${LANES_CRASH_SEED:-$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')}
log "seed $SEED, $ROUNDS rounds per target"
test_tmpdir
lanes_start
lanes_image minimal
STORE_CLI="$LANES_BUILD/bin/lanes-store --store $LANES_STATE/store"

# Random delay in [lo, hi) seconds from a seeded sequence.
_rnd_n=0
rnd() {
    _rnd_n=$((_rnd_n + 1))
    awk -v s="$SEED" -v n="$_rnd_n" -v lo="$1" -v hi="$2" \
        'BEGIN { srand(s * 1000 + n); printf "%.2f", lo + rand() * (hi - lo) }'
}

jq_py() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# The guest workload for round $1: 4 append-only record files plus 4 blobs
# rewritten in place (partial-chunk writes), sync, then print the batch.
WORKLOAD='d=/root/w$1; mkdir -p $d; echo $$ > $d/pid
pad=$(head -c 600 /dev/zero | tr "\0" x)
i=0
while [ $i -lt 100000 ]; do
  i=$((i + 1))
  for f in 0 1 2 3; do printf "%08d:%d:%s\n" $i $f "$pad" >> $d/f$f; done
  dd if=/dev/urandom of=$d/blob$((i % 4)) bs=4k count=6 conv=notrunc 2>/dev/null
  sync
  echo $i
done'

# Check the record files of round $1 against the last synced batch $2.
check_round() {
    for f in 0 1 2 3; do
        lc exec c1 -- cat "/root/w$1/f$f" >"$T/f.txt" || fail "round $1: cannot read f$f"
        python3 - "$T/f.txt" "$2" "$f" <<'EOF' || fail "round $1: f$f lost synced records (last synced batch $2)"
import sys
path, synced, f = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lines = open(path, "rb").read().split(b"\n")
pad = b"x" * 600
for i in range(1, synced + 1):
    want = b"%08d:%s:%s" % (i, f.encode(), pad)
    if i > len(lines) or lines[i - 1] != want:
        got = lines[i - 1][:40] if i <= len(lines) else b"<missing>"
        print("record %d: %r" % (i, got), file=sys.stderr)
        sys.exit(1)
EOF
    done
}

# The committed disk is a crash image: replay its journal, then it must be clean.
check_fsck() {
    rm -f "$T/disk.raw"
    $STORE_CLI export "disk/$C1" "$T/disk.raw" >/dev/null || fail "$1: export"
    e2fsck -fy "$T/disk.raw" >"$T/fsck1.log" 2>&1 || [ $? -le 1 ] ||
        fail "$1: journal replay (e2fsck -fy): $(tail -5 "$T/fsck1.log")"
    e2fsck -fn "$T/disk.raw" >"$T/fsck2.log" 2>&1 || fail "$1: e2fsck -fn not clean: $(tail -8 "$T/fsck2.log")"
    rm -f "$T/disk.raw"
}

check_verify() {
    $STORE_CLI verify >"$T/verify.txt" 2>&1 || fail "$1: store verify: $(tail -5 "$T/verify.txt")"
}

wait_exec_gone() {
    _n=0
    while kill -0 "$EXEC_PID" 2>/dev/null && [ $_n -lt 200 ]; do sleep 0.1; _n=$((_n + 1)); done
    kill -KILL "$EXEC_PID" 2>/dev/null || true
    wait "$EXEC_PID" 2>/dev/null || true
}

synced_of() { grep -E '^[0-9]+$' "$T/w$1.out" | tail -n1; }

start_workload() {
    lc exec c1 -- sh -c "$WORKLOAD" _ "$1" >"$T/w$1.out" 2>"$T/w$1.err" &
    EXEC_PID=$!
    wait_for 60 grep -q '^[0-9]' "$T/w$1.out" || fail "round $1: workload produced no batch: $(cat "$T/w$1.err")"
}

nbdkit_pid() {
    for _p in $(lane_procs "$C1"); do
        [ "$(cat /proc/"$_p"/comm 2>/dev/null)" = nbdkit ] && { echo "$_p"; return 0; }
    done
    return 1
}

lane_down() { _s=$(lane_state c1); [ "$_s" = failed ] || [ "$_s" = stopped ]; }

lc create c1 --image minimal --memory 256 --disk 1 >/dev/null
lc boot c1 >/dev/null
C1=$(lc inspect c1 | json_field id)
T0=$(now)
round=0
CHECKED=""

for target in nbdkit qemu lanesd; do
    r=0
    while [ $r -lt "$ROUNDS" ]; do
        r=$((r + 1))
        round=$((round + 1))
        start_workload $round
        sleep "$(rnd 0.2 3)"
        case $target in
        nbdkit) pid=$(nbdkit_pid) || fail "no nbdkit process"; kill -KILL "$pid" ;;
        qemu) kill -KILL "$(lane_qemu_pid c1)" ;;
        lanesd) lanes_restart ;;
        esac
        wait_exec_gone
        synced=$(synced_of $round)
        log "round $round: kill -9 $target after batch $synced was synced"
        if [ $target = lanesd ]; then
            wait_for 20 lane_state_is c1 running || fail "lane not running after lanesd restart: $(lane_state c1)"
            # the workload may still run in the guest: stop it, then check
            lc exec c1 -- sh -c "kill \$(cat /root/w$round/pid) 2>/dev/null; true"
        else
            wait_for 30 lane_down || fail "lane did not go down after $target died: $(lane_state c1)"
            check_fsck "round $round ($target)"
            lc boot c1 >/dev/null || fail "reboot after kill -9 $target: $(lc inspect c1)"
        fi
        check_round $round "$synced"
        CHECKED="$CHECKED $round:$synced"
        check_verify "round $round"
    done
done
log "workload rounds done in $(elapsed "$T0") s"

log "kill -9 lanesd during snapshot create"
i=0
while [ $i -lt "$ROUNDS" ]; do
    i=$((i + 1))
    lc exec c1 -- sh -c "head -c 8388608 /dev/urandom > /root/snapdata$i; echo s$i > /root/marker"
    api POST /v1/lanes/c1/snapshots -d "{\"name\":\"k$i\"}" >"$T/snap.json" 2>/dev/null &
    CURL_PID=$!
    sleep "$(rnd 0 0.4)"
    lanes_restart
    wait "$CURL_PID" 2>/dev/null || true
    log "snapshot k$i: $(grep -o '"code":"[a-z_]*"\|"disk_generation":[0-9]*' "$T/snap.json" | head -1 || true)"
    wait_for 30 lane_state_is c1 running || fail "lane not running after restart: $(lane_state c1)"
    # the guest must be thawed (a frozen fs would block this write forever)
    lc exec --timeout 60 c1 -- sh -c "echo thawed > /root/thaw$i && sync" ||
        fail "guest still frozen after lanesd died during snapshot create"
    if $STORE_CLI info "snap/$C1/k$i" >/dev/null 2>&1; then
        log "snapshot k$i exists: checking it"
        $STORE_CLI export "snap/$C1/k$i" "$T/snap.raw" >/dev/null
        e2fsck -fy "$T/snap.raw" >/dev/null 2>&1 || true
        e2fsck -fn "$T/snap.raw" >"$T/fsck.log" 2>&1 || fail "snapshot k$i not clean: $(tail -5 "$T/fsck.log")"
        rm -f "$T/snap.raw"
    else
        log "snapshot k$i does not exist (killed before its commit)"
    fi
    check_verify "snapshot create $i"
done

log "kill -9 lanesd during snapshot rm"
for s in $($STORE_CLI ls "snap/$C1/" 2>/dev/null | awk '{print $1}' | sed 's|.*/||'); do
    api DELETE "/v1/lanes/c1/snapshots/$s" >/dev/null 2>&1 &
    CURL_PID=$!
    sleep "$(rnd 0 0.1)"
    lanes_restart
    wait "$CURL_PID" 2>/dev/null || true
    log "snapshot rm $s: $($STORE_CLI info "snap/$C1/$s" >/dev/null 2>&1 && echo still there || echo gone)"
    check_verify "snapshot rm $s"
done

log "kill -9 of GC processes at random points"
KILLED_GC=0
lc stop c1 >/dev/null
sleep 3   # GC keeps objects younger than its 2 s clock margin
i=0
while [ $i -lt $((ROUNDS * 3)) ]; do
    i=$((i + 1))
    $STORE_CLI gc --grace 0 >/dev/null 2>&1 &
    GC_PID=$!
    # a GC of this store takes tens of ms (pack index, no file per object)
    sleep "$(rnd 0 0.08)"
    if kill -KILL "$GC_PID" 2>/dev/null; then KILLED_GC=$((KILLED_GC + 1)); fi
    wait "$GC_PID" 2>/dev/null || true
    check_verify "gc kill $i"
done

log "$KILLED_GC of $((ROUNDS * 3)) GC runs were killed mid-run"
[ "$KILLED_GC" -gt 0 ] || fail "no GC run was killed mid-run (too fast?): the test did not test it"
log "final GC: objects == reachable"
$STORE_CLI gc --grace 0 --json >"$T/gc.json" || fail "gc: $(cat "$T/gc.json")"
$STORE_CLI gc --grace 0 --json >"$T/gc2.json" || fail "gc: $(cat "$T/gc2.json")"
jq_py 'd["objects"] == d["reachable"] and d["garbage_objects"] == 0' <"$T/gc2.json" | grep -qx True ||
    fail "objects != reachable after gc: $(cat "$T/gc2.json")"
check_verify "final"
lc boot c1 >/dev/null
for rs in $CHECKED; do check_round "${rs%%:*}" "${rs##*:}"; done
log "ok ($(elapsed "$T0") s after boot)"
