"""Enrolment of a listener from an uploaded clip: offline PFL + extraction, then one forward of
the style encoder and hypernetwork, and (with consent) the personality estimate. Synchronous (the
API runs it in a worker thread)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.personal.enrolment import Enrolment, enrol
from models.weights import DefaultModels
from server.errors import BadMedia
from server.perception.files import NoFaceError, extract_file
from server.perception.video import MediaError, probe
from server.personality import Estimate, PersonalityUnavailable, behaviour_blob, estimate

log = logging.getLogger(__name__)

FPS = 25
MIN_FACE_SHARE = 0.75
"""Share of the clip's frames that must show a face."""


@dataclass(frozen=True)
class ClipEnrolment:
    enrolment: Enrolment
    blob: bytes
    clip: dict[str, Any]
    behaviour: bytes | None = None
    """The clip's valid face coefficients (kept only with consent, for the personality)."""
    personality: Estimate | None = None


@dataclass(frozen=True)
class ClipFace:
    """The extracted face of an uploaded clip."""

    coeffs: np.ndarray  # (T, 58)
    found: np.ndarray  # (T,) bool
    clip: dict[str, Any]


def _plain(exc: BaseException, path: str | Path) -> str:
    """An error message without the server's file path."""
    return str(exc).replace(str(path), "the clip").replace("the clip: ", "")


def extract_clip(path: str | Path, *, min_seconds: float = 10.0, max_seconds: float = 120.0
                 ) -> ClipFace:  # fmt: skip
    """The face coefficients of the person filmed in ``path``; :class:`BadMedia` for a clip that
    is corrupt, too short, too long, faceless or silent of faces for most of its length."""
    try:
        info = probe(path)
    except (MediaError, OSError, ValueError) as exc:
        raise BadMedia(f"the upload is not a readable video: {_plain(exc, path)}",
                       field="clip") from exc  # fmt: skip
    seconds = info.duration_s
    if seconds is None:
        raise BadMedia("the clip's duration cannot be read", field="clip")
    if seconds < min_seconds - 0.05:
        raise BadMedia(f"the clip lasts {seconds:.1f} s; enrolment needs at least "
                       f"{min_seconds:.0f} s of the person's face", field="clip")  # fmt: skip
    if seconds > max_seconds:
        raise BadMedia(f"the clip lasts {seconds:.1f} s; at most {max_seconds:.0f} s are "
                       "accepted", field="clip")  # fmt: skip
    try:
        ex = extract_file(path)
    except NoFaceError as exc:
        raise BadMedia("no face was found in the clip", field="clip") from exc
    except (MediaError, OSError, ValueError, RuntimeError) as exc:
        raise BadMedia(f"the clip could not be decoded: {_plain(exc, path)}",
                       field="clip") from exc  # fmt: skip
    face_frames = int(ex.found.sum())
    if ex.frames == 0 or face_frames < MIN_FACE_SHARE * ex.frames:
        raise BadMedia(f"a face was found on {face_frames} of {ex.frames} frames; at least "
                       f"{MIN_FACE_SHARE:.0%} are needed", field="clip")  # fmt: skip
    if face_frames < min_seconds * FPS * MIN_FACE_SHARE:
        raise BadMedia(f"only {face_frames / FPS:.1f} s of face in the clip", field="clip")
    clip = {"seconds": round(ex.frames / FPS, 2), "face_seconds": round(face_frames / FPS, 2),
            "frames": ex.frames, "audio": ex.audio is not None,
            "width": info.width, "height": info.height}  # fmt: skip
    return ClipFace(ex.coeffs, ex.found, clip)


def enrol_clip(path: str | Path, models: DefaultModels, *, min_seconds: float = 10.0,
               max_seconds: float = 120.0, personality: bool = False) -> ClipEnrolment:  # fmt: skip
    """Enrol the person filmed in ``path`` (:func:`extract_clip`'s checks). With
    ``personality`` (the person consented) the clip's coefficients are kept and the personality
    is estimated when a model is loaded; a failed estimate is logged, not fatal."""
    face = extract_clip(path, min_seconds=min_seconds, max_seconds=max_seconds)
    try:
        result = enrol(models.style, models.hyper, face.coeffs, face.found)
    except ValueError as exc:
        raise BadMedia(f"the clip cannot be enrolled: {exc}", field="clip") from exc
    log.info("enrolled a clip of %.1f s (%d face frames)", face.clip["seconds"],
             int(face.found.sum()))  # fmt: skip
    if not personality:
        return ClipEnrolment(result, result.to_bytes(), face.clip)
    traits = None
    try:
        traits = estimate(models, face.coeffs, face.found)
    except (PersonalityUnavailable, ValueError) as exc:
        log.warning("no personality estimate at enrolment: %s", exc)
    return ClipEnrolment(result, result.to_bytes(), face.clip,
                         behaviour_blob(face.coeffs, face.found), traits)  # fmt: skip


def personality_of_clip(path: str | Path, models: DefaultModels, *, min_seconds: float = 10.0,
                        max_seconds: float = 120.0) -> Estimate:  # fmt: skip
    """A one-off personality estimate of the person filmed in ``path`` (nothing is kept)."""
    face = extract_clip(path, min_seconds=min_seconds, max_seconds=max_seconds)
    try:
        return estimate(models, face.coeffs, face.found)
    except ValueError as exc:
        raise BadMedia(f"the clip cannot be read for personality: {exc}", field="clip") from exc
