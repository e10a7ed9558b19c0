"""The wire format: binary round trips and refusals, control messages against docs/asyncapi.yaml."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml

from server.client import (
    assemble,
    capture_time,
    encode_frame,
    interleave,
    send_delay,
    stream_url,
    to_pcm16,
)
from server.protocol import (
    CLIENT_TYPES,
    FATAL_CODES,
    HEADER_FORMAT,
    HEADER_SIZE,
    MAGIC,
    PROTOCOL_VERSION,
    REACTION_HEADER_SIZE,
    SERVER_TYPES,
    CloseCode,
    ErrorCode,
    ErrorMsg,
    EventMsg,
    FlushedMsg,
    FlushMsg,
    Kind,
    PingMsg,
    PongMsg,
    ProtocolError,
    ReactionWindow,
    ResumedMsg,
    ResumeMsg,
    StartedMsg,
    StartMsg,
    StartOptions,
    StatsMsg,
    StopMsg,
    StoppedMsg,
    close_code_for,
    decode_reaction,
    dump,
    encode_media,
    encode_reaction,
    error_message,
    parse_control,
    parse_media,
    parse_server_control,
)

ROOT = Path(__file__).resolve().parents[2]
ASYNCAPI = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
MAX = 1 << 20


def schema_errors(instance: Any, name: str) -> list[str]:
    """Why ``instance`` fails the AsyncAPI schema ``name`` (empty when it is valid)."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": ASYNCAPI["components"]}
    validator = jsonschema.Draft7Validator(schema)
    return [e.message for e in validator.iter_errors(instance)]


def raw_header(
    kind: int = 3,
    seq: int = 0,
    ts: float = 1.0,
    payload_len: int = 2,
    *,
    magic: bytes = MAGIC,
    version: int = PROTOCOL_VERSION,
    reserved: int = 0,
) -> bytes:
    return struct.pack(HEADER_FORMAT, magic, version, kind, seq, ts, payload_len, reserved)


def window(n: int = 8, **kw: Any) -> ReactionWindow:
    rng = np.random.default_rng(0)
    fields = dict(
        seq=3, start_frame=120, frames=rng.standard_normal((n, 58)).astype(np.float32),
        video_seq=41, video_ts=1000.5, audio_seq=62, audio_ts=1000.52, capture_ts=1000.52,
    )  # fmt: skip
    fields.update(kw)
    return ReactionWindow(**fields)


# --- binary media ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [Kind.VIDEO_JPEG, Kind.VIDEO_PNG, Kind.AUDIO_PCM16])
def test_media_round_trip(kind: Kind) -> None:
    payload = bytes(range(256)) * 5
    data = encode_media(kind, 2**32 - 1, 1_700_000_000.123456, payload)
    assert len(data) == HEADER_SIZE + len(payload) == 24 + 1280
    assert data[:2] == b"RP" and data[2] == 1 and data[3] == int(kind)
    header, body = parse_media(data, max_bytes=MAX)
    assert (header.kind, header.seq, header.payload_len) == (kind, 2**32 - 1, len(payload))
    assert header.capture_ts == 1_700_000_000.123456
    assert bytes(body) == payload


def test_media_header_layout_is_little_endian() -> None:
    data = encode_media(Kind.AUDIO_PCM16, 0x01020304, 0.5, b"\x01\x00")
    assert data[4:8] == bytes([4, 3, 2, 1])
    assert struct.unpack("<d", data[8:16]) == (0.5,)
    assert data[16:20] == bytes([2, 0, 0, 0]) and data[20:24] == bytes(4)


