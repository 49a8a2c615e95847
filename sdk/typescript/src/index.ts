// @lanes/sdk — TypeScript SDK for lanes (durable Linux microVMs for agents).
//
//   import { Lane, events } from "@lanes/sdk";
//   const lane = await Lane.create({ name: "demo", image: "debian", boot: true });
//   const r = await lane.exec(["uname", "-a"]);
//   for await (const { stream, data } of await lane.execStream(["make"])) ...
//   const snap = await lane.snapshot("s1"); const copy = await lane.fork("demo2", { snapshot: "s1" });
//   for await (const ev of events({ lane: "demo", signal })) ...
//   await lane.close();
export { LanesClient, LanesError, defaultSocketPath } from "./client.js";
export type { ClientOptions, RequestOptions } from "./client.js";
export { Lane, ExecStream, Shell } from "./lane.js";
export type {
  Approval,
  ApprovalDecision,
  AuditEntry,
  AuditFilters,
  CreateOptions,
  ExecChunk,
  ExecOptions,
  ExecResult,
  ExitStatus,
  FileStat,
  LaneInfo,
  LaneState,
  LogSource,
  NetworkPolicy,
  PolicyRule,
  SecretInfo,
  ShellOptions,
  ShellSessionInfo,
  SnapshotInfo,
  SnapshotResult,
} from "./lane.js";
export {
  addStore,
  buildImage,
  buildImageProgress,
  events,
  health,
  importImage,
  listImages,
  listStores,
  metrics,
  removeImage,
  removeStore,
  storeGc,
  storeStats,
  storeVerify,
} from "./system.js";
export type {
  AddStoreOptions,
  EventsOptions,
  ImageBuildOptions,
  ImageInfo,
  LaneEvent,
  StoreGcResult,
  StoreInfo,
  StoreOptions,
  StoreProblem,
  StoreStats,
  StoreVerifyResult,
} from "./system.js";
