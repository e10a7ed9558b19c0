"""Control messages: JSON objects with a ``type``, one pydantic model per type.

Client → server: ``start``, ``resume``, ``stop``, ``flush``, ``ping``. Server → client:
``started``, ``resumed``, ``error``, ``event``, ``stats``, ``flushed``, ``stopped``, ``pong``.
Validation is strict and mirrors ``docs/asyncapi.yaml``: no type coercion (``"8"`` is not a
number, ``1`` is not a boolean), no unknown fields, no NaN or infinity. :func:`dump` writes every
field, ``null`` included, so a message always has the same shape.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from server.protocol.binary import PROTOCOL_VERSION
from server.protocol.errors import FATAL_CODES, ErrorCode, ProtocolError


def _integral(value: Any) -> Any:
    """Accept ``8.0`` where an integer is expected, as JSON Schema does (JSON has one number)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_integral)]
Count = Annotated[int, BeforeValidator(_integral), Field(ge=0)]
Id = Annotated[str, Field(min_length=1, max_length=256)]


class _Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


class StartOptions(_Message):
    """Session settings a client may ask for; ``None`` leaves the server's default."""

    window: Annotated[Int | None, Field(ge=8, le=64)] = None
    steps: Annotated[Int | None, Field(ge=1, le=8)] = None
    guidance: Annotated[float | None, Field(ge=1.0, le=4.0)] = None
    seed: Annotated[Int | None, Field(ge=0, le=2**31 - 1)] = None
    posnet: bool | None = None
    sample_rate: Annotated[Int | None, Field(gt=0)] = None
    video: Literal["jpeg", "png"] | None = None


class StartMsg(_Message):
    type: Literal["start"] = "start"
    listener: Annotated[str, Field(min_length=1, max_length=128)] = "generic"
    options: StartOptions = StartOptions()


class ResumeMsg(_Message):
    type: Literal["resume"] = "resume"
    session_id: Id
    resume_token: Id


class StopMsg(_Message):
    type: Literal["stop"] = "stop"


class FlushMsg(_Message):
    type: Literal["flush"] = "flush"


PingId = Int | Annotated[str, Field(max_length=128)] | None


class PingMsg(_Message):
    type: Literal["ping"] = "ping"
    id: PingId = None


class StartedMsg(_Message):
    """The session runs: resume credentials, effective ``settings`` and the server's ``limits``."""

    type: Literal["started"] = "started"
    session_id: Id
    resume_token: Id
    listener: str
    protocol: Int = PROTOCOL_VERSION
    settings: dict[str, Any]
    limits: dict[str, Any]


class ResumedMsg(_Message):
    """The session was taken over; media from now on lands on ``next_frame``."""

    type: Literal["resumed"] = "resumed"
    session_id: Id
    next_frame: Count


class ErrorMsg(_Message):
    """A problem; after a ``fatal`` one the server closes the connection."""

    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    field: str | None = None
    seq: Annotated[Count | None, Field(le=2**32 - 1)] = None
    fatal: bool = False


class EventMsg(_Message):
    type: Literal["event"] = "event"
    event: Literal["pfl_reanchor", "face_lost", "face_found", "behind"]
    frame: Count
    capture_ts: float | None = None
    detail: str | None = None


class StatsMsg(_Message):
    """Periodic counters; latency is server-side (newest input's arrival to the window sent)."""

    type: Literal["stats"] = "stats"
    frames_in: Count
    frames_dropped: Count
    audio_chunks: Count
    windows_out: Count
    latency_ms_median: Annotated[float | None, Field(ge=0)] = None
    latency_ms_p95: Annotated[float | None, Field(ge=0)] = None
    queue: Count


class FlushedMsg(_Message):
    """Every window the media allowed is out; ``windows`` counts the session's windows so far."""

    type: Literal["flushed"] = "flushed"
    windows: Count


class StoppedMsg(_Message):
    type: Literal["stopped"] = "stopped"
    windows: Count
    reason: str


class PongMsg(_Message):
    type: Literal["pong"] = "pong"
    id: PingId = None


ClientMessage = Annotated[
    StartMsg | ResumeMsg | StopMsg | FlushMsg | PingMsg, Field(discriminator="type")
]
ServerMessage = Annotated[
    StartedMsg | ResumedMsg | ErrorMsg | EventMsg | StatsMsg | FlushedMsg | StoppedMsg | PongMsg,
    Field(discriminator="type"),
]
Message = _Message

