"""The face path, streaming and offline: frames in, 58-d coefficient frames and PFL events out.

:class:`StreamingFaceExtractor` is the one implementation; the offline extractor runs it over a
file's frames with the paper's whole-clip window fixed in advance, so the two agree exactly when
given the same window. The session engine pushes decoded frames in and pulls coefficients out.

Online states: *warm-up* (frames are buffered, at most ``warmup_frames``, while the whole-frame
landmarker collects face boxes; then the window is anchored and the buffered frames are
processed), *anchored* (each frame's crop goes through the crop landmarker) and *searching*
(after the face was outside the window or lost for ``reanchor_after_frames``: whole-frame
detection until ``reanchor_frames`` consecutive faces re-anchor the window).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.face import layout
from server.perception.coefficients import coefficients, face_centre_px, face_scale_px
from server.perception.landmarker import FaceLandmarker, FaceObservation
from server.perception.pfl import Box, PflConfig, PflWindow, reanchored_window, window_from_boxes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameResult:
    """One coefficient frame: ``coeffs`` is neutral (zeros) when ``found`` is false."""

    index: int
    timestamp: float
    coeffs: np.ndarray
    found: bool


class EventKind(enum.StrEnum):
    ANCHORED = "pfl_anchored"
    REANCHORED = "pfl_reanchored"
    FACE_LOST = "face_lost"
    FACE_FOUND = "face_found"


@dataclass(frozen=True)
class PflEvent:
    """Something a consumer must know: a (re-)anchored window is a discontinuity in translation."""

    kind: EventKind
    frame_index: int
    timestamp: float
    window: PflWindow | None = None


@dataclass
class Output:
    frames: list[FrameResult] = field(default_factory=list)
    events: list[PflEvent] = field(default_factory=list)

    def extend(self, other: Output) -> None:
        self.frames.extend(other.frames)
        self.events.extend(other.events)


class State(enum.StrEnum):
    WARMUP = "warmup"
    ANCHORED = "anchored"
    SEARCHING = "searching"


class StreamingFaceExtractor:
    """Push RGB frames with timestamps, get coefficient frames and events; bounded state.

    ``window``: a fixed window to use from the first frame (it must carry a reference scale);
    ``allow_reanchor=False`` holds it for ever (offline, as the paper).
    """

    def __init__(
        self,
        config: PflConfig | None = None,
        *,
        task_path: str | Path | None = None,
        window: PflWindow | None = None,
        allow_reanchor: bool = True,
    ) -> None:
        if window is not None and window.ref_scale is None:
            raise ValueError("a preset PFL window needs its reference scale")
        self.config = config or PflConfig()
        self.allow_reanchor = allow_reanchor
        self._task_path = task_path
        self._crop_lm = FaceLandmarker(task_path, video=True)
        self._full_lm: FaceLandmarker | None = None
        self.window = window
        self.state = State.ANCHORED if window is not None else State.WARMUP
        self._index = 0
        self._buffer: list[tuple[int, float, np.ndarray, FaceObservation | None]] = []
        self._outside = 0
        self._search_boxes: list[Box] = []
        self._last_found: bool | None = None

    @property
    def buffered_frames(self) -> int:
        return len(self._buffer)

    def push(self, rgb: np.ndarray, timestamp: float) -> Output:
        """One ``(H, W, 3)`` uint8 RGB frame captured at ``timestamp`` seconds."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {rgb.shape} {rgb.dtype}")
        if self.window is not None and (rgb.shape[1], rgb.shape[0]) != self.window.frame_size:
            raise ValueError(
                f"frame size {rgb.shape[1]}x{rgb.shape[0]} differs from the stream's "
                f"{self.window.frame_size[0]}x{self.window.frame_size[1]}"
            )
        index = self._index
        self._index += 1
        if self.state is State.WARMUP:
            return self._warmup(index, timestamp, rgb)
        if self.state is State.SEARCHING:
            return self._search(index, timestamp, rgb)
        return self._tracked(index, timestamp, rgb)

    def flush(self) -> Output:
        """End of stream: frames still in the warm-up buffer are anchored and emitted."""
        return self._anchor() if self._buffer else Output()

    def close(self) -> None:
        self._crop_lm.close()
        if self._full_lm is not None:
            self._full_lm.close()
        self._buffer.clear()

    def __enter__(self) -> StreamingFaceExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- states ----------------------------------------------------------------------------------

    def _full(self, rgb: np.ndarray, timestamp: float) -> FaceObservation | None:
        if self._full_lm is None:
            self._full_lm = FaceLandmarker(self._task_path, video=True)
        return self._full_lm.detect(rgb, int(round(timestamp * 1000)))

    def _warmup(self, index: int, timestamp: float, rgb: np.ndarray) -> Output:
        self._buffer.append((index, timestamp, rgb, self._full(rgb, timestamp)))
        if len(self._buffer) < self.config.warmup_frames:
            return Output()
        return self._anchor()

    def _anchor(self) -> Output:
        buffer, self._buffer = self._buffer, []
        frame_size = (buffer[0][2].shape[1], buffer[0][2].shape[0])
        window = window_from_boxes([o.box() if o else None for *_, o in buffer], frame_size,
                                   self.config)  # fmt: skip
        out = Output()
        if window is None:  # no face in the whole warm-up: report the frames, warm up again
            for index, ts, _, _ in buffer:
                out.extend(self._emit(index, ts, None, on_crop=False))
            return out
        crops = [(i, ts, self._crop_lm.detect(window.crop(rgb, self.config.crop_size),
                                              int(round(ts * 1000))))
                 for i, ts, rgb, _ in buffer]  # fmt: skip
        scales = [face_scale_px(o, window) for *_, o in crops if o is not None]
        if not scales:  # the crop landmarker missed every frame: fall back to whole-frame sizes
            scales = [face_scale_px(o, None) for *_, o in buffer if o is not None]
        self.window = window.with_ref_scale(float(np.median(scales)))
        self.state = State.ANCHORED
        out.events.append(PflEvent(EventKind.ANCHORED, buffer[0][0], buffer[0][1], self.window))
        for index, ts, obs in crops:
            out.extend(self._emit(index, ts, obs, on_crop=True))
        return out

    def _tracked(self, index: int, timestamp: float, rgb: np.ndarray) -> Output:
        assert self.window is not None
        crop = self.window.crop(rgb, self.config.crop_size)
        obs = self._crop_lm.detect(crop, int(round(timestamp * 1000)))
        inside = obs is not None and self.window.contains_centre(face_centre_px(obs, self.window))
        self._outside = 0 if inside else self._outside + 1
        if self.allow_reanchor and self._outside >= self.config.reanchor_after_frames:
            self.state = State.SEARCHING
            self._search_boxes = []
            log.debug("face outside the PFL window for %d frames: searching", self._outside)
        if obs is None:  # the face may have left the window: look at the whole frame
            return self._emit(index, timestamp, self._full(rgb, timestamp), on_crop=False)
        return self._emit(index, timestamp, obs, on_crop=True)

    def _search(self, index: int, timestamp: float, rgb: np.ndarray) -> Output:
        assert self.window is not None
        obs = self._full(rgb, timestamp)
        out = Output()
        if obs is None:
            self._search_boxes = []
        else:
            self._search_boxes.append(obs.box())
            if len(self._search_boxes) >= self.config.reanchor_frames:
                self.window = reanchored_window(self.window, self._search_boxes, self.config)
                self.state = State.ANCHORED
                self._outside = 0
                out.events.append(PflEvent(EventKind.REANCHORED, index, timestamp, self.window))
        out.extend(self._emit(index, timestamp, obs, on_crop=False))
        return out

    def _emit(self, index: int, ts: float, obs: FaceObservation | None, *, on_crop: bool) -> Output:
        found = obs is not None and self.window is not None
        coeffs = (coefficients(obs, self.window, on_crop=on_crop) if found
                  else layout.empty(1)[0])  # fmt: skip
        out = Output(frames=[FrameResult(index, ts, coeffs, found)])
        if self._last_found is not None and found != self._last_found:
            kind = EventKind.FACE_FOUND if found else EventKind.FACE_LOST
            out.events.append(PflEvent(kind, index, ts, None))
        self._last_found = found
        return out
