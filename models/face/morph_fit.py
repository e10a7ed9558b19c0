"""Fit the 52 ARKit morph targets of the canonical mesh to real video (numpy only).

Input per clip: landmarks already aligned to the canonical mesh by similarity Procrustes
(``(T, 468, 3)``, cm, see :func:`models.face.mesh.align_to_canonical`) and MediaPipe's 51
blendshape scores ``(T, 51)``. The displacement ``d_t = aligned_t − canonical`` is modelled as

    d_t = c_clip + Σ_k e_{t,k} M_k + noise

with ``c_clip`` the person's identity offset (a per-clip intercept, unpenalised, not part of the
face model) and ``M_k`` the morph targets, ridge-penalised so that shapes that are rarely or never
active stay near zero. ``tongueOut`` is always 0 from video, so its target is exactly zero.

The intercepts are removed exactly by centring each clip; the ridge system is then
``(XᵀX + λ N I) M = XᵀY`` with ``N`` the number of training frames, so ``ridge`` (λ) is per frame
and does not depend on how much video there is. The side-locality prior of
:mod:`models.face.locality` (``...Left`` targets act on the subject's left, ``...Right`` on the
right) adds ``N P[v, c]`` to the system of each vertex ``v`` and coordinate ``c``, so the fit
solves one small ``52 × 52`` system per vertex and coordinate (batched).

Evaluation holds out the last ``holdout_fraction`` of every clip (a contiguous block, so nearby
frames cannot leak), picks the ridge by validating on the tail of each training block, and reports
held-out RMSE for the intercept-only baseline and for intercept + morphs. RMSE is the root mean
squared 3-D vertex distance over frames and the 468 vertices.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.face import layout, locality
from models.face.face_model import FaceModel
from models.face.mesh import CanonicalMesh

log = logging.getLogger(__name__)

RIDGE_GRID: tuple[float, ...] = (
    1e-7,
    1e-6,
    1e-5,
    2e-5,
    5e-5,
    1e-4,
    2e-4,
    5e-4,
    1e-3,
    2e-3,
    5e-3,
    1e-2,
    1e-1,
    1.0,
)
"""Ridge values tried by the validation sweep (per-frame λ)."""
RIDGE_TOLERANCE = 0.05
"""The sweep takes the largest ridge whose validation RMSE is within this fraction of the best.

Like the one-standard-error rule: among fits that are about equally good, prefer the most
regularised. On the shipped clips the validation-best ridge (1e-6) extrapolates shapes MediaPipe
barely activates (``jawLeft`` has a score std of 0.005) into targets that move a vertex 13 cm at
weight 1; the chosen one (5e-5) keeps every target under jawOpen's 3.7 cm and scored as well on
the held-out block."""

Sample = tuple[np.ndarray, np.ndarray]
"""One clip: aligned points ``(T, 468, 3)`` and blendshape scores ``(T, 51)``."""


def _features(blendshapes: np.ndarray) -> np.ndarray:
    """``(T, 51)`` MediaPipe scores → ``(T, 52)`` in layout order (``tongueOut`` = 0)."""
    b = np.asarray(blendshapes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != len(layout.MEDIAPIPE_BLENDSHAPES):
        raise ValueError(f"expected (T, {len(layout.MEDIAPIPE_BLENDSHAPES)}) scores, got {b.shape}")
    x = np.zeros((b.shape[0], layout.NUM_BLENDSHAPES))
    x[:, layout.DETECTED_BLENDSHAPES] = b
    return x


def _targets(points: np.ndarray, mesh: CanonicalMesh) -> np.ndarray:
    """``(T, 468, 3)`` aligned points → ``(T, 1404)`` displacements from the canonical mesh."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 3 or p.shape[1:] != mesh.vertices.shape:
        raise ValueError(f"expected (T, {mesh.vertices.shape[0]}, 3) points, got {p.shape}")
    return (p - mesh.vertices.astype(np.float64)).reshape(p.shape[0], -1)


