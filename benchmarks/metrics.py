"""Cost of the REACT metrics: one 750×750 DTW, and ``evaluate_reactions`` on N×K×T sequences.

Wall time and process CPU time are both reported: on a shared machine the CPU time of the
single-worker run is the steadier number.

Inputs are synthetic smooth 58-d sequences (blendshapes in 0..1, small pose) and a random
neighbour matrix with ``--neighbours`` True entries per row (the sample itself included). The
DTW count behind FRDist is N·K·neighbours·(3 emotion groups + 1 on 58 dims).
Usage: python benchmarks/metrics.py [--n 20] [--k 10] [--frames 750] [--neighbours 5]
                                    [--workers 1 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from models.metrics.dtw import dtw, dtw_cross
from models.metrics.reaction import evaluate_reactions


def smooth_sequences(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """``(*shape, 58)`` low-pass random walks: blendshapes in [0, 1], pose within about ±0.3."""
    frames = shape[-1]
    steps = rng.normal(0, 1, (*shape, 58))
    kernel = np.hanning(25) / np.hanning(25).sum()
    walk = np.apply_along_axis(lambda s: np.convolve(s, kernel, mode="same"), -2, steps)
    walk = np.cumsum(walk, axis=-2) / np.sqrt(frames)
    out = 1 / (1 + np.exp(-3 * (walk - 1.0)))
    out[..., 52:] = 0.3 * np.tanh(walk[..., 52:])
    return out.astype(np.float32)


def time_dtw(rng: np.random.Generator, frames: int, repeats: int = 20) -> dict[str, float]:
    out = {}
    for dims in (2, 8, 15, 25, 58):
        a, b = rng.random((frames, dims)), rng.random((frames, dims))
        dtw(a[:5], b[:5])  # compile / load the cache
        runs = []
        for _ in range(repeats):
            t = time.perf_counter()
            dtw(a, b)
            runs.append((time.perf_counter() - t) * 1000)
        out[f"dtw_{frames}x{frames}x{dims}_ms"] = float(np.median(runs))
    a, b = rng.random((10, frames, 25)), rng.random((5, frames, 25))
    t = time.perf_counter()
    dtw_cross(a, b)
    out[f"dtw_cross_per_pair_{frames}x25_ms"] = (time.perf_counter() - t) * 1000 / 50
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--frames", type=int, default=750)
    parser.add_argument("--neighbours", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    result: dict = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    result.update(time_dtw(rng, args.frames))
    pred = smooth_sequences(rng, (args.n, args.k, args.frames))
    listener = smooth_sequences(rng, (args.n, args.frames))
    speaker = smooth_sequences(rng, (args.n, args.frames))
    neighbours = np.eye(args.n, dtype=bool)
    for row in neighbours:
        row[rng.choice(args.n, size=args.neighbours - 1, replace=False)] = True
    result["neighbours_per_row"] = float(neighbours.sum(1).mean())
    evaluate_reactions(pred[:2, :2, :60], listener[:2, :60], speaker[:2, :60], neighbours[:2, :2])
    for workers in args.workers:
        t, cpu = time.perf_counter(), time.process_time()
        metrics = evaluate_reactions(pred, listener, speaker, neighbours, workers=workers)
        result[f"evaluate_s_workers{workers}"] = time.perf_counter() - t
        result[f"evaluate_cpu_s_workers{workers}"] = time.process_time() - cpu
    result["shape"] = [args.n, args.k, args.frames]
    result["metrics"] = metrics
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
