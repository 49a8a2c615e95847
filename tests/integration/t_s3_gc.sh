#!/bin/sh
# GC of an S3 store shared by two hosts is safe against a live writer on the
# other host (no lanesd, no QEMU: nbdkit + lanes-store on two host dirs).
#
# The race: host A's writer (nbdkit-laness3-plugin, flush=local) has
# uploaded the chunks of a flushed commit, but the ref that names them is
# not in the bucket yet (here: the fault proxy fails every PUT of a ref, so
# A's uploader keeps retrying).  Host B runs `gc --grace 0`.  Without
# protection B sees unreferenced objects older than its cutoff and deletes
# them; when A's ref then lands, the bucket names missing chunks.  A's
# pending-upload marker (PREFIX/pending/...) makes B keep them.
#   - B's GC counts A's marker as a live writer and deletes none of A's
#     uploads; once the ref is published, a fresh host C verifies the store
#     clean and reads A's data
#   - A's marker is gone once A has nothing unpublished
#   - an expired marker (a crashed writer) is removed by GC and protects
#     nothing: garbage older than the cutoff is swept
set -eu
. "$(dirname "$0")/lib.sh"
. "$LANES_ROOT/tests/s3/lib-s3.sh"
need_cmd nbdkit qemu-io python3

test_tmpdir
s3_start
proxy_start
PLUGIN="$LANES_BUILD/bin/nbdkit-laness3-plugin.so"
STORE="$LANES_BUILD/bin/lanes-store"
[ -f "$PLUGIN" ] || fail "plugin not built"
P=gcx

