/* accel.c — the KVM usability probe (see accel.h). */
#include "accel.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* 1 if the "flags" line of /proc/cpuinfo names vmx or svm. */
static int cpu_has_hw_virt(void)
{
    FILE *f = fopen("/proc/cpuinfo", "re");
    if (!f)
        return 0;
    char line[8192];
    int hw = 0;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "flags", 5) != 0)
            continue;
        hw = strstr(line, " vmx") != NULL || strstr(line, " svm") != NULL;
        break;
    }
    fclose(f);
    return hw;
}

int accel_probe_kvm(char *why, size_t whylen)
{
    int fd;
    do
        fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        snprintf(why, whylen, "/dev/kvm: %s", strerror(errno));
        return 0;
    }
    close(fd);
    /* Opening /dev/kvm is not enough: a nested paravirtual KVM (kvm_pvm)
     * accepts KVM_CREATE_VM but cannot run a normal guest kernel. Real
     * hardware virtualization shows vmx/svm in the CPU flags. */
    if (!cpu_has_hw_virt()) {
        snprintf(why, whylen, "/dev/kvm opens but the CPU has no vmx/svm flag (paravirtual KVM cannot boot lanes)");
        return 0;
    }
    snprintf(why, whylen, "/dev/kvm usable and the CPU has hardware virtualization");
    return 1;
}
