#!/bin/sh
# Contract: real answers match api/openapi.yaml. Drives one lane through
# the API's working paths (create, boot, exec buffered and streamed, files,
# archive, stat/list, logs, policy, secrets, audit, snapshots, restore,
# fork, sessions, stores, store gc/verify/stats, events, metrics, stop, rm)
# plus the usual client mistakes, and checks every answer with
# tests/integration/openapi_contract.py: documented status code, declared
# Content-Type, body valid against the response schema (each NDJSON line
# against the line schema). Spec and server drifting apart fails here.
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import yaml' 2>/dev/null || skip "python3-yaml not installed"

test_tmpdir
lanes_start
lanes_image minimal
PYTHONPATH="$(dirname "$0")" /usr/bin/python3 - "$LANES_ROOT/api/openapi.yaml" "$LANES_SOCKET" <<'PY'
import io, json, sys, tarfile, time
from openapi_contract import Spec, http

spec, sock = Spec(sys.argv[1]), sys.argv[2]
problems, checked = [], []

def call(method, template, url=None, body=None, ctype="application/json", expect=None, timeout=300):
    status, rtype, data = http(sock, method, url or template, body, ctype, timeout=timeout)
    checked.append("%s %s" % (method, template))
    problems.extend(spec.check(method, template, status, rtype, data))
    if expect is not None and status != expect:
        problems.append("%s %s: expected %d, got %d %r" % (method, url or template, expect, status, data[:300]))
    try:
        return status, json.loads(data) if rtype.startswith("application/json") else data
    except ValueError:
        return status, data

L = "/v1/lanes/{name}"
def lane(suffix="", name="ct"):
    return "/v1/lanes/%s%s" % (name, suffix)

call("GET", "/v1/health", expect=200)
call("GET", "/v1/images", expect=200)
call("GET", "/v1/stores", expect=200)
call("POST", "/v1/lanes", body={"name": "ct", "image": "minimal", "memory_mib": 256, "disk_gib": 1}, expect=201)
call("POST", "/v1/lanes", body={"name": "ct", "image": "minimal"}, expect=409)
call("POST", "/v1/lanes", body={"name": "Bad Name"}, expect=400)
call("POST", "/v1/lanes", body={"name": "ct2", "image": "no-such-image"}, expect=404)
call("GET", "/v1/lanes", expect=200)
call("GET", L, lane(), expect=200)
call("POST", L + "/exec", lane("/exec"), body={"argv": ["true"]}, expect=409)
call("POST", L + "/boot", lane("/boot"), expect=200)
call("GET", L, lane(), expect=200)

# exec: buffered, then streamed with stdin
call("POST", L + "/exec", lane("/exec"), body={"argv": ["sh", "-c", "echo out; echo err >&2; exit 3"]}, expect=200)
call("POST", L + "/exec", lane("/exec"), body={"argv": []}, expect=400)
st, x = call("POST", L + "/execs", lane("/execs"), body={"argv": ["cat"], "stdin": True}, expect=201)
xid = x.get("id") if isinstance(x, dict) else None
if xid:
    call("POST", L + "/execs/{id}/stdin", lane("/execs/%s/stdin" % xid), body=b"hello\n",
         ctype="application/octet-stream", expect=204)
    call("POST", L + "/execs/{id}/signal", lane("/execs/%s/signal" % xid), body={"signal": "TERM"}, expect=204)
    call("GET", L + "/execs/{id}/output", lane("/execs/%s/output" % xid), expect=200)
call("GET", L + "/execs/{id}/output", lane("/execs/nope/output"), expect=404)

# files, archive, stat, list
call("PUT", L + "/files", lane("/files?path=/root/f&mode=0600"), body=b"contents\n",
     ctype="application/octet-stream", expect=204)
call("GET", L + "/files", lane("/files?path=/root/f"), expect=200)
call("GET", L + "/files", lane("/files?path=/no/such"), expect=404)
call("GET", L + "/files", lane("/files?path=relative"), expect=400)
call("GET", L + "/files/stat", lane("/files/stat?path=/root/f"), expect=200)
call("GET", L + "/files/list", lane("/files/list?path=/root"), expect=200)
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    info = tarfile.TarInfo("d/x.txt"); data = b"x\n"; info.size = len(data)
    t.addfile(info, io.BytesIO(data))
