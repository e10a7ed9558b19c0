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
from models.generator.checkpoint import load_generator, save_generator
from models.personal.enrolment import SPREAD_SECONDS, chunk_variances
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
    """Unused (nothing is random); kept so every recipe takes ``--seed``."""
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise ValueError(f"seconds must be positive, got {self.seconds}")
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


def measure_spread(cfg: SpreadConfig, *, progress: bool = True) -> dict[str, Any]:
    """Measure the population spread, write it into the checkpoint; returns the summary."""
    start = time.perf_counter()
    device, out = start_run(cfg.data_root, cfg.out_dir, cfg.device, split=cfg.split)
    model, meta = load_generator(cfg.generator, device=device)
    ds = ReactDataset(cfg.data_root, cfg.split)
    spread, chunks = population_spread(ds, cfg.seconds)
    model.config = dataclasses.replace(model.config, expression_spread=spread)
    record = {"split": cfg.split, "seconds": cfg.seconds, "chunks": chunks,
              "persons": len(ds.persons), "value": spread}  # fmt: skip
    save_generator(model, cfg.generator, dict(meta["extra"], expression_spread=record))
    summary = {"recipe": "spread", "seed": cfg.seed, "expression_spread": record,
               "seconds": round(time.perf_counter() - start, 1), "config": config_json(cfg)}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    if progress:
        log.info("spread: %.4f over %d chunks of %.0f s (%d %s persons)", spread, chunks,
                 cfg.seconds, len(ds.persons), cfg.split)  # fmt: skip
    return summary
