/* boot.c — lane-init's PID-1 duties: bring the guest from the initramfs to
 * the lane's root disk, and take it down again.
 *
 * Boot order: devtmpfs/proc/sysfs → console log → kernel command line →
 * root modules (lanes.order, in dependency order, minus the late ones) →
 * [child process: late modules — virtio_console, virtio_net chain — loaded
 * while PID 1 mounts root, which mostly waits on the host] → wait for the
 * root device → mount it at /newroot → grow the ext4 fs online to the
 * device size → move /dev /proc /sys, switch root (staying PID 1), free the
 * initramfs → devpts, /dev/shm, /tmp, /run, hostname, lo up → open the
 * control port → reap the module child (eth0 exists before CONFIGURE).
 * virtio_pci loads only when the PCI bus has devices (never on microvm).
 * With lanes.debug each step is logged with the guest's boot time in ms. A missing root device or a root
 * that does not mount powers the VM off at once so the host sees a failure
 * instead of a hang. Everything else that fails is logged and boot goes on.
 *
 * Shutdown: SIGTERM everyone, wait up to 2 s, SIGKILL, sync, remount /
 * read-only, then reboot(2). PID 1 must never exit.
 *
 * Threading: single-threaded, runs before and after the agent loop; the
 * module child only calls finit_module on fds PID 1 opened for it.
 */
#include "lane_init.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef EXT4_IOC_RESIZE_FS
#define EXT4_IOC_RESIZE_FS _IOW('f', 16, uint64_t)
#endif
#ifndef MODULE_INIT_COMPRESSED_FILE
#define MODULE_INIT_COMPRESSED_FILE 4
#endif

#define NEWROOT "/newroot"
#define MODULES_ORDER "/lib/modules/lanes.order"
#define ROOT_WAIT_MS 10000
#define PORT_WAIT_MS 10000

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* lanes.debug: log the step just reached with the guest's CLOCK_BOOTTIME in
 * ms (time since the kernel started), so boot time can be attributed. */
static void boot_mark(li_ctx_t *ctx, const char *step)
{
    if (!ctx->debug)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    li_debug(ctx, "boot %5llu ms: %s", (unsigned long long)ts.tv_sec * 1000u + (unsigned long long)ts.tv_nsec / 1000000u,
             step);
}

/* Unrecoverable boot failure: tell the console and power off. */
static void __attribute__((noreturn)) boot_fatal(li_ctx_t *ctx, const char *what)
{
    li_log(ctx, "FATAL: %s; powering off", what);
    sync();
    reboot(RB_POWER_OFF);
    for (;;)
        pause();
}

static void mkdir_p1(const char *path, mode_t mode)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST) {
        /* the mount that follows reports the real problem */
    }
}

/* mount(2) that treats "already mounted" as success. */
static int mount_fs(li_ctx_t *ctx, const char *src, const char *target, const char *type, unsigned long flags,
                    const char *data)
{
    mkdir_p1(target, 0755);
    if (mount(src, target, type, flags, data) < 0 && errno != EBUSY) {
        li_log(ctx, "mount %s on %s: %m", type, target);
        return -errno;
    }
    return 0;
}

static void console_open(li_ctx_t *ctx)
{
    int c = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (c < 0)
        return;
    for (int fd = 0; fd < 3; fd++)
        if (c != fd)
            dup2(c, fd);
    ctx->log_fd = fcntl(c, F_DUPFD_CLOEXEC, 3);
    if (c > 2)
        close(c);
}

