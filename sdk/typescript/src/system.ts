// system.ts — calls that are not about one lane: the event stream, base
// images, block stores and health. Each takes an optional LanesClient
// (default: a new one from the environment, like Lane.get).
import { LanesClient, LanesError } from "./client.js";
import { camelKeys } from "./convert.js";

/** One line of GET /v1/events. */
export interface LaneEvent {
  /** Row id in lanesd's events table: pass it back as `since` to resume. */
  id: number;
  /** Milliseconds since the Unix epoch. */
  ts: number;
  lane: string | null;
  laneId: string | null;
  /** state, boot, create, rm, image, recover, snapshot, approval.pending, ... */
  kind: string;
  detail: string | null;
  /** The new state (kind "state" only). */
  state?: string;
  /** kinds approval.pending / approval.decided only. */
  approvalId?: string;
  [field: string]: unknown;
}

export interface EventsOptions {
  /** Only this lane's events. */
  lane?: string;
  /** Only these kinds (array or comma-separated). */
  kind?: string | string[];
  /** Replay stored events with a larger id first (0 = all). */
  since?: number;
  /** Ends the iteration (quietly) when aborted. */
  signal?: AbortSignal;
  client?: LanesClient;
}

/**
 * lanesd's events as they happen (a long-lived NDJSON stream):
 *
 *   const ac = new AbortController();
 *   for await (const ev of events({ lane: "demo", kind: "state", signal: ac.signal })) ...
 *
 * Stop it with the AbortSignal or by leaving the loop (break/return). A
 * client that falls too far behind is dropped: the iteration then throws a
 * LanesError with code "too_slow" (resume with since = the last id seen).
 */
export async function* events(opts: EventsOptions = {}): AsyncGenerator<LaneEvent> {
  const client = opts.client ?? new LanesClient();
  const kind = Array.isArray(opts.kind) ? opts.kind.join(",") : opts.kind;
  const lines = client.ndjson<Record<string, unknown>>("GET", "/v1/events", {
    query: { lane: opts.lane, kind, since: opts.since },
    signal: opts.signal,
  });
  for await (const line of lines) {
    if (line.error) {
      const e = line.error as { code: string; message: string };
      throw new LanesError(200, e.code, e.message);
    }
    yield camelKeys<LaneEvent>(line);
  }
}

/** A base image (GET /v1/images). */
export interface ImageInfo {
  name: string;
  sizeBytes: number;
  createdAt: string;
  /** build:minimal, build:debian, import:/path.tar */
  source: string;
}

export async function listImages(client: LanesClient = new LanesClient()): Promise<ImageInfo[]> {
  const r = await client.json<{ images: unknown[] }>("GET", "/v1/images");
  return r.images.map((i) => camelKeys<ImageInfo>(i));
}

export interface ImageBuildOptions {
  client?: LanesClient;
  /** Called with each progress line. */
  onProgress?: (line: string) => void;
  signal?: AbortSignal;
}

/** Progress lines of an image build/import; the generator's return value is the image. */
async function* imageProgress(client: LanesClient, p: string, body: object, signal?: AbortSignal): AsyncGenerator<string, ImageInfo> {
  for await (const line of client.ndjson<Record<string, unknown>>("POST", p, { body, signal })) {
    if (typeof line.progress === "string") yield line.progress;
    else if (line.image) return camelKeys<ImageInfo>(line.image);
    else if (line.error) {
      const e = line.error as { code: string; message: string };
      throw new LanesError(200, e.code, e.message);
    }
  }
  if (signal?.aborted) throw new LanesError(0, "aborted", "image build aborted");
  throw new LanesError(0, "stream_ended", "image progress ended without a result");
}

/**
 * Build a base image (name "minimal" or "debian"), streaming progress:
 *
 *   const it = buildImageProgress("minimal");
 *   for (let r = await it.next(); !r.done; r = await it.next()) console.log(r.value);
 *   // r.value is the ImageInfo once done
 *
 * or simply `await buildImage("minimal", { onProgress: console.log })`.
 */
export function buildImageProgress(name: string, opts: ImageBuildOptions = {}): AsyncGenerator<string, ImageInfo> {
  return imageProgress(opts.client ?? new LanesClient(), "/v1/images/build", { name }, opts.signal);
}

async function drain(it: AsyncGenerator<string, ImageInfo>, onProgress?: (line: string) => void): Promise<ImageInfo> {
  for (;;) {
    const r = await it.next();
    if (r.done) return r.value;
    onProgress?.(r.value);
  }
}

export function buildImage(name: string, opts: ImageBuildOptions = {}): Promise<ImageInfo> {
  return drain(buildImageProgress(name, opts), opts.onProgress);
}

/** Import a rootfs tarball that lies on lanesd's host (absolute path). */
export function importImage(name: string, tarPath: string, opts: ImageBuildOptions = {}): Promise<ImageInfo> {
  return drain(imageProgress(opts.client ?? new LanesClient(), "/v1/images/import", { name, tar: tarPath }, opts.signal), opts.onProgress);
}

