#!/bin/sh
# Images without root: an unprivileged user (lanes-test-rootfs, created with
# useradd -m so it gets a subordinate id range) builds the kernel, the
# initramfs, the minimal image, an import of a tarball holding device nodes
# and (unless LANES_ROOTLESS_DEBIAN=0) the debian image, in its own fresh
# LANES_CACHE. Checks:
#   * the initramfs lists dev/console as char 5,1 (and dev/null 1,3);
#   * each image has the same files, types, modes, owners, sizes, symlink
#     targets, device numbers and file contents as the same image built by
#     root (mounted read-only, compared line by line), and /home/lane is
#     1000:1000 0755, /bin/busybox 0:0 0755, the import's nodes are there;
#   * e2fsck -fn is clean; nothing is left in the user's cache tmp dir;
#     leftovers of an interrupted rootless build (files owned by subordinate
#     ids, which the user cannot delete directly) are removed by the next one;
#   * a user without subordinate ids gets an error that says how to add them;
#   * a rootless lanesd (as that user, --network none) boots a lane from the
#     user's kernel, initramfs and minimal image; lane-init has its console.
# Needs root only to set up users, to build the reference images and to
# mount images read-only for the comparison.
set -eu
. "$(dirname "$0")/lib.sh"
need_root
need_cmd unshare newuidmap newgidmap useradd usermod setpriv debugfs e2fsck cpio mount python3
test_tmpdir

RF=$LANES_ROOT/rootfs/lanes-rootfs
U=lanes-test-rootfs
if ! id -u "$U" >/dev/null 2>&1; then
    useradd -m -s /bin/sh "$U" || fail "useradd $U"
fi
# useradd -m normally assigns a range (SUB_UID_* in login.defs); add one
# after the highest range in use if it did not.
for f in subuid subgid; do
    if ! grep -q "^$U:" "/etc/$f" 2>/dev/null; then
        start=$(awk -F: 'BEGIN { m = 100000 } $2 + $3 > m { m = $2 + $3 } END { print m }' "/etc/$f" 2>/dev/null || echo 100000)
        if [ "$f" = subuid ]; then opt=--add-subuids; else opt=--add-subgids; fi
        usermod "$opt" "$start-$((start + 65535))" "$U" || fail "usermod $opt for $U"
    fi
done
UID_U=$(id -u "$U")
GID_U=$(id -g "$U")
as_user() {
    setpriv --reuid="$UID_U" --regid="$GID_U" --init-groups --inh-caps=-all \
        env -i HOME="$T/home" PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANES_CACHE="$T/ucache" "$@"
}
chmod 711 "$T"
mkdir -p "$T/home" "$T/ucache" "$T/ref"
chown "$UID_U:$GID_U" "$T/home" "$T/ucache"
as_user test -x "$RF" || skip "$U cannot run $RF (checkout not readable by other users)"

# A manifest of image $1 (mounted read-only): path type mode uid gid
# size|target, then device numbers, then sha256 of every regular file.
MNT=$T/mnt
mkdir -p "$MNT"
manifest() {
    mount -o ro,loop "$1" "$MNT" || fail "mount -o ro,loop $1"
    (cd "$MNT" && find . -xdev -path ./lost+found -prune -o -printf '%p %y %m %U %G' \
        \( -type f -printf ' %s\n' -o -type l -printf ' %l\n' -o -printf '\n' \) | LC_ALL=C sort
     find . -xdev \( -type c -o -type b \) -exec stat -c '%n rdev %t:%T' {} + | LC_ALL=C sort
     find . -xdev -type f -exec sha256sum {} + | LC_ALL=C sort -k2) >"$2"
    umount "$MNT" || fail "umount $MNT"
}
# shellcheck disable=SC2016 # expanded at exit
on_exit 'umount "$MNT" 2>/dev/null || true'
# Image $1 built by the user equals $2 built by root ($3 names it).
same_image() {
    e2fsck -fn "$1" >"$T/fsck.log" 2>&1 || fail "$3: e2fsck of the rootless image: $(tail -5 "$T/fsck.log")"
    manifest "$1" "$T/$3.user"
    manifest "$2" "$T/$3.root"
    [ "$(wc -l <"$T/$3.root")" -gt 10 ] || fail "$3: manifest of root's image is nearly empty"
    diff "$T/$3.root" "$T/$3.user" >"$T/$3.diff" ||
        fail "$3: rootless image differs from root's: $(head -20 "$T/$3.diff")"
}
# Line of the manifest for path $2 must be $3 (type mode uid gid [size/target]).
has_entry() {
    grep -qx -- "$2 $3" "$1" || fail "$(basename "$1"): expected '$2 $3', got '$(grep -- "^$2 " "$1" || echo none)'"
}

