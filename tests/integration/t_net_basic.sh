#!/bin/sh
# t_net_basic — netmed with the issue's minimal policy (synthetic DNS):
# the CIDR rule and the intercepted host work; every other host, port,
# direct IP, private/metadata address and UDP datagram is refused; the audit
# log records each decision.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netlib.sh"
net_setup

cat >"$T/policy.json" <<'JSON'
{"dns": {"mode": "synthetic"},
 "allow": [{"cidr": "198.51.100.2/32", "ports": [8080]},
           {"host": "api.lanes.test", "ports": [443], "intercept": true}]}
JSON
# synthetic mode resolves upstream through the host resolver (H's resolv.conf)
net_start_netmed "$T/policy.json"
LANE_CA=$NETMED_CA/ca.crt
[ "$(stat -c %a "$NETMED_CA/ca.key")" = 600 ] || fail "CA key mode is not 0600"

# DNS: allowed name → a synthetic address; others → NXDOMAIN
a=$(guest python3 -c 'import socket; print(socket.gethostbyname("api.lanes.test"))') || fail "resolve api"
case $a in 198.18.*) log "ok: api.lanes.test → synthetic $a";; *) fail "api.lanes.test resolved to $a";; esac
expect_fail "other.lanes.test does not resolve" guest python3 -c 'import socket; socket.gethostbyname("other.lanes.test")'
audit_has '"ev":"dns","decision":"deny","name":"other.lanes.test"' || fail "DNS deny not audited"

# intercepted HTTPS with the lane CA, upstream verified against the test roots
expect_ok "https://api.lanes.test via interception" gcurl --cacert "$LANE_CA" https://api.lanes.test/hello
grep -q '"path": "/hello"' "$T/out" || fail "echo body missing"
grep -q '"local": "203.0.113.10:443"' "$T/out" || fail "request did not land on api's server"
# the guest sees netmed's leaf, not the server's: the test roots do not verify it
expect_fail "lane leaf is not the upstream cert" gcurl --cacert "$W/ca.crt" https://api.lanes.test/
# plain HTTP and other ports to the same host: no rule
expect_fail "api.lanes.test:80 (no rule)" gcurl http://api.lanes.test/
expect_fail "api.lanes.test:8080 (no rule)" gcurl http://api.lanes.test:8080/

# CIDR rule: exactly 198.51.100.2:8080
expect_ok "cidr 198.51.100.2:8080" gcurl http://198.51.100.2:8080/cidr
expect_fail "cidr rule, other port 80" gcurl http://198.51.100.2/
# direct IPs not obtained from DNS: only CIDR rules apply
expect_fail "direct IP of api (203.0.113.10:443)" gcurl -k https://203.0.113.10/
expect_fail "direct IP 203.0.113.11:80" gcurl http://203.0.113.11/
# private, metadata, gateway and the host's own address
expect_fail "private 10.99.0.1" gcurl http://10.99.0.1/
expect_fail "metadata 169.254.169.254" gcurl http://169.254.169.254/latest/meta-data/
expect_fail "host's own address 198.51.100.1" gcurl http://198.51.100.1:8080/
expect_fail "gateway 10.0.2.1" gcurl http://10.0.2.1/
expect_fail "synthetic address never handed out" gcurl http://198.18.0.200/

# UDP other than DNS: dropped in the lane netns
guest python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
for dst in (("203.0.113.10", 9), ("198.51.100.2", 9), ("198.51.100.53", 53)):
    s.sendto(b"lanes-udp-probe", dst)
    try:
        s.recvfrom(100); raise SystemExit("UDP answer from %s" % (dst,))
    except socket.timeout:
        pass
' || fail "UDP escaped the lane"
[ ! -s "$W/udp.log" ] || { cat "$W/udp.log"; fail "UDP datagram reached the internet"; }
grep -q lanes-udp "$T/zone.log" 2>/dev/null && fail "guest UDP reached the test DNS server"
log "ok: UDP dropped"

# nothing the guest was refused reached a server
if grep -E '"local": "(203.0.113.11|10.99.0.1|169.254.169.254|198.51.100.1)' "$W/requests.log"; then
    fail "a refused request reached a server"
fi
n=$(grep -c . "$W/requests.log")
[ "$n" = 2 ] || { cat "$W/requests.log"; fail "expected exactly 2 requests at the servers, got $n"; }

# audit: allow + deny decisions with host/address/port/rule/bytes
audit_has '"ev":"conn","decision":"allow".*"host":"api.lanes.test".*"port":443.*"rule":1.*"up":[1-9]' ||
    { cat "$NETMED_AUDIT"; fail "intercepted conn not audited with bytes"; }
audit_has '"ev":"conn","decision":"deny".*"addr":"169.254.169.254"' || fail "metadata deny not audited"
audit_has '"ev":"http","decision":"allow","host":"api.lanes.test".*"method":"GET","path":"/hello","status":200' ||
    fail "HTTP request not audited"
net_ctl stats | grep -q '"conns_denied":[1-9]' || fail "stats"
log "PASS"
