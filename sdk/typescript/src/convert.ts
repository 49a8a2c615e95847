// convert.ts — lanesd's snake_case JSON to the SDK's camelCase objects, and
// the line/text readers shared by the streaming calls.
import type { Readable } from "node:stream";

/** "memory_mib" -> "memoryMib" */
export function camelName(k: string): string {
  return k.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** A copy of o with its own keys in camelCase (one level deep). */
export function camelKeys<T>(o: unknown): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries((o ?? {}) as Record<string, unknown>)) out[camelName(k)] = v;
  return out as T;
}

/** Text chunks of a byte stream as they arrive (UTF-8 sequences kept whole). */
export async function* textChunks(body: Readable, signal?: AbortSignal): AsyncGenerator<string> {
  const dec = new TextDecoder("utf-8");
  try {
    for await (const c of body) {
      const s = dec.decode(c as Buffer, { stream: true });
      if (s) yield s;
    }
    const rest = dec.decode();
    if (rest) yield rest;
  } catch (e) {
    if (!signal?.aborted) throw e;
  } finally {
    body.destroy();
  }
}
