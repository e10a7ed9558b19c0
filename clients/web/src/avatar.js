// The avatar renderer: a glTF/GLB head with ARKit-named morph targets, lit, driven by 58-d
// frames — expression through morph targets by name, rotation and translation through the head
// transform. The default face (GET /avatar/default.glb, `rapport face export`) also gets eyes.

import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { BLENDSHAPE_NAMES, ROTATION, TRANSLATION } from "./layout.js";

export const DEFAULT_AVATAR_URL = "/avatar/default.glb";
const CAMERA_DISTANCE_M = 0.45;
const WINDOW_WIDTH_M = 0.25; // one PFL window width at the head, in scene metres
// MediaPipe canonical mesh landmarks around each eye: corners, upper and lower lid.
const EYE_RINGS = [[33, 133, 159, 145], [362, 263, 386, 374]];
const CANONICAL_VERTICES = 468;

/** Which of the layout's expression names each mesh of `root` can show. */
export function morphBindings(root) {
  const bindings = new Map(); // name -> [{mesh, index}]
  root.traverse((obj) => {
    if (!obj.isMesh || !obj.morphTargetDictionary) return;
    for (const [name, index] of Object.entries(obj.morphTargetDictionary)) {
      if (!bindings.has(name)) bindings.set(name, []);
      bindings.get(name).push({ mesh: obj, index });
    }
  });
  const missing = BLENDSHAPE_NAMES.filter((n) => !bindings.has(n));
  const used = BLENDSHAPE_NAMES.filter((n) => bindings.has(n));
  return { bindings, missing, used };
}

