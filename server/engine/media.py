"""Decoding of the media payloads a client streams: JPEG/PNG frames and PCM16 audio.

Image sizes are read from the file header before decoding, so a small compressed payload cannot
expand into a huge frame (a decompression bomb).
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

from server.protocol import ErrorCode, Kind, ProtocolError

MAX_SIDE = 4096
"""Largest accepted frame width or height, pixels."""
MIN_SIDE = 16

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _bad(reason: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_IMAGE, reason)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise _bad("not a PNG image (bad signature or IHDR)")
    return struct.unpack(">II", data[16:24])


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's first start-of-frame marker."""
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        raise _bad("not a JPEG image (no SOI marker)")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise _bad("corrupt JPEG: marker expected")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # standalone markers
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF:
            if i + 9 > len(data):
                break
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        if length < 2:
            raise _bad("corrupt JPEG: bad segment length")
        i += 2 + length
    raise _bad("corrupt or truncated JPEG: no frame header")


def decode_image(kind: Kind, payload: bytes | memoryview) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB; :class:`ProtocolError` (bad_image) naming what is wrong."""
    data = bytes(payload)
    w, h = png_size(data) if kind is Kind.VIDEO_PNG else jpeg_size(data)
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
        raise _bad(f"frame {w}x{h}: each side must be {MIN_SIDE}..{MAX_SIDE} pixels")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape[:2] != (h, w):
        raise _bad(f"undecodable {'PNG' if kind is Kind.VIDEO_PNG else 'JPEG'} frame")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_pcm16(payload: bytes | memoryview) -> np.ndarray:
    """Little-endian PCM16 mono → float32 in [-1, 1)."""
    if len(payload) % 2:
        raise ProtocolError(ErrorCode.BAD_AUDIO, "PCM16 audio must have an even number of bytes")
    return np.frombuffer(payload, "<i2").astype(np.float32) / 32768.0
