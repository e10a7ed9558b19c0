"""Recipes: the style encoder (contrastive) and the hypernetwork's shifts (frozen generator).

:func:`train_style` draws, each step, ``persons`` train persons and two random ``seconds``-long
crops of two different clips of each, and minimises the supervised InfoNCE of
:func:`~models.personal.style.info_nce` (same person close, others apart). It reports
identification accuracy on the val split: a person's style from one 10-s crop is matched to the
mean style of each person's other clips.

:func:`train_shifts` freezes the generator and the style encoder and trains the hypernetwork:
for each training window the listener's style comes from a random 10-s crop of **another** clip
of the same listener (as at enrolment, never the window's own clip), the hypernetwork turns it
into low-rank shifts, and the loss is the generator's diffusion loss with those shifts
(PerFRDiff's personalised reconstruction). Styles are precomputed for ``crops_per_clip`` random
crops of every train clip (the encoder is frozen), so a step costs one generator forward.

Both write ``personal.safetensors`` (:func:`~models.personal.checkpoint.save_personal`) and a
``summary.json`` into the run folder; both are deterministic given the seed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from models.data.dataset import ReactDataset
from models.data.io import DatasetError
from models.data.torch_windows import WindowDataset
from models.face import layout
from models.generator.checkpoint import load_generator
from models.generator.denoiser import Denoiser
from models.generator.loss import diffusion_loss
from models.generator.schedule import alphas_cumprod
from models.personal.checkpoint import load_personal, save_personal
from models.personal.hyper import HyperConfig, HyperNetwork, to_shifts
from models.personal.style import StyleEncoder, StyleEncoderConfig, info_nce
from models.train.generator import StepSampler, config_json, lr_factor, start_run

log = logging.getLogger(__name__)

PERSONAL_FILE = "personal.safetensors"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class TrainStyleConfig:
    data_root: str | Path
    out_dir: str | Path
    steps: int = 1500
    persons: int = 32
    """Persons per batch (two crops each)."""
    seconds: float = 10.0
    """Length of each crop (the enrolment length)."""
    lr: float = 1e-3
    temperature: float = 0.1
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.persons < 2:
            raise ValueError("steps must be at least 1 and persons at least 2")
        if self.seconds * layout.FPS < StyleEncoderConfig().min_frames:
            raise ValueError(f"seconds must be at least {StyleEncoderConfig().min_frames / 25} "
                             "(the style encoder's minimum)")  # fmt: skip
        if self.lr <= 0 or self.temperature <= 0:
            raise ValueError("lr and temperature must be positive")


@dataclass(frozen=True)
class TrainShiftsConfig:
    data_root: str | Path
    out_dir: str | Path
    generator: str | Path
    """Generator checkpoint (frozen)."""
    style: str | Path
    """Style checkpoint from :func:`train_style` (frozen)."""
    shift_layers: tuple[str, ...] | None = None
    """Layer kinds to shift; ``None``: the generator config's ``shift_layers``."""
    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    seconds: float = 10.0
    crops_per_clip: int = 8
    seed: int = 0
    device: str = "auto"
    hyper: HyperConfig | None = None
    """Hypernetwork sizes (rank and style size are taken from the generator and encoder)."""
    feature_cache: str | Path | None = None
    """Folder caching the audio features (as the generator recipe's)."""
    prev_drop: float | None = None
    """Share of training windows whose previous listener frames are hidden. ``None``: as the
    live sampler runs the generator, 1.0 (always hidden) when its ``sample_feedback`` is off, 0
    when it is on. The shifts must carry the person where the live windows see no previous
    frames of that person."""
    cond_drop: float = 0.0
    """Share of windows whose speaker context is hidden (the unconditional branch that
    classifier-free guidance also runs under the listener's shifts)."""
    high_noise: float = 0.0
    """Share of windows whose diffusion step is drawn from the noisier half only (where the
    live few-step sampler works); see :func:`~models.generator.loss.diffusion_loss`."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.crops_per_clip < 1:
            raise ValueError("steps, batch_size and crops_per_clip must be at least 1")
        if self.lr <= 0 or self.warmup < 0:
            raise ValueError("lr must be positive and warmup non-negative")
        if self.prev_drop is not None and not 0.0 <= self.prev_drop <= 1.0:
            raise ValueError(f"prev_drop must be in [0, 1] or None, got {self.prev_drop}")
        if not 0.0 <= self.cond_drop < 1.0 or not 0.0 <= self.high_noise <= 1.0:
            raise ValueError(f"cond_drop must be in [0, 1) and high_noise in [0, 1], got "
                             f"{self.cond_drop}, {self.high_noise}")  # fmt: skip


def _person_clips(ds: ReactDataset, frames: int) -> dict[str, list[np.ndarray]]:
    """Every person's clips (coefficients with invalid frames dropped) of at least ``frames``
    frames, for persons with at least two such clips."""
    out = {}
    for person in ds.persons:
        clips = []
        for path in ds.clips_of(person):
            clip = ds.clip(path)
            x = clip.coeffs[clip.valid & clip.found]
            if len(x) >= frames:
                clips.append(x.astype(np.float32))
        if len(clips) >= 2:
            out[person] = clips
    return out


def _crop(x: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    start = int(rng.integers(len(x) - frames + 1))
    return x[start: start + frames]


@torch.no_grad()
def identification_accuracy(encoder: StyleEncoder, clips: dict[str, list[np.ndarray]],
                            frames: int, seed: int, device: torch.device) -> float:  # fmt: skip
    """Top-1 share of (person, clip) crops whose style is closest (cosine) to the mean style
    of that person's *other* clips, among every person's mean style."""
    rng = np.random.default_rng(seed)
    persons = sorted(clips)
    styles = {}
    for p in persons:
        batch = torch.from_numpy(np.stack([_crop(c, frames, rng) for c in clips[p]])).to(device)
        styles[p] = encoder(batch)  # (n_clips, S)
    hits = total = 0
    for p in persons:
        for j in range(len(clips[p])):
            probe = styles[p][j]
            scores = []
            for q in persons:
                ref = styles[q] if q != p else torch.cat([styles[q][:j], styles[q][j + 1:]])
                scores.append(float(torch.nn.functional.normalize(ref.mean(0), dim=0) @ probe))
            hits += int(persons[int(np.argmax(scores))] == p)
            total += 1
    return hits / max(total, 1)


def train_style(cfg: TrainStyleConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train the style encoder; returns the summary it writes."""
    start = time.perf_counter()
    device, out = start_run(cfg.data_root, cfg.out_dir, cfg.device)
    frames = int(round(cfg.seconds * layout.FPS))
    train = _person_clips(ReactDataset(cfg.data_root, "train", mirror=False), frames)
    val = _person_clips(ReactDataset(cfg.data_root, "val", mirror=False), frames)
    if len(train) < cfg.persons:
        raise DatasetError(f"{cfg.data_root}: {len(train)} train persons with two clips of "
                           f"{cfg.seconds} s, fewer than persons={cfg.persons}")  # fmt: skip
    names = sorted(train)
    rng = np.random.default_rng(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        encoder = StyleEncoder(StyleEncoderConfig()).to(device)
        opt = torch.optim.AdamW(encoder.parameters(), lr=cfg.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps, 50))
        bar = tqdm(range(cfg.steps), desc="style", unit="step", disable=not progress)
        loss_ema = None
        for _ in bar:
            pick = rng.choice(len(names), size=cfg.persons, replace=False)
            views = ([], [])
            for k in pick:
                clips = train[names[k]]
                a, b = rng.choice(len(clips), size=2, replace=False)
                views[0].append(_crop(clips[a], frames, rng))
                views[1].append(_crop(clips[b], frames, rng))
            xa = torch.from_numpy(np.stack(views[0])).to(device)
            xb = torch.from_numpy(np.stack(views[1])).to(device)
            encoder.train()
            loss = info_nce(encoder(xa), encoder(xb), temperature=cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
            opt.step()
            sched.step()
            value = loss.item()
            loss_ema = value if loss_ema is None else 0.98 * loss_ema + 0.02 * value
            bar.set_postfix(loss=f"{loss_ema:.3f}")
        encoder.eval()
        metrics = {"train_loss_ema": loss_ema,
                   "val_identification": identification_accuracy(encoder, val, frames, cfg.seed,
                                                                 device),
                   "val_persons": len(val), "chance": 1 / max(len(val), 1)}  # fmt: skip
    seconds = time.perf_counter() - start
    extra = {"recipe": "style", "seed": cfg.seed, "steps": cfg.steps, "metrics": metrics,
             "seconds": round(seconds, 1), "config": config_json(cfg)}  # fmt: skip
    save_personal(encoder, None, out / PERSONAL_FILE, extra)
    summary = {**extra, "model": str(out / PERSONAL_FILE), "train_persons": len(train),
               "device": str(device)}  # fmt: skip
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    log.info("style: val identification %.2f (chance %.2f), %.0f s",
             metrics["val_identification"], metrics["chance"], seconds)  # fmt: skip
    return summary


def with_shift_layers(model: Denoiser, shift_layers: tuple[str, ...]) -> Denoiser:
    """The same denoiser weights under a config that shifts ``shift_layers`` (the layer choice
    does not change any parameter, only which shifts the model accepts)."""
    cfg = dataclasses.replace(model.config, shift_layers=tuple(shift_layers))
    twin = Denoiser(cfg)
    twin.load_state_dict(model.state_dict())
    return twin.to(next(model.parameters()).device).eval()


@torch.no_grad()
def style_bank(encoder: StyleEncoder, ds: ReactDataset, frames: int, crops: int, seed: int,
               device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, str]]:  # fmt: skip
    """``(clip → (crops, S) styles of random crops, clip → person)`` for every clip of ``ds``."""
    rng = np.random.default_rng(seed)
    bank, owner = {}, {}
    for person in ds.persons:
        for path in ds.clips_of(person):
            clip = ds.clip(path)
            x = clip.coeffs[clip.valid & clip.found].astype(np.float32)
            owner[path] = person
            if len(x) < frames:
                continue
            batch = np.stack([_crop(x, frames, rng) for _ in range(crops)])
            bank[path] = encoder(torch.from_numpy(batch).to(device))  # (crops, S)
    return bank, owner


