#!/usr/bin/env python3
"""qga-rtt.py — exec round trip of Debian's qemu-guest-agent, the baseline
for lanes' exec round trip (bench/run.sh).

Usage: qga-rtt.py SOCKET N [--timeout SEC] [--poll-interval-ms MS]

Connects to the host end of the guest's org.qemu.guest_agent.0 port (a QEMU
chardev unix socket), resynchronises with guest-sync-delimited (the guest
may hold stale bytes from an earlier client), then measures N guest-ping
round trips and N runs of the same job lanes' exec does: `guest-exec` of
`true`, then `guest-exec-status` polled until it reports exited: back to
back by default, or with a sleep of --poll-interval-ms between polls (busy
polling competes with the child for the guest's CPU, so a short sleep can be
faster; bench/run.sh tries both and keeps qemu-ga's best). Prints one JSON
object with the samples and medians in microseconds.
"""
import argparse
import json
import random
import socket
import statistics
import sys
import time


class Qga:
    def __init__(self, path, timeout):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def _read_more(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("qemu-ga channel closed")
        self.buf += data

    def sync(self):
        """guest-sync-delimited: the reply is preceded by a 0xFF byte; all
        bytes before it are stale and dropped."""
        sid = random.randint(1, 2**31 - 1)
        self.sock.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited",
                                                 "arguments": {"id": sid}}).encode() + b"\n")
        while True:
            while b"\xff" not in self.buf:
                self.buf = b""
                self._read_more()
            self.buf = self.buf[self.buf.index(b"\xff") + 1:]
            reply = self._line()
            if reply.get("return") == sid:
                return

    def _line(self):
        while b"\n" not in self.buf:
            self._read_more()
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, cmd, args=None):
        msg = {"execute": cmd}
        if args is not None:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        reply = self._line()
        if "error" in reply:
            raise RuntimeError("%s: %s" % (cmd, reply["error"]))
        return reply["return"]


def main():
    ap = argparse.ArgumentParser(description="qemu-guest-agent exec round trip")
    ap.add_argument("socket")
    ap.add_argument("runs", type=int)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--poll-interval-ms", type=float, default=0.0)
    a = ap.parse_args()
    runs = a.runs
    q = Qga(a.socket, a.timeout)
    q.sync()
    info = q.call("guest-info")
    ping_us, exec_us, polls = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        q.call("guest-ping")
        ping_us.append((time.perf_counter_ns() - t0) / 1000.0)
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        pid = q.call("guest-exec", {"path": "true", "capture-output": False})["pid"]
        n = 0
        while True:
            n += 1
            st = q.call("guest-exec-status", {"pid": pid})
            if st.get("exited"):
                break
            if a.poll_interval_ms > 0:
                time.sleep(a.poll_interval_ms / 1000.0)
        exec_us.append((time.perf_counter_ns() - t0) / 1000.0)
        polls.append(n)
        if st.get("exitcode") != 0:
            raise RuntimeError("true exited with %r" % (st,))
    print(json.dumps({"runs": runs, "qga_version": info.get("version"),
                      "poll_interval_ms": a.poll_interval_ms,
                      "ping_us": ping_us, "exec_us": exec_us, "status_polls": polls,
                      "ping_median_us": statistics.median(ping_us),
                      "exec_median_us": statistics.median(exec_us),
                      "status_polls_median": statistics.median(polls)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
