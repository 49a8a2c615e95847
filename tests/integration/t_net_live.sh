#!/bin/sh
# t_net_live — live policy change through netmed's control socket, and the
# failure mode: netmed killed with SIGKILL leaves the lane with no network
# (not open) until a new netmed starts.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netlib.sh"
net_setup

cat >"$T/p1.json" <<'JSON'
{"dns": {"mode": "synthetic"}, "allow": [{"host": "api.lanes.test", "ports": [80]}]}
JSON
cat >"$T/p2.json" <<'JSON'
{"dns": {"mode": "synthetic"}, "allow": [{"host": "other.lanes.test", "ports": [80]},
                                       {"cidr": "203.0.113.0/24", "ports": [7]}]}
JSON
echo '{"allow": [{"host": "x", "ports": [0]}]}' >"$T/bad.json"
net_start_netmed "$T/p1.json"
expect_ok "p1: api.lanes.test" gcurl http://api.lanes.test/
expect_fail "p1: other.lanes.test" gcurl http://other.lanes.test/

# a bad policy is refused and the old one stays
expect_fail "policy-set of an invalid policy" net_ctl policy-set "$T/bad.json"
grep -q 'ports\[0\]' "$T/out" || { cat "$T/out"; fail "no reason for the invalid policy"; }
expect_ok "p1 still active" gcurl http://api.lanes.test/

# switch to p2 live
expect_ok "policy-set p2" net_ctl policy-set "$T/p2.json"
net_ctl policy-get | grep -q '"rules":2' || fail "policy-get after set"
expect_fail "p2: api.lanes.test now refused" gcurl http://api.lanes.test/
expect_ok "p2: other.lanes.test now allowed" gcurl http://other.lanes.test/
# raw TCP splice via the CIDR rule (echo server on port 7), half-close
printf 'splice-bytes' | guest python3 -c '
import socket, sys
s = socket.create_connection(("203.0.113.11", 7), timeout=10)
s.sendall(sys.stdin.buffer.read()); s.shutdown(socket.SHUT_WR)
out = b""
while True:
    b = s.recv(4096)
    if not b: break
    out += b
sys.exit(0 if out == b"splice-bytes" else "echo: %r" % out)
' || fail "raw TCP splice with half-close"
log "ok: raw TCP splice with half-close"
# bulk through the splice (past the bytes netmed copies before it splices
# a direction), both ways at once, half-close at the end, byte-exact
guest python3 -c '
import hashlib, os, socket, sys, threading
data = os.urandom(3 << 20)
s = socket.create_connection(("203.0.113.11", 7), timeout=20)
def send():
    for i in range(0, len(data), 65536):
        s.sendall(data[i:i + 65536])
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send); t.start()
h, n = hashlib.sha256(), 0
while True:
    b = s.recv(1 << 20)
    if not b: break
    h.update(b); n += len(b)
t.join()
sys.exit(0 if n == len(data) and h.digest() == hashlib.sha256(data).digest() else "echo: %d of %d bytes" % (n, len(data)))
' || fail "3 MiB echo through the splice"
log "ok: 3 MiB both ways through the splice, byte-exact"
audit_has '"ev":"policy","rules":2' || fail "policy change not audited"

# IPv6: the guest gets no route out (the lane netns has IPv6 off and
# drops every non-IPv4 packet; netmed's DNS answers AAAA with no data), so
# v6 connects fail at once instead of escaping or hanging.
if guest ip -6 route show | grep -Ev '^(fe80::|multicast|ff00::)' | grep -q .; then
    guest ip -6 route show; fail "guest has an IPv6 route out"
fi
expect_fail "IPv6 to a global address" guest python3 -c '
import socket; socket.create_connection(("2001:db8::10", 80), timeout=3)'
grep -Eq 'unreachable|Network is unreachable' "$T/out" || { cat "$T/out"; fail "IPv6 connect did not fail as unreachable"; }
expect_fail "IPv6 to the gateway link-local" guest python3 -c '
import socket; socket.create_connection(("fe80::1%eth0", 80), timeout=3)'
expect_fail "curl -6 to an allowed name" gcurl -6 --connect-timeout 3 http://other.lanes.test/
[ -z "$(ip -n "$NS_L" -6 addr show dev tap0)" ] || fail "tap0 has IPv6 addresses in the lane netns"
log "ok: IPv6 fails cleanly (no route, no AAAA, no v6 on tap0)"

# kill -9: the lane has no network, and it is not open either
kill -KILL "$NETMED_PID"; wait "$NETMED_PID" 2>/dev/null; NETMED_PID=
: >"$W/requests.log"
for url in http://other.lanes.test/ http://203.0.113.11/ http://198.51.100.2:8080/ http://10.99.0.1/; do
    expect_fail "netmed dead: $url" gcurl --connect-timeout 3 "$url"
done
expect_fail "netmed dead: DNS" guest python3 -c 'import socket; socket.gethostbyname("other.lanes.test")'
expect_fail "netmed dead: raw TCP to 203.0.113.11:7" guest python3 -c '
import socket; socket.create_connection(("203.0.113.11", 7), timeout=3)'
[ ! -s "$W/requests.log" ] || { cat "$W/requests.log"; fail "a request reached a server with netmed dead"; }
# the nft ruleset is still in place in the lane netns
ip netns exec "$NS_L" nft list ruleset | grep -q 'tproxy ip to 127.0.0.1:15001' || fail "tproxy rule gone"

# a restarted netmed (same CA dir) brings the lane back
net_start_netmed "$T/p1.json"
expect_ok "restarted netmed: api.lanes.test" gcurl http://api.lanes.test/

# Interception against an upstream that does not verify (netmed trusts
# another CA): netmed runs both handshakes at once, finishes the guest's and
# answers 502; nothing reaches the server. Then with the right roots: 200.
net_stop_netmed
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=unrelated root" \
    -keyout "$T/other.key" -out "$T/other.crt" 2>/dev/null || fail "unrelated CA"
cat >"$T/p3.json" <<'JSON'
{"dns": {"mode": "synthetic"}, "allow": [{"host": "api.lanes.test", "ports": [443], "intercept": true}]}
JSON
net_start_netmed "$T/p3.json" --trust-bundle "$T/other.crt"
: >"$W/requests.log"
code=$(gcurl --cacert "$NETMED_CA/ca.crt" -o "$T/b502" -w '%{http_code}' https://api.lanes.test/x) || true
[ "$code" = 502 ] || { cat "$T/b502"; fail "unverified upstream: HTTP $code (want 502)"; }
grep -q 'upstream certificate did not verify' "$T/b502" || fail "502 without the reason: $(cat "$T/b502")"
audit_has '"reason":"upstream certificate did not verify"' || fail "verify failure not audited"
[ ! -s "$W/requests.log" ] || fail "a request reached an unverified upstream"
net_stop_netmed
net_start_netmed "$T/p3.json"
expect_ok "verified upstream: intercepted HTTPS" gcurl --cacert "$NETMED_CA/ca.crt" https://api.lanes.test/y
log "ok: unverified upstream answered 502 after the guest's handshake"
log "PASS"
