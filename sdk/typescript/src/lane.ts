// lane.ts — the Lane object: lifecycle, exec (buffered and streaming),
// files and archives, interactive shells, snapshots and forks, network
// policy/secrets/audit/approvals and logs, over LanesClient.
import type { Readable } from "node:stream";

import { LanesClient, LanesError } from "./client.js";
import { camelKeys, textChunks } from "./convert.js";
import { OP_BINARY, OP_TEXT, WsConnection } from "./websocket.js";

export type LaneState = "created" | "booting" | "running" | "stopping" | "stopped" | "failed";

/** A lane as lanesd describes it (GET /v1/lanes/{name}). */
export interface LaneInfo {
  name: string;
  id: string;
  state: LaneState;
  reason: string | null;
  image: string;
  cpus: number;
  memory_mib: number;
  disk_gib: number;
  ttl_s?: number;
  idle_timeout_s?: number;
  accel: string | null;
  created_at: string | null;
  booted_at: string | null;
  [field: string]: unknown;
}

export interface CreateOptions {
  name: string;
  image?: string;
  cpus?: number;
  memoryMib?: number;
  diskGib?: number;
  /** Stop the lane this many seconds after each boot (0 = never). */
  ttlS?: number;
  /** Stop the lane after this many idle seconds (0 = never). */
  idleTimeoutS?: number;
  /** "mediated" (default: a NIC filtered by netmed) or "none" (no NIC). */
  network?: "mediated" | "none";
  /** Initial network policy (default denies everything). */
  policy?: NetworkPolicy;
  /** Block store for the disk: "local" (default) or an added S3 store. */
  store?: string;
  /** Boot right away (and wait until it runs). */
  boot?: boolean;
  client?: LanesClient;
}

export interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  /** Kill the command after this long (the exit then has timedOut). */
  timeoutMs?: number;
  /** Kill the command once stdout+stderr exceed this many bytes. */
  maxOutputBytes?: number;
  /** Standard input: all of it (buffered exec) or a stream (execStream). */
  stdin?: string | Buffer | Readable;
}

export interface ExitStatus {
  exitCode: number | null;
  signal: number | null;
  timedOut: boolean;
  outputLimitExceeded: boolean;
}

export interface ExecResult extends ExitStatus {
  stdout: string;
  stderr: string;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
}

/** A named, persistent shell session (GET /v1/lanes/{name}/sessions). */
export interface ShellSessionInfo {
  name: string;
  execId: string;
  pid: number | null;
  createdAt: string;
  attached: boolean;
  lastActivityAt: string;
  bufferedBytes: number;
}

export interface ShellOptions {
  rows?: number;
  cols?: number;
  term?: string;
  user?: string;
  cwd?: string;
  shell?: string;
  /** Attach to (or create) this named session: it outlives the connection. */
  session?: string;
  /** Detach the session's current client instead of failing with 409 session_busy. */
  takeover?: boolean;
}

/** GET /v1/lanes/{name}/files/stat (and each entry of files/list). */
export interface FileStat {
  name: string;
  path: string;
  type: "file" | "dir" | "symlink" | "char" | "block" | "fifo" | "socket" | "unknown";
  /** Permission bits (e.g. 0o644). */
  mode: number;
  size: number;
  /** Unix seconds. */
  mtime: number;
  uid: number;
  gid: number;
}

function statFrom(x: Record<string, unknown>): FileStat {
  return { ...(x as unknown as FileStat), mode: parseInt(String(x.mode ?? "0"), 8) };
}

/** A snapshot of a lane's disk (GET /v1/lanes/{name}/snapshots). */
export interface SnapshotInfo {
  name: string;
  lane: string;
  /** Unix seconds. */
  createdAt: number;
  /** Own snapshot NAME, LANE@NAME of another lane, or image:NAME. */
  parent: string | null;
  sizeBytes: number;
  /** Bytes only this snapshot references (freed by deleting it). */
  uniqueBytes?: number;
  logicalBytes?: number;
}

