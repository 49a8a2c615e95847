#!/bin/sh
# t_rootfs_cache: lanes-rootfs caches by content and builds correct artifacts.
#  * `image minimal` twice: same path, the second within ~1 s;
#  * two concurrent builds in an empty cache: one build (flock), one path,
#    no leftovers in tmp/;
#  * the image passes e2fsck -fn and holds the required applets and /etc;
#  * the initramfs (floor, and lane-init's when built) has /init and a
#    lanes.order whose modules are in the archive, dependencies first.
set -eu
. "$(dirname "$0")/lib.sh"

need_cmd e2fsck debugfs cpio gzip busybox mkfs.ext4
need_root
test_tmpdir
R="$LANES_ROOT/rootfs/lanes-rootfs"

# --- cache hit -------------------------------------------------------------
log "image minimal (may build)"
img=$("$R" image minimal)
[ -f "$img" ] || fail "image minimal printed '$img', not a file"
s=$(now)
img2=$("$R" image minimal 2>"$T/second.err")
d=$(elapsed "$s")
[ "$img" = "$img2" ] || fail "second build returned $img2, first $img"
awk -v d="$d" 'BEGIN { exit !(d < 1.5) }' || fail "cached image minimal took ${d}s"
[ ! -s "$T/second.err" ] || fail "cached build did work: $(cat "$T/second.err")"
log "cached image minimal: ${d}s -> $img"

# --- concurrent builders in an empty cache ----------------------------------
log "two concurrent builds in an empty cache"
# One builder runs under umask 077: modes in the image must not change.
(umask 077; LANES_CACHE="$T/cache" exec "$R" image minimal >"$T/a.out" 2>"$T/a.err") &
pa=$!
LANES_CACHE="$T/cache" "$R" image minimal >"$T/b.out" 2>"$T/b.err" &
pb=$!
wait "$pa" || fail "concurrent build a failed: $(cat "$T/a.err")"
wait "$pb" || fail "concurrent build b failed: $(cat "$T/b.err")"
[ "$(cat "$T/a.out")" = "$(cat "$T/b.out")" ] || fail "concurrent builds disagree"
# Same recipe, same key; the bytes may differ only in inode ctimes
# (mke2fs 1.47.0 copies them from the build tree), so compare the trees.
[ "$(basename "$(cat "$T/a.out")")" = "$(basename "$img")" ] || fail "same recipe, different key"
for f in "$img" "$(cat "$T/a.out")"; do
    debugfs -R 'ls -l /bin' "$f" 2>/dev/null | awk 'NF > 5 { print $2, $4, $5, $NF }'
done > "$T/modes"
n=$(sort "$T/modes" | uniq -u | wc -l)
[ "$n" = 0 ] || fail "images of the same recipe differ in /bin (modes/owners): $(sort "$T/modes" | uniq -u | head)"
n=$(cat "$T/a.err" "$T/b.err" | grep -c 'populating busybox root' || true)
[ "$n" = 1 ] || fail "expected one build under the lock, saw $n"
[ -z "$(ls -A "$T/cache/tmp")" ] || fail "leftovers in tmp: $(ls "$T/cache/tmp")"

# --- interrupted build leaves no entry --------------------------------------
log "interrupted build"
LANES_CACHE="$T/cache2" "$R" image minimal >/dev/null 2>"$T/c.err" &
pc=$!
sleep 0.15
kill -TERM "$pc" 2>/dev/null || true
wait "$pc" 2>/dev/null || true
for f in "$T"/cache2/images/*; do
    [ -e "$f" ] || continue
    e2fsck -fn "$f" >/dev/null 2>&1 || fail "interrupted build left a broken entry $f"
done
[ -z "$(ls -A "$T/cache2/tmp" 2>/dev/null)" ] || fail "interrupted build left tmp: $(ls "$T/cache2/tmp")"

# --- image content ----------------------------------------------------------
log "e2fsck -fn $img"
e2fsck -fn "$img" >"$T/fsck.out" 2>&1 || { cat "$T/fsck.out"; fail "e2fsck -fn failed on $img"; }
[ "$(dumpe2fs -h "$img" 2>/dev/null | sed -n 's/^Filesystem volume name: *//p')" = lanes-root ] ||
    fail "label is not lanes-root"
dumpe2fs -h "$img" 2>/dev/null | grep -q 'has_journal' || fail "image has no journal"

