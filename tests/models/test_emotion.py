from __future__ import annotations

import numpy as np
import pytest

from models.data import emotion
from models.face import layout


def frame(**values: float) -> np.ndarray:
    f = layout.empty(1)
    for name, v in values.items():
        f[0, layout.index(name)] = v
    return f


def test_shape_ranges_and_names() -> None:
    rng = np.random.default_rng(0)
    c = np.concatenate([rng.uniform(0, 1, (2, 7, 52)), rng.normal(0, 0.3, (2, 7, 6))], axis=-1)
    e = emotion.emotion_from_coefficients(c)
    assert e.shape == (2, 7, 25) and e.dtype == np.float32 and emotion.DIM == 25
    assert (e[..., emotion.AUS] >= 0).all() and (e[..., emotion.AUS] <= 1).all()
    assert (np.abs(e[..., emotion.VALENCE_AROUSAL]) <= 1).all()
    np.testing.assert_allclose(e[..., emotion.EXPRESSIONS].sum(-1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="58"):
        emotion.emotion_from_coefficients(np.zeros((3, 52)))


def test_neutral_face_is_neutral_and_pose_does_not_matter() -> None:
    e = emotion.emotion_from_coefficients(frame())[0]
    probs = dict(zip(emotion.EXPRESSION_NAMES, e[emotion.EXPRESSIONS], strict=True))
    assert max(probs, key=probs.get) == "Neutral"
    assert not e[emotion.AUS].any() and e[15] == 0.0
    turned = emotion.emotion_from_coefficients(frame(yaw=0.5, tx=0.3))[0]
    np.testing.assert_array_equal(turned, e)


@pytest.mark.parametrize(
    ("shapes", "expression", "au", "valence_sign"),
    [
        ({"mouthSmileLeft": 0.8, "mouthSmileRight": 0.8, "cheekSquintLeft": 0.5,
          "cheekSquintRight": 0.5}, "Happy", "AU12", 1),
        ({"mouthFrownLeft": 0.7, "mouthFrownRight": 0.7, "browInnerUp": 0.5}, "Sad", "AU15", -1),
        ({"browInnerUp": 0.8, "browOuterUpLeft": 0.8, "browOuterUpRight": 0.8, "jawOpen": 0.7,
          "eyeWideLeft": 0.6, "eyeWideRight": 0.6}, "Surprise", "AU26", 0),
        ({"noseSneerLeft": 0.8, "noseSneerRight": 0.8, "mouthUpperUpLeft": 0.6,
          "mouthUpperUpRight": 0.6}, "Disgust", "AU9", -1),
        ({"browDownLeft": 0.9, "browDownRight": 0.9, "eyeSquintLeft": 0.6, "eyeSquintRight": 0.6,
          "mouthPressLeft": 0.5, "mouthPressRight": 0.5}, "Anger", "AU4", -1),
        ({"mouthSmileLeft": 0.7, "mouthDimpleLeft": 0.4}, "Contempt", "AU12", 0),
    ],
)  # fmt: skip
def test_prototypical_faces_read_as_their_expression(shapes, expression, au, valence_sign) -> None:
    e = emotion.emotion_from_coefficients(frame(**shapes))[0]
    probs = e[emotion.EXPRESSIONS]
    assert emotion.EXPRESSION_NAMES[int(np.argmax(probs))] == expression
    assert e[emotion.AU_NAMES.index(au)] > 0.3
    if valence_sign:
        assert np.sign(e[15]) == valence_sign


def test_mappings_are_monotone() -> None:
    levels = np.linspace(0, 1, 6)
    smiles = np.concatenate([frame(mouthSmileLeft=s, mouthSmileRight=s) for s in levels])
    e = emotion.emotion_from_coefficients(smiles)
    assert (np.diff(e[:, 15]) > 0).all()  # valence rises with the smile
    assert (np.diff(e[:, 17 + emotion.EXPRESSION_NAMES.index("Happy")]) > 0).all()
    jaws = np.concatenate([frame(jawOpen=j) for j in np.linspace(0, 1, 6)])
    assert (np.diff(emotion.emotion_from_coefficients(jaws)[:, 16]) > 0).all()  # arousal