/** What lane.snapshot() answers: the snapshot plus how long each step took. */
export interface SnapshotResult extends SnapshotInfo {
  timings: { freezeMs: number; flushMs: number; commitMs: number; thawMs: number };
  /** The lane was running (its filesystem was frozen meanwhile). */
  running: boolean;
  diskGenerationBefore: number;
  diskGeneration: number;
}

/** A network policy (docs/policy.md, api/policy.schema.json); its field
 * names are the policy format's own. */
export interface PolicyRule {
  host?: string;
  cidr?: string;
  ports?: (number | string)[];
  transport?: "tcp";
  intercept?: boolean;
  allowPrivate?: boolean;
  action?: "allow" | "ask" | "deny";
  comment?: string;
  [field: string]: unknown;
}

export interface NetworkPolicy {
  mode?: "allowlist" | "open";
  blockPrivateRanges?: boolean;
  dns?: { mode?: "synthetic" | "trusted" | "open"; servers?: string[] };
  onUnmatched?: "deny" | "ask";
  approvalTimeoutSeconds?: number;
  allow?: PolicyRule[];
  [field: string]: unknown;
}

/** A lane secret: never its value, which is write-only. */
export interface SecretInfo {
  name: string;
  hosts: string[];
  /** What the guest sees as $NAME. */
  placeholder: string;
  updatedAt?: string;
}

export interface AuditFilters {
  /** conn, dns, http, approval, policy, start, stop, ... */
  kind?: string;
  decision?: string;
  /** Host pattern; "*" matches any run of characters. */
  host?: string;
  /** Unix ms, inclusive. */
  since?: number;
  /** Unix ms, exclusive. */
  until?: number;
  /** Only entries with a larger id (paging). */
  after?: number;
  limit?: number;
}

/** One netmed audit record as netmed wrote it (its own field names), with
 * lanesd's row id and `kind` (= the record's `ev`). */
export interface AuditEntry {
  id: number;
  kind: string;
  ev: string;
  /** When netmed wrote it (ISO 8601; the since/until filters take unix ms). */
  ts?: string;
  decision?: string;
  host?: string;
  [field: string]: unknown;
}

function auditQuery(f: AuditFilters): Record<string, string | number | undefined> {
  return { kind: f.kind, decision: f.decision, host: f.host, since: f.since, until: f.until, after: f.after, limit: f.limit };
}

function auditFrom(x: Record<string, unknown>): AuditEntry {
  return { ...x, kind: String(x.ev ?? ""), ev: String(x.ev ?? ""), id: Number(x.id) };
}

/** A connection netmed holds for a human decision (GET .../approvals). */
export interface Approval {
  id: string;
  host: string | null;
  addr: string;
  port: number;
  src?: string;
  rule: number;
  intercept?: boolean;
  allowPrivate?: boolean;
  createdMs?: number;
  timeoutS: number;
}

export interface ApprovalDecision {
  id: string;
  decision: "allow" | "deny";
  remember: boolean;
  approval?: Approval;
  /** The rule added to the policy (remember only). */
  rule?: PolicyRule | null;
}

export type LogSource = "console" | "qemu" | "nbdkit" | "netmed";

export interface ExecChunk {
  stream: "stdout" | "stderr";
  data: Buffer;
}

interface RawExit {
  exit_code: number | null;
  signal: number | null;
  timed_out: boolean;
  output_limit_exceeded?: boolean;
}

function exitFrom(x: RawExit): ExitStatus {
  return {
    exitCode: x.exit_code ?? null,
    signal: x.signal ?? null,
    timedOut: !!x.timed_out,
    outputLimitExceeded: !!x.output_limit_exceeded,
  };
}

