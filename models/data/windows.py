"""Online training windows: what the live generator has at window start ``t``, and its target.

ARCHITECTURE.md §4: the listener window ``[t, t + W)`` is generated from the speaker's past only
(frames ``[t − C, t)``: 78-d audio features and 58-d face) and the listener's own previous frames
``[t − Pv, t)``. Frames before 0 or past a clip's end are zeros with their mask false.

Audio look-ahead: the MFCC deltas of frame ``k`` read the audio of frame ``k + L``
(``L = MfccConfig().lookahead_frames``, 1 frame), so the live stream has features only up to frame
``t − 1 − L`` at time ``t``. The last ``L`` audio rows of the context are therefore zeroed and
masked: a window never depends on audio at or after ``t``, as live.

Masks: ``context_valid``, ``prev_valid`` and ``target_valid`` are true on real frames (not
padding) where a face was found; ``audio_valid`` on real frames that had audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from models.face import layout
from models.features.mfcc import MfccConfig

if TYPE_CHECKING:
    from models.data.dataset import Clip

WINDOW = 8
"""Listener frames generated per window (320 ms), W."""
CONTEXT = 50
"""Speaker frames of past context (2 s), C."""
PREVIOUS = 8
"""Listener previous frames fed back, Pv."""
AUDIO_LOOKAHEAD = MfccConfig().lookahead_frames


@dataclass(frozen=True, eq=False)
class OnlineWindow:
    """One training window of sample ``index`` starting at listener frame ``t``."""

    index: int
    t: int
    speaker_audio: np.ndarray  # (C, 78) float32, frames [t - C, t)
    audio_valid: np.ndarray  # (C,) bool
    speaker_face: np.ndarray  # (C, 58) float32, frames [t - C, t)
    context_valid: np.ndarray  # (C,) bool
    listener_prev: np.ndarray  # (Pv, 58) float32, frames [t - Pv, t)
    prev_valid: np.ndarray  # (Pv,) bool
    target: np.ndarray  # (W, 58) float32, frames [t, t + W)
    target_valid: np.ndarray  # (W,) bool


def span(values: np.ndarray, mask: np.ndarray, start: int, stop: int
         ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Rows ``[start, stop)`` of ``values`` (``(T, D)``) and ``mask`` (``(T,)``); rows outside
    ``[0, T)`` are zeros with mask false."""
    n = stop - start
    out = np.zeros((n, values.shape[1]), dtype=np.float32)
    valid = np.zeros(n, dtype=bool)
    lo, hi = max(start, 0), min(stop, len(values))
    if hi > lo:
        out[lo - start: hi - start] = values[lo:hi]
        valid[lo - start: hi - start] = mask[lo:hi]
    return out, valid


def online_window(speaker: Clip, listener: Clip, t: int, *, index: int = -1, w: int = WINDOW,
                  context: int = CONTEXT, prev: int = PREVIOUS) -> OnlineWindow:  # fmt: skip
    """The window at ``t`` of a (speaker, listener) pair; nothing at or after ``t`` of the speaker
    is read, and the listener only for the target."""
    if min(w, context, prev) < 1:
        raise ValueError(f"w, context and prev must be at least 1, got {w}, {context}, {prev}")
    if not 0 <= t < listener.frames:
        raise ValueError(f"window start {t} outside the listener's {listener.frames} frames")
    face_ok = speaker.valid & speaker.found
    face, context_valid = span(speaker.coeffs, face_ok, t - context, t)
    if speaker.audio_features is not None and speaker.audio_valid is not None:
        audio, audio_valid = span(speaker.audio_features, speaker.valid & speaker.audio_valid,
                                  t - context, t)  # fmt: skip
        final = max(context - AUDIO_LOOKAHEAD, 0)  # rows from t - L on are not final yet
        audio[final:] = 0.0
        audio_valid[final:] = False
    else:
        audio = np.zeros((context, layout.AUDIO_FEATURE_DIM), dtype=np.float32)
        audio_valid = np.zeros(context, dtype=bool)
    listener_ok = listener.valid & listener.found
    previous, prev_valid = span(listener.coeffs, listener_ok, t - prev, t)
    target, target_valid = span(listener.coeffs, listener_ok, t, t + w)
    return OnlineWindow(index=index, t=t, speaker_audio=audio, audio_valid=audio_valid,
                        speaker_face=face, context_valid=context_valid, listener_prev=previous,
                        prev_valid=prev_valid, target=target, target_valid=target_valid)


def window_starts(real_frames: int, stride: int = WINDOW) -> range:
    """Window starts over a listener with ``real_frames`` real frames: ``0, stride, ...`` while
    the start is a real frame (a last partial window is padded and masked)."""
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    return range(0, real_frames, stride)
