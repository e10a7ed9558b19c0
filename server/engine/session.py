"""One streaming session: speaker media in, the listener's reaction windows out.

Perception of this session's frames runs in a worker thread (one call at a time per session,
so the FaceLandmarker and the PFL state are never shared); the batched generation runs in the
scheduler's thread. The two meet in :class:`StreamSession` under one lock:

    video frame ─ PFL + FaceLandmarker ─┐
                                        ├─ Timeline (25 fps, aligned by capture time) ─ pending
    audio chunk ─ streaming features ───┘                                               │
      sink ◀─ ReactionWindow ◀─ PosNet ◀─ batched denoiser (scheduler) ◀─ online Session ◀┘

Window ``[t, t + W)`` is submitted as soon as the speaker's frames up to ``t`` are in; while it
is being generated no frame is pushed into the generator state. Everything a session holds is
bounded: the timeline keeps only ticks not yet final, ``pending`` is capped (the oldest frames
are dropped and counted if the generator stalls), and latency samples live in a ring.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from models.generator.online import Session
from server.engine.timeline import FPS, SpeakerFrame, Timeline
from server.perception.audio import AudioFeatureStream, AudioFrames
from server.perception.extract import EventKind, Output, StreamingFaceExtractor
from server.protocol import ErrorCode, ReactionWindow

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
MAX_PENDING = 10 * FPS
"""Final speaker frames a session may hold for the generator (10 s) before dropping the oldest."""
AUDIO_GAP_S = 0.1
"""A jump in audio capture time beyond this is filled with silence (up to ``AUDIO_RESET_S``)."""
AUDIO_RESET_S = 2.0
RATE_CHECK_S = 3.0
"""Audio capture time after which the sample count is checked against the clock."""
RATE_TOLERANCE = 0.25


@dataclass(frozen=True)
class SessionOptions:
    """Effective per-session settings (validated by the engine)."""

    window: int
    """Frames per reaction message: a multiple of the model's window."""
    steps: int
    guidance: float
    seed: int
    posnet: bool


@dataclass(frozen=True)
class EngineEvent:
    event: str  # pfl_reanchor | face_lost | face_found | behind
    frame: int
    capture_ts: float | None = None
    detail: str | None = None


@dataclass(frozen=True)
class EngineError:
    code: ErrorCode
    message: str
    fatal: bool = False


@dataclass(frozen=True)
class Flushed:
    windows: int


Outgoing = ReactionWindow | EngineEvent | EngineError | Flushed
Sink = Callable[[Outgoing], None]


@dataclass
class SessionStats:
    frames_in: int = 0
    frames_dropped: int = 0
    audio_chunks: int = 0
    windows_out: int = 0
    late_windows: int = 0
    latency_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=256))

    def latency(self) -> tuple[float | None, float | None]:
        """Median and p95 of the recent server latencies (ms)."""
        if not self.latency_ms:
            return None, None
        lat = np.asarray(self.latency_ms)
        return float(np.median(lat)), float(np.percentile(lat, 95))


