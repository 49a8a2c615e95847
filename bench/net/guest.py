#!/usr/bin/env python3
"""guest.py — bench/net's client, run inside the lane (debian image:
python3 only, stdlib only). Prints one JSON object.

  guest.py tcp  ADDR PORT MIB           bulk download and upload, MB/s
  guest.py lat  ADDR PORT N             N new connections: ms from connect()
                                        to the server's first byte
  guest.py https NAME ADDR PORT CA MIB  bulk GET and PUT over one HTTPS
                                        keep-alive connection, MB/s
  guest.py hlat NAME ADDR PORT CA N     N new connections: ms for connect +
                                        TLS handshake + GET /ping (ADDR is
                                        resolved once, before the samples)

ADDR is dialled; NAME is the TLS server name (and Host). The protocol of
the plain port is bench/net/server.py's.
"""
import http.client
import json
import socket
import ssl
import struct
import sys
import time

MIB = 1 << 20


def tcp(addr, port, mib):
    n = mib * MIB
    buf = bytearray(MIB)
    t0 = time.perf_counter()
    s = socket.create_connection((addr, port), timeout=120)
    s.sendall(b'D' + struct.pack('!Q', n))
    got = 0
    while True:
        k = s.recv_into(buf)
        if not k:
            break
        got += k
    down_s = time.perf_counter() - t0
    s.close()
    if got != n:
        raise SystemExit('download: got %d of %d bytes' % (got, n))
    block = b'\xa5' * MIB
    t0 = time.perf_counter()
    s = socket.create_connection((addr, port), timeout=120)
    s.sendall(b'U')
    for _ in range(mib):
        s.sendall(block)
    s.shutdown(socket.SHUT_WR)
    ack = b''
    while len(ack) < 8:
        b = s.recv(8 - len(ack))
        if not b:
            break
        ack += b
    up_s = time.perf_counter() - t0
    s.close()
    if len(ack) != 8 or struct.unpack('!Q', ack)[0] != n:
        raise SystemExit('upload: server counted %r of %d bytes' % (ack, n))
    return {"mib": mib, "down_s": down_s, "up_s": up_s,
            "down_MBps": n / down_s / 1e6, "up_MBps": n / up_s / 1e6}


BATCH = 10


def batched(count, one):
    """count samples of one() (ms each) and, per batch of BATCH, the batch's
    wall time / BATCH: the guest's clock may tick in 4 ms steps under the
    emulator (no TSC, HPET or PM timer on microvm), so single samples are
    quantized; a batch mean has 1/BATCH of that step."""
    out, batches = [], []
    while len(out) < count:
        t0 = time.perf_counter()
        for _ in range(min(BATCH, count - len(out))):
            out.append(one())
        n = len(out) % BATCH or BATCH
        batches.append((time.perf_counter() - t0) * 1000 / n)
    return {"ms": out, "batch_mean_ms": batches}


def lat(addr, port, count):
    def one():
        t0 = time.perf_counter()
        s = socket.create_connection((addr, port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b'E')
        if s.recv(1) != b'e':
            raise SystemExit('latency: no echo')
        ms = (time.perf_counter() - t0) * 1000
        s.close()
        return ms
    return batched(count, one)


def https_conn(name, addr, port, ca):
    """An HTTPS connection that dials ADDR and verifies the server as NAME."""
    ctx = ssl.create_default_context(cafile=ca)
    c = http.client.HTTPSConnection(name, port, context=ctx, timeout=120)
    raw = socket.create_connection((addr, port), timeout=120)
    c.sock = ctx.wrap_socket(raw, server_hostname=name)
    return c


def https(name, addr, port, ca, mib):
    n = mib * MIB
    c = https_conn(name, addr, port, ca)
    hdr = {"Host": name}
    c.request("GET", "/ping", headers=hdr)         # handshake outside the timing
    c.getresponse().read()
    buf = bytearray(MIB)
    t0 = time.perf_counter()
    c.request("GET", "/down/%d" % n, headers=hdr)
    r = c.getresponse()
    got = 0
    while True:
        k = r.readinto(buf)
        if not k:
            break
        got += k
    down_s = time.perf_counter() - t0
    if r.status != 200 or got != n:
        raise SystemExit('https download: status %d, %d of %d bytes' % (r.status, got, n))
    block = b'\xa5' * MIB
    t0 = time.perf_counter()
    c.request("PUT", "/up", body=(block for _ in range(mib)),
              headers={"Host": name, "Content-Length": str(n)})
    r = c.getresponse()
    body = r.read()
    up_s = time.perf_counter() - t0
    if r.status != 200 or int(body) != n:
        raise SystemExit('https upload: status %d, body %r' % (r.status, body[:100]))
    c.close()
    return {"mib": mib, "down_s": down_s, "up_s": up_s,
            "down_MBps": n / down_s / 1e6, "up_MBps": n / up_s / 1e6}


def hlat(name, addr, port, ca, count):
    # resolve once: the samples time connections, not the guest's resolver
    addr = socket.gethostbyname(addr)

    def one():
        t0 = time.perf_counter()
        c = https_conn(name, addr, port, ca)
        c.request("GET", "/ping", headers={"Host": name})
        r = c.getresponse()
        r.read()
        ms = (time.perf_counter() - t0) * 1000
        c.close()
        if r.status != 200:
            raise SystemExit('hlat: status %d' % r.status)
        return ms
    return batched(count, one)


def main():
    a = sys.argv[1:]
    if a[0] == 'tcp':
        r = tcp(a[1], int(a[2]), int(a[3]))
    elif a[0] == 'lat':
        r = lat(a[1], int(a[2]), int(a[3]))
    elif a[0] == 'https':
        r = https(a[1], a[2], int(a[3]), a[4], int(a[5]))
    elif a[0] == 'hlat':
        r = hlat(a[1], a[2], int(a[3]), a[4], int(a[5]))
    else:
        raise SystemExit('unknown mode %s' % a[0])
    print(json.dumps(r))


if __name__ == '__main__':
    main()
