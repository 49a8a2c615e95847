#!/bin/sh
# t_blockstore_gc: snapshots and garbage collection of a local store under
# a real nbdkit + laneslocal plugin and standard NBD clients (qemu-io,
# qemu-img, nbdinfo, nbdcopy).
#
#   GC while nbdkit holds spilled-but-unflushed chunks (made to look an hour
#   old, as after a long idle guest): GC keeps them (live pending session),
#   the later FLUSH commits a complete disk and verify is clean;
#   a snapshot served read-only with ref= and copied out with nbdcopy equals
#   the disk at snapshot time; after overwrites and snapshot removal GC
#   leaves exactly the reachable objects; a corrupted object is reported by
#   verify with the refs it affects.
set -eu
. "$(dirname "$0")/lib.sh"

need_cmd nbdkit qemu-io qemu-img nbdinfo nbdcopy python3
plugin="$LANES_BUILD/bin/nbdkit-laneslocal-plugin.so"
cli="$LANES_BUILD/bin/lanes-store"
[ -f "$plugin" ] || fail "plugin not built: $plugin"
test_tmpdir

S="$T/store"
ST() { "$cli" --store "$S" "$@"; }
jf() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
PIDS=""
on_exit 'for p in $PIDS; do kill -KILL $p 2>/dev/null || true; done'
serve() {  # serve SOCK PARAM...
    sock=$1; shift
    rm -f "$sock"
    nbdkit -f --unix "$sock" "$plugin" store="$S" "$@" >>"$T/nbdkit.log" 2>&1 &
    PIDS="$PIDS $!"
    LAST_PID=$!
    wait_for 10 test -S "$sock" || { cat "$T/nbdkit.log"; fail "nbdkit did not start"; }
}
OBJ="$(dirname "$0")/store_objects.py"
age_store() {  # make every object and pending file look an hour old
    python3 "$OBJ" age "$S" 3600
    find "$S/pending" -type f -exec touch -d '-1 hour' {} +
}

ST init --chunk-size 64K
dd if=/dev/urandom of="$T/base.raw" bs=1M count=16 status=none
ST import base "$T/base.raw"
ST create d1 --from image/base
cp "$T/base.raw" "$T/expected.raw"
SOCK="$T/d1.sock"
URI="nbd+unix:///?socket=$SOCK"
serve "$SOCK" disk=d1 dirty-limit=1M

log "unflushed writes spill (nbdcopy without --flush sends no FLUSH)"
dd if=/dev/urandom of="$T/expected.raw" bs=1M count=6 conv=notrunc status=none
dd if=/dev/urandom of="$T/expected.raw" bs=1M seek=9 count=3 conv=notrunc status=none
head -c 12M "$T/expected.raw" >"$T/w.raw"
nbdcopy "$T/w.raw" "$URI" || fail "nbdcopy write"
gen=$(ST info disk/d1 | awk '/^generation/ {print $2}')
[ "$gen" = 1 ] || fail "something committed already (generation $gen)"
age_store
ST gc --grace 0 --json >"$T/gc1.json"
log "gc during unflushed writes: $(cat "$T/gc1.json")"
[ "$(jf live_writers <"$T/gc1.json")" = 1 ] || fail "nbdkit's pending session not seen"
[ "$(jf deleted_objects <"$T/gc1.json")" = 0 ] || fail "GC deleted a live writer's objects"
# spilled chunks sit in nbdkit's active pack, not yet indexed: GC must not
# truncate or compact it under the writer
[ "$(python3 "$OBJ" unindexed "$S")" -ge $((100 * 65536)) ] || fail "expected >= 100 spilled, unindexed chunks in a pack"
qemu-io -f raw -c flush "$URI" >/dev/null || fail "flush after gc"
ST verify >"$T/v1" || fail "verify after flush: $(cat "$T/v1")"
qemu-img compare -f raw -F raw "$T/expected.raw" "$URI" >/dev/null || fail "disk differs after gc + flush"

log "snapshot, served read-only by ref=, copied with nbdcopy"
ST snap create d1 s1
cp "$T/expected.raw" "$T/s1.expected"
SSOCK="$T/s1.sock"
serve "$SSOCK" ref=snap/d1/s1
nbdinfo "nbd+unix:///?socket=$SSOCK" | grep -q 'is_read_only: true' || fail "snapshot not served read-only"
nbdcopy "nbd+unix:///?socket=$SSOCK" "$T/s1.copy"
cmp "$T/s1.copy" "$T/s1.expected" || fail "nbdcopy of the snapshot differs"
kill -TERM "$LAST_PID"; wait "$LAST_PID" 2>/dev/null || true

log "overwrite after the snapshot: the snapshot keeps its data"
qemu-io -f raw -c "write -P 0x33 0 8M" -c flush "$URI" >/dev/null
qemu-io -f raw -c "write -P 0x33 0 8M" "$T/expected.raw" >/dev/null
ST export snap/d1/s1 "$T/s1.export"
cmp "$T/s1.export" "$T/s1.expected" || fail "snapshot changed by later writes"
ST snap ls d1 --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[0]["unique_bytes"] >= 6*2**20, d' ||
    fail "s1 should hold >= 6 MiB alone"

log "snapshot removed: GC frees exactly the garbage"
ST snap rm d1 s1
before=$(ST stats --json | jf objects)
age_store
ST gc --grace 0 --json >"$T/gc2.json"
log "gc: $(cat "$T/gc2.json")"
[ "$(jf deleted_objects <"$T/gc2.json")" -gt 90 ] || fail "too little freed"
ST stats --json >"$T/st.json"
[ "$(jf garbage_objects <"$T/st.json")" = 0 ] || fail "garbage left: $(cat "$T/st.json")"
[ "$(jf objects <"$T/st.json")" = "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["unique_chunks"]+d["pages"])' "$T/st.json")" ] ||
    fail "objects != reachable: $(cat "$T/st.json")"
[ "$before" -gt "$(jf objects <"$T/st.json")" ] || fail "object count did not drop"
ST verify >/dev/null || fail "verify after gc"
qemu-img compare -f raw -F raw "$T/expected.raw" "$URI" >/dev/null || fail "disk differs after gc"
cmp "$T/base.raw" "$(ST export image/base "$T/img.export" && echo "$T/img.export")" || fail "image damaged"

log "a corrupt object: verify names it and the refs it affects"
python3 "$OBJ" corrupt "$S" "$(python3 "$OBJ" first "$S")" 10
set +e; ST verify --json >"$T/v2.json"; rc=$?; set -e
[ $rc = 1 ] || fail "verify exit $rc with a corrupt object"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); p=d["problems"]; assert len(p)==1 and p[0]["problem"]=="corrupt" and p[0]["refs"], d' "$T/v2.json" ||
    fail "verify report: $(cat "$T/v2.json")"
log "ok"
