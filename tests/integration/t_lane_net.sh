#!/bin/sh
# A real lane behind netmed: lanesd (run inside a stand-in host namespace so
# nothing touches the real host network) gives each lane its own netns, TAP
# and netmed. The guest (curl and python3 in the debian image) reaches
# exactly what the policy grants; policy changes apply live; a secret's real
# value reaches only its host and never the guest; decisions are audited;
# netmed's death leaves the lane offline (never open) until lanesd restarts
# it; --network none gives no NIC at all.
set -eu
. "$(dirname "$0")/lib.sh"
NET_NO_GUEST=1
. "$(dirname "$0")/netlib.sh"
. "$(dirname "$0")/lanes.sh"

net_setup
# On failure, show what netmed saw (runs before the state dir is removed).
net_dump() {
    for f in "$LANES_STATE"/lanes/*/netmed.log "$LANES_STATE"/lanes/*/audit.jsonl; do
        [ -f "$f" ] && { echo "---- $f"; tail -n 15 "$f"; }
    done
    return 0
}
on_exit net_dump
LANESD_WRAP="ip netns exec $NS_H" LANESD_ARGS="--upstream-ca-bundle $W/ca.crt" lanes_start
lanes_image minimal
lanes_image debian

cat >"$T/policy.json" <<'JSON'
{"dns": {"mode": "synthetic"},
 "allow": [{"host": "api.lanes.test", "ports": [80]},
           {"host": "api.lanes.test", "ports": [443], "intercept": true}]}
JSON
lc create web --image debian --disk 2 --policy "$T/policy.json" >/dev/null
echo '{"allow": [' >"$T/broken.json"
expect_fail "not valid JSON" lc create broken --image debian --policy "$T/broken.json"
api POST /v1/lanes -d '{"name":"badpol","image":"minimal","policy":{"allow":[{"cidr":"not-a-cidr"}]}}' >"$T/r"
[ "$API_STATUS" = 400 ] || fail "invalid policy accepted: $API_STATUS $(cat "$T/r")"
grep -q invalid_policy "$T/r" || fail "invalid policy error code: $(cat "$T/r")"

lc boot web >/dev/null
[ "$(lc inspect web | json_field network)" = mediated ] || fail "network not mediated"

gwget() { lc exec web -- curl -sS --max-time 10 "$@"; }

log "allowed host over plain HTTP"
gwget http://api.lanes.test/ready >"$T/out" || fail "allowed HTTP request failed"
grep -q '"path": "/ready"' "$T/out" || fail "unexpected body: $(cat "$T/out")"

log "denied: other host, other port, direct private IP, metadata"
lc exec web -- getent hosts other.lanes.test >/dev/null 2>&1 && fail "a name outside the policy resolved"
lc exec web -- getent hosts api.lanes.test >/dev/null || fail "the allowed name does not resolve"
if gwget http://api.lanes.test:8080/ >/dev/null 2>&1; then fail "port outside the policy reachable"; fi
if gwget http://203.0.113.11/ >/dev/null 2>&1; then fail "direct IP outside the policy reachable"; fi
if gwget http://169.254.169.254/ >/dev/null 2>&1; then fail "metadata address reachable"; fi

log "intercepted HTTPS with the lane CA, and a secret that only its host sees"
printf 'real-token-4f2a9c\n' | lc secret set web API_TOKEN --hosts api.lanes.test >"$T/r" || fail "secret set"
grep -q 'real-token' "$T/r" && fail "lanectl echoed a secret value"
lc secret ls web | grep -q '^API_TOKEN ' || fail "secret ls: $(lc secret ls web)"
api GET /v1/lanes/web/secrets >"$T/r"
grep -q 'real-token' "$T/r" && fail "the secrets listing shows a value"
ph=$(lc exec web -- sh -c 'echo $API_TOKEN')
case "$ph" in lanes-secret-API_TOKEN-*) ;; *) fail "guest env has no placeholder: '$ph'";; esac
: >"$W/requests.log"
lc exec web -- sh -c 'curl -sS --max-time 10 -H "Authorization: Bearer $API_TOKEN" https://api.lanes.test/echo' >"$T/out" \
    || fail "intercepted HTTPS request failed (is the lane CA trusted in the guest?)"
log "python trusts the lane CA through REQUESTS_CA_BUNDLE/SSL_CERT_FILE too"
lc exec web -- python3 -c 'import urllib.request; print(urllib.request.urlopen("https://api.lanes.test/py", timeout=10).status)' \
    | grep -qx 200 || fail "python HTTPS through the lane CA failed"
grep -q 'Bearer real-token-4f2a9c' "$W/requests.log" || fail "upstream did not receive the real value: $(cat "$W/requests.log")"
grep -q 'real-token-4f2a9c' "$T/out" && fail "the real value reached the guest through the echo"
lc exec web -- grep -rq 'real-token' /etc /root /tmp 2>/dev/null && fail "real value on the guest disk"
log "the placeholder over plain HTTP is blocked"
: >"$W/requests.log"
if lc exec web -- sh -c 'curl -sS -f --max-time 10 -H "Authorization: Bearer $API_TOKEN" http://api.lanes.test/x' >/dev/null 2>&1; then
    fail "placeholder over plain HTTP was forwarded"
fi
grep -q 'lanes-secret' "$W/requests.log" && fail "placeholder reached the server over plain HTTP"

