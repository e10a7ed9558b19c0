"""Shared pieces of the API tests: a running app, real speaker media and a WebSocket client
that never blocks forever (every receive has a deadline)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import cv2
import numpy as np
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from server.api.app import create_app
from server.perception.video import iter_frames_25fps, read_audio
from server.protocol import Kind, ReactionWindow, decode_reaction, encode_media
from server.settings import Settings, load_settings

FPS = 25
SAMPLE_RATE = 16_000
CHUNK = SAMPLE_RATE // FPS
"""Audio samples per message: 40 ms, one video frame's worth."""
ORIGIN = "http://localhost:8000"
NOISE = ("stats", "event")
"""Control messages that arrive on their own schedule; the helpers step over them."""


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    """Settings of a test server: CPU, its own data folder, quiet periodic stats."""
    values: dict[str, Any] = {"data_dir": data_dir, "device": "cpu", "stats_interval_s": 30.0}
    values.update(overrides)
    return load_settings(**values)


def wait_ready(client: TestClient, timeout: float = 60.0) -> dict:
    """Poll ``/v1/health/ready`` until it answers 200; fails if loading fails or takes too long."""
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get("/v1/health/ready")
        if resp.status_code == 200:
            return resp.json()
        assert resp.status_code == 503, resp.text
        assert resp.json()["status"] == "loading", resp.json()
        assert time.monotonic() < deadline, f"not ready after {timeout} s"
        time.sleep(0.05)


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[TestClient]:
    """A started app (lifespan run, models loaded) and a client for it."""
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


# -- media -----------------------------------------------------------------------------------


def jpeg_frames(path: Path, count: int, start: int = 0) -> list[bytes]:
    """``count`` consecutive 25 fps frames of a video file, JPEG-encoded as a client would."""
    frames: list[bytes] = []
    for index, rgb in iter_frames_25fps(path):
        if index < start:
            continue
        if len(frames) == count:
            break
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 85])  # fmt: skip
        assert ok
        frames.append(buf.tobytes())
    assert len(frames) == count, f"{path} has fewer than {start + count} frames"
    return frames


def speech_pcm16(path: Path) -> bytes:
    """A speech recording as 16 kHz mono little-endian PCM16."""
    pcm = read_audio(path, SAMPLE_RATE)
    assert pcm is not None and len(pcm) > SAMPLE_RATE
    return (np.clip(pcm, -1.0, 1.0) * 32767).astype("<i2").tobytes()


# -- a stream client ---------------------------------------------------------------------------


@dataclass
class Closed:
    code: int
    reason: str


async def _receive(ws: WebSocketTestSession, timeout: float) -> dict:
    with anyio.fail_after(timeout):
        return await ws._send_rx.receive()  # the test session's queue of server messages


@dataclass
class Stream:
    """One client connection: sends media paced against the wall clock, collects reactions,
    and reads control messages with a deadline."""

    ws: WebSocketTestSession
    reactions: list[ReactionWindow] = field(default_factory=list)
    video_sent: dict[int, float] = field(default_factory=dict)
    audio_sent: dict[int, float] = field(default_factory=dict)
    seen: list[dict] = field(default_factory=list)
    """Every control message received, noise included."""
    closed: Closed | None = None
    clock0: float | None = None

    def send(self, msg: dict | str) -> None:
        self.ws.send_text(msg if isinstance(msg, str) else json.dumps(msg))

    def receive(self, timeout: float = 10.0) -> dict | ReactionWindow | Closed:
        """The next message from the server: a control dict, a reaction, or the close."""
        assert self.closed is None, f"the server closed the connection: {self.closed}"
        try:
            msg = self.ws.portal.call(_receive, self.ws, timeout)
        except TimeoutError:
            raise AssertionError(f"nothing from the server in {timeout} s; "
                                 f"last messages {self.seen[-3:]}") from None  # fmt: skip
        if msg["type"] == "websocket.close":
            self.closed = Closed(msg.get("code", 1000), msg.get("reason") or "")
            return self.closed
        if msg.get("bytes") is not None:
            window = decode_reaction(msg["bytes"])
            self.reactions.append(window)
            return window
        ctrl = json.loads(msg["text"])
        self.seen.append(ctrl)
        return ctrl

    def next_control(self, timeout: float = 10.0) -> dict | Closed:
        """The next control message that is not periodic noise (reactions are collected)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.receive(max(0.01, deadline - time.monotonic()))
            if isinstance(msg, Closed) or (isinstance(msg, dict) and msg["type"] not in NOISE):
                return msg

    def expect(self, kind: str, timeout: float = 10.0) -> dict:
        msg = self.next_control(timeout)
        assert isinstance(msg, dict) and msg["type"] == kind, f"expected {kind!r}, got {msg}"
        return msg

    def wait_for(self, kind: str, timeout: float = 10.0) -> dict:
        """Read until a control message of type ``kind``; the others stay in ``seen``."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next_control(max(0.01, deadline - time.monotonic()))
            assert isinstance(msg, dict), f"closed while waiting for {kind!r}: {msg}"
            if msg["type"] == kind:
                return msg

    def expect_error(self, code: str, timeout: float = 10.0) -> dict:
        msg = self.expect("error", timeout)
        assert msg["code"] == code, msg
        return msg

    def expect_close(self, timeout: float = 10.0) -> Closed:
        """Read until the server closes the connection; returns the close."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.receive(max(0.01, deadline - time.monotonic()))
            if isinstance(msg, Closed):
                return msg

    def start(self, listener: str = "generic", **options: Any) -> dict:
        self.send({"type": "start", "listener": listener, "options": options})
        return self.expect("started")

    def ping(self, ident: int | str = 1) -> None:
        """A ping is answered: the session is alive and its control path works."""
        self.send({"type": "ping", "id": ident})
        assert self.expect("pong")["id"] == ident

    def media(self, kind: Kind, seq: int, capture_ts: float, payload: bytes) -> None:
        self.ws.send_bytes(encode_media(kind, seq, capture_ts, payload))
        (self.audio_sent if kind is Kind.AUDIO_PCM16 else self.video_sent)[seq] = capture_ts

    def stream(self, frames: list[bytes], pcm: bytes, *, first_seq: int = 0,
               first_tick: int = 0) -> None:  # fmt: skip
        """Send frame ``i`` with the 40 ms of audio under it, paced at real time.

        Capture times continue one clock across calls (``first_tick`` frames after the first
        ``stream`` of this connection's clock, whatever time passed in between)."""
        if self.clock0 is None:
            self.clock0 = time.time() - first_tick / FPS
        start_wall = time.monotonic()
        for i, jpeg in enumerate(frames):
            tick = first_tick + i
            delay = start_wall + i / FPS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ts = self.clock0 + tick / FPS
            seq = first_seq + i
            self.media(Kind.VIDEO_JPEG, seq, ts, jpeg)
            audio = pcm[2 * CHUNK * tick : 2 * CHUNK * (tick + 1)]
            if audio:
                self.media(Kind.AUDIO_PCM16, seq, ts, audio)

    def flush(self, timeout: float = 30.0) -> dict:
        self.send({"type": "flush"})
        return self.wait_for("flushed", timeout)


@contextlib.contextmanager
def connect(client: TestClient, path: str = "/v1/stream", **kwargs: Any) -> Iterator[Stream]:
    with client.websocket_connect(path, **kwargs) as ws:
        yield Stream(ws)
