#!/bin/bash
# qga-image.sh — root filesystem tarball for the exec baseline: lanes' debian
# image plus Debian's qemu-guest-agent (the peer doing lanes' exec job).
#
#   bench/qga-image.sh [-f]      prints the tarball path (one line on stdout)
#
# How: the debian image's tree is copied out of its ext4 with `debugfs rdump`
# (no mount, no loop device needed), then the files of the qemu-guest-agent
# package as installed on this host (scripts/deps.sh installs it; the host is
# the same Debian release as the image) are added with `dpkg -L` + tar, and
# so are the packages of every library `ldd` reports missing when run inside
# the tree with chroot, until qemu-ga's libraries all resolve there. Finally
# `qemu-ga --version` must run in the chroot.
#
# Cached in $LANES_CACHE/bench/qga-<key>.tar, key = debian image + package
# versions + this script, so a repeated run is instant and the tarball's
# sha256 (which lanes-rootfs import caches by) stays the same.
# Needs root (chroot, file owners). Progress on stderr.
set -euo pipefail
trap 'echo "qga-image: failed at line $LINENO" >&2' ERR
umask 022

HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CACHE=${LANES_CACHE:-$HOME/.cache/lanes}
FORCE=0
[ "${1:-}" = -f ] && FORCE=1

say() { printf '[qga-image] %s\n' "$*" >&2; }
die() { printf 'qga-image: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (chroot and file owners)"
for c in debugfs dpkg-query tar chroot ldconfig; do
    command -v "$c" >/dev/null || die "$c not found (scripts/deps.sh)"
done
dpkg-query -W -f='${Status}' qemu-guest-agent 2>/dev/null | grep -q 'install ok installed' ||
    die "qemu-guest-agent is not installed on the host (scripts/deps.sh installs it)"

debian=$("$ROOT/rootfs/lanes-rootfs" image debian)
key=$( { basename "$debian"; dpkg-query -W -f='${Package}=${Version}\n' qemu-guest-agent libglib2.0-0 \
         libnuma1 liburing2 libudev1 libpcre2-8-0 2>/dev/null; sha256sum "$0" | cut -d' ' -f1; } |
       sha256sum | cut -c1-16)
out="$CACHE/bench/qga-$key.tar"
if [ "$FORCE" != 1 ] && [ -f "$out" ]; then
    echo "$out"
    exit 0
fi

mkdir -p "$CACHE/bench"
tmp=$(mktemp -d "$CACHE/bench/tmp.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
t0=$EPOCHREALTIME

say "extracting $(basename "$debian") with debugfs rdump"
mkdir "$tmp/root"
debugfs -R "rdump / $tmp/root" "$debian" >/dev/null 2>"$tmp/debugfs.log" ||
    die "debugfs rdump failed: $(tail -3 "$tmp/debugfs.log")"
[ -x "$tmp/root/bin/sh" ] || die "extracted tree has no /bin/sh"

# Copy the files of installed package $1 from the host into the tree.
added=" "
add_package() {
    case "$added" in *" $1 "*) return 0 ;; esac
    added="$added$1 "
    say "adding package $1 ($(dpkg-query -W -f='${Version}' "$1"))"
    dpkg -L "$1" | grep -v '^/\.$' | sed 's|^/||' >"$tmp/files"
    tar -C / --no-recursion -cf - -T "$tmp/files" | tar -C "$tmp/root" --keep-directory-symlink -xf -
}

add_package qemu-guest-agent
for _ in 1 2 3 4 5 6; do
    missing=$( (chroot "$tmp/root" ldd /usr/sbin/qemu-ga || true) | awk '/not found/ {print $1}')
    [ -z "$missing" ] && break
    for lib in $missing; do
        path=$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64/ {print $NF; exit}')
        [ -n "$path" ] || die "library $lib of qemu-ga not found on the host either"
        # merged /usr: the package may own the /usr/lib spelling of the path
        pkg=$( (dpkg -S "$path" 2>/dev/null || dpkg -S "$(readlink -f "$path")" 2>/dev/null ||
                dpkg -S "/usr$path" 2>/dev/null || true) | head -n1 | cut -d: -f1)
        [ -n "$pkg" ] || die "no package owns $path"
        add_package "$pkg"
    done
done
missing=$( (chroot "$tmp/root" ldd /usr/sbin/qemu-ga || true) | awk '/not found/ {print $1}')
[ -z "$missing" ] || die "qemu-ga still misses libraries in the image: $missing"
ver=$(chroot "$tmp/root" /usr/sbin/qemu-ga --version) || die "qemu-ga does not run in the image"
say "$ver runs in the image"

tar -C "$tmp/root" --numeric-owner -cf "$tmp/root.tar" .
sync -f "$tmp/root.tar"
mv -f "$tmp/root.tar" "$out"
say "built $out in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }')"
echo "$out"
