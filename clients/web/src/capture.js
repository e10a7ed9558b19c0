// Camera and microphone: frames as JPEG at 25 fps, audio as 16 kHz mono float chunks of 40 ms,
// each stamped with its capture time on the client clock (seconds).

import { FPS, SAMPLE_RATE, SAMPLES_PER_FRAME } from "./layout.js";
import { clock } from "./session.js";

export async function openCamera({ width = 640, height = 480 } = {}) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("this browser gives no camera access here (a page needs https or localhost)");
  }
  return navigator.mediaDevices.getUserMedia({
    video: { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: FPS } },
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: true },
  });
}

export function stopTracks(stream) {
  if (stream) for (const t of stream.getTracks()) t.stop();
}

// JPEG encoding runs in a worker where the browser allows it, so that a busy page (rendering,
// decoding) does not hold the camera frames back.
const ENCODER = `
const canvas = new OffscreenCanvas(1, 1);
const ctx = canvas.getContext("2d");
onmessage = async ({ data: { id, bitmap, quality } }) => {
  try {
    if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
      canvas.width = bitmap.width;
      canvas.height = bitmap.height;
    }
    ctx.drawImage(bitmap, 0, 0);
    bitmap.close();
    const blob = await canvas.convertToBlob({ type: "image/jpeg", quality });
    const buf = await blob.arrayBuffer();
    postMessage({ id, buf }, [buf]);
  } catch (err) {
    postMessage({ id, error: String(err) });
  }
};
`;

/** JPEG bytes (Uint8Array) of what `source` (video or canvas) shows, at most `maxWidth` wide. */
export class FrameGrabber {
  constructor({ maxWidth = 480, quality = 0.8 } = {}) {
    this.maxWidth = maxWidth;
    this.quality = quality;
    this.pending = new Map();
    this.nextId = 0;
    this.worker = null;
    if (typeof Worker === "function" && typeof OffscreenCanvas === "function" && typeof createImageBitmap === "function") {
      const url = URL.createObjectURL(new Blob([ENCODER], { type: "text/javascript" }));
      this.worker = new Worker(url);
      URL.revokeObjectURL(url);
      this.worker.onmessage = ({ data }) => {
        const done = this.pending.get(data.id);
        this.pending.delete(data.id);
        if (done) done(data.buf ? new Uint8Array(data.buf) : null);
      };
    } else {
      this.canvas = document.createElement("canvas");
      this.ctx = this.canvas.getContext("2d");
    }
  }

  size(source) {
    const w0 = source.videoWidth || source.width;
    const h0 = source.videoHeight || source.height;
    if (!w0 || !h0) return null;
    const scale = Math.min(1, this.maxWidth / w0);
    return [Math.round(w0 * scale), Math.round(h0 * scale)];
  }

  async grab(source) {
    const wh = this.size(source);
    if (!wh) return null;
    const [w, h] = wh;
    if (this.worker) {
      const bitmap = await createImageBitmap(source, { resizeWidth: w, resizeHeight: h, resizeQuality: "medium" });
      const id = this.nextId++;
      return new Promise((resolve) => {
        this.pending.set(id, resolve);
        this.worker.postMessage({ id, bitmap, quality: this.quality }, [bitmap]);
      });
    }
    if (this.canvas.width !== w || this.canvas.height !== h) Object.assign(this.canvas, { width: w, height: h });
    this.ctx.drawImage(source, 0, 0, w, h);
    const blob = await new Promise((resolve) => this.canvas.toBlob(resolve, "image/jpeg", this.quality));
    return blob ? new Uint8Array(await blob.arrayBuffer()) : null;
  }

  close() {
    if (this.worker) this.worker.terminate();
  }
}

/** Calls `onFrame(jpegBytes, captureTs)` 25 times a second with the camera's current picture;
 * a frame still being encoded when the next is due is skipped (`skipped` counts them). */
export class VideoSender {
  constructor(video, onFrame, { fps = FPS, maxWidth = 480 } = {}) {
    Object.assign(this, { video, onFrame, fps });
    this.grabber = new FrameGrabber({ maxWidth });
    this.busy = false;
    this.skipped = 0;
    this.timer = null;
  }

