#!/bin/sh
# t_net_approval — human approval of network connections, end to end with a
# real lane (debian image, real curl in the guest) behind netmed, on the
# test internet (netlib.sh). The policy says "ask" for api.lanes.test:80:
#  - the guest's curl blocks: nothing reaches the server while it waits;
#  - `lanectl events --json` shows approval.pending with an approval id at
#    once (inotify, not a poll); `lanectl approvals` lists it;
#  - approve → the same curl completes; deny → it fails and nothing reached
#    the server; no decision → denied after approvalTimeoutSeconds, audited
#    as a timeout; every decision is an approval.decided event and an audit
#    record saying who decided;
#  - approve --remember → the rule is in `lanectl policy get`, the next
#    connection goes straight through without asking, also after netmed is
#    killed and restarted by lanesd (it reads the stored policy);
#  - a direct-IP connection outside the policy is a policy.denied event;
#  - an approved ask+intercept HTTPS connection is intercepted and each of
#    its requests passes; a policy change releases a waiting connection;
#    a CIDR ask rule holds a literal address and remembers it as a /32;
#  - onUnmatched ask: an unlisted name resolves and asks; private
#    addresses are refused without asking;
#  - a read-only token may list approvals but not decide (403); bad
#    decisions are 400, unknown ids 404.
set -eu
. "$(dirname "$0")/lib.sh"
NET_NO_GUEST=1
. "$(dirname "$0")/netlib.sh"
. "$(dirname "$0")/lanes.sh"

net_setup
net_dump() {
    for f in "$LANES_STATE"/lanes/*/netmed.log "$LANES_STATE"/lanes/*/audit.jsonl; do
        [ -f "$f" ] && { echo "---- $f"; tail -n 15 "$f"; }
    done
    [ -f "$T/events.ndjson" ] && { echo "---- events"; tail -n 20 "$T/events.ndjson"; }
    return 0
}
on_exit net_dump
ADMIN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
RO=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf 'admin %s\nread-only %s\n' "$ADMIN" "$RO" >"$T/tokens"
chmod 600 "$T/tokens"
TCP_PORT=$((20000 + $$ % 20000))
LANESD_WRAP="ip netns exec $NS_H" \
    LANESD_ARGS="--upstream-ca-bundle $W/ca.crt --listen-tcp 127.0.0.1:$TCP_PORT --tokens $T/tokens" lanes_start
lanes_image debian

cat >"$T/policy.json" <<'JSON'
{"dns": {"mode": "synthetic"}, "approvalTimeoutSeconds": 6,
 "allow": [{"host": "api.lanes.test", "ports": [80], "action": "ask"},
           {"host": "other.lanes.test", "ports": [80]}]}
JSON
lc create web --image debian --disk 2 --policy "$T/policy.json" >/dev/null
lc boot web >/dev/null

"$LANES_BUILD/bin/lanectl" --socket "$LANES_SOCKET" events --json --lane web >"$T/events.ndjson" 2>"$T/events.err" &
EV_PID=$!
on_exit 'kill $EV_PID 2>/dev/null; true'
sleep 1

gcurl_bg() { # NAME PATH: guest curl in the background, its status in $T/NAME.rc
    rm -f "$T/$1.rc"
    (rc=0; lc exec web -- curl -sS --max-time 40 "http://api.lanes.test$2" >"$T/$1.out" 2>&1 || rc=$?; echo $rc >"$T/$1.rc") &
}
# pending_id N: the id of the N-th approval.pending event (waits for it;
# runs in $(...), so a failure is reported on stderr)
pending_id() {
    wait_for 30 sh -c "[ \$(grep -c '\"kind\":\"approval.pending\"' '$T/events.ndjson') -ge $1 ]" ||
        { fail "approval.pending #$1 never announced: $(cat "$T/events.ndjson" "$T/events.err")" >&2; }
    grep '"kind":"approval.pending"' "$T/events.ndjson" | sed -n "${1}p" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["approval_id"])'
}
decided_has() { # ID REGEX: the approval.decided event of ID matches
    wait_for 15 sh -c "grep '\"kind\":\"approval.decided\"' '$T/events.ndjson' | grep '\"approval_id\":\"$1\"' | grep -Eq '$2'" ||
        fail "no approval.decided for $1 matching '$2': $(grep approval.decided "$T/events.ndjson")"
}
audit_json() { api GET "/v1/lanes/web/audit?limit=100000"; }

