#!/bin/sh
# Snapshots, fork and GC of lanes in an S3 store, across two lanesd with
# their own state and cache dirs ("host A", "host B"), one bucket.
#
#   - A: snapshot a running S3 lane, fork it from the snapshot (LANE@SNAP)
#     and from its current state (running: freeze, flush, snapshot, fork);
#     both forks live in the same store and are registered in the bucket
#   - A: remove the snapshot the first fork came from, gc --store --grace 0:
#     the fork keeps its data (it is its own ref)
#   - B adds the store: it lists the source and both forks, boots each fork
#     with the data A wrote at the time; snapshot ls on B shows A's
#     snapshots; B's snapshot + restore of a fork reaches the bucket and A
#     sees the snapshot; store verify/stats --store on B
#   - B: rm of a fork removes it from the bucket, a background GC of the S3
#     store follows, and A forgets the fork
#   s3rver does not enforce conditional writes: both hosts add the store
#   with --allow-unenforced-leases and the test moves lanes sequentially
#   (t_s3_lane.sh covers the refusal without it).
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
. "$LANES_ROOT/tests/s3/lib-s3.sh"
need_cmd python3 curl

test_tmpdir
s3_start
lanes_start
lanes_image minimal
add_store() { # lanectl-function NAME
    "$1" store add "$2" s3 --endpoint "$S3_EP" --bucket "$S3_BUCKET" --prefix snapt \
        --credentials-file "$S3_CRED" --allow-unenforced-leases >/dev/null 2>"$T/add-$2.err" ||
        fail "store add $2: $(cat "$T/add-$2.err")"
}
add_store lc sa

log "A: a lane in the store; snapshot it running; fork LANE@SNAP and the current state"
lc create src --image minimal --memory 256 --disk 1 --network none --store sa >/dev/null
SRC=$(lc inspect src | json_field id)
lc boot src >/dev/null
lc exec src -- sh -c 'echo v1 > /root/data && sync'
lc snapshot create src s1 >/dev/null || fail "snapshot of a running S3 lane"
lc exec src -- sh -c 'echo v2 > /root/data && sync'
lc fork src@s1 f1 >"$T/f1.out" 2>&1 || fail "fork src@s1: $(cat "$T/f1.out")"
lc fork src f2 >"$T/f2.out" 2>&1 || fail "fork of the running lane's current state: $(cat "$T/f2.out")"
for f in f1 f2; do
    lc inspect $f | json_field store | grep -qx sa || fail "$f is not in the source's store: $(lc inspect $f)"
    ls3 ls snapt/meta/lanes/ | grep -q "/$f.json" || fail "$f is not registered in the bucket"
done
F1=$(lc inspect f1 | json_field id)
F2=$(lc inspect f2 | json_field id)
ls3 ls snapt/refs/ >"$T/refs.txt"
for r in "disk/$F1" "disk/$F2" "snap/$SRC/s1" "snap/$SRC/fork-f2"; do
    grep -q "snapt/refs/$r" "$T/refs.txt" || fail "ref $r not in the bucket: $(cat "$T/refs.txt")"
done
lc snapshot ls src >"$T/snaps-a.txt"
grep -q '^s1 ' "$T/snaps-a.txt" && grep -q '^fork-f2 ' "$T/snaps-a.txt" || fail "snapshot ls on A: $(cat "$T/snaps-a.txt")"
lc stop src >/dev/null

log "A: remove s1 (f1's origin) and collect garbage: f1 keeps its data"
lc snapshot rm src s1 >/dev/null || fail "snapshot rm on an S3 lane"
ls3 ls snapt/refs/ | grep -q "snap/$SRC/s1" && fail "s1 still in the bucket"
sleep 3   # past GC's clock margin
lc store gc --store sa --grace 0 --json >"$T/gc.json" || fail "store gc --store sa: $(cat "$T/gc.json")"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["refs"] >= 4, d' "$T/gc.json" ||
    fail "gc did not mark from the S3 store's refs: $(cat "$T/gc.json")"
lc store verify --store sa >"$T/verify-a.txt" || fail "verify on A: $(cat "$T/verify-a.txt")"

