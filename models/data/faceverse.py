"""FaceVerse v2 coefficients (the REACT2024 release's ``3D_FV_files``) mapped to our 58-d space.

A release frame is ``[0:52]`` expression coefficients in FaceVerse's ``exp_name_list`` order,
``[52:55]`` Euler angles (x, y, z) in radians and ``[55:58]`` a translation in the tracker's
model units (REACT_DATA.md §1.2, §2). :class:`FaceVerseMapping` turns a whole clip into ours:

- **Expression**: reordered by name (:func:`models.face.layout.expression_from_names`) and
  clipped to [0, 1]. FaceVerse v2 fits its basis to Apple's 52 ARKit shapes and its tracker keeps
  coefficients non-negative, so they read as ARKit weights; the match is approximate (FaceVerse
  issue #17: its shapes are "not completely the same").
- **Rotation**: the tracker initialises x = π, so ``rotation_offset`` (default ``(π, 0, 0)``) is
  subtracted, each axis is multiplied by ``rotation_sign`` and wrapped to (−π, π]; the result is
  read as (pitch, yaw, roll). The axis signs could not be checked against real data (none was
  available): verify on a few clips with ``rotation_sign`` before training.
- **Translation**: ours is relative to the PFL window (x right, y up in window widths; z the log
  of the face scale over the clip's reference). Assuming a REACT video (256 px, already a face
  crop) is itself the window and the head sits at the tracker's initial depth (z = 6, camera at
  z = 10, focal 1315 px), one model unit moves the face ``1315 / (4 · 256) ≈ 1.28`` window widths:
  ``x, y = translation_scale · (t − offset)``, the offset defaulting to the clip's mean (as PFL
  centres its window on the mean face position). z is ``−log(camera_z − t_z)`` minus its clip
  median (apparent size ∝ 1 / distance; our offline z is relative to the clip's median scale).
  This is a first-order approximation, good for the direction and rough size of head motion.

The release's loaders subtract ``mean_face.npy`` after loading, so the files on disk are not
mean-subtracted; for a copy that is, set ``mean_subtracted=True`` and give the mean face, which is
added back first.

The 52 names come from the FaceVerse model file the user holds, e.g.
``python -c "import json, numpy as np; print(json.dumps(list(np.load('faceverse_simple_v2.npy',
allow_pickle=True).item()['exp_name_list'])))" > exp_names.json``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.data.io import DatasetError, check_finite
from models.face import layout

NUM_EXPRESSIONS = 52
TRACKER_ROTATION_INIT = (math.pi, 0.0, 0.0)
CAMERA_Z = 10.0
INITIAL_Z = 6.0
FOCAL_PX = 1315.0
IMAGE_PX = 256.0
XY_SCALE = FOCAL_PX / ((CAMERA_Z - INITIAL_Z) * IMAGE_PX)
"""Window widths per FaceVerse translation unit at the tracker's initial depth (≈ 1.284)."""
POSE_NAMES = ("rotation_x", "rotation_y", "rotation_z",
              "translation_x", "translation_y", "translation_z")  # fmt: skip


def wrap_angle(x: np.ndarray) -> np.ndarray:
    """Angles wrapped to (−π, π]."""
    return np.pi - np.mod(np.pi - np.asarray(x, dtype=np.float64), 2 * np.pi)


def load_expression_names(path: str | Path) -> tuple[str, ...]:
    """The expression names from a json list, a json object with ``exp_name_list``, or a text
    file with one name per line (commas and whitespace also separate)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the expression name list ({err})") from err
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}: not valid JSON ({err})") from err
        names = data.get("exp_name_list") if isinstance(data, dict) else data
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DatasetError(f"{path}: expected a list of names or {{'exp_name_list': [...]}}")
    else:
        names = [n for n in re.split(r"[\s,]+", text) if n]
    return tuple(n.strip() for n in names)


def load_mean_face(path: str | Path) -> tuple[float, ...]:
    """``mean_face.npy`` of the release, ``(58,)`` (or any shape holding 58 values)."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: not a readable .npy array ({err})") from err
    if arr.size != layout.DIM:
        raise DatasetError(f"{path}: expected {layout.DIM} values, got shape {arr.shape}")
    return tuple(float(v) for v in arr.reshape(-1))


