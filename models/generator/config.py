"""The generator's configuration: sizes of the denoiser, the diffusion and the low-rank shifts.

A checkpoint stores :meth:`GeneratorConfig.to_dict` as JSON beside its weights;
:meth:`GeneratorConfig.from_dict` rebuilds it and rejects keys it does not know. Sizes live in
the builder functions :func:`default_config` and :func:`tiny_config`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from models.face import layout

SHIFT_LAYER_KINDS: tuple[str, ...] = (
    "cross_attn_q", "cross_attn_kv", "cross_attn_out", "ff_in", "ff_out", "head",
)  # fmt: skip
"""Kinds of linear layer a listener's low-rank shift may target (see ``Denoiser.shift_targets``):
the cross-attention query, key + value, output projections and the two feed-forward linears of
every decoder layer, and the output head."""


@dataclass(frozen=True)
class GeneratorConfig:
    """Every size of the generator. Frame counts are at 25 fps."""

    hash_exclude: ClassVar[tuple[str, ...]] = ("sample_steps", "sample_guidance",
                                               "sample_feedback", "expression_spread",
                                               "shift_spread_gain")  # fmt: skip
    """Live-sampler defaults and the population's measured spreads, not part of the model: the
    fingerprint of a generator (``models.personal.enrolment.model_hash``) does not change when
    they are retuned or measured."""

    window: int = 8
    """W: listener frames generated per window (320 ms)."""
    context: int = 50
    """C: speaker frames of past context (2 s)."""
    prev: int = 8
    """P: listener previous frames fed back as condition."""
    audio_dim: int = layout.AUDIO_FEATURE_DIM
    face_dim: int = layout.DIM
    d_model: int = 128
    """D: token width."""
    heads: int = 4
    layers: int = 2
    """Decoder layers (self-attention, cross-attention, feed-forward)."""
    encoder_layers: int = 1
    """Layers of the condition encoder (self-attention over speaker + previous-listener tokens)."""
    summary_tokens: int = 0
    """Memory tokens that each read the whole speaker context through a learned temporal filter
    (``C`` weights, initialised as lagged averages from 40 ms to 2 s back): lagged, smoothed
    speaker behaviour, such as a smile 0.4 s ago, in one token instead of an attention pattern to
    learn. 0: none (one token per frame only)."""
    ff: int = 256
    """Hidden width of every feed-forward block."""
    dropout: float = 0.1
    diffusion_steps: int = 1000
    """Training steps of the cosine schedule."""
    sample_steps: int = 4
    """Default number of denoiser calls per window for the live few-step sampler."""
    sample_guidance: float = 1.0
    """Default classifier-free guidance scale of the live sampler (1 = none; the tuning stage
    of the default pipeline chooses it on the val split)."""
    sample_feedback: bool = True
    """Default of the live sampler: feed each generated window back as the previous listener
    frames of the next one. ``False``: the previous frames stay the enrolment's resting face
    (none for the generic listener), so a window never conditions on the generator's own
    output; the tuning stage chooses on the val split (a generator trained on real previous
    frames can drift on its own ones: exposure bias)."""
    expression_spread: float | None = None
    """The training population's expression spread (``models.personal.enrolment.
    expression_spread`` over every train clip; ``rapport train spread`` measures it). An
    enrolled listener's reaction is scaled by their own spread relative to it
    (``models.generator.online.EXPRESSIVITY_POWER``); ``None``: no scaling."""
    shift_spread_gain: float | None = None
    """How much the listeners' shifts shrink the generated expression: the expression spread of
    the generic model's online reactions over that of the same reactions under each listener's
    shifts, on train persons (``rapport train spread --personal CKPT`` measures it for one
    hypernetwork). An enrolled session with shifts and a resting face has its expressivity gain
    multiplied by it, so the shifts change the reaction's form, not its amplitude; ``None``: 1."""
    schedule_offset: float = 0.008
    """``s`` of the cosine schedule (Nichol & Dhariwal 2021)."""
    shift_rank: int = 4
    """r of every low-rank shift ``A (out, r) @ B (r, in)``."""
    shift_layers: tuple[str, ...] = ("cross_attn_q", "ff_out", "head")
    """Layer kinds (from :data:`SHIFT_LAYER_KINDS`) that carry per-listener shifts."""
    expression_weight: float = 1.0
    """Loss weight of the 52 blendshape dims."""
    pose_weight: float = 1.0
    """Loss weight of the 6 pose dims."""

    def __post_init__(self) -> None:
        sizes = {"window": self.window, "context": self.context, "prev": self.prev,
                 "d_model": self.d_model, "heads": self.heads, "layers": self.layers,
                 "ff": self.ff, "diffusion_steps": self.diffusion_steps,
                 "sample_steps": self.sample_steps, "shift_rank": self.shift_rank}  # fmt: skip
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.summary_tokens < 0:
            raise ValueError(f"summary_tokens must be at least 0, got {self.summary_tokens}")
        if self.encoder_layers < 0:
            raise ValueError(f"encoder_layers must be at least 0, got {self.encoder_layers}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        if self.face_dim != layout.DIM:
            raise ValueError(f"face_dim must be {layout.DIM} (models.face.layout)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.sample_guidance <= 10.0:
            raise ValueError(f"sample_guidance must be in [0, 10], got {self.sample_guidance}")
        if self.shift_spread_gain is not None and not (
                isinstance(self.shift_spread_gain, int | float)
                and math.isfinite(self.shift_spread_gain) and self.shift_spread_gain > 0):
            raise ValueError(f"shift_spread_gain must be a positive number or null, got "
                             f"{self.shift_spread_gain!r}")  # fmt: skip
        if self.expression_spread is not None and not (
                isinstance(self.expression_spread, int | float)
                and math.isfinite(self.expression_spread) and self.expression_spread > 0):
            raise ValueError(f"expression_spread must be a positive number or null, got "
                             f"{self.expression_spread!r}")  # fmt: skip
        if self.sample_steps > self.diffusion_steps:
            raise ValueError("sample_steps cannot exceed diffusion_steps")
        unknown = [k for k in self.shift_layers if k not in SHIFT_LAYER_KINDS]
        if unknown:
            raise ValueError(f"unknown shift_layers {unknown}; choose among {SHIFT_LAYER_KINDS}")
        if len(set(self.shift_layers)) != len(self.shift_layers):
            raise ValueError(f"shift_layers has duplicates: {self.shift_layers}")
        if min(self.expression_weight, self.pose_weight) < 0:
            raise ValueError("loss weights must be non-negative")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["shift_layers"] = list(self.shift_layers)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        """Inverse of :meth:`to_dict`; a key this version does not know is a ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown generator config keys {unknown}")
        values = dict(data)
        if "shift_layers" in values:
            values["shift_layers"] = tuple(values["shift_layers"])
        return cls(**values)


def default_config() -> GeneratorConfig:
    """The generator a training run builds by default: D 128, 2 decoder layers, 1 encoder
    layer, 16 summary tokens, 4 sample steps (until the tuning stage chooses). The weights
    bundled now were trained before summary tokens existed and carry their own config (0)."""
    return GeneratorConfig(summary_tokens=16)


def tiny_config() -> GeneratorConfig:
    """Two layers of width 16 and short contexts, no dropout: for fast tests."""
    return GeneratorConfig(context=12, prev=4, d_model=16, heads=2, layers=2, encoder_layers=1,
                           ff=32, dropout=0.0, shift_rank=2)  # fmt: skip