def train_shifts(cfg: TrainShiftsConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train the hypernetwork with the generator and style encoder frozen."""
    start = time.perf_counter()
    device, out = start_run(cfg.data_root, cfg.out_dir, cfg.device)
    frames = int(round(cfg.seconds * layout.FPS))
    model, _ = load_generator(cfg.generator, device=device)
    if cfg.shift_layers is not None:
        model = with_shift_layers(model, cfg.shift_layers)
    for p in model.parameters():
        p.requires_grad_(False)
    encoder, _, _ = load_personal(cfg.style, device=device)
    gcfg = model.config
    prev_drop = cfg.prev_drop
    if prev_drop is None:
        prev_drop = 0.0 if gcfg.sample_feedback else 1.0
    cache = Path(cfg.feature_cache) if cfg.feature_cache else None
    train = ReactDataset(cfg.data_root, "train", cache_dir=cache, cache_clips=4096)
    with torch.no_grad():
        bank, owner = style_bank(encoder, train, frames, cfg.crops_per_clip, cfg.seed, device)
    # per sample: the clips its listener's style may come from (the person's other clips)
    others: list[list[str]] = []
    for i in range(len(train)):
        own = train.pair_clips(i)[1]
        person = owner[own]
        others.append([c for c in train.clips_of(person) if c != own and c in bank])
    windows = WindowDataset(train, w=gcfg.window, context=gcfg.context, prev=gcfg.prev)
    keep = [k for k, (i, _) in enumerate(windows.starts) if others[i]]
    if not keep:
        raise DatasetError(f"{cfg.data_root}: no train listener has a second clip to enrol from")
    hcfg = dataclasses.replace(cfg.hyper or HyperConfig(), rank=gcfg.shift_rank,
                               style_dim=encoder.config.style_dim)  # fmt: skip
    rng = np.random.default_rng(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        hyper = HyperNetwork(hcfg, model.shift_targets()).to(device)
        opt = torch.optim.AdamW(hyper.parameters(), lr=cfg.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, cfg.steps, cfg.warmup))
        noise_gen = torch.Generator(device=device).manual_seed(cfg.seed)
        ac = alphas_cumprod(gcfg.diffusion_steps, gcfg.schedule_offset).to(device)
        loader = DataLoader(Subset(windows, keep), batch_size=cfg.batch_size,
                            sampler=StepSampler(len(keep), cfg.seed),
                            generator=torch.Generator().manual_seed(cfg.seed))  # fmt: skip
        batches = iter(loader)
        regime = {"prev_drop": prev_drop, "cond_drop": cfg.cond_drop,
                  "high_noise": cfg.high_noise}  # fmt: skip
        model.train()  # dropout as in the generator's training; weights stay frozen
        bar = tqdm(range(cfg.steps), desc="shifts", unit="step", disable=not progress)
        loss_ema = base_ema = None
        for step in bar:
            batch = next(batches)
            idx = batch.pop("index").tolist()
            batch.pop("t")
            batch = {k: v.to(device) for k, v in batch.items()}
            picks = [others[i][int(rng.integers(len(others[i])))] for i in idx]
            styles = torch.stack([bank[c][int(rng.integers(cfg.crops_per_clip))] for c in picks])
            state = noise_gen.get_state()
            loss = diffusion_loss(model, batch, ac, noise_gen, to_shifts(hyper(styles)),
                                  **regime)
            if step % 10 == 0:  # the same noise without shifts: what personalisation gains
                after = noise_gen.get_state()
                noise_gen.set_state(state)
                with torch.no_grad():
                    base = diffusion_loss(model, batch, ac, noise_gen, **regime).item()
                noise_gen.set_state(after)
                base_ema = base if base_ema is None else 0.9 * base_ema + 0.1 * base
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(hyper.parameters(), 1.0)
            opt.step()
            sched.step()
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"non-finite loss {value} at step {step}")
            loss_ema = value if loss_ema is None else 0.98 * loss_ema + 0.02 * value
            bar.set_postfix(loss=f"{loss_ema:.4f}", generic=f"{base_ema:.4f}")
        del batches
    seconds = time.perf_counter() - start
    extra = {"recipe": "shifts", "seed": cfg.seed, "steps": cfg.steps,
             "shift_layers": list(gcfg.shift_layers), "prev_drop": prev_drop,
             "metrics": {"train_loss_ema": loss_ema, "generic_loss_ema": base_ema},
             "seconds": round(seconds, 1), "config": config_json(cfg),
             "style_metrics": load_personal(cfg.style)[2].get("metrics")}  # fmt: skip
    save_personal(encoder, hyper.eval(), out / PERSONAL_FILE, extra)
    summary = {**extra, "model": str(out / PERSONAL_FILE), "device": str(device),
               "hyper_parameters": sum(p.numel() for p in hyper.parameters())}  # fmt: skip
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    log.info("shifts: loss EMA %.4f (generic %.4f), %.0f s", loss_ema, base_ema, seconds)
    return summary