def parse_error(data: bytes, max_bytes: int = MAX) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_media(data, max_bytes=max_bytes)
    return info.value


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        (b"", ErrorCode.TRUNCATED, None),
        (raw_header()[:23], ErrorCode.TRUNCATED, None),
        (raw_header(magic=b"PR") + b"\0\0", ErrorCode.BAD_MAGIC, None),
        (raw_header(version=2) + b"\0\0", ErrorCode.BAD_VERSION, "version"),
        (raw_header(kind=7) + b"\0\0", ErrorCode.UNKNOWN_KIND, "kind"),
        (raw_header(kind=16) + b"\0\0", ErrorCode.UNKNOWN_KIND, "kind"),
        (raw_header(payload_len=4) + b"\0\0", ErrorCode.TRUNCATED, "payload_len"),
        (raw_header(payload_len=1) + b"\0\0", ErrorCode.INVALID_FIELD, "payload_len"),
        (raw_header(reserved=1) + b"\0\0", ErrorCode.INVALID_FIELD, "reserved"),
        (raw_header(ts=math.nan) + b"\0\0", ErrorCode.INVALID_FIELD, "capture_ts"),
        (raw_header(ts=math.inf) + b"\0\0", ErrorCode.INVALID_FIELD, "capture_ts"),
        (raw_header(ts=-0.5) + b"\0\0", ErrorCode.INVALID_FIELD, "capture_ts"),
        (raw_header(payload_len=3) + b"\0\0\0", ErrorCode.BAD_AUDIO, None),
        (raw_header(payload_len=0), ErrorCode.TRUNCATED, None),
        (raw_header(kind=1, payload_len=0), ErrorCode.TRUNCATED, None),
    ],
)
def test_parse_media_refusals(data: bytes, code: ErrorCode, field: str | None) -> None:
    err = parse_error(data)
    assert err.code is code
    assert err.field == field
    assert str(err) == err.reason and err.reason


def test_bad_version_names_both_versions_and_keeps_seq() -> None:
    err = parse_error(raw_header(version=9, seq=17) + b"\0\0")
    assert "9" in err.reason and str(PROTOCOL_VERSION) in err.reason
    assert err.seq == 17
    assert error_message(err).seq == 17


def test_oversized_is_checked_before_anything_else() -> None:
    junk = b"XX" + bytes(100)  # bad magic too, but the size is what counts first
    assert parse_error(junk, max_bytes=50).code is ErrorCode.OVERSIZED
    ok = encode_media(Kind.VIDEO_JPEG, 0, 1.0, bytes(26))
    assert parse_media(ok, max_bytes=50)[0].payload_len == 26
    assert parse_error(ok + b"", max_bytes=49).code is ErrorCode.OVERSIZED


def test_encode_media_refuses_what_parse_refuses() -> None:
    with pytest.raises(ProtocolError) as info:
        encode_media(Kind.AUDIO_PCM16, 0, 1.0, b"\0\0\0")
    assert info.value.code is ErrorCode.BAD_AUDIO
    with pytest.raises(ProtocolError) as info:
        encode_media(Kind.VIDEO_JPEG, 0, -1.0, b"jpeg")
    assert info.value.code is ErrorCode.INVALID_FIELD
    with pytest.raises(ValueError, match="encode_reaction"):
        encode_media(Kind.REACTION, 0, 1.0, b"\0\0")
    with pytest.raises(ValueError, match="seq"):
        encode_media(Kind.VIDEO_JPEG, 2**32, 1.0, b"jpeg")


# --- binary reactions --------------------------------------------------------------------------


def test_reaction_round_trip_and_layout() -> None:
    w = window(n=8)
    data = encode_reaction(w)
    assert len(data) == HEADER_SIZE + REACTION_HEADER_SIZE + 8 * 58 * 4
    magic, version, kind, seq, ts, payload_len, reserved = struct.unpack_from(HEADER_FORMAT, data)
    assert (magic, version, kind, seq, ts) == (MAGIC, 1, 16, 3, 1000.52)
    assert payload_len == len(data) - 24 and reserved == 0
    assert struct.unpack_from("<IHHiidd", data, 24) == (120, 8, 58, 41, 62, 1000.5, 1000.52)
    first = np.frombuffer(data, "<f4", count=58, offset=56)
    np.testing.assert_array_equal(first, w.frames[0])
    back = decode_reaction(data)
    np.testing.assert_array_equal(back.frames, w.frames)
    assert back.frames.dtype == np.float32 and back.frames.shape == (8, 58)
    assert (back.seq, back.start_frame, back.n_frames) == (3, 120, 8)
    assert (back.video_seq, back.audio_seq) == (41, 62)
    assert (back.video_ts, back.audio_ts, back.capture_ts) == (1000.5, 1000.52, 1000.52)


