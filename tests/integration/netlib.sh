# shellcheck shell=sh
# netlib.sh — a test "internet" for netmed (source after lib.sh; needs root).
#
#   net_setup            build the namespaces below, start DNS + web servers
#                        (NET_NO_GUEST=1: only H and I, for tests whose guest
#                        is a real lane: lanesd then runs inside H)
#   net_start_netmed POLICY [ARGS...]   start netmed in the host stand-in
#   net_stop_netmed      SIGTERM netmed and wait
#   guest CMD...         run CMD in the guest netns (resolver = netmed)
#   gcurl ARGS...        curl in the guest, short timeouts, no proxy env
#   net_ctl ARGS...      netmed ctl on this netmed's control socket
#   audit_has REGEX      the audit log has a line matching REGEX (grep -E)
#
# Topology (all names carry $$, removed at exit):
#
#   guest ns G            lane ns L               host stand-in ns H        internet ns I
#   eth0 10.0.2.2 ─veth─ tap0 10.0.2.1            h0 198.51.100.1 ─veth─   i0 198.51.100.2
#   (curl, python)        nft: TPROXY→netmed,     netmed runs here and     .53 DNS, 203.0.113.10/.11
#                         DNS→netmed, drop rest   dials from here          10.99.0.1, 169.254.169.254
#
# The veth "tap0" stands in for the TAP only because these tests run no VM
# (netmed setup-netns --veth-peer). H stands in for the host netns so tests
# never touch the real host's network; /etc/netns/H/resolv.conf is the
# "host resolver" (dns mode open). The web servers present certificates of
# a test CA that stands in for the public roots (--trust-bundle).
#
# Test names (zone served by the test DNS):
#   api.lanes.test   203.0.113.10     other.lanes.test  203.0.113.11
#   private.lanes.test 10.99.0.1      meta.lanes.test   169.254.169.254
#   flip.lanes.test  203.0.113.10 once, then 10.99.0.1 (rebinding)

NETMED=${NETMED:-$LANES_BUILD/bin/netmed}

net_setup() {
    need_root
    need_cmd ip nft curl python3 openssl
    [ -x "$NETMED" ] || skip "netmed not built ($NETMED)"
    test_tmpdir
    NS_G=nmG$$ NS_L=nmL$$ NS_H=nmH$$ NS_I=nmI$$
    export NS_G NS_L NS_H NS_I
    on_exit 'net_teardown'
    if [ "${NET_NO_GUEST:-0}" != 1 ]; then
        ip netns add "$NS_G" || fail "ip netns add"
    fi
    ip netns add "$NS_H" && ip netns add "$NS_I" || fail "ip netns add"
    ip link add h0 netns "$NS_H" type veth peer name i0 netns "$NS_I" || fail "veth h0/i0"
    ip -n "$NS_H" addr add 198.51.100.1/24 dev h0
    ip -n "$NS_I" addr add 198.51.100.2/24 dev i0
    for a in 198.51.100.53/32 203.0.113.10/32 203.0.113.11/32 10.99.0.1/32 169.254.169.254/32; do
        ip -n "$NS_I" addr add "$a" dev lo
    done
    for ns in "$NS_H" "$NS_I"; do ip -n "$ns" link set lo up; done
    ip -n "$NS_H" link set h0 up
    ip -n "$NS_I" link set i0 up
    ip -n "$NS_H" route add default via 198.51.100.2
    ip -n "$NS_I" route add default via 198.51.100.1
    mkdir -p "/etc/netns/$NS_H" "/etc/netns/$NS_G"
    echo "nameserver 198.51.100.53" >"/etc/netns/$NS_H/resolv.conf"
    echo "nameserver 10.0.2.1" >"/etc/netns/$NS_G/resolv.conf"
    # hosts files with only localhost, so the real host's entries never leak in
    printf '127.0.0.1 localhost\n' >"/etc/netns/$NS_H/hosts"
    printf '127.0.0.1 localhost\n' >"/etc/netns/$NS_G/hosts"

    if [ "${NET_NO_GUEST:-0}" != 1 ]; then
        "$NETMED" setup-netns --veth-peer "$NS_G" "$NS_L" >"$T/setup.log" 2>&1 ||
            { cat "$T/setup.log"; fail "netmed setup-netns"; }
    fi

    # test CA ("public roots") and one server certificate for every test name
    W=$T/web; mkdir -p "$W"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=lanes test root" -keyout "$W/ca.key" -out "$W/ca.crt" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null ||
        fail "test CA"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=api.lanes.test" \
        -keyout "$W/server.key" -out "$W/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:api.lanes.test,DNS:other.lanes.test,DNS:flip.lanes.test,DNS:private.lanes.test,DNS:meta.lanes.test\nextendedKeyUsage=serverAuth\n' >"$W/ext"
    openssl x509 -req -in "$W/server.csr" -CA "$W/ca.crt" -CAkey "$W/ca.key" -CAcreateserial \
        -days 2 -extfile "$W/ext" -out "$W/server.crt" 2>/dev/null || fail "server cert"
    cat >"$T/zone" <<ZONE
api.lanes.test 203.0.113.10
other.lanes.test 203.0.113.11
private.lanes.test 10.99.0.1
meta.lanes.test 169.254.169.254
flip.lanes.test 203.0.113.10,10.99.0.1
ZONE
    ip netns exec "$NS_I" python3 "$LANES_ROOT/tests/integration/netlib.py" dns 198.51.100.53 53 "$T/zone" \
        >"$T/dns.log" 2>&1 &
    NET_DNS_PID=$!
    ip netns exec "$NS_I" python3 "$LANES_ROOT/tests/integration/netlib.py" web "$W" >"$T/web.log" 2>&1 &
    NET_WEB_PID=$!
    # shellcheck disable=SC2016
    on_exit 'kill_wait $NET_WEB_PID 2; kill_wait $NET_DNS_PID 2'
    wait_for 20 ip netns exec "$NS_H" curl -s -o /dev/null --max-time 2 http://203.0.113.10/ready ||
        { cat "$T/web.log"; fail "test web server did not come up"; }
    rm -f "$W/requests.log"
    log "test internet up (netns $NS_G $NS_L $NS_H $NS_I)"
}