function execBody(argv: string[], o: ExecOptions): Record<string, unknown> {
  const b: Record<string, unknown> = { argv };
  if (o.env) b.env = o.env;
  if (o.cwd) b.cwd = o.cwd;
  if (o.user) b.user = o.user;
  if (o.timeoutMs !== undefined) b.timeout_ms = o.timeoutMs;
  if (o.maxOutputBytes !== undefined) b.max_output_bytes = o.maxOutputBytes;
  return b;
}

/**
 * A running exec whose output arrives as it is produced:
 *
 *   const run = await lane.execStream(["sh", "-c", "make"]);
 *   for await (const { stream, data } of run) process[stream].write(data);
 *   const { exitCode } = await run.exit;
 */
export class ExecStream implements AsyncIterable<ExecChunk> {
  /** Resolves when the command ended (after the last chunk was yielded). */
  readonly exit: Promise<ExitStatus>;
  private resolveExit!: (e: ExitStatus) => void;
  private rejectExit!: (e: Error) => void;
  private consumed = false;

  constructor(
    private readonly lane: Lane,
    readonly id: string,
  ) {
    this.exit = new Promise((res, rej) => {
      this.resolveExit = res;
      this.rejectExit = rej;
    });
    this.exit.catch(() => undefined); // surfaced through iteration too
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ExecChunk> {
    if (this.consumed) throw new Error("an ExecStream can be iterated once");
    this.consumed = true;
    try {
      for await (const line of this.lane.client.ndjson<Record<string, unknown>>("GET", `${this.lane.path}/execs/${encodeURIComponent(this.id)}/output`)) {
        if (typeof line.data === "string") {
          yield { stream: line.stream === "stderr" ? "stderr" : "stdout", data: Buffer.from(line.data, "base64") };
        } else if (line.exit) {
          this.resolveExit(exitFrom(line.exit as RawExit));
          return;
        } else if (line.error) {
          const e = line.error as { code: string; message: string };
          throw new LanesError(200, e.code, e.message);
        }
      }
      throw new LanesError(0, "stream_ended", "exec output ended without an exit status");
    } catch (e) {
      this.rejectExit(e as Error);
      throw e;
    }
  }

  /** Collect everything (convenience). */
  async collect(): Promise<{ stdout: Buffer; stderr: Buffer } & ExitStatus> {
    const out: Buffer[] = [], err: Buffer[] = [];
    for await (const c of this) (c.stream === "stdout" ? out : err).push(c.data);
    return { stdout: Buffer.concat(out), stderr: Buffer.concat(err), ...(await this.exit) };
  }

  async signal(sig: string | number): Promise<void> {
    await this.lane.client.json("POST", `${this.lane.path}/execs/${encodeURIComponent(this.id)}/signal`, { body: { signal: sig } });
  }

  /** Resize the command's terminal (execStream with tty only). */
  async resize(rows: number, cols: number): Promise<void> {
    await this.lane.client.json("POST", `${this.lane.path}/execs/${encodeURIComponent(this.id)}/resize`, { body: { rows, cols } });
  }
}

/** An interactive PTY shell over WebSocket (GET /v1/lanes/{name}/shell).
 * For a named session, `exit` rejects with a LanesError whose code is
 * "detached" when this client leaves (detach(), or another client took over)
 * while the session keeps running. */
export class Shell implements AsyncIterable<Buffer> {
  readonly exit: Promise<ExitStatus>;
  /** Resolves once lanesd sent "started" (id, session, created, replayed set). */
  readonly ready: Promise<void>;
  id = "";
  /** The session's name when attached to a named session. */
  session: string | undefined;
  /** True if this connection created the session, false if it reattached. */
  created = true;
  /** Bytes of earlier output replayed first on reattach (they are the first chunk). */
  replayed = 0;
  private detachedReason: string | null = null;
  private queue: Buffer[] = [];
  private waiting: (() => void) | null = null;
  private done = false;
  private error: Error | null = null;

