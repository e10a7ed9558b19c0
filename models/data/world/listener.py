"""The listener: Big-Five traits → reaction style, and reactions to a speaker's cues.

Style = :data:`~models.data.world.config.LISTENER_TRAIT_MAP` (monotone in one trait each) plus a
signature drawn once per listener: mean reaction delay, nod amplitude / frequency / cycles, smile
asymmetry, preferred back-channel (Dirichlet weights over nod, smile, brow raise, pressed lips),
resting head pose and translation, resting gaze and lip press.

Reactions are causal. At each phrase end ``e`` of the speaker with invitation ``v`` (its pitch
fall), the listener draws a delay ``d ~ N(delay_mean, delay_sd)`` clipped to
``REACTION_DELAY_S`` = [0.2, 0.7] s, and from ``e + d`` on may show, independently:

- a nod with probability ``nod_propensity · v · w_nod`` (pitch ``nod_amplitude · expressivity``),
- a smile with probability ``smile_propensity · (0.5 + 0.5 v) · w_smile``,
- a brow raise with probability ``0.25 · v · w_brow``, pressed lips with ``0.25 · v · w_lips``,

where ``w = 0.5 + 2 · preference`` (mean 1) and every amplitude is multiplied by
``expressivity · exp(N(0, (0.25 · variability)²))``. Continuously, the listener mirrors the
speaker's smile and brow raise with gain ``mimicry_gain`` (brow ×0.6) through a causal low-pass
(τ = 0.3 s) delayed by ``delay_mean``. On top: resting ``tonic_smile`` and ``brow_tension``,
Ornstein–Uhlenbeck noise on expression (s.d. ``0.012 · variability``) and head
(``0.016 · variability · (0.5 + 0.5 · expressivity)`` rad), Poisson blinks at ``blink_rate`` plus
one with probability 0.3 at a nod's onset, and a wandering gaze.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.data.world.config import LISTENER_TRAIT_MAP, ListenerStyle, trait_value
from models.data.world.signals import (
    add,
    blink_track,
    causal_lag,
    causal_lowpass,
    finish,
    frame_times,
    nod,
    ou_process,
    pulse,
    set_gaze,
    set_pair,
)
from models.data.world.speaker import REST_POSE_SD, SpeakerCues
from models.data.world.speech import room_noise
from models.face import layout

REACTION_DELAY_S = (0.2, 0.7)
"""Every reaction starts this long after the speaker behaviour it answers (human range)."""
DELAY_MEAN_S = (0.3, 0.5)
NOD_AMPLITUDE_RAD = (0.03, 0.09)
NOD_FREQUENCY_HZ = (1.6, 3.0)
NOD_CYCLES = (1, 3)
PREFERENCE_ALPHA = 2.0
"""Dirichlet concentration of the back-channel preference (lower = more idiosyncratic)."""
KINDS = ("nod", "smile", "brow", "lips")
OTHER_BACKCHANNEL_PROB = 0.25
NOD_BLINK_PROB = 0.3
SMILE_AMPLITUDE = 0.35
BROW_AMPLITUDE = 0.35
LIPS_AMPLITUDE = 0.3
MIMICRY_TAU_S = 0.3
HEAD_NOISE_RAD = 0.016
"""Head rotation noise s.d. of a listener with variability and expressivity 1."""
GLANCES_PER_MIN = 1.0
LISTENER_NOISE_DBFS = (-62.0, -54.0)
"""Level of the room noise that is a listener's audio track."""


@dataclass(frozen=True)
class Reaction:
    """One back-channel: ``kind`` (one of :data:`KINDS`, or ``"blink"``) starting at ``onset`` s."""

    kind: str
    onset: float
    cause: float
    """Time (s) of the phrase end it answers; ``onset - cause`` is the delay."""
    amplitude: float
    hold: float


