#!/bin/sh
# mmdebstrap --customize-hook for the "debian" base image.
# Usage (by mmdebstrap): debian-customize.sh ROOTDIR
# Adds the lane user, writes lane-specific /etc files and removes what a lane
# never needs (apt lists and caches, docs, man pages, locales except C).
set -eu
umask 022
root=${1:?usage: debian-customize.sh ROOTDIR}

chroot "$root" groupadd --gid 1000 lane
chroot "$root" useradd --uid 1000 --gid 1000 --create-home --home-dir /home/lane \
    --shell /bin/bash lane

echo lane > "$root/etc/hostname"
cat > "$root/etc/hosts" <<'X'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
127.0.1.1	lane
X
# Placeholder: lane-init writes the lane's resolver when networking is set up.
rm -f "$root/etc/resolv.conf"
printf '# written by lane-init at boot\nnameserver 127.0.0.53\n' > "$root/etc/resolv.conf"

# Caches and documentation: safe to drop. The apt lists and /tmp are left to
# mmdebstrap's own cleanup (it removes both after this hook): its cleanup runs
# apt with a config file kept in the chroot's /tmp, and with that file gone
# apt fell back to the host's configuration, emptying the host's apt lists
# (as root) or failing (without root).
rm -rf "$root"/var/cache/apt/*.bin \
       "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/debconf/*-old \
       "$root"/var/log/apt/* "$root"/var/log/dpkg.log "$root"/var/log/alternatives.log \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
       "$root"/var/tmp/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
# Every lane must get its own machine-id at first boot.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
