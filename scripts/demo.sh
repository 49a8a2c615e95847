#!/bin/sh
# make demo: build the debian image, boot a lane, run commands in it, copy a
# file in and out, show that its disk survives a stop/boot, snapshot the
# running lane, break it, restore the snapshot and fork it into a second lane.
#
#   scripts/demo.sh [BUILD_DIR]
#
# Environment: LANES_DEMO_STATE (default ~/.local/state/lanes-demo) is the
# lanesd state directory; DEMO_KEEP=1 leaves lanesd and the lane running so
# you can keep playing (the script prints how).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
state=${LANES_DEMO_STATE:-$HOME/.local/state/lanes-demo}
export LANES_SOCKET="$state/lanesd.sock"
lanectl="$build/bin/lanectl"
lanesd_pid=""

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() {
    # Show the command as one could paste it: quote words with spaces etc.
    shown=""
    for a in "$@"; do
        case $a in
        *[!A-Za-z0-9@%+=:,./_-]*) shown="$shown '$a'" ;;
        *) shown="$shown $a" ;;
        esac
    done
    printf '\033[2m$ lanectl%s\033[0m\n' "$shown"
    "$lanectl" "$@"
}

cleanup() {
    rc=$?
    if [ "${DEMO_KEEP:-0}" != 1 ] && [ -n "$lanesd_pid" ]; then
        "$lanectl" rm --force demo-fork >/dev/null 2>&1 || true
        "$lanectl" rm --force demo >/dev/null 2>&1 || true
        kill "$lanesd_pid" 2>/dev/null || true
        wait "$lanesd_pid" 2>/dev/null || true
    fi
    if [ $rc -ne 0 ]; then
        echo "demo failed (exit $rc); lanesd log: $state/lanesd.log" >&2
        tail -n 20 "$state/lanesd.log" >&2 2>/dev/null || true
    fi
    exit $rc
}
trap cleanup EXIT INT TERM

mkdir -p "$state"
if "$lanectl" version >/dev/null 2>&1; then
    echo "a lanesd is already serving $LANES_SOCKET; using it"
else
    say "starting lanesd (state in $state, log in $state/lanesd.log)"
    "$build/bin/lanesd" --state-dir "$state" >>"$state/lanesd.log" 2>&1 &
    lanesd_pid=$!
    i=0
    until "$lanectl" version >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -lt 100 ] || { echo "lanesd did not start" >&2; exit 1; }
        kill -0 "$lanesd_pid" 2>/dev/null || { echo "lanesd exited" >&2; exit 1; }
        sleep 0.1
    done
fi
"$lanectl" rm --force demo-fork >/dev/null 2>&1 || true
"$lanectl" rm --force demo >/dev/null 2>&1 || true

say "building the debian image (bookworm + curl, python3, git; cached after the first run)"
run image build debian
run image ls

say "creating and booting a lane"
run create demo --image debian --cpus 2 --memory 1024 --disk 4
start=$(date +%s.%N)
run boot demo
printf 'booted in %.2f s (accelerator: %s)\n' "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" \
    "$("$lanectl" inspect demo | sed -n 's/.*"accel": *"\([a-z]*\)".*/\1/p')"

say "running commands in the lane"
run exec demo -- uname -a
run exec demo -- sh -c '. /etc/os-release && echo "$PRETTY_NAME"'
run exec demo -- python3 -c 'import sys, platform; print("python", sys.version.split()[0], "on", platform.machine())'
run exec demo -- git --version
run exec demo -- curl --version
run exec demo -- df -h /
echo 'print(sum(range(1_000_001)))' >"$state/demo.py"
printf '\033[2m$ lanectl exec -i demo -- python3 - < demo.py\033[0m\n'
"$lanectl" exec -i demo -- python3 - <"$state/demo.py"

say "exit codes pass through"
set +e
run exec demo -- sh -c 'echo "failing on purpose" >&2; exit 3'
echo "lanectl exited with $?"
set -e

say "files in and out"
head -c 1048576 /dev/urandom >"$state/blob"
run cp "$state/blob" demo:/home/lane/blob
run exec demo -- sha256sum /home/lane/blob
sha256sum "$state/blob"
run cp demo:/etc/os-release "$state/os-release"
head -n 2 "$state/os-release"

say "the disk is durable: write, stop, boot, read"
run exec demo -- sh -c 'date -u > /root/written-before-stop && sync'
run stop demo
run boot demo
run exec demo -- cat /root/written-before-stop

say "snapshot the running lane (O(1): freeze, flush, commit, thaw), break it, restore it"
run exec demo -- sh -c 'echo "precious work" > /root/work.txt && sync'
run snapshot create demo before-mistake
run exec demo -- sh -c 'rm -f /root/work.txt; ls /root'
run snapshot restore demo before-mistake --reboot
run exec demo -- cat /root/work.txt
run snapshot ls demo

say "fork the snapshot into a second lane: shared chunks, separate writes"
run fork demo@before-mistake demo-fork
run boot demo-fork
run exec demo-fork -- sh -c 'echo "only in the fork" >> /root/work.txt; cat /root/work.txt'
run exec demo -- cat /root/work.txt
run store stats
run rm --force demo-fork
run ls

if [ "${DEMO_KEEP:-0}" = 1 ]; then
    say "lanesd and lane 'demo' keep running"
    echo "  export LANES_SOCKET=$LANES_SOCKET"
    echo "  $lanectl exec -i -t demo -- bash"
    echo "  $lanectl stop demo; kill ${lanesd_pid:-<lanesd pid>}"
else
    say "done (DEMO_KEEP=1 make demo leaves the lane running)"
fi
