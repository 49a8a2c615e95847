#!/bin/bash
# bench/s3/run.sh — lanes on an S3 store (s3rver on loopback) vs the local
# store, measured in one run.
#
#   bench/s3/run.sh [BUILD_DIR]          (default: build)
#
# Rows:
#   s3_cold_boot_fetch_<image>  bytes fetched from the bucket by a cold boot
#                          to the first exec (empty host cache; the stop is
#                          included) vs the image's stored bytes (its non-zero
#                          chunks).  Target < 0.25 for debian, the default
#                          image users boot; for minimal (2.4 MB, nearly all
#                          of it busybox, which boot executes) it is shown
#                          without a target.
#   s3_cold_boot           boot-to-first-exec (lanectl boot + exec -- true),
#                          empty cache, vs the same image on the local store.
#   s3_warm_boot           the same with the host cache kept.
#   s3_cold_boot_delay20   cold, through tests/s3/faultproxy.py adding 20 ms to
#                          every request, vs local.  Target <= 2.0.
#   flush_MBps_<mode>      in-guest dd of 16 MiB with conv=fsync: local store vs
#                          S3 with flush local and flush remote (higher is
#                          better; ratio = local / ours).
# Prints a table and writes BUILD_DIR/bench/s3-results.json.
# Environment: BENCH_S3_RUNS (boot samples per row, default 3),
# BENCH_S3_DEBIAN=0 skips the debian row (its image build is cached by
# lanes-rootfs; the first import uploads ~200 MB to s3rver).
# Every process this script starts is tracked by pid and killed by pid.
set -euo pipefail
umask 022

ROOT=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
BIN=$BUILD/bin
RUNS=${BENCH_S3_RUNS:-3}
OUT=$BUILD/bench
export LANES_CACHE=${LANES_CACHE:-$HOME/.cache/lanes}

