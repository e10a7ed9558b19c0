// Reading the REST answers: errors, the personality contract and its "unavailable" cases.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError, errorOf, interpretPersonality } from "../src/api.js";
import { assemble } from "../src/offline.js";
import { DIM } from "../src/layout.js";

const traits = ["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]
  .map((name, i) => ({ name, value: i / 5, scale: [0, 1], polarity: `higher = more ${name}` }));
const body = { listener_id: "L", model_version: "m1", computed_at: "2026-01-01T00:00:00Z", traits, caveat: "An estimate." };

test("a personality answer of the agreed shape is shown", () => {
  const r = interpretPersonality(200, body);
  assert.equal(r.status, "ok");
  assert.equal(r.data.traits.length, 5);
});

test("no endpoint or an odd answer reads as unavailable", () => {
  assert.equal(interpretPersonality(404, { detail: "Not Found" }).status, "unavailable");
  assert.equal(interpretPersonality(404, undefined).status, "unavailable");
  assert.equal(interpretPersonality(200, undefined).status, "unavailable");
  assert.equal(interpretPersonality(200, { ...body, traits: traits.slice(1) }).status, "unavailable");
  assert.equal(interpretPersonality(200, { ...body, traits: [...traits.slice(1), { ...traits[0], value: "high" }] }).status, "unavailable");
  assert.equal(interpretPersonality(500, "oops").status, "unavailable");
});

test("unknown listener and missing consent are told apart", () => {
  const nf = interpretPersonality(404, { error: { code: "listener_not_found", message: "no listener L", field: null } });
  assert.deepEqual(nf, { status: "not_found", message: "no listener L" });
  const c = interpretPersonality(409, { error: { code: "consent_required", message: "enrolled without consent", field: null } });
  assert.equal(c.status, "consent_required");
  assert.equal(interpretPersonality(503, { error: { code: "not_ready", message: "loading", field: null } }).status, "error");
  const nc = interpretPersonality(409, { error: { code: "personality_not_computable", message: "enrol again", field: null } });
  assert.deepEqual(nc, { status: "not_computable", message: "enrol again" });
  const nm = interpretPersonality(503, { error: { code: "personality_unavailable", message: "no personality model", field: null } });
  assert.deepEqual(nm, { status: "unavailable", reason: "no personality model" });
});

test("API errors keep the server's code, message and field", () => {
  const e = errorOf(422, { error: { code: "bad_media", message: "the clip lasts 3.0 s", field: "clip" } });
  assert.ok(e instanceof ApiError);
  assert.deepEqual([e.status, e.code, e.message, e.field], [422, "bad_media", "the clip lasts 3.0 s", "clip"]);
  assert.equal(errorOf(502, null).code, "http_502");
});

test("offline reaction windows assemble in timeline order, gaps holding the last frame", () => {
  const w = (v, n = 2) => new Float32Array(n * DIM).fill(v);
  const dense = assemble(new Map([[4, w(3)], [0, w(1)]]));
  assert.equal(dense.length, 6 * DIM);
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((k) => dense[k * DIM]), [1, 1, 1, 1, 3, 3]);
});
