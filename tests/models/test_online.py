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


def test_without_feedback_no_window_sees_previous_frames_and_rest_anchors_the_level(
        runner) -> None:  # fmt: skip
    from models.generator.online import LEVEL_SECONDS

    rng = np.random.default_rng(5)
    w = runner.window
    stream = frames(rng, 3 * w)
    rest = np.concatenate([np.full(52, 0.3), [0.1, -0.2, 0.05, 0.02, -0.01, 0.1]]).astype("f4")
    quiet = OnlineRunner(runner.model, None, steps=2, feedback=False, ease_frames=0)
    assert runner.feedback and not quiet.feedback  # the config's default is feedback on
    kept, generic = quiet.new_session(seed=6, rest=rest), quiet.new_session(seed=6)
    pose = layout.POSE
    level = None
    for i in range(3):
        for s in (kept, generic):
            s.push_speaker(*(x[i * w: (i + 1) * w] for x in stream))
        anchored, plain = quiet.step([kept, generic])
        assert not kept.listener_ok.any() and not generic.listener_ok.any()
        mean = plain.mean(axis=0)
        level = mean if level is None else level
        # the same noise and speaker: the enrolled window is the generic one, shifted
        np.testing.assert_allclose(anchored[:, pose] - plain[:, pose],
                                   np.broadcast_to((rest - level)[pose], (w, 6)), atol=1e-5)
        shifted = np.clip(plain[:, :52] + (rest - level)[:52], 0, 1)
        np.testing.assert_allclose(anchored[:, :52], shifted, atol=1e-5)
        rate = 1 - np.exp(-w / (LEVEL_SECONDS * layout.FPS))
        level = level + rate * (mean - level)
        np.testing.assert_allclose(kept.level, level, atol=1e-6)
    # with feedback the resting face fills the previous frames and the output is fed back
    fed = runner.new_session(seed=6, rest=rest)
    assert fed.listener_ok.all() and (fed.listener == rest).all()
    fed.push_speaker(*(x[:w] for x in stream))
    runner.step([fed])
    assert not np.allclose(fed.listener[-w:], rest) and fed.level is None


def test_seam_easing_fades_the_expression_step_and_leaves_the_pose() -> None:
    torch.manual_seed(1)
    model = Denoiser(tiny_config())
    eased, plain = (OnlineRunner(model, None, steps=2, ease_frames=m) for m in (4, 0))
    w = plain.window
    stream = frames(np.random.default_rng(8), 2 * w)
    out = {}
    for name, r in (("eased", eased), ("plain", plain)):
        s = r.new_session(seed=3)
        out[name] = []
        for i in range(2):
            s.push_speaker(*(x[i * w: (i + 1) * w] for x in stream))
            out[name].append(r.step([s])[0])
    np.testing.assert_array_equal(out["eased"][0], out["plain"][0])  # nothing to join yet
    first, a, b = out["plain"][0], out["eased"][1], out["plain"][1]
    expr = layout.EXPRESSION
    step = first[-1, expr] - b[0, expr]
    fade = 1 - np.arange(1, 5) / 5
    np.testing.assert_allclose(a[:4, expr], np.clip(b[:4, expr] + fade[:, None] * step, 0, 1),
                               atol=1e-6)  # fmt: skip
    np.testing.assert_array_equal(a[4:], b[4:])
    np.testing.assert_array_equal(a[:, layout.POSE], b[:, layout.POSE])
    seam = lambda x: np.abs(x[0, expr] - first[-1, expr]).mean()  # noqa: E731
    assert seam(a) < 0.25 * seam(b)
    with pytest.raises(ValueError, match="ease_frames"):
        OnlineRunner(model, None, ease_frames=w)


