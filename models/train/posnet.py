"""Recipe: train PosNet on the frozen generator's own online output.

1. The frozen generator streams ``samples`` train speaker clips online (``k`` reactions each,
   window after window, exactly as live, without PosNet) and the pose dims of the result are
   kept: ``(R, T, 6)`` sequences whose seams carry the generator's real window-to-window jumps.
2. PosNet is trained recurrently on random stretches of ``unroll`` consecutive windows: the
   first window's predecessor is the generator's own previous window; every later window sees
   the last adjusted frames of the one before (as at run time), and the loss
   (:func:`~models.posnet.losses.posnet_loss`: seam, first/second differences, fidelity) is
   averaged over the stretch.
3. The same is done for ``val`` split clips, and the report compares the pose's seam/inside
   velocity ratio (:func:`~models.metrics.smoothness.seam_jumps`) before and after PosNet, and
   how far PosNet moved the pose.

Writes ``posnet.safetensors`` (:func:`~models.posnet.model.save_posnet`) and ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models.data.dataset import ReactDataset
from models.face import layout
from models.generator.checkpoint import load_generator
from models.generator.predict import GeneratorPredictor
from models.metrics.smoothness import seam_jumps
from models.posnet.losses import PosNetLossConfig, posnet_loss
from models.posnet.model import PosNet, PosNetConfig, save_posnet
from models.posnet.runner import smooth_step
from models.train.generator import config_json, lr_factor, start_run

log = logging.getLogger(__name__)

POSNET_FILE = "posnet.safetensors"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class TrainPosNetConfig:
    data_root: str | Path
    out_dir: str | Path
    generator: str | Path
    samples: int = 64
    """Train speaker clips the generator streams (the first ones of a seeded shuffle)."""
    val_samples: int = 24
    k: int = 2
    """Reactions generated per clip."""
    steps: int = 1500
    batch_size: int = 32
    unroll: int = 6
    """Consecutive windows per training stretch."""
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("samples", "val_samples", "k", "steps", "batch_size", "unroll"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.lr <= 0:
            raise ValueError("lr must be positive")


def generate_poses(generator_path: str | Path, data_root: str | Path, split: str, samples: int,
                   k: int, seed: int, device: torch.device) -> np.ndarray:  # fmt: skip
    """``(samples · k, T, 6)`` pose of the generator's online reactions (no PosNet)."""
    model, _ = load_generator(generator_path, device=device)
    ds = ReactDataset(data_root, split)
    order = np.random.default_rng(seed).permutation(len(ds))[:samples]
    predictor = GeneratorPredictor(model, None, k=k, device=str(device))
    preds = predictor.predict_many([ds[int(i)] for i in order], np.random.default_rng(seed))
    frames = min(p.shape[1] for p in preds)
    return np.concatenate([p[:, :frames, layout.POSE] for p in preds]).astype(np.float32)


@torch.no_grad()
def apply_posnet(posnet: PosNet, pose: np.ndarray) -> np.ndarray:
    """Run PosNet over whole ``(R, T, 6)`` pose sequences window by window, as the online runner
    does (the first window passes through); returns the adjusted pose."""
    w, h = posnet.config.window, posnet.config.history
    r, t = pose.shape[:2]
    device = next(posnet.parameters()).device
    frames = torch.zeros(r, w, layout.DIM, device=device)
    history = torch.zeros(r, h, 6, device=device)
    valid = torch.zeros(r, dtype=torch.bool, device=device)
    out = []
    for start in range(0, t - t % w, w):
        frames[..., layout.POSE] = torch.from_numpy(pose[:, start: start + w]).to(device)
        adjusted, history, valid = smooth_step(posnet, frames, history, valid)
        out.append(adjusted[..., layout.POSE].cpu().numpy())
    return np.concatenate(out, axis=1)


