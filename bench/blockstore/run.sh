#!/bin/sh
# bench/blockstore/run.sh — the lanes block store plugin against nbdkit's
# file plugin on a raw file and a qcow2 overlay served by qemu-nbd, all over
# a unix socket and measured with the same client (fio's nbd engine):
#   seq 1 MiB read and write, random 4 KiB read and write at iodepth 1 and 8;
#   then snapshot create time (and the flush before it) after BENCH_STORE_GIB
#   GiB written to a lane disk.
# Prints a table with the ratios (of per-target medians over interleaved
# rounds) against the targets and writes JSON (every run included).
#
#   bench/blockstore/run.sh [BUILD_DIR]
#
# Environment:
#   BENCH_DISK_MIB    disk size for the I/O tests (default 1024)
#   BENCH_BASE_MIB    non-zero data in the base image (default 256)
#   BENCH_SECONDS     runtime per fio job (default 8)
#   BENCH_ROUNDS      rounds of every test on every target, interleaved;
#                     the table shows medians (default 3)
#   BENCH_STORE_GIB   GiB written before the snapshot measurements
#                     (default "1 8"; e.g. "1" to shrink)
#   BENCH_OUT         JSON output (default BUILD_DIR/bench-blockstore.json)
#   BENCH_TESTS       the fio tests, NAME:RW:BS:IODEPTH[:FSYNC] (FSYNC: a
#                     flush every that many writes; default: all eight;
#                     the table shows the rows it has)
#   BENCH_PLUGIN_ARGS extra laneslocal parameters (e.g. "cache=64M")
#   BENCH_TMP         scratch dir (default a new dir in /var/tmp: needs
#                     about max(BENCH_STORE_GIB) + 3 GiB)
#
# Writes are followed by a flush (end_fsync), so their numbers include the
# commit of the store (and the fsync of the file / qcow2).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-${LANES_BUILD:-$ROOT/build}}
BUILD=$(cd "$BUILD" && pwd)
PLUGIN=$BUILD/bin/nbdkit-laneslocal-plugin.so
STORE_BIN=$BUILD/bin/lanes-store
DISK_MIB=${BENCH_DISK_MIB:-1024}
BASE_MIB=${BENCH_BASE_MIB:-256}
SECS=${BENCH_SECONDS:-8}
STORE_GIB=${BENCH_STORE_GIB:-"1 8"}
OUT=${BENCH_OUT:-$BUILD/bench-blockstore.json}

for c in fio nbdkit qemu-nbd qemu-img qemu-io python3; do
    command -v $c >/dev/null 2>&1 || { echo "bench/blockstore: $c not installed (scripts/deps.sh)" >&2; exit 77; }
done
[ -f "$PLUGIN" ] && [ -x "$STORE_BIN" ] || { echo "bench/blockstore: build $BUILD first" >&2; exit 1; }
fio --enghelp=nbd >/dev/null 2>&1 || { echo "bench/blockstore: fio lacks the nbd engine" >&2; exit 77; }

W=${BENCH_TMP:-$(mktemp -d /var/tmp/lanes-bench-store.XXXXXX)}
mkdir -p "$W"
SERVER_PID=""
stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
cleanup() { stop_server; [ -n "${BENCH_TMP:-}" ] || rm -rf -- "$W"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

wait_sock() {
    _n=0
    while [ ! -S "$1" ] && [ $_n -lt 200 ]; do sleep 0.05; _n=$((_n + 1)); done
    [ -S "$1" ] || { echo "server did not create $1" >&2; exit 1; }
}

# ---- the base image: BASE_MIB of random data at the start of DISK_MIB ----
log "base image: $BASE_MIB MiB of data in a $DISK_MIB MiB disk"
truncate -s "${DISK_MIB}M" "$W/base.raw"
head -c "$((BASE_MIB * 1048576))" /dev/urandom | dd of="$W/base.raw" conv=notrunc bs=1M status=none iflag=fullblock

# start_TARGET: serve one fresh disk on $W/sock
start_laneslocal() {
    rm -rf "$W/store"
    "$STORE_BIN" --store "$W/store" init >/dev/null
    "$STORE_BIN" --store "$W/store" import base "$W/base.raw" >/dev/null
    "$STORE_BIN" --store "$W/store" create d --from image/base >/dev/null
    rm -f "$W/sock"
    nbdkit --foreground --unix "$W/sock" "$PLUGIN" store="$W/store" disk=d ${BENCH_PLUGIN_ARGS:-} \
        >"$W/server.log" 2>&1 &
    SERVER_PID=$!
    wait_sock "$W/sock"
}
start_file() {
    cp --sparse=always "$W/base.raw" "$W/file.raw"
    rm -f "$W/sock"
    nbdkit --foreground --unix "$W/sock" file "$W/file.raw" >"$W/server.log" 2>&1 &
    SERVER_PID=$!
    wait_sock "$W/sock"
}
start_qcow2() {
    rm -f "$W/overlay.qcow2" "$W/sock"
    qemu-img create -q -f qcow2 -b "$W/base.raw" -F raw "$W/overlay.qcow2"
    qemu-nbd --persistent --socket="$W/sock" --format=qcow2 --shared=8 "$W/overlay.qcow2" >"$W/server.log" 2>&1 &
    SERVER_PID=$!
    wait_sock "$W/sock"
}

# fio JOB RW BS IODEPTH -> MiB/s and IOPS on stdout ("mibs iops")
run_fio() {
    _name=$1 _rw=$2 _bs=$3 _qd=$4 _fsync=${5:-0}
    _extra=""
    case $_rw in *write*) _extra="--end_fsync=1" ;; esac
    [ "$_fsync" -gt 0 ] && _extra="$_extra --fsync=$_fsync"
    # shellcheck disable=SC2086
    fio --name="$_name" --ioengine=nbd --uri="nbd+unix:///?socket=$W/sock" \
        --rw="$_rw" --bs="$_bs" --iodepth="$_qd" --size="${DISK_MIB}M" \
        --time_based --runtime="$SECS" --ramp_time=1 --randrepeat=0 --norandommap \
        --output-format=json $_extra >"$W/fio.json" 2>"$W/fio.err" ||
        { echo "fio $_name failed: $(cat "$W/fio.err")" >&2; exit 1; }
    python3 - "$W/fio.json" "$_rw" <<'EOF'
import json, sys
t = open(sys.argv[1]).read()   # the nbd engine prints a line before the JSON
j = json.loads(t[t.index("{"):])["jobs"][0]
side = j["write"] if "write" in sys.argv[2] else j["read"]
print("%.1f %.0f" % (side["bw_bytes"] / 1048576.0, side["iops"]))
EOF
}

