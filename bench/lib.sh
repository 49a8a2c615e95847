# bench/lib.sh — helpers the bench scripts share (bash; sourced, not run).
#
# Callers set: BIN (the build's bin/), SOCK (their lanesd's socket), STATE
# (its state dir) and ROWS (the JSON-lines file of result rows that
# bench/report.py prints).

# lanectl against this bench's own lanesd.
lc() { "$BIN/lanectl" --socket "$SOCK" "$@"; }

# lane_field LANE KEY: one field of `lanectl inspect` ("" for null).
lane_field() { lc inspect "$1" | python3 -c 'import json,sys; v=json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$2"; }

# Pids of processes whose command line mentions our state dir's lane $1
# (QEMU names its sockets there; nbdkit its nbd.sock): found, not guessed.
lane_pids() {
    local f pid
    for f in /proc/[0-9]*/cmdline; do
        [ -r "$f" ] || continue
        pid=${f#/proc/}; pid=${pid%/cmdline}
        if tr '\0' ' ' 2>/dev/null <"$f" | grep -q -- "$STATE/lanes/$1/"; then
            echo "$pid"
        fi
    done
}

# row NAME UNIT OURS BASELINE TARGET_MAX_RATIO DETAIL_JSON — one result row.
row() {
    python3 - "$@" >>"$ROWS" <<'PY'
import json, sys
name, unit, ours, base, target, detail = sys.argv[1:7]
print(json.dumps({"name": name, "unit": unit,
                  "ours": float(ours) if ours else None,
                  "baseline": float(base) if base else None,
                  "target_max_ratio": float(target) if target else None,
                  "detail": json.loads(detail)}))
PY
}
