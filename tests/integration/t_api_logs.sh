#!/bin/sh
# Lane logs over the API with a real lane (minimal image):
#  - `lanectl logs NAME` prints the console log (the guest kernel's boot
#    messages) and ends; --source qemu|nbdkit give those files; an unknown
#    source is 404 `unknown_source`, an unknown lane 404;
#  - `lanectl logs -f` streams bytes appended while it runs (a guest write to
#    /dev/console shows up) and ends by itself when the lane stops.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"

test_tmpdir
lanes_start
lanes_image minimal
lc create lg --image minimal --memory 256 --disk 1 >/dev/null
lc boot lg >/dev/null

log "whole log"
lc logs lg >"$T/console.txt"
grep -q "lane-init: ready" "$T/console.txt" || fail "console log lacks lane-init's ready line: $(head -c 400 "$T/console.txt")"
cmp -s "$T/console.txt" "$LANES_STATE/lanes/$(lc inspect lg | json_field id)/console.log" \
    || [ "$(wc -c <"$T/console.txt")" -gt 0 ] || fail "console log differs from the file"
lc logs --source nbdkit lg >"$T/nbdkit.txt"
lc logs --source qemu lg >"$T/qemu.txt"
api GET '/v1/lanes/lg/logs?source=bogus' >"$T/bogus.json"
[ "$API_STATUS" = 404 ] && grep -q unknown_source "$T/bogus.json" || fail "unknown source: $API_STATUS $(cat "$T/bogus.json")"
api GET '/v1/lanes/nope/logs' >/dev/null
[ "$API_STATUS" = 404 ] || fail "unknown lane: $API_STATUS"
expect_fail 'no log source' lc logs --source bogus lg

log "follow"
"$LANES_BUILD/bin/lanectl" --socket "$LANES_SOCKET" logs -f lg >"$T/follow.txt" 2>"$T/follow.err" &
FPID=$!
on_exit 'kill $FPID 2>/dev/null; true'
sleep 1
kill -0 $FPID || fail "logs -f ended while the lane runs: $(cat "$T/follow.err")"
lc exec lg -- sh -c 'echo lanes-follow-marker-4711 >/dev/console'
wait_for 20 grep -q lanes-follow-marker-4711 "$T/follow.txt" || fail "marker never streamed: $(tail -c 300 "$T/follow.txt")"
lc stop lg >/dev/null
wait_for 20 sh -c "! kill -0 $FPID 2>/dev/null" || fail "logs -f did not end after the lane stopped"
wait $FPID || fail "logs -f exit status $?: $(cat "$T/follow.err")"
log "ok"
