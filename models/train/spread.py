"""Recipe: measure the training population's expression spread and write it into a generator.

The online runner scales an enrolled listener's expression by that person's expressivity: the
expression spread of their enrolment clip (``models.personal.enrolment.expression_spread``)
relative to the population's (``GeneratorConfig.expression_spread``). This recipe measures the
population's: over every clip of every person of the **train** split (listeners and speakers,
as the generator is trained on both directions), the summed blendshape variance of each
consecutive 10-s chunk of the clip's valid face frames, averaged over all chunks, square root.
The result is written into the generator checkpoint's config in place; it is excluded from the
generator's fingerprint, so enrolments and the personality model stay valid. No training, no
randomness: seconds on a CPU.

With ``personal`` (a style encoder + hypernetwork checkpoint) it also measures how much that
hypernetwork's shifts shrink the generated expression (``GeneratorConfig.shift_spread_gain``):
for ``samples`` train samples (drawn with ``seed``), each listener enrolled from a random 10-s
crop of another of its clips, ``k`` online reactions of the generic model and ``k`` with the
listener's shifts (same noise, the generator's live sampler, no resting face); the gain is the
mean expression spread of the generic reactions over that of the shifted ones. Minutes on a
CPU for the default 64 samples. The hypernetwork is trained to lower the diffusion loss, which
pulls its reactions towards the mean; the runner multiplies an enrolled session's expressivity
gain by this factor, so the shifts change the form of a reaction and not its amplitude.
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

from models.data.dataset import ReactDataset
from models.evaluation import collect
from models.generator.checkpoint import load_generator, save_generator
from models.generator.denoiser import Denoiser
from models.generator.predict import GeneratorPredictor
from models.personal.checkpoint import load_personal
from models.personal.enrolment import (
    SPREAD_SECONDS,
    chunk_variances,
    enrolments_of,
    expression_spread,
)
from models.train.generator import config_json, start_run

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class SpreadConfig:
    data_root: str | Path
    out_dir: str | Path
    generator: str | Path
    """Checkpoint to write the spread into (in place)."""
    split: str = "train"
    seconds: float = SPREAD_SECONDS
    seed: int = 0
    """Draws the samples and the noise of the shift measurement (the population spread has no
    randomness)."""
    device: str = "cpu"
    personal: str | Path | None = None
    """Style encoder + hypernetwork checkpoint whose shifts' spread gain is measured too."""
    samples: int = 64
    """Train samples of the shift measurement."""
    k: int = 2
    """Reactions per sample of the shift measurement."""

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise ValueError(f"seconds must be positive, got {self.seconds}")
        if self.samples < 1 or self.k < 1:
            raise ValueError(f"samples and k must be at least 1, got {self.samples}, {self.k}")
        if self.split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val' (never test), got {self.split!r}")


def population_spread(ds: ReactDataset, seconds: float = SPREAD_SECONDS) -> tuple[float, int]:
    """``(spread, chunks)`` over every clip of every person of ``ds``."""
    variances = []
    for person in ds.persons:
        for path in ds.clips_of(person):
            clip = ds.clip(path)
            frames = clip.coeffs[clip.valid & clip.found]
            if len(frames) >= 2:
                variances.append(chunk_variances(frames, seconds))
    if not variances:
        raise ValueError(f"split {ds.split!r}: no clip with at least 2 valid face frames")
    all_chunks = np.concatenate(variances)
    return float(np.sqrt(all_chunks.mean())), int(len(all_chunks))


def shift_spread_gain(model: Denoiser, personal: str | Path, ds: ReactDataset, *, samples: int,
                      k: int, seed: int) -> dict[str, Any]:  # fmt: skip
    """The expression spread of ``model``'s online reactions without shifts over that with the
    shifts of ``personal``'s hypernetwork, on ``samples`` samples of ``ds`` (see the module)."""
    style, hyper, _ = load_personal(personal)
    if hyper is None:
        raise ValueError(f"{personal}: holds no hypernetwork (train shifts first)")
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(ds), size=min(samples, len(ds)), replace=False).tolist())
    enrolment_of = enrolments_of(ds, style, hyper, seed=seed)
    shifts_for = lambda s: enrolment_of(s).factors  # noqa: E731

    spreads = {}
    for name, predictor in (("generic", GeneratorPredictor(model, None, k=k)),
                            ("shifted", GeneratorPredictor(model, None, k=k,
                                                           shifts_for=shifts_for))):
        got = collect(ds, predictor, seed=seed, indices=picked, progress=False)
        spreads[name] = float(np.mean([expression_spread(p) for s in got["predictions"]
                                       for p in s]))  # fmt: skip
    if spreads["shifted"] <= 0:
        raise ValueError("the shifted reactions do not move at all: no spread gain to measure")
    return {"value": spreads["generic"] / spreads["shifted"], "personal": str(personal),
            "samples": len(picked), "k": k, "seed": seed,
            "spread_generic": spreads["generic"], "spread_shifted": spreads["shifted"]}


def measure_spread(cfg: SpreadConfig, *, progress: bool = True) -> dict[str, Any]:
    """Measure the population spread, write it into the checkpoint; returns the summary."""
    start = time.perf_counter()
    device, out = start_run(cfg.data_root, cfg.out_dir, cfg.device, split=cfg.split)
    model, meta = load_generator(cfg.generator, device=device)
    ds = ReactDataset(cfg.data_root, cfg.split)
    spread, chunks = population_spread(ds, cfg.seconds)
    record = {"split": cfg.split, "seconds": cfg.seconds, "chunks": chunks,
              "persons": len(ds.persons), "value": spread}  # fmt: skip
    extra = dict(meta["extra"], expression_spread=record)
    summary = {"recipe": "spread", "seed": cfg.seed, "expression_spread": record}
    if cfg.personal is not None:
        measured = shift_spread_gain(model, cfg.personal, ds, samples=cfg.samples, k=cfg.k,
                                     seed=cfg.seed)  # fmt: skip
        model.config = dataclasses.replace(model.config, shift_spread_gain=measured["value"])
        extra["shift_spread_gain"] = summary["shift_spread_gain"] = measured
        if progress:
            log.info("shift spread gain: %.4f (%d samples x %d)", measured["value"],
                     measured["samples"], cfg.k)  # fmt: skip
    model.config = dataclasses.replace(model.config, expression_spread=spread)
    save_generator(model, cfg.generator, extra)
    summary.update(seconds=round(time.perf_counter() - start, 1), config=config_json(cfg))
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    if progress:
        log.info("spread: %.4f over %d chunks of %.0f s (%d %s persons)", spread, chunks,
                 cfg.seconds, len(ds.persons), cfg.split)  # fmt: skip
    return summary
