#!/bin/sh
# Persistent named shell sessions (GET /v1/lanes/{name}/shell?session=S,
# GET/DELETE /v1/lanes/{name}/sessions) against a real lane, with an
# independent WebSocket client (tests/integration/wsclient.py):
#  - a session keeps cwd, environment and background jobs across a dropped
#    client; reattaching replays its recent output first (the ring is
#    bounded: 64 KiB, and the newest bytes are the ones kept);
#  - a second client gets 409 session_busy; takeover=1 detaches the first;
#  - list shows name/pid/attached; DELETE kills it; stopping the lane ends
#    every session (and tells an attached client);
#  - lanectl shell --session under a real PTY: Ctrl-P Ctrl-Q detaches and
#    leaves the session running; lanectl shell ls / kill;
#  - a session (a running process, like any exec) keeps a lane with
#    --idle-timeout up even detached; killing it lets the lane idle out.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
need_cmd python3

test_tmpdir
PYTHONPATH="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH
cat >"$T/sess.py" <<'PY'
import base64, json, os, re, socket, struct, sys, time

SOCK = sys.argv[1]

from openapi_contract import http as _http
from wsclient import WS as _WS

def http(method, path):
    status, _, body = _http(SOCK, method, path, timeout=60)
    return status, (json.loads(body) if body.strip() else None)

def WS(path):
    return _WS(SOCK, path, timeout=90)

def sessions(lane):
    st, body = http("GET", f"/v1/lanes/{lane}/sessions")
    assert st == 200, (st, body)
    return {s["name"]: s for s in body["sessions"]}

def wait(cond, what, t=30):
    end = time.time() + t
    while not cond():
        if time.time() > end:
            raise SystemExit("timeout: " + what)
        time.sleep(0.2)

scenario, lane = sys.argv[2], sys.argv[3]
if scenario == "persist":
    ws = WS(f"/v1/lanes/{lane}/shell?session=work&rows=30&cols=100")
    assert ws.status == 101, ws.head
    m = ws.started()
    assert m["session"] == "work" and m["created"] is True, m
    # the PTY echoes what we type: expected output is computed, never typed
    ws.stdin("cd /tmp; export X=sess$((6*7)); sleep 1000 & echo mark-$((3*5))\n")
    ws.until("mark-15")
    ws.stdin("echo pid=$$\n")
    ws.until("pid=")
    while not re.search(rb"pid=(\d+)", ws.out):
        op, d = ws.frame()
        if op == 2: ws.out += d
    shell_pid = int(re.search(rb"pid=(\d+)", ws.out).group(1))
    s = sessions(lane)["work"]
    assert s["attached"] is True and s["pid"] == shell_pid, (s, shell_pid)
    ws.drop()
    wait(lambda: sessions(lane)["work"]["attached"] is False, "session still attached after its client left")
    # output made while nobody is attached lands in the replay ring
    st, _ = http("GET", f"/v1/lanes/{lane}/sessions")
    time.sleep(1)
    ws = WS(f"/v1/lanes/{lane}/shell?session=work")
    assert ws.status == 101, ws.head
    m = ws.started()
    assert m["created"] is False and m["replayed"] > 0, m
    op, d = ws.frame()
    assert op == 2 and b"mark-15" in d, ("no replay of earlier output", op, d[-300:])
    ws.out = b""
    ws.stdin("echo cwd=$(pwd) x=$X; jobs; echo done-$((1+1))\n")
    ws.until("done-2")
    assert b"cwd=/tmp x=sess42" in ws.out, ws.out
    assert re.search(rb"Running\s+sleep 1000", ws.out), ws.out
    # a second client is refused while one is attached
    other = WS(f"/v1/lanes/{lane}/shell?session=work")
    assert other.status == 409 and b"session_busy" in other.head.encode() + other.body, (other.head, other.body)
    # ... unless it takes over: the first one is told and closed
    other = WS(f"/v1/lanes/{lane}/shell?session=work&takeover=1")
    assert other.status == 101, other.head
    assert other.started()["created"] is False
    last, code = ws.until_close()
    assert last == {"type": "detached", "reason": "taken_over"} and code == 1000, (last, code)
    other.out = b""
    other.stdin("echo still-$X-$((2+3))\n")
    other.until("still-sess42-5")
    # the ring keeps the newest 64 KiB: 300 KB of output, then a marker
    other.stdin("head -c 300000 /dev/zero | tr '\\0' y; echo; echo tail-$((7*7))\n")
    other.until("tail-49")
    other.drop()
    wait(lambda: sessions(lane)["work"]["attached"] is False, "still attached")
    s = sessions(lane)["work"]
    assert s["buffered_bytes"] == 65536, s
    ws = WS(f"/v1/lanes/{lane}/shell?session=work")
    m = ws.started()
    op, d = ws.frame()
    assert op == 2 and len(d) == 65536 and b"tail-49" in d and b"mark-15" not in d, (len(d), d[-200:])
    # the shell exits: the session ends with it
    ws.stdin("exit 4\n")
    last, code = ws.until_close()
    assert last["type"] == "exit" and last["exit_code"] == 4 and code == 1000, (last, code)
    assert "work" not in sessions(lane)
    print(shell_pid)
