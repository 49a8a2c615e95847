#!/bin/sh
# Lanes whose disks live in an S3 store (s3rver on loopback), across two
# lanesd with separate state and cache dirs ("host A" and "host B").
#
#   - store add / ls; credentials never in argv of any process, lanesd logs
#     or API output (only the file's path travels)
#   - create --store: the image is imported into the bucket on first use;
#     a lane written and stopped on A is listed by B after B adds the store
#   - s3rver ignores If-None-Match/If-Match, so the store is "unenforced":
#     without --allow-unenforced-leases B refuses to boot A's lane with a
#     clear message; with it (the operator's explicit, documented risk), B
#     boots the lane A released and sees A's data; A then refuses to boot
#     the lane while B holds its lease.
#   The lease/fencing protocol itself is covered against recorded responses
#   of an enforcing store in test_s3_lease / test_s3_store (unit).
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
. "$LANES_ROOT/tests/s3/lib-s3.sh"
need_cmd python3 curl

test_tmpdir
s3_start
lanes_start
lanes_image minimal
SECRET=S3RVER   # s3rver's fixed key id and secret: must never show up

log "host A: add the store"
lc store add s3a s3 --endpoint "$S3_EP" --bucket "$S3_BUCKET" --prefix lanes-t \
    --credentials-file "$S3_CRED" >"$T/add-a.out" 2>"$T/add-a.err" ||
    fail "store add: $(cat "$T/add-a.err")"
grep -q "conditional writes unenforced" "$T/add-a.out" || fail "store add output: $(cat "$T/add-a.out")"
grep -q "does not enforce conditional writes" "$T/add-a.err" || fail "no warning about unenforced leases"
lc store ls >"$T/ls.out"
grep -q "^s3a .* s3 .* local .*unenforced.*s3://$S3_BUCKET/lanes-t" "$T/ls.out" || fail "store ls: $(cat "$T/ls.out")"
grep -q "^local " "$T/ls.out" || fail "store ls has no local store"
api POST /v1/stores -d '{"name":"bad","type":"s3","endpoint":"http://127.0.0.1:1","bucket":"b"}' >"$T/bad.json"
[ "$API_STATUS" = 400 ] && grep -q credentials_file "$T/bad.json" || fail "no credentials file: $API_STATUS $(cat "$T/bad.json")"
api POST /v1/stores -d '{"name":"bad","type":"s3","endpoint":"http://127.0.0.1:1","bucket":"b","credentials_file":"/x","aws_secret_access_key":"k"}' >"$T/bad.json"
[ "$API_STATUS" = 400 ] || fail "a key in the request was not refused: $API_STATUS"

log "host A: create a lane in the store, write, stop"
lc create l1 --image minimal --memory 256 --disk 1 --store s3a >/dev/null
lc inspect l1 | json_field store | grep -qx s3a || fail "lane not in store s3a: $(lc inspect l1)"
L1=$(lc inspect l1 | json_field id)
ls3 ls lanes-t/refs/ >"$T/refs.txt"
grep -q "lanes-t/refs/image/minimal" "$T/refs.txt" || fail "image not imported into the bucket: $(cat "$T/refs.txt")"
grep -q "lanes-t/refs/disk/$L1" "$T/refs.txt" || fail "disk ref not in the bucket"
ls3 ls lanes-t/meta/lanes/ | grep -q "l1.json" || fail "lane document not in the bucket"
lc boot l1 >/dev/null
lc exec l1 -- sh -c 'echo written-on-A > /root/hello && sync'
NBD_PID=$(pgrep -f -- "$LANES_STATE/lanes/$L1/nbd.sock" | head -1)
[ -n "$NBD_PID" ] || fail "no nbdkit for l1"
tr '\0' ' ' <"/proc/$NBD_PID/cmdline" >"$T/cmdline"
grep -q "nbdkit-laness3-plugin.so" "$T/cmdline" || fail "lane not served by the S3 plugin: $(cat "$T/cmdline")"
grep -q "credentials" "$T/cmdline" && fail "nbdkit argv names credentials: $(cat "$T/cmdline")"
grep -q "$SECRET" "$T/cmdline" && fail "secret in nbdkit argv"
ls3 get lanes-t/leases/disk/$L1 | grep -q '"released":false' || fail "A holds no lease while running"
lc stop l1 >/dev/null
ls3 get lanes-t/leases/disk/$L1 | grep -q '"released":true' || fail "A did not release the lease at stop"

log "host B: separate state and cache; sees A's lane after store add"
STATE_B="$T/state-b"
SOCK_B="$STATE_B/lanesd.sock"
mkdir -p "$STATE_B"
"$LANES_BUILD/bin/lanesd" --state-dir "$STATE_B" --boot-timeout "${LANES_BOOT_TIMEOUT:-120}" \
    >>"$STATE_B/lanesd.log" 2>&1 &
