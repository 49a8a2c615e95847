#!/bin/sh
# Recipe for the "minimal" base image: a busybox-static root with a real /etc.
# Usage: minimal.sh ROOTDIR   (ROOTDIR must exist and be empty; run as root so
# ownership in the tree is what mkfs.ext4 -d copies into the image)
# Everything that changes the image must live in this file: its content is
# part of the image's cache key.
set -eu
umask 022

root=${1:?usage: minimal.sh ROOTDIR}
busybox=${LANES_BUSYBOX:-/bin/busybox}
required_applets="sh wget nslookup sha256sum head sync mount"

[ -x "$busybox" ] || { echo "minimal: $busybox not found (install busybox-static)" >&2; exit 1; }
if ! "$busybox" --list-full >/dev/null 2>&1; then
    echo "minimal: $busybox does not support --list-full" >&2; exit 1
fi
if ldd "$busybox" >/dev/null 2>&1; then
    echo "minimal: $busybox is dynamically linked; need busybox-static" >&2; exit 1
fi
for a in $required_applets; do
    "$busybox" --list | grep -qx "$a" || { echo "minimal: busybox lacks applet $a" >&2; exit 1; }
done

cd "$root"
for d in bin sbin usr/bin usr/sbin etc dev proc sys run mnt root home/lane var/tmp var/log tmp; do
    mkdir -p "$d"
done
chmod 0700 root
chmod 1777 tmp var/tmp
chown 1000:1000 home/lane
chmod 0755 home/lane

cp "$busybox" bin/busybox
chmod 0755 bin/busybox
# One symlink per applet, at the path busybox itself reports (bin/sh, usr/bin/wget, ...).
"$busybox" --list-full | while read -r path; do
    case $path in bin/busybox|linuxrc) continue ;; esac
    [ -e "$path" ] || [ -L "$path" ] || ln -s /bin/busybox "$path"
done

cat > etc/passwd <<'X'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
lane:x:1000:1000:lane:/home/lane:/bin/sh
X
cat > etc/shadow <<'X'
root:!:19000::::::
nobody:!:19000::::::
lane:!:19000::::::
X
chmod 0640 etc/shadow
cat > etc/group <<'X'
root:x:0:
nogroup:x:65534:
lane:x:1000:
X
echo lane > etc/hostname
cat > etc/hosts <<'X'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
127.0.1.1	lane
X
# Placeholder: lane-init writes the lane's resolver when networking is set up.
printf '# written by lane-init at boot\nnameserver 127.0.0.53\n' > etc/resolv.conf
cat > etc/os-release <<'X'
NAME="lanes-minimal"
ID=lanes-minimal
PRETTY_NAME="lanes minimal (busybox)"
VERSION_ID=1
HOME_URL="file:///usr/share/doc/lanes"
X
cat > etc/profile <<'X'
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME="${HOME:-/root}"
PS1='lane:\w\$ '
X
printf '/bin/sh\n' > etc/shells
# Fixed timestamps: the same recipe gives the same tree on every host.
find . -exec touch -h -d @1700000000 {} +
