"""The REST API on a running app with the real bundled models: health and metrics, the API key
and stream tokens, the Origin allow-list, enrolment of a real clip (and refusal of bad ones),
the listener resource's life from creation to erasure, and the OpenAPI document."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from models.generator.online import EXPRESSIVITY_POWER, EXPRESSIVITY_RANGE
from models.personal.enrolment import Enrolment
from server.api.app import create_app
from server.api.security import Guard
from server.perception.video import iter_frames_25fps, read_audio
from tests.conftest import media_clip, write_streamed_webm, write_video
from tests.server.api_helpers import ORIGIN, connect, running, settings_for

KEY = "test-key-0123456789"
GOOD_SECONDS = 10.5


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clips(tmp_path_factory, speech_wav) -> dict[str, Path]:
    """A real 10.5 s talking-face clip with speech, a 4 s one, and an 11 s clip with no face."""
    folder = tmp_path_factory.mktemp("clips")
    source = media_clip("cap13_edit2.mp4")
    n = round(GOOD_SECONDS * 25)
    frames = [rgb for _, rgb in itertools.islice(iter_frames_25fps(source), n)]
    speech = read_audio(speech_wav, 16_000)
    rng = np.random.default_rng(7)
    noise = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(11 * 25)]
    return {
        "good": write_video(folder / "ada.mp4", frames, audio=speech[: int(GOOD_SECONDS * 16_000)]),
        "short": write_video(folder / "short.mp4", frames[:100], audio=speech[:64_000]),
        "faceless": write_video(folder / "noise.mp4", noise),
        "webm": write_streamed_webm(folder / "recording.webm", frames),
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def client(data_dir) -> Iterator[TestClient]:
    """An open server (no API key), its store in ``data_dir``."""
    with running(settings_for(data_dir)) as c:
        yield c


@pytest.fixture(scope="module")
def keyed(tmp_path_factory) -> Iterator[TestClient]:
    with running(settings_for(tmp_path_factory.mktemp("keyed"), api_key=KEY)) as c:
        yield c


def upload(client: TestClient, clip: Path | bytes, *, ctype: str = "video/mp4",
           headers: dict | None = None, **form: str):  # fmt: skip
    data = clip.read_bytes() if isinstance(clip, Path) else clip
    return client.post("/v1/listeners", files={"clip": ("clip.mp4", data, ctype)}, data=form,
                       headers=headers or {})  # fmt: skip


@pytest.fixture(scope="module")
def enrolled(client, clips) -> dict:
    """The one real enrolment of this module (extraction costs seconds of CPU)."""
    resp = upload(client, clips["good"], name="Ada", consent="true",
                  headers={"Idempotency-Key": "enrol-ada-1"})  # fmt: skip
    assert resp.status_code == 201, resp.text
    return resp.json()


def error_of(resp, status: int) -> dict:
    """The error object of a response, after checking its status and the error JSON shape."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    assert body["error"]["message"]
    return body["error"]


def listener_ids(client: TestClient) -> list[str]:
    page = client.get("/v1/listeners", params={"limit": 500}).json()
    assert page["total"] == len(page["listeners"])
    return [item["id"] for item in page["listeners"]]


# -- health, metrics, OpenAPI ----------------------------------------------------------------


