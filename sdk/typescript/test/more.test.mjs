// more.test.mjs — the SDK's snapshot/fork/restore, files stat/list/archive,
// network (policy, secrets, audit, approvals), logs, events, images and
// stores calls against a real lanesd (node:test). Same environment as
// lane.test.mjs: LANES_SOCKET and LANES_TEST_IMAGE (t_sdk_typescript.sh).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";

import {
  addStore,
  buildImage,
  buildImageProgress,
  events,
  Lane,
  LanesClient,
  LanesError,
  listImages,
  listStores,
  metrics,
  removeStore,
  storeGc,
  storeStats,
  storeVerify,
} from "../dist/index.js";

const socketPath = process.env.LANES_SOCKET;
const image = process.env.LANES_TEST_IMAGE;
const skip = !socketPath || !image ? "LANES_SOCKET and LANES_TEST_IMAGE not set" : false;
const T = { timeout: 240_000 };

const isErr = (status, code) => (e) => {
  assert.ok(e instanceof LanesError, `not a LanesError: ${e}`);
  assert.equal(e.status, status, `${e.code}: ${e.message}`);
  if (code) assert.equal(e.code, code, e.message);
  return true;
};

async function waitFor(what, pred, ms = 60_000) {
  const end = Date.now() + ms;
  while (!(await pred())) {
    assert.ok(Date.now() < end, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("snapshots, files, network, logs, events, images, stores", { skip }, () => {
  const name = `sdkx-${process.pid}`;
  let client;
  let lane;
  let host; // host temp dir
  const ac = new AbortController();
  const seen = []; // events of `name`, collected from before the lane existed
  let watcher;

  before(async () => {
    client = new LanesClient({ socketPath });
    host = mkdtempSync(join(tmpdir(), "sdkx-"));
    watcher = (async () => {
      for await (const ev of events({ lane: name, client, signal: ac.signal })) seen.push(ev);
    })();
    // the subscription is live once lanesd counts it; give it a moment
    await new Promise((r) => setTimeout(r, 300));
    lane = await Lane.create({ name, image, diskGib: 1, client });
    await lane.boot();
  }, T);

  after(async () => {
    ac.abort();
    // the watcher ends on abort; never let a broken abort hang the suite
    await Promise.race([watcher?.catch(() => undefined), new Promise((r) => setTimeout(r, 5000).unref())]);
    if (lane) await lane.close().catch(() => undefined);
    client?.close();
    if (host) rmSync(host, { recursive: true, force: true });
  });

  it("events: the lane's creation and state changes arrive as typed events; abort ends the stream", T, async () => {
    await waitFor("created/booting/running events", () =>
      ["booting", "running"].every((s) => seen.some((e) => e.kind === "state" && e.state === s)),
    );
    for (const e of seen) {
      assert.equal(e.lane, name);
      assert.equal(typeof e.id, "number");
      assert.equal(typeof e.ts, "number");
      assert.equal(e.laneId, lane.info_.id);
    }
    assert.ok(seen.some((e) => e.kind === "create"), JSON.stringify(seen));
    // since= replays stored events; kind filters; leaving the loop ends it
    const replay = [];
    for await (const e of events({ lane: name, kind: ["state"], since: 0, client })) {
      replay.push(e);
      if (e.state === "running") break;
    }
    assert.deepEqual(replay.map((e) => e.kind), replay.map(() => "state"));
    assert.equal(replay.at(-1).state, "running");
    // an aborted stream ends quietly, even when nothing arrives (the full
    // replay since 0 holds this lane's events: the lane filter drops them)
    const quiet = new AbortController();
    setTimeout(() => quiet.abort(), 500);
    const got = [];
    for await (const e of events({ lane: "no-such-lane", since: 0, client, signal: quiet.signal })) got.push(e);
    assert.deepEqual(got, []);
    await assert.rejects(async () => {
      for await (const e of events({ since: -1, client })) void e;
    }, isErr(400));
  });

  it("files: stat, list, archive round trip (bytes and streams), file streams", T, async () => {
    const src = join(host, "src");
    mkdirSync(join(src, "sub"), { recursive: true });
    writeFileSync(join(src, "a.txt"), "alpha\n");
    chmodSync(join(src, "a.txt"), 0o640);
    writeFileSync(join(src, "run.sh"), "#!/bin/sh\necho run\n");
    chmodSync(join(src, "run.sh"), 0o755);
    const big = randomBytes(700_000);
    writeFileSync(join(src, "sub", "b.bin"), big);
    const tar = execFileSync("tar", ["-c", "-C", src, "."], { maxBuffer: 64 << 20 });

    await lane.files.putArchive("/root/arch", tar);
    const st = await lane.files.stat("/root/arch/a.txt");
    assert.deepEqual(
      { name: st.name, path: st.path, type: st.type, mode: st.mode, size: st.size },
      { name: "a.txt", path: "/root/arch/a.txt", type: "file", mode: 0o640, size: 6 },
    );
    assert.ok(st.mtime > 1_600_000_000 && Number.isInteger(st.uid) && Number.isInteger(st.gid), JSON.stringify(st));
    assert.equal((await lane.files.stat("/root/arch/sub")).type, "dir");
    const ls = await lane.files.list("/root/arch");
    assert.deepEqual(ls.map((e) => [e.name, e.type, e.mode]), [
      ["a.txt", "file", 0o640],
      ["run.sh", "file", 0o755],
      ["sub", "dir", 0o755],
    ]);
    assert.equal((await lane.files.list("/root/arch/sub"))[0].size, big.length);

    // the directory back as a tar archive (in memory), extracted on the host
    const back = join(host, "back");
    mkdirSync(back);
    execFileSync("tar", ["-x", "-C", back], { input: await lane.files.getArchive("/root/arch") });
    assert.equal(readFileSync(join(back, "a.txt"), "utf8"), "alpha\n");
    assert.equal(statSync(join(back, "run.sh")).mode & 0o777, 0o755);
    assert.ok(readFileSync(join(back, "sub", "b.bin")).equals(big));

    // upload from a stream, download as a stream
    await lane.files.putArchive("/root/arch2", Readable.from([tar.subarray(0, 5000), tar.subarray(5000)]));
    await lane.files.put("/root/arch2/only2.txt", "second\n");
    const parts = [];
    for await (const c of await lane.files.getArchiveStream("/root/arch2")) parts.push(c);
    const back2 = join(host, "back2");
    mkdirSync(back2);
    execFileSync("tar", ["-x", "-C", back2], { input: Buffer.concat(parts) });
    assert.ok(readFileSync(join(back2, "sub", "b.bin")).equals(big));
    assert.equal(readFileSync(join(back2, "only2.txt"), "utf8"), "second\n");
    const h = createHash("sha256");
    for await (const c of await lane.files.getStream("/root/arch/sub/b.bin")) h.update(c);
    assert.equal(h.digest("hex"), createHash("sha256").update(big).digest("hex"));

    await assert.rejects(lane.files.stat("/root/arch/nope"), isErr(404, "file_not_found"));
    await assert.rejects(lane.files.list("/root/arch/a.txt"), isErr(400, "not_a_directory"));
    await assert.rejects(lane.files.putArchive("/root/arch3", Buffer.from("this is not a tar archive\n".repeat(40))), isErr(400, "archive_failed"));
    await assert.rejects(lane.files.getStream("/root/none"), isErr(404, "file_not_found"));
  });

  it("policy: get, set round trip, invalid policy is LanesError 400", T, async () => {
    const def = await lane.policy();
    assert.deepEqual(def.allow ?? [], []);
    const p = {
      dns: { mode: "synthetic" },
      allow: [
        { host: "api.example.com", ports: [443], intercept: true },
        { cidr: "198.51.100.0/24", ports: ["8000-8010"], comment: "test range" },
      ],
    };
    const stored = await lane.setPolicy(p);
    assert.deepEqual(stored.allow, p.allow);
    const again = await lane.policy();
    assert.deepEqual(again.allow, p.allow);
    assert.equal(again.dns.mode, "synthetic");
    await assert.rejects(lane.setPolicy({ allow: [{ host: "x.example.com", ports: [70000] }] }), isErr(400, "invalid_policy"));
    await assert.rejects(lane.setPolicy({ bogus: true }), isErr(400, "invalid_policy"));
    assert.deepEqual((await lane.policy()).allow, p.allow, "an invalid policy replaced the stored one");
  });

  it("secrets: set answers a placeholder, list never shows values, remove", T, async () => {
    const value = `v-${randomBytes(8).toString("hex")}`;
    const s = await lane.setSecret("API_TOKEN", value, { hosts: ["api.example.com"] });
    assert.equal(s.name, "API_TOKEN");
    assert.deepEqual(s.hosts, ["api.example.com"]);
    assert.ok(s.placeholder && !s.placeholder.includes(value), JSON.stringify(s));
    const list = await lane.secrets();
    assert.equal(list.length, 1);
    assert.equal(list[0].placeholder, s.placeholder);
    assert.match(list[0].updatedAt, /^\d{4}-\d\d-\d\dT/);
    assert.ok(!JSON.stringify(list).includes(value), "a secret's value came back");
    assert.ok(!("value" in list[0]));
    await assert.rejects(lane.setSecret("bad name", "x", { hosts: ["a.example.com"] }), isErr(400));
    await lane.removeSecret("API_TOKEN");
    assert.deepEqual(await lane.secrets(), []);
    await assert.rejects(lane.removeSecret("API_TOKEN"), isErr(404, "secret_not_found"));
  });

  it("audit: typed entries, filters, paging, the jsonl stream; bad filters are 400", T, async () => {
    let all = [];
    // netmed's start record (and the live policy change) land within a second
    await waitFor("audit entries", async () => (all = await lane.audit()).length > 0, 30_000);
    for (const e of all) {
      assert.equal(typeof e.id, "number");
      assert.equal(typeof e.kind, "string");
      assert.equal(e.kind, e.ev);
    }
    const kind = all[0].kind;
    const some = await lane.audit({ kind });
    assert.ok(some.length > 0 && some.every((e) => e.kind === kind), JSON.stringify(some));
    assert.deepEqual(await lane.audit({ kind: "no-such-kind" }), []);
    assert.deepEqual(await lane.audit({ after: all.at(-1).id }), []);
    assert.deepEqual((await lane.audit({ limit: 1 })).map((e) => e.id), [all[0].id]);
    assert.deepEqual(await lane.audit({ until: 1 }), []);
    assert.equal((await lane.audit({ since: 1 })).length, all.length);
    const streamed = [];
    for await (const e of lane.auditStream({ limit: all.length })) streamed.push(e);
    assert.deepEqual(streamed.map((e) => e.id), all.map((e) => e.id));
    await assert.rejects(lane.audit({ kind: "a b" }), isErr(400, "invalid"));
    await assert.rejects(lane.audit({ limit: 0 }), isErr(400, "invalid"));
    await assert.rejects(async () => {
      for await (const e of lane.auditStream({ host: "bad/host" })) void e;
    }, isErr(400, "invalid"));
  });

  it("approvals: a held connection is listed, announced as an event, approved; another denied and remembered", T, async () => {
    assert.deepEqual(await lane.approvals(), []);
    await assert.rejects(lane.approve("abc123"), isErr(404, "approval_not_found"));
    await assert.rejects(lane.approve("not-hex!"), isErr(400));
    const target = "198.51.100.7"; // TEST-NET-2: never dialled successfully
    const policy = { approvalTimeoutSeconds: 60, allow: [{ cidr: `${target}/32`, ports: [80], action: "ask" }] };
    await lane.setPolicy(policy);
    const held = async () => {
      // busybox nc; /dev/zero keeps its side open while netmed holds it
      const run = await lane.execStream(["sh", "-c", `nc -w 30 ${target} 80 < /dev/zero; echo rc=$?`]);
      const done = run.collect();
      let pending = [];
      await waitFor("a pending approval", async () => (pending = await lane.approvals()).length > 0, 60_000);
      assert.equal(pending.length, 1, JSON.stringify(pending));
      const a = pending[0];
      assert.deepEqual([a.addr, a.port, a.rule, a.timeoutS, a.host], [target, 80, 0, 60, null]);
      assert.match(a.id, /^[0-9a-f]+$/);
      assert.equal(typeof a.createdMs, "number");
      await waitFor("its approval.pending event", () => seen.some((e) => e.kind === "approval.pending" && e.approvalId === a.id), 30_000);
      return { a, run, done };
    };

    const one = await held();
    const ok = await lane.approve(one.a.id);
    assert.deepEqual([ok.id, ok.decision, ok.remember], [one.a.id, "allow", false]);
    assert.equal(ok.approval.addr, target);
    assert.equal(ok.approval.timeoutS, 60);
    await assert.rejects(lane.approve(one.a.id), isErr(404, "approval_not_found"));
    await one.run.signal("KILL").catch(() => undefined);
    await one.done.catch(() => undefined);

    const two = await held();
    const no = await lane.deny(two.a.id, { remember: true });
    assert.deepEqual([no.decision, no.remember], ["deny", true]);
    assert.equal(no.rule.action, "deny");
    const r = await two.done;
    assert.match(r.stdout.toString(), /rc=[1-9]/, "nc was not refused");
    const rules = (await lane.policy()).allow;
    assert.ok(rules.some((x) => x.action === "deny" && x.cidr?.startsWith(target)), JSON.stringify(rules));
    await waitFor("approval.decided events", () => seen.filter((e) => e.kind === "approval.decided").length >= 2, 30_000);

    // the audit has both decisions, and filters select them
    let approvals = [];
    await waitFor("approval audit records", async () => (approvals = await lane.audit({ kind: "approval" })).some((e) => e.state === "denied"), 30_000);
    assert.ok(approvals.every((e) => e.kind === "approval"));
    assert.ok(approvals.some((e) => e.approval_id === one.a.id && e.state === "allowed"), JSON.stringify(approvals));
    const denied = await lane.audit({ decision: "deny" });
    assert.ok(denied.length > 0 && denied.every((e) => e.decision === "deny"), JSON.stringify(denied));
  });

  it("logs: console text, other sources, follow streams new output", T, async () => {
    const con = await lane.logs();
    assert.ok(con.length > 0, "empty console log");
    assert.equal(typeof (await lane.logs({ source: "qemu" })), "string");
    await assert.rejects(lane.logs({ source: "nope" }), isErr(404, "unknown_source"));
    const follow = new AbortController();
    const mark = `sdk-mark-${process.pid}`;
    let text = "";
    const t0 = Date.now();
    const timer = setTimeout(() => follow.abort(), 60_000);
    for await (const chunk of lane.followLogs({ signal: follow.signal })) {
      text += chunk;
      if (text.length >= con.length && !text.includes(mark) && Date.now() - t0 < 55_000)
        await lane.exec(["sh", "-c", `echo ${mark} > /dev/console`]);
      if (text.includes(mark)) break;
    }
    clearTimeout(timer);
    assert.ok(text.includes(mark), `follow did not show ${mark}: ${text.slice(-300)}`);
  });

  it("execStream tty resize, attach by exec id; metrics", T, async () => {
    const run = await lane.execStream(["sh", "-c", "stty size; sleep 2; stty size"], { tty: true, rows: 10, cols: 20 });
    let out = "";
    const it = run[Symbol.asyncIterator]();
    while (!out.includes("10 20")) {
      const r = await it.next();
      assert.ok(!r.done, out);
      out += r.value.data.toString();
    }
    await run.resize(30, 40);
    for (let r = await it.next(); !r.done; r = await it.next()) out += r.value.data.toString();
    assert.match(out, /10 20[\s\S]*30 40/);
    assert.equal((await run.exit).exitCode, 0);
    await assert.rejects(run.resize(5, 5), isErr(404));
    // attach to an exec session by id (its output goes to the WebSocket)
    const bg = await lane.execStream(["sh", "-c", "sleep 1; echo attached-out; exit 7"]);
    const sh = await lane.attach(bg.id);
    assert.equal(sh.id, bg.id);
    let text = "";
    for await (const b of sh) text += b.toString();
    assert.equal(text, "attached-out\n");
    assert.equal((await sh.exit).exitCode, 7);
    await assert.rejects(lane.attach("x999999"), isErr(404, "exec_not_found"));
    const m = await metrics(client);
    assert.match(m, /^lanes_lanes\{state="running"\} [1-9]/m);
  });

  it("snapshot and fork: the fork sees the snapshot's content, isolated from both", T, async () => {
    await lane.exec(["sh", "-c", "echo one > /root/m && sync"]);
    const snap = await lane.snapshot("s1");
    assert.equal(snap.name, "s1");
    assert.equal(snap.lane, name);
    assert.equal(snap.running, true);
    for (const k of ["freezeMs", "flushMs", "commitMs", "thawMs"]) assert.equal(typeof snap.timings[k], "number", k);
    assert.ok(snap.diskGeneration >= snap.diskGenerationBefore);
    await lane.exec(["sh", "-c", "echo two > /root/m && sync"]);
    const list = await lane.snapshots();
    const s1 = list.find((s) => s.name === "s1");
    assert.ok(s1 && typeof s1.createdAt === "number" && s1.sizeBytes > 0, JSON.stringify(list));
    await assert.rejects(lane.snapshot("s1"), isErr(409, "exists"));

    const fork = await lane.fork(`${name}-f`, { snapshot: "s1" });
    try {
      assert.equal(fork.state, "created");
      assert.equal(fork.info_.parent.snapshot, "s1");
      await fork.boot();
      assert.equal((await fork.exec(["cat", "/root/m"])).stdout, "one\n");
      await fork.exec(["sh", "-c", "echo fork > /root/m && sync"]);
      assert.equal((await lane.exec(["cat", "/root/m"])).stdout, "two\n");
    } finally {
      await fork.close();
    }
    // fork of the current state, by name (no boot needed to see its lineage)
    const f2 = await Lane.fork(name, `${name}-g`, { client });
    try {
      assert.equal(f2.info_.parent.lane, name);
      assert.ok((await lane.snapshots()).some((s) => s.name === `fork-${name}-g`));
    } finally {
      await f2.close();
    }
    await assert.rejects(lane.fork(`${name}-h`, { snapshot: "nope" }), isErr(404));
  });

  it("restore: refused while running, then on the stopped lane, then with reboot; remove snapshots", T, async () => {
    await assert.rejects(lane.restore("s1"), isErr(409, "lane_running"));
    await lane.stop();
    await waitFor("a stopped event", () => seen.some((e) => e.kind === "state" && e.state === "stopped"), 30_000);
    const info = await lane.restore("s1");
    assert.equal(info.state, "stopped");
    await lane.boot();
    assert.equal((await lane.exec(["cat", "/root/m"])).stdout, "one\n");
    // reboot: stop, restore and boot again in one call
    await lane.exec(["sh", "-c", "echo three > /root/m && sync"]);
    const rebooted = await lane.restore("s1", { reboot: true });
    assert.equal(rebooted.state, "running");
    assert.equal(lane.state, "running");
    assert.equal((await lane.exec(["cat", "/root/m"])).stdout, "one\n");
    await lane.removeSnapshot("s1");
    assert.ok(!(await lane.snapshots()).some((s) => s.name === "s1"));
    await assert.rejects(lane.removeSnapshot("s1"), isErr(404, "snapshot_not_found"));
    await assert.rejects(lane.restore("s1"), isErr(404, "snapshot_not_found"));
  });

  it("images and stores: list, build with progress, stats, verify, gc dry run", T, async () => {
    const imgs = await listImages(client);
    const img = imgs.find((i) => i.name === image);
    assert.ok(img && img.sizeBytes > 0 && img.source.startsWith("build:") && img.createdAt, JSON.stringify(imgs));
    if (image === "minimal" || image === "debian") {
      // lanes-rootfs caches builds: a rebuild only re-imports
      const lines = [];
      const built = await buildImage(image, { client, onProgress: (l) => lines.push(l) });
      assert.equal(built.name, image);
      assert.ok(lines.length > 0 && lines.every((l) => typeof l === "string"));
      const it = buildImageProgress(image, { client });
      let r;
      while (!(r = await it.next()).done) assert.equal(typeof r.value, "string");
      assert.equal(r.value.name, image);
    }
    await assert.rejects(buildImage("no-such-recipe", { client }), isErr(400));
    const stores = await listStores(client);
    assert.ok(stores.some((s) => s.name === "local" && s.type === "local"), JSON.stringify(stores));
    const st = await storeStats({ client });
    assert.ok(st.refs > 0 && st.uniqueBytes > 0 && st.physicalBytes > 0 && typeof st.dedupRatio === "number", JSON.stringify(st));
    await assert.rejects(storeStats({ store: "no-such-store", client }), isErr(404));
    const v = await storeVerify({ client });
    assert.equal(v.ok, true);
    assert.ok(v.objectsChecked > 0 && Array.isArray(v.problems), JSON.stringify(v));
    await assert.rejects(removeStore("no-such-store", client), isErr(404));
    await assert.rejects(
      addStore({ name: "Bad Name", endpoint: "http://127.0.0.1:1", bucket: "b", credentialsFile: "/nonexistent", client }),
      isErr(400, "invalid"),
    );
    const gc = await storeGc({ client, dryRun: true });
    assert.equal(gc.dryRun, true);
    assert.equal(typeof gc.refs, "number");
  });
});
