// The session's reconnect/resume logic against a scripted fake WebSocket.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Kind, decodeHeader } from "../src/protocol.js";
import { State, StreamSession } from "../src/session.js";

class FakeSocket {
  static all = [];
  constructor(url) {
    Object.assign(this, { url, sent: [], readyState: 0, bufferedAmount: 0 });
    FakeSocket.all.push(this);
    setTimeout(() => {
      this.readyState = 1;
      this.onopen && this.onopen();
    }, 0);
  }
  send(data) { this.sent.push(data); }
  close(code = 1005) { this.drop(code); }
  drop(code) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    setTimeout(() => this.onclose && this.onclose({ code, reason: "" }), 0);
  }
  serverSays(msg) { this.onmessage({ data: JSON.stringify(msg) }); }
  control() { return this.sent.filter((d) => typeof d === "string").map((d) => JSON.parse(d)); }
}

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));
const started = { type: "started", session_id: "S1", resume_token: "R1", listener: "generic", protocol: 1, settings: { window: 8 }, limits: { resume_grace_s: 30, max_media_bytes: 1000 } };

function session(extra = {}) {
  FakeSocket.all = [];
  let t = 100;
  const s = new StreamSession({ location: { protocol: "http:", host: "h:1" }, WebSocketImpl: FakeSocket, now: () => t, getToken: async () => "TOK", ...extra });
  s.advance = (dt) => { t += dt; };
  return s;
}

test("start sends `start` with a token and streams once `started` arrives", async () => {
  const s = session();
  const anchors = [];
  s.addEventListener("anchor", (e) => anchors.push(e.detail));
  await s.start();
  await tick();
  const ws = FakeSocket.all[0];
  assert.equal(ws.url, "ws://h:1/v1/stream?token=TOK");
  assert.deepEqual(ws.control(), [{ type: "start", listener: "generic", options: {} }]);
  assert.equal(s.sendMedia(Kind.JPEG, new Uint8Array([1]), 5), false, "no media before started");
  ws.serverSays(started);
  assert.equal(s.state, State.STREAMING);
  assert.ok(s.sendMedia(Kind.PCM16, new Uint8Array(4), 7.5));
  assert.ok(s.sendMedia(Kind.JPEG, new Uint8Array([1]), 7.52));
  assert.deepEqual(anchors, [{ frame: 0, ts: 7.5 }], "the first media anchors frame 0");
  const h = decodeHeader(ws.sent.at(-1));
  assert.equal(h.seq, 0);
  assert.equal(h.kind, Kind.JPEG);
  assert.equal(s.sendMedia(Kind.JPEG, new Uint8Array(2000), 8), false, "over max_media_bytes");
  s.fail("test", "done");
});

test("a dropped connection is resumed with the session's credentials and re-anchored", async () => {
  const s = session();
  const anchors = [];
  const states = [];
  s.addEventListener("anchor", (e) => anchors.push(e.detail));
  s.addEventListener("state", (e) => states.push(e.detail.state));
  await s.start();
  await tick();
  FakeSocket.all[0].serverSays(started);
  s.sendMedia(Kind.JPEG, new Uint8Array([1]), 10);
  FakeSocket.all[0].drop(1006);
  await tick();
  assert.equal(s.state, State.RECONNECTING);
  assert.equal(s.sendMedia(Kind.JPEG, new Uint8Array([1]), 10.5), false, "media while away is skipped");
  await tick(400);
  const ws2 = FakeSocket.all[1];
  assert.equal(ws2.url, "ws://h:1/v1/stream?session_id=S1&resume_token=R1");
  assert.deepEqual(ws2.control(), [{ type: "resume", session_id: "S1", resume_token: "R1" }]);
  ws2.serverSays({ type: "resumed", session_id: "S1", next_frame: 80 });
  assert.equal(s.state, State.STREAMING);
  assert.equal(s.reconnects, 1);
  s.sendMedia(Kind.PCM16, new Uint8Array(2), 14);
  assert.deepEqual(anchors, [{ frame: 0, ts: 10 }, { frame: 80, ts: 14 }]);
  assert.deepEqual(states, ["connecting", "streaming", "reconnecting", "streaming"]);
  s.fail("test", "done");
});

