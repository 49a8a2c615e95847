#!/bin/sh
# The S3 block-store backend under nbdkit-laness3-plugin and lanes-store,
# against s3rver on loopback (no lanesd):
#   - FLUSH durability "remote": when FLUSH returns the new ref is in the
#     bucket (read back while nbdkit still runs)
#   - FLUSH durability "local": FLUSH returns with the data only in the
#     local journal; kill -9 of nbdkit right after it loses nothing: the next
#     open uploads the journal and publishes the ref, and a fresh host dir
#     (nothing but the bucket) reads the data
#   - snapshots and forks of S3 disks are refs in the bucket; GC sweeps
#     bucket objects no ref reaches (grace honoured), and verify on a fresh
#     host dir is clean afterwards
#   - lazy reads: a fresh host reading 256 KiB of a disk fetches a few
#     chunks, not the image
set -eu
. "$(dirname "$0")/lib.sh"
. "$LANES_ROOT/tests/s3/lib-s3.sh"
need_cmd nbdkit qemu-io python3

test_tmpdir
s3_start
PLUGIN="$LANES_BUILD/bin/nbdkit-laness3-plugin.so"
STORE="$LANES_BUILD/bin/lanes-store"
[ -f "$PLUGIN" ] || fail "plugin not built"

serve() { # DIR DISK SOCK [extra params] -> sets NBD_PID
    _d=$1 _k=$2 _s=$3; shift 3
    rm -f "$_s"
    nbdkit --foreground --unix "$_s" "$PLUGIN" store="$_d" disk="$_k" holder=test-host "$@" \
        >>"$T/nbdkit.log" 2>&1 &
    NBD_PID=$!
    wait_for 20 test -S "$_s" || fail "nbdkit did not start: $(tail -5 "$T/nbdkit.log")"
}
qio() { _s=$1; shift; qemu-io -f raw "nbd+unix:///?socket=$_s" "$@" >>"$T/qio.log" 2>&1; }
bucket_gen() { ls3 get "$1/refs/disk/$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])'; }

log "image with 4 MiB of data in a 64 MiB disk"
head -c 4194304 /dev/urandom >"$T/img.raw"
truncate -s 64M "$T/img.raw"

log "remote durability: FLUSH returns after the ref is in the bucket"
ls3 store-init "$T/r" rmt durability=remote cache_dir="$T/cache" >/dev/null
$STORE --store "$T/r" import base "$T/img.raw" >/dev/null
$STORE --store "$T/r" create d1 --from image/base >/dev/null
g0=$(bucket_gen rmt d1)
serve "$T/r" d1 "$T/r.sock"
qio "$T/r.sock" -c "write -P 0x5a 8M 1M" -c flush || fail "write+flush"
g1=$(bucket_gen rmt d1)
[ "$g1" -gt "$g0" ] || fail "ref not in the bucket when FLUSH returned ($g0 -> $g1)"
kill_wait $NBD_PID

log "local durability: kill -9 right after FLUSH loses nothing"
ls3 store-init "$T/l" loc durability=local cache_dir="$T/cache" >/dev/null
$STORE --store "$T/l" import base "$T/img.raw" >/dev/null
$STORE --store "$T/l" create d1 --from image/base >/dev/null
g0=$(bucket_gen loc d1)
serve "$T/l" d1 "$T/l.sock"
qio "$T/l.sock" -c "write -P 0xc3 16M 2M" -c flush || fail "write+flush"
kill -9 $NBD_PID
wait $NBD_PID 2>/dev/null || true
jcount() { python3 "$LANES_ROOT/tests/integration/store_objects.py" count "$1/journal"; }
log "journal after kill -9: $(jcount "$T/l") objects"
serve "$T/l" d1 "$T/l.sock"   # reopen: replays (uploads) the journal
wait_for 30 sh -c "[ \$(python3 '$LANES_ROOT/tests/integration/store_objects.py' count '$T/l/journal') = 0 ]" ||
    fail "journal not drained after restart: $(jcount "$T/l") objects left -- nbdkit: $(tail -8 "$T/nbdkit.log")"
kill_wait $NBD_PID
g1=$(bucket_gen loc d1)
[ "$g1" -gt "$g0" ] || fail "flushed commit never reached the bucket ($g0 -> $g1)"
ls3 store-init "$T/l2" loc cache_dir="$T/cache2" >/dev/null
serve "$T/l2" d1 "$T/l2.sock" lease=false
qio "$T/l2.sock" -c "read -P 0xc3 16M 2M" || fail "fresh host does not read the flushed data"
kill_wait $NBD_PID

log "lazy: a fresh host reading 256 KiB fetches a few chunks"
ls3 store-init "$T/l3" loc cache_dir="$T/cache3" >/dev/null
serve "$T/l3" d1 "$T/l3.sock" lease=false readahead=0 stats="$T/l3.stats"
qio "$T/l3.sock" -c "read 0 256k" || fail "read"
kill_wait $NBD_PID
gets=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["get_bytes"])' "$T/l3.stats")
log "fetched $gets bytes for 256 KiB of a 4 MiB-data image"
[ "$gets" -lt 1048576 ] || fail "read 256 KiB fetched $gets bytes"

log "snapshots, fork and GC on an S3 store"
$STORE --store "$T/r" snap create d1 s1 >/dev/null
$STORE --store "$T/r" cp snap/d1/s1 disk/f1 >/dev/null
ls3 ls rmt/refs/ >"$T/refs.txt"
grep -q "rmt/refs/snap/d1/s1" "$T/refs.txt" || fail "snapshot ref not in the bucket"
grep -q "rmt/refs/disk/f1" "$T/refs.txt" || fail "fork ref not in the bucket"
serve "$T/r" f1 "$T/f1.sock"
qio "$T/f1.sock" -c "read -P 0x5a 8M 1M" -c "write -P 0x77 8M 1M" -c flush || fail "fork write"
kill_wait $NBD_PID
serve "$T/r" d1 "$T/r.sock"
qio "$T/r.sock" -c "read -P 0x5a 8M 1M" || fail "fork write leaked into d1"
kill_wait $NBD_PID
n0=$(ls3 ls rmt/objects/ | wc -l)
$STORE --store "$T/r" gc --grace 0 >"$T/gc0.txt"
n1=$(ls3 ls rmt/objects/ | wc -l)
[ "$n1" -eq "$n0" ] || fail "GC deleted reachable objects ($n0 -> $n1)"
$STORE --store "$T/r" rm disk/f1 >/dev/null
$STORE --store "$T/r" snap rm d1 s1 >/dev/null
$STORE --store "$T/r" gc --grace 3600 >"$T/gc1.txt"
[ "$(ls3 ls rmt/objects/ | wc -l)" -eq "$n1" ] || fail "GC ignored the grace period"
sleep 3   # past GC's 2 s clock margin
$STORE --store "$T/r" gc --grace 0 --json >"$T/gc2.json"
del=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["deleted_objects"])' "$T/gc2.json")
n2=$(ls3 ls rmt/objects/ | wc -l)
log "GC deleted $del objects ($n1 -> $n2)"
[ "$del" -gt 0 ] && [ "$n2" -eq $((n1 - del)) ] || fail "GC after fork rm: $(cat "$T/gc2.json")"
ls3 store-init "$T/r2" rmt cache_dir="$T/cache4" >/dev/null
$STORE --store "$T/r2" verify >"$T/verify.txt" || fail "verify on a fresh host: $(cat "$T/verify.txt")"
$STORE --store "$T/r2" ls | grep -q "disk/f1" && fail "fork still listed after rm"
log "ok"
