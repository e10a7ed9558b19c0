// REST calls: listeners, enrolment, personality and stream tokens. Errors everywhere are
// {"error": {"code", "message", "field"}}; ApiError carries them.

const KEY_STORAGE = "rapport.apiKey";

export class ApiError extends Error {
  constructor(status, code, message, field = null) {
    super(message);
    Object.assign(this, { name: "ApiError", status, code, field });
  }
}

export function getApiKey(storage = globalThis.sessionStorage) {
  return (storage && storage.getItem(KEY_STORAGE)) || "";
}

export function setApiKey(key, storage = globalThis.sessionStorage) {
  if (!storage) return;
  if (key) storage.setItem(KEY_STORAGE, key);
  else storage.removeItem(KEY_STORAGE);
}

function headers(extra = {}) {
  const key = getApiKey();
  return key ? { "X-API-Key": key, ...extra } : extra;
}

/** The error of a non-2xx response, from its JSON body when it has the standard shape. */
export function errorOf(status, body) {
  const e = body && typeof body === "object" && body.error;
  if (e && typeof e.code === "string") return new ApiError(status, e.code, e.message || e.code, e.field ?? null);
  return new ApiError(status, `http_${status}`, `the server answered ${status}`);
}

async function call(path, { method = "GET", body, fetchImpl = globalThis.fetch } = {}) {
  const res = await fetchImpl(path, { method, headers: headers(), body });
  let data = null;
  const text = await res.text();
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = undefined; // not JSON
  }
  if (!res.ok) throw errorOf(res.status, data);
  return data;
}

export const listListeners = () => call("/v1/listeners?limit=500");
export const deleteListener = (id) => call(`/v1/listeners/${encodeURIComponent(id)}`, { method: "DELETE" });

/** A stream token when an API key is set; null when the server is open (no key pasted). */
export async function streamToken() {
  if (!getApiKey()) return null;
  const data = await call("/v1/sessions", { method: "POST" });
  return data.token;
}

/** Upload an enrolment clip with progress (XHR: fetch has no upload progress). */
export function enrol({ clip, filename, name, consent, onProgress = () => {}, idempotencyKey }) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("clip", clip, filename);
    form.append("name", name);
    form.append("consent", consent ? "true" : "false");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/listeners");
    for (const [k, v] of Object.entries(headers(idempotencyKey ? { "Idempotency-Key": idempotencyKey } : {}))) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress("upload", e.loaded / e.total);
    xhr.upload.onload = () => onProgress("processing", 1);
    xhr.onerror = () => reject(new ApiError(0, "network", "the upload failed (network error)"));
    xhr.onload = () => {
      let data;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(errorOf(xhr.status, data));
    };
    xhr.send(form);
  });
}

export const TRAITS = Object.freeze(["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]);

/**
 * Interpret a personality response: {status: "ok", data} | {status: "unavailable", reason} |
 * {status: "consent_required" | "not_computable" | "not_found" | "error", message}.
 * "unavailable": any 404 that is not listener_not_found (no such route), any unexpected shape,
 * and the server's own personality_unavailable (no personality model loaded).
 */
export function interpretPersonality(status, body) {
  const err = body && typeof body === "object" ? body.error : null;
  if (status === 200) {
    return validPersonality(body) ? { status: "ok", data: body } : { status: "unavailable", reason: "the server's answer has an unexpected shape" };
  }
  if (status === 404 && err && err.code === "listener_not_found") return { status: "not_found", message: err.message || "no such listener" };
  if (status === 404 || status === 405 || body === undefined) return { status: "unavailable", reason: "this server has no personality endpoint" };
  if (status === 409 && err && err.code === "consent_required") {
    return { status: "consent_required", message: err.message || "this listener was enrolled without consent" };
  }
  if (status === 409 && err && err.code === "personality_not_computable") {
    return { status: "not_computable", message: err.message || "no estimate can be made for this listener" };
  }
  if (status === 503 && err && err.code === "personality_unavailable") {
    return { status: "unavailable", reason: err.message || "no personality model" };
  }
  if (err && typeof err.message === "string") return { status: "error", message: err.message };
  return { status: "unavailable", reason: `the server answered ${status}` };
}

function validPersonality(b) {
  if (!b || typeof b !== "object" || !Array.isArray(b.traits) || typeof b.caveat !== "string") return false;
  return b.traits.length === TRAITS.length && b.traits.every((t) => t && TRAITS.includes(t.name)
    && Number.isFinite(t.value) && Array.isArray(t.scale) && t.scale.length === 2
    && t.scale.every(Number.isFinite) && typeof t.polarity === "string");
}

export async function personality(id, fetchImpl = globalThis.fetch) {
  let res;
  try {
    res = await fetchImpl(`/v1/listeners/${encodeURIComponent(id)}/personality`, { headers: headers() });
  } catch (err) {
    return { status: "error", message: `network error: ${err.message}` };
  }
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (res.status === 401) return { status: "error", message: "an API key is needed (see Settings)" };
  return interpretPersonality(res.status, body);
}
