// The wire format of /v1/stream (docs/protocol.md, docs/asyncapi.yaml), version 1.
// Pure functions over ArrayBuffers and plain objects: no DOM, testable under node.

export const STREAM_PATH = "/v1/stream";
export const PROTOCOL_VERSION = 1;
export const HEADER_BYTES = 24; // struct <2sBBIdII
export const REACTION_SUBHEADER_BYTES = 32; // struct <IHHiidd
export const Kind = Object.freeze({ JPEG: 1, PNG: 2, PCM16: 3, REACTION: 16 });

export const CLIENT_TYPES = Object.freeze(["start", "resume", "stop", "flush", "ping"]);
export const SERVER_TYPES = Object.freeze([
  "started", "resumed", "error", "event", "stats", "flushed", "stopped", "pong",
]);
/** Close codes after which reconnecting does not help (docs/protocol.md, "Close codes"): policy,
 * too big, internal, session limit, protocol violation. 1000 and 1001 end a session only with
 * a fatal error or `stopped` before them; anything else is a drop to resume. */
export const FINAL_CLOSE_CODES = Object.freeze([1008, 1009, 1011, 1013, 4400]);
/** Option names `start` accepts (asyncapi StartOptions). */
export const START_OPTIONS = Object.freeze([
  "window", "steps", "guidance", "seed", "posnet", "sample_rate", "video",
]);

export class ProtocolViolation extends Error {
  constructor(message, field = null) {
    super(message);
    this.name = "ProtocolViolation";
    this.field = field;
  }
}

/** A media message: the 24-byte header then `payload` (Uint8Array or ArrayBuffer). */
export function encodeMedia(kind, seq, captureTs, payload) {
  if (![Kind.JPEG, Kind.PNG, Kind.PCM16].includes(kind)) {
    throw new ProtocolViolation(`kind ${kind} is not a client media kind`, "kind");
  }
  if (!Number.isInteger(seq) || seq < 0 || seq > 0xffffffff) {
    throw new ProtocolViolation(`seq ${seq} is not a u32`, "seq");
  }
  if (!Number.isFinite(captureTs) || captureTs < 0) {
    throw new ProtocolViolation(`capture_ts ${captureTs} must be finite and >= 0`, "capture_ts");
  }
  const bytes = payload instanceof Uint8Array ? payload : new Uint8Array(payload);
  if (bytes.byteLength === 0) throw new ProtocolViolation("empty payload", "payload_len");
  if (kind === Kind.PCM16 && bytes.byteLength % 2) {
    throw new ProtocolViolation("PCM16 needs an even number of bytes", "payload_len");
  }
  const buf = new ArrayBuffer(HEADER_BYTES + bytes.byteLength);
  const dv = new DataView(buf);
  dv.setUint8(0, 0x52); // R
  dv.setUint8(1, 0x50); // P
  dv.setUint8(2, PROTOCOL_VERSION);
  dv.setUint8(3, kind);
  dv.setUint32(4, seq, true);
  dv.setFloat64(8, captureTs, true);
  dv.setUint32(16, bytes.byteLength, true);
  dv.setUint32(20, 0, true);
  new Uint8Array(buf, HEADER_BYTES).set(bytes);
  return buf;
}

/** The header of any binary message: {kind, seq, captureTs, payloadLen}. */
export function decodeHeader(buf) {
  if (buf.byteLength < HEADER_BYTES) throw new ProtocolViolation("shorter than the header", "header");
  const dv = new DataView(buf);
  if (dv.getUint8(0) !== 0x52 || dv.getUint8(1) !== 0x50) throw new ProtocolViolation("bad magic", "magic");
  const version = dv.getUint8(2);
  if (version !== PROTOCOL_VERSION) {
    throw new ProtocolViolation(`binary version ${version}; this client speaks ${PROTOCOL_VERSION}`, "version");
  }
  const payloadLen = dv.getUint32(16, true);
  if (buf.byteLength !== HEADER_BYTES + payloadLen) {
    throw new ProtocolViolation(`payload_len ${payloadLen} but ${buf.byteLength - HEADER_BYTES} bytes follow`, "payload_len");
  }
  return { kind: dv.getUint8(3), seq: dv.getUint32(4, true), captureTs: dv.getFloat64(8, true), payloadLen };
}

