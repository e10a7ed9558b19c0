"""The real service end to end: ``rapport serve`` as its own process on 127.0.0.1, the real
``websockets`` client and ``rapport stream``, real talking-face clips and real recorded speech.

Covers: streaming for the generic and an enrolled listener (enrolled over REST from a real
clip), an API key with single-use browser tokens, resume after a forced disconnect, the drain
on SIGTERM (close 1001 after the current window), and listeners surviving a restart.
"""

from __future__ import annotations

import asyncio
import json
import os
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
import websockets

from models.face import layout
from server.cli import main as cli_main
from server.perception.video import iter_frames_25fps, read_audio
from server.protocol import Kind, decode_reaction, encode_media
from tests.conftest import media_clip, write_video

ROOT = Path(__file__).resolve().parents[2]
KEY = "test-key-0123456789"
FPS, CHUNK = 25, 640


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m server.cli serve`` on a free loopback port with its own data directory."""

    def __init__(self, data_dir: Path, log: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full = {**os.environ, "RAPPORT_DATA_DIR": str(data_dir), "RAPPORT_DEVICE": "cpu",
                "RAPPORT_API_KEY": KEY, "RAPPORT_RESUME_GRACE_S": "20",
                "RAPPORT_DRAIN_TIMEOUT_S": "10", **env}  # fmt: skip
        self.log = log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--port",
                                      str(self.port)], cwd=ROOT, env=full, stdout=self.log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited early: {log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{self.base}/v1/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("the server did not become ready in 90 s")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def media(tmp_path_factory, speech_wav) -> dict[str, Path]:
    """A 6 s speaker clip and an 11 s enrolment clip, both with real speech muxed in."""
    out = tmp_path_factory.mktemp("e2e-media")
    speech = read_audio(speech_wav, 16000)
    frames = [rgb for i, rgb in iter_frames_25fps(media_clip("cap13_edit2.mp4")) if i < 11 * FPS]
    return {
        "speaker": write_video(
            out / "speaker.mp4", frames[: 6 * FPS], audio=speech[: 6 * 16000]
        ),  # fmt: skip
        "enrol": write_video(out / "enrol.mp4", frames, audio=speech[: 11 * 16000]),
    }


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    data = tmp_path_factory.mktemp("e2e-data")
    server = ServerProcess(data, data / "server.log")
    yield server, data
    server.stop()


def headers() -> dict[str, str]:
    return {"X-API-Key": KEY}


def test_rapport_stream_gets_continuous_reactions_for_the_generic_listener(
    service, media, tmp_path
) -> None:
    server, _ = service
    out = tmp_path / "reactions.npz"
    code = cli_main(["-q", "stream", str(media["speaker"]), "--server",
                     f"ws://127.0.0.1:{server.port}", "--api-key", KEY, "--listener", "generic",
                     "--out", str(out)])  # fmt: skip
    assert code == 0
    got = np.load(out)
    frames, starts, latency = got["reactions"], got["start_frames"], got["latency_ms"]
    assert frames.shape[1] == layout.DIM and len(frames) >= 6 * FPS - 16
    assert np.array_equal(starts, np.arange(len(starts)) * 8)  # no window missing
    assert np.isfinite(frames).all()
    bs = frames[:, layout.EXPRESSION]
    assert bs.min() >= 0 and bs.max() <= 1
    assert frames[:, layout.POSE].std(axis=0).max() > 1e-4  # the head moves
    # live latency, capture -> reaction on this machine's clock, after the PFL warm-up
    assert np.median(latency[len(latency) // 3 :]) < 1000


def test_enrol_over_rest_then_stream_the_enrolled_listener(service, media) -> None:
    server, _ = service
    with media["enrol"].open("rb") as f:
        r = httpx.post(f"{server.base}/v1/listeners", headers=headers(), timeout=120,
                       files={"clip": ("enrol.mp4", f, "video/mp4")},
                       data={"name": "Ada", "consent": "true"})  # fmt: skip
    assert r.status_code == 201, r.text
    listener = r.json()
    assert listener["name"] == "Ada" and listener["clip"]["face_seconds"] > 8
    assert httpx.post(f"{server.base}/v1/listeners", timeout=10).status_code == 401

    from server.client import stream_file

    result = asyncio.run(stream_file(media["speaker"], url=f"ws://127.0.0.1:{server.port}",
                                     api_key=KEY, listener=listener["id"], limit_s=3.0,
                                     options={"seed": 1}))  # fmt: skip
    assert len(result.frames) >= 2 * FPS and np.isfinite(result.frames).all()
    assert not [e for e in result.errors if e.get("fatal")]


def _jpegs(path: Path, n: int) -> list[bytes]:
    return [cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
            for i, rgb in iter_frames_25fps(path) if i < n]  # fmt: skip


async def _send_media(ws, jpgs: list[bytes], t0: float, first_seq: int = 0) -> None:
    pcm = (0.05 * np.sin(np.arange(CHUNK) / 5) * 32767).astype("<i2").tobytes()
    for i, jpg in enumerate(jpgs):
        ts = t0 + i / FPS
        await asyncio.sleep(max(0.0, ts - time.time()))
        await ws.send(encode_media(Kind.VIDEO_JPEG, first_seq + i, ts, jpg))
        await ws.send(encode_media(Kind.AUDIO_PCM16, first_seq + i, ts, pcm))


async def _collect(ws, until: str, timeout: float = 30) -> tuple[list, list[dict]]:
    windows, control = [], []
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.recv()
            if isinstance(msg, bytes):
                windows.append(decode_reaction(msg))
                continue
            control.append(json.loads(msg))
            if control[-1]["type"] == until:
                return windows, control


def test_a_browser_token_opens_one_stream_and_resume_survives_a_dropped_connection(
    service, media
) -> None:
    server, _ = service
    jpgs = _jpegs(media["speaker"], 4 * FPS)

    async def scenario() -> None:
        token = httpx.post(f"{server.base}/v1/sessions", headers=headers()).json()["token"]
        url = f"ws://127.0.0.1:{server.port}/v1/stream?token={token}"
        ws = await websockets.connect(url)
        await ws.send(json.dumps({"type": "start", "options": {"seed": 2}}))
        started = json.loads(await ws.recv())
        assert started["type"] == "started"
        await _send_media(ws, jpgs[: 2 * FPS], time.time())
        await asyncio.sleep(0.5)
        ws.transport.abort()  # the network drops: no close frame
        with pytest.raises(websockets.InvalidStatus):  # the token was single-use
            await websockets.connect(url)
        # a browser holds no API key: the session id and resume token open the new connection
        resume_url = (
            f"ws://127.0.0.1:{server.port}/v1/stream?session_id="
            f"{started['session_id']}&resume_token={started['resume_token']}"
        )
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(resume_url.replace("resume_token=", "resume_token=x"))
        async with websockets.connect(resume_url) as ws2:
            await ws2.send(json.dumps({"type": "resume", "session_id": started["session_id"],
                                       "resume_token": started["resume_token"]}))  # fmt: skip
            resumed = json.loads(await ws2.recv())
            assert resumed["type"] == "resumed" and resumed["next_frame"] > 0
            await _send_media(ws2, jpgs[2 * FPS :], time.time(), first_seq=2 * FPS)
            await ws2.send(json.dumps({"type": "flush"}))
            windows, _ = await _collect(ws2, "flushed")
            assert windows and windows[0].start_frame >= resumed["next_frame"] - 8
            starts = [w.start_frame for w in windows]
            assert starts == sorted(starts) and len(set(starts)) == len(starts)

    asyncio.run(scenario())


def test_sigterm_drains_open_streams_and_a_restart_keeps_the_listeners(tmp_path, media) -> None:
    server = ServerProcess(tmp_path, tmp_path / "server.log")
    jpgs = _jpegs(media["speaker"], 3 * FPS)
    try:
        with media["enrol"].open("rb") as f:
            r = httpx.post(f"{server.base}/v1/listeners", headers=headers(), timeout=120,
                           files={"clip": ("enrol.mp4", f, "video/mp4")},
                           data={"name": "Grace", "consent": "false"})  # fmt: skip
        assert r.status_code == 201, r.text

        async def scenario() -> tuple[int, list[dict], int]:
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/v1/stream",
                                          additional_headers=headers()) as ws:  # fmt: skip
                await ws.send(json.dumps({"type": "start", "listener": r.json()["id"]}))
                assert json.loads(await ws.recv())["type"] == "started"
                await _send_media(ws, jpgs, time.time())
                server.proc.send_signal(signal.SIGTERM)
                windows, control = await _collect(ws, "stopped")
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
                return len(windows), control, ws.close_code

        n, control, code = asyncio.run(scenario())
        assert n > 0 and code == 1001
        assert control[-1]["reason"] == "server_draining"
        assert server.proc.wait(30) is not None
    finally:
        server.stop()
    again = ServerProcess(tmp_path, tmp_path / "server.log")
    try:
        listed = httpx.get(f"{again.base}/v1/listeners", headers=headers()).json()
        assert [item["name"] for item in listed["listeners"]] == ["Grace"]
    finally:
        again.stop()


def test_bad_input_is_answered_and_every_session_carries_on(service, media) -> None:
    server, _ = service
    jpgs = _jpegs(media["speaker"], 3 * FPS)
    url = f"ws://127.0.0.1:{server.port}/v1/stream"

    async def good() -> list:
        async with websockets.connect(url, additional_headers=headers()) as ws:
            await ws.send(json.dumps({"type": "start"}))
            assert json.loads(await ws.recv())["type"] == "started"
            await _send_media(ws, jpgs, time.time())
            await ws.send(json.dumps({"type": "flush"}))
            windows, _ = await _collect(ws, "flushed")
            return windows

    async def bad() -> list[str]:
        codes = []
        async with websockets.connect(url, additional_headers=headers()) as ws:
            await ws.send(json.dumps({"type": "start"}))
            assert json.loads(await ws.recv())["type"] == "started"
            ok = encode_media(Kind.VIDEO_JPEG, 1, time.time(), jpgs[0])
            for msg in ("{not json", json.dumps({"type": "dance"}),
                        ok[:2] + bytes([9]) + ok[3:],  # protocol version 9
                        ok[:30],  # truncated
                        encode_media(Kind.VIDEO_JPEG, 2, time.time(), b"\xff\xd8garbage"),
                        json.dumps({"type": "ping", "id": 7})):  # fmt: skip
                await ws.send(msg)
                while True:
                    reply = await ws.recv()
                    if isinstance(reply, str) and json.loads(reply)["type"] in ("error", "pong"):
                        codes.append(json.loads(reply).get("code") or "pong")
                        break
        return codes

    async def both() -> tuple[list, list[str]]:
        return await asyncio.gather(good(), bad())

    windows, codes = asyncio.run(both())
    assert codes == ["malformed_json", "unknown_type", "bad_version", "truncated", "bad_image",
                     "pong"]  # fmt: skip
    assert len(windows) >= 3 * FPS // 8 - 1
