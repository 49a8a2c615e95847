#!/bin/sh
# lanectl cp's progress line against a real lane: with stderr on a terminal
# (a PTY made here) uploads and downloads of a file show bytes, percent, a
# bar and a rate, ending at 100%; directories (tar streams, size unknown)
# show bytes and a rate; --quiet and a non-terminal stderr show nothing. The
# copies themselves must still be byte-exact.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
need_cmd python3

test_tmpdir
lanes_start
lanes_image minimal
lc create cp --image minimal --disk 1 >/dev/null
lc boot cp >/dev/null

head -c 24000000 /dev/urandom >"$T/big"
mkdir -p "$T/dir/sub"
# Big enough that each tar transfer outlasts the first redraw (125 ms) even
# on a fast, quiet machine: a transfer that ends sooner rightly draws nothing.
head -c 48000000 /dev/urandom >"$T/dir/sub/a"
echo small >"$T/dir/b"

# run_tty OUT ARGS...: lanectl ARGS with stderr on a PTY; its stderr bytes go to OUT
cat >"$T/onpty.py" <<'PY'
import os, pty, sys
out, argv = sys.argv[1], sys.argv[2:]
master, slave = pty.openpty()
pid = os.fork()
if pid == 0:
    os.dup2(slave, 2)
    os.close(master)
    os.execv(argv[0], argv)
os.close(slave)
data = b""
while True:
    try:
        d = os.read(master, 65536)
    except OSError:
        break
    if not d:
        break
    data += d
_, st = os.waitpid(pid, 0)
open(out, "wb").write(data)
sys.exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 1)
PY
LC="$LANES_BUILD/bin/lanectl --socket $LANES_SOCKET"
# shellcheck disable=SC2086
run_tty() { _o=$1; shift; python3 "$T/onpty.py" "$_o" $LC "$@"; }

log "upload a 24 MB file: percent, bar, rate, 100% at the end"
run_tty "$T/up.err" cp "$T/big" cp:/tmp/big || fail "cp up: $(cat "$T/up.err")"
grep -aq 'big  .* / 23 MiB .*%.*\[=*' "$T/up.err" || fail "no progress line on upload: $(cat -v "$T/up.err")"
grep -aq '100% \[====================\]' "$T/up.err" || fail "upload did not end at 100%: $(cat -v "$T/up.err")"
grep -aq 'B/s' "$T/up.err" || fail "no rate: $(cat -v "$T/up.err")"

log "download it: size from the API, percent, identical bytes"
run_tty "$T/down.err" cp cp:/tmp/big "$T/big.back" || fail "cp down: $(cat "$T/down.err")"
cmp "$T/big" "$T/big.back" || fail "downloaded file differs"
grep -aq 'big  .* / 23 MiB .*100% \[' "$T/down.err" || fail "no progress with total on download: $(cat -v "$T/down.err")"

log "directories (tar, size unknown): bytes and rate, no percent"
run_tty "$T/dirup.err" cp -r "$T/dir" cp:/tmp/dir || fail "cp -r up: $(cat "$T/dirup.err")"
grep -aq "dir  [0-9.]* [KM]iB  .*B/s" "$T/dirup.err" || fail "no progress on cp -r up: $(cat -v "$T/dirup.err")"
grep -aq '%' "$T/dirup.err" && fail "a percent for an unknown size: $(cat -v "$T/dirup.err")"
run_tty "$T/dirdown.err" cp -r cp:/tmp/dir "$T/dir.back" || fail "cp -r down: $(cat "$T/dirdown.err")"
cmp "$T/dir/sub/a" "$T/dir.back/sub/a" || fail "directory copy differs"
grep -aq "/tmp/dir  [0-9.]* [KM]iB  .*B/s" "$T/dirdown.err" || fail "no progress on cp -r down: $(cat -v "$T/dirdown.err")"

log "--quiet on a terminal, and a non-terminal stderr: no progress"
run_tty "$T/q.err" cp --quiet "$T/big" cp:/tmp/big2 || fail "cp --quiet: $(cat "$T/q.err")"
[ ! -s "$T/q.err" ] || fail "--quiet printed: $(cat -v "$T/q.err")"
lc cp "$T/big" cp:/tmp/big3 2>"$T/pipe.err" || fail "cp with stderr to a file"
[ ! -s "$T/pipe.err" ] || fail "progress on a non-terminal: $(cat -v "$T/pipe.err")"
log "ok"
