"""Correlation measures shared by the metrics: CCC, and lagged Pearson for time-lagged sync.

All moments are population moments (divide by the count, ``ddof=0``), as in the REACT code
(``np.var``, ``np.std``; ``np.corrcoef`` does not depend on ``ddof``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

REACT_CCC_EPS = 1e-8
"""Added to the CCC denominator by the REACT evaluation code."""


def concordance(x: np.ndarray, y: np.ndarray, *, axis: int = -2, eps: float = 0.0) -> np.ndarray:
    """Lin's concordance correlation coefficient of ``x`` and ``y`` along ``axis``.

    ``CCC = 2 cov(x, y) / (var x + var y + (mean x - mean y)**2 + eps)``. This equals the REACT
    form ``2 r sd_x sd_y / (...)`` wherever the Pearson r is defined; where one side is constant
    the REACT code's nan-safe correlation gives r = 0, and so does ``cov`` here. With ``eps = 0``
    two identical constants give 0/0 = nan (returned as nan, no warning).

    Shapes: ``x`` and ``y`` broadcast, e.g. ``(..., T, D)`` with ``axis=-2`` → ``(..., D)``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mx, my = x.mean(axis=axis, keepdims=True), y.mean(axis=axis, keepdims=True)
    xc, yc = x - mx, y - my
    cov = np.mean(xc * yc, axis=axis)
    var_x, var_y = np.mean(xc * xc, axis=axis), np.mean(yc * yc, axis=axis)
    denom = var_x + var_y + (np.squeeze(mx, axis) - np.squeeze(my, axis)) ** 2 + eps
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2.0 * cov / denom


def ccc_matrix(preds: np.ndarray, refs: np.ndarray, *, eps: float = REACT_CCC_EPS) -> np.ndarray:
    """Mean-over-dims CCC of every prediction against every reference.

    ``preds`` (K, T, D), ``refs`` (M, T, D) → ``(K, M)``: CCC per dim over time (population
    moments, ``eps`` added to each dim's denominator), then the mean over the D dims.
    """
    p = np.asarray(preds, dtype=np.float64)
    r = np.asarray(refs, dtype=np.float64)
    frames = p.shape[1]
    mp, mr = p.mean(axis=1), r.mean(axis=1)  # (K, D), (M, D)
    pc = (p - mp[:, None]).transpose(2, 0, 1)  # (D, K, T)
    rc = (r - mr[:, None]).transpose(2, 1, 0)  # (D, T, M)
    cov = np.matmul(pc, rc) / frames  # (D, K, M)
    var_p = np.einsum("dkt,dkt->dk", pc, pc) / frames  # (D, K)
    var_r = np.einsum("dtm,dtm->dm", rc, rc) / frames  # (D, M)
    gap = (mp.T[:, :, None] - mr.T[:, None, :]) ** 2  # (D, K, M)
    ccc = 2.0 * cov / (var_p[:, :, None] + var_r[:, None, :] + gap + eps)
    return ccc.mean(axis=0)


@njit(cache=True, nogil=True)
def _prefix(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prefix sums ``(T+1,)`` and prefix counts of value changes ``(T,)`` of a 1-d series.

    ``changes[e] - changes[s]`` is the number of frames t in (s, e] with ``u[t] != u[t-1]``, so
    the segment ``u[s : e+1]`` is constant exactly when it is 0.
    """
    sums = np.zeros(u.shape[0] + 1)
    changes = np.zeros(u.shape[0], dtype=np.int64)
    for t in range(u.shape[0]):
        sums[t + 1] = sums[t] + u[t]
        if t > 0:
            changes[t] = changes[t - 1] + (u[t] != u[t - 1])
    return sums, changes


@njit(cache=True, nogil=True)
def _segment_pearson(
    x: np.ndarray,
    y: np.ndarray,
    sx: int,
    sy: int,
    n: int,
    px: tuple[np.ndarray, np.ndarray],
    py: tuple[np.ndarray, np.ndarray],
) -> float:
    """Pearson r of ``x[sx : sx+n]`` and ``y[sy : sy+n]``; 0 where either segment is constant.

    Means come from the prefix sums, then one pass over the centred values.
    """
    if px[1][sx + n - 1] == px[1][sx] or py[1][sy + n - 1] == py[1][sy]:
        return 0.0
    mx = (px[0][sx + n] - px[0][sx]) / n
    my = (py[0][sy + n] - py[0][sy]) / n
    sxy, sxx, syy = 0.0, 0.0, 0.0
    for t in range(n):
        dx, dy = x[sx + t] - mx, y[sy + t] - my
        sxy += dx * dy
        sxx += dx * dx
        syy += dy * dy
    if sxx == 0.0 or syy == 0.0:
        return 0.0
    return sxy / np.sqrt(sxx * syy)


@njit(cache=True, nogil=True)
def _lag_curves(xt: np.ndarray, yt: np.ndarray, max_lag: int) -> np.ndarray:
    """Mean-over-dims Pearson r at every lag for P pairs.

    ``xt``, ``yt`` (P, D, T) → ``(P, 2 max_lag + 1)``; column ``max_lag + L`` pairs ``x[u]`` with
    ``y[u - L]`` over every u where both exist.
    """
    pairs, dims, frames = xt.shape
    out = np.zeros((pairs, 2 * max_lag + 1))
    for p in range(pairs):
        for d in range(dims):
            x, y = xt[p, d], yt[p, d]
            px, py = _prefix(x), _prefix(y)
            for li in range(2 * max_lag + 1):
                lag = li - max_lag
                sx, sy, n = max(lag, 0), max(-lag, 0), frames - abs(lag)
                out[p, li] += _segment_pearson(x, y, sx, sy, n, px, py)
    return out / dims


def lag_curves(x: np.ndarray, y: np.ndarray, max_lag: int) -> np.ndarray:
    """Time-lagged cross-correlation curves of ``x`` against ``y``.

    ``x``, ``y`` (P, T, D) → ``(P, 2 max_lag + 1)`` for lags ``L = -max_lag .. max_lag``: the
    Pearson r per dim between ``x[u]`` and ``y[u - L]`` (overlapping frames only), averaged over
    the D dims. **Positive L means x follows y by L frames.** A dim whose overlapping segment is
    constant on either side counts as r = 0 (the REACT code would produce nan there).
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 3:
        raise ValueError(f"expected two (P, T, D) arrays of one shape, got {xa.shape}, {ya.shape}")
    if max_lag < 0 or xa.shape[1] < max_lag + 2:
        raise ValueError(f"max_lag {max_lag} needs >= {max_lag + 2} frames, got {xa.shape[1]}")
    xt = np.ascontiguousarray(xa.transpose(0, 2, 1))  # (P, D, T)
    yt = np.ascontiguousarray(ya.transpose(0, 2, 1))
    return _lag_curves(xt, yt, int(max_lag))


def best_lags(x: np.ndarray, y: np.ndarray, max_lag: int) -> np.ndarray:
    """The lag of maximal :func:`lag_curves` value per pair; ``(P,)`` int, positive = x follows y.

    Ties go to the first maximum (the most negative lag), as ``argmax`` does; so a pair with no
    correlation at any lag (e.g. a constant x) gets ``-max_lag``, the worst offset.
    """
    curves = lag_curves(x, y, max_lag)
    return np.argmax(curves, axis=1).astype(np.int64) - int(max_lag)
