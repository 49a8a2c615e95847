#!/bin/sh
# Interactive shells over WebSocket against a real lane, with an independent
# WebSocket client (tests/integration/wsclient.py: python3, raw socket, not
# lanesd's code):
# PTY size and resize, TERM, Ctrl-C through the PTY, exit status and the
# close handshake, attach to an exec session with stdin, SIGHUP when the
# socket goes away, protocol errors; then `lanectl shell` under a real PTY.
# Also exec's max_output_bytes cap (buffered and streaming).
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
need_cmd python3

test_tmpdir
cat >"$T/ws.py" <<'EOF'
import base64, json, os, socket, struct, sys, time

from wsclient import WS

def started(ws):
    return ws.started()["id"]

sock, scenario = sys.argv[1], sys.argv[2]
lane = sys.argv[3] if len(sys.argv) > 3 else "sh"
if scenario == "shell":
    ws = WS(sock, f"/v1/lanes/{lane}/shell?rows=30&cols=100")
    assert ws.status == 101, ws.head
    started(ws)
    ws.stdin("stty size; echo TERM=$TERM\n")
    ws.until("30 100")
    ws.until("TERM=xterm-256color")
    ws.ctl(type="resize", rows=41, cols=132)
    ws.stdin("stty size\n")
    ws.until("41 132")
    # Ctrl-C through the PTY interrupts the foreground job, not the shell
    # (the PTY echoes what we type: expected output is computed, never typed)
    ws.stdin("sleep 100; echo not-$((2+3))\n")
    time.sleep(1.5)
    ws.stdin("\x03")
    ws.stdin("echo after-$((6*7))\n")
    ws.until("after-42")
    assert b"not-5" not in ws.out
    # a 200 KB burst of output arrives complete
    ws.stdin("head -c 200000 /dev/zero | tr '\\0' y; echo; echo burst-$((10+1))\n")
    ws.until("burst-11")
    assert ws.out.count(b"y") >= 200000, ws.out.count(b"y")
    ws.stdin("exit 7\n")
    ex, code = ws.until_exit()
    assert ex == {"type": "exit", "exit_code": 7, "signal": None, "timed_out": False}, ex
    assert code == 1000, code
    print("shell ok")
elif scenario == "hangup":
    ws = WS(sock, f"/v1/lanes/{lane}/shell")
    started(ws)
    ws.stdin("echo pid=$$\n")
    import re
    while not re.search(rb"pid=(\d+)", ws.out):
        op, d = ws.frame()
        if op == 2: ws.out += d
    print(re.search(rb"pid=(\d+)", ws.out).group(1).decode())
    ws.s.close()  # no close frame: a dropped client
elif scenario == "attach":
    xid = sys.argv[4]
    ws = WS(sock, f"/v1/lanes/{lane}/execs/{xid}/attach")
    assert ws.status == 101, ws.head
    assert started(ws) == xid
    ws.stdin("hello\n")
    ws.until("got hello")
    ex, code = ws.until_exit()
    assert ex["exit_code"] == 3 and code == 1000, (ex, code)
    print("attach ok")
elif scenario == "errors":
    ws = WS(sock, f"/v1/lanes/nope/shell")
    assert ws.status == 404, ws.head
    ws = WS(sock, f"/v1/lanes/{lane}/execs/x999999/attach")
    assert ws.status == 404, ws.head
    ws = WS(sock, f"/v1/lanes/{lane}/shell")
    started(ws)
    ws.ctl(type="bogus")
    ex, code = ws.until_exit()
    assert code == 1003, code
    print("errors ok")
EOF

lanes_start
lanes_image minimal
lc create sh --image minimal --disk 1 >/dev/null
lc boot sh >/dev/null

log "shell: PTY size, resize, TERM, Ctrl-C, 200 KB burst, exit status"
PYTHONPATH="$(dirname "$0")" python3 "$T/ws.py" "$LANES_SOCKET" shell sh || fail "shell scenario"

log "errors: unknown lane/exec, bad control message"
PYTHONPATH="$(dirname "$0")" python3 "$T/ws.py" "$LANES_SOCKET" errors sh || fail "errors scenario"

