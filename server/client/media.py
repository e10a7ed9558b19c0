"""Media of a file as a live source: 25 fps frames and 40 ms audio chunks, in send order.

A live camera sends frame ``k`` at ``k / 25`` s; a microphone sends an audio chunk once its last
sample exists, stamped with its first sample's time. :func:`interleave` reproduces that order and
:func:`send_delay` / :func:`capture_time` map media time onto the wall clock at any speed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.face.layout import FPS, SAMPLE_RATE
from server.protocol import Kind

log = logging.getLogger(__name__)

CHUNK_SAMPLES = SAMPLE_RATE // FPS
"""Audio samples per chunk: 640 = 40 ms, one coefficient frame."""
JPEG_QUALITY = 80


@dataclass(frozen=True)
class MediaItem:
    """One media message to send: ``media_t`` is its capture time on the media timeline (s),
    ``send_t`` the media time at which a live source could send it."""

    kind: Kind
    seq: int
    media_t: float
    send_t: float
    payload: bytes


def to_pcm16(samples: np.ndarray) -> bytes:
    """Float audio in -1..1 -> PCM16 little-endian bytes (clipped)."""
    return (np.clip(samples, -1.0, 1.0) * 32767).round().astype("<i2").tobytes()


def encode_frame(rgb: np.ndarray, kind: Kind = Kind.VIDEO_JPEG) -> bytes:
    """An (H, W, 3) uint8 RGB frame as JPEG (quality 80) or PNG bytes."""
    import cv2

    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if kind is Kind.VIDEO_PNG:
        ok, buf = cv2.imencode(".png", bgr)
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("cannot encode the frame")
    return buf.tobytes()


def capture_time(t0: float, media_t: float, speed: float) -> float:
    """Wall-clock capture time of media time ``media_t``; ``speed <= 0`` stamps as at speed 1."""
    return t0 + media_t / speed if speed > 0 else t0 + media_t


def send_delay(
    now: float, t0: float, send_t: float, speed: float, max_lead_s: float = 1.0
) -> float:
    """Seconds to wait before sending what a live source sends at media time ``send_t``.

    ``speed > 0``: media time runs at ``speed`` × wall time. ``speed <= 0``: as fast as
    possible, but never more than ``max_lead_s`` of media ahead of the wall clock.
    """
    due = t0 + send_t / speed if speed > 0 else t0 + send_t - max_lead_s
    return max(0.0, due - now)


def interleave(
    frames: Iterable[bytes],
    audio: bytes | None,
    *,
    chunk_samples: int = CHUNK_SAMPLES,
    limit_s: float | None = None,
    video_kind: Kind = Kind.VIDEO_JPEG,
    fps: int = FPS,
    sample_rate: int = SAMPLE_RATE,
) -> Iterator[MediaItem]:
    """Encoded 25 fps frames and PCM16 audio as one stream in send order.

    Frame ``k`` is captured and sent at ``k / fps``; an audio chunk is stamped with its first
    sample's time and sent when its last sample exists (an audio chunk goes first on a tie).
    Audio stops where the video stops; both stop at ``limit_s``. Frames are pulled lazily.
    """
    n_samples = len(audio) // 2 if audio else 0
    max_frames = None
    if limit_s is not None:
        max_frames = math.ceil(limit_s * fps - 1e-9)
        n_samples = min(n_samples, round(limit_s * sample_rate))
    start = 0  # first audio sample not sent yet
    source = iter(frames)

    def chunks_until(limit: int, frame_index: int) -> Iterator[MediaItem]:
        # chunks that end by frame_index / fps (integer arithmetic: no rounding drift)
        nonlocal start
        while start < limit:
            end = min(start + chunk_samples, limit)
            if end * fps > frame_index * sample_rate:
                return
            yield MediaItem(Kind.AUDIO_PCM16, start // chunk_samples, start / sample_rate,
                            end / sample_rate, audio[2 * start : 2 * end])  # fmt: skip
            start = end

    k = 0
    while max_frames is None or k < max_frames:
        payload = next(source, None)
        if payload is None:
            break
        yield from chunks_until(n_samples, k)
        yield MediaItem(video_kind, k, k / fps, k / fps, payload)
        k += 1
    covered = min(n_samples, k * sample_rate // fps)
    yield from chunks_until(covered, k)


def media_items(
    video: Path, audio: Path | None, *, limit_s: float | None, video_kind: Kind
) -> Iterator[MediaItem]:
    """The media of a file (and an optional separate audio file) as :class:`MediaItem`."""
    from server.perception.video import MediaError, iter_frames_25fps, read_audio

    samples = read_audio(audio or video, SAMPLE_RATE)
    if samples is None and audio is not None:
        raise MediaError(f"{audio}: no audio stream")
    if samples is None:
        log.info("%s has no audio track: streaming video only", video)
    pcm = None if samples is None else to_pcm16(samples)
    frames = (encode_frame(rgb, video_kind) for _, rgb in iter_frames_25fps(video))
    yield from interleave(frames, pcm, limit_s=limit_s, video_kind=video_kind)
