"""The REACT 25-d "emotion" view of a 58-d coefficient sequence, derived in closed form.

REACT2024's ``Emotion/*.csv`` files hold per frame: [0:15] occurrence of 15 facial action units,
[15:17] valence and arousal in [-1, 1], [17:25] probabilities of 8 expressions. The official
appropriateness metrics run on this view, so every sequence we generate or simulate is scored on
it through this one function. It is a documented, monotone approximation, not a trained
recogniser:

- **AUs** (continuous activations in [0, 1], not binary occurrences): the standard ARKit → FACS
  correspondence, averaging left and right shapes (see ``AU_SOURCES``).
- **Valence** = tanh(2 · (AU12 + ½AU6 − AU15 − ½AU4 − ½AU9 − ½AU10)).
- **Arousal** = tanh(2 · (½(AU1 + AU2) + ½eyeWide + AU26 + ½AU4 + ½AU12 − ½blink) − 0.5), so a
  relaxed neutral face sits slightly below 0 and raised brows, wide eyes or an open jaw raise it.
- **Expressions** (Neutral, Happy, Sad, Surprise, Fear, Disgust, Anger, Contempt): a softmax of
  ``TEMPERATURE`` × evidence, where each expression's evidence is a sum of its prototypical AUs
  (``EXPRESSION_EVIDENCE``) and Neutral's is the constant ``NEUTRAL_EVIDENCE``; Contempt's evidence
  is the left/right asymmetry of the smile and dimple.
"""

from __future__ import annotations

import numpy as np

from models.face import layout

AU_NAMES: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU6", "AU7", "AU9", "AU10", "AU12", "AU14", "AU15", "AU17", "AU23",
    "AU24", "AU25", "AU26",
)  # fmt: skip
EXPRESSION_NAMES: tuple[str, ...] = (
    "Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt",
)  # fmt: skip
NAMES: tuple[str, ...] = (*AU_NAMES, "valence", "arousal", *EXPRESSION_NAMES)
DIM = len(NAMES)
AUS = slice(0, 15)
VALENCE_AROUSAL = slice(15, 17)
EXPRESSIONS = slice(17, 25)
assert DIM == 25

AU_SOURCES: dict[str, tuple[str, ...]] = {
    "AU1": ("browInnerUp",),  # inner brow raiser
    "AU2": ("browOuterUpLeft", "browOuterUpRight"),  # outer brow raiser
    "AU4": ("browDownLeft", "browDownRight"),  # brow lowerer
    "AU6": ("cheekSquintLeft", "cheekSquintRight"),  # cheek raiser
    "AU7": ("eyeSquintLeft", "eyeSquintRight"),  # lid tightener
    "AU9": ("noseSneerLeft", "noseSneerRight"),  # nose wrinkler
    "AU10": ("mouthUpperUpLeft", "mouthUpperUpRight"),  # upper lip raiser
    "AU12": ("mouthSmileLeft", "mouthSmileRight"),  # lip corner puller
    "AU14": ("mouthDimpleLeft", "mouthDimpleRight"),  # dimpler
    "AU15": ("mouthFrownLeft", "mouthFrownRight"),  # lip corner depressor
    "AU17": ("mouthShrugLower",),  # chin raiser
    "AU23": ("mouthRollUpper", "mouthRollLower"),  # lip tightener (rolled, thinned lips)
    "AU24": ("mouthPressLeft", "mouthPressRight"),  # lip pressor
    "AU25": ("mouthLowerDownLeft", "mouthLowerDownRight"),  # lips part
    "AU26": ("jawOpen",),  # jaw drop
}

TEMPERATURE = 4.0
NEUTRAL_EVIDENCE = 0.35
EXPRESSION_EVIDENCE: dict[str, dict[str, float]] = {
    "Happy": {"AU6": 0.5, "AU12": 1.0},
    "Sad": {"AU1": 0.5, "AU4": 0.5, "AU15": 1.0},
    "Surprise": {"AU1": 0.5, "AU2": 0.5, "AU26": 0.7, "eyeWide": 0.5},
    "Fear": {"AU1": 0.4, "AU2": 0.3, "AU4": 0.4, "eyeWide": 0.6, "stretch": 0.6},
    "Disgust": {"AU9": 1.0, "AU10": 0.7, "AU15": 0.3},
    "Anger": {"AU4": 0.8, "AU7": 0.5, "AU23": 0.4, "AU24": 0.4},
}


def _mean_of(coeffs: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    return np.mean([coeffs[..., layout.index(n)] for n in names], axis=0)


def action_units(coeffs: np.ndarray) -> np.ndarray:
    """``(..., 58)`` coefficients → ``(..., 15)`` AU activations in [0, 1]."""
    aus = [_mean_of(coeffs, AU_SOURCES[name]) for name in AU_NAMES]
    au = np.stack(aus, axis=-1)
    # Lips part also when the jaw opens and the lips are not held closed.
    jaw = coeffs[..., layout.index("jawOpen")] - coeffs[..., layout.index("mouthClose")]
    au[..., AU_NAMES.index("AU25")] = np.maximum(au[..., AU_NAMES.index("AU25")], jaw)
    return np.clip(au, 0.0, 1.0)


def emotion_from_coefficients(coeffs: np.ndarray) -> np.ndarray:
    """``(..., 58)`` coefficient frames → ``(..., 25)`` REACT emotion frames (float32)."""
    c = np.asarray(coeffs, dtype=np.float32)
    if c.shape[-1] != layout.DIM:
        raise ValueError(f"expected (..., {layout.DIM}) coefficients, got shape {c.shape}")
    au = action_units(c)
    a = {name: au[..., i] for i, name in enumerate(AU_NAMES)}
    a["eyeWide"] = _mean_of(c, ("eyeWideLeft", "eyeWideRight"))
    a["stretch"] = _mean_of(c, ("mouthStretchLeft", "mouthStretchRight"))
    blink = _mean_of(c, ("eyeBlinkLeft", "eyeBlinkRight"))
    valence = np.tanh(2 * (a["AU12"] + 0.5 * a["AU6"] - a["AU15"]
                           - 0.5 * (a["AU4"] + a["AU9"] + a["AU10"])))  # fmt: skip
    arousal = np.tanh(2 * (0.5 * (a["AU1"] + a["AU2"]) + 0.5 * a["eyeWide"] + a["AU26"]
                           + 0.5 * a["AU4"] + 0.5 * a["AU12"] - 0.5 * blink) - 0.5)  # fmt: skip
    asymmetry = (
        np.abs(c[..., layout.index("mouthSmileLeft")] - c[..., layout.index("mouthSmileRight")])
        + np.abs(c[..., layout.index("mouthDimpleLeft")] - c[..., layout.index("mouthDimpleRight")])
    )
    evidence = [np.full(au.shape[:-1], NEUTRAL_EVIDENCE, dtype=np.float32)]
    for name in EXPRESSION_NAMES[1:-1]:
        evidence.append(sum(w * a[k] for k, w in EXPRESSION_EVIDENCE[name].items()))
    evidence.append(asymmetry)
    logits = TEMPERATURE * np.stack(evidence, axis=-1)
    logits -= logits.max(axis=-1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=-1, keepdims=True)
    out = np.concatenate([au, valence[..., None], arousal[..., None], probs], axis=-1)
    return out.astype(np.float32)
