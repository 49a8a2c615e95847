#!/bin/sh
# lanectl doctor and lanectl completion against a real lanesd:
#  - doctor on this host: qemu, nbdkit + our plugin (nbdkit --dump-plugin),
#    lanesd all OK, exit 0 (no KVM is only a WARN);
#  - a broken host makes it FAIL with a fix hint and exit 1: nbdkit missing
#    from PATH, a plugin that does not load, lanesd not reachable;
#  - the bash completion script completes commands, options, subcommands
#    and lane names fetched from lanesd (NAME: for cp); zsh loads it.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"

test_tmpdir
lanes_start

log "doctor, healthy"
lc doctor --state-dir "$LANES_STATE" >"$T/doc.txt" 2>&1 || fail "doctor failed on a working host: $(cat "$T/doc.txt")"
grep -q '^OK *qemu' "$T/doc.txt" || fail "qemu: $(cat "$T/doc.txt")"
grep -q '^OK *nbdkit .*plugin loads' "$T/doc.txt" || fail "nbdkit: $(cat "$T/doc.txt")"
grep -q '^OK *lanesd' "$T/doc.txt" || fail "lanesd: $(cat "$T/doc.txt")"
grep -Eq '^(OK|WARN) *accelerator' "$T/doc.txt" || fail "accelerator line: $(cat "$T/doc.txt")"
grep -q '^OK *state dir' "$T/doc.txt" || fail "state dir: $(cat "$T/doc.txt")"

log "doctor, broken"
mkdir "$T/path"
for c in qemu-system-x86_64 nft ip; do ln -s "$(command -v $c)" "$T/path/$c"; done
if PATH="$T/path" lc doctor >"$T/doc2.txt" 2>&1; then fail "doctor without nbdkit exited 0"; fi
grep -q '^FAIL *nbdkit' "$T/doc2.txt" && grep -q 'fix: apt-get install nbdkit' "$T/doc2.txt" || fail "no nbdkit: $(cat "$T/doc2.txt")"
mkdir "$T/bin"
cp "$LANES_BUILD/bin/lanectl" "$T/bin/"
echo 'not an ELF' >"$T/bin/nbdkit-laneslocal-plugin.so"
if "$T/bin/lanectl" --socket "$LANES_SOCKET" doctor >"$T/doc3.txt" 2>&1; then fail "doctor with a broken plugin exited 0"; fi
grep -q '^FAIL *nbdkit .*plugin does not load' "$T/doc3.txt" || fail "broken plugin: $(cat "$T/doc3.txt")"
if "$LANES_BUILD/bin/lanectl" --socket "$T/none.sock" doctor >"$T/doc4.txt" 2>&1; then fail "doctor without lanesd exited 0"; fi
grep -q '^FAIL *lanesd *not reachable' "$T/doc4.txt" || fail "no lanesd: $(cat "$T/doc4.txt")"

log "completion"
lanes_image minimal
lc create cmp-one --image minimal --disk 1 >/dev/null
lc completion bash >"$T/lanectl.bash"
comp() {
    PATH="$LANES_BUILD/bin:$PATH" bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _lanectl; echo "${COMPREPLY[*]}"' \
        sh "$T/lanectl.bash" "$@"
}
[ "$(comp lanectl lo)" = logs ] || fail "command: $(comp lanectl lo)"
comp lanectl --socket "$LANES_SOCKET" logs --f | grep -qw -- --follow || fail "option"
[ "$(comp lanectl --socket "$LANES_SOCKET" logs --source ne)" = netmed ] || fail "--source values"
[ "$(comp lanectl --socket "$LANES_SOCKET" files s)" = stat ] || fail "subcommand"
[ "$(comp lanectl --socket "$LANES_SOCKET" boot cmp)" = cmp-one ] || fail "lane name: '$(comp lanectl --socket "$LANES_SOCKET" boot cmp)'"
comp lanectl --socket "$LANES_SOCKET" cp cmp | grep -qw 'cmp-one:' || fail "cp lane spec"
lc completion zsh | head -1 | grep -q '^#compdef lanectl' || fail "zsh script header"
if command -v zsh >/dev/null; then
    lc completion zsh >"$T/lanectl.zsh"
    zsh -c ". '$T/lanectl.zsh'" || fail "zsh cannot load the script"
fi
expect_fail 'expected bash or zsh' lc completion fish
log "ok"
