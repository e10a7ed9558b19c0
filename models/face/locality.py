"""Side-locality prior for the ``...Left``/``...Right`` morph targets (numpy only).

ARKit defines a ``...Left`` shape as acting on the subject's left half of the face (+x in the
canonical mesh) and its ``...Right`` twin on the right half. MediaPipe's Left and Right scores
move together in real video (blinks are 95% correlated in the fit clips), so a plain ridge fit
splits a bilateral motion between the twins arbitrarily: a wink would move the other eye too.

The prior assigns each vertex a *left share* ``a(x)`` that rises linearly from 0 at
``x = −half_width`` through 1/2 on the midline to 1 at ``x = +half_width``, and penalises, for
every side pair and every vertex, how far the pair departs from that split:

    strength · ‖(1 − a) M_L[v] − a F M_R[v]‖²,        F = diag(−1, 1, 1).

On the subject's right (``x ≤ −half_width``, ``a = 0``) this is a plain ridge of size
``strength`` on the Left target alone, and the mirror image on the left; on the midline it asks
the two targets to share the vertex's motion equally, mirrored. The penalty is zero for any
target pair that respects the split, so it does not shrink the well-determined bilateral sum.

On the midline the mirrored split fixes the bilateral sideways motion at zero but leaves open how
far one side's shape alone pushes the midline sideways, which correlated scores cannot tell
either (a fit left free there moves the chin 5 mm sideways under ``eyeLookInLeft``). So the
sideways (``x``) motion of the side targets also gets a ridge ``strength · u``, with ``u`` falling
linearly from 1 on the midline to 0 at half of ``half_width``: one-sided shapes do not shift the
midline sideways. The ``x`` rows differ, so each vertex and coordinate is its own small problem.

``jawLeft``/``jawRight`` and ``mouthLeft``/``mouthRight`` are directions (the whole jaw or mouth
moves toward that side), not sides, and get no locality prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from models.face import layout

DIRECTIONAL: frozenset[str] = frozenset({"jawLeft", "jawRight", "mouthLeft", "mouthRight"})
"""Left/Right-named shapes that move a whole part toward a side rather than act on one side."""
HALF_WIDTH_CM = 2.0
"""The left share rises from 0 to 1 over ``x`` in [−2, 2] cm (the mouth is about 5 cm wide)."""
STRENGTH = 1.0
"""Per-frame penalty of the prior (20,000 times the shipped shared ridge of 5e-5).

The most variable score (``mouthSmileLeft``, std 0.32) has a variance of 0.1 per frame, so the
prior outweighs the data on the wrong side at least tenfold; on the shipped clips the wrong-side
motion is under 1% of the own-side motion, and a tenfold stronger prior changes the held-out RMSE
by 0.2%. Validation alone would not choose it: correlated Left/Right scores let an unconstrained
fit predict each side from both scores, which gives an 8% lower held-out RMSE (0.0799 against
0.0870 cm) but is what makes a wink move both eyes."""
STRENGTH_GRID: tuple[float, ...] = (0.0, 0.01, 0.1, 1.0, 10.0)
"""Strengths whose validation RMSE the fit reports next to the one it uses."""
SIDE_CM = 2.0
""":func:`locality_report` compares a target's motion on ``|x| > SIDE_CM`` of the two sides."""
INACTIVE_CM = 1e-3
"""Targets whose own-side RMS motion is below this (never-activated shapes) are not ratioed."""


def side_pairs(names: Sequence[str] = layout.BLENDSHAPE_NAMES) -> list[tuple[int, int]]:
    """``(Left index, Right index)`` of every side pair in ``names`` (directional ones excluded)."""
    pairs = []
    for k, name in enumerate(names):
        if name.endswith("Left") and name not in DIRECTIONAL:
            pairs.append((k, list(names).index(name[: -len("Left")] + "Right")))
    return pairs


def left_share(x: np.ndarray, half_width: float = HALF_WIDTH_CM) -> np.ndarray:
    """The share of a vertex's bilateral motion that belongs to the Left target, in [0, 1]."""
    if half_width <= 0:
        raise ValueError(f"half_width must be positive, got {half_width}")
    return np.clip(0.5 + np.asarray(x, dtype=np.float64) / (2.0 * half_width), 0.0, 1.0)


def penalty_matrices(
    vertices: np.ndarray,
    strength: float = STRENGTH,
    half_width: float = HALF_WIDTH_CM,
    names: Sequence[str] = layout.BLENDSHAPE_NAMES,
) -> np.ndarray:
    """The prior as quadratic forms over the targets: ``(V, 3, K, K)``, one per vertex and axis.

    ``P[v, c]`` is ``strength · Σ_pairs (d dᵀ + [c = x] u_v (e_L e_Lᵀ + e_R e_Rᵀ))`` with
    ``d = (1 − a_v) e_L − a_v σ_c e_R``, ``σ = (−1, 1, 1)`` and ``u_v`` the midline weight, so
    that ``m P[v, c] m`` is the penalty of the coefficients ``m`` (K,) of vertex ``v``, axis ``c``.
    """
    a = left_share(np.asarray(vertices)[:, 0], half_width)  # (V,)
    midline = np.clip(1.0 - 2.0 * np.abs(2.0 * a - 1.0), 0.0, 1.0)  # 1 at x = 0, 0 at |x| ≥ h/2
    pen = np.zeros((len(a), 3, len(names), len(names)))
    pairs = side_pairs(names)
    if not pairs or strength == 0.0:
        return pen
    left, right = (np.array(i) for i in zip(*pairs, strict=True))
    for c, sign in enumerate((-1.0, 1.0, 1.0)):
        pen[:, c, left, left] = ((1.0 - a) ** 2)[:, None]
        pen[:, c, right, right] = (a**2)[:, None]
        cross = (-sign * a * (1.0 - a))[:, None]
        pen[:, c, left, right] = cross
        pen[:, c, right, left] = cross
    pen[:, 0, left, left] += midline[:, None]
    pen[:, 0, right, right] += midline[:, None]
    return strength * pen


def locality_report(
    morphs: np.ndarray,
    vertices: np.ndarray,
    side_cm: float = SIDE_CM,
    names: Sequence[str] = layout.BLENDSHAPE_NAMES,
) -> dict[str, Any]:
    """How one-sided the side targets are: RMS motion on the other side over the own side.

    For each side-pair target: the RMS vertex displacement (cm, weight 1) over vertices with
    ``x`` beyond ``side_cm`` on the wrong side, divided by the same on its own side. 0 is
    perfectly local; a plain fit of correlated Left/Right scores gives about 1. Targets that do
    not move their own side (under :data:`INACTIVE_CM`) are listed as inactive instead.
    """
    m = np.asarray(morphs, dtype=np.float64).reshape(len(names), -1, 3)
    x = np.asarray(vertices)[:, 0]
    left, right = x > side_cm, x < -side_cm

    def rms(target: np.ndarray, where: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.sum(target[where] ** 2, axis=-1))))

    ratios: dict[str, float] = {}
    inactive: list[str] = []
    for k_left, k_right in side_pairs(names):
        for k, own, other in ((k_left, left, right), (k_right, right, left)):
            own_rms = rms(m[k], own)
            if own_rms < INACTIVE_CM:
                inactive.append(names[k])
            else:
                ratios[names[k]] = rms(m[k], other) / own_rms
    values = list(ratios.values()) or [0.0]
    return {
        "side_cm": side_cm,
        "other_side_ratio": ratios,
        "other_side_ratio_max": float(max(values)),
        "other_side_ratio_median": float(np.median(values)),
        "inactive": inactive,
    }