export class AvatarView {
  constructor(canvas) {
    this.canvas = canvas;
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: true });
    this.renderer.setPixelRatio(Math.min(2, globalThis.devicePixelRatio || 1));
    this.renderer.outputColorSpace = THREE.SRGBColorSpace;
    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color(0x1d2430);
    this.camera = new THREE.PerspectiveCamera(30, 1, 0.01, 10);
    this.camera.position.set(0, 0, CAMERA_DISTANCE_M);
    this.scene.add(new THREE.HemisphereLight(0xffffff, 0x445566, 1.2));
    const key = new THREE.DirectionalLight(0xffffff, 2.0);
    key.position.set(0.4, 0.5, 1);
    const rim = new THREE.DirectionalLight(0x88aaff, 0.6);
    rim.position.set(-0.6, 0.2, -0.5);
    this.scene.add(key, rim);
    this.head = new THREE.Group(); // pose goes here
    this.scene.add(this.head);
    this.content = null;
    this.binding = { bindings: new Map(), missing: [...BLENDSHAPE_NAMES], used: [] };
    this.eyes = [];
    this.motionScale = 1;
    this.expressionScale = 1;
    this.dirty = true; // something changed since the last render
    this.resize();
  }

  resize() {
    const w = this.canvas.clientWidth || this.canvas.width;
    const h = this.canvas.clientHeight || this.canvas.height;
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
  }

  /** Load a glTF/GLB from a URL or an ArrayBuffer; returns {used, missing} expression names. */
  async load(source, { eyes = false } = {}) {
    const loader = new GLTFLoader();
    const gltf = typeof source === "string" ? await loader.loadAsync(source) : await loader.parseAsync(source, "");
    if (this.content) this.head.remove(this.content);
    this.eyes = [];
    const root = gltf.scene;
    // Centre and size the model: about 20 cm tall, centred on the head's origin.
    const box = new THREE.Box3().setFromObject(root);
    const size = box.getSize(new THREE.Vector3());
    const centre = box.getCenter(new THREE.Vector3());
    const scale = 0.2 / Math.max(size.y, size.x, 1e-6);
    const holder = new THREE.Group();
    holder.scale.setScalar(scale);
    root.position.sub(centre);
    holder.add(root);
    this.head.add(holder);
    this.content = holder;
    this.binding = morphBindings(root);
    if (eyes) this.addEyes(root);
    this.dirty = true;
    return { used: this.binding.used, missing: this.binding.missing };
  }

  addEyes(root) {
    let face = null;
    root.traverse((o) => {
      if (o.isMesh && o.geometry.attributes.position.count === CANONICAL_VERTICES) face = o;
    });
    if (!face) return;
    const pos = face.geometry.attributes.position;
    const white = new THREE.MeshStandardMaterial({ color: 0xf4f1ea, roughness: 0.3 });
    const iris = new THREE.MeshStandardMaterial({ color: 0x3b2a1e, roughness: 0.2 });
    for (const ring of EYE_RINGS) {
      const c = new THREE.Vector3();
      for (const i of ring) c.add(new THREE.Vector3().fromBufferAttribute(pos, i));
      c.divideScalar(ring.length);
      const a = new THREE.Vector3().fromBufferAttribute(pos, ring[0]);
      const b = new THREE.Vector3().fromBufferAttribute(pos, ring[1]);
      const r = a.distanceTo(b) * 0.55;
      const eye = new THREE.Group();
      eye.position.copy(c).add(new THREE.Vector3(0, 0, -r * 0.55));
      const ball = new THREE.Mesh(new THREE.SphereGeometry(r, 24, 16), white);
      const pupil = new THREE.Mesh(new THREE.SphereGeometry(r * 0.42, 16, 12), iris);
      pupil.position.z = r * 0.9; // its front pokes out of the ball
      pupil.scale.z = 0.35;
      eye.add(ball, pupil);
      face.add(eye);
      this.eyes.push(eye);
    }
  }

  /** Show one 58-d frame. */
  apply(frame) {
    if (!frame) return;
    this.frame = frame;
    const es = this.expressionScale;
    for (let i = 0; i < BLENDSHAPE_NAMES.length; i++) {
      const targets = this.binding.bindings.get(BLENDSHAPE_NAMES[i]);
      if (!targets) continue;
      const w = Math.min(1, Math.max(0, frame[i] * es));
      for (const { mesh, index } of targets) mesh.morphTargetInfluences[index] = w;
    }
    const ms = this.motionScale;
    const [pitch, yaw, roll] = frame.subarray(ROTATION.start, ROTATION.end);
    const [tx, ty, tz] = frame.subarray(TRANSLATION.start, TRANSLATION.end);
    this.head.rotation.set(pitch * ms, yaw * ms, roll * ms, "ZYX");
    const z = CAMERA_DISTANCE_M * 0.5 * (1 - Math.exp(-tz * ms));
    this.head.position.set(tx * WINDOW_WIDTH_M * ms, ty * WINDOW_WIDTH_M * ms, z);
    if (this.eyes.length) this.gaze(frame);
    this.dirty = true;
  }

  /** Show the last frame again (after a change of scale). */
  refresh() {
    if (this.frame) this.apply(this.frame);
    this.dirty = true;
  }

  gaze(frame) {
    const v = (name) => frame[BLENDSHAPE_NAMES.indexOf(name)] || 0;
    // Each eye's look-in/out in its own direction; up and down shared.
    const sides = [["Right", -1], ["Left", 1]];
    this.eyes.forEach((eye, k) => {
      const [side, sign] = sides[k];
      const yaw = (v(`eyeLookOut${side}`) - v(`eyeLookIn${side}`)) * 0.5 * sign;
      const pitch = (v(`eyeLookDown${side}`) - v(`eyeLookUp${side}`)) * 0.4;
      eye.rotation.set(pitch, yaw, 0);
    });
  }

  /** Draw when something changed (software rendering is costly: idle views cost nothing). */
  render() {
    const w = this.canvas.clientWidth;
    const h = this.canvas.clientHeight;
    if (w && h && Math.abs(this.camera.aspect - w / h) > 1e-3) {
      this.resize();
      this.dirty = true;
    }
    if (!this.dirty) return;
    this.renderer.render(this.scene, this.camera);
    this.dirty = false;
  }
}