LANESD_B=$!
on_exit 'for p in $(pgrep -f -- "$STATE_B/lanes/" 2>/dev/null); do kill -9 $p 2>/dev/null; done; kill_wait $LANESD_B'
wait_for 10 test -S "$SOCK_B" || fail "lanesd B did not start: $(tail -5 "$STATE_B/lanesd.log")"
lcb() { "$LANES_BUILD/bin/lanectl" --socket "$SOCK_B" "$@"; }
lcb store add s3b s3 --endpoint "$S3_EP" --bucket "$S3_BUCKET" --prefix lanes-t \
    --credentials-file "$S3_CRED" >/dev/null 2>&1 || fail "B: store add"
lcb ls >"$T/ls-b.out"
grep -q "^l1 " "$T/ls-b.out" || fail "B does not list A's lane: $(cat "$T/ls-b.out")"
[ "$(lcb inspect l1 | json_field id)" = "$L1" ] || fail "B's l1 has another id"
lcb boot l1 >"$T/boot-b.out" 2>&1 && fail "B booted a lane A used last on an unenforced store"
grep -q "does not enforce conditional writes" "$T/boot-b.out" || fail "refusal is not clear: $(cat "$T/boot-b.out")"
grep -q "allow-unenforced-leases" "$T/boot-b.out" || fail "refusal does not name the way out"

log "host B: re-add with --allow-unenforced-leases, boot A's lane from the bucket"
lcb store rm s3b || fail "B: store rm"
lcb ls | grep -q "^l1 " && fail "B still lists l1 after store rm"
lcb store add s3b s3 --endpoint "$S3_EP" --bucket "$S3_BUCKET" --prefix lanes-t \
    --credentials-file "$S3_CRED" --allow-unenforced-leases >/dev/null 2>&1 || fail "B: store add (allow)"
lcb boot l1 >/dev/null || fail "B: boot l1: $(tail -5 "$STATE_B/lanesd.log")"
[ "$(lcb exec l1 -- cat /root/hello)" = written-on-A ] || fail "B does not see A's data"
[ -d "$STATE_B/s3cache" ] && [ "$(ls "$STATE_B/s3cache" | wc -l)" -gt 0 ] || fail "B's cache is empty"
ls3 get lanes-t/leases/disk/$L1 | grep -q '"released":false' || fail "B holds no lease"
log "host A: refuses to boot while B holds the lease"
lc boot l1 >"$T/boot-a2.out" 2>&1 && fail "A booted a lane B holds"
grep -Eq "in use by host|does not enforce" "$T/boot-a2.out" || fail "A's refusal: $(cat "$T/boot-a2.out")"
lcb exec l1 -- sh -c 'echo written-on-B >> /root/hello && sync'

log "snapshots of an S3 lane live in its store: create, restore"
lcb snapshot create l1 s3snap >/dev/null || fail "snapshot create on an S3 lane: $(tail -3 "$STATE_B/lanesd.log")"
lcb snapshot ls l1 | grep -q '^s3snap ' || fail "snapshot ls: $(lcb snapshot ls l1)"
lcb exec l1 -- sh -c 'echo after-snapshot >> /root/hello && sync'
lcb snapshot restore l1 s3snap --reboot >/dev/null || fail "snapshot restore on an S3 lane"
lcb exec l1 -- cat /root/hello | grep -q after-snapshot && fail "restore did not roll back"
lcb exec l1 -- cat /root/hello | grep -q written-on-B || fail "restore lost pre-snapshot data"
"$LANES_BUILD/bin/lanes-store" --store "$STATE_B/stores/s3b" ls 2>/dev/null | grep -q "snap/$L1/s3snap" \
    || fail "the snapshot ref is not in the lane's S3 store"
lcb fork l1@s3snap l1fork >"$T/fork.out" 2>&1 || fail "fork of an S3 lane: $(cat "$T/fork.out")"
lcb inspect l1fork | json_field store | grep -qx s3b || fail "the fork is not in the source's store"
ls3 ls lanes-t/meta/lanes/ | grep -q "l1fork.json" || fail "the fork is not registered in the bucket"
lcb rm l1fork >/dev/null || fail "rm of the fork"
lcb stop l1 >/dev/null

log "no secret in logs or API output"
for f in "$LANES_STATE/lanesd.log" "$STATE_B/lanesd.log" "$LANES_STATE"/lanes/*/nbdkit.log \
    "$STATE_B"/lanes/*/nbdkit.log "$T/ls.out" "$T/add-a.out"; do
    [ -f "$f" ] || continue
    grep -q "$SECRET" "$f" && fail "secret found in $f"
done
api GET /v1/stores >"$T/stores.json"
grep -q "$SECRET" "$T/stores.json" && fail "secret in GET /v1/stores"
for f in "$STATE_B"/stores/*/backend.conf; do grep -q "$SECRET" "$f" && fail "secret in $f"; done

log "rm on B removes the lane from the bucket; A forgets it"
lcb rm l1 >/dev/null
ls3 ls lanes-t/refs/disk/ | grep -q "$L1" && fail "disk ref still in the bucket"
wait_for 20 sh -c "! '$LANES_BUILD/bin/lanectl' --socket '$LANES_SOCKET' ls | grep -q '^l1 '" ||
    fail "A still lists l1 after B removed it"
log "ok"
