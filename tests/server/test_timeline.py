"""The speaker timeline: video and audio arriving at their own pace meet on 25 fps ticks."""

from __future__ import annotations

import math

import numpy as np

from models.face import layout
from server.engine.timeline import Timeline


def face(value: float) -> np.ndarray:
    return np.full(layout.DIM, value, np.float32)


def audio(n: int, value: float = 1.0) -> np.ndarray:
    return np.full((n, layout.AUDIO_FEATURE_DIM), value, np.float32)


def test_a_tick_is_final_once_both_sides_reported_it() -> None:
    tl = Timeline(audio_lookahead=0)
    assert tl.tick_of(100.0) == 0 and tl.tick_of(100.08) == 2  # 25 fps from the first capture
    tl.add_face(0, face(0.1), True, seq=7, ts=100.0, arrival=1.0)
    assert tl.final() == []  # audio for tick 0 has not come
    tl.add_audio(0, audio(1), seq=3, ts=100.0, arrival=2.0)
    (f,) = tl.final()
    assert f.tick == 0 and f.face_ok and f.audio_ok
    assert f.video_seq == 7 and f.audio_seq == 3 and f.arrival == 2.0
    np.testing.assert_allclose(f.face, 0.1)


def test_video_only_stream_goes_on_without_audio_after_the_skew() -> None:
    tl = Timeline(skew_s=0.2, audio_lookahead=0)  # 5 ticks
    for k in range(12):
        tl.add_face(k, face(0.2), True, seq=k, ts=k / 25, arrival=0.0)
    out = tl.final()
    assert [f.tick for f in out] == list(range(12 - 5 - 1))  # the last 6 still wait for audio
    assert all(f.face_ok and not f.audio_ok for f in out)
    assert all(f.audio_seq == -1 and math.isnan(f.audio_ts) for f in out)


def test_audio_only_stream_goes_on_without_a_face() -> None:
    tl = Timeline(skew_s=0.2, audio_lookahead=2)
    tl.add_audio(0, audio(20), seq=0, ts=0.0, arrival=0.0)
    out = tl.final()
    # the clock reaches tick 19 + 2 (audio lookahead); no video for a tick once 5 ticks past it
    assert len(out) == 21 - 5
    assert all(f.audio_ok and not f.face_ok for f in out)
    np.testing.assert_array_equal(out[0].face, layout.empty(1)[0])


def test_pushed_video_is_waited_for_longer_than_absent_video() -> None:
    # Frames handed to perception (PFL warm-up) are waited for up to video_pending_s.
    tl = Timeline(skew_s=0.2, video_pending_s=1.0, audio_lookahead=0)
    tl.video_pushed = 20
    tl.add_audio(0, audio(21), seq=0, ts=0.0, arrival=0.0)
    assert tl.final() == []  # 20 ticks behind the clock, less than 25: still waiting
    tl.add_audio(21, audio(10), seq=1, ts=0.84, arrival=0.0)
    assert [f.tick for f in tl.final()] == list(range(30 - 25))


def test_short_video_gaps_hold_the_last_face_and_long_gaps_are_no_face() -> None:
    tl = Timeline(hold_s=0.12, audio_lookahead=0)  # 3 ticks
    for k, v in ((0, 0.1), (3, 0.3), (10, 0.5)):
        tl.add_face(k, face(v), True, seq=k, ts=k / 25, arrival=0.0)
    out = tl.final(force_until=10)
    ok = [f.face_ok for f in out]
    assert ok == [True, True, True, True, False, False, False, False, False, False, True]
    np.testing.assert_allclose(out[1].face, 0.1)  # held
    np.testing.assert_allclose(out[10].face, 0.5)


def test_late_results_are_dropped_and_counted() -> None:
    tl = Timeline(audio_lookahead=0)
    tl.add_face(0, face(0.1), True, seq=0, ts=0.0, arrival=0.0)
    tl.final(force_until=5)
    tl.add_face(3, face(0.1), True, seq=3, ts=0.12, arrival=0.0)
    tl.add_audio(2, audio(2), seq=1, ts=0.08, arrival=0.0)
    assert tl.late == 3 and tl.held == 0


def test_discontinuity_flag_travels_with_the_frame() -> None:
    tl = Timeline(audio_lookahead=0)
    tl.add_face(0, face(0.1), True, seq=0, ts=0.0, arrival=0.0)
    tl.add_face(1, face(0.1), True, seq=1, ts=0.04, arrival=0.0, discontinuity=True)
    out = tl.final(force_until=1)
    assert [f.discontinuity for f in out] == [False, True]


def test_rebase_continues_the_timeline_after_a_pause() -> None:
    tl = Timeline(audio_lookahead=0)
    assert tl.tick_of(50.0) == 0
    for k in range(4):
        tl.add_face(k, face(0.1), True, seq=k, ts=50 + k / 25, arrival=0.0)
        tl.add_audio(k, audio(1), seq=k, ts=50 + k / 25, arrival=0.0)
    assert len(tl.final()) == 4
    tl.rebase(900.0)  # the client came back 850 s later
    assert tl.tick_of(900.0) == 4 and tl.tick_of(900.04) == 5
