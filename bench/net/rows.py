#!/usr/bin/env python3
"""rows.py — bench/net's samples (one JSON file per guest.py run, named
PHASE-KIND-WHO-ROUND.json with WHO m = through netmed, d = the routed
bypass) into bench/report.py rows, one JSON object per line on stdout.

  rows.py DIR LANE_ROUNDS LANE_MIB HOST_ROUNDS HOST_MIB NETMED_CPU_S QEMU_CPU_S [GUEST_CLOCKSOURCE]

Throughput rows are in ms per MiB (lower is better, like every row of
report.py), so "throughput >= 0.8x" is "ratio <= 1.25x". The target
"netmed adds < 1 ms at p50" becomes the ratio (base + 1 ms) / base, on
net_host_tcp_connect_p50 (phase "host": the netns stand-in guest, host
clocks) and on the lane's row unless the guest's clock source is
jiffies-based (under TCG the kernel sometimes cannot calibrate the TSC and
falls back to refined-jiffies, 4 ms steps: then that row is info). The
other net_host_* rows are info (netmed's own cost without the emulator).
"""
import json
import statistics
import sys

med = statistics.median


def load(d, pre, kind, who, n):
    return [json.load(open("%s/%s-%s-%s-%d.json" % (d, pre, kind, who, r))) for r in range(1, n + 1)]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def row(name, unit, o, b, tgt, det):
    print(json.dumps({"name": name, "unit": unit, "ours": round(o, 4), "baseline": round(b, 4),
                      "target_max_ratio": tgt, "detail": det}))


def ms_per_mib(mbps):
    return 1000 / (mbps * 1e6 / (1 << 20))


def main():
    d, rounds, mib, hrounds, hmib, nm_cpu, q_cpu = sys.argv[1:8]
    clock = sys.argv[8] if len(sys.argv) > 8 else None
    for pre, n, size, prefix, targets in (("lane", int(rounds), int(mib), "net_", True),
                                           ("host", int(hrounds), int(hmib), "net_host_", False)):
        if n == 0:
            continue
        if pre == "lane":
            extra = {"netmed_cpu_s_total": float(nm_cpu) if nm_cpu else None,
                     "qemu_cpu_s_total": float(q_cpu) if q_cpu else None,
                     "guest_clocksource": clock}
        else:
            extra = {"guest": "netns stand-in (netlib.sh's veth 'tap0') with host python3: "
                              "netmed's own cost, no emulator"}
        for kind, tgt in (("tcp", 1.25), ("https", 2.0)):
            m, dd_ = load(d, pre, kind, "m", n), load(d, pre, kind, "d", n)
            for dirn in ("down", "up"):
                mm = [x[dirn + "_MBps"] for x in m]
                dd = [x[dirn + "_MBps"] for x in dd_]
                how = ("plain TCP, netmed splice (CIDR rule) vs the routed veth bypass" if kind == "tcp" else
                       "HTTPS GET/PUT on one keep-alive connection: netmed intercepts (lane CA, upstream "
                       "TLS verified) vs the guest's TLS straight to the server over the routed bypass")
                det = {"how": how, "mib_per_sample": size,
                       "mediated_MBps": [round(x, 2) for x in mm],
                       "unmediated_MBps": [round(x, 2) for x in dd],
                       "mediated_MBps_median": round(med(mm), 2),
                       "unmediated_MBps_median": round(med(dd), 2),
                       "throughput_ratio": round(med(mm) / med(dd), 3),
                       "pairwise_throughput_ratio_median": round(med(a / b for a, b in zip(mm, dd)), 3),
                       "target": ">= %.1fx unmediated throughput" % (1 / tgt)}
                det.update(extra)
                name = "%s%s_%s" % (prefix, kind, "download" if dirn == "down" else "upload")
                row(name, "ms/MiB", ms_per_mib(med(mm)), ms_per_mib(med(dd)), tgt if targets else None, det)
        for kind, name, target in (("lat", "tcp_connect_p50", True), ("hlat", "https_connect_p50", False)):
            sm, sd = load(d, pre, kind, "m", n), load(d, pre, kind, "d", n)
            m = sum((x["ms"] for x in sm), [])
            dl = sum((x["ms"] for x in sd), [])
            bm = sum((x["batch_mean_ms"] for x in sm), [])
            bd = sum((x["batch_mean_ms"] for x in sd), [])
            pm, pd = med(m), med(dl)
            coarse = pre == "lane" and clock in ("jiffies", "refined-jiffies")
            det = {"samples_per_contender": len(m),
                   "mediated_p50_ms": round(pm, 3), "mediated_p95_ms": round(pct(m, 95), 3),
                   "unmediated_p50_ms": round(pd, 3), "unmediated_p95_ms": round(pct(dl, 95), 3),
                   "added_p50_ms": round(pm - pd, 3),
                   # batches of 10 connections timed as a whole: 1/10 of the
                   # clock step, but a mean (the slow tail counts in)
                   "mediated_batch_mean_median_ms": round(med(bm), 3),
                   "unmediated_batch_mean_median_ms": round(med(bd), 3)}
            det.update(extra)
            if target:
                det["how"] = ("guest connect() to the server's first byte (1-byte request/answer), "
                              "a new connection each")
                det["target"] = "netmed adds < 1 ms at p50: ratio <= (unmediated p50 + 1 ms) / unmediated p50"
            else:
                det["how"] = ("new connection + TLS handshake + GET /ping (name resolved once); "
                              "interception makes two handshakes and netmed re-resolves the name "
                              "upstream for every connection (rebinding guard)")
            # "netmed adds < 1 ms at p50" is judged where the clock can see
            # 1 ms: always on netmed alone (host clocks), and in the lane
            # unless the guest's clock source is jiffies-based (4 ms steps:
            # under TCG the kernel may fail to calibrate the TSC).
            tgt = None
            if target and not coarse:
                tgt = round((pd + 1.0) / pd, 3)
            elif target:
                det["target_judged_in"] = "net_host_tcp_connect_p50 (the guest clock is %s: 4 ms steps)" % clock
            row(prefix + name, "ms", pm, pd, tgt, det)
    return 0


if __name__ == "__main__":
    sys.exit(main())
