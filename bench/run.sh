#!/bin/bash
# bench/run.sh — `make bench`: lanes against its baselines, measured in one run.
#
#   bench/run.sh [BUILD_DIR]          (default: build)
#
# Rows (docs/bench.md explains each):
#   boot_to_first_exec   lanectl boot + lanectl exec -- true, through lanesd,
#                        vs. the floor: bare QEMU, same kernel and flags as
#                        lanesd's QEMU, an initramfs whose init powers off.
#   exec_rtt_agent       exec of `true` over the lane agent channel
#                        (lanes-bench-agent, lanesd's agent client) vs. Debian's
#                        qemu-guest-agent guest-exec + guest-exec-status polling,
#                        both in the same VM, samples interleaved.
#   exec_rtt_api         the same exec through lanesd's HTTP API (curl) and
#                        through lanectl, in a lane of the same image.
#   ping_rtt_agent       empty request round trip on each channel (no target).
#   idle_rss_<N>MiB      host RSS/PSS of QEMU + nbdkit (+ shim) of an idle lane.
# Prints a table and writes BUILD_DIR/bench/results.json.
#
# Environment: BENCH_RUNS (boot samples, default 7), BENCH_EXEC_ROUNDS (default
# 6: rounds of BENCH_EXEC_BATCH=5 exec samples per contender),
# BENCH_QGA_INTERVALS (qemu-ga status poll intervals tried, ms; default
# "0 2 5 10", the best is the baseline), BENCH_GUEST_ASLR=0 (experiment: ASLR
# off in the exec VM), LANES_CACHE.
#
# Process hygiene: every process this script starts is tracked by pid and
# killed by pid at exit (lanesd's lanes are stopped through lanectl first;
# their QEMU/nbdkit pids come from lanesd's API and /proc of our state dir).
set -euo pipefail
umask 022

ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
BIN=$BUILD/bin
RUNS=${BENCH_RUNS:-7}
ROUNDS=${BENCH_EXEC_ROUNDS:-6}
BATCH=${BENCH_EXEC_BATCH:-5}
QGA_INTERVALS=${BENCH_QGA_INTERVALS:-"0 2 5 10"}
OUT=$BUILD/bench
export LANES_CACHE=${LANES_CACHE:-$HOME/.cache/lanes}
LR=$ROOT/rootfs/lanes-rootfs

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }
now() { printf '%s' "$EPOCHREALTIME"; }
ms_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", (b - a) * 1000 }'; }

for p in lanesd lanectl lane-init lanes-bench-agent nbdkit-laneslocal-plugin.so; do
    [ -e "$BIN/$p" ] || die "$BIN/$p missing (build first: make, or cmake --build $BUILD)"
done
for c in qemu-system-x86_64 nbdkit curl python3 sqlite3 timeout; do
    command -v "$c" >/dev/null || die "$c not found (scripts/deps.sh)"
done
[ "$(id -u)" = 0 ] || die "run as root (the qemu-guest-agent image is built with chroot)"

mkdir -p "$OUT"
# Short path: unix socket paths must stay under 108 bytes.
W=$(mktemp -d /tmp/lanes-bench.XXXXXX)
STATE=$W/state
SOCK=$STATE/lanesd.sock
ROWS=$W/rows.jsonl
: >"$ROWS"
LANESD_PID=""
PIDS=()          # processes we started directly (qemu, nbdkit of the qga VM)
LANES=()         # lanes created in our lanesd

. "$ROOT/bench/lib.sh"   # lc, lane_field, lane_pids, row