def test_reaction_without_input_carries_minus_one_and_nan() -> None:
    w = window(n=1, video_seq=-1, video_ts=math.nan, audio_seq=-1, audio_ts=math.nan,
               capture_ts=math.nan)  # fmt: skip
    back = decode_reaction(encode_reaction(w))
    assert back.video_seq == back.audio_seq == -1
    assert math.isnan(back.video_ts) and math.isnan(back.audio_ts) and math.isnan(back.capture_ts)
    audio_only = window(video_seq=-1, video_ts=math.nan)
    assert decode_reaction(encode_reaction(audio_only)).audio_seq == 62


def test_reaction_accepts_float64_frames_as_float32() -> None:
    w = window(frames=np.linspace(0, 1, 16 * 58).reshape(16, 58))
    back = decode_reaction(encode_reaction(w))
    np.testing.assert_allclose(back.frames, w.frames, atol=1e-7)


def mutate(data: bytes, offset: int, fmt: str, value: Any) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


GOOD = encode_reaction(window())


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        (GOOD[:20], ErrorCode.TRUNCATED, None),
        (GOOD[:-4], ErrorCode.TRUNCATED, "payload_len"),
        (GOOD + b"\0\0\0\0", ErrorCode.INVALID_FIELD, "payload_len"),
        (b"XY" + GOOD[2:], ErrorCode.BAD_MAGIC, None),
        (mutate(GOOD, 2, "<B", 2), ErrorCode.BAD_VERSION, "version"),
        (mutate(GOOD, 3, "<B", 1), ErrorCode.UNKNOWN_KIND, "kind"),
        (mutate(GOOD, 20, "<I", 5), ErrorCode.INVALID_FIELD, "reserved"),
        (mutate(GOOD, 30, "<H", 57), ErrorCode.INVALID_FIELD, "dim"),
        (mutate(GOOD, 28, "<H", 9), ErrorCode.TRUNCATED, "n_frames"),
        (mutate(GOOD, 28, "<H", 7), ErrorCode.INVALID_FIELD, "n_frames"),
        (mutate(GOOD, 32, "<i", -2), ErrorCode.INVALID_FIELD, "video_seq"),
        (mutate(GOOD, 40, "<d", math.nan), ErrorCode.INVALID_FIELD, "video_ts"),
        (mutate(GOOD, 48, "<d", -3.0), ErrorCode.INVALID_FIELD, "audio_ts"),
        (mutate(GOOD, 8, "<d", math.inf), ErrorCode.INVALID_FIELD, "capture_ts"),
        (mutate(GOOD, 56, "<f", math.nan), ErrorCode.INVALID_FIELD, "frames"),
        (mutate(mutate(GOOD, 36, "<i", -1), 48, "<d", 2.0), ErrorCode.INVALID_FIELD, "audio_ts"),
    ],
)
def test_decode_reaction_refusals(data: bytes, code: ErrorCode, field: str | None) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_reaction(data)
    assert info.value.code is code
    assert info.value.field == field


def test_reaction_with_no_frames_is_refused_both_ways() -> None:
    empty = GOOD[:24 + 32]  # fmt: skip
    empty = mutate(mutate(empty, 16, "<I", 32), 28, "<H", 0)
    with pytest.raises(ProtocolError) as info:
        decode_reaction(empty)
    assert info.value.field == "frames"
    with pytest.raises(ProtocolError):
        encode_reaction(window(frames=np.zeros((0, 58), np.float32)))
    with pytest.raises(ProtocolError):
        encode_reaction(window(frames=np.zeros((8, 52), np.float32)))


# --- control messages against the AsyncAPI schemas ---------------------------------------------

CLIENT_EXAMPLES = [
    StartMsg(),
    StartMsg(listener="a" * 128, options=StartOptions(window=8, steps=1, guidance=1.0, seed=0)),
    StartMsg(listener="anna-01", options=StartOptions(
        window=64, steps=8, guidance=4.0, seed=2**31 - 1, posnet=False, sample_rate=48000,
        video="png")),
    ResumeMsg(session_id="s-1", resume_token="t" * 256),
    StopMsg(),
    FlushMsg(),
    PingMsg(),
    PingMsg(id=7),
    PingMsg(id="abc"),
]  # fmt: skip

