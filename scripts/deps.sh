#!/bin/sh
# Install the Debian packages lanes needs to build, test and run.
# Idempotent: only missing packages are installed; prints what it does.
set -eu

PKGS="
build-essential cmake pkg-config
libuv1-dev libsqlite3-dev sqlite3 libjson-c-dev libhttp-parser-dev
libcurl4-openssl-dev curl libssl-dev libcmocka-dev libexpat1-dev
nbdkit nbdkit-plugin-dev libnbd-bin
qemu-system-x86 qemu-utils qemu-guest-agent
busybox-static e2fsprogs cpio kmod mmdebstrap zstd xz-utils dpkg-dev
iproute2 nftables socat python3 python3-yaml fio openssl acl uidmap
clang libclang-rt-14-dev
"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

# Node.js runs the S3 test server (s3rver) and the TypeScript SDK's tests.
# Any node >= 18 on PATH will do (some machines ship a newer build whose
# "nodejs" package already contains npm); otherwise take Debian's.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"

if [ -z "$missing" ]; then
    echo "deps: all Debian packages present"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
echo "deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
echo "deps: done"
