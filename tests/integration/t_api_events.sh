#!/bin/sh
# The events stream and Prometheus metrics of a real lanesd with a real lane:
#  - `lanectl events --json` (live) sees create, every state change and the
#    boot of a lane, in order, with parsed "state" fields; --lane filters;
#  - GET /v1/events?since=0 replays the stored events, then stays open;
#  - GET /metrics counts lanes by state, observed the boot in the boot
#    histogram and the execs in the exec histogram, and counts responses
#    by status; /v1/events subscribers are visible as a gauge.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
need_cmd python3

test_tmpdir
lanes_start
lanes_image minimal

"$LANES_BUILD/bin/lanectl" --socket "$LANES_SOCKET" events --json >"$T/all.ndjson" 2>"$T/all.err" &
EV_ALL=$!
"$LANES_BUILD/bin/lanectl" --socket "$LANES_SOCKET" events --lane ev2 >"$T/ev2.txt" 2>&1 &
EV_TWO=$!
on_exit 'kill $EV_ALL $EV_TWO 2>/dev/null; true'
wait_for 10 sh -c "curl -s --unix-socket '$LANES_SOCKET' http://l/metrics | grep -q '^lanes_event_subscribers 2'" \
    || fail "subscribers gauge never reached 2"

log "a lane's life on the stream"
lc create ev1 --image minimal --disk 1 >/dev/null
lc create ev2 --image minimal --disk 1 >/dev/null
lc boot ev1 >/dev/null
lc exec ev1 -- true
lc exec ev1 -- sh -c 'exit 3' || true
lc stop ev1 >/dev/null
lc rm ev2 >/dev/null
wait_for 20 grep -q '"kind":"rm"' "$T/all.ndjson" || fail "rm event not seen: $(cat "$T/all.ndjson" "$T/all.err")"

python3 - "$T/all.ndjson" <<'PY' || fail "event stream content"
import json, sys
evs = [json.loads(l) for l in open(sys.argv[1])]
ev1 = [e for e in evs if e["lane"] == "ev1"]
states = [e["state"] for e in ev1 if e["kind"] == "state"]
assert states == ["booting", "running", "stopping", "stopped"], states
kinds = [e["kind"] for e in ev1]
assert kinds[0] == "create" and "boot" in kinds, kinds
assert kinds.index("boot") < kinds.index("state", kinds.index("boot")), kinds
ids = [e["id"] for e in evs]
assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
for e in evs:
    assert set(e) >= {"id", "ts", "lane", "lane_id", "kind", "detail"}, e
assert any(e["kind"] == "rm" and e["lane"] == "ev2" for e in evs), evs
print("events ok: %d events" % len(evs))
PY
grep -q 'ev2 .*create' "$T/ev2.txt" || fail "--lane ev2 missed its create: $(cat "$T/ev2.txt")"
! grep -q 'ev1' "$T/ev2.txt" || fail "--lane ev2 showed ev1 events: $(cat "$T/ev2.txt")"

log "replay with since=0"
set +e
curl -s --max-time 3 --unix-socket "$LANES_SOCKET" 'http://l/v1/events?since=0&kind=state' >"$T/replay.ndjson"
rc=$?
set -e
[ $rc -eq 28 ] || fail "replay stream should stay open (curl rc $rc)"
[ "$(grep -c '"kind":"state"' "$T/replay.ndjson")" = 4 ] || fail "replay: $(cat "$T/replay.ndjson")"
! grep -v '"kind":"state"' "$T/replay.ndjson" | grep -q . || fail "kind filter leaked other kinds"

log "metrics"
curl -s --unix-socket "$LANES_SOCKET" http://l/metrics >"$T/metrics"
grep -q '^lanes_lanes{state="stopped"} 1$' "$T/metrics" || fail "lanes by state: $(grep lanes_lanes "$T/metrics")"
grep -q '^lanes_lanes{state="running"} 0$' "$T/metrics" || fail "running gauge"
grep -q '^lanes_boot_duration_seconds_count 1$' "$T/metrics" || fail "boot histogram: $(grep boot "$T/metrics")"
grep -q '^lanes_boot_duration_seconds_bucket{le="+Inf"} 1$' "$T/metrics" || fail "boot +Inf bucket"
grep -q '^lanes_exec_duration_seconds_count 2$' "$T/metrics" || fail "exec histogram: $(grep exec "$T/metrics")"
grep -q '^lanes_http_responses_total{code="201"} [1-9]' "$T/metrics" || fail "201 responses not counted"
grep -q '^# TYPE lanes_boot_duration_seconds histogram$' "$T/metrics" || fail "TYPE line"
python3 - "$T/metrics" <<'PY' || fail "metrics exposition format"
import re, sys
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if line.startswith("#"):
        assert re.match(r"# (HELP|TYPE) [a-z_]+ .+", line), line
        continue
    assert re.match(r'^[a-z_]+(\{[a-z_]+="[^"]*"\})? [0-9.e+-]+$', line), line
PY
kill $EV_ALL $EV_TWO 2>/dev/null || true
wait_for 10 sh -c "curl -s --unix-socket '$LANES_SOCKET' http://l/metrics | grep -q '^lanes_event_subscribers 0'" \
    || fail "subscribers not released after the clients left"
log "ok"
