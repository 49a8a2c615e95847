# shellcheck shell=sh
# lib.sh — small shared helpers for integration tests (POSIX sh; source it).
#
#   . "$(dirname "$0")/lib.sh"
#
# Provides:
#   skip REASON          print "SKIP: REASON" and exit 77 (prerequisite missing)
#   fail MSG             print "FAIL: MSG" and exit 1
#   log MSG              timestamped progress line on stderr
#   need_cmd CMD...      skip unless every CMD is on PATH
#   need_root            skip unless running as root
#   test_tmpdir          create $T, a private temp dir removed at exit
#   on_exit CMD          run CMD (a shell string) at exit, last registered first
#   kill_wait PID [SECS] SIGTERM, wait up to SECS (default 5), then SIGKILL
#   wait_for SECS CMD... poll CMD every 0.1 s until it succeeds; 1 on timeout
#   wait_for_line FILE REGEX SECS   wait until FILE has a line matching REGEX
#   now                  wall clock in seconds with fractions
#   elapsed START        seconds since a `now` value, 2 decimals
#
# Environment from tests/run-integration.sh: LANES_ROOT, LANES_BUILD,
# LANES_CACHE. Defaults are filled in here so a test also runs by hand.

LANES_ROOT=${LANES_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
LANES_BUILD=${LANES_BUILD:-$LANES_ROOT/build}
LANES_CACHE=${LANES_CACHE:-$HOME/.cache/lanes}
export LANES_ROOT LANES_BUILD LANES_CACHE

_lib_on_exit=""

_lib_run_exit() {
    _lib_rc=$?
    trap - EXIT
    eval "$_lib_on_exit" || true
    exit "$_lib_rc"
}
trap _lib_run_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

on_exit() {
    _lib_on_exit="$1
$_lib_on_exit"
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

skip() {
    printf 'SKIP: %s\n' "$*"
    exit 77
}

fail() {
    printf 'FAIL: %s\n' "$*"
    exit 1
}

need_cmd() {
    for _c in "$@"; do
        command -v "$_c" >/dev/null 2>&1 || skip "$_c not installed (scripts/deps.sh)"
    done
}

need_root() {
    [ "$(id -u)" = 0 ] || skip "needs root"
}

test_tmpdir() {
    T=$(mktemp -d "${TMPDIR:-/tmp}/lanes-test.XXXXXX") || fail "mktemp"
    # shellcheck disable=SC2016 # expanded at exit, when $T is set
    on_exit 'rm -rf -- "$T"'
    export T
}

kill_wait() {
    _pid=$1
    _secs=${2:-5}
    kill "$_pid" 2>/dev/null || return 0
    _n=0
    while kill -0 "$_pid" 2>/dev/null && [ "$_n" -lt $((_secs * 10)) ]; do
        sleep 0.1
        _n=$((_n + 1))
    done
    kill -KILL "$_pid" 2>/dev/null || true
    wait "$_pid" 2>/dev/null || true
}

now() { date +%s.%N; }

elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

wait_for() {
    _deadline=$(awk -v a="$(now)" -v s="$1" 'BEGIN { printf "%.3f", a + s }')
    shift
    while ! "$@"; do
        if awk -v d="$_deadline" -v n="$(now)" 'BEGIN { exit !(n > d) }'; then
            return 1
        fi
        sleep 0.1
    done
}

_lib_has_line() { [ -f "$1" ] && grep -Eq -- "$2" "$1"; }

wait_for_line() {
    wait_for "$3" _lib_has_line "$1" "$2"
}
