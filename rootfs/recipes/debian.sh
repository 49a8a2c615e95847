#!/bin/bash
# Recipe for the "debian" base image: bookworm minbase + debian.packages,
# fetched through the host's own apt sources (no mirror is named here).
# Usage: debian.sh ROOTDIR   (as root; ROOTDIR must not exist or be empty)
# Everything that changes the image must live in this file, debian.packages
# or debian-customize.sh: their content is the image's cache key.
set -euo pipefail
umask 022

root=${1:?usage: debian.sh ROOTDIR}
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

say "mmdebstrap --variant=minbase $suite +$pkgs (apt sources: ${sources[*]}) ..."
mmdebstrap --quiet --mode=root --variant=minbase --include="$pkgs" \
    --aptopt='Acquire::Languages "none"' \
    --customize-hook="\"$here/debian-customize.sh\" \"\$1\"" \
    "$suite" "$root" "${sources[@]}" >&2
