"""The personality routes on a running app with the real bundled generator and enrolment path
and a personality model made here (two versions, to see a recomputation): the response
contract, 404 / 409 / 503, the cache and its recomputation, the one-off clip and bad uploads."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from models.data.react_layout import TRAIT_NAMES
from models.personality.checkpoint import save_personality
from models.personality.model import PersonalityModel, variant_config
from models.weights import FILES, WEIGHTS_DIR, load_default
from server.perception.video import iter_frames_25fps, read_audio
from server.personality import POLARITY
from server.store import ListenerStore
from tests.conftest import media_clip, write_video
from tests.server.api_helpers import running, settings_for

KEY = "test-key-personality-0123"
SECONDS = 10.5


@pytest.fixture(scope="module")
def clips(tmp_path_factory, speech_wav) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pclips")
    n = round(SECONDS * 25)
    frames = [rgb for _, rgb in itertools.islice(iter_frames_25fps(media_clip("cap13_edit2.mp4")),
                                                 n)]  # fmt: skip
    speech = read_audio(speech_wav, 16_000)
    noise = [np.random.default_rng(5).integers(0, 256, (96, 128, 3), dtype=np.uint8)] * (11 * 25)
    return {"good": write_video(folder / "bea.mp4", frames, audio=speech[: int(SECONDS * 16_000)]),
            "short": write_video(folder / "short.mp4", frames[:100]),
            "faceless": write_video(folder / "noise.mp4", noise)}  # fmt: skip


def personality_file(path: Path, seed: int) -> Path:
    """A personality model on the bundled generator and enrolment path (untrained graph)."""
    models = load_default("cpu")
    torch.manual_seed(seed)
    cfg = dataclasses.replace(variant_config("full"), max_crops=2)
    model = PersonalityModel(cfg, models.style, models.hyper, models.generator)
    with torch.no_grad():  # a visible spread of outputs instead of an untrained net's 0.5
        model.gnn.head[2].bias.copy_(torch.linspace(-1.0, 1.0, 5) * (1 if seed % 2 else -1))
    return save_personality(model, path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """A weights folder with the bundled files but no personality model, and two models."""
    folder = tmp_path_factory.mktemp("weights")
    for name in FILES:
        shutil.copyfile(WEIGHTS_DIR / name, folder / name)
    return {"dir": folder, "v1": personality_file(folder.parent / "v1.safetensors", 1),
            "v2": personality_file(folder.parent / "v2.safetensors", 2)}  # fmt: skip


def use(weights: dict[str, Path], version: str | None) -> Path:
    target = weights["dir"] / "personality.safetensors"
    target.unlink(missing_ok=True)
    if version is not None:
        shutil.copyfile(weights[version], target)
    return weights["dir"]


def upload(client, clip: Path, path: str = "/v1/personality", **form: str):
    return client.post(path, files={"clip": ("clip.mp4", clip.read_bytes(), "video/mp4")},
                       data=form)  # fmt: skip


def error_of(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    assert body["error"]["message"]
    return body["error"]


def check_shape(body: dict, listener_id: str | None) -> dict[str, float]:
    assert set(body) == {"listener_id", "model_version", "computed_at", "traits", "caveat"}
    assert body["listener_id"] == listener_id and body["model_version"].startswith("rpr-")
    assert datetime.fromisoformat(body["computed_at"]).tzinfo is not None
    assert [t["name"] for t in body["traits"]] == list(TRAIT_NAMES)
    for t in body["traits"]:
        assert set(t) == {"name", "value", "scale", "polarity"}
        assert 0.0 <= t["value"] <= 1.0 and t["scale"] == [0, 1]
        assert t["polarity"] == POLARITY[t["name"]]
    assert dict(zip(TRAIT_NAMES, [t["polarity"] for t in body["traits"]],
                    strict=True))["neuroticism"] == "higher = more neurotic"  # fmt: skip
    caveat = body["caveat"]
    assert "synthetic" in caveat and "not a psychological assessment" in caveat
    assert "EU AI Act" in caveat and "workplace" in caveat and "education" in caveat
    return {t["name"]: t["value"] for t in body["traits"]}


def test_listener_personality_lifecycle(weights, clips, tmp_path) -> None:
    """Cached at enrolment, served from the cache, recomputed after a model change; 503 without
    a model; 409 without consent; 404 for nobody; the one-off clip matches the cached value."""
    data = tmp_path / "data"
    with running(settings_for(data, weights_dir=use(weights, "v1"))) as c:
        made = upload(c, clips["good"], "/v1/listeners", name="Bea", consent="true")
        assert made.status_code == 201, made.text
        bea = made.json()["id"]
        shy = upload(c, clips["good"], "/v1/listeners", name="Shy", consent="false").json()["id"]
        first = c.get(f"/v1/listeners/{bea}/personality")
        assert first.status_code == 200, first.text
        v1 = check_shape(first.json(), bea)
        assert c.get(f"/v1/listeners/{bea}/personality").json() == first.json()  # cached
        err = error_of(c.get(f"/v1/listeners/{shy}/personality"), 409)
        assert err["code"] == "consent_required"
        missing = c.get("/v1/listeners/0123456789abcdef0123456789abcdef/personality")
        assert error_of(missing, 404)["code"] == "listener_not_found"
        once = upload(c, clips["good"], consent="true")
        assert once.status_code == 200, once.text
        assert check_shape(once.json(), None) == pytest.approx(v1, abs=1e-5)
        assert once.json()["model_version"] == first.json()["model_version"]
        assert c.get("/v1/listeners").json()["total"] == 2  # the one-off stored nothing
    with ListenerStore.open(f"sqlite:///{data / 'rapport.db'}") as store:
        cached = store.get(bea)
        assert cached.personality == pytest.approx(v1, abs=1e-6)
        assert cached.personality_model == first.json()["model_version"]
        assert store.get_behaviour(bea) is not None and store.get_behaviour(shy) is None
    with running(settings_for(data, weights_dir=use(weights, None))) as c:
        err = error_of(c.get(f"/v1/listeners/{bea}/personality"), 503)
        assert err["code"] == "personality_unavailable" and "personality" in err["message"]
        assert error_of(upload(c, clips["good"], consent="true"), 503)["code"] == \
            "personality_unavailable"  # fmt: skip
    with running(settings_for(data, weights_dir=use(weights, "v2"))) as c:
        again = c.get(f"/v1/listeners/{bea}/personality")
        assert again.status_code == 200, again.text
        v2 = check_shape(again.json(), bea)
        assert again.json()["model_version"] != first.json()["model_version"]
        assert again.json()["computed_at"] > first.json()["computed_at"]
        assert v2 != pytest.approx(v1, abs=1e-3)
        fresh = upload(c, clips["good"], consent="true").json()
        assert check_shape(fresh, None) == pytest.approx(v2, abs=1e-5)
        assert c.get(f"/v1/listeners/{bea}/personality").json() == again.json()
    with ListenerStore.open(f"sqlite:///{data / 'rapport.db'}") as store:
        assert store.get(bea).personality_model == again.json()["model_version"]


BAD = {
    # case: (status, code, field)
    "no-consent": (422, "consent_required", "consent"),
    "consent-false": (422, "consent_required", "consent"),
    "short": (422, "bad_media", "clip"),
    "faceless": (422, "bad_media", "clip"),
    "text": (415, "unsupported_media_type", "clip"),
    "too-large": (413, "too_large", "clip"),
}


@pytest.fixture(scope="module")
def keyed(weights, tmp_path_factory):
    settings = settings_for(tmp_path_factory.mktemp("pdata"), weights_dir=use(weights, "v1"),
                            api_key=KEY, upload_max_bytes=2_000_000)  # fmt: skip
    with running(settings) as c:
        yield c


@pytest.mark.parametrize("case", list(BAD))
def test_bad_one_off_clips_are_refused(keyed, clips, case) -> None:
    status, code, field = BAD[case]
    form = {"consent": "true"}
    data, ctype = clips["good"].read_bytes(), "video/mp4"
    if case == "no-consent":
        form = {}
    elif case == "consent-false":
        form = {"consent": "false"}
    elif case in ("short", "faceless"):
        data = clips[case].read_bytes()
    elif case == "text":
        ctype = "text/plain"
    elif case == "too-large":
        data = np.random.default_rng(1).bytes(2_500_000)
    resp = keyed.post("/v1/personality", files={"clip": ("c.mp4", data, ctype)}, data=form,
                      headers={"X-API-Key": KEY})  # fmt: skip
    err = error_of(resp, status)
    assert (err["code"], err["field"]) == (code, field), err
    assert "/tmp" not in err["message"]


@pytest.mark.parametrize("method,path", [
    ("get", "/v1/listeners/0123456789abcdef0123456789abcdef/personality"),
    ("post", "/v1/personality")])  # fmt: skip
def test_personality_routes_need_the_key(keyed, method, path) -> None:
    assert error_of(keyed.request(method, path), 401)["code"] == "unauthorized"


def test_openapi_documents_both_routes_with_response_models(keyed) -> None:
    doc = keyed.get("/openapi.json").json()
    get = doc["paths"]["/v1/listeners/{listener_id}/personality"]["get"]
    post = doc["paths"]["/v1/personality"]["post"]
    for op in (get, post):
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert ok.endswith("/Personality")
        text = op["description"].replace("\n", " ")
        assert "not a psychological assessment" in text and "synthetic world" in text
        assert "EU AI Act" in text and "workplace" in text and "education" in text
    assert {"404", "409", "503"} <= set(get["responses"])
    assert {"413", "415", "422", "503"} <= set(post["responses"])
    assert "multipart/form-data" in post["requestBody"]["content"]
    schema = doc["components"]["schemas"]["TraitScore"]
    assert set(schema["properties"]) == {"name", "value", "scale", "polarity"}