def test_health_probes_answer(client) -> None:
    assert client.get("/v1/health/live").json() == {"status": "ok"}
    ready = client.get("/v1/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["device"] == "cpu"


def test_server_whose_models_fail_to_load_stays_up_and_says_why(tmp_path) -> None:
    settings = settings_for(tmp_path, weights_dir=tmp_path / "no-weights")
    with TestClient(create_app(settings)) as c:
        deadline = time.monotonic() + 30
        while (ready := c.get("/v1/health/ready")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert ready.status_code == 503
        assert ready.json()["status"] == "failed" and "no-weights" in ready.json()["detail"]
        assert c.get("/v1/health/live").status_code == 200
        refused = c.post("/v1/listeners", files={"clip": ("c.mp4", b"x" * 64, "video/mp4")},
                         data={"name": "Ada", "consent": "true"})  # fmt: skip
        assert error_of(refused, 503)["code"] == "not_ready"
        assert refused.headers["retry-after"]


def metric(text: str, name: str) -> float:
    lines = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    assert len(lines) == 1, f"{name} not in the metrics"
    return float(lines[0].split()[1])


def test_metrics_are_prometheus_text_and_count_sessions(tmp_path) -> None:
    with running(settings_for(tmp_path)) as c:
        resp = c.get("/v1/metrics")
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
        assert "# TYPE rapport_sessions gauge" in resp.text
        assert metric(resp.text, "rapport_sessions") == 0
        with connect(c) as stream:
            stream.start()
            assert metric(c.get("/v1/metrics").text, "rapport_sessions") == 1
            stream.send({"type": "stop"})
            stream.expect("stopped")
            assert stream.expect_close().code == 1000
        assert metric(c.get("/v1/metrics").text, "rapport_sessions") == 0


def test_openapi_lists_every_route_with_its_methods(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    expected = {
        "/v1/listeners": {"get", "post"},
        "/v1/listeners/{listener_id}": {"get", "delete"},
        "/v1/listeners/{listener_id}/personality": {"get"},
        "/v1/personality": {"post"},
        "/v1/sessions": {"post"},
        "/v1/health/live": {"get"},
        "/v1/health/ready": {"get"},
        "/v1/metrics": {"get"},
    }
    assert {p: set(methods) for p, methods in paths.items()} == expected
    form = paths["/v1/listeners"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in form


# -- API key and stream tokens ---------------------------------------------------------------

PROTECTED = [
    ("get", "/v1/listeners"),
    ("get", "/v1/listeners/0123456789abcdef0123456789abcdef"),
    ("delete", "/v1/listeners/0123456789abcdef0123456789abcdef"),
    ("post", "/v1/listeners"),
    ("post", "/v1/sessions"),
    ("get", "/v1/metrics"),
]


@pytest.mark.parametrize("method,path", PROTECTED)
@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}],
    ids=["none", "wrong-key", "wrong-bearer", "not-bearer"],
)
def test_rest_without_the_key_is_refused(keyed, method, path, headers) -> None:
    resp = keyed.request(method, path, headers=headers)
    assert error_of(resp, 401)["code"] == "unauthorized"
    assert resp.headers["www-authenticate"]


@pytest.mark.parametrize("headers", [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}],
                         ids=["x-api-key", "bearer"])  # fmt: skip
def test_rest_with_the_key_is_served(keyed, headers) -> None:
    assert keyed.get("/v1/listeners", headers=headers).json()["total"] == 0
    assert "rapport_sessions" in keyed.get("/v1/metrics", headers=headers).text
    missing = keyed.get("/v1/listeners/0123456789abcdef0123456789abcdef", headers=headers)
    assert error_of(missing, 404)["code"] == "listener_not_found"


def test_health_probes_need_no_key(keyed) -> None:
    assert keyed.get("/v1/health/live").status_code == 200
    assert keyed.get("/v1/health/ready").status_code == 200


def mint(keyed: TestClient) -> dict:
    resp = keyed.post("/v1/sessions", headers={"X-API-Key": KEY})
    assert resp.status_code == 201, resp.text
    return resp.json()


def refused_code(client: TestClient, path: str, **kwargs) -> int:
    """The close code of a stream the server refuses at the upgrade."""
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect(path, **kwargs):
            pass
    return refused.value.code


def test_a_minted_token_opens_one_stream_once(keyed) -> None:
    before = time.time()
    token = mint(keyed)
    assert before + 55 < token["expires_at"] < time.time() + 65
    assert token["stream_path"] == f"/v1/stream?token={token['token']}"
    with connect(keyed, token["stream_path"]) as stream:
        assert stream.start()["listener"] == "generic"
        stream.ping()
    assert refused_code(keyed, token["stream_path"]) == 1008
    assert mint(keyed)["token"] != token["token"]


def test_forged_expired_and_foreign_tokens_are_refused(keyed) -> None:
    good = mint(keyed)["token"]
    body, mac = good.rsplit(".", 1)
    forged = f"{body}.{'0' * len(mac)}"
    longer = good.replace(good.split(".")[1], str(int(good.split(".")[1]) + 3600), 1)
    expired, _ = Guard(KEY, 60).mint(now=time.time() - 120)  # a valid MAC, a past expiry
    foreign, _ = Guard("another-key", 60).mint()
    for token in (forged, longer, expired, foreign, "not-a-token", ""):
        assert refused_code(keyed, f"/v1/stream?token={token}") == 1008, token
    with connect(keyed, f"/v1/stream?token={good}") as stream:  # none of it spent the good one
        stream.start()


def test_stream_needs_a_key_or_token(keyed) -> None:
    assert refused_code(keyed, "/v1/stream") == 1008
    assert refused_code(keyed, "/v1/stream", headers={"X-API-Key": "wrong"}) == 1008
    with connect(keyed, headers={"X-API-Key": KEY}) as stream:
        stream.start()
    with connect(keyed, headers={"Authorization": f"Bearer {KEY}"}) as stream:
        stream.start()


# -- Origin allow-list -----------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost:8001", "null"])
def test_stream_from_a_foreign_origin_is_refused(client, origin) -> None:
    assert refused_code(client, "/v1/stream", headers={"Origin": origin}) == 1008


