"""The cosine noise schedule (Nichol & Dhariwal 2021, "Improved DDPM") and its small helpers.

Step ``t`` of ``T`` training steps has ``ᾱ_t = ∏_{i≤t} (1 − β_i)`` where
``β_t = 1 − f(t + 1) / f(t)``, ``f(u) = cos²(((u / T) + s) / (1 + s) · π/2)``, clipped to
``β_t ≤ 0.999`` so that the last steps stay finite. Step 0 is the least noisy (``ᾱ_0 ≈ 1``) and
step ``T − 1`` is almost pure noise. Schedules are float64; callers cast where they use them.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

Spacing = Literal["trailing", "leading", "linspace"]
MAX_BETA = 0.999


def alphas_cumprod(steps: int, s: float = 0.008) -> Tensor:
    """ᾱ of the cosine schedule, ``(steps,)`` float64, strictly decreasing in (0, 1)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    u = torch.arange(steps + 1, dtype=torch.float64) / steps  # (T + 1,)
    f = torch.cos((u + s) / (1 + s) * (math.pi / 2)) ** 2  # f(t) of the paper's eq. 17
    betas = (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)  # β_t = 1 − ᾱ_t / ᾱ_{t−1}, clipped
    return torch.cumprod(1 - betas, dim=0)  # ᾱ_t = ∏ (1 − β_i)


def gather(ac: Tensor, step: Tensor, like: Tensor) -> Tensor:
    """``ac[step]`` shaped ``(B, 1, ..., 1)`` to broadcast over ``like`` ``(B, ...)``, in its
    dtype and device."""
    values = ac.to(like.device)[step.to(like.device)]  # (B,)
    return values.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))  # (B,) -> (B, 1, ..., 1)


def q_sample(x0: Tensor, step: Tensor, noise: Tensor, ac: Tensor) -> Tensor:
    """The forward process ``x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε`` for a batch with per-element
    ``step`` ``(B,)``."""
    a = gather(ac, step, x0)  # (B, 1, ..., 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def snr(ac: Tensor) -> Tensor:
    """Signal-to-noise ratio ``ᾱ / (1 − ᾱ)`` of every step."""
    return ac / (1 - ac)


def sampling_timesteps(train_steps: int, n: int, spacing: Spacing = "trailing") -> Tensor:
    """The ``n`` training steps a sampler visits, first (noisiest) to last, as a LongTensor.

    Spacings (the names of Lin et al. 2024, "Common diffusion noise schedules and sample steps are
    flawed", Table 2), for ``T = 1000``, ``n = 4``:

    - ``"trailing"`` (default): ``999, 749, 499, 249``: even spacing counted down from the last
      step. It always starts at the step training saw as pure noise, which is what the sampler
      feeds in, so it suits few steps: ``n = 1`` is one call at ``T − 1``. The last call is at
      ``T/n − 1`` and the sampler then returns its x0 prediction (ᾱ_{−1} = 1).
    - ``"leading"``: ``750, 500, 250, 0``: DDIM's original even spacing, as PerFRDiff uses with
      50 steps. It ends on step 0 but starts at ``T − T/n``, far from pure noise when ``n`` is
      small (``n = 1`` would denoise pure noise as if it were step 0).
    - ``"linspace"``: ``999, 666, 333, 0``: both ends included, rounded.
    """
    if not 1 <= n <= train_steps:
        raise ValueError(f"n must be in 1..{train_steps}, got {n}")
    if spacing == "trailing":
        stride = train_steps / n
        steps = [round(train_steps - i * stride) - 1 for i in range(n)]
    elif spacing == "leading":
        stride = train_steps // n
        steps = [(n - 1 - i) * stride for i in range(n)]
    elif spacing == "linspace":
        steps = torch.linspace(train_steps - 1, 0, n, dtype=torch.float64).round().tolist()
    else:
        raise ValueError(f"unknown spacing {spacing!r}")
    return torch.tensor(steps, dtype=torch.long)