  constructor(private readonly ws: WsConnection) {
    let resolveExit!: (e: ExitStatus) => void, rejectExit!: (e: Error) => void;
    this.exit = new Promise((res, rej) => {
      resolveExit = res;
      rejectExit = rej;
    });
    this.exit.catch(() => undefined);
    let resolveReady!: () => void;
    this.ready = new Promise((res) => (resolveReady = res));
    let final: ExitStatus | null = null;
    ws.on("message", (data: Buffer, isText: boolean) => {
      if (!isText) {
        this.push(data);
        return;
      }
      const m = JSON.parse(data.toString("utf8"));
      if (m.type === "started") {
        this.id = m.id;
        if (m.session !== undefined) {
          this.session = m.session;
          this.created = m.created;
          this.replayed = m.replayed;
        }
        resolveReady();
      } else if (m.type === "detached") this.detachedReason = m.reason;
      else if (m.type === "stderr") this.push(Buffer.from(m.data, "base64"));
      else if (m.type === "exit") final = exitFrom(m);
      else if (m.type === "error") this.error = new LanesError(200, m.code, m.message);
    });
    ws.on("close", (code: number, reason: string) => {
      this.done = true;
      resolveReady();
      if (final) resolveExit(final);
      else if (this.session !== undefined && !this.error)
        rejectExit(new LanesError(0, "detached", `detached from session ${this.session} (${this.detachedReason ?? "left"}); it keeps running`));
      else rejectExit(this.error ?? new LanesError(0, "closed", `shell closed (${code} ${reason}) without an exit status`));
      this.wake();
    });
  }

  private push(b: Buffer): void {
    this.queue.push(b);
    this.wake();
  }

  private wake(): void {
    const w = this.waiting;
    this.waiting = null;
    w?.();
  }

  /** Terminal output as it arrives. */
  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    for (;;) {
      if (this.queue.length) {
        yield this.queue.shift()!;
        continue;
      }
      if (this.done) return;
      await new Promise<void>((r) => (this.waiting = r));
    }
  }

  /** Type into the shell (resolves once the socket can take more). */
  async write(data: string | Buffer): Promise<void> {
    this.ws.send(OP_BINARY, data);
    await this.ws.drained();
  }

  resize(rows: number, cols: number): void {
    this.ws.send(OP_TEXT, JSON.stringify({ type: "resize", rows, cols }));
  }

  signal(sig: string | number): void {
    this.ws.send(OP_TEXT, JSON.stringify({ type: "signal", signal: sig }));
  }

  /** Close the shell's stdin. */
  eof(): void {
    this.ws.send(OP_TEXT, JSON.stringify({ type: "eof" }));
  }

  /** Leave: a plain shell is hung up (SIGHUP); a named session keeps running. */
  close(): void {
    this.ws.close(1000, "bye");
  }

  /** Leave a named session running (same as close(); reads better). */
  detach(): void {
    this.close();
  }
}

interface RawShellSession {
  name: string;
  exec_id: string;
  pid: number | null;
  created_at: string;
  attached: boolean;
  last_activity_at: string;
  buffered_bytes: number;
}

export class Lane {
  readonly client: LanesClient;
  readonly name: string;
  /** Last known description (refreshed by info(), boot(), stop()). */
  info_: LaneInfo | null;

  private constructor(client: LanesClient, name: string, info: LaneInfo | null) {
    this.client = client;
    this.name = name;
    this.info_ = info;
  }

  /** "/v1/lanes/<name>" */
  get path(): string {
    return `/v1/lanes/${encodeURIComponent(this.name)}`;
  }

  get state(): LaneState | undefined {
    return this.info_?.state;
  }

