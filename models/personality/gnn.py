"""The 2D graph network of the RPR paper: matrix-valued nodes and edges → five traits.

A 2D-GNN layer (the paper's Eq. 9) updates every node matrix from its own projected state,
modulated element-wise by the projected edges to its neighbours, with degree normalisation::

    v_n' = ReLU( (1/d_n) Σ_{m ∈ N(n)} A_{n,m} · f_e(e_{n,m}) ⊙ f_v(v_n) )

With ``residual`` (the default) each layer's input is added to its output,
``v_n ← v_n + v_n'``, so a layer whose ReLU units die does not cut the nodes off from the head.
``f_e`` and ``f_v`` are linear maps of matrices that keep their 2D structure,
``f(X) = U X Vᵀ + B`` (:class:`MatrixLinear`); ``A`` is the binary adjacency (default: every
pair, self-loops included) and ``d_n = Σ_m A_{n,m}``. After the layers, self-attention graph
pooling (Lee et al. 2019) scores each node with a graph convolution (own term plus neighbour
mean), keeps the top
``ceil(ratio · N)`` nodes scaled by ``tanh(score)``, reads them out as mean and max, and an FC
head gives the five traits in 0..1 (sigmoid).

Ablations are config fields of the same network (the paper's Table 2):

- ``node="matrix", edges=False``: matrix nodes without edges, messages from the neighbours'
  projected matrices ``(1/d_n) Σ_m A_{n,m} f_v(v_m)``;
- ``node="vector"``: each node matrix flattened to a vector and a standard GCN
  (``h' = ReLU(D⁻¹ A H W)``), scalar adjacency, no edge features.

Shapes: B graphs, N nodes, V = d_v (node side), F = V² (vector width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.data.react_layout import TRAIT_NAMES

NODE_KINDS = ("matrix", "vector")


@dataclass(frozen=True)
class GNNConfig:
    node_dim: int = 16
    """d_v: side of the node matrices (``GraphConfig.node_dim``)."""
    node: str = "matrix"
    """``"matrix"``: 2D-GNN layers; ``"vector"``: flattened nodes and a standard GCN."""
    edges: bool = True
    """Edge-modulated messages (Eq. 9); only with matrix nodes."""
    layers: int = 2
    pool_ratio: float = 1.0
    """Share of nodes the self-attention pooling keeps (at least one). With the bundled
    generator's 2 blocks, 0.5 keeps one node chosen per person by the score; keeping both (each
    scaled by its tanh score) trained more reliably on the val persons."""
    hidden: int = 64
    """Hidden width of the FC head."""
    residual: bool = True
    """Add each layer's input to its output (``v' = v + layer(v)``). Without it a layer whose
    ReLU units all die passes nothing on and the head predicts a constant; on the val persons
    (seeds 0..2) it raised the full model's mean CCC from 0.35 to 0.41 (with ``pool_ratio`` 1).
    Checkpoints saved before this field existed are read with ``False``."""
    traits: int = len(TRAIT_NAMES)

    def __post_init__(self) -> None:
        if self.node not in NODE_KINDS:
            raise ValueError(f"node must be one of {NODE_KINDS}, got {self.node!r}")
        if self.node == "vector" and self.edges:
            raise ValueError("vector nodes use a standard GCN without edge features: edges=False")
        if self.layers < 1 or not 0.0 < self.pool_ratio <= 1.0:
            raise ValueError("layers must be at least 1 and pool_ratio in (0, 1]")


class MatrixLinear(nn.Module):
    """``X (..., V, V) → U X Vᵀ + B``: a linear map of matrices that keeps rows and columns."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.left = nn.Parameter(torch.eye(side) + torch.randn(side, side) / side)
        self.right = nn.Parameter(torch.eye(side) + torch.randn(side, side) / side)
        self.bias = nn.Parameter(torch.zeros(side, side))

    def forward(self, x: Tensor) -> Tensor:
        return self.left @ x @ self.right.T + self.bias  # (..., V, V)


def adjacency(a: Tensor | None, batch: int, nodes: int, like: Tensor) -> Tensor:
    """``A`` as (B, N, N) floats; ``None`` is the complete graph with self-loops."""
    if a is None:
        return like.new_ones(batch, nodes, nodes)
    a = a.to(like.dtype)
    return a.expand(batch, nodes, nodes) if a.ndim == 2 else a


def degree_normalised(a: Tensor) -> Tensor:
    """``D⁻¹ A`` (B, N, N); an isolated node (degree 0) gets a zero row."""
    return a / a.sum(dim=-1, keepdim=True).clamp(min=1.0)


