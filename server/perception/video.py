"""Video decoding (any container PyAV/ffmpeg reads) and resampling to the coefficient frame rate."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from models.face.layout import FPS

log = logging.getLogger(__name__)


class MediaError(ValueError):
    """A media file is missing, unreadable, corrupt or lacks the stream asked for."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    duration_s: float | None
    frames: int | None
    has_audio: bool


def probe(path: str | Path) -> VideoInfo:
    """Dimensions, frame rate and streams of a video file; raises :class:`MediaError`."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            vs = container.streams.video[0]
            rate = float(vs.average_rate or vs.guessed_rate or FPS)
            duration = None
            if vs.duration is not None and vs.time_base is not None:
                duration = float(vs.duration * vs.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            else:  # e.g. a browser's streamed WebM recording: no duration stored
                duration = _demuxed_duration(container, vs)
            return VideoInfo(
                width=vs.codec_context.width,
                height=vs.codec_context.height,
                fps=rate,
                duration_s=duration,
                frames=vs.frames or None,
                has_audio=bool(container.streams.audio),
            )
    except av.error.FFmpegError as err:
        raise MediaError(f"{path}: cannot read video ({err})") from err


def _demuxed_duration(container: av.container.InputContainer,
                      stream: av.video.stream.VideoStream) -> float | None:  # fmt: skip
    """Seconds from the first video packet to the end of the last, read by demuxing only (no
    decoding); ``None`` when the packets carry no timestamps."""
    first = end = None
    for packet in container.demux(stream):
        if packet.pts is None or packet.time_base is None:
            continue
        start = float(packet.pts * packet.time_base)
        stop = start + float((packet.duration or 0) * packet.time_base)
        first = start if first is None else min(first, start)
        end = stop if end is None else max(end, stop)
    return None if first is None or end is None else end - first


def iter_frames(path: str | Path) -> Iterator[tuple[float, np.ndarray]]:
    """``(time in seconds from the first frame, (H, W, 3) uint8 RGB)`` for each decoded frame.

    A file that is corrupt from the start raises :class:`MediaError`; damage later in the file
    ends the iteration with a warning after the last good frame.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise MediaError(f"{path}: cannot open as a video ({err})") from err
    with container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream")
        stream = container.streams.video[0]
        t0: float | None = None
        count = 0
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else count / FPS
                t0 = t if t0 is None else t0
                count += 1
                yield t - t0, frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as err:
            if count == 0:
                raise MediaError(f"{path}: cannot decode video ({err})") from err
            log.warning("%s: decoding stopped after %d frames: %s", path, count, err)
        if count == 0:
            raise MediaError(f"{path}: the video stream has no decodable frames")


class FrameRateResampler:
    """Turns frames with timestamps at any rate into frames at ``fps`` (nearest frame in time).

    Output frame ``k`` sits at time ``k / fps`` after the first input frame. Bounded state: only
    the previous input frame is held. Inputs must come in time order; a frame not after the
    previous one is dropped.
    """

    def __init__(self, fps: float = FPS) -> None:
        self.fps = fps
        self._next = 0
        self._prev: tuple[float, np.ndarray] | None = None
        self._t0: float | None = None

    def push(self, t: float, frame: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Feed one input frame at time ``t`` (s); returns the output frames now decided."""
        if self._t0 is None:
            self._t0 = t
        t = t - self._t0
        out: list[tuple[int, np.ndarray]] = []
        if self._prev is not None and t <= self._prev[0]:
            return out
        while self._next / self.fps <= t:
            tau = self._next / self.fps
            if self._prev is not None and tau - self._prev[0] <= t - tau:
                out.append((self._next, self._prev[1]))
            else:
                out.append((self._next, frame))
            self._next += 1
        self._prev = (t, frame)
        return out

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """The output frame the last input still covers (half an output period past it)."""
        out: list[tuple[int, np.ndarray]] = []
        if self._prev is not None and self._next / self.fps < self._prev[0] + 0.5 / self.fps:
            out.append((self._next, self._prev[1]))
            self._next += 1
        return out


def iter_frames_25fps(path: str | Path, fps: float = FPS) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame index at fps, RGB frame)`` for a video file, resampled to ``fps``."""
    resampler = FrameRateResampler(fps)
    for t, frame in iter_frames(path):
        yield from resampler.push(t, frame)
    yield from resampler.flush()


_PNG_NAME = re.compile(r"^([0-9]+)\.png$", re.IGNORECASE)


def png_frame_paths(folder: str | Path) -> list[Path]:
    """The frames ``1.png .. T.png`` of a folder in order; :class:`MediaError` names a gap.

    This is the REACT2024 release's second video variant: one PNG per 25 fps frame, numbered from
    1. Files with other names are ignored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaError(f"{folder}: no such folder of PNG frames")
    numbered = {}
    for entry in folder.iterdir():
        match = _PNG_NAME.match(entry.name)
        if match:
            numbered[int(match.group(1))] = entry
    if not numbered:
        raise MediaError(f"{folder}: no frames named 1.png, 2.png, ...")
    count = max(numbered)
    missing = [k for k in range(1, count + 1) if k not in numbered]
    if missing:
        raise MediaError(f"{folder}: frame {missing[0]}.png is missing (frames run 1..{count})")
    return [numbered[k] for k in range(1, count + 1)]


def iter_png_frames(folder: str | Path) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame index, (H, W, 3) uint8 RGB)`` for a folder of ``1.png .. T.png`` at 25 fps."""
    for k, path in enumerate(png_frame_paths(folder)):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise MediaError(f"{path}: cannot read as an image")
        yield k, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class PngFrames:
    """A folder of PNG frames as a frame source: calling it starts :func:`iter_png_frames`.

    Picklable (a worker process can receive it) and printed as its folder in error messages.
    """

    folder: Path

    def __call__(self) -> Iterator[tuple[int, np.ndarray]]:
        return iter_png_frames(self.folder)

    def __str__(self) -> str:
        return str(self.folder)


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray | None:
    """The first audio stream of a media file as mono float32 at ``sample_rate``, or ``None``."""
    path = Path(path)
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise MediaError(f"{path}: cannot open ({err})") from err
    with container:
        if not container.streams.audio:
            return None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as err:
            if not chunks:
                raise MediaError(f"{path}: cannot decode audio ({err})") from err
            log.warning("%s: audio decoding stopped early: %s", path, err)
    if not chunks:
        return None
    return np.concatenate(chunks).astype(np.float32)
