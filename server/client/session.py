"""One stream to ``/v1/stream``: connect, start (or resume), send media, collect reactions.

:func:`stream_file` is the entry point. The sender paces :mod:`server.client.media` items against
the wall clock while a receiver task reads reactions and control messages; a dropped connection is
taken over with ``resume`` when asked. The wire format is :mod:`server.protocol`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from models.face.layout import DIM
from server import protocol as wire
from server.client.media import MediaItem, capture_time, media_items, send_delay
from server.protocol import Kind, ReactionWindow

log = logging.getLogger(__name__)


class ClientError(RuntimeError):
    """The stream failed. ``code`` is the server's error code, or a client one: ``timeout``,
    ``handshake`` (upgrade refused), ``connection_failed``, ``connection_lost``, ``stopped``
    (the server ended the session early). ``result`` holds what arrived before."""

    def __init__(self, code: str, message: str, result: StreamResult | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.result = result


@dataclass
class StreamResult:
    """Everything a stream returned. ``frames`` is (T, 58), the windows in start_frame order."""

    frames: np.ndarray
    start_frames: np.ndarray
    latency_ms: np.ndarray
    session_id: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)
    resumes: int = 0


def stream_url(server: str, token: str | None = None) -> str:
    """``ws://host:port`` (or a URL already ending in the stream path) -> the stream URL."""
    parts = urlsplit(server)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"{server}: the server URL must start with ws:// or wss://")
    url = server.rstrip("/")
    if not parts.path.rstrip("/").endswith(wire.STREAM_PATH):
        url += wire.STREAM_PATH
    if token:
        url += ("&" if "?" in url else "?") + "token=" + quote(token, safe="")
    return url


