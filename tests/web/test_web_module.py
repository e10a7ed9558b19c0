"""The server side of the web client (no browser): the page, its assets, the default avatar,
the clear answer when the page is not built, and the client's copy of the coefficient layout."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from models.face import layout
from server.api import web

ROOT = Path(__file__).resolve().parents[2]


def client(dist: Path) -> TestClient:
    app = FastAPI()
    web.install(app, dist)
    return TestClient(app)


def test_the_built_page_and_its_assets_are_served(tmp_path) -> None:
    (tmp_path / "static").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>Rapport</title>")
    (tmp_path / "static" / "app.js").write_text("console.log(1)")
    c = client(tmp_path)
    page = c.get("/")
    assert page.status_code == 200 and "Rapport" in page.text
    assert page.headers["content-type"].startswith("text/html")
    js = c.get("/static/app.js")
    assert js.status_code == 200 and js.text == "console.log(1)"
    assert c.get("/static/../index.html").status_code == 404
    assert c.get("/static/missing.js").status_code == 404


def test_without_a_build_the_page_says_how_to_build_it(tmp_path) -> None:
    c = client(tmp_path / "nowhere")
    page = c.get("/")
    assert page.status_code == 503
    assert "make web" in page.text
    assert c.get("/static/app.js").status_code == 404  # not a server error


def test_the_default_avatar_is_a_glb_with_the_52_arkit_morph_targets(tmp_path) -> None:
    res = client(tmp_path).get("/avatar/default.glb")
    assert res.status_code == 200
    assert res.headers["content-type"] == "model/gltf-binary"
    magic, version, length = struct.unpack("<III", res.content[:12])
    assert (magic, version, length) == (0x46546C67, 2, len(res.content))
    (json_len,) = struct.unpack("<I", res.content[12:16])
    gltf = json.loads(res.content[20 : 20 + json_len])
    names = gltf["meshes"][0]["extras"]["targetNames"]
    assert names == list(layout.BLENDSHAPE_NAMES)


def test_the_client_layout_mirrors_the_python_layout() -> None:
    text = (ROOT / "clients" / "web" / "src" / "layout.js").read_text()

    def strings(const: str) -> list[str]:
        body = re.search(rf"export const {const} = Object\.freeze\(\[(.*?)\]\)", text, re.S)
        assert body, const
        return re.findall(r'"([^"]+)"', body.group(1))

    assert tuple(strings("BLENDSHAPE_NAMES")) == layout.BLENDSHAPE_NAMES
    assert tuple(strings("ROTATION_NAMES")) == layout.ROTATION_NAMES
    assert tuple(strings("TRANSLATION_NAMES")) == layout.TRANSLATION_NAMES
    assert f"export const FPS = {layout.FPS};" in text
    assert f"export const SAMPLE_RATE = {layout.SAMPLE_RATE};" in text
