#!/bin/sh
# t_net_secrets_live — `lanectl secret set` on a running lane: lanesd writes
# the new secrets file and has the lane's netmed reload it over its control
# socket (no restart: same netmed pid), and answers only after the reload.
# A keep-alive HTTPS connection the guest opened before the change stays
# open and its next request carries the new value.
set -eu
. "$(dirname "$0")/lib.sh"
NET_NO_GUEST=1
. "$(dirname "$0")/netlib.sh"
. "$(dirname "$0")/lanes.sh"

net_setup
LANESD_WRAP="ip netns exec $NS_H" LANESD_ARGS="--upstream-ca-bundle $W/ca.crt" lanes_start
lanes_image debian
cat >"$T/policy.json" <<'JSON'
{"dns": {"mode": "synthetic"}, "allow": [{"host": "api.lanes.test", "ports": [443], "intercept": true}]}
JSON
lc create sl --image debian --disk 2 --policy "$T/policy.json" >/dev/null
lc boot sl >/dev/null
printf 'value-one-4b1c\n' | lc secret set sl TOKEN --hosts api.lanes.test >/dev/null || fail "secret set (boot)"
id=$(lc inspect sl | json_field id)
npid=$(pgrep -f -- "netmed --netns lanes-$id" | head -n1)
[ -n "$npid" ] || fail "no netmed for the lane"

# The guest: one connection, a request, wait for /tmp/go (made by a second
# exec after the change), a second request on the same connection.
: >"$W/requests.log"
lc exec sl -- python3 -c '
import http.client, os, time
c = http.client.HTTPSConnection("api.lanes.test", 443, timeout=30)
c.request("GET", "/one", headers={"Authorization": "Bearer " + os.environ["TOKEN"]})
r = c.getresponse(); r.read()
print("one", r.status, flush=True)
sock = c.sock
open("/tmp/ready", "w").close()
for _ in range(600):
    if os.path.exists("/tmp/go"):
        break
    time.sleep(0.1)
c.request("GET", "/two", headers={"Authorization": "Bearer " + os.environ["TOKEN"]})
r = c.getresponse(); r.read()
print("two", r.status, "same-connection" if c.sock is sock else "reconnected", flush=True)
' >"$T/guest.out" 2>&1 &
gpid=$!
wait_for 120 lc exec sl -- test -e /tmp/ready || { cat "$T/guest.out"; fail "the guest's first request did not finish"; }
printf 'value-two-9e7d\n' | lc secret set sl TOKEN --hosts api.lanes.test >/dev/null || fail "secret set (live)"
lc exec sl -- touch /tmp/go
wait "$gpid" || { cat "$T/guest.out"; fail "guest client failed"; }
grep -qx 'one 200' "$T/guest.out" || fail "first request: $(cat "$T/guest.out")"
grep -qx 'two 200 same-connection' "$T/guest.out" || fail "second request: $(cat "$T/guest.out")"
grep '"path": "/one"' "$W/requests.log" | grep -q 'Bearer value-one-4b1c"' || fail "first request without the first value"
grep '"path": "/two"' "$W/requests.log" | grep -q 'Bearer value-two-9e7d"' ||
    fail "the open connection did not get the new value: $(grep /two "$W/requests.log")"
kill -0 "$npid" 2>/dev/null && [ "$(pgrep -f -- "netmed --netns lanes-$id" | head -n1)" = "$npid" ] ||
    fail "netmed was restarted for a secret change"
grep -q '"ev":"secrets"' "$LANES_STATE/lanes/$id/audit.jsonl" || fail "no secrets reload in netmed's audit"
grep -q 'value-two' "$LANES_STATE/lanes/$id/audit.jsonl" "$T/guest.out" && fail "a secret value in the audit or the guest"
log "ok: live secret change kept the connection and the netmed, new value injected"

# removal: the old placeholder is no longer replaced, still the same netmed
ph=$(lc exec sl -- sh -c 'echo $TOKEN')
api DELETE /v1/lanes/sl/secrets/TOKEN >/dev/null
[ "$API_STATUS" = 204 ] || fail "secret delete: HTTP $API_STATUS"
: >"$W/requests.log"
lc exec sl -- curl -sS -o /dev/null --max-time 20 -H "Authorization: Bearer $ph" https://api.lanes.test/three ||
    fail "request after the removal"
grep '"path": "/three"' "$W/requests.log" | grep -q "Bearer $ph\"" || fail "after removal: $(cat "$W/requests.log")"
[ "$(pgrep -f -- "netmed --netns lanes-$id" | head -n1)" = "$npid" ] || fail "netmed was restarted for a secret removal"
log "ok: removal applied live"
log "PASS"
