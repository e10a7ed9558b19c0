"""Binary messages: media in (JPEG/PNG frames, PCM16 audio) and reaction windows out.

Every binary message starts with the same 24-byte little-endian header::

    offset size type  field
    0      2    bytes magic        b"RP"
    2      1    u8    version      PROTOCOL_VERSION (1)
    3      1    u8    kind         Kind
    4      4    u32   seq          per-kind message counter
    8      8    f64   capture_ts   seconds on the client's clock
    16     4    u32   payload_len  bytes after the header
    20     4    u32   reserved     0

A reaction's payload starts with a 32-byte sub-header (:data:`REACTION_FORMAT`)::

    offset size type  field
    24     4    u32   start_frame  first frame's index on the session's 25 fps timeline
    28     2    u16   n_frames     N
    30     2    u16   dim          58
    32     4    i32   video_seq    seq of the latest video frame used, -1 if none
    36     4    i32   audio_seq    seq of the latest audio chunk used, -1 if none
    40     8    f64   video_ts     capture_ts of that frame, NaN if none
    48     8    f64   audio_ts     capture_ts of that chunk, NaN if none

followed by N × 58 float32 little-endian coefficients, frame-major.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from enum import IntEnum

import numpy as np

from models.face.layout import DIM
from server.protocol.errors import ErrorCode, ProtocolError

PROTOCOL_VERSION = 1
MAGIC = b"RP"
HEADER_FORMAT = "<2sBBIdII"
HEADER_SIZE = struct.calcsize(HEADER_FORMAT)
REACTION_FORMAT = "<IHHiidd"
REACTION_HEADER_SIZE = struct.calcsize(REACTION_FORMAT)
U32_MAX = 2**32 - 1
I32_MAX = 2**31 - 1
U16_MAX = 2**16 - 1

assert HEADER_SIZE == 24 and REACTION_HEADER_SIZE == 32


class Kind(IntEnum):
    """What a binary message carries."""

    VIDEO_JPEG = 1
    VIDEO_PNG = 2
    AUDIO_PCM16 = 3
    REACTION = 16


CLIENT_KINDS: frozenset[Kind] = frozenset({Kind.VIDEO_JPEG, Kind.VIDEO_PNG, Kind.AUDIO_PCM16})
"""Kinds a client may send; the others only travel from the server."""


@dataclass(frozen=True)
class MediaHeader:
    """The header of one media message from the client."""

    kind: Kind
    seq: int
    capture_ts: float
    payload_len: int


def _check_capture_ts(value: float, seq: int | None, *, name: str = "capture_ts") -> None:
    if not math.isfinite(value) or value < 0:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD,
            f"{name} must be a finite, non-negative time in seconds (got {value!r})",
            field=name,
            seq=seq,
        )


def _check_payload(kind: Kind, size: int, seq: int | None) -> None:
    if size == 0:
        raise ProtocolError(ErrorCode.TRUNCATED, "the message has an empty payload", seq=seq)
    if kind is Kind.AUDIO_PCM16 and size % 2:
        raise ProtocolError(
            ErrorCode.BAD_AUDIO,
            f"PCM16 audio needs an even number of bytes (got {size})",
            seq=seq,
        )


def _pack_header(kind: Kind, seq: int, capture_ts: float, payload_len: int) -> bytes:
    if not 0 <= seq <= U32_MAX:
        raise ValueError(f"seq must be in 0..{U32_MAX} (got {seq})")
    if payload_len > U32_MAX:
        raise ValueError(f"payload of {payload_len} bytes does not fit the header")
    return struct.pack(
        HEADER_FORMAT, MAGIC, PROTOCOL_VERSION, int(kind), seq, capture_ts, payload_len, 0
    )


def encode_media(kind: Kind, seq: int, capture_ts: float, payload: bytes) -> bytes:
    """One media message; refuses what :func:`parse_media` would refuse (``ProtocolError``)."""
    kind = Kind(kind)
    if kind not in CLIENT_KINDS:
        raise ValueError(f"{kind.name} is not a media kind (use encode_reaction)")
    _check_capture_ts(capture_ts, seq)
    _check_payload(kind, len(payload), seq)
    return _pack_header(kind, seq, capture_ts, len(payload)) + bytes(payload)


def _read_header(data: bytes | bytearray | memoryview) -> tuple[int, int, float, int]:
    """``(kind, seq, capture_ts, payload_len)`` after checking size, magic, version, reserved."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError(
            ErrorCode.TRUNCATED,
            f"a binary message needs the {HEADER_SIZE}-byte header (got {len(data)} bytes)",
        )
    magic, version, kind, seq, capture_ts, payload_len, reserved = struct.unpack_from(
        HEADER_FORMAT, data
    )
    if magic != MAGIC:
        raise ProtocolError(
            ErrorCode.BAD_MAGIC, f"a binary message must start with {MAGIC!r} (got {magic!r})"
        )
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.BAD_VERSION,
            f"protocol version {version} received; this side supports version {PROTOCOL_VERSION}",
            field="version",
            seq=seq,
        )
    if reserved != 0:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD,
            f"reserved must be 0 (got {reserved})",
            field="reserved",
            seq=seq,
        )
    arrived = len(data) - HEADER_SIZE
    if payload_len > arrived:
        raise ProtocolError(
            ErrorCode.TRUNCATED,
            f"payload_len says {payload_len} bytes but only {arrived} arrived",
            field="payload_len",
            seq=seq,
        )
    if payload_len < arrived:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD,
            f"payload_len says {payload_len} bytes but {arrived} arrived",
            field="payload_len",
            seq=seq,
        )
    return kind, seq, capture_ts, payload_len