log "kernel and initramfs as $U"
as_user "$RF" kernel >"$T/kdir" 2>"$T/rf.log" || fail "kernel as $U: $(tail -5 "$T/rf.log")"
kdir=$(cat "$T/kdir")
case $kdir in "$T/ucache/"*) ;; *) fail "kernel not in the user's cache: $kdir" ;; esac
if [ -x "$LANES_BUILD/bin/lane-init" ]; then
    init=$LANES_BUILD/bin/lane-init
    as_user "$RF" initramfs "$init" >"$T/initrd" 2>"$T/rf.log" || fail "initramfs as $U: $(tail -5 "$T/rf.log")"
else
    init=""
    log "lane-init not built: checking the floor initramfs instead (and no boot)"
    as_user "$RF" floor-initramfs >"$T/initrd" 2>"$T/rf.log" || fail "floor-initramfs as $U: $(tail -5 "$T/rf.log")"
fi
initrd=$(cat "$T/initrd")
grep -q 'no /dev/console' "$T/rf.log" && fail "initramfs still warns about /dev/console: $(cat "$T/rf.log")"
zcat "$initrd" | cpio -itv --quiet >"$T/cpio.lst" 2>"$T/cpio.err" || fail "cpio -itv: $(cat "$T/cpio.err")"
grep -Eq '^crw-------  +1 root +root +5, +1 .* dev/console$' "$T/cpio.lst" ||
    fail "initramfs has no dev/console char 5,1 root 0600: $(grep dev/ "$T/cpio.lst" || head -5 "$T/cpio.lst")"
grep -Eq '^crw-rw-rw-  +1 root +root +1, +3 .* dev/null$' "$T/cpio.lst" ||
    fail "initramfs has no dev/null char 1,3 0666: $(grep dev/ "$T/cpio.lst")"
grep -Eq ' init$' "$T/cpio.lst" || fail "initramfs has no /init"
grep -Eq ' lib/modules/lanes.order$' "$T/cpio.lst" || fail "initramfs has no lanes.order"

log "image minimal: $U vs root"
t0=$(now)
as_user "$RF" image minimal >"$T/umin" 2>"$T/rf.log" || fail "image minimal as $U: $(tail -5 "$T/rf.log")"
log "  rootless minimal built in $(elapsed "$t0") s"
umin=$(cat "$T/umin")
[ "$(stat -c %U "$umin")" = "$U" ] || fail "image not owned by $U: $(ls -l "$umin")"
rmin=$("$RF" image minimal 2>"$T/rf.log") || fail "image minimal as root: $(tail -5 "$T/rf.log")"
[ "$(basename "$umin")" = "$(basename "$rmin")" ] || fail "cache keys differ: $umin vs $rmin"
same_image "$umin" "$rmin" minimal
has_entry "$T/minimal.user" ./home/lane "d 755 1000 1000"
has_entry "$T/minimal.user" ./bin/busybox "f 755 0 0 $(stat -c %s /bin/busybox)"
has_entry "$T/minimal.user" ./tmp "d 1777 0 0"
has_entry "$T/minimal.user" ./root "d 700 0 0"
has_entry "$T/minimal.user" ./etc/shadow "f 640 0 0 $(grep -F ./etc/shadow "$T/minimal.root" | head -n1 | cut -d' ' -f6)"