class StreamSession:
    """The state of one client stream; see the module docstring for the data flow."""

    def __init__(self, session_id: str, listener: str, options: SessionOptions, online: Session,
                 *, submit: Callable[[StreamSession], None],
                 extractor_factory: Callable[[], StreamingFaceExtractor],
                 sink: Sink | None = None,
                 observe: Callable[[str, float], None] | None = None) -> None:  # fmt: skip
        self.id, self.listener, self.options, self.online = session_id, listener, options, online
        self.stats = SessionStats()
        self.runner_key = (options.steps, options.guidance, options.posnet)
        self.created = time.monotonic()
        self.closed = False
        self._submit, self._make_extractor = submit, extractor_factory
        self._observe = observe or (lambda stage, seconds: None)
        self._sink: Sink | None = sink
        self._lock = threading.Lock()
        self._extractor: StreamingFaceExtractor | None = None
        self._frame_size: tuple[int, int] | None = None
        self._video_index: dict[int, tuple[int, int, float, float]] = {}
        self._extractor_index = 0
        self._fresh_extractor = False
        self._audio: _AudioClock | None = None
        self._timeline = Timeline(audio_lookahead=AudioFeatureStream().lookahead_frames)
        self._pending: collections.deque[SpeakerFrame] = collections.deque()
        self._recent: collections.deque[tuple[int, SpeakerFrame]] = collections.deque(
            maxlen=2 * online.window + 1
        )  # (index in the generator's stream, frame)
        self._in_flight = False
        self.submitted_at = 0.0
        self._out: list[np.ndarray] = []
        self._out_start = 0
        self._out_ref: SpeakerFrame | None = None
        self._flush_requested = False
        self._rebase = False
        self._errors_sent: set[ErrorCode] = set()

    # -- wiring ----------------------------------------------------------------------------------

    def attach(self, sink: Sink | None) -> None:
        """Send output to ``sink`` (``None`` while the client is disconnected: output dropped)."""
        with self._lock:
            self._sink = sink
            if sink is not None and self.stats.frames_in + self.stats.audio_chunks:
                self._rebase = True  # a resumed stream: continue the timeline at its next media

    def owned_by(self, sink: Sink | None) -> bool:
        """Whether ``sink`` is the connection this session currently sends to."""
        return sink is not None and self._sink == sink

    def _emit(self, item: Outgoing) -> None:
        sink = self._sink
        if sink is not None:
            sink(item)

    @property
    def next_frame(self) -> int:
        return self._timeline.next_tick

    @property
    def in_flight(self) -> bool:
        return self._in_flight

    # -- media in (perception worker) ------------------------------------------------------------

    def _tick(self, capture_ts: float) -> int:
        if self._rebase:  # after a reconnection: new timeline origin, new audio clock, new anchor
            self._timeline.rebase(capture_ts)
            self._audio = None
            self._fresh_extractor = True
            self._rebase = False
        return self._timeline.tick_of(capture_ts)

    def prepare(self) -> None:
        """Build the perception state before the first frame (loading the face model takes a
        few hundred ms that would otherwise delay, and drop, the first frames)."""
        if self._extractor is None:
            self._extractor = self._make_extractor()

    def push_video(self, seq: int, capture_ts: float, rgb: np.ndarray, arrival: float) -> None:
        """Run one decoded frame through PFL + FaceLandmarker and onto the timeline."""
        with self._lock:
            if self.closed:
                return
            self.stats.frames_in += 1
            tick = self._tick(capture_ts)
            if tick < 0 or tick <= self._timeline.video_pushed or tick < self.next_frame:
                self.stats.frames_dropped += 1  # same tick as the previous frame, or too late
                return
            self._timeline.video_pushed = tick
        size = (rgb.shape[1], rgb.shape[0])
        if self._frame_size is None and self._extractor is not None:
            self._frame_size = size  # the extractor made by prepare()
        new_stream = self._extractor is None or size != self._frame_size or self._fresh_extractor
        if new_stream:  # first frame, new camera size, or a resumed stream: a new PFL anchor
            if self._extractor is not None:
                self._extractor.close()
            self._extractor, self._frame_size = self._make_extractor(), size
            self._video_index.clear()
            self._extractor_index = 0
            self._fresh_extractor = False
        index = self._extractor_index
        self._video_index[index] = (tick, seq, capture_ts, arrival)
        began = time.monotonic()
        out = self._extractor.push(rgb, tick / FPS)
        self._observe("perception", time.monotonic() - began)
        self._extractor_index += 1
        with self._lock:
            self._take_extraction(out, first_of_stream=new_stream and tick > 0)

    def _take_extraction(self, out: Output, *, first_of_stream: bool) -> None:
        jumps = set()
        for ev in out.events:
            tick = self._video_index.get(ev.frame_index, (None,))[0]
            if tick is None:
                continue
            if ev.kind is EventKind.REANCHORED or (ev.kind is EventKind.ANCHORED
                                                   and first_of_stream):  # fmt: skip
                jumps.add(tick)
                self._emit(EngineEvent("pfl_reanchor", tick, self._video_index[ev.frame_index][2]))
            elif ev.kind is EventKind.FACE_FOUND:
                jumps.add(tick)
                self._emit(EngineEvent("face_found", tick, self._video_index[ev.frame_index][2]))
            elif ev.kind is EventKind.FACE_LOST:
                self._emit(EngineEvent("face_lost", tick, self._video_index[ev.frame_index][2]))
        for fr in out.frames:
            tick, seq, ts, arrival = self._video_index.pop(fr.index)
            self._timeline.add_face(tick, fr.coeffs, fr.found, seq, ts, arrival,
                                    discontinuity=tick in jumps)  # fmt: skip
        self._advance()

    def push_audio(self, seq: int, capture_ts: float, pcm: np.ndarray, arrival: float) -> None:
        """One chunk of 16 kHz mono float PCM onto the timeline."""
        with self._lock:
            if self.closed:
                return
            self.stats.audio_chunks += 1
            tick = self._tick(capture_ts)
            if self._audio is None or self._audio.reset_needed(capture_ts):
                self._audio = _AudioClock(max(tick, self.next_frame), capture_ts)
            clock = self._audio
            rate_problem = clock.check_rate(capture_ts, len(pcm))
            frames = clock.push(capture_ts, pcm)
            clock.last_seq, clock.last_ts = seq, capture_ts
            self._timeline.add_audio(clock.tick0 + frames.start, frames.features, seq,
                                     capture_ts, arrival)  # fmt: skip
            self._advance()
        if rate_problem:
            self.error(ErrorCode.AUDIO_RATE, rate_problem, once=True)

    def error(self, code: ErrorCode, message: str, *, once: bool = False,
              fatal: bool = False) -> None:  # fmt: skip
        if once and code in self._errors_sent:
            return
        self._errors_sent.add(code)
        self._emit(EngineError(code, message, fatal))

    def flush(self) -> None:
        """End of the current media: finalise every frame received and generate up to it."""
        extractor = self._extractor
        out = extractor.flush() if extractor is not None else None
        with self._lock:
            if out is not None:
                self._take_extraction(out, first_of_stream=False)
            if self._audio is not None:
                clock = self._audio
                tail = clock.flush()  # the frames held back for their lookahead
                self._timeline.add_audio(clock.tick0 + tail.start, tail.features, clock.last_seq,
                                         clock.last_ts, time.monotonic())  # fmt: skip
            self._flush_requested = True
            self._advance(force_until=self._timeline.last_tick)

    # -- generation ------------------------------------------------------------------------------

    def _advance(self, force_until: int | None = None) -> None:
        """Move final ticks to ``pending`` and feed the generator (lock held)."""
        self._pending.extend(self._timeline.final(force_until=force_until))
        while len(self._pending) > MAX_PENDING:
            self._pending.popleft()
            self.stats.frames_dropped += 1
        self._feed()

    def _feed(self) -> None:
        if self._in_flight or self.closed:
            return
        o = self.online
        batch = []
        while self._pending and o.received + len(batch) < o.t + o.window:
            frame = self._pending.popleft()
            if frame.discontinuity:
                self._push(batch)
                batch = []
                o.discontinuity()
            batch.append(frame)
        self._push(batch)
        if o.received >= max(o.t, 1) and (not self._flush_requested or o.received > o.t
                                          or self._pending):  # fmt: skip
            self._in_flight, self.submitted_at = True, time.monotonic()
            self._out_ref = next((f for i, f in reversed(self._recent) if i == o.t - 1), None)
            self._submit(self)
        elif self._flush_requested and not self._pending:
            self._finish_flush()

    def _push(self, frames: list[SpeakerFrame]) -> None:
        if not frames:
            return
        self.online.push_speaker(np.stack([f.audio for f in frames]),
                                 np.array([f.audio_ok for f in frames]),
                                 np.stack([f.face for f in frames]),
                                 np.array([f.face_ok for f in frames]))  # fmt: skip
        start = self.online.received - len(frames)
        self._recent.extend((start + i, f) for i, f in enumerate(frames))

    def window_done(self, frames: np.ndarray, *, late: bool = False) -> None:
        """The scheduler generated window ``[t − W, t)`` (``(W, 58)``); ``late``: it waited
        past the deadline (reported to the client as a ``behind`` event)."""
        with self._lock:
            self._in_flight = False
            if self.closed:
                return
            if late:
                self.stats.late_windows += 1
                self._emit(
                    EngineEvent(
                        "behind",
                        self.online.t - len(frames),
                        None,
                        "the generator is running late for this session",
                    )
                )
            if not self._out:
                self._out_start = self.online.t - len(frames)
            self._out.append(frames)
            if sum(len(f) for f in self._out) >= self.options.window:
                self._send_reaction()
            self._feed()

    def window_failed(self, exc: BaseException) -> None:
        with self._lock:
            self._in_flight = False
        log.exception("generation failed for session %s", self.id, exc_info=exc)
        self.error(ErrorCode.INTERNAL, "generation failed; the session is closed", fatal=True)

    def _send_reaction(self) -> None:
        frames = np.concatenate(self._out).astype(np.float32)
        self._out = []
        ref = self._out_ref
        video_seq, video_ts, audio_seq, audio_ts, arrival = -1, math.nan, -1, math.nan, None
        if ref is not None:
            video_seq, video_ts = ref.video_seq, ref.video_ts
            audio_seq, audio_ts, arrival = ref.audio_seq, ref.audio_ts, ref.arrival
        known = [t for t in (video_ts, audio_ts) if not math.isnan(t)]
        window = ReactionWindow(seq=self.stats.windows_out, start_frame=self._out_start,
                                frames=frames, video_seq=video_seq, video_ts=video_ts,
                                audio_seq=audio_seq, audio_ts=audio_ts,
                                capture_ts=max(known) if known else math.nan)  # fmt: skip
        self.stats.windows_out += 1
        if arrival is not None and math.isfinite(arrival):
            seconds = time.monotonic() - arrival
            self.stats.latency_ms.append(1000.0 * seconds)
            self._observe("server_latency", seconds)
        self._emit(window)

    def _finish_flush(self) -> None:
        if self._out:
            self._send_reaction()
        self._flush_requested = False
        self._emit(Flushed(self.stats.windows_out))

    # -- end -------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._sink = None
            self._pending.clear()
        if self._extractor is not None:
            self._extractor.close()
            self._extractor = None


