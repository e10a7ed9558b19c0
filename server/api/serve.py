"""Runs the app under uvicorn with a graceful drain on SIGTERM/SIGINT.

On the first signal the server stops taking new sessions and closes each open stream with 1001
after its current window (at most ``drain_timeout_s``), then uvicorn shuts down as usual. A
second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

import uvicorn

from server.api.app import create_app, drain
from server.settings import Settings

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = self.config.loaded_app if self.config.loaded else None
        services = getattr(getattr(app, "state", None), "services", None)
        loop = self._loop
        if self._draining or services is None or loop is None:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        log.info("%s: draining streams before shutdown", signal.Signals(sig).name)
        loop.call_soon_threadsafe(
            lambda: loop.create_task(self._drain_then_exit(services, sig, frame))
        )

    async def _drain_then_exit(self, services: object, sig: int, frame: FrameType | None) -> None:
        try:
            await drain(services)  # type: ignore[arg-type]
        finally:
            super().handle_exit(sig, frame)


def serve(settings: Settings) -> None:
    """Block serving ``settings.host:port`` until a signal."""
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_level=settings.log_level, ws_max_size=4 * settings.max_media_bytes,
                            proxy_headers=False, lifespan="on")  # fmt: skip
    DrainingServer(config).run()
