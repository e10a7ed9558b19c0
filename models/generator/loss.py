"""The denoiser's training loss (a pure function; recipes live elsewhere).

x0-prediction MSE (PerFRDiff trains its decoder the same way): draw a step ``t ~ U{0..T−1}`` and
noise ``ε ~ N(0, I)`` per window, noise the target (in the denoiser's diffusion space,
``Denoiser.normalize``) to ``x_t``, predict ``x̂0`` (coefficient space) and average the squared
error over valid target frames, with separate weights on the 52 expression and the 6 pose dims
(``GeneratorConfig.expression_weight`` / ``pose_weight``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from models.face import layout
from models.generator.denoiser import Denoiser
from models.generator.lowrank import Shifts
from models.generator.schedule import q_sample


def dim_weights(denoiser: Denoiser, like: Tensor) -> Tensor:
    """``(58,)`` loss weight of every coefficient, in ``like``'s dtype and device."""
    cfg = denoiser.config
    w = torch.empty(layout.DIM, dtype=like.dtype, device=like.device)
    w[layout.EXPRESSION] = cfg.expression_weight
    w[layout.POSE] = cfg.pose_weight
    return w


def diffusion_loss(denoiser: Denoiser, batch: Mapping[str, Tensor], ac: Tensor,
                   generator: torch.Generator, shifts: Shifts | None = None) -> Tensor:  # fmt: skip
    """Masked, dim-weighted x0 MSE of one batch (a scalar).

    ``batch`` holds the :class:`~models.data.torch_windows.WindowDataset` fields, batched:
    ``speaker_audio`` (B, C, 78), ``audio_valid`` (B, C), ``speaker_face`` (B, C, 58),
    ``context_valid`` (B, C), ``listener_prev`` (B, P, 58), ``prev_valid`` (B, P), ``target``
    (B, W, 58), ``target_valid`` (B, W); masks as bool or 1.0 / 0.0. Step and noise come from
    ``generator`` (on any device; they are moved to the target's).
    """
    target = batch["target"]
    b = target.shape[0]
    step = torch.randint(0, len(ac), (b,), generator=generator, device=generator.device)
    noise = torch.randn(target.shape, generator=generator, device=generator.device,
                        dtype=target.dtype)  # fmt: skip
    step, noise = step.to(target.device), noise.to(target.device)
    valid = batch["target_valid"] > 0  # (B, W)
    clean = torch.where(valid[..., None], target, 0.0)  # padded frames: neutral, whatever they hold
    x_t = q_sample(denoiser.normalize(clean), step, noise, ac)  # (B, W, 58), diffusion space
    audio_valid = batch.get("audio_valid")
    x0 = denoiser(x_t, step, batch["speaker_audio"], batch["speaker_face"],
                  batch["context_valid"] > 0, batch["listener_prev"], batch["prev_valid"] > 0,
                  shifts=shifts, audio_valid=None if audio_valid is None else audio_valid > 0)
    mask = valid.to(target.dtype)  # (B, W)
    err = (x0 - clean) ** 2 * dim_weights(denoiser, target)  # (B, W, 58)
    per_frame = err.mean(dim=-1)  # (B, W)
    return (per_frame * mask).sum() / mask.sum().clamp(min=1.0)