def listener_style(traits: np.ndarray, rng: np.random.Generator) -> ListenerStyle:
    """A listener's style: :data:`LISTENER_TRAIT_MAP` of ``traits`` plus a signature."""
    mapped = {name: trait_value(link, traits) for name, link in LISTENER_TRAIT_MAP.items()}
    return ListenerStyle(
        **mapped,
        delay_mean=float(rng.uniform(*DELAY_MEAN_S)),
        nod_amplitude=float(rng.uniform(*NOD_AMPLITUDE_RAD)),
        nod_frequency=float(rng.uniform(*NOD_FREQUENCY_HZ)),
        nod_cycles=int(rng.integers(NOD_CYCLES[0], NOD_CYCLES[1] + 1)),
        smile_asymmetry=float(rng.uniform(-0.25, 0.25)),
        preference=tuple(float(p) for p in rng.dirichlet(np.full(len(KINDS), PREFERENCE_ALPHA))),
        rest_pose=tuple(float(rng.normal(0.0, s)) for s in REST_POSE_SD),
        rest_gaze=(float(rng.uniform(-0.15, 0.15)), float(rng.uniform(-0.1, 0.1))),
        rest_mouth=float(rng.uniform(0.0, 0.15)),
    )


def plan_reactions(cues: SpeakerCues, style: ListenerStyle,
                   rng: np.random.Generator) -> list[Reaction]:  # fmt: skip
    """The back-channels a listener shows in answer to the speaker's phrase ends."""
    weight = dict(zip(KINDS, 0.5 + 2.0 * np.asarray(style.preference), strict=True))
    reactions = []
    jitter_sd = 0.25 * style.variability
    for end, v in zip(cues.ends, cues.invitation, strict=True):
        delay = float(np.clip(rng.normal(style.delay_mean, style.delay_sd), *REACTION_DELAY_S))
        chance = {
            "nod": style.nod_propensity * v * weight["nod"],
            "smile": style.smile_propensity * (0.5 + 0.5 * v) * weight["smile"],
            "brow": OTHER_BACKCHANNEL_PROB * v * weight["brow"],
            "lips": OTHER_BACKCHANNEL_PROB * v * weight["lips"],
        }
        draws = rng.random(len(KINDS) + 1)  # one per kind, one for a blink with a nod
        amps = style.expressivity * np.exp(rng.normal(0.0, jitter_sd, len(KINDS)))
        holds = rng.uniform(0.4, 1.6, len(KINDS)) * np.sqrt(style.variability)
        for k, kind in enumerate(KINDS):
            if draws[k] < min(chance[kind], 0.98):
                reactions.append(Reaction(kind, float(end) + delay, float(end),
                                          float(amps[k]), float(holds[k])))  # fmt: skip
                if kind == "nod" and draws[-1] < NOD_BLINK_PROB:
                    reactions.append(Reaction("blink", float(end) + delay, float(end), 1.0, 0.0))
    return reactions


def _backchannels(t: np.ndarray, reactions: list[Reaction],
                  style: ListenerStyle) -> dict[str, np.ndarray]:  # fmt: skip
    out = {kind: np.zeros_like(t) for kind in KINDS}
    for r in reactions:
        if r.kind == "blink":
            continue
        if r.kind == "nod":
            out["nod"] += nod(t, r.onset, style.nod_amplitude * r.amplitude,
                              style.nod_frequency, style.nod_cycles)  # fmt: skip
        elif r.kind == "smile":
            out["smile"] += SMILE_AMPLITUDE * r.amplitude * pulse(t, r.onset, 0.25, r.hold, 0.6)
        elif r.kind == "brow":
            out["brow"] += BROW_AMPLITUDE * r.amplitude * pulse(t, r.onset, 0.12, 0.25, 0.3)
        elif r.kind == "lips":
            out["lips"] += LIPS_AMPLITUDE * r.amplitude * pulse(t, r.onset, 0.1, 0.2, 0.2)
    return out


def _face(c: np.ndarray, t: np.ndarray, cues: SpeakerCues, bc: dict[str, np.ndarray],
          style: ListenerStyle, rng: np.random.Generator) -> None:  # fmt: skip
    lag = int(round(style.delay_mean * layout.FPS))
    mirror_smile = causal_lag(causal_lowpass(cues.smile, MIMICRY_TAU_S), lag)
    mirror_brow = causal_lag(causal_lowpass(cues.brow, MIMICRY_TAU_S), lag)
    noise = 0.012 * style.variability
    smile = (style.tonic_smile + bc["smile"] + style.mimicry_gain * mirror_smile
             + ou_process(len(t), noise, 0.8, rng))  # fmt: skip
    smile = np.maximum(smile, 0.0)
    set_pair(c, "mouthSmileLeft", "mouthSmileRight", smile, style.smile_asymmetry)
    set_pair(c, "cheekSquintLeft", "cheekSquintRight", 0.6 * smile**1.5)
    brow = bc["brow"] + 0.6 * style.mimicry_gain * mirror_brow
    brow = np.maximum(brow + ou_process(len(t), noise, 0.5, rng), 0.0)
    add(c, "browInnerUp", 0.9 * brow + 0.4 * style.brow_tension)
    set_pair(c, "browOuterUpLeft", "browOuterUpRight", 0.8 * brow)
    set_pair(c, "browDownLeft", "browDownRight", 0.7 * style.brow_tension)
    set_pair(c, "eyeSquintLeft", "eyeSquintRight", 0.3 * style.brow_tension + 0.2 * smile)
    set_pair(c, "mouthPressLeft", "mouthPressRight", style.rest_mouth + bc["lips"])
    add(c, "mouthRollLower", 0.5 * bc["lips"])
    add(c, "mouthClose", 0.02)


