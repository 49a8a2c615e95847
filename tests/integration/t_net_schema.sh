#!/bin/sh
# t_net_schema — api/policy.schema.json and netmed's policy parser agree:
# every sample is accepted by both or refused by both (netmed check-policy).
. "$(dirname "$0")/lib.sh"
need_cmd python3
[ -x "$LANES_BUILD/bin/netmed" ] || skip "netmed not built"
python3 -c 'import jsonschema' 2>/dev/null || skip "python3 jsonschema module not available"
test_tmpdir
python3 - "$LANES_ROOT/api/policy.schema.json" "$LANES_BUILD/bin/netmed" "$T" <<'PY'
import json, subprocess, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
samples = [
    {"dns": {"mode": "synthetic"}, "allow": [{"cidr": "198.51.100.2/32", "ports": [8080]},
                                            {"host": "api.github.com", "ports": [443], "intercept": True}]},
    {"mode": "open", "dns": {"mode": "trusted", "servers": ["1.1.1.1", "2001:db8::1#5353"]},
     "allow": [{"host": "*.pypi.org", "ports": ["8000-8100", 443], "transport": "tcp"}]},
    {"blockPrivateRanges": False, "allow": [{"cidr": "10.0.0.0/8", "allowPrivate": True}]},
    {},
    {"allow": [{"host": "a.com", "cidr": "1.2.3.4/32"}]},
    {"allow": [{"cidr": "10.0.0.0/8", "intercept": True}]},
    {"allow": [{"host": "a.com", "ports": [0]}]},
    {"allow": [{"host": "a.com", "ports": []}]},
    {"allow": [{"host": "a.com", "transport": "udp"}]},
    {"allow": [{"host": "a.com", "porst": [1]}]},
    {"allow": [{"host": "*"}]},
    {"dns": {"mode": "trusted"}},
    {"dns": {"mode": "magic"}},
    {"mode": "closed"},
    {"unknown": 1},
    {"approvalTimeoutSeconds": 30, "allow": [{"host": "*.example.com", "ports": [443], "action": "ask"},
                                             {"host": "evil.example.com", "action": "deny"},
                                             {"cidr": "198.51.100.0/24", "action": "ask"},
                                             {"host": "a.com", "action": "allow"}]},
    {"allow": [{"host": "a.com", "action": "maybe"}]},
    {"allow": [{"cidr": "10.0.0.0/8", "action": "ask", "intercept": True}]},
    {"approvalTimeoutSeconds": 0},
    {"approvalTimeoutSeconds": 3601},
    {"approvalTimeoutSeconds": "60"},
    {"onUnmatched": "ask", "approvalTimeoutSeconds": 120},
    {"onUnmatched": "deny"},
    {"onUnmatched": "maybe"},
    {"mode": "open", "onUnmatched": "ask"},
    {"mode": "open", "onUnmatched": "deny"},
]
bad = 0
for i, s in enumerate(samples):
    path = "%s/p%d.json" % (sys.argv[3], i)
    json.dump(s, open(path, "w"))
    schema_ok = not list(v.iter_errors(s))
    netmed_ok = subprocess.run([sys.argv[2], "check-policy", path], capture_output=True).returncode == 0
    if schema_ok != netmed_ok:
        print("disagree on %s: schema %s netmed %s" % (json.dumps(s), schema_ok, netmed_ok))
        bad += 1
sys.exit(1 if bad else 0)
PY
[ $? = 0 ] || fail "schema and parser disagree"
log "PASS"
