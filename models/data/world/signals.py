"""Small signal building blocks shared by the speaker and listener models.

Everything here works on frame-rate arrays (``layout.FPS`` per second) or on arbitrary time
grids in seconds, takes its randomness from an explicit ``np.random.Generator``, and is
deterministic for a given generator state.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from models.face import layout

BLINK_CLOSE_S = 0.07
"""Time from open to fully closed lids."""
BLINK_OPEN_S = 0.16
"""Time from closed to open again."""
BLINK_REFRACTORY_S = 0.5
"""No two spontaneous blinks closer than this."""
SMOOTH_S = 0.12
"""Smoothing time constant of the random motion paths."""

# Domains of the per-purpose seed keys (see :func:`rng_for`).
KEY_SPLITS = 0
KEY_PERSON = 1
KEY_SCRIPT = 2
KEY_CLIP = 3


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the integer ``key`` path.

    ``SeedSequence(seed, spawn_key=key)`` is what ``SeedSequence(seed).spawn`` would hand out
    along that path, so results never depend on generation order or on which process runs them.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))


def frame_times(frames: int) -> np.ndarray:
    """``(frames,)`` times in seconds of the coefficient frames."""
    return np.arange(frames) / layout.FPS


def smoothstep(x: np.ndarray) -> np.ndarray:
    """``3x² - 2x³`` on ``x`` clipped to [0, 1]: a ramp with zero slope at both ends."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def pulse(t: np.ndarray, onset: float, attack: float, hold: float, release: float) -> np.ndarray:
    """Envelope 0 → 1 over ``attack`` s from ``onset``, 1 for ``hold`` s, → 0 over ``release`` s."""
    rise = smoothstep((t - onset) / max(attack, 1e-3))
    fall = 1.0 - smoothstep((t - onset - attack - hold) / max(release, 1e-3))
    return rise * fall


def nod(t: np.ndarray, onset: float, amplitude: float, frequency: float, cycles: int,
        decay: float = 0.6) -> np.ndarray:  # fmt: skip
    """Head-pitch excursion of a nod: ``cycles`` down-and-back dips of ``sin²(π f u)``.

    Each dip is ``decay`` times the previous one; zero before ``onset`` and after the last dip.
    Starts with zero slope, so the onset is where the pitch first rises above rest.
    """
    u = t - onset
    inside = (u >= 0) & (u < cycles / frequency)
    dip = np.floor(np.maximum(u, 0.0) * frequency)
    return np.where(inside, amplitude * decay**dip * np.sin(np.pi * frequency * u) ** 2, 0.0)


def ou_process(n: int, sd: float, tau_s: float, rng: np.random.Generator,
               rate: float = layout.FPS, smooth_s: float = SMOOTH_S) -> np.ndarray:  # fmt: skip
    """A smooth, stationary random path of ``n`` samples at ``rate`` Hz, standard deviation ``sd``.

    An Ornstein–Uhlenbeck (AR(1)) path with correlation time ``tau_s``, passed through a one-pole
    low-pass of time constant ``smooth_s`` so that it moves like a body part (no frame-to-frame
    jitter), then rescaled to ``sd``: for AR coefficients ``a`` (path) and ``b`` (smoothing) the
    filtered variance is ``(1 - b)(1 + ab) / ((1 + b)(1 - ab))`` of the path's. Both filters start
    in their stationary state, so there is no warm-up transient.
    """
    a = float(np.exp(-1.0 / (tau_s * rate)))
    b = float(np.exp(-1.0 / (smooth_s * rate)))
    ratio = (1.0 - b) * (1.0 + a * b) / ((1.0 + b) * (1.0 - a * b))
    eps = rng.standard_normal(n)
    x0 = rng.standard_normal()
    path = lfilter([np.sqrt(1.0 - a * a)], [1.0, -a], eps, zi=[a * x0])[0]
    smooth = lfilter([1.0 - b], [1.0, -b], path, zi=[b * x0 * np.sqrt(ratio)])[0]
    return smooth * (sd / np.sqrt(ratio))