  start() {
    this.timer = setInterval(() => this.tick(), 1000 / this.fps);
  }

  async tick() {
    if (this.busy) {
      this.skipped += 1;
      return;
    }
    if (this.video.readyState < 2) return;
    this.busy = true;
    try {
      const ts = clock();
      const jpeg = await this.grabber.grab(this.video);
      if (jpeg) this.onFrame(jpeg, ts);
    } finally {
      this.busy = false;
    }
  }

  stop() {
    clearInterval(this.timer);
    this.grabber.close();
  }
}

// The worklet runs on the audio thread: it resamples to 16 kHz when the context runs at another
// rate (browsers that cannot open a 16-kHz context on a microphone), low-passing first with a
// moving average, and posts 640-sample chunks with the context time of their first sample, so
// that capture times follow the sample count exactly.
export const WORKLET = `
class Chunker extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / ${SAMPLE_RATE}; // input samples per output sample
    this.width = Math.max(1, Math.round(this.ratio)); // moving-average anti-alias filter
    this.hist = new Float32Array(this.width);
    this.sum = 0;
    this.buf = new Float32Array(${SAMPLES_PER_FRAME});
    this.n = 0;
    this.seen = 0; // input samples before the current block
    this.prev = 0; // last filtered sample of the previous block
    this.out = 0; // output samples made so far
    this.t0 = null; // context time of the first input sample
  }
  filter(x, i) {
    const k = i % this.width;
    this.sum += x - this.hist[k];
    this.hist[k] = x;
    return this.sum / this.width;
  }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (!ch) return true;
    if (this.t0 === null) this.t0 = currentFrame / sampleRate;
    const base = this.seen;
    const y = new Float32Array(ch.length);
    for (let i = 0; i < ch.length; i++) y[i] = this.filter(ch[i], base + i);
    for (;;) {
      const p = this.out * this.ratio;
      const i = Math.floor(p);
      if (i + 1 >= base + y.length) break;
      const a = i < base ? this.prev : y[i - base];
      const b = y[i + 1 - base];
      this.buf[this.n++] = a + (b - a) * (p - i);
      this.out += 1;
      if (this.n === this.buf.length) {
        const first = this.out - this.buf.length;
        this.port.postMessage({ t: this.t0 + first / ${SAMPLE_RATE}, samples: this.buf.slice() });
        this.n = 0;
      }
    }
    this.prev = y[y.length - 1];
    this.seen += ch.length;
    return true;
  }
}
registerProcessor("rapport-chunker", Chunker);
`;

/** A context on the microphone: at 16 kHz where the browser resamples for us, else its own. */
function micContext(stream) {
  const ctx = new AudioContext({ sampleRate: SAMPLE_RATE });
  try {
    return [ctx, ctx.createMediaStreamSource(stream)];
  } catch {
    ctx.close();
    const own = new AudioContext();
    return [own, own.createMediaStreamSource(stream)];
  }
}

/** Calls `onChunk(float32Samples, captureTs)` for each 40 ms of microphone audio at 16 kHz. */
export class AudioSender {
  constructor(stream, onChunk) {
    this.stream = stream;
    this.onChunk = onChunk;
    this.ctx = null;
    this.offset = null; // client clock (s) - context time (s)
  }

  async start() {
    if (!this.stream.getAudioTracks().length) return false;
    const [ctx, source] = micContext(this.stream);
    this.ctx = ctx;
    const url = URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" }));
    await ctx.audioWorklet.addModule(url);
    URL.revokeObjectURL(url);
    const node = new AudioWorkletNode(ctx, "rapport-chunker", { numberOfOutputs: 1 });
    const mute = ctx.createGain();
    mute.gain.value = 0;
    source.connect(node).connect(mute).connect(ctx.destination);
    node.port.onmessage = (ev) => {
      const { t, samples } = ev.data;
      if (this.offset === null) this.offset = clock() - t - samples.length / SAMPLE_RATE;
      this.onChunk(samples, this.offset + t);
    };
    await ctx.resume();
    return true;
  }

  async stop() {
    if (this.ctx && this.ctx.state !== "closed") await this.ctx.close();
  }
}