class Layer2D(nn.Module):
    """One 2D-GNN layer (Eq. 9), or its edge-free variant."""

    def __init__(self, side: int, edges: bool) -> None:
        super().__init__()
        self.f_v = MatrixLinear(side)
        self.f_e = MatrixLinear(side) if edges else None

    def forward(self, v: Tensor, e: Tensor | None, a_norm: Tensor) -> Tensor:
        """``v`` (B, N, V, V), ``e`` (B, N, N, V, V), ``a_norm`` (B, N, N) → (B, N, V, V)."""
        v_hat = self.f_v(v)  # (B, N, V, V)
        if self.f_e is None:  # messages from the neighbours' matrices
            return F.relu(torch.einsum("bnm,bmxy->bnxy", a_norm, v_hat))
        if e is None:
            raise ValueError("this 2D-GNN layer needs edge matrices")
        e_hat = self.f_e(e)  # (B, N, N, V, V)
        gate = torch.einsum("bnm,bnmxy->bnxy", a_norm, e_hat)  # (1/d_n) Σ_m A_nm ê_nm
        return F.relu(gate * v_hat)  # Σ_m (A ê_nm ⊙ v̂_n) / d_n = v̂_n ⊙ (Σ_m A ê_nm / d_n)


class LayerGCN(nn.Module):
    """A standard GCN layer on vector nodes: ``ReLU(D⁻¹ A H W + b)``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, h: Tensor, a_norm: Tensor) -> Tensor:
        return F.relu(a_norm @ self.lin(h))  # (B, N, F)


class GraphNet(nn.Module):
    """Nodes (B, N, V, V), edges (B, N, N, V, V) or None, adjacency → traits (B, 5) in 0..1."""

    def __init__(self, config: GNNConfig) -> None:
        super().__init__()
        self.config = c = config
        v = c.node_dim
        width = v * v
        if c.node == "matrix":
            self.layers = nn.ModuleList(Layer2D(v, c.edges) for _ in range(c.layers))
        else:
            self.layers = nn.ModuleList(LayerGCN(width) for _ in range(c.layers))
        # SAGPool score, a graph convolution to one number per node: its own ⟨P_s, v_n⟩ plus the
        # neighbours' mean ⟨P_m, v_m⟩ (own term: on a complete graph every node would tie).
        self.score = nn.Parameter(torch.randn(2, width) / math.sqrt(width))
        self.score_bias = nn.Parameter(torch.zeros(()))
        self.head = nn.Sequential(nn.Linear(2 * width, c.hidden), nn.GELU(),
                                  nn.Linear(c.hidden, c.traits))  # fmt: skip

    def embed(self, nodes: Tensor, edges: Tensor | None, a: Tensor | None = None
              ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """Node features after the GNN layers ``(B, N, F)`` (flattened) and ``D⁻¹A``."""
        b, n = nodes.shape[:2]
        a_norm = degree_normalised(adjacency(a, b, n, nodes))  # (B, N, N)
        if self.config.node == "matrix":
            x = nodes
            for layer in self.layers:
                y = layer(x, edges if self.config.edges else None, a_norm)  # (B, N, V, V)
                x = x + y if self.config.residual else y
            return x.flatten(2), a_norm  # (B, N, V²)
        h = nodes.flatten(2)  # (B, N, V, V) -> (B, N, F)
        for layer in self.layers:
            y = layer(h, a_norm)
            h = h + y if self.config.residual else y
        return h, a_norm

    def pool(self, h: Tensor, a_norm: Tensor) -> Tensor:
        """Self-attention graph pooling and readout: (B, N, F) → (B, 2F)."""
        b, n, _ = h.shape
        own, raw = (h @ self.score.T).unbind(-1)  # (B, N) each: ⟨P_s, v_n⟩, ⟨P_m, v_m⟩
        score = own + (a_norm @ raw[..., None])[..., 0] + self.score_bias  # (B, N)
        keep = max(1, math.ceil(self.config.pool_ratio * n))
        top = score.topk(keep, dim=1).indices  # (B, k)
        kept = h.gather(1, top[..., None].expand(-1, -1, h.shape[-1]))  # (B, k, F)
        kept = kept * torch.tanh(score.gather(1, top))[..., None]  # (B, k, F)
        return torch.cat([kept.mean(dim=1), kept.amax(dim=1)], dim=-1)  # (B, 2F)

    def forward(self, nodes: Tensor, edges: Tensor | None = None, a: Tensor | None = None
                ) -> Tensor:  # fmt: skip
        h, a_norm = self.embed(nodes, edges, a)
        return torch.sigmoid(self.head(self.pool(h, a_norm)))  # (B, 5)
