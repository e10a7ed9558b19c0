"""The browser client: the built page at ``/``, its assets at ``/static/``, and the default
avatar at ``/avatar/default.glb``.

The page is built from ``clients/web/`` by ``make web`` into ``clients/web/dist`` (git-ignored).
Without a build, ``/`` answers 503 with a page that says how to build it; the API is unaffected.
The default avatar is the bundled face model written as GLB (what ``rapport face export``
writes), generated once per process at the first request, in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

log = logging.getLogger(__name__)

DIST = Path(__file__).resolve().parents[2] / "clients" / "web" / "dist"
GLB_TYPE = "model/gltf-binary"

NOT_BUILT = """<!doctype html><html lang="en"><meta charset="utf-8"><title>Rapport</title>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto">
<h1>The web client is not built</h1>
<p>This server found no built page in <code>clients/web/dist</code>. Build it with
<code>make web</code> (or start the server with <code>make serve</code>, which builds it), then
reload. The API itself works: see <a href="/docs">/docs</a>.</p></body></html>"""


def default_avatar_glb() -> bytes:
    """The bundled face model as GLB bytes (52 ARKit-named morph targets)."""
    from models.face.face_model import load_default_face_model
    from models.face.gltf import write_face_glb

    with tempfile.TemporaryDirectory(prefix="rapport-avatar-") as tmp:
        path = Path(tmp) / "face.glb"
        write_face_glb(load_default_face_model(), path)
        return path.read_bytes()


class _Assets(StaticFiles):
    """Static files whose folder may appear after the server started (``make web``); while it
    is missing every asset is a plain 404."""

    async def check_config(self) -> None:
        return None


def router(dist: Path = DIST) -> APIRouter:
    """Routes for the page and the avatar; ``dist`` is the build folder."""
    r = APIRouter(include_in_schema=False)
    cache: dict[str, bytes] = {}
    lock = asyncio.Lock()

    @r.get("/")
    async def index() -> Response:
        page = dist / "index.html"
        if not page.is_file():
            return HTMLResponse(NOT_BUILT, status_code=503)
        return FileResponse(page, media_type="text/html", headers={"Cache-Control": "no-cache"})

    @r.get("/avatar/default.glb")
    async def avatar() -> Response:
        async with lock:
            if "glb" not in cache:
                cache["glb"] = await asyncio.to_thread(default_avatar_glb)
                log.info("default avatar: %d bytes of GLB", len(cache["glb"]))
        return Response(cache["glb"], media_type=GLB_TYPE,
                        headers={"Cache-Control": "public, max-age=3600"})  # fmt: skip

    return r


def install(app: FastAPI, dist: Path = DIST) -> None:
    """Mount the page, its assets and the default avatar on ``app``."""
    app.include_router(router(dist))
    app.mount("/static", _Assets(directory=dist / "static", check_dir=False), name="static")
