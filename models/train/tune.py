"""Recipe: choose the live sampler's steps, guidance and feedback on the val split (never test).

For every ``(steps, guidance, feedback)`` of the grid (feedback: whether each generated window
is fed back as the next one's previous listener frames, ``GeneratorConfig.sample_feedback``)
the trained generator streams ``samples`` val speaker clips (``k`` reactions each, online,
exactly as live) and is scored with the official REACT metrics against the val neighbour
matrix. Each setting gets the score

    (FRCorr − min FRCorr) / (max − min) + (max FRDist − FRDist) / (max − min)

over the grid (appropriateness up, distance down, equal weight), and settings whose FRDiv is
below ``min_diversity`` are excluded (a sampler that always says the same thing is not
"multiple appropriate reactions"). The winner is written into the checkpoint's config
(``sample_steps``, ``sample_guidance``, ``sample_feedback``) and the whole table into its
``extra`` metadata, so everything that loads the checkpoint uses it by default.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.data.dataset import ReactDataset
from models.evaluation import collect, score
from models.generator.checkpoint import load_generator, save_generator
from models.generator.predict import GeneratorPredictor
from models.train.generator import config_json, start_run

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class TuneSamplerConfig:
    data_root: str | Path
    out_dir: str | Path
    generator: str | Path
    """Checkpoint to tune; rewritten in place with the chosen settings."""
    steps_grid: tuple[int, ...] = (2, 4)
    guidance_grid: tuple[float, ...] = (1.0, 1.5, 2.0)
    feedback_grid: tuple[bool, ...] = (True, False)
    samples: int = 24
    """Val samples (half listening, half the mirrored talking direction)."""
    k: int = 5
    min_diversity: float = 1e-3
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.steps_grid or not self.guidance_grid or not self.feedback_grid:
            raise ValueError("steps_grid, guidance_grid and feedback_grid must not be empty")
        if any(not isinstance(f, bool) for f in self.feedback_grid):
            raise ValueError(f"feedback_grid values must be true or false, got "
                             f"{self.feedback_grid}")  # fmt: skip
        if min(self.steps_grid) < 1 or max(self.steps_grid) > 8:
            raise ValueError("steps_grid values must be in 1..8 (the live few-step sampler)")
        if min(self.guidance_grid) < 0 or max(self.guidance_grid) > 10:
            raise ValueError("guidance_grid values must be in [0, 10]")
        if self.samples < 2 or self.k < 2:
            raise ValueError("samples and k must be at least 2")


def _normalised(values: list[float]) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    span = v.max() - v.min()
    return np.zeros_like(v) if span == 0 else (v - v.min()) / span


def tune_sampler(cfg: TuneSamplerConfig, *, progress: bool = True) -> dict[str, Any]:
    """Score the grid on val, write the winner into the checkpoint; returns the summary."""
    start = time.perf_counter()
    device, out = start_run(cfg.data_root, cfg.out_dir, cfg.device, split="val")
    model, meta = load_generator(cfg.generator, device=device)
    val = ReactDataset(cfg.data_root, "val")
    if val.neighbours is None:
        raise ValueError(f"{cfg.data_root}: the val split has no neighbour matrix")
    half = len(val) // 2 if val.mirror else len(val)
    first = min(cfg.samples // 2, half)
    idx = list(range(first)) + list(range(half, min(half + cfg.samples - first, len(val))))
    neighbours = val.neighbours[np.ix_(idx, idx)]
    rows = []
    grid = [(s, g, f) for f in cfg.feedback_grid for s in cfg.steps_grid
            for g in cfg.guidance_grid]  # fmt: skip
    for steps, guidance, feedback in grid:
        predictor = GeneratorPredictor(model, k=cfg.k, steps=steps, guidance=guidance,
                                       device=str(device), feedback=feedback)  # fmt: skip
        got = collect(val, predictor, seed=cfg.seed, indices=idx, progress=False)
        m = score(got, neighbours, workers=max(1, torch.get_num_threads()))
        rows.append({"steps": steps, "guidance": guidance, "feedback": feedback,
                     "FRCorr": m["FRCorr"], "FRDist": m["FRDist"], "FRDiv": m["FRDiv"],
                     "FRVar": m["FRVar"]})  # fmt: skip
        if progress:
            log.info("tune: steps %d guidance %.1f feedback %s: FRCorr %.3f FRDist %.1f "
                     "FRDiv %.4f", steps, guidance, feedback, m["FRCorr"], m["FRDist"],
                     m["FRDiv"])  # fmt: skip
    corr = _normalised([r["FRCorr"] for r in rows])
    dist = 1.0 - _normalised([r["FRDist"] for r in rows])
    for r, c, d in zip(rows, corr, dist, strict=True):
        r["score"] = float(c + d) if r["FRDiv"] >= cfg.min_diversity else float("-inf")
    best = max(rows, key=lambda r: r["score"])
    tuned = dataclasses.replace(model.config, sample_steps=best["steps"],
                                sample_guidance=float(best["guidance"]),
                                sample_feedback=bool(best["feedback"]))  # fmt: skip
    model.config = tuned
    extra = dict(meta["extra"], sampler_tuning={"split": "val", "samples": len(idx), "k": cfg.k,
                                                "grid": rows, "chosen": best})  # fmt: skip
    save_generator(model, cfg.generator, extra)
    summary = {"recipe": "tune", "seed": cfg.seed, "chosen": best, "grid": rows,
               "seconds": round(time.perf_counter() - start, 1), "samples": len(idx),
               "config": config_json(cfg)}  # fmt: skip
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    log.info("tune: chose %d steps, guidance %.1f, feedback %s", best["steps"],
             best["guidance"], best["feedback"])  # fmt: skip
    return summary
