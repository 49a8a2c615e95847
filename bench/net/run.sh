#!/bin/bash
# bench/net/run.sh — the network table: a guest talking to a test server
# through netmed, against the same guest (same TAP, same server, samples
# interleaved) talking to that server over a plain routed path without
# netmed.
#
#   bench/net/run.sh [BUILD_DIR]          (default: build; needs root)
#
# Setup: tests/integration/netlib.sh builds the test internet (netns H, the
# host stand-in lanesd and netmed run in; netns I with the test DNS, a test
# CA and servers; a stand-in guest netns G behind a lane netns L);
# bench/net/server.py adds a plain TCP source/sink/echo (port 5001) and an
# HTTPS bulk server (port 5443, the test CA's certificate) in I. The policy
# allows 203.0.113.10:5001 (CIDR rule: netmed splices) and
# api.lanes.test:5443 with interception (netmed terminates TLS with the lane
# CA and verifies the server against the test CA).
# Unmediated path: a veth from the lane netns into I (192.0.2.1 <-> server
# 192.0.2.10), two nft accept rules inserted before the TPROXY rule and
# forwarding on in the lane netns: the guest's packets to 192.0.2.10 are
# routed by the kernel and never reach netmed (checked in netmed's audit).
#
# Two phases, each with both contenders in ABBA order per round:
#   1. netmed alone: the netns stand-in guest G (host python3 on both ends,
#      no emulator) — netmed's own cost; rows net_host_*.
#   2. the lane: a debian lane booted by lanesd (its netmed, its TAP, its
#      lane netns) — rows net_*:
#   net_tcp_download / net_tcp_upload      ms per MiB (1000 / MB/s), target
#                                          1.25x (= throughput >= 0.8x)
#   net_https_download / net_https_upload  intercepted vs direct TLS to the
#                                          same server, target 2.0x (>= 0.5x)
#   net_tcp_connect_p50                    connect() to the server's first
#                                          byte, target "netmed adds < 1 ms"
#                                          (info if the guest clock is
#                                          jiffies-based: 4 ms steps); also
#                                          on net_host_tcp_connect_p50
#   net_https_connect_p50                  new connection + TLS + GET (info)
# docs/bench.md ("Network") explains the rows.
#
# Environment: BENCH_NET_ROUNDS (8), BENCH_NET_MIB (MiB per bulk sample, 12),
# BENCH_NET_CONNS (connections per latency sample, 30), and for phase 1
# BENCH_NET_HOST_ROUNDS (6), BENCH_NET_HOST_MIB (256), BENCH_NET_HOST_CONNS
# (150; 0 rounds skips phase 1); LANES_CACHE. Writes BUILD_DIR/bench/net-results.json.
#
# Process hygiene: every process started here is tracked by pid; the lane is
# stopped through lanectl, and its QEMU/nbdkit/netmed (found by our state
# dir on their command lines) are killed by pid if they outlive that.
set -eu
umask 022

ROOT=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
export LANES_ROOT=$ROOT LANES_BUILD=$BUILD
export LANES_CACHE=${LANES_CACHE:-$HOME/.cache/lanes}
ROUNDS=${BENCH_NET_ROUNDS:-8}
MIB=${BENCH_NET_MIB:-12}
CONNS=${BENCH_NET_CONNS:-30}
HOST_ROUNDS=${BENCH_NET_HOST_ROUNDS:-6}
HOST_MIB=${BENCH_NET_HOST_MIB:-256}
HOST_CONNS=${BENCH_NET_HOST_CONNS:-150}
OUT=$BUILD/bench
BYPASS_IP=192.0.2.10
TCP_PORT=5001
TLS_PORT=5443

# shellcheck source=../../tests/integration/lib.sh
. "$ROOT/tests/integration/lib.sh"
# shellcheck source=../../tests/integration/netlib.sh
. "$ROOT/tests/integration/netlib.sh"

for p in lanesd lanectl lane-init netmed nbdkit-laneslocal-plugin.so; do
    [ -e "$BUILD/bin/$p" ] || fail "$BUILD/bin/$p missing (build first)"
done
need_cmd qemu-system-x86_64 nbdkit nft ip python3 sysctl nsenter
mkdir -p "$OUT"

net_setup          # $T, $W (test CA), netns $NS_G $NS_L $NS_H $NS_I, netmed helpers
STATE=$T/state
SOCK=$STATE/lanesd.sock
ROWS=$T/rows.jsonl
: >"$ROWS"
LANESD_PID="" SERVER_PID="" LANE_ID=""
lc() { "$BUILD/bin/lanectl" --socket "$SOCK" "$@"; }

