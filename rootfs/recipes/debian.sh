#!/bin/bash
# Recipe for the "debian" base image: bookworm minbase + debian.packages,
# fetched through the host's own apt sources (no mirror is named here).
# Usage: debian.sh ROOTDIR     as root (ROOTDIR must not exist or be empty)
#        debian.sh ROOT.tar    as any user with subordinate ids: mmdebstrap
#                              --mode=unshare writes the tree as a tarball
# Everything that changes the image must live in this file, debian.packages
# or debian-customize.sh: their content is the image's cache key.
set -euo pipefail
umask 022

root=${1:?usage: debian.sh ROOTDIR|ROOT.tar}
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
suite=bookworm

say() { printf '[debian] %s\n' "$*" >&2; }

# mmdebstrap pastes a MIRROR argument that is an existing file into the
# chroot's apt sources (one-line or deb822 format), so passing the host's
# files makes the build use exactly the host's apt configuration.
sources=()
if [ -s /etc/apt/sources.list ] && grep -q '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list; then
    sources+=(/etc/apt/sources.list)
fi
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$f" ] && sources+=("$f")
done
[ ${#sources[@]} -gt 0 ] || { echo "debian: no apt sources in /etc/apt" >&2; exit 1; }

pkgs=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/debian.packages" | tr -s '[:space:]' ',')
pkgs=${pkgs%,}

# Root writes a directory. Without root, mmdebstrap builds in its own user
# namespace and must write a tarball (a directory would carry its namespace's
# ids); the hook then runs as that namespace's root, which may not be able to
# read this checkout, so it is passed as the script text (mmdebstrap runs a
# hook as `sh -c HOOK exec ROOTDIR` either way).
mode=root
hook="\"$here/debian-customize.sh\" \"\$1\""
if [ "$(id -u)" != 0 ]; then
    case $root in *.tar) ;; *) echo "debian: without root the target must be a .tar" >&2; exit 1;; esac
    mode=unshare
    hook=$(cat "$here/debian-customize.sh")
fi

say "mmdebstrap --mode=$mode --variant=minbase $suite +$pkgs (apt sources: ${sources[*]}) ..."
mmdebstrap --quiet --mode="$mode" --variant=minbase --include="$pkgs" \
    --aptopt='Acquire::Languages "none"' \
    --customize-hook="$hook" \
    "$suite" "$root" "${sources[@]}" >&2

# mmdebstrap turns apt's download sandbox off when user _apt cannot read the
# chroot directory (ours lies in a private cache, e.g. under /root), and apt
# then leaves its partial/ directories owned by root. Give them the owner apt
# gives them everywhere else (and in unshare mode): _apt, mode 0700.
if [ "$mode" = root ]; then
    apt_uid=$(awk -F: '$1 == "_apt" { print $3 }' "$root/etc/passwd")
    for d in var/cache/apt/archives/partial var/lib/apt/lists/partial; do
        if [ -n "$apt_uid" ] && [ -d "$root/$d" ]; then
            chown -h "$apt_uid:0" "$root/$d"
            chmod 0700 "$root/$d"
        fi
    done
fi
