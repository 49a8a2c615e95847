#!/bin/sh
# Directories in and out of a real lane (minimal image: busybox tar/stat/find):
#  - `lanectl cp -r DIR lane:/dst` (PUT .../archive, guest tar -x) then
#    `lanectl cp -r lane:/dst OUT` (GET .../archive, guest tar -c) round-trips
#    a tree with nested dirs, a 3 MiB file, an empty file, a name with spaces
#    and a symlink; modes survive;
#  - GET .../files/list and `lanectl files ls` list a directory (types,
#    sizes, sorted); .../files/stat and `lanectl files stat` describe a path;
#  - missing paths are 404 file_not_found, a file as a directory 400
#    not_a_directory, a corrupt tar 400 with tar's message.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
need_cmd tar python3

test_tmpdir
lanes_start
lanes_image minimal
lc create ar --image minimal --memory 256 --disk 1 >/dev/null
lc boot ar >/dev/null

mkdir -p "$T/src/sub/deeper"
head -c 3145728 /dev/urandom >"$T/src/big.bin"
: >"$T/src/empty"
echo hello >"$T/src/sub/with space.txt"
printf '#!/bin/sh\necho run\n' >"$T/src/sub/deeper/run.sh"
chmod 0750 "$T/src/sub/deeper/run.sh"
ln -s sub/deeper/run.sh "$T/src/link"

log "cp -r in and out"
lc cp -r "$T/src" ar:/work/tree
[ "$(lc exec ar -- cat '/work/tree/sub/with space.txt')" = hello ] || fail "file content in the lane"
lc cp -r ar:/work/tree "$T/back"
diff -r --no-dereference "$T/src" "$T/back" || fail "round trip differs"
[ "$(stat -c %a "$T/back/sub/deeper/run.sh")" = 750 ] || fail "mode lost"
[ "$(readlink "$T/back/link")" = sub/deeper/run.sh ] || fail "symlink lost"
# trailing slash: the directory lands under its basename
lc cp -r "$T/src/sub" ar:/work/
lc exec ar -- test -f /work/sub/deeper/run.sh || fail "cp -r DIR lane:/dir/ did not create /dir/sub"
mkdir "$T/into"
lc cp -r ar:/work/sub "$T/into"
[ -f "$T/into/sub/deeper/run.sh" ] || fail "cp -r out into an existing dir"

log "list and stat"
api GET '/v1/lanes/ar/files/list?path=/work/tree' >"$T/list.json"
[ "$API_STATUS" = 200 ] || fail "list: $API_STATUS $(cat "$T/list.json")"
python3 - "$T/list.json" <<'PY' || fail "list content: $(cat "$T/list.json")"
import json, sys
o = json.load(open(sys.argv[1]))
e = {x["name"]: x for x in o["entries"]}
assert [x["name"] for x in o["entries"]] == sorted(e), o
assert set(e) == {"big.bin", "empty", "sub", "link"}, e
assert e["big.bin"]["type"] == "file" and e["big.bin"]["size"] == 3145728, e
assert e["sub"]["type"] == "dir" and e["link"]["type"] == "symlink" and e["empty"]["size"] == 0, e
assert e["big.bin"]["path"] == "/work/tree/big.bin", e
PY
api GET '/v1/lanes/ar/files/stat?path=/work/tree/sub/deeper/run.sh' >"$T/stat.json"
[ "$API_STATUS" = 200 ] || fail "stat: $API_STATUS"
python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); assert o["mode"]=="0750" and o["type"]=="file" and o["name"]=="run.sh", o' "$T/stat.json" \
    || fail "stat content: $(cat "$T/stat.json")"
lc files ls ar:/work/tree >"$T/ls.txt"
grep -q 'sub/$' "$T/ls.txt" && grep -q '3145728.*big.bin' "$T/ls.txt" || fail "files ls: $(cat "$T/ls.txt")"
lc files stat ar:/work/tree/big.bin | grep -q 'size: *3145728' || fail "files stat"

log "errors"
api GET '/v1/lanes/ar/files/stat?path=/nope' >"$T/e1"; [ "$API_STATUS" = 404 ] && grep -q file_not_found "$T/e1" || fail "stat missing: $API_STATUS"
api GET '/v1/lanes/ar/files/list?path=/work/tree/empty' >"$T/e2"; [ "$API_STATUS" = 400 ] && grep -q not_a_directory "$T/e2" || fail "list file: $API_STATUS"
api GET '/v1/lanes/ar/archive?path=/nope' >"$T/e3"; [ "$API_STATUS" = 404 ] || fail "archive missing: $API_STATUS"
api PUT '/v1/lanes/ar/archive?path=/work/bad' --data-binary 'this is not a tar archive at all' >"$T/e4"
[ "$API_STATUS" = 400 ] && grep -q archive_failed "$T/e4" || fail "corrupt tar: $API_STATUS $(cat "$T/e4")"
expect_fail 'no such file' lc files ls ar:/nope
expect_fail 'not a directory' lc cp -r "$T/src/empty" ar:/work/x
log "ok"