  static async create(opts: CreateOptions): Promise<Lane> {
    const client = opts.client ?? new LanesClient();
    const body: Record<string, unknown> = { name: opts.name };
    if (opts.image) body.image = opts.image;
    if (opts.cpus !== undefined) body.cpus = opts.cpus;
    if (opts.memoryMib !== undefined) body.memory_mib = opts.memoryMib;
    if (opts.diskGib !== undefined) body.disk_gib = opts.diskGib;
    if (opts.ttlS !== undefined) body.ttl_s = opts.ttlS;
    if (opts.idleTimeoutS !== undefined) body.idle_timeout_s = opts.idleTimeoutS;
    if (opts.network) body.network = opts.network;
    if (opts.policy) body.policy = opts.policy;
    if (opts.store) body.store = opts.store;
    const info = await client.json<LaneInfo>("POST", "/v1/lanes", { body });
    const lane = new Lane(client, info.name, info);
    if (opts.boot) await lane.boot();
    return lane;
  }

  /** An existing lane by name (throws LanesError lane_not_found). */
  static async get(name: string, client: LanesClient = new LanesClient()): Promise<Lane> {
    const lane = new Lane(client, name, null);
    await lane.info();
    return lane;
  }

  static async list(client: LanesClient = new LanesClient()): Promise<LaneInfo[]> {
    const r = await client.json<LaneInfo[] | { lanes: LaneInfo[] }>("GET", "/v1/lanes");
    return Array.isArray(r) ? r : r.lanes;
  }

  async info(): Promise<LaneInfo> {
    this.info_ = await this.client.json<LaneInfo>("GET", this.path);
    return this.info_;
  }

  /** Boot and wait until the lane runs (throws LanesError boot_failed). */
  async boot(): Promise<LaneInfo> {
    this.info_ = await this.client.json<LaneInfo>("POST", `${this.path}/boot`);
    return this.info_;
  }

  /** Clean shutdown; the VM is killed after timeoutS (default 10). */
  async stop(opts: { timeoutS?: number } = {}): Promise<LaneInfo> {
    const body = opts.timeoutS !== undefined ? { timeout_s: opts.timeoutS } : {};
    this.info_ = await this.client.json<LaneInfo>("POST", `${this.path}/stop`, { body });
    return this.info_;
  }

  /** Delete the lane and its disk (force: kill it first if running). */
  async remove(opts: { force?: boolean } = {}): Promise<void> {
    await this.client.json("DELETE", this.path, { query: { force: opts.force ? "true" : undefined } });
    this.info_ = null;
  }

  /** Stop if needed and delete. */
  async close(): Promise<void> {
    await this.remove({ force: true });
  }

  /** Run to completion with buffered (capped) output. */
  async exec(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const body = execBody(argv, opts);
    if (opts.stdin !== undefined) {
      if (typeof opts.stdin !== "string" && !Buffer.isBuffer(opts.stdin))
        throw new TypeError("exec: stdin must be a string or Buffer (use execStream for streams)");
      body.stdin = opts.stdin.toString();
    }
    const r = await this.client.json<Record<string, unknown>>("POST", `${this.path}/exec`, { body });
    return {
      ...exitFrom(r as unknown as RawExit),
      stdout: r.stdout as string,
      stderr: r.stderr as string,
      stdoutTruncated: !!r.stdout_truncated,
      stderrTruncated: !!r.stderr_truncated,
    };
  }

  /** Start a command and stream its output (see ExecStream). */
  async execStream(argv: string[], opts: ExecOptions & { tty?: boolean; rows?: number; cols?: number } = {}): Promise<ExecStream> {
    const body = execBody(argv, opts);
    if (opts.tty) {
      body.tty = true;
      if (opts.rows) body.rows = opts.rows;
      if (opts.cols) body.cols = opts.cols;
    }
    if (opts.stdin !== undefined) body.stdin = true;
    const { id } = await this.client.json<{ id: string }>("POST", `${this.path}/execs`, { body });
    const stream = new ExecStream(this, id);
    if (opts.stdin !== undefined) {
      // Runs alongside the output stream; lanesd applies backpressure.
      this.client
        .request("POST", `${this.path}/execs/${encodeURIComponent(id)}/stdin`, {
          body: opts.stdin,
          headers: { "content-type": "application/octet-stream" },
        })
        .then((res) => res.resume())
        .catch(() => undefined);
    }
    return stream;
  }