dbg() { debugfs -R "$1" "$img" 2>/dev/null; }
dbg 'stat /bin/busybox' | grep -q 'Type: regular' || fail "/bin/busybox missing"
for a in sh wget nslookup sha256sum head sync; do
    p=$(busybox --list-full | grep -E "(^|/)$a\$" | head -n1)
    [ -n "$p" ] || fail "host busybox has no applet $a"
    dbg "stat /$p" | grep -q 'Type: symlink' || fail "applet /$p missing from image"
done
dbg 'cat /etc/passwd' | grep -q '^lane:x:1000:1000:.*:/home/lane:' || fail "no lane user in /etc/passwd"
dbg 'cat /etc/passwd' | grep -q '^root:x:0:0:' || fail "no root in /etc/passwd"
dbg 'cat /etc/group' | grep -q '^lane:x:1000:' || fail "no lane group"
dbg 'cat /etc/os-release' | grep -q '^ID=lanes-minimal' || fail "os-release does not name lanes-minimal"
for f in /etc/hosts /etc/resolv.conf; do
    dbg "stat $f" | grep -q 'Type: regular' || fail "$f missing"
done
dbg 'stat /home/lane' | grep -q 'User:  1000' || fail "/home/lane not owned by uid 1000"
dbg 'stat /tmp' | grep -q 'Mode:  01777' || fail "/tmp is not 1777"
for p in / /bin /etc /usr /usr/bin /sbin /home /var; do
    dbg "stat $p" | grep -q 'Mode:  0755' || fail "$p is not mode 0755"
done
dbg 'stat /etc/passwd' | grep -q 'Mode:  0644' || fail "/etc/passwd is not mode 0644"
dbg 'stat /bin/busybox' | grep -q 'Mode:  0755' || fail "/bin/busybox is not mode 0755"
for d in dev proc sys run mnt root var/tmp; do
    dbg "stat /$d" | grep -q 'Type: directory' || fail "/$d missing"
done

# --- initramfs --------------------------------------------------------------
kdir=$("$R" kernel)
rel=$(cat "$kdir/release")
check_initramfs() { # path
    log "checking initramfs $1"
    rm -rf "$T/ir" && mkdir "$T/ir"
    (cd "$T/ir" && gzip -dc "$1" | cpio -id --quiet 2>/dev/null) || fail "$1 does not unpack"
    [ -x "$T/ir/init" ] || fail "$1 has no executable /init"
    [ "$(stat -c %a "$T/ir/init")" = 755 ] || fail "/init is not mode 0755"
    for d in dev proc sys newroot tmp run; do
        [ -d "$T/ir/$d" ] || fail "$1 lacks /$d"
    done
    [ -s "$T/ir/lib/modules/lanes.order" ] || fail "$1 lacks /lib/modules/lanes.order"
    : > "$T/loaded"
    while IFS= read -r m; do
        [ -f "$T/ir$m" ] || fail "lanes.order names $m, not in the archive"
        case $m in /lib/modules/"$rel"/*.ko) ;; *) fail "bad module path $m" ;; esac
        # Each dependency (from the kernel's modules.dep) must come earlier.
        relp=${m#/lib/modules/"$rel"/}
        deps=$(grep "^$relp:" "$kdir/lib/modules/$rel/modules.dep" | cut -d: -f2)
        for dep in $deps; do
            grep -qx "$dep" "$T/loaded" || fail "$relp loaded before its dependency $dep"
        done
        printf '%s\n' "$relp" >> "$T/loaded"
    done < "$T/ir/lib/modules/lanes.order"
    for m in virtio_ring virtio virtio_mmio virtio_blk virtio_console virtio_net net_failover failover; do
        grep -q "/$m.ko\$" "$T/ir/lib/modules/lanes.order" || fail "$m missing from lanes.order"
    done
    n=$(find "$T/ir/lib/modules/$rel" -name '*.ko' | wc -l)
    [ "$n" = "$(wc -l < "$T/ir/lib/modules/lanes.order")" ] || fail "archive has modules not in lanes.order"
}
floor=$("$R" floor-initramfs)
check_initramfs "$floor"
if [ -x "$LANES_BUILD/bin/lane-init" ]; then
    ir=$("$R" initramfs "$LANES_BUILD/bin/lane-init")
    check_initramfs "$ir"
    cmp -s "$T/ir/init" "$LANES_BUILD/bin/lane-init" || fail "/init is not lane-init"
    [ "$("$R" initramfs "$LANES_BUILD/bin/lane-init" 2>/dev/null)" = "$ir" ] || fail "initramfs not cached"
else
    log "no $LANES_BUILD/bin/lane-init: checked the floor initramfs only"
fi
log "ok"
