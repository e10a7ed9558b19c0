from __future__ import annotations

import numpy as np
import pytest

from models.face import layout
from models.face.rotation import euler_to_matrix, matrix_to_euler, orthonormalize


def test_layout_is_the_58d_space_of_the_design() -> None:
    assert layout.DIM == 58 and len(layout.NAMES) == 58 and len(set(layout.NAMES)) == 58
    assert layout.NAMES[0] == "browDownLeft" and layout.NAMES[50] == "noseSneerRight"
    assert layout.NAMES[51] == "tongueOut" and layout.TONGUE_OUT == 51
    assert layout.NAMES[layout.ROTATION] == ("pitch", "yaw", "roll")
    assert layout.NAMES[layout.TRANSLATION] == ("tx", "ty", "tz")
    assert (layout.POSE.start, layout.POSE.stop) == (52, 58)
    assert layout.SAMPLES_PER_FRAME == 640 and layout.AUDIO_FEATURE_DIM == 78


def test_layout_matches_mediapipe_blendshape_enum() -> None:
    from mediapipe.tasks.python.vision.face_landmarker import Blendshapes

    # The enum names are the ARKit names in SCREAMING_CASE, _neutral first.
    names = [b.name for b in Blendshapes][1:]
    ours = ["".join("_" + c if c.isupper() else c.upper() for c in n)
            for n in layout.MEDIAPIPE_BLENDSHAPES]  # fmt: skip
    assert names == ours


def test_validate_names_the_bad_field() -> None:
    frames = layout.empty(3)
    frames[1, layout.index("jawOpen")] = 1.5
    with pytest.raises(ValueError, match="jawOpen.*frame 1"):
        layout.validate(frames)
    with pytest.raises(ValueError, match=r"\(T, 58\)"):
        layout.validate(np.zeros((3, 57)))
    frames = layout.empty(2)
    frames[0, layout.index("yaw")] = np.nan
    with pytest.raises(ValueError, match="non-finite.*yaw"):
        layout.validate(frames)
    with pytest.raises(KeyError, match="noSuchShape"):
        layout.index("noSuchShape")


def test_expression_reordering_round_trips_any_name_order() -> None:
    rng = np.random.default_rng(0)
    names = list(layout.BLENDSHAPE_NAMES)
    rng.shuffle(names)
    theirs = rng.uniform(0, 1, (4, 52)).astype(np.float32)
    ours = layout.expression_from_names(theirs, [n.upper() for n in names])
    jaw = names.index("jawOpen")
    np.testing.assert_array_equal(ours[:, layout.index("jawOpen")], theirs[:, jaw])
    np.testing.assert_array_equal(layout.expression_to_names(ours, names), theirs)
    # A subset leaves the other shapes at zero; an unknown or repeated name is an error.
    part = layout.expression_from_names(theirs[:, :2], names[:2])
    assert np.count_nonzero(part) == 8
    with pytest.raises(ValueError, match="not an ARKit"):
        layout.expression_from_names(theirs[:, :1], ["smile"])
    with pytest.raises(ValueError, match="twice"):
        layout.expression_from_names(theirs[:, :2], ["jawOpen", "JAWOPEN"])


def test_euler_round_trip_and_conventions() -> None:
    rng = np.random.default_rng(1)
    euler = rng.uniform(-1.2, 1.2, (200, 3))
    np.testing.assert_allclose(matrix_to_euler(euler_to_matrix(euler)), euler, atol=1e-12)
    # In-plane rotation about the camera's z axis adds to roll only.
    theta = 0.3
    rz = euler_to_matrix(np.array([0.0, 0.0, theta]))
    shifted = matrix_to_euler(rz @ euler_to_matrix(euler[:5] * 0.5))
    np.testing.assert_allclose(shifted[:, 2], euler[:5, 2] * 0.5 + theta, atol=1e-12)
    # A horizontal mirror negates yaw and roll, keeps pitch.
    mirror = np.diag([-1.0, 1.0, 1.0])
    flipped = matrix_to_euler(mirror @ euler_to_matrix(euler) @ mirror)
    np.testing.assert_allclose(flipped, euler * np.array([1, -1, -1]), atol=1e-12)


def test_orthonormalize_removes_scale() -> None:
    r = euler_to_matrix(np.array([0.1, -0.4, 0.2]))
    np.testing.assert_allclose(orthonormalize(1.7 * r), r, atol=1e-12)
    assert np.linalg.det(orthonormalize(np.diag([2.0, 1.0, 0.5]))) == pytest.approx(1.0)
