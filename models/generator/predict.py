"""Whole-clip reactions from the online generator, for offline scoring (``rapport eval``).

The clip is streamed exactly as live: window ``[t, t + W)`` of each of the ``K`` reactions is
generated from the speaker's frames ``< t`` only, the ``K`` reactions (different noise) in one
batch through :class:`~models.generator.online.OnlineRunner`.
"""

from __future__ import annotations

import numpy as np

from models.data.dataset import Sample
from models.face import layout
from models.generator.denoiser import Denoiser
from models.generator.online import OnlineRunner
from models.posnet.model import PosNet


class GeneratorPredictor:
    """``(sample, rng) -> (K, T, 58)``: K online reactions to the sample's speaker."""

    def __init__(self, model: Denoiser, posnet: PosNet | None = None, *, k: int = 10,
                 steps: int | None = None, device: str = "cpu") -> None:  # fmt: skip
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = k
        self.runner = OnlineRunner(model, posnet, steps=steps, device=device)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> np.ndarray:
        speaker = sample.speaker
        t_total, w = speaker.frames, self.runner.window
        face_ok = speaker.valid & speaker.found
        if speaker.audio_features is not None:
            audio, audio_ok = speaker.audio_features, speaker.audio_valid & speaker.valid
        else:
            audio = np.zeros((t_total, layout.AUDIO_FEATURE_DIM), np.float32)
            audio_ok = np.zeros(t_total, bool)
        seeds = rng.integers(0, 2**31 - 1, size=self.k)
        sessions = [self.runner.new_session(seed=int(s)) for s in seeds]
        windows = []
        for t in range(0, t_total, w):
            for s in sessions:
                s.push_speaker(audio[s.received: t], audio_ok[s.received: t],
                               speaker.coeffs[s.received: t], face_ok[s.received: t])  # fmt: skip
            windows.append(np.stack(self.runner.step(sessions)))  # (K, W, 58)
        return np.concatenate(windows, axis=1)[:, :t_total]  # (K, T, 58)
