"""The WebSocket endpoint ``/v1/stream``: one :class:`StreamHandler` per connection.

The event loop only parses, checks limits and moves bytes. Decoding and perception run in the
engine's worker pool (one job at a time per session, in arrival order), generation in the
engine's scheduler thread; their output comes back through a thread-safe sink into a bounded
outbox that one task sends. When perception falls behind, the oldest queued video frames are
dropped (counted in ``stats``), never audio and never the loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from typing import Any

from fastapi import APIRouter, WebSocket

from server.engine.media import decode_image, decode_pcm16
from server.engine.session import EngineError, EngineEvent, Flushed, Outgoing, StreamSession
from server.errors import ServiceError
from server.protocol import (
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
    StatsMsg,
    StopMsg,
    StoppedMsg,
    close_code_for,
    dump,
    encode_reaction,
    error_message,
    parse_control,
    parse_media,
)
from server.store import ListenerNotFound

log = logging.getLogger(__name__)

router = APIRouter()
OUTBOX = 256
"""Messages waiting to be sent to one client; beyond it the oldest reactions are dropped."""


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    services = ws.app.state.services
    settings = services.settings
    if not settings.origin_allowed(ws.headers.get("origin")):
        log.warning("stream refused: origin %r not allowed", ws.headers.get("origin"))
        await ws.close(code=CloseCode.POLICY, reason="origin not allowed")
        return
    bearer = ws.headers.get("authorization", "")
    key = ws.headers.get("x-api-key") or (bearer[7:] if bearer.lower().startswith("bearer ")
                                          else None)  # fmt: skip
    try:
        _authorise(services, ws, key)
    except ServiceError as exc:
        await ws.close(code=CloseCode.POLICY, reason=exc.reason[:120])
        return
    await ws.accept()
    handler = StreamHandler(ws, services)
    services.streams.add(handler)
    try:
        await handler.run()
    finally:
        services.streams.discard(handler)


def _authorise(services: Any, ws: WebSocket, key: str | None) -> None:
    """A stream token, the API key, or (to resume) a live session's id and resume token."""
    q = ws.query_params
    sid, resume_token = q.get("session_id"), q.get("resume_token")
    engine = services.engine
    if sid and resume_token and engine is not None and engine.can_resume(sid, resume_token):
        return
    services.guard.check_stream(token=q.get("token"), key=key)


class _Inbox:
    """Media waiting for perception, in arrival order; video beyond ``backlog`` drops oldest."""

    def __init__(self, backlog: int) -> None:
        self.items: collections.deque[tuple] = collections.deque()
        self.backlog = backlog
        self.video = 0
        self.ready = asyncio.Event()

    def put(self, item: tuple) -> int:
        """Queue ``item``; returns how many video frames were dropped to make room."""
        dropped = 0
        if item[0] == "video":
            self.video += 1
            while self.video > self.backlog:
                for i, queued in enumerate(self.items):
                    if queued[0] == "video":
                        del self.items[i]
                        self.video -= 1
                        dropped += 1
                        break
        self.items.append(item)
        self.ready.set()
        return dropped

    async def get(self) -> tuple:
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        item = self.items.popleft()
        if item[0] == "video":
            self.video -= 1
        return item