net_teardown() {
    [ -n "${NETMED_PID:-}" ] && kill_wait "$NETMED_PID" 3
    for ns in "$NS_G" "$NS_L" "$NS_H" "$NS_I"; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "/etc/netns/$NS_H" "/etc/netns/$NS_G"
}

# net_start_netmed POLICY_FILE [extra netmed args]
net_start_netmed() {
    _pol=$1; shift
    NETMED_AUDIT=$T/audit.jsonl NETMED_CTL=$T/netmed.sock NETMED_CA=$T/ca
    [ -f "$T/netmed.log" ] && cat "$T/netmed.log" >>"$T/netmed.old.log"
    : >"$T/netmed.log"
    ip netns exec "$NS_H" "$NETMED" --netns "$NS_L" --policy "$_pol" --ca-dir "$NETMED_CA" \
        --audit "$NETMED_AUDIT" --control "$NETMED_CTL" --trust-bundle "$W/ca.crt" "$@" \
        >>"$T/netmed.log" 2>&1 &
    NETMED_PID=$!
    wait_for_line "$T/netmed.log" 'netmed: ready' 20 || { cat "$T/netmed.log"; fail "netmed did not start"; }
}

net_stop_netmed() {
    kill_wait "$NETMED_PID" 5
    NETMED_PID=
}

guest() { ip netns exec "$NS_G" "$@"; }

gcurl() { ip netns exec "$NS_G" curl -sS --noproxy '*' --connect-timeout 5 --max-time 15 "$@"; }

net_ctl() { ip netns exec "$NS_H" "$NETMED" ctl "$NETMED_CTL" "$@"; }

audit_has() { grep -Eq -- "$1" "$NETMED_AUDIT"; }

# expect_fail DESC CMD...: CMD must fail
expect_fail() {
    _d=$1; shift
    if "$@" >"$T/out" 2>&1; then cat "$T/out"; fail "$_d: unexpectedly succeeded"; fi
    log "ok (refused): $_d"
}

expect_ok() {
    _d=$1; shift
    "$@" >"$T/out" 2>&1 || { cat "$T/out"; fail "$_d: failed"; }
    log "ok: $_d"
}