test("resume_failed opens a new session", async () => {
  const s = session();
  let restarted = 0;
  s.addEventListener("restarted", () => { restarted += 1; });
  await s.start();
  await tick();
  FakeSocket.all[0].serverSays(started);
  FakeSocket.all[0].drop(1006);
  await tick(400);
  FakeSocket.all[1].serverSays({ type: "error", code: "resume_failed", message: "gone", field: null, seq: null, fatal: false });
  await tick();
  assert.equal(restarted, 1);
  const ws3 = FakeSocket.all[2];
  assert.equal(ws3.url, "ws://h:1/v1/stream?token=TOK");
  assert.equal(ws3.control()[0].type, "start");
  s.fail("test", "done");
});

test("policy closes and fatal errors end the session instead of looping", async () => {
  const s = session();
  await s.start();
  await tick();
  FakeSocket.all[0].serverSays(started);
  FakeSocket.all[0].serverSays({ type: "error", code: "too_many_errors", message: "x", field: null, seq: null, fatal: true });
  FakeSocket.all[0].drop(4400);
  await tick(50);
  assert.equal(s.state, State.FAILED);
  assert.equal(FakeSocket.all.length, 1);
});

test("a refused upgrade before any session fails with a clear message", async () => {
  const s = session();
  await s.start();
  FakeSocket.all[0].drop(1006);
  await tick(20);
  assert.equal(s.state, State.FAILED);
  assert.equal(FakeSocket.all.length, 1);
});

test("stop sends `stop` and ends once the server closes", async () => {
  const s = session();
  await s.start();
  await tick();
  const ws = FakeSocket.all[0];
  ws.serverSays(started);
  const done = s.stop(1);
  assert.equal(ws.control().at(-1).type, "stop");
  ws.serverSays({ type: "stopped", windows: 3, reason: "client" });
  ws.drop(1000);
  await done;
  assert.equal(s.state, State.STOPPED);
  assert.equal(FakeSocket.all.length, 1);
});

test("a quiet server is pinged; a silent one is treated as a drop (half-open connection)", async () => {
  const s = session();
  await s.start();
  await tick();
  const ws = FakeSocket.all[0];
  ws.serverSays(started);
  s.advance(3);
  await tick(1100);
  assert.deepEqual(ws.control().at(-1), { type: "ping", id: 0 });
  assert.equal(s.state, State.STREAMING);
  s.advance(4);
  await tick(1100);
  assert.equal(s.state, State.RECONNECTING);
  s.fail("test", "done");
});

test("after the resume grace period a new session is started instead, then it gives up", async () => {
  const s = session({ backoffS: [0.01] });
  let restarted = 0;
  s.addEventListener("restarted", () => { restarted += 1; });
  await s.start();
  await tick();
  FakeSocket.all[0].serverSays({ ...started, limits: { resume_grace_s: 2 } });
  FakeSocket.all[0].drop(1006);
  await tick(30);
  // The server is unreachable: every attempt is refused at once; a second passes each time.
  for (let i = 0; i < 4; i++) {
    s.advance(1);
    FakeSocket.all.at(-1).drop(1006);
    await tick(30);
  }
  assert.equal(restarted, 1, "one restart once the grace period is over");
  const urls = FakeSocket.all.map((w) => w.url.replace("ws://h:1/v1/stream?", ""));
  assert.equal(urls[1], "session_id=S1&resume_token=R1", "resumed first");
  assert.equal(urls.at(-1), "token=TOK", "then a new session");
  assert.equal(s.state, State.RECONNECTING);
  s.advance(40);
  FakeSocket.all.at(-1).drop(1006);
  await tick(30);
  assert.equal(s.state, State.FAILED);
});
