#!/bin/bash
# t_boot_raw: boot the lanes kernel + initramfs (real lane-init) + a copy of
# the minimal image in QEMU directly (no lanesd), on -M microvm and on -M q35,
# and wait (bounded) for "lane-init: ready" on the serial console.
#
# LANES_BOOT_RUNS=N boots each machine type N times (default 1) and prints
# min/median/max seconds from QEMU start to "lane-init: ready"; those are the
# numbers in docs/images.md. The QEMU flags used here are the ones documented
# there for lanesd. LANES_BOOT_APPEND adds kernel parameters (for experiments);
# LANES_BOOT_IMAGE=debian boots the debian image instead of minimal.
set -eu
. "$(dirname "$0")/lib.sh"

need_cmd qemu-system-x86_64 cpio gzip
need_root
lane_init="$LANES_BUILD/bin/lane-init"
[ -x "$lane_init" ] || skip "lane-init not built ($lane_init); build the guest target first"
test_tmpdir

runs=${LANES_BOOT_RUNS:-1}
timeout_s=${LANES_BOOT_TIMEOUT:-60}
R="$LANES_ROOT/rootfs/lanes-rootfs"

kdir=$("$R" kernel)
initrd=$("$R" initramfs "$lane_init")
image=$("$R" image "${LANES_BOOT_IMAGE:-minimal}")
log "kernel $kdir/vmlinuz ($(cat "$kdir/release")), initrd $initrd, image $image"

# Flags common to both machine types (TCG: this host has no usable KVM).
common=(-accel tcg -cpu max -m 256 -smp 1 -nodefaults -no-user-config -nographic -no-reboot
        -kernel "$kdir/vmlinuz" -initrd "$initrd")
append_common="console=ttyS0 lanes.root=/dev/vda quiet${LANES_BOOT_APPEND:+ $LANES_BOOT_APPEND}"

# True once the console log $1 shows ready, or QEMU ($2) has exited.
ready_or_dead() {
    grep -q 'lane-init: ready' "$1" 2>/dev/null || ! kill -0 "$2" 2>/dev/null
}

# Runs one boot; prints seconds to "lane-init: ready". $1 = microvm|q35.
boot_once() {
    local machine=$1 n=$2 dir="$T/$1-$2" qpid start rc=0 devs append
    mkdir -p "$dir"
    cp --sparse=always "$image" "$dir/disk.img"
    case $machine in
        microvm)
            # microvm has no PIT/HPET/PM timer to calibrate the TSC against
            # under TCG: without tsc_early_khz about 1 boot in 4 hangs.
            devs=(-M "microvm,isa-serial=on,rtc=on,pcie=off"
                  -device "virtio-blk-device,drive=root"
                  -device virtio-serial-device)
            append="$append_common tsc_early_khz=2000000"
            ;;
        q35)
            devs=(-M q35
                  -device "virtio-blk-pci,drive=root"
                  -device virtio-serial-pci)
            append="$append_common"
            ;;
    esac
    start=$(now)
    qemu-system-x86_64 "${common[@]}" "${devs[@]}" \
        -append "$append" \
        -drive "id=root,file=$dir/disk.img,format=raw,if=none,cache=unsafe" \
        -chardev "socket,id=ctl,path=$dir/ctl.sock,server=on,wait=off" \
        -device virtserialport,chardev=ctl,name=org.lanes.ctl.0 \
        -serial "file:$dir/console.log" \
        >"$dir/qemu.out" 2>&1 &
    qpid=$!
    wait_for "$timeout_s" ready_or_dead "$dir/console.log" "$qpid" || rc=1
    local secs
    secs=$(elapsed "$start")
    if ! grep -q 'lane-init: ready' "$dir/console.log" 2>/dev/null; then
        kill_wait "$qpid"
        log "$machine boot $n: no 'lane-init: ready' after ${secs}s (rc=$rc); console:"
        sed 's/^/    | /' "$dir/console.log" >&2 || true
        sed 's/^/    q /' "$dir/qemu.out" >&2 || true
        return 1
    fi
    kill_wait "$qpid"
    if grep -Eq 'Kernel panic|lane-init: .*(fatal|FATAL)' "$dir/console.log"; then
        sed 's/^/    | /' "$dir/console.log" >&2
        return 1
    fi
    rm -f "$dir/disk.img"
    printf '%s\n' "$secs"
}

failed=0
for machine in microvm q35; do
    : > "$T/$machine.times"
    for n in $(seq 1 "$runs"); do
        if secs=$(boot_once "$machine" "$n"); then
            printf '%s\n' "$secs" >> "$T/$machine.times"
            log "$machine boot $n: lane-init ready after ${secs}s"
        else
            failed=$((failed + 1))
        fi
    done
    ok=$(wc -l < "$T/$machine.times")
    sort -n "$T/$machine.times" | awk -v m="$machine" -v runs="$runs" -v ok="$ok" '
        { t[NR] = $1 }
        END { if (NR == 0) { printf "%-8s 0/%d boots reached ready\n", m, runs; exit }
              printf "%-8s %d/%d boots ready: min %.2fs median %.2fs max %.2fs\n",
                     m, ok, runs, t[1], t[int((NR + 1) / 2)], t[NR] }'
done
[ "$failed" = 0 ] || fail "$failed boot(s) did not reach 'lane-init: ready' within ${timeout_s}s"
log "ok"
