#!/bin/sh
# Snapshots, restore and fork of real lanes (lanesd + QEMU/TCG + nbdkit +
# the guest agent's FREEZE/THAW): a running lane's unsynced write is in its
# snapshot (the freeze flushed it through to a commit), the snapshot's
# filesystem checks clean, restore (offline and --reboot) brings states
# back, forks are isolated, inspect shows parent/children, lane and
# snapshot removal + GC leave exactly the reachable objects and verify is
# clean.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
need_cmd e2fsck python3

test_tmpdir
lanes_start
lanes_image minimal
STORE_CLI="$LANES_BUILD/bin/lanes-store --store $LANES_STATE/store"

jq_py() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

printf '{"dns":{"mode":"synthetic"},"allow":[{"host":"pkgs.lanes.test","ports":[443]}]}' >"$T/pol.json"
lc create l1 --image minimal --memory 256 --disk 1 --idle-timeout 3600 --policy "$T/pol.json" >/dev/null
lc boot l1 >/dev/null
L1=$(lc inspect l1 | json_field id)

log "snapshot a running lane right after an unsynced write"
lc exec l1 -- sh -c 'echo one > /root/m'
gen0=$($STORE_CLI info disk/$L1 | awk '/^generation/ {print $2}')
api POST /v1/lanes/l1/snapshots -d '{"name":"s1"}' >"$T/s1.json"
[ "$API_STATUS" = 201 ] || fail "snapshot create: $API_STATUS $(cat "$T/s1.json")"
log "s1: $(cat "$T/s1.json")"
gen1=$(jq_py 'd["disk_generation"]' <"$T/s1.json")
[ "$gen1" -gt "$gen0" ] || fail "disk generation did not advance ($gen0 -> $gen1): freeze did not flush"
[ "$(jq_py 'd["parent"]' <"$T/s1.json")" = "image:minimal" ] || fail "s1 parent"
expect_fail "already has a snapshot" lc snapshot create l1 s1
# the guest is thawed: writes work
lc exec l1 -- sh -c 'echo two > /root/m && sync'
lc snapshot create l1 s2 >/dev/null
lc snapshot ls l1 | grep -q '^s2 .* s1 ' || fail "ls: s2's parent is not s1: $(lc snapshot ls l1)"
lc snapshot ls l1 --json | jq_py '[s["name"] for s in d["snapshots"]]' | grep -q "'s1', 's2'" || fail "ls --json"

log "the snapshot's filesystem is clean and has the unsynced write"
$STORE_CLI export snap/$L1/s1 "$T/s1.raw"
e2fsck -fn "$T/s1.raw" >"$T/fsck.log" 2>&1 || fail "e2fsck of s1: $(tail -5 "$T/fsck.log")"
debugfs -R 'cat /root/m' "$T/s1.raw" 2>/dev/null | grep -qx one || fail "s1 does not hold /root/m=one"
rm -f "$T/s1.raw"

log "fork l1@s1 -> f1 and fork l1 (current state) -> f2"
lc fork l1@s1 f1 >/dev/null
lc fork l1 f2 >/dev/null
log "forks keep the source's network, policy and idle timeout"
for f in f1 f2; do
    [ "$(lc inspect $f | json_field network)" = mediated ] || fail "$f lost the network"
    [ "$(lc inspect $f | json_field idle_timeout_s)" = 3600 ] || fail "$f lost the idle timeout"
    lc policy get $f | grep -q pkgs.lanes.test || fail "$f lost the policy: $(lc policy get $f)"
done
lc boot f1 >/dev/null
[ "$(lc exec f1 -- cat /root/m)" = one ] || fail "f1 does not start from s1"
lc exec f1 -- sh -c 'echo fork > /root/m && sync'
[ "$(lc exec l1 -- cat /root/m)" = two ] || fail "fork write visible in l1"
lc inspect f1 | jq_py 'd["parent"]["lane"], d["parent"]["snapshot"]' | tr '\n' ' ' | grep -q "l1 s1" ||
    fail "inspect f1 parent: $(lc inspect f1)"
lc inspect l1 | jq_py 'sorted(c["lane"] for c in d["children"])' | grep -q "'f1', 'f2'" ||
    fail "inspect l1 children: $(lc inspect l1)"

log "restore --reboot on the running lane"
lc snapshot restore l1 s1 --reboot >/dev/null
[ "$(lane_state l1)" = running ] || fail "l1 not running after restore --reboot"
[ "$(lc exec l1 -- cat /root/m)" = one ] || fail "restore s1: $(lc exec l1 -- cat /root/m)"
lc exec l1 -- sh -c 'echo after-restore > /root/m && sync'
expect_fail "stop it first" lc snapshot restore l1 s2

log "offline restore"
lc stop l1 >/dev/null
lc snapshot restore l1 s2 >/dev/null
lc boot l1 >/dev/null
[ "$(lc exec l1 -- cat /root/m)" = two ] || fail "offline restore of s2"
lc snapshot restore l1 s1 --reboot >/dev/null
[ "$(lc exec l1 -- cat /root/m)" = one ] || fail "s1 changed by writes after an earlier restore"

log "stopped-lane snapshot"
lc stop f1 >/dev/null
lc snapshot create f1 cold >/dev/null
lc snapshot ls f1 --json | jq_py 'd["snapshots"][0]["parent"]' | grep -qx "l1@s1" || fail "f1 snapshot parent"

log "remove snapshot s2, lane f2 (and its snapshot), then GC"
lc snapshot rm l1 s2 >/dev/null
expect_fail "no snapshot" lc snapshot rm l1 s2
lc rm f2 >/dev/null
lc stop l1 >/dev/null
sleep 3   # GC keeps objects younger than its 2 s clock margin
lc store gc --grace 0 --json >"$T/gc.json"
log "gc: $(tr -d '\n ' <"$T/gc.json")"
lc store verify >"$T/verify.txt" || fail "verify: $(cat "$T/verify.txt")"
lc store stats --json >"$T/stats.json"
[ "$(jq_py 'd["garbage_objects"]' <"$T/stats.json")" = 0 ] || fail "garbage left after gc: $(cat "$T/stats.json")"
jq_py 'd["dedup_ratio"] > 1.5' <"$T/stats.json" | grep -q True || fail "no dedup across lanes: $(cat "$T/stats.json")"
lc store stats

log "lane rm deletes its snapshots"
lc rm f1 >/dev/null
F1_SNAPS=$($STORE_CLI ls snap/ | grep -c cold || true)
[ "$F1_SNAPS" = 0 ] || fail "f1's snapshot survived lane rm"
lc boot l1 >/dev/null
[ "$(lc exec l1 -- cat /root/m)" = one ] || fail "l1 damaged by GC"
log "ok"