log "cache: hit, no temp left, leftovers owned by subordinate ids removed"
[ -z "$(ls -A "$T/ucache/tmp")" ] || fail "left in the user's cache tmp: $(ls -la "$T/ucache/tmp")"
t0=$(now)
[ "$(as_user "$RF" image minimal 2>/dev/null)" = "$umin" ] || fail "second run gave another path"
log "  cached in $(elapsed "$t0") s"
key=$(basename "$umin")
# shellcheck disable=SC2016 # the inner sh expands them
as_user unshare --user --map-auto --map-root-user -- sh -c '
    d=$1/tmp/$2.kill9; mkdir -p "$d/root/home/lane/deep" && echo x >"$d/root/home/lane/deep/f" &&
    chown -R 1000:1000 "$d/root/home/lane" && chmod 755 "$d/root/home/lane" "$d/root/home/lane/deep"' \
    sh "$T/ucache" "$key" || fail "making a leftover tree"
as_user rm -rf "$T/ucache/tmp/$key.kill9" 2>/dev/null && fail "the user could remove a subordinate-id tree directly (test is void)"
as_user "$RF" -f image minimal >/dev/null 2>"$T/rf.log" || fail "rebuild over leftovers: $(tail -5 "$T/rf.log")"
[ -z "$(ls -A "$T/ucache/tmp")" ] || fail "leftovers not removed: $(ls -la "$T/ucache/tmp")"
same_image "$umin" "$rmin" minimal-rebuilt

log "import of a tarball with device nodes, a hard link to one, a fifo, owners and setuid"
mkdir -p "$T/tree/dev" "$T/tree/etc" "$T/tree/home/u" "$T/tree/bin"
mknod "$T/tree/dev/null" c 1 3
chmod 666 "$T/tree/dev/null"
mknod "$T/tree/dev/sda" b 8 0
chown 0:6 "$T/tree/dev/sda"
chmod 660 "$T/tree/dev/sda"
ln "$T/tree/dev/null" "$T/tree/dev/null2"
mkfifo "$T/tree/dev/fifo"
echo owned >"$T/tree/etc/owned"
chown 1000:1000 "$T/tree/home/u" "$T/tree/etc/owned"
cp /bin/busybox "$T/tree/bin/busybox"
chmod 4755 "$T/tree/bin/busybox"
ln -s busybox "$T/tree/bin/sh"
tar --numeric-owner -czf "$T/tree.tar.gz" -C "$T/tree" .
chmod 644 "$T/tree.tar.gz"
as_user "$RF" import devs "$T/tree.tar.gz" >"$T/uimp" 2>"$T/rf.log" || fail "import as $U: $(tail -5 "$T/rf.log")"
grep -q 'warning' "$T/rf.log" && fail "import warns: $(cat "$T/rf.log")"
rimp=$(LANES_CACHE=$T/ref "$RF" import devs "$T/tree.tar.gz" 2>"$T/rf.log") || fail "import as root: $(tail -5 "$T/rf.log")"
same_image "$(cat "$T/uimp")" "$rimp" import
has_entry "$T/import.user" ./dev/null "c 666 0 0"
has_entry "$T/import.user" ./dev/null2 "c 666 0 0"
has_entry "$T/import.user" ./dev/sda "b 660 0 6"
has_entry "$T/import.user" ./dev/fifo "p 644 0 0"
has_entry "$T/import.user" ./home/u "d 755 1000 1000"
has_entry "$T/import.user" ./bin/busybox "f 4755 0 0 $(stat -c %s /bin/busybox)"
grep -qx './dev/sda rdev 8:0' "$T/import.user" || fail "import: /dev/sda is not 8:0"

