/*
 * poweroff-init: the /init of the benchmark "floor" initramfs.
 *
 * It measures the cost of getting from QEMU start to a running PID 1 with the
 * same kernel and initramfs size as a real lane, and nothing else: it prints
 * one marker line on the console and powers the VM off at once.  If power-off
 * is not available (no ACPI on the machine type), it falls back to a reboot,
 * which QEMU turns into an exit when started with -no-reboot.
 */
#include <string.h>
#include <sys/reboot.h>
#include <unistd.h>

int main(void)
{
    static const char marker[] = "poweroff-init: up\n";

    /* fd 1 is /dev/console when the initramfs carries that node. */
    (void)!write(1, marker, sizeof(marker) - 1);
    reboot(RB_POWER_OFF);
    reboot(RB_AUTOBOOT);
    return 1; /* PID 1 exiting panics the kernel; QEMU -no-reboot then exits */
}
