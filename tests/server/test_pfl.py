"""PFL window geometry (no landmarker): the paper's rule, staying inside, coordinates."""

from __future__ import annotations

import numpy as np
import pytest

from server.perception.pfl import (
    PflConfig,
    PflWindow,
    face_centred_window,
    reanchored_window,
    window_from_boxes,
)


def test_window_is_mean_centre_and_union_extent() -> None:
    cfg = PflConfig(margin=0.0)
    boxes = [(100, 100, 160, 170), None, (140, 110, 200, 180)]
    win = window_from_boxes(boxes, (640, 480), cfg)
    assert win is not None
    assert (win.cx, win.cy) == pytest.approx((150, 140))  # mean of (130,135) and (170,145)
    assert win.size == pytest.approx(100)  # union is 100 wide, 80 tall
    # The margin grows it on each side; the cap limits it.
    assert window_from_boxes(boxes, (640, 480), PflConfig(margin=0.1)).size == pytest.approx(120)
    assert window_from_boxes(boxes, (640, 480), PflConfig(max_size=90)).size == pytest.approx(90)
    assert window_from_boxes([None, None], (640, 480), cfg) is None


def test_window_is_shifted_into_the_frame_not_shrunk() -> None:
    win = window_from_boxes([(0, 0, 50, 50)], (640, 480), PflConfig(margin=0.5))
    assert win.size == pytest.approx(100)
    x0, y0, x1, y1 = win.box
    assert (x0, y0) == pytest.approx((0, 0)) and x1 <= 640 and y1 <= 480
    # Never larger than the frame's shorter side by default.
    huge = window_from_boxes([(0, 0, 640, 480)], (640, 480), PflConfig())
    assert huge.size == pytest.approx(480)


def test_window_coordinates_and_crop() -> None:
    win = PflWindow(cx=200, cy=150, size=100, frame_size=(400, 300))
    np.testing.assert_allclose(win.to_window(np.array([250.0, 100.0])), [0.5, 0.5])
    np.testing.assert_allclose(win.from_crop(np.array([0.5, 0.5])), [200, 150])
    assert win.contains_centre(np.array([240.0, 160.0]))
    assert not win.contains_centre(np.array([260.0, 150.0]))
    frame = np.zeros((300, 400, 3), np.uint8)
    frame[140:160, 190:210] = 255  # a white square at the window centre
    crop = win.crop(frame, 64)
    assert crop.shape == (64, 64, 3)
    assert crop[32, 32].min() == 255 and crop[2, 2].max() == 0


def test_face_centred_window_follows_the_box_and_reanchor_keeps_size() -> None:
    cfg = PflConfig(margin=0.0)
    a = face_centred_window((100, 100, 150, 150), (640, 480), cfg)
    b = face_centred_window((300, 100, 350, 150), (640, 480), cfg)
    assert b.cx - a.cx == pytest.approx(200) and a.size == b.size == pytest.approx(50)
    old = PflWindow(cx=100, cy=100, size=200, frame_size=(640, 480), ref_scale=3.0)
    new = reanchored_window(old, [(400, 200, 440, 240)] * 5, cfg)
    assert new.size == pytest.approx(200) and new.ref_scale == 3.0
    assert (new.cx, new.cy) == pytest.approx((420, 220))


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="margin"):
        PflConfig(margin=-1)
    with pytest.raises(ValueError, match="warmup_frames"):
        PflConfig(warmup_frames=0)
