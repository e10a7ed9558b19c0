"""The procedural speaker: a script rendered as a talking face plus its audio, and the cues a
listener can pick up from it.

Face model, per frame ``t`` (all blendshapes clipped to [0, 1] at the end):

- **Mouth** from the speech track (same syllables as the audio): ``jawOpen = jaw_gain · v ·
  (0.3 + 0.7 · openness) + 0.02`` with ``v`` the vowel envelope; lower lip, funnel/pucker
  (rounded vowels), stretch (spread vowels), lip closure and press before stop bursts.
- **Smile** ``= tonic_smile + 0.55 · expressivity · Σ intensity · pulse`` over the script's smile
  episodes (0.35 s attack, 0.6 s release), split left/right by ``smile_asymmetry``; cheeks
  squint with ``0.6 · smile^1.5``.
- **Brows** ``= 0.5 · expressivity · Σ intensity · pulse`` over the script's brow episodes,
  plus the resting ``brow_tension`` (brows lowered, inner brow slightly raised).
- **Head** rotation = resting pose + OU noise (s.d. ``head_motion``; yaw ×1.3, roll ×0.5) + a
  small nod on every pitch accent; translation follows rotation (``tx += 0.3 · yaw``, ``ty -=
  0.25 · pitch``) plus slow sway, and the speaker leans in (``tz`` up by 0.04) while talking.
- **Eyes**: Poisson blinks at ``blink_rate`` plus one at a phrase end with probability 0.35; gaze
  wanders (OU) and looks away at the start of a phrase with probability 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.data.world.config import SPEAKER_TRAIT_MAP, SpeakerStyle, trait_value
from models.data.world.script import Script
from models.data.world.signals import (
    add,
    blink_track,
    causal_lowpass,
    finish,
    frame_times,
    nod,
    ou_process,
    pulse,
    set_gaze,
    set_pair,
)
from models.data.world.speech import SpeechTrack, render_speech
from models.face import layout

F0_RANGE_HZ = (85.0, 240.0)
SYLLABLE_RATE = (3.8, 5.4)
REST_POSE_SD = (0.06, 0.08, 0.04, 0.05, 0.04, 0.06)
"""Spread of resting pitch, yaw, roll (rad), tx, ty (window widths), tz (log scale)."""
FULL_FALL_ST = 6.0
"""A realised phrase-final fall this deep fully invites a back-channel."""
INVITE_FLOOR = 0.15
"""Invitation of a phrase end with no fall (a pause alone invites a little)."""
END_BLINK_PROB = 0.35
AVERT_PROB = 0.5


@dataclass(frozen=True)
class SpeakerCues:
    """What a listener perceives of the speaker, in the listener's time frame."""

    ends: np.ndarray
    """(E,) times (s) at which a phrase ends and the speaker falls silent."""
    invitation: np.ndarray
    """(E,) in [0, 1]: how strongly each phrase end invites a back-channel (its pitch fall)."""
    smile: np.ndarray
    """(T,) the speaker's visible smile (mean of the smile blendshapes)."""
    brow: np.ndarray
    """(T,) the speaker's visible brow raise."""


def speaker_style(traits: np.ndarray, rng: np.random.Generator) -> SpeakerStyle:
    """A speaker's style: :data:`SPEAKER_TRAIT_MAP` of ``traits`` plus a signature from ``rng``."""
    mapped = {name: trait_value(link, traits) for name, link in SPEAKER_TRAIT_MAP.items()}
    log_lo, log_hi = np.log(F0_RANGE_HZ)
    log_f0 = rng.uniform(log_lo, log_hi)
    position = (log_f0 - log_lo) / (log_hi - log_lo)  # higher voices have shorter vocal tracts
    return SpeakerStyle(
        **mapped,
        f0_hz=float(np.exp(log_f0)),
        formant_scale=float(0.9 + 0.22 * position + rng.normal(0.0, 0.02)),
        syllable_rate=float(rng.uniform(*SYLLABLE_RATE)),
        declination=float(rng.uniform(1.0, 3.0)),
        fall_gain=float(rng.uniform(0.8, 1.2)),
        jaw_gain=float(rng.uniform(0.35, 0.6)),
        smile_asymmetry=float(rng.uniform(-0.2, 0.2)),
        rest_pose=tuple(float(rng.normal(0.0, s)) for s in REST_POSE_SD),
    )


def _mouth(c: np.ndarray, track: SpeechTrack, style: SpeakerStyle) -> None:
    v = track.voiced
    jaw = style.jaw_gain * v * (0.3 + 0.7 * track.openness)
    add(c, "jawOpen", jaw + 0.02)
    lower_lip = 0.5 * jaw * (0.5 + 0.5 * track.spreading)
    set_pair(c, "mouthLowerDownLeft", "mouthLowerDownRight", lower_lip)
    add(c, "mouthFunnel", 0.45 * v * track.rounding)
    add(c, "mouthPucker", 0.4 * v * track.rounding)
    set_pair(c, "mouthStretchLeft", "mouthStretchRight", 0.2 * v * track.spreading)
    add(c, "mouthClose", 0.35 * track.closure)
    set_pair(c, "mouthPressLeft", "mouthPressRight", 0.2 * track.closure)


