"""The online runner: no look-ahead, batched sessions = separate ones, bounded state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.face import layout
from models.generator.config import tiny_config
from models.generator.denoiser import Denoiser
from models.generator.online import OnlineRunner
from models.posnet.model import PosNet, PosNetConfig


@pytest.fixture(scope="module")
def runner() -> OnlineRunner:
    torch.manual_seed(0)
    model = Denoiser(tiny_config())
    with torch.no_grad():  # a non-trivial untrained PosNet so smoothing really runs
        posnet = PosNet(PosNetConfig(window=model.config.window, hidden=16))
        for p in posnet.parameters():
            p.normal_(0, 0.05)
    return OnlineRunner(model, posnet, steps=2)


def frames(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    audio = rng.normal(0, 1, (n, layout.AUDIO_FEATURE_DIM)).astype(np.float32)
    face = np.concatenate([rng.uniform(0, 1, (n, 52)), rng.normal(0, 0.1, (n, 6))], axis=1)
    return audio, np.ones(n, bool), face.astype(np.float32), np.ones(n, bool)


def run(runner: OnlineRunner, stream: tuple[np.ndarray, ...], *, seed: int, ahead: int,
        shifts=None) -> np.ndarray:  # fmt: skip
    """Generate every window, feeding the speaker ``ahead`` frames past each window start."""
    w = runner.window
    s = runner.new_session(seed=seed, shifts=shifts)
    out = []
    n = len(stream[0])
    while s.t + w <= n:
        upto = min(s.t + ahead, n)
        if upto > s.received:
            s.push_speaker(*(x[s.received: upto] for x in stream))
        out.append(runner.step([s])[0])
    return np.concatenate(out)


def test_windows_never_look_ahead(runner) -> None:
    rng = np.random.default_rng(0)
    stream = frames(rng, 80)
    exact = run(runner, stream, seed=1, ahead=0)
    early = run(runner, stream, seed=1, ahead=runner.window)  # frames of [t, t+W) already in
    np.testing.assert_array_equal(exact, early)
    # ...and the speaker's past really conditions the output.
    other = list(stream)
    other[2] = other[2] + 0.3
    assert not np.allclose(run(runner, tuple(other), seed=1, ahead=0), exact)


def test_output_ranges_and_pose_only_smoothing(runner) -> None:
    out = run(runner, frames(np.random.default_rng(1), 64), seed=2, ahead=0)
    assert out.shape == (64, 58) and np.isfinite(out).all()
    expr = out[:, layout.EXPRESSION]
    assert expr.min() >= 0 and expr.max() <= 1


def test_a_batch_of_listeners_equals_separate_sessions(runner) -> None:
    rng = np.random.default_rng(2)
    stream = frames(rng, 16)
    r = runner.model.config.shift_rank
    shifts = {name: (torch.randn(o, r) * 0.3, torch.randn(r, i) * 0.3)
              for name, (o, i) in runner.model.shift_targets().items()}  # fmt: skip
    alone = [run(runner, stream, seed=5, ahead=0), run(runner, stream, seed=6, ahead=0,
                                                        shifts=shifts)]  # fmt: skip
    assert not np.allclose(alone[0], alone[1])
    a, b = runner.new_session(seed=5), runner.new_session(seed=6, shifts=shifts)
    got = [[], []]
    while a.t + runner.window <= 16:
        for s in (a, b):
            if s.t > s.received:
                s.push_speaker(*(x[s.received: s.t] for x in stream))
        for g, w in zip(got, runner.step([a, b]), strict=True):
            g.append(w)
    for g, ref in zip(got, alone, strict=True):
        np.testing.assert_allclose(np.concatenate(g), ref, atol=1e-5)


def test_state_is_bounded_and_discontinuity_forgets_the_speaker_face(runner) -> None:
    s = runner.new_session(seed=0)
    rng = np.random.default_rng(3)
    sizes = {k: getattr(s, k).shape for k in ("audio", "face", "listener")}
    for _ in range(50):
        s.push_speaker(*frames(rng, runner.window))
        runner.step([s])
    assert {k: getattr(s, k).shape for k in sizes} == sizes
    s.push_speaker(*frames(rng, runner.window))
    s.discontinuity()
    audio_ok, face_ok = s.speaker_context()[1], s.speaker_context()[3]
    assert not face_ok.any() and audio_ok[:-1].all() and not audio_ok[-1]  # 1 frame look-ahead
    assert np.isfinite(runner.step([s])[0]).all()


def test_bad_use_is_refused(runner) -> None:
    s = runner.new_session(seed=0)
    s.push_speaker(*frames(np.random.default_rng(4), 3 * runner.window))
    with pytest.raises(ValueError, match="not ready"):
        runner.step([s])  # the speaker is two windows ahead: the caller skipped windows
    with pytest.raises(ValueError, match="does not shift"):
        runner.new_session(seed=0, shifts={"nope": (torch.zeros(1, 1), torch.zeros(1, 1))})
    with pytest.raises(ValueError, match="must be"):
        s.push_speaker(np.zeros((2, 3)), np.ones(2, bool), np.zeros((2, 58)), np.ones(2, bool))
    audio, audio_ok, face, face_ok = frames(np.random.default_rng(5), 4)
    face[1, 3] = np.nan
    fresh = runner.new_session(seed=0)
    with pytest.raises(ValueError, match="non-finite"):
        fresh.push_speaker(audio, audio_ok, face, face_ok)
    assert fresh.received == 0  # nothing was taken
    face_ok[1] = False  # a NaN in a frame flagged invalid is never read
    fresh.push_speaker(audio, audio_ok, face, face_ok)
    assert fresh.received == 4


def test_a_resting_face_fills_the_first_previous_frames(runner) -> None:
    rng = np.random.default_rng(3)
    stream = frames(rng, runner.window)
    rest = np.concatenate([np.full(52, 0.4), [0.2, -0.3, 0.1, 0.05, -0.05, 0.1]]).astype("f4")
    s = runner.new_session(seed=4, rest=torch.from_numpy(rest))
    assert s.listener_ok.all() and (s.listener == rest).all()
    plain = runner.new_session(seed=4)
    assert not plain.listener_ok.any()
    for session in (s, plain):
        session.push_speaker(*stream)
    first, first_plain = runner.step([s, plain])
    assert not np.allclose(first, first_plain)  # the same noise, another starting state
    for bad in (np.zeros(3, "f4"), np.full(layout.DIM, np.nan, "f4")):
        with pytest.raises(ValueError, match="rest: expected 58 finite numbers"):
            runner.new_session(seed=0, rest=bad)


def test_without_feedback_the_previous_frames_stay_the_resting_face(runner) -> None:
    rng = np.random.default_rng(5)
    stream = frames(rng, 3 * runner.window)
    rest = np.concatenate([np.full(52, 0.3), np.zeros(6)]).astype("f4")
    quiet = OnlineRunner(runner.model, runner.posnet, steps=2, feedback=False)
    assert runner.feedback  # the config's default: generated windows are fed back
    fed, kept, generic = (r.new_session(seed=6, rest=rest if i < 2 else None)
                          for i, r in enumerate((runner, quiet, quiet)))  # fmt: skip
    for s in (fed, kept, generic):
        s.push_speaker(*(x[: runner.window] for x in stream))
    first = [runner.step([fed])[0], *quiet.step([kept, generic])]
    np.testing.assert_allclose(first[0], first[1], atol=1e-5)  # same start, same noise
    assert (kept.listener == rest).all() and kept.listener_ok.all()
    assert not generic.listener_ok.any()  # the generic listener never has previous frames
    assert not np.allclose(fed.listener, rest)  # the fed-back session moved on
    for s in (fed, kept):
        s.push_speaker(*(x[runner.window: 2 * runner.window] for x in stream))
    second_fed, second_kept = runner.step([fed])[0], quiet.step([kept])[0]
    assert not np.allclose(second_fed, second_kept)
