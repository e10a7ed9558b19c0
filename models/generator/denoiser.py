"""The generator's denoiser: a transformer decoder that predicts a clean listener window (x0).

Dimensions: B batch, W window frames, C speaker context frames, P listener previous frames,
S = 1 + P + C memory tokens, D width, H heads, E = D / H head width.

Condition encoder (:meth:`Denoiser.encode`, once per window, independent of the noise):

- speaker frame ``c`` of the context becomes one token from ``[audio, face, audio_ok, face_ok]``
  (an invalid stream is zeroed, so a frame with audio but no face still counts); the listener's
  previous frame ``p`` becomes one token from its 58 coefficients; a learned *null* token, always
  valid, comes first. Tokens get a type embedding and a sinusoidal position on one time axis
  relative to the window start ``t`` (context frames at ``−C..−1``, previous frames at ``−P..−1``,
  window frames at ``0..W−1``).
- The previous listener frames are thus **memory tokens** next to the speaker, not prefix tokens
  of the window's self-attention: the window's self-attention stays W tokens long, and the
  cross-attention (where most personal shifts act) reads the listener's own recent behaviour.
- ``encoder_layers`` pre-norm self-attention layers mix the S tokens with a key padding mask.
  Invalid tokens are never attended to; the null token means no row is ever all-masked, so an
  all-invalid context gives a finite output (the null token's) rather than NaN.

Decoder (:meth:`Denoiser.decode`, once per sampling step): the noisy window ``x_t`` projected to
D plus positions plus an embedding of the diffusion step; ``layers`` pre-norm blocks of
self-attention over the W tokens, cross-attention to the memory, feed-forward; a final norm and
a linear head to 58: blendshapes through a sigmoid (0..1), pose linear.

Per-listener low-rank shifts (``Shifts``) are forward arguments; the linears they may target are
named as in ``named_modules`` (``"layers.0.cross_attn.q"``, ``"head"``): see
:meth:`Denoiser.shift_targets`. Shifts act on the decoder only, so one encoded memory serves
every sampling step and any listener.

Diffusion space: ``x_t`` is in ``z = (x − face_mean) / face_std`` (buffers, identity until a
recipe calls :meth:`Denoiser.set_face_stats`), the prediction in coefficients. A recipe should
set them: on the default synthetic world the listener's pose dims have a std of 0.03..0.08 and
the widest blendshape 0.2, and few-step DDIM shrinks a dim whose spread is small next to the unit
noise towards its conditional mean (for Gaussian data of std 0.05, 4 steps keep about 12 % of
the spread; of std 1, 74 %). :func:`sample_windows` is the live path: encode once, few-step DDIM
in z, back to coefficients.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.face import layout
from models.generator.config import GeneratorConfig
from models.generator.lowrank import Shifts, scope, shifted_linear
from models.generator.sampler import ddim_sample, few_step_sample
from models.generator.schedule import alphas_cumprod

SHIFT_KIND_LAYERS: dict[str, tuple[str, ...]] = {
    "cross_attn_q": ("cross_attn.q",),
    "cross_attn_kv": ("cross_attn.k", "cross_attn.v"),
    "cross_attn_out": ("cross_attn.out",),
    "ff_in": ("ff.fc_in",),
    "ff_out": ("ff.fc_out",),
}
"""Per decoder layer, the linears each shift kind targets (``"head"`` is the output head)."""


def sinusoid(positions: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of (possibly negative) positions: ``(...,) -> (..., dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=positions.device) / half)
    args = positions.to(torch.float32)[..., None] * freqs  # (..., half)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)  # (..., 2 * half)
    return F.pad(emb, (0, dim - 2 * half))  # (..., dim)


def lag_filters(k: int, context: int) -> Tensor:
    """``(k, context)`` rows of non-negative weights summing to 1: Gaussian bumps centred ``1 ..
    context`` frames before the window (spread growing with the lag), the initial temporal
    filters of the summary tokens. Column ``context − 1`` is the last frame before ``t``."""
    lag = torch.arange(context, 0, -1, dtype=torch.float32)  # (C,): lag of each column
    centres = torch.linspace(1.0, float(context), k)[:, None]  # (K, 1)
    width = 1.0 + 0.15 * centres
    w = torch.exp(-0.5 * ((lag[None] - centres) / width) ** 2)  # (K, C)
    return w / w.sum(dim=1, keepdim=True)


class Memory(NamedTuple):
    """The encoded condition: tokens and which of them may be attended to."""

    tokens: Tensor  # (B, S, D)
    valid: Tensor  # (B, S) bool


class Attention(nn.Module):
    """Multi-head attention with its own q/k/v/out linears, each open to a low-rank shift."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))

    def split(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        x = x.reshape(b, n, self.heads, d // self.heads)  # (B, N, D) -> (B, N, H, E)
        return x.transpose(1, 2)  # (B, N, H, E) -> (B, H, N, E)

    def forward(self, x: Tensor, memory: Tensor, valid: Tensor | None, shifts: Shifts) -> Tensor:
        """``x`` (B, N, D) attends to ``memory`` (B, S, D) where ``valid`` (B, S) is true."""
        q = self.split(shifted_linear(x, self.q, shifts.get("q")))  # (B, H, N, E)
        k = self.split(shifted_linear(memory, self.k, shifts.get("k")))  # (B, H, S, E)
        v = self.split(shifted_linear(memory, self.v, shifts.get("v")))  # (B, H, S, E)
        mask = None if valid is None else valid[:, None, None, :]  # (B, S) -> (B, 1, 1, S)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, N, E)
        y = y.transpose(1, 2).flatten(2)  # (B, H, N, E) -> (B, N, H, E) -> (B, N, D)
        return shifted_linear(y, self.out, shifts.get("out"))  # (B, N, D)


class FeedForward(nn.Module):
    def __init__(self, d: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc_in, self.fc_out = nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, shifts: Shifts) -> Tensor:
        h = F.gelu(shifted_linear(x, self.fc_in, shifts.get("fc_in")))  # (B, N, hidden)
        return shifted_linear(self.drop(h), self.fc_out, shifts.get("fc_out"))  # (B, N, D)


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + feed-forward over the condition tokens (no shifts)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = Attention(d, cfg.heads, cfg.dropout)
        self.ff = FeedForward(d, cfg.ff, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h, valid, {}))  # (B, S, D)
        return x + self.drop(self.ff(self.norm2(x), {}))  # (B, S, D)


class DecoderLayer(nn.Module):
    """Pre-norm self-attention over the window, cross-attention to memory, feed-forward."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = Attention(d, cfg.heads, cfg.dropout)
        self.cross_attn = Attention(d, cfg.heads, cfg.dropout)
        self.ff = FeedForward(d, cfg.ff, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, memory: Memory, shifts: Shifts) -> Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h, None, scope(shifts, "self_attn")))  # (B, W, D)
        h = self.cross_attn(self.norm2(x), memory.tokens, memory.valid, scope(shifts, "cross_attn"))
        x = x + self.drop(h)  # (B, W, D)
        return x + self.drop(self.ff(self.norm3(x), scope(shifts, "ff")))  # (B, W, D)


class Denoiser(nn.Module):
    """x0-predicting denoiser of a listener window given speaker context and listener past."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = cfg = config
        d, f = cfg.d_model, cfg.face_dim
        # Per-feature normalisation of the audio input and of the diffusion space; a training
        # recipe sets both from its data (identity until then).
        self.register_buffer("audio_mean", torch.zeros(cfg.audio_dim))
        self.register_buffer("audio_std", torch.ones(cfg.audio_dim))
        self.register_buffer("face_mean", torch.zeros(f))
        self.register_buffer("face_std", torch.ones(f))
        self.speaker_in = nn.Linear(cfg.audio_dim + f + 2, d)
        self.prev_in = nn.Linear(f, d)
        if cfg.summary_tokens:
            self.summary_mix = nn.Parameter(lag_filters(cfg.summary_tokens, cfg.context))  # (K, C)
            self.summary_in = nn.Linear(cfg.audio_dim + f + 2, d)
            self.summary_embed = nn.Parameter(torch.randn(cfg.summary_tokens, d) * 0.02)  # (K, D)
        self.null_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)  # (1, 1, D)
        self.type_embed = nn.Parameter(torch.randn(2, d) * 0.02)  # (2, D): previous, speaker
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.encoder_norm = nn.LayerNorm(d)
        self.x_in = nn.Linear(f, d)
        self.step_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(d)
        self.head = nn.Linear(d, f)
        self.drop = nn.Dropout(cfg.dropout)
        self.shift_names: tuple[str, ...] = self._shift_names()

    def _shift_names(self) -> tuple[str, ...]:
        names = []
        for i in range(self.config.layers):
            for kind in self.config.shift_layers:
                names += [f"layers.{i}.{rel}" for rel in SHIFT_KIND_LAYERS.get(kind, ())]
        return (*names, "head") if "head" in self.config.shift_layers else tuple(names)

    def shift_targets(self) -> dict[str, tuple[int, int]]:
        """``(out_features, in_features)`` of every linear ``config.shift_layers`` selects."""
        out = {}
        for name in self.shift_names:
            lin = self.get_submodule(name)
            out[name] = (lin.out_features, lin.in_features)
        return out

    @torch.no_grad()
    def set_audio_stats(self, mean: Tensor, std: Tensor, min_std: float = 1e-3) -> None:
        """Per-feature audio normalisation ``(audio − mean) / std`` (set once, from data; the
        raw MFCCs have means down to −15 and stds up to 23)."""
        self.audio_mean.copy_(mean)
        self.audio_std.copy_(std.clamp(min=min_std))

    @torch.no_grad()
    def set_face_stats(self, mean: Tensor, std: Tensor, min_std: float = 0.05) -> None:
        """Per-coefficient map of listener windows into the diffusion space (set once, from
        data): diffusion runs on ``z = (x − mean) / std``; see :meth:`normalize`. The floor
        keeps near-constant dims (blendshapes that never move) from being blown up."""
        self.face_mean.copy_(mean)
        self.face_std.copy_(std.clamp(min=min_std))

    def normalize(self, x: Tensor) -> Tensor:
        """Coefficients ``(..., 58)`` → diffusion space ``z``."""
        return (x - self.face_mean.to(x.dtype)) / self.face_std.to(x.dtype)

    def denormalize(self, z: Tensor) -> Tensor:
        """Diffusion space ``z`` ``(..., 58)`` → coefficients."""
        return z * self.face_std.to(z.dtype) + self.face_mean.to(z.dtype)

    def encode(self, speaker_audio: Tensor, speaker_face: Tensor, context_valid: Tensor,
               prev: Tensor, prev_valid: Tensor, audio_valid: Tensor | None = None
               ) -> Memory:  # fmt: skip
        """Condition tokens of a batch of windows.

        ``speaker_audio`` (B, C, 78), ``speaker_face`` (B, C, 58), ``context_valid`` (B, C) bool
        (face found), ``prev`` (B, P, 58), ``prev_valid`` (B, P) bool, ``audio_valid`` (B, C)
        bool (default: ``context_valid``). Values at invalid frames are never read.
        """
        b, c, _ = speaker_face.shape
        p = prev.shape[1]
        face_ok = context_valid.bool()
        audio_ok = face_ok if audio_valid is None else audio_valid.bool()
        audio = (speaker_audio - self.audio_mean) / self.audio_std  # (B, C, 78)
        audio = torch.where(audio_ok[..., None], audio, 0.0)
        face = torch.where(face_ok[..., None], speaker_face, 0.0)
        flags = torch.stack([audio_ok, face_ok], dim=-1).to(face.dtype)  # (B, C, 2)
        frames = torch.cat([audio, face, flags], dim=-1)  # (B, C, 78 + 58 + 2)
        speaker = self.speaker_in(frames)  # (B, C, D)
        speaker = speaker + self.type_embed[1] + sinusoid(
            torch.arange(-c, 0, device=face.device), self.config.d_model).to(face.dtype)
        prev_ok = prev_valid.bool()
        past = self.prev_in(torch.where(prev_ok[..., None], prev, 0.0))  # (B, P, D)
        past = past + self.type_embed[0] + sinusoid(
            torch.arange(-p, 0, device=face.device), self.config.d_model).to(face.dtype)
        null = self.null_token.to(face.dtype).expand(b, 1, -1)  # (1, 1, D) -> (B, 1, D)
        parts, flags = [null, past, speaker], [prev_ok, face_ok | audio_ok]
        if self.config.summary_tokens:
            # invalid frames are zeros in ``frames``, so a summary of none is a constant token
            mixed = torch.einsum("kc,bcf->bkf", self.summary_mix.to(frames.dtype), frames)
            parts.append(self.summary_in(mixed) + self.summary_embed)  # (B, K, D)
            flags.append(torch.ones(b, self.config.summary_tokens, dtype=torch.bool,
                                    device=face.device))  # fmt: skip
        tokens = self.drop(torch.cat(parts, dim=1))  # (B, S, D), S = 1 + P + C (+ K)
        always = torch.ones(b, 1, dtype=torch.bool, device=face.device)
        valid = torch.cat([always, *flags], dim=1)  # (B, S)
        for layer in self.encoder:
            tokens = layer(tokens, valid)
        return Memory(self.encoder_norm(tokens), valid)

    def check_shifts(self, shifts: Shifts | None) -> None:
        """``ValueError`` for a shift whose name ``config.shift_layers`` does not select."""
        unknown = sorted(set(shifts or {}) - set(self.shift_names))
        if unknown:
            raise ValueError(f"unknown shift layers {unknown}; this model shifts "
                             f"{list(self.shift_names)}")  # fmt: skip

    def decode(self, x_t: Tensor, step: Tensor, memory: Memory,
               shifts: Shifts | None = None) -> Tensor:  # fmt: skip
        """x0 prediction ``(B, W, 58)`` from the noisy window ``x_t`` (B, W, 58) at diffusion
        ``step`` (B,) given the encoded condition; layers without a shift use shared weights.

        ``x_t`` lives in the diffusion space (:meth:`normalize`), the prediction in coefficient
        space (blendshapes in 0..1); with the default identity stats the two coincide.
        """
        self.check_shifts(shifts)
        w = x_t.shape[1]
        d = self.config.d_model
        pos = sinusoid(torch.arange(w, device=x_t.device), d).to(x_t.dtype)  # (W, D)
        t_emb = self.step_mlp(sinusoid(step, d).to(x_t.dtype))  # (B,) -> (B, D)
        x = self.drop(self.x_in(x_t) + pos + t_emb[:, None, :])  # (B, W, D)
        for i, layer in enumerate(self.layers):
            x = layer(x, memory, scope(shifts, f"layers.{i}"))
        out = shifted_linear(self.norm_out(x), self.head, (shifts or {}).get("head"))  # (B, W, 58)
        expression = torch.sigmoid(out[..., layout.EXPRESSION])  # (B, W, 52) in (0, 1)
        return torch.cat([expression, out[..., layout.POSE]], dim=-1)  # (B, W, 52 + 6)

    def forward(self, x_t: Tensor, step: Tensor, speaker_audio: Tensor, speaker_face: Tensor,
                context_valid: Tensor, prev: Tensor, prev_valid: Tensor,
                shifts: Shifts | None = None, audio_valid: Tensor | None = None
                ) -> Tensor:  # fmt: skip
        """``decode(x_t, step, encode(...), shifts)``: x0 prediction ``(B, W, 58)``."""
        memory = self.encode(speaker_audio, speaker_face, context_valid, prev, prev_valid,
                             audio_valid)  # fmt: skip
        return self.decode(x_t, step, memory, shifts)


