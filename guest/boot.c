/* boot.c — lane-init's PID-1 duties: bring the guest from the initramfs to
 * the lane's root disk, and take it down again.
 *
 * Boot order: devtmpfs/proc/sysfs → console log → kernel command line →
 * modules (lanes.order, in dependency order) → wait for the root device →
 * mount it at /newroot → grow the ext4 fs online to the device size → move
 * /dev /proc /sys, switch root (staying PID 1), free the initramfs → devpts,
 * /dev/shm, /tmp, /run, hostname, lo up. A missing root device or a root
 * that does not mount powers the VM off at once so the host sees a failure
 * instead of a hang. Everything else that fails is logged and boot goes on.
 *
 * Shutdown: SIGTERM everyone, wait up to 2 s, SIGKILL, sync, remount /
 * read-only, then reboot(2). PID 1 must never exit.
 *
 * Threading: single-threaded, runs before and after the agent loop.
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

/* finit_module() every file listed in lanes.order, in order. */
static void modules_load(li_ctx_t *ctx)
{
    FILE *fp = fopen(MODULES_ORDER, "re");
    if (!fp) {
        li_debug(ctx, "no %s: %m", MODULES_ORDER);
        return;
    }
    char *line = NULL;
    size_t cap = 0;
    int loaded = 0;
    while (getline(&line, &cap, fp) > 0) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        int fd = open(line, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            li_log(ctx, "module %s: %m", line);
            continue;
        }
        int flags = ends_with(line, ".xz") || ends_with(line, ".zst") || ends_with(line, ".gz")
                        ? MODULE_INIT_COMPRESSED_FILE
                        : 0;
        if (syscall(SYS_finit_module, fd, "", flags) < 0 && errno != EEXIST)
            li_log(ctx, "load module %s: %m", line);
        else
            loaded++;
        close(fd);
    }
    free(line);
    fclose(fp);
    li_debug(ctx, "%d modules loaded", loaded);
}

static int wait_for_path(const char *path, int wait_ms)
{
    struct stat st;
    uint64_t end = li_now_ms() + (uint64_t)wait_ms;
    while (stat(path, &st) < 0) {
        if (li_now_ms() >= end)
            return -ENOENT;
        sleep_ms(10);
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
    li_debug(ctx, "starting (root %s, %s)", ctx->root_dev, ctx->root_fstype);
    reboot(RB_DISABLE_CAD); /* ctrl-alt-del → SIGINT to us */

    modules_load(ctx);
    if (wait_for_path(ctx->root_dev, ROOT_WAIT_MS) < 0) {
        char msg[320];
        snprintf(msg, sizeof(msg), "root device %s did not appear", ctx->root_dev);
        boot_fatal(ctx, msg);
    }
    mkdir_p1(NEWROOT, 0755);
    if (mount(ctx->root_dev, NEWROOT, ctx->root_fstype, 0, NULL) < 0) {
        char msg[400];
        snprintf(msg, sizeof(msg), "mount %s (%s) on " NEWROOT ": %s", ctx->root_dev, ctx->root_fstype,
                 strerror(errno));
        boot_fatal(ctx, msg);
    }
    rootfs_grow(ctx);
    root_switch(ctx);
    system_setup(ctx);

    int fd = boot_open_port(ctx, PORT_WAIT_MS);
    if (fd < 0)
        boot_fatal(ctx, "control port " LP_PORT_NAME " not found");
    ctx->port_fd = fd;
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
        sleep_ms(20);
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