def _eyes(c: np.ndarray, t: np.ndarray, reactions: list[Reaction], style: ListenerStyle,
          rng: np.random.Generator) -> None:  # fmt: skip
    extra = np.array([r.onset for r in reactions if r.kind == "blink"])
    set_pair(c, "eyeBlinkLeft", "eyeBlinkRight", blink_track(t, style.blink_rate, rng, extra))
    horizontal = style.rest_gaze[0] + ou_process(len(t), 0.04 * style.variability, 1.5, rng)
    vertical = style.rest_gaze[1] + ou_process(len(t), 0.03 * style.variability, 1.5, rng)
    duration = t[-1]
    rate = GLANCES_PER_MIN * style.variability / 60.0
    for start in rng.uniform(0.0, duration, rng.poisson(rate * duration)):
        away = pulse(t, start, 0.08, rng.uniform(0.3, 1.0), 0.15)
        horizontal = horizontal + rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.35) * away
    set_gaze(c, horizontal, vertical)


def _head(c: np.ndarray, t: np.ndarray, bc: dict[str, np.ndarray], style: ListenerStyle,
          rng: np.random.Generator) -> None:  # fmt: skip
    n = len(t)
    sd = HEAD_NOISE_RAD * style.variability * (0.5 + 0.5 * style.expressivity)
    pitch = bc["nod"] + ou_process(n, sd, 1.0, rng)
    yaw = ou_process(n, 1.3 * sd, 1.5, rng)
    roll = ou_process(n, 0.6 * sd, 2.0, rng)
    rest = np.asarray(style.rest_pose)
    c[:, layout.ROTATION] = rest[:3] + np.stack([pitch, yaw, roll], axis=1)
    c[:, layout.TRANSLATION] = rest[3:] + np.stack([
        0.3 * yaw + ou_process(n, 0.02 * style.variability, 3.0, rng),
        -0.25 * pitch + ou_process(n, 0.015 * style.variability, 3.0, rng),
        0.1 * bc["nod"] + ou_process(n, 0.03 * style.variability, 4.0, rng),
    ], axis=1)  # fmt: skip


def render_listener(cues: SpeakerCues, reactions: list[Reaction], style: ListenerStyle,
                    frames: int, rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """The listener's face ``(frames, 58)`` float32 given its planned back-channels."""
    t = frame_times(frames)
    bc = _backchannels(t, reactions, style)
    c = np.zeros((frames, layout.DIM))
    face_rng, eye_rng, head_rng = rng.spawn(3)  # noise that never depends on the speaker
    _face(c, t, cues, bc, style, face_rng)
    _eyes(c, t, reactions, style, eye_rng)
    _head(c, t, bc, style, head_rng)
    return finish(c)


def react(cues: SpeakerCues, style: ListenerStyle, frames: int,
          rng: np.random.Generator) -> tuple[np.ndarray, list[Reaction]]:  # fmt: skip
    """A listener's face ``(frames, 58)`` reacting to ``cues``, and the back-channels shown."""
    plan_rng, face_rng = rng.spawn(2)
    reactions = plan_reactions(cues, style, plan_rng)
    return render_listener(cues, reactions, style, frames, face_rng), reactions


def listener_audio(frames: int, rng: np.random.Generator) -> np.ndarray:
    """The listener's audio track: quiet room noise (never digital silence), float32."""
    level = rng.uniform(*LISTENER_NOISE_DBFS)
    return room_noise(frames * layout.SAMPLES_PER_FRAME, level, rng).astype(np.float32)
