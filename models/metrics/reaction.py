"""The REACT appropriateness, diversity and synchrony metrics (REACT_DATA.md §3).

Notation: N samples (the mirrored list), K predictions per sample, T frames, D dims (25 for the
emotion view, 58 for coefficients). Inputs are numpy arrays:

- ``predictions`` (N, K, T, D): K generated listener reactions per sample;
- ``listener_gt`` (N, T, D): the real listener reaction of each sample;
- ``speaker`` (N, T, D): the speaker sequence each sample reacts to;
- ``neighbours`` (N, N) bool: row k marks the samples whose real listener reaction counts as an
  appropriate reaction for sample k. A row with no True entry falls back to the sample's own
  ground truth (``empty_rows`` counts them; :func:`evaluate_reactions` logs a warning).

The official aggregations follow the REACT code, including its quirks: FRCorr and FRDist **sum**
over the K predictions (so FRCorr lies in [-K, K]); FRSyn scores only the first prediction of
each sample. Each has a clearly named companion: ``per_prediction`` (the sum divided by K) and
``all_predictions`` (FRSyn over all N·K predictions).

``workers > 1`` runs the per-sample work (DTW, lag curves) in a thread pool; the compiled kernels
release the GIL, and every per-sample value is computed independently and reduced in sample
order, so the results are identical for any ``workers``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.data import emotion
from models.metrics.correlation import best_lags, ccc_matrix
from models.metrics.dtw import dtw_cross

logger = logging.getLogger(__name__)

Group = tuple[slice, float]
EMOTION_DTW_GROUPS: tuple[Group, ...] = (
    (emotion.AUS, 1.0 / 15.0),
    (emotion.VALENCE_AROUSAL, 1.0),
    (emotion.EXPRESSIONS, 1.0 / 8.0),
)
"""FRDist on the 25-d emotion view: one DTW per group, weighted and summed."""
ALL_DIMS: tuple[Group, ...] = ((slice(None), 1.0),)
"""FRDist on 58-d coefficients: one unweighted DTW on all dims."""
REACTFACE_DIST_SCALE = 10.0
"""ReactFace multiplies its 58-d FRDist by 10; pass as ``scale`` to reproduce its numbers."""
SYNC_MAX_LAG = 49
"""FRSyn lags -49..+49 frames (about ±2 s at 25 fps)."""


@dataclass(frozen=True)
class Appropriateness:
    """FRCorr or FRDist: best match over appropriate real reactions, per prediction.

    ``official``: sum over the K predictions, mean over N (the REACT number);
    ``per_prediction``: ``official / K``; ``per_sample`` (N,): the sum over K per sample;
    ``empty_rows``: samples whose neighbour row was empty (scored against their own GT).
    """

    official: float
    per_prediction: float
    per_sample: np.ndarray
    empty_rows: int


@dataclass(frozen=True)
class Synchrony:
    """FRSyn: |lag of peak speaker-prediction correlation| in frames (lower is better).

    ``official``: mean over samples of the first prediction only (as the REACT code scores);
    ``all_predictions``: mean over all N·K; ``lags`` (N, K) signed, **positive = the prediction
    follows the speaker** (prediction frame u best matches speaker frame u - lag).
    """

    official: float
    all_predictions: float
    lags: np.ndarray


def _map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int | Executor) -> list[Any]:
    """``list(map(fn, items))``, in a thread pool when asked; order is always preserved."""
    if isinstance(workers, Executor):
        return list(workers.map(fn, items))
    if workers <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def _inputs(
    predictions: np.ndarray, listener_gt: np.ndarray, neighbours: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], int]:
    """Validated arrays plus :func:`neighbour_lists` of ``neighbours``."""
    predictions, listener_gt = np.asarray(predictions), np.asarray(listener_gt)
    neighbours = np.asarray(neighbours)
    if predictions.ndim != 4:
        raise ValueError(f"predictions: expected (N, K, T, D), got shape {predictions.shape}")
    n, _, frames, dims = predictions.shape
    if listener_gt.shape[0] != n or listener_gt.shape[2] != dims or listener_gt.ndim != 3:
        raise ValueError(f"listener_gt: expected ({n}, T, {dims}), got {listener_gt.shape}")
    if listener_gt.shape[1] != frames:
        raise ValueError(f"listener_gt has {listener_gt.shape[1]} frames, predictions {frames}")
    if neighbours.shape != (n, n):
        raise ValueError(f"neighbours: expected ({n}, {n}), got {neighbours.shape}")
    return predictions, listener_gt, *neighbour_lists(neighbours)


def neighbour_lists(neighbours: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Row-wise indices of the True entries; an empty row becomes ``[k]`` (own ground truth).

    Returns the N index arrays and the number of empty rows.
    """
    mask = np.asarray(neighbours).astype(bool)
    rows = [np.flatnonzero(row) for row in mask]
    empty = [k for k, idx in enumerate(rows) if idx.size == 0]
    for k in empty:
        rows[k] = np.array([k])
    return rows, len(empty)


