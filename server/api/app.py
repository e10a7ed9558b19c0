"""The FastAPI app factory and its lifespan; nothing runs at import time.

``create_app(settings)`` builds the app; its lifespan opens the listener store (creating the
SQLite file on first start), then loads the models in a worker thread — ``/v1/health/live``
answers at once, ``/v1/health/ready`` once the models are loaded — and at shutdown drains the
streams (each closes with 1001 after its current window) and stops the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from models.weights import DefaultModels, load_default, resolve_device
from server.api import errors, rest, stream, web
from server.api.security import Guard
from server.engine.engine import Engine, EngineLimits
from server.engine.metrics import Metrics
from server.errors import Busy, NotReady
from server.settings import Settings, load_settings
from server.store import ListenerStore

log = logging.getLogger(__name__)

VERSION = "0.1.0"


@dataclass
class Services:
    """What the routes share: settings, guard, store, engine; one per app."""

    settings: Settings
    guard: Guard
    metrics: Metrics
    enrol_pool: ThreadPoolExecutor
    enrol_slots: asyncio.Semaphore
    store: ListenerStore | None = None
    engine: Engine | None = None
    load_error: str | None = None
    streams: set[Any] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    def ready_engine(self) -> Engine:
        if self.engine is None:
            raise NotReady(self.load_error or "the models are still loading; retry shortly")
        if self.engine.draining:
            raise Busy("the server is shutting down")
        return self.engine

    def ready_store(self) -> ListenerStore:
        if self.store is None:
            raise NotReady("the listener store is not open")
        return self.store


def _warn_if_open(settings: Settings) -> None:
    if settings.api_key is None:
        log.warning("=" * 72)
        log.warning("RAPPORT_API_KEY is not set: the REST API and the stream are OPEN to anyone")
        log.warning("who can reach %s:%d. Set RAPPORT_API_KEY before exposing the server.",
                    settings.host, settings.port)  # fmt: skip
        log.warning("=" * 72)


def _load_engine(settings: Settings, services: Services, models: DefaultModels | None,
                 extractor_factory: Callable | None) -> Engine:  # fmt: skip
    device = resolve_device(settings.device)
    if models is None:
        models = load_default(device, settings.weights_dir)
    limits = EngineLimits(max_sessions=settings.max_sessions, max_batch=settings.max_batch,
                          window_deadline_s=settings.window_deadline_s,
                          resume_grace_s=settings.resume_grace_s,
                          perception_workers=settings.perception_workers)  # fmt: skip
    engine = Engine(models, device, limits, metrics=services.metrics,
                    extractor_factory=extractor_factory)  # fmt: skip
    engine.start()
    log.info("models loaded on %s; ready", device)
    return engine


async def _load(app: FastAPI, models: DefaultModels | None, extractor_factory: Callable | None
                ) -> None:  # fmt: skip
    services: Services = app.state.services
    try:
        services.engine = await asyncio.to_thread(_load_engine, services.settings, services,
                                                  models, extractor_factory)  # fmt: skip
    except Exception as exc:  # reported by /v1/health/ready, the server stays up
        log.exception("loading the models failed")
        services.load_error = f"loading the models failed: {exc}"


async def _reaper(services: Services) -> None:
    """Closes sessions whose client did not come back within the grace period."""
    while True:
        await asyncio.sleep(1.0)
        if services.engine is not None:
            services.engine.reap()


async def drain(services: Services) -> None:
    """Refuse new sessions; close every stream with 1001 after its current window."""
    if services.engine is not None:
        services.engine.draining = True
    handlers = list(services.streams)
    for handler in handlers:
        handler.drain()
    deadline = time.monotonic() + services.settings.drain_timeout_s
    while services.streams and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    log.info("drained %d stream(s); %d left", len(handlers), len(services.streams))


def create_app(settings: Settings | None = None, *, models: DefaultModels | None = None,
               extractor_factory: Callable | None = None) -> FastAPI:  # fmt: skip
    """The service. ``models``/``extractor_factory`` replace the defaults (tests)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cfg = settings or load_settings()
        _warn_if_open(cfg)
        services = Services(
            settings=cfg,
            guard=Guard(cfg.api_key.get_secret_value() if cfg.api_key else None, cfg.token_ttl_s),
            metrics=Metrics(),
            enrol_pool=ThreadPoolExecutor(cfg.enrol_workers, thread_name_prefix="rapport-enrol"),
            enrol_slots=asyncio.Semaphore(2 * cfg.enrol_workers),
        )
        app.state.services = services
        services.store = await asyncio.to_thread(ListenerStore.open, cfg.database_url)
        log.info("listener store: %s (%d listeners)", services.store, services.store.count())
        loader = asyncio.create_task(_load(app, models, extractor_factory))
        reaper = asyncio.create_task(_reaper(services))
        try:
            yield
        finally:
            await drain(services)
            reaper.cancel()
            await loader
            if services.engine is not None:
                services.engine.shutdown()
            services.enrol_pool.shutdown(wait=False, cancel_futures=True)
            services.store.close()

    app = FastAPI(title="Rapport", version=VERSION, lifespan=lifespan,
                  description="Real-time personalised listener reactions: stream a speaker over "
                  "`/v1/stream` (see docs/protocol.md), enrol listeners over REST.")  # fmt: skip
    errors.install(app)
    app.include_router(rest.router)
    app.include_router(stream.router)
    web.install(app)
    return app