def _solve(
    xs: Sequence[np.ndarray],
    ys: Sequence[np.ndarray],
    ridge: float,
    prior: np.ndarray | None = None,
) -> np.ndarray:
    """Morph coefficients ``(52, 1404)`` with per-clip intercepts profiled out.

    ``prior`` (``(468, 3, 52, 52)``, per frame, see :func:`models.face.locality.penalty_matrices`)
    is added to the shared ridge of each vertex and coordinate.
    """
    xc = np.concatenate([x - x.mean(axis=0) for x in xs])  # (N, 52)
    yc = np.concatenate([y - y.mean(axis=0) for y in ys])  # (N, 1404)
    n, k = xc.shape
    gram = xc.T @ xc + ridge * n * np.eye(k)
    rhs = xc.T @ yc  # (52, 1404), column v·3 + c
    if prior is None:
        return np.linalg.solve(gram, rhs)
    systems = gram + n * prior  # (468, 3, 52, 52)
    coef = np.linalg.solve(systems, rhs.T.reshape(*prior.shape[:2], k, 1))[..., 0]
    return coef.reshape(-1, k).T


def _rmse(pred: np.ndarray, true: np.ndarray) -> float:
    """Root mean squared 3-D vertex distance of ``(T, V·3)`` arrays."""
    err = (pred - true).reshape(pred.shape[0], -1, 3)
    return float(np.sqrt(np.mean(np.sum(err**2, axis=-1))))