def test_stream_from_an_allowed_origin_or_none_is_served(client, keyed) -> None:
    with connect(client, headers={"Origin": ORIGIN}) as stream:
        stream.start()
    with connect(client, headers={"Origin": ORIGIN + "/"}) as stream:
        stream.start()
    with connect(client) as stream:  # no Origin header: not a browser
        stream.start()
    token = mint(keyed)["stream_path"]  # a valid token does not lift the Origin check
    assert refused_code(keyed, token, headers={"Origin": "https://evil.example"}) == 1008


# -- enrolment and the listener resource -----------------------------------------------------


def test_enrolment_creates_a_listener(client, enrolled) -> None:
    assert len(enrolled["id"]) == 32
    assert enrolled["name"] == "Ada" and enrolled["consent"] is True
    clip = enrolled["clip"]
    assert clip["seconds"] == pytest.approx(GOOD_SECONDS, abs=0.1)
    assert clip["face_seconds"] >= 0.9 * GOOD_SECONDS
    assert clip["audio"] is True and (clip["width"], clip["height"]) == (400, 300)
    assert enrolled["enrolment_bytes"] > 1000 and enrolled["model"].startswith("sha256:")
    assert client.get(f"/v1/listeners/{enrolled['id']}").json() == enrolled
    assert enrolled["id"] in listener_ids(client)
    text = client.get("/v1/metrics").text
    assert metric(text, 'rapport_enrolments_total{outcome="created"}') >= 1


def test_listener_list_pages(client, enrolled) -> None:
    page = client.get("/v1/listeners", params={"limit": 1, "offset": 0}).json()
    assert page["limit"] == 1 and page["offset"] == 0 and len(page["listeners"]) == 1
    assert page["total"] >= 1
    beyond = client.get("/v1/listeners", params={"offset": page["total"]}).json()
    assert beyond["listeners"] == [] and beyond["total"] == page["total"]
    assert error_of(client.get("/v1/listeners", params={"limit": 0}), 422)["field"] == "limit"


def test_retried_enrolment_returns_the_same_listener(client, enrolled, clips) -> None:
    before = listener_ids(client)
    again = upload(client, clips["good"], name="Ada", consent="true",
                   headers={"Idempotency-Key": "enrol-ada-1"})  # fmt: skip
    assert again.status_code == 200, again.text
    assert again.json() == enrolled
    assert sorted(listener_ids(client)) == sorted(before)
    assert listener_ids(client).count(enrolled["id"]) == 1
    other = upload(client, clips["good"], name="Bob", consent="true",
                   headers={"Idempotency-Key": "enrol-ada-1"})  # fmt: skip
    assert error_of(other, 409)["code"] == "idempotency_conflict"
    assert sorted(listener_ids(client)) == sorted(before)


def test_stream_with_an_enrolled_listener_uses_its_shifts(client, enrolled) -> None:
    engine = client.app.state.services.engine
    with connect(client) as personal, connect(client) as generic:
        started = personal.start(enrolled["id"])
        assert started["listener"] == enrolled["id"]
        plain = generic.start()
        sessions = {s.id: s for s in engine.sessions()}
        shifts = sessions[started["session_id"]].online.shifts
        stored = Enrolment.from_bytes(client.app.state.services.store.get_enrolment(enrolled["id"]))
        assert shifts is not None and set(shifts) == set(engine.models.hyper.targets)
        for name, (a, b) in stored.factors.items():  # exactly this listener's shifts
            assert torch.equal(shifts[name][0].cpu(), a) and torch.equal(shifts[name][1].cpu(), b)
        assert any(float(a.abs().sum()) > 0 for a, _ in shifts.values())
        online = sessions[started["session_id"]].online  # no media yet: still the start state
        assert online.t == 0 and (online.rest == stored.rest.numpy()).all()
        if engine.models.generator.config.sample_feedback:  # rest fills the previous frames
            assert online.listener_ok.all() and (online.listener == stored.rest.numpy()).all()
        else:  # no previous frames are seen: the resting face anchors the level instead
            assert not online.listener_ok.any() and online.level is None
            # ...and the enrolment's expression spread sets the expressivity gain
            population = engine.models.generator.config.expression_spread
            assert stored.spread is not None and stored.spread > 0 and population is not None
            expected = min(max((stored.spread / population) ** EXPRESSIVITY_POWER,
                               EXPRESSIVITY_RANGE[0]), EXPRESSIVITY_RANGE[1])  # fmt: skip
            # ...times the spread the shifts remove (the bundled generator measures it)
            compensation = engine.models.generator.config.shift_spread_gain
            assert compensation is not None and compensation > 1
            expected = min(max(expected * compensation, EXPRESSIVITY_RANGE[0]),
                           EXPRESSIVITY_RANGE[1])  # fmt: skip
            assert online.gain == pytest.approx(expected)
        assert sessions[plain["session_id"]].online.shifts is None
        assert not sessions[plain["session_id"]].online.listener_ok.any()
        personal.ping()


