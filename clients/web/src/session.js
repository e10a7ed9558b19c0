// One streaming session across its connections: start, media out, reactions in, and resume
// after a dropped connection (docs/protocol.md, "Resuming after a drop").

import {
  FINAL_CLOSE_CODES, Kind, ProtocolViolation, decodeReaction, encodeMedia, flushMessage,
  parseServerMessage, pingMessage, resumeMessage, startMessage, stopMessage, streamUrl,
} from "./protocol.js";

export const State = Object.freeze({
  IDLE: "idle", CONNECTING: "connecting", STREAMING: "streaming", RECONNECTING: "reconnecting",
  STOPPING: "stopping", STOPPED: "stopped", FAILED: "failed",
});

const BACKOFF_S = [0.25, 0.5, 1, 2, 3, 5];
const GIVE_UP_S = 30; // reconnect attempts go on this long after the resume grace period
const PING_AFTER_S = 2; // a quiet server is pinged after this long
const SILENCE_TIMEOUT_S = 6; // nothing from the server this long while streaming: a dead link
const MAX_BUFFERED = 1 << 20; // bytes queued in the socket before video frames are skipped

/** Client clock in seconds (the protocol's capture_ts): Unix time with sub-ms resolution. */
export const clock = () => (performance.timeOrigin + performance.now()) / 1000;

/**
 * Events (CustomEvent, detail in brackets): state [{state, detail}], started [started msg],
 * resumed [resumed msg], anchor [{frame, ts}], reaction [{win, arrival}], stats, event, error
 * [the server's error msg], flushed, stopped.
 */
export class StreamSession extends EventTarget {
  constructor({ location, listener = "generic", options = {}, getToken = async () => null,
    WebSocketImpl = globalThis.WebSocket, now = clock, backoffS = BACKOFF_S } = {}) {
    super();
    Object.assign(this, { location, listener, options, getToken, WebSocketImpl, now, backoffS });
    this.state = State.IDLE;
    this.ws = null;
    this.sessionId = null;
    this.resumeToken = null;
    this.settings = null;
    this.limits = null;
    this.seq = { video: 0, audio: 0 };
    this.needAnchor = null; // frame index the next media message anchors, or null
    this.sent = { video: 0, audio: 0 };
    this.skipped = { video: 0, audio: 0 }; // not sent: connection down or backed up
    this.reconnects = 0;
    this.attempt = 0;
    this.lastHeard = 0;
    this.watchdog = null;
    this.retryTimer = null;
    this.pings = 0;
    this.droppedAt = null; // when the connection was lost (client clock, s)
    this.final = null; // the fatal error that ended the session, if any
  }

  setState(state, detail = null) {
    this.state = state;
    this.emit("state", { state, detail });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  get live() {
    return this.state === State.STREAMING;
  }

  async start() {
    this.setState(State.CONNECTING);
    await this.connect(false);
  }

  async connect(resume) {
    let url;
    try {
      if (resume) url = streamUrl(this.location, { session_id: this.sessionId, resume_token: this.resumeToken });
      else url = streamUrl(this.location, { token: await this.getToken() });
    } catch (err) {
      this.fail("token", String(err.message || err));
      return;
    }
    const ws = new this.WebSocketImpl(url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      this.lastHeard = this.now();
      const msg = resume ? resumeMessage(this.sessionId, this.resumeToken) : startMessage(this.listener, this.options);
      ws.send(JSON.stringify(msg));
    };
    ws.onmessage = (ev) => this.onMessage(ev.data);
    ws.onclose = (ev) => this.onClose(ws, ev.code, ev.reason);
    ws.onerror = () => {}; // a close event follows
  }

  onMessage(data) {
    this.lastHeard = this.now();
    if (typeof data !== "string") {
      let win;
      try {
        win = decodeReaction(data);
      } catch (err) {
        this.emit("warning", `a reaction could not be read: ${err.message}`);
        return;
      }
      this.emit("reaction", { win, arrival: this.now() });
      return;
    }
    let msg;
    try {
      msg = parseServerMessage(data);
    } catch (err) {
      if (err instanceof ProtocolViolation) this.emit("warning", err.message);
      return;
    }
    switch (msg.type) {
      case "started":
        Object.assign(this, { sessionId: msg.session_id, resumeToken: msg.resume_token, settings: msg.settings, limits: msg.limits });
        this.seq = { video: 0, audio: 0 };
        this.needAnchor = 0;
        this.attempt = 0;
        this.setState(State.STREAMING);
        this.startWatchdog();
        this.emit("started", msg);
        break;
      case "resumed":
        this.needAnchor = msg.next_frame;
        this.attempt = 0;
        this.reconnects += 1;
        this.setState(State.STREAMING);
        this.startWatchdog();
        this.emit("resumed", msg);
        break;
      case "error":
        this.onError(msg);
        break;
      default:
        this.emit(msg.type, msg);
    }
  }

  onError(msg) {
    this.emit("error", msg);
    if (msg.code === "resume_failed") {
      // The session is gone: open a new one on a fresh connection.
      this.sessionId = null;
      this.resumeToken = null;
      this.ws.onclose = null;
      this.ws.close(1000);
      this.emit("restarted", msg);
      this.connect(false);
    } else if (msg.fatal && !["idle_timeout", "server_draining"].includes(msg.code)) {
      this.final = msg;
    } else if (msg.code === "unknown_listener" && this.state !== State.STREAMING) {
      this.fail(msg.code, msg.message);
    }
  }

  onClose(ws, code, reason) {
    if (ws !== this.ws) return;
    clearInterval(this.watchdog);
    if (this.state === State.STOPPING || this.state === State.STOPPED) {
      this.setState(State.STOPPED, { code, reason });
      return;
    }
    const resumable = Boolean(this.sessionId && this.resumeToken);
    if (this.final || FINAL_CLOSE_CODES.includes(code)) {
      const why = this.final || { code: `closed_${code}`, message: reason || "the server closed the stream" };
      this.fail(why.code, why.message);
      return;
    }
    if (this.state === State.CONNECTING && !resumable) {
      this.fail("connection_failed", `could not open the stream (close ${code}); check the API key and the server`);
      return;
    }
    this.scheduleReconnect(resumable ? code : null);
  }

  /** Try again after a backoff: resume while the server still keeps the session (its grace
   * period), then start a new one; give up after `GIVE_UP_S` more without a connection. */
  scheduleReconnect(code) {
    const now = this.now();
    if (this.attempt === 0) this.droppedAt = now;
    const delay = this.backoffS[Math.min(this.attempt, this.backoffS.length - 1)];
    this.attempt += 1;
    const grace = this.limits ? this.limits.resume_grace_s : 30;
    const away = now - this.droppedAt;
    if (away > grace + GIVE_UP_S) {
      this.fail("connection_lost", "the connection could not be re-established");
      return;
    }
    if (away + delay >= grace && this.sessionId) {
      // The server has let the session go by now: the next connection starts a new one.
      this.sessionId = null;
      this.resumeToken = null;
      this.emit("restarted", { reason: "resume_grace_over" });
    }
    this.setState(State.RECONNECTING, { code, attempt: this.attempt, delay });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(Boolean(this.sessionId)), delay * 1000);
  }

