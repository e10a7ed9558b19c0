// The page: wires the panels together and runs the render loop. `window.rapport` exposes the
// controllers (for the browser tests and for debugging from the console).

import { deleteListener, getApiKey, setApiKey } from "./api.js";
import { AvatarView, DEFAULT_AVATAR_URL } from "./avatar.js";
import { $, setText } from "./dom.js";
import { Enrolment } from "./enrol.js";
import { ListenerList } from "./listeners.js";
import { LiveController } from "./live.js";
import { OfflineReaction } from "./offline.js";
import { showPersonality } from "./personality.js";

async function loadAvatar(views, source, label) {
  const report = $("avatar-report");
  report.classList.remove("error");
  report.textContent = `loading ${label}…`;
  try {
    const buf = typeof source === "string" ? source : await source.arrayBuffer();
    const eyes = source === DEFAULT_AVATAR_URL;
    let info;
    for (const v of views) info = await v.load(buf, { eyes });
    report.textContent = `${label}: ${info.used.length} of 52 expression shapes driven`
      + (info.missing.length ? `; missing (ignored): ${info.missing.join(", ")}` : "");
    report.dataset.used = String(info.used.length);
    report.dataset.missing = info.missing.join(",");
  } catch (err) {
    report.textContent = `could not load ${label}: ${err.message}`;
    report.classList.add("error");
  }
}

function bindSlider(id, apply) {
  const input = $(id);
  const out = input.parentElement.querySelector("output");
  const update = () => {
    apply(Number(input.value));
    out.textContent = Number(input.value).toFixed(2);
  };
  input.addEventListener("input", update);
  update();
}

function main() {
  const avatar = new AvatarView($("avatar"));
  const offlineAvatar = new AvatarView($("offline-avatar"));
  const views = [avatar, offlineAvatar];
  const listeners = new ListenerList();
  const live = new LiveController(avatar);
  const offline = new OfflineReaction(offlineAvatar, $("listener"));
  const enrolment = new Enrolment(listeners, { getStream: () => live.stream });

  $("api-key").value = getApiKey();
  $("api-key-form").onsubmit = (e) => {
    e.preventDefault();
    setApiKey($("api-key").value.trim());
    setText("message", $("api-key").value.trim() ? "API key set for this tab" : "API key cleared");
    listeners.refresh();
  };
  listeners.addEventListener("change", (e) => {
    const err = e.detail.error;
    if (err) setText("message", `listeners: ${err.message}${err.status === 401 ? " (paste the API key above)" : ""}`);
    showPersonality($("personality-listener").value);
  });
  $("refresh-listeners").onclick = () => listeners.refresh();
  $("personality-listener").onchange = (e) => showPersonality(e.target.value);
  $("delete-listener").onclick = async () => {
    const sel = $("personality-listener");
    if (!sel.value) return;
    const name = sel.selectedOptions[0].textContent;
    if (!window.confirm(`Erase ${name} and everything stored about this person?`)) return;
    try {
      await deleteListener(sel.value);
      setText("message", `deleted ${name}`);
    } catch (err) {
      setText("message", `could not delete ${name}: ${err.message}`);
    }
    listeners.refresh();
  };
  $("start").onclick = () => live.start($("listener").value);
  $("stop").onclick = () => live.stop();

  bindSlider("motion-scale", (v) => views.forEach((a) => { a.motionScale = v; a.refresh(); }));
  bindSlider("expression-scale", (v) => views.forEach((a) => { a.expressionScale = v; a.refresh(); }));
  $("mirror").onchange = (e) => views.forEach((a) => a.canvas.classList.toggle("mirrored", e.target.checked));
  $("avatar-file").onchange = (e) => e.target.files[0] && loadAvatar(views, e.target.files[0], e.target.files[0].name);
  $("avatar-load-url").onclick = () => $("avatar-url").value && loadAvatar(views, $("avatar-url").value, $("avatar-url").value);
  $("avatar-default").onclick = () => loadAvatar(views, DEFAULT_AVATAR_URL, "default face");

  let frames = 0;
  const loop = () => {
    live.tick();
    offline.tick();
    avatar.render();
    offlineAvatar.render();
    if (++frames % 10 === 0) live.showFigures();
    requestAnimationFrame(loop);
  };
  requestAnimationFrame(loop);

  window.rapport = { live, offline, enrolment, listeners, avatar, offlineAvatar, loadAvatar: (src, label) => loadAvatar(views, src, label || String(src)) };
  window.rapport.ready = Promise.all([loadAvatar(views, DEFAULT_AVATAR_URL, "default face"), listeners.refresh()]);
}

main();
