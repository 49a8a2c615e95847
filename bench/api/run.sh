#!/bin/bash
# bench/api/run.sh — what lanesd's API costs on top of the guest agent, and
# how lanesd copes with many lanes booting at once.
#
#   bench/api/run.sh [BUILD_DIR]      (default: build; `make bench` runs it)
#
# Rows (docs/bench.md, "API" section):
#   api_exec_rtt          POST /v1/lanes/{name}/exec {"argv":["true"]} through
#                         lanesd (curl over the unix socket, time_total) vs. the
#                         same exec straight over the agent channel
#                         (lanes-bench-agent, lanesd's own agent client) in a
#                         twin VM: same image, same QEMU flags (lanesd's argv,
#                         minus the lane's NIC), both VMs up at once, batches
#                         interleaved. ratio = the API's overhead factor.
#   api_exec_rtt_lanectl  the same through `lanectl exec` (process start
#                         included), same baseline.
#   boot<N>_p50/_p95      N lanes (minimal image, BENCH_API_MEMORY MiB, network
#                         mediated) booted at once: per lane, `lanectl boot` +
#                         `lanectl exec -- true` wall time, vs. one lane booted
#                         alone (median of BENCH_API_SOLO runs).
#   boot<N>_throughput    N / wall time of the whole burst (lanes per second),
#                         vs. 1 / the solo median (one lane at a time).
# Prints the table of bench/report.py and writes BUILD_DIR/bench/api.json.
#
# Environment: BENCH_API_LANES (20), BENCH_API_MEMORY (128), BENCH_API_SOLO (3),
# BENCH_API_ROUNDS (6) x BENCH_API_BATCH (5) exec samples per contender,
# BENCH_API_BOOT_TIMEOUT (600 s: lanesd's boot timeout for the burst), LANES_CACHE.
#
# Process hygiene: every process started here is tracked by pid and killed by
# pid at exit (lanes are stopped through lanectl first; their QEMU/nbdkit/
# netmed pids are found by our state dir on their command lines).
set -euo pipefail
umask 022

ROOT=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
BIN=$BUILD/bin
N=${BENCH_API_LANES:-20}
MEM=${BENCH_API_MEMORY:-128}
SOLO=${BENCH_API_SOLO:-3}
ROUNDS=${BENCH_API_ROUNDS:-6}
BATCH=${BENCH_API_BATCH:-5}
BOOT_TIMEOUT=${BENCH_API_BOOT_TIMEOUT:-600}
OUT=$BUILD/bench
export LANES_CACHE=${LANES_CACHE:-$HOME/.cache/lanes}
LR=$ROOT/rootfs/lanes-rootfs

say() { printf '[bench-api %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench/api: error: %s\n' "$*" >&2; exit 1; }
now() { printf '%s' "$EPOCHREALTIME"; }
ms_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", (b - a) * 1000 }'; }

for p in lanesd lanectl lane-init lanes-bench-agent nbdkit-laneslocal-plugin.so; do
    [ -e "$BIN/$p" ] || die "$BIN/$p missing (build first: make, or cmake --build $BUILD)"
done
for c in qemu-system-x86_64 nbdkit curl python3 timeout; do
    command -v "$c" >/dev/null || die "$c not found (scripts/deps.sh)"
done

mkdir -p "$OUT"
W=$(mktemp -d /tmp/lanes-bapi.XXXXXX) # short: unix socket paths < 108 bytes
STATE=$W/state
SOCK=$STATE/lanesd.sock
ROWS=$W/rows.jsonl
: >"$ROWS"
LANESD_PID=""
PIDS=()   # processes started directly (the twin VM's qemu and nbdkit)
LANES=()  # lanes created in our lanesd
LANES_IDS=()

. "$ROOT/bench/lib.sh"   # lc, lane_field, lane_pids, row