/* Read the lanes.* parameters from /proc/cmdline. */
static void cmdline_parse(li_ctx_t *ctx)
{
    snprintf(ctx->root_dev, sizeof(ctx->root_dev), "/dev/vda");
    snprintf(ctx->root_fstype, sizeof(ctx->root_fstype), "ext4");
    snprintf(ctx->hostname, sizeof(ctx->hostname), "lane");
    char buf[4096];
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        li_log(ctx, "open /proc/cmdline: %m");
        return;
    }
    ssize_t n;
    do
        n = read(fd, buf, sizeof(buf) - 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    char *save = NULL;
    for (char *tok = strtok_r(buf, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
        if (strncmp(tok, "lanes.root=", 11) == 0)
            snprintf(ctx->root_dev, sizeof(ctx->root_dev), "%s", tok + 11);
        else if (strncmp(tok, "lanes.rootfstype=", 17) == 0)
            snprintf(ctx->root_fstype, sizeof(ctx->root_fstype), "%s", tok + 17);
        else if (strncmp(tok, "lanes.hostname=", 15) == 0)
            snprintf(ctx->hostname, sizeof(ctx->hostname), "%s", tok + 15);
        else if (strcmp(tok, "lanes.debug") == 0)
            ctx->debug = 1;
    }
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Modules the root mount never needs. lane-init loads them in a child
 * process while PID 1 mounts the root disk (which mostly waits on the host's
 * block I/O), so their load and device probe cost is off the boot path.
 * Everything else in lanes.order (virtio core, virtio_mmio, virtio_blk,
 * filesystems, ...) loads first, in PID 1. */
static const char *const late_modules[] = {"virtio_console", "failover", "net_failover", "virtio_net"};

/* virtio_pci and its helpers: only useful on a machine with a PCI bus (q35
 * in t_boot_raw.sh; lanes run on microvm, which has none). With a bus they
 * load with the root modules, since the root disk may be virtio-blk-pci. */
static int is_pci_module(const char *name)
{
    return strncmp(name, "virtio_pci", 10) == 0;
}

static int pci_bus_has_devices(void)
{
    DIR *d = opendir("/sys/bus/pci/devices");
    if (!d)
        return 0;
    struct dirent *de;
    int found = 0;
    while (!found && (de = readdir(d)))
        found = de->d_name[0] != '.';
    closedir(d);
    return found;
}

/* Module name of a lanes.order path (basename without .ko[.xz|.zst|.gz]). */
static void module_name(const char *path, char *name, size_t cap)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strcspn(b, ".");
    if (n >= cap)
        n = cap - 1;
    memcpy(name, b, n);
    name[n] = '\0';
    for (char *c = name; *c; c++)
        if (*c == '-')
            *c = '_';
}

enum { MOD_ROOT, MOD_LATE, MOD_SKIP };

static int module_class(const char *name, int pci)
{
    if (is_pci_module(name))
        return pci ? MOD_ROOT : MOD_SKIP;
    for (size_t i = 0; i < sizeof(late_modules) / sizeof(late_modules[0]); i++)
        if (strcmp(name, late_modules[i]) == 0)
            return MOD_LATE;
    return MOD_ROOT;
}

#define MODULES_MAX 64

typedef struct {
    int fd;
    int flags;
    char name[64];
} module_file_t;

/* Open every file of lanes.order whose class is want, in file order
 * (dependencies first). Returns how many were opened into mods. */
static int modules_open(li_ctx_t *ctx, int want, int pci, module_file_t *mods, int max)
{
    FILE *fp = fopen(MODULES_ORDER, "re");
    if (!fp) {
        li_debug(ctx, "no %s: %m", MODULES_ORDER);
        return 0;
    }
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (n < max && getline(&line, &cap, fp) > 0) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        module_file_t *m = &mods[n];
        module_name(line, m->name, sizeof(m->name));
        if (module_class(m->name, pci) != want)
            continue;
        m->fd = open(line, O_RDONLY | O_CLOEXEC);
        if (m->fd < 0) {
            li_log(ctx, "module %s: %m", line);
            continue;
        }
        m->flags = ends_with(line, ".xz") || ends_with(line, ".zst") || ends_with(line, ".gz")
                       ? MODULE_INIT_COMPRESSED_FILE
                       : 0;
        n++;
    }
    free(line);
    fclose(fp);
    return n;
}