log "ask → the connection waits; approve → the same connection completes"
: >"$W/requests.log"
gcurl_bg a /approved
id1=$(pending_id 1)
log "pending approval $id1"
lc approvals web >"$T/list" || fail "lanectl approvals"
grep -q "^$id1 *api.lanes.test " "$T/list" || fail "approvals table: $(cat "$T/list")"
lc approvals web --json | grep -Eq "\"id\": *\"$id1\"" || fail "approvals --json"
sleep 2
[ ! -f "$T/a.rc" ] || fail "curl finished before any decision: $(cat "$T/a.out")"
grep -q '/approved' "$W/requests.log" && fail "the request reached the server before approval"
t0=$(now)
lc approve web "$id1" >"$T/out" || fail "approve: $(cat "$T/out")"
grep -q "allowed api.lanes.test:80" "$T/out" || fail "approve output: $(cat "$T/out")"
wait_for 30 test -f "$T/a.rc" || fail "curl did not finish after approval"
[ "$(cat "$T/a.rc")" = 0 ] || fail "approved curl failed: $(cat "$T/a.out")"
log "approved connection completed $(elapsed "$t0") s after the decision"
grep -q '"path": "/approved"' "$T/a.out" || fail "approved body: $(cat "$T/a.out")"
decided_has "$id1" 'allowed by api'
lc approve web "$id1" >"$T/out" 2>&1 && fail "a decided approval was decided again"
grep -q 'no pending approval' "$T/out" || fail "second decision: $(cat "$T/out")"

log "deny → the connection fails, nothing reaches the server"
: >"$W/requests.log"
gcurl_bg d /denied
id2=$(pending_id 2)
[ "$id2" != "$id1" ] || fail "approval id reused"
lc deny web "$id2" >/dev/null || fail "deny"
wait_for 20 test -f "$T/d.rc" || fail "curl did not finish after deny: $(cat "$T/d.out")"
[ "$(cat "$T/d.rc")" != 0 ] || fail "denied curl succeeded: $(cat "$T/d.out")"
grep -q '/denied' "$W/requests.log" && fail "a denied request reached the server"
decided_has "$id2" 'denied by api'

log "no decision → denied at approvalTimeoutSeconds and audited as a timeout"
t0=$(now)
gcurl_bg t /timeout
id3=$(pending_id 3)
wait_for 30 test -f "$T/t.rc" || fail "curl still waiting long after the approval timeout"
waited=$(elapsed "$t0")
[ "$(cat "$T/t.rc")" != 0 ] || fail "timed-out curl succeeded"
awk -v w="$waited" 'BEGIN { exit !(w >= 5.5 && w < 25) }' || fail "timeout after ${waited}s (policy: 6 s)"
decided_has "$id3" 'timeout by timeout'
audit_json >"$T/audit"
python3 - "$T/audit" "$id1" "$id2" "$id3" <<'PY' || fail "audit of the decisions"
import json, sys
entries = json.load(open(sys.argv[1]))["entries"]
recs = entries
final = {r["approval_id"]: r for r in recs if r.get("ev") == "approval" and r.get("state") != "pending"}
want = {sys.argv[2]: ("allowed", "api"), sys.argv[3]: ("denied", "api"), sys.argv[4]: ("timeout", "timeout")}
for i, (st, by) in want.items():
    r = final.get(i)
    assert r and r["state"] == st and r["by"] == by, (i, r)
    assert r["host"] == "api.lanes.test" and r["port"] == 80, r
conns = [r for r in recs if r.get("ev") == "conn" and r.get("host") == "api.lanes.test"]
reasons = [r.get("reason") for r in conns]
assert "approval timed out" in reasons and "denied by approval" in reasons, reasons
assert any(r["decision"] == "allow" and r.get("reason") == "approved" for r in conns), conns
PY
log "ok: three decisions audited with who decided"

log "API: bad requests, read-only tokens"
api POST "/v1/lanes/web/approvals/$id1" -d '{"decision":"maybe"}' >"$T/r"
[ "$API_STATUS" = 400 ] || fail "bad decision: $API_STATUS $(cat "$T/r")"
api POST "/v1/lanes/web/approvals/00000000beef" -d '{"decision":"allow"}' >"$T/r"
[ "$API_STATUS" = 404 ] && grep -q approval_not_found "$T/r" || fail "unknown id: $API_STATUS $(cat "$T/r")"
api POST "/v1/lanes/web/approvals/NOT-HEX" -d '{"decision":"allow"}' >"$T/r"
[ "$API_STATUS" = 400 ] || fail "bad id: $API_STATUS"
tcp() { # TOKEN METHOD PATH [BODY]
    ip netns exec "$NS_H" curl -s -o "$T/tcp.out" -w '%{http_code}' -X "$2" -H "Authorization: Bearer $1" \
        ${4:+-d "$4"} "http://127.0.0.1:$TCP_PORT$3"
}
[ "$(tcp "$RO" GET /v1/lanes/web/approvals)" = 200 ] || fail "read-only token cannot list approvals"
[ "$(tcp "$RO" POST "/v1/lanes/web/approvals/$id1" '{"decision":"allow"}')" = 403 ] ||
    fail "read-only token may decide: $(cat "$T/tcp.out")"
