#!/bin/sh
# The TypeScript SDK (sdk/typescript) against a real lanesd and lane: builds
# it from its lockfile (npm ci + tsc: typescript and @types/node are its only,
# dev-time, dependencies), then runs its node:test suite: test/lane.test.mjs
# (lifecycle, exec, files, shells, sessions) and test/more.test.mjs
# (snapshots, fork, restore, files stat/list/archive, policy, secrets, audit,
# approvals, logs, events, exec resize/attach, images, stores, metrics).
set -eu
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lanes.sh"
need_cmd node npm

major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || skip "node $major is older than 20"

SDK=$LANES_ROOT/sdk/typescript
test_tmpdir
log "build the SDK (npm ci, tsc)"
# Build in a copy so a test run never leaves node_modules/dist in the tree.
mkdir -p "$T/sdk"
cp -r "$SDK/package.json" "$SDK/package-lock.json" "$SDK/tsconfig.json" "$SDK/src" "$SDK/test" "$T/sdk/"
(cd "$T/sdk" && npm ci --no-audit --no-fund --loglevel=error >"$T/npm.log" 2>&1) || fail "npm ci: $(tail -20 "$T/npm.log")"
(cd "$T/sdk" && npx --no-install tsc -p tsconfig.json >"$T/tsc.log" 2>&1) || fail "tsc: $(cat "$T/tsc.log")"
# No runtime dependencies: the built package only imports node: modules and itself.
if grep -hE '^(import|export) .* from "' "$T/sdk/dist/"*.js | grep -oE 'from "[^"]+"' | grep -vE 'from "(node:[a-z/]+|\./[a-z]+\.js)"'; then
    fail "the SDK imports something besides node: built-ins"
fi

lanes_start
lanes_image minimal
log "node --test"
(cd "$T/sdk" && LANES_SOCKET="$LANES_SOCKET" LANES_TEST_IMAGE=minimal node --test test/) >"$T/node.log" 2>&1 || {
    cat "$T/node.log"
    fail "SDK tests failed"
}
grep -E '^# (tests|pass|fail|skipped)' "$T/node.log"
grep -q '^# fail 0$' "$T/node.log" || fail "failures: $(cat "$T/node.log")"
grep -q '^# skipped 0$' "$T/node.log" || fail "tests were skipped: $(cat "$T/node.log")"
log "ok"
