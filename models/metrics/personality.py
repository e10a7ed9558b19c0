"""Accuracy of predicted Big-Five personality: MSE, Pearson r and CCC per trait and averaged.

Per trait over the N people: ``MSE = mean((pred - true)**2)``, Pearson r, and Lin's CCC
``2 cov / (var_pred + var_true + (mean_pred - mean_true)**2)`` with population moments. Pearson r
is undefined (nan) when either side is constant over the N people, e.g. a model that predicts
the same value for everyone; CCC is then 0 unless both sides are the same constant (0/0: nan).
The ``mean_*`` values average over the traits where the metric is defined, and
``pcc_defined`` / ``ccc_defined`` say how many those are (a mean over none is nan).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.data.react_layout import TRAIT_NAMES
from models.metrics.correlation import concordance


def pearson(x: np.ndarray, y: np.ndarray, *, axis: int = 0) -> np.ndarray:
    """Pearson r along ``axis``; nan where either side is exactly constant."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    constant = (np.ptp(x, axis=axis) == 0) | (np.ptp(y, axis=axis) == 0)
    xc = x - x.mean(axis=axis, keepdims=True)
    yc = y - y.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.sqrt(np.sum(xc * xc, axis=axis) * np.sum(yc * yc, axis=axis))
        r = np.sum(xc * yc, axis=axis) / norm
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def _nan_mean(values: np.ndarray) -> tuple[float, int]:
    defined = values[~np.isnan(values)]
    return (float(defined.mean()) if defined.size else float("nan")), int(defined.size)


def personality_metrics(
    pred: np.ndarray, true: np.ndarray, names: Sequence[str] = TRAIT_NAMES
) -> dict[str, float | int]:
    """Per-trait and mean MSE, PCC and CCC of ``pred`` against ``true``, both ``(N, traits)``.

    Returns a flat dict: ``<trait>_mse``, ``<trait>_pcc``, ``<trait>_ccc`` for each name, then
    ``mean_mse``, ``mean_pcc``, ``mean_ccc``, ``pcc_defined``, ``ccc_defined`` and ``N``.
    Undefined values are nan (see the module docstring).
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 2 or p.shape[1] != len(names):
        raise ValueError(f"expected pred and true of shape (N, {len(names)}), got {p.shape}, "
                         f"{t.shape}")  # fmt: skip
    if p.shape[0] == 0:
        raise ValueError("no people to score")
    mse = np.mean((p - t) ** 2, axis=0)  # (traits,)
    pcc = pearson(p, t, axis=0)
    ccc = concordance(p, t, axis=0)
    out: dict[str, float | int] = {}
    for i, name in enumerate(names):
        out[f"{name}_mse"] = float(mse[i])
        out[f"{name}_pcc"] = float(pcc[i])
        out[f"{name}_ccc"] = float(ccc[i])
    out["mean_mse"] = float(mse.mean())
    out["mean_pcc"], out["pcc_defined"] = _nan_mean(pcc)
    out["mean_ccc"], out["ccc_defined"] = _nan_mean(ccc)
    out["N"] = int(p.shape[0])
    return out
