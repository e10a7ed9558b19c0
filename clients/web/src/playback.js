// The jitter buffer: reaction frames placed on the session's 25 fps timeline and played at the
// display's rate, a small adaptive delay behind the capture clock, interpolated between frames.

import { DIM, FPS, ROTATION } from "./layout.js";
import { quantile } from "./stats.js";

/** Linear interpolation of two frames; rotations take the short way round. */
export function lerpFrame(a, b, t, out = new Float32Array(a.length)) {
  for (let i = 0; i < a.length; i++) {
    let d = b[i] - a[i];
    if (i >= ROTATION.start && i < ROTATION.end) d = Math.atan2(Math.sin(d), Math.cos(d));
    out[i] = a[i] + d * t;
  }
  return out;
}

/** Frame `f` (fractional) of a dense (T × dim) Float32Array, clamped at both ends. */
export function sampleDense(frames, f, dim = DIM, out = new Float32Array(dim)) {
  const n = frames.length / dim;
  if (n === 0) return null;
  const x = Math.min(Math.max(f, 0), n - 1);
  const i = Math.floor(x);
  const j = Math.min(i + 1, n - 1);
  return lerpFrame(frames.subarray(i * dim, i * dim + dim), frames.subarray(j * dim, j * dim + dim), x - i, out);
}

export class ReactionPlayer {
  /**
   * @param {object} o
   * @param {number} o.fps timeline rate (25)
   * @param {number} o.margin seconds of jitter margin added to the observed lateness
   * @param {number} o.quantile share of recent windows that must arrive before they are due
   * @param {number} o.slewUp, o.slewDown how fast the delay may grow and shrink (s per s)
   * @param {number} o.jumpOver a delay this much above the target (e.g. after a slow start) is
   *   cut at once, skipping frames, rather than caught up by playing fast for many seconds
   */
  constructor({ fps = FPS, margin = 0.04, quantile: q = 0.9, recent = 15, slewUp = 0.5, slewDown = 0.1,
    jumpOver = 0.4, dim = DIM, history = 60 } = {}) {
    Object.assign(this, { fps, margin, q, recent, slewUp, slewDown, jumpOver, dim, history });
    this.reset();
  }

  reset() {
    this.frames = new Map(); // frame index -> Float32Array(dim)
    this.windows = []; // {startFrame, nFrames, captureTs, rendered}
    this.anchor = null; // {frame, ts}: frame `frame` was captured at `ts` (client clock, s)
    this.lateness = []; // recent (arrival - capture time of the window's first frame), s
    this.delay = null; // current playback delay, s
    this.lastNow = null;
    this.lastFrame = null;
    this.playhead = null;
    this.counters = { windows: 0, late: 0, underruns: 0 };
  }

  /** Frame `frame` of the timeline corresponds to capture time `ts` (the first media message
   * of a session, or the first one after a resume). */
  setAnchor(frame, ts) {
    this.anchor = { frame, ts };
  }

  captureTimeOf(frame) {
    return this.anchor.ts + (frame - this.anchor.frame) / this.fps;
  }

  /** A decoded reaction window arrived at `arrival` (client clock, s). */
  push(win, arrival) {
    this.counters.windows += 1;
    for (let k = 0; k < win.nFrames; k++) {
      const idx = win.startFrame + k;
      if (this.playhead !== null && idx < Math.floor(this.playhead)) this.counters.late += 1;
      this.frames.set(idx, win.frames.slice(k * this.dim, (k + 1) * this.dim));
    }
    this.windows.push({ startFrame: win.startFrame, nFrames: win.nFrames, captureTs: win.captureTs, rendered: false });
    if (this.anchor) {
      this.lateness.push(arrival - this.captureTimeOf(win.startFrame));
      if (this.lateness.length > this.recent) this.lateness.shift();
    }
  }

  /** The delay at which `quantile` of the recent windows arrived in time, plus the margin. */
  targetDelay() {
    if (!this.lateness.length) return null;
    const sorted = [...this.lateness].sort((a, b) => a - b);
    return Math.max(0, quantile(sorted, this.q)) + this.margin;
  }

  /**
   * The frame to show at `now` (client clock, s): {frame: Float32Array | null, playhead,
   * delay, rendered: [{captureTs, latency}]} where `rendered` lists the windows whose first
   * frame is shown for the first time (capture → rendered latency in s).
   */
  sample(now) {
    const rendered = [];
    const target = this.targetDelay();
    if (!this.anchor || target === null) return { frame: this.lastFrame, playhead: null, delay: null, rendered };
    if (this.delay === null) this.delay = target;
    else {
      const dt = this.lastNow === null ? 0 : Math.max(0, now - this.lastNow);
      const change = target - this.delay;
      if (change < -this.jumpOver) this.delay = target;
      else this.delay += change > 0 ? Math.min(change, this.slewUp * dt) : Math.max(change, -this.slewDown * dt);
    }
    this.lastNow = now;
    const f = this.anchor.frame + (now - this.delay - this.anchor.ts) * this.fps;
    const i = Math.floor(f);
    const a = this.frames.get(i);
    const b = this.frames.get(i + 1);
    if (a && b) this.lastFrame = lerpFrame(a, b, f - i);
    else if (a) this.lastFrame = a;
    else {
      // Not there (yet): hold the newest frame before the playhead.
      let newest = -Infinity;
      for (const k of this.frames.keys()) if (k < i && k > newest) newest = k;
      if (newest > -Infinity) {
        this.lastFrame = this.frames.get(newest);
        if (i > newest + 1 && Math.floor(this.playhead ?? -Infinity) !== i) this.counters.underruns += 1;
      }
    }
    this.playhead = f;
    for (const w of this.windows) {
      if (!w.rendered && f >= w.startFrame && this.frames.has(w.startFrame)) {
        w.rendered = true;
        if (Number.isFinite(w.captureTs)) rendered.push({ captureTs: w.captureTs, latency: now - w.captureTs });
      }
    }
    this.prune(i);
    return { frame: this.lastFrame, playhead: f, delay: this.delay, rendered };
  }

  prune(current) {
    for (const k of this.frames.keys()) if (k < current - this.history) this.frames.delete(k);
    this.windows = this.windows.filter((w) => !w.rendered || w.startFrame + w.nFrames > current);
  }
}