def _appropriateness(per_pred: list[np.ndarray], k: int, empty: int) -> Appropriateness:
    per_sample = np.array([v.sum() for v in per_pred])  # (N,) sum over K
    official = float(per_sample.mean())
    return Appropriateness(official, official / k, per_sample, empty)


def fr_corr(
    predictions: np.ndarray, listener_gt: np.ndarray, neighbours: np.ndarray
) -> Appropriateness:
    """FRCorr: per prediction the max mean-over-dims CCC over the appropriate real reactions.

    ``official`` sums over K (range [-K, K]) and averages over N. CCC uses population moments
    and adds 1e-8 to each dim's denominator (see :func:`ccc_matrix`).
    """
    predictions, listener_gt, rows, empty = _inputs(predictions, listener_gt, neighbours)
    best = [ccc_matrix(predictions[k], listener_gt[idx]).max(axis=1) for k, idx in enumerate(rows)]
    return _appropriateness(best, predictions.shape[1], empty)


def _min_dtw(
    preds: np.ndarray, refs: np.ndarray, groups: Sequence[Group], radius: int | None
) -> np.ndarray:
    """``preds`` (K, T, D), ``refs`` (M, T, D) → (K,) min over M of the weighted group DTW sum."""
    total = np.zeros((preds.shape[0], refs.shape[0]))
    for dims, weight in groups:
        total += weight * dtw_cross(preds[..., dims], refs[..., dims], radius=radius)
    return total.min(axis=1)


def fr_dist(
    predictions: np.ndarray,
    listener_gt: np.ndarray,
    neighbours: np.ndarray,
    *,
    groups: Sequence[Group] = EMOTION_DTW_GROUPS,
    scale: float = 1.0,
    radius: int | None = None,
    workers: int | Executor = 1,
) -> Appropriateness:
    """FRDist: per prediction the min DTW distance over the appropriate real reactions.

    The distance is ``scale * sum_g weight_g * dtw(pred[:, g], ref[:, g])`` over ``groups``
    (default: the 25-d emotion groups AUs ×1/15, valence-arousal ×1, expressions ×1/8). DTW is
    :func:`models.metrics.dtw.dtw` (sqrt of the summed squared frame distances, unconstrained
    unless ``radius``). ``official`` sums over K and averages over N; lower is better.
    """
    predictions, listener_gt, rows, empty = _inputs(predictions, listener_gt, neighbours)

    def one(k: int) -> np.ndarray:
        return scale * _min_dtw(predictions[k], listener_gt[rows[k]], groups, radius)

    best = _map(one, range(predictions.shape[0]), workers)
    return _appropriateness(best, predictions.shape[1], empty)


def fr_dist_58(
    predictions: np.ndarray,
    listener_gt: np.ndarray,
    neighbours: np.ndarray,
    *,
    scale: float = 1.0,
    workers: int | Executor = 1,
) -> Appropriateness:
    """FRDist on 58-d coefficients: one unweighted DTW on all dims (ReactFace's variant).

    ReactFace also multiplies by 10: pass ``scale=REACTFACE_DIST_SCALE`` to match its numbers.
    """
    return fr_dist(predictions, listener_gt, neighbours, groups=ALL_DIMS, scale=scale,
                   workers=workers)  # fmt: skip


def _spread(x: np.ndarray) -> float:
    """Sum over ordered pairs (a, b) of ``||x_a - x_b||**2`` for rows of ``x`` (P, F).

    Uses ``sum_{a,b} ||x_a - x_b||**2 = 2 P sum_a ||x_a - mean||**2`` (exact algebra, O(P F)).
    """
    xc = x - x.mean(axis=0)
    return float(2.0 * x.shape[0] * np.sum(xc * xc))


def fr_div(predictions: np.ndarray) -> float:
    """FRDiv (S_MSE): diversity among the K predictions of one sample, averaged over N.

    Per sample: the squared Euclidean distances between the flattened (T·D) predictions, summed
    over all K(K-1) ordered pairs, divided by K(K-1)·T·D.
    """
    predictions = np.asarray(predictions)
    n, k, frames, dims = predictions.shape
    if k < 2:
        raise ValueError("FRDiv needs at least 2 predictions per sample")
    per = [_spread(predictions[s].reshape(k, -1).astype(np.float64)) for s in range(n)]
    return float(np.mean(per) / (k * (k - 1) * frames * dims))


