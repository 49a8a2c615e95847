#!/bin/sh
# Rootless lanesd: lanesd runs as an unprivileged user (no capabilities) and a
# debian lane still gets its mediated network. Each lane's netns lives in a
# user namespace held by `netmed netns-holder`; netmed runs in lanesd's netns
# (the stand-in host H of netlib.sh) with its lane sockets passed in, so it
# dials upstream from H. Checks: lanesd/netmed/QEMU/holder are really
# unprivileged (Uid, CapEff 0); the lane netns is a different netns in a
# non-initial user namespace with no route out; an allowed host works, a
# denied host, a private address and the metadata address fail; the audit
# shows allow and deny; netmed kill -9 leaves the lane offline until lanesd
# restarts it; stop removes the holder. Then a lanesd that cannot create
# user namespaces refuses a networked lane with a clear error and still
# boots a --network none lane.
#
# Needs root only to set things up: a system user (lanes-test-rootless,
# created if missing), read/write on /dev/net/tun for it (an ACL, removed at
# exit, when the device is not already open to everyone), the test netns.
set -eu
. "$(dirname "$0")/lib.sh"
NET_NO_GUEST=1
. "$(dirname "$0")/netlib.sh"
need_root
need_cmd setpriv useradd nsenter
RL_USER=lanes-test-rootless
if ! id -u "$RL_USER" >/dev/null 2>&1; then
    useradd -r -M -d /nonexistent -s /usr/sbin/nologin "$RL_USER" || fail "useradd $RL_USER"
fi
RL_UID=$(id -u "$RL_USER")
RL_GID=$(id -g "$RL_USER")
as_user() { setpriv --reuid="$RL_UID" --regid="$RL_GID" --clear-groups --inh-caps=-all "$@"; }

# /dev/net/tun: Debian's default is 0666; where it is not (containers), grant
# this user rw with an ACL for the duration of the test.
if ! as_user test -r /dev/net/tun -a -w /dev/net/tun; then
    need_cmd setfacl
    TUN_ACL=$(getfacl -p /dev/net/tun 2>/dev/null) || fail "getfacl /dev/net/tun"
    setfacl -m "u:$RL_UID:rw" /dev/net/tun || fail "setfacl /dev/net/tun"
    on_exit 'printf "%s\n" "$TUN_ACL" | setfacl --restore=- 2>/dev/null; true'
fi

. "$(dirname "$0")/lanes.sh"
net_setup
chmod 711 "$T"
chmod 755 "$T/web"
chmod 644 "$T/web/ca.crt"

# Guest artifacts are built (or found cached) as root and linked into a
# directory the user can read; the user's own lanes-rootfs cache gets the
# debian image the same way, so `image build` finds it cached.
log "guest artifacts"
RF=$LANES_ROOT/rootfs/lanes-rootfs
kdir=$(LANES_BUILD=$LANES_BUILD "$RF" kernel 2>"$T/rf.log") || fail "lanes-rootfs kernel: $(tail -3 "$T/rf.log")"
initrd=$(LANES_BUILD=$LANES_BUILD "$RF" initramfs "$LANES_BUILD/bin/lane-init" 2>"$T/rf.log") ||
    fail "lanes-rootfs initramfs: $(tail -3 "$T/rf.log")"
img=$(LANES_BUILD=$LANES_BUILD "$RF" image debian 2>"$T/rf.log") || fail "lanes-rootfs image debian: $(tail -3 "$T/rf.log")"
mkdir -p "$T/art" "$T/cache/images" "$T/home"
cp "$kdir/vmlinuz" "$T/art/vmlinuz"
cp "$initrd" "$T/art/initrd.cpio.gz"
ln "$img" "$T/cache/images/" 2>/dev/null || cp "$img" "$T/cache/images/"
img_min=$(LANES_BUILD=$LANES_BUILD "$RF" image minimal 2>"$T/rf.log") || fail "lanes-rootfs image minimal: $(tail -3 "$T/rf.log")"
ln "$img_min" "$T/cache/images/" 2>/dev/null || cp "$img_min" "$T/cache/images/"
chmod 644 "$T/art/"* "$T/cache/images/"*
chown -R "$RL_UID:$RL_GID" "$T/cache" "$T/home"
chmod 755 "$T/art"

