"""Aligns a speaker's video and audio, arriving at their own pace, on one 25 fps timeline.

Every media message carries its capture timestamp on the client's clock. Tick ``k`` of the
timeline sits at ``t0 + k / FPS`` where ``t0`` is the first capture time of the session. Video
results (coefficients from the perception path) and audio feature frames land on ticks; a tick
becomes final once both sides have reported on it, or once the media clock has moved so far past
it that the missing side is taken as absent (a video-only or audio-only stream, a stalled
camera). Final ticks come out in order as :class:`SpeakerFrame`; late results for ticks already
final are dropped. State is bounded: only ticks not yet final are held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.face import layout

FPS = layout.FPS


@dataclass(frozen=True)
class SpeakerFrame:
    """One final tick of the speaker: what the generator reads."""

    tick: int
    face: np.ndarray  # (58,) float32
    face_ok: bool
    audio: np.ndarray  # (78,) float32
    audio_ok: bool
    video_seq: int
    video_ts: float
    audio_seq: int
    audio_ts: float
    arrival: float
    """Server monotonic time the last input of this tick arrived (for latency figures)."""
    discontinuity: bool = False
    """The speaker's coordinate frame changed here (PFL re-anchor, face found after a gap)."""


@dataclass(frozen=True)
class _Face:
    coeffs: np.ndarray
    ok: bool
    seq: int
    ts: float
    arrival: float
    discontinuity: bool


@dataclass(frozen=True)
class _Audio:
    features: np.ndarray
    seq: int
    ts: float
    arrival: float


class Timeline:
    """Collects per-tick video and audio results; :meth:`final` yields the ticks now complete.

    ``skew_s``: how long the media clock may run past a tick before a side that has sent nothing
    for it is taken as absent. ``video_pending_s``: the same for video frames that were pushed
    but whose result has not come out (the PFL warm-up holds up to a second). ``hold_s``: a gap
    in the video results up to this long repeats the last result; longer gaps are "no face".
    """

    def __init__(self, *, skew_s: float = 0.4, video_pending_s: float = 1.6,
                 audio_lookahead: int = 0, hold_s: float = 0.2) -> None:  # fmt: skip
        self.t0: float | None = None
        self.next_tick = 0
        self._clock = -1  # latest tick the media has reached
        self._skew = round(skew_s * FPS)
        self._pending = round(video_pending_s * FPS)
        self._lookahead = audio_lookahead
        self._hold = round(hold_s * FPS)
        self._face: dict[int, _Face] = {}
        self._audio: dict[int, _Audio] = {}
        self.video_pushed = -1
        """Latest tick handed to the perception path."""
        self._video_done = -1
        self._audio_done = -1
        self._last_face: _Face | None = None
        self.late = 0
        """Results that came for ticks already final (dropped)."""

    # -- clock -----------------------------------------------------------------------------------

    def tick_of(self, capture_ts: float) -> int:
        """The tick of a capture time (sets ``t0`` on the first call)."""
        if self.t0 is None:
            self.t0 = capture_ts
        return round((capture_ts - self.t0) * FPS)

    def advance_clock(self, tick: int) -> None:
        self._clock = max(self._clock, tick)

    def rebase(self, capture_ts: float) -> None:
        """Continue the timeline at ``capture_ts`` after a pause (a resumed connection): the
        next tick is the first not yet final, and nothing before it is waited for."""
        self.t0 = capture_ts - self.next_tick / FPS
        self._clock = max(self._clock, self.next_tick - 1)
        self.video_pushed = self._video_done = max(self._video_done, self.next_tick - 1)
        self._audio_done = max(self._audio_done, self.next_tick - 1)
        self._last_face = None

    # -- results ---------------------------------------------------------------------------------

    def add_face(self, tick: int, coeffs: np.ndarray, ok: bool, seq: int, ts: float,
                 arrival: float, discontinuity: bool = False) -> None:  # fmt: skip
        """The perception result of the video frame on ``tick`` (in tick order)."""
        if tick < self.next_tick or tick <= self._video_done:
            self.late += 1
            return
        face = _Face(coeffs.astype(np.float32), bool(ok), seq, ts, arrival, discontinuity)
        gap = tick - self._video_done - 1
        if 0 < gap <= self._hold and self._last_face is not None:
            for k in range(self._video_done + 1, tick):  # short gap: hold the last result
                if k >= self.next_tick:
                    self._face[k] = self._last_face
        self._face[tick] = face
        self._video_done, self._last_face = tick, face
        self.advance_clock(tick)

    def add_audio(self, tick: int, features: np.ndarray, seq: int, ts: float,
                  arrival: float) -> None:  # fmt: skip
        """Audio feature frames ``(n, 78)`` for ticks ``tick .. tick + n - 1``."""
        for i, row in enumerate(features):
            k = tick + i
            if k < self.next_tick or k <= self._audio_done:
                self.late += 1
                continue
            self._audio[k] = _Audio(row.astype(np.float32), seq, ts, arrival)
            self._audio_done = k
        if len(features):
            self.advance_clock(tick + len(features) - 1 + self._lookahead)

    # -- output ----------------------------------------------------------------------------------

    def _face_ready(self, k: int, force: bool) -> bool:
        if k in self._face or k <= self._video_done or force:
            return True
        behind = self._clock - k
        if self.video_pushed >= k:  # pushed, result not out yet (PFL warm-up)
            return behind > self._pending
        return behind > self._skew

    def _audio_ready(self, k: int, force: bool) -> bool:
        if k in self._audio or k <= self._audio_done or force:
            return True
        return self._clock - k > self._skew + self._lookahead

    def final(self, *, force_until: int | None = None) -> list[SpeakerFrame]:
        """Ticks now complete, in order. ``force_until``: end of stream, finalise every tick up
        to it whatever is missing."""
        out: list[SpeakerFrame] = []
        while True:
            k = self.next_tick
            force = force_until is not None and k <= force_until
            if k > self._clock and not force:
                break
            if not (self._face_ready(k, force) and self._audio_ready(k, force)):
                break
            face, audio = self._face.pop(k, None), self._audio.pop(k, None)
            out.append(_frame(k, face, audio))
            self.next_tick += 1
        return out

    @property
    def last_tick(self) -> int:
        """The latest tick the media reached (``-1`` before any)."""
        return self._clock

    @property
    def held(self) -> int:
        return len(self._face) + len(self._audio)


def _frame(k: int, face: _Face | None, audio: _Audio | None) -> SpeakerFrame:
    empty_face = face is None or not face.ok
    return SpeakerFrame(
        tick=k,
        face=layout.empty(1)[0].astype(np.float32) if empty_face else face.coeffs,
        face_ok=not empty_face,
        audio=(
            np.zeros(layout.AUDIO_FEATURE_DIM, np.float32) if audio is None else audio.features
        ),  # fmt: skip
        audio_ok=audio is not None,
        video_seq=-1 if face is None else face.seq,
        video_ts=math.nan if face is None else face.ts,
        audio_seq=-1 if audio is None else audio.seq,
        audio_ts=math.nan if audio is None else audio.ts,
        arrival=max(
            -math.inf if face is None else face.arrival,
            -math.inf if audio is None else audio.arrival,
        ),  # fmt: skip
        discontinuity=face is not None and face.discontinuity,
    )
