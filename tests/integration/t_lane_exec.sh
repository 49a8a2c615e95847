#!/bin/sh
# exec and cp against a real lane: output, exit codes, signals, stdin,
# env/cwd/user, timeouts, 100 sequential and 20 concurrent execs, and a
# 10 MiB file round trip with checksums.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"

test_tmpdir
lanes_start
lanes_image minimal
lc create ex --image minimal --disk 1 >/dev/null
lc boot ex >/dev/null

log "stdout and stderr are separate and live"
lc exec ex -- sh -c 'echo out; echo err >&2' >"$T/o" 2>"$T/e"
[ "$(cat "$T/o")" = out ] || fail "stdout: $(cat "$T/o")"
[ "$(cat "$T/e")" = err ] || fail "stderr: $(cat "$T/e")"

log "exit codes, signals, not found"
for code in 0 1 42 255; do
    set +e; lc exec ex -- sh -c "exit $code"; rc=$?; set -e
    [ $rc -eq $code ] || fail "exit $code gave $rc"
done
set +e; lc exec ex -- sh -c 'kill -KILL $$'; rc=$?; set -e
[ $rc -eq 137 ] || fail "SIGKILL should map to 137, got $rc"
set +e; lc exec ex -- /no/such/thing 2>"$T/e"; rc=$?; set -e
[ $rc -eq 127 ] || fail "missing program should exit 127, got $rc"
grep -qi 'no such file' "$T/e" || fail "missing program message: $(cat "$T/e")"

log "stdin"
printf 'line1\nline2\n' | lc exec -i ex -- cat >"$T/o"
printf 'line1\nline2\n' | cmp - "$T/o" || fail "stdin round trip"
head -c 3000000 /dev/urandom >"$T/rand"
lc exec -i ex -- sha256sum <"$T/rand" | cut -d' ' -f1 >"$T/guest.sum"
sha256sum "$T/rand" | cut -d' ' -f1 | cmp - "$T/guest.sum" || fail "3 MB stdin checksum differs"

log "env, cwd, user"
[ "$(lc exec -e FOO=bar ex -- sh -c 'echo $FOO')" = bar ] || fail "env"
[ "$(lc exec -w /tmp ex -- pwd)" = /tmp ] || fail "cwd"
[ "$(lc exec -u lane ex -- id -u)" = 1000 ] || fail "user lane should be uid 1000"
[ "$(lc exec ex -- id -u)" = 0 ] || fail "default user should be root"
expect_fail "." lc exec -w /does/not/exist ex -- true

log "timeout"
set +e; lc exec --timeout 1 ex -- sleep 30; rc=$?; set -e
[ $rc -eq 124 ] || fail "timeout should exit 124, got $rc"

log "large output is complete"
lc exec ex -- sh -c 'head -c 5000000 /dev/zero | tr "\0" x' | wc -c | grep -qx 5000000 || fail "5 MB output truncated"

log "100 sequential execs"
s=$(now)
i=0
while [ $i -lt 100 ]; do
    [ "$(lc exec ex -- echo $i)" = "$i" ] || fail "sequential exec $i"
    i=$((i + 1))
done
log "100 sequential execs in $(elapsed "$s") s"

log "20 concurrent execs"
i=0
pids=""
while [ $i -lt 20 ]; do
    lc exec ex -- sh -c "sleep 1; echo c$i" >"$T/c$i" 2>&1 &
    pids="$pids $!"
    i=$((i + 1))
done
for p in $pids; do wait "$p" || fail "a concurrent exec failed"; done
i=0
while [ $i -lt 20 ]; do
    [ "$(cat "$T/c$i")" = "c$i" ] || fail "concurrent exec $i: $(cat "$T/c$i")"
    i=$((i + 1))
done

log "10 MiB file round trip with checksum"
head -c 10485760 /dev/urandom >"$T/f10"
chmod 0640 "$T/f10"
lc cp "$T/f10" ex:/root/f10
guest_sum=$(lc exec ex -- sha256sum /root/f10 | cut -d' ' -f1)
host_sum=$(sha256sum "$T/f10" | cut -d' ' -f1)
[ "$guest_sum" = "$host_sum" ] || fail "guest checksum differs after cp in"
[ "$(lc exec ex -- stat -c %a /root/f10)" = 640 ] || fail "mode not preserved on cp in"
lc cp ex:/root/f10 "$T/f10.back"
cmp "$T/f10" "$T/f10.back" || fail "file differs after cp out"
expect_fail "." lc cp ex:/no/such/file "$T/x"
[ -e "$T/x" ] && fail "failed cp out left a file behind"
log "ok"
