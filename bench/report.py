#!/usr/bin/env python3
"""report.py — turn bench/run.sh's rows (one JSON object per line) into the
printed table and BUILD_DIR/bench/results.json.

Usage: report.py ROWS.jsonl RESULTS.json

A row: name, unit, ours, baseline, target_max_ratio (null = no target),
detail. ratio = ours / baseline; a row with a target PASSes when
ratio <= target, else MISSes and says by how much.
"""
import json
import os
import platform
import sys
import time


def main():
    rows_path, out_path = sys.argv[1], sys.argv[2]
    rows = [json.loads(l) for l in open(rows_path) if l.strip()]
    for r in rows:
        o, b, t = r["ours"], r["baseline"], r["target_max_ratio"]
        r["ratio"] = round(o / b, 3) if o is not None and b else None
        if t is None or r["ratio"] is None:
            r["result"] = "info"
        else:
            r["result"] = "PASS" if r["ratio"] <= t else "MISS"
            if r["result"] == "MISS":
                # how far off: ours would have to be this much lower
                r["miss_by"] = "%.1f%s over the target (%.2fx the allowed %.1f %s)" % (
                    o - t * b, r["unit"], r["ratio"] / t, t * b, r["unit"])

    head = ["name", "ours", "baseline", "ratio", "target", "result"]
    table = []
    for r in rows:
        unit = r["unit"]
        tgt = "<= %.2fx" % r["target_max_ratio"] if r["target_max_ratio"] is not None else "-"
        base = "%.2f %s" % (r["baseline"], unit) if r["baseline"] is not None else "-"
        if r["name"].startswith("idle_rss"):
            base = "%d MiB guest RAM" % r["baseline"]
            tgt = "(PSS %.1f MiB)" % r["detail"].get("total_pss_mib", 0)
        table.append([r["name"], "%.2f %s" % (r["ours"], unit), base,
                      "%.3f" % r["ratio"] if r["ratio"] is not None else "-", tgt, r["result"]])
    widths = [max(len(str(x[i])) for x in table + [head]) for i in range(len(head))]
    fmt = "  ".join("%%-%ds" % w for w in widths)
    print(fmt % tuple(head))
    for t in table:
        print(fmt % tuple(t))
    for r in rows:
        if r["result"] == "MISS":
            print("MISS %s: %s" % (r["name"], r["miss_by"]))

    result = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                 "loadavg": os.getloadavg()},
        "rows": rows,
    }
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    os.replace(tmp, out_path)
    print("results: %s" % out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
