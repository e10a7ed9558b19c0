// The client's protocol code against the AsyncAPI schema (docs/asyncapi.yaml).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  CLIENT_TYPES, HEADER_BYTES, Kind, ProtocolViolation, SERVER_TYPES, START_OPTIONS, decodeReaction,
  encodeMedia, floatToPcm16, flushMessage, parseServerMessage, pingMessage, resumeMessage,
  startMessage, stopMessage, streamUrl,
} from "../src/protocol.js";
import { doc, layoutTable, operationMessages, readField, validator } from "./schema.js";

test("the client knows exactly the control message types of the schema", () => {
  assert.deepEqual([...CLIENT_TYPES].sort(), operationMessages("receiveControl").sort());
  assert.deepEqual([...SERVER_TYPES].sort(), operationMessages("sendControl").sort());
  assert.deepEqual([...START_OPTIONS].sort(), Object.keys(doc.components.schemas.StartOptions.properties).sort());
});

test("binary kinds match the schema's x-kind values", () => {
  const kinds = Object.fromEntries(Object.entries(doc.components.messages).filter(([, m]) => m["x-kind"]).map(([n, m]) => [n, m["x-kind"]]));
  assert.deepEqual(kinds, { videoJpeg: Kind.JPEG, videoPng: Kind.PNG, audioPcm16: Kind.PCM16, reaction: Kind.REACTION });
});

test("every control message the client builds is valid against its schema", () => {
  const cases = [
    ["start", startMessage()],
    ["start", startMessage("abc123", { video: "jpeg", sample_rate: 16000, window: 16, steps: null })],
    ["resume", resumeMessage("sid", "token")],
    ["stop", stopMessage()],
    ["flush", flushMessage()],
    ["ping", pingMessage(7)],
    ["ping", pingMessage("x")],
  ];
  for (const [name, msg] of cases) {
    const [ok, errors] = validator(name)(JSON.parse(JSON.stringify(msg)));
    assert.ok(ok, `${name}: ${JSON.stringify(errors)}`);
  }
});

test("null options are left out and unknown options refused before sending", () => {
  assert.deepEqual(startMessage("generic", { window: null, seed: 3 }).options, { seed: 3 });
  assert.throws(() => startMessage("generic", { speed: 2 }), ProtocolViolation);
  // The schema would refuse what startMessage refuses.
  const [ok] = validator("start")({ type: "start", options: { speed: 2 } });
  assert.equal(ok, false);
});

test("a media message has the header the schema's table describes", () => {
  const table = layoutTable("videoJpeg");
  assert.deepEqual(table.map((r) => r.field), ["magic", "version", "kind", "seq", "capture_ts", "payload_len", "reserved"]);
  const payload = new Uint8Array([0xff, 0xd8, 1, 2, 3, 0xff, 0xd9]);
  const buf = encodeMedia(Kind.JPEG, 41, 1767225600.125, payload);
  const dv = new DataView(buf);
  const got = Object.fromEntries(table.map((r) => [r.field, readField(dv, r)]));
  assert.deepEqual(got, { magic: "RP", version: 1, kind: 1, seq: 41, capture_ts: 1767225600.125, payload_len: 7, reserved: 0 });
  assert.equal(buf.byteLength, HEADER_BYTES + payload.length);
  assert.deepEqual(new Uint8Array(buf, HEADER_BYTES), payload);
});

test("media the server would refuse is refused in the client", () => {
  assert.throws(() => encodeMedia(Kind.PCM16, 0, 1, new Uint8Array(3)), /even/);
  assert.throws(() => encodeMedia(Kind.JPEG, 0, 1, new Uint8Array(0)), /empty/);
  assert.throws(() => encodeMedia(Kind.JPEG, 0, Number.NaN, new Uint8Array(1)), /capture_ts/);
  assert.throws(() => encodeMedia(Kind.JPEG, -1, 1, new Uint8Array(1)), /seq/);
  assert.throws(() => encodeMedia(Kind.REACTION, 0, 1, new Uint8Array(1)), /kind/);
});