  startWatchdog() {
    clearInterval(this.watchdog);
    this.watchdog = setInterval(() => {
      if (this.state !== State.STREAMING) return;
      const quiet = this.now() - this.lastHeard;
      if (quiet > SILENCE_TIMEOUT_S) this.drop(4000, "no message from the server");
      else if (quiet > PING_AFTER_S && this.ws.readyState === 1) this.ws.send(JSON.stringify(pingMessage(this.pings++)));
    }, 1000);
  }

  /** Close the socket as a network drop would (the session stays resumable). */
  drop(code = 4000, reason = "dropped by the client") {
    if (this.ws) this.ws.close(code, reason);
  }

  fail(code, message) {
    this.failure = { code, message };
    clearInterval(this.watchdog);
    clearTimeout(this.retryTimer);
    if (this.ws && this.ws.readyState <= 1) {
      this.ws.onclose = null;
      this.ws.close(1000);
    }
    this.setState(State.FAILED, { code, message });
  }

  /** Send one media message; false when it was skipped (not streaming, or the socket is backed
   * up: video only, audio is queued). */
  sendMedia(kind, payload, captureTs) {
    const isVideo = kind !== Kind.PCM16;
    const side = isVideo ? "video" : "audio";
    if (!this.live || this.ws.readyState !== 1 || (isVideo && this.ws.bufferedAmount > MAX_BUFFERED)) {
      this.skipped[side] += 1;
      return false;
    }
    const max = this.limits ? this.limits.max_media_bytes : Infinity;
    const bytes = payload.byteLength + 24;
    if (bytes > max) {
      this.skipped[side] += 1;
      this.emit("warning", `a ${side} message of ${bytes} bytes exceeds the server's limit ${max}`);
      return false;
    }
    const msg = encodeMedia(kind, this.seq[side], captureTs, payload);
    this.seq[side] += 1;
    if (this.needAnchor !== null) {
      this.emit("anchor", { frame: this.needAnchor, ts: captureTs });
      this.needAnchor = null;
    }
    this.ws.send(msg);
    this.sent[side] += 1;
    return true;
  }

  flush() {
    if (this.live) this.ws.send(JSON.stringify(flushMessage()));
  }

  /** End the session: `stop`, then wait for the server's close (or give up after `timeoutS`). */
  stop(timeoutS = 5) {
    clearTimeout(this.retryTimer);
    clearInterval(this.watchdog);
    if (!this.ws || this.ws.readyState !== 1 || this.state === State.FAILED) {
      this.setState(State.STOPPED, null);
      if (this.ws) this.ws.close(1000);
      return Promise.resolve();
    }
    this.setState(State.STOPPING);
    this.ws.send(JSON.stringify(stopMessage()));
    return new Promise((resolve) => {
      const done = () => resolve();
      this.addEventListener("state", (e) => e.detail.state === State.STOPPED && done());
      setTimeout(() => {
        if (this.state !== State.STOPPED) {
          this.ws.close(1000);
          this.setState(State.STOPPED, { code: null, reason: "timeout" });
        }
        done();
      }, timeoutS * 1000);
    });
  }
}
