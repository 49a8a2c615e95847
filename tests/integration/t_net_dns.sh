#!/bin/sh
# t_net_dns — netmed's DNS modes and the rebinding guard.
#   synthetic: allowed names get 198.18/16 addresses; the connection's name
#              comes from that mapping; upstream re-resolution at dial time.
#   trusted:   names resolve via the configured server only, real addresses.
#   open:      the host resolver (H's resolv.conf) answers.
# In every mode, names outside the policy fail, a name that flips to a
# private address between lookups is refused at dial time, and names that
# resolve to private/metadata addresses are never dialled (unless the rule
# says allowPrivate).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netlib.sh"
net_setup

resolve() { guest python3 -c 'import socket,sys; print(socket.gethostbyname(sys.argv[1]))' "$1"; }

policy() { # MODE [servers-json]
    _srv=
    [ -n "${2:-}" ] && _srv=", \"servers\": $2"
    cat >"$T/p-$1.json" <<JSON
{"dns": {"mode": "$1"$_srv},
 "allow": [{"host": "*.lanes.test", "ports": [80]},
           {"host": "private.lanes.test", "ports": [8080], "allowPrivate": true}]}
JSON
    echo "$T/p-$1.json"
}

for mode in synthetic trusted open; do
    servers=
    [ $mode = trusted ] && servers='["198.51.100.53"]'
    net_start_netmed "$(policy $mode "$servers")"
    # a fresh rebinding name per mode: first answer public, then private
    a=$(resolve api.lanes.test) || fail "$mode: resolve api"
    case $mode:$a in
        synthetic:198.18.*|trusted:203.0.113.10|open:203.0.113.10) log "ok: $mode: api.lanes.test → $a";;
        *) fail "$mode: api.lanes.test → $a";;
    esac
    expect_ok "$mode: GET api.lanes.test" gcurl http://api.lanes.test/
    grep -q '"local": "203.0.113.10:80"' "$T/out" || fail "$mode: wrong server"
    expect_fail "$mode: name outside policy" resolve example.com
    expect_fail "$mode: *.lanes.test does not cover the apex" resolve lanes.test
    # private and metadata names: never dialled without allowPrivate
    expect_fail "$mode: private.lanes.test:80" gcurl http://private.lanes.test/
    expect_fail "$mode: meta.lanes.test:80" gcurl http://meta.lanes.test/
    # ... and allowPrivate on an explicit host rule does open it
    expect_ok "$mode: private.lanes.test:8080 with allowPrivate" gcurl http://private.lanes.test:8080/
    grep -q '"local": "10.99.0.1:8080"' "$T/out" || fail "$mode: allowPrivate did not reach 10.99.0.1"
    net_stop_netmed
    # restart the zone's flip counter: the next lookup of flip is public again
    : >"$T/zone.log"
done

# Rebinding: flip.lanes.test answers 203.0.113.10 once, then 10.99.0.1.
restart_dns() {
    kill_wait "$NET_DNS_PID" 2
    ip netns exec "$NS_I" python3 "$LANES_ROOT/tests/integration/netlib.py" dns 198.51.100.53 53 "$T/zone" \
        >>"$T/dns.log" 2>&1 &
    NET_DNS_PID=$!
    sleep 0.5
}
# synthetic: the guest only ever holds a synthetic address; every dial
# re-resolves: the first connection reaches the public address, the next
# one (name now private) is refused.
restart_dns
net_start_netmed "$(policy synthetic)"
expect_ok "rebinding/synthetic: first dial (public)" gcurl http://flip.lanes.test/
expect_fail "rebinding/synthetic: second dial (now 10.99.0.1)" gcurl http://flip.lanes.test/
net_stop_netmed
# trusted: the guest got the public address from netmed's DNS and connects
# to it without asking again; netmed's dial-time lookup sees the flip.
restart_dns
net_start_netmed "$(policy trusted '["198.51.100.53"]')"
a=$(resolve flip.lanes.test) || fail "rebinding: first lookup"
[ "$a" = 203.0.113.10 ] || fail "rebinding: first answer $a"
expect_fail "rebinding/trusted: dial-time re-resolution gives 10.99.0.1" \
    gcurl --resolve "flip.lanes.test:80:$a" http://flip.lanes.test/
audit_has '"host":"flip.lanes.test".*"reason":"name resolves only to blocked addresses \(rebinding guard\)"' ||
    { grep flip "$NETMED_AUDIT"; fail "rebinding refusal not audited"; }
n=$(grep -c '"local": "10.99.0.1:80"' "$W/requests.log")
[ "$n" = 0 ] || fail "rebinding reached the private server"
log "PASS"
