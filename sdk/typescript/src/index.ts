// @lanes/sdk — TypeScript SDK for lanes (durable Linux microVMs for agents).
//
//   import { Lane } from "@lanes/sdk";
//   const lane = await Lane.create({ name: "demo", image: "debian", boot: true });
//   const r = await lane.exec(["uname", "-a"]);
//   for await (const { stream, data } of await lane.execStream(["make"])) ...
//   await lane.close();
export { LanesClient, LanesError, defaultSocketPath } from "./client.js";
export type { ClientOptions, RequestOptions } from "./client.js";
export { Lane, ExecStream, Shell } from "./lane.js";
export type { CreateOptions, ExecChunk, ExecOptions, ExecResult, ExitStatus, LaneInfo, LaneState, ShellOptions, ShellSessionInfo } from "./lane.js";
