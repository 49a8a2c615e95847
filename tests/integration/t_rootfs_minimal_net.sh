#!/bin/bash
# t_rootfs_minimal_net: the minimal image's userland works from its real root
# (DESIGN.md: busybox-static's wget segfaulted from a bare initramfs with no
# /etc). Boots the lanes kernel with the floor initramfs's modules and a
# throw-away busybox /init that mounts the image and switches root into it;
# there, as root and as user `lane`, wget fetches a blob from an HTTP server
# on the host's loopback (QEMU user networking, restrict=on, one guestfwd to
# 127.0.0.1 — nothing else is reachable) and sha256sum/head/sync run on it.
# A guestfwd is one host connection made when QEMU starts, so each fetch gets
# its own guest port (10.0.2.100:80 for root, :81 for lane).
# This checks the image, not lane-init (t_boot_raw does that).
set -eu
. "$(dirname "$0")/lib.sh"

need_cmd qemu-system-x86_64 busybox cpio gzip python3
need_root
test_tmpdir
R="$LANES_ROOT/rootfs/lanes-rootfs"

kdir=$("$R" kernel)
floor=$("$R" floor-initramfs)
image=$("$R" image minimal)

# Test initramfs: the floor's modules + busybox + a shell /init.
mkdir "$T/ir"
(cd "$T/ir" && gzip -dc "$floor" | cpio -id --quiet) || fail "cannot unpack $floor"
mkdir -p "$T/ir/bin"
cp "$(command -v busybox)" "$T/ir/bin/busybox"
cat > "$T/ir/init" <<'EOF'
#!/bin/busybox sh
b=/bin/busybox
$b mount -t proc proc /proc
$b mount -t sysfs sys /sys
$b mount -t devtmpfs dev /dev
for m in $($b cat /lib/modules/lanes.order); do $b insmod "$m" || echo "T: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do $b usleep 50000; i=$((i + 1)); done
$b mount -t ext4 /dev/vda /newroot || echo "T: mount failed"
for d in dev proc sys; do $b mount --move /$d /newroot/$d; done
exec $b switch_root /newroot /bin/sh -c '
    ip link set lo up
    ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up
    wget -q -O /tmp/blob http://10.0.2.100/blob; echo "T: wget-root rc=$?"
    echo "T: sha $(sha256sum /tmp/blob | head -c 64)"
    su -s /bin/sh lane -c "cd /home/lane && wget -q -O blob http://10.0.2.100:81/blob; echo \"T: wget-lane rc=\$?\"; id -un"
    echo "T: lane-sha $(sha256sum /home/lane/blob | head -c 64)"
    echo "T: owner $(stat -c %U /home/lane/blob)"
    sync; echo "T: done"
    poweroff -f'
EOF
chmod 0755 "$T/ir/init"
(cd "$T/ir" && find . | cpio -o -H newc --owner=0:0 --quiet | gzip -1) > "$T/test.cpio.gz"

# HTTP server on loopback with a random blob.
mkdir "$T/www"
head -c 1048576 /dev/urandom > "$T/www/blob"
want=$(sha256sum "$T/www/blob" | cut -d' ' -f1)
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$T/www" >"$T/http.log" 2>&1 &
hpid=$!
on_exit "kill_wait $hpid"
wait_for_line "$T/http.log" 'port [0-9]' 10 || fail "http server did not start: $(cat "$T/http.log")"
port=$(sed -n 's/.* port \([0-9]*\).*/\1/p' "$T/http.log" | head -n1)
log "http server on 127.0.0.1:$port"

cp --sparse=always "$image" "$T/disk.img"
start=$(now)
qemu-system-x86_64 -M microvm,isa-serial=on,rtc=on,pcie=off -accel tcg -cpu max -m 256 -smp 1 \
    -nodefaults -no-user-config -nographic -no-reboot \
    -kernel "$kdir/vmlinuz" -initrd "$T/test.cpio.gz" \
    -append "console=ttyS0 quiet tsc_early_khz=2000000" \
    -drive "id=root,file=$T/disk.img,format=raw,if=none,cache=unsafe" \
    -device virtio-blk-device,drive=root \
    -netdev "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:$port,guestfwd=tcp:10.0.2.100:81-tcp:127.0.0.1:$port" \
    -device virtio-net-device,netdev=n0 \
    -serial "file:$T/console.log" >"$T/qemu.out" 2>&1 &
qpid=$!
on_exit "kill_wait $qpid"
done_or_dead() { grep -q 'T: done' "$T/console.log" 2>/dev/null || ! kill -0 "$qpid" 2>/dev/null; }
wait_for 90 done_or_dead
grep -q 'T: done' "$T/console.log" 2>/dev/null || {
    sed 's/^/    | /' "$T/console.log" "$T/qemu.out" 2>/dev/null
    fail "guest did not finish (QEMU exited or 90 s passed)"
}
log "guest finished in $(elapsed "$start")s"
wait_for 20 sh -c "! kill -0 $qpid 2>/dev/null" || log "note: QEMU did not exit after poweroff -f"
sed 's/^/    | /' "$T/console.log"

grep -q 'T: wget-root rc=0' "$T/console.log" || fail "wget as root failed"
grep -q 'T: wget-lane rc=0' "$T/console.log" || fail "wget as lane failed"
grep -q "T: sha $want" "$T/console.log" || fail "sha256 of the blob fetched as root differs"
grep -q "T: lane-sha $want" "$T/console.log" || fail "sha256 of the blob fetched as lane differs"
grep -q 'T: owner lane' "$T/console.log" || fail "file written by lane not owned by lane"
if grep -Eq 'segfault|Segmentation|Kernel panic|insmod .* failed|mount failed' "$T/console.log"; then
    fail "errors on the console"
fi
e2fsck -fn "$T/disk.img" >/dev/null 2>&1 || fail "image fails e2fsck after the guest used it"
log "ok"