/** Delete an image (LanesError 409 image_in_use while lanes use it). */
export async function removeImage(name: string, client: LanesClient = new LanesClient()): Promise<void> {
  await client.json("DELETE", `/v1/images/${encodeURIComponent(name)}`);
}

/** A block store known to this host (GET /v1/stores). */
export interface StoreInfo {
  name: string;
  type: "local" | "s3";
  lanes?: number;
  endpoint?: string;
  bucket?: string;
  prefix?: string;
  region?: string;
  credentialsFile?: string;
  profile?: string;
  flush?: "local" | "remote";
  conditionalWrites?: "enforced" | "unenforced";
  allowUnenforcedLeases?: boolean;
  available?: boolean;
  warning?: string;
  [field: string]: unknown;
}

export async function listStores(client: LanesClient = new LanesClient()): Promise<StoreInfo[]> {
  const r = await client.json<{ stores: unknown[] }>("GET", "/v1/stores");
  return r.stores.map((s) => camelKeys<StoreInfo>(s));
}

export interface AddStoreOptions {
  name: string;
  /** http[s]://host[:port] */
  endpoint: string;
  bucket: string;
  prefix?: string;
  region?: string;
  /** Absolute path of an AWS-style credentials file (mode 600) on lanesd's host. */
  credentialsFile: string;
  profile?: string;
  /** When a guest FLUSH returns: "local" (journal fsynced) or "remote" (in the bucket). */
  flush?: "local" | "remote";
  allowUnenforcedLeases?: boolean;
  vhost?: boolean;
  client?: LanesClient;
}

/** Add an S3 store on this host (LanesError 502 store_error if the bucket cannot be reached). */
export async function addStore(opts: AddStoreOptions): Promise<StoreInfo> {
  const { client = new LanesClient(), ...rest } = opts;
  const body: Record<string, unknown> = { type: "s3" };
  for (const [k, v] of Object.entries(rest)) if (v !== undefined) body[k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] = v;
  return camelKeys<StoreInfo>(await client.json("POST", "/v1/stores", { body }));
}

/** Forget an S3 store on this host (the bucket is untouched). */
export async function removeStore(name: string, client: LanesClient = new LanesClient()): Promise<void> {
  await client.json("DELETE", `/v1/stores/${encodeURIComponent(name)}`);
}

export interface StoreOptions {
  /** An added S3 store's name; absent or "local" = the local store. */
  store?: string;
  client?: LanesClient;
}

/** GET /v1/store/stats */
export interface StoreStats {
  refs: number;
  virtualBytes: number;
  logicalBytes: number;
  uniqueChunks: number;
  uniqueBytes: number;
  pages: number;
  pageBytes?: number;
  objects: number;
  physicalBytes: number;
  garbageObjects: number;
  garbageBytes: number;
  dedupRatio: number;
  [field: string]: unknown;
}

export async function storeStats(opts: StoreOptions = {}): Promise<StoreStats> {
  const client = opts.client ?? new LanesClient();
  return camelKeys<StoreStats>(await client.json("GET", "/v1/store/stats", { query: { store: opts.store } }));
}

/** POST /v1/store/gc: counts (refs, reachable, objects, garbageObjects, deletedObjects, deletedBytes, keptRecent, liveWriters, dryRun, ...). */
export interface StoreGcResult {
  dryRun: boolean;
  [count: string]: number | boolean;
}

export async function storeGc(opts: StoreOptions & { graceS?: number; dryRun?: boolean } = {}): Promise<StoreGcResult> {
  const client = opts.client ?? new LanesClient();
  const body: Record<string, unknown> = {};
  if (opts.graceS !== undefined) body.grace_s = opts.graceS;
  if (opts.dryRun !== undefined) body.dry_run = opts.dryRun;
  return camelKeys<StoreGcResult>(await client.json("POST", "/v1/store/gc", { body, query: { store: opts.store } }));
}

export interface StoreProblem {
  id: string;
  type: "chunk" | "page";
  problem: "missing" | "corrupt" | "unreadable";
  refs: string[];
}

export interface StoreVerifyResult {
  ok: boolean;
  refs: number;
  objectsChecked: number;
  bytesChecked: number;
  problems: StoreProblem[];
}

/** Re-read and re-hash every reachable object. */
export async function storeVerify(opts: StoreOptions = {}): Promise<StoreVerifyResult> {
  const client = opts.client ?? new LanesClient();
  return camelKeys<StoreVerifyResult>(await client.json("POST", "/v1/store/verify", { query: { store: opts.store } }));
}

export async function health(client: LanesClient = new LanesClient()): Promise<{ status: "ok"; version: string }> {
  return client.json("GET", "/v1/health");
}

/** Prometheus text exposition of GET /metrics. */
export async function metrics(client: LanesClient = new LanesClient()): Promise<string> {
  return (await client.bytes("GET", "/metrics")).body.toString("utf8");
}
