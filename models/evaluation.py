"""Scoring any reaction predictor on a split with the REACT metrics (``models.metrics``).

A predictor is a callable ``(sample, rng) -> (K, T, 58)``; one that also has
``predict_many(samples, rng) -> list`` (the generator) is given ``chunk`` samples at a time so
it can batch them. Every sample of the split (mirrored,
as the official evaluation) is predicted, cropped or padded to the split's clip length, and
scored against the real listener reactions of the sample's appropriate neighbours.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from models.data import emotion
from models.data.dataset import ReactDataset, Sample
from models.metrics.reaction import evaluate_reactions, fr_corr, fr_dist

Predictor = Callable[[Sample, np.random.Generator], np.ndarray]


def _fit(x: np.ndarray, frames: int) -> np.ndarray:
    if x.shape[-2] >= frames:
        return x[..., :frames, :]
    pad = np.repeat(x[..., -1:, :], frames - x.shape[-2], axis=-2)
    return np.concatenate([x, pad], axis=-2)


def collect(dataset: ReactDataset, predictor: Predictor, *, seed: int = 0,
            progress: bool = True, limit: int | None = None, chunk: int = 32,
            indices: list[int] | None = None) -> dict[str, np.ndarray | float]:  # fmt: skip
    """Predict the samples ``indices`` (default: all, or the first ``limit``).

    Returns ``{"predictions" (N, K, T, 58), "listeners" (N, T, 58), "speakers" (N, T, 58),
    "indices" (N,), "predict_seconds"}``, every sequence fitted to the split's clip length.
    """
    if indices is None:
        n = len(dataset) if limit is None else min(limit, len(dataset))
        indices = list(range(n))
    if not indices:
        raise ValueError("the split has no samples")
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    frames = dataset[indices[0]].listener.frames
    preds, listeners, speakers = [], [], []
    many = getattr(predictor, "predict_many", None)
    step = chunk if many is not None else 1
    bar = tqdm(total=len(indices), desc="predict", unit="sample", disable=not progress)
    for lo in range(0, len(indices), step):
        batch = [dataset[i] for i in indices[lo: lo + step]]
        outs = many(batch, rng) if many is not None else [predictor(batch[0], rng)]
        for s, p in zip(batch, outs, strict=True):
            p = np.asarray(p, dtype=np.float32)
            if p.ndim != 3 or p.shape[-1] != 58:
                raise ValueError(f"predictor returned shape {p.shape}, expected (K, T, 58)")
            preds.append(_fit(p, frames))
            listeners.append(_fit(s.listener.coeffs, frames))
            speakers.append(_fit(s.speaker.coeffs, frames))
        bar.update(len(batch))
    bar.close()
    return {"predictions": np.stack(preds), "listeners": np.stack(listeners),
            "speakers": np.stack(speakers), "indices": np.asarray(indices),
            "predict_seconds": round(time.perf_counter() - start, 2)}  # fmt: skip


def score(collected: dict, neighbours: np.ndarray, *, workers: int = 1) -> dict:
    """All reaction metrics of :func:`collect`'s output against ``neighbours`` (N, N) over the
    collected samples (already restricted to them)."""
    start = time.perf_counter()
    result = evaluate_reactions(collected["predictions"], collected["listeners"],
                                collected["speakers"], neighbours, workers=workers)  # fmt: skip
    result["predict_seconds"] = collected["predict_seconds"]
    result["metric_seconds"] = round(time.perf_counter() - start, 2)
    return result


def evaluate(dataset: ReactDataset, predictor: Predictor, *, seed: int = 0, workers: int = 1,
             progress: bool = True, limit: int | None = None, chunk: int = 32) -> dict:  # fmt: skip
    """Predict every sample (or the first ``limit``) and compute all reaction metrics against
    the split's neighbour matrix."""
    if dataset.neighbours is None:
        raise ValueError("the split has no neighbour matrix: appropriateness cannot be scored")
    collected = collect(dataset, predictor, seed=seed, progress=progress, limit=limit,
                        chunk=chunk)  # fmt: skip
    idx = collected["indices"]
    return score(collected, dataset.neighbours[np.ix_(idx, idx)], workers=workers)


def own_listener_scores(predictions: np.ndarray, listeners: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample FRCorr and FRDist (official 25-d emotion view, summed over K) of
    ``predictions (N, K, T, 58)`` against each sample's own real reaction ``listeners (N, T, 58)``
    only: the person-specific neighbour set, for personalisation."""
    pred = emotion.emotion_from_coefficients(predictions)
    real = emotion.emotion_from_coefficients(listeners)
    own = np.eye(len(pred), dtype=bool)
    return {"FRCorr": fr_corr(pred, real, own).per_sample,
            "FRDist": fr_dist(pred, real, own).per_sample}