def smoothness_report(raw: np.ndarray, adjusted: np.ndarray, window: int) -> dict[str, Any]:
    """Seam/inside velocity ratio of the pose before and after, and the change PosNet made."""
    raw = raw[:, : adjusted.shape[1]]
    before, after = seam_jumps(raw, window)["pose"], seam_jumps(adjusted, window)["pose"]
    return {
        "velocity_seam_before": before["velocity_seam"],
        "velocity_seam_after": after["velocity_seam"],
        "velocity_inside_before": before["velocity_inside"],
        "velocity_inside_after": after["velocity_inside"],
        "seam_ratio_before": before["velocity_ratio"],
        "seam_ratio_after": after["velocity_ratio"],
        "seam_jump_cut": before["velocity_seam"] / max(after["velocity_seam"], 1e-12),
        "mean_abs_change": float(np.abs(adjusted - raw).mean()),
        "pose_std": float(raw.std()),
    }


def train_posnet(cfg: TrainPosNetConfig, *, progress: bool = True) -> dict[str, Any]:
    """Generate with the frozen generator, train PosNet on it; returns the summary."""
    start = time.perf_counter()
    device, out = start_run(cfg.data_root, cfg.out_dir, cfg.device)
    train = generate_poses(cfg.generator, cfg.data_root, "train", cfg.samples, cfg.k, cfg.seed,
                           device)  # fmt: skip
    val = generate_poses(cfg.generator, cfg.data_root, "val", cfg.val_samples, cfg.k,
                         cfg.seed + 1, device)  # fmt: skip
    generated = time.perf_counter() - start
    gcfg = load_generator(cfg.generator)[0].config
    pcfg = PosNetConfig(window=gcfg.window)
    w, h = pcfg.window, pcfg.history
    n_windows = train.shape[1] // w
    if n_windows < cfg.unroll + 1:
        raise ValueError(f"clips of {train.shape[1]} frames hold fewer than unroll + 1 = "
                         f"{cfg.unroll + 1} windows of {w}")  # fmt: skip
    windows = torch.from_numpy(train[:, : n_windows * w]).reshape(len(train), n_windows, w, 6)
    windows = windows.to(device)
    loss_cfg = PosNetLossConfig()
    rng = np.random.default_rng(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        posnet = PosNet(pcfg).to(device)
        opt = torch.optim.AdamW(posnet.parameters(), lr=cfg.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps, 50))
        bar = tqdm(range(cfg.steps), desc="posnet", unit="step", disable=not progress)
        loss_ema = None
        valid = torch.ones(cfg.batch_size, dtype=torch.bool, device=device)
        for _ in bar:
            rows = torch.from_numpy(rng.integers(len(train), size=cfg.batch_size)).to(device)
            first = torch.from_numpy(rng.integers(1, n_windows - cfg.unroll + 1,
                                                  size=cfg.batch_size)).to(device)  # fmt: skip
            history = windows[rows, first - 1, -h:]  # (B, H, 6): the generator's own frames
            total = 0.0
            for u in range(cfg.unroll):
                new = windows[rows, first + u]  # (B, W, 6)
                adjusted = posnet(history, new, valid)
                loss, _ = posnet_loss(adjusted, new, history, valid, loss_cfg)
                total = total + loss / cfg.unroll
                history = adjusted[:, -h:]
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(posnet.parameters(), 1.0)
            opt.step()
            sched.step()
            value = total.item()
            loss_ema = value if loss_ema is None else 0.98 * loss_ema + 0.02 * value
            bar.set_postfix(loss=f"{loss_ema:.4f}")
        posnet.eval()
    report = smoothness_report(val, apply_posnet(posnet, val), w)
    save_posnet(posnet, out / POSNET_FILE)
    summary = {"recipe": "posnet", "seed": cfg.seed, "steps": cfg.steps,
               "seconds": round(time.perf_counter() - start, 1),
               "generate_seconds": round(generated, 1), "train_loss_ema": loss_ema,
               "val": report, "model": str(out / POSNET_FILE), "device": str(device),
               "config": config_json(cfg)}  # fmt: skip
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    log.info("posnet: seam jump cut %.1fx on val, %.0f s", report["seam_jump_cut"],
             summary["seconds"])  # fmt: skip
    return summary