say() { printf '[bench-s3 %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench-s3: error: %s\n' "$*" >&2; exit 1; }
ms_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", (b - a) * 1000 }'; }
median() { python3 -c 'import statistics,sys; print("%.1f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

for p in lanesd lanectl lanes-store nbdkit-laness3-plugin.so nbdkit-laneslocal-plugin.so; do
    [ -e "$BIN/$p" ] || die "$BIN/$p missing (build first)"
done
command -v node >/dev/null || die "node not found (scripts/deps.sh installs it; s3rver needs it)"

mkdir -p "$OUT"
W=$(mktemp -d /tmp/lanes-bs3.XXXXXX)
STATE=$W/state
SOCK=$STATE/lanesd.sock
ROWS=$W/rows.jsonl
: >"$ROWS"
LANESD_PID="" PROXY_PID=""
LANES=()

. "$ROOT/bench/lib.sh"   # lc, lane_field, lane_pids, row

cleanup() {
    local rc=$? l
    trap - EXIT
    set +e
    for l in "${LANES[@]}"; do lc stop "$l" --timeout 3 >/dev/null 2>&1; done
    [ -n "$LANESD_PID" ] && { kill -TERM "$LANESD_PID" 2>/dev/null; wait "$LANESD_PID" 2>/dev/null; }
    [ -n "$PROXY_PID" ] && { kill -TERM "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null; }
    "$ROOT/tests/s3/s3rver.sh" stop "$W/s3" >/dev/null 2>&1
    mkdir -p "$OUT/logs"
    cp -f "$STATE/lanesd.log" "$OUT/logs/s3-lanesd.log" 2>/dev/null
    rm -rf -- "$W"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ setup ----
mkdir -p "$W/s3" "$STATE"
EP=$("$ROOT/tests/s3/s3rver.sh" start "$W/s3" lanes-bench) || die "s3rver did not start"
CRED=$W/s3/credentials
python3 "$ROOT/tests/s3/faultproxy.py" --upstream "127.0.0.1:$(cat "$W/s3/s3rver.port")" \
    --port-file "$W/proxy.port" --mode none --delay-ms 20 >"$W/proxy.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 100); do [ -s "$W/proxy.port" ] && break; sleep 0.1; done
PROXY_EP="http://127.0.0.1:$(cat "$W/proxy.port")"

"$BIN/lanesd" --state-dir "$STATE" --boot-timeout 180 >>"$STATE/lanesd.log" 2>&1 &
LANESD_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && lc ls >/dev/null 2>&1 && break; sleep 0.1; done
lc ls >/dev/null || die "lanesd did not come up"
lc image build minimal >"$W/image.log" 2>&1 || die "image build minimal: $(tail -3 "$W/image.log")"
DEBIAN=${BENCH_S3_DEBIAN:-1}
if [ "$DEBIAN" = 1 ]; then
    lc image build debian >"$W/image-debian.log" 2>&1 || die "image build debian: $(tail -3 "$W/image-debian.log")"
fi
add() { lc store add "$1" s3 --endpoint "$2" --bucket lanes-bench --prefix "$1" --credentials-file "$CRED" \
        --flush "$3" --allow-unenforced-leases >/dev/null 2>&1 || die "store add $1"; }
add s3l "$EP" local
add s3r "$EP" remote
add s3d "$PROXY_EP" local
new_lane() { # NAME STORE [IMAGE MEMORY]
    lc create "$1" --image "${3:-minimal}" --memory "${4:-256}" --disk 1 --network none --store "$2" \
        >/dev/null 2>"$W/create.err" ||
        lc create "$1" --image "${3:-minimal}" --memory "${4:-256}" --disk 1 --store "$2" >/dev/null ||
        die "create $1"
    LANES+=("$1")
}
new_lane loc local
new_lane s3 s3l
new_lane s3r s3r
new_lane s3d s3d

# stored bytes of an image: its non-zero chunks
image_bytes() {
    "$BIN/lanes-store" --store "$STATE/store" usage "image/$1" --json | python3 -c '
import json,sys
d=json.load(sys.stdin)
refs=d if isinstance(d, list) else d.get("refs", [])
print(next(r["logical_bytes"] for r in refs if r.get("name") == "image/" + sys.argv[1]))' "$1"
}
IMAGE_BYTES=$(image_bytes minimal)
say "image minimal: $IMAGE_BYTES stored bytes"

boot_once() { # LANE -> ms to first exec
    local t0
    t0=$EPOCHREALTIME
    lc boot "$1" >/dev/null
    lc exec "$1" -- true
    ms_since "$t0"
}
stats_get() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# ------------------------------------------------------------------- boots ----
local_s=() cold_s=() warm_s=() delay_s=() cold_bytes=() delay_bytes=()
for i in $(seq "$RUNS"); do
    say "round $i/$RUNS"
    local_s+=("$(boot_once loc)"); lc stop loc >/dev/null
    rm -rf "$STATE/s3cache"; mkdir -p "$STATE/s3cache"
    cold_s+=("$(boot_once s3)"); lc stop s3 >/dev/null
    cold_bytes+=("$(stats_get "$STATE/lanes/$(lane_field s3 id)/s3stats.json" get_bytes)")
    warm_s+=("$(boot_once s3)"); lc stop s3 >/dev/null
    rm -rf "$STATE/s3cache"; mkdir -p "$STATE/s3cache"
    delay_s+=("$(boot_once s3d)"); lc stop s3d >/dev/null
    delay_bytes+=("$(stats_get "$STATE/lanes/$(lane_field s3d id)/s3stats.json" get_bytes)")
done
LOCAL=$(median "${local_s[@]}")
row s3_cold_boot_fetch_minimal bytes "$(median "${cold_bytes[@]}")" "$IMAGE_BYTES" "" \
    "{\"samples\": [$(IFS=,; echo "${cold_bytes[*]}")], \"baseline\": \"stored bytes of image minimal\"}"
row s3_cold_boot ms "$(median "${cold_s[@]}")" "$LOCAL" "" \
    "{\"samples\": [$(IFS=,; echo "${cold_s[*]}")], \"local\": [$(IFS=,; echo "${local_s[*]}")]}"
row s3_warm_boot ms "$(median "${warm_s[@]}")" "$LOCAL" "" "{\"samples\": [$(IFS=,; echo "${warm_s[*]}")]}"
row s3_cold_boot_delay20 ms "$(median "${delay_s[@]}")" "$LOCAL" 2.0 \
    "{\"samples\": [$(IFS=,; echo "${delay_s[*]}")], \"bytes\": [$(IFS=,; echo "${delay_bytes[*]}")], \"added_latency_ms\": 20}"

if [ "$DEBIAN" = 1 ]; then
    say "debian: first use in the store uploads the image"
    new_lane deb s3l debian 512
    DEB_BYTES=$(image_bytes debian)
    deb_bytes=() deb_s=()
    for i in $(seq "$RUNS"); do
        rm -rf "$STATE/s3cache"; mkdir -p "$STATE/s3cache"
        deb_s+=("$(boot_once deb)"); lc stop deb >/dev/null
        deb_bytes+=("$(stats_get "$STATE/lanes/$(lane_field deb id)/s3stats.json" get_bytes)")
    done
    row s3_cold_boot_fetch_debian bytes "$(median "${deb_bytes[@]}")" "$DEB_BYTES" 0.25 \
        "{\"samples\": [$(IFS=,; echo "${deb_bytes[*]}")], \"boot_ms\": [$(IFS=,; echo "${deb_s[*]}")], \"baseline\": \"stored bytes of image debian\"}"
fi

# ------------------------------------------------------------------ flush ----
flush_mbps() { # LANE -> MB/s of a 16 MiB fsync'd copy inside the guest
    local t0 ms
    lc boot "$1" >/dev/null
    lc exec "$1" -- sh -c 'head -c 16777216 /dev/urandom > /root/src && sync'
    t0=$EPOCHREALTIME
    lc exec "$1" -- dd if=/root/src of=/root/dst bs=1M conv=fsync 2>/dev/null
    ms=$(ms_since "$t0")
    lc stop "$1" >/dev/null
    awk -v ms="$ms" 'BEGIN { printf "%.2f", 16 / (ms / 1000) }'
}
say "flush throughput"
F_LOCAL=$(flush_mbps loc)
F_S3L=$(flush_mbps s3)
F_S3R=$(flush_mbps s3r)
# ratio column = baseline/ours for throughput: store the inverse as ours
row flush_MBps_s3_local_durability MB/s "$F_S3L" "$F_LOCAL" "" '{"higher_is_better": true}'
row flush_MBps_s3_remote_durability MB/s "$F_S3R" "$F_LOCAL" "" '{"higher_is_better": true}'

# ------------------------------------------------------------------ report ----
python3 - "$ROWS" "$OUT/s3-results.json" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("%-32s %14s %14s %8s %8s  %s" % ("row", "ours", "baseline", "ratio", "target", "ok"))
for r in rows:
    o, b, t = r["ours"], r["baseline"], r["target_max_ratio"]
    hib = r["detail"].get("higher_is_better") if isinstance(r["detail"], dict) else False
    ratio = (b / o if hib else o / b) if o and b else None
    r["ratio"] = ratio
    ok = "" if t is None or ratio is None else ("yes" if ratio <= t else "NO")
    print("%-32s %14.1f %14.1f %8s %8s  %s" % (r["name"] + " (" + r["unit"] + ")", o or 0, b or 0,
          "%.3f" % ratio if ratio is not None else "-", "%.2f" % t if t else "-", ok))
json.dump({"rows": rows}, open(sys.argv[2], "w"), indent=1)
print("results: " + sys.argv[2])
EOF