elif scenario == "kill":
    ws = WS(f"/v1/lanes/{lane}/shell?session=k1")
    assert ws.status == 101 and ws.started()["created"] is True
    ws.stdin("echo ready-$((1+1))\n")
    ws.until("ready-2")
    st, _ = http("DELETE", f"/v1/lanes/{lane}/sessions/k1")
    assert st == 204, st
    last, code = ws.until_close()
    assert last == {"type": "detached", "reason": "killed"}, last
    assert "k1" not in sessions(lane)
    st, body = http("DELETE", f"/v1/lanes/{lane}/sessions/k1")
    assert st == 404 and body["error"]["code"] == "session_not_found" if isinstance(body.get("error"), dict) else st == 404, (st, body)
    ws = WS(f"/v1/lanes/{lane}/shell?session=bad/name")
    assert ws.status in (400, 404), ws.head
    ws = WS(f"/v1/lanes/{lane}/shell?session=.hidden")
    assert ws.status == 400, ws.head
    print("kill ok")
elif scenario == "open":
    # leave a session with an attached client, for the lane-stop check
    ws = WS(f"/v1/lanes/{lane}/shell?session=stopme")
    assert ws.status == 101 and ws.started()["created"] is True
    ws.stdin("echo up-$((4+4))\n")
    ws.until("up-8")
    sys.stdout.write("attached\n")
    sys.stdout.flush()
    last, code = ws.until_close()
    assert last["type"] == "error" and last["code"] == "session_ended" and code == 1011, (last, code)
    print("ended ok")
elif scenario == "idle":
    # a session is a running process: like any running exec it keeps a lane
    # with an idle timeout up, attached or not
    ws = WS(f"/v1/lanes/{lane}/shell?session=quiet")
    assert ws.status == 101 and ws.started()["created"] is True
    ws.stdin("echo up-$((9*9))\n")
    ws.until("up-81")
    ws.drop()
    time.sleep(14)
    st, body = http("GET", f"/v1/lanes/{lane}")
    assert st == 200 and body["state"] == "running", (body.get("state"), body.get("stop_reason"))
    assert "quiet" in sessions(lane)
    print("idle ok")
elif scenario == "pid":
    # create a session and print its shell's pid (from the list)
    ws = WS(f"/v1/lanes/{lane}/shell?session=lost")
    assert ws.status == 101 and ws.started()["created"] is True
    ws.stdin("echo up-$((1+6))\n")
    ws.until("up-7")
    print(sessions(lane)["lost"]["pid"])
    ws.drop()
elif scenario == "where":
    # reattach to session sys.argv[4] and print where its shell is
    ws = WS(f"/v1/lanes/{lane}/shell?session={sys.argv[4]}")
    assert ws.status == 101, ws.head
    m = ws.started()
    assert m["created"] is False, m
    ws.stdin("echo where=$(pwd)-$Q-$((3+4))\n")
    ws.until("-7")
    time.sleep(0.5)
    while True:  # the rest of the line
        ws.s.settimeout(1)
        try:
            op, d = ws.frame()
        except (socket.timeout, TimeoutError):
            break
        if op == 2: ws.out += d
    print(re.search(rb"where=(\S*)-7", ws.out).group(1).decode())
    ws.drop()
elif scenario == "list":
    print(json.dumps(sessions(lane)))
PY

lanes_start
lanes_image minimal
lc create ss --image minimal --disk 1 >/dev/null
lc boot ss >/dev/null

log "session keeps cwd/env/jobs across a dropped client; replay; busy/takeover; ring bound; exit ends it"
pid=$(python3 "$T/sess.py" "$LANES_SOCKET" persist ss) || fail "persist scenario"
# the shell exited with "exit 4"; its background sleep (its own process group) may live on
[ "$(lc exec ss -- sh -c "kill -0 $pid 2>/dev/null && echo alive || echo gone")" = gone ] ||
    fail "session shell $pid still running after exit"

log "DELETE kills a session; bad names"
python3 "$T/sess.py" "$LANES_SOCKET" kill ss || fail "kill scenario"