SERVER_EXAMPLES = [
    StartedMsg(session_id="s-1", resume_token="r-1", listener="generic", protocol=1,
               settings={"window": 8, "model_window": 8, "steps": 4, "guidance": 2.0, "seed": 5,
                         "posnet": True, "fps": 25, "sample_rate": 16000, "context_frames": 50},
               limits={"max_media_bytes": 1 << 19, "max_control_bytes": 4096,
                       "max_messages_per_s": 200.0, "max_lead_s": 2.0, "idle_timeout_s": 30.0,
                       "session_max_s": 3600.0, "resume_grace_s": 30.0, "video_backlog": 4,
                       "max_errors": 50}),
    StartedMsg(session_id="s", resume_token="r", listener="x", settings={}, limits={}),
    ResumedMsg(session_id="s-1", next_frame=0),
    ResumedMsg(session_id="s-1", next_frame=10_000),
    ErrorMsg(code=ErrorCode.BAD_AUDIO, message="odd", seq=2**32 - 1),
    ErrorMsg(code=ErrorCode.INVALID_FIELD, message="bad", field="options.steps", fatal=False),
    EventMsg(event="pfl_reanchor", frame=250, capture_ts=1000.25, detail="left the window"),
    EventMsg(event="behind", frame=0),
    StatsMsg(frames_in=10, frames_dropped=0, audio_chunks=12, windows_out=1,
             latency_ms_median=80.5, latency_ms_p95=120.0, queue=0),
    StatsMsg(frames_in=0, frames_dropped=0, audio_chunks=0, windows_out=0, queue=3),
    FlushedMsg(windows=0),
    StoppedMsg(windows=125, reason="client"),
    PongMsg(id=None),
    PongMsg(id="x"),
]  # fmt: skip


def test_every_message_type_has_an_example() -> None:
    assert {m.type for m in CLIENT_EXAMPLES} == set(CLIENT_TYPES)
    assert {m.type for m in SERVER_EXAMPLES} == set(SERVER_TYPES)
    assert {e.value for e in ErrorCode} == set(ASYNCAPI_ERROR_CODES)


@pytest.mark.parametrize("msg", CLIENT_EXAMPLES + SERVER_EXAMPLES, ids=lambda m: m.type)
def test_dumped_messages_match_the_schema(msg: Any) -> None:
    text = dump(msg)
    obj = json.loads(text)
    assert text == json.dumps(obj, separators=(",", ":"), ensure_ascii=False)  # compact
    assert schema_errors(obj, msg.type) == []
    parse = parse_control if msg.type in CLIENT_TYPES else parse_server_control
    assert parse(text, max_bytes=MAX) == msg


def test_dump_writes_nulls_and_is_compact() -> None:
    text = dump(ErrorMsg(code=ErrorCode.OVERSIZED, message="too big"))
    assert text == (
        '{"type":"error","code":"oversized","message":"too big","field":null,"seq":null,'
        '"fatal":false}'
    )


def test_minimal_client_messages_take_defaults() -> None:
    msg = parse_control('{"type":"start"}', max_bytes=MAX)
    assert isinstance(msg, StartMsg)
    assert msg.listener == "generic" and msg.options == StartOptions()
    assert parse_control(b'{"type": "ping", "id": 3}', max_bytes=MAX) == PingMsg(id=3)
    assert (
        parse_control('{"type":"start","options":{"window":16.0}}', max_bytes=MAX).options.window
        == 16
    )
    assert schema_errors({"type": "start", "options": {"window": 16.0}}, "start") == []


