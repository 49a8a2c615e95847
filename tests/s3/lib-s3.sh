# shellcheck shell=sh
# lib-s3.sh — helpers for the S3 integration tests (source after
# tests/integration/lib.sh and test_tmpdir).
#
#   s3_start             start s3rver (tests/s3/s3rver.sh) in $T/s3; sets
#                        S3_EP (endpoint), S3_PORT, S3_CRED (credentials file)
#   proxy_start [ARGS]   start tests/s3/faultproxy.py in front of s3rver;
#                        sets PROXY_EP, PROXY_CTL (control file), PROXY_STATS
#   proxy_set JSON       write the proxy's control file (new fault policy)
#   proxy_stat KEY       a number from the proxy's stats file
#   ls3 ARGS...          lanes-s3 against s3rver directly
#   ls3p ARGS...         lanes-s3 through the proxy
#   ls3_stat FILE KEY    a number from the "stats:" line lanes-s3 -v wrote
# Everything started here is stopped at exit, by pid.

S3_TOOLS="$LANES_ROOT/tests/s3"
LANES_S3="$LANES_BUILD/bin/lanes-s3"
S3_BUCKET=lanes-test

s3_start() {
    [ -x "$LANES_S3" ] || fail "lanes-s3 not built in $LANES_BUILD"
    command -v node >/dev/null 2>&1 || skip "node not installed (s3rver needs it)"
    mkdir -p "$T/s3"
    S3_EP=$("$S3_TOOLS/s3rver.sh" start "$T/s3" "$S3_BUCKET")
    _rc=$?
    [ $_rc -eq 77 ] && skip "node/npm missing for s3rver"
    [ $_rc -eq 0 ] || fail "s3rver did not start"
    on_exit '"$S3_TOOLS/s3rver.sh" stop "$T/s3"'
    S3_PORT=$(cat "$T/s3/s3rver.port")
    S3_CRED="$T/s3/credentials"
    export S3_EP S3_PORT S3_CRED
    log "s3rver at $S3_EP"
}

proxy_start() {
    need_cmd python3
    PROXY_CTL="$T/proxy.json"
    PROXY_STATS="$T/proxy-stats.json"
    : >"$PROXY_CTL"
    rm -f "$T/proxy.port"
    python3 "$S3_TOOLS/faultproxy.py" --upstream "127.0.0.1:$S3_PORT" \
        --port-file "$T/proxy.port" --control "$PROXY_CTL" --stats "$PROXY_STATS" \
        "$@" >"$T/proxy.log" 2>&1 &
    _proxy_pid=$!
    on_exit "kill_wait $_proxy_pid"
    wait_for 10 test -s "$T/proxy.port" || fail "faultproxy did not start: $(cat "$T/proxy.log")"
    PROXY_EP="http://127.0.0.1:$(cat "$T/proxy.port")"
    log "faultproxy at $PROXY_EP"
}

proxy_set() {
    printf '%s\n' "$1" >"$PROXY_CTL.tmp" && mv "$PROXY_CTL.tmp" "$PROXY_CTL"
}

proxy_stat() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
        "$PROXY_STATS" "$1"
}

ls3() {
    "$LANES_S3" --endpoint "$S3_EP" --bucket "$S3_BUCKET" --credentials-file "$S3_CRED" "$@"
}

ls3p() {
    "$LANES_S3" --endpoint "$PROXY_EP" --bucket "$S3_BUCKET" --credentials-file "$S3_CRED" "$@"
}

ls3_stat() {
    sed -n "s/^stats:.* $2=\([0-9]*\).*/\1/p" "$1" | tail -n1
}
