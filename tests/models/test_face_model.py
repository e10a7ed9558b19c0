"""The face model file, deformation, the morph fit on synthetic data, and the shipped model.

Regions below are picked from the canonical mesh's geometry (cm; x toward the subject's left,
y up, z toward the camera; see models/face/mesh.py), never by vertex id:
- chin and lower lip: within 3 cm of the midline in the lowest quarter of the face;
- upper eyelids: 2–5 cm either side of the midline, 2.6–3.6 cm up (the eye corners sit at
  y ≈ 2.6, the brows above 3.7), on the front of the face (z > 2.5).
MediaPipe's ``eyeBlinkLeft`` closes the subject's left eye (ARKit's convention), which is +x in
canonical axes, the image right of an unmirrored camera. Measured on the shipped model: the +x
upper lid moves 0.37 cm down under eyeBlinkLeft, the −x lid 0.28 cm up (blinks of the two eyes
are 95% correlated in the fit clips, so the split between the two targets is loose; their sum
is a clean both-eye blink).
"""

from __future__ import annotations

import numpy as np
import pytest

from models.face import face_model as fm
from models.face import layout
from models.face.face_model import FaceModel, FaceModelMissingError, load_default_face_model
from models.face.mesh import load_canonical_mesh
from models.face.morph_fit import fit_morph_targets


@pytest.fixture(scope="module")
def mesh():
    return load_canonical_mesh()


@pytest.fixture(scope="module")
def shipped() -> FaceModel:
    return load_default_face_model()


def small_model(seed: int = 0) -> FaceModel:
    rng = np.random.default_rng(seed)
    return FaceModel(
        neutral=rng.normal(size=(6, 3)).astype(np.float32),
        morphs=rng.normal(size=(52, 6, 3)).astype(np.float32),
        triangles=np.array([[0, 1, 2], [3, 4, 5]], dtype=np.int32),
        uvs=rng.uniform(size=(6, 2)).astype(np.float32),
        provenance={"command": "test", "frames": 3, "nested": {"rmse": 0.1}},
    )


def test_save_load_round_trip(tmp_path) -> None:
    model = small_model()
    path = model.save(tmp_path / "sub" / "m.npz")
    back = FaceModel.load(path)
    for name in ("neutral", "morphs", "triangles", "uvs"):
        np.testing.assert_array_equal(getattr(back, name), getattr(model, name))
    assert back.names == layout.BLENDSHAPE_NAMES
    assert back.provenance == model.provenance
    assert back.morphs.dtype == np.float32 and back.triangles.dtype == np.int32


def test_deform_is_linear() -> None:
    model = small_model(1)
    np.testing.assert_array_equal(model.deform(np.zeros(52)), model.neutral)
    e = np.zeros((2, 3, 52), dtype=np.float32)
    e[1, 2, layout.BLENDSHAPE_NAMES.index("jawOpen")] = 0.5
    out = model.deform(e)
    assert out.shape == (2, 3, 6, 3)
    np.testing.assert_allclose(out[1, 2], model.neutral + 0.5 * model.morph("jawOpen"), atol=1e-6)
    np.testing.assert_array_equal(out[0, 0], model.neutral)
    with pytest.raises(ValueError, match="52"):
        model.deform(np.zeros(51))


def test_bad_shapes_rejected() -> None:
    model = small_model()
    with pytest.raises(ValueError, match="morphs"):
        FaceModel(model.neutral, model.morphs[:51], model.triangles, model.uvs)
    with pytest.raises(ValueError, match="triangle index"):
        FaceModel(model.neutral, model.morphs, model.triangles + 4, model.uvs)


