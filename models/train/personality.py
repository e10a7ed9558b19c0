"""Recipe: the personality model, trained jointly with its own copy of the enrolment path.

As the RPR paper's end-to-end strategy: each step draws ``persons`` train persons (every person
of the world with known traits, in either role), a random ``seconds``-long crop of one of their
clips, and ``windows`` online windows of the person's *own* reactions from their other clips.
The crop goes through the style encoder and hypernetwork to the person's key ``Key^τ``; the loss
is the trait MSE of the 2D-GNN's prediction (Eq. 13) plus ``rec_weight`` times the personalised
generator's diffusion loss on those windows with ``Θ + Key^τ`` (Eq. 11). The generic generator
is frozen; both losses reach the hypernetwork and the style encoder (copies initialised from the
bundled enrolment path, so the live personalisation is not changed). The ``direct`` variant (no
cognition simulation) trains the style encoder and an MLP on the trait loss alone.

Every ``eval_every`` steps the val persons are scored and the weights with the best val
person-level mean CCC are kept (model selection on val; the test persons are never looked at
before the end).

Evaluation on the val and test persons (never seen in training): one centred crop of every clip
(clip-level metrics, N = persons × clips) and the mean of those predictions per person
(person-level, N = persons), MSE / PCC / CCC per trait (:mod:`models.metrics.personality`), and
the personalised reconstruction loss on val windows (generic, bundled enrolment path, this
model's) with the same noise.

Writes ``personality.safetensors`` and ``summary.json``; deterministic for a seed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.data import react_layout as rl
from models.data.dataset import ReactDataset
from models.data.io import DatasetError
from models.data.react_layout import TRAIT_NAMES
from models.data.torch_windows import WindowDataset
from models.face import layout
from models.generator.checkpoint import load_generator
from models.generator.denoiser import Denoiser
from models.generator.loss import diffusion_loss
from models.generator.schedule import alphas_cumprod
from models.metrics.personality import personality_metrics
from models.personal.checkpoint import load_personal
from models.personal.hyper import Factors, HyperNetwork, to_shifts
from models.personality.checkpoint import save_personality
from models.personality.model import PersonalityModel, variant_config
from models.train.generator import config_json, lr_factor, start_run

log = logging.getLogger(__name__)

PERSONALITY_FILE = "personality.safetensors"
SUMMARY_FILE = "summary.json"
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


@dataclass(frozen=True)
class TrainPersonalityConfig:
    data_root: str | Path
    out_dir: str | Path
    generator: str | Path = WEIGHTS / "generator.safetensors"
    """The frozen generic generator Θ."""
    personal: str | Path = WEIGHTS / "personality_start.safetensors"
    """Style encoder + hypernetwork the model's own copies start from: the first bundled
    enrolment path (the live one was later retrained without previous frames, ``make shifts``;
    starting from that one, with ``prev_drop=None``, gave a lower val CCC: mean over seeds 0 to
    2 0.43 against 0.47)."""
    variant: str = "full"
    """``full``, ``matrix-no-edges``, ``vector-gcn`` or ``direct`` (PersonalityConfig.variant)."""
    steps: int = 300
    """With statistics pooling 300 steps beat 600 on the val persons (mean CCC 0.42 against
    0.38; the longer run overfitted the 68 train persons after step 200)."""
    persons: int = 16
    """Persons per step (one crop each)."""
    windows: int = 2
    """Reconstruction windows per person per step."""
    lr: float = 1e-3
    """Peak LR of the graph network (or the direct head)."""
    lr_personal: float = 3e-4
    """Peak LR of the style encoder and hypernetwork copies (3e-4 beat 1e-4 on the val persons)."""
    warmup: int = 50
    style_stats: bool = True
    """Grow the style encoder copy with statistics pooling (``StyleEncoderConfig.stats``; its
    new layer trains at ``lr``): without it the 10-s style vector carried too little of the
    traits (val persons' mean PCC 0.26 for the full model)."""
    rec_weight: float = 1.0
    """Weight of the personalised reconstruction loss (0: trait loss only)."""
    aux_weight: float = 1.0
    """Weight of an auxiliary trait loss on the style vector the keys are made from, through a
    small head used only in training (graph variants only; the estimate still comes from the
    graph alone; 0: none). Chosen on the val persons over seeds 0 to 2: the full model's mean
    val CCC went from 0.41 (s.d. 0.11) without it to 0.47 (0.05) with 1; 3 was worse on seed 2."""
    prev_drop: float | None = 0.0
    """Share of reconstruction windows whose previous listener frames are hidden; ``None``: as
    the live sampler runs the generator (1 without feedback, 0 with it), the regime the bundled
    shifts are trained in (``TrainShiftsConfig.prev_drop``). 0 (the frames always present, as
    ``personal`` was trained) is what the bundled model was chosen with (see ``personal``)."""
    seconds: float = 10.0
    val_windows: int = 256
    eval_every: int = 50
    """Score the val persons every this many steps and keep the weights with the best val
    person-level mean CCC (0: keep the last weights)."""
    seed: int = 0
    device: str = "auto"
    feature_cache: str | Path | None = None
    sizes: dict[str, Any] = field(default_factory=dict)
    """Overrides of the model sizes: ``{"graph": {...}, "gnn": {...}, "max_crops": ...}``."""

    def __post_init__(self) -> None:
        if self.eval_every < 0:
            raise ValueError("eval_every must be non-negative")
        if min(self.steps, self.persons, self.windows) < 1:
            raise ValueError("steps, persons and windows must be at least 1")
        if self.lr <= 0 or min(self.lr_personal, self.rec_weight, self.aux_weight, self.warmup) < 0:
            raise ValueError("lr must be positive; lr_personal, rec_weight, aux_weight and "
                             "warmup non-negative")
        if self.prev_drop is not None and not 0.0 <= self.prev_drop <= 1.0:
            raise ValueError(f"prev_drop must be in [0, 1] or None, got {self.prev_drop}")
        variant_config(self.variant)  # an unknown variant fails here, before any work


@dataclass
class Person:
    """One person with known traits: their clips (valid frames) and reconstruction windows."""

    id: str
    traits: np.ndarray  # (5,)
    clips: dict[str, np.ndarray]  # clip path -> (T, 58) valid frames
    windows: dict[str, list[int]] = field(default_factory=dict)  # clip -> WindowDataset items


def load_persons(ds: ReactDataset, frames: int) -> list[Person]:
    """Every person of ``ds`` with traits and at least one clip of ``frames`` valid frames."""
    out = []
    for pid in ds.persons:
        traits = ds.traits(pid)
        if traits is None:
            raise DatasetError(f"{ds.root}: no traits.csv; personality needs known traits")
        clips = {}
        for path in ds.clips_of(pid):
            clip = ds.clip(path)
            x = clip.coeffs[clip.valid & clip.found].astype(np.float32)
            if len(x) >= frames:
                clips[path] = x
        if clips:
            out.append(Person(pid, traits.astype(np.float32), clips))
    return out


def attach_windows(persons: list[Person], windows: WindowDataset) -> None:
    """Index the windows in which each person is the one reacting, by their clip."""
    by_id = {p.id: p for p in persons}
    ds = windows.dataset
    for k, (i, _) in enumerate(windows.starts):
        clip = ds.pair_clips(i)[1]
        person = by_id.get(rl.person_id(clip))
        if person is not None:
            person.windows.setdefault(clip, []).append(k)


def _crop(x: np.ndarray, frames: int, rng: np.random.Generator | None) -> np.ndarray:
    start = (len(x) - frames) // 2 if rng is None else int(rng.integers(len(x) - frames + 1))
    return x[start: start + frames]


def _repeat(factors: Factors, times: int) -> Factors:
    """Each person's factors repeated for their ``times`` windows (B → B · times)."""
    return {n: (a.repeat_interleave(times, 0), b.repeat_interleave(times, 0))
            for n, (a, b) in factors.items()}  # fmt: skip


def _collate(windows: WindowDataset, items: list[int], device: torch.device) -> dict:
    rows = [windows[k] for k in items]
    batch = {k: torch.stack([r[k] for r in rows]).to(device) for k in rows[0]}
    batch.pop("index"), batch.pop("t")
    return batch


@torch.no_grad()
def predict_persons(model: PersonalityModel, generator: Denoiser, persons: list[Person],
                    frames: int, device: torch.device, batch: int = 32
                    ) -> dict[str, Any]:  # fmt: skip
    """Clip-level and person-level predictions on one centred crop of every clip."""
    model.eval()
    crops, owner = [], []
    for j, p in enumerate(persons):
        for x in p.clips.values():
            crops.append(_crop(x, frames, None))
            owner.append(j)
    x = torch.from_numpy(np.stack(crops))
    preds = torch.cat([model(x[s: s + batch].to(device), generator)[0].cpu()
                       for s in range(0, len(x), batch)]).numpy()  # (M, 5)
    owner_a = np.asarray(owner)
    truth = np.stack([p.traits for p in persons])  # (P, 5)
    per_person = np.stack([preds[owner_a == j].mean(0) for j in range(len(persons))])
    return {"clip_pred": preds, "clip_true": truth[owner_a], "person_pred": per_person,
            "person_true": truth}  # fmt: skip


def score(pred: dict[str, Any]) -> dict[str, Any]:
    return {"clip": personality_metrics(pred["clip_pred"], pred["clip_true"]),
            "person": personality_metrics(pred["person_pred"], pred["person_true"])}


def _step(model: PersonalityModel, generator: Denoiser, batch_persons: list[Person],
          cfg: TrainPersonalityConfig, frames: int, windows: WindowDataset | None,
          rng: np.random.Generator, ac: torch.Tensor, noise: torch.Generator,
          device: torch.device, aux: nn.Module | None = None
          ) -> tuple[torch.Tensor, float, float]:  # fmt: skip
    """The joint loss of one batch of persons, its trait part and reconstruction part."""
    crops, items = [], []
    for p in batch_persons:
        names = sorted(p.clips)
        source = names[int(rng.integers(len(names)))]
        crops.append(_crop(p.clips[source], frames, rng))
        pool = [k for c, ks in p.windows.items() if c != source for k in ks]
        pool = pool or [k for ks in p.windows.values() for k in ks]
        if pool:
            items += [pool[int(rng.integers(len(pool)))] for _ in range(cfg.windows)]
    x = torch.from_numpy(np.stack(crops)).to(device)
    truth = torch.from_numpy(np.stack([p.traits for p in batch_persons])).to(device)
    traits, factors, z = model.forward_style(x, generator)
    trait_loss = torch.mean((traits - truth) ** 2)
    loss, rec = trait_loss, float("nan")
    if aux is not None:
        loss = loss + cfg.aux_weight * torch.mean((torch.sigmoid(aux(z)) - truth) ** 2)
    if factors is not None and cfg.rec_weight > 0 and windows is not None:
        if len(items) != cfg.windows * len(batch_persons):
            raise DatasetError("a train person has no reconstruction window")
        shifts = to_shifts(_repeat(factors, cfg.windows))
        rec_loss = diffusion_loss(generator, _collate(windows, items, device), ac, noise, shifts,
                                  prev_drop=live_prev_drop(cfg.prev_drop, generator))
        loss = loss + cfg.rec_weight * rec_loss
        rec = rec_loss.item()
    return loss, trait_loss.item(), rec


def live_prev_drop(prev_drop: float | None, generator: Denoiser) -> float:
    """``prev_drop``, or for ``None`` the live sampler's regime: 1 without feedback, else 0."""
    if prev_drop is not None:
        return prev_drop
    return 0.0 if generator.config.sample_feedback else 1.0


@torch.no_grad()
def reconstruction_check(generator: Denoiser, persons: list[Person], windows: WindowDataset,
                         paths: dict[str, tuple[Any, HyperNetwork]], frames: int, count: int,
                         seed: int, device: torch.device, prev_drop: float = 0.0
                         ) -> dict[str, float]:  # fmt: skip
    """Diffusion loss on ``count`` val windows with the same noise: generic and with each
    enrolment path's key (style from a crop of another clip of the same person)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for p in persons:
        for clip, ks in p.windows.items():
            others = [c for c in p.clips if c != clip] or list(p.clips)
            pairs += [(k, p.clips[others[int(rng.integers(len(others)))]]) for k in ks]
    if not pairs:
        return {}
    pick = rng.choice(len(pairs), size=min(count, len(pairs)), replace=False)
    items = [pairs[i][0] for i in pick]
    crops = torch.from_numpy(np.stack([_crop(pairs[i][1], frames, None) for i in pick]))
    ac = alphas_cumprod(generator.config.diffusion_steps, generator.config.schedule_offset)
    out = {}
    for name, (style, hyper) in {"generic": (None, None), **paths}.items():
        total = 0.0
        noise = torch.Generator(device=device).manual_seed(seed)
        for s in range(0, len(items), 64):
            batch = _collate(windows, items[s: s + 64], device)
            shifts = None
            if style is not None:
                shifts = to_shifts(hyper(style(crops[s: s + 64].to(device))))
            n = len(items[s: s + 64])
            total += diffusion_loss(generator, batch, ac.to(device), noise, shifts,
                                    prev_drop=prev_drop).item() * n
        out[name] = total / len(items)
    return out


def train_personality(cfg: TrainPersonalityConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train one variant; returns the summary it writes."""
    start = time.perf_counter()
    device, out = start_run(cfg.data_root, cfg.out_dir, cfg.device)
    frames = int(round(cfg.seconds * layout.FPS))
    generator, _ = load_generator(cfg.generator, device=device)
    generator.eval()
    for p in generator.parameters():
        p.requires_grad_(False)
    style, hyper, _ = load_personal(cfg.personal, device=device)
    if hyper is None:
        raise ValueError(f"{cfg.personal}: holds no hypernetwork")
    cache = Path(cfg.feature_cache) if cfg.feature_cache else None
    data = {s: ReactDataset(cfg.data_root, s, cache_dir=cache, cache_clips=4096)
            for s in ("train", "val", "test")}  # fmt: skip
    persons = {s: load_persons(ds, frames) for s, ds in data.items()}
    g = generator.config
    cognitive = variant_config(cfg.variant).cognition
    windows = {s: WindowDataset(data[s], w=g.window, context=g.context, prev=g.prev)
               for s in (("train", "val") if cognitive else ("val",))}  # fmt: skip
    for s, w in windows.items():
        attach_windows(persons[s], w)
    train = persons["train"]
    if len(train) < 2:
        raise DatasetError(f"{cfg.data_root}: {len(train)} train persons with traits")
    rng = np.random.default_rng(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model_cfg = variant_config(cfg.variant, **copy.deepcopy(cfg.sizes), seconds=cfg.seconds)
        own_style = style.with_stats() if cfg.style_stats else copy.deepcopy(style)
        model = PersonalityModel(model_cfg, own_style, copy.deepcopy(hyper),
                                 generator).to(device)  # fmt: skip
        stats_crops = np.stack([_crop(x, frames, None) for p in train for x in p.clips.values()])
        model.set_stats(torch.from_numpy(stats_crops[:: max(1, len(stats_crops) // 256)])
                        .to(device), generator)  # fmt: skip
        aux = None
        if cognitive and cfg.aux_weight > 0:
            h = model_cfg.direct_hidden
            aux = nn.Sequential(nn.Linear(own_style.config.style_dim, h), nn.GELU(),
                                nn.Linear(h, model_cfg.gnn.traits)).to(device)  # fmt: skip
        grown = ("style.stats_in.",)  # new layers learn at the graph network's rate
        personal = [p for n, p in model.named_parameters()
                    if n.startswith(("style.", "hyper.")) and not n.startswith(grown)]
        own = [p for n, p in model.named_parameters()
               if not n.startswith(("style.", "hyper.")) or n.startswith(grown)]
        own += [] if aux is None else list(aux.parameters())
        opt = torch.optim.AdamW([{"params": own, "lr": cfg.lr},
                                 {"params": personal, "lr": cfg.lr_personal}],
                                weight_decay=0.01)  # fmt: skip
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, cfg.steps, cfg.warmup))
        noise = torch.Generator(device=device).manual_seed(cfg.seed)
        ac = alphas_cumprod(g.diffusion_steps, g.schedule_offset).to(device)
        bar = tqdm(range(cfg.steps), desc=f"personality {cfg.variant}", unit="step",
                   disable=not progress)  # fmt: skip
        ema: dict[str, float] = {}
        best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        curve: list[dict[str, float]] = []
        for step in bar:
            model.train()
            pick = rng.choice(len(train), size=min(cfg.persons, len(train)), replace=False)
            loss, trait, rec = _step(model, generator, [train[i] for i in pick], cfg, frames,
                                     windows.get("train"), rng, ac, noise, device,
                                     aux)  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"non-finite loss at step {step}")
            for k, v in (("trait", trait), ("rec", rec)):
                if math.isfinite(v):
                    ema[k] = v if k not in ema else 0.98 * ema[k] + 0.02 * v
            bar.set_postfix({k: f"{v:.4f}" for k, v in ema.items()})
            done = step + 1
            if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                val = score(predict_persons(model, generator, persons["val"], frames, device))
                ccc = val["person"]["mean_ccc"]
                curve.append({"step": done, "val_ccc": ccc, "val_mse": val["person"]["mean_mse"],
                              "val_pcc": val["person"]["mean_pcc"], **ema})  # fmt: skip
                if best is None or ccc > best[0]:
                    best = (ccc, done, copy.deepcopy(model.state_dict()))
        if best is not None:
            model.load_state_dict(best[2])
        model.eval()
        train_seconds = time.perf_counter() - start
        preds = {s: predict_persons(model, generator, persons[s], frames, device)
                 for s in ("val", "test")}  # fmt: skip
        metrics = {s: score(p) for s, p in preds.items()}
        mean = np.stack([p.traits for p in train]).mean(0)
        test_truth = preds["test"]["person_true"]
        metrics["test_mean_predictor"] = personality_metrics(
            np.broadcast_to(mean, test_truth.shape), test_truth)
        rec_val = {}
        if cognitive:
            rec_val = reconstruction_check(
                generator, persons["val"], windows["val"],
                {"bundled": (style, hyper), "joint": (model.style, model.hyper)}, frames,
                cfg.val_windows, cfg.seed, device,
                live_prev_drop(cfg.prev_drop, generator))  # fmt: skip
    seconds = time.perf_counter() - start
    sizes = {s: {"persons": len(persons[s]), "clips": sum(len(p.clips) for p in persons[s])}
             for s in persons}  # fmt: skip
    extra = {"recipe": "personality", "variant": cfg.variant, "seed": cfg.seed,
             "steps": cfg.steps, "seconds": round(seconds, 1),
             "train_seconds": round(train_seconds, 1), "loss_ema": ema, "metrics": metrics,
             "selected_step": cfg.steps if best is None else best[1], "val_curve": curve,
             "reconstruction_val": rec_val, "samples": sizes, "traits": list(TRAIT_NAMES),
             "config": config_json(cfg)}  # fmt: skip
    save_personality(model, out / PERSONALITY_FILE, extra)
    summary = {**extra, "model": str(out / PERSONALITY_FILE), "version": model.version(),
               "device": str(device),
               "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=float) + "\n")
    log.info("personality %s: test person-level mean PCC %.3f, CCC %.3f, MSE %.4f (%.0f s)",
             cfg.variant, metrics["test"]["person"]["mean_pcc"],
             metrics["test"]["person"]["mean_ccc"], metrics["test"]["person"]["mean_mse"],
             seconds)  # fmt: skip
    return summary


def _train_one(cfg: TrainPersonalityConfig) -> dict[str, Any]:
    """One run in a worker process, one torch thread."""
    torch.set_num_threads(1)
    return train_personality(cfg, progress=False)


def train_many(cfgs: list[TrainPersonalityConfig], jobs: int = 1) -> list[dict[str, Any]]:
    """Train every config, ``jobs`` runs side by side in worker processes (one torch thread
    each); the summaries in the order given."""
    if jobs < 1:
        raise ValueError("jobs must be at least 1")
    if jobs == 1:
        return [train_personality(c, progress=False) for c in cfgs]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        return list(pool.map(_train_one, cfgs))


def train_personality_seeds(cfg: TrainPersonalityConfig, seeds: list[int], jobs: int = 1
                            ) -> dict[str, Any]:  # fmt: skip
    """Train ``cfg`` once per seed (runs in ``out_dir/seed<S>``) and return the summary of the
    run with the best val person-level mean CCC, with every candidate's val and test figures
    under ``"seed_selection"``. Test figures are reported, never used to choose."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: expected distinct seeds, got {seeds}")
    out = Path(cfg.out_dir)
    cfgs = [dataclasses.replace(cfg, seed=s, out_dir=out / f"seed{s}") for s in seeds]
    log.info("personality: training seeds %s, %d at a time, without progress bars (runs in "
             "%s/seed<S>)", seeds, jobs, out)  # fmt: skip
    summaries = train_many(cfgs, jobs)
    rows = [{"seed": r["seed"], "val_ccc": r["metrics"]["val"]["person"]["mean_ccc"],
             "val_pcc": r["metrics"]["val"]["person"]["mean_pcc"],
             "test_pcc": r["metrics"]["test"]["person"]["mean_pcc"],
             "test_ccc": r["metrics"]["test"]["person"]["mean_ccc"], "version": r["version"],
             "seconds": r["seconds"]} for r in summaries]  # fmt: skip
    scores = [r["val_ccc"] if math.isfinite(r["val_ccc"]) else -math.inf for r in rows]
    best = max(range(len(rows)), key=scores.__getitem__)  # the first of any tie
    summary = {**summaries[best], "seed_selection": rows,
               "seconds_all_seeds": round(sum(r["seconds"] for r in rows), 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=float) + "\n")
    log.info("personality: seed %d chosen on val (CCC %.3f) of %s", rows[best]["seed"],
             rows[best]["val_ccc"], [r["seed"] for r in rows])  # fmt: skip
    return summary
