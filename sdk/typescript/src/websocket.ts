// websocket.ts — a minimal RFC 6455 client over an already-upgraded socket:
// masked frames out, fragment reassembly in, ping answered, close handshake.
// Enough for lanesd's shell protocol; not a general-purpose WebSocket.
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import type { Duplex } from "node:stream";

export const OP_TEXT = 1;
export const OP_BINARY = 2;
const OP_CLOSE = 8;
const OP_PING = 9;
const OP_PONG = 10;

export interface WsEvents {
  message: (data: Buffer, isText: boolean) => void;
  close: (code: number, reason: string) => void;
}

export class WsConnection extends EventEmitter {
  private buf: Buffer = Buffer.alloc(0);
  private frags: Buffer[] = [];
  private fragOp = 0;
  private closeSent = false;
  private closed = false;

  constructor(private readonly socket: Duplex, head: Buffer) {
    super();
    socket.on("data", (d: Buffer) => this.feed(d));
    socket.on("close", () => this.finish(1006, "connection dropped"));
    socket.on("error", () => this.finish(1006, "connection error"));
    if (head.length) queueMicrotask(() => this.feed(head));
  }

  send(op: number, data: Buffer | string): boolean {
    if (this.closeSent || this.closed) return false;
    return this.socket.write(encodeFrame(op, typeof data === "string" ? Buffer.from(data, "utf8") : data));
  }

  /** Start the close handshake (the 'close' event follows). */
  close(code = 1000, reason = ""): void {
    if (this.closeSent || this.closed) return;
    const r = Buffer.from(reason, "utf8").subarray(0, 123);
    const p = Buffer.alloc(2 + r.length);
    p.writeUInt16BE(code, 0);
    r.copy(p, 2);
    this.socket.write(encodeFrame(OP_CLOSE, p));
    this.closeSent = true;
    setTimeout(() => this.socket.destroy(), 5000).unref();
  }

  /** Backpressure: wait until the socket's write buffer drained. */
  drained(): Promise<void> {
    if (!this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => this.socket.once("drain", () => resolve()));
  }

  private finish(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.emit("close", code, reason);
  }

  private feed(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    for (;;) {
      if (this.buf.length < 2) return;
      const b0 = this.buf[0], b1 = this.buf[1];
      if (b1 & 0x80) return this.finish(1002, "masked server frame");
      let len = b1 & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      if (this.buf.length < off + len) return;
      const payload = this.buf.subarray(off, off + len);
      this.buf = this.buf.subarray(off + len);
      this.frame((b0 & 0x80) !== 0, b0 & 0x0f, payload);
      if (this.closed) return;
    }
  }

  private frame(fin: boolean, op: number, payload: Buffer): void {
    if (op === OP_PING) {
      if (!this.closeSent) this.socket.write(encodeFrame(OP_PONG, payload));
      return;
    }
    if (op === OP_PONG) return;
    if (op === OP_CLOSE) {
      const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      const reason = payload.length > 2 ? payload.subarray(2).toString("utf8") : "";
      if (!this.closeSent) {
        this.socket.write(encodeFrame(OP_CLOSE, payload.subarray(0, 2)));
        this.closeSent = true;
      }
      this.finish(code, reason);
      return;
    }
    if (op === 0) {
      this.frags.push(Buffer.from(payload));
    } else {
      this.fragOp = op;
      this.frags = [Buffer.from(payload)];
    }
    if (fin) {
      const msg = this.frags.length === 1 ? this.frags[0] : Buffer.concat(this.frags);
      this.frags = [];
      this.emit("message", msg, this.fragOp === OP_TEXT);
    }
  }
}

function encodeFrame(op: number, data: Buffer): Buffer {
  const n = data.length;
  const hlen = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const f = Buffer.alloc(hlen + 4 + n);
  f[0] = 0x80 | op;
  if (n < 126) f[1] = 0x80 | n;
  else if (n < 65536) {
    f[1] = 0x80 | 126;
    f.writeUInt16BE(n, 2);
  } else {
    f[1] = 0x80 | 127;
    f.writeBigUInt64BE(BigInt(n), 2);
  }
  const mask = randomBytes(4);
  mask.copy(f, hlen);
  for (let i = 0; i < n; i++) f[hlen + 4 + i] = data[i] ^ mask[i & 3];
  return f;
}