TESTS=${BENCH_TESTS:-"seq-read:read:1M:1 seq-write:write:1M:1 rand-read-qd1:randread:4k:1 rand-read-qd8:randread:4k:8
rand-write-qd1:randwrite:4k:1 rand-write-qd8:randwrite:4k:8
seq-write-flush256:write:1M:1:256 rand-write-qd1-flush64:randwrite:4k:1:64"}

: >"$W/results.txt"
# Rounds interleave the targets test by test, so that load from elsewhere on
# the machine hits all of them alike; the table shows per-target medians.
rounds=${BENCH_ROUNDS:-3}
round=0
while [ $round -lt "$rounds" ]; do
    round=$((round + 1))
    for t in $TESTS; do
        name=${t%%:*}; rest=${t#*:}
        rw=${rest%%:*}; rest=${rest#*:}
        bs=${rest%%:*}; rest=${rest#*:}
        qd=${rest%%:*}; fsync=0
        [ "$qd" = "$rest" ] || fsync=${rest#*:}
        for target in ${BENCH_TARGETS:-laneslocal file qcow2}; do
            # a fresh disk per test: writes of one test must not warm the next
            "start_$target"
            r=$(run_fio "$name" "$rw" "$bs" "$qd" "$fsync")
            stop_server
            log "round $round: $target $name: $r (MiB/s IOPS)"
            echo "$target $name $r" >>"$W/results.txt"
        done
    done
done

# ---- snapshot create after N GiB written ----
: >"$W/snap.txt"
max_gib=0
for g in $STORE_GIB; do [ "$g" -gt "$max_gib" ] && max_gib=$g; done
rm -rf "$W/store" "$W/file.raw" "$W/overlay.qcow2"
"$STORE_BIN" --store "$W/store" init >/dev/null
"$STORE_BIN" --store "$W/store" import base "$W/base.raw" >/dev/null
"$STORE_BIN" --store "$W/store" create s --from image/base --size "$((max_gib + 1))G" >/dev/null
rm -f "$W/sock"
nbdkit --foreground --unix "$W/sock" "$PLUGIN" store="$W/store" disk=s >"$W/server.log" 2>&1 &
SERVER_PID=$!
wait_sock "$W/sock"
disk_gen() {
    "$STORE_BIN" --store "$W/store" ls | awk '$1 == "disk/s" { print $4 }'
}
written=0
for g in $(echo "$STORE_GIB" | tr ' ' '\n' | sort -n); do
    add=$((g - written))
    [ $add -gt 0 ] || continue
    log "writing $add GiB (total $g GiB) of random data, then snapshot"
    # random, incompressible and never repeating data: nothing dedups
    fio --name=fill --ioengine=nbd --uri="nbd+unix:///?socket=$W/sock" --rw=write --bs=1M \
        --offset="${written}G" --size="${add}G" --iodepth=4 --refill_buffers --output-format=json \
        >"$W/fill.json" 2>"$W/fio.err" || { echo "fill failed: $(cat "$W/fio.err")" >&2; exit 1; }
    written=$g
    # the flush: one NBD FLUSH (qemu-io), which commits what fio wrote (fio
    # sends none at the end of a job without end_fsync); the generation of
    # the disk's ref must have moved, or the snapshot below would copy an
    # older tree and the row would be meaningless
    gen0=$(disk_gen)
    t0=$(date +%s%N)
    qemu-io -f raw -c flush "nbd+unix:///?socket=$W/sock" >/dev/null ||
        { echo "flush failed" >&2; exit 1; }
    t1=$(date +%s%N)
    gen1=$(disk_gen)
    [ "$gen1" -gt "$gen0" ] || { echo "the flush did not commit (generation $gen0 -> $gen1)" >&2; exit 1; }
    "$STORE_BIN" --store "$W/store" snap create s "at-${g}g" >/dev/null
    t2=$(date +%s%N)
    "$STORE_BIN" --store "$W/store" snap rm s "at-${g}g" >/dev/null
    t3=$(date +%s%N)
    echo "$g $(((t1 - t0) / 1000)) $(((t2 - t1) / 1000)) $(((t3 - t2) / 1000))" >>"$W/snap.txt"
    log "after $g GiB: flush $(((t1 - t0) / 1000000)) ms, snapshot create $(((t2 - t1) / 1000)) us"
done
stop_server

python3 - "$W/results.txt" "$W/snap.txt" "$OUT" <<'EOF'
import json, sys
res, snap, out = sys.argv[1:4]
runs = {}
for line in open(res):
    tgt, name, mibs, iops = line.split()
    runs.setdefault(tgt, {}).setdefault(name, []).append((float(mibs), float(iops)))
def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
r = {}
for tgt, tests in runs.items():
    for name, v in tests.items():
        r.setdefault(tgt, {})[name] = {"mib_s": median([x[0] for x in v]), "iops": median([x[1] for x in v]),
                                       "runs": [{"mib_s": x[0], "iops": x[1]} for x in v]}
snaps = []
for line in open(snap):
    g, flush_us, create_us, rm_us = map(int, line.split())
    snaps.append({"gib_written": g, "flush_ms": flush_us / 1000.0,
                  "snapshot_create_ms": create_us / 1000.0, "snapshot_rm_ms": rm_us / 1000.0})
L, F, Q = r.get("laneslocal", {}), r.get("file", {}), r.get("qcow2", {})
def have(n):
    return n in L and n in F and n in Q
rows = []
def row(metric, ours, ref, refname, target, ok):
    rows.append({"metric": metric, "laneslocal": ours, "reference": ref, "reference_name": refname,
                 "ratio": ours / ref if ref else None, "target": target, "pass": ok})
NAMES = ("seq-read", "seq-write", "rand-read-qd1", "rand-read-qd8", "rand-write-qd1", "rand-write-qd8",
         "seq-write-flush256", "rand-write-qd1-flush64")
for n in ("seq-read", "seq-write"):
    if have(n):
        ratio = L[n]["mib_s"] / F[n]["mib_s"]
        row(n + " MiB/s", L[n]["mib_s"], F[n]["mib_s"], "file", ">= 0.8x file", ratio >= 0.8)
for n in ("rand-read-qd1", "rand-read-qd8"):
    if have(n):
        row(n + " IOPS", L[n]["iops"], F[n]["iops"], "file", "(info)", None)
for n in ("rand-write-qd1", "rand-write-qd8"):
    if have(n):
        row(n + " IOPS", L[n]["iops"], Q[n]["iops"], "qcow2", ">= qcow2", L[n]["iops"] >= Q[n]["iops"])
# with a FLUSH every 256 MiB / 64 writes: what deferred hashing costs when
# the guest flushes often (no target in the issue: information)
if have("seq-write-flush256"):
    n = "seq-write-flush256"
    row(n + " MiB/s", L[n]["mib_s"], F[n]["mib_s"], "file", "(info)", None)
if have("rand-write-qd1-flush64"):
    n = "rand-write-qd1-flush64"
    row(n + " IOPS", L[n]["iops"], Q[n]["iops"], "qcow2", "(info)", None)
for s in snaps:
    rows.append({"metric": "snapshot create after %d GiB (ms)" % s["gib_written"],
                 "laneslocal": s["snapshot_create_ms"], "reference": s["flush_ms"],
                 "reference_name": "flush ms", "ratio": None, "target": "< 50 ms beyond the flush",
                 "pass": s["snapshot_create_ms"] < 50})
print("%-34s %12s %12s %12s %8s  %-26s %s" % ("metric", "laneslocal", "file", "qcow2", "ratio", "target", ""))
for n in NAMES:
    if not have(n):
        continue
    unit = "mib_s" if n.startswith("seq") else "iops"
    x = next(w for w in rows if w["metric"].startswith(n + " "))
    ok = "" if x["pass"] is None else ("ok" if x["pass"] else "MISS")
    print("%-34s %12.0f %12.0f %12.0f %7.2fx  %-26s %s" % (x["metric"], L[n][unit], F[n][unit], Q[n][unit],
                                                        x["ratio"], x["target"] + " (" + x["reference_name"] + ")", ok))
for x in rows:
    if x["metric"].startswith("snapshot"):
        print("%-34s %12.1f %12s %12s %8s  %-26s %s" % (x["metric"], x["laneslocal"], "", "", "",
                                                     "%s (flush %.0f ms)" % (x["target"], x["reference"]),
                                                     "ok" if x["pass"] else "MISS"))
json.dump({"results": r, "snapshots": snaps, "table": rows}, open(out, "w"), indent=2)
print("\nJSON: " + out)
EOF
