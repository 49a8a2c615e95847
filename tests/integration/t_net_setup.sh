#!/bin/sh
# t_net_setup — `netmed setup-netns` without the test veth: the lane netns
# gets a persistent TAP (tap0, IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) addressed as
# the gateway, the nft ruleset, TPROXY policy routing, IPv6 off;
# teardown-netns removes it all; a failed setup leaves nothing behind.
. "$(dirname "$0")/lib.sh"
need_root
need_cmd ip nft
NETMED=$LANES_BUILD/bin/netmed
[ -x "$NETMED" ] || skip "netmed not built"
[ -c /dev/net/tun ] || skip "/dev/net/tun missing"
NS=nmS$$
on_exit 'ip netns del "$NS" 2>/dev/null'
"$NETMED" setup-netns --guest-net 10.77.0.0/30 "$NS" || fail "setup-netns"
d=$(ip -n "$NS" -d link show tap0) || fail "no tap0"
echo "$d" | grep -q 'tun type tap' || { echo "$d"; fail "tap0 is not a TAP"; }
echo "$d" | grep -q 'pi off' || { echo "$d"; fail "tap0 has packet info"; }
echo "$d" | grep -q 'vnet_hdr on' || { echo "$d"; fail "tap0 has no vnet_hdr"; }
echo "$d" | grep -q 'persist on' || { echo "$d"; fail "tap0 not persistent"; }
ip -n "$NS" -4 addr show tap0 | grep -q 'inet 10.77.0.1/30' || fail "tap0 address"
ip -n "$NS" rule | grep -q 'fwmark 0x1 lookup 100' || fail "fwmark rule"
ip -n "$NS" route show table 100 | grep -q '^local default dev lo' || fail "local route table 100"
r=$(ip netns exec "$NS" nft list ruleset)
for want in 'tproxy ip to 127.0.0.1:15001 meta mark set 0x00000001 accept' 'policy drop' \
            'ip daddr 10.77.0.1 udp dport 53 accept' 'ip saddr != 10.77.0.2 drop'; do
    echo "$r" | grep -qF "$want" || { echo "$r"; fail "nft rule missing: $want"; }
done
[ "$(ip netns exec "$NS" cat /proc/sys/net/ipv6/conf/all/disable_ipv6)" = 1 ] || fail "IPv6 on"
[ "$(ip -n "$NS" route show default | wc -l)" = 0 ] || fail "the lane netns has a default route"
log "ok: lane netns set up"
"$NETMED" teardown-netns "$NS" || fail "teardown"
ip netns list | grep -qw "$NS" && fail "netns still there"
# a second setup with the same name fails and removes nothing it did not make
"$NETMED" setup-netns "$NS" >/dev/null || fail "setup again"
"$NETMED" setup-netns "$NS" 2>/dev/null && fail "duplicate setup succeeded"
ip -n "$NS" link show tap0 >/dev/null || fail "a failed duplicate setup removed the existing netns"
log "PASS"