def fr_dvs(predictions: np.ndarray) -> float:
    """FRDvs: diversity across samples. For each prediction slot i the squared distances between
    the N samples' i-th predictions (flattened), over all N(N-1) ordered pairs; the total over
    slots divided by N(N-1)·K·T·D."""
    predictions = np.asarray(predictions)
    n, k, frames, dims = predictions.shape
    if n < 2:
        raise ValueError("FRDvs needs at least 2 samples")
    total = sum(_spread(predictions[:, i].reshape(n, -1).astype(np.float64)) for i in range(k))
    return float(total / (n * (n - 1) * k * frames * dims))


def fr_var(predictions: np.ndarray) -> float:
    """FRVar: the variance over time of each dim of each prediction, mean over N, K and D.

    Unbiased variance (``ddof=1``), as the REACT code's ``torch.var`` default.
    """
    per = [np.var(p.astype(np.float64), axis=1, ddof=1).mean() for p in np.asarray(predictions)]
    return float(np.mean(per))


def fr_syn(
    predictions: np.ndarray,
    speaker: np.ndarray,
    *,
    max_lag: int = SYNC_MAX_LAG,
    workers: int | Executor = 1,
) -> Synchrony:
    """FRSyn (TLCC): per prediction the lag in ``-max_lag..max_lag`` maximising the mean-over-dims
    Pearson r between prediction and speaker (see :func:`models.metrics.correlation.lag_curves`);
    the score is |lag| (the REACT code's |centre - argmax|), lower is better."""
    predictions, speaker = np.asarray(predictions), np.asarray(speaker)
    if speaker.shape != (predictions.shape[0], *predictions.shape[2:]):
        raise ValueError(f"speaker: expected (N, T, D) matching predictions, got {speaker.shape}")

    def one(s: int) -> np.ndarray:
        return best_lags(predictions[s], np.broadcast_to(speaker[s], predictions[s].shape), max_lag)

    lags = np.stack(_map(one, range(predictions.shape[0]), workers))  # (N, K)
    offsets = np.abs(lags)
    return Synchrony(float(offsets[:, 0].mean()), float(offsets.mean()), lags)


def evaluate_reactions(
    pred58: np.ndarray,
    listener58: np.ndarray,
    speaker58: np.ndarray,
    neighbours: np.ndarray,
    *,
    workers: int = 1,
) -> dict[str, float | int]:
    """All REACT metrics for 58-d coefficient sequences, as a flat JSON-serialisable dict.

    ``pred58`` (N, K, T, 58), ``listener58`` and ``speaker58`` (N, T, 58), ``neighbours`` (N, N).
    The official metrics run on the 25-d emotion view (:func:`emotion_from_coefficients`);
    ``FRCorr_58`` and ``FRDist_58`` (unweighted, unscaled) run on the coefficients themselves.
    """
    n, k, frames, _ = pred58.shape
    pred = emotion.emotion_from_coefficients(pred58)
    listener = emotion.emotion_from_coefficients(listener58)
    speaker = emotion.emotion_from_coefficients(speaker58)
    empty = int((~np.asarray(neighbours).astype(bool).any(axis=1)).sum())
    if empty:
        logger.warning("%d of %d neighbour rows are empty; those samples are scored against "
                       "their own ground truth", empty, n)  # fmt: skip
    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        run: int | Executor = pool if workers > 1 else 1
        corr = fr_corr(pred, listener, neighbours)
        dist = fr_dist(pred, listener, neighbours, workers=run)
        corr58 = fr_corr(pred58, listener58, neighbours)
        dist58 = fr_dist_58(pred58, listener58, neighbours, workers=run)
        syn = fr_syn(pred, speaker, workers=run)
    return {
        "FRCorr": corr.official,
        "FRCorr_per_pred": corr.per_prediction,
        "FRDist": dist.official,
        "FRDist_per_pred": dist.per_prediction,
        "FRCorr_58": corr58.official,
        "FRCorr_58_per_pred": corr58.per_prediction,
        "FRDist_58": dist58.official,
        "FRDist_58_per_pred": dist58.per_prediction,
        "FRDiv": fr_div(pred),
        "FRDvs": fr_dvs(pred),
        "FRVar": fr_var(pred),
        "FRSyn": syn.official,
        "FRSyn_all": syn.all_predictions,
        "N": int(n),
        "K": int(k),
        "T": int(frames),
        "empty_neighbour_rows": empty,
    }