INVALID_CLIENT = [
    ({"type": "start", "listener": 5}, "listener"),
    ({"type": "start", "listener": ""}, "listener"),
    ({"type": "start", "listener": "x" * 129}, "listener"),
    ({"type": "start", "options": None}, "options"),
    ({"type": "start", "options": {"window": 7}}, "options.window"),
    ({"type": "start", "options": {"window": 65}}, "options.window"),
    ({"type": "start", "options": {"window": "8"}}, "options.window"),
    ({"type": "start", "options": {"window": 8.5}}, "options.window"),
    ({"type": "start", "options": {"steps": 0}}, "options.steps"),
    ({"type": "start", "options": {"steps": 9}}, "options.steps"),
    ({"type": "start", "options": {"steps": True}}, "options.steps"),
    ({"type": "start", "options": {"guidance": 0.99}}, "options.guidance"),
    ({"type": "start", "options": {"guidance": 4.01}}, "options.guidance"),
    ({"type": "start", "options": {"seed": -1}}, "options.seed"),
    ({"type": "start", "options": {"seed": 2**31}}, "options.seed"),
    ({"type": "start", "options": {"posnet": 1}}, "options.posnet"),
    ({"type": "start", "options": {"posnet": "yes"}}, "options.posnet"),
    ({"type": "start", "options": {"sample_rate": 0}}, "options.sample_rate"),
    ({"type": "start", "options": {"video": "gif"}}, "options.video"),
    ({"type": "start", "options": {"fps": 30}}, "options.fps"),
    ({"type": "start", "extra": 1}, "extra"),
    ({"type": "resume", "session_id": "s"}, "resume_token"),
    ({"type": "resume", "session_id": "", "resume_token": "t"}, "session_id"),
    ({"type": "resume", "session_id": 1, "resume_token": "t"}, "session_id"),
    ({"type": "stop", "now": True}, "now"),
    ({"type": "flush", "id": 1}, "id"),
    ({"type": "ping", "id": [1]}, "id"),
    ({"type": "ping", "id": 1.5}, "id"),
    ({"type": "ping", "id": "x" * 129}, "id"),
]


