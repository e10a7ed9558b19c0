"""Decoding and resampling any frame rate to the 25 fps coefficient rate."""

from __future__ import annotations

import av
import numpy as np
import pytest

from server.perception.video import FrameRateResampler, iter_frames_25fps, probe
from tests.conftest import write_streamed_webm, write_video


def resample(times: list[float], fps: float = 25) -> list[tuple[int, float]]:
    """Output (index, time of the chosen input frame) for inputs tagged by their time."""
    r = FrameRateResampler(fps)
    out = []
    for t in times:
        out += [(k, float(f[0])) for k, f in r.push(t, np.array([t]))]
    out += [(k, float(f[0])) for k, f in r.flush()]
    return out


@pytest.mark.parametrize("src_fps", [24, 25, 30, 50, 12.5])
def test_resampler_picks_the_nearest_frame_at_25_fps(src_fps: float) -> None:
    n = int(4 * src_fps)  # 4 s
    times = [i / src_fps for i in range(n)]
    out = resample(times)
    # One output per 40 ms over the covered span, indices consecutive from 0.
    assert [k for k, _ in out] == list(range(len(out)))
    assert abs(len(out) - 4 * 25) <= 1
    for k, chosen in out:
        nearest = min(times, key=lambda t: abs(t - k / 25))
        assert abs(chosen - k / 25) <= abs(nearest - k / 25) + 1e-9


def test_resampler_handles_jitter_offsets_and_time_going_backwards() -> None:
    rng = np.random.default_rng(0)
    times = list(10.0 + np.arange(100) / 25 + rng.uniform(-0.008, 0.008, 100))
    times.insert(50, times[49] - 0.5)  # a stale frame: dropped
    out = resample(times)
    assert [k for k, _ in out] == list(range(len(out)))
    assert 98 <= len(out) <= 100
    assert all(abs(chosen - 10.0 - k / 25) < 0.03 for k, chosen in out)


def test_24_fps_file_becomes_25_fps(astronaut, tmp_path) -> None:
    frames = [np.full((64, 96, 3), i, np.uint8) for i in range(48)]  # frame i has value i
    clip = write_video(tmp_path / "f24.mp4", frames, fps=24)
    assert probe(clip).fps == pytest.approx(24)
    out = list(iter_frames_25fps(clip))
    assert len(out) == 50
    values = [int(round(float(rgb.mean()))) for _, rgb in out]
    # Output k shows input round(k * 24 / 25): one input frame is shown twice per second.
    expected = [min(47, int(np.floor(k * 24 / 25 + 0.5))) for k in range(50)]
    assert max(abs(v - e) for v, e in zip(values, expected, strict=True)) <= 1


def test_a_streamed_webm_without_a_stored_duration_is_measured(astronaut, tmp_path) -> None:
    frames = [np.roll(astronaut[::4, ::4], i, axis=1) for i in range(50)]
    path = write_streamed_webm(tmp_path / "recording.webm", frames)
    with av.open(str(path)) as c:  # the case of a browser recording: nothing stored
        assert c.duration is None and c.streams.video[0].duration is None
    info = probe(path)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert len(list(iter_frames_25fps(path))) == 50
