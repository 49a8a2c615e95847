#!/bin/sh
# t_blockstore_nbd: the laneslocal nbdkit plugin under real nbdkit and real
# NBD clients (qemu-io, qemu-img, nbdinfo).
#
#   import a raw image (random data + zero runs + a partial last chunk),
#   create a bigger disk from it, serve it, write patterns (unaligned,
#   zero/discard, FUA), compare against the same operations applied to a
#   plain raw file; kill -9 nbdkit after a flush -> data present after
#   restart; unflushed writes then kill -9 -> the flushed state intact;
#   a corrupted object -> reads of that chunk fail with EIO, others work;
#   image=NAME serves read-only.
set -eu
. "$(dirname "$0")/lib.sh"

need_cmd nbdkit qemu-io qemu-img nbdinfo sha256sum dd truncate stdbuf od
plugin="$LANES_BUILD/bin/nbdkit-laneslocal-plugin.so"
cli="$LANES_BUILD/bin/lanes-store"
[ -f "$plugin" ] || fail "plugin not built: $plugin"
[ -x "$cli" ] || fail "lanes-store not built: $cli"
test_tmpdir

S="$T/store"
SOCK="$T/nbd.sock"
URI="nbd+unix:///?socket=$SOCK"
NBDKIT_PID=""

start_nbdkit() {  # start_nbdkit [--log REQLOG] PARAM...
    rm -f "$SOCK"
    if [ "$1" = --log ]; then
        reqlog=$2; shift 2
        set -- --filter=log "$plugin" store="$S" logfile="$reqlog" "$@"
    else
        set -- "$plugin" store="$S" "$@"
    fi
    nbdkit -f --unix "$SOCK" "$@" >>"$T/nbdkit.log" 2>&1 &
    NBDKIT_PID=$!
    wait_for 10 test -S "$SOCK" || { cat "$T/nbdkit.log"; fail "nbdkit did not start"; }
}
stop_nbdkit_hard() {
    kill -KILL "$NBDKIT_PID" 2>/dev/null || true
    wait "$NBDKIT_PID" 2>/dev/null || true
    NBDKIT_PID=""
}
on_exit '[ -z "$NBDKIT_PID" ] || kill -KILL "$NBDKIT_PID" 2>/dev/null || true'

# Apply the same qemu-io commands to the NBD disk and to the expected file.
both_io() {
    qemu-io -f raw -t writeback "$@" "$URI" >"$T/qio.out" 2>&1 || { cat "$T/qio.out"; fail "qemu-io on nbd: $*"; }
    qemu-io -f raw "$@" "$T/expected.raw" >/dev/null 2>&1 || fail "qemu-io on file: $*"
}
same_as_expected() {
    qemu-img compare -f raw -F raw "$T/expected.raw" "$URI" >"$T/cmp.out" 2>&1 ||
        { cat "$T/cmp.out"; fail "disk differs from expected ($1)"; }
    log "compare ok: $1"
}
generation() { "$cli" --store "$S" info disk/d1 | awk '/^generation:/ { print $2 }'; }

# --- image: 8 MiB random, 8 MiB zeros, 2 MiB random, zeros, partial chunk
MiB=1048576
dd if=/dev/urandom of="$T/base.raw" bs=$MiB count=8 status=none
dd if=/dev/urandom of="$T/base.raw" bs=$MiB seek=16 count=2 conv=notrunc status=none
truncate -s $((24 * MiB + 12345)) "$T/base.raw"
dd if=/dev/urandom of="$T/base.raw" bs=1 seek=$((24 * MiB)) count=12345 conv=notrunc status=none

"$cli" --store "$S" import base "$T/base.raw" || fail "import"
OBJ="$(dirname "$0")/store_objects.py"
nobj=$(python3 "$OBJ" count "$S")
log "imported: $nobj objects"
# 8 + 2 MiB of data + 1 partial chunk = 161 chunks of 64 KiB, plus map pages;
# the 14 MiB of zeros must not be stored.
[ "$nobj" -ge 161 ] && [ "$nobj" -le 170 ] || fail "unexpected object count $nobj"
"$cli" --store "$S" export image/base "$T/export.raw" || fail "export"
cmp "$T/base.raw" "$T/export.raw" || fail "export differs from the imported file"

"$cli" --store "$S" create d1 --from image/base --size 32M || fail "create"
cp "$T/base.raw" "$T/expected.raw"
truncate -s $((32 * MiB)) "$T/expected.raw"

