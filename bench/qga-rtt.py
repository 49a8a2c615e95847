#!/usr/bin/env python3
"""qga-rtt.py — exec round trip of Debian's qemu-guest-agent, the baseline
for lanes' exec round trip (bench/run.sh).

Usage: qga-rtt.py SOCKET N [--timeout SEC]

Connects to the host end of the guest's org.qemu.guest_agent.0 port (a QEMU
chardev unix socket), resynchronises with guest-sync-delimited (the guest
may hold stale bytes from an earlier client), then measures N guest-ping
round trips and N runs of the same job lanes' exec does: `guest-exec` of
`true`, then `guest-exec-status` polled back to back (no sleep: the
fastest this protocol allows) until it reports exited. Prints one JSON
object with the samples and medians in microseconds.
"""
import json
import os
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
    if len(sys.argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    path, runs = sys.argv[1], int(sys.argv[2])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--timeout" else 30.0
    q = Qga(path, timeout)
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
        exec_us.append((time.perf_counter_ns() - t0) / 1000.0)
        polls.append(n)
        if st.get("exitcode") != 0:
            raise RuntimeError("true exited with %r" % (st,))
    print(json.dumps({"runs": runs, "qga_version": info.get("version"),
                      "ping_us": ping_us, "exec_us": exec_us, "status_polls": polls,
                      "ping_median_us": statistics.median(ping_us),
                      "exec_median_us": statistics.median(exec_us),
                      "status_polls_median": statistics.median(polls)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
