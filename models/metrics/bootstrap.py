"""Paired differences between two models scored on the same samples, with a cluster bootstrap.

Samples of one person are not independent (the same listener appears in several samples), so
the bootstrap resamples *clusters* (persons) with replacement and takes every sample of each
drawn cluster; the interval is the percentile interval of the mean paired difference.
"""

from __future__ import annotations

import numpy as np


def paired_difference(
    a: np.ndarray, b: np.ndarray, clusters: np.ndarray, *, resamples: int = 2000,
    level: float = 0.95, seed: int = 0,
) -> dict:  # fmt: skip
    """Mean of ``a - b`` over samples, its cluster-bootstrap interval, and how many clusters
    have a positive / negative mean difference.

    ``a``, ``b``: (N,) per-sample scores of two models on the same samples; ``clusters``: (N,)
    the person (or any group label) of each sample. ``ValueError`` for mismatched shapes,
    non-finite scores, fewer than two clusters or a level outside (0, 1).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    clusters = np.asarray(clusters)
    if a.ndim != 1 or a.shape != b.shape or clusters.shape != a.shape:
        raise ValueError(f"a, b and clusters must be (N,) alike; got {a.shape}, {b.shape}, "
                         f"{clusters.shape}")  # fmt: skip
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores must be finite")
    if not 0.0 < level < 1.0 or resamples < 1:
        raise ValueError("level must be in (0, 1) and resamples at least 1")
    labels, owner = np.unique(clusters, return_inverse=True)
    if len(labels) < 2:
        raise ValueError("a cluster bootstrap needs at least two clusters")
    diff = a - b
    sums = np.bincount(owner, weights=diff, minlength=len(labels))  # (C,)
    counts = np.bincount(owner, minlength=len(labels)).astype(np.float64)  # (C,)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(labels), size=(resamples, len(labels)))  # (R, C)
    boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)  # (R,)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    per_cluster = sums / counts
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high),
            "level": level, "resamples": int(resamples), "samples": int(len(diff)),
            "clusters": int(len(labels)), "clusters_above": int((per_cluster > 0).sum()),
            "clusters_below": int((per_cluster < 0).sum())}  # fmt: skip