cleanup() {
    local rc=$? l p
    trap - EXIT
    set +e
    if [ -n "$LANESD_PID" ]; then
        local stops=()
        for l in "${LANES[@]}"; do lc stop "$l" --timeout 3 >/dev/null 2>&1 & stops+=($!); done
        [ ${#stops[@]} -gt 0 ] && wait "${stops[@]}"
    fi
    for l in "${LANES_IDS[@]:-}"; do
        [ -n "$l" ] || continue
        for p in $(lane_pids "$l"); do kill -KILL "$p" 2>/dev/null; done
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    [ -n "$LANESD_PID" ] && { kill -TERM "$LANESD_PID" 2>/dev/null; wait "$LANESD_PID" 2>/dev/null; }
    mkdir -p "$OUT/logs"
    cp -f "$STATE/lanesd.log" "$OUT/logs/api-lanesd.log" 2>/dev/null
    rm -rf -- "$W"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ setup ----
say "artifacts (cached under $LANES_CACHE)"
MINIMAL_IMG=$("$LR" image minimal)
mkdir -p "$STATE"
"$BIN/lanesd" --state-dir "$STATE" --boot-timeout "$BOOT_TIMEOUT" >>"$STATE/lanesd.log" 2>&1 &
LANESD_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && lc ls >/dev/null 2>&1 && break; sleep 0.1; done
lc ls >/dev/null || die "lanesd did not come up: $(tail -5 "$STATE/lanesd.log")"
lc image build minimal >"$W/image-minimal.log" 2>&1 || die "image build minimal: $(tail -3 "$W/image-minimal.log")"

new_lane() { # NAME MEMORY
    lc create "$1" --image minimal --memory "$2" --disk 1 >/dev/null
    LANES+=("$1")
    LANES_IDS+=("$(lane_field "$1" id)")
}

# ------------------------------------------------ exec: API vs agent channel --
say "exec round trip: through lanesd's API vs straight over the agent channel"
new_lane ex 256
EX_ID=$(lane_field ex id)
lc boot ex >/dev/null
lc exec ex -- true
qpid=$(lane_field ex pid)
mapfile -d '' -t QARGV <"/proc/$qpid/cmdline"
[ "${QARGV[0]}" = qemu-system-x86_64 ] || die "pid $qpid is not QEMU"

# The twin: lanesd's QEMU argv with its runtime paths moved to $TD, without
# the lane's NIC (a TAP fd only that QEMU has); its root disk is the minimal
# image behind nbdkit with a throwaway overlay.
TD=$W/twin
mkdir -p "$TD"
LDIR=$STATE/lanes/$EX_ID
VARGV=()
i=0
while [ $i -lt ${#QARGV[@]} ]; do
    a=${QARGV[$i]}
    a=${a//$LDIR/$TD}
    a=${a//lanes-$EX_ID/bench-twin}
    if [ "$a" = -netdev ] || { [ "$a" = -device ] && [[ ${QARGV[$((i + 1))]} == virtio-net* ]]; }; then
        i=$((i + 2)); continue
    fi
    VARGV+=("$a")
    i=$((i + 1))
done
nbdkit --foreground --unix "$TD/nbd.sock" --filter=cow file "$MINIMAL_IMG" >"$W/twin-nbdkit.log" 2>&1 </dev/null &
TWIN_NBD=$!
PIDS+=("$TWIN_NBD")
for _ in $(seq 100); do [ -S "$TD/nbd.sock" ] && break; sleep 0.1; done
[ -S "$TD/nbd.sock" ] || die "nbdkit for the twin VM did not start: $(tail -3 "$W/twin-nbdkit.log")"
"${VARGV[@]}" >"$W/twin-qemu.log" 2>&1 </dev/null &
TWIN=$!
PIDS+=("$TWIN")
BA=$BIN/lanes-bench-agent
HELLO=$("$BA" --timeout 180 "$TD/ctl.sock" hello) || die "twin VM: lane-init did not answer: $(tail -3 "$W/twin-qemu.log")"
# Warm-up: the first execs pay page-cache misses over NBD on both sides.
"$BA" "$TD/ctl.sock" rtt 3 >/dev/null
for _ in 1 2 3; do lc exec ex -- true; done
api=(); cli=()
for r in $(seq "$ROUNDS"); do
    for _ in $(seq "$BATCH"); do
        t=$(curl -s -o "$W/api.out" -w '%{http_code} %{time_total}' --unix-socket "$SOCK" -X POST \
            -H 'Content-Type: application/json' -d '{"argv":["true"]}' http://lanes/v1/lanes/ex/exec)
        [ "${t%% *}" = 200 ] || die "API exec: HTTP ${t%% *}: $(cat "$W/api.out")"
        grep -Eq '"exit_code": ?0' "$W/api.out" || die "API exec: $(cat "$W/api.out")"
        api+=("$(awk -v s="${t#* }" 'BEGIN { printf "%.3f", s * 1000 }')")
        t0=$(now)
        lc exec ex -- true
        cli+=("$(ms_since "$t0")")
    done
    "$BA" "$TD/ctl.sock" rtt "$BATCH" >"$W/agent-$r.json"
done
{ kill -KILL "$TWIN" "$TWIN_NBD"; wait "$TWIN" "$TWIN_NBD"; } 2>/dev/null || true
lc stop ex >/dev/null

python3 - "$W" "$ROUNDS" "$HELLO" "${api[*]}" "${cli[*]}" >>"$ROWS" <<'EOF'
import json, statistics, sys
w, rounds, hello, api, cli = sys.argv[1:6]
agent = []
for r in range(1, int(rounds) + 1):
    agent += [x / 1000 for x in json.load(open("%s/agent-%d.json" % (w, r)))["exec_us"]]
api = [float(x) for x in api.split()]
cli = [float(x) for x in cli.split()]
med = statistics.median
def row(name, unit, o, b, t, det):
    print(json.dumps({"name": name, "unit": unit, "ours": o, "baseline": b, "target_max_ratio": t, "detail": det}))
row("api_exec_rtt", "ms", med(api), med(agent), 1.5,
    {"how": "POST /v1/lanes/ex/exec {\"argv\":[\"true\"]} (curl time_total) vs lanes-bench-agent exec of true "
            "in a twin VM (same image and QEMU flags), batches interleaved",
     "overhead_ms": round(med(api) - med(agent), 3), "vm": json.loads(hello),
     "api_ms": api, "agent_ms": agent})
row("api_exec_rtt_lanectl", "ms", med(cli), med(agent), None,
    {"how": "wall time of `lanectl exec ex -- true` (process start included)", "samples_ms": cli})
EOF

# ------------------------------------------------------ N lanes booting at once --
say "boot-to-first-exec of one lane alone: $SOLO runs"
new_lane solo "$MEM"
solo=()
for _ in $(seq "$SOLO"); do
    t0=$(now)
    lc boot solo >/dev/null
    lc exec solo -- true
    solo+=("$(ms_since "$t0")")
    lc stop solo >/dev/null
done

say "$N lanes (${MEM} MiB) booting at once"
for i in $(seq "$N"); do new_lane "b$i" "$MEM"; done
t_all=$(now)
BURST=()
for i in $(seq "$N"); do
    (
        t0=$(now)
        if lc boot "b$i" >"$W/b$i.log" 2>&1 && lc exec "b$i" -- true >>"$W/b$i.log" 2>&1; then
            ms_since "$t0" >"$W/b$i.ms"
        else
            echo fail >"$W/b$i.ms"
        fi
    ) &
    BURST+=($!)
done
wait "${BURST[@]}"
wall=$(ms_since "$t_all")
fails=0
burst=()
for i in $(seq "$N"); do
    v=$(cat "$W/b$i.ms")
    if [ "$v" = fail ]; then fails=$((fails + 1)); say "  lane b$i failed: $(tail -2 "$W/b$i.log")"; else burst+=("$v"); fi
done
[ ${#burst[@]} -gt 0 ] || die "no lane of the burst booted"
say "  $N lanes in $wall ms ($fails failed)"
STOPS=()
for i in $(seq "$N"); do lc stop "b$i" --timeout 5 >/dev/null 2>&1 & STOPS+=($!); done
wait "${STOPS[@]}"

python3 - "$N" "$MEM" "$wall" "$fails" "${burst[*]}" "${solo[*]}" >>"$ROWS" <<'EOF'
import json, statistics, sys
n, mem, wall, fails, burst, solo = sys.argv[1:7]
n, wall, fails = int(n), float(wall), int(fails)
burst = sorted(float(x) for x in burst.split())
solo = [float(x) for x in solo.split()]
def pct(xs, p):  # nearest-rank percentile
    import math
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]
s = statistics.median(solo)
det = {"lanes": n, "memory_mib": int(mem), "failed": fails, "wall_ms": wall, "burst_ms": burst, "solo_ms": solo,
       "how": "each lane: lanectl boot + lanectl exec -- true, all started together; solo: one lane, sequential runs"}
def row(name, unit, o, b, t, d):
    print(json.dumps({"name": name, "unit": unit, "ours": o, "baseline": b, "target_max_ratio": t, "detail": d}))
row("boot%d_p50" % n, "ms", pct(burst, 50), s, None, det)
row("boot%d_p95" % n, "ms", pct(burst, 95), s, None, {"see": "boot%d_p50" % n})
row("boot%d_throughput" % n, "lanes/s", (n - fails) / (wall / 1000), 1000 / s, None,
    {"how": "lanes up and answering per second of the burst vs one at a time (1 / solo median)"})
EOF

# ----------------------------------------------------------------- report ----
echo "API (bench/api)"
python3 "$ROOT/bench/report.py" "$ROWS" "$OUT/api.json"