/** A reaction window: {seq, captureTs, startFrame, nFrames, dim, videoSeq, audioSeq, videoTs,
 * audioTs, frames (Float32Array, frame k at [k*dim, (k+1)*dim))}. */
export function decodeReaction(buf, dim = 58) {
  const h = decodeHeader(buf);
  if (h.kind !== Kind.REACTION) throw new ProtocolViolation(`kind ${h.kind} is not a reaction`, "kind");
  if (h.payloadLen < REACTION_SUBHEADER_BYTES) throw new ProtocolViolation("reaction sub-header truncated", "payload_len");
  const dv = new DataView(buf);
  const o = HEADER_BYTES;
  const nFrames = dv.getUint16(o + 4, true);
  const d = dv.getUint16(o + 6, true);
  if (d !== dim) throw new ProtocolViolation(`dim ${d}, expected ${dim}`, "dim");
  if (nFrames < 1) throw new ProtocolViolation("a reaction needs at least one frame", "n_frames");
  const expected = REACTION_SUBHEADER_BYTES + nFrames * d * 4;
  if (h.payloadLen !== expected) {
    throw new ProtocolViolation(`payload_len ${h.payloadLen}, expected ${expected}`, "payload_len");
  }
  const start = o + REACTION_SUBHEADER_BYTES;
  // A copy, so the frames are aligned and independent of the socket's buffer.
  const frames = new Float32Array(buf.slice(start, start + nFrames * d * 4));
  const le = new DataView(frames.buffer);
  if (!littleEndianPlatform()) {
    for (let i = 0; i < frames.length; i++) frames[i] = le.getFloat32(i * 4, true);
  }
  return {
    seq: h.seq,
    captureTs: h.captureTs,
    startFrame: dv.getUint32(o, true),
    nFrames,
    dim: d,
    videoSeq: dv.getInt32(o + 8, true),
    audioSeq: dv.getInt32(o + 12, true),
    videoTs: dv.getFloat64(o + 16, true),
    audioTs: dv.getFloat64(o + 24, true),
    frames,
  };
}

function littleEndianPlatform() {
  return new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
}

/** Float samples in [-1, 1] → PCM16 little-endian bytes. */
export function floatToPcm16(samples) {
  const out = new ArrayBuffer(samples.length * 2);
  const dv = new DataView(out);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    dv.setInt16(i * 2, s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff), true);
  }
  return new Uint8Array(out);
}

// -- control messages ---------------------------------------------------------------------------

/** `start`: options with null/undefined values left out (the server's defaults). */
export function startMessage(listener = "generic", options = {}) {
  const opts = {};
  for (const [k, v] of Object.entries(options)) {
    if (!START_OPTIONS.includes(k)) throw new ProtocolViolation(`unknown option ${k}`, `options.${k}`);
    if (v !== null && v !== undefined) opts[k] = v;
  }
  return { type: "start", listener, options: opts };
}

export function resumeMessage(sessionId, resumeToken) {
  return { type: "resume", session_id: sessionId, resume_token: resumeToken };
}

export const stopMessage = () => ({ type: "stop" });
export const flushMessage = () => ({ type: "flush" });
export const pingMessage = (id) => ({ type: "ping", id });

/** A server text frame → its message object; throws ProtocolViolation on anything else. */
export function parseServerMessage(text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    throw new ProtocolViolation("a server control message is not JSON", "type");
  }
  if (msg === null || typeof msg !== "object" || Array.isArray(msg)) {
    throw new ProtocolViolation("a server control message is not an object", "type");
  }
  if (!SERVER_TYPES.includes(msg.type)) throw new ProtocolViolation(`unknown server message type ${msg.type}`, "type");
  return msg;
}

/** The stream URL for a page at `location` (ws: or wss: after its scheme) with a query. */
export function streamUrl(location, query = {}) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v) q.set(k, v);
  const s = q.toString();
  return `${scheme}//${location.host}${STREAM_PATH}${s ? `?${s}` : ""}`;
}
