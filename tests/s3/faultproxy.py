#!/usr/bin/env python3
"""faultproxy.py — fault-injecting HTTP proxy between an S3 client and s3rver.

Test tool (python3 stdlib only).  Listens on 127.0.0.1 (random port written to
--port-file), forwards every request to --upstream and, for the requests a
fault policy selects, misbehaves the way real object stores and networks do.

  faultproxy.py --upstream 127.0.0.1:PORT --port-file F [--stats F]
                [--control F] [--mode M] [--rate R] [--count N]
                [--delay-ms N] [--methods GET,PUT] [--paths S1,S2] [--seed S]

Modes (the fault for a selected request):
  none       forward untouched
  503        answer 503 with an S3 SlowDown error document (not forwarded)
  error200   answer 200 whose body is an S3 InternalError document (not
             forwarded): what S3 may do for a failed request it accepted
  reset      forward, then send the head and half the body and reset the
             connection (RST); a bodiless answer is reset before any byte
  truncate   forward, then send the head (full Content-Length) and half the
             body and close: the client sees a short read
  short      forward, then send half the body with a Content-Length that
             matches it: only a checksum can tell
  stall      forward untouched after waiting --stall-ms (a slow request)
Selection: a request whose method is in --methods (default all) and whose
path contains one of the --paths substrings (default any path) is faulted
with probability --rate (default 1), for at most --count requests
(default unlimited; 0 = none).  --delay-ms adds latency to every request.

--control names a JSON file with the same keys (mode, rate, count, delay_ms,
methods, paths, stall_ms, seed); it is re-read whenever its mtime changes (counts restart),
so a test can change the fault mid-run.  --stats names a JSON file rewritten
after each request: requests, faults, connections, by_mode.
"""
import argparse
import http.client
import json
import os
import random
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b'<Message>Please reduce your request rate.</Message>'
            b'<RequestId>FAULTPROXY503</RequestId></Error>')
INTERNAL = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
            b'<Message>We encountered an internal error. Please try again.</Message>'
            b'<RequestId>FAULTPROXY200</RequestId></Error>')
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length",
       "proxy-connection", "te", "trailer", "upgrade"}


class Policy:
    """The current fault policy and counters (shared by handler threads)."""

    def __init__(self, args):
        self.lock = threading.Lock()
        self.control = args.control
        self.stats_path = args.stats
        self.mtime = None
        self.stats = {"requests": 0, "faults": 0, "connections": 0, "by_mode": {}}
        self.apply({"mode": args.mode, "rate": args.rate, "count": args.count,
                    "delay_ms": args.delay_ms, "stall_ms": args.stall_ms, "seed": args.seed,
                    "methods": args.methods.split(",") if args.methods else [],
                    "paths": args.paths.split(",") if args.paths else []})

    def apply(self, cfg):
        self.mode = cfg.get("mode", "none")
        self.rate = float(cfg.get("rate", 1.0))
        count = cfg.get("count", -1)
        self.left = -1 if count is None else int(count)
        self.delay_ms = int(cfg.get("delay_ms", 0))
        self.stall_ms = int(cfg.get("stall_ms", 0))
        self.methods = {m.upper() for m in cfg.get("methods", []) or []}
        self.paths = [p for p in cfg.get("paths", []) or [] if p]
        self.rng = random.Random(cfg.get("seed", 1))

    def reload(self):
        if not self.control:
            return
        try:
            mt = os.stat(self.control).st_mtime_ns
        except FileNotFoundError:
            return
        if mt == self.mtime:
            return
        with open(self.control) as f:
            text = f.read()
        if not text.strip():
            return
        self.mtime = mt
        self.apply(json.loads(text))

    def decide(self, method, path=""):
        """Return (fault mode or None, delay in ms) for one request."""
        with self.lock:
            self.reload()
            self.stats["requests"] += 1
            fault = None
            if (self.mode != "none" and self.left != 0 and
                    (not self.methods or method in self.methods) and
                    (not self.paths or any(p in path for p in self.paths)) and
                    self.rng.random() < self.rate):
                fault = self.mode
                if self.left > 0:
                    self.left -= 1
                self.stats["faults"] += 1
                self.stats["by_mode"][fault] = self.stats["by_mode"].get(fault, 0) + 1
            self.write_stats()
            return fault, self.delay_ms + (self.stall_ms if fault == "stall" else 0)

    def connected(self):
        with self.lock:
            self.stats["connections"] += 1
            self.write_stats()

    def write_stats(self):
        if not self.stats_path:
            return
        tmp = self.stats_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.stats, f)
        os.replace(tmp, self.stats_path)


def make_handler(policy, upstream):
    host, port = upstream.rsplit(":", 1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            policy.connected()

        def log_message(self, fmt, *a):
            pass

        def reset(self):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def answer(self, status, headers, body, content_length=None):
            self.send_response_only(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length",
                             str(len(body) if content_length is None else content_length))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

        def handle_any(self):
            method = self.command
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            fault, delay = policy.decide(method, self.path)
            if delay:
                time.sleep(delay / 1000.0)
            if fault == "503":
                return self.answer(503, [("Content-Type", "application/xml")], SLOWDOWN)
            if fault == "error200":
                return self.answer(200, [("Content-Type", "application/xml")], INTERNAL)

            up = http.client.HTTPConnection(host, int(port), timeout=60)
            try:
                up.putrequest(method, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():
                    if k.lower() not in ("connection", "keep-alive", "proxy-connection"):
                        up.putheader(k, v)
                up.endheaders(body if body else None)
                resp = up.getresponse()
                data = resp.read()
                rhead = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP]
                status = resp.status
                up_len = resp.getheader("Content-Length")
            finally:
                up.close()
            if method == "HEAD":
                # no body; keep the object's length
                self.send_response_only(status)
                for k, v in rhead:
                    self.send_header(k, v)
                if up_len is not None:
                    self.send_header("Content-Length", up_len)
                self.end_headers()
                self.wfile.flush()
                return
            half = data[: len(data) // 2]
            if fault == "reset":
                if data:
                    self.send_response_only(status)
                    for k, v in rhead:
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(half)
                    self.wfile.flush()
                return self.reset()
            if fault == "truncate" and data:
                self.answer(status, rhead, half, content_length=len(data))
                self.close_connection = True
                return
            if fault == "short" and data:
                return self.answer(status, rhead, half)
            self.answer(status, rhead, data)

        do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = handle_any

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True, help="HOST:PORT of s3rver")
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--stats")
    ap.add_argument("--control")
    ap.add_argument("--mode", default="none",
                    choices=["none", "503", "error200", "reset", "truncate", "short", "stall"])
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--count", type=int, default=-1)
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--stall-ms", type=int, default=0)
    ap.add_argument("--methods", default="")
    ap.add_argument("--paths", default="", help="comma-separated path substrings")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    policy = Policy(args)
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 64
    srv = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(policy, args.upstream))
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.replace(tmp, args.port_file)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
