#!/bin/sh
# Lane lifecycle through lanectl and the API against a real lanesd, QEMU
# (TCG here) and nbdkit: create, boot, exec, stop, persistence across
# stop/boot, rm; clear errors for bad input while lanesd keeps serving.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"

test_tmpdir
lanes_start
lanes_image minimal

log "errors before any lane exists"
expect_fail "no lane named 'nope'" lc boot nope
expect_fail "no lane named 'nope'" lc exec nope -- true
expect_fail "no image named 'nosuch'" lc create x1 --image nosuch
expect_fail "invalid lane name" lc create Bad_Name --image minimal

log "create + inspect"
lc create l1 --image minimal --cpus 1 --memory 256 --disk 1 >/dev/null
[ "$(lane_state l1)" = created ] || fail "new lane is not 'created'"
expect_fail "already exists" lc create l1 --image minimal
expect_fail "not running" lc exec l1 -- true
lc ls | grep -q '^l1 ' || fail "ls does not list l1"
lc ls --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert any(l["name"]=="l1" for l in d["lanes"]), d'

log "boot"
s=$(now)
lc boot l1 >/dev/null
log "booted in $(elapsed "$s") s"
[ "$(lane_state l1)" = running ] || fail "lane not running after boot"
expect_fail "already running" lc boot l1

log "exec basics"
[ "$(lc exec l1 -- echo hello)" = hello ] || fail "echo output"
set +e; lc exec l1 -- sh -c 'exit 7'; rc=$?; set -e
[ $rc -eq 7 ] || fail "exit code 7 expected, got $rc"
[ "$(lc exec l1 -- hostname)" = l1 ] || fail "hostname is not the lane name"

log "write data, stop, boot again: it persists"
lc exec l1 -- sh -c 'echo persistent-data > /root/marker && sync'
lc stop l1 >/dev/null
[ "$(lane_state l1)" = stopped ] || fail "lane not stopped"
no_lane_procs || fail "processes left after stop: $(lane_procs)"
lc boot l1 >/dev/null
[ "$(lc exec l1 -- cat /root/marker)" = persistent-data ] || fail "data lost across stop/boot"

log "bad API input gets JSON errors and lanesd keeps serving"
api POST /v1/lanes -d '{not json' >"$T/r"; [ "$API_STATUS" = 400 ] || fail "malformed JSON: status $API_STATUS"
grep -q '"error"' "$T/r" || fail "no error body"
api POST /v1/lanes -d '{"name":"x2","cpus":"many"}' >"$T/r"; [ "$API_STATUS" = 400 ] || fail "bad cpus: $API_STATUS"
api POST /v1/lanes -d '{"name":"x2","image":"minimal","memory_mib":1}' >"$T/r"; [ "$API_STATUS" = 400 ] || fail "tiny memory: $API_STATUS"
api GET /v1/nothing-here >"$T/r"; [ "$API_STATUS" = 404 ] || fail "unknown route: $API_STATUS"
api DELETE /v1/health >"$T/r"; [ "$API_STATUS" = 405 ] || fail "wrong method: $API_STATUS"
api POST /v1/lanes/l1/exec -d '{"argv":[]}' >"$T/r"; [ "$API_STATUS" = 400 ] || fail "empty argv: $API_STATUS"
api POST /v1/lanes/l1/exec -d '{"argv":["/no/such/prog"]}' >"$T/r"; [ "$API_STATUS" = 400 ] || fail "missing program: $API_STATUS $(cat "$T/r")"
grep -q 'not_found' "$T/r" || fail "missing program error code: $(cat "$T/r")"
head -c 3000000 /dev/zero | tr '\0' 'a' >"$T/big"
api POST /v1/lanes -H 'Content-Type: application/json' --data-binary @"$T/big" >"$T/r"; [ "$API_STATUS" = 413 ] || fail "oversized body: $API_STATUS"
# a raw garbage request
printf 'GARBAGE\r\n\r\n' | timeout 5 socat - UNIX-CONNECT:"$LANES_SOCKET" >"$T/r" 2>&1 || true
grep -q '400' "$T/r" || fail "garbage request not answered with 400: $(cat "$T/r")"
[ "$(lc exec l1 -- echo still-serving)" = still-serving ] || fail "lanesd stopped serving after bad input"

log "rm refuses a running lane, then removes a stopped one and its storage"
expect_fail "stop it first" lc rm l1
lc stop l1 >/dev/null
id=$(lc inspect l1 | json_field id)
lc rm l1
expect_fail "no lane named 'l1'" lc inspect l1
[ -d "$LANES_STATE/lanes/$id" ] && fail "lane runtime dir left behind"
"$LANES_BUILD/bin/lanes-store" --store "$LANES_STATE/store" ls | grep -q "disk/$id" && fail "disk ref left behind"

log "rm --force on a running lane"
lc create l2 --image minimal --disk 1 >/dev/null
lc boot l2 >/dev/null
lc rm --force l2
wait_for 15 no_lane_procs || fail "processes left after rm --force"
log "ok"
