"""The streaming protocol of ``/v1/stream``: the one place that defines the wire format.

Binary messages (media in, reactions out) are in :mod:`server.protocol.binary`, JSON control
messages in :mod:`server.protocol.control`, error and close codes in
:mod:`server.protocol.errors`. ``docs/protocol.md`` explains it for client developers and
``docs/asyncapi.yaml`` mirrors it as a schema (a test keeps the two in step).
"""

from server.protocol.binary import (
    CLIENT_KINDS,
    HEADER_FORMAT,
    HEADER_SIZE,
    MAGIC,
    PROTOCOL_VERSION,
    REACTION_FORMAT,
    REACTION_HEADER_SIZE,
    Kind,
    MediaHeader,
    ReactionWindow,
    decode_reaction,
    encode_media,
    encode_reaction,
    parse_media,
)
from server.protocol.control import (
    CLIENT_TYPES,
    SERVER_TYPES,
    ClientMessage,
    ErrorMsg,
    EventMsg,
    FlushedMsg,
    FlushMsg,
    Message,
    PingMsg,
    PongMsg,
    ResumedMsg,
    ResumeMsg,
    ServerMessage,
    StartedMsg,
    StartMsg,
    StartOptions,
    StatsMsg,
    StopMsg,
    StoppedMsg,
    dump,
    error_message,
    parse_control,
    parse_server_control,
)
from server.protocol.errors import (
    FATAL_CODES,
    CloseCode,
    ErrorCode,
    ProtocolError,
    close_code_for,
)

STREAM_PATH = "/v1/stream"
"""The WebSocket endpoint's path."""

__all__ = [
    "CLIENT_KINDS", "CLIENT_TYPES", "FATAL_CODES", "HEADER_FORMAT", "HEADER_SIZE", "MAGIC",
    "PROTOCOL_VERSION", "REACTION_FORMAT", "REACTION_HEADER_SIZE", "SERVER_TYPES", "STREAM_PATH",
    "ClientMessage", "CloseCode", "ErrorCode", "ErrorMsg", "EventMsg", "FlushMsg", "FlushedMsg",
    "Kind", "MediaHeader", "Message", "PingMsg", "PongMsg", "ProtocolError", "ReactionWindow",
    "ResumeMsg", "ResumedMsg", "ServerMessage", "StartMsg", "StartOptions", "StartedMsg",
    "StatsMsg", "StopMsg", "StoppedMsg", "close_code_for", "decode_reaction", "dump",
    "encode_media", "encode_reaction", "error_message", "parse_control", "parse_media",
    "parse_server_control",
]  # fmt: skip
