"""Streaming and offline face extraction on real video: agreement, face mask, re-anchoring."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.face import layout
from server.perception.extract import EventKind, State, StreamingFaceExtractor
from server.perception.files import NoFaceError, extract_face
from server.perception.pfl import PflConfig
from server.perception.video import iter_frames_25fps
from tests.conftest import place, write_video


@pytest.fixture(scope="module")
def short_clip(cap12: Path, tmp_path_factory) -> Path:
    """The first 5 s of a real talking-face clip, re-encoded."""
    frames = [rgb for _, rgb in itertools.islice(iter_frames_25fps(cap12), 125)]
    return write_video(tmp_path_factory.mktemp("clip") / "cap12_5s.mp4", frames)


@pytest.fixture(scope="module")
def offline(short_clip: Path):
    return extract_face(short_clip)


def stream(path: Path, **kwargs) -> tuple[np.ndarray, np.ndarray, list, StreamingFaceExtractor]:
    coeffs, found, events = [], [], []
    with StreamingFaceExtractor(**kwargs) as ex:
        for k, rgb in iter_frames_25fps(path):
            out = ex.push(rgb, k / layout.FPS)
            coeffs += [f.coeffs for f in out.frames]
            found += [f.found for f in out.frames]
            events += out.events
        out = ex.flush()
        coeffs += [f.coeffs for f in out.frames]
        found += [f.found for f in out.frames]
        events += out.events
    return np.array(coeffs), np.array(found), events, ex


def test_offline_extraction_of_a_real_clip(offline) -> None:
    coeffs, found, window, events = offline
    assert coeffs.shape == (125, layout.DIM) and coeffs.dtype == np.float32
    assert found.all()
    layout.validate(coeffs)
    assert window.ref_scale is not None and window.size > 50
    # A talking face: the jaw moves, the head moves a little, translation is relative to a window
    # that contains the face centre on every frame.
    assert np.ptp(coeffs[:, layout.index("jawOpen")]) > 0.15
    assert np.abs(coeffs[:, layout.TRANSLATION][:, :2]).max() < 0.5
    assert abs(np.median(coeffs[:, layout.index("tz")])) < 1e-6  # z is relative to the median


def test_streaming_with_the_same_window_equals_offline(short_clip, offline) -> None:
    coeffs, _, window, _ = offline
    streamed, found, events, _ = stream(short_clip, window=window, allow_reanchor=False)
    assert found.all() and len(streamed) == len(coeffs)
    np.testing.assert_allclose(streamed, coeffs, atol=1e-5)


def test_streaming_with_warmup_agrees_with_offline(short_clip, offline) -> None:
    coeffs, _, window, _ = offline
    streamed, found, events, ex = stream(short_clip)
    assert found.all() and len(streamed) == len(coeffs)
    assert [e.kind for e in events] == [EventKind.ANCHORED]
    online = events[0].window
    expr = layout.DETECTED_BLENDSHAPES
    # Different window, same face: expression and rotation nearly equal...
    assert np.median(np.abs(streamed[:, expr] - coeffs[:, expr])) < 0.02
    assert np.abs(streamed[:, layout.ROTATION] - coeffs[:, layout.ROTATION]).max() < np.radians(4)
    # ...and the face centre in frame pixels agrees through either window (within 3 px).
    tx, ty = layout.index("tx"), layout.index("ty")
    px_off = np.stack([window.cx + coeffs[:, tx] * window.size,
                       window.cy - coeffs[:, ty] * window.size], 1)  # fmt: skip
    px_on = np.stack([online.cx + streamed[:, tx] * online.size,
                      online.cy - streamed[:, ty] * online.size], 1)  # fmt: skip
    assert np.abs(px_off - px_on).max() < 3


def test_face_mask_is_false_exactly_on_frames_without_a_face(astronaut, tmp_path) -> None:
    face = place(np.ascontiguousarray(astronaut[40:300, 120:340]), (360, 480), 120, 50)
    blank = np.full_like(face, 90)
    frames = [face] * 30 + [blank] * 20 + [face] * 30
    clip = write_video(tmp_path / "gap.mp4", frames)
    coeffs, found, _, events = extract_face(clip)
    np.testing.assert_array_equal(found, [True] * 30 + [False] * 20 + [True] * 30)
    assert not coeffs[~found].any()  # neutral, and flagged as such
    kinds = [(e.kind, e.frame_index) for e in events]
    assert kinds == [(EventKind.FACE_LOST, 30), (EventKind.FACE_FOUND, 50)]


def test_clip_without_any_face_is_a_clear_error(tmp_path) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(10)]
    clip = write_video(tmp_path / "noise.mp4", frames)
    with pytest.raises(NoFaceError, match="no face found in any of its 10 frames"):
        extract_face(clip)


def test_online_window_reanchors_after_the_face_leaves_it(astronaut) -> None:
    face = cv2.resize(astronaut[40:300, 120:340], (330, 390))  # large enough for the detector
    frames = [place(face, (480, 800), 20, 40)] * 40 + [place(face, (480, 800), 440, 80)] * 60
    cfg = PflConfig(warmup_frames=10, reanchor_after_frames=15, reanchor_frames=5)
    coeffs, found, events = [], [], []
    with StreamingFaceExtractor(cfg) as ex:
        for k, rgb in enumerate(frames):
            out = ex.push(rgb, k / layout.FPS)
            coeffs += [f.coeffs for f in out.frames]
            found += [f.found for f in out.frames]
            events += out.events
        assert ex.state is State.ANCHORED and ex.buffered_frames == 0
    coeffs = np.array(coeffs)
    # The face is visible on every frame; the whole-frame tracker may miss the one frame where
    # the face teleports (real heads do not), then re-detects it.
    assert len(coeffs) == 100 and sum(found) >= 99 and all(found[:40]) and all(found[41:])
    kinds = [(e.kind, e.frame_index) for e in events if e.kind.startswith("pfl")]
    # Outside from frame 40: searching after 15 frames, re-anchored on the 5th detection.
    assert kinds == [(EventKind.ANCHORED, 0), (EventKind.REANCHORED, 40 + 15 + 4)]
    tx = layout.index("tx")
    assert coeffs[45, tx] > 0.5  # out of the old window: displacement reported, not hidden
    assert abs(coeffs[-1, tx]) < 0.1  # centred in the new window
    assert [e.window.cx for e in events if e.kind is EventKind.REANCHORED][0] > 560


def test_streaming_rejects_bad_frames() -> None:
    with StreamingFaceExtractor() as ex:
        with pytest.raises(ValueError, match="uint8 RGB"):
            ex.push(np.zeros((10, 10), np.uint8), 0.0)
        with pytest.raises(ValueError, match="uint8 RGB"):
            ex.push(np.zeros((10, 10, 3), np.float32), 0.0)
