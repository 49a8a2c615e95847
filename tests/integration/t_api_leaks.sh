#!/bin/sh
# 50 concurrent clients run 500 execs (10 each: buffered execs, streamed exec
# sessions, a few that time out or fail) against one real lane; afterwards
# lanesd has exactly as many open fds as before, its RSS grew by less than
# 4 MiB, and the guest runs as many processes as before (nothing leaked on
# either side). A warm-up round runs first so allocator high-water marks
# and lazily-opened files do not count as leaks.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
need_cmd python3

test_tmpdir
lanes_start
lanes_image minimal
lc create lk --image minimal --memory 256 --disk 1 >/dev/null
lc boot lk >/dev/null

cat >"$T/load.py" <<'PY'
import http.client, json, socket, sys, threading

SOCK, CLIENTS, PER = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

class Conn(http.client.HTTPConnection):
    def __init__(self):
        super().__init__("lanes", timeout=600)
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(600)
        self.sock.connect(SOCK)

errors = []
def req(c, method, path, body=None):
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, r.read()

def client(n):
    try:
        c = Conn()
        for i in range(PER):
            k = (n * PER + i) % 10
            if k < 6:
                st, b = req(c, "POST", "/v1/lanes/lk/exec", {"argv": ["echo", "c%d-%d" % (n, i)]})
                o = json.loads(b)
                assert st == 200 and o["stdout"] == "c%d-%d\n" % (n, i), (st, b)
            elif k < 8:
                st, b = req(c, "POST", "/v1/lanes/lk/execs", {"argv": ["sh", "-c", "echo s; echo e >&2"]})
                assert st in (200, 201), (st, b)
                sid = json.loads(b)["id"]
                st, b = req(c, "GET", "/v1/lanes/lk/execs/%s/output" % sid)
                assert st == 200 and b'"exit"' in b, (st, b)
            elif k == 8:
                st, b = req(c, "POST", "/v1/lanes/lk/exec", {"argv": ["sleep", "5"], "timeout_ms": 100})
                assert st == 200 and json.loads(b)["timed_out"], (st, b)
            else:
                st, b = req(c, "POST", "/v1/lanes/lk/exec", {"argv": ["/no/such/cmd"]})
                assert st >= 400 or json.loads(b).get("exit_code") not in (0, None), (st, b)
        c.close()
    except Exception as e:
        errors.append("client %d: %r" % (n, e))

ts = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
for t in ts: t.start()
for t in ts: t.join()
if errors:
    print("\n".join(errors[:5]), file=sys.stderr)
    sys.exit(1)
print("%d execs by %d clients ok" % (CLIENTS * PER, CLIENTS))
PY

fds() { ls "/proc/$LANESD_PID/fd" | wc -l; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$LANESD_PID/status"; }
# User-space processes only: kernel threads (empty cmdline, e.g. kworkers)
# come and go on their own and say nothing about leaked execs.
guest_procs() { lc exec lk -- sh -c 'n=0; for p in /proc/[0-9]*; do [ -s "$p/cmdline" ] && n=$((n+1)); done; echo $n'; }

log "warm-up"
python3 "$T/load.py" "$LANES_SOCKET" 10 5 || fail "warm-up load failed"
sleep 2
fd0=$(fds); rss0=$(rss); gp0=$(guest_procs)
log "before: lanesd fds $fd0, rss ${rss0} KiB, guest processes $gp0"
start=$(now)
python3 "$T/load.py" "$LANES_SOCKET" 50 10 || fail "load failed"
log "500 execs in $(elapsed "$start") s"
wait_for 20 sh -c "[ \$(ls /proc/$LANESD_PID/fd | wc -l) -le $fd0 ]" || true
sleep 2
fd1=$(fds); rss1=$(rss); gp1=$(guest_procs)
log "after:  lanesd fds $fd1, rss ${rss1} KiB, guest processes $gp1"
[ "$fd1" -eq "$fd0" ] || { ls -l "/proc/$LANESD_PID/fd" >&2; fail "lanesd fds $fd0 -> $fd1"; }
[ $((rss1 - rss0)) -lt 4096 ] || fail "lanesd RSS grew by $((rss1 - rss0)) KiB"
[ "$gp1" -eq "$gp0" ] || { lc exec lk -- ps >&2 || true; fail "guest processes $gp0 -> $gp1"; }
log "ok"
