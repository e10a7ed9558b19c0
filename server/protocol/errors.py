"""Error codes of the streaming protocol, the exception that carries them, and close codes.

Every problem the server reports on a stream is an ``error`` control message whose ``code`` is an
:class:`ErrorCode`. A *fatal* error ends the connection: the server sends the message (with
``fatal: true``) and then closes the WebSocket with the close code :func:`close_code_for` gives.
Any other error concerns a single message, which the server drops; the session goes on.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """What went wrong, as the ``code`` of an ``error`` message."""

    # A control (JSON) message could not be read.
    MALFORMED_JSON = "malformed_json"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_FIELD = "invalid_field"
    # A binary (media) message could not be read.
    BAD_MAGIC = "bad_magic"
    BAD_VERSION = "bad_version"
    UNKNOWN_KIND = "unknown_kind"
    TRUNCATED = "truncated"
    OVERSIZED = "oversized"
    BAD_IMAGE = "bad_image"
    BAD_AUDIO = "bad_audio"
    AUDIO_RATE = "audio_rate"
    RATE_LIMITED = "rate_limited"
    # The message does not fit the state of the session.
    NOT_STARTED = "not_started"
    ALREADY_STARTED = "already_started"
    UNKNOWN_LISTENER = "unknown_listener"
    RESUME_FAILED = "resume_failed"
    # The connection or session ends.
    SESSION_LIMIT = "session_limit"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN_ORIGIN = "forbidden_origin"
    SESSION_EXPIRED = "session_expired"
    IDLE_TIMEOUT = "idle_timeout"
    SERVER_DRAINING = "server_draining"
    TOO_MANY_ERRORS = "too_many_errors"
    INTERNAL = "internal"


class CloseCode(IntEnum):
    """WebSocket close codes the server uses (RFC 6455 §7.4 plus one private code)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY = 1008
    TOO_BIG = 1009
    INTERNAL = 1011
    TRY_AGAIN_LATER = 1013
    PROTOCOL_VIOLATION = 4400


_CLOSE_CODES: dict[ErrorCode, CloseCode] = {
    ErrorCode.UNAUTHORIZED: CloseCode.POLICY,
    ErrorCode.FORBIDDEN_ORIGIN: CloseCode.POLICY,
    ErrorCode.SESSION_LIMIT: CloseCode.TRY_AGAIN_LATER,
    ErrorCode.SESSION_EXPIRED: CloseCode.NORMAL,
    ErrorCode.IDLE_TIMEOUT: CloseCode.NORMAL,
    ErrorCode.SERVER_DRAINING: CloseCode.GOING_AWAY,
    ErrorCode.TOO_MANY_ERRORS: CloseCode.PROTOCOL_VIOLATION,
    ErrorCode.INTERNAL: CloseCode.INTERNAL,
}

FATAL_CODES: frozenset[ErrorCode] = frozenset(_CLOSE_CODES) - {ErrorCode.INTERNAL}
"""Codes that always end the connection. ``internal`` is fatal only when the session cannot go
on (the message says so with ``fatal``); every other code is about one message, which is dropped.
"""


def close_code_for(code: ErrorCode) -> CloseCode:
    """The WebSocket close code that follows a fatal error of ``code``.

    ``ValueError`` for a code that is never fatal: the connection stays open after it (repeated
    errors end it with ``too_many_errors``).
    """
    try:
        return _CLOSE_CODES[code]
    except KeyError:
        raise ValueError(f"{code.value} is never fatal: the connection stays open") from None


class ProtocolError(ValueError):
    """A message breaks the protocol: ``code`` says how, ``reason`` says it for a person.

    ``field`` names the offending field (a dotted path such as ``options.steps``, or a header
    field such as ``capture_ts``) and ``seq`` the sequence number of the offending binary message
    when its header could be read.
    """

    def __init__(
        self, code: ErrorCode, reason: str, *, field: str | None = None, seq: int | None = None
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.field = field
        self.seq = seq

    def __str__(self) -> str:
        return self.reason

    def __repr__(self) -> str:
        return f"ProtocolError({self.code.value!r}, {self.reason!r}, field={self.field!r})"
