// client.ts — the transport: HTTP/1.1 to lanesd over its unix socket (or TCP
// with a bearer token), with JSON, NDJSON-stream and WebSocket-upgrade calls.
// Only Node's built-in modules are used.
import { createHash, randomBytes } from "node:crypto";
import * as http from "node:http";
import * as path from "node:path";
import type { Duplex, Readable } from "node:stream";

export interface ClientOptions {
  /** lanesd's unix socket. Default: $LANES_SOCKET, else
   *  $XDG_RUNTIME_DIR/lanes/lanesd.sock, else /run/lanes/lanesd.sock. */
  socketPath?: string;
  /** Use TCP instead, e.g. "http://127.0.0.1:7070" (lanesd --listen-tcp). */
  url?: string;
  /** Bearer token for TCP (lanesd --tokens). Default: $LANES_TOKEN. */
  token?: string;
}

/** An error answered by lanesd: {"error":{"code","message"}} plus the HTTP status. */
export class LanesError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = "LanesError";
    this.status = status;
    this.code = code;
  }
}

export interface RequestOptions {
  body?: Buffer | string | Readable | object;
  headers?: Record<string, string>;
  query?: Record<string, string | number | boolean | undefined>;
  /** Abort the request (and any stream it carries). */
  signal?: AbortSignal;
}

export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.LANES_SOCKET) return env.LANES_SOCKET;
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, "lanes", "lanesd.sock");
  return "/run/lanes/lanesd.sock";
}

function isReadable(b: unknown): b is Readable {
  return typeof b === "object" && b !== null && typeof (b as Readable).pipe === "function";
}

async function readAll(res: http.IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of res) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** Turn a non-2xx answer into a LanesError. */
export async function errorFrom(res: http.IncomingMessage): Promise<LanesError> {
  const raw = (await readAll(res)).toString("utf8");
  try {
    const e = JSON.parse(raw).error;
    if (e && typeof e.code === "string") return new LanesError(res.statusCode ?? 0, e.code, e.message ?? e.code);
  } catch {
    // not JSON
  }
  return new LanesError(res.statusCode ?? 0, "http_error", `lanesd answered HTTP ${res.statusCode}: ${raw.slice(0, 200)}`);
}

export class LanesClient {
  readonly socketPath?: string;
  readonly url?: URL;
  private readonly token?: string;
  private readonly agent: http.Agent;

  constructor(opts: ClientOptions = {}) {
    if (opts.url) this.url = new URL(opts.url);
    else this.socketPath = opts.socketPath ?? defaultSocketPath();
    this.token = opts.token ?? process.env.LANES_TOKEN;
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  }

  /** Free pooled connections (lets the process exit promptly). */
  close(): void {
    this.agent.destroy();
  }

  private options(method: string, p: string, headers: Record<string, string>): http.RequestOptions {
    const o: http.RequestOptions = { method, path: p, headers: { ...headers }, agent: this.agent };
    if (this.url) {
      o.host = this.url.hostname;
      o.port = this.url.port || 80;
      if (this.token) (o.headers as Record<string, string>).authorization = `Bearer ${this.token}`;
    } else {
      o.socketPath = this.socketPath;
      o.host = "lanes";
    }
    return o;
  }

  static path(p: string, query?: RequestOptions["query"]): string {
    if (!query) return p;
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, String(v));
    const s = q.toString();
    return s ? `${p}?${s}` : p;
  }

  /** One request; resolves with the response (any status) once headers arrive. */
  request(method: string, p: string, opts: RequestOptions = {}): Promise<http.IncomingMessage> {
    const headers = { ...(opts.headers ?? {}) };
    let body = opts.body;
    if (body !== undefined && !Buffer.isBuffer(body) && typeof body !== "string" && !isReadable(body)) {
      body = JSON.stringify(body);
      headers["content-type"] ??= "application/json";
    }
    const o = this.options(method, LanesClient.path(p, opts.query), headers);
    if (opts.signal) o.signal = opts.signal;
    return new Promise((resolve, reject) => {
      const req = http.request(o, resolve);
      req.on("error", reject);
      if (isReadable(body)) {
        body.on("error", (e) => req.destroy(e));
        body.pipe(req);
      } else {
        req.end(body);
      }
    });
  }

  /** JSON call: parsed body of a 2xx answer (undefined when empty), else throws LanesError. */
  async json<T = unknown>(method: string, p: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.request(method, p, opts);
    if ((res.statusCode ?? 0) >= 300) throw await errorFrom(res);
    const raw = await readAll(res);
    return (raw.length ? JSON.parse(raw.toString("utf8")) : undefined) as T;
  }

  /** Raw 2xx body as bytes (with the response for its headers). */
  async bytes(method: string, p: string, opts: RequestOptions = {}): Promise<{ body: Buffer; res: http.IncomingMessage }> {
    const res = await this.request(method, p, opts);
    if ((res.statusCode ?? 0) >= 300) throw await errorFrom(res);
    return { body: await readAll(res), res };
  }

  /** The 2xx response itself, a Readable of the body (else throws LanesError). */
  async stream(method: string, p: string, opts: RequestOptions = {}): Promise<http.IncomingMessage> {
    const res = await this.request(method, p, opts);
    if ((res.statusCode ?? 0) >= 300) throw await errorFrom(res);
    return res;
  }

  /** NDJSON stream: yields one parsed object per line as lines arrive. With
   * opts.signal, an abort ends the iteration quietly (no error). */
  async *ndjson<T = unknown>(method: string, p: string, opts: RequestOptions = {}): AsyncGenerator<T> {
    let res: http.IncomingMessage;
    try {
      res = await this.request(method, p, opts);
    } catch (e) {
      if (opts.signal?.aborted) return;
      throw e;
    }
    if ((res.statusCode ?? 0) >= 300) throw await errorFrom(res);
    let buf = "";
    try {
      for await (const chunk of res) {
        buf += (chunk as Buffer).toString("utf8");
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) yield JSON.parse(line) as T;
        }
      }
      if (buf.trim()) yield JSON.parse(buf) as T;
    } catch (e) {
      if (!opts.signal?.aborted) throw e;
    } finally {
      res.destroy();
    }
  }

  /** WebSocket upgrade of GET p: resolves with the raw socket and any bytes after the handshake. */
  upgrade(p: string, query?: RequestOptions["query"]): Promise<{ socket: Duplex; head: Buffer; key: string }> {
    const key = randomBytes(16).toString("base64");
    const want = createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
    const headers = {
      connection: "Upgrade",
      upgrade: "websocket",
      "sec-websocket-key": key,
      "sec-websocket-version": "13",
    };
    const o = this.options("GET", LanesClient.path(p, query), headers);
    o.agent = false; // an upgraded socket leaves the pool
    return new Promise((resolve, reject) => {
      const req = http.request(o);
      req.on("upgrade", (res, socket, head) => {
        if (res.headers["sec-websocket-accept"] !== want) {
          socket.destroy();
          reject(new LanesError(res.statusCode ?? 0, "bad_handshake", "invalid Sec-WebSocket-Accept from lanesd"));
          return;
        }
        resolve({ socket, head, key });
      });
      req.on("response", (res) => errorFrom(res).then(reject, reject));
      req.on("error", reject);
      req.end();
    });
  }
}
