"""Enrolment of a listener from an uploaded clip: offline PFL + extraction, then one forward of
the style encoder and hypernetwork. Synchronous (the API runs it in a worker thread)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.personal.enrolment import Enrolment, enrol
from models.weights import DefaultModels
from server.errors import BadMedia
from server.perception.files import NoFaceError, extract_file
from server.perception.video import MediaError, probe

log = logging.getLogger(__name__)

FPS = 25
MIN_FACE_SHARE = 0.75
"""Share of the clip's frames that must show a face."""


@dataclass(frozen=True)
class ClipEnrolment:
    enrolment: Enrolment
    blob: bytes
    clip: dict[str, Any]


def _plain(exc: BaseException, path: str | Path) -> str:
    """An error message without the server's file path."""
    return str(exc).replace(str(path), "the clip").replace("the clip: ", "")


def enrol_clip(path: str | Path, models: DefaultModels, *, min_seconds: float = 10.0,
               max_seconds: float = 120.0) -> ClipEnrolment:  # fmt: skip
    """Enrol the person filmed in ``path``; :class:`BadMedia` for a clip that is corrupt, too
    short, too long, faceless or silent of faces for most of its length."""
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
    try:
        result = enrol(models.style, models.hyper, ex.coeffs, ex.found)
    except ValueError as exc:
        raise BadMedia(f"the clip cannot be enrolled: {exc}", field="clip") from exc
    clip = {"seconds": round(ex.frames / FPS, 2), "face_seconds": round(face_frames / FPS, 2),
            "frames": ex.frames, "audio": ex.audio is not None,
            "width": info.width, "height": info.height}  # fmt: skip
    log.info("enrolled a clip of %.1f s (%d face frames)", ex.frames / FPS, face_frames)
    return ClipEnrolment(result, result.to_bytes(), clip)