def causal_lag(x: np.ndarray, frames: int) -> np.ndarray:
    """``x`` delayed: output ``k`` is ``x[k - frames]``, the start filled with ``x[0]``."""
    if frames <= 0:
        return x.copy()
    return np.concatenate([np.full(frames, x[0]), x[:-frames]])


def causal_lowpass(x: np.ndarray, tau_s: float, rate: float = layout.FPS) -> np.ndarray:
    """One-pole causal low-pass with time constant ``tau_s``, started at ``x[0]``."""
    a = float(np.exp(-1.0 / (tau_s * rate)))
    return lfilter([1.0 - a], [1.0, -a], x, zi=[a * x[0]])[0]


def blink_track(t: np.ndarray, rate_per_min: float, rng: np.random.Generator,
                extra: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Lid closure in [0, 1] at times ``t`` (s): spontaneous blinks plus blinks at ``extra``.

    Spontaneous blinks are a Poisson process at ``rate_per_min`` with depths ~ U(0.8, 1), drawn
    from ``rng`` before anything else, so they do not depend on ``extra`` (full-depth blinks at
    given times). Going forward in time, a blink closer than ``BLINK_REFRACTORY_S`` to the last
    kept one is dropped. Each blink closes in ``BLINK_CLOSE_S`` and reopens in ``BLINK_OPEN_S``.
    """
    duration = float(t[-1]) + 1.0 / layout.FPS
    count = rng.poisson(rate_per_min * duration / 60.0)
    times = rng.uniform(0.0, duration, count)
    depths = rng.uniform(0.8, 1.0, count)
    if extra is not None and len(extra):
        times = np.concatenate([times, extra])
        depths = np.concatenate([depths, np.ones(len(extra))])
    order = np.argsort(times, kind="stable")
    out = np.zeros_like(t, dtype=float)
    last = -np.inf
    for onset, depth in zip(times[order], depths[order], strict=True):
        if onset - last < BLINK_REFRACTORY_S:
            continue
        last = onset
        close = smoothstep((t - onset) / BLINK_CLOSE_S)
        reopen = 1.0 - smoothstep((t - onset - BLINK_CLOSE_S) / BLINK_OPEN_S)
        out = np.maximum(out, depth * close * reopen)
    return out


def set_pair(coeffs: np.ndarray, left: str, right: str, value: np.ndarray,
             asymmetry: float = 0.0) -> None:  # fmt: skip
    """Add ``value`` to a left/right blendshape pair, ``asymmetry`` > 0 favouring the left."""
    coeffs[:, layout.index(left)] += value * (1.0 + asymmetry)
    coeffs[:, layout.index(right)] += value * (1.0 - asymmetry)


def add(coeffs: np.ndarray, name: str, value: np.ndarray | float) -> None:
    """Add ``value`` to one named coefficient column."""
    coeffs[:, layout.index(name)] += value


def set_gaze(coeffs: np.ndarray, horizontal: np.ndarray, vertical: np.ndarray) -> None:
    """Gaze as eye-look blendshapes: ``horizontal`` > 0 looks to the person's left.

    Looking left moves the left eye outward and the right eye inward; ``vertical`` > 0 is up.
    """
    h_pos, h_neg = np.maximum(horizontal, 0.0), np.maximum(-horizontal, 0.0)
    v_pos, v_neg = np.maximum(vertical, 0.0), np.maximum(-vertical, 0.0)
    add(coeffs, "eyeLookOutLeft", h_pos)
    add(coeffs, "eyeLookInRight", h_pos)
    add(coeffs, "eyeLookInLeft", h_neg)
    add(coeffs, "eyeLookOutRight", h_neg)
    set_pair(coeffs, "eyeLookUpLeft", "eyeLookUpRight", v_pos)
    set_pair(coeffs, "eyeLookDownLeft", "eyeLookDownRight", v_neg)


def finish(coeffs: np.ndarray) -> np.ndarray:
    """Clip blendshapes to [0, 1] and return float32 ``(T, 58)`` coefficients."""
    coeffs[:, layout.EXPRESSION] = np.clip(coeffs[:, layout.EXPRESSION], 0.0, 1.0)
    coeffs[:, layout.ROTATION] = np.clip(coeffs[:, layout.ROTATION], -1.0, 1.0)
    return coeffs.astype(np.float32)
