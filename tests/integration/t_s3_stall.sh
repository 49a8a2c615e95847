#!/bin/sh
# A slow S3 store never stalls lanesd's API.  The fault proxy adds
# $DELAY_MS to every request of a store; while S3 work of that store is in
# flight (store add: probe + first sync; create with the image upload; the
# periodic sync; the boot of an S3 lane with only its lease GETs stalled
# 4 s; rm of the S3 lane), the API keeps answering promptly: health, ls,
# inspect and an exec in a running local lane each take well under the
# delay.  (With the S3 calls on the loop each of these waited for them.)
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
. "$LANES_ROOT/tests/s3/lib-s3.sh"
need_cmd python3 curl

DELAY_MS=${DELAY_MS:-4000}
LIMIT_S=${LIMIT_S:-2.0}   # an answer slower than this waited for S3 (4 s per request); typical: 0.1 s (spawning lanectl on a loaded machine can take 1 s)

test_tmpdir
s3_start
proxy_start --delay-ms "$DELAY_MS"
lanes_start
lanes_image minimal

log "a local lane, running"
lc create loc --image minimal --memory 256 --disk 1 --network none >/dev/null
lc boot loc >/dev/null
lc exec loc -- true || fail "exec in the local lane"

# probe NAME: every API answer must come quickly while S3 work is in flight
slowest=0
probe() {
    for what in health ls inspect exec; do
        tp=$(now)
        case $what in
            health) api GET /v1/health >/dev/null ;;
            ls) lc ls >/dev/null ;;
            inspect) lc inspect loc >/dev/null ;;
            exec) lc exec loc -- true ;;
        esac
        e=$(elapsed "$tp")
        slowest=$(awk -v a="$slowest" -v b="$e" 'BEGIN { print (b > a) ? b : a }')
        awk -v e="$e" -v l="$LIMIT_S" 'BEGIN { exit !(e < l) }' ||
            fail "$1: '$what' took ${e}s while S3 work was in flight (limit ${LIMIT_S}s)"
    done
}

# overlap LABEL PAUSE ARGS...: run `lc ARGS...` in the background and, after
# PAUSE seconds, probe the API every 0.2 s until it ends; it must succeed
# and overlap at least two rounds of probes.
overlap() {
    _label=$1 _pause=$2
    shift 2
    _t0=$(now)
    lc "$@" >"$T/$_label.out" 2>&1 &
    _pid=$!
    sleep "$_pause"
    _n=0
    while kill -0 $_pid 2>/dev/null; do probe "$_label"; _n=$((_n + 1)); sleep 0.2; done
    wait $_pid || fail "$_label: $(cat "$T/$_label.out")"
    log "$_label took $(elapsed "$_t0")s; $_n rounds of API calls meanwhile"
    [ "$_n" -ge 2 ] || fail "$_label was too fast to overlap anything ($_n rounds)"
}

log "store add through a proxy adding ${DELAY_MS} ms per request (in the background)"
# (too fast to overlap here would mean the proxy's delay is not in effect)
overlap "store add" 0.5 store add slow s3 --endpoint "$PROXY_EP" --bucket "$S3_BUCKET" \
    --prefix stall --credentials-file "$S3_CRED"

log "create --store slow (image upload through the slow proxy, in the background)"
overlap create 0.5 create s3l --image minimal --memory 256 --disk 1 --network none --store slow
lc inspect s3l | json_field store | grep -qx slow || fail "s3l is not in store slow"

log "periodic sync of the slow store (every 5 s) never blocks: 12 s of probes"
end=$(($(date +%s) + 12))
while [ "$(date +%s)" -lt "$end" ]; do probe "sync"; sleep 0.2; done
[ "$(proxy_stat requests)" -gt 0 ] || fail "nothing went through the proxy"

log "boot of the S3 lane: its lease check (GETs of leases/ stalled 4 s each) does not block the API"
proxy_set '{"mode": "stall", "stall_ms": 4000, "methods": ["GET"], "paths": ["/leases/"]}'
overlap boot 0.3 boot s3l
[ "$(proxy_stat faults)" -ge 2 ] || fail "the lease GETs were not stalled"
lc exec s3l -- true || fail "exec in the S3 lane"
lc stop s3l >/dev/null

log "rm of the S3 lane (its bucket side through the slow proxy) does not block the API"
proxy_set "{\"mode\": \"none\", \"delay_ms\": $DELAY_MS}"
overlap rm 0.3 rm s3l
lc ls | grep -q "^s3l " && fail "s3l still listed after rm"
ls3 ls stall/meta/lanes/ | grep -q "s3l.json" && fail "s3l's document is still in the bucket"
log "slowest API answer during S3 work: ${slowest}s"
lc stop loc >/dev/null
log "ok"
