#!/bin/sh
# Auth and socket safety of a real lanesd (no lane is booted):
#  - the TCP listener (loopback only) needs a bearer token: none or a wrong
#    one → 401 with WWW-Authenticate; read-only tokens may GET but not
#    change anything or open a shell (403); admin tokens may;
#  - the unix socket needs no token and is 0600;
#  - lanesd refuses to start with a tokens file others can read, with
#    --listen-tcp but no --tokens, or with a socket directory others can
#    write; an oversized body is refused with 413.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"

test_tmpdir
ADMIN=admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
RO=ro-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '# test tokens\nadmin %s\n\nread-only %s\n' "$ADMIN" "$RO" >"$T/tokens"
chmod 600 "$T/tokens"

LANES_STATE=$T/state
export LANES_STATE LANES_SOCKET="$LANES_STATE/lanesd.sock"
mkdir -p "$LANES_STATE"
chmod 700 "$LANES_STATE"
on_exit '[ -n "$LANESD_PID" ] && kill -KILL "$LANESD_PID" 2>/dev/null; true'

start_tcp() {
    for _try in 1 2 3 4 5; do
        PORT=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000))
        "$LANES_BUILD/bin/lanesd" --state-dir "$LANES_STATE" --listen-tcp "127.0.0.1:$PORT" \
            --tokens "$T/tokens" >>"$LANES_STATE/lanesd.log" 2>&1 &
        LANESD_PID=$!
        if wait_for 10 test -S "$LANES_SOCKET" && wait_for 5 curl -s -o /dev/null "http://127.0.0.1:$PORT/v1/health"; then
            return 0
        fi
        kill -KILL "$LANESD_PID" 2>/dev/null || true
        wait "$LANESD_PID" 2>/dev/null || true
    done
    fail "lanesd with --listen-tcp did not come up: $(tail -5 "$LANES_STATE/lanesd.log")"
}

# status of a TCP request: tcp TOKEN METHOD PATH [curl args]
tcp() {
    _tok=$1 _m=$2 _p=$3
    shift 3
    if [ -n "$_tok" ]; then
        curl -s -o "$T/body" -D "$T/head" -w '%{http_code}' -X "$_m" -H "Authorization: Bearer $_tok" \
            "http://127.0.0.1:$PORT$_p" "$@"
    else
        curl -s -o "$T/body" -D "$T/head" -w '%{http_code}' -X "$_m" "http://127.0.0.1:$PORT$_p" "$@"
    fi
}

log "refusals at startup"
set +e
"$LANES_BUILD/bin/lanesd" --state-dir "$LANES_STATE" --listen-tcp 127.0.0.1:1 >"$T/o" 2>&1
rc=$?
set -e
[ $rc -ne 0 ] && grep -q 'requires --tokens' "$T/o" || fail "--listen-tcp without --tokens: rc $rc $(cat "$T/o")"
chmod 644 "$T/tokens"
set +e
"$LANES_BUILD/bin/lanesd" --state-dir "$LANES_STATE" --listen-tcp 127.0.0.1:1 --tokens "$T/tokens" >"$T/o" 2>&1
rc=$?
set -e
chmod 600 "$T/tokens"
[ $rc -ne 0 ] && grep -q 'group or others' "$T/o" || fail "world-readable tokens file accepted: $(cat "$T/o")"
mkdir -m 777 "$T/open"
chmod 777 "$T/open" # whatever the umask
set +e
timeout 20 "$LANES_BUILD/bin/lanesd" --state-dir "$LANES_STATE" --socket "$T/open/l.sock" >"$T/o" 2>&1
rc=$?
set -e
[ $rc -ne 0 ] && grep -q 'writable by group or others' "$T/o" || fail "group-writable socket dir accepted: $(cat "$T/o")"
[ ! -e "$T/open/l.sock" ] || fail "a socket was created in the open directory"

log "TCP listener with tokens"
start_tcp
[ "$(stat -c %a "$LANES_SOCKET")" = 600 ] || fail "socket mode $(stat -c %a "$LANES_SOCKET")"

s=$(tcp "" GET /v1/lanes)
[ "$s" = 401 ] || fail "no token: $s"
grep -qi '^WWW-Authenticate: Bearer' "$T/head" || fail "401 without WWW-Authenticate"
grep -q '"unauthorized"' "$T/body" || fail "401 body: $(cat "$T/body")"
# a wrong token of the same length, and one that is a prefix of the real one
wrong=admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
[ ${#wrong} = ${#ADMIN} ] && [ "$wrong" != "$ADMIN" ] || fail "test bug: wrong token"
[ "$(tcp "$wrong" GET /v1/lanes)" = 401 ] || fail "wrong token accepted"
[ "$(tcp "$(printf '%s' "$ADMIN" | cut -c1-20)" GET /v1/lanes)" = 401 ] || fail "token prefix accepted"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Basic $ADMIN" "http://127.0.0.1:$PORT/v1/lanes")" = 401 ] \
    || fail "non-bearer scheme accepted"

[ "$(tcp "$RO" GET /v1/lanes)" = 200 ] || fail "read-only GET refused"
[ "$(tcp "$RO" GET /v1/images)" = 200 ] || fail "read-only GET images refused"
s=$(tcp "$RO" POST /v1/lanes -H 'Content-Type: application/json' -d '{"name":"x","image":"minimal"}')
[ "$s" = 403 ] || fail "read-only POST: $s"
grep -q '"forbidden"' "$T/body" || fail "403 body: $(cat "$T/body")"
[ "$(tcp "$RO" DELETE /v1/lanes/x)" = 403 ] || fail "read-only DELETE allowed"
s=$(tcp "$RO" GET /v1/lanes/x/shell -H 'Upgrade: websocket' -H 'Connection: Upgrade' \
    -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' -H 'Sec-WebSocket-Version: 13')
[ "$s" = 403 ] || fail "read-only shell upgrade: $s"

# admin passes auth (the lane does not exist: 404 from the handler)
[ "$(tcp "$ADMIN" DELETE /v1/lanes/nosuchlane)" = 404 ] || fail "admin DELETE did not reach the handler"
s=$(tcp "$ADMIN" POST /v1/lanes -H 'Content-Type: application/json' -d '{"name":"tcp1","image":"nosuchimage"}')
case $s in 401|403) fail "admin POST refused: $s" ;; esac

log "unix socket needs no token"
api GET /v1/lanes >/dev/null
[ "$API_STATUS" = 200 ] || fail "unix socket GET: $API_STATUS"

log "body cap: 413 before the body is read"
s=$(tcp "$ADMIN" POST /v1/lanes -H 'Content-Type: application/json' -H 'Content-Length: 50000000' --data-binary '{}')
[ "$s" = 413 ] || fail "oversized body: $s"
log "ok"
