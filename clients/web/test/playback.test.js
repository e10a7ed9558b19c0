// The jitter buffer: timeline placement, interpolation, adaptive delay, latency per window.
import assert from "node:assert/strict";
import { test } from "node:test";

import { DIM, ROTATION } from "../src/layout.js";
import { ReactionPlayer, lerpFrame, sampleDense } from "../src/playback.js";
import { Rolling, quantile } from "../src/stats.js";

function win(startFrame, n, value, captureTs) {
  const frames = new Float32Array(n * DIM);
  for (let k = 0; k < n; k++) frames.fill(value + k, k * DIM, (k + 1) * DIM);
  return { startFrame, nFrames: n, frames, captureTs };
}

test("frames play a steady delay behind capture, interpolated between timeline frames", () => {
  const p = new ReactionPlayer({ margin: 0, quantile: 1 });
  p.setAnchor(0, 100); // frame k captured at 100 + k / 25
  p.push(win(0, 8, 0, 99.98), 100.2); // arrived 0.2 s after frame 0's capture
  let out = p.sample(100.2);
  assert.ok(Math.abs(out.delay - 0.2) < 1e-9);
  assert.equal(out.frame[0], 0);
  assert.equal(out.rendered.length, 1, "the window's first frame is on screen");
  assert.ok(Math.abs(out.rendered[0].latency - 0.22) < 1e-9, "capture → rendered");
  out = p.sample(100.2 + 0.06); // 1.5 frames later
  assert.ok(Math.abs(out.frame[3] - 1.5) < 1e-5, "halfway between frames 1 and 2");
  assert.equal(out.rendered.length, 0, "latency counted once per window");
});

test("the delay grows quickly when windows come late and shrinks slowly", () => {
  const p = new ReactionPlayer({ margin: 0, quantile: 1, slewUp: 0.5, slewDown: 0.1 });
  p.setAnchor(0, 0);
  p.push(win(0, 8, 0, 0), 0.1);
  p.sample(0.1);
  p.push(win(8, 8, 8, 0.3), 0.32 + 0.5); // 0.5 s late
  const d1 = p.sample(0.2).delay;
  assert.ok(Math.abs(d1 - 0.15) < 1e-9, `grew by slewUp × dt: ${d1}`);
  p.lateness = [0.05];
  const d2 = p.sample(0.3).delay;
  assert.ok(Math.abs(d2 - (d1 - 0.01)) < 1e-9, `shrank by slewDown × dt: ${d2}`);
});

test("a delay far above the target is cut at once", () => {
  const p = new ReactionPlayer({ margin: 0, quantile: 1, recent: 2, jumpOver: 0.4 });
  p.setAnchor(0, 0);
  p.push(win(0, 8, 0, 0), 1.5); // a slow start: 1.5 s late
  assert.ok(Math.abs(p.sample(1.5).delay - 1.5) < 1e-9);
  p.push(win(8, 8, 8, 0.3), 0.32 + 0.1);
  p.push(win(16, 8, 16, 0.62), 0.64 + 0.1);
  assert.ok(Math.abs(p.sample(1.6).delay - 0.1) < 1e-9, "jumped to the target");
});

test("a missing frame holds the last one and counts an underrun; late frames are counted", () => {
  const p = new ReactionPlayer({ margin: 0, quantile: 1 });
  p.setAnchor(0, 0);
  p.push(win(0, 8, 0, 0), 0.1);
  p.sample(0.1);
  const held = p.sample(0.1 + 0.5).frame; // frame 12.5: not there
  assert.equal(held[0], 7);
  assert.equal(p.counters.underruns, 1);
  p.push(win(8, 8, 8, 0.3), 0.7);
  assert.ok(p.counters.late >= 4, "frames 8..11 were due before they arrived");
});

test("after a resume the timeline is re-anchored", () => {
  const p = new ReactionPlayer({ margin: 0, quantile: 1 });
  p.setAnchor(0, 0);
  p.push(win(0, 8, 0, 0), 0.1);
  p.sample(0.1);
  p.setAnchor(200, 30); // resumed: frame 200 was captured at 30 s
  p.push(win(200, 8, 5, 30), 30.1);
  const out = p.sample(30.1 + 0.04);
  assert.equal(out.frame[0], 6);
});

test("rotations interpolate the short way round", () => {
  const a = new Float32Array(DIM);
  const b = new Float32Array(DIM);
  a[ROTATION.start + 1] = Math.PI - 0.1;
  b[ROTATION.start + 1] = -Math.PI + 0.1;
  const m = lerpFrame(a, b, 0.5);
  assert.ok(Math.abs(Math.abs(m[ROTATION.start + 1]) - Math.PI) < 1e-5);
});

test("dense sampling clamps at both ends", () => {
  const frames = new Float32Array(3 * DIM);
  frames.fill(1, DIM, 2 * DIM);
  frames.fill(2, 2 * DIM);
  assert.equal(sampleDense(frames, -3)[0], 0);
  assert.equal(sampleDense(frames, 1.5)[0], 1.5);
  assert.equal(sampleDense(frames, 99)[0], 2);
  assert.equal(sampleDense(new Float32Array(0), 1), null);
});

test("median and p95 of the recent latencies", () => {
  const r = new Rolling(100);
  for (let i = 1; i <= 100; i++) r.push(i);
  r.push(Number.NaN);
  const s = r.summary();
  assert.equal(s.count, 100);
  assert.equal(s.median, 50.5);
  assert.ok(Math.abs(s.p95 - 95.05) < 1e-9);
  assert.equal(quantile([], 0.5), null);
});