def test_shift_spread_gain_multiplies_the_expressivity_of_sessions_with_shifts(runner) -> None:
    import dataclasses

    from models.generator.online import EXPRESSIVITY_POWER, EXPRESSIVITY_RANGE

    population = 0.2
    config = dataclasses.replace(runner.model.config, expression_spread=population,
                                 shift_spread_gain=1.25)  # fmt: skip
    model = Denoiser(config)
    model.load_state_dict(runner.model.state_dict())
    quiet = OnlineRunner(model, None, steps=2, feedback=False, ease_frames=0)
    r = config.shift_rank
    shifts = {name: (torch.randn(o, r) * 0.3, torch.randn(r, i) * 0.3)
              for name, (o, i) in model.shift_targets().items()}  # fmt: skip
    rest = np.full(layout.DIM, 0.2, np.float32)
    expressivity = 1.5 ** EXPRESSIVITY_POWER
    shifted = quiet.new_session(seed=0, shifts=shifts, rest=rest, spread=1.5 * population)
    plain = quiet.new_session(seed=0, rest=rest, spread=1.5 * population)
    assert shifted.gain == pytest.approx(1.25 * expressivity)
    assert plain.gain == pytest.approx(expressivity)  # no shifts: nothing to restore
    assert quiet.new_session(seed=0, shifts=shifts, rest=rest).gain == pytest.approx(1.25)
    assert quiet.new_session(seed=0, shifts=shifts).gain == 1.0  # no resting face: no anchor
    lo, hi = EXPRESSIVITY_RANGE
    assert quiet.new_session(seed=0, shifts=shifts, rest=rest, spread=100.0).gain == hi
    # the window is scaled about its level by that gain (same noise, same shifts)
    stream = frames(np.random.default_rng(3), quiet.window)
    one = OnlineRunner(Denoiser(dataclasses.replace(config, shift_spread_gain=None)), None,
                       steps=2, feedback=False, ease_frames=0)  # fmt: skip
    one.model.load_state_dict(runner.model.state_dict())
    out = {}
    for name, rn in (("compensated", quiet), ("plain", one)):
        s = rn.new_session(seed=4, shifts=shifts, rest=rest, spread=population)
        s.push_speaker(*stream)
        out[name] = rn.step([s])[0]
    base = one.new_session(seed=4, shifts=shifts)  # the unanchored shifted window
    base.push_speaker(*stream)
    raw = one.step([base])[0][:, :52]
    level = raw.mean(axis=0)
    np.testing.assert_allclose(out["compensated"][:, :52],
                               np.clip(rest[:52] + 1.25 * (raw - level), 0, 1), atol=1e-5)
    np.testing.assert_allclose(out["plain"][:, :52], np.clip(rest[:52] + raw - level, 0, 1),
                               atol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="shift_spread_gain must be a positive number"):
        dataclasses.replace(config, shift_spread_gain=0.0)


def test_expressivity_gain_scales_an_enrolled_expression_about_its_level(runner) -> None:
    import dataclasses

    from models.generator.online import EXPRESSIVITY_POWER, EXPRESSIVITY_RANGE

    population = 0.2
    model = Denoiser(dataclasses.replace(runner.model.config, expression_spread=population))
    model.load_state_dict(runner.model.state_dict())
    quiet = OnlineRunner(model, None, steps=2, feedback=False, ease_frames=0)
    rng = np.random.default_rng(11)
    w = quiet.window
    stream = frames(rng, 2 * w)
    rest = np.concatenate([np.full(52, 0.4), [0.1, -0.2, 0.05, 0.02, -0.01, 0.1]]).astype("f4")
    lively = quiet.new_session(seed=7, rest=rest, spread=2 * population)
    still = quiet.new_session(seed=7, rest=rest, spread=population)
    generic = quiet.new_session(seed=7)
    gain = 2 ** EXPRESSIVITY_POWER
    assert lively.gain == pytest.approx(gain) and still.gain == pytest.approx(1.0)
    level = None
    for i in range(2):
        for s in (lively, still, generic):
            s.push_speaker(*(x[i * w: (i + 1) * w] for x in stream))
        big, plain_rest, plain = quiet.step([lively, still, generic])
        mean = plain.mean(axis=0)
        level = mean if level is None else level
        expected = np.clip(rest[:52] + gain * (plain[:, :52] - level[:52]), 0, 1)
        np.testing.assert_allclose(big[:, :52], expected, atol=1e-5)
        np.testing.assert_allclose(big[:, layout.POSE], plain_rest[:, layout.POSE], atol=1e-6)
        rate = 1 - np.exp(-w / (10.0 * layout.FPS))
        level = level + rate * (mean - level)
    assert np.abs(big[:, :52] - rest[:52]).mean() > np.abs(plain_rest[:, :52] - rest[:52]).mean()
    lo, hi = EXPRESSIVITY_RANGE
    assert quiet.new_session(seed=0, rest=rest, spread=100.0).gain == hi
    assert quiet.new_session(seed=0, rest=rest, spread=0.0).gain == lo
    # no gain without a resting face, with feedback, or when the population is unknown
    assert quiet.new_session(seed=0, spread=2 * population).gain == 1.0
    fed = OnlineRunner(model, None, steps=2, feedback=True)
    assert fed.new_session(seed=0, rest=rest, spread=2 * population).gain == 1.0
    assert OnlineRunner(runner.model, None, steps=2, feedback=False).new_session(
        seed=0, rest=rest, spread=2 * population).gain == 1.0
    for bad in (float("nan"), -1.0, "wide", True):
        with pytest.raises(ValueError, match="spread: expected a finite non-negative number"):
            quiet.new_session(seed=0, rest=rest, spread=bad)