log "host B: own state and cache; adopts src, f1, f2 from the bucket"
STATE_B="$T/state-b"
SOCK_B="$STATE_B/lanesd.sock"
mkdir -p "$STATE_B"
"$LANES_BUILD/bin/lanesd" --state-dir "$STATE_B" --boot-timeout "${LANES_BOOT_TIMEOUT:-120}" \
    >>"$STATE_B/lanesd.log" 2>&1 &
LANESD_B=$!
on_exit 'for p in $(pgrep -f -- "$STATE_B/lanes/" 2>/dev/null); do kill -9 $p 2>/dev/null; done; kill_wait $LANESD_B'
wait_for 10 test -S "$SOCK_B" || fail "lanesd B did not start: $(tail -5 "$STATE_B/lanesd.log")"
lcb() { "$LANES_BUILD/bin/lanectl" --socket "$SOCK_B" "$@"; }
add_store lcb sb
lcb ls >"$T/ls-b.txt"
for l in src f1 f2; do grep -q "^$l " "$T/ls-b.txt" || fail "B does not list $l: $(cat "$T/ls-b.txt")"; done
[ "$(lcb inspect f1 | json_field id)" = "$F1" ] || fail "B's f1 has another id"
lcb snapshot ls src >"$T/snaps-b.txt"
grep -q '^fork-f2 ' "$T/snaps-b.txt" || fail "B does not see A's snapshot: $(cat "$T/snaps-b.txt")"
grep -q '^s1 ' "$T/snaps-b.txt" && fail "B still sees the removed snapshot"

log "host B: the forks boot with the data A wrote at the time"
lcb boot f1 >/dev/null || fail "B: boot f1: $(tail -5 "$STATE_B/lanesd.log")"
[ "$(lcb exec f1 -- cat /root/data)" = v1 ] || fail "f1 on B: expected v1, got $(lcb exec f1 -- cat /root/data)"
lcb boot f2 >/dev/null || fail "B: boot f2"
[ "$(lcb exec f2 -- cat /root/data)" = v2 ] || fail "f2 on B: expected v2"

log "host B: snapshot and restore f1; A sees the snapshot"
lcb snapshot create f1 b1 >/dev/null || fail "B: snapshot f1"
lcb exec f1 -- sh -c 'echo changed-on-b > /root/data && sync'
lcb snapshot restore f1 b1 --reboot >/dev/null || fail "B: restore f1"
[ "$(lcb exec f1 -- cat /root/data)" = v1 ] || fail "restore on B did not roll back"
wait_for 20 sh -c "'$LANES_BUILD/bin/lanectl' --socket '$LANES_SOCKET' snapshot ls f1 | grep -q '^b1 '" ||
    fail "A does not see B's snapshot of f1"
lcb stop f1 >/dev/null
lcb stop f2 >/dev/null
lcb store stats --store sb --json >"$T/stats-b.json" || fail "stats --store on B"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["refs"] >= 5 and d["objects"] > 0, d' \
    "$T/stats-b.json" || fail "stats on B: $(cat "$T/stats-b.json")"
lcb store verify --store sb >"$T/verify-b.txt" || fail "verify on B: $(cat "$T/verify-b.txt")"
lcb store gc --store nosuch >"$T/gc-no.txt" 2>&1 && fail "gc of an unknown store succeeded"
grep -q "no available store" "$T/gc-no.txt" || fail "unknown store message: $(cat "$T/gc-no.txt")"

log "host B: rm of a fork leaves the bucket and its store is collected in the background; A forgets it"
lcb rm f2 >/dev/null || fail "B: rm f2"
ls3 ls snapt/meta/lanes/ | grep -q "/f2.json" && fail "f2's document is still in the bucket"
ls3 ls snapt/refs/disk/ | grep -q "$F2" && fail "f2's disk ref is still in the bucket"
# B's local store is empty: a GC line with refs > 0 is the S3 store's
wait_for 30 grep -Eq 'store gc: \{ ?"refs": ?[1-9]' "$STATE_B/lanesd.log" ||
    fail "no background GC of the S3 store on B: $(grep 'store gc' "$STATE_B/lanesd.log")"
wait_for 20 sh -c "! '$LANES_BUILD/bin/lanectl' --socket '$LANES_SOCKET' ls | grep -q '^f2 '" ||
    fail "A still lists f2 after B removed it"
log "ok"