def parse_media(
    data: bytes | bytearray | memoryview, *, max_bytes: int
) -> tuple[MediaHeader, memoryview]:
    """Header and payload (a view, no copy) of one media message from a client.

    Raises :class:`ProtocolError`; the size cap is checked before anything else is read.
    """
    if len(data) > max_bytes:
        raise ProtocolError(
            ErrorCode.OVERSIZED, f"a binary message may hold {max_bytes} bytes (got {len(data)})"
        )
    kind_id, seq, capture_ts, payload_len = _read_header(data)
    if kind_id not in Kind._value2member_map_:
        raise ProtocolError(
            ErrorCode.UNKNOWN_KIND, f"unknown message kind {kind_id}", field="kind", seq=seq
        )
    kind = Kind(kind_id)
    if kind not in CLIENT_KINDS:
        known = ", ".join(f"{k.value} ({k.name})" for k in sorted(CLIENT_KINDS))
        raise ProtocolError(
            ErrorCode.UNKNOWN_KIND,
            f"kind {kind_id} ({kind.name}) only travels from the server; clients send {known}",
            field="kind",
            seq=seq,
        )
    _check_capture_ts(capture_ts, seq)
    _check_payload(kind, payload_len, seq)
    return MediaHeader(kind, seq, capture_ts, payload_len), memoryview(data)[HEADER_SIZE:]


@dataclass(frozen=True, eq=False)
class ReactionWindow:
    """One window of the listener's reaction, as sent to the client.

    ``frames`` is (N, 58) float32 for frames ``start_frame .. start_frame + N - 1`` of the
    session's 25 fps timeline. ``video_seq``/``video_ts`` and ``audio_seq``/``audio_ts`` name the
    latest video frame and audio chunk the window was generated from (-1 and NaN when none);
    ``capture_ts`` is the latest input capture time (the header's), NaN only when neither exists.
    """

    seq: int
    start_frame: int
    frames: np.ndarray = dataclass_field(repr=False)  # (N, 58) float32
    video_seq: int
    video_ts: float
    audio_seq: int
    audio_ts: float
    capture_ts: float

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


def _invalid(reason: str, field: str, seq: int | None) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_FIELD, reason, field=field, seq=seq)


def _check_source(name: str, seq_value: int, ts: float, window_seq: int) -> None:
    """A ``*_seq``/``*_ts`` pair: both absent (-1, NaN) or a real message's seq and time."""
    if seq_value == -1:
        if not math.isnan(ts):
            raise _invalid(f"{name}_ts must be NaN when {name}_seq is -1", f"{name}_ts", window_seq)
        return
    if not 0 <= seq_value <= I32_MAX:
        raise _invalid(f"{name}_seq must be -1 or in 0..{I32_MAX}", f"{name}_seq", window_seq)
    _check_capture_ts(ts, window_seq, name=f"{name}_ts")