  readonly files = {
    /** Write a file (replaced atomically by the guest). */
    put: async (p: string, data: Buffer | string | Readable, opts: { mode?: number | string } = {}): Promise<void> => {
      const mode = opts.mode === undefined ? undefined : typeof opts.mode === "number" ? opts.mode.toString(8).padStart(4, "0") : opts.mode;
      await this.client.json("PUT", `${this.path}/files`, {
        query: { path: p, mode },
        body: data,
        headers: { "content-type": "application/octet-stream" },
      });
    },
    /** Read a file's bytes. */
    get: async (p: string): Promise<Buffer> => {
      const { body } = await this.client.bytes("GET", `${this.path}/files`, { query: { path: p } });
      return body;
    },
    /** Read a file with its permission bits. */
    getWithMode: async (p: string): Promise<{ data: Buffer; mode: number }> => {
      const { body, res } = await this.client.bytes("GET", `${this.path}/files`, { query: { path: p } });
      return { data: body, mode: parseInt(String(res.headers["x-lane-file-mode"] ?? "0"), 8) };
    },
    /** Read a file as a stream (any size; nothing is buffered). */
    getStream: async (p: string, opts: { signal?: AbortSignal } = {}): Promise<Readable> => {
      return this.client.stream("GET", `${this.path}/files`, { query: { path: p }, signal: opts.signal });
    },
    /** Type, mode, size, mtime and owner of a path (a final symlink is not followed). */
    stat: async (p: string): Promise<FileStat> => {
      return statFrom(await this.client.json<Record<string, unknown>>("GET", `${this.path}/files/stat`, { query: { path: p } }));
    },
    /** A directory's entries (not recursive), sorted by name. */
    list: async (dir: string): Promise<FileStat[]> => {
      const r = await this.client.json<{ entries: Record<string, unknown>[] }>("GET", `${this.path}/files/list`, { query: { path: dir } });
      return r.entries.map(statFrom);
    },
    /** Extract a tar archive (bytes or a stream) under dir, created if missing. */
    putArchive: async (dir: string, tar: Buffer | Readable): Promise<void> => {
      await this.client.json("PUT", `${this.path}/archive`, {
        query: { path: dir },
        body: tar,
        headers: { "content-type": "application/x-tar" },
      });
    },
    /** A directory's contents as a tar archive, in memory. */
    getArchive: async (dir: string): Promise<Buffer> => {
      const { body } = await this.client.bytes("GET", `${this.path}/archive`, { query: { path: dir } });
      return body;
    },
    /** A directory's contents as a tar stream (a failure after the first
     * byte can only end it early: tar then sees a truncated archive). */
    getArchiveStream: async (dir: string, opts: { signal?: AbortSignal } = {}): Promise<Readable> => {
      return this.client.stream("GET", `${this.path}/archive`, { query: { path: dir }, signal: opts.signal });
    },
  };

  /** An interactive PTY shell (default /bin/sh -l). With `session`, attach
   * to that named session (created if needed; its recent output is replayed
   * on reattach) — it keeps running when this connection goes away. */
  async shell(opts: ShellOptions = {}): Promise<Shell> {
    const { socket, head } = await this.client.upgrade(`${this.path}/shell`, {
      rows: opts.rows,
      cols: opts.cols,
      term: opts.term,
      user: opts.user,
      cwd: opts.cwd,
      shell: opts.shell,
      session: opts.session,
      takeover: opts.takeover ? 1 : undefined,
    });
    const sh = new Shell(new WsConnection(socket, head));
    await sh.ready;
    return sh;
  }

