"""Fixtures of the browser tests: the real server process on 127.0.0.1, Debian's Chromium with a
fake camera and microphone fed from files made here from real media, driven by Playwright.

Chromium is the system one (``/usr/bin/chromium``, installed by ``scripts/setup_system.sh``);
no browser is ever downloaded. Screenshots go to ``.cache/artefacts/web/``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import soundfile as sf

from server.perception.video import iter_frames_25fps, read_audio
from tests.conftest import media_clip, missing_media

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("RAPPORT_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTEFACTS = ROOT / ".cache" / "artefacts" / "web"
DIST = ROOT / "clients" / "web" / "dist" / "index.html"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]  # fmt: skip
CAMERA_SIZE = (320, 240)
CAMERA_SECONDS = 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m server.cli serve`` on a free loopback port with its own data directory."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        full = {**os.environ, "RAPPORT_DATA_DIR": str(data_dir), "RAPPORT_DEVICE": "cpu",
                "RAPPORT_ALLOWED_ORIGINS": self.base, "RAPPORT_RESUME_GRACE_S": "20",
                "RAPPORT_DRAIN_TIMEOUT_S": "5", **env}  # fmt: skip
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--port",
                                      str(self.port)], cwd=ROOT, env=full, stdout=self.log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited: {self.log_path.read_text()[-2000:]}"
            try:
                if httpx.get(f"{self.base}/v1/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError("the server did not become ready in 120 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def write_y4m(path: Path, frames: list[np.ndarray]) -> Path:
    """RGB frames → a YUV4MPEG2 (4:2:0) file, the format Chromium's fake camera reads."""
    h, w = frames[0].shape[:2]
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())  # Y, U, V planes
    return path


@pytest.fixture(scope="session")
def fake_media(tmp_path_factory, speech_wav) -> dict[str, Path]:
    """A talking-face clip as y4m (the fake camera) and real speech as wav (the fake mic)."""
    out = tmp_path_factory.mktemp("fake-media")
    frames = []
    for i, rgb in iter_frames_25fps(media_clip("cap13_edit2.mp4")):
        if i >= CAMERA_SECONDS * 25:
            break
        frames.append(cv2.resize(rgb, CAMERA_SIZE, interpolation=cv2.INTER_AREA))
    speech = read_audio(speech_wav, 48000)
    wav = out / "speech.wav"
    sf.write(wav, np.tile(speech, 2), 48000, subtype="PCM_16")
    return {"y4m": write_y4m(out / "camera.y4m", frames), "wav": wav}


@pytest.fixture(scope="session")
def chromium_ready() -> None:
    if not CHROMIUM.is_file():
        missing_media(f"{CHROMIUM} missing: `make system` installs Debian's chromium")
    if not DIST.is_file():
        missing_media("the web client is not built: `make web`")


@pytest.fixture(scope="module")
def server(tmp_path_factory, chromium_ready):
    srv = Server(tmp_path_factory.mktemp("web-server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory, fake_media, chromium_ready):
    """One Chromium for the module (a persistent context: a fresh profile of its own)."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    # A fresh profile: Playwright passes it as --user-data-dir.
    args = [*CHROMIUM_FLAGS, f"--use-file-for-fake-video-capture={fake_media['y4m']}",
            f"--use-file-for-fake-audio-capture={fake_media['wav']}"]  # fmt: skip
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=args,
            viewport={"width": 1280, "height": 1400},
        )  # fmt: skip
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


def open_page(browser, base: str):
    """A fresh tab on the served page, ready (default avatar loaded, listeners asked for)."""
    pg = browser.new_page()
    pg.console_lines = []
    pg.errors = []
    pg.on("console", lambda m: pg.console_lines.append(f"{m.type}: {m.text}"))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(base + "/")
    pg.wait_for_function("window.rapport && window.rapport.ready")
    pg.evaluate("window.rapport.ready")
    return pg


def close_page(pg, name: str) -> None:
    """Screenshot and console log as artefacts; an uncaught error in the page fails the test."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTEFACTS / f"{name}-end.png"), full_page=True)
    log = [*pg.console_lines, *(f"pageerror: {e}" for e in pg.errors)]
    (ARTEFACTS / f"{name}-console.txt").write_text("\n".join(log) + "\n")
    pg.close()
    assert not pg.errors, f"uncaught errors in the page: {pg.errors}"


@pytest.fixture()
def page(browser, server, request):
    pg = open_page(browser, server.base)
    yield pg
    close_page(pg, request.node.name)


def shot(page, name: str) -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