/* finit_module() the opened files in order and close them. */
static int modules_load(li_ctx_t *ctx, module_file_t *mods, int n)
{
    int loaded = 0;
    for (int i = 0; i < n; i++) {
        if (syscall(SYS_finit_module, mods[i].fd, "", mods[i].flags) < 0 && errno != EEXIST)
            li_log(ctx, "load module %s: %m", mods[i].name);
        else
            loaded++;
        close(mods[i].fd);
        boot_mark(ctx, mods[i].name);
    }
    return loaded;
}

/* Load the late modules in a child process; returns its pid (or -1 after
 * loading them inline when fork fails). The files are opened here, before
 * the fork, so the child does not care when PID 1 deletes the initramfs;
 * PID 1 reaps the child before it starts serving the agent. */
static pid_t modules_load_late_start(li_ctx_t *ctx)
{
    module_file_t mods[MODULES_MAX];
    int n = modules_open(ctx, MOD_LATE, 0, mods, MODULES_MAX);
    if (n == 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        int k = modules_load(ctx, mods, n);
        li_debug(ctx, "%d late modules loaded", k);
        _exit(0);
    }
    if (pid < 0) {
        li_log(ctx, "fork for module loading: %m; loading inline");
        modules_load(ctx, mods, n);
        return -1;
    }
    for (int i = 0; i < n; i++)
        close(mods[i].fd);
    return pid;
}

static void modules_load_late_wait(pid_t pid)
{
    if (pid <= 0)
        return;
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* Wait for a path to exist: stat every 2 ms (the device nodes appear within
 * a few ms of their driver loading; a longer poll interval would be paid on
 * every boot). */
static int wait_for_path(const char *path, int wait_ms)
{
    struct stat st;
    uint64_t end = li_now_ms() + (uint64_t)wait_ms;
    while (stat(path, &st) < 0) {
        if (li_now_ms() >= end)
            return -ENOENT;
        sleep_ms(2);
    }
    return 0;
}

/* Grow a mounted ext4 filesystem to fill its block device. */
static void rootfs_grow(li_ctx_t *ctx)
{
    if (strcmp(ctx->root_fstype, "ext4") != 0)
        return;
    int dev = open(ctx->root_dev, O_RDONLY | O_CLOEXEC);
    if (dev < 0) {
        li_log(ctx, "grow root: open %s: %m", ctx->root_dev);
        return;
    }
    uint64_t dev_bytes = 0;
    uint8_t sb[1024];
    ssize_t n = pread(dev, sb, sizeof(sb), 1024);
    int ok = ioctl(dev, BLKGETSIZE64, &dev_bytes) == 0;
    close(dev);
    if (!ok || n != (ssize_t)sizeof(sb) || lp_get_le16(sb + 0x38) != 0xEF53) {
        li_log(ctx, "grow root: cannot read size or ext4 superblock of %s", ctx->root_dev);
        return;
    }
    uint32_t log_bs = lp_get_le32(sb + 0x18);
    if (log_bs > 6)
        return;
    uint64_t bs = 1024ull << log_bs;
    uint64_t fs_blocks = lp_get_le32(sb + 0x04);
    if (lp_get_le32(sb + 0x60) & 0x80) /* INCOMPAT_64BIT */
        fs_blocks |= (uint64_t)lp_get_le32(sb + 0x150) << 32;
    uint64_t dev_blocks = dev_bytes / bs;
    if (dev_blocks <= fs_blocks)
        return;
    int fd = open(NEWROOT, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (ioctl(fd, EXT4_IOC_RESIZE_FS, &dev_blocks) < 0)
        li_log(ctx, "grow root from %llu to %llu blocks: %m", (unsigned long long)fs_blocks,
               (unsigned long long)dev_blocks);
    else
        li_debug(ctx, "root grown from %llu to %llu blocks", (unsigned long long)fs_blocks,
                 (unsigned long long)dev_blocks);
    close(fd);
}

/* Delete the initramfs contents (dfd is its root), staying on its device. */
static void rm_tree(int dfd, dev_t dev)
{
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != dev)
            continue;
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0)
                rm_tree(sub, dev);
            unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR);
        } else {
            unlinkat(dirfd(d), de->d_name, 0);
        }
    }
    closedir(d);
}

