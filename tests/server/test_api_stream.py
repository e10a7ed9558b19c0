"""The ``/v1/stream`` WebSocket on a running app with the real models: real talking-face JPEG
frames and recorded speech in, reaction windows out; every malformed input answered with its
error code while the session (and its neighbours) go on; resume; and the session limits."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.face import layout
from server.protocol import Kind, encode_media
from tests.server.api_helpers import (
    CHUNK,
    FPS,
    Stream,
    connect,
    jpeg_frames,
    running,
    settings_for,
    speech_pcm16,
)

WINDOW = 8
SILENCE = bytes(2 * CHUNK)
"""40 ms of PCM16 silence: a valid audio message."""


@pytest.fixture(scope="module")
def frames(cap12) -> list[bytes]:
    return jpeg_frames(cap12, 100)


@pytest.fixture(scope="module")
def pcm(speech_wav) -> bytes:
    return speech_pcm16(speech_wav)


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[TestClient]:
    # a backlog that holds every frame these tests send: on a loaded machine perception falls
    # behind real time, and a dropped frame (counted, tested in test_engine) would take its
    # error with it, so the error checks here would depend on the machine's load
    settings = settings_for(tmp_path_factory.mktemp("stream"), max_sessions=64,
                            max_media_bytes=64 * 1024, video_backlog=100)  # fmt: skip
    with running(settings) as c:
        yield c


def errors_in(stream: Stream) -> list[str]:
    return [m["code"] for m in stream.seen if m["type"] == "error"]


# -- bad input: an error with its code, and the session goes on ------------------------------


def bad_version(s: Stream, jpeg: bytes) -> None:
    data = bytearray(encode_media(Kind.AUDIO_PCM16, 5, time.time(), SILENCE))
    data[2] = 2  # the version byte
    s.ws.send_bytes(bytes(data))


def too_far_ahead(s: Stream, jpeg: bytes) -> None:
    now = time.time()
    s.media(Kind.AUDIO_PCM16, 0, now, SILENCE)  # the first media sets the session's clock
    s.media(Kind.AUDIO_PCM16, 1, now + 10.0, SILENCE)


Action = Callable[[Stream, bytes], None]
BAD_INPUT: dict[str, tuple[bool, Action, str, str | None, int | None]] = {
    # case: (start first, action, code, field, seq)
    "malformed-json": (True, lambda s, _: s.send('{"type": "ping"'), "malformed_json", None, None),
    "unknown-type": (True, lambda s, _: s.send({"type": "dance"}), "unknown_type", "type", None),
    "invalid-option": (False, lambda s, _: s.send({"type": "start", "options": {"steps": 99}}),
                       "invalid_field", "options.steps", None),
    "audio-rate": (False, lambda s, _: s.send({"type": "start",
                                               "options": {"sample_rate": 44100}}),
                   "audio_rate", "options.sample_rate", None),
    "media-before-start": (False, lambda s, j: s.media(Kind.VIDEO_JPEG, 4, time.time(), j),
                           "not_started", None, 4),
    "bad-version": (True, bad_version, "bad_version", "version", 5),
    "truncated": (True, lambda s, j: s.ws.send_bytes(encode_media(Kind.VIDEO_JPEG, 6,
                                                                  time.time(), j)[:10]),
                  "truncated", None, None),
    "oversized": (True, lambda s, _: s.media(Kind.VIDEO_JPEG, 7, time.time(), b"\xff" * 100_000),
                  "oversized", None, None),
    "undecodable-jpeg": (True, lambda s, _: s.media(Kind.VIDEO_JPEG, 8, time.time(), b"\xff\xd8"
                                                    + np.random.default_rng(1).bytes(3000)),
                         "bad_image", None, 8),
    "ahead-of-real-time": (True, too_far_ahead, "rate_limited", None, 1),
    "unknown-listener": (False, lambda s, _: s.send({"type": "start",
                                                     "listener": "0123456789abcdef" * 2}),
                         "unknown_listener", "listener", None),
    "start-twice": (True, lambda s, _: s.send({"type": "start"}), "already_started", None, None),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_reported_and_the_session_goes_on(client, frames, case) -> None:
    start_first, action, code, field, seq = BAD_INPUT[case]
    with connect(client) as bystander, connect(client) as victim:
        bystander.start()
        if start_first:
            victim.start()
        action(victim, frames[0])
        err = victim.expect_error(code)
        assert err["fatal"] is False and err["field"] == field and err["message"], err
        if seq is not None:
            assert err["seq"] == seq, err
        victim.ping(case)
        if not start_first:  # the refused start left the connection ready for a good one
            assert victim.start()["session_id"]
        victim.ping(2)
        bystander.ping(3)
        assert errors_in(victim) == [code]
        assert errors_in(bystander) == []


# -- reactions -------------------------------------------------------------------------------


def test_real_media_yields_reaction_windows(client, frames, pcm) -> None:
    with connect(client) as s:
        started = s.start(seed=7)
        assert started["settings"]["window"] == WINDOW and started["settings"]["fps"] == FPS
        s.stream(frames[:30], pcm)
        s.media(Kind.VIDEO_JPEG, 1000, time.time(), b"\xff\xd8garbage")  # bad frames between
        s.ws.send_bytes(encode_media(Kind.VIDEO_JPEG, 1001, time.time(), frames[0])[:30])
        s.stream(frames[30:], pcm, first_seq=30, first_tick=30)
        while len(s.reactions) < 9:  # live: windows come while the media flows, before a flush
            s.receive(timeout=5.0)
        flushed = s.flush()
        windows = s.reactions
        assert flushed["windows"] == len(windows)
        assert sorted(errors_in(s)) == ["bad_image", "truncated"]

        assert [w.seq for w in windows] == list(range(len(windows)))
        assert [w.start_frame for w in windows] == [WINDOW * i for i in range(len(windows))]
        assert windows[-1].start_frame + WINDOW >= len(frames) - WINDOW  # the stream is covered
        for w in windows:
            assert w.frames.shape == (WINDOW, layout.DIM) and np.isfinite(w.frames).all()
            expression = w.frames[:, layout.EXPRESSION]
            assert expression.min() >= 0.0 and expression.max() <= 1.0
        first = windows[0]  # made before any speaker frame counted: it names no input
        assert (first.video_seq, first.audio_seq) == (-1, -1) and math.isnan(first.capture_ts)
        exact = 0
        for w in windows[1:]:  # each names the latest input it was made from: frame start - 1
            last = w.start_frame - 1  # (frame k was sent with seq k)
            assert w.audio_ts == s.audio_sent[w.audio_seq] and abs(w.audio_seq - last) <= 1
            if w.video_seq != -1:  # -1: that frame was dropped (perception behind)
                assert w.video_ts == s.video_sent[w.video_seq] and w.video_seq <= last
            exact += w.video_seq == last
            assert w.capture_ts == max(t for t in (w.video_ts, w.audio_ts) if not math.isnan(t))
        assert exact >= len(windows) // 2
        motion = np.concatenate([w.frames for w in windows])
        assert motion.std(axis=0).max() > 1e-3  # the listener moves

        s.send({"type": "stop"})
        stopped = s.expect("stopped")
        assert stopped["windows"] == len(windows)
        closed = s.expect_close()
        assert closed.code == 1000


def test_dropped_connection_resumes_where_it_left_off(client, frames, pcm) -> None:
    with connect(client) as first:
        started = first.start()
        first.stream(frames[:40], pcm)
        first.flush()
        before = first.reactions
        assert before
    # the connection dropped without ``stop``: the session waits for its client
    with connect(client) as again:
        sid, token = started["session_id"], started["resume_token"]
        again.send({"type": "resume", "session_id": sid, "resume_token": token[::-1]})
        assert again.expect_error("resume_failed")["fatal"] is False
        again.send({"type": "resume", "session_id": "0" * 32, "resume_token": token})
        again.expect_error("resume_failed")
        again.ping()
        again.send({"type": "resume", "session_id": sid, "resume_token": token})
        resumed = again.expect("resumed")
        assert resumed["session_id"] == sid and resumed["next_frame"] > 0
        again.stream(frames[40:80], pcm, first_seq=40, first_tick=40)
        again.flush()
        after = again.reactions
        assert after
        assert after[0].start_frame == before[-1].start_frame + WINDOW  # no gap, no repeat
        assert after[0].seq == before[-1].seq + 1
        assert [w.start_frame for w in after] == [after[0].start_frame + WINDOW * i
                                                   for i in range(len(after))]  # fmt: skip
        assert all(w.video_seq >= 39 for w in after)  # generated from the resumed media
        assert len(before) + len(after) >= 80 // WINDOW - 1
        again.send({"type": "stop"})
        assert again.expect("stopped")["windows"] == len(before) + len(after)
        assert again.expect_close().code == 1000
    with connect(client) as late:  # a stopped session cannot be resumed
        late.send({"type": "resume", "session_id": sid, "resume_token": token})
        late.expect_error("resume_failed")


# -- limits ----------------------------------------------------------------------------------


def test_session_limit_refuses_the_next_session_only(tmp_path) -> None:
    with running(settings_for(tmp_path, max_sessions=1)) as c:
        with connect(c) as first:
            first.start()
            with connect(c) as second:
                second.send({"type": "start"})
                err = second.expect_error("session_limit")
                assert err["fatal"] is True
                assert second.expect_close().code == 1013
            first.ping()
            first.send({"type": "stop"})
            first.expect("stopped")
        with connect(c) as third:  # the stopped session freed its place
            third.start()


def test_too_many_errors_close_the_connection(tmp_path, frames) -> None:
    with running(settings_for(tmp_path, max_errors=3)) as c, connect(c) as s:
        s.start()
        s.send("{nope")
        s.expect_error("malformed_json")
        s.ping()  # good messages in between do not reset the count
        s.send({"type": "dance"})
        s.ws.send_bytes(encode_media(Kind.VIDEO_JPEG, 0, time.time(), frames[0])[:12])
        closed = s.expect_close()
        assert closed.code == 4400
        errors = [m for m in s.seen if m["type"] == "error"]
        assert [e["code"] for e in errors] == [
            "malformed_json", "unknown_type", "truncated", "too_many_errors",
        ]  # fmt: skip
        assert [e["fatal"] for e in errors] == [False, False, False, True]


def test_idle_connection_is_closed_and_its_session_kept(tmp_path) -> None:
    with running(settings_for(tmp_path, idle_timeout_s=1.0)) as c:
        with connect(c) as s:
            started = s.start()
            for i in range(4):  # activity keeps it open past the timeout
                time.sleep(0.4)
                s.ping(i)
            quiet = time.monotonic()
            err = s.expect_error("idle_timeout", timeout=5.0)
            waited = time.monotonic() - quiet
            assert err["fatal"] is True and 0.8 < waited < 3.0
            assert s.expect_close().code == 1000
        with connect(c) as back:  # an idle close is not a stop: the session can be resumed
            back.send({"type": "resume", "session_id": started["session_id"],
                       "resume_token": started["resume_token"]})  # fmt: skip
            assert back.expect("resumed")["session_id"] == started["session_id"]
