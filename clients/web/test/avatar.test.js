// Binding a model's morph targets to the layout's expression names (three.js scene graph only).
import assert from "node:assert/strict";
import { test } from "node:test";
import * as THREE from "three";

import { morphBindings } from "../src/avatar.js";
import { BLENDSHAPE_NAMES } from "../src/layout.js";

function meshWith(names) {
  const mesh = new THREE.Mesh(new THREE.BufferGeometry(), new THREE.MeshBasicMaterial());
  mesh.morphTargetDictionary = Object.fromEntries(names.map((n, i) => [n, i]));
  mesh.morphTargetInfluences = names.map(() => 0);
  return mesh;
}

test("ARKit names bind on every mesh that has them; the rest are listed as missing", () => {
  const root = new THREE.Group();
  const head = meshWith(["jawOpen", "eyeBlinkLeft", "notArkit"]);
  const teeth = meshWith(["jawOpen"]);
  root.add(head, new THREE.Group().add(teeth));
  const { bindings, used, missing } = morphBindings(root);
  assert.deepEqual(used.sort(), ["eyeBlinkLeft", "jawOpen"]);
  assert.equal(missing.length, BLENDSHAPE_NAMES.length - 2);
  assert.ok(missing.includes("tongueOut") && !missing.includes("jawOpen"));
  assert.deepEqual(bindings.get("jawOpen").map((b) => b.mesh), [head, teeth]);
  assert.equal(bindings.get("eyeBlinkLeft")[0].index, 1);
});

test("a model without morph targets drives nothing and says so", () => {
  const { used, missing } = morphBindings(new THREE.Group().add(new THREE.Mesh()));
  assert.equal(used.length, 0);
  assert.equal(missing.length, 52);
});