class _AudioClock:
    """The audio side of one stream: features, the tick of its first sample, gap filling and
    a check of the sample count against the capture clock."""

    def __init__(self, tick0: int, ts0: float) -> None:
        self.tick0, self.ts0 = tick0, ts0
        self.samples = 0
        self.stream = AudioFeatureStream(SAMPLE_RATE)
        self.last_seq, self.last_ts = -1, math.nan

    def expected_ts(self) -> float:
        return self.ts0 + self.samples / SAMPLE_RATE

    def reset_needed(self, ts: float) -> bool:
        return ts - self.expected_ts() > AUDIO_RESET_S

    def check_rate(self, ts: float, n: int) -> str | None:
        span = ts - self.ts0
        if span < RATE_CHECK_S:
            return None
        ratio = (self.samples / SAMPLE_RATE) / span
        if abs(ratio - 1.0) > RATE_TOLERANCE:
            return (
                f"audio arrives at {ratio:.2f}x its capture clock: it must be PCM16 mono at "
                f"{SAMPLE_RATE} Hz, stamped with the capture time of its first sample"
            )
        return None

    def push(self, ts: float, pcm: np.ndarray) -> AudioFrames:
        gap = ts - self.expected_ts()
        if gap > AUDIO_GAP_S:  # lost chunks or a paused microphone: silence keeps the clock
            pcm = np.concatenate([np.zeros(int(gap * SAMPLE_RATE), np.float32), pcm])
        self.samples += len(pcm)
        return self.stream.push(pcm)

    def flush(self) -> AudioFrames:
        return self.stream.flush()
