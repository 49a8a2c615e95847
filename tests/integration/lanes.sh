# lanes.sh — integration-test helpers for tests that need a running lanesd.
# Source after lib.sh:
#
#   . "$(dirname "$0")/lib.sh"; . "$(dirname "$0")/lanes.sh"
#   lanes_start            start lanesd on a fresh state dir ($T/state)
#   lanes_image minimal    build+import an image (cached by lanes-rootfs)
#   lc ARGS...             lanectl against this lanesd
#   api METHOD PATH [curl args]  raw API call; prints body, sets $API_STATUS
#   lanes_restart          kill -9 lanesd and start it again on the same state
#   lane_qemu_pid NAME     pid of the lane's QEMU (from the API)
#
# LANESD_WRAP (e.g. "ip netns exec H") runs lanesd under a wrapper, and
# LANESD_ARGS adds options; both apply to restarts too.
#
# Every lane process is killed at exit (by pattern on the state dir), so a
# failing test never leaves QEMU or nbdkit behind.

need_cmd qemu-system-x86_64 nbdkit curl
[ -x "$LANES_BUILD/bin/lanesd" ] || fail "lanesd not built in $LANES_BUILD"
[ -x "$LANES_BUILD/bin/lanectl" ] || fail "lanectl not built in $LANES_BUILD"

LANESD_PID=""

_lanes_cleanup() {
    [ -n "$LANESD_PID" ] && kill -KILL "$LANESD_PID" 2>/dev/null
    # QEMU and nbdkit run detached (they outlive lanesd by design): find them
    # by the state dir on their command lines.
    if [ -n "${LANES_STATE:-}" ]; then
        pkill -KILL -f -- "$LANES_STATE/" 2>/dev/null
        sleep 0.2
        # lane network namespaces (a killed lanesd could not remove them)
        for d in "$LANES_STATE"/lanes/*/; do
            [ -d "$d" ] && ip netns del "lanes-$(basename "$d")" 2>/dev/null
        done
    fi
    if [ -n "${LANES_STATE:-}" ] && [ -f "$LANES_STATE/lanesd.log" ] && [ "${LANES_KEEP_LOG:-1}" = 1 ]; then
        echo "---- lanesd.log (tail) ----"
        tail -n 30 "$LANES_STATE/lanesd.log"
    fi
}

lanes_start() {
    if [ -z "${T:-}" ]; then test_tmpdir; fi
    LANES_STATE=${LANES_STATE:-$T/state}
    export LANES_STATE
    export LANES_SOCKET="$LANES_STATE/lanesd.sock"
    mkdir -p "$LANES_STATE"
    on_exit _lanes_cleanup
    # shellcheck disable=SC2086 # word splitting of the wrapper/args is intended
    ${LANESD_WRAP:-} "$LANES_BUILD/bin/lanesd" --state-dir "$LANES_STATE" --boot-timeout "${LANES_BOOT_TIMEOUT:-120}" \
        ${LANESD_ARGS:-} >>"$LANES_STATE/lanesd.log" 2>&1 &
    LANESD_PID=$!
    wait_for 10 test -S "$LANES_SOCKET" || fail "lanesd did not create $LANES_SOCKET: $(tail -5 "$LANES_STATE/lanesd.log")"
    wait_for 10 lc ls >/dev/null 2>&1 || fail "lanesd does not answer"
}

lanes_restart() {
    kill -KILL "$LANESD_PID" 2>/dev/null || true
    wait "$LANESD_PID" 2>/dev/null || true
    rm -f "$LANES_SOCKET"
    # shellcheck disable=SC2086
    ${LANESD_WRAP:-} "$LANES_BUILD/bin/lanesd" --state-dir "$LANES_STATE" --boot-timeout "${LANES_BOOT_TIMEOUT:-120}" \
        ${LANESD_ARGS:-} >>"$LANES_STATE/lanesd.log" 2>&1 &
    LANESD_PID=$!
    wait_for 10 test -S "$LANES_SOCKET" || fail "lanesd did not come back"
}

lc() { "$LANES_BUILD/bin/lanectl" --socket "$LANES_SOCKET" "$@"; }

api() {
    _m=$1; _p=$2; shift 2
    _out=$(curl -s -w '\n%{http_code}' --unix-socket "$LANES_SOCKET" -X "$_m" "http://lanes$_p" "$@")
    API_STATUS=$(printf '%s\n' "$_out" | tail -n1)
    printf '%s\n' "$_out" | sed '$d'
}

lanes_image() {
    lc image build "$1" >"$T/image-$1.log" 2>&1 || fail "image build $1: $(tail -5 "$T/image-$1.log")"
}

# Extract a top-level field from one JSON object on stdin (python3 is a test-only dependency).
json_field() { python3 -c 'import json,sys; v=json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$1"; }

lane_state() { lc inspect "$1" | json_field state; }
lane_qemu_pid() { lc inspect "$1" | json_field pid; }

# Expect a command to fail and its stderr to match a regex.
expect_fail() {
    _re=$1; shift
    if "$@" >"$T/ef.out" 2>"$T/ef.err"; then
        fail "expected failure: $*"
    fi
    grep -Eq -- "$_re" "$T/ef.err" || fail "stderr of '$*' does not match /$_re/: $(cat "$T/ef.err")"
}

# Processes (QEMU, nbdkit) of this test's lanes, optionally of one lane id.
# A shell function, so the pattern never matches a wrapper shell's own argv.
lane_procs() { pgrep -f -- "$LANES_STATE/lanes/${1:-}" 2>/dev/null; }
no_lane_procs() { ! lane_procs "${1:-}" >/dev/null; }
lane_state_is() { [ "$(lane_state "$1" 2>/dev/null)" = "$2" ]; }