def test_missing_default_names_the_fit_command(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(fm, "default_face_model_path", lambda: tmp_path / "none.npz")
    with pytest.raises(FaceModelMissingError, match="rapport face fit"):
        load_default_face_model()


def test_fit_recovers_synthetic_morphs(mesh) -> None:
    """Known targets, per-clip identity offsets and noise: the fit finds the targets back."""
    rng = np.random.default_rng(7)
    truth = rng.normal(0, 0.3, (52, 468, 3))
    truth[layout.TONGUE_OUT] = 0.0
    samples = []
    for frames in (400, 300, 500):
        scores = rng.uniform(0, 1, (frames, 51)) ** 3
        identity = rng.normal(0, 0.5, (468, 3))
        pts = mesh.vertices + identity + np.einsum("tk,kvd->tvd", scores, truth[:51])
        samples.append((pts + rng.normal(0, 0.01, pts.shape), scores))
    model, report = fit_morph_targets(samples, mesh, ridge=1e-6)
    err = np.abs(model.morphs - truth).max()
    assert err < 0.05, err
    assert np.all(model.morph("tongueOut") == 0)
    assert report["heldout_improvement"] > 0.9
    assert report["frames_heldout"] == 80 + 60 + 100
    np.testing.assert_array_equal(model.neutral, mesh.vertices)


def test_ridge_sweep_runs_and_records(mesh) -> None:
    rng = np.random.default_rng(8)
    truth = rng.normal(0, 0.3, (51, 468, 3))
    scores = rng.uniform(0, 1, (300, 51)) ** 3
    pts = (
        mesh.vertices + np.einsum("tk,kvd->tvd", scores, truth) + rng.normal(0, 0.05, (300, 468, 3))
    )
    _, report = fit_morph_targets([(pts, scores)], mesh)
    sweep = report["ridge_sweep_validation_rmse_cm"]
    assert f"{report['ridge']:g}" in sweep and len(sweep) >= 5
    assert sweep[f"{report['ridge']:g}"] <= 1.05 * min(sweep.values())


# --------------------------------------------------------------------------- the shipped model


def chin_region(v: np.ndarray) -> np.ndarray:
    low = v[:, 1].min() + 0.25 * np.ptp(v[:, 1])
    return (np.abs(v[:, 0]) < 3.0) & (v[:, 1] < low)


def upper_lid(v: np.ndarray, side: int) -> np.ndarray:
    off = side * v[:, 0]
    return (off > 2.0) & (off < 5.0) & (v[:, 1] > 2.6) & (v[:, 1] < 3.6) & (v[:, 2] > 2.5)


def test_shipped_model_has_named_targets(shipped: FaceModel) -> None:
    assert shipped.names == layout.BLENDSHAPE_NAMES
    assert shipped.morphs.shape == (52, 468, 3) and shipped.neutral.shape == (468, 3)
    assert shipped.provenance["command"] == fm.FIT_COMMAND
    assert shipped.provenance["heldout"]["heldout_improvement"] > 0.3
    assert fm.default_face_model_path().stat().st_size < 500_000


def test_shipped_tongue_out_is_zero(shipped: FaceModel) -> None:
    tongue = np.linalg.norm(shipped.morph("tongueOut"))
    assert tongue <= 1e-6 * np.linalg.norm(shipped.morph("jawOpen"))


def test_shipped_jaw_open_moves_chin_down(shipped: FaceModel) -> None:
    v = shipped.neutral
    chin = chin_region(v)
    assert chin.sum() >= 10
    dy = shipped.morph("jawOpen")[chin, 1]
    assert (dy < 0).mean() > 0.9
    assert dy.mean() < -1.0  # cm at full jawOpen: a wide-open mouth drops the chin 1–3 cm
    forehead = v[:, 1] > v[:, 1].max() - 0.25 * np.ptp(v[:, 1])
    assert np.abs(shipped.morph("jawOpen")[forehead]).max() < 0.3 * abs(dy.mean())


@pytest.mark.parametrize(("name", "side"), [("eyeBlinkLeft", 1), ("eyeBlinkRight", -1)])
def test_shipped_blink_closes_one_eye(shipped: FaceModel, name: str, side: int) -> None:
    v = shipped.neutral
    own, other = upper_lid(v, side), upper_lid(v, -side)
    assert own.sum() >= 8 and other.sum() >= 8
    dy_own = shipped.morph(name)[own, 1].mean()
    dy_other = shipped.morph(name)[other, 1].mean()
    assert dy_own < -0.15  # cm: the lid comes down
    assert dy_own < dy_other - 0.2
    # Both blinks together close both eyes.
    both = shipped.morph("eyeBlinkLeft") + shipped.morph("eyeBlinkRight")
    assert both[own, 1].mean() < -0.1 and both[other, 1].mean() < -0.1
