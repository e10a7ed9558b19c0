"""Dynamic time warping between multivariate sequences, compiled with numba.

Convention (the one of ``tslearn.metrics.dtw``, which the REACT evaluation code calls for FRDist):

- local cost between frames ``a[i]`` and ``b[j]`` is the **squared** Euclidean distance
  ``sum_d (a[i, d] - b[j, d])**2`` over all D dims at once (not one DTW per dim);
- steps (1, 0), (0, 1) and (1, 1), all with weight 1; the path runs from (0, 0) to (n-1, m-1);
- the result is the **square root** of the minimal accumulated cost.

So for equal lengths the result is at most the Euclidean distance between the flattened sequences
(the diagonal path), it is 0 for identical sequences, symmetric, and not normalised by length.

The optional Sakoe-Chiba band allows cell (i, j) when ``|i - j| <= max(radius, |n - m|)``; widening
to the length difference keeps the end cell reachable. ``radius=None`` means no constraint.

The kernels release the GIL, so threads running them in parallel scale with cores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

_NO_BAND = -1


@njit(cache=True, nogil=True)
def _dtw_full(a: np.ndarray, bt: np.ndarray) -> float:
    """Minimal accumulated squared-Euclidean cost; ``a`` (n, D), ``bt`` = b transposed (D, m).

    Row by row over the (n+1, m+1) cost table C with the usual +inf border and C[0, 0] = 0:
    C[i, j] = cost(i, j) + min(C[i-1, j-1], C[i-1, j], C[i, j-1]). Each row's local costs and its
    two upward candidates are computed in loops over j that vectorise; only the horizontal
    candidate is a serial scan. Rounding is monotone, so ``cost + min(x, y)`` equals
    ``min(cost + x, cost + y)`` exactly and the result is bit-identical to the textbook loop.
    (Fixed loop bounds matter: with per-row bounds LLVM stops vectorising, 4x slower.)
    """
    n, dims, m = a.shape[0], bt.shape[0], bt.shape[1]
    prev = np.full(m + 1, np.inf)  # prev[j + 1] = C[i-1, j]; prev[0] is the border
    cur = np.full(m + 1, np.inf)
    prev[0] = 0.0
    cost = np.empty(m)
    up = np.empty(m)
    for i in range(n):
        cost[:] = 0.0
        for d in range(dims):
            ad = a[i, d]
            for j in range(m):
                diff = ad - bt[d, j]
                cost[j] += diff * diff
        for j in range(m):  # diagonal and vertical steps, independent across j
            up[j] = min(prev[j], prev[j + 1]) + cost[j]
        cur[0] = np.inf
        for j in range(m):  # horizontal step: the only serial scan
            cur[j + 1] = min(up[j], cur[j] + cost[j])
        prev, cur = cur, prev
    return prev[m]


@njit(cache=True, nogil=True)
def _dtw_band(a: np.ndarray, bt: np.ndarray, band: int) -> float:
    """As :func:`_dtw_full`, only cells with ``|i - j| <= band`` (others stay +inf)."""
    n, dims, m = a.shape[0], bt.shape[0], bt.shape[1]
    prev = np.full(m + 1, np.inf)
    cur = np.full(m + 1, np.inf)
    prev[0] = 0.0
    for i in range(n):
        lo, hi = max(0, i - band), min(m, i + band + 1)
        cur[: lo + 1] = np.inf
        cur[hi + 1 :] = np.inf
        for j in range(lo, hi):
            cost = 0.0
            for d in range(dims):
                diff = a[i, d] - bt[d, j]
                cost += diff * diff
            cur[j + 1] = cost + min(prev[j], prev[j + 1], cur[j])
        prev, cur = cur, prev
    return prev[m]


@njit(cache=True, nogil=True)
def _dtw_squared(a: np.ndarray, bt: np.ndarray, band: int) -> float:
    """Dispatch: ``band`` < 0 means no Sakoe-Chiba constraint."""
    if band < 0:
        return _dtw_full(a, bt)
    return _dtw_band(a, bt, band)


@njit(cache=True, nogil=True)
def _dtw_cross(a: np.ndarray, bt: np.ndarray, band: int) -> np.ndarray:
    """Pairwise DTW between stacks: ``a`` (P, n, D), ``bt`` (Q, D, m) → (P, Q) distances."""
    out = np.empty((a.shape[0], bt.shape[0]))
    for p in range(a.shape[0]):
        for q in range(bt.shape[0]):
            out[p, q] = np.sqrt(_dtw_squared(a[p], bt[q], band))
    return out


def _as_sequence(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty (T, D) sequence, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _band(radius: int | None, n: int, m: int) -> int:
    if radius is None:
        return _NO_BAND
    if radius < 0:
        raise ValueError(f"radius must be >= 0 or None, got {radius}")
    return max(int(radius), abs(n - m))


def dtw(a: np.ndarray, b: np.ndarray, *, radius: int | None = None) -> float:
    """DTW distance between ``a`` (n, D) and ``b`` (m, D) (1-d inputs are treated as D = 1).

    Returns sqrt(min over warping paths of the summed squared Euclidean frame distances); see the
    module docstring. ``radius`` is the Sakoe-Chiba half-width in frames (None: unconstrained).
    """
    x, y = _as_sequence(a, "a"), _as_sequence(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"a has {x.shape[1]} dims but b has {y.shape[1]}")
    bt = np.ascontiguousarray(y.T)
    return float(np.sqrt(_dtw_squared(x, bt, _band(radius, len(x), len(y)))))


def dtw_many(
    a_list: Sequence[np.ndarray], b_list: Sequence[np.ndarray], *, radius: int | None = None
) -> np.ndarray:
    """DTW of each pair ``(a_list[i], b_list[i])``; returns ``(P,)`` float64 distances."""
    if len(a_list) != len(b_list):
        raise ValueError(f"{len(a_list)} sequences in a_list but {len(b_list)} in b_list")
    return np.array([dtw(a, b, radius=radius) for a, b in zip(a_list, b_list, strict=True)])


def dtw_cross(a: np.ndarray, b: np.ndarray, *, radius: int | None = None) -> np.ndarray:
    """All-pairs DTW between stacks ``a`` (P, n, D) and ``b`` (Q, m, D) → ``(P, Q)`` float64.

    The whole double loop runs compiled, so this is the fast path for one prediction set against
    many references.
    """
    x = np.ascontiguousarray(a, dtype=np.float64)
    y = np.ascontiguousarray(b, dtype=np.float64)
    if x.ndim != 3 or y.ndim != 3 or x.shape[2] != y.shape[2]:
        raise ValueError(f"expected (P, n, D) and (Q, m, D) stacks, got {x.shape} and {y.shape}")
    bt = np.ascontiguousarray(y.transpose(0, 2, 1))  # (Q, D, m)
    return _dtw_cross(x, bt, _band(radius, x.shape[1], y.shape[1]))
