"""The browser client in a real headless Chromium against the real server process.

The fake camera plays a real talking-face clip and the fake microphone real speech; the tests
do what a user does (press start, record, upload, load an avatar) and check what a user would
see: reactions arriving, the avatar moving, latency figures, a new listener in the list.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.web.conftest import shot

pytestmark = pytest.mark.timeout(300)


def canvas_pixels(page, selector: str = "#avatar") -> np.ndarray:
    """The canvas as an RGB array (from a PNG of the element)."""
    import cv2

    png = page.locator(selector).screenshot()
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    return bgr[..., ::-1].astype(np.int16)


def figures(page) -> dict:
    return page.evaluate("window.rapport.live.figures()")


def wait_for(page, expr: str, timeout_s: float = 30.0) -> None:
    page.wait_for_function(expr, timeout=timeout_s * 1000, polling=200)


def test_live_stream_moves_the_avatar_and_shows_latency(page) -> None:
    before = canvas_pixels(page)
    page.click("#start")
    wait_for(page, "window.rapport.live.figures().state === 'streaming'", 20)
    wait_for(page, "window.rapport.live.figures().windows >= 10", 40)
    wait_for(page, "window.rapport.live.figures().latencyCount >= 5", 20)
    shots = []
    for _ in range(4):
        shots.append(canvas_pixels(page))
        time.sleep(0.7)
    shot(page, "live-streaming")
    f = figures(page)
    assert f["windows"] >= 10 and f["sent"]["video"] > 50 and f["sent"]["audio"] > 50, f
    # The figures a user reads are on the page, in ms.
    median = page.inner_text("#latency-median")
    p95 = page.inner_text("#latency-p95")
    assert median.endswith(" ms") and p95.endswith(" ms"), (median, p95)
    assert 0 < f["latencyMedianMs"] <= f["latencyP95Ms"] < 10_000, f
    assert page.inner_text("#state") == "streaming"
    # The avatar is drawn (not the empty background) and moves over time.
    assert np.abs(shots[0] - before).mean() > 0 or before.std() > 5
    assert before.std() > 5, "the default face was not rendered"
    changes = [np.abs(a - b).mean() for a, b in zip(shots, shots[1:], strict=False)]
    assert max(changes) > 0.05, changes
    page.click("#stop")
    wait_for(page, "window.rapport.live.figures().state === 'stopped'", 15)
