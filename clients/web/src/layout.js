// The 58-d coefficient layout, mirrored from models/face/layout.py (a test keeps them equal).
// Nothing else in the client hard-codes an index: use these names and ranges.

export const FPS = 25;
export const SAMPLE_RATE = 16000;
export const SAMPLES_PER_FRAME = SAMPLE_RATE / FPS; // 640 samples = 40 ms

// The 51 ARKit blendshapes in MediaPipe FaceLandmarker order, then tongueOut.
export const BLENDSHAPE_NAMES = Object.freeze([
  "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
  "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
  "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
  "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight",
  "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
  "eyeWideLeft", "eyeWideRight",
  "jawForward", "jawLeft", "jawOpen", "jawRight",
  "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
  "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
  "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight",
  "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
  "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
  "mouthUpperUpLeft", "mouthUpperUpRight",
  "noseSneerLeft", "noseSneerRight",
  "tongueOut",
]);
export const ROTATION_NAMES = Object.freeze(["pitch", "yaw", "roll"]); // radians
export const TRANSLATION_NAMES = Object.freeze(["tx", "ty", "tz"]); // window widths, log scale
export const NAMES = Object.freeze([...BLENDSHAPE_NAMES, ...ROTATION_NAMES, ...TRANSLATION_NAMES]);
export const DIM = NAMES.length; // 58

export const NUM_BLENDSHAPES = BLENDSHAPE_NAMES.length; // 52
export const ROTATION = Object.freeze({ start: NUM_BLENDSHAPES, end: NUM_BLENDSHAPES + 3 });
export const TRANSLATION = Object.freeze({ start: NUM_BLENDSHAPES + 3, end: NUM_BLENDSHAPES + 6 });
