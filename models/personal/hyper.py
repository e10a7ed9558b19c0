"""Hypernetwork: a style vector → low-rank weight shifts for chosen linear layers of the denoiser.

Design after the RPR paper's PWHG: one shared network and learned per-chunk embeddings, instead
of PerFRDiff's one huge linear head per layer (≈1.63 B parameters, one listener per forward).
Every target layer ``name → (out, in)`` gets two factors of rank r,

    a (B, out, r) and b (B, r, in),   effective weight of sample i:  W + a[i] @ b[i],

applied functionally by the denoiser (``x W^T + (x b^T) a^T``); nothing is written into shared
weights. Each factor is flattened and cut into chunks of ``chunk_size`` numbers (the last one
padded), and each chunk owns a learned embedding drawn from N(0, 1)::

    style (B, S) → trunk MLP → z (B, Dt)
    hidden = GELU(W_z z + W_h h_c + bias)          (B, N, H), N chunks; = Linear([z, h_c])
    a chunks: out_a(hidden)  (B, N_a, C)           out_a zero-initialised → a = 0 exactly
    b chunks: out_b(hidden)  (B, N_b, C) · in^-½   so x b^T keeps the scale of x

Because ``a`` starts at exactly zero, a fresh hypernetwork leaves the generic model unchanged
(as LoRA's zero-initialised up-projection); ``a`` learns first, then gradients reach the rest.

Factors are returned as ``dict[str, tuple[a, b]]`` so this module does not depend on the
generator package; :func:`to_shifts` wraps them into ``models.generator.lowrank.LowRank``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from models.generator.lowrank import Shifts

Targets = Mapping[str, tuple[int, int]]
"""Layer name → (out_features, in_features), as ``Denoiser.shift_targets()`` returns."""
Factors = dict[str, tuple[Tensor, Tensor]]
"""Layer name → (a (B, out, r), b (B, r, in)); the shift of sample i is ``a[i] @ b[i]``."""


@dataclass(frozen=True)
class HyperConfig:
    """Sizes of the hypernetwork; the targets are given to the constructor beside it."""

    style_dim: int = 64
    """S: size of the style vector (``StyleEncoderConfig.style_dim``)."""
    rank: int = 4
    """r: rank of every shift."""
    trunk_dim: int = 128
    """Dt: output of the shared trunk MLP on the style."""
    hidden_dim: int = 256
    """H: hidden width of the shared generator head."""
    embed_dim: int = 64
    """E: size of each chunk embedding."""
    chunk_size: int = 256
    """C: factor numbers one chunk produces."""


@dataclass(frozen=True)
class _Slot:
    """Where one factor of one target lives in the generated chunks."""

    name: str
    first: int
    """Index of its first chunk within its group (a chunks or b chunks)."""
    shape: tuple[int, int]
    """Factor shape without the batch dim: (out, r) for a, (r, in) for b."""

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]


def _layout(sizes: list[tuple[str, tuple[int, int]]], chunk: int) -> tuple[list[_Slot], int]:
    """Consecutive chunk ranges for factors of the given shapes; returns slots and chunk count."""
    slots, first = [], 0
    for name, shape in sizes:
        slots.append(_Slot(name, first, shape))
        first += math.ceil(shape[0] * shape[1] / chunk)
    return slots, first


class HyperNetwork(nn.Module):
    """``style (B, S)`` → ``{name: (a (B, out, r), b (B, r, in))}`` for every target."""

    def __init__(
        self,
        config: HyperConfig,
        targets: Targets,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not targets:
            raise ValueError("hypernetwork needs at least one target layer")
        for name, shape in targets.items():
            if len(shape) != 2 or min(shape) < 1:
                raise ValueError(f"target {name!r}: expected (out, in) > 0, got {shape}")
        self.config = config
        self.targets = {name: (int(o), int(i)) for name, (o, i) in targets.items()}
        c, r = config, config.rank
        factory = {"device": device, "dtype": dtype}
        shapes = self.targets.items()
        self._a_slots, n_a = _layout([(n, (o, r)) for n, (o, _) in shapes], c.chunk_size)
        self._b_slots, n_b = _layout([(n, (r, i)) for n, (_, i) in shapes], c.chunk_size)
        self._n_a = n_a

        self.trunk = nn.Sequential(
            nn.Linear(c.style_dim, c.trunk_dim, **factory),
            nn.GELU(),
            nn.Linear(c.trunk_dim, c.trunk_dim, **factory),
            nn.GELU(),
        )
        self.chunks = nn.Parameter(torch.randn(n_a + n_b, c.embed_dim, **factory))  # (N, E)
        # The head's first layer acts on [z, h]; split in two so (B, N, Dt + E) is never built.
        self.head_z = nn.Linear(c.trunk_dim, c.hidden_dim, **factory)
        self.head_h = nn.Linear(c.embed_dim, c.hidden_dim, bias=False, **factory)
        self.out_a = nn.Linear(c.hidden_dim, c.chunk_size, **factory)
        self.out_b = nn.Linear(c.hidden_dim, c.chunk_size, **factory)
        nn.init.zeros_(self.out_a.weight)
        nn.init.zeros_(self.out_a.bias)

    @property
    def rank(self) -> int:
        return self.config.rank

    def forward(self, style: Tensor) -> Factors:
        """Low-rank factors for every target, in the order of ``targets``."""
        if style.ndim != 2 or style.shape[1] != self.config.style_dim:
            raise ValueError(
                f"style: expected shape (B, {self.config.style_dim}), got {tuple(style.shape)}"
            )
        z = self.trunk(style)  # (B, Dt)
        hidden = F.gelu(self.head_z(z)[:, None, :] + self.head_h(self.chunks)[None])  # (B, N, H)
        flat_a = self.out_a(hidden[:, : self._n_a]).flatten(1)  # (B, N_a · C)
        flat_b = self.out_b(hidden[:, self._n_a :]).flatten(1)  # (B, N_b · C)
        factors: Factors = {}
        for slot_a, slot_b in zip(self._a_slots, self._b_slots, strict=True):
            a = self._take(flat_a, slot_a)  # (B, out, r)
            b = self._take(flat_b, slot_b) * slot_b.shape[1] ** -0.5  # (B, r, in)
            factors[slot_a.name] = (a, b)
        return factors

    def _take(self, flat: Tensor, slot: _Slot) -> Tensor:
        """One factor ``(B, *slot.shape)`` out of the flattened chunk outputs ``(B, N · C)``."""
        start = slot.first * self.config.chunk_size
        return flat[:, start : start + slot.numel].unflatten(1, slot.shape)


def to_shifts(factors: Factors) -> Shifts:
    """Wrap ``(a, b)`` factors into the generator's ``LowRank`` shifts.

    The import is deferred so this package works without ``models.generator``; calling this before
    that module exists raises ``ImportError``.
    """
    from models.generator.lowrank import LowRank

    return {name: LowRank(a=a, b=b) for name, (a, b) in factors.items()}
