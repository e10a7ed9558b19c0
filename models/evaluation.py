"""Scoring any reaction predictor on a split with the REACT metrics (``models.metrics``).

A predictor is a callable ``(sample, rng) -> (K, T, 58)``. Every sample of the split (mirrored,
as the official evaluation) is predicted, cropped or padded to the split's clip length, and
scored against the real listener reactions of the sample's appropriate neighbours.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from models.data.dataset import ReactDataset, Sample
from models.metrics.reaction import evaluate_reactions

Predictor = Callable[[Sample, np.random.Generator], np.ndarray]


def _fit(x: np.ndarray, frames: int) -> np.ndarray:
    if x.shape[-2] >= frames:
        return x[..., :frames, :]
    pad = np.repeat(x[..., -1:, :], frames - x.shape[-2], axis=-2)
    return np.concatenate([x, pad], axis=-2)


def evaluate(dataset: ReactDataset, predictor: Predictor, *, seed: int = 0, workers: int = 1,
             progress: bool = True, limit: int | None = None) -> dict:  # fmt: skip
    """Predict every sample (or the first ``limit``) and compute all reaction metrics."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError("the split has no samples")
    if dataset.neighbours is None:
        raise ValueError("the split has no neighbour matrix: appropriateness cannot be scored")
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    first = dataset[0]
    frames = first.listener.frames
    preds, listeners, speakers = [], [], []
    for i in tqdm(range(n), desc="predict", unit="sample", disable=not progress):
        s = dataset[i]
        p = np.asarray(predictor(s, rng), dtype=np.float32)
        if p.ndim != 3 or p.shape[-1] != 58:
            raise ValueError(f"predictor returned shape {p.shape}, expected (K, T, 58)")
        preds.append(_fit(p, frames))
        listeners.append(_fit(s.listener.coeffs, frames))
        speakers.append(_fit(s.speaker.coeffs, frames))
    predicted = time.perf_counter()
    result = evaluate_reactions(np.stack(preds), np.stack(listeners), np.stack(speakers),
                                dataset.neighbours[:n, :n], workers=workers)  # fmt: skip
    result["predict_seconds"] = round(predicted - start, 2)
    result["metric_seconds"] = round(time.perf_counter() - predicted, 2)
    return result
