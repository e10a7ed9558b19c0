"""Recipe: train the generator's denoiser on online windows of a REACT-layout tree.

:func:`train_generator` is flat: set up (datasets, normalisation statistics, model, optimiser),
train, save, clean up. Everything it writes goes to ``cfg.out_dir``:

- ``last.safetensors``: the model (:func:`models.generator.checkpoint.save_generator`) every
  ``checkpoint_every`` steps and at the end; ``last.train.pt``: optimiser, LR scheduler, step,
  loss EMA and RNG states (``torch.save``) for resuming. Both are written atomically.
- ``generator.safetensors``: the final model; ``summary.json``; ``log.jsonl`` (one line per
  ``log_every`` steps).

Statistics: audio and face means/stds over the valid frames of the train split's clips (at most
``stats_max_clips`` clips, drawn with the seed) are set on the model before training
(:meth:`Denoiser.set_audio_stats`, :meth:`Denoiser.set_face_stats`).

Determinism: the model's initialisation and dropout use the global torch RNG inside a
:func:`torch.random.fork_rng` scope seeded with ``cfg.seed`` (the caller's RNG state is left
as it was); diffusion steps and noise come from a dedicated ``torch.Generator``; the window
order is a fixed function of the seed and the step (epoch ``e`` is a permutation drawn from
``seed + e``). A run resumed from ``out_dir`` therefore ends with the same weights as an
uninterrupted one (on the same device and thread count).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, Subset
from tqdm import tqdm

from models.data import react_layout as rl
from models.data.dataset import ReactDataset
from models.data.io import DatasetError
from models.data.torch_windows import WindowDataset
from models.device import resolve_device
from models.generator.checkpoint import load_generator, save_generator
from models.generator.config import GeneratorConfig, default_config, tiny_config
from models.generator.denoiser import Denoiser
from models.generator.loss import diffusion_loss
from models.generator.rollout import self_generated_prev, split_history
from models.generator.schedule import alphas_cumprod

log = logging.getLogger(__name__)

BUILDERS = {"default": default_config, "tiny": tiny_config}
"""Generator configs a :class:`TrainGeneratorConfig` may name instead of giving one."""

MODEL_FILE = "last.safetensors"
STATE_FILE = "last.train.pt"
FINAL_FILE = "generator.safetensors"
SUMMARY_FILE = "summary.json"
LOG_FILE = "log.jsonl"

RUN_ONLY_FIELDS = ("out_dir", "device", "num_workers", "log_every", "checkpoint_every",
                   "resume", "feature_cache")  # fmt: skip
"""Fields a resumed run may change; any other difference from the saved run is an error."""


@dataclass(frozen=True)
class TrainGeneratorConfig:
    data_root: str | Path
    """A REACT-layout tree (``ReactDataset``) with a ``train`` split."""
    out_dir: str | Path
    generator: GeneratorConfig | str = "default"
    """A :class:`GeneratorConfig` or the name of a builder in :data:`BUILDERS`."""
    steps: int = 20_000
    batch_size: int = 64
    lr: float = 3e-4
    """Peak learning rate (after warmup; cosine decay to 0 at ``steps``)."""
    weight_decay: float = 0.01
    """AdamW decay of the linear weights (not biases, norms or embeddings)."""
    warmup: int = 500
    """Steps of linear warmup from ``lr / warmup`` to ``lr``."""
    grad_clip: float = 1.0
    """Max gradient norm; 0 turns clipping off."""
    cond_drop: float = 0.1
    """Share of windows trained without the speaker context (for classifier-free guidance)."""
    prev_noise: float = 0.5
    """Largest noise (in diffusion-space units) added to the previous listener frames."""
    prev_drop: float = 0.1
    """Share of windows trained without the previous listener frames."""
    high_noise: float = 0.0
    """Share of windows trained at a step from the noisier half of the schedule only."""
    rollout: float = 0.0
    """Share of windows whose previous frames are the model's own output over the
    ``rollout_depth`` windows before them (:mod:`models.generator.rollout`), as live."""
    rollout_depth: int = 2
    """Windows replayed before a rollout window."""
    rollout_steps: int = 2
    """Sampler steps of the replay (the live few-step sampler)."""
    rollout_guidance: float = 1.0
    """Guidance scale of the replay."""
    seed: int = 0
    device: str = "auto"
    """``"auto"`` (cuda if available, else cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``..."""
    num_workers: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000
    stride: int | None = None
    """Frames between window starts (default: the generator's window)."""
    max_train_samples: int | None = None
    """Use only the first this many train samples (smoke tests)."""
    stats_max_clips: int = 256
    """At most this many clips (drawn with the seed) for the normalisation statistics."""
    cache_clips: int = 1024
    """Clips each dataset keeps in memory (a window reads two)."""
    feature_cache: str | Path | None = None
    """Folder for the audio features (``ReactDataset(cache_dir=...)``); none: recompute."""
    loss_ema: float = 0.98
    """Decay of the reported train loss EMA."""
    resume: bool = True
    """Continue from ``out_dir``'s checkpoint when there is one; ``False``: refuse a folder
    that holds one."""

    def __post_init__(self) -> None:
        if isinstance(self.generator, str) and self.generator not in BUILDERS:
            raise ValueError(f"generator must be a GeneratorConfig or one of {list(BUILDERS)}, "
                             f"got {self.generator!r}")  # fmt: skip
        positive = {"steps": self.steps, "batch_size": self.batch_size,
                    "log_every": self.log_every, "checkpoint_every": self.checkpoint_every,
                    "stats_max_clips": self.stats_max_clips, "cache_clips": self.cache_clips}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0 or self.warmup < 0:
            raise ValueError("lr must be positive; weight_decay, grad_clip, warmup non-negative")
        if self.num_workers < 0 or self.seed < 0:
            raise ValueError("num_workers and seed must be non-negative")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be at least 1, got {self.stride}")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"max_train_samples must be at least 1, got {self.max_train_samples}")
        if not (0.0 <= self.cond_drop < 1.0 and 0.0 <= self.prev_drop < 1.0):
            raise ValueError("cond_drop and prev_drop must be in [0, 1)")
        if self.prev_noise < 0:
            raise ValueError(f"prev_noise must be non-negative, got {self.prev_noise}")
        if not 0.0 <= self.high_noise <= 1.0:
            raise ValueError(f"high_noise must be in [0, 1], got {self.high_noise}")
        if not 0.0 <= self.rollout <= 1.0:
            raise ValueError(f"rollout must be in [0, 1], got {self.rollout}")
        if self.rollout_depth < 1 or not 1 <= self.rollout_steps <= 8:
            raise ValueError("rollout_depth must be at least 1 and rollout_steps in 1..8")
        if not 0.0 <= self.rollout_guidance <= 10.0:
            raise ValueError(f"rollout_guidance must be in [0, 10], got {self.rollout_guidance}")
        if not 0.0 <= self.loss_ema < 1.0:
            raise ValueError(f"loss_ema must be in [0, 1), got {self.loss_ema}")

    @property
    def generator_config(self) -> GeneratorConfig:
        g = self.generator
        return BUILDERS[g]() if isinstance(g, str) else g

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with the generator config resolved."""
        out = dataclasses.asdict(self)
        out["generator"] = self.generator_config.to_dict()
        out["data_root"], out["out_dir"] = str(self.data_root), str(self.out_dir)
        if self.feature_cache is not None:
            out["feature_cache"] = str(self.feature_cache)
        return out


def config_json(cfg: Any) -> dict[str, Any]:
    """A recipe config as JSON-ready values (paths as strings), as summaries store it."""
    if hasattr(cfg, "to_json"):
        return cfg.to_json()
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def start_run(data_root: str | Path, out_dir: str | Path, device: str,
              split: str = "train") -> tuple[torch.device, Path]:  # fmt: skip
    """The common set-up of a recipe: check the data tree, resolve the device, create the run
    folder (in that order, so a bad tree or device leaves nothing behind)."""
    require_tree(data_root, split)
    dev = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return dev, out


def require_tree(root: str | Path, split: str = "train") -> None:
    """A clear error when ``root`` is not a REACT-layout tree with ``split``."""
    pairs_csv = rl.SplitPaths(Path(root), split).pairs_csv
    if not pairs_csv.is_file():
        raise DatasetError(f"{root}: not a REACT-layout tree with a {split} split "
                           f"(no {pairs_csv}); make one with `rapport world make` or "
                           "`rapport data prepare`")  # fmt: skip


class StepSampler(Sampler[int]):
    """An endless stream of dataset indices from position ``start``: epoch ``e`` is a
    permutation drawn from ``seed + e``, so position ``k`` (step ``k // batch``) does not
    depend on where a run started."""

    def __init__(self, n: int, seed: int, start: int = 0) -> None:
        self.n, self.seed, self.start = n, seed, start

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.n)
        while True:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.n, generator=gen).tolist()
            yield from order[offset:]
            epoch, offset = epoch + 1, 0


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Multiplier of the peak LR at optimiser step ``step`` (0-based): linear warmup, cosine
    decay to 0 at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def data_stats(dataset: ReactDataset, samples: list[int], max_clips: int, seed: int
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:  # fmt: skip
    """Per-feature means/stds of face coefficients and audio features over the valid frames of
    the clips of ``samples`` (at most ``max_clips``, drawn with ``seed``), and their provenance."""
    clips = sorted({c for i in samples for c in dataset.pair_clips(i)})
    if len(clips) > max_clips:
        pick = np.random.default_rng(seed).choice(len(clips), size=max_clips, replace=False)
        clips = [clips[k] for k in sorted(pick)]
    sums = {"face": [0.0, 0.0, 0], "audio": [0.0, 0.0, 0]}  # sum, sum of squares, frames
    for path in clips:
        clip = dataset.clip(path)
        rows = {"face": clip.coeffs[clip.valid & clip.found]}
        if clip.audio_features is not None and clip.audio_valid is not None:
            rows["audio"] = clip.audio_features[clip.valid & clip.audio_valid]
        for key, x in rows.items():
            x = x.astype(np.float64)
            acc = sums[key]
            acc[0] = acc[0] + x.sum(axis=0)
            acc[1] = acc[1] + (x * x).sum(axis=0)
            acc[2] += len(x)
    out: dict[str, torch.Tensor] = {}
    for key, (s, sq, n) in sums.items():
        if n == 0:
            raise DatasetError(f"{dataset.root}: no valid {key} frames in the {len(clips)} train "
                               "clips used for the normalisation statistics")  # fmt: skip
        mean = s / n
        std = np.sqrt(np.maximum(sq / n - mean * mean, 0.0))
        out[f"{key}_mean"] = torch.from_numpy(mean).to(torch.float32)
        out[f"{key}_std"] = torch.from_numpy(std).to(torch.float32)
    provenance = {"split": dataset.split, "clips": len(clips), "face_frames": sums["face"][2],
                  "audio_frames": sums["audio"][2]}  # fmt: skip
    return out, provenance


def _param_groups(model: Denoiser, weight_decay: float) -> list[dict[str, Any]]:
    decay, plain = [], []
    for name, p in model.named_parameters():
        is_linear_weight = name.endswith(".weight") and p.ndim == 2
        (decay if is_linear_weight else plain).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def _save_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fork_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def train_generator(cfg: TrainGeneratorConfig, *, progress: bool = True,
                    stop_at: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Train (or resume) the denoiser ``cfg`` describes; returns the summary it writes.

    ``stop_at``: leave after this step with a checkpoint, as an interrupted run would (tests,
    time-sliced jobs); the returned summary then has ``"finished": False``.
    """
    start_time = time.perf_counter()
    gcfg = cfg.generator_config
    device = resolve_device(cfg.device)
    out = Path(cfg.out_dir)
    root = Path(cfg.data_root)
    require_tree(root)
    out.mkdir(parents=True, exist_ok=True)
    model_path, state_path = out / MODEL_FILE, out / STATE_FILE
    if state_path.exists() and not cfg.resume:
        raise FileExistsError(f"{out} holds a training checkpoint ({STATE_FILE}); resume it or "
                              "choose another out_dir")  # fmt: skip

    # -- set up: data ----------------------------------------------------------------------------
    cache = Path(cfg.feature_cache) if cfg.feature_cache else None
    train = ReactDataset(root, "train", cache_dir=cache, cache_clips=cfg.cache_clips)
    samples = list(range(len(train)))
    if cfg.max_train_samples is not None:
        samples = samples[: cfg.max_train_samples]
    history = cfg.rollout_depth * gcfg.window if cfg.rollout > 0 else 0
    windows = WindowDataset(train, w=gcfg.window, stride=cfg.stride, context=gcfg.context,
                            prev=gcfg.prev, history=history)  # fmt: skip
    chosen = set(samples)
    keep = [k for k, (i, _) in enumerate(windows.starts) if i in chosen]
    if not keep:
        raise DatasetError(f"{root}: the train split has no windows")
    data = Subset(windows, keep)

    with torch.random.fork_rng(devices=_fork_devices(device)):
        torch.manual_seed(cfg.seed)  # scoped: init and dropout; restored on leaving

        # -- set up: model, optimiser, state -----------------------------------------------------
        model = Denoiser(gcfg)
        noise_gen = torch.Generator(device=device).manual_seed(cfg.seed)
        step, loss_ema, resumed_from = 0, None, None
        stats_info: dict[str, Any]
        if state_path.exists():
            try:
                state = torch.load(state_path, map_location="cpu", weights_only=True)
            except Exception as err:  # torch raises several kinds for a damaged file
                raise ValueError(f"{state_path}: unreadable training state ({err}); delete "
                                 f"it and {MODEL_FILE} to start again") from err
            _check_resume(cfg, state, state_path)
            loaded, meta = load_generator(model_path, config=gcfg)
            if meta["extra"].get("step") != state["step"]:
                raise ValueError(f"{out}: {MODEL_FILE} is from step {meta['extra'].get('step')} "
                                 f"but {STATE_FILE} from step {state['step']} (interrupted "
                                 "while saving?); delete both to start again")  # fmt: skip
            model.load_state_dict(loaded.state_dict())
            stats_info = meta["extra"]["stats"]
            step = resumed_from = int(state["step"])
            loss_ema = state["loss_ema"]
        else:
            stats, stats_info = data_stats(train, samples, cfg.stats_max_clips, cfg.seed)
            model.set_audio_stats(stats["audio_mean"], stats["audio_std"])
            model.set_face_stats(stats["face_mean"], stats["face_std"])
            state = None
        model.to(device).train()
        optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, cfg.steps, cfg.warmup))
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            noise_gen.set_state(state["noise_rng"])
            torch.set_rng_state(state["torch_rng"])
            if device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
        ac = alphas_cumprod(gcfg.diffusion_steps, gcfg.schedule_offset).to(device)
        loader = DataLoader(data, batch_size=cfg.batch_size,
                            sampler=StepSampler(len(data), cfg.seed, step * cfg.batch_size),
                            num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                            generator=torch.Generator().manual_seed(cfg.seed),
                            persistent_workers=False)  # fmt: skip

        def checkpoint() -> None:
            extra = {"step": step, "seed": cfg.seed, "stats": stats_info,
                     "train_config": cfg.to_json()}  # fmt: skip
            save_generator(model, model_path, extra)
            _save_state(state_path, {
                "step": step, "loss_ema": loss_ema, "config": cfg.to_json(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "noise_rng": noise_gen.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            })  # fmt: skip

        # -- train -------------------------------------------------------------------------------
        end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
        run_start, run_steps = time.perf_counter(), 0
        batches = iter(loader)
        bar = tqdm(total=cfg.steps, initial=step, desc="generator", unit="step",
                   disable=not progress)  # fmt: skip
        try:
            with open(out / LOG_FILE, "a") as log_file:
                while step < end:
                    batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
                    batch, own_prev = _with_rollout(model, batch, cfg, noise_gen)
                    loss = diffusion_loss(model, batch, ac, noise_gen, cond_drop=cfg.cond_drop,
                                          prev_noise=cfg.prev_noise, prev_drop=cfg.prev_drop,
                                          clean_prev=own_prev,
                                          high_noise=cfg.high_noise)  # fmt: skip
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    step, run_steps = step + 1, run_steps + 1
                    value = loss.item()
                    if not math.isfinite(value):
                        raise FloatingPointError(f"non-finite loss {value} at step {step}")
                    loss_ema = value if loss_ema is None else (
                        cfg.loss_ema * loss_ema + (1 - cfg.loss_ema) * value)
                    bar.update(1)
                    if step % cfg.log_every == 0 or step == end:
                        lr = scheduler.get_last_lr()[0]
                        bar.set_postfix(loss=f"{loss_ema:.4f}", lr=f"{lr:.2e}")
                        log_file.write(json.dumps({"step": step, "loss": value,
                                                   "loss_ema": loss_ema, "lr": lr}) + "\n")
                        log_file.flush()
                    if step % cfg.checkpoint_every == 0 and step != end:
                        checkpoint()
        finally:
            bar.close()
            del batches  # shut the loader's workers down
        checkpoint()
    # -- save ------------------------------------------------------------------------------------
    run_seconds = time.perf_counter() - run_start
    finished = step >= cfg.steps
    if finished:
        save_generator(model, out / FINAL_FILE, {"step": step, "seed": cfg.seed,
                                                 "stats": stats_info,
                                                 "train_config": cfg.to_json()})  # fmt: skip
    summary = {
        "finished": finished, "steps": step, "resumed_from": resumed_from,
        "final_loss_ema": loss_ema, "seconds": time.perf_counter() - start_time,
        "train_seconds": run_seconds,
        "steps_per_s": run_steps / run_seconds if run_steps and run_seconds > 0 else None,
        "device": str(device), "seed": cfg.seed, "train_windows": len(data),
        "train_samples": len(samples), "parameters": sum(p.numel() for p in model.parameters()),
        "stats": stats_info, "model": str(out / (FINAL_FILE if finished else MODEL_FILE)),
        "config": cfg.to_json(),
    }  # fmt: skip
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    log.info("generator: %d steps, loss EMA %s, %.1f s", step, loss_ema, summary["seconds"])
    return summary


def _with_rollout(model: Denoiser, batch: dict[str, torch.Tensor], cfg: TrainGeneratorConfig,
                  generator: torch.Generator
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:  # fmt: skip
    """The batch for the window at ``t``, a ``cfg.rollout`` share of its windows (drawn from
    ``generator``) with the model's own previous frames; and which windows those are."""
    if cfg.rollout <= 0:
        return batch, None
    plain = split_history(batch, model, cfg.rollout_depth)
    b = plain["target"].shape[0]
    own = (torch.rand(b, generator=generator, device=generator.device) < cfg.rollout)
    own = own.to(plain["target"].device)
    if own.any():
        sub = {k: v[own] for k, v in batch.items()}
        prev, prev_ok = self_generated_prev(model, sub, cfg.rollout_depth,
                                            steps=cfg.rollout_steps,
                                            guidance=cfg.rollout_guidance, generator=generator)
        plain["listener_prev"] = plain["listener_prev"].clone()
        plain["prev_valid"] = plain["prev_valid"].clone()
        plain["listener_prev"][own] = prev
        plain["prev_valid"][own] = prev_ok.to(plain["prev_valid"].dtype)
    return plain, own


def _check_resume(cfg: TrainGeneratorConfig, state: dict[str, Any], path: Path) -> None:
    """A resumed run must train the same thing: only :data:`RUN_ONLY_FIELDS` may differ."""
    saved, now = state.get("config", {}), cfg.to_json()
    diff = {k: (saved.get(k), now[k]) for k in now
            if k not in RUN_ONLY_FIELDS and saved.get(k) != now[k]}  # fmt: skip
    if diff:
        raise ValueError(f"{path}: cannot resume, the config differs from the saved run "
                         f"(field: saved, now): {diff}")  # fmt: skip
