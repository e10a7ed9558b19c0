"""Configuration of the synthetic dyadic world and the styles its persons act with.

Three kinds of frozen dataclass live here:

- :class:`WorldConfig`: what ``make_world`` builds (size, seed, script sharing, split fractions).
- :class:`SpeakerStyle` and :class:`ListenerStyle`: how one person talks or reacts. A style has a
  part that follows the person's Big-Five traits through a documented monotone map
  (:data:`SPEAKER_TRAIT_MAP`, :data:`LISTENER_TRAIT_MAP`) and an idiosyncratic *signature* drawn
  once per person from its own generator (voice, resting pose, preferred back-channel, ...).

Traits are ordered as :data:`models.data.react_layout.TRAIT_NAMES`, each in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np

from models.data.react_layout import TRAIT_NAMES
from models.face import layout

SITE = "Synthetic"
"""Site component of every person id (``Synthetic/s007/listener``)."""
SOURCE = "synthetic-world"
"""``source`` field of ``rapport.json``."""
WORLD_VERSION = 1
"""Bumped whenever the same config and seed would produce different files."""
MIN_SECONDS = 4.0
MAX_SECONDS = 600.0


class TraitLink(NamedTuple):
    """One row of a trait map: ``value = low + (high - low) * traits[trait]`` (monotone)."""

    trait: str
    low: float
    high: float
    unit: str
    meaning: str


def trait_value(link: TraitLink, traits: np.ndarray) -> float:
    """The style value ``traits`` give through ``link`` (linear from ``low`` to ``high``)."""
    level = float(np.clip(traits[TRAIT_NAMES.index(link.trait)], 0.0, 1.0))
    return link.low + (link.high - link.low) * level


LISTENER_TRAIT_MAP: dict[str, TraitLink] = {
    "expressivity": TraitLink("extraversion", 0.45, 1.5, "×",
                              "gain on every reaction amplitude and on head motion"),
    "smile_propensity": TraitLink("extraversion", 0.1, 0.8, "prob.",
                                  "chance that a back-channel includes a smile"),
    "tonic_smile": TraitLink("extraversion", 0.0, 0.16, "score", "resting smile level"),
    "mimicry_gain": TraitLink("agreeableness", 0.05, 0.7, "×",
                              "share of the speaker's smile and brow raise mirrored"),
    "nod_propensity": TraitLink("agreeableness", 0.15, 0.95, "prob.",
                                "chance of nodding at a phrase end that fully invites it"),
    "brow_tension": TraitLink("neuroticism", 0.0, 0.35, "score",
                              "resting brow lowering and inner-brow raise"),
    "blink_rate": TraitLink("neuroticism", 8.0, 32.0, "1/min", "spontaneous blink rate"),
    "variability": TraitLink("openness", 0.4, 1.6, "×",
                             "spread of reaction amplitudes, durations and noise"),
    "delay_sd": TraitLink("conscientiousness", 0.16, 0.04, "s",
                          "spread of the reaction delay (timing regularity)"),
}  # fmt: skip
"""Listener style parameters that follow a trait (``delay_sd`` decreases with it)."""

SPEAKER_TRAIT_MAP: dict[str, TraitLink] = {
    "expressivity": TraitLink("extraversion", 0.5, 1.4, "×",
                              "smile, brow and accent-nod gain; loudness"),
    "pitch_range": TraitLink("extraversion", 1.5, 5.0, "semitones", "pitch accent height"),
    "head_motion": TraitLink("extraversion", 0.02, 0.06, "rad", "head rotation noise s.d."),
    "tonic_smile": TraitLink("agreeableness", 0.0, 0.12, "score", "resting smile level"),
    "brow_tension": TraitLink("neuroticism", 0.0, 0.3, "score", "resting brow lowering"),
    "blink_rate": TraitLink("neuroticism", 10.0, 28.0, "1/min", "spontaneous blink rate"),
    "variability": TraitLink("openness", 0.5, 1.5, "×", "pitch wobble and expression noise"),
    "rate_jitter": TraitLink("conscientiousness", 0.35, 0.1, "rel.",
                             "spread of syllable durations (rhythm regularity)"),
}  # fmt: skip
"""Speaker style parameters that follow a trait."""


@dataclass(frozen=True)
class SpeakerStyle:
    """How one speaker talks: trait-driven fields first, then its signature (voice, pose)."""

    expressivity: float
    pitch_range: float
    head_motion: float
    tonic_smile: float
    brow_tension: float
    blink_rate: float
    variability: float
    rate_jitter: float
    f0_hz: float
    """Mean fundamental frequency of the voice."""
    formant_scale: float
    """Vocal-tract scale: formant frequencies are multiplied by it (shorter tract = higher)."""
    syllable_rate: float
    """Syllables per second while talking."""
    declination: float
    """Pitch drop across a phrase, semitones."""
    fall_gain: float
    """How fully the speaker realises a script's phrase-final fall (×)."""
    jaw_gain: float
    smile_asymmetry: float
    """Left minus right smile share, in [-0.3, 0.3]."""
    rest_pose: tuple[float, ...]
    """Resting pitch, yaw, roll (rad) and tx, ty, tz."""