# --- serve, inspect, write
start_nbdkit disk=d1
nbdinfo "$URI" >"$T/info.out" || fail "nbdinfo"
grep -q "export-size: $((32 * MiB))" "$T/info.out" || { cat "$T/info.out"; fail "size"; }
grep -q "can_flush: true" "$T/info.out" || fail "can_flush"
grep -q "is_read_only: false" "$T/info.out" || fail "should be writable"
same_as_expected "fresh disk = image + zero growth"

gen0=$(generation)
both_io -c 'write -P 0x11 1M 3M' -c 'write -P 0x22 65000 200000' \
        -c 'write -z 17M 512k' -c 'discard 5M 1M' -c 'write -P 0x33 30M 2M' \
        -c 'write -P 0x44 25165820 300' -c 'flush'
same_as_expected "after writes"
gen1=$(generation)
[ "$gen1" -gt "$gen0" ] || fail "flush did not commit (generation $gen0 -> $gen1)"

# --- kill -9 after flush: everything flushed survives
stop_nbdkit_hard
start_nbdkit disk=d1
same_as_expected "after kill -9 and restart"

# --- flushed write, then unflushed writes, then kill -9 while the client
# is still connected.  qemu-io flushes when it closes, so it is kept alive
# with `sleep`; the log filter tells us when the last request was served
# (requests are serialized, and qemu-io issues them one after another).
hold_io() {  # hold_io MARKER-REGEX qemu-io-commands...
    marker=$1; shift
    qemu-io -f raw -t writeback "$@" -c 'sleep 120000' "$URI" >"$T/hold.out" 2>&1 &
    qio=$!
    wait_for 20 grep -Eq "$marker" "$T/nbdkit-req.log" || { kill -KILL $qio; fail "client requests not seen"; }
    stop_nbdkit_hard
    kill -KILL $qio 2>/dev/null || true
    wait $qio 2>/dev/null || true
}
rm -f "$T/nbdkit-req.log"
start_nbdkit --log "$T/nbdkit-req.log" disk=d1
# 9M = 0x900000; the marker is the read of 0x90000a issued last
hold_io 'Read id=[0-9]+ offset=0x90000a count=0x64' \
    -c 'write -P 0xaa 9M 64k' -c 'flush' \
    -c 'write -P 0xbb 10M 1M' -c 'write -P 0xbb 9437194 100' \
    -c 'read -P 0xbb 9437194 100'
grep -q "Flush" "$T/nbdkit-req.log" || fail "no flush seen"
[ "$(grep -c "Flush" "$T/nbdkit-req.log")" -eq 2 ] || fail "unexpected extra flushes (request + return lines expected)"
qemu-io -f raw -c 'write -P 0xaa 9M 64k' "$T/expected.raw" >/dev/null
start_nbdkit disk=d1
same_as_expected "unflushed writes gone after kill -9, flushed ones kept"
stop_nbdkit_hard

# --- a FUA write is durable without a flush
rm -f "$T/nbdkit-req.log"
start_nbdkit --log "$T/nbdkit-req.log" disk=d1
hold_io 'Read id=[0-9]+ offset=0xc00200 count=0x1 ' \
    -c 'write -f -P 0xcc 12583424 4096' -c 'write -P 0xdd 13M 64k' -c 'read 12583424 1'
grep -q "fua=1" "$T/nbdkit-req.log" || fail "no FUA write seen"
grep -q "Flush" "$T/nbdkit-req.log" && fail "unexpected flush"
qemu-io -f raw -c 'write -P 0xcc 12583424 4096' "$T/expected.raw" >/dev/null
start_nbdkit disk=d1
same_as_expected "FUA write survived kill -9 (the unflushed one after it did not)"
stop_nbdkit_hard