def _check_window(w: ReactionWindow) -> None:
    """Everything :func:`decode_reaction` insists on, for both directions."""
    if not 0 <= w.seq <= U32_MAX:
        raise _invalid(f"seq must be in 0..{U32_MAX} (got {w.seq})", "seq", None)
    if not 0 <= w.start_frame <= U32_MAX:
        raise _invalid(f"start_frame must be in 0..{U32_MAX}", "start_frame", w.seq)
    frames = w.frames
    if frames.ndim != 2 or frames.shape[1] != DIM or not 1 <= frames.shape[0] <= U16_MAX:
        raise _invalid(
            f"frames must be (N, {DIM}) with 1 <= N <= {U16_MAX} (got {frames.shape})",
            "frames",
            w.seq,
        )
    if not np.isfinite(frames).all():
        raise _invalid("frames must be finite", "frames", w.seq)
    _check_source("video", w.video_seq, w.video_ts, w.seq)
    _check_source("audio", w.audio_seq, w.audio_ts, w.seq)
    if w.video_seq == -1 and w.audio_seq == -1:
        if not math.isnan(w.capture_ts):
            raise _invalid("capture_ts must be NaN for a window without input", "capture_ts", w.seq)
    else:
        _check_capture_ts(w.capture_ts, w.seq)


def encode_reaction(w: ReactionWindow) -> bytes:
    """The binary message for one reaction window; ``ProtocolError`` if the window is invalid."""
    frames = np.ascontiguousarray(w.frames, dtype="<f4")  # (N, 58)
    w = ReactionWindow(
        w.seq, w.start_frame, frames, w.video_seq, w.video_ts, w.audio_seq, w.audio_ts,
        w.capture_ts,
    )  # fmt: skip
    _check_window(w)
    sub = struct.pack(
        REACTION_FORMAT, w.start_frame, w.n_frames, DIM, w.video_seq, w.audio_seq,
        w.video_ts, w.audio_ts,
    )  # fmt: skip
    body = frames.tobytes()
    header = struct.pack(
        HEADER_FORMAT, MAGIC, PROTOCOL_VERSION, int(Kind.REACTION), w.seq, w.capture_ts,
        len(sub) + len(body), 0,
    )  # fmt: skip
    return header + sub + body


def decode_reaction(data: bytes | bytearray | memoryview) -> ReactionWindow:
    """A reaction window from its binary message, strictly checked (:class:`ProtocolError`)."""
    kind, seq, capture_ts, payload_len = _read_header(data)
    if kind != Kind.REACTION:
        raise ProtocolError(
            ErrorCode.UNKNOWN_KIND,
            f"expected a reaction (kind {int(Kind.REACTION)}), got kind {kind}",
            field="kind",
            seq=seq,
        )
    if payload_len < REACTION_HEADER_SIZE:
        raise ProtocolError(
            ErrorCode.TRUNCATED,
            f"a reaction needs a {REACTION_HEADER_SIZE}-byte sub-header (got {payload_len} bytes)",
            seq=seq,
        )
    start, n, dim, video_seq, audio_seq, video_ts, audio_ts = struct.unpack_from(
        REACTION_FORMAT, data, HEADER_SIZE
    )
    if dim != DIM:
        raise _invalid(f"dim must be {DIM} (got {dim})", "dim", seq)
    expected = REACTION_HEADER_SIZE + n * dim * 4
    if payload_len != expected:
        code = ErrorCode.TRUNCATED if payload_len < expected else ErrorCode.INVALID_FIELD
        raise ProtocolError(
            code,
            f"{n} frames of {dim} float32 need a payload of {expected} bytes (got {payload_len})",
            field="n_frames",
            seq=seq,
        )
    offset = HEADER_SIZE + REACTION_HEADER_SIZE
    frames = np.frombuffer(data, dtype="<f4", count=n * dim, offset=offset).reshape(n, dim)
    window = ReactionWindow(
        seq, start, frames.astype(np.float32), video_seq, video_ts, audio_seq, audio_ts,
        capture_ts,
    )  # fmt: skip
    _check_window(window)
    return window
