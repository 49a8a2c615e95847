#!/bin/sh
# A real lane (minimal image, lanesd, QEMU/TCG) whose disk lives in s3rver,
# reached through tests/s3/faultproxy.py, store flush durability "remote"
# (a guest fsync returns only once objects and ref are in the bucket):
#   - with 30 % of requests answered 503 SlowDown, then 30 % reset mid-body,
#     then 30 % truncated, the guest's fsync'd writes all succeed (retries
#     with backoff hide the faults) and the proxy really did fault requests
#   - when every request fails, the guest's fsync fails with EIO — only
#     after the client's retries ran out (several attempts per request)
#   - with the store healthy again and the lane rebooted, every write that
#     was acknowledged before is intact, read back from the bucket by a
#     fresh cache (no flushed data lost)
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
. "$LANES_ROOT/tests/s3/lib-s3.sh"
need_cmd python3

test_tmpdir
s3_start
proxy_start
lanes_start
lanes_image minimal

lc store add sf s3 --endpoint "$PROXY_EP" --bucket "$S3_BUCKET" --prefix faults \
    --credentials-file "$S3_CRED" --flush remote >/dev/null 2>&1 || fail "store add"
lc create f1 --image minimal --memory 256 --disk 1 --store sf >/dev/null
lc boot f1 >/dev/null
F1=$(lc inspect f1 | json_field id)

write_ok() { # NAME: write 256 KiB of random data with fsync, keep its checksum
    lc exec f1 -- sh -c "head -c 262144 /dev/urandom > /root/$1.tmp && dd if=/root/$1.tmp of=/root/$1 bs=64k conv=fsync 2>/dev/null && rm /root/$1.tmp && sha256sum /root/$1" \
        >"$T/$1.sum" 2>"$T/$1.err" ||
        fail "write $1 failed under faults: $(cat "$T/$1.err"); nbdkit: $(tail -5 "$LANES_STATE/lanes/$F1/nbdkit.log")"
}

faults0=$(proxy_stat faults)
for mode in 503 reset truncate; do
    log "faults: $mode on 30 % of requests"
    proxy_set "{\"mode\":\"$mode\",\"rate\":0.3,\"seed\":7}"
    write_ok "w-$mode"
done
proxy_set '{"mode":"none"}'
faults=$(( $(proxy_stat faults) - faults0 ))
log "proxy faulted $faults requests; every fsync succeeded"
[ "$faults" -gt 3 ] || fail "the proxy hardly faulted anything ($faults): the test proves nothing"

log "every request fails: the guest's fsync gets EIO after the retries"
req0=$(proxy_stat requests)
proxy_set '{"mode":"503","rate":1}'
t0=$(now)
if lc exec f1 -- sh -c 'head -c 65536 /dev/urandom > /root/lost && dd if=/root/lost of=/root/lost2 conv=fsync 2>&1' \
    >"$T/eio.out" 2>&1; then
    fail "fsync succeeded with the store down: $(cat "$T/eio.out")"
fi
took=$(elapsed "$t0")
reqs=$(( $(proxy_stat requests) - req0 ))
log "fsync failed after ${took}s and $reqs refused requests: $(tail -1 "$T/eio.out")"
grep -qi "I/O error\|error" "$T/eio.out" || fail "no I/O error reported to the guest: $(cat "$T/eio.out")"
[ "$reqs" -ge 6 ] || fail "EIO after only $reqs requests: retries did not run"
grep -q "attempts" "$LANES_STATE/lanes/$F1/nbdkit.log" || fail "nbdkit log does not show exhausted retries"

log "store healthy again: reboot and read every acknowledged write back"
proxy_set '{"mode":"none"}'
lc stop f1 --timeout 20 >/dev/null 2>&1 || true
wait_for 60 lane_state_is f1 stopped || lc stop f1 >/dev/null 2>&1 || true
wait_for 60 sh -c "'$LANES_BUILD/bin/lanectl' --socket '$LANES_SOCKET' inspect f1 | grep -q '\"state\": *\"\(stopped\|failed\)\"'" ||
    fail "f1 did not stop"
rm -rf "$LANES_STATE/s3cache"   # read from the bucket, not from this host's cache
lc boot f1 >/dev/null || fail "reboot: $(tail -5 "$LANES_STATE/lanesd.log")"
for mode in 503 reset truncate; do
    want=$(cut -d' ' -f1 "$T/w-$mode.sum")
    got=$(lc exec f1 -- sha256sum "/root/w-$mode" | cut -d' ' -f1)
    [ "$want" = "$got" ] || fail "acknowledged write w-$mode lost or changed ($want != $got)"
done
log "ok"