@pytest.mark.parametrize(("obj", "field"), INVALID_CLIENT, ids=lambda v: json.dumps(v)[:40])
def test_invalid_client_messages_are_refused_by_parser_and_schema(obj: dict, field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_control(json.dumps(obj), max_bytes=MAX)
    assert info.value.code is ErrorCode.INVALID_FIELD
    assert info.value.field == field
    assert info.value.reason.startswith(field)
    assert schema_errors(obj, obj["type"]) != []


@pytest.mark.parametrize("name", ["hello", "started", "Start"])
def test_unknown_type_lists_the_known_ones(name: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_control(json.dumps({"type": name}), max_bytes=MAX)
    assert info.value.code is ErrorCode.UNKNOWN_TYPE
    assert all(t in info.value.reason for t in CLIENT_TYPES)
    assert all(schema_errors({"type": name}, t) for t in CLIENT_TYPES)


@pytest.mark.parametrize(
    ("text", "code", "field"),
    [
        ('{"type":"start",', ErrorCode.MALFORMED_JSON, None),
        ("", ErrorCode.MALFORMED_JSON, None),
        (b"\xff\xfe", ErrorCode.MALFORMED_JSON, None),
        ('["start"]', ErrorCode.INVALID_FIELD, "type"),
        ('"start"', ErrorCode.INVALID_FIELD, "type"),
        ('{"listener":"x"}', ErrorCode.INVALID_FIELD, "type"),
        ('{"type":5}', ErrorCode.INVALID_FIELD, "type"),
    ],
)
def test_unreadable_control_messages(text: str | bytes, code: ErrorCode, field: str | None) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_control(text, max_bytes=MAX)
    assert (info.value.code, info.value.field) == (code, field)


def test_malformed_json_says_where() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_control('{"type": "start",\n "listener": }', max_bytes=MAX)
    assert "line 2" in info.value.reason and "column 14" in info.value.reason


def test_oversized_control_message_counts_utf8_bytes() -> None:
    text = json.dumps({"type": "start", "listener": "é" * 40}, ensure_ascii=False)
    assert len(text) <= 100 < len(text.encode())
    with pytest.raises(ProtocolError) as info:
        parse_control(text, max_bytes=100)
    assert info.value.code is ErrorCode.OVERSIZED
    assert parse_control(text, max_bytes=200).listener == "é" * 40


def test_error_message_and_close_codes() -> None:
    err = ProtocolError(ErrorCode.INVALID_FIELD, "options.steps: too many", field="options.steps")
    msg = error_message(err, seq=4)
    assert (msg.code, msg.field, msg.seq, msg.fatal) == (err.code, "options.steps", 4, False)
    assert error_message(ProtocolError(ErrorCode.UNAUTHORIZED, "no key")).fatal is True
    assert schema_errors(json.loads(dump(msg)), "error") == []
    assert close_code_for(ErrorCode.SERVER_DRAINING) is CloseCode.GOING_AWAY
    assert close_code_for(ErrorCode.FORBIDDEN_ORIGIN) == 1008
    assert close_code_for(ErrorCode.TOO_MANY_ERRORS) == 4400
    with pytest.raises(ValueError):
        close_code_for(ErrorCode.BAD_IMAGE)
    assert ErrorCode.RATE_LIMITED not in FATAL_CODES
    # internal is fatal only when the server says so (a skipped frame is not)
    assert error_message(ProtocolError(ErrorCode.INTERNAL, "frame skipped")).fatal is False
    assert error_message(ProtocolError(ErrorCode.INTERNAL, "dead"), fatal=True).fatal is True
    assert close_code_for(ErrorCode.INTERNAL) is CloseCode.INTERNAL


# --- the AsyncAPI document cannot drift from the code ------------------------------------------


def asyncapi_types(action: str, content: str) -> dict[str, dict]:
    """Message name -> message for the operations with ``action`` and ``content`` type."""
    messages = ASYNCAPI["components"]["messages"]
    found = {}
    for op in ASYNCAPI["operations"].values():
        if op["action"] != action:
            continue
        for ref in op["messages"]:
            name = ref["$ref"].rsplit("/", 1)[-1]
            msg = messages[name]
            if msg.get("contentType", ASYNCAPI["defaultContentType"]) == content:
                found[name] = msg
    return found


ASYNCAPI_ERROR_CODES = ASYNCAPI["components"]["schemas"]["error"]["properties"]["code"]["enum"]


def test_asyncapi_message_types_equal_the_protocol_module() -> None:
    received = asyncapi_types("receive", "application/json")
    sent = asyncapi_types("send", "application/json")
    assert set(received) == set(CLIENT_TYPES)
    assert set(sent) == set(SERVER_TYPES)
    for name, msg in {**received, **sent}.items():
        schema = ASYNCAPI["components"]["schemas"][msg["payload"]["$ref"].rsplit("/", 1)[-1]]
        assert schema["properties"]["type"] == {"const": name}
        assert schema["additionalProperties"] is False
        model = {**CLIENT_TYPES, **SERVER_TYPES}[name]
        assert set(schema["properties"]) == set(model.model_fields)
    assert set(ASYNCAPI["channels"]["stream"]["messages"]) == set(
        ASYNCAPI["components"]["messages"]
    )


def test_asyncapi_binary_kinds_equal_the_protocol_module() -> None:
    media = asyncapi_types("receive", "application/octet-stream")
    out = asyncapi_types("send", "application/octet-stream")
    assert {m["x-kind"] for m in media.values()} == {1, 2, 3}
    assert {m["x-kind"] for m in out.values()} == {int(Kind.REACTION)}
    assert {int(k) for k in Kind} == {1, 2, 3, 16}
    options = ASYNCAPI["components"]["schemas"]["StartOptions"]["properties"]
    assert set(options) == set(StartOptions.model_fields)
    assert ASYNCAPI["channels"]["stream"]["address"] == "/v1/stream"


def test_asyncapi_enums_equal_the_protocol_module() -> None:
    event = ASYNCAPI["components"]["schemas"]["event"]["properties"]["event"]["enum"]
    assert set(event) == set(EventMsg.model_fields["event"].annotation.__args__)


# --- client helpers ----------------------------------------------------------------------------


def test_interleave_orders_media_by_send_time() -> None:
    frames = [b"f0", b"f1", b"f2"]
    audio = bytes(range(2)) * 1600  # 1600 samples = 100 ms at 16 kHz
    items = list(interleave(iter(frames), audio, chunk_samples=640))
    kinds = [(i.kind, i.seq) for i in items]
    assert kinds == [
        (Kind.VIDEO_JPEG, 0), (Kind.AUDIO_PCM16, 0), (Kind.VIDEO_JPEG, 1),
        (Kind.AUDIO_PCM16, 1), (Kind.VIDEO_JPEG, 2), (Kind.AUDIO_PCM16, 2),
    ]  # fmt: skip
    # an audio chunk is sent once its last sample exists, stamped with its first sample's time
    chunk1 = items[3]
    assert (chunk1.media_t, chunk1.send_t) == pytest.approx((0.04, 0.08))
    assert len(items[-1].payload) == 2 * (1600 - 1280)
    assert [i.payload for i in items if i.kind is Kind.VIDEO_JPEG] == frames
    assert all(a.send_t <= b.send_t for a, b in zip(items, items[1:], strict=False))


def test_interleave_cuts_audio_and_video_at_the_limit() -> None:
    audio = bytes(2 * 16000)  # one second
    items = list(interleave(iter([b"f"] * 50), audio, chunk_samples=640, limit_s=0.2))
    video = [i for i in items if i.kind is Kind.VIDEO_JPEG]
    sound = [i for i in items if i.kind is Kind.AUDIO_PCM16]
    assert len(video) == 5 and max(i.media_t for i in video) < 0.2
    assert sum(len(i.payload) for i in sound) == 2 * 3200
    # audio never runs past the video
    short = list(interleave(iter([b"f"] * 2), audio, chunk_samples=640))
    assert sum(len(i.payload) for i in short if i.kind is Kind.AUDIO_PCM16) == 2 * 1280


def test_pacing() -> None:
    t0 = 1000.0
    assert capture_time(t0, 2.0, speed=1.0) == 1002.0
    assert capture_time(t0, 2.0, speed=2.0) == 1001.0
    assert capture_time(t0, 2.0, speed=0.0) == 1002.0
    assert send_delay(1000.5, t0, 1.0, speed=1.0) == pytest.approx(0.5)
    assert send_delay(1003.0, t0, 1.0, speed=1.0) == 0.0
    # as fast as possible, but never more than max_lead_s of media ahead of the wall clock
    assert send_delay(1000.0, t0, 0.9, speed=0.0, max_lead_s=1.0) == 0.0
    assert send_delay(1000.0, t0, 3.0, speed=0.0, max_lead_s=1.0) == pytest.approx(2.0)


def test_to_pcm16_clips_and_scales() -> None:
    pcm = to_pcm16(np.array([0.0, 0.5, -1.0, 1.0, 2.0, -2.0], np.float32))
    values = np.frombuffer(pcm, "<i2")
    assert values.tolist() == [0, 16384, -32767, 32767, 32767, -32767]


def test_stream_url() -> None:
    assert stream_url("ws://127.0.0.1:8000") == "ws://127.0.0.1:8000/v1/stream"
    assert stream_url("wss://h/v1/stream/") == "wss://h/v1/stream"
    assert stream_url("ws://h:1/", token="a+b/c") == "ws://h:1/v1/stream?token=a%2Bb%2Fc"
    with pytest.raises(ValueError, match="ws://"):
        stream_url("http://h:1")


def test_encode_frame_decodes_back(astronaut: np.ndarray) -> None:
    import cv2

    rgb = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    jpeg = encode_frame(rgb)
    assert jpeg[:2] == b"\xff\xd8"
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    err = np.abs(bgr[..., ::-1].astype(int) - rgb).mean()
    swapped = np.abs(bgr.astype(int) - rgb).mean()
    assert err < 5 and err < swapped / 3  # quality 80, channels in the right order
    png = encode_frame(rgb, Kind.VIDEO_PNG)
    back = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(back, rgb)


def test_assemble_orders_windows_by_start_frame() -> None:
    a, b = window(n=8, start_frame=8), window(n=4, start_frame=0)
    frames, starts, latency = assemble({8: (a, 10.0), 0: (b, 20.0)})
    assert frames.shape == (12, 58) and starts.tolist() == [0, 8]
    np.testing.assert_array_equal(frames[4:], a.frames)
    assert latency.tolist() == [20.0, 10.0]
    assert assemble({})[0].shape == (0, 58)


def markdown_rows(section: str) -> list[list[str]]:
    """Cells of the table rows under the ``## section`` heading of docs/protocol.md."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in body.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in row] for row in rows[1:]]  # without the heading row


def test_protocol_md_error_table_matches_the_codes() -> None:
    rows = {row[0].strip("`"): row for row in markdown_rows("Errors")}
    assert set(rows) == {c.value for c in ErrorCode}
    for code in ErrorCode:
        _, _, fatal, close = rows[code.value]
        if code in FATAL_CODES:
            assert fatal == "yes" and int(close) == close_code_for(code), code
        elif code is ErrorCode.INTERNAL:
            assert fatal == "when stated" and int(close) == CloseCode.INTERNAL
        else:
            assert fatal == "no" and close == "", code
            with pytest.raises(ValueError):
                close_code_for(code)
    closes = {int(row[0]) for row in markdown_rows("Close codes")}
    assert closes == {int(c) for c in CloseCode}
