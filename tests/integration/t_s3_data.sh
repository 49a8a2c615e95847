#!/bin/sh
# t_s3_data — the lanes_s3 client against a real s3rver on loopback:
# put/get/head/list (paginated)/delete, ranged and large objects, path- and
# virtual-host-style addressing, parallel verified GETs over few
# connections, error messages (status, S3 code, attempts, no credentials),
# the credentials-file permission check, and the conditional-write probe.
#
# s3rver accepts any well-formed SigV4 header for its fixed key without
# verifying the signature, and ignores If-None-Match/If-Match on PUT: this
# test proves the data path only.  Signing and the lease protocol are
# covered by the unit tests (test_s3_sign, test_s3_client, test_s3_lease).
. "$(dirname "$0")/lib.sh"
. "$LANES_ROOT/tests/s3/lib-s3.sh"
test_tmpdir
s3_start

# put / get / head / overwrite
printf 'hello s3\n' >"$T/small"
etag=$(ls3 put dir/small.txt "$T/small") || fail "put"
[ "$etag" = '"'"$(md5sum <"$T/small" | cut -c1-32)"'"' ] || fail "etag $etag is not the MD5"
ls3 get dir/small.txt >"$T/small.out" || fail "get"
cmp -s "$T/small" "$T/small.out" || fail "get returned other bytes"
ls3 head dir/small.txt | grep -q '^size=9 ' || fail "head size"

# ranged get
ls3 get dir/small.txt 6 2 >"$T/range.out" || fail "ranged get"
[ "$(cat "$T/range.out")" = "s3" ] || fail "ranged get returned '$(cat "$T/range.out")'"

# large object (6 MiB of random bytes), whole and a range in the middle
head -c $((6 * 1024 * 1024)) /dev/urandom >"$T/large"
ls3 put big/blob "$T/large" >/dev/null || fail "put large"
ls3 get big/blob >"$T/large.out" || fail "get large"
cmp -s "$T/large" "$T/large.out" || fail "large object differs"
ls3 get big/blob 3000000 65536 >"$T/large.range" || fail "ranged get large"
tail -c +3000001 "$T/large" | head -c 65536 | cmp -s - "$T/large.range" || fail "large range differs"

# keys that need encoding
printf 'x' >"$T/x"
ls3 put 'odd/a b+c=d&e~f' "$T/x" >/dev/null || fail "put odd key"
ls3 get 'odd/a b+c=d&e~f' | grep -q '^x$' || fail "get odd key"

# virtual-host style (Host: lanes-test.s3.lanes.test:PORT pinned to loopback)
"$LANES_S3" --endpoint "http://s3.lanes.test:$S3_PORT" --vhost \
    --resolve "$S3_BUCKET.s3.lanes.test:$S3_PORT:127.0.0.1" \
    --bucket "$S3_BUCKET" --credentials-file "$S3_CRED" get dir/small.txt >"$T/vh.out" \
    || fail "vhost get"
cmp -s "$T/small" "$T/vh.out" || fail "vhost get returned other bytes"

# 40 objects in parallel, listed in pages of 7, fetched back verified
ls3 --parallel 8 put-many obj/ 40 65536 || fail "put-many"
n=$(ls3 --page 7 ls obj/ | wc -l)
[ "$n" -eq 40 ] || fail "paginated listing found $n of 40"
ls3 -v --parallel 8 --page 7 get-many obj/ >"$T/gm.out" 2>"$T/gm.err" || fail "get-many: $(cat "$T/gm.err")"
grep -q '^40 objects, 2621440 bytes, all verified$' "$T/gm.out" || fail "get-many: $(cat "$T/gm.out")"
conns=$(ls3_stat "$T/gm.err" connections)
log "get-many: $(cat "$T/gm.out"); $(tail -n1 "$T/gm.err")"
[ "$conns" -le 8 ] || fail "46 requests used $conns connections (want <= 8: reuse)"

# delete, then a clear 404
ls3 rm dir/small.txt || fail "rm"
ls3 rm dir/small.txt || fail "rm of a missing key must succeed"
if ls3 get dir/small.txt 2>"$T/err404"; then fail "get after rm succeeded"; fi
grep -q 'GET s3://lanes-test/dir/small.txt: HTTP 404 NoSuchKey: .* (1 attempt)' "$T/err404" \
    || fail "404 message: $(cat "$T/err404")"

# unknown access key: 403 with the S3 code, and the key never printed
umask 077
printf '[default]\naws_access_key_id = AKIDNOTKNOWN12345\naws_secret_access_key = topsecretvalue\n' >"$T/badcred"
if "$LANES_S3" --endpoint "$S3_EP" --bucket "$S3_BUCKET" --credentials-file "$T/badcred" \
        get obj/x 2>"$T/err403"; then fail "unknown key accepted"; fi
grep -q 'HTTP 403 InvalidAccessKeyId' "$T/err403" || fail "403 message: $(cat "$T/err403")"
if grep -q 'AKIDNOTKNOWN12345\|topsecretvalue' "$T/err403"; then fail "credentials leaked: $(cat "$T/err403")"; fi

# credentials readable by others are refused
chmod 644 "$T/badcred"
if "$LANES_S3" --endpoint "$S3_EP" --bucket "$S3_BUCKET" --credentials-file "$T/badcred" \
        get obj/x 2>"$T/errperm"; then fail "world-readable credentials accepted"; fi
grep -q 'readable or writable by others' "$T/errperm" || fail "perm message: $(cat "$T/errperm")"

# s3rver ignores If-None-Match on PUT: the probe must say so (exit 3)
ls3 probe >"$T/probe.out"
rc=$?
[ $rc -eq 3 ] || fail "probe exit $rc: $(cat "$T/probe.out")"
grep -q '^conditional writes: not enforced$' "$T/probe.out" || fail "probe: $(cat "$T/probe.out")"
if ls3 head .lanes-probe 2>/dev/null; then fail "probe left its object behind"; fi

echo "t_s3_data: ok"
