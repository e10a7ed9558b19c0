"""Procedural speech: a script rendered as a 16 kHz waveform in a speaker's voice.

Source–filter synthesis, done in the short-time Fourier domain (512-point frames, 8 ms hop):

- **Syllables.** A phrase of ``d`` s holds ``n = round(d · rate)`` syllables whose durations are
  Gamma-distributed shares of ``d`` (shape ``1 / rate_jitter²``; the last one lengthened ×1.4).
  Each syllable is an optional onset consonant — a fricative (50–90 ms of band-pass noise
  centred at 3.5, 5 or 6.5 kHz) or a stop (a lip closure of 25–55 ms then a 15 ms broadband
  burst) — and a vowel nucleus with amplitude ``stress · sin(πu)^0.6`` over its duration.
  Vowels and consonant kinds come from the script's ``words`` seed, so a script "says" the same
  syllables whoever renders it.
- **Pitch.** ``f0(t) = f0_voice · 2^(s(t)/12)`` with, in semitones, a declination of
  ``-declination · (t - start)/(end - start)``, Gaussian pitch accents of height ``pitch_range``
  (σ = 80 ms) at the script's accent times, the phrase-final movement ``final · fall_gain``
  ramped in over the last ``FINAL_S`` of the phrase (negative = the low-pitch ending), and a slow
  Ornstein–Uhlenbeck wobble (s.d. ``0.4 · variability`` st).
- **Source.** A Rosenberg glottal pulse train at ``f0`` (opening 40 %, closing 16 % of the
  period), differentiated (lip radiation), plus 3 % aspiration noise.
- **Filter.** Five cascaded second-order resonances: F1–F3 interpolated between the vowel
  targets of consecutive nuclei (coarticulation) and scaled by the voice's ``formant_scale``,
  F4 and F5 fixed (3.5 and 4.5 kHz, scaled).
- **Level.** Voiced speech at RMS ``SPEECH_RMS · √expressivity``, fricatives 12 dB and bursts
  6 dB below it, over pink-ish room noise at ``ROOM_NOISE_DBFS`` everywhere (pauses are never
  digital silence).

:func:`render_speech` also returns the 25 fps articulation track (voicing envelope, vowel
openness, rounding, spreading, lip closure) that drives the speaker's mouth, so face and audio
are synchronous by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from models.data.world.config import SpeakerStyle
from models.data.world.script import Script
from models.data.world.signals import ou_process, smoothstep
from models.face import layout

SR = layout.SAMPLE_RATE
NPERSEG = 512
HOP = 128
"""STFT hop, samples (8 ms): the control rate of every articulation parameter."""

# Vowel targets: F1, F2, F3 (Hz, adult-male scale), jaw openness, lip rounding, lip spreading.
VOWELS = np.array([
    [750.0, 1250.0, 2600.0, 1.00, 0.0, 0.2],  # a
    [500.0, 1900.0, 2600.0, 0.55, 0.0, 0.6],  # e
    [300.0, 2300.0, 3000.0, 0.25, 0.0, 1.0],  # i
    [500.0, 900.0, 2500.0, 0.60, 0.8, 0.0],  # o
    [320.0, 800.0, 2300.0, 0.30, 1.0, 0.0],  # u
    [500.0, 1500.0, 2500.0, 0.45, 0.1, 0.2],  # schwa
])  # fmt: skip
UPPER_FORMANTS_HZ = (3500.0, 4500.0)
BANDWIDTHS_HZ = (90.0, 110.0, 170.0, 250.0, 300.0)
ONSET_NONE, ONSET_FRICATIVE, ONSET_STOP = 0, 1, 2
ONSET_PROBS = (0.3, 0.4, 0.3)
FRICATIVE_HZ = (3500.0, 5000.0, 6500.0)
FRICATIVE_BW_HZ = 1500.0
FRICATIVE_S = (0.05, 0.09)
STOP_S = (0.04, 0.07)
BURST_S = 0.015
FINAL_LENGTHENING = 1.4
STRESS_GAIN = 1.35
FINAL_S = 0.35
"""Duration of the phrase-final pitch movement."""
ACCENT_SD_S = 0.08
WOBBLE_ST = 0.4
OPEN_PHASE, CLOSE_PHASE = 0.40, 0.16
ASPIRATION = 0.03
SPEECH_RMS = 0.08
FRICATIVE_DB = -12.0
BURST_DB = -6.0
ROOM_NOISE_DBFS = -60.0


@dataclass(frozen=True)
class Syllables:
    """The syllable plan of one rendering, all arrays ``(S,)``; times in seconds."""

    start: np.ndarray
    nucleus: np.ndarray
    end: np.ndarray
    vowel: np.ndarray
    onset: np.ndarray
    fricative_hz: np.ndarray
    stress: np.ndarray


@dataclass(frozen=True)
class SpeechTrack:
    """Articulation per coefficient frame, all ``(T,)``: what the mouth does as the audio plays."""

    voiced: np.ndarray
    """Vowel amplitude envelope (0 in pauses, up to ~1.35 on stressed syllables)."""
    openness: np.ndarray
    rounding: np.ndarray
    spreading: np.ndarray
    closure: np.ndarray
    """Lip closure before stop bursts, 0..1."""
    f0: np.ndarray
    """Pitch contour, Hz (defined everywhere; only heard where ``voiced`` > 0)."""


def plan_syllables(script: Script, style: SpeakerStyle, rng: np.random.Generator) -> Syllables:
    """Syllable timing of ``script`` at the speaker's rate; content from the script's words."""
    cols: dict[str, list[np.ndarray]] = {k: [] for k in Syllables.__dataclass_fields__}
    shape = 1.0 / style.rate_jitter**2
    for k, p in enumerate(script.phrases):
        words = np.random.default_rng([script.words, k])
        d = p.end - p.start
        n = max(1, round(d * style.syllable_rate))
        share = rng.gamma(shape, 1.0, n)
        share[-1] *= FINAL_LENGTHENING
        bounds = p.start + d * np.concatenate([[0.0], np.cumsum(share) / share.sum()])
        start, end = bounds[:-1], bounds[1:]
        onset = words.choice(3, size=n, p=ONSET_PROBS)
        consonant = np.select(
            [onset == ONSET_FRICATIVE, onset == ONSET_STOP],
            [rng.uniform(*FRICATIVE_S, n), rng.uniform(*STOP_S, n)], 0.0)
        nucleus = start + np.minimum(consonant, 0.4 * (end - start))
        accented = np.zeros(n, dtype=bool)
        for a in p.accents:
            accented |= (start <= a) & (a < end)
        cols["start"].append(start)
        cols["nucleus"].append(nucleus)
        cols["end"].append(end)
        cols["vowel"].append(words.integers(0, len(VOWELS), n))
        cols["onset"].append(onset)
        cols["fricative_hz"].append(np.asarray(FRICATIVE_HZ)[words.integers(0, 3, n)])
        cols["stress"].append(np.where(accented, STRESS_GAIN, rng.uniform(0.85, 1.05, n)))
    empty = {"vowel": np.int64, "onset": np.int64}
    return Syllables(**{k: np.concatenate(v) if v else np.zeros(0, empty.get(k, float))
                        for k, v in cols.items()})  # fmt: skip


def f0_contour(t: np.ndarray, script: Script, style: SpeakerStyle,
               rng: np.random.Generator, rate: float) -> np.ndarray:  # fmt: skip
    """Pitch (Hz) at times ``t`` (a regular grid at ``rate`` Hz); see the module docstring."""
    semis = ou_process(len(t), WOBBLE_ST * style.variability, 0.15, rng, rate)
    if script.phrases:
        starts = np.array([p.start for p in script.phrases])
        ends = np.array([p.end for p in script.phrases])
        finals = np.array([p.final for p in script.phrases])
        i = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(starts) - 1)
        progress = np.clip((t - starts[i]) / (ends[i] - starts[i]), 0.0, 1.0)
        semis -= style.declination * progress
        semis += finals[i] * style.fall_gain * smoothstep((t - ends[i] + FINAL_S) / FINAL_S)
        accents = np.array([a for p in script.phrases for a in p.accents])
        if len(accents):
            z = (t[:, None] - accents[None, :]) / ACCENT_SD_S  # (n, A)
            semis += style.pitch_range * np.exp(-0.5 * z * z).sum(axis=1)
    return style.f0_hz * 2.0 ** (semis / 12.0)


def _controls(t: np.ndarray, syl: Syllables, formant_scale: float) -> dict[str, np.ndarray]:
    """Articulation parameters at times ``t`` (s) from the syllable plan."""
    n = len(t)
    if len(syl.start) == 0:
        zero = np.zeros(n)
        return {"voiced": zero, "fricative": zero, "burst": zero, "closure": zero,
                "fricative_hz": zero + FRICATIVE_HZ[1], "openness": zero, "rounding": zero,
                "spreading": zero, "formants": np.tile(VOWELS[5, :3, None], (1, n))}  # fmt: skip
    i = np.clip(np.searchsorted(syl.start, t, side="right") - 1, 0, len(syl.start) - 1)
    inside = (t >= syl.start[i]) & (t < syl.end[i])
    in_vowel = inside & (t >= syl.nucleus[i])
    in_onset = inside & ~in_vowel
    u = np.clip((t - syl.nucleus[i]) / (syl.end[i] - syl.nucleus[i]), 0.0, 1.0)
    u_on = np.clip((t - syl.start[i]) / np.maximum(syl.nucleus[i] - syl.start[i], 1e-3), 0, 1)
    stop = in_onset & (syl.onset[i] == ONSET_STOP)
    bursting = t >= syl.nucleus[i] - BURST_S
    centres = 0.5 * (syl.nucleus + syl.end)
    targets = VOWELS[syl.vowel]  # (S, 6)
    out = {
        "voiced": np.where(in_vowel, syl.stress[i] * np.sin(np.pi * u) ** 0.6, 0.0),
        "fricative": np.where(in_onset & (syl.onset[i] == ONSET_FRICATIVE),
                              np.sin(np.pi * u_on), 0.0),
        "burst": np.where(stop & bursting, 1.0, 0.0),
        "closure": np.where(stop & ~bursting, 1.0, 0.0),
        "fricative_hz": syl.fricative_hz[i],
        "formants": np.stack([np.interp(t, centres, targets[:, k]) * formant_scale
                              for k in range(3)]),  # (3, n)
    }  # fmt: skip
    for k, name in enumerate(("openness", "rounding", "spreading"), start=3):
        out[name] = np.interp(t, centres, targets[:, k])
    return out


def glottal_source(f0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Differentiated Rosenberg pulses following the per-sample pitch ``f0`` (Hz), float32."""
    phase = (np.cumsum(f0) / SR % 1.0).astype(np.float32)  # position in the glottal cycle
    flow = np.zeros_like(phase)
    opening = phase < OPEN_PHASE
    closing = ~opening & (phase < OPEN_PHASE + CLOSE_PHASE)
    flow[opening] = 0.5 * (1.0 - np.cos(np.float32(np.pi / OPEN_PHASE) * phase[opening]))
    flow[closing] = np.cos(np.float32(0.5 * np.pi / CLOSE_PHASE) * (phase[closing] - OPEN_PHASE))
    source = np.diff(flow, prepend=np.float32(0.0))
    noise = rng.standard_normal(len(f0), dtype=np.float32)
    return source + np.float32(ASPIRATION * source.std()) * noise


