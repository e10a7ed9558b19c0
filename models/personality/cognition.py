"""Personalised cognition: the generator's block weights with a person's key added, as tiles.

The RPR paper reads a person's *cognition* as the weights ``Θ^τ = Θ + Key^τ`` of a generator that
reproduces that person's reactions (its Eq. 1 with the additive refinement of its Table 4). Here
``Θ`` is the frozen generic denoiser and ``Key^τ`` the low-rank shifts ``a @ b`` that the enrolment
path (style encoder + hypernetwork) makes from the person's own behaviour.

A *block* is one decoder layer of the denoiser (self-attention, cross-attention, feed-forward);
its ``K`` weight matrices are every linear layer in it, in :data:`BLOCK_LINEARS` order. Each
matrix ``(out, in)`` is cut into ``d × d`` tiles (``d`` = the model width; a 256 × 128
feed-forward matrix gives two tiles), so a block is ``K`` tiles of ``d × d``. Only the layers the
hypernetwork shifts differ between persons; their tiles are the *personal* ones, the rest are the
generic ``Θ`` shared by everyone. The low-rank factors are expanded to full matrices only for
personal tiles (the output head is shifted too but belongs to no block and is not read).

Shapes: B persons, N blocks, K tiles per block, Kp personal tiles per block, d model width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from models.generator.denoiser import Denoiser

BLOCK_LINEARS: tuple[str, ...] = (
    "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.out",
    "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.out",
    "ff.fc_in", "ff.fc_out",
)  # fmt: skip
"""The linear layers of one decoder block, in the order their tiles take."""

Factors = dict[str, tuple[Tensor, Tensor]]
"""Layer name → (a (B, out, r), b (B, r, in)), as the hypernetwork returns them."""


@dataclass(frozen=True)
class Tile:
    """One ``d × d`` tile of a block's weight matrix: rows ``row·d …``, columns ``col·d …``."""

    layer: str
    """Name relative to the block (``"ff.fc_in"``)."""
    row: int
    col: int


@dataclass(frozen=True)
class CognitionLayout:
    """Which tiles make a block and which of them carry a person's key."""

    blocks: int
    """N: decoder blocks of the generator (graph nodes)."""
    width: int
    """d: the side of every tile (the generator's model width)."""
    tiles: tuple[Tile, ...]
    """The K tiles of one block (every block has the same)."""
    personal: tuple[int, ...]
    """Indices into ``tiles`` of the Kp personal tiles (layers the hypernetwork shifts)."""

    @property
    def shared(self) -> tuple[int, ...]:
        """Indices of the tiles that are the generic weights for everyone."""
        return tuple(k for k in range(len(self.tiles)) if k not in self.personal)


def cognition_layout(generator: Denoiser, shifted: set[str] | list[str]) -> CognitionLayout:
    """The layout of ``generator``'s blocks given the layer names a hypernetwork shifts
    (``hyper.targets``); ``ValueError`` when a block matrix is not a whole number of tiles or no
    block layer is shifted."""
    d = generator.config.d_model
    tiles: list[Tile] = []
    for rel in BLOCK_LINEARS:
        out_f, in_f = generator.layers[0].get_submodule(rel).weight.shape
        if out_f % d or in_f % d:
            raise ValueError(f"{rel}: a {out_f} x {in_f} matrix is not made of {d} x {d} tiles "
                             "(feed-forward width must be a multiple of d_model)")  # fmt: skip
        tiles += [Tile(rel, i, j) for i in range(out_f // d) for j in range(in_f // d)]
    blocks = generator.config.layers
    kinds = {name.split(".", 2)[2] for name in shifted if name.startswith("layers.")}
    for n in range(blocks):
        mine = {name.split(".", 2)[2] for name in shifted if name.startswith(f"layers.{n}.")}
        if mine != kinds:
            raise ValueError(f"block {n} is shifted in {sorted(mine)}, others in {sorted(kinds)}")
    personal = tuple(k for k, t in enumerate(tiles) if t.layer in kinds)
    if not personal:
        raise ValueError("the hypernetwork shifts no layer of a generator block: the cognition "
                         "graph would be the same for everyone")  # fmt: skip
    return CognitionLayout(blocks, d, tuple(tiles), personal)


class Cognition(NamedTuple):
    """A batch of personalised cognitions ``Θ^τ``: ``theta`` plus ``key`` on the personal tiles."""

    theta: Tensor
    """(N, K, d, d) the generic weights Θ, tiled (shared by every person)."""
    key: Tensor
    """(B, N, Kp, d, d) the person's dense key on the personal tiles."""

    def personalised(self, personal: tuple[int, ...]) -> Tensor:
        """``Θ^τ`` of the personal tiles: (B, N, Kp, d, d)."""
        return self.theta[:, list(personal)][None] + self.key


def _tiles(matrix: Tensor, d: int) -> Tensor:
    """``(..., out, in)`` → ``(..., out/d · in/d, d, d)``, row-major over tiles."""
    *lead, out_f, in_f = matrix.shape
    t = matrix.reshape(*lead, out_f // d, d, in_f // d, d)  # (..., R, d, C, d)
    t = t.transpose(-3, -2)  # (..., R, C, d, d)
    return t.reshape(*lead, (out_f // d) * (in_f // d), d, d)  # (..., R·C, d, d)


def generic_tiles(generator: Denoiser, layout: CognitionLayout) -> Tensor:
    """Θ of every block as tiles: (N, K, d, d)."""
    per_block = []
    for n in range(layout.blocks):
        block = generator.layers[n]
        mats = [_tiles(block.get_submodule(rel).weight, layout.width) for rel in BLOCK_LINEARS]
        per_block.append(torch.cat(mats, dim=0))  # (K, d, d)
    return torch.stack(per_block)  # (N, K, d, d)


def personal_keys(factors: Factors, layout: CognitionLayout) -> Tensor:
    """Dense ``Key^τ = a @ b`` on the personal tiles: (B, N, Kp, d, d)."""
    kinds = list(dict.fromkeys(layout.tiles[k].layer for k in layout.personal))
    per_block = []
    for n in range(layout.blocks):
        mats = []
        for rel in kinds:
            a, b = factors[f"layers.{n}.{rel}"]
            mats.append(_tiles(torch.bmm(a, b), layout.width))  # (B, out, in) -> (B, t, d, d)
        per_block.append(torch.cat(mats, dim=1))  # (B, Kp, d, d)
    return torch.stack(per_block, dim=1)  # (B, N, Kp, d, d)


def cognition(generator: Denoiser, factors: Factors, layout: CognitionLayout) -> Cognition:
    """The personalised cognition of a batch of persons from their hypernetwork factors.

    Gradients flow to the factors (and through them to the hypernetwork and style encoder);
    the generator's weights are read as they are (freeze them for joint training)."""
    return Cognition(generic_tiles(generator, layout), personal_keys(factors, layout))
