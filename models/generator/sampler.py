"""Samplers over any x0-predicting denoiser: DDIM (Song, Meng & Ermon 2021) and its few-step use.

A denoiser is any callable ``denoise(x_t, step) -> x0_hat`` with ``x_t`` of ``shape`` and ``step``
a ``(B,)`` LongTensor of training steps (B = ``shape[0]``). The network predicts; these functions
step. Randomness comes only from the ``generator`` passed in.

DDIM, in the notation of Song et al. (their ``α`` is our ``ᾱ``), from step ``t`` to ``t'``::

    ε̂        = (x_t − √ᾱ_t x̂0) / √(1 − ᾱ_t)                                  (eq. 9 solved for ε)
    σ        = η √((1 − ᾱ_t') / (1 − ᾱ_t)) √(1 − ᾱ_t / ᾱ_t')                  (eq. 16)
    x_t'     = √ᾱ_t' x̂0 + √(1 − ᾱ_t' − σ²) ε̂ + σ z,   z ~ N(0, I)             (eq. 12)

After the last visited step ``t' = −1`` with ``ᾱ_{−1} = 1``, so the sample is the last ``x̂0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from models.generator.schedule import Spacing, sampling_timesteps

Denoise = Callable[[Tensor, Tensor], Tensor]
"""``(x_t (B, ...), step (B,) long) -> x0_hat (B, ...)``."""

MAX_FEW_STEPS = 8


@torch.no_grad()
def ddim_sample(denoise: Denoise, shape: tuple[int, ...], ac: Tensor, *, steps: int,
                eta: float = 0.0, generator: torch.Generator, device: torch.device | str,
                dtype: torch.dtype = torch.float32, clamp: tuple[float, float] | None = None,
                x_T: Tensor | None = None, spacing: Spacing = "trailing") -> Tensor:  # fmt: skip
    """Sample ``shape`` with ``steps`` denoiser calls; ``eta = 0`` is deterministic given ``x_T``.

    ``ac`` is the training schedule's ᾱ ``(T,)``; ``x_T`` (default: standard normal from
    ``generator``) is the start at the first visited step; ``clamp`` bounds every ``x̂0``.
    """
    if eta < 0:
        raise ValueError(f"eta must be non-negative, got {eta}")
    timesteps = sampling_timesteps(len(ac), steps, spacing).tolist()
    abar = ac.to(torch.float64).tolist()
    if x_T is None:
        x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    else:
        if tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {tuple(shape)}")
        x = x_T.to(device=device, dtype=dtype)
    x0 = x
    for i, t in enumerate(timesteps):
        a_t = abar[t]
        a_next = abar[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.0  # ᾱ_{−1} = 1
        step = torch.full((shape[0],), t, dtype=torch.long, device=device)  # (B,)
        x0 = denoise(x, step)  # x̂0 = f_θ(x_t, t)
        if clamp is not None:
            x0 = x0.clamp(*clamp)
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)  # ε̂ = (x_t − √ᾱ_t x̂0) / √(1 − ᾱ_t)
        sigma = eta * math.sqrt((1 - a_next) / (1 - a_t) * (1 - a_t / a_next))  # σ, eq. 16
        direction = math.sqrt(max(1 - a_next - sigma**2, 0.0)) * eps  # √(1 − ᾱ_t' − σ²) ε̂
        x = math.sqrt(a_next) * x0 + direction  # x_t' = √ᾱ_t' x̂0 + √(1 − ᾱ_t' − σ²) ε̂ ...
        if sigma > 0:
            z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
            x = x + sigma * z  # ... + σ z
    return x


def few_step_sample(denoise: Denoise, shape: tuple[int, ...], ac: Tensor, *, steps: int = 4,
                    generator: torch.Generator, device: torch.device | str,
                    dtype: torch.dtype = torch.float32, clamp: tuple[float, float] | None = None,
                    x_T: Tensor | None = None) -> Tensor:  # fmt: skip
    """The live sampler: deterministic DDIM (η = 0) with 1..8 calls on trailing timesteps.

    Given the start noise (drawn from ``generator`` or passed as ``x_T``) the result is a fixed
    function of the condition; different noise gives a different appropriate reaction.
    """
    if not 1 <= steps <= MAX_FEW_STEPS:
        raise ValueError(f"few-step sampling takes 1..{MAX_FEW_STEPS} steps, got {steps}")
    return ddim_sample(denoise, shape, ac, steps=steps, eta=0.0, generator=generator,
                       device=device, dtype=dtype, clamp=clamp, x_T=x_T,
                       spacing="trailing")  # fmt: skip
