#!/bin/sh
# run.sh — build the libFuzzer targets and run each for a bounded time.
#
#   tests/fuzz/run.sh [BUILD_DIR]      (default build-fuzz; env FUZZ_SECONDS, default 20)
#
# Configures BUILD_DIR with CC=clang -DLANES_FUZZ=ON, builds fuzz_proto,
# fuzz_http and fuzz_http_json (tests/fuzz/corpus/<target>/) and netmed's
# fuzz_netmed_dns and fuzz_netmed_http (netmed/corpus/{dns,http}/), and runs
# each over a scratch copy of its seed corpus for FUZZ_SECONDS. New inputs
# stay in the scratch copy (add interesting ones to the corpus by hand).
# Exits non-zero on the first crash, leak, sanitizer report or timeout; the
# reproducer is left in BUILD_DIR/fuzz/artifacts/. Exit 77 (skip) without
# clang or its libFuzzer runtime.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build-fuzz}
case $build in /*) ;; *) build=$root/$build ;; esac
secs=${FUZZ_SECONDS:-20}

command -v clang >/dev/null 2>&1 || { echo "SKIP: clang not installed"; exit 77; }
if ! echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){return 0;}' |
    clang -x c -fsanitize=fuzzer -o /dev/null - 2>/dev/null; then
    echo "SKIP: clang has no libFuzzer runtime"
    exit 77
fi

CC=clang cmake -S "$root" -B "$build" -DLANES_FUZZ=ON -DLANES_WERROR=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j2 --target fuzz_proto fuzz_http fuzz_http_json fuzz_netmed_dns fuzz_netmed_http >/dev/null

mkdir -p "$build/fuzz/artifacts"
passed=0
failed=0
# target:binary:seed corpus
for spec in "fuzz_proto:$build/fuzz/fuzz_proto:$root/tests/fuzz/corpus/fuzz_proto" \
            "fuzz_http:$build/fuzz/fuzz_http:$root/tests/fuzz/corpus/fuzz_http" \
            "fuzz_http_json:$build/fuzz/fuzz_http_json:$root/tests/fuzz/corpus/fuzz_http_json" \
            "fuzz_netmed_dns:$build/bin/fuzz_netmed_dns:$root/netmed/corpus/dns" \
            "fuzz_netmed_http:$build/bin/fuzz_netmed_http:$root/netmed/corpus/http"; do
    t=${spec%%:*}
    rest=${spec#*:}
    bin=${rest%%:*}
    seeds=${rest#*:}
    work=$build/fuzz/corpus-$t
    rm -rf "$work"
    mkdir -p "$work"
    cp "$seeds/"* "$work/" 2>/dev/null || true
    echo "fuzz: $t for ${secs}s ($(ls "$work" | wc -l) seeds)"
    if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$build/fuzz/artifacts/$t-" -print_final_stats=1 "$work" \
        >"$build/fuzz/$t.log" 2>&1; then
        grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$build/fuzz/$t.log" | tail -2
        passed=$((passed + 1))
    else
        echo "fuzz: $t FAILED (log: $build/fuzz/$t.log)"
        tail -40 "$build/fuzz/$t.log"
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
