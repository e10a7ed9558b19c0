"""Naive reaction baselines, scored by the same code as every model: the floor to clear.

Each baseline is fitted on a training split and then predicts ``K`` listener reactions
``(K, T, 58)`` for a sample from the speaker's side only (never the real listener):

- ``random``: expressions uniform in [0, 1], pose uniform within the training range, per frame.
- ``mime``: the speaker's own coefficients delayed by ``mime_delay`` frames (a listener copying
  the speaker), the same for all ``K``.
- ``mean``: the frame-wise mean of the training listener reactions, the same for all ``K``.
- ``nearest``: the listener reactions of the ``K`` training samples whose speaker behaviour (25-d
  emotion and 78-d audio features, averaged over 1 s blocks) is nearest to this speaker's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.data.dataset import ReactDataset, Sample
from models.face import layout

NAMES = ("random", "mime", "mean", "nearest")
BLOCK = 25
"""Frames per block of the nearest-neighbour speaker descriptor (1 s)."""


@dataclass(frozen=True)
class BaselineConfig:
    k: int = 10
    mime_delay: int = 10
    """Frames (400 ms at 25 fps)."""
    seed: int = 0


def _fit_length(x: np.ndarray, frames: int) -> np.ndarray:
    """Crop or pad (repeating the last row) to ``frames`` rows."""
    if len(x) >= frames:
        return x[:frames]
    return np.concatenate([x, np.repeat(x[-1:], frames - len(x), axis=0)])


def speaker_descriptor(sample: Sample, frames: int) -> np.ndarray:
    """Block means of the speaker's emotion and audio features: ``(frames // BLOCK * 103,)``."""
    emo = _fit_length(sample.speaker.emotion, frames)
    feats = [emo]
    if sample.speaker.audio_features is not None:
        audio = _fit_length(sample.speaker.audio_features, frames)
        feats.append(audio / (np.abs(audio).max(axis=0, keepdims=True) + 1e-6))
    x = np.concatenate(feats, axis=-1)
    blocks = max(frames // BLOCK, 1)
    return x[: blocks * BLOCK].reshape(blocks, -1, x.shape[-1]).mean(axis=1).reshape(-1)


class Baseline:
    """A fitted baseline: :meth:`predict` gives ``(K, T, 58)`` float32 for one sample."""

    def __init__(self, name: str, train: ReactDataset, config: BaselineConfig | None = None):
        if name not in NAMES:
            raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(NAMES)}")
        self.name = name
        self.config = config or BaselineConfig()
        if len(train) == 0:
            raise ValueError("the training split is empty")
        samples = [train[i] for i in range(len(train))]
        self.frames = int(np.median([s.listener.frames for s in samples]))
        listeners = np.stack([_fit_length(s.listener.coeffs, self.frames) for s in samples])
        self._low = listeners.reshape(-1, layout.DIM).min(axis=0)
        self._high = listeners.reshape(-1, layout.DIM).max(axis=0)
        self._mean = listeners.mean(axis=0)
        self._listeners = listeners if name == "nearest" else None
        self._keys = (np.stack([speaker_descriptor(s, self.frames) for s in samples])
                      if name == "nearest" else None)  # fmt: skip

    def predict(self, sample: Sample, rng: np.random.Generator) -> np.ndarray:
        k, t = self.config.k, sample.speaker.frames
        if self.name == "random":
            low = np.concatenate([np.zeros(layout.NUM_BLENDSHAPES), self._low[layout.POSE]])
            high = np.concatenate([np.ones(layout.NUM_BLENDSHAPES), self._high[layout.POSE]])
            out = rng.uniform(low, high, size=(k, t, layout.DIM))
        elif self.name == "mime":
            d = self.config.mime_delay
            sp = sample.speaker.coeffs
            delayed = np.concatenate([np.repeat(sp[:1], d, axis=0), sp[: t - d]])[:t]
            out = np.repeat(delayed[None], k, axis=0)
        elif self.name == "mean":
            out = np.repeat(_fit_length(self._mean, t)[None], k, axis=0)
        else:
            key = speaker_descriptor(sample, self.frames)
            dist = np.square(self._keys - key).sum(axis=1)
            order = np.argsort(dist, kind="stable")[:k]
            order = np.resize(order, k)  # fewer training samples than K: repeat
            out = np.stack([_fit_length(self._listeners[j], t) for j in order])
        return out.astype(np.float32)