/* Move the API filesystems into the new root and make it "/". */
static void root_switch(li_ctx_t *ctx)
{
    static const char *const moves[] = {"/dev", "/proc", "/sys"};
    int old_root = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    for (size_t i = 0; i < sizeof(moves) / sizeof(moves[0]); i++) {
        char target[64];
        snprintf(target, sizeof(target), NEWROOT "%s", moves[i]);
        mkdir_p1(target, 0755);
        if (mount(moves[i], target, NULL, MS_MOVE, NULL) < 0) {
            li_log(ctx, "move %s to the new root: %m", moves[i]);
            umount2(moves[i], MNT_DETACH);
        }
    }
    if (chdir(NEWROOT) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0)
        boot_fatal(ctx, "switch root failed");
    if (old_root >= 0) {
        struct statfs sfs;
        struct stat st;
        if (fstatfs(old_root, &sfs) == 0 && (sfs.f_type == RAMFS_MAGIC || sfs.f_type == TMPFS_MAGIC) &&
            fstat(old_root, &st) == 0)
            rm_tree(old_root, st.st_dev); /* closes old_root */
        else
            close(old_root);
    }
}

static void loopback_up(li_ctx_t *ctx)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        li_log(ctx, "lo: socket: %m");
        return;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
        li_log(ctx, "lo: get flags: %m");
    } else {
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
            li_log(ctx, "lo: up: %m");
    }
    close(s);
}

