"""The single owner of the 58-d face coefficient layout (ARCHITECTURE.md §1).

Every face, speaker or listener, live or stored, is a sequence of ``DIM`` float32 numbers per frame
at ``FPS`` frames per second:

===========  =====================================================  ==========
index        meaning                                                range
===========  =====================================================  ==========
0..50        51 ARKit blendshape scores, MediaPipe order             0..1
51           ``tongueOut`` (never detected from live video: 0)      0..1
52..54       head rotation pitch, yaw, roll (rad, right-handed,      about ±1
             y up, z toward the camera)
55..57       head translation x, y (PFL window widths), z (log of    about ±1
             face scale relative to the PFL reference)
===========  =====================================================  ==========

Nothing else in the code base hard-codes an index: use the names and slices here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FPS = 25
"""Coefficient frames per second."""
SAMPLE_RATE = 16_000
"""Audio samples per second (mono PCM16)."""
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
"""Audio samples in one 40 ms coefficient frame (640)."""
AUDIO_FEATURE_DIM = 78
"""MFCC features per coefficient frame (13 × 2 sub-frames × static/Δ/ΔΔ)."""

# The 51 ARKit blendshapes in MediaPipe FaceLandmarker order (its ``_neutral`` category dropped).
MEDIAPIPE_BLENDSHAPES: tuple[str, ...] = (
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
)  # fmt: skip
BLENDSHAPE_NAMES: tuple[str, ...] = (*MEDIAPIPE_BLENDSHAPES, "tongueOut")
"""The 52 expression names, index = coefficient index."""

ROTATION_NAMES: tuple[str, ...] = ("pitch", "yaw", "roll")
TRANSLATION_NAMES: tuple[str, ...] = ("tx", "ty", "tz")
NAMES: tuple[str, ...] = (*BLENDSHAPE_NAMES, *ROTATION_NAMES, *TRANSLATION_NAMES)
"""All 58 coefficient names, index = coefficient index."""

DIM = len(NAMES)
NUM_BLENDSHAPES = len(BLENDSHAPE_NAMES)
EXPRESSION = slice(0, NUM_BLENDSHAPES)
"""The 52 expression (blendshape) coefficients."""
DETECTED_BLENDSHAPES = slice(0, len(MEDIAPIPE_BLENDSHAPES))
"""The 51 blendshapes MediaPipe detects (``tongueOut`` excluded)."""
TONGUE_OUT = BLENDSHAPE_NAMES.index("tongueOut")
ROTATION = slice(NUM_BLENDSHAPES, NUM_BLENDSHAPES + 3)
TRANSLATION = slice(NUM_BLENDSHAPES + 3, NUM_BLENDSHAPES + 6)
POSE = slice(NUM_BLENDSHAPES, DIM)
"""Rotation and translation together: the 6 dims PosNet smooths."""

UNITS: tuple[str, ...] = (
    *(["score"] * NUM_BLENDSHAPES), "rad", "rad", "rad", "window", "window", "log-scale",
)
"""Unit of each coefficient."""

LOWER = np.array([0.0] * NUM_BLENDSHAPES + [-np.pi] * 3 + [-np.inf] * 3, dtype=np.float32)
UPPER = np.array([1.0] * NUM_BLENDSHAPES + [np.pi] * 3 + [np.inf] * 3, dtype=np.float32)
"""Hard bounds of each coefficient; translations are unbounded (typical range ±1)."""

assert DIM == 58 and len(UNITS) == DIM


def index(name: str) -> int:
    """The coefficient index of ``name``; raises ``KeyError`` naming the unknown coefficient."""
    try:
        return NAMES.index(name)
    except ValueError:
        raise KeyError(f"unknown face coefficient {name!r}") from None


def empty(frames: int) -> np.ndarray:
    """A ``(frames, DIM)`` float32 array of neutral frames (all zero)."""
    return np.zeros((frames, DIM), dtype=np.float32)


def validate(coeffs: np.ndarray, *, name: str = "coefficients") -> np.ndarray:
    """Check a ``(T, DIM)`` coefficient array; returns it as float32.

    Raises ``ValueError`` naming the problem: wrong shape, non-finite values, or blendshape scores
    outside 0..1.
    """
    arr = np.asarray(coeffs)
    if arr.ndim != 2 or arr.shape[1] != DIM:
        raise ValueError(f"{name}: expected shape (T, {DIM}), got {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name}: non-finite value at frame {bad[0]}, {NAMES[bad[1]]}")
    tol = 1e-4
    low, high = arr < LOWER - tol, arr > UPPER + tol
    if low.any() or high.any():
        bad = np.argwhere(low | high)[0]
        raise ValueError(
            f"{name}: {NAMES[bad[1]]} = {arr[bad[0], bad[1]]:.4f} at frame {bad[0]} is outside "
            f"[{LOWER[bad[1]]:.3f}, {UPPER[bad[1]]:.3f}]"
        )
    return arr


def expression_from_names(values: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Reorder expression vectors given in another basis order (e.g. FaceVerse ``exp_name_list``).

    ``values`` is ``(..., len(names))``; the result is ``(..., NUM_BLENDSHAPES)`` in our order.
    Names are matched case-insensitively; shapes we have that ``names`` lacks are zero. Raises
    ``ValueError`` for a name that is not an ARKit blendshape or that appears twice.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.shape[-1] != len(names):
        raise ValueError(f"expression vectors have {values.shape[-1]} values, {len(names)} names")
    ours = {n.lower(): i for i, n in enumerate(BLENDSHAPE_NAMES)}
    out = np.zeros((*values.shape[:-1], NUM_BLENDSHAPES), dtype=np.float32)
    seen: set[int] = set()
    for j, name in enumerate(names):
        i = ours.get(name.lower())
        if i is None:
            raise ValueError(f"expression name {name!r} is not an ARKit blendshape")
        if i in seen:
            raise ValueError(f"expression name {name!r} appears twice")
        seen.add(i)
        out[..., i] = values[..., j]
    return out


def expression_to_names(values: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Inverse of :func:`expression_from_names`: ``(..., 52)`` → ``(..., len(names))``."""
    values = np.asarray(values, dtype=np.float32)
    if values.shape[-1] != NUM_BLENDSHAPES:
        raise ValueError(f"expected {NUM_BLENDSHAPES} expression values, got {values.shape[-1]}")
    ours = {n.lower(): i for i, n in enumerate(BLENDSHAPE_NAMES)}
    try:
        idx = [ours[n.lower()] for n in names]
    except KeyError as err:
        raise ValueError(f"expression name {err.args[0]!r} is not an ARKit blendshape") from None
    return values[..., idx]
