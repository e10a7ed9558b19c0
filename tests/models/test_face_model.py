"""The face model file, deformation, the morph fit on synthetic data, and the shipped model.

Regions below are picked from the canonical mesh's geometry (cm; x toward the subject's left,
y up, z toward the camera; see models/face/mesh.py), never by vertex id:
- chin and lower lip: within 3 cm of the midline in the lowest quarter of the face;
- upper eyelids: 2–5 cm either side of the midline, 2.6–3.6 cm up (the eye corners sit at
  y ≈ 2.6, the brows above 3.7), on the front of the face (z > 2.5);
- the two sides: x > 2 cm (subject's left) and x < −2 cm (right); the midline strip: |x| < 0.5 cm.
MediaPipe's ``eyeBlinkLeft`` closes the subject's left eye (ARKit's convention), which is +x in
canonical axes, the image right of an unmirrored camera. Blinks of the two eyes are 95%
correlated in the fit clips, so without the side-locality prior (models/face/locality.py) the
split between the two targets was loose: the plain fit's ``eyeBlinkLeft`` moved the +x upper lid
0.37 cm down and the −x lid 0.28 cm up. Measured on the shipped model (with the prior): the +x
lid moves 0.40 cm down under eyeBlinkLeft and the −x lid 0.0002 cm; the largest other-side RMS
motion of any side target is 0.7% of its own-side motion.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.face import face_model as fm
from models.face import layout, locality
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
    # The random targets are not one-sided, so this checks the plain fit (no locality prior).
    model, report = fit_morph_targets(samples, mesh, ridge=1e-6, locality_strength=0.0)
    err = np.abs(model.morphs - truth).max()
    assert err < 0.05, err
    assert np.all(model.morph("tongueOut") == 0)
    assert report["heldout_improvement"] > 0.9
    assert report["frames_heldout"] == 80 + 60 + 100
    np.testing.assert_array_equal(model.neutral, mesh.vertices)


def test_locality_penalty_is_zero_for_a_one_sided_split(mesh) -> None:
    """The prior leaves targets that respect the split alone and penalises the wrong side."""
    v = mesh.vertices
    np.testing.assert_allclose(locality.left_share(np.array([-3.0, -1.0, 0.0, 1.0, 3.0])),
                               [0.0, 0.25, 0.5, 0.75, 1.0])  # fmt: skip
    pen = locality.penalty_matrices(v)  # (468, 3, 52, 52)
    blink_l, blink_r = layout.index("eyeBlinkLeft"), layout.index("eyeBlinkRight")
    coef = np.zeros((468, 3, 52))
    coef[:, 1, blink_l] = np.where(v[:, 0] > 2.0, -0.4, 0.0)  # a left-only lid drop
    coef[:, 1, blink_r] = np.where(v[:, 0] < -2.0, -0.4, 0.0)
    assert np.abs(np.einsum("vci,vcij,vcj->", coef, pen, coef)) < 1e-12
    wrong = np.zeros((468, 3, 52))
    wrong[:, 1, blink_l] = np.where(v[:, 0] < -2.0, -0.4, 0.0)  # the left blink on the right
    assert np.einsum("vci,vcij,vcj->", wrong, pen, wrong) > 0.1
    midline = np.abs(v[:, 0]) < 1e-6
    shared = np.zeros((468, 3, 52))
    shared[midline, 1, blink_l] = shared[midline, 1, blink_r] = -0.1  # half each, down
    assert np.abs(np.einsum("vci,vcij,vcj->", shared, pen, shared)) < 1e-12
    assert not {"jawLeft", "mouthLeft"} & {layout.BLENDSHAPE_NAMES[k] for k, _ in
                                           locality.side_pairs()}  # fmt: skip


def test_locality_prior_recovers_one_sided_targets(mesh) -> None:
    """Left/Right scores 99% correlated: the plain fit smears each target over both sides, the
    locality prior recovers one-sided targets."""
    rng = np.random.default_rng(9)
    x = mesh.vertices[:, 0]
    truth = rng.normal(0, 0.3, (52, 468, 3))
    truth[layout.TONGUE_OUT] = 0.0
    for left, right in locality.side_pairs():
        truth[left][x < 2.0] = 0.0
        truth[right][x > -2.0] = 0.0
    samples = []
    for frames in (400, 300, 500):
        scores = rng.uniform(0, 1, (frames, 51)) ** 3
        for left, right in locality.side_pairs():
            scores[:, right] = np.clip(scores[:, left] + rng.normal(0, 0.03, frames), 0, 1)
        pts = mesh.vertices + rng.normal(0, 0.5, (468, 3))
        pts = pts + np.einsum("tk,kvd->tvd", scores, truth[:51])
        samples.append((pts + rng.normal(0, 0.05, pts.shape), scores))
    plain, plain_report = fit_morph_targets(samples, mesh, ridge=1e-6, locality_strength=0.0)
    model, report = fit_morph_targets(samples, mesh, ridge=1e-6)
    assert np.abs(model.morphs - truth).max() < 0.05
    assert np.abs(plain.morphs - truth).max() > 0.1
    assert report["locality"]["other_side_ratio_max"] < 0.01
    assert plain_report["locality"]["other_side_ratio_max"] > 0.1


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
    assert dy_own < -0.15  # cm: the lid comes down
    # A wink: the other eye's lid stays still (the plain fit moved it 0.28 cm up).
    assert np.linalg.norm(shipped.morph(name)[other], axis=1).max() < 0.02
    # Both blinks together close both eyes.
    both = shipped.morph("eyeBlinkLeft") + shipped.morph("eyeBlinkRight")
    assert both[own, 1].mean() < -0.1 and both[other, 1].mean() < -0.1


SIDE_PAIRS = [
    (layout.BLENDSHAPE_NAMES[left], layout.BLENDSHAPE_NAMES[right])
    for left, right in locality.side_pairs()
]


def side_rms(target: np.ndarray, where: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(target[where] ** 2, axis=-1))))


@pytest.mark.parametrize(("left", "right"), SIDE_PAIRS)
def test_shipped_side_targets_move_their_own_side(shipped: FaceModel, left: str, right: str):
    """ARKit's ``...Left`` acts on the subject's left (+x), ``...Right`` on the right.

    ``jawLeft``/``mouthLeft`` (and Right) move the whole jaw or mouth toward a side and are not
    in these pairs. ``cheekSquint`` and ``noseSneer`` never fire in the fit clips and are zero
    on both sides.
    """
    x = shipped.neutral[:, 0]
    on_left, on_right = x > 2.0, x < -2.0
    assert on_left.sum() >= 50 and on_right.sum() >= 50
    for name, own, other in ((left, on_left, on_right), (right, on_right, on_left)):
        target = shipped.morph(name)
        assert side_rms(target, other) <= 0.2 * side_rms(target, own) + 1e-4, name
    # Near the midline neither target pushes the face sideways; on it they share the motion.
    near = np.abs(x) < 0.5
    assert np.abs(shipped.morph(left)[near, 0]).max() < 0.02
    assert np.abs(shipped.morph(right)[near, 0]).max() < 0.02
    on = np.abs(x) < 1e-3
    assert on.sum() >= 10
    yz_left, yz_right = shipped.morph(left)[on, 1:], shipped.morph(right)[on, 1:]
    assert np.abs(yz_left - yz_right).max() < 0.01  # cm; the shared motion is up to 1.9 cm