serve() { # DIR DISK SOCK [extra params] -> sets NBD_PID
    _d=$1 _k=$2 _s=$3; shift 3
    rm -f "$_s"
    nbdkit --foreground --unix "$_s" "$PLUGIN" store="$_d" disk="$_k" "$@" >>"$T/nbdkit.log" 2>&1 &
    NBD_PID=$!
    on_exit "kill_wait $NBD_PID"
    wait_for 20 test -S "$_s" || fail "nbdkit did not start: $(tail -5 "$T/nbdkit.log")"
}
qio() { _s=$1; shift; qemu-io -f raw "nbd+unix:///?socket=$_s" "$@" >>"$T/qio.log" 2>&1; }
bucket_gen() { ls3 get "$P/refs/disk/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])'; }
nobj() { ls3 ls "$P/objects/" | wc -l; }
L3="'$LANES_S3' --endpoint '$S3_EP' --bucket '$S3_BUCKET' --credentials-file '$S3_CRED'"   # for sh -c
jnum() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

log "host A (through the fault proxy) and host B (direct) share one prefix"
head -c 2097152 /dev/urandom >"$T/img.raw"
truncate -s 32M "$T/img.raw"
ls3p store-init "$T/a" $P durability=local cache_dir="$T/cache-a" >/dev/null
$STORE --store "$T/a" import base "$T/img.raw" >/dev/null
$STORE --store "$T/a" create d1 --from image/base >/dev/null
ls3 store-init "$T/b" $P cache_dir="$T/cache-b" >/dev/null
[ -z "$(ls3 ls $P/pending/)" ] || fail "markers left after a finished import: $(ls3 ls $P/pending/)"
g0=$(bucket_gen d1)

log "A: flush a write; its uploader uploads the chunks but cannot publish the ref"
serve "$T/a" d1 "$T/a.sock" holder=host-a
# (the writer claims its ref's fencing token at open: fail ref PUTs after)
qio "$T/a.sock" -c "read 0 4k" || fail "A did not open: $(tail -5 "$T/nbdkit.log")"
proxy_set '{"mode": "503", "methods": ["PUT"], "paths": ["/refs/"]}'
n_before=$(nobj)
qio "$T/a.sock" -c "write -P 0x77 4M 1M" -c flush || fail "write+flush on A: $(tail -3 "$T/qio.log") $(tail -5 "$T/nbdkit.log")"
wait_for 60 sh -c "[ \$(python3 '$LANES_ROOT/tests/integration/store_objects.py' count '$T/a/journal') = 0 ]" ||
    fail "A's uploader did not upload its journal: $(tail -5 "$T/nbdkit.log")"
n_up=$(nobj)
[ "$n_up" -gt "$n_before" ] || fail "no new objects in the bucket ($n_before -> $n_up)"
[ "$(bucket_gen d1)" = "$g0" ] || fail "the ref was published despite the proxy"
ls3 ls $P/pending/ >"$T/markers.txt"
[ -s "$T/markers.txt" ] || fail "A has unpublished uploads but no pending-upload marker"
ls3 get "$(head -1 "$T/markers.txt" | cut -f1)" >"$T/marker.json"
grep -q '"lease":"disk/d1"' "$T/marker.json" || fail "marker does not name A's lease: $(cat "$T/marker.json")"
sleep 3   # A's objects are now older than a grace-0 cutoff (GC keeps a 2 s clock margin)

log "B: gc --grace 0 while A's ref is unpublished keeps A's uploads"
$STORE --store "$T/b" gc --grace 0 --json >"$T/gc-b.json" || fail "gc on B: $(cat "$T/gc-b.json")"
[ "$(jnum "$T/gc-b.json" live_writers)" -ge 1 ] || fail "B's GC did not see A's marker: $(cat "$T/gc-b.json")"
[ "$(nobj)" -eq "$n_up" ] || fail "B's GC deleted A's unpublished uploads ($n_up -> $(nobj)): $(cat "$T/gc-b.json")"

log "A: the store heals, the ref lands, the marker goes"
proxy_set '{"mode": "none"}'
wait_for 60 sh -c "$L3 get $P/refs/disk/d1 | grep -vq '\"generation\":$g0,'" ||
    fail "A never published its ref: $(tail -5 "$T/nbdkit.log")"
wait_for 30 sh -c "[ -z \"\$($L3 ls $P/pending/)\" ]" ||
    fail "A's marker outlived its unpublished uploads: $(ls3 ls $P/pending/)"
kill_wait $NBD_PID

log "C (fresh host): the store verifies clean and reads A's data"
ls3 store-init "$T/c" $P cache_dir="$T/cache-c" >/dev/null
$STORE --store "$T/c" verify >"$T/verify.txt" || fail "verify on a fresh host: $(cat "$T/verify.txt")"
serve "$T/c" d1 "$T/c.sock" lease=false
qio "$T/c.sock" -c "read -P 0x77 4M 1M" || fail "fresh host does not read A's data"
kill_wait $NBD_PID

log "an expired marker (crashed writer) is removed and protects nothing"
$STORE --store "$T/b" create junk --from image/base >/dev/null
serve "$T/b" junk "$T/j.sock" lease=false
qio "$T/j.sock" -c "write -P 0x31 8M 512k" -c flush || fail "junk write"
kill_wait $NBD_PID
$STORE --store "$T/b" rm disk/junk >/dev/null
now=$(date +%s%3N)
printf '{"lanes_pending":1,"owner":"1-1","holder":"dead-host","lease":"","lease_generation":0,"started_ms":%s,"expires_ms":%s}' \
    $((now - 3600000)) $((now - 1800000)) >"$T/dead.json"
ls3 put $P/pending/1-1-dead "$T/dead.json" >/dev/null
sleep 3
n1=$(nobj)
$STORE --store "$T/b" gc --grace 0 --json >"$T/gc-dead.json" || fail "gc: $(cat "$T/gc-dead.json")"
[ "$(jnum "$T/gc-dead.json" stale_writers)" -ge 1 ] || fail "dead marker not counted: $(cat "$T/gc-dead.json")"
[ "$(jnum "$T/gc-dead.json" deleted_objects)" -gt 0 ] && [ "$(nobj)" -lt "$n1" ] ||
    fail "garbage was not swept past a dead marker: $(cat "$T/gc-dead.json")"
ls3 ls $P/pending/ | grep -q dead && fail "the dead marker was not removed"
$STORE --store "$T/c" verify >"$T/verify2.txt" || fail "verify after sweep: $(cat "$T/verify2.txt")"
log "ok"
