#!/bin/sh
# t_rootfs_import: `lanes-rootfs import` turns a root filesystem tarball into
# an ext4 image that keeps owners and modes, adds only missing mount points,
# is cached by the tarball's sha256, and rejects input that is not a tar.
set -eu
. "$(dirname "$0")/lib.sh"

need_cmd debugfs e2fsck tar mkfs.ext4
need_root
test_tmpdir
R="$LANES_ROOT/rootfs/lanes-rootfs"
export LANES_CACHE="$T/cache"

# A distro-like tree: the minimal image's files, without /proc and /run (the
# importer must add them), plus an owned file and a setuid file.
img=$("$R" image minimal)
mkdir "$T/tree"
debugfs -R "rdump / $T/tree" "$img" >/dev/null 2>&1 || fail "debugfs rdump failed"
rm -rf "$T/tree/proc" "$T/tree/run" "$T/tree/lost+found"
echo hello > "$T/tree/home/lane/note.txt"
chown 1000:1000 "$T/tree/home/lane/note.txt"
chmod 4755 "$T/tree/bin/busybox"
tar -C "$T/tree" --numeric-owner -cf "$T/rootfs.tar" .

log "import distro rootfs.tar"
s=$(now)
out=$("$R" import testdistro "$T/rootfs.tar")
log "imported in $(elapsed "$s")s -> $out"
[ -f "$out" ] || fail "import printed '$out', not a file"
e2fsck -fn "$out" >"$T/fsck" 2>&1 || { cat "$T/fsck"; fail "e2fsck failed on the imported image"; }

dbg() { debugfs -R "$1" "$out" 2>/dev/null; }
dbg 'cat /home/lane/note.txt' | grep -qx hello || fail "note.txt content lost"
dbg 'stat /home/lane/note.txt' | grep -q 'User:  1000   Group:  1000' || fail "owner 1000:1000 lost"
dbg 'stat /bin/busybox' | grep -q 'Mode:  04755' || fail "setuid mode lost"
dbg 'stat /bin/sh' | grep -q 'Type: symlink' || fail "/bin/sh symlink lost"
dbg 'cat /etc/os-release' | grep -q lanes-minimal || fail "/etc/os-release lost"
for d in dev proc sys tmp run; do
    dbg "stat /$d" | grep -q 'Type: directory' || fail "/$d not created"
done

# Same tarball again: cached, same path, no work.
s=$(now)
out2=$("$R" import testdistro "$T/rootfs.tar" 2>"$T/again.err")
[ "$out2" = "$out" ] || fail "re-import gave $out2"
[ ! -s "$T/again.err" ] || fail "re-import did work: $(cat "$T/again.err")"
log "cached re-import in $(elapsed "$s")s"

# Compressed tarballs work too (tar detects the compression).
gzip -c "$T/rootfs.tar" > "$T/rootfs.tar.gz"
"$R" import testdistro-gz "$T/rootfs.tar.gz" >/dev/null 2>"$T/gz.err" || fail "gzip'd tar: $(cat "$T/gz.err")"

# Not a tarball: a clear error, exit status non-zero, nothing cached.
head -c 100000 /dev/urandom > "$T/junk.bin"
if "$R" import junk "$T/junk.bin" >"$T/junk.out" 2>"$T/junk.err"; then
    fail "importing random bytes succeeded"
fi
grep -q 'not a tar archive' "$T/junk.err" || fail "unclear error for non-tar input: $(cat "$T/junk.err")"
[ ! -s "$T/junk.out" ] || fail "non-tar import printed a path"
if ls "$LANES_CACHE"/images/import/junk-* >/dev/null 2>&1; then fail "non-tar import left an image"; fi
if "$R" import 'bad/name' "$T/rootfs.tar" >/dev/null 2>&1; then fail "accepted a name with /"; fi
log "ok"