if [ "${LANES_ROOTLESS_DEBIAN:-1}" = 1 ]; then
    log "image debian: $U (mmdebstrap --mode=unshare) vs root (may take minutes)"
    t0=$(now)
    as_user "$RF" image debian >"$T/udeb" 2>"$T/rf.log" || fail "image debian as $U: $(tail -8 "$T/rf.log")"
    log "  rootless debian built in $(elapsed "$t0") s"
    t0=$(now)
    rdeb=$("$RF" image debian 2>"$T/rf.log") || fail "image debian as root: $(tail -8 "$T/rf.log")"
    log "  root's debian ready in $(elapsed "$t0") s"
    same_image "$(cat "$T/udeb")" "$rdeb" debian
    has_entry "$T/debian.user" ./home/lane "d 755 1000 1000"
    has_entry "$T/debian.user" ./dev/null "c 666 0 0"
    has_entry "$T/debian.user" ./dev/console "c 666 0 0"
    grep -Eqx '\./var/cache/apt/archives/partial d 700 42 0' "$T/debian.user" ||
        fail "debian: _apt's partial dir: $(grep -F ./var/cache/apt/archives/partial "$T/debian.user")"
fi

log "a user without subordinate ids is told how to add them"
U2=lanes-test-rootfs-nosub
if ! id -u "$U2" >/dev/null 2>&1; then
    useradd -r -M -d /nonexistent -s /usr/sbin/nologin "$U2" || fail "useradd $U2"
fi
grep -q "^$U2:" /etc/subuid && usermod --del-subuids "$(grep "^$U2:" /etc/subuid | awk -F: '{ print $2 "-" $2 + $3 - 1 }')" "$U2"
mkdir -p "$T/nosub"
chown "$U2" "$T/nosub"
if setpriv --reuid="$U2" --regid="$(id -g "$U2")" --init-groups env -i HOME="$T/nosub" PATH=/usr/bin:/bin:/usr/sbin:/sbin \
        LANES_CACHE="$T/nosub/c" "$RF" image minimal >/dev/null 2>"$T/nosub.err"; then
    fail "a user without subordinate ids built an image"
fi
grep -q "usermod --add-subuids .* --add-subgids .* $U2" "$T/nosub.err" || fail "unclear error: $(cat "$T/nosub.err")"

if [ -z "$init" ]; then
    log "OK (no boot: lane-init not built)"
    exit 0
fi
log "a rootless lanesd boots a lane from the user's kernel, initramfs and minimal image"
. "$(dirname "$0")/lanes.sh"
LANES_STATE=$T/state
mkdir -p "$LANES_STATE"
chown "$UID_U:$GID_U" "$LANES_STATE"
chmod 700 "$LANES_STATE"
# shellcheck disable=SC2034 # both used by lanes.sh
LANESD_WRAP="setpriv --reuid=$UID_U --regid=$GID_U --init-groups --inh-caps=-all env HOME=$T/home LANES_CACHE=$T/ucache"
# shellcheck disable=SC2034
LANESD_ARGS="--rootless --kernel $kdir/vmlinuz --initrd $initrd"
lanes_start
lanes_image minimal
grep -q 'mkfs' "$T/image-minimal.log" && fail "lanesd rebuilt the image the user had cached: $(cat "$T/image-minimal.log")"
lc create rl --image minimal --disk 1 --network none >/dev/null
lc boot rl >"$T/boot.out" 2>&1 || fail "boot: $(cat "$T/boot.out") $(lc inspect rl)"
[ "$(awk '/^Uid:/ { print $2 }' "/proc/$(lane_qemu_pid rl)/status")" = "$UID_U" ] || fail "QEMU does not run as $U"
[ "$(lc exec rl -- stat -c '%u:%g %a' /home/lane)" = "1000:1000 755" ] || fail "/home/lane in the lane: $(lc exec rl -- ls -ld /home/lane)"
lc exec rl -- sh -c 'echo ok >/dev/null && test -c /dev/console' || fail "no /dev/console or /dev/null in the lane"
lc stop rl >/dev/null
log OK