  /** Attach over WebSocket to a running exec session (e.g. an ExecStream's
   * id whose output nobody iterates; start it with a stdin stream to type
   * into it). Leaving detaches: the command keeps running. */
  async attach(execId: string): Promise<Shell> {
    const { socket, head } = await this.client.upgrade(`${this.path}/execs/${encodeURIComponent(execId)}/attach`);
    const sh = new Shell(new WsConnection(socket, head));
    await sh.ready;
    return sh;
  }

  /** The lane's named shell sessions. */
  async sessions(): Promise<ShellSessionInfo[]> {
    const r = await this.client.json<{ sessions: RawShellSession[] }>("GET", `${this.path}/sessions`);
    return r.sessions.map((s) => ({
      name: s.name,
      execId: s.exec_id,
      pid: s.pid,
      createdAt: s.created_at,
      attached: s.attached,
      lastActivityAt: s.last_activity_at,
      bufferedBytes: s.buffered_bytes,
    }));
  }

  /** Kill a named session (its shell's process group gets SIGKILL). */
  async killSession(name: string): Promise<void> {
    await this.client.json("DELETE", `${this.path}/sessions/${encodeURIComponent(name)}`);
  }

  // ---- snapshots and forks ----------------------------------------------------------------

  /** O(1) snapshot of the disk (a running lane's filesystem is frozen meanwhile). */
  async snapshot(name: string): Promise<SnapshotResult> {
    const r = await this.client.json<Record<string, unknown>>("POST", `${this.path}/snapshots`, { body: { name } });
    const out = camelKeys<SnapshotResult>(r);
    out.timings = camelKeys(r.timings);
    return out;
  }

  async snapshots(): Promise<SnapshotInfo[]> {
    const r = await this.client.json<{ snapshots: unknown[] }>("GET", `${this.path}/snapshots`);
    return r.snapshots.map((x) => camelKeys<SnapshotInfo>(x));
  }

  async removeSnapshot(name: string): Promise<void> {
    await this.client.json("DELETE", `${this.path}/snapshots/${encodeURIComponent(name)}`);
  }

  /** Point the disk at a snapshot. The lane must be stopped (LanesError 409
   * lane_running) unless reboot: then it is stopped, restored and booted. */
  async restore(snapshot: string, opts: { reboot?: boolean } = {}): Promise<LaneInfo> {
    this.info_ = await this.client.json<LaneInfo>("POST", `${this.path}/snapshots/${encodeURIComponent(snapshot)}/restore`, {
      body: { reboot: !!opts.reboot },
    });
    return this.info_;
  }

  /** A new lane (created, not booted) sharing every chunk of this lane's
   * snapshot `snapshot`, or of its current state (lanesd first takes a
   * snapshot named fork-NEWNAME). */
  async fork(newName: string, opts: { snapshot?: string; boot?: boolean } = {}): Promise<Lane> {
    const body: Record<string, unknown> = { name: newName };
    if (opts.snapshot !== undefined) body.snapshot = opts.snapshot;
    const info = await this.client.json<LaneInfo>("POST", `${this.path}/fork`, { body });
    const lane = new Lane(this.client, info.name, info);
    if (opts.boot) await lane.boot();
    return lane;
  }

  /** Lane.fork("src", "new", { snapshot }) without fetching "src" first. */
  static async fork(source: string, newName: string, opts: { snapshot?: string; boot?: boolean; client?: LanesClient } = {}): Promise<Lane> {
    return new Lane(opts.client ?? new LanesClient(), source, null).fork(newName, opts);
  }

  // ---- network: policy, secrets, audit, approvals ------------------------------------------

  async policy(): Promise<NetworkPolicy> {
    return this.client.json<NetworkPolicy>("GET", `${this.path}/policy`);
  }

  /** Validate and store; a running lane applies it live (LanesError 400
   * invalid_policy says what is wrong). Answers the stored policy. */
  async setPolicy(policy: NetworkPolicy): Promise<NetworkPolicy> {
    return this.client.json<NetworkPolicy>("PUT", `${this.path}/policy`, { body: policy });
  }

