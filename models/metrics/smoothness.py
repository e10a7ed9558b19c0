"""Smoothness of a head-pose stream generated window by window: jumps at the seams.

A generator that emits ``window`` new frames at a time, the first window starting at frame
``offset``, can be smooth inside each window and still jump where one window meets the next. We
compare finite differences of the pose across those seams with the ones inside windows.

Definitions, for a sequence x of T frames (frames 0..T-1):

- windows are ``[offset + i·window, offset + (i+1)·window)``; when ``offset > 0`` the frames
  before it form one more region (e.g. a warm-up). A **boundary** is a frame b that starts a
  window and has a predecessor: b = offset + i·window with 1 <= b <= T-1.
- the k-th difference starting at frame s, ``np.diff(x, k)[s]``, uses frames s..s+k:
  velocity (k = 1) ``x[s+1] - x[s]``, acceleration (k = 2) ``x[s+2] - 2x[s+1] + x[s]``, jerk
  (k = 3) ``x[s+3] - 3x[s+2] + 3x[s+1] - x[s]``.
- a difference is **at a seam** when its frames straddle a boundary b, i.e. include both b-1
  and b: ``b - k <= s <= b - 1``. So each seam has 1 velocity (``x[b] - x[b-1]``), 2
  accelerations and 3 jerks. Every other difference lies inside one window: **inside**.

Scores are mean absolute differences (per frame step, in the units of the dims: rad, window
widths, log-scale), averaged over leading batch dims, differences and the dims of a group:
``rotation`` (pitch, yaw, roll), ``translation`` (tx, ty, tz) and ``pose`` (all six). Rotations
are used as they are (no angle unwrapping: our angles stay well inside ±π).
"""

from __future__ import annotations

import numpy as np

from models.face import layout

POSE_DIM = layout.POSE.stop - layout.POSE.start
_P = layout.POSE.start
ROTATION = slice(layout.ROTATION.start - _P, layout.ROTATION.stop - _P)
"""Rotation (pitch, yaw, roll) within the 6 pose dims."""
TRANSLATION = slice(layout.TRANSLATION.start - _P, layout.TRANSLATION.stop - _P)
"""Translation (tx, ty, tz) within the 6 pose dims."""
GROUPS: dict[str, slice] = {"rotation": ROTATION, "translation": TRANSLATION, "pose": slice(None)}
"""Dim groups within the 6 pose dims."""
ORDERS: dict[str, int] = {"velocity": 1, "acceleration": 2, "jerk": 3}


def boundaries(frames: int, window: int, offset: int = 0) -> np.ndarray:
    """Frames that start a window and have a predecessor: ``offset + i·window`` in [1, T-1]."""
    if window < 1 or offset < 0:
        raise ValueError(f"window must be >= 1 and offset >= 0, got {window}, {offset}")
    starts = np.arange(offset, frames, window)
    return starts[starts >= 1]


def seam_mask(frames: int, window: int, order: int, offset: int = 0) -> np.ndarray:
    """``(T - order,)`` bool: True where the ``order``-th difference starting at that frame
    straddles a window boundary (see the module docstring)."""
    mask = np.zeros(max(frames - order, 0), dtype=bool)
    for b in boundaries(frames, window, offset):
        mask[max(b - order, 0) : min(b, mask.size)] = True
    return mask


def _pose(seq: np.ndarray) -> np.ndarray:
    arr = np.asarray(seq, dtype=np.float64)
    if arr.ndim >= 2 and arr.shape[-1] == layout.DIM:
        arr = arr[..., layout.POSE]
    if arr.ndim < 2 or arr.shape[-1] != POSE_DIM:
        raise ValueError(f"expected (..., T, {POSE_DIM}) pose or (..., T, {layout.DIM}) "
                         f"coefficients, got shape {arr.shape}")  # fmt: skip
    return arr


def _ratio(seam: float, inside: float) -> float:
    """seam / inside; inf when only the seams move, nan when neither does (or either is nan)."""
    if inside == 0.0:
        return float("nan") if seam == 0.0 or np.isnan(seam) else float("inf")
    return seam / inside


def seam_jumps(seq: np.ndarray, window: int, *, offset: int = 0) -> dict[str, dict[str, float]]:
    """Velocity, acceleration and jerk at window seams versus inside windows.

    ``seq`` is ``(..., T, 6)`` pose (``layout.POSE`` order) or ``(..., T, 58)`` coefficients (the
    pose dims are taken). Returns ``{group: {name: value}}`` for the groups ``rotation``,
    ``translation`` and ``pose``, with, for each of velocity, acceleration and jerk:
    ``<name>`` (mean |difference| over all), ``<name>_seam``, ``<name>_inside`` and
    ``<name>_ratio`` (seam / inside; ≈ 1 for a stream with no seam artefacts, ≫ 1 when windows
    jump), plus ``seams`` (the number of boundaries). A mean over no differences is nan.
    """
    pose = _pose(seq)
    frames = pose.shape[-2]
    seams = int(boundaries(frames, window, offset).size)
    out: dict[str, dict[str, float]] = {name: {"seams": float(seams)} for name in GROUPS}
    for diff_name, order in ORDERS.items():
        mask = seam_mask(frames, window, order, offset)
        step = np.abs(np.diff(pose, n=order, axis=-2))  # (..., T - order, 6)
        for group, dims in GROUPS.items():
            g = step[..., dims]
            stats = {
                "": g,
                "_seam": g[..., mask, :],
                "_inside": g[..., ~mask, :],
            }
            row = out[group]
            for suffix, values in stats.items():
                row[diff_name + suffix] = float(values.mean()) if values.size else float("nan")
            row[diff_name + "_ratio"] = _ratio(row[diff_name + "_seam"], row[diff_name + "_inside"])
    return out


def expression_seam_velocity(seq: np.ndarray, window: int, *, offset: int = 0
                             ) -> dict[str, float]:  # fmt: skip
    """The expression counterpart of :func:`seam_jumps`' velocity: mean absolute frame-to-frame
    change of the 52 blendshapes at seams (``velocity_seam``) and inside windows
    (``velocity_inside``), and their ratio. ``seq`` is ``(..., T, 58)`` coefficients."""
    arr = np.asarray(seq, dtype=np.float64)
    if arr.ndim < 2 or arr.shape[-1] != layout.DIM:
        raise ValueError(f"expected (..., T, {layout.DIM}) coefficients, got shape {arr.shape}")
    step = np.abs(np.diff(arr[..., layout.EXPRESSION], axis=-2)).mean(axis=-1)  # (..., T-1)
    mask = seam_mask(arr.shape[-2], window, 1, offset)
    seam = float(step[..., mask].mean()) if mask.any() else float("nan")
    inside = float(step[..., ~mask].mean()) if (~mask).any() else float("nan")
    return {"velocity_seam": seam, "velocity_inside": inside,
            "velocity_ratio": _ratio(seam, inside)}  # fmt: skip
