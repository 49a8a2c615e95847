#!/bin/sh
# Contract: every route in api/openapi.yaml is served by lanesd. Each path
# and method is called with placeholder parameters: the answer must never be
# the router's own 404 (code "not_found") or 405 — a handler must have run
# (typically answering lane_not_found, invalid, or 200). Also checks that
# every error body has the documented {"error": {"code", "message"}} shape,
# and that the status and body of each answer are documented for the route
# (tests/integration/openapi_contract.py).
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import yaml' 2>/dev/null || skip "python3-yaml not installed"

test_tmpdir
lanes_start
PYTHONPATH="$(dirname "$0")" /usr/bin/python3 - "$LANES_ROOT/api/openapi.yaml" "$LANES_SOCKET" <<'PY'
import json, socket, sys, yaml
from openapi_contract import Spec

spec = yaml.safe_load(open(sys.argv[1]))
contract = Spec(sys.argv[1])
sock = sys.argv[2]

def call(method, url, body):
    """One request on its own connection; the server may answer a
    streaming-body route before reading the body and close: that is fine."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sock)
    req = "%s %s HTTP/1.1\r\nHost: lanes\r\nConnection: close\r\n" % (method, url)
    if body is not None:
        req += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    req = req.encode() + b"\r\n" + (body or b"")
    try:
        s.sendall(req)
    except (BrokenPipeError, ConnectionResetError):
        pass
    raw = b""
    try:
        while len(raw) < 1 << 20:
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
            if b"\r\n\r\n" in raw and b"application/x-ndjson" in raw.split(b"\r\n\r\n")[0]:
                break  # a stream (events): the head is enough
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    head, _, data = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    ctype = ""
    for l in lines[1:]:
        if l.lower().startswith("content-type:"):
            ctype = l.split(":", 1)[1].strip()
        if l.lower().startswith("transfer-encoding:") and "chunked" in l.lower():
            # de-chunk the first chunk (error bodies are small)
            size, _, rest = data.partition(b"\r\n")
            data = rest[:int(size or b"0", 16)] if size.strip() else b""
    return status, ctype, data

# Placeholders that exist nowhere, so handlers answer without side effects.
fill = {"name": "no-such-lane", "id": "x999999", "snap": "no-such-snap", "secret": "NO_SUCH",
        "image": "no-such-image"}
# Routes that stream or upgrade: a plain request still proves the route exists.
problems, checked = [], 0
for path, item in spec["paths"].items():
    for method in ("get", "post", "put", "delete", "patch"):
        if method not in item:
            continue
        url = path
        for k, v in fill.items():
            url = url.replace("{%s}" % k, v)
        if "{" in url:
            url = url.split("{")[0] + "no-such-thing"
        body = b"{}" if method in ("post", "put", "patch") else None
        status, ctype, data = call(method.upper(), url, body)
        checked += 1
        err = None
        if status >= 400 and ctype.startswith("application/json"):
            try:
                err = json.loads(data)["error"]
                assert isinstance(err["code"], str) and isinstance(err["message"], str)
            except Exception as e:
                problems.append("%s %s: error body not {error:{code,message}}: %r" % (method.upper(), path, data[:200]))
                continue
        if status == 405 or (status == 404 and err and err["code"] == "not_found"):
            problems.append("%s %s: not served (%d %s)" % (method.upper(), path, status, data[:120]))
            continue
        # The answer to a bad request must itself be documented (status,
        # content type, body schema); 400 for an empty {} body is generic.
        if not (status == 400 and body):
            problems.extend(contract.check(method, path, status, ctype, data))
print("checked %d routes" % checked)
if problems:
    print("\n".join(problems))
    sys.exit(1)
PY
log "ok"