lane_pids() { # processes whose command line names our state dir
    local f pid
    for f in /proc/[0-9]*/cmdline; do
        pid=${f#/proc/}; pid=${pid%/cmdline}
        [ "$pid" = $$ ] && continue
        if tr '\0' ' ' 2>/dev/null <"$f" | grep -q -- "$STATE/lanes/"; then echo "$pid"; fi
    done
}
bench_cleanup() {
    set +e
    if [ -n "$LANESD_PID" ]; then
        lc stop bn --timeout 5 >/dev/null 2>&1
        [ -n "$LANE_ID" ] && nsenter -t "$LANESD_PID" -m -- ip netns del "lanes-$LANE_ID" 2>/dev/null
        for p in $(lane_pids); do kill -KILL "$p" 2>/dev/null; done
        kill_wait "$LANESD_PID" 5
    fi
    [ -n "$SERVER_PID" ] && kill_wait "$SERVER_PID" 2
    mkdir -p "$OUT/logs"
    cp -f "$STATE/lanesd.log" "$OUT/logs/net-lanesd.log" 2>/dev/null
    cp -f "$STATE"/lanes/*/netmed.log "$OUT/logs/net-netmed.log" 2>/dev/null
    return 0
}
on_exit bench_cleanup

log "bench servers in the internet netns"
ip netns exec "$NS_I" python3 "$ROOT/bench/net/server.py" "$TCP_PORT" "$TLS_PORT" \
    "$W/server.crt" "$W/server.key" >"$T/server.log" 2>&1 &
SERVER_PID=$!
wait_for_line "$T/server.log" 'bench servers up' 20 || fail "bench servers: $(cat "$T/server.log")"
cat >"$T/policy.json" <<JSON
{"dns": {"mode": "synthetic"},
 "allow": [{"cidr": "203.0.113.10/32", "ports": [$TCP_PORT]},
           {"host": "api.lanes.test", "ports": [$TLS_PORT], "intercept": true}]}
JSON

# bypass_add RUN NETNS IF_LANE IF_NET: the unmediated path. A veth from the
# lane netns NETNS into the internet netns (lane side 192.0.2.1, server
# $BYPASS_IP), forwarding on, and accept rules for it inserted before the
# TPROXY rule. RUN prefixes commands that must see NETNS by name.
bypass_add() {
    local run=$1 ns=$2 il=$3 ii=$4 gnet
    gnet=$($run ip -n "$ns" -4 -o addr show dev tap0 | awk '{print $4}' |
           python3 -c 'import ipaddress,sys; print(ipaddress.ip_interface(sys.stdin.read().strip()).network)')
    $run ip link add "$il" netns "$ns" type veth peer name "$ii" netns "$NS_I"
    $run ip -n "$ns" addr add 192.0.2.1/24 dev "$il"
    ip -n "$NS_I" addr add "$BYPASS_IP/24" dev "$ii"
    $run ip -n "$ns" link set "$il" up
    ip -n "$NS_I" link set "$ii" up
    ip -n "$NS_I" route replace "$gnet" via 192.0.2.1
    $run ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
    $run ip netns exec "$ns" nft insert rule inet lanes prerouting iifname "$il" ip daddr "$gnet" accept
    $run ip netns exec "$ns" nft insert rule inet lanes prerouting iifname tap0 ip daddr "$BYPASS_IP" accept
    $run ip netns exec "$ns" nft add rule inet lanes forward iifname "{ tap0, $il }" oifname "{ tap0, $il }" accept
}

# rounds PREFIX RUNNER CA_MEDIATED CA_DIRECT ROUNDS MIB CONNS: samples of
# both contenders in ABBA order (mediated first in odd rounds, direct first
# in even ones), so that load drifting during a round hits both alike.
rounds() {
    local pre=$1 run=$2 cam=$3 cad=$4 n=$5 mib=$6 conns=$7 r who order
    for r in $(seq "$n"); do
        log "$pre: round $r/$n"
        order="m d"; [ $((r % 2)) = 0 ] && order="d m"
        for who in $order; do
            if [ "$who" = m ]; then
                $run tcp 203.0.113.10 "$TCP_PORT" "$mib" >"$T/$pre-tcp-m-$r.json"
                $run https api.lanes.test api.lanes.test "$TLS_PORT" "$cam" "$mib" >"$T/$pre-https-m-$r.json"
            else
                $run tcp "$BYPASS_IP" "$TCP_PORT" "$mib" >"$T/$pre-tcp-d-$r.json"
                $run https api.lanes.test "$BYPASS_IP" "$TLS_PORT" "$cad" "$mib" >"$T/$pre-https-d-$r.json"
            fi
        done
        for who in $order; do
            if [ "$who" = m ]; then
                $run lat 203.0.113.10 "$TCP_PORT" "$conns" >"$T/$pre-lat-m-$r.json"
                $run hlat api.lanes.test api.lanes.test "$TLS_PORT" "$cam" "$((conns / 3))" >"$T/$pre-hlat-m-$r.json"
            else
                $run lat "$BYPASS_IP" "$TCP_PORT" "$conns" >"$T/$pre-lat-d-$r.json"
                $run hlat api.lanes.test "$BYPASS_IP" "$TLS_PORT" "$cad" "$((conns / 3))" >"$T/$pre-hlat-d-$r.json"
            fi
        done
    done
}

warm_up() { # RUNNER CA_MEDIATED CA_DIRECT AUDIT_FILE
    $1 tcp 203.0.113.10 "$TCP_PORT" 2 >/dev/null || fail "mediated plain TCP does not work"
    $1 tcp "$BYPASS_IP" "$TCP_PORT" 2 >/dev/null || fail "unmediated path does not work"
    $1 https api.lanes.test api.lanes.test "$TLS_PORT" "$2" 2 >/dev/null || fail "intercepted HTTPS does not work"
    $1 https api.lanes.test "$BYPASS_IP" "$TLS_PORT" "$3" 2 >/dev/null || fail "direct HTTPS does not work"
    # the unmediated path really bypasses netmed (which audits every connection)
    wait_for 5 grep -q '"addr":"203.0.113.10"' "$4" || fail "no mediated connection in netmed's audit ($4)"
    if grep -q "$BYPASS_IP" "$4"; then fail "the bypass went through netmed"; fi
}

# ---- 1. netmed alone: the netns stand-in guest (no emulator) --------------
if [ "$HOST_ROUNDS" -gt 0 ]; then
    log "netmed alone: netns guest $NS_G behind $NS_L (host CPU on both ends)"
    net_start_netmed "$T/policy.json"
    bypass_add "" "$NS_L" hbL hbI
    gh() { ip netns exec "$NS_G" python3 "$ROOT/bench/net/guest.py" "$@"; }
    warm_up gh "$NETMED_CA/ca.crt" "$W/ca.crt" "$NETMED_AUDIT"
    rounds host gh "$NETMED_CA/ca.crt" "$W/ca.crt" "$HOST_ROUNDS" "$HOST_MIB" "$HOST_CONNS"
    ip -n "$NS_I" link del hbI
    net_stop_netmed
fi

# ---- 2. the lane: a debian guest under QEMU ------------------------------
log "lanesd (in the host stand-in netns) and the debian image"
mkdir -p "$STATE"
ip netns exec "$NS_H" "$BUILD/bin/lanesd" --state-dir "$STATE" --boot-timeout 180 \
    --upstream-ca-bundle "$W/ca.crt" >>"$STATE/lanesd.log" 2>&1 &
LANESD_PID=$!
wait_for 10 lc ls >/dev/null 2>&1 || fail "lanesd does not answer: $(tail -5 "$STATE/lanesd.log")"
lc image build debian >"$T/image.log" 2>&1 || fail "image build debian: $(tail -5 "$T/image.log")"
lc create bn --image debian --policy "$T/policy.json" >/dev/null
LANE_ID=$(lc inspect bn | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
log "boot lane bn ($LANE_ID)"
lc boot bn >/dev/null
lc cp "$W/ca.crt" bn:/tmp/testca.crt
# Each side verifies against its one CA certificate (the lane CA, the test
# CA), so neither pays for parsing the whole system bundle per connection.
lc cp "$STATE/lanes/$LANE_ID/ca/ca.crt" bn:/tmp/laneca.crt
lc cp "$ROOT/bench/net/guest.py" bn:/tmp/guest.py
# lanesd runs under `ip netns exec` (its own mount namespace): the lane
# netns is named in that mount namespace only.
lns() { nsenter -t "$LANESD_PID" -m -- "$@"; }
bypass_add lns "lanes-$LANE_ID" bnL bnI
g() { lc exec bn -- python3 /tmp/guest.py "$@"; }
warm_up g /tmp/laneca.crt /tmp/testca.crt "$STATE/lanes/$LANE_ID/audit.jsonl"
rounds lane g /tmp/laneca.crt /tmp/testca.crt "$ROUNDS" "$MIB" "$CONNS"
NETMED_PID=$(for p in $(lane_pids); do [ "$(cat "/proc/$p/comm")" = netmed ] && echo "$p"; done | head -n1)
NETMED_CPU=$( [ -n "$NETMED_PID" ] && awk '{print ($14 + $15) / 100}' "/proc/$NETMED_PID/stat" || echo)
QEMU_PID=$(lc inspect bn | python3 -c 'import json,sys; print(json.load(sys.stdin).get("pid") or "")')
QEMU_CPU=$( [ -n "$QEMU_PID" ] && awk '{print ($14 + $15) / 100}' "/proc/$QEMU_PID/stat" || echo)

GUEST_CLOCK=$(lc exec bn -- cat /sys/devices/system/clocksource/clocksource0/current_clocksource || true)

python3 "$ROOT/bench/net/rows.py" "$T" "$ROUNDS" "$MIB" "$HOST_ROUNDS" "$HOST_MIB" \
    "${NETMED_CPU:-}" "${QEMU_CPU:-}" "$GUEST_CLOCK" >>"$ROWS"
python3 "$ROOT/bench/report.py" "$ROWS" "$OUT/net-results.json"
