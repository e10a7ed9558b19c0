"""Cognition graph learning (the RPR paper's CGL): a person's block weights → a graph whose
nodes and edges are ``d_v × d_v`` matrices.

Node feature encoding (NFE, the paper's Eq. 7). Every tile of block ``n`` (``K`` tiles of
``d × d``, :mod:`models.personality.cognition`) goes through one shared CNN (stride-2 convolutions
then an adaptive average pool to ``d_v × d_v``), giving ``η_n ∈ R^{K × C × d_v × d_v}``; a learned
weighted sum over the ``K · C`` maps (``NFE_FC``) gives the node matrix ``v_n ∈ R^{d_v × d_v}``.

The CNN reads each tile in two input channels: ``Θ^τ`` divided by the generic tile's standard
deviation, and the person's key standardised against the training population (its mean key
subtracted, divided by the spread of the keys). The second is input standardisation: the keys
of different persons differ by about 2 % of the tile's norm, which a CNN reading ``Θ^τ`` alone
must first learn to see. Shared tiles have a zero second channel, and their CNN features are
computed once per forward, not per person.

Edge feature encoding (EFE, Eq. 8). ``η_n`` is read as ``d_v`` row tokens (a linear map of the
``K · C · d_v`` numbers of each row to width ``D_e``); a self-attention over those tokens
(``EFE_SA``, shared by all nodes), a cross-attention from node ``n``'s tokens to node ``m``'s
(``EFE_CA``) and a row-wise feed-forward (``EFE_FFN``) give the edge matrix
``e_{n,m} ∈ R^{d_v × d_v}`` for every ordered pair, self-pairs included; ``e_{n,m} ≠ e_{m,n}``.

Shapes: B persons, N nodes, K tiles per block, Kp personal ones, C CNN channels, V = d_v,
T = V row tokens, D = D_e.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.personality.cognition import Cognition, CognitionLayout


@dataclass(frozen=True)
class GraphConfig:
    """Sizes of the node and edge encoders."""

    node_dim: int = 16
    """d_v: side of every node and edge matrix."""
    cnn_channels: tuple[int, ...] = (8, 16, 16)
    """Output channels of the stride-2 convolutions (C = the last)."""
    edge_dim: int = 32
    """D_e: width of the row tokens of the edge encoder."""
    edge_heads: int = 2
    edges: bool = True
    """False: no edge encoder (the matrix-node / vector-node ablations that use no edges)."""

    def __post_init__(self) -> None:
        if self.node_dim < 1 or not self.cnn_channels or min(self.cnn_channels) < 1:
            raise ValueError("node_dim and every cnn channel count must be at least 1")
        if self.edge_dim % self.edge_heads:
            raise ValueError(f"edge_dim {self.edge_dim} not divisible by {self.edge_heads} heads")


class TileCNN(nn.Module):
    """``(M, 2, d, d)`` tiles → ``(M, C, V, V)`` feature maps."""

    def __init__(self, cfg: GraphConfig) -> None:
        super().__init__()
        chans = (2, *cfg.cnn_channels)
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, stride=2, padding=1)
                                   for i, o in zip(chans[:-1], chans[1:], strict=True))
        self.side = cfg.node_dim

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = F.gelu(conv(x))  # (M, c, s/2, s/2)
        return F.adaptive_avg_pool2d(x, self.side)  # (M, C, V, V)


class EdgeEncoder(nn.Module):
    """``η`` (B, N, K·C, V, V) → edges (B, N, N, V, V) (EFE)."""

    def __init__(self, cfg: GraphConfig, maps: int) -> None:
        super().__init__()
        v, d = cfg.node_dim, cfg.edge_dim
        self.heads = cfg.edge_heads
        self.tokens = nn.Linear(maps * v, d)
        self.norm_sa, self.norm_ca, self.norm_ff = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.sa_qkv, self.sa_out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ca_q, self.ca_kv, self.ca_out = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, v))

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)  # (..., T, D) -> (..., H, T, E)

    def _merge(self, x: Tensor) -> Tensor:
        return x.transpose(-3, -2).flatten(-2)  # (..., H, T, E) -> (..., T, D)

    def forward(self, eta: Tensor) -> Tensor:
        b, n, maps, v, _ = eta.shape
        rows = eta.permute(0, 1, 3, 2, 4).reshape(b, n, v, maps * v)  # (B, N, T=V, K·C·V)
        s = self.tokens(rows)  # (B, N, T, D)
        q, k, val = self.sa_qkv(self.norm_sa(s)).chunk(3, dim=-1)  # 3 x (B, N, T, D)
        att = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(val))
        s = s + self.sa_out(self._merge(att))  # EFE_SA: (B, N, T, D)
        h = self.norm_ca(s)
        q = self._heads(self.ca_q(h))[:, :, None]  # (B, N, 1, H, T, E): queries of node n
        k, val = self.ca_kv(h).chunk(2, dim=-1)  # (B, N, T, D) each: keys/values of node m
        k, val = self._heads(k)[:, None], self._heads(val)[:, None]  # (B, 1, N, H, T, E)
        q = q.expand(b, n, n, *q.shape[3:])  # (B, N, N, H, T, E)
        k, val = k.expand(b, n, n, *k.shape[3:]), val.expand(b, n, n, *val.shape[3:])
        att = F.scaled_dot_product_attention(q, k, val)  # EFE_CA: (B, N, N, H, T, E)
        pair = s[:, :, None] + self.ca_out(self._merge(att))  # (B, N, N, T, D)
        return self.ffn(self.norm_ff(pair))  # EFE_FFN: (B, N, N, T=V, V)


class CognitionGraph(nn.Module):
    """A batch of cognitions → nodes (B, N, V, V) and edges (B, N, N, V, V) or ``None``."""

    def __init__(self, config: GraphConfig, layout: CognitionLayout) -> None:
        super().__init__()
        self.config, self.layout = config, layout
        n, k, kp, d = layout.blocks, len(layout.tiles), len(layout.personal), layout.width
        c = config.cnn_channels[-1]
        self.cnn = TileCNN(config)
        self.node_weights = nn.Parameter(torch.randn(k * c) / (k * c) ** 0.5)  # NFE_FC
        self.node_bias = nn.Parameter(torch.zeros(config.node_dim, config.node_dim))
        self.edges = EdgeEncoder(config, k * c) if config.edges else None
        # Input standardisation (set from training persons by ``set_stats``; identity until then)
        self.register_buffer("theta_scale", torch.ones(n, k))
        self.register_buffer("key_mean", torch.zeros(n, kp, d, d))
        self.register_buffer("key_scale", torch.ones(n, kp))

    @torch.no_grad()
    def set_stats(self, cog: Cognition, min_scale: float = 1e-6) -> None:
        """Standardisation of the CNN input from a batch of (training) persons' cognitions."""
        self.theta_scale.copy_(cog.theta.flatten(2).std(dim=-1).clamp(min=min_scale))
        self.key_mean.copy_(cog.key.mean(dim=0))
        spread = (cog.key - cog.key.mean(dim=0)).flatten(3).std(dim=-1).mean(dim=0)  # (N, Kp)
        self.key_scale.copy_(spread.clamp(min=min_scale))

    def encode_tiles(self, cog: Cognition) -> Tensor:
        """η: (B, N, K·C, V, V), CNN features of every tile."""
        lay = self.layout
        b, n, kp, d, _ = cog.key.shape
        personal, shared = list(lay.personal), list(lay.shared)
        theta = cog.theta / self.theta_scale[..., None, None]  # (N, K, d, d)
        dev = (cog.key - self.key_mean) / self.key_scale[..., None, None]  # (B, N, Kp, d, d)
        own = torch.stack([theta[:, personal][None].expand(b, -1, -1, -1, -1)
                           + cog.key / self.theta_scale[:, personal, None, None], dev], dim=3)
        own = self.cnn(own.reshape(b * n * kp, 2, d, d))  # (B·N·Kp, C, V, V)
        own = own.unflatten(0, (b, n, kp))  # (B, N, Kp, C, V, V)
        k = len(lay.tiles)
        eta = own.new_zeros(b, n, k, *own.shape[3:])  # (B, N, K, C, V, V)
        eta[:, :, personal] = own
        if shared:
            gen = torch.stack([theta[:, shared], torch.zeros_like(theta[:, shared])], dim=2)
            gen = self.cnn(gen.reshape(n * len(shared), 2, d, d))  # (N·Ks, C, V, V)
            eta[:, :, shared] = gen.unflatten(0, (n, len(shared)))[None]  # broadcast over B
        return eta.flatten(2, 3)  # (B, N, K·C, V, V)

    def forward(self, cog: Cognition) -> tuple[Tensor, Tensor | None]:
        eta = self.encode_tiles(cog)  # (B, N, K·C, V, V)
        nodes = torch.einsum("bnmxy,m->bnxy", eta, self.node_weights) + self.node_bias
        edges = self.edges(eta) if self.edges is not None else None
        return nodes, edges  # (B, N, V, V), (B, N, N, V, V) | None