call("PUT", L + "/archive", lane("/archive?path=/root/arch"), body=buf.getvalue(), ctype="application/x-tar",
     expect=204)
call("GET", L + "/archive", lane("/archive?path=/root/arch"), expect=200)
call("GET", L + "/logs", lane("/logs"), expect=200)

# network surface
call("GET", L + "/policy", lane("/policy"), expect=200)
call("PUT", L + "/policy", lane("/policy"), body={"allow": [{"cidr": "198.51.100.2/32", "ports": [8080]}]}, expect=200)
call("PUT", L + "/policy", lane("/policy"), body={"allow": "everything"}, expect=400)
call("PUT", L + "/secrets/{secret}", lane("/secrets/TOKEN"), body={"value": "s3cr3t-value-1234", "hosts": ["api.example.com"]},
     expect=200)
call("GET", L + "/secrets", lane("/secrets"), expect=200)
call("DELETE", L + "/secrets/{secret}", lane("/secrets/TOKEN"), expect=204)
call("GET", L + "/audit", lane("/audit"), expect=200)
call("GET", L + "/audit", lane("/audit?format=jsonl"), expect=200)
call("GET", L + "/audit", lane("/audit?limit=-1"), expect=400)
if spec.operation("get", L + "/approvals"):
    call("GET", L + "/approvals", lane("/approvals"), expect=200)

# sessions
if spec.operation("get", L + "/sessions"):
    call("GET", L + "/sessions", lane("/sessions"), expect=200)
    call("DELETE", L + "/sessions/{session}", lane("/sessions/none"), expect=404)

# snapshots, restore, fork
call("POST", L + "/snapshots", lane("/snapshots"), body={"name": "s1"}, expect=201)
call("POST", L + "/snapshots", lane("/snapshots"), body={"name": "s1"}, expect=409)
call("GET", L + "/snapshots", lane("/snapshots"), expect=200)
call("POST", L + "/fork", lane("/fork"), body={"name": "ct-fork", "snapshot": "s1"}, expect=201)
call("POST", L + "/fork", lane("/fork"), body={"name": "ct-fork2", "snapshot": "nope"}, expect=404)
call("GET", L, lane(name="ct-fork"), expect=200)
call("POST", L + "/snapshots/{snap}/restore", lane("/snapshots/s1/restore"), body={}, expect=409)
call("POST", L + "/stop", lane("/stop"), body={"timeout_s": 20}, expect=200)
call("POST", L + "/snapshots/{snap}/restore", lane("/snapshots/s1/restore"), body={}, expect=200)
call("DELETE", L + "/snapshots/{snap}", lane("/snapshots/nope"), expect=404)

# store
call("GET", "/v1/store/stats", expect=200)
call("POST", "/v1/store/verify", expect=200)
call("POST", "/v1/store/gc", body={"dry_run": True}, expect=200)

# events (bounded read of the replayed history), metrics
st, rtype, data = http(sock, "GET", "/v1/events?since=0&follow=false", timeout=5)
checked.append("GET /v1/events")
problems.extend(spec.check("GET", "/v1/events", st, rtype, data.rsplit(b"\n", 1)[0] if st == 200 else data))
st, text = call("GET", "/metrics", expect=200)
# store stats (measured by the GET /v1/store/stats above) and netmed bytes
import re
text = text.decode() if isinstance(text, bytes) else str(text)
m = dict(re.findall(r'^lanes_store_(logical|physical|unique)_bytes\{store="local"\} (\d+)$', text, re.M))
if not (int(m.get("logical", 0)) > 0 and int(m.get("physical", 0)) > 0 and int(m.get("unique", 0)) > 0):
    problems.append("metrics: store bytes missing or zero: %r" % m)
if not re.search(r'^lanes_store_dedup_ratio\{store="local"\} [0-9.]+$', text, re.M):
    problems.append("metrics: no lanes_store_dedup_ratio")

# teardown
call("DELETE", L, lane(name="ct-fork"), expect=204)
call("DELETE", "/v1/images/{name}", "/v1/images/minimal", expect=409)
call("DELETE", L, lane(), expect=204)
call("DELETE", L, lane(), expect=404)

print("checked %d answers" % len(checked))
if problems:
    print("\n".join(problems))
    sys.exit(1)
PY
log "ok"