CLIENT_TYPES: dict[str, type[_Message]] = {
    m.model_fields["type"].default: m for m in (StartMsg, ResumeMsg, StopMsg, FlushMsg, PingMsg)
}
SERVER_TYPES: dict[str, type[_Message]] = {
    m.model_fields["type"].default: m
    for m in (StartedMsg, ResumedMsg, ErrorMsg, EventMsg, StatsMsg, FlushedMsg, StoppedMsg, PongMsg)
}
_FIELD_NAMES = frozenset(
    name
    for m in (StartOptions, *CLIENT_TYPES.values(), *SERVER_TYPES.values())
    for name in m.model_fields
)


def dump(msg: _Message) -> str:
    """Compact JSON text for a control message, every field written (``null`` included)."""
    return msg.model_dump_json()


def _load_object(text: str | bytes, max_bytes: int) -> tuple[str, dict[str, Any]]:
    size = len(text.encode() if isinstance(text, str) else text)
    if size > max_bytes:
        raise ProtocolError(
            ErrorCode.OVERSIZED, f"a control message may hold {max_bytes} bytes (got {size})"
        )
    try:
        if isinstance(text, bytes | bytearray):
            text = bytes(text).decode("utf-8")
        obj = json.loads(text)
    except UnicodeDecodeError as err:
        raise ProtocolError(
            ErrorCode.MALFORMED_JSON, f"not UTF-8 text at byte {err.start}: {err.reason}"
        ) from err
    except json.JSONDecodeError as err:
        raise ProtocolError(
            ErrorCode.MALFORMED_JSON,
            f"malformed JSON at line {err.lineno} column {err.colno} (char {err.pos}): {err.msg}",
        ) from err
    if not isinstance(obj, dict):
        raise ProtocolError(
            ErrorCode.INVALID_FIELD,
            f"a control message must be a JSON object with a 'type' (got {type(obj).__name__})",
            field="type",
        )
    if not isinstance(obj.get("type"), str):
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, "a control message needs a string 'type'", field="type"
        )
    return text, obj


def _path(loc: tuple[int | str, ...], keep_all: bool) -> str:
    """Dotted field path of a pydantic error location, without its union-member tags."""
    parts = [str(p) for p in loc if keep_all or isinstance(p, int) or p in _FIELD_NAMES]
    return ".".join(parts)


def _describe(err: ValidationError) -> tuple[str, str]:
    """``(dotted field path, sentence)`` for the first problem pydantic found."""
    problems = err.errors(include_url=False)
    first = problems[0]
    extra = first["type"] == "extra_forbidden"
    path = _path(first["loc"], keep_all=extra)
    if extra:
        sentence = f"{path}: unknown field"
    elif first["type"] == "missing":
        sentence = f"{path}: required field missing"
    else:
        sentence = f"{path}: {first['msg']} (got {json.dumps(first.get('input'), default=str)})"
    others = {_path(p["loc"], p["type"] == "extra_forbidden") for p in problems} - {path}
    if others:
        sentence += f"; also wrong: {', '.join(sorted(others))}"
    return path, sentence


def _parse(text: str | bytes, max_bytes: int, types: dict[str, type[_Message]]) -> _Message:
    text, obj = _load_object(text, max_bytes)
    model = types.get(obj["type"])
    if model is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown message type {obj['type']!r}; known types: {', '.join(types)}",
            field="type",
        )
    try:
        return model.model_validate_json(text)
    except ValidationError as err:
        path, sentence = _describe(err)
        raise ProtocolError(ErrorCode.INVALID_FIELD, sentence, field=path) from None


def parse_control(text: str | bytes, *, max_bytes: int) -> ClientMessage:
    """A client's control message; :class:`ProtocolError` says what is wrong and where."""
    return _parse(text, max_bytes, CLIENT_TYPES)  # type: ignore[return-value]


def parse_server_control(text: str | bytes, *, max_bytes: int = 1 << 20) -> ServerMessage:
    """A server's control message (the client side's mirror of :func:`parse_control`)."""
    return _parse(text, max_bytes, SERVER_TYPES)  # type: ignore[return-value]


def error_message(err: ProtocolError, *, fatal: bool = False, seq: int | None = None) -> ErrorMsg:
    """The ``error`` message that reports ``err``.

    ``seq`` defaults to the error's own; a code in :data:`FATAL_CODES` is always fatal.
    """
    return ErrorMsg(
        code=err.code,
        message=err.reason,
        field=err.field,
        seq=seq if seq is not None else err.seq,
        fatal=fatal or err.code in FATAL_CODES,
    )