def sample_windows(model: Denoiser, memory: Memory, shifts: Shifts | None = None, *,
                   steps: int | None = None, generator: torch.Generator,
                   x_T: Tensor | None = None, guidance: float = 1.0,
                   uncond: Memory | None = None, full_ddim: bool = False) -> Tensor:  # fmt: skip
    """One reaction window per condition in ``memory``: few-step DDIM in the diffusion space,
    returned as coefficients ``(B, W, 58)``. ``steps`` defaults to ``config.sample_steps``.

    ``guidance`` ≠ 1 is classifier-free guidance: ``x̂0 = x̂0(∅) + g (x̂0(c) − x̂0(∅))`` with
    ``uncond`` the memory encoded without the speaker context (:meth:`Denoiser.encode` with every
    context frame invalid), two decoder calls per step; the guided blendshapes are clamped to
    0..1, as the network's own output is. ``full_ddim`` lifts the few-step cap
    (DDIM with any number of steps, as PerFRDiff samples).
    """
    cfg = model.config
    ac = alphas_cumprod(cfg.diffusion_steps, cfg.schedule_offset)
    tokens = memory.tokens
    shape = (tokens.shape[0], cfg.window, cfg.face_dim)
    if guidance != 1.0 and uncond is None:
        raise ValueError("classifier-free guidance needs the unconditional memory (uncond)")

    def denoise(z_t: Tensor, step: Tensor) -> Tensor:  # in and out of the diffusion space
        z0 = model.normalize(model.decode(z_t, step, memory, shifts))
        if guidance == 1.0:
            return z0
        z0_u = model.normalize(model.decode(z_t, step, uncond, shifts))
        x0 = model.denormalize(z0_u + guidance * (z0 - z0_u))  # extrapolated: back into range
        x0 = torch.cat([x0[..., layout.EXPRESSION].clamp(0.0, 1.0), x0[..., layout.POSE]], -1)
        return model.normalize(x0)

    n = steps or cfg.sample_steps
    if full_ddim:
        z0 = ddim_sample(denoise, shape, ac, steps=n, generator=generator, device=tokens.device,
                         dtype=tokens.dtype, x_T=x_T)  # fmt: skip
    else:
        z0 = few_step_sample(denoise, shape, ac, steps=n, generator=generator,
                             device=tokens.device, dtype=tokens.dtype, x_T=x_T)  # fmt: skip
    x0 = model.denormalize(z0)  # the round trip through z may leave 1e-9 outside 0..1
    return torch.cat([x0[..., layout.EXPRESSION].clamp(0.0, 1.0), x0[..., layout.POSE]], -1)
