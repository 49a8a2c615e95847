#!/bin/sh
# t_s3_faults — retries of the lanes_s3 client through tests/s3/faultproxy.py
# (a fault-injecting proxy in front of a real s3rver on loopback).
#
# For each fault (503 SlowDown, 200 with an InternalError body, connection
# reset mid-body, truncated body, a short body with a matching length that
# only the SHA-256 check can catch) a batch of PUTs or verified GETs must
# complete with every object intact, and the client must have retried
# (attempts > requests).  When every attempt fails, the error must say what
# happened (status, S3 code / checksum) and how many attempts were made, and
# the proxy must have seen exactly that many requests.  Finally the delay
# mode shows parallel transfers hiding per-request latency.
. "$(dirname "$0")/lib.sh"
. "$LANES_ROOT/tests/s3/lib-s3.sh"
test_tmpdir
s3_start
proxy_start

RETRY="--attempts 8 --backoff-ms 5 --backoff-cap-ms 50 --timeout-ms 10000"
N=24

# Run lanes-s3 -v through the proxy; $1 = label, rest = arguments.
# Sets ATT (attempts the client made).
run_ok() {
    _label=$1; shift
    # shellcheck disable=SC2086
    ls3p -v $RETRY "$@" >"$T/out" 2>"$T/err" || fail "$_label: $(cat "$T/err")"
    ATT=$(ls3_stat "$T/err" attempts)
    log "$_label: $(tail -n1 "$T/err") proxy faults=$(proxy_stat faults)"
}

# --- each fault at a 30 % rate: everything completes, with retries
proxy_set '{"mode":"503","rate":0.3,"methods":["PUT"],"seed":11}'
run_ok "PUT under 503 SlowDown" --parallel 8 put-many p503/ $N 65536
[ "$ATT" -gt $N ] || fail "no retries under 503 ($ATT attempts for $N PUTs)"
[ "$(proxy_stat faults)" -gt 0 ] || fail "proxy injected nothing"

proxy_set '{"mode":"error200","rate":0.3,"methods":["PUT"],"seed":12}'
run_ok "PUT under 200-with-Error" --parallel 8 put-many p200/ $N 65536
[ "$ATT" -gt $N ] || fail "no retries under 200-with-Error"

proxy_set '{"mode":"reset","rate":0.3,"methods":["PUT"],"seed":13}'
run_ok "PUT under resets" --parallel 8 put-many preset/ $N 65536
[ "$ATT" -gt $N ] || fail "no retries under PUT resets"

# Every object written under faults is complete (checked without the proxy).
proxy_set '{"mode":"none"}'
for p in p503/ p200/ preset/; do
    ls3 get-many "$p" >"$T/v" 2>&1 || fail "verify $p: $(cat "$T/v")"
    grep -q "^$N objects, .* all verified$" "$T/v" || fail "verify $p: $(cat "$T/v")"
done

for mode in reset truncate short 503 error200; do
    proxy_set '{"mode":"'$mode'","rate":0.3,"methods":["GET"],"seed":21}'
    f0=$(proxy_stat faults)
    run_ok "GET under $mode" --parallel 8 get-many p503/
    grep -q "^$N objects, .* all verified$" "$T/out" || fail "GET under $mode: $(cat "$T/out")"
    [ "$(proxy_stat faults)" -gt "$f0" ] || fail "proxy injected no $mode"
    [ "$ATT" -gt $((N + 1)) ] || fail "no retries under GET $mode ($ATT attempts)"
done

# --- retries run out: a clear error naming the cause and the attempts
key=$(ls3 ls p503/ | head -n1 | cut -f1)
sha=${key#p503/}
proxy_set '{"mode":"503","rate":1}'
r0=$(proxy_stat requests)
if ls3p --attempts 3 --backoff-ms 5 get "$key" --sha256 "$sha" >/dev/null 2>"$T/e1"; then
    fail "GET succeeded through a proxy that always answers 503"
fi
grep -q "^lanes-s3: GET s3://lanes-test/$key: HTTP 503 SlowDown: Please reduce your request rate. \[request id FAULTPROXY503\] (3 attempts)$" "$T/e1" \
    || fail "exhausted 503 message: $(cat "$T/e1")"
[ $(( $(proxy_stat requests) - r0 )) -eq 3 ] || fail "proxy saw $(( $(proxy_stat requests) - r0 )) requests, want 3"
log "exhausted: $(cat "$T/e1")"

proxy_set '{"mode":"short","rate":1}'
if ls3p --attempts 4 --backoff-ms 5 --sha256 "$sha" get "$key" >/dev/null 2>"$T/e2"; then
    fail "GET of a corrupted body succeeded"
fi
grep -q "body of 32768 bytes does not match the expected SHA-256 (4 attempts)" "$T/e2" \
    || fail "exhausted checksum message: $(cat "$T/e2")"
log "exhausted: $(cat "$T/e2")"

proxy_set '{"mode":"reset","rate":1,"methods":["PUT"]}'
if ls3p --attempts 3 --backoff-ms 5 put pfail/x "$T/out" 2>"$T/e3"; then
    fail "PUT succeeded through a proxy that always resets"
fi
grep -q "PUT s3://lanes-test/pfail/x: .*(3 attempts)$" "$T/e3" || fail "exhausted reset message: $(cat "$T/e3")"
log "exhausted: $(cat "$T/e3")"

# --- 50 ms per request: parallel transfers hide the latency
proxy_set '{"mode":"none","delay_ms":50}'
s=$(now)
ls3p --parallel 1 get-many p503/ >/dev/null 2>&1 || fail "serial get-many"
t1=$(elapsed "$s")
s=$(now)
ls3p --parallel 8 get-many p503/ >/dev/null 2>&1 || fail "parallel get-many"
t8=$(elapsed "$s")
log "$N GETs + 1 LIST at 50 ms each: serial ${t1}s, 8 in parallel ${t8}s"
awk -v a="$t1" -v b="$t8" 'BEGIN { exit !(b * 3 < a) }' || fail "parallel ($t8 s) not 3x faster than serial ($t1 s)"

echo "t_s3_faults: ok"
