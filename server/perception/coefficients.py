"""Landmarker output → the 58-d coefficient frame (ARCHITECTURE.md §1).

- Expression: the 51 blendshape scores, ``tongueOut`` = 0 (MediaPipe never detects it).
- Rotation: pitch, yaw, roll of the facial transformation matrix (see ``models.face.rotation``).
- Translation x, y: the centre of the 468 mesh points in PFL window coordinates (window widths,
  x right, y up, 0 at the window centre).
- Translation z: log of the apparent face scale over the window's reference scale (positive =
  closer). The apparent scale is the image height in frame pixels over the matrix's depth: the
  landmarker's virtual camera has a fixed vertical field of view, so this is the face size in
  frame pixels up to a constant, the same whether the landmarker saw the crop or the whole frame,
  and unaffected by head rotation.
"""

from __future__ import annotations

import numpy as np

from models.face import layout
from models.face.rotation import matrix_to_euler, orthonormalize
from server.perception.landmarker import FaceObservation
from server.perception.pfl import PflWindow


def face_centre_px(obs: FaceObservation, window: PflWindow | None) -> np.ndarray:
    """Centre of the mesh points in frame pixels; ``window`` if ``obs`` was taken on its crop."""
    centre = obs.landmarks[:468, :2].mean(axis=0)
    if window is None:
        w, h = obs.image_size
        return centre * np.array([w, h])
    return window.from_crop(centre)


def face_scale_px(obs: FaceObservation, window: PflWindow | None) -> float:
    """Apparent face size in frame pixels (up to a constant), see the module docstring."""
    depth = max(-float(obs.matrix[2, 3]), 1e-6)
    image_height_px = window.size if window is not None else obs.image_size[1]
    return image_height_px / depth


def coefficients(obs: FaceObservation, window: PflWindow, *, on_crop: bool = True) -> np.ndarray:
    """The 58-d frame for one observation, translation relative to ``window``.

    ``on_crop``: ``obs`` came from the window's crop (else from the whole frame). The window must
    carry its reference scale.
    """
    if window.ref_scale is None:
        raise ValueError("the PFL window has no reference scale yet")
    crop_window = window if on_crop else None
    out = np.zeros(layout.DIM, dtype=np.float32)
    out[layout.DETECTED_BLENDSHAPES] = obs.blendshapes
    out[layout.ROTATION] = matrix_to_euler(orthonormalize(obs.matrix[:3, :3]))
    txy = window.to_window(face_centre_px(obs, crop_window))
    tz = np.log(face_scale_px(obs, crop_window) / window.ref_scale)
    out[layout.TRANSLATION] = (txy[0], txy[1], tz)
    return out
