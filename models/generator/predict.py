"""Whole-clip reactions from the online generator, for offline scoring (``rapport eval``).

The clip is streamed exactly as live: window ``[t, t + W)`` of each of the ``K`` reactions is
generated from the speaker's frames ``< t`` only, the ``K`` reactions (different noise) in one
batch through :class:`~models.generator.online.OnlineRunner`. With ``shifts_for`` (and
``rest_for``, ``spread_for``) every sample's sessions carry its listener's enrolment: the
low-rank shifts (the resting face that anchors the level, the expression spread that scales the
amplitude), i.e. personalised reactions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
from torch import Tensor

from models.data.dataset import Sample
from models.face import layout
from models.generator.denoiser import Denoiser
from models.generator.online import OnlineRunner
from models.posnet.model import PosNet

ShiftsFor = Callable[[Sample], dict[str, tuple[Tensor, Tensor]] | None]
"""The listener's low-rank factors for a sample (its enrolment), or ``None`` for generic."""
RestFor = Callable[[Sample], Tensor | np.ndarray | None]
"""The listener's resting face ``(58,)`` for a sample (its enrolment), or ``None``."""
SpreadFor = Callable[[Sample], float | None]
"""The listener's expression spread for a sample (its enrolment), or ``None``."""


class GeneratorPredictor:
    """``(sample, rng) -> (K, T, 58)``: K online reactions to the sample's speaker."""

    def __init__(self, model: Denoiser, posnet: PosNet | None = None, *, k: int = 10,
                 steps: int | None = None, device: str = "cpu", max_batch: int = 512,
                 shifts_for: ShiftsFor | None = None, guidance: float | None = None,
                 rest_for: RestFor | None = None, feedback: bool | None = None,
                 spread_for: SpreadFor | None = None) -> None:  # fmt: skip
        if k < 1 or max_batch < 1:
            raise ValueError(f"k and max_batch must be at least 1, got {k}, {max_batch}")
        self.k, self.max_batch, self.shifts_for = k, max_batch, shifts_for
        self.rest_for, self.spread_for = rest_for, spread_for
        self.runner = OnlineRunner(model, posnet, steps=steps, device=device, guidance=guidance,
                                   feedback=feedback)  # fmt: skip

    def __call__(self, sample: Sample, rng: np.random.Generator) -> np.ndarray:
        return self.predict_many([sample], rng)[0]

    def predict_many(self, samples: list[Sample], rng: np.random.Generator) -> list[np.ndarray]:
        """``(K, T_i, 58)`` for each sample: all ``len(samples) · K`` sessions advance together,
        one batched window step at a time (chunks of at most ``max_batch`` sessions). The seeds
        are drawn from ``rng`` sample by sample, so the result equals calling one at a time."""
        jobs = []  # (sample index, session, speaker streams)
        for i, sample in enumerate(samples):
            streams = _speaker_streams(sample)
            shifts = self.shifts_for(sample) if self.shifts_for is not None else None
            rest = self.rest_for(sample) if self.rest_for is not None else None
            spread = self.spread_for(sample) if self.spread_for is not None else None
            for seed in rng.integers(0, 2**31 - 1, size=self.k):
                session = self.runner.new_session(seed=int(seed), shifts=shifts, rest=rest,
                                                  spread=spread)  # fmt: skip
                jobs.append((i, session, streams))
        out: list[list[np.ndarray]] = [[] for _ in jobs]
        for lo in range(0, len(jobs), self.max_batch):
            chunk = list(range(lo, min(lo + self.max_batch, len(jobs))))
            while True:
                live = [j for j in chunk if jobs[j][1].t < len(jobs[j][2][0])]
                if not live:
                    break
                for j in live:
                    s, (audio, audio_ok, face, face_ok) = jobs[j][1], jobs[j][2]
                    t = s.t
                    s.push_speaker(audio[s.received: t], audio_ok[s.received: t],
                                   face[s.received: t], face_ok[s.received: t])  # fmt: skip
                windows = self.runner.step([jobs[j][1] for j in live])
                for j, win in zip(live, windows, strict=True):
                    out[j].append(win)
        result = []
        for i, sample in enumerate(samples):
            rows = [np.concatenate(out[j])[: sample.speaker.frames]
                    for j, job in enumerate(jobs) if job[0] == i]  # fmt: skip
            result.append(np.stack(rows))  # (K, T, 58)
        return result


def _speaker_streams(sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Audio features, audio flags, face, face flags of the sample's speaker, one row a frame."""
    speaker = sample.speaker
    face_ok = speaker.valid & speaker.found
    if speaker.audio_features is not None:
        audio, audio_ok = speaker.audio_features, speaker.audio_valid & speaker.valid
    else:
        audio = np.zeros((speaker.frames, layout.AUDIO_FEATURE_DIM), np.float32)
        audio_ok = np.zeros(speaker.frames, bool)
    return audio, audio_ok, speaker.coeffs, face_ok


class EnrolmentLike(Protocol):
    factors: dict[str, tuple[Tensor, Tensor]]
    rest: Tensor | None
    spread: float | None


def enrolment_predictors(model: Denoiser, posnet: PosNet | None,
                         enrolment_of: Callable[[Sample], EnrolmentLike], *, k: int = 10
                         ) -> dict[str, GeneratorPredictor]:  # fmt: skip
    """The full enrolment and each of its parts as predictors, for ablations: ``"personalised"``
    (shifts, resting face, expressivity gain), ``"shifts only"``, ``"resting face only"`` and
    ``"resting face + expressivity"``; ``enrolment_of(sample)`` gives the sample's enrolment."""
    shifts = lambda s: enrolment_of(s).factors  # noqa: E731
    rest = lambda s: enrolment_of(s).rest  # noqa: E731
    spread = lambda s: enrolment_of(s).spread  # noqa: E731
    return {
        "personalised": GeneratorPredictor(model, posnet, k=k, shifts_for=shifts, rest_for=rest,
                                           spread_for=spread),
        "shifts only": GeneratorPredictor(model, posnet, k=k, shifts_for=shifts),
        "resting face only": GeneratorPredictor(model, posnet, k=k, rest_for=rest),
        "resting face + expressivity": GeneratorPredictor(model, posnet, k=k, rest_for=rest,
                                                          spread_for=spread),
    }  # fmt: skip
