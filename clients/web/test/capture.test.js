// The microphone worklet's chunking and resampling, run outside a browser.
import assert from "node:assert/strict";
import { test } from "node:test";

import { WORKLET } from "../src/capture.js";

function runWorklet(rate, seconds, freq) {
  const posted = [];
  class Base {
    constructor() {
      this.port = { postMessage: (m) => posted.push(m) };
    }
  }
  const make = new Function("AudioWorkletProcessor", "registerProcessor", "sampleRate", "currentFrame", `${WORKLET}; return Chunker;`);
  const Chunker = make(Base, () => {}, rate, 4800);
  const node = new Chunker();
  const total = Math.round(rate * seconds);
  for (let start = 0; start < total; start += 128) {
    const block = new Float32Array(128).map((_, i) => Math.sin((2 * Math.PI * freq * (start + i)) / rate));
    node.process([[block]]);
  }
  return posted;
}

function crossings(chunks) {
  const all = chunks.flatMap((c) => Array.from(c.samples));
  let n = 0;
  for (let i = 1; i < all.length; i++) if ((all[i - 1] < 0) !== (all[i] < 0)) n += 1;
  return { n, samples: all.length };
}

for (const rate of [16000, 44100, 48000]) {
  test(`audio at ${rate} Hz becomes 40-ms chunks at 16 kHz, stamped by sample count`, () => {
    const chunks = runWorklet(rate, 2, 440);
    assert.ok(chunks.length >= 49 && chunks.length <= 50, `${chunks.length} chunks in 2 s`);
    chunks.forEach((c, k) => {
      assert.equal(c.samples.length, 640);
      assert.ok(Math.abs(c.t - (4800 / rate + k * 0.04)) < 1e-9, `chunk ${k} at ${c.t}`);
    });
    const { n, samples } = crossings(chunks);
    const hz = (n / 2) / (samples / 16000);
    assert.ok(Math.abs(hz - 440) < 5, `a 440-Hz tone stays 440 Hz: ${hz}`);
  });
}

test("tones above 8 kHz are damped by the anti-alias filter when downsampling", () => {
  const rms = (chunks) => Math.sqrt(chunks.flatMap((c) => Array.from(c.samples)).reduce((a, x) => a + x * x, 0) / (chunks.length * 640));
  assert.ok(rms(runWorklet(48000, 1, 15000)) < 0.5 * rms(runWorklet(48000, 1, 300)));
});