def _held_out(
    train: Sequence[tuple[np.ndarray, np.ndarray]],
    test: Sequence[tuple[np.ndarray, np.ndarray]],
    ridge: float,
    prior: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fit on ``train`` clips, score ``test`` clips (same order): baseline and morph RMSE."""
    morphs = _solve([x for x, _ in train], [y for _, y in train], ridge, prior)
    base_sq, morph_sq, per_clip = 0.0, 0.0, []
    frames = 0
    for (x_tr, y_tr), (x_te, y_te) in zip(train, test, strict=True):
        base = np.broadcast_to(y_tr.mean(axis=0), y_te.shape)
        icpt = y_tr.mean(axis=0) - x_tr.mean(axis=0) @ morphs
        pred = icpt + x_te @ morphs
        b, m = _rmse(base, y_te), _rmse(pred, y_te)
        per_clip.append({"frames": int(len(y_te)), "neutral_rmse": b, "morph_rmse": m})
        base_sq += b**2 * len(y_te)
        morph_sq += m**2 * len(y_te)
        frames += len(y_te)
    return {
        "neutral_rmse": float(np.sqrt(base_sq / frames)),
        "morph_rmse": float(np.sqrt(morph_sq / frames)),
        "frames": frames,
        "per_clip": per_clip,
    }


def _split(x: np.ndarray, y: np.ndarray, fraction: float) -> tuple[Sample, Sample]:
    """Cut a clip into a leading and a trailing block (the last ``fraction`` of its frames)."""
    cut = len(x) - max(1, int(round(fraction * len(x))))
    if cut < 2:
        raise ValueError(f"a clip of {len(x)} frames is too short to hold out {fraction:.0%}")
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def choose_ridge(
    train: Sequence[Sample],
    fraction: float,
    grid: Sequence[float] = RIDGE_GRID,
    tolerance: float = RIDGE_TOLERANCE,
) -> tuple[float, dict[str, float]]:
    """The ridge to use, validated on the tail (``fraction``) of each training block.

    Returns the largest ridge whose validation RMSE is within ``tolerance`` of the lowest, and
    the sweep ``{ridge: validation RMSE (cm)}``.
    """
    parts = [_split(x, y, fraction) for x, y in train]
    sweep = {}
    for ridge in grid:
        sweep[f"{ridge:g}"] = _held_out([a for a, _ in parts], [b for _, b in parts], ridge)[
            "morph_rmse"
        ]
        log.debug("ridge %g: validation RMSE %.4f", ridge, sweep[f"{ridge:g}"])
    lowest = min(sweep.values())
    chosen = max(r for r in grid if sweep[f"{r:g}"] <= (1.0 + tolerance) * lowest)
    return float(chosen), sweep


def locality_sweep(
    train: Sequence[Sample],
    fraction: float,
    ridge: float,
    vertices: np.ndarray,
    grid: Sequence[float] = locality.STRENGTH_GRID,
) -> dict[str, float]:
    """Validation RMSE (cm) of each side-locality strength at ``ridge``: ``{strength: RMSE}``.

    Reported next to the strength the fit uses (fixed, see :data:`models.face.locality.STRENGTH`);
    0 is the plain ridge fit.
    """
    parts = [_split(x, y, fraction) for x, y in train]
    sweep = {}
    for strength in grid:
        prior = locality.penalty_matrices(vertices, strength) if strength > 0 else None
        held = _held_out([a for a, _ in parts], [b for _, b in parts], ridge, prior)
        sweep[f"{strength:g}"] = held["morph_rmse"]
        log.debug("locality %g: validation RMSE %.4f", strength, held["morph_rmse"])
    return sweep


def mirror_map(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """For each vertex the index of its mirror image across x = 0, and the worst mismatch (cm)."""
    v = np.asarray(vertices, dtype=np.float64)
    mirrored = v * np.array([-1.0, 1.0, 1.0])
    dist = np.linalg.norm(mirrored[:, None, :] - v[None, :, :], axis=-1)  # (V, V)
    idx = dist.argmin(axis=1)
    return idx, float(dist[np.arange(len(v)), idx].max())


def symmetry_report(morphs: np.ndarray, vertices: np.ndarray) -> dict[str, Any]:
    """How mirror-symmetric the fitted targets are (reported, never enforced).

    For a Left/Right pair: ``|mirror(M_L) − M_R| / mean(|M_L|, |M_R|)``, and the same self-test
    as an unpaired shape for their sum ``M_L + M_R`` (well determined even when the two scores
    move together, as blinks do); for an unpaired shape: ``|mirror(M) − M| / |M|`` (Frobenius
    norms). 0 is perfectly symmetric.
    """
    idx, worst = mirror_map(vertices)
    flip = np.array([-1.0, 1.0, 1.0])

    def mirror(m: np.ndarray) -> np.ndarray:
        return m[idx] * flip

    names = layout.BLENDSHAPE_NAMES

    def self_asymmetry(m: np.ndarray) -> float:
        return float(np.linalg.norm(mirror(m) - m) / max(np.linalg.norm(m), 1e-12))

    pairs, sums, singles = {}, {}, {}
    for k, name in enumerate(names):
        if name.endswith("Right"):
            continue
        m = morphs[k]
        if name.endswith("Left"):
            r = morphs[names.index(name[: -len("Left")] + "Right")]
            scale = 0.5 * (np.linalg.norm(m) + np.linalg.norm(r))
            pairs[name[: -len("Left")]] = float(np.linalg.norm(mirror(m) - r) / max(scale, 1e-12))
            sums[name[: -len("Left")]] = self_asymmetry(m + r)
        elif np.linalg.norm(m) > 1e-9:
            singles[name] = self_asymmetry(m)
    return {
        "mirror_vertex_mismatch_cm": worst,
        "pair_asymmetry": pairs,
        "pair_asymmetry_median": float(np.median(list(pairs.values()))),
        "pair_sum_asymmetry": sums,
        "pair_sum_asymmetry_median": float(np.median(list(sums.values()))),
        "single_asymmetry": singles,
        "single_asymmetry_median": float(np.median(list(singles.values()))),
    }


def _unit_check(vertices: np.ndarray) -> dict[str, Any]:
    """Confirm the canonical mesh is in centimetres from its size (a face is 12–20 cm wide)."""
    extent = np.ptp(np.asarray(vertices, dtype=np.float64), axis=0)
    return {"mesh_extent": [float(e) for e in extent], "unit": "cm",
            "is_cm": bool(12.0 <= extent[0] <= 20.0)}  # fmt: skip


def _describe(held: dict[str, Any], morphs: np.ndarray, mesh: CanonicalMesh) -> dict[str, Any]:
    """Report entries for held-out errors (cm and mm), target sizes, symmetry and units."""
    units = _unit_check(mesh.vertices)
    mm = 10.0 if units["is_cm"] else float("nan")
    reach = np.linalg.norm(morphs, axis=2).max(axis=1)  # (52,) largest vertex move at weight 1
    return {
        "frames_heldout": held["frames"],
        "heldout_neutral_rmse_cm": held["neutral_rmse"],
        "heldout_morph_rmse_cm": held["morph_rmse"],
        "heldout_neutral_rmse_mm": held["neutral_rmse"] * mm,
        "heldout_morph_rmse_mm": held["morph_rmse"] * mm,
        "heldout_improvement": 1.0 - held["morph_rmse"] / held["neutral_rmse"],
        "heldout_per_clip_cm": held["per_clip"],
        "morph_max_displacement_cm": {
            n: float(v) for n, v in zip(layout.BLENDSHAPE_NAMES, reach, strict=True)
        },
        "symmetry": symmetry_report(morphs, mesh.vertices),
        "locality": locality.locality_report(morphs, mesh.vertices),
        "units": units,
    }


def fit_morph_targets(
    samples: Sequence[Sample],
    mesh: CanonicalMesh,
    ridge: float | None = None,
    holdout_fraction: float = 0.2,
    locality_strength: float = locality.STRENGTH,
) -> tuple[FaceModel, dict[str, Any]]:
    """Fit morph targets; returns the model (refit on all frames) and a report.

    ``ridge=None`` picks it from :data:`RIDGE_GRID` by validation inside the training blocks (on
    the plain fit) and then also reports the validation RMSE of the locality strengths in
    :data:`models.face.locality.STRENGTH_GRID`. ``locality_strength`` weighs the side-locality
    prior (0 turns it off). The report holds the ridge (and the sweeps), held-out RMSE in cm and
    mm for the per-clip neutral and for neutral + morphs, the relative improvement, frame counts,
    symmetry and locality reports and the unit check. The model's neutral is the canonical mesh.
    """
    if not samples:
        raise ValueError("no clips to fit")
    if locality_strength < 0:
        raise ValueError(f"locality_strength must be >= 0, got {locality_strength}")
    data = [(_features(b), _targets(p, mesh)) for p, b in samples]
    for x, y in data:
        if len(x) != len(y):
            raise ValueError(f"a clip has {len(y)} frames of points but {len(x)} of scores")
    parts = [_split(x, y, holdout_fraction) for x, y in data]
    train, test = [a for a, _ in parts], [b for _, b in parts]
    sweep: dict[str, float] = {}
    locality_sweep_rmse: dict[str, float] = {}
    if ridge is None:
        ridge, sweep = choose_ridge(train, holdout_fraction)
        locality_sweep_rmse = locality_sweep(train, holdout_fraction, ridge, mesh.vertices)
    prior = None
    if locality_strength > 0:
        prior = locality.penalty_matrices(mesh.vertices, locality_strength)
    held = _held_out(train, test, ridge, prior)
    morphs = _solve([x for x, _ in data], [y for _, y in data], ridge, prior)
    morphs = morphs.reshape(layout.NUM_BLENDSHAPES, -1, 3).astype(np.float32)  # (52, 468, 3)
    report = {
        "ridge": float(ridge),
        "ridge_rule": (
            f"largest in the sweep within {RIDGE_TOLERANCE:.0%} of the best validation RMSE"
            if sweep
            else "given"
        ),
        "ridge_sweep_validation_rmse_cm": sweep,
        "locality_strength": float(locality_strength),
        "locality_half_width_cm": locality.HALF_WIDTH_CM,
        "locality_sweep_validation_rmse_cm": locality_sweep_rmse,
        "holdout_fraction": holdout_fraction,
        "frames_total": int(sum(len(x) for x, _ in data)),
        "frames_train": int(sum(len(x) for x, _ in train)),
        **_describe(held, morphs, mesh),
    }
    log.info(
        "held-out RMSE %.4f cm neutral → %.4f cm with morphs (%.1f%% better), ridge %g, "
        "locality %g (other-side ratio ≤ %.3f)",
        held["neutral_rmse"], held["morph_rmse"], 100 * report["heldout_improvement"], ridge,
        locality_strength, report["locality"]["other_side_ratio_max"],
    )  # fmt: skip
    return _model(mesh, morphs), report


def _model(mesh: CanonicalMesh, morphs: np.ndarray) -> FaceModel:
    """The face model: the canonical mesh as neutral with ``morphs`` ``(52, 468, 3)``."""
    return FaceModel(
        neutral=mesh.vertices.astype(np.float32).copy(),
        morphs=morphs,
        triangles=mesh.triangles.astype(np.int32).copy(),
        uvs=mesh.uvs.astype(np.float32).copy(),
        names=layout.BLENDSHAPE_NAMES,
    )
