#!/bin/sh
# Man pages: docs/man/* are up to date with their Markdown sources
# (scripts/gen-man.py --check) and each renders with man-db/groff without a
# single warning, with NAME, SYNOPSIS and the program's name in the title.
set -eu
. "$(dirname "$0")/lib.sh"
need_cmd man groff python3
test_tmpdir
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MAN_DIR=${LANES_MAN_DIR:-$ROOT/docs/man}

python3 "$ROOT/scripts/gen-man.py" --check || fail "man pages out of date: run scripts/gen-man.py"
n=0
for prog in lanesd.8 lanectl.1 lane-init.8 netmed.8 lanes-store.1 nbdkit-laneslocal-plugin.1; do
    f="$MAN_DIR/$prog"
    [ -f "$f" ] || fail "missing man page $prog"
    out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$f" 2>&1 >/dev/null) || fail "man -l $prog failed: $out"
    [ -z "$out" ] || fail "man -l $prog warns: $out"
    LC_ALL=C.UTF-8 MANWIDTH=80 man -l "$f" 2>/dev/null >"$T/page.txt"
    name=${prog%.*}
    head -1 "$T/page.txt" | grep -qi "^$name(" || fail "$prog title: $(head -1 "$T/page.txt")"
    grep -q '^NAME' "$T/page.txt" && grep -q '^SYNOPSIS' "$T/page.txt" || fail "$prog lacks NAME/SYNOPSIS"
    n=$((n + 1))
done
log "ok: $n man pages render cleanly"