log "live policy change: open port 8080 without a reboot"
qpid=$(lane_qemu_pid web)
python3 - "$T/policy.json" >"$T/policy2.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
p["allow"].append({"host": "api.lanes.test", "ports": [8080]})
print(json.dumps(p))
PY
lc policy set web "$T/policy2.json" >/dev/null || fail "policy set"
lc policy get web | grep -q 8080 || fail "policy get does not show the change"
gwget http://api.lanes.test:8080/ready >/dev/null || fail "port 8080 not open after the live change"
[ "$(lane_qemu_pid web)" = "$qpid" ] || fail "the lane rebooted for a policy change"
api PUT /v1/lanes/web/policy -d '{"allow":[{"cidr":"bogus"}]}' >"$T/r"
[ "$API_STATUS" = 400 ] || fail "bad live policy accepted: $API_STATUS"
gwget http://api.lanes.test:8080/ready >/dev/null || fail "a rejected policy changed the running one"

log "audit"
lc audit web >"$T/audit.txt"
grep -q 'deny' "$T/audit.txt" || fail "lanectl audit shows no denial: $(head "$T/audit.txt")"
grep -q 'real-token' "$T/audit.txt" && fail "secret value in lanectl audit"
api GET /v1/lanes/web/audit >"$T/audit"
python3 - "$T/audit" <<'PY' || fail "audit content: $(head -c 2000 "$T/audit")"
import json, sys
e = json.load(open(sys.argv[1]))["entries"]
assert any(x.get("ev") == "conn" and x.get("decision") == "allow" for x in e), "no allowed connection"
assert any(x.get("decision") == "deny" for x in e), "no denial"
assert any(x.get("ev") == "http" and "API_TOKEN" in json.dumps(x.get("secrets")) for x in e), "no secret use"
assert "real-token" not in json.dumps(e), "secret value in the audit log"
PY
log "audit filters and JSONL export"
api GET '/v1/lanes/web/audit?decision=deny' >"$T/deny.json"
api GET '/v1/lanes/web/audit?kind=http&host=*.lanes.test' >"$T/http.json"
api GET "/v1/lanes/web/audit?until=$(( $(date +%s) * 1000 - 3600000 ))" >"$T/old.json"
python3 - "$T/audit" "$T/deny.json" "$T/http.json" "$T/old.json" <<'PY' || fail "audit filters: $(head -c 1500 "$T/deny.json" "$T/http.json")"
import json, sys
allv, deny, http, old = (json.load(open(p))["entries"] for p in sys.argv[1:])
assert deny and all(x.get("decision") == "deny" for x in deny), "decision filter"
assert len(deny) == sum(1 for x in allv if x.get("decision") == "deny"), "decision filter dropped entries"
assert http and all(x.get("ev") == "http" and x.get("host", "").endswith(".lanes.test") for x in http), "kind/host filter"
assert old == [], "until filter: entries recorded an hour before the lane existed"
PY
lc audit web --jsonl --kind conn >"$T/conn.jsonl"
python3 -c 'import json,sys; l=[json.loads(x) for x in open(sys.argv[1])]; assert l and all(x["ev"]=="conn" for x in l)' \
    "$T/conn.jsonl" || fail "lanectl audit --jsonl --kind conn: $(head -c 500 "$T/conn.jsonl")"
[ "$(lc audit web --decision deny --since 1h | grep -c deny)" -ge 1 ] || fail "lanectl audit --decision deny --since 1h"
expect_fail "limit" lc audit web --limit 0
for q in 'host=a%20b' 'since=yesterday' 'limit=0' 'kind=%27x' 'format=xml'; do
    api GET "/v1/lanes/web/audit?$q" >"$T/bad.json"
    [ "$API_STATUS" = 400 ] && grep -q '"invalid"' "$T/bad.json" || fail "audit?$q: $API_STATUS $(cat "$T/bad.json")"
done

log "metrics: bytes through netmed"
api GET /metrics >"$T/metrics"
python3 - "$T/metrics" <<'PY' || fail "netmed bytes metric: $(grep netmed "$T/metrics")"
import re, sys
m = dict(re.findall(r'^lanes_netmed_bytes_total\{lane="web",direction="(up|down)"\} (\d+)$', open(sys.argv[1]).read(), re.M))
assert int(m.get("up", 0)) > 0 and int(m.get("down", 0)) > 1000, m
PY

log "netmed killed: the lane is offline, not open, until lanesd restarts it"
npid=$(pgrep -f -- "netmed --netns lanes-$(lc inspect web | json_field id)" | head -n1)
[ -n "$npid" ] || fail "no netmed process"
kill -KILL "$npid"
wait_for 15 sh -c "pgrep -f -- 'netmed --netns lanes-' | grep -vqx '$npid'" || fail "netmed not restarted"
wait_for 20 gwget http://api.lanes.test/ready >/dev/null || fail "network did not come back after netmed restart"
[ "$(lane_state web)" = running ] || fail "lane state after netmed death: $(lane_state web)"

log "--network none: no NIC at all"
api POST /v1/lanes -d '{"name":"offline","image":"minimal","disk_gib":1,"network":"none"}' >/dev/null
lc boot offline >/dev/null
lc exec offline -- sh -c 'ls /sys/class/net' >"$T/ifs"
[ "$(cat "$T/ifs")" = lo ] || fail "--network none lane has interfaces: $(cat "$T/ifs")"

log "stop removes the lane's namespace and netmed"
id=$(lc inspect web | json_field id)
lc stop web >/dev/null
[ -e "/run/netns/lanes-$id" ] && fail "lane netns left after stop"
pgrep -f -- "netmed --netns lanes-$id" >/dev/null && fail "netmed left after stop"
log "ok"
