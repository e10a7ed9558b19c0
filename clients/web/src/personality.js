// The Big-Five panel: GET /v1/listeners/{id}/personality as a bar chart with each trait's
// scale and polarity, the model version and the caveat; "unavailable" where the server has none.

import { personality } from "./api.js";
import { $, el } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";

function bar(value, [lo, hi]) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 100 10");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const frac = Math.min(1, Math.max(0, (value - lo) / (hi - lo || 1)));
  const bg = document.createElementNS(SVG, "rect");
  Object.entries({ x: 0, y: 2, width: 100, height: 6, rx: 3, fill: "#2c3440" }).forEach(([k, v]) => bg.setAttribute(k, v));
  const fg = document.createElementNS(SVG, "rect");
  Object.entries({ x: 0, y: 2, width: (frac * 100).toFixed(1), height: 6, rx: 3, fill: "#6cb4ff" }).forEach(([k, v]) => fg.setAttribute(k, v));
  const mid = document.createElementNS(SVG, "line");
  Object.entries({ x1: 50, x2: 50, y1: 0, y2: 10, stroke: "#9aa4b2", "stroke-width": 0.4 }).forEach(([k, v]) => mid.setAttribute(k, v));
  svg.append(bg, fg, mid);
  svg.setAttribute("aria-label", `${value.toFixed(2)} on a scale from ${lo} to ${hi}`);
  return svg;
}

export function renderPersonality(container, result) {
  container.replaceChildren();
  container.dataset.status = result.status;
  if (result.status === "unavailable") {
    container.append(el("p", { class: "note", text: `Personality is unavailable on this server: ${result.reason}.` }));
    return;
  }
  if (result.status !== "ok") {
    const text = result.status === "consent_required"
      ? `No personality for this listener: ${result.message}`
      : result.message;
    container.append(el("p", { class: result.status === "error" ? "error" : "note", text }));
    return;
  }
  const d = result.data;
  for (const t of d.traits) {
    const row = el("div", { class: "trait", "data-trait": t.name },
      el("span", { text: t.name[0].toUpperCase() + t.name.slice(1) }),
      bar(t.value, t.scale),
      el("span", { class: "value", text: t.value.toFixed(2) }),
      el("span", { class: "polarity", text: `scale ${t.scale[0]}–${t.scale[1]}; ${t.polarity}` }));
    container.append(row);
  }
  container.append(
    el("p", { class: "note caveat", text: d.caveat }),
    el("p", { class: "note", text: `Model ${d.model_version}, computed ${new Date(d.computed_at).toLocaleString()}.` }),
  );
}

export async function showPersonality(id) {
  const box = $("personality");
  if (!id) {
    box.replaceChildren(el("p", { class: "note", text: "Enrol a listener to see its Big-Five estimate." }));
    return;
  }
  box.replaceChildren(el("p", { class: "note", text: "Loading…" }));
  renderPersonality(box, await personality(id));
}
