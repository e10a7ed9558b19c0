// The live panel: camera and microphone → stream → jitter buffer → avatar, with the figures a
// user watches (latency capture → rendered, frames dropped, connection state).

import { streamToken } from "./api.js";
import { AudioSender, VideoSender, openCamera, stopTracks } from "./capture.js";
import { $, fmtMs, setText } from "./dom.js";
import { ReactionPlayer } from "./playback.js";
import { Kind, floatToPcm16 } from "./protocol.js";
import { StreamSession, State, clock } from "./session.js";
import { Rolling } from "./stats.js";

/** Level of float samples in dB relative to full scale (-100 for silence). */
export function rmsDbfs(samples) {
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  const rms = Math.sqrt(sum / Math.max(1, samples.length));
  return rms > 1e-5 ? 20 * Math.log10(rms) : -100;
}

export class LiveController {
  constructor(avatar) {
    this.avatar = avatar;
    this.player = new ReactionPlayer();
    this.latency = new Rolling(200); // capture → rendered, ms
    this.network = new Rolling(200); // capture → received, ms
    this.session = null;
    this.stream = null;
    this.video = null;
    this.audio = null;
    this.serverStats = null;
    this.windows = 0;
    this.videoSkipped = 0;
    this.micLevel = -100;
    this.lastError = null;
  }

  async start(listener) {
    $("start").disabled = true;
    setText("message", "opening the camera…");
    try {
      this.stream = await openCamera();
    } catch (err) {
      setText("message", `camera/microphone: ${err.message}`);
      $("start").disabled = false;
      return;
    }
    const self = $("self");
    self.srcObject = this.stream;
    await self.play().catch(() => {});
    this.reset();
    const session = new StreamSession({ location: window.location, listener, options: { video: "jpeg", sample_rate: 16000 }, getToken: streamToken });
    this.session = session;
    session.addEventListener("state", (e) => this.onState(e.detail));
    session.addEventListener("anchor", (e) => this.player.setAnchor(e.detail.frame, e.detail.ts));
    session.addEventListener("reaction", (e) => this.onReaction(e.detail));
    session.addEventListener("stats", (e) => { this.serverStats = e.detail; });
    session.addEventListener("restarted", () => this.reset());
    session.addEventListener("error", (e) => {
      this.lastError = e.detail;
      setText("message", `${e.detail.code}: ${e.detail.message}`);
    });
    session.addEventListener("event", (e) => setText("message", `event ${e.detail.event} at frame ${e.detail.frame}`));
    session.addEventListener("resumed", (e) => setText("message", `resumed at frame ${e.detail.next_frame}`));
    this.video = new VideoSender(self, (jpeg, ts) => session.sendMedia(Kind.JPEG, jpeg, ts));
    this.audio = new AudioSender(this.stream, (samples, ts) => {
      this.micLevel = Math.max(rmsDbfs(samples), this.micLevel - 0.5); // a peak meter, 12.5 dB/s decay
      session.sendMedia(Kind.PCM16, floatToPcm16(samples), ts);
    });
    await session.start();
    if (session.state === State.FAILED) return;
    this.video.start();
    $("stop").disabled = false;
    try {
      await this.audio.start();
    } catch (err) {
      // Only news while the stream lives (a failed start tears the microphone down under it).
      if (this.stream && session.state !== State.FAILED) setText("message", `microphone unavailable (${err.message}); streaming video only`);
    }
  }

  reset() {
    this.player.reset();
    this.latency.clear();
    this.network.clear();
    this.windows = 0;
    this.videoSkipped = 0; // frames the encoder could not keep up with, of stopped senders
    this.serverStats = null;
    this.micLevel = -100; // dBFS
  }

  onState({ state, detail }) {
    const badge = $("state");
    badge.textContent = state;
    badge.dataset.state = state;
    if (state === State.FAILED) {
      setText("message", `stream failed: ${detail.message}`);
      this.teardown();
    }
    if (state === State.RECONNECTING) setText("message", `connection lost; reconnecting (attempt ${detail.attempt})…`);
  }

  onReaction({ win, arrival }) {
    this.windows += 1;
    if (Number.isFinite(win.captureTs)) this.network.push((arrival - win.captureTs) * 1000);
    this.player.push(win, arrival);
  }

  /** One display frame: the interpolated reaction on the avatar, and the figures. */
  tick() {
    if (!this.session) return;
    const out = this.player.sample(clock());
    for (const r of out.rendered) this.latency.push(r.latency * 1000);
    if (out.frame) this.avatar.apply(out.frame);
  }

  figures() {
    const lat = this.latency.summary();
    const net = this.network.summary();
    const s = this.session;
    const server = this.serverStats ? this.serverStats.frames_dropped : 0;
    const client = (s ? s.skipped.video : 0) + this.videoSkipped + (this.video ? this.video.skipped : 0);
    const late = this.player.counters.late;
    return {
      state: s ? s.state : "idle",
      latencyMedianMs: lat.median, latencyP95Ms: lat.p95, latencyCount: lat.count,
      networkMedianMs: net.median, windows: this.windows,
      dropped: { server, client, late, total: server + client + late },
      reconnects: s ? s.reconnects : 0, delayMs: this.player.delay === null ? null : this.player.delay * 1000,
      sessionId: s ? s.sessionId : null, sent: s ? { ...s.sent } : null, micDbfs: this.micLevel,
    };
  }

  showFigures() {
    const f = this.figures();
    setText("latency-median", fmtMs(f.latencyMedianMs));
    setText("latency-p95", fmtMs(f.latencyP95Ms));
    setText("latency-net", f.networkMedianMs === null ? "–" : `${fmtMs(f.networkMedianMs)} median`);
    setText("dropped", String(f.dropped.total));
    setText("dropped-detail", `(server ${f.dropped.server}, not sent ${f.dropped.client}, late reactions ${f.dropped.late})`);
    setText("windows", String(f.windows));
    setText("reconnects", String(f.reconnects));
    const meter = $("mic-level");
    meter.value = Math.max(0, f.micDbfs + 60);
    meter.title = f.micDbfs > -100 ? `${Math.round(f.micDbfs)} dBFS` : "silent";
  }

  async stop() {
    $("stop").disabled = true;
    if (this.session) await this.session.stop();
    this.teardown();
    setText("message", "stopped");
  }

  teardown() {
    if (this.video) {
      this.video.stop();
      this.videoSkipped += this.video.skipped;
    }
    if (this.audio) this.audio.stop().catch(() => {});
    this.video = null;
    this.audio = null;
    stopTracks(this.stream);
    this.stream = null;
    $("start").disabled = false;
    $("stop").disabled = true;
  }
}