def copy_of(client: TestClient, listener_id: str) -> str:
    """A second listener holding the same enrolment (a test shortcut: no second extraction)."""
    store = client.app.state.services.store
    record = store.get(listener_id)
    copy, _ = store.create(name="Copy", consent=True, enrolment=store.get_enrolment(listener_id),
                           model_hash=record.model_hash, clip=record.clip)  # fmt: skip
    return copy.id


def test_a_browser_webm_recording_enrols(client, clips) -> None:
    """MediaRecorder's WebM stores no duration: it is measured from the stream instead."""
    resp = client.post("/v1/listeners", data={"name": "Webb", "consent": "true"},
                       files={"clip": ("rec.webm", clips["webm"].read_bytes(), "video/webm")})
    assert resp.status_code == 201, resp.text
    listener = resp.json()
    assert listener["clip"]["seconds"] >= 10.0
    assert client.delete(f"/v1/listeners/{listener['id']}").status_code == 204


def test_deleted_listener_is_gone_everywhere(client, enrolled) -> None:
    victim = copy_of(client, enrolled["id"])
    with connect(client) as stream:  # usable before...
        stream.start(victim)
    assert client.delete(f"/v1/listeners/{victim}").status_code == 204
    assert error_of(client.get(f"/v1/listeners/{victim}"), 404)["code"] == "listener_not_found"
    assert victim not in listener_ids(client)
    assert error_of(client.delete(f"/v1/listeners/{victim}"), 404)["code"] == "listener_not_found"
    with connect(client) as stream:  # ...and not after
        stream.send({"type": "start", "listener": victim})
        assert stream.expect_error("unknown_listener")["field"] == "listener"
        stream.ping()
    assert client.get(f"/v1/listeners/{enrolled['id']}").status_code == 200  # others untouched


@pytest.mark.parametrize("listener_id", ["nobody", "0123456789abcdef0123456789abcdef"])
def test_unknown_listener_is_404(client, listener_id) -> None:
    err = error_of(client.get(f"/v1/listeners/{listener_id}"), 404)
    assert err["code"] == "listener_not_found" and listener_id in err["message"]


def test_the_store_survives_a_restart(data_dir, enrolled, client) -> None:
    with running(settings_for(data_dir)) as again:
        assert enrolled["id"] in listener_ids(again)
        assert again.get(f"/v1/listeners/{enrolled['id']}").json() == enrolled


# -- refused uploads -------------------------------------------------------------------------


BAD_UPLOADS = {
    # case: (status, code, field, words in the message)
    "short": (422, "bad_media", "clip", ["4.0 s", "10 s"]),
    "faceless": (422, "bad_media", "clip", ["face"]),
    "corrupt": (422, "bad_media", "clip", ["not a readable video"]),
    "text": (415, "unsupported_media_type", "clip", ["text/plain"]),
    "no-consent": (422, "consent_required", "consent", ["consent"]),
    "no-name": (422, "invalid_field", "name", ["name"]),
    "blank-name": (422, "invalid_listener", "name", ["empty"]),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_is_refused_and_stores_nothing(client, clips, case) -> None:
    status, code, field, words = BAD_UPLOADS[case]
    before = listener_ids(client)
    form = {"name": "Eve", "consent": "true"}
    clip: Path | bytes = clips["good"]  # refused for the form alone, before any extraction
    ctype = "video/mp4"
    if case in ("short", "faceless"):
        clip = clips[case]
    elif case in ("corrupt", "text"):
        clip = np.random.default_rng(3).bytes(20_000)
        ctype = "text/plain" if case == "text" else ctype
    elif case == "no-consent":
        del form["consent"]
    elif case == "no-name":
        del form["name"]
    elif case == "blank-name":
        form["name"] = "   "
    failed = client.app.state.services.metrics.enrolments.labels("failed")
    extractions = failed._value.get()  # counts refusals that came out of the extraction
    err = error_of(upload(client, clip, ctype=ctype, **form), status)
    assert err["code"] == code and err["field"] == field, err
    assert all(w in err["message"] for w in words), err
    assert "/tmp" not in err["message"] and "rapport-clip" not in err["message"]
    extracted = case in ("short", "faceless", "corrupt")  # the others: refused before it
    assert failed._value.get() - extractions == (1 if extracted else 0)
    assert listener_ids(client) == before


@pytest.mark.parametrize("size", [200_000, 3_000_000], ids=["streamed", "declared"])
def test_too_large_upload_is_413(tmp_path, size) -> None:
    with running(settings_for(tmp_path, upload_max_bytes=100_000)) as c:
        resp = upload(c, np.random.default_rng(0).bytes(size), name="Eve", consent="true")
        err = error_of(resp, 413)
        assert err["code"] == "too_large" and err["field"] == "clip"
        assert "100000" in err["message"]
        assert c.get("/v1/listeners").json()["total"] == 0