log "lanectl shell --session under a real PTY: detach keys, reattach, ls, kill"
python3 - "$LANES_BUILD/bin/lanectl" "$LANES_SOCKET" <<'EOF' || fail "lanectl shell --session"
import os, pty, sys, time, select, fcntl, termios, struct
lanectl, sock = sys.argv[1], sys.argv[2]
def start():
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(lanectl, [lanectl, "--socket", sock, "shell", "--session", "dev", "ss"])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    return pid, fd
out = b""
def until(fd, needle, t=90):
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
def wait_exit(pid, t=30):
    end = time.time() + t
    while time.time() < end:
        p, st = os.waitpid(pid, os.WNOHANG)
        if p:
            return st
        time.sleep(0.1)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise SystemExit("lanectl did not exit after the detach keys: %r" % out[-400:])
pid, fd = start()
until(fd, b"new session 'dev'")
os.write(fd, b"cd /etc; export Y=why$((2*21))\n")
# a lone Ctrl-P is passed on (with the next key): here it is erased by Ctrl-U
os.write(fd, b"\x10a\x15echo y=$Y\n")
until(fd, b"y=why42")
os.write(fd, b"\x10\x11")   # Ctrl-P Ctrl-Q: detach
st = wait_exit(pid)
assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0, st
out = b""
pid, fd = start()
until(fd, b"attached to session 'dev'")
until(fd, b"y=why42")          # replayed
os.write(fd, b"echo at=$(pwd)-$Y\n")
until(fd, b"at=/etc-why42")
os.write(fd, b"\x10\x11")
st = wait_exit(pid)
assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0, st
print("lanectl shell --session ok")
EOF
# without a terminal, the end of stdin detaches (the input was delivered)
printf 'cd /var; export Q=queue\n' | timeout 60 "$LANES_BUILD/bin/lanectl" --socket "$LANES_SOCKET" \
    shell --session piped ss >/dev/null || fail "piped lanectl shell --session"
w=$(python3 "$T/sess.py" "$LANES_SOCKET" where ss piped) || fail "where scenario"
[ "$w" = "/var-queue" ] || fail "piped input did not reach the session, or it did not persist: '$w'"
lc shell kill ss piped || fail "kill piped"
lc shell ls ss >"$T/ls.txt" || fail "shell ls"
grep -Eq '^NAME +PID +ATTACHED' "$T/ls.txt" || fail "shell ls header: $(cat "$T/ls.txt")"
grep -Eq '^dev +[0-9]+ +no ' "$T/ls.txt" || fail "shell ls row: $(cat "$T/ls.txt")"
lc shell ls ss --json | python3 -c '
import json, sys
s = json.load(sys.stdin)["sessions"]
assert [x["name"] for x in s] == ["dev"] and s[0]["attached"] is False and s[0]["pid"] > 1, s
' || fail "shell ls --json"
lc shell kill ss dev || fail "shell kill"
[ "$(python3 "$T/sess.py" "$LANES_SOCKET" list ss)" = "{}" ] || fail "dev still listed after kill"
expect_fail "no session 'dev'" lc shell kill ss dev

log "a lanesd restart ends the sessions (the agent ends its execs at the new handshake)"
spid=$(python3 "$T/sess.py" "$LANES_SOCKET" pid ss) || fail "pid scenario"
lanes_restart
wait_for 60 lane_state_is ss running || fail "lane not re-adopted after the restart"
shell_gone() { [ "$(lc exec ss -- sh -c "kill -0 $spid 2>/dev/null && echo alive || echo gone" 2>/dev/null)" = gone ]; }
wait_for 60 shell_gone || fail "session shell $spid outlived lanesd's restart"
[ "$(python3 "$T/sess.py" "$LANES_SOCKET" list ss)" = "{}" ] || fail "sessions listed after a restart"

log "stopping the lane ends its sessions (and tells an attached client)"
python3 "$T/sess.py" "$LANES_SOCKET" open ss >"$T/open.out" 2>&1 &
opener=$!
wait_for 90 _lib_has_line "$T/open.out" '^attached' || fail "open scenario: $(cat "$T/open.out")"
lc stop ss >/dev/null
wait "$opener" || fail "attached client at lane stop: $(cat "$T/open.out")"
grep -q "ended ok" "$T/open.out" || fail "open scenario: $(cat "$T/open.out")"
lc boot ss >/dev/null
[ "$(python3 "$T/sess.py" "$LANES_SOCKET" list ss)" = "{}" ] || fail "sessions survived a lane stop"

log "a detached session keeps a lane with --idle-timeout up; once killed the lane idles out"
lc create idl --image minimal --disk 1 --idle-timeout 6 >/dev/null
lc boot idl >/dev/null
python3 "$T/sess.py" "$LANES_SOCKET" idle idl || fail "idle scenario"
lc shell kill idl quiet || fail "kill quiet"
wait_for 60 lane_state_is idl stopped || fail "lane did not idle out after its session was killed: $(lane_state idl)"
log "ok"
