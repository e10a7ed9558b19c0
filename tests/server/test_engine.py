"""The engine without HTTP: sessions, batching of mixed listeners, limits, resume, failures.

Perception is replaced by a stand-in extractor (a face whose expression follows the frame's
brightness) so these tests exercise the timeline, the scheduler and the generator quickly; the
real perception path is covered by the API and end-to-end tests.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from models.face import layout
from models.personal.enrolment import enrol
from models.weights import load_default
from server.engine.engine import Engine, EngineLimits
from server.engine.session import MAX_PENDING, EngineError, Flushed, SessionOptions
from server.perception.extract import EventKind, FrameResult, Output, PflEvent
from server.protocol import ErrorCode, ProtocolError, ReactionWindow

FPS = 25


class BrightnessExtractor:
    """Stands in for PFL + FaceLandmarker: a face on bright frames, none on dark ones."""

    def __init__(self) -> None:
        self.index = 0
        self.closed = False
        self.last_found: bool | None = None

    def push(self, rgb: np.ndarray, timestamp: float) -> Output:
        level = float(rgb.mean()) / 255.0
        coeffs = layout.empty(1)[0]
        coeffs[: layout.NUM_BLENDSHAPES] = level
        found = level > 0.05
        out = Output(frames=[FrameResult(self.index, timestamp, coeffs, found)])
        if self.last_found is not None and found != self.last_found:
            kind = EventKind.FACE_FOUND if found else EventKind.FACE_LOST
            out.events.append(PflEvent(kind, self.index, timestamp))
        self.last_found = found
        self.index += 1
        return out

    def flush(self) -> Output:
        return Output()

    def close(self) -> None:
        self.closed = True


class Collector:
    """A sink that records everything a session sends."""

    def __init__(self) -> None:
        self.items: list = []
        self.lock = threading.Lock()

    def __call__(self, item: object) -> None:
        with self.lock:
            self.items.append(item)

    def of(self, kind: type) -> list:
        with self.lock:
            return [i for i in self.items if isinstance(i, kind)]

    def wait_for(self, kind: type, n: int = 1, timeout: float = 20.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.of(kind)) >= n:
                return self.of(kind)
            time.sleep(0.01)
        raise AssertionError(f"timed out waiting for {n} {kind.__name__}; got {self.items[-5:]}")


@pytest.fixture(scope="module")
def models():
    return load_default("cpu")


def make_engine(models, **limits) -> Engine:
    engine = Engine(models, torch.device("cpu"), EngineLimits(**limits),
                    extractor_factory=BrightnessExtractor)  # fmt: skip
    engine.start()
    return engine


@pytest.fixture
def engine(models):
    engine = make_engine(models)
    yield engine
    engine.shutdown()


def feed(session, frames: int, *, start: int = 0, t0: float = 1000.0, level: int = 128) -> None:
    """``frames`` video frames and matching 40 ms audio chunks, as the perception worker would."""
    rng = np.random.default_rng(start)
    for k in range(start, start + frames):
        ts = t0 + k / FPS
        session.push_video(k, ts, np.full((48, 64, 3), level, np.uint8), time.monotonic())
        session.push_audio(k, ts, 0.1 * rng.standard_normal(640).astype(np.float32),
                           time.monotonic())  # fmt: skip


def test_a_session_emits_reaction_windows_in_order(engine) -> None:
    sink = Collector()
    options = engine.resolve_options({"seed": 3})
    session, token = engine.open_session("generic", None, options, sink)
    feed(session, 40)
    session.flush()
    sink.wait_for(Flushed)
    windows = sink.of(ReactionWindow)
    assert len(windows) >= 4
    assert [w.start_frame for w in windows] == [8 * i for i in range(len(windows))]
    assert [w.seq for w in windows] == list(range(len(windows)))
    for w in windows:
        assert w.frames.shape == (8, layout.DIM) and np.isfinite(w.frames).all()
        bs = w.frames[:, layout.EXPRESSION]
        assert bs.min() >= 0.0 and bs.max() <= 1.0
    # each window names the latest inputs it was generated from: frames before its start
    for w in windows[1:]:
        assert 0 <= w.video_seq < w.start_frame and 0 <= w.audio_seq < w.start_frame + 8
    assert session.stats.windows_out == len(windows) and token


def test_generic_and_enrolled_listeners_share_one_batch_and_differ(engine, models) -> None:
    rng = np.random.default_rng(0)
    person = np.clip(0.3 + 0.2 * rng.standard_normal((300, layout.DIM)), 0, 1).astype(np.float32)
    enrolment = engine.check_enrolment(enrol(models.style, models.hyper, person).to_bytes(), "p")
    sinks = [Collector(), Collector()]
    options = engine.resolve_options({"seed": 11})  # same seed: only the listener differs
    generic, _ = engine.open_session("generic", None, options, sinks[0])
    personal, _ = engine.open_session("p", enrolment, options, sinks[1])
    batches_before = engine.scheduler.batches
    for k in range(32):  # interleave the two streams so their windows become ready together
        for s in (generic, personal):
            feed(s, 1, start=k)
    for s in (generic, personal):
        s.flush()
    for sink in sinks:
        sink.wait_for(Flushed)
    a, b = (np.stack([w.frames for w in s.of(ReactionWindow)]) for s in sinks)
    assert a.shape == b.shape
    assert np.abs(a - b).max() > 1e-3  # the shifts change the reactions
    assert engine.scheduler.windows - 0 >= 2 * len(a)
    assert engine.scheduler.batches - batches_before < 2 * len(a)  # some windows were batched


@pytest.mark.parametrize(("given", "field", "code"), [
    ({"window": 12}, "options.window", ErrorCode.INVALID_FIELD),
    ({"window": 72}, "options.window", ErrorCode.INVALID_FIELD),
    ({"steps": 9}, "options.steps", ErrorCode.INVALID_FIELD),
    ({"guidance": 5.0}, "options.guidance", ErrorCode.INVALID_FIELD),
    ({"sample_rate": 44100}, "options.sample_rate", ErrorCode.AUDIO_RATE),
])  # fmt: skip
def test_options_the_model_cannot_honour_are_named(engine, given, field, code) -> None:
    with pytest.raises(ProtocolError) as err:
        engine.resolve_options(given)
    assert err.value.code is code and err.value.field == field


def test_options_default_to_the_models_settings(engine, models) -> None:
    o = engine.resolve_options({"window": 16, "seed": 5})
    cfg = models.generator.config
    assert o == SessionOptions(window=16, steps=cfg.sample_steps, guidance=cfg.sample_guidance,
                               seed=5, posnet=True)  # fmt: skip


def test_window_option_groups_model_windows_per_message(engine) -> None:
    sink = Collector()
    session, _ = engine.open_session("generic", None, engine.resolve_options({"window": 24}), sink)
    feed(session, 50)
    session.flush()
    sink.wait_for(Flushed)
    windows = sink.of(ReactionWindow)
    assert [w.frames.shape[0] for w in windows[:-1]] == [24] * (len(windows) - 1)
    assert [w.start_frame for w in windows] == [24 * i for i in range(len(windows))]


def test_session_limit_and_drain_refuse_new_sessions(models) -> None:
    engine = make_engine(models, max_sessions=1)
    try:
        opts = engine.resolve_options({})
        engine.open_session("generic", None, opts, Collector())
        with pytest.raises(ProtocolError) as err:
            engine.open_session("generic", None, opts, Collector())
        assert err.value.code is ErrorCode.SESSION_LIMIT
        engine.draining = True
        with pytest.raises(ProtocolError) as err:
            engine.open_session("generic", None, opts, Collector())
        assert err.value.code is ErrorCode.SERVER_DRAINING
    finally:
        engine.shutdown()


def test_resume_needs_the_token_and_keeps_the_generator_state(engine) -> None:
    first = Collector()
    session, token = engine.open_session("generic", None, engine.resolve_options({}), first)
    feed(session, 24)
    first.wait_for(ReactionWindow, 2)
    engine.detach(session)
    with pytest.raises(ProtocolError) as err:
        engine.resume_session(session.id, "not-the-token", Collector())
    assert err.value.code is ErrorCode.RESUME_FAILED
    second = Collector()
    again = engine.resume_session(session.id, token, second)
    assert again is session and session.next_frame > 0
    t_before = session.online.t
    feed(again, 24, start=0, t0=5000.0)  # the client's clock moved on while it was away
    again.flush()
    second.wait_for(Flushed)
    starts = [w.start_frame for w in second.of(ReactionWindow)]
    assert starts and starts[0] >= t_before  # the timeline continues, it does not restart


def test_a_new_connection_takes_over_a_half_open_one(engine) -> None:
    old, new = Collector(), Collector()
    session, token = engine.open_session("generic", None, engine.resolve_options({}), old)
    assert engine.can_resume(session.id, token) and not engine.can_resume(session.id, "x")
    assert engine.resume_session(session.id, token, new) is session  # never detached
    engine.detach(session, old)  # the stale connection finally notices: nothing happens
    engine.close_session(session, old)
    assert not session.closed and session.owned_by(new)
    feed(session, 16)
    new.wait_for(ReactionWindow, 1)
    assert old.of(ReactionWindow) == []


def test_a_session_past_its_grace_period_is_closed(models) -> None:
    engine = make_engine(models, resume_grace_s=0.0)
    try:
        session, token = engine.open_session("generic", None, engine.resolve_options({}),
                                             Collector())  # fmt: skip
        engine.detach(session)
        assert session.closed and engine.session_count == 0
        with pytest.raises(ProtocolError):
            engine.resume_session(session.id, token, Collector())
    finally:
        engine.shutdown()


def test_a_failing_batch_fails_its_sessions_and_the_engine_goes_on(engine, monkeypatch) -> None:
    sink = Collector()
    session, _ = engine.open_session("generic", None, engine.resolve_options({}), sink)
    real = engine._step
    calls = {"n": 0}

    def flaky(key, online):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated device failure")
        return real(key, online)

    monkeypatch.setattr(engine.scheduler, "_step", flaky)
    feed(session, 9)
    (err,) = sink.wait_for(EngineError)
    assert err.code is ErrorCode.INTERNAL and err.fatal
    other = Collector()
    s2, _ = engine.open_session("generic", None, engine.resolve_options({}), other)
    feed(s2, 20)
    other.wait_for(ReactionWindow, 2)


def test_memory_stays_bounded_when_the_generator_stalls(models) -> None:
    engine = Engine(
        models, torch.device("cpu"), EngineLimits(), extractor_factory=BrightnessExtractor
    )  # scheduler never started
    try:
        session, _ = engine.open_session("generic", None, engine.resolve_options({}),
                                          Collector())  # fmt: skip
        feed(session, MAX_PENDING + 60)
        assert len(session._pending) <= MAX_PENDING
        assert session.stats.frames_dropped > 0
        assert session._timeline.held < 64
    finally:
        engine.shutdown()


def test_audio_at_the_wrong_rate_is_reported_once(engine) -> None:
    sink = Collector()
    session, _ = engine.open_session("generic", None, engine.resolve_options({}), sink)
    for k in range(110):  # 48 kHz audio stamped as if it were 16 kHz: 3x too many samples
        session.push_audio(k, 1000.0 + k * 0.04, np.zeros(1920, np.float32), time.monotonic())
    errors = [e for e in sink.of(EngineError) if e.code is ErrorCode.AUDIO_RATE]
    assert len(errors) == 1 and not errors[0].fatal and "16000 Hz" in errors[0].message


def test_face_lost_and_found_are_reported_as_events(engine) -> None:
    from server.engine.session import EngineEvent

    sink = Collector()
    session, _ = engine.open_session("generic", None, engine.resolve_options({}), sink)
    feed(session, 10, level=128)
    feed(session, 10, start=10, level=0)  # the face disappears
    feed(session, 10, start=20, level=128)
    events = [(e.event, e.frame) for e in sink.of(EngineEvent)]
    assert events == [("face_lost", 10), ("face_found", 20)]
