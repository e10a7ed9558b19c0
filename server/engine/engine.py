"""The engine: loaded models, the window scheduler, the perception pool and the open sessions.

One :class:`Engine` per process. It validates session options against the model, opens and
resumes sessions (a dropped session stays for a grace period, its generator and PosNet state
intact, and is resumed with its secret token), and refuses new ones while draining. It knows
nothing of HTTP: the API layer passes decoded messages in and a sink for what goes out.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from models.generator.online import OnlineRunner
from models.personal.enrolment import Enrolment, model_hash
from models.weights import DefaultModels
from server.engine.metrics import Metrics
from server.engine.scheduler import Scheduler
from server.engine.session import SessionOptions, Sink, StreamSession
from server.perception.extract import StreamingFaceExtractor
from server.protocol import ErrorCode, ProtocolError

log = logging.getLogger(__name__)

GENERIC = "generic"
MAX_WINDOW = 64
MAX_STEPS = 8
GUIDANCE_RANGE = (1.0, 4.0)


@dataclass(frozen=True)
class EngineLimits:
    max_sessions: int = 32
    max_batch: int = 64
    window_deadline_s: float = 0.32
    resume_grace_s: float = 30.0
    perception_workers: int = 2


@dataclass
class _Slot:
    session: StreamSession
    resume_token: str
    detached_at: float | None = None


class Engine:
    """Owns the models and every session; thread-safe."""

    def __init__(self, models: DefaultModels, device: torch.device, limits: EngineLimits,
                 *, metrics: Metrics | None = None,
                 extractor_factory: Callable[[], StreamingFaceExtractor] | None = None
                 ) -> None:  # fmt: skip
        self.models, self.device, self.limits = models, device, limits
        self.metrics = metrics or Metrics()
        cfg = models.generator.config
        self.model_window, self.context = cfg.window, cfg.context
        self.default_options = SessionOptions(
            window=cfg.window,
            steps=cfg.sample_steps,
            guidance=cfg.sample_guidance,
            seed=0,
            posnet=True,
        )
        self.personal_hash = model_hash(models.style, models.hyper)
        self._make_extractor = extractor_factory or StreamingFaceExtractor
        self._runners: dict[Hashable, OnlineRunner] = {}
        self._sessions: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self.draining = False
        self.scheduler = Scheduler(self._step, max_batch=limits.max_batch,
                                   deadline_s=limits.window_deadline_s,
                                   observe=self.metrics.observe_batch)  # fmt: skip
        self.perception = ThreadPoolExecutor(limits.perception_workers,
                                             thread_name_prefix="rapport-perception")  # fmt: skip

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.scheduler.start()

    def shutdown(self) -> None:
        with self._lock:
            slots = list(self._sessions.values())
            self._sessions.clear()
        for slot in slots:
            slot.session.close()
        self.scheduler.stop()
        self.perception.shutdown(wait=False, cancel_futures=True)
        self.metrics.sessions.set(0)

    # -- options ---------------------------------------------------------------------------------

    def resolve_options(self, given: dict) -> SessionOptions:
        """Effective options from the client's (``None`` = default); :class:`ProtocolError`
        (invalid_field / audio_rate) naming the option that the model cannot honour."""
        d = self.default_options
        window = given.get("window") or d.window
        if window % self.model_window or not self.model_window <= window <= MAX_WINDOW:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"options.window must be a multiple of "
                                f"the model window {self.model_window} up to {MAX_WINDOW}, got "
                                f"{window}", field="options.window")  # fmt: skip
        steps = given.get("steps") or d.steps
        if not 1 <= steps <= MAX_STEPS:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"options.steps must be 1..{MAX_STEPS}",
                                field="options.steps")  # fmt: skip
        guidance = d.guidance if given.get("guidance") is None else float(given["guidance"])
        if not GUIDANCE_RANGE[0] <= guidance <= GUIDANCE_RANGE[1]:
            raise ProtocolError(ErrorCode.INVALID_FIELD, "options.guidance must be in "
                                f"{GUIDANCE_RANGE}", field="options.guidance")  # fmt: skip
        rate = given.get("sample_rate")
        if rate is not None and rate != 16000:
            raise ProtocolError(
                ErrorCode.AUDIO_RATE,
                f"audio must be 16000 Hz mono PCM16, the session asked for {rate} Hz",
                field="options.sample_rate",
            )
        seed = given.get("seed")
        seed = secrets.randbelow(2**31 - 1) if seed is None else int(seed)
        posnet = d.posnet if given.get("posnet") is None else bool(given["posnet"])
        return SessionOptions(window=window, steps=steps, guidance=guidance, seed=seed,
                              posnet=posnet)  # fmt: skip

    def check_enrolment(self, blob: bytes, listener: str) -> Enrolment:
        """An enrolment from the store, checked against the loaded personalisation model."""
        return Enrolment.from_bytes(blob, targets=self.models.hyper.targets,
                                    rank=self.models.hyper.rank, model_hash=self.personal_hash,
                                    name=f"listener {listener}")  # fmt: skip

    # -- sessions --------------------------------------------------------------------------------

    def open_session(self, listener: str, enrolment: Enrolment | None, options: SessionOptions,
                     sink: Sink) -> tuple[StreamSession, str]:  # fmt: skip
        """A new session and its resume token; ``ProtocolError`` (session_limit /
        server_draining) when it cannot be opened."""
        with self._lock:
            if self.draining:
                raise ProtocolError(ErrorCode.SERVER_DRAINING, "the server is shutting down; "
                                    "connect to another instance")  # fmt: skip
            self._reap_locked()
            if len(self._sessions) >= self.limits.max_sessions:
                raise ProtocolError(
                    ErrorCode.SESSION_LIMIT,
                    f"the server runs its maximum of "
                    f"{self.limits.max_sessions} sessions; retry later",
                )
            self._runner(options)  # build it now, not in the scheduler's thread
            shifts = enrolment.factors if enrolment is not None else None
            rest = enrolment.rest if enrolment is not None else None
            spread = enrolment.spread if enrolment is not None else None
            online = self._runners[self._key(options)].new_session(
                seed=options.seed, shifts=shifts, rest=rest, spread=spread)
            sid = secrets.token_hex(16)
            session = StreamSession(
                sid,
                listener,
                options,
                online,
                submit=self.scheduler.submit,
                extractor_factory=self._make_extractor,
                sink=sink,
            )
            token = secrets.token_urlsafe(24)
            self._sessions[sid] = _Slot(session, token)
            self.metrics.sessions.set(len(self._sessions))
        log.info("session %s opened for listener %s", sid, listener)
        return session, token

    def resume_session(self, session_id: str, token: str, sink: Sink) -> StreamSession:
        """Reattach a session to a new connection. A session still attached to an old one
        (a half-open connection the server has not noticed yet) is taken over."""
        with self._lock:
            self._reap_locked()
            slot = self._slot(session_id, token)
            if slot.detached_at is None:
                log.info("session %s taken over by a new connection", session_id)
            slot.detached_at = None
        slot.session.attach(sink)
        log.info("session %s resumed", session_id)
        return slot.session

    def _slot(self, session_id: str, token: str) -> _Slot:
        slot = self._sessions.get(session_id)
        if slot is None or not hmac.compare_digest(slot.resume_token.encode(), token.encode()):
            raise ProtocolError(ErrorCode.RESUME_FAILED, "no session with that id and token "
                                "(it may have expired after its grace period)")  # fmt: skip
        return slot

    def can_resume(self, session_id: str, token: str) -> bool:
        """Whether ``(session_id, token)`` names a live session (the credential of a resuming
        browser, whose single-use stream token is spent)."""
        with self._lock:
            try:
                self._slot(session_id, token)
            except ProtocolError:
                return False
            return True

    def detach(self, session: StreamSession, sink: Sink | None = None) -> None:
        """The client went away: keep the session for the grace period. With ``sink``, only if
        that connection still owns the session (not after another one took it over)."""
        if sink is not None and not session.owned_by(sink):
            return
        session.attach(None)
        with self._lock:
            slot = self._sessions.get(session.id)
            if slot is not None:
                slot.detached_at = time.monotonic()
            if self.limits.resume_grace_s <= 0 or self.draining:
                self._close_locked(session.id)

    def close_session(self, session: StreamSession, sink: Sink | None = None) -> None:
        if sink is not None and not session.owned_by(sink):
            return
        with self._lock:
            self._close_locked(session.id)

    def _close_locked(self, sid: str) -> None:
        slot = self._sessions.pop(sid, None)
        if slot is not None:
            slot.session.close()
            log.info("session %s closed", sid)
        self.metrics.sessions.set(len(self._sessions))

    def _reap_locked(self) -> None:
        now = time.monotonic()
        for sid, slot in list(self._sessions.items()):
            if slot.detached_at is not None and now - slot.detached_at > self.limits.resume_grace_s:
                self._close_locked(sid)

    def reap(self) -> None:
        with self._lock:
            self._reap_locked()

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def sessions(self) -> list[StreamSession]:
        with self._lock:
            return [slot.session for slot in self._sessions.values()]

    # -- generation ------------------------------------------------------------------------------

    @staticmethod
    def _key(options: SessionOptions) -> Hashable:
        return (options.steps, options.guidance, options.posnet)

    def _runner(self, options: SessionOptions) -> OnlineRunner:
        key = self._key(options)
        if key not in self._runners:
            posnet = self.models.posnet if options.posnet else None
            self._runners[key] = OnlineRunner(
                self.models.generator,
                posnet,
                steps=options.steps,
                device=self.device,
                guidance=options.guidance,
            )
        return self._runners[key]

    def _step(self, key: Hashable, online: list) -> list[np.ndarray]:
        with torch.inference_mode():
            return self._runners[key].step(online)
