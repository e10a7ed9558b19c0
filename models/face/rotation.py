"""Head rotation: 3×3 matrices ↔ (pitch, yaw, roll) Euler angles.

Convention (ARCHITECTURE.md §1): right-handed camera frame, x right, y up, z toward the camera.
``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``: pitch nods about x, yaw turns about y, roll tilts about z.
Consequences the perception tests rely on:
- an in-plane image rotation by θ (counter-clockwise as seen) adds θ to roll, since it
  left-multiplies by ``Rz(θ)``;
- a horizontal mirror ``S = diag(-1, 1, 1)`` maps ``R`` to ``S R S``, which negates yaw and roll
  and keeps pitch.
"""

from __future__ import annotations

import numpy as np


def _rx(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([o, z, z, z, c, -s, z, s, c], axis=-1).reshape(*a.shape, 3, 3)


def _ry(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([c, z, s, z, o, z, -s, z, c], axis=-1).reshape(*a.shape, 3, 3)


def _rz(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([c, -s, z, s, c, z, z, z, o], axis=-1).reshape(*a.shape, 3, 3)


def euler_to_matrix(euler: np.ndarray) -> np.ndarray:
    """``(..., 3)`` pitch, yaw, roll in radians → ``(..., 3, 3)`` rotation matrices."""
    e = np.asarray(euler, dtype=np.float64)
    if e.shape[-1] != 3:
        raise ValueError(f"expected (..., 3) Euler angles, got shape {e.shape}")
    return _rz(e[..., 2]) @ _ry(e[..., 1]) @ _rx(e[..., 0])


def orthonormalize(matrix: np.ndarray) -> np.ndarray:
    """The nearest proper rotation to each ``(..., 3, 3)`` matrix (drops scale and shear)."""
    m = np.asarray(matrix, dtype=np.float64)
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    u[..., :, 2] *= d[..., None]
    return u @ vt


def matrix_to_euler(matrix: np.ndarray) -> np.ndarray:
    """``(..., 3, 3)`` rotation matrices → ``(..., 3)`` pitch, yaw, roll in radians.

    Yaw is in [-π/2, π/2]; at the gimbal lock (|yaw| = π/2) roll is set to 0.
    """
    r = np.asarray(matrix, dtype=np.float64)
    if r.shape[-2:] != (3, 3):
        raise ValueError(f"expected (..., 3, 3) matrices, got shape {r.shape}")
    yaw = np.arcsin(np.clip(-r[..., 2, 0], -1.0, 1.0))
    cy = np.sqrt(r[..., 0, 0] ** 2 + r[..., 1, 0] ** 2)
    locked = cy < 1e-9
    pitch = np.where(locked, np.arctan2(-r[..., 1, 2], r[..., 1, 1]),
                     np.arctan2(r[..., 2, 1], r[..., 2, 2]))  # fmt: skip
    roll = np.where(locked, 0.0, np.arctan2(r[..., 1, 0], r[..., 0, 0]))
    return np.stack([pitch, yaw, roll], axis=-1)