_WINDOW = np.sqrt(np.hanning(NPERSEG + 1)[:-1]).astype(np.float32)
"""Periodic square-root Hann: analysis × synthesis = Hann, which sums to 2 at a quarter hop."""
_LEAD = NPERSEG - HOP
"""Zeros before the signal, so the first frame already covers sample 0."""


def stft(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frequencies (F,), frame-centre times (n_t,) in s, complex64 spectrum ``(F, n_t)``."""
    padded = np.pad(x.astype(np.float32), (_LEAD, NPERSEG))
    frames = np.lib.stride_tricks.sliding_window_view(padded, NPERSEG)[::HOP]  # (n_t, N)
    spectrum = np.fft.rfft(frames * _WINDOW, axis=-1).T  # (F, n_t)
    times = (np.arange(frames.shape[0]) * HOP - _LEAD + NPERSEG // 2) / SR
    return np.fft.rfftfreq(NPERSEG, 1.0 / SR), times, spectrum


def istft(spectrum: np.ndarray, n: int) -> np.ndarray:
    """Overlap-add inverse of :func:`stft` for spectra ``(..., F, n_t)``: float32 ``(..., n)``."""
    frames = np.fft.irfft(np.swapaxes(spectrum, -1, -2), n=NPERSEG, axis=-1) * _WINDOW
    n_t, r = frames.shape[-2], NPERSEG // HOP
    blocks = frames.reshape(*frames.shape[:-2], n_t, r, HOP)  # (..., n_t, r, HOP)
    out = np.zeros((*frames.shape[:-2], n_t + r - 1, HOP), dtype=np.float32)
    for j in range(r):
        out[..., j:j + n_t, :] += blocks[..., :, j, :]
    signal = out.reshape(*out.shape[:-2], -1) / (r / 2)
    return signal[..., _LEAD:_LEAD + n]


def _vocal_tract(freqs: np.ndarray, formants: np.ndarray, formant_scale: float) -> np.ndarray:
    """Cascade of resonances, float32 magnitude ``(len(freqs), n)`` for formants ``(3, n)``."""
    f = freqs.astype(np.float32)[:, None]  # (F, 1)

    def resonance(centre: np.ndarray, bw: float) -> np.ndarray:
        c2 = centre * centre
        return c2 / np.sqrt((c2 - f * f) ** 2 + (f * np.float32(bw)) ** 2)

    upper = np.array(UPPER_FORMANTS_HZ, dtype=np.float32) * np.float32(formant_scale)
    gain = resonance(upper[None, :1], BANDWIDTHS_HZ[3]) * resonance(upper[None, 1:],
                                                                    BANDWIDTHS_HZ[4])  # (F, 1)
    for centre, bw in zip(formants.astype(np.float32), BANDWIDTHS_HZ[:3], strict=True):
        gain = gain * resonance(centre[None, :], bw)  # (F, n)
    return gain


def room_noise(n: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Pink-ish (low-frequency weighted) noise of RMS ``10^(dbfs/20)``."""
    white = rng.standard_normal(n)
    noise = lfilter([1.0], [1.0, -0.95], white) + 2.0 * white
    return noise * (10.0 ** (dbfs / 20.0) / noise.std())


def _rms_scale(x: np.ndarray, active: np.ndarray, target: float) -> np.ndarray:
    level = np.sqrt(np.mean(x[active] ** 2)) if active.any() else 0.0
    return x * (target / level) if level > 0 else x


def _frame_means(t: np.ndarray, values: np.ndarray, frames: int) -> np.ndarray:
    """Mean of control-rate ``values`` over each coefficient frame."""
    k = np.minimum((t * layout.FPS).astype(int), frames - 1)
    count = np.maximum(np.bincount(k, minlength=frames), 1)
    return np.bincount(k, weights=values, minlength=frames) / count


def render_speech(script: Script, style: SpeakerStyle, frames: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, SpeechTrack]:  # fmt: skip
    """``script`` spoken by ``style``: float32 PCM of ``frames · 640`` samples and its track."""
    n = frames * layout.SAMPLES_PER_FRAME
    syl = plan_syllables(script, style, rng)
    t_ctrl = np.arange(n // HOP + 2) * HOP / SR
    f0 = f0_contour(t_ctrl, script, style, rng, SR / HOP)
    source = glottal_source(np.interp(np.arange(n) / SR, t_ctrl, f0), rng)
    freqs, t_stft, src = stft(source)
    _, _, noise = stft(rng.standard_normal(n))
    ctl = _controls(t_stft, syl, style.formant_scale)
    gains = {k: ctl[k].astype(np.float32) for k in ("voiced", "fricative", "burst")}
    band = 1.0 / (1.0 + ((freqs[:, None] - ctl["fricative_hz"][None, :]) / FRICATIVE_BW_HZ) ** 2)
    spectra = np.empty((3, *src.shape), dtype=np.complex64)  # (3, F, n_t)
    spectra[0] = src * _vocal_tract(freqs, ctl["formants"], style.formant_scale) * gains["voiced"]
    spectra[1] = noise * band.astype(np.float32) * gains["fricative"]
    spectra[2] = noise * gains["burst"]
    parts = istft(spectra, n).astype(np.float64)  # (3, n): voiced, fricative, burst
    level = SPEECH_RMS * np.sqrt(style.expressivity)
    nearest = np.clip((np.arange(n) + HOP // 2) // HOP + (_LEAD - NPERSEG // 2) // HOP, 0,
                      len(t_stft) - 1)  # STFT frame whose centre is nearest to each sample
    pcm = np.zeros(n)
    for part, key, db in zip(parts, ("voiced", "fricative", "burst"),
                             (0.0, FRICATIVE_DB, BURST_DB), strict=True):  # fmt: skip
        active = (ctl[key] > 0.3)[nearest]
        pcm += _rms_scale(part, active, level * 10.0 ** (db / 20.0))
    pcm = np.clip(pcm + room_noise(n, ROOM_NOISE_DBFS, rng), -0.99, 0.99).astype(np.float32)
    track = SpeechTrack(
        **{k: _frame_means(t_stft, ctl[k], frames)
           for k in ("voiced", "openness", "rounding", "spreading", "closure")},
        f0=_frame_means(t_ctrl, f0, frames),
    )  # fmt: skip
    return pcm, track