cleanup() {
    local rc=$? l p
    trap - EXIT
    set +e
    if [ -n "$LANESD_PID" ]; then
        for l in "${LANES[@]}"; do
            lc stop "$l" --timeout 3 >/dev/null 2>&1
        done
    fi
    for l in "${LANES_IDS[@]:-}"; do
        [ -n "$l" ] || continue
        for p in $(lane_pids "$l"); do kill -KILL "$p" 2>/dev/null; done
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    [ -n "$LANESD_PID" ] && { kill -TERM "$LANESD_PID" 2>/dev/null; wait "$LANESD_PID" 2>/dev/null; }
    mkdir -p "$OUT/logs"
    cp -f "$STATE/lanesd.log" "$OUT/logs/" 2>/dev/null
    cp -f "$W"/*.log "$OUT/logs/" 2>/dev/null
    rm -rf -- "$W"
    exit "$rc"
}
LANES_IDS=()
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

median() { python3 -c 'import statistics,sys; print("%.3f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

# ------------------------------------------------------------------ setup ----
say "artifacts (cached under $LANES_CACHE)"
FLOOR_INITRD=$("$LR" floor-initramfs)
QGA_TAR=$("$ROOT/bench/qga-image.sh")
QGA_IMG=$("$LR" import bench-qga "$QGA_TAR")

mkdir -p "$STATE"
"$BIN/lanesd" --state-dir "$STATE" --boot-timeout 120 >>"$STATE/lanesd.log" 2>&1 &
LANESD_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && lc ls >/dev/null 2>&1 && break; sleep 0.1; done
lc ls >/dev/null || die "lanesd did not come up: $(tail -5 "$STATE/lanesd.log")"
lc image build minimal >"$W/image-minimal.log" 2>&1 || die "image build minimal: $(tail -3 "$W/image-minimal.log")"
lc image import bench-qga "$QGA_TAR" >"$W/image-qga.log" 2>&1 || die "image import: $(tail -3 "$W/image-qga.log")"

new_lane() { # NAME IMAGE MEMORY
    lc create "$1" --image "$2" --memory "$3" >/dev/null
    LANES+=("$1")
    LANES_IDS+=("$(lane_field "$1" id)")
}

# --------------------------------------------------------- boot to first exec --
say "boot-to-first-exec: $RUNS runs, each next to a floor run"
new_lane boot minimal 512
BOOT_ID=$(lane_field boot id)

# QEMU's command line exactly as lanesd built it (captured on the first boot).
declare -a QARGV=()
capture_qemu_argv() {
    local pid
    pid=$(lane_field boot pid)
    [ -n "$pid" ] || die "no qemu pid for the boot lane"
    mapfile -d '' -t QARGV <"/proc/$pid/cmdline"
    [ "${QARGV[0]}" = qemu-system-x86_64 ] || die "pid $pid is not QEMU"
}

# Derive a QEMU argv from lanesd's: runtime paths under $2, name $3, without
# the lane's NIC (its TAP fd exists only inside that QEMU). mode floor: floor initramfs, no root disk (nothing to serve it; the floor's
# init never touches a disk). mode qga: a third virtio-serial port for
# org.qemu.guest_agent.0 (max_ports 2 -> 3: port 0 is reserved for a console).
declare -a VARGV=()
variant_argv() { # MODE DIR NAME
    local mode=$1 dir=$2 name=$3 i=0 a skip=0
    local ldir="$STATE/lanes/$BOOT_ID"
    VARGV=()
    while [ $i -lt ${#QARGV[@]} ]; do
        a=${QARGV[$i]}
        a=${a//$ldir/$dir}
        a=${a//lanes-$BOOT_ID/$name}
        # The lane's NIC is a TAP fd lanesd opened in the lane's netns: a copy
        # of the command line cannot have it. Neither variant needs a network.
        if [ "$a" = -netdev ] || { [ "$a" = -device ] && [[ ${QARGV[$((i + 1))]} == virtio-net-device* ]]; }; then
            i=$((i + 2)); continue
        fi
        if [ "$mode" = floor ]; then
            case "$a" in
                -blockdev|-device) 
                    if [ "$a" = -blockdev ] || [[ ${QARGV[$((i + 1))]} == virtio-blk-device* ]]; then
                        i=$((i + 2)); continue
                    fi ;;
            esac
            [ "$skip" = initrd ] && a=$FLOOR_INITRD
        fi
        if [ "$mode" = qga ]; then
            a=${a/max_ports=2/max_ports=3}
        fi
        skip=""
        [ "$a" = -initrd ] && skip=initrd
        VARGV+=("$a")
        i=$((i + 1))
    done
    if [ "$mode" = qga ]; then
        VARGV+=(-chardev "socket,id=qga,path=$dir/qga.sock,server=on,wait=off"
                -device "virtserialport,chardev=qga,name=org.qemu.guest_agent.0")
    fi
}

floor_run() { # -> prints ms
    local dir=$W/floor t0 rc
    rm -rf "$dir"; mkdir -p "$dir"
    variant_argv floor "$dir" bench-floor
    t0=$(now)
    rc=0
    timeout 60 "${VARGV[@]}" >"$dir/qemu.log" 2>&1 </dev/null || rc=$?
    local ms; ms=$(ms_since "$t0")
    [ $rc = 0 ] || die "floor QEMU exited $rc: $(tail -3 "$dir/qemu.log")"
    grep -q 'poweroff-init: up' "$dir/console.log" || die "floor guest did not reach its init (console: $(tail -3 "$dir/console.log"))"
    cp "$dir/console.log" "$W/floor-console.log"
    echo "$ms"
}

boot_samples=(); floor_samples=(); guest_ready=(); lanesd_ready=()
for i in $(seq "$RUNS"); do
    t0=$(now)
    lc boot boot >/dev/null
    lc exec boot -- true
    ms=$(ms_since "$t0")
    boot_samples+=("$ms")
    [ ${#QARGV[@]} -gt 0 ] || capture_qemu_argv
    lc stop boot >/dev/null
    f=$(floor_run)
    floor_samples+=("$f")
    say "  run $i: lane $ms ms, floor $f ms"
done
# lanesd's own record of each boot: ms from boot request to agent ready, and the
# guest's uptime (ms since its kernel started) when lane-init answered HELLO.
while IFS= read -r line; do
    lanesd_ready+=("$(sed -n 's/.*agent ready after \([0-9]*\) ms.*/\1/p' <<<"$line")")
    guest_ready+=("$(sed -n 's/.*guest uptime \([0-9]*\) ms.*/\1/p' <<<"$line")")
done < <(sqlite3 "$STATE/lanesd.db" "select detail from events where kind='boot' and lane='$BOOT_ID' order by id")
floor_kernel_ms=$(sed -n 's/^\[ *\([0-9.]*\)\] reboot: Power down.*/\1/p' "$W/floor-console.log" | awk '{printf "%.0f", $1 * 1000}')
QEMU_FLAGS=$(printf '%s\n' "${QARGV[@]}" | python3 -c 'import json,sys; print(json.dumps([l.rstrip("\n") for l in sys.stdin]))')
variant_argv floor "$W/floor" bench-floor
FLOOR_FLAGS=$(printf '%s\n' "${VARGV[@]}" | python3 -c 'import json,sys; print(json.dumps([l.rstrip("\n") for l in sys.stdin]))')
row boot_to_first_exec ms "$(median "${boot_samples[@]}")" "$(median "${floor_samples[@]}")" 1.25 "$(python3 -c '
import json, sys
a = sys.argv
def nums(s): return [float(x) for x in s.split()] if s.strip() else []
import statistics
pairs = [l / f for l, f in zip(nums(a[2]), nums(a[3]))]
print(json.dumps({"runs": int(a[1]), "lane_ms": nums(a[2]), "floor_ms": nums(a[3]),
  "pairwise_ratio_median": round(statistics.median(pairs), 3),
  "lanesd_boot_to_agent_ready_ms": nums(a[4]), "guest_uptime_at_agent_ready_ms": nums(a[5]),
  "floor_guest_uptime_at_power_down_ms": float(a[6]) if a[6] else None,
  "lane_qemu_argv": json.loads(a[7]), "floor_qemu_argv": json.loads(a[8])}))' \
    "$RUNS" "${boot_samples[*]}" "${floor_samples[*]}" "${lanesd_ready[*]:-}" "${guest_ready[*]:-}" \
    "${floor_kernel_ms:-}" "$QEMU_FLAGS" "$FLOOR_FLAGS")"

# ------------------------------------------------------------ exec via lanesd --
say "exec round trip through lanesd (lane of the qemu-ga image)"
new_lane exec bench-qga 512
lc boot exec >/dev/null
lc exec exec -- true
api_samples=(); cli_samples=()
for i in $(seq $((ROUNDS * BATCH))); do
    t=$(curl -s -o "$W/api.out" -w '%{http_code} %{time_total}' --unix-socket "$SOCK" -X POST \
        -H 'Content-Type: application/json' -d '{"argv":["true"]}' http://lanes/v1/lanes/exec/exec)
    [ "${t%% *}" = 200 ] || die "API exec: HTTP ${t%% *}: $(cat "$W/api.out")"
    grep -q '"exit_code":0' "$W/api.out" || grep -q '"exit_code": 0' "$W/api.out" || die "API exec: $(cat "$W/api.out")"
    api_samples+=("$(awk -v s="${t#* }" 'BEGIN { printf "%.3f", s * 1000 }')")
    t0=$(now)
    lc exec exec -- true
    cli_samples+=("$(ms_since "$t0")")
done
lc stop exec >/dev/null

# ---------------------------------------------- exec: lane agent vs qemu-ga ----
say "exec round trip: lane agent vs qemu-guest-agent in one VM"
QD=$W/qga
mkdir -p "$QD"
variant_argv qga "$QD" bench-qga
# Root disk: the qemu-ga image behind nbdkit, writes to a throwaway overlay.
nbdkit --foreground --unix "$QD/nbd.sock" --filter=cow file "$QGA_IMG" >"$W/qga-nbdkit.log" 2>&1 </dev/null &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$QD/nbd.sock" ] && break; sleep 0.1; done
[ -S "$QD/nbd.sock" ] || die "nbdkit for the qga VM did not start: $(tail -3 "$W/qga-nbdkit.log")"
"${VARGV[@]}" >"$W/qga-qemu.log" 2>&1 </dev/null &
QGA_QEMU=$!
PIDS+=("$QGA_QEMU")
BA=$BIN/lanes-bench-agent
HELLO=$("$BA" --timeout 120 "$QD/ctl.sock" hello) || die "qga VM: lane-init did not answer: $(tail -3 "$QD/console.log")"
kill -0 "$QGA_QEMU" || die "qga VM QEMU died: $(tail -3 "$W/qga-qemu.log")"
# Start qemu-ga in the guest on the port named org.qemu.guest_agent.0.
"$BA" "$QD/ctl.sock" exec sh -c '
    for f in /sys/class/virtio-ports/*/name; do
        [ "$(cat "$f")" = org.qemu.guest_agent.0 ] && port=/dev/$(basename "$(dirname "$f")")
    done
    [ -n "$port" ] || { echo "no org.qemu.guest_agent.0 port" >&2; exit 1; }
    qemu-ga -m virtio-serial -p "$port" >/tmp/qemu-ga.log 2>&1 </dev/null &
    echo "$port"' >"$W/qga-port.txt" || die "could not start qemu-ga in the guest"
if [ "${BENCH_GUEST_ASLR:-1}" = 0 ]; then
    # Experiment knob (docs/bench.md): without ASLR, TCG can reuse translated
    # code of ld.so/libc across processes; applies to both agents alike.
    "$BA" "$QD/ctl.sock" exec sh -c 'echo 0 >/proc/sys/kernel/randomize_va_space' || die "cannot disable ASLR"
fi
sleep 1
# Warm-up (first exec pays page-cache misses over NBD for both).
"$BA" "$QD/ctl.sock" rtt 3 >/dev/null
python3 "$ROOT/bench/qga-rtt.py" "$QD/qga.sock" 3 >/dev/null || die "qemu-ga does not answer"
for r in $(seq "$ROUNDS"); do
    "$BA" "$QD/ctl.sock" rtt "$BATCH" >"$W/ours-$r.json"
    for iv in $QGA_INTERVALS; do
        python3 "$ROOT/bench/qga-rtt.py" "$QD/qga.sock" "$BATCH" --poll-interval-ms "$iv" >"$W/qga-$r-$iv.json"
    done
done
{ kill -KILL "$QGA_QEMU"; wait "$QGA_QEMU"; } 2>/dev/null || true

python3 - "$W" "$ROUNDS" "$QGA_INTERVALS" "$HELLO" "$(cat "$W/qga-port.txt")" \
    "${api_samples[*]}" "${cli_samples[*]}" >>"$ROWS" <<'EOF'
import json, statistics, sys
w, rounds, intervals, hello, port, api, cli = sys.argv[1:8]
rounds = int(rounds)
ours = {"ping_us": [], "exec_us": [], "started_us": []}
for r in range(1, rounds + 1):
    d = json.load(open("%s/ours-%d.json" % (w, r)))
    for k in ours:
        ours[k] += d[k]
qga = {}
for iv in intervals.split():
    s = {"ping_us": [], "exec_us": [], "status_polls": []}
    for r in range(1, rounds + 1):
        d = json.load(open("%s/qga-%d-%s.json" % (w, r, iv)))
        version = d["qga_version"]
        for k in s:
            s[k] += d[k]
    qga[iv] = s
med = statistics.median
best_iv = min(qga, key=lambda iv: med(qga[iv]["exec_us"]))
best = qga[best_iv]
import os
detail = {"vm": json.loads(hello), "guest_aslr": os.environ.get("BENCH_GUEST_ASLR", "1") != "0", "qga_port": port, "qga_version": version,
          "samples_per_contender": len(ours["exec_us"]),
          "ours_exec_ms": [x / 1000 for x in ours["exec_us"]],
          "ours_request_to_started_median_ms": med(ours["started_us"]) / 1000,
          "qga_best_poll_interval_ms": float(best_iv),
          "qga_by_poll_interval": {iv: {"exec_median_ms": med(s["exec_us"]) / 1000,
                                        "status_polls_median": med(s["status_polls"]),
                                        "exec_ms": [x / 1000 for x in s["exec_us"]]}
                                   for iv, s in qga.items()}}
def row(name, unit, o, b, t, det):
    print(json.dumps({"name": name, "unit": unit, "ours": o, "baseline": b,
                      "target_max_ratio": t, "detail": det}))
row("exec_rtt_agent", "ms", med(ours["exec_us"]) / 1000, med(best["exec_us"]) / 1000, 0.2, detail)
api = [float(x) for x in api.split()]
cli = [float(x) for x in cli.split()]
row("exec_rtt_api_curl", "ms", med(api), med(best["exec_us"]) / 1000, 0.2,
    {"how": "POST /v1/lanes/exec/exec {\"argv\":[\"true\"]}, curl time_total, lane of the same image",
     "samples_ms": api})
row("exec_rtt_lanectl", "ms", med(cli), med(best["exec_us"]) / 1000, None,
    {"how": "wall time of `lanectl exec exec -- true` (process start included)", "samples_ms": cli})
row("ping_rtt_agent", "ms", med(ours["ping_us"]) / 1000, med(best["ping_us"]) / 1000, None,
    {"how": "agent PING vs qemu-ga guest-ping: the channel's round-trip floor"})
EOF

# -------------------------------------------------------------- idle RSS ----
say "host memory of idle lanes (256 and 512 MiB)"
mem_of() { # PID... -> "rss_kib pss_kib"
    local p rss=0 pss=0 r s
    for p in "$@"; do
        r=$(awk '/^Rss:/ {print $2}' "/proc/$p/smaps_rollup")
        s=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")
        rss=$((rss + r)); pss=$((pss + s))
    done
    echo "$rss $pss"
}
for m in 256 512; do
    new_lane "idle$m" minimal "$m"
    lc boot "idle$m" >/dev/null
done
sleep 5
for m in 256 512; do
    id=$(lane_field "idle$m" id)
    qpid=$(lane_field "idle$m" pid)
    procs=$(lane_pids "$id")
    nbd=""; nm=""
    for p in $procs; do
        [ "$p" = "$qpid" ] && continue
        case "$(cat "/proc/$p/comm")" in
            nbdkit) nbd=$p ;;
            netmed) nm=$p ;;
        esac
    done
    [ -n "$nbd" ] || die "idle$m: nbdkit not found"
    # nbdkit and netmed each run under a lanes-shim (a fork of lanesd that
    # outlives it): their parents. netmed is the lane's network mediator.
    shim=$(awk '{print $4}' "/proc/$nbd/stat")
    netmed_procs=""
    [ -n "$nm" ] && netmed_procs="$nm $(awk '{print $4}' "/proc/$nm/stat")"
    # QEMU's big mappings (guest RAM is one anonymous mapping of the guest's
    # size; under TCG the translated-code buffer is another large one).
    python3 - "$qpid" >"$W/qemu-maps-$m.json" <<'PY'
import json, re, sys
maps, cur = [], None
for line in open("/proc/%s/smaps" % sys.argv[1]):
    m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
    if m:
        cur = {"size_kib": (int(m.group(2), 16) - int(m.group(1), 16)) // 1024, "perm": m.group(3),
               "name": m.group(4) or "[anon]"}
        maps.append(cur)
    elif line.startswith("Rss:") and cur is not None:
        cur["rss_kib"] = int(line.split()[1])
big = sorted((x for x in maps if x.get("rss_kib", 0) >= 4096), key=lambda x: -x["rss_kib"])
print(json.dumps(big))
PY
    read -r q_rss q_pss < <(mem_of "$qpid")
    read -r n_rss n_pss < <(mem_of "$nbd")
    read -r s_rss s_pss < <(mem_of "$shim")
    read -r m_rss m_pss < <(mem_of $netmed_procs)
    total_rss=$((q_rss + n_rss + s_rss + m_rss)); total_pss=$((q_pss + n_pss + s_pss + m_pss))
    row "idle_rss_${m}MiB" MiB "$(awk -v k=$total_rss 'BEGIN{printf "%.1f", k/1024}')" "$m" "" "$(python3 -c '
import json, sys
q, qp, n, np_, s, sp, tp, mr, mp = (int(x) for x in sys.argv[1:10])
print(json.dumps({"baseline_is": "guest RAM size (MiB)", "qemu_rss_kib": q, "qemu_pss_kib": qp,
  "nbdkit_rss_kib": n, "nbdkit_pss_kib": np_, "shim_rss_kib": s, "shim_pss_kib": sp,
  "netmed_and_shim_rss_kib": mr, "netmed_and_shim_pss_kib": mp,
  "total_pss_mib": round(tp / 1024, 1), "measured_after_s": 5,
  "qemu_mappings_over_4mib_rss": json.load(open(sys.argv[10]))}))' \
        "$q_rss" "$q_pss" "$n_rss" "$n_pss" "$s_rss" "$s_pss" "$total_pss" "$m_rss" "$m_pss" "$W/qemu-maps-$m.json")"
done
for m in 256 512; do lc stop "idle$m" >/dev/null; done

# ----------------------------------------------------------------- report ----
python3 "$ROOT/bench/report.py" "$ROWS" "$OUT/results.json"

# The block store and S3 tables (their own baselines, measured in this run).
if [ "${BENCH_SKIP_STORE:-0}" != 1 ]; then
    echo
    "$ROOT/bench/blockstore/run.sh" "$BUILD" || echo "bench/blockstore failed (exit $?)" >&2
fi
if [ "${BENCH_SKIP_S3:-0}" != 1 ] && [ -x "$ROOT/bench/s3/run.sh" ]; then
    echo
    "$ROOT/bench/s3/run.sh" "$BUILD" || echo "bench/s3 failed (exit $?)" >&2
fi
if [ "${BENCH_SKIP_API:-0}" != 1 ] && [ -x "$ROOT/bench/api/run.sh" ]; then
    echo
    "$ROOT/bench/api/run.sh" "$BUILD" || echo "bench/api failed (exit $?)" >&2
fi
if [ "${BENCH_SKIP_NET:-0}" != 1 ] && [ -x "$ROOT/bench/net/run.sh" ]; then
    echo
    "$ROOT/bench/net/run.sh" "$BUILD" || echo "bench/net failed (exit $?)" >&2
fi
