#!/bin/sh
# Run every integration test tests/integration/t_*.sh (or those named on the
# command line after the build dir) against real processes.
# Each test gets: LANES_BUILD (abs build dir), LANES_ROOT (repo), LANES_CACHE.
# Exit status: 0 pass, 77 skip (prerequisite truly missing; reason printed),
# anything else fails the run.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
shift 2>/dev/null || true
export LANES_ROOT="$root" LANES_BUILD="$build"
export LANES_CACHE="${LANES_CACHE:-$HOME/.cache/lanes}"

if [ $# -gt 0 ]; then
    tests="$*"
else
    tests=$(ls "$root"/tests/integration/t_*.sh 2>/dev/null | sort)
fi

pass=0; fail=0; skip=0; failed=""
start_all=$(date +%s)
for t in $tests; do
    case "$t" in /*) ;; *) [ -f "$t" ] || t="$root/tests/integration/$t" ;; esac
    name=$(basename "$t" .sh)
    log="$build/test-logs/$name.log"
    mkdir -p "$build/test-logs"
    printf '%-40s ' "$name"
    s=$(date +%s)
    timeout --kill-after=10 "${LANES_TEST_TIMEOUT:-900}" "$t" >"$log" 2>&1
    rc=$?
    d=$(( $(date +%s) - s ))
    case $rc in
        0) pass=$((pass+1)); echo "PASS (${d}s)";;
        77) skip=$((skip+1)); echo "SKIP (${d}s): $(grep -m1 -i 'skip' "$log" || tail -n1 "$log")";;
        *) fail=$((fail+1)); failed="$failed $name"; echo "FAIL rc=$rc (${d}s) — log: $log"
           tail -n 40 "$log" | sed 's/^/    | /';;
    esac
done
echo "integration: $pass passed, $fail failed, $skip skipped in $(( $(date +%s) - start_all ))s"
[ $fail -eq 0 ] || { echo "failed:$failed"; exit 1; }