def _episodes(t: np.ndarray, episodes: tuple, attack: float, release: float) -> np.ndarray:
    out = np.zeros_like(t)
    for e in episodes:
        hold = max(e.duration - attack - release, 0.05)
        out += e.intensity * pulse(t, e.start, attack, hold, release)
    return out


def _expressions(c: np.ndarray, t: np.ndarray, script: Script, style: SpeakerStyle,
                 rng: np.random.Generator) -> None:  # fmt: skip
    noise = 0.015 * style.variability
    smile = (style.tonic_smile + 0.55 * style.expressivity * _episodes(t, script.smiles, 0.35, 0.6)
             + ou_process(len(t), noise, 0.8, rng))  # fmt: skip
    smile = np.maximum(smile, 0.0)
    set_pair(c, "mouthSmileLeft", "mouthSmileRight", smile, style.smile_asymmetry)
    set_pair(c, "cheekSquintLeft", "cheekSquintRight", 0.6 * smile**1.5)
    set_pair(c, "mouthDimpleLeft", "mouthDimpleRight", 0.15 * smile)
    brow = 0.5 * style.expressivity * _episodes(t, script.brows, 0.12, 0.28)
    brow = np.maximum(brow + ou_process(len(t), noise, 0.5, rng), 0.0)
    add(c, "browInnerUp", 0.9 * brow + 0.4 * style.brow_tension)
    set_pair(c, "browOuterUpLeft", "browOuterUpRight", 0.8 * brow)
    set_pair(c, "browDownLeft", "browDownRight", 0.7 * style.brow_tension)


def _eyes(c: np.ndarray, t: np.ndarray, script: Script, style: SpeakerStyle,
          rng: np.random.Generator) -> None:  # fmt: skip
    ends = np.array([p.end for p in script.phrases])
    extra = ends[rng.random(len(ends)) < END_BLINK_PROB]
    set_pair(c, "eyeBlinkLeft", "eyeBlinkRight", blink_track(t, style.blink_rate, rng, extra))
    horizontal = ou_process(len(t), 0.06 * style.variability, 1.0, rng)
    vertical = ou_process(len(t), 0.04 * style.variability, 1.0, rng)
    for p in script.phrases:
        if rng.random() < AVERT_PROB:
            away = pulse(t, p.start, 0.08, rng.uniform(0.4, 1.2), 0.15)
            horizontal += rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.4) * away
            vertical += rng.uniform(-0.1, 0.2) * away
    set_gaze(c, horizontal, vertical)


def _head(c: np.ndarray, t: np.ndarray, script: Script, style: SpeakerStyle,
          rng: np.random.Generator) -> None:  # fmt: skip
    n, m = len(t), style.head_motion
    pitch = ou_process(n, m, 0.8, rng)
    for p in script.phrases:
        for a in p.accents:
            pitch += nod(t, a - 0.05, 0.03 * style.expressivity, 2.5, 1)
    yaw = ou_process(n, 1.3 * m, 1.2, rng)
    roll = ou_process(n, 0.5 * m, 1.5, rng)
    talking = causal_lowpass(script.talking(t).astype(float), 1.0)
    rest = np.asarray(style.rest_pose)
    c[:, layout.ROTATION] = rest[:3] + np.stack([pitch, yaw, roll], axis=1)
    c[:, layout.TRANSLATION] = rest[3:] + np.stack([
        0.3 * yaw + ou_process(n, 0.04, 2.0, rng),
        -0.25 * pitch + ou_process(n, 0.03, 2.0, rng),
        0.04 * talking + ou_process(n, 0.05, 3.0, rng),
    ], axis=1)  # fmt: skip


def speaker_face(script: Script, track: SpeechTrack, style: SpeakerStyle, frames: int,
                 rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """The talking face ``(frames, 58)`` float32 for a script and its speech track."""
    t = frame_times(frames)
    c = np.zeros((frames, layout.DIM))
    _mouth(c, track, style)
    _expressions(c, t, script, style, rng)
    _eyes(c, t, script, style, rng)
    _head(c, t, script, style, rng)
    return finish(c)


def speaker_cues(script: Script, style: SpeakerStyle, face: np.ndarray) -> SpeakerCues:
    """What a listener can perceive: phrase ends with their realised fall, visible smile/brow."""
    ends = np.array([p.end for p in script.phrases])
    fall = np.array([-p.final * style.fall_gain for p in script.phrases])
    invitation = INVITE_FLOOR + (1.0 - INVITE_FLOOR) * np.clip(fall / FULL_FALL_ST, 0.0, 1.0)
    smile = face[:, [layout.index("mouthSmileLeft"), layout.index("mouthSmileRight")]].mean(1)
    brow = face[:, [layout.index("browOuterUpLeft"), layout.index("browOuterUpRight")]].mean(1)
    return SpeakerCues(ends, invitation.reshape(-1), smile.astype(float), brow.astype(float))


def render_speaker(script: Script, style: SpeakerStyle, frames: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, SpeakerCues]:
    """Render ``script`` by this speaker: face ``(T, 58)`` float32, PCM float32, cues."""
    audio_rng, face_rng = rng.spawn(2)
    pcm, track = render_speech(script, style, frames, audio_rng)
    face = speaker_face(script, track, style, frames, face_rng)
    return face, pcm, speaker_cues(script, style, face)