LANES_STATE=$T/state
mkdir -p "$LANES_STATE"
chown "$RL_UID:$RL_GID" "$LANES_STATE"
chmod 700 "$LANES_STATE"
net_dump() {
    for f in "$LANES_STATE"/lanes/*/netmed.log "$LANES_STATE"/lanes/*/audit.jsonl "$LANES_STATE"/lanes/*/qemu.log \
             "$LANES_STATE"/lanes/*/nbdkit.log "$LANES_STATE"/lanes/*/console.log; do
        [ -f "$f" ] && { echo "---- $f"; tail -n 15 "$f"; }
    done
    return 0
}
on_exit net_dump
RL_ENV="env HOME=$T/home LANES_CACHE=$T/cache"
LANESD_WRAP="ip netns exec $NS_H setpriv --reuid=$RL_UID --regid=$RL_GID --clear-groups --inh-caps=-all $RL_ENV"
LANESD_ARGS="--upstream-ca-bundle $T/web/ca.crt --kernel $T/art/vmlinuz --initrd $T/art/initrd.cpio.gz"
lanes_start
grep -q "rootless mode: lane networks in user namespaces" "$LANES_STATE/lanesd.log" ||
    fail "lanesd did not detect rootless mode: $(tail -5 "$LANES_STATE/lanesd.log")"

# A process of ours is unprivileged: real/effective/saved/fs uid = the test
# user, no effective or permitted capabilities (in any namespace view).
unprivileged() {
    _st=/proc/$1/status
    [ -r "$_st" ] || fail "$2: no process $1"
    _uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "$_st")
    [ "$_uids" = "$RL_UID $RL_UID $RL_UID $RL_UID" ] || fail "$2 (pid $1) runs with uids $_uids, not $RL_UID"
    _eff=$(awk '/^CapEff:/ { print $2 }' "$_st")
    _prm=$(awk '/^CapPrm:/ { print $2 }' "$_st")
    [ "$_eff" = 0000000000000000 ] && [ "$_prm" = 0000000000000000 ] ||
        fail "$2 (pid $1) has capabilities: CapEff $_eff CapPrm $_prm"
}
unprivileged "$LANESD_PID" lanesd
as_user env HOME="$T/home" "$LANES_BUILD/bin/lanectl" --socket "$LANES_SOCKET" doctor >"$T/doctor" 2>&1 || true
grep -E '^ *OK +netns .*user namespaces allowed' "$T/doctor" >/dev/null || fail "doctor as the user: $(grep netns "$T/doctor")"

lanes_image debian
cat >"$T/policy.json" <<'JSON'
{"dns": {"mode": "synthetic"},
 "allow": [{"host": "api.lanes.test", "ports": [80]},
           {"host": "api.lanes.test", "ports": [443], "intercept": true}]}
JSON
chmod 644 "$T/policy.json"
lc create web --image debian --disk 2 --policy "$T/policy.json" >/dev/null
log "boot a debian lane with a policy (rootless)"
lc boot web >/dev/null || fail "boot failed: $(lc inspect web)"
[ "$(lc inspect web | json_field network)" = mediated ] || fail "network not mediated"
id=$(lc inspect web | json_field id)
ldir=$LANES_STATE/lanes/$id

log "every lane process is unprivileged; the lane netns is its own, in a user namespace"
qpid=$(lane_qemu_pid web)
unprivileged "$qpid" qemu
npid=$(pgrep -f -- "netmed --lane-fds [0-9]*,[0-9]* --policy $ldir/" | head -n1)
[ -n "$npid" ] || fail "no netmed with inherited lane sockets: $(pgrep -af netmed)"
unprivileged "$npid" netmed
hpid=$(pgrep -f -- "netmed netns-holder .*--socket $ldir/netns.sock" | head -n1)
[ -n "$hpid" ] || fail "no netns holder for the lane"
# the holder is ns-root of its own user namespace: seen from the host its
# uids are the test user's and it has no capabilities in the initial one
awk '/^Uid:/ { exit !($2 == u && $3 == u) }' u="$RL_UID" "/proc/$hpid/status" || fail "holder uid: $(grep Uid "/proc/$hpid/status")"
[ "$(readlink /proc/$hpid/ns/user)" != "$(readlink /proc/1/ns/user)" ] || fail "holder is in the initial user namespace"
# in its own user namespace it keeps only CAP_NET_ADMIN + CAP_NET_BIND_SERVICE
[ "$(awk '/^CapEff:/ { print $2 }' "/proc/$hpid/status")" = 0000000000001400 ] &&
    [ "$(awk '/^CapBnd:/ { print $2 }' "/proc/$hpid/status")" = 0000000000001400 ] ||
    fail "holder capabilities: $(grep ^Cap "/proc/$hpid/status")"
grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$hpid/status" || fail "holder without no_new_privs"
[ "$(readlink /proc/$hpid/ns/net)" != "$(readlink /proc/$LANESD_PID/ns/net)" ] || fail "lane netns is lanesd's netns"
[ "$(readlink /proc/$npid/ns/net)" = "$(readlink /proc/$LANESD_PID/ns/net)" ] || fail "netmed left lanesd's netns"
[ "$(readlink /proc/$qpid/ns/net)" = "$(readlink /proc/$LANESD_PID/ns/net)" ] || fail "QEMU is not in lanesd's netns"
nsenter -t "$hpid" -n ip route show table main >"$T/routes"
grep -q default "$T/routes" && fail "the lane netns has a route out: $(cat "$T/routes")"
nsenter -t "$hpid" -n ip -o link show >"$T/links"
grep -q ' tap0:' "$T/links" || fail "no tap0 in the lane netns: $(cat "$T/links")"
[ "$(grep -cv ' lo:\| tap0:' "$T/links")" = 0 ] || fail "unexpected interfaces in the lane netns: $(cat "$T/links")"
nsenter -t "$hpid" -n nft list table inet lanes >"$T/nft" 2>&1 || fail "no nft table in the lane netns: $(cat "$T/nft")"
grep -q 'tproxy ip to 127.0.0.1:15001' "$T/nft" && grep -q 'hook forward priority filter; policy drop' "$T/nft" ||
    fail "lane ruleset: $(cat "$T/nft")"
[ "$(nsenter -t "$hpid" -n cat /proc/sys/net/ipv6/conf/all/disable_ipv6)" = 1 ] || fail "IPv6 on in the lane netns"

# the holder obeys only its own uid: root (unmapped in its user namespace)
# can open the socket file, but its "quit" is ignored
python3 - "$ldir/netns.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
s.settimeout(5)
try:
    s.send(b"Q")
    s.recv(256)
except OSError:  # reset or broken pipe: the holder hung up on us
    pass
PY
sleep 0.5
kill -0 "$hpid" 2>/dev/null && [ -S "$ldir/netns.sock" ] || fail "the holder obeyed another uid"
[ "$(stat -c %a "$ldir/netns.sock")" = 600 ] || fail "holder socket mode $(stat -c %a "$ldir/netns.sock")"

gwget() { lc exec web -- curl -sS --max-time 10 "$@"; }
log "allowed host works"
gwget http://api.lanes.test/ready >"$T/out" || fail "allowed HTTP request failed"
grep -q '"path": "/ready"' "$T/out" || fail "unexpected body: $(cat "$T/out")"
log "intercepted HTTPS with the lane CA, and a secret only its host sees"
printf 'real-token-rootless\n' | lc secret set web API_TOKEN --hosts api.lanes.test >/dev/null || fail "secret set"
: >"$T/web/requests.log"
lc exec web -- sh -c 'curl -sS --max-time 10 -H "Authorization: Bearer $API_TOKEN" https://api.lanes.test/echo' >"$T/out" ||
    fail "intercepted HTTPS request failed"
grep -q 'Bearer real-token-rootless' "$T/web/requests.log" || fail "upstream did not get the real value"
grep -q 'real-token-rootless' "$T/out" && fail "the real value reached the guest"
[ "$(stat -c %u "$ldir/ca/ca.key")" = "$RL_UID" ] || fail "lane CA key not owned by the lanesd user"

log "denied host, private and metadata addresses fail"
lc exec web -- getent hosts other.lanes.test >/dev/null 2>&1 && fail "a name outside the policy resolved"
if gwget http://203.0.113.11/ >/dev/null 2>&1; then fail "direct IP outside the policy reachable"; fi
if gwget http://10.99.0.1/ >/dev/null 2>&1; then fail "private address reachable"; fi
if gwget http://169.254.169.254/ >/dev/null 2>&1; then fail "metadata address reachable"; fi
if gwget http://api.lanes.test:8080/ >/dev/null 2>&1; then fail "port outside the policy reachable"; fi
if lc exec web -- python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.sendto(b"x", ("198.51.100.53", 53)); s.recv(10)' >/dev/null 2>&1; then
    fail "UDP to another resolver got an answer"
fi

log "audit shows both"
api GET /v1/lanes/web/audit >"$T/audit"
python3 - "$T/audit" <<'PY' || fail "audit content: $(head -c 2000 "$T/audit")"
import json, sys
e = json.load(open(sys.argv[1]))["entries"]
assert any(x.get("ev") == "conn" and x.get("decision") == "allow" for x in e), "no allowed connection"
assert any(x.get("ev") == "conn" and x.get("decision") == "deny" and "10.99.0.1" in json.dumps(x) for x in e), "no denied private address"
assert any(x.get("decision") == "deny" and "203.0.113.11" in json.dumps(x) for x in e), "no denied direct IP"
PY

log "netmed killed: offline (not open) until lanesd restarts it"
# lanesd is stopped meanwhile so it cannot restart netmed before we look: in
# the lane netns nothing may listen for the guest's traffic then (TPROXY finds
# no socket and the ruleset drops it) — the holder keeps no copy.
kill -STOP "$LANESD_PID"
kill -KILL "$npid"
wait_for 5 sh -c "! kill -0 $npid 2>/dev/null" || fail "netmed did not die"
nsenter -t "$hpid" -n ss -Htlnu >"$T/ss"
[ -s "$T/ss" ] && { kill -CONT "$LANESD_PID"; fail "sockets survived netmed's death: $(cat "$T/ss")"; }
kill -CONT "$LANESD_PID"
wait_for 20 sh -c "pgrep -f -- 'netmed --lane-fds [0-9]*,[0-9]* --policy $ldir/' | grep -vqx '$npid'" || fail "netmed not restarted"
npid2=$(pgrep -f -- "netmed --lane-fds [0-9]*,[0-9]* --policy $ldir/" | head -n1)
unprivileged "$npid2" netmed
wait_for 30 gwget http://api.lanes.test/ready >/dev/null || fail "network did not come back after netmed restart"
if gwget http://10.99.0.1/ >/dev/null 2>&1; then fail "private address reachable after restart"; fi
[ "$(lane_state web)" = running ] || fail "lane state after netmed death: $(lane_state web)"

log "a restarted lanesd re-adopts the lane and reaches its holder for the next netmed"
lanes_restart
wait_for 10 lc ls >/dev/null 2>&1 || fail "lanesd did not come back"
unprivileged "$LANESD_PID" lanesd
[ "$(lane_state web)" = running ] || fail "lane state after lanesd restart: $(lane_state web)"
kill -KILL "$npid2"
wait_for 20 sh -c "pgrep -f -- 'netmed --lane-fds [0-9]*,[0-9]* --policy $ldir/' | grep -vqx '$npid2'" ||
    fail "netmed not restarted by the new lanesd"
wait_for 30 gwget http://api.lanes.test/ready >/dev/null || fail "no network after netmed restart by the new lanesd"
[ "$(pgrep -f -- "netmed netns-holder .*--socket $ldir/netns.sock" | head -n1)" = "$hpid" ] || fail "holder replaced"

log "stop removes the holder (and with it the lane netns)"
lc stop web >/dev/null
wait_for 10 sh -c "! kill -0 $hpid 2>/dev/null" || fail "netns holder left after stop"
[ -e "$ldir/netns.sock" ] && fail "holder socket left after stop"

log "holder and netmed killed: the lane stays offline (no new lane sockets), and still stops"
lc boot web >/dev/null || fail "reboot failed: $(lc inspect web)"
gwget http://api.lanes.test/ready >/dev/null || fail "no network after reboot"
hpid=$(pgrep -f -- "netmed netns-holder .*--socket $ldir/netns.sock" | head -n1)
npid=$(pgrep -f -- "netmed --lane-fds [0-9]*,[0-9]* --policy $ldir/" | head -n1)
[ -n "$hpid" ] && [ -n "$npid" ] || fail "no holder/netmed after reboot"
kill -KILL "$hpid"
kill -KILL "$npid"
wait_for 15 grep -q "netmed restart failed (lane network holder" "$LANES_STATE/lanesd.log" ||
    fail "no restart failure logged: $(tail -5 "$LANES_STATE/lanesd.log")"
if gwget http://api.lanes.test/ready >/dev/null 2>&1; then fail "network without netmed or holder"; fi
[ "$(lane_state web)" = running ] || fail "lane state without holder: $(lane_state web)"
lc stop web >/dev/null || fail "stop without holder"
[ -e "$ldir/netns.sock" ] && fail "stale holder socket left after stop"
unprivileged "$LANESD_PID" lanesd

log "no user namespaces: a networked lane fails clearly, --network none still boots"
# A second lanesd, in a user namespace of the test user whose
# user.max_user_namespaces is 0 (the limit is per user namespace, so the host
# is untouched); it is uid 0 in there, so rootless mode is forced.
S2=$LANES_STATE/no-userns
mkdir -p "$S2"
chown "$RL_UID:$RL_GID" "$S2"
chmod 700 "$S2"
as_user unshare --user --map-root-user sh -c 'echo 0 >/proc/sys/user/max_user_namespaces &&
    exec "$@"' sh $RL_ENV "$LANES_BUILD/bin/lanesd" --rootless --state-dir "$S2" $LANESD_ARGS >"$T/lanesd2.log" 2>&1 &
L2PID=$!
on_exit 'kill_wait $L2PID 5'
lc2() { "$LANES_BUILD/bin/lanectl" --socket "$S2/lanesd.sock" "$@"; }
wait_for 10 lc2 ls >/dev/null 2>&1 || fail "second lanesd: $(cat "$T/lanesd2.log")"
grep -q "rootless mode: lanes with a network will fail: user namespaces are disabled" "$T/lanesd2.log" ||
    fail "no startup warning: $(cat "$T/lanesd2.log")"
lc2 image build minimal >"$T/img2.log" 2>&1 || fail "image build minimal: $(tail -3 "$T/img2.log")"
lc2 create nonet --image minimal --disk 1 >/dev/null
if lc2 boot nonet >"$T/boot2.out" 2>&1; then fail "a networked lane booted without user namespaces"; fi
grep -q "lane network unavailable (lanesd runs rootless): user namespaces are disabled" "$T/boot2.out" ||
    fail "unclear error: $(cat "$T/boot2.out")"
lc2 create offline --image minimal --disk 1 --network none >/dev/null
lc2 boot offline >/dev/null || fail "--network none lane did not boot: $(lc2 inspect offline)"
lc2 exec offline -- sh -c 'ls /sys/class/net' >"$T/ifs"
[ "$(cat "$T/ifs")" = lo ] || fail "--network none lane has interfaces: $(cat "$T/ifs")"
lc2 stop offline >/dev/null
# the holder itself says why, too (if it is reached without lanesd's probe)
if as_user unshare --user --map-root-user sh -c 'echo 0 >/proc/sys/user/max_user_namespaces &&
    exec "$@"' sh "$LANES_BUILD/bin/netmed" netns-holder --socket "$T/home/h.sock" 2>"$T/holder.err"; then
    fail "netns-holder succeeded without user namespaces"
fi
grep -q "user namespaces are not available" "$T/holder.err" || fail "holder error: $(cat "$T/holder.err")"
log "ok"