/* Mounts and settings of the running system, after the root switch. */
static void system_setup(li_ctx_t *ctx)
{
    char opts[128];
    long tty_gid = users_group_gid("", "tty");
    if (tty_gid >= 0)
        snprintf(opts, sizeof(opts), "newinstance,ptmxmode=0666,mode=0620,gid=%ld", tty_gid);
    else
        snprintf(opts, sizeof(opts), "newinstance,ptmxmode=0666,mode=0620");
    mount_fs(ctx, "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, opts);
    struct stat st;
    if (lstat("/dev/ptmx", &st) < 0 && symlink("pts/ptmx", "/dev/ptmx") < 0)
        li_log(ctx, "symlink /dev/ptmx: %m");
    static const char *const links[][2] = {
        {"/proc/self/fd", "/dev/fd"},
        {"/proc/self/fd/0", "/dev/stdin"},
        {"/proc/self/fd/1", "/dev/stdout"},
        {"/proc/self/fd/2", "/dev/stderr"},
    };
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
        if (lstat(links[i][1], &st) < 0)
            (void)symlink(links[i][0], links[i][1]);
    mount_fs(ctx, "shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    mount_fs(ctx, "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    mount_fs(ctx, "tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    if (sethostname(ctx->hostname, strlen(ctx->hostname)) < 0)
        li_log(ctx, "sethostname %s: %m", ctx->hostname);
    loopback_up(ctx);
}

int boot_pid1(li_ctx_t *ctx)
{
    umask(022);
    mkdir_p1("/dev", 0755);
    if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") < 0 && errno != EBUSY)
        ctx->log_fd = -1; /* no console either; keep going blind */
    console_open(ctx);
    mount_fs(ctx, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_fs(ctx, "sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    cmdline_parse(ctx);
    boot_mark(ctx, "init");
    li_debug(ctx, "starting (root %s, %s)", ctx->root_dev, ctx->root_fstype);
    reboot(RB_DISABLE_CAD); /* ctrl-alt-del → SIGINT to us */

    int pci = pci_bus_has_devices();
    module_file_t mods[MODULES_MAX];
    int n = modules_open(ctx, MOD_ROOT, pci, mods, MODULES_MAX);
    n = modules_load(ctx, mods, n);
    li_debug(ctx, "%d root modules loaded%s", n, pci ? " (PCI bus present)" : "");
    pid_t late = modules_load_late_start(ctx);
    if (wait_for_path(ctx->root_dev, ROOT_WAIT_MS) < 0) {
        char msg[320];
        snprintf(msg, sizeof(msg), "root device %s did not appear", ctx->root_dev);
        boot_fatal(ctx, msg);
    }
    boot_mark(ctx, "root device present");
    mkdir_p1(NEWROOT, 0755);
    if (mount(ctx->root_dev, NEWROOT, ctx->root_fstype, 0, NULL) < 0) {
        char msg[400];
        snprintf(msg, sizeof(msg), "mount %s (%s) on " NEWROOT ": %s", ctx->root_dev, ctx->root_fstype,
                 strerror(errno));
        boot_fatal(ctx, msg);
    }
    boot_mark(ctx, "root mounted");
    rootfs_grow(ctx);
    boot_mark(ctx, "root grown");
    root_switch(ctx);
    boot_mark(ctx, "root switched");
    system_setup(ctx);
    boot_mark(ctx, "system set up");

    int fd = boot_open_port(ctx, PORT_WAIT_MS);
    if (fd < 0)
        boot_fatal(ctx, "control port " LP_PORT_NAME " not found");
    ctx->port_fd = fd;
    boot_mark(ctx, "control port open");
    /* eth0 must exist before the host's CONFIGURE */
    modules_load_late_wait(late);
    boot_mark(ctx, "late modules loaded");
    return 0;
}

/* Scan /sys/class/virtio-ports for our port's name and open its device. */
static int port_scan(void)
{
    DIR *d = opendir("/sys/class/virtio-ports");
    if (!d)
        return -ENOENT;
    struct dirent *de;
    int fd = -ENOENT;
    while (fd == -ENOENT && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[512], name[128];
        snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", de->d_name);
        int nf = open(path, O_RDONLY | O_CLOEXEC);
        if (nf < 0)
            continue;
        ssize_t n = read(nf, name, sizeof(name) - 1);
        close(nf);
        if (n <= 0)
            continue;
        name[n] = '\0';
        name[strcspn(name, "\n")] = '\0';
        if (strcmp(name, LP_PORT_NAME) != 0)
            continue;
        snprintf(path, sizeof(path), "/dev/%s", de->d_name);
        fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
            fd = -errno == -ENOENT ? -EAGAIN : -errno; /* node not created yet */
    }
    closedir(d);
    return fd;
}

int boot_open_port(li_ctx_t *ctx, int wait_ms)
{
    uint64_t end = li_now_ms() + (uint64_t)wait_ms;
    int fd;
    while ((fd = port_scan()) < 0) {
        if (li_now_ms() >= end) {
            li_log(ctx, "open control port: %s", strerror(-fd));
            return fd;
        }
        sleep_ms(2); /* see wait_for_path */
    }
    return fd;
}

/* Reap every child; returns 1 when no other process is left. Every user
 * process descends from PID 1 and orphans are re-parented to it, so "no
 * children" means "alone" (kill(-1, 0) cannot tell: it counts kernel
 * threads). */
static int reap_until_alone(void)
{
    for (;;) {
        pid_t pid = waitpid(-1, NULL, WNOHANG);
        if (pid > 0)
            continue;
        return pid < 0 && errno == ECHILD;
    }
}

static void kill_all_wait(int sig, int wait_ms)
{
    kill(-1, sig);
    uint64_t end = li_now_ms() + (uint64_t)wait_ms;
    while (!reap_until_alone() && li_now_ms() < end)
        sleep_ms(20);
}

void boot_shutdown(li_ctx_t *ctx, int mode)
{
    li_log(ctx, "%s", mode == 1 ? "rebooting" : "powering off");
    kill_all_wait(SIGTERM, 2000);
    kill_all_wait(SIGKILL, 1000);
    sync();
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0)
        li_log(ctx, "remount / read-only: %m");
    sync();
    reboot(mode == 1 ? RB_AUTOBOOT : RB_POWER_OFF);
    li_log(ctx, "reboot: %m");
    for (;;)
        pause();
}