[ "$(tcp "$ADMIN" POST "/v1/lanes/web/approvals/00000000beef" '{"decision":"allow"}')" = 404 ] ||
    fail "admin token decision on an unknown id"

log "approve --remember → stored rule, the next connection does not ask"
gcurl_bg r /remembered
id4=$(pending_id 4)
lc approve web "$id4" --remember >"$T/out" || fail "approve --remember: $(cat "$T/out")"
wait_for 30 test -f "$T/r.rc" || fail "curl did not finish after approval"
[ "$(cat "$T/r.rc")" = 0 ] || fail "remembered curl failed: $(cat "$T/r.out")"
decided_has "$id4" 'allowed by api \(remembered\)'
lc policy get web >"$T/pol"
python3 - "$T/pol" <<'PY' || fail "remembered rule not in the policy: $(cat "$T/pol")"
import json, sys
p = json.load(open(sys.argv[1]))
assert p["approvalTimeoutSeconds"] == 6
assert any(r.get("host") == "api.lanes.test" and r.get("ports") == [80] and r.get("action") == "allow"
           for r in p["allow"]), p
assert any(r.get("action") == "ask" for r in p["allow"]), p   # the ask rule stays
PY
n_pending=$(grep -c '"kind":"approval.pending"' "$T/events.ndjson")
t0=$(now)
lc exec web -- curl -sS --max-time 20 http://api.lanes.test/straight >"$T/out" 2>&1 ||
    fail "remembered host does not go straight through: $(cat "$T/out")"
log "remembered host answered in $(elapsed "$t0") s"
sleep 1
[ "$(grep -c '"kind":"approval.pending"' "$T/events.ndjson")" = "$n_pending" ] || fail "the remembered host asked again"

log "the remembered rule survives a netmed restart"
npid=$(pgrep -f -- "netmed --netns lanes-$(lc inspect web | json_field id)" | head -n1)
[ -n "$npid" ] || fail "no netmed process"
kill -KILL "$npid"
wait_for 20 sh -c "pgrep -f -- 'netmed --netns lanes-' | grep -vqx '$npid'" || fail "netmed not restarted"
wait_for 30 lc exec web -- curl -sS --max-time 5 http://api.lanes.test/after-restart >/dev/null ||
    fail "remembered host not reachable after netmed restart"
[ "$(grep -c '"kind":"approval.pending"' "$T/events.ndjson")" = "$n_pending" ] || fail "asked again after restart"

log "policy denials are events"
lc exec web -- curl -sS --max-time 5 http://203.0.113.11/ >/dev/null 2>&1 && fail "direct IP outside the policy reachable"
wait_for 10 grep -q '"kind":"policy.denied".*203.0.113.11:80' "$T/events.ndjson" ||
    fail "no policy.denied event: $(grep policy.denied "$T/events.ndjson")"

log "a deny --remember rule refuses at once, without asking"
cat >"$T/p2.json" <<'JSON'
{"dns": {"mode": "synthetic"}, "approvalTimeoutSeconds": 30,
 "allow": [{"host": "*.lanes.test", "ports": [80], "action": "ask"}]}
