// lane.test.mjs — the SDK against a real lanesd (node:test). Needs
// LANES_SOCKET (a running lanesd) and LANES_TEST_IMAGE (an imported image);
// tests/integration/t_sdk_typescript.sh provides both. Skips without them.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";

import { Lane, LanesClient, LanesError } from "../dist/index.js";

const socketPath = process.env.LANES_SOCKET;
const image = process.env.LANES_TEST_IMAGE;
const skip = !socketPath || !image ? "LANES_SOCKET and LANES_TEST_IMAGE not set" : false;
const T = { timeout: 180_000 };

describe("Lane against a real lanesd", { skip }, () => {
  let client;
  let lane;

  before(async () => {
    client = new LanesClient({ socketPath });
    lane = await Lane.create({ name: `sdk-${process.pid}`, image, diskGib: 1, client });
    assert.equal(lane.state, "created");
    await lane.boot();
    assert.equal(lane.state, "running");
  }, T);

  after(async () => {
    if (lane) await lane.close().catch(() => undefined);
    client?.close();
  });

  it("lists and finds the lane; unknown lanes are LanesError 404", T, async () => {
    const all = await Lane.list(client);
    assert.ok(all.some((l) => l.name === lane.name && l.state === "running"));
    const again = await Lane.get(lane.name, client);
    assert.equal(again.state, "running");
    await assert.rejects(Lane.get("no-such-lane", client), (e) => e instanceof LanesError && e.status === 404);
  });

  it("buffered exec: stdout, stderr, exit code, stdin, env, cwd", T, async () => {
    const r = await lane.exec(["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert.deepEqual([r.stdout, r.stderr, r.exitCode, r.signal, r.timedOut], ["out\n", "err\n", 3, null, false]);
    assert.equal((await lane.exec(["cat"], { stdin: "hello\n" })).stdout, "hello\n");
    const e = await lane.exec(["sh", "-c", "echo $FOO; pwd"], { env: { FOO: "bar" }, cwd: "/tmp" });
    assert.equal(e.stdout, "bar\n/tmp\n");
    const t = await lane.exec(["sleep", "30"], { timeoutMs: 500 });
    assert.equal(t.timedOut, true);
    const c = await lane.exec(["sh", "-c", "head -c 100000 /dev/zero; sleep 30"], { maxOutputBytes: 100 });
    assert.equal(c.stdout.length, 100);
    assert.equal(c.outputLimitExceeded, true);
    await assert.rejects(lane.exec(["/no/such/program"]), (err) => err instanceof LanesError && err.code === "command_not_found");
  });

  it("streaming exec yields output as it is produced, then the exit", T, async () => {
    const run = await lane.execStream(["sh", "-c", "echo 1; sleep 1; echo 2; echo e >&2; exit 5"]);
    const t0 = Date.now();
    const seen = [];
    for await (const { stream, data } of run) seen.push({ stream, text: data.toString(), at: Date.now() - t0 });
    const exit = await run.exit;
    assert.equal(exit.exitCode, 5);
    assert.equal(seen.filter((c) => c.stream === "stdout").map((c) => c.text).join(""), "1\n2\n");
    assert.equal(seen.filter((c) => c.stream === "stderr").map((c) => c.text).join(""), "e\n");
    // "1" arrived well before the command ended: it was streamed, not buffered
    assert.ok(seen[0].text.startsWith("1") && seen.at(-1).at - seen[0].at >= 700, JSON.stringify(seen));
  });

  it("streaming exec with a stdin stream (1 MiB through sha256sum)", T, async () => {
    const data = randomBytes(1 << 20);
    const chunks = [];
    for (let i = 0; i < data.length; i += 65536) chunks.push(data.subarray(i, i + 65536));
    const run = await lane.execStream(["sha256sum"], { stdin: Readable.from(chunks) });
    const r = await run.collect();
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout.toString().split(" ")[0], createHash("sha256").update(data).digest("hex"));
  });

  it("files: put and get round trip with mode", T, async () => {
    const data = randomBytes(300_000);
    await lane.files.put("/tmp/sdk.bin", data, { mode: 0o600 });
    const got = await lane.files.getWithMode("/tmp/sdk.bin");
    assert.ok(got.data.equals(data));
    assert.equal(got.mode, 0o600);
    await lane.files.put("/tmp/hello.txt", "hi there\n");
    assert.equal((await lane.files.get("/tmp/hello.txt")).toString(), "hi there\n");
    await assert.rejects(lane.files.get("/no/such/file"), (e) => e instanceof LanesError && e.status === 404);
  });

  it("shell: PTY size, resize, exit status", T, async () => {
    const sh = await lane.shell({ rows: 20, cols: 70 });
    let out = "";
    const it = sh[Symbol.asyncIterator]();
    const until = async (needle) => {
      const end = Date.now() + 60_000;
      while (!out.includes(needle)) {
        assert.ok(Date.now() < end, `timeout waiting for ${needle}: ${out.slice(-300)}`);
        const { value, done } = await it.next();
        if (done) break;
        out += value.toString();
      }
      assert.ok(out.includes(needle), out.slice(-300));
    };
    await sh.write("stty size\n");
    await until("20 70");
    sh.resize(33, 99);
    await sh.write("stty size\n");
    await until("33 99");
    await sh.write("exit 4\n");
    const exit = await sh.exit;
    assert.equal(exit.exitCode, 4);
    assert.match(sh.id, /^x\d+$/);
  });

  it("named shell session: state survives a disconnect, reattach replays, list, kill", T, async () => {
    const name = `s${process.pid}`;
    const reader = (sh) => {
      const it = sh[Symbol.asyncIterator]();
      const r = { out: "" };
      r.until = async (needle) => {
        const end = Date.now() + 60_000;
        while (!r.out.includes(needle)) {
          assert.ok(Date.now() < end, `timeout waiting for ${needle}: ${r.out.slice(-300)}`);
          const { value, done } = await it.next();
          if (done) break;
          r.out += value.toString();
        }
        assert.ok(r.out.includes(needle), r.out.slice(-300));
      };
      return r;
    };
    const a = await lane.shell({ session: name });
    assert.equal(a.session, name);
    assert.equal(a.created, true);
    const ra = reader(a);
    await a.write("cd /tmp; export Z=zed$((5*5)); echo first-$((2+2))\n");
    await ra.until("first-4");
    a.detach();
    await assert.rejects(a.exit, (e) => e instanceof LanesError && e.code === "detached");
    const deadline = Date.now() + 30_000;
    let s;
    do {
      s = (await lane.sessions()).find((x) => x.name === name);
      assert.ok(s, "session gone after detach");
    } while (s.attached && Date.now() < deadline && (await new Promise((r) => setTimeout(r, 200)), true));
    assert.equal(s.attached, false);
    assert.ok(s.pid > 1 && s.bufferedBytes > 0, JSON.stringify(s));

    const b = await lane.shell({ session: name });
    assert.equal(b.created, false);
    assert.ok(b.replayed > 0);
    const rb = reader(b);
    await rb.until("first-4"); // replayed
    await b.write("echo at=$(pwd)-$Z\n");
    await rb.until("at=/tmp-zed25");
    await assert.rejects(lane.shell({ session: name }), (e) => e instanceof LanesError && e.status === 409);
    const c = await lane.shell({ session: name, takeover: true });
    await assert.rejects(b.exit, (e) => e instanceof LanesError && e.code === "detached");
    await lane.killSession(name);
    await assert.rejects(c.exit, (e) => e instanceof LanesError && e.code === "detached");
    assert.ok(!(await lane.sessions()).some((x) => x.name === name));
    await assert.rejects(lane.killSession(name), (e) => e instanceof LanesError && e.status === 404);
  });

  it("stop and remove", T, async () => {
    const info = await lane.stop();
    assert.equal(info.state, "stopped");
    await lane.remove();
    const names = (await Lane.list(client)).map((l) => l.name);
    assert.ok(!names.includes(lane.name));
    lane = null;
  });
});