/** A reaction laid out by the schema's tables (independently of the client's decoder). */
function schemaReaction({ seq, startFrame, frames, videoSeq = -1, audioSeq = 3, videoTs = Number.NaN, audioTs = 12.5 }) {
  const n = frames.length;
  const buf = new ArrayBuffer(HEADER_BYTES + 32 + n * 58 * 4);
  const dv = new DataView(buf);
  const header = layoutTable("reaction");
  const values = {
    magic: null, version: 1, kind: 16, seq, capture_ts: Math.max(audioTs, Number.isNaN(videoTs) ? -Infinity : videoTs),
    payload_len: 32 + n * 232, reserved: 0, start_frame: startFrame, n_frames: n, dim: 58,
    video_seq: videoSeq, audio_seq: audioSeq, video_ts: videoTs, audio_ts: audioTs,
  };
  dv.setUint8(0, 0x52);
  dv.setUint8(1, 0x50);
  // The reaction's own table lists the sub-header; the media table the common header.
  for (const row of [...layoutTable("videoJpeg"), ...header]) {
    const v = values[row.field];
    if (v === null || v === undefined) continue;
    const set = { u8: "setUint8", u16: "setUint16", u32: "setUint32", i32: "setInt32", f64: "setFloat64" }[row.type];
    if (set) dv[set](row.offset, v, true);
  }
  const framesRow = header.find((r) => r.field === "frames");
  frames.forEach((f, k) => f.forEach((x, i) => dv.setFloat32(framesRow.offset + (k * 58 + i) * 4, x, true)));
  return buf;
}

test("reactions laid out as the schema says decode to their frames", () => {
  const frames = [Array.from({ length: 58 }, (_, i) => i / 100), Array.from({ length: 58 }, (_, i) => -i / 50)];
  const win = decodeReaction(schemaReaction({ seq: 5, startFrame: 40, frames }));
  assert.equal(win.seq, 5);
  assert.equal(win.startFrame, 40);
  assert.equal(win.nFrames, 2);
  assert.equal(win.audioSeq, 3);
  assert.equal(win.videoSeq, -1);
  assert.ok(Number.isNaN(win.videoTs));
  assert.equal(win.captureTs, 12.5);
  assert.equal(win.frames.length, 116);
  assert.ok(Math.abs(win.frames[57] - 0.57) < 1e-6);
  assert.ok(Math.abs(win.frames[58 + 10] + 0.2) < 1e-6);
});

test("damaged reactions are refused with the field at fault", () => {
  const good = schemaReaction({ seq: 0, startFrame: 0, frames: [new Array(58).fill(0)] });
  const short = good.slice(0, good.byteLength - 4);
  assert.throws(() => decodeReaction(short), (e) => e instanceof ProtocolViolation && e.field === "payload_len");
  const bad = good.slice(0);
  new DataView(bad).setUint8(0, 0);
  assert.throws(() => decodeReaction(bad), (e) => e.field === "magic");
  const v2 = good.slice(0);
  new DataView(v2).setUint8(2, 2);
  assert.throws(() => decodeReaction(v2), (e) => e.field === "version");
});

test("server messages of the schema parse; anything else is refused", () => {
  const started = {
    type: "started", session_id: "s", resume_token: "r", listener: "generic", protocol: 1,
    settings: { window: 8, fps: 25, sample_rate: 16000 }, limits: { max_media_bytes: 524288, resume_grace_s: 30 },
  };
  assert.ok(validator("started")(started)[0]);
  assert.deepEqual(parseServerMessage(JSON.stringify(started)), started);
  const stats = { type: "stats", frames_in: 10, frames_dropped: 1, audio_chunks: 9, windows_out: 2, latency_ms_median: null, latency_ms_p95: null, queue: 0 };
  assert.ok(validator("stats")(stats)[0]);
  assert.equal(parseServerMessage(JSON.stringify(stats)).frames_dropped, 1);
  assert.throws(() => parseServerMessage("{"), ProtocolViolation);
  assert.throws(() => parseServerMessage('{"type": "start"}'), ProtocolViolation);
  assert.throws(() => parseServerMessage("[1]"), ProtocolViolation);
});

test("PCM16 conversion clips and rounds like the server expects", () => {
  const bytes = floatToPcm16(new Float32Array([0, 1, -1, 2, -2, 0.5]));
  const dv = new DataView(bytes.buffer);
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((i) => dv.getInt16(i * 2, true)), [0, 32767, -32768, 32767, -32768, 16384]);
});

test("stream URLs follow the page's scheme and carry the credentials", () => {
  assert.equal(streamUrl({ protocol: "http:", host: "127.0.0.1:8000" }), "ws://127.0.0.1:8000/v1/stream");
  assert.equal(streamUrl({ protocol: "https:", host: "a.example" }, { token: "t.1" }), "wss://a.example/v1/stream?token=t.1");
  assert.equal(streamUrl({ protocol: "http:", host: "h" }, { session_id: "s", resume_token: "r/+" }), "ws://h/v1/stream?session_id=s&resume_token=r%2F%2B");
});