class StreamHandler:
    """One connection: the control state machine, limits, and the tasks that serve it."""

    def __init__(self, ws: WebSocket, services: Any) -> None:
        self.ws, self.services, self.settings = ws, services, services.settings
        self.loop = asyncio.get_running_loop()
        self.session: StreamSession | None = None
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.inbox = _Inbox(self.settings.video_backlog)
        self.errors = 0
        self.opened = time.monotonic()
        self._draining = False
        self._closing: tuple[int, str] | None = None
        self._bucket = _Bucket(self.settings.max_messages_per_s)
        self._clock: tuple[float, float] | None = None  # (first capture_ts, its arrival)
        self._stopped = False
        self._closed = False
        self._disconnected = False

    # -- the sink (any thread) -------------------------------------------------------------------

    def sink(self, item: Outgoing) -> None:
        self.loop.call_soon_threadsafe(self._enqueue, item)

    def _enqueue(self, item: Any) -> None:
        if self._closing is not None:
            return  # the connection is being closed: nothing more goes out
        if self.outbox.qsize() >= OUTBOX and isinstance(item, ReactionWindow):
            return  # the client does not read: drop reactions, keep control messages
        self.outbox.put_nowait(item)

    def drain(self) -> None:
        """Server shutdown: close with 1001 once the current window is out."""
        self._draining = True
        self._enqueue(("drain",))

    # -- tasks -----------------------------------------------------------------------------------

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._sender()), asyncio.create_task(self._perceiver()),
                 asyncio.create_task(self._stats())]  # fmt: skip
        try:
            await self._receiver()
        finally:
            for t in tasks:
                t.cancel()
            try:
                await asyncio.gather(*tasks, return_exceptions=True)
            finally:  # even when this task is cancelled: the session must not stay attached
                self._release()

    def _release(self) -> None:
        engine = self.services.engine
        if self.session is None or engine is None:
            return
        if self._stopped or self._draining:
            engine.close_session(self.session, self.sink)
        else:
            engine.detach(self.session, self.sink)  # the client may come back to resume

    async def _receiver(self) -> None:
        idle = self.settings.idle_timeout_s
        while self._closing is None:
            remaining = self.settings.session_max_s - (time.monotonic() - self.opened)
            if remaining <= 0:
                await self._fatal(
                    ProtocolError(
                        ErrorCode.SESSION_EXPIRED,
                        "the session reached "
                        f"its maximum length of {self.settings.session_max_s:.0f} s",
                    )
                )
                break
            try:  # asyncio.timeout, not wait_for: wait_for can swallow a cancellation (3.11)
                async with asyncio.timeout(min(idle, remaining)):
                    msg = await self.ws.receive()
            except TimeoutError:
                if remaining > idle:  # else the loop's first check ends the session
                    await self._fatal(ProtocolError(ErrorCode.IDLE_TIMEOUT, f"nothing received "
                                                    f"for {idle:.0f} s"))  # fmt: skip
                continue
            if msg["type"] == "websocket.disconnect":
                self._disconnected = True
                return
            try:
                await self._handle(msg)
            except ProtocolError as err:
                await self._error(err)
        await self._close_now()

    async def _handle(self, msg: dict) -> None:
        if not self._bucket.take():
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"more than {self.settings.max_messages_per_s:.0f} messages per second",
            )
        if msg.get("text") is not None:
            await self._control(
                parse_control(msg["text"], max_bytes=self.settings.max_control_bytes)
            )
        elif msg.get("bytes") is not None:
            self._media(msg["bytes"])

    async def _control(self, msg: Any) -> None:
        engine = self.services.ready_engine()
        if isinstance(msg, StartMsg | ResumeMsg) and self.session is not None:
            raise ProtocolError(ErrorCode.ALREADY_STARTED, "this connection already has a session")
        if isinstance(msg, StartMsg):
            await self._start(engine, msg)
        elif isinstance(msg, ResumeMsg):
            self.session = engine.resume_session(msg.session_id, msg.resume_token, self.sink)
            self._clock = None
            self._send(ResumedMsg(session_id=self.session.id, next_frame=self.session.next_frame))
        elif isinstance(msg, PingMsg):
            self._send(PongMsg(id=msg.id))
        elif self.session is None:
            raise ProtocolError(ErrorCode.NOT_STARTED, f"'{msg.type}' before 'start'")
        elif isinstance(msg, FlushMsg):
            self.inbox.put(("flush",))
        elif isinstance(msg, StopMsg):  # after the media and flushes queued before it
            self._stopped = True
            self.inbox.put(("stop",))

    async def _start(self, engine: Any, msg: StartMsg) -> None:
        options = engine.resolve_options(msg.options.model_dump())
        enrolment = None
        if msg.listener != "generic":
            store = self.services.ready_store()
            try:
                blob = await asyncio.to_thread(store.get_enrolment, msg.listener)
            except ListenerNotFound as exc:
                raise ProtocolError(ErrorCode.UNKNOWN_LISTENER, f"no listener {msg.listener!r}",
                                    field="listener") from exc  # fmt: skip
            try:
                enrolment = engine.check_enrolment(blob, msg.listener)
            except ValueError as exc:
                raise ProtocolError(ErrorCode.UNKNOWN_LISTENER, f"listener {msg.listener!r} was "
                                    f"enrolled with another model; enrol again ({exc})",
                                    field="listener") from exc  # fmt: skip
        self.session, token = engine.open_session(msg.listener, enrolment, options, self.sink)
        self.inbox.put(("prepare",))
        o = options
        settings = {"window": o.window, "model_window": engine.model_window, "steps": o.steps,
                    "guidance": o.guidance, "seed": o.seed, "posnet": o.posnet, "fps": 25,
                    "sample_rate": 16000, "context_frames": engine.context}  # fmt: skip
        self._send(StartedMsg(session_id=self.session.id, resume_token=token,
                              listener=msg.listener, settings=settings,
                              limits=self._limits()))  # fmt: skip

    def _limits(self) -> dict[str, Any]:
        s = self.settings
        return {
            "max_media_bytes": s.max_media_bytes,
            "max_control_bytes": s.max_control_bytes,
            "max_messages_per_s": s.max_messages_per_s,
            "max_lead_s": s.max_lead_s,
            "idle_timeout_s": s.idle_timeout_s,
            "session_max_s": s.session_max_s,
            "resume_grace_s": s.resume_grace_s,
            "video_backlog": s.video_backlog,
        }

    def _media(self, data: bytes) -> None:
        header, payload = parse_media(data, max_bytes=self.settings.max_media_bytes)
        if self.session is None:
            raise ProtocolError(ErrorCode.NOT_STARTED, "media before 'start'", seq=header.seq)
        now = time.monotonic()
        if self._clock is None:
            self._clock = (header.capture_ts, now)
        lead = (header.capture_ts - self._clock[0]) - (now - self._clock[1])
        if lead > self.settings.max_lead_s:
            raise ProtocolError(ErrorCode.RATE_LIMITED, f"media runs {lead:.1f} s ahead of real "
                                f"time (at most {self.settings.max_lead_s:.1f} s); message "
                                "dropped", seq=header.seq)  # fmt: skip
        kind = "audio" if header.kind is Kind.AUDIO_PCM16 else "video"
        dropped = self.inbox.put((kind, header, bytes(payload), now))
        if dropped:
            self.session.stats.frames_dropped += dropped
            self.services.metrics.dropped.inc(dropped)

    async def _perceiver(self) -> None:
        """Runs this session's media through perception, one item at a time, in order."""
        while True:
            item = await self.inbox.get()
            session = self.session
            if item[0] == "stop":
                self._enqueue(("stop",))
                return
            if session is None:
                continue
            try:
                await self.loop.run_in_executor(self.services.engine.perception, _perceive,
                                                session, item)  # fmt: skip
            except ProtocolError as err:
                await self._error(err)
            except Exception:
                log.exception("perception failed in session %s", session.id)
                await self._error(ProtocolError(ErrorCode.INTERNAL, "a frame could not be "
                                                "processed; it was skipped"))  # fmt: skip

    async def _stats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.stats_interval_s)
            s = self.session
            if s is None:
                continue
            med, p95 = s.stats.latency()
            self._send(StatsMsg(frames_in=s.stats.frames_in, frames_dropped=s.stats.frames_dropped,
                                audio_chunks=s.stats.audio_chunks, windows_out=s.stats.windows_out,
                                latency_ms_median=med, latency_ms_p95=p95,
                                queue=len(self.inbox.items)))  # fmt: skip

    async def _sender(self) -> None:
        while True:
            item = await self.outbox.get()
            if isinstance(item, tuple):  # ("stop",) or ("drain",): close after the current window
                await self._wait_window()
                reason = "stopped by the client" if item[0] == "stop" else "server_draining"
                windows = self.session.stats.windows_out if self.session else 0
                await self._send_now(StoppedMsg(windows=windows, reason=reason))
                code = CloseCode.NORMAL if item[0] == "stop" else CloseCode.GOING_AWAY
                self._closing = (code, reason)
                await self._close_now()
                return
            await self._send_now(item)

    async def _wait_window(self) -> None:
        for _ in range(200):  # at most ~2 s for the window being generated
            if self.session is None or not self.session.in_flight:
                break
            await asyncio.sleep(0.01)
        await self._send_queued()

    async def _send_queued(self) -> None:
        while not self.outbox.empty():
            item = self.outbox.get_nowait()
            if not isinstance(item, tuple):
                await self._send_now(item)

    async def _send_now(self, item: Any) -> None:
        if isinstance(item, ReactionWindow):
            await self.ws.send_bytes(encode_reaction(item))
        elif isinstance(item, EngineEvent):
            ts = item.capture_ts if item.capture_ts is not None and math.isfinite(item.capture_ts) \
                else None  # fmt: skip
            await self.ws.send_text(
                dump(
                    EventMsg(event=item.event, frame=item.frame, capture_ts=ts, detail=item.detail)
                )
            )
        elif isinstance(item, EngineError):
            self.services.metrics.errors.labels(item.code.value).inc()
            await self.ws.send_text(dump(ErrorMsg(code=item.code, message=item.message,
                                                  fatal=item.fatal)))  # fmt: skip
        elif isinstance(item, Flushed):
            await self.ws.send_text(dump(FlushedMsg(windows=item.windows)))
        else:
            await self.ws.send_text(dump(item))

    def _send(self, msg: Any) -> None:
        self._enqueue(msg)

    # -- errors and closing ----------------------------------------------------------------------

    async def _error(self, err: ProtocolError) -> None:
        self.errors += 1
        self.services.metrics.errors.labels(err.code.value).inc()
        msg = error_message(err)
        if msg.fatal:
            await self._fatal(err)
            return
        self._send(msg)
        if self.errors >= self.settings.max_errors:
            await self._fatal(ProtocolError(ErrorCode.TOO_MANY_ERRORS, f"{self.errors} errors on "
                                            "this connection"))  # fmt: skip

    async def _fatal(self, err: ProtocolError) -> None:
        self._closing = (close_code_for(err.code), err.reason)
        with contextlib.suppress(Exception):
            await self._send_queued()  # what was queued before the error goes out before it
            await self.ws.send_text(dump(error_message(err, fatal=True)))
        self._stopped = err.code not in (ErrorCode.IDLE_TIMEOUT,)
        await self._close_now()

    async def _close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        code, reason = self._closing or (CloseCode.NORMAL, "")
        with contextlib.suppress(Exception):
            await self.ws.close(code=int(code), reason=reason[:120])


def _perceive(session: StreamSession, item: tuple) -> None:
    """Worker thread: decode one media item and push it into the session."""
    if item[0] == "flush":
        session.flush()
        return
    if item[0] == "prepare":
        session.prepare()
        return
    kind, header, payload, arrival = item
    if kind == "audio":
        session.push_audio(header.seq, header.capture_ts, decode_pcm16(payload), arrival)
    else:
        try:
            rgb = decode_image(header.kind, payload)
        except ProtocolError as err:
            err.seq = header.seq
            raise
        session.push_video(header.seq, header.capture_ts, rgb, arrival)


class _Bucket:
    """Token bucket: ``rate`` messages per second, bursts of two seconds' worth."""

    def __init__(self, rate: float) -> None:
        self.rate, self.capacity = rate, 2 * rate
        self.tokens, self.at = self.capacity, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
