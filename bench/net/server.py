#!/usr/bin/env python3
"""server.py — bench/net's test-internet servers (stdlib only). Runs in the
internet netns that tests/integration/netlib.sh builds, next to netlib.py's
servers, and serves the bulk and latency traffic the guest measures.

  server.py PORT_TCP PORT_TLS CERT KEY

PORT_TCP, plain TCP; the first byte of a connection picks the job:
  'D' + 8-byte big-endian N   the server sends N bytes, then closes
  'U'                         the server reads to EOF, answers the 8-byte count
  'E'                         the server answers 'e' at once (first-byte latency)
PORT_TLS, HTTPS (HTTP/1.1, keep-alive) with CERT/KEY:
  GET /down/N                 200 with N bytes (Content-Length)
  PUT /up                     reads the body, 200 with its length as text
  GET /ping                   200 with 2 bytes
One thread per connection; 1 MiB writes so the server never is the
bottleneck of the measurement (it runs on the host's CPU, the guest runs
under the emulator).
"""
import socket
import socketserver
import ssl
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BLOCK = b'\x5a' * (1 << 20)


def send_n(write, n):
    while n > 0:
        k = min(n, len(BLOCK))
        write(BLOCK[:k] if k < len(BLOCK) else BLOCK)
        n -= k


class Raw(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        op = s.recv(1)
        if op == b'E':
            s.sendall(b'e')
            s.recv(1)                   # until the client closes
        elif op == b'D':
            hdr = b''
            while len(hdr) < 8:
                b = s.recv(8 - len(hdr))
                if not b:
                    return
                hdr += b
            send_n(s.sendall, struct.unpack('!Q', hdr)[0])
            s.shutdown(socket.SHUT_WR)
        elif op == b'U':
            buf = bytearray(1 << 20)
            total = 0
            while True:
                k = s.recv_into(buf)
                if not k:
                    break
                total += k
            s.sendall(struct.pack('!Q', total))


class Http(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        if self.path.startswith('/down/'):
            n = int(self.path[6:])
        else:
            n = 2
        self.send_response(200)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(n))
        self.end_headers()
        send_n(self.wfile.write, n)

    def do_PUT(self):
        left = int(self.headers.get('Content-Length', '0'))
        while left > 0:
            b = self.rfile.read(min(left, 1 << 20))
            if not b:
                break
            left -= len(b)
        out = str(int(self.headers.get('Content-Length', '0')) - left).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(out)))
        self.end_headers()
        self.wfile.write(out)


class TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class TlsServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    tcp_port, tls_port, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    t = TcpServer(('0.0.0.0', tcp_port), Raw)
    threading.Thread(target=t.serve_forever, daemon=True).start()
    h = TlsServer(('0.0.0.0', tls_port), Http)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    h.socket = ctx.wrap_socket(h.socket, server_side=True)
    print('bench servers up', flush=True)
    h.serve_forever()


if __name__ == '__main__':
    main()