def assemble(
    windows: dict[int, tuple[ReactionWindow, float]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(frames (T, 58), start_frames (n,), latency_ms (n,))`` from windows by start_frame."""
    order = sorted(windows)
    if not order:
        return np.zeros((0, DIM), np.float32), np.zeros(0, np.int64), np.zeros(0)
    frames = np.concatenate([windows[s][0].frames for s in order]).astype(np.float32)  # (T, 58)
    latency = np.array([windows[s][1] for s in order], dtype=np.float64)
    return frames, np.array(order, dtype=np.int64), latency


class _Dropped(Exception):
    """The connection ended before ``stopped``: resumable."""


class StreamSession:
    """One stream across its connections: sends the media, collects what the server says."""

    def __init__(self, items: Iterator[MediaItem], pool: ThreadPoolExecutor, start: wire.StartMsg,
                 *, speed: float, max_lead_s: float, timeout_s: float,
                 on_window: Callable[[ReactionWindow], None] | None) -> None:  # fmt: skip
        self.items, self.pool, self.start = items, pool, start
        self.speed, self.max_lead_s, self.timeout_s = speed, max_lead_s, timeout_s
        self.on_window = on_window
        self.phase = "media"  # media -> flush -> stop -> done
        self.t0: float | None = None
        self.pending: asyncio.Future[MediaItem | None] | None = None
        self.windows: dict[int, tuple[ReactionWindow, float]] = {}
        self.waiters: dict[str, asyncio.Future[Any]] = {}
        self.out = StreamResult(np.zeros((0, DIM), np.float32), np.zeros(0, np.int64), np.zeros(0),
                                sent={"video": 0, "audio": 0})  # fmt: skip
        self.resume_token: str | None = None
        self.lead_s = max_lead_s

    def result(self) -> StreamResult:
        self.out.frames, self.out.start_frames, self.out.latency_ms = assemble(self.windows)
        return self.out

    async def run(self, url: str, headers: dict[str, str], *, resume: bool,
                  max_resumes: int) -> None:  # fmt: skip
        """Connect (and reconnect with ``resume`` after a drop) until the session stopped."""
        attempt = 0
        while True:
            try:
                async with connect(url, additional_headers=headers,
                                   open_timeout=self.timeout_s) as ws:  # fmt: skip
                    await self._connection(ws)
                return
            except InvalidHandshake as err:
                raise ClientError("handshake", f"the server refused the connection: {err}") from err
            except (_Dropped, OSError, TimeoutError, ClientError) as err:
                # a dropped connection, or a resume the server refused while it still held the
                # old connection (it may not have noticed the drop yet): retry within a budget
                retry = not isinstance(err, ClientError) or err.code == "resume_failed"
                if not (retry and resume and self.resume_token) or attempt >= max_resumes:
                    if isinstance(err, ClientError):
                        raise
                    code = "connection_lost" if self.resume_token else "connection_failed"
                    raise ClientError(code, str(err) or type(err).__name__) from err
                attempt += 1
                log.warning("connection lost (%s); resuming, attempt %d", err, attempt)
                await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), 5.0))

    async def _connection(self, ws: ClientConnection) -> None:
        recv = asyncio.create_task(self._receive(ws))
        send = asyncio.create_task(self._drive(ws))
        try:
            await asyncio.wait({recv, send}, return_when=asyncio.FIRST_COMPLETED)
            if not _succeeded(send):  # let the other task see the end too
                await asyncio.wait({recv, send}, timeout=1.0)
            if _succeeded(send):
                return
            for task in (recv, send):
                err = task.exception() if task.done() and not task.cancelled() else None
                if isinstance(err, ClientError):
                    await ws.close()  # a refusal, not a client failure: close with 1000
                    raise err
                if err and not _is_drop(err):
                    raise err
            raise _Dropped("the connection closed before the session stopped")
        finally:
            for task in (recv, send):
                task.cancel()
            await asyncio.gather(recv, send, return_exceptions=True)

    async def _receive(self, ws: ClientConnection) -> None:
        error: BaseException = _Dropped("the server closed the connection")
        try:
            async for message in ws:
                now = time.time()
                try:
                    if isinstance(message, bytes):
                        self._on_window(wire.decode_reaction(message), now)
                    else:
                        self._on_control(wire.parse_server_control(message))
                except wire.ProtocolError as err:
                    self.out.warnings.append(f"unreadable server message: {err.code}: {err}")
        except asyncio.CancelledError:
            raise
        except Exception as err:
            error = _Dropped(str(err)) if isinstance(err, ConnectionClosed) else err
            raise error from err
        finally:
            for waiter in self.waiters.values():
                if not waiter.done():
                    waiter.set_exception(error)

    def _on_window(self, window: ReactionWindow, now: float) -> None:
        latency = (now - window.capture_ts) * 1000.0
        self.windows.setdefault(window.start_frame, (window, latency))
        if self.on_window is not None:
            self.on_window(window)

    def _on_control(self, msg: wire.ServerMessage) -> None:
        kind = msg.type
        if kind == "error":
            self.out.errors.append(msg.model_dump(mode="json"))
            waiting = [t for t in ("started", "resumed") if t in self.waiters]
            if msg.fatal or waiting:
                failure = ClientError(msg.code.value, msg.message)
                for t in waiting:
                    self._resolve(t, failure)
                if msg.fatal:
                    raise failure
            else:
                log.warning("server error %s: %s", msg.code.value, msg.message)
        elif kind == "event":
            self.out.events.append(msg.model_dump(mode="json"))
        elif kind == "stats":
            self.out.stats.append(msg.model_dump(mode="json"))
        elif kind == "stopped" and kind not in self.waiters:
            raise ClientError("stopped", f"the server ended the session early ({msg.reason})")
        elif kind in self.waiters:
            self._resolve(kind, msg)

    def _resolve(self, kind: str, value: Any) -> None:
        waiter = self.waiters.get(kind)
        if waiter is not None and not waiter.done():
            if isinstance(value, BaseException):
                waiter.set_exception(value)
            else:
                waiter.set_result(value)

    async def _request(self, ws: ClientConnection, msg: Any, reply: str) -> Any:
        waiter = asyncio.get_running_loop().create_future()
        self.waiters[reply] = waiter
        try:
            await ws.send(wire.dump(msg))
            return await asyncio.wait_for(waiter, self.timeout_s)
        except TimeoutError:
            raise ClientError("timeout", f"no {reply!r} within {self.timeout_s:g} s") from None
        finally:
            self.waiters.pop(reply, None)

    async def _drive(self, ws: ClientConnection) -> None:
        if self.resume_token is None:
            started = await self._request(ws, self.start, "started")
            self.resume_token = started.resume_token
            self.out.session_id, self.out.settings = started.session_id, dict(started.settings)
            self.out.limits = dict(started.limits)
            server_lead = self.out.limits.get("max_lead_s")
            if isinstance(server_lead, int | float) and server_lead > 0:
                self.lead_s = min(self.lead_s, 0.5 * server_lead)
        else:
            resumed = await self._request(ws, wire.ResumeMsg(session_id=self.out.session_id or "",
                                          resume_token=self.resume_token), "resumed")  # fmt: skip
            self.out.resumes += 1
            log.info("resumed session %s at frame %d", resumed.session_id, resumed.next_frame)
        if self.phase == "media":
            await self._send_media(ws)
            self.phase = "flush"
        for phase, msg, reply in (
            ("flush", wire.FlushMsg(), "flushed"),
            ("stop", wire.StopMsg(), "stopped"),
        ):
            if self.phase == phase:
                try:
                    await self._request(ws, msg, reply)
                except ClientError as err:
                    if err.code != "timeout":
                        raise
                    self.out.warnings.append(err.message)
                self.phase = "done" if phase == "stop" else "stop"

    def prefetch(self) -> asyncio.Future[MediaItem | None]:
        """The next media item, decoded and encoded in the pool (survives a cancelled wait)."""
        if self.pending is None:
            loop = asyncio.get_running_loop()
            self.pending = loop.run_in_executor(self.pool, next, self.items, None)
        return asyncio.shield(self.pending)

    async def _send_media(self, ws: ClientConnection) -> None:
        while True:
            item = await self.prefetch()
            if item is None:
                return
            if self.t0 is None:
                self.t0 = time.time()
            delay = send_delay(time.time(), self.t0, item.send_t, self.speed, self.lead_s)
            if delay > 0:
                await asyncio.sleep(delay)
            ts = capture_time(self.t0, item.media_t, self.speed)
            await ws.send(wire.encode_media(item.kind, item.seq, ts, item.payload))
            self.out.sent["audio" if item.kind is Kind.AUDIO_PCM16 else "video"] += 1
            self.pending = None
            self.prefetch()


def _succeeded(task: asyncio.Task) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


def _is_drop(err: BaseException) -> bool:
    return isinstance(err, _Dropped | ConnectionClosed | OSError | asyncio.CancelledError)


async def stream_file(
    video: Path,
    *,
    url: str,
    audio: Path | None = None,
    listener: str = "generic",
    api_key: str | None = None,
    token: str | None = None,
    options: dict | None = None,
    speed: float = 1.0,
    limit_s: float | None = None,
    on_window: Callable[[ReactionWindow], None] | None = None,
    resume: bool = False,
    max_lead_s: float = 1.0,
    timeout_s: float = 10.0,
    max_resumes: int = 5,
) -> StreamResult:
    """Stream ``video`` (with ``audio`` or else its own sound) to a server; its reactions.

    ``url`` is the server (``ws://host:port``) or the full stream URL. Fatal server errors raise
    :class:`ClientError` (its ``result`` holds what arrived); other errors are collected.
    """
    opts = wire.StartOptions.model_validate(options or {}, strict=False)
    start = wire.StartMsg(listener=listener, options=opts)
    kind = Kind.VIDEO_PNG if opts.video == "png" else Kind.VIDEO_JPEG
    audio = Path(audio) if audio else None
    items = media_items(Path(video), audio, limit_s=limit_s, video_kind=kind)
    headers = {"X-API-Key": api_key} if api_key else {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rapport-media") as pool:
        session = StreamSession(items, pool, start, speed=speed, max_lead_s=max_lead_s,
                                timeout_s=timeout_s, on_window=on_window)  # fmt: skip
        try:
            await session.prefetch()  # a file that cannot be read fails before connecting
            await session.run(stream_url(url, token), headers, resume=resume,
                              max_resumes=max_resumes)  # fmt: skip
        except ClientError as err:
            err.result = session.result()
            raise
        finally:
            pool.submit(items.close)
    return session.result()


def save(result: StreamResult, out_path: str | Path) -> Path:
    """Write a result as .npz: reactions, start_frames, latency_ms and ``meta`` (JSON text)."""
    meta = {
        "session_id": result.session_id, "settings": result.settings, "limits": result.limits,
        "events": result.events, "errors": result.errors, "stats": result.stats,
        "warnings": result.warnings, "sent": result.sent, "resumes": result.resumes,
    }  # fmt: skip
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        np.savez(f, reactions=result.frames, start_frames=result.start_frames,
                 latency_ms=result.latency_ms, meta=np.array(json.dumps(meta)))  # fmt: skip
    return out
