"""Speaker scripts: what is said and when, independent of who says it.

A script fixes the turn structure of one clip: phrases (talking) separated by pauses, each
phrase's pitch accents and its final contour (a fall in pitch — the "low-pitch phrase ending"
that invites a back-channel — a flat continuation, or a question rise), smile episodes, brow
episodes, and a ``words`` seed from which the vowel and consonant sequence is drawn. Each script
is rendered by several speakers, each with its own voice, rate and face, and fresh noise; the
listeners who hear renderings of the same script form one appropriateness neighbourhood.

Timing model (seconds): a lead-in silence ~ U(0.2, 0.8); then phrases of log-normal duration
(median 2 s, clipped to [0.8, 4.5]) each followed by a pause, short ~ U(0.25, 0.8) with
probability 0.7 or a turn-yield pause ~ U(1.0, 2.5) otherwise. A phrase before a turn-yield pause
ends in a fall with probability 0.85, before a short pause with probability 0.4; the rest are
questions (rise) with probability 0.15 or flat continuations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.data.world.signals import KEY_SCRIPT, rng_for

LEAD_IN_S = (0.2, 0.8)
PHRASE_MEDIAN_S = 2.0
PHRASE_LOG_SD = 0.45
PHRASE_RANGE_S = (0.8, 4.5)
SHORT_PAUSE_S = (0.25, 0.8)
YIELD_PAUSE_S = (1.0, 2.5)
YIELD_PROB = 0.3
FALL_PROB = {True: 0.85, False: 0.4}
"""Chance of a falling ending, keyed by "a turn-yield pause follows"."""
QUESTION_PROB = 0.15
FALL_ST = (-8.0, -4.0)
"""Phrase-final fall, semitones over the last ``FINAL_S`` of the phrase."""
FLAT_ST = (-1.0, 1.0)
RISE_ST = (3.0, 6.0)
FALLING_BELOW_ST = -3.0
"""A phrase whose ``final`` is below this counts as a falling ending."""
ACCENTS_PER_S = 0.8
SMILE_RATE_PER_S = 0.08
SMILE_S = (1.0, 4.0)
BROW_PROB = 0.3
"""Chance that a pitch accent comes with a brow raise."""
BROW_S = (0.3, 0.9)
END_MARGIN_S = 0.3


@dataclass(frozen=True)
class Phrase:
    start: float
    end: float
    final: float
    """Pitch movement at the phrase end, semitones (negative = fall)."""
    accents: tuple[float, ...]
    """Times of pitch accents (s)."""

    @property
    def falls(self) -> bool:
        return self.final < FALLING_BELOW_ST


@dataclass(frozen=True)
class Episode:
    start: float
    duration: float
    intensity: float
    """In [0, 1]."""


@dataclass(frozen=True)
class Script:
    script_id: int
    duration: float
    phrases: tuple[Phrase, ...]
    smiles: tuple[Episode, ...]
    brows: tuple[Episode, ...]
    words: int
    """Seed of the vowel/consonant sequence: the same script says the same "words"."""

    def talking(self, t: np.ndarray) -> np.ndarray:
        """Whether each time in ``t`` (s) lies inside a phrase."""
        out = np.zeros(t.shape, dtype=bool)
        for p in self.phrases:
            out |= (t >= p.start) & (t < p.end)
        return out


def _phrases(duration: float, rng: np.random.Generator) -> list[Phrase]:
    phrases: list[Phrase] = []
    t = rng.uniform(*LEAD_IN_S)
    while True:
        length = float(np.clip(PHRASE_MEDIAN_S * np.exp(PHRASE_LOG_SD * rng.standard_normal()),
                               *PHRASE_RANGE_S))  # fmt: skip
        if t + length > duration - END_MARGIN_S:
            length = duration - END_MARGIN_S - t
            if length < PHRASE_RANGE_S[0]:
                break
        yields = rng.random() < YIELD_PROB
        if rng.random() < FALL_PROB[yields]:
            final = rng.uniform(*FALL_ST)
        elif rng.random() < QUESTION_PROB:
            final = rng.uniform(*RISE_ST)
        else:
            final = rng.uniform(*FLAT_ST)
        n_accents = max(1, rng.poisson(ACCENTS_PER_S * length))
        accents = np.sort(rng.uniform(t + 0.15, t + length - 0.4, n_accents))
        phrases.append(Phrase(round(t, 4), round(t + length, 4), round(final, 3),
                              tuple(round(float(a), 4) for a in accents)))  # fmt: skip
        pause = rng.uniform(*(YIELD_PAUSE_S if yields else SHORT_PAUSE_S))
        t += length + pause
        if t > duration - END_MARGIN_S - PHRASE_RANGE_S[0]:
            break
    return phrases


def make_script(seed: int, script_id: int, seconds: float) -> Script:
    """The script ``script_id`` of the world with ``seed``, for clips of ``seconds``."""
    rng = rng_for(seed, KEY_SCRIPT, script_id)
    phrases = _phrases(seconds, rng)
    smiles = []
    for start in np.sort(rng.uniform(0.0, seconds, rng.poisson(SMILE_RATE_PER_S * seconds))):
        smiles.append(Episode(round(float(start), 4), round(rng.uniform(*SMILE_S), 4),
                              round(rng.uniform(0.3, 1.0), 4)))  # fmt: skip
    brows = []
    for p in phrases:
        for a in p.accents:
            if rng.random() < BROW_PROB:
                brows.append(Episode(round(a - 0.1, 4), round(rng.uniform(*BROW_S), 4),
                                     round(rng.uniform(0.4, 1.0), 4)))  # fmt: skip
    words = int(rng.integers(0, 2**31 - 1))
    return Script(script_id, float(seconds), tuple(phrases), tuple(smiles), tuple(brows), words)
