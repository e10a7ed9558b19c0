"""Per-listener low-rank weight shifts, applied functionally (ARCHITECTURE.md §4).

A listener's shift of a linear layer ``y = x W^T + b`` with ``W`` of shape ``(out, in)`` is
``ΔW = A B`` with ``A (out, r)`` and ``B (r, in)``. It is applied without forming ``ΔW`` and
without touching the shared layer::

    y = x W^T + b + (x B^T) A^T

Every tensor of a :class:`LowRank` carries a leading batch axis, so one forward can mix listeners:
batch element ``i`` uses ``A[i]`` and ``B[i]``. A batch axis of size 1 is broadcast over the
batch (one listener for every element). Shapes use B batch, N tokens, r rank.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LowRank(NamedTuple):
    """One layer's shift for a batch of listeners: ``ΔW[i] = a[i] @ b[i]``."""

    a: Tensor  # (B, out, r)
    b: Tensor  # (B, r, in)

    @property
    def rank(self) -> int:
        return self.a.shape[-1]

    def dense(self) -> Tensor:
        """The full shift ``ΔW`` ``(B, out, in)`` (for inspection and the personality model)."""
        return torch.bmm(self.a, self.b)  # (B, out, r) @ (B, r, in) -> (B, out, in)

    def select(self, index: Tensor | slice) -> LowRank:
        """The shifts of some batch elements."""
        return LowRank(self.a[index], self.b[index])

    @staticmethod
    def zeros(batch: int, out_features: int, in_features: int, rank: int, *,
              device: torch.device | str | None = None, dtype: torch.dtype | None = None
              ) -> LowRank:  # fmt: skip
        """A shift that changes nothing (``A = 0``; ``B`` is also zero)."""
        return LowRank(torch.zeros(batch, out_features, rank, device=device, dtype=dtype),
                       torch.zeros(batch, rank, in_features, device=device, dtype=dtype))


Shifts = dict[str, LowRank]
"""Shifts of one forward, keyed by layer name (``"layers.0.cross_attn.q"``, ``"head"``)."""


def check_shift(shift: LowRank, layer: nn.Linear, batch: int, name: str = "shift") -> None:
    """Raise ``ValueError`` unless ``shift`` fits ``layer`` and a batch of ``batch`` elements."""
    a, b = shift
    if a.ndim != 3 or b.ndim != 3:
        raise ValueError(f"{name}: a and b must be 3-d (B, out, r) and (B, r, in), "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")  # fmt: skip
    if a.shape[1] != layer.out_features or b.shape[2] != layer.in_features:
        raise ValueError(f"{name}: shift maps {b.shape[2]} -> {a.shape[1]} features, the layer "
                         f"{layer.in_features} -> {layer.out_features}")  # fmt: skip
    if a.shape[2] != b.shape[1]:
        raise ValueError(f"{name}: rank of a ({a.shape[2]}) differs from rank of b ({b.shape[1]})")
    if a.shape[0] != b.shape[0] or a.shape[0] not in (1, batch):
        raise ValueError(f"{name}: shift batch sizes {a.shape[0]}, {b.shape[0]} do not fit a "
                         f"batch of {batch}")  # fmt: skip


def shifted_linear(x: Tensor, layer: nn.Linear, shift: LowRank | None) -> Tensor:
    """``layer(x)`` plus the per-element low-rank shift: ``(B, N, in) -> (B, N, out)``.

    The shared ``layer`` is only read; gradients flow to its parameters and to the shift.
    """
    y = F.linear(x, layer.weight, layer.bias)  # (B, N, out)
    if shift is None:
        return y
    check_shift(shift, layer, x.shape[0])
    a, b = shift
    low = torch.matmul(x, b.transpose(1, 2))  # (B, N, in) @ (B, in, r) -> (B, N, r)
    return y + torch.matmul(low, a.transpose(1, 2))  # (B, N, r) @ (B, r, out) -> (B, N, out)


def scope(shifts: Shifts | None, prefix: str) -> Shifts:
    """The entries of ``shifts`` under ``prefix.``, with the prefix removed."""
    if not shifts:
        return {}
    head = prefix + "."
    return {k[len(head):]: v for k, v in shifts.items() if k.startswith(head)}