@dataclass(frozen=True)
class ListenerStyle:
    """How one listener reacts: trait-driven fields first, then its signature."""

    expressivity: float
    smile_propensity: float
    tonic_smile: float
    mimicry_gain: float
    nod_propensity: float
    brow_tension: float
    blink_rate: float
    variability: float
    delay_sd: float
    delay_mean: float
    """Mean reaction delay, s (each event draws its own delay, clipped to the human range)."""
    nod_amplitude: float
    """Peak pitch of a nod, rad."""
    nod_frequency: float
    """Nod cycles per second."""
    nod_cycles: int
    smile_asymmetry: float
    preference: tuple[float, float, float, float]
    """Relative preference for nod, smile, brow raise and pressed-lips back-channels."""
    rest_pose: tuple[float, ...]
    """Resting pitch, yaw, roll (rad) and tx, ty, tz."""
    rest_gaze: tuple[float, float]
    """Resting gaze offset (horizontal, vertical), eye-look score units in [-0.3, 0.3]."""
    rest_mouth: float
    """Resting lip press."""


def style_to_json(style: SpeakerStyle | ListenerStyle) -> dict:
    """A style as a JSON-ready dict (floats rounded to 6 digits)."""
    out = {}
    for f in fields(style):
        v = getattr(style, f.name)
        out[f.name] = [round(float(x), 6) for x in v] if isinstance(v, tuple) else round(v, 6)
    return out


@dataclass(frozen=True)
class WorldConfig:
    """What ``make_world`` builds. The defaults generate in a few minutes on two cores."""

    listeners: int = 48
    """Sessions; each has one listener and its own conversation partner (the speaker)."""
    clips_per_listener: int = 8
    seconds: float = 30.0
    """Clip length; 30 s gives 751 frames at 25 fps like REACT."""
    seed: int = 0
    script_reuse: int = 3
    """Sessions of a split that share each speaker script (several appropriate reactions)."""
    val_fraction: float = 0.15
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        if self.listeners < 1:
            raise ValueError(f"listeners must be >= 1, got {self.listeners}")
        if self.clips_per_listener < 1:
            raise ValueError(f"clips_per_listener must be >= 1, got {self.clips_per_listener}")
        if not MIN_SECONDS <= self.seconds <= MAX_SECONDS:
            raise ValueError(f"seconds must be in [{MIN_SECONDS}, {MAX_SECONDS}], "
                             f"got {self.seconds}")  # fmt: skip
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.script_reuse < 1:
            raise ValueError(f"script_reuse must be >= 1, got {self.script_reuse}")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 0.5:
                raise ValueError(f"{name} must be in [0, 0.5), got {getattr(self, name)}")

    @property
    def frames(self) -> int:
        """Coefficient frames per clip: ``round(seconds * FPS) + 1`` (751 for 30 s)."""
        return int(round(self.seconds * layout.FPS)) + 1

    @property
    def samples(self) -> int:
        """Audio samples per clip: exactly ``frames`` MFCC frames of 640 samples."""
        return self.frames * layout.SAMPLES_PER_FRAME

    def to_json(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value