log "attach to an exec session with stdin"
api POST /v1/lanes/sh/execs -H 'Content-Type: application/json' \
    -d '{"argv":["sh","-c","read x; echo got $x; exit 3"],"stdin":true}' >"$T/exec.json"
[ "$API_STATUS" = 201 ] || fail "create exec: $API_STATUS $(cat "$T/exec.json")"
id=$(json_field id <"$T/exec.json")
PYTHONPATH="$(dirname "$0")" python3 "$T/ws.py" "$LANES_SOCKET" attach sh "$id" || fail "attach scenario"

log "a dropped client hangs up its shell"
pid=$(PYTHONPATH="$(dirname "$0")" python3 "$T/ws.py" "$LANES_SOCKET" hangup sh) || fail "hangup scenario"
[ -n "$pid" ] || fail "no shell pid"
gone() { ! lc exec sh -- kill -0 "$pid" 2>/dev/null; }
wait_for 20 gone || fail "shell $pid still running after its WebSocket dropped"

log "exec output caps: max_output_bytes drops the rest and kills the process"
s0=$(date +%s)
api POST /v1/lanes/sh/exec -H 'Content-Type: application/json' \
    -d '{"argv":["sh","-c","head -c 1000000 /dev/zero | tr \"\\0\" z; sleep 60"],"max_output_bytes":1000}' >"$T/cap.json"
[ "$API_STATUS" = 200 ] || fail "capped exec: $API_STATUS $(cat "$T/cap.json")"
python3 - "$T/cap.json" <<'PY' || fail "capped buffered exec"
import json, sys
r = json.load(open(sys.argv[1]))
assert len(r["stdout"]) == 1000 and set(r["stdout"]) == {"z"}, len(r["stdout"])
assert r.get("output_limit_exceeded") is True and r["signal"] == 9, r
PY
[ $(($(date +%s) - s0)) -lt 30 ] || fail "capped exec was not killed promptly"
api POST /v1/lanes/sh/execs -H 'Content-Type: application/json' \
    -d '{"argv":["sh","-c","head -c 300000 /dev/zero; echo more >&2; sleep 60"],"max_output_bytes":5000}' >"$T/x.json"
id=$(json_field id <"$T/x.json")
api GET "/v1/lanes/sh/execs/$id/output" >"$T/out.ndjson"
python3 - "$T/out.ndjson" <<'PY' || fail "capped streaming exec"
import base64, json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n = sum(len(base64.b64decode(l["data"])) for l in lines if "data" in l)
assert n == 5000, n
assert lines[-1]["exit"]["output_limit_exceeded"] is True, lines[-1]
PY
api POST /v1/lanes/sh/exec -H 'Content-Type: application/json' -d '{"argv":["true"],"max_output_bytes":0}' >/dev/null
[ "$API_STATUS" = 400 ] || fail "max_output_bytes 0 accepted: $API_STATUS"

log "lanectl shell under a real PTY"
python3 - "$LANES_BUILD/bin/lanectl" "$LANES_SOCKET" <<'EOF' || fail "lanectl shell"
import os, pty, sys, time, select, fcntl, termios, struct
lanectl, sock = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.execv(lanectl, [lanectl, "--socket", sock, "shell", "sh"])
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
out = b""
def until(needle, t=60):
    global out
    end = time.time() + t
    while needle not in out:
        if time.time() > end:
            raise SystemExit("timeout waiting for %r in %r" % (needle, out[-400:]))
        r, _, _ = select.select([fd], [], [], 1)
        if r:
            try:
                out += os.read(fd, 65536)
            except OSError:
                raise SystemExit("lanectl ended early: %r" % out[-400:])
os.write(fd, b"stty size\n")
until(b"33 111")
# SIGWINCH on the local terminal reaches the guest PTY
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
os.kill(pid, 28)
time.sleep(1)
os.write(fd, b"stty size\n")
until(b"50 160")
os.write(fd, b"exit 5\n")
_, st = os.waitpid(pid, 0)
assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 5, st
print("lanectl shell ok")
EOF
log "ok"
