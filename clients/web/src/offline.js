// Offline: a speaker video file is streamed over the ordinary protocol at real-time pace (frames
// as JPEG, audio decoded to 16 kHz PCM16), the reaction windows are collected, then played back
// in sync with the video.

import { streamToken } from "./api.js";
import { FrameGrabber } from "./capture.js";
import { $, showStatus } from "./dom.js";
import { DIM, FPS, SAMPLE_RATE, SAMPLES_PER_FRAME } from "./layout.js";
import { sampleDense } from "./playback.js";
import { Kind, floatToPcm16 } from "./protocol.js";
import { StreamSession, State, clock } from "./session.js";

/** Mono 16 kHz samples of a media file, or null when it has no decodable audio. */
export async function decodeAudio16k(file) {
  try {
    const ctx = new OfflineAudioContext(1, 1, SAMPLE_RATE);
    const buf = await ctx.decodeAudioData(await file.arrayBuffer());
    const out = new Float32Array(buf.length);
    for (let c = 0; c < buf.numberOfChannels; c++) {
      const ch = buf.getChannelData(c);
      for (let i = 0; i < ch.length; i++) out[i] += ch[i] / buf.numberOfChannels;
    }
    return out;
  } catch {
    return null;
  }
}

/** Reaction windows {startFrame → frames} → one dense (T × DIM) array; gaps hold the last frame. */
export function assemble(windows) {
  const starts = [...windows.keys()].sort((a, b) => a - b);
  if (!starts.length) return new Float32Array(0);
  const last = starts[starts.length - 1];
  const total = last + windows.get(last).length / DIM;
  const out = new Float32Array(total * DIM);
  let prev = null;
  let filled = 0;
  for (const s of starts) {
    const f = windows.get(s);
    if (prev) for (let k = filled; k < s; k++) out.set(prev, k * DIM);
    out.set(f, s * DIM);
    filled = s + f.length / DIM;
    prev = f.subarray(f.length - DIM);
  }
  return out;
}

export class OfflineReaction {
  constructor(avatar, listenerSelect) {
    Object.assign(this, { avatar, listenerSelect });
    this.file = null;
    this.frames = null; // dense reaction, frame k ↔ video time k / FPS
    this.playing = false;
    this.video = $("offline-video");
    $("offline-file").onchange = (e) => this.pick(e.target.files[0]);
    $("offline-generate").onclick = () => this.generate();
    $("offline-play").onclick = () => this.play();
  }

  pick(file) {
    if (!file) return;
    this.file = file;
    this.frames = null;
    this.video.src = URL.createObjectURL(file);
    $("offline-generate").disabled = false;
    $("offline-play").disabled = true;
    showStatus("offline-status", `${file.name}: press “Generate reaction”.`);
  }

  async generate() {
    const video = this.video;
    $("offline-generate").disabled = true;
    $("offline-play").disabled = true;
    showStatus("offline-status", "Decoding the audio…");
    const audio = await decodeAudio16k(this.file);
    const windows = new Map();
    const session = new StreamSession({ location: window.location, listener: this.listenerSelect.value, options: { video: "jpeg", sample_rate: SAMPLE_RATE }, getToken: streamToken });
    this.session = session;
    let anchorOffset = null; // capture time of frame 0 minus T0, s
    let T0 = null;
    session.addEventListener("anchor", (e) => { if (e.detail.frame === 0) anchorOffset = e.detail.ts - T0; });
    session.addEventListener("reaction", (e) => {
      const { win } = e.detail;
      windows.set(win.startFrame, win.frames);
      this.avatar.apply(win.frames.subarray(win.frames.length - DIM));
    });
    const started = new Promise((resolve, reject) => {
      session.addEventListener("started", resolve, { once: true });
      session.addEventListener("state", (e) => e.detail.state === State.FAILED && reject(new Error(e.detail.detail.message)));
    });
    try {
      await session.start();
      await started;
    } catch (err) {
      showStatus("offline-status", `Could not start: ${err.message}`, true);
      $("offline-generate").disabled = false;
      return;
    }
    showStatus("offline-status", "Streaming the file to the server…");
    video.muted = true;
    video.currentTime = 0;
    try {
      await video.play();
    } catch (err) {
      showStatus("offline-status", `This browser cannot play the file: ${err.message}`, true);
      await session.stop();
      $("offline-generate").disabled = false;
      return;
    }
    T0 = clock() - video.currentTime;
    const grabber = new FrameGrabber();
    let lastT = -1;
    let chunk = 0;
    const nChunks = audio ? Math.floor(audio.length / SAMPLES_PER_FRAME) : 0;
    await new Promise((resolve) => {
      const step = async () => {
        const t = video.currentTime;
        while (chunk < nChunks && chunk * SAMPLES_PER_FRAME / SAMPLE_RATE <= t + 0.04) {
          const pcm = audio.subarray(chunk * SAMPLES_PER_FRAME, (chunk + 1) * SAMPLES_PER_FRAME);
          session.sendMedia(Kind.PCM16, floatToPcm16(pcm), T0 + chunk * SAMPLES_PER_FRAME / SAMPLE_RATE);
          chunk += 1;
        }
        if (t > lastT) {
          lastT = t;
          const jpeg = await grabber.grab(video);
          if (jpeg) session.sendMedia(Kind.JPEG, jpeg, T0 + t);
        }
        $("offline-progress").value = video.duration ? t / video.duration : 0;
        if (video.ended || video.paused || session.state === State.FAILED) resolve();
        else setTimeout(step, 1000 / FPS);
      };
      step();
    });
    if (session.state === State.FAILED) {
      video.pause();
      showStatus("offline-status", `The stream failed: ${session.failure.message}`, true);
      $("offline-generate").disabled = false;
      return;
    }
    showStatus("offline-status", "Waiting for the last windows…");
    const flushed = new Promise((resolve) => {
      session.addEventListener("flushed", resolve, { once: true });
      setTimeout(resolve, 15000);
    });
    session.flush();
    await flushed;
    await session.stop();
    this.anchorOffset = anchorOffset || 0;
    this.frames = assemble(windows);
    const n = this.frames.length / DIM;
    showStatus("offline-status", `Reaction ready: ${n} frames (${(n / FPS).toFixed(1)} s) in ${windows.size} windows. Press “Play side by side”.`);
    $("offline-generate").disabled = false;
    $("offline-play").disabled = n === 0;
  }

  async play() {
    if (!this.frames) return;
    this.video.currentTime = 0;
    this.video.muted = false;
    await this.video.play().catch(() => { this.video.muted = true; return this.video.play(); });
    this.playing = true;
    this.video.onended = () => { this.playing = false; };
  }

  /** One display frame of the playback. */
  tick() {
    if (!this.playing || !this.frames) return;
    const f = (this.video.currentTime - this.anchorOffset) * FPS;
    this.avatar.apply(sampleDense(this.frames, f));
  }
}
