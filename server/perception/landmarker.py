"""MediaPipe FaceLandmarker (tasks API) behind a small, explicit interface.

One :class:`FaceLandmarker` per stream: in video mode MediaPipe tracks across frames, so frames
must come in time order. Always close it (or use ``with``): its destructor fails at interpreter
exit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mediapipe.tasks.python.core import base_options as mp_base
from mediapipe.tasks.python.vision import face_landmarker as mp_fl
from mediapipe.tasks.python.vision.core import image as mp_image
from mediapipe.tasks.python.vision.core import vision_task_running_mode as mp_mode

from models.face import layout
from models.face.task_file import resolve_task_path

log = logging.getLogger(__name__)

NUM_LANDMARKS = 478
"""468 mesh vertices + 10 iris points."""


@dataclass(frozen=True)
class FaceObservation:
    """What the landmarker saw of one face in one image.

    ``landmarks`` are ``(478, 3)``: x, y normalised to the image width and height (0..1 inside),
    z roughly in x units. ``blendshapes`` are the 51 ARKit scores in our order. ``matrix`` is the
    4×4 facial transformation matrix (canonical face → camera, centimetres).
    """

    landmarks: np.ndarray
    blendshapes: np.ndarray
    matrix: np.ndarray
    image_size: tuple[int, int]  # (width, height) in pixels

    def box(self) -> tuple[float, float, float, float]:
        """Tight box ``(x0, y0, x1, y1)`` around the 468 mesh points, in image pixels."""
        w, h = self.image_size
        xy = self.landmarks[:468, :2] * np.array([w, h])
        x0, y0 = xy.min(axis=0)
        x1, y1 = xy.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)


class FaceLandmarker:
    """A FaceLandmarker in video mode (frames with increasing timestamps) or image mode."""

    def __init__(
        self,
        task_path: str | Path | None = None,
        *,
        video: bool = True,
        min_confidence: float = 0.5,
        verify: bool = True,
    ) -> None:
        task = resolve_task_path(task_path, verify=verify)
        mode = mp_mode.VisionTaskRunningMode.VIDEO if video else mp_mode.VisionTaskRunningMode.IMAGE
        options = mp_fl.FaceLandmarkerOptions(
            base_options=mp_base.BaseOptions(model_asset_path=str(task)),
            running_mode=mode,
            num_faces=1,
            min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        self._video = video
        self._last_ms = -1
        self._impl: mp_fl.FaceLandmarker | None = mp_fl.FaceLandmarker.create_from_options(options)

    def detect(self, rgb: np.ndarray, timestamp_ms: int | None = None) -> FaceObservation | None:
        """The face in an ``(H, W, 3)`` uint8 RGB image, or ``None`` if there is none.

        In video mode ``timestamp_ms`` must be given; a timestamp not after the previous one is
        moved just after it (MediaPipe rejects it otherwise).
        """
        if self._impl is None:
            raise RuntimeError("FaceLandmarker is closed")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
        image = mp_image.Image(image_format=mp_image.ImageFormat.SRGB,
                               data=np.ascontiguousarray(rgb))  # fmt: skip
        if self._video:
            if timestamp_ms is None:
                raise ValueError("video mode needs a timestamp")
            ts = max(int(timestamp_ms), self._last_ms + 1)
            self._last_ms = ts
            result = self._impl.detect_for_video(image, ts)
        else:
            result = self._impl.detect(image)
        if not result.face_landmarks:
            return None
        return _observation(result, (rgb.shape[1], rgb.shape[0]))

    def close(self) -> None:
        if self._impl is not None:
            self._impl.close()
            self._impl = None

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _observation(result: mp_fl.FaceLandmarkerResult, size: tuple[int, int]) -> FaceObservation:
    pts = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[0]], dtype=np.float32)
    cats = result.face_blendshapes[0]
    names = [c.category_name for c in cats if c.category_name != "_neutral"]
    if tuple(names) != layout.MEDIAPIPE_BLENDSHAPES:
        raise RuntimeError(f"FaceLandmarker blendshape names differ from the layout: {names}")
    scores = np.array([c.score for c in cats if c.category_name != "_neutral"], dtype=np.float32)
    matrix = np.asarray(result.facial_transformation_matrixes[0], dtype=np.float64).reshape(4, 4)
    return FaceObservation(
        landmarks=pts, blendshapes=np.clip(scores, 0.0, 1.0), matrix=matrix, image_size=size
    )