JSON
lc policy set web "$T/p2.json" >/dev/null || fail "policy set"
(rc=0; lc exec web -- curl -sS --max-time 40 http://other.lanes.test/x >"$T/o.out" 2>&1 || rc=$?; echo $rc >"$T/o.rc") &
id5=$(pending_id 5)
lc deny web "$id5" --remember >/dev/null || fail "deny --remember"
wait_for 20 test -f "$T/o.rc" || fail "curl did not finish after deny"
[ "$(cat "$T/o.rc")" != 0 ] || fail "denied curl succeeded"
lc policy get web | grep -Eq '"action": *"deny"' || fail "deny rule not remembered: $(lc policy get web)"
t0=$(now)
lc exec web -- curl -sS --max-time 20 http://other.lanes.test/y >/dev/null 2>&1 && fail "remembered deny let it through"
awk -v w="$(elapsed "$t0")" 'BEGIN { exit !(w < 10) }' || fail "remembered deny still waited"
[ "$(grep -c '"kind":"approval.pending"' "$T/events.ndjson")" = 5 ] || fail "remembered deny asked again"

log "ask + intercept: an approved HTTPS connection is intercepted and every request passes"
cat >"$T/p3.json" <<'JSON'
{"dns": {"mode": "synthetic"},
 "allow": [{"host": "api.lanes.test", "ports": [443], "action": "ask", "intercept": true},
           {"host": "other.lanes.test", "ports": [80], "action": "ask"},
           {"cidr": "203.0.113.11/32", "ports": [80], "action": "ask"}]}
JSON
lc policy set web "$T/p3.json" >/dev/null || fail "policy set p3"
: >"$W/requests.log"
(rc=0; lc exec web -- curl -sS --max-time 40 https://api.lanes.test/secure https://api.lanes.test/again \
    >"$T/s.out" 2>&1 || rc=$?; echo $rc >"$T/s.rc") &
id6=$(pending_id 6)
lc approve web "$id6" >/dev/null || fail "approve (intercept)"
wait_for 30 test -f "$T/s.rc" || fail "intercepted curl did not finish"
[ "$(cat "$T/s.rc")" = 0 ] || fail "approved intercepted HTTPS failed: $(cat "$T/s.out")"
grep -q '"path": "/again"' "$T/s.out" || fail "second request on the approved connection: $(cat "$T/s.out")"
audit_json | grep -q '"ev":"http","decision":"allow","host":"api.lanes.test","port":443' ||
    fail "approved connection was not intercepted"

log "a policy change answers a waiting connection"
(rc=0; lc exec web -- curl -sS --max-time 40 http://other.lanes.test/by-policy >"$T/b.out" 2>&1 || rc=$?
    echo $rc >"$T/b.rc") &
id7=$(pending_id 7)
python3 -c 'import json,sys; p=json.load(open(sys.argv[1])); p["allow"].append({"host":"other.lanes.test","ports":[80]}); json.dump(p,open(sys.argv[2],"w"))' \
    "$T/p3.json" "$T/p4.json"
lc policy set web "$T/p4.json" >/dev/null || fail "policy set p4"
wait_for 20 test -f "$T/b.rc" || fail "curl still waiting after the policy allowed it"
[ "$(cat "$T/b.rc")" = 0 ] || fail "curl released by the policy failed: $(cat "$T/b.out")"
decided_has "$id7" 'allowed by policy'

log "a CIDR ask rule: a literal address waits; --remember stores a /32 rule"
(rc=0; lc exec web -- curl -sS --max-time 40 http://203.0.113.11/literal >"$T/c.out" 2>&1 || rc=$?
    echo $rc >"$T/c.rc") &
id8=$(pending_id 8)
lc approvals web --json | grep -Eq '"host": *null' || fail "literal address approval has a host: $(lc approvals web --json)"
lc approve web "$id8" --remember >/dev/null || fail "approve --remember (cidr)"
wait_for 30 test -f "$T/c.rc" || fail "literal-address curl did not finish"
[ "$(cat "$T/c.rc")" = 0 ] || fail "approved literal-address curl failed: $(cat "$T/c.out")"
lc policy get web | grep -Eq '"cidr": *"203.0.113.11/32"' || fail "no /32 rule remembered: $(lc policy get web)"

log "onUnmatched ask: a name no rule mentions resolves and its connection asks; private addresses never ask"
echo '{"dns": {"mode": "synthetic"}, "onUnmatched": "ask", "approvalTimeoutSeconds": 30}' >"$T/p5.json"
lc policy set web "$T/p5.json" >/dev/null || fail "policy set p5"
(rc=0; lc exec web -- curl -sS --max-time 40 http://other.lanes.test/unlisted >"$T/u.out" 2>&1 || rc=$?
    echo $rc >"$T/u.rc") &
id9=$(pending_id 9)
lc approvals web | grep -q "^$id9 *other.lanes.test " || fail "unmatched approval: $(lc approvals web)"
lc approve web "$id9" >/dev/null || fail "approve (unmatched)"
wait_for 30 test -f "$T/u.rc" || fail "unmatched curl did not finish"
[ "$(cat "$T/u.rc")" = 0 ] || fail "approved unmatched curl failed: $(cat "$T/u.out")"
t0=$(now)
lc exec web -- curl -sS --max-time 20 http://10.99.0.1/ >/dev/null 2>&1 && fail "private address reachable"
awk -v w="$(elapsed "$t0")" 'BEGIN { exit !(w < 10) }' || fail "a private address waited for approval"
[ "$(grep -c '"kind":"approval.pending"' "$T/events.ndjson")" = 9 ] || fail "a private address asked"
log "PASS"
