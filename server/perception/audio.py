"""Audio in, 78-d features per 40 ms frame out: files and streams share ``models.features.mfcc``.

A stream takes PCM chunks at the client's sample rate (int16 or float, mono or interleaved
``(n, channels)``), resamples to 16 kHz and returns the feature frames that have become final.
Frame ``k`` covers the 40 ms starting ``k * 0.04`` s after the stream's first sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.face.layout import AUDIO_FEATURE_DIM, FPS, SAMPLE_RATE
from models.features.mfcc import MfccConfig, StreamingMfcc, StreamingResampler, to_mono
from server.perception.video import MediaError, read_audio

SILENCE_RMS = 1e-4
"""Below this RMS (float scale) a whole signal counts as silent."""


@dataclass(frozen=True)
class AudioFrames:
    """Consecutive feature frames ``start .. start + len(features) - 1`` of a stream."""

    start: int
    features: np.ndarray  # (n, 78) float32

    def timestamps(self, t0: float = 0.0) -> np.ndarray:
        return t0 + (self.start + np.arange(len(self.features))) / FPS


class AudioFeatureStream:
    """Bounded-state streaming features; equal to :func:`file_features` on the same samples."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, config: MfccConfig | None = None) -> None:
        self._resampler = StreamingResampler(sample_rate)
        self._mfcc = StreamingMfcc(config or MfccConfig())
        self._next = 0

    @property
    def sample_rate(self) -> int:
        return self._resampler.in_rate

    @property
    def lookahead_frames(self) -> int:
        """Frames of audio past frame ``k`` needed before ``k`` comes out."""
        return self._mfcc.config.lookahead_frames

    def push(self, chunk: np.ndarray) -> AudioFrames:
        """One chunk of PCM; returns the frames now final (possibly none)."""
        pcm = to_mono(np.asarray(chunk))
        return self._frames(self._mfcc.push(self._resampler.push(pcm)))

    def flush(self) -> AudioFrames:
        """End of stream: the held-back frames, edges handled as for a whole file."""
        tail = self._resampler.flush()
        feats = self._mfcc.push(tail) if len(tail) else np.zeros((0, AUDIO_FEATURE_DIM), np.float32)
        out = self._frames(feats)
        last = self._frames(self._mfcc.flush())
        return AudioFrames(out.start, np.concatenate([out.features, last.features]))

    def _frames(self, feats: np.ndarray) -> AudioFrames:
        out = AudioFrames(self._next, feats.astype(np.float32, copy=False))
        self._next += len(feats)
        return out


def load_audio(path: str | Path) -> np.ndarray:
    """A media file's first audio stream as 16 kHz mono float32; :class:`MediaError` if none."""
    pcm = read_audio(path, SAMPLE_RATE)
    if pcm is None or len(pcm) == 0:
        raise MediaError(f"{path}: no audio stream")
    return pcm


def is_silent(pcm: np.ndarray) -> bool:
    return len(pcm) == 0 or float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) < SILENCE_RMS
