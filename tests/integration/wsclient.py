"""wsclient.py — an independent RFC 6455 client for the shell tests.

Written for the tests (raw socket over lanesd's unix socket, python3 only),
so lanesd's WebSocket code is checked against something that is not itself.
Used by t_api_shell.sh and t_api_sessions.sh.

    ws = WS(sock_path, "/v1/lanes/x/shell?rows=30&cols=100")
    ws.status / ws.head / ws.body   the handshake answer (body: after a refusal)
    ws.started()                    the first control message ({"type":"started",...})
    ws.stdin("ls\\n"); ws.ctl(type="resize", rows=40, cols=120)
    ws.until("text")                read until the output holds text
    ws.until_exit() / until_close() read to the close frame
    ws.out, ws.ctls                 all output bytes / control messages seen
"""
import base64
import hashlib
import json
import os
import socket
import struct
import time

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WS:
    def __init__(self, sock_path, path, timeout=60):
        self.timeout = timeout
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(sock_path)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET {path} HTTP/1.1\r\nHost: lanes\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            d = self.s.recv(4096)
            if not d:
                raise SystemExit("EOF during handshake: %r" % self.buf)
            self.buf += d
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split()[1])
        self.head = head.decode()
        self.body = self.buf
        if self.status == 101:
            want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            assert ("Sec-WebSocket-Accept: " + want) in self.head, self.head
        self.out = b""
        self.ctls = []

    def send(self, op, data):
        if isinstance(data, str):
            data = data.encode()
        mask = os.urandom(4)
        n = len(data)
        h = bytes([0x80 | op])
        if n < 126:
            h += bytes([0x80 | n])
        elif n < 65536:
            h += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            h += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.s.sendall(h + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def ctl(self, **kw):
        self.send(1, json.dumps(kw))

    def stdin(self, text):
        self.send(2, text)

    def _need(self, n):
        while len(self.buf) < n:
            d = self.s.recv(65536)
            if not d:
                raise EOFError()
            self.buf += d
        r, self.buf = self.buf[:n], self.buf[n:]
        return r

    def frame(self):
        """(opcode, payload) of the next frame; server frames are never masked."""
        b0, b1 = self._need(2)
        assert not (b1 & 0x80), "server frame masked"
        n = b1 & 0x7f
        if n == 126:
            n = struct.unpack(">H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._need(8))[0]
        return b0 & 0x0f, self._need(n)

    def started(self):
        op, d = self.frame()
        m = json.loads(d)
        assert op == 1 and m["type"] == "started", (op, d)
        return m

    def until(self, needle, timeout=None):
        """Read until needle shows up in the output (control messages go to ctls)."""
        end = time.time() + (timeout or self.timeout)
        while needle.encode() not in self.out:
            if time.time() > end:
                raise SystemExit("timeout waiting for %r; output so far %r" % (needle, self.out[-500:]))
            op, d = self.frame()
            if op == 2:
                self.out += d
            elif op == 1:
                self.ctls.append(json.loads(d))
            elif op == 8:
                raise SystemExit("closed while waiting for %r: %r; output %r" % (needle, d, self.out[-500:]))

    def until_close(self):
        """Read to the close frame and answer it: (last control message, close code)."""
        last = None
        while True:
            op, d = self.frame()
            if op == 2:
                self.out += d
            elif op == 1:
                last = json.loads(d)
                self.ctls.append(last)
            elif op == 8:
                code = struct.unpack(">H", d[:2])[0] if len(d) >= 2 else 1005
                try:
                    self.send(8, d[:2])
                except OSError:
                    pass
                return last, code

    def until_exit(self):
        """Read to the close frame: (the exit or error message, close code)."""
        _, code = self.until_close()
        ends = [m for m in self.ctls if m.get("type") in ("exit", "error")]
        return (ends[-1] if ends else None), code

    def drop(self):
        self.s.close()  # no close frame: a client that went away
