#!/usr/bin/env python3
"""netlib.py — the test "internet" servers for netmed's integration tests
(stdlib only). Run inside the internet netns made by netlib.sh:

  netlib.py dns  ADDR PORT ZONEFILE     UDP DNS for test names
  netlib.py web  DIR                    HTTP :80 :8080, HTTPS :443 (DIR/server.{crt,key})

ZONEFILE lines: "name addr[,addr2,...]"; a name with several addresses
answers them in turn, one per query (the last repeats): a rebinding stand-in.
The web server echoes each request back as JSON (method, path, headers,
body, the local address it arrived on) and mirrors Authorization in an
X-Echo-Authorization response header; every request is appended to
DIR/requests.log so tests can prove what did (not) arrive.
"""
import json
import os
import socket
import socketserver
import ssl
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def dns_main(addr, port, zonefile):
    zone = {}
    with open(zonefile) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                zone[parts[0].lower().rstrip('.')] = parts[1].split(',')
    counts = {}
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, int(port)))
    while True:
        q, peer = s.recvfrom(1500)
        if len(q) < 12:
            continue
        qid, flags, qd = struct.unpack('!HHH', q[:6])
        off, labels = 12, []
        while off < len(q) and q[off] != 0:
            ln = q[off]
            labels.append(q[off + 1:off + 1 + ln].decode('ascii', 'replace'))
            off += 1 + ln
        qtype, qclass = struct.unpack('!HH', q[off + 1:off + 5])
        question = q[12:off + 5]
        name = '.'.join(labels).lower()
        addrs = zone.get(name)
        answers = b''
        rcode = 0
        if addrs is None:
            rcode = 3
        elif qtype == 1:
            i = counts.get(name, 0)
            counts[name] = i + 1
            a = addrs[min(i, len(addrs) - 1)]
            answers = struct.pack('!HHHIH', 0xc00c, 1, 1, 0, 4) + socket.inet_aton(a)
        with open(zonefile + '.log', 'a') as lf:
            lf.write('%s %d\n' % (name, qtype))
        hdr = struct.pack('!HHHHHH', qid, 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
        s.sendto(hdr + question + answers, peer)


class Echo(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, fmt, *args):
        pass

    def _body(self):
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            data = b''
            while True:
                size = int(self.rfile.readline().split(b';')[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get('Content-Length', '0'))
        return self.rfile.read(n) if n else b''

    def _handle(self):
        if self.headers.get('Upgrade', '').lower() == 'websocket':
            # enough of RFC 6455 for a tunnel test: 101, then echo raw bytes
            import base64, hashlib
            key = self.headers.get('Sec-WebSocket-Key', '')
            acc = base64.b64encode(hashlib.sha1(
                (key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').encode()).digest()).decode()
            self.send_response(101)
            self.send_header('Upgrade', 'websocket')
            self.send_header('Connection', 'Upgrade')
            self.send_header('Sec-WebSocket-Accept', acc)
            self.end_headers()
            self.wfile.flush()
            while True:
                b = self.connection.recv(65536)
                if not b:
                    break
                self.connection.sendall(b)
            self.close_connection = True
            return
        body = self._body()
        local = self.connection.getsockname()
        rec = {
            'method': self.command, 'path': self.path,
            'headers': [[k, v] for k, v in self.headers.items()],
            'body': body.decode('latin-1'), 'local': '%s:%d' % local,
        }
        with open(os.path.join(self.server.dir, 'requests.log'), 'a') as f:
            f.write(json.dumps(rec) + '\n')
        if self.path.startswith('/stream'):
            # chunked response that echoes Authorization split across chunks
            self.send_response(200)
            self.send_header('Transfer-Encoding', 'chunked')
            self.end_headers()
            auth = (self.headers.get('Authorization') or '').encode()
            for piece in (b'start:', auth[:5], auth[5:], b':end'):
                if piece:
                    self.wfile.write(b'%x\r\n%s\r\n' % (len(piece), piece))
            self.wfile.write(b'0\r\n\r\n')
            return
        if self.path.startswith('/gzip'):
            out = b'\x1f\x8b' + (self.headers.get('Authorization') or '').encode()
            self.send_response(200)
            self.send_header('Content-Encoding', 'gzip')
            self.send_header('Content-Length', str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        out = json.dumps(rec).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(out)))
        if self.headers.get('Authorization'):
            self.send_header('X-Echo-Authorization', self.headers['Authorization'])
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def web_main(d):
    servers = []
    for port in (80, 8080, 443):
        srv = Server(('0.0.0.0', port), Echo)
        srv.dir = d
        if port == 443:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(os.path.join(d, 'server.crt'), os.path.join(d, 'server.key'))
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        servers.append(srv)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    # a raw TCP echo on 7 (for splice tests) and a UDP echo on 9 (must never
    # see a guest datagram)
    class TcpEcho(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                b = self.request.recv(65536)
                if not b:
                    break
                self.request.sendall(b)
    t = socketserver.ThreadingTCPServer(('0.0.0.0', 7), TcpEcho)
    t.daemon_threads = True
    threading.Thread(target=t.serve_forever, daemon=True).start()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(('0.0.0.0', 9))
    while True:
        b, peer = u.recvfrom(2048)
        with open(os.path.join(d, 'udp.log'), 'a') as f:
            f.write('%s %r\n' % (peer[0], b))
        u.sendto(b, peer)


if __name__ == '__main__':
    if sys.argv[1] == 'dns':
        dns_main(*sys.argv[2:5])
    elif sys.argv[1] == 'web':
        web_main(sys.argv[2])
