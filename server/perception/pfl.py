"""PFL: the pose-aware fixed crop window (PFLPosNet paper; ARCHITECTURE.md §3).

Offline (a whole file) the window is the paper's: the mean of the per-frame face-box centres, a
square whose side is the extent of all boxes (plus a margin) capped at a maximum size, moved to
stay inside the frame, and the same window crops every frame. Translation coefficients are then
measured relative to this window, so head displacement survives, unlike a face-centred crop.

Online the same rule runs over a warm-up period and the window is then held fixed; the streaming
extractor (:mod:`.extract`) re-anchors it only after the face has left it for a sustained time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

Box = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` in frame pixels."""

CROP_SIZE = 256
"""Side of the resized crop in pixels, as in the paper."""


@dataclass(frozen=True)
class PflConfig:
    """Settings of the PFL window, offline and online."""

    margin: float = 0.15
    """Extra room around the extent of the boxes, as a fraction of that extent, on each side."""
    max_size: float | None = None
    """Largest window side in pixels; ``None`` = the frame's shorter side."""
    crop_size: int = CROP_SIZE
    warmup_frames: int = 25
    """Online: frames (1 s at 25 fps) whose boxes anchor the window."""
    reanchor_after_frames: int = 25
    """Online: consecutive frames with the face outside the window (or lost) before re-anchoring."""
    reanchor_frames: int = 5
    """Online: consecutive found frames (full-frame detection) that define the new window."""

    def __post_init__(self) -> None:
        if not 0 <= self.margin <= 2:
            raise ValueError(f"margin must be in [0, 2], got {self.margin}")
        if self.crop_size < 64:
            raise ValueError(f"crop_size must be at least 64, got {self.crop_size}")
        for name in ("warmup_frames", "reanchor_after_frames", "reanchor_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass(frozen=True)
class PflWindow:
    """A square crop window in frame pixels plus the face scale it was anchored with."""

    cx: float
    cy: float
    size: float
    frame_size: tuple[int, int]  # (width, height)
    ref_scale: float | None = None
    """Apparent face size (pixels) at anchoring; translation z is log(scale / ref_scale)."""

    @property
    def box(self) -> Box:
        h = self.size / 2
        return self.cx - h, self.cy - h, self.cx + h, self.cy + h

    def with_ref_scale(self, ref_scale: float) -> PflWindow:
        return replace(self, ref_scale=float(ref_scale))

    def crop(self, rgb: np.ndarray, out_size: int = CROP_SIZE) -> np.ndarray:
        """The window's content resized to ``out_size``² (black outside the frame)."""
        s = out_size / self.size
        x0, y0, _, _ = self.box
        affine = np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]], dtype=np.float64)
        return cv2.warpAffine(
            rgb,
            affine,
            (out_size, out_size),
            flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )

    def to_window(self, xy_px: np.ndarray) -> np.ndarray:
        """Frame pixels → window coordinates: x right, y up, in window widths, 0 at the centre."""
        xy = np.asarray(xy_px, dtype=np.float64)
        x = (xy[..., 0] - self.cx) / self.size
        y = (self.cy - xy[..., 1]) / self.size
        return np.stack([x, y], axis=-1)

    def from_crop(self, xy_norm: np.ndarray) -> np.ndarray:
        """Crop-normalised coordinates (0..1, y down) → frame pixels."""
        x0, y0, _, _ = self.box
        return np.asarray(xy_norm, dtype=np.float64) * self.size + np.array([x0, y0])

    def contains_centre(self, xy_px: np.ndarray) -> bool:
        """Whether a point (a face centre) lies inside the window."""
        w = self.to_window(xy_px)
        return bool(np.all(np.abs(w) <= 0.5))

    def to_json(self) -> dict[str, float | list[int] | None]:
        return {"cx": self.cx, "cy": self.cy, "size": self.size,
                "frame_size": list(self.frame_size), "ref_scale": self.ref_scale}  # fmt: skip


def window_from_boxes(
    boxes: Sequence[Box | None], frame_size: tuple[int, int], config: PflConfig | None = None
) -> PflWindow | None:
    """The paper's fixed window over ``boxes`` (``None`` = no face); ``None`` if all are None.

    Centre: the mean of the box centres. Side: the larger side of the union of all boxes, plus
    ``margin`` on each side, capped at ``max_size`` (default: the frame's shorter side). The
    window is then shifted (not shrunk) to stay inside the frame.
    """
    config = config or PflConfig()
    found = np.array([b for b in boxes if b is not None], dtype=np.float64)
    if len(found) == 0:
        return None
    w, h = frame_size
    centres = (found[:, :2] + found[:, 2:]) / 2
    cx, cy = centres.mean(axis=0)
    extent = max(found[:, 2].max() - found[:, 0].min(), found[:, 3].max() - found[:, 1].min())
    cap = config.max_size if config.max_size is not None else min(w, h)
    size = float(min(cap, extent * (1 + 2 * config.margin)))
    return PflWindow(*_keep_inside(cx, cy, size, w, h), size=size, frame_size=(w, h))


def face_centred_window(box: Box, frame_size: tuple[int, int], config: PflConfig) -> PflWindow:
    """The usual per-frame face-centred crop (the baseline PFL replaces): centred on this box."""
    x0, y0, x1, y1 = box
    size = max(x1 - x0, y1 - y0) * (1 + 2 * config.margin)
    return PflWindow(cx=(x0 + x1) / 2, cy=(y0 + y1) / 2, size=size, frame_size=frame_size)


def reanchored_window(previous: PflWindow, boxes: Sequence[Box], config: PflConfig) -> PflWindow:
    """A new window over ``boxes`` that keeps at least the previous size and the face reference."""
    fresh = window_from_boxes(boxes, previous.frame_size, config)
    if fresh is None:
        raise ValueError("re-anchoring needs at least one face box")
    w, h = previous.frame_size
    cap = config.max_size if config.max_size is not None else min(w, h)
    size = float(min(cap, max(previous.size, fresh.size)))
    cx, cy = _keep_inside(fresh.cx, fresh.cy, size, w, h)
    return PflWindow(cx=cx, cy=cy, size=size, frame_size=(w, h), ref_scale=previous.ref_scale)


def _keep_inside(cx: float, cy: float, size: float, w: int, h: int) -> tuple[float, float]:
    half = size / 2
    cx = min(max(cx, half), w - half) if size <= w else w / 2
    cy = min(max(cy, half), h - half) if size <= h else h / 2
    return float(cx), float(cy)
