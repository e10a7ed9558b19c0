"""Style encoder: at least 10 s of a listener's own coefficients → one unit style vector.

The style of a listener lives mostly in dynamics (how fast and how often they nod, blink, smile),
so each frame carries, beside its 58 coefficients, the first differences of the 6 pose dims as
per-second velocities. Shapes (ARCHITECTURE.md §4, CONVENTIONS.md names)::

    coeffs (B, T, K=58), valid (B, T) bool
      → frame features (B, T, F=K+6)      coefficients + pose velocity
      → per-frame MLP (B, T, D)
      → temporal blocks (B, T, D)         residual; depthwise dilated conv + per-frame MLP
      → masked attention pooling (B, D)   P heads, each a softmax over the valid frames
      → projection (B, S), L2-normalised

Frames with ``valid = False`` are replaced by zeros before every temporal mixing step (with
``torch.where``, so even NaN there cannot leak), a velocity needs both of its frames valid, and the
pooling gives those frames zero weight: the style does not depend on their values at all.

:func:`info_nce` is the supervised-contrastive loss of PerFRDiff (its Eq. 11, after Khosla et
al.): styles of clips of the same listener are pulled together, those of others pushed apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.face.layout import DIM, FPS, POSE

POSE_DIMS = POSE.stop - POSE.start
"""Pose coefficients whose velocities are extra features (rotation and translation)."""


@dataclass(frozen=True)
class StyleEncoderConfig:
    """Sizes of the style encoder; the defaults are the production ones."""

    coeff_dim: int = DIM
    width: int = 128
    """D: channels of the per-frame and temporal layers."""
    style_dim: int = 64
    """S: size of the unit style vector."""
    kernel_size: int = 5
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    """One temporal block per entry; receptive field 1 + (kernel - 1) · Σ dilations frames."""
    mlp_ratio: int = 2
    pool_heads: int = 4
    min_frames: int = 10 * FPS
    """Valid frames needed per listener (10 s at 25 fps)."""
    velocity_scale: float = float(FPS)
    """Pose differences are multiplied by this: per-frame steps become units per second."""
    stats: bool = False
    """Statistics pooling beside the attention pooling: the mean, standard deviation and mean
    absolute frame-to-frame change of every frame feature over the valid frames (how much and
    how fast each coefficient moves: blink rate, nod energy, smile level), standardised by
    buffers set on training clips (:meth:`StyleEncoder.set_stats`) and added to the pooled
    vector through a linear layer that starts at zero, so an encoder grown from one without
    statistics (:meth:`StyleEncoder.with_stats`) starts out computing the same styles."""

    def __post_init__(self) -> None:
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.width % self.pool_heads != 0:
            raise ValueError(f"width {self.width} is not divisible by {self.pool_heads} heads")

    @property
    def receptive_field(self) -> int:
        """Frames one output frame of the temporal stack can see."""
        return 1 + (self.kernel_size - 1) * sum(self.dilations)


class TemporalBlock(nn.Module):
    """Residual block: depthwise dilated conv over time, then a per-frame MLP (ConvNeXt-like)."""

    def __init__(
        self, width: int, kernel_size: int, dilation: int, mlp_ratio: int, **factory
    ) -> None:
        super().__init__()
        pad = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(
            width, width, kernel_size, padding=pad, dilation=dilation, groups=width, **factory
        )
        self.norm = nn.LayerNorm(width, **factory)
        self.up = nn.Linear(width, mlp_ratio * width, **factory)
        self.down = nn.Linear(mlp_ratio * width, width, **factory)

    def forward(self, h: Tensor, valid: Tensor) -> Tensor:
        """``h (B, T, D)`` with zeros at invalid frames → same shape, invalid frames zero."""
        u = self.conv(h.transpose(1, 2)).transpose(1, 2)  # (B, D, T) conv → (B, T, D)
        u = self.down(F.gelu(self.up(self.norm(u))))  # (B, T, D)
        return torch.where(valid[..., None], h + u, 0.0)


class StyleEncoder(nn.Module):
    """``coeffs (B, T, 58)``, ``valid (B, T)`` → unit style vectors ``(B, S)``."""

    def __init__(
        self,
        config: StyleEncoderConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        factory = {"device": device, "dtype": dtype}
        c = config
        features = c.coeff_dim + POSE_DIMS
        self.frame_in = nn.Linear(features, c.width, **factory)
        self.frame_out = nn.Linear(c.width, c.width, **factory)
        self.blocks = nn.ModuleList(
            TemporalBlock(c.width, c.kernel_size, d, c.mlp_ratio, **factory) for d in c.dilations
        )
        self.pool_norm = nn.LayerNorm(c.width, **factory)
        self.pool_score = nn.Linear(c.width, c.pool_heads, **factory)
        # No bias: a direction shared by every sample lets the contrastive loss collapse to one
        # style (it did on synthetic listeners); without it the styles must come from the input.
        self.project = nn.Linear(c.width, c.style_dim, bias=False, **factory)
        if c.stats:
            n = 3 * features
            self.stats_in = nn.Linear(n, c.width, **factory)
            nn.init.zeros_(self.stats_in.weight)
            nn.init.zeros_(self.stats_in.bias)
            self.register_buffer("stats_mean", torch.zeros(n, **factory))
            self.register_buffer("stats_std", torch.ones(n, **factory))

    def with_stats(self) -> StyleEncoder:
        """A copy of this encoder with statistics pooling added (``config.stats``): same
        weights, the new layer at zero, so it gives the same styles until trained."""
        if self.config.stats:
            raise ValueError("this style encoder already has statistics pooling")
        param = next(self.parameters())
        grown = StyleEncoder(dataclasses.replace(self.config, stats=True), device=param.device,
                             dtype=param.dtype)  # fmt: skip
        missing, unexpected = grown.load_state_dict(self.state_dict(), strict=False)
        if unexpected or not all(k.startswith("stats_") for k in missing):
            raise RuntimeError(f"with_stats: state mismatch {missing} {unexpected}")
        return grown

    def statistics(self, coeffs: Tensor, valid: Tensor | None = None) -> Tensor:
        """``(B, 3F)``: per frame feature its mean, standard deviation and mean absolute change
        between consecutive valid frames, over the valid frames (not standardised)."""
        valid = self._check(coeffs, valid)
        x = self._frame_features(coeffs, valid)  # (B, T, F)
        w = valid[..., None].to(x.dtype)  # (B, T, 1)
        n = w.sum(dim=1)  # (B, 1): at least min_frames
        mean = (x * w).sum(dim=1) / n  # (B, F)
        var = (((x - mean[:, None]) ** 2) * w).sum(dim=1) / n
        pair = (valid[:, 1:] & valid[:, :-1])[..., None].to(x.dtype)  # (B, T-1, 1)
        change = ((x[:, 1:] - x[:, :-1]).abs() * pair).sum(dim=1) / pair.sum(dim=1).clamp_min(1)
        return torch.cat([mean, var.clamp_min(0).sqrt(), change], dim=-1)  # (B, 3F)

    @torch.no_grad()
    def set_stats(self, coeffs: Tensor, valid: Tensor | None = None) -> None:
        """Standardise the statistics on these (training) clips ``(B, T, 58)``."""
        if not self.config.stats:
            raise ValueError("this style encoder has no statistics pooling")
        s = self.statistics(coeffs, valid)
        self.stats_mean.copy_(s.mean(dim=0))
        self.stats_std.copy_(s.std(dim=0).clamp_min(1e-4))

    def forward(self, coeffs: Tensor, valid: Tensor | None = None) -> Tensor:
        """Style vectors ``(B, S)`` of unit L2 norm.

        ``valid`` defaults to all frames. Raises ``ValueError`` when a sample has fewer than
        ``config.min_frames`` valid frames, or on wrong shapes.
        """
        valid = self._check(coeffs, valid)
        x = self._frame_features(coeffs, valid)  # (B, T, F)
        h = self.frame_out(F.gelu(self.frame_in(x)))  # (B, T, D)
        h = torch.where(valid[..., None], h, 0.0)
        for block in self.blocks:
            h = block(h, valid)  # (B, T, D)
        pooled = self._pool(h, valid)  # (B, D)
        if self.config.stats:
            z = (self.statistics(coeffs, valid) - self.stats_mean) / self.stats_std  # (B, 3F)
            pooled = pooled + self.stats_in(z)
        return F.normalize(self.project(pooled), dim=-1)  # (B, S)

    def _check(self, coeffs: Tensor, valid: Tensor | None) -> Tensor:
        """Validate shapes and lengths; returns ``valid`` as a ``(B, T)`` bool tensor."""
        c = self.config
        if coeffs.ndim != 3 or coeffs.shape[-1] != c.coeff_dim:
            got = tuple(coeffs.shape)
            raise ValueError(f"coeffs: expected shape (B, T, {c.coeff_dim}), got {got}")
        if valid is None:
            valid = torch.ones(coeffs.shape[:2], dtype=torch.bool, device=coeffs.device)
        if valid.shape != coeffs.shape[:2]:
            want, got = tuple(coeffs.shape[:2]), tuple(valid.shape)
            raise ValueError(f"valid: expected shape {want}, got {got}")
        valid = valid.to(torch.bool)
        counts = valid.sum(dim=1)  # (B,)
        short = int(counts.argmin())
        if int(counts[short]) < c.min_frames:
            raise ValueError(
                f"style needs at least {c.min_frames} valid frames ({c.min_frames / FPS:g} s at "
                f"{FPS} fps) of the listener; sample {short} has {int(counts[short])} "
                f"of {coeffs.shape[1]} frames"
            )
        return valid

    def _frame_features(self, coeffs: Tensor, valid: Tensor) -> Tensor:
        """Coefficients and pose velocities ``(B, T, F)``; zero where a frame (or,
        for a velocity, its predecessor) is invalid."""
        x = torch.where(valid[..., None], coeffs, 0.0)  # (B, T, K)
        pose = x[..., POSE]  # (B, T, 6)
        step = (pose[:, 1:] - pose[:, :-1]) * self.config.velocity_scale  # (B, T-1, 6)
        velocity = F.pad(step, (0, 0, 1, 0))  # (B, T, 6): the first frame has no predecessor
        pair = F.pad(valid[:, 1:] & valid[:, :-1], (1, 0))  # (B, T): frame and predecessor valid
        feats = torch.cat([x, velocity], dim=-1)  # (B, T, F = K + 6)
        keep = torch.cat(
            [valid[..., None].expand_as(x), pair[..., None].expand_as(velocity)], dim=-1
        )  # (B, T, F)
        return torch.where(keep, feats, 0.0)

    def _pool(self, h: Tensor, valid: Tensor) -> Tensor:
        """Masked multi-head attention pooling: each head averages its slice of D."""
        heads = self.config.pool_heads
        scores = self.pool_score(self.pool_norm(h))  # (B, T, P)
        scores = scores.masked_fill(~valid[..., None], float("-inf"))
        weights = scores.softmax(dim=1)  # (B, T, P), sums to 1 over valid frames
        values = h.unflatten(-1, (heads, -1))  # (B, T, P, D/P)
        pooled = torch.einsum("btp,btpd->bpd", weights, values)  # (B, P, D/P)
        return pooled.flatten(1)  # (B, D)


def info_nce(
    style_a: Tensor, style_b: Tensor, labels: Tensor | None = None, temperature: float = 0.1
) -> Tensor:
    """Supervised-contrastive loss over two views ``style_a``, ``style_b`` ``(B, S)``.

    The 2B styles are anchors; for anchor ``i`` the positives are every other style with the same
    label (its own other view always among them, plus any further clips of the same listener in
    the batch) and the denominator runs over all other styles::

        L = mean_i  -1/|Q(i)| Σ_{q∈Q(i)} log( exp(s_i·s_q/τ) / Σ_{g≠i} exp(s_i·s_g/τ) )

    ``labels (B,)`` are person ids; ``None`` makes only the two views of one row positives (plain
    InfoNCE). Styles are L2-normalised here, so cosine similarity is used either way.
    """
    if style_a.shape != style_b.shape or style_a.ndim != 2:
        got = (tuple(style_a.shape), tuple(style_b.shape))
        raise ValueError(f"styles must both be (B, S), got {got[0]} and {got[1]}")
    n = style_a.shape[0]
    if labels is None:
        labels = torch.arange(n, device=style_a.device)
    if labels.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},), got {tuple(labels.shape)}")
    z = F.normalize(torch.cat([style_a, style_b]), dim=-1)  # (2B, S)
    ids = torch.cat([labels, labels])  # (2B,)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)  # (2B, 2B)
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))  # (2B, 2B)
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)  # (2B, 2B)
    positive = (ids[:, None] == ids[None, :]) & ~self_mask  # (2B, 2B)
    pos_log_prob = torch.where(positive, log_prob, 0.0).sum(dim=1)  # (2B,)
    return -(pos_log_prob / positive.sum(dim=1)).mean()