@dataclass(frozen=True)
class FaceVerseMapping:
    """How to read a FaceVerse clip into our space (see the module docstring for the meaning)."""

    expression_names: tuple[str, ...]
    """The 52 expression names in the files' (``exp_name_list``) order."""
    mean_face: tuple[float, ...] | None = None
    mean_subtracted: bool = False
    """The files hold coefficients minus ``mean_face``; it is added back before mapping."""
    rotation_offset: tuple[float, float, float] = TRACKER_ROTATION_INIT
    rotation_sign: tuple[float, float, float] = (1.0, 1.0, 1.0)
    translation_scale: tuple[float, float] = (XY_SCALE, XY_SCALE)
    translation_offset: tuple[float, float] | None = None
    """Subtracted from (t_x, t_y) before scaling; ``None`` = the clip's mean."""
    camera_z: float = CAMERA_Z

    def __post_init__(self) -> None:
        names = tuple(self.expression_names)
        object.__setattr__(self, "expression_names", names)
        if len(names) != NUM_EXPRESSIONS:
            raise ValueError(f"expression_names: expected {NUM_EXPRESSIONS} names, got "
                             f"{len(names)}")  # fmt: skip
        layout.expression_from_names(np.zeros(NUM_EXPRESSIONS), names)  # checks every name
        if self.mean_face is not None:
            mean = tuple(float(v) for v in self.mean_face)
            if len(mean) != layout.DIM or not all(math.isfinite(v) for v in mean):
                raise ValueError(f"mean_face: expected {layout.DIM} finite values")
            object.__setattr__(self, "mean_face", mean)
        if self.mean_subtracted and self.mean_face is None:
            raise ValueError("mean_subtracted=True needs the mean_face to add back")

    @classmethod
    def from_files(cls, names: str | Path, mean_face: str | Path | None = None, *,
                   mean_subtracted: bool = False, **kwargs: object) -> FaceVerseMapping:
        """A mapping from a name list file and an optional ``mean_face.npy``."""
        mean = load_mean_face(mean_face) if mean_face is not None else None
        try:
            return cls(load_expression_names(names), mean, mean_subtracted, **kwargs)
        except ValueError as err:
            if isinstance(err, DatasetError):
                raise
            raise DatasetError(f"{names}: {err}") from err

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the 58 FaceVerse columns (for messages)."""
        return (*self.expression_names, *POSE_NAMES)

    def to_rapport(self, coeffs: np.ndarray, *, name: str = "coefficients") -> np.ndarray:
        """``(T, 58)`` FaceVerse frames of one clip → ``(T, 58)`` float32 in our layout.

        Raises :class:`DatasetError` (prefixed with ``name``) for non-finite values or a head
        behind the camera.
        """
        raw = np.asarray(coeffs, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != layout.DIM:
            raise DatasetError(f"{name}: expected (T, {layout.DIM}), got {raw.shape}")
        check_finite(raw, name, self.columns)
        if self.mean_subtracted:
            raw = raw + np.asarray(self.mean_face)
        out = np.zeros(raw.shape, dtype=np.float64)
        out[:, layout.EXPRESSION] = np.clip(
            layout.expression_from_names(raw[:, :NUM_EXPRESSIONS], self.expression_names), 0, 1)
        rot = raw[:, layout.ROTATION] - np.asarray(self.rotation_offset)
        out[:, layout.ROTATION] = wrap_angle(np.asarray(self.rotation_sign) * rot)
        t = raw[:, layout.TRANSLATION]
        offset = t[:, :2].mean(axis=0) if self.translation_offset is None else np.asarray(
            self.translation_offset)
        out[:, layout.TRANSLATION.start: layout.TRANSLATION.start + 2] = (
            np.asarray(self.translation_scale) * (t[:, :2] - offset))
        distance = self.camera_z - t[:, 2]
        if (distance <= 0).any():
            frame = int(np.argmax(distance <= 0))
            raise DatasetError(f"{name}: translation_z = {t[frame, 2]:.3f} at frame {frame} puts "
                               f"the head behind the camera (camera_z = {self.camera_z})")
        log_d = np.log(distance)
        out[:, layout.TRANSLATION.start + 2] = -(log_d - np.median(log_d))
        return out.astype(np.float32)
