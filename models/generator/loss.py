"""The denoiser's training loss (a pure function; recipes live elsewhere).

x0-prediction MSE (PerFRDiff trains its decoder the same way): draw a step ``t ~ U{0..T−1}`` and
noise ``ε ~ N(0, I)`` per window, noise the target (in the denoiser's diffusion space,
``Denoiser.normalize``) to ``x_t``, predict ``x̂0`` and average the squared error over valid
target frames, with separate weights on the 52 expression and the 6 pose dims
(``GeneratorConfig.expression_weight`` / ``pose_weight``).

The error is measured in the diffusion space ``z = (x − mean) / std``, so every coefficient
counts by its spread in the data: in raw coefficients the head pose (std ≈ 0.05) and the small
blendshapes would weigh next to nothing against the blink, and the model would learn only their
mean. With the identity statistics of an untrained model both spaces coincide.

Condition dropout (``cond_drop``): for that share of windows, drawn from ``generator``, the
speaker's whole context is marked invalid, so the same network also learns the unconditional
(listener-only) prediction that classifier-free guidance needs (:func:`~models.generator.
denoiser.sample_windows` ``guidance``).

Exposure bias: live, the previous listener frames are the generator's own output, not real
frames, and a model that trusts them fully drifts window after window (a brow that is 2 % too
high becomes 20 % too high a few seconds later). ``prev_noise`` adds Gaussian noise of a
per-window standard deviation drawn from U(0, prev_noise) (in diffusion-space units, i.e. times
each coefficient's spread) to the previous frames, and ``prev_drop`` hides them entirely for
that share of windows (1: always, as the live sampler runs without feedback), so the model
learns to correct towards what the speaker and the listener's recent level imply rather than
copy its input.
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
                   generator: torch.Generator, shifts: Shifts | None = None,
                   cond_drop: float = 0.0, prev_noise: float = 0.0,
                   prev_drop: float = 0.0, clean_prev: Tensor | None = None,
                   high_noise: float = 0.0) -> Tensor:  # fmt: skip
    """Masked, dim-weighted x0 MSE of one batch (a scalar).

    ``batch`` holds the :class:`~models.data.torch_windows.WindowDataset` fields, batched:
    ``speaker_audio`` (B, C, 78), ``audio_valid`` (B, C), ``speaker_face`` (B, C, 58),
    ``context_valid`` (B, C), ``listener_prev`` (B, P, 58), ``prev_valid`` (B, P), ``target``
    (B, W, 58), ``target_valid`` (B, W); masks as bool or 1.0 / 0.0. Step and noise come from
    ``generator`` (on any device; they are moved to the target's). ``clean_prev`` (B,) bool
    marks windows whose previous frames are taken as given, neither noised nor dropped (the
    model's own frames from :func:`~models.generator.rollout.self_generated_prev`).
    ``high_noise``: share of windows whose step is drawn from the noisier half ``[T/2, T)``
    only, where the live few-step sampler works and the condition decides the prediction.
    """
    if not 0.0 <= high_noise <= 1.0:
        raise ValueError(f"high_noise must be in [0, 1], got {high_noise}")
    target = batch["target"]
    b = target.shape[0]
    step = torch.randint(0, len(ac), (b,), generator=generator, device=generator.device)
    if high_noise > 0:
        high = torch.rand(b, generator=generator, device=generator.device) < high_noise
        step = torch.where(high, len(ac) // 2 + step // 2, step)  # [T/2, T) for those
    noise = torch.randn(target.shape, generator=generator, device=generator.device,
                        dtype=target.dtype)  # fmt: skip
    step, noise = step.to(target.device), noise.to(target.device)
    if not (0.0 <= cond_drop < 1.0 and 0.0 <= prev_drop <= 1.0 and prev_noise >= 0.0):
        raise ValueError(f"cond_drop must be in [0, 1), prev_drop in [0, 1] and prev_noise "
                         f">= 0, got {cond_drop}, {prev_drop}, {prev_noise}")  # fmt: skip
    prev, prev_valid = batch["listener_prev"], batch["prev_valid"] > 0  # (B, P, 58), (B, P)
    if prev_noise > 0:
        scale = torch.rand(b, generator=generator, device=generator.device) * prev_noise
        eps = torch.randn(prev.shape, generator=generator, device=generator.device,
                          dtype=prev.dtype)  # fmt: skip
        jitter = scale.to(prev.device)[:, None, None] * eps.to(prev.device)
        if clean_prev is not None:
            jitter = torch.where(clean_prev.to(prev.device)[:, None, None], 0.0, jitter)
        prev = prev + jitter * denoiser.face_std.to(prev.dtype)
    if prev_drop > 0:
        keep_prev = torch.rand(b, generator=generator, device=generator.device) >= prev_drop
        keep_prev = keep_prev.to(prev.device)
        if clean_prev is not None:
            keep_prev = keep_prev | clean_prev.to(prev.device)
        prev_valid = prev_valid & keep_prev[:, None]
    context_valid = batch["context_valid"] > 0  # (B, C)
    audio_valid = batch.get("audio_valid")
    audio_valid = None if audio_valid is None else audio_valid > 0
    if cond_drop > 0:
        keep = torch.rand(b, generator=generator, device=generator.device) >= cond_drop
        keep = keep.to(target.device)[:, None]  # (B, 1)
        context_valid = context_valid & keep
        audio_valid = None if audio_valid is None else audio_valid & keep
    valid = batch["target_valid"] > 0  # (B, W)
    clean = torch.where(valid[..., None], target, 0.0)  # padded frames: neutral, whatever they hold
    x_t = q_sample(denoiser.normalize(clean), step, noise, ac)  # (B, W, 58), diffusion space
    x0 = denoiser(x_t, step, batch["speaker_audio"], batch["speaker_face"], context_valid,
                  prev, prev_valid, shifts=shifts,
                  audio_valid=audio_valid)  # fmt: skip
    mask = valid.to(target.dtype)  # (B, W)
    err = (denoiser.normalize(x0) - denoiser.normalize(clean)) ** 2  # (B, W, 58), in z
    err = err * dim_weights(denoiser, target)
    per_frame = err.mean(dim=-1)  # (B, W)
    return (per_frame * mask).sum() / mask.sum().clamp(min=1.0)