# --- kill -9 at random points of a write+flush loop: the disk must always
# be exactly one flushed state (state k = 4 MiB of one byte value, written
# as 16 requests of 256 KiB, then a flush), never a mix of two, and never
# older than the last flush the client saw acknowledged.
# dirty-limit=1M: the engine spills (uncommitted) objects inside a state.
val() { echo $(( ($1 * 50 + $2) % 250 + 1 )); }   # val ROUND K
start_nbdkit disk=d1 dirty-limit=1M
for round in 1 2 3 4 5; do
    cmds=""
    for k in $(seq 1 50); do
        v=$(val "$round" "$k")
        for j in $(seq 0 15); do
            cmds="$cmds -c 'write -P $v $((20 * MiB + j * 262144)) 256k'"
        done
        cmds="$cmds -c 'flush'"
    done
    # line-buffered so the "wrote" lines survive kill -9 of qemu-io
    eval "stdbuf -oL qemu-io -f raw -t writeback $cmds \"\$URI\"" >"$T/loop.out" 2>&1 &
    qio=$!
    sleep "0.$(( $(od -An -N1 -tu1 /dev/urandom) % 9 + 1 ))"
    stop_nbdkit_hard
    kill -KILL $qio 2>/dev/null || true
    wait $qio 2>/dev/null || true
    wrote=$(grep -c '^wrote ' "$T/loop.out" || true)
    start_nbdkit disk=d1 dirty-limit=1M
    first=$(qemu-io -f raw -c 'read -v 20M 1' "$URI" | awk '/^0140/ { print $2; exit }')
    [ -n "$first" ] || fail "could not read back the region"
    v=$(printf '%d' "0x$first")
    qemu-io -f raw -c "read -P $v 20M 4M" "$URI" >"$T/chk.out" 2>&1 || true
    grep -q "Pattern verification failed" "$T/chk.out" && fail "round $round: torn state (mix of generations) after kill -9"
    grep -q "^read 4194304/4194304" "$T/chk.out" || { cat "$T/chk.out"; fail "round $round: read back failed"; }
    # The first write of state k+1 is only issued after flush k returned.
    if [ "$wrote" -ge 17 ]; then
        k_min=$(( (wrote - 1) / 16 ))
        ok=0
        for k in $(seq "$k_min" 50); do
            [ "$(val "$round" "$k")" -eq "$v" ] && ok=1
        done
        [ $ok -eq 1 ] || fail "round $round: state $v older than acknowledged flush $k_min"
    fi
    log "round $round: killed after $wrote acked writes; disk holds one whole state (0x$first)"
done
stop_nbdkit_hard
qemu-io -f raw -c "write -P $v 20M 4M" "$T/expected.raw" >/dev/null
start_nbdkit disk=d1
same_as_expected "after the kill -9 rounds"
stop_nbdkit_hard

# --- image=NAME is served read-only and equals the raw file
start_nbdkit image=base
nbdinfo "$URI" | grep -q "is_read_only: true" || fail "image export not read-only"
qemu-img compare -f raw -F raw "$T/base.raw" "$URI" >/dev/null || fail "image export differs"
stop_nbdkit_hard

# --- corrupt the object of the chunk at 6 MiB (not rewritten above)
hash=$(dd if="$T/base.raw" bs=65536 skip=96 count=1 status=none | sha256sum | cut -c1-64)
python3 "$OBJ" locate "$S" "$hash" >/dev/null || fail "object for chunk 96 not found"
python3 "$OBJ" corrupt "$S" "$hash" 4000
start_nbdkit disk=d1
if qemu-io -f raw -c 'read 6M 4k' "$URI" >"$T/bad.out" 2>&1 &&
   ! grep -qi "error" "$T/bad.out"; then
    cat "$T/bad.out"; fail "read of a corrupt chunk returned data"
fi
grep -qi "Input/output error" "$T/bad.out" || { cat "$T/bad.out"; fail "expected EIO from qemu-io"; }
grep -q "corrupt" "$T/nbdkit.log" || fail "nbdkit log does not name the corruption"
qemu-io -f raw -c 'read -P 0x11 1M 1M' "$URI" >"$T/ok.out" 2>&1 || { cat "$T/ok.out"; fail "healthy read failed"; }
grep -qi "error\|fail\|mismatch" "$T/ok.out" && { cat "$T/ok.out"; fail "healthy read failed"; }
# and a missing object is EIO too
python3 "$OBJ" forget "$S" "$hash"
stop_nbdkit_hard
start_nbdkit disk=d1
qemu-io -f raw -c 'read 6M 4k' "$URI" >"$T/bad2.out" 2>&1 || true
grep -qi "Input/output error" "$T/bad2.out" || { cat "$T/bad2.out"; fail "missing object: expected EIO"; }
stop_nbdkit_hard

# --- error paths of the plugin
nbdkit -f --unix "$SOCK" "$plugin" store="$S" disk=nope >"$T/err.out" 2>&1 && fail "nbdkit started for a missing disk"
grep -q "no ref disk/nope" "$T/err.out" || { cat "$T/err.out"; fail "missing-disk message"; }
log "all blockstore NBD checks passed"
