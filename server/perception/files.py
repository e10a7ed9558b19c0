"""Offline extraction of a whole file: 25 fps coefficients, face mask, PFL window, audio features.

Exactly the paper's PFL: a first pass detects the face on every frame, the window is computed
from all boxes and held fixed, and a second pass crops every frame with it and extracts the
coefficients through the same streaming extractor the live service uses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.face import layout
from models.features.mfcc import mfcc_features
from server.perception.audio import is_silent, load_audio
from server.perception.extract import PflEvent, StreamingFaceExtractor
from server.perception.landmarker import FaceLandmarker
from server.perception.pfl import PflConfig, PflWindow, window_from_boxes
from server.perception.video import MediaError, iter_frames_25fps, probe

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
"""Called with the number of frames just processed."""
FrameSource = Callable[[], Iterator[tuple[int, np.ndarray]]]
"""Anything that, called, starts a fresh iterator of ``(25 fps frame index, RGB frame)``, e.g.
:class:`~server.perception.video.PngFrames`; called once per pass. Its ``str`` names it in errors.
"""
Video = str | Path | FrameSource
"""A video file path (decoded and resampled to 25 fps) or a frame source."""


def frames_of(video: Video) -> Iterator[tuple[int, np.ndarray]]:
    """A fresh iterator of ``(frame index, RGB frame)`` at 25 fps over ``video``."""
    if isinstance(video, str | Path):
        return iter_frames_25fps(video)
    return video()


class NoFaceError(MediaError):
    """No face was found on any frame of a clip."""


@dataclass
class Extraction:
    """The result of :func:`extract_file`, saved by :meth:`save` as an ``.npz``."""

    coeffs: np.ndarray  # (T, 58) float32
    found: np.ndarray  # (T,) bool
    window: PflWindow
    audio: np.ndarray | None = None  # (T, 78) float32, zero where ``audio_mask`` is false
    audio_mask: np.ndarray | None = None  # (T,) bool
    source: str = ""
    events: list[PflEvent] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.coeffs)

    def save(self, path: str | Path) -> None:
        t = self.frames
        audio = self.audio if self.audio is not None else np.zeros((t, 0), np.float32)
        mask = self.audio_mask if self.audio_mask is not None else np.zeros(t, bool)
        np.savez_compressed(
            path,
            coeffs=self.coeffs.astype(np.float32),
            found=self.found,
            names=np.array(layout.NAMES),
            fps=np.int32(layout.FPS),
            pfl_window=np.array(json.dumps(self.window.to_json())),
            audio_features=audio.astype(np.float32),
            audio_mask=mask,
            has_audio=np.bool_(self.audio is not None),
            source=np.array(self.source),
        )


def face_boxes(video: Video, task_path: str | Path | None = None,
               progress: Progress | None = None) -> tuple[list, tuple[int, int]]:  # fmt: skip
    """First pass: the whole-frame face box of every 25 fps frame (``None`` = no face)."""
    boxes: list = []
    size = (0, 0)
    with FaceLandmarker(task_path, video=True) as lm:
        for k, rgb in frames_of(video):
            size = (rgb.shape[1], rgb.shape[0])
            obs = lm.detect(rgb, k * 1000 // layout.FPS)
            boxes.append(obs.box() if obs is not None else None)
            if progress:
                progress(1)
    return boxes, size


def extract_face(video: Video, config: PflConfig | None = None, *,
                 task_path: str | Path | None = None, progress: Progress | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, PflWindow, list[PflEvent]]:  # fmt: skip
    """Two passes over a video: ``(coeffs (T, 58), found (T,), window, events)``.

    ``video`` is a file path or a :data:`FrameSource` (each pass calls it afresh). Raises
    :class:`NoFaceError` when no frame has a face, :class:`MediaError` for unreadable media.
    """
    config = config or PflConfig()
    boxes, size = face_boxes(video, task_path, progress)
    window = window_from_boxes(boxes, size, config)
    if window is None:
        raise NoFaceError(f"{video}: no face found in any of its {len(boxes)} frames")
    # The reference scale is the clip's median, known only after the second pass: extract with
    # scale 1 (z = log scale), then subtract log(median).
    extractor = StreamingFaceExtractor(config, task_path=task_path, window=window.with_ref_scale(1),
                                       allow_reanchor=False)  # fmt: skip
    coeffs, found, events = [], [], []
    with extractor:
        for k, rgb in frames_of(video):
            out = extractor.push(rgb, k / layout.FPS)
            coeffs += [f.coeffs for f in out.frames]
            found += [f.found for f in out.frames]
            events += out.events
            if progress:
                progress(1)
    coeffs_arr = np.stack(coeffs).astype(np.float32)
    found_arr = np.array(found, dtype=bool)
    tz = layout.TRANSLATION.start + 2
    if found_arr.any():
        log_ref = float(np.median(coeffs_arr[found_arr, tz]))
        coeffs_arr[found_arr, tz] -= log_ref
        window = window.with_ref_scale(float(np.exp(log_ref)))
    return coeffs_arr, found_arr, window, events


def audio_features(pcm: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """78-d features for ``frames`` video frames from 16 kHz audio, and which frames had audio."""
    feats = mfcc_features(pcm)
    out = np.zeros((frames, layout.AUDIO_FEATURE_DIM), dtype=np.float32)
    n = min(frames, len(feats))
    out[:n] = feats[:n]
    mask = np.zeros(frames, dtype=bool)
    mask[:n] = True
    return out, mask


def extract_file(
    video: str | Path,
    *,
    audio: str | Path | None = None,
    config: PflConfig | None = None,
    task_path: str | Path | None = None,
    progress: Progress | None = None,
) -> Extraction:
    """The whole offline extraction; audio from ``audio`` or else the video's own audio track."""
    info = probe(video)
    pcm = None
    if audio is not None:
        pcm = load_audio(audio)
    elif info.has_audio:
        pcm = load_audio(video)
    else:
        log.warning("%s has no audio track and no --audio was given: no audio features", video)
    if pcm is not None and is_silent(pcm):
        log.warning("the audio of %s is silent: its features carry no speech", audio or video)
    coeffs, found, window, events = extract_face(video, config, task_path=task_path,
                                                 progress=progress)  # fmt: skip
    result = Extraction(coeffs=coeffs, found=found, window=window, source=str(video), events=events)
    if pcm is not None:
        result.audio, result.audio_mask = audio_features(pcm, len(coeffs))
        missing = int((~result.audio_mask).sum())
        if missing:
            log.warning("audio is shorter than the video: %d of %d frames have no audio",
                        missing, len(coeffs))  # fmt: skip
    return result