  /** Set or replace a secret: the guest sees only the returned placeholder
   * as $NAME; netmed puts the value into requests to `hosts` (intercepted TLS). */
  async setSecret(name: string, value: string, opts: { hosts: string[] }): Promise<SecretInfo> {
    const r = await this.client.json("PUT", `${this.path}/secrets/${encodeURIComponent(name)}`, { body: { value, hosts: opts.hosts } });
    return camelKeys<SecretInfo>(r);
  }

  /** Names, hosts and placeholders (values are never returned). */
  async secrets(): Promise<SecretInfo[]> {
    const r = await this.client.json<{ secrets: unknown[] }>("GET", `${this.path}/secrets`);
    return r.secrets.map((x) => camelKeys<SecretInfo>(x));
  }

  async removeSecret(name: string): Promise<void> {
    await this.client.json("DELETE", `${this.path}/secrets/${encodeURIComponent(name)}`);
  }

  /** netmed's decisions for this lane, oldest first (default limit 1000; page with after). */
  async audit(filters: AuditFilters = {}): Promise<AuditEntry[]> {
    const r = await this.client.json<{ entries: Record<string, unknown>[] }>("GET", `${this.path}/audit`, { query: auditQuery(filters) });
    return r.entries.map(auditFrom);
  }

  /** The same entries as an NDJSON export, one at a time. */
  async *auditStream(filters: AuditFilters & { signal?: AbortSignal } = {}): AsyncGenerator<AuditEntry> {
    const q = { ...auditQuery(filters), format: "jsonl" };
    for await (const x of this.client.ndjson<Record<string, unknown>>("GET", `${this.path}/audit`, { query: q, signal: filters.signal }))
      yield auditFrom(x);
  }

  /** Connections held for a human decision (empty when the network is not running). */
  async approvals(): Promise<Approval[]> {
    const r = await this.client.json<{ approvals: unknown[] }>("GET", `${this.path}/approvals`);
    return r.approvals.map((x) => camelKeys<Approval>(x));
  }

  private async decide(id: string, decision: "allow" | "deny", remember: boolean): Promise<ApprovalDecision> {
    const r = await this.client.json<Record<string, unknown>>("POST", `${this.path}/approvals/${encodeURIComponent(id)}`, {
      body: { decision, remember },
    });
    const out = camelKeys<ApprovalDecision>(r);
    if (r.approval) out.approval = camelKeys<Approval>(r.approval);
    return out;
  }

  /** Let a held connection through; remember: add an allow rule for its host and port. */
  approve(id: string, opts: { remember?: boolean } = {}): Promise<ApprovalDecision> {
    return this.decide(id, "allow", !!opts.remember);
  }

  /** Reset a held connection; remember: add a deny rule for its host and port. */
  deny(id: string, opts: { remember?: boolean } = {}): Promise<ApprovalDecision> {
    return this.decide(id, "deny", !!opts.remember);
  }

  // ---- logs --------------------------------------------------------------------------------

  /** A log file's text: the serial console (default), qemu, nbdkit or netmed. */
  async logs(opts: { source?: LogSource } = {}): Promise<string> {
    const { body } = await this.client.bytes("GET", `${this.path}/logs`, { query: { source: opts.source } });
    return body.toString("utf8");
  }

  /** The log's text so far, then new text as it is written, until the lane
   * leaves booting/running/stopping, the signal aborts or the loop is left. */
  async *followLogs(opts: { source?: LogSource; signal?: AbortSignal } = {}): AsyncGenerator<string> {
    let res: Readable;
    try {
      res = await this.client.stream("GET", `${this.path}/logs`, { query: { source: opts.source, follow: "true" }, signal: opts.signal });
    } catch (e) {
      if (opts.signal?.aborted) return;
      throw e;
    }
    yield* textChunks(res, opts.signal);
  }
}
