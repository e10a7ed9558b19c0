// Enrolment: record a 10-s clip in the page (countdown, preview, retake), name it, tick
// consent, upload with progress; the new listener joins the lists.

import { enrol } from "./api.js";
import { openCamera, stopTracks } from "./capture.js";
import { $, showStatus } from "./dom.js";

export const RECORD_S = 10.6; // a little over the server's 10-s minimum, for container rounding
const COUNTDOWN_S = 3;

export function recorderType(isSupported = (t) => MediaRecorder.isTypeSupported(t)) {
  const types = ["video/mp4;codecs=avc1", "video/mp4", "video/webm;codecs=vp8", "video/webm"];
  return types.find(isSupported) || "";
}

const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));

export class Enrolment {
  constructor(listeners, { getStream = null, countdownS = COUNTDOWN_S, recordS = RECORD_S } = {}) {
    Object.assign(this, { listeners, getStream, countdownS, recordS });
    this.clip = null;
    this.busy = false;
    $("enrol-record").onclick = () => this.record();
    $("enrol-retake").onclick = () => this.record();
    $("enrol-form").onsubmit = (e) => {
      e.preventDefault();
      this.upload();
    };
    for (const id of ["enrol-name", "enrol-consent"]) $(id).addEventListener("input", () => this.updateButton());
  }

  updateButton() {
    $("enrol-upload").disabled = this.busy || !this.clip || !$("enrol-name").value.trim() || !$("enrol-consent").checked;
  }

  async record() {
    if (this.busy) return;
    this.busy = true;
    this.clip = null;
    this.updateButton();
    $("enrol-record").disabled = true;
    $("enrol-retake").hidden = true;
    const preview = $("enrol-preview");
    let stream = this.getStream ? this.getStream() : null;
    const own = !stream;
    try {
      if (own) stream = await openCamera();
      preview.hidden = false;
      preview.controls = false;
      preview.src = "";
      preview.srcObject = stream;
      preview.muted = true;
      await preview.play().catch(() => {});
      for (let i = this.countdownS; i > 0; i--) {
        $("enrol-countdown").textContent = String(i);
        await sleep(1);
      }
      $("enrol-countdown").textContent = "●";
      this.clip = await this.capture(stream);
      showStatus("enrol-status", `Recorded ${this.recordS.toFixed(0)} s. Check the preview, then name it and upload, or retake.`);
    } catch (err) {
      showStatus("enrol-status", `Recording failed: ${err.message}`, true);
    } finally {
      if (own) stopTracks(stream);
      $("enrol-countdown").textContent = "";
      $("enrol-record").disabled = false;
      this.busy = false;
    }
    preview.srcObject = null;
    if (this.clip) {
      preview.src = URL.createObjectURL(this.clip.blob);
      preview.controls = true;
      preview.muted = false;
      $("enrol-retake").hidden = false;
    }
    this.updateButton();
  }

  capture(stream) {
    const type = recorderType();
    const rec = new MediaRecorder(stream, type ? { mimeType: type, videoBitsPerSecond: 2_500_000 } : {});
    const parts = [];
    const bar = $("enrol-recording");
    bar.hidden = false;
    return new Promise((resolve, reject) => {
      rec.ondataavailable = (e) => e.data.size && parts.push(e.data);
      rec.onerror = (e) => reject(e.error || new Error("recorder error"));
      rec.onstop = () => {
        bar.hidden = true;
        const mime = rec.mimeType || type || "video/webm";
        const blob = new Blob(parts, { type: mime.split(";")[0] });
        resolve({ blob, filename: `enrolment.${mime.includes("mp4") ? "mp4" : "webm"}` });
      };
      const t0 = performance.now();
      const timer = setInterval(() => {
        const s = (performance.now() - t0) / 1000;
        bar.value = Math.min(1, s / this.recordS);
        if (s >= this.recordS) {
          clearInterval(timer);
          rec.stop();
        }
      }, 100);
      rec.start(1000);
    });
  }

  async upload() {
    if (!this.clip) return;
    const name = $("enrol-name").value.trim();
    this.busy = true;
    this.updateButton();
    const bar = $("enrol-progress");
    bar.hidden = false;
    bar.value = 0;
    showStatus("enrol-status", "Uploading…");
    try {
      const listener = await enrol({
        clip: this.clip.blob, filename: this.clip.filename, name, consent: $("enrol-consent").checked,
        idempotencyKey: crypto.randomUUID ? crypto.randomUUID() : String(Date.now()),
        onProgress: (phase, frac) => {
          if (phase === "upload") bar.value = frac * 0.5;
          else {
            bar.removeAttribute("value"); // indeterminate while the server extracts the face
            showStatus("enrol-status", "Uploaded; the server is analysing the clip…");
          }
        },
      });
      bar.value = 1;
      showStatus("enrol-status", `Enrolled “${listener.name}” (${listener.id}).`);
      this.clip = null;
      $("enrol-retake").hidden = true;
      await this.listeners.refresh(listener.id);
    } catch (err) {
      bar.hidden = true;
      const where = err.field ? ` [${err.field}]` : "";
      showStatus("enrol-status", `Enrolment failed${where}: ${err.message}`, true);
    } finally {
      this.busy = false;
      this.updateButton();
    }
  }
}
